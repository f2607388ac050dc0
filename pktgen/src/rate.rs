//! Rate limiting: a token bucket per sending thread.
//!
//! Tokens accrue at `rate` per second, up to a capacity of [`CATCH_UP`] worth of frames (at least
//! two batches). 100 ms: long enough to cover the scheduling stalls of a busy 2-core machine
//! (measured: tens of ms while other builds run), short enough that a rate measured over a second
//! is the rate asked for. A sender takes tokens before putting frames on the wire, so over any interval it
//! never sends more than `rate × interval + capacity` frames; a thread the scheduler held off for
//! up to [`CATCH_UP`] makes up what it missed, so on a loaded machine the long-run rate still
//! holds. Longer stalls lose their tokens: a limiter never bursts without bound.

use std::time::{Duration, Instant};

/// How long a stall the bucket makes up for.
pub const CATCH_UP: Duration = Duration::from_millis(100);

/// A token bucket (fractional tokens, so low rates are exact).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_ns: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A bucket filling at `rate` frames per second, empty at `now`; `batch` is the largest
    /// take the caller makes, so the capacity is at least two of them.
    #[must_use]
    pub fn new(rate: f64, batch: u32, now: Instant) -> Self {
        let capacity = (rate * CATCH_UP.as_secs_f64()).max(2.0 * f64::from(batch.max(1)));
        Self { per_ns: rate / 1e9, capacity, tokens: 0.0, last: now }
    }

    fn advance(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos() as f64;
        self.tokens = (self.tokens + dt * self.per_ns).min(self.capacity);
        self.last = now;
    }

    /// Takes up to `want` whole tokens at `now`; returns how many it took.
    pub fn take(&mut self, want: u32, now: Instant) -> u32 {
        self.advance(now);
        let n = (self.tokens.floor() as u32).min(want);
        self.tokens -= f64::from(n);
        n
    }

    /// Gives back tokens taken but not used (the ring was full).
    pub fn refund(&mut self, n: u32) {
        self.tokens = (self.tokens + f64::from(n)).min(self.capacity);
    }

    /// How long until `n` whole tokens are there (zero if they are).
    #[must_use]
    pub fn wait_for(&self, n: u32) -> Duration {
        let missing = f64::from(n) - self.tokens;
        if missing <= 0.0 || self.per_ns <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_nanos((missing / self.per_ns).ceil() as u64)
    }
}

/// Waits about `d` without burning a core for long waits: sleeps all but the last 60 µs (the
/// kernel's timer slack plus wake-up), then spins.
pub fn pace(d: Duration) {
    const SPIN: Duration = Duration::from_micros(60);
    let until = Instant::now() + d;
    if d > SPIN {
        std::thread::sleep(d - SPIN);
    }
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_over_simulated_time() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100_000.0, 64, t0);
        let mut sent = 0u64;
        // 1 s in 10 µs steps, taking as much as allowed each step.
        for step in 1..=100_000u64 {
            sent += u64::from(b.take(64, t0 + Duration::from_micros(step * 10)));
        }
        assert!((99_999..=100_000).contains(&sent), "{sent}");
    }

    #[test]
    fn a_stall_is_made_up_to_the_capacity_and_no_further() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100_000.0, 64, t0);
        // 50 ms stall: 5000 tokens, all available at once (capacity 10000).
        assert_eq!(b.take(u32::MAX, t0 + Duration::from_millis(50)), 5000);
        // 1 s stall: capped at 100 ms worth.
        assert_eq!(b.take(u32::MAX, t0 + Duration::from_millis(1010)), 10000);
        assert_eq!(b.take(1, t0 + Duration::from_millis(1010)), 0);
        assert_eq!(b.wait_for(1), Duration::from_micros(10));
        b.refund(5);
        assert_eq!(b.take(10, t0 + Duration::from_millis(1010)), 5);
    }

    #[test]
    fn low_rates_accrue_fractions() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(3.0, 1, t0);
        let sent: u32 = (1..=1000).map(|ms| b.take(1, t0 + Duration::from_millis(ms))).sum();
        assert_eq!(sent, 3);
    }
}
