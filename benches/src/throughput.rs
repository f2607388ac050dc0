//! Packets per second through a veth pair: our dataplane (AF_XDP, the configured engine) against
//! the kernel running the same object as native XDP on the same interface, alternating round
//! by round in one run.
//!
//! Set-up per program: a namespace and veth pair of our own; the peer end (in the namespace)
//! sends the lab's frames flat out from one pktgen sender thread (AF_XDP copy mode) and counts, in a native XDP sink on
//! the peer, the frames that come back. A round attaches one contestant to the other end for a
//! fixed window and reports returned frames per second. Programs: every `configs/bpf/*.c`
//! object whose first program returns `XDP_TX` for the lab's traffic (xdp_counter, the
//! balancer), plus "no program" — ours with no program at all (the worker loop alone) against a
//! kernel program that is just `return XDP_TX`.
//!
//! `cargo bench -p benches --bench suite -- --only throughput` (as root): 3 rounds of 3 s each; `-- --quick`:
//! 1 round of 1 s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::median;
use crate::veth::{self, SinkPair};
use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions};
use xdp_vm::elf::Object;

fn our_round(s: &SinkPair, object: Option<&Path>, window: Duration) -> anyhow::Result<(f64, (u64, u64))> {
    let object =
        object.map_or_else(|| PathBuf::from(dataplane::BPF_OBJ_DIR).join("xdp_counter.o"), Path::to_path_buf);
    let cfg = Config::parse(&format!(
        "[program]\nobject = {:?}\n[[ports]]\ninterface = {:?}\n[stats]\ninterval = 0\n",
        object.display().to_string(),
        s.lab.interface
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program: false, config_path: None };
    let opts = RunOptions {
        no_program: object.ends_with("xdp_counter.o") && NO_PROGRAM.load(Ordering::Relaxed),
        ..opts
    };
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &opts, &st));
    std::thread::sleep(Duration::from_millis(500));
    let pps = s.measure(window);
    stop.store(true, Ordering::Relaxed);
    let summary = h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    Ok((pps?, summary.frame_ns))
}

static NO_PROGRAM: AtomicBool = AtomicBool::new(false);

pub fn main(quick: bool) -> anyhow::Result<()> {
    let (rounds, window) = if quick { (1, Duration::from_secs(1)) } else { (3, Duration::from_secs(3)) };
    let dir = Path::new(dataplane::BPF_OBJ_DIR);
    let mut cases: Vec<(String, Option<PathBuf>, Object)> = Vec::new();
    for name in ["xdp_counter", "xdp_balancer"] {
        let path = dir.join(format!("{name}.o"));
        if let Ok(bytes) = std::fs::read(&path) {
            cases.push((name.into(), Some(path), Object::parse(&bytes)?));
        }
    }
    cases.push(("no program (worker loop)".into(), None, veth::tx_only()));
    println!(
        "pps back through a veth pair, {rounds} round(s) of {window:?}, ours (AF_XDP, jit, copy mode) vs kernel native XDP"
    );
    println!("| program | ours | kernel native XDP | ours / kernel | ours, worker ns/frame p50 |");
    println!("|---|---|---|---|---|");
    for (i, (name, path, obj)) in cases.iter().enumerate() {
        let s = SinkPair::create(&format!("db{i}"))?;
        NO_PROGRAM.store(path.is_none(), Ordering::Relaxed);
        let (mut ours, mut kern, mut ns) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (pps, frame_ns) = our_round(&s, path.as_deref(), window)?;
            ours.push(pps);
            ns.push(frame_ns.0 as f64);
            kern.push(s.kernel_round(obj, window)?);
        }
        let (o, k) = (median(&ours), median(&kern));
        println!("| {name} | {:.0} | {:.0} | {:.2}x | {:.0} |", o, k, o / k.max(1.0), median(&ns));
    }
    Ok(())
}
