//! Stamps: what `pktgen bench` writes into each frame it sends so the receiver can tell its own
//! frames, count each once and time it.
//!
//! A stamp is 16 bytes at the start of the L4 payload, little-endian:
//! `cookie: u32` (random per run: frames of another run are not counted), `seq: u32` (unique per
//! frame of a run), `sent_ns: u64` (the sender's [`clock_ns`] when it queued the frame). The L4
//! checksum is updated incrementally (RFC 1624) so the stamped frame stays valid. Sequence
//! numbers wrap after 2^32 frames (71 minutes at 1 Mpps); a bench longer than that would count
//! the second lap as duplicates.

use std::sync::OnceLock;
use std::time::Instant;

use etherparse::{SlicedPacket, TransportSlice};

/// Bytes a stamp takes.
pub const STAMP_LEN: usize = 16;

/// Where a frame's stamp and L4 checksum live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StampAt {
    /// Offset of the stamp (the L4 payload) in the frame.
    pub stamp: usize,
    /// Offset of the 16-bit L4 checksum.
    pub checksum: usize,
    /// UDP: a computed 0 is sent as 0xffff (0 means "no checksum").
    pub udp: bool,
}

impl StampAt {
    /// Finds the L4 payload of an Ethernet frame; `None` when the frame is not ICMP, UDP or TCP
    /// over IPv4/IPv6 or its payload is shorter than a stamp.
    #[must_use]
    pub fn find(frame: &[u8]) -> Option<Self> {
        let sliced = SlicedPacket::from_ethernet(frame).ok()?;
        let base = frame.as_ptr() as usize;
        let (l4, payload, csum, udp) = match sliced.transport? {
            TransportSlice::Udp(u) => (u.slice(), u.payload(), 6, true),
            TransportSlice::Tcp(t) => (t.slice(), t.payload(), 16, false),
            TransportSlice::Icmpv4(i) => (i.slice(), i.payload(), 2, false),
            TransportSlice::Icmpv6(i) => (i.slice(), i.payload(), 2, false),
        };
        let l4_at = l4.as_ptr() as usize - base;
        let stamp = payload.as_ptr() as usize - base;
        // Checksum words are 16-bit aligned relative to the L4 header.
        if payload.len() < STAMP_LEN || !(stamp - l4_at).is_multiple_of(2) {
            return None;
        }
        Some(Self { stamp, checksum: l4_at + csum, udp })
    }

    /// Writes a stamp into `frame` (a copy of the frame `find` was given) and fixes the checksum.
    pub fn write(&self, frame: &mut [u8], cookie: u32, seq: u32, sent_ns: u64) {
        let mut new = [0u8; STAMP_LEN];
        new[..4].copy_from_slice(&cookie.to_le_bytes());
        new[4..8].copy_from_slice(&seq.to_le_bytes());
        new[8..].copy_from_slice(&sent_ns.to_le_bytes());
        let old: [u8; STAMP_LEN] =
            frame[self.stamp..self.stamp + STAMP_LEN].try_into().unwrap_or([0; STAMP_LEN]);
        let ck = u16::from_be_bytes([frame[self.checksum], frame[self.checksum + 1]]);
        let mut ck = checksum_update(ck, &old, &new);
        if self.udp && ck == 0 {
            ck = 0xffff;
        }
        frame[self.stamp..self.stamp + STAMP_LEN].copy_from_slice(&new);
        frame[self.checksum..self.checksum + 2].copy_from_slice(&ck.to_be_bytes());
    }

    /// Reads the stamp of a received frame: `(seq, sent_ns)` when it carries `cookie`.
    #[must_use]
    pub fn read(&self, frame: &[u8], cookie: u32) -> Option<(u32, u64)> {
        let s = frame.get(self.stamp..self.stamp + STAMP_LEN)?;
        if s[..4] != cookie.to_le_bytes() {
            return None;
        }
        let seq = u32::from_le_bytes(s[4..8].try_into().ok()?);
        Some((seq, u64::from_le_bytes(s[8..].try_into().ok()?)))
    }
}

/// RFC 1624 eq. 3: `HC' = ~(~HC + ~m + m')` over the 16-bit words that changed.
fn checksum_update(ck: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut sum = u32::from(!ck);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        sum += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        sum += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Nanoseconds on the process's monotonic clock (since its first call); senders and receivers
/// of one process share it.
#[must_use]
pub fn clock_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    use super::*;
    use crate::craft::{FrameSpec, L3, L4, ping_pattern};

    /// Every L4 checksum of `frame` checked the way the receiving stack would.
    fn checksum_ok(frame: &[u8]) -> bool {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (src, dst, v4) = match p.net.unwrap() {
            NetSlice::Ipv4(ip) => (ip.header().source().to_vec(), ip.header().destination().to_vec(), true),
            NetSlice::Ipv6(ip) => (ip.header().source().to_vec(), ip.header().destination().to_vec(), false),
        };
        let a4 = |v: &[u8]| -> [u8; 4] { v.try_into().unwrap() };
        let a16 = |v: &[u8]| -> [u8; 16] { v.try_into().unwrap() };
        match p.transport.unwrap() {
            TransportSlice::Udp(u) => {
                let h = u.to_header();
                let want = if v4 {
                    h.calc_checksum_ipv4_raw(a4(&src), a4(&dst), u.payload())
                } else {
                    h.calc_checksum_ipv6_raw(a16(&src), a16(&dst), u.payload())
                };
                u.checksum() == want.unwrap()
            }
            TransportSlice::Tcp(t) => {
                let want = if v4 {
                    t.calc_checksum_ipv4(a4(&src), a4(&dst))
                } else {
                    t.calc_checksum_ipv6(a16(&src), a16(&dst))
                };
                t.checksum() == want.unwrap()
            }
            TransportSlice::Icmpv4(i) => {
                etherparse::Icmpv4Header::with_checksum(i.icmp_type(), i.payload()).checksum == i.checksum()
            }
            TransportSlice::Icmpv6(i) => i.is_checksum_valid(a16(&src), a16(&dst)),
        }
    }

    #[test]
    fn stamped_frames_keep_valid_checksums_for_every_kind() {
        let l3s = [
            L3::V4 { src: Ipv4Addr::new(10, 0, 0, 1), dst: Ipv4Addr::new(10, 0, 0, 2) },
            L3::V6 { src: "fd00::1".parse().unwrap(), dst: "fd00::2".parse().unwrap() },
        ];
        let l4s = [
            L4::IcmpEcho { id: 1, seq: 2, payload: ping_pattern(56) },
            L4::Udp { src_port: 1, dst_port: 9, payload: vec![] },
            L4::TcpSyn { src_port: 1, dst_port: 80, seq: 7 },
        ];
        for l3 in l3s {
            for l4 in &l4s {
                for vlan in [None, Some(5)] {
                    let spec =
                        FrameSpec { l3, l4: l4.clone(), vlan, frame_size: Some(128), ..FrameSpec::default() };
                    let frame = spec.build().unwrap();
                    let at = StampAt::find(&frame).unwrap_or_else(|| panic!("{spec:?}"));
                    for (seq, ns) in
                        [(0u32, 0u64), (1, 2), (u32::MAX, u64::MAX), (0x1234_5678, 0xdead_beef_f00d)]
                    {
                        let mut f = frame.clone();
                        at.write(&mut f, 0xc00c_1e5a, seq, ns);
                        assert!(checksum_ok(&f), "{spec:?} seq {seq}");
                        assert_eq!(at.read(&f, 0xc00c_1e5a), Some((seq, ns)));
                        assert_eq!(at.read(&f, 0xc00c_1e5b), None, "another run's cookie");
                        // Stamping again over a stamp (the sender reuses frames) stays valid.
                        at.write(&mut f, 1, seq.wrapping_add(1), ns ^ 0xffff);
                        assert!(checksum_ok(&f));
                    }
                }
            }
        }
    }

    #[test]
    fn frames_without_room_have_no_stamp() {
        let spec = FrameSpec {
            l4: L4::Udp { src_port: 1, dst_port: 2, payload: vec![0; 15] },
            ..FrameSpec::default()
        };
        assert_eq!(StampAt::find(&spec.build().unwrap()), None);
        assert_eq!(StampAt::find(&[0u8; 20]), None);
    }
}
