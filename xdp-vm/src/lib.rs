//! Load, check and run unmodified clang-built eBPF objects in userspace.

#![deny(unsafe_code)]

pub mod elf;
pub mod insn;
