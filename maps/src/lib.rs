//! The map store: eBPF maps with the kernel's semantics, shared by every engine and worker.
//!
//! A [`Map`] is created from the [`MapDef`] a program's ELF declares and then used from two sides:
//! programs (through the `bpf_map_*_elem` helpers, on the packet path: no allocation, no syscalls,
//! no formatting, errors as negative errno) and userspace (the `bpf()` syscall's semantics: copies
//! in and out, `BPF_MAP_GET_NEXT_KEY`, dumps). Supported today: `HASH`, `ARRAY`, `PERCPU_HASH` and
//! `PERCPU_ARRAY`, each with the kernel's (6.x `kernel/bpf/arraymap.c`, `hashtab.c`) flag rules,
//! errno values and preallocation. Other kinds (LRU, LPM trie, prog array, ring buffer, queue and
//! stack, devmap, xskmap) slot in as further variants of the internal kind enum.
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
mod hash;
#[expect(unsafe_code, reason = "the one place that turns a fallible zeroed allocation into atomics")]
mod slab;
mod values;

use std::ptr::NonNull;

use array::ArrayMap;
use hash::HashTable;

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
        let per_cpu = is_per_cpu_type(def.map_type);
        let kind = match def.map_type {
            map_type::ARRAY
            | map_type::PERCPU_ARRAY
            | map_type::HASH
            | map_type::PERCPU_HASH
            | map_type::LRU_HASH
            | map_type::LRU_PERCPU_HASH => {
                if per_cpu && slots == 0 {
                    return Err(MapError::InvalidDefinition {
                        name: name.to_owned(),
                        reason: "per-CPU maps need at least one value slot",
                    });
                }
                if matches!(def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY) {
                    Kind::Array(ArrayMap::new(name, &def, per_cpu, slots)?)
                } else {
                    Kind::Hash(HashTable::new(name, &def, per_cpu, slots)?)
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
        }
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
        match &self.kind {
            Kind::Array(a) => a.delete(key),
            Kind::Hash(h) => h.delete(key),
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
            Kind::Hash(h) => h.lookup_user(key),
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
            Kind::Hash(h) => h.next_key(key),
        }
    }

    /// Every entry: for arrays every index (key = the `u32` index in memory order), for hash maps
    /// every present key, in iteration order; `values` has one value per slot for per-CPU maps.
    pub fn entries(&self) -> Vec<Entry> {
        match &self.kind {
            Kind::Array(a) => a.entries(),
            Kind::Hash(h) => h.entries(),
        }
    }

    /// Whether `[addr, addr + len)` lies entirely inside the value bytes of one value of this map
    /// (any slot; for hash maps any element, live or deleted, and never key or link bytes). O(1).
    #[inline]
    pub fn contains_value(&self, addr: usize, len: usize) -> bool {
        match &self.kind {
            Kind::Array(a) => a.contains_value(addr, len),
            Kind::Hash(h) => h.contains_value(addr, len),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
        MapDef { map_type, key_size, value_size, max_entries, map_flags: 0 }
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
