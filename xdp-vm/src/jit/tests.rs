//! The JIT against the interpreter: each program runs through both on equal frames; results,
//! faults and output frames must agree.

use std::sync::Arc;

use maps::{Map, MapDef, map_type};

use super::{JitProgram, JitWorker};
use crate::context::{XDP_FRAME_SIZE, Xdp, XdpBuff};
use crate::helpers::{errno_ret, id};
use crate::insn::*;
use crate::interp::{Fault, Interpreter};
use crate::program::Program;

const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn::new(code, dst, src, off, imm)
}
const EXIT: Insn = i(0x95, 0, 0, 0, 0);

/// Runs `insns` through both engines (fresh maps for each, from `make_maps`); asserts they
/// agree on the result and the frame, and returns the JIT's result. The JIT runs the program
/// loaded unverified through [`JitProgram::run`] and through a [`JitWorker`]; when the verifier
/// accepts the program, also compiled from the verified program (no checks, alias regions)
/// through a `JitWorker`, as the dataplane runs it. Every run must agree.
fn both_with(insns: &[Insn], make_maps: &dyn Fn() -> Vec<Arc<Map>>, slot: usize) -> Result<u64, Fault> {
    let packet: Vec<u8> = (0..64).collect();
    // `Some((verified, through a JitWorker))`: the JIT, from a program loaded unverified or
    // verified.
    let run = |jit: Option<(bool, bool)>| {
        let maps = make_maps();
        let prog = match jit {
            Some((true, _)) => Program::<Xdp>::from_insns_verified("t", insns, &maps).ok()?,
            _ => Program::<Xdp>::from_insns("t", insns, &maps).expect("loads"),
        };
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut frame, &packet).unwrap();
        let r = match jit {
            Some((_, false)) => JitProgram::compile(&prog).expect("compiles").run(&mut buff, slot),
            Some((_, true)) => {
                JitWorker::new(Arc::new(JitProgram::compile(&prog).expect("compiles")), slot).run(&mut buff)
            }
            None => Interpreter::new().run(&prog, &mut buff, slot),
        };
        let out = buff.meta_and_packet().to_vec();
        let dumps: Vec<_> = maps.iter().map(sorted_entries).collect();
        Some((r, out, dumps))
    };
    let (ri, oi, mi) = run(None).expect("the interpreter runs");
    let ri = ri.map_err(without_addr);
    let (rj, oj, mj) = run(Some((false, false))).expect("unverified programs load");
    assert_eq!(rj.map_err(without_addr), ri, "result");
    assert_eq!(oj, oi, "output frame");
    assert_eq!(mj, mi, "maps");
    let (rw, ow, mw) = run(Some((false, true))).expect("unverified programs load");
    assert_eq!((rw.map_err(without_addr), ow, mw), (ri, oi.clone(), mi.clone()), "through a JitWorker");
    if let Some((rv, ov, mv)) = run(Some((true, true))) {
        assert_eq!(rv.map_err(without_addr), ri, "result (verified)");
        assert_eq!(ov, oi, "output frame (verified)");
        assert_eq!(mv, mi, "maps (verified)");
    }
    rj
}

/// A fault with its address dropped: the engines' stacks live at different addresses.
pub(super) fn without_addr(f: Fault) -> Fault {
    match f {
        Fault::Memory { pc, size, write, .. } => Fault::Memory { pc, addr: 0, size, write },
        Fault::Atomic { pc, .. } => Fault::Atomic { pc, addr: 0 },
        f => f,
    }
}

fn both(insns: &[Insn]) -> Result<u64, Fault> {
    both_with(insns, &Vec::new, 0)
}

fn run(insns: &[Insn]) -> u64 {
    both(insns).expect("no fault")
}

fn binop(code: u8, off: i16, a: i64, b: i64) -> u64 {
    let lo = |v: i64| v as u32 as i32;
    let hi = |v: i64| (v >> 32) as u32 as i32;
    run(&[
        i(0x18, 0, 0, 0, lo(a)),
        i(0, 0, 0, 0, hi(a)),
        i(0x18, 1, 0, 0, lo(b)),
        i(0, 0, 0, 0, hi(b)),
        i(code, 0, 1, off, 0),
        EXIT,
    ])
}

#[test]
fn division_and_modulo_follow_the_kernel() {
    assert_eq!(binop(0x3f, 0, 7, 0), 0);
    assert_eq!(binop(0x9f, 0, 7, 0), 7);
    assert_eq!(binop(0x9c, 0, 0x1_0000_0007, 0), 7);
    assert_eq!(binop(0x3c, 0, 0x1_0000_0007, 2), 3);
    assert_eq!(binop(0x3f, 1, -7, 2), (-3i64) as u64);
    assert_eq!(binop(0x9f, 1, -7, 2), (-1i64) as u64);
    assert_eq!(binop(0x3f, 1, i64::MIN, -1), i64::MIN as u64);
    assert_eq!(binop(0x9f, 1, i64::MIN, -1), 0);
    assert_eq!(binop(0x3c, 1, -7, 2), u64::from((-3i32) as u32));
    assert_eq!(binop(0x3c, 1, i64::from(i32::MIN), -1), u64::from(i32::MIN as u32));
    assert_eq!(binop(0x9c, 1, i64::from(i32::MIN), -1), 0);
    // Immediate divisors, including 0 and -1.
    for (code, off, imm) in [
        (0x37, 0, 0),
        (0x97, 0, 0),
        (0x37, 1, -1),
        (0x97, 1, -1),
        (0x34, 1, -1),
        (0x94, 0, 0),
        (0x37, 0, -3),
        (0x34, 0, 7),
    ] {
        let p = [
            i(0x18, 0, 0, 0, 0x8000_0000u32 as i32),
            i(0, 0, 0, 0, -0x7fff_fff0),
            i(code, 0, 0, off, imm),
            EXIT,
        ];
        run(&p);
    }
}

#[test]
fn alu32_shifts_moves_and_swaps() {
    assert_eq!(binop(0x0c, 0, -1, 1), 0);
    assert_eq!(binop(0x6f, 0, 1, 65), 2);
    assert_eq!(binop(0x6c, 0, 1, 33), 2);
    assert_eq!(binop(0xcc, 0, 0x8000_0000, 4), 0xf800_0000);
    assert_eq!(binop(0xcf, 0, -16, 2), (-4i64) as u64);
    assert_eq!(run(&[i(0xb4, 0, 0, 0, -1), EXIT]), 0xffff_ffff);
    assert_eq!(run(&[i(0xb7, 0, 0, 0, -1), EXIT]), u64::MAX);
    let mov = |code: u8, off: i16| run(&[i(0xb7, 1, 0, 0, 0x80), i(code, 0, 1, off, 0), EXIT]);
    assert_eq!(mov(0xbf, 8), (-128i64) as u64);
    assert_eq!(mov(0xbc, 8), u64::from((-128i32) as u32));
    assert_eq!(mov(0xbf, 16), 0x80);
    let swap = |code: u8, imm: i32| {
        run(&[i(0x18, 0, 0, 0, 0x5566_7788), i(0, 0, 0, 0, 0x1122_3344), i(code, 0, 0, 0, imm), EXIT])
    };
    assert_eq!(swap(0xdc, 16), 0x8877);
    assert_eq!(swap(0xdc, 32), 0x8877_6655);
    assert_eq!(swap(0xdc, 64), 0x8877_6655_4433_2211);
    assert_eq!(swap(0xd4, 16), 0x7788);
    assert_eq!(swap(0xd4, 64), 0x1122_3344_5566_7788);
    assert_eq!(swap(0xd7, 32), 0x8877_6655);
}

#[test]
fn jumps_jmp32_ja32_and_calls() {
    let p = [
        i(0x18, 1, 0, 0, -1),
        i(0, 0, 0, 0, 0),
        i(0xb7, 0, 0, 0, 1),
        i(0xc6, 1, 0, 1, 0),
        EXIT,
        i(0xb7, 0, 0, 0, 2),
        EXIT,
    ];
    assert_eq!(run(&p), 2);
    assert_eq!(run(&[i(0xb7, 0, 0, 0, 1), i(0x06, 0, 0, 0, 1), EXIT, i(0xb7, 0, 0, 0, 9), EXIT]), 9);
    let call = [
        i(0xb7, 6, 0, 0, 40),
        i(0x7a, 10, 0, -8, 2),
        i(0x85, 0, 1, 0, 4),
        i(0x79, 1, 10, -8, 0),
        i(0x0f, 0, 6, 0, 0),
        i(0x0f, 0, 1, 0, 0),
        EXIT,
        i(0xb7, 6, 0, 0, 1000),
        i(0x7a, 10, 0, -8, 7),
        i(0xb7, 0, 0, 0, 100),
        EXIT,
    ];
    assert_eq!(run(&call), 142);
    // A bounded loop: r0 = sum of 0..10.
    let sum = [
        i(0xb7, 0, 0, 0, 0),
        i(0xb7, 1, 0, 0, 0),
        i(0x0f, 0, 1, 0, 0),
        i(0x07, 1, 0, 0, 1),
        i(0xa5, 1, 0, -3, 10),
        EXIT,
    ];
    assert_eq!(run(&sum), 45);
}

#[test]
fn faults_match_the_interpreter() {
    let fault = |insns: &[Insn]| both(insns).unwrap_err();
    assert!(matches!(
        fault(&[i(0xb7, 1, 0, 0, 4096), i(0x79, 0, 1, 0, 0), EXIT]),
        Fault::Memory { pc: 1, write: false, .. }
    ));
    assert!(matches!(fault(&[i(0x7a, 10, 0, 0, 1), EXIT]), Fault::Memory { pc: 0, write: true, .. }));
    assert!(matches!(fault(&[i(0x61, 0, 1, 2, 0), EXIT]), Fault::Memory { .. }));
    assert!(matches!(fault(&[i(0x69, 0, 1, 0, 0), EXIT]), Fault::Memory { .. }));
    assert!(matches!(fault(&[i(0x62, 1, 0, 0, 0), EXIT]), Fault::Memory { write: true, .. }));
    assert!(matches!(fault(&[i(0x05, 0, 0, -1, 0), EXIT]), Fault::LoopLimit { pc: 0 }));
    assert!(matches!(fault(&[i(0x85, 0, 1, 0, -1), EXIT]), Fault::CallDepth { .. }));
    assert!(matches!(
        fault(&[i(0xb7, 1, 0, 0, 7), i(0x85, 0, 0, 0, 1), EXIT]),
        Fault::NotAMap { pc: 1, value: 7 }
    ));
    // Misaligned atomic on the stack; atomic on the read-only context.
    assert!(matches!(
        fault(&[i(0xb7, 1, 0, 0, 1), i(0xdb, 10, 1, -12, 0), EXIT]),
        Fault::Atomic { pc: 1, .. }
    ));
    assert!(matches!(fault(&[i(0xb7, 2, 0, 0, 1), i(0xc3, 1, 2, 0, 0), EXIT]), Fault::Atomic { .. }));
    // Below the stack (the eight frames, then the callbacks' key area) through a copy of r10
    // (not provable, checked at run time).
    assert!(matches!(fault(&[i(0xbf, 2, 10, 0, 0), i(0x7a, 2, 0, -8200, 1), EXIT]), Fault::Memory { .. }));
    // The frame pointer itself is known: a store below the stack is caught too.
    assert!(matches!(fault(&[i(0x7a, 10, 0, -8200, 1), EXIT]), Fault::Memory { .. }));
}

#[test]
fn packet_context_and_adjust_head() {
    let len = [i(0x61, 2, 1, 0, 0), i(0x61, 3, 1, 4, 0), i(0xbf, 0, 3, 0, 0), i(0x1f, 0, 2, 0, 0), EXIT];
    assert_eq!(run(&len), 64);
    let mut q = vec![i(0xbf, 6, 1, 0, 0), i(0xb7, 2, 0, 0, 14), i(0x85, 0, 0, 0, 44), i(0xbf, 1, 6, 0, 0)];
    q.extend_from_slice(&len);
    assert_eq!(run(&q), 50);
    // adjust_head past the headroom fails with -EINVAL and leaves the packet alone.
    let past = [i(0xb7, 2, 0, 0, -(256 - 40 + 1)), i(0x85, 0, 0, 0, id::XDP_ADJUST_HEAD as i32), EXIT];
    assert_eq!(run(&past), errno_ret(libc::EINVAL));
    // Reading and writing packet bytes: swap bytes 0 and 1 and return byte 5.
    let swap = [
        i(0x61, 2, 1, 0, 0),
        i(0x71, 3, 2, 0, 0),
        i(0x71, 4, 2, 1, 0),
        i(0x73, 2, 4, 0, 0),
        i(0x73, 2, 3, 1, 0),
        i(0x91, 0, 2, 5, 0),
        EXIT,
    ];
    assert_eq!(run(&swap), 5);
    // Other context fields, through a copy of the context pointer.
    assert_eq!(
        run(&[i(0xbf, 6, 1, 0, 0), i(0x07, 6, 0, 0, 8), i(0x61, 0, 6, 4, 0), EXIT]),
        0,
        "ingress_ifindex"
    );
}

fn map_of(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> impl Fn() -> Vec<Arc<Map>> {
    move || {
        vec![Arc::new(
            Map::new("m", MapDef { map_type, key_size, value_size, max_entries, map_flags: 0 }, 4).unwrap(),
        )]
    }
}

/// `*(u32 *)(r10 - 4) = key; r0 = lookup(map 0, r10 - 4)`.
fn lookup(key: i32) -> Vec<Insn> {
    vec![
        i(0x62, 10, 0, -4, key),
        i(0xbf, 2, 10, 0, 0),
        i(0x07, 2, 0, 0, -4),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0x85, 0, 0, 0, 1),
    ]
}

/// Lookup, then `if r0 { *r0 += 5 (atomic); r0 = *r0 }`.
fn lookup_add(key: i32) -> Vec<Insn> {
    let mut p = lookup(key);
    p.extend([i(0x15, 0, 0, 3, 0), i(0xb7, 1, 0, 0, 5), i(0xdb, 0, 1, 0, 0), i(0x79, 0, 0, 0, 0), EXIT]);
    p
}

#[test]
fn inline_array_lookups_check_the_index() {
    for t in [map_type::ARRAY, map_type::PERCPU_ARRAY] {
        let maps = map_of(t, 4, 8, 2);
        assert_eq!(both_with(&lookup_add(1), &maps, 0).unwrap(), 5);
        assert_eq!(both_with(&lookup_add(1), &maps, 3).unwrap(), 5, "another slot");
        assert_eq!(both_with(&lookup_add(2), &maps, 0).unwrap(), 0, "index out of range: NULL");
        assert_eq!(both_with(&lookup_add(-1), &maps, 0).unwrap(), 0, "huge index: NULL");
        // NULL or not as 0 or 1: the pointer itself differs between the engines' fresh maps.
        let mut p = lookup(0);
        p.extend([i(0x15, 0, 0, 1, 0), i(0xb7, 0, 0, 0, 1), EXIT]);
        let r = both_with(&p, &maps, 9).unwrap();
        assert_eq!(r == 0, t == map_type::PERCPU_ARRAY, "slot out of range: NULL for per-CPU arrays only");
    }
    // Reading past the last value through a valid pointer faults, as in the interpreter.
    let mut p = lookup(1);
    p.extend([i(0x15, 0, 0, 1, 0), i(0x79, 0, 0, 8, 0), EXIT]);
    assert!(matches!(both_with(&p, &map_of(map_type::ARRAY, 4, 8, 2), 0), Err(Fault::Memory { .. })));
}

#[test]
fn hash_lookups_updates_and_deletes() {
    for t in [map_type::HASH, map_type::PERCPU_HASH] {
        let maps = map_of(t, 4, 8, 4);
        assert_eq!(both_with(&lookup_add(7), &maps, 0).unwrap(), 0, "missing key: NULL");
        // update(key 7 = 0, BPF_NOEXIST) then lookup and add; then delete twice.
        let mut p = vec![
            i(0x62, 10, 0, -4, 7),
            i(0x7a, 10, 0, -16, 0),
            i(0xbf, 2, 10, 0, 0),
            i(0x07, 2, 0, 0, -4),
            i(0xbf, 3, 10, 0, 0),
            i(0x07, 3, 0, 0, -16),
            i(0xb7, 4, 0, 0, 1),
            i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
            i(0, 0, 0, 0, 0),
            i(0x85, 0, 0, 0, 2),
            i(0xbf, 6, 0, 0, 0),
        ];
        p.extend(lookup_add(7).into_iter().take_while(|x| *x != EXIT));
        p.extend([
            i(0xbf, 7, 0, 0, 0),
            i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
            i(0, 0, 0, 0, 0),
            i(0xbf, 2, 10, 0, 0),
            i(0x07, 2, 0, 0, -4),
            i(0x85, 0, 0, 0, 3),
            i(0x85, 0, 0, 0, 3),
            i(0x0f, 0, 6, 0, 0),
            i(0x0f, 0, 7, 0, 0),
            EXIT,
        ]);
        // 0 (update) + 5 (value) + -ENOENT (second delete)
        assert_eq!(both_with(&p, &maps, 1).unwrap(), 5u64.wrapping_add(errno_ret(libc::ENOENT)));
    }
    // A key that is not readable memory is a helper-argument fault.
    let p = [
        i(0xb7, 2, 0, 0, 16),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0x85, 0, 0, 0, 1),
        EXIT,
    ];
    assert!(matches!(both_with(&p, &map_of(map_type::HASH, 4, 8, 4), 0), Err(Fault::HelperArgument { .. })));
}

#[test]
fn the_compiled_program_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<JitProgram<Xdp>>();
}

/// A map's entries in key order (hash maps iterate in a per-map order).
pub(super) fn sorted_entries(m: &Arc<Map>) -> Vec<maps::Entry> {
    let mut e = m.entries();
    e.sort();
    e
}

/// The inline hash walk against `Map::lookup_word`: every key present or absent, every key size
/// the walk serves, plain and per-CPU, with chains long enough to collide (60 keys in 64
/// buckets), slots in and out of range; the program returns the value it finds (or `u64::MAX`).
#[test]
fn inline_hash_walk_finds_what_the_map_finds() {
    for (t, ks) in [
        (map_type::HASH, 1u32),
        (map_type::HASH, 2),
        (map_type::HASH, 4),
        (map_type::HASH, 8),
        (map_type::PERCPU_HASH, 4),
        (map_type::PERCPU_HASH, 8),
    ] {
        let map = Arc::new(
            Map::new(
                "h",
                MapDef { map_type: t, key_size: ks, value_size: 8, max_entries: 64, map_flags: 0 },
                3,
            )
            .unwrap(),
        );
        assert!(map.hash_walk().is_some());
        let store = match ks {
            1 => 0x73,
            2 => 0x6b,
            4 => 0x63,
            _ => 0x7b,
        };
        // key = ingress_ifindex | rx_queue_index << 32, stored with the key's size at r10 - 8.
        let insns = [
            i(0x61, 2, 1, 12, 0),
            i(0x61, 3, 1, 16, 0),
            i(0x67, 3, 0, 0, 32),
            i(0x4f, 2, 3, 0, 0),
            i(0x7a, 10, 0, -8, 0),
            i(store, 10, 2, -8, 0),
            i(0xbf, 2, 10, 0, 0),
            i(0x07, 2, 0, 0, -8),
            i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
            i(0, 0, 0, 0, 0),
            i(0x85, 0, 0, 0, 1),
            i(0x55, 0, 0, 2, 0),
            i(0xb7, 0, 0, 0, -1),
            EXIT,
            i(0x79, 0, 0, 0, 0),
            EXIT,
        ];
        let prog = Program::<Xdp>::from_insns("walk", &insns, std::slice::from_ref(&map)).unwrap();
        let jit = JitProgram::compile(&prog).unwrap();
        let key_of = |n: u64| -> u64 {
            let spread = n.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7;
            if ks == 8 { spread } else { spread & ((1 << (8 * ks)) - 1) }
        };
        let present: Vec<u64> = (0..60).map(key_of).collect();
        for (n, &k) in present.iter().enumerate() {
            let key = &k.to_ne_bytes()[..ks as usize];
            if t == map_type::PERCPU_HASH {
                let values: Vec<u8> = (0..3u64).flat_map(|s| (n as u64 * 10 + s).to_ne_bytes()).collect();
                map.update_user(key, &values, maps::BPF_ANY).unwrap();
            } else {
                // Keys that collide in the low byte map to the same entry; later wins.
                map.update(key, &(n as u64 * 10).to_ne_bytes(), maps::BPF_ANY, 0).unwrap();
            }
        }
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let probes = present.iter().copied().chain((1000..1100).map(key_of));
        for k in probes {
            for slot in [0usize, 2, 3, 7] {
                let mut buff = XdpBuff::load(&mut frame, &[0u8; 60]).unwrap();
                buff.ingress_ifindex = k as u32;
                buff.rx_queue_index = (k >> 32) as u32;
                let got = jit.run(&mut buff, slot).unwrap();
                let want = map.lookup_word(k, slot).map_or(u64::MAX, |_| {
                    let mut v = [0u8; 8];
                    let key = &k.to_ne_bytes()[..ks as usize];
                    let all = map.lookup_user(key).unwrap();
                    let s = if t == map_type::PERCPU_HASH { slot } else { 0 };
                    v.copy_from_slice(&all[s * 8..s * 8 + 8]);
                    u64::from_ne_bytes(v)
                });
                assert_eq!(got, want, "type {t}, key size {ks}, key {k:#x}, slot {slot}");
            }
        }
    }
}

#[test]
fn disassembly_shows_the_machine_code() {
    let prog = Program::<Xdp>::from_insns("r", &[i(0xb7, 0, 0, 0, 42), EXIT], &[]).unwrap();
    let text = JitProgram::disassemble(&prog).unwrap();
    assert!(text.contains("function 0"), "{text}");
    assert!(text.contains("ret"), "{text}");
}

/// Inline array updates against the interpreter: flags `BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`,
/// `BPF_F_LOCK` and junk, indexes in and out of range, plain and per-CPU, value sizes with a
/// tail; the return value and every map's contents must agree.
#[test]
fn inline_array_updates_match_the_interpreter() {
    for t in [map_type::ARRAY, map_type::PERCPU_ARRAY] {
        for value_size in [8u32, 12, 3] {
            for flags in [0, 1, 2, 4, 7] {
                for key in [0, 2, 3, -1] {
                    let p = [
                        i(0x62, 10, 0, -4, key),
                        i(0x7a, 10, 0, -24, 0x1122_3344),
                        i(0x7a, 10, 0, -16, -0x5566_7788),
                        i(0xbf, 2, 10, 0, 0),
                        i(0x07, 2, 0, 0, -4),
                        i(0xbf, 3, 10, 0, 0),
                        i(0x07, 3, 0, 0, -24),
                        i(0xb7, 4, 0, 0, flags),
                        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
                        i(0, 0, 0, 0, 0),
                        i(0x85, 0, 0, 0, 2),
                        EXIT,
                    ];
                    for slot in [0, 2] {
                        both_with(&p, &map_of(t, 4, value_size, 3), slot).unwrap();
                    }
                }
            }
        }
    }
}

/// The LPM fast path (`Map::lookup_lpm_word`, key read inline) against the interpreter, for
/// every key data size it serves (1, 2, 4, 8 bytes) and two it does not (3, 16): the longest
/// prefix wins, a shorter key prefix stops above a longer stored one, an absent prefix and a
/// prefix length over the maximum give NULL. The program returns the rule id (or 999).
#[test]
fn lpm_lookups_find_the_longest_prefix() {
    for data_size in [1u32, 2, 3, 4, 8, 16] {
        let make_maps = move || {
            let def = MapDef {
                map_type: map_type::LPM_TRIE,
                key_size: 4 + data_size,
                value_size: 4,
                max_entries: 8,
                map_flags: maps::map_flags::NO_PREALLOC,
            };
            let m = Map::new("lpm", def, 1).unwrap();
            let key = |len: u32, first: u8, second: u8| {
                let mut k = len.to_ne_bytes().to_vec();
                k.extend((0..data_size).map(|b| match b {
                    0 => first,
                    1 => second,
                    _ => 0x55,
                }));
                k
            };
            for (k, id) in
                [(key(4, 0xa0, 0), 1u32), (key(8, 0xab, 0), 2), (key(data_size * 8, 0xab, 0xcd), 3)]
            {
                m.update_user(&k, &id.to_ne_bytes(), maps::BPF_ANY).unwrap();
            }
            vec![Arc::new(m)]
        };
        if data_size <= 8 {
            assert!(make_maps()[0].has_lpm_word_lookup(), "data size {data_size}");
        }
        // The key at r10 - 24: prefix length, then the data byte by byte; lookup; *r0 or 999.
        let program = |len: i32, first: i32, second: i32| {
            let mut p = vec![i(0x62, 10, 0, -24, len)];
            for b in 0..data_size as i16 {
                let byte = match b {
                    0 => first,
                    1 => second,
                    _ => 0x55,
                };
                p.push(i(0x72, 10, 0, -20 + b, byte));
            }
            p.extend([
                i(0xbf, 2, 10, 0, 0),
                i(0x07, 2, 0, 0, -24),
                i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
                i(0, 0, 0, 0, 0),
                i(0x85, 0, 0, 0, 1),
                i(0x55, 0, 0, 2, 0),
                i(0xb7, 0, 0, 0, 999),
                EXIT,
                i(0x61, 0, 0, 0, 0),
                EXIT,
            ]);
            p
        };
        let full = (data_size * 8) as i32;
        let got = |len: i32, first: i32, second: i32| {
            both_with(&program(len, first, second), &make_maps, 0).unwrap()
        };
        let ctx = format!("data size {data_size}");
        assert_eq!(got(full, 0xab, 0xcd), 3, "{ctx}: the longest prefix");
        // With one byte of data, the full-length prefix is the /8 (it replaced rule 2).
        assert_eq!(got(full, 0xab, 0xce), if data_size == 1 { 3 } else { 2 }, "{ctx}: the /8");
        assert_eq!(got(full, 0xa1, 0xcd), 1, "{ctx}: the /4");
        assert_eq!(got(6, 0xab, 0xcd), 1, "{ctx}: a key prefix of 6 bits stops at the /4");
        assert_eq!(got(full, 0x10, 0xcd), 999, "{ctx}: no prefix");
        assert_eq!(got(3, 0xab, 0xcd), 999, "{ctx}: shorter than every prefix");
        assert_eq!(got(full + 1, 0xab, 0xcd), 999, "{ctx}: a prefix length over the maximum");
    }
}

/// Stack slots of different widths over the same bytes, with packet stores and an atomic in
/// between: a verified program's stack accesses get alias regions (per byte range when every
/// one is at a constant frame offset), which must never forward a store past one that
/// overwrote part of it.
#[test]
fn overlapping_stack_accesses_see_every_store() {
    let p = [
        // r6 = data, r7 = data_end; drop unless 16 bytes.
        i(0x61, 6, 1, 0, 0),
        i(0x61, 7, 1, 4, 0),
        i(0xbf, 8, 6, 0, 0),
        i(0x07, 8, 0, 0, 16),
        i(0x2d, 8, 7, 19, 0),
        // *(u64 *)(r10 - 8) = 0x1122334455667788 (lddw), then a byte and a half-word into it.
        i(0x18, 1, 0, 0, 0x5566_7788),
        i(0, 0, 0, 0, 0x1122_3344),
        i(0x7b, 10, 1, -8, 0),
        i(0x72, 10, 0, -6, 0x99),
        // A packet store between the stack stores and the loads.
        i(0x62, 6, 0, 0, 0x7777),
        // r3 = *(u64 *)(r10 - 8) (sees the byte); a half-word; r2 = *(u32 *)(r10 - 8)
        i(0x79, 3, 10, -8, 0),
        i(0x6a, 10, 0, -4, 0x0aa0),
        i(0x61, 2, 10, -8, 0),
        // An atomic add through another register to the same slot, then read it again.
        i(0xbf, 4, 10, 0, 0),
        i(0x07, 4, 0, 0, -8),
        i(0xb7, 5, 0, 0, 1),
        i(0xdb, 4, 5, 0, 0),
        i(0x79, 5, 10, -8, 0),
        // Everything into the packet, and the sum out.
        i(0x63, 6, 2, 4, 0),
        i(0x7b, 6, 3, 8, 0),
        i(0xbf, 0, 5, 0, 0),
        i(0x0f, 0, 2, 0, 0),
        i(0x0f, 0, 3, 0, 0),
        EXIT,
        i(0xb7, 0, 0, 0, 1),
        EXIT,
    ];
    let maps = Vec::new;
    let prog = Program::<Xdp>::from_insns_verified("t", &p, &[]).expect("the verifier accepts it");
    assert!(prog.verified().is_some());
    let r = both_with(&p, &maps, 0).unwrap();
    let before = u64::from_le_bytes([0x88, 0x77, 0x99, 0x55, 0x44, 0x33, 0x22, 0x11]);
    let after = u64::from_le_bytes([0x88, 0x77, 0x99, 0x55, 0xa0, 0x0a, 0x22, 0x11]);
    assert_eq!(r, (after + 1).wrapping_add(after as u32 as u64).wrapping_add(before));
}

/// `hits[key] += 1` (map 1, an array of u64), keeping r6.
fn bump(key: i32) -> Vec<Insn> {
    vec![
        i(0x62, 10, 0, -4, key),
        i(0xbf, 2, 10, 0, 0),
        i(0x07, 2, 0, 0, -4),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 1),
        i(0, 0, 0, 0, 0),
        i(0x85, 0, 0, 0, 1),
        i(0x15, 0, 0, 2, 0),
        i(0xb7, 1, 0, 0, 1),
        i(0xdb, 0, 1, 0, 0),
    ]
}

/// Program `k` of a link set: count a hit on `hits[k]`, `bpf_tail_call(ctx, jumps, index)`,
/// and when that falls through, return `100 + k`. `r2` is the prog array (map 0) itself, or
/// with `hidden` the same address through `ctx->ingress_ifindex` (0 here), so the compiler
/// cannot know the map; `ctx` false passes r1 = 0 instead of the context.
fn tail_prog(k: i32, index: i32, hidden: bool, ctx: bool) -> Vec<Insn> {
    let mut p = vec![i(0xbf, 6, 1, 0, 0)];
    p.extend(bump(k));
    p.extend([
        i(if ctx { 0xbf } else { 0xb7 }, 1, 6, 0, 0),
        i(0x18, 2, BPF_PSEUDO_MAP_IDX, 0, 0),
        i(0, 0, 0, 0, 0),
    ]);
    if hidden {
        p.extend([i(0x61, 8, 6, 12, 0), i(0x0f, 2, 8, 0, 0)]);
    }
    p.extend([
        i(0xb7, 3, 0, 0, index),
        i(0x85, 0, 0, 0, id::TAIL_CALL as i32),
        i(0xb7, 0, 0, 0, 100 + k),
        EXIT,
    ]);
    p
}

/// The maps of a tail-call test: a 4-slot prog array with `slots` (index, id), and 8 counters.
fn tail_maps(slots: &[(u32, u32)]) -> Vec<Arc<Map>> {
    let def = |map_type, value_size, max_entries| MapDef {
        map_type,
        key_size: 4,
        value_size,
        max_entries,
        map_flags: 0,
    };
    let jumps = Arc::new(Map::new("jumps", def(map_type::PROG_ARRAY, 4, 4), 1).unwrap());
    for &(index, id) in slots {
        jumps.update_user(&index.to_ne_bytes(), &id.to_ne_bytes(), maps::BPF_ANY).unwrap();
    }
    vec![jumps, Arc::new(Map::new("hits", def(map_type::ARRAY, 8, 8), 1).unwrap())]
}

/// Runs `progs[0]` of the link set `progs` with the prog array filled with `slots`, through the
/// interpreter and the JIT (from programs loaded unverified, then verified when the verifier
/// accepts them all); both must agree on the result and the counters. Returns the JIT's result
/// and `hits`.
fn tail_both(progs: &[Vec<Insn>], slots: &[(u32, u32)]) -> (Result<u64, Fault>, Vec<u64>) {
    let packet = [0u8; 64];
    let run = |engine: Option<bool>| {
        let maps = tail_maps(slots);
        let load = |p: &Vec<Insn>| match engine {
            Some(true) => Program::<Xdp>::from_insns_verified("t", p, &maps).ok(),
            _ => Some(Program::<Xdp>::from_insns("t", p, &maps).expect("loads")),
        };
        let mut loaded: Vec<Program<Xdp>> = progs.iter().map(load).collect::<Option<_>>()?;
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut frame, &packet).unwrap();
        let r = if let Some(verified) = engine {
            let jits: Vec<_> =
                loaded.iter().map(|p| Arc::new(JitProgram::compile(p).expect("compiles"))).collect();
            super::link_tail_calls(&jits).unwrap();
            // Unverified through `run`, verified through a `JitWorker` (the dataplane's way).
            if verified {
                JitWorker::new(jits[0].clone(), 0).run(&mut buff)
            } else {
                jits[0].run(&mut buff, 0)
            }
        } else {
            crate::program::link_tail_calls(&mut loaded).unwrap();
            Interpreter::new().run(&loaded[0], &mut buff, 0)
        };
        let hits = (0..8u32)
            .map(|k| u64::from_ne_bytes(maps[1].lookup_user(&k.to_ne_bytes()).unwrap().try_into().unwrap()))
            .collect::<Vec<_>>();
        Some((r, hits))
    };
    let (ri, hi) = run(None).unwrap();
    let (rj, hj) = run(Some(false)).unwrap();
    assert_eq!((&rj, &hj), (&ri, &hi), "unverified");
    if let Some((rv, hv)) = run(Some(true)) {
        assert_eq!((&rv, &hv), (&ri, &hi), "verified");
    }
    (rj, hj)
}

/// `bpf_tail_call` as the kernel does it: a chain through filled slots ends where a slot is
/// empty; a program calling itself runs 34 times (33 tail calls), then falls through; an index
/// past the array, an id that names no linked program, a map the compiler could not know; a
/// target that makes no tail calls itself (compiled with the C convention, entered through its
/// `tail`-convention wrapper).
#[test]
fn tail_calls_jump_count_and_fall_through() {
    for hidden in [false, true] {
        let mut leaf = vec![i(0xbf, 6, 1, 0, 0)];
        leaf.extend(bump(1));
        leaf.extend([i(0xb7, 0, 0, 0, 201), EXIT]);
        let to_leaf = vec![tail_prog(0, 0, hidden, true), leaf];
        assert_eq!(tail_both(&to_leaf, &[(0, 1)]), (Ok(201), vec![1, 1, 0, 0, 0, 0, 0, 0]));
    }
    let set = |index: [i32; 4], hidden: bool| -> Vec<Vec<Insn>> {
        (0..4).map(|k| tail_prog(k, index[k as usize], hidden, true)).collect()
    };
    for hidden in [false, true] {
        // 0 -> slot 0 (id 1) -> slot 1 (id 2) -> slot 2: empty.
        let chain = set([0, 1, 2, 3], hidden);
        assert_eq!(tail_both(&chain, &[(0, 1), (1, 2)]), (Ok(102), vec![1, 1, 1, 0, 0, 0, 0, 0]));
        // 0 -> slot 3 (id 3), which calls slot 3 again: 33 tail calls in all.
        let count = set([3, 0, 0, 3], hidden);
        assert_eq!(tail_both(&count, &[(3, 3)]), (Ok(103), vec![1, 0, 0, 33, 0, 0, 0, 0]));
        // Past the array; an id beyond the link set (counted, then nothing runs).
        assert_eq!(tail_both(&set([4, 0, 0, 0], hidden), &[(0, 1)]).0, Ok(100));
        assert_eq!(tail_both(&set([-1, 0, 0, 0], hidden), &[(0, 1)]).0, Ok(100));
        assert_eq!(tail_both(&set([2, 0, 0, 0], hidden), &[(2, 9)]).0, Ok(100));
        // Program 0 calls slot 0 (program 1), which uses up the budget on slot 1 (id 7,
        // unlinked): 32 more counted calls, 8 refused for the count; its call of slot 2 then
        // fails for the count too, so program 2 never runs although slot 2 names it.
        let spent: Vec<Vec<Insn>> = (0..3)
            .map(|k| {
                let mut p = vec![i(0xbf, 6, 1, 0, 0)];
                p.extend(bump(k));
                if k == 1 {
                    // 40 calls of slot 1 (unlinked id), then slot 2.
                    p.push(i(0xb7, 7, 0, 0, 40));
                    p.extend([i(0xbf, 1, 6, 0, 0), i(0x18, 2, BPF_PSEUDO_MAP_IDX, 0, 0), i(0, 0, 0, 0, 0)]);
                    p.extend([i(0xb7, 3, 0, 0, 1), i(0x85, 0, 0, 0, id::TAIL_CALL as i32)]);
                    p.extend([i(0x07, 7, 0, 0, -1), i(0x55, 7, 0, -7, 0)]);
                }
                p.extend([i(0xbf, 1, 6, 0, 0), i(0x18, 2, BPF_PSEUDO_MAP_IDX, 0, 0), i(0, 0, 0, 0, 0)]);
                p.extend([i(0xb7, 3, 0, 0, k * 2), i(0x85, 0, 0, 0, id::TAIL_CALL as i32)]);
                p.extend([i(0xb7, 0, 0, 0, 100 + k), EXIT]);
                p
            })
            .collect();
        assert_eq!(tail_both(&spent, &[(0, 1), (1, 7), (2, 2)]), (Ok(101), vec![1, 1, 0, 0, 0, 0, 0, 0]));
    }
}

/// The faults of `bpf_tail_call`: r1 not the context; a call from a subprogram.
#[test]
fn tail_call_faults_match_the_interpreter() {
    let not_ctx = tail_prog(0, 0, false, false);
    let (r, _) = tail_both(&[not_ctx.clone(), not_ctx], &[(0, 1)]);
    assert!(matches!(r, Err(Fault::HelperArgument { helper: id::TAIL_CALL, .. })), "{r:?}");
    // main: call sub; exit. sub: tail call slot 0.
    let mut main = vec![i(0x85, 0, BPF_PSEUDO_CALL, 0, 1), EXIT];
    let sub = tail_prog(0, 0, false, true);
    main.extend(sub);
    let (r, _) = tail_both(&[main.clone(), main], &[(0, 1)]);
    assert!(matches!(r, Err(Fault::TailCallInSubprogram { .. })), "{r:?}");
}

/// A run in flight keeps every program its link set can jump to, whatever the control plane
/// does meanwhile: one thread runs program 0 (which tail-calls slot 0) holding only program 0,
/// while another fills, replaces and empties slot 0 — programs 1 and 2, an unlinked id, nothing
/// — and has dropped its own handles to programs 1 and 2 before the first run. Every result is
/// one of the three a slot can give, and every run counted once in `hits[0]`.
#[test]
fn prog_array_updates_while_runs_go_on() {
    let maps = tail_maps(&[(0, 1)]);
    let progs: Vec<Arc<JitProgram<Xdp>>> = (0..3)
        .map(|k| {
            // Program 0 jumps through slot 0; 1 and 2 try the empty slot 3 and return.
            let index = if k == 0 { 0 } else { 3 };
            let p =
                Program::<Xdp>::from_insns_verified("t", &tail_prog(k, index, false, true), &maps).unwrap();
            Arc::new(JitProgram::compile(&p).unwrap())
        })
        .collect();
    super::link_tail_calls(&progs).unwrap();
    let mut progs = progs.into_iter();
    // A worker made here runs on the other thread.
    let mut entry = JitWorker::new(progs.next().unwrap(), 0);
    drop(progs);
    const RUNS: u64 = 200_000;
    let runner = std::thread::spawn(move || {
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let mut buff = XdpBuff::load(&mut frame, &[0u8; 64]).unwrap();
        let mut seen = [0u64; 3];
        for _ in 0..RUNS {
            let r = entry.run(&mut buff).unwrap();
            assert!((100..=102).contains(&r), "{r}");
            seen[(r - 100) as usize] += 1;
        }
        seen
    });
    let jumps = maps[0].clone();
    let mut updates = 0u64;
    while !runner.is_finished() {
        for id in [2u32, 1, 7] {
            jumps.update_user(&0u32.to_ne_bytes(), &id.to_ne_bytes(), maps::BPF_ANY).unwrap();
        }
        let _ = jumps.delete(&0u32.to_ne_bytes());
        updates += 4;
    }
    let seen = runner.join().unwrap();
    let hits =
        |k: u32| u64::from_ne_bytes(maps[1].lookup_user(&k.to_ne_bytes()).unwrap().try_into().unwrap());
    assert_eq!(hits(0), RUNS);
    assert_eq!((hits(1), hits(2)), (seen[1], seen[2]));
    assert!(updates > 0);
}

/// Packet byte accesses a verified program makes, which the JIT combines (held-back stores
/// written as wider ones, byte loads put together with shifts and ors read as one load): every
/// case against the interpreter, the output frame included — clang's MAC swap, copies whose
/// source and destination overlap either way, a load of bytes a held store wrote, a gather
/// across a store to one of its bytes, two base registers naming the same byte, a byte stored
/// twice.
#[test]
fn combined_packet_accesses_match_the_interpreter() {
    let ldxb = |dst, src, off| i(0x71, dst, src, off, 0);
    let stxb = |dst, src, off| i(0x73, dst, src, off, 0);
    let stb = |dst, off, imm| i(0x72, dst, 0, off, imm);
    // r6 = data; unless 16 bytes are there, r0 = 0; then `body`, and exit with its r0.
    let pkt = |body: &[Insn]| {
        let mut p = vec![
            i(0xb7, 0, 0, 0, 0),
            i(0x61, 6, 1, 0, 0),
            i(0x61, 3, 1, 4, 0),
            i(0xbf, 4, 6, 0, 0),
            i(0x07, 4, 0, 0, 16),
            i(0x2d, 4, 3, body.len() as i16, 0),
        ];
        p.extend_from_slice(body);
        p.push(EXIT);
        assert!(Program::<Xdp>::from_insns_verified("t", &p, &[]).is_ok(), "the verifier accepts {p:?}");
        p
    };
    // clang's MAC swap (xdp_counter.c): bytes 0..6 gathered to the stack, 6..12 copied down
    // byte by byte, then the stack copy scattered into 6..12.
    let swap = [
        ldxb(1, 6, 5),
        i(0x67, 1, 0, 0, 8),
        ldxb(2, 6, 4),
        i(0x4f, 1, 2, 0, 0),
        i(0x6b, 10, 1, -12, 0),
        ldxb(1, 6, 1),
        i(0x67, 1, 0, 0, 8),
        ldxb(2, 6, 0),
        i(0x4f, 1, 2, 0, 0),
        ldxb(2, 6, 2),
        i(0x67, 2, 0, 0, 16),
        ldxb(3, 6, 3),
        i(0x67, 3, 0, 0, 24),
        i(0x4f, 3, 2, 0, 0),
        i(0x4f, 3, 1, 0, 0),
        i(0x63, 10, 3, -16, 0),
        ldxb(1, 6, 8),
        stxb(6, 1, 2),
        ldxb(1, 6, 9),
        stxb(6, 1, 3),
        ldxb(1, 6, 6),
        stxb(6, 1, 0),
        ldxb(1, 6, 7),
        stxb(6, 1, 1),
        ldxb(1, 6, 10),
        stxb(6, 1, 4),
        ldxb(1, 6, 11),
        stxb(6, 1, 5),
        i(0x61, 1, 10, -16, 0),
        i(0xbf, 2, 1, 0, 0),
        i(0x77, 2, 0, 0, 16),
        stxb(6, 2, 8),
        i(0xbf, 2, 1, 0, 0),
        i(0x77, 2, 0, 0, 24),
        stxb(6, 2, 9),
        stxb(6, 1, 6),
        i(0x77, 1, 0, 0, 8),
        stxb(6, 1, 7),
        i(0x69, 1, 10, -12, 0),
        stxb(6, 1, 10),
        i(0x77, 1, 0, 0, 8),
        stxb(6, 1, 11),
        i(0xb7, 0, 0, 0, 3),
    ];
    assert_eq!(run(&pkt(&swap)), 3);
    // Copy down by one (each load reads a byte no earlier store wrote) and up by one (each load
    // reads the byte the store before it wrote).
    let down: Vec<Insn> =
        (0..6).flat_map(|k| [ldxb(1, 6, k + 1), stxb(6, 1, k)]).chain([i(0xbf, 0, 1, 0, 0)]).collect();
    assert_eq!(run(&pkt(&down)), 6);
    let up: Vec<Insn> =
        (0..6).flat_map(|k| [ldxb(1, 6, k), stxb(6, 1, k + 1)]).chain([i(0xbf, 0, 1, 0, 0)]).collect();
    assert_eq!(run(&pkt(&up)), 0);
    // A held byte store read back by a wider load.
    assert_eq!(run(&pkt(&[stb(6, 4, 0xaa), i(0x69, 0, 6, 4, 0)])), 0x05aa);
    // A gather whose second byte is stored between the two loads.
    let gather = [
        ldxb(1, 6, 0),
        stb(6, 1, 7),
        ldxb(2, 6, 1),
        i(0x67, 2, 0, 0, 8),
        i(0x4f, 2, 1, 0, 0),
        i(0xbf, 0, 2, 0, 0),
    ];
    assert_eq!(run(&pkt(&gather)), 0x0700);
    // Two base registers, one byte.
    let alias = [i(0xbf, 7, 6, 0, 0), i(0x07, 7, 0, 0, 2), stb(6, 2, 1), stb(7, 0, 2), ldxb(0, 6, 2)];
    assert_eq!(run(&pkt(&alias)), 2);
    // A 4-byte gather in two halves, stored as a word; a word stored byte by byte with one byte
    // stored twice, read back as a word.
    let word = [
        ldxb(1, 6, 9),
        i(0x67, 1, 0, 0, 8),
        ldxb(2, 6, 8),
        i(0x4f, 1, 2, 0, 0),
        ldxb(3, 6, 11),
        i(0x67, 3, 0, 0, 24),
        ldxb(2, 6, 10),
        i(0x67, 2, 0, 0, 16),
        i(0x4f, 3, 2, 0, 0),
        i(0x4f, 3, 1, 0, 0),
        i(0x63, 6, 3, 0, 0),
        i(0xb7, 1, 0, 0, 0x1122_3344),
        i(0xbf, 2, 1, 0, 0),
        i(0x77, 2, 0, 0, 24),
        stxb(6, 2, 7),
        stxb(6, 1, 4),
        i(0x77, 1, 0, 0, 8),
        stxb(6, 1, 5),
        i(0x77, 1, 0, 0, 8),
        stxb(6, 1, 6),
        stb(6, 5, 0x55),
        i(0x61, 0, 6, 4, 0),
        i(0x61, 1, 6, 0, 0),
        i(0x0f, 0, 1, 0, 0),
    ];
    assert_eq!(run(&pkt(&word)), 0x1122_5544 + 0x0b0a_0908);
}

/// Stack stores a verified function's exit makes dead (no call, jump or other reader before
/// it) are not made, and their loads of exactly their bytes take the stored value: zero-extended
/// to the load's size (an immediate store of -1, a register's low byte), and through a partial
/// load, a sign-extending load, a branch or a helper (which keep the store), the same results.
#[test]
fn stack_stores_dead_at_the_exit_still_reach_their_loads() {
    let exit_with = |body: &[Insn]| {
        let mut p = body.to_vec();
        p.push(EXIT);
        assert!(Program::<Xdp>::from_insns_verified("t", &p, &[]).is_ok(), "the verifier accepts {p:?}");
        run(&p)
    };
    // An immediate -1 stored as a word reads back as 0xffff_ffff.
    assert_eq!(exit_with(&[i(0x62, 10, 0, -4, -1), i(0x61, 0, 10, -4, 0)]), 0xffff_ffff);
    // A register's low byte; the low half of a word (a partial load keeps the store).
    assert_eq!(exit_with(&[i(0xb7, 1, 0, 0, 0x1ff), i(0x73, 10, 1, -1, 0), i(0x71, 0, 10, -1, 0)]), 0xff);
    assert_eq!(
        exit_with(&[i(0xb7, 1, 0, 0, 0x1122_3344), i(0x63, 10, 1, -8, 0), i(0x69, 0, 10, -8, 0)]),
        0x3344
    );
    // A sign-extending load keeps the store.
    assert_eq!(
        exit_with(&[i(0xb7, 1, 0, 0, 0x80), i(0x73, 10, 1, -1, 0), i(0x91, 0, 10, -1, 0)]),
        (-128i64) as u64
    );
    // Two stores to one slot, the second read; a branch between store and load.
    assert_eq!(exit_with(&[i(0x7a, 10, 0, -8, 5), i(0x7a, 10, 0, -8, 7), i(0x79, 0, 10, -8, 0),]), 7);
    assert_eq!(
        exit_with(&[i(0x7a, 10, 0, -8, 9), i(0x61, 2, 1, 0, 0), i(0x15, 2, 0, 0, 0), i(0x79, 0, 10, -8, 0),]),
        9
    );
    // A helper reads the stored key (an array of one u64, key 0 on the stack).
    let maps = map_of(map_type::ARRAY, 4, 8, 1);
    let lookup_key = [
        i(0x62, 10, 0, -4, 0),
        i(0xbf, 2, 10, 0, 0),
        i(0x07, 2, 0, 0, -4),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0x85, 0, 0, 0, id::MAP_LOOKUP_ELEM as i32),
        i(0x15, 0, 0, 1, 0),
        i(0xb7, 0, 0, 0, 42),
        EXIT,
    ];
    assert_eq!(both_with(&lookup_key, &maps, 0), Ok(42));
}

/// A loop of inline array lookups in the manner of clang's: `for (i = 0; i < 6; i++) { key = i;
/// if ((v = lookup(&key))) { *v += i; sum += *v; } }` over a 4-entry array, with `init` before
/// the loop, `head` at the top of its body, `mid` between the lookup and its NULL test and
/// `tail` where both arms meet; returns the sum.
fn key_loop(init: &[Insn], head: &[Insn], mid: &[Insn], tail: &[Insn]) -> Vec<Insn> {
    let mut p = vec![i(0xb7, 6, 0, 0, 0), i(0xb7, 7, 0, 0, 0)];
    p.extend_from_slice(init);
    let top = p.len();
    p.extend_from_slice(head);
    p.extend([
        i(0x63, 10, 6, -4, 0),
        i(0xbf, 2, 10, 0, 0),
        i(0x07, 2, 0, 0, -4),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 0),
        i(0, 0, 0, 0, 0),
        i(0x85, 0, 0, 0, id::MAP_LOOKUP_ELEM as i32),
    ]);
    p.extend_from_slice(mid);
    p.extend([
        i(0x15, 0, 0, 4, 0),
        i(0x79, 1, 0, 0, 0),
        i(0x0f, 1, 6, 0, 0),
        i(0x7b, 0, 1, 0, 0),
        i(0x0f, 7, 1, 0, 0),
    ]);
    p.extend_from_slice(tail);
    p.push(i(0x07, 6, 0, 0, 1));
    let back = top as i64 - (p.len() as i64 + 1);
    p.extend([i(0xa5, 6, 0, back as i16, 6), i(0xbf, 0, 7, 0, 0), EXIT]);
    p
}

/// The key store of a loop's inline array lookup is dead once the lookup took its value: the
/// next iteration stores it again before any read, and the exit ends the frame. Dropped there,
/// the lookups still find their elements; kept wherever something else may read the key — the
/// next iteration's load, a helper reading it through a pointer, a load in a later block.
#[test]
fn loop_array_lookup_keys_dead_after_the_lookup() {
    let arrays = || {
        let mut m = map_of(map_type::ARRAY, 4, 8, 4)();
        m.extend(map_of(map_type::HASH, 4, 8, 8)());
        m
    };
    let check = |p: &[Insn]| {
        assert!(Program::<Xdp>::from_insns_verified("t", p, &arrays()).is_ok(), "the verifier accepts {p:?}");
        both_with(p, &arrays, 0).expect("no fault")
    };
    // Dropped: the values 0..4 are each incremented by their key, then summed.
    assert_eq!(check(&key_loop(&[], &[], &[], &[])), 1 + 2 + 3);
    // Kept: the next iteration reads the previous key (100 before the loop) before storing.
    let prev = [i(0x61, 1, 10, -4, 0), i(0x0f, 7, 1, 0, 0)];
    assert_eq!(check(&key_loop(&[i(0x62, 10, 0, -4, 100)], &prev, &[], &[])), 6 + 100 + 1 + 2 + 3 + 4);
    // Kept: bpf_map_update_elem(hash, &key, &i) reads it after the lookup (the maps are compared).
    let update = [
        i(0xbf, 8, 0, 0, 0),
        i(0x7b, 10, 6, -16, 0),
        i(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, 1),
        i(0, 0, 0, 0, 0),
        i(0xbf, 2, 10, 0, 0),
        i(0x07, 2, 0, 0, -4),
        i(0xbf, 3, 10, 0, 0),
        i(0x07, 3, 0, 0, -16),
        i(0xb7, 4, 0, 0, 0),
        i(0x85, 0, 0, 0, id::MAP_UPDATE_ELEM as i32),
        i(0xbf, 0, 8, 0, 0),
    ];
    assert_eq!(check(&key_loop(&[], &[], &update, &[])), 6);
    // Kept: a load in the block where both arms meet.
    assert_eq!(check(&key_loop(&[], &[], &[], &prev)), 6 + 1 + 2 + 3 + 4 + 5);
}

/// `top: body; r8 -= 1; if r8 != 0 goto top`, `r8 = n` first, `r0` the result.
fn count_loop(n: i32, body: &[Insn]) -> Vec<Insn> {
    let mut p = vec![i(0xb7, 0, 0, 0, 0), i(0xb7, 8, 0, 0, n)];
    let top = p.len();
    p.extend_from_slice(body);
    p.push(i(0x07, 8, 0, 0, -1));
    let back = top as i64 - (p.len() as i64 + 1);
    p.extend([i(0x55, 8, 0, back as i16, 0), EXIT]);
    p
}

/// Short innermost loops are translated twice, the copies taking turns; every shape of loop
/// still gives what the interpreter gives: odd and even trip counts, a loop entered in its
/// middle (as clang lays out `for` loops), one left from its middle, an inner loop unrolled
/// inside an outer one that is not, a loop of an unverified program stopped by the backward
/// jump limit (at the same instruction).
#[test]
fn unrolled_loops_match_the_interpreter() {
    // r0 = r0 * 3 + r8 per iteration: the order of the iterations shows in the result.
    let step = [i(0x27, 0, 0, 0, 3), i(0x0f, 0, 8, 0, 0)];
    for n in 1..=7 {
        let want = (1..=n as u64).rev().fold(0u64, |acc, k| acc * 3 + k);
        assert_eq!(run(&count_loop(n, &step)), want, "{n} iterations");
    }
    // Entered in the middle: `r6 = 0; goto mid; top: r6 += 1; if r6 == 9 goto out; mid:
    // r0 = r0 * 3 + r6; goto top; out:`.
    let middle = [
        i(0xb7, 0, 0, 0, 0),
        i(0xb7, 6, 0, 0, 0),
        i(0x05, 0, 0, 2, 0),
        i(0x07, 6, 0, 0, 1),
        i(0x15, 6, 0, 3, 9),
        i(0x27, 0, 0, 0, 3),
        i(0x0f, 0, 6, 0, 0),
        i(0x05, 0, 0, -5, 0),
        EXIT,
    ];
    assert_eq!(run(&middle), (0..9u64).fold(0, |acc, k| acc * 3 + k));
    // Left in the middle: after the iteration where r8 is 4 (of 10 down to 1), r0 is returned.
    for stop in [4, 5] {
        let body =
            [i(0x27, 0, 0, 0, 3), i(0x0f, 0, 8, 0, 0), i(0x15, 8, 0, 1, stop), i(0x05, 0, 0, 1, 0), EXIT];
        let want = (stop as u64..=10).rev().fold(0u64, |acc, k| acc * 3 + k);
        assert_eq!(run(&count_loop(10, &body)), want, "stop at {stop}");
    }
    // An outer loop of 3 around an inner loop of 1..=3 (r9 down to 1, counting into r0).
    let nested = [
        i(0xb7, 0, 0, 0, 0),
        i(0xb7, 6, 0, 0, 3),
        i(0xbf, 9, 6, 0, 0),
        i(0x27, 0, 0, 0, 5),
        i(0x0f, 0, 9, 0, 0),
        i(0x07, 9, 0, 0, -1),
        i(0x55, 9, 0, -4, 0),
        i(0x07, 6, 0, 0, -1),
        i(0x55, 6, 0, -7, 0),
        EXIT,
    ];
    let inner = |acc: u64, n: u64| (1..=n).rev().fold(acc, |a, k| a * 5 + k);
    assert_eq!(run(&nested), [3u64, 2, 1].into_iter().fold(0, inner));
    // Never ends: the limit on backward jumps stops both engines at the same jump.
    let forever = [i(0x07, 0, 0, 0, 1), i(0x05, 0, 0, -2, 0)];
    let r = both(&forever);
    assert!(matches!(r, Err(Fault::LoopLimit { pc: 1 })), "{r:?}");
}

/// The machine code has a short loop's body twice and a long one's once: a loop around one
/// helper call makes two calls, the same loop with 70 more instructions one.
#[test]
fn short_loops_are_unrolled_and_long_ones_not() {
    let calls = |body: &[Insn]| {
        let p = count_loop(4, body);
        let prog = Program::<Xdp>::from_insns_verified("t", &p, &[]).expect("verifies");
        let text = JitProgram::disassemble(&prog).unwrap();
        // Helper calls are indirect (`call *%rax`); the tail-call entry's direct call is not one.
        text.lines().filter(|l| l.trim_start().starts_with("call") && l.contains('*')).count()
    };
    let call = i(0x85, 0, 0, 0, id::KTIME_GET_NS as i32);
    assert_eq!(calls(&[call]), 2);
    let mut long = vec![call];
    long.extend((0..70).map(|k| i(0xb7, 6, 0, 0, k)));
    assert_eq!(calls(&long), 1);
}

/// Compares of zero-extended 32-bit values (made on 32 bits by the JIT) against immediates and
/// registers: every condition, values with the top bit of the low half set and upper halves
/// that the extension clears; the signed conditions stay 64-bit (`0x8000_0000` zero-extended is
/// positive).
#[test]
fn zero_extended_compares_match_the_interpreter() {
    let conds = [0x15, 0x55, 0x25, 0x35, 0xa5, 0xb5, 0x45, 0x65, 0x75, 0xc5, 0xd5];
    for (hi, lo) in [(1u32, 5u32), (0xffff_ffff, 0x8000_0000), (0x1234, 0xffff_fffe)] {
        for &cond in &conds {
            for imm in [5, 0x7fff_ffff, 0] {
                // The three shapes of a zero extension: shifts, a 32-bit move, a mask register.
                let shapes: [&[Insn]; 3] = [
                    &[i(0x67, 1, 0, 0, 32), i(0x77, 1, 0, 0, 32)],
                    &[i(0xbc, 1, 1, 0, 0)],
                    &[i(0x18, 2, 0, 0, -1), i(0, 0, 0, 0, 0), i(0x5f, 1, 2, 0, 0)],
                ];
                for shape in shapes {
                    let mut p =
                        vec![i(0x18, 1, 0, 0, lo as i32), i(0, 0, 0, 0, hi as i32), i(0xb7, 0, 0, 0, 1)];
                    p.extend_from_slice(shape);
                    p.extend([i(cond, 1, 0, 1, imm), i(0xb7, 0, 0, 0, 2), EXIT]);
                    let want = u64::from(lo);
                    let taken = match cond {
                        0x15 => want == imm as u64,
                        0x55 => want != imm as u64,
                        0x25 => want > imm as u64,
                        0x35 => want >= imm as u64,
                        0xa5 => want < imm as u64,
                        0xb5 => want <= imm as u64,
                        0x45 => want & imm as u64 != 0,
                        0x65 => want as i64 > i64::from(imm),
                        0x75 => want as i64 >= i64::from(imm),
                        0xc5 => (want as i64) < i64::from(imm),
                        _ => want as i64 <= i64::from(imm),
                    };
                    assert_eq!(
                        run(&p),
                        if taken { 1 } else { 2 },
                        "{hi:#x}:{lo:#x} cond {cond:#x} imm {imm:#x}"
                    );
                }
                // Register against register, both zero-extended.
                let p = [
                    i(0x18, 1, 0, 0, lo as i32),
                    i(0, 0, 0, 0, hi as i32),
                    i(0xbc, 1, 1, 0, 0),
                    i(0x18, 3, 0, 0, imm),
                    i(0, 0, 0, 0, hi as i32),
                    i(0xbc, 3, 3, 0, 0),
                    i(0xb7, 0, 0, 0, 1),
                    i(cond | 0x08, 1, 3, 1, 0),
                    i(0xb7, 0, 0, 0, 2),
                    EXIT,
                ];
                run(&p);
            }
        }
    }
}

/// A program allowed to read stack bytes it never wrote (as the kernel allows a privileged
/// loader) sees what the previous call at the same depth left there: a store before that
/// call's exit is kept, in the same block as the exit or in an earlier one. (A second pair of
/// eyes on the dead-store change found this.)
#[test]
fn stores_before_an_exit_stay_when_a_later_frame_reads_uninitialized_bytes() {
    // f: *(u64 *)(r10 - 8) = 7, then exit in the same block, or two blocks later.
    let f_same = [i(0xb7, 1, 0, 0, 7), i(0x7b, 10, 1, -8, 0), i(0xb7, 0, 0, 0, 0), EXIT];
    let f_later =
        [i(0xb7, 1, 0, 0, 7), i(0x7b, 10, 1, -8, 0), i(0xb7, 0, 0, 0, 0), i(0x15, 0, 0, 0, 0), EXIT];
    for f in [&f_same[..], &f_later[..]] {
        // main: call f; call g; exit. g: return *(u64 *)(r10 - 8), never written by g.
        let g_at = 3 + f.len() as i32;
        let mut p = vec![i(0x85, 0, BPF_PSEUDO_CALL, 0, 2), i(0x85, 0, BPF_PSEUDO_CALL, 0, g_at - 2), EXIT];
        p.extend_from_slice(f);
        p.extend([i(0x79, 0, 10, -8, 0), EXIT]);
        let verified = Program::<Xdp>::from_insns_verified("t", &p, &[]).expect("the verifier accepts");
        assert!(verified.verified().is_some_and(|v| v.reads_uninit_stack));
        assert_eq!(both(&p), Ok(7));
    }
}
