//! One probed call loop, for counting instructions per hit (callgrind) and a quick timing:
//! `uprobe_hits PROGRAM KIND CALLS [ROUNDS]` with KIND `none`, `uprobe`, `uretprobe`, `both`
//! or `site`; PROGRAM one of dataplane/tests/bpf/uprobe_args.c (`sum`, `counter`).
//! Instructions per hit: `valgrind --tool=callgrind --smc-check=all` at two CALLS, the
//! difference over the difference of calls. Timing: ROUNDS > 0 alternates the loop unprobed
//! and probed and prints the median ns added per call (thread CPU time).

use std::hint::black_box;

use benches::clock::thread_cpu_ns;
use benches::uprobe::{TARGET, uprobe_bench_target};
use dataplane::uprobe::{self, Target, TraceProgram};
use xdp_vm::elf::Object;

#[inline(never)]
fn call_loop(n: u64) {
    let f: extern "C" fn(u64, u64, u64) -> u64 = black_box(uprobe_bench_target);
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
        "none" => (Target::Function(TARGET.into()), vec![]),
        "uprobe" => (Target::Function(TARGET.into()), vec![&entry]),
        "uretprobe" => (Target::Function(TARGET.into()), vec![&exit]),
        "both" => (Target::Function(TARGET.into()), vec![&entry, &exit]),
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
        let t = thread_cpu_ns();
        run(calls);
        let base = thread_cpu_ns() - t;
        let att = uprobe::attach(&target, &progs)?;
        let t = thread_cpu_ns();
        run(calls);
        let probed = thread_cpu_ns() - t;
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
