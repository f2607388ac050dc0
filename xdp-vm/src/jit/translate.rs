//! eBPF to Cranelift IR: one Cranelift function per eBPF function (the main program and each
//! bpf-to-bpf call target), eBPF registers as Cranelift variables.
//!
//! A main program that makes tail calls is `(env, r1, tail calls so far) -> r0` in Cranelift's
//! `tail` calling convention, so that `bpf_tail_call` is a `return_call_indirect` to another
//! program's tail entry: the frame is reused, nothing returns to the caller. It finds its frame
//! pointer in the `Env`, and Rust enters it through a small C-convention wrapper
//! (`Entries::entry`). A main program that makes none is `(env, r1) -> r0` in the C convention
//! and Rust calls it directly (one call less per run); its tail entry is a small `tail`-
//! convention wrapper around it, for other programs' tail calls into it. Every
//! other function (a bpf-to-bpf call target, a callback) has the C signature
//! `(env, r1, r2, r3, r4, r5, fp) -> r0`. A fault is recorded in the `Env` by the function that
//! detects it; the generated code then returns at once, and callers check `Env::faulted` after
//! every call that can fail.
//!
//! Memory accesses are checked as the interpreter checks them: inline range compares against the
//! packet frame and the stack, then a call into `call::*_slow` for everything else (context,
//! map values, faults). An access the [`Facts`] prove safe skips the checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I8, I16, I32, I64};
use cranelift_codegen::ir::{
    AbiParam, AliasRegion, AliasRegionData, AtomicRmwOp, Block, InstBuilder, InstructionData, MemFlagsData,
    Opcode, SigRef, Signature, Type, Value, ValueDef,
};
use cranelift_codegen::isa::CallConv;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::JITModule;
use cranelift_module::{FuncId, Linkage, Module};

use super::CompileError;
use super::call::{ATOMIC_WIDE, STACK_BYTES, Targets, off, raise_kind};
use super::facts::{Fact, Facts};
use crate::context::{Context, FieldLoad};
use crate::helpers::id;
use crate::insn::*;
use crate::interp::MAX_BACKWARD_JUMPS;
use crate::verifier::region;

/// How the compiler may treat one of the program's maps.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapInfo {
    /// Address of the `Map` (inside an `Arc` the program holds).
    pub addr: u64,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Programs may not write its values (`BPF_F_RDONLY_PROG`).
    pub read_only: bool,
    pub kind: MapKind,
}

/// Lookup strategies.
#[derive(Debug, Clone, Copy)]
pub(crate) enum MapKind {
    /// Plain array: value `i` at `base + i * stride`; `base_at` holds `base` for as long as the
    /// code lives (a lookup in a loop loads it once before the loop, where the constant would
    /// be rematerialized, a 10-byte `movabs`, on every iteration).
    Array { base: u64, base_at: u64, stride: u64 },
    /// Per-CPU array: slot `s`'s value `i` at `table[s] + i * stride`, `slots` entries in table.
    PerCpuArray { table: u64, slots: u64, stride: u64 },
    /// Hash map with a 1-, 2-, 4- or 8-byte key: lookups read the key word inline and call
    /// `Map::lookup_word`.
    HashWord,
    /// `HASH` / `PERCPU_HASH` with a 1-, 2-, 4- or 8-byte key: lookups hash the key and walk
    /// the bucket inline ([`maps::HashWalk`]); `Map::lookup_word` only when a concurrent update
    /// moved the chain under the walk.
    HashInline(maps::HashWalk),
    /// `LPM_TRIE` with 1, 2, 4 or 8 bytes of key data: lookups read the prefix length and the
    /// data word inline and call `Map::lookup_lpm_word`.
    LpmWord,
    /// `PROG_ARRAY`: `bpf_tail_call` reads the slot inline ([`maps::ProgSlots`]).
    ProgArray(maps::ProgSlots),
    /// Anything else: lookups call `Map::lookup`.
    Other,
}

/// Splits a program into functions: `[start, end)` ranges, the main program first.
pub(crate) fn functions(insns: &[Insn]) -> Vec<(usize, usize)> {
    let mut starts = BTreeSet::from([0usize]);
    for (pc, insn) in insns.iter().enumerate() {
        if insn.is_pseudo_call() && !is_second_slot(insns, pc) {
            starts.insert((pc as i64 + 1 + i64::from(insn.imm)) as usize);
        }
        if let Some(t) = callback_target(insns, pc) {
            starts.insert(t);
        }
    }
    let starts: Vec<usize> = starts.into_iter().collect();
    starts.iter().enumerate().map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(insns.len()))).collect()
}

/// The function a bound function reference (`lddw` with `BPF_PSEUDO_FUNC`) at `pc` names: its
/// low word is the function's first instruction.
fn callback_target(insns: &[Insn], pc: usize) -> Option<usize> {
    let insn = insns[pc];
    (insn.is_lddw() && insn.src == BPF_PSEUDO_FUNC && !is_second_slot(insns, pc))
        .then_some(insn.imm as u32 as usize)
        .filter(|&t| t < insns.len())
}

fn is_second_slot(insns: &[Insn], pc: usize) -> bool {
    // Bound programs are walked from 0; an `lddw` covers the next slot.
    let mut i = 0;
    while i < pc {
        i += if insns[i].is_lddw() { 2 } else { 1 };
    }
    i != pc
}

/// The two ways into a translated program.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entries {
    /// [`main_sig`], the `tail` convention: what other programs' tail calls jump to.
    pub tail: FuncId,
    /// `(env, r1) -> r0` in the C convention: what Rust calls.
    pub entry: FuncId,
}

/// Where the jump `insn` at `pc` goes: `(target, whether it may also fall through)`; `None`
/// for anything else (a call, an exit, no jump at all).
fn jump_target(insn: Insn, pc: usize) -> Option<(usize, bool)> {
    let class = insn.class();
    let op = insn.code & 0xf0;
    if !(class == BPF_JMP || class == BPF_JMP32) || op == BPF_CALL || op == BPF_EXIT {
        return None;
    }
    let delta = if class == BPF_JMP32 && op == BPF_JA { i64::from(insn.imm) } else { i64::from(insn.off) };
    Some(((pc as i64 + 1 + delta) as usize, op != BPF_JA))
}

/// Whether the program may make a tail call (a `bpf_tail_call` helper call anywhere).
fn makes_tail_calls(insns: &[Insn]) -> bool {
    (0..insns.len()).any(|pc| {
        let i = insns[pc];
        i.code == BPF_JMP | BPF_CALL
            && i.src == 0
            && i.imm == id::TAIL_CALL as i32
            && !is_second_slot(insns, pc)
    })
}

/// Translates and defines every function; returns the entries and the bytes of code.
pub(crate) fn translate<C: Context>(
    module: &mut JITModule,
    insns: &[Insn],
    maps: &[MapInfo],
    targets: &Targets,
    verified: Option<&crate::verifier::Verified>,
    mut disasm: Option<&mut String>,
) -> Result<(Entries, usize), CompileError> {
    let funcs = functions(insns);
    let mut facts = Facts::analyze(insns, &funcs, maps.len());
    if let Some(v) = verified {
        facts.use_verifier(v);
    }
    let ptr = module.target_config().pointer_type();
    debug_assert_eq!(ptr, I64);
    let call_conv = module.isa().default_call_conv();
    let mut sig = Signature::new(call_conv);
    sig.params.extend(std::iter::repeat_n(AbiParam::new(I64), 7));
    sig.returns.push(AbiParam::new(I64));
    // The main function's own signature: the `tail` one only when it makes tail calls.
    let tails = makes_tail_calls(insns);
    let main_sig = if tails { main_sig() } else { entry_sig(call_conv) };
    let codegen = |e: cranelift_module::ModuleError| CompileError::Codegen { reason: e.to_string() };

    // What to define: every function, the main one with its own signature; and when the
    // program calls its main function as a subprogram (recursion: only an unverified program
    // can), a second translation of it with the subprograms' signature for those calls.
    let calls_main = (0..insns.len()).any(|pc| {
        let insn = insns[pc];
        let call =
            insn.is_pseudo_call() && !is_second_slot(insns, pc) && pc as i64 + 1 + i64::from(insn.imm) == 0;
        call || callback_target(insns, pc) == Some(0)
    });
    let mut units: Vec<(usize, usize, bool)> = funcs.iter().map(|&(s, e)| (s, e, s == 0)).collect();
    if calls_main {
        units.push((funcs[0].0, funcs[0].1, false));
    }
    let mut main = None;
    let mut ids = Vec::new();
    // What calls and callbacks reach, by first instruction.
    let mut subs = BTreeMap::new();
    for (i, &(start, _, is_main)) in units.iter().enumerate() {
        let s = if is_main { &main_sig } else { &sig };
        let id = module.declare_function(&format!("bpf_{i}_{start}"), Linkage::Local, s).map_err(codegen)?;
        ids.push(id);
        if is_main {
            main = Some(id);
        }
        if !is_main || !calls_main {
            subs.insert(start, id);
        }
    }
    let main = main.expect("function 0 is the main program");
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut size = 0;
    for (i, &(start, end, is_main)) in units.iter().enumerate() {
        ctx.func.signature = if is_main { main_sig.clone() } else { sig.clone() };
        ctx.set_disasm(disasm.is_some());
        let mut refs = HashMap::new();
        for (&s, &id) in &subs {
            refs.insert(s, module.declare_func_in_func(id, &mut ctx.func));
        }
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut fx = Fx::<C>::new(b, insns, maps, targets, &facts, call_conv, (start, end, is_main));
        fx.function(start, end, &refs)?;
        fx.b.seal_all_blocks();
        let loads: Vec<Value> = fx.chunks.keys().copied().collect();
        fx.b.finalize(module.target_config());
        drop_unused_loads(&mut ctx.func, &loads);
        module
            .define_function(ids[i], &mut ctx)
            .map_err(|e| CompileError::Codegen { reason: format!("{e:?}") })?;
        size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
        if let Some(out) = disasm.as_deref_mut() {
            let text = ctx.compiled_code().and_then(|c| c.vcode.as_deref()).unwrap_or("");
            out.push_str(&format!("; function {i}: eBPF instructions {start}..{end}\n{text}\n"));
        }
        module.clear_context(&mut ctx);
    }

    // The wrapper: a C-convention entry around a `tail`-convention main function, or the
    // other way round.
    let (wrapper_sig, note) = if tails {
        (entry_sig(call_conv), "entry from Rust: calls function 0")
    } else {
        (self::main_sig(), "tail entry (for other programs' tail calls): calls function 0")
    };
    let wrapper = module.declare_function("bpf_wrapper", Linkage::Local, &wrapper_sig).map_err(codegen)?;
    ctx.func.signature = wrapper_sig;
    ctx.set_disasm(disasm.is_some());
    let main_ref = module.declare_func_in_func(main, &mut ctx.func);
    let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
    let block = b.create_block();
    b.append_block_params_for_function_params(block);
    b.switch_to_block(block);
    let mut args = b.block_params(block).to_vec();
    if tails {
        // No tail calls made yet.
        args.push(b.ins().iconst(I64, 0));
    } else {
        // Its own tail-call count: the main function makes none.
        args.truncate(2);
    }
    let call = b.ins().call(main_ref, &args);
    let r0 = b.inst_results(call)[0];
    b.ins().return_(&[r0]);
    b.seal_all_blocks();
    b.finalize(module.target_config());
    module
        .define_function(wrapper, &mut ctx)
        .map_err(|e| CompileError::Codegen { reason: format!("{e:?}") })?;
    size += ctx.compiled_code().map_or(0, |c| c.code_buffer().len());
    if let Some(out) = disasm {
        let text = ctx.compiled_code().and_then(|c| c.vcode.as_deref()).unwrap_or("");
        out.push_str(&format!("; {note}\n{text}\n"));
    }
    module.clear_context(&mut ctx);
    let entries =
        if tails { Entries { tail: main, entry: wrapper } } else { Entries { tail: wrapper, entry: main } };
    Ok((entries, size))
}

/// `(env, r1) -> r0` in `call_conv`: the signature of the entry Rust calls.
pub(crate) fn entry_sig(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.extend([AbiParam::new(I64), AbiParam::new(I64)]);
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// `(env, r1, tail calls so far) -> r0` in the `tail` convention: the main function's
/// signature. The count travels in a register from one program to the next, as the kernel's
/// JIT keeps it, so a chain of tail calls has no memory round trip for it.
pub(crate) fn main_sig() -> Signature {
    let mut sig = Signature::new(CallConv::Tail);
    sig.params.extend([AbiParam::new(I64), AbiParam::new(I64), AbiParam::new(I64)]);
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// A memory access to emit.
#[derive(Clone, Copy)]
enum Access {
    Load {
        signed: bool,
    },
    Store {
        value: Value,
    },
    /// `imm` of the atomic instruction; `expected` is r0 for cmpxchg.
    Atomic {
        wide: bool,
        imm: i32,
        operand: Value,
        expected: Value,
    },
}

struct Fx<'a, 'b, C: Context> {
    b: FunctionBuilder<'b>,
    insns: &'a [Insn],
    maps: &'a [MapInfo],
    t: &'a Targets,
    facts: &'a Facts,
    is_main: bool,
    call_conv: CallConv,
    regs: [Variable; NUM_REGS],
    /// Tail calls made so far in this run (the main function's third parameter).
    tail_count: Variable,
    /// Inline array lookup results, `select(ok, ptr, 0)`, with `(ok, ptr)`: a NULL check of
    /// one branches on `ok` itself and hands the branch `ptr` (or 0), so the select is gone.
    nonnull: HashMap<Value, (Value, Value)>,
    env: Value,
    /// Alias region of the `Env`'s fields (only generated code and calls touch them).
    env_region: AliasRegion,
    /// Alias regions of the stack, the packet and map values, when the verifier placed every
    /// access of this function in one of them ([`Facts::single_regions`]).
    regions: Option<Regions>,
    /// With `regions`, when every stack access of the function is at a known offset from its
    /// frame pointer: disjoint byte ranges of the frame, each its own alias region.
    slots: Vec<(i64, i64, AliasRegion)>,
    /// `(target, jump)` of every backward jump: instructions between them may run in a loop.
    loops: Vec<(usize, usize)>,
    fault_block: Block,
    sigs: HashMap<usize, SigRef>,
    /// Packet stores of a verified program not emitted yet ([`Pending`]).
    pending: Pending,
    /// Bumped whenever memory outside the stack may have changed since: a store emitted, a
    /// call, a block boundary.
    epoch: u32,
    /// Values that are packet bytes loaded (zero-extended) in a verified function ([`Chunk`]).
    chunks: HashMap<Value, Chunk>,
    /// Stack stores no load can read before the function returns, except loads of exactly
    /// their bytes in their block, which take the stored value instead ([`Fx::dead_stack_stores`]).
    dead_stores: BTreeSet<usize>,
    /// The values those stores held, by `(frame offset, size)`, in the current block.
    stack_values: HashMap<(i64, u8), Value>,
    _c: std::marker::PhantomData<fn() -> C>,
}

fn flags() -> MemFlagsData {
    MemFlagsData::new()
}

/// Cranelift alias regions for the three kinds of memory a program reaches. They never
/// overlap, so Cranelift may forward a stack store to a later stack load across packet stores
/// (the MAC swap's temporaries, a key written then read for a lookup). Sound only when every
/// access of the function carries the region the verifier proved for it: an untagged load is
/// assumed to alias none of them.
///
/// Cranelift forwards a store only to a load that follows it with no other store to the same
/// region in between, so the stack is split further where it can be: when every stack access
/// of the function is `r10 + constant` ([`Fact::Fp`]), the byte ranges the accesses cover are
/// merged where they overlap, and each merged range is a region of its own (a key written at
/// `r10 - 4`, a value at `r10 - 8`, then the key read back by an inline lookup).
#[derive(Clone, Copy)]
struct Regions {
    stack: AliasRegion,
    packet: AliasRegion,
    map_value: AliasRegion,
}

impl<'a, 'b, C: Context> Fx<'a, 'b, C> {
    fn new(
        mut b: FunctionBuilder<'b>,
        insns: &'a [Insn],
        maps: &'a [MapInfo],
        t: &'a Targets,
        facts: &'a Facts,
        call_conv: CallConv,
        (start, end, is_main): (usize, usize, bool),
    ) -> Self {
        let regs = std::array::from_fn(|_| b.declare_var(I64));
        let tail_count = b.declare_var(I64);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry).to_vec();
        let env = p[0];
        let mut region = |user_id: u32, description: &'static str| {
            b.func.dfg.alias_regions.insert(AliasRegionData { user_id, description: description.into() })
        };
        let env_region = region(0, "env");
        let zero = b.ins().iconst(I64, 0);
        if is_main {
            // The main function: `(env, r1)`; r2-r5 start at 0 as `run` always passed them; its
            // frame is the top of the run's stack (fixed for the run, so a tail call lands on
            // the same frame). After a tail call too r2-r9 start at 0, where the interpreter
            // keeps the caller's values: the verifier holds them uninitialized at a program's
            // entry (as the kernel's does), so only a program loaded unverified can tell.
            b.def_var(regs[1], p[1]);
            // A main function without tail calls has no count parameter (see `translate`).
            b.def_var(tail_count, p.get(2).copied().unwrap_or(zero));
            for &r in &regs[2..=5] {
                b.def_var(r, zero);
            }
            let f =
                MemFlagsData::trusted().with_alias_region(Some(env_region)).with_readonly().with_can_move();
            let stack = b.ins().load(I64, f, env, off::STACK_START);
            let fp = b.ins().iadd_imm_u(stack, STACK_BYTES as i64);
            b.def_var(regs[10], fp);
        } else {
            for (r, &v) in regs[1..6].iter().zip(&p[1..6]) {
                b.def_var(*r, v);
            }
            b.def_var(regs[10], p[6]);
        }
        for r in [0, 6, 7, 8, 9] {
            b.def_var(regs[r], zero);
        }
        let mut region = |user_id: u32, description: &'static str| {
            b.func.dfg.alias_regions.insert(AliasRegionData { user_id, description: description.into() })
        };
        let regions = facts.single_regions(insns, start, end).then(|| Regions {
            stack: region(1, "bpf stack"),
            packet: region(2, "packet"),
            map_value: region(3, "map values"),
        });
        let ranges = if regions.is_some() { stack_ranges(insns, maps, facts, start, end) } else { None };
        let slots = ranges
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, (lo, hi))| (lo, hi, region(4 + i as u32, "bpf stack bytes")))
            .collect();
        let fault_block = b.create_block();
        Self {
            b,
            insns,
            maps,
            t,
            facts,
            is_main,
            call_conv,
            regs,
            tail_count,
            nonnull: HashMap::new(),
            env,
            env_region,
            regions,
            slots,
            loops: Vec::new(),
            fault_block,
            sigs: HashMap::new(),
            pending: Pending::default(),
            epoch: 0,
            chunks: HashMap::new(),
            dead_stores: BTreeSet::new(),
            stack_values: HashMap::new(),
            _c: std::marker::PhantomData,
        }
    }

    /// Loads the `Env` field at `at`; `fixed` for fields no call changes during a run.
    fn env_load(&mut self, at: i32, fixed: bool) -> Value {
        let mut f = MemFlagsData::trusted().with_alias_region(Some(self.env_region));
        if fixed {
            // Never written during a run: Cranelift may hoist, merge or drop the load.
            f = f.with_readonly().with_can_move();
        }
        self.b.ins().load(I64, f, self.env, at)
    }

    fn env_store(&mut self, v: Value, at: i32) {
        let f = MemFlagsData::trusted().with_alias_region(Some(self.env_region));
        self.b.ins().store(f, v, self.env, at);
    }

    /// Flags for an access the verifier proved to reach `bits` ([`region`]): its alias region
    /// when this function's accesses all have one, else none (may alias anything). `fp` is
    /// where a stack access is relative to the frame pointer, `(offset, size)`, when known.
    fn mem_at(&mut self, bits: u8, fp: Option<(i64, u8)>) -> MemFlagsData {
        let Some(r) = self.regions else {
            return flags();
        };
        let region = match bits {
            region::STACK if self.slots.is_empty() => r.stack,
            region::STACK => {
                let slot = fp.and_then(|(at, size)| {
                    let end = at + i64::from(size);
                    self.slots.iter().find(|&&(lo, hi, _)| lo <= at && end <= hi).map(|s| s.2)
                });
                match slot {
                    Some(s) => s,
                    None => {
                        // `stack_ranges` covers every stack access this translator makes, so
                        // this is not reached; if it were, a fence keeps an untagged access
                        // from being forwarded across the slots' stores.
                        debug_assert!(false, "stack access outside the collected ranges");
                        self.b.ins().fence();
                        return flags();
                    }
                }
            }
            region::PACKET => r.packet,
            region::MAP_VALUE => r.map_value,
            _ => return flags(),
        };
        flags().with_alias_region(Some(region))
    }

    /// The frame pointer plus `at`.
    fn fp_plus(&mut self, at: i64) -> Value {
        let fp = self.get(REG_FP);
        self.b.ins().iadd_imm_s(fp, at)
    }

    /// The lowest frame offset this function may address: the whole run stack below the main
    /// program's frame pointer, one frame below a subprogram's.
    fn frame_low(&self) -> i64 {
        if self.is_main { -(STACK_BYTES as i64) } else { -(STACK_SIZE as i64) }
    }

    /// `k` when fact `f` is `r10 + k` and the `size` bytes from there are inside the frame.
    fn in_frame(&self, f: Fact, size: i64) -> Option<i64> {
        match f {
            Fact::Fp(k) if k >= self.frame_low() && k <= -size => Some(k),
            _ => None,
        }
    }

    /// The `size`-byte word at frame offset `at` (inside the frame), zero-extended: the value a
    /// dead store of exactly those bytes left in this block ([`Fx::forwarded`]), else a load.
    fn frame_load(&mut self, at: i64, size: u8) -> Value {
        if let Some(v) = self.forwarded(at, size) {
            return v;
        }
        let addr = self.fp_plus(at);
        let f = self.mem_at(region::STACK, Some((at, size)));
        self.direct(addr, size, Access::Load { signed: false }, f)
    }

    /// What an unsigned `size`-byte load at frame offset `at` reads when a store of exactly
    /// those bytes earlier in this block was dropped as dead ([`Fx::dead_stack_stores`]): the
    /// stored value, zero-extended.
    fn forwarded(&mut self, at: i64, size: u8) -> Option<Value> {
        let v = *self.stack_values.get(&(at, size))?;
        Some(match size {
            8 => v,
            4 => self.low32(v),
            _ => {
                let n = self.b.ins().ireduce(int_ty(size), v);
                self.b.ins().uextend(I64, n)
            }
        })
    }

    /// Whether flags `f` are those of a stack access with its own alias region.
    fn is_stack(&self, f: MemFlagsData) -> bool {
        match (self.regions, f.alias_region()) {
            (Some(r), Some(a)) => a != r.packet && a != r.map_value && a != self.env_region,
            _ => false,
        }
    }

    fn get(&mut self, r: u8) -> Value {
        self.b.use_var(self.regs[usize::from(r)])
    }

    fn set(&mut self, r: u8, v: Value) {
        self.b.def_var(self.regs[usize::from(r)], v);
    }

    fn imm64(&mut self, imm: i32) -> Value {
        self.b.ins().iconst(I64, i64::from(imm))
    }

    fn sig(&mut self, args: usize) -> SigRef {
        if let Some(s) = self.sigs.get(&args) {
            return *s;
        }
        let mut sig = Signature::new(self.call_conv);
        sig.params.extend(std::iter::repeat_n(AbiParam::new(I64), args));
        sig.returns.push(AbiParam::new(I64));
        let s = self.b.import_signature(sig);
        self.sigs.insert(args, s);
        s
    }

    /// Calls a Rust function at `addr` with `args` (all `u64`), returning its `u64`.
    fn call_addr(&mut self, addr: u64, args: &[Value]) -> Value {
        let sig = self.sig(args.len());
        let callee = self.b.ins().iconst(I64, addr as i64);
        let inst = self.b.ins().call_indirect(sig, callee, args);
        self.b.inst_results(inst)[0]
    }

    /// Branches to the fault exit when the call just made recorded a fault.
    fn check_fault(&mut self) {
        let f = self.env_load(off::FAULTED, false);
        let cont = self.b.create_block();
        self.b.ins().brif(f, self.fault_block, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// Records fault `kind` at `pc` and leaves; the current block ends.
    fn raise(&mut self, kind: u64, pc: usize) {
        let k = self.b.ins().iconst(I64, kind as i64);
        let p = self.b.ins().iconst(I64, pc as i64);
        let env = self.env;
        self.call_addr(self.t.raise, &[env, k, p]);
        self.b.ins().jump(self.fault_block, &[]);
    }

    fn function(
        &mut self,
        start: usize,
        end: usize,
        refs: &HashMap<usize, cranelift_codegen::ir::FuncRef>,
    ) -> Result<(), CompileError> {
        // Block leaders: the entry, jump targets and what follows a jump.
        let mut leaders = BTreeSet::from([start]);
        let mut pc = start;
        while pc < end {
            let insn = self.insns[pc];
            let class = insn.class();
            let op = insn.code & 0xf0;
            if (class == BPF_JMP || class == BPF_JMP32) && op != BPF_CALL {
                if let Some((target, _)) = jump_target(insn, pc) {
                    if target < start || target >= end {
                        return Err(CompileError::JumpLeavesFunction { insn: pc, target });
                    }
                    if target <= pc {
                        self.loops.push((target, pc));
                    }
                    leaders.insert(target);
                }
                if pc + 1 < end {
                    leaders.insert(pc + 1);
                } else if op != BPF_EXIT && op != BPF_JA {
                    return Err(CompileError::FallsIntoSubprogram { insn: pc });
                }
            }
            pc += if insn.is_lddw() { 2 } else { 1 };
        }
        self.dead_stores = self.dead_stack_stores(start, end, &leaders);
        let first: BTreeMap<usize, Block> = leaders.iter().map(|&pc| (pc, self.b.create_block())).collect();
        let unrolled = unrolled_loops(&self.loops)
            .into_iter()
            .map(|(head, tail)| {
                let second = leaders.range(head..=tail).map(|&pc| (pc, self.b.create_block())).collect();
                (head, tail, second)
            })
            .collect();
        let mut blocks = Blocks { first, unrolled, copy: None };
        self.b.ins().jump(blocks.first[&start], &[]);

        let mut open = false;
        let mut pc = start;
        while pc < end {
            if let Some(l) = blocks.unrolled.iter().position(|&(head, ..)| head == pc) {
                blocks.copy = Some((l, false));
            }
            let width;
            (open, width) = self.step(pc, open, &blocks, refs)?;
            pc += width;
            if let Some((l, false)) = blocks.copy
                && pc == blocks.unrolled[l].1 + 1
            {
                // The loop's second copy, right after the first: the first copy's backward
                // jumps enter it, its own go back to the first.
                let head = blocks.unrolled[l].0;
                blocks.copy = Some((l, true));
                let mut q = head;
                while q < pc {
                    let width;
                    (open, width) = self.step(q, open, &blocks, refs)?;
                    q += width;
                }
                blocks.copy = None;
            }
        }
        if open {
            return Err(CompileError::FallsIntoSubprogram { insn: end - 1 });
        }
        self.b.switch_to_block(self.fault_block);
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().return_(&[zero]);
        Ok(())
    }

    /// Translates the instruction at `pc`, starting a block first where one begins; `open`
    /// says whether the current block continues into it. Returns the same for the next
    /// instruction, and the instruction's width.
    fn step(
        &mut self,
        pc: usize,
        open: bool,
        blocks: &Blocks,
        refs: &HashMap<usize, cranelift_codegen::ir::FuncRef>,
    ) -> Result<(bool, usize), CompileError> {
        // Unreachable straight-line code (no block starts here, the last one ended): still
        // translated, into a block nothing enters.
        let start = blocks.starting(pc).or_else(|| (!open).then(|| self.b.create_block()));
        if let Some(blk) = start {
            if open {
                self.flush_stores();
                self.b.ins().jump(blk, &[]);
            }
            self.epoch += 1;
            self.stack_values.clear();
            self.b.switch_to_block(blk);
        }
        let insn = self.insns[pc];
        let width = if insn.is_lddw() { 2 } else { 1 };
        Ok((self.insn(pc, insn, blocks, refs)?, width))
    }

    /// Jumps to `target`, counting a backward jump; the current block ends.
    fn jump_to(&mut self, pc: usize, target: usize, blocks: &Blocks) {
        if target <= pc {
            self.count_backward(pc);
        }
        self.b.ins().jump(blocks.at(pc, target), &[]);
    }

    /// Counts a taken backward jump and faults past [`MAX_BACKWARD_JUMPS`], as the interpreter
    /// does, for a program loaded unverified. A verified program is proven to terminate (the
    /// kernel counts nothing either), so its loops run without the count.
    fn count_backward(&mut self, pc: usize) {
        if self.facts.is_verified() {
            return;
        }
        let n = self.env_load(off::BACKWARD, false);
        let n = self.b.ins().iadd_imm_s(n, 1);
        self.env_store(n, off::BACKWARD);
        let over = self.b.ins().icmp_imm_s(IntCC::UnsignedGreaterThan, n, MAX_BACKWARD_JUMPS as i64);
        let (bad, ok) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(over, bad, &[], ok, &[]);
        self.b.switch_to_block(bad);
        self.raise(raise_kind::LOOP_LIMIT, pc);
        self.b.switch_to_block(ok);
    }

    /// Translates one instruction; returns whether the current block continues.
    fn insn(
        &mut self,
        pc: usize,
        insn: Insn,
        blocks: &Blocks,
        refs: &HashMap<usize, cranelift_codegen::ir::FuncRef>,
    ) -> Result<bool, CompileError> {
        let Insn { code, dst, src, off, imm } = insn;
        let class = insn.class();
        let op = code & 0xf0;
        let x = code & BPF_X != 0;
        if !matches!(class, BPF_ALU | BPF_ALU64 | BPF_LDX | BPF_ST | BPF_STX) {
            // Jumps, calls, exits, constants: buffered stores go out first (`access` decides for
            // memory instructions).
            self.flush_stores();
            self.epoch += 1;
        }
        match class {
            BPF_ALU64 => {
                // A move does not read its destination: reading it would keep the register's
                // old value alive into this block (a block parameter Cranelift never drops).
                let a = if op == BPF_MOV { self.b.ins().iconst(I64, 0) } else { self.get(dst) };
                let v = match op {
                    BPF_NEG => self.b.ins().ineg(a),
                    BPF_MOV if x => {
                        let s = self.get(src);
                        match off {
                            8 | 16 | 32 => {
                                let ty = int_ty(off as u8 / 8);
                                let n = self.b.ins().ireduce(ty, s);
                                self.b.ins().sextend(I64, n)
                            }
                            _ => s,
                        }
                    }
                    BPF_MOV => self.imm64(imm),
                    BPF_END => self.swap(a, imm, true),
                    BPF_DIV | BPF_MOD => {
                        if x {
                            let s = self.get(src);
                            self.divmod(I64, a, s, op == BPF_DIV, off == 1)
                        } else {
                            self.divmod_k(I64, a, i64::from(imm), op == BPF_DIV, off == 1)
                        }
                    }
                    _ => {
                        let s = if x { self.get(src) } else { self.imm64(imm) };
                        let v = self.binop(op, a, s);
                        self.combine_loads(op, x, a, s, imm, v)
                    }
                };
                self.set(dst, v);
            }
            BPF_ALU => {
                let a64 = if op == BPF_MOV { self.b.ins().iconst(I64, 0) } else { self.get(dst) };
                let v = match op {
                    BPF_END if !x => match imm {
                        16 => self.b.ins().band_imm_u(a64, 0xffff),
                        32 => self.b.ins().band_imm_u(a64, 0xffff_ffff),
                        _ => a64,
                    },
                    BPF_END => self.swap(a64, imm, false),
                    _ => {
                        let a = self.b.ins().ireduce(I32, a64);
                        let r = match op {
                            BPF_NEG => self.b.ins().ineg(a),
                            BPF_MOV if x => {
                                let s64 = self.get(src);
                                let s = self.b.ins().ireduce(I32, s64);
                                match off {
                                    8 | 16 => {
                                        let n = self.b.ins().ireduce(int_ty(off as u8 / 8), s);
                                        self.b.ins().sextend(I32, n)
                                    }
                                    _ => s,
                                }
                            }
                            BPF_MOV => self.b.ins().iconst(I32, i64::from(imm as u32)),
                            BPF_DIV | BPF_MOD => {
                                if x {
                                    let s64 = self.get(src);
                                    let s = self.b.ins().ireduce(I32, s64);
                                    self.divmod(I32, a, s, op == BPF_DIV, off == 1)
                                } else {
                                    self.divmod_k(I32, a, i64::from(imm), op == BPF_DIV, off == 1)
                                }
                            }
                            _ => {
                                let s = if x {
                                    let s64 = self.get(src);
                                    self.b.ins().ireduce(I32, s64)
                                } else {
                                    self.b.ins().iconst(I32, i64::from(imm as u32))
                                };
                                self.binop(op, a, s)
                            }
                        };
                        self.b.ins().uextend(I64, r)
                    }
                };
                self.set(dst, v);
            }
            BPF_LD => {
                let hi = self.insns[pc + 1].imm as u32;
                let value = u64::from(imm as u32) | (u64::from(hi) << 32);
                let v = self.b.ins().iconst(I64, value as i64);
                self.set(dst, v);
            }
            BPF_LDX => {
                let size = size_of_code(code);
                let signed = code & 0xe0 == BPF_MEMSX;
                let v = self.access(pc, src, off, size, Access::Load { signed });
                self.set(dst, v);
            }
            BPF_ST => {
                let value = self.imm64(imm);
                self.access(pc, dst, off, size_of_code(code), Access::Store { value });
            }
            BPF_STX if code & 0xe0 == BPF_ATOMIC => {
                let wide = code & 0x18 == BPF_DW;
                let operand = self.get(src);
                let expected = self.get(0);
                let old = self.access(
                    pc,
                    dst,
                    off,
                    if wide { 8 } else { 4 },
                    Access::Atomic { wide, imm, operand, expected },
                );
                if imm == BPF_CMPXCHG {
                    self.set(0, old);
                } else if imm & BPF_FETCH != 0 {
                    self.set(src, old);
                }
            }
            BPF_STX => {
                let value = self.get(src);
                self.access(pc, dst, off, size_of_code(code), Access::Store { value });
            }
            BPF_JMP | BPF_JMP32 => match op {
                BPF_JA => {
                    let delta = if class == BPF_JMP32 { i64::from(imm) } else { i64::from(off) };
                    self.jump_to(pc, (pc as i64 + 1 + delta) as usize, blocks);
                    return Ok(false);
                }
                BPF_EXIT => {
                    let r0 = self.get(0);
                    self.b.ins().return_(&[r0]);
                    return Ok(false);
                }
                BPF_CALL if insn.is_pseudo_call() => {
                    let target = (pc as i64 + 1 + i64::from(imm)) as usize;
                    let f = refs[&target];
                    let depth = self.env_load(off::DEPTH, false);
                    let deeper = self.b.ins().iadd_imm_s(depth, 1);
                    let too_deep = self.b.ins().icmp_imm_s(
                        IntCC::UnsignedGreaterThanOrEqual,
                        deeper,
                        MAX_CALL_FRAMES as i64,
                    );
                    let (bad, ok) = (self.b.create_block(), self.b.create_block());
                    self.b.ins().brif(too_deep, bad, &[], ok, &[]);
                    self.b.switch_to_block(bad);
                    self.raise(raise_kind::CALL_DEPTH, pc);
                    self.b.switch_to_block(ok);
                    self.env_store(deeper, off::DEPTH);
                    let fp = self.get(REG_FP);
                    let callee_fp = self.b.ins().iadd_imm_s(fp, -(STACK_SIZE as i64));
                    let mut args = vec![self.env];
                    for r in 1..=5 {
                        args.push(self.get(r));
                    }
                    args.push(callee_fp);
                    let inst = self.b.ins().call(f, &args);
                    let r0 = self.b.inst_results(inst)[0];
                    self.env_store(depth, off::DEPTH);
                    self.check_fault();
                    self.set(0, r0);
                }
                BPF_CALL if imm as u32 == id::TAIL_CALL => self.tail_call(pc),
                BPF_CALL if matches!(imm as u32, id::LOOP | id::FOR_EACH_MAP_ELEM) => {
                    let inlined = off == crate::helpers::callbacks::INLINED_LOOP;
                    let r0 = self.callback_call(pc, imm as u32, inlined, refs);
                    self.set(0, r0);
                }
                BPF_CALL => {
                    let r0 = self.helper_call(pc, imm as u32);
                    self.set(0, r0);
                }
                _ => {
                    let a64 = self.get(dst);
                    if matches!(op, BPF_JEQ | BPF_JNE)
                        && class == BPF_JMP
                        && !x
                        && imm == 0
                        && let Some(&(ok, ptr)) = self.nonnull.get(&a64)
                    {
                        // `if (p == NULL)` right after an inline array lookup: branch on the
                        // lookup's own bound check, with `dst` the element pointer on the
                        // non-NULL edge and 0 on the other.
                        let target = (pc as i64 + 1 + i64::from(off)) as usize;
                        let (hit_edge, miss_edge) = (self.b.create_block(), self.b.create_block());
                        let zero = self.b.ins().iconst(I64, 0);
                        self.b.ins().brif(ok, hit_edge, &[], miss_edge, &[]);
                        for (edge, value, taken) in
                            [(hit_edge, ptr, op == BPF_JNE), (miss_edge, zero, op == BPF_JEQ)]
                        {
                            self.b.switch_to_block(edge);
                            self.set(dst, value);
                            if taken {
                                self.jump_to(pc, target, blocks);
                            } else {
                                self.b.ins().jump(blocks.at(pc, pc + 1), &[]);
                            }
                        }
                        return Ok(false);
                    }
                    let (a, s) = if class == BPF_JMP32 {
                        let a = self.b.ins().ireduce(I32, a64);
                        let s = if x {
                            let s64 = self.get(src);
                            self.b.ins().ireduce(I32, s64)
                        } else {
                            self.b.ins().iconst(I32, i64::from(imm as u32))
                        };
                        (a, s)
                    } else {
                        let s = x.then(|| self.get(src));
                        match self.compare32(op, a64, s, imm) {
                            Some(pair) => pair,
                            None => (a64, s.unwrap_or_else(|| self.imm64(imm))),
                        }
                    };
                    let cond = if op == BPF_JSET {
                        let m = self.b.ins().band(a, s);
                        self.b.ins().icmp_imm_s(IntCC::NotEqual, m, 0)
                    } else {
                        let cc = match op {
                            BPF_JEQ => IntCC::Equal,
                            BPF_JNE => IntCC::NotEqual,
                            BPF_JGT => IntCC::UnsignedGreaterThan,
                            BPF_JGE => IntCC::UnsignedGreaterThanOrEqual,
                            BPF_JLT => IntCC::UnsignedLessThan,
                            BPF_JLE => IntCC::UnsignedLessThanOrEqual,
                            BPF_JSGT => IntCC::SignedGreaterThan,
                            BPF_JSGE => IntCC::SignedGreaterThanOrEqual,
                            BPF_JSLT => IntCC::SignedLessThan,
                            _ => IntCC::SignedLessThanOrEqual,
                        };
                        self.b.ins().icmp(cc, a, s)
                    };
                    let target = (pc as i64 + 1 + i64::from(off)) as usize;
                    let fall = blocks.at(pc, pc + 1);
                    if target <= pc {
                        let taken = self.b.create_block();
                        self.b.ins().brif(cond, taken, &[], fall, &[]);
                        self.b.switch_to_block(taken);
                        self.jump_to(pc, target, blocks);
                    } else {
                        self.b.ins().brif(cond, blocks.at(pc, target), &[], fall, &[]);
                    }
                    return Ok(false);
                }
            },
            _ => return Err(CompileError::Unsupported { insn: pc, code }),
        }
        Ok(true)
    }

    /// A 64-bit equality or unsigned comparison of `a` with `src` (or the immediate) made on
    /// 32 bits when both sides are zero-extended 32-bit values ([`Fx::zext32_of`], an
    /// immediate from 0 to 2^31 - 1): the same answer, and no zero-extension to compute (a
    /// loop counter clang keeps at 64 bits and compares at 32 is then one register).
    fn compare32(&mut self, op: u8, a: Value, src: Option<Value>, imm: i32) -> Option<(Value, Value)> {
        if !matches!(op, BPF_JEQ | BPF_JNE | BPF_JGT | BPF_JGE | BPF_JLT | BPF_JLE | BPF_JSET) {
            return None;
        }
        if src.is_none() && imm < 0 {
            return None;
        }
        let a = self.zext32_of(a)?;
        let s = match src {
            Some(s) => self.zext32_of(s)?,
            None => self.b.ins().iconst(I32, i64::from(imm)),
        };
        Some((a, s))
    }

    fn binop(&mut self, op: u8, a: Value, s: Value) -> Value {
        let i = self.b.ins();
        match op {
            BPF_ADD => i.iadd(a, s),
            BPF_SUB => i.isub(a, s),
            BPF_MUL => i.imul(a, s),
            BPF_OR => i.bor(a, s),
            BPF_AND => i.band(a, s),
            BPF_XOR => i.bxor(a, s),
            // Cranelift masks shift amounts to the operand width, as eBPF does.
            BPF_LSH => i.ishl(a, s),
            BPF_RSH => i.ushr(a, s),
            _ => i.sshr(a, s),
        }
    }

    /// Byte swap of the low `imm` bits, zero-extended to 64 (`BPF_END` to big endian / bswap).
    fn swap(&mut self, a: Value, imm: i32, _wide: bool) -> Value {
        match imm {
            16 | 32 => {
                let ty = if imm == 16 { I16 } else { I32 };
                let n = self.b.ins().ireduce(ty, a);
                let s = self.b.ins().bswap(n);
                self.b.ins().uextend(I64, s)
            }
            _ => self.b.ins().bswap(a),
        }
    }

    /// Division or modulo by a register, with eBPF's rules: x / 0 = 0, x % 0 = x,
    /// MIN s/ -1 = MIN, MIN s% -1 = 0 (no traps).
    fn divmod(&mut self, ty: Type, a: Value, v: Value, div: bool, signed: bool) -> Value {
        let zero = self.b.ins().iconst(ty, 0);
        let one = self.b.ins().iconst(ty, 1);
        let is0 = self.b.ins().icmp_imm_s(IntCC::Equal, v, 0);
        if !signed {
            let d = self.b.ins().select(is0, one, v);
            return if div {
                let q = self.b.ins().udiv(a, d);
                self.b.ins().select(is0, zero, q)
            } else {
                let r = self.b.ins().urem(a, d);
                self.b.ins().select(is0, a, r)
            };
        }
        let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, v, -1);
        let bad = self.b.ins().bor(is0, is_m1);
        let d = self.b.ins().select(bad, one, v);
        if div {
            let q = self.b.ins().sdiv(a, d);
            let neg = self.b.ins().ineg(a);
            let q = self.b.ins().select(is_m1, neg, q);
            self.b.ins().select(is0, zero, q)
        } else {
            let r = self.b.ins().srem(a, d);
            let r = self.b.ins().select(is_m1, zero, r);
            self.b.ins().select(is0, a, r)
        }
    }

    /// Division or modulo by an immediate (sign-extended to 64 bits for ALU64).
    fn divmod_k(&mut self, ty: Type, a: Value, k: i64, div: bool, signed: bool) -> Value {
        let k = if ty == I32 { i64::from(k as i32 as u32) } else { k };
        let is_zero = k == 0;
        let is_m1 = if ty == I32 { k as u32 == u32::MAX } else { k == -1 };
        if is_zero {
            return if div { self.b.ins().iconst(ty, 0) } else { a };
        }
        if signed && is_m1 {
            return if div { self.b.ins().ineg(a) } else { self.b.ins().iconst(ty, 0) };
        }
        let d = self.b.ins().iconst(ty, k);
        match (div, signed) {
            (true, false) => self.b.ins().udiv(a, d),
            (true, true) => self.b.ins().sdiv(a, d),
            (false, false) => self.b.ins().urem(a, d),
            (false, true) => self.b.ins().srem(a, d),
        }
    }

    /// The access a memory instruction makes through `base + off`; returns the loaded (or old)
    /// value, or 0 for stores.
    fn access(&mut self, pc: usize, base: u8, off: i16, size: u8, kind: Access) -> Value {
        let fact = self.facts.at(pc)[usize::from(base)];
        let b = self.get(base);
        let addr = match fact {
            // `r10 + constant`, however the register got it: the same address expression for
            // every access to a stack slot, as store-to-load forwarding needs.
            Fact::Fp(k) if k.checked_add(i64::from(off)).is_some() => self.fp_plus(k + i64::from(off)),
            _ => self.b.ins().iadd_imm_s(b, i64::from(off)),
        };
        let off = i64::from(off);
        let size_i = i64::from(size);
        let write = !matches!(kind, Access::Load { .. });
        let atomic = matches!(kind, Access::Atomic { .. });
        if self.facts.verified_in_bounds(pc) {
            let at = match fact {
                Fact::Fp(k) => k.checked_add(off).map(|at| (at, size)),
                _ => None,
            };
            let region = self.facts.region(pc);
            let packet = region == region::PACKET && self.facts.is_verified();
            if let (Some((slot, _)), true) = (at, region == region::STACK) {
                match kind {
                    Access::Store { value } if self.dead_stores.contains(&pc) => {
                        self.stack_values.insert((slot, size), value);
                        return self.b.ins().iconst(I64, 0);
                    }
                    Access::Load { signed: false } => {
                        if let Some(v) = self.forwarded(slot, size) {
                            return v;
                        }
                    }
                    _ => {}
                }
            }
            match kind {
                Access::Store { value } if packet => {
                    self.buffer_store(b, off, size, value);
                    return self.b.ins().iconst(I64, 0);
                }
                Access::Load { .. } if packet => self.flush_overlapping(b, off, size),
                Access::Load { .. } | Access::Store { .. } if region == region::STACK => {}
                Access::Load { .. } => self.flush_stores(),
                _ => {
                    self.flush_stores();
                    self.epoch += 1;
                }
            }
            let mut f = self.mem_at(region, at);
            if packet {
                // Proven in bounds: it cannot trap, and an unused one (a byte load a wider one
                // replaced, `flush_stores`) may be dropped.
                f = f.with_notrap();
            }
            let v = self.direct(addr, size, kind, f);
            if packet && matches!(kind, Access::Load { signed: false }) {
                self.chunks.insert(v, Chunk { base: b, off, width: size, shift: 0, epoch: self.epoch });
            }
            return v;
        }
        self.flush_stores();
        if write {
            self.epoch += 1;
        }
        match fact {
            Fact::Fp(k) => {
                let at = k + off;
                if at >= self.frame_low() && at <= -size_i && (!atomic || at % size_i == 0) {
                    return self.direct(addr, size, kind, flags());
                }
            }
            Fact::Ctx(k) if !write => {
                if let Some(field) = C::field_load((k + off) as u64, usize::from(size)) {
                    let ctx = b;
                    let ctx = self.b.ins().iadd_imm_s(ctx, -k);
                    return match field {
                        FieldLoad::U32 { at } => {
                            self.b.ins().uload32(MemFlagsData::trusted(), ctx, at as i32)
                        }
                        FieldLoad::PtrPlus { base, at } => {
                            let p = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, base as i32);
                            let o = self.b.ins().load(I64, MemFlagsData::trusted(), ctx, at as i32);
                            self.b.ins().iadd(p, o)
                        }
                        FieldLoad::Plain { at } => {
                            let a = self.b.ins().iadd_imm_s(ctx, at as i64);
                            self.direct(a, size, kind, flags())
                        }
                    };
                }
            }
            Fact::MapValue { map, off: k } => {
                let info = self.maps[map];
                let at = k + off;
                if at >= 0
                    && at + size_i <= i64::from(info.value_size)
                    && !(write && info.read_only)
                    && (!atomic || at % size_i == 0)
                {
                    // The value pointer is 8-byte aligned, valid for `value_size` bytes, or NULL.
                    let value_ptr = self.b.ins().iadd_imm_s(b, -k);
                    return self.checked(pc, addr, size, kind, Some(value_ptr));
                }
            }
            _ => {}
        }
        self.checked(pc, addr, size, kind, None)
    }

    /// A run-time checked access. With `nonnull`, the access is known to be valid whenever that
    /// value is not NULL; otherwise the packet frame and the stack are tried inline.
    fn checked(&mut self, pc: usize, addr: Value, size: u8, kind: Access, nonnull: Option<Value>) -> Value {
        let fast = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        let result = self.b.declare_var(I64);
        if let Some(p) = nonnull {
            self.b.ins().brif(p, fast, &[], slow, &[]);
        } else {
            let size_i = i64::from(size);
            let mut check_pkt = self.b.create_block();
            if matches!(kind, Access::Atomic { .. }) {
                let mis = self.b.ins().band_imm_u(addr, size_i - 1);
                let next = self.b.create_block();
                self.b.ins().brif(mis, slow, &[], next, &[]);
                self.b.switch_to_block(next);
                check_pkt = next;
            } else {
                self.b.ins().jump(check_pkt, &[]);
                self.b.switch_to_block(check_pkt);
            }
            let _ = check_pkt;
            let (pkt_start, pkt_len) =
                (self.env_load(off::PKT_START, true), self.env_load(off::PKT_LEN, true));
            let op = self.b.ins().isub(addr, pkt_start);
            let lim = self.b.ins().iadd_imm_s(pkt_len, -size_i);
            let in_pkt = self.b.ins().icmp(IntCC::UnsignedLessThanOrEqual, op, lim);
            let check_stack = self.b.create_block();
            self.b.ins().brif(in_pkt, fast, &[], check_stack, &[]);
            self.b.switch_to_block(check_stack);
            let stack_start = self.env_load(off::STACK_START, true);
            let os = self.b.ins().isub(addr, stack_start);
            let in_stack =
                self.b.ins().icmp_imm_s(IntCC::UnsignedLessThanOrEqual, os, STACK_BYTES as i64 - size_i);
            self.b.ins().brif(in_stack, fast, &[], slow, &[]);
        }
        self.b.set_cold_block(slow);
        self.b.switch_to_block(fast);
        let v = self.direct(addr, size, kind, flags());
        self.b.def_var(result, v);
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(slow);
        let env = self.env;
        let pcv = self.b.ins().iconst(I64, pc as i64);
        let v = match kind {
            Access::Load { signed } => {
                let sz = self.b.ins().iconst(I64, i64::from(size));
                let v = self.call_addr(self.t.load_slow, &[env, addr, sz, pcv]);
                self.check_fault();
                if signed { self.sext(v, size) } else { v }
            }
            Access::Store { value } => {
                let sz = self.b.ins().iconst(I64, i64::from(size));
                let v = self.call_addr(self.t.store_slow, &[env, addr, sz, pcv, value]);
                self.check_fault();
                v
            }
            Access::Atomic { wide, imm, operand, expected } => {
                let code = (imm as u32 as u64) | if wide { ATOMIC_WIDE } else { 0 };
                let opv = self.b.ins().iconst(I64, code as i64);
                let v = self.call_addr(self.t.atomic_slow, &[env, addr, opv, pcv, operand, expected]);
                self.check_fault();
                v
            }
        };
        self.b.def_var(result, v);
        self.b.ins().jump(join, &[]);
        self.b.switch_to_block(join);
        self.b.use_var(result)
    }

    fn sext(&mut self, v: Value, size: u8) -> Value {
        if size == 8 {
            return v;
        }
        let n = self.b.ins().ireduce(int_ty(size), v);
        self.b.ins().sextend(I64, n)
    }

    /// The access itself, on an address known to be valid.
    fn direct(&mut self, addr: Value, size: u8, kind: Access, f: MemFlagsData) -> Value {
        match kind {
            // On the stack, a plain load of the access's width, then the extension: Cranelift
            // forwards a `store.iN` only to a `load.iN` of the same address. Elsewhere the
            // extending load, which x86 does in one instruction.
            Access::Load { signed } if self.is_stack(f) => {
                let ty = int_ty(size);
                let v = self.b.ins().load(ty, f, addr, 0);
                match (ty, signed) {
                    (I64, _) => v,
                    (_, false) => self.b.ins().uextend(I64, v),
                    (_, true) => self.b.ins().sextend(I64, v),
                }
            }
            Access::Load { signed } => match (size, signed) {
                (1, false) => self.b.ins().uload8(I64, f, addr, 0),
                (2, false) => self.b.ins().uload16(I64, f, addr, 0),
                (4, false) => self.b.ins().uload32(f, addr, 0),
                (1, true) => self.b.ins().sload8(I64, f, addr, 0),
                (2, true) => self.b.ins().sload16(I64, f, addr, 0),
                (4, true) => self.b.ins().sload32(f, addr, 0),
                _ => self.b.ins().load(I64, f, addr, 0),
            },
            Access::Store { value } => {
                let ty = int_ty(size);
                let v = if ty == I64 { value } else { self.b.ins().ireduce(ty, value) };
                self.b.ins().store(f, v, addr, 0);
                self.b.ins().iconst(I64, 0)
            }
            Access::Atomic { wide, imm, operand, expected } => {
                let ty = if wide { I64 } else { I32 };
                let (x, e) = if wide {
                    (operand, expected)
                } else {
                    (self.b.ins().ireduce(I32, operand), self.b.ins().ireduce(I32, expected))
                };
                let old = if imm == BPF_CMPXCHG {
                    self.b.ins().atomic_cas(f, addr, e, x)
                } else {
                    let op = match imm & !BPF_FETCH {
                        0x00 => AtomicRmwOp::Add,
                        0x40 => AtomicRmwOp::Or,
                        0x50 => AtomicRmwOp::And,
                        0xa0 => AtomicRmwOp::Xor,
                        _ => AtomicRmwOp::Xchg,
                    };
                    self.b.ins().atomic_rmw(ty, f, op, addr, x)
                };
                if wide { old } else { self.b.ins().uextend(I64, old) }
            }
        }
    }

    /// `bpf_tail_call`: a call into the target's compiled code (`call::tail_call`); when it
    /// ran, this function returns the target's `r0`, else execution goes on after the call.
    /// `bpf_tail_call(r1 = ctx, r2 = prog array, r3 = index)`. In the main function, when the
    /// slot names a program of the run's link set, a jump to that program's main function on
    /// the same frame (`return_call_indirect`: nothing comes back here); otherwise the program
    /// goes on with r0 unchanged, as in the interpreter. With the map known at compile time the
    /// whole check is inline — the kernel's order: the index against `max_entries`, the count
    /// against `MAX_TAIL_CALL_CNT` (counted even when the slot then is empty), the slot, the id
    /// against the link set. In a subprogram, the interpreter's fault.
    fn tail_call(&mut self, pc: usize) {
        if !self.is_main {
            self.raise(raise_kind::TAIL_IN_SUBPROGRAM, pc);
            let after = self.b.create_block();
            self.b.switch_to_block(after);
            return;
        }
        let env = self.env;
        let (r1, r2, r3) = (self.get(1), self.get(2), self.get(3));
        let sig = self.b.import_signature(main_sig());
        let cont = self.b.create_block();
        let slots = self.facts.at(pc)[2].map_handle(self.maps.len()).and_then(|m| match self.maps[m].kind {
            MapKind::ProgArray(p) => Some(p),
            _ => None,
        });
        let Some(p) = slots else {
            // The count goes through the `Env` for the Rust side, and comes back.
            let n = self.b.use_var(self.tail_count);
            self.env_store(n, off::TAIL_CALLS);
            let pcv = self.b.ins().iconst(I64, pc as i64);
            let target = self.call_addr(self.t.tail_target, &[env, r1, r2, r3, pcv]);
            self.check_fault();
            let n = self.env_load(off::TAIL_CALLS, false);
            self.b.def_var(self.tail_count, n);
            let go = self.b.create_block();
            self.b.ins().brif(target, go, &[], cont, &[]);
            self.b.switch_to_block(go);
            self.b.ins().return_call_indirect(sig, target, &[env, r1, n]);
            self.b.switch_to_block(cont);
            return;
        };
        let fixed =
            MemFlagsData::trusted().with_alias_region(Some(self.env_region)).with_readonly().with_can_move();
        if !self.facts.is_verified() {
            // The verifier proves r1 is the context (at offset 0); unverified code is checked.
            let ctx = self.b.ins().load(I64, fixed, env, off::CTX);
            let (bad, ok) = (self.b.create_block(), self.b.create_block());
            let not_ctx = self.b.ins().icmp(IntCC::NotEqual, r1, ctx);
            self.b.ins().brif(not_ctx, bad, &[], ok, &[]);
            self.b.switch_to_block(bad);
            self.raise(raise_kind::TAIL_CALL_ARG, pc);
            self.b.switch_to_block(ok);
        }
        let index = self.b.ins().band_imm_u(r3, 0xffff_ffff);
        let in_range = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, index, i64::from(p.max_entries));
        let count = self.b.create_block();
        self.b.ins().brif(in_range, count, &[], cont, &[]);

        self.b.switch_to_block(count);
        let n = self.b.use_var(self.tail_count);
        let spent =
            self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThanOrEqual, n, i64::from(maps::MAX_TAIL_CALL_CNT));
        let slot = self.b.create_block();
        self.b.ins().brif(spent, cont, &[], slot, &[]);

        self.b.switch_to_block(slot);
        let n1 = self.b.ins().iadd_imm_u(n, 1);
        self.b.def_var(self.tail_count, n1);
        let trusted = MemFlagsData::trusted();
        let present_at = self.b.ins().iadd_imm_u(index, p.present as i64);
        let present = self.b.ins().atomic_load(I8, trusted, present_at);
        let filled = self.b.create_block();
        self.b.ins().brif(present, filled, &[], cont, &[]);

        self.b.switch_to_block(filled);
        let id_off = self.b.ins().imul_imm_u(index, p.id_stride as i64);
        let id_at = self.b.ins().iadd_imm_u(id_off, p.ids as i64);
        let id = self.b.ins().load(I32, trusted, id_at, 0);
        let id = self.b.ins().uextend(I64, id);
        let len = self.b.ins().load(I64, fixed, env, off::TAIL_LEN);
        let linked = self.b.ins().icmp(IntCC::UnsignedLessThan, id, len);
        let go = self.b.create_block();
        self.b.ins().brif(linked, go, &[], cont, &[]);

        self.b.switch_to_block(go);
        let table = self.b.ins().load(I64, fixed, env, off::TAIL_ENTRIES);
        let at = self.b.ins().ishl_imm_u(id, 3);
        let at = self.b.ins().iadd(table, at);
        let entry = self.b.ins().load(I64, trusted.with_readonly(), at, 0);
        self.b.ins().return_call_indirect(sig, entry, &[env, r1, n1]);
        self.b.switch_to_block(cont);
    }

    /// A helper call; returns r0. Map helpers on a map known at compile time, and the cheap
    /// helpers, are specialized; the rest go through the interpreter's implementation.
    fn helper_call(&mut self, pc: usize, helper: u32) -> Value {
        let facts = self.facts.at(pc);
        let env = self.env;
        let map = facts[1].map_handle(self.maps.len()).map(|m| (m, self.maps[m]));
        // bpf_probe_read{,_user,_kernel}{,_str} into, and bpf_probe_write_user from, the current
        // frame, of a constant size: a direct call of the fault-safe copy
        // (helpers::tracing::direct_copy), which returns the helper's result itself and cannot
        // fault the program.
        let low = self.frame_low();
        if let Some(d) = crate::helpers::tracing::direct_copy(helper)
            && let (Fact::Fp(buf), Fact::Const(size)) =
                (facts[usize::from(d.buf)], facts[usize::from(d.size)])
            && let size = i64::from(size as u32)
            && (size > 0 || !d.nonzero)
            && buf >= low
            && buf + size <= 0
        {
            let (dst, src) = (self.get(d.dst), self.get(d.src));
            let n = self.b.ins().iconst(I64, size);
            return self.call_addr(d.routine, &[dst, src, n]);
        }
        match (helper, map) {
            (id::GET_SMP_PROCESSOR_ID, _) => {
                return self.env_load(off::SLOT, true);
            }
            (id::KTIME_GET_NS, _) => return self.call_addr(self.t.ktime_get_ns, &[]),
            (id::GET_PRANDOM_U32, _) => return self.call_addr(self.t.get_prandom_u32, &[]),
            (id::MAP_LOOKUP_ELEM, Some((_, info))) => return self.lookup(pc, info, facts[2]),
            (id::MAP_UPDATE_ELEM, Some((_, info))) => {
                if let Some(r) = self.array_update(pc, info, facts[2], facts[3]) {
                    return r;
                }
                if let Some(r) = self.hash_update_word(info, facts[2], facts[3]) {
                    return r;
                }
                let m = self.b.ins().iconst(I64, info.addr as i64);
                let (k, v, fl) = (self.get(2), self.get(3), self.get(4));
                let pcv = self.b.ins().iconst(I64, pc as i64);
                let r = self.call_addr(self.t.map_update, &[env, m, k, v, fl, pcv]);
                self.check_fault();
                return r;
            }
            (id::MAP_DELETE_ELEM, Some((_, info))) => {
                if let Some(r) = self.hash_delete_word(info, facts[2]) {
                    return r;
                }
                let m = self.b.ins().iconst(I64, info.addr as i64);
                let k = self.get(2);
                let pcv = self.b.ins().iconst(I64, pc as i64);
                let r = self.call_addr(self.t.map_delete, &[env, m, k, pcv]);
                self.check_fault();
                return r;
            }
            _ => {}
        }
        let idv = self.b.ins().iconst(I64, i64::from(helper));
        let mut args = vec![env, idv];
        for r in 1..=5 {
            args.push(self.get(r));
        }
        args.push(self.b.ins().iconst(I64, pc as i64));
        let r = self.call_addr(self.t.helper, &args);
        self.check_fault();
        r
    }

    /// `bpf_loop` / `bpf_for_each_map_elem`: the host helper runs the loop and calls the
    /// compiled callback, whose address is picked here among the program's callbacks by the
    /// function reference in r2 (0 when it names none: the helper faults).
    fn callback_call(
        &mut self,
        pc: usize,
        helper: u32,
        inlined: bool,
        refs: &HashMap<usize, cranelift_codegen::ir::FuncRef>,
    ) -> Value {
        let r2 = self.get(2);
        let mut addr = self.b.ins().iconst(I64, 0);
        let targets: BTreeSet<usize> =
            (0..self.insns.len()).filter_map(|p| callback_target(self.insns, p)).collect();
        for t in targets {
            let Some(&f) = refs.get(&t) else { continue };
            let fa = self.b.ins().func_addr(I64, f);
            let tagged = self.b.ins().iconst(I64, (crate::helpers::callbacks::FUNC_TAG | t as u64) as i64);
            let hit = self.b.ins().icmp(IntCC::Equal, r2, tagged);
            addr = self.b.ins().select(hit, fa, addr);
        }
        let env = self.env;
        let idv = self.b.ins().iconst(I64, i64::from(helper) | (i64::from(inlined) << 32));
        let (r1, r3, r4) = (self.get(1), self.get(3), self.get(4));
        let pcv = self.b.ins().iconst(I64, pc as i64);
        let r = self.call_addr(self.t.callbacks, &[env, idv, r1, r2, r3, r4, addr, pcv]);
        self.check_fault();
        r
    }

    /// `bpf_map_lookup_elem` on a known map; `key` is the fact about r2.
    fn lookup(&mut self, pc: usize, info: MapInfo, key: Fact) -> Value {
        let key_size = match info.kind {
            MapKind::Array { .. }
            | MapKind::PerCpuArray { .. }
            | MapKind::HashWord
            | MapKind::HashInline(_)
            | MapKind::LpmWord => Some(i64::from(info.key_size)),
            MapKind::ProgArray(_) | MapKind::Other => None,
        };
        let env = self.env;
        // A key the facts place inside the current frame needs no check.
        let key_at = key_size.and_then(|ks| self.in_frame(key, ks));
        match (info.kind, key_at, key_size) {
            (MapKind::Array { base, base_at, stride }, Some(at), _) => {
                let idx = self.frame_load(at, 4);
                let base = self.array_base(pc, base, base_at);
                self.array_elem(idx, base, stride, info.max_entries)
            }
            (MapKind::PerCpuArray { table, slots, stride }, Some(at), _) => {
                let idx = self.frame_load(at, 4);
                self.array_elem(idx, ArrayBase::PerCpu { table, slots }, stride, info.max_entries)
            }
            (MapKind::HashWord | MapKind::HashInline(_), Some(at), Some(ks)) => {
                let word = self.frame_load(at, ks as u8);
                let m = self.b.ins().iconst(I64, info.addr as i64);
                let slot = self.env_load(off::SLOT, true);
                match info.kind {
                    MapKind::HashInline(w) => self.hash_walk(&w, m, word, slot),
                    _ => self.call_addr(self.t.map_lookup_word, &[m, word, slot]),
                }
            }
            (MapKind::LpmWord, Some(at), Some(ks)) => {
                let prefixlen = self.frame_load(at, 4);
                let data = self.frame_load(at + 4, (ks - 4) as u8);
                // Memory order, most significant byte first, zero-padded: the byte swap of the
                // zero-extended little-endian word.
                let data = if cfg!(target_endian = "little") { self.b.ins().bswap(data) } else { data };
                let shift = 64 - 8 * (ks - 4);
                let data = if cfg!(target_endian = "big") && shift > 0 {
                    self.b.ins().ishl_imm_u(data, shift)
                } else {
                    data
                };
                let m = self.b.ins().iconst(I64, info.addr as i64);
                self.call_addr(self.t.map_lookup_lpm, &[m, prefixlen, data])
            }
            _ => {
                let m = self.b.ins().iconst(I64, info.addr as i64);
                // `r2`, as the frame pointer plus a constant when it is one (see `access`).
                let kaddr = match key {
                    Fact::Fp(k) => self.fp_plus(k),
                    _ => self.get(2),
                };
                if self.in_frame(key, i64::from(info.key_size)).is_some() {
                    let slot = self.env_load(off::SLOT, true);
                    self.call_addr(self.t.map_lookup_stack_key, &[m, kaddr, slot])
                } else {
                    let pcv = self.b.ins().iconst(I64, pc as i64);
                    let r = self.call_addr(self.t.map_lookup, &[env, m, kaddr, pcv]);
                    self.check_fault();
                    r
                }
            }
        }
    }

    /// `bpf_map_update_elem` on an array or per-CPU array with the key and the value in the
    /// current stack frame: for flags `BPF_ANY` or `BPF_EXIST` and an index in range, the value
    /// is copied in place inline (an array element always exists); anything else — other flags,
    /// an index out of range — goes to `Map::update` for the kernel's error. `None` when the
    /// map or the arguments do not allow it.
    fn array_update(&mut self, pc: usize, info: MapInfo, key: Fact, value: Fact) -> Option<Value> {
        if info.read_only || info.key_size != 4 {
            return None;
        }
        let key_at = self.in_frame(key, 4)?;
        let value_at = self.in_frame(value, i64::from(info.value_size))?;
        let (base, stride) = match info.kind {
            MapKind::Array { base, base_at, stride } => (self.array_base(pc, base, base_at), stride),
            MapKind::PerCpuArray { table, slots, stride } => (ArrayBase::PerCpu { table, slots }, stride),
            _ => return None,
        };
        let env = self.env;
        let (kaddr, vaddr, fl) = (self.fp_plus(key_at), self.fp_plus(value_at), self.get(4));
        let idx = self.frame_load(key_at, 4);
        // `array_elem` gives NULL for an index (or slot) out of range.
        let dst = self.array_elem(idx, base, stride, info.max_entries);
        let either = self.b.ins().bor_imm_s(fl, maps::BPF_EXIST as i64);
        let flags_ok = self.b.ins().icmp_imm_s(IntCC::Equal, either, maps::BPF_EXIST as i64);
        let nonnull = self.b.ins().icmp_imm_s(IntCC::NotEqual, dst, 0);
        let ok = self.b.ins().band(flags_ok, nonnull);
        let (fast, slow, join) = (self.b.create_block(), self.b.create_block(), self.b.create_block());
        let result = self.b.append_block_param(join, I64);
        self.b.ins().brif(ok, fast, &[], slow, &[]);

        self.b.switch_to_block(fast);
        let mut at = 0i32;
        let size = info.value_size as i32;
        while at < size {
            let (ty, n) = match size - at {
                8.. => (I64, 8),
                4..=7 => (I32, 4),
                2..=3 => (I16, 2),
                _ => (I8, 1),
            };
            let from = self.mem_at(region::STACK, Some((value_at + i64::from(at), n as u8)));
            let to = self.mem_at(region::MAP_VALUE, None);
            let v = self.b.ins().load(ty, from, vaddr, at);
            self.b.ins().store(to, v, dst, at);
            at += n;
        }
        let zero = self.b.ins().iconst(I64, 0);
        self.b.ins().jump(join, &[zero.into()]);

        self.b.set_cold_block(slow);
        self.b.switch_to_block(slow);
        let m = self.b.ins().iconst(I64, info.addr as i64);
        let pcv = self.b.ins().iconst(I64, pc as i64);
        let r = self.call_addr(self.t.map_update, &[env, m, kaddr, vaddr, fl, pcv]);
        self.check_fault();
        self.b.ins().jump(join, &[r.into()]);

        self.b.switch_to_block(join);
        Some(result)
    }

    /// Loads the `size`-byte (1, 2, 4 or 8) stack word at `fp + at`, zero-extended, when the
    /// facts place it inside the current frame.
    fn frame_word(&mut self, f: Fact, size: u32) -> Option<Value> {
        if !matches!(size, 1 | 2 | 4 | 8) {
            return None;
        }
        let at = self.in_frame(f, i64::from(size))?;
        Some(self.frame_load(at, size as u8))
    }

    /// `bpf_map_update_elem` on a hash map whose key and value are 1, 2, 4 or 8 bytes, both in
    /// the current stack frame: the words are read inline and `Map::update_word` called, no
    /// environment, no argument checks, no fault. `None` when the map or the arguments do not
    /// allow it.
    fn hash_update_word(&mut self, info: MapInfo, key: Fact, value: Fact) -> Option<Value> {
        if info.read_only || !matches!(info.kind, MapKind::HashWord | MapKind::HashInline(_)) {
            return None;
        }
        if !matches!(info.value_size, 1 | 2 | 4 | 8) || !matches!((key, value), (Fact::Fp(_), Fact::Fp(_))) {
            return None;
        }
        let k = self.frame_word(key, info.key_size)?;
        let v = self.frame_word(value, info.value_size)?;
        let m = self.b.ins().iconst(I64, info.addr as i64);
        let fl = self.get(4);
        let slot = self.env_load(off::SLOT, true);
        Some(self.call_addr(self.t.map_update_word, &[m, k, v, fl, slot]))
    }

    /// `bpf_map_delete_elem` on a hash map whose key (1, 2, 4 or 8 bytes) is in the current stack
    /// frame: the word is read inline and `Map::delete_word` called. `None` otherwise.
    fn hash_delete_word(&mut self, info: MapInfo, key: Fact) -> Option<Value> {
        if info.read_only || !matches!(info.kind, MapKind::HashWord | MapKind::HashInline(_)) {
            return None;
        }
        let k = self.frame_word(key, info.key_size)?;
        let m = self.b.ins().iconst(I64, info.addr as i64);
        let slot = self.env_load(off::SLOT, true);
        Some(self.call_addr(self.t.map_delete_word, &[m, k, slot]))
    }

    /// A hash lookup of key word `word` in slot `slot`, walking the bucket as
    /// [`maps::HashWalk`] describes; `m` is the map, for the slow path.
    fn hash_walk(&mut self, w: &maps::HashWalk, m: Value, word: Value, slot: Value) -> Value {
        use maps::HashWalk;
        let trusted = MemFlagsData::trusted();
        // hash = (word * init) >> 32 (`HashWalk::hash`); the bucket is its top bits
        // (`HashWalk::bucket`), taken from the product directly.
        let h = self.b.ins().imul_imm_u(word, w.hash_init as i64);
        let hash = self.b.ins().ushr_imm_u(h, 32);
        let bits = 32 - w.mask.leading_zeros();
        let bucket = if bits == 0 {
            self.b.ins().iconst(I64, 0)
        } else {
            self.b.ins().ushr_imm_u(h, i64::from(64 - bits))
        };
        let end = self.b.ins().bor_imm_u(bucket, i64::from(HashWalk::NULLS));
        let head_off = self.b.ins().imul_imm_u(bucket, w.head_stride as i64);
        let head_addr = self.b.ins().iadd_imm_u(head_off, w.heads as i64);
        let head = self.b.ins().atomic_load(I64, trusted, head_addr);
        let first = self.low32(head);
        let zero = self.b.ins().iconst(I64, 0);

        let walk = self.b.create_block();
        let cur = self.b.append_block_param(walk, I64);
        let steps = self.b.append_block_param(walk, I64);
        let step = self.b.create_block();
        let cmp_key = self.b.create_block();
        let next = self.b.create_block();
        let chain_end = self.b.create_block();
        let found = self.b.create_block();
        let slow = self.b.create_block();
        let join = self.b.create_block();
        let result = self.b.append_block_param(join, I64);
        self.b.ins().jump(walk, &[first.into(), zero.into()]);

        self.b.switch_to_block(walk);
        let nulls = self.b.ins().band_imm_u(cur, i64::from(HashWalk::NULLS));
        self.b.ins().brif(nulls, chain_end, &[], step, &[]);

        self.b.switch_to_block(step);
        let e_off = self.b.ins().imul_imm_u(cur, w.elem_bytes as i64);
        let e_addr = self.b.ins().iadd_imm_u(e_off, w.elems as i64);
        let link = self.b.ins().atomic_load(I64, trusted, e_addr);
        let link_hash = self.b.ins().ushr_imm_u(link, 32);
        let same_hash = self.b.ins().icmp(IntCC::Equal, link_hash, hash);
        self.b.ins().brif(same_hash, cmp_key, &[], next, &[]);

        self.b.switch_to_block(cmp_key);
        let key = self.b.ins().load(I64, trusted, e_addr, 8);
        let same_key = self.b.ins().icmp(IntCC::Equal, key, word);
        self.b.ins().brif(same_key, found, &[], next, &[]);

        self.b.switch_to_block(next);
        let succ = self.low32(link);
        let steps1 = self.b.ins().iadd_imm_u(steps, 1);
        let too_long = self.b.ins().icmp_imm_u(IntCC::UnsignedGreaterThan, steps1, w.capacity as i64);
        self.b.ins().brif(too_long, slow, &[], walk, &[succ.into(), steps1.into()]);

        self.b.switch_to_block(chain_end);
        let absent = self.b.ins().icmp(IntCC::Equal, cur, end);
        self.b.ins().brif(absent, join, &[zero.into()], slow, &[]);

        self.b.switch_to_block(found);
        let v_off = self.b.ins().imul_imm_u(cur, w.value_stride as i64);
        let v = self.b.ins().iadd_imm_u(v_off, w.values as i64);
        let v = if w.per_cpu {
            // A slot beyond the map's has no value: NULL, as `Map::lookup_word` says.
            let slot_ok = self.b.ins().icmp_imm_u(IntCC::UnsignedLessThan, slot, w.slots as i64);
            let s_off = self.b.ins().imul_imm_u(slot, w.slot_stride as i64);
            let p = self.b.ins().iadd(v, s_off);
            self.b.ins().select(slot_ok, p, zero)
        } else {
            v
        };
        self.b.ins().jump(join, &[v.into()]);

        self.b.set_cold_block(slow);
        self.b.switch_to_block(slow);
        let r = self.call_addr(self.t.map_lookup_word, &[m, word, slot]);
        self.b.ins().jump(join, &[r.into()]);

        self.b.switch_to_block(join);
        result
    }

    /// `v & 0xffff_ffff`, as a 32-bit move.
    fn low32(&mut self, v: Value) -> Value {
        let n = self.narrow32(v);
        self.b.ins().uextend(I64, n)
    }

    /// The low 32 bits of `v`. When `v` is a 64-bit add, subtract, multiply or bitwise
    /// operation, the same operation on the operands' low halves: x86's 32-bit forms clear the
    /// upper half for free, so zero-extending the result costs no `mov` (Cranelift's egraph
    /// knows both forms but may keep the truncation of the wide one).
    fn narrow32(&mut self, v: Value) -> Value {
        let dfg = &self.b.func.dfg;
        if let ValueDef::Result(inst, 0) = dfg.value_def(v)
            && dfg.value_type(v) == I64
            && let InstructionData::Binary { opcode, args: [x, y] } = dfg.insts[inst]
            && matches!(
                opcode,
                Opcode::Iadd | Opcode::Isub | Opcode::Imul | Opcode::Band | Opcode::Bor | Opcode::Bxor
            )
        {
            let (x, y) = (self.b.ins().ireduce(I32, x), self.b.ins().ireduce(I32, y));
            let (inst, dfg) = self.b.ins().Binary(opcode, I32, x, y);
            return dfg.first_result(inst);
        }
        self.b.ins().ireduce(I32, v)
    }

    /// `x` when `v` is `x` zero-extended from 32 bits as the translation builds it (a 32-bit
    /// ALU result, `(v << 32) >> 32`, `v & 0xffff_ffff`, a zero-extending 32-bit load).
    fn zext32_of(&mut self, v: Value) -> Option<Value> {
        let dfg = &self.b.func.dfg;
        let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return None };
        let konst = |a: Value| iconst_value(dfg, a);
        match dfg.insts[inst] {
            InstructionData::Unary { opcode: Opcode::Uextend, arg } if dfg.value_type(arg) == I32 => {
                Some(arg)
            }
            InstructionData::Binary { opcode: Opcode::Ushr, args: [a, k] } if konst(k) == Some(32) => {
                let ValueDef::Result(i, 0) = dfg.value_def(a) else { return None };
                match dfg.insts[i] {
                    InstructionData::Binary { opcode: Opcode::Ishl, args: [x, k] }
                        if konst(k) == Some(32) =>
                    {
                        Some(self.narrow32(x))
                    }
                    _ => None,
                }
            }
            InstructionData::Binary { opcode: Opcode::Band, args: [x, m] }
                if konst(m) == Some(0xffff_ffff) =>
            {
                Some(self.narrow32(x))
            }
            _ => None,
        }
    }

    /// A plain array's base for a lookup or update at `pc`: the constant, or in a loop a load of
    /// it from `base_at` that Cranelift may hoist out of the loop (the memory never changes while
    /// the code lives), one register instead of a `movabs` per iteration.
    fn array_base(&mut self, pc: usize, base: u64, base_at: u64) -> ArrayBase {
        if self.loops.iter().any(|&(head, tail)| (head..=tail).contains(&pc)) {
            let at = self.b.ins().iconst(I64, base_at as i64);
            let fixed = MemFlagsData::trusted().with_readonly().with_can_move();
            ArrayBase::Plain(self.b.ins().load(I64, fixed, at, 0))
        } else {
            ArrayBase::Plain(self.b.ins().iconst(I64, base as i64))
        }
    }

    /// `idx < max ? base(slot) + idx * stride : NULL`.
    fn array_elem(&mut self, idx: Value, base: ArrayBase, stride: u64, max: u32) -> Value {
        let off = self.b.ins().imul_imm_s(idx, stride as i64);
        let zero = self.b.ins().iconst(I64, 0);
        let (ok, p) = match base {
            ArrayBase::Plain(b) => {
                let in_range = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, idx, i64::from(max));
                (in_range, self.b.ins().iadd(off, b))
            }
            ArrayBase::PerCpu { table, slots } => {
                let slot = self.env_load(off::SLOT, true);
                let slot_ok = self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, slot, slots as i64);
                // One compare per lookup: the index against a bound that is `max` for a slot
                // the map has and 0 for one it has not (the bound does not change during a
                // run, so Cranelift hoists it out of a loop of lookups).
                let max = self.b.ins().iconst(I64, i64::from(max));
                let bound = self.b.ins().select(slot_ok, max, zero);
                let ok = self.b.ins().icmp(IntCC::UnsignedLessThan, idx, bound);
                // An out-of-range slot reads table[0] (never used: the result is NULL then).
                let s = self.b.ins().select(slot_ok, slot, zero);
                let s8 = self.b.ins().ishl_imm_u(s, 3);
                let entry = self.b.ins().iadd_imm_s(s8, table as i64);
                // The slot table never changes while the code lives: a load Cranelift may hoist
                // out of a loop or drop when unused.
                let fixed = MemFlagsData::trusted().with_readonly().with_can_move();
                let slot_base = self.b.ins().load(I64, fixed, entry, 0);
                (ok, self.b.ins().iadd(slot_base, off))
            }
        };
        let r = self.b.ins().select(ok, p, zero);
        self.nonnull.insert(r, (ok, p));
        r
    }
}

/// Longest loop (instructions from the target of its backward jumps to the last of them) the
/// translation unrolls.
const UNROLL_INSNS: usize = 64;
/// Most instructions the translation adds to one function by unrolling.
const UNROLL_BUDGET: usize = 256;

/// The loops of a function worth unrolling twice, `(head, tail)`, from its backward jumps
/// `(target, jump)`: each head's loop runs from it to its last backward jump, and is unrolled
/// when short and innermost (no other loop overlaps it), within [`UNROLL_BUDGET`].
///
/// Unrolling here is duplication: the loop's instructions are translated a second time, the
/// first copy's backward jumps enter the second and the second's go back to the first, every
/// exit test stays. Both copies are the same code, so any jump may enter either; what changes is
/// that one iteration in two falls through to the next instead of taking a branch, which is
/// what a short loop's speed is bound by (a taken branch ends the front end's fetch).
fn unrolled_loops(back_edges: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut loops: BTreeMap<usize, usize> = BTreeMap::new();
    for &(target, jump) in back_edges {
        let tail = loops.entry(target).or_insert(jump);
        *tail = (*tail).max(jump);
    }
    let ranges: Vec<(usize, usize)> = loops.into_iter().collect();
    let mut budget = UNROLL_BUDGET;
    let mut out = Vec::new();
    for (i, &(head, tail)) in ranges.iter().enumerate() {
        let len = tail - head + 1;
        let alone = ranges.iter().enumerate().all(|(j, &(h, t))| i == j || t < head || h > tail);
        if alone && len <= UNROLL_INSNS && len <= budget {
            budget -= len;
            out.push((head, tail));
        }
    }
    out
}

/// The Cranelift blocks a function's jumps enter: one per block leader, and a second set for
/// the leaders of each unrolled loop ([`unrolled_loops`]).
struct Blocks {
    first: BTreeMap<usize, Block>,
    /// `(head, tail, second copy's blocks)` of each unrolled loop.
    unrolled: Vec<(usize, usize, BTreeMap<usize, Block>)>,
    /// While a loop's copy is being translated: the loop, and whether it is the second copy.
    copy: Option<(usize, bool)>,
}

impl Blocks {
    /// The block a jump at `pc` to `target` enters: within the loop copy being translated, a
    /// backward jump crosses to the other copy and a forward one stays in this one; anywhere
    /// else, the one block of `target`.
    fn at(&self, pc: usize, target: usize) -> Block {
        if let Some((l, second)) = self.copy {
            let (head, tail, ref other) = self.unrolled[l];
            if (head..=tail).contains(&target) && (second != (target <= pc)) {
                return other[&target];
            }
        }
        self.first[&target]
    }

    /// The block that starts at `pc` in the copy being translated, if one does.
    fn starting(&self, pc: usize) -> Option<Block> {
        match self.copy {
            Some((l, true)) => self.unrolled[l].2.get(&pc).copied(),
            _ => self.first.get(&pc).copied(),
        }
    }
}

/// Where an inline array access finds element 0 ([`Fx::array_elem`]).
#[derive(Clone, Copy)]
enum ArrayBase {
    /// A plain array's base (a constant, or loaded: [`Fx::array_base`]).
    Plain(Value),
    /// A per-CPU array: the slot's base is `table[slot]` for a slot below `slots`.
    PerCpu { table: u64, slots: u64 },
}

/// A value that is `width` bytes of the packet from `base + off` (as a little-endian number),
/// zero-extended and shifted left by `shift` bytes, all read at `epoch` ([`Fx::combine_loads`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    base: Value,
    off: i64,
    width: u8,
    shift: u8,
    epoch: u32,
}

impl Chunk {
    fn is_loaded_byte(&self) -> bool {
        self.width == 1 && self.shift == 0
    }
}

/// Packet stores of a verified function, held back so that adjacent ones go out as one wider
/// store — clang writes a `memcpy` into the packet (a MAC swap) as byte loads and byte stores,
/// which the kernel's JIT emits one by one. The bytes are kept by offset from one base value,
/// each as byte `k` of a value ([`Fx::byte_of`]); `flush_stores` writes runs of 2, 4 or 8
/// bytes that are consecutive bytes of one value, or of one earlier load of packet bytes
/// nothing has written since (the `epoch` of that load), as one store.
///
/// Held stores go out, in program order as far as any reader can tell, before anything that
/// may read or write them: a packet load that overlaps them or has another base, any other
/// non-stack access, a call, a jump, an exit, a block boundary. Stack accesses and ALU
/// instructions pass them (the verifier proved those never touch the packet); so does a packet
/// load of other bytes from the same base.
#[derive(Default)]
struct Pending {
    base: Option<Value>,
    /// `(offset, value, byte of it)` in program order.
    bytes: Vec<(i64, Value, u32)>,
}

/// A stack access as [`Fx::dead_stack_stores`] sees one: `None` for none (no stack access, or
/// proven off the stack), `Some(None)` for one at an unknown offset, else `Some(Some((frame
/// offset, size, is a store, is a plain load)))`.
type StackAccess = Option<Option<(i64, u8, bool, bool)>>;

impl<C: Context> Fx<'_, '_, C> {
    /// The frame bytes each block (by its leader) may read before it or a block after it writes
    /// them: a backward fixed point over the function's blocks, where a load at a constant frame
    /// offset reads its bytes, a plain store there writes them, an `exit` ends the frame, and
    /// anything else that may touch the stack — a call of any kind (it may read the frame
    /// through a pointer), a stack access at an unknown offset, an atomic — reads all of it.
    fn stack_live_in(
        &self,
        start: usize,
        end: usize,
        leaders: &BTreeSet<usize>,
        stack_access: &dyn Fn(usize) -> StackAccess,
    ) -> HashMap<usize, Vec<u64>> {
        let words = (STACK_BYTES / 64) as usize;
        let all = vec![u64::MAX; words];
        // Each block: its instructions and where it may go next.
        let mut blocks: Vec<(usize, Vec<usize>, Vec<usize>)> = Vec::new();
        let starts: Vec<usize> = leaders.iter().copied().filter(|&l| l >= start && l < end).collect();
        for (i, &l) in starts.iter().enumerate() {
            let stop = starts.get(i + 1).copied().unwrap_or(end);
            let mut pcs = Vec::new();
            let mut next = vec![stop];
            let mut q = l;
            while q < stop {
                pcs.push(q);
                let insn = self.insns[q];
                let class = insn.class();
                if let Some((target, falls)) = jump_target(insn, q) {
                    if !falls {
                        next.clear();
                    }
                    next.push(target);
                } else if (class == BPF_JMP || class == BPF_JMP32) && insn.code & 0xf0 == BPF_EXIT {
                    next.clear();
                }
                q += if insn.is_lddw() { 2 } else { 1 };
            }
            next.retain(|&n| n < end);
            blocks.push((l, pcs, next));
        }
        let mut live: HashMap<usize, Vec<u64>> = starts.iter().map(|&l| (l, vec![0; words])).collect();
        let mut changed = true;
        while changed {
            changed = false;
            for (l, pcs, next) in blocks.iter().rev() {
                let mut cur = vec![0u64; words];
                for n in next {
                    // A successor that is no leader (none should be) is anything.
                    let s = live.get(n).unwrap_or(&all);
                    for (c, w) in cur.iter_mut().zip(s) {
                        *c |= w;
                    }
                }
                for &q in pcs.iter().rev() {
                    let insn = self.insns[q];
                    let class = insn.class();
                    if insn.code == BPF_JMP | BPF_EXIT {
                        // The frame ends; a program that reads stack bytes it never wrote
                        // could see them again (the next call at this depth, the next run).
                        if self.facts.reads_uninit_stack() {
                            cur.clone_from(&all);
                        } else {
                            cur.fill(0);
                        }
                        continue;
                    }
                    if (class == BPF_JMP || class == BPF_JMP32) && insn.code & 0xf0 == BPF_CALL {
                        cur.clone_from(&all);
                        continue;
                    }
                    match stack_access(q) {
                        None => {}
                        Some(Some((at, size, store, _)))
                            if at >= -(STACK_BYTES as i64) && at + i64::from(size) <= 0 =>
                        {
                            for b in at..at + i64::from(size) {
                                let i = (b + STACK_BYTES as i64) as usize;
                                if store {
                                    cur[i / 64] &= !(1 << (i % 64));
                                } else {
                                    cur[i / 64] |= 1 << (i % 64);
                                }
                            }
                        }
                        Some(_) => cur.clone_from(&all),
                    }
                }
                if live[l] != cur {
                    live.insert(*l, cur);
                    changed = true;
                }
            }
        }
        live
    }

    /// The stack stores of this function (`start..end`, block leaders `leaders`) that need not
    /// be made: in a verified function, a store at a constant frame offset after which its
    /// block runs to an `exit`, or to its end with the bytes dead in every block it may go to
    /// ([`Fx::stack_live_in`]), with no other call, no stack access that could read its bytes —
    /// except unsigned loads of exactly its bytes, which `access` gives the stored value, and
    /// an inline array lookup keyed by exactly its four bytes, which `lookup` gives it too. The
    /// frame dies at the exit, so nothing else can see the store. clang's `memcpy` temporaries
    /// (the MAC swap's) are such stores once Cranelift forwarded their loads, and so is a loop's
    /// array lookup key, stored again on every iteration before the next lookup.
    fn dead_stack_stores(&self, start: usize, end: usize, leaders: &BTreeSet<usize>) -> BTreeSet<usize> {
        let mut dead = BTreeSet::new();
        if !self.facts.is_verified() {
            return dead;
        }
        // The stack access at `pc`, as `(frame offset, size, is a store, is a plain load)`.
        let stack_access = |pc: usize| -> StackAccess {
            let insn = self.insns[pc];
            let class = insn.class();
            if !matches!(class, BPF_LDX | BPF_ST | BPF_STX) {
                return None;
            }
            let base = if class == BPF_LDX { insn.src } else { insn.dst };
            let region = self.facts.region(pc);
            if region != region::STACK {
                // Not the stack at all, or maybe the stack: unknown.
                return if region & region::STACK == 0 && self.facts.verified_in_bounds(pc) {
                    None
                } else {
                    Some(None)
                };
            }
            let mode = insn.code & 0xe0;
            let k = match self.facts.at(pc)[usize::from(base)] {
                Fact::Fp(k) if self.facts.verified_in_bounds(pc) && mode != BPF_ATOMIC => k,
                _ => return Some(None),
            };
            let at = k + i64::from(insn.off);
            let size = size_of_code(insn.code);
            Some(Some((at, size, class != BPF_LDX, class == BPF_LDX && mode == BPF_MEM)))
        };
        let live = self.stack_live_in(start, end, leaders, &stack_access);
        // The inline array lookup (`lookup`) at `q`, when it is one: its key's frame offset.
        let array_key = |q: usize| -> Option<i64> {
            let insn = self.insns[q];
            if !insn.is_helper_call() || insn.imm as u32 != id::MAP_LOOKUP_ELEM {
                return None;
            }
            let facts = self.facts.at(q);
            let info = facts[1].map_handle(self.maps.len()).map(|m| self.maps[m])?;
            match info.kind {
                MapKind::Array { .. } | MapKind::PerCpuArray { .. } if info.key_size == 4 => {
                    self.in_frame(facts[2], 4)
                }
                _ => None,
            }
        };
        let dead_at = |leader: usize, at: i64, size: u8| {
            live.get(&leader).is_some_and(|l| (at..at + i64::from(size)).all(|b| !live_bit(l, b)))
        };
        for pc in start..end {
            let Some(Some((at, size, true, _))) = stack_access(pc) else { continue };
            let overlaps = |a: i64, n: u8| a < at + i64::from(size) && at < a + i64::from(n);
            let mut q = pc + 1;
            let reaches_exit = loop {
                if q >= end {
                    break false;
                }
                let insn = self.insns[q];
                if insn.code == BPF_JMP | BPF_EXIT {
                    // Also when other paths jump to it: the frame dies there — unless the
                    // program reads stack bytes it never wrote ([`Facts::reads_uninit_stack`]).
                    break !self.facts.reads_uninit_stack();
                }
                if leaders.contains(&q) {
                    break dead_at(q, at, size);
                }
                if insn.is_lddw() {
                    q += 2;
                    continue;
                }
                if let Some((target, fall)) = jump_target(insn, q) {
                    break dead_at(target, at, size) && (!fall || dead_at(q + 1, at, size));
                }
                let class = insn.class();
                if let Some(k) = array_key(q) {
                    if overlaps(k, 4) && (k, 4) != (at, size) {
                        break false;
                    }
                    q += 1;
                    continue;
                }
                match class {
                    BPF_ALU | BPF_ALU64 => {}
                    BPF_LDX | BPF_ST | BPF_STX => match stack_access(q) {
                        None => {}
                        Some(None) => break false,
                        Some(Some((a, n, store, plain)))
                            if overlaps(a, n) && (store || !plain || (a, n) != (at, size)) =>
                        {
                            break false;
                        }
                        Some(Some(_)) => {}
                    },
                    _ => break false,
                }
                q += 1;
            };
            if reaches_exit {
                dead.insert(pc);
            }
        }
        dead
    }

    /// Byte loads put together with shifts and ors — clang's way to read unaligned packet
    /// bytes into one value (`tmp = b5 << 8 | b4`) — become one wider load: `v` is the result of
    /// the ALU64 operation `op` on `a` and `s` (`imm` for a constant shift). An `or` of two
    /// [`Chunk`]s read at this epoch that cover adjacent bytes in the same order is a chunk
    /// itself, and a 2-, 4- or 8-byte chunk at shift 0 a load of its own; the byte loads it
    /// replaces are dropped when nothing else uses them (`drop_unused_loads`).
    fn combine_loads(&mut self, op: u8, x: bool, a: Value, s: Value, imm: i32, v: Value) -> Value {
        let Some(ca) = self.chunks.get(&a).copied().filter(|c| c.epoch == self.epoch) else { return v };
        let c = if op == BPF_LSH && !x {
            if imm <= 0 || imm % 8 != 0 || i32::from(ca.shift + ca.width) + imm / 8 > 8 {
                return v;
            }
            Chunk { shift: ca.shift + (imm / 8) as u8, ..ca }
        } else if op == BPF_OR && x {
            let Some(cs) = self.chunks.get(&s).copied().filter(|c| c.epoch == self.epoch) else { return v };
            let (lo, hi) = if ca.shift < cs.shift { (ca, cs) } else { (cs, ca) };
            if lo.base != hi.base || hi.shift != lo.shift + lo.width || hi.off != lo.off + i64::from(lo.width)
            {
                return v;
            }
            Chunk { width: lo.width + hi.width, ..lo }
        } else {
            return v;
        };
        if c.shift == 0 && matches!(c.width, 2 | 4 | 8) {
            let f = self.mem_at(region::PACKET, None).with_notrap();
            let addr = self.b.ins().iadd_imm_s(c.base, c.off);
            let wide = self.direct(addr, c.width, Access::Load { signed: false }, f);
            self.chunks.insert(wide, c);
            return wide;
        }
        self.chunks.insert(v, c);
        v
    }

    /// Holds back a packet store of `size` bytes of `value` at `base + off`.
    fn buffer_store(&mut self, base: Value, off: i64, size: u8, value: Value) {
        if self.pending.base.is_some_and(|b| b != base) {
            self.flush_stores();
        }
        self.pending.base = Some(base);
        let (src, k) = self.byte_of(value);
        for i in 0..u32::from(size) {
            let byte = if k + i < 8 { (src, k + i) } else { (value, i) };
            self.pending.bytes.push((off + i64::from(i), byte.0, byte.1));
        }
    }

    /// `v` as byte `k` onwards of another value: `(x, k)` when `v` is `x` shifted right
    /// (logically) by `8 * k` bits, else `(v, 0)`.
    fn byte_of(&self, v: Value) -> (Value, u32) {
        let dfg = &self.b.func.dfg;
        let ValueDef::Result(inst, _) = dfg.value_def(v) else { return (v, 0) };
        let (x, bits) = match dfg.insts[inst] {
            InstructionData::Binary { opcode: Opcode::Ushr, args: [x, n] } => match iconst_value(dfg, n) {
                Some(bits) => (x, bits),
                None => return (v, 0),
            },
            _ => return (v, 0),
        };
        if dfg.value_type(x) != I64 || bits % 8 != 0 || !(8..64).contains(&bits) {
            return (v, 0);
        }
        let (y, k) = self.byte_of(x);
        let k = k + bits as u32 / 8;
        if k < 8 { (y, k) } else { (x, bits as u32 / 8) }
    }

    /// Flushes the held stores when a packet load of `size` bytes at `base + off` may read one.
    fn flush_overlapping(&mut self, base: Value, off: i64, size: u8) {
        let Some(b) = self.pending.base else { return };
        let end = off + i64::from(size);
        if b != base || self.pending.bytes.iter().any(|&(at, _, _)| at >= off && at < end) {
            self.flush_stores();
        }
    }

    /// Writes the held stores, adjacent bytes of one value (or of one load) as one store.
    fn flush_stores(&mut self) {
        let Some(base) = self.pending.base.take() else { return };
        // The last store to each byte wins; then by offset.
        let mut bytes: BTreeMap<i64, (Value, u32)> = BTreeMap::new();
        for (at, v, k) in std::mem::take(&mut self.pending.bytes) {
            bytes.insert(at, (v, k));
        }
        let bytes: Vec<(i64, Value, u32)> = bytes.into_iter().map(|(at, (v, k))| (at, v, k)).collect();
        let f = self.mem_at(region::PACKET, None);
        // What each run becomes: `(offset, width, value)`, the value either a register value
        // shifted right by `8 * k` or a load to make first.
        enum From {
            Value(Value, u32),
            Load(Value, i64),
        }
        let mut plan: Vec<(i64, u8, From)> = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            let (at, v, k) = bytes[i];
            let mut done = false;
            for w in [8usize, 4, 2] {
                let Some(run) = bytes.get(i..i + w) else { continue };
                let adjacent = run.iter().enumerate().all(|(j, &(a, _, _))| a == at + j as i64);
                if !adjacent {
                    continue;
                }
                if k as usize + w <= 8
                    && run.iter().enumerate().all(|(j, &(_, x, kk))| x == v && kk == k + j as u32)
                {
                    plan.push((at, w as u8, From::Value(v, k)));
                } else if let Some(&c) = self.chunks.get(&v).filter(|c| k == 0 && c.is_loaded_byte())
                    && c.epoch == self.epoch
                    && run.iter().enumerate().all(|(j, &(_, x, kk))| {
                        kk == 0 && self.chunks.get(&x) == Some(&Chunk { off: c.off + j as i64, ..c })
                    })
                {
                    plan.push((at, w as u8, From::Load(c.base, c.off)));
                } else {
                    continue;
                }
                i += w;
                done = true;
                break;
            }
            if !done {
                plan.push((at, 1, From::Value(v, k)));
                i += 1;
            }
        }
        // Loads first: they read what the packet held before any of these stores, as each of
        // the byte loads they replace did (a load after a held store to its bytes flushed it).
        let load_flags = f.with_notrap();
        let values: Vec<(i64, Value)> = plan
            .into_iter()
            .map(|(at, w, from)| {
                let ty = int_ty(w);
                let v = match from {
                    From::Load(lb, lo) => {
                        let a = self.b.ins().iadd_imm_s(lb, lo);
                        self.b.ins().load(ty, load_flags, a, 0)
                    }
                    From::Value(v, k) => {
                        let v = if k == 0 { v } else { self.b.ins().ushr_imm_u(v, i64::from(k) * 8) };
                        if ty == I64 { v } else { self.b.ins().ireduce(ty, v) }
                    }
                };
                (at, v)
            })
            .collect();
        for (at, v) in values {
            let a = self.b.ins().iadd_imm_s(base, at);
            self.b.ins().store(f, v, a, 0);
        }
        self.epoch += 1;
    }
}

/// The constant `v` is, when an `iconst` defines it.
fn iconst_value(dfg: &cranelift_codegen::ir::DataFlowGraph, v: Value) -> Option<i64> {
    let ValueDef::Result(inst, 0) = dfg.value_def(v) else { return None };
    match dfg.insts[inst] {
        InstructionData::UnaryImm { opcode: Opcode::Iconst, imm } => Some(imm.bits()),
        _ => None,
    }
}

/// Removes the loads among `loads` whose result nothing uses — packet byte loads a wider load
/// replaced ([`Pending`], [`Fx::combine_loads`]) — and the shifts and ors that only combined
/// them. The loads are proven in bounds (no fault to keep), but Cranelift lowers every load,
/// used or not.
fn drop_unused_loads(func: &mut cranelift_codegen::ir::Function, loads: &[Value]) {
    if loads.is_empty() {
        return;
    }
    let loads: std::collections::HashSet<_> = loads
        .iter()
        .filter_map(|&v| match func.dfg.value_def(func.dfg.resolve_aliases(v)) {
            ValueDef::Result(inst, _) if func.dfg.insts[inst].opcode().can_load() => Some(inst),
            _ => None,
        })
        .collect();
    loop {
        let dfg = &func.dfg;
        let mut used = std::collections::HashSet::new();
        for block in func.layout.blocks() {
            for inst in func.layout.block_insts(block) {
                used.extend(dfg.inst_values(inst).map(|v| dfg.resolve_aliases(v)));
            }
        }
        let mut dead = Vec::new();
        for block in func.layout.blocks() {
            for inst in func.layout.block_insts(block) {
                let removable = loads.contains(&inst)
                    || matches!(
                        dfg.insts[inst].opcode(),
                        Opcode::Ishl | Opcode::Bor | Opcode::Iconst | Opcode::Iadd
                    );
                let results = dfg.inst_results(inst);
                if removable && !results.is_empty() && results.iter().all(|r| !used.contains(r)) {
                    dead.push(inst);
                }
            }
        }
        if dead.is_empty() {
            return;
        }
        for inst in dead {
            func.layout.remove_inst(inst);
        }
    }
}

fn int_ty(bytes: u8) -> Type {
    match bytes {
        1 => I8,
        2 => I16,
        4 => I32,
        _ => I64,
    }
}

/// Whether frame byte `at` is set in a [`Fx::stack_live_in`] set; bytes outside it are.
fn live_bit(live: &[u64], at: i64) -> bool {
    let i = at + STACK_BYTES as i64;
    if i < 0 || at >= 0 {
        return true;
    }
    let i = i as usize;
    live[i / 64] >> (i % 64) & 1 != 0
}

fn size_of_code(code: u8) -> u8 {
    match code & 0x18 {
        BPF_B => 1,
        BPF_H => 2,
        BPF_W => 4,
        _ => 8,
    }
}

/// The byte ranges of the frame that the stack accesses of function `[start, end)` cover,
/// overlapping ones merged, sorted; `None` when some stack access is not at a known offset from
/// the frame pointer. Counts every access the translator makes: loads, stores and atomics the
/// verifier placed on the stack, and the keys and values map helpers on a known map read inline.
fn stack_ranges(
    insns: &[Insn],
    maps: &[MapInfo],
    facts: &Facts,
    start: usize,
    end: usize,
) -> Option<Vec<(i64, i64)>> {
    let mut ranges = Vec::new();
    for (pc, insn) in insns.iter().enumerate().take(end).skip(start) {
        let class = insn.class();
        let regs = facts.at(pc);
        if class == BPF_LDX || class == BPF_ST || class == BPF_STX {
            if facts.region(pc) & region::STACK == 0 {
                continue;
            }
            let base = if class == BPF_LDX { insn.src } else { insn.dst };
            let Fact::Fp(k) = regs[usize::from(base)] else {
                return None;
            };
            let size = i64::from(size_of_code(insn.code));
            let at = k.checked_add(i64::from(insn.off))?;
            ranges.push((at, at + size));
        } else if insn.is_helper_call() {
            let helper = insn.imm as u32;
            let Some(info) = regs[1].map_handle(maps.len()).map(|m| maps[m]) else {
                continue;
            };
            let at = |r: usize| match regs[r] {
                Fact::Fp(k) => Some(k),
                _ => None,
            };
            let key_size = i64::from(info.key_size);
            match (helper, at(2), at(3)) {
                // An LPM key is read as the prefix length, then the data.
                (id::MAP_LOOKUP_ELEM, Some(k), _) if matches!(info.kind, MapKind::LpmWord) => {
                    ranges.extend([(k, k + 4), (k + 4, k + key_size)]);
                }
                (id::MAP_LOOKUP_ELEM, Some(k), _) => ranges.push((k, k + key_size)),
                (id::MAP_UPDATE_ELEM, k, v) => {
                    ranges.extend(k.map(|k| (k, k + key_size)));
                    ranges.extend(v.map(|v| (v, v + i64::from(info.value_size))));
                }
                _ => {}
            }
        }
    }
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (lo, hi) in ranges {
        match merged.last_mut() {
            Some(last) if lo < last.1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    Some(merged)
}
