//! Poll-mode workers: one per (port, queue), pinned to a core, busy-polling its AF_XDP socket.
//!
//! Per batch (up to `batch` frames): reap completions and top up the fill ring, take a burst
//! from the RX ring, run the program on each frame in place (the `XdpBuff` spans the whole UMEM
//! chunk, so `bpf_xdp_adjust_head` can grow the packet into the headroom), then act on the
//! verdict: `XDP_TX` goes back out of the same queue from wherever the program left the packet
//! start, `XDP_DROP` frees the frame, `XDP_PASS` writes it to the port's TAP device (or drops it,
//! per config), `XDP_REDIRECT` is counted and dropped (no redirect helper exists in `xdp-vm`
//! yet), `XDP_ABORTED` and faults are dropped, counted and logged at most once per second. Every
//! frame ends up in the TX ring or back on the free list before the next batch.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xdp_vm::context::{XdpBuff, action};
use xdp_vm::jit::{CompileError, JitProgram};
use xdp_vm::{Fault, Interpreter, Program, Xdp};

use crate::backend::afxdp::{Desc, Socket};
use crate::config::EngineKind;
use crate::stats::{self, Snapshot, WorkerCounters};

/// The engine a worker runs the program with. Adding an engine is one arm here.
#[derive(Debug)]
pub enum Engine {
    Interp(Box<Interpreter>),
    Jit(Box<JitProgram<Xdp>>),
}

/// The engine could not be set up for the program.
#[derive(Debug, thiserror::Error)]
#[error("cannot compile program {name} with the jit")]
pub struct EngineError {
    pub name: String,
    #[source]
    pub source: CompileError,
}

impl Engine {
    /// An engine of kind `kind` for `prog` (the JIT compiles it here).
    ///
    /// # Errors
    /// [`EngineError`] when the JIT cannot compile the program.
    pub fn new(kind: EngineKind, prog: &Program<Xdp>) -> Result<Self, EngineError> {
        match kind {
            EngineKind::Interp => Ok(Engine::Interp(Box::new(Interpreter::new()))),
            EngineKind::Jit => JitProgram::compile(prog)
                .map(|j| Engine::Jit(Box::new(j)))
                .map_err(|source| EngineError { name: prog.name().to_string(), source }),
        }
    }

    /// Runs `prog` once on `buff` with per-CPU slot `slot` (the JIT runs the program it
    /// compiled from `prog`).
    ///
    /// # Errors
    /// The program's [`Fault`].
    #[inline]
    pub fn run(&mut self, prog: &Program<Xdp>, buff: &mut XdpBuff<'_>, slot: usize) -> Result<u64, Fault> {
        match self {
            Engine::Interp(i) => i.run(prog, buff, slot),
            Engine::Jit(j) => j.run(buff, slot),
        }
    }
}

/// Where `XDP_PASS` frames go.
#[derive(Debug, Clone)]
pub enum PassTo {
    Drop,
    Tap(Arc<std::fs::File>),
}

/// One worker, ready to run.
#[derive(Debug)]
pub struct Worker {
    pub label: String,
    pub socket: Socket,
    pub ifindex: u32,
    pub queue: u32,
    pub slot: usize,
    pub core: Option<usize>,
    pub batch: usize,
    pub prog: Program<Xdp>,
    pub engine: Engine,
    pub pass: PassTo,
    pub counters: Arc<WorkerCounters>,
    pub stop: Arc<AtomicBool>,
    /// No program: every frame goes straight back out (`XDP_TX`), to measure the loop itself.
    pub no_program: bool,
}

/// How often a worker merges its histogram and reads the kernel's socket counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);
/// Empty polls before the worker sleeps in `poll(2)` (1 ms at most) instead of spinning.
const SPIN_BEFORE_SLEEP: u32 = 20_000;

impl Worker {
    /// Runs until `stop`; then waits (briefly) for sent frames to complete and returns the
    /// socket, every frame of which is back on its free list, in its fill ring or in flight.
    pub fn run(mut self) -> Socket {
        if let Some(core) = self.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        let batch = self.batch;
        let mut rx = vec![Desc::default(); batch];
        let mut tx: Vec<Desc> = Vec::with_capacity(batch);
        let mut free: Vec<u64> = Vec::with_capacity(batch);
        let mut totals = Snapshot::default();
        let mut hist = stats::new_histogram();
        let mut last_publish = Instant::now();
        let mut last_log: Option<Instant> = None;
        let mut unlogged = 0u64;
        let mut idle = 0u32;
        let mut loops = 0u32;
        while !self.stop.load(Ordering::Relaxed) {
            loops = loops.wrapping_add(1);
            if loops.is_multiple_of(256) && last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish(&mut totals, &mut hist);
                last_publish = Instant::now();
            }
            self.socket.refill();
            let n = self.socket.recv(&mut rx);
            if n == 0 {
                self.socket.kick_tx(false);
                idle += 1;
                if idle >= SPIN_BEFORE_SLEEP || self.socket.rx_needs_wakeup() {
                    self.socket.poll_rx(if idle >= SPIN_BEFORE_SLEEP { 1 } else { 0 });
                }
                continue;
            }
            idle = 0;
            totals.rx += n as u64;
            let start = Instant::now();
            for d in &rx[..n] {
                let Some((chunk, off)) = self.socket.frame_mut(d.addr) else {
                    totals.drops[stats::DROP_BAD_FRAME] += 1;
                    continue;
                };
                let base = d.addr - off as u64;
                if self.no_program {
                    totals.verdicts[action::TX as usize] += 1;
                    tx.push(*d);
                    continue;
                }
                let Ok(mut buff) = XdpBuff::new(chunk, off, d.len as usize) else {
                    totals.drops[stats::DROP_BAD_FRAME] += 1;
                    free.push(base);
                    continue;
                };
                buff.ingress_ifindex = self.ifindex;
                buff.rx_queue_index = self.queue;
                let verdict = self.engine.run(&self.prog, &mut buff, self.slot);
                match verdict {
                    Ok(v) if v == u64::from(action::TX) => {
                        totals.verdicts[action::TX as usize] += 1;
                        let addr = base + buff.headroom() as u64;
                        tx.push(Desc { addr, len: buff.packet().len() as u32, options: 0 });
                    }
                    Ok(v) if v == u64::from(action::DROP) => {
                        totals.verdicts[action::DROP as usize] += 1;
                        free.push(base);
                    }
                    Ok(v) if v == u64::from(action::PASS) => {
                        totals.verdicts[action::PASS as usize] += 1;
                        match &self.pass {
                            PassTo::Tap(f) => {
                                if (&**f).write(buff.packet()).is_err() {
                                    totals.drops[stats::DROP_PASS] += 1;
                                }
                            }
                            PassTo::Drop => totals.drops[stats::DROP_PASS] += 1,
                        }
                        free.push(base);
                    }
                    Ok(v) if v == u64::from(action::REDIRECT) => {
                        totals.verdicts[action::REDIRECT as usize] += 1;
                        totals.drops[stats::DROP_REDIRECT] += 1;
                        free.push(base);
                    }
                    Ok(v) => {
                        // XDP_ABORTED, or a value the kernel would also treat as invalid.
                        totals.verdicts[action::ABORTED as usize] += 1;
                        totals.drops[stats::DROP_ABORTED] += 1;
                        self.log_once_per_second(&mut last_log, &mut unlogged, || {
                            format!("program returned {}", if v == 0 { "XDP_ABORTED".into() } else { format!("invalid action {v}") })
                        });
                        free.push(base);
                    }
                    Err(fault) => {
                        totals.verdicts[action::ABORTED as usize] += 1;
                        totals.drops[stats::DROP_FAULT] += 1;
                        self.log_once_per_second(&mut last_log, &mut unlogged, || format!("program faulted: {fault}"));
                        free.push(base);
                    }
                }
            }
            let ns = start.elapsed().as_nanos() as u64 / n as u64;
            let _ = hist.record(ns.max(1));
            let sent = self.socket.send(&tx);
            totals.tx += sent as u64;
            for d in &tx[sent..] {
                totals.drops[stats::DROP_TX_FULL] += 1;
                self.socket.release(d.addr);
            }
            for &addr in &free {
                self.socket.release(addr);
            }
            tx.clear();
            free.clear();
            self.socket.kick_tx(false);
            self.counters.publish(&totals);
        }
        // Let what is in the TX ring go out and complete.
        let deadline = Instant::now() + Duration::from_millis(200);
        self.socket.kick_tx(true);
        while self.socket.accounting()[3] > 0 && Instant::now() < deadline {
            self.socket.refill();
            self.socket.kick_tx(true);
            std::thread::yield_now();
        }
        self.publish(&mut totals, &mut hist);
        self.socket
    }

    fn publish(&self, totals: &mut Snapshot, hist: &mut hdrhistogram::Histogram<u64>) {
        if let Ok(k) = self.socket.kernel_stats() {
            totals.kernel = [k.rx_dropped, k.rx_ring_full, k.rx_fill_ring_empty];
        }
        self.counters.publish(totals);
        if let Ok(mut shared) = self.counters.hist.try_lock() {
            let _ = shared.add(&*hist);
            hist.reset();
        }
    }

    fn log_once_per_second(&self, last: &mut Option<Instant>, unlogged: &mut u64, what: impl FnOnce() -> String) {
        *unlogged += 1;
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: {}: {} ({} such frame(s) dropped since the last warning)",
                self.label,
                what(),
                unlogged
            );
            *last = Some(Instant::now());
            *unlogged = 0;
        }
    }
}
