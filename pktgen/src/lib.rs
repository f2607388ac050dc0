//! Packet crafting and writing for tests and benchmarks of the dataplane.
//!
//! [`craft`](mod@craft) builds Ethernet frames from a [`craft::FrameSpec`] — IPv4 or IPv6, optionally
//! VLAN-tagged, carrying an ICMP echo request, a UDP datagram or a TCP SYN — with every length
//! and checksum right, reproducibly from a seed. [`write`](mod@write) stores frames as raw `.bin` files (what
//! `dataplane prog run --data-in` and `bpftool prog run data_in` read) or as classic libpcap
//! files (what tcpdump, Wireshark and traffic replayers read), and reads pcap files back.
//!
//! [`send`](mod@send) puts frames on an interface over AF_XDP (the `xsk` crate the dataplane
//! uses too) or AF_PACKET, as fast as it takes them or at a [`rate`](mod@rate);
//! [`bench`](mod@bench) counts what arrives on another interface, with [`stamp`](mod@stamp)s
//! in the payload for loss and latency.
//!
//! ```
//! use pktgen::craft::{FrameSpec, L4, icmp_echo};
//!
//! // The 98-byte ICMP echo request that userspace-XDP benchmarks replay as `icmp.bin`.
//! assert_eq!(icmp_echo().len(), 98);
//!
//! // 16 distinct UDP flows in 64-byte frames.
//! let spec = FrameSpec {
//!     l4: L4::Udp { src_port: 1024, dst_port: 9, payload: vec![] },
//!     frame_size: Some(64),
//!     ..FrameSpec::default()
//! };
//! let frames = spec
//!     .flows(16, Default::default())?
//!     .map(|flow| flow.build())
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(frames.len(), 16);
//! # Ok::<(), pktgen::craft::CraftError>(())
//! ```

#![deny(unsafe_code)]

pub mod bench;
pub mod craft;
pub mod rate;
pub mod rng;
pub mod send;
pub mod stamp;
pub mod write;
