//! What the compiler knows about each register before each instruction, so it can drop checks it
//! can prove unnecessary on its own (until the verifier hands over its facts).
//!
//! A small forward must-analysis over each function: a register is the context pointer plus a
//! constant, the frame pointer plus a constant, a map value pointer (or NULL) plus a constant,
//! a known constant, or unknown. Facts only ever hold on every path into an instruction (the
//! join of two different facts is "unknown"), and each transfer is exact for the compiled
//! code's semantics, so anything derived here is true at run time.
//!
//! Uses: a load or store through `r10 + k` within the frame needs no check; a 4-byte load of a
//! context field through `ctx + k` becomes a direct read of the state; an access through
//! `lookup result + k` inside the value needs only a NULL check; a helper call whose `r1` is a
//! known map is specialized for that map.

use crate::helpers::id;
use crate::insn::*;
use crate::program::MAP_HANDLE_TAG;
use crate::verifier::{Verified, region};

/// One register's fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fact {
    Unknown,
    /// A known value.
    Const(u64),
    /// The context pointer plus a constant.
    Ctx(i64),
    /// This function's frame pointer plus a constant.
    Fp(i64),
    /// What `bpf_map_lookup_elem` on map `map` returned (a value pointer or NULL) plus a constant.
    MapValue {
        map: usize,
        off: i64,
    },
}

impl Fact {
    fn join(self, other: Self) -> Self {
        if self == other { self } else { Fact::Unknown }
    }

    fn add(self, k: i64) -> Self {
        match self {
            Fact::Const(c) => Fact::Const(c.wrapping_add(k as u64)),
            Fact::Ctx(o) => o.checked_add(k).map_or(Fact::Unknown, Fact::Ctx),
            Fact::Fp(o) => o.checked_add(k).map_or(Fact::Unknown, Fact::Fp),
            Fact::MapValue { map, off } => {
                off.checked_add(k).map_or(Fact::Unknown, |off| Fact::MapValue { map, off })
            }
            Fact::Unknown => Fact::Unknown,
        }
    }

    /// The map a register names, when it holds a map handle of this program.
    pub(crate) fn map_handle(self, maps: usize) -> Option<usize> {
        match self {
            Fact::Const(c) if c & !0xffff_ffff == MAP_HANDLE_TAG && ((c & 0xffff_ffff) as usize) < maps => {
                Some((c & 0xffff_ffff) as usize)
            }
            _ => None,
        }
    }
}

/// Register facts before an instruction.
pub(crate) type Regs = [Fact; NUM_REGS];

/// Facts for every instruction of one program (`None`: not reached from its function's entry).
#[derive(Debug)]
pub(crate) struct Facts {
    before: Vec<Option<Regs>>,
    /// Per instruction: the verifier proved the access in bounds (empty when unverified).
    in_bounds: Vec<bool>,
    /// Per instruction: the [`region`] bits the verifier saw its access reach (empty when
    /// unverified).
    regions: Vec<u8>,
    /// The verifier saw some path read stack bytes it never wrote.
    uninit_stack: bool,
}

impl Facts {
    /// Analyzes each function `[start, end)` of `insns` (`funcs` in order; the first is the
    /// main program, entered with `r1` = the context).
    pub(crate) fn analyze(insns: &[Insn], funcs: &[(usize, usize)], maps: usize) -> Self {
        let mut before: Vec<Option<Regs>> = vec![None; insns.len()];
        for (i, &(start, end)) in funcs.iter().enumerate() {
            let mut entry = [Fact::Unknown; NUM_REGS];
            entry[REG_FP as usize] = Fact::Fp(0);
            if i == 0 {
                entry[1] = Fact::Ctx(0);
            }
            let mut work = vec![(start, entry)];
            while let Some((pc, inc)) = work.pop() {
                if pc < start || pc >= end {
                    continue;
                }
                let merged = match &before[pc] {
                    None => inc,
                    Some(old) => {
                        let mut m = *old;
                        for (a, b) in m.iter_mut().zip(inc) {
                            *a = a.join(b);
                        }
                        if m == *old {
                            continue;
                        }
                        m
                    }
                };
                before[pc] = Some(merged);
                let (out, succ) = transfer(insns, pc, merged, maps);
                for s in succ.into_iter().flatten() {
                    work.push((s, out));
                }
            }
        }
        Self { before, in_bounds: Vec::new(), regions: Vec::new(), uninit_stack: true }
    }

    /// Facts before instruction `pc`.
    pub(crate) fn at(&self, pc: usize) -> Regs {
        self.before[pc].unwrap_or([Fact::Unknown; NUM_REGS])
    }

    /// Takes what the verifier proved about this very program (`v.facts` is indexed like the
    /// instructions the compiler translates: `Program` verifies its bound instructions).
    pub(crate) fn use_verifier(&mut self, v: &Verified) {
        if v.facts.len() == self.before.len() {
            self.in_bounds =
                v.facts.iter().map(|f| f.reached && f.regions != 0 && f.regions & region::CTX == 0).collect();
            self.regions = v.facts.iter().map(|f| if f.reached { f.regions } else { 0 }).collect();
            self.uninit_stack = v.reads_uninit_stack;
        }
    }

    /// Whether the program may read stack bytes it never wrote (always, unverified). Such a
    /// read sees what an earlier call at the same depth, or an earlier run, left in the frame,
    /// so no stack store may be dropped because its frame ends.
    pub(crate) fn reads_uninit_stack(&self) -> bool {
        self.uninit_stack
    }

    /// Whether the verifier proved, for every reached load, store and atomic of the function
    /// `[start, end)`, the one region ([`Facts::region`]) it reaches on every path. False for a
    /// program loaded unverified, or when some access may reach two regions (or the context
    /// and another one).
    ///
    /// When true, every access of the function to the stack, the packet or a map value is
    /// known by its region, so the compiler can tell Cranelift the three never alias.
    pub(crate) fn single_regions(&self, insns: &[Insn], start: usize, end: usize) -> bool {
        let Some(regions) = self.regions.get(start..end) else {
            return false;
        };
        insns[start..end].iter().zip(regions).all(|(insn, &r)| {
            let class = insn.class();
            let memory = class == BPF_LDX || class == BPF_ST || class == BPF_STX;
            !memory || r == 0 || r.is_power_of_two()
        })
    }

    /// Whether the verifier's facts about this program are in use.
    pub(crate) fn is_verified(&self) -> bool {
        !self.regions.is_empty()
    }

    /// The [`region`] bits the verifier saw the access at `pc` reach (0 when unverified).
    pub(crate) fn region(&self, pc: usize) -> u8 {
        self.regions.get(pc).copied().unwrap_or(0)
    }

    /// Whether the verifier proved the memory access at `pc` inside the stack, the packet or a
    /// map value on every path: the access needs no check. Context accesses never count here
    /// (they are rewritten, not made directly), and nothing counts for a program loaded
    /// unverified.
    pub(crate) fn verified_in_bounds(&self, pc: usize) -> bool {
        self.in_bounds.get(pc).copied().unwrap_or(false)
    }
}

/// The facts after `pc` and its successors.
fn transfer(insns: &[Insn], pc: usize, mut r: Regs, maps: usize) -> (Regs, [Option<usize>; 2]) {
    let insn = insns[pc];
    let (dst, src) = (usize::from(insn.dst), usize::from(insn.src));
    let next = Some(pc + 1);
    let target = |off: i64| Some((pc as i64 + 1 + off) as usize);
    let class = insn.class();
    let op = insn.code & 0xf0;
    match class {
        BPF_ALU64 => {
            let x = insn.code & BPF_X != 0;
            let k = i64::from(insn.imm);
            r[dst] = match (op, x) {
                (BPF_MOV, false) => Fact::Const(k as u64),
                (BPF_MOV, true) if insn.off == 0 => r[src],
                (BPF_ADD, false) => r[dst].add(k),
                (BPF_SUB, false) => r[dst].add(k.wrapping_neg()),
                (BPF_ADD, true) => match (r[dst], r[src]) {
                    (d, Fact::Const(c)) => d.add(c as i64),
                    (Fact::Const(c), s) => s.add(c as i64),
                    _ => Fact::Unknown,
                },
                _ => Fact::Unknown,
            };
            (r, [next, None])
        }
        BPF_ALU => {
            r[dst] = if op == BPF_MOV && insn.code & BPF_X == 0 {
                Fact::Const(u64::from(insn.imm as u32))
            } else {
                Fact::Unknown
            };
            (r, [next, None])
        }
        BPF_LD => {
            // lddw (bound): the value is in the two immediates.
            let hi = insns.get(pc + 1).map_or(0, |i| i.imm as u32);
            r[dst] = Fact::Const(u64::from(insn.imm as u32) | (u64::from(hi) << 32));
            (r, [Some(pc + 2), None])
        }
        BPF_LDX => {
            r[dst] = Fact::Unknown;
            (r, [next, None])
        }
        BPF_ST => (r, [next, None]),
        BPF_STX => {
            if insn.code & 0xe0 == BPF_ATOMIC {
                if insn.imm == BPF_CMPXCHG {
                    r[0] = Fact::Unknown;
                } else if insn.imm & BPF_FETCH != 0 {
                    r[src] = Fact::Unknown;
                }
            }
            (r, [next, None])
        }
        BPF_JMP | BPF_JMP32 => match op {
            BPF_JA => {
                let off = if class == BPF_JMP32 { i64::from(insn.imm) } else { i64::from(insn.off) };
                (r, [target(off), None])
            }
            BPF_EXIT => (r, [None, None]),
            BPF_CALL => {
                let result = if insn.is_helper_call() && insn.imm as u32 == id::MAP_LOOKUP_ELEM {
                    r[1].map_handle(maps).map_or(Fact::Unknown, |map| Fact::MapValue { map, off: 0 })
                } else {
                    Fact::Unknown
                };
                // Helpers leave r1-r5 as they were, and so do compiled subprogram calls.
                r[0] = result;
                (r, [next, None])
            }
            _ => (r, [next, target(i64::from(insn.off))]),
        },
        _ => (r, [next, None]),
    }
}
