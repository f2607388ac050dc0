//! Guest memory: the only place the interpreter turns a program's 64-bit address into a real
//! load or store.
//!
//! A program addresses real memory, as in the kernel: its stack, the frame buffer of the packet,
//! and the values of its maps. Every access is checked here, at run time, against those regions
//! before it happens — an access outside them is a [`Fault`](crate::interp::Fault), never a read
//! of foreign memory. The regions stay valid for the whole run: the frame and the stack are
//! borrowed for it, and map values live as long as the program's `Arc<Map>`s (a map never frees
//! or moves value memory while it exists).
//!
//! Map values are shared with other workers exactly as in the kernel: plain loads and stores may
//! race with another CPU's (eBPF promises no more); the atomic instructions are real atomics.
#![expect(unsafe_code, reason = "the checked raw loads and stores every engine access goes through")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use maps::{Map, map_flags};

/// A byte range `[start, start + len)` of real memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Region {
    pub start: usize,
    pub len: usize,
}

impl Region {
    #[cfg(test)]
    pub(crate) const EMPTY: Region = Region { start: 0, len: 0 };

    /// True when `[addr, addr + size)` lies inside the region; `size` is at least 1.
    #[inline(always)]
    pub(crate) fn holds(self, addr: u64, size: usize) -> bool {
        let off = (addr as usize).wrapping_sub(self.start);
        off < self.len && self.len - off >= size
    }
}

/// The memory one program run may touch.
#[derive(Debug)]
pub(crate) struct Memory<'m> {
    /// The whole frame buffer of the packet (headroom and tailroom included).
    pub packet: Region,
    /// All stack frames.
    pub stack: Region,
    /// The program's maps: their values are addressable.
    pub maps: &'m [Arc<Map>],
}

/// Read-modify-write operations of the atomic instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtomicOp {
    Add,
    Or,
    And,
    Xor,
    Xchg,
}

impl Memory<'_> {
    /// True when a `size`-byte access at `addr` is allowed.
    #[inline(always)]
    pub(crate) fn check(&self, addr: u64, size: usize, write: bool) -> bool {
        self.packet.holds(addr, size) || self.stack.holds(addr, size) || self.in_map(addr, size, write)
    }

    #[inline(never)]
    fn in_map(&self, addr: u64, size: usize, write: bool) -> bool {
        self.maps.iter().any(|m| {
            !(write && m.def().map_flags & map_flags::RDONLY_PROG != 0)
                && m.contains_value(addr as usize, size)
        })
    }

    /// Loads `size` (1, 2, 4 or 8) bytes, little-endian, zero-extended; `None` when not allowed.
    #[cfg(test)]
    pub(crate) fn load(&self, addr: u64, size: usize) -> Option<u64> {
        self.load_or(addr, size, |_| None)
    }

    /// Like `load`, but an address outside the stack and the packet is first offered to
    /// `other` (the context, whose loads are translated) before the maps are searched.
    #[inline(always)]
    pub(crate) fn load_or(
        &self,
        addr: u64,
        size: usize,
        other: impl FnOnce(u64) -> Option<u64>,
    ) -> Option<u64> {
        if !(self.packet.holds(addr, size) || self.stack.holds(addr, size)) {
            if let Some(v) = other(addr) {
                return Some(v);
            }
            if !self.in_map(addr, size, false) {
                return None;
            }
        }
        let p = addr as usize as *const u8;
        // SAFETY: `check` proved `[addr, addr + size)` lies inside one live region (the frame,
        // the stack or a map value, all valid for the run, see the module doc); unaligned reads
        // are used because eBPF allows unaligned access to packet data.
        let v = unsafe {
            match size {
                1 => u64::from(p.read()),
                2 => u64::from(p.cast::<u16>().read_unaligned()),
                4 => u64::from(p.cast::<u32>().read_unaligned()),
                _ => p.cast::<u64>().read_unaligned(),
            }
        };
        Some(v)
    }

    /// Stores the low `size` (1, 2, 4 or 8) bytes of `value`; `None` when not allowed.
    #[inline(always)]
    pub(crate) fn store(&self, addr: u64, size: usize, value: u64) -> Option<()> {
        if !self.check(addr, size, true) {
            return None;
        }
        let p = addr as usize as *mut u8;
        // SAFETY: `check` proved `[addr, addr + size)` lies inside one live, writable region
        // (read-only maps are excluded for writes); see `load` on alignment.
        unsafe {
            match size {
                1 => p.write(value as u8),
                2 => p.cast::<u16>().write_unaligned(value as u16),
                4 => p.cast::<u32>().write_unaligned(value as u32),
                _ => p.cast::<u64>().write_unaligned(value),
            }
        }
        Some(())
    }

    /// Calls `f` with the `len` bytes at `addr` (`None` when not allowed). Bytes on the stack or
    /// in the packet are lent in place; map values, which other threads may write, are copied.
    #[inline(always)]
    pub(crate) fn with_bytes<R>(&self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
        if len == 0 {
            return Some(f(&[]));
        }
        if self.packet.holds(addr, len) || self.stack.holds(addr, len) {
            // SAFETY: the range lies inside the frame or the stack, which this run borrows
            // exclusively (module doc); nothing writes them while `f` holds the slice, since
            // only this thread's engine touches them and it is inside this call.
            let bytes = unsafe { std::slice::from_raw_parts(addr as usize as *const u8, len) };
            return Some(f(bytes));
        }
        let mut small = [0u8; 64];
        let mut large = Vec::new();
        let buf = if len <= small.len() {
            &mut small[..len]
        } else {
            large.resize(len, 0);
            &mut large[..]
        };
        self.read(addr, buf).then(|| f(buf))
    }

    /// Copies `out.len()` bytes from `addr`; `false` when not allowed.
    pub(crate) fn read(&self, addr: u64, out: &mut [u8]) -> bool {
        if out.is_empty() {
            return true;
        }
        if !self.check(addr, out.len(), false) {
            return false;
        }
        // SAFETY: the source range was checked to lie in one live region; `out` is a distinct
        // Rust buffer, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(addr as usize as *const u8, out.as_mut_ptr(), out.len()) };
        true
    }

    /// Copies `bytes` to `addr`; `false` (and nothing written) when not allowed.
    pub(crate) fn write(&self, addr: u64, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if !self.check(addr, bytes.len(), true) {
            return false;
        }
        // SAFETY: the destination range was checked to lie in one live, writable region;
        // `bytes` is a distinct Rust buffer, so the ranges cannot overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), addr as usize as *mut u8, bytes.len()) };
        true
    }

    /// An atomic read-modify-write; returns the old value (zero-extended for 32 bits).
    pub(crate) fn atomic(&self, addr: u64, wide: bool, op: AtomicOp, operand: u64) -> Option<u64> {
        let size = if wide { 8 } else { 4 };
        if !addr.is_multiple_of(size as u64) || !self.check(addr, size, true) {
            return None;
        }
        if wide {
            // SAFETY: 8 bytes at `addr` lie in a live writable region (checked) and `addr` is
            // 8-byte aligned (checked); all other accesses to eBPF memory are through raw pointers
            // too, so no Rust reference aliases it.
            let a = unsafe { AtomicU64::from_ptr(addr as usize as *mut u64) };
            Some(match op {
                AtomicOp::Add => a.fetch_add(operand, Ordering::SeqCst),
                AtomicOp::Or => a.fetch_or(operand, Ordering::SeqCst),
                AtomicOp::And => a.fetch_and(operand, Ordering::SeqCst),
                AtomicOp::Xor => a.fetch_xor(operand, Ordering::SeqCst),
                AtomicOp::Xchg => a.swap(operand, Ordering::SeqCst),
            })
        } else {
            // SAFETY: as above, for 4 aligned bytes.
            let a = unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) };
            let v = operand as u32;
            Some(u64::from(match op {
                AtomicOp::Add => a.fetch_add(v, Ordering::SeqCst),
                AtomicOp::Or => a.fetch_or(v, Ordering::SeqCst),
                AtomicOp::And => a.fetch_and(v, Ordering::SeqCst),
                AtomicOp::Xor => a.fetch_xor(v, Ordering::SeqCst),
                AtomicOp::Xchg => a.swap(v, Ordering::SeqCst),
            }))
        }
    }

    /// Atomic compare-and-exchange; returns the old value (zero-extended for 32 bits).
    pub(crate) fn cmpxchg(&self, addr: u64, wide: bool, expected: u64, new: u64) -> Option<u64> {
        let size = if wide { 8 } else { 4 };
        if !addr.is_multiple_of(size as u64) || !self.check(addr, size, true) {
            return None;
        }
        if wide {
            // SAFETY: see `atomic`.
            let a = unsafe { AtomicU64::from_ptr(addr as usize as *mut u64) };
            Some(a.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst).unwrap_or_else(|v| v))
        } else {
            // SAFETY: see `atomic`.
            let a = unsafe { AtomicU32::from_ptr(addr as usize as *mut u32) };
            let old = a
                .compare_exchange(expected as u32, new as u32, Ordering::SeqCst, Ordering::SeqCst)
                .unwrap_or_else(|v| v);
            Some(u64::from(old))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(buf: &mut [u8]) -> Region {
        Region { start: buf.as_mut_ptr() as usize, len: buf.len() }
    }

    #[test]
    fn loads_and_stores_inside_regions_only() {
        let mut pkt = vec![0u8; 64];
        let mut stack = vec![0u8; 32];
        let mem = Memory { packet: region(&mut pkt), stack: region(&mut stack), maps: &[] };
        let base = mem.packet.start as u64;
        assert_eq!(mem.store(base + 60, 4, 0xdead_beef), Some(()));
        assert_eq!(mem.load(base + 60, 4), Some(0xdead_beef));
        assert_eq!(mem.load(base + 61, 4), None, "straddles the end");
        assert_eq!(mem.load(base - 1, 1), None, "before the start");
        assert_eq!(mem.load(0, 8), None);
        assert_eq!(mem.load(u64::MAX - 3, 8), None, "wraps around");
        let sp = mem.stack.start as u64;
        assert_eq!(mem.store(sp + 24, 8, 7), Some(()));
        assert_eq!(mem.load(sp + 24, 8), Some(7));
        assert_eq!(mem.store(sp + 25, 8, 7), None);
    }

    #[test]
    fn atomics_need_alignment() {
        let mut stack = vec![0u64; 4];
        let start = stack.as_mut_ptr() as usize;
        let mem = Memory { packet: Region::EMPTY, stack: Region { start, len: 32 }, maps: &[] };
        assert_eq!(mem.atomic(start as u64, true, AtomicOp::Add, 5), Some(0));
        assert_eq!(mem.atomic(start as u64, true, AtomicOp::Add, 5), Some(5));
        assert_eq!(mem.atomic(start as u64 + 4, true, AtomicOp::Add, 5), None);
        assert_eq!(mem.cmpxchg(start as u64 + 8, false, 0, 9), Some(0));
        assert_eq!(mem.cmpxchg(start as u64 + 8, false, 0, 10), Some(9));
    }
}
