//! Executable memory and the call into it.
//!
//! cranelift-jit's default memory provider maps fresh anonymous pages read-write, copies the
//! code in, and on `finalize_definitions` flushes the instruction cache and `mprotect`s them
//! read-execute: the pages are never writable and executable at once. After finalization
//! nothing writes them again, so the code may be shared by any number of threads. The pages are
//! unmapped when the [`Code`] is dropped, which needs `&mut` and therefore no run in progress.
//!
//! Each run gets a stack from a per-thread cache, so no run allocates or zeroes 4 KiB.
#![expect(unsafe_code, reason = "calls generated machine code and frees its pages")]

use std::cell::Cell;
use std::sync::Mutex;

use cranelift_jit::JITModule;

use super::CompileError;

use super::call::{Env, STACK_BYTES};

/// The entry of a compiled program, callable from Rust: `(env, r1) -> r0`, the C calling
/// convention (`translate`'s wrapper around the main function).
pub(crate) type Entry = extern "C" fn(*mut Env<'_>, u64) -> u64;

/// Finalized (read-execute) code and the module that owns its pages.
pub(crate) struct Code {
    /// Only touched on drop; the mutex makes the owner `Sync` without reasoning about the
    /// module's interior (it holds `RefCell`s).
    module: Mutex<Option<JITModule>>,
    entry: Entry,
    /// The main function itself, `(env, r1, tail calls so far) -> r0` in Cranelift's `tail`
    /// convention (`translate::main_sig`): what
    /// another program's `bpf_tail_call` jumps to (never called from Rust).
    tail_entry: u64,
    size: usize,
}

impl std::fmt::Debug for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Code")
            .field("entry", &(self.entry as usize as *const u8))
            .field("size", &self.size)
            .finish()
    }
}

impl Code {
    /// Makes `module`'s code read-execute and takes ownership of it. `entry` must be the main
    /// function `translate` defined in `module` (module invariant: only `JitProgram::compile`
    /// calls this, right after `translate`).
    pub(crate) fn finalize(
        mut module: JITModule,
        funcs: super::translate::Entries,
        size: usize,
    ) -> Result<Self, CompileError> {
        module.finalize_definitions().map_err(|e| CompileError::Codegen { reason: e.to_string() })?;
        let ptr = module.get_finalized_function(funcs.entry);
        // SAFETY: `funcs.entry` is finalized in `module` (just above) and `translate` defines it
        // with the `(env, r1) -> r0` signature in the ISA's default (C) calling convention.
        let entry = unsafe { std::mem::transmute::<*const u8, Entry>(ptr) };
        let tail_entry = module.get_finalized_function(funcs.tail) as u64;
        Ok(Self { module: Mutex::new(Some(module)), entry, tail_entry, size })
    }

    /// The address another program's `bpf_tail_call` jumps to; valid while `self` lives.
    pub(crate) fn tail_entry(&self) -> u64 {
        self.tail_entry
    }

    /// The address of the `(env, r1) -> r0` entry (C calling convention); valid while `self`
    /// lives. For callers that run the code from their own machine code (`frame`).
    pub(crate) fn entry_address(&self) -> u64 {
        self.entry as usize as u64
    }

    /// The entry Rust calls, `(env, r1) -> r0`: `env` must be a complete run environment
    /// whose `stack_start` is a [`Stack`] of its own (see `call_on`).
    pub(crate) fn entry(&self) -> Entry {
        self.entry
    }

    /// Bytes of machine code.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Runs the program with `env` (whose `stack_start` this fills in) and `r1`, on a stack
    /// from this thread's cache.
    pub(crate) fn call(&self, env: &mut Env<'_>, r1: u64) -> u64 {
        with_stack(|stack| self.call_on(env, r1, stack))
    }

    /// Runs the program with `env` (whose `stack_start` this fills in) and `r1` on `stack`,
    /// which the `&mut` keeps to this run.
    #[inline]
    pub(crate) fn call_on(&self, env: &mut Env<'_>, r1: u64, stack: &mut Stack) -> u64 {
        // The main function finds its frame at the top of this stack (`STACK_BYTES` above).
        env.stack_start = stack.as_mut_ptr() as u64;
        (self.entry)(env, r1)
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        let module = self.module.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(module) = module {
            // SAFETY: `&mut self` means no `call` is running, and `entry` dies with `self`.
            unsafe { module.free_memory() };
        }
    }
}

// SAFETY: after finalization the code pages are read-execute and never written; `entry` is a
// plain function address; the module is only reached through the mutex (and only on drop).
unsafe impl Send for Code {}
// SAFETY: as above: `call` only executes immutable code with per-call state.
unsafe impl Sync for Code {}

/// One run's stack: eight 512-byte frames, 8-byte aligned.
pub(crate) type Stack = [u64; STACK_BYTES as usize / 8];

thread_local! {
    /// A stack to reuse on this thread; taken during a run, so a nested run gets a fresh one.
    static SPARE: Cell<Option<Box<Stack>>> = const { Cell::new(None) };
}

/// A fresh, zeroed stack.
pub(crate) fn new_stack() -> Box<Stack> {
    Box::new([0u64; STACK_BYTES as usize / 8])
}

fn with_stack<R>(f: impl FnOnce(&mut Stack) -> R) -> R {
    let mut stack = SPARE.with(Cell::take).unwrap_or_else(new_stack);
    let r = f(&mut stack);
    SPARE.with(|s| s.set(Some(stack)));
    r
}
