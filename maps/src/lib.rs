//! The map store: eBPF maps with the kernel's semantics, shared by every engine and worker.
//!
//! A [`Map`] is created from the [`MapDef`] a program's ELF declares and then used from two sides:
//! programs (through the `bpf_map_*_elem` helpers, on the packet path: no allocation, no syscalls,
//! no formatting, errors as negative errno) and userspace (the `bpf()` syscall's semantics: copies
//! in and out, `BPF_MAP_GET_NEXT_KEY`, dumps). Every type an XDP or tracing program uses is here,
//! each with the kernel's (6.x `kernel/bpf/*.c`) flag rules, errno values and preallocation:
//!
//! | types | module | program-side calls beyond lookup/update/delete |
//! |---|---|---|
//! | `ARRAY`, `PERCPU_ARRAY` | `array` | — |
//! | `HASH`, `PERCPU_HASH`, `LRU_HASH`, `LRU_PERCPU_HASH` | `hash` | — |
//! | `LPM_TRIE` | `lpm` | — |
//! | `QUEUE`, `STACK` | `queue` | [`Map::push`], [`Map::pop`], [`Map::peek`] |
//! | `RINGBUF` | `ringbuf` | [`Map::ringbuf_reserve`], [`Map::ringbuf_submit`], [`Map::ringbuf_discard`], [`Map::ringbuf_output`]; userspace [`Map::ringbuf_consume`] |
//! | `PERF_EVENT_ARRAY` | `slots` | [`Map::perf_output`]; userspace [`Map::perf_open`], [`Map::perf_consume`] |
//! | `PROG_ARRAY` | `slots` | [`Map::prog_id`] for `bpf_tail_call` (at most [`MAX_TAIL_CALL_CNT`]) |
//! | `DEVMAP`, `DEVMAP_HASH`, `XSKMAP` | `slots`, `hash` | [`Map::redirect_target`] for `bpf_redirect_map` |
//! | `ARRAY_OF_MAPS`, `HASH_OF_MAPS` | `slots`, `hash` | [`Map::inner_map`]; userspace [`Map::set_inner_map`] ([`Map::with_inner`] creates them) |
//!
//! The program-side calls take and return plain values, never allocate or format, and report
//! failure as [`OpError`] (whose [`OpError::to_ret`] is the helper's `r0`), so an `extern "C"`
//! trampoline is a few lines. [`store::MapStore`] groups a dataplane's maps and can lay them out
//! in named shared memory for other processes to read; [`typed`] gives Rust code typed handles.
//!
//! Per-CPU maps have `slots` value slots, one per worker; a worker passes its slot index to the
//! program-side calls. Value memory is preallocated at creation, 8-byte aligned, never moved or
//! freed while the map lives (see `slab`), so the pointers [`Map::lookup`] hands to programs stay
//! valid memory even after the element is deleted, as with the kernel's preallocated maps.
//!
//! ```
//! use maps::{BPF_ANY, BPF_NOEXIST, Map, MapDef, OpError, map_type};
//!
//! let def = MapDef { map_type: map_type::HASH, key_size: 4, value_size: 8, max_entries: 16, map_flags: 0 };
//! let map = Map::new("counts", def, 1)?;
//! map.update(&7u32.to_ne_bytes(), &1u64.to_ne_bytes(), BPF_ANY, 0).unwrap();
//! assert_eq!(map.update(&7u32.to_ne_bytes(), &2u64.to_ne_bytes(), BPF_NOEXIST, 0), Err(OpError::Exists));
//! assert_eq!(OpError::Exists.to_ret() as i64, -17);
//! assert_eq!(map.lookup_user(&7u32.to_ne_bytes()).unwrap(), 1u64.to_ne_bytes());
//! assert!(map.lookup(&7u32.to_ne_bytes(), 0).is_some());
//! # Ok::<(), maps::MapError>(())
//! ```

#![deny(unsafe_code)]

mod array;
#[expect(unsafe_code, reason = "the membarrier system call")]
mod grace;
mod hash;
mod lock;
mod lpm;
mod queue;
mod ringbuf;
#[expect(unsafe_code, reason = "shm_open, mmap and the view of a mapping as atomics")]
mod shm;
#[expect(unsafe_code, reason = "the one place that turns a fallible zeroed allocation into atomics")]
mod slab;
mod slots;
pub mod store;
#[expect(unsafe_code, reason = "`Pod` is an unsafe trait, and values are viewed as bytes")]
pub mod typed;
mod values;

use std::ptr::NonNull;
use std::sync::Arc;

use array::ArrayMap;
use hash::HashTable;
use lpm::LpmTrie;
use queue::QueueStack;
use ringbuf::RingBuf;
use slab::Mem;
use slots::{Inner, SlotArray};

pub use ringbuf::{
    BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, BPF_RINGBUF_HDR_SZ,
};
pub use slots::{BPF_F_CTXLEN_MASK, BPF_F_CURRENT_CPU, BPF_F_INDEX_MASK};

/// Most tail calls one program run may chain (`MAX_TAIL_CALL_CNT`); the 34th fails and the
/// program continues after the call, as in the kernel.
pub const MAX_TAIL_CALL_CNT: u32 = 33;

/// Kernel map type ids (`enum bpf_map_type` in `include/uapi/linux/bpf.h`).
pub mod map_type {
    pub const HASH: u32 = 1;
    pub const ARRAY: u32 = 2;
    pub const PROG_ARRAY: u32 = 3;
    pub const PERF_EVENT_ARRAY: u32 = 4;
    pub const PERCPU_HASH: u32 = 5;
    pub const PERCPU_ARRAY: u32 = 6;
    pub const LRU_HASH: u32 = 9;
    pub const LRU_PERCPU_HASH: u32 = 10;
    pub const LPM_TRIE: u32 = 11;
    pub const ARRAY_OF_MAPS: u32 = 12;
    pub const HASH_OF_MAPS: u32 = 13;
    pub const DEVMAP: u32 = 14;
    pub const XSKMAP: u32 = 17;
    pub const QUEUE: u32 = 22;
    pub const STACK: u32 = 23;
    pub const DEVMAP_HASH: u32 = 25;
    pub const RINGBUF: u32 = 27;
}

/// Map flags (`BPF_F_*` of `bpf_attr.map_flags`).
pub mod map_flags {
    pub const NO_PREALLOC: u32 = 1 << 0;
    pub const RDONLY: u32 = 1 << 3;
    pub const WRONLY: u32 = 1 << 4;
    pub const RDONLY_PROG: u32 = 1 << 7;
    pub const WRONLY_PROG: u32 = 1 << 8;
    pub const MMAPABLE: u32 = 1 << 10;
}

/// Where a hash map keeps its buckets, elements and values, and how it hashes, for code that
/// looks keys up without calling [`Map::lookup_word`] (the JIT inlines this walk). The map's
/// memory never moves or shrinks while the [`Map`] lives, so the addresses stay valid as long
/// as the caller holds the map.
///
/// A lookup of key word `k` (the key's bytes zero-padded to 8, native-endian), as
/// [`Map::lookup_word`] does it:
/// 1. `hash = HashWalk::hash(hash_init, k)` (32 bits), bucket `b = HashWalk::bucket(mask, hash)`
///    (the hash's top bits);
/// 2. `cur` = the low 32 bits of the `u64` at `heads + head_stride * b` (an acquire load; the
///    high bits hold the writers' lock);
/// 3. while bit 31 of `cur` is clear: `link` = the `u64` at `elems + cur * elem_bytes`
///    (acquire); if `link >> 32 == hash` and the `u64` at `elems + cur * elem_bytes + 8` is `k`,
///    the value is at `values + slot * slot_stride + cur * value_stride` (slot 0 for plain maps;
///    a per-CPU map has `slots` slots and no value for a slot beyond them); else
///    `cur = link as u32`;
/// 4. the chain ends: if `cur == (1 << 31 | b)` the key is absent. Any other end (the walk
///    crossed into another bucket through an element reused meanwhile), or more than `capacity`
///    steps, means a concurrent update moved things: ask [`Map::lookup_word`], which retries
///    and, if it must, locks the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashWalk {
    /// Address of bucket 0's head word.
    pub heads: usize,
    /// Bytes from one bucket's head word to the next: 64 (a cache line each) or 8 (packed, for
    /// maps too large for padding to pay).
    pub head_stride: usize,
    /// Buckets minus one (a power of two minus one).
    pub mask: u32,
    /// The map's hash multiplier: odd, drawn per map from a random seed
    /// ([`HashWalk::multiplier`]).
    pub hash_init: u64,
    /// Address of element 0: per element a link word (`hash << 32 | next`), then the key word.
    pub elems: usize,
    /// Bytes per element.
    pub elem_bytes: usize,
    /// Elements in the map (a walk longer than this must restart).
    pub capacity: usize,
    /// Address of element 0's value in slot 0.
    pub values: usize,
    /// Bytes between consecutive elements' values.
    pub value_stride: usize,
    /// Bytes between one slot's values and the next slot's.
    pub slot_stride: usize,
    /// Value slots (1 for plain hash maps).
    pub slots: usize,
    /// Whether the value depends on the slot.
    pub per_cpu: bool,
}

impl HashWalk {
    /// The golden-ratio multiplier (Fibonacci hashing): the hash multiplier of a map made with
    /// `BPF_F_ZERO_SEED`, and the step of [`HashWalk::multiplier`]'s generator.
    pub const MIX: u64 = 0x9e37_79b9_7f4a_7c15;
    /// Bit 31 of a link: the chain ends here; the low bits name the bucket.
    pub const NULLS: u32 = 1 << 31;

    /// The 32-bit hash of key word `k` for a map whose [`HashWalk::hash_init`] is `init`: the
    /// top half of `k * init` (mod 2^64) — multiply-shift, one multiply. Its top bits pick the
    /// bucket ([`HashWalk::bucket`]): for an odd multiplier drawn at random, two different keys
    /// share a bucket of `m` with probability at most `2/m` (Dietzfelbinger et al. 1997), so
    /// keys a packet controls cannot be chosen to collide without knowing the multiplier. (The
    /// low bits of a product depend only on the low bits of the key: they must never pick the
    /// bucket.)
    #[inline]
    #[must_use]
    pub fn hash(init: u64, k: u64) -> u32 {
        (k.wrapping_mul(init) >> 32) as u32
    }

    /// The bucket of `hash` in a table of `mask + 1` buckets (a power of two): the hash's top
    /// `log2(mask + 1)` bits.
    #[inline]
    #[must_use]
    pub fn bucket(mask: u32, hash: u32) -> usize {
        (u64::from(hash) >> mask.leading_zeros()) as usize
    }

    /// A hash multiplier drawn from `seed`: the first odd number of a splitmix64 sequence
    /// started at `seed` that spreads arithmetic progressions of keys evenly (see below).
    ///
    /// Multiply-shift sends keys `x, x + d, x + 2d, ...` to the top bits of `x·a + i·d·a`: the
    /// points `i·(d·a / 2^64)` mod 1, which are evenly spread exactly when `d·a / 2^64` has no
    /// large partial quotient in its continued fraction (the three-distance theorem) — golden
    /// ratio multipliers are the ideal, and a random one is sometimes bad: over 2000 random
    /// multipliers, the worst put 75 of the keys 0..4096 in one of 4096 buckets, and 195 of the
    /// keys `i << 8`. Keys that count up in one byte of a word (a counter, an IPv4 address's
    /// last octet read little-endian) are common in maps, so a multiplier is taken only when,
    /// for each stride `d` of 1, 2^8, ..., 2^40, `d·a / 2^64` has every partial quotient at
    /// most 32 while the convergents' denominators stay below 2^16. Over 2000 seeds the worst
    /// bucket then holds 6 of those keys (random keys: 10). About one random candidate in
    /// twenty passes: the bound on a pair's collision probability grows by that factor
    /// (at most `40/m`), and stays a matter of the secret multiplier.
    #[must_use]
    pub fn multiplier(seed: u64) -> u64 {
        let mut x = seed;
        loop {
            x = x.wrapping_add(Self::MIX);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let a = (z ^ (z >> 31)) | 1;
            if (0..=40).step_by(8).all(|s| spreads(a << s)) {
                return a;
            }
        }
    }
}

/// Whether `a / 2^64` has every partial quotient at most 32 while the convergents'
/// denominators are below 2^16 (see [`HashWalk::multiplier`]).
fn spreads(a: u64) -> bool {
    // Euclid on (2^64, a) gives the partial quotients of a / 2^64 = [0; q1, q2, ...].
    let (mut num, mut den) = (1u128 << 64, u128::from(a));
    let (mut prev, mut cur) = (0u128, 1u128);
    while den != 0 && cur < 1 << 16 {
        let q = num / den;
        if q > 32 {
            return false;
        }
        (num, den) = (den, num % den);
        (prev, cur) = (cur, q * cur + prev);
    }
    true
}

/// Where a `PROG_ARRAY` keeps its slots, for code that reads them without calling
/// [`Map::prog_id`] (the JIT's `bpf_tail_call`). The memory never moves while the [`Map`] lives.
///
/// Slot `i < max_entries` is filled when the byte at `present + i` is non-zero (an acquire
/// load); its program id is then the native-endian `u32` at `ids + i * id_stride`. A writer
/// clears the byte, writes the id, then sets the byte (release), so a reader that saw the byte
/// set reads either the id it guarded or one written later — always an id some update stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgSlots {
    /// Address of slot 0's presence byte.
    pub present: usize,
    /// Address of slot 0's id.
    pub ids: usize,
    /// Bytes between consecutive slots' ids.
    pub id_stride: usize,
    /// Slots in the array.
    pub max_entries: u32,
}

/// A map's definition, field for field as the kernel's `BPF_MAP_CREATE` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MapDef {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
}

/// One entry as a dump shows it: the key, and the value — one per slot for per-CPU maps.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub key: Vec<u8>,
    pub values: Vec<Vec<u8>>,
}

/// Update flag: create or replace.
pub const BPF_ANY: u64 = 0;
/// Update flag: create only; `EEXIST` when the key is present.
pub const BPF_NOEXIST: u64 = 1;
/// Update flag: replace only; `ENOENT` when the key is absent.
pub const BPF_EXIST: u64 = 2;
/// Update flag: take the value's `bpf_spin_lock`. No map here has one yet, so it is always `EINVAL`.
pub const BPF_F_LOCK: u64 = 4;

/// Why a map could not be created.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("unsupported map type {map_type}")]
    UnsupportedType { map_type: u32 },
    #[error("invalid definition of map {name}: {reason}")]
    InvalidDefinition { name: String, reason: &'static str },
    #[error("map {name} is too big: {reason}")]
    TooBig { name: String, reason: &'static str },
    #[error("out of memory creating map {name} ({bytes} bytes)")]
    OutOfMemory { name: String, bytes: usize },
    /// The kernel's `ENOTSUPP` (524): a combination it does not implement, e.g. an LRU map
    /// without preallocation.
    #[error("map {name} is not supported: {reason}")]
    NotSupported { name: String, reason: &'static str },
}

impl MapError {
    /// The errno the kernel's `BPF_MAP_CREATE` fails with for the same definition (positive).
    pub const fn errno(&self) -> i32 {
        match self {
            MapError::UnsupportedType { .. } | MapError::InvalidDefinition { .. } => 22,
            MapError::TooBig { .. } => 7,
            MapError::OutOfMemory { .. } => 12,
            MapError::NotSupported { .. } => 524,
        }
    }
}

/// A failed map operation, as the kernel's negative errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// `ENOENT`: no such key (or no next key).
    #[error("no such entry")]
    NotFound,
    /// `EEXIST`: `BPF_NOEXIST` on a present key.
    #[error("entry exists")]
    Exists,
    /// `E2BIG`: the map is full, or an array index is out of range.
    #[error("map full or index out of range")]
    TooBig,
    /// `EINVAL`: bad flags, bad sizes, or an operation the map type rejects.
    #[error("invalid argument")]
    Invalid,
    /// `ENOMEM`.
    #[error("out of memory")]
    NoMemory,
    /// `EOPNOTSUPP`: the map type has no such operation.
    #[error("operation not supported")]
    NotSupported,
    /// `ENOSPC`: a full LPM trie, a full perf buffer.
    #[error("no space left")]
    NoSpace,
    /// `EAGAIN`: a full ring buffer (`bpf_ringbuf_output`).
    #[error("try again")]
    Again,
    /// The kernel-internal `ENOTSUPP` (524) some map types return from the syscall, e.g. a lookup
    /// in a ring buffer.
    #[error("operation not supported by this map type")]
    Unsupported,
}

impl OpError {
    /// The errno, positive.
    pub const fn errno(self) -> i32 {
        match self {
            OpError::NotFound => 2,
            OpError::Exists => 17,
            OpError::TooBig => 7,
            OpError::Invalid => 22,
            OpError::NoMemory => 12,
            OpError::NotSupported => 95,
            OpError::NoSpace => 28,
            OpError::Again => 11,
            OpError::Unsupported => 524,
        }
    }

    /// What a helper returns in `r0`: the negative errno as a 64-bit register value.
    pub const fn to_ret(self) -> u64 {
        (-(self.errno() as i64)) as u64
    }
}

/// Kernel `BPF_F_*` map-creation flags this crate checks that `map_flags` does not name.
pub(crate) mod create_flags {
    pub use crate::map_flags::*;
    pub const NO_COMMON_LRU: u32 = 1 << 1;
    pub const NUMA_NODE: u32 = 1 << 2;
    pub const ZERO_SEED: u32 = 1 << 6;
    pub const PRESERVE_ELEMS: u32 = 1 << 11;
    pub const INNER_MAP: u32 = 1 << 12;
    pub const ACCESS_MASK: u32 = RDONLY | WRONLY | RDONLY_PROG | WRONLY_PROG;

    /// The kernel's `bpf_map_flags_access_ok`: not read-only and write-only at once, on either side.
    pub fn access_ok(flags: u32) -> bool {
        flags & (RDONLY | WRONLY) != (RDONLY | WRONLY)
            && flags & (RDONLY_PROG | WRONLY_PROG) != (RDONLY_PROG | WRONLY_PROG)
    }
}

/// The kernel's `PCPU_MIN_UNIT_SIZE`: the largest (rounded) per-CPU value.
pub(crate) const PCPU_MIN_UNIT_SIZE: usize = 32 << 10;

/// Whether maps of this type keep one value per slot.
const fn is_per_cpu_type(t: u32) -> bool {
    matches!(t, map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH)
}

/// The kinds of map; one variant per implementation, new kinds are new variants.
#[derive(Debug)]
enum Kind {
    /// `ARRAY` and `PERCPU_ARRAY`.
    Array(ArrayMap),
    /// `HASH`, `PERCPU_HASH`, `LRU_HASH` and `LRU_PERCPU_HASH`.
    Hash(HashTable),
    /// `LPM_TRIE`.
    Lpm(LpmTrie),
    /// `QUEUE` and `STACK`.
    Queue(QueueStack),
    /// `RINGBUF`.
    RingBuf(RingBuf),
    /// `PROG_ARRAY`, `DEVMAP`, `XSKMAP`, `ARRAY_OF_MAPS`, `PERF_EVENT_ARRAY`.
    Slots(SlotArray),
    /// `HASH_OF_MAPS`: a hash map whose values are inner-map ids.
    HashOfMaps(HashTable, Inner),
    /// `DEVMAP_HASH`: a hash map of `struct bpf_devmap_val`.
    DevHash(HashTable),
}

/// One eBPF map: its definition and its preallocated store. `Send + Sync`; see the crate docs.
#[derive(Debug)]
pub struct Map {
    name: String,
    def: MapDef,
    kind: Kind,
}

impl Map {
    /// Creates a map as `BPF_MAP_CREATE` would. `slots` is the number of per-CPU value slots
    /// (at least 1) for per-CPU maps; other maps ignore it.
    ///
    /// # Errors
    ///
    /// [`MapError::UnsupportedType`] for a type not implemented here; otherwise the error the
    /// kernel's `map_alloc_check` would give (see [`MapError::errno`]); [`MapError::OutOfMemory`]
    /// when the preallocation fails.
    pub fn new(name: &str, def: MapDef, slots: usize) -> Result<Map, MapError> {
        Self::create(name, def, slots, None, &Mem::Heap)
    }

    /// Creates a map of maps (`ARRAY_OF_MAPS`, `HASH_OF_MAPS`) whose inner maps must match
    /// `inner` as the kernel's `bpf_map_meta_equal` checks (type, key and value sizes, flags, and
    /// `max_entries` unless `inner` has `BPF_F_INNER_MAP`) — the definition of the map the kernel
    /// takes as `inner_map_fd`. Other types ignore `inner`.
    ///
    /// # Errors
    ///
    /// As [`Map::new`]; [`MapError::InvalidDefinition`] when `inner` is itself a map of maps or
    /// a program array.
    pub fn with_inner(name: &str, def: MapDef, slots: usize, inner: MapDef) -> Result<Map, MapError> {
        Self::create(name, def, slots, Some(inner), &Mem::Heap)
    }

    /// Creates a map whose array and hash storage comes from `mem` (the other kinds always live
    /// on the heap).
    pub(crate) fn create(
        name: &str,
        def: MapDef,
        slots: usize,
        inner: Option<MapDef>,
        mem: &Mem,
    ) -> Result<Map, MapError> {
        let per_cpu = is_per_cpu_type(def.map_type);
        if per_cpu && slots == 0 {
            return Err(MapError::InvalidDefinition {
                name: name.to_owned(),
                reason: "per-CPU maps need at least one value slot",
            });
        }
        let kind = match def.map_type {
            map_type::ARRAY | map_type::PERCPU_ARRAY => {
                Kind::Array(ArrayMap::new(name, &def, per_cpu, slots, mem)?)
            }
            map_type::HASH | map_type::PERCPU_HASH | map_type::LRU_HASH | map_type::LRU_PERCPU_HASH => {
                Kind::Hash(HashTable::new(name, &def, per_cpu, slots, mem)?)
            }
            map_type::LPM_TRIE => Kind::Lpm(LpmTrie::new(name, &def)?),
            map_type::QUEUE | map_type::STACK => {
                Kind::Queue(QueueStack::new(name, &def, def.map_type == map_type::STACK)?)
            }
            map_type::RINGBUF => Kind::RingBuf(RingBuf::new(name, &def)?),
            map_type::PROG_ARRAY
            | map_type::DEVMAP
            | map_type::XSKMAP
            | map_type::ARRAY_OF_MAPS
            | map_type::PERF_EVENT_ARRAY => Kind::Slots(SlotArray::new(name, &def, inner)?),
            map_type::HASH_OF_MAPS | map_type::DEVMAP_HASH => {
                let value_ok = if def.map_type == map_type::DEVMAP_HASH {
                    matches!(def.value_size, 4 | 8)
                } else {
                    def.value_size == 4
                };
                let hash_def = MapDef { map_type: map_type::HASH, ..def };
                if !value_ok || def.key_size != 4 && def.map_type == map_type::DEVMAP_HASH {
                    return Err(MapError::InvalidDefinition {
                        name: name.to_owned(),
                        reason: "key_size must be 4 for a devmap, value_size 4 (an id) or 4 or 8 (a devmap)",
                    });
                }
                if def.map_type == map_type::DEVMAP_HASH {
                    if def.map_flags & !(create_flags::NUMA_NODE | create_flags::ACCESS_MASK) != 0 {
                        return Err(MapError::InvalidDefinition {
                            name: name.to_owned(),
                            reason: "unknown map flags for a devmap",
                        });
                    }
                    Kind::DevHash(HashTable::new(name, &hash_def, false, 1, &Mem::Heap)?)
                } else {
                    let Some(tpl) = inner else {
                        return Err(MapError::InvalidDefinition {
                            name: name.to_owned(),
                            reason: "a map of maps needs an inner map template",
                        });
                    };
                    Kind::HashOfMaps(
                        HashTable::new(name, &hash_def, false, 1, &Mem::Heap)?,
                        Inner::new(name, tpl)?,
                    )
                }
            }
            other => return Err(MapError::UnsupportedType { map_type: other }),
        };
        Ok(Map { name: name.to_owned(), def, kind })
    }

    /// The name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The definition it was created with.
    pub fn def(&self) -> &MapDef {
        &self.def
    }

    /// Number of value slots: the `slots` given at creation for per-CPU maps, 1 for the others.
    pub fn slots(&self) -> usize {
        match &self.kind {
            Kind::Array(a) => a.slots(),
            Kind::Hash(h) => h.slots(),
            _ => 1,
        }
    }

    /// Whether values are per CPU slot.
    pub fn is_per_cpu(&self) -> bool {
        is_per_cpu_type(self.def.map_type)
    }

    /// `bpf_map_lookup_elem` from a program: a pointer to the value (slot `slot`'s for per-CPU
    /// maps; others ignore `slot`), `value_size` bytes, 8-byte aligned, valid memory for the map's
    /// whole lifetime. `None` when absent, or for a wrong-sized key or an out-of-range slot.
    #[inline]
    pub fn lookup(&self, key: &[u8], slot: usize) -> Option<NonNull<u8>> {
        match &self.kind {
            Kind::Array(a) => a.lookup(key, slot),
            Kind::Hash(h) => h.lookup(key, slot),
            Kind::Lpm(l) => l.lookup(key),
            Kind::Slots(s) => s.lookup(key),
            Kind::DevHash(h) => h.lookup(key, 0),
            Kind::Queue(_) | Kind::RingBuf(_) | Kind::HashOfMaps(..) => None,
        }
    }

    /// [`Map::lookup`] for hash maps (`HASH`, `PERCPU_HASH`, `LRU_HASH`, `LRU_PERCPU_HASH`)
    /// with keys of at most 8 bytes, the key given as one word: its bytes in memory order,
    /// zero-padded to 8 and read as a native-endian `u64` (for a 4-byte key, the `u32`
    /// zero-extended). A non-generic fast path for compiled code, which then needs no key slice:
    /// the same result as `lookup` with the key's bytes. `None` for other map types and longer
    /// keys (use [`Map::has_word_lookup`] to know which).
    #[inline]
    pub fn lookup_word(&self, key: u64, slot: usize) -> Option<NonNull<u8>> {
        match &self.kind {
            Kind::Hash(h) => h.lookup_word(key, slot),
            _ => None,
        }
    }

    /// The layout of a `HASH` or `PERCPU_HASH` map with keys of at most 8 bytes, for compiled
    /// code that walks the buckets itself instead of calling [`Map::lookup_word`]. `None` for
    /// every other map (LRU maps: a lookup also marks the element referenced).
    pub fn hash_walk(&self) -> Option<HashWalk> {
        match &self.kind {
            Kind::Hash(h) => h.walk(),
            _ => None,
        }
    }

    /// Whether [`Map::lookup_word`] serves this map: a hash map whose keys fit a word.
    pub fn has_word_lookup(&self) -> bool {
        matches!(&self.kind, Kind::Hash(_)) && self.def.key_size <= 8
    }

    /// [`Map::lookup`] for an `LPM_TRIE` whose key data (after the `u32` prefix length) is at
    /// most 8 bytes, the key given as its prefix length and its data as one word read most
    /// significant byte first: the data's bytes in memory order, zero-padded to 8, as
    /// `u64::from_be_bytes` reads them. A non-generic fast path for compiled code: the same
    /// result as `lookup` with the key's bytes. `None` for other maps (use
    /// [`Map::has_lpm_word_lookup`] to know which).
    #[inline]
    pub fn lookup_lpm_word(&self, prefixlen: u32, data: u64) -> Option<NonNull<u8>> {
        match &self.kind {
            Kind::Lpm(l) => l.lookup_word(prefixlen, data),
            _ => None,
        }
    }

    /// Whether [`Map::lookup_lpm_word`] serves this map: an LPM trie whose key data fits a word.
    pub fn has_lpm_word_lookup(&self) -> bool {
        matches!(&self.kind, Kind::Lpm(l) if l.has_word_lookup())
    }

    /// `bpf_map_update_elem` from a program. Per-CPU maps write only slot `slot`'s value; a new
    /// per-CPU hash element gets zeroes in every other slot.
    ///
    /// # Errors
    ///
    /// The kernel's: [`OpError::Invalid`] for unknown flags or `BPF_F_LOCK` (and wrong-sized
    /// arguments or an out-of-range slot), [`OpError::Exists`] / [`OpError::NotFound`] for
    /// `BPF_NOEXIST` / `BPF_EXIST`, [`OpError::TooBig`] for a full hash map or an array index
    /// out of range.
    #[inline]
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64, slot: usize) -> Result<(), OpError> {
        match &self.kind {
            Kind::Array(a) => a.update(key, value, flags, Some(slot)),
            Kind::Hash(h) => h.update(key, value, flags, Some(slot)),
            _ => self.update_other(key, value, flags),
        }
    }

    /// [`Map::update`] for a hash map whose keys and values are at most 8 bytes, the key and the
    /// value given as their zero-padded words (bytes in memory order, as `u64::from_ne_bytes`
    /// reads them padded with zeroes; value bytes past `value_size` are ignored): a non-generic
    /// fast path for compiled code, with the same results as `update` with those bytes. Serves
    /// hash maps (plain, per-CPU, LRU) whose keys and values fit a word.
    ///
    /// # Errors
    ///
    /// As [`Map::update`]; [`OpError::Invalid`] for a map it does not serve.
    #[inline]
    pub fn update_word(&self, key: u64, value: u64, flags: u64, slot: usize) -> Result<(), OpError> {
        match &self.kind {
            Kind::Hash(h) => h.update_word(key, value, flags, slot),
            _ => Err(OpError::Invalid),
        }
    }

    /// [`Map::delete_from`] for a hash map whose keys are at most 8 bytes, the key given as its
    /// zero-padded word (as [`Map::lookup_word`] takes it): the same results as `delete_from`
    /// with its bytes. Serves the maps [`Map::has_word_lookup`] names.
    ///
    /// # Errors
    ///
    /// As [`Map::delete`]; [`OpError::Invalid`] for a map it does not serve.
    #[inline]
    pub fn delete_word(&self, key: u64, slot: usize) -> Result<(), OpError> {
        match &self.kind {
            Kind::Hash(h) => h.delete_word(key, slot),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_map_delete_elem` (program or userspace: the semantics are the same).
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] for an absent hash key; [`OpError::Invalid`] for arrays (their
    /// elements cannot be deleted) and wrong-sized keys.
    #[inline]
    pub fn delete(&self, key: &[u8]) -> Result<(), OpError> {
        self.delete_in(key, None)
    }

    /// `bpf_map_delete_elem` from a program running in slot `slot`: the same result as
    /// [`Map::delete`]; a hash map puts the freed element on that slot's free list, where the
    /// slot's next insert finds it without touching another worker's cache lines.
    ///
    /// # Errors
    ///
    /// As [`Map::delete`].
    #[inline]
    pub fn delete_from(&self, key: &[u8], slot: usize) -> Result<(), OpError> {
        self.delete_in(key, Some(slot))
    }

    #[inline]
    fn delete_in(&self, key: &[u8], slot: Option<usize>) -> Result<(), OpError> {
        match &self.kind {
            Kind::Array(a) => a.delete(key),
            Kind::Hash(h) | Kind::HashOfMaps(h, _) | Kind::DevHash(h) => h.delete(key, slot),
            Kind::Lpm(l) => l.delete(key),
            Kind::Queue(_) => Err(OpError::Invalid),
            Kind::RingBuf(_) => Err(OpError::Unsupported),
            Kind::Slots(s) => s.delete(key),
        }
    }

    /// `BPF_MAP_LOOKUP_ELEM`: a copy of the value; for per-CPU maps `slots * value_size` bytes,
    /// slot 0 first, with no per-slot rounding.
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] when absent (arrays: index out of range); [`OpError::Invalid`] for a
    /// wrong-sized key.
    pub fn lookup_user(&self, key: &[u8]) -> Result<Vec<u8>, OpError> {
        match &self.kind {
            Kind::Array(a) => a.lookup_user(key),
            Kind::Hash(h) | Kind::HashOfMaps(h, _) | Kind::DevHash(h) => h.lookup_user(key),
            Kind::Lpm(l) => l.lookup_user(key),
            Kind::Queue(q) => {
                if !key.is_empty() {
                    return Err(OpError::Invalid);
                }
                let mut out = vec![0; self.def.value_size as usize];
                q.take(&mut out, false)?;
                Ok(out)
            }
            Kind::RingBuf(_) => Err(OpError::Unsupported),
            Kind::Slots(s) => s.lookup_user(key),
        }
    }

    /// `BPF_MAP_UPDATE_ELEM`: per-CPU maps take `slots * value_size` bytes, one value per slot.
    ///
    /// # Errors
    ///
    /// As [`Map::update`]; `BPF_F_LOCK` is rejected before anything else, as the syscall does.
    pub fn update_user(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), OpError> {
        if flags & BPF_F_LOCK != 0 {
            return Err(OpError::Invalid);
        }
        match &self.kind {
            Kind::Array(a) => a.update(key, value, flags, None),
            Kind::Hash(h) => h.update(key, value, flags, None),
            _ => self.update_other(key, value, flags),
        }
    }

    /// `BPF_MAP_GET_NEXT_KEY`: `None` gives the first key; so does a hash key that is not present;
    /// an array index out of range gives index 0, any other index its successor.
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] after the last key (or on an empty hash map); [`OpError::Invalid`]
    /// for a wrong-sized key.
    pub fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
        match &self.kind {
            Kind::Array(a) => a.next_key(key),
            Kind::Hash(h) | Kind::HashOfMaps(h, _) | Kind::DevHash(h) => h.next_key(key),
            Kind::Lpm(l) => l.next_key(key),
            Kind::Queue(_) => Err(OpError::Invalid),
            Kind::RingBuf(_) => Err(OpError::Unsupported),
            Kind::Slots(s) => s.next_key(key),
        }
    }

    /// Every entry: for arrays every index (key = the `u32` index in memory order), for hash maps
    /// every present key, in iteration order; `values` has one value per slot for per-CPU maps.
    pub fn entries(&self) -> Vec<Entry> {
        match &self.kind {
            Kind::Array(a) => a.entries(),
            Kind::Hash(h) | Kind::HashOfMaps(h, _) | Kind::DevHash(h) => h.entries(),
            Kind::Lpm(l) => l.entries(),
            Kind::Queue(q) => q.entries(),
            Kind::RingBuf(_) => Vec::new(),
            Kind::Slots(s) => s.entries(),
        }
    }

    /// `bpf_for_each_map_elem` on a hash map (`HASH`, `PERCPU_HASH` and the LRU flavours):
    /// calls `f(key, value)` for each key, `value` pointing at slot `slot`'s value (a plain
    /// map's only one), until `f` returns `false`. No lock is held while `f` runs, so it may
    /// update or delete in this map; keys changed meanwhile may be visited or not, as in the
    /// kernel. No allocation for keys of up to 64 bytes. Returns `false` (and calls nothing)
    /// for other map types.
    pub fn for_each_hash_entry(&self, slot: usize, f: impl FnMut(&[u8], NonNull<u8>) -> bool) -> bool {
        match &self.kind {
            Kind::Hash(h) => {
                h.for_each(slot, f);
                true
            }
            _ => false,
        }
    }

    /// Whether `[addr, addr + len)` lies entirely inside the value bytes of one value of this map
    /// (any slot; for hash maps any element, live or deleted, and never key or link bytes). O(1).
    #[inline]
    pub fn contains_value(&self, addr: usize, len: usize) -> bool {
        match &self.kind {
            Kind::Array(a) => a.contains_value(addr, len),
            Kind::Hash(h) | Kind::DevHash(h) => h.contains_value(addr, len),
            Kind::Lpm(l) => l.contains_value(addr, len),
            Kind::RingBuf(r) => r.contains(addr, len),
            Kind::Slots(s) => s.contains_value(addr, len),
            Kind::Queue(_) | Kind::HashOfMaps(..) => false,
        }
    }

    /// For `ARRAY` maps (not per-CPU): element 0's value; element `i` is at
    /// `base + i * round_up(value_size, 8)`. `None` for every other type.
    pub fn array_base(&self) -> Option<NonNull<u8>> {
        match &self.kind {
            Kind::Array(a) if !a.is_per_cpu() => Some(a.base()),
            _ => None,
        }
    }

    /// Where a shared-memory reader finds this map's storage, if it lives in a shared region.
    pub(crate) fn shared_layout(&self) -> store::Layout {
        match &self.kind {
            Kind::Array(a) => {
                a.shared_layout().map_or(store::Layout::Private, |(values, region_words, vwords)| {
                    store::Layout::Array { values, region_words, vwords }
                })
            }
            Kind::Hash(h) => h.shared_layout().map_or(store::Layout::Private, store::Layout::Hash),
            _ => store::Layout::Private,
        }
    }

    /// Update of the map types with their own rules (program side and userspace alike).
    fn update_other(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::Lpm(l) => l.update(key, value, flags),
            Kind::Queue(q) if key.is_empty() => q.push(value, flags),
            Kind::Queue(_) => Err(OpError::Invalid),
            Kind::RingBuf(_) => Err(OpError::Unsupported),
            Kind::Slots(s) if s.inner.is_some() => Err(OpError::Invalid),
            Kind::Slots(s) => s.update(key, value, flags),
            // Inner maps are put in with `set_inner_map`: there is no fd to pass in bytes.
            Kind::HashOfMaps(..) => Err(OpError::Invalid),
            Kind::DevHash(h) => {
                // __dev_map_hash_update_elem: no ENOENT for BPF_EXIST, ifindex 0 is invalid.
                if flags > BPF_EXIST || value.len() < 4 || value[..4] == [0; 4] {
                    return Err(OpError::Invalid);
                }
                let flags = if flags == BPF_EXIST { BPF_ANY } else { flags };
                h.update(key, value, flags, None)
            }
            Kind::Array(_) | Kind::Hash(_) => unreachable!("handled by the callers"),
        }
    }

    /// `bpf_map_push_elem` (queue, stack): `BPF_ANY`, or `BPF_EXIST` to overwrite the oldest
    /// value when full.
    ///
    /// # Errors
    ///
    /// [`OpError::TooBig`] when full without `BPF_EXIST`; [`OpError::Invalid`] for other flags,
    /// a wrong-sized value or another map type.
    #[inline]
    pub fn push(&self, value: &[u8], flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::Queue(q) => q.push(value, flags),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_map_pop_elem` (queue: oldest, stack: newest) into `out` (`value_size` bytes).
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] when empty; [`OpError::Invalid`] for a wrong-sized `out` or another
    /// map type.
    #[inline]
    pub fn pop(&self, out: &mut [u8]) -> Result<(), OpError> {
        match &self.kind {
            Kind::Queue(q) => q.take(out, true),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_map_peek_elem`: as [`Map::pop`] without removing.
    ///
    /// # Errors
    ///
    /// As [`Map::pop`].
    #[inline]
    pub fn peek(&self, out: &mut [u8]) -> Result<(), OpError> {
        match &self.kind {
            Kind::Queue(q) => q.take(out, false),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_ringbuf_reserve`: `size` writable bytes, 8-byte aligned, or `None` when the ring is
    /// full, the record too large, `flags` non-zero or the map no ring buffer.
    #[inline]
    pub fn ringbuf_reserve(&self, size: u64, flags: u64) -> Option<NonNull<u8>> {
        match &self.kind {
            Kind::RingBuf(r) if flags == 0 => r.reserve(size),
            _ => None,
        }
    }

    /// `bpf_ringbuf_submit` of a pointer [`Map::ringbuf_reserve`] returned; `flags` may carry
    /// [`BPF_RB_NO_WAKEUP`] / [`BPF_RB_FORCE_WAKEUP`].
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] when `sample` is no busy record of this ring (the helper returns
    /// nothing; the engine may ignore this).
    #[inline]
    pub fn ringbuf_submit(&self, sample: NonNull<u8>, flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::RingBuf(r) => r.commit(sample, flags, false),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_ringbuf_discard`: as [`Map::ringbuf_submit`], but the consumer skips the record.
    ///
    /// # Errors
    ///
    /// As [`Map::ringbuf_submit`].
    #[inline]
    pub fn ringbuf_discard(&self, sample: NonNull<u8>, flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::RingBuf(r) => r.commit(sample, flags, true),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_ringbuf_output`: one record holding a copy of `data`.
    ///
    /// # Errors
    ///
    /// [`OpError::Again`] when the ring has no room; [`OpError::Invalid`] for unknown flags or
    /// another map type.
    #[inline]
    pub fn ringbuf_output(&self, data: &[u8], flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::RingBuf(r) => r.output(data, flags),
            _ => Err(OpError::Invalid),
        }
    }

    /// The userspace consumer: calls `f` with each submitted record's data, in reservation order,
    /// up to the first record still busy; returns how many. Discarded records are skipped. One
    /// consumer runs at a time (others wait).
    pub fn ringbuf_consume(&self, f: impl FnMut(&[u8])) -> usize {
        match &self.kind {
            Kind::RingBuf(r) => r.consume(f),
            _ => 0,
        }
    }

    /// `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)`: bytes produced and not yet consumed; and the
    /// wakeups the kernel would have sent so far. `None` for other map types.
    pub fn ringbuf_status(&self) -> Option<(u64, u64)> {
        match &self.kind {
            Kind::RingBuf(r) => Some((r.avail(), r.wakeups())),
            _ => None,
        }
    }

    /// `bpf_ringbuf_query(map, flags)`; `None` for other map types.
    #[inline]
    pub fn ringbuf_query(&self, flags: u64) -> Option<u64> {
        match &self.kind {
            Kind::RingBuf(r) => Some(r.query(flags)),
            _ => None,
        }
    }

    /// `PERF_EVENT_ARRAY`: gives slot `index` an output buffer of `size` bytes (a power of two,
    /// at least 64) and fills the slot with `id` — what `perf_event_open` and storing the event's
    /// fd in the map do for the kernel's. A slot keeps its first buffer.
    ///
    /// # Errors
    ///
    /// [`OpError::TooBig`] for an index out of range, [`OpError::Invalid`] for a bad size or
    /// another map type, [`OpError::NoMemory`].
    pub fn perf_open(&self, index: u32, size: u64, id: u32) -> Result<(), OpError> {
        match &self.kind {
            Kind::Slots(s) => s.perf_open(&self.name, index, size, id),
            _ => Err(OpError::Invalid),
        }
    }

    /// `bpf_perf_event_output`: one sample of `data` then `ctx` (for XDP, the first
    /// `(flags & BPF_F_CTXLEN_MASK) >> 32` packet bytes, which the caller slices) into the buffer
    /// of slot `flags & BPF_F_INDEX_MASK`, or of `slot` for [`BPF_F_CURRENT_CPU`]. Samples here are
    /// the raw bytes (no `perf_event_header`), read back with [`Map::perf_consume`].
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] for unknown flags, [`OpError::TooBig`] for an index out of range,
    /// [`OpError::NotFound`] for a slot with no buffer, [`OpError::NoSpace`] when its buffer is
    /// full (the sample is lost, as the kernel's).
    #[inline]
    pub fn perf_output(&self, flags: u64, slot: usize, data: &[u8], ctx: &[u8]) -> Result<(), OpError> {
        match &self.kind {
            Kind::Slots(s) => s.perf_output(flags, slot, data, ctx),
            _ => Err(OpError::Invalid),
        }
    }

    /// Drains slot `index`'s perf samples in order; returns how many.
    pub fn perf_consume(&self, index: u32, f: impl FnMut(&[u8])) -> usize {
        match &self.kind {
            Kind::Slots(s) => s.perf_consume(index, f),
            _ => 0,
        }
    }

    /// `PROG_ARRAY`: the program id in slot `index`, for `bpf_tail_call` (which fails, and the
    /// program goes on, when this is `None`). Two loads, no lock.
    #[inline]
    pub fn prog_id(&self, index: u32) -> Option<u32> {
        match &self.kind {
            Kind::Slots(s) if self.def.map_type == map_type::PROG_ARRAY => s.id(index),
            _ => None,
        }
    }

    /// `PROG_ARRAY`: where its slots live, for compiled code that reads them inline
    /// ([`ProgSlots`]); `None` for other maps.
    pub fn prog_slots(&self) -> Option<ProgSlots> {
        match &self.kind {
            Kind::Slots(s) => s.prog_slots(),
            _ => None,
        }
    }

    /// `DEVMAP` / `DEVMAP_HASH`: the ifindex at `key`; `XSKMAP`: the socket id at `key` — what
    /// `bpf_redirect_map` redirects to. `None` when empty (the helper then returns its flags'
    /// low bits as the action).
    #[inline]
    pub fn redirect_target(&self, key: u32) -> Option<u32> {
        match &self.kind {
            Kind::Slots(s) if matches!(self.def.map_type, map_type::DEVMAP | map_type::XSKMAP) => s.id(key),
            Kind::DevHash(h) => {
                let mut v = [0u8; 4];
                h.read_value(&key.to_ne_bytes(), &mut v).then(|| u32::from_ne_bytes(v))
            }
            _ => None,
        }
    }

    /// `bpf_redirect_map(map, _, BPF_F_BROADCAST)`: calls `f` with every interface index the map
    /// holds — a DEVMAP's in key order, a DEVMAP_HASH's in bucket order — without allocating (the
    /// packet path broadcasts per frame). Other map types: no call.
    #[inline]
    pub fn for_each_redirect_target(&self, mut f: impl FnMut(u32)) {
        match &self.kind {
            Kind::Slots(s) if self.def.map_type == map_type::DEVMAP => {
                (0..self.def.max_entries).filter_map(|k| s.id(k)).for_each(f);
            }
            Kind::DevHash(h) => h.for_each_value_prefix(4, |v| {
                if let Ok(b) = <[u8; 4]>::try_from(v) {
                    f(u32::from_ne_bytes(b));
                }
            }),
            _ => {}
        }
    }

    /// Maps of maps: the inner map at `key` (`bpf_map_lookup_elem` on the outer map). Valid for
    /// as long as the outer map lives, whatever later updates do.
    #[inline]
    pub fn inner_map(&self, key: &[u8]) -> Option<&Map> {
        match &self.kind {
            Kind::Slots(s) => s.inner_map(u32::from_ne_bytes(key.try_into().ok()?)),
            Kind::HashOfMaps(h, inner) => {
                let mut v = [0u8; 4];
                h.read_value(key, &mut v).then(|| inner.arena.get(u32::from_ne_bytes(v)))?
            }
            _ => None,
        }
    }

    /// Maps of maps: puts `map` at `key` (`BPF_MAP_UPDATE_ELEM` with an inner map fd). The map
    /// must match the inner template given at creation. `ARRAY_OF_MAPS` takes only `BPF_ANY`;
    /// `HASH_OF_MAPS` the hash flags.
    ///
    /// # Errors
    ///
    /// [`OpError::Invalid`] for a mismatching map, bad flags or another map type; otherwise the
    /// errors of an array or hash update.
    pub fn set_inner_map(&self, key: &[u8], map: Arc<Map>, flags: u64) -> Result<(), OpError> {
        match &self.kind {
            Kind::Slots(s) => {
                let inner = s.inner.as_ref().ok_or(OpError::Invalid)?;
                if flags != BPF_ANY {
                    return Err(OpError::Invalid);
                }
                let id = inner.admit(map)?;
                s.update(key, &id.to_ne_bytes(), flags)
            }
            Kind::HashOfMaps(h, inner) => {
                let id = inner.admit(map)?;
                h.update(key, &id.to_ne_bytes(), flags, None)
            }
            _ => Err(OpError::Invalid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef { map_type, key_size, value_size, max_entries, map_flags: 0 }
    }

    #[test]
    fn lookup_word_matches_lookup() {
        let kinds =
            [(map_type::HASH, 4), (map_type::HASH, 8), (map_type::HASH, 2), (map_type::PERCPU_HASH, 4)];
        for (t, ks) in kinds {
            let m = Map::new("w", def(t, ks, 8, 64), 2).unwrap();
            assert!(m.has_word_lookup());
            for i in 0..40u64 {
                let key = &(i * 7).to_ne_bytes()[..ks as usize];
                m.update(key, &i.to_ne_bytes(), BPF_ANY, 1).unwrap();
            }
            for i in 0..100u64 {
                let key = &(i * 7).to_ne_bytes()[..ks as usize];
                let mut word = [0u8; 8];
                word[..key.len()].copy_from_slice(key);
                for slot in [0, 1, 2] {
                    let word = u64::from_ne_bytes(word);
                    assert_eq!(m.lookup_word(word, slot), m.lookup(key, slot), "{t} {ks} {i}");
                }
            }
        }
        let long = Map::new("l", def(map_type::HASH, 12, 4, 4), 1).unwrap();
        assert!(!long.has_word_lookup());
        assert_eq!(long.lookup_word(0, 0), None);
        let array = Map::new("a", def(map_type::ARRAY, 4, 4, 4), 1).unwrap();
        assert!(!array.has_word_lookup());
        assert_eq!(array.lookup_word(0, 0), None);
    }

    #[test]
    fn map_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Map>();
    }

    #[test]
    fn errno_values_and_helper_returns() {
        let all = [
            (OpError::NotFound, 2),
            (OpError::Exists, 17),
            (OpError::TooBig, 7),
            (OpError::Invalid, 22),
            (OpError::NoMemory, 12),
            (OpError::NotSupported, 95),
        ];
        for (e, errno) in all {
            assert_eq!(e.errno(), errno);
            assert_eq!(e.to_ret() as i64, -(errno as i64));
        }
        assert_eq!(OpError::NotFound.to_ret(), 0xffff_ffff_ffff_fffe);
    }

    #[test]
    fn unsupported_types() {
        for t in [0, 7, 8, 15, 16, 99] {
            let err = Map::new("m", def(t, 4, 4, 1), 1).unwrap_err();
            assert!(matches!(err, MapError::UnsupportedType { map_type } if map_type == t), "{err}");
            assert_eq!(err.errno(), 22);
        }
        assert_eq!(Map::new("m", def(77, 4, 4, 1), 1).unwrap_err().to_string(), "unsupported map type 77");
    }

    #[test]
    fn per_cpu_maps_need_a_slot() {
        for t in [map_type::PERCPU_ARRAY, map_type::PERCPU_HASH] {
            let err = Map::new("pc", def(t, 4, 4, 1), 0).unwrap_err();
            assert!(matches!(err, MapError::InvalidDefinition { .. }), "{err}");
        }
        // Other maps ignore slots, even 0.
        assert_eq!(Map::new("a", def(map_type::ARRAY, 4, 4, 1), 0).unwrap().slots(), 1);
        assert_eq!(Map::new("h", def(map_type::HASH, 4, 4, 1), 0).unwrap().slots(), 1);
    }

    #[test]
    fn accessors() {
        let d = def(map_type::PERCPU_HASH, 8, 4, 10);
        let m = Map::new("flows", d, 3).unwrap();
        assert_eq!((m.name(), *m.def(), m.slots(), m.is_per_cpu()), ("flows", d, 3, true));
        assert!(m.array_base().is_none());
        let a = Map::new("arr", def(map_type::ARRAY, 4, 4, 10), 3).unwrap();
        assert!(!a.is_per_cpu() && a.array_base().is_some());
        let pa = Map::new("parr", def(map_type::PERCPU_ARRAY, 4, 4, 10), 3).unwrap();
        assert!(pa.array_base().is_none());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri stops at an over-large allocation instead of returning null")]
    fn huge_maps_fail_cleanly() {
        // 2^32 values of 2 GiB: more than the address space, an error rather than an abort.
        let err = Map::new("huge", def(map_type::ARRAY, 4, i32::MAX as u32, u32::MAX), 1).unwrap_err();
        assert!(matches!(err, MapError::OutOfMemory { .. }), "{err}");
        assert_eq!(err.errno(), 12);
        let err = Map::new("huge", def(map_type::HASH, 4, (4 << 20) - 100, 1 << 30), 1).unwrap_err();
        assert!(matches!(err, MapError::OutOfMemory { .. }), "{err}");
        let err = Map::new("huge", def(map_type::HASH, 4, 8, 1 << 31), 1).unwrap_err();
        assert!(matches!(err, MapError::TooBig { .. }), "{err}");
    }

    #[test]
    fn user_update_rejects_lock_first() {
        let a = Map::new("a", def(map_type::ARRAY, 4, 4, 2), 1).unwrap();
        // The program path checks NOEXIST before LOCK, the syscall path LOCK first.
        assert_eq!(a.update(&0u32.to_ne_bytes(), &[0; 4], BPF_NOEXIST | BPF_F_LOCK, 0), Err(OpError::Exists));
        assert_eq!(
            a.update_user(&0u32.to_ne_bytes(), &[0; 4], BPF_NOEXIST | BPF_F_LOCK),
            Err(OpError::Invalid)
        );
    }
}
