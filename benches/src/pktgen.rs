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
//! `cargo bench -p benches --bench suite -- --only pktgen` (as root): 5 rounds of 2 s;
//! `--quick`: 1 round of 300 ms.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pktgen::craft::{FrameSpec, L4};
use pktgen::send::{self, Mode, SendConfig};

use crate::veth::SinkPair;
use crate::{Better, Cell, Comparison, Row, Table, median};

/// The send-rate comparison.
#[derive(Debug)]
pub struct Pktgen;

const TRAFGEN: &str = "trafgen --cpus 1";
const KERNEL_PKTGEN: &str = "kernel pktgen module";
const XDP_TRAFFICGEN: &str = "xdp-trafficgen";

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
            Self::Trafgen => TRAFGEN,
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

impl Comparison for Pktgen {
    fn name(&self) -> &'static str {
        "pktgen"
    }

    fn run(&self, mode: crate::Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (5, Duration::from_secs(2)));
        let all = [Contestant::PktgenXdp, Contestant::PktgenPacket, Contestant::Trafgen];
        let table = |rows| Table {
            id: "pktgen".into(),
            title: "Traffic generator: frames per second reaching a sink".into(),
            method: format!(
                "`pktgen send` on a veth pair of our own against a native XDP sink on the peer that counts and drops \
                 (every contestant measured by that kernel counter, not its own report); one sending thread / CPU \
                 each, flat out, the same UDP frame; {rounds} round(s) of {window:?}, contestants alternating (order \
                 reversed every other round). Note: Gbit/s of frame bytes. The kernel's pktgen module and \
                 xdp-trafficgen are probed and say why they are not contestants here. Reference: trafgen \
                 (netsniff-ng)."
            ),
            row_header: "frame".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        };
        let mut peers = [Cell::missing(KERNEL_PKTGEN, ""), Cell::missing(XDP_TRAFFICGEN, "")];
        let names: Vec<&str> = all.iter().map(|c| c.name()).chain([KERNEL_PKTGEN, XDP_TRAFFICGEN]).collect();
        if !crate::is_root() {
            let rows = ["64 B", "1514 B"]
                .iter()
                .map(|l| Row::skipped(l, TRAFGEN, &names, "needs root for a veth pair and XDP"))
                .collect();
            return Ok(vec![table(rows)]);
        }
        if !available("trafgen", &["--version"]) {
            let why = "trafgen, the reference, is not installed (apt install netsniff-ng)";
            return Ok(vec![table(
                ["64 B", "1514 B"].iter().map(|l| Row::skipped(l, TRAFGEN, &names, why)).collect(),
            )]);
        }
        let contestants = all;
        let kernel_pktgen = std::path::Path::new("/proc/net/pktgen").exists()
            || Command::new("modprobe").arg("pktgen").status().is_ok_and(|s| s.success());
        peers[0].note = if kernel_pktgen {
            "(available here but not a contestant yet: it needs its own /proc/net/pktgen set-up)".into()
        } else {
            "(not available on this kernel: no /proc/net/pktgen, modprobe pktgen failed)".into()
        };
        let s = SinkPair::create("pg")?;
        // xdp-trafficgen (xdp-tools) sends with BPF_PROG_RUN in live-frame mode; it is a contestant
        // only if it can send here at all (probe: 1000 frames).
        peers[1].note =
            match Command::new("xdp-trafficgen").args(["udp", &s.lab.interface, "-n", "1000"]).output() {
                Err(e) => format!("(not installed: {e}; apt install xdp-tools)"),
                Ok(out) if !out.status.success() => {
                    let err = String::from_utf8_lossy(&out.stderr);
                    let why: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
                    format!(
                        "(cannot send on this machine: {})",
                        why.iter().rev().take(2).rev().map(|l| l.trim()).collect::<Vec<_>>().join(" / ")
                    )
                }
                Ok(_) => "(works here but is not a contestant yet: it crafts its own frames)".into(),
            };
        let dir = std::env::temp_dir().join(format!("pktgen-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut rows = Vec::new();
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
            let mut cells: Vec<Cell> = contestants
                .iter()
                .zip(results)
                .map(|(c, v)| {
                    let gbit = median(&v) * size as f64 * 8.0 / 1e9;
                    Cell::new(c.name(), v).with_note(format!("({gbit:.2} Gbit/s)"))
                })
                .collect();
            cells.extend(peers.iter().cloned());
            rows.push(Row { label: format!("{size} B"), reference: TRAFGEN.into(), cells });
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(vec![table(rows)])
    }
}
