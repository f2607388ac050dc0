//! Seeded random programs through the interpreter and the JIT: the same return value (or the
//! same fault), the same output frame, the same map contents.
//!
//! Programs mix every ALU operation (64 and 32 bits, immediate and register, division by zero
//! included), stack and packet loads and stores of every width (sign-extending too), atomics,
//! forward JMP/JMP32 branches, bounded backward loops (do-while, and `for` entered in its middle
//! with two backward jumps), map lookups/updates/deletes on an
//! array, a per-CPU array and a hash map (with accesses through the returned pointers),
//! helpers, a bpf-to-bpf call, and `bpf_loop` with a callback that writes the caller's stack; a few accesses are deliberately out of bounds, so faults are
//! compared too. Registers: r6 holds the context, r7 the packet start, r8 the loop counter; the
//! others are scratch. Stack slots `r10 - 64 .. r10` are initialized first, so nothing reads
//! uninitialized memory (where the engines may legitimately differ).
//!
//! The verified run generates only accesses a verifier can prove and keeps the programs ours
//! accepts (about half): there the JIT trusts the verifier's facts (unchecked accesses, inline
//! map lookups) while the interpreter still checks everything, and none may fault.
//!
//! `JIT_FUZZ_PROGRAMS` (default 400) and `JIT_FUZZ_SEED` choose the run; `JIT_FUZZ_WHY` prints
//! why the verifier refused each program it refused.

use std::sync::Arc;

use maps::{Map, MapDef, map_type};

use super::JitProgram;
use super::tests::{sorted_entries, without_addr};
use crate::context::{XDP_FRAME_SIZE, Xdp, XdpBuff};
use crate::insn::*;
use crate::interp::Interpreter;
use crate::program::Program;

/// xorshift64; `.1`: generate only accesses a verifier can prove (no deliberate faults, no
/// unchecked packet accesses), for the verified-program run.
struct Rng(u64, bool);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn imm(&mut self) -> i32 {
        match self.below(4) {
            0 => self.pick(&[0, 1, -1, 2, 7, 31, 32, 63, 64, i32::MIN, i32::MAX, 0x7fff, -0x8000]),
            1 => self.below(64) as i32,
            _ => self.next() as i32,
        }
    }
}

const SCRATCH: [u8; 7] = [0, 1, 2, 3, 4, 5, 9];
const EXIT: Insn = Insn::new(0x95, 0, 0, 0, 0);

/// A program under construction: items are one instruction, or a forward jump to a later
/// label, resolved to slot offsets at the end.
#[derive(Default)]
struct Gen {
    insns: Vec<Insn>,
    /// (instruction index, label) of jumps to patch.
    fixups: Vec<(usize, usize)>,
    labels: Vec<Option<usize>>,
}

impl Gen {
    fn push(&mut self, i: Insn) {
        self.insns.push(i);
    }
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }
    fn place(&mut self, l: usize) {
        self.labels[l] = Some(self.insns.len());
    }
    fn jump(&mut self, i: Insn, l: usize) {
        self.fixups.push((self.insns.len(), l));
        self.push(i);
    }
    fn finish(mut self) -> Vec<Insn> {
        for (at, l) in self.fixups {
            let target = self.labels[l].expect("placed label");
            self.insns[at].off = (target as i64 - at as i64 - 1) as i16;
        }
        self.insns
    }
}

fn map_lddw(g: &mut Gen, dst: u8, map: i32) {
    g.push(Insn::new(0x18, dst, BPF_PSEUDO_MAP_IDX, 0, map));
    g.push(Insn::new(0, 0, 0, 0, 0));
}

fn alu(r: &mut Rng, g: &mut Gen) {
    let wide = r.chance(50);
    let class = if wide { BPF_ALU64 } else { BPF_ALU };
    let dst = r.pick(&SCRATCH);
    let src = r.pick(&SCRATCH);
    let ops = [
        BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_NEG, BPF_MOD, BPF_XOR,
        BPF_MOV, BPF_ARSH, BPF_END,
    ];
    let op = r.pick(&ops);
    let x = r.chance(50);
    let mut off = 0;
    let mut imm = r.imm();
    match op {
        BPF_DIV | BPF_MOD => off = if r.chance(50) { 1 } else { 0 },
        BPF_MOV if x => off = r.pick(&if wide { [0, 8, 16, 32] } else { [0, 8, 16, 0] }),
        BPF_NEG => {
            g.push(Insn::new(class | op, dst, 0, 0, 0));
            return;
        }
        BPF_END => {
            imm = r.pick(&[16, 32, 64]);
            let code = if wide {
                BPF_ALU64 | BPF_END
            } else {
                BPF_ALU | BPF_END | if r.chance(50) { BPF_TO_BE } else { BPF_TO_LE }
            };
            g.push(Insn::new(code, dst, 0, 0, imm));
            return;
        }
        _ => {}
    }
    if x {
        g.push(Insn::new(class | op | BPF_X, dst, src, off, 0));
    } else {
        g.push(Insn::new(class | op, dst, 0, off, imm));
    }
}

fn size_code(size: u8) -> u8 {
    match size {
        1 => BPF_B,
        2 => BPF_H,
        4 => BPF_W,
        _ => BPF_DW,
    }
}

/// A load or store on the stack (r10 or a copy) or the packet (r7).
fn mem(r: &mut Rng, g: &mut Gen) {
    let size = r.pick(&[1u8, 2, 4, 8]);
    let safe = r.1;
    let (base, off) = if safe || r.chance(60) {
        // Through r10, or through a copy in r9 (which the facts cannot follow).
        let base = if r.chance(70) { 10 } else { 9 };
        if base == 9 {
            g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 9, 10, 0, 0));
        }
        let off = if safe {
            -i16::from(size) * (1 + r.below(64 / u64::from(size)) as i16)
        } else {
            -(r.below(64 - u64::from(size) + 1) as i16) - i16::from(size)
        };
        // Out of bounds: below the whole run stack (the frames and the callbacks' key area;
        // just below the frames is the key area, in bounds and never initialized).
        (base, if !safe && r.chance(3) { off - super::call::STACK_BYTES as i16 } else { off })
    } else {
        let off = r.below(64 - u64::from(size) + 1) as i16;
        (7, if r.chance(3) { off + 100 } else { off })
    };
    let sc = size_code(size);
    // r9 may hold an address here: never store it or fold it in.
    let regs: &[u8] = if base == 9 { &SCRATCH[..6] } else { &SCRATCH };
    match r.below(4) {
        0 => {
            let signed = size < 8 && r.chance(30);
            let mode = if signed { BPF_MEMSX } else { BPF_MEM };
            g.push(Insn::new(BPF_LDX | mode | sc, r.pick(regs), base, off, 0));
        }
        1 => g.push(Insn::new(BPF_ST | BPF_MEM | sc, base, 0, off, r.imm())),
        2 => g.push(Insn::new(BPF_STX | BPF_MEM | sc, base, r.pick(regs), off, 0)),
        _ => {
            // Atomics (on the stack mostly), aligned unless the dice say otherwise.
            let wide = r.chance(50);
            let asize: i16 = if wide { 8 } else { 4 };
            let (base, off) = if base == 7 {
                (7, (off / asize) * asize)
            } else {
                (10, -asize * (1 + r.below(64 / asize as u64) as i16))
            };
            let off = if !safe && r.chance(3) { off + 1 } else { off };
            let imm = r.pick(&[0x00, 0x40, 0x50, 0xa0, 0x01, 0x41, 0x51, 0xa1, BPF_XCHG, BPF_CMPXCHG]);
            let src = r.pick(&[1, 2, 3, 4, 5]);
            g.push(Insn::new(BPF_STX | BPF_ATOMIC | if wide { BPF_DW } else { BPF_W }, base, src, off, imm));
        }
    }
    if base == 9 {
        g.push(Insn::new(BPF_ALU64 | BPF_MOV, 9, 0, 0, 9));
    }
}

fn branch(r: &mut Rng, g: &mut Gen, depth: u32) {
    let ops = [
        BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT,
        BPF_JSLE,
    ];
    let class = if r.chance(50) { BPF_JMP } else { BPF_JMP32 };
    let op = r.pick(&ops);
    let skip = g.label();
    let jump = if r.chance(50) {
        Insn::new(class | op | BPF_X, r.pick(&SCRATCH), r.pick(&SCRATCH), 0, 0)
    } else {
        Insn::new(class | op, r.pick(&SCRATCH), 0, 0, r.imm())
    };
    g.jump(jump, skip);
    let n = 1 + r.below(4) as usize;
    block(r, g, n, depth + 1);
    g.place(skip);
}

/// `r8 = n; do { body } while (--r8 != 0)`: backward jumps, bounded. Or, half the time, a loop
/// laid out as clang lays out `for`: entered in its middle, left from its middle, with two
/// backward jumps (`r8 = n; goto mid; top: body; mid: if (--r8 == 0) goto out; if (r8 & 1) goto
/// top; body; goto top; out:`), the shape the JIT's unrolling must keep.
fn lp(r: &mut Rng, g: &mut Gen, depth: u32) {
    g.push(Insn::new(BPF_ALU64 | BPF_MOV, 8, 0, 0, 1 + r.below(5) as i32));
    if r.chance(50) {
        let (top, mid, out) = (g.label(), g.label(), g.label());
        g.jump(Insn::new(BPF_JMP | BPF_JA, 0, 0, 0, 0), mid);
        g.place(top);
        let n = 1 + r.below(3) as usize;
        block(r, g, n, depth + 1);
        g.place(mid);
        g.push(Insn::new(BPF_ALU64 | BPF_ADD, 8, 0, 0, -1));
        g.jump(Insn::new(BPF_JMP | BPF_JEQ, 8, 0, 0, 0), out);
        g.jump(Insn::new(BPF_JMP | BPF_JSET, 8, 0, 0, 1), top);
        let n = 1 + r.below(3) as usize;
        block(r, g, n, depth + 1);
        g.jump(Insn::new(BPF_JMP | BPF_JA, 0, 0, 0, 0), top);
        g.place(out);
        return;
    }
    let top = g.insns.len();
    let n = 1 + r.below(4) as usize;
    block(r, g, n, depth + 1);
    g.push(Insn::new(BPF_ALU64 | BPF_ADD, 8, 0, 0, -1));
    let back = top as i64 - g.insns.len() as i64 - 1;
    g.push(Insn::new(BPF_JMP | BPF_JNE, 8, 0, back as i16, 0));
}

/// A map operation: key in stack slot r10-8 (u32), value at r10-24 (8 bytes).
fn map_op(r: &mut Rng, g: &mut Gen) {
    let map = r.below(3) as i32;
    let key = if r.chance(70) { r.below(6) as i32 } else { r.imm() };
    g.push(Insn::new(BPF_ST | BPF_MEM | BPF_W, 10, 0, -8, key));
    g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 2, 10, 0, 0));
    g.push(Insn::new(BPF_ALU64 | BPF_ADD, 2, 0, 0, -8));
    map_lddw(g, 1, map);
    match r.below(4) {
        0 | 1 => {
            g.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, 1));
            let null = g.label();
            g.jump(Insn::new(BPF_JMP | BPF_JEQ, 0, 0, 0, 0), null);
            let off = r.pick(&[0i16, 4, 8]);
            match r.below(3) {
                0 => g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_W, r.pick(&SCRATCH[1..]), 0, off, 0)),
                1 => g.push(Insn::new(BPF_STX | BPF_MEM | BPF_W, 0, r.pick(&[1, 3, 4, 5]), off, 0)),
                _ => g.push(Insn::new(BPF_STX | BPF_ATOMIC | BPF_W, 0, 3, off, 0x01)),
            }
            g.place(null);
        }
        2 => {
            g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0));
            g.push(Insn::new(BPF_ALU64 | BPF_ADD, 3, 0, 0, -24));
            g.push(Insn::new(BPF_ALU64 | BPF_MOV, 4, 0, 0, r.below(5) as i32));
            g.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, 2));
        }
        _ => g.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, 3)),
    }
    scrub(g);
}

/// Addresses differ between the engines' runs: keep them out of the compared values
/// (r0 becomes "was it non-NULL", r1-r3 constants).
fn scrub(g: &mut Gen) {
    g.push(Insn::new(BPF_JMP | BPF_JEQ, 0, 0, 1, 0));
    g.push(Insn::new(BPF_ALU64 | BPF_MOV, 0, 0, 0, 1));
    // (r4 and r5 too: a helper call leaves them unreadable, as far as a verifier knows.)
    for reg in 1..=5 {
        g.push(Insn::new(BPF_ALU64 | BPF_MOV, reg, 0, 0, i32::from(reg) * 1000));
    }
}

fn block(r: &mut Rng, g: &mut Gen, n: usize, depth: u32) {
    for _ in 0..n {
        match r.below(21) {
            0..=7 => alu(r, g),
            8..=12 => mem(r, g),
            13 | 14 if depth < 2 => branch(r, g, depth),
            15 if depth == 0 => lp(r, g, depth),
            16 | 17 if depth == 0 => map_op(r, g),
            18 => {
                let id = r.pick(&[8, 44, 65]);
                if id != 8 {
                    g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 1, 6, 0, 0));
                    g.push(Insn::new(BPF_ALU64 | BPF_MOV, 2, 0, 0, r.pick(&[-300, -14, -4, 0, 4, 14, 40])));
                }
                g.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, id));
                // The packet may have moved: reload its start.
                g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_W, 7, 6, 0, 0));
                for reg in 1..=5 {
                    g.push(Insn::new(BPF_ALU64 | BPF_MOV, reg, 0, 0, 77 * i32::from(reg)));
                }
            }
            20 if depth == 0 => {
                // bpf_loop(nr, callback, r10 - 16, flags): the callback (after the subprogram)
                // adds its index into the caller's stack slot through the context pointer and
                // stops the loop at index 5. r0 is the number of calls (or an error).
                let nr = if r.1 { r.pick(&[0, 1, 2, 4, 9]) } else { r.pick(&[0, 1, 3, 9, -1]) };
                g.push(Insn::new(BPF_ALU64 | BPF_MOV, 1, 0, 0, nr));
                g.fixups.push((g.insns.len(), CALLBACK));
                g.push(Insn::new(0x18, 2, BPF_PSEUDO_FUNC, 0, 0));
                g.push(Insn::new(0, 0, 0, 0, 0));
                g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 3, 10, 0, 0));
                g.push(Insn::new(BPF_ALU64 | BPF_ADD, 3, 0, 0, -16));
                let flags = if r.1 || r.chance(80) { 0 } else { 1 };
                g.push(Insn::new(BPF_ALU64 | BPF_MOV, 4, 0, 0, flags));
                g.push(Insn::new(BPF_JMP | BPF_CALL, 0, 0, 0, crate::helpers::id::LOOP as i32));
                for reg in 1..=5 {
                    g.push(Insn::new(BPF_ALU64 | BPF_MOV, reg, 0, 0, r.imm()));
                }
            }
            19 if depth == 0 => {
                // A bpf-to-bpf call; the callee's r1-r5 are not the caller's afterwards.
                g.push(Insn::new(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_CALL, 0, 0));
                g.fixups.push((g.insns.len() - 1, usize::MAX));
                for reg in 1..=5 {
                    g.push(Insn::new(BPF_ALU64 | BPF_MOV, reg, 0, 0, r.imm()));
                }
            }
            _ => alu(r, g),
        }
    }
}

fn program(r: &mut Rng) -> Vec<Insn> {
    let mut g = Gen::default();
    g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 6, 1, 0, 0));
    g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_W, 7, 6, 0, 0));
    for s in 1..=8 {
        g.push(Insn::new(BPF_ST | BPF_MEM | BPF_DW, 10, 0, -8 * s, r.imm()));
    }
    for reg in SCRATCH {
        if reg == 9 || r.chance(80) {
            g.push(Insn::new(BPF_ALU64 | BPF_MOV, reg, 0, 0, r.imm()));
        } else {
            g.push(Insn::new(0x18, reg, 0, 0, r.imm()));
            g.push(Insn::new(0, 0, 0, 0, r.imm()));
        }
    }
    g.push(Insn::new(BPF_ALU64 | BPF_MOV, 8, 0, 0, 0));
    let n = 4 + r.below(28) as usize;
    block(r, &mut g, n, 0);
    // Fold the scratch registers and the stack into r0.
    for reg in [1, 2, 3, 4, 5, 9] {
        g.push(Insn::new(BPF_ALU64 | BPF_XOR | BPF_X, 0, reg, 0, 0));
    }
    for s in 1..=8 {
        g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 1, 10, -8 * s, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_ADD | BPF_X, 0, 1, 0, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_MUL, 0, 0, 0, 31));
    }
    g.push(EXIT);
    // The subprogram: r0 from r1-r5, its own stack (left out when nothing calls it and the
    // program is for the verifier, which refuses unreachable code).
    let refs =
        |g: &Gen, label| g.fixups.iter().filter(|(_, l)| *l == label).map(|(at, _)| *at).collect::<Vec<_>>();
    let (calls, loops) = (refs(&g, usize::MAX), refs(&g, CALLBACK));
    g.fixups.retain(|(_, l)| *l < CALLBACK);
    if !calls.is_empty() || !r.1 {
        let sub = g.insns.len();
        for at in calls {
            g.insns[at].imm = (sub as i64 - at as i64 - 1) as i32;
        }
        g.push(Insn::new(BPF_ALU64 | BPF_MOV | BPF_X, 0, 1, 0, 0));
        g.push(Insn::new(BPF_STX | BPF_MEM | BPF_DW, 10, 2, -8, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_MUL | BPF_X, 0, 3, 0, 0));
        g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 4, 10, -8, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_XOR | BPF_X, 0, 4, 0, 0));
        g.push(EXIT);
    }
    // The bpf_loop callback: (index, context) -> 0 to go on, 1 to stop.
    if !loops.is_empty() {
        let cb = g.insns.len();
        for at in loops {
            g.insns[at].imm = (cb as i64 - at as i64 - 1) as i32;
        }
        g.push(Insn::new(BPF_LDX | BPF_MEM | BPF_DW, 0, 2, 0, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_ADD | BPF_X, 0, 1, 0, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_MUL, 0, 0, 0, 3));
        g.push(Insn::new(BPF_STX | BPF_MEM | BPF_DW, 2, 0, 0, 0));
        g.push(Insn::new(BPF_ALU64 | BPF_MOV, 0, 0, 0, 0));
        g.push(Insn::new(BPF_JMP | BPF_JNE, 1, 0, 1, 5));
        g.push(Insn::new(BPF_ALU64 | BPF_MOV, 0, 0, 0, 1));
        g.push(EXIT);
    }
    g.finish()
}

/// The label of a `bpf_loop` callback's function reference (resolved by `program`).
const CALLBACK: usize = usize::MAX - 1;

fn make_maps() -> Vec<Arc<Map>> {
    let def =
        |map_type, max_entries| MapDef { map_type, key_size: 4, value_size: 8, max_entries, map_flags: 0 };
    [def(map_type::ARRAY, 4), def(map_type::PERCPU_ARRAY, 4), def(map_type::HASH, 4)]
        .into_iter()
        .map(|d| Arc::new(Map::new("m", d, 2).unwrap()))
        .collect()
}

#[test]
fn random_programs_agree() {
    run_fuzz(false);
}

/// The same programs, kept only when the verifier accepts them: the JIT then compiles the
/// accesses the verifier proved without checks (its verified facts, inline hash walks) and must
/// still agree with the interpreter, which checks everything.
#[test]
fn random_verified_programs_agree() {
    run_fuzz(true);
}

fn run_fuzz(verified_only: bool) {
    let programs: u64 = std::env::var("JIT_FUZZ_PROGRAMS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
    let seed: u64 = std::env::var("JIT_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed_cafe);
    let mut rng = Rng(seed | 1, verified_only);
    let (mut faults, mut runs, mut accepted, mut loops, mut for_loops) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for n in 0..programs {
        let insns = program(&mut rng);
        if verified_only {
            if let Err(e) = Program::<Xdp>::from_insns_verified("fuzz", &insns, &make_maps()) {
                if std::env::var_os("JIT_FUZZ_WHY").is_some() {
                    eprintln!("rejected: {e}");
                }
                continue;
            }
            accepted += 1;
        }
        let calls_loop =
            |i: &Insn| i.code == BPF_JMP | BPF_CALL && i.src == 0 && i.imm == crate::helpers::id::LOOP as i32;
        loops += u64::from(insns.iter().any(calls_loop));
        // `if (r8 & 1) goto top`: the second backward jump of a `for`-shaped loop (`lp`).
        let for_back = |i: &Insn| i.code == BPF_JMP | BPF_JSET && i.dst == 8 && i.imm == 1 && i.off < 0;
        for_loops += u64::from(insns.iter().any(for_back));
        let packet: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        let slot = (n % 2) as usize;
        let mut outcome = Vec::new();
        for jit in [false, true] {
            let maps = make_maps();
            let prog = if verified_only {
                Program::<Xdp>::from_insns_verified("fuzz", &insns, &maps)
            } else {
                Program::<Xdp>::from_insns("fuzz", &insns, &maps)
            }
            .unwrap_or_else(|e| panic!("program {n}: {e}"));
            let compiled =
                jit.then(|| JitProgram::compile(&prog).unwrap_or_else(|e| panic!("program {n}: {e}")));
            let mut interp = Interpreter::new();
            let mut frame = vec![0u8; XDP_FRAME_SIZE];
            let mut buff = XdpBuff::load(&mut frame, &packet).unwrap();
            let mut results = Vec::new();
            // Three runs on the same frame and maps, as BPF_PROG_TEST_RUN's repeat does.
            for _ in 0..3 {
                let r = match &compiled {
                    Some(c) => c.run(&mut buff, slot),
                    None => interp.run(&prog, &mut buff, slot),
                };
                results.push(r.map_err(without_addr));
            }
            let dumps: Vec<_> = maps.iter().map(sorted_entries).collect();
            outcome.push((results, buff.meta_and_packet().to_vec(), dumps));
        }
        let jit = outcome.pop().unwrap();
        let interp = outcome.pop().unwrap();
        if jit != interp {
            let listing: Vec<String> =
                insns.iter().enumerate().map(|(i, x)| format!("{i:3}: {x:?}")).collect();
            panic!(
                "program {n} (seed {seed:#x}) differs\ninterp: {:?}\njit:    {:?}\nframes equal: {}, maps equal: {}\n{}",
                interp.0,
                jit.0,
                interp.1 == jit.1,
                interp.2 == jit.2,
                listing.join("\n")
            );
        }
        runs += 6;
        faults += interp.0.iter().filter(|r| r.is_err()).count() as u64;
    }
    if verified_only {
        assert!(accepted > 0, "the verifier accepted none of {programs} programs: the test proves nothing");
        assert_eq!(faults, 0, "a verified program faulted at run time");
    }
    assert!(loops > 0, "no program with a bpf_loop callback ran");
    assert!(for_loops > 0, "no program with a loop entered in its middle ran");
    eprintln!(
        "{programs} random programs ({} run{}, {loops} with a bpf_loop callback, {for_loops} with a loop entered in its middle), {runs} executions (interpreter + JIT), {faults} faulting runs, all equal",
        if verified_only { accepted } else { programs },
        if verified_only { ", the ones the verifier accepted" } else { "" }
    );
}
