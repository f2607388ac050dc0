//! `BPF_MAP_TYPE_RINGBUF` (kernel `kernel/bpf/ringbuf.c`): a multi-producer, single-consumer ring
//! of variable-length records.
//!
//! Records are laid out as in the kernel: an 8-byte header (`u32 len` with [`BUSY`] and
//! [`DISCARD`] in its top bits, then `u32 pg_off`) followed by the data, the whole rounded up to 8
//! bytes. Producers reserve under a spinlock (as the kernel's `spin_lock_irqsave`), write the
//! header with `BUSY` and publish the new producer position; submit and discard clear `BUSY` (and
//! set `DISCARD`) with a release store, without the lock. The consumer reads records in order from
//! the consumer position and stops at the first busy one, so records become visible in reservation
//! order whatever order they are submitted in.
//!
//! A reservation fails (a null pointer to the program, `EAGAIN` from `output`) when it would
//! bring the producer more than `size - 1` bytes ahead of the consumer, or when the record
//! (header included) is larger than the ring.
//!
//! The kernel maps the data pages twice in a row so a record that wraps past the end is still
//! contiguous in memory. Here the data area is allocated at twice the ring's size instead: a
//! record always lies at `offset(pos) .. offset(pos) + len` and may run past `size` into the
//! second half; the ring bounds (`prod - cons < size`) guarantee that no two live records overlap
//! modulo `size`. (Consequence: the memory layout is not the kernel's mmap layout; the consumer
//! here is [`RingBuf::consume`].)
//!
//! `pg_off` holds the header's page offset in the data area, for tools that look at raw headers;
//! submit and discard find the record from the pointer itself.

use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::create_flags as f;
use crate::lock::SpinLock;
use crate::slab::Slab;
use crate::{MapDef, MapError, OpError};

/// Record header bit: reserved, not yet submitted or discarded.
pub const BPF_RINGBUF_BUSY_BIT: u32 = 1 << 31;
/// Record header bit: discarded; the consumer skips it.
pub const BPF_RINGBUF_DISCARD_BIT: u32 = 1 << 30;
/// Record header size.
pub const BPF_RINGBUF_HDR_SZ: u32 = 8;
/// Submit/output flag: no consumer notification.
pub const BPF_RB_NO_WAKEUP: u64 = 1;
/// Submit/output flag: notify the consumer whatever its position.
pub const BPF_RB_FORCE_WAKEUP: u64 = 2;

use BPF_RINGBUF_BUSY_BIT as BUSY;
use BPF_RINGBUF_DISCARD_BIT as DISCARD;

const PAGE_SIZE: u32 = 4096;
/// The kernel's `RINGBUF_MAX_RECORD_SZ`.
const MAX_RECORD: u64 = (u32::MAX / 4) as u64;

/// One ring.
#[derive(Debug)]
pub(crate) struct RingBuf {
    /// Data bytes (a power of two).
    size: u64,
    data: Slab,
    producer_lock: SpinLock,
    producer_pos: AtomicU64,
    consumer_pos: AtomicU64,
    /// Notifications the kernel would have sent (`irq_work` wakeups), for pollers.
    wakeups: AtomicU64,
    /// One consumer at a time; holds the copy buffer.
    consumer: Mutex<Vec<u8>>,
}

impl RingBuf {
    /// Validates `def` as `ringbuf_map_alloc` does, then allocates the data area.
    pub(crate) fn new(name: &str, def: &MapDef) -> Result<RingBuf, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        if def.map_flags & !f::NUMA_NODE != 0 {
            return Err(invalid("unknown map flags for a ring buffer"));
        }
        if def.key_size != 0 || def.value_size != 0 {
            return Err(invalid("ring buffers have key_size and value_size 0"));
        }
        if !def.max_entries.is_power_of_two() || !def.max_entries.is_multiple_of(PAGE_SIZE) {
            return Err(invalid("ring buffer size must be a power-of-two multiple of the page size"));
        }
        Self::with_size(name, u64::from(def.max_entries))
    }

    /// A ring of `size` bytes (a power of two, at least 8), no further checks.
    pub(crate) fn with_size(name: &str, size: u64) -> Result<RingBuf, MapError> {
        let words = usize::try_from(size * 2 / 8).unwrap_or(usize::MAX);
        let data = Slab::zeroed(words)
            .ok_or_else(|| MapError::OutOfMemory { name: name.to_owned(), bytes: words.saturating_mul(8) })?;
        Ok(RingBuf {
            size,
            data,
            producer_lock: SpinLock::default(),
            producer_pos: AtomicU64::new(0),
            consumer_pos: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            consumer: Mutex::new(Vec::new()),
        })
    }

    fn header(&self, pos: u64) -> &AtomicU64 {
        self.data.word(((pos & (self.size - 1)) / 8) as usize)
    }

    /// `bpf_ringbuf_reserve`: a pointer to `size` writable bytes, 8-byte aligned, or `None`.
    #[inline]
    pub(crate) fn reserve(&self, size: u64) -> Option<NonNull<u8>> {
        if size > MAX_RECORD {
            return None;
        }
        let len = (size + u64::from(BPF_RINGBUF_HDR_SZ)).next_multiple_of(8);
        if len > self.size {
            return None;
        }
        let _guard = self.producer_lock.lock();
        let cons = self.consumer_pos.load(Ordering::Acquire);
        let prod = self.producer_pos.load(Ordering::Relaxed);
        let new_prod = prod + len;
        if new_prod - cons > self.size - 1 {
            return None;
        }
        let off = prod & (self.size - 1);
        let pg_off = (off / u64::from(PAGE_SIZE)) as u32;
        self.header(prod).store(u64::from(pg_off) << 32 | u64::from(size as u32 | BUSY), Ordering::Relaxed);
        self.producer_pos.store(new_prod, Ordering::Release);
        Some(self.data.ptr((off / 8 + 1) as usize))
    }

    /// `bpf_ringbuf_submit` / `bpf_ringbuf_discard` of a record `reserve` returned.
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] when `sample` is not the data pointer of a busy record of this ring
    /// (the verifier rules this out for programs; the kernel does not check at run time).
    pub(crate) fn commit(&self, sample: NonNull<u8>, flags: u64, discard: bool) -> Result<(), OpError> {
        let addr = sample.as_ptr() as usize;
        let off = addr.checked_sub(self.data.base_addr() + 8).ok_or(OpError::Invalid)? as u64;
        if !off.is_multiple_of(8) || off >= self.size {
            return Err(OpError::Invalid);
        }
        let hdr = self.header(off);
        let word = hdr.load(Ordering::Relaxed);
        if word as u32 & BUSY == 0 {
            return Err(OpError::Invalid);
        }
        let len = (word as u32 ^ BUSY) | if discard { DISCARD } else { 0 };
        hdr.store(word & !u64::from(u32::MAX) | u64::from(len), Ordering::Release);
        let cons = self.consumer_pos.load(Ordering::Acquire);
        if flags & BPF_RB_FORCE_WAKEUP != 0
            || (flags & BPF_RB_NO_WAKEUP == 0 && cons & (self.size - 1) == off)
        {
            self.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// `bpf_ringbuf_output`: reserve, copy, submit.
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] for flags other than the wakeup ones; [`OpError::Again`] when the ring
    /// has no room.
    #[inline]
    pub(crate) fn output(&self, data: &[u8], flags: u64) -> Result<(), OpError> {
        if flags & !(BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP) != 0 {
            return Err(OpError::Invalid);
        }
        self.output_parts(data, &[], flags)
    }

    /// One record made of `a` then `b` (perf samples: the program's data, then packet bytes).
    pub(crate) fn output2(&self, a: &[u8], b: &[u8]) -> Result<(), OpError> {
        self.output_parts(a, b, 0)
    }

    fn output_parts(&self, a: &[u8], b: &[u8], flags: u64) -> Result<(), OpError> {
        let p = self.reserve((a.len() + b.len()) as u64).ok_or(OpError::Again)?;
        let byte = p.as_ptr() as usize - self.data.base_addr();
        self.data.write_bytes(byte, a);
        self.data.write_bytes(byte + a.len(), b);
        self.commit(p, flags, false)
    }

    /// Drains every submitted record in order, calling `f` with each one's data (discarded
    /// records are skipped); stops at the first record still busy. Returns the records handed to
    /// `f`.
    pub(crate) fn consume(&self, mut f: impl FnMut(&[u8])) -> usize {
        let mut buf = self.consumer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut cons = self.consumer_pos.load(Ordering::Relaxed);
        let mut count = 0;
        loop {
            let prod = self.producer_pos.load(Ordering::Acquire);
            if cons >= prod {
                break;
            }
            let word = self.header(cons).load(Ordering::Acquire) as u32;
            if word & BUSY != 0 {
                break;
            }
            let len = word & !(BUSY | DISCARD);
            if word & DISCARD == 0 {
                buf.resize(len as usize, 0);
                self.data.read(((cons & (self.size - 1)) / 8 + 1) as usize, &mut buf);
                f(&buf);
                count += 1;
            }
            cons += u64::from(len + BPF_RINGBUF_HDR_SZ).next_multiple_of(8);
            self.consumer_pos.store(cons, Ordering::Release);
        }
        count
    }

    /// Bytes reserved but not yet consumed (`BPF_RB_AVAIL_DATA`).
    pub(crate) fn avail(&self) -> u64 {
        self.producer_pos.load(Ordering::Acquire) - self.consumer_pos.load(Ordering::Acquire)
    }

    /// `bpf_ringbuf_query`: `BPF_RB_AVAIL_DATA` (0), `BPF_RB_RING_SIZE` (1), `BPF_RB_CONS_POS`
    /// (2), `BPF_RB_PROD_POS` (3); 0 for any other flag, as the kernel.
    pub(crate) fn query(&self, flags: u64) -> u64 {
        match flags {
            0 => self.avail(),
            1 => self.size,
            2 => self.consumer_pos.load(Ordering::Acquire),
            3 => self.producer_pos.load(Ordering::Acquire),
            _ => 0,
        }
    }

    pub(crate) fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }

    /// Whether `[addr, addr + len)` is inside the data area (record bytes a program may touch).
    pub(crate) fn contains(&self, addr: usize, len: usize) -> bool {
        let base = self.data.base_addr();
        len != 0 && addr >= base && addr.checked_add(len).is_some_and(|end| end <= base + self.data.len() * 8)
    }
}
