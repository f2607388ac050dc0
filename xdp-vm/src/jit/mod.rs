//! The Cranelift JIT: compiles a [`Program`] to native code once, then runs it from any thread.
//!
//! Semantics are the interpreter's ([`crate::interp`]), instruction for instruction: the same
//! return values, memory effects and [`Fault`]s. For a program the verifier accepted
//! ([`Program::verified`]), every load, store and atomic it proved inside the stack, the packet
//! or a map value is compiled as a plain machine access, with no check. A program loaded
//! unverified (`--no-verify`, engine tests) is safe on its own: every memory access is checked at
//! run time — inline range compares against the packet frame and the stack, then a call into the
//! same checked slow path the interpreter uses for context fields and map values — except where
//! the compiler's own analysis ([`facts`]) proves it in bounds (`r10`-relative stack slots,
//! context fields, map values behind a NULL check). Backward jumps are counted and call depth is
//! bounded as in the interpreter, so a program that misbehaves stops with a fault, never a crash.
//!
//! Fast paths: array and per-CPU array lookups are address arithmetic with the bound check;
//! hash lookups with a 1-, 2-, 4- or 8-byte key on the stack read the key inline and call
//! [`maps::Map::lookup_word`] (no key slice, no size dispatch), other hash lookups call
//! `Map::lookup` directly for the map known at compile time; LPM trie lookups with 1, 2, 4 or 8
//! bytes of key data (IPv4) read the key inline and call [`maps::Map::lookup_lpm_word`], a walk
//! with one compare per node; `bpf_get_smp_processor_id` and context loads are inline; every
//! other helper runs the interpreter's implementation through an `extern "C"` trampoline.
//!
//! Alias regions: in a function whose every access the verifier placed in one region, stack,
//! packet and map-value accesses are told to Cranelift as disjoint memory (and stack accesses at
//! constant frame offsets as one region per byte range they cover), so it forwards a stored
//! value to a later load of it — a lookup key written then read, a `memcpy` temporary — instead
//! of reading it back from memory.
//!
//! Running: [`JitProgram::run`] takes a stack from a per-thread cache and builds the run
//! environment; a worker that runs one program in a loop keeps a [`JitWorker`] (program,
//! environment and stack filled in once), whose run writes the packet region and context and
//! makes one call. [`JitProgram::run_on`] with a [`JitRunner`] (a stack for any program) is in
//! between; a tracing probe keeps a [`JitFrame`].
//!
//! Code pages are written, then made read-execute (never both; see `memory`).
//!
//! # Example: embedding
//!
//! ```
//! use xdp_vm::context::{XDP_FRAME_SIZE, XdpBuff};
//! use xdp_vm::insn::Insn;
//! use xdp_vm::jit::JitProgram;
//! use xdp_vm::{Program, Xdp};
//!
//! // r2 = ctx->data; r3 = ctx->data_end; r0 = r3 - r2 (the packet length); exit.
//! let insns = [
//!     Insn::new(0x61, 2, 1, 0, 0),
//!     Insn::new(0x61, 3, 1, 4, 0),
//!     Insn::new(0xbf, 0, 3, 0, 0),
//!     Insn::new(0x1f, 0, 2, 0, 0),
//!     Insn::new(0x95, 0, 0, 0, 0),
//! ];
//! // Load (from an object: `Object::parse`, `create_maps`, `Program::new`), then compile once.
//! let prog = Program::<Xdp>::from_insns("len", &insns, &[])?;
//! let jit = std::sync::Arc::new(JitProgram::compile(&prog)?);
//!
//! // Run it from any thread, each with its own frame.
//! let worker = {
//!     let jit = jit.clone();
//!     std::thread::spawn(move || {
//!         let mut frame = vec![0u8; XDP_FRAME_SIZE];
//!         let mut buff = XdpBuff::load(&mut frame, &[0u8; 60]).unwrap();
//!         jit.run(&mut buff, 0)
//!     })
//! };
//! assert_eq!(worker.join().unwrap()?, 60);
//!
//! // A thread that runs it on frame after frame keeps a `JitWorker` (here for per-CPU slot 1).
//! let mut worker = xdp_vm::jit::JitWorker::new(jit.clone(), 1);
//! let mut frame = vec![0u8; XDP_FRAME_SIZE];
//! for len in [60, 98] {
//!     let mut buff = XdpBuff::load(&mut frame, &vec![0u8; len]).unwrap();
//!     assert_eq!(worker.run(&mut buff)?, len as u64);
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod call;
mod facts;
pub mod frame;
mod memory;
mod translate;
mod worker;

use std::marker::PhantomData;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cranelift_codegen::settings::{self, Configurable};
use cranelift_jit::{JITBuilder, JITModule};
use maps::{Map, map_flags, map_type};

use crate::context::Context;
use crate::interp::Fault;
use crate::program::{LinkError, Program};
use call::{Env, Targets};
pub use frame::RawFrame;
use translate::{MapInfo, MapKind};
pub use worker::JitWorker;

/// Why a program could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("no native code generator for this machine: {reason}")]
    Isa { reason: String },
    #[error("instruction {insn}: jump to {target} leaves its function")]
    JumpLeavesFunction { insn: usize, target: usize },
    #[error("instruction {insn}: falls through into the next subprogram")]
    FallsIntoSubprogram { insn: usize },
    #[error("instruction {insn}: unsupported instruction (opcode {code:#04x})")]
    Unsupported { insn: usize, code: u8 },
    #[error("code generation failed: {reason}")]
    Codegen { reason: String },
}

/// A compiled program: native code plus the maps it refers to. `Send + Sync`: compile once per
/// load, share it (e.g. in an `Arc`) with every worker.
#[derive(Debug)]
pub struct JitProgram<C: Context> {
    name: String,
    compiled: Arc<Compiled>,
    compile_time: Duration,
    /// The `bpf_tail_call` targets by program id, set once by [`link_tail_calls`].
    tails: OnceLock<Arc<TailTable>>,
    _context: PhantomData<fn() -> C>,
}

/// What running a program's code needs to stay alive: the code and what it points into.
#[derive(Debug)]
struct Compiled {
    // Field order matters: the code goes before the maps and tables it points into.
    code: memory::Code,
    maps: Vec<Arc<Map>>,
    /// Per-CPU array slot bases the code reads (`MapKind::PerCpuArray::table`).
    _tables: Vec<Box<[u64]>>,
}

/// The programs of one link set ([`link_tail_calls`]), by program id: each one's tail entry
/// (the address a `bpf_tail_call` jumps to) and what keeps that code mapped.
///
/// How a target stays alive while a run may jump into it: every program of the set holds the
/// table, the table holds every program's [`Compiled`] (not the `JitProgram`, so there is no
/// cycle), and a run borrows the program it started with for its whole length. A prog array
/// update (the control plane's `map update`, a slot deleted) only changes which id a slot
/// names — every id's code is the table's, alive until the last program of the set is
/// dropped; a replaced program (`prog replace`) is a new set, and the old set lives while any
/// worker still holds (and may run) one of its programs. No reference count is touched per
/// tail call: the set's code is freed only once no program of it can run.
#[derive(Debug)]
struct TailTable {
    entries: Box<[u64]>,
    _code: Vec<Arc<Compiled>>,
}

impl<C: Context> JitProgram<C> {
    /// Compiles `prog` for this machine.
    ///
    /// # Errors
    /// [`CompileError`] when the host has no Cranelift backend, or for control flow the kernel's
    /// verifier would refuse too (a jump out of its function, a fall-through into a subprogram).
    pub fn compile(prog: &Program<C>) -> Result<Self, CompileError> {
        Self::build(prog, None)
    }

    /// The machine code [`JitProgram::compile`] makes for `prog`, as Cranelift prints it: one
    /// block per eBPF function, x86-64 (or the host's) assembly with Cranelift's block labels.
    /// For reading what the JIT does with a program (`dataplane prog dump --jit`, benches).
    ///
    /// # Errors
    /// As [`JitProgram::compile`].
    pub fn disassemble(prog: &Program<C>) -> Result<String, CompileError> {
        let mut text = String::new();
        Self::build(prog, Some(&mut text))?;
        Ok(text)
    }

    fn build(prog: &Program<C>, disasm: Option<&mut String>) -> Result<Self, CompileError> {
        let started = Instant::now();
        let isa_err = |reason: String| CompileError::Isa { reason };
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| isa_err(e.to_string()))?;
        flags.set("is_pic", "false").map_err(|e| isa_err(e.to_string()))?;
        // Cranelift's x86-64 tail calls (`bpf_tail_call`, see `translate`) need frame pointers.
        flags.set("preserve_frame_pointers", "true").map_err(|e| isa_err(e.to_string()))?;
        // Cranelift's IR verifier re-checks what the translator built; it costs about a third
        // of the compile time, so it runs in debug builds (and so in every test) only.
        let verify_ir = if cfg!(debug_assertions) { "true" } else { "false" };
        flags.set("enable_verifier", verify_ir).map_err(|e| isa_err(e.to_string()))?;
        let isa = cranelift_native::builder()
            .map_err(|e| isa_err(e.to_string()))?
            .finish(settings::Flags::new(flags))
            .map_err(|e| isa_err(e.to_string()))?;
        let mut module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));

        let maps = prog.maps().to_vec();
        let mut tables = Vec::new();
        let infos: Vec<MapInfo> = maps.iter().map(|m| map_info(m, &mut tables)).collect();
        let (entries, size) = translate::translate::<C>(
            &mut module,
            prog.insns(),
            &infos,
            &Targets::of::<C>(),
            prog.verified(),
            disasm,
        )?;
        let code = memory::Code::finalize(module, entries, size)?;
        Ok(Self {
            name: prog.name().to_string(),
            compiled: Arc::new(Compiled { code, maps, _tables: tables }),
            compile_time: started.elapsed(),
            tails: OnceLock::new(),
            _context: PhantomData,
        })
    }

    /// Runs the program once on `state`, with per-CPU slot `slot`; returns `r0`. The stack
    /// comes from a per-thread cache; a worker that runs programs in a loop saves that look-up
    /// with [`JitProgram::run_on`].
    ///
    /// # Errors
    /// The [`Fault`] the interpreter would report for the same run.
    pub fn run(&self, state: &mut C::State<'_>, slot: usize) -> Result<u64, Fault> {
        self.run_with(state, slot, |code, env, r1| code.call(env, r1))
    }

    /// [`JitProgram::run`] on `runner`'s stack: the per-worker fast path.
    ///
    /// # Errors
    /// The [`Fault`] the interpreter would report for the same run.
    #[inline]
    pub fn run_on(
        &self,
        runner: &mut JitRunner,
        state: &mut C::State<'_>,
        slot: usize,
    ) -> Result<u64, Fault> {
        self.run_with(state, slot, |code, env, r1| code.call_on(env, r1, &mut runner.stack))
    }

    #[inline]
    fn run_with(
        &self,
        state: &mut C::State<'_>,
        slot: usize,
        call: impl FnOnce(&memory::Code, &mut Env<'_>, u64) -> u64,
    ) -> Result<u64, Fault> {
        let mut env = self.env();
        let ctx = begin_run::<C>(&mut env, state, slot);
        let r0 = call(&self.compiled.code, &mut env, ctx);
        env.outcome(r0)
    }

    /// The address of the program's `(env, r1) -> r0` entry, as [`JitFrame::raw`] gives it: for
    /// reading the compiled code (it lives as long as the program).
    #[must_use]
    pub fn entry_address(&self) -> u64 {
        self.compiled.code.entry_address()
    }

    /// A run environment for this program kept by one thread between runs (a tracing probe's
    /// hits): [`JitFrame::run`] then writes only what changes from run to run.
    #[must_use]
    pub fn frame(&self) -> JitFrame<'_, C> {
        JitFrame { prog: self, code: &self.compiled.code, env: self.env() }
    }

    /// The run environment's per-program part (maps, tail-call set); [`begin_run`] fills in a
    /// run's. Borrows `self`, so the link set it points into outlives every run made with it.
    #[inline]
    fn env(&self) -> Env<'_> {
        Env {
            pkt_start: 0,
            pkt_len: 0,
            stack_start: 0,
            ctx: 0,
            slot: 0,
            depth: 0,
            backward: 0,
            faulted: 0,
            tail_calls: 0,
            tail_entries: self.tails.get().map_or(std::ptr::null(), |t| t.entries.as_ptr()),
            tail_len: self.tails.get().map_or(0, |t| t.entries.len() as u64),
            state: std::ptr::null_mut(),
            maps: &self.compiled.maps,
            fault: None,
        }
    }

    /// The program's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long [`JitProgram::compile`] took.
    #[must_use]
    pub fn compile_time(&self) -> Duration {
        self.compile_time
    }

    /// Bytes of machine code.
    #[must_use]
    pub fn code_size(&self) -> usize {
        self.compiled.code.size()
    }

    /// The maps the program uses.
    #[must_use]
    pub fn maps(&self) -> &[Arc<Map>] {
        &self.compiled.maps
    }
}

/// Links compiled programs of one object for `bpf_tail_call`, as
/// [`crate::program::link_tail_calls`] does for the interpreter: a prog array slot holding id
/// `i` runs `progs[i]`. A tail call is a jump into the target's code on the same frame, at most
/// `MAX_TAIL_CALL_CNT` per run; the programs keep each other's code alive (see `TailTable`).
///
/// # Errors
/// [`LinkError::ForeignMaps`] when the programs do not share their maps; a program already
/// linked keeps its first links.
pub fn link_tail_calls<C: Context>(progs: &[Arc<JitProgram<C>>]) -> Result<(), LinkError> {
    if let Some(first) = progs.first() {
        for p in progs {
            let (a, b) = (&p.compiled.maps, &first.compiled.maps);
            let same = a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                return Err(LinkError::ForeignMaps { name: p.name.clone(), first: first.name.clone() });
            }
        }
    }
    let table = Arc::new(TailTable {
        entries: progs.iter().map(|p| p.compiled.code.tail_entry()).collect(),
        _code: progs.iter().map(|p| p.compiled.clone()).collect(),
    });
    for p in progs {
        let _ = p.tails.set(table.clone());
    }
    Ok(())
}

/// One program's run environment, kept by one thread between runs ([`JitProgram::frame`]): the
/// program, its maps and its tail-call targets are filled in once, so a run
/// ([`JitFrame::run`]) writes the context, the per-CPU slot and the run counters, and nothing
/// else — the lean entry for tracing probes, which run one short program per hit. Same
/// semantics as [`JitProgram::run_on`]. Tail-call targets linked after the frame was made are
/// not seen by it (make frames after [`link_tail_calls`]).
#[derive(Debug)]
pub struct JitFrame<'p, C: Context> {
    prog: &'p JitProgram<C>,
    /// `prog`'s code, one load nearer.
    code: &'p memory::Code,
    env: Env<'p>,
}

impl<'p, C: Context> JitFrame<'p, C> {
    /// The program this frame runs.
    #[must_use]
    pub fn program(&self) -> &'p JitProgram<C> {
        self.prog
    }

    /// Runs the program once on `state` with per-CPU slot `slot`, on `runner`'s stack; returns
    /// `r0`.
    ///
    /// # Errors
    /// The [`Fault`] the interpreter would report for the same run.
    #[inline]
    pub fn run(
        &mut self,
        runner: &mut JitRunner,
        state: &mut C::State<'_>,
        slot: usize,
    ) -> Result<u64, Fault> {
        let env = &mut self.env;
        let ctx = begin_run::<C>(env, state, slot);
        let r0 = self.code.call_on(env, ctx, &mut runner.stack);
        env.outcome(r0)
    }
}

/// Fills in what changes from run to run of `env` — the packet region, the context, the
/// per-CPU slot, the state, the run counters — and returns the context's address (`r1`).
#[inline(always)]
fn begin_run<C: Context>(env: &mut Env<'_>, state: &mut C::State<'_>, slot: usize) -> u64 {
    env.slot = slot as u64;
    env.backward = 0;
    begin_packet::<C>(env, state)
}

/// Fills in `env`'s packet region, context and state for a run on `state`; returns the
/// context's address (`r1`).
#[inline(always)]
fn begin_packet<C: Context>(env: &mut Env<'_>, state: &mut C::State<'_>) -> u64 {
    let (mut pkt_start, mut pkt_len) = C::memory(state);
    let ctx = C::address(state);
    // Known at compile time for contexts whose memory is never that small (XDP): no test.
    if C::MIN_MEMORY < 8 && pkt_len < 8 {
        // An empty (or tiny) region: checks against it then never pass.
        (pkt_start, pkt_len) = (usize::MAX - 16, 8);
    }
    env.pkt_start = pkt_start as u64;
    env.pkt_len = pkt_len as u64;
    env.ctx = ctx;
    env.state = std::ptr::from_mut(state).cast();
    ctx
}

/// What one worker keeps between runs of compiled programs: the 4 KiB program stack, so a run
/// neither allocates nor looks up a per-thread cache. Any program may run on it; one run at a
/// time (the `&mut` in [`JitProgram::run_on`]).
pub struct JitRunner {
    stack: Box<memory::Stack>,
}

impl JitRunner {
    /// A runner with a fresh stack.
    #[must_use]
    pub fn new() -> Self {
        Self { stack: memory::new_stack() }
    }
}

impl Default for JitRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for JitRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JitRunner").finish_non_exhaustive()
    }
}

/// What the compiler may assume about `map`; per-CPU array slot tables and array bases go to
/// `tables`.
fn map_info(map: &Arc<Map>, tables: &mut Vec<Box<[u64]>>) -> MapInfo {
    let def = *map.def();
    let stride = u64::from(def.value_size.next_multiple_of(8));
    let key0 = 0u32.to_ne_bytes();
    let last = (def.max_entries.saturating_sub(1)).to_ne_bytes();
    let kind = match def.map_type {
        // Element `i` at `base + i * round_up(value_size, 8)`: `Map::array_base`'s contract.
        map_type::ARRAY => match map.array_base() {
            Some(base) => {
                // The base in memory too, for lookups in loops to load it once ([`MapKind::Array`]).
                let at: Box<[u64]> = Box::new([base.as_ptr() as u64]);
                let kind = MapKind::Array { base: at[0], base_at: at.as_ptr() as u64, stride };
                tables.push(at);
                kind
            }
            None => MapKind::Other,
        },
        map_type::PERCPU_ARRAY => {
            // Each slot's element 0 from `Map::lookup`; the layout is checked against the last
            // element of every slot, else lookups go through `Map::lookup`.
            let table: Option<Box<[u64]>> =
                (0..map.slots()).map(|s| map.lookup(&key0, s).map(|p| p.as_ptr() as u64)).collect();
            let consistent = table.as_ref().is_some_and(|t| {
                t.iter().enumerate().all(|(s, &b)| {
                    map.lookup(&last, s).map(|p| p.as_ptr() as u64)
                        == Some(b + u64::from(def.max_entries - 1) * stride)
                })
            });
            match table {
                Some(t) if consistent => {
                    let kind =
                        MapKind::PerCpuArray { table: t.as_ptr() as u64, slots: t.len() as u64, stride };
                    tables.push(t);
                    kind
                }
                _ => MapKind::Other,
            }
        }
        map_type::PROG_ARRAY => map.prog_slots().map_or(MapKind::Other, MapKind::ProgArray),
        map_type::LPM_TRIE if matches!(def.key_size, 5 | 6 | 8 | 12) && map.has_lpm_word_lookup() => {
            MapKind::LpmWord
        }
        _ if !matches!(def.key_size, 1 | 2 | 4 | 8) => MapKind::Other,
        _ if let Some(walk) = map.hash_walk() => MapKind::HashInline(walk),
        _ if map.has_word_lookup() => MapKind::HashWord,
        _ => MapKind::Other,
    };
    MapInfo {
        addr: Arc::as_ptr(map) as u64,
        key_size: def.key_size,
        value_size: def.value_size,
        max_entries: def.max_entries,
        read_only: def.map_flags & map_flags::RDONLY_PROG != 0,
        kind,
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

#[cfg(test)]
mod frame_tests {
    use super::*;
    use crate::context::{XDP_FRAME_SIZE, XdpBuff};
    use crate::insn::Insn;
    use crate::{Program, Xdp};

    fn run_both(jit: &JitProgram<Xdp>, frame: &mut JitFrame<'_, Xdp>, runner: &mut JitRunner, len: usize) {
        let mut mem = vec![0u8; XDP_FRAME_SIZE];
        let pkt = vec![0u8; len];
        let mut buff = XdpBuff::load(&mut mem, &pkt).unwrap();
        let framed = frame.run(runner, &mut buff, 0);
        let mut buff = XdpBuff::load(&mut mem, &pkt).unwrap();
        assert_eq!(framed, jit.run(&mut buff, 0), "{len}-byte packet");
    }

    /// r0 = data_end - data; a packet over 100 bytes faults (a read at address r0). Also run by
    /// `frame::tests`.
    pub(super) fn len_or_fault() -> Program<Xdp> {
        let insns = [
            Insn::new(0x61, 2, 1, 0, 0),
            Insn::new(0x61, 3, 1, 4, 0),
            Insn::new(0xbf, 0, 3, 0, 0),
            Insn::new(0x1f, 0, 2, 0, 0),
            Insn::new(0x25, 0, 0, 1, 100),
            Insn::new(0x95, 0, 0, 0, 0),
            Insn::new(0x79, 0, 0, 0, 0),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        Program::<Xdp>::from_insns("len", &insns, &[]).unwrap()
    }

    #[test]
    fn a_frame_runs_as_run_does_and_starts_each_run_afresh() {
        let prog = len_or_fault();
        let jit = JitProgram::compile(&prog).unwrap();
        let mut runner = JitRunner::new();
        let mut frame = jit.frame();
        for len in [60, 200, 60, 14, 300, 300, 100] {
            run_both(&jit, &mut frame, &mut runner, len);
        }
        assert!(matches!(
            frame.run(&mut runner, &mut XdpBuff::load(&mut [0; 4096], &[0; 200]).unwrap(), 0),
            Err(Fault::Memory { .. })
        ));

        // 10M taken backward jumps per run: two runs on one frame stay under the limit only if
        // each starts its count afresh.
        let insns = [
            Insn::new(0xb7, 0, 0, 0, 0),
            Insn::new(0xb7, 2, 0, 0, 10_000_000),
            Insn::new(0x07, 0, 0, 0, 1),
            Insn::new(0xad, 0, 2, -2, 0),
            Insn::new(0x95, 0, 0, 0, 0),
        ];
        let prog = Program::<Xdp>::from_insns("loop", &insns, &[]).unwrap();
        let jit = JitProgram::compile(&prog).unwrap();
        let mut frame = jit.frame();
        for _ in 0..3 {
            run_both(&jit, &mut frame, &mut runner, 60);
        }
        let mut mem = vec![0u8; XDP_FRAME_SIZE];
        assert_eq!(
            frame.run(&mut runner, &mut XdpBuff::load(&mut mem, &[0; 60]).unwrap(), 0),
            Ok(10_000_000)
        );
    }
}
