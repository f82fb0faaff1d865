//! Passive outlier ejection (`[pools.X.outlier]`): each attempt's outcome, as reported through
//! `outcome::report`, counts for or against its server. `consecutive_failures` failures in a row
//! (connect errors, timeouts, protocol errors, 502/503/504 answers; any other answer resets the
//! count) eject the server for `base_ejection`, doubled on each repeat and capped at 10×, unless
//! that would put more than `max_ejection_percent` of the pool out. A server that stayed in for
//! the longest ejection time (10 × `base_ejection`) since it last returned starts again from
//! `base_ejection`. When its time is up the
//! server returns; in a pool with active checks, only once a check passes after that. Atomics on
//! the reporting path; a task per ejection (rare) ends it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::health::registry::{Reason, ServerSlot};
use crate::outcome::Outcome;
use crate::route::table::Outlier;
use crate::state::Snapshot;

/// The longest an ejection lasts, as a multiple of `base_ejection`.
const MAX_FACTOR: u32 = 10;

/// One server's outlier state.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Failures in a row since the last success or ejection.
    consecutive: AtomicU32,
    /// Outlier ejections that count for the next one's length (the repeats).
    repeats: AtomicU32,
    /// When the server last returned from an ejection. Touched only when a server is ejected or
    /// returns, never per request.
    returned_at: Mutex<Option<Instant>>,
    /// Increments with each ejection, so that the timer of an earlier one ends nothing.
    generation: AtomicU64,
    /// The ejection's time is up and the server waits for a passing active check.
    waiting_for_check: AtomicBool,
}

impl Tracker {
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive.load(Ordering::Relaxed)
    }

    fn returned(&self) -> Option<Instant> {
        *self.returned_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_returned(&self, at: Instant) {
        *self.returned_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }
}

/// How long the `previous`+1-th ejection lasts: `base` doubled per earlier one, at most 10×.
pub fn ejection_time(base: Duration, previous: u32) -> Duration {
    let factor = if previous >= 4 {
        MAX_FACTOR
    } else {
        (1u32 << previous).min(MAX_FACTOR)
    };
    base.saturating_mul(factor)
}

/// Counts one attempt for or against its server, and ejects the server when its failures in a
/// row reach the pool's threshold.
pub fn observe(snap: &Snapshot, slot: &Arc<ServerSlot>, outcome: &Outcome) {
    let tracker = &slot.passive;
    if !outcome.server_failure() {
        if tracker.consecutive.load(Ordering::Relaxed) != 0 {
            tracker.consecutive.store(0, Ordering::Relaxed);
        }
        return;
    }
    let Some(pool) = snap.table.pools.get(usize::from(outcome.pool)) else {
        return;
    };
    let failures = tracker.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
    if failures >= pool.outlier.consecutive_failures.max(1) && !slot.ejected() {
        eject(slot, &pool.outlier);
    }
}

/// Ejects the server if the pool's percent allows it, and starts the timer that ends it.
fn eject(slot: &Arc<ServerSlot>, outlier: &Outlier) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let pool = &slot.pool_state;
    if !pool.try_take_ejection(outlier.max_ejection_percent) {
        return;
    }
    if !slot.set_ejected(true) {
        // Another attempt's report ejected it first.
        pool.release_ejection();
        return;
    }
    let tracker = &slot.passive;
    tracker.consecutive.store(0, Ordering::Relaxed);
    tracker.waiting_for_check.store(false, Ordering::Relaxed);
    let longest = ejection_time(outlier.base_ejection, u32::MAX);
    let quiet = tracker.returned().is_some_and(|at| at.elapsed() >= longest);
    if quiet {
        tracker.repeats.store(0, Ordering::Relaxed);
    }
    let previous = tracker.repeats.fetch_add(1, Ordering::Relaxed);
    let generation = tracker.generation.fetch_add(1, Ordering::Relaxed) + 1;
    let time = ejection_time(outlier.base_ejection, previous);
    slot.record_ejection(Reason::Outlier, Some(time));
    slot.metrics.ejected(true);
    tracing::warn!(pool = %slot.pool, server = %slot.addr, seconds = time.as_secs_f64(), "server ejected: consecutive failures");
    let slot = Arc::clone(slot);
    runtime.spawn(async move {
        tokio::time::sleep(time).await;
        time_up(&slot, generation);
    });
}

/// The ejection's time is up: the server returns now, or after its next passing check.
fn time_up(slot: &Arc<ServerSlot>, generation: u64) {
    let tracker = &slot.passive;
    if tracker.generation.load(Ordering::Relaxed) != generation {
        return;
    }
    if slot.active.checked() {
        tracker.waiting_for_check.store(true, Ordering::Relaxed);
        // The checker may have stopped in between: then nothing would readmit the server.
        if slot.active.checked() {
            return;
        }
    }
    readmit(slot);
}

/// An active check passed (or checks stopped): a server whose ejection time is up returns.
pub fn check_passed(slot: &ServerSlot) {
    if slot.passive.waiting_for_check.load(Ordering::Relaxed) {
        readmit(slot);
    }
}

fn readmit(slot: &ServerSlot) {
    slot.passive
        .waiting_for_check
        .store(false, Ordering::Relaxed);
    if slot.set_ejected(false) {
        slot.passive.set_returned(Instant::now());
        slot.pool_state.release_ejection();
        slot.record_ejection_end();
        tracing::info!(pool = %slot.pool, server = %slot.addr, "server readmitted after ejection");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{self, Ended, ErrorKind};
    use crate::state::State;

    fn state(servers: usize, outlier: &str) -> State {
        let list: Vec<String> = (1..=servers)
            .map(|i| format!("\"127.0.0.1:{i}\""))
            .collect();
        let text = format!(
            "[pools.blue]\nservers = [{}]\n[pools.blue.outlier]\n{outlier}\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n",
            list.join(", ")
        );
        State::new(crate::config::from_toml(&text, "t.toml").unwrap().table)
    }

    fn attempt(server: u16, ended: Ended) -> Outcome {
        Outcome {
            route: 0,
            pool: 0,
            server,
            ended,
            latency: Duration::ZERO,
            reused: false,
        }
    }

    fn fail(snap: &Snapshot, server: u16, times: u32) {
        for _ in 0..times {
            outcome::report(snap, &attempt(server, Ended::Answered(503)));
        }
    }

    #[test]
    fn ejection_time_doubles_and_stops_at_ten_times() {
        let base = Duration::from_secs(30);
        let times: Vec<u64> = (0..7)
            .map(|n| ejection_time(base, n).as_secs() / 30)
            .collect();
        assert_eq!(times, [1, 2, 4, 8, 10, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_in_a_row_eject_and_any_other_answer_resets_the_count() {
        let state = state(2, "consecutive_failures = 3");
        let snap = state.snapshot();
        fail(&snap, 0, 2);
        outcome::report(&snap, &attempt(0, Ended::Answered(500)));
        fail(&snap, 0, 2);
        assert!(snap.slots.server(0, 0).available(), "a 500 reset the count");
        outcome::report(&snap, &attempt(0, Ended::Failed(ErrorKind::Connect)));
        assert!(!snap.slots.server(0, 0).available());
        assert!(snap.slots.server(0, 0).ejected());
        assert_eq!(snap.slots.server(0, 0).ejection().count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_ejection_ends_after_its_time_which_doubles_on_each_repeat() {
        let state = state(2, "consecutive_failures = 1\nbase_ejection = \"10s\"");
        let snap = state.snapshot();
        let slot = Arc::clone(snap.slots.server(0, 0));
        fail(&snap, 0, 1);
        assert!(slot.ejected());
        tokio::time::sleep(Duration::from_millis(9_990)).await;
        assert!(slot.ejected());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!slot.ejected(), "back after 10s");
        fail(&snap, 0, 1);
        tokio::time::sleep(Duration::from_millis(19_990)).await;
        assert!(slot.ejected(), "the second ejection lasts 20s");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!slot.ejected());
        assert_eq!(snap.slots.pool(0).ejected(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_stays_in_for_the_longest_ejection_time_starts_again_from_base() {
        let state = state(2, "consecutive_failures = 1\nbase_ejection = \"10s\"");
        let snap = state.snapshot();
        let slot = Arc::clone(snap.slots.server(0, 0));
        for _ in 0..2 {
            fail(&snap, 0, 1);
            tokio::time::sleep(Duration::from_secs(41)).await;
            assert!(!slot.ejected());
        }
        // Back for 79 s after ejections of 10 s and 20 s: the next lasts 40 s.
        tokio::time::sleep(Duration::from_secs(58)).await;
        fail(&snap, 0, 1);
        tokio::time::sleep(Duration::from_secs(39)).await;
        assert!(slot.ejected(), "a repeat: 40 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!slot.ejected());
        // In for 100 s (10 × base): the next is a first ejection again.
        tokio::time::sleep(Duration::from_secs(100)).await;
        fail(&snap, 0, 1);
        tokio::time::sleep(Duration::from_millis(10_010)).await;
        assert!(!slot.ejected(), "back to base_ejection");
        assert_eq!(slot.ejection().count, 4, "the record keeps every ejection");
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_holds_the_last_servers() {
        let state = state(3, "consecutive_failures = 1\nmax_ejection_percent = 34");
        let snap = state.snapshot();
        for server in 0..3 {
            fail(&snap, server, 2);
        }
        let ejected: Vec<bool> = (0..3).map(|s| snap.slots.server(0, s).ejected()).collect();
        assert_eq!(ejected, [true, false, false], "34% of 3 is one server");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(!snap.slots.server(0, 0).ejected());
        fail(&snap, 1, 1);
        assert!(snap.slots.server(0, 1).ejected(), "the place is free again");
    }
}
