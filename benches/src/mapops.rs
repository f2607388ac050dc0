//! Map operations (the seed's "run the map op 1000 times in one function", issue 5's table):
//! `configs/bpf/bench/mapops.c`, one XDP program per map type (hash, array, per-CPU hash,
//! per-CPU array) looping 1000 updates, lookups or deletes, run by the kernel through
//! `BPF_PROG_TEST_RUN` and by our JIT on the same object. Then hash updates from one thread and
//! from two at once (disjoint keys, CPUs 0 and 1), ours and the kernel's.
//!
//! Per-op figures: the kernel's own test-run timer (it excludes the syscall) over a batch, and
//! our thread CPU time over the same number of runs, divided by 1000. Deletes need keys to
//! delete, so each delete run follows an (untimed) update run that puts the keys back, and only
//! the delete runs are timed, for both contestants.

use std::sync::Barrier;
use std::time::Instant;

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run;
use xdp_vm::context::{XDP_FRAME_SIZE, action};
use xdp_vm::elf::Object;
use xdp_vm::jit::{JitProgram, JitRunner};
use xdp_vm::{Program, Xdp, XdpBuff, create_maps};

use crate::{Better, Cell, Comparison, Mode, Row, Table, alternate, clock};

/// Operations per program run.
pub const OPS: f64 = 1000.0;

const KERNEL: &str = "kernel (BPF_PROG_TEST_RUN)";
const OURS: &str = "ours, JIT";

/// The map-operation comparison.
#[derive(Debug)]
pub struct MapOps;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Update = 0,
    Lookup = 1,
    Delete = 2,
}

/// The frame that tells `mapops.c` what to do: first key, operation.
#[must_use]
pub fn frame(first: u32, op: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..4].copy_from_slice(&first.to_le_bytes());
    f[4] = op;
    f
}

/// Our side of one map type: the compiled program and a frame buffer per thread.
struct Ours {
    jit: JitProgram<Xdp>,
}

impl Ours {
    /// Runs the program once on `packet` with slot `slot`; CPU nanoseconds.
    fn run(&self, runner: &mut JitRunner, buf: &mut [u8], packet: &[u8], slot: usize) -> anyhow::Result<u64> {
        let mut buff = XdpBuff::load(buf, packet)?;
        let t = clock::thread_cpu_ns();
        let r = self.jit.run_on(runner, &mut buff, slot)?;
        let ns = clock::thread_cpu_ns() - t;
        anyhow::ensure!(r == u64::from(action::PASS), "mapops returned {r}");
        Ok(ns)
    }

    /// `n` runs on the same frame; CPU ns for all.
    fn batch(
        &self,
        runner: &mut JitRunner,
        buf: &mut [u8],
        packet: &[u8],
        n: u32,
        slot: usize,
    ) -> anyhow::Result<u64> {
        let mut buff = XdpBuff::load(buf, packet)?;
        let t = clock::thread_cpu_ns();
        for _ in 0..n {
            let r = self.jit.run_on(runner, &mut buff, slot)?;
            anyhow::ensure!(r == u64::from(action::PASS), "mapops returned {r}");
        }
        Ok(clock::thread_cpu_ns() - t)
    }
}

/// The sum `mapops.c` leaves in its `looked_up` global after a lookup run over keys 0..999
/// that the update run set to `value = key`.
const LOOKED_UP: u64 = 999 * 1000 / 2;

/// Proves the lookup rows time real lookups: after the last lookup run each contestant's
/// `looked_up` global (`.bss`) holds the sum of the 1000 values found, so no compiler dropped
/// a lookup whose result went unused.
fn check_lookups_read(
    ours: &[std::sync::Arc<maps::Map>],
    kern: &KernelProgram,
    label: &str,
) -> anyhow::Result<()> {
    let key = 0u32.to_le_bytes();
    let bss = ours
        .iter()
        .find(|m| m.name() == ".bss")
        .ok_or_else(|| anyhow::anyhow!("mapops.c has no .bss (looked_up)"))?;
    let ours_sum = bss.lookup_user(&key).map_err(|e| anyhow::anyhow!("our .bss: {e:?}"))?;
    let kern_sum = kern
        .map(".bss")
        .ok_or_else(|| anyhow::anyhow!("the kernel's program has no .bss"))?
        .lookup(&key)?
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| anyhow::anyhow!("the kernel's .bss is empty"))?;
    for (who, bytes) in [(OURS, ours_sum), (KERNEL, kern_sum)] {
        let sum = u64::from_le_bytes(bytes[..8].try_into()?);
        anyhow::ensure!(sum == LOOKED_UP, "{label} lookups, {who}: looked_up = {sum}, expected {LOOKED_UP}");
    }
    Ok(())
}

impl Comparison for MapOps {
    fn name(&self) -> &'static str {
        "mapops"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let reps: u32 = mode.pick(3, 1000);
        let rounds = mode.pick(3, 7);
        kernel::pin_current_thread(0)?;
        let path = crate::object("bench/mapops");
        let obj =
            Object::parse(&std::fs::read(&path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)?;
        let mut rows = Vec::new();
        let (mut scaling, mut fifo) = (Vec::new(), true);
        for (prog, label) in [
            ("mapops_hash", "hash"),
            ("mapops_array", "array"),
            ("mapops_percpu_hash", "per-CPU hash"),
            ("mapops_percpu_array", "per-CPU array"),
        ] {
            let spec = obj.program(Some(prog))?;
            let (Contestants { ours, kern }, maps) = Contestants::load(&obj, spec)?;
            let mut runner = JitRunner::new();
            let mut buf = vec![0u8; XDP_FRAME_SIZE];
            let is_hash = label.ends_with("hash");
            let ops: &[Op] =
                if is_hash { &[Op::Update, Op::Lookup, Op::Delete] } else { &[Op::Update, Op::Lookup] };
            for &op in ops {
                let packet = frame(0, op as u8);
                let fill = frame(0, Op::Update as u8);
                let samples = alternate(rounds, 2, |_, c| {
                    let ns = if op == Op::Delete {
                        // Put the keys back, untimed; time the delete run alone.
                        let mut total = 0.0;
                        for _ in 0..reps {
                            if c == 0 {
                                ours.run(&mut runner, &mut buf, &fill, 0)?;
                                total += ours.run(&mut runner, &mut buf, &packet, 0)? as f64;
                            } else {
                                kern.test_run(&fill, 1)?;
                                total += f64::from(kern.test_run(&packet, 1)?.duration_ns);
                            }
                        }
                        total / f64::from(reps)
                    } else if c == 0 {
                        ours.batch(&mut runner, &mut buf, &packet, reps, 0)? as f64 / f64::from(reps)
                    } else {
                        f64::from(kern.test_run(&packet, reps)?.duration_ns)
                    };
                    Ok(ns / OPS)
                })?;
                if op == Op::Lookup {
                    check_lookups_read(&maps, &kern, label)?;
                }
                let op_name = match op {
                    Op::Update => "update",
                    Op::Lookup => "lookup",
                    Op::Delete => "delete",
                };
                rows.push(Row {
                    label: format!("{label} {op_name}"),
                    reference: KERNEL.into(),
                    cells: vec![Cell::new(OURS, samples[0].clone()), Cell::new(KERNEL, samples[1].clone())],
                });
            }
            if label == "hash" {
                // The control: a second copy of the program and its map for each contestant.
                let (control, _) = Contestants::load(&obj, spec)?;
                (scaling, fifo) = scaling_rows(&Contestants { ours, kern }, &control, mode)?;
            }
        }
        Ok(vec![
            Table {
                id: "mapops".into(),
                title: "Map operations: ns per operation (1000 per program run)".into(),
                method: format!(
                    "`configs/bpf/bench/mapops.c` (u32 keys 0..999, u64 values; 4096 entries), the same object in \
                     the kernel and in our JIT, {reps} runs per round, {rounds} rounds alternating, CPU 0. Kernel: its \
                     test-run timer; ours: thread CPU time. Deletes: each timed run follows an untimed update run \
                     that puts the keys back. Reference: the kernel."
                ),
                row_header: "map / operation".into(),
                unit: "ns/op".into(),
                better: Better::Lower,
                rows,
            },
            Table {
                id: "mapops_scaling".into(),
                title: "Hash updates from one and two threads".into(),
                method: format!(
                    "The hash update program from one thread (CPU 0), then from two at once (CPUs 0 and 1, keys \
                     0..999 and 2048..3047) on one map, then, as the control, from two at once each on a map of \
                     its own (nothing of a map shared: what the machine allows), ours and the kernel's, \
                     alternating; millions of updates per second of wall time, all threads together. The bench \
                     threads run {}, so that other processes' load does not take their CPUs (it would cap the \
                     two-thread rate whatever the store does). The notes give the thread CPU time per update (all \
                     threads' CPU time over all updates: it rises with contention between the threads, hardly \
                     with other load on the CPUs) and, for two threads, both over the one-thread figures.",
                    if fifo {
                        "at SCHED_FIFO priority 1"
                    } else {
                        "at the normal policy (SCHED_FIFO was refused)"
                    }
                ),
                row_header: "threads".into(),
                unit: "M updates/s".into(),
                better: Better::Higher,
                rows: scaling,
            },
        ])
    }
}

/// Both contestants of one hash-update program.
struct Contestants {
    ours: Ours,
    kern: KernelProgram,
}

impl Contestants {
    /// Program `spec` of `obj` loaded into the kernel and compiled by our JIT on maps of its own
    /// (returned too).
    fn load(
        obj: &Object,
        spec: &xdp_vm::elf::ProgramSpec,
    ) -> anyhow::Result<(Self, Vec<std::sync::Arc<maps::Map>>)> {
        let kern = KernelProgram::load(obj, spec)?;
        let maps = create_maps(obj, prog_run::cpu_slots())?;
        let ours = Ours { jit: JitProgram::compile(&Program::<Xdp>::new(spec, &maps)?)? };
        Ok((Self { ours, kern }, maps))
    }
}

/// Hash-update rates from 1 and 2 threads on one map, and from 2 threads on a map each (the
/// control: `control` holds a second map for each contestant), ours and the kernel's; and
/// whether every bench thread got `SCHED_FIFO`.
fn scaling_rows(
    one_map: &Contestants,
    control: &Contestants,
    mode: Mode,
) -> anyhow::Result<(Vec<Row>, bool)> {
    let fifo = std::sync::atomic::AtomicBool::new(true);
    let runs: u32 = mode.pick(20, 2000);
    let rounds = mode.pick(2, 5);
    // Online CPUs (not `available_parallelism`, which says 1 once this thread is pinned).
    let cpus = crate::report::online_cpus();
    // One closure per (contestant, threads, maps): M updates per second of wall time, and thread
    // CPU nanoseconds per update (all threads' CPU time over all updates). On a machine whose
    // CPUs other work also wants, the wall-time rate of two threads says as much about that work
    // as about contention; the CPU time per update rises only with contention (shared cache
    // lines, locks) while the threads really run at once, so the two together tell them apart.
    // Thread `t` runs on CPU `t`, on `one_map`, or for `t > 0` with `own_maps` on `control`.
    let measure = |kernel_side: bool, threads: usize, own_maps: bool| -> anyhow::Result<(f64, f64)> {
        let barrier = Barrier::new(threads);
        let (elapsed, cpu) = std::thread::scope(|s| -> anyhow::Result<(f64, f64)> {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (barrier, fifo) = (&barrier, &fifo);
                    let side = if own_maps && t > 0 { control } else { one_map };
                    s.spawn(move || -> anyhow::Result<(f64, f64)> {
                        kernel::pin_current_thread(t)?;
                        if !realtime::enter() {
                            fifo.store(false, std::sync::atomic::Ordering::Relaxed);
                        }
                        let packet = frame(2048 * t as u32, Op::Update as u8);
                        let mut runner = JitRunner::new();
                        let mut buf = vec![0u8; XDP_FRAME_SIZE];
                        barrier.wait();
                        let t0 = Instant::now();
                        let c0 = clock::thread_cpu_ns();
                        if kernel_side {
                            side.kern.test_run(&packet, runs)?;
                        } else {
                            side.ours.batch(&mut runner, &mut buf, &packet, runs, t)?;
                        }
                        Ok((t0.elapsed().as_secs_f64(), (clock::thread_cpu_ns() - c0) as f64))
                    })
                })
                .collect();
            let (mut longest, mut cpu) = (0f64, 0f64);
            for h in handles {
                let (wall, ns) = h.join().map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
                longest = longest.max(wall);
                cpu += ns;
            }
            Ok((longest, cpu))
        })?;
        let updates = threads as f64 * f64::from(runs) * OPS;
        Ok((updates / elapsed / 1e6, cpu / updates))
    };
    let mut rows = Vec::new();
    let mut one = [(0.0, 0.0); 2];
    let cases: &[(usize, bool, &str)] = if cpus >= 2 {
        &[(1, false, "1"), (2, false, "2, one map"), (2, true, "2, a map each (control)")]
    } else {
        &[(1, false, "1")]
    };
    for &(threads, own_maps, label) in cases {
        let mut cpu = [Vec::new(), Vec::new()];
        let samples = alternate(rounds, 2, |_, c| {
            let (rate, ns) = measure(c == 1, threads, own_maps)?;
            cpu[c].push(ns);
            Ok(rate)
        })?;
        let mut cells = vec![Cell::new(OURS, samples[0].clone()), Cell::new(KERNEL, samples[1].clone())];
        for (c, cell) in cells.iter_mut().enumerate() {
            let rate = cell.stats.map_or(0.0, |s| s.median);
            let ns = crate::median(&cpu[c]);
            if threads == 1 {
                one[c] = (rate, ns);
                cell.note = format!("(CPU {ns:.1} ns per update)");
            } else if one[c].0 > 0.0 && one[c].1 > 0.0 {
                cell.note = format!(
                    "({:.2}x the one-thread rate; CPU {ns:.1} ns per update, {:.2}x one thread's)",
                    rate / one[c].0,
                    ns / one[c].1
                );
            }
        }
        rows.push(Row { label: label.into(), reference: KERNEL.into(), cells });
    }
    kernel::pin_current_thread(0)?;
    if cpus < 2 {
        rows.push(Row {
            label: "2".into(),
            reference: KERNEL.into(),
            cells: vec![
                Cell::missing(OURS, "(one CPU: not measured)"),
                Cell::missing(KERNEL, "(one CPU: not measured)"),
            ],
        });
    }
    Ok((rows, fifo.into_inner()))
}

/// `SCHED_FIFO` for the scaling threads (they are short-lived: each measurement spawns its own).
mod realtime {
    #![expect(unsafe_code, reason = "sched_setscheduler through libc")]

    /// Puts the calling thread at `SCHED_FIFO` priority 1; `false` when that is not permitted
    /// (not root, or real-time scheduling is not available): the thread then stays as it was.
    pub(super) fn enter() -> bool {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: `param` is a valid `sched_param` that lives across the call; pid 0 names the
        // calling thread, whose policy is all that changes; failure only returns -1.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
    }
}
