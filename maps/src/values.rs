//! Where map values live: one [`Slab`] laid out slot-major, shared by every map kind.
//!
//! Layout: `slots` regions, one per per-CPU value slot (a single region for maps that are not
//! per-CPU). Region `s` holds `elems` values back to back, each `stride = round_up(value_size, 8)`
//! bytes, and is padded to a whole number of cache lines, so two workers writing their own slots
//! never share a cache line. Value `(elem, slot)` therefore starts at byte
//! `slot * region_bytes + elem * stride` of the slab: 8-byte aligned, and for a one-slot map
//! (plain arrays) element `i` is at `base + i * stride`, which the JIT and global data rely on.

use std::ptr::NonNull;

use std::sync::atomic::Ordering;

use crate::slab::{LINE_WORDS, Mem, Slab};

/// The value store of one map.
#[derive(Debug)]
pub(crate) struct Values {
    slab: Slab,
    value_size: usize,
    /// Words per value (`round_up(value_size, 8) / 8`).
    vwords: usize,
    elems: usize,
    /// Words per slot region (a multiple of a cache line).
    region_words: usize,
}

impl Values {
    /// Zeroed storage for `elems` values in each of `slots` slots; `None` when the size overflows
    /// or memory is short. The byte size asked for is returned in the error for reporting.
    pub(crate) fn new(value_size: usize, elems: usize, slots: usize) -> Result<Values, usize> {
        Self::new_in(value_size, elems, slots, &Mem::Heap)
    }

    /// As [`Values::new`], from `mem`.
    pub(crate) fn new_in(value_size: usize, elems: usize, slots: usize, mem: &Mem) -> Result<Values, usize> {
        let vwords = value_size.div_ceil(8);
        let region_words = elems
            .checked_mul(vwords)
            .and_then(|w| w.checked_next_multiple_of(LINE_WORDS))
            .ok_or(usize::MAX)?;
        let total = region_words.checked_mul(slots).ok_or(usize::MAX)?;
        let slab = Slab::zeroed_in(total, mem).ok_or(total.saturating_mul(8))?;
        Ok(Values { slab, value_size, vwords, elems, region_words })
    }

    /// First word of value `(elem, slot)`.
    #[inline]
    fn word(&self, elem: usize, slot: usize) -> usize {
        slot * self.region_words + elem * self.vwords
    }

    /// `(word offset in the shared region, words per slot region, words per value)` for values
    /// in a shared region.
    pub(crate) fn shared_layout(&self) -> Option<(usize, usize, usize)> {
        Some((self.slab.shared_offset()?, self.region_words, self.vwords))
    }

    /// `(address of value (0, 0), words per slot region, words per value)`.
    pub(crate) fn layout(&self) -> (usize, usize, usize) {
        (self.slab.base_addr(), self.region_words, self.vwords)
    }

    /// Pointer to value `(elem, slot)`.
    #[inline]
    pub(crate) fn ptr(&self, elem: usize, slot: usize) -> NonNull<u8> {
        self.slab.ptr(self.word(elem, slot))
    }

    /// Copies value `(elem, slot)` into `out` (`value_size` bytes).
    pub(crate) fn read(&self, elem: usize, slot: usize, out: &mut [u8]) {
        debug_assert_eq!(out.len(), self.value_size);
        self.slab.read(self.word(elem, slot), out);
    }

    /// Copies the first `out.len()` (at most `value_size`) bytes of value `(elem, slot)`.
    pub(crate) fn read_prefix(&self, elem: usize, slot: usize, out: &mut [u8]) {
        debug_assert!(out.len() <= self.value_size);
        self.slab.read(self.word(elem, slot), out);
    }

    /// Sets value `(elem, slot)` from `src` (`value_size` bytes).
    #[inline]
    pub(crate) fn write(&self, elem: usize, slot: usize, src: &[u8]) {
        debug_assert_eq!(src.len(), self.value_size);
        self.slab.write(self.word(elem, slot), src);
    }

    /// Sets value `(elem, slot)` of a map whose values fit one word to `word` (its bytes in
    /// memory order, zero past `value_size`).
    #[inline]
    pub(crate) fn write_word(&self, elem: usize, slot: usize, word: u64) {
        debug_assert!(self.value_size <= 8);
        self.slab.word(self.word(elem, slot)).store(word, Ordering::Relaxed);
    }

    /// Zeroes value `(elem, slot)`.
    pub(crate) fn zero(&self, elem: usize, slot: usize) {
        self.slab.zero(self.word(elem, slot), self.vwords);
    }

    /// Whether `[addr, addr + len)` lies inside the `value_size` bytes of one value, in O(1).
    /// Padding after a value and after a region never counts; an empty range never does either.
    pub(crate) fn contains(&self, addr: usize, len: usize) -> bool {
        let Some(off) = addr.checked_sub(self.slab.base_addr()) else { return false };
        if len == 0 || off >= self.slab.len() * 8 {
            return false;
        }
        let in_region = off % (self.region_words * 8);
        let stride = self.vwords * 8;
        in_region / stride < self.elems
            && (in_region % stride).checked_add(len).is_some_and(|end| end <= self.value_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_slot_major_and_line_padded() {
        // 3 values of 12 bytes (stride 16) per slot: 48 bytes, padded to one 64-byte line.
        let v = Values::new(12, 3, 2).unwrap();
        let base = v.ptr(0, 0).as_ptr() as usize;
        assert_eq!(v.ptr(2, 0).as_ptr() as usize, base + 32);
        assert_eq!(v.ptr(0, 1).as_ptr() as usize, base + 64);
        assert_eq!(base % 64, 0);
    }

    #[test]
    fn contains_counts_value_bytes_only() {
        let v = Values::new(12, 3, 2).unwrap();
        let base = v.ptr(0, 0).as_ptr() as usize;
        assert!(v.contains(base, 12));
        assert!(v.contains(base + 8, 4));
        assert!(!v.contains(base + 8, 5), "straddles into padding");
        assert!(!v.contains(base + 12, 1), "padding after a value");
        assert!(!v.contains(base + 14, 4), "straddles two values");
        assert!(v.contains(base + 32, 12), "last value of slot 0");
        assert!(!v.contains(base + 48, 1), "region padding");
        assert!(v.contains(base + 64 + 16, 8), "slot 1, value 1");
        assert!(!v.contains(base + 128, 1), "past the end");
        assert!(!v.contains(base - 1, 1), "before the start");
        assert!(!v.contains(base, 0), "empty range");
        assert!(!v.contains(base, usize::MAX), "overflowing length");
    }

    #[test]
    fn read_write_zero() {
        let v = Values::new(5, 2, 2).unwrap();
        v.write(1, 1, &[1, 2, 3, 4, 5]);
        let mut out = [0u8; 5];
        v.read(1, 1, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5]);
        v.read(1, 0, &mut out);
        assert_eq!(out, [0; 5]);
        v.zero(1, 1);
        v.read(1, 1, &mut out);
        assert_eq!(out, [0; 5]);
    }
}
