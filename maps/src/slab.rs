//! Word-addressed, zero-initialized, cache-line-aligned backing memory for map keys and values.
//!
//! This module's `unsafe` does three things: a fallible `alloc_zeroed` of atomics (held as a raw
//! allocation, freed on drop), the view of that allocation as a slice, and the cached base pointer
//! through which words are reached without re-slicing. Everything else in the crate works on
//! `&AtomicU64`s with safe code. (`shm` maps shared regions; `typed` views `Pod` values as bytes.)
//!
//! Invariants (relied on by every map kind):
//! - the memory never moves and is never freed while the [`Slab`] lives, so pointers handed to
//!   programs stay valid for the map's lifetime;
//! - all of it is `AtomicU64`, i.e. `UnsafeCell`-backed: programs may write through the raw pointers
//!   from [`Slab::ptr`] while other threads read through `&AtomicU64` without `&mut` aliasing; the
//!   crate's own copies are relaxed atomic word accesses, so they never form a data race in the Rust
//!   memory model (program-side plain accesses race exactly as eBPF's semantics say they do);
//! - word 0 of the slab is 64-byte aligned, so per-slot regions padded to 8 words never share a cache
//!   line between workers (house style 6).

use std::alloc::{Layout, alloc_zeroed};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::shm::Region;

/// Words in a 64-byte cache line.
pub(crate) const LINE_WORDS: usize = 8;

/// A fixed-size, zeroed array of 64-bit words.
#[derive(Debug)]
pub(crate) struct Slab {
    words: Backing,
    /// First word of the usable, 64-byte-aligned part of `words`.
    start: usize,
    len: usize,
    /// `words.all()[start..]`'s first word, cached: the hot paths then cost the same for heap
    /// and shared slabs (no backing match, no re-slicing).
    base: NonNull<AtomicU64>,
}

// SAFETY: `base` points into the memory `words` owns (a `Box` or an `Arc<Region>`, both `Send`
// and `Sync`) and is only ever turned into `&AtomicU64`s, which are `Sync`.
unsafe impl Send for Slab {}
// SAFETY: as above.
unsafe impl Sync for Slab {}

/// Where a slab's words live: the heap, or a range of a shared region (see `store`).
///
/// Heap memory is held as a raw allocation rather than a `Box`: moving a `Box` asserts unique
/// ownership of its contents, which would invalidate the cached `Slab::base` pointer (and the
/// pointers handed to programs) under Rust's aliasing rules.
#[derive(Debug)]
enum Backing {
    /// `words` zeroed words from the global allocator with `Layout::array::<AtomicU64>(words)`.
    Heap { ptr: NonNull<AtomicU64>, words: usize },
    /// `words` words from word `offset` of the region.
    Shared { region: Arc<Region>, offset: usize, words: usize },
}

impl Backing {
    #[inline]
    fn all(&self) -> &[AtomicU64] {
        match self {
            // SAFETY: `ptr` is a live allocation of `words` initialized (zeroed) `AtomicU64`s,
            // owned by this backing until drop; only shared references are made.
            Backing::Heap { ptr, words } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *words) },
            Backing::Shared { region, offset, words } => &region.words()[*offset..*offset + *words],
        }
    }
}

impl Drop for Backing {
    fn drop(&mut self) {
        if let Backing::Heap { ptr, words } = self {
            let layout = Layout::array::<AtomicU64>(*words).expect("the layout it was allocated with");
            // SAFETY: `ptr` was allocated by `alloc_zeroed_words` with exactly this layout and is
            // freed only here, once; the slab owning this backing is being dropped, so no
            // reference into it remains.
            unsafe { std::alloc::dealloc(ptr.as_ptr().cast(), layout) };
        }
    }
}

/// Where new slabs come from: the heap, or a shared region's bump allocator.
#[derive(Debug, Clone, Default)]
pub(crate) enum Mem {
    #[default]
    Heap,
    Shared(Arc<crate::store::Arena>),
}

impl Slab {
    /// `len` zeroed words, or `None` when the size overflows or the allocator refuses.
    pub(crate) fn zeroed(len: usize) -> Option<Slab> {
        // One cache line of slack so the usable part can start on a line boundary.
        let total = len.max(1).checked_add(LINE_WORDS - 1)?;
        let ptr = alloc_zeroed_words(total)?;
        let addr = ptr.as_ptr() as usize;
        let start = (64 - addr % 64) % 64 / 8;
        Some(Slab::with(Backing::Heap { ptr, words: total }, start, len))
    }

    /// `len` zeroed words from `mem`.
    pub(crate) fn zeroed_in(len: usize, mem: &Mem) -> Option<Slab> {
        match mem {
            Mem::Heap => Slab::zeroed(len),
            Mem::Shared(arena) => {
                // Region allocations are cache-line aligned already.
                let (region, offset) = arena.alloc(len.max(1))?;
                Some(Slab::with(Backing::Shared { region, offset, words: len.max(1) }, 0, len))
            }
        }
    }

    fn with(words: Backing, start: usize, len: usize) -> Slab {
        let all = words.all();
        assert!(start + len <= all.len(), "slab range inside its backing");
        // `wrapping_add` within (or one past) the allocation keeps the slice's provenance.
        let base = NonNull::from(all).cast::<AtomicU64>().as_ptr().wrapping_add(start);
        let base = NonNull::new(base).expect("a pointer into a live allocation is never null");
        Slab { words, start, len, base }
    }

    /// Word offset of word 0 in its shared region, for shared slabs.
    pub(crate) fn shared_offset(&self) -> Option<usize> {
        match &self.words {
            Backing::Heap { .. } => None,
            Backing::Shared { offset, .. } => Some(*offset + self.start),
        }
    }

    /// Number of usable words.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Word `i`. Panics when `i >= len()`: indexes come from the crate's own layout arithmetic,
    /// so a panic here is a bug in this crate, never bad input.
    #[inline]
    pub(crate) fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "slab word {i} out of range");
        // SAFETY: `i < len` and `base..base + len` lies inside the backing (checked in `with`),
        // which `self` keeps alive and never moves; the word is initialized (zeroed at creation,
        // then written only atomically or through program pointers into `UnsafeCell` memory), and
        // only shared references are made.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    /// The usable words `[i, i + n)`. Panics when they are not all inside the slab (a bug in
    /// this crate's layout arithmetic, as for [`Slab::word`]).
    #[inline]
    pub(crate) fn words(&self, i: usize, n: usize) -> &[AtomicU64] {
        assert!(i <= self.len && n <= self.len - i, "slab words {i}..{i}+{n} out of range");
        // SAFETY: `[i, i + n)` lies inside `base..base + len` (just asserted), which lies inside
        // the backing (checked in `with`) that `self` keeps alive and never moves; the words are
        // initialized atomics and only shared references are made, as in `word`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(i), n) }
    }

    /// Address of word 0.
    #[inline]
    pub(crate) fn base_addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Pointer to word `i`, valid for reads and writes of the rest of the slab for its lifetime.
    ///
    /// Derived from the whole boxed slice (not from one element's reference), so its provenance
    /// covers every word; writing through it is allowed because every byte is inside an
    /// `UnsafeCell` (`AtomicU64`).
    #[inline]
    pub(crate) fn ptr(&self, i: usize) -> NonNull<u8> {
        assert!(i < self.len, "slab word {i} out of range");
        let p = self.base.as_ptr().wrapping_add(i).cast::<u8>();
        NonNull::new(p).expect("a pointer into a live allocation is never null")
    }

    /// Copies `out.len()` bytes starting at word `i` into `out` (memory order).
    pub(crate) fn read(&self, i: usize, out: &mut [u8]) {
        let words = self.words(i, out.len().div_ceil(8));
        for (chunk, word) in out.chunks_mut(8).zip(words) {
            unpad_word(word.load(Ordering::Relaxed), chunk);
        }
    }

    /// Copies `src` to the words starting at word `i`; the tail of a partial last word is zeroed
    /// (it is padding no reader ever sees as value bytes).
    #[inline(always)]
    pub(crate) fn write(&self, i: usize, src: &[u8]) {
        // One word (u64 counters, the common value) without the loop.
        if let Ok(word) = <[u8; 8]>::try_from(src) {
            self.word(i).store(u64::from_ne_bytes(word), Ordering::Relaxed);
        } else {
            self.write_words(i, src);
        }
    }

    fn write_words(&self, i: usize, src: &[u8]) {
        let (full, tail) = src.as_chunks::<8>();
        let words = self.words(i, src.len().div_ceil(8));
        for (chunk, word) in full.iter().zip(words) {
            word.store(u64::from_ne_bytes(*chunk), Ordering::Relaxed);
        }
        if !tail.is_empty() {
            words[full.len()].store(pad_word(tail), Ordering::Relaxed);
        }
    }

    /// Copies `src` to the bytes starting at byte offset `byte` (any alignment), leaving the other
    /// bytes of partly written words as they were.
    pub(crate) fn write_bytes(&self, byte: usize, src: &[u8]) {
        let mut at = 0;
        while at < src.len() {
            let pos = byte + at;
            let (w, off) = (pos / 8, pos % 8);
            let n = (8 - off).min(src.len() - at);
            let word = self.word(w);
            if n == 8 {
                word.store(pad_word(&src[at..at + 8]), Ordering::Relaxed);
            } else {
                let mut bytes = word.load(Ordering::Relaxed).to_ne_bytes();
                bytes[off..off + n].copy_from_slice(&src[at..at + n]);
                word.store(u64::from_ne_bytes(bytes), Ordering::Relaxed);
            }
            at += n;
        }
    }

    /// Zeroes words `[i, i + n)`.
    #[inline]
    pub(crate) fn zero(&self, i: usize, n: usize) {
        for word in self.words(i, n) {
            word.store(0, Ordering::Relaxed);
        }
    }
}

/// Up to 8 bytes as a native-endian word, zero-padded: the form keys and values take in a slab.
///
/// Built in registers from at most three loads (4 + 2 + 1 bytes): a variable-length
/// `copy_from_slice` into a stack buffer becomes a `memcpy` call, and narrow stores read back as
/// one word stall store forwarding; either costs more than the whole hash lookup it sits in.
#[inline]
pub(crate) fn pad_word(chunk: &[u8]) -> u64 {
    if let Ok(full) = <[u8; 8]>::try_from(chunk) {
        return u64::from_ne_bytes(full);
    }
    // The value `u64::from_le_bytes` would give for the padded bytes...
    let (mut v, mut at) = (0u64, 0);
    if let Some(four) = chunk.first_chunk::<4>().filter(|_| chunk.len() & 4 != 0) {
        v = u64::from(u32::from_le_bytes(*four));
        at = 4;
    }
    if chunk.len() & 2 != 0 {
        v |= u64::from(u16::from_le_bytes([chunk[at], chunk[at + 1]])) << (8 * at);
        at += 2;
    }
    if chunk.len() & 1 != 0 {
        v |= u64::from(chunk[at]) << (8 * at);
    }
    // ...which is the native-endian one on little-endian targets, byte-swapped on big-endian.
    u64::from_le(v)
}

/// The first `out.len()` (at most 8) bytes of `word` in memory order; the inverse of [`pad_word`].
#[inline]
pub(crate) fn unpad_word(word: u64, out: &mut [u8]) {
    let bytes = word.to_ne_bytes();
    if let Ok(full) = <&mut [u8; 8]>::try_from(&mut *out) {
        *full = bytes;
        return;
    }
    let mut at = 0;
    if out.len() & 4 != 0 {
        out[..4].copy_from_slice(&bytes[..4]);
        at = 4;
    }
    if out.len() & 2 != 0 {
        out[at..at + 2].copy_from_slice(&bytes[at..at + 2]);
        at += 2;
    }
    if out.len() & 1 != 0 {
        out[at] = bytes[at];
    }
}

/// `n > 0` zeroed words (`Layout::array::<AtomicU64>(n)`), without aborting when memory is
/// short. All-zero bytes are a valid `AtomicU64` (value 0), so the words are initialized.
fn alloc_zeroed_words(n: usize) -> Option<NonNull<AtomicU64>> {
    assert!(n > 0, "zero-sized slabs are never requested");
    let layout = Layout::array::<AtomicU64>(n).ok()?;
    // SAFETY: `layout` has a non-zero size: `n > 0` is asserted just above and `AtomicU64` is 8 bytes.
    let raw = unsafe { alloc_zeroed(layout) };
    Some(NonNull::new(raw)?.cast::<AtomicU64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_and_line_aligned() {
        let slab = Slab::zeroed(100).unwrap();
        assert_eq!(slab.len(), 100);
        assert_eq!(slab.base_addr() % 64, 0);
        assert!((0..100).all(|i| slab.word(i).load(Ordering::Relaxed) == 0));
        assert_eq!(slab.ptr(3).as_ptr() as usize, slab.base_addr() + 24);
    }

    #[test]
    fn read_write_partial_words() {
        let slab = Slab::zeroed(4).unwrap();
        slab.word(1).store(u64::MAX, Ordering::Relaxed);
        slab.write(0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        let mut out = [0u8; 11];
        slab.read(0, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        // The partial last word's tail is zeroed, not left over.
        assert_eq!(slab.word(1).load(Ordering::Relaxed).to_ne_bytes()[3..], [0; 5]);
        slab.zero(0, 2);
        slab.read(0, &mut out);
        assert_eq!(out, [0; 11]);
    }

    #[test]
    fn pad_and_unpad_every_length() {
        let src: Vec<u8> = (1..=8).collect();
        for n in 0..=8 {
            let w = pad_word(&src[..n]);
            let mut expect = [0u8; 8];
            expect[..n].copy_from_slice(&src[..n]);
            assert_eq!(w.to_ne_bytes(), expect, "length {n}");
            let mut out = vec![0xee; n];
            unpad_word(w, &mut out);
            assert_eq!(out, &src[..n]);
        }
    }

    #[test]
    fn refuses_absurd_sizes() {
        assert!(Slab::zeroed(usize::MAX).is_none());
        assert!(Slab::zeroed(usize::MAX / 8).is_none());
    }
}
