//! `pktgen`: write crafted test frames to `.bin` or `.pcap` files (`icmp`, `udp`, `tcp`), send
//! them out of an interface (`send`), and measure what arrives (`bench`).
//!
//! The file commands print nothing on success (stdout stays clean for scripts); `send` and
//! `bench` print a line per second and a summary, or one JSON object with `--json`. On bad
//! input every command prints one line,
//! `error: ...`, on stderr and exits with code 2 (clap's usage errors are folded onto that one
//! line too). Running it with no subcommand prints the help on stderr, also with code 2.

#![deny(unsafe_code)]

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};
use pktgen::bench::{self as bench_run, BenchReport, Interval};
use pktgen::craft::{self, FrameSpec, L3, L4, Vary};
use pktgen::send::{self as sender, Mode, SendConfig, SendReport, TxInterval, Used};
use pktgen::stamp::STAMP_LEN;
use pktgen::write::{read_pcap, write_bin, write_pcap};

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
    /// Send frames out of an interface (AF_XDP, or AF_PACKET where AF_XDP is unavailable).
    Send(SendArgs),
    /// Send on one interface, count what arrives on another (or the same): rates, loss, latency.
    Bench(BenchArgs),
}

/// What to send: a pcap file's frames, or crafted ones.
#[derive(Debug, Args)]
struct Source {
    /// Send the frames of this pcap file, in turn.
    #[arg(long, value_name = "FILE", conflicts_with = "template", required_unless_present = "template")]
    pcap: Option<PathBuf>,
    /// Craft the frames: an ICMP echo request, a UDP datagram or a TCP SYN.
    #[arg(long, value_enum)]
    template: Option<Template>,
    #[command(flatten)]
    addr: Addressing,
    /// Frame size in bytes, 60..=1514 [default: 64, or what the headers and a stamp need].
    #[arg(long, value_name = "BYTES")]
    size: Option<usize>,
    /// Number of distinct flows (frames sent in turn).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    flows: u32,
    /// Which field makes the flows distinct (ICMP: the echo id stands for the port).
    #[arg(long, value_enum, default_value_t = VaryArg::SrcPort)]
    vary: VaryArg,
    /// UDP/TCP source port (ICMP: echo id) [default: 1024].
    #[arg(long)]
    src_port: Option<u16>,
    /// UDP/TCP destination port [default: 9 for UDP, 80 for TCP].
    #[arg(long)]
    dst_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Template {
    Icmp,
    Udp,
    Tcp,
}

/// How fast and how long.
#[derive(Debug, Args)]
struct Pace {
    /// Frames per second over all threads (e.g. 100000, 100k, 1.5M), or max.
    #[arg(long, value_name = "PPS|max", value_parser = parse_rate)]
    rate: Rate,
    /// Stop after this many seconds.
    #[arg(long, value_name = "S", value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Stop after this many frames.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Queues to send on (0..Q), one AF_XDP socket each.
    #[arg(long, value_name = "Q", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    queues: u32,
    /// Sending threads [default: one per queue].
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    #[arg(long, value_enum, default_value_t = ModeArg::Auto)]
    mode: ModeArg,
    /// Print one JSON object at the end instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy)]
enum Rate {
    Max,
    Pps(u64),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Auto,
    AfxdpZc,
    AfxdpCopy,
    Afpacket,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Interface to send on (required: pktgen sends nowhere it is not told to).
    #[arg(long, value_name = "IF")]
    iface: String,
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    pace: Pace,
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Interface to send on.
    #[arg(long, value_name = "IF")]
    tx_iface: String,
    /// Interface to count arrivals on (may be the same as --tx-iface).
    #[arg(long, value_name = "IF")]
    rx_iface: String,
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    pace: Pace,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "max" {
        return Ok(Rate::Max);
    }
    let (num, mult) = match s.strip_suffix(['k', 'K']) {
        Some(n) => (n, 1e3),
        None => match s.strip_suffix('M') {
            Some(n) => (n, 1e6),
            None => (s, 1.0),
        },
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a rate (frames per second, e.g. 100000, 100k, 1.5M, or max)"))?;
    let pps = (v * mult).round();
    if !(1.0..=1e12).contains(&pps) || !pps.is_finite() {
        return Err(format!("`{s}`: a rate must be between 1 and 10^12 frames per second"));
    }
    Ok(Rate::Pps(pps as u64))
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number of seconds"))?;
    if !(v > 0.0 && v <= 1e6) {
        return Err(format!("`{s}`: a duration must be more than 0 and at most 10^6 seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// Options every file-writing subcommand takes.
#[derive(Debug, Args)]
struct Common {
    /// File to write: the raw frame, or a pcap file with --pcap.
    #[arg(long, value_name = "PATH")]
    out: PathBuf,
    /// Write a classic libpcap file (Ethernet link type) instead of one raw frame.
    #[arg(long)]
    pcap: bool,
    #[command(flatten)]
    addr: Addressing,
}

/// Addresses and header fields every crafted frame has.
#[derive(Debug, Args)]
struct Addressing {
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
        Command::Send(args) => return send(args),
        Command::Bench(args) => return bench(args),
        Command::Icmp(args) => {
            let base = FrameSpec {
                l4: L4::IcmpEcho {
                    id: args.id,
                    seq: args.seq,
                    payload: craft::ping_pattern(args.payload_size.into()),
                },
                ..base_spec(&args.common.addr)?
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
            let frames = flow_frames(&args.common.addr, &args.flow, l4)?;
            (args.common, frames)
        }
        Command::Tcp(args) => {
            let l4 = L4::TcpSyn { src_port: args.src_port, dst_port: args.dst_port, seq: args.seq };
            let frames = flow_frames(&args.common.addr, &args.flow, l4)?;
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
fn base_spec(common: &Addressing) -> anyhow::Result<FrameSpec> {
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

fn flow_frames(common: &Addressing, flow: &FlowArgs, l4: L4) -> anyhow::Result<Vec<Vec<u8>>> {
    let spec = FrameSpec { l4, frame_size: flow.size, ..base_spec(common)? };
    let vary = match flow.vary {
        VaryArg::SrcPort => Vary::SrcPort,
        VaryArg::SrcIp => Vary::SrcAddr,
    };
    let frames =
        spec.flows(flow.flows as usize, vary)?.map(|flow| flow.build()).collect::<Result<Vec<_>, _>>()?;
    Ok(frames)
}

/// The frames `source` describes; `stamped` leaves room for a bench stamp in crafted frames.
fn source_frames(source: &Source, stamped: bool) -> anyhow::Result<Vec<Vec<u8>>> {
    let Some(template) = source.template else {
        let path = source.pcap.as_ref().ok_or_else(|| anyhow::anyhow!("give --pcap FILE or --template"))?;
        let frames = read_pcap(path)?;
        if frames.is_empty() {
            bail!("{} holds no frames", path.display());
        }
        return Ok(frames);
    };
    let base = base_spec(&source.addr)?;
    let src_port = source.src_port.unwrap_or(1024);
    let l4 = match template {
        Template::Icmp => {
            L4::IcmpEcho { id: src_port, seq: 1, payload: craft::ping_pattern(craft::ICMP_ECHO_PAYLOAD_LEN) }
        }
        Template::Udp => L4::Udp { src_port, dst_port: source.dst_port.unwrap_or(9), payload: Vec::new() },
        Template::Tcp => L4::TcpSyn { src_port, dst_port: source.dst_port.unwrap_or(80), seq: 1 },
    };
    let mut spec = FrameSpec { l4, ..base };
    spec.frame_size = match (source.size, template) {
        (Some(size), _) => Some(size),
        (None, Template::Icmp) => None,
        (None, _) => Some(spec.header_len().saturating_add(if stamped { STAMP_LEN } else { 0 }).max(64)),
    };
    let vary = match source.vary {
        VaryArg::SrcPort => Vary::SrcPort,
        VaryArg::SrcIp => Vary::SrcAddr,
    };
    Ok(spec.flows(source.flows as usize, vary)?.map(|f| f.build()).collect::<Result<Vec<_>, _>>()?)
}

fn send_config(iface: &str, source: &Source, pace: &Pace, stamped: bool) -> anyhow::Result<SendConfig> {
    if pace.duration.is_none() && pace.count.is_none() {
        bail!("give --duration or --count (pktgen never sends without an end)");
    }
    Ok(SendConfig {
        iface: iface.to_string(),
        frames: source_frames(source, stamped)?,
        rate: match pace.rate {
            Rate::Max => None,
            Rate::Pps(p) => Some(p),
        },
        duration: pace.duration,
        count: pace.count,
        queues: pace.queues,
        threads: pace.threads.unwrap_or(pace.queues),
        mode: match pace.mode {
            ModeArg::Auto => Mode::Auto,
            ModeArg::AfxdpZc => Mode::AfXdpZeroCopy,
            ModeArg::AfxdpCopy => Mode::AfXdpCopy,
            ModeArg::Afpacket => Mode::AfPacket,
        },
        stamp: None,
    })
}

/// `println!` that ignores a closed stdout (`pktgen send | head`) instead of panicking: the run
/// goes on and ends as asked.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Where a frame goes: its destination MAC, and IP address when it has one.
fn describe(frame: &[u8]) -> String {
    let mac = |m: &[u8]| m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    let dst = mac(&frame[..6.min(frame.len())]);
    let ip = match etherparse::SlicedPacket::from_ethernet(frame).ok().and_then(|p| p.net) {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            format!(" {} > {}", ip.header().source_addr(), ip.header().destination_addr())
        }
        Some(etherparse::NetSlice::Ipv6(ip)) => {
            format!(" {} > {}", ip.header().source_addr(), ip.header().destination_addr())
        }
        None => String::new(),
    };
    format!("to {dst},{ip}, {} bytes", frame.len())
}

/// Set by Ctrl-C (or SIGTERM) during `send` and `bench`: the run stops and still reports.
fn interrupt() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    // Without a handler (another one is installed, or none can be), Ctrl-C just ends the
    // process, which closes the sockets: nothing is left behind either way.
    let _ = ctrlc::set_handler(|| STOP.store(true, Ordering::Relaxed));
    &STOP
}

fn gbps(g: f64) -> String {
    format!("{g:.3} Gbit/s")
}

fn send(args: SendArgs) -> anyhow::Result<()> {
    let cfg = send_config(&args.iface, &args.source, &args.pace, false)?;
    let json = args.pace.json;
    let on_start = |mode: Used, fallback: Option<&str>| {
        if !json {
            if let Some(why) = fallback {
                say!("falling back to AF_PACKET: {why}");
            }
            say!(
                "sending on {} in mode {} ({} queue(s), {} thread(s), {} frame(s) in turn, rate {})",
                cfg.iface,
                mode.name(),
                cfg.queues,
                cfg.threads,
                cfg.frames.len(),
                cfg.rate.map_or("max".to_string(), |r| format!("{r} pps"))
            );
            say!("first frame: {}", describe(&cfg.frames[0]));
        }
    };
    let report: SendReport = sender::run(&cfg, interrupt(), on_start, |iv: &TxInterval| {
        if !json {
            say!("{:>8.2}s  sent {:>10}  {:>12.0} pps  {}", iv.t_s, iv.sent, iv.pps, gbps(iv.gbps));
        }
    })?;
    if json {
        say!("{}", serde_json::to_string(&report)?);
    } else {
        say!(
            "mode {}: sent {} frames ({} bytes) in {:.3} s: {:.0} pps, {}",
            report.mode,
            report.sent,
            report.bytes,
            report.elapsed_s,
            report.pps,
            gbps(report.gbps)
        );
    }
    Ok(())
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let cfg = send_config(&args.tx_iface, &args.source, &args.pace, true)?;
    let json = args.pace.json;
    let (tx_iface, rate, queues, threads) = (cfg.iface.clone(), cfg.rate, cfg.queues, cfg.threads);
    let first = describe(&cfg.frames[0]);
    let on_start = |mode: Used, fallback: Option<&str>| {
        if !json {
            if let Some(why) = fallback {
                say!("falling back to AF_PACKET: {why}");
            }
            say!(
                "bench: sending on {tx_iface} in mode {}, counting on {} ({queues} queue(s), {threads} thread(s), rate {})",
                mode.name(),
                args.rx_iface,
                rate.map_or("max".to_string(), |r| format!("{r} pps"))
            );
            say!("first frame: {first}");
        }
    };
    let r: BenchReport = bench_run::run(cfg, &args.rx_iface, interrupt(), on_start, |iv: &Interval| {
        if !json {
            say!(
                "{:>8.2}s  sent {:>10} ({:>11.0} pps, {})  received {:>10} ({:>11.0} pps, {})",
                iv.t_s,
                iv.sent,
                iv.tx_pps,
                gbps(iv.tx_gbps),
                iv.received,
                iv.rx_pps,
                gbps(iv.rx_gbps)
            );
        }
    })?;
    if json {
        say!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    say!(
        "mode {}: sent {}, received {}, lost {} ({} dropped by the receiving socket), duplicates {}",
        r.mode,
        r.sent,
        r.received,
        r.lost,
        r.receiver_drops,
        r.duplicates
    );
    say!(
        "over {:.3} s: tx {:.0} pps, {}; rx {:.0} pps, {}",
        r.elapsed_s,
        r.tx_pps,
        gbps(r.tx_gbps),
        r.rx_pps,
        gbps(r.rx_gbps)
    );
    let l = &r.latency;
    say!(
        "latency ({} samples): min {:.1} us, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        l.samples,
        l.min_ns as f64 / 1e3,
        l.p50_ns as f64 / 1e3,
        l.p99_ns as f64 / 1e3,
        l.p999_ns as f64 / 1e3,
        l.max_ns as f64 / 1e3
    );
    Ok(())
}
