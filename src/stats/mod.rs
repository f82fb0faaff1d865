//! Per (route, pool) request statistics: running totals of attempts, errors (5xx answers,
//! connect failures, timeouts, broken exchanges) and a fixed-bucket latency histogram, kept as
//! atomics in each lane (so a swap keeps them by name) and fed by `outcome::report` only. A
//! window is the difference of two snapshots of the totals: whoever reads (the rollout driver,
//! an API view) takes a snapshot when its window opens and subtracts it from a later one.
//! Recording is a few relaxed atomic adds: no lock, no allocation, no clock read.

pub mod history;

pub use history::History;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::outcome::{Ended, Outcome};

/// Histogram buckets: bucket 0 holds latencies up to 1 ms; each next bound is 5/4 of the one
/// before, up to the first bound past 30 s; the last bucket holds everything slower.
pub const BUCKETS: usize = 49;

/// Upper bound of each bucket but the last, in microseconds.
pub const BOUNDS_US: [u64; BUCKETS - 1] = bounds();

const fn bounds() -> [u64; BUCKETS - 1] {
    let mut out = [0u64; BUCKETS - 1];
    let mut bound = 1_000u64;
    let mut i = 0;
    while i < BUCKETS - 1 {
        out[i] = bound;
        bound = (bound * 5).div_ceil(4);
        i += 1;
    }
    out
}

/// The bucket a latency falls in.
pub fn bucket(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    BOUNDS_US.partition_point(|bound| *bound < us)
}

/// The running totals of one lane.
#[derive(Debug)]
pub struct Stats {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// Whether an attempt counts as an error for rollout analysis and stats.
pub fn is_error(ended: Ended) -> bool {
    match ended {
        Ended::Answered(status) => (500..=599).contains(&status),
        Ended::Failed(_) => true,
    }
}

impl Stats {
    /// Counts one attempt.
    pub fn record(&self, outcome: &Outcome) {
        self.count(is_error(outcome.ended), outcome.latency);
    }

    /// Counts one request as its client saw it: the status it got (a 5xx is an error) and how
    /// long its answer's head took.
    pub fn record_answer(&self, status: u16, latency: Duration) {
        self.count(is_error(Ended::Answered(status)), latency);
    }

    fn count(&self, error: bool, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The totals now.
    pub fn totals(&self) -> Totals {
        Totals {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            latency: std::array::from_fn(|i| self.latency[i].load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of a lane's totals. Counters wrap; a window subtracts with wrapping arithmetic,
/// so a window shorter than a wrap is always right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub latency: [u64; BUCKETS],
}

impl Default for Totals {
    fn default() -> Self {
        Self {
            requests: 0,
            errors: 0,
            latency: [0; BUCKETS],
        }
    }
}

impl Totals {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Totals) -> Window {
        Window(Totals {
            requests: self.requests.wrapping_sub(earlier.requests),
            errors: self.errors.wrapping_sub(earlier.errors),
            latency: std::array::from_fn(|i| self.latency[i].wrapping_sub(earlier.latency[i])),
        })
    }
}

/// The attempts of one lane over a span of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window(pub Totals);

impl Window {
    pub fn requests(&self) -> u64 {
        self.0.requests
    }

    pub fn errors(&self) -> u64 {
        self.0.errors.min(self.0.requests)
    }

    /// The share of attempts that were errors; 0 for an empty window.
    pub fn error_rate(&self) -> f64 {
        if self.0.requests == 0 {
            return 0.0;
        }
        self.errors() as f64 / self.0.requests as f64
    }

    /// The latency under which `q` (0..=1) of the attempts ended: the upper bound of the
    /// bucket holding that rank, so never an underestimate (the slowest bucket reports 30 s
    /// and more as its lower bound). `None` for an empty window.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.0.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, count) in self.0.latency.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let us = BOUNDS_US.get(i).or(BOUNDS_US.last()).copied().unwrap_or(0);
                return Some(Duration::from_micros(us));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::ErrorKind;

    fn attempt(ended: Ended, ms: u64) -> Outcome {
        Outcome {
            route: 0,
            pool: 0,
            server: 0,
            ended,
            latency: Duration::from_millis(ms),
            reused: false,
        }
    }

    #[test]
    fn the_buckets_span_a_millisecond_to_thirty_seconds() {
        assert_eq!(BOUNDS_US[0], 1_000);
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
        assert!(BOUNDS_US[BUCKETS - 3] < 30_000_000 && BOUNDS_US[BUCKETS - 2] >= 30_000_000);
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_millis(1)), 0);
        assert_eq!(bucket(Duration::from_micros(1_001)), 1);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
    }

    #[test]
    fn an_empty_window_has_no_rate_and_no_latency() {
        let w = Stats::default().totals().since(&Totals::default());
        assert_eq!((w.requests(), w.error_rate()), (0, 0.0));
        assert_eq!(w.quantile(0.99), None);
    }

    #[test]
    fn errors_are_5xx_and_failures_and_a_window_counts_only_its_span() {
        let stats = Stats::default();
        stats.record(&attempt(Ended::Answered(200), 5));
        let opened = stats.totals();
        for ended in [
            Ended::Answered(200),
            Ended::Answered(404),
            Ended::Answered(500),
            Ended::Answered(503),
            Ended::Failed(ErrorKind::Connect),
            Ended::Failed(ErrorKind::Timeout),
        ] {
            stats.record(&attempt(ended, 5));
        }
        let w = stats.totals().since(&opened);
        assert_eq!((w.requests(), w.errors()), (6, 4));
        assert!((w.error_rate() - 4.0 / 6.0).abs() < 1e-9);
    }

    #[test]
    fn p50_and_p99_come_from_the_buckets_never_below_the_truth() {
        let stats = Stats::default();
        for _ in 0..98 {
            stats.record(&attempt(Ended::Answered(200), 10));
        }
        for _ in 0..2 {
            stats.record(&attempt(Ended::Answered(200), 400));
        }
        let w = stats.totals().since(&Totals::default());
        let p50 = w.quantile(0.5).unwrap();
        let p99 = w.quantile(0.99).unwrap();
        assert!(
            p50 >= Duration::from_millis(10) && p50 < Duration::from_millis(13),
            "{p50:?}"
        );
        assert!(
            p99 >= Duration::from_millis(400) && p99 < Duration::from_millis(500),
            "{p99:?}"
        );
    }

    #[test]
    fn a_window_across_a_counter_wrap_is_right() {
        let mut earlier = Totals {
            requests: u64::MAX - 2,
            errors: u64::MAX,
            ..Totals::default()
        };
        earlier.latency[3] = u64::MAX - 1;
        let mut later = Totals {
            requests: 7,
            errors: 1,
            ..Totals::default()
        };
        later.latency[3] = 8;
        let w = later.since(&earlier);
        assert_eq!((w.requests(), w.errors()), (10, 2));
        assert_eq!(w.0.latency[3], 10);
    }
}
