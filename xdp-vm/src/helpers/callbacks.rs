//! `bpf_loop` and `bpf_for_each_map_elem`: helpers that call a function of the program, as
//! Linux 6.18's `kernel/bpf/bpf_iter.c` (`bpf_loop`), `arraymap.c` and `hashtab.c`
//! (`map_for_each_callback`) do. The engine supplies the call: the interpreter runs the
//! function's instructions in a new frame, the JIT calls its compiled code.
//!
//! A function reference (an `lddw` with `BPF_PSEUDO_FUNC`) is bound to [`FUNC_TAG`] plus the
//! function's first instruction. The key a `bpf_for_each_map_elem` callback reads is a copy in
//! the run's key area: [`KEY_SLOT`] bytes per call depth at the bottom of the run's stack
//! memory, below the eight frames, so it is memory the engines already check and compile
//! accesses to, and a callback at depth `d` owns slot `d` for as long as it runs.

use maps::{Map, map_type};

use super::errno_ret;
use crate::insn::{MAX_CALL_FRAMES, STACK_SIZE};
use crate::memory::Memory;

/// High bits of a bound function reference; the low 32 bits are the function's first
/// instruction. Not a mappable address, so a program that dereferences one faults.
pub(crate) const FUNC_TAG: u64 = 0xffff_f1f1_0000_0000;

/// Most iterations `bpf_loop` runs (`BPF_MAX_LOOPS`); a larger count returns `-E2BIG`.
pub const MAX_LOOPS: u64 = 1 << 23;

/// Bytes of key area per call depth: the largest key a map may have that a program can pass
/// on its stack (`MAX_BPF_STACK`).
pub(crate) const KEY_SLOT: usize = STACK_SIZE;

/// Bytes of the key area, below the frames of a run's stack.
pub(crate) const KEY_AREA: usize = KEY_SLOT * MAX_CALL_FRAMES;

/// The first instruction of the function a bound function reference names.
pub(crate) fn func_target(value: u64) -> Option<usize> {
    (value & !0xffff_ffff == FUNC_TAG).then_some((value & 0xffff_ffff) as usize)
}

/// The `off` of a `bpf_loop` call the kernel would inline (see [`bpf_loop`]), set by
/// [`crate::Program`] from what the verifier found.
pub(crate) const INLINED_LOOP: i16 = 1;

/// `bpf_loop(nr_loops, callback, ctx, flags)`: `call(index, ctx)` for each index until it
/// returns non-zero; returns the number of calls made. The count is a `u32`, as the kernel's
/// prototype has it; flags other than 0 give `-EINVAL`, more than [`MAX_LOOPS`] `-E2BIG`.
///
/// `inlined`: the call is one the kernel's verifier replaces by an inline loop
/// (`inline_bpf_loop`: flags a known 0 and one callback on every path), which compares the
/// whole 64-bit count with [`MAX_LOOPS`] and returns `-E2BIG` as a 32-bit move (zero-extended).
///
/// # Errors
/// The first error `call` returns (a fault in the callback).
pub(crate) fn bpf_loop<E>(
    nr_loops: u64,
    ctx: u64,
    flags: u64,
    inlined: bool,
    mut call: impl FnMut(u64, u64) -> Result<u64, E>,
) -> Result<u64, E> {
    if inlined {
        if nr_loops > MAX_LOOPS {
            return Ok(u64::from(errno_ret(libc::E2BIG) as u32));
        }
        for i in 0..nr_loops {
            if call(i, ctx)? != 0 {
                return Ok(i + 1);
            }
        }
        return Ok(nr_loops);
    }
    if flags != 0 {
        return Ok(errno_ret(libc::EINVAL));
    }
    let nr = u64::from(nr_loops as u32);
    if nr > MAX_LOOPS {
        return Ok(errno_ret(libc::E2BIG));
    }
    for i in 0..nr {
        if call(i, ctx)? != 0 {
            return Ok(i + 1);
        }
    }
    Ok(nr)
}

/// `bpf_for_each_map_elem(map, callback, ctx, flags)`: `call(key, value)` for each element
/// (arrays: every index; hash maps: every element present when the walk starts and still present
/// when its turn comes) until it returns non-zero; returns the number of calls made. `key` is
/// the address of a copy of the key at `key_at` in `mem` (the caller's key-area slot), `value`
/// the address of the element's value (slot `slot`'s for per-CPU maps). Flags other than 0 and
/// maps without the callback (not an array or hash map) give `-EINVAL`.
///
/// # Errors
/// The first error `call` returns; `bad_key` when the key cannot be written at `key_at`.
pub(crate) fn for_each_map_elem<E>(
    map: &Map,
    flags: u64,
    slot: usize,
    mem: &Memory<'_>,
    key_at: u64,
    bad_key: impl Fn() -> E,
    mut call: impl FnMut(u64, u64) -> Result<u64, E>,
) -> Result<u64, E> {
    use map_type as t;
    if flags != 0 {
        return Ok(errno_ret(libc::EINVAL));
    }
    let def = map.def();
    if def.key_size as usize > KEY_SLOT {
        // The verifier refuses these; the kernel cannot create them.
        return Err(bad_key());
    }
    let mut visit = |key: &[u8], n: &mut u64| -> Result<bool, E> {
        let Some(value) = map.lookup(key, slot) else { return Ok(true) };
        *n += 1;
        if !mem.write(key_at, key) {
            return Err(bad_key());
        }
        Ok(call(key_at, value.as_ptr() as u64)? == 0)
    };
    let mut n = 0;
    match def.map_type {
        t::ARRAY | t::PERCPU_ARRAY => {
            for i in 0..def.max_entries {
                if !visit(&i.to_ne_bytes(), &mut n)? {
                    break;
                }
            }
        }
        t::HASH | t::PERCPU_HASH | t::LRU_HASH | t::LRU_PERCPU_HASH => {
            // The map's own lock-free walk: no snapshot allocated, the callback may update and
            // delete (keys changed meanwhile may be visited or not, as in the kernel).
            let mut failed = None;
            map.for_each_hash_entry(slot, |key, value| {
                n += 1;
                if !mem.write(key_at, key) {
                    failed = Some(bad_key());
                    return false;
                }
                match call(key_at, value.as_ptr() as u64) {
                    Ok(r) => r == 0,
                    Err(e) => {
                        failed = Some(e);
                        false
                    }
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
        }
        _ => return Ok(errno_ret(libc::EINVAL)),
    }
    Ok(n)
}
