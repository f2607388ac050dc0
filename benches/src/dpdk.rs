//! The DPDK backend, two tables from one run:
//!
//! 1. Pure engine cost on `net_ring`: a loopback ring device returns what the worker sends, so
//!    512 injected copies of the seed's ICMP frame circulate through one pinned worker (rx burst,
//!    program, tx burst) with no I/O at all. Packets per second of that worker for each shipped
//!    program whose verdict keeps the frame in the loop (`XDP_TX`), and for no program at all
//!    (the worker loop alone: goal under 10 ns per packet); for every program, the worker's time
//!    per frame between RX and TX (p50), which programs that drop or pass also give.
//! 2. The same veth pair, the peer sending flat out from its namespace and counting what comes
//!    back in a native XDP sink: the DPDK backend on `net_af_packet`, the AF_XDP backend and the
//!    kernel's native XDP, the same object, alternating round by round; medians.
//!
//! Both in one table, one row per program: the `net_ring` figure beside the three veth
//! contestants, the kernel's native XDP on the veth the reference (the kernel has no `net_ring`:
//! that ratio compares our engine with no I/O against the kernel's whole path, and says so).
//!
//! `cargo bench -p benches --bench suite -- --only dpdk` (as root): 3 rounds of 3 s;
//! `--quick`: 1 round of 300 ms.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions, Summary};
use xdp_vm::elf::Object;

use crate::veth::{self, SinkPair};
use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, median};

/// The DPDK comparison.
#[derive(Debug)]
pub struct Dpdk;

const RING: &str = "ours: DPDK net_ring (one worker, no I/O)";
const PACKET: &str = "ours: DPDK net_af_packet (veth)";
const AFXDP: &str = "ours: AF_XDP (veth, copy mode)";
const KERNEL: &str = "kernel: native XDP (veth)";

/// Runs `cfg` in this process (the EAL stays up between runs) until `window` passes.
fn run_for(cfg: &str, no_program: bool, window: Duration) -> anyhow::Result<Summary> {
    let cfg = Config::parse(cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: Some(window), no_program, config_path: None };
    Ok(runtime::run(&cfg, &opts, &stop)?)
}

fn name() -> String {
    format!("dpbench{}", std::process::id())
}

/// CPU time this process has used (every thread), seconds.
fn cpu_seconds() -> f64 {
    crate::clock::process_cpu_ns() as f64 * 1e-9
}

/// One round on `net_ring`: packets per second of wall time, packets per CPU second (the
/// process's: the busy-polling worker's, plus the control thread's few wake-ups), and the
/// worker's ns per frame (p50).
fn ring_round(
    object: &Path,
    no_program: bool,
    pcap: &Path,
    window: Duration,
) -> anyhow::Result<(f64, f64, u64)> {
    let cfg = format!(
        "name = {:?}\nbackend = \"dpdk\"\n[dpdk]\neal_args = [\"--no-pci\"]\n[program]\nobject = {:?}\n\
         [[ports]]\ndevice = \"net_ring0\"\ninject_pcap = {:?}\ninject_copies = 512\nbatch = 32\n\
         [workers]\ncores = [1]\n[stats]\ninterval = 0\n",
        name(),
        object.display().to_string(),
        pcap.display().to_string()
    );
    let cpu0 = cpu_seconds();
    let s = run_for(&cfg, no_program, window)?;
    let cpu = (cpu_seconds() - cpu0).max(1e-9);
    Ok((s.totals.rx as f64 / s.seconds, s.totals.rx as f64 / cpu, s.frame_ns.0))
}

/// Ours on the veth: the DPDK backend (`net_af_packet`) or AF_XDP.
fn our_round(
    v: &SinkPair,
    dpdk: bool,
    object: &Path,
    no_program: bool,
    window: Duration,
) -> anyhow::Result<f64> {
    let port = if dpdk {
        format!(
            "backend = \"dpdk\"\n[dpdk]\neal_args = [\"--no-pci\"]\n[[ports]]\ndevice = \"net_af_packet0,iface={}\"\nbatch = 32\n",
            v.lab.interface
        )
    } else {
        format!("[[ports]]\ninterface = {:?}\n", v.lab.interface)
    };
    let cfg = Config::parse(&format!(
        "name = {:?}\n{port}[program]\nobject = {:?}\n[workers]\ncores = [1]\n[stats]\ninterval = 0\n",
        name(),
        object.display().to_string()
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program, config_path: None };
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &opts, &st));
    std::thread::sleep(Duration::from_millis(500));
    let pps = v.measure(window);
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    pps
}

impl Comparison for Dpdk {
    fn name(&self) -> &'static str {
        "dpdk"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (3, Duration::from_secs(3)));
        let dir = PathBuf::from(dataplane::BPF_OBJ_DIR);
        let counter = dir.join("xdp_counter.o");
        // (label, object, no program, the kernel's object; None: the program does not send the
        // lab's traffic back, so there is nothing to count on the veth). Every shipped program.
        let mut cases: Vec<(String, PathBuf, bool, Option<Object>)> =
            vec![("no program (worker loop)".into(), counter, true, Some(veth::tx_only()))];
        for (name, path, obj) in crate::shipped_xdp()? {
            let back = !crate::is_root() || crate::sends_lab_traffic_back(&obj)?;
            cases.push((name, path, false, back.then_some(obj)));
        }
        let contestants = [RING, PACKET, AFXDP, KERNEL];
        let table = |rows| Table {
            id: "dpdk".into(),
            title: "DPDK backend: frames per second, net_ring and veth".into(),
            method: format!(
                "net_ring: a loopback ring device returns what the worker sends, so 512 copies of the seed's ICMP \
                 frame circulate through one worker pinned to CPU 1 (rx burst, program, tx burst) with no I/O: pure \
                 engine cost, wall-clock pps (the note: pps per CPU second of the process, and the worker's ns per \
                 frame p50). veth: a pair in a namespace of our own, the peer sending the lab's 16 flows flat out and \
                 counting what comes back in a native XDP sink; ours on net_af_packet and on AF_XDP, the kernel's \
                 native XDP, the same object. {rounds} round(s) of {window:?}, the four alternating. Reference: the \
                 kernel on the veth — against net_ring that ratio sets our engine without I/O beside the kernel's \
                 whole path; the veth ratios are like for like."
            ),
            row_header: "program".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        };
        if !crate::is_root() {
            let rows = cases
                .iter()
                .map(|c| {
                    Row::skipped(&c.0, KERNEL, &contestants, "needs root for DPDK's EAL, a veth pair and XDP")
                })
                .collect();
            return Ok(vec![table(rows)]);
        }
        let pcap = std::env::temp_dir().join(format!("dpbench-{}.pcap", std::process::id()));
        pktgen::write::write_pcap(&pcap, &[pktgen::craft::icmp_echo()])?;
        // DPDK may be missing from this build, or refuse to start here: then its cells say why.
        let dpdk_missing = match ring_round(&cases[0].1, true, &pcap, Duration::from_millis(100)) {
            Ok(_) => None,
            Err(e) => Some(format!("(skipped: {e:#})")),
        };
        let mut rows = Vec::new();
        for (i, (name, path, no_program, obj)) in cases.iter().enumerate() {
            let v = match obj {
                Some(_) => Some(SinkPair::create(&format!("dd{i}"))?),
                None => None,
            };
            let (mut cpu, mut ns) = (Vec::new(), Vec::new());
            let samples = alternate(rounds, 4, |_, c| match (c, &v, obj) {
                (0, ..) if dpdk_missing.is_some() => Ok(f64::NAN),
                (0, ..) => {
                    let (p, c, n) = ring_round(path, *no_program, &pcap, window)?;
                    cpu.push(c);
                    ns.push(n as f64);
                    Ok(p)
                }
                (_, None, _) | (_, _, None) => Ok(f64::NAN),
                (1, ..) if dpdk_missing.is_some() => Ok(f64::NAN),
                (1, Some(v), _) => our_round(v, true, path, *no_program, window),
                (2, Some(v), _) => our_round(v, false, path, *no_program, window),
                (_, Some(v), Some(obj)) => v.kernel_round(obj, window),
            })?;
            let mut cells: Vec<Cell> = contestants
                .iter()
                .zip(samples)
                .map(
                    |(c, s)| {
                        if s.iter().any(|x| x.is_nan()) { Cell::missing(c, "") } else { Cell::new(c, s) }
                    },
                )
                .collect();
            let ring_note = format!("(worker {:.0} ns/frame p50)", median(&ns));
            cells[0] = match (&dpdk_missing, cells[0].stats) {
                (Some(why), _) => Cell::missing(RING, why),
                // A program that drops or passes empties the loop after one pass: no rate.
                (None, Some(s)) if s.median < 1e5 => Cell::missing(
                    RING,
                    &format!(
                        "(not XDP_TX: frames leave the loop, no rate; {})",
                        &ring_note[1..ring_note.len() - 1]
                    ),
                ),
                (None, _) => cells[0].clone().with_note(format!(
                    "({:.2} Mpps per CPU second; worker {:.0} ns/frame p50)",
                    median(&cpu) / 1e6,
                    median(&ns)
                )),
            };
            for c in &mut cells[1..] {
                if c.stats.is_none() {
                    c.note = if obj.is_none() {
                        "(the program does not return XDP_TX for the lab's frames: nothing comes back to count)".into()
                    } else {
                        dpdk_missing.clone().unwrap_or_default()
                    };
                }
            }
            rows.push(Row { label: name.clone(), reference: KERNEL.into(), cells });
        }
        let _ = std::fs::remove_file(pcap);
        runtime::shutdown();
        Ok(vec![table(rows)])
    }
}
