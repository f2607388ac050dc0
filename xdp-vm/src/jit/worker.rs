//! The lean run entry: [`JitWorker`], what one worker keeps to run one compiled program over
//! and over (a dataplane worker's frames, `prog run`'s repeats, a replay benchmark).
//!
//! [`JitProgram::run_on`] builds the whole run environment (`Env`, fifteen fields) for every
//! run. A `JitWorker` builds it once — the program's maps and tail-call set, the per-CPU slot,
//! the stack — and a run writes only what changes from frame to frame: the packet region, the
//! context, the state and the backward-jump count; then one indirect call, and one compare to
//! learn whether the run faulted.
//!
//! Invariant: `env` points into `prog` (its maps and its link set) and `stack`, both owned
//! here, at stable heap addresses, and dropped after `env` (field order), which holds no
//! reference to them that outlives `self`.
#![expect(unsafe_code, reason = "the run environment borrows from the program the worker owns")]

use std::sync::Arc;

use super::call::Env;
use super::memory::{self, Entry, Stack};
use super::{JitProgram, begin_packet};
use crate::context::Context;
use crate::interp::Fault;

/// What one worker keeps to run one compiled program: the program (shared, `Arc`), its run
/// environment filled in once, and the program stack. [`JitWorker::run`] writes the context's
/// packet region and address and calls the code — the per-frame fast path of the dataplane's
/// workers, `prog run` and the benchmarks. Same semantics as [`JitProgram::run`]: faults,
/// tail calls, `bpf_xdp_adjust_head`/`_meta`, redirect state, per-CPU slot.
///
/// Tail-call targets are the program's link set when the worker is made: make workers after
/// [`super::link_tail_calls`]. A worker may move to another thread (it is `Send`); one run at
/// a time (`&mut self`).
pub struct JitWorker<C: Context> {
    // Field order matters: `env` refers into `stack` and `prog` (module invariant).
    env: Env<'static>,
    entry: Entry,
    /// What `env.stack_start` points to; only generated code touches it.
    _stack: Box<Stack>,
    prog: Arc<JitProgram<C>>,
}

impl<C: Context> JitWorker<C> {
    /// A worker running `prog` with per-CPU slot `slot` (the caller's CPU, as for
    /// [`JitProgram::run`]).
    #[must_use]
    pub fn new(prog: Arc<JitProgram<C>>, slot: usize) -> Self {
        let mut stack = memory::new_stack();
        let env = prog.env();
        // SAFETY: `env` borrows `prog`'s maps (a `Vec` inside the `Arc<Compiled>` the program
        // holds) and reads its link set's address; both stay at their heap addresses while
        // `self.prog` holds the program, and `self.env` is dropped first (field order) and
        // never handed out, so the `'static` never outlives them (module invariant).
        let mut env = unsafe { std::mem::transmute::<Env<'_>, Env<'static>>(env) };
        env.slot = slot as u64;
        env.stack_start = stack.as_mut_ptr() as u64;
        let entry = prog.compiled.code.entry();
        Self { env, entry, _stack: stack, prog }
    }

    /// The program this worker runs.
    #[must_use]
    pub fn program(&self) -> &Arc<JitProgram<C>> {
        &self.prog
    }

    /// The per-CPU slot its runs use.
    #[must_use]
    pub fn slot(&self) -> usize {
        self.env.slot as usize
    }

    /// Runs the program once on `state`; returns `r0`.
    ///
    /// # Errors
    /// The [`Fault`] the interpreter would report for the same run.
    #[inline]
    pub fn run(&mut self, state: &mut C::State<'_>) -> Result<u64, Fault> {
        let env = &mut self.env;
        let ctx = begin_packet::<C>(env, state);
        env.backward = 0;
        let r0 = (self.entry)(env, ctx);
        env.outcome(r0)
    }
}

// SAFETY: the raw pointers in `env` point into `prog` (an `Arc` of a `Send + Sync` program)
// and `stack` (owned), which move with the worker; `env.state` is only set for the length of a
// `run`, which borrows the state it points to.
unsafe impl<C: Context> Send for JitWorker<C> {}

impl<C: Context> std::fmt::Debug for JitWorker<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitWorker").field("program", &self.prog.name()).field("slot", &self.env.slot).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::JitWorker;
    use crate::context::{XDP_FRAME_SIZE, XdpBuff};
    use crate::helpers::id;
    use crate::insn::{BPF_PSEUDO_CALL, Insn};
    use crate::interp::{Fault, Interpreter};
    use crate::jit::JitProgram;
    use crate::{Program, Xdp};

    const EXIT: Insn = Insn::new(0x95, 0, 0, 0, 0);

    fn compile(insns: &[Insn]) -> (Program<Xdp>, Arc<JitProgram<Xdp>>) {
        let prog = Program::<Xdp>::from_insns("t", insns, &[]).unwrap();
        let jit = Arc::new(JitProgram::compile(&prog).unwrap());
        (prog, jit)
    }

    /// One worker, many frames: each run sees its own packet, a fault (here inside a
    /// bpf-to-bpf call, two frames deep) leaves nothing behind for the next run, and every
    /// result and output frame is the interpreter's.
    #[test]
    fn a_worker_runs_frame_after_frame_as_the_interpreter_does() {
        // main: call sub; exit. sub: r0 = data_end - data; a packet over 100 bytes reads at
        // address r0 (a fault); else adjust_head by 14 and return the new length + 1000.
        let insns = [
            Insn::new(0x85, 0, BPF_PSEUDO_CALL, 0, 1),
            EXIT,
            Insn::new(0xbf, 6, 1, 0, 0),
            Insn::new(0x61, 2, 1, 0, 0),
            Insn::new(0x61, 3, 1, 4, 0),
            Insn::new(0xbf, 0, 3, 0, 0),
            Insn::new(0x1f, 0, 2, 0, 0),
            Insn::new(0x25, 0, 0, 8, 100),
            Insn::new(0xb7, 2, 0, 0, 14),
            Insn::new(0x85, 0, 0, 0, id::XDP_ADJUST_HEAD as i32),
            Insn::new(0x61, 2, 6, 0, 0),
            Insn::new(0x61, 3, 6, 4, 0),
            Insn::new(0xbf, 0, 3, 0, 0),
            Insn::new(0x1f, 0, 2, 0, 0),
            Insn::new(0x07, 0, 0, 0, 1000),
            EXIT,
            Insn::new(0x79, 0, 0, 0, 0),
            EXIT,
        ];
        let (prog, jit) = compile(&insns);
        let mut worker = JitWorker::new(jit, 0);
        let mut vm = Interpreter::new();
        let (mut a, mut b) = (vec![0u8; XDP_FRAME_SIZE], vec![0u8; XDP_FRAME_SIZE]);
        for len in [60, 200, 60, 14, 300, 98, 101, 100] {
            let pkt: Vec<u8> = (0..len).map(|x| x as u8).collect();
            let mut ours = XdpBuff::load(&mut a, &pkt).unwrap();
            let mut theirs = XdpBuff::load(&mut b, &pkt).unwrap();
            let (r, expect) = (worker.run(&mut ours), vm.run(&prog, &mut theirs, 0));
            assert_eq!(r, expect, "{len}-byte packet");
            assert_eq!(ours.meta_and_packet(), theirs.meta_and_packet(), "{len}-byte packet");
            if len > 100 {
                assert!(matches!(r, Err(Fault::Memory { .. })), "{r:?}");
            } else {
                assert!(r.is_ok_and(|r| r >= 1000), "{r:?}");
            }
        }
    }

    /// Each run starts its backward-jump count afresh: 10M taken backward jumps per run, three
    /// runs on one worker (an unverified program's loop is counted).
    #[test]
    fn each_run_counts_its_own_backward_jumps() {
        let insns = [
            Insn::new(0xb7, 0, 0, 0, 0),
            Insn::new(0xb7, 2, 0, 0, 10_000_000),
            Insn::new(0x07, 0, 0, 0, 1),
            Insn::new(0xad, 0, 2, -2, 0),
            EXIT,
        ];
        let (_, jit) = compile(&insns);
        let mut worker = JitWorker::new(jit, 0);
        let mut mem = vec![0u8; XDP_FRAME_SIZE];
        for _ in 0..3 {
            assert_eq!(worker.run(&mut XdpBuff::load(&mut mem, &[0; 60]).unwrap()), Ok(10_000_000));
        }
    }

    /// A worker runs with its own per-CPU slot (`bpf_get_smp_processor_id`), on whichever
    /// thread it moved to.
    #[test]
    fn a_worker_keeps_its_slot_and_moves_between_threads() {
        let (_, jit) = compile(&[Insn::new(0x85, 0, 0, 0, id::GET_SMP_PROCESSOR_ID as i32), EXIT]);
        let workers: Vec<_> = (0..3).map(|slot| JitWorker::new(jit.clone(), slot)).collect();
        let threads: Vec<_> = workers
            .into_iter()
            .map(|mut w| {
                std::thread::spawn(move || {
                    let mut mem = vec![0u8; XDP_FRAME_SIZE];
                    (w.slot(), w.run(&mut XdpBuff::load(&mut mem, &[0; 60]).unwrap()))
                })
            })
            .collect();
        for t in threads {
            let (slot, r) = t.join().unwrap();
            assert_eq!(r, Ok(slot as u64));
        }
    }
}
