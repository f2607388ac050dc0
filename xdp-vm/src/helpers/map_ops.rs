//! Program-side helpers on the map types beyond lookup/update/delete, shared by the
//! interpreter and the JIT (which calls the interpreter's helper dispatch): queue and stack
//! (`bpf_map_push_elem`, `bpf_map_pop_elem`, `bpf_map_peek_elem`), ring buffer
//! (`bpf_ringbuf_output`, `_reserve`, `_submit`, `_discard`, `_query`) and perf event array
//! (`bpf_perf_event_output`), with the kernel's return values.
//!
//! Each takes the program's registers as they are and reads or writes program memory through
//! the run's [`Memory`], so an argument the verifier would have refused (only possible in a
//! program loaded unverified) is `None` — a fault — never a wild access.

use std::ptr::NonNull;
use std::sync::Arc;

use maps::{BPF_F_CTXLEN_MASK, BPF_F_INDEX_MASK, Map, OpError, map_type};

use crate::memory::Memory;

fn ret(r: Result<(), OpError>) -> u64 {
    r.map_or_else(OpError::to_ret, |()| 0)
}

/// `bpf_map_push_elem(map, value, flags)`: `value_size` bytes at `value`.
pub(crate) fn push(map: &Map, mem: &Memory<'_>, value: u64, flags: u64) -> Option<u64> {
    if !is_queue(map) {
        return None;
    }
    let vs = map.def().value_size as usize;
    mem.with_bytes(value, vs, |v| ret(map.push(v, flags)))
}

/// `bpf_map_pop_elem` (`delete`) / `bpf_map_peek_elem(map, value)`: the element is copied to
/// `value`; when there is none the kernel zeroes `value` and returns `-ENOENT`.
pub(crate) fn take(map: &Map, mem: &Memory<'_>, value: u64, delete: bool) -> Option<u64> {
    if !is_queue(map) {
        return None;
    }
    let vs = map.def().value_size as usize;
    // Checked before the element leaves the map, so a fault never loses one.
    if !mem.check(value, vs.max(1), true) {
        return None;
    }
    let mut small = [0u8; 64];
    let mut large = Vec::new();
    let buf = if vs <= small.len() {
        &mut small[..vs]
    } else {
        large.resize(vs, 0);
        &mut large[..]
    };
    let r = if delete { map.pop(buf) } else { map.peek(buf) };
    if r == Err(OpError::NotFound) {
        buf.fill(0);
    }
    if !mem.write(value, buf) {
        return None;
    }
    Some(ret(r))
}

fn is_queue(map: &Map) -> bool {
    matches!(map.def().map_type, map_type::QUEUE | map_type::STACK)
}

fn ringbuf(map: &Map) -> Option<&Map> {
    (map.def().map_type == map_type::RINGBUF).then_some(map)
}

/// `bpf_ringbuf_output(map, data, size, flags)`: 0, `-EAGAIN` when full, `-EINVAL` for flags.
pub(crate) fn ringbuf_output(map: &Map, mem: &Memory<'_>, data: u64, size: u64, flags: u64) -> Option<u64> {
    let map = ringbuf(map)?;
    let size = usize::try_from(size).ok()?;
    mem.with_bytes(data, size, |d| ret(map.ringbuf_output(d, flags)))
}

/// `bpf_ringbuf_reserve(map, size, flags)`: the record's address, or 0 (NULL) when the ring
/// is full, the record too large or `flags` non-zero.
pub(crate) fn ringbuf_reserve(map: &Map, size: u64, flags: u64) -> Option<u64> {
    Some(ringbuf(map)?.ringbuf_reserve(size, flags).map_or(0, |p| p.as_ptr() as u64))
}

/// `bpf_ringbuf_submit` / `bpf_ringbuf_discard(data, flags)`: finds the ring the record belongs
/// to among the program's maps. Returns 0 (the helpers return nothing); `None` when `data` is no
/// reserved record of them.
pub(crate) fn ringbuf_commit(maps: &[Arc<Map>], data: u64, flags: u64, discard: bool) -> Option<u64> {
    let sample = NonNull::new(data as usize as *mut u8)?;
    let done = maps.iter().filter_map(|m| ringbuf(m)).any(|m| {
        let r = if discard { m.ringbuf_discard(sample, flags) } else { m.ringbuf_submit(sample, flags) };
        r.is_ok()
    });
    done.then_some(0)
}

/// `bpf_ringbuf_query(map, flags)`.
pub(crate) fn ringbuf_query(map: &Map, flags: u64) -> Option<u64> {
    map.ringbuf_query(flags)
}

/// `bpf_perf_event_output(ctx, map, flags, data, size)`: one sample of `size` bytes at `data`
/// followed by the first `(flags & BPF_F_CTXLEN_MASK) >> 32` bytes of `ctx_data` (the packet,
/// for XDP; contexts without event data take no such bytes) into the map's slot
/// `flags & BPF_F_INDEX_MASK`, or `slot` for `BPF_F_CURRENT_CPU`. Returns 0, or as the kernel's
/// `bpf_xdp_event_output`: `-EINVAL` for unknown flags, `-EFAULT` for more context bytes than
/// there are, `-E2BIG` for an index out of range, `-ENOENT` for a slot with no buffer,
/// `-ENOSPC` when its buffer is full.
pub(crate) fn perf_event_output(
    map: &Map,
    mem: &Memory<'_>,
    ctx_data: Option<&[u8]>,
    slot: usize,
    flags: u64,
    data: u64,
    size: u64,
) -> Option<u64> {
    if map.def().map_type != map_type::PERF_EVENT_ARRAY {
        return None;
    }
    let size = usize::try_from(size).ok()?;
    let ctx_len = ((flags & BPF_F_CTXLEN_MASK) >> 32) as usize;
    let ctx_mask = if ctx_data.is_some() { BPF_F_CTXLEN_MASK } else { 0 };
    if flags & !(ctx_mask | BPF_F_INDEX_MASK) != 0 {
        return Some(OpError::Invalid.to_ret());
    }
    let ctx = ctx_data.unwrap_or(&[]);
    let Some(ctx) = ctx.get(..ctx_len) else {
        return Some(crate::helpers::errno_ret(libc::EFAULT));
    };
    mem.with_bytes(data, size, |d| ret(map.perf_output(flags, slot, d, ctx)))
}
