//! Load, check and run unmodified clang-built eBPF objects in userspace.
//!
//! The layers run one way: [`elf`] parses an object into maps and linked programs without
//! touching the kernel; [`program`] binds a program to live maps after checking its structure;
//! [`interp`] runs it on a [`context`].

#![deny(unsafe_code)]

pub mod context;
pub mod disasm;
pub mod elf;
pub mod helpers;
pub mod insn;
pub mod interp;
pub mod jit;
mod memory;
pub mod program;
pub mod sys;
pub mod verifier;

pub use context::{Context, Redirect, Xdp, XdpBuff};
pub use interp::{Fault, Interpreter};
pub use program::{LinkError, LoadError, Program, create_maps, link_tail_calls};
