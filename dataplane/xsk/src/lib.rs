//! The project's raw sockets, shared by the `dataplane` (its AF_XDP backend and lab) and
//! `pktgen` (its senders and receivers), which cannot depend on each other both ways.
//!
//! - [`afxdp`]: AF_XDP sockets — UMEM, the four rings, bind to one (interface, queue).
//! - [`packet`]: raw AF_PACKET sockets bound to one interface.
//! - [`netns`]: running code inside another network namespace, interface indexes there.
//!
//! Raw syscalls only (no libxdp/libbpf): see [`afxdp`] for why.
//!
//! ```no_run
//! use xsk::afxdp::{Socket, SocketConfig};
//!
//! let ifindex = xsk::netns::ifindex_here("veth0")?;
//! let cfg = SocketConfig {
//!     ifindex,
//!     queue: 0,
//!     frames: 4096,
//!     frame_size: 4096,
//!     rx_ring: 2048,
//!     tx_ring: 2048,
//!     fill_ring: 2048,
//!     completion_ring: 2048,
//!     zero_copy: None,
//!     busy_poll: None,
//! };
//! let sock = Socket::new(&cfg)?;
//! println!("zero-copy: {}", sock.zero_copy());
//! # Ok::<(), std::io::Error>(())
//! ```

#![deny(unsafe_code)]

#[expect(unsafe_code, reason = "AF_XDP sockets, UMEM and ring mappings through raw syscalls")]
pub mod afxdp;
#[expect(unsafe_code, reason = "setns and if_nametoindex through raw syscalls")]
pub mod netns;
#[expect(unsafe_code, reason = "AF_PACKET sockets through raw syscalls")]
pub mod packet;
