//! Frame crafting: one [`FrameSpec`] describes an Ethernet II frame and [`FrameSpec::build`]
//! serializes it with every length and checksum filled in.
//!
//! Layers: Ethernet II, an optional 802.1Q tag, IPv4 or IPv6, then an ICMP echo request
//! (ICMPv6 over IPv6), a UDP datagram or a TCP SYN. Headers are written by `etherparse`, which
//! also computes the IPv4 header checksum and the L4 checksums over their pseudo-headers.
//!
//! Invariants of a built frame: exactly `frame_size` bytes when one is set (the L4 payload is
//! padded to reach it, the IP length fields cover the padding, nothing is truncated); otherwise
//! headers plus the given payload, with no Ethernet padding and no FCS. The only pseudo-random
//! parts — the IPv4 identification and the padding bytes — come from [`SplitMix64`] seeded with
//! [`FrameSpec::seed`], so the same spec always gives the same bytes.

mod frames;

use std::net::{Ipv4Addr, Ipv6Addr};

use etherparse::err::packet::BuildWriteError;
use etherparse::{IpHeaders, IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder, VlanId};

pub use self::frames::{RUNT_LENS, test_frames};
use crate::rng::SplitMix64;

/// Smallest frame size a [`FrameSpec::frame_size`] may ask for: Ethernet's minimum without FCS.
pub const MIN_FRAME_SIZE: usize = 60;
/// Largest frame size a [`FrameSpec::frame_size`] may ask for: a 1500-byte MTU plus the
/// Ethernet header, without FCS.
pub const MAX_FRAME_SIZE: usize = 1514;

/// Ethernet II header length.
pub const ETHERNET_LEN: usize = 14;
/// 802.1Q tag length.
pub const VLAN_LEN: usize = 4;
/// Largest 802.1Q VLAN identifier.
pub const MAX_VLAN_ID: u16 = 4095;
/// TCP window advertised by crafted SYNs (Linux's default for a 1460-byte MSS).
pub const TCP_WINDOW: u16 = 64240;

/// Source MAC of [`FrameSpec::default`]: locally administered, unicast.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
/// Destination MAC of [`FrameSpec::default`].
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// Default IPv4 source. Only ever written into files, never sent.
pub const DEFAULT_SRC_IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Default IPv4 destination.
pub const DEFAULT_DST_IPV4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// Default IPv6 source (unique-local).
pub const DEFAULT_SRC_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
/// Default IPv6 destination.
pub const DEFAULT_DST_IPV6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);
/// Default IPv4 TTL / IPv6 hop limit.
pub const DEFAULT_TTL: u8 = 64;
/// ICMP echo identifier of [`icmp_echo`].
pub const ICMP_ECHO_ID: u16 = 0x1234;
/// ICMP echo sequence number of [`icmp_echo`].
pub const ICMP_ECHO_SEQ: u16 = 1;
/// ICMP echo payload length of [`icmp_echo`], as `ping` sends by default.
pub const ICMP_ECHO_PAYLOAD_LEN: usize = 56;
/// Length of the frame [`icmp_echo`] builds: 14 + 20 + 8 + 56.
pub const ICMP_ECHO_FRAME_LEN: usize = 98;

/// Errors from describing or building a frame.
#[derive(Debug, thiserror::Error)]
pub enum CraftError {
    /// The requested frame size is outside [`MIN_FRAME_SIZE`]`..=`[`MAX_FRAME_SIZE`].
    #[error("frame size {size} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE} bytes")]
    FrameSize { size: usize },
    /// The requested frame size cannot hold the headers and the given payload.
    #[error("frame size {size} is too small: headers and payload need {needed} bytes")]
    FrameTooSmall { size: usize, needed: usize },
    /// The VLAN identifier does not fit in 12 bits.
    #[error("vlan id {id} is outside 0..={MAX_VLAN_ID}")]
    VlanId { id: u16 },
    /// The L4 header and payload do not fit in one IP packet.
    #[error("payload of {len} bytes does not fit in one IP packet (at most {max})")]
    PayloadTooLong { len: usize, max: usize },
    /// More flows were asked for than the varied field can tell apart.
    #[error("{count} flows asked for, but varying the {vary} gives at most {max} distinct flows")]
    TooManyFlows { count: usize, vary: Vary, max: u128 },
    /// A MAC address that is not six colon- or dash-separated hex pairs.
    #[error("invalid MAC address '{input}', expected six hex pairs like 02:00:00:00:00:01")]
    Mac { input: String },
    /// `etherparse` refused to serialize the headers (a length check we did not anticipate).
    #[error("cannot serialize frame")]
    Build {
        #[source]
        source: BuildWriteError,
    },
}

/// The network layer and its addresses; the address family is the variant, so the source and
/// destination can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L3 {
    /// IPv4, don't-fragment set, identification drawn from the seed.
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    /// IPv6, traffic class and flow label zero, no extension headers.
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl L3 {
    /// The IP header length (no options, no extension headers).
    pub const fn header_len(&self) -> usize {
        match self {
            Self::V4 { .. } => Ipv4Header::MIN_LEN,
            Self::V6 { .. } => Ipv6Header::LEN,
        }
    }
}

/// The transport layer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum L4 {
    /// ICMP echo request (ICMPv6 echo request, type 128, over IPv6).
    IcmpEcho { id: u16, seq: u16, payload: Vec<u8> },
    /// UDP datagram.
    Udp { src_port: u16, dst_port: u16, payload: Vec<u8> },
    /// TCP segment with only SYN set, window [`TCP_WINDOW`], no options, no payload unless
    /// padded.
    TcpSyn { src_port: u16, dst_port: u16, seq: u32 },
}

impl L4 {
    /// The L4 header length.
    pub const fn header_len(&self) -> usize {
        match self {
            Self::IcmpEcho { .. } | Self::Udp { .. } => 8,
            Self::TcpSyn { .. } => 20,
        }
    }

    /// The payload given in the spec (before any padding).
    pub fn payload(&self) -> &[u8] {
        match self {
            Self::IcmpEcho { payload, .. } | Self::Udp { payload, .. } => payload,
            Self::TcpSyn { .. } => &[],
        }
    }
}

/// Which field [`FrameSpec::flows`] varies to make flows distinct.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Vary {
    /// The UDP/TCP source port, or the echo identifier for ICMP (what conntrack and RSS treat
    /// as the ICMP "port"). Wraps at 65536.
    #[default]
    SrcPort,
    /// The IP source address, counted up as an integer.
    SrcAddr,
}

impl std::fmt::Display for Vary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::SrcPort => "source port",
            Self::SrcAddr => "source address",
        })
    }
}

/// Everything needed to build one frame. [`FrameSpec::default`] is the [`icmp_echo`] frame;
/// change what you need with struct-update syntax:
///
/// ```
/// use pktgen::craft::{FrameSpec, L4};
///
/// let spec = FrameSpec {
///     l4: L4::Udp { src_port: 1024, dst_port: 9, payload: vec![] },
///     vlan: Some(100),
///     frame_size: Some(128),
///     ..FrameSpec::default()
/// };
/// assert_eq!(spec.build()?.len(), 128);
/// # Ok::<(), pktgen::craft::CraftError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// 802.1Q VLAN identifier (priority and DEI zero), or untagged.
    pub vlan: Option<u16>,
    pub l3: L3,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    pub l4: L4,
    /// Total frame length (without FCS) in [`MIN_FRAME_SIZE`]`..=`[`MAX_FRAME_SIZE`]; the L4
    /// payload is padded with seeded pseudo-random bytes to reach it.
    pub frame_size: Option<usize>,
    /// Seed for the IPv4 identification and the padding bytes.
    pub seed: u64,
}

impl Default for FrameSpec {
    /// The [`icmp_echo`] frame: 02:00:00:00:00:01 -> 02:00:00:00:00:02, 10.0.0.1 -> 10.0.0.2,
    /// TTL 64, echo request id 0x1234 seq 1 with the 56-byte payload 0x00, 0x01, ..., 0x37,
    /// untagged, natural size (98 bytes), seed 0.
    fn default() -> Self {
        Self {
            src_mac: DEFAULT_SRC_MAC,
            dst_mac: DEFAULT_DST_MAC,
            vlan: None,
            l3: L3::V4 { src: DEFAULT_SRC_IPV4, dst: DEFAULT_DST_IPV4 },
            ttl: DEFAULT_TTL,
            l4: L4::IcmpEcho {
                id: ICMP_ECHO_ID,
                seq: ICMP_ECHO_SEQ,
                payload: ping_pattern(ICMP_ECHO_PAYLOAD_LEN),
            },
            frame_size: None,
            seed: 0,
        }
    }
}

impl FrameSpec {
    /// Length of all headers (Ethernet, VLAN tag, IP, L4), i.e. the frame length with an empty
    /// payload.
    pub fn header_len(&self) -> usize {
        ETHERNET_LEN
            + if self.vlan.is_some() { VLAN_LEN } else { 0 }
            + self.l3.header_len()
            + self.l4.header_len()
    }

    /// Serializes the frame: headers, the given payload, then padding up to `frame_size`.
    ///
    /// # Errors
    ///
    /// [`CraftError::FrameSize`] / [`CraftError::FrameTooSmall`] when `frame_size` is out of range
    /// or cannot hold the headers and payload, [`CraftError::VlanId`] for an id above 4095,
    /// [`CraftError::PayloadTooLong`] when the payload overflows the IP length field.
    pub fn build(&self) -> Result<Vec<u8>, CraftError> {
        let headers = self.header_len();
        let given = self.l4.payload();
        let payload_len = match self.frame_size {
            None => given.len(),
            Some(size) => {
                if !(MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&size) {
                    return Err(CraftError::FrameSize { size });
                }
                let needed = headers + given.len();
                if size < needed {
                    return Err(CraftError::FrameTooSmall { size, needed });
                }
                size - headers
            }
        };
        // The IPv4 total length (which counts the IP header), the IPv6 payload length (which
        // does not) and the UDP length are all 16-bit fields.
        let counted_ip_header = match self.l3 {
            L3::V4 { .. } => Ipv4Header::MIN_LEN,
            L3::V6 { .. } => 0,
        };
        let max = usize::from(u16::MAX) - counted_ip_header - self.l4.header_len();
        if payload_len > max {
            return Err(CraftError::PayloadTooLong { len: payload_len, max });
        }

        // Draw order is part of the reproducibility contract: identification, then padding.
        let mut rng = SplitMix64::new(self.seed);
        let identification = (rng.next_u64() >> 48) as u16;
        let mut payload = Vec::with_capacity(payload_len);
        payload.extend_from_slice(given);
        payload.resize(payload_len, 0);
        rng.fill(&mut payload[given.len()..]);

        let ip = match self.l3 {
            L3::V4 { src, dst } => {
                let mut header = Ipv4Header::new(0, self.ttl, IpNumber::UDP, src.octets(), dst.octets())
                    .expect("a zero payload length always fits");
                header.identification = identification;
                IpHeaders::Ipv4(header, Default::default())
            }
            L3::V6 { src, dst } => IpHeaders::Ipv6(
                Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: IpNumber::UDP,
                    hop_limit: self.ttl,
                    source: src.octets(),
                    destination: dst.octets(),
                },
                Default::default(),
            ),
        };
        let ethernet = PacketBuilder::ethernet2(self.src_mac, self.dst_mac);
        let ip_step = match self.vlan {
            None => ethernet.ip(ip),
            Some(id) => {
                let vlan = VlanId::try_new(id).map_err(|_| CraftError::VlanId { id })?;
                ethernet.single_vlan(vlan).ip(ip)
            }
        };

        let mut frame = Vec::with_capacity(headers + payload_len);
        let written = match (&self.l4, self.is_v4()) {
            (L4::IcmpEcho { id, seq, .. }, true) => {
                ip_step.icmpv4_echo_request(*id, *seq).write(&mut frame, &payload)
            }
            (L4::IcmpEcho { id, seq, .. }, false) => {
                ip_step.icmpv6_echo_request(*id, *seq).write(&mut frame, &payload)
            }
            (L4::Udp { src_port, dst_port, .. }, _) => {
                ip_step.udp(*src_port, *dst_port).write(&mut frame, &payload)
            }
            (L4::TcpSyn { src_port, dst_port, seq }, _) => {
                ip_step.tcp(*src_port, *dst_port, *seq, TCP_WINDOW).syn().write(&mut frame, &payload)
            }
        };
        written.map_err(|source| CraftError::Build { source })?;
        debug_assert_eq!(frame.len(), headers + payload_len);
        Ok(frame)
    }

    /// `count` specs that differ only in the field `vary` picks: flow `i` adds `i` to it (flow 0
    /// is `self`). Flows are pairwise distinct 5-tuples.
    ///
    /// # Errors
    ///
    /// [`CraftError::TooManyFlows`] when `count` exceeds the number of values the field can
    /// take (65536 ports, 2^32 IPv4 addresses).
    pub fn flows(&self, count: usize, vary: Vary) -> Result<Flows, CraftError> {
        let max: u128 = match (vary, self.l3) {
            (Vary::SrcPort, _) => 1 << 16,
            (Vary::SrcAddr, L3::V4 { .. }) => 1 << 32,
            (Vary::SrcAddr, L3::V6 { .. }) => u128::MAX,
        };
        if count as u128 > max {
            return Err(CraftError::TooManyFlows { count, vary, max });
        }
        Ok(Flows { base: self.clone(), vary, next: 0, count })
    }

    /// This spec with `index` added to the field `vary` picks (wrapping).
    pub fn flow(&self, index: usize, vary: Vary) -> FrameSpec {
        let mut spec = self.clone();
        match vary {
            Vary::SrcPort => {
                let port = match &mut spec.l4 {
                    L4::IcmpEcho { id, .. } => id,
                    L4::Udp { src_port, .. } | L4::TcpSyn { src_port, .. } => src_port,
                };
                // Truncation is the intended wrap: ports are counted modulo 2^16.
                *port = port.wrapping_add(index as u16);
            }
            Vary::SrcAddr => match &mut spec.l3 {
                L3::V4 { src, .. } => *src = Ipv4Addr::from(u32::from(*src).wrapping_add(index as u32)),
                L3::V6 { src, .. } => *src = Ipv6Addr::from(u128::from(*src).wrapping_add(index as u128)),
            },
        }
        spec
    }

    fn is_v4(&self) -> bool {
        matches!(self.l3, L3::V4 { .. })
    }
}

/// Iterator over flow specs, from [`FrameSpec::flows`].
#[derive(Debug, Clone)]
pub struct Flows {
    base: FrameSpec,
    vary: Vary,
    next: usize,
    count: usize,
}

impl Iterator for Flows {
    type Item = FrameSpec;

    fn next(&mut self) -> Option<FrameSpec> {
        if self.next == self.count {
            return None;
        }
        let spec = self.base.flow(self.next, self.vary);
        self.next += 1;
        Some(spec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.count - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for Flows {}

/// `len` bytes counting up from zero and wrapping at 256: 0x00, 0x01, ... (for 56 bytes, up to
/// 0x37). Like ping's fill pattern, it makes payload offsets readable in a hex dump.
pub fn ping_pattern(len: usize) -> Vec<u8> {
    // Truncation is the intended wrap.
    (0..len).map(|i| i as u8).collect()
}

/// The 98-byte frame of `icmp.bin` (the [`FrameSpec::default`] spec): Ethernet
/// 02:00:00:00:00:01 -> 02:00:00:00:00:02, IPv4 10.0.0.1 -> 10.0.0.2 (TTL 64, DF, identification
/// from seed 0), ICMP echo request id 0x1234 seq 1, 56-byte payload 0x00..=0x37.
pub fn icmp_echo() -> Vec<u8> {
    FrameSpec::default().build().expect("the default spec is valid (covered by tests)")
}

/// Parses a MAC address written as six hex pairs separated by `:` or `-`.
///
/// # Errors
///
/// [`CraftError::Mac`] for anything else.
pub fn parse_mac(input: &str) -> Result<[u8; 6], CraftError> {
    let bad = || CraftError::Mac { input: input.to_owned() };
    let mut mac = [0u8; 6];
    let mut parts = input.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;

    use etherparse::{
        EtherType, IcmpEchoHeader, Icmpv4Header, Icmpv4Type, Icmpv6Type, LinkSlice, NetSlice, SlicedPacket,
        TransportSlice, VlanSlice,
    };

    use super::*;

    /// Independent RFC 1071 one's-complement sum; a correct checksummed region sums to 0xffff.
    fn ones_complement_sum(bytes: &[u8]) -> u16 {
        let mut sum: u32 =
            bytes.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// What a frame parses back to, with every checksum verified on the way.
    #[derive(Debug, PartialEq)]
    struct Parsed {
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        vlan: Option<u16>,
        src: IpAddr,
        dst: IpAddr,
        ttl: u8,
        l4: L4,
        payload: Vec<u8>,
    }

    fn parse(frame: &[u8]) -> Parsed {
        let packet = SlicedPacket::from_ethernet(frame).expect("crafted frame parses");
        let Some(LinkSlice::Ethernet2(eth)) = &packet.link else { panic!("no Ethernet II header") };
        let vlan = match &packet.vlan {
            None => None,
            Some(VlanSlice::SingleVlan(tag)) => {
                assert_eq!(eth.ether_type(), EtherType::VLAN_TAGGED_FRAME);
                Some(tag.vlan_identifier().value())
            }
            Some(VlanSlice::DoubleVlan(_)) => panic!("unexpected double tag"),
        };
        let (src, dst, ttl) = match packet.net.as_ref().expect("network layer") {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert!(h.dont_fragment());
                assert_eq!(
                    usize::from(h.total_len()),
                    frame.len() - ETHERNET_LEN - if vlan.is_some() { VLAN_LEN } else { 0 }
                );
                assert_eq!(h.header_checksum(), h.to_header().calc_header_checksum(), "IPv4 header checksum");
                assert_eq!(ones_complement_sum(h.slice()), 0xffff, "IPv4 header checksum (RFC 1071)");
                (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()), h.ttl())
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                let ip_offset = ETHERNET_LEN + if vlan.is_some() { VLAN_LEN } else { 0 };
                assert_eq!(usize::from(h.payload_length()), frame.len() - ip_offset - Ipv6Header::LEN);
                (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()), h.hop_limit())
            }
        };
        let (l4, payload) = match (packet.transport.as_ref().expect("transport layer"), src, dst) {
            (TransportSlice::Icmpv4(icmp), _, _) => {
                let Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq }) = icmp.icmp_type() else {
                    panic!("not an echo request: {:?}", icmp.icmp_type())
                };
                let expected = Icmpv4Header::with_checksum(icmp.icmp_type(), icmp.payload()).checksum;
                assert_eq!(icmp.checksum(), expected, "ICMP checksum");
                assert_eq!(ones_complement_sum(icmp.slice()), 0xffff, "ICMP checksum (RFC 1071)");
                (L4::IcmpEcho { id, seq, payload: vec![] }, icmp.payload())
            }
            (TransportSlice::Icmpv6(icmp), IpAddr::V6(s), IpAddr::V6(d)) => {
                let Icmpv6Type::EchoRequest(IcmpEchoHeader { id, seq }) = icmp.icmp_type() else {
                    panic!("not an echo request: {:?}", icmp.icmp_type())
                };
                assert!(icmp.is_checksum_valid(s.octets(), d.octets()), "ICMPv6 checksum");
                (L4::IcmpEcho { id, seq, payload: vec![] }, icmp.payload())
            }
            (TransportSlice::Udp(udp), s, d) => {
                let expected = match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        udp.to_header().calc_checksum_ipv4_raw(s.octets(), d.octets(), udp.payload())
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        udp.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), udp.payload())
                    }
                    _ => panic!("mixed address families"),
                };
                assert_ne!(udp.checksum(), 0, "UDP checksum present");
                assert_eq!(udp.checksum(), expected.unwrap(), "UDP checksum");
                assert_eq!(usize::from(udp.length()), 8 + udp.payload().len());
                (
                    L4::Udp {
                        src_port: udp.source_port(),
                        dst_port: udp.destination_port(),
                        payload: vec![],
                    },
                    udp.payload(),
                )
            }
            (TransportSlice::Tcp(tcp), s, d) => {
                let expected = match (s, d) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => tcp.calc_checksum_ipv4(s.octets(), d.octets()),
                    (IpAddr::V6(s), IpAddr::V6(d)) => tcp.calc_checksum_ipv6(s.octets(), d.octets()),
                    _ => panic!("mixed address families"),
                };
                assert_eq!(tcp.checksum(), expected.unwrap(), "TCP checksum");
                assert!(tcp.syn() && !tcp.ack() && !tcp.fin() && !tcp.rst() && !tcp.psh());
                assert_eq!(tcp.window_size(), TCP_WINDOW);
                (
                    L4::TcpSyn {
                        src_port: tcp.source_port(),
                        dst_port: tcp.destination_port(),
                        seq: tcp.sequence_number(),
                    },
                    tcp.payload(),
                )
            }
            (other, _, _) => panic!("unexpected transport {other:?}"),
        };
        Parsed {
            src_mac: eth.source(),
            dst_mac: eth.destination(),
            vlan,
            src,
            dst,
            ttl,
            l4,
            payload: payload.to_vec(),
        }
    }

    /// Asserts that `frame` is exactly what `spec` asked for.
    fn assert_matches(spec: &FrameSpec, frame: &[u8]) {
        let parsed = parse(frame);
        let (src, dst) = match spec.l3 {
            L3::V4 { src, dst } => (IpAddr::V4(src), IpAddr::V4(dst)),
            L3::V6 { src, dst } => (IpAddr::V6(src), IpAddr::V6(dst)),
        };
        let l4_without_payload = match &spec.l4 {
            L4::IcmpEcho { id, seq, .. } => L4::IcmpEcho { id: *id, seq: *seq, payload: vec![] },
            L4::Udp { src_port, dst_port, .. } => {
                L4::Udp { src_port: *src_port, dst_port: *dst_port, payload: vec![] }
            }
            syn @ L4::TcpSyn { .. } => syn.clone(),
        };
        assert_eq!(
            (parsed.src_mac, parsed.dst_mac, parsed.vlan, parsed.src, parsed.dst, parsed.ttl, parsed.l4),
            (spec.src_mac, spec.dst_mac, spec.vlan, src, dst, spec.ttl, l4_without_payload),
        );
        assert!(parsed.payload.starts_with(spec.l4.payload()), "given payload comes first");
        match spec.frame_size {
            Some(size) => assert_eq!(frame.len(), size),
            None => assert_eq!(parsed.payload, spec.l4.payload()),
        }
        assert_eq!(frame.len(), spec.header_len() + parsed.payload.len());
    }

    fn all_shapes() -> Vec<FrameSpec> {
        let l3s = [
            L3::V4 { src: Ipv4Addr::new(192, 0, 2, 7), dst: Ipv4Addr::new(198, 51, 100, 9) },
            L3::V6 { src: "2001:db8::7".parse().unwrap(), dst: "2001:db8::9".parse().unwrap() },
        ];
        let l4s = [
            L4::IcmpEcho { id: 0xbeef, seq: 0x0102, payload: ping_pattern(3) },
            L4::Udp { src_port: 53, dst_port: 65535, payload: b"hello".to_vec() },
            L4::TcpSyn { src_port: 40000, dst_port: 443, seq: 0xdead_beef },
        ];
        let mut specs = vec![];
        for l3 in l3s {
            for l4 in &l4s {
                for vlan in [None, Some(0), Some(7), Some(MAX_VLAN_ID)] {
                    for frame_size in [None, Some(MIN_FRAME_SIZE), Some(333), Some(MAX_FRAME_SIZE)] {
                        specs.push(FrameSpec {
                            src_mac: [0x0a, 1, 2, 3, 4, 5],
                            dst_mac: [0xff; 6],
                            vlan,
                            l3,
                            ttl: 3,
                            l4: l4.clone(),
                            frame_size,
                            seed: 42,
                        });
                    }
                }
            }
        }
        specs
    }

    #[test]
    fn icmp_echo_is_the_documented_98_bytes() {
        let frame = icmp_echo();
        assert_eq!(frame.len(), ICMP_ECHO_FRAME_LEN);
        assert_matches(&FrameSpec::default(), &frame);
        // Byte-level spot checks against the layout a reader of icmp.bin sees in a hex dump.
        assert_eq!(frame[..12], [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        assert_eq!(frame[12..14], [0x08, 0x00]); // EtherType IPv4
        assert_eq!(frame[14], 0x45); // version 4, IHL 5
        assert_eq!(frame[16..18], 84u16.to_be_bytes()); // total length 20 + 8 + 56
        assert_eq!(frame[18..20], 0xe220u16.to_be_bytes()); // identification from seed 0
        assert_eq!(frame[20..22], [0x40, 0x00]); // DF
        assert_eq!(frame[22..24], [64, 1]); // TTL 64, protocol ICMP
        assert_eq!(frame[26..34], [10, 0, 0, 1, 10, 0, 0, 2]);
        assert_eq!(frame[34..36], [8, 0]); // echo request, code 0
        assert_eq!(frame[38..42], [0x12, 0x34, 0x00, 0x01]); // id 0x1234, seq 1
        assert_eq!(frame[42..], (0u8..=0x37).collect::<Vec<_>>());
    }

    #[test]
    fn every_shape_parses_back_to_what_was_asked() {
        let mut built = 0;
        for spec in all_shapes() {
            match spec.build() {
                Ok(frame) => {
                    assert_matches(&spec, &frame);
                    built += 1;
                }
                Err(CraftError::FrameTooSmall { size, needed }) => {
                    assert_eq!(size, MIN_FRAME_SIZE);
                    assert!(needed > size && needed == spec.header_len() + spec.l4.payload().len());
                }
                Err(e) => panic!("{spec:?}: {e}"),
            }
        }
        // 96 shapes; only the 12 IPv6 ones at a 60-byte target fail (their headers alone need
        // 62 bytes or more).
        assert_eq!(built, 84);
    }

    #[test]
    fn sizes_60_and_1514_are_honoured() {
        for size in [MIN_FRAME_SIZE, MAX_FRAME_SIZE] {
            let spec = FrameSpec {
                l4: L4::Udp { src_port: 1, dst_port: 2, payload: vec![] },
                frame_size: Some(size),
                ..FrameSpec::default()
            };
            let frame = spec.build().unwrap();
            assert_eq!(frame.len(), size);
            assert_matches(&spec, &frame);
        }
        let echo = FrameSpec { frame_size: Some(MAX_FRAME_SIZE), ..FrameSpec::default() }.build().unwrap();
        assert_eq!(echo.len(), MAX_FRAME_SIZE);
        assert_eq!(echo[42..42 + 56], ping_pattern(56), "given payload kept before the padding");
    }

    #[test]
    fn bad_specs_are_refused() {
        let with = |f: fn(&mut FrameSpec)| {
            let mut spec = FrameSpec::default();
            f(&mut spec);
            spec.build()
        };
        assert!(matches!(with(|s| s.frame_size = Some(59)), Err(CraftError::FrameSize { size: 59 })));
        assert!(matches!(with(|s| s.frame_size = Some(1515)), Err(CraftError::FrameSize { size: 1515 })));
        assert!(matches!(
            with(|s| s.frame_size = Some(97)),
            Err(CraftError::FrameTooSmall { size: 97, needed: 98 })
        ));
        assert!(matches!(with(|s| s.vlan = Some(4096)), Err(CraftError::VlanId { id: 4096 })));
        let long = with(|s| s.l4 = L4::Udp { src_port: 1, dst_port: 2, payload: vec![0; 65535 - 28 + 1] });
        assert!(matches!(long, Err(CraftError::PayloadTooLong { len: 65508, max: 65507 })), "{long:?}");
        let longest = with(|s| s.l4 = L4::Udp { src_port: 1, dst_port: 2, payload: vec![0; 65535 - 28] });
        assert_eq!(longest.unwrap().len(), 14 + 65535);
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        for spec in all_shapes().into_iter().filter(|s| s.frame_size == Some(333)) {
            let a = spec.build().unwrap();
            assert_eq!(a, spec.build().unwrap());
            assert_eq!(a, spec.clone().build().unwrap());
            let other = FrameSpec { seed: spec.seed + 1, ..spec.clone() }.build().unwrap();
            assert_ne!(a, other, "padding follows the seed");
            assert_matches(&spec, &other);
        }
    }

    #[test]
    fn flows_are_distinct() {
        let udp = FrameSpec {
            l4: L4::Udp { src_port: 65530, dst_port: 9, payload: vec![] },
            ..FrameSpec::default()
        };
        let v6 = FrameSpec { l3: L3::V6 { src: DEFAULT_SRC_IPV6, dst: DEFAULT_DST_IPV6 }, ..udp.clone() };
        let tcp = FrameSpec { l4: L4::TcpSyn { src_port: 1, dst_port: 2, seq: 3 }, ..FrameSpec::default() };
        for (base, vary) in [
            (&udp, Vary::SrcPort),
            (&udp, Vary::SrcAddr),
            (&v6, Vary::SrcAddr),
            (&tcp, Vary::SrcPort),
            (&FrameSpec::default(), Vary::SrcPort),
        ] {
            let flows = base.flows(300, vary).unwrap();
            assert_eq!(flows.len(), 300);
            let specs: Vec<_> = flows.collect();
            assert_eq!(specs[0], *base);
            let frames: HashSet<_> = specs.iter().map(|s| s.build().unwrap()).collect();
            assert_eq!(frames.len(), 300, "{vary:?}");
            let keys: HashSet<_> = specs
                .iter()
                .map(|s| {
                    let p = parse(&s.build().unwrap());
                    (p.src, p.l4)
                })
                .collect();
            assert_eq!(keys.len(), 300, "flow keys distinct for {vary:?}");
        }
        // Ports wrap: 65530 + 6 is port 0.
        let L4::Udp { src_port, .. } = udp.flow(6, Vary::SrcPort).l4 else { unreachable!() };
        assert_eq!(src_port, 0);
        assert_eq!(udp.flows(65536, Vary::SrcPort).unwrap().len(), 65536);
        assert!(matches!(
            udp.flows(65537, Vary::SrcPort),
            Err(CraftError::TooManyFlows { count: 65537, .. })
        ));
    }

    #[test]
    fn mac_addresses_parse() {
        assert_eq!(parse_mac("02:00:00:00:00:01").unwrap(), DEFAULT_SRC_MAC);
        assert_eq!(parse_mac("aa-BB-cc-dd-ee-ff").unwrap(), [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:01:02",
            "2:0:0:0:0:1",
            "+2:00:00:00:00:01",
            "zz:00:00:00:00:01",
        ] {
            let err = parse_mac(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("invalid MAC address '{bad}', expected six hex pairs like 02:00:00:00:00:01")
            );
        }
    }
}
