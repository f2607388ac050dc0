//! `pktgen`: write crafted test frames to `.bin` or `.pcap` files.
//!
//! Prints nothing on success (stdout stays clean for scripts); on bad input prints one line,
//! `error: ...`, on stderr and exits with code 2 (clap's usage errors are folded onto that one
//! line too). Running it with no subcommand prints the help on stderr, also with code 2.

#![deny(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pktgen::craft::{self, FrameSpec, L3, L4, Vary};
use pktgen::write::{write_bin, write_pcap};

/// Craft test packets and write them as raw frames or pcap files.
#[derive(Debug, Parser)]
#[command(name = "pktgen", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// ICMP echo request; defaults give the 98-byte icmp.bin (ICMPv6 with --ipv6).
    Icmp(IcmpArgs),
    /// UDP datagram.
    Udp(UdpArgs),
    /// TCP SYN.
    Tcp(TcpArgs),
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// File to write: the raw frame, or a pcap file with --pcap.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Write a classic libpcap file (Ethernet link type) instead of one raw frame.
    #[arg(long)]
    pcap: bool,
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:01", value_parser = craft::parse_mac)]
    src_mac: [u8; 6],
    #[arg(long, value_name = "MAC", default_value = "02:00:00:00:00:02", value_parser = craft::parse_mac)]
    dst_mac: [u8; 6],
    /// Source address [default: 10.0.0.1, or fd00::1 with --ipv6].
    #[arg(long, value_name = "ADDR")]
    src_ip: Option<IpAddr>,
    /// Destination address [default: 10.0.0.2, or fd00::2 with --ipv6].
    #[arg(long, value_name = "ADDR")]
    dst_ip: Option<IpAddr>,
    /// Use IPv6 (implied by IPv6 addresses).
    #[arg(long)]
    ipv6: bool,
    /// 802.1Q VLAN id to tag frames with.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(u16).range(0..=4095))]
    vlan: Option<u16>,
    /// IPv4 TTL or IPv6 hop limit.
    #[arg(long, default_value_t = craft::DEFAULT_TTL)]
    ttl: u8,
    /// Seed for the pseudo-random fields (IPv4 identification, padding bytes).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
struct IcmpArgs {
    #[command(flatten)]
    common: Common,
    /// Echo identifier.
    #[arg(long, default_value_t = craft::ICMP_ECHO_ID)]
    id: u16,
    /// Sequence number of the first frame; later frames count up.
    #[arg(long, default_value_t = craft::ICMP_ECHO_SEQ)]
    seq: u16,
    /// Echo payload bytes (pattern 0x00, 0x01, ...); at most 1472 so the frame fits 1514 bytes.
    #[arg(long, value_name = "N", default_value_t = craft::ICMP_ECHO_PAYLOAD_LEN as u16,
          value_parser = clap::value_parser!(u16).range(0..=1472))]
    payload_size: u16,
    /// Number of frames, with incrementing sequence numbers (more than one needs --pcap).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
}

/// Options shared by the UDP and TCP subcommands.
#[derive(Debug, Args)]
struct FlowArgs {
    /// Frame size in bytes, 60..=1514, reached by padding the payload with seeded bytes
    /// [default: headers only, no payload].
    ///
    /// A TCP SYN padded this way carries the padding as data.
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// Number of distinct flows, one frame each (more than one needs --pcap).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    flows: u32,
    /// Which field makes the flows distinct.
    #[arg(long, value_enum, default_value_t = VaryArg::SrcPort)]
    vary: VaryArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum VaryArg {
    SrcPort,
    SrcIp,
}

#[derive(Debug, Args)]
struct UdpArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    flow: FlowArgs,
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    #[arg(long, default_value_t = 9)]
    dst_port: u16,
}

#[derive(Debug, Args)]
struct TcpArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    flow: FlowArgs,
    #[arg(long, default_value_t = 1024)]
    src_port: u16,
    #[arg(long, default_value_t = 80)]
    dst_port: u16,
    /// Initial sequence number of the SYN.
    #[arg(long, default_value_t = 1)]
    seq: u32,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version: clap prints to stdout and exits 0.
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = err.print();
            return ExitCode::from(2);
        }
        Err(err) => {
            eprintln!("{}", first_paragraph(&err.render().to_string()));
            return ExitCode::from(2);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Clap's message up to its usage hint, folded onto one line.
fn first_paragraph(rendered: &str) -> String {
    rendered.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect::<Vec<_>>().join(" ")
}

fn run(command: Command) -> anyhow::Result<()> {
    let (common, frames) = match command {
        Command::Icmp(args) => {
            let base = FrameSpec {
                l4: L4::IcmpEcho {
                    id: args.id,
                    seq: args.seq,
                    payload: craft::ping_pattern(args.payload_size.into()),
                },
                ..base_spec(&args.common)?
            };
            let frames = (0..args.count)
                .map(|i| {
                    let mut spec = base.clone();
                    if let L4::IcmpEcho { seq, .. } = &mut spec.l4 {
                        // Sequence numbers wrap at 2^16 as ping's do.
                        *seq = seq.wrapping_add(i as u16);
                    }
                    spec.build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            (args.common, frames)
        }
        Command::Udp(args) => {
            let l4 = L4::Udp { src_port: args.src_port, dst_port: args.dst_port, payload: Vec::new() };
            let frames = flow_frames(&args.common, &args.flow, l4)?;
            (args.common, frames)
        }
        Command::Tcp(args) => {
            let l4 = L4::TcpSyn { src_port: args.src_port, dst_port: args.dst_port, seq: args.seq };
            let frames = flow_frames(&args.common, &args.flow, l4)?;
            (args.common, frames)
        }
    };

    if common.pcap {
        write_pcap(&common.out, &frames)?;
    } else {
        let [frame] = frames.as_slice() else {
            bail!("{} frames asked for, but a raw frame file holds one: add --pcap", frames.len());
        };
        write_bin(&common.out, frame)?;
    }
    Ok(())
}

/// The spec for the options every subcommand shares, with an ICMP echo as a placeholder L4.
fn base_spec(common: &Common) -> anyhow::Result<FrameSpec> {
    let v6 = common.ipv6 || [common.src_ip, common.dst_ip].iter().flatten().any(IpAddr::is_ipv6);
    let l3 = if v6 {
        let v6_addr = |addr: Option<IpAddr>, default, flag| match addr {
            None => Ok(default),
            Some(IpAddr::V6(addr)) => Ok(addr),
            Some(IpAddr::V4(addr)) => Err(anyhow::anyhow!("{flag} {addr} is IPv4, but the frame is IPv6")),
        };
        L3::V6 {
            src: v6_addr(common.src_ip, craft::DEFAULT_SRC_IPV6, "--src-ip")?,
            dst: v6_addr(common.dst_ip, craft::DEFAULT_DST_IPV6, "--dst-ip")?,
        }
    } else {
        let v4_addr = |addr: Option<IpAddr>, default| match addr {
            Some(IpAddr::V4(addr)) => addr,
            _ => default,
        };
        L3::V4 {
            src: v4_addr(common.src_ip, craft::DEFAULT_SRC_IPV4),
            dst: v4_addr(common.dst_ip, craft::DEFAULT_DST_IPV4),
        }
    };
    Ok(FrameSpec {
        src_mac: common.src_mac,
        dst_mac: common.dst_mac,
        vlan: common.vlan,
        l3,
        ttl: common.ttl,
        seed: common.seed,
        ..FrameSpec::default()
    })
}

fn flow_frames(common: &Common, flow: &FlowArgs, l4: L4) -> anyhow::Result<Vec<Vec<u8>>> {
    let spec = FrameSpec { l4, frame_size: flow.size, ..base_spec(common)? };
    let vary = match flow.vary {
        VaryArg::SrcPort => Vary::SrcPort,
        VaryArg::SrcIp => Vary::SrcAddr,
    };
    let frames =
        spec.flows(flow.flows as usize, vary)?.map(|flow| flow.build()).collect::<Result<Vec<_>, _>>()?;
    Ok(frames)
}
