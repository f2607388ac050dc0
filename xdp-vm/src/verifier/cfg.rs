//! The first pass, before any state is tracked (the kernel's `check_subprogs` and `check_cfg`):
//! function boundaries, jumps that stay inside their function and land on an instruction, no
//! `lddw` split, every instruction reachable, no recursion, at most eight frames; plus which
//! registers are live at each instruction, for state pruning.

use super::{ErrorKind, VerifierError};
use crate::insn::*;

/// The program's shape.
pub(crate) struct Cfg {
    /// Function start instructions, sorted; the program itself first (0).
    pub subprogs: Vec<usize>,
    /// Per instruction: a state may be stored here (jump targets, branch successors, returns).
    pub prune_point: Vec<bool>,
    /// Per instruction: registers (bit n = rn) live on entry.
    pub live_in: Vec<u16>,
    /// Per function: the functions it calls.
    pub calls: Vec<Vec<usize>>,
    /// Per instruction: registers whose value may reach a safety decision from here on (a
    /// jump operand, a memory address, a helper or function argument, a function's return
    /// value, a store that may go to the stack). A static stand-in for the kernel's precision
    /// tracking: other scalars are compared by kind only when pruning.
    pub relevant_in: Vec<(u16, u64)>,
}

fn err(insn: usize, kind: ErrorKind) -> VerifierError {
    VerifierError { insn, kind, line: None, text: None }
}

/// Where control may go after `pc` (without following calls); `None` for a jump target that
/// does not exist.
fn successors(insns: &[Insn], pc: usize) -> Result<Vec<usize>, VerifierError> {
    let insn = insns[pc];
    let len = insns.len() as i64;
    let target = |off: i64| {
        let t = pc as i64 + 1 + off;
        if t < 0 || t >= len { Err(err(pc, ErrorKind::JumpOutOfRange { target: t })) } else { Ok(t as usize) }
    };
    let class = insn.class();
    if insn.is_lddw() {
        return Ok(vec![pc + 2]);
    }
    if class == BPF_JMP || class == BPF_JMP32 {
        let op = insn.code & 0xf0;
        return Ok(match op {
            BPF_JA => {
                let off = if class == BPF_JMP32 { i64::from(insn.imm) } else { i64::from(insn.off) };
                vec![target(off)?]
            }
            BPF_EXIT => vec![],
            BPF_CALL => vec![pc + 1],
            _ => {
                let t = target(i64::from(insn.off))?;
                vec![pc + 1, t]
            }
        });
    }
    Ok(vec![pc + 1])
}

/// Registers an instruction reads and writes (bit n = rn), for liveness.
fn use_def(insn: Insn) -> (u16, u16) {
    let d = 1u16 << (insn.dst & 0x0f).min(10);
    let s = 1u16 << (insn.src & 0x0f).min(10);
    let args = 0b11_1110u16;
    let clobber = 0b11_1111u16;
    match insn.class() {
        BPF_ALU | BPF_ALU64 => {
            let op = insn.code & 0xf0;
            let src = if insn.code & BPF_X != 0 && op != BPF_END && op != BPF_NEG { s } else { 0 };
            if op == BPF_MOV { (src, d) } else { (d | src, d) }
        }
        BPF_LDX => (s, d),
        BPF_ST => (d, 0),
        BPF_STX => {
            if insn.code & 0xe0 == BPF_ATOMIC {
                if insn.imm == BPF_CMPXCHG {
                    (d | s | 1, 1)
                } else if insn.imm & BPF_FETCH != 0 {
                    (d | s, s)
                } else {
                    (d | s, 0)
                }
            } else {
                (d | s, 0)
            }
        }
        BPF_LD => (0, if insn.is_lddw() { d } else { 0 }),
        _ => {
            let op = insn.code & 0xf0;
            match op {
                BPF_JA => (0, 0),
                BPF_EXIT => (1, 0),
                BPF_CALL => (args, clobber),
                _ => (d | if insn.code & BPF_X != 0 { s } else { 0 }, 0),
            }
        }
    }
}

/// Runs the structural checks.
///
/// # Errors
/// The first structural fault, naming its instruction.
pub(crate) fn analyze(insns: &[Insn]) -> Result<Cfg, VerifierError> {
    let n = insns.len();
    if n == 0 {
        return Err(err(0, ErrorKind::Empty));
    }
    // lddw pairs.
    let mut second_slot = vec![false; n];
    let mut pc = 0;
    while pc < n {
        if insns[pc].is_lddw() {
            let ok = insns.get(pc + 1).is_some_and(|s| s.code == 0 && s.dst == 0 && s.src == 0 && s.off == 0);
            if !ok {
                return Err(err(pc, ErrorKind::BadLddw));
            }
            second_slot[pc + 1] = true;
            pc += 2;
        } else {
            pc += 1;
        }
    }
    // Functions: the program and every pseudo-call target.
    let mut starts = vec![0usize];
    for (pc, insn) in insns.iter().enumerate() {
        if second_slot[pc] {
            continue;
        }
        if insn.is_pseudo_call() {
            let t = pc as i64 + 1 + i64::from(insn.imm);
            if t < 0 || t >= n as i64 {
                return Err(err(pc, ErrorKind::JumpOutOfRange { target: t }));
            }
            if second_slot[t as usize] {
                return Err(err(pc, ErrorKind::JumpIntoLddw { target: t as usize }));
            }
            starts.push(t as usize);
        }
        if let Some(t) = func_target(insns, pc) {
            if t < 0 || t >= n as i64 {
                return Err(err(pc, ErrorKind::JumpOutOfRange { target: t }));
            }
            if second_slot[t as usize] {
                return Err(err(pc, ErrorKind::JumpIntoLddw { target: t as usize }));
            }
            starts.push(t as usize);
        }
    }
    starts.sort_unstable();
    starts.dedup();
    let mut subprog_of = vec![0usize; n];
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(n);
        subprog_of[s..end].fill(i);
        // The last instruction must leave the function.
        let last = insns[end - 1];
        let leaves = !second_slot[end - 1]
            && (last.code == BPF_JMP | BPF_EXIT
                || last.code == BPF_JMP | BPF_JA
                || last.code == BPF_JMP32 | BPF_JA);
        if !leaves {
            return Err(err(end - 1, ErrorKind::FallsOffEnd));
        }
    }
    // Edges stay inside their function and land on an instruction.
    let mut succs: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut prune_point = vec![false; n];
    let mut calls: Vec<Vec<usize>> = vec![Vec::new(); starts.len()];
    for pc in 0..n {
        if second_slot[pc] {
            succs.push(Vec::new());
            continue;
        }
        let s = successors(insns, pc)?;
        for &t in &s {
            if t >= n {
                return Err(err(pc, ErrorKind::JumpOutOfRange { target: t as i64 }));
            }
            if second_slot[t] {
                return Err(err(pc, ErrorKind::JumpIntoLddw { target: t }));
            }
            if subprog_of[t] != subprog_of[pc] {
                return Err(err(pc, ErrorKind::JumpOutOfFunction { target: t }));
            }
        }
        let op = insns[pc].code & 0xf0;
        let class = insns[pc].class();
        if (class == BPF_JMP || class == BPF_JMP32) && op != BPF_EXIT && op != BPF_CALL {
            for &t in &s {
                prune_point[t] = true;
            }
        }
        if insns[pc].is_pseudo_call() {
            let t = (pc as i64 + 1 + i64::from(insns[pc].imm)) as usize;
            let callee = starts.binary_search(&t).unwrap_or(0);
            calls[subprog_of[pc]].push(callee);
            prune_point[pc + 1] = true;
        }
        // A callback is called from its caller's frame (as the kernel counts stack depth).
        if let Some(t) = func_target(insns, pc) {
            let callee = starts.binary_search(&(t as usize)).unwrap_or(0);
            calls[subprog_of[pc]].push(callee);
        }
        // The walk comes back to a callback-calling helper after each callback run, until the
        // states there converge.
        if is_callback_call(insns[pc]) {
            prune_point[pc] = true;
        }
        succs.push(s);
    }
    // Reachability, following calls into their functions.
    let mut seen = vec![false; n];
    let mut work = vec![0usize];
    seen[0] = true;
    while let Some(pc) = work.pop() {
        let mut next = succs[pc].clone();
        if insns[pc].is_pseudo_call() {
            next.push((pc as i64 + 1 + i64::from(insns[pc].imm)) as usize);
        }
        if let Some(t) = func_target(insns, pc) {
            next.push(t as usize);
        }
        for t in next {
            if !seen[t] {
                seen[t] = true;
                work.push(t);
            }
        }
    }
    if let Some(pc) = (0..n).find(|&pc| !seen[pc] && !second_slot[pc]) {
        return Err(err(pc, ErrorKind::Unreachable));
    }
    // Call chains: no recursion, at most MAX_CALL_FRAMES deep.
    let mut chain = vec![0usize];
    check_chains(&calls, &starts, &mut chain)?;
    // Liveness, to a fixpoint (backwards).
    let mut live_in = vec![0u16; n];
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..n).rev() {
            if second_slot[pc] {
                continue;
            }
            let (u, d) = use_def(insns[pc]);
            let mut out = 0u16;
            for &t in &succs[pc] {
                out |= live_in[t];
            }
            let inn = u | (out & !d);
            if inn != live_in[pc] {
                live_in[pc] = inn;
                changed = true;
            }
        }
    }
    let maybe_stack = maybe_stack(insns, &starts, &succs, &second_slot);
    let relevant_in = relevance(insns, &succs, &second_slot, &maybe_stack, &subprog_of);
    Ok(Cfg { subprogs: starts, prune_point, live_in, calls, relevant_in })
}

/// The function an `lddw` with `BPF_PSEUDO_FUNC` at `pc` names (unchecked).
pub(crate) fn func_target(insns: &[Insn], pc: usize) -> Option<i64> {
    let insn = insns[pc];
    (insn.is_lddw() && insn.src == BPF_PSEUDO_FUNC).then(|| pc as i64 + 1 + i64::from(insn.imm))
}

/// A call of a helper that calls a callback (`bpf_loop`, `bpf_for_each_map_elem`).
pub(crate) fn is_callback_call(insn: Insn) -> bool {
    use crate::helpers::id;
    insn.is_helper_call() && matches!(insn.imm as u32, id::LOOP | id::FOR_EACH_MAP_ELEM)
}

fn check_chains(calls: &[Vec<usize>], starts: &[usize], chain: &mut Vec<usize>) -> Result<(), VerifierError> {
    let cur = chain[chain.len() - 1];
    for &callee in &calls[cur] {
        if chain.contains(&callee) {
            return Err(err(starts[callee], ErrorKind::Recursion));
        }
        if chain.len() + 1 > MAX_CALL_FRAMES {
            return Err(err(starts[callee], ErrorKind::CallDepth { frames: chain.len() + 1 }));
        }
        chain.push(callee);
        check_chains(calls, starts, chain)?;
        chain.pop();
    }
    Ok(())
}

const ARGS: u16 = 0b11_1110;
const R0_R5: u16 = 0b11_1111;

/// Per instruction (on entry): registers that may hold a pointer into some stack. Values loaded
/// from memory are stack pointers only when some store may put one in the stack (maps, the
/// packet and the context never hold pointers: the verifier refuses such stores).
fn maybe_stack(insns: &[Insn], starts: &[usize], succs: &[Vec<usize>], second: &[bool]) -> Vec<u16> {
    let n = insns.len();
    let mut stack_holds_ptrs = false;
    loop {
        let mut ms = vec![0u16; n];
        let mut seen = vec![false; n];
        let mut work = Vec::new();
        for &s in starts {
            ms[s] = if s == 0 { 1 << 10 } else { (1 << 10) | ARGS };
            seen[s] = true;
            work.push(s);
        }
        let mut grew = false;
        while let Some(pc) = work.pop() {
            let insn = insns[pc];
            let mut out = ms[pc];
            let d = 1u16 << insn.dst.min(10);
            let sbit = 1u16 << insn.src.min(10);
            let src_ms = ms[pc] & sbit != 0;
            match insn.class() {
                BPF_ALU64 if insn.code & 0xf0 == BPF_MOV => {
                    out &= !d;
                    if insn.code & BPF_X != 0 && src_ms && insn.off == 0 {
                        out |= d;
                    }
                }
                BPF_ALU64
                    if matches!(insn.code & 0xf0, BPF_ADD | BPF_SUB) && insn.code & BPF_X != 0 && src_ms =>
                {
                    out |= d;
                }
                BPF_ALU64 if matches!(insn.code & 0xf0, BPF_ADD | BPF_SUB) => {}
                BPF_ALU | BPF_ALU64 => out &= !d,
                BPF_LDX => {
                    out &= !d;
                    if src_ms && stack_holds_ptrs {
                        out |= d;
                    }
                }
                BPF_LD => out &= !d,
                BPF_STX => {
                    if insn.code & 0xe0 == BPF_ATOMIC {
                        out &= !(sbit | 1);
                    } else if ms[pc] & d != 0 && src_ms && !stack_holds_ptrs {
                        stack_holds_ptrs = true;
                        grew = true;
                    }
                }
                BPF_JMP if insn.code & 0xf0 == BPF_CALL => {
                    out &= !R0_R5;
                    if insn.src == BPF_PSEUDO_CALL {
                        out |= 1;
                    }
                }
                _ => {}
            }
            if second[pc] {
                continue;
            }
            for &t in &succs[pc] {
                if t < n && (!seen[t] || ms[t] | out != ms[t]) {
                    ms[t] |= out;
                    seen[t] = true;
                    work.push(t);
                }
            }
        }
        if !grew {
            return ms;
        }
    }
}

/// Per instruction (on entry): registers, and stack slots of the function's own frame (bit i:
/// `fp-8(i+1)..fp-8i`), whose value may reach a safety decision.
fn relevance(
    insns: &[Insn],
    succs: &[Vec<usize>],
    second: &[bool],
    ms: &[u16],
    subprog_of: &[usize],
) -> Vec<(u16, u64)> {
    let n = insns.len();
    let mut rel = vec![(0u16, 0u64); n];
    let slot_of =
        |off: i16| -> Option<u64> { (off < 0).then(|| 1u64 << ((-i64::from(off) - 1) / 8).min(63)) };
    let mut changed = true;
    while changed {
        changed = false;
        for pc in (0..n).rev() {
            if second[pc] {
                continue;
            }
            let insn = insns[pc];
            let (mut out, mut slots) = (0u16, 0u64);
            for &t in &succs[pc] {
                out |= rel[t].0;
                slots |= rel[t].1;
            }
            let d = 1u16 << insn.dst.min(10);
            let s = 1u16 << insn.src.min(10);
            let x = insn.code & BPF_X != 0;
            let full = insn.code & 0x18 == BPF_DW;
            let inn = match insn.class() {
                BPF_ALU | BPF_ALU64 => {
                    let op = insn.code & 0xf0;
                    let src = if x && op != BPF_END && op != BPF_NEG { s } else { 0 };
                    if out & d == 0 {
                        out & !d
                    } else if op == BPF_MOV {
                        (out & !d) | src
                    } else {
                        out | src
                    }
                }
                BPF_LDX => {
                    if out & d != 0 {
                        match slot_of(insn.off) {
                            Some(bit) if insn.src == REG_FP => slots |= bit,
                            _ if ms[pc] & s != 0 => slots = u64::MAX,
                            _ => {}
                        }
                    }
                    (out & !d) | s
                }
                BPF_LD => out & !d,
                BPF_ST => {
                    if insn.dst == REG_FP && full {
                        slots &= !slot_of(insn.off).unwrap_or(0);
                    }
                    out | d
                }
                BPF_STX => {
                    if insn.code & 0xe0 == BPF_ATOMIC {
                        if ms[pc] & d != 0 {
                            slots = u64::MAX;
                        }
                        out | d | s | 1
                    } else if insn.dst == REG_FP {
                        let bit = slot_of(insn.off).unwrap_or(0);
                        let relevant = slots & bit != 0;
                        if full {
                            slots &= !bit;
                        }
                        out | d | if relevant { s } else { 0 }
                    } else if ms[pc] & d != 0 {
                        out | d | s
                    } else {
                        out | d
                    }
                }
                _ => match insn.code & 0xf0 {
                    BPF_JA => out,
                    BPF_CALL => {
                        // A function (or a callback) may read this frame's stack through a
                        // pointer argument and use what it reads. A helper reads stack bytes
                        // only as data: what they hold never decides its checks or result.
                        let calls_code = insn.is_pseudo_call() || is_callback_call(insn);
                        if calls_code && ms[pc] & ARGS != 0 {
                            slots = u64::MAX;
                        }
                        (out & !R0_R5) | ARGS
                    }
                    BPF_EXIT => {
                        slots = 0;
                        u16::from(subprog_of[pc] != 0)
                    }
                    _ => out | d | if x { s } else { 0 },
                },
            };
            if (inn, slots) != rel[pc] {
                rel[pc] = (inn, slots);
                changed = true;
            }
        }
    }
    rel
}
