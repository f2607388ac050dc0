//! A small test-and-test-and-set spinlock for the maps whose writers serialize on one lock, as
//! their kernel counterparts do (queue/stack, LPM trie, ring buffer producers).
//!
//! It yields the thread after a while: a userspace lock holder can be preempted, and spinning
//! against a descheduled holder only burns its time slice.

use std::sync::atomic::{AtomicBool, Ordering};

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
