//! The AF_XDP ceiling probe behind the README's "Where the ceiling is (measured)": one contestant
//! of the throughput bench on a veth pair of its own, with what the kernel counts over the
//! window — per-thread CPU time per frame (`schedstat`), per-CPU user/system/softirq time,
//! softirqs and interrupts per second, the veth's `ethtool -S` deltas on both ends, the
//! kernel threads that ran, context switches, and our socket's `XDP_STATISTICS` at exit.
//!
//! ```text
//! afxdp_probe ours|kernel OBJ|none drop|ret SECS ['extra\nport config\nlines']
//! ```
//!
//! `OBJ` is a `configs/bpf` stem (`xdp_counter`); `none` runs ours without a program and the
//! kernel with `return XDP_TX`; `drop` blocks the lab's prefix in `xdp_firewall`. The process pins
//! itself (and so pktgen's sender) to CPU 1; our worker runs on CPU 0 unless the extra lines say
//! `[workers] cores = [...]`. Environment:
//!
//! - `PROBE_CMD="..."`: a shell command run 200 ms into the window (`perf record -a -g ... sleep 1`).
//! - `PROBE_FIFO=1`: the threads that spin (sender, worker) go to `SCHED_FIFO` 1 for the window
//!   and this thread to 3, so other processes cannot take their CPUs; they return to `SCHED_OTHER`
//!   before the stop. Do not combine it with a worker on the sender's CPU: two FIFO spinners on
//!   one CPU starve one another.
//! - `PROBE_DEFER=IRQS,NS`: the near end's `napi_defer_hard_irqs` and `gro_flush_timeout`.
//! - `PROBE_THREADED=CPU`: threaded NAPI on the near end, its kthreads pinned to `CPU`.
//!
//! Run as root: `cargo run --release -p benches --example afxdp_probe -- ours xdp_counter ret 2`.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use benches::veth::SinkPair;
use dataplane::config::Config;
use dataplane::runtime::{self, RunOptions};

fn cpu_times() -> Vec<Vec<u64>> {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| l.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect())
        .collect()
}

fn table(path: &str) -> Vec<(String, Vec<u64>)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let mut it = l.split_whitespace();
            let name = it.next().unwrap_or("").to_string();
            (name, it.take(2).filter_map(|x| x.parse().ok()).collect())
        })
        .collect()
}

fn ethtool(ns: Option<&str>, dev: &str) -> Vec<(String, u64)> {
    let mut c = match ns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool"]);
            c
        }
        None => std::process::Command::new("ethtool"),
    };
    let out = c.args(["-S", dev]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn diff_eth(a: &[(String, u64)], b: &[(String, u64)], secs: f64) -> String {
    a.iter()
        .zip(b)
        .filter(|(x, y)| y.1 != x.1)
        .map(|(x, y)| format!("{}={:.0}/s", x.0, (y.1 - x.1) as f64 / secs))
        .collect::<Vec<_>>()
        .join(" ")
}

fn threads() -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let d = e.path();
        let comm = std::fs::read_to_string(d.join("comm")).unwrap_or_default().trim().to_string();
        let ns = std::fs::read_to_string(d.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
            .unwrap_or(0);
        v.push((format!("{comm}/{}", e.file_name().to_string_lossy()), ns));
    }
    v
}

fn kthreads() -> Vec<(String, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let d = e.path();
        let comm = std::fs::read_to_string(d.join("comm")).unwrap_or_default().trim().to_string();
        if comm.starts_with("ksoftirqd")
            || comm.starts_with("napi/")
            || comm.starts_with("kworker/0")
            || comm.starts_with("kworker/1")
        {
            let ns = std::fs::read_to_string(d.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
                .unwrap_or(0);
            v.push((format!("{comm}/{}", e.file_name().to_string_lossy()), ns));
        }
    }
    v
}

fn switches() -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
        let get = |k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        v.push((
            e.file_name().to_string_lossy().to_string(),
            get("voluntary_ctxt_switches"),
            get("nonvoluntary_ctxt_switches"),
        ));
    }
    v
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let who = args[1].as_str();
    let obj = args[2].clone();
    let drop = args[3] == "drop";
    let secs: f64 = args[4].parse()?;
    let extra = args.get(5).cloned().unwrap_or_default().replace("\\n", "\n");
    dataplane::kernel::pin_current_thread(1)?;
    let s = SinkPair::create("pr")?;
    if let Ok(v) = std::env::var("PROBE_DEFER") {
        let (irqs, gro) = v.split_once(',').unwrap();
        let dir = std::path::Path::new("/sys/class/net").join(&s.lab.interface);
        std::fs::write(dir.join("napi_defer_hard_irqs"), irqs)?;
        std::fs::write(dir.join("gro_flush_timeout"), gro)?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut ours = None;
    let mut _link = None;
    let objpath = if obj == "none" { benches::object("xdp_counter") } else { benches::object(&obj) };
    if who == "ours" {
        let name = format!("probe{}", std::process::id());
        let mut cfg = Config::parse(&format!(
            "name = {name:?}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {:?}\n{extra}\n[stats]\ninterval = 0\n",
            objpath.display().to_string(),
            s.lab.interface
        ))?;
        if cfg.workers.cores.is_empty() {
            cfg.workers.cores = vec![0];
        }
        let opts = RunOptions { duration: None, no_program: obj == "none", config_path: None };
        let st = stop.clone();
        ours = Some(std::thread::spawn(move || runtime::run(&cfg, &opts, &st)));
        std::thread::sleep(Duration::from_millis(500));
        if drop {
            let req = dataplane::control::proto::Request::MapUpdate {
                map: "blocked_v4".into(),
                key: dataplane::prog_run::hex(&[8, 0, 0, 0, 10, 0, 0, 0]),
                value: dataplane::prog_run::hex(&[1, 0, 0, 0]),
                flags: 0,
            };
            dataplane::control::client::call(&dataplane::control::run_dir(), Some(&name), &req)?;
        }
    } else {
        let o = if obj == "none" {
            benches::veth::tx_only()
        } else {
            xdp_vm::elf::Object::parse(&std::fs::read(&objpath)?)?
        };
        let prog = dataplane::kernel::KernelProgram::load(&o, &o.programs[0])?;
        if drop {
            let m = prog.maps().iter().find(|m| m.name() == "blocked_v4").unwrap();
            m.update(&[8, 0, 0, 0, 10, 0, 0, 0], &[1, 0, 0, 0], 0)?;
        }
        let idx = dataplane::backend::ifindex(&s.lab.interface).unwrap();
        _link = Some((prog.attach_xdp(idx, dataplane::kernel::XdpMode::Native)?, prog));
    }
    if let Ok(v) = std::env::var("PROBE_THREADED") {
        let dir = std::path::Path::new("/sys/class/net").join(&s.lab.interface);
        std::fs::write(dir.join("threaded"), "1")?;
        std::thread::sleep(Duration::from_millis(100));
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("for p in $(pgrep -f 'napi/{}'); do taskset -p -c {v} $p; done", s.lab.interface),
            ])
            .output()?;
        println!("threaded: {}", String::from_utf8_lossy(&out.stdout).trim().replace('\n', "; "));
    }

    let (gstop, sent, h) = dataplane::lab::spawn_generator(&s.lab, 16, 0)?;
    std::thread::sleep(Duration::from_millis(300));
    let (c0, sq0, ir0) = (cpu_times(), table("/proc/softirqs"), std::fs::read_to_string("/proc/interrupts")?);
    let (e0, p0) = (ethtool(None, &s.lab.interface), ethtool(Some(&s.lab.namespace), &s.lab.peer));
    let fifo = std::env::var("PROBE_FIFO").is_ok();
    let mut spinners = Vec::new();
    if fifo {
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        let me = me.file_name().unwrap().to_string_lossy().to_string();
        let _ = std::process::Command::new("chrt").args(["-f", "-p", "3", &me]).status();
        let a = threads();
        std::thread::sleep(Duration::from_millis(100));
        let b = threads();
        for ((n, x), (_, y)) in a.iter().zip(&b) {
            if y - x > 5_000_000 && !n.starts_with("ip/") {
                let tid = n.rsplit('/').next().unwrap().to_string();
                let _ = std::process::Command::new("chrt").args(["-f", "-p", "1", &tid]).status();
                spinners.push(tid);
            }
        }
        println!("fifo spinners: {spinners:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let th0 = threads();
    let (kt0, sw0) = (kthreads(), switches());
    let sent0 = sent.load(Ordering::Relaxed);
    let k0 = s.sink.count();
    let t0 = Instant::now();
    if let Ok(cmd) = std::env::var("PROBE_CMD") {
        std::thread::sleep(Duration::from_millis(200));
        let _ = std::process::Command::new("sh").args(["-c", &cmd]).status();
    }
    let left = Duration::from_secs_f64(secs).saturating_sub(t0.elapsed());
    std::thread::sleep(left);
    let dt = t0.elapsed().as_secs_f64();
    let k1 = s.sink.count();
    let sent1 = sent.load(Ordering::Relaxed);
    let th1 = threads();
    let (kt1, sw1) = (kthreads(), switches());
    for (n, b) in &kt1 {
        if let Some((_, a)) = kt0.iter().find(|(m, _)| m == n)
            && (b - a) as f64 / 1e6 / dt > 5.0
        {
            println!("kthread {n}: {:.0} ms/s", (b - a) as f64 / 1e6 / dt);
        }
    }
    for (t, v, nv) in &sw1 {
        if let Some((_, v0, nv0)) = sw0.iter().find(|(u, _, _)| u == t)
            && (v - v0 + nv - nv0) as f64 / dt > 50.0
        {
            println!(
                "switches {t}: voluntary {:.0}/s involuntary {:.0}/s",
                (v - v0) as f64 / dt,
                (nv - nv0) as f64 / dt
            );
        }
    }
    let (c1, sq1, ir1) = (cpu_times(), table("/proc/softirqs"), std::fs::read_to_string("/proc/interrupts")?);
    let (e1, p1) = (ethtool(None, &s.lab.interface), ethtool(Some(&s.lab.namespace), &s.lab.peer));
    println!("returned {:.0} pps, sent {:.0} pps", (k1 - k0) as f64 / dt, (sent1 - sent0) as f64 / dt);
    for (name, b) in &th1 {
        if let Some((_, a)) = th0.iter().find(|(n, _)| n == name) {
            let ms = (b - a) as f64 / 1e6 / dt;
            if ms > 10.0 {
                println!(
                    "thread {name}: {ms:.0} ms/s, {:.0} ns per sent frame, {:.0} ns per returned",
                    (b - a) as f64 / (sent1 - sent0) as f64,
                    (b - a) as f64 / (k1 - k0).max(1) as f64
                );
            }
        }
    }
    for (cpu, (a, b)) in c0.iter().zip(&c1).enumerate() {
        // user nice system idle iowait irq softirq steal
        let d: Vec<u64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
        let tot: u64 = d.iter().sum();
        let pct = |i: usize| 100.0 * d[i] as f64 / tot as f64;
        println!(
            "cpu{cpu}: user {:.0}% sys {:.0}% idle {:.0}% irq {:.0}% softirq {:.0}% steal {:.0}%",
            pct(0),
            pct(2),
            pct(3),
            pct(5),
            pct(6),
            pct(7)
        );
    }
    for ((n, a), (_, b)) in sq0.iter().zip(&sq1) {
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (y - x) as f64 / dt).collect();
        if d.iter().any(|&x| x > 100.0) {
            println!("softirq {n} {d:.0?}/s");
        }
    }
    for (la, lb) in ir0.lines().zip(ir1.lines()).skip(1) {
        let a: Vec<&str> = la.split_whitespace().collect();
        let b: Vec<&str> = lb.split_whitespace().collect();
        let d: Vec<f64> = (1..3)
            .map(|i| {
                (b.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
                    - a.get(i).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)) as f64
                    / dt
            })
            .collect();
        if d.iter().any(|&x| x > 100.0) {
            println!("irq {} {d:.0?}/s {}", a[0], a[3..].join(" "));
        }
    }
    println!("near: {}", diff_eth(&e0, &e1, dt));
    println!("peer: {}", diff_eth(&p0, &p1, dt));
    for tid in &spinners {
        let _ = std::process::Command::new("chrt").args(["-o", "-p", "0", tid]).status();
    }
    gstop.store(true, Ordering::Relaxed);
    let _ = h.join();
    stop.store(true, Ordering::Relaxed);
    if let Some(h) = ours {
        let sum = h.join().unwrap()?;
        println!(
            "ours: rx {} tx {} verdicts {:?} drops {:?} kernel {:?} frame_ns {:?}",
            sum.totals.rx,
            sum.totals.tx,
            sum.totals.verdicts,
            sum.totals.drops,
            sum.totals.kernel,
            sum.frame_ns
        );
    }
    Ok(())
}
