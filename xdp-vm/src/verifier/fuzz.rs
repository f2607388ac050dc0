//! Seeded random tests of the verifier: it never panics on arbitrary bytecode, and programs it
//! accepts never trip the interpreter's run-time checks.

use std::sync::Arc;

use maps::{Map, MapDef, map_type};

use super::{ProgramType, verify};
use crate::context::{XDP_FRAME_SIZE, Xdp, XdpBuff};
use crate::insn::*;
use crate::interp::{Fault, Interpreter};
use crate::program::{Program, map_infos};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Opcodes the generators draw from: every class, valid and not.
const CODES: &[u8] = &[
    0x07, 0x0f, 0x17, 0x1f, 0x27, 0x2f, 0x37, 0x3f, 0x47, 0x4f, 0x57, 0x5f, 0x67, 0x6f, 0x77, 0x7f, 0x87,
    0x97, 0x9f, 0xa7, 0xaf, 0xb7, 0xbf, 0xc7, 0xcf, 0xd4, 0xdc, 0xd7, 0x04, 0x0c, 0x14, 0x1c, 0x24, 0x34,
    0x44, 0x54, 0x64, 0x74, 0x84, 0x94, 0xa4, 0xb4, 0xbc, 0xc4, 0x05, 0x15, 0x1d, 0x25, 0x2d, 0x35, 0x3d,
    0x45, 0x4d, 0x55, 0x5d, 0x65, 0x6d, 0x75, 0x7d, 0xa5, 0xad, 0xb5, 0xbd, 0xc5, 0xcd, 0xd5, 0xdd, 0x16,
    0x1e, 0x26, 0x2e, 0xa6, 0xae, 0x06, 0x85, 0x95, 0x61, 0x69, 0x71, 0x79, 0x81, 0x89, 0x91, 0x62, 0x6a,
    0x72, 0x7a, 0x63, 0x6b, 0x73, 0x7b, 0xc3, 0xdb, 0x18, 0x00, 0xff, 0x20,
];

fn random_insn(r: &mut Rng, len: usize) -> Insn {
    let code = r.pick(CODES);
    let dst = if r.below(8) == 0 { r.below(16) as u8 } else { r.below(11) as u8 };
    let src = if code == 0x18 {
        r.pick(&[0, 0, 5, 6, 1, 4])
    } else if code == 0x85 {
        r.pick(&[0, 0, 0, 1, 2])
    } else {
        r.below(11) as u8
    };
    let off = match code & 0x07 {
        BPF_JMP | BPF_JMP32 => r.below(len as u64 + 4) as i16 - (len as i16 / 2),
        BPF_LDX | BPF_ST | BPF_STX => r.pick(&[0i16, -8, -16, -512, -4, 8, 12, 14, 34, 1, 2]),
        _ => r.pick(&[0i16, 0, 0, 1, 8, 16, 32]),
    };
    let imm = match code {
        0x85 => r.pick(&[1, 2, 3, 5, 6, 7, 8, 28, 44, 54, 65, 177, 164, 181, 9999, -1, 1]),
        0xc3 | 0xdb => r.pick(&[0, 1, 0x40, 0x41, 0x50, 0xa0, 0xe1, 0xf1, 7]),
        0xd4 | 0xdc | 0xd7 => r.pick(&[16, 32, 64, 8]),
        _ => r.pick(&[0, 1, -1, 4, 8, 14, 63, 64, 255, 4096, i32::MIN, i32::MAX]),
    };
    Insn::new(code, dst, src, off, imm)
}

fn maps() -> Vec<Arc<Map>> {
    let array =
        MapDef { map_type: map_type::ARRAY, key_size: 4, value_size: 16, max_entries: 4, map_flags: 0 };
    let hash = MapDef { map_type: map_type::HASH, key_size: 4, value_size: 8, max_entries: 8, map_flags: 0 };
    vec![
        Arc::new(Map::new("array", array, 1).expect("array map")),
        Arc::new(Map::new("hash", hash, 1).expect("hash map")),
    ]
}

/// How long a fuzz test runs: its fixed count of cases, or with `XDP_VM_FUZZ_SECS=N` (a long
/// run, in release: `cargo test --release -p xdp-vm verifier::fuzz -- --nocapture`) new cases
/// for N seconds, the seed moving on each round.
fn budget(cases: usize) -> impl FnMut(usize) -> bool {
    let secs: Option<u64> = std::env::var("XDP_VM_FUZZ_SECS").ok().and_then(|s| s.parse().ok());
    let start = std::time::Instant::now();
    move |done| match secs {
        Some(s) => start.elapsed().as_secs() < s,
        None => done < cases,
    }
}

#[test]
fn never_panics_on_arbitrary_bytecode() {
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let infos = map_infos(&maps());
    let mut more = budget(40_000);
    let mut runs = 0;
    let mut accepted = 0;
    while more(runs) {
        runs += 1;
        let len = 1 + r.below(24) as usize;
        let mut insns: Vec<Insn> = (0..len).map(|_| random_insn(&mut r, len)).collect();
        if r.below(2) == 0 {
            insns.push(Insn::new(0xb7, 0, 0, 0, 2));
            insns.push(Insn::new(0x95, 0, 0, 0, 0));
        }
        if verify(&insns, &infos, ProgramType::Xdp).is_ok() {
            accepted += 1;
        }
    }
    eprintln!("verifier on arbitrary bytecode: {runs} executions, {accepted} accepted, no panic");
}

/// A program that reads a packet bounds-checked against a random length, does random scalar
/// work, touches the stack and a map value: the shapes verified programs have, with random
/// mistakes (wrong lengths and offsets, missing checks) sprinkled in.
fn plausible_program(r: &mut Rng) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(0x61, 2, 1, 0, 0), // r2 = data
        Insn::new(0x61, 3, 1, 4, 0), // r3 = data_end
        Insn::new(0xbf, 6, 1, 0, 0), // r6 = ctx
        Insn::new(0xbf, 4, 2, 0, 0), // r4 = data
    ];
    let checked = r.pick(&[0, 8, 14, 20, 34, 60]);
    p.push(Insn::new(0x07, 4, 0, 0, checked));
    p.push(Insn::new(0xb7, 7, 0, 0, 0));
    p.push(Insn::new(0xb7, 8, 0, 0, 1));
    // if r4 > r3 goto out (patched below).
    let check_at = p.len();
    p.push(Insn::new(0x2d, 4, 3, 0, 0));
    for _ in 0..r.below(24) {
        let off = r.pick(&[0i16, 1, 2, 6, 12, 13, 14, 20, 30, 33, 40]);
        let size = r.pick(&[0x61u8, 0x69, 0x71, 0x79]);
        match r.below(9) {
            0 => p.push(Insn::new(size, 7, 2, off, 0)),
            1 => p.push(Insn::new(r.pick(&[0x0f, 0x1f, 0x2f, 0x5f, 0x4f, 0xaf, 0x3f, 0x9f]), 7, 8, 0, 0)),
            2 => p.push(Insn::new(
                r.pick(&[0x07, 0x57, 0x77, 0x67, 0xb7, 0x04, 0x54]),
                r.pick(&[7, 8]),
                0,
                0,
                r.pick(&[1, 3, 15, 255, -1]),
            )),
            3 => {
                // r5 = data + (r7 & mask); bounds-checked or not.
                p.push(Insn::new(0xbf, 9, 7, 0, 0));
                p.push(Insn::new(0x57, 9, 0, 0, r.pick(&[7, 15, 255])));
                p.push(Insn::new(0xbf, 5, 2, 0, 0));
                p.push(Insn::new(0x0f, 5, 9, 0, 0));
                if r.below(3) != 0 {
                    p.push(Insn::new(0xbf, 0, 5, 0, 0));
                    p.push(Insn::new(0x07, 0, 0, 0, 1));
                    p.push(Insn::new(0x2d, 0, 3, 1, 0));
                }
                p.push(Insn::new(0x71, 8, 5, 0, 0));
            }
            4 => p.push(Insn::new(
                r.pick(&[0x7b, 0x63, 0x73]),
                10,
                r.pick(&[7, 8, 2]),
                r.pick(&[-8, -16, -24, -4]),
                0,
            )),
            5 => {
                p.push(Insn::new(r.pick(&[0x79, 0x61]), r.pick(&[7, 8]), 10, r.pick(&[-8, -16, -24, -4]), 0))
            }
            6 => {
                // Map lookup of key *(fp-8), maybe null-checked, then an access.
                p.push(Insn::new(0x7b, 10, 7, -8, 0));
                p.push(Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, r.below(2) as i32));
                p.push(Insn::new(0, 0, 0, 0, 0));
                p.push(Insn::new(0xbf, 2, 10, 0, 0));
                p.push(Insn::new(0x07, 2, 0, 0, -8));
                p.push(Insn::new(0x85, 0, 0, 0, 1));
                let skip = r.below(4) != 0;
                if skip {
                    p.push(Insn::new(0x15, 0, 0, 1, 0));
                }
                let off = r.pick(&[0, 8, 12, 16]);
                match r.pick(&[0x79u8, 0x7b, 0x61]) {
                    0x7b => p.push(Insn::new(0x7b, 0, 8, off, 0)),
                    code => p.push(Insn::new(code, 8, 0, off, 0)),
                }
                // Reload the packet pointers the call clobbered.
                p.push(Insn::new(0x61, 2, 6, 0, 0));
                p.push(Insn::new(0x61, 3, 6, 4, 0));
                p.push(Insn::new(0xbf, 4, 2, 0, 0));
                p.push(Insn::new(0x07, 4, 0, 0, checked));
                p.push(Insn::new(0xbd, 4, 3, 2, 0));
                p.push(Insn::new(0xb7, 0, 0, 0, 1));
                p.push(Insn::new(0x95, 0, 0, 0, 0));
            }
            7 => {
                // A bounded loop on r9.
                p.push(Insn::new(0xb7, 9, 0, 0, 0));
                p.push(Insn::new(0x0f, 8, 9, 0, 0));
                p.push(Insn::new(0x07, 9, 0, 0, 1));
                p.push(Insn::new(0xa5, 9, 0, -3, r.pick(&[4, 16, 100])));
            }
            _ => p.push(Insn::new(size, 8, 2, off, 0)),
        }
    }
    p.push(Insn::new(0xbf, 0, 7, 0, 0));
    p.push(Insn::new(0x57, 0, 0, 0, 3));
    p.push(Insn::new(0x95, 0, 0, 0, 0));
    let out = p.len() - 3;
    p[check_at].off = (out - check_at - 1) as i16;
    if r.below(3) == 0 {
        callback_call(r, &mut p);
    }
    p
}

/// Inserts, before the program's final `r0 = r7 & 3; exit`, a `bpf_loop` or
/// `bpf_for_each_map_elem` call with a context on the stack (or NULL) and random flags and
/// counts, then appends the callback: stack accesses through the context at offsets from its
/// index (masked or not), key and value accesses at random offsets, a random return value.
fn callback_call(r: &mut Rng, p: &mut Vec<Insn>) {
    let for_each = r.below(2) == 0;
    let mut call = vec![
        Insn::new(0x7b, 10, 7, -8, 0),  // *(fp-8) = r7
        Insn::new(0x7b, 10, 8, -16, 0), // *(fp-16) = r8
    ];
    if for_each {
        call.push(Insn::new(0x18, 1, BPF_PSEUDO_MAP_IDX, 0, r.below(2) as i32));
        call.push(Insn::new(0, 0, 0, 0, 0));
    } else {
        call.push(Insn::new(0xb7, 1, 0, 0, r.pick(&[0, 1, 3, 17, (1 << 23) + 1, -1])));
    }
    let func_at = call.len();
    call.push(Insn::new(0x18, 2, BPF_PSEUDO_FUNC, 0, 0)); // patched below
    call.push(Insn::new(0, 0, 0, 0, 0));
    if r.below(5) == 0 {
        call.push(Insn::new(0xb7, 3, 0, 0, 0));
    } else {
        call.push(Insn::new(0xbf, 3, 10, 0, 0));
        call.push(Insn::new(0x07, 3, 0, 0, r.pick(&[-16, -16, -16, -8, -4])));
    }
    call.push(Insn::new(0xb7, 4, 0, 0, r.pick(&[0, 0, 0, 1])));
    call.push(Insn::new(0x85, 0, 0, 0, if for_each { 164 } else { 181 }));
    call.push(Insn::new(0x79, 7, 10, -8, 0)); // r7 = *(fp-8)
    call.push(Insn::new(0x0f, 7, 0, 0, 0)); // r7 += r0
    let at = p.len() - 3;
    let n = call.len();
    p.splice(at..at, call);
    // Jumps that cross the insertion point (the bounds check to the end) grow by `n`.
    for (pc, insn) in p.iter_mut().enumerate().take(at) {
        let class = insn.code & 0x07;
        if (class == BPF_JMP || class == BPF_JMP32) && !matches!(insn.code & 0xf0, BPF_CALL | BPF_EXIT) {
            let target = pc as i64 + 1 + i64::from(insn.off);
            if target >= at as i64 {
                insn.off += n as i16;
            }
        }
    }
    let cb = p.len();
    let lddw = at + func_at;
    p[lddw].imm = (cb - lddw - 1) as i32;
    let ctx = if for_each { 4 } else { 2 };
    p.push(Insn::new(0xb7, 0, 0, 0, 0));
    for _ in 0..1 + r.below(4) {
        match r.below(if for_each { 6 } else { 4 }) {
            0 => p.push(Insn::new(r.pick(&[0x79u8, 0x61, 0x71]), 0, ctx, r.pick(&[0, 4, 8, 12, 16, -8]), 0)),
            1 => {
                // ctx[index & mask]
                p.push(Insn::new(0xbf, 5, 1, 0, 0));
                if !for_each {
                    p.push(Insn::new(0x57, 5, 0, 0, r.pick(&[7, 15, 31])));
                } else {
                    p.push(Insn::new(0xb7, 5, 0, 0, r.pick(&[0, 7, 15, 17])));
                }
                p.push(Insn::new(0xbf, 6, ctx, 0, 0));
                p.push(Insn::new(0x0f, 6, 5, 0, 0));
                p.push(Insn::new(r.pick(&[0x71u8, 0x73]), 6, 0, 0, 0));
            }
            2 => p.push(Insn::new(r.pick(&[0x7bu8, 0x63]), ctx, 0, r.pick(&[0, 8, 12, 16]), 0)),
            3 => p.push(Insn::new(0x07, 0, 0, 0, 1)),
            4 => p.push(Insn::new(r.pick(&[0x61u8, 0x71, 0x63]), 0, 2, r.pick(&[0, 1, 4]), 0)),
            _ => p.push(Insn::new(r.pick(&[0x79u8, 0x7b, 0x61]), 0, 3, r.pick(&[0, 8, 12, 16]), 0)),
        }
    }
    match r.below(4) {
        0 => p.push(Insn::new(0x57, 0, 0, 0, 1)),
        1 => p.push(Insn::new(0xb7, 0, 0, 0, r.pick(&[0, 1, 2]))),
        _ => p.push(Insn::new(0xb7, 0, 0, 0, 0)),
    }
    p.push(Insn::new(0x95, 0, 0, 0, 0));
}

#[test]
fn accepted_programs_never_fault() {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    let maps = maps();
    let mut vm = Interpreter::new();
    let (mut programs, mut accepted, mut runs, mut with_callback) = (0, 0, 0, 0);
    let mut more = budget(3000);
    while more(programs) {
        let insns = plausible_program(&mut r);
        programs += 1;
        let prog = match Program::<Xdp>::from_insns_verified("fuzz", &insns, &maps) {
            Ok(p) => p,
            Err(e) => {
                if programs < 5 {
                    eprintln!("rejected: {e}");
                }
                continue;
            }
        };
        accepted += 1;
        with_callback += usize::from(insns.iter().any(|i| i.is_lddw() && i.src == BPF_PSEUDO_FUNC));
        for len in [14usize, 20, 34, 60, 64, 98, 200] {
            let packet: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
            let mut frame = vec![0u8; XDP_FRAME_SIZE];
            let mut buff = XdpBuff::load(&mut frame, &packet).expect("frame");
            runs += 1;
            if let Err(f) = vm.run(&prog, &mut buff, 0) {
                assert!(
                    !matches!(
                        f,
                        Fault::Memory { .. }
                            | Fault::Atomic { .. }
                            | Fault::NotAMap { .. }
                            | Fault::HelperArgument { .. }
                            | Fault::LoopLimit { .. }
                    ),
                    "verified program faulted: {f}\n{insns:?}"
                );
            }
        }
    }
    eprintln!(
        "{programs} random programs, {accepted} verified ({with_callback} with a callback), {runs} interpreter \
         runs, no fault"
    );
    assert!(accepted > 100, "the generator should produce verifiable programs ({accepted})");
    assert!(with_callback > 20, "the generator should produce verifiable callbacks ({with_callback})");
}
