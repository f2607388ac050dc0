//! Measuring: send on one interface, count what arrives on another (or the same), per second
//! and overall, and time each frame from the sender's stamp to its arrival.
//!
//! The receiver is an AF_PACKET socket on the receiving interface (`recvmmsg` batches, a 64 MiB
//! receive buffer): it needs no XDP program on that interface, so it works beside whatever the
//! user attached there (a dataplane reflecting the frames, or nothing). A frame counts as
//! received when it carries this run's cookie; each sequence number counts once (a second copy
//! is a duplicate). `lost = sent - received`, exactly; frames the receiver's own socket dropped
//! (it fell behind) are reported apart, as `receiver_drops`, and are part of `lost`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use xsk::packet::PacketSocket;

use crate::send::{self, SendConfig, SendError, Totals, Used};
use crate::stamp::{StampAt, clock_ns};

/// After the sender finishes, how long to wait for stragglers once arrivals stop.
const DRAIN_IDLE: Duration = Duration::from_millis(200);
const RX_BATCH: usize = 64;
const RX_CAP: usize = 2048;

/// What can go wrong in a bench.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Send(#[from] SendError),
    #[error("interface {name} does not exist")]
    NoInterface { name: String },
    #[error("cannot open an AF_PACKET socket on {name} to receive: {source}{hint}",
            hint = if source.raw_os_error() == Some(libc::EPERM) { " (needs root or CAP_NET_RAW)" } else { "" })]
    Receiver {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("receiver failed: {0}")]
    Receive(String),
}

/// Latency percentiles, nanoseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// One second (or the last part of one) of a run.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Interval {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    pub sent: u64,
    pub received: u64,
    pub tx_pps: f64,
    pub rx_pps: f64,
    pub tx_gbps: f64,
    pub rx_gbps: f64,
}

/// The result of a bench.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
    pub tx_iface: String,
    pub rx_iface: String,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub receiver_drops: u64,
    /// Sending time (first frame to last completion), seconds.
    pub elapsed_s: f64,
    pub tx_pps: f64,
    pub tx_gbps: f64,
    pub rx_pps: f64,
    pub rx_gbps: f64,
    pub latency: Latency,
    pub seconds: Vec<Interval>,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct RxCounters {
    frames: AtomicU64,
    bytes: AtomicU64,
}

struct RxResult {
    duplicates: u64,
    drops: u64,
    hist: Histogram<u64>,
}

/// Counts distinct sequence numbers in a bitset that grows with the highest one seen.
#[derive(Debug, Default)]
struct Seen(Vec<u64>);

impl Seen {
    /// Marks `seq`; false when it was already marked.
    fn insert(&mut self, seq: u32) -> bool {
        let (w, b) = (seq as usize / 64, seq % 64);
        if w >= self.0.len() {
            self.0.resize((w + 1).next_power_of_two(), 0);
        }
        let fresh = self.0[w] & (1 << b) == 0;
        self.0[w] |= 1 << b;
        fresh
    }
}

fn receive(
    sock: &PacketSocket,
    cookie: u32,
    at: &[StampAt],
    counters: &RxCounters,
    stop: &AtomicBool,
) -> std::io::Result<RxResult> {
    let mut buf = vec![0u8; RX_BATCH * RX_CAP];
    let mut lens = [0usize; RX_BATCH];
    let mut seen = Seen::default();
    let mut duplicates = 0;
    let mut drops = 0;
    // 1 ns to 1 h at 3 significant digits; longer waits saturate at the top.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    while !stop.load(Ordering::Relaxed) {
        let n = sock.recv_batch(&mut buf, RX_CAP, &mut lens, Duration::from_millis(20))?;
        let now = clock_ns();
        let (mut frames, mut bytes) = (0, 0);
        for (i, &len) in lens[..n].iter().enumerate() {
            let frame = &buf[i * RX_CAP..i * RX_CAP + len.min(RX_CAP)];
            // Known offsets first; then wherever the frame's payload is now (the receiving
            // stack took a VLAN tag off into metadata, or something on the way re-framed it).
            let Some((seq, sent)) = at
                .iter()
                .find_map(|a| a.read(frame, cookie))
                .or_else(|| StampAt::find(frame).and_then(|a| a.read(frame, cookie)))
            else {
                continue;
            };
            if !seen.insert(seq) {
                duplicates += 1;
                continue;
            }
            frames += 1;
            bytes += len as u64;
            hist.saturating_record(now.saturating_sub(sent).max(1));
        }
        if frames > 0 {
            counters.frames.fetch_add(frames, Ordering::Relaxed);
            counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        if n == 0 {
            drops += sock.take_drops().unwrap_or(0);
        }
    }
    drops += sock.take_drops().unwrap_or(0);
    Ok(RxResult { duplicates, drops, hist })
}

/// Runs a bench: `cfg` says what to send (its `stamp` is set here), `rx_iface` where to count;
/// sending stops early when `interrupt` is set (Ctrl-C), and what was sent is still counted.
/// `on_start` learns the mode once the sockets are open; `each_second` sees every per-second
/// interval as it ends (for live output).
///
/// # Errors
/// [`BenchError`]: bad interfaces or frames, sockets that cannot be opened, a failing thread.
pub fn run(
    mut cfg: SendConfig,
    rx_iface: &str,
    interrupt: &AtomicBool,
    on_start: impl FnOnce(Used, Option<&str>),
    mut each_second: impl FnMut(&Interval),
) -> Result<BenchReport, BenchError> {
    let cookie = (clock_ns() as u32 ^ std::process::id().rotate_left(16) ^ 0x7067_6e21) | 1;
    cfg.stamp = Some(cookie);
    let mut offsets: Vec<StampAt> = cfg.frames.iter().filter_map(|f| StampAt::find(f)).collect();
    offsets.dedup();
    let rx_index = xsk::netns::ifindex_here(rx_iface)
        .map_err(|_| BenchError::NoInterface { name: rx_iface.to_string() })?;
    let sock = PacketSocket::open(rx_index)
        .map_err(|source| BenchError::Receiver { name: rx_iface.to_string(), source })?;
    let _ = sock.set_rcvbuf(64 << 20);
    let _ = sock.take_drops();

    // The receiver starts first, so it sees the first frame.
    let rx = Arc::new(RxCounters::default());
    let rx_stop = Arc::new(AtomicBool::new(false));
    let receiver: JoinHandle<std::io::Result<RxResult>> = {
        let (rx, stop) = (Arc::clone(&rx), Arc::clone(&rx_stop));
        std::thread::Builder::new()
            .name("pktgen-rx".into())
            .spawn(move || receive(&sock, cookie, &offsets, &rx, &stop))
            .map_err(|e| BenchError::Receive(e.to_string()))?
    };
    let stop_rx = |receiver: JoinHandle<std::io::Result<RxResult>>| {
        rx_stop.store(true, Ordering::Relaxed);
        receiver
            .join()
            .map_err(|_| BenchError::Receive("panicked".into()))?
            .map_err(|e| BenchError::Receive(e.to_string()))
    };

    let running = match send::start(&cfg) {
        Ok(r) => r,
        Err(e) => {
            let _ = stop_rx(receiver);
            return Err(e.into());
        }
    };
    on_start(running.mode, running.fallback.as_deref());
    let start = running.started();
    let (mode, fallback) = (running.mode.name(), running.fallback.clone());
    let mut seconds = Vec::new();
    let mut last = (start, (0u64, 0u64), (0u64, 0u64));
    let rx_now = || (rx.frames.load(Ordering::Relaxed), rx.bytes.load(Ordering::Relaxed));
    let mut tick = start + Duration::from_secs(1);
    let mut sample = |at: Instant, tx: (u64, u64), rxc: (u64, u64), seconds: &mut Vec<Interval>| {
        let dt = at.saturating_duration_since(last.0).as_secs_f64().max(1e-9);
        let iv = Interval {
            t_s: at.saturating_duration_since(start).as_secs_f64(),
            sent: tx.0 - last.1.0,
            received: rxc.0 - last.2.0,
            tx_pps: (tx.0 - last.1.0) as f64 / dt,
            rx_pps: (rxc.0 - last.2.0) as f64 / dt,
            tx_gbps: (tx.1 - last.1.1) as f64 * 8.0 / dt / 1e9,
            rx_gbps: (rxc.1 - last.2.1) as f64 * 8.0 / dt / 1e9,
        };
        each_second(&iv);
        seconds.push(iv);
        last = (at, tx, rxc);
    };
    while !running.finished() {
        if interrupt.load(Ordering::Relaxed) {
            running.stop();
        }
        std::thread::sleep(Duration::from_millis(5));
        let now = Instant::now();
        if now >= tick {
            sample(now, running.sent(), rx_now(), &mut seconds);
            tick += Duration::from_secs(1);
        }
    }
    let totals: Totals = match running.join() {
        Ok(t) => t,
        Err(e) => {
            let _ = stop_rx(receiver);
            return Err(e.into());
        }
    };
    // Stragglers: wait until every frame is in, or arrivals stop.
    let mut seen = rx_now().0;
    let mut idle_since = Instant::now();
    while seen < totals.frames && idle_since.elapsed() < DRAIN_IDLE {
        std::thread::sleep(Duration::from_millis(2));
        let now = rx_now().0;
        if now != seen {
            seen = now;
            idle_since = Instant::now();
        }
    }
    let result = stop_rx(receiver)?;
    let (received, rx_bytes) = rx_now();
    // The tail after the last full second (the drain, when the run had an exact length).
    if seconds.last().is_none_or(|s| s.t_s < totals.elapsed.as_secs_f64() - 0.05)
        || totals.frames > seconds.iter().map(|s| s.sent).sum::<u64>()
    {
        sample(Instant::now(), (totals.frames, totals.bytes), (received, rx_bytes), &mut seconds);
    }
    let secs = totals.elapsed.as_secs_f64().max(1e-9);
    let h = &result.hist;
    let latency = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            samples: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
        }
    };
    Ok(BenchReport {
        mode,
        fallback,
        tx_iface: cfg.iface.clone(),
        rx_iface: rx_iface.to_string(),
        sent: totals.frames,
        received,
        lost: totals.frames.saturating_sub(received),
        duplicates: result.duplicates,
        receiver_drops: result.drops,
        elapsed_s: secs,
        tx_pps: totals.frames as f64 / secs,
        tx_gbps: totals.bytes as f64 * 8.0 / secs / 1e9,
        rx_pps: received as f64 / secs,
        rx_gbps: rx_bytes as f64 * 8.0 / secs / 1e9,
        latency,
        seconds,
    })
}
