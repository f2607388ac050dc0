//! Typed handles over the untyped store, for Rust code embedding the dataplane: [`HashMap`],
//! [`Array`], [`PerCpuArray`] and [`PerCpuHashMap`] borrow a [`Map`] and read and write `K` / `V`
//! values instead of byte slices. They are built with `TryFrom<&Map>`, which fails when the map's
//! type or key and value sizes do not fit the types.
//!
//! Reads copy values out (the store's own word-atomic copies), so they never race with programs
//! writing through lookup pointers.
//!
//! ```
//! use maps::typed::HashMap;
//! use maps::{BPF_ANY, Map, MapDef, map_type};
//!
//! let def = MapDef { map_type: map_type::HASH, key_size: 4, value_size: 8, max_entries: 16, map_flags: 0 };
//! let map = Map::new("counts", def, 1)?;
//! let counts = HashMap::<u32, u64>::try_from(&map)?;
//! counts.insert(&7, &41, BPF_ANY)?;
//! assert_eq!(counts.get(&7), Some(41));
//! assert!(HashMap::<u64, u64>::try_from(&map).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::marker::PhantomData;

use crate::{Map, OpError, map_type};

/// Plain old data: any bit pattern of `size_of::<Self>()` bytes is a valid value, and a value's
/// bytes are all initialized.
///
/// # Safety
///
/// Implement only for types with no padding bytes, no invalid bit patterns (so no `bool`, `char`,
/// enums or references), and no interior pointers whose validity matters: the map store copies
/// values as raw bytes in both directions.
pub unsafe trait Pod: Copy + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: primitive integers have no padding and every bit pattern is a valid value.
        unsafe impl Pod for $t {}
    )* };
}
pod!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

// SAFETY: an array of `Pod` elements has no padding between them (size is a multiple of the
// alignment) and is valid for every bit pattern when its elements are.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

fn bytes_of<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding, so all `size_of::<T>()` bytes behind `v` are initialized;
    // the slice borrows `v` and so cannot outlive it; `u8` has alignment 1.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
}

fn from_bytes<T: Pod>(b: &[u8]) -> T {
    assert_eq!(b.len(), size_of::<T>(), "the map's sizes were checked against T at construction");
    // SAFETY: `b` has exactly `size_of::<T>()` readable bytes (asserted), `read_unaligned` needs no
    // alignment, and every bit pattern is a valid `T` (`Pod`).
    unsafe { b.as_ptr().cast::<T>().read_unaligned() }
}

/// Why a typed handle cannot be made from a map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    #[error("map {map} has type {actual}, not one this handle reads")]
    WrongType { map: String, actual: u32 },
    #[error("map {map}: {what} size is {actual} bytes, the type has {expected}")]
    Size { map: String, what: &'static str, expected: usize, actual: usize },
}

fn check(map: &Map, types: &[u32], key: usize, value: usize) -> Result<(), TypedError> {
    let d = map.def();
    if !types.contains(&d.map_type) {
        return Err(TypedError::WrongType { map: map.name().to_owned(), actual: d.map_type });
    }
    for (what, expected, actual) in [("key", key, d.key_size), ("value", value, d.value_size)] {
        if actual as usize != expected {
            return Err(TypedError::Size {
                map: map.name().to_owned(),
                what,
                expected,
                actual: actual as usize,
            });
        }
    }
    Ok(())
}

/// A `HASH` or `LRU_HASH` map as `K -> V`.
#[derive(Debug, Clone, Copy)]
pub struct HashMap<'m, K, V> {
    map: &'m Map,
    _types: PhantomData<(K, V)>,
}

impl<'m, K: Pod, V: Pod> TryFrom<&'m Map> for HashMap<'m, K, V> {
    type Error = TypedError;

    fn try_from(map: &'m Map) -> Result<Self, TypedError> {
        check(map, &[map_type::HASH, map_type::LRU_HASH], size_of::<K>(), size_of::<V>())?;
        Ok(HashMap { map, _types: PhantomData })
    }
}

impl<K: Pod, V: Pod> HashMap<'_, K, V> {
    /// The value at `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        self.map.lookup_user(bytes_of(key)).ok().map(|v| from_bytes(&v))
    }

    /// `BPF_MAP_UPDATE_ELEM` with `flags`.
    ///
    /// # Errors
    ///
    /// As [`Map::update_user`].
    pub fn insert(&self, key: &K, value: &V, flags: u64) -> Result<(), OpError> {
        self.map.update_user(bytes_of(key), bytes_of(value), flags)
    }

    /// `BPF_MAP_DELETE_ELEM`.
    ///
    /// # Errors
    ///
    /// [`OpError::NotFound`] when absent.
    pub fn remove(&self, key: &K) -> Result<(), OpError> {
        self.map.delete(bytes_of(key))
    }

    /// Every entry, in iteration order.
    pub fn iter(&self) -> impl Iterator<Item = (K, V)> + use<K, V> {
        self.map.entries().into_iter().map(|e| (from_bytes(&e.key), from_bytes(&e.values[0])))
    }
}

/// A `PERCPU_HASH` or `LRU_PERCPU_HASH` map as `K -> [V; slots]`.
#[derive(Debug, Clone, Copy)]
pub struct PerCpuHashMap<'m, K, V> {
    map: &'m Map,
    _types: PhantomData<(K, V)>,
}

impl<'m, K: Pod, V: Pod> TryFrom<&'m Map> for PerCpuHashMap<'m, K, V> {
    type Error = TypedError;

    fn try_from(map: &'m Map) -> Result<Self, TypedError> {
        check(map, &[map_type::PERCPU_HASH, map_type::LRU_PERCPU_HASH], size_of::<K>(), size_of::<V>())?;
        Ok(PerCpuHashMap { map, _types: PhantomData })
    }
}

impl<K: Pod, V: Pod> PerCpuHashMap<'_, K, V> {
    /// Every slot's value at `key`, slot 0 first.
    pub fn get(&self, key: &K) -> Option<Vec<V>> {
        let all = self.map.lookup_user(bytes_of(key)).ok()?;
        Some(all.chunks_exact(size_of::<V>()).map(from_bytes).collect())
    }

    /// Sets slot `slot`'s value as a program running in that slot would.
    ///
    /// # Errors
    ///
    /// As [`Map::update`].
    pub fn insert(&self, key: &K, slot: usize, value: &V, flags: u64) -> Result<(), OpError> {
        self.map.update(bytes_of(key), bytes_of(value), flags, slot)
    }
}

/// An `ARRAY` map as `[V; max_entries]`.
#[derive(Debug, Clone, Copy)]
pub struct Array<'m, V> {
    map: &'m Map,
    _types: PhantomData<fn(V) -> V>,
}

impl<'m, V: Pod> TryFrom<&'m Map> for Array<'m, V> {
    type Error = TypedError;

    fn try_from(map: &'m Map) -> Result<Self, TypedError> {
        check(map, &[map_type::ARRAY], 4, size_of::<V>())?;
        Ok(Array { map, _types: PhantomData })
    }
}

impl<V: Pod> Array<'_, V> {
    /// The value at `index`; `None` out of range.
    pub fn get(&self, index: u32) -> Option<V> {
        self.map.lookup_user(&index.to_ne_bytes()).ok().map(|v| from_bytes(&v))
    }

    /// Sets the value at `index`.
    ///
    /// # Errors
    ///
    /// [`OpError::TooBig`] out of range, [`OpError::Exists`] for `BPF_NOEXIST`.
    pub fn set(&self, index: u32, value: &V, flags: u64) -> Result<(), OpError> {
        self.map.update_user(&index.to_ne_bytes(), bytes_of(value), flags)
    }

    /// `max_entries`.
    pub fn len(&self) -> u32 {
        self.map.def().max_entries
    }

    /// Never true: arrays have at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A `PERCPU_ARRAY` map: one `V` per index and slot.
#[derive(Debug, Clone, Copy)]
pub struct PerCpuArray<'m, V> {
    map: &'m Map,
    _types: PhantomData<fn(V) -> V>,
}

impl<'m, V: Pod> TryFrom<&'m Map> for PerCpuArray<'m, V> {
    type Error = TypedError;

    fn try_from(map: &'m Map) -> Result<Self, TypedError> {
        check(map, &[map_type::PERCPU_ARRAY], 4, size_of::<V>())?;
        Ok(PerCpuArray { map, _types: PhantomData })
    }
}

impl<V: Pod> PerCpuArray<'_, V> {
    /// Every slot's value at `index`, slot 0 first; `None` out of range.
    pub fn get(&self, index: u32) -> Option<Vec<V>> {
        let all = self.map.lookup_user(&index.to_ne_bytes()).ok()?;
        Some(all.chunks_exact(size_of::<V>()).map(from_bytes).collect())
    }

    /// The sum over slots, for counters — what a control thread reports.
    pub fn sum(&self, index: u32) -> Option<V>
    where
        V: std::iter::Sum<V>,
    {
        self.get(index).map(|v| v.into_iter().sum())
    }

    /// Sets slot `slot`'s value at `index`.
    ///
    /// # Errors
    ///
    /// As [`Map::update`].
    pub fn set(&self, index: u32, slot: usize, value: &V, flags: u64) -> Result<(), OpError> {
        self.map.update(&index.to_ne_bytes(), bytes_of(value), flags, slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BPF_ANY, MapDef};

    fn map(map_type: u32, key_size: u32, value_size: u32, slots: usize) -> Map {
        Map::new("t", MapDef { map_type, key_size, value_size, max_entries: 4, map_flags: 0 }, slots).unwrap()
    }

    #[test]
    fn sizes_and_types_are_checked() {
        let h = map(map_type::HASH, 8, 16, 1);
        assert!(HashMap::<u64, [u8; 16]>::try_from(&h).is_ok());
        assert!(HashMap::<u64, [u64; 2]>::try_from(&h).is_ok());
        let err = HashMap::<u32, [u8; 16]>::try_from(&h).unwrap_err();
        assert_eq!(err.to_string(), "map t: key size is 8 bytes, the type has 4");
        assert!(matches!(Array::<u64>::try_from(&h), Err(TypedError::WrongType { actual: 1, .. })));
        let a = map(map_type::ARRAY, 4, 8, 1);
        assert!(Array::<u32>::try_from(&a).is_err());
        assert!(PerCpuArray::<u64>::try_from(&a).is_err());
    }

    #[test]
    fn round_trips() {
        let h = map(map_type::LRU_HASH, 4, 8, 1);
        let h = HashMap::<u32, i64>::try_from(&h).unwrap();
        h.insert(&3, &-5, BPF_ANY).unwrap();
        assert_eq!(h.get(&3), Some(-5));
        assert_eq!(h.iter().collect::<Vec<_>>(), [(3, -5)]);
        h.remove(&3).unwrap();
        assert_eq!(h.get(&3), None);

        let a = map(map_type::ARRAY, 4, 2, 1);
        let a = Array::<u16>::try_from(&a).unwrap();
        a.set(2, &0xbeef, BPF_ANY).unwrap();
        assert_eq!((a.get(2), a.get(4), a.len()), (Some(0xbeef), None, 4));

        let p = map(map_type::PERCPU_ARRAY, 4, 8, 3);
        let p = PerCpuArray::<u64>::try_from(&p).unwrap();
        for slot in 0..3 {
            p.set(1, slot, &(slot as u64 + 1), BPF_ANY).unwrap();
        }
        assert_eq!(p.get(1), Some(vec![1, 2, 3]));
        assert_eq!(p.sum(1), Some(6));

        let ph = map(map_type::PERCPU_HASH, 2, 4, 2);
        let ph = PerCpuHashMap::<[u8; 2], u32>::try_from(&ph).unwrap();
        ph.insert(&[1, 2], 1, &9, BPF_ANY).unwrap();
        assert_eq!(ph.get(&[1, 2]), Some(vec![0, 9]));
    }
}
