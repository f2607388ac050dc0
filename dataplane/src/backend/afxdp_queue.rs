//! The AF_XDP socket as a worker's [`Queue`]: frames are RX descriptors, buffers are whole UMEM
//! chunks, and a frame the program moved is sent from its new address in the same chunk.

use std::time::{Duration, Instant};

use xdp_vm::context::{XDP_PACKET_HEADROOM, XDP_TAILROOM, XdpBuff};

use super::afxdp::{Desc, LentFrame, Socket};
use super::queue::{Lend, Queue};

/// Empty polls before the worker sleeps in `poll(2)` (1 ms at most) instead of spinning.
const SPIN_BEFORE_SLEEP: u32 = 20_000;

impl Lend for LentFrame {
    #[inline]
    fn fill(&mut self, packet: &[u8]) -> bool {
        LentFrame::fill(self, packet)
    }

    #[inline]
    fn filled(&self) -> bool {
        !self.is_empty()
    }
}

impl Queue for Socket {
    type Frame = Desc;
    type Lent = LentFrame;

    #[inline]
    fn recv(&mut self, out: &mut [Desc]) -> usize {
        self.refill();
        Socket::recv(self, out)
    }

    #[inline]
    fn xdp_buff(&mut self, frame: Desc) -> Option<XdpBuff<'_>> {
        let (chunk, off) = self.frame_mut(frame.addr)?;
        XdpBuff::new(chunk, off, frame.len as usize).ok()
    }

    #[inline]
    fn reframe(&mut self, frame: Desc, start: usize, len: usize) -> Option<Desc> {
        let base = frame.addr & !(u64::from(self.frame_size()) - 1);
        Some(Desc { addr: base + start as u64, len: u32::try_from(len).ok()?, options: 0 })
    }

    #[inline]
    fn send(&mut self, frames: &[Desc]) -> usize {
        Socket::send(self, frames)
    }

    #[inline]
    fn release(&mut self, frame: Desc) {
        Socket::release(self, frame.addr);
    }

    fn alloc_copy(&mut self, packet: &[u8]) -> Option<Desc> {
        let base = self.alloc()?;
        let (chunk, _) = self.frame_mut(base)?;
        let at = XDP_PACKET_HEADROOM;
        if at + packet.len() + XDP_TAILROOM > chunk.len() {
            Socket::release(self, base);
            return None;
        }
        chunk[at..at + packet.len()].copy_from_slice(packet);
        Some(Desc { addr: base + at as u64, len: packet.len() as u32, options: 0 })
    }

    #[inline]
    fn prefetch(&self, frame: Desc) {
        Socket::prefetch(self, frame.addr);
    }

    #[inline]
    fn lend(&mut self) -> Option<LentFrame> {
        Socket::lend(self)
    }

    #[inline]
    fn accept(&mut self, lent: LentFrame) -> Option<Desc> {
        Socket::accept(self, lent)
    }

    #[inline]
    fn reclaim(&mut self, lent: LentFrame) {
        Socket::reclaim(self, lent);
    }

    #[inline]
    fn flush(&mut self) {
        self.kick_tx(false);
    }

    fn idle(&mut self, idle: u32) {
        if self.busy_polling() && idle < SPIN_BEFORE_SLEEP {
            // Busy polling: the device's NAPI runs in this call, on this core.
            self.kick_tx(false);
            self.busy_poll_once();
            return;
        }
        self.kick_tx(false);
        if idle >= SPIN_BEFORE_SLEEP || self.rx_needs_wakeup() {
            self.poll_rx(if idle >= SPIN_BEFORE_SLEEP { 1 } else { 0 });
        }
    }

    fn device_drops(&self) -> Option<[u64; 3]> {
        self.kernel_stats().ok().map(|k| [k.rx_dropped, k.rx_ring_full, k.rx_fill_ring_empty])
    }

    /// Lets what is in the TX ring go out and complete (200 ms at most).
    fn drain(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(200);
        self.kick_tx(true);
        while self.accounting()[3] > 0 && Instant::now() < deadline {
            self.refill();
            self.kick_tx(true);
            std::thread::yield_now();
        }
    }

    fn held(&self) -> usize {
        let [_, _, user, _, lent] = self.accounting();
        user + lent
    }
}
