//! Sending: frames out of one interface as fast as it takes them, or at a given rate, over
//! AF_XDP (zero-copy or copy mode) or, where AF_XDP is unavailable, AF_PACKET.
//!
//! AF_XDP (through the project's `xsk` crate): each queue gets its own socket and UMEM; every
//! UMEM chunk is written once with a frame before the clock starts and then only recycled —
//! completed chunks go straight back into the TX ring, in batches, with a `sendto` kick only
//! when the kernel asks for one (`need_wakeup`). AF_PACKET: `sendmmsg` batches on a socket that
//! bypasses the qdisc. Each thread owns its sockets, counters and [`TokenBucket`]; the caller
//! reads the counters while the threads run.
//!
//! "Sent" counts what the kernel took: AF_XDP completions, `sendmmsg`'s count. A frame the
//! driver then drops (a veth whose peer cannot take it) is counted sent and shows as lost at
//! the receiver — `pktgen bench` says so.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use xsk::afxdp::{Desc, Socket, SocketConfig};
use xsk::packet::PacketSocket;

use crate::rate::{TokenBucket, pace};
use crate::stamp::{StampAt, clock_ns};

/// Frames per batch handed to the kernel.
pub const BATCH: u32 = 64;
/// UMEM chunk size: holds a 1514-byte frame.
const FRAME_SIZE: u32 = 2048;
/// UMEM chunks per socket (8 MiB: four huge pages when reserved).
const UMEM_FRAMES: u32 = 4096;
const TX_RING: u32 = 2048;

/// How to put frames on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// AF_XDP in whatever mode the driver offers; AF_PACKET if AF_XDP cannot bind.
    Auto,
    /// AF_XDP, zero-copy only.
    AfXdpZeroCopy,
    /// AF_XDP, copy mode.
    AfXdpCopy,
    /// AF_PACKET `sendmmsg`.
    AfPacket,
}

/// The mode a run used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    AfXdpZeroCopy,
    AfXdpCopy,
    AfPacket,
}

impl Used {
    /// The name `--mode` takes for it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AfXdpZeroCopy => "afxdp-zc",
            Self::AfXdpCopy => "afxdp-copy",
            Self::AfPacket => "afpacket",
        }
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct SendConfig {
    pub iface: String,
    /// Sent in turn (one frame per flow, or a pcap file's frames).
    pub frames: Vec<Vec<u8>>,
    /// Frames per second over all threads; `None`: as fast as the interface takes them.
    pub rate: Option<u64>,
    /// Stop after this long / this many frames; with neither, run until [`Running::stop`].
    pub duration: Option<Duration>,
    pub count: Option<u64>,
    /// Queues to send on (0..queues), one socket each.
    pub queues: u32,
    /// Threads; queue `q` is sent by thread `q % threads`.
    pub threads: u32,
    pub mode: Mode,
    /// Stamp each frame with this run cookie (see [`crate::stamp`]).
    pub stamp: Option<u32>,
}

/// What can go wrong starting a send.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("interface {name} does not exist")]
    NoInterface { name: String },
    #[error("no frames to send")]
    NoFrames,
    #[error("frame {index} is {len} bytes; frames must be 14..={max} bytes")]
    FrameLen { index: usize, len: usize, max: usize },
    #[error("frame {index} has no room for a {len}-byte stamp in an ICMP/UDP/TCP payload (bench needs one)", len = crate::stamp::STAMP_LEN)]
    NoStamp { index: usize },
    #[error("--queues {queues}: {name} has {count} tx queue(s)")]
    Queues { name: String, queues: u32, count: u32 },
    #[error("--threads {threads} must be between 1 and --queues ({queues})")]
    Threads { threads: u32, queues: u32 },
    #[error("--rate must be at least 1 frame per second")]
    Rate,
    #[error("cannot open {mode} socket on {name} queue {queue}: {source}{hint}", hint = privilege_hint(source))]
    Socket {
        mode: &'static str,
        name: String,
        queue: u32,
        #[source]
        source: io::Error,
    },
    #[error("sender thread failed: {0}")]
    Thread(String),
}

fn privilege_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::EPERM) { " (needs root or CAP_NET_RAW)" } else { "" }
}

/// One thread's counters, on its own cache line; the thread writes, anyone reads.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Counters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// When the kernel last took a frame, ns after the start.
    pub last_ns: AtomicU64,
}

/// Number of TX queues of `name` in the calling thread's network namespace (asked over
/// rtnetlink, so a thread that entered a namespace counts that namespace's interface; 1 when
/// the kernel does not say).
#[must_use]
pub fn tx_queues(name: &str) -> u32 {
    xsk::netns::queues_here(name).map_or(1, |q| q.tx.max(1))
}

enum Engine {
    Xdp(Vec<XdpTx>),
    Packet(PacketSocket),
}

/// A send in progress.
#[derive(Debug)]
pub struct Running {
    pub mode: Used,
    /// Why `auto` fell back to AF_PACKET.
    pub fallback: Option<String>,
    counters: Arc<[Counters]>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    started: Instant,
}

/// Totals of a finished send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Totals {
    pub frames: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Running {
    /// Frames and bytes sent so far, over all threads.
    #[must_use]
    pub fn sent(&self) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(f, b), c| {
            (f + c.frames.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed))
        })
    }

    /// Whether every thread has finished (its count or duration reached).
    #[must_use]
    pub fn finished(&self) -> bool {
        self.threads.iter().all(JoinHandle::is_finished)
    }

    /// Asks the threads to stop early.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// When the threads started.
    #[must_use]
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Waits for the threads and sums what they sent.
    ///
    /// # Errors
    /// A thread's error (a send call failing other than for a full queue) or panic.
    pub fn join(self) -> Result<Totals, SendError> {
        for t in self.threads {
            t.join()
                .map_err(|_| SendError::Thread("panicked".into()))?
                .map_err(|e| SendError::Thread(e.to_string()))?;
        }
        let (frames, bytes) = self.counters.iter().fold((0, 0), |(f, b), c| {
            (f + c.frames.load(Ordering::Relaxed), b + c.bytes.load(Ordering::Relaxed))
        });
        // From the start to the last frame the kernel took (not to when the threads were joined).
        let last = self.counters.iter().map(|c| c.last_ns.load(Ordering::Relaxed)).max().unwrap_or(0);
        Ok(Totals { frames, bytes, elapsed: Duration::from_nanos(last) })
    }
}

/// Checks `cfg`, opens the sockets (reporting any failure before a frame goes out) and starts
/// the threads.
///
/// # Errors
/// [`SendError`] naming what was wrong.
pub fn start(cfg: &SendConfig) -> Result<Running, SendError> {
    if cfg.rate == Some(0) {
        return Err(SendError::Rate);
    }
    if cfg.frames.is_empty() {
        return Err(SendError::NoFrames);
    }
    let max = FRAME_SIZE as usize;
    if let Some((index, f)) = cfg.frames.iter().enumerate().find(|(_, f)| f.len() < 14 || f.len() > max) {
        return Err(SendError::FrameLen { index, len: f.len(), max });
    }
    let stamps = match cfg.stamp {
        None => None,
        Some(_) => Some(
            cfg.frames
                .iter()
                .enumerate()
                .map(|(index, f)| StampAt::find(f).ok_or(SendError::NoStamp { index }))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ifindex = xsk::netns::ifindex_here(&cfg.iface)
        .map_err(|_| SendError::NoInterface { name: cfg.iface.clone() })?;
    let count = tx_queues(&cfg.iface);
    if cfg.queues == 0 || cfg.queues > count {
        return Err(SendError::Queues { name: cfg.iface.clone(), queues: cfg.queues, count });
    }
    if cfg.threads == 0 || cfg.threads > cfg.queues {
        return Err(SendError::Threads { threads: cfg.threads, queues: cfg.queues });
    }

    let (mode, fallback, mut engines) = open(cfg, ifindex)?;
    let threads = cfg.threads as usize;
    let counters: Arc<[Counters]> = (0..threads).map(|_| Counters::default()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let _ = clock_ns();
    let deadline = cfg.duration.map(|d| started + d);
    let mut handles = Vec::with_capacity(threads);
    for t in (0..threads).rev() {
        let engine = engines.pop().ok_or_else(|| SendError::Thread("no engine".into()))?;
        let share = |total: u64| total / threads as u64 + u64::from((t as u64) < total % threads as u64);
        let job = Job {
            frames: cfg.frames.clone(),
            stamps: stamps.clone(),
            cookie: cfg.stamp.unwrap_or(0),
            seq_step: threads as u32,
            seq_first: t as u32,
            // The rate splits like the count, so the threads together hit it exactly.
            rate: cfg.rate.map(share),
            count: cfg.count.map(share),
            deadline,
            started,
        };
        let counters = Arc::clone(&counters);
        let stop = Arc::clone(&stop);
        handles.push(
            std::thread::Builder::new()
                .name(format!("pktgen-tx{t}"))
                .spawn(move || job.run(engine, &counters[t], &stop))
                .map_err(|e| SendError::Thread(e.to_string()))?,
        );
    }
    handles.reverse();
    Ok(Running { mode, fallback, counters, stop, threads: handles, started })
}

/// Opens one engine per thread.
fn open(cfg: &SendConfig, ifindex: u32) -> Result<(Used, Option<String>, Vec<Engine>), SendError> {
    let zero_copy = match cfg.mode {
        Mode::AfPacket => return Ok((Used::AfPacket, None, open_packet(cfg, ifindex)?)),
        Mode::Auto => None,
        Mode::AfXdpZeroCopy => Some(true),
        Mode::AfXdpCopy => Some(false),
    };
    let mut per_thread: Vec<Vec<XdpTx>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    let mut used = Used::AfXdpZeroCopy;
    for queue in 0..cfg.queues {
        match XdpTx::open(ifindex, queue, zero_copy, &cfg.frames) {
            Ok(tx) => {
                if !tx.sock.zero_copy() {
                    used = Used::AfXdpCopy;
                }
                per_thread[(queue % cfg.threads) as usize].push(tx);
            }
            Err(source) => {
                let eperm = source.raw_os_error() == Some(libc::EPERM);
                if cfg.mode == Mode::Auto && !eperm {
                    let why = format!("AF_XDP on {} queue {queue}: {source}", cfg.iface);
                    return Ok((Used::AfPacket, Some(why), open_packet(cfg, ifindex)?));
                }
                let mode = match cfg.mode {
                    Mode::AfXdpZeroCopy => "a zero-copy AF_XDP",
                    Mode::AfXdpCopy => "a copy-mode AF_XDP",
                    _ => "an AF_XDP",
                };
                return Err(SendError::Socket { mode, name: cfg.iface.clone(), queue, source });
            }
        }
    }
    Ok((used, None, per_thread.into_iter().map(Engine::Xdp).collect()))
}

fn open_packet(cfg: &SendConfig, ifindex: u32) -> Result<Vec<Engine>, SendError> {
    (0..cfg.threads)
        .map(|t| {
            PacketSocket::open(ifindex).map(Engine::Packet).map_err(|source| SendError::Socket {
                mode: "an AF_PACKET",
                name: cfg.iface.clone(),
                queue: t,
                source,
            })
        })
        .collect()
}

/// One AF_XDP socket sending prefilled frames.
struct XdpTx {
    sock: Socket,
    /// Per UMEM chunk: which of the frames it holds.
    holds: Vec<u32>,
    /// Chunks ours, filled, ready to go.
    ready: Vec<u64>,
    /// In the TX ring or the kernel's hands.
    in_flight: u64,
}

impl XdpTx {
    fn open(ifindex: u32, queue: u32, zero_copy: Option<bool>, frames: &[Vec<u8>]) -> io::Result<Self> {
        let cfg = SocketConfig {
            ifindex,
            queue,
            frames: UMEM_FRAMES,
            frame_size: FRAME_SIZE,
            // Nothing is received: the smallest rings the kernel takes (it insists on a fill ring).
            rx_ring: 64,
            fill_ring: 64,
            tx_ring: TX_RING,
            completion_ring: TX_RING,
            zero_copy,
            busy_poll: None,
        };
        // The kernel frees a closed socket's hold on its queue from a work queue, so binding the
        // same queue right after another socket closed can meet EBUSY for a moment.
        let until = Instant::now() + Duration::from_secs(1);
        let sock = loop {
            match Socket::new(&cfg) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let mut tx = Self { sock, holds: vec![0; UMEM_FRAMES as usize], ready: Vec::new(), in_flight: 0 };
        let mut k = 0usize;
        while let Some(addr) = tx.sock.alloc() {
            let frame = &frames[k % frames.len()];
            let (chunk, _) =
                tx.sock.frame_mut(addr).ok_or_else(|| io::Error::other("fresh chunk not ours"))?;
            chunk[..frame.len()].copy_from_slice(frame);
            tx.holds[(addr / u64::from(FRAME_SIZE)) as usize] = (k % frames.len()) as u32;
            tx.ready.push(addr);
            k += 1;
        }
        // Oldest-written first, so the flows go out in order.
        tx.ready.reverse();
        Ok(tx)
    }

    /// Takes completed chunks back; returns (frames, bytes) completed.
    fn reap(&mut self, frames: &[Vec<u8>]) -> (u64, u64) {
        let n = self.sock.complete() as u64;
        let mut bytes = 0;
        let start = self.ready.len();
        while let Some(addr) = self.sock.alloc() {
            bytes += frames[self.holds[(addr / u64::from(FRAME_SIZE)) as usize] as usize].len() as u64;
            self.ready.push(addr);
        }
        // Freshly completed chunks went on top of the free list; keep the ready list FIFO-ish
        // by sending the older ones first.
        self.ready[start..].reverse();
        self.in_flight -= n;
        (n, bytes)
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Xdp(s) => write!(f, "Xdp({} sockets)", s.len()),
            Self::Packet(_) => write!(f, "Packet"),
        }
    }
}

/// One thread's share of the work.
struct Job {
    frames: Vec<Vec<u8>>,
    stamps: Option<Vec<StampAt>>,
    cookie: u32,
    seq_first: u32,
    seq_step: u32,
    rate: Option<u64>,
    count: Option<u64>,
    deadline: Option<Instant>,
    started: Instant,
}

impl Job {
    fn run(self, engine: Engine, counters: &Counters, stop: &AtomicBool) -> io::Result<()> {
        match engine {
            Engine::Xdp(socks) => self.run_xdp(socks, counters, stop),
            Engine::Packet(sock) => self.run_packet(&sock, counters, stop),
        }
    }

    fn bucket(&self) -> Option<TokenBucket> {
        self.rate.map(|r| TokenBucket::new(r as f64, BATCH, self.started))
    }

    /// How many frames may go now (`0`: the end is reached); waits for tokens when rate-limited.
    fn allowance(&self, bucket: &mut Option<TokenBucket>, queued: u64, stop: &AtomicBool) -> Option<u32> {
        let left = self.count.map_or(u64::MAX, |c| c - queued);
        if left == 0 || stop.load(Ordering::Relaxed) {
            return None;
        }
        let want = BATCH.min(u32::try_from(left).unwrap_or(u32::MAX));
        let Some(b) = bucket else {
            return if self.deadline.is_some_and(|d| Instant::now() >= d) { None } else { Some(want) };
        };
        loop {
            let mut now = Instant::now();
            if let Some(d) = self.deadline
                && now >= d
            {
                // The tokens earned up to the deadline still go out (a stall just before it
                // must not shorten the run); none after it.
                now = d;
            }
            let got = b.take(want, now);
            if self.deadline.is_some_and(|d| now >= d) {
                return (got > 0).then_some(got);
            }
            if got > 0 {
                return Some(got);
            }
            let wait = b.wait_for(want.min(16));
            let wait = self.deadline.map_or(wait, |d| wait.min(d.saturating_duration_since(now)));
            pace(wait.min(Duration::from_millis(10)));
        }
    }

    fn run_xdp(self, mut socks: Vec<XdpTx>, counters: &Counters, stop: &AtomicBool) -> io::Result<()> {
        let mut bucket = self.bucket();
        let mut seq = self.seq_first;
        let mut queued = 0u64;
        let mut descs = Vec::with_capacity(BATCH as usize);
        let mut next = 0usize;
        let account = |socks: &mut Vec<XdpTx>| {
            for s in socks.iter_mut() {
                let (f, b) = s.reap(&self.frames);
                if f > 0 {
                    counters.frames.fetch_add(f, Ordering::Relaxed);
                    counters.bytes.fetch_add(b, Ordering::Relaxed);
                    counters.last_ns.store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
        };
        'send: loop {
            account(&mut socks);
            let Some(got) = self.allowance(&mut bucket, queued, stop) else { break 'send };
            // Round-robin over this thread's sockets.
            let idx = next % socks.len();
            let s = &mut socks[idx];
            next = next.wrapping_add(1);
            let n = got.min(s.ready.len() as u32);
            descs.clear();
            for _ in 0..n {
                let Some(addr) = s.ready.pop() else { break };
                let k = s.holds[(addr / u64::from(FRAME_SIZE)) as usize] as usize;
                if let Some(stamps) = &self.stamps {
                    if let Some((chunk, _)) = s.sock.frame_mut(addr) {
                        stamps[k].write(chunk, self.cookie, seq, clock_ns());
                    }
                    seq = seq.wrapping_add(self.seq_step);
                }
                descs.push(Desc { addr, len: self.frames[k].len() as u32, options: 0 });
            }
            let took = s.sock.send(&descs);
            for d in descs[took..].iter().rev() {
                s.ready.push(d.addr);
            }
            if let Some(b) = &mut bucket {
                // Tokens for frames that did not go (no chunk back yet, or the ring was full).
                b.refund(got - took as u32);
            }
            if self.stamps.is_some() && took < descs.len() {
                // Frames that did not go give their sequence numbers back: the next ones sent
                // take them, so the numbers the receiver sees have no gaps of ours.
                seq = seq.wrapping_sub(self.seq_step * (descs.len() - took) as u32);
            }
            s.in_flight += took as u64;
            queued += took as u64;
            s.sock.kick_tx(false);
            if took == 0 {
                // Ring full or no chunk back yet: let the kernel catch up.
                s.sock.kick_tx(true);
                std::thread::yield_now();
            }
        }
        // Drain: everything queued goes out (or the kernel gives it back) before we report.
        let until = Instant::now() + Duration::from_secs(1);
        while socks.iter().any(|s| s.in_flight > 0) && Instant::now() < until {
            for s in &socks {
                s.sock.kick_tx(true);
            }
            account(&mut socks);
            std::thread::yield_now();
        }
        Ok(())
    }

    fn run_packet(self, sock: &PacketSocket, counters: &Counters, stop: &AtomicBool) -> io::Result<()> {
        let mut bucket = self.bucket();
        let mut seq = self.seq_first;
        let mut queued = 0u64;
        let mut k = 0usize;
        // A batch of frame copies, stamped in place.
        let mut bufs: Vec<Vec<u8>> =
            (0..BATCH as usize).map(|i| self.frames[i % self.frames.len()].clone()).collect();
        let mut which: Vec<usize> = (0..BATCH as usize).map(|i| i % self.frames.len()).collect();
        while let Some(n) = self.allowance(&mut bucket, queued, stop) {
            let n = n as usize;
            for i in 0..n {
                let f = (k + i) % self.frames.len();
                if which[i] != f {
                    bufs[i].clear();
                    bufs[i].extend_from_slice(&self.frames[f]);
                    which[i] = f;
                }
                if let Some(stamps) = &self.stamps {
                    stamps[f].write(
                        &mut bufs[i],
                        self.cookie,
                        seq.wrapping_add(self.seq_step * i as u32),
                        clock_ns(),
                    );
                }
            }
            let refs: Vec<&[u8]> = bufs[..n].iter().map(Vec::as_slice).collect();
            let took = match sock.send_batch(&refs) {
                Ok(t) => t,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN | libc::EBUSY)) => 0,
                Err(e) => return Err(e),
            };
            let bytes: usize = bufs[..took].iter().map(Vec::len).sum();
            if took > 0 {
                counters.frames.fetch_add(took as u64, Ordering::Relaxed);
                counters.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                counters.last_ns.store(self.started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            if let Some(b) = &mut bucket {
                b.refund((n - took) as u32);
            }
            queued += took as u64;
            k = (k + took) % self.frames.len();
            seq = seq.wrapping_add(self.seq_step * took as u32);
            if took < n {
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

/// One second (or the last part of one) of a send.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TxInterval {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    pub sent: u64,
    pub pps: f64,
    pub gbps: f64,
}

/// The result of [`run`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SendReport {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub iface: String,
    pub queues: u32,
    pub threads: u32,
    /// The rate asked for (`None`: max).
    pub rate: Option<u64>,
    pub sent: u64,
    pub bytes: u64,
    pub elapsed_s: f64,
    pub pps: f64,
    /// Frame bytes (no preamble, FCS or gap) per second, in Gbit/s.
    pub gbps: f64,
    pub seconds: Vec<TxInterval>,
}

/// Sends `cfg` to the end (or until `interrupt` is set: Ctrl-C), calling `on_start` with the mode used (and why `auto` fell back, if
/// it did) once the sockets are open, and `each_second` as each second ends.
///
/// # Errors
/// As [`start`] and [`Running::join`].
pub fn run(
    cfg: &SendConfig,
    interrupt: &AtomicBool,
    on_start: impl FnOnce(Used, Option<&str>),
    mut each_second: impl FnMut(&TxInterval),
) -> Result<SendReport, SendError> {
    let running = start(cfg)?;
    on_start(running.mode, running.fallback.as_deref());
    let start_at = running.started();
    let mut last = (start_at, 0u64, 0u64);
    let mut seconds = Vec::new();
    let mut sample = |at: Instant, (f, b): (u64, u64), seconds: &mut Vec<TxInterval>| {
        let dt = at.saturating_duration_since(last.0).as_secs_f64().max(1e-9);
        let iv = TxInterval {
            t_s: at.saturating_duration_since(start_at).as_secs_f64(),
            sent: f - last.1,
            pps: (f - last.1) as f64 / dt,
            gbps: (b - last.2) as f64 * 8.0 / dt / 1e9,
        };
        each_second(&iv);
        seconds.push(iv);
        last = (at, f, b);
    };
    let mut tick = start_at + Duration::from_secs(1);
    while !running.finished() {
        if interrupt.load(Ordering::Relaxed) {
            running.stop();
        }
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        if now >= tick {
            sample(now, running.sent(), &mut seconds);
            tick += Duration::from_secs(1);
        }
    }
    let (mode, fallback) = (running.mode.name(), running.fallback.clone());
    let totals = running.join()?;
    // The tail after the last full second (the drain, when the run had an exact length).
    if seconds.last().is_none_or(|s: &TxInterval| s.t_s < totals.elapsed.as_secs_f64() - 0.05)
        || totals.frames > seconds.iter().map(|s| s.sent).sum::<u64>()
    {
        sample(Instant::now(), (totals.frames, totals.bytes), &mut seconds);
    }
    let secs = totals.elapsed.as_secs_f64().max(1e-9);
    Ok(SendReport {
        mode,
        fallback,
        iface: cfg.iface.clone(),
        queues: cfg.queues,
        threads: cfg.threads,
        rate: cfg.rate,
        sent: totals.frames,
        bytes: totals.bytes,
        elapsed_s: secs,
        pps: totals.frames as f64 / secs,
        gbps: totals.bytes as f64 * 8.0 / secs / 1e9,
        seconds,
    })
}
