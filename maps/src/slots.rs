//! Maps whose elements name other objects: `PROG_ARRAY` (program ids for `bpf_tail_call`),
//! `DEVMAP` (interfaces for `bpf_redirect_map`), `XSKMAP` (AF_XDP sockets), `ARRAY_OF_MAPS`
//! (inner maps) and `PERF_EVENT_ARRAY` (per-slot output buffers), after `kernel/bpf/arraymap.c`
//! (`fd_array_*`), `devmap.c`, `xskmap.c` and `map_in_map.c`.
//!
//! Each is an array of `max_entries` slots, each empty or holding one value: a `u32` id (program,
//! socket, inner map) or a `struct bpf_devmap_val`. Where the kernel takes a file descriptor in
//! `BPF_MAP_UPDATE_ELEM`, this store takes the id the embedding engine uses for the object; what
//! an id means (which program, which interface) is the engine's business. Values live in a
//! [`Values`] store and a per-slot presence byte is published with release ordering after the
//! value is written, so program-side reads (`prog_id`, `lookup`) are two loads and no lock.
//!
//! Inner maps are kept in an append-only [`InnerMaps`] arena for the outer map's lifetime, so the
//! `&Map` a program got from [`inner_map`](SlotArray::inner_map) stays valid however the slot is
//! updated; a map put in many times is kept once (the kernel frees a replaced inner map after an
//! RCU grace period — the memory cost here is one `Arc` per distinct inner map ever inserted).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::create_flags::{self as f, access_ok};
use crate::lock::SpinLock;
use crate::ringbuf::RingBuf;
use crate::values::Values;
use crate::{BPF_ANY, BPF_EXIST, BPF_NOEXIST, Entry, Map, MapDef, MapError, OpError, map_type};

/// `BPF_F_INDEX_MASK` / `BPF_F_CURRENT_CPU` of `bpf_perf_event_output`'s flags.
pub const BPF_F_INDEX_MASK: u64 = 0xffff_ffff;
pub const BPF_F_CURRENT_CPU: u64 = BPF_F_INDEX_MASK;
/// `BPF_F_CTXLEN_MASK`: bytes of the context (the packet, for XDP) to append to the sample.
pub const BPF_F_CTXLEN_MASK: u64 = 0xf_ffff << 32;

/// A chunk of the inner-map arena.
type Chunk = Box<[OnceLock<Arc<Map>>]>;

/// An append-only, lock-free-to-read arena of inner maps with stable addresses.
///
/// Chunk `c` holds `2^c` entries; entry `i` is in chunk `ilog2(i + 1)`. Appends serialize on a
/// mutex (control path); reads are two `OnceLock::get`s.
#[derive(Debug)]
pub(crate) struct InnerMaps {
    chunks: [OnceLock<Chunk>; 32],
    len: Mutex<u32>,
}

impl InnerMaps {
    fn new() -> InnerMaps {
        InnerMaps { chunks: std::array::from_fn(|_| OnceLock::new()), len: Mutex::new(0) }
    }

    fn locate(id: u32) -> (usize, usize) {
        let c = (id + 1).ilog2();
        (c as usize, (id + 1 - (1 << c)) as usize)
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<&Map> {
        let (c, o) = Self::locate(id);
        self.chunks.get(c)?.get()?.get(o)?.get().map(|m| &**m)
    }

    /// The id of `map`, adding it if it is not here yet.
    fn insert(&self, map: Arc<Map>) -> Result<u32, OpError> {
        let mut len = self.len.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in 0..*len {
            let (c, o) = Self::locate(id);
            if let Some(m) = self.chunks[c].get().and_then(|ch| ch[o].get())
                && Arc::ptr_eq(m, &map)
            {
                return Ok(id);
            }
        }
        let id = *len;
        if id == u32::MAX - 1 {
            return Err(OpError::NoMemory);
        }
        let (c, o) = Self::locate(id);
        let chunk = self.chunks[c].get_or_init(|| (0..1usize << c).map(|_| OnceLock::new()).collect());
        chunk[o].set(map).map_err(|_| OpError::Invalid)?;
        *len += 1;
        Ok(id)
    }
}

/// The kernel's `bpf_map_meta_equal`: an inner map fits the outer map's template.
fn meta_equal(template: &MapDef, inner: &MapDef) -> bool {
    template.map_type == inner.map_type
        && template.key_size == inner.key_size
        && template.value_size == inner.value_size
        && template.map_flags == inner.map_flags
        && (template.map_flags & f::INNER_MAP != 0 || template.max_entries == inner.max_entries)
}

/// Inner-map state of a map of maps: the template and the arena.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) template: MapDef,
    pub(crate) arena: InnerMaps,
}

impl Inner {
    /// Checks the inner template as `bpf_map_meta_alloc` does.
    pub(crate) fn new(name: &str, template: MapDef) -> Result<Inner, MapError> {
        if matches!(
            template.map_type,
            map_type::ARRAY_OF_MAPS | map_type::HASH_OF_MAPS | map_type::PROG_ARRAY
        ) {
            return Err(MapError::InvalidDefinition {
                name: name.to_owned(),
                reason: "inner maps cannot be maps of maps or program arrays",
            });
        }
        Ok(Inner { template, arena: InnerMaps::new() })
    }

    /// The arena id for `map`, after the template check (`EINVAL` on a mismatch).
    pub(crate) fn admit(&self, map: Arc<Map>) -> Result<u32, OpError> {
        if !meta_equal(&self.template, map.def()) {
            return Err(OpError::Invalid);
        }
        self.arena.insert(map)
    }
}

/// One slot array.
#[derive(Debug)]
pub(crate) struct SlotArray {
    map_type: u32,
    max_entries: u32,
    value_size: usize,
    present: Box<[AtomicU8]>,
    values: Values,
    /// Serializes writers so a slot's value and presence change together.
    lock: SpinLock,
    pub(crate) inner: Option<Inner>,
    perf: Option<Box<[OnceLock<RingBuf>]>>,
}

impl SlotArray {
    /// Validates `def` as the kernel's allocation checks for the type do. `inner` is the template
    /// for `ARRAY_OF_MAPS`.
    pub(crate) fn new(name: &str, def: &MapDef, inner: Option<MapDef>) -> Result<SlotArray, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        let t = def.map_type;
        let allowed = match t {
            map_type::XSKMAP => f::NUMA_NODE | f::RDONLY | f::WRONLY,
            map_type::DEVMAP => f::NUMA_NODE | f::ACCESS_MASK,
            map_type::PERF_EVENT_ARRAY => f::NUMA_NODE | f::ACCESS_MASK | f::PRESERVE_ELEMS,
            _ => f::NUMA_NODE | f::ACCESS_MASK,
        };
        if def.map_flags & !allowed != 0 || !access_ok(def.map_flags) {
            return Err(invalid("unknown map flags for this map type"));
        }
        if def.max_entries == 0 {
            return Err(invalid("max_entries is zero"));
        }
        if def.key_size != 4 {
            return Err(invalid("key_size must be 4"));
        }
        let value_ok = match t {
            map_type::DEVMAP => matches!(def.value_size, 4 | 8),
            _ => def.value_size == 4,
        };
        if !value_ok {
            return Err(invalid("value_size must be 4 (an id), or 4 or 8 for a devmap"));
        }
        let inner = match (t, inner) {
            (map_type::ARRAY_OF_MAPS, Some(tpl)) => Some(Inner::new(name, tpl)?),
            (map_type::ARRAY_OF_MAPS, None) => {
                return Err(invalid("a map of maps needs an inner map template"));
            }
            _ => None,
        };
        let n = def.max_entries as usize;
        let oom = |bytes| MapError::OutOfMemory { name: name.to_owned(), bytes };
        let values = Values::new(def.value_size as usize, n, 1).map_err(oom)?;
        let mut present = Vec::new();
        present.try_reserve_exact(n).map_err(|_| oom(n))?;
        present.extend((0..n).map(|_| AtomicU8::new(0)));
        let perf = (t == map_type::PERF_EVENT_ARRAY).then(|| (0..n).map(|_| OnceLock::new()).collect());
        Ok(SlotArray {
            map_type: t,
            max_entries: def.max_entries,
            value_size: def.value_size as usize,
            present: present.into_boxed_slice(),
            values,
            lock: SpinLock::default(),
            inner,
            perf,
        })
    }

    fn index(key: &[u8]) -> Result<u32, OpError> {
        Ok(u32::from_ne_bytes(key.try_into().map_err(|_| OpError::Invalid)?))
    }

    fn is_present(&self, i: u32) -> bool {
        self.present.get(i as usize).is_some_and(|p| p.load(Ordering::Acquire) != 0)
    }

    /// The `u32` at slot `i` (an id), if the slot is filled.
    #[inline]
    pub(crate) fn id(&self, i: u32) -> Option<u32> {
        if !self.is_present(i) {
            return None;
        }
        let mut v = [0u8; 4];
        self.values.read_prefix(i as usize, 0, &mut v);
        Some(u32::from_ne_bytes(v))
    }

    /// `PROG_ARRAY` slots as compiled code reads them: `(presence bytes, address of slot 0's
    /// id, bytes from one slot's id to the next)` ([`crate::ProgSlots`]).
    pub(crate) fn prog_slots(&self) -> Option<crate::ProgSlots> {
        if self.map_type != map_type::PROG_ARRAY {
            return None;
        }
        let (ids, _, vwords) = self.values.layout();
        Some(crate::ProgSlots {
            present: self.present.as_ptr() as usize,
            ids,
            id_stride: vwords * 8,
            max_entries: self.max_entries,
        })
    }

    /// Program-side lookup: a pointer to a `DEVMAP` / `XSKMAP` slot's value; `None` for the
    /// others (the verifier forbids it) and for empty slots.
    #[inline]
    pub(crate) fn lookup(&self, key: &[u8]) -> Option<NonNull<u8>> {
        let i = Self::index(key).ok()?;
        if !matches!(self.map_type, map_type::DEVMAP | map_type::XSKMAP) || !self.is_present(i) {
            return None;
        }
        Some(self.values.ptr(i as usize, 0))
    }

    /// The inner map in slot `i`.
    #[inline]
    pub(crate) fn inner_map(&self, i: u32) -> Option<&Map> {
        self.inner.as_ref()?.arena.get(self.id(i)?)
    }

    /// Fills slot `key` with `value` (checked against the type's flag rules) or, for a devmap
    /// value with `ifindex` 0, empties it.
    pub(crate) fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), OpError> {
        let i = Self::index(key)?;
        if value.len() != self.value_size {
            return Err(OpError::Invalid);
        }
        match self.map_type {
            map_type::PROG_ARRAY | map_type::ARRAY_OF_MAPS | map_type::PERF_EVENT_ARRAY => {
                // fd_array_map_update_elem
                if flags != BPF_ANY {
                    return Err(OpError::Invalid);
                }
                if i >= self.max_entries {
                    return Err(OpError::TooBig);
                }
            }
            _ => {
                if flags > BPF_EXIST {
                    return Err(OpError::Invalid);
                }
                if i >= self.max_entries {
                    return Err(OpError::TooBig);
                }
            }
        }
        let _guard = self.lock.lock();
        let present = self.is_present(i);
        match self.map_type {
            map_type::DEVMAP if flags == BPF_NOEXIST => return Err(OpError::Exists),
            map_type::XSKMAP if present && flags == BPF_NOEXIST => return Err(OpError::Exists),
            map_type::XSKMAP if !present && flags == BPF_EXIST => return Err(OpError::NotFound),
            _ => {}
        }
        if self.map_type == map_type::DEVMAP && value[..4] == [0; 4] {
            self.present[i as usize].store(0, Ordering::Release);
            return Ok(());
        }
        // Readers check presence first: hide the slot while its value changes.
        self.present[i as usize].store(0, Ordering::Release);
        self.values.write(i as usize, 0, value);
        self.present[i as usize].store(1, Ordering::Release);
        Ok(())
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), OpError> {
        let i = Self::index(key)?;
        let fd_array = matches!(
            self.map_type,
            map_type::PROG_ARRAY | map_type::ARRAY_OF_MAPS | map_type::PERF_EVENT_ARRAY
        );
        if i >= self.max_entries {
            return Err(if fd_array { OpError::TooBig } else { OpError::Invalid });
        }
        let _guard = self.lock.lock();
        let was = self.present[i as usize].swap(0, Ordering::AcqRel) != 0;
        if fd_array && !was { Err(OpError::NotFound) } else { Ok(()) }
    }

    pub(crate) fn lookup_user(&self, key: &[u8]) -> Result<Vec<u8>, OpError> {
        let i = Self::index(key)?;
        match self.map_type {
            map_type::XSKMAP => return Err(OpError::NotSupported),
            map_type::PERF_EVENT_ARRAY => return Err(OpError::Unsupported),
            _ => {}
        }
        if !self.is_present(i) {
            return Err(OpError::NotFound);
        }
        let mut v = vec![0; self.value_size];
        self.values.read(i as usize, 0, &mut v);
        Ok(v)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
        let next = match key {
            None => 0,
            Some(k) => {
                let i = Self::index(k)?;
                if i >= self.max_entries { 0 } else { i + 1 }
            }
        };
        if next >= self.max_entries {
            return Err(OpError::NotFound);
        }
        Ok(next.to_ne_bytes().to_vec())
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        (0..self.max_entries)
            .filter(|&i| self.is_present(i))
            .map(|i| {
                let mut v = vec![0; self.value_size];
                self.values.read(i as usize, 0, &mut v);
                Entry { key: i.to_ne_bytes().to_vec(), values: vec![v] }
            })
            .collect()
    }

    pub(crate) fn contains_value(&self, addr: usize, len: usize) -> bool {
        matches!(self.map_type, map_type::DEVMAP | map_type::XSKMAP) && self.values.contains(addr, len)
    }

    /// Gives perf slot `i` a buffer of `size` bytes (a power of two) — what opening a perf event
    /// and storing its fd does in the kernel — and marks the slot filled with `id`.
    pub(crate) fn perf_open(&self, name: &str, i: u32, size: u64, id: u32) -> Result<(), OpError> {
        let perf = self.perf.as_ref().ok_or(OpError::Invalid)?;
        let cell = perf.get(i as usize).ok_or(OpError::TooBig)?;
        if !size.is_power_of_two() || size < 64 {
            return Err(OpError::Invalid);
        }
        if cell.get().is_none() {
            let ring = RingBuf::with_size(name, size).map_err(|_| OpError::NoMemory)?;
            let _ = cell.set(ring);
        }
        self.update(&i.to_ne_bytes(), &id.to_ne_bytes(), BPF_ANY)
    }

    /// `bpf_perf_event_output`: one sample of `data` then `ctx` into the buffer of the slot the
    /// flags' index names (`BPF_F_CURRENT_CPU`: `slot`).
    #[inline]
    pub(crate) fn perf_output(
        &self,
        flags: u64,
        slot: usize,
        data: &[u8],
        ctx: &[u8],
    ) -> Result<(), OpError> {
        let perf = self.perf.as_ref().ok_or(OpError::Invalid)?;
        if flags & !(BPF_F_INDEX_MASK | BPF_F_CTXLEN_MASK) != 0 {
            return Err(OpError::Invalid);
        }
        let index = flags & BPF_F_INDEX_MASK;
        let index = if index == BPF_F_CURRENT_CPU { slot as u64 } else { index };
        if index >= u64::from(self.max_entries) {
            return Err(OpError::TooBig);
        }
        let ring = match perf[index as usize].get() {
            Some(r) if self.is_present(index as u32) => r,
            _ => return Err(OpError::NotFound),
        };
        ring.output2(data, ctx).map_err(|_| OpError::NoSpace)
    }

    /// Drains perf slot `i`'s samples in order.
    pub(crate) fn perf_consume(&self, i: u32, f: impl FnMut(&[u8])) -> usize {
        self.perf.as_ref().and_then(|p| p.get(i as usize)?.get()).map_or(0, |r| r.consume(f))
    }
}

#[cfg(test)]
mod tests {
    use crate::{BPF_ANY, Map, MapDef, map_type};

    /// What `ProgSlots` says a reader finds is what `Map::prog_id` finds, slot by slot, through
    /// fills, replacements and deletes.
    #[test]
    #[expect(unsafe_code, reason = "reads the slots where ProgSlots says they are")]
    fn prog_slots_read_as_prog_id_does() {
        let def = MapDef {
            map_type: map_type::PROG_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 5,
            map_flags: 0,
        };
        let m = Map::new("jumps", def, 1).unwrap();
        let p = m.prog_slots().expect("a prog array");
        assert_eq!(p.max_entries, 5);
        let read = |i: u32| {
            let present = (p.present + i as usize) as *const u8;
            let id = (p.ids + i as usize * p.id_stride) as *const u32;
            // SAFETY: both addresses lie inside the live map, as `ProgSlots` documents.
            unsafe { (present.read_volatile() != 0).then(|| id.read_volatile()) }
        };
        for (i, id) in [(0u32, 7u32), (3, 2), (4, 0xdead)] {
            m.update_user(&i.to_ne_bytes(), &id.to_ne_bytes(), BPF_ANY).unwrap();
        }
        m.update_user(&3u32.to_ne_bytes(), &9u32.to_ne_bytes(), BPF_ANY).unwrap();
        m.delete(&0u32.to_ne_bytes()).unwrap();
        for i in 0..5 {
            assert_eq!(read(i), m.prog_id(i), "slot {i}");
        }
        assert_eq!(read(3), Some(9));
        let array = Map::new("a", MapDef { map_type: map_type::ARRAY, ..def }, 1).unwrap();
        assert!(array.prog_slots().is_none());
    }
}
