//! Small raw syscalls around the AF_XDP path: TAP devices for `XDP_PASS`. AF_PACKET sockets for
//! the lab's traffic (and the tests') and running code inside another network namespace live in
//! the shared `xsk` crate (pktgen uses them too) and are re-exported here.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

pub use xsk::netns::{Queues, ifindex_here, in_netns, queues_here};
pub use xsk::packet::PacketSocket;

const IFNAMSIZ: usize = 16;

#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens (creating) TAP device `name`, without packet-information headers. The device lives as
/// long as the returned file: closing it (or the process ending) removes it.
///
/// # Errors
/// When `/dev/net/tun` is missing or `TUNSETIFF` fails.
pub fn open_tap(name: &str) -> io::Result<File> {
    if name.len() >= IFNAMSIZ {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let file = std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
    let mut req = IfReqFlags {
        name: [0; IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads (and writes back the name into) a `struct ifreq`, of which
    // `IfReqFlags` has the layout (16-byte name, short flags, padding to 40 bytes); it is live
    // and exclusively borrowed for the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, std::ptr::from_mut(&mut req)) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

const _: () = assert!(size_of::<IfReqFlags>() == 40);
