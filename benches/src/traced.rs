//! A traced dataplane: frames per second through the lab with the seed's one-liner
//! (`configs/bpf/rx_cpu_hist.c`, `@[dev] = lhist(cpu, 0, 128, 1)`) attached to the dataplane's
//! own `rx` probe site, against the same dataplane untraced, alternating round by round in one
//! run. The goal: traced at least 95% of untraced (the seed's server lost half of its
//! throughput under kernel uprobes).
//!
//! Set-up: a namespace and veth pair of our own ([`SinkPair`]); the peer sends the lab's frames
//! flat out and counts, in a native XDP sink, the frames that come back. A round runs our
//! dataplane (AF_XDP copy mode, JIT, one worker on CPU 0) with `xdp_counter` on the near end for
//! a fixed window, configured exactly as `configs/trace.toml` minus printing: the traced
//! contestant's config has the `[[trace]]` entry, so the run attaches the program to `site:rx`
//! when it starts and detaches it when it stops — every received frame runs it.
//!
//! `cargo bench -p benches --bench suite -- --only traced` (as root): 5 rounds of 3 s each;
//! `--quick`: 1 round of 300 ms.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions};

use crate::veth::SinkPair;
use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, median};

/// The traced-throughput comparison.
#[derive(Debug)]
pub struct Traced;

const UNTRACED: &str = "ours, untraced";
const TRACED: &str = "ours, rx_cpu_hist on site:rx";
const KERNEL: &str = "kernel uprobe: rx_cpu_hist on the rx USDT note";

/// The kernel's contestant: `rx_cpu_hist` loaded into the kernel and attached as a uprobe at
/// every `rx` site's `.note.stapsdt` address, for the tasks on CPU 0 (the worker's), as
/// `bpftrace -e 'usdt:...:dataplane:rx { ... }'` attaches it; detached when dropped.
struct KernelTrace {
    _links: Vec<dataplane::kernel::UprobeLink>,
}

fn kernel_trace(prog: &dataplane::kernel::KernelProgram) -> anyhow::Result<KernelTrace> {
    let image = dataplane::uprobe::symbols::image().map_err(anyhow::Error::msg)?;
    let exe = std::env::current_exe()?;
    let mut links = Vec::new();
    for n in image.site("rx") {
        let offset = image
            .file_offset(n.addr)
            .ok_or_else(|| anyhow::anyhow!("rx site at {:#x} is not in the file", n.addr))?;
        links.push(prog.attach_uprobe_on_cpu(&exe, offset, false, 0)?);
    }
    Ok(KernelTrace { _links: links })
}

/// One round of ours on the near end for `window`, untraced (with the kernel's trace when
/// `kernel` is given) or traced by us: frames back per second, and the worker's ns per frame
/// (p50).
fn round(
    s: &SinkPair,
    traced: bool,
    kernel: Option<&dataplane::kernel::KernelProgram>,
    window: Duration,
) -> anyhow::Result<(f64, u64)> {
    let object = crate::object("xdp_counter");
    let trace = if traced {
        format!(
            "[[trace]]\nobject = {:?}\nprogram = \"rx_cpu_hist\"\ntarget = \"site:rx\"\n",
            crate::object("rx_cpu_hist").display().to_string()
        )
    } else {
        String::new()
    };
    let name = format!("dptraced{}", std::process::id());
    let cfg = Config::parse(&format!(
        "name = {name:?}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {:?}\n[workers]\ncores = [0]\n[stats]\ninterval = 0\n{trace}",
        object.display().to_string(),
        s.lab.interface
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program: false, config_path: None };
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &opts, &st));
    let ktrace = kernel.map(kernel_trace).transpose();
    std::thread::sleep(Duration::from_millis(500));
    let pps = if ktrace.is_ok() { s.measure(window) } else { Ok(0.0) };
    // The kernel's probes go before the dataplane stops; a failure to attach them is reported
    // once it has stopped.
    let attached = ktrace.map(drop);
    stop.store(true, Ordering::Relaxed);
    let summary = h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    attached?;
    Ok((pps?, summary.frame_ns.0))
}

impl Comparison for Traced {
    fn name(&self) -> &'static str {
        "traced"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (5, Duration::from_secs(3)));
        let contestants = [UNTRACED, TRACED, KERNEL];
        let label = "xdp_counter";
        let rows = if !crate::is_root() {
            vec![Row::skipped(label, UNTRACED, &contestants, "needs root for a veth pair and AF_XDP")]
        } else if !Path::new(&crate::object("rx_cpu_hist")).exists() {
            vec![Row::skipped(label, UNTRACED, &contestants, "configs/bpf/rx_cpu_hist.c was not built")]
        } else {
            if std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
                // The bench and the peer's sender on CPU 1, the worker on CPU 0.
                dataplane::kernel::pin_current_thread(1)?;
            }
            let obj = xdp_vm::elf::Object::parse(&std::fs::read(crate::object("rx_cpu_hist"))?)?;
            let kprog = dataplane::kernel::KernelProgram::load(&obj, obj.program(Some("rx_cpu_hist"))?)?;
            let s = SinkPair::create("dt")?;
            let mut ns = [Vec::new(), Vec::new(), Vec::new()];
            let samples = alternate(rounds, contestants.len(), |_, c| {
                let (pps, frame_ns) = round(&s, c == 1, (c == 2).then_some(&kprog), window)?;
                ns[c].push(frame_ns as f64);
                Ok(pps)
            })?;
            let cells = samples
                .into_iter()
                .enumerate()
                .map(|(c, v)| {
                    Cell::new(contestants[c], v)
                        .with_note(format!("(worker {:.0} ns/frame p50)", median(&ns[c])))
                })
                .collect();
            vec![Row { label: label.into(), reference: UNTRACED.into(), cells }]
        };
        Ok(vec![Table {
            id: "traced".into(),
            title: "A traced dataplane: frames per second with the rx histogram attached".into(),
            method: format!(
                "A veth pair in a namespace of our own; the peer sends the lab's 16 flows flat out (pktgen, AF_XDP \
                 copy mode, CPU 1) and counts what comes back in a native XDP sink. The near end runs our dataplane \
                 (one worker on CPU 0, xdp_counter, JIT) untraced, or with configs/bpf/rx_cpu_hist.c (the seed's \
                 `@[dev] = lhist(cpu, 0, 128, 1)`) attached to its rx probe site through a [[trace]] entry, as \
                 configs/trace.toml does: the program runs on every received frame; or untraced with the same object \
                 loaded into the kernel and attached by the kernel as a uprobe on every rx site's USDT note \
                 (perf_event_open uprobe PMU + BPF_PROG_TYPE_KPROBE, the tasks of CPU 0), as bpftrace's usdt probe \
                 attaches it. {rounds} round(s) of {window:?}, alternating. The note: the worker's time per frame from \
                 RX to the verdict (p50), where the probe's cost shows. Reference: untraced; the goal is at least \
                 0.95x."
            ),
            row_header: "program".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        }])
    }
}
