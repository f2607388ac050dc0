//! AF_XDP sockets through the raw syscalls: `socket(AF_XDP)`, `XDP_UMEM_REG`, the four ring
//! `setsockopt`s, `mmap` of the rings and `bind` to one (interface, queue).
//!
//! Why not `xsk-rs` (DESIGN.md's choice; it does build here, with libxdp and libbpf vendored):
//! its `FrameDesc` keeps each frame's address fixed at the start of the frame's data segment
//! (`addr` is `pub(crate)`), so a frame whose start an XDP program moved with
//! `bpf_xdp_adjust_head` (the balancer's encapsulation) or `bpf_xdp_adjust_meta` cannot be
//! transmitted without moving the packet back; and it gives no slice over a whole chunk
//! (headroom, packet and tailroom), which is what an `XdpBuff` describes. The raw interface is
//! also ~400 lines, and keeps the libxdp/libbpf C build out of every workspace build.
//!
//! Ownership invariant that makes the frame accesses sound: every UMEM chunk is in exactly one
//! place — our free list, the fill ring, the kernel (between fill and RX), our hands (received,
//! not yet given back), the TX ring, the kernel between TX and completion, or lent out as a
//! [`LentFrame`]. [`Socket`] tracks the state of each chunk and hands out a `&mut [u8]` only for
//! a chunk in our hands ([`FrameState::User`]); the kernel never writes a chunk that is not in
//! the fill ring and never reads one that is not in the TX ring. A lent chunk
//! ([`FrameState::Lent`]) is touched by nobody but the one [`LentFrame`] token for it (not
//! `Clone`), which may live on another thread, until [`Socket::accept`] or [`Socket::reclaim`]
//! consumes the token; the token keeps the UMEM mapped (it shares the area's `Arc`).
//!
//! Ring protocol (`Documentation/networking/af_xdp.rst`): a producer writes descriptors, then
//! publishes them with a release store of `producer`; a consumer reads `producer` with acquire,
//! reads the descriptors, then frees them with a release store of `consumer`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// One received or to-be-sent frame: a UMEM address (chunk base plus the offset of the packet)
/// and the packet's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

const _: () = assert!(size_of::<Desc>() == size_of::<libc::xdp_desc>());

/// Where a UMEM chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameState {
    Free,
    /// In the fill ring or held by the kernel for a packet to come.
    Fill,
    /// Received: ours to read and write.
    User,
    /// In the TX ring or being sent.
    Tx,
    /// Lent out as a [`LentFrame`] (to another thread, to fill with a packet for us to send).
    Lent,
}

/// Socket set-up parameters.
#[derive(Debug, Clone, Copy)]
pub struct SocketConfig {
    pub ifindex: u32,
    pub queue: u32,
    pub frames: u32,
    pub frame_size: u32,
    pub rx_ring: u32,
    pub tx_ring: u32,
    pub fill_ring: u32,
    pub completion_ring: u32,
    /// `None`: let the kernel choose (zero-copy when the driver can, else copy).
    pub zero_copy: Option<bool>,
    /// Preferred busy polling: `Some((usecs, budget))` sets `SO_PREFER_BUSY_POLL`,
    /// `SO_BUSY_POLL` (µs) and `SO_BUSY_POLL_BUDGET` (packets per poll) on the socket, so the
    /// owner's syscalls on it run the device's NAPI poll instead of a softirq.
    pub busy_poll: Option<(u32, u32)>,
}

/// Per-socket counters the kernel keeps (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Dropped for reasons other than a full ring or an empty fill ring.
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// Dropped because our RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a packet arrived.
    pub rx_fill_ring_empty: u64,
    pub tx_ring_empty: u64,
}

/// The UMEM area: anonymous memory, on 2 MiB huge pages when the system has them reserved.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
    huge: bool,
}

// SAFETY: the area is plain memory; the `Socket` and its `LentFrame`s share it through an
// `Arc` and each touches only the chunks it owns (see the module's ownership invariant), so
// sending or sharing the handle between threads lets no two threads touch the same bytes.
unsafe impl Send for Area {}
// SAFETY: as for `Send`: `&Area` gives access to no bytes by itself.
unsafe impl Sync for Area {}

impl Area {
    fn new(len: usize) -> io::Result<Self> {
        const HUGE: usize = 2 << 20;
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        if len.is_multiple_of(HUGE) {
            // SAFETY: an anonymous mapping at an address of the kernel's choosing aliases
            // nothing; the result is checked before use.
            let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags | libc::MAP_HUGETLB, -1, 0) };
            if p != libc::MAP_FAILED
                && let Some(ptr) = NonNull::new(p.cast::<u8>())
            {
                return Ok(Self { ptr, len, huge: true });
            }
        }
        // SAFETY: as above, without huge pages.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Self { ptr, len, huge: false })
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping `new` created, unmapped once, when the
        // last of its socket and lent tokens let go of the `Arc`: the socket (declared before
        // the area in `Socket`) was closed by then, so the kernel holds no reference to it, and
        // no token is left to write it.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One mmapped ring: `producer`, `consumer`, `flags` words and `size` descriptors of type `T`.
#[derive(Debug)]
struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    size: u32,
    /// Our copy of the index we own (producer for fill/TX, consumer for RX/completion).
    local: u32,
}

// SAFETY: the ring memory belongs to the socket that owns the ring; moving the socket to a
// worker thread moves every handle to it.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of `fd` as `off` describes it.
    fn map(fd: BorrowedFd<'_>, off: &libc::xdp_ring_offset, size: u32, pgoff: u64) -> io::Result<Self> {
        let map_len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring at the offset the kernel defines for
        // it; the kernel validates `pgoff` and `map_len` against the ring it created.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let at = |o: u64| {
            // SAFETY: the kernel's offsets lie inside the `map_len` bytes just mapped (that is
            // how it sized the ring) and are aligned for u32 words and descriptors; a pointer
            // into a successful mapping is non-null.
            unsafe { NonNull::new_unchecked(map.as_ptr().add(o as usize)) }
        };
        let producer = at(off.producer).cast::<AtomicU32>();
        let consumer = at(off.consumer).cast::<AtomicU32>();
        let flags = at(off.flags).cast::<AtomicU32>();
        let descs = at(off.desc).cast::<T>();
        let mut ring =
            Self { map, map_len, producer, consumer, flags, descs, mask: size - 1, size, local: 0 };
        // Producer rings start at the kernel's producer (0); consumer rings at its consumer.
        ring.local = 0;
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping, at a u32 word the kernel shares atomically.
        unsafe { self.producer.as_ref() }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { self.consumer.as_ref() }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask < size`, so the slot lies inside the mapped descriptor array.
        unsafe { self.descs.as_ptr().add((idx & self.mask) as usize) }
    }

    /// Producer side: free slots.
    fn free(&self) -> u32 {
        self.size - self.local.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }

    /// Producer side: writes `items` (at most `free()`), then publishes them.
    fn produce(&mut self, items: impl ExactSizeIterator<Item = T>) -> u32 {
        let n = (items.len() as u32).min(self.free());
        for item in items.take(n as usize) {
            // SAFETY: the slot is one the consumer has released (we checked `free`), so the
            // kernel does not read it until we publish the new producer index below.
            unsafe { self.slot(self.local).write(item) };
            self.local = self.local.wrapping_add(1);
        }
        self.producer().store(self.local, Ordering::Release);
        n
    }

    /// Consumer side: reads up to `out.len()` entries and releases them.
    fn consume(&mut self, out: &mut [T]) -> usize {
        let avail = self.producer().load(Ordering::Acquire).wrapping_sub(self.local) as usize;
        let n = avail.min(out.len());
        for o in &mut out[..n] {
            // SAFETY: the kernel published this slot (acquire above) and does not reuse it
            // until we release it with the store below.
            *o = unsafe { self.slot(self.local).read() };
            self.local = self.local.wrapping_add(1);
        }
        if n > 0 {
            self.consumer().store(self.local, Ordering::Release);
        }
        n
    }

    /// Producer side: entries published but not yet consumed by the kernel.
    fn pending(&self) -> u32 {
        self.local.wrapping_sub(self.consumer().load(Ordering::Acquire))
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the exact mapping `map` created, unmapped once.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// One AF_XDP socket bound to one (interface, queue), with its own UMEM.
#[derive(Debug)]
pub struct Socket {
    // Field order is drop order: rings, then the socket, then the memory it used.
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    fd: OwnedFd,
    area: Arc<Area>,
    frame_size: u32,
    frame_shift: u32,
    state: Vec<FrameState>,
    free: Vec<u64>,
    zero_copy: bool,
    busy_poll: bool,
    scratch: Vec<u64>,
}

fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, value: &T) -> io::Result<()> {
    setsockopt_at(fd, libc::SOL_XDP, opt, value)
}

fn setsockopt_at<T>(fd: BorrowedFd<'_>, level: libc::c_int, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live `T` of `size_of::<T>()` bytes, which the kernel only reads.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            std::ptr::from_ref(value).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

fn getsockopt<T: Default>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` (= size_of T) bytes into the exclusively
    // borrowed `value`, a plain-integer struct for which any bytes are valid.
    let r = unsafe {
        libc::getsockopt(fd.as_raw_fd(), libc::SOL_XDP, opt, std::ptr::from_mut(&mut value).cast(), &mut len)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(value) }
}

/// How long `bind` keeps retrying while a just-closed socket's pool still holds the queue.
const BIND_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Socket {
    /// Creates the UMEM and the socket, maps its rings and binds it. The fill ring is filled.
    ///
    /// # Errors
    /// The failing call's error: `ENODEV`/`EINVAL` for a bad interface or queue,
    /// `EOPNOTSUPP` for zero-copy on a driver without it, `EPERM` without privilege, `EBUSY`
    /// when another socket still holds the queue after [`BIND_BUSY_WAIT`].
    pub fn new(cfg: &SocketConfig) -> io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = cfg.frames as usize * cfg.frame_size as usize;
        let area = Arc::new(Area::new(len)?);
        let reg = libc::xdp_umem_reg {
            addr: area.ptr.as_ptr() as u64,
            len: len as u64,
            chunk_size: cfg.frame_size,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        setsockopt(fd.as_fd(), libc::XDP_UMEM_REG, &reg)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_FILL_RING, &cfg.fill_ring)?;
        setsockopt(fd.as_fd(), libc::XDP_UMEM_COMPLETION_RING, &cfg.completion_ring)?;
        setsockopt(fd.as_fd(), libc::XDP_RX_RING, &cfg.rx_ring)?;
        setsockopt(fd.as_fd(), libc::XDP_TX_RING, &cfg.tx_ring)?;
        let off: MmapOffsets = getsockopt(fd.as_fd(), libc::XDP_MMAP_OFFSETS)?;
        let off = off.0;
        let fill = Ring::map(fd.as_fd(), &off.fr, cfg.fill_ring, libc::XDP_UMEM_PGOFF_FILL_RING)?;
        let comp = Ring::map(fd.as_fd(), &off.cr, cfg.completion_ring, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?;
        let rx = Ring::map(fd.as_fd(), &off.rx, cfg.rx_ring, libc::XDP_PGOFF_RX_RING as u64)?;
        let tx = Ring::map(fd.as_fd(), &off.tx, cfg.tx_ring, libc::XDP_PGOFF_TX_RING as u64)?;
        let mode = match cfg.zero_copy {
            None => 0,
            Some(true) => libc::XDP_ZEROCOPY,
            Some(false) => libc::XDP_COPY,
        };
        let addr = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: libc::XDP_USE_NEED_WAKEUP | mode,
            sxdp_ifindex: cfg.ifindex,
            sxdp_queue_id: cfg.queue,
            sxdp_shared_umem_fd: 0,
        };
        // A socket closed just before (a previous run on this queue, or the same process
        // re-opening it) leaves its buffer pool registered on the queue until the kernel's
        // deferred release runs (`xp_put_pool` schedules it on a workqueue, after the last
        // in-flight TX skb let go of the socket): until then bind fails with EBUSY. Wait for
        // it, a bounded time; a queue another live socket holds still fails with EBUSY.
        let deadline = std::time::Instant::now() + BIND_BUSY_WAIT;
        loop {
            // SAFETY: `addr` is a live `sockaddr_xdp` whose size is passed; the kernel only reads it.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::from_ref(&addr).cast(),
                    size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
                )
            };
            if r == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EBUSY) || std::time::Instant::now() >= deadline {
                return Err(err);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if let Some((usecs, budget)) = cfg.busy_poll {
            let one: libc::c_int = 1;
            setsockopt_at(fd.as_fd(), libc::SOL_SOCKET, libc::SO_PREFER_BUSY_POLL, &one)?;
            setsockopt_at(fd.as_fd(), libc::SOL_SOCKET, libc::SO_BUSY_POLL, &(usecs as libc::c_int))?;
            setsockopt_at(fd.as_fd(), libc::SOL_SOCKET, libc::SO_BUSY_POLL_BUDGET, &(budget as libc::c_int))?;
        }
        let opts: XdpOptions = getsockopt(fd.as_fd(), libc::XDP_OPTIONS)?;
        let frames = cfg.frames as usize;
        let mut sock = Self {
            fill,
            comp,
            rx,
            tx,
            fd,
            area,
            frame_size: cfg.frame_size,
            frame_shift: cfg.frame_size.trailing_zeros(),
            state: vec![FrameState::Free; frames],
            free: (0..cfg.frames).rev().map(|i| u64::from(i) * u64::from(cfg.frame_size)).collect(),
            zero_copy: opts.0.flags & libc::XDP_OPTIONS_ZEROCOPY != 0,
            busy_poll: cfg.busy_poll.is_some(),
            scratch: vec![0; cfg.completion_ring.max(cfg.fill_ring) as usize],
        };
        sock.refill();
        Ok(sock)
    }

    /// Whether the kernel bound the socket in zero-copy mode.
    #[must_use]
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether the UMEM is on huge pages.
    #[must_use]
    pub fn huge_pages(&self) -> bool {
        self.area.huge
    }

    /// Bytes per UMEM chunk.
    #[must_use]
    pub fn frame_size(&self) -> u32 {
        self.frame_size
    }

    fn index(&self, addr: u64) -> usize {
        (addr >> self.frame_shift) as usize
    }

    fn base(&self, addr: u64) -> u64 {
        addr & !(u64::from(self.frame_size) - 1)
    }

    /// Receives up to `out.len()` frames; they are ours until sent or freed.
    pub fn recv(&mut self, out: &mut [Desc]) -> usize {
        let n = self.rx.consume(out);
        for d in &out[..n] {
            let i = self.index(d.addr);
            if let Some(s) = self.state.get_mut(i) {
                *s = FrameState::User;
            }
        }
        n
    }

    /// The whole chunk holding received frame `addr`, and the packet's offset in it; `None`
    /// when the frame is not ours (never received, or already given back).
    pub fn frame_mut(&mut self, addr: u64) -> Option<(&mut [u8], usize)> {
        let i = self.index(addr);
        if self.state.get(i) != Some(&FrameState::User) {
            return None;
        }
        let base = self.base(addr) as usize;
        let size = self.frame_size as usize;
        // SAFETY: chunk `i` lies inside the area (`i < frames`, checked by `state.get`), and it
        // is in state `User`: the kernel neither reads nor writes it until we put it in the
        // fill or TX ring, which needs `&mut self`, so this borrow is the only access.
        let chunk = unsafe { std::slice::from_raw_parts_mut(self.area.ptr.as_ptr().add(base), size) };
        Some((chunk, (addr as usize) - base))
    }

    /// Gives a received frame back to the free list.
    pub fn release(&mut self, addr: u64) {
        let i = self.index(addr);
        if self.state.get(i) == Some(&FrameState::User) {
            self.state[i] = FrameState::Free;
            self.free.push(self.base(addr));
        }
    }

    /// Queues received frames for transmission (each `addr` inside a frame we hold, possibly
    /// moved by the program); returns how many went into the TX ring. The caller releases the
    /// rest.
    pub fn send(&mut self, descs: &[Desc]) -> usize {
        let room = self.tx.free() as usize;
        let size = u64::from(self.frame_size);
        let mut ok = 0;
        for d in descs.iter().take(room) {
            let i = self.index(d.addr);
            let inside = d.addr - self.base(d.addr) + u64::from(d.len) <= size;
            if self.state.get(i) != Some(&FrameState::User) || !inside {
                break;
            }
            self.state[i] = FrameState::Tx;
            ok += 1;
        }
        self.tx.produce(descs[..ok].iter().copied());
        ok
    }

    /// Takes a free chunk for a frame of our own making (a traffic generator's): it is ours,
    /// as a received frame is, to fill through [`frame_mut`](Self::frame_mut) and [`send`](Self::send)
    /// (or [`release`](Self::release)). Returns the chunk's base address; `None` when every chunk
    /// is in the rings or held.
    pub fn alloc(&mut self) -> Option<u64> {
        let addr = self.free.pop()?;
        let i = self.index(addr);
        self.state[i] = FrameState::User;
        Some(addr)
    }

    /// Lends a free chunk out as a token another thread can fill with a packet
    /// ([`LentFrame::fill`]) and give back to be sent ([`accept`](Self::accept)) or freed
    /// ([`reclaim`](Self::reclaim)). `None` when no chunk is free.
    pub fn lend(&mut self) -> Option<LentFrame> {
        let base = self.free.pop()?;
        let i = self.index(base);
        self.state[i] = FrameState::Lent;
        // SAFETY: chunk `i` came from the free list, so it lies inside the area and nobody (not
        // the kernel, not a received frame) uses it; it is now `Lent`, which only the token
        // made here may touch.
        let ptr = unsafe { NonNull::new_unchecked(self.area.ptr.as_ptr().add(base as usize)) };
        Some(LentFrame { area: self.area.clone(), ptr, size: self.frame_size as usize, base, len: 0 })
    }

    /// Takes back a lent chunk as a frame of ours holding what [`LentFrame::fill`] wrote
    /// (to be sent or released like a received one). `None` when the token is not one of this
    /// socket's or was never filled: the chunk is then freed (when it is ours).
    pub fn accept(&mut self, lent: LentFrame) -> Option<Desc> {
        let (base, len) = (lent.base, lent.len);
        if !self.owns(&lent) {
            return None;
        }
        let i = self.index(base);
        if len == 0 {
            self.state[i] = FrameState::Free;
            self.free.push(base);
            return None;
        }
        self.state[i] = FrameState::User;
        Some(Desc { addr: base + LentFrame::HEADROOM as u64, len: len as u32, options: 0 })
    }

    /// Takes back a lent chunk unused: it goes to the free list.
    pub fn reclaim(&mut self, lent: LentFrame) {
        let base = lent.base;
        if self.owns(&lent) {
            let i = self.index(base);
            self.state[i] = FrameState::Free;
            self.free.push(base);
        }
    }

    fn owns(&self, lent: &LentFrame) -> bool {
        Arc::ptr_eq(&lent.area, &self.area)
            && self.state.get(self.index(lent.base)) == Some(&FrameState::Lent)
    }

    /// Reaps completed transmissions into the free list; returns how many completed.
    pub fn complete(&mut self) -> usize {
        let mut buf = std::mem::take(&mut self.scratch);
        let n = self.comp.consume(&mut buf);
        for &addr in &buf[..n] {
            let i = self.index(addr);
            if self.state.get(i) == Some(&FrameState::Tx) {
                self.state[i] = FrameState::Free;
                self.free.push(self.base(addr));
            }
        }
        self.scratch = buf;
        n
    }

    /// Reaps completed transmissions into the free list and tops up the fill ring from it.
    pub fn refill(&mut self) {
        self.complete();
        let want = (self.fill.free() as usize).min(self.free.len());
        if want > 0 {
            let start = self.free.len() - want;
            for &addr in &self.free[start..] {
                let i = (addr >> self.frame_shift) as usize;
                self.state[i] = FrameState::Fill;
            }
            let pushed = self.fill.produce(self.free[start..].iter().copied());
            debug_assert_eq!(pushed as usize, want);
            self.free.truncate(start);
        }
    }

    /// Kicks the kernel to send what the TX ring holds, when it asked for that
    /// (`need_wakeup`), or when `force`.
    ///
    /// In copy mode each call sends at most 32 frames (the kernel's `TX_BATCH_SIZE`), so this
    /// kicks once per 32 pending.
    pub fn kick_tx(&self, force: bool) {
        let pending = self.tx.pending();
        if pending > 0 && (force || self.tx.needs_wakeup()) {
            let kicks = if self.zero_copy { 1 } else { pending.div_ceil(32).min(16) };
            for _ in 0..kicks {
                // SAFETY: a zero-length sendto on our socket with no buffer; the kernel reads
                // no memory and only transmits from the TX ring.
                let r = unsafe {
                    libc::sendto(
                        self.fd.as_raw_fd(),
                        std::ptr::null(),
                        0,
                        libc::MSG_DONTWAIT,
                        std::ptr::null(),
                        0,
                    )
                };
                if r < 0
                    && !matches!(
                        io::Error::last_os_error().raw_os_error(),
                        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS)
                    )
                {
                    break;
                }
            }
        }
    }

    /// Hints the CPU to fetch the first cache line of received frame `addr` (the headers a
    /// program reads first), which in copy mode the kernel wrote from another core. A hint:
    /// nothing is read, any address is harmless.
    #[inline]
    pub fn prefetch(&self, addr: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let off = (addr as usize).min(self.area.len.saturating_sub(1));
            let p = self.area.ptr.as_ptr().wrapping_add(off);
            // SAFETY: PREFETCHT0 is a hint that never faults and reads nothing into the program;
            // the address lies inside the mapped area anyway (clamped above).
            unsafe { core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = addr;
    }

    /// Whether the socket was set up for busy polling.
    #[must_use]
    pub fn busy_polling(&self) -> bool {
        self.busy_poll
    }

    /// A non-blocking `recvfrom` with no buffer: with busy polling, runs the device's NAPI
    /// poll for this socket's queue here (RX into our ring, and the pending TX); otherwise it
    /// wakes the kernel's RX processing as `poll` does.
    pub fn busy_poll_once(&self) {
        // SAFETY: a zero-length recvfrom on our socket with no buffer and no address: the
        // kernel writes no memory of ours.
        unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
    }

    /// Whether the kernel asked to be woken to pick up fill-ring entries (`need_wakeup`).
    #[must_use]
    pub fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Wakes the kernel's RX processing (zero-copy drivers sleeping on an empty fill ring), or
    /// waits up to `timeout_ms` for a packet.
    pub fn poll_rx(&self, timeout_ms: i32) {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one live pollfd, count 1.
        unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    }

    /// The kernel's counters for this socket.
    ///
    /// # Errors
    /// When `getsockopt(XDP_STATISTICS)` fails.
    pub fn kernel_stats(&self) -> io::Result<KernelStats> {
        let s: XdpStatistics = getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS)?;
        let s = s.0;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_ring_empty: s.tx_ring_empty_descs,
        })
    }

    /// Frames in each state: `[free, fill, user, tx, lent]`. They always sum to the UMEM's
    /// frames.
    #[must_use]
    pub fn accounting(&self) -> [usize; 5] {
        let mut c = [0; 5];
        for s in &self.state {
            c[*s as usize] += 1;
        }
        c
    }

    /// Frames in our free list (not in the kernel's hands, not held).
    #[must_use]
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }
}

/// A UMEM chunk lent out by [`Socket::lend`]: the one handle to its bytes until the socket takes
/// it back. Another thread fills it with a packet (one copy, straight into the UMEM) and hands
/// it back to the socket's owner to transmit. Dropping a token instead of giving it back leaks
/// its chunk (counted as `lent` by [`Socket::accounting`]), nothing worse.
#[derive(Debug)]
pub struct LentFrame {
    area: Arc<Area>,
    ptr: NonNull<u8>,
    size: usize,
    base: u64,
    len: usize,
}

// SAFETY: the token is the only handle to its chunk's bytes (the socket does not touch a `Lent`
// chunk), and the area stays mapped while the token holds its `Arc`; moving the token to
// another thread moves that exclusive access with it.
unsafe impl Send for LentFrame {}

impl LentFrame {
    /// Where [`fill`](Self::fill) puts the packet: after the 256 bytes of headroom XDP promises.
    pub const HEADROOM: usize = 256;
    /// What `fill` leaves free after the packet (the kernel's `skb_shared_info` room).
    pub const TAILROOM: usize = 320;

    /// Copies `packet` into the chunk, after the headroom. `false` (nothing written) when it
    /// does not fit, or is empty.
    pub fn fill(&mut self, packet: &[u8]) -> bool {
        if packet.is_empty() || Self::HEADROOM + packet.len() + Self::TAILROOM > self.size {
            return false;
        }
        // SAFETY: the chunk is `size` bytes at `ptr`, inside the mapped area (kept alive by
        // `area`), and lent to this token alone (see the type's `Send`); the destination range
        // was checked to lie inside it, and `packet` (a live slice of other memory: a chunk
        // cannot be both lent and borrowed elsewhere) does not overlap it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                packet.as_ptr(),
                self.ptr.as_ptr().add(Self::HEADROOM),
                packet.len(),
            );
        }
        self.len = packet.len();
        true
    }

    /// Bytes written by the last [`fill`](Self::fill) (0: none).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was written.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

macro_rules! zeroed_wrapper {
    ($name:ident, $inner:ty) => {
        #[repr(transparent)]
        struct $name($inner);
        impl Default for $name {
            fn default() -> Self {
                // SAFETY: a plain struct of integers, for which all-zeroes is a valid value.
                Self(unsafe { std::mem::zeroed() })
            }
        }
    };
}
zeroed_wrapper!(MmapOffsets, libc::xdp_mmap_offsets);
zeroed_wrapper!(XdpOptions, libc::xdp_options);
zeroed_wrapper!(XdpStatistics, libc::xdp_statistics);
