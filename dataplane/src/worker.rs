//! Poll-mode workers: one per (port, queue), pinned to a core, busy-polling its [`Queue`] — an
//! AF_XDP socket or a DPDK port queue; the loop and the verdict handling are the same for both.
//!
//! Per batch (up to `batch` frames): take a burst from the queue, run the program on each frame
//! in place (the `XdpBuff` spans the frame's whole buffer, so `bpf_xdp_adjust_head` can grow the
//! packet into the headroom), then act on the verdict: `XDP_TX` goes back out of the same queue
//! from wherever the program left the packet start, `XDP_DROP` frees the frame, `XDP_PASS`
//! writes it to the port's TAP device (or drops it, per config), `XDP_REDIRECT` to an interface
//! (`bpf_redirect`, or a `DEVMAP` entry) goes out of the same queue when that is the frame's own
//! port and, copied once into a buffer that port's worker lent (see [`crate::redirect`]), out
//! of a worker of the configured port with that interface index otherwise; a `DEVMAP`
//! broadcast (`BPF_F_BROADCAST`, optionally `BPF_F_EXCLUDE_INGRESS`) does that for every
//! interface in the map; an `XSKMAP` redirect to the frame's own queue goes to the port's
//! AF_XDP application TAP device (`XskTo`). Redirects elsewhere (an interface that is not a
//! port, an `XSKMAP` slot of another queue) are counted and dropped, as are `XDP_ABORTED` and
//! faults, counted and logged at most once per second. Every frame is sent or released before
//! the next batch.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xdp_vm::context::{Redirect, XdpBuff, action};
use xdp_vm::jit::{CompileError, JitWorker};
use xdp_vm::{Fault, Interpreter, Program, Xdp};

use crate::backend::queue::Queue;
use crate::control::swap::{Loaded, ProgSlot};
use crate::redirect::{Inbox, Miss, Outbox, Quiesce};
use crate::stats::{self, Snapshot, WorkerCounters};

/// The engine a worker runs the program with. Adding an engine is one arm here.
#[derive(Debug)]
pub enum Engine {
    /// The interpreter, run with per-CPU slot `slot`.
    Interp { interp: Box<Interpreter>, slot: usize },
    /// Compiled once per program, shared by every worker; each keeps its own run frame
    /// ([`JitWorker`]: environment and stack filled in once, for its slot).
    Jit(Box<JitWorker<Xdp>>),
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
    /// The engine for a loaded program, run with per-CPU slot `slot` (no compiling: the JIT's
    /// code is shared).
    #[must_use]
    pub fn for_loaded(loaded: &Loaded, slot: usize) -> Self {
        match &loaded.jit {
            Some(j) => Engine::Jit(Box::new(JitWorker::new(j.clone(), slot))),
            None => Engine::Interp { interp: Box::new(Interpreter::new()), slot },
        }
    }

    /// Runs `prog` once on `buff` with the per-CPU slot the engine was made for (the JIT runs
    /// the program it compiled from `prog`).
    ///
    /// # Errors
    /// The program's [`Fault`].
    #[inline]
    pub fn run(&mut self, prog: &Program<Xdp>, buff: &mut XdpBuff<'_>) -> Result<u64, Fault> {
        match self {
            Engine::Interp { interp, slot } => interp.run(prog, buff, *slot),
            Engine::Jit(j) => j.run(buff),
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
pub struct Worker<Q: Queue> {
    pub label: String,
    /// Where its frames come from and go to.
    pub queue: Q,
    /// `ingress_ifindex` as the program reads it.
    pub ifindex: u32,
    /// `rx_queue_index` as the program reads it.
    pub queue_id: u32,
    pub slot: usize,
    pub core: Option<usize>,
    pub batch: usize,
    /// Prefetch each received frame's first cache line before running the program on the batch.
    pub prefetch: bool,
    /// Where the program comes from; checked once per batch (see [`crate::control::swap`]).
    pub program: Arc<ProgSlot>,
    pub pass: PassTo,
    pub counters: Arc<WorkerCounters>,
    pub stop: Arc<AtomicBool>,
    /// No program: every frame goes straight back out (`XDP_TX`), to measure the loop itself.
    pub no_program: bool,
    /// Where `XDP_REDIRECT` frames for other ports go: buffers their workers lent this one.
    pub outbox: Outbox<Q::Lent>,
    /// The buffers this worker lends to other ports' workers, and takes back filled to send.
    pub inbox: Inbox<Q::Lent>,
    /// The shutdown rendezvous of every worker sharing lanes with this one.
    pub quiesce: Arc<Quiesce>,
    /// Where `bpf_redirect_map` on an `XSKMAP` delivers the frame: the port's AF_XDP
    /// application TAP device (`None`: the program has no `XSKMAP`).
    pub xsk: Option<Arc<std::fs::File>>,
}

/// Loans each worker keeps out to each worker of another port: redirects one worker can make
/// to one other before the target's next batch takes them.
pub const LANE_DEPTH: usize = 256;

/// How often a worker merges its histogram and reads the device's drop counters.
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// One batch in this many is timed. A clock read is not free: on the KVM guests this project
/// runs on, `Instant::now()` costs 100-260 ns (the TSC read traps to the hypervisor), so timing
/// every batch cost more than the rest of the loop and, at low rates (one frame per batch),
/// showed up as ~250 ns of "program time" per frame.
const TIME_EVERY: u32 = 16;

/// The fixed cost of timing an interval (`Instant::now()` then `elapsed()` with nothing in
/// between), the least of a few tries: subtracted from each timed batch.
fn timer_overhead_ns() -> u64 {
    (0..32).map(|_| Instant::now().elapsed().as_nanos() as u64).min().unwrap_or(0)
}

/// What becomes of one frame after its verdict.
enum Fate<F> {
    Send(F),
    Release(F),
}

/// A worker's running totals and its rate-limited log.
#[derive(Default)]
struct Tally {
    totals: Snapshot,
    last_log: Option<Instant>,
    unlogged: u64,
    /// Runs of the current program since it was adopted; the time in it (ns) over the timed
    /// batches, and the runs in those.
    runs: u64,
    run_ns: u64,
    timed_runs: u64,
    /// A broadcast's target interfaces, reused from frame to frame.
    targets: Vec<u32>,
}

/// The program a worker runs now, with its engine.
struct Current {
    loaded: Arc<Loaded>,
    engine: Engine,
}

impl<Q: Queue> Worker<Q> {
    /// Runs until `stop`; then lets what was sent go out (briefly) and returns the queue, every
    /// frame of which has been sent or released.
    pub fn run(mut self) -> Q {
        if let Some(core) = self.core {
            core_affinity::set_for_current(core_affinity::CoreId { id: core });
        }
        crate::uprobe::set_slot(self.slot);
        let mut rx = vec![Q::Frame::default(); self.batch];
        let mut tx: Vec<Q::Frame> = Vec::with_capacity(self.batch);
        let mut tally = Tally::default();
        let mut hist = stats::new_histogram();
        let mut last_publish = Instant::now();
        let mut idle = 0u32;
        let mut loops = 0u32;
        let mut batches = 0u32;
        let timer_ns = timer_overhead_ns();
        let loaded = self.program.current();
        let mut cur = Current { engine: Engine::for_loaded(&loaded, self.slot), loaded };
        self.counters.adopt(cur.loaded.id);
        while !self.stop.load(Ordering::Relaxed) {
            // The epoch check, once per batch: a replaced program is taken between two batches,
            // and the old one is let go before the new id is published.
            if self.program.id() != cur.loaded.id {
                let loaded = self.program.current();
                cur = Current { engine: Engine::for_loaded(&loaded, self.slot), loaded };
                (tally.runs, tally.run_ns, tally.timed_runs) = (0, 0, 0);
                self.counters.adopt(cur.loaded.id);
            }
            loops = loops.wrapping_add(1);
            if loops.is_multiple_of(256) && last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish(&mut tally.totals, &mut hist);
                last_publish = Instant::now();
            }
            // Without a program, one iteration in TIME_EVERY is timed whole (ring upkeep, RX,
            // verdicts, TX ring writes; not the kick that hands TX to the kernel): the loop's
            // own cost per frame.
            let loop_start = (self.no_program && loops.is_multiple_of(TIME_EVERY)).then(Instant::now);
            self.take_inbox(&mut tx, &mut tally);
            let n = self.queue.recv(&mut rx);
            if n == 0 {
                if !tx.is_empty() {
                    self.send(&mut tx, &mut tally);
                }
                idle = idle.saturating_add(1);
                self.queue.idle(idle);
                continue;
            }
            idle = 0;
            tally.totals.rx += n as u64;
            crate::uprobe::site::batch(
                u64::from(self.ifindex),
                u64::from(self.queue_id),
                n as u64,
                self.slot as u64,
            );
            batches = batches.wrapping_add(1);
            if self.prefetch && !self.no_program {
                // The kernel wrote these frames from another core: start every miss at once.
                for &frame in &rx[..n] {
                    self.queue.prefetch(frame);
                }
            }
            let start = (!self.no_program && batches.is_multiple_of(TIME_EVERY)).then(Instant::now);
            for &frame in &rx[..n] {
                match self.handle(frame, &mut tally, &mut cur) {
                    Fate::Send(f) => tx.push(f),
                    Fate::Release(f) => self.queue.release(f),
                }
            }
            if let Some(start) = start {
                let batch_ns = (start.elapsed().as_nanos() as u64).saturating_sub(timer_ns);
                tally.run_ns += batch_ns;
                tally.timed_runs += n as u64;
                let _ = hist.record((batch_ns / n as u64).max(1));
            }
            self.enqueue(&mut tx, &mut tally);
            if let Some(start) = loop_start {
                let loop_ns = (start.elapsed().as_nanos() as u64).saturating_sub(timer_ns);
                let _ = hist.record((loop_ns / n as u64).max(1));
            }
            self.queue.flush();
            self.counters.publish(&tally.totals);
            // The time over every run, estimated from the timed ones.
            let run_ns = if tally.timed_runs == 0 {
                0
            } else {
                (u128::from(tally.run_ns) * u128::from(tally.runs) / u128::from(tally.timed_runs)) as u64
            };
            self.counters.publish_runs(tally.runs, run_ns);
        }
        self.close_lanes(&mut tx, &mut tally);
        self.queue.drain();
        self.publish(&mut tally.totals, &mut hist);
        self.queue
    }

    /// Runs the program on one frame and decides its fate: the verdict handling of every
    /// backend.
    #[inline]
    fn handle(&mut self, frame: Q::Frame, tally: &mut Tally, cur: &mut Current) -> Fate<Q::Frame> {
        let totals = &mut tally.totals;
        let at = (self.ifindex, self.queue_id, self.slot);
        if self.no_program {
            totals.verdicts[action::TX as usize] += 1;
            return Fate::Send(frame);
        }
        let Some(mut buff) = self.queue.xdp_buff(frame) else {
            count_drop(totals, stats::DROP_BAD_FRAME, at);
            return Fate::Release(frame);
        };
        buff.ingress_ifindex = self.ifindex;
        buff.rx_queue_index = self.queue_id;
        tally.runs += 1;
        let (ifindex, queue, slot) = (u64::from(self.ifindex), u64::from(self.queue_id), self.slot as u64);
        crate::uprobe::site::rx(ifindex, queue, buff.packet().len() as u64, slot);
        let verdict = cur.engine.run(&cur.loaded.prog, &mut buff);
        crate::uprobe::site::verdict(ifindex, queue, verdict.as_ref().map_or(u64::MAX, |v| *v), slot);
        match verdict {
            Ok(v) if v == u64::from(action::TX) => {
                totals.verdicts[action::TX as usize] += 1;
                let (start, len) = (buff.headroom(), buff.packet().len());
                self.back_out(frame, start, len, totals)
            }
            Ok(v) if v == u64::from(action::DROP) => {
                totals.verdicts[action::DROP as usize] += 1;
                Fate::Release(frame)
            }
            Ok(v) if v == u64::from(action::PASS) => {
                totals.verdicts[action::PASS as usize] += 1;
                match &self.pass {
                    PassTo::Tap(f) => {
                        if (&**f).write(buff.packet()).is_err() {
                            count_drop(totals, stats::DROP_PASS, at);
                        }
                    }
                    PassTo::Drop => count_drop(totals, stats::DROP_PASS, at),
                }
                Fate::Release(frame)
            }
            Ok(v) if v == u64::from(action::REDIRECT) => {
                totals.verdicts[action::REDIRECT as usize] += 1;
                let (start, len) = (buff.headroom(), buff.packet().len());
                match buff.redirect() {
                    Some(Redirect::Ifindex(to) | Redirect::Dev { ifindex: to, .. }) => {
                        if to != 0 && to == self.ifindex {
                            // Out of the interface it came in on: as XDP_TX.
                            return self.back_out(frame, start, len, totals);
                        }
                        forward(&self.outbox, to, buff.packet(), totals, at);
                        Fate::Release(frame)
                    }
                    Some(Redirect::Xsk { socket, .. }) => {
                        // Slot values name the queue whose socket they are; as in the kernel
                        // (`xsk_rcv`), a socket bound to another queue refuses the frame.
                        match &self.xsk {
                            Some(tap) if socket == self.queue_id => {
                                if (&**tap).write(buff.packet()).is_err() {
                                    count_drop(totals, stats::DROP_REDIRECT_FULL, at);
                                }
                            }
                            _ => count_drop(totals, stats::DROP_REDIRECT, at),
                        }
                        Fate::Release(frame)
                    }
                    Some(Redirect::Broadcast { map, exclude_ingress }) => {
                        let Some(map) = cur.loaded.prog.maps().get(map as usize) else {
                            count_drop(totals, stats::DROP_REDIRECT, at);
                            return Fate::Release(frame);
                        };
                        let mut own = false;
                        let mut to_each = |to: u32| {
                            if to == self.ifindex {
                                own |= !exclude_ingress;
                            } else {
                                forward(&self.outbox, to, buff.packet(), totals, at);
                            }
                        };
                        // The targets first (the walk holds the map's bucket locks, copying
                        // into loans does not need to), into a buffer kept between frames.
                        let mut targets = std::mem::take(&mut tally.targets);
                        targets.clear();
                        map.for_each_redirect_target(|to| targets.push(to));
                        targets.iter().for_each(|&to| to_each(to));
                        tally.targets = targets;
                        if own { self.back_out(frame, start, len, totals) } else { Fate::Release(frame) }
                    }
                    None => {
                        count_drop(totals, stats::DROP_REDIRECT, at);
                        Fate::Release(frame)
                    }
                }
            }
            Ok(v) => {
                // XDP_ABORTED, or a value the kernel would also treat as invalid.
                totals.verdicts[action::ABORTED as usize] += 1;
                count_drop(totals, stats::DROP_ABORTED, at);
                self.log_once_per_second(tally, || {
                    format!(
                        "program returned {}",
                        if v == 0 { "XDP_ABORTED".into() } else { format!("invalid action {v}") }
                    )
                });
                Fate::Release(frame)
            }
            Err(fault) => {
                totals.verdicts[action::ABORTED as usize] += 1;
                count_drop(totals, stats::DROP_FAULT, at);
                self.log_once_per_second(tally, || format!("program faulted: {fault}"));
                Fate::Release(frame)
            }
        }
    }

    /// The frame goes back out of its own queue from where the program left the packet
    /// (`start` bytes into the frame, `len` long): `XDP_TX`, and a redirect to the port itself.
    #[inline]
    fn back_out(
        &mut self,
        frame: Q::Frame,
        start: usize,
        len: usize,
        totals: &mut Snapshot,
    ) -> Fate<Q::Frame> {
        let at = (self.ifindex, self.queue_id, self.slot);
        match self.queue.reframe(frame, start, len) {
            Some(f) => Fate::Send(f),
            None => {
                count_drop(totals, stats::DROP_BAD_FRAME, at);
                Fate::Release(frame)
            }
        }
    }

    /// Sends the batch's frames; what the queue does not take is dropped and counted.
    #[inline]
    fn send(&mut self, tx: &mut Vec<Q::Frame>, tally: &mut Tally) {
        self.enqueue(tx, tally);
        self.queue.flush();
    }

    /// Puts the batch's frames in the TX ring (or the device's queue) without kicking it;
    /// what the queue does not take is dropped and counted.
    #[inline]
    fn enqueue(&mut self, tx: &mut Vec<Q::Frame>, tally: &mut Tally) {
        let sent = self.queue.send(tx);
        let at = (self.ifindex, self.queue_id, self.slot);
        if !tx.is_empty() {
            crate::uprobe::site::tx(u64::from(at.0), u64::from(at.1), sent as u64, at.2 as u64);
        }
        tally.totals.tx += sent as u64;
        for &f in &tx[sent..] {
            count_drop(&mut tally.totals, stats::DROP_TX_FULL, at);
            self.queue.release(f);
        }
        tx.clear();
    }

    /// Takes up to a batch of frames other workers redirected here, as frames of this queue,
    /// and lends them new buffers.
    #[inline]
    fn take_inbox(&mut self, tx: &mut Vec<Q::Frame>, tally: &mut Tally) {
        if !self.inbox.is_empty() {
            tally.totals.drops[stats::DROP_BAD_FRAME] += self.inbox.take(&mut self.queue, tx, self.batch);
        }
    }

    /// At shutdown: once every worker has stopped redirecting, gives back the buffers other
    /// workers lent this one; once they all have, takes back (and sends) what this one lent.
    fn close_lanes(&mut self, tx: &mut Vec<Q::Frame>, tally: &mut Tally) {
        if self.quiesce.arrive(1) {
            self.outbox.give_back();
        }
        if self.quiesce.arrive(2) {
            let (out, lost) = self.inbox.close(&mut self.queue, tx);
            tally.totals.drops[stats::DROP_BAD_FRAME] += lost;
            if out > 0 {
                let _ = writeln!(
                    std::io::stderr(),
                    "warning: {}: {out} lent frame(s) not given back",
                    self.label
                );
            }
        }
        if !tx.is_empty() {
            self.send(tx, tally);
        }
    }

    fn publish(&self, totals: &mut Snapshot, hist: &mut hdrhistogram::Histogram<u64>) {
        if let Some(d) = self.queue.device_drops() {
            totals.kernel = d;
        }
        self.counters.publish(totals);
        if let Ok(mut shared) = self.counters.hist.try_lock() {
            let _ = shared.add(&*hist);
            hist.reset();
        }
    }

    #[cold]
    fn log_once_per_second(&self, tally: &mut Tally, what: impl FnOnce() -> String) {
        tally.unlogged += 1;
        if tally.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: {}: {} ({} such frame(s) dropped since the last warning)",
                self.label,
                what(),
                tally.unlogged
            );
            tally.last_log = Some(Instant::now());
            tally.unlogged = 0;
        }
    }
}

/// Copies a redirected packet into a buffer the worker of port `to` lent (see
/// [`crate::redirect`]), counting what fails.
#[inline]
fn forward<L: crate::backend::queue::Lend>(
    outbox: &Outbox<L>,
    to: u32,
    packet: &[u8],
    totals: &mut Snapshot,
    at: (u32, u32, usize),
) {
    match outbox.send(to, at.2, packet) {
        Ok(()) => {}
        Err(Miss::NoPort) => count_drop(totals, stats::DROP_REDIRECT, at),
        Err(Miss::Full) => count_drop(totals, stats::DROP_REDIRECT_FULL, at),
        Err(Miss::TooBig) => count_drop(totals, stats::DROP_BAD_FRAME, at),
    }
}

/// Counts a frame of the packet path dropped for `reason` (a `stats::DROP_*` index) by the
/// worker of port `at` = (ifindex, queue, slot), and fires the `drop` probe site.
#[inline(always)]
fn count_drop(totals: &mut Snapshot, reason: usize, at: (u32, u32, usize)) {
    totals.drops[reason] += 1;
    crate::uprobe::site::drop(u64::from(at.0), u64::from(at.1), reason as u64, at.2 as u64);
}
