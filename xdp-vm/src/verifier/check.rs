//! The second pass: abstract interpretation of every path, with state pruning.

use super::cfg::Cfg;
use super::scalar::{Cmp, Scalar, refine};
use super::state::{Byte, Frame, Kind, Reg, Slot, State, covers};
use super::{CtxField, ErrorKind, InsnFact, MapInfo, Options, ProgramType, Verified, VerifierError, region};
use crate::context::xdp_md;
use crate::helpers::id as helper;
use crate::insn::*;

/// Largest constant or variable offset a pointer may carry (the kernel's `BPF_MAX_VAR_OFF`).
const MAX_VAR_OFF: i64 = 1 << 29;
/// Largest packet offset the range logic trusts (`MAX_PACKET_OFF`).
const MAX_PACKET_OFF: u64 = 0xffff;
/// States kept per instruction: past this, new ones are not stored (they are still explored).
const MAX_STATES_PER_INSN: usize = 1024;
/// Walks of a callback with different states at its call site, on one path, before the
/// scalars that keep changing there are widened to unknown (see [`super::state::widen`]).
const WIDEN_CALLBACK_AFTER: usize = 2;
/// States stored at a callback-calling helper call before a new state there is widened against
/// the last one stored (different paths reaching the call, e.g. after earlier callbacks left
/// different values behind).
const JOIN_CALLBACK_AFTER: usize = 4;

type Res<T> = Result<T, VerifierError>;

struct Checkpoint {
    state: State,
    /// Hash of the live registers of the innermost frame: equal for equivalent states.
    fingerprint: u64,
    /// Paths (running or queued) and unfinished child checkpoints that descend from it; 0 when
    /// everything reachable from it was verified.
    pending: u32,
    parent: Option<usize>,
    /// Where it was stored.
    pc: usize,
    /// Once finished: states it pruned, and states it was compared with and did not cover.
    hits: u32,
    misses: u32,
}

struct Path {
    pc: usize,
    state: State,
    cp: Option<usize>,
}

enum Flow {
    Next(usize),
    /// A conditional jump: the current state goes on to `first` (or dies), `second` is queued.
    Fork {
        first: Option<usize>,
        second: Option<(usize, State)>,
    },
    End,
}

struct Verifier<'a> {
    insns: &'a [Insn],
    maps: &'a [MapInfo],
    prog_type: ProgramType,
    options: &'a Options,
    cfg: &'a Cfg,
    facts: Vec<InsnFact>,
    ctx_mixed: Vec<bool>,
    checkpoints: Vec<Checkpoint>,
    /// Checkpoints stored per instruction.
    at: Vec<Vec<usize>>,
    /// Of those, the finished ones (what may prune a state), per instruction.
    done_at: Vec<Vec<usize>>,
    /// The unfinished ones by (instruction, fingerprint): a path that comes back to one of
    /// them with an equal state loops without progress. Kept apart so a long loop's many
    /// unfinished states cost nothing to skip.
    pending_fp: std::collections::HashMap<(usize, u64), Vec<usize>>,
    /// Unfinished checkpoints per instruction.
    pending_n: Vec<u32>,
    processed: usize,
    last_stored: usize,
    id_gen: u32,
    stack_depth: Vec<u32>,
    /// The path just came back from a callback to the helper call that called it.
    callback_return: bool,
    /// Some path read stack bytes it never wrote (allowed by `allow_uninit_stack`).
    uninit_read: std::cell::Cell<bool>,
    /// Per `bpf_loop` call: (still fit for the kernel's inlining, the callback of every visit).
    loop_inline: std::collections::HashMap<usize, (bool, u32)>,
}

fn fail<T>(insn: usize, kind: ErrorKind) -> Res<T> {
    Err(VerifierError { insn, kind, line: None, text: None })
}

pub(crate) fn run(
    insns: &[Insn],
    maps: &[MapInfo],
    prog_type: ProgramType,
    options: &Options,
    cfg: &Cfg,
) -> Res<Verified> {
    let n = insns.len();
    let mut v = Verifier {
        insns,
        maps,
        prog_type,
        options,
        cfg,
        facts: vec![InsnFact::default(); n],
        ctx_mixed: vec![false; n],
        checkpoints: Vec::new(),
        at: vec![Vec::new(); n],
        done_at: vec![Vec::new(); n],
        pending_fp: std::collections::HashMap::new(),
        pending_n: vec![0; n],
        processed: 0,
        last_stored: 0,
        id_gen: 0,
        stack_depth: vec![0; cfg.subprogs.len()],
        callback_return: false,
        uninit_read: std::cell::Cell::new(false),
        loop_inline: std::collections::HashMap::new(),
    };
    v.explore()?;
    // Combined stack of the deepest call chain, each frame rounded up to 32 bytes.
    let rounded: Vec<u32> = v.stack_depth.iter().map(|&d| d.max(1).next_multiple_of(32)).collect();
    let mut memo = vec![None; cfg.subprogs.len()];
    let total = chain_depth(0, &cfg.calls, &rounded, &mut memo);
    if total > STACK_SIZE as u32 {
        return fail(0, ErrorKind::StackTooLarge { size: total });
    }
    for (pc, f) in v.facts.iter_mut().enumerate() {
        if v.ctx_mixed[pc] || f.regions != region::CTX {
            f.ctx_field = None;
        }
        f.loop_inlined = v.loop_inline.get(&pc).is_some_and(|&(fit, _)| fit);
    }
    Ok(Verified {
        processed_insns: v.processed,
        states: v.checkpoints.len(),
        stack_depth: v.stack_depth,
        subprogs: cfg.subprogs.clone(),
        facts: v.facts,
        reads_uninit_stack: v.uninit_read.get(),
    })
}

fn fingerprint(state: &State, live: u16) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    state.frames.len().hash(&mut h);
    state.refs.len().hash(&mut h);
    for (r, reg) in state.cur().regs.iter().enumerate() {
        if live & (1 << r) != 0 {
            (reg.kind, reg.off, reg.val, reg.range).hash(&mut h);
        }
    }
    h.finish()
}

fn chain_depth(f: usize, calls: &[Vec<usize>], rounded: &[u32], memo: &mut Vec<Option<u32>>) -> u32 {
    if let Some(d) = memo[f] {
        return d;
    }
    let deepest = calls[f].iter().map(|&c| chain_depth(c, calls, rounded, memo)).max().unwrap_or(0);
    let d = rounded[f] + deepest;
    memo[f] = Some(d);
    d
}

fn size_of(code: u8) -> u32 {
    match code & 0x18 {
        BPF_B => 1,
        BPF_H => 2,
        BPF_W => 4,
        _ => 8,
    }
}

fn initial_state() -> State {
    let mut regs = [Reg::not_init(); 11];
    regs[1] = Reg::pointer(Kind::Ctx, 0);
    regs[10] = Reg::pointer(Kind::Stack(0), 0);
    State {
        frames: vec![Frame { regs, stack: Vec::new(), callsite: 0, subprog: 0, callback: false }],
        refs: Vec::new(),
        callback_walks: 0,
    }
}

/// What an access does to memory.
#[derive(Clone, Copy)]
enum Access {
    Read,
    Write(Reg),
}

impl Verifier<'_> {
    fn new_id(&mut self) -> u32 {
        self.id_gen += 1;
        self.id_gen
    }

    fn explore(&mut self) -> Res<()> {
        let mut todo = vec![Path { pc: 0, state: initial_state(), cp: None }];
        while let Some(Path { mut pc, mut state, mut cp }) = todo.pop() {
            loop {
                if self.cfg.prune_point[pc] {
                    match self.visit(pc, &mut state, cp)? {
                        None => {
                            self.finish(cp);
                            break;
                        }
                        Some(new_cp) => cp = new_cp,
                    }
                }
                self.processed += 1;
                if self.processed > self.options.max_processed_insns {
                    return fail(pc, ErrorKind::TooComplex { limit: self.options.max_processed_insns });
                }
                self.facts[pc].reached = true;
                match self.step(pc, &mut state)? {
                    Flow::Next(next) => pc = next,
                    Flow::Fork { first, second } => {
                        if let Some((t, s)) = second {
                            if let Some(c) = cp {
                                self.checkpoints[c].pending += 1;
                            }
                            todo.push(Path { pc: t, state: s, cp });
                        }
                        match first {
                            Some(next) => pc = next,
                            None => {
                                self.finish(cp);
                                break;
                            }
                        }
                    }
                    Flow::End => {
                        self.finish(cp);
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// A path ended: its checkpoints may now be complete.
    fn finish(&mut self, mut cp: Option<usize>) {
        while let Some(c) = cp {
            let ck = &mut self.checkpoints[c];
            ck.pending -= 1;
            if ck.pending > 0 {
                return;
            }
            let (pc, fp) = (ck.pc, ck.fingerprint);
            cp = ck.parent;
            if let Some(list) = self.pending_fp.get_mut(&(pc, fp)) {
                list.retain(|&i| i != c);
                if list.is_empty() {
                    self.pending_fp.remove(&(pc, fp));
                }
            }
            self.pending_n[pc] -= 1;
            self.done_at[pc].push(c);
        }
    }

    /// At a prune point: `None` when an explored state covers this one; else the checkpoint
    /// the path now descends from.
    ///
    /// Back at a callback-calling helper after a callback ran, a state still being explored
    /// there (an earlier walk of the same callback) that covers this one prunes it: the helper
    /// bounds the iterations, so only safety matters, and that was proven from the wider state.
    /// After [`WIDEN_CALLBACK_AFTER`] such walks, the scalars that still change are widened.
    fn visit(&mut self, pc: usize, state: &mut State, cp: Option<usize>) -> Res<Option<Option<usize>>> {
        let callback_return = std::mem::take(&mut self.callback_return);
        let live = self.cfg.live_in[pc];
        let precise = self.cfg.relevant_in[pc];
        let cfg = self.cfg;
        let insns = self.insns;
        let caller_live = |callsite: usize| {
            if insns[callsite].is_pseudo_call() {
                cfg.live_in.get(callsite + 1).copied().unwrap_or(0) & 0x3c0
            } else {
                // A callback's caller resumes at the helper call, which reads r1-r5 again.
                cfg.live_in[callsite] & 0x3fe
            }
        };
        let fingerprint = fingerprint(state, live);
        let mut walks = 0;
        let mut last_walk = None;
        if callback_return {
            for &i in &self.at[pc] {
                let ck = &self.checkpoints[i];
                if ck.pending > 0 {
                    if covers(&ck.state, state, live, precise, &caller_live) {
                        return Ok(None);
                    }
                    walks += 1;
                    last_walk = Some(i);
                }
            }
        } else if let Some(list) = self.pending_fp.get(&(pc, fingerprint)) {
            for &i in list {
                let ck = &self.checkpoints[i];
                if ck.state.callback_walks != state.callback_walks {
                    // Back after more callback runs: a further iteration of a loop a helper
                    // bounds; covered by the earlier state, nothing new to prove.
                    if covers(&ck.state, state, live, precise, &caller_live) {
                        return Ok(None);
                    }
                    continue;
                }
                // Still being explored, so an ancestor of this path: the same state again is
                // a loop that makes no progress.
                if covers(&ck.state, state, live, (0x7ff, u64::MAX), &caller_live)
                    && covers(state, &ck.state, live, (0x7ff, u64::MAX), &caller_live)
                {
                    return fail(pc, ErrorKind::InfiniteLoop);
                }
            }
        }
        let in_loop = self.pending_n[pc] > 0;
        let mut evict = false;
        for &i in &self.done_at[pc] {
            let ck = &mut self.checkpoints[i];
            if covers(&ck.state, state, live, precise, &caller_live) {
                ck.hits += 1;
                return Ok(None);
            }
            ck.misses += 1;
            evict |= ck.misses > 3 * ck.hits + 3;
        }
        if evict {
            // The kernel's heuristic: a state that keeps missing is unlikely to prune anything
            // (a loop's exits, each with its own counter); comparing with it only costs.
            let cks = &self.checkpoints;
            self.done_at[pc].retain(|&i| cks[i].misses <= 3 * cks[i].hits + 3);
        }
        if let Some(i) = last_walk
            && walks >= WIDEN_CALLBACK_AFTER
        {
            super::state::widen(&self.checkpoints[i].state, state);
        } else if super::cfg::is_callback_call(insns[pc])
            && self.at[pc].len() >= JOIN_CALLBACK_AFTER
            && let Some(&i) = self.at[pc].last()
        {
            super::state::widen(&self.checkpoints[i].state, state);
        }
        let skip = !callback_return && in_loop && self.processed - self.last_stored < 8;
        if self.pending_n[pc] as usize + self.done_at[pc].len() >= MAX_STATES_PER_INSN || skip {
            return Ok(Some(cp));
        }
        let fingerprint = self::fingerprint(state, live);
        let idx = self.checkpoints.len();
        self.checkpoints.push(Checkpoint {
            state: state.clone(),
            fingerprint,
            pending: 1,
            parent: cp,
            pc,
            hits: 0,
            misses: 0,
        });
        self.at[pc].push(idx);
        self.pending_fp.entry((pc, fingerprint)).or_default().push(idx);
        self.pending_n[pc] += 1;
        self.last_stored = self.processed;
        Ok(Some(Some(idx)))
    }

    fn reg(&self, pc: usize, st: &State, r: u8) -> Res<Reg> {
        if r > 10 {
            return fail(pc, ErrorKind::BadRegister { reg: r });
        }
        let reg = st.cur().regs[usize::from(r)];
        if reg.kind == Kind::NotInit {
            return fail(pc, ErrorKind::UninitRegister { reg: r });
        }
        Ok(reg)
    }

    fn check_dst(pc: usize, r: u8) -> Res<usize> {
        match r {
            REG_FP => fail(pc, ErrorKind::WritesFramePointer),
            r if r > 10 => fail(pc, ErrorKind::BadRegister { reg: r }),
            r => Ok(usize::from(r)),
        }
    }

    fn step(&mut self, pc: usize, st: &mut State) -> Res<Flow> {
        let insn = self.insns[pc];
        match insn.class() {
            BPF_ALU | BPF_ALU64 => {
                self.alu(pc, insn, st)?;
                Ok(Flow::Next(pc + 1))
            }
            BPF_LD => {
                self.lddw(pc, insn, st)?;
                Ok(Flow::Next(pc + 2))
            }
            BPF_LDX => {
                let mode = insn.code & 0xe0;
                if mode != BPF_MEM && !(mode == BPF_MEMSX && insn.code & 0x18 != BPF_DW) {
                    return fail(pc, ErrorKind::UnsupportedOpcode { code: insn.code });
                }
                let dst = Self::check_dst(pc, insn.dst)?;
                let base = self.reg(pc, st, insn.src)?;
                let size = size_of(insn.code);
                let mut val = self.mem(pc, st, insn.src, base, i64::from(insn.off), size, Access::Read)?;
                if mode == BPF_MEMSX && val.kind == Kind::Scalar {
                    val = Reg::scalar(val.val.sign_extend(size * 8));
                }
                st.cur_mut().regs[dst] = val;
                Ok(Flow::Next(pc + 1))
            }
            BPF_ST | BPF_STX => {
                self.store(pc, insn, st)?;
                Ok(Flow::Next(pc + 1))
            }
            _ => self.jmp(pc, insn, st),
        }
    }

    fn lddw(&mut self, pc: usize, insn: Insn, st: &mut State) -> Res<()> {
        if !insn.is_lddw() {
            return fail(pc, ErrorKind::UnsupportedOpcode { code: insn.code });
        }
        let dst = Self::check_dst(pc, insn.dst)?;
        let second = self.insns[pc + 1];
        let map = |idx: i32| -> Res<u32> {
            match usize::try_from(idx) {
                Ok(i) if i < self.maps.len() => Ok(i as u32),
                _ => fail(pc, ErrorKind::NoSuchMap { index: i64::from(idx), count: self.maps.len() }),
            }
        };
        let reg = match insn.src {
            0 => {
                Reg::scalar(Scalar::konst(u64::from(insn.imm as u32) | (u64::from(second.imm as u32) << 32)))
            }
            BPF_PSEUDO_MAP_IDX => Reg::pointer(Kind::MapPtr(map(insn.imm)?), 0),
            BPF_PSEUDO_MAP_IDX_VALUE => {
                let m = map(insn.imm)?;
                let info = &self.maps[m as usize];
                let off = i64::from(second.imm);
                if off < 0 || off >= i64::from(info.def.value_size) {
                    return fail(
                        pc,
                        ErrorKind::MapValueBounds {
                            reg: insn.dst,
                            map: info.name.clone(),
                            min: off,
                            max: off,
                            size: 0,
                            value_size: info.def.value_size,
                        },
                    );
                }
                Reg::pointer(Kind::MapValue(m), off)
            }
            // The structural pass proved the target a function start.
            BPF_PSEUDO_FUNC => Reg::pointer(Kind::Func((pc as i64 + 1 + i64::from(insn.imm)) as u32), 0),
            src => return fail(pc, ErrorKind::UnsupportedLddw { src }),
        };
        st.cur_mut().regs[dst] = reg;
        Ok(())
    }

    fn alu(&mut self, pc: usize, insn: Insn, st: &mut State) -> Res<()> {
        let Insn { code, off, imm, .. } = insn;
        let wide = insn.class() == BPF_ALU64;
        let width = if wide { 64 } else { 32 };
        let op = code & 0xf0;
        let x = code & BPF_X != 0;
        let bad = || ErrorKind::BadField { code, off, imm };
        match op {
            BPF_ADD | BPF_SUB | BPF_MUL | BPF_OR | BPF_AND | BPF_LSH | BPF_RSH | BPF_XOR | BPF_ARSH
                if off != 0 =>
            {
                return fail(pc, bad());
            }
            BPF_DIV | BPF_MOD if off != 0 && off != 1 => return fail(pc, bad()),
            BPF_NEG if x || off != 0 => return fail(pc, ErrorKind::UnsupportedOpcode { code }),
            BPF_END if (wide && x) || off != 0 || !matches!(imm, 16 | 32 | 64) => {
                return fail(pc, if wide && x { ErrorKind::UnsupportedOpcode { code } } else { bad() });
            }
            BPF_MOV => {
                let ok = match (x, off) {
                    (_, 0) => true,
                    (true, 8 | 16) => true,
                    (true, 32) => wide,
                    _ => false,
                };
                if !ok {
                    return fail(pc, bad());
                }
            }
            BPF_ADD | BPF_SUB | BPF_MUL | BPF_OR | BPF_AND | BPF_LSH | BPF_RSH | BPF_XOR | BPF_ARSH
            | BPF_DIV | BPF_MOD | BPF_NEG | BPF_END => {}
            _ => return fail(pc, ErrorKind::UnsupportedOpcode { code }),
        }
        let dst = Self::check_dst(pc, insn.dst)?;
        let src = if x && op != BPF_END && op != BPF_NEG {
            self.reg(pc, st, insn.src)?
        } else if wide {
            Reg::scalar(Scalar::konst(imm as i64 as u64))
        } else {
            Reg::scalar(Scalar::konst(u64::from(imm as u32)))
        };
        if op == BPF_MOV {
            let out = if off != 0 {
                if src.kind != Kind::Scalar {
                    return fail(
                        pc,
                        ErrorKind::PointerArithmetic { kind: src.kind.name(), detail: "sign-extending move" },
                    );
                }
                let s = src.val.truncate(off as u32 / 8).sign_extend(off as u32);
                Reg::scalar(if wide { s } else { s.low32() })
            } else if wide {
                let mut r = src;
                if x && r.kind == Kind::Scalar && !r.val.is_const() {
                    if r.id == 0 {
                        r.id = self.new_id();
                        st.cur_mut().regs[usize::from(insn.src)].id = r.id;
                    }
                } else if r.kind == Kind::Scalar {
                    r.id = 0;
                }
                r
            } else {
                if src.kind != Kind::Scalar {
                    return fail(
                        pc,
                        ErrorKind::PointerArithmetic {
                            kind: src.kind.name(),
                            detail: "32-bit move of a pointer",
                        },
                    );
                }
                Reg::scalar(src.val.low32())
            };
            st.cur_mut().regs[dst] = out;
            return Ok(());
        }
        let d = self.reg(pc, st, insn.dst)?;
        if d.kind == Kind::Scalar && src.kind == Kind::Scalar {
            let a = if wide { d.val } else { d.val.low32() };
            let b = if wide { src.val } else { src.val.low32() };
            let signed = off == 1;
            let mut r = match op {
                BPF_ADD => a.add(&b),
                BPF_SUB => a.sub(&b),
                BPF_MUL => a.mul(&b),
                BPF_AND => a.and(&b),
                BPF_OR => a.or(&b),
                BPF_XOR => a.xor(&b),
                BPF_LSH => a.lsh(&b, width),
                BPF_RSH => a.rsh(&b, width),
                BPF_ARSH => {
                    if wide {
                        a.arsh(&b, 64)
                    } else {
                        d.val.arsh(&src.val.low32(), 32)
                    }
                }
                BPF_DIV | BPF_MOD if signed => d.val.sdivmod(&src.val, op == BPF_MOD, width),
                BPF_DIV | BPF_MOD => a.udivmod(&b, op == BPF_MOD, width),
                BPF_NEG => Scalar::konst(0).sub(&a),
                _ => end_op(&d.val, code, imm, wide),
            };
            if !wide && op != BPF_END {
                r = r.low32();
            }
            st.cur_mut().regs[dst] = Reg::scalar(r);
            return Ok(());
        }
        // Pointer arithmetic: only 64-bit add and subtract.
        let ptr_kind = if d.kind.is_pointer() { d.kind } else { src.kind };
        if !wide {
            return fail(
                pc,
                ErrorKind::PointerArithmetic { kind: ptr_kind.name(), detail: "32-bit pointer arithmetic" },
            );
        }
        let out = match (op, d.kind.is_pointer(), src.kind.is_pointer()) {
            (BPF_ADD, true, false) => self.ptr_add(pc, d, &src.val, false)?,
            (BPF_ADD, false, true) => self.ptr_add(pc, src, &d.val, false)?,
            (BPF_SUB, true, false) => self.ptr_add(pc, d, &src.val, true)?,
            (BPF_SUB, true, true) => {
                let related = (d.kind.is_packet() || d.kind == Kind::PacketEnd)
                    && (src.kind.is_packet() || src.kind == Kind::PacketEnd)
                    || d.kind == src.kind
                        && !matches!(
                            d.kind,
                            Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_) | Kind::MapPtr(_)
                        );
                if !related {
                    return fail(
                        pc,
                        ErrorKind::PointerArithmetic {
                            kind: d.kind.name(),
                            detail: "subtraction of an unrelated pointer",
                        },
                    );
                }
                Reg::scalar(Scalar::unknown())
            }
            (BPF_SUB, false, true) => {
                return fail(
                    pc,
                    ErrorKind::PointerArithmetic {
                        kind: src.kind.name(),
                        detail: "subtraction of a pointer from a scalar",
                    },
                );
            }
            (BPF_ADD, true, true) => {
                return fail(
                    pc,
                    ErrorKind::PointerArithmetic { kind: d.kind.name(), detail: "pointer + pointer" },
                );
            }
            _ => {
                return fail(
                    pc,
                    ErrorKind::PointerArithmetic { kind: ptr_kind.name(), detail: "only add and subtract" },
                );
            }
        };
        st.cur_mut().regs[dst] = out;
        Ok(())
    }

    fn ptr_add(&mut self, pc: usize, p: Reg, s: &Scalar, sub: bool) -> Res<Reg> {
        let kind = p.kind.name();
        match p.kind {
            Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_) => {
                return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "null-check it first" });
            }
            Kind::PacketEnd => return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "" }),
            Kind::MapPtr(_) | Kind::Func(_) => {
                if s.const_value() == Some(0) {
                    return Ok(p);
                }
                return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "" });
            }
            Kind::Stack(_) if sub => {
                return fail(
                    pc,
                    ErrorKind::PointerArithmetic { kind, detail: "subtraction from the stack pointer" },
                );
            }
            _ => {}
        }
        let mut r = p;
        if let Some(c) = s.const_value() {
            let c = c as i64;
            let off = if sub { p.off.checked_sub(c) } else { p.off.checked_add(c) };
            match off {
                Some(o) if o.abs() < MAX_VAR_OFF => r.off = o,
                _ => return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "offset out of bounds" }),
            }
            return Ok(r);
        }
        if s.smin == i64::MIN || s.smin <= -MAX_VAR_OFF || s.smax >= MAX_VAR_OFF {
            return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "offset register is unbounded" });
        }
        r.val = if sub { p.val.sub(s) } else { p.val.add(s) };
        if r.val.smin <= -MAX_VAR_OFF || r.val.smax >= MAX_VAR_OFF {
            return fail(pc, ErrorKind::PointerArithmetic { kind, detail: "offset out of bounds" });
        }
        if p.kind.is_packet() {
            r.id = self.new_id();
            r.range = 0;
        }
        Ok(r)
    }

    fn store(&mut self, pc: usize, insn: Insn, st: &mut State) -> Res<()> {
        let code = insn.code;
        let size = size_of(code);
        let mode = code & 0xe0;
        let base = self.reg(pc, st, insn.dst)?;
        if insn.class() == BPF_ST {
            if mode != BPF_MEM {
                return fail(pc, ErrorKind::UnsupportedOpcode { code });
            }
            let val = Reg::scalar(Scalar::konst(insn.imm as i64 as u64).truncate(size));
            self.mem(pc, st, insn.dst, base, i64::from(insn.off), size, Access::Write(val))?;
            return Ok(());
        }
        match mode {
            BPF_MEM => {
                let val = self.reg(pc, st, insn.src)?;
                let val =
                    if val.kind == Kind::Scalar { Reg { val: val.val.truncate(size), ..val } } else { val };
                self.mem(pc, st, insn.dst, base, i64::from(insn.off), size, Access::Write(val))?;
                Ok(())
            }
            BPF_ATOMIC if size >= 4 => self.atomic(pc, insn, st, base, size),
            _ => fail(pc, ErrorKind::UnsupportedOpcode { code }),
        }
    }

    fn atomic(&mut self, pc: usize, insn: Insn, st: &mut State, base: Reg, size: u32) -> Res<()> {
        let imm = insn.imm;
        let op = imm & !BPF_FETCH;
        if !(matches!(op, 0x00 | 0x40 | 0x50 | 0xa0) || imm == BPF_XCHG || imm == BPF_CMPXCHG) {
            return fail(pc, ErrorKind::BadField { code: insn.code, off: insn.off, imm });
        }
        let val = self.reg(pc, st, insn.src)?;
        if val.kind != Kind::Scalar {
            return fail(pc, ErrorKind::PointerLeak { reg: insn.src, into: "memory (atomic)" });
        }
        if imm == BPF_CMPXCHG {
            let r0 = self.reg(pc, st, 0)?;
            if r0.kind != Kind::Scalar {
                return fail(pc, ErrorKind::PointerLeak { reg: 0, into: "memory (atomic)" });
            }
        }
        match base.kind {
            Kind::Stack(_) | Kind::MapValue(_) => {}
            k => return fail(pc, ErrorKind::AtomicRegion { kind: k.name() }),
        }
        let total = base.off + i64::from(insn.off);
        let at = base.val.var.add(super::tnum::Tnum::konst(total as u64));
        if (at.value | at.mask) & u64::from(size - 1) != 0 {
            return fail(pc, ErrorKind::AtomicMisaligned { off: total, size });
        }
        let old = self.mem(pc, st, insn.dst, base, i64::from(insn.off), size, Access::Read)?;
        if old.kind != Kind::Scalar {
            return fail(
                pc,
                ErrorKind::StackSpill { reg: insn.dst, reason: "atomic operation on a spilled pointer" },
            );
        }
        self.mem(
            pc,
            st,
            insn.dst,
            base,
            i64::from(insn.off),
            size,
            Access::Write(Reg::scalar(Scalar::unknown_bytes(size))),
        )?;
        let fetched = Reg::scalar(Scalar::unknown_bytes(size));
        if imm == BPF_CMPXCHG {
            st.cur_mut().regs[0] = fetched;
        } else if imm & BPF_FETCH != 0 {
            let s = Self::check_dst(pc, insn.src)?;
            st.cur_mut().regs[s] = fetched;
        }
        Ok(())
    }

    fn note(&mut self, pc: usize, region: u8, field: Option<CtxField>) {
        let f = &mut self.facts[pc];
        if field.is_some() && f.ctx_field.is_some() && f.ctx_field != field {
            self.ctx_mixed[pc] = true;
        }
        if field.is_some() && f.ctx_field.is_none() {
            f.ctx_field = field;
        }
        f.regions |= region;
    }

    /// Checks one load or store of `size` bytes at `base + off`; returns what a load reads.
    #[expect(clippy::too_many_arguments, reason = "the access, as the instruction spells it")]
    fn mem(
        &mut self,
        pc: usize,
        st: &mut State,
        regno: u8,
        base: Reg,
        off: i64,
        size: u32,
        access: Access,
    ) -> Res<Reg> {
        let write_val = match access {
            Access::Write(v) => Some(v),
            Access::Read => None,
        };
        let leak = |into: &'static str| -> Res<()> {
            match write_val {
                Some(v) if v.kind.is_pointer() => fail(pc, ErrorKind::PointerLeak { reg: regno, into }),
                _ => Ok(()),
            }
        };
        match base.kind {
            Kind::Ctx => {
                self.note(pc, region::CTX, None);
                if base.off != 0 {
                    return fail(pc, ErrorKind::CtxModified { reg: regno, off: base.off });
                }
                if !base.val.is_const() || base.val.var.value != 0 {
                    return fail(pc, ErrorKind::VarOffset { reg: regno, kind: "ctx" });
                }
                if write_val.is_some() {
                    return fail(pc, ErrorKind::CtxAccess { off, size, write: true });
                }
                let bad = ErrorKind::CtxAccess { off, size, write: false };
                if self.prog_type == ProgramType::Uprobe {
                    // `kprobe_prog_is_valid_access`: aligned reads inside `struct pt_regs`.
                    let ok = u64::try_from(off)
                        .is_ok_and(|o| crate::context::pt_regs::valid_access(o, size as usize));
                    if !ok {
                        return fail(pc, bad);
                    }
                    return Ok(Reg::scalar(Scalar::unknown_bytes(size)));
                }
                if size != 4 {
                    return fail(pc, bad);
                }
                let (field, reg) = match u32::try_from(off) {
                    Ok(xdp_md::DATA) => (CtxField::Data, Reg::pointer(Kind::Packet, 0)),
                    Ok(xdp_md::DATA_END) => (CtxField::DataEnd, Reg::pointer(Kind::PacketEnd, 0)),
                    Ok(xdp_md::DATA_META) => (CtxField::DataMeta, Reg::pointer(Kind::PacketMeta, 0)),
                    Ok(xdp_md::INGRESS_IFINDEX) => {
                        (CtxField::IngressIfindex, Reg::scalar(Scalar::unknown_bytes(4)))
                    }
                    Ok(xdp_md::RX_QUEUE_INDEX) => {
                        (CtxField::RxQueueIndex, Reg::scalar(Scalar::unknown_bytes(4)))
                    }
                    _ => return fail(pc, bad),
                };
                self.note(pc, region::CTX, Some(field));
                Ok(reg)
            }
            Kind::Packet | Kind::PacketMeta => {
                self.note(pc, region::PACKET, None);
                leak("the packet")?;
                if base.val.smin < 0 {
                    return fail(pc, ErrorKind::PacketVarOffset { reg: regno, smin: base.val.smin });
                }
                let o = base.off + off;
                if o < 0 || o + i64::from(size) > base.range {
                    return fail(pc, ErrorKind::PacketRange { reg: regno, off: o, size, range: base.range });
                }
                Ok(Reg::scalar(Scalar::unknown_bytes(size)))
            }
            Kind::MapValue(m) => {
                self.note(pc, region::MAP_VALUE, None);
                let info = &self.maps[m as usize];
                let o = base.off + off;
                let (min, max) = (o + base.val.smin.max(-MAX_VAR_OFF), o + base.val.smax.min(MAX_VAR_OFF));
                let vs = i64::from(info.def.value_size);
                if base.val.smin <= -MAX_VAR_OFF
                    || base.val.smax >= MAX_VAR_OFF
                    || min < 0
                    || max + i64::from(size) > vs
                {
                    return fail(
                        pc,
                        ErrorKind::MapValueBounds {
                            reg: regno,
                            map: info.name.clone(),
                            min,
                            max,
                            size,
                            value_size: info.def.value_size,
                        },
                    );
                }
                if write_val.is_some() {
                    if info.readonly() {
                        return fail(pc, ErrorKind::MapReadOnly { map: info.name.clone() });
                    }
                    leak("a map value")?;
                    return Ok(Reg::not_init());
                }
                if let (Some(data), true) = (&info.frozen, base.val.is_const()) {
                    let at = (o + base.val.var.value as i64) as usize;
                    if let Some(bytes) = data.get(at..at + size as usize) {
                        let mut v = [0u8; 8];
                        v[..bytes.len()].copy_from_slice(bytes);
                        return Ok(Reg::scalar(Scalar::konst(u64::from_le_bytes(v))));
                    }
                }
                Ok(Reg::scalar(Scalar::unknown_bytes(size)))
            }
            Kind::Stack(frame) => {
                self.note(pc, region::STACK, None);
                self.stack_access(pc, st, regno, base, frame, off, size, access)
            }
            Kind::RingbufMem(len) => {
                self.note(pc, region::MAP_VALUE, None);
                let o = base.off + off;
                let (min, max) = (o + base.val.smin.max(-MAX_VAR_OFF), o + base.val.smax.min(MAX_VAR_OFF));
                if base.val.smin <= -MAX_VAR_OFF
                    || base.val.smax >= MAX_VAR_OFF
                    || min < 0
                    || max + i64::from(size) > i64::from(len)
                {
                    return fail(pc, ErrorKind::RingbufBounds { reg: regno, min, max, size, len });
                }
                if write_val.is_some() {
                    leak("a ring-buffer record")?;
                    return Ok(Reg::not_init());
                }
                Ok(Reg::scalar(Scalar::unknown_bytes(size)))
            }
            Kind::MapKey(m) => {
                self.note(pc, region::MAP_VALUE, None);
                let info = &self.maps[m as usize];
                if write_val.is_some() {
                    return fail(pc, ErrorKind::MapKeyWrite { reg: regno });
                }
                let o = base.off + off;
                let (min, max) = (o + base.val.smin.max(-MAX_VAR_OFF), o + base.val.smax.min(MAX_VAR_OFF));
                if base.val.smin <= -MAX_VAR_OFF
                    || base.val.smax >= MAX_VAR_OFF
                    || min < 0
                    || max + i64::from(size) > i64::from(info.def.key_size)
                {
                    return fail(
                        pc,
                        ErrorKind::MapKeyBounds {
                            reg: regno,
                            map: info.name.clone(),
                            min,
                            max,
                            size,
                            key_size: info.def.key_size,
                        },
                    );
                }
                Ok(Reg::scalar(Scalar::unknown_bytes(size)))
            }
            Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_) => {
                fail(pc, ErrorKind::MaybeNull { reg: regno, kind: base.kind.name() })
            }
            k => fail(pc, ErrorKind::NotMemory { reg: regno, kind: k.name() }),
        }
    }

    /// Bytes `lo..hi` (offsets from the frame pointer) of `frame` are inside it; records the depth.
    fn stack_bounds(&mut self, pc: usize, st: &State, regno: u8, frame: u8, lo: i64, hi: i64) -> Res<()> {
        if lo < -(STACK_SIZE as i64) || hi > 0 || lo >= hi {
            return fail(pc, ErrorKind::StackBounds { reg: regno, off: lo, size: (hi - lo).max(0) as u32 });
        }
        let sub = st.frames[usize::from(frame)].subprog;
        let idx = self.cfg.subprogs.binary_search(&sub).unwrap_or(0);
        self.stack_depth[idx] = self.stack_depth[idx].max((-lo) as u32);
        Ok(())
    }

    #[expect(clippy::too_many_arguments, reason = "the access, as the instruction spells it")]
    fn stack_access(
        &mut self,
        pc: usize,
        st: &mut State,
        regno: u8,
        base: Reg,
        frame: u8,
        off: i64,
        size: u32,
        access: Access,
    ) -> Res<Reg> {
        let total = base.off + off;
        let fr = usize::from(frame);
        if let Some(var) = base.val.const_value() {
            let o = total + var as i64;
            self.stack_bounds(pc, st, regno, frame, o, o + i64::from(size))?;
            if o % i64::from(size) != 0 {
                return fail(pc, ErrorKind::StackMisaligned { reg: regno, off: o, size });
            }
            let byte = (o + STACK_SIZE as i64) as usize; // 0..512, 0 = lowest address
            let slot = (STACK_SIZE - 1 - byte) / 8;
            // Slot i covers fp-8(i+1) .. fp-8i, its byte 0 at fp-8(i+1).
            let in_slot = byte - (STACK_SIZE - 8 * (slot + 1));
            let n = size as usize;
            return match access {
                Access::Write(v) => {
                    if let Kind::Stack(k) = v.kind
                        && k > frame
                    {
                        return fail(
                            pc,
                            ErrorKind::StackSpill {
                                reg: regno,
                                reason: "pointer to a callee's stack stored in its caller's frame",
                            },
                        );
                    }
                    let s = st.frames[fr].slot_mut(slot);
                    if v.kind.is_pointer() {
                        if n != 8 {
                            return fail(
                                pc,
                                ErrorKind::StackSpill { reg: regno, reason: "partial spill of a pointer" },
                            );
                        }
                        *s = Slot { bytes: [Byte::Spill; 8], spill: Some((v, 8)) };
                    } else if in_slot == 0 {
                        s.unspill();
                        let mut bytes = s.bytes;
                        bytes[..n].fill(Byte::Spill);
                        *s = Slot {
                            bytes,
                            spill: Some((Reg { id: if n == 8 { v.id } else { 0 }, ..v }, n as u8)),
                        };
                    } else {
                        s.unspill();
                        let b = if v.val.const_value() == Some(0) { Byte::Zero } else { Byte::Misc };
                        s.bytes[in_slot..in_slot + n].fill(b);
                    }
                    Ok(Reg::not_init())
                }
                Access::Read => {
                    let s = st.frames[fr].slot(slot);
                    if let Some((r, ssize)) = s.spill
                        && in_slot == 0
                    {
                        if r.kind.is_pointer() {
                            if n != 8 {
                                return fail(
                                    pc,
                                    ErrorKind::StackSpill {
                                        reg: regno,
                                        reason: "partial fill of a spilled pointer",
                                    },
                                );
                            }
                            return Ok(r);
                        }
                        if n <= usize::from(ssize) {
                            let mut out = Reg::scalar(r.val.truncate(size));
                            if n == usize::from(ssize) && r.val.umax <= out.val.umax {
                                out.id = r.id;
                            }
                            return Ok(out);
                        }
                    }
                    let mut zero = true;
                    for (i, b) in s.bytes[in_slot..in_slot + n].iter().enumerate() {
                        match b {
                            Byte::Zero => {}
                            Byte::Misc => zero = false,
                            Byte::Spill => {
                                if s.spill.is_some_and(|(r, _)| r.kind.is_pointer()) {
                                    return fail(
                                        pc,
                                        ErrorKind::StackSpill {
                                            reg: regno,
                                            reason: "partial read of a spilled pointer",
                                        },
                                    );
                                }
                                zero = false;
                            }
                            Byte::Invalid => {
                                if !self.options.allow_uninit_stack {
                                    return fail(
                                        pc,
                                        ErrorKind::StackUninit { reg: regno, off: o + i as i64, size },
                                    );
                                }
                                self.uninit_read.set(true);
                                zero = false;
                            }
                        }
                    }
                    Ok(Reg::scalar(if zero { Scalar::konst(0) } else { Scalar::unknown_bytes(size) }))
                }
            };
        }
        // Variable offset.
        let at = base.val.var.add(super::tnum::Tnum::konst(total as u64));
        if (at.value | at.mask) & u64::from(size - 1) != 0 {
            return fail(pc, ErrorKind::StackMisaligned { reg: regno, off: total, size });
        }
        let lo = total + base.val.smin.max(-MAX_VAR_OFF);
        let hi = total + base.val.smax.min(MAX_VAR_OFF) + i64::from(size);
        self.stack_bounds(pc, st, regno, frame, lo, hi)?;
        match access {
            Access::Write(v) => {
                if v.kind.is_pointer() {
                    return fail(
                        pc,
                        ErrorKind::StackSpill {
                            reg: regno,
                            reason: "pointer stored at a variable stack offset",
                        },
                    );
                }
                let zero = v.val.const_value() == Some(0);
                for o in lo..hi {
                    let (slot, b) = Self::byte_at(o);
                    let s = st.frames[fr].slot_mut(slot);
                    s.unspill();
                    s.bytes[b] = if zero && s.bytes[b] == Byte::Zero { Byte::Zero } else { Byte::Misc };
                }
                Ok(Reg::not_init())
            }
            Access::Read => {
                self.stack_readable(pc, st, regno, fr, lo, hi)?;
                Ok(Reg::scalar(Scalar::unknown_bytes(size)))
            }
        }
    }

    /// (slot, byte in slot) of the stack byte at `o` from the frame pointer.
    fn byte_at(o: i64) -> (usize, usize) {
        let byte = (o + STACK_SIZE as i64) as usize;
        let slot = (STACK_SIZE - 1 - byte) / 8;
        (slot, byte - (STACK_SIZE - 8 * (slot + 1)))
    }

    /// Bytes `lo..hi` of frame `fr` may be read as plain bytes (by a helper or a variable read).
    fn stack_readable(&self, pc: usize, st: &State, regno: u8, fr: usize, lo: i64, hi: i64) -> Res<()> {
        for o in lo..hi {
            let (slot, b) = Self::byte_at(o);
            let s = st.frames[fr].slot(slot);
            match s.bytes[b] {
                Byte::Invalid if !self.options.allow_uninit_stack => {
                    return fail(pc, ErrorKind::StackUninit { reg: regno, off: o, size: (hi - lo) as u32 });
                }
                Byte::Invalid => self.uninit_read.set(true),
                _ => {}
            }
        }
        Ok(())
    }

    /// Memory a helper reads or writes: `size` bytes (at most `size_max`) at `reg`.
    fn helper_mem(
        &mut self,
        pc: usize,
        st: &mut State,
        regno: u8,
        reg: Reg,
        size: u64,
        write: bool,
    ) -> Res<()> {
        let arg_err = |reason: String| VerifierError {
            insn: pc,
            kind: ErrorKind::HelperArg { helper: "", arg: regno, reason },
            line: None,
            text: None,
        };
        let size_i = i64::try_from(size).map_err(|_| arg_err("size too large".into()))?;
        match reg.kind {
            Kind::Stack(frame) => {
                self.note(pc, region::STACK, None);
                let total = reg.off;
                let lo = total + reg.val.smin.max(-MAX_VAR_OFF);
                let hi = total + reg.val.smax.min(MAX_VAR_OFF) + size_i;
                if size == 0 {
                    return Ok(());
                }
                self.stack_bounds(pc, st, regno, frame, lo, hi)?;
                let fr = usize::from(frame);
                if write {
                    for o in lo..hi {
                        let (slot, b) = Self::byte_at(o);
                        let s = st.frames[fr].slot_mut(slot);
                        s.unspill();
                        s.bytes[b] = Byte::Misc;
                    }
                    Ok(())
                } else {
                    self.stack_readable(pc, st, regno, fr, lo, hi)
                }
            }
            Kind::Packet | Kind::PacketMeta | Kind::MapValue(_) | Kind::RingbufMem(_) | Kind::MapKey(_) => {
                if size == 0 {
                    return Ok(());
                }
                let access = if write { Access::Write(Reg::scalar(Scalar::unknown())) } else { Access::Read };
                // The whole span must be in bounds: check its first and last byte.
                let mut last = reg;
                last.off += size_i - 1;
                self.mem(pc, st, regno, reg, 0, 1, access)?;
                self.mem(pc, st, regno, last, 0, 1, access)?;
                Ok(())
            }
            Kind::Scalar if reg.val.const_value() == Some(0) && size == 0 => Ok(()),
            Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_) => {
                Err(arg_err("may be NULL; null-check it first".into()))
            }
            k => Err(arg_err(format!("expected a pointer to memory, got {}", k.name()))),
        }
    }

    /// A helper call; for a helper that calls a callback, the callback's entry state.
    fn helper(&mut self, pc: usize, id: i32, st: &mut State) -> Res<Option<(usize, State)>> {
        let Some(name) = u32::try_from(id).ok().and_then(crate::helpers::name) else {
            return fail(pc, ErrorKind::UnknownHelper { id });
        };
        if !self.prog_type.allows_helper(id as u32) {
            let prog_type = match self.prog_type {
                ProgramType::Xdp => "xdp",
                ProgramType::Uprobe => "uprobe",
            };
            return fail(pc, ErrorKind::HelperNotAllowed { helper: name, prog_type });
        }
        let with_name = |mut e: VerifierError| {
            if let ErrorKind::HelperArg { helper, .. } = &mut e.kind {
                *helper = name;
            }
            e
        };
        self.helper_args(pc, id as u32, name, st).map_err(with_name)?;
        let callback = if matches!(id as u32, helper::LOOP | helper::FOR_EACH_MAP_ELEM) {
            Some(self.callback_entry(pc, id as u32, st)?)
        } else {
            None
        };
        let ret = match id as u32 {
            helper::MAP_LOOKUP_ELEM => {
                let Kind::MapPtr(m) = st.cur().regs[1].kind else { return unreachable_map(pc) };
                Reg {
                    kind: Kind::MapValueOrNull(m),
                    off: 0,
                    val: Scalar::konst(0),
                    id: self.new_id(),
                    range: 0,
                }
            }
            helper::RINGBUF_RESERVE => {
                // helper_args proved the size a constant.
                let size = st.cur().regs[2].val.const_value().unwrap_or(0) as u32;
                let id = self.new_id();
                st.refs.push((id, pc));
                Reg { kind: Kind::RingbufMemOrNull(size), off: 0, val: Scalar::konst(0), id, range: 0 }
            }
            helper::RINGBUF_SUBMIT | helper::RINGBUF_DISCARD => {
                let id = st.cur().regs[1].id;
                st.refs.retain(|&(r, _)| r != id);
                // Every copy of the record pointer is dead (the kernel, for a privileged
                // loader, turns them into unknown scalars; addresses never become data here).
                st.for_each_reg(|r| {
                    if r.id == id && matches!(r.kind, Kind::RingbufMem(_)) {
                        *r = Reg::not_init();
                    }
                });
                Reg::scalar(Scalar::unknown())
            }
            helper::TAIL_CALL => Reg::not_init(),
            _ => Reg::scalar(Scalar::unknown()),
        };
        let changes_packet =
            matches!(id as u32, helper::XDP_ADJUST_HEAD | helper::XDP_ADJUST_META | helper::XDP_ADJUST_TAIL);
        let cur = st.cur_mut();
        for r in 1..=5 {
            cur.regs[r] = Reg::not_init();
        }
        cur.regs[0] = ret;
        if changes_packet {
            for fr in &mut st.frames {
                for r in &mut fr.regs {
                    if r.kind.is_packet() || r.kind == Kind::PacketEnd {
                        *r = Reg::not_init();
                    }
                }
                for s in &mut fr.stack {
                    if s.spill.is_some_and(|(r, _)| r.kind.is_packet() || r.kind == Kind::PacketEnd) {
                        s.spill = None;
                        s.bytes = [Byte::Misc; 8];
                    }
                }
            }
        }
        Ok(callback)
    }

    /// The state a callback starts in, called by helper `id` at `pc` (arguments checked): a
    /// new frame whose registers are the kernel's (`set_loop_callback_state`,
    /// `set_map_elem_callback_state`): for `bpf_loop`, r1 the index (any scalar) and r2 the
    /// context; for `bpf_for_each_map_elem`, r1 the map, r2 the element's key (read-only), r3
    /// its value and r4 the context. The caller's registers stay as they are: its walk comes
    /// back to the call when the callback exits.
    fn callback_entry(&mut self, pc: usize, id: u32, st: &State) -> Res<(usize, State)> {
        if st.frames.len() >= MAX_CALL_FRAMES {
            return fail(pc, ErrorKind::CallDepth { frames: st.frames.len() + 1 });
        }
        let caller = st.cur().regs;
        let Kind::Func(target) = caller[2].kind else {
            return fail(pc, ErrorKind::BadField { code: BPF_JMP | BPF_CALL, off: 0, imm: id as i32 });
        };
        if id == helper::LOOP {
            // The kernel's `update_loop_inline_state`.
            let zero_flags = caller[4].kind == Kind::Scalar && caller[4].val.const_value() == Some(0);
            let e = self.loop_inline.entry(pc).or_insert((zero_flags, target));
            *e = (e.0 && zero_flags && e.1 == target, e.1);
        }
        let mut regs = [Reg::not_init(); 11];
        if id == helper::LOOP {
            regs[1] = Reg::scalar(Scalar::unknown());
            regs[2] = caller[3];
        } else {
            let Kind::MapPtr(m) = caller[1].kind else { return unreachable_map(pc) };
            regs[1] = caller[1];
            regs[2] = Reg::pointer(Kind::MapKey(m), 0);
            regs[3] = Reg::pointer(Kind::MapValue(m), 0);
            regs[4] = caller[3];
        }
        regs[10] = Reg::pointer(Kind::Stack(st.frames.len() as u8), 0);
        let mut s = st.clone();
        s.frames.push(Frame {
            regs,
            stack: Vec::new(),
            callsite: pc,
            subprog: target as usize,
            callback: true,
        });
        Ok((target as usize, s))
    }

    fn helper_args(&mut self, pc: usize, id: u32, name: &'static str, st: &mut State) -> Res<()> {
        let arg = |a: u8, reason: String| VerifierError {
            insn: pc,
            kind: ErrorKind::HelperArg { helper: name, arg: a, reason },
            line: None,
            text: None,
        };
        let get = |this: &Self, st: &State, a: u8| this.reg(pc, st, a);
        let scalar = |this: &Self, st: &State, a: u8| -> Res<Scalar> {
            let r = get(this, st, a)?;
            if r.kind != Kind::Scalar {
                return Err(arg(a, format!("expected a scalar, got a {} (pointer leak)", r.kind.name())));
            }
            Ok(r.val)
        };
        // The map in argument `p`, of a type `allowed` accepts (`refusal` ends the message).
        let map = |this: &Self, st: &State, p: u8, allowed: fn(u32) -> bool, refusal: &str| -> Res<MapInfo> {
            let r = get(this, st, p)?;
            let Kind::MapPtr(m) = r.kind else {
                return Err(arg(p, format!("expected a map, got {}", r.kind.name())));
            };
            let info = &this.maps[m as usize];
            if !allowed(info.def.map_type) {
                return Err(arg(p, format!("map {} of type {} {refusal}", info.name, info.def.map_type)));
            }
            Ok(info.clone())
        };
        // The context pointer itself, unmoved, in argument `p`.
        let ctx = |this: &Self, st: &State, p: u8| -> Res<()> {
            let r = get(this, st, p)?;
            if r.kind != Kind::Ctx || r.off != 0 || r.val.const_value() != Some(0) {
                return Err(arg(p, format!("expected the context, got {}", r.kind.name())));
            }
            Ok(())
        };
        // A (pointer, size) pair: the size a bounded scalar, the memory readable over it.
        let mem_size = |this: &mut Self, st: &mut State, p: u8, nullable: bool| -> Res<()> {
            let size = scalar(this, st, p + 1)?;
            if size.smin < 0 {
                return Err(arg(p + 1, "size may be negative".into()));
            }
            if size.umax >= MAX_VAR_OFF as u64 {
                return Err(arg(p + 1, "size is unbounded".into()));
            }
            let ptr = get(this, st, p)?;
            if ptr.kind == Kind::Scalar {
                if nullable && ptr.val.const_value() == Some(0) {
                    if size.umax != 0 {
                        return Err(arg(p, "NULL with a non-zero size".into()));
                    }
                    return Ok(());
                }
                return Err(arg(p, "expected a pointer to memory, got a scalar".into()));
            }
            if size.umin == 0 && !nullable {
                return Err(arg(p + 1, "zero-sized read".into()));
            }
            this.helper_mem(pc, st, p, ptr, size.umax, false)
        };
        // A (pointer, size) pair the helper writes: the size a bounded scalar, the memory
        // writable over it (and initialised by the call).
        let out_mem_size = |this: &mut Self, st: &mut State, p: u8, zero_ok: bool| -> Res<()> {
            let size = scalar(this, st, p + 1)?;
            if size.smin < 0 {
                return Err(arg(p + 1, "size may be negative".into()));
            }
            if size.umax >= MAX_VAR_OFF as u64 {
                return Err(arg(p + 1, "size is unbounded".into()));
            }
            if size.umin == 0 && !zero_ok {
                return Err(arg(p + 1, "zero-sized write".into()));
            }
            let ptr = get(this, st, p)?;
            if ptr.kind == Kind::Scalar {
                return Err(arg(p, "expected a pointer to memory, got a scalar".into()));
            }
            this.helper_mem(pc, st, p, ptr, size.umax, true)
        };
        // A (pointer, size) pair read by the helper where the size may be zero but the pointer
        // must be one (`ARG_PTR_TO_MEM | MEM_RDONLY` with `ARG_CONST_SIZE_OR_ZERO`).
        let mem_size_or_zero = |this: &mut Self, st: &mut State, p: u8| -> Res<()> {
            let ptr = get(this, st, p)?;
            if !ptr.kind.is_pointer() {
                return Err(arg(p, format!("expected a pointer to memory, got {}", ptr.kind.name())));
            }
            mem_size(this, st, p, true)
        };
        match id {
            helper::MAP_LOOKUP_ELEM | helper::MAP_UPDATE_ELEM | helper::MAP_DELETE_ELEM => {
                use maps::map_type as t;
                let info = map(
                    self,
                    st,
                    1,
                    |ty| {
                        matches!(
                            ty,
                            t::HASH
                                | t::ARRAY
                                | t::PERCPU_HASH
                                | t::PERCPU_ARRAY
                                | t::LRU_HASH
                                | t::LRU_PERCPU_HASH
                                | t::LPM_TRIE
                        )
                    },
                    "is not supported",
                )?;
                let key = get(self, st, 2)?;
                self.helper_mem(pc, st, 2, key, u64::from(info.def.key_size), false)?;
                if id == helper::MAP_UPDATE_ELEM {
                    let value = get(self, st, 3)?;
                    self.helper_mem(pc, st, 3, value, u64::from(info.def.value_size), false)?;
                    scalar(self, st, 4)?;
                }
            }
            helper::KTIME_GET_NS | helper::GET_PRANDOM_U32 | helper::GET_SMP_PROCESSOR_ID => {}
            helper::TRACE_PRINTK => mem_size(self, st, 1, false)?,
            helper::TRACE_VPRINTK => {
                mem_size(self, st, 1, false)?;
                mem_size(self, st, 3, true)?;
            }
            helper::CSUM_DIFF => {
                mem_size(self, st, 1, true)?;
                mem_size(self, st, 3, true)?;
                scalar(self, st, 5)?;
            }
            helper::PROBE_READ
            | helper::PROBE_READ_STR
            | helper::PROBE_READ_USER
            | helper::PROBE_READ_USER_STR
            | helper::PROBE_READ_KERNEL
            | helper::PROBE_READ_KERNEL_STR => {
                // (ARG_PTR_TO_UNINIT_MEM, ARG_CONST_SIZE_OR_ZERO, ARG_ANYTHING)
                out_mem_size(self, st, 1, true)?;
                get(self, st, 3)?;
            }
            helper::PROBE_WRITE_USER => {
                // (ARG_ANYTHING, ARG_PTR_TO_MEM | MEM_RDONLY, ARG_CONST_SIZE)
                get(self, st, 1)?;
                mem_size(self, st, 2, false)?;
            }
            helper::GET_CURRENT_PID_TGID => {}
            helper::GET_CURRENT_COMM => out_mem_size(self, st, 1, false)?,
            helper::GET_FUNC_IP => {
                ctx(self, st, 1)?;
            }
            helper::REDIRECT => {
                scalar(self, st, 1)?;
                scalar(self, st, 2)?;
            }
            helper::TAIL_CALL => {
                ctx(self, st, 1)?;
                map(self, st, 2, |ty| ty == maps::map_type::PROG_ARRAY, "is not a program array")?;
                scalar(self, st, 3)?;
                if st.frames.len() > 1 {
                    return Err(arg(1, "tail calls from subprograms are not supported here".into()));
                }
                if let Some(&(id, insn)) = st.refs.first() {
                    return fail(pc, ErrorKind::UnreleasedReference { id, insn });
                }
            }
            helper::MAP_PUSH_ELEM | helper::MAP_POP_ELEM | helper::MAP_PEEK_ELEM => {
                use maps::map_type as t;
                let info =
                    map(self, st, 1, |ty| matches!(ty, t::QUEUE | t::STACK), "is not a queue or stack")?;
                let value = get(self, st, 2)?;
                let push = id == helper::MAP_PUSH_ELEM;
                self.helper_mem(pc, st, 2, value, u64::from(info.def.value_size), !push)?;
                if push {
                    scalar(self, st, 3)?;
                }
            }
            helper::RINGBUF_OUTPUT | helper::RINGBUF_RESERVE | helper::RINGBUF_QUERY => {
                map(self, st, 1, |ty| ty == maps::map_type::RINGBUF, "is not a ring buffer")?;
                match id {
                    helper::RINGBUF_OUTPUT => {
                        mem_size_or_zero(self, st, 2)?;
                        scalar(self, st, 4)?;
                    }
                    helper::RINGBUF_RESERVE => {
                        let size = scalar(self, st, 2)?;
                        if size.const_value().is_none() {
                            return Err(arg(2, "the record size is not a known constant".into()));
                        }
                        scalar(self, st, 3)?;
                    }
                    _ => {
                        scalar(self, st, 2)?;
                    }
                }
            }
            helper::RINGBUF_SUBMIT | helper::RINGBUF_DISCARD => {
                let rec = get(self, st, 1)?;
                match rec.kind {
                    Kind::RingbufMem(_) if rec.off == 0 && rec.val.const_value() == Some(0) => {}
                    Kind::RingbufMem(_) => {
                        return Err(arg(1, "a ring-buffer record must be released at offset 0".into()));
                    }
                    Kind::RingbufMemOrNull(_) => {
                        return Err(arg(1, "may be NULL; null-check it first".into()));
                    }
                    k => {
                        return Err(arg(1, format!("expected a ring-buffer record, got {}", k.name())));
                    }
                }
                if !st.refs.iter().any(|&(r, _)| r == rec.id) {
                    return Err(arg(1, "the record was already submitted or discarded".into()));
                }
                scalar(self, st, 2)?;
            }
            helper::PERF_EVENT_OUTPUT => {
                ctx(self, st, 1)?;
                map(self, st, 2, |ty| ty == maps::map_type::PERF_EVENT_ARRAY, "is not a perf event array")?;
                scalar(self, st, 3)?;
                mem_size_or_zero(self, st, 4)?;
            }
            helper::REDIRECT_MAP => {
                use maps::map_type as t;
                map(
                    self,
                    st,
                    1,
                    |ty| matches!(ty, t::DEVMAP | t::DEVMAP_HASH | t::XSKMAP),
                    "cannot be a redirect target",
                )?;
                scalar(self, st, 2)?;
                scalar(self, st, 3)?;
            }
            helper::XDP_ADJUST_HEAD | helper::XDP_ADJUST_META | helper::XDP_ADJUST_TAIL => {
                ctx(self, st, 1)?;
                scalar(self, st, 2)?;
            }
            helper::LOOP | helper::FOR_EACH_MAP_ELEM => {
                // bpf_loop(nr_loops, callback, ctx, flags) and bpf_for_each_map_elem(map,
                // callback, ctx, flags): ARG_ANYTHING / ARG_CONST_MAP_PTR, ARG_PTR_TO_FUNC,
                // ARG_PTR_TO_STACK_OR_NULL, ARG_ANYTHING (the helper refuses bad counts and
                // flags at run time, as the kernel's does).
                if id == helper::LOOP {
                    scalar(self, st, 1)?;
                } else {
                    use maps::map_type as t;
                    let info = map(
                        self,
                        st,
                        1,
                        |ty| {
                            matches!(
                                ty,
                                t::HASH
                                    | t::ARRAY
                                    | t::PERCPU_HASH
                                    | t::PERCPU_ARRAY
                                    | t::LRU_HASH
                                    | t::LRU_PERCPU_HASH
                            )
                        },
                        "cannot be iterated",
                    )?;
                    if info.def.key_size as usize > STACK_SIZE {
                        // The kernel cannot create such a map (a key must fit the stack).
                        return Err(arg(1, format!("the keys of {} exceed {STACK_SIZE} bytes", info.name)));
                    }
                }
                let f = get(self, st, 2)?;
                if !matches!(f.kind, Kind::Func(_)) {
                    return Err(arg(2, format!("expected a function (the callback), got {}", f.kind.name())));
                }
                let c = get(self, st, 3)?;
                match c.kind {
                    Kind::Stack(_) if c.val.is_const() => {}
                    Kind::Scalar if c.val.const_value() == Some(0) => {}
                    k => {
                        return Err(arg(
                            3,
                            format!(
                                "the callback context must point to the stack or be NULL, got {}",
                                k.name()
                            ),
                        ));
                    }
                }
                scalar(self, st, 4)?;
                if !st.refs.is_empty() {
                    // Stricter than the kernel: a callback starts with no reference held, so
                    // that one it leaves unreleased at its exit is its own.
                    return Err(arg(1, "a ring-buffer record is held: submit or discard it first".into()));
                }
            }
            _ => return fail(pc, ErrorKind::UnknownHelper { id: id as i32 }),
        }
        Ok(())
    }

    fn jmp(&mut self, pc: usize, insn: Insn, st: &mut State) -> Res<Flow> {
        let Insn { code, off, imm, .. } = insn;
        let jmp32 = insn.class() == BPF_JMP32;
        let op = code & 0xf0;
        let target = |o: i64| (pc as i64 + 1 + o) as usize;
        match op {
            BPF_JA => {
                if code & BPF_X != 0 {
                    return fail(pc, ErrorKind::UnsupportedOpcode { code });
                }
                return Ok(Flow::Next(target(if jmp32 { i64::from(imm) } else { i64::from(off) })));
            }
            BPF_CALL if !jmp32 => {
                return match insn.src {
                    CALL_HELPER => match self.helper(pc, imm, st)? {
                        // The callback's first run is queued; the helper may also call it
                        // no more (or never): the walk goes on after the call.
                        Some(callback) => Ok(Flow::Fork { first: Some(pc + 1), second: Some(callback) }),
                        None => Ok(Flow::Next(pc + 1)),
                    },
                    BPF_PSEUDO_CALL => {
                        if st.frames.len() >= MAX_CALL_FRAMES {
                            return fail(pc, ErrorKind::CallDepth { frames: st.frames.len() + 1 });
                        }
                        let t = target(i64::from(imm));
                        let caller = st.cur().regs;
                        let mut regs = [Reg::not_init(); 11];
                        regs[1..=5].copy_from_slice(&caller[1..=5]);
                        regs[10] = Reg::pointer(Kind::Stack(st.frames.len() as u8), 0);
                        st.frames.push(Frame {
                            regs,
                            stack: Vec::new(),
                            callsite: pc,
                            subprog: t,
                            callback: false,
                        });
                        Ok(Flow::Next(t))
                    }
                    BPF_PSEUDO_KFUNC_CALL => {
                        fail(pc, ErrorKind::Unsupported { what: "kernel function calls (kfuncs)" })
                    }
                    _ => fail(pc, ErrorKind::BadField { code, off, imm }),
                };
            }
            BPF_EXIT if !jmp32 => {
                let r0 = self.reg(pc, st, 0)?;
                if st.frames.len() == 1 {
                    if let Some(&(id, insn)) = st.refs.first() {
                        return fail(pc, ErrorKind::UnreleasedReference { id, insn });
                    }
                    if r0.kind != Kind::Scalar {
                        return fail(pc, ErrorKind::BadReturn { kind: r0.kind.name() });
                    }
                    return Ok(Flow::End);
                }
                let depth = st.frames.len() - 1;
                if st.cur().callback {
                    // A callback returns 0 (go on) or 1 (stop) to its helper, then the walk
                    // goes back to the helper call, which may run it again.
                    if r0.kind != Kind::Scalar || r0.val.smin < 0 || r0.val.smax > 1 {
                        let got = if r0.kind == Kind::Scalar {
                            format!("[{}, {}]", r0.val.smin, r0.val.smax)
                        } else {
                            r0.kind.name().to_string()
                        };
                        return fail(pc, ErrorKind::CallbackReturn { got });
                    }
                    if let Some(&(id, insn)) = st.refs.first() {
                        return fail(pc, ErrorKind::UnreleasedReference { id, insn });
                    }
                    let callsite = st.frames.pop().map_or(0, |f| f.callsite);
                    st.callback_walks += 1;
                    self.callback_return = true;
                    return Ok(Flow::Next(callsite));
                }
                if r0.kind == Kind::Stack(depth as u8) {
                    return fail(pc, ErrorKind::ReturnsStackPointer);
                }
                let callee = st.frames.pop().map_or(0, |f| f.callsite);
                let cur = st.cur_mut();
                cur.regs[0] = r0;
                for r in 1..=5 {
                    cur.regs[r] = Reg::not_init();
                }
                return Ok(Flow::Next(callee + 1));
            }
            _ => {}
        }
        let Some(cmp) = Cmp::from_op(op) else {
            return fail(pc, ErrorKind::UnsupportedOpcode { code });
        };
        let d = self.reg(pc, st, insn.dst)?;
        let x = code & BPF_X != 0;
        let s = if x {
            self.reg(pc, st, insn.src)?
        } else if jmp32 {
            Reg::scalar(Scalar::konst(u64::from(imm as u32)))
        } else {
            Reg::scalar(Scalar::konst(imm as i64 as u64))
        };
        let taken = target(i64::from(off));
        let fall = pc + 1;
        let width = if jmp32 { 32 } else { 64 };
        let (dn, sn) = (usize::from(insn.dst), usize::from(insn.src));

        if d.kind == Kind::Scalar && s.kind == Kind::Scalar {
            let mut out: [Option<State>; 2] = [None, None];
            for (i, c) in [cmp, cmp.negate()].into_iter().enumerate() {
                if let Some((a, b)) = refine(&d.val, &s.val, c, width) {
                    let mut ns = st.clone();
                    set_scalar(&mut ns, dn, a);
                    if x {
                        set_scalar(&mut ns, sn, b);
                    }
                    out[i] = Some(ns);
                }
            }
            return Ok(self.fork(st, out, taken, fall));
        }
        if jmp32 {
            return fail(pc, ErrorKind::PointerComparison { left: d.kind.name(), right: s.kind.name() });
        }
        // A pointer against NULL.
        let (p, other, p_is_dst) = if d.kind.is_pointer() { (d, s, true) } else { (s, d, false) };
        if other.kind == Kind::Scalar {
            if other.val.const_value() != Some(0) {
                return fail(pc, ErrorKind::PointerComparison { left: d.kind.name(), right: s.kind.name() });
            }
            let c = if p_is_dst { cmp } else { cmp.swap() };
            if !matches!(c, Cmp::Eq | Cmp::Ne) {
                if matches!(p.kind, Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_)) {
                    return fail(
                        pc,
                        ErrorKind::PointerComparison { left: d.kind.name(), right: s.kind.name() },
                    );
                }
                return Ok(self.fork(st, [Some(st.clone()), Some(st.clone())], taken, fall));
            }
            let (null_edge, nonnull_edge) = if c == Cmp::Eq { (taken, fall) } else { (fall, taken) };
            if let Kind::RingbufMemOrNull(len) = p.kind {
                // NULL: no record was reserved, so the reference is gone; else a record.
                let mut null = st.clone();
                let mut nonnull = st.clone();
                let id = p.id;
                null.refs.retain(|&(r, _)| r != id);
                null.for_each_reg(|r| {
                    if r.kind == p.kind && r.id == id {
                        *r = Reg::scalar(Scalar::konst(0));
                    }
                });
                nonnull.for_each_reg(|r| {
                    if r.kind == p.kind && r.id == id {
                        r.kind = Kind::RingbufMem(len);
                    }
                });
                let out = if null_edge == taken {
                    [Some(null), Some(nonnull)]
                } else {
                    [Some(nonnull), Some(null)]
                };
                return Ok(self.fork(st, out, taken, fall));
            }
            if let Kind::MapValueOrNull(m) = p.kind {
                let mut null = st.clone();
                let mut nonnull = st.clone();
                let id = p.id;
                null.for_each_reg(|r| {
                    if r.kind == p.kind && r.id == id {
                        *r = Reg::scalar(Scalar::konst(0));
                    }
                });
                nonnull.for_each_reg(|r| {
                    if r.kind == p.kind && r.id == id {
                        r.kind = Kind::MapValue(m);
                        r.id = 0;
                    }
                });
                let out = if null_edge == taken {
                    [Some(null), Some(nonnull)]
                } else {
                    [Some(nonnull), Some(null)]
                };
                return Ok(self.fork(st, out, taken, fall));
            }
            let out = if nonnull_edge == taken { [Some(st.clone()), None] } else { [None, Some(st.clone())] };
            return Ok(self.fork(st, out, taken, fall));
        }
        // Two pointers.
        let pkt = |k: Kind| k.is_packet() || k == Kind::PacketEnd;
        if pkt(d.kind) && pkt(s.kind) {
            let mut out: [Option<State>; 2] = [Some(st.clone()), Some(st.clone())];
            for (i, c) in [cmp, cmp.negate()].into_iter().enumerate() {
                if let Some(ns) = out[i].as_mut() {
                    pkt_refine(ns, &d, &s, c);
                }
            }
            return Ok(self.fork(st, out, taken, fall));
        }
        if d.kind == s.kind && !matches!(d.kind, Kind::MapValueOrNull(_) | Kind::RingbufMemOrNull(_)) {
            return Ok(self.fork(st, [Some(st.clone()), Some(st.clone())], taken, fall));
        }
        fail(pc, ErrorKind::PointerComparison { left: d.kind.name(), right: s.kind.name() })
    }

    /// Continues with the taken edge's state (`out[0]`) or the fall-through's (`out[1]`).
    fn fork(&mut self, st: &mut State, out: [Option<State>; 2], taken: usize, fall: usize) -> Flow {
        let [t, f] = out;
        match (t, f) {
            (Some(t), Some(f)) => {
                *st = f;
                Flow::Fork { first: Some(fall), second: Some((taken, t)) }
            }
            (Some(t), None) => {
                *st = t;
                Flow::Fork { first: Some(taken), second: None }
            }
            (None, Some(f)) => {
                *st = f;
                Flow::Fork { first: Some(fall), second: None }
            }
            (None, None) => Flow::Fork { first: None, second: None },
        }
    }
}

fn unreachable_map<T>(pc: usize) -> Res<T> {
    fail(pc, ErrorKind::HelperArg { helper: "bpf_map_lookup_elem", arg: 1, reason: "expected a map".into() })
}

/// Sets register `r` of the current frame to a refined scalar, and every scalar linked to it.
fn set_scalar(st: &mut State, r: usize, val: Scalar) {
    let id = st.cur().regs[r].id;
    st.cur_mut().regs[r].val = val;
    if id != 0 {
        st.for_each_reg(|reg| {
            if reg.kind == Kind::Scalar && reg.id == id {
                reg.val = val;
            }
        });
    }
}

/// What `a cmp b` between packet pointers proves on one edge: the packet range of the pointer
/// compared with `data_end` (or with `data`, for a meta pointer).
fn pkt_refine(st: &mut State, a: &Reg, b: &Reg, cmp: Cmp) {
    // Normalise to `p REL limit`.
    let (p, limit, rel) = match (a.kind, b.kind) {
        (Kind::Packet, Kind::PacketEnd) => (a, b, cmp),
        (Kind::PacketEnd, Kind::Packet) => (b, a, cmp.swap()),
        (Kind::PacketMeta, Kind::Packet) => (a, b, cmp),
        (Kind::Packet, Kind::PacketMeta) => (b, a, cmp.swap()),
        _ => return,
    };
    if p.kind == Kind::PacketMeta && !(limit.off == 0 && limit.val.const_value() == Some(0)) {
        return;
    }
    let open = match rel {
        Cmp::Le => false,
        Cmp::Lt => true,
        _ => return,
    };
    if p.off < 0 || (p.off == 0 && open) {
        return;
    }
    if p.val.umax > MAX_PACKET_OFF || p.val.umax + p.off as u64 > MAX_PACKET_OFF {
        return;
    }
    let range = p.off + i64::from(open);
    let (kind, id) = (p.kind, p.id);
    st.for_each_reg(|r| {
        if r.kind == kind && r.id == id {
            r.range = r.range.max(range);
        }
    });
}

/// A byte swap or truncation (`BPF_END`) of a scalar.
fn end_op(v: &Scalar, code: u8, imm: i32, wide: bool) -> Scalar {
    let bits = imm as u32;
    let to_be = code & BPF_X != 0 || wide;
    if let Some(c) = v.const_value() {
        let r = match (to_be, bits) {
            (false, 16) => c & 0xffff,
            (false, 32) => c & 0xffff_ffff,
            (false, _) => c,
            (true, 16) => u64::from((c as u16).swap_bytes()),
            (true, 32) => u64::from((c as u32).swap_bytes()),
            (true, _) => c.swap_bytes(),
        };
        return Scalar::konst(r);
    }
    if !to_be {
        return v.truncate(bits / 8);
    }
    Scalar::unknown_bytes(bits / 8)
}
