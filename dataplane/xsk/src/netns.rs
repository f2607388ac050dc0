//! Network namespaces and interface names: running code inside another namespace (as
//! `ip netns exec` does) and looking up an interface's index and queue counts there.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

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

/// An interface's queue counts, as the kernel reports them over rtnetlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queues {
    pub rx: u32,
    pub tx: u32,
}

// include/uapi/linux/rtnetlink.h and if_link.h.
const RTM_GETLINK: u16 = 18;
const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const IFLA_NUM_RX_QUEUES: u16 = 32;

/// `struct nlmsghdr` followed by `struct ifinfomsg`: an `RTM_GETLINK` request for one index.
#[repr(C)]
#[derive(Default)]
struct LinkRequest {
    len: u32,
    kind: u16,
    flags: u16,
    seq: u32,
    pid: u32,
    family: u8,
    pad: u8,
    if_type: u16,
    index: i32,
    if_flags: u32,
    change: u32,
}

const _: () = assert!(size_of::<LinkRequest>() == 32);

/// The RX and TX queue counts of interface `name` in the calling thread's network namespace.
///
/// Asked over rtnetlink (`RTM_GETLINK`) rather than read from `/sys/class/net`: sysfs shows the
/// namespace it was mounted in, not the one a thread entered with [`in_netns`], so a sender
/// inside a lab namespace would count the queues of a host interface of the same name (or of
/// none).
///
/// # Errors
/// `ENODEV` when there is no such interface; the socket's error when netlink fails.
pub fn queues_here(name: &str) -> io::Result<Queues> {
    let index = ifindex_here(name)?;
    // SAFETY: plain socket(2); the result is checked and owned below.
    let raw =
        unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let req = LinkRequest {
        len: size_of::<LinkRequest>() as u32,
        kind: RTM_GETLINK,
        flags: NLM_F_REQUEST,
        seq: 1,
        index: i32::try_from(index).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?,
        ..LinkRequest::default()
    };
    // SAFETY: sends the live `req`, `size_of` bytes of it, to the kernel (no address: netlink's
    // default destination is the kernel); nothing is written.
    let r =
        unsafe { libc::send(fd.as_raw_fd(), std::ptr::from_ref(&req).cast(), size_of::<LinkRequest>(), 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live, exclusively borrowed buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_link_reply(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The queue counts in an `RTM_NEWLINK` reply (its attributes follow the 16-byte `nlmsghdr`
/// and the 16-byte `ifinfomsg`); a netlink error reply becomes its errno.
fn parse_link_reply(msg: &[u8]) -> io::Result<Queues> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed rtnetlink reply");
    let len = (u32_at(msg, 0).ok_or_else(bad)? as usize).min(msg.len());
    match u16_at(msg, 4).ok_or_else(bad)? {
        NLMSG_ERROR => {
            let errno = i32::from_ne_bytes(u32_at(msg, 16).ok_or_else(bad)?.to_ne_bytes());
            return Err(io::Error::from_raw_os_error(
                errno.checked_neg().filter(|&e| e > 0).unwrap_or(libc::EIO),
            ));
        }
        RTM_NEWLINK => {}
        _ => return Err(bad()),
    }
    let (mut rx, mut tx) = (None, None);
    let mut at = 32;
    while at + 4 <= len {
        let alen = u16_at(msg, at).ok_or_else(bad)? as usize;
        let kind = u16_at(msg, at + 2).ok_or_else(bad)? & 0x3fff;
        if alen < 4 || at + alen > len {
            return Err(bad());
        }
        match kind {
            IFLA_NUM_RX_QUEUES => rx = u32_at(msg, at + 4),
            IFLA_NUM_TX_QUEUES => tx = u32_at(msg, at + 4),
            _ => {}
        }
        at += alen.next_multiple_of(4);
    }
    Ok(Queues { rx: rx.ok_or_else(bad)?, tx: tx.ok_or_else(bad)? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_one_queue_each_way() {
        // Every namespace has `lo`, with one RX and one TX queue; no privilege needed.
        assert_eq!(queues_here("lo").unwrap(), Queues { rx: 1, tx: 1 });
    }

    #[test]
    fn a_missing_interface_is_enodev() {
        assert_eq!(queues_here("no-such-if0").unwrap_err().raw_os_error(), Some(libc::ENODEV));
    }

    #[test]
    fn replies_are_parsed_and_checked() {
        let mut m = vec![0u8; 32];
        m[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        for (kind, v) in [(IFLA_NUM_TX_QUEUES, 4u32), (3, 7), (IFLA_NUM_RX_QUEUES, 2)] {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&v.to_ne_bytes());
        }
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_link_reply(&m).unwrap(), Queues { rx: 2, tx: 4 });
        // An attribute running past the message, and an error reply.
        let mut cut = m.clone();
        cut[32..34].copy_from_slice(&200u16.to_ne_bytes());
        assert!(parse_link_reply(&cut).is_err());
        let mut err = vec![0u8; 36];
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        err[..4].copy_from_slice(&36u32.to_ne_bytes());
        assert_eq!(parse_link_reply(&err).unwrap_err().raw_os_error(), Some(libc::ENODEV));
    }
}
