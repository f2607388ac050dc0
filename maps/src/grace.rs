//! Grace periods: when an element a lock-free writer may still hold can be reused.
//!
//! Hash maps update existing keys without the bucket lock (see `hash`): the writer finds the
//! element with a lock-free walk and writes the value into it. Between the find and the write a
//! concurrent delete may unlink the element; the writer then writes into a dead element, which
//! is harmless (the update is ordered before the delete), but the element must not be handed to
//! another key before that write is done. So deleted elements wait (in `hash`'s limbo lists)
//! until a grace period has passed: every thread that was inside a read section ([`enter`]) when they
//! were unlinked has left it. This is the kernel's RCU, scoped to one helper call: the read side
//! is [`enter`] (a [`Section`] until dropped), the update side [`synchronize`].
//!
//! # The read side costs two plain stores
//!
//! Each thread has a record (registered on first use, removed when the thread exits) holding a
//! sequence word that is odd while the thread is inside a section. Entering stores the odd value,
//! leaving the next even one (release), both to the thread's own cache line: no atomic
//! read-modify-write and, normally, no fence. The fence a reader would need between announcing
//! itself and reading the chain (a store followed by loads, the one reordering x86 does) is paid
//! by the other side instead: [`synchronize`] first runs `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`,
//! which makes every CPU running one of this process's threads execute a full barrier (the
//! asymmetric-fence scheme of liburcu's `urcu-memb` flavour and folly's `asymmetricHeavyBarrier`).
//! After it, for each reader one of two things holds:
//! - its odd store was made before the barrier: [`synchronize`] sees it and waits for the
//!   sequence to change, i.e. for the section to end, whose writes the release store publishes;
//! - or it was made after: then so are all of the section's loads (program order after the
//!   barrier), which see the unlinks made before [`synchronize`] was called, so the section
//!   cannot find an element unlinked earlier.
//!
//! Where `membarrier` is unavailable (an old kernel, a seccomp filter) or under Miri (no such
//! syscall; its data-race detector then checks the symmetric form), readers issue a sequentially
//! consistent fence after the odd store and [`synchronize`] one before reading the records: the
//! textbook store-fence-load pairing, correct and slower. The choice is made once, by
//! [`asymmetric`], before the first section can run.
//!
//! A thread must not call [`synchronize`] from inside a section (it would wait for itself); the
//! hash map never does: its sections span one find and one value write.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, compiler_fence, fence};
use std::sync::{Arc, Mutex, PoisonError};

/// One thread's sequence word, alone on its cache line (readers on different threads never
/// share a written line).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Record {
    seq: AtomicU64,
}

/// Every live thread's record.
static REGISTRY: Mutex<Vec<Arc<Record>>> = Mutex::new(Vec::new());

/// The calling thread's record and section depth.
struct Local {
    record: Arc<Record>,
    depth: Cell<u32>,
}

impl Local {
    fn register() -> Local {
        let record = Arc::new(Record::default());
        REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(&record));
        Local { record, depth: Cell::new(0) }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let mut all = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        all.retain(|r| !Arc::ptr_eq(r, &self.record));
    }
}

thread_local! {
    static LOCAL: Local = Local::register();
}

/// How readers and [`synchronize`] fence: not decided yet, `membarrier` (readers: no fence),
/// symmetric fences.
const UNDECIDED: u8 = 0;
const MEMBARRIER: u8 = 1;
const SYMMETRIC: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Decides, once per process, how grace periods fence, registering the process for expedited
/// `membarrier` when the kernel offers it; `true` when readers run without a fence. Call it
/// before handing out anything whose readers use [`enter`] (the hash map does so at creation).
pub(crate) fn asymmetric() -> bool {
    let mode = MODE.load(Ordering::Acquire);
    if mode != UNDECIDED {
        return mode == MEMBARRIER;
    }
    // Decided under the registry lock, so two first callers agree.
    let _registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    let mode = match MODE.load(Ordering::Acquire) {
        UNDECIDED => {
            let mode = if membarrier::register() { MEMBARRIER } else { SYMMETRIC };
            MODE.store(mode, Ordering::Release);
            mode
        }
        decided => decided,
    };
    mode == MEMBARRIER
}

/// A read section of the calling thread, from [`enter`] until dropped: an element found in a
/// map meanwhile is not reused for another key before it ends.
#[derive(Debug)]
#[must_use = "the section ends when this is dropped"]
pub(crate) struct Section {
    /// The thread's section depth before this one, and its sequence word then.
    depth: u32,
    start: u64,
    /// A section belongs to its thread (its end is a store to that thread's record).
    _thread: std::marker::PhantomData<*const ()>,
}

/// Enters a read section; `None` when the thread's record is gone (code running in a
/// thread-local destructor): callers then take their locked path.
#[inline(always)]
pub(crate) fn enter() -> Option<Section> {
    LOCAL
        .try_with(|local| {
            let depth = local.depth.get();
            let seq = &local.record.seq;
            let start = seq.load(Ordering::Relaxed);
            local.depth.set(depth + 1);
            if depth == 0 {
                // Only this thread writes its record: a load and a store, no read-modify-write.
                seq.store(start | 1, Ordering::Relaxed);
                if MODE.load(Ordering::Relaxed) == MEMBARRIER {
                    // The heavy side (`synchronize`'s membarrier) orders this store before the
                    // section's loads; only the compiler must not move them.
                    compiler_fence(Ordering::SeqCst);
                } else {
                    fence(Ordering::SeqCst);
                }
            }
            Section { depth, start, _thread: std::marker::PhantomData }
        })
        .ok()
}

impl Drop for Section {
    #[inline(always)]
    fn drop(&mut self) {
        // The record outlives the section: it was alive at `enter`, and a thread's locals are
        // destroyed only after the code that holds this section has returned.
        let _ = LOCAL.try_with(|local| {
            local.depth.set(self.depth);
            if self.depth == 0 {
                // Release: the section's writes (the value written into the element) happen
                // before a `synchronize` that sees this store.
                local.record.seq.store((self.start | 1) + 1, Ordering::Release);
            }
        });
    }
}

/// Runs `f` inside a read section ([`enter`]); `None` (and `f` not run) when the thread cannot
/// enter one.
#[cfg(test)]
pub(crate) fn read<R>(f: impl FnOnce() -> R) -> Option<R> {
    let _section = enter()?;
    Some(f())
}

/// Waits until every read section that was running when it was called has ended. Elements
/// unlinked before the call may be reused once it returns.
///
/// Costs a `membarrier` system call (an inter-processor interrupt to the CPUs running this
/// process's other threads, microseconds) plus a pass over the thread records: call it for a
/// batch of elements, not for one.
pub(crate) fn synchronize() {
    if asymmetric() {
        // Every thread of the process passes a full barrier. Registered, the call cannot fail
        // (its errors are an unregistered process and an unknown command); readers then run
        // without a fence, so going on without one would be unsound.
        assert!(membarrier::barrier(), "membarrier failed after registering");
    } else {
        // Pairs with the readers' fences (and is all Miri needs).
        fence(Ordering::SeqCst);
    }
    // Before taking the registry: a first use of `LOCAL` registers, which takes it too.
    let own = LOCAL.try_with(|l| Arc::as_ptr(&l.record)).ok();
    let all = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    for record in all.iter() {
        let seq = record.seq.load(Ordering::Acquire);
        if seq & 1 == 0 {
            continue;
        }
        debug_assert!(own != Some(Arc::as_ptr(record)), "synchronize from inside a read section");
        let mut spins = 0u32;
        while record.seq.load(Ordering::Acquire) == seq {
            if spins < 256 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                // The reader may be descheduled inside its section.
                std::thread::yield_now();
            }
        }
    }
}

/// The `membarrier(2)` calls.
#[cfg(all(target_os = "linux", not(miri)))]
mod membarrier {
    const CMD_QUERY: libc::c_long = 0;
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> libc::c_long {
        // SAFETY: membarrier(cmd, flags = 0, cpu_id = 0) takes no pointers and touches no memory
        // of ours; an unsupported command only returns -1 with errno set.
        unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) }
    }

    /// Registers the process for `MEMBARRIER_CMD_PRIVATE_EXPEDITED`; `false` when the kernel
    /// lacks it.
    pub(super) fn register() -> bool {
        let supported = call(CMD_QUERY);
        supported >= 0 && supported & CMD_PRIVATE_EXPEDITED != 0 && call(CMD_REGISTER_PRIVATE_EXPEDITED) == 0
    }

    /// A full barrier on every CPU running a thread of this process; `false` if it failed.
    pub(super) fn barrier() -> bool {
        call(CMD_PRIVATE_EXPEDITED) == 0
    }
}

#[cfg(not(all(target_os = "linux", not(miri))))]
mod membarrier {
    pub(super) fn register() -> bool {
        false
    }

    pub(super) fn barrier() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use super::*;

    #[test]
    fn sections_nest_and_leave_even() {
        asymmetric();
        let seq = || LOCAL.with(|l| l.record.seq.load(Ordering::Relaxed));
        let before = seq();
        assert_eq!(before & 1, 0);
        let inner = read(|| {
            assert_eq!(seq() & 1, 1);
            read(seq).unwrap()
        })
        .unwrap();
        assert_eq!(inner & 1, 1, "still inside after the nested section");
        assert_eq!(seq(), before + 2);
        synchronize();
    }

    /// A writer "unlinks" a slot (sets it to 0) and, after `synchronize`, "reuses" it (writes a
    /// poison value); a reader that saw the slot live inside a section must never see the poison
    /// during that section.
    #[test]
    fn synchronize_waits_for_sections_that_saw_the_old_state() {
        let rounds = if cfg!(miri) { 20 } else { 2000 };
        let live = AtomicBool::new(true);
        let value = AtomicU64::new(1);
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    read(|| {
                        if live.load(Ordering::Acquire) {
                            for _ in 0..4 {
                                assert_ne!(value.load(Ordering::Relaxed), u64::MAX, "reused under a reader");
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
            });
            for _ in 0..rounds {
                live.store(false, Ordering::Relaxed);
                synchronize();
                value.store(u64::MAX, Ordering::Relaxed);
                value.store(1, Ordering::Relaxed);
                live.store(true, Ordering::Release);
                synchronize();
            }
            stop.store(true, Ordering::Relaxed);
        });
    }
}
