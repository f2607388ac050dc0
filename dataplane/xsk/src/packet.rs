//! Raw AF_PACKET sockets: whole Ethernet frames out of and into one interface, for traffic where
//! AF_XDP is not wanted or not available (the lab's peer, tests, pktgen's fallback).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// A raw AF_PACKET socket bound to one interface: sends whole Ethernet frames, receives every
/// frame arriving on the interface (not the ones it sent).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a socket on interface `ifindex` of the calling thread's network namespace,
    /// bypassing the qdisc on send.
    ///
    /// # Errors
    /// When the socket cannot be created or bound (no privilege, no interface).
    pub fn open(ifindex: u32) -> io::Result<Self> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, i32::from(proto)) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: an int option read by the kernel from a live local. Failure only costs speed.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                std::ptr::from_ref(&one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: all-zeroes is a valid sockaddr_ll.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a live sockaddr_ll whose size is passed; the kernel only reads it.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::from_ref(&sll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, ifindex })
    }

    /// Sends frames with one `sendmmsg`; returns how many the kernel took.
    ///
    /// # Errors
    /// The send's error when it took none.
    pub fn send_batch(&self, frames: &[&[u8]]) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec { iov_base: f.as_ptr().cast_mut().cast(), iov_len: f.len() })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: all-zeroes is a valid msghdr (null name and control).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every header points at one iovec that points into a frame borrowed for the
        // call; the kernel only reads them (and writes `msg_len` into the headers we own).
        let r =
            unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r as usize) }
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUFFORCE`, which root may set past
    /// `rmem_max`; falls back to `SO_RCVBUF`), so a counting receiver that falls behind for a
    /// moment loses nothing.
    ///
    /// # Errors
    /// When neither option can be set.
    pub fn set_rcvbuf(&self, bytes: usize) -> io::Result<()> {
        let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: an int option read by the kernel from a live local.
            let r = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    std::ptr::from_ref(&v).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if r == 0 {
                return Ok(());
            }
        }
        Err(io::Error::last_os_error())
    }

    /// Frames the kernel dropped for this socket since the last call (its receive buffer was
    /// full: the reader fell behind), from `PACKET_STATISTICS`, which resets on read.
    ///
    /// # Errors
    /// When the getsockopt fails.
    pub fn take_drops(&self) -> io::Result<u64> {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into the exclusively borrowed `st`, a
        // struct of two integers.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::from_mut(&mut st).cast(),
                &mut len,
            )
        };
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(u64::from(st.tp_drops)) }
    }

    /// Receives up to `lens.len()` frames that arrived on the interface with one `recvmmsg`,
    /// frame `i` into `buf[i * cap..(i + 1) * cap]`, its length into `lens[i]` (0 for a frame
    /// this socket sent or that arrived elsewhere, which the caller skips), waiting up to
    /// `timeout` for the first; returns how many entries it filled (0 on timeout).
    ///
    /// # Errors
    /// When poll or recvmmsg fails, or `buf` is shorter than `lens.len() * cap`.
    pub fn recv_batch(
        &self,
        buf: &mut [u8],
        cap: usize,
        lens: &mut [usize],
        timeout: Duration,
    ) -> io::Result<usize> {
        if cap == 0 || buf.len() < lens.len() * cap {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, count 1.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as libc::c_int) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if r == 0 {
            return Ok(0);
        }
        // SAFETY: all-zeroes is a valid sockaddr_ll.
        let mut addrs: Vec<libc::sockaddr_ll> = vec![unsafe { std::mem::zeroed() }; lens.len()];
        let mut iovs: Vec<libc::iovec> = buf
            .chunks_exact_mut(cap)
            .take(lens.len())
            .map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: cap })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: all-zeroes is a valid msghdr (null name and control).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_name = std::ptr::from_mut(addr).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                h
            })
            .collect();
        // SAFETY: each header points at one iovec over its own `cap`-byte chunk of the
        // exclusively borrowed `buf` and at its own sockaddr_ll of the size given; the kernel
        // writes only inside those and into the headers' `msg_len`, all owned here and live for
        // the call.
        let n = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(e) };
        }
        let n = n as usize;
        for ((len, msg), addr) in lens.iter_mut().zip(&msgs).zip(&addrs).take(n) {
            let ours = addr.sll_pkttype != libc::PACKET_OUTGOING && addr.sll_ifindex == self.ifindex;
            *len = if ours { msg.msg_len as usize } else { 0 };
        }
        Ok(n)
    }

    /// Receives one frame that arrived on the interface into `buf`, waiting up to `timeout`;
    /// `None` on timeout.
    ///
    /// # Errors
    /// When poll or recv fails.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one live pollfd, count 1.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(60_000) as libc::c_int) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            if r == 0 {
                return Ok(None);
            }
            // SAFETY: all-zeroes is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: the kernel writes at most `buf.len()` bytes into the exclusively borrowed
            // `buf` and at most `len` bytes of address into `sll`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    std::ptr::from_mut(&mut sll).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    continue;
                }
                return Err(e);
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING || sll.sll_ifindex != self.ifindex {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }
}
