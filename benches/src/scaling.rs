//! Scaling: packets per second with 1..N workers, N the CPUs online, ours (AF_XDP, one worker
//! per queue, pinned one per CPU) beside the kernel's native XDP on the same veth pair with the
//! same queues, alternating round by round.
//!
//! The pair has N queues each way; the peer sends the lab's frames flat out from one thread per
//! queue (a frame sent on the peer's queue `q` arrives on the near end's queue `q`), and counts
//! what comes back in a native XDP sink. The sender runs on the same CPUs as the contestant: on a
//! machine with few cores (this project's has 2) the figures show how the work shares them, not
//! how far the dataplane would scale on cores of its own; the table says how many there are.
//!
//! `cargo bench -p benches --bench suite -- --only scaling` (as root): 3 rounds of 3 s;
//! `--quick`: 1 round of 300 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions};
use xdp_vm::elf::Object;

use crate::veth::SinkPair;
use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate};

/// The scaling comparison.
#[derive(Debug)]
pub struct Scaling;

const OURS: &str = "ours: AF_XDP (copy mode), JIT, a worker per queue";
const KERNEL: &str = "kernel: native XDP, same queues";

fn our_round(s: &SinkPair, object: &str, workers: u32, window: Duration) -> anyhow::Result<f64> {
    let queues: Vec<String> = (0..workers).map(|q| q.to_string()).collect();
    let cfg = Config::parse(&format!(
        "[program]\nobject = {object:?}\n[[ports]]\ninterface = {:?}\nqueues = [{q}]\n[workers]\ncores = [{q}]\n\
         [stats]\ninterval = 0\n",
        s.lab.interface,
        q = queues.join(", ")
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &RunOptions::default(), &st));
    std::thread::sleep(Duration::from_millis(500));
    let pps = s.measure_threads(window, workers);
    stop.store(true, Ordering::Relaxed);
    h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    pps
}

impl Comparison for Scaling {
    fn name(&self) -> &'static str {
        "scaling"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (3, Duration::from_secs(3)));
        let cpus = crate::report::online_cpus();
        let path = crate::object("xdp_counter");
        let obj =
            Object::parse(&std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)?;
        let object = path.display().to_string();
        let mut rows = Vec::new();
        for workers in 1..=cpus as u32 {
            let label = format!("xdp_counter, {workers} worker(s) / queue(s)");
            if !crate::is_root() {
                rows.push(Row::skipped(
                    &label,
                    KERNEL,
                    &[OURS, KERNEL],
                    "needs root for a veth pair and XDP",
                ));
                continue;
            }
            let s = SinkPair::with_queues(&format!("sc{workers}"), workers)?;
            let samples = alternate(rounds, 2, |_, c| {
                if c == 0 {
                    our_round(&s, &object, workers, window)
                } else {
                    let prog = dataplane::kernel::KernelProgram::load(&obj, &obj.programs[0])?;
                    let idx = dataplane::backend::ifindex(&s.lab.interface)
                        .ok_or_else(|| anyhow::anyhow!("no interface {}", s.lab.interface))?;
                    let _link = prog.attach_xdp(idx, dataplane::kernel::XdpMode::Native)?;
                    s.measure_threads(window, workers)
                }
            })?;
            let mut samples = samples.into_iter();
            rows.push(Row {
                label,
                reference: KERNEL.into(),
                cells: vec![
                    Cell::new(OURS, samples.next().unwrap_or_default()),
                    Cell::new(KERNEL, samples.next().unwrap_or_default()),
                ],
            });
        }
        Ok(vec![Table {
            id: "scaling".into(),
            title: "Scaling: frames per second with 1..N workers".into(),
            method: format!(
                "This machine has {cpus} CPU(s), so N = {cpus}; the sender shares them with the contestant, so the \
                 rows show how the same CPUs are shared, not how far either side would scale on cores of its own. \
                 A veth pair with as many queues as workers; the peer sends the lab's 16 flows flat out from one \
                 thread per queue and counts what comes back in a native XDP sink. Ours: one worker per queue, \
                 pinned one per CPU; the kernel: xdp_counter as native XDP on the same pair. {rounds} round(s) of \
                 {window:?}, alternating. Reference: the kernel."
            ),
            row_header: "workers".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        }])
    }
}
