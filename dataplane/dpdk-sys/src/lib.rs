//! Bindings to the system DPDK (22.11, `libdpdk-dev`), generated at build time by bindgen from
//! the headers `pkg-config libdpdk` points at, plus `dp_*`: a C shim with out-of-line copies of
//! the static-inline fast path (`rte_eth_rx_burst`, `rte_eth_tx_burst`, `rte_pktmbuf_alloc_bulk`,
//! `rte_pktmbuf_free`, `rte_errno`).
//!
//! Only what the dataplane's DPDK backend uses is bound. Without DPDK on the build machine the
//! crate is empty and [`AVAILABLE`] is false (the crates.io `dpdk-sys` 0.1.5 is no substitute:
//! it bundles DPDK 18.05 and needs a musl toolchain).

#![deny(unsafe_code)]

/// Whether the build found DPDK and these bindings exist.
pub const AVAILABLE: bool = cfg!(dpdk);

#[cfg(dpdk)]
#[allow(
    unsafe_code,
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    dead_code,
    missing_debug_implementations,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    reason = "bindgen's output, as generated"
)]
mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

#[cfg(dpdk)]
pub use bindings::*;
