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
pub const REQUESTS: &str = "veer_requests_total";
pub const REQUEST_DURATION: &str = "veer_request_duration_seconds";
pub const CONNECTIONS: &str = "veer_connections_active";

/// `veer_request_duration_seconds`' buckets: HTTP latencies from a millisecond to 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

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
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(REQUEST_DURATION.into()),
                &DURATION_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
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
/// installed or a pool's availability flips, never per request. Publishers take turns and each
/// reads the snapshot in force once it has its turn, so the last to publish is never one that
/// read an older table than another's.
pub fn effective_split(state: &crate::state::State) {
    use crate::route::HealthView;
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let snap = state.snapshot();
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

/// Publishes the installed table's version and its effective split, and registers the series
/// that otherwise would appear only with their first event (reloads; rollouts of routes with a
/// plan), so that a scrape shows every series from the start. Each route's weights are set by
/// its lanes (`lanes::LaneRegistry::reconcile`). Runs on the change path before the change is
/// answered, so a scrape after the answer sees the new split (the health task republishes the
/// effective split when availability flips).
pub fn table_installed(state: &crate::state::State) {
    handle();
    effective_split(state);
    let snap = state.snapshot();
    let table = &snap.table;
    metrics::gauge!(CONFIG_VERSION).set(table.version as f64);
    for source in ["sighup", "api"] {
        for result in ["ok", "error"] {
            metrics::counter!(CONFIG_RELOADS, "source" => source, "result" => result).increment(0);
        }
    }
    for route in table.routes.iter().filter(|r| r.rollout.is_some()) {
        for outcome in ["promoted", "rolled_back"] {
            let route = route.name.to_string();
            metrics::counter!(ROLLOUTS, "route" => route, "outcome" => outcome).increment(0);
        }
    }
}

/// `veer_connections_active{listener}`: one handle per listener (`http`, `https`, `admin`),
/// registered once and raised and lowered by each connection.
pub fn connections(listener: &'static str) -> metrics::Gauge {
    handle();
    metrics::gauge!(CONNECTIONS, "listener" => listener)
}

/// The Prometheus text of the process's metrics, without the series that name a route, pool
/// or server `snap`'s table no longer holds: a removed route's, pool's or server's series end
/// with it. (The exporter keeps what it once registered; what it renders is filtered here, on
/// each scrape, never on the request path.)
pub fn render(snap: &crate::state::Snapshot) -> String {
    let table = &snap.table;
    let known = |name: &str, value: &str, labels: &[(&str, String)]| match name {
        "route" => table.routes.iter().any(|r| &*r.name == value),
        "pool" => table.pools.iter().any(|p| &*p.name == value),
        "server" => {
            let pool = labels.iter().find(|(k, _)| *k == "pool").map(|(_, v)| v);
            table
                .pools
                .iter()
                .filter(|p| pool.is_none_or(|name| *p.name == **name))
                .any(|p| p.servers.iter().any(|s| &*s.addr == value))
        }
        _ => true,
    };
    keep_samples(&handle().render(), |labels| {
        labels.iter().all(|(k, v)| known(k, v, labels))
    })
}

/// `text` (Prometheus exposition format) with only the samples whose labels `keep` accepts,
/// and the `# HELP`/`# TYPE` lines of a metric only where a sample of it remains.
fn keep_samples(text: &str, keep: impl Fn(&[(&str, String)]) -> bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with('#') {
            pending.push_str(line);
            pending.push('\n');
            continue;
        }
        if line.is_empty() {
            if pending.is_empty() {
                out.push('\n');
            }
            pending.clear();
            continue;
        }
        if !keep(&labels(line)) {
            continue;
        }
        out.push_str(&pending);
        pending.clear();
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The labels of one sample line, `name{k="v",…} value`, with escapes undone.
fn labels(line: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let Some(open) = line.find('{') else {
        return out;
    };
    let mut rest = &line[open + 1..];
    while let Some(eq) = rest.find("=\"") {
        let key = rest[..eq].trim_start_matches(',');
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
        let Some(end) = end else {
            break;
        };
        rest = &rest[end..];
        if rest.starts_with('}') {
            break;
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_with_their_escapes() {
        let line = r#"veer_x{route="web",server="a\"b\\c",pool="blue"} 3"#;
        let got = labels(line);
        let want = [("route", "web"), ("server", "a\"b\\c"), ("pool", "blue")];
        assert_eq!(got.len(), 3);
        for ((k, v), (wk, wv)) in got.iter().zip(want) {
            assert_eq!((*k, v.as_str()), (wk, wv));
        }
        assert!(labels("veer_config_version 4").is_empty());
    }

    #[test]
    fn samples_of_what_is_gone_are_left_out_with_their_type_lines() {
        let text = "# TYPE veer_a counter\nveer_a{route=\"web\"} 1\nveer_a{route=\"old\"} 2\n\n\
                    # TYPE veer_b gauge\nveer_b{route=\"old\"} 1\n\n\
                    # TYPE veer_c gauge\nveer_c 7\n\n";
        let kept = keep_samples(text, |l| l.iter().all(|(_, v)| v != "old"));
        assert_eq!(
            kept,
            "# TYPE veer_a counter\nveer_a{route=\"web\"} 1\n\n# TYPE veer_c gauge\nveer_c 7\n\n"
        );
    }
}
