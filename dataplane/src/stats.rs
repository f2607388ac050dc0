//! Per-worker counters and the control thread's view of them.
//!
//! Each worker owns one cache-aligned [`WorkerCounters`]: it keeps running totals in locals and
//! publishes them with relaxed stores once per batch, so no two workers ever write the same cache
//! line and the packet path never does an atomic read-modify-write. Program time goes into a
//! worker-local `hdrhistogram`, merged into the shared one every few milliseconds with a
//! `try_lock` that never makes the worker wait. The control thread reads, differences and
//! prints.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Why a frame was dropped other than by `XDP_DROP`.
pub const DROP_REASONS: [&str; 7] = [
    "aborted",
    "fault",
    "pass_dropped",
    "redirect_unsupported",
    "tx_ring_full",
    "bad_frame",
    "redirect_full",
];
pub const DROP_ABORTED: usize = 0;
pub const DROP_FAULT: usize = 1;
pub const DROP_PASS: usize = 2;
pub const DROP_REDIRECT: usize = 3;
pub const DROP_TX_FULL: usize = 4;
pub const DROP_BAD_FRAME: usize = 5;
/// A redirect to another port whose worker had no buffer lent out for it (it is behind), or
/// an `XSKMAP` frame its application TAP device did not take.
pub const DROP_REDIRECT_FULL: usize = 6;

/// Names of the XDP verdicts, by value.
pub const VERDICTS: [&str; 5] = ["aborted", "drop", "pass", "tx", "redirect"];

/// The kernel-side drop counters of a socket (`XDP_STATISTICS`), by name.
pub const KERNEL_DROPS: [&str; 3] = ["rx_dropped", "rx_ring_full", "fill_ring_empty"];

/// One worker's counters, written only by that worker.
#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerCounters {
    pub rx: AtomicU64,
    pub tx: AtomicU64,
    pub verdicts: [AtomicU64; 5],
    pub drops: [AtomicU64; DROP_REASONS.len()],
    pub kernel: [AtomicU64; KERNEL_DROPS.len()],
    /// Program time per packet (ns), recorded once per batch.
    pub hist: Mutex<Histogram<u64>>,
    /// The id of the program this worker runs (its epoch for program replacement; 0 before
    /// the first batch).
    pub prog_id: AtomicU64,
    /// Runs of that program and the time in it (ns, timed per batch), since it was adopted.
    pub run_cnt: AtomicU64,
    pub run_ns: AtomicU64,
}

impl Default for WorkerCounters {
    fn default() -> Self {
        Self {
            rx: AtomicU64::new(0),
            tx: AtomicU64::new(0),
            verdicts: Default::default(),
            drops: Default::default(),
            kernel: Default::default(),
            hist: Mutex::new(new_histogram()),
            prog_id: AtomicU64::new(0),
            run_cnt: AtomicU64::new(0),
            run_ns: AtomicU64::new(0),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 10 s, 3 significant digits.
#[must_use]
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("static bounds are valid")
}

/// A plain copy of a worker's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub rx: u64,
    pub tx: u64,
    pub verdicts: [u64; 5],
    pub drops: [u64; DROP_REASONS.len()],
    pub kernel: [u64; KERNEL_DROPS.len()],
}

impl WorkerCounters {
    /// The current totals.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            rx: l(&self.rx),
            tx: l(&self.tx),
            verdicts: std::array::from_fn(|i| l(&self.verdicts[i])),
            drops: std::array::from_fn(|i| l(&self.drops[i])),
            kernel: std::array::from_fn(|i| l(&self.kernel[i])),
        }
    }

    /// Publishes a worker's running totals.
    pub fn publish(&self, s: &Snapshot) {
        let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        st(&self.rx, s.rx);
        st(&self.tx, s.tx);
        for i in 0..5 {
            st(&self.verdicts[i], s.verdicts[i]);
        }
        for i in 0..DROP_REASONS.len() {
            st(&self.drops[i], s.drops[i]);
        }
        for i in 0..KERNEL_DROPS.len() {
            st(&self.kernel[i], s.kernel[i]);
        }
    }

    /// A worker now runs program `id`: its run counters restart, then the id is published.
    pub fn adopt(&self, id: u64) {
        self.run_cnt.store(0, Ordering::Relaxed);
        self.run_ns.store(0, Ordering::Relaxed);
        self.prog_id.store(id, Ordering::Release);
    }

    /// Publishes the run count and time of the current program.
    #[inline]
    pub fn publish_runs(&self, cnt: u64, ns: u64) {
        self.run_cnt.store(cnt, Ordering::Relaxed);
        self.run_ns.store(ns, Ordering::Relaxed);
    }

    /// Takes the histogram recorded since the last call.
    #[must_use]
    pub fn take_histogram(&self) -> Histogram<u64> {
        let mut h = self.hist.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let out = h.clone();
        h.reset();
        out
    }
}

impl Snapshot {
    /// `self - earlier`, field by field.
    #[must_use]
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            rx: self.rx - earlier.rx,
            tx: self.tx - earlier.tx,
            verdicts: std::array::from_fn(|i| self.verdicts[i] - earlier.verdicts[i]),
            drops: std::array::from_fn(|i| self.drops[i] - earlier.drops[i]),
            kernel: std::array::from_fn(|i| self.kernel[i] - earlier.kernel[i]),
        }
    }
}

/// One stats line for one queue over `secs` seconds.
#[must_use]
pub fn line(label: &str, d: &Snapshot, secs: f64, hist: &Histogram<u64>) -> String {
    let secs = secs.max(1e-9);
    let mut s = format!("{label}: rx {} tx {} |", rate(d.rx as f64 / secs), rate(d.tx as f64 / secs));
    for (name, v) in VERDICTS.iter().zip(d.verdicts) {
        let _ = write!(s, " {name} {v}");
    }
    s.push_str(" | drops");
    let mut any = false;
    for (name, v) in DROP_REASONS.iter().zip(d.drops).chain(KERNEL_DROPS.iter().zip(d.kernel)) {
        if v > 0 {
            let _ = write!(s, " {name} {v}");
            any = true;
        }
    }
    if !any {
        s.push_str(" 0");
    }
    if hist.is_empty() {
        s.push_str(" | prog ns/pkt -");
    } else {
        let _ = write!(
            s,
            " | prog ns/pkt p50 {} p99 {}",
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99)
        );
    }
    s
}

fn rate(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2} Mpps", pps / 1e6)
    } else if pps >= 1e3 {
        format!("{:.1} kpps", pps / 1e3)
    } else {
        format!("{pps:.0} pps")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_cache_aligned() {
        assert_eq!(std::mem::align_of::<WorkerCounters>(), 64);
    }

    #[test]
    fn lines_show_rates_verdicts_and_drop_reasons() {
        let c = WorkerCounters::default();
        let mut s = Snapshot { rx: 2_000_000, tx: 1_500_000, ..Snapshot::default() };
        s.verdicts[3] = 1_500_000;
        s.drops[DROP_ABORTED] = 7;
        c.publish(&s);
        let mut h = new_histogram();
        h.record(40).unwrap();
        let text = line("eth1/q0", &c.snapshot().since(&Snapshot::default()), 1.0, &h);
        assert!(
            text.starts_with("eth1/q0: rx 2.00 Mpps tx 1.50 Mpps | aborted 0 drop 0 pass 0 tx 1500000"),
            "{text}"
        );
        assert!(text.contains("drops aborted 7"), "{text}");
        assert!(text.contains("p50 40"), "{text}");
    }
}
