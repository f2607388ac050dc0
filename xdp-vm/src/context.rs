//! Program contexts: what `r1` points to when a program starts.
//!
//! An XDP program sees `struct xdp_md`, six `u32` fields, but the kernel's verifier rewrites each
//! load of `data`, `data_end` and `data_meta` into a load of the real 64-bit pointer from the
//! `xdp_buff`. We do the same: the context is an [`XdpBuff`] describing one frame buffer, and a
//! 4-byte load at a field's offset yields what the kernel's rewritten load would.
//!
//! Frame layout, as `BPF_PROG_TEST_RUN` and the drivers build it: `XDP_PACKET_HEADROOM` (256)
//! bytes of headroom before `data`, the frame itself, and a reserved tail the size of the kernel's
//! `skb_shared_info` that `bpf_xdp_adjust_tail` may not grow into. The first
//! [`XDP_FRAME_RESERVED`] bytes of the headroom hold the kernel's `struct xdp_frame` and cannot
//! be claimed by `bpf_xdp_adjust_head` or `bpf_xdp_adjust_meta` either.

pub mod pt_regs;

pub use pt_regs::{PtRegs, TraceState, Uprobe};

/// Headroom before the packet data (`XDP_PACKET_HEADROOM`).
pub const XDP_PACKET_HEADROOM: usize = 256;
/// Bytes at the start of the headroom the kernel keeps for `struct xdp_frame` (x86-64, 6.x).
pub const XDP_FRAME_RESERVED: usize = 40;
/// Bytes at the end of a frame kept for `struct skb_shared_info` (`SKB_DATA_ALIGN`ed, x86-64, 6.x).
pub const XDP_TAILROOM: usize = 320;
/// Frame size of `BPF_PROG_TEST_RUN` (one page).
pub const XDP_FRAME_SIZE: usize = 4096;
/// Largest `data_in` `BPF_PROG_TEST_RUN` accepts for a program without fragments.
pub const XDP_MAX_DATA: usize = XDP_FRAME_SIZE - XDP_PACKET_HEADROOM - XDP_TAILROOM;
/// Smallest frame the kernel accepts: an Ethernet header.
pub const ETH_HLEN: usize = 14;

/// Largest metadata area `bpf_xdp_adjust_meta` allows: since Linux 6.x the limit is what
/// `skb_shared_info.meta_len` (a `u8`) can hold, no longer 32 bytes.
pub const XDP_META_MAX: usize = 255;

/// `struct xdp_md` field offsets.
pub mod xdp_md {
    pub const DATA: u32 = 0;
    pub const DATA_END: u32 = 4;
    pub const DATA_META: u32 = 8;
    pub const INGRESS_IFINDEX: u32 = 12;
    pub const RX_QUEUE_INDEX: u32 = 16;
    pub const EGRESS_IFINDEX: u32 = 20;
    /// `sizeof(struct xdp_md)`.
    pub const SIZE: u32 = 24;
}

pub use crate::helpers::redirect::Redirect;

/// XDP return codes.
pub mod action {
    pub const ABORTED: u32 = 0;
    pub const DROP: u32 = 1;
    pub const PASS: u32 = 2;
    pub const TX: u32 = 3;
    pub const REDIRECT: u32 = 4;
}

/// A kind of program context: what `r1` points to and which helpers a program may call.
pub trait Context {
    /// The live state one run works on.
    type State<'a>;
    /// The context's name in messages (`xdp`, `uprobe`).
    const NAME: &'static str;
    /// `sizeof` the context structure the program reads.
    const SIZE: u64;

    /// Whether programs of this kind may call helper `id`.
    fn allows_helper(id: u32) -> bool;

    /// The value of `r1` at entry: the address of the state itself, which nothing else aliases.
    fn address(state: &Self::State<'_>) -> u64 {
        std::ptr::from_ref(state) as u64
    }

    /// A load of `size` bytes at offset `off` of the context, as the kernel's rewritten access
    /// yields it; `None` for an access the kernel refuses.
    fn load(state: &Self::State<'_>, off: u64, size: usize) -> Option<u64>;

    /// The memory a program may address besides its stack and maps: `(start, len)`.
    fn memory(state: &mut Self::State<'_>) -> (usize, usize);

    /// A length [`Context::memory`] never goes below, for every state (0: none known). The
    /// JIT's run entries skip their empty-region fix-up when it is at least 8.
    const MIN_MEMORY: usize = 0;

    /// Runs a helper that belongs to this context (`None`: not one of them). `args[0]` has been
    /// checked to be the context pointer when the helper takes one.
    fn call(state: &mut Self::State<'_>, id: u32, args: &[u64; 5]) -> Option<u64>;

    /// Where this run's `bpf_redirect` / `bpf_redirect_map` target is kept (the kernel's
    /// per-CPU `bpf_redirect_info`); `None` (the default) for contexts that cannot redirect.
    fn redirect_slot<'s>(state: &'s mut Self::State<'_>) -> Option<&'s mut Option<Redirect>> {
        let _ = state;
        None
    }

    /// The bytes `bpf_perf_event_output` may append from the context (its flags'
    /// `BPF_F_CTXLEN_MASK`): the packet for XDP. `None` (the default): the context has none,
    /// and such flags are invalid.
    fn event_data<'s>(state: &'s Self::State<'_>) -> Option<&'s [u8]> {
        let _ = state;
        None
    }

    /// How compiled code may read the field at offset `off` (`size` bytes) without calling
    /// [`Context::load`]: the same value, read straight from the state at
    /// [`Context::address`]. `None` (the default) leaves the load to [`Context::load`].
    fn field_load(off: u64, size: usize) -> Option<FieldLoad> {
        let _ = (off, size);
        None
    }
}

/// A context field as compiled code reads it from the state (offsets from [`Context::address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLoad {
    /// The `u32` at byte `at`, zero-extended.
    U32 { at: usize },
    /// The `usize` at byte `base` plus the `usize` at byte `at`: a pointer into the frame.
    PtrPlus { base: usize, at: usize },
    /// The load itself (its own size, zero-extended) at byte `at`: a field stored as the
    /// program reads it (`pt_regs`).
    Plain { at: usize },
}

/// XDP programs: `struct xdp_md` over an [`XdpBuff`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Xdp;

impl Context for Xdp {
    type State<'a> = XdpBuff<'a>;
    const NAME: &'static str = "xdp";
    const SIZE: u64 = xdp_md::SIZE as u64;

    fn allows_helper(id: u32) -> bool {
        crate::helpers::name(id).is_some() && crate::helpers::tracing::xdp_allows(id)
    }

    fn load(state: &XdpBuff<'_>, off: u64, size: usize) -> Option<u64> {
        if size != 4 {
            return None;
        }
        let base = state.base as u64;
        match off as u32 {
            xdp_md::DATA => Some(base + state.data as u64),
            xdp_md::DATA_END => Some(base + state.data_end as u64),
            xdp_md::DATA_META => Some(base + state.meta as u64),
            xdp_md::INGRESS_IFINDEX => Some(u64::from(state.ingress_ifindex)),
            xdp_md::RX_QUEUE_INDEX => Some(u64::from(state.rx_queue_index)),
            xdp_md::EGRESS_IFINDEX => Some(u64::from(state.egress_ifindex)),
            _ => None,
        }
    }

    fn field_load(off: u64, size: usize) -> Option<FieldLoad> {
        use std::mem::offset_of;
        if size != 4 {
            return None;
        }
        let base = offset_of!(XdpBuff<'static>, base);
        Some(match u32::try_from(off).ok()? {
            xdp_md::DATA => FieldLoad::PtrPlus { base, at: offset_of!(XdpBuff<'static>, data) },
            xdp_md::DATA_END => FieldLoad::PtrPlus { base, at: offset_of!(XdpBuff<'static>, data_end) },
            xdp_md::DATA_META => FieldLoad::PtrPlus { base, at: offset_of!(XdpBuff<'static>, meta) },
            xdp_md::INGRESS_IFINDEX => FieldLoad::U32 { at: offset_of!(XdpBuff<'static>, ingress_ifindex) },
            xdp_md::RX_QUEUE_INDEX => FieldLoad::U32 { at: offset_of!(XdpBuff<'static>, rx_queue_index) },
            xdp_md::EGRESS_IFINDEX => FieldLoad::U32 { at: offset_of!(XdpBuff<'static>, egress_ifindex) },
            _ => return None,
        })
    }

    /// `XdpBuff`'s invariant: `XDP_FRAME_RESERVED <= meta <= frame.len() - XDP_TAILROOM`.
    const MIN_MEMORY: usize = XDP_FRAME_RESERVED + XDP_TAILROOM;

    fn memory(state: &mut XdpBuff<'_>) -> (usize, usize) {
        (state.frame.as_mut_ptr() as usize, state.frame.len())
    }

    fn redirect_slot<'s>(state: &'s mut XdpBuff<'_>) -> Option<&'s mut Option<Redirect>> {
        Some(&mut state.redirect)
    }

    fn event_data<'s>(state: &'s XdpBuff<'_>) -> Option<&'s [u8]> {
        Some(state.packet())
    }

    fn call(state: &mut XdpBuff<'_>, id: u32, args: &[u64; 5]) -> Option<u64> {
        use crate::helpers::{errno_ret, id};
        let delta = args[1] as i32;
        let result = match id {
            id::XDP_ADJUST_HEAD => state.adjust_head(delta),
            id::XDP_ADJUST_META => state.adjust_meta(delta),
            id::XDP_ADJUST_TAIL => state.adjust_tail(delta),
            _ => return None,
        };
        Some(match result {
            Ok(()) => 0,
            Err(e) => errno_ret(-e),
        })
    }
}

/// One frame as an XDP program sees it: offsets into a frame buffer the caller owns.
///
/// Invariant: `meta <= data <= data_end <= frame.len() - XDP_TAILROOM` and
/// `XDP_FRAME_RESERVED <= meta`; the helpers that move the offsets keep it.
#[derive(Debug)]
pub struct XdpBuff<'a> {
    frame: &'a mut [u8],
    /// Address of `frame`, for the pointers the program reads.
    base: usize,
    pub(crate) meta: usize,
    pub(crate) data: usize,
    pub(crate) data_end: usize,
    /// `ingress_ifindex` as the program reads it.
    pub ingress_ifindex: u32,
    /// `rx_queue_index` as the program reads it.
    pub rx_queue_index: u32,
    /// `egress_ifindex` as the program reads it (0 outside a devmap program).
    pub egress_ifindex: u32,
    /// The target of the last `bpf_redirect` / `bpf_redirect_map` of the runs on this frame.
    redirect: Option<Redirect>,
}

/// Why a frame could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("frame of {len} bytes is shorter than an Ethernet header ({ETH_HLEN} bytes)")]
    Runt { len: usize },
    #[error(
        "frame of {len} bytes does not fit a {capacity}-byte buffer after {XDP_PACKET_HEADROOM} bytes of headroom"
    )]
    TooLong { len: usize, capacity: usize },
}

impl<'a> XdpBuff<'a> {
    /// Describes a frame of `len` bytes already placed at `headroom` in `frame`.
    ///
    /// # Errors
    /// When the frame is not inside the buffer with room for the reserved head and tail.
    pub fn new(frame: &'a mut [u8], headroom: usize, len: usize) -> Result<Self, ContextError> {
        let capacity = frame.len().saturating_sub(XDP_TAILROOM);
        if headroom < XDP_FRAME_RESERVED || headroom.saturating_add(len) > capacity {
            return Err(ContextError::TooLong { len, capacity: capacity.saturating_sub(headroom) });
        }
        let base = frame.as_mut_ptr() as usize;
        Ok(Self {
            frame,
            base,
            meta: headroom,
            data: headroom,
            data_end: headroom + len,
            ingress_ifindex: 0,
            rx_queue_index: 0,
            egress_ifindex: 0,
            redirect: None,
        })
    }

    /// Copies `packet` into `frame` after the standard headroom, as `BPF_PROG_TEST_RUN` does.
    ///
    /// # Errors
    /// [`ContextError::Runt`] below 14 bytes (the kernel refuses those too) and
    /// [`ContextError::TooLong`] when it does not fit.
    pub fn load(frame: &'a mut [u8], packet: &[u8]) -> Result<Self, ContextError> {
        if packet.len() < ETH_HLEN {
            return Err(ContextError::Runt { len: packet.len() });
        }
        let capacity = frame.len().saturating_sub(XDP_TAILROOM + XDP_PACKET_HEADROOM);
        if packet.len() > capacity {
            return Err(ContextError::TooLong { len: packet.len(), capacity });
        }
        frame[..XDP_PACKET_HEADROOM].fill(0);
        frame[XDP_PACKET_HEADROOM..XDP_PACKET_HEADROOM + packet.len()].copy_from_slice(packet);
        frame[XDP_PACKET_HEADROOM + packet.len()..].fill(0);
        Self::new(frame, XDP_PACKET_HEADROOM, packet.len())
    }

    /// The packet as it stands: `data..data_end`.
    #[must_use]
    pub fn packet(&self) -> &[u8] {
        &self.frame[self.data..self.data_end]
    }

    /// Metadata and packet: `data_meta..data_end`, what `BPF_PROG_TEST_RUN` copies out.
    #[must_use]
    pub fn meta_and_packet(&self) -> &[u8] {
        &self.frame[self.meta..self.data_end]
    }

    /// Where the program redirected the frame: the target of the last successful
    /// `bpf_redirect` / `bpf_redirect_map` (a `bpf_redirect_map` miss clears it, as in the
    /// kernel). Meaningful after a run that returned `XDP_REDIRECT`; `None` then means the
    /// program returned `XDP_REDIRECT` without a target (the kernel drops such a frame).
    #[must_use]
    pub fn redirect(&self) -> Option<Redirect> {
        self.redirect
    }

    /// Offset of `data` in the frame buffer (the headroom left in front of the packet).
    #[must_use]
    pub fn headroom(&self) -> usize {
        self.data
    }

    /// Bytes of metadata in front of the packet.
    #[must_use]
    pub fn meta_len(&self) -> usize {
        self.data - self.meta
    }

    #[cfg(test)]
    pub(crate) fn frame_mut(&mut self) -> &mut [u8] {
        self.frame
    }

    /// `bpf_xdp_adjust_head`: moves `data` (and the metadata with it) by `delta` bytes.
    pub(crate) fn adjust_head(&mut self, delta: i32) -> Result<(), i32> {
        let meta_len = self.meta_len();
        let Some(data) = self.data.checked_add_signed(delta as isize) else { return Err(-libc::EINVAL) };
        if data < XDP_FRAME_RESERVED + meta_len || data + ETH_HLEN > self.data_end {
            return Err(-libc::EINVAL);
        }
        let meta = data - meta_len;
        if meta_len > 0 {
            self.frame.copy_within(self.meta..self.data, meta);
        }
        self.meta = meta;
        self.data = data;
        Ok(())
    }

    /// `bpf_xdp_adjust_meta`: moves `data_meta` by `delta` bytes.
    pub(crate) fn adjust_meta(&mut self, delta: i32) -> Result<(), i32> {
        let Some(meta) = self.meta.checked_add_signed(delta as isize) else { return Err(-libc::EINVAL) };
        if meta < XDP_FRAME_RESERVED || meta > self.data {
            return Err(-libc::EINVAL);
        }
        let len = self.data - meta;
        if len > XDP_META_MAX || !len.is_multiple_of(4) {
            return Err(-libc::EACCES);
        }
        self.meta = meta;
        Ok(())
    }

    /// `bpf_xdp_adjust_tail`: moves `data_end` by `delta` bytes, zeroing what it grows into.
    pub(crate) fn adjust_tail(&mut self, delta: i32) -> Result<(), i32> {
        let hard_end = self.frame.len() - XDP_TAILROOM;
        let Some(end) = self.data_end.checked_add_signed(delta as isize) else { return Err(-libc::EINVAL) };
        if end > hard_end || end < self.data + ETH_HLEN {
            return Err(-libc::EINVAL);
        }
        if end > self.data_end {
            self.frame[self.data_end..end].fill(0);
        }
        self.data_end = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> Vec<u8> {
        vec![0u8; XDP_FRAME_SIZE]
    }

    /// `Xdp::MIN_MEMORY` holds (the JIT's run entries rely on it): the smallest buffer an
    /// `XdpBuff` accepts is that long, and one byte less is refused.
    #[test]
    fn no_xdp_buffer_is_shorter_than_min_memory() {
        let mut f = vec![0u8; Xdp::MIN_MEMORY];
        let mut x = XdpBuff::new(&mut f, XDP_FRAME_RESERVED, 0).unwrap();
        assert_eq!(Xdp::memory(&mut x).1, Xdp::MIN_MEMORY);
        let mut f = vec![0u8; Xdp::MIN_MEMORY - 1];
        assert!(XdpBuff::new(&mut f, XDP_FRAME_RESERVED, 0).is_err());
        assert!(XdpBuff::load(&mut f, &[0; ETH_HLEN]).is_err());
    }

    #[test]
    fn load_places_the_packet_after_the_headroom() {
        let mut f = frame();
        let pkt: Vec<u8> = (0..98).collect();
        let x = XdpBuff::load(&mut f, &pkt).unwrap();
        assert_eq!(x.packet(), &pkt[..]);
        assert_eq!(x.headroom(), XDP_PACKET_HEADROOM);
        assert_eq!(x.meta_len(), 0);
    }

    #[test]
    fn load_refuses_runts_and_oversize_like_the_kernel() {
        let mut f = frame();
        assert_eq!(XdpBuff::load(&mut f, &[0; 13]).unwrap_err(), ContextError::Runt { len: 13 });
        assert!(XdpBuff::load(&mut f, &vec![0; XDP_MAX_DATA]).is_ok());
        assert!(matches!(
            XdpBuff::load(&mut f, &vec![0; XDP_MAX_DATA + 1]),
            Err(ContextError::TooLong { .. })
        ));
    }

    #[test]
    fn adjust_head_respects_the_reserved_headroom_and_the_ethernet_minimum() {
        let mut f = frame();
        let mut x = XdpBuff::load(&mut f, &[7; 60]).unwrap();
        let room = (XDP_PACKET_HEADROOM - XDP_FRAME_RESERVED) as i32;
        assert_eq!(x.adjust_head(-room - 1), Err(-libc::EINVAL));
        assert_eq!(x.adjust_head(-room), Ok(()));
        assert_eq!(x.packet().len(), 60 + room as usize);
        assert_eq!(x.adjust_head(room + 47), Err(-libc::EINVAL));
        assert_eq!(x.adjust_head(room + 46), Ok(()));
        assert_eq!(x.packet().len(), ETH_HLEN);
    }

    #[test]
    fn adjust_head_carries_the_metadata_along() {
        let mut f = frame();
        let mut x = XdpBuff::load(&mut f, &[7; 60]).unwrap();
        x.adjust_meta(-8).unwrap();
        let (meta, data) = (x.meta, x.data);
        x.frame_mut()[meta..data].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        x.adjust_head(-16).unwrap();
        assert_eq!(&x.meta_and_packet()[..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(x.meta_len(), 8);
    }

    #[test]
    fn adjust_meta_limits() {
        let mut f = frame();
        let mut x = XdpBuff::load(&mut f, &[7; 60]).unwrap();
        let room = (XDP_PACKET_HEADROOM - XDP_FRAME_RESERVED) as i32;
        assert_eq!(x.adjust_meta(-6), Err(-libc::EACCES));
        assert_eq!(x.adjust_meta(4), Err(-libc::EINVAL));
        assert_eq!(x.adjust_meta(-room - 4), Err(-libc::EINVAL));
        assert_eq!(x.adjust_meta(-room), Ok(()));
        assert_eq!(x.meta_len(), room as usize);
        // With the packet moved forward there is headroom for more than u8::MAX bytes.
        let mut f = frame();
        let mut x = XdpBuff::load(&mut f, &[7; 600]).unwrap();
        x.adjust_head(200).unwrap();
        assert_eq!(x.adjust_meta(-256), Err(-libc::EACCES));
        assert_eq!(x.adjust_meta(-252), Ok(()));
    }

    #[test]
    fn adjust_tail_grows_with_zeroes_and_never_past_the_reserved_tail() {
        let mut f = frame();
        let mut x = XdpBuff::load(&mut f, &[7; 60]).unwrap();
        x.adjust_tail(-10).unwrap();
        x.adjust_tail(10).unwrap();
        assert_eq!(&x.packet()[50..], &[0; 10]);
        assert_eq!(x.adjust_tail(-47), Err(-libc::EINVAL));
        let room = (XDP_MAX_DATA - 60) as i32;
        assert_eq!(x.adjust_tail(room + 1), Err(-libc::EINVAL));
        assert_eq!(x.adjust_tail(room), Ok(()));
    }
}
