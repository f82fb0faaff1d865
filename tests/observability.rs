//! What an operator watches: `/metrics` after known traffic (exact counts per route, pool and
//! code; the duration histogram; weight and effective gauges; reload counters; connections; no
//! series for what a reload removed) and `GET /api/v1/stats`. Each metrics test runs its own
//! `veer` process, so that the process-wide registry holds its counts alone.

mod common;

use std::sync::Arc;

use common::{
    child_toml, eventually, metric, metric_or_panic, Api, TempDir, Upstream, VeerProcess,
    IO_TIMEOUT,
};
use http::{Response, StatusCode};

/// An upstream answering `/status/NNN` with status NNN, `/health` with `health`, and anything
/// else with 200; each body is `<name>\n`.
async fn status_upstream(name: &'static str, health: u16) -> Upstream {
    Upstream::with(Arc::new(move |req| {
        Box::pin(async move {
            let path = req.uri().path();
            let status = match path.strip_prefix("/status/") {
                Some(code) => code.parse().unwrap_or(200),
                None if path == "/health" => health,
                None => 200,
            };
            Response::builder()
                .status(status)
                .body(common::full(format!("{name}\n")))
                .unwrap()
        })
    }))
    .await
}

async fn start(dir: &TempDir, body: &str) -> (VeerProcess, Api) {
    let text = child_toml("", &format!("[admin]\nlisten = \"127.0.0.1:0\"\n{body}"));
    let veer = VeerProcess::start(&dir.write("veer.toml", &text)).await;
    let api = Api::at(veer.admin().expect("an admin listener"), None);
    (veer, api)
}

fn requests(metrics: &str, route: &str, pool: &str, code: &str) -> f64 {
    metric_or_panic(
        metrics,
        "veer_requests_total",
        &[("route", route), ("pool", pool), ("code", code)],
    )
}

#[tokio::test]
async fn requests_are_counted_by_route_pool_and_code_and_timed() {
    let (blue, green) = (
        status_upstream("blue", 200).await,
        status_upstream("green", 200).await,
    );
    let dir = TempDir::new("obs-counts");
    let (veer, api) = start(
        &dir,
        &format!(
            "[pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n\
             [[routes.pin]]\nheader = \"x-canary\"\npool = \"green\"\n",
            blue.addr, green.addr
        ),
    )
    .await;
    let client = common::client();
    let mut sent = Vec::new();
    for (path, n) in [
        ("/status/200", 4),
        ("/status/404", 2),
        ("/status/503", 3),
        ("/status/302", 1),
    ] {
        for _ in 0..n {
            sent.push(
                common::send(&client, veer.http(), "GET", path, &[])
                    .await
                    .status,
            );
        }
    }
    for _ in 0..2 {
        let pinned = common::send(
            &client,
            veer.http(),
            "GET",
            "/status/201",
            &[("x-canary", "1")],
        );
        sent.push(pinned.await.status);
    }
    assert_eq!(sent.len(), 12, "{sent:?}");
    let m = api.metrics().await;
    assert_eq!(requests(&m, "web", "blue", "2xx"), 4.0);
    assert_eq!(requests(&m, "web", "blue", "3xx"), 1.0);
    assert_eq!(requests(&m, "web", "blue", "4xx"), 2.0);
    assert_eq!(requests(&m, "web", "blue", "5xx"), 3.0);
    assert_eq!(requests(&m, "web", "blue", "1xx"), 0.0);
    // A pool only a pin names is counted too.
    assert_eq!(requests(&m, "web", "green", "2xx"), 2.0);
    assert_eq!(requests(&m, "web", "green", "5xx"), 0.0);
    let count = |pool| {
        metric_or_panic(
            &m,
            "veer_request_duration_seconds_count",
            &[("route", "web"), ("pool", pool)],
        )
    };
    assert_eq!((count("blue"), count("green")), (10.0, 2.0));
    let bucket = |le| {
        metric(
            &m,
            "veer_request_duration_seconds_bucket",
            &[("route", "web"), ("pool", "blue"), ("le", le)],
        )
    };
    // Buckets from a millisecond to 30 s; every loopback request is under 30 s.
    assert!(bucket("0.001").is_some(), "{m}");
    assert_eq!(bucket("30"), Some(10.0), "{m}");
    assert_eq!(bucket("+Inf"), Some(10.0), "{m}");
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn weight_and_effective_gauges_follow_a_split_change_and_a_pool_losing_its_servers() {
    let blue = status_upstream("blue", 200).await;
    // green fails its health checks once they are turned on by a reload.
    let green = status_upstream("green", 503).await;
    let dir = TempDir::new("obs-gauges");
    let pools = format!(
        "[pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n",
        blue.addr, green.addr
    );
    let route = "[[routes]]\nname = \"web\"\nsplit = { blue = 90, green = 10 }\n";
    let (veer, api) = start(&dir, &format!("{pools}{route}")).await;
    let gauge = |m: &str, name: &str, pool: &str| {
        metric_or_panic(m, name, &[("route", "web"), ("pool", pool)])
    };
    let m = api.metrics().await;
    assert_eq!(gauge(&m, "veer_route_weight_percent", "blue"), 90.0);
    assert_eq!(gauge(&m, "veer_route_weight_percent", "green"), 10.0);
    assert_eq!(gauge(&m, "veer_route_effective_percent", "green"), 10.0);

    let put = api.put(
        "/api/v1/routes/web/split",
        serde_json::json!({"blue": 40, "green": 60}),
    );
    assert_eq!(put.await.status, StatusCode::OK);
    let m = api.metrics().await;
    assert_eq!(gauge(&m, "veer_route_weight_percent", "blue"), 40.0);
    assert_eq!(gauge(&m, "veer_route_weight_percent", "green"), 60.0);
    assert_eq!(gauge(&m, "veer_route_effective_percent", "blue"), 40.0);
    assert_eq!(gauge(&m, "veer_route_effective_percent", "green"), 60.0);

    // green's only server fails its checks: it carries no traffic, blue carries it all, and the
    // configured weights stay as they were.
    let checked = format!(
        "{pools}[pools.green.health]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"1s\"\n\
         healthy_threshold = 1\nunhealthy_threshold = 1\n{route}"
    );
    let put = api.call(
        "PUT",
        "/api/v1/config",
        &[("content-type", "application/toml")],
        checked,
    );
    let answer = put.await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let api_ref = &api;
    eventually(IO_TIMEOUT, "green's share drops to 0", || {
        let api = api_ref;
        async move {
            let m = api.metrics().await;
            metric(
                &m,
                "veer_route_effective_percent",
                &[("route", "web"), ("pool", "green")],
            ) == Some(0.0)
        }
    })
    .await;
    let m = api.metrics().await;
    assert_eq!(gauge(&m, "veer_route_effective_percent", "blue"), 100.0);
    assert_eq!(gauge(&m, "veer_route_weight_percent", "green"), 10.0);
    assert_eq!(
        metric_or_panic(
            &m,
            "veer_server_healthy",
            &[("pool", "green"), ("server", &green.addr.to_string())]
        ),
        0.0
    );
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn reloads_are_counted_by_source_and_result_and_removed_things_leave_no_series() {
    let (blue, green) = (
        status_upstream("blue", 200).await,
        status_upstream("green", 200).await,
    );
    let spare = status_upstream("spare", 200).await;
    let dir = TempDir::new("obs-reloads");
    let full = format!(
        "[pools.blue]\nservers = [\"{}\", \"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"old\"\npath_prefix = \"/old\"\nsplit = {{ green = 1 }}\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n",
        blue.addr, spare.addr, green.addr
    );
    let (veer, api) = start(&dir, &full).await;
    let client = common::client();
    for path in ["/", "/old/x"] {
        assert_eq!(
            common::send(&client, veer.http(), "GET", path, &[])
                .await
                .status,
            200
        );
    }
    let m = api.metrics().await;
    let reloads = |m: &str, result| {
        metric_or_panic(
            m,
            "veer_config_reloads_total",
            &[("source", "sighup"), ("result", result)],
        )
    };
    // Every series is there from the start, at 0 until something happens.
    assert_eq!((reloads(&m, "ok"), reloads(&m, "error")), (0.0, 0.0));
    assert_eq!(requests(&m, "old", "green", "2xx"), 1.0);
    let spare_addr = spare.addr.to_string();
    let spare_labels = [("pool", "blue"), ("server", spare_addr.as_str())];
    assert!(metric(&m, "veer_server_healthy", &spare_labels).is_some());
    let version = metric_or_panic(&m, "veer_config_version", &[]);

    // A broken file changes nothing and counts one error.
    dir.write(
        "veer.toml",
        &child_toml("", "[admin]\nlisten = \"127.0.0.1:0\"\n[pools.blue]\n"),
    );
    veer.signal("-HUP");
    let api_ref = &api;
    eventually(IO_TIMEOUT, "the bad reload is counted", || async move {
        metric(
            &api_ref.metrics().await,
            "veer_config_reloads_total",
            &[("source", "sighup"), ("result", "error")],
        ) == Some(1.0)
    })
    .await;
    let m = api.metrics().await;
    assert_eq!(reloads(&m, "ok"), 0.0);
    assert_eq!(metric_or_panic(&m, "veer_config_version", &[]), version);

    // A good file without route `old`, pool `green` and blue's second server: their series go.
    let kept = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[pools.blue]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n",
        blue.addr
    );
    dir.write("veer.toml", &child_toml("", &kept));
    veer.signal("-HUP");
    eventually(IO_TIMEOUT, "the good reload is counted", || async move {
        metric(
            &api_ref.metrics().await,
            "veer_config_reloads_total",
            &[("source", "sighup"), ("result", "ok")],
        ) == Some(1.0)
    })
    .await;
    let m = api.metrics().await;
    assert_eq!(
        metric_or_panic(&m, "veer_config_version", &[]),
        version + 1.0
    );
    for gone in ["route=\"old\"", "pool=\"green\"", spare_addr.as_str()] {
        assert!(!m.contains(gone), "a series still names {gone}:\n{m}");
    }
    assert_eq!(requests(&m, "web", "blue", "2xx"), 1.0);
    assert!(metric(
        &m,
        "veer_server_healthy",
        &[("pool", "blue"), ("server", &blue.addr.to_string())]
    )
    .is_some());
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn open_connections_are_counted_per_listener() {
    let blue = status_upstream("blue", 200).await;
    let dir = TempDir::new("obs-conns");
    let body = format!(
        "[pools.blue]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n",
        blue.addr
    );
    let (veer, api) = start(&dir, &body).await;
    let active = |m: &str, listener| {
        metric_or_panic(m, "veer_connections_active", &[("listener", listener)])
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut s = common::requests::connect(veer.http()).await;
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = common::requests::read_some(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        open.push(s);
    }
    let m = api.metrics().await;
    assert_eq!(active(&m, "http"), 3.0);
    // The scrape's own connection, at least.
    assert!(active(&m, "admin") >= 1.0, "{m}");
    drop(open);
    let api_ref = &api;
    eventually(
        IO_TIMEOUT,
        "closed connections are no longer counted",
        || async move {
            metric(
                &api_ref.metrics().await,
                "veer_connections_active",
                &[("listener", "http")],
            ) == Some(0.0)
        },
    )
    .await;
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn stats_give_each_route_and_pool_its_last_minute_and_rollout_step() {
    let (stable, canary) = (
        status_upstream("stable", 200).await,
        status_upstream("canary", 200).await,
    );
    let dir = TempDir::new("obs-stats");
    let body = format!(
        "[pools.stable]\nservers = [\"{}\"]\n[pools.canary]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ stable = 100, canary = 0 }}\n\
         [routes.rollout]\ncanary = \"canary\"\nstable = \"stable\"\nsteps = [50, 100]\n\
         interval = \"1h\"\nmin_requests = 1000000\n",
        stable.addr, canary.addr
    );
    let (veer, api) = start(&dir, &body).await;
    let client = common::client();
    for i in 0..20 {
        let path = if i % 4 == 0 { "/status/500" } else { "/" };
        common::send(&client, veer.http(), "GET", path, &[]).await;
    }
    let got = api.get("/api/v1/stats").await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text);
    assert!(got.headers.contains_key("etag"));
    let route = &got.json["routes"][0];
    assert_eq!(route["route"], "web");
    assert_eq!(route["rollout"]["state"], "idle");
    let pool = |json: &serde_json::Value, name: &str| {
        json["pools"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["pool"] == name).cloned())
            .unwrap_or_else(|| panic!("no pool {name} in {json}"))
    };
    let minute = pool(route, "stable")["last_minute"].clone();
    assert_eq!(
        (minute["requests"].as_u64(), minute["errors"].as_u64()),
        (Some(20), Some(5))
    );
    assert_eq!(minute["error_rate"].as_f64(), Some(0.25));
    assert!(
        minute["p50_ms"].as_f64().is_some() && minute["p99_ms"].as_f64().is_some(),
        "{minute}"
    );
    assert!(
        minute["requests_per_s"].as_f64().is_some_and(|r| r > 0.0),
        "{minute}"
    );
    assert!(pool(route, "stable")["rollout_step"].is_null());
    let empty = pool(route, "canary")["last_minute"].clone();
    assert_eq!(empty["requests"].as_u64(), Some(0));
    assert!(empty["p99_ms"].is_null());

    // The per-second series picks the traffic up within a couple of seconds.
    let api_ref = &api;
    eventually(IO_TIMEOUT, "the series shows the traffic", || async move {
        let got = api_ref.get("/api/v1/stats").await;
        let stable = &got.json["routes"][0]["pools"][0];
        let rates = stable["series"]["requests_per_s"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rates.iter().filter_map(|r| r.as_f64()).sum::<f64>() > 0.0
    })
    .await;

    // During a rollout step, the canary's and stable's figures for the step so far.
    let start = api.post("/api/v1/routes/web/rollout/start", serde_json::json!({}));
    assert_eq!(start.await.status, StatusCode::OK);
    eventually(IO_TIMEOUT, "the step is watched", || async move {
        let got = api_ref.get("/api/v1/stats").await;
        pool(&got.json["routes"][0], "canary")["rollout_step"].is_object()
    })
    .await;
    for _ in 0..20 {
        common::send(&client, veer.http(), "GET", "/", &[]).await;
    }
    eventually(
        IO_TIMEOUT,
        "the step's figures count the canary's requests",
        || async move {
            let got = api_ref.get("/api/v1/stats").await;
            let route = &got.json["routes"][0];
            let canary = pool(route, "canary");
            route["rollout"]["state"] == "progressing"
                && canary["rollout_step"]["requests"].as_u64().unwrap_or(0) > 0
                && pool(route, "stable")["rollout_step"]["requests"]
                    .as_u64()
                    .is_some()
        },
    )
    .await;
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn stats_count_requests_as_clients_saw_them_not_attempts() {
    // Every other request goes first to a server that refuses connections, and is retried on
    // the live one: four requests, six attempts, no error a client saw.
    let live = status_upstream("live", 200).await;
    let dead = common::refused_addr();
    let dir = TempDir::new("obs-attempts");
    let body = format!(
        "[proxy]\nretries = 1\n[pools.app]\nservers = [\"{}\", \"{}\"]\nbalance = \"round_robin\"\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        dead.addr, live.addr
    );
    let (veer, api) = start(&dir, &body).await;
    let client = common::client();
    for _ in 0..4 {
        let got = common::send(&client, veer.http(), "GET", "/", &[]).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    let m = api.metrics().await;
    assert_eq!(requests(&m, "web", "app", "2xx"), 4.0);
    let errors = metric_or_panic(
        &m,
        "veer_upstream_errors_total",
        &[
            ("pool", "app"),
            ("server", &dead.addr.to_string()),
            ("kind", "connect"),
        ],
    );
    assert!(errors >= 1.0, "the refused server was tried:\n{m}");
    let got = api.get("/api/v1/stats").await;
    let minute = &got.json["routes"][0]["pools"][0]["last_minute"];
    assert_eq!(
        (minute["requests"].as_u64(), minute["errors"].as_u64()),
        (Some(4), Some(0)),
        "{minute}"
    );
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}
