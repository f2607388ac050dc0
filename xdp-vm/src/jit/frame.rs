//! Running a [`JitFrame`] from the caller's own machine code: the uprobe stubs call a probe's
//! one program straight from assembly, without a Rust function in between.
//!
//! The contract ([`JitFrame::raw`] gives the addresses, [`env`] the offsets): once a frame is
//! prepared for raw runs, a run is
//!
//! 1. write the environment's `ctx` (the context's address, also passed as `r1`), `slot` (the
//!    per-CPU slot), `state` (a `*mut C::State` for the helpers) and zero `backward`;
//! 2. call `entry(env, ctx) -> r0` (C calling convention);
//! 3. if the environment's `faulted` word is non-zero, call [`JitFrame::take_fault`] before the
//!    frame runs again.
//!
//! Everything else (the stack, the packet region, the call depth, the maps and tail-call set)
//! stays as `raw` and [`JitFrame::take_fault`] left it. A raw run has the semantics of
//! [`JitFrame::run`] with the same state; runs of either kind may be mixed on one frame.

use std::mem::offset_of;

use super::call::Env;
use super::{JitFrame, JitRunner, begin_run};
use crate::context::Context;
use crate::interp::Fault;

/// Where a prepared frame's code and environment are (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame {
    /// `extern "C" fn(env, r1) -> r0`.
    pub entry: u64,
    /// The environment to pass it, inside the frame.
    pub env: u64,
}

/// Byte offsets of the environment's fields a raw run writes or reads (all 8-byte words).
pub mod env {
    use super::{Env, offset_of};
    pub const CTX: usize = offset_of!(Env<'static>, ctx);
    pub const SLOT: usize = offset_of!(Env<'static>, slot);
    pub const STATE: usize = offset_of!(Env<'static>, state);
    pub const BACKWARD: usize = offset_of!(Env<'static>, backward);
    pub const FAULTED: usize = offset_of!(Env<'static>, faulted);
}

impl<C: Context> JitFrame<'_, C> {
    /// Prepares the frame for raw runs on `runner`'s stack and returns where its code and
    /// environment are. `sample` gives the packet region every raw run then uses: raw runs are
    /// for contexts whose states all have the same one (the tracing contexts have none).
    ///
    /// The addresses stay valid while the frame and `runner` are neither moved nor dropped, and
    /// no other run (raw or not) of this frame is on another runner in between.
    pub fn raw(&mut self, runner: &mut JitRunner, sample: &mut C::State<'_>) -> RawFrame {
        let ctx = begin_run::<C>(&mut self.env, sample, 0);
        self.env.state = std::ptr::null_mut();
        self.env.ctx = ctx;
        self.env.stack_start = runner.stack.as_mut_ptr() as u64;
        RawFrame { entry: self.code.entry_address(), env: std::ptr::from_mut(&mut self.env) as u64 }
    }

    /// The fault a run (raw or not) left, if any, and the environment made ready for the next
    /// run.
    pub fn take_fault(&mut self) -> Option<Fault> {
        self.env.take_fault()
    }
}

const _: () = assert!(std::mem::size_of::<*mut ()>() == 8);

#[cfg(test)]
#[allow(unsafe_code, reason = "calls compiled code through its raw entry, as the uprobe stubs do")]
mod tests {
    use super::*;
    use crate::Xdp;
    use crate::context::{XDP_FRAME_SIZE, XdpBuff};
    use crate::jit::JitProgram;

    /// One raw run by the module doc's contract.
    fn raw_run(raw: RawFrame, state: &mut XdpBuff<'_>, slot: u64) -> (u64, bool) {
        let ctx = Xdp::address(state);
        let word = |off: usize| (raw.env as usize + off) as *mut u64;
        // SAFETY: `raw` comes from `JitFrame::raw` on a frame and runner alive and not moved
        // for this call; the words written are the environment's (offsets from `env`); the
        // entry has the C signature `(env, r1) -> r0`.
        unsafe {
            word(env::CTX).write(ctx);
            word(env::SLOT).write(slot);
            word(env::STATE).write(std::ptr::from_mut(state) as u64);
            word(env::BACKWARD).write(0);
            let entry = std::mem::transmute::<u64, extern "C" fn(u64, u64) -> u64>(raw.entry);
            let r0 = entry(raw.env, ctx);
            (r0, word(env::FAULTED).read() != 0)
        }
    }

    #[test]
    fn raw_runs_run_as_run_does_and_a_fault_is_taken_once() {
        // r0 = data_end - data; a packet over 100 bytes faults (a read at address r0).
        let prog = crate::jit::frame_tests::len_or_fault();
        let jit = JitProgram::compile(&prog).unwrap();
        let mut runner = JitRunner::new();
        let (mut small, mut big) = (vec![0u8; XDP_FRAME_SIZE], vec![0u8; XDP_FRAME_SIZE]);
        let mut small = XdpBuff::load(&mut small, &[0; 60]).unwrap();
        let mut big = XdpBuff::load(&mut big, &[0; 200]).unwrap();

        let mut frame = jit.frame();
        let raw = frame.raw(&mut runner, &mut small);
        assert_eq!(raw.entry, jit.entry_address());
        for _ in 0..3 {
            assert_eq!(raw_run(raw, &mut small, 0), (60, false));
        }
        assert_eq!(frame.take_fault(), None);
        // A run of the usual kind on the same frame, then raw again.
        assert_eq!(frame.run(&mut runner, &mut small, 0), Ok(60));
        assert_eq!(raw_run(raw, &mut small, 0), (60, false));

        let mut frame = jit.frame();
        let raw = frame.raw(&mut runner, &mut big);
        let (_, faulted) = raw_run(raw, &mut big, 0);
        assert!(faulted, "a 200-byte packet faults");
        assert!(matches!(frame.take_fault(), Some(Fault::Memory { .. })));
        assert_eq!(frame.take_fault(), None, "taken once");
        let (_, faulted) = raw_run(raw, &mut big, 0);
        assert!(faulted, "and again on the next run, from a clean environment");
        assert_eq!(frame.take_fault(), jit.run(&mut big, 0).err(), "the fault run reports");
    }
}
