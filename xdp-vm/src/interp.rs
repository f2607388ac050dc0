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
use crate::helpers::{self, id};
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
    #[error("instruction {pc}: more than {MAX_BACKWARD_JUMPS} backward jumps; the program does not terminate")]
    LoopLimit { pc: usize },
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

const STACK_WORDS: usize = STACK_SIZE * MAX_CALL_FRAMES / 8;

impl Interpreter {
    /// A fresh interpreter (a zeroed 4 KiB stack for eight frames).
    #[must_use]
    pub fn new() -> Self {
        Self { stack: vec![0u64; STACK_WORDS].into_boxed_slice(), frames: [Frame::default(); MAX_CALL_FRAMES] }
    }

    /// Runs `prog` once on `state`, using per-CPU slot `slot`; returns `r0`.
    ///
    /// # Errors
    /// A [`Fault`] when the program does something the kernel's verifier would have refused.
    pub fn run<C: Context>(&mut self, prog: &Program<C>, state: &mut C::State<'_>, slot: usize) -> Result<u64, Fault> {
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
        regs[10] = (stack_start + STACK_SIZE) as u64;
        run_loop::<C>(prog.insns(), prog.maps(), &mem, &mut self.frames, &mut regs, state, ctx, slot)
    }
}

/// Applies a map-pointer argument: the map it names, or a fault.
#[inline(always)]
fn map_arg<'m>(maps: &'m [Arc<Map>], value: u64, pc: usize) -> Result<&'m Map, Fault> {
    if value & !0xffff_ffff == MAP_HANDLE_TAG {
        if let Some(m) = maps.get((value & 0xffff_ffff) as usize) {
            return Ok(m);
        }
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
    insns: &[Insn],
    maps: &[Arc<Map>],
    mem: &Memory<'_>,
    frames: &mut [Frame; MAX_CALL_FRAMES],
    regs: &mut [u64; 16],
    state: &mut C::State<'_>,
    ctx: u64,
    slot: usize,
) -> Result<u64, Fault> {
    let ctx_region = Region { start: ctx as usize, len: C::SIZE as usize };
    let mut depth = 0usize;
    let mut backward = 0u64;
    let mut pc = 0usize;
    loop {
        let insn = insns[pc];
        let d = usize::from(insn.dst & 0x0f);
        let s = usize::from(insn.src & 0x0f);
        let imm = insn.imm;
        let off = insn.off;
        let cur = pc;
        pc += 1;

        macro_rules! addr {
            ($base:expr) => {
                $base.wrapping_add(off as i64 as u64)
            };
        }
        macro_rules! load {
            ($size:expr) => {{
                let a = addr!(regs[s]);
                match mem.load_or(a, $size, |a| {
                    if ctx_region.holds(a, $size) { C::load(state, a - ctx, $size) } else { None }
                }) {
                    Some(v) => v,
                    None => return Err(Fault::Memory { pc: cur, addr: a, size: $size as u8, write: false }),
                }
            }};
        }
        macro_rules! store {
            ($base:expr, $size:expr, $val:expr) => {{
                let a = addr!($base);
                if mem.store(a, $size, $val).is_none() {
                    return Err(Fault::Memory { pc: cur, addr: a, size: $size as u8, write: true });
                }
            }};
        }
        macro_rules! jump_if {
            ($cond:expr) => {{
                if $cond {
                    let target = (cur as i64 + 1 + i64::from(off)) as usize;
                    if target <= cur {
                        backward += 1;
                        if backward > MAX_BACKWARD_JUMPS {
                            return Err(Fault::LoopLimit { pc: cur });
                        }
                    }
                    pc = target;
                }
            }};
        }

        let src64 = regs[s];
        let k64 = imm as i64 as u64;
        match insn.code {
            // ---- ALU64
            0x07 => regs[d] = regs[d].wrapping_add(k64),
            0x0f => regs[d] = regs[d].wrapping_add(src64),
            0x17 => regs[d] = regs[d].wrapping_sub(k64),
            0x1f => regs[d] = regs[d].wrapping_sub(src64),
            0x27 => regs[d] = regs[d].wrapping_mul(k64),
            0x2f => regs[d] = regs[d].wrapping_mul(src64),
            0x37 | 0x3f => {
                let v = if insn.code == 0x37 { k64 } else { src64 };
                regs[d] = if off == 1 {
                    if v == 0 { 0 } else { (regs[d] as i64).wrapping_div(v as i64) as u64 }
                } else if v == 0 {
                    0
                } else {
                    regs[d] / v
                };
            }
            0x47 => regs[d] |= k64,
            0x4f => regs[d] |= src64,
            0x57 => regs[d] &= k64,
            0x5f => regs[d] &= src64,
            0x67 => regs[d] <<= k64 & 63,
            0x6f => regs[d] <<= src64 & 63,
            0x77 => regs[d] >>= k64 & 63,
            0x7f => regs[d] >>= src64 & 63,
            0x87 => regs[d] = regs[d].wrapping_neg(),
            0x97 | 0x9f => {
                let v = if insn.code == 0x97 { k64 } else { src64 };
                if v != 0 {
                    regs[d] = if off == 1 { (regs[d] as i64).wrapping_rem(v as i64) as u64 } else { regs[d] % v };
                }
            }
            0xa7 => regs[d] ^= k64,
            0xaf => regs[d] ^= src64,
            0xb7 => regs[d] = k64,
            0xbf => {
                regs[d] = match off {
                    8 => src64 as i8 as i64 as u64,
                    16 => src64 as i16 as i64 as u64,
                    32 => src64 as i32 as i64 as u64,
                    _ => src64,
                }
            }
            0xc7 => regs[d] = ((regs[d] as i64) >> (k64 & 63)) as u64,
            0xcf => regs[d] = ((regs[d] as i64) >> (src64 & 63)) as u64,
            0xd7 => {
                regs[d] = match imm {
                    16 => u64::from((regs[d] as u16).swap_bytes()),
                    32 => u64::from((regs[d] as u32).swap_bytes()),
                    _ => regs[d].swap_bytes(),
                }
            }

            // ---- ALU (32-bit, zero-extended)
            0x04 | 0x0c | 0x14 | 0x1c | 0x24 | 0x2c | 0x34 | 0x3c | 0x44 | 0x4c | 0x54 | 0x5c | 0x64 | 0x6c
            | 0x74 | 0x7c | 0x84 | 0x94 | 0x9c | 0xa4 | 0xac | 0xb4 | 0xbc | 0xc4 | 0xcc => {
                let dst = regs[d] as u32;
                let v = if insn.code & BPF_X != 0 { src64 as u32 } else { imm as u32 };
                let r: u32 = match insn.code & 0xf0 {
                    BPF_ADD => dst.wrapping_add(v),
                    BPF_SUB => dst.wrapping_sub(v),
                    BPF_MUL => dst.wrapping_mul(v),
                    BPF_DIV => match (v, off) {
                        (0, _) => 0,
                        (_, 1) => (dst as i32).wrapping_div(v as i32) as u32,
                        _ => dst / v,
                    },
                    BPF_OR => dst | v,
                    BPF_AND => dst & v,
                    BPF_LSH => dst << (v & 31),
                    BPF_RSH => dst >> (v & 31),
                    BPF_NEG => dst.wrapping_neg(),
                    BPF_MOD => match (v, off) {
                        (0, _) => dst,
                        (_, 1) => (dst as i32).wrapping_rem(v as i32) as u32,
                        _ => dst % v,
                    },
                    BPF_XOR => dst ^ v,
                    BPF_MOV => match (insn.code & BPF_X != 0, off) {
                        (true, 8) => v as i8 as i32 as u32,
                        (true, 16) => v as i16 as i32 as u32,
                        _ => v,
                    },
                    _ => ((dst as i32) >> (v & 31)) as u32,
                };
                regs[d] = u64::from(r);
            }
            0xd4 => {
                regs[d] = match imm {
                    16 => u64::from(regs[d] as u16),
                    32 => u64::from(regs[d] as u32),
                    _ => regs[d],
                }
            }
            0xdc => {
                regs[d] = match imm {
                    16 => u64::from((regs[d] as u16).swap_bytes()),
                    32 => u64::from((regs[d] as u32).swap_bytes()),
                    _ => regs[d].swap_bytes(),
                }
            }

            // ---- loads and stores
            0x18 => {
                regs[d] = u64::from(imm as u32) | (u64::from(insns[pc].imm as u32) << 32);
                pc += 1;
            }
            0x61 => regs[d] = load!(4),
            0x69 => regs[d] = load!(2),
            0x71 => regs[d] = load!(1),
            0x79 => regs[d] = load!(8),
            0x81 => regs[d] = load!(4) as u32 as i32 as i64 as u64,
            0x89 => regs[d] = load!(2) as u16 as i16 as i64 as u64,
            0x91 => regs[d] = load!(1) as u8 as i8 as i64 as u64,
            0x62 => store!(regs[d], 4, k64),
            0x6a => store!(regs[d], 2, k64),
            0x72 => store!(regs[d], 1, k64),
            0x7a => store!(regs[d], 8, k64),
            0x63 => store!(regs[d], 4, src64),
            0x6b => store!(regs[d], 2, src64),
            0x73 => store!(regs[d], 1, src64),
            0x7b => store!(regs[d], 8, src64),
            0xc3 | 0xdb => {
                let wide = insn.code == 0xdb;
                let a = addr!(regs[d]);
                let fault = Fault::Atomic { pc: cur, addr: a };
                if imm == BPF_CMPXCHG {
                    let old = mem.cmpxchg(a, wide, regs[0], src64).ok_or(fault)?;
                    regs[0] = old;
                } else {
                    let op = match imm & !BPF_FETCH {
                        0x00 => AtomicOp::Add,
                        0x40 => AtomicOp::Or,
                        0x50 => AtomicOp::And,
                        0xa0 => AtomicOp::Xor,
                        _ => AtomicOp::Xchg,
                    };
                    let old = mem.atomic(a, wide, op, src64).ok_or(fault)?;
                    if imm & BPF_FETCH != 0 {
                        regs[s] = old;
                    }
                }
            }

            // ---- jumps
            0x05 => jump_if!(true),
            0x06 => {
                let target = (cur as i64 + 1 + i64::from(imm)) as usize;
                if target <= cur {
                    backward += 1;
                    if backward > MAX_BACKWARD_JUMPS {
                        return Err(Fault::LoopLimit { pc: cur });
                    }
                }
                pc = target;
            }
            0x15 => jump_if!(regs[d] == k64),
            0x1d => jump_if!(regs[d] == src64),
            0x25 => jump_if!(regs[d] > k64),
            0x2d => jump_if!(regs[d] > src64),
            0x35 => jump_if!(regs[d] >= k64),
            0x3d => jump_if!(regs[d] >= src64),
            0x45 => jump_if!(regs[d] & k64 != 0),
            0x4d => jump_if!(regs[d] & src64 != 0),
            0x55 => jump_if!(regs[d] != k64),
            0x5d => jump_if!(regs[d] != src64),
            0x65 => jump_if!((regs[d] as i64) > (k64 as i64)),
            0x6d => jump_if!((regs[d] as i64) > (src64 as i64)),
            0x75 => jump_if!((regs[d] as i64) >= (k64 as i64)),
            0x7d => jump_if!((regs[d] as i64) >= (src64 as i64)),
            0xa5 => jump_if!(regs[d] < k64),
            0xad => jump_if!(regs[d] < src64),
            0xb5 => jump_if!(regs[d] <= k64),
            0xbd => jump_if!(regs[d] <= src64),
            0xc5 => jump_if!((regs[d] as i64) < (k64 as i64)),
            0xcd => jump_if!((regs[d] as i64) < (src64 as i64)),
            0xd5 => jump_if!((regs[d] as i64) <= (k64 as i64)),
            0xdd => jump_if!((regs[d] as i64) <= (src64 as i64)),
            // JMP32: compare the low halves.
            0x16 | 0x1e | 0x26 | 0x2e | 0x36 | 0x3e | 0x46 | 0x4e | 0x56 | 0x5e | 0x66 | 0x6e | 0x76 | 0x7e
            | 0xa6 | 0xae | 0xb6 | 0xbe | 0xc6 | 0xce | 0xd6 | 0xde => {
                let a = regs[d] as u32;
                let b = if insn.code & BPF_X != 0 { src64 as u32 } else { imm as u32 };
                let taken = match insn.code & 0xf0 {
                    BPF_JEQ => a == b,
                    BPF_JGT => a > b,
                    BPF_JGE => a >= b,
                    BPF_JSET => a & b != 0,
                    BPF_JNE => a != b,
                    BPF_JSGT => (a as i32) > (b as i32),
                    BPF_JSGE => (a as i32) >= (b as i32),
                    BPF_JLT => a < b,
                    BPF_JLE => a <= b,
                    BPF_JSLT => (a as i32) < (b as i32),
                    _ => (a as i32) <= (b as i32),
                };
                jump_if!(taken);
            }
            0x85 => {
                if insn.src == BPF_PSEUDO_CALL {
                    if depth + 1 >= MAX_CALL_FRAMES {
                        return Err(Fault::CallDepth { pc: cur });
                    }
                    frames[depth] =
                        Frame { return_pc: pc, saved: [regs[6], regs[7], regs[8], regs[9]], fp: regs[10] };
                    depth += 1;
                    regs[10] -= STACK_SIZE as u64;
                    pc = (cur as i64 + 1 + i64::from(imm)) as usize;
                } else {
                    regs[0] = call_helper::<C>(imm as u32, regs, maps, mem, state, ctx, slot, cur)?;
                }
            }
            0x95 => {
                if depth == 0 {
                    return Ok(regs[0]);
                }
                depth -= 1;
                let f = frames[depth];
                pc = f.return_pc;
                regs[6..10].copy_from_slice(&f.saved);
                regs[10] = f.fp;
            }
            // `Program::new` admits no other opcode.
            _ => unreachable!("opcode {:#04x} passed the load-time check", insn.code),
        }
    }
}

#[expect(clippy::too_many_arguments, reason = "the interpreter's run state, passed through")]
#[inline(always)]
fn call_helper<C: Context>(
    helper: u32,
    regs: &mut [u64; 16],
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
                .with_bytes(regs[2], ks, |key| mem.with_bytes(regs[3], vs, |value| map.update(key, value, flags, slot)))
                .flatten()
                .ok_or(arg_fault)?;
            result.map_or_else(|e| e.to_ret(), |()| 0)
        }
        id::MAP_DELETE_ELEM => {
            let map = map_arg(maps, regs[1], pc)?;
            let ks = map.def().key_size as usize;
            let result = mem.with_bytes(regs[2], ks, |key| map.delete(key)).ok_or(arg_fault)?;
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
            mem.with_bytes(regs[1], size, |fmt| helpers::trace_printk(fmt, args, &Strings(mem))).ok_or(arg_fault)?
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
