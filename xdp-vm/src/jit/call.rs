//! The run environment compiled code works on, and the `extern "C"` functions it calls: slow
//! paths of memory accesses, helpers, map operations and faults.
//!
//! Invariant: every function here is called only by code this JIT generated, with the `Env`
//! pointer that [`JitProgram::run`](super::JitProgram::run) passed to the program's entry. That
//! `Env` lives on `run`'s stack for the whole call, and nothing else refers to it while one of
//! these functions runs (generated code is suspended in the call). The map pointers compiled
//! into the code point into the `Arc<Map>`s the `JitProgram` holds, so they outlive every run.
//!
//! These functions reach the same code the interpreter runs ([`Memory`], `call_helper`), so a
//! slow path gives exactly the interpreter's result or fault.
#![expect(unsafe_code, reason = "dereferences the run environment and map pointers compiled code passes")]

use std::mem::offset_of;
use std::sync::Arc;

use maps::Map;

use crate::context::Context;
use crate::helpers;
use crate::interp::{Fault, call_helper};
use crate::memory::{AtomicOp, Memory, Region};

/// Bytes of stack: eight 512-byte frames, frame 0 at the top, above the key area of
/// `bpf_for_each_map_elem` callbacks (`helpers::callbacks::KEY_AREA`).
pub(crate) const STACK_BYTES: u64 =
    (crate::insn::STACK_SIZE * crate::insn::MAX_CALL_FRAMES + helpers::callbacks::KEY_AREA) as u64;

/// What one run of compiled code works on. Generated code reads and writes the leading `u64`
/// fields at the offsets in [`off`]; the rest is for the functions below.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Env<'a> {
    pub pkt_start: u64,
    pub pkt_len: u64,
    pub stack_start: u64,
    pub ctx: u64,
    pub slot: u64,
    /// Nesting of bpf-to-bpf calls (0 in the main program).
    pub depth: u64,
    /// Taken backward jumps so far.
    pub backward: u64,
    /// Non-zero once `fault` is set: generated code checks it after every fallible call.
    pub faulted: u64,
    /// Tail calls made so far in this run (at most `MAX_TAIL_CALL_CNT`), while `tail_target`
    /// runs: generated code keeps the count in a register and passes it here and back.
    pub tail_calls: u64,
    /// The tail-call targets of the running program's link set: `tail_len` entry addresses
    /// (`TailTable::entries`), indexed by program id; null and 0 when it was never linked.
    /// Fixed for the run: a tail call keeps the first program's set, as the interpreter does.
    pub tail_entries: *const u64,
    pub tail_len: u64,
    /// The context state (`*mut C::State<'_>`), type-erased.
    pub state: *mut (),
    pub maps: &'a [Arc<Map>],
    pub fault: Option<Fault>,
}

/// Byte offsets of [`Env`]'s fields, for generated code.
pub(crate) mod off {
    use super::*;
    pub const PKT_START: i32 = offset_of!(Env<'static>, pkt_start) as i32;
    pub const PKT_LEN: i32 = offset_of!(Env<'static>, pkt_len) as i32;
    pub const STACK_START: i32 = offset_of!(Env<'static>, stack_start) as i32;
    pub const SLOT: i32 = offset_of!(Env<'static>, slot) as i32;
    pub const DEPTH: i32 = offset_of!(Env<'static>, depth) as i32;
    pub const BACKWARD: i32 = offset_of!(Env<'static>, backward) as i32;
    pub const FAULTED: i32 = offset_of!(Env<'static>, faulted) as i32;
    pub const CTX: i32 = offset_of!(Env<'static>, ctx) as i32;
    pub const TAIL_CALLS: i32 = offset_of!(Env<'static>, tail_calls) as i32;
    pub const TAIL_ENTRIES: i32 = offset_of!(Env<'static>, tail_entries) as i32;
    pub const TAIL_LEN: i32 = offset_of!(Env<'static>, tail_len) as i32;
}

impl Env<'_> {
    fn memory(&self) -> Memory<'_> {
        Memory {
            packet: Region { start: self.pkt_start as usize, len: self.pkt_len as usize },
            stack: Region { start: self.stack_start as usize, len: STACK_BYTES as usize },
            maps: self.maps,
        }
    }

    fn fail(&mut self, fault: Fault) -> u64 {
        self.fault = Some(fault);
        self.faulted = 1;
        0
    }

    /// The fault a run recorded ([`Env::fail`]), if any, with what the run left reset for a
    /// fresh one (a fault may stop a run inside a bpf-to-bpf call).
    pub(crate) fn take_fault(&mut self) -> Option<Fault> {
        self.faulted = 0;
        self.depth = 0;
        self.fault.take()
    }

    /// A run's result: `r0`, or the fault it recorded (taken, [`Env::take_fault`]).
    #[inline(always)]
    pub(crate) fn outcome(&mut self, r0: u64) -> Result<u64, Fault> {
        if self.faulted == 0 { Ok(r0) } else { Err(self.faulted_run()) }
    }

    #[cold]
    #[inline(never)]
    fn faulted_run(&mut self) -> Fault {
        self.take_fault().expect("a run that set `faulted` recorded its fault")
    }
}

/// Faults raised by generated code itself (`raise`'s `kind`).
pub(crate) mod raise_kind {
    pub const CALL_DEPTH: u64 = 1;
    pub const LOOP_LIMIT: u64 = 2;
    /// `bpf_tail_call` from a subprogram.
    pub const TAIL_IN_SUBPROGRAM: u64 = 3;
    /// `bpf_tail_call` whose r1 is not the context.
    pub const TAIL_CALL_ARG: u64 = 4;
}

/// Recovers the environment.
///
/// # Safety
/// `env` is the pointer generated code was entered with (module invariant).
unsafe fn env<'e, 'a>(env: *mut Env<'a>) -> &'e mut Env<'a> {
    // SAFETY: the caller passes the live, otherwise unreferenced `Env` of the current run.
    unsafe { &mut *env }
}

/// Recovers the context state.
///
/// # Safety
/// `env.state` is the `C::State` of the current run, not otherwise borrowed (module invariant:
/// `run` holds the `&mut` and only passes this pointer down).
unsafe fn state<'s, C: Context>(env: &Env<'_>) -> &'s mut C::State<'s> {
    // SAFETY: see the function's contract.
    unsafe { &mut *env.state.cast::<C::State<'s>>() }
}

/// A load outside the packet frame and the stack: the context, then map values.
pub(crate) extern "C" fn load_slow<C: Context>(e: *mut Env<'_>, addr: u64, size: u64, pc: u64) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    let size = size as usize;
    // SAFETY: module invariant; the state is only read here.
    let st: &C::State<'_> = unsafe { state::<C>(e) };
    let ctx = Region { start: e.ctx as usize, len: C::SIZE as usize };
    let ctx_addr = e.ctx;
    let v = e
        .memory()
        .load_or(addr, size, |a| if ctx.holds(a, size) { C::load(st, a - ctx_addr, size) } else { None });
    match v {
        Some(v) => v,
        None => e.fail(Fault::Memory { pc: pc as usize, addr, size: size as u8, write: false }),
    }
}

/// A store outside the packet frame and the stack: map values (not read-only ones).
pub(crate) extern "C" fn store_slow(e: *mut Env<'_>, addr: u64, size: u64, pc: u64, value: u64) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    if e.memory().store(addr, size as usize, value).is_none() {
        return e.fail(Fault::Memory { pc: pc as usize, addr, size: size as u8, write: true });
    }
    0
}

/// `op` of [`atomic_slow`]: the instruction's `imm`, with bit 63 set for 64-bit operations.
pub(crate) const ATOMIC_WIDE: u64 = 1 << 63;

/// An atomic instruction whose address is not an aligned packet or stack address.
pub(crate) extern "C" fn atomic_slow(
    e: *mut Env<'_>,
    addr: u64,
    op: u64,
    pc: u64,
    operand: u64,
    expected: u64,
) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    let wide = op & ATOMIC_WIDE != 0;
    let imm = op as u32 as i32;
    let mem = e.memory();
    let r = if imm == crate::insn::BPF_CMPXCHG {
        mem.cmpxchg(addr, wide, expected, operand)
    } else {
        let kind = match imm & !crate::insn::BPF_FETCH {
            0x00 => AtomicOp::Add,
            0x40 => AtomicOp::Or,
            0x50 => AtomicOp::And,
            0xa0 => AtomicOp::Xor,
            _ => AtomicOp::Xchg,
        };
        mem.atomic(addr, wide, kind, operand)
    };
    match r {
        Some(old) => old,
        None => e.fail(Fault::Atomic { pc: pc as usize, addr }),
    }
}

/// Any helper, through the interpreter's implementation.
pub(crate) extern "C" fn helper<C: Context>(
    e: *mut Env<'_>,
    id: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    r5: u64,
    pc: u64,
) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    let mut regs = [0u64; 16];
    regs[1..6].copy_from_slice(&[r1, r2, r3, r4, r5]);
    // SAFETY: module invariant.
    let st = unsafe { state::<C>(e) };
    let mem = e.memory();
    match call_helper::<C>(id as u32, &regs, e.maps, &mem, st, e.ctx, e.slot as usize, pc as usize) {
        Ok(v) => v,
        Err(f) => e.fail(f),
    }
}

/// `bpf_tail_call(ctx, map, index)` from the main program when the compiler did not know the
/// map: the checks and the count of the interpreter (`interp::tail_target`), then the target's
/// tail entry from the run's link set, which generated code jumps to; 0 when the call fails and
/// the program goes on (or a fault is recorded). No reference is taken: the running program
/// owns its link set, and the set owns every target's code, for the whole run.
pub(crate) extern "C" fn tail_target(e: *mut Env<'_>, r1: u64, map: u64, index: u64, pc: u64) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    let pc = pc as usize;
    if e.depth != 0 {
        return e.fail(Fault::TailCallInSubprogram { pc });
    }
    if r1 != e.ctx {
        return e.fail(Fault::HelperArgument { pc, helper: helpers::id::TAIL_CALL });
    }
    let m = match crate::interp::map_handle(e.maps, map) {
        Some(m) => m,
        None => return e.fail(Fault::NotAMap { pc, value: map }),
    };
    let index = index as u32;
    let def = m.def();
    if def.map_type != maps::map_type::PROG_ARRAY
        || index >= def.max_entries
        || e.tail_calls >= u64::from(maps::MAX_TAIL_CALL_CNT)
    {
        return 0;
    }
    e.tail_calls += 1;
    let Some(id) = m.prog_id(index) else { return 0 };
    if u64::from(id) >= e.tail_len {
        return 0;
    }
    // SAFETY: `tail_entries` holds `tail_len` words (`JitProgram::run_with` sets both from the
    // running program's link set, which it keeps alive for the run), and `id < tail_len`.
    unsafe { *e.tail_entries.add(id as usize) }
}

/// `bpf_loop` / `bpf_for_each_map_elem` (`id`) with the caller's r1-r4: runs the loop of
/// `helpers::callbacks`, calling the compiled callback at `func` (picked by generated code
/// from the function reference in r2; 0 if it named none) in the frame below the caller's.
/// Each call counts as a backward jump. A fault in the callback stops the loop; it stays
/// recorded for the caller's check.
pub(crate) extern "C" fn callbacks(
    e: *mut Env<'_>,
    id: u64,
    r1: u64,
    r2: u64,
    r3: u64,
    r4: u64,
    func: u64,
    pc: u64,
) -> u64 {
    use crate::helpers::callbacks as cb;
    use crate::insn::{MAX_CALL_FRAMES, STACK_SIZE};
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    // The helper id; bit 32 set: a `bpf_loop` the kernel inlines.
    let (pc, helper, inlined) = (pc as usize, id as u32, id >> 32 != 0);
    let arg_fault = Fault::HelperArgument { pc, helper };
    if func == 0 || cb::func_target(r2).is_none() {
        return e.fail(arg_fault);
    }
    // SAFETY: `func` is the address generated code took of one of the program's functions,
    // which `translate` defines with the `(env, r1..r5, fp) -> r0` signature in the ISA's
    // default (C) calling convention, in code the running program keeps alive.
    let f = unsafe {
        std::mem::transmute::<*const u8, extern "C" fn(*mut Env<'_>, u64, u64, u64, u64, u64, u64) -> u64>(
            func as usize as *const u8,
        )
    };
    let depth = e.depth;
    let callee = depth + 1;
    if callee >= MAX_CALL_FRAMES as u64 {
        return e.fail(Fault::CallDepth { pc });
    }
    let fp = e.stack_start + STACK_BYTES - callee * STACK_SIZE as u64;
    let mem = Memory {
        packet: Region { start: e.pkt_start as usize, len: e.pkt_len as usize },
        stack: Region { start: e.stack_start as usize, len: STACK_BYTES as usize },
        maps: e.maps,
    };
    let key_at = e.stack_start + callee * cb::KEY_SLOT as u64;
    let maps = e.maps;
    let slot = e.slot as usize;
    // `Err(None)`: the callback faulted (recorded in `e`); `Err(Some(f))`: a fault to record.
    let mut call = |args: [u64; 5]| -> Result<u64, Option<Fault>> {
        e.backward += 1;
        if e.backward > crate::interp::MAX_BACKWARD_JUMPS {
            return Err(Some(Fault::LoopLimit { pc }));
        }
        e.depth = callee;
        let r0 = f(std::ptr::from_mut(e), args[0], args[1], args[2], args[3], args[4], fp);
        e.depth = depth;
        if e.faulted != 0 { Err(None) } else { Ok(r0) }
    };
    let r = if helper == crate::helpers::id::LOOP {
        cb::bpf_loop(r1, r3, r4, inlined, |i, c| call([i, c, 0, 0, 0]))
    } else {
        match crate::interp::map_handle(maps, r1) {
            Some(m) => cb::for_each_map_elem(
                m,
                r4,
                slot,
                &mem,
                key_at,
                || Some(arg_fault),
                |k, v| call([r1, k, v, r3, 0]),
            ),
            None => Err(Some(Fault::NotAMap { pc, value: r1 })),
        }
    };
    match r {
        Ok(v) => v,
        Err(Some(f)) => e.fail(f),
        Err(None) => 0,
    }
}

/// Recovers a map compiled into the code.
///
/// # Safety
/// `map` is the address of a `Map` inside an `Arc` the `JitProgram` holds (module invariant).
unsafe fn map<'m>(map: u64) -> &'m Map {
    // SAFETY: see the function's contract.
    unsafe { &*(map as usize as *const Map) }
}

/// `bpf_map_lookup_elem` on a map known at compile time; the key is checked like the
/// interpreter checks it.
pub(crate) extern "C" fn map_lookup(e: *mut Env<'_>, m: u64, key: u64, pc: u64) -> u64 {
    // SAFETY: module invariant.
    let (e, m) = unsafe { (env(e), map(m)) };
    let ks = m.def().key_size as usize;
    let slot = e.slot as usize;
    match e.memory().with_bytes(key, ks, |k| m.lookup(k, slot)) {
        Some(found) => found.map_or(0, |p| p.as_ptr() as u64),
        None => e.fail(Fault::HelperArgument { pc: pc as usize, helper: helpers::id::MAP_LOOKUP_ELEM }),
    }
}

/// `bpf_map_lookup_elem` with a key the compiler proved to lie in the current stack frame.
pub(crate) extern "C" fn map_lookup_stack_key(m: u64, key: u64, slot: u64) -> u64 {
    // SAFETY: module invariant.
    let m = unsafe { map(m) };
    let ks = m.def().key_size as usize;
    // SAFETY: the compiler emits this call only when `[key, key + key_size)` lies inside the
    // run's stack, which `run` borrows for the whole call; nothing writes it during the call.
    let k = unsafe { std::slice::from_raw_parts(key as usize as *const u8, ks) };
    m.lookup(k, slot as usize).map_or(0, |p| p.as_ptr() as u64)
}

/// `bpf_map_lookup_elem` on a hash map whose key (1, 2, 4 or 8 bytes) compiled code read from
/// the stack itself and passes as its zero-padded word ([`Map::lookup_word`]).
pub(crate) extern "C" fn map_lookup_word(m: u64, key: u64, slot: u64) -> u64 {
    // SAFETY: module invariant.
    let m = unsafe { map(m) };
    m.lookup_word(key, slot as usize).map_or(0, |p| p.as_ptr() as u64)
}

/// `bpf_map_lookup_elem` on an LPM trie whose key compiled code read from the stack itself:
/// the prefix length, and the data as one word, most significant byte first
/// ([`Map::lookup_lpm_word`]).
pub(crate) extern "C" fn map_lookup_lpm(m: u64, prefixlen: u64, data: u64) -> u64 {
    // SAFETY: module invariant.
    let m = unsafe { map(m) };
    m.lookup_lpm_word(prefixlen as u32, data).map_or(0, |p| p.as_ptr() as u64)
}

/// `bpf_map_update_elem` on a map known at compile time.
pub(crate) extern "C" fn map_update(
    e: *mut Env<'_>,
    m: u64,
    key: u64,
    value: u64,
    flags: u64,
    pc: u64,
) -> u64 {
    // SAFETY: module invariant.
    let (e, m) = unsafe { (env(e), map(m)) };
    let (ks, vs) = (m.def().key_size as usize, m.def().value_size as usize);
    let slot = e.slot as usize;
    let mem = e.memory();
    let r = mem.with_bytes(key, ks, |k| mem.with_bytes(value, vs, |v| m.update(k, v, flags, slot))).flatten();
    match r {
        Some(r) => r.map_or_else(|err| err.to_ret(), |()| 0),
        None => e.fail(Fault::HelperArgument { pc: pc as usize, helper: helpers::id::MAP_UPDATE_ELEM }),
    }
}

/// `bpf_map_update_elem` on a hash map whose key and value (at most 8 bytes each) compiled code
/// read from the stack itself and passes as their zero-padded words ([`Map::update_word`]).
pub(crate) extern "C" fn map_update_word(m: u64, key: u64, value: u64, flags: u64, slot: u64) -> u64 {
    // SAFETY: module invariant.
    let m = unsafe { map(m) };
    m.update_word(key, value, flags, slot as usize).map_or_else(|err| err.to_ret(), |()| 0)
}

/// `bpf_map_delete_elem` on a hash map whose key (at most 8 bytes) compiled code read from the
/// stack itself and passes as its zero-padded word ([`Map::delete_word`]).
pub(crate) extern "C" fn map_delete_word(m: u64, key: u64, slot: u64) -> u64 {
    // SAFETY: module invariant.
    let m = unsafe { map(m) };
    m.delete_word(key, slot as usize).map_or_else(|err| err.to_ret(), |()| 0)
}

/// `bpf_map_delete_elem` on a map known at compile time.
pub(crate) extern "C" fn map_delete(e: *mut Env<'_>, m: u64, key: u64, pc: u64) -> u64 {
    // SAFETY: module invariant.
    let (e, m) = unsafe { (env(e), map(m)) };
    let ks = m.def().key_size as usize;
    let slot = e.slot as usize;
    match e.memory().with_bytes(key, ks, |k| m.delete_from(k, slot)) {
        Some(r) => r.map_or_else(|err| err.to_ret(), |()| 0),
        None => e.fail(Fault::HelperArgument { pc: pc as usize, helper: helpers::id::MAP_DELETE_ELEM }),
    }
}

/// A fault generated code detected itself.
pub(crate) extern "C" fn raise(e: *mut Env<'_>, kind: u64, pc: u64) -> u64 {
    // SAFETY: module invariant.
    let e = unsafe { env(e) };
    let pc = pc as usize;
    e.fail(match kind {
        raise_kind::CALL_DEPTH => Fault::CallDepth { pc },
        raise_kind::TAIL_IN_SUBPROGRAM => Fault::TailCallInSubprogram { pc },
        raise_kind::TAIL_CALL_ARG => Fault::HelperArgument { pc, helper: helpers::id::TAIL_CALL },
        _ => Fault::LoopLimit { pc },
    })
}

/// `bpf_ktime_get_ns`.
pub(crate) extern "C" fn ktime_get_ns() -> u64 {
    crate::sys::monotonic_ns()
}

/// `bpf_get_prandom_u32`.
pub(crate) extern "C" fn get_prandom_u32() -> u64 {
    helpers::prandom_u32()
}

/// Addresses of the functions above, for one context kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Targets {
    pub load_slow: u64,
    pub store_slow: u64,
    pub atomic_slow: u64,
    pub helper: u64,
    pub map_lookup: u64,
    pub map_lookup_stack_key: u64,
    pub map_lookup_word: u64,
    pub map_lookup_lpm: u64,
    pub map_update: u64,
    pub map_update_word: u64,
    pub map_delete: u64,
    pub map_delete_word: u64,
    pub raise: u64,
    pub tail_target: u64,
    pub callbacks: u64,
    pub ktime_get_ns: u64,
    pub get_prandom_u32: u64,
}

impl Targets {
    pub(crate) fn of<C: Context>() -> Self {
        type F4 = extern "C" fn(*mut Env<'static>, u64, u64, u64) -> u64;
        type F5 = extern "C" fn(*mut Env<'static>, u64, u64, u64, u64) -> u64;
        type F6 = extern "C" fn(*mut Env<'static>, u64, u64, u64, u64, u64) -> u64;
        type F8 = extern "C" fn(*mut Env<'static>, u64, u64, u64, u64, u64, u64, u64) -> u64;
        Self {
            load_slow: load_slow::<C> as F4 as usize as u64,
            store_slow: store_slow as F5 as usize as u64,
            atomic_slow: atomic_slow as F6 as usize as u64,
            helper: helper::<C> as F8 as usize as u64,
            map_lookup: map_lookup as F4 as usize as u64,
            map_lookup_stack_key: map_lookup_stack_key as extern "C" fn(u64, u64, u64) -> u64 as usize as u64,
            map_lookup_word: map_lookup_word as extern "C" fn(u64, u64, u64) -> u64 as usize as u64,
            map_lookup_lpm: map_lookup_lpm as extern "C" fn(u64, u64, u64) -> u64 as usize as u64,
            map_update: map_update as F6 as usize as u64,
            map_update_word: map_update_word as extern "C" fn(u64, u64, u64, u64, u64) -> u64 as usize as u64,
            map_delete: map_delete as F4 as usize as u64,
            map_delete_word: map_delete_word as extern "C" fn(u64, u64, u64) -> u64 as usize as u64,
            raise: raise as extern "C" fn(*mut Env<'static>, u64, u64) -> u64 as usize as u64,
            tail_target: tail_target as F5 as usize as u64,
            callbacks: callbacks as F8 as usize as u64,
            ktime_get_ns: ktime_get_ns as extern "C" fn() -> u64 as usize as u64,
            get_prandom_u32: get_prandom_u32 as extern "C" fn() -> u64 as usize as u64,
        }
    }
}
