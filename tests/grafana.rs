//! The Grafana dashboard in `config/grafana/veer.json` is importable and names only metrics
//! veer exports: every panel query and every template variable query names at least one
//! `veer_` metric, and every such name is a series a freshly started veer (admin API, two
//! health-checked pools, a split, a mirror and a rollout plan) shows on `/metrics` after a few
//! requests. A dashboard panel that names a metric veer does not export would stay empty, so
//! this test fails on it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{start_veer, Api, Upstream};
use serde_json::Value;

/// The datasource references a panel may make: the import input, or the `datasource` template
/// variable that defaults to it.
const DATASOURCES: [&str; 3] = ["${DS_PROMETHEUS}", "${datasource}", "$datasource"];

/// Grafana's own variables, which a query may use without the dashboard defining them.
const BUILTIN_VARIABLES: [&str; 4] = ["__range", "__rate_interval", "__interval", "__all"];

fn dashboard() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/grafana/veer.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Every PromQL text in the dashboard, with where it was found: each `expr` anywhere (panel
/// targets, rows' nested panels), and the `definition` and `query` of each `query` variable.
fn queries(dash: &Value) -> Vec<(String, String)> {
    fn exprs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                // A panel is named by its title, a target by its refId.
                let at = match (&map.get("title"), &map.get("refId")) {
                    (Some(Value::String(t)), _) => format!("panel {t:?}"),
                    (_, Some(Value::String(r))) => format!("{at} target {r}"),
                    _ => at.to_string(),
                };
                for (k, v) in map {
                    let here = match k.as_str() {
                        "panels" | "targets" | "expr" => at.clone(),
                        _ => format!("{at}.{k}"),
                    };
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push((here, e.clone())),
                        _ => exprs(v, &here, out),
                    }
                }
            }
            Value::Array(items) => {
                for v in items {
                    exprs(v, at, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    exprs(dash, "", &mut out);
    for var in variables(dash) {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let at = format!("templating.{name}");
        let definition = var["definition"]
            .as_str()
            .expect("a query variable's definition");
        out.push((format!("{at}.definition"), definition.to_string()));
        // A string (older Grafana) or an object holding the PromQL as `query` (newer).
        let query = match &var["query"] {
            Value::String(q) => q.clone(),
            q => q["query"]
                .as_str()
                .unwrap_or_else(|| panic!("{at}: a query variable's query: {q}"))
                .to_string(),
        };
        out.push((format!("{at}.query"), query));
    }
    out
}

fn variables(dash: &Value) -> &Vec<Value> {
    dash["templating"]["list"]
        .as_array()
        .expect("templating.list is an array")
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The `veer_` metric names an expression mentions (as whole identifiers).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut prev = None;
    for (i, c) in expr.char_indices() {
        if !prev.is_some_and(ident_char) && expr[i..].starts_with("veer_") {
            let end = expr[i..]
                .find(|c: char| !ident_char(c))
                .map_or(expr.len(), |n| i + n);
            names.insert(expr[i..end].to_string());
        }
        prev = Some(c);
    }
    names
}

/// The `$name` and `${name}` variables an expression uses.
fn variable_uses(expr: &str) -> BTreeSet<String> {
    expr.split('$')
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.strip_prefix('{').unwrap_or(rest);
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect()
}

/// The series names a scrape exports, from its `# TYPE <name> <type>` lines: a histogram's
/// `_bucket`, `_sum` and `_count` (not its bare name, which Prometheus never stores), a
/// summary's bare name (its quantiles), `_sum` and `_count`, and any other type's name.
fn exported(scrape: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest
            .split_once(' ')
            .unwrap_or_else(|| panic!("a TYPE line without a type: {line}"));
        let series: &[&str] = match kind {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in series {
            names.insert(format!("{name}{suffix}"), kind.to_string());
        }
    }
    names
}

/// Every `datasource` in the dashboard refers to the import input or the `datasource`
/// variable, and every `${DS_…}` input used is declared in `__inputs`.
fn check_datasources(v: &Value, at: &str, inputs: &BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let here = format!("{at}.{k}");
                if k == "datasource" {
                    let uid = match v {
                        Value::String(s) => s.as_str(),
                        Value::Object(ds) => {
                            assert_eq!(ds["type"], "prometheus", "{here}: {v}");
                            ds["uid"].as_str().unwrap_or("")
                        }
                        _ => "",
                    };
                    assert!(
                        DATASOURCES.contains(&uid),
                        "{here} is {v}, not one of {DATASOURCES:?}"
                    );
                }
                check_datasources(v, &here, inputs);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_datasources(v, &format!("{at}[{i}]"), inputs);
            }
        }
        Value::String(s) => {
            for rest in s.split("${DS_").skip(1) {
                let name = format!("DS_{}", rest.split('}').next().unwrap_or(""));
                assert!(
                    inputs.contains(&name),
                    "{at} uses ${{{name}}}, not in __inputs"
                );
            }
        }
        _ => {}
    }
}

/// Every panel, rows' nested panels included.
fn all_panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels is an array") {
        out.push(p);
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

#[test]
fn the_dashboard_is_importable() {
    let dash = dashboard();
    for key in ["title", "uid"] {
        let s = dash[key].as_str().unwrap_or("");
        assert!(!s.is_empty(), "the dashboard's {key} is missing or empty");
    }
    assert!(dash["schemaVersion"].as_u64().is_some(), "no schemaVersion");

    let inputs: BTreeSet<String> = dash["__inputs"]
        .as_array()
        .expect("__inputs is an array")
        .iter()
        .map(|i| {
            assert_eq!(i["type"], "datasource", "{i}");
            assert_eq!(i["pluginId"], "prometheus", "{i}");
            i["name"].as_str().expect("an input's name").to_string()
        })
        .collect();
    assert!(inputs.contains("DS_PROMETHEUS"), "{inputs:?}");
    check_datasources(&dash, "", &inputs);

    let vars = variables(&dash);
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    let ds = var("datasource");
    assert_eq!(ds["type"], "datasource", "{ds}");
    assert_eq!(ds["query"], "prometheus", "{ds}");
    for name in ["route", "pool"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "{v}");
        assert_eq!(v["multi"], true, "{name} is multi-select: {v}");
        assert_eq!(v["includeAll"], true, "{name} offers All: {v}");
    }
    let names: BTreeSet<String> = vars
        .iter()
        .map(|v| v["name"].as_str().expect("a variable's name").to_string())
        .collect();

    let panels = all_panels(&dash);
    assert!(!panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    for p in &panels {
        let (kind, title) = (p["type"].as_str(), p["title"].as_str());
        assert!(
            kind.is_some_and(|s| !s.is_empty()) && title.is_some_and(|s| !s.is_empty()),
            "a panel without a type and a title: {p}"
        );
        assert!(p["gridPos"].is_object(), "{title:?} has no gridPos");
        if let Some(id) = p["id"].as_u64() {
            assert!(ids.insert(id), "two panels with id {id}");
        }
        if kind == Some("row") {
            continue;
        }
        let targets = p["targets"].as_array().map_or(&[][..], |t| t.as_slice());
        assert!(!targets.is_empty(), "{title:?} has no query");
        for t in targets {
            assert!(t["refId"].is_string(), "{title:?}: a target without refId");
            assert!(t["expr"].is_string(), "{title:?}: a target without expr");
        }
    }

    for (at, expr) in queries(&dash) {
        for used in variable_uses(&expr) {
            assert!(
                names.contains(&used) || BUILTIN_VARIABLES.contains(&used.as_str()),
                "{at} uses ${used}, which the dashboard does not define: {expr}"
            );
        }
    }
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported() {
    let dash = dashboard();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (at, expr) in queries(&dash) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{at} names no veer_ metric: {expr}");
        for name in names {
            wanted.entry(name).or_default().push(at.clone());
        }
    }

    let (blue, green, shadow) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
        Upstream::named("shadow").await,
    );
    let health = "path = \"/ready\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\n\
                  healthy_threshold = 2\nunhealthy_threshold = 3\n";
    let veer = start_veer(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [pools.blue]\nservers = [\"{}\"]\n[pools.blue.health]\n{health}\n\
         [pools.green]\nservers = [\"{}\"]\n[pools.green.health]\n{health}\n\
         [pools.shadow]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 90, green = 10 }}\n\
         [routes.mirror]\npool = \"shadow\"\npercent = 100\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [10, 50, 100]\n\
         interval = \"1s\"\nmax_error_rate = 0.1\nmin_requests = 5\n",
        blue.addr, green.addr, shadow.addr
    ))
    .await;
    let api = Api::new(&veer, None);
    for _ in 0..10 {
        let got = common::get(veer.http_addr, "/", &[]).await;
        assert_eq!(got.status, 200, "{}", got.body);
    }

    // Some series appear from background tasks (health checks, the rollout driver's first
    // tick): scrape until every wanted name is there, or until a deadline long enough for a
    // loaded machine, then report what is missing.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (scrape, missing) = loop {
        let scrape = api.metrics().await;
        let have = exported(&scrape);
        let missing: Vec<&String> = wanted.keys().filter(|n| !have.contains_key(*n)).collect();
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break (scrape, missing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let report: Vec<String> = missing
        .iter()
        .map(|n| format!("{n} (queried at {})", wanted[*n].join(", ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics that veer does not export:\n  {}\n\
         --- /metrics:\n{scrape}",
        report.join("\n  ")
    );
}
