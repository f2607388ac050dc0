//! Load, check and run unmodified clang-built eBPF objects in userspace.
//!
//! The layers run one way: [`elf`] parses an object into maps and linked programs without
//! touching the kernel; [`program`] binds a program to live maps after checking its structure;
//! [`interp`] runs it on a [`context`].
//!
//! # Embedding
//!
//! The crate is a runtime for Rust programs too: parse an object ([`elf::Object::parse`]),
//! create its maps ([`create_maps`], one per-CPU slot per thread that will run it), bind and
//! verify a program ([`Program::new`]), compile it once ([`jit::JitProgram::compile`]; the result
//! is `Send + Sync`), then call it from any thread on a context ([`XdpBuff`]) with that thread's
//! slot — [`jit::JitProgram::run`], or in a loop a per-thread [`jit::JitWorker`] (the program's
//! run environment and stack, filled in once).
//! The maps are shared by every caller and readable from Rust (`Map::lookup_user`). The `jit`
//! module has a self-contained example; `examples/embed.rs` does it with a clang-built object
//! from several threads (`cargo run --release -p xdp-vm --example embed -- target/bpf/xdp_counter.o`),
//! and the benchmark suite reports its cost per call beside the kernel's.

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
