//! What `veer ctl` prints: the admin API's answers read leniently (a field the server leaves
//! out reads as empty, never a panic) and laid out for people.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;

/// `GET /api/v1/routes`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RoutesBody {
    pub version: u64,
    pub routes: Vec<RouteView>,
}

/// A route change's answer: `{"version": N, "route": {...}}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RouteBody {
    pub version: u64,
    pub route: Option<RouteView>,
    /// Set when the change paused a running rollout.
    #[serde(default)]
    pub note: Option<String>,
}

/// `GET /api/v1/pools`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PoolsBody {
    pub version: u64,
    pub pools: Vec<PoolView>,
}

/// An answer that only reports the version (a drain).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct VersionBody {
    pub version: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RouteView {
    pub name: String,
    pub hosts: Vec<String>,
    pub path_prefix: Option<String>,
    pub split: Vec<SplitView>,
    pub rollout: Option<RolloutView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SplitView {
    pub pool: String,
    pub weight: u64,
    pub effective_percent: Option<f64>,
    pub available: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RolloutView {
    pub plan: Option<PlanView>,
    pub state: String,
    pub step: Option<usize>,
    pub canary_percent: Option<f64>,
    pub reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PlanView {
    pub stable: String,
    pub canary: String,
    pub steps: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PoolView {
    pub name: String,
    pub servers: Vec<ServerView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ServerView {
    pub addr: String,
    pub healthy: bool,
    pub draining: bool,
    pub in_flight: u64,
    pub ejection: Option<EjectionView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EjectionView {
    pub count: u64,
    pub reason: Option<String>,
    pub until: Option<String>,
}

/// `-`, or `2, last outlier, until 2026-…Z`.
fn ejections(view: Option<&EjectionView>) -> String {
    let Some(e) = view.filter(|e| e.count > 0) else {
        return "-".to_string();
    };
    let mut text = e.count.to_string();
    if let Some(reason) = &e.reason {
        let _ = write!(text, ", last {reason}");
    }
    if let Some(until) = &e.until {
        let _ = write!(text, ", until {until}");
    }
    text
}

/// `veer ctl status`: the routes table, then the pools table.
pub fn status(admin: &str, routes: &RoutesBody, pools: &PoolsBody) -> String {
    let mut out = format!("admin API {admin}, config version {}\n\n", routes.version);
    if routes.routes.is_empty() {
        out.push_str("no routes\n");
    } else {
        let mut rows = vec![vec![
            "ROUTE".to_string(),
            "HOSTS".to_string(),
            "PATH".to_string(),
            "SPLIT".to_string(),
            "ROLLOUT".to_string(),
        ]];
        for r in &routes.routes {
            rows.push(vec![
                r.name.clone(),
                if r.hosts.is_empty() {
                    "*".to_string()
                } else {
                    r.hosts.join(",")
                },
                r.path_prefix.clone().unwrap_or_else(|| "/".to_string()),
                split(&r.split),
                r.rollout.as_ref().map_or_else(|| "-".to_string(), rollout),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out.push('\n');
    if pools.pools.is_empty() {
        out.push_str("no pools\n");
        return out;
    }
    let mut rows = vec![vec![
        "POOL".to_string(),
        "SERVER".to_string(),
        "HEALTHY".to_string(),
        "DRAINING".to_string(),
        "IN-FLIGHT".to_string(),
        "EJECTIONS".to_string(),
    ]];
    for p in &pools.pools {
        if p.servers.is_empty() {
            rows.push(vec![
                p.name.clone(),
                "-".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        for (i, s) in p.servers.iter().enumerate() {
            rows.push(vec![
                if i == 0 {
                    p.name.clone()
                } else {
                    String::new()
                },
                s.addr.clone(),
                yes_no(s.healthy),
                yes_no(s.draining),
                s.in_flight.to_string(),
                ejections(s.ejection.as_ref()),
            ]);
        }
    }
    out.push_str(&table(&rows));
    out
}

/// After a route change: `web: blue 80 (80%), green 20 (20%) — version 7`, with the rollout
/// when one has started.
pub fn route_change(body: &RouteBody, route_name: &str) -> String {
    let Some(route) = &body.route else {
        return format!("{route_name}: done — version {}\n", body.version);
    };
    let mut line = format!("{}: {}", route.name, split(&route.split));
    if let Some(r) = route.rollout.as_ref().filter(|r| r.state != "idle") {
        let _ = write!(line, "; rollout {}", rollout(r));
    }
    let _ = writeln!(line, " — version {}", body.version);
    if let Some(note) = &body.note {
        let _ = writeln!(line, "note: {note}");
    }
    line
}

/// After a drain or undrain.
pub fn drain_change(pool: &str, server: &str, drain: bool, version: u64) -> String {
    let what = if drain {
        "draining (no new requests; those in flight finish)"
    } else {
        "serving (no longer draining)"
    };
    format!("{pool} {server}: {what} — version {version}\n")
}

/// `blue 80 (80%), green 20 (20%)`; a pool with no available server says so, and a pool that
/// takes a different share because of that shows the share it serves now.
pub fn split(entries: &[SplitView]) -> String {
    if entries.is_empty() {
        return "-".to_string();
    }
    let total: u64 = entries.iter().map(|e| e.weight).sum();
    let parts: Vec<String> = entries
        .iter()
        .map(|e| {
            let share = if total == 0 {
                0.0
            } else {
                e.weight as f64 * 100.0 / total as f64
            };
            let mut text = format!("{} {} ({}", e.pool, e.weight, percent(share));
            if e.available == Some(false) {
                text.push_str(", unavailable");
            } else if let Some(now) = e.effective_percent {
                if (now - share).abs() >= 0.05 {
                    let _ = write!(text, ", serving {}", percent(now));
                }
            }
            text.push(')');
            text
        })
        .collect();
    parts.join(", ")
}

/// `progressing: step 2/4, green at 20%`, `paused: …`, `promoted`, `rolled back: reason`.
pub fn rollout(r: &RolloutView) -> String {
    let steps = r.plan.as_ref().map_or(0, |p| p.steps.len());
    let canary = r
        .plan
        .as_ref()
        .map(|p| p.canary.as_str())
        .unwrap_or("canary");
    let at_step = |word: &str| {
        let mut text = word.to_string();
        if let Some(step) = r.step {
            if steps > 0 {
                let _ = write!(text, ": step {}/{steps}", step + 1);
            } else {
                let _ = write!(text, ": step {}", step + 1);
            }
            if let Some(p) = r.canary_percent {
                let _ = write!(text, ", {canary} at {}", percent(p));
            }
        }
        text
    };
    match r.state.as_str() {
        "progressing" => at_step("progressing"),
        "paused" => at_step("paused"),
        "rolled_back" => match r.reason.as_deref().filter(|s| !s.is_empty()) {
            Some(reason) => format!("rolled back: {reason}"),
            None => "rolled back".to_string(),
        },
        "" => "-".to_string(),
        other => other.replace('_', " "),
    }
}

/// `80%`, `33.3%`.
pub fn percent(p: f64) -> String {
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The one-line message of an error body: its `"error"`, else the body's first line.
pub fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        if let Some(msg) = json.get("error").and_then(Value::as_str) {
            return Some(msg.to_string());
        }
    }
    let text = String::from_utf8_lossy(body);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(line.chars().take(300).collect())
}

/// A 422's `"errors"` as `  path: message` lines.
pub fn error_list(body: &[u8]) -> Vec<String> {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(errors) = json.get("errors").and_then(Value::as_array) else {
        return Vec::new();
    };
    errors
        .iter()
        .map(|e| {
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| e.to_string(), str::to_string);
            match e
                .get("path")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
            {
                Some(path) => format!("  {path}: {message}"),
                None => format!("  {message}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes() -> RoutesBody {
        serde_json::from_value(serde_json::json!({
            "version": 7,
            "routes": [
                {"name": "web", "hosts": [], "path_prefix": "/",
                 "split": [
                    {"pool": "blue", "weight": 80, "percent": 80.0, "effective_percent": 80.0, "available": true},
                    {"pool": "green", "weight": 20, "percent": 20.0, "effective_percent": 20.0, "available": true}],
                 "pins": [], "hash_key": null, "sticky": null,
                 "rollout": {"plan": {"stable": "blue", "canary": "green", "steps": [5, 20, 50, 100]},
                             "state": "progressing", "step": 1, "canary_percent": 20, "history": []}},
                {"name": "api", "hosts": ["api.example.com"], "path_prefix": "/v1",
                 "split": [
                    {"pool": "blue", "weight": 2, "effective_percent": 100.0, "available": true},
                    {"pool": "green", "weight": 1, "effective_percent": 0.0, "available": false}],
                 "rollout": null}
            ]
        }))
        .unwrap()
    }

    fn pools() -> PoolsBody {
        serde_json::from_value(serde_json::json!({
            "version": 7,
            "pools": [
                {"name": "blue", "balance": "round_robin", "servers": [
                    {"addr": "10.0.0.1:80", "weight": 1, "healthy": true, "draining": false, "available": true, "in_flight": 3, "ejections": 0},
                    {"addr": "10.0.0.2:80", "weight": 1, "healthy": true, "draining": true, "available": false, "in_flight": 0, "ejections": 0}]},
                {"name": "green", "servers": [
                    {"addr": "10.0.0.3:80", "healthy": false, "draining": false, "in_flight": 0,
                     "ejection": {"count": 2, "reason": "outlier", "until": "2026-01-02T03:04:05.000Z"}}]}
            ]
        }))
        .unwrap()
    }

    #[test]
    fn status_lays_out_routes_and_pools() {
        let text = status("http://127.0.0.1:9901", &routes(), &pools());
        let expected = "\
admin API http://127.0.0.1:9901, config version 7

ROUTE  HOSTS            PATH  SPLIT                                                       ROLLOUT
web    *                /     blue 80 (80%), green 20 (20%)                               progressing: step 2/4, green at 20%
api    api.example.com  /v1   blue 2 (66.7%, serving 100%), green 1 (33.3%, unavailable)  -

POOL   SERVER       HEALTHY  DRAINING  IN-FLIGHT  EJECTIONS
blue   10.0.0.1:80  yes      no        3          -
       10.0.0.2:80  yes      yes       0          -
green  10.0.0.3:80  no       no        0          2, last outlier, until 2026-01-02T03:04:05.000Z
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn change_lines() {
        let body: RouteBody = serde_json::from_value(serde_json::json!({
            "version": 8,
            "route": {"name": "web", "split": [
                {"pool": "blue", "weight": 80}, {"pool": "green", "weight": 20}]}
        }))
        .unwrap();
        assert_eq!(
            route_change(&body, "web"),
            "web: blue 80 (80%), green 20 (20%) — version 8\n"
        );
        let body: RouteBody = serde_json::from_value(serde_json::json!({
            "version": 9,
            "route": {"name": "web", "split": [{"pool": "blue", "weight": 0}, {"pool": "green", "weight": 0}],
                      "rollout": {"state": "rolled_back", "reason": "error rate 5% over 1%"}}
        }))
        .unwrap();
        assert_eq!(
            route_change(&body, "web"),
            "web: blue 0 (0%), green 0 (0%); rollout rolled back: error rate 5% over 1% — version 9\n"
        );
    }

    #[test]
    fn rollout_states() {
        let view = |v: Value| -> RolloutView { serde_json::from_value(v).unwrap() };
        assert_eq!(rollout(&view(serde_json::json!({"state": "idle"}))), "idle");
        assert_eq!(
            rollout(&view(serde_json::json!({"state": "promoted"}))),
            "promoted"
        );
        assert_eq!(
            rollout(&view(
                serde_json::json!({"state": "paused", "step": 0, "canary_percent": 5.0,
                "plan": {"stable": "a", "canary": "b", "steps": [5, 50]}})
            )),
            "paused: step 1/2, b at 5%"
        );
    }

    #[test]
    fn error_bodies() {
        let body = br#"{"error": "invalid change", "errors": [
            {"path": "routes[0].split", "message": "unknown pool \"purple\""},
            {"path": "", "message": "no weight"}]}"#;
        assert_eq!(error_message(body).as_deref(), Some("invalid change"));
        assert_eq!(
            error_list(body),
            ["  routes[0].split: unknown pool \"purple\"", "  no weight"]
        );
        assert_eq!(error_message(b"\nno route\n").as_deref(), Some("no route"));
        assert_eq!(error_message(b""), None);
    }
}
