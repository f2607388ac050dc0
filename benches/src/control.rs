//! Does operating a running dataplane move its packet rate? One instance runs `xdp_counter` on
//! a veth pair of our own (AF_XDP, JIT) while the peer sends flat out and counts, in a native
//! XDP sink, the frames that come back. Windows alternate between idle (no control traffic)
//! and a control client that runs `map dump pkt_len_count` (1,000 entries, DESIGN.md's JSON,
//! through the control socket) back to back; the same run, the same instance, medians.
//!
//! Besides the medians of each contestant it reports the median of the per-round ratios (each
//! dumping window against the idle window next to it), which drift in the machine's load
//! affects least.
//!
//! `cargo bench -p benches --bench suite -- --only control` (as root): 12 rounds of 1 s per
//! contestant; `--quick`: 2 rounds of 300 ms.

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
        std::thread::sleep(Duration::from_millis(200));
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

impl Comparison for Control {
    fn name(&self) -> &'static str {
        "control"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, win) = mode.pick((2, Duration::from_millis(300)), (12, Duration::from_secs(1)));
        let label = "xdp_counter, AF_XDP (JIT, copy mode)";
        let table = |rows| Table {
            id: "control".into(),
            title: "Operating a running dataplane: packet rate while the control socket is busy".into(),
            method: format!(
                "One instance runs xdp_counter on a veth pair of our own (AF_XDP, JIT) while the peer sends flat out \
                 and counts, in a native XDP sink, the frames that come back. Windows alternate (order swapped each \
                 round) between idle and a control client running `map dump pkt_len_count` (1,000 entries, \
                 DESIGN.md's JSON, through the control socket) back to back at nice 19; {rounds} round(s) of {win:?} \
                 each, the same run and instance. Notes: worker ns per frame in the program loop, dumps per second, \
                 and the median of per-round ratios (each dumping window against the idle one beside it). \
                 Reference: idle."
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
                &[IDLE, DUMPING],
                "needs root for a veth pair, XDP and AF_XDP",
            )])]);
        }
        let pid = std::process::id() % 100_000;
        let SinkPair { lab, sink } = SinkPair::create("dcb")?;
        let a = lab.interface.clone();
        let name = format!("bench-control-{pid}");
        let object = std::path::Path::new(dataplane::BPF_OBJ_DIR).join("xdp_counter.o");
        let cfg = Config::parse(&format!(
            "name = {name:?}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {a:?}\n[stats]\ninterval = 0\n",
            object.display().to_string()
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
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
            let (gen_stop, _sent, generator) = lab::spawn_generator(&lab, 16, 0)?;
            let (mut idle, mut busy, mut dps) = (Vec::new(), Vec::new(), Vec::new());
            let (mut idle_ns, mut busy_ns) = (Vec::new(), Vec::new());
            let mut result = Ok(());
            'rounds: for r in 0..rounds {
                // Alternate which contestant goes first.
                for dumping in if r % 2 == 0 { [false, true] } else { [true, false] } {
                    let (pps, ns, d) = match window(&sink, dumping, &name, win) {
                        Ok(w) => w,
                        Err(e) => {
                            result = Err(e);
                            break 'rounds;
                        }
                    };
                    if dumping {
                        busy.push(pps);
                        busy_ns.push(ns);
                        dps.push(d);
                    } else {
                        idle.push(pps);
                        idle_ns.push(ns);
                    }
                }
            }
            gen_stop.store(true, Ordering::Relaxed);
            let _ = generator.join();
            result.map(|()| (idle, busy, dps, idle_ns, busy_ns))
        })();
        stop.store(true, Ordering::Relaxed);
        instance.join().map_err(|_| anyhow::anyhow!("the dataplane thread panicked"))??;
        let (idle, busy, dps, idle_ns, busy_ns) = measured?;
        let ratio: Vec<f64> = idle.iter().zip(&busy).map(|(i, b)| b / i.max(1.0)).collect();
        let ratio_ns: Vec<f64> = idle_ns.iter().zip(&busy_ns).map(|(i, b)| b / i.max(1e-9)).collect();
        let idle_note = format!("(worker {:.1} ns/frame)", median(&idle_ns));
        let busy_note = format!(
            "(worker {:.1} ns/frame; {:.0} dumps/s; per-round ratios: pps {:.3}x, ns/frame {:.3}x)",
            median(&busy_ns),
            median(&dps),
            median(&ratio),
            median(&ratio_ns)
        );
        drop(lab);
        Ok(vec![table(vec![Row {
            label: label.into(),
            reference: IDLE.into(),
            cells: vec![
                Cell::new(IDLE, idle).with_note(idle_note),
                Cell::new(DUMPING, busy).with_note(busy_note),
            ],
        }])])
    }
}
