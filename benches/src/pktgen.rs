//! Send rate of `pktgen send` on a veth pair against a kernel sink, beside `trafgen`
//! (netsniff-ng), alternating round by round in one run.
//!
//! Set-up: a namespace and veth pair of our own (`dataplane::lab::Lab`); the peer end, in the
//! namespace, runs a native XDP program that counts frames in a per-CPU array and drops them
//! (`dataplane::backend::Sink`). Each round starts one contestant on the near end, waits 300 ms,
//! then counts what reached the sink over the window: frames per second the sink saw, so every
//! contestant is measured by the same kernel counter, not by its own report. One sending thread /
//! CPU each, flat out, the same 64-byte UDP frame (and a 1514-byte one for Gbit/s).
//!
//! Contestants: pktgen over AF_XDP (copy mode: veth has no zero-copy), pktgen over AF_PACKET
//! (`sendmmsg`), and `trafgen --cpus 1` (PACKET_TX_RING, qdisc bypass). The kernel's own pktgen
//! module and `xdp-trafficgen` are listed as peers by the issue; the bench probes each and says
//! why it is skipped (this project's machines: a kernel without `CONFIG_NET_PKTGEN`, and
//! xdp-tools 1.3.1's `xdp-trafficgen` fails to load its tracepoint program on kernel 6.18).
//!
//! `cargo bench -p benches --bench suite -- --only pktgen` (as root): 5 rounds of 2 s; `-- --quick`: 1 round of
//! 1 s.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::median;
use crate::veth::SinkPair;
use pktgen::craft::{FrameSpec, L4};
use pktgen::send::{self, Mode, SendConfig};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contestant {
    PktgenXdp,
    PktgenPacket,
    Trafgen,
}

impl Contestant {
    fn name(self) -> &'static str {
        match self {
            Self::PktgenXdp => "pktgen AF_XDP (copy)",
            Self::PktgenPacket => "pktgen AF_PACKET",
            Self::Trafgen => "trafgen --cpus 1",
        }
    }
}

/// Frames per second the sink saw over `window`, `c` sending `frame`.
fn round(
    s: &SinkPair,
    c: Contestant,
    frame: &[u8],
    cfg_file: &std::path::Path,
    window: Duration,
) -> anyhow::Result<f64> {
    let warm = Duration::from_millis(300);
    let measure = |s: &SinkPair| {
        std::thread::sleep(warm);
        s.count_over(window)
    };
    match c {
        Contestant::PktgenXdp | Contestant::PktgenPacket => {
            let cfg = SendConfig {
                iface: s.lab.interface.clone(),
                frames: vec![frame.to_vec()],
                rate: None,
                duration: Some(warm + window + Duration::from_secs(5)),
                count: None,
                queues: 1,
                threads: 1,
                mode: if c == Contestant::PktgenXdp { Mode::AfXdpCopy } else { Mode::AfPacket },
                stamp: None,
            };
            let running = send::start(&cfg)?;
            let pps = measure(s);
            running.stop();
            running.join()?;
            Ok(pps)
        }
        Contestant::Trafgen => {
            // Its own process group: trafgen forks a sender per CPU, and ^C reaches them all
            // through the group, as it does from a terminal.
            let mut child: Child = Command::new("trafgen")
                .args(["--dev", &s.lab.interface, "--conf"])
                .arg(cfg_file)
                .args(["--cpus", "1", "--no-sock-mem", "--notouch-irq"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()?;
            let pps = measure(s);
            let group = format!("-{}", child.id());
            let _ = Command::new("kill").args(["-INT", "--", &group]).status();
            let until = Instant::now() + Duration::from_secs(3);
            while child.try_wait()?.is_none() {
                if Instant::now() > until {
                    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(pps)
        }
    }
}

fn available(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

pub fn main(quick: bool) -> anyhow::Result<()> {
    let (rounds, window) = if quick { (1, Duration::from_secs(1)) } else { (5, Duration::from_secs(2)) };
    let mut contestants = vec![Contestant::PktgenXdp, Contestant::PktgenPacket];
    if available("trafgen", &["--version"]) {
        contestants.push(Contestant::Trafgen);
    } else {
        println!("trafgen: not installed (apt install netsniff-ng); skipped");
    }
    let kernel_pktgen = std::path::Path::new("/proc/net/pktgen").exists()
        || Command::new("modprobe").arg("pktgen").status().is_ok_and(|s| s.success());
    if !kernel_pktgen {
        println!(
            "kernel pktgen module: not available on this kernel (no /proc/net/pktgen, modprobe pktgen failed); skipped"
        );
    }
    let s = SinkPair::create("pg")?;
    // xdp-trafficgen (xdp-tools) sends with BPF_PROG_RUN in live-frame mode; it is a contestant
    // only if it can send here at all (probe: 1000 frames).
    match Command::new("xdp-trafficgen").args(["udp", &s.lab.interface, "-n", "1000"]).output() {
        Err(e) => println!("xdp-trafficgen: not installed ({e}; apt install xdp-tools); skipped"),
        Ok(out) if !out.status.success() => {
            let err = String::from_utf8_lossy(&out.stderr);
            let why: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            println!(
                "xdp-trafficgen: cannot send on this machine, skipped: {}",
                why.iter().rev().take(2).rev().map(|l| l.trim()).collect::<Vec<_>>().join(" / ")
            );
        }
        Ok(_) => println!(
            "xdp-trafficgen: works here but is not a contestant yet (it crafts its own frames); compare by hand"
        ),
    }
    let dir = std::env::temp_dir().join(format!("pktgen-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "frames per second reaching an XDP_DROP sink on the veth peer, {rounds} round(s) of {window:?}, contestants alternating, one sender thread each"
    );
    println!("| frame | contestant | median pps | Gbit/s (frame bytes) | vs trafgen | rounds |");
    println!("|---|---|---|---|---|---|");
    for size in [64usize, 1514] {
        let frame = FrameSpec {
            l4: L4::Udp { src_port: 1024, dst_port: 9, payload: vec![] },
            frame_size: Some(size),
            ..FrameSpec::default()
        }
        .build()?;
        let cfg_file: PathBuf = dir.join(format!("udp{size}.cfg"));
        let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
        std::fs::write(&cfg_file, format!("{{ {} }}\n", bytes.join(", ")))?;
        let mut results: Vec<Vec<f64>> = vec![Vec::new(); contestants.len()];
        for r in 0..rounds {
            // Alternate the order too, so no contestant always follows the same one.
            let order: Vec<usize> = if r % 2 == 0 {
                (0..contestants.len()).collect()
            } else {
                (0..contestants.len()).rev().collect()
            };
            for i in order {
                results[i].push(round(&s, contestants[i], &frame, &cfg_file, window)?);
            }
        }
        let trafgen = contestants.iter().position(|&c| c == Contestant::Trafgen).map(|i| median(&results[i]));
        for (c, v) in contestants.iter().zip(results.iter_mut()) {
            let list = v.iter().map(|p| format!("{:.0}", p)).collect::<Vec<_>>().join(", ");
            let m = median(v);
            let vs = trafgen.map_or("-".to_string(), |t| format!("{:.2}x", m / t.max(1.0)));
            println!(
                "| {size} B | {} | {m:.0} | {:.2} | {vs} | {list} |",
                c.name(),
                m * size as f64 * 8.0 / 1e9
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
