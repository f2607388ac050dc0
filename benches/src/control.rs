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
//! `cargo bench -p benches --bench suite -- --only control` (as root): 12 rounds of 1 s per contestant;
//! `-- --quick`: 2 rounds of 1 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::median;
use crate::veth::SinkPair;
use dataplane::backend::Sink;
use dataplane::config::Config;
use dataplane::control::{self, client, proto::DumpFormat, proto::Request};
use dataplane::lab;
use dataplane::runtime::{self, RunOptions};

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

pub fn main(quick: bool) -> anyhow::Result<()> {
    let (rounds, win) = if quick { (2, Duration::from_secs(1)) } else { (12, Duration::from_secs(1)) };
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
    for r in 0..rounds {
        // Alternate which contestant goes first.
        for dumping in if r % 2 == 0 { [false, true] } else { [true, false] } {
            let (pps, ns, d) = window(&sink, dumping, &name, win)?;
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
    stop.store(true, Ordering::Relaxed);
    instance.join().map_err(|_| anyhow::anyhow!("the dataplane thread panicked"))??;
    let ratio: Vec<f64> = idle.iter().zip(&busy).map(|(i, b)| b / i.max(1.0)).collect();
    let ratio_ns: Vec<f64> = idle_ns.iter().zip(&busy_ns).map(|(i, b)| b / i.max(1e-9)).collect();
    let (r, rns) = (median(&ratio), median(&ratio_ns));
    let (i, b, d) = (median(&idle), median(&busy), median(&dps));
    let (ins, bns) = (median(&idle_ns), median(&busy_ns));
    println!(
        "xdp_counter on AF_XDP (jit, copy mode), the peer sending flat out; {rounds} round(s) of {win:?} per contestant, alternating"
    );
    println!(
        "| control traffic | pps back (median) | pps, every round | vs idle | worker ns/frame (median) | vs idle |"
    );
    println!("|---|---|---|---|---|---|");
    println!("| none (idle) | {i:.0} | {idle:.0?} | 1.00x | {ins:.1} | 1.00x |");
    println!(
        "| `map dump` of 1,000 entries in a loop ({d:.0} dumps/s) | {b:.0} | {busy:.0?} | {:.3}x | {bns:.1} | {:.3}x |",
        b / i.max(1.0),
        bns / ins.max(1e-9)
    );
    println!("median of per-round ratios (dumping / idle): pps {r:.3}x, worker ns/frame {rns:.3}x");
    drop(lab);
    Ok(())
}
