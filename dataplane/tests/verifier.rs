//! The verifier against the kernel's: every safe program of the project is accepted by ours
//! (the kernel accepts them too: `differential.rs` loads each); every program of the unsafe
//! corpus (`tests/bpf/unsafe/*.c`) is refused by the kernel *and* by ours.

use std::path::{Path, PathBuf};

use dataplane::kernel::{KernelError, KernelProgram};
use xdp_vm::elf::{Object, ProgramKind};
use xdp_vm::verifier::{self, ProgramType};
use xdp_vm::{LoadError, Program, Xdp, create_maps};

fn objects(dir: &Path) -> Vec<PathBuf> {
    let mut objs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "o"))
        .collect();
    objs.sort();
    objs
}

fn name(p: &Path) -> String {
    p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Ours: `Ok` with the processed instruction count, or the verifier's (or loader's) refusal.
fn ours(
    obj: &Object,
    lines: &[xdp_vm::elf::LineInfo],
    spec: &xdp_vm::elf::ProgramSpec,
) -> Result<usize, String> {
    let maps = create_maps(obj, 1).map_err(|e| format!("maps: {e}"))?;
    match Program::<Xdp>::new(spec, &maps) {
        Ok(p) => Ok(p.verified().map_or(0, |v| v.processed_insns)),
        Err(LoadError::Verifier { source }) => Err(source.with_lines(lines).log()),
        Err(e) => Err(format!("load: {e}")),
    }
}

#[test]
fn every_safe_program_is_accepted() {
    let dir = Path::new(env!("BPF_OBJ_DIR"));
    let mut checked = 0;
    let mut failures = Vec::new();
    for path in objects(dir) {
        // loader_* are parser fixtures (map-in-map, callbacks, uprobes): not all loadable.
        if name(&path).starts_with("loader_") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("readable object");
        let (obj, extras) = Object::parse_with_extras(&bytes).expect("the loader parses project objects");
        for (i, spec) in obj.programs.iter().enumerate() {
            if spec.kind != ProgramKind::Xdp {
                continue;
            }
            match ours(&obj, extras.lines.get(i).map_or(&[][..], Vec::as_slice), spec) {
                Ok(n) => {
                    eprintln!("accepted {}:{} ({n} insns processed)", name(&path), spec.name);
                    checked += 1;
                }
                Err(log) => failures.push(format!("{}:{}: {log}", name(&path), spec.name)),
            }
        }
    }
    assert!(failures.is_empty(), "safe programs rejected:\n{}", failures.join("\n"));
    assert!(checked >= 15, "expected the project's programs, found {checked}");
}

#[test]
fn every_unsafe_program_is_rejected_by_the_kernel_and_by_ours() {
    let dir = Path::new(env!("BPF_OBJ_DIR")).join("unsafe");
    let objs = objects(&dir);
    assert!(objs.len() >= 40, "expected the unsafe corpus, found {} objects", objs.len());
    let mut problems = Vec::new();
    let mut same_text = 0;
    for path in &objs {
        let bytes = std::fs::read(path).expect("readable object");
        let (obj, extras) = match Object::parse_with_extras(&bytes) {
            Ok(o) => o,
            Err(e) => {
                problems.push(format!("{}: our loader refuses the object: {e}", name(path)));
                continue;
            }
        };
        let spec = obj.program(None).expect("one program");
        let mut kernel_log = String::new();
        let kernel = match KernelProgram::load(&obj, spec) {
            Err(KernelError::Rejected { log }) => {
                kernel_log.clone_from(&log);
                let last = log
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty() && !l.starts_with("processed"))
                    .unwrap_or("");
                format!("rejected ({})", last.trim())
            }
            Err(e) => format!("error {e}"),
            Ok(_) => {
                problems.push(format!("{}: the kernel ACCEPTS it", name(path)));
                "accepted".to_string()
            }
        };
        let lines = extras.lines.first().map_or(&[][..], Vec::as_slice);
        let verdict = match ours(&obj, lines, spec) {
            Ok(_) => {
                problems.push(format!("{}: ours ACCEPTS it", name(path)));
                "accepted".to_string()
            }
            Err(log) => {
                // Our log's second line is the instruction as the kernel's log prints it
                // (`  7: r1 = *(u64 *)(r0 +0)` against the kernel's `7: (79) r1 = ...`).
                let shown = log.lines().nth(1).and_then(|l| l.trim().split_once(": "));
                if let Some((n, text)) = shown
                    && kernel_log.lines().any(|k| k.starts_with(&format!("{n}: (")) && k.ends_with(text))
                {
                    same_text += 1;
                }
                format!("rejected: {}", log.lines().next().unwrap_or(""))
            }
        };
        eprintln!("{:28} kernel {kernel}\n{:28} ours   {verdict}", name(path), "");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    eprintln!(
        "{same_text} of {} rejections show the instruction exactly as the kernel's log does",
        objs.len()
    );
    // Map references print by name here and by address in the kernel, and the two verifiers
    // do not always stop at the same instruction: most, not all, lines agree.
    assert!(same_text * 2 >= objs.len(), "only {same_text} disassembled instructions match the kernel's log");
}

/// Raw bytecode faults clang cannot emit; the kernel refuses each (see `kernel_oracle.rs` for
/// how the oracle loads raw programs) and so must ours.
#[test]
fn raw_bytecode_faults_are_rejected() {
    use xdp_vm::insn::Insn;
    let exit = Insn::new(0x95, 0, 0, 0, 0);
    let mov0 = Insn::new(0xb7, 0, 0, 0, 2);
    let cases: Vec<(&str, Vec<Insn>)> = vec![
        // r0 = r2 (never written).
        ("uninitialized register", vec![Insn::new(0xbf, 0, 2, 0, 0), exit]),
        // goto +1 lands on the second slot of the lddw.
        (
            "jump into lddw",
            vec![Insn::new(0x05, 0, 0, 1, 0), Insn::new(0x18, 0, 0, 0, 1), Insn::new(0, 0, 0, 0, 0), exit],
        ),
        ("jump out of range", vec![Insn::new(0x05, 0, 0, 5, 0), mov0, exit]),
        ("unreachable code", vec![mov0, exit, mov0, exit]),
        ("falls off the end", vec![mov0]),
        ("r0 never set", vec![exit]),
        // while (1) {}
        ("infinite loop", vec![mov0, Insn::new(0x05, 0, 0, -1, 0)]),
        // *(u64 *)(r10 - 12) = 0: misaligned stack store.
        ("misaligned stack", vec![Insn::new(0x7a, 10, 0, -12, 0), mov0, exit]),
        // *(u64 *)(r10 + 0) = 0: above the frame.
        ("stack above frame", vec![Insn::new(0x7a, 10, 0, 0, 0), mov0, exit]),
        // r10 = 0.
        ("writes r10", vec![Insn::new(0xb7, 10, 0, 0, 0), mov0, exit]),
        // w1 += 1 on the context pointer: 32-bit pointer arithmetic.
        ("32-bit pointer arithmetic", vec![Insn::new(0x04, 1, 0, 0, 1), mov0, exit]),
        // r1 &= 7 on the context pointer.
        ("bitwise op on pointer", vec![Insn::new(0x57, 1, 0, 0, 7), mov0, exit]),
        // r0 = r1 (ctx); exit: returns a pointer.
        ("returns a pointer", vec![Insn::new(0xbf, 0, 1, 0, 0), exit]),
        // *(u32 *)(r1 + 0) = 0: writes the context.
        ("ctx write", vec![Insn::new(0x62, 1, 0, 0, 0), mov0, exit]),
        // r0 = *(u64 *)(r1 + 0): 8-byte ctx load.
        ("ctx wide load", vec![Insn::new(0x79, 0, 1, 0, 0), mov0, exit]),
        // call 9999.
        ("unknown helper", vec![Insn::new(0x85, 0, 0, 0, 9999), mov0, exit]),
        // Recursion: call -1 (itself).
        ("recursion", vec![Insn::new(0x85, 0, 1, 0, -1), mov0, exit]),
    ];
    // Refused by ours only: the kernel lets a privileged XDP program return a pointer.
    let ours_only = ["returns a pointer"];
    for (what, insns) in &cases {
        let r = verifier::verify(insns, &[], ProgramType::Xdp);
        assert!(r.is_err(), "{what}: ours accepts {insns:?}");
        let spec = xdp_vm::elf::ProgramSpec {
            name: "raw".into(),
            section: "xdp".into(),
            kind: ProgramKind::Xdp,
            insns: insns.clone(),
        };
        let obj = Object { license: "GPL".into(), maps: Vec::new(), programs: vec![spec.clone()] };
        let kernel = match KernelProgram::load(&obj, &spec) {
            Err(KernelError::Rejected { .. }) => "rejected",
            Err(_) => "error",
            Ok(_) => "accepted",
        };
        eprintln!("{what:28} kernel {kernel:8} ours: {}", r.unwrap_err());
        if !ours_only.contains(what) {
            assert_eq!(kernel, "rejected", "{what}: the kernel does not reject it");
        }
    }
}
