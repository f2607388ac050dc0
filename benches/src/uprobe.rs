//! Uprobe cost: nanoseconds a probe adds to each call of an `#[inline(never)]` function, ours
//! beside the kernel's, in the same run.
//!
//! Contestants, alternated round by round (pinned to CPU 0): the function unprobed (the
//! baseline every figure is relative to); our symbol patch (uprobe) and uretprobe; our probe
//! site (`site:rx`, against the disabled site); the kernel's uprobe and uretprobe
//! (`perf_event_open` uprobe PMU + `BPF_PROG_TYPE_KPROBE`) on a twin of the function (same
//! code; see `uprobe_bench_target_kernel`); for the site, the kernel's uprobe on the site's USDT
//! note (a NOP the kernel emulates: its cheapest probe). Programs: `sum` (`return
//! PT_REGS_PARM2 + PT_REGS_PARM3`, the seed's `return b + c`) and `counter` (a map lookup and an
//! atomic add); all from `dataplane/tests/bpf/uprobe_args.c`, the same object for both sides.
//! Then `bpf_probe_read_user` alone: `read_user4` minus `read_user1`, over three reads, ours
//! and the kernel's.
//!
//! `cargo bench -p benches --bench suite -- --only uprobe` (`--quick` for a short run).
//! Figures: per round, thread CPU ns per call with the probe minus ns per call without (the
//! machine is shared: CPU time leaves out what other tasks ran); medians.

#![allow(unsafe_code, reason = "the assembly targets the probes find by name")]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use dataplane::kernel::KernelProgram;
use dataplane::uprobe::{self, Target, TraceProgram};
use xdp_vm::elf::Object;

use crate::{Better, Cell, Comparison, Mode, Row, Table, clock, median};

/// The uprobe comparison.
#[derive(Debug)]
pub struct Uprobe;

const OURS: &str = "ours";
const KERNEL: &str = "kernel";
const READ: &str = "bpf_probe_read_user, 8 bytes (per read)";
const WRITE: &str = "bpf_probe_write_user, 8 bytes (per write)";

// The target, `return b + c` as two instructions, and a twin for the kernel's probes, each alone
// in its own page: a kernel uprobe must not share a page with code we patched (what it restores
// when it detaches is not ours to predict), and once we have patched a function its first bytes
// stay a jump to our trampoline. Same code, same call loop.
std::arch::global_asm!(
    ".pushsection .text.uprobe_bench_target,\"ax\",@progbits",
    ".p2align 12",
    ".globl uprobe_bench_target",
    ".type uprobe_bench_target,@function",
    "uprobe_bench_target:",
    "lea rax, [rsi + rdx]",
    "ret",
    ".size uprobe_bench_target, . - uprobe_bench_target",
    ".p2align 12",
    ".globl uprobe_bench_target_kernel",
    ".type uprobe_bench_target_kernel,@function",
    "uprobe_bench_target_kernel:",
    "lea rax, [rsi + rdx]",
    "ret",
    ".size uprobe_bench_target_kernel, . - uprobe_bench_target_kernel",
    ".p2align 12",
    ".popsection",
);

unsafe extern "C" {
    /// The probed function (found by name, [`TARGET`]); `benches/examples/uprobe_hits.rs` uses it too.
    pub safe fn uprobe_bench_target(a: u64, b: u64, c: u64) -> u64;
    safe fn uprobe_bench_target_kernel(a: u64, b: u64, c: u64) -> u64;
}

type Fun = extern "C" fn(u64, u64, u64) -> u64;

/// The symbol of [`uprobe_bench_target`], what our probes attach to.
pub const TARGET: &str = "uprobe_bench_target";

#[inline(never)]
fn call_loop(f: Fun, n: u64) -> f64 {
    let f: Fun = black_box(f);
    // What the read and write programs read and write through the first argument.
    let mut x = 0u64;
    let p = std::ptr::from_mut(&mut x) as u64;
    let t = clock::thread_cpu_ns();
    for i in 0..n {
        black_box(f(p, i, 1));
    }
    let ns = (clock::thread_cpu_ns() - t) as f64 / n as f64;
    black_box(x);
    ns
}

#[inline(never)]
fn site_loop(n: u64) -> f64 {
    let t = clock::thread_cpu_ns();
    for i in 0..n {
        dataplane::uprobe::site::rx(black_box(1), 0, i, 0);
    }
    (clock::thread_cpu_ns() - t) as f64 / n as f64
}

/// `site_loop` without the site: what the disabled NOP costs is the difference.
#[inline(never)]
fn empty_loop(n: u64) -> f64 {
    let t = clock::thread_cpu_ns();
    for i in 0..n {
        black_box((black_box(1u64), 0u64, i, 0u64));
    }
    (clock::thread_cpu_ns() - t) as f64 / n as f64
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    OursUprobe,
    OursUretprobe,
    OursBoth,
    OursSite,
    KernelUprobe,
    KernelUretprobe,
    KernelBoth,
    /// The kernel's uprobe on every `rx` site's `.note.stapsdt` address (a USDT probe, as
    /// `bpftrace` attaches it): a 5-byte NOP, which the kernel emulates instead of stepping.
    KernelSite,
}

struct Contestant {
    side: Side,
    prog: &'static str,
    added: Vec<f64>,
}

impl Comparison for Uprobe {
    fn name(&self) -> &'static str {
        "uprobe"
    }

    #[expect(clippy::too_many_lines, reason = "one alternating loop over every contestant")]
    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let rounds = mode.pick(3, 7);
        let n_ours: u64 = mode.pick(50_000, 2_000_000);
        let n_kernel: u64 = mode.pick(5_000, 20_000);
        let labels = [
            ("uprobe", Side::OursUprobe, Side::KernelUprobe),
            ("uretprobe", Side::OursUretprobe, Side::KernelUretprobe),
            ("uprobe + uretprobe on the same function", Side::OursBoth, Side::KernelBoth),
            (
                "site:rx probe (ours) vs the kernel's uprobe on its USDT note",
                Side::OursSite,
                Side::KernelSite,
            ),
        ];
        let table = |rows, base: f64| Table {
            id: "uprobe".into(),
            title: "Uprobes: ns a probe adds to each call".into(),
            method: format!(
                "An `#[inline(never)]` two-instruction function (`return b + c`) called in a loop, pinned to CPU 0; \
                 ours patched (symbol patch to a trampoline) or the probe site, the kernel's probe \
                 (perf_event_open uprobe PMU + BPF_PROG_TYPE_KPROBE) on a twin of the function in its own page; \
                 programs `sum` and `counter` (a map lookup and an atomic add) of dataplane/tests/bpf/uprobe_args.c, \
                 the same object on both sides. The site row's kernel contestant: the kernel's uprobe on the rx site's \
                 USDT note (its 5-byte NOP, which the kernel emulates rather than single-steps: its best case). Figure: thread CPU time (user and system: the kernel's trap \
                 counts, other tasks' time does not) per call probed minus unprobed (unprobed: {base:.1} ns), \
                 {rounds} rounds, every contestant once per round. \"uprobe + uretprobe\": both attached at once \
                 (the seed's __bench_uprobe_uretprobe). bpf_probe_read_user: `read_user4` minus `read_user1`, per \
                 read; bpf_probe_write_user: `write_user4` minus `write_user1` of configs/bpf/bench/uprobe_rw.c, \
                 per write, into a u64 the caller owns. Reference: the kernel."
            ),
            row_header: "probe / program".into(),
            unit: "ns added per call".into(),
            better: Better::Lower,
            rows,
        };
        if !crate::is_root() {
            let mut rows: Vec<Row> = Vec::new();
            for prog in ["sum", "counter"] {
                for (l, ..) in labels {
                    rows.push(Row::skipped(&format!("{l} / {prog}"), KERNEL, &[OURS, KERNEL], "needs root"));
                }
            }
            rows.push(Row::skipped(READ, KERNEL, &[OURS, KERNEL], "needs root"));
            rows.push(Row::skipped(WRITE, KERNEL, &[OURS, KERNEL], "needs root"));
            return Ok(vec![table(rows, 0.0)]);
        }
        dataplane::kernel::pin_current_thread(0)?;
        uprobe::set_slot(0);

        let path = format!("{}/uprobe_args.o", dataplane::BPF_OBJ_DIR);
        let obj = Object::parse(&std::fs::read(&path)?)?;
        let slots = dataplane::kernel::possible_cpus()?;
        let maps = xdp_vm::create_maps(&obj, slots)?;
        let ours = |name: &str| -> anyhow::Result<TraceProgram> {
            let mut p = TraceProgram::load(obj.program(Some(name))?, &maps)?;
            p.ret = false;
            Ok(p)
        };
        let exe: PathBuf = std::env::current_exe()?;
        let image = uprobe::symbols::image().map_err(anyhow::Error::msg)?;
        let offset = image.functions("uprobe_bench_target_kernel")[0]
            .file_offset
            .ok_or_else(|| anyhow::anyhow!("no file offset for uprobe_bench_target_kernel"))?;
        let target = Target::Function(TARGET.into());
        let site_offsets: Vec<u64> = image
            .site("rx")
            .iter()
            .map(|n| {
                image
                    .file_offset(n.addr)
                    .ok_or_else(|| anyhow::anyhow!("rx site at {:#x} not in the file", n.addr))
            })
            .collect::<anyhow::Result<_>>()?;
        let kernel_prog = |n: &str| -> anyhow::Result<Arc<KernelProgram>> {
            Ok(Arc::new(KernelProgram::load(&obj, obj.program(Some(n))?)?))
        };
        let kernel_progs: Vec<(&str, Arc<KernelProgram>)> =
            ["sum", "counter"].iter().map(|n| Ok((*n, kernel_prog(n)?))).collect::<anyhow::Result<_>>()?;
        let (k_read1, k_read4) = (kernel_prog("read_user1")?, kernel_prog("read_user4")?);
        let rw_path = crate::object("bench/uprobe_rw");
        let rw = Object::parse(
            &std::fs::read(&rw_path).map_err(|e| anyhow::anyhow!("{}: {e}", rw_path.display()))?,
        )?;
        let rw_maps = xdp_vm::create_maps(&rw, slots)?;
        let ours_rw = |name: &str| -> anyhow::Result<TraceProgram> {
            let mut p = TraceProgram::load(rw.program(Some(name))?, &rw_maps)?;
            p.ret = false;
            Ok(p)
        };
        // The kernel may refuse bpf_probe_write_user (lockdown, or no CAP_SYS_ADMIN): then its
        // cell says so, with the verifier's reason, beside our figure.
        let k_write = (|| -> anyhow::Result<_> {
            Ok((
                KernelProgram::load(&rw, rw.program(Some("write_user1"))?)?,
                KernelProgram::load(&rw, rw.program(Some("write_user4"))?)?,
            ))
        })()
        .map_err(|e| {
            let why = format!("{e:#}");
            let line = why.lines().find(|l| l.contains("helper")).unwrap_or(why.lines().next().unwrap_or(""));
            format!("(the kernel refuses the program here: {})", line.trim())
        });

        let mut cs: Vec<Contestant> = Vec::new();
        for prog in ["sum", "counter"] {
            for side in [
                Side::OursSite,
                Side::OursUprobe,
                Side::OursUretprobe,
                Side::OursBoth,
                Side::KernelUprobe,
                Side::KernelUretprobe,
                Side::KernelBoth,
                Side::KernelSite,
            ] {
                cs.push(Contestant { side, prog, added: Vec::new() });
            }
        }
        let (mut read_cost, mut k_read_cost) = (Vec::new(), Vec::new());
        let (mut write_cost, mut k_write_cost) = (Vec::new(), Vec::new());
        let mut site_off = Vec::new();
        let mut base_ns = Vec::new();

        for _ in 0..rounds {
            for c in &mut cs {
                let kernel_side = matches!(
                    c.side,
                    Side::KernelUprobe | Side::KernelUretprobe | Side::KernelBoth | Side::KernelSite
                );
                let n = if kernel_side { n_kernel } else { n_ours };
                let (base, probed) = match c.side {
                    Side::OursSite => {
                        let p = ours(c.prog)?;
                        let base = site_loop(n);
                        let att = uprobe::attach(&Target::Site("rx".into()), &[&p])?;
                        let probed = site_loop(n);
                        att.detach()?;
                        (base, probed)
                    }
                    Side::OursUprobe | Side::OursUretprobe => {
                        let mut p = ours(c.prog)?;
                        p.ret = c.side == Side::OursUretprobe;
                        let base = call_loop(uprobe_bench_target, n);
                        let att = uprobe::attach(&target, &[&p])?;
                        let probed = call_loop(uprobe_bench_target, n);
                        att.detach()?;
                        (base, probed)
                    }
                    Side::OursBoth => {
                        let entry = ours(c.prog)?;
                        let mut exit = ours(c.prog)?;
                        exit.ret = true;
                        let base = call_loop(uprobe_bench_target, n);
                        let att = uprobe::attach(&target, &[&entry, &exit])?;
                        let probed = call_loop(uprobe_bench_target, n);
                        att.detach()?;
                        (base, probed)
                    }
                    Side::KernelSite => {
                        let Some((_, k)) = kernel_progs.iter().find(|(n, _)| *n == c.prog) else { continue };
                        let base = site_loop(n);
                        let links = site_offsets
                            .iter()
                            .map(|&o| k.attach_uprobe(&exe, o, false))
                            .collect::<Result<Vec<_>, _>>()?;
                        let probed = site_loop(n);
                        drop(links);
                        (base, probed)
                    }
                    Side::KernelBoth => {
                        let Some((_, k)) = kernel_progs.iter().find(|(n, _)| *n == c.prog) else { continue };
                        let base = call_loop(uprobe_bench_target_kernel, n);
                        let entry = k.attach_uprobe(&exe, offset, false)?;
                        let exit = k.attach_uprobe(&exe, offset, true)?;
                        let probed = call_loop(uprobe_bench_target_kernel, n);
                        drop((entry, exit));
                        (base, probed)
                    }
                    Side::KernelUprobe | Side::KernelUretprobe => {
                        let Some((_, k)) = kernel_progs.iter().find(|(n, _)| *n == c.prog) else { continue };
                        let base = call_loop(uprobe_bench_target_kernel, n);
                        let link = k.attach_uprobe(&exe, offset, c.side == Side::KernelUretprobe)?;
                        let probed = call_loop(uprobe_bench_target_kernel, n);
                        drop(link);
                        (base, probed)
                    }
                };
                c.added.push(probed - base);
            }
            // probe_read_user: read_user4 - read_user1, per read.
            let (r1, r4) = (ours("read_user1")?, ours("read_user4")?);
            let att = uprobe::attach(&target, &[&r1])?;
            let t1 = call_loop(uprobe_bench_target, n_ours);
            att.detach()?;
            let att = uprobe::attach(&target, &[&r4])?;
            let t4 = call_loop(uprobe_bench_target, n_ours);
            att.detach()?;
            read_cost.push((t4 - t1) / 3.0);
            let link = k_read1.attach_uprobe(&exe, offset, false)?;
            let t1 = call_loop(uprobe_bench_target_kernel, n_kernel);
            drop(link);
            let link = k_read4.attach_uprobe(&exe, offset, false)?;
            let t4 = call_loop(uprobe_bench_target_kernel, n_kernel);
            drop(link);
            k_read_cost.push((t4 - t1) / 3.0);
            // probe_write_user: write_user4 - write_user1, per write.
            let (w1, w4) = (ours_rw("write_user1")?, ours_rw("write_user4")?);
            let att = uprobe::attach(&target, &[&w1])?;
            let t1 = call_loop(uprobe_bench_target, n_ours);
            att.detach()?;
            let att = uprobe::attach(&target, &[&w4])?;
            let t4 = call_loop(uprobe_bench_target, n_ours);
            att.detach()?;
            write_cost.push((t4 - t1) / 3.0);
            if let Ok((k_write1, k_write4)) = &k_write {
                let link = k_write1.attach_uprobe(&exe, offset, false)?;
                let t1 = call_loop(uprobe_bench_target_kernel, n_kernel);
                drop(link);
                let link = k_write4.attach_uprobe(&exe, offset, false)?;
                let t4 = call_loop(uprobe_bench_target_kernel, n_kernel);
                drop(link);
                k_write_cost.push((t4 - t1) / 3.0);
            }
            site_off.push(site_loop(n_ours) - empty_loop(n_ours));
            base_ns.push(call_loop(uprobe_bench_target, n_ours));
        }

        let added = |side: Side, prog: &str| {
            cs.iter().find(|c| c.side == side && c.prog == prog).map(|c| c.added.clone()).unwrap_or_default()
        };
        let mut rows = Vec::new();
        for prog in ["sum", "counter"] {
            for (label, ours_side, kernel_side) in labels {
                let mut ours_cell = Cell::new(OURS, added(ours_side, prog));
                if ours_side == Side::OursSite {
                    ours_cell = ours_cell.with_note(format!(
                        "(the site disabled, a NOP: {:.1} ns vs no site)",
                        median(&site_off)
                    ));
                }
                rows.push(Row {
                    label: format!("{label} / {prog}"),
                    reference: KERNEL.into(),
                    cells: vec![ours_cell, Cell::new(KERNEL, added(kernel_side, prog))],
                });
            }
        }
        rows.push(Row {
            label: READ.into(),
            reference: KERNEL.into(),
            cells: vec![Cell::new(OURS, read_cost), Cell::new(KERNEL, k_read_cost)],
        });
        rows.push(Row {
            label: WRITE.into(),
            reference: KERNEL.into(),
            cells: vec![
                Cell::new(OURS, write_cost),
                match &k_write {
                    Ok(_) => Cell::new(KERNEL, k_write_cost),
                    Err(why) => Cell::missing(KERNEL, why),
                },
            ],
        });
        Ok(vec![table(rows, median(&base_ns))])
    }
}
