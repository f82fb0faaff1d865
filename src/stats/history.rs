//! A lane's totals remembered once a second: the marks that give "the last minute" as one
//! window, and a point per second (requests, errors, p99) for the dashboard's charts. Written
//! by the stats recorder only, read by `GET /api/v1/stats`; never on the request path.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::{Totals, Window};

/// The span of "the last minute".
pub const MINUTE: Duration = Duration::from_secs(60);

/// How many per-second points are kept: five minutes.
pub const POINTS: usize = 300;

/// One second of a lane's traffic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The second's actual length (a late tick makes it longer).
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    /// `None` for a second without requests.
    pub p99: Option<Duration>,
}

impl Point {
    pub fn requests_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

#[derive(Debug)]
pub struct History {
    /// `(when, totals)`, oldest first: the newest mark at least a minute old, then every later one.
    marks: VecDeque<(Instant, Totals)>,
    points: VecDeque<Point>,
}

impl Default for History {
    /// A history that starts now, from zero totals (a new lane has counted nothing yet).
    fn default() -> Self {
        Self::starting(Instant::now())
    }
}

impl History {
    pub fn starting(at: Instant) -> Self {
        Self {
            marks: VecDeque::from([(at, Totals::default())]),
            points: VecDeque::new(),
        }
    }

    /// Remembers the totals at `at` (about a second after the last mark).
    pub fn push(&mut self, at: Instant, totals: Totals) {
        if let Some((last_at, last)) = self.marks.back() {
            let w = totals.since(last);
            if self.points.len() == POINTS {
                self.points.pop_front();
            }
            self.points.push_back(Point {
                seconds: at.saturating_duration_since(*last_at).as_secs_f64(),
                requests: w.requests(),
                errors: w.errors(),
                p99: w.quantile(0.99),
            });
        }
        self.marks.push_back((at, totals));
        while self.marks.len() > 1 && at.saturating_duration_since(self.marks[1].0) >= MINUTE {
            self.marks.pop_front();
        }
    }

    /// The window from the newest mark at least a minute before `now` (or the oldest mark, when
    /// the history is younger) to `totals` (read at `now`), and its length.
    pub fn last_minute(&self, now: Instant, totals: &Totals) -> (Window, Duration) {
        let from = self
            .marks
            .iter()
            .rev()
            .find(|(at, _)| now.saturating_duration_since(*at) >= MINUTE)
            .or(self.marks.front());
        match from {
            Some((at, earlier)) => (totals.since(earlier), now.saturating_duration_since(*at)),
            None => (totals.since(&Totals::default()), Duration::ZERO),
        }
    }

    /// The per-second points, oldest first.
    pub fn points(&self) -> impl ExactSizeIterator<Item = &Point> {
        self.points.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::bucket;

    fn totals(requests: u64, errors: u64, ms: u64) -> Totals {
        let mut t = Totals {
            requests,
            errors,
            ..Totals::default()
        };
        t.latency[bucket(Duration::from_millis(ms))] = requests;
        t
    }

    #[test]
    fn each_second_becomes_a_point_and_five_minutes_are_kept() {
        let start = Instant::now();
        let mut h = History::starting(start);
        for s in 1..=400u64 {
            h.push(start + Duration::from_secs(s), totals(s * 10, s, 5));
        }
        assert_eq!(h.points().len(), POINTS);
        let last = h.points().last().copied().unwrap();
        assert_eq!((last.requests, last.errors), (10, 1));
        assert!((last.requests_per_s() - 10.0).abs() < 1e-9);
        assert!((last.error_rate() - 0.1).abs() < 1e-9);
        assert!(last.p99.is_some());
        assert!(h.marks.len() <= 62, "{}", h.marks.len());
    }

    #[test]
    fn the_last_minute_spans_sixty_seconds_once_there_are_that_many() {
        let start = Instant::now();
        let mut h = History::starting(start);
        // Ten seconds in: the window is the whole history.
        for s in 1..=10u64 {
            h.push(start + Duration::from_secs(s), totals(s * 2, 0, 5));
        }
        let now = start + Duration::from_millis(10_500);
        let (w, len) = h.last_minute(now, &totals(21, 0, 5));
        assert_eq!((w.requests(), len), (21, Duration::from_millis(10_500)));
        for s in 11..=100u64 {
            h.push(start + Duration::from_secs(s), totals(s * 2, s / 10, 5));
        }
        let now = start + Duration::from_millis(100_500);
        let (w, len) = h.last_minute(now, &totals(201, 10, 5));
        // From the mark at 40 s (80 requests, 4 errors) to now.
        assert_eq!(len, Duration::from_millis(60_500));
        assert_eq!((w.requests(), w.errors()), (121, 6));
    }

    #[test]
    fn a_quiet_second_has_no_p99_and_no_rate() {
        let start = Instant::now();
        let mut h = History::starting(start);
        h.push(start + Duration::from_secs(1), Totals::default());
        let p = h.points().next().copied().unwrap();
        assert_eq!((p.requests, p.p99, p.error_rate()), (0, None, 0.0));
    }
}
