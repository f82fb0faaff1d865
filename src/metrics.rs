//! Metric names (SPEC.md's `veer_` set) and the Prometheus exporter. The recorder is installed
//! once per process, on first use; `/metrics` renders it.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub const CONFIG_VERSION: &str = "veer_config_version";
pub const CONFIG_RELOADS: &str = "veer_config_reloads_total";
pub const ROUTE_WEIGHT: &str = "veer_route_weight_percent";
pub const ROUTE_EFFECTIVE: &str = "veer_route_effective_percent";
pub const MIRROR_REQUESTS: &str = "veer_mirror_requests_total";
pub const MIRROR_MISMATCHES: &str = "veer_mirror_mismatches_total";
pub const ROLLOUT_STEP: &str = "veer_rollout_step";
pub const ROLLOUTS: &str = "veer_rollouts_total";

/// `veer_rollout_step{route}`: the step under way, counted from 1 (paused included); the
/// number of steps once promoted; 0 when idle or rolled back. Set by the rollout driver.
pub fn rollout_step(route: &str, step: usize) {
    handle();
    metrics::gauge!(ROLLOUT_STEP, "route" => route.to_string()).set(step as f64);
}

/// `veer_rollouts_total{route, outcome}`: a rollout ended `promoted` or `rolled_back`.
pub fn rollout_ended(route: &str, outcome: &'static str) {
    handle();
    metrics::counter!(ROLLOUTS, "route" => route.to_string(), "outcome" => outcome).increment(1);
}

/// The process's Prometheus handle, installing the recorder the first time.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): then this
        // handle renders nothing of veer's, which is the embedder's choice.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Counts a config change attempt: `source` is `sighup`, `watch` or `api`.
pub fn config_reload(source: &'static str, ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!(CONFIG_RELOADS, "source" => source, "result" => result).increment(1);
}

/// Publishes each route's effective split: the share of each pool after leaving out pools
/// with no available server, through the lanes' pre-registered gauges. Runs when a table is
/// installed or a pool's availability flips, never per request.
pub fn effective_split(snap: &crate::state::Snapshot) {
    use crate::route::HealthView;
    let table = &snap.table;
    for (r, route) in table.routes.iter().enumerate() {
        let Ok(r) = crate::route::RouteId::try_from(r) else {
            continue;
        };
        let up =
            |e: &crate::route::table::SplitEntry| e.weight > 0 && snap.slots.pool_available(e.pool);
        let total: u64 = route
            .split
            .iter()
            .filter(|e| up(e))
            .map(|e| u64::from(e.weight))
            .sum();
        for (i, entry) in route.split.iter().enumerate() {
            let percent = if total > 0 && up(entry) {
                f64::from(entry.weight) * 100.0 / total as f64
            } else {
                0.0
            };
            if let Some(lane) = snap.lanes.get(r, i) {
                lane.effective.set(percent);
            }
        }
    }
}

/// Publishes the installed table: its version and each route's weights in percent.
pub fn table_installed(table: &crate::route::Table) {
    metrics::gauge!(CONFIG_VERSION).set(table.version as f64);
    for route in &table.routes {
        for entry in &route.split {
            let percent = f64::from(entry.weight) * 100.0 / f64::from(route.total_weight.max(1));
            metrics::gauge!(
                ROUTE_WEIGHT,
                "route" => route.name.to_string(),
                "pool" => table.pool(entry.pool).name.to_string()
            )
            .set(percent);
        }
    }
}

pub const UPSTREAM_ERRORS: &str = "veer_upstream_errors_total";
pub const SERVER_HEALTHY: &str = "veer_server_healthy";
pub const EJECTIONS: &str = "veer_ejections_total";

/// One server's metric handles, registered once when the server first appears in a table and
/// kept with its registry slot, so that the hot path never formats a label.
#[derive(Debug)]
pub struct ServerMetrics {
    /// `veer_upstream_errors_total`, by `outcome::ErrorKind::index`.
    errors: [metrics::Counter; 3],
    healthy: metrics::Gauge,
    /// `veer_ejections_total`: `[active, outlier]`.
    ejections: [metrics::Counter; 2],
}

impl ServerMetrics {
    pub fn register(pool: &str, server: &str) -> Self {
        handle();
        let labels = |kind: &'static str| {
            metrics::counter!(
                UPSTREAM_ERRORS,
                "pool" => pool.to_string(),
                "server" => server.to_string(),
                "kind" => kind
            )
        };
        let ejections = |reason: &'static str| {
            metrics::counter!(
                EJECTIONS,
                "pool" => pool.to_string(),
                "server" => server.to_string(),
                "reason" => reason
            )
        };
        let healthy = metrics::gauge!(
            SERVER_HEALTHY,
            "pool" => pool.to_string(),
            "server" => server.to_string()
        );
        healthy.set(1.0);
        Self {
            errors: crate::outcome::ErrorKind::ALL.map(|k| labels(k.as_str())),
            healthy,
            ejections: [ejections("active"), ejections("outlier")],
        }
    }

    pub fn upstream_error(&self, kind: crate::outcome::ErrorKind) {
        self.errors[kind.index()].increment(1);
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(if healthy { 1.0 } else { 0.0 });
    }

    /// Counts an ejection: `outlier` (passive) or not (`active`).
    pub fn ejected(&self, outlier: bool) {
        self.ejections[usize::from(outlier)].increment(1);
    }
}
