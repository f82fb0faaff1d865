//! The rollout judge: a pure `step(plan, windows, now) -> Verdict`, with no clock, no I/O and
//! no state of its own, so that the driver and the tests share it. It reads the canary's and
//! the stable pool's windows since the step began and says whether to keep watching, hold,
//! go on, or roll back, with the figures that made the decision. The rollout's states
//! (`RolloutState`), the operator's actions on them and the recorded history live here too;
//! `control` applies them to the runtime state under its lock, with the time passed in.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::route::table::RolloutPlan;
use crate::stats::Window;

/// What the machine is given: the step, when it began, and both pools' windows since then.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Index into `plan.steps`.
    pub step: usize,
    pub started: Instant,
    pub canary: &'a Window,
    pub stable: &'a Window,
    /// Stable's window from the last step in which it had `min_requests`: stands in when
    /// stable has too little traffic of its own now (the canary holds 100 %).
    pub stable_before: Option<&'a Window>,
}

/// One pool's figures over a window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Figures {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Milliseconds; `None` for an empty window.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Figures {
    pub fn of(w: &Window) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            requests: w.requests(),
            errors: w.errors(),
            error_rate: w.error_rate(),
            p50_ms: w.quantile(0.5).map(ms),
            p99_ms: w.quantile(0.99).map(ms),
        }
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} requests, {} errors ({:.2}%), p99 {}",
            self.requests,
            self.errors,
            self.error_rate * 100.0,
            self.p99_ms.map_or("-".to_string(), |p| format!("{p:.0}ms"))
        )
    }
}

/// What the machine decided and on what figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    pub step: usize,
    pub verdict: Verdict,
    /// Why, with the figures; for a breach it names both pools'.
    pub reason: String,
    pub canary: Figures,
    pub stable: Figures,
    /// Stable's figures came from an earlier window (it had too little traffic in this one).
    pub stable_from_earlier: bool,
    /// How long the step has been watched, in seconds.
    pub elapsed_s: f64,
    /// Stable's figures in this step's window, whichever figures judged it.
    #[serde(skip)]
    pub stable_in_step: Figures,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The step is not over and nothing is breached: look again at the next tick.
    Watch,
    /// The interval is over but the canary has fewer than `min_requests`: stay at this step.
    Hold,
    /// Go to the next step.
    Advance,
    /// The last step passed: the rollout is promoted.
    Promote,
    /// A limit is breached: canary weight 0.
    RollBack,
}

/// Judges `input` against `plan` at `now`.
pub fn step(plan: &RolloutPlan, input: &Input<'_>, now: Instant) -> Analysis {
    let canary = Figures::of(input.canary);
    let stable_now = Figures::of(input.stable);
    let (stable, stable_from_earlier) = match input.stable_before {
        Some(before) if stable_now.requests < plan.min_requests => (Figures::of(before), true),
        _ => (stable_now, false),
    };
    let over = now.saturating_duration_since(input.started) >= plan.interval;
    let last = input.step + 1 >= plan.steps.len();
    let done = if last {
        Verdict::Promote
    } else {
        Verdict::Advance
    };
    let analysis = |verdict, reason: String| Analysis {
        step: input.step,
        verdict,
        reason,
        canary,
        stable,
        stable_from_earlier,
        elapsed_s: now.saturating_duration_since(input.started).as_secs_f64(),
        stable_in_step: stable_now,
    };
    let timed_ramp =
        plan.max_error_rate.is_none() && plan.max_p99.is_none() && plan.compare.is_none();
    if timed_ramp {
        return if over {
            analysis(
                done,
                format!("the interval passed (a timed ramp); canary {canary}"),
            )
        } else {
            analysis(Verdict::Watch, format!("canary {canary} so far"))
        };
    }
    if canary.requests < plan.min_requests {
        let why = format!(
            "canary has {} of the {} requests needed",
            canary.requests, plan.min_requests
        );
        return analysis(if over { Verdict::Hold } else { Verdict::Watch }, why);
    }
    if let Some(breach) = breach(plan, &canary, &stable) {
        return analysis(
            Verdict::RollBack,
            format!("{breach}; canary {canary}; stable {stable}"),
        );
    }
    if over {
        analysis(
            done,
            format!("within the plan's limits; canary {canary}; stable {stable}"),
        )
    } else {
        analysis(Verdict::Watch, format!("canary {canary}; stable {stable}"))
    }
}

/// The first limit the canary breaches, said in words; `None` when within every limit.
fn breach(plan: &RolloutPlan, canary: &Figures, stable: &Figures) -> Option<String> {
    if let Some(max) = plan.max_error_rate {
        if canary.error_rate > max {
            return Some(format!(
                "canary error rate {:.2}% over the limit {:.2}%",
                canary.error_rate * 100.0,
                max * 100.0
            ));
        }
    }
    if let (Some(max), Some(p99)) = (plan.max_p99, canary.p99_ms) {
        let max_ms = max.as_secs_f64() * 1000.0;
        if p99 > max_ms {
            return Some(format!(
                "canary p99 {p99:.0}ms over the limit {max_ms:.0}ms"
            ));
        }
    }
    let compare = plan.compare?;
    if stable.requests < plan.min_requests {
        // Too little stable traffic to compare against: the fixed limits alone decide.
        return None;
    }
    let z = two_proportion_z(
        (canary.errors, canary.requests),
        (stable.errors, stable.requests),
        compare.max_error_increase,
    );
    let critical = normal_quantile(compare.confidence);
    if z > critical {
        return Some(format!(
            "canary error rate {:.2}% exceeds stable's {:.2}% by more than {:.2} points (z {z:.2} > {critical:.2} at {:.0}% confidence)",
            canary.error_rate * 100.0,
            stable.error_rate * 100.0,
            compare.max_error_increase * 100.0,
            compare.confidence * 100.0
        ));
    }
    if let (Some(ratio), Some(c), Some(s)) = (compare.max_p99_ratio, canary.p99_ms, stable.p99_ms) {
        if c > ratio * s {
            return Some(format!(
                "canary p99 {c:.0}ms over {ratio} x stable's {s:.0}ms"
            ));
        }
    }
    None
}

/// The one-sided two-proportion z statistic for "the canary's error share exceeds stable's by
/// more than `margin`": `(p_c - p_s - margin) / se`. With no margin the standard error pools
/// both samples (the textbook test of equal proportions); with a margin each sample keeps its
/// own variance. With no variance at all, the difference itself decides (±infinity).
pub fn two_proportion_z(canary: (u64, u64), stable: (u64, u64), margin: f64) -> f64 {
    let (xc, nc) = (canary.0 as f64, canary.1 as f64);
    let (xs, ns) = (stable.0 as f64, stable.1 as f64);
    if nc == 0.0 || ns == 0.0 {
        return 0.0;
    }
    let (pc, ps) = (xc / nc, xs / ns);
    let diff = pc - ps - margin;
    let variance = if margin == 0.0 {
        let p = (xc + xs) / (nc + ns);
        p * (1.0 - p) * (1.0 / nc + 1.0 / ns)
    } else {
        pc * (1.0 - pc) / nc + ps * (1.0 - ps) / ns
    };
    if variance <= 0.0 {
        return if diff > 0.0 {
            f64::INFINITY
        } else if diff < 0.0 {
            f64::NEG_INFINITY
        } else {
            0.0
        };
    }
    diff / variance.sqrt()
}

/// The standard normal quantile for `p` in (0, 1): Abramowitz and Stegun 26.2.23, within
/// 4.5e-4 of the truth, enough to place a critical value.
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let (q, sign) = if p < 0.5 { (p, -1.0) } else { (1.0 - p, 1.0) };
    let t = (-2.0 * q.ln()).sqrt();
    let (c0, c1, c2) = (2.515517, 0.802853, 0.010328);
    let (d1, d2, d3) = (1.432788, 0.189269, 0.001308);
    sign * (t - (c0 + c1 * t + c2 * t * t) / (1.0 + d1 * t + d2 * t * t + d3 * t * t * t))
}

/// Rollout events kept per route; older ones are dropped.
const MAX_HISTORY: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutAction {
    Start,
    Pause,
    Resume,
    Abort,
}

impl RolloutAction {
    pub fn past(self) -> &'static str {
        match self {
            RolloutAction::Start => "started",
            RolloutAction::Pause => "paused",
            RolloutAction::Resume => "resumed",
            RolloutAction::Abort => "aborted",
        }
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RolloutState {
    Idle,
    Progressing { step: usize },
    Paused { step: usize },
    Promoted,
    RolledBack { reason: String },
}

/// A rollout's state and what happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutStatus {
    #[serde(flatten)]
    pub state: RolloutState,
    #[serde(default)]
    pub history: Vec<RolloutEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutEvent {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub event: String,
    /// The state left and the state entered, like `progressing(1)` and `rolled_back`.
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// Why: the operator's action, or the figures the analysis decided on.
    #[serde(default)]
    pub reason: String,
}

impl RolloutState {
    /// Progressing or paused: the rollout owns the route's weights.
    pub fn under_way(&self) -> bool {
        matches!(
            self,
            RolloutState::Progressing { .. } | RolloutState::Paused { .. }
        )
    }

    /// The state with its step, like `progressing(2)`.
    pub fn label(&self) -> String {
        match self {
            RolloutState::Progressing { step } | RolloutState::Paused { step } => {
                format!("{}({step})", self.name())
            }
            other => other.name().to_string(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            RolloutState::Idle => "idle",
            RolloutState::Progressing { .. } => "progressing",
            RolloutState::Paused { .. } => "paused",
            RolloutState::Promoted => "promoted",
            RolloutState::RolledBack { .. } => "rolled_back",
        }
    }
}

impl RolloutStatus {
    /// Enters `state`, recording the event at `at` (seconds since the Unix epoch) with its
    /// reason; the oldest events past `MAX_HISTORY` are dropped.
    pub fn record(&mut self, state: RolloutState, reason: String, at: u64) {
        let from = self.state.label();
        let to = state.label();
        let event = match &state {
            RolloutState::Progressing { step } => format!("progressing (step {step})"),
            RolloutState::Paused { step } => format!("paused (step {step})"),
            RolloutState::RolledBack { reason } => format!("rolled back: {reason}"),
            other => other.name().to_string(),
        };
        self.history.push(RolloutEvent {
            at,
            event,
            from,
            to,
            reason,
        });
        if self.history.len() > MAX_HISTORY {
            let excess = self.history.len() - MAX_HISTORY;
            self.history.drain(..excess);
        }
        self.state = state;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::table::Compare;
    use crate::stats::{bucket, Totals};

    fn plan() -> RolloutPlan {
        RolloutPlan {
            stable: 0,
            canary: 1,
            steps: vec![5, 20, 50, 100],
            interval: Duration::from_secs(60),
            max_error_rate: Some(0.05),
            max_p99: Some(Duration::from_millis(500)),
            min_requests: 50,
            compare: None,
        }
    }

    /// A window of `requests` attempts, `errors` of them errors, all taking `ms`.
    fn window(requests: u64, errors: u64, ms: u64) -> Window {
        let mut t = Totals {
            requests,
            errors,
            ..Totals::default()
        };
        t.latency[bucket(Duration::from_millis(ms))] = requests;
        t.since(&Totals::default())
    }

    fn judge(
        plan: &RolloutPlan,
        step: usize,
        elapsed: u64,
        canary: Window,
        stable: Window,
    ) -> Analysis {
        let started = Instant::now();
        let input = Input {
            step,
            started,
            canary: &canary,
            stable: &stable,
            stable_before: None,
        };
        super::step(plan, &input, started + Duration::from_secs(elapsed))
    }

    #[test]
    fn empty_windows_watch_then_hold() {
        let p = plan();
        let empty = Window::default();
        assert_eq!(judge(&p, 0, 10, empty, empty).verdict, Verdict::Watch);
        let held = judge(&p, 0, 60, empty, empty);
        assert_eq!(held.verdict, Verdict::Hold);
        assert!(held.reason.contains("0 of the 50"), "{}", held.reason);
        assert_eq!(held.canary.p99_ms, None);
    }

    #[test]
    fn a_healthy_step_advances_only_when_the_interval_is_over() {
        let p = plan();
        let ok = window(100, 1, 20);
        assert_eq!(judge(&p, 1, 59, ok, ok).verdict, Verdict::Watch);
        assert_eq!(judge(&p, 1, 60, ok, ok).verdict, Verdict::Advance);
        assert_eq!(judge(&p, 3, 60, ok, ok).verdict, Verdict::Promote);
    }

    #[test]
    fn a_breach_with_min_requests_rolls_back_at_once_and_names_the_figures() {
        let p = plan();
        let bad = judge(&p, 0, 1, window(100, 50, 20), window(1000, 0, 20));
        assert_eq!(bad.verdict, Verdict::RollBack);
        assert!(
            bad.reason.contains("50.00%") && bad.reason.contains("stable 1000 requests"),
            "{}",
            bad.reason
        );
        assert_eq!((bad.canary.requests, bad.canary.errors), (100, 50));
        // Too few requests: no decision yet, however bad.
        assert_eq!(
            judge(&p, 0, 1, window(49, 49, 20), window(0, 0, 1)).verdict,
            Verdict::Watch
        );
    }

    #[test]
    fn a_breach_at_the_last_step_rolls_back_rather_than_promotes() {
        let p = plan();
        let slow = judge(&p, 3, 60, window(100, 0, 900), window(100, 0, 20));
        assert_eq!(slow.verdict, Verdict::RollBack);
        assert!(slow.reason.contains("p99"), "{}", slow.reason);
    }

    #[test]
    fn a_plan_without_limits_is_a_timed_ramp() {
        let mut p = plan();
        p.max_error_rate = None;
        p.max_p99 = None;
        let bad = window(10, 10, 900);
        assert_eq!(judge(&p, 0, 59, bad, bad).verdict, Verdict::Watch);
        assert_eq!(judge(&p, 0, 60, bad, bad).verdict, Verdict::Advance);
    }

    fn compare_plan(max_error_rate: Option<f64>) -> RolloutPlan {
        RolloutPlan {
            max_error_rate,
            max_p99: None,
            compare: Some(Compare {
                max_error_increase: 0.0,
                max_p99_ratio: Some(1.5),
                confidence: 0.95,
            }),
            ..plan()
        }
    }

    #[test]
    fn compare_forgives_a_fleet_wide_bad_minute() {
        let p = compare_plan(None);
        let v = judge(&p, 0, 60, window(200, 40, 20), window(2000, 400, 20));
        assert_eq!(v.verdict, Verdict::Advance, "{}", v.reason);
    }

    #[test]
    fn compare_catches_a_canary_worse_than_stable_under_a_loose_fixed_limit() {
        let p = compare_plan(Some(0.5));
        let v = judge(&p, 0, 1, window(200, 50, 20), window(2000, 0, 20));
        assert_eq!(v.verdict, Verdict::RollBack);
        assert!(
            v.reason.contains("25.00%") && v.reason.contains("0.00%"),
            "{}",
            v.reason
        );
        // Twice as slow as stable: over 1.5 x.
        let v = judge(&p, 0, 1, window(200, 0, 100), window(2000, 0, 40));
        assert_eq!(v.verdict, Verdict::RollBack);
        assert!(v.reason.contains("x stable's"), "{}", v.reason);
    }

    #[test]
    fn stable_figures_from_an_earlier_window_stand_in_at_100_percent() {
        let p = compare_plan(None);
        let (canary, none, before) = (window(200, 50, 20), Window::default(), window(2000, 0, 20));
        let started = Instant::now();
        let input = Input {
            step: 3,
            started,
            canary: &canary,
            stable: &none,
            stable_before: Some(&before),
        };
        let v = step(&p, &input, started + Duration::from_secs(1));
        assert_eq!(v.verdict, Verdict::RollBack, "{}", v.reason);
        assert!(v.stable_from_earlier);
        // Without the earlier window there is nothing to compare with, and no fixed limit.
        let input = Input {
            stable_before: None,
            ..input
        };
        assert_eq!(
            step(&p, &input, started + Duration::from_secs(60)).verdict,
            Verdict::Promote
        );
    }

    #[test]
    fn the_two_proportion_test_matches_a_worked_example() {
        // 30 of 200 against 20 of 200: pooled p = 50/400 = 0.125,
        // se = sqrt(0.125 * 0.875 * (1/200 + 1/200)) = 0.033072, z = 0.05 / se = 1.5119.
        let z = two_proportion_z((30, 200), (20, 200), 0.0);
        assert!((z - 1.5119).abs() < 1e-3, "{z}");
        // One-sided critical values: 1.645 at 95% (not significant), 1.2816 at 90% (significant).
        assert!((normal_quantile(0.95) - 1.6449).abs() < 1e-3);
        assert!((normal_quantile(0.90) - 1.2816).abs() < 1e-3);
        assert!((normal_quantile(0.5)).abs() < 1e-3);
        assert!(z < normal_quantile(0.95) && z > normal_quantile(0.90));
        // With a margin each side keeps its variance: (0.15 - 0.10 - 0.01) / sqrt(.15*.85/200 + .1*.9/200).
        let z = two_proportion_z((30, 200), (20, 200), 0.01);
        let want = 0.04 / (0.15f64 * 0.85 / 200.0 + 0.1 * 0.9 / 200.0).sqrt();
        assert!((z - want).abs() < 1e-9);
        assert_eq!(two_proportion_z((0, 100), (0, 100), 0.0), 0.0);
        assert_eq!(two_proportion_z((5, 100), (0, 0), 0.0), 0.0);
    }
}
