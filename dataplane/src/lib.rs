//! The dataplane: runs unmodified XDP programs on packets in userspace.
//!
//! Today: [`prog_run`], the `bpftool prog run` of userspace, and [`kernel`], the kernel as
//! oracle and rival through the bpf syscall.

#![deny(unsafe_code)]

pub mod kernel;
pub mod prog_run;
