//! The dataplane: runs unmodified XDP programs on packets in userspace.
//!
//! Today: [`prog_run`], the `bpftool prog run` of userspace, and [`kernel`], the kernel as
//! oracle and rival through the bpf syscall.

#![deny(unsafe_code)]

/// Where the build put the project's compiled eBPF objects (`configs/bpf/*.c` and the test
/// programs): `<target>/bpf`.
pub const BPF_OBJ_DIR: &str = env!("BPF_OBJ_DIR");

pub mod backend;
pub mod config;
pub mod control;
pub mod kernel;
pub mod lab;
pub mod prog_run;
pub mod redirect;
pub mod runtime;
pub mod stats;
pub mod uprobe;
pub mod worker;
