//! Switching every worker to a new program between two packets.
//!
//! The running program lives in a [`ProgSlot`]: an `Arc<Loaded>` behind a mutex, and its id in
//! an atomic. A worker checks the id once per batch (one `Acquire` load, its only cost); when it
//! differs from the id of the program it holds, it takes the new `Arc` (the mutex is touched only
//! then), drops its reference to the old one and publishes the id it now runs in its counters
//! (its epoch). So a worker runs the old program for whole batches up to the switch and the new
//! one for every batch after: never the old after the new.
//!
//! The control thread publishes with [`ProgSlot::publish`], then waits until every worker's
//! epoch shows the new id before it lets go of the old program; a worker that never comes round
//! (stopped) leaves it in the instance's retired list, freed later. The old program's code and
//! maps are freed when the last `Arc` goes — never while a worker can still be inside it,
//! because a worker holds its `Arc` for as long as it may run it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use xdp_vm::elf::Types;
use xdp_vm::jit::JitProgram;
use xdp_vm::{Program, Xdp};

use crate::config::EngineKind;
use crate::worker::EngineError;

/// A program ready to run: verified, bound to its maps, compiled when the engine is the JIT.
#[derive(Debug)]
pub struct Loaded {
    /// 1 for the program the instance started with, then one more per replacement.
    pub id: u64,
    pub prog: Program<Xdp>,
    /// The compiled code, shared by every worker; `None` for the interpreter.
    pub jit: Option<Arc<JitProgram<Xdp>>>,
    /// The object it came from.
    pub object: PathBuf,
    /// The object's BTF types (map keys and values), for typed map requests; empty when the
    /// object has none or can no longer be read.
    pub types: Types,
    pub loaded_at: SystemTime,
    /// Every compiled program `bpf_tail_call` can reach (`prog` among them), linked into one
    /// set by `xdp_vm::jit::link_tail_calls`, whose table keeps every member's code alive while
    /// any member lives. Empty without tail calls.
    pub tail_jits: Vec<Arc<JitProgram<Xdp>>>,
}

impl Loaded {
    /// Compiles `prog` for `engine` (a no-op for the interpreter).
    ///
    /// # Errors
    /// [`EngineError`] when the JIT refuses the program.
    pub fn new(
        id: u64,
        prog: Program<Xdp>,
        engine: EngineKind,
        object: PathBuf,
    ) -> Result<Self, EngineError> {
        let jit = match engine {
            EngineKind::Interp => None,
            EngineKind::Jit => Some(Arc::new(
                JitProgram::compile(&prog)
                    .map_err(|source| EngineError { name: prog.name().to_string(), source })?,
            )),
        };
        let types = std::fs::read(&object).ok().and_then(|b| Types::from_object(&b).ok()).unwrap_or_default();
        Ok(Self { id, prog, jit, object, types, loaded_at: SystemTime::now(), tail_jits: Vec::new() })
    }

    /// Like [`new`](Self::new) for `progs[index]` where `progs` are linked for tail calls
    /// (`xdp_vm::link_tail_calls`, as `prog_run::load_linked` returns them): the JIT compiles
    /// every one and links the compiled code the same way.
    ///
    /// # Errors
    /// [`EngineError`] when the JIT refuses one of them.
    pub fn linked(
        id: u64,
        progs: &[Program<Xdp>],
        index: usize,
        engine: EngineKind,
        object: PathBuf,
    ) -> Result<Self, EngineError> {
        let prog = progs[index].clone();
        if progs.len() == 1 || engine == EngineKind::Interp {
            return Self::new(id, prog, engine, object);
        }
        let jits = progs
            .iter()
            .map(|p| {
                JitProgram::compile(p)
                    .map(Arc::new)
                    .map_err(|source| EngineError { name: p.name().to_string(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Linking fails only for programs bound to different maps; `progs` share one set.
        let _ = xdp_vm::jit::link_tail_calls(&jits);
        // The rest (object, BTF types) as `new` makes it, for the interpreter, then the code.
        let mut loaded = Self::new(id, prog, EngineKind::Interp, object)?;
        loaded.jit = Some(jits[index].clone());
        loaded.tail_jits = jits;
        Ok(loaded)
    }

    /// The engine the program runs with.
    #[must_use]
    pub fn engine(&self) -> EngineKind {
        if self.jit.is_some() { EngineKind::Jit } else { EngineKind::Interp }
    }
}

/// Where workers find the program to run.
#[derive(Debug)]
pub struct ProgSlot {
    id: AtomicU64,
    current: Mutex<Arc<Loaded>>,
}

impl ProgSlot {
    #[must_use]
    pub fn new(first: Arc<Loaded>) -> Self {
        Self { id: AtomicU64::new(first.id), current: Mutex::new(first) }
    }

    /// The id of the program workers should run: the per-batch check.
    #[inline]
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id.load(Ordering::Acquire)
    }

    /// The program workers should run.
    #[must_use]
    pub fn current(&self) -> Arc<Loaded> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Makes `new` the program workers run from their next batch; returns the old one.
    pub fn publish(&self, new: Arc<Loaded>) -> Arc<Loaded> {
        let mut cur = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let id = new.id;
        let old = std::mem::replace(&mut *cur, new);
        // Under the lock, so a worker that sees the id finds (at least) this program.
        self.id.store(id, Ordering::Release);
        old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::WorkerCounters;
    use std::sync::atomic::AtomicBool;
    use xdp_vm::insn::Insn;

    /// `r0 = ret; exit`.
    fn loaded(id: u64, ret: i32) -> Arc<Loaded> {
        let insns = [Insn::new(0xb7, 0, 0, 0, ret), Insn::new(0x95, 0, 0, 0, 0)];
        let prog = Program::from_insns_verified("t", &insns, &[]).unwrap();
        Arc::new(Loaded::new(id, prog, EngineKind::Jit, "t.o".into()).unwrap())
    }

    /// Workers spinning on the slot as the dataplane's do, while the control side publishes 19
    /// programs: each worker's ids only grow and every run returns its program's own value (it
    /// never runs an old program after a new one), and each old program is freed only after
    /// every worker's epoch has passed it.
    #[test]
    fn workers_move_forward_and_old_programs_outlive_their_last_user() {
        let slot = Arc::new(ProgSlot::new(loaded(1, 1)));
        let stop = Arc::new(AtomicBool::new(false));
        let counters: Vec<Arc<WorkerCounters>> =
            (0..3).map(|_| Arc::new(WorkerCounters::default())).collect();
        let handles: Vec<_> = counters
            .iter()
            .map(|c| {
                let (slot, stop, c) = (slot.clone(), stop.clone(), c.clone());
                std::thread::spawn(move || {
                    let mut cur = slot.current();
                    c.adopt(cur.id);
                    let mut seen = vec![cur.id];
                    let mut buf = vec![0u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        if slot.id() != cur.id {
                            cur = slot.current();
                            c.adopt(cur.id);
                            seen.push(cur.id);
                        }
                        let mut ctx = xdp_vm::XdpBuff::new(&mut buf, 256, 64).unwrap();
                        let r = cur.jit.as_ref().unwrap().run(&mut ctx, 0).unwrap();
                        assert_eq!(r, cur.id, "program {} returned another program's value", cur.id);
                    }
                    seen
                })
            })
            .collect();
        for id in 2..=20u64 {
            let old = slot.publish(loaded(id, id as i32));
            let weak = Arc::downgrade(&old);
            drop(old);
            // Until every worker shows the new epoch, some may hold the old program.
            while !counters.iter().all(|c| c.prog_id.load(Ordering::Acquire) == id) {
                std::thread::yield_now();
            }
            // Each worker let go of the old program before publishing the new id.
            assert!(weak.upgrade().is_none(), "program {} outlived its last worker", id - 1);
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let seen = h.join().unwrap();
            assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
            assert_eq!(seen.last(), Some(&20));
        }
    }
}
