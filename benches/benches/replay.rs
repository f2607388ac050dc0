//! Replay of one frame through each program of `configs/bpf/`: our interpreter and our JIT
//! beside the kernel's `BPF_PROG_TEST_RUN` (what `bpftool prog run ... repeat N` calls), in the
//! same run; then the JIT's compile time for each program.
//!
//! The contestants alternate round by round so machine noise hits all alike; each round is one
//! `repeat N` batch, and the tables show the median and the spread (min..max) of the rounds,
//! and the ratios of the medians.
//!
//! Two clocks: the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) over the batch, which leaves
//! out the time other processes take the CPU — the kernel's test-run timer leaves that out too
//! (it stops while the loop yields), so this is the fair column to compare with the kernel's
//! own figure — and wall time, which includes it. For the kernel the CPU column is the thread
//! CPU time around the `BPF_PROG_TEST_RUN` syscall (one syscall per batch, so its entry cost is
//! spread over N runs) and the "reported" column is the kernel's own average.
//!
//! `cargo bench -p benches --bench replay` runs the full mode (10,000,000 runs per batch, 5
//! rounds); `-- --quick` a few-second mode that proves the suite runs and asserts no timing.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run;
use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::{Object, ProgramKind};
use xdp_vm::jit::{JitProgram, JitRunner};
use xdp_vm::{Interpreter, Program, Xdp, create_maps};

struct Mode {
    repeat: u32,
    rounds: usize,
    compiles: usize,
}

/// One batch: CPU and wall nanoseconds per run.
#[derive(Clone, Copy)]
struct Sample {
    cpu: f64,
    wall: f64,
}

/// Times `repeat` calls of `f` (one batch).
fn batch(repeat: u32, mut f: impl FnMut()) -> Sample {
    let (c0, w0) = (clock::thread_cpu_ns(), Instant::now());
    for _ in 0..repeat {
        f();
    }
    let (wall, cpu) = (w0.elapsed().as_nanos() as f64, (clock::thread_cpu_ns() - c0) as f64);
    let n = f64::from(repeat);
    Sample { cpu: cpu / n, wall: wall / n }
}

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mode = if quick {
        Mode { repeat: 100_000, rounds: 3, compiles: 3 }
    } else {
        Mode { repeat: 10_000_000, rounds: 5, compiles: 21 }
    };
    kernel::pin_current_thread(0)?;
    let slot = 0;
    let frame = pktgen::craft::icmp_echo();

    println!(
        "icmp.bin ({} bytes) replay, {} runs per batch, {} rounds, pinned to CPU 0; ns per run, median (min..max) of the rounds",
        frame.len(),
        mode.repeat,
        mode.rounds
    );
    println!();
    println!(
        "| program | engine | CPU ns/run | wall ns/run | kernel CPU / this | kernel reported / this (CPU) |"
    );
    println!("|---|---|---|---|---|---|");
    let programs = programs()?;
    for (path, name) in &programs {
        let bytes = std::fs::read(path)?;
        let obj = Object::parse(&bytes)?;
        let spec = obj.program(Some(name))?;
        let kern = KernelProgram::load(&obj, spec)?;

        // Each engine gets its own maps and frame, set up once; the rounds reuse them, as the
        // kernel's test run reuses its program's maps.
        let slots = prog_run::cpu_slots();
        let setup = || -> anyhow::Result<(Program<Xdp>, Vec<u8>)> {
            let maps = create_maps(&obj, slots)?;
            Ok((Program::<Xdp>::new(spec, &maps)?, vec![0u8; XDP_FRAME_SIZE]))
        };
        let (interp_prog, mut interp_frame) = setup()?;
        let mut interp_buff = XdpBuff::load(&mut interp_frame, &frame)?;
        interp_buff.ingress_ifindex = 1;
        let mut vm = Interpreter::new();
        let (jit_prog, mut jit_frame) = setup()?;
        let jit = JitProgram::compile(&jit_prog)?;
        let mut jit_buff = XdpBuff::load(&mut jit_frame, &frame)?;
        jit_buff.ingress_ifindex = 1;
        let mut runner = JitRunner::new();
        // The seed's logic in plain Rust on the same map store, for the seed program.
        let native_maps = create_maps(&obj, slots)?;
        let mut native_frame = frame.clone();
        let native = (name == "xdp_counter").then(|| native_maps[0].clone());

        let mut rows: Vec<(&str, Vec<Sample>)> = vec![
            ("ours, interpreter", Vec::new()),
            ("ours, JIT", Vec::new()),
            ("kernel", Vec::new()),
            ("plain Rust, same map store", Vec::new()),
        ];
        let mut reported = Vec::new();
        for _ in 0..mode.rounds {
            let mut fault = None;
            rows[0].1.push(batch(mode.repeat, || {
                if let Err(e) = vm.run(&interp_prog, &mut interp_buff, slot) {
                    fault = Some(e);
                }
            }));
            rows[1].1.push(batch(mode.repeat, || {
                if let Err(e) = jit.run_on(&mut runner, &mut jit_buff, slot) {
                    fault = Some(e);
                }
            }));
            if let Some(f) = fault {
                anyhow::bail!("{name} faulted: {f}");
            }
            let (c0, w0) = (clock::thread_cpu_ns(), Instant::now());
            let run = kern.test_run(&frame, mode.repeat)?;
            let (wall, cpu) = (w0.elapsed().as_nanos() as f64, (clock::thread_cpu_ns() - c0) as f64);
            let n = f64::from(mode.repeat);
            rows[2].1.push(Sample { cpu: cpu / n, wall: wall / n });
            reported.push(f64::from(run.duration_ns));
            if let Some(map) = &native {
                rows[3].1.push(batch(mode.repeat, || {
                    std::hint::black_box(peers::xdp_counter(map, &mut native_frame, slot));
                }));
            }
        }
        if native.is_none() {
            rows.pop();
        }
        let kern_cpu = Stats::of(&mut rows[2].1.iter().map(|s| s.cpu).collect::<Vec<_>>()).median;
        let kern_reported = Stats::of(&mut reported).median;
        for (engine, samples) in &rows {
            let cpu = Stats::of(&mut samples.iter().map(|s| s.cpu).collect::<Vec<_>>());
            let wall = Stats::of(&mut samples.iter().map(|s| s.wall).collect::<Vec<_>>());
            println!(
                "| {name} | {engine} | {} | {} | {:.2}x | {:.2}x |",
                cpu.cell(),
                wall.cell(),
                kern_cpu / cpu.median,
                kern_reported / cpu.median
            );
        }
        println!("| {name} | kernel, its own timer | {} | | | |", Stats::of(&mut reported).cell());
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

/// The same logic as a peer engine would run it.
mod peers {
    #![expect(unsafe_code, reason = "the value pointer Map::lookup hands out, as a program uses it")]

    use std::sync::atomic::{AtomicU32, Ordering};

    use maps::{BPF_NOEXIST, Map};

    /// `configs/bpf/xdp_counter.c` in Rust: count the frame's length in `map`, swap the MACs,
    /// `XDP_TX` (3); `XDP_DROP` (1) for a frame shorter than an Ethernet header.
    #[inline(never)]
    pub fn xdp_counter(map: &Map, frame: &mut [u8], slot: usize) -> u32 {
        let len = frame.len() as u32;
        match map.lookup(&len.to_ne_bytes(), slot) {
            Some(p) => {
                // SAFETY: `Map::lookup` returns a pointer to `value_size` (here 4) bytes, 8-byte
                // aligned, valid for the map's lifetime (`map` is borrowed); values are only
                // accessed atomically or as plain bytes by programs, as in the kernel.
                let count = unsafe { AtomicU32::from_ptr(p.as_ptr().cast()) };
                count.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                let _ = map.update(&len.to_ne_bytes(), &1u32.to_ne_bytes(), BPF_NOEXIST, slot);
            }
        }
        if frame.len() < 14 {
            return 1;
        }
        let (dst, src) = frame.split_at_mut(6);
        dst.swap_with_slice(&mut src[..6]);
        3
    }
}

/// The thread's CPU clock.
mod clock {
    #![expect(unsafe_code, reason = "clock_gettime through libc")]

    /// `CLOCK_THREAD_CPUTIME_ID` in nanoseconds: CPU time this thread has used (user and
    /// system), excluding time other tasks ran.
    pub fn thread_cpu_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID exists on Linux");
        (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
    }
}
