//! Model-based tests: random operation sequences on every map type, checked step by step against
//! a plain `BTreeMap` model of the kernel's rules, then on the final `entries()`.

#![expect(unsafe_code, reason = "reads values through the pointers `Map::lookup` hands to programs")]

use std::collections::{BTreeMap, BTreeSet};

use maps::{BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST, Entry, Map, MapDef, OpError, map_type};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Update { key: u8, seed: u8, flags: u64, slot: usize },
    UpdateUser { key: u8, seed: u8, flags: u64 },
    Delete { key: u8 },
    Lookup { key: u8, slot: usize },
    LookupUser { key: u8 },
    NextKey { key: Option<u8> },
}

fn ops(slots: usize) -> impl Strategy<Value = Vec<Op>> {
    let key = 0u8..8;
    let flags = prop::sample::select(vec![0u64, 0, 1, 1, 2, 2, 3, BPF_F_LOCK, BPF_F_LOCK | 2, 8]);
    let op = prop_oneof![
        4 => (key.clone(), any::<u8>(), flags.clone(), 0..=slots)
            .prop_map(|(key, seed, flags, slot)| Op::Update { key, seed, flags, slot }),
        2 => (key.clone(), any::<u8>(), flags).prop_map(|(key, seed, flags)| Op::UpdateUser { key, seed, flags }),
        2 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => (key.clone(), 0..=slots).prop_map(|(key, slot)| Op::Lookup { key, slot }),
        1 => key.clone().prop_map(|key| Op::LookupUser { key }),
        1 => prop::option::of(key).prop_map(|key| Op::NextKey { key }),
    ];
    prop::collection::vec(op, 0..64)
}

/// The reference: the kernel's rules written as directly as possible.
struct Model {
    def: MapDef,
    slots: usize,
    per_cpu: bool,
    array: bool,
    entries: BTreeMap<Vec<u8>, Vec<Vec<u8>>>,
}

impl Model {
    fn new(def: MapDef, slots: usize) -> Model {
        let array = matches!(def.map_type, map_type::ARRAY | map_type::PERCPU_ARRAY);
        let per_cpu = matches!(
            def.map_type,
            map_type::PERCPU_ARRAY | map_type::PERCPU_HASH | map_type::LRU_PERCPU_HASH
        );
        let slots = if per_cpu { slots } else { 1 };
        let mut entries = BTreeMap::new();
        if array {
            for i in 0..def.max_entries {
                entries.insert(i.to_ne_bytes().to_vec(), vec![vec![0; def.value_size as usize]; slots]);
            }
        }
        Model { def, slots, per_cpu, array, entries }
    }

    fn key(&self, id: u8) -> Vec<u8> {
        if self.array {
            u32::from(id).to_ne_bytes().to_vec()
        } else {
            (0..self.def.key_size as u8).map(|i| if i == 0 { id } else { id.wrapping_mul(31) ^ i }).collect()
        }
    }

    fn value(&self, seed: u8) -> Vec<u8> {
        (0..self.def.value_size as u8).map(|i| seed.wrapping_add(i)).collect()
    }

    /// `slot`: `Some` for a program-side update, `None` for userspace; `values` one per written slot.
    fn update(
        &mut self,
        key: &[u8],
        values: Vec<Vec<u8>>,
        flags: u64,
        slot: Option<usize>,
    ) -> Result<(), OpError> {
        if slot.is_none() && flags & BPF_F_LOCK != 0 {
            return Err(OpError::Invalid); // the syscall's own check comes first
        }
        if self.per_cpu && slot.is_some_and(|s| s >= self.slots) {
            return Err(OpError::Invalid);
        }
        let unknown = flags & !BPF_F_LOCK > BPF_EXIST;
        let present = self.entries.contains_key(key);
        if self.array {
            if unknown {
                return Err(OpError::Invalid);
            }
            if !present {
                return Err(OpError::TooBig);
            }
            if flags & BPF_NOEXIST != 0 {
                return Err(OpError::Exists);
            }
            if flags & BPF_F_LOCK != 0 {
                return Err(OpError::Invalid);
            }
        } else {
            if unknown || flags & BPF_F_LOCK != 0 {
                return Err(OpError::Invalid);
            }
            if present && flags == BPF_NOEXIST {
                return Err(OpError::Exists);
            }
            if !present && flags == BPF_EXIST {
                return Err(OpError::NotFound);
            }
            if !present && self.entries.len() == self.def.max_entries as usize {
                return Err(OpError::TooBig);
            }
        }
        let zero = vec![0; self.def.value_size as usize];
        let slots = self.slots;
        let stored = self.entries.entry(key.to_vec()).or_insert_with(|| vec![zero; slots]);
        match slot {
            Some(s) => stored[if self.per_cpu { s } else { 0 }] = values[0].clone(),
            None => *stored = values,
        }
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<(), OpError> {
        if self.array {
            return Err(OpError::Invalid);
        }
        self.entries.remove(key).map(drop).ok_or(OpError::NotFound)
    }

    fn sorted(&self) -> Vec<Entry> {
        self.entries.iter().map(|(key, values)| Entry { key: key.clone(), values: values.clone() }).collect()
    }
}

/// Copies `len` bytes from a pointer `Map::lookup` returned.
fn read_value(map: &Map, ptr: std::ptr::NonNull<u8>, len: usize) -> Vec<u8> {
    assert!(map.contains_value(ptr.as_ptr() as usize, len));
    let mut out = vec![0; len];
    // SAFETY: `ptr` came from `Map::lookup` on `map`, which is alive for this whole call and
    // promises `value_size == len` valid bytes there (also checked by `contains_value` above);
    // this test is single-threaded, so nothing writes them concurrently; `out` is a fresh buffer.
    unsafe { std::ptr::copy_nonoverlapping(ptr.as_ptr(), out.as_mut_ptr(), len) };
    out
}

fn run(def: MapDef, slots: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let map = Map::new("model", def, slots).unwrap();
    let mut model = Model::new(def, slots);
    let vs = def.value_size as usize;
    for op in ops {
        match op {
            Op::Update { key, seed, flags, slot } => {
                let (k, v) = (model.key(key), model.value(seed));
                let want = model.update(&k, vec![v.clone()], flags, Some(slot));
                prop_assert_eq!(map.update(&k, &v, flags, slot), want, "{:?}", op);
            }
            Op::UpdateUser { key, seed, flags } => {
                let k = model.key(key);
                let values: Vec<_> =
                    (0..model.slots).map(|s| model.value(seed.wrapping_add(s as u8 * 40))).collect();
                let flat = values.concat();
                let want = model.update(&k, values, flags, None);
                prop_assert_eq!(map.update_user(&k, &flat, flags), want, "{:?}", op);
            }
            Op::Delete { key } => {
                let k = model.key(key);
                prop_assert_eq!(map.delete(&k), model.delete(&k));
            }
            Op::Lookup { key, slot } => {
                let k = model.key(key);
                let slot_ok = !model.per_cpu || slot < model.slots;
                let want = model
                    .entries
                    .get(&k)
                    .filter(|_| slot_ok)
                    .map(|v| v[if model.per_cpu { slot } else { 0 }].clone());
                let got = map.lookup(&k, slot).map(|p| read_value(&map, p, vs));
                prop_assert_eq!(got, want, "{:?}", op);
            }
            Op::LookupUser { key } => {
                let k = model.key(key);
                let want = model.entries.get(&k).map(|v| v.concat()).ok_or(OpError::NotFound);
                prop_assert_eq!(map.lookup_user(&k), want);
            }
            Op::NextKey { key } => {
                let k = key.map(|id| model.key(id));
                let got = map.next_key(k.as_deref());
                if model.array {
                    let index = k.map_or(u32::MAX, |k| u32::from_ne_bytes(k.try_into().unwrap()));
                    let want = if index >= def.max_entries {
                        Ok(0u32.to_ne_bytes().to_vec())
                    } else if index == def.max_entries - 1 {
                        Err(OpError::NotFound)
                    } else {
                        Ok((index + 1).to_ne_bytes().to_vec())
                    };
                    prop_assert_eq!(got, want);
                } else if model.entries.is_empty() {
                    prop_assert_eq!(got, Err(OpError::NotFound));
                } else if let Ok(next) = got {
                    prop_assert!(model.entries.contains_key(&next));
                    prop_assert!(Some(&next) != k.as_ref(), "next key is the key itself");
                } else {
                    // Only a present key can be the last one.
                    prop_assert!(k.is_some_and(|k| model.entries.contains_key(&k)));
                }
            }
        }
    }
    let mut got = map.entries();
    got.sort();
    prop_assert_eq!(got, model.sorted());
    if !model.array {
        // A full BPF_MAP_GET_NEXT_KEY walk visits every key exactly once.
        let mut seen = BTreeSet::new();
        let mut cur = map.next_key(None);
        while let Ok(k) = cur {
            prop_assert!(seen.insert(k.clone()), "key visited twice");
            cur = map.next_key(Some(&k));
        }
        prop_assert_eq!(cur, Err(OpError::NotFound));
        prop_assert_eq!(seen, model.entries.keys().cloned().collect::<BTreeSet<_>>());
    }
    Ok(())
}

const fn def(map_type: u32, key_size: u32, value_size: u32, max_entries: u32) -> MapDef {
    MapDef { map_type, key_size, value_size, max_entries, map_flags: 0 }
}

proptest! {
    #[test]
    fn hash_small_keys(ops in ops(1)) {
        run(def(map_type::HASH, 4, 5, 4), 1, ops)?;
    }

    #[test]
    fn hash_long_keys(ops in ops(2)) {
        run(def(map_type::HASH, 13, 8, 5), 2, ops)?;
    }

    #[test]
    fn hash_one_bucket(ops in ops(1)) {
        run(def(map_type::HASH, 2, 3, 1), 1, ops)?;
    }

    #[test]
    fn percpu_hash(ops in ops(3)) {
        run(def(map_type::PERCPU_HASH, 4, 6, 4), 3, ops)?;
    }

    #[test]
    fn array(ops in ops(1)) {
        run(def(map_type::ARRAY, 4, 5, 5), 1, ops)?;
    }

    #[test]
    fn percpu_array(ops in ops(2)) {
        run(def(map_type::PERCPU_ARRAY, 4, 6, 5), 2, ops)?;
    }

    // LRU maps with room for every key plus the fresh element a replacement takes: nothing is
    // evicted, so they must behave exactly as hash maps (eviction is checked in tests/types.rs).
    #[test]
    fn lru_hash_without_eviction(ops in ops(2)) {
        run(def(map_type::LRU_HASH, 4, 5, 9), 2, ops)?;
    }

    #[test]
    fn lru_percpu_hash_without_eviction(ops in ops(2)) {
        run(def(map_type::LRU_PERCPU_HASH, 6, 3, 9), 2, ops)?;
    }
}
