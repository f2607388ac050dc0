//! The kernel oracle against the real kernel: hand-built programs loaded with `BPF_PROG_LOAD`
//! and run with `BPF_PROG_TEST_RUN`. Needs root (CI runs as root).

use dataplane::kernel::{KernelError, KernelProgram, pin_current_thread, possible_cpus};
use maps::{Entry, MapDef, map_type};
use xdp_vm::elf::{MapKind, MapSpec, Object, ProgramKind, ProgramSpec};
use xdp_vm::insn::*;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
/// `bpf_map_lookup_elem`, `bpf_map_update_elem`.
const HELPER_LOOKUP: i32 = 1;
const HELPER_UPDATE: i32 = 2;

// A tiny assembler: just what these tests need.
fn mov64_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(BPF_ALU64 | BPF_MOV | BPF_K, dst, 0, 0, imm)
}
fn mov64_reg(dst: u8, src: u8) -> Insn {
    Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, dst, src, 0, 0)
}
fn add64_imm(dst: u8, imm: i32) -> Insn {
    Insn::new(BPF_ALU64 | BPF_ADD | BPF_K, dst, 0, 0, imm)
}
fn ldx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(BPF_LDX | BPF_MEM | size, dst, src, off, 0)
}
fn stx(size: u8, dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(BPF_STX | BPF_MEM | size, dst, src, off, 0)
}
fn st(size: u8, dst: u8, off: i16, imm: i32) -> Insn {
    Insn::new(BPF_ST | BPF_MEM | size, dst, 0, off, imm)
}
fn jgt_reg(dst: u8, src: u8, off: i16) -> Insn {
    Insn::new(BPF_JMP | BPF_JGT | BPF_X, dst, src, off, 0)
}
fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
    Insn::new(BPF_JMP | BPF_JEQ | BPF_K, dst, 0, off, imm)
}
fn call(helper: i32) -> Insn {
    Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, helper)
}
fn exit() -> Insn {
    Insn::new(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)
}
/// `lddw dst, map[index]` as the loader emits it.
fn ld_map(dst: u8, index: i32) -> [Insn; 2] {
    [Insn::new(BPF_LD | BPF_IMM | BPF_DW, dst, BPF_PSEUDO_MAP_IDX, 0, index), Insn::default()]
}
/// `lddw dst, &map[index].value[offset]` as the loader emits it for global data.
fn ld_map_value(dst: u8, index: i32, offset: i32) -> [Insn; 2] {
    [
        Insn::new(BPF_LD | BPF_IMM | BPF_DW, dst, BPF_PSEUDO_MAP_IDX_VALUE, 0, index),
        Insn::new(0, 0, 0, 0, offset),
    ]
}

fn program(kind: ProgramKind, insns: Vec<Insn>) -> ProgramSpec {
    let section = match &kind {
        ProgramKind::Xdp => "xdp".to_string(),
        ProgramKind::Uprobe { target } => format!("uprobe/{target}"),
        _ => "other".to_string(),
    };
    ProgramSpec { name: "test_prog".into(), section, kind, insns }
}

fn object(maps: Vec<MapSpec>, insns: Vec<Insn>) -> Object {
    Object { license: "GPL".into(), maps, programs: vec![program(ProgramKind::Xdp, insns)] }
}

fn map(name: &str, map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapSpec {
    MapSpec {
        name: name.into(),
        def: MapDef { map_type, key_size, value_size, max_entries, map_flags: 0 },
        kind: MapKind::Regular,
        data: Vec::new(),
        vars: Vec::new(),
    }
}

fn global(name: &str, readonly: bool, data: Vec<u8>) -> MapSpec {
    MapSpec {
        name: name.into(),
        def: MapDef {
            map_type: map_type::ARRAY,
            key_size: 4,
            value_size: data.len() as u32,
            max_entries: 1,
            map_flags: 0,
        },
        kind: MapKind::Global { readonly },
        data,
        vars: Vec::new(),
    }
}

fn load(obj: &Object) -> KernelProgram {
    KernelProgram::load(obj, &obj.programs[0]).unwrap_or_else(|e| panic!("load failed: {e}"))
}

/// The 98-byte ICMP echo request `pktgen icmp` writes (built here so the test stands alone).
fn frame() -> Vec<u8> {
    let mut f = Vec::with_capacity(98);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 84, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    f.extend((0..56).map(|i| i as u8));
    assert_eq!(f.len(), 98);
    f
}

/// `r0 = action; exit`.
fn returns(action: u32) -> Vec<Insn> {
    vec![mov64_imm(0, action as i32), exit()]
}

#[test]
fn loads_and_runs_a_constant_verdict() {
    let obj = object(vec![], returns(XDP_PASS));
    let prog = load(&obj);
    let run = prog.test_run(&frame(), 1).unwrap();
    assert_eq!(run.retval, XDP_PASS);
    assert_eq!(run.data_out, frame());
    assert!(prog.maps().is_empty());
    assert!(prog.verifier_log().contains("processed"), "level-1 log: {:?}", prog.verifier_log());
}

#[test]
fn repeat_zero_runs_once_and_repeat_reports_a_duration() {
    let prog = load(&object(vec![], returns(XDP_DROP)));
    assert_eq!(prog.test_run(&frame(), 0).unwrap().retval, XDP_DROP);
    let run = prog.test_run(&frame(), 1000).unwrap();
    assert_eq!(run.retval, XDP_DROP);
    assert!(run.duration_ns < 1_000_000, "{} ns per run of two instructions", run.duration_ns);
}

#[test]
fn writes_to_the_packet_show_in_data_out() {
    // Bounds-check the whole frame, overwrite its first and last bytes, then XDP_TX.
    let insns = vec![
        ldx(BPF_W, 2, 1, 0), // r2 = ctx->data
        ldx(BPF_W, 3, 1, 4), // r3 = ctx->data_end
        mov64_reg(4, 2),
        add64_imm(4, 98),
        jgt_reg(4, 3, 5), // if data + 98 > data_end goto drop
        st(BPF_B, 2, 0, 0xaa),
        mov64_imm(5, 0x55),
        stx(BPF_B, 2, 5, 97),
        mov64_imm(0, XDP_TX as i32),
        exit(),
        mov64_imm(0, XDP_DROP as i32), // drop:
        exit(),
    ];
    let prog = load(&object(vec![], insns));
    let run = prog.test_run(&frame(), 1).unwrap();
    assert_eq!(run.retval, XDP_TX);
    let mut expected = frame();
    expected[0] = 0xaa;
    expected[97] = 0x55;
    assert_eq!(run.data_out, expected);
    // A frame shorter than the bounds check takes the drop path, unchanged.
    let short = &frame()[..60];
    let run = prog.test_run(short, 1).unwrap();
    assert_eq!((run.retval, run.data_out.as_slice()), (XDP_DROP, short));
}

#[test]
fn a_rejected_program_keeps_the_verifier_log() {
    // r0 is never written: "R0 !read_ok".
    let obj = object(vec![], vec![exit()]);
    match KernelProgram::load(&obj, &obj.programs[0]) {
        Err(KernelError::Rejected { log }) => assert!(log.contains("R0 !read_ok"), "log: {log}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // An out-of-bounds packet read.
    let obj = object(vec![], vec![ldx(BPF_W, 2, 1, 0), ldx(BPF_B, 0, 2, 0), exit()]);
    match KernelProgram::load(&obj, &obj.programs[0]) {
        Err(KernelError::Rejected { log }) => {
            assert!(!log.is_empty());
            assert!(log.contains("invalid access to packet"), "log: {log}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_bad_map_index_is_reported_before_the_kernel_sees_it() {
    let mut insns = ld_map(1, 3).to_vec();
    insns.extend(returns(XDP_PASS));
    let obj = object(vec![], insns);
    assert!(matches!(
        KernelProgram::load(&obj, &obj.programs[0]),
        Err(KernelError::BadMapIndex { insn: 0, index: 3, count: 0 })
    ));
}

/// `*map_lookup(map[index], &key0) += 1` on a `u64` value, returning XDP_PASS.
fn count_into(index: i32) -> Vec<Insn> {
    let mut insns = vec![st(BPF_W, 10, -4, 0), mov64_reg(2, 10), add64_imm(2, -4)];
    insns.extend(ld_map(1, index));
    insns.extend([
        call(HELPER_LOOKUP),
        jeq_imm(0, 0, 3),
        ldx(BPF_DW, 1, 0, 0),
        add64_imm(1, 1),
        stx(BPF_DW, 0, 1, 0),
    ]);
    insns.extend(returns(XDP_PASS));
    insns
}

#[test]
fn per_cpu_entries_have_one_value_per_possible_cpu() {
    let ncpus = possible_cpus().unwrap();
    assert!(ncpus >= 1);
    pin_current_thread(0).unwrap();
    let obj = object(vec![map("per_cpu_hits", map_type::PERCPU_ARRAY, 4, 8, 2)], count_into(0));
    let prog = load(&obj);
    let run = prog.test_run(&frame(), 5).unwrap();
    assert_eq!(run.retval, XDP_PASS);
    let hits = &prog.maps()[0];
    assert_eq!(hits.name(), "per_cpu_hits");
    assert_eq!(hits.def().map_type, map_type::PERCPU_ARRAY);
    let entries = hits.entries().unwrap();
    assert_eq!(entries.len(), 2);
    let mut cpu0 = vec![5u64.to_ne_bytes().to_vec()];
    cpu0.extend(vec![vec![0u8; 8]; ncpus - 1]);
    assert_eq!(entries[0], Entry { key: 0u32.to_ne_bytes().to_vec(), values: cpu0 });
    assert_eq!(entries[1].values, vec![vec![0u8; 8]; ncpus]);

    if ncpus > 1 {
        pin_current_thread(1).unwrap();
        prog.test_run(&frame(), 2).unwrap();
        pin_current_thread(0).unwrap();
        let values = &hits.entries().unwrap()[0].values;
        assert_eq!(values[0], 5u64.to_ne_bytes());
        assert_eq!(values[1], 2u64.to_ne_bytes());
    }
}

#[test]
fn per_cpu_values_are_trimmed_to_value_size_and_writable() {
    // A 5-byte value: the kernel pads each CPU's copy to 8 bytes.
    let ncpus = possible_cpus().unwrap();
    let obj = object(vec![map("odd_values", map_type::PERCPU_HASH, 4, 5, 4)], returns(XDP_PASS));
    let prog = load(&obj);
    let m = &prog.maps()[0];
    m.update(&7u32.to_ne_bytes(), &[1, 2, 3, 4, 5], 0).unwrap();
    let per_cpu: Vec<u8> = (0..ncpus).flat_map(|c| [c as u8; 5]).collect();
    m.update(&9u32.to_ne_bytes(), &per_cpu, 0).unwrap();
    let entries = m.entries().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].values, vec![vec![1, 2, 3, 4, 5]; ncpus]);
    assert_eq!(entries[1].values, (0..ncpus).map(|c| vec![c as u8; 5]).collect::<Vec<_>>());
    assert!(matches!(m.update(&[0; 3], &[0; 5], 0), Err(KernelError::Size { what: "key", .. })));
    assert!(matches!(m.update(&[0; 4], &[0; 6], 0), Err(KernelError::Size { what: "value", .. })));
}

#[test]
fn hash_entries_are_sorted_and_update_flags_are_the_kernels() {
    const BPF_NOEXIST: u64 = 1;
    const BPF_EXIST: u64 = 2;
    let obj = object(vec![map("flows", map_type::HASH, 4, 8, 2)], returns(XDP_PASS));
    let prog = load(&obj);
    let m = &prog.maps()[0];
    m.update(&[0, 0, 0, 9], &[9; 8], BPF_NOEXIST).unwrap();
    m.update(&[0, 0, 0, 1], &[1; 8], 0).unwrap();
    let errno = |r: Result<(), KernelError>| match r {
        Err(KernelError::Syscall { cmd: "BPF_MAP_UPDATE_ELEM", source }) => source.raw_os_error(),
        other => panic!("expected a failed update, got {other:?}"),
    };
    assert_eq!(errno(m.update(&[0, 0, 0, 9], &[0; 8], BPF_NOEXIST)), Some(libc::EEXIST));
    assert_eq!(errno(m.update(&[0, 0, 0, 5], &[0; 8], BPF_EXIST)), Some(libc::ENOENT));
    assert_eq!(errno(m.update(&[0, 0, 0, 5], &[0; 8], 0)), Some(libc::E2BIG));
    let entries = m.entries().unwrap();
    let keys: Vec<_> = entries.iter().map(|e| e.key.clone()).collect();
    assert_eq!(keys, vec![vec![0, 0, 0, 1], vec![0, 0, 0, 9]]);
    assert_eq!(entries[1].values, vec![vec![9; 8]]);
    assert_eq!(m.lookup(&[0, 0, 0, 9]).unwrap(), Some(vec![vec![9; 8]]));
    assert_eq!(m.lookup(&[0, 0, 0, 2]).unwrap(), None);
}

#[test]
fn global_data_is_initialised_frozen_and_readable() {
    // .rodata holds two u32s; the program copies the second into .bss and adds one to a .data
    // counter, returning the first as the verdict.
    let rodata = [XDP_TX.to_ne_bytes(), 0xdead_beef_u32.to_ne_bytes()].concat();
    let data = 41u64.to_ne_bytes().to_vec();
    let maps = vec![
        global(".rodata", true, rodata.clone()),
        global(".data", false, data),
        global(".bss", false, vec![0; 16]),
    ];
    let mut insns = Vec::new();
    insns.extend(ld_map_value(6, 0, 0)); // r6 = &rodata[0]
    insns.extend(ld_map_value(7, 2, 8)); // r7 = &bss[8]
    insns.extend([ldx(BPF_W, 1, 6, 4), stx(BPF_W, 7, 1, 0)]);
    insns.extend(ld_map_value(8, 1, 0)); // r8 = &data[0]
    insns.extend([ldx(BPF_DW, 1, 8, 0), add64_imm(1, 1), stx(BPF_DW, 8, 1, 0)]);
    insns.extend([ldx(BPF_W, 0, 6, 0), exit()]);
    let prog = load(&object(maps, insns));
    let run = prog.test_run(&frame(), 1).unwrap();
    assert_eq!(run.retval, XDP_TX);

    let value = |name: &str| {
        let entries = prog.map(name).unwrap().entries().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key, 0u32.to_ne_bytes());
        entries[0].values[0].clone()
    };
    assert_eq!(value(".rodata"), rodata);
    assert_eq!(value(".data"), 42u64.to_ne_bytes());
    let mut bss = vec![0u8; 16];
    bss[8..12].copy_from_slice(&0xdead_beef_u32.to_ne_bytes());
    assert_eq!(value(".bss"), bss);
    // User space cannot change frozen .rodata.
    let err = prog.map(".rodata").unwrap().update(&0u32.to_ne_bytes(), &[0; 8], 0).unwrap_err();
    assert!(
        matches!(&err, KernelError::Syscall { source, .. } if source.raw_os_error() == Some(libc::EPERM))
    );
}

#[test]
fn a_program_cannot_write_rodata() {
    let maps = vec![global(".rodata", true, vec![0; 8])];
    let mut insns = ld_map_value(1, 0, 0).to_vec();
    insns.extend([st(BPF_W, 1, 0, 1)]);
    insns.extend(returns(XDP_PASS));
    let obj = object(maps, insns);
    match KernelProgram::load(&obj, &obj.programs[0]) {
        Err(KernelError::Rejected { log }) => assert!(log.contains("write into map forbidden"), "log: {log}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn long_map_names_are_truncated_for_the_kernel_only() {
    let name = "a-rather-long/map name";
    let mut insns = ld_map(1, 0).to_vec();
    insns.extend(returns(XDP_PASS));
    let prog = load(&object(vec![map(name, map_type::ARRAY, 4, 4, 1)], insns));
    assert_eq!(prog.maps()[0].name(), name);
}

#[test]
fn uprobes_load_as_kprobe_programs() {
    let obj = Object {
        license: "GPL".into(),
        maps: vec![map("calls", map_type::ARRAY, 4, 8, 1)],
        programs: vec![program(ProgramKind::Uprobe { target: "worker_poll".into() }, {
            let mut insns = count_into(0);
            let n = insns.len();
            insns[n - 2] = mov64_imm(0, 0);
            insns
        })],
    };
    let prog = KernelProgram::load(&obj, &obj.programs[0]).unwrap();
    assert_eq!(prog.maps()[0].entries().unwrap()[0].values, vec![vec![0; 8]]);
    let other = program(ProgramKind::Other, returns(0));
    assert!(matches!(KernelProgram::load(&obj, &other), Err(KernelError::UnsupportedProgram { .. })));
}

#[test]
fn map_update_from_a_program_and_helper_results() {
    // bpf_map_update_elem(&map, &key(=3), &value(=ctx->ingress_ifindex), BPF_ANY); r0 = its result.
    let mut insns = vec![
        ldx(BPF_W, 6, 1, 12), // r6 = ctx->ingress_ifindex
        st(BPF_W, 10, -4, 3),
        stx(BPF_DW, 10, 6, -16),
        mov64_reg(2, 10),
        add64_imm(2, -4),
        mov64_reg(3, 10),
        add64_imm(3, -16),
        mov64_imm(4, 0),
    ];
    insns.extend(ld_map(1, 0));
    insns.extend([call(HELPER_UPDATE), exit()]);
    let prog = load(&object(vec![map("seen", map_type::HASH, 4, 8, 4)], insns));
    let run = prog.test_run(&frame(), 1).unwrap();
    assert_eq!(run.retval, 0);
    let entries = prog.maps()[0].entries().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].key, 3u32.to_ne_bytes());
    // Without a context, BPF_PROG_TEST_RUN uses the loopback device's queue 0.
    assert_eq!(entries[0].values[0], 1u64.to_ne_bytes());
}

// ---------------------------------------------------------------------------------------------
// The compiled test programs (dataplane/tests/bpf/*.c), parsed by our loader and run by the
// kernel: each loads, returns its verdict on the test frame, and leaves the values the comments
// in its source promise. These pin down the kernel behaviours our engines must reproduce.

/// Parses `tests/bpf/NAME.c`'s object and loads its only program, pinned to CPU 0.
fn load_test_program(name: &str) -> (Object, KernelProgram) {
    let path = std::path::Path::new(env!("BPF_OBJ_DIR")).join(format!("{name}.o"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let obj = Object::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(obj.programs.len(), 1, "{name} has one program");
    pin_current_thread(0).unwrap();
    let prog = KernelProgram::load(&obj, &obj.programs[0]).unwrap_or_else(|e| panic!("{name}: {e}"));
    (obj, prog)
}

/// The single value of a one-entry (array or global-data) map.
fn only_value(prog: &KernelProgram, map: &str) -> Vec<u8> {
    let entries = prog.map(map).unwrap_or_else(|| panic!("no map {map}")).entries().unwrap();
    entries[0].values[0].clone()
}

fn u64s(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap())).collect()
}

fn i64s(bytes: &[u8]) -> Vec<i64> {
    bytes.chunks_exact(8).map(|c| i64::from_ne_bytes(c.try_into().unwrap())).collect()
}

/// Every value of an `i64` array map, in key order.
fn codes(prog: &KernelProgram, map: &str) -> Vec<i64> {
    let entries = prog.map(map).unwrap().entries().unwrap();
    entries.iter().map(|e| i64s(&e.values[0])[0]).collect()
}

const TEST_PROGRAMS: &[(&str, u32)] = &[
    ("alu", XDP_TX),
    ("alu32", XDP_PASS),
    ("jmp", XDP_PASS),
    ("jmp32", XDP_PASS),
    ("mem", XDP_TX),
    ("atomics", XDP_PASS),
    ("v4", XDP_PASS),
    ("globals", XDP_TX),
    ("calls", XDP_PASS),
    ("loops", XDP_TX),
    ("maps_ops", XDP_PASS),
    ("percpu", XDP_PASS),
    ("helpers", XDP_PASS),
    ("adjust", XDP_TX),
    ("csum", XDP_TX),
];

#[test]
fn every_test_program_loads_and_returns_its_verdict() {
    for &(name, verdict) in TEST_PROGRAMS {
        let (_, prog) = load_test_program(name);
        let run = prog.test_run(&frame(), 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(run.retval, verdict, "{name}");
        for map in prog.maps() {
            map.entries().unwrap_or_else(|e| panic!("{name}/{}: {e}", map.name()));
        }
    }
}

#[test]
fn alu_division_by_zero_follows_the_kernel_rules() {
    let (_, prog) = load_test_program("alu");
    prog.test_run(&frame(), 1).unwrap();
    let r = u64s(&only_value(&prog, "alu64_results"));
    let f = frame();
    let word = |at: usize| u64::from_le_bytes(f[at..at + 8].try_into().unwrap());
    let a = word(0) ^ 0xfedc_ba98_7654_3210;
    let e = word(14).wrapping_add(0x1122_3344_5566_7788);
    let d = word(30) | 5;
    assert_eq!(r[23], 0, "a / 0");
    assert_eq!(r[24], e, "e % 0 keeps e");
    assert_eq!(r[26], d, "d % 0 keeps d");
    assert_eq!(r[22], a.wrapping_neg());
    assert_eq!(r[50], 0xffff_ffff_8000_0000);
}

#[test]
fn v4_signed_division_overflow_is_patched_by_the_kernel() {
    let (_, prog) = load_test_program("v4");
    prog.test_run(&frame(), 1).unwrap();
    let sdiv = i64s(&only_value(&prog, "v4_results")[..28 * 8]);
    assert_eq!(sdiv[8], 0, "sdiv by 0");
    assert_eq!(sdiv[10], i64::MIN, "INT64_MIN / -1");
    assert_eq!(sdiv[11], 0, "INT64_MIN % -1");
    assert_eq!(sdiv[18], 0, "32-bit sdiv by 0");
    assert_eq!(sdiv[20], i64::from(i32::MIN), "INT32_MIN / -1");
    assert_eq!(sdiv[21], 0, "INT32_MIN % -1");
}

#[test]
fn global_data_of_a_compiled_program() {
    let (obj, prog) = load_test_program("globals");
    let names: Vec<_> = prog.maps().iter().map(|m| m.name()).collect();
    for section in [".rodata", ".data", ".bss"] {
        assert!(names.contains(&section), "{names:?}");
    }
    let rodata_before = obj.maps.iter().find(|m| m.name == ".rodata").unwrap().data.clone();
    assert_eq!(prog.test_run(&frame(), 3).unwrap().retval, XDP_TX);
    assert_eq!(only_value(&prog, ".rodata"), rodata_before);
    let data = only_value(&prog, ".data");
    assert_eq!(u64s(&data[..8])[0], 1003, "packets_seen after three runs");
    let bss = only_value(&prog, ".bss");
    assert_eq!(&bss[..6], &frame()[6..12], "last_src_mac");
}

#[test]
fn map_helper_return_codes() {
    let (_, prog) = load_test_program("maps_ops");
    prog.test_run(&frame(), 1).unwrap();
    let x = u64::from_le_bytes(frame()[42..50].try_into().unwrap()) as i64;
    let (eexist, enoent, e2big, einval) = (-17, -2, -7, -22);
    #[rustfmt::skip]
    let expected = vec![
        0, eexist, enoent, 0, 0, 0, 0, e2big, 0, e2big, 0, enoent, -1, x + 3, 0, einval,
        eexist, 0, 0, e2big, einval, -1, x ^ 1, 0, einval, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(codes(&prog, "map_ret_codes"), expected);
    let flows = prog.map("flow_table").unwrap().entries().unwrap();
    let keys: Vec<u32> = flows.iter().map(|e| u32::from_ne_bytes(e.key[..].try_into().unwrap())).collect();
    assert_eq!(keys.len(), 4);
    assert!(keys.contains(&1) && keys.contains(&5) && !keys.contains(&3), "{keys:?}");
}

#[test]
fn per_cpu_maps_of_a_compiled_program() {
    let (_, prog) = load_test_program("percpu");
    prog.test_run(&frame(), 2).unwrap();
    let ncpus = possible_cpus().unwrap();
    let counters = prog.map("cpu_counters").unwrap().entries().unwrap();
    assert_eq!(counters.len(), 3);
    for e in &counters {
        assert_eq!(e.values.len(), ncpus);
        assert!(e.values[1..].iter().all(|v| v == &[0; 8]), "only CPU 0 ran");
    }
    assert_eq!(u64s(&counters[0].values[0]), [2]);
    assert_eq!(u64s(&counters[1].values[0]), [2 * 98]);
    assert_eq!(u64s(&counters[2].values[0]), [0x1000]);
    let flows = prog.map("cpu_flows").unwrap().entries().unwrap();
    assert_eq!(flows.len(), 1, "key 1000 was deleted, 1001 never fit");
    assert_eq!(flows[0].values.len(), ncpus);
    assert_eq!(flows[0].values[0].len(), 24);
    assert_eq!(u64s(&flows[0].values[0][..16]), [2, 2 * 98]);
    assert_eq!(codes(&prog, "percpu_ret_codes")[..7], [0, 0, 0, -7, 0, -2, 0]);
}

#[test]
fn helpers_context_and_printk_lengths() {
    let (_, prog) = load_test_program("helpers");
    prog.test_run(&frame(), 1).unwrap();
    let v = only_value(&prog, "helper_results");
    let fields = u64s(&v[..64]);
    // ktime monotonic and non-zero, CPU 0, two prandom calls, masked 0, ifindex 1 (lo), queue 0,
    // no metadata.
    assert_eq!(fields, [1, 1, 0, 2, 0, 1, 0, 0]);
    // bpf_trace_printk returns the formatted length (no newline added).
    let printk = i64s(&v[64..]);
    assert_eq!(printk[..11], [10, 7, 18, 9, 48, 20, 5, 4, 26, 7, 0]);
}

#[test]
fn egress_ifindex_is_not_readable_by_plain_xdp_programs() {
    let obj = object(vec![], vec![ldx(BPF_W, 0, 1, 20), exit()]);
    match KernelProgram::load(&obj, &obj.programs[0]) {
        Err(KernelError::Rejected { log }) => {
            assert!(log.contains("invalid bpf_context access"), "log: {log}")
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn packet_adjustment_limits_and_metadata_in_data_out() {
    let (_, prog) = load_test_program("adjust");
    let run = prog.test_run(&frame(), 1).unwrap();
    assert_eq!(run.retval, XDP_TX);
    let (einval, eacces) = (-22, -13);
    #[rustfmt::skip]
    let expected = [einval, 0, 0, einval, 0, 0, 0, einval, einval, 0, 0, 0, eacces, 0, einval, 0, 0, einval];
    assert_eq!(codes(&prog, "adjust_ret_codes")[..18], expected);
    let seen = u64s(&only_value(&prog, "adjust_meta_seen"));
    assert_eq!(seen, [0x1122_3344_5566_7788, 110, 0x1122_3344_5566_7788, 110, 114, 8]);
    // BPF_PROG_TEST_RUN's output starts at data_meta: 8 bytes of metadata, then 114 of packet.
    assert_eq!(run.data_out.len(), 8 + 114);
    assert_eq!(run.data_out[..8], 110u64.to_ne_bytes());
    let pkt = &run.data_out[8..];
    assert_eq!(pkt[..4], [0xdd, 0xcc, 0xbb, 0xaa]);
    assert_eq!(pkt[4..18], frame()[..14], "Ethernet header moved to the front");
    assert_eq!(pkt[18..26], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(pkt[26..26 + 78], frame()[14..92], "the rest, its last 6 bytes cut");
    assert_eq!(pkt[104..110], [0; 6], "re-grown tail reads as zero");
    assert_eq!(pkt[110..], [0xfe, 0xed, 0xfa, 0xce]);
}

#[test]
fn csum_diff_returns_a_folded_16_bit_sum() {
    let (_, prog) = load_test_program("csum");
    let run = prog.test_run(&frame(), 1).unwrap();
    let v = u64s(&only_value(&prog, "csum_results"));
    let (raw, folded) = (&v[..12], &v[12..]);
    assert!(raw.iter().all(|&r| r <= 0xffff), "every result fits 16 bits: {raw:x?}");
    assert_eq!(folded[1], 0, "a header with a correct checksum re-sums to 0");
    assert_eq!(raw[11], 0x7777, "no buffers: the seed");
    // The checksum the program wrote is the real IPv4 header checksum.
    let ip = etherparse::Ipv4HeaderSlice::from_slice(&run.data_out[14..34]).unwrap();
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    // Summing native-order words and storing the folded result natively gives network order.
    assert_eq!(u64::from(u16::from_ne_bytes([run.data_out[24], run.data_out[25]])), folded[0]);
}

#[test]
fn repeats_do_not_reset_the_packet() {
    // bpf_xdp_adjust_head(ctx, 1) per run: after 5 runs the output has lost 5 bytes.
    let insns = vec![mov64_imm(2, 1), call(44), mov64_imm(0, XDP_PASS as i32), exit()];
    let prog = load(&object(vec![], insns));
    assert_eq!(prog.test_run(&frame(), 5).unwrap().data_out, frame()[5..]);
    assert_eq!(prog.test_run(&frame(), 0).unwrap().data_out, frame()[1..]);
}

#[test]
fn a_long_verifier_log_is_captured_whole() {
    // 40 000 instructions, then an exit with r0 unset: the level-1 log lists every instruction,
    // over a megabyte, more than the first buffer; the retry must return all of it.
    let mut insns = vec![mov64_imm(1, 0); 40_000];
    insns.push(exit());
    let obj = object(vec![], insns);
    match KernelProgram::load(&obj, &obj.programs[0]) {
        Err(KernelError::Rejected { log }) => {
            assert!(log.len() > 1 << 20, "{} bytes", log.len());
            assert!(log.contains("\n0: (b7) r1 = 0"), "the start is kept: {}", &log[..200]);
            assert!(log.contains("R0 !read_ok"));
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}
