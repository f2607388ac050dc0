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
