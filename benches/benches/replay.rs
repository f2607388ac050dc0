//! Replay of one frame through each program of `configs/bpf/`, our interpreter and our JIT
//! beside the kernel's `BPF_PROG_TEST_RUN` (what `bpftool prog run ... repeat N` calls), in the
//! same run; then the JIT's compile time for each program.
//!
//! The contestants alternate round by round so machine noise hits all alike; each round is one
//! `repeat N` batch reporting its average ns per run, and the table shows the median and the
//! spread (min..max) of the rounds, and the ratios of the medians.
//!
//! `cargo bench -p benches --bench replay` runs the full mode (10,000,000 runs per batch, 5
//! rounds); `-- --quick` a few-second mode that proves the suite runs and asserts no timing.

use std::path::{Path, PathBuf};

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run::{self, Engine, RunRequest};
use xdp_vm::elf::{Object, ProgramKind};
use xdp_vm::jit::JitProgram;
use xdp_vm::{Program, Xdp, create_maps};

struct Mode {
    repeat: u32,
    rounds: usize,
    compiles: usize,
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mode = if quick {
        Mode { repeat: 100_000, rounds: 3, compiles: 3 }
    } else {
        Mode { repeat: 10_000_000, rounds: 5, compiles: 21 }
    };
    kernel::pin_current_thread(0)?;
    let frame = pktgen::craft::icmp_echo();
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let data_in = dir.join("icmp.bin");
    pktgen::write::write_bin(&data_in, &frame)?;

    println!(
        "icmp.bin ({} bytes) replay, {} runs per batch, {} rounds, pinned to CPU 0",
        frame.len(),
        mode.repeat,
        mode.rounds
    );
    println!();
    println!(
        "| program | ours interp ns/run (median, min..max) | ours JIT ns/run (median, min..max) | kernel ns/run (median, min..max) | kernel / interp | kernel / JIT |"
    );
    println!("|---|---|---|---|---|---|");
    let programs = programs()?;
    for (path, name) in &programs {
        let bytes = std::fs::read(path)?;
        let obj = Object::parse(&bytes)?;
        let spec = obj.program(Some(name))?;
        let kern = KernelProgram::load(&obj, spec)?;
        let (mut interp, mut jit, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..mode.rounds {
            for (engine, out) in [(Engine::Interp, &mut interp), (Engine::Jit, &mut jit)] {
                let req = RunRequest {
                    object: path,
                    data_in: &data_in,
                    program: Some(name),
                    repeat: mode.repeat,
                    engine,
                };
                out.push(prog_run::run(&req)?.duration_ns);
            }
            theirs.push(f64::from(kern.test_run(&frame, mode.repeat)?.duration_ns));
        }
        let (i, j, k) = (Stats::of(&mut interp), Stats::of(&mut jit), Stats::of(&mut theirs));
        println!(
            "| {name} | {} | {} | {} | {:.2}x | {:.2}x |",
            i.cell(),
            j.cell(),
            k.cell(),
            k.median / i.median,
            k.median / j.median
        );
    }

    println!();
    println!(
        "JIT compile time per program (Cranelift, opt_level=speed; {} compilations each)",
        mode.compiles
    );
    println!();
    println!("| program | instructions | compile ms (median, min..max) | code bytes |");
    println!("|---|---|---|---|");
    for (path, name) in &programs {
        let obj = Object::parse(&std::fs::read(path)?)?;
        let spec = obj.program(Some(name))?;
        let maps = create_maps(&obj, prog_run::cpu_slots())?;
        let prog = Program::<Xdp>::new(spec, &maps)?;
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..mode.compiles {
            let jit = JitProgram::compile(&prog)?;
            times.push(jit.compile_time().as_secs_f64() * 1e3);
            size = jit.code_size();
        }
        let t = Stats::of(&mut times);
        println!(
            "| {name} | {} | {:.2} ({:.2}..{:.2}) | {size} |",
            prog.insns().len(),
            t.median,
            t.min,
            t.max
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Every XDP program in `configs/bpf/`: dropping a `.c` file there adds a row.
fn programs() -> anyhow::Result<Vec<(PathBuf, String)>> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bpf");
    let mut out = Vec::new();
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&configs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let obj = Path::new(dataplane::BPF_OBJ_DIR).join(format!("{stem}.o"));
        let parsed = Object::parse(&std::fs::read(&obj)?)?;
        for p in parsed.programs.iter().filter(|p| p.kind == ProgramKind::Xdp) {
            out.push((obj.clone(), p.name.clone()));
        }
    }
    Ok(out)
}

struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(v: &mut [f64]) -> Self {
        v.sort_by(f64::total_cmp);
        Self { median: v[v.len() / 2], min: v[0], max: v[v.len() - 1] }
    }

    fn cell(&self) -> String {
        format!("{:.1} ({:.1}..{:.1})", self.median, self.min, self.max)
    }
}
