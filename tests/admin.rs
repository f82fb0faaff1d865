//! The admin API over real sockets: every endpoint, every error status, and that changes reach
//! the very next proxied requests.

mod common;

use std::collections::HashMap;

use http::StatusCode;
use serde_json::{json, Value};

use common::{get, start_veer, tally, Api, Upstream};

const TOKEN: &str = "s3cret";

/// A veer with `blue` and `green` pools, route `web` at blue 100 / green 0, and the admin API
/// (with a token when asked). `extra` is appended to the route.
async fn blue_green(token: bool, extra: &str) -> (veer::run::Running, Upstream, Upstream) {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let token_line = if token {
        format!("token = \"{TOKEN}\"\n")
    } else {
        String::new()
    };
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{token_line}\n\
         [pools.blue]\nservers = [\"{}\"]\n\n\
         [pools.green]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 100, green = 0 }}\n{extra}",
        blue.addr, green.addr
    );
    (start_veer(&toml).await, blue, green)
}

/// Bodies of `n` proxied requests, counted.
async fn spread(running: &veer::run::Running, n: usize) -> HashMap<String, usize> {
    let addr = running.http_addr;
    tally(n, |_| get(addr, "/", &[])).await
}

fn only(pool: &str, n: usize) -> HashMap<String, usize> {
    HashMap::from([(pool.to_string(), n)])
}

#[tokio::test]
async fn probes_and_metrics_need_no_token() {
    let (running, _b, _g) = blue_green(true, "").await;
    let anon = Api::new(&running, None);

    let a = anon.get("/healthz").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text, "ok\n");
    assert!(a.header("content-type").starts_with("text/plain"));

    let a = anon.get("/readyz").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text, "ready\n");

    let a = anon.get("/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "text/plain; version=0.0.4");
    assert!(a.text.contains("veer_config_version"), "{}", a.text);

    let a = anon.call("POST", "/healthz", &[], "").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(a.header("allow").contains("GET"));

    // The dashboard's page holds no data (tests/dashboard.rs has the rest).
    let a = anon.get("/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.header("content-type").starts_with("text/html"));
}

#[tokio::test]
async fn a_token_is_required_when_configured() {
    let (running, _b, _g) = blue_green(true, "").await;
    let anon = Api::new(&running, None);
    let wrong = Api::new(&running, Some("s3cre7"));
    let right = Api::new(&running, Some(TOKEN));

    for api in [&anon, &wrong] {
        for path in [
            "/api/v1/routes",
            "/api/v1/config",
            "/api/v1/pools",
            "/api/v1/nope",
        ] {
            let a = api.get(path).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
            assert_eq!(a.header("www-authenticate"), "Bearer");
            assert!(a.json["error"].is_string(), "{}", a.text);
        }
        let a = api
            .put("/api/v1/routes/web/split", json!({"green": 100}))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    // Nothing was changed by the refused writes.
    assert_eq!(spread(&running, 10).await, only("blue", 10));

    let a = right.get("/api/v1/routes").await;
    assert_eq!(a.status, StatusCode::OK);
    let a = anon
        .call(
            "GET",
            "/api/v1/routes",
            &[("authorization", &format!("bearer {TOKEN}"))],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "the scheme is case-insensitive");
}

#[tokio::test]
async fn no_token_configured_means_open() {
    let (running, _b, _g) = blue_green(false, "").await;
    let anon = Api::new(&running, None);
    assert_eq!(anon.get("/api/v1/routes").await.status, StatusCode::OK);
}

#[tokio::test]
async fn get_config_routes_and_pools() {
    let (running, blue, green) = blue_green(true, "hash_key = \"header:x-user\"\n").await;
    let api = Api::new(&running, Some(TOKEN));

    let a = api.get("/api/v1/config").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(a.etag(), a.version());
    assert_eq!(a.version(), running.control.version());
    assert_eq!(a.json["config"]["routes"][0]["name"], "web");
    assert_eq!(
        a.json["config"]["pools"]["blue"]["servers"][0],
        blue.addr.to_string()
    );

    let a = api.get("/api/v1/routes").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.etag(), a.version());
    let route = &a.json["routes"][0];
    assert_eq!(route["name"], "web");
    assert_eq!(route["path_prefix"], "/");
    assert_eq!(route["hash_key"], "header:x-user");
    assert_eq!(route["sticky"], Value::Null);
    assert_eq!(route["rollout"], Value::Null);
    assert_eq!(route["pins"], json!([]));
    assert_eq!(
        route["split"],
        json!([
            {"pool": "blue", "weight": 100, "percent": 100.0, "effective_percent": 100.0, "available": true},
            {"pool": "green", "weight": 0, "percent": 0.0, "effective_percent": 0.0, "available": true},
        ])
    );

    let a = api.get("/api/v1/routes/web").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.etag(), a.version());
    assert_eq!(a.json["route"], *route);

    let a = api.get("/api/v1/pools").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.etag(), a.version());
    let server = |addr: std::net::SocketAddr| {
        json!({"addr": addr.to_string(), "weight": 1, "healthy": true, "draining": false,
               "available": true, "in_flight": 0, "ejections": 0,
               "ejection": {"count": 0, "ejected": false, "unhealthy": false, "reason": null,
                            "until": null, "consecutive_failures": 0},
               "checked": false})
    };
    let pool = |name: &str, addr| {
        json!({"name": name, "balance": "round_robin", "available": 1, "ejected": 0,
               "max_ejection_percent": 50, "servers": [server(addr)]})
    };
    assert_eq!(
        a.json["pools"],
        json!([pool("blue", blue.addr), pool("green", green.addr)])
    );
}

#[tokio::test]
async fn not_found_and_method_not_allowed() {
    let (running, blue, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));

    for path in [
        "/api/v1/nope",
        "/api/v1/routes/nope",
        "/api/v1/routes/web/nope",
        "/api/v1/routes/",
        "/api/v2/routes",
        "/nope",
    ] {
        let a = api.get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert!(a.json["error"].is_string(), "{path}: {}", a.text);
        assert_eq!(a.header("content-type"), "application/json");
    }
    let a = api
        .put("/api/v1/routes/nope/split", json!({"blue": 1}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    let a = api.post("/api/v1/routes/web/rollout/jump", json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = api.post("/api/v1/routes/nope/rollback", json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let path = format!("/api/v1/pools/nope/servers/{}/drain", blue.addr);
    let a = api.post(&path, json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    let a = api
        .post("/api/v1/pools/blue/servers/10.9.9.9:80/drain", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);
    let a = api
        .post("/api/v1/routes/web/promote", json!({"pool": "nope"}))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text);

    for (method, path, allow) in [
        ("POST", "/api/v1/routes", "GET"),
        ("DELETE", "/api/v1/config", "PUT"),
        ("POST", "/api/v1/pools", "GET"),
        ("GET", "/api/v1/routes/web/split", "PUT"),
        ("POST", "/api/v1/routes/web/split", "PUT"),
        ("GET", "/api/v1/routes/web/promote", "POST"),
        ("PUT", "/api/v1/routes/web/rollout/start", "POST"),
        ("GET", "/api/v1/pools/blue/servers/a:1/drain", "POST"),
    ] {
        let a = api.call(method, path, &[], "").await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(a.header("allow").contains(allow), "{method} {path}");
        assert!(a.json["error"].is_string());
    }
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let before = api.get("/api/v1/routes/web").await;

    for body in ["{", "", "[1, 2]", "{\"blue\": -1}", "{\"blue\": \"x\"}"] {
        let a = api.call("PUT", "/api/v1/routes/web/split", &[], body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body:?}: {}", a.text);
        assert!(a.json["error"].is_string());
    }
    let a = api
        .post("/api/v1/routes/web/promote", json!({"pol": "green"}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let a = api
        .call("PUT", "/api/v1/config", &[], "not json at all")
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);

    for bad in ["abc", "\"7", "1, 2", "W/\"1\"", "\"-1\""] {
        let a = api
            .call(
                "PUT",
                "/api/v1/routes/web/split",
                &[("if-match", bad)],
                "{\"green\": 100}",
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "If-Match {bad:?}");
    }

    let after = api.get("/api/v1/routes/web").await;
    assert_eq!(after.version(), before.version());
    assert_eq!(after.json, before.json);
    assert_eq!(spread(&running, 10).await, only("blue", 10));
}

#[tokio::test]
async fn stale_if_match_is_412() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let v = api.get("/api/v1/routes").await.etag();

    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 50, "green": 50}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.version(), v + 1);

    let stale = format!("\"{v}\"");
    let a = api
        .call(
            "PUT",
            "/api/v1/routes/web/split",
            &[("if-match", &stale)],
            "{\"green\": 100}",
        )
        .await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "{}", a.text);
    assert!(a.json["error"].is_string());
    assert_eq!(a.etag(), v + 1, "a 412 names the running version");

    // The current version in each accepted form.
    let current = format!("\"{}\"", v + 1);
    let a = api
        .call(
            "PUT",
            "/api/v1/routes/web/split",
            &[("if-match", &current)],
            "{\"green\": 100}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let bare = (v + 2).to_string();
    let a = api
        .call(
            "POST",
            "/api/v1/routes/web/rollback",
            &[("if-match", &bare)],
            "",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let a = api
        .call(
            "POST",
            "/api/v1/routes/web/promote",
            &[("if-match", "*")],
            "{\"pool\": \"blue\"}",
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.version(), v + 4);
}

#[tokio::test]
async fn bodies_over_one_mib_are_413() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let v = running.control.version();

    let mut big = b"{\"green\": 100}".to_vec();
    big.resize((1 << 20) + 1, b' ');
    let a = api.call("PUT", "/api/v1/routes/web/split", &[], big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text);
    assert!(a.json["error"].is_string());
    assert_eq!(running.control.version(), v);

    // Exactly 1 MiB is accepted.
    let mut max = b"{\"green\": 100}".to_vec();
    max.resize(1 << 20, b' ');
    let a = api.call("PUT", "/api/v1/routes/web/split", &[], max).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.version(), v + 1);
}

#[tokio::test]
async fn invalid_splits_are_422_and_change_nothing() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let before = api.get("/api/v1/routes/web").await;
    assert_eq!(spread(&running, 10).await, only("blue", 10));

    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 0, "green": 0}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    let errors = a.json["errors"].as_array().expect("an errors list");
    assert!(!errors.is_empty());
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().unwrap().contains("split")
                && e["message"].as_str().unwrap().contains("0")),
        "{}",
        a.text
    );
    assert!(a.json["error"].is_string());
    assert!(!a.json["error"].as_str().unwrap().contains('\n'));

    let a = api
        .put(
            "/api/v1/routes/web/split",
            json!({"blue": 50, "purple": 50}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    let errors = a.json["errors"].as_array().expect("an errors list");
    assert!(
        errors
            .iter()
            .any(|e| e["path"].as_str().unwrap().contains("purple")
                || e["message"].as_str().unwrap().contains("purple")),
        "{}",
        a.text
    );

    let after = api.get("/api/v1/routes/web").await;
    assert_eq!(after.version(), before.version());
    assert_eq!(after.etag(), before.etag());
    assert_eq!(after.json["route"], before.json["route"]);
    assert_eq!(spread(&running, 10).await, only("blue", 10));
}

#[tokio::test]
async fn a_split_reaches_the_very_next_requests() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    assert_eq!(spread(&running, 10).await, only("blue", 10));

    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 0, "green": 100}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.etag(), a.version());
    assert_eq!(a.json["route"]["split"][1]["pool"], "green");
    assert_eq!(a.json["route"]["split"][1]["percent"], 100.0);
    assert_eq!(spread(&running, 50).await, only("green", 50));

    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 100}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json["route"]["split"][1]["weight"], 0,
        "left-out pools get 0"
    );
    assert_eq!(spread(&running, 50).await, only("blue", 50));

    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 50, "green": 50}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let got = spread(&running, 400).await;
    assert!(got["blue"] > 120 && got["green"] > 120, "{got:?}");
}

#[tokio::test]
async fn promote_and_rollback_move_everything_at_once() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));

    let a = api
        .post("/api/v1/routes/web/promote", json!({"pool": "green"}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.etag(), a.version());
    assert_eq!(a.json["route"]["split"][0]["weight"], 0);
    assert_eq!(a.json["route"]["split"][1]["weight"], 100);
    assert_eq!(spread(&running, 30).await, only("green", 30));

    // No rollout plan: rollback goes to the split's first pool.
    let a = api
        .call("POST", "/api/v1/routes/web/rollback", &[], "")
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["route"]["split"][0]["percent"], 100.0);
    assert_eq!(spread(&running, 30).await, only("blue", 30));
}

#[tokio::test]
async fn concurrent_writers_with_one_version_one_wins() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = std::sync::Arc::new(Api::new(&running, Some(TOKEN)));
    for round in 0..20 {
        let v = api.get("/api/v1/routes/web").await.etag();
        let tag = format!("\"{v}\"");
        let mut tasks = Vec::new();
        for green in [30, 70] {
            let api = std::sync::Arc::clone(&api);
            let tag = tag.clone();
            tasks.push(tokio::spawn(async move {
                let body = json!({"blue": 100 - green, "green": green}).to_string();
                api.call(
                    "PUT",
                    "/api/v1/routes/web/split",
                    &[("if-match", &tag)],
                    body,
                )
                .await
                .status
            }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.unwrap().as_u16());
        }
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "round {round}");
        assert_eq!(running.control.version(), v + 1, "round {round}");
    }
}

#[tokio::test]
async fn drain_stops_new_requests_to_a_server() {
    let a1 = Upstream::named("a1").await;
    let a2 = Upstream::named("a2").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [pools.app]\nservers = [\"{}\", \"{}\"]\n\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        a1.addr, a2.addr
    );
    let running = start_veer(&toml).await;
    let api = Api::new(&running, Some(TOKEN));
    let both = spread(&running, 20).await;
    assert_eq!((both["a1"], both["a2"]), (10, 10));

    // The address percent-encoded, as a client may send it.
    let encoded = a1.addr.to_string().replace(':', "%3A");
    let a = api
        .post(
            &format!("/api/v1/pools/app/servers/{encoded}/drain"),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.etag(), a.version());
    assert_eq!(spread(&running, 20).await, only("a2", 20));

    let pools = api.get("/api/v1/pools").await;
    let servers = &pools.json["pools"][0]["servers"];
    assert_eq!(servers[0]["addr"], a1.addr.to_string());
    assert_eq!(servers[0]["draining"], true);
    assert_eq!(servers[0]["available"], false);
    assert_eq!(servers[0]["healthy"], true);
    assert_eq!(servers[1]["draining"], false);
    assert_eq!(pools.etag(), a.version());

    let a = api
        .post(
            &format!("/api/v1/pools/app/servers/{}/undrain", a1.addr),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let back = spread(&running, 20).await;
    assert_eq!((back["a1"], back["a2"]), (10, 10));
    let pools = api.get("/api/v1/pools").await;
    assert_eq!(pools.json["pools"][0]["servers"][0]["draining"], false);
}

const ROLLOUT: &str =
    "\n[routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [10, 50, 100]\n";

#[tokio::test]
async fn rollout_transitions() {
    let (running, _b, _g) = blue_green(true, ROLLOUT).await;
    let api = Api::new(&running, Some(TOKEN));

    let a = api.get("/api/v1/routes/web").await;
    let rollout = &a.json["route"]["rollout"];
    assert_eq!(rollout["state"], "idle");
    assert_eq!(rollout["history"], json!([]));
    assert_eq!(rollout["plan"]["steps"], json!([10, 50, 100]));
    assert_eq!(rollout["plan"]["canary"], "green");

    // Nothing to pause, resume or abort yet.
    for action in ["pause", "resume", "abort"] {
        let a = api
            .post(&format!("/api/v1/routes/web/rollout/{action}"), json!({}))
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{action}: {}",
            a.text
        );
        assert!(a.json["errors"].is_array());
    }

    let a = api
        .post("/api/v1/routes/web/rollout/start", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.etag(), a.version());
    let route = &a.json["route"];
    assert_eq!(route["rollout"]["state"], "progressing");
    assert_eq!(route["rollout"]["step"], 0);
    assert_eq!(route["rollout"]["canary_percent"], 10);
    assert_eq!(route["split"][1]["pool"], "green");
    assert_eq!(route["split"][1]["percent"], 10.0);
    assert_eq!(route["split"][0]["percent"], 90.0);
    assert_eq!(route["rollout"]["history"].as_array().unwrap().len(), 1);

    let a = api
        .post("/api/v1/routes/web/rollout/start", json!({}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "already started"
    );
    let a = api
        .post("/api/v1/routes/web/rollout/resume", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "not paused");

    let a = api
        .post("/api/v1/routes/web/rollout/pause", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["route"]["rollout"]["state"], "paused");
    assert_eq!(a.json["route"]["rollout"]["step"], 0);
    assert_eq!(a.json["route"]["split"][1]["percent"], 10.0);
    let a = api
        .post("/api/v1/routes/web/rollout/pause", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "already paused");

    let a = api
        .post("/api/v1/routes/web/rollout/resume", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["route"]["rollout"]["state"], "progressing");

    let v = running.control.version();
    let a = api
        .post("/api/v1/routes/web/rollout/abort", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.version(), v + 1);
    let rollout = &a.json["route"]["rollout"];
    assert_eq!(rollout["state"], "rolled_back");
    assert!(rollout["reason"].as_str().unwrap().contains("abort"));
    assert_eq!(rollout["history"].as_array().unwrap().len(), 4);
    assert!(rollout["history"][0]["at"].as_u64().unwrap() > 0);
    assert_eq!(a.json["route"]["split"][1]["weight"], 0);
    assert_eq!(spread(&running, 20).await, only("blue", 20));

    let a = api
        .post("/api/v1/routes/web/rollout/abort", json!({}))
        .await;
    assert_eq!(
        a.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "nothing to abort"
    );

    // A rolled-back rollout can start again.
    let a = api
        .post("/api/v1/routes/web/rollout/start", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["route"]["rollout"]["state"], "progressing");
}

#[tokio::test]
async fn rollout_without_a_plan_is_422() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let a = api
        .post("/api/v1/routes/web/rollout/start", json!({}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert!(a.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("plan"));
}

#[tokio::test]
async fn put_config_as_json_and_as_toml() {
    let (running, blue, green) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));

    // JSON as GET returns it, with a new route.
    let mut got = api.get("/api/v1/config").await.json;
    let v = got["version"].as_u64().unwrap();
    got["config"]["routes"].as_array_mut().unwrap().insert(
        0,
        json!({"name": "api", "path_prefix": "/api", "split": {"green": 1}}),
    );
    let a = api.put("/api/v1/config", got.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.version(), v + 1);
    assert_eq!(a.etag(), v + 1);
    let routes = api.get("/api/v1/routes").await;
    assert_eq!(routes.json["routes"][0]["name"], "api");
    assert_eq!(routes.json["routes"][0]["path_prefix"], "/api");
    let addr = running.http_addr;
    assert_eq!(get(addr, "/api/x", &[]).await.body, "green\n");
    assert_eq!(get(addr, "/x", &[]).await.body, "blue\n");

    // The body's version is a stale If-Match now.
    let a = api.put("/api/v1/config", got.clone()).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED, "{}", a.text);

    // A bare JSON config.
    let bare = json!({
        "listen": {"http": "127.0.0.1:0"},
        "admin": {"listen": "127.0.0.1:0", "token": TOKEN},
        "pools": {"green": {"servers": [green.addr.to_string()]}},
        "routes": [{"name": "only", "split": {"green": 1}}],
    });
    let a = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/json")],
            bare.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(get(addr, "/x", &[]).await.body, "green\n");
    let routes = api.get("/api/v1/routes").await;
    assert_eq!(routes.json["routes"].as_array().unwrap().len(), 1);

    // TOML.
    let toml = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [pools.blue]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"from-toml\"\nsplit = {{ blue = 1 }}\n",
        blue.addr
    );
    let a = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/toml; charset=utf-8")],
            toml,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let routes = api.get("/api/v1/routes").await;
    assert_eq!(routes.json["routes"][0]["name"], "from-toml");
    assert_eq!(get(addr, "/x", &[]).await.body, "blue\n");
    let config = api.get("/api/v1/config").await;
    assert_eq!(config.json["config"]["routes"][0]["name"], "from-toml");
    assert_eq!(config.etag(), config.version());
}

#[tokio::test]
async fn invalid_configs_are_422_with_every_error() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let v = running.control.version();

    // TOML with two problems: an unknown pool and an all-zero split.
    let toml = "[pools.blue]\nservers = [\"127.0.0.1:1\"]\n\n\
                [[routes]]\nname = \"a\"\nsplit = { purple = 1 }\n\n\
                [[routes]]\nname = \"b\"\nsplit = { blue = 0 }\n";
    let a = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/toml")],
            toml,
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    let errors = a.json["errors"].as_array().unwrap();
    assert!(errors.len() >= 2, "{}", a.text);
    assert!(errors
        .iter()
        .any(|e| e["path"].as_str().unwrap().starts_with("routes[0]")));
    assert!(errors
        .iter()
        .any(|e| e["path"].as_str().unwrap().starts_with("routes[1]")));

    // JSON with an unknown field: a validation matter.
    let a = api.put("/api/v1/config", json!({"poolz": {}})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert!(a.json["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("poolz"));

    // JSON that compiles to nothing valid.
    let a = api
        .put(
            "/api/v1/config",
            json!({"pools": {"blue": {"servers": ["127.0.0.1:1"]}},
                   "routes": [{"name": "r", "split": {"blue": 0}}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert_eq!(a.json["errors"][0]["path"], "routes[0].split");

    assert_eq!(running.control.version(), v);
    assert_eq!(spread(&running, 5).await, only("blue", 5));
}

#[tokio::test]
async fn readyz_turns_503_on_shutdown_and_the_api_keeps_answering() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);

    running.shutdown();
    common::eventually(common::IO_TIMEOUT, "/readyz turns 503", || async {
        api.get("/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(api.get("/readyz").await.text, "draining\n");
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/api/v1/routes").await.status, StatusCode::OK);
    // A draining process takes no more changes (its replacement may share the port).
    let v = running.control.version();
    let refused = api
        .put("/api/v1/routes/web/split", json!({"green": 100}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(running.control.version(), v);
    assert!(common::within(common::IO_TIMEOUT, "the drain", running.wait()).await);
}

#[tokio::test]
async fn a_body_that_is_not_toml_is_400() {
    let (running, _b, _g) = blue_green(true, "").await;
    let api = Api::new(&running, Some(TOKEN));
    let v = running.control.version();
    let a = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/toml")],
            "[pools.blue\nservers = ",
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    assert!(
        a.json["error"].as_str().unwrap().contains("not TOML"),
        "{}",
        a.text
    );
    assert_eq!(running.control.version(), v);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let (running, _b, _g) = blue_green(true, "").await;
    let addr = running.admin_addr.unwrap();
    let req = format!(
        "GET /api/v1/routes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let out = common::raw_exchange(addr, req.as_bytes()).await;
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(out.ends_with("ok\n"), "{out}");
}

#[tokio::test]
async fn refusals_read_the_body_so_the_answer_arrives() {
    let (running, _b, _g) = blue_green(true, "").await;
    let anon = Api::new(&running, None);
    let api = Api::new(&running, Some(TOKEN));
    let big = vec![b' '; 900 * 1024];
    for _ in 0..3 {
        let a = anon
            .call("PUT", "/api/v1/routes/web/split", &[], big.clone())
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        let a = api.call("POST", "/api/v1/config", &[], big.clone()).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        let a = api.call("POST", "/api/v1/nope", &[], big.clone()).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = api
            .call(
                "PUT",
                "/api/v1/routes/web/split",
                &[("if-match", "nope")],
                big.clone(),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
    }
}
