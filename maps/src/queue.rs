//! `BPF_MAP_TYPE_QUEUE` and `BPF_MAP_TYPE_STACK` (kernel `kernel/bpf/queue_stack_maps.c`).
//!
//! A ring of `max_entries + 1` preallocated values with `head` (next push) and `tail` (oldest)
//! indices under one spinlock, as in the kernel. Queues pop at the tail (FIFO), stacks at the head
//! (LIFO). A push on a full map fails with `E2BIG` unless the flags carry `BPF_EXIST`, which
//! advances the tail and so overwrites the oldest value — for stacks too, the bottom one.
//! `key_size` is always 0. From userspace `BPF_MAP_LOOKUP_ELEM` is a peek and `BPF_MAP_UPDATE_ELEM`
//! a push; delete and next-key are `EINVAL`; [`entries`](QueueStack::entries) lists the values in
//! pop order with empty keys (the kernel cannot dump these maps at all).
//!
//! Pop copies out under the lock, so the popped slot can be reused at once: nothing hands out
//! pointers into a queue.
//!
//! Peek takes no lock: writers (push, pop) make the ring's sequence word odd while they change
//! it, and a peek copies the value out between two reads of the same even sequence, retrying
//! otherwise (a seqlock); after a few retries against busy writers it takes the lock. A peek is
//! thus one of the states the locked peek could have seen, without the lock's atomic
//! read-modify-write.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::create_flags::{self as f, access_ok};
use crate::lock::{SeqCount, SpinLock};
use crate::values::Values;
use crate::{BPF_EXIST, BPF_NOEXIST, Entry, MapDef, MapError, OpError};

/// `KMALLOC_MAX_SIZE` on x86-64: the kernel's bound on `value_size`.
const KMALLOC_MAX_SIZE: u32 = 4 << 20;

/// A queue or a stack.
#[derive(Debug)]
pub(crate) struct QueueStack {
    stack: bool,
    value_size: usize,
    /// `max_entries + 1`.
    size: u32,
    lock: SpinLock,
    /// Written only under `lock`; atomics so unlocked readers (peeks) stay race-free.
    head: AtomicU32,
    tail: AtomicU32,
    /// Odd while a writer (holding `lock`) changes `head`, `tail` or a value.
    seq: SeqCount,
    values: Values,
}

impl QueueStack {
    /// Validates `def` as `queue_stack_map_alloc_check` does, then preallocates the ring.
    pub(crate) fn new(name: &str, def: &MapDef, stack: bool) -> Result<QueueStack, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        if def.max_entries == 0 {
            return Err(invalid("max_entries is zero"));
        }
        if def.key_size != 0 {
            return Err(invalid("queue and stack maps have key_size 0"));
        }
        if def.value_size == 0 {
            return Err(invalid("value_size is zero"));
        }
        if def.map_flags & !(f::NUMA_NODE | f::ACCESS_MASK) != 0 || !access_ok(def.map_flags) {
            return Err(invalid("unknown map flags for a queue or stack"));
        }
        if def.value_size > KMALLOC_MAX_SIZE {
            return Err(MapError::TooBig {
                name: name.to_owned(),
                reason: "value_size over KMALLOC_MAX_SIZE",
            });
        }
        let size = def
            .max_entries
            .checked_add(1)
            .ok_or_else(|| MapError::TooBig { name: name.to_owned(), reason: "max_entries + 1 overflows" })?;
        let values = Values::new(def.value_size as usize, size as usize, 1)
            .map_err(|bytes| MapError::OutOfMemory { name: name.to_owned(), bytes })?;
        Ok(QueueStack {
            stack,
            value_size: def.value_size as usize,
            size,
            lock: SpinLock::default(),
            head: AtomicU32::new(0),
            tail: AtomicU32::new(0),
            seq: SeqCount::default(),
            values,
        })
    }

    fn next(&self, i: u32) -> u32 {
        if i + 1 >= self.size { 0 } else { i + 1 }
    }

    fn prev(&self, i: u32) -> u32 {
        if i == 0 { self.size - 1 } else { i - 1 }
    }

    /// `bpf_map_push_elem`: flags `BPF_ANY` or `BPF_EXIST` (overwrite the oldest when full).
    pub(crate) fn push(&self, value: &[u8], flags: u64) -> Result<(), OpError> {
        if flags & BPF_NOEXIST != 0 || flags > BPF_EXIST || value.len() != self.value_size {
            return Err(OpError::Invalid);
        }
        let _guard = self.lock.lock();
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let full = self.next(head) == tail;
        if full && flags & BPF_EXIST == 0 {
            return Err(OpError::TooBig);
        }
        self.seq.begin();
        if full {
            self.tail.store(self.next(tail), Ordering::Relaxed);
        }
        self.values.write(head as usize, 0, value);
        self.head.store(self.next(head), Ordering::Relaxed);
        self.seq.end();
        Ok(())
    }

    /// Where the next value to take is, from `head` and `tail`; `None` when empty.
    fn front(&self, head: u32, tail: u32) -> Option<u32> {
        if head == tail {
            None
        } else if self.stack {
            Some(self.prev(head))
        } else {
            Some(tail)
        }
    }

    /// `bpf_map_peek_elem` without the lock (see the module docs); `None` when writers kept
    /// changing the ring meanwhile.
    fn peek_unlocked(&self, out: &mut [u8]) -> Option<Result<(), OpError>> {
        self.seq.read(|| {
            // Each index is below `size` whenever it is read (only `next`, `prev` and 0 are
            // stored); a pair torn by a write is dropped by the count.
            let head = self.head.load(Ordering::Relaxed);
            let tail = self.tail.load(Ordering::Relaxed);
            let at = self.front(head, tail).ok_or(OpError::NotFound)?;
            self.values.read(at as usize, 0, out);
            Ok(())
        })
    }

    /// `bpf_map_pop_elem` (`delete`) and `bpf_map_peek_elem`: copies the next value out.
    pub(crate) fn take(&self, out: &mut [u8], delete: bool) -> Result<(), OpError> {
        if out.len() != self.value_size {
            return Err(OpError::Invalid);
        }
        if !delete && let Some(r) = self.peek_unlocked(out) {
            return r;
        }
        let _guard = self.lock.lock();
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let at = self.front(head, tail).ok_or(OpError::NotFound)?;
        self.values.read(at as usize, 0, out);
        if delete {
            self.seq.begin();
            if self.stack {
                self.head.store(at, Ordering::Relaxed);
            } else {
                self.tail.store(self.next(tail), Ordering::Relaxed);
            }
            self.seq.end();
        }
        Ok(())
    }

    /// The values in pop order.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let _guard = self.lock.lock();
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        let mut order = Vec::new();
        let mut i = tail;
        while i != head {
            order.push(i);
            i = self.next(i);
        }
        if self.stack {
            order.reverse();
        }
        order
            .into_iter()
            .map(|i| {
                let mut v = vec![0; self.value_size];
                self.values.read(i as usize, 0, &mut v);
                Entry { key: Vec::new(), values: vec![v] }
            })
            .collect()
    }
}
