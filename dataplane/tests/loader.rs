//! The object loader on real clang-built objects (`tests/bpf/loader_*.c`): programs and their
//! kinds, map definitions of every flavour, global data, relocated map references and linked
//! bpf-to-bpf calls.

use std::collections::BTreeSet;

use maps::{MapDef, map_flags, map_type};
use xdp_vm::elf::{ElfError, Extras, MapKind, MapSlot, Object, ProgramKind, ProgramSpec, SlotTarget};
use xdp_vm::insn::{BPF_PSEUDO_CALL, BPF_PSEUDO_FUNC, BPF_PSEUDO_MAP_IDX, BPF_PSEUDO_MAP_IDX_VALUE, Insn};

fn bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/{name}.o", env!("BPF_OBJ_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn load(name: &str) -> (Object, Extras) {
    Object::parse_with_extras(&bytes(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Names of the maps a program references through `BPF_PSEUDO_MAP_IDX`, in instruction order.
fn map_refs(obj: &Object, prog: &ProgramSpec) -> Vec<String> {
    prog.insns
        .iter()
        .filter(|i| i.is_lddw() && i.src == BPF_PSEUDO_MAP_IDX)
        .map(|i| obj.maps[usize::try_from(i.imm).unwrap()].name.clone())
        .collect()
}

/// (map name, offset) of every `BPF_PSEUDO_MAP_IDX_VALUE` reference.
fn value_refs(obj: &Object, prog: &ProgramSpec) -> BTreeSet<(String, i32)> {
    prog.insns
        .windows(2)
        .filter(|w| w[0].is_lddw() && w[0].src == BPF_PSEUDO_MAP_IDX_VALUE)
        .map(|w| (obj.maps[usize::try_from(w[0].imm).unwrap()].name.clone(), w[1].imm))
        .collect()
}

/// The name of the function a call or callback at `at` lands on (it must land on a start).
fn callee(extras: &[xdp_vm::elf::Function], at: usize, insn: Insn) -> String {
    let target = usize::try_from(i64::try_from(at).unwrap() + 1 + i64::from(insn.imm)).unwrap();
    let f =
        extras.iter().find(|f| f.start == target).unwrap_or_else(|| panic!("insn {at} lands mid-function"));
    f.name.clone()
}

/// Every (caller, callee) edge of a linked program, through calls and callback pointers.
fn call_edges(prog: &ProgramSpec, funcs: &[xdp_vm::elf::Function]) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::new();
    for (at, insn) in prog.insns.iter().enumerate() {
        let call = insn.is_pseudo_call() || (insn.is_lddw() && insn.src == BPF_PSEUDO_FUNC);
        if call {
            let caller = funcs.iter().find(|f| (f.start..f.start + f.len).contains(&at)).unwrap();
            edges.insert((caller.name.clone(), callee(funcs, at, *insn)));
        }
    }
    edges
}

fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, map_flags }
}

#[test]
fn several_programs_share_btf_maps() {
    let (obj, extras) = load("loader_multi");
    assert_eq!(obj.license, "Dual BSD/GPL");

    let mut progs: Vec<(&str, &str, ProgramKind)> =
        obj.programs.iter().map(|p| (p.name.as_str(), p.section.as_str(), p.kind.clone())).collect();
    progs.sort_by_key(|p| p.0);
    let bar = ProgramKind::Uprobe { target: "bar".into() };
    let ret = ProgramKind::Uretprobe { target: String::new() };
    assert_eq!(
        progs,
        [
            ("count_packets", "xdp", ProgramKind::Xdp),
            ("foo_second", "xdp/foo", ProgramKind::Xdp),
            ("foo_stats", "xdp/foo", ProgramKind::Xdp),
            ("probe_bar", "uprobe/bar", bar),
            ("probe_ret", "uretprobe", ret),
            ("tail_target", "xdp.frags", ProgramKind::Xdp),
        ]
    );
    // Two programs in one section keep their offset order.
    let foo: Vec<&str> =
        obj.programs.iter().filter(|p| p.section == "xdp/foo").map(|p| p.name.as_str()).collect();
    assert_eq!(foo, ["foo_stats", "foo_second"]);

    let map = |name: &str| &obj.maps[obj.map_index(name).unwrap_or_else(|| panic!("no map {name}"))];
    assert_eq!(map("counts").def, def(map_type::HASH, 4, 8, 1024, 0));
    assert_eq!(map("stats").def, def(map_type::PERCPU_ARRAY, 4, 16, 4, 0), "typedef'd const volatile struct");
    assert_eq!(map("lru").def, def(map_type::LRU_HASH, 6, 2, 128, 2));
    assert_eq!(map("events").def, def(map_type::RINGBUF, 0, 0, 4096, 0));
    assert_eq!(map("lpm").def, def(map_type::LPM_TRIE, 8, 4, 16, map_flags::NO_PREALLOC));
    assert_eq!(map("inner_a").def, def(map_type::ARRAY, 4, 4, 8, 0));
    assert_eq!(map("outer").def, def(map_type::ARRAY_OF_MAPS, 4, 4, 4, 0));
    assert_eq!(map("jumps").def, def(map_type::PROG_ARRAY, 4, 4, 2, 0));
    assert_eq!(obj.maps.len(), 9, "no global data in this object");
    assert!(obj.maps.iter().all(|m| m.kind == MapKind::Regular && m.data.is_empty()));

    let outer = obj.map_index("outer").unwrap();
    assert_eq!(extras.inner[outer], Some(def(map_type::ARRAY, 4, 4, 8, 0)));
    let (a, b) = (obj.map_index("inner_a").unwrap(), obj.map_index("inner_b").unwrap());
    let slots =
        [MapSlot { index: 0, target: SlotTarget::Map(a) }, MapSlot { index: 2, target: SlotTarget::Map(b) }];
    assert_eq!(extras.slots[outer], slots);
    let jumps = obj.map_index("jumps").unwrap();
    assert_eq!(extras.inner[jumps], None);
    assert_eq!(
        extras.slots[jumps],
        [MapSlot { index: 1, target: SlotTarget::Program("tail_target".into()) }]
    );

    let refs = |name: &str| map_refs(&obj, obj.program(Some(name)).unwrap());
    assert_eq!(refs("count_packets"), ["counts", "counts"]);
    assert_eq!(refs("foo_stats"), ["stats", "counts", "jumps"]);
    assert_eq!(refs("foo_second"), ["outer"]);
    assert_eq!(refs("tail_target"), ["lru", "lpm"]);
    assert_eq!(refs("probe_bar"), ["events"]);
    // Map references carry nothing in the second slot.
    for p in &obj.programs {
        for w in p.insns.windows(2).filter(|w| w[0].is_lddw() && w[0].src == BPF_PSEUDO_MAP_IDX) {
            assert_eq!(w[1], Insn::default(), "{}", p.name);
        }
    }
}

#[test]
fn program_lookup_by_name() {
    let obj = Object::parse(&bytes("loader_multi")).unwrap();
    assert_eq!(obj.program(None).unwrap().name, obj.programs[0].name);
    assert_eq!(obj.program(Some("probe_bar")).unwrap().kind, ProgramKind::Uprobe { target: "bar".into() });
    let err = obj.program(Some("nope")).unwrap_err();
    let ElfError::NoSuchProgram { name, available } = &err else { panic!("{err}") };
    assert_eq!(name, "nope");
    assert_eq!(available.len(), 6);
    assert!(err.to_string().contains("count_packets") && err.to_string().contains("probe_ret"), "{err}");
}

#[test]
fn legacy_maps_and_global_data() {
    let (mut obj, _) = load("loader_legacy");
    assert_eq!(obj.license, "GPL");
    let names: Vec<&str> = obj.maps.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["legacy_hash", "legacy_array", ".rodata", ".data", ".bss"]);
    assert_eq!(obj.maps[0].def, def(map_type::HASH, 4, 8, 64, map_flags::NO_PREALLOC));
    assert_eq!(obj.maps[1].def, def(map_type::ARRAY, 4, 16, 2, 0));

    let ro = &obj.maps[2];
    assert_eq!(ro.kind, MapKind::Global { readonly: true });
    assert_eq!(ro.def.map_flags, map_flags::RDONLY_PROG | map_flags::MMAPABLE);
    assert_eq!((ro.def.map_type, ro.def.key_size, ro.def.max_entries), (map_type::ARRAY, 4, 1));
    assert_eq!(ro.def.value_size as usize, ro.data.len());
    let var = |m: usize, name: &str| {
        let v = obj.maps[m].vars.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no var {name}"));
        (v.offset, v.size)
    };
    assert_eq!(var(2, "threshold"), (0, 4));
    assert_eq!(var(2, "verdict"), (4, 1));
    assert_eq!(var(2, "magic"), (8, 8));
    assert_eq!(ro.data[..16], [100, 0, 0, 0, 1, 0, 0, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11]);

    let (data, bss) = (&obj.maps[3], &obj.maps[4]);
    assert_eq!(data.kind, MapKind::Global { readonly: false });
    assert_eq!(data.def.map_flags, map_flags::MMAPABLE);
    assert_eq!(data.data, 7u64.to_le_bytes());
    assert_eq!(bss.data, [0; 16]);
    assert_eq!((var(4, "seen"), var(4, "last_len")), ((0, 4), (8, 8)));

    let prog = obj.program(None).unwrap();
    assert_eq!(map_refs(&obj, prog), ["legacy_hash", "legacy_array"]);
    let refs = value_refs(&obj, prog);
    for (map, off) in [
        (".rodata", 0),
        (".rodata", 4),
        (".rodata", 8),
        (".rodata", 16),
        (".data", 0),
        (".bss", 0),
        (".bss", 8),
    ] {
        assert!(refs.contains(&(map.to_string(), off)), "no reference to {map}+{off} in {refs:?}");
    }

    // const volatile overrides, as a skeleton's rodata->threshold = 200.
    obj.set_global("threshold", &200u32.to_le_bytes()).unwrap();
    obj.set_global("verdict", &[2]).unwrap();
    obj.set_global("last_len", &9u64.to_le_bytes()).unwrap();
    assert_eq!(obj.maps[2].data[..5], [200, 0, 0, 0, 2]);
    assert_eq!(obj.maps[4].data[8..], 9u64.to_le_bytes());
    let err = obj.set_global("magic", &[1, 2, 3, 4]).unwrap_err();
    assert_eq!(err.to_string(), "global variable magic is 8 bytes, the value is 4");
    assert!(matches!(obj.set_global("missing", &[0]), Err(ElfError::NoSuchGlobal { .. })));
}

#[test]
fn subprograms_are_linked_once_each() {
    let (obj, extras) = load("loader_calls");
    let names: Vec<&str> = obj.programs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["calls_main", "calls_other"], "global_helper in .text is a subprogram, not a program");

    let edges = |i: usize| call_edges(&obj.programs[i], &extras.functions[i]);
    let e = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        edges(0),
        BTreeSet::from([
            e("calls_main", "loop_cb"),
            e("calls_main", "global_helper"),
            e("loop_cb", "leaf"),
            e("global_helper", "middle"),
            e("middle", "leaf"),
        ])
    );
    assert_eq!(edges(1), BTreeSet::from([e("calls_other", "middle"), e("middle", "leaf")]));

    for (prog, funcs) in obj.programs.iter().zip(&extras.functions) {
        // The program first, then each subprogram once, back to back, covering every instruction.
        assert_eq!(funcs[0].name, prog.name);
        let mut seen = BTreeSet::new();
        let mut next = 0;
        for f in funcs {
            assert!(seen.insert(f.name.clone()), "{} linked twice into {}", f.name, prog.name);
            assert_eq!(f.start, next);
            next += f.len;
        }
        assert_eq!(next, prog.insns.len());
        // The callback pointer is a BPF_PSEUDO_FUNC lddw; every call is a BPF_PSEUDO_CALL.
        assert!(prog.insns.iter().all(|i| !(i.code == 0x85 && i.src != 0 && i.src != BPF_PSEUDO_CALL)));
    }
    assert!(obj.programs[0].insns.iter().any(|i| i.is_lddw() && i.src == BPF_PSEUDO_FUNC));

    // Map and global references inside subprograms are relocated in every copy.
    let rodata = obj.map_index(".rodata").unwrap();
    let refs = |i: usize| value_refs(&obj, &obj.programs[i]);
    for i in 0..2 {
        assert!(refs(i).contains(&(".rodata".to_string(), 0)), "leaf reads factor");
        assert!(refs(i).contains(&(".data".to_string(), 0)), "leaf reads static_counter");
    }
    assert!(refs(1).contains(&(".rodata.str1.1".to_string(), 0)), "string literal");
    assert_eq!(map_refs(&obj, &obj.programs[0]), ["acc"]);
    assert!(map_refs(&obj, &obj.programs[1]).is_empty());

    let str1 = &obj.maps[obj.map_index(".rodata.str1.1").unwrap()];
    assert_eq!(str1.kind, MapKind::Global { readonly: true });
    assert_eq!(str1.data, b"other %d\n\0");
    assert_eq!(obj.maps[rodata].vars[0].name, "factor");
    assert_eq!(obj.maps[obj.map_index(".data").unwrap()].vars[0].name, "static_counter");
}

#[test]
fn every_built_object_parses_and_survives_corruption() {
    let mut seen = 0;
    for entry in std::fs::read_dir(env!("BPF_OBJ_DIR")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "o") {
            continue;
        }
        let original = std::fs::read(&path).unwrap();
        let obj = Object::parse(&original).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!obj.programs.is_empty(), "{}", path.display());
        seen += 1;
        // A light pass here; the heavy seeded fuzz lives in xdp-vm's elf tests.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut b = original.clone();
            let at = (x as usize) % b.len();
            b[at] = (x >> 32) as u8;
            if round % 3 == 0 {
                b.truncate((x >> 40) as usize % original.len());
            }
            let _ = Object::parse(&b);
        }
    }
    assert!(seen >= 3, "expected the loader objects in {}", env!("BPF_OBJ_DIR"));
}
