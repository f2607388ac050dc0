//! A map store: the maps of one dataplane, optionally laid out in a named shared-memory region
//! that another process (the control commands) can map read-only and dump while the dataplane
//! runs, without stopping or even signalling it.
//!
//! # Region layout (version 1, all native-endian 64-bit words)
//!
//! | words | contents |
//! |---|---|
//! | 0 | magic `DPMAPS01` |
//! | 1 | version (low 32 bits), table capacity (high 32) |
//! | 2 | maps in the table, published (release) after each entry is complete |
//! | 3 | region size in words |
//! | 8.. | the map table: [`MAX_MAPS`] entries of 16 words |
//! | after | map storage, bump-allocated in cache-line-aligned pieces |
//!
//! A table entry: the name (32 bytes, NUL-padded); `map_type | key_size << 32`;
//! `value_size | max_entries << 32`; `map_flags | slots << 32`; the layout kind (0: not in the
//! region, 1: array, 2: hash); then for arrays the values offset, words per slot region and words
//! per value; for hash maps additionally the bucket heads offset, bucket count (with the words
//! from one bucket's head word to the next in its high 32 bits), element slab offset, words per
//! element and element count. Offsets are in words from the region start. The hash structures
//! are those `hash.rs` documents: a chain head word per bucket (element index, or
//! `1 << 31 | bucket` at the end, in the low 32 bits; the high bits are the writers' lock), elements of a link word (`hash << 32 | next`) then the
//! zero-padded key, values slot-major.
//!
//! Arrays and hash maps (plain, per-CPU, LRU) are laid out in the region; other kinds live on the
//! heap and appear in the table with their definition only.
//!
//! A reader's dump is not a snapshot: it reads while writers write, as `bpftool map dump` does
//! against the kernel; a key being replaced at that moment may be missed or seen twice (the
//! reader drops repeats), and a value may be mid-update (8 bytes at a time).
//!
//! ```no_run
//! use maps::store::MapStore;
//! use maps::{MapDef, map_type};
//!
//! let (store, huge_pages) = MapStore::create_shared("dataplane-maps", 64 << 20)?;
//! if !huge_pages {
//!     eprintln!("warning: no huge pages reserved, the map store uses 4 KiB pages");
//! }
//! let def = MapDef { map_type: map_type::ARRAY, key_size: 4, value_size: 8, max_entries: 4, map_flags: 0 };
//! let counters = store.create_map("counters", def, 1)?;
//! counters.update_user(&1u32.to_ne_bytes(), &7u64.to_ne_bytes(), 0).unwrap();
//!
//! // In another process:
//! let view = MapStore::open_shared("dataplane-maps")?;
//! let entries = view.entries("counters").unwrap();
//! assert_eq!(entries[1].values[0], 7u64.to_ne_bytes());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::shm::Region;
use crate::slab::{LINE_WORDS, Mem, unpad_word};
use crate::{Entry, Map, MapDef, MapError};

/// Maps a shared region's table can list.
pub const MAX_MAPS: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"DPMAPS01");
const VERSION: u32 = 1;
const TABLE: usize = 8;
const ENTRY_WORDS: usize = 16;
const DATA: usize = TABLE + MAX_MAPS * ENTRY_WORDS;
const NAME_BYTES: usize = 32;
const NULLS: u32 = 1 << 31;

/// What can go wrong creating or opening a shared store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} of shared map store {name} failed")]
    Io {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name} is not a map store (bad magic)")]
    BadMagic { name: String },
    #[error("map store {name} has layout version {found}, this reader knows {VERSION}")]
    Version { name: String, found: u32 },
}

/// Where a hash table lives in the region (offsets in words).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HashLayout {
    pub(crate) heads: usize,
    pub(crate) n_buckets: usize,
    /// Words from one bucket's head word to the next.
    pub(crate) head_words: usize,
    pub(crate) elems: usize,
    pub(crate) ewords: usize,
    pub(crate) capacity: usize,
    pub(crate) values: usize,
    pub(crate) region_words: usize,
    pub(crate) vwords: usize,
}

/// Where a map's storage lives.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layout {
    Private,
    Array { values: usize, region_words: usize, vwords: usize },
    Hash(HashLayout),
}

/// The bump allocator of a shared region.
#[derive(Debug)]
pub(crate) struct Arena {
    region: Arc<Region>,
    next: Mutex<usize>,
}

impl Arena {
    /// `words` zeroed words, cache-line aligned: `(region, first word)`.
    pub(crate) fn alloc(&self, words: usize) -> Option<(Arc<Region>, usize)> {
        let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let start = next.next_multiple_of(LINE_WORDS);
        let end = start.checked_add(words)?;
        if end > self.region.words().len() {
            return None;
        }
        *next = end;
        Some((self.region.clone(), start))
    }
}

/// The maps of one dataplane.
#[derive(Debug, Default)]
pub struct MapStore {
    arena: Option<Arc<Arena>>,
    maps: Mutex<Vec<Arc<Map>>>,
}

impl MapStore {
    /// A store on the heap, private to this process.
    #[must_use]
    pub fn new() -> MapStore {
        MapStore::default()
    }

    /// A store in a new shared region called `name` (a `/dev/shm` object, or a `/dev/hugepages`
    /// file) of `bytes` bytes, replacing a stale region of that name; the name is removed when
    /// the store and every map created in it are dropped. The flag is `true` when the region got huge pages: `false` means
    /// none are reserved and 4 KiB pages are used, which the caller should warn about.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the region cannot be created or mapped.
    pub fn create_shared(name: &str, bytes: usize) -> Result<(MapStore, bool), StoreError> {
        let io = |op| move |source| StoreError::Io { op, name: name.to_owned(), source };
        let region = Region::create(name, bytes.max(DATA * 8 + 4096)).map_err(io("create"))?;
        let words = region.words();
        words[0].store(MAGIC, Ordering::Relaxed);
        words[1].store(u64::from(VERSION) | (MAX_MAPS as u64) << 32, Ordering::Relaxed);
        words[3].store(words.len() as u64, Ordering::Relaxed);
        words[2].store(0, Ordering::Release);
        let huge = region.huge();
        let arena = Arena { region: Arc::new(region), next: Mutex::new(DATA) };
        Ok((MapStore { arena: Some(Arc::new(arena)), maps: Mutex::default() }, huge))
    }

    /// Creates a map in this store (see [`Map::new`]); in a shared store its array or hash
    /// storage goes in the region and the map is listed in the region's table.
    ///
    /// # Errors
    ///
    /// As [`Map::new`]; [`MapError::OutOfMemory`] when the region is full, and
    /// [`MapError::TooBig`] when its table already lists [`MAX_MAPS`] maps.
    pub fn create_map(&self, name: &str, def: MapDef, slots: usize) -> Result<Arc<Map>, MapError> {
        let mut maps = self.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(arena) = &self.arena else {
            let map = Arc::new(Map::new(name, def, slots)?);
            maps.push(map.clone());
            return Ok(map);
        };
        let words = arena.region.words();
        let n = words[2].load(Ordering::Relaxed) as usize;
        if n >= MAX_MAPS {
            return Err(MapError::TooBig { name: name.to_owned(), reason: "the shared map table is full" });
        }
        let map = Arc::new(Map::create(name, def, slots, None, &Mem::Shared(arena.clone()))?);
        let e = &words[TABLE + n * ENTRY_WORDS..TABLE + (n + 1) * ENTRY_WORDS];
        let mut name_bytes = [0u8; NAME_BYTES];
        for (d, s) in name_bytes.iter_mut().zip(name.bytes().take(NAME_BYTES - 1)) {
            *d = s;
        }
        for (w, chunk) in e[..4].iter().zip(name_bytes.chunks(8)) {
            w.store(u64::from_ne_bytes(chunk.try_into().expect("8-byte chunks")), Ordering::Relaxed);
        }
        let pair = |a: u32, b: u64| u64::from(a) | b << 32;
        e[4].store(pair(def.map_type, u64::from(def.key_size)), Ordering::Relaxed);
        e[5].store(pair(def.value_size, u64::from(def.max_entries)), Ordering::Relaxed);
        e[6].store(pair(def.map_flags, map.slots() as u64), Ordering::Relaxed);
        let fields: [usize; 9] = match map.shared_layout() {
            Layout::Private => [0; 9],
            Layout::Array { values, region_words, vwords } => {
                [1, values, region_words, vwords, 0, 0, 0, 0, 0]
            }
            Layout::Hash(h) => {
                // The bucket count's high half holds the head stride (0 read as 1, as written
                // by stores from before padded heads).
                let buckets = h.n_buckets | h.head_words << 32;
                [2, h.values, h.region_words, h.vwords, h.heads, buckets, h.elems, h.ewords, h.capacity]
            }
        };
        for (w, v) in e[7..].iter().zip(fields) {
            w.store(v as u64, Ordering::Relaxed);
        }
        words[2].store(n as u64 + 1, Ordering::Release);
        maps.push(map.clone());
        Ok(map)
    }

    /// The maps, in creation order.
    pub fn maps(&self) -> Vec<Arc<Map>> {
        self.maps.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The map called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<Map>> {
        self.maps().into_iter().find(|m| m.name() == name)
    }

    /// Maps shared store `name` read-only, for dumps from another process.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when there is no such region; [`StoreError::BadMagic`] /
    /// [`StoreError::Version`] when it is not a store this code can read.
    pub fn open_shared(name: &str) -> Result<SharedView, StoreError> {
        let region = Region::open(name).map_err(|source| StoreError::Io {
            op: "open",
            name: name.to_owned(),
            source,
        })?;
        let words = region.words();
        if words[0].load(Ordering::Relaxed) != MAGIC || words.len() < DATA {
            return Err(StoreError::BadMagic { name: name.to_owned() });
        }
        let version = words[1].load(Ordering::Relaxed) as u32;
        if version != VERSION {
            return Err(StoreError::Version { name: name.to_owned(), found: version });
        }
        Ok(SharedView { region })
    }
}

/// One map as a shared region's table lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMapInfo {
    pub name: String,
    pub def: MapDef,
    pub slots: usize,
    /// Whether its contents are in the region (arrays and hash maps) and so readable here.
    pub readable: bool,
}

/// A read-only view of another process's shared map store.
#[derive(Debug)]
pub struct SharedView {
    region: Region,
}

impl SharedView {
    fn entry(&self, i: usize) -> (SharedMapInfo, [usize; 9]) {
        let words = self.region.words();
        let e = &words[TABLE + i * ENTRY_WORDS..TABLE + (i + 1) * ENTRY_WORDS];
        let mut name = Vec::with_capacity(NAME_BYTES);
        for w in &e[..4] {
            name.extend_from_slice(&w.load(Ordering::Relaxed).to_ne_bytes());
        }
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        let lo = |w: &AtomicU64| w.load(Ordering::Relaxed) as u32;
        let hi = |w: &AtomicU64| (w.load(Ordering::Relaxed) >> 32) as u32;
        let def = MapDef {
            map_type: lo(&e[4]),
            key_size: hi(&e[4]),
            value_size: lo(&e[5]),
            max_entries: hi(&e[5]),
            map_flags: lo(&e[6]),
        };
        let mut fields = [0usize; 9];
        for (f, w) in fields.iter_mut().zip(&e[7..]) {
            *f = w.load(Ordering::Relaxed) as usize;
        }
        let info = SharedMapInfo {
            name: String::from_utf8_lossy(&name[..end]).into_owned(),
            def,
            slots: hi(&e[6]) as usize,
            readable: fields[0] != 0,
        };
        (info, fields)
    }

    fn count(&self) -> usize {
        (self.region.words()[2].load(Ordering::Acquire) as usize).min(MAX_MAPS)
    }

    /// The maps the table lists.
    pub fn maps(&self) -> Vec<SharedMapInfo> {
        (0..self.count()).map(|i| self.entry(i).0).collect()
    }

    /// Reads `len` bytes from word `at`, `None` when out of the region.
    fn read(&self, at: usize, len: usize) -> Option<Vec<u8>> {
        let words = self.region.words().get(at..at.checked_add(len.div_ceil(8))?)?;
        let mut out = vec![0u8; len];
        for (chunk, w) in out.chunks_mut(8).zip(words) {
            unpad_word(w.load(Ordering::Relaxed), chunk);
        }
        Some(out)
    }

    /// The entries of map `name` as [`Map::entries`] lists them; `None` when there is no such
    /// map, or its contents are not in the region. Bounds come from the table and are checked
    /// against the region, so a corrupt table gives `None`, never a crash.
    pub fn entries(&self, name: &str) -> Option<Vec<Entry>> {
        let (info, f) = (0..self.count()).map(|i| self.entry(i)).find(|(m, _)| m.name == name)?;
        let (ks, vs) = (info.def.key_size as usize, info.def.value_size as usize);
        let slots = info.slots.max(1);
        let [kind, values, region_words, vwords, heads, buckets, elems, ewords, capacity] = f;
        let (n_buckets, head_words) = (buckets & 0xffff_ffff, (buckets >> 32).max(1));
        let value = |elem: usize| -> Option<Vec<Vec<u8>>> {
            (0..slots).map(|s| self.read(values + s * region_words + elem * vwords, vs)).collect()
        };
        let mut out = Vec::new();
        match kind {
            1 => {
                for i in 0..info.def.max_entries as usize {
                    out.push(Entry { key: (i as u32).to_ne_bytes().to_vec(), values: value(i)? });
                }
            }
            2 => {
                let words = self.region.words();
                let mut seen = BTreeSet::new();
                for b in 0..n_buckets {
                    let mut cur =
                        words.get(heads + b.checked_mul(head_words)?)?.load(Ordering::Acquire) as u32;
                    let mut steps = 0;
                    while cur & NULLS == 0 && (cur as usize) < capacity && steps <= capacity {
                        let at = cur as usize * ewords;
                        let link = words.get(elems + at)?.load(Ordering::Acquire);
                        let key = self.read(elems + at + 1, ks)?;
                        if seen.insert(key.clone()) {
                            out.push(Entry { key, values: value(cur as usize)? });
                        }
                        cur = link as u32;
                        steps += 1;
                    }
                }
            }
            _ => return None,
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BPF_ANY, map_type};

    fn unique(tag: &str) -> String {
        format!("maps-test-{tag}-{}", std::process::id())
    }

    #[test]
    #[cfg_attr(miri, ignore = "shm_open and mmap are foreign calls")]
    fn shared_store_round_trip() {
        let name = unique("rt");
        let (store, _huge) = MapStore::create_shared(&name, 1 << 20).unwrap();
        let d = |t, k, v, n| MapDef { map_type: t, key_size: k, value_size: v, max_entries: n, map_flags: 0 };
        let arr = store.create_map("arr", d(map_type::ARRAY, 4, 8, 3), 1).unwrap();
        let h = store.create_map("flows", d(map_type::HASH, 6, 4, 16), 2).unwrap();
        let pc = store.create_map("pc", d(map_type::PERCPU_HASH, 4, 4, 4), 3).unwrap();
        let q = store.create_map("q", d(map_type::QUEUE, 0, 4, 4), 1).unwrap();
        arr.update_user(&2u32.to_ne_bytes(), &9u64.to_ne_bytes(), BPF_ANY).unwrap();
        for i in 0..10u8 {
            h.update(&[i; 6], &[i; 4], BPF_ANY, 0).unwrap();
        }
        h.update(&[3; 6], &[33; 4], BPF_ANY, 1).unwrap(); // a replacing update moves the key
        h.delete(&[4; 6]).unwrap();
        pc.update(&1u32.to_ne_bytes(), &[7; 4], BPF_ANY, 2).unwrap();
        q.push(&[1; 4], BPF_ANY).unwrap();
        assert!(arr.array_base().is_some());

        let view = MapStore::open_shared(&name).unwrap();
        let names: Vec<_> = view.maps().into_iter().map(|m| (m.name, m.readable)).collect();
        assert_eq!(
            names,
            [("arr".into(), true), ("flows".into(), true), ("pc".into(), true), ("q".into(), false)]
        );
        assert_eq!(view.entries("arr").unwrap(), arr.entries());
        let sorted = |mut v: Vec<Entry>| {
            v.sort();
            v
        };
        assert_eq!(sorted(view.entries("flows").unwrap()), sorted(h.entries()));
        assert_eq!(sorted(view.entries("pc").unwrap()), sorted(pc.entries()));
        assert!(view.entries("q").is_none());
        assert!(view.entries("nope").is_none());
        // Writes after opening are visible: it is the same memory.
        arr.update_user(&0u32.to_ne_bytes(), &5u64.to_ne_bytes(), BPF_ANY).unwrap();
        assert_eq!(view.entries("arr").unwrap()[0].values[0], 5u64.to_ne_bytes());
        drop(store);
        assert!(view.entries("arr").is_some(), "the maps keep the region alive");
        drop((arr, h, pc, q));
        assert!(MapStore::open_shared(&name).is_err(), "the creator removes the name");
        assert_eq!(
            view.entries("arr").unwrap()[0].values[0],
            5u64.to_ne_bytes(),
            "a reader keeps its mapping"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore = "shm_open and mmap are foreign calls")]
    fn full_region_and_bad_names() {
        let name = unique("full");
        let (store, _) = MapStore::create_shared(&name, 0).unwrap();
        let big = MapDef {
            map_type: map_type::ARRAY,
            key_size: 4,
            value_size: 8,
            max_entries: 1 << 20,
            map_flags: 0,
        };
        assert!(matches!(store.create_map("big", big, 1), Err(MapError::OutOfMemory { .. })));
        assert!(MapStore::create_shared("a/b", 4096).is_err());
        assert!(MapStore::open_shared(&unique("missing")).is_err());
        let heap = MapStore::new();
        let m = heap.create_map("m", MapDef { max_entries: 2, ..big }, 1).unwrap();
        assert!(std::ptr::eq(&*heap.get("m").unwrap(), &*m));
    }
}
