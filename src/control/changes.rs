//! What each `Change` does to the runtime state: splits, promote and rollback, drains, a
//! replaced config, and a rollout's actions and the driver's steps. Pure edits of `Runtime`
//! against the base config; validation, compile, persistence and the swap happen in `mod.rs`.

use super::*;

pub(super) fn change_runtime(
    runtime: &mut Runtime,
    base: &RawConfig,
    file: &RawConfig,
    change: Change,
) -> Result<(), ControlError> {
    match change {
        Change::Split { route, weights } => {
            let current = current_split(runtime, base, &route)?;
            let split = merge_split(&current, &weights);
            let entry = route_entry(runtime, base, &route)?;
            entry.split = Some(split);
            pause_for_operator(entry, "split");
        }
        Change::Promote { route, pool } => {
            if !base.pools.contains_key(&pool) {
                return Err(ControlError::NotFound(format!("no pool named {pool:?}")));
            }
            let current = current_split(runtime, base, &route)?;
            let split = only(&current, &pool);
            let entry = route_entry(runtime, base, &route)?;
            entry.split = Some(split);
            pause_for_operator(entry, &format!("promote of {pool}"));
        }
        Change::Rollback { route } => {
            let current = current_split(runtime, base, &route)?;
            let def = find_route(base, &route)?;
            let stable = match &def.rollout {
                Some(plan) => plan.stable.clone(),
                None => current.keys().next().cloned().unwrap_or_default(),
            };
            let entry = route_entry(runtime, base, &route)?;
            entry.split = Some(only(&current, &stable));
            pause_for_operator(entry, "rollback");
            // A rollback after a promotion undoes it: the rollout is rolled back, not promoted.
            if let Some(status) = entry.rollout.as_mut() {
                if status.state == RolloutState::Promoted {
                    let reason = "rolled back by an operator after promotion";
                    status.record(
                        RolloutState::RolledBack {
                            reason: reason.into(),
                        },
                        reason.into(),
                        now_secs(),
                    );
                }
            }
        }
        Change::Drain { pool, addr, drain } => {
            let def = base
                .pools
                .get(&pool)
                .ok_or_else(|| ControlError::NotFound(format!("no pool named {pool:?}")))?;
            if !def.servers.iter().any(|s| s.addr() == addr) {
                return Err(ControlError::NotFound(format!(
                    "pool {pool:?} has no server {addr:?}"
                )));
            }
            runtime
                .drains
                .retain(|d| !(d.pool == pool && d.addr == addr));
            if drain {
                let base = fingerprint(def);
                runtime.drains.push(DrainRuntime { pool, addr, base });
            }
        }
        Change::Rollout { route, action } => rollout(runtime, base, &route, action)?,
        Change::RolloutStep {
            route,
            step,
            verdict,
            reason,
        } => rollout_step(runtime, base, &route, step, verdict, reason)?,
        Change::Replace(config) => {
            // Settings a running process cannot take up come from the file alone: the
            // listeners, TLS, the admin section (the API cannot change its own access or where
            // its changes are kept), the worker count, the log level and format.
            let mut config = *config;
            keep_restart_only(&mut config, file);
            runtime.config = Some(Replaced {
                file: fingerprint(file),
                config,
            });
            runtime.routes.clear();
            let new_base = base_config(file, runtime);
            runtime.drains.retain(|d| {
                new_base
                    .pools
                    .get(&d.pool)
                    .is_some_and(|p| p.servers.iter().any(|s| s.addr() == d.addr))
            });
            for d in &mut runtime.drains {
                if let Some(p) = new_base.pools.get(&d.pool) {
                    d.base = fingerprint(p);
                }
            }
        }
    }
    Ok(())
}

pub(super) fn find_route<'a>(
    base: &'a RawConfig,
    route: &str,
) -> Result<&'a config::RawRoute, ControlError> {
    base.routes
        .iter()
        .find(|r| r.name == route)
        .ok_or_else(|| ControlError::NotFound(format!("no route named {route:?}")))
}

/// The route's split as it runs now.
pub(super) fn current_split(
    runtime: &Runtime,
    base: &RawConfig,
    route: &str,
) -> Result<IndexMap<String, u32>, ControlError> {
    let def = find_route(base, route)?;
    Ok(runtime
        .routes
        .get(route)
        .and_then(|r| r.split.clone())
        .unwrap_or_else(|| def.split.clone()))
}

/// The runtime entry of a route, created against its current definition.
pub(super) fn route_entry<'a>(
    runtime: &'a mut Runtime,
    base: &RawConfig,
    route: &str,
) -> Result<&'a mut RouteRuntime, ControlError> {
    let def = find_route(base, route)?;
    let fp = fingerprint(def);
    Ok(runtime
        .routes
        .entry(route.to_string())
        .or_insert_with(|| RouteRuntime {
            base: fp,
            split: None,
            rollout: None,
        }))
}

/// New weights over the current order: listed pools take their weight, unlisted ones 0, new
/// ones go at the end in the order given.
pub(super) fn merge_split(
    current: &IndexMap<String, u32>,
    weights: &IndexMap<String, u32>,
) -> IndexMap<String, u32> {
    let mut out: IndexMap<String, u32> = current
        .keys()
        .map(|k| (k.clone(), weights.get(k).copied().unwrap_or(0)))
        .collect();
    for (k, w) in weights {
        out.entry(k.clone()).or_insert(*w);
    }
    out
}

/// Everything to `pool`, order kept.
pub(super) fn only(current: &IndexMap<String, u32>, pool: &str) -> IndexMap<String, u32> {
    let mut weights = IndexMap::new();
    weights.insert(pool.to_string(), 100);
    merge_split(current, &weights)
}

pub(super) fn rollout(
    runtime: &mut Runtime,
    base: &RawConfig,
    route: &str,
    action: RolloutAction,
) -> Result<(), ControlError> {
    let def = find_route(base, route)?;
    let Some(plan) = def.rollout.clone() else {
        return Err(ControlError::invalid(
            "rollout",
            format!("route {route:?} has no [routes.rollout] plan"),
        ));
    };
    let current = current_split(runtime, base, route)?;
    let entry = route_entry(runtime, base, route)?;
    let state = entry
        .rollout
        .as_ref()
        .map_or(RolloutState::Idle, |s| s.state.clone());
    let percent = |step: usize| plan.steps.get(step).copied().unwrap_or(100);
    let (next, split) = match (action, &state) {
        (RolloutAction::Start, RolloutState::Progressing { .. } | RolloutState::Paused { .. }) => {
            return Err(ControlError::invalid(
                "rollout",
                "the rollout is already under way",
            ))
        }
        (RolloutAction::Start, _) => (
            RolloutState::Progressing { step: 0 },
            Some(canary_split(
                &current,
                &plan.stable,
                &plan.canary,
                percent(0),
            )),
        ),
        (RolloutAction::Pause, RolloutState::Progressing { step }) => {
            (RolloutState::Paused { step: *step }, None)
        }
        // Resuming puts the step's weights back, whatever an operator set while paused.
        (RolloutAction::Resume, RolloutState::Paused { step }) => (
            RolloutState::Progressing { step: *step },
            Some(canary_split(
                &current,
                &plan.stable,
                &plan.canary,
                percent(*step),
            )),
        ),
        (RolloutAction::Abort, RolloutState::Progressing { .. } | RolloutState::Paused { .. }) => (
            RolloutState::RolledBack {
                reason: "aborted by an operator".into(),
            },
            Some(canary_split(&current, &plan.stable, &plan.canary, 0)),
        ),
        (action, state) => {
            return Err(ControlError::invalid(
                "rollout",
                format!("cannot {action:?} a rollout that is {}", state.name()).to_lowercase(),
            ))
        }
    };
    if let Some(split) = split {
        entry.split = Some(split);
    }
    entry
        .rollout
        .get_or_insert_with(|| RolloutStatus {
            state: RolloutState::Idle,
            history: Vec::new(),
        })
        .record(
            next,
            format!("{} by an operator", action.past()),
            now_secs(),
        );
    Ok(())
}

/// An operator's split, promote or rollback while a rollout progresses pauses it at its step,
/// so that the driver does not fight the operator; `resume` takes it up again.
pub(super) fn pause_for_operator(entry: &mut RouteRuntime, what: &str) {
    if let Some(status) = entry.rollout.as_mut() {
        if let RolloutState::Progressing { step } = status.state {
            status.record(
                RolloutState::Paused { step },
                format!("paused by an operator's {what}"),
                now_secs(),
            );
        }
    }
}

/// Applies the driver's verdict on `step`, unless the rollout has moved on since.
pub(super) fn rollout_step(
    runtime: &mut Runtime,
    base: &RawConfig,
    route: &str,
    step: usize,
    verdict: StepVerdict,
    reason: String,
) -> Result<(), ControlError> {
    let def = find_route(base, route)?;
    let Some(plan) = def.rollout.clone() else {
        return Err(ControlError::invalid(
            "rollout",
            format!("route {route:?} has no [routes.rollout] plan"),
        ));
    };
    let current = current_split(runtime, base, route)?;
    let entry = route_entry(runtime, base, route)?;
    let Some(status) = entry.rollout.as_mut() else {
        return Err(ControlError::invalid("rollout", "no rollout is under way"));
    };
    if status.state != (RolloutState::Progressing { step }) {
        return Err(ControlError::invalid(
            "rollout",
            format!("the rollout is no longer progressing at step {step}"),
        ));
    }
    let (next, percent) = match verdict {
        StepVerdict::Advance => {
            let next = step + 1;
            let percent = plan.steps.get(next).copied().unwrap_or(100);
            (RolloutState::Progressing { step: next }, percent)
        }
        StepVerdict::Promote => (RolloutState::Promoted, 100),
        StepVerdict::RollBack => (
            RolloutState::RolledBack {
                reason: reason.clone(),
            },
            0,
        ),
    };
    status.record(next, reason, now_secs());
    entry.split = Some(canary_split(&current, &plan.stable, &plan.canary, percent));
    Ok(())
}

/// `canary` at `percent`, `stable` at the rest, every other pool of the split at 0.
pub(super) fn canary_split(
    current: &IndexMap<String, u32>,
    stable: &str,
    canary: &str,
    percent: u32,
) -> IndexMap<String, u32> {
    let mut weights = IndexMap::new();
    weights.insert(stable.to_string(), 100 - percent.min(100));
    weights.insert(canary.to_string(), percent.min(100));
    merge_split(current, &weights)
}

/// Seconds since the Unix epoch, for the rollout history.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
