//! One probed call loop, for counting instructions per hit (callgrind) and a quick timing:
//! `uprobe_hits PROGRAM KIND CALLS [ROUNDS]` with KIND `none`, `uprobe`, `uretprobe`, `both`
//! or `site`; PROGRAM one of dataplane/tests/bpf/uprobe_args.c (`sum`, `counter`).
//! Instructions per hit: `valgrind --tool=callgrind --smc-check=all` at two CALLS, the
//! difference over the difference of calls. Timing: ROUNDS > 0 alternates the loop unprobed
//! and probed and prints the median ns added per call (thread CPU time).

#![allow(unsafe_code, reason = "the assembly target the probe finds by name")]

use std::hint::black_box;

use dataplane::uprobe::{self, Target, TraceProgram};
use xdp_vm::elf::Object;

std::arch::global_asm!(
    ".pushsection .text.uprobe_hits_target,\"ax\",@progbits",
    ".p2align 12",
    ".globl uprobe_hits_target",
    ".type uprobe_hits_target,@function",
    "uprobe_hits_target:",
    "lea rax, [rsi + rdx]",
    "ret",
    ".size uprobe_hits_target, . - uprobe_hits_target",
    ".p2align 12",
    ".popsection",
);

unsafe extern "C" {
    safe fn uprobe_hits_target(a: u64, b: u64, c: u64) -> u64;
}

#[inline(never)]
fn call_loop(n: u64) {
    let f: extern "C" fn(u64, u64, u64) -> u64 = black_box(uprobe_hits_target);
    for i in 0..n {
        black_box(f(0, i, 1));
    }
}

#[inline(never)]
fn site_loop(n: u64) {
    for i in 0..n {
        uprobe::site::rx(black_box(1), 0, i, 0);
    }
}

fn cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, prog, kind, calls, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: uprobe_hits PROGRAM none|uprobe|uretprobe|both|site CALLS [ROUNDS]");
    };
    let calls: u64 = calls.parse()?;
    let rounds: usize = rest.first().map_or(Ok(0), |r| r.parse())?;
    uprobe::set_slot(0);
    let path = format!("{}/uprobe_args.o", dataplane::BPF_OBJ_DIR);
    let obj = Object::parse(&std::fs::read(&path)?)?;
    let maps = xdp_vm::create_maps(&obj, 2)?;
    let load = |ret: bool| -> anyhow::Result<TraceProgram> {
        let mut p = TraceProgram::load(obj.program(Some(prog))?, &maps)?;
        p.ret = ret;
        Ok(p)
    };
    let (entry, exit) = (load(false)?, load(true)?);
    let site = kind == "site";
    let (target, progs): (Target, Vec<&TraceProgram>) = match kind.as_str() {
        "none" => (Target::Function("uprobe_hits_target".into()), vec![]),
        "uprobe" => (Target::Function("uprobe_hits_target".into()), vec![&entry]),
        "uretprobe" => (Target::Function("uprobe_hits_target".into()), vec![&exit]),
        "both" => (Target::Function("uprobe_hits_target".into()), vec![&entry, &exit]),
        "site" => (Target::Site("rx".into()), vec![&entry]),
        k => anyhow::bail!("unknown kind {k}"),
    };
    let run = |n| if site { site_loop(n) } else { call_loop(n) };
    if rounds == 0 {
        let _att = if progs.is_empty() { None } else { Some(uprobe::attach(&target, &progs)?) };
        run(calls);
        return Ok(());
    }
    let mut added = Vec::new();
    for _ in 0..rounds {
        let t = cpu_ns();
        run(calls);
        let base = cpu_ns() - t;
        let att = uprobe::attach(&target, &progs)?;
        let t = cpu_ns();
        run(calls);
        let probed = cpu_ns() - t;
        att.detach()?;
        added.push((probed as f64 - base as f64) / calls as f64);
    }
    added.sort_by(f64::total_cmp);
    println!(
        "{prog} {kind}: {:.1} ns added per call (median of {rounds}; {:.1}..{:.1})",
        added[rounds / 2],
        added[0],
        added[rounds - 1]
    );
    Ok(())
}
