//! The rollout driver: one task that ticks every running rollout at least ten times per
//! interval (every twentieth of the shortest interval, at most every second). At each tick it
//! reads the canary's and the stable pool's stats windows since the step began, asks
//! `machine::step`, keeps the analysis for the API, and applies a decision to advance, promote
//! or roll back only through the change path (`Change::RolloutStep`: validated, versioned,
//! persisted, swapped). The step's clock lives here, not in the state file: a restart, or a
//! resume, starts the step's interval over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::machine::{self, Analysis, Input, Verdict};
use crate::control::{Change, Control, RolloutState, RolloutStatus, StepVerdict};
use crate::lanes::Lane;
use crate::route::table::RolloutPlan;
use crate::stats::{Totals, Window};

/// The last analysis of each route's rollout, for `GET /api/v1/routes/{route}`.
#[derive(Debug, Default)]
pub struct Analyses {
    by_route: Mutex<HashMap<String, Analysis>>,
}

impl Analyses {
    pub fn get(&self, route: &str) -> Option<Analysis> {
        self.lock().get(route).cloned()
    }

    fn set(&self, route: &str, analysis: Analysis) {
        self.lock().insert(route.to_string(), analysis);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Analysis>> {
        self.by_route.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the driver; it ends when `shutdown` turns true.
pub fn spawn(control: Arc<Control>, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut driver = Driver::default();
        loop {
            let period = period(&control);
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            driver.tick(&control, Instant::now()).await;
        }
    })
}

/// How often to look: a twentieth of the shortest interval of any plan, within 5 ms..1 s.
fn period(control: &Control) -> Duration {
    let published = control.published();
    published
        .effective
        .table
        .routes
        .iter()
        .filter_map(|r| r.rollout.as_ref())
        .map(|p| p.interval / 20)
        .min()
        .unwrap_or(Duration::from_secs(1))
        .clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// One progressing step being watched.
struct Watched {
    step: usize,
    /// The rollout's history length when the step began: any event since (a pause and resume,
    /// a restart of the rollout) starts the step's clock over.
    epoch: usize,
    started: Instant,
    canary: Arc<Lane>,
    stable: Arc<Lane>,
    canary_at: Totals,
    stable_at: Totals,
}

#[derive(Default)]
struct Driver {
    watched: HashMap<String, Watched>,
    /// Stable's window from the last step in which it had `min_requests`, per route.
    stable_before: HashMap<String, Window>,
    /// The state last seen per route, to count rollouts as they end.
    seen: HashMap<String, String>,
}

impl Driver {
    async fn tick(&mut self, control: &Arc<Control>, now: Instant) {
        let published = control.published();
        let snap = control.state().snapshot();
        let table = &snap.table;
        for (id, route) in table.routes.iter().enumerate() {
            let Some(plan) = &route.rollout else {
                continue;
            };
            let name = &*route.name;
            let status = published
                .runtime
                .routes
                .get(name)
                .and_then(|r| r.rollout.as_ref());
            self.follow(name, plan, status);
            let Some(RolloutStatus {
                state: RolloutState::Progressing { step },
                history,
            }) = status
            else {
                self.watched.remove(name);
                continue;
            };
            let (step, epoch) = (*step, history.len());
            let fresh = self
                .watched
                .get(name)
                .is_none_or(|w| w.step != step || w.epoch != epoch);
            if fresh {
                let Ok(route_id) = u16::try_from(id) else {
                    continue;
                };
                let lanes = (
                    snap.lanes.of_pool(route_id, plan.canary),
                    snap.lanes.of_pool(route_id, plan.stable),
                );
                let (Some(canary), Some(stable)) = lanes else {
                    continue;
                };
                self.watched.insert(
                    name.to_string(),
                    Watched {
                        step,
                        epoch,
                        started: now,
                        canary_at: canary.stats.totals(),
                        stable_at: stable.stats.totals(),
                        canary: Arc::clone(canary),
                        stable: Arc::clone(stable),
                    },
                );
            }
            let Some(w) = self.watched.get(name) else {
                continue;
            };
            let canary = w.canary.stats.totals().since(&w.canary_at);
            let stable = w.stable.stats.totals().since(&w.stable_at);
            let input = Input {
                step,
                started: w.started,
                canary: &canary,
                stable: &stable,
                stable_before: self.stable_before.get(name),
            };
            let analysis = machine::step(plan, &input, now);
            control.state().rollouts.set(name, analysis.clone());
            let verdict = match analysis.verdict {
                Verdict::Watch | Verdict::Hold => continue,
                Verdict::Advance => StepVerdict::Advance,
                Verdict::Promote => StepVerdict::Promote,
                Verdict::RollBack => StepVerdict::RollBack,
            };
            if stable.requests() >= plan.min_requests {
                self.stable_before.insert(name.to_string(), stable);
            }
            let change = Change::RolloutStep {
                route: name.to_string(),
                step,
                verdict,
                reason: analysis.reason.clone(),
            };
            let control = Arc::clone(control);
            let applied = tokio::task::spawn_blocking(move || control.apply(change, None)).await;
            match applied {
                Ok(Ok(version)) => {
                    tracing::info!(route = name, step, verdict = ?verdict, reason = %analysis.reason, version, "rollout step decided");
                }
                Ok(Err(e)) => {
                    tracing::info!(route = name, step, error = %e, "rollout step not applied");
                }
                Err(e) => tracing::error!(route = name, error = %e, "rollout step failed"),
            }
            self.watched.remove(name);
        }
    }

    /// Publishes `veer_rollout_step` and counts a rollout that has just ended.
    fn follow(&mut self, route: &str, plan: &RolloutPlan, status: Option<&RolloutStatus>) {
        let state = status.map_or(RolloutState::Idle, |s| s.state.clone());
        let step = match state {
            RolloutState::Progressing { step } | RolloutState::Paused { step } => step + 1,
            RolloutState::Promoted => plan.steps.len(),
            RolloutState::Idle | RolloutState::RolledBack { .. } => 0,
        };
        crate::metrics::rollout_step(route, step);
        let label = state.label();
        let before = self.seen.insert(route.to_string(), label.clone());
        let was_under_way = before
            .as_deref()
            .is_some_and(|b| b.starts_with("progressing") || b.starts_with("paused"));
        if was_under_way && before.as_deref() != Some(label.as_str()) {
            match state {
                RolloutState::Promoted => crate::metrics::rollout_ended(route, "promoted"),
                RolloutState::RolledBack { .. } => {
                    crate::metrics::rollout_ended(route, "rolled_back")
                }
                _ => {}
            }
        }
    }
}
