//! Packets per second through a veth pair: our dataplane (AF_XDP, the configured engine) and
//! its AF_XDP tuning variants against the kernel running the same object as native XDP on the
//! same interface, alternating round by round in one run.
//!
//! Set-up per program: a namespace and veth pair of our own; the peer end (in the namespace)
//! sends the lab's frames flat out from one pktgen sender thread (AF_XDP copy mode) and counts,
//! in a native XDP sink on the peer, the frames that come back. A round attaches one contestant
//! to the other end for a fixed window and reports returned frames per second. Programs: every
//! `configs/bpf/*.c` XDP object (one whose first program does not return `XDP_TX` for any of
//! the lab's frames in the kernel's test run says so in its row: nothing would come back),
//! except the firewall, measured with the lab's source prefix blocked (every frame
//! `XDP_DROP`ped): frames the program dropped per second of traffic, counted by its own
//! `verdicts` map for the kernel and by the worker for ours; plus "no program" — ours with no
//! program at all (the worker loop alone) against a kernel program that is just `return XDP_TX`.
//!
//! Our variants, each a contestant of its own in every round: the defaults (batch 64, no busy
//! polling, prefetching each frame's first cache line); without the prefetch; preferred busy
//! polling (`busy_poll = 50` µs, budget = batch, with the veth's `napi_defer_hard_irqs = 2` and
//! `gro_flush_timeout = 200000` for the round, as the kernel's busy-poll documentation pairs
//! them); batch 32; batch 128; the worker on the sender's CPU.
//!
//! CPUs: the bench pins itself, and so the peer's sender threads it starts, to CPU 1; our worker
//! runs on CPU 0 (on CPU 1 in the last variant). A veth's receive path runs in the softirq of
//! the CPU that sent the frame: the kernel contestant's program and our redirect into the
//! AF_XDP socket run on the sender's CPU; our worker's `sendto` (copy mode) runs the peer's
//! receive path on the worker's CPU.
//!
//! The note on each of our cells is the worker's own time per frame (p50 of the timed batches):
//! from RX to the verdicts with a program; for "no program" the whole loop iteration without the
//! `sendto` that hands TX to the kernel (fill/completion ring upkeep, RX ring reads, TX ring
//! writes) — the worker loop overhead.
//!
//! Every cell's note also gives the sender thread's CPU time per frame of the cell's rate (its
//! `schedstat` over the window): the sender's own work plus, since a veth runs the receiving
//! end's NAPI in the sender's softirq, everything the near end does on that CPU — the kernel's
//! program, XDP_TX and the sink for the kernel; the redirect into our AF_XDP socket (the copy
//! into the UMEM, the rings, the socket's wake-up) for ours. It shows what each contestant costs
//! the sending CPU, whatever else the machine runs.
//!
//! `cargo bench -p benches --bench suite -- --only throughput` (as root): 3 rounds of 3 s each;
//! `--quick`: 1 round of 300 ms.

use std::path::{Path, PathBuf};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::backend;
use dataplane::config::Config;
use dataplane::control::{self, proto::Request};
use dataplane::kernel::{KernelProgram, XdpMode};
use dataplane::runtime::{self, RunOptions};
use xdp_vm::elf::Object;

use crate::veth::{self, SinkPair};
use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, median};

/// The throughput comparison.
#[derive(Debug)]
pub struct Throughput;

const KERNEL: &str = "kernel: native XDP";

/// Our contestants: name, lines added to the port's config, busy polling on the veth.
const VARIANTS: [(&str, &str, bool); 6] = [
    ("ours: AF_XDP (copy mode), JIT", "", false),
    ("ours, no prefetch", "prefetch = false\n", false),
    ("ours, busy poll 50 us", "busy_poll = 50\n", true),
    ("ours, batch 32", "batch = 32\n", false),
    ("ours, batch 128", "batch = 128\n", false),
    ("ours, worker on the sender's CPU", "[workers]\ncores = [1]\n", false),
];

/// The firewall's blocked prefix: 10.0.0.0/8 (the lab's source address), rule 1; LPM key
/// `{u32 prefixlen; u32 addr}` in memory order.
const BLOCK_KEY: [u8; 8] = [8, 0, 0, 0, 10, 0, 0, 0];
const BLOCK_RULE: [u8; 4] = [1, 0, 0, 0];
/// `STAT_DROP` in the firewall's `verdicts` array.
const STAT_DROP: u32 = 1;

/// What a case measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Frames back at the peer per second.
    Returned,
    /// Frames the firewall dropped per second of traffic.
    Dropped,
    /// Ours with no program (frames back at the peer per second).
    NoProgram,
}

/// Sets the busy-poll companions on `iface` (our own veth end): IRQ/softirq deferral while the
/// application polls.
fn napi_defer(iface: &str, on: bool) {
    let dir = Path::new("/sys/class/net").join(iface);
    let _ = std::fs::write(dir.join("napi_defer_hard_irqs"), if on { "2" } else { "0" });
    let _ = std::fs::write(dir.join("gro_flush_timeout"), if on { "200000" } else { "0" });
}

/// One round's figures: the rate the case measures, the sender thread's CPU per frame of that
/// rate, and (ours) the worker's own ns per frame (p50).
#[derive(Debug, Clone, Copy)]
struct RoundFigures {
    rate: f64,
    sender_ns: f64,
    worker_ns: Option<u64>,
}

/// Ours attached to the near end for `window`.
fn our_round(
    s: &SinkPair,
    object: &Path,
    kind: Kind,
    (extra, busy): (&str, bool),
    window: Duration,
) -> anyhow::Result<RoundFigures> {
    let name = format!("dpbench{}", std::process::id());
    let mut cfg = Config::parse(&format!(
        "name = {name:?}\n[program]\nobject = {:?}\n[[ports]]\ninterface = {:?}\n{extra}[stats]\ninterval = 0\n",
        object.display().to_string(),
        s.lab.interface
    ))?;
    if cfg.workers.cores.is_empty() {
        cfg.workers.cores = vec![0];
    }
    let stop = Arc::new(AtomicBool::new(false));
    let opts = RunOptions { duration: None, no_program: kind == Kind::NoProgram, config_path: None };
    napi_defer(&s.lab.interface, busy);
    let st = stop.clone();
    let h = std::thread::spawn(move || runtime::run(&cfg, &opts, &st));
    std::thread::sleep(Duration::from_millis(500));
    let blocked = if kind == Kind::Dropped {
        let req = Request::MapUpdate {
            map: "blocked_v4".into(),
            key: dataplane::prog_run::hex(&BLOCK_KEY),
            value: dataplane::prog_run::hex(&BLOCK_RULE),
            flags: 0,
        };
        control::client::call(&control::run_dir(), Some(&name), &req).map(|_| ())
    } else {
        Ok(())
    };
    let t0 = Instant::now();
    let measured = blocked.map_err(anyhow::Error::from).and_then(|()| s.measure_cpu(window));
    let traffic = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let summary = h.join().map_err(|_| anyhow::anyhow!("dataplane thread panicked"))??;
    napi_defer(&s.lab.interface, false);
    let measured = measured?;
    let rate = if kind == Kind::Dropped {
        summary.totals.verdicts[xdp_vm::context::action::DROP as usize] as f64 / traffic
    } else {
        measured.pps
    };
    Ok(RoundFigures { rate, sender_ns: measured.sender_ns_per(rate), worker_ns: Some(summary.frame_ns.0) })
}

/// The kernel's firewall round: the object attached natively with the prefix blocked; its own
/// `verdicts` count of drops over the traffic's duration.
fn kernel_drop_round(s: &SinkPair, obj: &Object, window: Duration) -> anyhow::Result<RoundFigures> {
    let prog = KernelProgram::load(obj, &obj.programs[0])?;
    let maps = prog.maps();
    let find = |n: &str| maps.iter().find(|m| m.name() == n).ok_or_else(|| anyhow::anyhow!("no map {n}"));
    find("blocked_v4")?.update(&BLOCK_KEY, &BLOCK_RULE, 0)?;
    let verdicts = find("verdicts")?;
    let drops = || -> u64 {
        verdicts
            .lookup(&STAT_DROP.to_ne_bytes())
            .ok()
            .flatten()
            .map(|vs| vs.iter().map(|v| u64::from_ne_bytes(v[..8].try_into().unwrap_or([0; 8]))).sum())
            .unwrap_or(0)
    };
    let idx = backend::ifindex(&s.lab.interface).ok_or_else(|| anyhow::anyhow!("no interface"))?;
    let _link = prog.attach_xdp(idx, XdpMode::Native)?;
    let d0 = drops();
    let t0 = Instant::now();
    let measured = s.measure_cpu(window)?;
    let traffic = t0.elapsed().as_secs_f64();
    let rate = drops().saturating_sub(d0) as f64 / traffic;
    Ok(RoundFigures { rate, sender_ns: measured.sender_ns_per(rate), worker_ns: None })
}

impl Comparison for Throughput {
    fn name(&self) -> &'static str {
        "throughput"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let (rounds, window) = mode.pick((1, Duration::from_millis(300)), (3, Duration::from_secs(3)));
        let contestants: Vec<&str> = VARIANTS.iter().map(|v| v.0).chain([KERNEL]).collect();
        if crate::is_root() && std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2 {
            dataplane::kernel::pin_current_thread(1)?;
        }
        // Every shipped program (configs/bpf/*.c with an XDP program), then the worker loop alone.
        let mut cases: Vec<(String, PathBuf, Kind, Object)> = crate::shipped_xdp()?
            .into_iter()
            .map(|(name, path, obj)| {
                let kind = if name == "xdp_firewall" { Kind::Dropped } else { Kind::Returned };
                (name, path, kind, obj)
            })
            .collect();
        cases.push((
            "no program (worker loop)".into(),
            crate::object("xdp_counter"),
            Kind::NoProgram,
            veth::tx_only(),
        ));
        let mut rows = Vec::new();
        for (i, (name, path, kind, obj)) in cases.iter().enumerate() {
            if !crate::is_root() {
                rows.push(Row::skipped(name, KERNEL, &contestants, "needs root for a veth pair and XDP"));
                continue;
            }
            if *kind == Kind::Returned && !crate::sends_lab_traffic_back(obj)? {
                rows.push(Row::skipped(
                    name,
                    KERNEL,
                    &contestants,
                    "the program does not return XDP_TX for the lab's frames: nothing comes back to count",
                ));
                continue;
            }
            let s = SinkPair::create(&format!("db{i}"))?;
            let mut worker_ns = vec![Vec::new(); contestants.len()];
            let mut sender_ns = vec![Vec::new(); contestants.len()];
            let samples = alternate(rounds, contestants.len(), |_, c| {
                let r = match VARIANTS.get(c) {
                    Some(&(_, extra, busy)) => our_round(&s, path, *kind, (extra, busy), window)?,
                    None if *kind == Kind::Dropped => kernel_drop_round(&s, obj, window)?,
                    None => {
                        let m = s.kernel_round_cpu(obj, window)?;
                        RoundFigures { rate: m.pps, sender_ns: m.sender_ns_per(m.pps), worker_ns: None }
                    }
                };
                worker_ns[c].extend(r.worker_ns.map(|n| n as f64));
                sender_ns[c].push(r.sender_ns);
                Ok(r.rate)
            })?;
            let cells = samples
                .into_iter()
                .enumerate()
                .map(|(c, v)| {
                    let sender = format!("sender CPU {:.0} ns/frame", median(&sender_ns[c]));
                    Cell::new(contestants[c], v).with_note(if worker_ns[c].is_empty() {
                        format!("({sender})")
                    } else {
                        format!("(worker {:.0} ns/frame p50; {sender})", median(&worker_ns[c]))
                    })
                })
                .collect();
            rows.push(Row { label: name.clone(), reference: KERNEL.into(), cells });
        }
        Ok(vec![Table {
            id: "throughput".into(),
            title: "Throughput on a veth pair: frames per second back at the sender (the firewall: dropped)"
                .into(),
            method: format!(
                "A veth pair in a namespace of our own; the peer sends the lab's 16 flows flat out (one pktgen \
                 thread pinned to CPU 1, AF_XDP copy mode) and counts what comes back in a native XDP sink — every \
                 contestant measured by that same kernel counter. The near end runs ours (one worker, CPU 0 unless \
                 said) in six AF_XDP variants or the kernel's native XDP with the same object, {rounds} round(s) of \
                 {window:?}, alternating. xdp_firewall: the lab's prefix blocked, frames dropped per second of \
                 traffic (the kernel's own verdicts map; our worker's count). \"no program\": ours runs the worker \
                 loop alone (its note: the loop's userspace time per frame without the TX kick), the kernel a program \
                 that is just `return XDP_TX`. \"sender CPU\": the pktgen thread's CPU time per frame of the cell's rate \
                 (its syscalls and the softirq work they run: on a veth, the receiving end's NAPI — the kernel's \
                 program or our redirect into the AF_XDP socket). Reference: the kernel."
            ),
            row_header: "program".into(),
            unit: "pps".into(),
            better: Better::Higher,
            rows,
        }])
    }
}
