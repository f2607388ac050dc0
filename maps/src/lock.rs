//! A small test-and-test-and-set spinlock for the maps whose writers serialize on one lock, as
//! their kernel counterparts do (queue/stack, LPM trie, ring buffer producers).
//!
//! It yields the thread after a while: a userspace lock holder can be preempted, and spinning
//! against a descheduled holder only burns its time slice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

/// The lock word.
#[derive(Debug, Default)]
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

impl SpinLock {
    pub(crate) fn lock(&self) -> SpinGuard<'_> {
        let mut spins = 0u32;
        while self.locked.compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 256 {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        SpinGuard { lock: self }
    }
}

/// A sequence counter (the count of a seqlock; writers serialize on a lock of their own): a
/// writer brackets each change with [`SeqCount::begin`] and [`SeqCount::end`], the count odd
/// in between, and a reader ([`SeqCount::read`]) keeps what it read only when the count was
/// even and the same before and after.
#[derive(Debug, Default)]
pub(crate) struct SeqCount {
    seq: AtomicU64,
}

impl SeqCount {
    /// Reads tried before [`SeqCount::read`] gives up (the caller then takes the writers' lock).
    const TRIES: usize = 4;

    /// Opens a write (the writers' lock held): the count is odd until [`SeqCount::end`].
    pub(crate) fn begin(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        // The odd count is visible before any of the writes that follow.
        fence(Ordering::Release);
    }

    /// Closes the write [`SeqCount::begin`] opened.
    pub(crate) fn end(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    /// What `read` returned in a run no write overlapped; `None` when writers kept the count
    /// moving through a few tries. `read` must cope with torn data (its result is dropped).
    #[inline(always)]
    pub(crate) fn read<T>(&self, mut read: impl FnMut() -> T) -> Option<T> {
        for _ in 0..Self::TRIES {
            let s = self.seq.load(Ordering::Acquire);
            if s & 1 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let v = read();
            // The reads above happen before the second look at the count.
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s {
                return Some(v);
            }
        }
        None
    }
}

/// Holds the lock; unlocks on drop.
#[derive(Debug)]
pub(crate) struct SpinGuard<'a> {
    lock: &'a SpinLock,
}

impl Drop for SpinGuard<'_> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}
