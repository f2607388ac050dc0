//! `dataplane prog run`: one XDP program over one packet, with the semantics of the kernel's
//! `BPF_PROG_TEST_RUN` (what `bpftool prog run` calls).
//!
//! Like the kernel, the program runs `repeat` times on the *same* frame — a program that swaps
//! MACs returns the original frame after an even number of runs, one that moves `data` keeps
//! moving it — on the CPU the command started on, with the per-CPU slot of that CPU.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
use xdp_vm::elf::{Object, ProgramKind, ProgramSpec};
use xdp_vm::jit::JitProgram;
use xdp_vm::{Interpreter, Program, Xdp, create_maps};

/// The engine that runs the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The interpreter, every memory access checked.
    Interp,
    /// The Cranelift JIT (the default).
    Jit,
}

/// What went wrong, in words a user acts on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Object {
        path: String,
        #[source]
        source: xdp_vm::elf::ElfError,
    },
    #[error("program {name} is not an XDP program (section {section}); only XDP programs run on packets")]
    NotXdp { name: String, section: String },
    #[error("cannot load program {name}")]
    Load {
        name: String,
        #[source]
        source: xdp_vm::LoadError,
    },
    #[error("data-in {path}")]
    Frame {
        path: String,
        #[source]
        source: xdp_vm::context::ContextError,
    },
    #[error("cannot compile program {name}")]
    Compile {
        name: String,
        #[source]
        source: xdp_vm::jit::CompileError,
    },
    #[error("cannot initialise prog array {map} of {path}: {reason}")]
    ProgArray { path: String, map: String, reason: String },
    #[error("program {name} faulted")]
    Fault {
        name: String,
        #[source]
        source: xdp_vm::Fault,
    },
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunRequest<'a> {
    pub object: &'a Path,
    pub data_in: &'a Path,
    pub program: Option<&'a str>,
    pub repeat: u32,
    pub engine: Engine,
    /// Run the verifier before the program (false: `--no-verify`, run-time checks only).
    pub verify: bool,
}

/// The result, shaped as DESIGN.md's `--json` contract.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub retval: u32,
    pub duration_ns: f64,
    pub repeat: u32,
    pub engine: Engine,
    #[serde(serialize_with = "hex_bytes")]
    pub data_out: Vec<u8>,
    pub maps: serde_json::Map<String, serde_json::Value>,
}

fn hex_bytes<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

/// Lowercase hex of raw bytes in memory order.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Renders map entries as DESIGN.md's JSON: `{"key", "value"}` or, for per-CPU maps, `{"key",
/// "values": [...]}`.
#[must_use]
pub fn entries_json(entries: &[maps::Entry], per_cpu: bool) -> serde_json::Value {
    let rows = entries
        .iter()
        .map(|e| {
            let mut row = serde_json::Map::new();
            row.insert("key".into(), hex(&e.key).into());
            if per_cpu {
                row.insert(
                    "values".into(),
                    e.values.iter().map(|v| serde_json::Value::from(hex(v))).collect(),
                );
            } else {
                row.insert("value".into(), e.values.first().map(|v| hex(v)).unwrap_or_default().into());
            }
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// Per-CPU slots for `prog run`: the kernel's possible CPUs, so dumps line up with its own.
#[must_use]
pub fn cpu_slots() -> usize {
    crate::kernel::possible_cpus()
        .unwrap_or_else(|_| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Reads and parses an eBPF object file.
///
/// # Errors
/// [`RunError::Read`] when the file cannot be read, [`RunError::Object`] when it is not a
/// loadable eBPF object.
pub fn read_object(path: &Path) -> Result<Object, RunError> {
    let bytes =
        std::fs::read(path).map_err(|source| RunError::Read { path: path.display().to_string(), source })?;
    Object::parse(&bytes).map_err(|source| RunError::Object { path: path.display().to_string(), source })
}

/// The XDP program called `name` in `obj` (the first program when `None`).
///
/// # Errors
/// [`RunError::Object`] when there is no such program, [`RunError::NotXdp`] when it is not XDP.
pub fn xdp_program<'o>(
    obj: &'o Object,
    path: &Path,
    name: Option<&str>,
) -> Result<&'o ProgramSpec, RunError> {
    let spec =
        obj.program(name).map_err(|source| RunError::Object { path: path.display().to_string(), source })?;
    if spec.kind != ProgramKind::Xdp {
        return Err(RunError::NotXdp { name: spec.name.clone(), section: spec.section.clone() });
    }
    Ok(spec)
}

/// The programs `bpf_tail_call` can reach from `spec`, as libbpf loads an object: when `obj` has
/// a prog array, every XDP program of it is loaded against `maps` and linked
/// ([`xdp_vm::link_tail_calls`]; a program's id is its index among the object's XDP programs),
/// and each prog array gets the programs its `.values = { [i] = &prog }` initialiser names.
/// Without a prog array, just `spec`. Returns the programs and `spec`'s index among them.
///
/// # Errors
/// [`RunError::Load`] when a program fails to load (or to verify, with `verify`);
/// [`RunError::ProgArray`] when a slot names a program that is not an XDP program of `obj`.
pub fn load_linked(
    path: &Path,
    obj: &Object,
    extras: &xdp_vm::elf::Extras,
    maps: &[std::sync::Arc<maps::Map>],
    spec: &ProgramSpec,
    verify: bool,
) -> Result<(Vec<Program<Xdp>>, usize), RunError> {
    let load = |s: &ProgramSpec| {
        let r = if verify { Program::<Xdp>::new(s, maps) } else { Program::<Xdp>::new_unverified(s, maps) };
        r.map_err(|source| RunError::Load { name: s.name.clone(), source })
    };
    let has_prog_array = obj.maps.iter().any(|m| m.def.map_type == maps::map_type::PROG_ARRAY);
    if !has_prog_array {
        return Ok((vec![load(spec)?], 0));
    }
    let specs: Vec<&ProgramSpec> = obj.programs.iter().filter(|p| p.kind == ProgramKind::Xdp).collect();
    let mut progs = specs.iter().map(|s| load(s)).collect::<Result<Vec<_>, _>>()?;
    let index = specs.iter().position(|s| std::ptr::eq(*s, spec)).unwrap_or(0);
    xdp_vm::link_tail_calls(&mut progs).map_err(|e| RunError::ProgArray {
        path: path.display().to_string(),
        map: "(linking)".into(),
        reason: e.to_string(),
    })?;
    for (m, slots) in obj.maps.iter().zip(&extras.slots) {
        if m.def.map_type != maps::map_type::PROG_ARRAY {
            continue;
        }
        let bad = |reason: String| RunError::ProgArray {
            path: path.display().to_string(),
            map: m.name.clone(),
            reason,
        };
        let live = maps.iter().find(|l| l.name() == m.name).ok_or_else(|| bad("map not created".into()))?;
        for slot in slots {
            let xdp_vm::elf::SlotTarget::Program(name) = &slot.target else {
                return Err(bad(format!("slot {} holds a map", slot.index)));
            };
            let id = specs.iter().position(|s| &s.name == name).ok_or_else(|| {
                bad(format!("slot {} names {name}, which is not an XDP program", slot.index))
            })?;
            live.update_user(&slot.index.to_ne_bytes(), &(id as u32).to_ne_bytes(), maps::BPF_ANY)
                .map_err(|e| bad(format!("slot {}: {e}", slot.index)))?;
        }
    }
    Ok((progs, index))
}

/// Runs the request.
///
/// # Errors
/// [`RunError`] for unreadable files, objects the loader or program check refuses, frames the
/// kernel would refuse, and programs that fault.
pub fn run(req: &RunRequest<'_>) -> Result<RunReport, RunError> {
    let bytes = std::fs::read(req.object)
        .map_err(|source| RunError::Read { path: req.object.display().to_string(), source })?;
    let (obj, extras) = Object::parse_with_extras(&bytes)
        .map_err(|source| RunError::Object { path: req.object.display().to_string(), source })?;
    let spec = xdp_program(&obj, req.object, req.program)?;
    let packet = std::fs::read(req.data_in)
        .map_err(|source| RunError::Read { path: req.data_in.display().to_string(), source })?;

    let slots = cpu_slots();
    let cpu = xdp_vm::sys::current_cpu();
    // Stay on this CPU, as the kernel's test run does (migrate_disable), so the per-CPU slot and
    // bpf_get_smp_processor_id() mean the same thing throughout. Pinning can fail in a
    // restricted cpuset; the slot is still consistent for the run, so that is not an error.
    let _ = crate::kernel::pin_current_thread(cpu);
    let slot = cpu.min(slots - 1);

    let load_err = |source| RunError::Load { name: spec.name.clone(), source };
    let maps = create_maps(&obj, slots).map_err(load_err)?;
    let (progs, index) = load_linked(req.object, &obj, &extras, &maps, spec, req.verify)?;
    let prog = &progs[index];

    let mut frame = vec![0u8; XDP_FRAME_SIZE];
    let mut buff = XdpBuff::load(&mut frame, &packet)
        .map_err(|source| RunError::Frame { path: req.data_in.display().to_string(), source })?;
    // What BPF_PROG_TEST_RUN reports without a ctx_in: the loopback device, queue 0.
    buff.ingress_ifindex = 1;
    let repeat = req.repeat.max(1);
    let fault = |source| RunError::Fault { name: spec.name.clone(), source };
    let mut retval = 0u64;
    let elapsed = match req.engine {
        Engine::Interp => {
            let mut vm = Interpreter::new();
            let start = Instant::now();
            for _ in 0..repeat {
                retval = vm.run(prog, &mut buff, slot).map_err(fault)?;
            }
            start.elapsed()
        }
        Engine::Jit => {
            let jits = progs
                .iter()
                .map(|p| {
                    JitProgram::compile(p)
                        .map(std::sync::Arc::new)
                        .map_err(|source| RunError::Compile { name: p.name().to_string(), source })
                })
                .collect::<Result<Vec<_>, _>>()?;
            // Linking only fails for programs with different maps; these share one set.
            let _ = xdp_vm::jit::link_tail_calls(&jits);
            let mut jit = xdp_vm::jit::JitWorker::new(jits[index].clone(), slot);
            let start = Instant::now();
            for _ in 0..repeat {
                retval = jit.run(&mut buff).map_err(fault)?;
            }
            start.elapsed()
        }
    };
    let data_out = buff.meta_and_packet().to_vec();

    let mut map_json = serde_json::Map::new();
    for m in &maps {
        map_json.insert(m.name().to_string(), entries_json(&m.entries(), m.is_per_cpu()));
    }
    Ok(RunReport {
        retval: retval as u32,
        duration_ns: elapsed.as_nanos() as f64 / f64::from(repeat),
        repeat,
        engine: req.engine,
        data_out,
        maps: map_json,
    })
}

/// `prog dump`: the program's linked instructions as `bpftool prog dump xlated` prints them.
///
/// # Errors
/// When the object cannot be read or parsed, or has no such program.
pub fn dump(object: &Path, program: Option<&str>) -> Result<String, RunError> {
    let obj = read_object(object)?;
    let spec = obj
        .program(program)
        .map_err(|source| RunError::Object { path: object.display().to_string(), source })?;
    let names: Vec<String> = obj.maps.iter().map(|m| m.name.clone()).collect();
    Ok(xdp_vm::disasm::format_program(&spec.insns, &names))
}

/// bpftool's line: `Return value: 3, duration (average): 5ns`.
#[must_use]
pub fn bpftool_line(report: &RunReport) -> String {
    let avg = if report.repeat > 1 { " (average)" } else { "" };
    format!("Return value: {}, duration{avg}: {}ns", report.retval, report.duration_ns.round() as u64)
}

/// What `prog verify` found.
#[derive(Debug)]
pub enum Verdict {
    /// Proven safe; the instructions processed.
    Accepted { processed_insns: usize },
    /// Refused: the verifier log (instruction, source line, reason).
    Rejected { log: String },
}

/// `dataplane prog verify`: loads the program (bad input is an error) and runs the verifier.
///
/// # Errors
/// [`RunError`] for unreadable or malformed objects, no such program, or a program the
/// structural checks refuse (unknown helper, bad instruction): bad input, not a verdict.
pub fn verify(object: &Path, program: Option<&str>) -> Result<Verdict, RunError> {
    let bytes = std::fs::read(object)
        .map_err(|source| RunError::Read { path: object.display().to_string(), source })?;
    let obj_err = |source| RunError::Object { path: object.display().to_string(), source };
    let (obj, extras) = Object::parse_with_extras(&bytes).map_err(obj_err)?;
    let spec = obj.program(program).map_err(obj_err)?;
    if spec.kind != ProgramKind::Xdp {
        return Err(RunError::NotXdp { name: spec.name.clone(), section: spec.section.clone() });
    }
    let index = obj.programs.iter().position(|p| std::ptr::eq(p, spec)).unwrap_or(0);
    let load_err = |source| RunError::Load { name: spec.name.clone(), source };
    let maps = create_maps(&obj, 1).map_err(load_err)?;
    match Program::<Xdp>::new(spec, &maps) {
        Ok(prog) => {
            Ok(Verdict::Accepted { processed_insns: prog.verified().map_or(0, |v| v.processed_insns) })
        }
        Err(xdp_vm::LoadError::Verifier { source }) => {
            let lines = extras.lines.get(index).map_or(&[][..], Vec::as_slice);
            Ok(Verdict::Rejected { log: source.with_lines(lines).log() })
        }
        Err(e) => Err(load_err(e)),
    }
}
