//! The thread's CPU clock.
#![expect(unsafe_code, reason = "clock_gettime through libc")]

/// `CLOCK_THREAD_CPUTIME_ID` in nanoseconds: CPU time this thread has used (user and system),
/// excluding time other tasks ran. The kernel's test-run timer leaves that time out too (it
/// stops while the loop yields), so this is the clock to compare with the kernel's figures.
#[must_use]
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID exists on Linux");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_PROCESS_CPUTIME_ID` in nanoseconds: CPU time every thread of this process has used.
#[must_use]
pub fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "CLOCK_PROCESS_CPUTIME_ID exists on Linux");
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
