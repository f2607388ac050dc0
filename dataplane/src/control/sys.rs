//! The two raw calls the control plane needs: the peer's credentials on a Unix socket
//! (`SO_PEERCRED`, which std has only on nightly) and SIGHUP / SIGUSR1 handlers that set a flag.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

/// The connecting process's (pid, uid), as the kernel recorded them at `connect(2)`.
///
/// # Errors
/// When `getsockopt` fails.
pub fn peer_cred(stream: &UnixStream) -> io::Result<(i32, u32)> {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes at most `len` bytes, a `struct ucred`, into `cred`, which is a
    // live, exclusively borrowed `libc::ucred` of exactly that size; the fd is open (borrowed
    // from `stream`).
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::from_mut(&mut cred).cast(),
            &raw mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((cred.pid, cred.uid))
}

static SIGHUP_SEEN: AtomicBool = AtomicBool::new(false);
static SIGUSR1_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    // Async-signal-safe: one atomic store.
    match sig {
        libc::SIGHUP => SIGHUP_SEEN.store(true, Ordering::Relaxed),
        libc::SIGUSR1 => SIGUSR1_SEEN.store(true, Ordering::Relaxed),
        _ => {}
    }
}

fn catch(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: an all-zero `sigaction` is a valid value (empty mask, no flags); we then set the
    // handler to `on_signal`, an `extern "C" fn(c_int)` that only stores to an atomic, which is
    // async-signal-safe. `sigemptyset` gets a pointer to the live mask field.
    let r = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        act.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&raw mut act.sa_mask);
        libc::sigaction(sig, &raw const act, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes SIGHUP set a flag [`take_sighup`] reads, instead of ending the process (installed
/// after the Ctrl-C handler, whose `termination` feature also claims SIGHUP).
///
/// # Errors
/// When `sigaction` fails.
pub fn catch_sighup() -> io::Result<()> {
    catch(libc::SIGHUP)
}

/// Whether a SIGHUP came since the last call.
pub fn take_sighup() -> bool {
    SIGHUP_SEEN.swap(false, Ordering::Relaxed)
}

/// Makes SIGUSR1 set a flag [`take_sigusr1`] reads (print the tracing maps now, as `bpftrace`
/// does on SIGUSR1), instead of ending the process.
///
/// # Errors
/// When `sigaction` fails.
pub fn catch_sigusr1() -> io::Result<()> {
    catch(libc::SIGUSR1)
}

/// Whether a SIGUSR1 came since the last call.
pub fn take_sigusr1() -> bool {
    SIGUSR1_SEEN.swap(false, Ordering::Relaxed)
}

/// Waits until `fd` is readable (a listener: a connection is waiting) or `timeout` passes.
/// Returns whether it is readable.
pub fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> bool {
    let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one live, exclusively borrowed pollfd and a count of 1; the fd is open (borrowed
    // from its owner for the call).
    let r = unsafe { libc::poll(&raw mut pfd, 1, ms) };
    r > 0 && pfd.revents & libc::POLLIN != 0
}

/// Lowers the calling thread to nice 19, so control-plane work yields the CPU to the workers
/// (and to anything else) wherever they share a core. Best effort.
pub fn lower_priority() {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on our own thread id (PRIO_PROCESS with a tid sets that thread's nice
    // value on Linux); no memory is passed.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19) };
}
