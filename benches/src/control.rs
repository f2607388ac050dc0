//! Does operating a running dataplane move its packet rate? One instance runs `xdp_counter` on
//! a veth pair of our own (AF_XDP, JIT) while the peer sends flat out and counts, in a native
//! XDP sink, the frames that come back. Windows alternate between idle (no control traffic)
//! and a control client that runs `map dump pkt_len_count` (1,000 entries, DESIGN.md's JSON,
//! through the control socket) back to back; the same run, the same instance, medians.
//!
//! The method, for a shared 2-core VM whose idle windows alone spread 4x: many short triplets
//! (idle, dumping, idle again; the order rotating), each dumping window judged against the idle
//! window of its own triplet (the median of those per-triplet ratios, with quartiles), and the
//! idle-again windows judged the same way (an A/A test: the noise floor, what the method can
//! resolve). The worker is pinned alone to the last CPU and the sender to CPU 0; the instance's
//! control thread and the dump client float at nice 19.
//!
//! Two rows: the sender flat out (the worker's capacity), and at a fixed 40 kpps (below it: CPU
//! is left for the control path, and what it costs the worker shows as loss).
//!
//! `cargo bench -p benches --bench suite -- --only control` (as root): 30 triplets of 400 ms
//! windows; `--quick`: 3 triplets of 200 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dataplane::backend::Sink;
use dataplane::config::Config;
use dataplane::control::{self, client, proto::DumpFormat, proto::Request};
use dataplane::lab;
use dataplane::runtime::{self, RunOptions};

use crate::veth::SinkPair;
use crate::{Better, Cell, Comparison, Mode, Row, Table, median};

/// The control-traffic comparison.
#[derive(Debug)]
pub struct Control;

const IDLE: &str = "no control traffic (idle)";
const DUMPING: &str = "`map dump` of 1,000 entries in a loop";
const IDLE_AA: &str = "idle again (A/A)";

/// The instance's program run count and time so far (`prog list`).
fn runs(name: &str) -> anyhow::Result<(u64, u64)> {
    let v = client::call(&control::run_dir(), Some(name), &Request::ProgList)?;
    let p = &v[0];
    Ok((p["run_cnt"].as_u64().unwrap_or(0), p["run_time_ns"].as_u64().unwrap_or(0)))
}

/// One window: frames per second that came back to the peer, the worker's ns per frame in
/// the program loop, and dumps completed per second.
fn window(sink: &Sink, dumping: bool, name: &str, window: Duration) -> anyhow::Result<(f64, f64, f64)> {
    let stop = AtomicBool::new(false);
    let dumps = AtomicU64::new(0);
    std::thread::scope(|s| -> anyhow::Result<(f64, f64, f64)> {
        let h = dumping.then(|| {
            s.spawn(|| -> anyhow::Result<()> {
                // An operator's tool: ordinary priority would take the CPU the traffic
                // generator needs on this 2-core machine; the instance's own control thread
                // runs at nice 19 likewise.
                control::sys::lower_priority();
                let req = Request::MapDump { map: "pkt_len_count".into(), format: DumpFormat::Design };
                while !stop.load(Ordering::Relaxed) {
                    let v = client::call(&control::run_dir(), Some(name), &req)?;
                    anyhow::ensure!(v.as_array().is_some_and(|a| a.len() >= 1000), "a short dump");
                    dumps.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            })
        });
        std::thread::sleep(Duration::from_millis(150));
        let (c0, d0, r0) = (sink.count(), dumps.load(Ordering::Relaxed), runs(name)?);
        let t0 = Instant::now();
        std::thread::sleep(window);
        let secs = t0.elapsed().as_secs_f64();
        let pps = (sink.count() - c0) as f64 / secs;
        let dps = (dumps.load(Ordering::Relaxed) - d0) as f64 / secs;
        let r1 = runs(name)?;
        let ns = (r1.1 - r0.1) as f64 / (r1.0 - r0.0).max(1) as f64;
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = h {
            h.join().map_err(|_| anyhow::anyhow!("the dump thread panicked"))??;
        }
        Ok((pps, ns, dps))
    })
}

/// The fixed rate of the second row: below what the worker forwards flat out on this machine.
const FIXED_RATE: u64 = 40_000;

/// pps, worker ns/frame per contestant (idle, dumping, idle again) and dumps/s.
type Triplets = ([Vec<f64>; 3], [Vec<f64>; 3], Vec<f64>);

/// `rounds` triplets of windows with the sender at `rate` (0: flat out).
fn triplets(
    lab: &lab::Lab,
    sink: &Sink,
    name: &str,
    rate: u64,
    rounds: usize,
    win: Duration,
    pin_sender: impl Fn() + Sync,
) -> anyhow::Result<Triplets> {
    // The sender's threads inherit the CPU of the thread that starts them.
    let (gen_stop, _sent, generator) = std::thread::scope(|s| {
        s.spawn(|| {
            pin_sender();
            lab::spawn_generator(lab, 16, rate)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("starting the sender panicked"))
    })??;
    let mut pps: [Vec<f64>; 3] = Default::default();
    let mut ns: [Vec<f64>; 3] = Default::default();
    let mut dps = Vec::new();
    let mut result = Ok(());
    'rounds: for r in 0..rounds {
        // 0 idle, 1 dumping, 2 idle again; rotated so each goes first, second, third.
        for k in 0..3 {
            let c = (k + r) % 3;
            match window(sink, c == 1, name, win) {
                Ok((p, n, d)) => {
                    pps[c].push(p);
                    ns[c].push(n);
                    if c == 1 {
                        dps.push(d);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break 'rounds;
                }
            }
        }
    }
    gen_stop.store(true, Ordering::Relaxed);
    let _ = generator.join();
    result.map(|()| (pps, ns, dps))
}

/// The quartiles (25th, 50th, 75th percentile) of `v`.
fn quartiles(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let at = |q: f64| {
        if s.is_empty() {
            return 0.0;
        }
        let x = q * (s.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
    };
    (at(0.25), at(0.5), at(0.75))
}

/// How the CPUs are shared: the worker alone on the last CPU, the sender on CPU 0 (the control
/// thread and client float). `None` on one CPU.
fn layout() -> Option<(usize, usize)> {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    (n >= 2).then_some((0, n - 1))
}

impl Comparison for Control {
    fn name(&self) -> &'static str {
        "control"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        // Many short triplets (idle, dumping, idle again, the order rotating), each judged
        // against its own idle window: drift in the machine's load moves a triplet's windows
        // together and cancels out of its ratios. The idle-vs-idle ratio of the same triplets
        // (an A/A test) shows the noise floor: what difference the method can resolve.
        let (rounds, win) = mode.pick((3, Duration::from_millis(200)), (30, Duration::from_millis(400)));
        let label = "xdp_counter, AF_XDP (JIT, copy mode)";
        let cores = layout();
        let table = |rows| Table {
            id: "control".into(),
            title: "Operating a running dataplane: packet rate while the control socket is busy".into(),
            method: format!(
                "One instance runs xdp_counter on a veth pair of our own (AF_XDP, JIT) while the peer sends (flat out, \
                 then at a fixed {} kpps) and counts, in a native XDP sink, the frames that come back. {} {rounds} triplets of {win:?} windows \
                 (after 150 ms to settle each): idle, a control client running `map dump pkt_len_count` (1,000 \
                 entries, DESIGN.md's JSON with bpftool's \"formatted\" member, through the control socket) back to \
                 back at nice 19, and idle again (A/A), the order rotating each triplet; the same run and instance. \
                 Notes: worker ns per frame, dumps per second, and the per-triplet ratios (dumping / idle, idle again / \
                 idle) as median [quartiles] — the A/A ratios' spread is the method's noise floor. Reference: idle.",
                FIXED_RATE / 1000,
                match cores {
                    Some((other, worker)) => format!(
                        "The worker is pinned alone to CPU {worker}, the sender to CPU {other}; the instance's control \
                         thread and the dump client float at nice 19 (as do the machine's other users)."
                    ),
                    None => "One CPU: worker, sender and control client share it.".to_string(),
                }
            ),
            row_header: "instance".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        };
        if !crate::is_root() {
            return Ok(vec![table(vec![Row::skipped(
                label,
                IDLE,
                &[IDLE, DUMPING, IDLE_AA],
                "needs root for a veth pair, XDP and AF_XDP",
            )])]);
        }
        let pin_other = move || {
            if let Some((other, _)) = cores {
                let _ = dataplane::kernel::pin_current_thread(other);
            }
        };
        let pid = std::process::id() % 100_000;
        let SinkPair { lab, sink } = SinkPair::create("dcb")?;
        let a = lab.interface.clone();
        let name = format!("bench-control-{pid}");
        let object = std::path::Path::new(dataplane::BPF_OBJ_DIR).join("xdp_counter.o");
        let workers = cores.map_or(String::new(), |(_, w)| format!("[workers]\ncores = [{w}]\n"));
        let cfg = Config::parse(&format!(
            "name = {name:?}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {a:?}\n[stats]\ninterval = 0\n{workers}",
            object.display().to_string()
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        // The workers pin themselves; the instance's control thread floats (at nice 19).
        let instance = std::thread::spawn(move || runtime::run(&cfg, &RunOptions::default(), &st));
        std::thread::sleep(Duration::from_millis(500));
        let measured = (|| -> anyhow::Result<_> {
            // 1,000 more entries, so a dump copies and renders a map of some size.
            for k in 1000u32..2000 {
                let req = Request::MapUpdate {
                    map: "pkt_len_count".into(),
                    key: dataplane::prog_run::hex(&k.to_le_bytes()),
                    value: "00000000".into(),
                    flags: 0,
                };
                client::call(&control::run_dir(), Some(&name), &req)?;
            }
            let mut rows = Vec::new();
            // Flat out (the worker's capacity), then at a fixed rate below it (CPU left over
            // for the control path; whatever the control path costs the worker shows as loss).
            for rate in [0, FIXED_RATE] {
                rows.push((rate, triplets(&lab, &sink, &name, rate, rounds, win, pin_other)?));
            }
            Ok(rows)
        })();
        stop.store(true, Ordering::Relaxed);
        instance.join().map_err(|_| anyhow::anyhow!("the dataplane thread panicked"))??;
        let measured = measured?;
        drop(lab);
        let q = |v: &[f64]| {
            let (lo, m, hi) = quartiles(v);
            format!("{m:.3}x [{lo:.3}, {hi:.3}]")
        };
        let rows = measured
            .into_iter()
            .map(|(rate, ([idle, busy, again], ns, dps))| {
                let ratios =
                    |x: &[f64]| -> Vec<f64> { idle.iter().zip(x).map(|(i, b)| b / i.max(1.0)).collect() };
                let ns_ratio: Vec<f64> = ns[0].iter().zip(&ns[1]).map(|(i, b)| b / i.max(1e-9)).collect();
                let idle_note = format!("(worker {:.1} ns/frame)", median(&ns[0]));
                let busy_note = format!(
                    "(worker {:.1} ns/frame; {:.1} dumps/s; per-triplet pps ratio {}, ns/frame ratio {})",
                    median(&ns[1]),
                    median(&dps),
                    q(&ratios(&busy)),
                    q(&ns_ratio)
                );
                let again_note = format!("(A/A: per-triplet pps ratio {})", q(&ratios(&again)));
                Row {
                    label: if rate == 0 {
                        format!("{label}, sender flat out")
                    } else {
                        format!("{label}, sender at {} kpps", rate / 1000)
                    },
                    reference: IDLE.into(),
                    cells: vec![
                        Cell::new(IDLE, idle).with_note(idle_note),
                        Cell::new(DUMPING, busy).with_note(busy_note),
                        Cell::new(IDLE_AA, again).with_note(again_note),
                    ],
                }
            })
            .collect();
        Ok(vec![table(rows)])
    }
}
