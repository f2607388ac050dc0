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
//! `cargo bench -p benches --bench suite -- --only dpdk` (as root): 3 rounds of 3 s; `-- --quick`: 1 round of
//! 1 s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::median;
use crate::veth::{self, SinkPair};
use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions, Summary};
use xdp_vm::elf::Object;

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

pub fn main(quick: bool) -> anyhow::Result<()> {
    let (rounds, window) = if quick { (1, Duration::from_secs(1)) } else { (3, Duration::from_secs(3)) };
    let dir = PathBuf::from(dataplane::BPF_OBJ_DIR);
    let pcap = std::env::temp_dir().join(format!("dpbench-{}.pcap", std::process::id()));
    pktgen::write::write_pcap(&pcap, &[pktgen::craft::icmp_echo()])?;
    let counter = dir.join("xdp_counter.o");

    // 1. net_ring.
    let mut ring: Vec<(String, PathBuf, bool)> =
        vec![("no program (worker loop)".into(), counter.clone(), true)];
    for name in ["xdp_counter", "xdp_balancer", "xdp_firewall"] {
        ring.push((name.into(), dir.join(format!("{name}.o")), false));
    }
    println!("DPDK net_ring, one worker on cpu 1, 512 frames circulating, {rounds} round(s) of {window:?}");
    println!("| program | Mpps (wall) | Mpps per CPU second | ns per packet (CPU) | worker ns/frame p50 |");
    println!("|---|---|---|---|---|");
    for (name, path, no_program) in &ring {
        let (mut pps, mut cpu, mut ns) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            let (p, c, n) = ring_round(path, *no_program, &pcap, window)?;
            pps.push(p);
            cpu.push(c);
            ns.push(n as f64);
        }
        let (p, c, n) = (median(&pps), median(&cpu), median(&ns));
        // A program that drops or passes empties the loop after one pass: no rate to report.
        if p > 1e5 {
            println!("| {name} | {:.2} | {:.2} | {:.1} | {n:.0} |", p / 1e6, c / 1e6, 1e9 / c);
        } else {
            // One timed batch of a cold start is not a figure either: see the replay bench.
            let _ = n;
            println!("| {name} | - (not XDP_TX: frames leave the loop) | - | - | - |");
        }
    }

    // 2. The same veth: DPDK (net_af_packet), AF_XDP, kernel native XDP.
    let mut cases: Vec<(String, PathBuf, bool, Object)> = Vec::new();
    for name in ["xdp_counter", "xdp_balancer"] {
        let path = dir.join(format!("{name}.o"));
        let obj = Object::parse(&std::fs::read(&path)?)?;
        cases.push((name.into(), path, false, obj));
    }
    cases.push(("no program (worker loop)".into(), counter, true, veth::tx_only()));
    println!();
    println!("pps back through one veth pair, {rounds} round(s) of {window:?}, alternating; medians");
    println!(
        "| program | DPDK net_af_packet | AF_XDP (copy mode) | kernel native XDP | DPDK / kernel | AF_XDP / kernel |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, (name, path, no_program, obj)) in cases.iter().enumerate() {
        let v = SinkPair::create(&format!("dd{i}"))?;
        let (mut d, mut a, mut k) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            d.push(our_round(&v, true, path, *no_program, window)?);
            a.push(our_round(&v, false, path, *no_program, window)?);
            k.push(v.kernel_round(obj, window)?);
        }
        let (d, a, k) = (median(&d), median(&a), median(&k));
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
            d,
            a,
            k,
            d / k.max(1.0),
            a / k.max(1.0)
        );
    }
    let _ = std::fs::remove_file(pcap);
    runtime::shutdown();
    Ok(())
}
