//! Network namespaces and interface names: running code inside another namespace (as
//! `ip netns exec` does) and looking up an interface's index there.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Runs `f` on a new thread that has entered network namespace `/run/netns/NAME` (as
/// `ip netns exec` would), and returns its result. Sockets created there stay in that namespace
/// wherever they are used afterwards.
///
/// # Errors
/// When the namespace cannot be opened or entered.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    let ns = File::open(format!("/run/netns/{name}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace fd we own; it changes only this (fresh) thread's network
        // namespace, which no other code relies on.
        let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

/// The index of interface `name` in the calling thread's network namespace.
///
/// # Errors
/// `ENODEV` when there is none.
pub fn ifindex_here(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a live NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 { Err(io::Error::from_raw_os_error(libc::ENODEV)) } else { Ok(i) }
}
