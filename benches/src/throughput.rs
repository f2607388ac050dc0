//! Packets per second through a veth pair: our dataplane (AF_XDP, the configured engine) against
//! the kernel running the same object as native XDP on the same interface, alternating round
//! by round in one run.
//!
//! Set-up per program: a namespace and veth pair of our own; the peer end (in the namespace)
//! sends the lab's frames flat out from one pktgen sender thread (AF_XDP copy mode) and counts, in a native XDP sink on
//! the peer, the frames that come back. A round attaches one contestant to the other end for a
//! fixed window and reports returned frames per second. Programs: every `configs/bpf/*.c`
//! XDP object (one whose first program does not return `XDP_TX` for any of the lab's frames in
//! the kernel's test run says so in its row: nothing would come back), plus "no program" — ours with no program at all (the worker loop alone) against a
//! kernel program that is just `return XDP_TX`.
//!
//! `cargo bench -p benches --bench suite -- --only throughput` (as root): 3 rounds of 3 s each;
//! `--quick`: 1 round of 300 ms.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions};
use xdp_vm::elf::Object;

use crate::veth::{self, SinkPair};
use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, median};

/// The throughput comparison.
#[derive(Debug)]
pub struct Throughput;

const OURS: &str = "ours: AF_XDP (copy mode), JIT";
const KERNEL: &str = "kernel: native XDP";

/// Ours attached to the near end for `window`: frames per second back at the peer, and the
/// worker's ns per frame (p50).
fn our_round(
    s: &SinkPair,
    object: &Path,
    no_program: bool,
    window: Duration,
) -> anyhow::Result<(f64, (u64, u64))> {
    let cfg = Config::parse(&format!(
        "[program]\nobject = {:?}\n[[ports]]\ninterface = {:?}\n[stats]\ninterval = 0\n",
        object.display().to_string(),
        s.lab.interface
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program, config_path: None };
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &opts, &st));
    std::thread::sleep(Duration::from_millis(500));
    let pps = s.measure(window);
    stop.store(true, Ordering::Relaxed);
    let summary = h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    Ok((pps?, summary.frame_ns))
}

impl Comparison for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (3, Duration::from_secs(3)));
        // Every shipped program (configs/bpf/*.c with an XDP program), then the worker loop alone.
        let mut cases: Vec<(String, PathBuf, bool, Object)> =
            crate::shipped_xdp()?.into_iter().map(|(name, path, obj)| (name, path, false, obj)).collect();
        cases.push(("no program (worker loop)".into(), crate::object("xdp_counter"), true, veth::tx_only()));
        let mut rows = Vec::new();
        for (i, (name, path, no_program, obj)) in cases.iter().enumerate() {
            if !crate::is_root() {
                rows.push(Row::skipped(name, KERNEL, &[OURS, KERNEL], "needs root for a veth pair and XDP"));
                continue;
            }
            if !crate::sends_lab_traffic_back(obj)? {
                rows.push(Row::skipped(
                    name,
                    KERNEL,
                    &[OURS, KERNEL],
                    "the program does not return XDP_TX for the lab's frames: nothing comes back to count",
                ));
                continue;
            }
            let s = SinkPair::create(&format!("db{i}"))?;
            let mut ns = Vec::new();
            let samples = alternate(rounds, 2, |_, c| {
                if c == 0 {
                    let (pps, frame_ns) = our_round(&s, path, *no_program, window)?;
                    ns.push(frame_ns.0 as f64);
                    Ok(pps)
                } else {
                    s.kernel_round(obj, window)
                }
            })?;
            let mut samples = samples.into_iter();
            let (ours, kern) = (samples.next().unwrap_or_default(), samples.next().unwrap_or_default());
            rows.push(Row {
                label: name.clone(),
                reference: KERNEL.into(),
                cells: vec![
                    Cell::new(OURS, ours).with_note(format!("(worker {:.0} ns/frame p50)", median(&ns))),
                    Cell::new(KERNEL, kern),
                ],
            });
        }
        Ok(vec![Table {
            id: "throughput".into(),
            title: "Throughput on a veth pair: frames per second back at the sender".into(),
            method: format!(
                "A veth pair in a namespace of our own; the peer sends the lab's 16 flows flat out (one pktgen \
                 thread, AF_XDP copy mode) and counts what comes back in a native XDP sink — every contestant \
                 measured by that same kernel counter. The near end runs ours (one worker) or the kernel's native \
                 XDP with the same object, {rounds} round(s) of {window:?}, alternating. \"no program\": ours runs \
                 the worker loop alone, the kernel a program that is just `return XDP_TX`. The sender shares the \
                 machine's CPUs with the contestant. Reference: the kernel."
            ),
            row_header: "program".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        }])
    }
}
