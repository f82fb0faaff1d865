//! The JSON views of the admin API: one consistent read of the control state (effective
//! config, runtime state, and the snapshot with its servers' slots, all of one version),
//! rendered as SPEC.md's route and pool objects.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::{RawConfig, RawRoute};
use crate::control::{Control, RolloutState, Runtime};
use crate::route::table::{Balance, HostPattern, Route};
use crate::route::HealthView;
use crate::state::Snapshot;

/// One consistent read of everything the views show.
pub struct View {
    /// The version of the table shown (the `ETag`).
    pub version: u64,
    raw: RawConfig,
    runtime: Runtime,
    snap: Arc<Snapshot>,
    analyses: Arc<crate::state::State>,
}

impl View {
    /// Reads the effective config, the runtime state and the snapshot; retries (a few times)
    /// when a change lands in between, so that all three are of one version.
    pub fn take(control: &Control) -> Self {
        let mut tries = 0;
        loop {
            tries += 1;
            let (compiled, version) = control.effective();
            let runtime = control.runtime();
            let snap = control.state().snapshot();
            if snap.table.version == version || tries >= 5 {
                return Self {
                    version: snap.table.version,
                    raw: compiled.raw,
                    runtime,
                    snap,
                    analyses: Arc::clone(control.state()),
                };
            }
        }
    }

    /// The effective config as JSON (`RawConfig`: values as written), with the admin token
    /// shown as `"<redacted>"`: it never leaves the process.
    pub fn config(&self) -> Value {
        let mut raw = self.raw.clone();
        if let Some(token) = raw.admin.as_mut().and_then(|a| a.token.as_mut()) {
            *token = "<redacted>".into();
        }
        serde_json::to_value(&raw).unwrap_or(Value::Null)
    }

    pub fn routes(&self) -> Value {
        Value::Array(
            self.snap
                .table
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| self.route_view(i, r))
                .collect(),
        )
    }

    pub fn route(&self, name: &str) -> Option<Value> {
        self.snap
            .table
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| &*r.name == name)
            .map(|(i, r)| self.route_view(i, r))
    }

    fn route_view(&self, index: usize, route: &Route) -> Value {
        let table = &self.snap.table;
        let slots = &self.snap.slots;
        let raw = self.raw.routes.iter().find(|r| *r.name == *route.name);
        let total = f64::from(route.total_weight.max(1));
        let available_weight: u64 = route
            .split
            .iter()
            .filter(|e| e.weight > 0 && slots.pool_available(e.pool))
            .map(|e| u64::from(e.weight))
            .sum();
        let split: Vec<Value> = route
            .split
            .iter()
            .map(|e| {
                let available = slots.pool_available(e.pool);
                let effective = if available && e.weight > 0 && available_weight > 0 {
                    f64::from(e.weight) * 100.0 / available_weight as f64
                } else {
                    0.0
                };
                json!({
                    "pool": &*table.pool(e.pool).name,
                    "weight": e.weight,
                    "percent": f64::from(e.weight) * 100.0 / total,
                    "effective_percent": effective,
                    "available": available,
                })
            })
            .collect();
        let hosts: Vec<String> = route
            .hosts
            .iter()
            .map(|h| match h {
                HostPattern::Exact(name) => name.to_string(),
                HostPattern::Suffix(suffix) => format!("*{suffix}"),
            })
            .collect();
        let pins = raw
            .map(|r| serde_json::to_value(&r.pin).unwrap_or(Value::Null))
            .unwrap_or_else(|| Value::Array(Vec::new()));
        let hash_key = raw.and_then(|r| r.hash_key.clone());
        let sticky = route.sticky.as_ref().map(|s| {
            let max_age = raw
                .and_then(|r| r.sticky.as_ref())
                .and_then(|s| s.max_age.clone())
                .unwrap_or_else(|| humantime::format_duration(s.max_age).to_string());
            json!({"cookie": &*s.cookie, "max_age": max_age})
        });
        json!({
            "name": &*route.name,
            "hosts": hosts,
            "path_prefix": &*route.path_prefix,
            "split": split,
            "pins": pins,
            "hash_key": hash_key,
            "sticky": sticky,
            "mirror": self.mirror_view(index, route),
            "rollout": raw.map_or(Value::Null, |r| self.rollout_view(r)),
        })
    }

    /// The mirror's settings and what became of its copies; `null` for a route without one.
    fn mirror_view(&self, index: usize, route: &Route) -> Value {
        let Some(mirror) = &route.mirror else {
            return Value::Null;
        };
        let lane = u16::try_from(index)
            .ok()
            .and_then(|i| self.snap.mirrors.get(i));
        let counts = lane.map(|l| l.counts());
        json!({
            "pool": &*self.snap.table.pool(mirror.pool).name,
            "percent": mirror.percent,
            "max_body": mirror.max_body,
            "max_in_flight": mirror.max_in_flight,
            "in_flight": counts.map_or(0, |c| c.in_flight),
            "sent": counts.map_or(0, |c| c.sent),
            "skipped": counts.map_or(0, |c| c.skipped),
            "dropped": counts.map_or(0, |c| c.dropped),
            "failed": counts.map_or(0, |c| c.failed),
            "mismatches": counts.map_or(0, |c| c.mismatches),
        })
    }

    /// The rollout plan and where it stands; `null` for a route without a plan.
    fn rollout_view(&self, raw: &RawRoute) -> Value {
        let Some(plan) = &raw.rollout else {
            return Value::Null;
        };
        let status = self
            .runtime
            .routes
            .get(&raw.name)
            .and_then(|r| r.rollout.as_ref());
        let state = status.map_or(RolloutState::Idle, |s| s.state.clone());
        let mut out = serde_json::Map::new();
        out.insert(
            "plan".into(),
            serde_json::to_value(plan).unwrap_or(Value::Null),
        );
        out.insert("state".into(), Value::from(state.name()));
        match &state {
            RolloutState::Progressing { step } | RolloutState::Paused { step } => {
                out.insert("step".into(), Value::from(*step));
                let percent = plan.steps.get(*step).copied().unwrap_or(100);
                out.insert("canary_percent".into(), Value::from(percent));
            }
            RolloutState::RolledBack { reason } => {
                out.insert("reason".into(), Value::from(reason.as_str()));
            }
            RolloutState::Idle | RolloutState::Promoted => {}
        }
        let history: Vec<Value> = status
            .map(|s| {
                s.history
                    .iter()
                    .map(|h| {
                        json!({"at": h.at, "event": h.event, "from": h.from, "to": h.to, "reason": h.reason})
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert("history".into(), Value::Array(history));
        let analysis = self.analyses.rollouts.get(&raw.name);
        out.insert(
            "analysis".into(),
            analysis.map_or(Value::Null, |a| {
                serde_json::to_value(a).unwrap_or(Value::Null)
            }),
        );
        Value::Object(out)
    }

    pub fn pools(&self) -> Value {
        let table = &self.snap.table;
        let slots = &self.snap.slots;
        let pools: Vec<Value> = table
            .pools
            .iter()
            .enumerate()
            .filter_map(|(p, pool)| {
                let p = u16::try_from(p).ok()?;
                let servers: Vec<Value> = pool
                    .servers
                    .iter()
                    .enumerate()
                    .filter_map(|(s, server)| {
                        let slot = slots.server(p, u16::try_from(s).ok()?);
                        let ejection = slot.ejection();
                        Some(json!({
                            "addr": &*server.addr,
                            "weight": server.weight,
                            "healthy": slot.healthy(),
                            "draining": slot.draining(),
                            "available": slot.available(),
                            "in_flight": slot.in_flight(),
                            "ejections": ejection.count,
                            "ejection": {
                                "count": ejection.count,
                                "ejected": slot.ejected(),
                                "unhealthy": slot.unhealthy(),
                                "reason": ejection.reason.map(|r| r.as_str()),
                                "until": ejection.until.map(|t| {
                                    humantime::format_rfc3339_millis(t).to_string()
                                }),
                                "consecutive_failures": slot.passive.consecutive_failures(),
                            },
                            "checked": slot.active.checked(),
                        }))
                    })
                    .collect();
                let balance = match pool.balance {
                    Balance::RoundRobin => "round_robin",
                    Balance::LeastRequest => "least_request",
                };
                let state = slots.pool(p);
                Some(json!({
                    "name": &*pool.name,
                    "balance": balance,
                    "available": state.available(),
                    "ejected": state.ejected(),
                    "max_ejection_percent": pool.outlier.max_ejection_percent,
                    "servers": servers,
                }))
            })
            .collect();
        Value::Array(pools)
    }

    /// `GET /api/v1/stats`: per route and lane (pool), the last minute's figures, the current
    /// rollout step's (for its canary and stable pools, while it progresses), and one point per
    /// second over the last five minutes.
    pub fn stats(&self) -> Value {
        let now = tokio::time::Instant::now();
        let table = &self.snap.table;
        let routes: Vec<Value> = table
            .routes
            .iter()
            .enumerate()
            .filter_map(|(r, route)| {
                let r = u16::try_from(r).ok()?;
                let status = self
                    .runtime
                    .routes
                    .get(&*route.name)
                    .and_then(|s| s.rollout.as_ref());
                // A paused step shows the figures it was paused on.
                let progressing = match status.map(|s| &s.state) {
                    Some(RolloutState::Progressing { step } | RolloutState::Paused { step }) => {
                        Some(*step)
                    }
                    _ => None,
                };
                let analysis = progressing
                    .and_then(|_| self.analyses.rollouts.get(&route.name))
                    .filter(|a| Some(a.step) == progressing);
                let rollout = route.rollout.as_ref().map(|plan| {
                    let state = status.map_or(RolloutState::Idle, |s| s.state.clone());
                    let step = match state {
                        RolloutState::Progressing { step } | RolloutState::Paused { step } => {
                            Some(step)
                        }
                        _ => None,
                    };
                    json!({
                        "state": state.name(),
                        "step": step,
                        "canary": &*table.pool(plan.canary).name,
                        "stable": &*table.pool(plan.stable).name,
                    })
                });
                let pools: Vec<Value> = self
                    .snap
                    .lanes
                    .of_route(r)
                    .map(|lane| {
                        let totals = lane.answered.totals();
                        let history = lane.history.lock().unwrap_or_else(|e| e.into_inner());
                        let (minute, span) = history.last_minute(now, &totals);
                        let step = analysis.as_ref().and_then(|a| {
                            let plan = route.rollout.as_ref()?;
                            let figures = if *lane.pool == *table.pool(plan.canary).name {
                                a.canary
                            } else if *lane.pool == *table.pool(plan.stable).name {
                                a.stable_in_step
                            } else {
                                return None;
                            };
                            Some(figures_view(&figures, a.elapsed_s))
                        });
                        let points: Vec<_> = history.points().copied().collect();
                        drop(history);
                        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
                        json!({
                            "pool": &*lane.pool,
                            "last_minute": figures_view(
                                &crate::rollout::machine::Figures::of(&minute),
                                span.as_secs_f64(),
                            ),
                            "rollout_step": step,
                            "series": {
                                "step_s": 1,
                                "requests_per_s": points.iter().map(|p| round3(p.requests_per_s())).collect::<Vec<_>>(),
                                "error_rate": points.iter().map(|p| round3(p.error_rate())).collect::<Vec<_>>(),
                                "p99_ms": points.iter().map(|p| p.p99.map(|d| round3(ms(d)))).collect::<Vec<_>>(),
                            },
                        })
                    })
                    .collect();
                Some(json!({"route": &*route.name, "rollout": rollout, "pools": pools}))
            })
            .collect();
        Value::Array(routes)
    }
}

/// A window's figures as the stats view shows them.
fn figures_view(f: &crate::rollout::machine::Figures, seconds: f64) -> Value {
    let per_s = if seconds > 0.0 {
        f.requests as f64 / seconds
    } else {
        0.0
    };
    json!({
        "seconds": round3(seconds),
        "requests": f.requests,
        "requests_per_s": round3(per_s),
        "errors": f.errors,
        "error_rate": f.error_rate,
        "p50_ms": f.p50_ms,
        "p99_ms": f.p99_ms,
    })
}

/// Three decimals are all a chart or a person reads; they keep the JSON short.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
