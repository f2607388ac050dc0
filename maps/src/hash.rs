//! `BPF_MAP_TYPE_HASH`, `BPF_MAP_TYPE_PERCPU_HASH` and their LRU flavours `LRU_HASH` and
//! `LRU_PERCPU_HASH` (kernel `kernel/bpf/hashtab.c`, the default preallocated flavour).
//!
//! `BPF_F_NO_PREALLOC` is accepted for plain and per-CPU hash maps and changes nothing: they stay
//! preallocated, which a program or userspace cannot tell apart except by memory use (the kernel
//! then allocates on insert and frees after an RCU grace period; here no element is ever freed
//! before the map, so no reclamation scheme is needed). LRU maps refuse it with `ENOTSUPP`, as the
//! kernel does. LRU eviction is described at [`Lru`]; `BPF_F_NO_COMMON_LRU` is accepted and the
//! common LRU used anyway (the kernel would split `max_entries` between per-CPU lists, which only
//! makes it evict earlier).
//!
//! # Layout
//!
//! All memory is allocated at creation from `max_entries`:
//! - `buckets`: `roundup_pow_of_two(max_entries)` heads, each with its own writer lock;
//! - `elems`: a slab of elements, each `1 + round_up(key_size, 8) / 8` words: a link word
//!   (`hash << 32 | next`) then the zero-padded key;
//! - `values`: a [`Values`] store indexed by element (slot-major for per-CPU maps), so value bytes
//!   never sit next to key or link bytes and `contains_value` is pure arithmetic;
//! - a free list of `max_entries` elements and, for plain hash maps, one spare element per slot
//!   plus one for userspace (the kernel's per-CPU `extra_elems`).
//!
//! An update of an existing key in a plain hash map fills a spare element with the new key and
//! value, links it at the head of the bucket, unlinks the old element and keeps that as the spare:
//! a program holding the old pointer keeps seeing the old value, as in the kernel, and a full map
//! can still replace its keys. (If the slot's spare is in use by a concurrent update on the same
//! slot the value is overwritten in place instead.) Per-CPU hash maps update in place, as the
//! kernel does. Deleted elements go back to the free list with their values untouched; a later
//! insert may reuse them.
//!
//! # Concurrency
//!
//! Writers (update, delete) take the bucket's lock: a test-and-test-and-set spinlock that yields
//! the thread after a while, since a userspace lock holder can be preempted. Writers on different
//! buckets never contend, except on the free list, a lock-free Treiber stack whose head carries a
//! generation tag against ABA.
//!
//! Lookups take no lock. They walk the chain with acquire loads, as the kernel's RCU readers walk
//! its `hlist_nulls` lists: every chain ends in a "nulls" marker naming its bucket, elements are
//! only ever inserted at a head, and an unlinked element keeps its `next` link until it is reused.
//! An element reused while a reader stands on it is then either re-inserted at the head of some
//! chain (the reader ends on that chain's marker: if it is another bucket's, the reader restarts;
//! if it is its own bucket's, the reader has walked the whole chain from its head) or still free
//! (its stale link leads on). A walk that takes more steps than there are elements also restarts,
//! and a lookup that keeps restarting falls back to the bucket lock, so it always terminates.
//! Like the kernel's, a lock-free lookup racing with a delete and reuse of the very element it
//! matched may return that reused element: preallocated maps reuse elements immediately.
//!
//! The memory is never freed before the map, so no reclamation scheme (RCU, epochs) is needed.
//!
//! # Hashing
//!
//! Keys are read as zero-padded native-endian words (one word for keys up to 8 bytes, two up to
//! 16) and mixed with a multiply-xorshift per word and the murmur3 finaliser, seeded per map
//! (zero with `BPF_F_ZERO_SEED`, as the kernel). Comparison is word by word, after the 32-bit hash.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::create_flags::{self as f, access_ok};
use crate::slab::{Mem, Slab, pad_word};
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
    #[inline]
    fn new(key: &'a [u8]) -> Probe<'a> {
        match key.len() {
            0..=8 => Probe::One(pad_word(key)),
            9..=16 => Probe::Two(pad_word(&key[..8]), pad_word(&key[8..])),
            _ => Probe::Long(key),
        }
    }
}

/// One bucket's writer lock. Its chain head (an element index or a nulls marker) is word `b` of
/// the `heads` slab, so a shared-memory reader can walk the chains.
#[derive(Debug)]
struct Bucket {
    lock: AtomicBool,
}

impl Bucket {
    fn lock(&self) -> BucketGuard<'_> {
        let mut spins = 0u32;
        while self.lock.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.lock.load(Ordering::Relaxed) {
                if spins < 256 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    // The holder may have been preempted: let it run.
                    std::thread::yield_now();
                }
            }
        }
        BucketGuard { bucket: self }
    }
}

/// Holds a bucket's lock; unlocks on drop.
struct BucketGuard<'a> {
    bucket: &'a Bucket,
}

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.bucket.lock.store(false, Ordering::Release);
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
    seed: u64,
    /// Elements in the slabs (`max_entries` plus the spares).
    capacity: usize,
    buckets: Box<[Bucket]>,
    heads: Slab,
    elems: Slab,
    values: Values,
    /// Free list: `tag << 32 | first element`, and each free element's successor.
    free_head: AtomicU64,
    free_next: Box<[AtomicU32]>,
    /// Spare elements for replacing updates (plain maps only): one per slot, the last for userspace.
    spares: Box<[Spare]>,
    /// The eviction state of `LRU_HASH` / `LRU_PERCPU_HASH` maps.
    lru: Option<Lru>,
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
        // BPF_F_NO_PREALLOC is accepted and ignored: preallocated maps have the same semantics
        // for everything a program or userspace can observe through this API.
        let n_buckets = def.max_entries.next_power_of_two();
        // Plain maps keep one value slot but still get a spare per worker slot (and one for
        // userspace), like the kernel's per-CPU extra elements.
        // LRU maps have none either: the kernel's `htab_has_extra_elems` is false for them, and
        // a replacing update takes a fresh element from the LRU (evicting if need be).
        let spares = if per_cpu || lru { 0 } else { slots.clamp(1, MAX_SPARES) + 1 };
        let slots = if per_cpu { slots } else { 1 };
        let capacity = def.max_entries as usize + spares;
        if capacity >= NULLS as usize {
            return Err(too_big("too many elements to index"));
        }
        let ewords = 1 + key_size.div_ceil(8);
        let elems = capacity
            .checked_mul(ewords)
            .and_then(|words| Slab::zeroed_in(words, mem))
            .ok_or_else(|| oom(capacity.saturating_mul(ewords * 8)))?;
        let values = Values::new_in(value_size, capacity, slots, mem).map_err(oom)?;
        let buckets = try_collect(n_buckets as usize, |_| Bucket { lock: AtomicBool::new(false) })
            .ok_or_else(|| oom(n_buckets as usize))?;
        let heads = Slab::zeroed_in(n_buckets as usize, mem).ok_or_else(|| oom(n_buckets as usize * 8))?;
        for b in 0..n_buckets as usize {
            heads.word(b).store(u64::from(NULLS | b as u32), Ordering::Relaxed);
        }
        let max = def.max_entries as usize;
        let free_next =
            try_collect(capacity, |e| AtomicU32::new(if e + 1 < max { e as u32 + 1 } else { NIL }))
                .ok_or_else(|| oom(capacity * 4))?;
        let spares = (max..capacity).map(|e| Spare(AtomicU32::new(e as u32))).collect();
        let seed = if def.map_flags & f::ZERO_SEED != 0 { 0 } else { RandomState::new().hash_one(name) };
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
            buckets,
            heads,
            elems,
            values,
            free_head: AtomicU64::new(0),
            free_next,
            spares,
            lru,
        })
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    #[inline]
    fn hash(&self, key: Probe<'_>) -> u32 {
        #[inline]
        fn mix(h: u64, word: u64) -> u64 {
            let h = (h ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^ h >> 29
        }
        let mut h = self.seed ^ (self.key_size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h = match key {
            Probe::One(a) => mix(h, a),
            Probe::Two(a, b) => mix(mix(h, a), b),
            Probe::Long(bytes) => bytes.chunks(8).fold(h, |h, chunk| mix(h, pad_word(chunk))),
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
        (hash & self.mask) as usize
    }

    /// Bucket `b`'s chain head word (an element index or a nulls marker, zero-extended).
    #[inline]
    fn head(&self, b: usize) -> &AtomicU64 {
        self.heads.word(b)
    }

    /// Where a shared-memory reader finds this table (all offsets in words of the region), or
    /// `None` when it is on the heap.
    pub(crate) fn shared_layout(&self) -> Option<crate::store::HashLayout> {
        let (values, region_words, vwords) = self.values.shared_layout()?;
        Some(crate::store::HashLayout {
            heads: self.heads.shared_offset()?,
            n_buckets: self.buckets.len(),
            elems: self.elems.shared_offset()?,
            ewords: self.ewords,
            capacity: self.capacity,
            values,
            region_words,
            vwords,
        })
    }

    /// Element `e`'s link word: `hash << 32 | next`.
    #[inline]
    fn link(&self, e: u32) -> &AtomicU64 {
        self.elems.word(e as usize * self.ewords)
    }

    #[inline]
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
    #[inline]
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
        let _guard = self.buckets[b].lock();
        self.find_locked(b, key, hash).map(|(_, e)| e)
    }

    /// Finds `key` in bucket `b`, whose lock the caller holds: `(predecessor, element)`.
    fn find_locked(&self, b: usize, key: Probe<'_>, hash: u32) -> Option<(Option<u32>, u32)> {
        let mut prev = None;
        let mut cur = self.head(b).load(Ordering::Acquire) as u32;
        while cur & NULLS == 0 {
            let link = self.link(cur).load(Ordering::Acquire);
            if (link >> 32) as u32 == hash && self.key_eq(cur, key) {
                return Some((prev, cur));
            }
            prev = Some(cur);
            cur = link as u32;
        }
        None
    }

    /// Unlinks `e`, which follows `prev` (or the head) in bucket `b`, whose lock the caller holds.
    /// `e` keeps its own link so lock-free readers standing on it walk on.
    fn unlink(&self, b: usize, prev: Option<u32>, e: u32) {
        let next = self.link(e).load(Ordering::Relaxed) as u32;
        match prev {
            None => self.head(b).store(u64::from(next), Ordering::Release),
            Some(p) => {
                let link = self.link(p).load(Ordering::Relaxed);
                self.link(p).store(link & !u64::from(u32::MAX) | u64::from(next), Ordering::Release);
            }
        }
        if let Some(lru) = &self.lru {
            lru.state[e as usize].store(0, Ordering::Relaxed);
        }
    }

    /// Writes `key` into element `e` (not yet published) and links it at the head of bucket `b`,
    /// whose lock the caller holds.
    fn publish(&self, b: usize, e: u32, key: &[u8], hash: u32) {
        self.elems.write(e as usize * self.ewords + 1, key);
        let head = self.head(b).load(Ordering::Relaxed) as u32;
        // Release here too: a lock-free reader still standing on `e` from its previous life
        // follows this link, and must then see the elements behind it fully written.
        self.link(e).store(u64::from(hash) << 32 | u64::from(head), Ordering::Release);
        self.head(b).store(u64::from(e), Ordering::Release);
        if let Some(lru) = &self.lru {
            lru.state[e as usize].store(IN_TABLE, Ordering::Relaxed);
        }
    }

    fn pop_free(&self) -> Option<u32> {
        let mut head = self.free_head.load(Ordering::Acquire);
        loop {
            let e = head as u32;
            if e == NIL {
                return None;
            }
            let next = self.free_next[e as usize].load(Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match self.free_head.compare_exchange_weak(
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

    fn push_free(&self, e: u32) {
        let mut head = self.free_head.load(Ordering::Relaxed);
        loop {
            self.free_next[e as usize].store(head as u32, Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match self.free_head.compare_exchange_weak(
                head,
                tag << 32 | u64::from(e),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }

    #[inline]
    pub(crate) fn lookup(&self, key: &[u8], slot: usize) -> Option<NonNull<u8>> {
        if key.len() != self.key_size {
            return None;
        }
        let slot = if self.per_cpu { (slot < self.slots).then_some(slot)? } else { 0 };
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
        let slot = if self.per_cpu { (slot < self.slots).then_some(slot)? } else { 0 };
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
            mask: self.mask,
            hash_init: self.seed ^ (self.key_size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
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
        let value_slot = match slot {
            Some(s) if self.per_cpu => Some(if s < self.slots { s } else { return Err(OpError::Invalid) }),
            Some(_) => Some(0),
            None => None,
        };
        let expected = if value_slot.is_none() { self.value_size * self.slots } else { self.value_size };
        if value.len() != expected {
            return Err(OpError::Invalid);
        }
        // Per-CPU maps reject BPF_F_LOCK with the unknown flags; plain maps just after, as no
        // value here has a spin lock.
        if flags & !BPF_F_LOCK > BPF_EXIST || flags & BPF_F_LOCK != 0 {
            return Err(OpError::Invalid);
        }
        let probe = Probe::new(key);
        let hash = self.hash(probe);
        let b = self.bucket_of(hash);
        if self.lru.is_some() {
            return self.update_lru(key, probe, hash, value, flags, value_slot);
        }
        let _guard = self.buckets[b].lock();
        let old = self.find_locked(b, probe, hash);
        match (old, flags) {
            (Some(_), BPF_NOEXIST) => return Err(OpError::Exists),
            (None, BPF_EXIST) => return Err(OpError::NotFound),
            _ => {}
        }
        let write_values = |e: u32, new: bool| self.write_values(e, value, value_slot, new);
        match old {
            None => {
                let e = self.pop_free().ok_or(OpError::TooBig)?;
                write_values(e, true);
                self.publish(b, e, key, hash);
            }
            Some((_, e)) if self.per_cpu => write_values(e, false),
            Some((prev, e)) => {
                let spare_ix = match slot {
                    Some(s) => s % (self.spares.len() - 1),
                    None => self.spares.len() - 1,
                };
                let spare = self.spares[spare_ix].0.swap(NIL, Ordering::Acquire);
                if spare == NIL {
                    // Another update on this slot holds the spare: overwrite in place.
                    write_values(e, false);
                } else {
                    write_values(spare, true);
                    self.publish(b, spare, key, hash);
                    // The new element is now the head, so the old one's predecessor is too.
                    self.unlink(b, Some(prev.unwrap_or(spare)), e);
                    self.spares[spare_ix].0.store(e, Ordering::Release);
                }
            }
        }
        Ok(())
    }

    /// Writes an update's value(s) into element `e`: one slot's (zeroing the others of a new
    /// per-CPU element) from a program, every slot's from userspace.
    fn write_values(&self, e: u32, value: &[u8], value_slot: Option<usize>, new: bool) {
        match value_slot {
            Some(s) if self.per_cpu => {
                self.values.write(e as usize, s, value);
                if new {
                    (0..self.slots).filter(|&o| o != s).for_each(|o| self.values.zero(e as usize, o));
                }
            }
            _ => {
                for (s, v) in value.chunks_exact(self.value_size).enumerate() {
                    self.values.write(e as usize, s, v);
                }
            }
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
        key: &[u8],
        probe: Probe<'_>,
        hash: u32,
        value: &[u8],
        flags: u64,
        value_slot: Option<usize>,
    ) -> Result<(), OpError> {
        let lru = self.lru.as_ref().expect("only called for LRU maps");
        let fresh = if self.per_cpu && flags == BPF_EXIST {
            None
        } else {
            Some(self.pop_free().or_else(|| self.evict(lru)).ok_or(OpError::NoMemory)?)
        };
        let b = self.bucket_of(hash);
        let guard = self.buckets[b].lock();
        let old = self.find_locked(b, probe, hash);
        let checked = match (old, flags) {
            (Some(_), BPF_NOEXIST) => Err(OpError::Exists),
            (None, BPF_EXIST) => Err(OpError::NotFound),
            _ => Ok(()),
        };
        let mut unused = None;
        match (checked, old, fresh) {
            (Err(e), _, fresh) => {
                drop(guard);
                if let Some(f) = fresh {
                    self.push_free(f);
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
                self.publish(b, f, key, hash);
                if let Some((prev, e)) = old {
                    lru.touch(f);
                    self.unlink(b, Some(prev.unwrap_or(f)), e);
                    unused = Some(e);
                }
            }
            (Ok(()), _, None) => unreachable!("only per-CPU BPF_EXIST updates take no element"),
        }
        drop(guard);
        if let Some(e) = unused {
            self.push_free(e);
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
            let b = self.bucket_of(hash);
            let _guard = self.buckets[b].lock();
            // Under the lock, the element is in this bucket's chain exactly if it is linked here.
            let mut prev = None;
            let mut cur = self.head(b).load(Ordering::Acquire) as u32;
            while cur & NULLS == 0 && cur != e {
                prev = Some(cur);
                cur = self.link(cur).load(Ordering::Acquire) as u32;
            }
            if cur == e {
                self.unlink(b, prev, e);
                return Some(e);
            }
        }
        None
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), OpError> {
        if key.len() != self.key_size {
            return Err(OpError::Invalid);
        }
        let key = Probe::new(key);
        let hash = self.hash(key);
        let b = self.bucket_of(hash);
        let guard = self.buckets[b].lock();
        let (prev, e) = self.find_locked(b, key, hash).ok_or(OpError::NotFound)?;
        self.unlink(b, prev, e);
        drop(guard);
        self.push_free(e);
        Ok(())
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
        let b = self.bucket_of(hash);
        let _guard = self.buckets[b].lock();
        let (_, e) = self.find_locked(b, key, hash).ok_or(OpError::NotFound)?;
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
        for (b, bucket) in self.buckets.iter().enumerate().skip(from) {
            let _guard = bucket.lock();
            let head = self.head(b).load(Ordering::Acquire) as u32;
            if head & NULLS == 0 {
                return Ok(self.read_key(head));
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
            let _guard = self.buckets[b].lock();
            let Some((_, e)) = self.find_locked(b, key, hash) else {
                drop(_guard);
                return self.first_key_from(0);
            };
            let next = self.link(e).load(Ordering::Acquire) as u32;
            if next & NULLS == 0 {
                return Ok(self.read_key(next));
            }
        }
        self.first_key_from(b + 1)
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (b, bucket) in self.buckets.iter().enumerate() {
            let _guard = bucket.lock();
            let mut cur = self.head(b).load(Ordering::Acquire) as u32;
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
                let b = (hash & w.mask) as usize;
                assert_eq!(h.head(b).as_ptr() as usize, w.heads + 8 * b);
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
        let m = hash_map(4, 8, 4);
        m.update(&k(1), &[1; 8], BPF_ANY, 0).unwrap();
        let old = m.lookup(&k(1), 0).unwrap().as_ptr() as usize;
        // A replacing update moves the key to another element; the old pointer keeps the old value.
        m.update(&k(1), &[2; 8], BPF_ANY, 0).unwrap();
        let new = m.lookup(&k(1), 0).unwrap().as_ptr() as usize;
        assert_ne!(old, new);
        assert!(m.contains_value(old, 8) && m.contains_value(new, 8));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [2; 8]);
        m.delete(&k(1)).unwrap();
        assert!(m.contains_value(new, 8), "deleted elements' values still count");
    }

    #[test]
    fn plain_maps_get_a_spare_per_slot_and_one_for_userspace() {
        let def =
            MapDef { map_type: map_type::HASH, key_size: 4, value_size: 8, max_entries: 2, map_flags: 0 };
        let m = Map::new("h", def, 4).unwrap();
        let HashOnly(h) = HashOnly::of(&m);
        assert_eq!((h.spares.len(), h.capacity), (5, 7));
        // Every slot replaces through its own spare: each replacement moves the key.
        m.update(&k(1), &[0; 8], BPF_ANY, 0).unwrap();
        for slot in 0..6 {
            let before = m.lookup(&k(1), slot).unwrap();
            m.update(&k(1), &[slot as u8; 8], BPF_ANY, slot).unwrap();
            assert_ne!(m.lookup(&k(1), slot).unwrap(), before, "slot {slot}");
        }
        let before = m.lookup(&k(1), 0).unwrap();
        m.update_user(&k(1), &[9; 8], BPF_ANY).unwrap();
        assert_ne!(m.lookup(&k(1), 0).unwrap(), before);
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [9; 8]);
        // Plain maps ignore `slots`, however absurd.
        let m = Map::new("h", def, usize::MAX).unwrap();
        m.update(&k(1), &[1; 8], BPF_ANY, usize::MAX).unwrap();
        m.update(&k(1), &[2; 8], BPF_ANY, usize::MAX).unwrap();
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [2; 8]);
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
