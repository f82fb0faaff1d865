//! Active health checks (`[pools.X.health]`): one task per (pool, server) of every pool with
//! checks sends `GET <path>` every `interval` (±10% jitter, the first at a random point of the
//! first interval so that checks spread out), each bounded by `timeout`. Any 2xx passes; another
//! status, a timeout or a connect error fails. `unhealthy_threshold` failures in a row take the
//! server out, `healthy_threshold` passes in a row bring it back. A server starts healthy: it
//! takes traffic until its checks fail (a restart or reload never refuses traffic while the
//! first checks run).
//!
//! A supervisor reconciles the tasks with each installed table: checks start for added servers
//! and stop for removed ones, restart when a pool's check settings or a server's target change,
//! and never run twice for one server. Uses `tokio::time` only, so tests can pause the clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Request};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::passive;
use crate::health::registry::{Reason, ServerSlot};
use crate::route::table::{HealthCheck, Target, UpstreamTls};
use crate::state::{Snapshot, State};
use crate::tls::{UpstreamClient, UpstreamTlsSlot};
use crate::upstream::{self, ReqBody};

/// One server's active-check state.
#[derive(Debug, Default)]
pub struct Tracker {
    /// A checker runs for the server.
    checked: AtomicBool,
    passes: AtomicU32,
    failures: AtomicU32,
}

impl Tracker {
    pub fn checked(&self) -> bool {
        self.checked.load(Ordering::Relaxed)
    }
}

/// What one checker does; a change restarts it.
#[derive(Debug, Clone, PartialEq)]
struct Spec {
    check: HealthCheck,
    target: Target,
    /// The `Host` header: the server's address as written.
    host: HeaderValue,
    /// The pool's TLS settings: a change restarts the checker with the new client.
    tls: Option<UpstreamTls>,
}

struct Checker {
    slot: Arc<ServerSlot>,
    spec: Spec,
    task: JoinHandle<()>,
}

type Key = (Box<str>, Box<str>);

/// Starts the supervisor: it follows every table `state` installs until `shutdown` turns true,
/// and publishes the effective split whenever a table or a pool's availability changes.
pub fn spawn(state: Arc<State>, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(publish_effective_split(
        Arc::clone(&state),
        shutdown.clone(),
    ));
    tokio::spawn(supervise(state, shutdown))
}

async fn publish_effective_split(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut installed = state.installed();
    loop {
        installed.borrow_and_update();
        crate::metrics::effective_split(&state);
        tokio::select! {
            changed = installed.changed() => if changed.is_err() { break },
            _ = state.availability_changed().notified() => {}
            _ = shutdown.changed() => break,
        }
    }
}

async fn supervise(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let mut installed = state.installed();
    let mut checkers: HashMap<Key, Checker> = HashMap::new();
    loop {
        installed.borrow_and_update();
        reconcile(&state.snapshot(), &mut checkers);
        tokio::select! {
            changed = installed.changed() => if changed.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    // Shutting down: the checks end, but what they found stands for the requests still served
    // during the drain.
    for (_, checker) in checkers.drain() {
        checker.task.abort();
    }
}

/// Makes the running checkers exactly those `snap` asks for.
fn reconcile(snap: &Snapshot, checkers: &mut HashMap<Key, Checker>) {
    let mut wanted: HashMap<Key, (Arc<ServerSlot>, Spec, UpstreamTlsSlot)> = HashMap::new();
    for (p, pool) in snap.table.pools.iter().enumerate() {
        let Some(check) = &pool.health else { continue };
        for (s, server) in pool.servers.iter().enumerate() {
            let (Ok(p), Ok(s)) = (u16::try_from(p), u16::try_from(s)) else {
                continue;
            };
            let Some(slot) = snap.slots.get(p, s) else {
                continue;
            };
            let Ok(host) = HeaderValue::from_str(&server.addr) else {
                continue;
            };
            let spec = Spec {
                check: check.clone(),
                target: server.target.clone(),
                host,
                tls: pool.tls.clone(),
            };
            let client = snap.upstream_tls.get(usize::from(p)).cloned().flatten();
            let key = (pool.name.clone(), server.addr.clone());
            wanted.insert(key, (Arc::clone(slot), spec, client));
        }
    }
    let stale: Vec<Key> = checkers
        .iter()
        .filter(|(key, c)| {
            wanted
                .get(*key)
                .is_none_or(|(slot, spec, _)| !Arc::ptr_eq(slot, &c.slot) || *spec != c.spec)
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in stale {
        if let Some(checker) = checkers.remove(&key) {
            let continues = wanted
                .get(&key)
                .is_some_and(|(slot, _, _)| Arc::ptr_eq(slot, &checker.slot));
            stop(checker, continues);
        }
    }
    for (key, (slot, spec, client)) in wanted {
        if checkers.contains_key(&key) {
            continue;
        }
        slot.active.checked.store(true, Ordering::Relaxed);
        let task = tokio::spawn(run(Arc::clone(&slot), spec.clone(), client));
        checkers.insert(key, Checker { slot, spec, task });
    }
}

/// Ends a checker. Unless another takes over the server, what only checks could undo is
/// undone: the server is no longer held out as unhealthy, and an ejection waiting for a
/// passing check ends.
fn stop(checker: Checker, continues: bool) {
    checker.task.abort();
    if continues {
        return;
    }
    let slot = &checker.slot;
    slot.active.checked.store(false, Ordering::Relaxed);
    slot.active.passes.store(0, Ordering::Relaxed);
    slot.active.failures.store(0, Ordering::Relaxed);
    slot.set_unhealthy(false);
    passive::check_passed(slot);
}

async fn run(slot: Arc<ServerSlot>, spec: Spec, tls: UpstreamTlsSlot) {
    let interval = spec.check.interval;
    let first = interval.mul_f64(rand::thread_rng().gen_range(0.0..1.0));
    tokio::time::sleep(first).await;
    loop {
        let passed = probe(&spec, tls.as_ref()).await;
        record(&slot, &spec.check, passed);
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        tokio::time::sleep(interval.mul_f64(jitter)).await;
    }
}

/// One check on a new connection (over the pool's TLS, when it has some): `true` for a 2xx
/// within `timeout`.
async fn probe(spec: &Spec, tls: Option<&Result<UpstreamClient, Arc<str>>>) -> bool {
    let attempt = async {
        let conn = upstream::connect(&spec.target, spec.check.timeout, tls)
            .await
            .ok()?;
        let mut req = Request::get(&*spec.check.path).body(ReqBody::Empty).ok()?;
        req.headers_mut().insert(header::HOST, spec.host.clone());
        req.headers_mut()
            .insert(header::USER_AGENT, HeaderValue::from_static("veer-health"));
        let (head, body) = req.into_parts();
        let resp = conn.send(&head, body, &(), false).await.ok()?;
        Some(resp.status().is_success())
    };
    matches!(
        tokio::time::timeout(spec.check.timeout, attempt).await,
        Ok(Some(true))
    )
}

/// Counts one check and flips the server at a threshold.
pub(crate) fn record(slot: &ServerSlot, check: &HealthCheck, passed: bool) {
    let tracker = &slot.active;
    if passed {
        tracker.failures.store(0, Ordering::Relaxed);
        let passes = tracker
            .passes
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if slot.unhealthy() && passes >= check.healthy_threshold.max(1) {
            slot.set_unhealthy(false);
            tracing::info!(pool = %slot.pool, server = %slot.addr, "server healthy: checks pass");
        }
        if !slot.unhealthy() {
            passive::check_passed(slot);
        }
    } else {
        tracker.passes.store(0, Ordering::Relaxed);
        let failures = tracker
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if !slot.unhealthy() && failures >= check.unhealthy_threshold.max(1) {
            slot.set_unhealthy(true);
            slot.record_ejection(Reason::Active, None);
            slot.metrics.ejected(false);
            tracing::warn!(pool = %slot.pool, server = %slot.addr, failures, "server unhealthy: checks fail");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{self, Ended, Outcome};
    use std::time::Duration;

    fn state(health: &str) -> Arc<State> {
        let text = format!(
            "[pools.blue]\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n{health}\n[pools.blue.outlier]\nconsecutive_failures = 1\nbase_ejection = \"10s\"\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n"
        );
        Arc::new(State::new(
            crate::config::from_toml(&text, "t.toml").unwrap().table,
        ))
    }

    const CHECKS: &str = "[pools.blue.health]\npath = \"/ready\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 3\n";

    #[test]
    fn thresholds_flip_the_server_after_that_many_checks_in_a_row() {
        let state = state(CHECKS);
        let snap = state.snapshot();
        let check = snap.table.pools[0].health.clone().unwrap();
        let slot = snap.slots.server(0, 0);
        for passed in [false, false, true, false, false] {
            record(slot, &check, passed);
        }
        assert!(slot.available(), "a pass in between resets the failures");
        record(slot, &check, false);
        assert!(!slot.available() && !slot.healthy());
        assert_eq!(slot.ejection().reason, Some(Reason::Active));
        assert_eq!(
            snap.slots.pool(0).available(),
            1,
            "the other server still counts"
        );
        record(slot, &check, true);
        assert!(!slot.available(), "one pass of two");
        record(slot, &check, true);
        assert!(slot.available());
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejected_server_of_a_checked_pool_returns_only_after_a_passing_check() {
        let state = state(CHECKS);
        let snap = state.snapshot();
        let check = snap.table.pools[0].health.clone().unwrap();
        let slot = Arc::clone(snap.slots.server(0, 0));
        slot.active.checked.store(true, Ordering::Relaxed);
        let failed = Outcome {
            route: 0,
            pool: 0,
            server: 0,
            ended: Ended::Answered(502),
            latency: Duration::ZERO,
            reused: false,
        };
        outcome::report(&snap, &failed);
        assert!(slot.ejected());
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(slot.ejected(), "time is up, but no check passed yet");
        record(&slot, &check, true);
        assert!(!slot.ejected() && slot.available());
    }

    #[tokio::test(start_paused = true)]
    async fn checks_start_and_stop_with_the_servers_of_installed_tables() {
        let state = state(CHECKS);
        let (_stop, shutdown) = watch::channel(false);
        let supervisor = spawn(Arc::clone(&state), shutdown);
        let snap = state.snapshot();
        let first = Arc::clone(snap.slots.server(0, 0));
        let second = Arc::clone(snap.slots.server(0, 1));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !(first.active.checked() && second.active.checked()) {
            assert!(tokio::time::Instant::now() < deadline, "checks started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The same table again and a table without the second server.
        state.install(snap.table.clone());
        let mut smaller = snap.table.clone();
        smaller.pools[0].servers.truncate(1);
        state.install(smaller);
        while second.active.checked() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the removed server's checks stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(first.active.checked());
        supervisor.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_checks_end_and_what_they_found_stands() {
        let state = state(CHECKS);
        let (stop, shutdown) = watch::channel(false);
        let supervisor = spawn(Arc::clone(&state), shutdown);
        let slot = Arc::clone(state.snapshot().slots.server(0, 0));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        // Nothing listens on 127.0.0.1:1: the checks fail.
        while slot.healthy() {
            assert!(tokio::time::Instant::now() < deadline, "checks take it out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .unwrap()
            .unwrap();
        assert!(!slot.healthy(), "still out while the drain serves");
    }
}
