//! The interpreter: runs a [`Program`] instruction by instruction, as the kernel's
//! `___bpf_prog_run` does, with every memory access checked.
//!
//! Semantics follow RFC 9669 and the kernel: 32-bit ALU results are zero-extended; division by
//! zero yields 0 and modulo by zero leaves the dividend (truncated to 32 bits for ALU32);
//! shift amounts are masked to the operand width; `sdiv`/`smod` of the minimum by -1 wrap.
//! bpf-to-bpf calls save r6-r9 and give the callee a fresh 512-byte frame, at most
//! [`MAX_CALL_FRAMES`] deep.

use maps::Map;
use std::sync::Arc;

use crate::context::Context;
use crate::helpers::{self, callbacks, id, map_ops};
use crate::insn::*;
use crate::memory::{AtomicOp, Memory, Region};
use crate::program::{MAP_HANDLE_TAG, Program};

/// Taken backward jumps allowed in one run before it is stopped: a program the verifier has
/// accepted never comes close; one that has not been verified cannot hang a worker.
pub const MAX_BACKWARD_JUMPS: u64 = 1 << 24;

/// A run that had to stop: what the program did and at which instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("instruction {pc}: {} of {size} bytes at {addr:#x} is outside the packet, stack, context and map values", if *write { "write" } else { "read" })]
    Memory { pc: usize, addr: u64, size: u8, write: bool },
    #[error("instruction {pc}: misaligned or out-of-bounds atomic access at {addr:#x}")]
    Atomic { pc: usize, addr: u64 },
    #[error("instruction {pc}: more than {MAX_CALL_FRAMES} nested calls")]
    CallDepth { pc: usize },
    #[error("instruction {pc}: {value:#x} is not a map")]
    NotAMap { pc: usize, value: u64 },
    #[error("instruction {pc}: helper {helper} got an argument it cannot read or write")]
    HelperArgument { pc: usize, helper: u32 },
    #[error(
        "instruction {pc}: more than {MAX_BACKWARD_JUMPS} backward jumps; the program does not terminate"
    )]
    LoopLimit { pc: usize },
    #[error("instruction {pc}: bpf_tail_call from a subprogram is not supported")]
    TailCallInSubprogram { pc: usize },
}

#[derive(Debug, Clone, Copy, Default)]
struct Frame {
    return_pc: usize,
    saved: [u64; 4],
    fp: u64,
}

/// An interpreter with its own stack; one per thread, reused across runs.
#[derive(Debug)]
pub struct Interpreter {
    stack: Box<[u64]>,
    frames: [Frame; MAX_CALL_FRAMES],
}

impl Default for Interpreter {
    fn default() -> Self {
        Self::new()
    }
}

/// The run's stack memory: the key area of `bpf_for_each_map_elem` callbacks at the bottom
/// ([`callbacks::KEY_AREA`]), then the eight frames, frame 0 at the top.
const STACK_WORDS: usize = (STACK_SIZE * MAX_CALL_FRAMES + callbacks::KEY_AREA) / 8;

impl Interpreter {
    /// A fresh interpreter (a zeroed 4 KiB stack for eight frames, and the callbacks' key area).
    #[must_use]
    pub fn new() -> Self {
        Self {
            stack: vec![0u64; STACK_WORDS].into_boxed_slice(),
            frames: [Frame::default(); MAX_CALL_FRAMES],
        }
    }

    /// Runs `prog` once on `state`, using per-CPU slot `slot`; returns `r0`.
    ///
    /// # Errors
    /// A [`Fault`] when the program does something the kernel's verifier would have refused.
    pub fn run<C: Context>(
        &mut self,
        prog: &Program<C>,
        state: &mut C::State<'_>,
        slot: usize,
    ) -> Result<u64, Fault> {
        let (packet_start, packet_len) = C::memory(state);
        let stack_start = self.stack.as_mut_ptr() as usize;
        let mem = Memory {
            packet: Region { start: packet_start, len: packet_len },
            stack: Region { start: stack_start, len: STACK_WORDS * 8 },
            maps: prog.maps(),
        };
        let ctx = C::address(state);
        let mut regs = [0u64; 16];
        regs[1] = ctx;
        // Frame 0 is the top 512 bytes; each call moves r10 down by one frame.
        regs[10] = (stack_start + STACK_WORDS * 8) as u64;
        let tails = prog.tail_words();
        let mut backward = 0;
        run_loop::<C>(
            prog.words(),
            tails,
            prog.maps(),
            &mem,
            &mut self.frames,
            &mut regs,
            state,
            ctx,
            slot,
            (0, 0),
            &mut backward,
        )
    }
}

/// The map a map handle names, if it is one.
pub(crate) fn map_handle(maps: &[Arc<Map>], value: u64) -> Option<&Map> {
    if value & !0xffff_ffff == MAP_HANDLE_TAG {
        maps.get((value & 0xffff_ffff) as usize).map(|m| &**m)
    } else {
        None
    }
}

/// Applies a map-pointer argument: the map it names, or a fault.
#[inline(always)]
fn map_arg(maps: &[Arc<Map>], value: u64, pc: usize) -> Result<&Map, Fault> {
    if value & !0xffff_ffff == MAP_HANDLE_TAG
        && let Some(m) = maps.get((value & 0xffff_ffff) as usize)
    {
        return Ok(m);
    }
    Err(Fault::NotAMap { pc, value })
}

struct Strings<'a, 'm>(&'a Memory<'m>);

impl helpers::StrReader for Strings<'_, '_> {
    fn read_str(&self, addr: u64, max: usize, out: &mut Vec<u8>) -> bool {
        for i in 0..max as u64 {
            let mut b = [0u8];
            if !self.0.read(addr.wrapping_add(i), &mut b) {
                return i > 0;
            }
            if b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        true
    }
}

#[expect(clippy::too_many_arguments, reason = "the hot loop's state, kept in locals")]
#[inline(never)]
fn run_loop<C: Context>(
    words: &[u64],
    tails: &[Arc<[u64]>],
    maps: &[Arc<Map>],
    mem: &Memory<'_>,
    frames: &mut [Frame; MAX_CALL_FRAMES],
    regs_in: &mut [u64; 16],
    state: &mut C::State<'_>,
    ctx: u64,
    slot: usize,
    (entry, base): (usize, usize),
    backward_io: &mut u64,
) -> Result<u64, Fault> {
    let ctx_region = Region { start: ctx as usize, len: C::SIZE as usize };
    let mut regs = *regs_in;
    // A callback's run starts at its function, `base` frames deep, and ends at its exit.
    let mut depth = base;
    let mut backward = *backward_io;
    let mut pc = entry;
    let mut words = words;
    let mut tail_calls = 0u32;
    loop {
        // One instruction, as the little-endian word of `struct bpf_insn`: fields are decoded
        // from the register by each arm, so nothing is kept live across the match.
        let w = words[pc];
        let cur = pc;
        pc += 1;

        macro_rules! d {
            () => {
                ((w >> 8) & 0x0f) as usize
            };
        }
        macro_rules! s {
            () => {
                ((w >> 12) & 0x0f) as usize
            };
        }
        macro_rules! off {
            () => {
                (w >> 16) as i16
            };
        }
        macro_rules! imm {
            () => {
                (w >> 32) as i32
            };
        }
        macro_rules! k64 {
            () => {
                imm!() as i64 as u64
            };
        }
        macro_rules! x64 {
            () => {
                regs[s!()]
            };
        }
        macro_rules! k32 {
            () => {
                imm!() as u32
            };
        }
        macro_rules! x32 {
            () => {
                regs[s!()] as u32
            };
        }
        macro_rules! alu32 {
            ($f:expr) => {{
                let dst = regs[d!()] as u32;
                let r: u32 = $f(dst);
                regs[d!()] = u64::from(r);
            }};
        }
        macro_rules! load {
            ($size:expr) => {{
                let a = regs[s!()].wrapping_add(off!() as i64 as u64);
                match mem.load_or(a, $size, |a| {
                    if ctx_region.holds(a, $size) { C::load(state, a - ctx, $size) } else { None }
                }) {
                    Some(v) => v,
                    None => return Err(Fault::Memory { pc: cur, addr: a, size: $size as u8, write: false }),
                }
            }};
        }
        macro_rules! store {
            ($size:expr, $val:expr) => {{
                let a = regs[d!()].wrapping_add(off!() as i64 as u64);
                if mem.store(a, $size, $val).is_none() {
                    return Err(Fault::Memory { pc: cur, addr: a, size: $size as u8, write: true });
                }
            }};
        }
        macro_rules! jump_by {
            ($delta:expr) => {{
                let delta: i64 = $delta;
                if delta < 0 {
                    backward += 1;
                    if backward > MAX_BACKWARD_JUMPS {
                        return Err(Fault::LoopLimit { pc: cur });
                    }
                }
                pc = pc.wrapping_add(delta as usize);
            }};
        }
        macro_rules! jump_if {
            ($cond:expr) => {{
                if $cond {
                    jump_by!(i64::from(off!()));
                }
            }};
        }

        match w as u8 {
            // ---- ALU64
            0x07 => regs[d!()] = regs[d!()].wrapping_add(k64!()),
            0x0f => regs[d!()] = regs[d!()].wrapping_add(x64!()),
            0x17 => regs[d!()] = regs[d!()].wrapping_sub(k64!()),
            0x1f => regs[d!()] = regs[d!()].wrapping_sub(x64!()),
            0x27 => regs[d!()] = regs[d!()].wrapping_mul(k64!()),
            0x2f => regs[d!()] = regs[d!()].wrapping_mul(x64!()),
            0x37 | 0x3f => {
                let v = if w as u8 == 0x37 { k64!() } else { x64!() };
                let dst = regs[d!()];
                regs[d!()] = match (v, off!()) {
                    (0, _) => 0,
                    (_, 1) => (dst as i64).wrapping_div(v as i64) as u64,
                    _ => dst / v,
                };
            }
            0x47 => regs[d!()] |= k64!(),
            0x4f => regs[d!()] |= x64!(),
            0x57 => regs[d!()] &= k64!(),
            0x5f => regs[d!()] &= x64!(),
            0x67 => regs[d!()] <<= k64!() & 63,
            0x6f => regs[d!()] <<= x64!() & 63,
            0x77 => regs[d!()] >>= k64!() & 63,
            0x7f => regs[d!()] >>= x64!() & 63,
            0x87 => regs[d!()] = regs[d!()].wrapping_neg(),
            0x97 | 0x9f => {
                let v = if w as u8 == 0x97 { k64!() } else { x64!() };
                let dst = regs[d!()];
                if v != 0 {
                    regs[d!()] =
                        if off!() == 1 { (dst as i64).wrapping_rem(v as i64) as u64 } else { dst % v };
                }
            }
            0xa7 => regs[d!()] ^= k64!(),
            0xaf => regs[d!()] ^= x64!(),
            0xb7 => regs[d!()] = k64!(),
            0xbf => {
                let v = x64!();
                regs[d!()] = match off!() {
                    8 => v as i8 as i64 as u64,
                    16 => v as i16 as i64 as u64,
                    32 => v as i32 as i64 as u64,
                    _ => v,
                }
            }
            0xc7 => regs[d!()] = ((regs[d!()] as i64) >> (k64!() & 63)) as u64,
            0xcf => regs[d!()] = ((regs[d!()] as i64) >> (x64!() & 63)) as u64,
            0xd7 => {
                let v = regs[d!()];
                regs[d!()] = match imm!() {
                    16 => u64::from((v as u16).swap_bytes()),
                    32 => u64::from((v as u32).swap_bytes()),
                    _ => v.swap_bytes(),
                }
            }

            // ---- ALU (32-bit, zero-extended)
            0x04 => alu32!(|a: u32| a.wrapping_add(k32!())),
            0x0c => alu32!(|a: u32| a.wrapping_add(x32!())),
            0x14 => alu32!(|a: u32| a.wrapping_sub(k32!())),
            0x1c => alu32!(|a: u32| a.wrapping_sub(x32!())),
            0x24 => alu32!(|a: u32| a.wrapping_mul(k32!())),
            0x2c => alu32!(|a: u32| a.wrapping_mul(x32!())),
            0x34 | 0x3c => {
                let v = if w as u8 == 0x34 { k32!() } else { x32!() };
                let signed = off!() == 1;
                alu32!(|a: u32| match (v, signed) {
                    (0, _) => 0,
                    (_, true) => (a as i32).wrapping_div(v as i32) as u32,
                    _ => a / v,
                });
            }
            0x44 => alu32!(|a: u32| a | k32!()),
            0x4c => alu32!(|a: u32| a | x32!()),
            0x54 => alu32!(|a: u32| a & k32!()),
            0x5c => alu32!(|a: u32| a & x32!()),
            0x64 => alu32!(|a: u32| a << (k32!() & 31)),
            0x6c => alu32!(|a: u32| a << (x32!() & 31)),
            0x74 => alu32!(|a: u32| a >> (k32!() & 31)),
            0x7c => alu32!(|a: u32| a >> (x32!() & 31)),
            0x84 => alu32!(|a: u32| a.wrapping_neg()),
            0x94 | 0x9c => {
                let v = if w as u8 == 0x94 { k32!() } else { x32!() };
                let signed = off!() == 1;
                alu32!(|a: u32| match (v, signed) {
                    (0, _) => a,
                    (_, true) => (a as i32).wrapping_rem(v as i32) as u32,
                    _ => a % v,
                });
            }
            0xa4 => alu32!(|a: u32| a ^ k32!()),
            0xac => alu32!(|a: u32| a ^ x32!()),
            0xb4 => regs[d!()] = u64::from(k32!()),
            0xbc => {
                let v = x32!();
                regs[d!()] = u64::from(match off!() {
                    8 => v as i8 as i32 as u32,
                    16 => v as i16 as i32 as u32,
                    _ => v,
                });
            }
            0xc4 => alu32!(|a: u32| ((a as i32) >> (k32!() & 31)) as u32),
            0xcc => alu32!(|a: u32| ((a as i32) >> (x32!() & 31)) as u32),
            0xd4 => {
                let v = regs[d!()];
                regs[d!()] = match imm!() {
                    16 => u64::from(v as u16),
                    32 => u64::from(v as u32),
                    _ => v,
                }
            }
            0xdc => {
                let v = regs[d!()];
                regs[d!()] = match imm!() {
                    16 => u64::from((v as u16).swap_bytes()),
                    32 => u64::from((v as u32).swap_bytes()),
                    _ => v.swap_bytes(),
                }
            }

            // ---- loads and stores
            0x18 => {
                regs[d!()] = u64::from(imm!() as u32) | (words[pc] & 0xffff_ffff_0000_0000);
                pc += 1;
            }
            0x61 => regs[d!()] = load!(4),
            0x69 => regs[d!()] = load!(2),
            0x71 => regs[d!()] = load!(1),
            0x79 => regs[d!()] = load!(8),
            0x81 => regs[d!()] = load!(4) as u32 as i32 as i64 as u64,
            0x89 => regs[d!()] = load!(2) as u16 as i16 as i64 as u64,
            0x91 => regs[d!()] = load!(1) as u8 as i8 as i64 as u64,
            0x62 => store!(4, k64!()),
            0x6a => store!(2, k64!()),
            0x72 => store!(1, k64!()),
            0x7a => store!(8, k64!()),
            0x63 => store!(4, x64!()),
            0x6b => store!(2, x64!()),
            0x73 => store!(1, x64!()),
            0x7b => store!(8, x64!()),
            0xc3 | 0xdb => {
                let wide = w as u8 == 0xdb;
                let a = regs[d!()].wrapping_add(off!() as i64 as u64);
                let fault = Fault::Atomic { pc: cur, addr: a };
                let op = imm!();
                if op == BPF_CMPXCHG {
                    regs[0] = mem.cmpxchg(a, wide, regs[0], x64!()).ok_or(fault)?;
                } else {
                    let kind = match op & !BPF_FETCH {
                        0x00 => AtomicOp::Add,
                        0x40 => AtomicOp::Or,
                        0x50 => AtomicOp::And,
                        0xa0 => AtomicOp::Xor,
                        _ => AtomicOp::Xchg,
                    };
                    let old = mem.atomic(a, wide, kind, x64!()).ok_or(fault)?;
                    if op & BPF_FETCH != 0 {
                        regs[s!()] = old;
                    }
                }
            }

            // ---- jumps
            0x05 => jump_by!(i64::from(off!())),
            0x06 => jump_by!(i64::from(imm!())),
            0x15 => jump_if!(regs[d!()] == k64!()),
            0x1d => jump_if!(regs[d!()] == x64!()),
            0x25 => jump_if!(regs[d!()] > k64!()),
            0x2d => jump_if!(regs[d!()] > x64!()),
            0x35 => jump_if!(regs[d!()] >= k64!()),
            0x3d => jump_if!(regs[d!()] >= x64!()),
            0x45 => jump_if!(regs[d!()] & k64!() != 0),
            0x4d => jump_if!(regs[d!()] & x64!() != 0),
            0x55 => jump_if!(regs[d!()] != k64!()),
            0x5d => jump_if!(regs[d!()] != x64!()),
            0x65 => jump_if!((regs[d!()] as i64) > (k64!() as i64)),
            0x6d => jump_if!((regs[d!()] as i64) > (x64!() as i64)),
            0x75 => jump_if!((regs[d!()] as i64) >= (k64!() as i64)),
            0x7d => jump_if!((regs[d!()] as i64) >= (x64!() as i64)),
            0xa5 => jump_if!(regs[d!()] < k64!()),
            0xad => jump_if!(regs[d!()] < x64!()),
            0xb5 => jump_if!(regs[d!()] <= k64!()),
            0xbd => jump_if!(regs[d!()] <= x64!()),
            0xc5 => jump_if!((regs[d!()] as i64) < (k64!() as i64)),
            0xcd => jump_if!((regs[d!()] as i64) < (x64!() as i64)),
            0xd5 => jump_if!((regs[d!()] as i64) <= (k64!() as i64)),
            0xdd => jump_if!((regs[d!()] as i64) <= (x64!() as i64)),
            // JMP32: compare the low halves.
            0x16 => jump_if!(regs[d!()] as u32 == k32!()),
            0x1e => jump_if!(regs[d!()] as u32 == x32!()),
            0x26 => jump_if!(regs[d!()] as u32 > k32!()),
            0x2e => jump_if!(regs[d!()] as u32 > x32!()),
            0x36 => jump_if!(regs[d!()] as u32 >= k32!()),
            0x3e => jump_if!(regs[d!()] as u32 >= x32!()),
            0x46 => jump_if!(regs[d!()] as u32 & k32!() != 0),
            0x4e => jump_if!(regs[d!()] as u32 & x32!() != 0),
            0x56 => jump_if!(regs[d!()] as u32 != k32!()),
            0x5e => jump_if!(regs[d!()] as u32 != x32!()),
            0x66 => jump_if!((regs[d!()] as i32) > (k32!() as i32)),
            0x6e => jump_if!((regs[d!()] as i32) > (x32!() as i32)),
            0x76 => jump_if!((regs[d!()] as i32) >= (k32!() as i32)),
            0x7e => jump_if!((regs[d!()] as i32) >= (x32!() as i32)),
            0xa6 => jump_if!((regs[d!()] as u32) < k32!()),
            0xae => jump_if!((regs[d!()] as u32) < x32!()),
            0xb6 => jump_if!(regs[d!()] as u32 <= k32!()),
            0xbe => jump_if!(regs[d!()] as u32 <= x32!()),
            0xc6 => jump_if!((regs[d!()] as i32) < (k32!() as i32)),
            0xce => jump_if!((regs[d!()] as i32) < (x32!() as i32)),
            0xd6 => jump_if!((regs[d!()] as i32) <= (k32!() as i32)),
            0xde => jump_if!((regs[d!()] as i32) <= (x32!() as i32)),
            0x85 => {
                if s!() == usize::from(BPF_PSEUDO_CALL) {
                    if depth + 1 >= MAX_CALL_FRAMES {
                        return Err(Fault::CallDepth { pc: cur });
                    }
                    frames[depth] =
                        Frame { return_pc: pc, saved: [regs[6], regs[7], regs[8], regs[9]], fp: regs[10] };
                    depth += 1;
                    regs[10] -= STACK_SIZE as u64;
                    pc = pc.wrapping_add(imm!() as isize as usize);
                } else if matches!(imm!() as u32, id::LOOP | id::FOR_EACH_MAP_ELEM) {
                    let call = Callbacks { words, tails, maps, mem, depth, pc: cur };
                    let helper = imm!() as u32;
                    let inlined = off!() == callbacks::INLINED_LOOP;
                    regs[0] =
                        call.run::<C>(helper, inlined, &regs, frames, state, ctx, slot, &mut backward)?;
                } else if imm!() as u32 == id::TAIL_CALL {
                    if depth > 0 {
                        return Err(Fault::TailCallInSubprogram { pc: cur });
                    }
                    if regs[1] != ctx {
                        return Err(Fault::HelperArgument { pc: cur, helper: id::TAIL_CALL });
                    }
                    let map = map_arg(maps, regs[2], cur)?;
                    if let Some(target) = tail_target(map, regs[3], &mut tail_calls, tails) {
                        // The kernel's tail call: the target starts over on this frame with
                        // r1 = ctx; nothing returns here.
                        words = target;
                        pc = 0;
                        regs[10] = regs_in[10];
                    }
                } else {
                    regs[0] = call_helper::<C>(imm!() as u32, &regs, maps, mem, state, ctx, slot, cur)?;
                }
            }
            0x95 => {
                if depth == base {
                    *backward_io = backward;
                    return Ok(regs[0]);
                }
                depth -= 1;
                let f = frames[depth];
                pc = f.return_pc;
                regs[6..10].copy_from_slice(&f.saved);
                regs[10] = f.fp;
            }
            // `Program::new` admits no other opcode.
            code => unreachable!("opcode {code:#04x} passed the load-time check"),
        }
    }
}

/// Where a callback-calling helper was called: the program, the depth of the caller's frame.
struct Callbacks<'r, 'm> {
    words: &'r [u64],
    tails: &'r [Arc<[u64]>],
    maps: &'r [Arc<Map>],
    mem: &'r Memory<'m>,
    depth: usize,
    pc: usize,
}

impl Callbacks<'_, '_> {
    /// `bpf_loop` or `bpf_for_each_map_elem` (`helper`) with the caller's registers: each call
    /// of the callback runs its function in the frame below the caller's, to its exit. Each
    /// call counts as a backward jump.
    #[expect(clippy::too_many_arguments, reason = "the interpreter's run state, passed through")]
    #[inline(never)]
    fn run<C: Context>(
        &self,
        helper: u32,
        inlined: bool,
        regs: &[u64; 16],
        frames: &mut [Frame; MAX_CALL_FRAMES],
        state: &mut C::State<'_>,
        ctx: u64,
        slot: usize,
        backward: &mut u64,
    ) -> Result<u64, Fault> {
        let pc = self.pc;
        let arg_fault = Fault::HelperArgument { pc, helper };
        let target = callbacks::func_target(regs[2]).filter(|&t| t < self.words.len()).ok_or(arg_fault)?;
        let callee = self.depth + 1;
        if callee >= MAX_CALL_FRAMES {
            return Err(Fault::CallDepth { pc });
        }
        let fp = regs[10].wrapping_sub(STACK_SIZE as u64);
        let mut call = |args: [u64; 5]| -> Result<u64, Fault> {
            *backward += 1;
            if *backward > MAX_BACKWARD_JUMPS {
                return Err(Fault::LoopLimit { pc });
            }
            let mut r = [0u64; 16];
            r[1..6].copy_from_slice(&args);
            r[10] = fp;
            run_loop::<C>(
                self.words,
                self.tails,
                self.maps,
                self.mem,
                frames,
                &mut r,
                state,
                ctx,
                slot,
                (target, callee),
                backward,
            )
        };
        if helper == id::LOOP {
            return callbacks::bpf_loop(regs[1], regs[3], regs[4], inlined, |i, c| call([i, c, 0, 0, 0]));
        }
        let map = map_arg(self.maps, regs[1], pc)?;
        let key_at = (self.mem.stack.start + callee * callbacks::KEY_SLOT) as u64;
        let (m, c) = (regs[1], regs[3]);
        callbacks::for_each_map_elem(
            map,
            regs[4],
            slot,
            self.mem,
            key_at,
            || arg_fault,
            |k, v| call([m, k, v, c, 0]),
        )
    }
}

/// `bpf_tail_call(ctx, map, index)` after the argument checks, as the kernel's interpreter
/// does it: an index beyond the array or a spent budget (`MAX_TAIL_CALL_CNT`) fails; otherwise
/// the count goes up, even when the slot then turns out to be empty. The target's words, when
/// there is one to run.
pub(crate) fn tail_target<'t>(
    map: &Map,
    index: u64,
    count: &mut u32,
    tails: &'t [Arc<[u64]>],
) -> Option<&'t [u64]> {
    let index = index as u32;
    if map.def().map_type != maps::map_type::PROG_ARRAY || index >= map.def().max_entries {
        return None;
    }
    if *count >= maps::MAX_TAIL_CALL_CNT {
        return None;
    }
    *count += 1;
    let id = map.prog_id(index)?;
    tails.get(id as usize).map(|w| &w[..])
}

#[expect(clippy::too_many_arguments, reason = "the interpreter's run state, passed through")]
#[inline(always)]
pub(crate) fn call_helper<C: Context>(
    helper: u32,
    regs: &[u64; 16],
    maps: &[Arc<Map>],
    mem: &Memory<'_>,
    state: &mut C::State<'_>,
    ctx: u64,
    slot: usize,
    pc: usize,
) -> Result<u64, Fault> {
    let arg_fault = Fault::HelperArgument { pc, helper };
    let r = match helper {
        id::MAP_LOOKUP_ELEM => {
            let map = map_arg(maps, regs[1], pc)?;
            let ks = map.def().key_size as usize;
            let found = mem.with_bytes(regs[2], ks, |key| map.lookup(key, slot)).ok_or(arg_fault)?;
            found.map_or(0, |p| p.as_ptr() as u64)
        }
        id::MAP_UPDATE_ELEM => {
            let map = map_arg(maps, regs[1], pc)?;
            let (ks, vs) = (map.def().key_size as usize, map.def().value_size as usize);
            let flags = regs[4];
            let result = mem
                .with_bytes(regs[2], ks, |key| {
                    mem.with_bytes(regs[3], vs, |value| map.update(key, value, flags, slot))
                })
                .flatten()
                .ok_or(arg_fault)?;
            result.map_or_else(|e| e.to_ret(), |()| 0)
        }
        id::MAP_DELETE_ELEM => {
            let map = map_arg(maps, regs[1], pc)?;
            let ks = map.def().key_size as usize;
            let result = mem.with_bytes(regs[2], ks, |key| map.delete_from(key, slot)).ok_or(arg_fault)?;
            result.map_or_else(|e| e.to_ret(), |()| 0)
        }
        id::KTIME_GET_NS => crate::sys::monotonic_ns(),
        id::GET_PRANDOM_U32 => helpers::prandom_u32(),
        id::GET_SMP_PROCESSOR_ID => slot as u64,
        id::TRACE_PRINTK => {
            let size = regs[2] as u32 as usize;
            if size == 0 {
                return Err(arg_fault);
            }
            let args = [regs[3], regs[4], regs[5]];
            mem.with_bytes(regs[1], size, |fmt| helpers::trace_printk(fmt, &args, &Strings(mem)))
                .ok_or(arg_fault)?
        }
        id::TRACE_VPRINTK => {
            let (size, data_len) = (regs[2] as u32 as usize, regs[4] as u32 as usize);
            if size == 0 {
                return Err(arg_fault);
            }
            if data_len % 8 != 0 || data_len > 8 * helpers::MAX_VPRINTK_ARGS {
                return Ok(helpers::errno_ret(libc::EINVAL));
            }
            let mut args = [0u64; helpers::MAX_VPRINTK_ARGS];
            let read = mem.with_bytes(regs[3], data_len, |data| {
                for (a, c) in args.iter_mut().zip(data.chunks_exact(8)) {
                    *a = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                }
            });
            read.ok_or(arg_fault)?;
            let args = &args[..data_len / 8];
            mem.with_bytes(regs[1], size, |fmt| helpers::trace_printk(fmt, args, &Strings(mem)))
                .ok_or(arg_fault)?
        }
        id::CSUM_DIFF => {
            let (from_size, to_size) = (regs[2] as u32 as usize, regs[4] as u32 as usize);
            let seed = regs[5] as u32;
            mem.with_bytes(regs[1], from_size, |from| {
                mem.with_bytes(regs[3], to_size, |to| helpers::csum_diff(from, to, seed))
            })
            .flatten()
            .ok_or(arg_fault)?
        }
        h if helpers::tracing::handles(h) => helpers::tracing::call(h, regs, mem).ok_or(arg_fault)?,
        id::MAP_PUSH_ELEM => {
            map_ops::push(map_arg(maps, regs[1], pc)?, mem, regs[2], regs[3]).ok_or(arg_fault)?
        }
        id::MAP_POP_ELEM | id::MAP_PEEK_ELEM => {
            let map = map_arg(maps, regs[1], pc)?;
            map_ops::take(map, mem, regs[2], helper == id::MAP_POP_ELEM).ok_or(arg_fault)?
        }
        id::RINGBUF_OUTPUT => {
            let map = map_arg(maps, regs[1], pc)?;
            map_ops::ringbuf_output(map, mem, regs[2], regs[3], regs[4]).ok_or(arg_fault)?
        }
        id::RINGBUF_RESERVE => {
            map_ops::ringbuf_reserve(map_arg(maps, regs[1], pc)?, regs[2], regs[3]).ok_or(arg_fault)?
        }
        id::RINGBUF_SUBMIT | id::RINGBUF_DISCARD => {
            map_ops::ringbuf_commit(maps, regs[1], regs[2], helper == id::RINGBUF_DISCARD).ok_or(arg_fault)?
        }
        id::RINGBUF_QUERY => map_ops::ringbuf_query(map_arg(maps, regs[1], pc)?, regs[2]).ok_or(arg_fault)?,
        id::PERF_EVENT_OUTPUT => {
            if regs[1] != ctx {
                return Err(arg_fault);
            }
            let map = map_arg(maps, regs[2], pc)?;
            let ctx_data = C::event_data(state);
            map_ops::perf_event_output(map, mem, ctx_data, slot, regs[3], regs[4], regs[5])
                .ok_or(arg_fault)?
        }
        id::REDIRECT => {
            let target = C::redirect_slot(state).ok_or(arg_fault)?;
            helpers::redirect::redirect(target, regs[1], regs[2])
        }
        id::REDIRECT_MAP => {
            let map = map_arg(maps, regs[1], pc)?;
            let index = (regs[1] & 0xffff_ffff) as u32;
            let target = C::redirect_slot(state).ok_or(arg_fault)?;
            helpers::redirect::redirect_map(target, map, index, regs[2], regs[3]).ok_or(arg_fault)?
        }
        _ => {
            if regs[1] != ctx {
                return Err(arg_fault);
            }
            let args = [regs[1], regs[2], regs[3], regs[4], regs[5]];
            C::call(state, helper, &args).ok_or(arg_fault)?
        }
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{XDP_FRAME_SIZE, Xdp, XdpBuff};
    use crate::program::Program;

    const fn i(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn::new(code, dst, src, off, imm)
    }
    const EXIT: Insn = i(0x95, 0, 0, 0, 0);

    fn run_with(insns: &[Insn], maps: &[Arc<Map>]) -> Result<u64, Fault> {
        let prog = Program::<Xdp>::from_insns("t", insns, maps).expect("loads");
        let mut frame = vec![0u8; XDP_FRAME_SIZE];
        let packet: Vec<u8> = (0..64).collect();
        let mut buff = XdpBuff::load(&mut frame, &packet).unwrap();
        Interpreter::new().run(&prog, &mut buff, 0)
    }

    fn run(insns: &[Insn]) -> u64 {
        run_with(insns, &[]).expect("no fault")
    }

    /// r0 = a; r1 = b; r0 = r0 OP r1; exit.
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
        assert_eq!(binop(0x3f, 0, 7, 0), 0, "div64 by zero is 0");
        assert_eq!(binop(0x9f, 0, 7, 0), 7, "mod64 by zero keeps the dividend");
        assert_eq!(binop(0x9c, 0, 0x1_0000_0007, 0), 7, "mod32 by zero truncates the dividend");
        assert_eq!(binop(0x3c, 0, 0x1_0000_0007, 2), 3, "div32 uses the low halves");
        assert_eq!(binop(0x3f, 1, -7, 2), (-3i64) as u64, "sdiv rounds toward zero");
        assert_eq!(binop(0x9f, 1, -7, 2), (-1i64) as u64, "smod takes the dividend's sign");
        assert_eq!(binop(0x3f, 1, i64::MIN, -1), i64::MIN as u64, "sdiv overflow wraps");
        assert_eq!(binop(0x9f, 1, i64::MIN, -1), 0);
        assert_eq!(binop(0x3c, 1, -7, 2), u64::from((-3i32) as u32), "sdiv32 is zero-extended");
    }

    #[test]
    fn alu32_zero_extends_and_shifts_mask() {
        assert_eq!(binop(0x0c, 0, -1, 1), 0, "add32 wraps and clears the top half");
        assert_eq!(binop(0x6f, 0, 1, 65), 2, "lsh64 masks the amount to 6 bits");
        assert_eq!(binop(0x6c, 0, 1, 33), 2, "lsh32 masks the amount to 5 bits");
        assert_eq!(binop(0xcc, 0, 0x8000_0000, 4), 0xf800_0000, "arsh32 then zero-extension");
        assert_eq!(binop(0xcf, 0, -16, 2), (-4i64) as u64);
        assert_eq!(run(&[i(0xb4, 0, 0, 0, -1), EXIT]), 0xffff_ffff, "mov32 imm");
        assert_eq!(run(&[i(0xb7, 0, 0, 0, -1), EXIT]), u64::MAX, "mov64 imm sign-extends");
        assert_eq!(run(&[i(0xb4, 0, 0, 0, 5), i(0x84, 0, 0, 0, 0), EXIT]), u64::from((-5i32) as u32));
    }

    #[test]
    fn movsx_and_byte_swaps() {
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
        assert_eq!(swap(0xd4, 16), 0x7788, "to-le truncates on a little-endian machine");
        assert_eq!(swap(0xd7, 32), 0x8877_6655, "v4 bswap");
    }

    #[test]
    fn jumps_jmp32_and_ja32() {
        // if (u32)r1 s< 0 (JMP32 signed) goto +1; r0 = 1; exit; r0 = 2; exit
        let p = [
            i(0x18, 1, 0, 0, -1),
            i(0, 0, 0, 0, 0),
            i(0xb7, 0, 0, 0, 1),
            i(0xc6, 1, 0, 1, 0),
            EXIT,
            i(0xb7, 0, 0, 0, 2),
            EXIT,
        ];
        assert_eq!(run(&p), 2, "0x00000000ffffffff is negative as 32 bits");
        let p64 = [p[0], p[1], p[2], i(0xc5, 1, 0, 1, 0), EXIT, p[5], EXIT];
        assert_eq!(run(&p64), 1, "but positive as 64 bits");
        // ja32 jumps by imm, not off.
        assert_eq!(run(&[i(0xb7, 0, 0, 0, 1), i(0x06, 0, 0, 0, 1), EXIT, i(0xb7, 0, 0, 0, 9), EXIT]), 9);
    }

    #[test]
    fn calls_save_callee_registers_and_get_their_own_frame() {
        let p = [
            i(0xb7, 6, 0, 0, 40),
            i(0x7a, 10, 0, -8, 2), // *(u64 *)(r10 - 8) = 2
            i(0x85, 0, 1, 0, 4),   // call +4
            i(0x79, 1, 10, -8, 0), // r1 = *(u64 *)(r10 - 8): still 2
            i(0x0f, 0, 6, 0, 0),   // r0 += r6: r6 restored to 40
            i(0x0f, 0, 1, 0, 0),   // r0 += r1
            EXIT,
            // callee:
            i(0xb7, 6, 0, 0, 1000),
            i(0x7a, 10, 0, -8, 7), // its own frame
            i(0xb7, 0, 0, 0, 100),
            EXIT,
        ];
        assert_eq!(run(&p), 142);
    }

    #[test]
    fn faults_instead_of_touching_foreign_memory() {
        let fault = |insns: &[Insn]| run_with(insns, &[]).unwrap_err();
        assert!(matches!(
            fault(&[i(0xb7, 1, 0, 0, 4096), i(0x79, 0, 1, 0, 0), EXIT]),
            Fault::Memory { pc: 1, write: false, .. }
        ));
        assert!(
            matches!(fault(&[i(0x7a, 10, 0, 0, 1), EXIT]), Fault::Memory { pc: 0, write: true, .. }),
            "above the stack"
        );
        assert!(
            matches!(fault(&[i(0x61, 0, 1, 2, 0), EXIT]), Fault::Memory { .. }),
            "misaligned context field"
        );
        assert!(matches!(fault(&[i(0x69, 0, 1, 0, 0), EXIT]), Fault::Memory { .. }), "narrow load of data");
        assert!(
            matches!(fault(&[i(0x62, 1, 0, 0, 0), EXIT]), Fault::Memory { write: true, .. }),
            "context is read-only"
        );
        assert!(matches!(fault(&[i(0x05, 0, 0, -1, 0), EXIT]), Fault::LoopLimit { pc: 0 }));
        let recurse = [i(0x85, 0, 1, 0, -1), EXIT];
        assert!(matches!(fault(&recurse), Fault::CallDepth { .. }));
        // A map helper handed something that is not a map.
        assert!(matches!(
            fault(&[i(0xb7, 1, 0, 0, 7), i(0x85, 0, 0, 0, 1), EXIT]),
            Fault::NotAMap { pc: 1, value: 7 }
        ));
    }

    #[test]
    fn context_loads_yield_the_frame_pointers() {
        // r0 = data_end - data: the packet length.
        let p = [i(0x61, 2, 1, 0, 0), i(0x61, 3, 1, 4, 0), i(0xbf, 0, 3, 0, 0), i(0x1f, 0, 2, 0, 0), EXIT];
        assert_eq!(run(&p), 64);
        // After bpf_xdp_adjust_head(ctx, 14), the packet is 14 bytes shorter.
        let mut q =
            vec![i(0xbf, 6, 1, 0, 0), i(0xb7, 2, 0, 0, 14), i(0x85, 0, 0, 0, 44), i(0xbf, 1, 6, 0, 0)];
        q.extend_from_slice(&p);
        assert_eq!(run(&q), 50);
    }

    #[test]
    fn map_helpers_return_value_pointers_and_errnos() {
        let def = maps::MapDef {
            map_type: maps::map_type::ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 2,
            map_flags: 0,
        };
        let map = Arc::new(Map::new("a", def, 1).unwrap());
        let lookup = |key: i32| {
            vec![
                i(0x62, 10, 0, -4, key), // *(u32 *)(r10 - 4) = key
                i(0xbf, 2, 10, 0, 0),
                i(0x07, 2, 0, 0, -4),
                i(0x18, 1, crate::insn::BPF_PSEUDO_MAP_IDX, 0, 0),
                i(0, 0, 0, 0, 0),
                i(0x85, 0, 0, 0, 1),
            ]
        };
        // Index 1 exists: add 5 through the pointer, read it back.
        let mut p = lookup(1);
        p.extend([i(0x15, 0, 0, 3, 0), i(0xb7, 1, 0, 0, 5), i(0xdb, 0, 1, 0, 0), i(0x79, 0, 0, 0, 0), EXIT]);
        assert_eq!(run_with(&p, std::slice::from_ref(&map)).unwrap(), 5);
        assert_eq!(map.lookup_user(&1u32.to_le_bytes()).unwrap(), 5u64.to_le_bytes());
        // Index 2 is out of range: NULL.
        let mut q = lookup(2);
        q.push(EXIT);
        assert_eq!(run_with(&q, std::slice::from_ref(&map)).unwrap(), 0);
        // Deleting from an array is -EINVAL.
        let mut d = lookup(0);
        *d.last_mut().unwrap() = i(0x85, 0, 0, 0, 3);
        d.push(EXIT);
        assert_eq!(
            run_with(&d, std::slice::from_ref(&map)).unwrap(),
            crate::helpers::errno_ret(libc::EINVAL)
        );
    }
}
