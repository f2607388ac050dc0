//! The standard table of test frames that differential tests feed to every engine and to the
//! kernel: one frame per protocol shape, the size edges, and runts.

use std::net::Ipv4Addr;

use super::{DEFAULT_DST_IPV6, DEFAULT_SRC_IPV6, MAX_FRAME_SIZE, MIN_FRAME_SIZE};
use super::{FrameSpec, L3, L4, icmp_echo, ping_pattern};

/// Lengths of the runt frames: empty, one byte, a lone MAC, both MACs, both MACs plus half an
/// EtherType. All are prefixes of [`icmp_echo`].
pub const RUNT_LENS: [usize; 5] = [0, 1, 6, 12, 13];

/// `(name, frame)` pairs, names unique and stable (tests and reports key on them):
///
/// | name | frame |
/// |---|---|
/// | `icmp_echo` | [`icmp_echo`], 98 bytes |
/// | `udp_ipv4` | UDP 1024 -> 9, 18-byte payload, 60 bytes |
/// | `tcp_syn_ipv4` | TCP SYN 1024 -> 80, seq 1, 54 bytes |
/// | `udp_ipv6` | UDP over IPv6, fd00::1 -> fd00::2, 18-byte payload, 80 bytes |
/// | `icmpv6_echo` | ICMPv6 echo request, 56-byte payload, 118 bytes |
/// | `tcp_syn_ipv6` | TCP SYN over IPv6, 74 bytes |
/// | `vlan_udp_ipv4` | UDP over IPv4 tagged VLAN 100, 64 bytes |
/// | `min_60` | UDP over IPv4 padded to 60 bytes |
/// | `size_1500` | UDP over IPv4 padded to 1500 bytes |
/// | `size_1514` | UDP over IPv4 padded to 1514 bytes (full MTU) |
/// | `runt_N` | the first N bytes of `icmp_echo`, for N in [`RUNT_LENS`] |
pub fn test_frames() -> Vec<(String, Vec<u8>)> {
    let udp = L4::Udp { src_port: 1024, dst_port: 9, payload: ping_pattern(18) };
    let syn = L4::TcpSyn { src_port: 1024, dst_port: 80, seq: 1 };
    let v6 = L3::V6 { src: DEFAULT_SRC_IPV6, dst: DEFAULT_DST_IPV6 };
    let udp_v4 = FrameSpec { l4: udp.clone(), ..FrameSpec::default() };
    let sized = |size: usize| FrameSpec {
        l4: L4::Udp { src_port: 1024, dst_port: 9, payload: Vec::new() },
        frame_size: Some(size),
        seed: size as u64,
        ..FrameSpec::default()
    };

    let specs = [
        ("udp_ipv4", udp_v4.clone()),
        ("tcp_syn_ipv4", FrameSpec { l4: syn.clone(), ..FrameSpec::default() }),
        ("udp_ipv6", FrameSpec { l3: v6, l4: udp, ..FrameSpec::default() }),
        ("icmpv6_echo", FrameSpec { l3: v6, ..FrameSpec::default() }),
        ("tcp_syn_ipv6", FrameSpec { l3: v6, l4: syn, ..FrameSpec::default() }),
        (
            "vlan_udp_ipv4",
            FrameSpec {
                vlan: Some(100),
                l3: L3::V4 { src: Ipv4Addr::new(10, 0, 1, 1), dst: Ipv4Addr::new(10, 0, 1, 2) },
                ..udp_v4
            },
        ),
        ("min_60", sized(MIN_FRAME_SIZE)),
        ("size_1500", sized(1500)),
        ("size_1514", sized(MAX_FRAME_SIZE)),
    ];

    let echo = icmp_echo();
    let mut frames = vec![("icmp_echo".to_owned(), echo.clone())];
    frames.extend(specs.into_iter().map(|(name, spec)| {
        (name.to_owned(), spec.build().expect("the table's specs are valid (covered by tests)"))
    }));
    frames.extend(RUNT_LENS.iter().map(|&len| (format!("runt_{len}"), echo[..len].to_vec())));
    frames
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use etherparse::SlicedPacket;

    use super::*;

    fn table() -> std::collections::HashMap<String, Vec<u8>> {
        test_frames().into_iter().collect()
    }

    #[test]
    fn names_are_unique_and_expected() {
        let frames = test_frames();
        let names: HashSet<_> = frames.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.len(), frames.len());
        for name in [
            "icmp_echo",
            "udp_ipv4",
            "tcp_syn_ipv4",
            "udp_ipv6",
            "icmpv6_echo",
            "tcp_syn_ipv6",
            "vlan_udp_ipv4",
            "min_60",
            "size_1500",
            "size_1514",
            "runt_0",
            "runt_1",
            "runt_6",
            "runt_12",
            "runt_13",
        ] {
            assert!(names.contains(name), "missing {name}");
        }
    }

    #[test]
    fn lengths_are_as_documented() {
        let t = table();
        for (name, len) in [
            ("icmp_echo", 98),
            ("udp_ipv4", 60),
            ("tcp_syn_ipv4", 54),
            ("udp_ipv6", 80),
            ("icmpv6_echo", 118),
            ("tcp_syn_ipv6", 74),
            ("vlan_udp_ipv4", 64),
            ("min_60", 60),
            ("size_1500", 1500),
            ("size_1514", 1514),
        ] {
            assert_eq!(t[name].len(), len, "{name}");
        }
        for len in RUNT_LENS {
            assert_eq!(t[&format!("runt_{len}")], t["icmp_echo"][..len], "runt_{len}");
        }
    }

    #[test]
    fn every_full_frame_parses_to_its_transport() {
        for (name, frame) in test_frames() {
            if name.starts_with("runt_") {
                // Too short for an Ethernet header: the parser must refuse, not panic.
                assert!(SlicedPacket::from_ethernet(&frame).is_err(), "{name}");
                continue;
            }
            let packet = SlicedPacket::from_ethernet(&frame).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(packet.transport.is_some(), "{name}: no transport layer");
            assert_eq!(packet.vlan.is_some(), name.starts_with("vlan_"), "{name}");
        }
    }
}
