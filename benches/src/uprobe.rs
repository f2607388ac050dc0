//! Uprobe cost: nanoseconds a probe adds to each call of an `#[inline(never)]` function, ours
//! beside the kernel's, in the same run.
//!
//! Contestants, alternated round by round (pinned to CPU 0): the function unprobed (the
//! baseline every figure is relative to); our symbol patch (uprobe) and uretprobe; our probe
//! site (`site:rx`, against the disabled site); the kernel's uprobe and uretprobe
//! (`perf_event_open` uprobe PMU + `BPF_PROG_TYPE_KPROBE`) on a twin of the function (same
//! code; see `uprobe_bench_target_kernel`). Programs: `sum` (`return
//! PT_REGS_PARM2 + PT_REGS_PARM3`, the seed's `return b + c`) and `counter` (a map lookup and an
//! atomic add); all from `dataplane/tests/bpf/uprobe_args.c`, the same object for both sides.
//! Then `bpf_probe_read_user` alone: `read_user4` minus `read_user1`, over three reads.
//!
//! `cargo bench -p benches --bench suite -- --only uprobe` (`-- --quick` for a short run). Figures: median
//! over rounds of (ns per call with the probe - ns per call without), min..max in brackets.

#![allow(unsafe_code, reason = "the assembly targets the probes find by name")]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use dataplane::kernel::KernelProgram;
use dataplane::uprobe::{self, Target, TraceProgram};
use xdp_vm::elf::Object;

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
    safe fn uprobe_bench_target(a: u64, b: u64, c: u64) -> u64;
    safe fn uprobe_bench_target_kernel(a: u64, b: u64, c: u64) -> u64;
}

type Fun = extern "C" fn(u64, u64, u64) -> u64;

#[inline(never)]
fn call_loop(f: Fun, n: u64) -> f64 {
    let f: Fun = black_box(f);
    let x = 0u64;
    let p = std::ptr::from_ref(&x) as u64;
    let t = Instant::now();
    for i in 0..n {
        black_box(f(p, i, 1));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

#[inline(never)]
fn site_loop(n: u64) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        dataplane::uprobe::site::rx(black_box(1), 0, i, 0);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// `site_loop` without the site: what the disabled NOP costs is the difference.
#[inline(never)]
fn empty_loop(n: u64) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        black_box((black_box(1u64), 0u64, i, 0u64));
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn stats(xs: &mut [f64]) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[xs.len() / 2], xs[0], xs[xs.len() - 1])
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    OursUprobe,
    OursUretprobe,
    OursSite,
    KernelUprobe,
    KernelUretprobe,
}

struct Contestant {
    label: String,
    side: Side,
    prog: &'static str,
    added: Vec<f64>,
}

pub fn main(quick: bool) -> anyhow::Result<()> {
    let rounds = if quick { 3 } else { 7 };
    let n_ours: u64 = if quick { 200_000 } else { 2_000_000 };
    let n_kernel: u64 = if quick { 20_000 } else { 200_000 };
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
    let target = Target::Function("uprobe_bench_target".into());
    let kernel_progs: Vec<(&str, Arc<KernelProgram>)> = ["sum", "counter"]
        .iter()
        .filter_map(|n| Some((*n, Arc::new(KernelProgram::load(&obj, obj.program(Some(n)).ok()?).ok()?))))
        .collect();
    if kernel_progs.len() < 2 {
        eprintln!("uprobe: the kernel refused the programs (not root?): kernel columns missing");
    }

    let mut cs: Vec<Contestant> = Vec::new();
    for prog in ["sum", "counter"] {
        for (side, label) in [
            (Side::OursSite, "ours, probe site"),
            (Side::OursUprobe, "ours, uprobe (symbol patch)"),
            (Side::OursUretprobe, "ours, uretprobe"),
            (Side::KernelUprobe, "kernel, uprobe"),
            (Side::KernelUretprobe, "kernel, uretprobe"),
        ] {
            cs.push(Contestant { label: format!("{label} / {prog}"), side, prog, added: Vec::new() });
        }
    }
    let mut read_cost = Vec::new();
    let mut site_off = Vec::new();
    let mut base_ns = Vec::new();

    for _ in 0..rounds {
        for c in &mut cs {
            let kernel_side = matches!(c.side, Side::KernelUprobe | Side::KernelUretprobe);
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
        site_off.push(site_loop(n_ours) - empty_loop(n_ours));
        base_ns.push(call_loop(uprobe_bench_target, n_ours));
    }

    let (b, _, _) = stats(&mut base_ns);
    println!("uprobe: added ns per call of uprobe_bench_target (unprobed call: {b:.1} ns), {rounds} rounds");
    println!("{:44} {:>26} {:>12}", "contestant / program", "added ns/call (min..max)", "kernel/this");
    let medians: Vec<(String, Side, &str, f64, f64, f64)> = cs
        .iter_mut()
        .filter(|c| !c.added.is_empty())
        .map(|c| {
            let (m, lo, hi) = stats(&mut c.added);
            (c.label.clone(), c.side, c.prog, m, lo, hi)
        })
        .collect();
    for (label, side, prog, m, lo, hi) in &medians {
        let kernel_best = medians
            .iter()
            .filter(|(_, s, p, ..)| *p == *prog && matches!(s, Side::KernelUprobe))
            .map(|x| x.3)
            .next();
        let kernel_ret = medians
            .iter()
            .filter(|(_, s, p, ..)| *p == *prog && matches!(s, Side::KernelUretprobe))
            .map(|x| x.3)
            .next();
        let rival = if *side == Side::OursUretprobe { kernel_ret } else { kernel_best };
        let ratio = rival.map_or_else(|| "-".into(), |k| format!("{:.0}x", k / m.max(0.1)));
        println!("{label:44} {:>10.1} ({lo:.1}..{hi:.1}) {ratio:>12}", m);
    }
    let (m, lo, hi) = stats(&mut site_off);
    println!("{:44} {:>10.1} ({lo:.1}..{hi:.1})", "probe site disabled (NOP), vs no site", m);
    let (m, lo, hi) = stats(&mut read_cost);
    println!("{:44} {:>10.1} ({lo:.1}..{hi:.1})", "bpf_probe_read_user (8 bytes), ns per call", m);
    Ok(())
}
