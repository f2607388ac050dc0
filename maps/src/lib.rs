//! The map store: eBPF maps with the kernel's semantics, shared by every engine and worker.
//!
//! (Skeleton: the definitions below are the contract other crates build on; the store itself is
//! being written.)

#![deny(unsafe_code)]

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
