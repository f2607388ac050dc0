//! `BPF_MAP_TYPE_ARRAY` and `BPF_MAP_TYPE_PERCPU_ARRAY` (kernel `kernel/bpf/arraymap.c`).
//!
//! Every index `0..max_entries` always exists and starts zeroed; an update overwrites the value
//! in place, elements cannot be deleted, `BPF_NOEXIST` always fails with `EEXIST`. The values are
//! one [`Values`] store (slot-major for per-CPU arrays), so a lookup is an index check and an
//! address computation; there are no locks at all: concurrent writers race on value bytes exactly
//! as they do in the kernel.

use std::ptr::NonNull;

use crate::create_flags::{self as f, access_ok};
use crate::slab::Mem;
use crate::values::Values;
use crate::{BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Entry, MapDef, MapError, OpError, PCPU_MIN_UNIT_SIZE};

/// An array map, plain or per-CPU.
#[derive(Debug)]
pub(crate) struct ArrayMap {
    max_entries: u32,
    value_size: usize,
    per_cpu: bool,
    slots: usize,
    values: Values,
}

impl ArrayMap {
    /// Validates `def` as the kernel's `array_map_alloc_check` does, then allocates every value.
    pub(crate) fn new(
        name: &str,
        def: &MapDef,
        per_cpu: bool,
        slots: usize,
        mem: &Mem,
    ) -> Result<ArrayMap, MapError> {
        let invalid = |reason| MapError::InvalidDefinition { name: name.to_owned(), reason };
        let too_big = |reason| MapError::TooBig { name: name.to_owned(), reason };
        let allowed = f::NUMA_NODE | f::MMAPABLE | f::ACCESS_MASK | f::PRESERVE_ELEMS | f::INNER_MAP;
        if def.map_flags & !allowed != 0 {
            return Err(invalid("unknown map flags for an array"));
        }
        if !access_ok(def.map_flags) {
            return Err(invalid("map both read-only and write-only"));
        }
        if per_cpu && def.map_flags & f::NUMA_NODE != 0 {
            return Err(invalid("per-CPU maps take no NUMA node"));
        }
        if def.max_entries == 0 {
            return Err(invalid("max_entries is zero"));
        }
        if def.key_size != 4 {
            return Err(invalid("array key_size must be 4"));
        }
        if def.value_size == 0 {
            return Err(invalid("value_size is zero"));
        }
        if per_cpu && def.map_flags & (f::MMAPABLE | f::INNER_MAP) != 0 {
            return Err(invalid("mmapable and inner-map flags are for plain arrays only"));
        }
        if def.map_flags & f::PRESERVE_ELEMS != 0 {
            return Err(invalid("preserve-elems is for perf event arrays only"));
        }
        if def.value_size > i32::MAX as u32 {
            return Err(too_big("value_size over INT_MAX"));
        }
        let value_size = def.value_size as usize;
        if per_cpu && value_size.next_multiple_of(8) > PCPU_MIN_UNIT_SIZE {
            return Err(too_big("per-CPU value_size over 32 KiB"));
        }
        let slots = if per_cpu { slots } else { 1 };
        let values = Values::new_in(value_size, def.max_entries as usize, slots, mem)
            .map_err(|bytes| MapError::OutOfMemory { name: name.to_owned(), bytes })?;
        Ok(ArrayMap { max_entries: def.max_entries, value_size, per_cpu, slots, values })
    }

    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    pub(crate) fn is_per_cpu(&self) -> bool {
        self.per_cpu
    }

    /// `(values offset, words per slot region, words per value)` in the shared region.
    pub(crate) fn shared_layout(&self) -> Option<(usize, usize, usize)> {
        self.values.shared_layout()
    }

    /// Element 0's value in slot 0.
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.values.ptr(0, 0)
    }

    /// The index a key names, if it is 4 bytes.
    #[inline]
    fn index(key: &[u8]) -> Option<u32> {
        Some(u32::from_ne_bytes(key.try_into().ok()?))
    }

    /// The slot a program-side call uses: its own for per-CPU arrays, the only one otherwise.
    #[inline]
    fn prog_slot(&self, slot: usize) -> Option<usize> {
        if !self.per_cpu {
            Some(0)
        } else if slot < self.slots {
            Some(slot)
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn lookup(&self, key: &[u8], slot: usize) -> Option<NonNull<u8>> {
        let index = Self::index(key)?;
        if index >= self.max_entries {
            return None;
        }
        Some(self.values.ptr(index as usize, self.prog_slot(slot)?))
    }

    /// `slot`: `Some` from a program, `None` from userspace (every slot's value given).
    pub(crate) fn update(
        &self,
        key: &[u8],
        value: &[u8],
        flags: u64,
        slot: Option<usize>,
    ) -> Result<(), OpError> {
        let index = Self::index(key).ok_or(OpError::Invalid)?;
        let slot = match slot {
            Some(s) => Some(self.prog_slot(s).ok_or(OpError::Invalid)?),
            None => None,
        };
        let expected = if slot.is_none() { self.value_size * self.slots } else { self.value_size };
        if value.len() != expected {
            return Err(OpError::Invalid);
        }
        // The kernel's order: unknown flags, index, NOEXIST, then the missing spin lock.
        if flags & !BPF_F_LOCK > BPF_EXIST {
            return Err(OpError::Invalid);
        }
        if index >= self.max_entries {
            return Err(OpError::TooBig);
        }
        if flags & BPF_NOEXIST != 0 {
            return Err(OpError::Exists);
        }
        if flags & BPF_F_LOCK != 0 {
            return Err(OpError::Invalid);
        }
        match slot {
            Some(s) => self.values.write(index as usize, s, value),
            None => {
                for (s, v) in value.chunks_exact(self.value_size).enumerate() {
                    self.values.write(index as usize, s, v);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn delete(&self, _key: &[u8]) -> Result<(), OpError> {
        Err(OpError::Invalid)
    }

    pub(crate) fn lookup_user(&self, key: &[u8]) -> Result<Vec<u8>, OpError> {
        let index = Self::index(key).ok_or(OpError::Invalid)?;
        if index >= self.max_entries {
            return Err(OpError::NotFound);
        }
        let mut out = vec![0; self.value_size * self.slots];
        for (s, v) in out.chunks_exact_mut(self.value_size).enumerate() {
            self.values.read(index as usize, s, v);
        }
        Ok(out)
    }

    pub(crate) fn next_key(&self, key: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
        let index = match key {
            Some(k) => Self::index(k).ok_or(OpError::Invalid)?,
            None => u32::MAX,
        };
        let next = if index >= self.max_entries {
            0
        } else if index == self.max_entries - 1 {
            return Err(OpError::NotFound);
        } else {
            index + 1
        };
        Ok(next.to_ne_bytes().to_vec())
    }

    pub(crate) fn entries(&self) -> Vec<Entry> {
        (0..self.max_entries)
            .map(|i| Entry {
                key: i.to_ne_bytes().to_vec(),
                values: (0..self.slots)
                    .map(|s| {
                        let mut v = vec![0; self.value_size];
                        self.values.read(i as usize, s, &mut v);
                        v
                    })
                    .collect(),
            })
            .collect()
    }

    pub(crate) fn contains_value(&self, addr: usize, len: usize) -> bool {
        self.values.contains(addr, len)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Map, MapDef, MapError, OpError, map_flags, map_type,
    };

    fn array(value_size: u32, max_entries: u32) -> Map {
        let def = MapDef { map_type: map_type::ARRAY, key_size: 4, value_size, max_entries, map_flags: 0 };
        Map::new("arr", def, 1).unwrap()
    }

    fn percpu(value_size: u32, max_entries: u32, slots: usize) -> Map {
        let def =
            MapDef { map_type: map_type::PERCPU_ARRAY, key_size: 4, value_size, max_entries, map_flags: 0 };
        Map::new("pcpu", def, slots).unwrap()
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
        for t in [map_type::ARRAY, map_type::PERCPU_ARRAY] {
            let inv = |r: Result<Map, MapError>| matches!(r, Err(MapError::InvalidDefinition { .. }));
            assert!(inv(create(t, 4, 8, 0, 0)), "max_entries 0");
            assert!(inv(create(t, 8, 8, 1, 0)), "key_size 8");
            assert!(inv(create(t, 0, 8, 1, 0)), "key_size 0");
            assert!(inv(create(t, 4, 0, 1, 0)), "value_size 0");
            assert!(inv(create(t, 4, 8, 1, map_flags::NO_PREALLOC)), "hash-only flag");
            assert!(inv(create(t, 4, 8, 1, 1 << 11)), "preserve elems");
            assert!(inv(create(t, 4, 8, 1, map_flags::RDONLY | map_flags::WRONLY)));
            assert!(inv(create(t, 4, 8, 1, map_flags::RDONLY_PROG | map_flags::WRONLY_PROG)));
            assert!(create(t, 4, 8, 1, map_flags::RDONLY_PROG).is_ok());
            let big = create(t, 4, i32::MAX as u32 + 1, 1, 0);
            assert!(matches!(big, Err(MapError::TooBig { .. })));
            assert_eq!(big.unwrap_err().errno(), 7);
        }
        assert!(create(map_type::ARRAY, 4, 8, 1, map_flags::MMAPABLE).is_ok());
        assert!(create(map_type::PERCPU_ARRAY, 4, 8, 1, map_flags::MMAPABLE).is_err());
        assert!(create(map_type::PERCPU_ARRAY, 4, 32 << 10, 1, 0).is_ok());
        assert!(matches!(
            create(map_type::PERCPU_ARRAY, 4, (32 << 10) + 1, 1, 0),
            Err(MapError::TooBig { .. })
        ));
    }

    #[test]
    fn zero_initialized_and_aligned() {
        let m = array(12, 5);
        assert_eq!(m.lookup_user(&k(4)).unwrap(), vec![0; 12]);
        let base = m.array_base().unwrap().as_ptr() as usize;
        assert_eq!(base % 8, 0);
        for i in 0..5 {
            assert_eq!(m.lookup(&k(i), 0).unwrap().as_ptr() as usize, base + i as usize * 16);
        }
    }

    #[test]
    fn update_lookup_and_flags() {
        let m = array(4, 3);
        assert_eq!(m.update(&k(1), &[1, 2, 3, 4], BPF_ANY, 0), Ok(()));
        assert_eq!(m.update(&k(1), &[5, 6, 7, 8], BPF_EXIST, 0), Ok(()));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [5, 6, 7, 8]);
        assert_eq!(m.update(&k(1), &[0; 4], BPF_NOEXIST, 0), Err(OpError::Exists));
        assert_eq!(m.update(&k(3), &[0; 4], BPF_ANY, 0), Err(OpError::TooBig));
        // Unknown flags are checked before the index, the index before NOEXIST.
        assert_eq!(m.update(&k(3), &[0; 4], 3, 0), Err(OpError::Invalid));
        assert_eq!(m.update(&k(3), &[0; 4], 8, 0), Err(OpError::Invalid));
        assert_eq!(m.update(&k(9), &[0; 4], BPF_NOEXIST, 0), Err(OpError::TooBig));
        assert_eq!(m.update(&k(0), &[0; 4], BPF_F_LOCK, 0), Err(OpError::Invalid));
        assert_eq!(m.update(&k(0), &[0; 4], BPF_EXIST | BPF_F_LOCK, 0), Err(OpError::Invalid));
        assert_eq!(m.update(&k(0), &[0; 3], BPF_ANY, 0), Err(OpError::Invalid), "short value");
        assert_eq!(m.update(&[0; 8], &[0; 4], BPF_ANY, 0), Err(OpError::Invalid), "long key");
        assert_eq!(m.lookup_user(&k(3)), Err(OpError::NotFound));
        assert!(m.lookup(&k(3), 0).is_none());
        assert!(m.lookup(&k(u32::MAX), 0).is_none());
        assert_eq!(m.delete(&k(0)), Err(OpError::Invalid));
        assert_eq!(m.delete(&k(7)), Err(OpError::Invalid));
        // The pointer a program gets sees the update.
        let p = m.lookup(&k(1), 0).unwrap().as_ptr() as usize;
        assert!(m.contains_value(p, 4) && !m.contains_value(p, 5));
        // Plain arrays ignore the slot.
        assert_eq!(m.lookup(&k(1), 7).unwrap().as_ptr() as usize, p);
        assert_eq!(m.update(&k(1), &[9; 4], BPF_ANY, 7), Ok(()));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [9; 4]);
    }

    #[test]
    fn next_key_like_the_kernel() {
        let m = array(4, 3);
        let next = |key: Option<u32>| m.next_key(key.map(k).as_ref().map(|b| &b[..]));
        assert_eq!(next(None), Ok(k(0).to_vec()));
        assert_eq!(next(Some(0)), Ok(k(1).to_vec()));
        assert_eq!(next(Some(1)), Ok(k(2).to_vec()));
        assert_eq!(next(Some(2)), Err(OpError::NotFound));
        assert_eq!(next(Some(3)), Ok(k(0).to_vec()));
        assert_eq!(next(Some(u32::MAX)), Ok(k(0).to_vec()));
        assert_eq!(m.next_key(Some(&[0; 2])), Err(OpError::Invalid));
    }

    #[test]
    fn entries_list_every_index() {
        let m = array(2, 3);
        m.update(&k(2), &[7, 8], BPF_ANY, 0).unwrap();
        let e = m.entries();
        assert_eq!(e.len(), 3);
        assert_eq!((e[2].key.clone(), e[2].values.clone()), (k(2).to_vec(), vec![vec![7, 8]]));
        assert_eq!(e[0].values, vec![vec![0, 0]]);
    }

    #[test]
    fn per_cpu_slots_are_isolated() {
        let m = percpu(4, 2, 3);
        assert_eq!(m.update(&k(1), &[1; 4], BPF_ANY, 1), Ok(()));
        assert_eq!(m.update(&k(1), &[2; 4], BPF_ANY, 2), Ok(()));
        assert_eq!(m.lookup_user(&k(1)).unwrap(), [[0; 4], [1; 4], [2; 4]].concat());
        assert_eq!(m.update(&k(1), &[0; 4], BPF_NOEXIST, 0), Err(OpError::Exists));
        assert_eq!(m.update(&k(1), &[0; 4], BPF_ANY, 3), Err(OpError::Invalid), "no slot 3");
        assert!(m.lookup(&k(1), 3).is_none());
        let p1 = m.lookup(&k(1), 1).unwrap().as_ptr() as usize;
        let p2 = m.lookup(&k(1), 2).unwrap().as_ptr() as usize;
        assert!(p2.abs_diff(p1) >= 64, "slots of one element never share a cache line");
        assert!(m.contains_value(p1, 4) && m.contains_value(p2, 4) && !m.contains_value(p2 + 1, 4));
        // Userspace writes every slot at once, slots * value_size bytes, no rounding.
        let all = [[3; 4], [4; 4], [5; 4]].concat();
        assert_eq!(m.update_user(&k(0), &all[..8], BPF_ANY), Err(OpError::Invalid));
        assert_eq!(m.update_user(&k(0), &all, BPF_NOEXIST), Err(OpError::Exists));
        assert_eq!(m.update_user(&k(2), &all, BPF_ANY), Err(OpError::TooBig));
        assert_eq!(m.update_user(&k(0), &all, BPF_EXIST), Ok(()));
        assert_eq!(m.lookup_user(&k(0)).unwrap(), all);
        let e = m.entries();
        assert_eq!(e[0].values, vec![vec![3; 4], vec![4; 4], vec![5; 4]]);
        assert_eq!(e[1].values, vec![vec![0; 4], vec![1; 4], vec![2; 4]]);
    }

    #[test]
    fn contains_value_edges() {
        let m = array(6, 2);
        let base = m.array_base().unwrap().as_ptr() as usize;
        assert!(m.contains_value(base, 6));
        assert!(m.contains_value(base + 8, 6));
        assert!(!m.contains_value(base + 4, 4), "into padding");
        assert!(!m.contains_value(base + 6, 4), "straddles two values");
        assert!(!m.contains_value(base + 16, 1), "past the last value");
        assert!(!m.contains_value(base - 8, 8), "before the first");
    }
}
