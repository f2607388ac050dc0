//! What a worker needs from a backend: one (port, queue) as a source and sink of frames,
//! nothing more. The worker ([`crate::worker`]) runs the program and handles the verdicts once,
//! for every backend; a backend only moves frame handles and says where their bytes are.
//!
//! A frame is a small `Copy` handle (an AF_XDP descriptor, a DPDK mbuf pointer). Between
//! [`Queue::recv`] and [`Queue::send`] / [`Queue::release`] it is the worker's: the backend
//! lends its whole buffer (headroom, packet, tailroom) as an [`XdpBuff`] without copying, and
//! takes it back either for transmission, from wherever the program left the packet
//! ([`Queue::reframe`]), or to be freed. Every received frame is given back exactly once.
//!
//! Redirects between ports move no heap buffers: the target port's worker lends buffers of its
//! own ([`Queue::lend`]: an AF_XDP UMEM chunk, a DPDK mbuf) to the workers that may redirect
//! to it; such a worker copies the redirected packet straight into one ([`Lend::fill`], the
//! only copy) and hands it back, and the target sends it as a frame of its own
//! ([`Queue::accept`]). Unused loans come back through [`Queue::reclaim`].

use xdp_vm::context::XdpBuff;

/// A buffer one queue lent to another worker: filled there, given back to be sent.
pub trait Lend: Send {
    /// Copies `packet` into the buffer (where the owning queue sends from). `false`, with
    /// nothing written, when it does not fit or is empty.
    fn fill(&mut self, packet: &[u8]) -> bool;

    /// Whether [`fill`](Self::fill) wrote a packet.
    fn filled(&self) -> bool;
}

/// One queue of a port, owned by one worker.
pub trait Queue: Send {
    /// A received frame's handle.
    type Frame: Copy + Default;

    /// A buffer of this queue lent to another worker ([`Queue::lend`]).
    type Lent: Lend;

    /// Receives up to `out.len()` frames, doing first whatever keeps receiving possible (AF_XDP:
    /// reap completions, top up the fill ring). Returns how many were written to `out`.
    fn recv(&mut self, out: &mut [Self::Frame]) -> usize;

    /// The whole buffer of received `frame` as an XDP context (the packet where the backend put
    /// it, the headroom before it and the tailroom after), with `ingress_ifindex` and
    /// `rx_queue_index` not yet set. `None` when the frame cannot be described (not ours, a
    /// multi-segment mbuf, too little head- or tailroom): the caller releases it.
    fn xdp_buff(&mut self, frame: Self::Frame) -> Option<XdpBuff<'_>>;

    /// The frame to transmit after the program left its packet at `start..start + len` of the
    /// buffer [`Queue::xdp_buff`] lent; `None` when the backend cannot send it from there (the
    /// caller releases it).
    fn reframe(&mut self, frame: Self::Frame, start: usize, len: usize) -> Option<Self::Frame>;

    /// Queues `frames` for transmission, in order; returns how many were taken. The caller
    /// releases the rest.
    fn send(&mut self, frames: &[Self::Frame]) -> usize;

    /// Gives a received frame back (dropped).
    fn release(&mut self, frame: Self::Frame);

    /// A frame of this queue's own holding a copy of `packet` (a frame another port's program
    /// redirected here), held as a received frame is: to be sent or released. `None` when no
    /// buffer is free or the packet does not fit one.
    fn alloc_copy(&mut self, packet: &[u8]) -> Option<Self::Frame>;

    /// A free buffer of this queue's, lent for another worker to fill with a packet for this
    /// queue to send. `None` when none is free.
    fn lend(&mut self) -> Option<Self::Lent>;

    /// A lent buffer back, filled: a frame of this queue holding the packet, to be sent or
    /// released as a received frame is. `None` when it was not filled (or is not this
    /// queue's); the buffer is then freed.
    fn accept(&mut self, lent: Self::Lent) -> Option<Self::Frame>;

    /// A lent buffer back unused: freed.
    fn reclaim(&mut self, lent: Self::Lent);

    /// Before the program runs on a batch: start fetching `frame`'s first cache line. A hint;
    /// default: nothing.
    #[inline]
    fn prefetch(&self, frame: Self::Frame) {
        let _ = frame;
    }

    /// After a batch: push what [`Queue::send`] queued out (AF_XDP: kick the kernel when it
    /// asked for it). Default: nothing to do.
    fn flush(&mut self) {}

    /// Nothing was received for `idle` polls in a row: wait a little when that is long, and
    /// let the device make progress. Default: spin.
    fn idle(&mut self, idle: u32) {
        let _ = idle;
        std::hint::spin_loop();
    }

    /// Drop counters kept outside the worker, as [`crate::stats::KERNEL_DROPS`] names them
    /// (AF_XDP: the kernel's socket statistics). Default: none.
    fn device_drops(&self) -> Option<[u64; 3]> {
        None
    }

    /// At shutdown: let what was queued for transmission go out (briefly).
    fn drain(&mut self) {
        self.flush();
    }

    /// Frames the worker still holds (received, neither sent nor released, or lent and not
    /// given back): 0 after a clean run.
    fn held(&self) -> usize;
}
