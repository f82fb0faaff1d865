//! The one change path: every change — an admin API call, a SIGHUP reload, a rollout step —
//! goes validate → compile → persist → swap, under one lock, against one version. Owns the
//! runtime state laid over the config file (splits, drains, rollout states) and its state file.
//! Never touches a request: the hot path only ever sees the table this installs.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use crate::rollout::machine::{RolloutAction, RolloutEvent, RolloutState, RolloutStatus};

use crate::config::{self, Compiled, ConfigError, ConfigErrors, RawConfig, Settings};
use crate::state::State;

mod changes;
mod overlay;
mod persist;

use changes::change_runtime;
use overlay::{base_config, effective_config, keep_restart_only, settle};
pub use overlay::{fingerprint, restart_needed};
use persist::{read_state_file, write_state_file, StateLock};

/// A change asked for by an operator or by the rollout driver (`RolloutStep`).
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Set a route's weights. Pools already in the split keep their order (so the ramp keeps
    /// users in place); pools left out get weight 0; new pools are appended.
    Split {
        route: String,
        weights: IndexMap<String, u32>,
    },
    /// 100% to one pool (a blue/green switch).
    Promote { route: String, pool: String },
    /// 100% to the rollout's `stable` pool, or the split's first pool.
    Rollback { route: String },
    /// Stop (or resume) sending new requests to one server.
    Drain {
        pool: String,
        addr: String,
        drain: bool,
    },
    /// Drive a route's rollout plan.
    Rollout {
        route: String,
        action: RolloutAction,
    },
    /// Replace the whole config (`PUT /api/v1/config`).
    Replace(Box<RawConfig>),
    /// The rollout driver's decision for a step. Applies only while the rollout is still
    /// progressing at `step` (an operator's change in between wins); never pauses anything.
    RolloutStep {
        route: String,
        step: usize,
        verdict: StepVerdict,
        /// Why, with the figures that decided.
        reason: String,
    },
}

/// What the rollout driver does to a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepVerdict {
    Advance,
    Promote,
    RollBack,
}

/// Why a change was not applied. Nothing of it is applied, whichever it is.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("version {expected} is stale: the running version is {current}")]
    Stale { expected: u64, current: u64 },
    #[error("invalid change: {0}")]
    Invalid(ConfigErrors),
    #[error("cannot persist the change to {path}: {message}")]
    Persist { path: String, message: String },
    #[error("this process has handed over to a new veer process, which takes the changes now")]
    HandedOver,
}

impl ControlError {
    fn invalid(path: &str, message: impl Into<String>) -> Self {
        ControlError::Invalid(ConfigErrors(vec![ConfigError {
            location: None,
            path: path.to_string(),
            message: message.into(),
        }]))
    }
}

/// Why veer could not take up its saved runtime state at start.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read the state file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the state file {path} is corrupt ({message}); move it away to start from the config file alone")]
    Corrupt { path: String, message: String },
    #[error("the state file {path} no longer fits the config: {errors}")]
    Invalid { path: String, errors: ConfigErrors },
    #[error("cannot write the state file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the state file {path} is in use by another veer process; to replace that process without loss, use `veer run --upgrade`")]
    Locked { path: String },
}

/// What is saved in `admin.state_file`: the runtime changes laid over the config file, each
/// with a fingerprint of the file's definition it was made against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Runtime {
    /// The table version last installed: versions stay monotonic across restarts.
    pub version: u64,
    /// A whole config set through the API, and the file it replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Replaced>,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub routes: IndexMap<String, RouteRuntime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drains: Vec<DrainRuntime>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replaced {
    /// Fingerprint of the config file this replaced; a changed file wins.
    pub file: String,
    pub config: RawConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteRuntime {
    /// Fingerprint of the route's definition the change was made against.
    pub base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<IndexMap<String, u32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainRuntime {
    pub pool: String,
    pub addr: String,
    /// Fingerprint of the pool's definition the drain was made against.
    pub base: String,
}

/// The change path and what it keeps.
#[derive(Debug)]
pub struct Control {
    state: Arc<State>,
    inner: Mutex<Inner>,
    /// What readers see: published after every commit, read without the change lock (which
    /// is held across compile and fsync).
    published: ArcSwap<Published>,
}

/// One consistent view of the config in force, its runtime state and its version.
#[derive(Debug)]
pub struct Published {
    pub effective: Compiled,
    pub runtime: Runtime,
    pub version: u64,
}

#[derive(Debug)]
struct Inner {
    /// The config as last read from the file (or given at start).
    file: RawConfig,
    runtime: Runtime,
    state_file: Option<PathBuf>,
    /// Ownership of the state file, held while this process takes changes.
    state_lock: Option<StateLock>,
    /// Changes go to the process this one handed over to (`veer run --upgrade`).
    handed_over: bool,
    /// The config in force: the file (or its API replacement) with the runtime laid over it.
    effective: Compiled,
}

impl Control {
    /// Takes up `compiled` (from the config file) with the runtime state saved in
    /// `admin.state_file`, if any, and starts serving the result. A state file that cannot be
    /// read or parsed is an error, never silently dropped.
    pub fn start(compiled: Compiled) -> Result<Self, StateFileError> {
        Self::start_with(compiled, None)
    }

    /// As `start`, for a process taking over from another (`veer run --upgrade`): without a
    /// state file, the runtime state `inherited` from the old process is laid over the file;
    /// with one, the state file (which the old process wrote last) is.
    pub fn start_with(
        compiled: Compiled,
        inherited: Option<Runtime>,
    ) -> Result<Self, StateFileError> {
        let state_file = compiled
            .settings
            .admin
            .as_ref()
            .and_then(|a| a.state_file.clone());
        let state_lock = state_file.as_deref().map(StateLock::acquire).transpose()?;
        let runtime = match &state_file {
            Some(path) => read_state_file(path)?,
            None => inherited.unwrap_or_default(),
        };
        let file = compiled.raw.clone();
        let (mut runtime, effective) = match settle(&file, runtime) {
            Ok(settled) => settled,
            Err(errors) => {
                return Err(StateFileError::Invalid {
                    path: state_file
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    errors,
                })
            }
        };
        // A restart with saved state starts a new version (the file may have changed what the
        // state meant), written back at once: a version never names two different tables.
        if let Some(path) = &state_file {
            if runtime != Runtime::default() {
                runtime.version += 1;
                write_state_file(path, &runtime).map_err(|source| StateFileError::Write {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        let mut table = effective.table.clone();
        table.version = runtime.version.max(1);
        let state = Arc::new(State::new(table));
        state.set_access_log(effective.settings.log.access);
        let published = ArcSwap::from_pointee(Published {
            effective: effective.clone(),
            runtime: runtime.clone(),
            version: runtime.version.max(1),
        });
        let control = Self {
            state,
            inner: Mutex::new(Inner {
                file,
                runtime,
                state_file,
                state_lock,
                handed_over: false,
                effective,
            }),
            published,
        };
        control.apply_drains(&control.lock());
        crate::metrics::handle();
        crate::metrics::table_installed(&control.state);
        Ok(control)
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// The running version (the `ETag`).
    pub fn version(&self) -> u64 {
        self.state.snapshot().table.version
    }

    /// The config in force, its runtime state and its version, as one consistent view.
    /// Never waits for a change in progress.
    pub fn published(&self) -> Arc<Published> {
        self.published.load_full()
    }

    /// The config in force and its version.
    pub fn effective(&self) -> (Compiled, u64) {
        let view = self.published();
        (view.effective.clone(), view.version)
    }

    /// The runtime state (rollout states, drains, splits set at runtime).
    pub fn runtime(&self) -> Runtime {
        self.published().runtime.clone()
    }

    /// Applies `change` if `expect` (an `If-Match` version) is absent or current. Blocking: it
    /// writes the state file; async callers run it on a blocking thread.
    pub fn apply(&self, change: Change, expect: Option<u64>) -> Result<u64, ControlError> {
        let inner = self.lock();
        if inner.handed_over {
            return Err(ControlError::HandedOver);
        }
        let current = self.version();
        if let Some(expected) = expect.filter(|&e| e != current) {
            return Err(ControlError::Stale { expected, current });
        }
        // A replaced config reads the certificate files again (their paths stay the file's).
        let certificates = match &change {
            Change::Replace(_) => Some(load_certificates(&inner.effective)?),
            _ => None,
        };
        let mut runtime = inner.runtime.clone();
        let base = base_config(&inner.file, &runtime);
        change_runtime(&mut runtime, &base, &inner.file, change)?;
        let version = self.commit(inner, runtime)?;
        if let Some(certificates) = certificates {
            self.state.certificates.set(certificates);
        }
        Ok(version)
    }

    /// A new config file (SIGHUP or the file watch): runtime changes whose route or pool
    /// definition changed in the file are dropped (the file wins); the rest stay.
    pub fn reload(&self, file: RawConfig) -> Result<u64, ControlError> {
        let mut inner = self.lock();
        if inner.handed_over {
            return Err(ControlError::HandedOver);
        }
        if file == inner.file {
            // The same file again: nothing to swap, and no new version to make `If-Match`
            // holders stale; the certificate files are read again all the same.
            let certificates = load_certificates(&inner.effective)?;
            self.state.certificates.set(certificates);
            return Ok(self.version());
        }
        let runtime = inner.runtime.clone();
        let (runtime, compiled) = settle(&file, runtime).map_err(ControlError::Invalid)?;
        let certificates = load_certificates(&compiled)?;
        let previous = std::mem::replace(&mut inner.file, file);
        match self.commit_compiled(&mut inner, runtime, compiled) {
            Ok(v) => {
                self.state.certificates.set(certificates);
                Ok(v)
            }
            Err(e) => {
                inner.file = previous;
                Err(e)
            }
        }
    }

    /// Hands the change path over to a new process: no change is taken from now on, the state
    /// file (holding every change acknowledged so far) is released for the new process to lock,
    /// and the runtime state is returned for it. A change in progress finishes first.
    pub fn hand_over(&self) -> Runtime {
        let mut inner = self.lock();
        inner.handed_over = true;
        inner.state_lock = None;
        inner.runtime.clone()
    }

    /// The new process could not take over: this one owns the state file and takes changes
    /// again.
    pub fn take_back(&self) -> Result<(), StateFileError> {
        let mut inner = self.lock();
        if let Some(path) = &inner.state_file {
            inner.state_lock = Some(StateLock::acquire(path)?);
        }
        inner.handed_over = false;
        Ok(())
    }

    fn commit(
        &self,
        mut inner: MutexGuard<'_, Inner>,
        runtime: Runtime,
    ) -> Result<u64, ControlError> {
        let effective = effective_config(&inner.file, &runtime);
        let compiled = config::from_raw(effective).map_err(ControlError::Invalid)?;
        compiled.admit().map_err(ControlError::Invalid)?;
        self.commit_compiled(&mut inner, runtime, compiled)
    }

    /// Persist, then swap. The lock is held throughout, so two writers never both win.
    fn commit_compiled(
        &self,
        inner: &mut Inner,
        mut runtime: Runtime,
        compiled: Compiled,
    ) -> Result<u64, ControlError> {
        let version = self.version() + 1;
        runtime.version = version;
        if let Some(path) = &inner.state_file {
            write_state_file(path, &runtime).map_err(|e| ControlError::Persist {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        }
        inner.runtime = runtime;
        inner.effective = compiled.clone();
        self.state.set_access_log(compiled.settings.log.access);
        let installed = self.state.install(compiled.table);
        self.apply_drains(inner);
        self.published.store(Arc::new(Published {
            effective: inner.effective.clone(),
            runtime: inner.runtime.clone(),
            version: installed,
        }));
        crate::metrics::table_installed(&self.state);
        Ok(installed)
    }

    /// Sets every server's drain flag from the runtime state.
    fn apply_drains(&self, inner: &Inner) {
        let snap = self.state.snapshot();
        for (p, pool) in snap.table.pools.iter().enumerate() {
            for (s, server) in pool.servers.iter().enumerate() {
                let drained = inner
                    .runtime
                    .drains
                    .iter()
                    .any(|d| *d.pool == *pool.name && *d.addr == *server.addr);
                let (Ok(p), Ok(s)) = (u16::try_from(p), u16::try_from(s)) else {
                    continue;
                };
                snap.slots.server(p, s).set_draining(drained);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The certificates of `compiled`'s `[tls]`, read from their files: a file that is missing,
/// unreadable or mismatched refuses the change, and the certificates in use stay.
fn load_certificates(
    compiled: &Compiled,
) -> Result<Option<Arc<crate::tls::Certificates>>, ControlError> {
    crate::tls::load(compiled.settings.tls.as_ref()).map_err(ControlError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[listen]
http = "127.0.0.1:0"
[pools.blue]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
[pools.green]
servers = ["127.0.0.1:9011"]
[[routes]]
name = "web"
split = { blue = 95, green = 5 }
[routes.rollout]
stable = "blue"
canary = "green"
steps = [5, 20, 50, 100]
[[routes]]
name = "api"
path_prefix = "/api"
split = { blue = 1 }
"#;

    fn control(extra: &str) -> Control {
        let compiled = config::from_toml(&format!("{BASE}\n{extra}"), "t.toml").unwrap();
        Control::start(compiled).unwrap()
    }

    fn weights(c: &Control, route: &str) -> Vec<(String, u32)> {
        let (compiled, _) = c.effective();
        let r = compiled
            .raw
            .routes
            .iter()
            .find(|r| r.name == route)
            .unwrap();
        r.split.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn split(pairs: &[(&str, u32)]) -> IndexMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn a_split_keeps_the_pool_order_and_zeroes_pools_left_out() {
        let c = control("");
        let v = c
            .apply(
                Change::Split {
                    route: "web".into(),
                    weights: split(&[("green", 20), ("blue", 80)]),
                },
                None,
            )
            .unwrap();
        assert_eq!(v, 2);
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 80), ("green".into(), 20)]
        );
        c.apply(
            Change::Split {
                route: "api".into(),
                weights: split(&[("green", 1)]),
            },
            None,
        )
        .unwrap();
        assert_eq!(
            weights(&c, "api"),
            vec![("blue".into(), 0), ("green".into(), 1)]
        );
    }

    /// `name{route="gauged",pool="POOL"}`'s value in what `/metrics` would show now.
    fn gauged(c: &Control, name: &str, pool: &str) -> Option<f64> {
        let text = crate::metrics::render(&c.state.snapshot());
        let labels = format!("route=\"gauged\",pool=\"{pool}\"");
        text.lines()
            .filter(|l| l.starts_with(name) && l.contains(&labels))
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
    }

    #[test]
    fn the_effective_split_is_published_before_a_change_is_answered() {
        // No health task runs here: only the change path publishes.
        let c = control(
            "[[routes]]\nname = \"gauged\"\npath_prefix = \"/gauged\"\n\
             split = { blue = 3, green = 1 }\n",
        );
        let effective = "veer_route_effective_percent";
        assert_eq!(gauged(&c, effective, "green"), Some(25.0));
        c.apply(
            Change::Split {
                route: "gauged".into(),
                weights: split(&[("blue", 1), ("green", 1)]),
            },
            None,
        )
        .unwrap();
        assert_eq!(gauged(&c, effective, "blue"), Some(50.0));
        assert_eq!(gauged(&c, effective, "green"), Some(50.0));
    }

    #[test]
    fn a_stale_version_or_an_invalid_change_applies_nothing() {
        let c = control("");
        let change = Change::Promote {
            route: "web".into(),
            pool: "green".into(),
        };
        assert!(matches!(
            c.apply(change.clone(), Some(7)),
            Err(ControlError::Stale {
                expected: 7,
                current: 1
            })
        ));
        let zero = Change::Split {
            route: "web".into(),
            weights: split(&[("blue", 0), ("green", 0)]),
        };
        assert!(matches!(c.apply(zero, None), Err(ControlError::Invalid(_))));
        let unknown = Change::Split {
            route: "web".into(),
            weights: split(&[("purple", 1)]),
        };
        match c.apply(unknown, None) {
            Err(ControlError::Invalid(e)) => assert!(e.to_string().contains("purple"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.apply(
                Change::Rollback {
                    route: "nope".into()
                },
                None
            ),
            Err(ControlError::NotFound(_))
        ));
        assert_eq!(c.version(), 1);
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 95), ("green".into(), 5)]
        );
        assert_eq!(c.apply(change, Some(1)).unwrap(), 2);
    }

    #[test]
    fn two_writers_with_the_same_version_never_both_win() {
        let c = Arc::new(control(""));
        for round in 0..20u32 {
            let expect = c.version();
            let handles: Vec<_> = (0..2u32)
                .map(|i| {
                    let c = Arc::clone(&c);
                    std::thread::spawn(move || {
                        c.apply(
                            Change::Split {
                                route: "web".into(),
                                weights: split(&[("blue", 50 + round + i), ("green", 1)]),
                            },
                            Some(expect),
                        )
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let won = results.iter().filter(|r| r.is_ok()).count();
            let stale = results
                .iter()
                .filter(|r| matches!(r, Err(ControlError::Stale { .. })))
                .count();
            assert_eq!((won, stale), (1, 1), "round {round}: {results:?}");
        }
    }

    #[test]
    fn promote_and_rollback_move_everything_at_once() {
        let c = control("");
        c.apply(
            Change::Promote {
                route: "web".into(),
                pool: "green".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 0), ("green".into(), 100)]
        );
        c.apply(
            Change::Rollback {
                route: "web".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 100), ("green".into(), 0)]
        );
        // Without a rollout plan, rollback goes to the split's first pool.
        c.apply(
            Change::Rollback {
                route: "api".into(),
            },
            None,
        )
        .unwrap();
        assert_eq!(weights(&c, "api"), vec![("blue".into(), 100)]);
    }

    #[test]
    fn rollout_actions_follow_the_state_machine() {
        let c = control("");
        let act = |action| {
            c.apply(
                Change::Rollout {
                    route: "web".into(),
                    action,
                },
                None,
            )
        };
        assert!(matches!(
            act(RolloutAction::Pause),
            Err(ControlError::Invalid(_))
        ));
        act(RolloutAction::Start).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 95), ("green".into(), 5)]
        );
        assert!(matches!(
            act(RolloutAction::Start),
            Err(ControlError::Invalid(_))
        ));
        act(RolloutAction::Pause).unwrap();
        act(RolloutAction::Resume).unwrap();
        act(RolloutAction::Abort).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 100), ("green".into(), 0)]
        );
        let status = c.runtime().routes["web"].rollout.clone().unwrap();
        assert!(matches!(status.state, RolloutState::RolledBack { .. }));
        assert_eq!(status.history.len(), 4);
        let no_plan = c.apply(
            Change::Rollout {
                route: "api".into(),
                action: RolloutAction::Start,
            },
            None,
        );
        assert!(matches!(no_plan, Err(ControlError::Invalid(_))));
    }

    #[test]
    fn driver_steps_apply_only_to_the_step_they_judged_and_operators_pause() {
        let c = control("");
        let start = Change::Rollout {
            route: "web".into(),
            action: RolloutAction::Start,
        };
        c.apply(start, None).unwrap();
        let driver = |step, verdict| {
            c.apply(
                Change::RolloutStep {
                    route: "web".into(),
                    step,
                    verdict,
                    reason: "figures".into(),
                },
                None,
            )
        };
        driver(0, StepVerdict::Advance).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 80), ("green".into(), 20)]
        );
        // A verdict on a step the rollout has left is refused and changes nothing.
        assert!(matches!(
            driver(0, StepVerdict::RollBack),
            Err(ControlError::Invalid(_))
        ));
        let split = Change::Split {
            route: "web".into(),
            weights: split(&[("blue", 60), ("green", 40)]),
        };
        c.apply(split, None).unwrap();
        let status = c.runtime().routes["web"].rollout.clone().unwrap();
        assert_eq!(status.state, RolloutState::Paused { step: 1 });
        let last = status.history.last().unwrap();
        assert_eq!(
            (last.from.as_str(), last.to.as_str(), last.reason.as_str()),
            (
                "progressing(1)",
                "paused(1)",
                "paused by an operator's split"
            )
        );
        // Paused: the driver's verdicts no longer apply.
        assert!(driver(1, StepVerdict::Advance).is_err());
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 60), ("green".into(), 40)]
        );
        let resume = Change::Rollout {
            route: "web".into(),
            action: RolloutAction::Resume,
        };
        c.apply(resume, None).unwrap();
        driver(1, StepVerdict::Promote).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 0), ("green".into(), 100)]
        );
        let rollback = Change::Rollback {
            route: "web".into(),
        };
        c.apply(rollback, None).unwrap();
        let status = c.runtime().routes["web"].rollout.clone().unwrap();
        assert!(
            matches!(status.state, RolloutState::RolledBack { .. }),
            "{status:?}"
        );
    }

    #[test]
    fn drains_flag_the_server_and_unknown_servers_are_not_found() {
        let c = control("");
        c.apply(
            Change::Drain {
                pool: "blue".into(),
                addr: "127.0.0.1:9002".into(),
                drain: true,
            },
            None,
        )
        .unwrap();
        let snap = c.state().snapshot();
        assert!(snap.slots.server(0, 1).draining());
        assert!(!snap.slots.server(0, 0).draining());
        let missing = c.apply(
            Change::Drain {
                pool: "blue".into(),
                addr: "127.0.0.1:1".into(),
                drain: true,
            },
            None,
        );
        assert!(matches!(missing, Err(ControlError::NotFound(_))));
        c.apply(
            Change::Drain {
                pool: "blue".into(),
                addr: "127.0.0.1:9002".into(),
                drain: false,
            },
            None,
        )
        .unwrap();
        assert!(!c.state().snapshot().slots.server(0, 1).draining());
    }

    /// A fresh directory for one test, removed when the test ends.
    fn temp_dir(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("veer-control-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_state_file_restores_changes_unless_the_file_changed_that_route() {
        let dir = temp_dir("restore");
        let state = dir.join("state.json");
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
            state.display()
        );
        let c = control(&admin);
        c.apply(
            Change::Split {
                route: "web".into(),
                weights: split(&[("blue", 70), ("green", 30)]),
            },
            None,
        )
        .unwrap();
        c.apply(
            Change::Split {
                route: "api".into(),
                weights: split(&[("blue", 1), ("green", 1)]),
            },
            None,
        )
        .unwrap();
        drop(c);
        let again = control(&admin);
        assert_eq!(
            again.version(),
            4,
            "a restart with saved state starts the version after the saved one"
        );
        assert_eq!(
            weights(&again, "web"),
            vec![("blue".into(), 70), ("green".into(), 30)]
        );
        drop(again);
        // The file's "web" changes: the file wins there; "api" keeps its runtime split.
        let edited = BASE.replace(
            "split = { blue = 95, green = 5 }",
            "split = { blue = 60, green = 40 }",
        );
        let compiled = config::from_toml(&format!("{edited}\n{admin}"), "t.toml").unwrap();
        let c = Control::start(compiled).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 60), ("green".into(), 40)]
        );
        assert_eq!(
            weights(&c, "api"),
            vec![("blue".into(), 1), ("green".into(), 1)]
        );
    }

    #[test]
    fn a_corrupt_state_file_is_a_clear_error() {
        let dir = temp_dir("corrupt");
        let state = dir.join("state.json");
        std::fs::write(&state, "{\"version\": 3, \"routes\": {\"web\": {\"ba").unwrap();
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
            state.display()
        );
        let compiled = config::from_toml(&format!("{BASE}\n{admin}"), "t.toml").unwrap();
        let err = Control::start(compiled).unwrap_err().to_string();
        assert!(
            err.contains("corrupt") && err.contains("state.json"),
            "{err}"
        );
    }

    #[test]
    fn a_reload_drops_runtime_changes_to_routes_the_file_changed() {
        let c = control("");
        c.apply(
            Change::Split {
                route: "web".into(),
                weights: split(&[("blue", 50), ("green", 50)]),
            },
            None,
        )
        .unwrap();
        let same = config::from_toml(BASE, "t.toml").unwrap().raw;
        c.reload(same).unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 50), ("green".into(), 50)]
        );
        let edited = BASE.replace(
            "split = { blue = 95, green = 5 }",
            "split = { blue = 99, green = 1 }",
        );
        c.reload(config::from_toml(&edited, "t.toml").unwrap().raw)
            .unwrap();
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 99), ("green".into(), 1)]
        );
    }

    #[test]
    fn drains_and_rollout_states_survive_a_restart() {
        let dir = temp_dir("survive");
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
            dir.join("state.json").display()
        );
        let c = control(&admin);
        c.apply(
            Change::Drain {
                pool: "blue".into(),
                addr: "127.0.0.1:9002".into(),
                drain: true,
            },
            None,
        )
        .unwrap();
        c.apply(
            Change::Rollout {
                route: "web".into(),
                action: RolloutAction::Start,
            },
            None,
        )
        .unwrap();
        drop(c);
        let again = control(&admin);
        assert!(again.state().snapshot().slots.server(0, 1).draining());
        let status = again.runtime().routes["web"].rollout.clone().unwrap();
        assert_eq!(status.state, RolloutState::Progressing { step: 0 });
        assert_eq!(again.published().version, 4);
    }

    #[test]
    fn an_unreadable_state_file_is_a_clear_error() {
        let dir = temp_dir("unreadable");
        // A directory where the file should be: it exists but cannot be read as one.
        let state = dir.join("state.json");
        std::fs::create_dir_all(&state).unwrap();
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
            state.display()
        );
        let compiled = config::from_toml(&format!("{BASE}\n{admin}"), "t.toml").unwrap();
        let err = Control::start(compiled).unwrap_err().to_string();
        assert!(
            err.contains("cannot read the state file") && err.contains("state.json"),
            "{err}"
        );
    }

    #[test]
    fn a_change_that_cannot_be_persisted_is_not_applied() {
        let dir = temp_dir("persist");
        let admin = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"",
            dir.join("gone").join("state.json").display()
        );
        std::fs::create_dir_all(dir.join("gone")).unwrap();
        let c = control(&admin);
        // The directory goes away under the running process: the next write fails.
        std::fs::remove_dir_all(dir.join("gone")).unwrap();
        let result = c.apply(
            Change::Promote {
                route: "web".into(),
                pool: "green".into(),
            },
            None,
        );
        assert!(
            matches!(result, Err(ControlError::Persist { .. })),
            "{result:?}"
        );
        assert_eq!(c.version(), 1);
        assert_eq!(
            weights(&c, "web"),
            vec![("blue".into(), 95), ("green".into(), 5)]
        );
    }

    #[test]
    fn a_reload_drops_a_runtime_split_naming_a_pool_the_file_removed() {
        let c = control("");
        c.apply(
            Change::Split {
                route: "api".into(),
                weights: split(&[("blue", 1), ("green", 1)]),
            },
            None,
        )
        .unwrap();
        let without_green = BASE
            .replace("[pools.green]\nservers = [\"127.0.0.1:9011\"]\n", "")
            .replace("split = { blue = 95, green = 5 }", "split = { blue = 1 }")
            .replace("[routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [5, 20, 50, 100]\n", "");
        let raw = config::from_toml(&without_green, "t.toml").unwrap().raw;
        c.reload(raw)
            .expect("the file wins; the stale runtime split is dropped");
        assert_eq!(weights(&c, "api"), vec![("blue".into(), 1)]);
    }

    #[test]
    fn reloading_the_same_file_makes_no_new_version() {
        let c = control("");
        let same = config::from_toml(BASE, "t.toml").unwrap().raw;
        let v = c.reload(same).unwrap();
        assert_eq!(v, 1);
        assert_eq!(c.version(), 1);
    }

    #[test]
    fn a_replaced_config_keeps_the_files_restart_only_settings() {
        let c = control("[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"secret\"");
        let mut raw = c.effective().0.raw;
        raw.admin = None;
        raw.listen = Some(config::RawListen {
            http: Some("127.0.0.1:1".into()),
            https: None,
            upgrade_socket: None,
        });
        c.apply(Change::Replace(Box::new(raw)), None).unwrap();
        let (effective, _) = c.effective();
        assert_eq!(
            effective.settings.admin.unwrap().token.as_deref(),
            Some("secret")
        );
        assert_eq!(effective.settings.listen.http.port(), 0);
    }
}
