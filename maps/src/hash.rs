//! `BPF_MAP_TYPE_HASH`, `BPF_MAP_TYPE_PERCPU_HASH` and their LRU flavours `LRU_HASH` and
//! `LRU_PERCPU_HASH` (kernel `kernel/bpf/hashtab.c`, the default preallocated flavour).
//!
//! `BPF_F_NO_PREALLOC` is honoured for plain and per-CPU hash maps as far as anything outside
//! can tell: their elements are handed out as entries are inserted (see [`FreeLists`]), so
//! their memory is taken on insert, not at creation; limits and errnos are the kernel's (an
//! insert into a map holding `max_entries` keys fails with `E2BIG`, a replacement never does).
//! What the kernel adds, freeing a deleted element only after an RCU grace period that outlasts
//! every program run, is not needed for memory safety here (see Reclamation): freed elements are
//! reused as preallocated ones are (after the shorter grace period of lock-free updates, in
//! the maps that have them). LRU maps refuse the flag with `ENOTSUPP`, as the kernel does. LRU eviction is
//! described at [`Lru`]; `BPF_F_NO_COMMON_LRU` is accepted and the common LRU used anyway (the
//! kernel would split `max_entries` between per-CPU lists, which only makes it evict earlier).
//!
//! # Layout
//!
//! All memory is allocated at creation from `max_entries`:
//! - `heads`: `roundup_pow_of_two(max_entries)` bucket head words, each the chain head (element
//!   index or nulls marker) in its low 32 bits and the bucket's writer lock in bit 32; one cache
//!   line per bucket up to [`PADDED_BUCKETS_MAX`] buckets, packed beyond;
//! - `elems`: a slab of elements, each `1 + round_up(key_size, 8) / 8` words: a link word
//!   (`hash << 32 | next`) then the zero-padded key;
//! - `values`: a [`Values`] store indexed by element (slot-major for per-CPU maps), so value bytes
//!   never sit next to key or link bytes and `contains_value` is pure arithmetic;
//! - free lists holding `max_entries` elements, one per worker slot and one for userspace
//!   ([`FreeLists`]), and, for plain hash maps with values over 8 bytes, one spare element per
//!   slot plus one for userspace (the kernel's per-CPU `extra_elems`) and, when the heads are
//!   padded, a pool of spares for buckets (one per bucket while elements are small, fewer for
//!   large values: the pool never takes more memory than the padding does).
//!
//! # Updates of existing keys
//!
//! Per-CPU hash maps write the value into the existing element in place, as the kernel does
//! (`pcpu_copy_value`: a program's update writes its own slot only). Plain hash maps whose values
//! are at most 8 bytes do the same with one atomic store of the whole (zero-padded) word: the
//! kernel replaces the element so that no reader ever sees a torn value, and one aligned store
//! cannot tear. Both run without the bucket lock (`lockless` maps, see Concurrency). LRU maps
//! keep the kernel's locked update.
//!
//! Plain hash maps with larger values replace, under the bucket lock: the update fills a spare
//! element with the key and the new value, links it at the head of the bucket, unlinks the old
//! element and keeps that as the spare. The spare is the bucket's own, kept in its head's cache
//! line under its lock, so the whole replacement costs one atomic read-modify-write (the lock);
//! a bucket without one (the pool ran out, or heads are packed) uses the slot's spare, taken
//! with a swap. Either way a program holding the old pointer keeps seeing the old value (never a
//! torn mix) until the element is reused by the next replacement, as in the kernel, and a full
//! map can still replace its keys. (If the slot's spare is in use by a concurrent update on the
//! same slot the value is overwritten in place instead.) Deleted elements go back to the
//! deleting slot's free list with their values untouched (in `lockless` maps through its limbo,
//! see Reclamation); a later insert may reuse them.
//!
//! # Concurrency
//!
//! Inserts, deletes and (outside `lockless` maps) updates of existing keys take the bucket's
//! lock: a test-and-test-and-set bit in the bucket's head word, so locking, relinking and unlocking touch one cache line, and two buckets' locks
//! never share a line in maps small enough to be cache-resident (the heads are padded there).
//! The lock yields the thread after a while, since a userspace lock holder can be preempted.
//! While a writer holds the bucket, a change of the first element is kept aside and published
//! by the unlocking store, so replacing or deleting a chain's first element costs that one
//! store. Writers on different buckets share nothing else on the update path: spares are per
//! slot (each on its own line), free lists are per slot (lock-free Treiber stacks on their own
//! lines, with a generation tag against ABA), and preallocated maps keep no element count (the
//! free lists running dry is what makes a full map refuse an insert, as in the kernel).
//!
//! What needs no lock does not take it. In `lockless` maps an update first walks the chain as a
//! lookup does ([`HashTable::update_unlocked`]): if the key is there, the value is written into
//! its element and the update is done, with no atomic read-modify-write at all; `BPF_NOEXIST`
//! then fails with `EEXIST`, and a miss with `BPF_EXIST` fails with `ENOENT` (a lock-free miss is
//! as certain as a lookup's, below). Only a miss that must insert locks the bucket, and looks
//! again under the lock. A write racing with a delete of the same key lands either in the live
//! element or in the unlinked one; both orders are ones the kernel's lock would allow (update
//! then delete). A write can never land in an element reused for another key: see Reclamation.
//! A program's lock-free update of its per-CPU slot may interleave word by word with a
//! userspace update of every slot (the kernel serializes those two on the bucket lock, but not a
//! program's own writes through its lookup pointer, which mix the same way). Deletes, in every
//! hash map, answer a key that the lock-free walk does not find with `ENOENT` without locking.
//!
//! Lookups take no lock. They walk the chain with acquire loads, as the kernel's RCU readers walk
//! its `hlist_nulls` lists: every chain ends in a "nulls" marker naming its bucket, elements are
//! only ever inserted at a head (linked to the rest of the chain, or, when replacing the first
//! element, to its successor), and an unlinked element keeps its `next` link until it is reused.
//! An element reused while a reader stands on it is then either re-inserted at the head of some
//! chain (the reader ends on that chain's marker: if it is another bucket's, the reader restarts;
//! if it is its own bucket's, the reader has walked the whole chain from its head, but for the
//! element being replaced, whose key the reused one now holds) or still free (its stale link
//! leads on). A walk that takes more steps than there are elements also restarts, and a lookup
//! that keeps restarting falls back to the bucket lock, so it always terminates. Like the
//! kernel's, a lock-free lookup racing with a delete and reuse of the very element it matched
//! may return that reused element: preallocated maps reuse elements immediately.
//!
//! # Reclamation
//!
//! Element and value memory is never freed before the map: a value pointer a program got from a
//! lookup points into the value slab for the map's whole life, so it can never see freed
//! memory, whatever is deleted meanwhile; what it may see is the element's next life, exactly
//! as with the kernel's preallocated maps, whose freed elements go straight back on the free
//! list. No RCU or epoch scheme is needed for memory safety.
//!
//! One is needed for the lock-free updates of `lockless` maps: an update that found an element
//! must not write into it after it was deleted and reused for another key (the kernel's lock
//! rules that out). So there, the walk and the write form one read section of [`grace`], and a
//! deleted element is not handed out again until every section that might have found it has
//! ended. A delete pushes the element onto its slot's limbo ([`FreeLists::retire`], the same
//! one compare-exchange a free-list push costs); an insert that finds every free list empty
//! moves all limbo elements to the free lists after [`grace::synchronize`]
//! ([`FreeLists::reclaim`]), outside any bucket lock, and tries again. Why that suffices: a
//! section that starts (its odd sequence store) after the synchronize's barrier reads the chain
//! after the unlinks of every element in limbo, and a walk reaches only elements linked at some
//! moment after it started (by induction over its steps: an element's link changes only while
//! it is linked, and an unlinked element's frozen link names what followed it when it was
//! unlinked), so it reaches none of them; a section running before the barrier is seen and
//! waited for. A full map is still full only when nothing waits in limbo either (`E2BIG` as in
//! the kernel), and the cost of a grace period (a `membarrier`) is shared by every element it
//! frees.
//!
//! # Hashing
//!
//! Keys are read as zero-padded native-endian words (one word for keys up to 8 bytes, two up to
//! 16). A one-word key is hashed by multiply-shift — one multiply by the map's random odd
//! multiplier, the top bits pick the bucket ([`crate::HashWalk::hash`]); longer keys take a
//! keyed folded multiply per pair of words (the 128-bit product of `a ^ k1` and `b ^ k2`, its
//! halves xored, chained through `k1`), then the murmur3 finaliser, with `k1` and `k2` drawn
//! from the same secret. A chain of per-word multiply-xorshifts (what this used before) let a
//! sender collide keys without knowing the seed: flipping bit 63 of the first word changes the
//! state by a constant that the second word can cancel. Under the folded multiply a difference
//! in either word reaches both halves of the product through the unknown keys.
//! `BPF_F_ZERO_SEED` fixes the multiplier (the golden ratio's), as the kernel fixes its seed.
//! Comparison is word by word, after the 32-bit hash.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::create_flags::{self as f, access_ok};
use crate::grace;
use crate::lock::SpinLock;
use crate::slab::{LINE_WORDS, Mem, Slab, pad_word};
use crate::values::Values;
use crate::{
    BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Entry, MapDef, MapError, OpError, PCPU_MIN_UNIT_SIZE, map_type,
};

/// Set in a link that ends a chain; the low bits name the bucket.
const NULLS: u32 = 1 << 31;
/// No element (free list end, taken spare).
const NIL: u32 = u32::MAX;
/// The kernel's `KMALLOC_MAX_SIZE` (x86-64) and `sizeof(struct htab_elem)`, which bound
/// `key_size + value_size`.
const KMALLOC_MAX_SIZE: u64 = 4 << 20;
const HTAB_ELEM_SIZE: u64 = 48;
/// Most spare elements a plain map keeps for program-side updates; slots beyond share them.
const MAX_SPARES: usize = 1024;
/// Lock-free walks tried before a lookup takes the bucket lock.
const LOCKLESS_TRIES: usize = 4;

/// A key being looked for, read once: keys of up to 16 bytes (nearly all) as padded words,
/// longer ones as bytes, padded a word at a time while hashing and comparing.
#[derive(Debug, Clone, Copy)]
enum Probe<'a> {
    One(u64),
    Two(u64, u64),
    Long(&'a [u8]),
}

impl<'a> Probe<'a> {
    #[inline(always)]
    fn new(key: &'a [u8]) -> Probe<'a> {
        match key.len() {
            0..=8 => Probe::One(pad_word(key)),
            9..=16 => Probe::Two(pad_word(&key[..8]), pad_word(&key[8..])),
            _ => Probe::Long(key),
        }
    }
}

/// Bit 32 of a chain head word: the bucket's writer lock. The low 32 bits stay the chain head
/// (an element index or a nulls marker), so lock-free readers, the JIT's inline walk and a
/// shared-memory reader, which all read only the low half, never notice the lock.
const LOCKED: u64 = 1 << 32;
/// Maps with at most this many buckets give each bucket's head word a cache line of its own
/// (1 MiB of heads at most): writers on different buckets then never share a line. Beyond it the
/// heads are packed 8 to a line: the map is then larger than a core's cache, so a bucket line is
/// mostly a miss whoever wrote it last, and padding would only cost memory.
const PADDED_BUCKETS_MAX: u32 = 1 << 14;

/// A bucket whose lock the holder owns; unlocks on drop, publishing `head` as the chain head.
///
/// Changes to the head made under the lock are kept in `head` and published by the unlocking
/// store, so replacing or deleting the first element of a chain costs one store to the bucket's
/// line besides the lock itself.
struct Locked<'a> {
    word: &'a AtomicU64,
    b: usize,
    head: u32,
}

impl Locked<'_> {
    /// Publishes `head` now, keeping the lock (for a change that must be visible before the next
    /// one, like a new head before an unlink further down).
    fn publish_head(&self) {
        self.word.store(LOCKED | u64::from(self.head), Ordering::Release);
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        self.word.store(u64::from(self.head), Ordering::Release);
    }
}

/// A per-slot free list: a Treiber stack whose head word (`tag << 32 | first element`) has a
/// cache line to itself; the tag, bumped on every change, defeats ABA.
///
/// The same line holds the slot's share of the bucket-spare pool (see
/// [`HashTable::bucket_spare`]): elements `pool.0..pool_end` not yet given to a bucket. A slot's
/// share is a contiguous run, so the spares its buckets get sit on lines of their own too.
///
/// And, in maps whose updates of existing keys run lock-free, the slot's limbo: elements it
/// deleted that wait for a grace period before they may be reused (see [`FreeLists::retire`]).
#[derive(Debug)]
#[repr(align(64))]
struct FreeList {
    head: AtomicU64,
    pool: AtomicU32,
    pool_end: u32,
    /// First element of the limbo chain (linked through `FreeLists::next`), a push-only stack
    /// that a reclaim takes whole.
    limbo: AtomicU32,
    /// The limbo chain a reclaim took, while it waits for the grace period (reclaim lock held).
    taken: AtomicU32,
}

impl FreeList {
    fn new(pool: std::ops::Range<u32>) -> FreeList {
        FreeList {
            head: AtomicU64::new(u64::from(NIL)),
            pool: AtomicU32::new(pool.start),
            pool_end: pool.end,
            limbo: AtomicU32::new(NIL),
            taken: AtomicU32::new(NIL),
        }
    }
}

/// The free elements: one list per worker slot and one for userspace, like the kernel's
/// `pcpu_freelist`. A slot pushes what it frees onto its own list and pops from it first, taking
/// from the others only when its own is empty, so workers inserting and deleting at once touch
/// disjoint cache lines; the initial elements are dealt out in contiguous runs, so a worker's
/// elements (and their values) sit on lines of their own too.
///
/// A `BPF_F_NO_PREALLOC` map starts with empty lists and hands out never-used elements from
/// `fresh`, a run of [`FRESH_RUN`] at a time per slot, so its element and value memory (zeroed
/// pages the OS maps on first touch) is taken as entries are inserted, as the kernel allocates
/// on insert, and the shared `fresh` counter is touched once per run, not per insert.
#[derive(Debug)]
struct FreeLists {
    lists: Box<[FreeList]>,
    /// Each free element's successor.
    next: Box<[AtomicU32]>,
    /// Elements `fresh..limit` have never been handed out (none, for a preallocated map).
    fresh: AtomicU32,
    limit: u32,
    /// Whether deleted elements go through limbo (maps with lock-free updates).
    deferred: bool,
    /// Held by the one reclaim that runs at a time.
    reclaiming: SpinLock,
}

/// Never-used elements a slot of a `BPF_F_NO_PREALLOC` map takes at once.
const FRESH_RUN: u32 = 32;

impl FreeLists {
    /// Lists for `slots` worker slots (at most [`MAX_SPARES`], more share) plus userspace,
    /// holding elements `0..n` of `capacity`, and sharing the bucket-spare pool `pool`.
    ///
    /// `lazy` (`BPF_F_NO_PREALLOC`): the lists start empty and elements are taken from `fresh`.
    fn new(
        slots: usize,
        n: usize,
        capacity: usize,
        lazy: bool,
        deferred: bool,
        pool: std::ops::Range<u32>,
    ) -> Option<FreeLists> {
        let count = slots.clamp(1, MAX_SPARES) + 1;
        let next = try_collect(capacity, |_| AtomicU32::new(NIL))?;
        let share = pool.len().div_ceil(count) as u32;
        let lists: Box<[FreeList]> = try_collect(count, |l| {
            let start = pool.start.saturating_add(l as u32 * share).min(pool.end);
            FreeList::new(start..start.saturating_add(share).min(pool.end))
        })?;
        let limit = u32::try_from(n).ok()?;
        let reclaiming = SpinLock::default();
        if lazy {
            return Some(FreeLists { lists, next, fresh: AtomicU32::new(0), limit, deferred, reclaiming });
        }
        let per = n.div_ceil(count).max(1);
        for (l, list) in lists.iter().enumerate() {
            let run = (l * per).min(n)..((l + 1) * per).min(n);
            if run.is_empty() {
                continue;
            }
            for e in run.clone() {
                let succ = if e + 1 < run.end { e as u32 + 1 } else { NIL };
                next[e].store(succ, Ordering::Relaxed);
            }
            list.head.store(run.start as u64, Ordering::Relaxed);
        }
        Some(FreeLists { lists, next, fresh: AtomicU32::new(limit), limit, deferred, reclaiming })
    }

    /// The list of program slot `slot`, or userspace's for `None`.
    #[inline]
    fn home(&self, slot: Option<usize>) -> usize {
        share(slot, self.lists.len() - 1)
    }

    /// An element from list `home`, or from another list when that one is empty; `None` when every
    /// list is (like the kernel's, a pop racing with pushes to lists it already passed may fail).
    #[inline]
    fn pop(&self, home: usize) -> Option<u32> {
        let n = self.lists.len();
        self.pop_from(home).or_else(|| self.take_fresh(home)).or_else(|| {
            (1..n).find_map(|i| self.pop_from(if home + i < n { home + i } else { home + i - n }))
        })
    }

    /// A never-used element, the rest of its run going onto list `home`; `None` once all are used.
    #[cold]
    fn take_fresh(&self, home: usize) -> Option<u32> {
        if self.fresh.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        let start = self.fresh.fetch_add(FRESH_RUN, Ordering::Relaxed);
        if start >= self.limit {
            return None;
        }
        let end = start.saturating_add(FRESH_RUN).min(self.limit);
        for e in start + 1..end {
            self.push(home, e);
        }
        Some(start)
    }

    #[inline]
    fn pop_from(&self, l: usize) -> Option<u32> {
        let list = &self.lists[l].head;
        let mut head = list.load(Ordering::Acquire);
        loop {
            let e = head as u32;
            if e == NIL {
                return None;
            }
            let next = self.next[e as usize].load(Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match list.compare_exchange_weak(
                head,
                tag << 32 | u64::from(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(e),
                Err(now) => head = now,
            }
        }
    }

    #[inline]
    fn push(&self, home: usize, e: u32) {
        self.push_chain(home, e, e);
    }

    /// Pushes the chain `first ..= last` (linked through `next`) onto list `l` with one
    /// compare-exchange, bumping the list's ABA tag.
    #[inline]
    fn push_chain(&self, l: usize, first: u32, last: u32) {
        let list = &self.lists[l].head;
        let mut head = list.load(Ordering::Relaxed);
        loop {
            self.next[last as usize].store(head as u32, Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match list.compare_exchange_weak(
                head,
                tag << 32 | u64::from(first),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Gives deleted element `e` back: straight to list `home`, or, in a map whose updates run
    /// lock-free, to `home`'s limbo, from which only a reclaim (after a grace period) takes it.
    #[inline]
    fn retire(&self, home: usize, e: u32) {
        if !self.deferred {
            return self.push(home, e);
        }
        // A push-only stack: a push whose compare-exchange succeeds links `e` to the current
        // first element whatever happened in between, so it needs no ABA tag.
        let limbo = &self.lists[home].limbo;
        let mut head = limbo.load(Ordering::Relaxed);
        loop {
            self.next[e as usize].store(head, Ordering::Relaxed);
            match limbo.compare_exchange_weak(head, e, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    /// Moves every limbo element to the free lists once no lock-free update can still hold one
    /// ([`grace::synchronize`]); `false` when there was nothing to move and no free element
    /// either (the map is full).
    ///
    /// Called when a pop found every free list empty, so its cost (a `membarrier`, a walk over
    /// the chains) is shared by all the elements it frees. Never call it holding a bucket lock:
    /// it waits for read sections, and a read section's walk may be waiting for that lock. One
    /// reclaim runs at a time; a caller that waited for another finds that one's elements.
    #[cold]
    #[inline(never)]
    fn reclaim(&self) -> bool {
        let _one = self.reclaiming.lock();
        if self.lists.iter().any(|l| l.head.load(Ordering::Relaxed) as u32 != NIL) {
            return true;
        }
        let mut any = false;
        for list in &self.lists {
            // Acquire: the chain's links, written before each push's release.
            let chain = list.limbo.swap(NIL, Ordering::Acquire);
            list.taken.store(chain, Ordering::Relaxed);
            any |= chain != NIL;
        }
        if !any {
            return false;
        }
        // Every element taken was unlinked before it was retired, so before this call: after
        // it, no read section that could have found one is still running.
        grace::synchronize();
        for (l, list) in self.lists.iter().enumerate() {
            let first = list.taken.swap(NIL, Ordering::Relaxed);
            if first != NIL {
                self.splice(l, first);
            }
        }
        true
    }

    /// Pushes the chain starting at `first` (linked through `next`, ending in `NIL`) onto list
    /// `l` with one compare-exchange.
    fn splice(&self, l: usize, first: u32) {
        let mut last = first;
        loop {
            let next = self.next[last as usize].load(Ordering::Relaxed);
            if next == NIL {
                break;
            }
            last = next;
        }
        self.push_chain(l, first, last);
    }

    /// Free elements on every list (a racy sum, for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lists
            .iter()
            .map(|l| {
                let mut n = 0;
                let mut e = l.head.load(Ordering::Acquire) as u32;
                while e != NIL {
                    n += 1;
                    e = self.next[e as usize].load(Ordering::Relaxed);
                }
                n
            })
            .sum()
    }
}

/// A hash map, plain or per-CPU.
#[derive(Debug)]
pub(crate) struct HashTable {
    key_size: usize,
    value_size: usize,
    per_cpu: bool,
    /// Value slots: `slots` for per-CPU maps, 1 otherwise.
    slots: usize,
    /// Words per element in `elems`: the link word and the key.
    ewords: usize,
    mask: u32,
    /// The hash multiplier (odd, [`crate::HashWalk::multiplier`]); longer keys' seed.
    seed: u64,
    /// Elements in the slabs (`max_entries` plus the spares).
    capacity: usize,
    /// Bucket `b`'s head word is word `b << head_shift` of `heads`.
    n_buckets: usize,
    head_shift: u32,
    heads: Slab,
    elems: Slab,
    values: Values,
    free: FreeLists,
    /// Spare elements for replacing updates (plain maps only): one per slot, the last for userspace.
    spares: Box<[Spare]>,
    /// Whether buckets keep spares (word 1 of each padded bucket line; their pool is shared out
    /// among the free lists).
    bucket_spares: bool,
    /// The eviction state of `LRU_HASH` / `LRU_PERCPU_HASH` maps.
    lru: Option<Lru>,
    /// Whether an update of an existing key writes the value into its element without the
    /// bucket lock (per-CPU maps, and plain maps whose values are one word at most; not LRU
    /// maps), so that deleted elements wait for a grace period before reuse.
    lockless: bool,
}

/// One worker slot's spare element, alone on its cache line: every replacing update swaps it, and
/// adjacent slots' spares sharing a line would make two workers' updates contend (house style 6).
#[derive(Debug)]
#[repr(align(64))]
struct Spare(AtomicU32);

/// Element state bits for LRU maps: in a bucket's chain, and referenced since the clock hand last
/// passed.
const IN_TABLE: u8 = 1;
const REFERENCED: u8 = 2;

/// The common LRU of an LRU hash map: a second-chance clock over the element slab.
///
/// The kernel's `bpf_lru_list` keeps active and inactive lists and a `ref` bit that lookups set;
/// its shrinker rotates referenced nodes back to the active list and evicts unreferenced inactive
/// ones. A clock is the same policy without the lists: lookups set `REFERENCED` (a load first, so a
/// hot element's cache line is not written on every lookup, as `bpf_lru_node_set_ref` does), and the
/// hand, when the map is full, clears the bit of referenced elements and evicts the first
/// unreferenced one. After two full turns it evicts whatever it stands on, so an update never
/// fails while some element can be evicted. All state is atomics; eviction takes only the victim's
/// bucket lock, never while holding another.
#[derive(Debug)]
struct Lru {
    state: Box<[AtomicU8]>,
    hand: AtomicU32,
}

impl HashTable {
    /// Validates `def` as the kernel's `htab_map_alloc_check` and `htab_map_alloc` do, then
    /// preallocates everything.
    pub(crate) fn new(
        name: &str,
        def: &MapDef,
        per_cpu: bool,
        slots: usize,
        mem: &Mem,
    ) -> Result<HashTable, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        let too_big = |reason| MapError::TooBig { name: name.to_owned(), reason };
        let oom = |bytes| MapError::OutOfMemory { name: name.to_owned(), bytes };
        let lru = matches!(def.map_type, map_type::LRU_HASH | map_type::LRU_PERCPU_HASH);
        let allowed = f::NO_PREALLOC | f::NO_COMMON_LRU | f::NUMA_NODE | f::ACCESS_MASK | f::ZERO_SEED;
        if def.map_flags & !allowed != 0 {
            return Err(invalid("unknown map flags for a hash map"));
        }
        if !access_ok(def.map_flags) {
            return Err(invalid("map both read-only and write-only"));
        }
        if !lru && def.map_flags & f::NO_COMMON_LRU != 0 {
            return Err(invalid("no-common-LRU is for LRU maps only"));
        }
        if per_cpu && def.map_flags & f::NUMA_NODE != 0 {
            return Err(invalid("per-CPU maps take no NUMA node"));
        }
        if def.max_entries == 0 {
            return Err(invalid("max_entries is zero"));
        }
        if def.key_size == 0 {
            return Err(invalid("key_size is zero"));
        }
        if def.value_size == 0 {
            return Err(invalid("value_size is zero"));
        }
        if u64::from(def.key_size) + u64::from(def.value_size) >= KMALLOC_MAX_SIZE - HTAB_ELEM_SIZE {
            return Err(too_big("key_size + value_size over the kernel's element limit"));
        }
        let (key_size, value_size) = (def.key_size as usize, def.value_size as usize);
        if per_cpu && value_size.next_multiple_of(8) > PCPU_MIN_UNIT_SIZE {
            return Err(too_big("per-CPU value_size over 32 KiB"));
        }
        if def.max_entries > 1 << 31 {
            return Err(too_big("max_entries over 2^31"));
        }
        if lru && def.map_flags & f::NO_PREALLOC != 0 {
            // htab_map_alloc_check: "LRU implementation is much complicated without preallocation".
            return Err(MapError::NotSupported {
                name: name.to_owned(),
                reason: "LRU maps are always preallocated",
            });
        }
        let n_buckets = def.max_entries.next_power_of_two();
        // Updates of existing keys write in place, without the lock, where that is what the
        // kernel does (per-CPU maps: `pcpu_copy_value` into the existing element) or cannot be
        // told apart from its replacement (a value of one word is written by one atomic store,
        // so no reader sees a torn value). `grace` decides once how its grace periods fence.
        let lockless = !lru && (per_cpu || value_size <= 8);
        if lockless {
            grace::asymmetric();
        }
        // Plain maps that replace keep one value slot but still get a spare per worker slot
        // (and one for userspace), like the kernel's per-CPU extra elements.
        // LRU maps have none either: the kernel's `htab_has_extra_elems` is false for them, and
        // a replacing update takes a fresh element from the LRU (evicting if need be).
        let worker_slots = slots;
        let spares = if lockless || lru { 0 } else { slots.clamp(1, MAX_SPARES) + 1 };
        let slots = if per_cpu { slots } else { 1 };
        let head_shift = if n_buckets <= PADDED_BUCKETS_MAX { LINE_WORDS.trailing_zeros() } else { 0 };
        let ewords = 1 + key_size.div_ceil(8);
        // Bucket spares for plain maps with padded heads, as many as fit in the memory the
        // padding takes (one per bucket for small elements).
        let pool = if spares > 0 && head_shift > 0 {
            let elem_bytes = ewords * 8 + value_size.next_multiple_of(8);
            (n_buckets as usize).min(n_buckets as usize * 64 / elem_bytes)
        } else {
            0
        };
        let capacity = def.max_entries as usize + spares + pool;
        if capacity >= NULLS as usize {
            return Err(too_big("too many elements to index"));
        }
        let elems = capacity
            .checked_mul(ewords)
            .and_then(|words| Slab::zeroed_in(words, mem))
            .ok_or_else(|| oom(capacity.saturating_mul(ewords * 8)))?;
        let values = Values::new_in(value_size, capacity, slots, mem).map_err(oom)?;
        let head_words = (n_buckets as usize) << head_shift;
        let heads = Slab::zeroed_in(head_words, mem).ok_or_else(|| oom(head_words * 8))?;
        for b in 0..n_buckets as usize {
            heads.word(b << head_shift).store(u64::from(NULLS | b as u32), Ordering::Relaxed);
            if pool > 0 {
                heads.word((b << head_shift) + 1).store(u64::from(NIL), Ordering::Relaxed);
            }
        }
        let max = def.max_entries as usize;
        let lazy = def.map_flags & f::NO_PREALLOC != 0;
        let pool = (max + spares) as u32..capacity as u32;
        let free = FreeLists::new(worker_slots, max, capacity, lazy, lockless, pool.clone())
            .ok_or_else(|| oom(capacity * 4))?;
        let spares = (max..max + spares).map(|e| Spare(AtomicU32::new(e as u32))).collect();
        let seed = if def.map_flags & f::ZERO_SEED != 0 {
            crate::HashWalk::MIX
        } else {
            crate::HashWalk::multiplier(RandomState::new().hash_one(name))
        };
        let lru = if lru {
            let state = try_collect(capacity, |_| AtomicU8::new(0)).ok_or_else(|| oom(capacity))?;
            Some(Lru { state, hand: AtomicU32::new(0) })
        } else {
            None
        };
        Ok(HashTable {
            key_size,
            value_size,
            per_cpu,
            slots,
            ewords,
            mask: n_buckets - 1,
            seed,
            capacity,
            n_buckets: n_buckets as usize,
            head_shift,
            heads,
            elems,
            values,
            free,
            spares,
            bucket_spares: !pool.is_empty(),
            lru,
            lockless,
        })
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    #[inline(always)]
    fn hash(&self, key: Probe<'_>) -> u32 {
        /// The 128-bit product's halves xored (the folded multiply of foldhash and aHash).
        #[inline(always)]
        fn fold(x: u64, y: u64) -> u64 {
            let p = u128::from(x) * u128::from(y);
            (p as u64) ^ ((p >> 64) as u64)
        }
        // Two secret keys from the map's secret: the seed itself and a splitmix64 step of it.
        let k1 = self.seed;
        let k2 = {
            let z = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut h = match key {
            // Multiply-shift (what compiled code inlines, `HashWalk::hash`).
            Probe::One(a) => return crate::HashWalk::hash(self.seed, a),
            Probe::Two(a, b) => fold(a ^ k1, b ^ k2),
            Probe::Long(bytes) => {
                // Pairs of words; an odd last word is paired with zero. Each pair's product is
                // chained into the next pair's first key, so the order of pairs counts.
                let mut h = k1 ^ (self.key_size as u64);
                for pair in bytes.chunks(16) {
                    let (a, b) = pair.split_at(pair.len().min(8));
                    let b = if b.is_empty() { 0 } else { pad_word(b) };
                    h = fold(pad_word(a) ^ h, b ^ k2);
                }
                h
            }
        };
        // murmur3 fmix64
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^= h >> 33;
        h as u32
    }

    #[inline]
    fn bucket_of(&self, hash: u32) -> usize {
        crate::HashWalk::bucket(self.mask, hash)
    }

    /// Bucket `b`'s head word: the chain head (an element index or a nulls marker) in the low
    /// 32 bits, [`LOCKED`] while a writer holds the bucket.
    #[inline]
    fn head(&self, b: usize) -> &AtomicU64 {
        self.heads.word(b << self.head_shift)
    }

    /// The spare element of a locked bucket, for a replacing update, if it has one or can get
    /// one from the pool. Word 1 of a padded bucket's line holds it: the lock (word 0) protects
    /// it, and the line is already this writer's, so taking it costs no atomic read-modify-write
    /// (the slot's spare takes a swap). Buckets get their first spare on their first replacing
    /// update, as long as the pool lasts; after that the replaced element becomes the spare.
    ///
    /// The pool is shared out among the slots' free lists; a bucket's first spare comes from the
    /// updating slot's share (`home`), so a worker's buckets get spares next to each other.
    #[inline(always)]
    fn bucket_spare(&self, bucket: &Locked<'_>, home: usize) -> Option<u32> {
        if !self.bucket_spares {
            return None;
        }
        let word = self.heads.word((bucket.b << self.head_shift) + 1);
        let spare = word.load(Ordering::Relaxed) as u32;
        if spare != NIL {
            return Some(spare);
        }
        let list = &self.free.lists[home];
        if list.pool.load(Ordering::Relaxed) >= list.pool_end {
            return None;
        }
        let e = list.pool.fetch_add(1, Ordering::Relaxed);
        (e < list.pool_end).then_some(e)
    }

    /// Locks bucket `b` (test-and-test-and-set on its head word; the thread yields after a while,
    /// since a userspace lock holder can be preempted).
    #[inline(always)]
    fn lock(&self, b: usize) -> Locked<'_> {
        let word = self.head(b);
        let mut spins = 0u32;
        loop {
            let cur = word.load(Ordering::Relaxed);
            if cur & LOCKED == 0 {
                if word.compare_exchange_weak(cur, cur | LOCKED, Ordering::Acquire, Ordering::Relaxed).is_ok()
                {
                    return Locked { word, b, head: cur as u32 };
                }
            } else if spins < 256 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Where a shared-memory reader finds this table (all offsets in words of the region), or
    /// `None` when it is on the heap.
    pub(crate) fn shared_layout(&self) -> Option<crate::store::HashLayout> {
        let (values, region_words, vwords) = self.values.shared_layout()?;
        Some(crate::store::HashLayout {
            heads: self.heads.shared_offset()?,
            n_buckets: self.n_buckets,
            head_words: 1 << self.head_shift,
            elems: self.elems.shared_offset()?,
            ewords: self.ewords,
            capacity: self.capacity,
            values,
            region_words,
            vwords,
        })
    }

    /// Element `e`'s link word: `hash << 32 | next`.
    #[inline(always)]
    fn link(&self, e: u32) -> &AtomicU64 {
        self.elems.word(e as usize * self.ewords)
    }

    #[inline(always)]
    fn key_eq(&self, e: u32, key: Probe<'_>) -> bool {
        let at = e as usize * self.ewords + 1;
        let word = |i: usize| self.elems.word(at + i).load(Ordering::Relaxed);
        match key {
            Probe::One(a) => word(0) == a,
            Probe::Two(a, b) => word(0) == a && word(1) == b,
            Probe::Long(bytes) => bytes.chunks(8).enumerate().all(|(i, chunk)| word(i) == pad_word(chunk)),
        }
    }

    fn read_key(&self, e: u32) -> Vec<u8> {
        let mut key = vec![0; self.key_size];
        self.elems.read(e as usize * self.ewords + 1, &mut key);
        key
    }

    /// Finds `key` without locking (see the module docs for why that is sound).
    ///
    /// Always inlined: called, it takes the probe through memory, and the copy the caller makes
    /// of a probe it has just built stalls store forwarding (a third of an update's time).
    #[inline(always)]
    fn find(&self, key: Probe<'_>, hash: u32) -> Option<u32> {
        let b = self.bucket_of(hash);
        let end = NULLS | b as u32;
        for _ in 0..LOCKLESS_TRIES {
            let mut cur = self.head(b).load(Ordering::Acquire) as u32;
            let mut steps = 0;
            while cur & NULLS == 0 && steps <= self.capacity {
                let link = self.link(cur).load(Ordering::Acquire);
                if (link >> 32) as u32 == hash && self.key_eq(cur, key) {
                    return Some(cur);
                }
                cur = link as u32;
                steps += 1;
            }
            if cur == end {
                return None;
            }
        }
        let bucket = self.lock(b);
        self.find_locked(&bucket, key, hash).map(|(_, e)| e)
    }

    /// Finds `key` in a bucket the caller holds: `(predecessor, element)`.
    #[inline(always)]
    fn find_locked(&self, bucket: &Locked<'_>, key: Probe<'_>, hash: u32) -> Option<(Option<u32>, u32)> {
        let mut prev = None;
        let mut cur = bucket.head;
        while cur & NULLS == 0 {
            let link = self.link(cur).load(Ordering::Relaxed);
            if (link >> 32) as u32 == hash && self.key_eq(cur, key) {
                return Some((prev, cur));
            }
            prev = Some(cur);
            cur = link as u32;
        }
        None
    }

    /// Unlinks `e`, which follows `prev` (or the head) in a bucket the caller holds. `e` keeps
    /// its own link so lock-free readers standing on it walk on. A new head is published when
    /// the bucket is unlocked.
    #[inline(always)]
    fn unlink(&self, bucket: &mut Locked<'_>, prev: Option<u32>, e: u32) {
        let next = self.link(e).load(Ordering::Relaxed) as u32;
        match prev {
            None => bucket.head = next,
            Some(p) => {
                let link = self.link(p).load(Ordering::Relaxed);
                self.link(p).store(link & !u64::from(u32::MAX) | u64::from(next), Ordering::Release);
            }
        }
        if let Some(lru) = &self.lru {
            lru.state[e as usize].store(0, Ordering::Relaxed);
        }
    }

    /// Writes `key` into element `e` (not reachable from any chain) and makes it the head of a
    /// bucket the caller holds, linked to `next`: the current head, or for a replacement of the
    /// head, the old head's successor (one store then swaps the old element for the new). The
    /// new head is published when the bucket is unlocked.
    #[inline(always)]
    fn publish(&self, bucket: &mut Locked<'_>, e: u32, key: Probe<'_>, hash: u32, next: u32) {
        self.write_key(e, key);
        // Release: a lock-free reader still standing on `e` from its previous life follows this
        // link, and must then see the elements behind it fully written.
        self.link(e).store(u64::from(hash) << 32 | u64::from(next), Ordering::Release);
        bucket.head = e;
        if let Some(lru) = &self.lru {
            lru.state[e as usize].store(IN_TABLE, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    fn write_key(&self, e: u32, key: Probe<'_>) {
        let at = e as usize * self.ewords + 1;
        match key {
            Probe::One(a) => self.elems.word(at).store(a, Ordering::Relaxed),
            Probe::Two(a, b) => {
                self.elems.word(at).store(a, Ordering::Relaxed);
                self.elems.word(at + 1).store(b, Ordering::Relaxed);
            }
            Probe::Long(bytes) => self.elems.write(at, bytes),
        }
    }

    /// The value slot a program in slot `slot` reads and writes: its own in a per-CPU map
    /// (`None` past the map's slots), 0 in a plain one.
    #[inline(always)]
    fn program_slot(&self, slot: usize) -> Option<usize> {
        if self.per_cpu { (slot < self.slots).then_some(slot) } else { Some(0) }
    }

    /// An update's flags: `BPF_ANY`, `BPF_NOEXIST` or `BPF_EXIST`. Per-CPU maps reject
    /// `BPF_F_LOCK` with the unknown flags; plain maps just after, as no value here has a spin
    /// lock.
    #[inline(always)]
    fn check_update_flags(flags: u64) -> Result<(), OpError> {
        if flags & !BPF_F_LOCK > BPF_EXIST || flags & BPF_F_LOCK != 0 {
            return Err(OpError::Invalid);
        }
        Ok(())
    }

    #[inline]
    pub(crate) fn lookup(&self, key: &[u8], slot: usize) -> Option<NonNull<u8>> {
        if key.len() != self.key_size {
            return None;
        }
        let slot = self.program_slot(slot)?;
        let key = Probe::new(key);
        let e = self.find(key, self.hash(key))?;
        if let Some(lru) = &self.lru {
            lru.touch(e);
        }
        Some(self.values.ptr(e as usize, slot))
    }

    /// [`HashTable::lookup`] for a key of at most 8 bytes given as its zero-padded word (the
    /// `Probe::One` a key of that size makes): no key slice, no length dispatch. `None` for
    /// maps with longer keys.
    #[inline]
    pub(crate) fn lookup_word(&self, key: u64, slot: usize) -> Option<NonNull<u8>> {
        if self.key_size > 8 {
            return None;
        }
        let slot = self.program_slot(slot)?;
        let key = Probe::One(key);
        let e = self.find(key, self.hash(key))?;
        if let Some(lru) = &self.lru {
            lru.touch(e);
        }
        Some(self.values.ptr(e as usize, slot))
    }

    /// The layout compiled code needs to look keys of at most 8 bytes up itself
    /// ([`crate::HashWalk`]); `None` for LRU maps (a lookup also marks the element referenced)
    /// and longer keys.
    pub(crate) fn walk(&self) -> Option<crate::HashWalk> {
        if self.key_size > 8 || self.lru.is_some() {
            return None;
        }
        let (values, region_words, vwords) = self.values.layout();
        Some(crate::HashWalk {
            heads: self.heads.base_addr(),
            head_stride: 8 << self.head_shift,
            mask: self.mask,
            hash_init: self.seed,
            elems: self.elems.base_addr(),
            elem_bytes: self.ewords * 8,
            capacity: self.capacity,
            values,
            value_stride: vwords * 8,
            slot_stride: region_words * 8,
            slots: self.slots,
            per_cpu: self.per_cpu,
        })
    }

    /// `slot`: `Some` from a program (that slot's value, or the spare of that slot for plain
    /// maps), `None` from userspace (every slot's value given).
    pub(crate) fn update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
    ) -> Result<(), OpError> {
        if key.len() != self.key_size {
            return Err(OpError::Invalid);
        }
        let value_slot = slot.map(|s| self.program_slot(s).ok_or(OpError::Invalid)).transpose()?;
        let expected = if value_slot.is_none() { self.value_size * self.slots } else { self.value_size };
        if value.len() != expected {
            return Err(OpError::Invalid);
        }
        Self::check_update_flags(flags)?;
        let probe = Probe::new(key);
        let hash = self.hash(probe);
        if self.lockless
            && let Some(done) =
                self.update_unlocked(probe, hash, flags, |e| self.write_values(e, value, value_slot, false))
        {
            return done;
        }
        self.update_slow(probe, hash, value, flags, slot, value_slot)
    }

    /// An update the lock-free step did not do (or a map without one): LRU maps their way,
    /// the others under the bucket lock.
    fn update_slow(
        &self,
        probe: Probe<'_>,
        hash: u32,
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
        value_slot: Option<usize>,
    ) -> Result<(), OpError> {
        if self.lru.is_some() {
            return self.update_lru(probe, hash, value, flags, slot, value_slot);
        }
        self.update_locked(probe, hash, value, flags, slot, value_slot)
    }

    /// [`HashTable::update`] from a program in slot `slot`, for a key and a value of at most 8
    /// bytes each given as their zero-padded words (as [`HashTable::lookup_word`] takes keys):
    /// no slices, no length dispatch, the value stored as one word. The same results as
    /// `update` with the words' bytes; `Invalid` for maps with longer keys or values.
    #[inline]
    pub(crate) fn update_word(&self, key: u64, value: u64, flags: u64, slot: usize) -> Result<(), OpError> {
        if self.key_size > 8 || self.value_size > 8 {
            return Err(OpError::Invalid);
        }
        let value_slot = self.program_slot(slot).ok_or(OpError::Invalid)?;
        Self::check_update_flags(flags)?;
        // Bytes past `value_size` are padding, which stays zero whatever the caller passed.
        let value = value & (u64::MAX >> (64 - 8 * self.value_size));
        let probe = Probe::One(key);
        let hash = self.hash(probe);
        if self.lockless
            && let Some(done) = self.update_unlocked(probe, hash, flags, move |e| {
                self.values.write_word(e as usize, value_slot, value)
            })
        {
            return done;
        }
        self.update_word_slow(probe, hash, value, flags, slot, value_slot)
    }

    /// The rest of [`HashTable::update_word`]: inserts, LRU maps, and threads that cannot enter
    /// a read section, through the byte-slice paths.
    #[inline(never)]
    fn update_word_slow(
        &self,
        probe: Probe<'_>,
        hash: u32,
        value: u64,
        flags: u64,
        slot: usize,
        value_slot: usize,
    ) -> Result<(), OpError> {
        let bytes = value.to_ne_bytes();
        self.update_slow(probe, hash, &bytes[..self.value_size], flags, Some(slot), Some(value_slot))
    }

    /// The locked part of an update: inserts, and (outside `lockless` maps) updates of
    /// existing keys.
    #[inline(never)]
    fn update_locked(
        &self,
        probe: Probe<'_>,
        hash: u32,
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
        value_slot: Option<usize>,
    ) -> Result<(), OpError> {
        let home = self.free.home(slot);
        let mut bucket = self.lock(self.bucket_of(hash));
        let old = self.find_locked(&bucket, probe, hash);
        match (old, flags) {
            (Some(_), BPF_NOEXIST) => return Err(OpError::Exists),
            (None, BPF_EXIST) => return Err(OpError::NotFound),
            _ => {}
        }
        match old {
            None => {
                let Some(e) = self.free.pop(home) else {
                    drop(bucket);
                    // Every free list is empty. Deleted elements waiting in limbo are freed
                    // outside the bucket lock (see `FreeLists::reclaim`), then the update starts
                    // over: the key may have come meanwhile.
                    return if self.free.deferred && self.free.reclaim() {
                        self.update_after_reclaim(probe, hash, value, flags, slot, value_slot)
                    } else {
                        Err(OpError::TooBig)
                    };
                };
                self.write_values(e, value, value_slot, true);
                let head = bucket.head;
                self.publish(&mut bucket, e, probe, hash, head);
            }
            // Inserted since the lock-free walk missed it (or no walk ran): in place, as there.
            Some((_, e)) if self.lockless => self.write_values(e, value, value_slot, false),
            Some((prev, e)) => {
                // The bucket's spare, under the bucket's lock like the rest of its line; else
                // the slot's, which only a concurrent update on the same slot (two threads
                // sharing one, or userspace from two threads) can find taken.
                let bucket_spare = self.bucket_spare(&bucket, self.free.home(slot));
                let (spare, spare_ix) = match bucket_spare {
                    Some(s) => (s, None),
                    None => {
                        let ix = share(slot, self.spares.len() - 1);
                        (self.spares[ix].0.swap(NIL, Ordering::Acquire), Some(ix))
                    }
                };
                if spare == NIL {
                    self.write_values(e, value, value_slot, false);
                    return Ok(());
                }
                self.write_values(spare, value, value_slot, true);
                match prev {
                    // The old element heads the chain: the new one takes its place, and the
                    // unlocking store swaps them for readers at once.
                    None => {
                        let next = self.link(e).load(Ordering::Relaxed) as u32;
                        self.publish(&mut bucket, spare, probe, hash, next);
                    }
                    // Deeper: the new element goes first (published now, so a reader always
                    // finds one of the two), then the old one is unlinked.
                    Some(p) => {
                        let head = bucket.head;
                        self.publish(&mut bucket, spare, probe, hash, head);
                        bucket.publish_head();
                        self.unlink(&mut bucket, Some(p), e);
                    }
                }
                match spare_ix {
                    None => self
                        .heads
                        .word((bucket.b << self.head_shift) + 1)
                        .store(u64::from(e), Ordering::Relaxed),
                    Some(ix) => {
                        drop(bucket);
                        self.spares[ix].0.store(e, Ordering::Release);
                    }
                }
            }
        }
        Ok(())
    }

    /// An insert that found every free list empty, retried once the limbo has been reclaimed.
    #[cold]
    #[inline(never)]
    fn update_after_reclaim(
        &self,
        probe: Probe<'_>,
        hash: u32,
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
        value_slot: Option<usize>,
    ) -> Result<(), OpError> {
        let home = self.free.home(slot);
        loop {
            let mut bucket = self.lock(self.bucket_of(hash));
            match (self.find_locked(&bucket, probe, hash), flags) {
                (Some(_), BPF_NOEXIST) => return Err(OpError::Exists),
                (Some((_, e)), _) => {
                    self.write_values(e, value, value_slot, false);
                    return Ok(());
                }
                (None, BPF_EXIST) => return Err(OpError::NotFound),
                (None, _) => {}
            }
            if let Some(e) = self.free.pop(home) {
                self.write_values(e, value, value_slot, true);
                let head = bucket.head;
                self.publish(&mut bucket, e, probe, hash, head);
                return Ok(());
            }
            drop(bucket);
            // Others took what the reclaim freed; go on while there is anything to reclaim.
            if !self.free.reclaim() {
                return Err(OpError::TooBig);
            }
        }
    }

    /// The lock-free part of an update in a `lockless` map: `Some(result)` when the key's
    /// presence decided it — present: the value is written into the element in place
    /// (`BPF_NOEXIST`: `EEXIST`); absent with `BPF_EXIST`: `ENOENT` — and `None` when the key
    /// is absent and must be inserted under the bucket lock (or the thread cannot enter a read
    /// section any more). `write` writes the update's value(s) into a found element.
    ///
    /// The walk is the lock-free lookup's, so a miss is as certain as a lookup's. A hit is
    /// ordered at the walk: a delete that unlinks the element after it makes the write land in a
    /// dead element, as if the update had come first. The element cannot have been given to
    /// another key meanwhile: the walk and the write form one [`grace::enter`] section, and a
    /// deleted element of a `lockless` map waits in limbo until a grace period has passed
    /// ([`FreeLists::reclaim`]). No bucket lock, no read-modify-write: two stores to the
    /// thread's own line (the section) and the value's.
    ///
    /// The key, value and probe stay in registers (a closure around the section, or a probe
    /// copied through the stack, cost a store-forwarding stall here).
    #[inline(always)]
    fn update_unlocked(
        &self,
        probe: Probe<'_>,
        hash: u32,
        flags: u64,
        write: impl FnOnce(u32),
    ) -> Option<Result<(), OpError>> {
        let _section = grace::enter()?;
        match self.find(probe, hash) {
            Some(_) if flags == BPF_NOEXIST => Some(Err(OpError::Exists)),
            Some(e) => {
                write(e);
                Some(Ok(()))
            }
            None if flags == BPF_EXIST => Some(Err(OpError::NotFound)),
            None => None,
        }
    }

    /// Writes an update's value(s) into element `e`: one slot's (zeroing the others of a new
    /// per-CPU element) from a program, every slot's from userspace.
    #[inline(always)]
    fn write_values(&self, e: u32, value: &[u8], value_slot: Option<usize>, new: bool) {
        match value_slot {
            // Plain maps: `value_slot` is 0.
            Some(s) => {
                self.values.write(e as usize, s, value);
                if new && self.per_cpu && self.slots > 1 {
                    self.zero_other_slots(e, s);
                }
            }
            None => self.write_every_slot(e, value),
        }
    }

    #[cold]
    fn zero_other_slots(&self, e: u32, s: usize) {
        (0..self.slots).filter(|&o| o != s).for_each(|o| self.values.zero(e as usize, o));
    }

    fn write_every_slot(&self, e: u32, value: &[u8]) {
        for (s, v) in value.chunks_exact(self.value_size).enumerate() {
            self.values.write(e as usize, s, v);
        }
    }

    /// An update of an LRU map, in the kernel's order (`htab_lru_map_update_elem`,
    /// `__htab_lru_percpu_map_update_elem`): a fresh element is taken first — evicting if the map
    /// is full, even when the flags then fail the update — and only then the bucket is locked and
    /// the flags checked. Plain LRU maps replace through the fresh element (the old one, marked
    /// referenced on the new, goes back to the free list); per-CPU LRU maps update in place and
    /// take no element for `BPF_EXIST`.
    fn update_lru(
        &self,
        probe: Probe<'_>,
        hash: u32,
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
        value_slot: Option<usize>,
    ) -> Result<(), OpError> {
        let lru = self.lru.as_ref().expect("only called for LRU maps");
        let home = self.free.home(slot);
        let fresh = if self.per_cpu && flags == BPF_EXIST {
            None
        } else {
            Some(self.free.pop(home).or_else(|| self.evict(lru)).ok_or(OpError::NoMemory)?)
        };
        let mut bucket = self.lock(self.bucket_of(hash));
        let old = self.find_locked(&bucket, probe, hash);
        let checked = match (old, flags) {
            (Some(_), BPF_NOEXIST) => Err(OpError::Exists),
            (None, BPF_EXIST) => Err(OpError::NotFound),
            _ => Ok(()),
        };
        let mut unused = None;
        match (checked, old, fresh) {
            (Err(e), _, fresh) => {
                drop(bucket);
                if let Some(f) = fresh {
                    self.free.push(home, f);
                }
                return Err(e);
            }
            (Ok(()), Some((_, e)), fresh) if self.per_cpu => {
                lru.touch(e);
                self.write_values(e, value, value_slot, false);
                unused = fresh;
            }
            (Ok(()), old, Some(f)) => {
                self.write_values(f, value, value_slot, true);
                let head = bucket.head;
                self.publish(&mut bucket, f, probe, hash, head);
                if let Some((prev, e)) = old {
                    // Published before the old element is unlinked, so a reader always finds one.
                    bucket.publish_head();
                    lru.touch(f);
                    self.unlink(&mut bucket, Some(prev.unwrap_or(f)), e);
                    unused = Some(e);
                }
            }
            (Ok(()), _, None) => unreachable!("only per-CPU BPF_EXIST updates take no element"),
        }
        drop(bucket);
        if let Some(e) = unused {
            self.free.push(home, e);
        }
        Ok(())
    }

    /// Evicts one element of a full LRU map and hands it out, unlinked and off every list; `None`
    /// when nothing could be evicted (every element is being inserted or freed right now).
    fn evict(&self, lru: &Lru) -> Option<u32> {
        let n = self.capacity as u32;
        for step in 0..3 * n {
            let e = lru.hand.fetch_add(1, Ordering::Relaxed) % n;
            let state = lru.state[e as usize].load(Ordering::Relaxed);
            if state & IN_TABLE == 0 {
                continue;
            }
            if state & REFERENCED != 0 && step < 2 * n {
                // Second chance.
                lru.state[e as usize].fetch_and(!REFERENCED, Ordering::Relaxed);
                continue;
            }
            let hash = (self.link(e).load(Ordering::Acquire) >> 32) as u32;
            let mut bucket = self.lock(self.bucket_of(hash));
            // Under the lock, the element is in this bucket's chain exactly if it is linked here.
            let mut prev = None;
            let mut cur = bucket.head;
            while cur & NULLS == 0 && cur != e {
                prev = Some(cur);
                cur = self.link(cur).load(Ordering::Acquire) as u32;
            }
            if cur == e {
                self.unlink(&mut bucket, prev, e);
                return Some(e);
            }
        }
        None
    }

    /// `slot`: the deleting program's slot (its free list gets the element), `None` from
    /// userspace.
    pub(crate) fn delete(&self, key: &[u8], slot: Option<usize>) -> Result<(), OpError> {
        if key.len() != self.key_size {
            return Err(OpError::Invalid);
        }
        self.delete_probe(Probe::new(key), slot)
    }

    #[inline(always)]
    fn delete_probe(&self, key: Probe<'_>, slot: Option<usize>) -> Result<(), OpError> {
        let hash = self.hash(key);
        // A miss takes no lock: the lock-free walk is as sure of it as a lookup is.
        self.find(key, hash).ok_or(OpError::NotFound)?;
        let mut bucket = self.lock(self.bucket_of(hash));
        let (prev, e) = self.find_locked(&bucket, key, hash).ok_or(OpError::NotFound)?;
        self.unlink(&mut bucket, prev, e);
        drop(bucket);
        self.free.retire(self.free.home(slot), e);
        Ok(())
    }

    /// [`HashTable::delete`] from a program in slot `slot` of a key of at most 8 bytes given as
    /// its zero-padded word; `Invalid` for maps with longer keys.
    #[inline]
    pub(crate) fn delete_word(&self, key: u64, slot: usize) -> Result<(), OpError> {
        if self.key_size > 8 {
            return Err(OpError::Invalid);
        }
        self.delete_probe(Probe::One(key), Some(slot))
    }

    /// Copies the first `out.len()` bytes of `key`'s (slot 0) value into `out`; `false` when
    /// absent. No allocation.
    pub(crate) fn read_value(&self, key: &[u8], out: &mut [u8]) -> bool {
        if key.len() != self.key_size {
            return false;
        }
        let key = Probe::new(key);
        let Some(e) = self.find(key, self.hash(key)) else { return false };
        let mut word = [0u8; 8];
        let n = out.len().min(8).min(self.value_size);
        self.values.read_prefix(e as usize, 0, &mut word[..n]);
        out[..n].copy_from_slice(&word[..n]);
        true
    }

    pub(crate) fn lookup_user(&self, key: &[u8]) -> Result<Vec<u8>, OpError> {
        if key.len() != self.key_size {
            return Err(OpError::Invalid);
        }
        // Under the bucket lock, unlike program lookups: the element cannot be unlinked (and so
        // not reused for another key) while its value is copied, so the copy is exactly the
        // key's value. A lock-free copy could race with an eviction or delete-and-reuse.
        let key = Probe::new(key);
        let hash = self.hash(key);
        let bucket = self.lock(self.bucket_of(hash));
        let (_, e) = self.find_locked(&bucket, key, hash).ok_or(OpError::NotFound)?;
        Ok(self.read_values(e))
    }

    fn read_values(&self, e: u32) -> Vec<u8> {
        let mut out = vec![0; self.value_size * self.slots];
        for (s, v) in out.chunks_exact_mut(self.value_size).enumerate() {
            self.values.read(e as usize, s, v);
        }
        out
    }

    /// The first key of bucket `from` or a later one.
    fn first_key_from(&self, from: usize) -> Result<Vec<u8>, OpError> {
        for b in from..self.n_buckets {
            let bucket = self.lock(b);
            if bucket.head & NULLS == 0 {
                return Ok(self.read_key(bucket.head));
            }
        }
        Err(OpError::NotFound)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
        let Some(key) = key else { return self.first_key_from(0) };
        if key.len() != self.key_size {
            return Err(OpError::Invalid);
        }
        let key = Probe::new(key);
        let hash = self.hash(key);
        let b = self.bucket_of(hash);
        {
            let bucket = self.lock(b);
            let Some((_, e)) = self.find_locked(&bucket, key, hash) else {
                drop(bucket);
                return self.first_key_from(0);
            };
            let next = self.link(e).load(Ordering::Acquire) as u32;
            if next & NULLS == 0 {
                return Ok(self.read_key(next));
            }
        }
        self.first_key_from(b + 1)
    }

    /// Calls `f(key, value)` for each element, `value` being slot `slot`'s (slot 0 of a plain
    /// map), until `f` returns `false`: `bpf_for_each_map_elem` on a hash map. Allocation-free
    /// for keys of up to 64 bytes (longer ones take one buffer per walk).
    ///
    /// Like the kernel's (`bpf_for_each_hash_elem`, an RCU walk of each bucket), the walk takes
    /// no lock, so `f` may update and delete in the same map: an element added, deleted or
    /// moved while the walk runs may be visited or not, and an element deleted and reused for a
    /// key of a later bucket may be visited again there. Each chain's link is read before `f`
    /// runs, so deleting the element being visited does not cut the walk short; a bucket's
    /// walk stops after `capacity` steps (a chain that keeps changing under it).
    pub(crate) fn for_each(&self, slot: usize, mut f: impl FnMut(&[u8], NonNull<u8>) -> bool) {
        let slot = if self.per_cpu {
            if slot >= self.slots {
                return;
            }
            slot
        } else {
            0
        };
        let mut small = [0u8; 64];
        let mut large = Vec::new();
        let key: &mut [u8] = if self.key_size <= small.len() {
            &mut small[..self.key_size]
        } else {
            large.resize(self.key_size, 0);
            &mut large
        };
        for b in 0..self.n_buckets {
            let mut cur = self.head(b).load(Ordering::Acquire) as u32;
            let mut steps = 0;
            while cur & NULLS == 0 && steps <= self.capacity {
                let next = self.link(cur).load(Ordering::Acquire) as u32;
                self.elems.read(cur as usize * self.ewords + 1, key);
                if !f(key, self.values.ptr(cur as usize, slot)) {
                    return;
                }
                cur = next;
                steps += 1;
            }
        }
    }

    /// Calls `f` with the first `n` bytes (at most 8) of every entry's value (slot 0), bucket by
    /// bucket, without allocating; `f` runs under the bucket's lock, so it must be short.
    pub(crate) fn for_each_value_prefix(&self, n: usize, mut f: impl FnMut(&[u8])) {
        let n = n.min(8).min(self.value_size);
        let mut word = [0u8; 8];
        for b in 0..self.n_buckets {
            let bucket = self.lock(b);
            let mut cur = bucket.head;
            while cur & NULLS == 0 {
                self.values.read_prefix(cur as usize, 0, &mut word[..n]);
                f(&word[..n]);
                cur = self.link(cur).load(Ordering::Acquire) as u32;
            }
        }
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for b in 0..self.n_buckets {
            let bucket = self.lock(b);
            let mut cur = bucket.head;
            while cur & NULLS == 0 {
                let values =
                    self.read_values(cur).chunks_exact(self.value_size).map(<[u8]>::to_vec).collect();
                out.push(Entry { key: self.read_key(cur), values });
                cur = self.link(cur).load(Ordering::Acquire) as u32;
            }
        }
        out
    }

    pub(crate) fn contains_value(&self, addr: usize, len: usize) -> bool {
        self.values.contains(addr, len)
    }
}

impl Lru {
    /// Marks `e` referenced, writing only when the bit is not already set.
    #[inline]
    fn touch(&self, e: u32) {
        let state = &self.state[e as usize];
        if state.load(Ordering::Relaxed) & REFERENCED == 0 {
            state.fetch_or(REFERENCED, Ordering::Relaxed);
        }
    }
}

/// Which of `n + 1` per-slot things (free lists, spares) slot `slot` uses: its own while there
/// are enough, shared beyond; the last for userspace (`None`). No division on the common path.
#[inline]
fn share(slot: Option<usize>, n: usize) -> usize {
    match slot {
        Some(s) if s < n => s,
        Some(s) => s % n,
        None => n,
    }
}

/// `n` items from `make(i)` in a boxed slice, or `None` when memory is short.
fn try_collect<T>(n: usize, make: impl FnMut(usize) -> T) -> Option<Box<[T]>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    v.extend((0..n).map(make));
    Some(v.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::{
        BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Map, MapDef, MapError, OpError, map_flags, map_type,
    };

    fn hash_map(key_size: u32, value_size: u32, max_entries: u32) -> Map {
        let def = MapDef { map_type: map_type::HASH, key_size, value_size, max_entries, map_flags: 0 };
        Map::new("h", def, 2).unwrap()
    }

    fn percpu(value_size: u32, max_entries: u32, slots: usize) -> Map {
        let def =
            MapDef { map_type: map_type::PERCPU_HASH, key_size: 4, value_size, max_entries, map_flags: 0 };
        Map::new("ph", def, slots).unwrap()
    }

    #[test]
    fn hash_walk_describes_the_table() {
        use super::{HashTable, Probe};
        use crate::{HashWalk, Kind};
        for (t, ks) in
            [(map_type::HASH, 4u32), (map_type::HASH, 8), (map_type::HASH, 1), (map_type::PERCPU_HASH, 4)]
        {
            let m = Map::new(
                "w",
                MapDef { map_type: t, key_size: ks, value_size: 12, max_entries: 50, map_flags: 0 },
                3,
            )
            .unwrap();
            let w = m.hash_walk().expect("a word-keyed hash map");
            assert_eq!(w.per_cpu, t == map_type::PERCPU_HASH);
            assert_eq!(w.slots, if w.per_cpu { 3 } else { 1 });
            let h: &HashTable = match &m.kind {
                Kind::Hash(h) => h,
                _ => unreachable!(),
            };
            for i in 0..40u64 {
                let word = (i * 37) & if ks == 1 { 0xff } else { u64::MAX };
                let key = &word.to_ne_bytes()[..ks as usize];
                m.update(key, &[i as u8; 12], BPF_ANY, 0).unwrap();
                let probe = Probe::One(word);
                let hash = h.hash(probe);
                assert_eq!(HashWalk::hash(w.hash_init, word), hash, "{t} {ks} {i}");
                let b = HashWalk::bucket(w.mask, hash);
                assert_eq!(h.head(b).as_ptr() as usize, w.heads + w.head_stride * b);
                assert_eq!(w.head_stride, 64, "a small map's heads have a line each");
                let e = h.find(probe, hash).expect("just inserted") as usize;
                assert_eq!(h.link(e as u32).as_ptr() as usize, w.elems + e * w.elem_bytes);
                assert_eq!(h.elems.word(e * h.ewords + 1).load(std::sync::atomic::Ordering::Relaxed), word);
                assert!(e < w.capacity);
                for slot in 0..w.slots {
                    let p = m.lookup_word(word, slot).unwrap().as_ptr() as usize;
                    assert_eq!(p, w.values + slot * w.slot_stride + e * w.value_stride);
                }
            }
        }
        let lru = Map::new(
            "l",
            MapDef { map_type: map_type::LRU_HASH, key_size: 4, value_size: 4, max_entries: 8, map_flags: 0 },
            1,
        )
        .unwrap();
        assert_eq!(lru.hash_walk(), None, "LRU lookups mark elements referenced");
        assert_eq!(hash_map(12, 4, 4).hash_walk(), None, "keys over 8 bytes");
    }

    fn k(i: u32) -> [u8; 4] {
        i.to_ne_bytes()
    }

    fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    ) -> Result<Map, MapError> {
        Map::new("m", MapDef { map_type, key_size, value_size, max_entries, map_flags }, 2)
    }

    #[test]
    fn definition_checks() {
        for t in [map_type::HASH, map_type::PERCPU_HASH] {
            let inv = |r: Result<Map, MapError>| matches!(r, Err(MapError::InvalidDefinition { .. }));
            let big = |r: Result<Map, MapError>| matches!(r, Err(MapError::TooBig { .. }));
            assert!(inv(create(t, 4, 8, 0, 0)), "max_entries 0");
            assert!(inv(create(t, 0, 8, 1, 0)), "key_size 0");
            assert!(inv(create(t, 4, 0, 1, 0)), "value_size 0");
            assert!(inv(create(t, 4, 8, 1, map_flags::MMAPABLE)), "array-only flag");
            assert!(inv(create(t, 4, 8, 1, 1 << 1)), "no common LRU");
            assert!(inv(create(t, 4, 8, 1, map_flags::RDONLY | map_flags::WRONLY)));
            assert!(create(t, 4, 8, 1, map_flags::NO_PREALLOC | map_flags::RDONLY_PROG | 1 << 6).is_ok());
            assert!(big(create(t, 4, (4 << 20) - 52, 1, 0)), "key + value at the kmalloc limit");
            assert!(big(create(t, 4, 8, (1 << 31) + 1, 0)));
        }
        assert!(create(map_type::HASH, 5, (4 << 20) - 54, 1, 0).is_ok_and(|m| m.slots() == 1));
        assert!(create(map_type::PERCPU_HASH, 4, (32 << 10) + 1, 1, 0).is_err());
    }

    #[test]
    fn update_flags_and_errnos() {
        let m = hash_map(4, 4, 2);
        assert!(m.lookup(&k(1), 0).is_none());
        assert_eq!(m.lookup_user(&k(1)), Err(OpError::NotFound));
        assert_eq!(m.update(&k(1), &[1; 4], BPF_EXIST, 0), Err(OpError::NotFound));
        assert_eq!(m.update(&k(1), &[1; 4], BPF_NOEXIST, 0), Ok(()));
        assert_eq!(m.update(&k(1), &[2; 4], BPF_NOEXIST, 0), Err(OpError::Exists));
        assert_eq!(m.update(&k(1), &[2; 4], BPF_EXIST, 0), Ok(()));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [2; 4]);
        for bad in [3, 8, 1 << 40, BPF_F_LOCK, BPF_F_LOCK | BPF_EXIST] {
            assert_eq!(m.update(&k(1), &[2; 4], bad, 0), Err(OpError::Invalid), "flags {bad}");
        }
        assert_eq!(m.update(&k(1), &[2; 5], BPF_ANY, 0), Err(OpError::Invalid));
        assert_eq!(m.update(&[1; 5], &[2; 4], BPF_ANY, 0), Err(OpError::Invalid));
        assert_eq!(m.delete(&k(9)), Err(OpError::NotFound));
        assert_eq!(m.delete(&[1; 3]), Err(OpError::Invalid));
        assert_eq!(m.delete(&k(1)), Ok(()));
        assert_eq!(m.delete(&k(1)), Err(OpError::NotFound));
        assert!(m.lookup(&k(1), 0).is_none());
    }

    #[test]
    fn full_map() {
        let m = hash_map(4, 8, 3);
        for i in 0..3 {
            m.update(&k(i), &u64::from(i).to_ne_bytes(), BPF_ANY, 0).unwrap();
        }
        assert_eq!(m.update(&k(3), &[0; 8], BPF_ANY, 0), Err(OpError::TooBig));
        assert_eq!(m.update_user(&k(3), &[0; 8], BPF_ANY), Err(OpError::TooBig));
        // Checks on the key come before the full-map check.
        assert_eq!(m.update(&k(3), &[0; 8], BPF_EXIST, 0), Err(OpError::NotFound));
        // Replacing keeps working when full, many times over, from programs and userspace.
        for round in 0..10u64 {
            for i in 0..3 {
                m.update(&k(i), &round.to_ne_bytes(), BPF_ANY, round as usize).unwrap();
                m.update_user(&k(i), &(round + 1).to_ne_bytes(), BPF_EXIST).unwrap();
            }
        }
        assert_eq!(m.lookup_user(&k(2)).unwrap(), 10u64.to_ne_bytes());
        m.delete(&k(0)).unwrap();
        assert_eq!(m.update(&k(3), &[7; 8], BPF_NOEXIST, 0), Ok(()));
        assert_eq!(m.update(&k(0), &[7; 8], BPF_NOEXIST, 0), Err(OpError::TooBig));
        let keys: BTreeSet<_> = m.entries().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, [1, 2, 3].map(|i| k(i).to_vec()).into());
    }

    #[test]
    fn replaced_and_deleted_values_stay_readable_memory() {
        let m = hash_map(4, 16, 4);
        m.update(&k(1), &[1; 16], BPF_ANY, 0).unwrap();
        let old = m.lookup(&k(1), 0).unwrap().as_ptr() as usize;
        // A replacing update moves the key to another element; the old pointer keeps the old value.
        m.update(&k(1), &[2; 16], BPF_ANY, 0).unwrap();
        let new = m.lookup(&k(1), 0).unwrap().as_ptr() as usize;
        assert_ne!(old, new);
        assert!(m.contains_value(old, 16) && m.contains_value(new, 16));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [2; 16]);
        m.delete(&k(1)).unwrap();
        assert!(m.contains_value(new, 16), "deleted elements' values still count");
    }

    #[test]
    fn one_word_values_and_per_cpu_values_are_updated_in_place() {
        for (m, vs) in [(hash_map(4, 8, 4), 8), (hash_map(4, 3, 4), 3), (percpu(24, 4, 2), 24)] {
            let HashOnly(h) = HashOnly::of(&m);
            assert!(h.lockless && h.spares.is_empty() && !h.bucket_spares, "no spares needed");
            m.update(&k(1), &vec![1; vs], BPF_ANY, 1).unwrap();
            let at = m.lookup(&k(1), 1).unwrap();
            for (flags, slot, byte) in [(BPF_ANY, 1, 2), (BPF_EXIST, 1, 3), (BPF_ANY, 0, 4)] {
                m.update(&k(1), &vec![byte; vs], flags, slot).unwrap();
                assert_eq!(m.lookup(&k(1), 1), Some(at), "the same element");
            }
            m.update_user(&k(1), &vec![5; vs * m.slots()], BPF_EXIST).unwrap();
            assert_eq!(m.lookup(&k(1), 1), Some(at));
            assert_eq!(m.lookup_user(&k(1)).unwrap(), vec![5; vs * m.slots()]);
            assert_eq!(m.update(&k(1), &vec![6; vs], BPF_NOEXIST, 0), Err(OpError::Exists));
            assert_eq!(m.update(&k(2), &vec![6; vs], BPF_EXIST, 0), Err(OpError::NotFound));
            assert_eq!(m.lookup_user(&k(1)).unwrap(), vec![5; vs * m.slots()]);
        }
        // Per-CPU: a program's update writes its own slot only.
        let m = percpu(8, 4, 3);
        m.update_user(&k(1), &[[1; 8], [2; 8], [3; 8]].concat(), BPF_ANY).unwrap();
        m.update(&k(1), &[9; 8], BPF_EXIST, 1).unwrap();
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [[1; 8], [9; 8], [3; 8]].concat());
    }

    #[test]
    fn deleted_elements_wait_in_limbo_until_a_grace_period() {
        // 12 entries, three lists of four (two slots, userspace).
        let m = hash_map(4, 8, 12);
        let HashOnly(h) = HashOnly::of(&m);
        let elem =
            |key: u32| h.find(super::Probe::One(u64::from(key)), h.hash(super::Probe::One(u64::from(key))));
        let limbo = |l: usize| {
            let mut n = 0;
            let mut e = h.free.lists[l].limbo.load(std::sync::atomic::Ordering::Relaxed);
            while e != super::NIL {
                n += 1;
                e = h.free.next[e as usize].load(std::sync::atomic::Ordering::Relaxed);
            }
            n
        };
        m.update(&k(1), &[1; 8], BPF_ANY, 0).unwrap();
        assert_eq!(elem(1), Some(0));
        // The delete parks the element: the slot's next insert takes another one.
        m.delete_from(&k(1), 0).unwrap();
        assert_eq!((limbo(0), h.free.len()), (1, 11));
        m.update(&k(2), &[2; 8], BPF_ANY, 0).unwrap();
        assert_eq!(elem(2), Some(1));
        // Fill the map; the twelfth key finds every list empty and reclaims element 0.
        for i in 3..14 {
            m.update(&k(i), &[3; 8], BPF_NOEXIST, 1).unwrap();
        }
        assert_eq!((limbo(0), h.free.len(), m.entries().len()), (0, 0, 12));
        assert_eq!(m.update(&k(99), &[0; 8], BPF_ANY, 0), Err(OpError::TooBig));
        // Deletes from any slot (and userspace) make room for any other, through limbo.
        m.delete_from(&k(5), 1).unwrap();
        m.delete(&k(6)).unwrap();
        assert_eq!((limbo(1), limbo(2)), (1, 1));
        m.update(&k(99), &[0; 8], BPF_ANY, 0).unwrap();
        m.update_user(&k(98), &[0; 8], BPF_ANY).unwrap();
        assert_eq!(m.update(&k(97), &[0; 8], BPF_ANY, 1), Err(OpError::TooBig));
        assert_every_element_accounted(h);
    }

    #[test]
    fn plain_maps_get_a_spare_per_slot_and_one_for_userspace() {
        let def =
            MapDef { map_type: map_type::HASH, key_size: 4, value_size: 16, max_entries: 2, map_flags: 0 };
        let m = Map::new("h", def, 4).unwrap();
        let HashOnly(h) = HashOnly::of(&m);
        // Two entries, five slot spares, a spare for each of the two (padded) buckets.
        assert_eq!((h.spares.len(), h.capacity), (5, 9));
        // Every replacement, from every slot, moves the key to another element.
        m.update(&k(1), &[0; 16], BPF_ANY, 0).unwrap();
        for slot in 0..6 {
            let before = m.lookup(&k(1), slot).unwrap();
            m.update(&k(1), &[slot as u8; 16], BPF_ANY, slot).unwrap();
            assert_ne!(m.lookup(&k(1), slot).unwrap(), before, "slot {slot}");
        }
        let before = m.lookup(&k(1), 0).unwrap();
        m.update_user(&k(1), &[9; 16], BPF_ANY).unwrap();
        assert_ne!(m.lookup(&k(1), 0).unwrap(), before);
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [9; 16]);
        // Plain maps ignore `slots`, however absurd.
        for vs in [8, 16] {
            let m = Map::new("h", MapDef { value_size: vs, ..def }, usize::MAX).unwrap();
            m.update(&k(1), &vec![1; vs as usize], BPF_ANY, usize::MAX).unwrap();
            m.update(&k(1), &vec![2; vs as usize], BPF_ANY, usize::MAX).unwrap();
            assert_eq!(m.lookup_user(&k(1)).unwrap(), vec![2; vs as usize]);
        }
    }

    #[test]
    fn free_lists_are_per_slot_and_a_full_map_is_full_however_spread() {
        // Values of two words: replaced, not written in place, so deletes free at once.
        let def =
            MapDef { map_type: map_type::HASH, key_size: 4, value_size: 16, max_entries: 12, map_flags: 0 };
        let m = Map::new("h", def, 2).unwrap();
        let HashOnly(h) = HashOnly::of(&m);
        // Three lists (two slots, userspace) of 4 contiguous elements each.
        assert_eq!(h.free.lists.len(), 3);
        assert_eq!(h.free.len(), 12);
        let elem =
            |key: u32| h.find(super::Probe::One(u64::from(key)), h.hash(super::Probe::One(u64::from(key))));
        m.update(&k(1), &[1; 16], BPF_ANY, 0).unwrap();
        m.update(&k(2), &[2; 16], BPF_ANY, 1).unwrap();
        m.update_user(&k(3), &[3; 16], BPF_ANY).unwrap();
        assert_eq!([elem(1), elem(2), elem(3)], [Some(0), Some(4), Some(8)], "each from its own run");
        // A slot's delete feeds its own list; its next insert takes that element back.
        m.delete_from(&k(2), 0).unwrap();
        m.update(&k(4), &[4; 16], BPF_ANY, 0).unwrap();
        assert_eq!(elem(4), Some(4));
        // Slot 1 alone fills the map, stealing once its own list runs dry; then E2BIG, from
        // every slot and userspace, and replacing still works.
        for i in 10..19 {
            m.update(&k(i), &[9; 16], BPF_NOEXIST, 1).unwrap();
        }
        assert_eq!(m.entries().len(), 12);
        assert_eq!(h.free.len(), 0);
        for slot in [0, 1, 7] {
            assert_eq!(m.update(&k(99), &[0; 16], BPF_ANY, slot), Err(OpError::TooBig));
            m.update(&k(10), &[slot as u8; 16], BPF_ANY, slot).unwrap();
        }
        assert_eq!(m.update_user(&k(99), &[0; 16], BPF_ANY), Err(OpError::TooBig));
        // Deletes from any slot make room for any other.
        m.delete(&k(10)).unwrap();
        m.update(&k(99), &[0; 16], BPF_ANY, 1).unwrap();
        assert_eq!(m.update(&k(98), &[0; 16], BPF_ANY, 0), Err(OpError::TooBig));
    }

    #[test]
    fn no_prealloc_hands_out_elements_as_keys_arrive() {
        for t in [map_type::HASH, map_type::PERCPU_HASH] {
            let def = MapDef {
                map_type: t,
                key_size: 4,
                value_size: 8,
                max_entries: 100,
                map_flags: map_flags::NO_PREALLOC,
            };
            let m = Map::new("np", def, 2).unwrap();
            let HashOnly(h) = HashOnly::of(&m);
            let fresh = || h.free.fresh.load(std::sync::atomic::Ordering::Relaxed);
            assert_eq!((fresh(), h.free.len()), (0, 0), "nothing handed out at creation");
            let value = vec![1; 8 * m.slots()];
            m.update_user(&k(0), &value, BPF_ANY).unwrap();
            assert_eq!(fresh(), super::FRESH_RUN, "one run taken for the first insert");
            for i in 1..100 {
                m.update(&k(i), &[1; 8], BPF_NOEXIST, (i % 2) as usize).unwrap();
            }
            assert!(fresh() >= 100);
            assert_eq!(m.update(&k(100), &[1; 8], BPF_ANY, 0), Err(OpError::TooBig), "type {t}");
            m.update(&k(5), &[2; 8], BPF_EXIST, 1).unwrap();
            m.delete(&k(5)).unwrap();
            m.update(&k(100), &[1; 8], BPF_NOEXIST, 0).unwrap();
            assert_eq!(m.entries().len(), 100);
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "tens of thousands of buckets take many minutes under Miri")]
    fn large_maps_pack_their_heads() {
        let n = super::PADDED_BUCKETS_MAX * 2;
        let def =
            MapDef { map_type: map_type::HASH, key_size: 4, value_size: 4, max_entries: n, map_flags: 0 };
        let m = Map::new("big", def, 1).unwrap();
        let w = m.hash_walk().unwrap();
        assert_eq!(w.head_stride, 8);
        for i in (0..n).step_by(7) {
            m.update(&k(i), &k(i), BPF_ANY, 0).unwrap();
        }
        for i in (0..n).step_by(7) {
            assert_eq!(m.lookup_user(&k(i)).unwrap(), k(i));
            assert!(m.lookup(&k(i + 1), 0).is_none() || (i + 1) % 7 == 0);
        }
        assert_eq!(m.entries().len(), (n as usize).div_ceil(7));
    }

    /// Every element is in exactly one place: a chain, a free list or a spare.
    fn assert_every_element_accounted(h: &super::HashTable) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut seen = vec![0u32; h.capacity];
        for b in 0..h.n_buckets {
            let mut cur = h.head(b).load(Relaxed) as u32;
            assert_eq!(h.head(b).load(Relaxed) & super::LOCKED, 0, "bucket {b} left locked");
            while cur & super::NULLS == 0 {
                seen[cur as usize] += 1;
                cur = h.link(cur).load(Relaxed) as u32;
            }
            assert_eq!(cur, super::NULLS | b as u32, "chain {b} ends on its own marker");
        }
        for l in &h.free.lists {
            for first in [l.head.load(Relaxed) as u32, l.limbo.load(Relaxed)] {
                let mut e = first;
                while e != super::NIL {
                    seen[e as usize] += 1;
                    e = h.free.next[e as usize].load(Relaxed);
                }
            }
            assert_eq!(l.taken.load(Relaxed), super::NIL, "a reclaim left a chain taken");
        }
        for spare in &h.spares {
            let e = spare.0.load(Relaxed);
            if e != super::NIL {
                seen[e as usize] += 1;
            }
        }
        if h.bucket_spares {
            for b in 0..h.n_buckets {
                let e = h.heads.word((b << h.head_shift) + 1).load(Relaxed) as u32;
                if e != super::NIL {
                    seen[e as usize] += 1;
                }
            }
        }
        let fresh = h.free.fresh.load(Relaxed).min(h.free.limit) as usize;
        let limit = h.free.limit as usize;
        let slot_spares = limit..limit + h.spares.len();
        let in_pool = |e: usize| {
            h.free
                .lists
                .iter()
                .any(|l| (l.pool.load(Relaxed).min(l.pool_end) as usize..l.pool_end as usize).contains(&e))
        };
        for (e, n) in seen.iter().enumerate() {
            let handed_out = e < fresh || slot_spares.contains(&e) || (e >= slot_spares.end && !in_pool(e));
            assert_eq!(*n, u32::from(handed_out), "element {e}");
        }
    }

    #[test]
    fn churn_from_many_slots_loses_and_duplicates_no_element() {
        const THREADS: usize = 4;
        let rounds = if cfg!(miri) { 150 } else { 20_000 };
        for flags in [0, map_flags::NO_PREALLOC] {
            for t in [map_type::HASH, map_type::PERCPU_HASH, map_type::LRU_HASH] {
                if flags != 0 && t == map_type::LRU_HASH {
                    continue;
                }
                let def =
                    MapDef { map_type: t, key_size: 4, value_size: 8, max_entries: 24, map_flags: flags };
                let m = Map::new("churn", def, THREADS).unwrap();
                std::thread::scope(|s| {
                    for th in 0..THREADS {
                        let m = &m;
                        s.spawn(move || {
                            let mut x = 0x9e37_79b9_u64 ^ th as u64;
                            for _ in 0..rounds {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                // 40 keys for 24 entries: inserts keep hitting a full map.
                                let key = k((x % 40) as u32);
                                let _ = match (x >> 8) % 5 {
                                    0 | 1 => m.update(&key, &x.to_ne_bytes(), (x >> 16) % 3, th),
                                    2 => m.delete_from(&key, th),
                                    3 => m.delete(&key),
                                    _ => m.update_user(&key, &vec![7; 8 * m.slots()], BPF_ANY),
                                };
                                let _ = m.lookup(&key, th);
                            }
                        });
                    }
                });
                assert_every_element_accounted(HashOnly::of(&m).0);
                assert!(m.entries().len() <= 24);
            }
        }
    }

    #[test]
    fn contains_value_excludes_keys_and_padding() {
        let m = hash_map(4, 12, 4);
        m.update(&k(5), &[5; 12], BPF_ANY, 0).unwrap();
        let v = m.lookup(&k(5), 0).unwrap().as_ptr() as usize;
        assert_eq!(v % 8, 0);
        assert!(m.contains_value(v, 12));
        assert!(m.contains_value(v + 4, 8));
        assert!(!m.contains_value(v + 8, 8), "straddles the padding");
        assert!(!m.contains_value(v + 12, 1));
        assert!(!m.contains_value(v - 1, 2));
        // The key bytes the program hashed live elsewhere and are never value bytes.
        let key_on_stack = k(5);
        assert!(!m.contains_value(key_on_stack.as_ptr() as usize, 4));
        let HashOnly(h) = HashOnly::of(&m);
        let key_addr = h.elems.base_addr() + 8;
        assert!(!m.contains_value(key_addr, 4), "a key in the element slab");
        assert!(!m.contains_value(h.elems.base_addr(), 8), "a link word");
    }

    /// Test access to the table behind a `Map`.
    struct HashOnly<'a>(&'a super::HashTable);

    impl<'a> HashOnly<'a> {
        fn of(m: &'a Map) -> Self {
            match &m.kind {
                crate::Kind::Hash(h) => HashOnly(h),
                _ => panic!("not a hash map"),
            }
        }
    }

    #[test]
    fn for_each_visits_every_key_once_and_lets_the_callback_delete() {
        for (t, vs) in [(map_type::HASH, 8), (map_type::HASH, 16), (map_type::PERCPU_HASH, 8)] {
            let m = Map::new(
                "fe",
                MapDef { map_type: t, key_size: 4, value_size: vs, max_entries: 64, map_flags: 0 },
                2,
            )
            .unwrap();
            for i in 0..50u32 {
                m.update(&k(i), &vec![i as u8; vs as usize], BPF_ANY, 1).unwrap();
            }
            let mut seen = BTreeSet::new();
            assert!(m.for_each_hash_entry(1, |key, value| {
                let i = u32::from_ne_bytes(key.try_into().unwrap());
                assert_eq!(Some(value), m.lookup(key, 1), "type {t}: key {i}'s value");
                assert!(seen.insert(i), "type {t}: key {i} twice");
                true
            }));
            assert_eq!(seen, (0..50).collect());
            // Stops when the callback says so.
            let mut n = 0;
            m.for_each_hash_entry(0, |_, _| {
                n += 1;
                n < 7
            });
            assert_eq!(n, 7);
            // Deleting the element being visited does not cut the walk short.
            let mut n = 0;
            m.for_each_hash_entry(0, |key, _| {
                m.delete(key).unwrap();
                n += 1;
                true
            });
            assert_eq!((n, m.entries().len()), (50, 0), "type {t}");
        }
        let array = Map::new(
            "a",
            MapDef { map_type: map_type::ARRAY, key_size: 4, value_size: 4, max_entries: 2, map_flags: 0 },
            1,
        )
        .unwrap();
        assert!(!array.for_each_hash_entry(0, |_, _| true));
    }

    #[test]
    fn next_key_walks_every_key_once() {
        let m = hash_map(8, 4, 64);
        assert_eq!(m.next_key(None), Err(OpError::NotFound), "empty");
        assert_eq!(m.next_key(Some(&[0; 8])), Err(OpError::NotFound), "empty, absent key");
        for i in 0..50u64 {
            m.update(&i.to_ne_bytes(), &[1; 4], BPF_ANY, 0).unwrap();
        }
        let mut seen = BTreeSet::new();
        let mut cur = m.next_key(None).unwrap();
        loop {
            assert!(seen.insert(cur.clone()), "key visited twice");
            match m.next_key(Some(&cur)) {
                Ok(next) => cur = next,
                Err(e) => {
                    assert_eq!(e, OpError::NotFound);
                    break;
                }
            }
        }
        assert_eq!(seen.len(), 50);
        // An absent key restarts from the first key.
        assert_eq!(m.next_key(Some(&999u64.to_ne_bytes())), m.next_key(None));
        assert_eq!(m.next_key(Some(&[0; 4])), Err(OpError::Invalid));
    }

    #[test]
    fn colliding_keys_share_buckets_correctly() {
        // One bucket: every key chains, so deletes from the middle and head are exercised.
        let m = hash_map(4, 4, 1);
        m.update(&k(1), &[1; 4], BPF_ANY, 0).unwrap();
        assert_eq!(m.update(&k(2), &[2; 4], BPF_ANY, 0), Err(OpError::TooBig));
        let m = hash_map(2, 2, 2); // two buckets, short keys
        for round in 0..5u8 {
            m.update(&[round, 0], &[round; 2], BPF_ANY, 0).unwrap();
            m.update(&[round, 1], &[round; 2], BPF_ANY, 1).unwrap();
            m.update(&[round, 0], &[round + 1; 2], BPF_EXIST, 1).unwrap();
            assert_eq!(m.lookup_user(&[round, 0]).unwrap(), [round + 1; 2]);
            assert_eq!(m.lookup_user(&[round, 1]).unwrap(), [round; 2]);
            m.delete(&[round, 0]).unwrap();
            m.delete(&[round, 1]).unwrap();
            assert!(m.entries().is_empty());
        }
    }

    #[test]
    fn per_cpu_slots_are_isolated() {
        let m = percpu(4, 4, 3);
        assert_eq!(m.slots(), 3);
        // A new element from a program: its slot gets the value, every other slot zeroes —
        // even when the element is reused after holding other values.
        m.update_user(&k(1), &[9; 12], BPF_ANY).unwrap();
        m.delete(&k(1)).unwrap();
        m.update(&k(2), &[1; 4], BPF_NOEXIST, 1).unwrap();
        assert_eq!(m.lookup_user(&k(2)).unwrap(), [[0; 4], [1; 4], [0; 4]].concat());
        // An existing element: only that slot changes.
        m.update(&k(2), &[2; 4], BPF_EXIST, 2).unwrap();
        assert_eq!(m.lookup_user(&k(2)).unwrap(), [[0; 4], [1; 4], [2; 4]].concat());
        let p0 = m.lookup(&k(2), 0).unwrap().as_ptr() as usize;
        let p2 = m.lookup(&k(2), 2).unwrap().as_ptr() as usize;
        assert!(p2.abs_diff(p0) >= 64);
        assert!(m.contains_value(p0, 4) && m.contains_value(p2, 4) && !m.contains_value(p2, 5));
        assert!(m.lookup(&k(2), 3).is_none());
        assert_eq!(m.update(&k(2), &[0; 4], BPF_ANY, 3), Err(OpError::Invalid));
        // Per-CPU maps reject BPF_F_LOCK like any unknown flag.
        assert_eq!(m.update(&k(2), &[0; 4], BPF_F_LOCK, 0), Err(OpError::Invalid));
        // Userspace: slots * value_size bytes, no rounding.
        assert_eq!(m.update_user(&k(3), &[0; 4], BPF_ANY), Err(OpError::Invalid));
        m.update_user(&k(3), &[[3; 4], [4; 4], [5; 4]].concat(), BPF_ANY).unwrap();
        let e = m.entries().into_iter().find(|e| e.key == k(3)).unwrap();
        assert_eq!(e.values, vec![vec![3; 4], vec![4; 4], vec![5; 4]]);
        // In place: the pointer stays the same across updates.
        let before = m.lookup(&k(3), 1).unwrap();
        m.update(&k(3), &[8; 4], BPF_ANY, 1).unwrap();
        assert_eq!(m.lookup(&k(3), 1).unwrap(), before);
    }

    /// Keys over 8 bytes: the differential that collided every pair of keys under the old
    /// per-word multiply-xorshift chain (flip bit 63 of the first word, and bits 63 and 34 of
    /// the second) must not collide them now, and related keys of a 5-tuple-like 13-byte key
    /// must spread over the buckets.
    #[test]
    fn long_keys_resist_seed_independent_collisions() {
        for key_size in [16u32, 13, 24] {
            let def =
                MapDef { map_type: map_type::HASH, key_size, value_size: 8, max_entries: 1024, map_flags: 0 };
            let m = Map::new("long", def, 1).unwrap();
            let crate::Kind::Hash(h) = &m.kind else { unreachable!() };
            let mut same = 0;
            for i in 0..256u64 {
                let mut a = vec![0u8; key_size as usize];
                a[..8].copy_from_slice(&(i * 0x0101_0101).to_ne_bytes());
                let mut b = a.clone();
                b[7] ^= 0x80; // bit 63 of word 0
                b[15.min(key_size as usize - 1)] ^= 0x80; // bit 63 of word 1 (or the key's last byte)
                b[12.min(key_size as usize - 1)] ^= 0x04; // bit 34 of word 1
                if h.hash(super::Probe::new(&a)) == h.hash(super::Probe::new(&b)) {
                    same += 1;
                }
            }
            assert!(same <= 2, "{key_size}-byte keys: {same} of 256 differential pairs collide");
            // Spread: 4096 keys counting in one byte of each word over 1024 buckets.
            let mut load = vec![0u32; 1024];
            for i in 0..4096u32 {
                let mut a = vec![0u8; key_size as usize];
                a[3] = i as u8;
                a[9] = (i >> 8) as u8;
                load[h.bucket_of(h.hash(super::Probe::new(&a)))] += 1;
            }
            // The fullest bucket of a good hash: 11-12 typically, 15 or more for about one map
            // in 50 (1,500 random seeds per key size: worst 19), so the bound leaves room for the
            // tail; the sharp check is the empty buckets, about 19 (1024 * e^-4) for a uniform
            // hash, and 768 or more for one that ignored either word.
            let worst = *load.iter().max().unwrap();
            let empty = load.iter().filter(|&&n| n == 0).count();
            assert!(worst <= 22, "{key_size}-byte keys: {worst} keys in one bucket of 1024 (mean 4)");
            assert!(empty <= 60, "{key_size}-byte keys: {empty} of 1024 buckets empty (about 19 expected)");
        }
    }

    #[test]
    fn zero_seed_hashes_deterministically() {
        let def = MapDef {
            map_type: map_type::HASH,
            key_size: 4,
            value_size: 4,
            max_entries: 8,
            map_flags: 1 << 6,
        };
        let a = Map::new("a", def, 1).unwrap();
        let b = Map::new("b", def, 1).unwrap();
        for i in 0..8 {
            a.update(&k(i), &[0; 4], BPF_ANY, 0).unwrap();
            b.update(&k(i), &[0; 4], BPF_ANY, 0).unwrap();
        }
        let keys = |m: &Map| m.entries().into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
    }

    /// `update_word` / `delete_word` (compiled code's entries) give exactly what `update` /
    /// `delete_from` give with the words' bytes, step by step and in the final contents, for
    /// every hash flavour and word size: inserts up to `E2BIG` (and LRU eviction), in-place
    /// updates, flag errors, out-of-range slots, deletes and misses. Bytes past `value_size` in
    /// the value word are ignored.
    #[test]
    fn word_entries_match_the_byte_forms() {
        let types = [map_type::HASH, map_type::PERCPU_HASH, map_type::LRU_HASH, map_type::LRU_PERCPU_HASH];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for t in types {
            for (ks, vs) in [(4u32, 8u32), (1, 1), (8, 2), (2, 4), (4, 3)] {
                let def = MapDef {
                    map_type: t,
                    key_size: ks,
                    value_size: vs,
                    max_entries: 6,
                    map_flags: crate::create_flags::ZERO_SEED,
                };
                let (bytes, words) = (Map::new("b", def, 2).unwrap(), Map::new("w", def, 2).unwrap());
                let key_mask = u64::MAX >> (64 - 8 * ks);
                for step in 0..400 {
                    let r = next();
                    let key = ((r >> 8) % 10) & key_mask;
                    let slot = (r >> 16) as usize % 3;
                    let kb = &key.to_ne_bytes()[..ks as usize];
                    if r % 4 == 0 {
                        let (a, b) = (bytes.delete_from(kb, slot), words.delete_word(key, slot));
                        assert_eq!(a, b, "type {t} key {ks} value {vs}, step {step}: delete {key}");
                        continue;
                    }
                    let value = next();
                    let flags =
                        [BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK, 7][(r >> 24) as usize % 6];
                    let vb = &value.to_ne_bytes()[..vs as usize];
                    let (a, b) =
                        (bytes.update(kb, vb, flags, slot), words.update_word(key, value, flags, slot));
                    assert_eq!(a, b, "type {t} key {ks} value {vs}, step {step}: update {key} flags {flags}");
                }
                let sorted = |m: &Map| {
                    let mut e: Vec<_> = m.entries().into_iter().map(|e| (e.key, e.values)).collect();
                    e.sort();
                    e
                };
                assert_eq!(sorted(&bytes), sorted(&words), "type {t} key {ks} value {vs}");
            }
        }
        // Maps the word entries do not serve.
        assert_eq!(hash_map(12, 8, 4).update_word(1, 1, BPF_ANY, 0), Err(OpError::Invalid));
        assert_eq!(hash_map(4, 12, 4).update_word(1, 1, BPF_ANY, 0), Err(OpError::Invalid));
        assert_eq!(hash_map(12, 8, 4).delete_word(1, 0), Err(OpError::Invalid));
    }

    fn lru(map_type: u32, max_entries: u32, map_flags: u32) -> Map {
        let def = MapDef { map_type, key_size: 4, value_size: 8, max_entries, map_flags };
        Map::new("lru", def, 2).unwrap()
    }

    #[test]
    fn lru_definition_checks() {
        for t in [map_type::LRU_HASH, map_type::LRU_PERCPU_HASH] {
            let err = create(t, 4, 8, 4, map_flags::NO_PREALLOC).unwrap_err();
            assert!(matches!(err, MapError::NotSupported { .. }), "{err}");
            assert_eq!(err.errno(), 524);
            assert!(create(t, 4, 8, 4, 1 << 1).is_ok(), "BPF_F_NO_COMMON_LRU");
            assert!(matches!(create(t, 4, 8, 0, 0), Err(MapError::InvalidDefinition { .. })));
        }
        assert_eq!(create(map_type::LRU_PERCPU_HASH, 4, 8, 4, 0).unwrap().slots(), 2);
        assert!(create(map_type::LRU_PERCPU_HASH, 4, 8, 4, 0).unwrap().is_per_cpu());
    }

    #[test]
    fn lru_evicts_when_full_and_spares_referenced_keys() {
        let m = lru(map_type::LRU_HASH, 4, 0);
        for i in 0..4 {
            m.update(&k(i), &u64::from(i).to_ne_bytes(), BPF_NOEXIST, 0).unwrap();
        }
        // A program looked key 0 up: it is referenced and survives the next evictions.
        assert!(m.lookup(&k(0), 0).is_some());
        for i in 4..7 {
            m.update(&k(i), &u64::from(i).to_ne_bytes(), BPF_ANY, 0).unwrap();
            assert!(m.lookup(&k(i), 0).is_some(), "the key just inserted is present");
            assert_eq!(m.entries().len(), 4, "never more than max_entries");
        }
        assert_eq!(m.lookup_user(&k(0)).unwrap(), 0u64.to_ne_bytes(), "referenced key evicted");
        // Replacing keeps working on a full map, and flags are checked as for hash maps.
        m.update(&k(6), &[9; 8], BPF_EXIST, 0).unwrap();
        assert_eq!(m.lookup_user(&k(6)).unwrap(), [9; 8]);
        assert_eq!(m.update(&k(6), &[9; 8], BPF_NOEXIST, 0), Err(OpError::Exists));
        assert_eq!(m.update(&k(99), &[9; 8], BPF_EXIST, 0), Err(OpError::NotFound));
        assert_eq!(m.update(&k(6), &[9; 8], BPF_F_LOCK, 0), Err(OpError::Invalid));
        m.delete(&k(6)).unwrap();
        assert_eq!(m.delete(&k(6)), Err(OpError::NotFound));
        assert!(m.entries().len() <= 3);
    }

    #[test]
    fn lru_percpu_updates_in_place_and_evicts() {
        let m = lru(map_type::LRU_PERCPU_HASH, 2, 0);
        m.update(&k(1), &[1; 8], BPF_ANY, 1).unwrap();
        let p = m.lookup(&k(1), 1).unwrap();
        m.update(&k(1), &[2; 8], BPF_EXIST, 1).unwrap();
        assert_eq!(m.lookup(&k(1), 1).unwrap(), p, "in place");
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [[0; 8], [2; 8]].concat());
        m.update_user(&k(2), &[3; 16], BPF_ANY).unwrap();
        m.update_user(&k(3), &[4; 16], BPF_ANY).unwrap();
        assert_eq!(m.entries().len(), 2);
        assert_eq!(m.lookup_user(&k(3)).unwrap(), [4; 16]);
    }

    #[test]
    fn lru_user_lookups_do_not_reference() {
        // Userspace lookups (the kernel's `lookup_elem_sys_only`) leave the reference bit alone:
        // with no program lookups, the clock evicts in insertion order from a fresh map.
        let m = lru(map_type::LRU_HASH, 2, 0);
        m.update_user(&k(1), &[1; 8], BPF_ANY).unwrap();
        m.update_user(&k(2), &[2; 8], BPF_ANY).unwrap();
        m.lookup_user(&k(1)).unwrap();
        m.update_user(&k(3), &[3; 8], BPF_ANY).unwrap();
        let keys: BTreeSet<_> = m.entries().into_iter().map(|e| e.key).collect();
        assert!(keys.contains(k(3).as_slice()) && keys.len() == 2);
    }
}
