//! The traffic benches' common set-up: a namespace and veth pair of our own with a kernel sink on
//! the peer end, and the two measurements every throughput comparison makes on it.
//!
//! The peer end, inside the namespace, runs a native XDP program that counts frames in a per-CPU
//! array and drops them ([`Sink`]); every contestant is measured by that same kernel counter,
//! never by its own report.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dataplane::backend::{self, Sink};
use dataplane::kernel::{KernelProgram, XdpMode};
use dataplane::lab::{self, Lab};
use xdp_vm::elf::{Object, ProgramKind, ProgramSpec};
use xdp_vm::insn::Insn;

/// A veth pair in a namespace of its own, a counting sink attached to the peer end. Dropping it
/// detaches the sink and deletes the namespace and the pair.
#[derive(Debug)]
pub struct SinkPair {
    pub lab: Lab,
    pub sink: Sink,
}

impl SinkPair {
    /// Creates the pair: namespace `{tag}n{pid}`, interfaces `{tag}{pid}a` (here) and
    /// `{tag}{pid}b` (in the namespace, with the sink). `tag` keeps concurrent benches apart;
    /// at most 8 characters (interface names are limited to 15).
    ///
    /// # Errors
    /// When the lab cannot be built or the sink cannot be loaded or attached.
    pub fn create(tag: &str) -> anyhow::Result<Self> {
        Self::with_queues(tag, 1)
    }

    /// [`SinkPair::create`] with `queues` queues on each end.
    ///
    /// # Errors
    /// As [`SinkPair::create`].
    pub fn with_queues(tag: &str, queues: u32) -> anyhow::Result<Self> {
        let pid = std::process::id() % 100_000;
        let (ns, a, b) = (format!("{tag}n{pid}"), format!("{tag}{pid}a"), format!("{tag}{pid}b"));
        let lab = Lab::create(&ns, &a, &b, queues)?;
        let sink = lab
            .in_namespace(move || -> anyhow::Result<Sink> {
                let mut s = Sink::load(false)?;
                s.attach(backend::sys::ifindex_here(&b)?)?;
                Ok(s)
            })
            .map_err(anyhow::Error::from)??;
        Ok(Self { lab, sink })
    }

    /// Frames per second that reach the sink over the next `window`, whoever is sending.
    pub fn count_over(&self, window: Duration) -> f64 {
        let c0 = self.sink.count();
        let t0 = Instant::now();
        std::thread::sleep(window);
        (self.sink.count() - c0) as f64 / t0.elapsed().as_secs_f64()
    }

    /// Frames per second back at the peer over `window`, with the lab's generator (16 flows)
    /// sending from the peer for the whole of it.
    ///
    /// # Errors
    /// When the generator cannot start.
    pub fn measure(&self, window: Duration) -> anyhow::Result<f64> {
        self.measure_cpu(window).map(|m| m.pps)
    }

    /// [`SinkPair::measure`], also timing the sender thread's CPU over the window: everything the
    /// sending CPU does for a frame, since a veth runs the receiving end's NAPI (the program
    /// under test, or the redirect into an AF_XDP socket) in the sender's softirq.
    ///
    /// # Errors
    /// When the generator cannot start.
    pub fn measure_cpu(&self, window: Duration) -> anyhow::Result<Measured> {
        let (stop, _sent, h) = lab::spawn_generator(&self.lab, 16, 0)?;
        std::thread::sleep(Duration::from_millis(300));
        let cpu0 = threads_cpu_ns(SENDER_THREAD);
        let t0 = Instant::now();
        let pps = self.count_over(window);
        let sender_cpu_ns = threads_cpu_ns(SENDER_THREAD).saturating_sub(cpu0);
        let secs = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let _ = h.join();
        Ok(Measured { pps, sender_cpu_ns, secs })
    }

    /// Frames per second back at the peer over `window`, the peer sending the lab's frames flat
    /// out from `threads` senders at once, each one thread on an `AF_PACKET` socket: the kernel
    /// spreads the lab's 16 flows over the peer's tx queues by their hash, and veth delivers a
    /// frame sent on the peer's queue `q` to the near end's queue `q`, as a NIC's RSS spreads
    /// flows. (`AF_XDP` senders would pin each thread's frames to one queue instead.)
    ///
    /// # Errors
    /// When a sender cannot start in the namespace.
    pub fn measure_threads(&self, window: Duration, threads: u32) -> anyhow::Result<f64> {
        let mut senders = Vec::new();
        for _ in 0..threads {
            let cfg = pktgen::send::SendConfig {
                iface: self.lab.peer.clone(),
                frames: lab::frames(16),
                rate: None,
                duration: None,
                count: None,
                queues: 1,
                threads: 1,
                mode: pktgen::send::Mode::AfPacket,
                stamp: None,
            };
            match self.lab.in_namespace(move || pktgen::send::start(&cfg)) {
                Ok(Ok(r)) => senders.push(r),
                Ok(Err(e)) => return Err(stop_all(senders, e.into())),
                Err(e) => return Err(stop_all(senders, e.into())),
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let pps = self.count_over(window);
        let _ = stop_all(senders, anyhow::anyhow!(""));
        Ok(pps)
    }

    /// The kernel's round: `obj`'s first program attached as native XDP on the near end,
    /// measured as [`SinkPair::measure`] does.
    ///
    /// # Errors
    /// When the program cannot be loaded or attached, or the generator cannot start.
    pub fn kernel_round(&self, obj: &Object, window: Duration) -> anyhow::Result<f64> {
        self.kernel_round_cpu(obj, window).map(|m| m.pps)
    }

    /// [`SinkPair::kernel_round`] with the sender's CPU time ([`SinkPair::measure_cpu`]).
    ///
    /// # Errors
    /// As [`SinkPair::kernel_round`].
    pub fn kernel_round_cpu(&self, obj: &Object, window: Duration) -> anyhow::Result<Measured> {
        let prog = KernelProgram::load(obj, &obj.programs[0])?;
        let idx = backend::ifindex(&self.lab.interface).ok_or_else(|| anyhow::anyhow!("no interface"))?;
        let _link = prog.attach_xdp(idx, XdpMode::Native)?;
        self.measure_cpu(window)
    }
}

/// What [`SinkPair::measure_cpu`] saw over its window.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Frames per second back at the sink.
    pub pps: f64,
    /// CPU time of the sender thread (its syscalls and the softirq work they run) over the window.
    pub sender_cpu_ns: u64,
    /// The window's length.
    pub secs: f64,
}

impl Measured {
    /// Sender CPU per frame, for `rate` frames per second handled over the window (0 when none
    /// was).
    #[must_use]
    pub fn sender_ns_per(&self, rate: f64) -> f64 {
        if rate > 0.0 && self.secs > 0.0 { self.sender_cpu_ns as f64 / (rate * self.secs) } else { 0.0 }
    }
}

/// The name pktgen gives its first sending thread.
const SENDER_THREAD: &str = "pktgen-tx0";

/// CPU nanoseconds used so far by this process's threads named `name` (`/proc/self/task/*/comm`,
/// `schedstat`): the kernel's own accounting, exact whatever else runs on the CPU.
#[must_use]
pub fn threads_cpu_ns(name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return 0 };
    dir.filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Stops and joins `senders`, returning `e`.
fn stop_all(senders: Vec<pktgen::send::Running>, e: anyhow::Error) -> anyhow::Error {
    for r in &senders {
        r.stop();
    }
    for r in senders {
        let _ = r.join();
    }
    e
}

/// A kernel program that is just `return XDP_TX`: the reference for "no program", where ours runs
/// the worker loop alone.
#[must_use]
pub fn tx_only() -> Object {
    Object {
        license: "GPL".into(),
        maps: vec![],
        programs: vec![ProgramSpec {
            name: "tx_only".into(),
            section: "xdp".into(),
            kind: ProgramKind::Xdp,
            insns: vec![Insn::new(0xb7, 0, 0, 0, 3), Insn::new(0x95, 0, 0, 0, 0)],
        }],
    }
}
