//! icmp.bin replay (the seed's `xdp-bpftime-runner ... icmp.bin N` against `bpftool prog run
//! ... repeat N`): every XDP program of `configs/bpf/` run on the seed's 98-byte ICMP frame by
//! our interpreter, our JIT (a worker's `JitWorker`, the dataplane worker's entry), the kernel (`BPF_PROG_TEST_RUN`), rbpf
//! 0.4.1's interpreter and JIT where they can run the program, and, for `xdp_counter`, the same
//! logic in plain Rust on the same map store and two floors: what no engine can remove from a
//! run of it on this machine — the `lock xadd` the program asks for, alone in a Rust loop — and
//! what our engine adds to any run — the JIT running an empty program (`r0 = XDP_PASS; exit`)
//! through the same entry (`JitWorker::run`). Dropping a `.c` into `configs/bpf/` adds its XDP
//! programs as rows. Then the JIT's compile time beside the kernel's load.
//!
//! Each round runs each contestant for one batch of `repeat` runs on the same frame (as the
//! kernel's test run does), pinned to CPU 0; figures are thread CPU time per run
//! ([`crate::clock`]); for the kernel, the thread CPU time around its syscall, with the kernel's
//! own average as a note.

use std::path::PathBuf;
use std::time::Instant;

use dataplane::kernel::{self, KernelProgram};
use dataplane::prog_run;
use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::{Object, ProgramKind};
use xdp_vm::jit::{JitProgram, JitWorker};
use xdp_vm::{Interpreter, Program, Xdp, create_maps};

use crate::{Better, Cell, Comparison, Mode, Row, Stats, Table, alternate, clock, cpu_ns_per};

/// The replay comparison.
#[derive(Debug)]
pub struct Replay;

impl Comparison for Replay {
    fn name(&self) -> &'static str {
        "replay"
    }

    fn run(&self, mode: Mode) -> anyhow::Result<Vec<Table>> {
        let repeat: u32 = mode.pick(20_000, 5_000_000);
        let rounds = mode.pick(3, 7);
        kernel::pin_current_thread(0)?;
        let frame = pktgen::craft::icmp_echo();
        let mut rows = Vec::new();
        let mut compile_rows = Vec::new();
        for (path, name) in programs()? {
            rows.push(replay_row(&path, &name, &frame, repeat, rounds)?);
            compile_rows.push(compile_row(&path, &name, mode.pick(3, 21))?);
        }
        // The seed program without its atomic add, for rbpf (which has no atomics).
        rows.push(replay_row(
            &crate::object("bench/xdp_counter_plain"),
            "xdp_counter_plain",
            &frame,
            repeat,
            rounds,
        )?);
        Ok(vec![
            Table {
                id: "replay".into(),
                title: "icmp.bin replay: ns per program run".into(),
                method: format!(
                    "The seed's 98-byte ICMP echo frame, {repeat} runs per batch on the same frame, {rounds} rounds \
                     alternating the contestants, pinned to CPU 0; thread CPU time per run (the kernel: around its \
                     `BPF_PROG_TEST_RUN` syscall; its own timer in parentheses). Reference: the kernel."
                ),
                row_header: "program".into(),
                unit: "ns/run".into(),
                better: Better::Lower,
                rows,
            },
            Table {
                id: "load".into(),
                title: "Load time: maps, verifier and JIT".into(),
                method: "Per program: create its maps, verify and compile (ours: Cranelift, opt_level=speed) against \
                         the kernel's `BPF_MAP_CREATE`s and `BPF_PROG_LOAD` (verifier and JIT), alternating; \
                         milliseconds of wall time. The compile-only figure is in the note."
                    .into(),
                row_header: "program".into(),
                unit: "ms".into(),
                better: Better::Lower,
                rows: compile_rows,
            },
        ])
    }
}

/// Every XDP program in `configs/bpf/`, as (object, program name).
///
/// # Errors
/// An unreadable directory or object.
pub fn programs() -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut sources: Vec<PathBuf> = std::fs::read_dir(crate::configs_bpf())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    let mut out = Vec::new();
    for src in sources {
        let stem = src.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let obj = crate::object(&stem);
        let parsed = Object::parse(&std::fs::read(&obj)?)?;
        for p in parsed.programs.iter().filter(|p| p.kind == ProgramKind::Xdp) {
            out.push((obj.clone(), p.name.clone()));
        }
    }
    Ok(out)
}

const INTERP: &str = "ours, interpreter";
const JIT: &str = "ours, JIT";
const KERNEL: &str = "kernel";
const NATIVE: &str = "plain Rust, same map store";
const RBPF_INTERP: &str = "rbpf 0.4.1 interpreter";
const RBPF_JIT: &str = "rbpf 0.4.1 JIT";
const FLOOR_XADD: &str = "floor: its one `lock xadd` (u32), alone in a Rust loop";
const FLOOR_CALL: &str = "floor: our JIT running an empty program (the call alone)";

/// rbpf for `prog`, checked to compute what our JIT computes on `frame` (return value and output
/// packet) in its interpreter and then its JIT; otherwise why not.
fn rbpf_for(prog: &Program<Xdp>, frame: &[u8]) -> Result<crate::rbpf_peer::Rbpf, String> {
    let helpers: std::collections::BTreeSet<i32> =
        prog.insns().iter().filter(|i| i.code == 0x85 && i.src == 0).map(|i| i.imm).collect();
    if let Some(h) = helpers.iter().find(|&&h| h != 1 && h != 2) {
        return Err(format!("(not run: calls helper {h}; rbpf gets map lookup and update only)"));
    }
    if prog.insns().iter().any(|i| i.code == 0xdb || i.code == 0xc3) {
        return Err(
            "(cannot run: atomic add — rbpf's verifier refuses XADD, its JIT has it unimplemented!())".into(),
        );
    }
    // Our JIT's answer on a fresh copy, to check rbpf's against.
    let ours = {
        let jit = JitProgram::compile(prog).map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut buf, frame).map_err(|e| e.to_string())?;
        buff.ingress_ifindex = 1;
        let r = jit.run(&mut buff, 0).map_err(|e| e.to_string())?;
        (r, buff.packet().to_vec())
    };
    for jit in [false, true] {
        let mut rb = crate::rbpf_peer::Rbpf::new(prog, frame).map_err(|e| format!("(refused: {e})"))?;
        let r = if jit { rb.jit() } else { rb.interpret() }.map_err(|e| format!("(failed: {e})"))?;
        let got = (r, rb.packet(frame.len()).to_vec());
        if got != ours {
            return Err(format!(
                "(wrong result from rbpf's {}: returned {})",
                if jit { "JIT" } else { "interpreter" },
                got.0
            ));
        }
    }
    crate::rbpf_peer::Rbpf::new(prog, frame).map_err(|e| format!("(refused: {e})"))
}

fn replay_row(
    path: &std::path::Path,
    name: &str,
    frame: &[u8],
    repeat: u32,
    rounds: usize,
) -> anyhow::Result<Row> {
    let bytes = std::fs::read(path)?;
    let obj = Object::parse(&bytes)?;
    let spec = obj.program(Some(name))?;
    let kern = KernelProgram::load(&obj, spec)?;
    let slot = 0;
    let slots = prog_run::cpu_slots();
    // Each contestant gets its own maps and frame, set up once; the rounds reuse them, as the
    // kernel's test run reuses its program's maps.
    let setup = || -> anyhow::Result<(Program<Xdp>, Vec<u8>)> {
        let maps = create_maps(&obj, slots)?;
        Ok((Program::<Xdp>::new(spec, &maps)?, vec![0u8; XDP_FRAME_SIZE]))
    };
    let (interp_prog, mut interp_frame) = setup()?;
    let mut interp_buff = XdpBuff::load(&mut interp_frame, frame)?;
    interp_buff.ingress_ifindex = 1;
    let mut vm = Interpreter::new();
    let (jit_prog, mut jit_frame) = setup()?;
    let mut jit = JitWorker::new(std::sync::Arc::new(JitProgram::compile(&jit_prog)?), slot);
    let mut jit_buff = XdpBuff::load(&mut jit_frame, frame)?;
    jit_buff.ingress_ifindex = 1;
    let native_maps = create_maps(&obj, slots)?;
    let mut native_frame = frame.to_vec();
    let native = (name == "xdp_counter").then(|| native_maps[0].clone());

    let mut names = vec![INTERP, JIT, KERNEL];
    if native.is_some() {
        names.extend([NATIVE, FLOOR_XADD, FLOOR_CALL]);
    }
    // The floors: a counter like the one the program adds to (a u32 map value), and an empty
    // program, run like the JIT contestant.
    let counter = std::sync::atomic::AtomicU32::new(0);
    let empty = {
        let insns = [xdp_vm::insn::Insn::new(0xb7, 0, 0, 0, 2), xdp_vm::insn::Insn::new(0x95, 0, 0, 0, 0)];
        let prog = JitProgram::compile(&Program::<Xdp>::from_insns_verified("empty", &insns, &[])?)?;
        JitWorker::new(std::sync::Arc::new(prog), slot)
    };
    let (mut empty, mut empty_frame) = (empty, vec![0u8; XDP_FRAME_SIZE]);
    let mut empty_buff = XdpBuff::load(&mut empty_frame, frame)?;
    let (rbpf_prog, _) = setup()?;
    let mut rbpf = rbpf_for(&rbpf_prog, frame);
    if rbpf.is_ok() {
        names.extend([RBPF_INTERP, RBPF_JIT]);
    }
    let mut reported = Vec::new();
    let samples = alternate(rounds, names.len(), |_, c| {
        let mut fault = None;
        let ns = match names[c] {
            INTERP => cpu_ns_per(u64::from(repeat), || {
                if let Err(e) = vm.run(&interp_prog, &mut interp_buff, slot) {
                    fault = Some(e);
                }
            }),
            JIT => cpu_ns_per(u64::from(repeat), || {
                if let Err(e) = jit.run(&mut jit_buff) {
                    fault = Some(e);
                }
            }),
            KERNEL => {
                let c0 = clock::thread_cpu_ns();
                let run = kern.test_run(frame, repeat)?;
                reported.push(f64::from(run.duration_ns));
                (clock::thread_cpu_ns() - c0) as f64 / f64::from(repeat)
            }
            RBPF_INTERP | RBPF_JIT => {
                let rb = rbpf.as_mut().expect("rbpf contestants only when it runs");
                let jit = names[c] == RBPF_JIT;
                // The interpreter is slow: a tenth of the runs.
                let n = if jit { u64::from(repeat) } else { u64::from(repeat / 10).max(1) };
                let mut err = None;
                let ns = cpu_ns_per(n, || {
                    if let Err(e) = if jit { rb.jit() } else { rb.interpret() } {
                        err = Some(e);
                    }
                });
                if let Some(e) = err {
                    return Err(e);
                }
                ns
            }
            FLOOR_XADD => cpu_ns_per(u64::from(repeat), || {
                std::hint::black_box(&counter).fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
            FLOOR_CALL => cpu_ns_per(u64::from(repeat), || {
                if let Err(e) = empty.run(&mut empty_buff) {
                    fault = Some(e);
                }
            }),
            _ => {
                let map = native.as_ref().expect("native row only for xdp_counter");
                cpu_ns_per(u64::from(repeat), || {
                    std::hint::black_box(peers::xdp_counter(map, &mut native_frame, slot));
                })
            }
        };
        if let Some(f) = fault {
            anyhow::bail!("{name} faulted: {f}");
        }
        Ok(ns)
    })?;
    let mut cells: Vec<Cell> = names.iter().zip(samples).map(|(n, s)| Cell::new(n, s)).collect();
    if let Err(why) = &rbpf {
        cells.push(Cell::missing(RBPF_INTERP, why));
        cells.push(Cell::missing(RBPF_JIT, why));
    }
    let median = |n: &str| cells.iter().find(|c| c.contestant == n).and_then(|c| c.stats).map(|s| s.median);
    if let (Some(ours), Some(theirs)) = (median(JIT), median(RBPF_JIT))
        && let Some(cell) = cells.iter_mut().find(|c| c.contestant == JIT)
    {
        cell.note = format!("({:.2}x rbpf's JIT)", theirs / ours);
    }
    if let Some(k) = cells.iter_mut().find(|c| c.contestant == KERNEL)
        && let Some(r) = Stats::of(&reported)
    {
        k.note = format!("(own timer: {:.1})", r.median);
    }
    Ok(Row { label: name.to_string(), reference: KERNEL.into(), cells })
}

fn compile_row(path: &std::path::Path, name: &str, rounds: usize) -> anyhow::Result<Row> {
    let obj = Object::parse(&std::fs::read(path)?)?;
    let spec = obj.program(Some(name))?;
    let mut compile_only = Vec::new();
    let samples = alternate(rounds, 2, |_, c| {
        let t = Instant::now();
        if c == 0 {
            let maps = create_maps(&obj, prog_run::cpu_slots())?;
            let prog = Program::<Xdp>::new(spec, &maps)?;
            let jit = JitProgram::compile(&prog)?;
            compile_only.push(jit.compile_time().as_secs_f64() * 1e3);
        } else {
            drop(KernelProgram::load(&obj, spec)?);
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    })?;
    let mut cells: Vec<Cell> = ["ours: maps, verify, compile", "kernel: maps, BPF_PROG_LOAD"]
        .iter()
        .zip(samples)
        .map(|(n, s)| Cell::new(n, s))
        .collect();
    if let Some(s) = Stats::of(&compile_only) {
        cells[0].note = format!("(compile alone: {:.2})", s.median);
    }
    Ok(Row { label: name.to_string(), reference: "kernel: maps, BPF_PROG_LOAD".into(), cells })
}

/// The same logic as a peer engine would run it.
pub mod peers {
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
