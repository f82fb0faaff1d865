//! Shadow mirroring over real sockets: what the shadow receives, how often, what is not
//! mirrored, that the shadow never touches what clients get, the in-flight cap, and the counts
//! of copies and mismatches (admin API and Prometheus). Every test names its own route, so that
//! the process-wide metrics of one test are not another's.

mod common;

use common::{
    client, eventually, metric_or_panic, raw_exchange, refused_addr, request, start_veer, Api, Log,
    Upstream, IO_TIMEOUT,
};
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A config with the admin API, pool `app` (the primary) and pool `shadow`, and route `route`
/// mirroring to `shadow`; `mirror` is added to `[routes.mirror]`, `route_extra` to the route.
fn config(route: &str, app: &str, shadow: &str, mirror: &str, route_extra: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [pools.app]\nservers = [{app}]\n\n[pools.shadow]\nservers = [{shadow}]\n\n\
         [[routes]]\nname = \"{route}\"\nsplit = {{ app = 1 }}\n{route_extra}\n\
         [routes.mirror]\npool = \"shadow\"\n{mirror}\n"
    )
}

fn quoted(addr: impl std::fmt::Display) -> String {
    format!("\"{addr}\"")
}

/// The route's `mirror` object from `GET /api/v1/routes/{route}`.
async fn mirror_view(api: &Api, route: &str) -> Value {
    let a = api.get(&format!("/api/v1/routes/{route}")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    a.json["route"]["mirror"].clone()
}

fn count(view: &Value, field: &str) -> u64 {
    view[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {view}"))
}

/// Waits until no copy of `route` is in flight and `done` (sent + skipped + failed) reaches
/// `at_least`; returns the view then.
async fn settled(api: &Api, route: &str, at_least: u64) -> Value {
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    loop {
        let v = mirror_view(api, route).await;
        let done = count(&v, "sent") + count(&v, "skipped") + count(&v, "failed");
        if count(&v, "in_flight") == 0 && done >= at_least {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the copies of {route} have not ended within {IO_TIMEOUT:?}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn requests_total(metrics: &str, route: &str, outcome: &str) -> f64 {
    metric_or_panic(
        metrics,
        "veer_mirror_requests_total",
        &[("route", route), ("pool", "shadow"), ("outcome", outcome)],
    )
}

fn whole(log: &Log) -> Vec<common::Received> {
    log.lock().unwrap().clone()
}

/// A body whose every byte depends on its position.
fn patterned(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[tokio::test]
async fn the_shadow_gets_the_same_request_and_the_client_only_the_primary_answer() {
    let (app, app_log) = Upstream::recording("primary", 200).await;
    let (shadow, shadow_log) = Upstream::recording("shadow", 200).await;
    let route = "same";
    let extra = "sticky = { cookie = \"veer_same\" }\n\n\
                 [[routes.pin]]\nheader = \"x-canary\"\npool = \"app\"\n";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "percent = 100",
        extra,
    ))
    .await;
    let api = Api::new(&veer, None);

    // A pinned request with a body of known length, a query and a hop-by-hop header.
    let body = patterned(256 * 1024);
    let headers = [
        ("x-canary", "1"),
        ("x-custom", "kept"),
        ("connection", "x-hop"),
        ("x-hop", "dropped"),
        ("host", "app.example.com"),
    ];
    let got = request(
        &client(),
        veer.http_addr,
        "PUT",
        "/p/a?x=1&y=two",
        &headers,
        body.clone(),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body, "primary\n",
        "the client gets the primary's answer"
    );
    assert_eq!(got.headers["x-server"], "primary");
    assert!(got.headers.get("x-veer-shadow").is_none());
    let cookie = got.headers["set-cookie"].to_str().unwrap().to_string();

    // A chunked body from a sticky user.
    let chunked = format!(
        "POST /chunked?z=9 HTTP/1.1\r\nhost: app.example.com\r\ncookie: {}\r\n\
         transfer-encoding: chunked\r\nconnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        cookie.split(';').next().unwrap()
    );
    let answer = raw_exchange(veer.http_addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("primary\n"), "{answer}");

    settled(&api, route, 2).await;
    let primary = whole(&app_log);
    let copies = whole(&shadow_log);
    assert_eq!((primary.len(), copies.len()), (2, 2), "{copies:?}");
    for (p, c) in primary.iter().zip(&copies) {
        assert_eq!((&c.method, &c.uri), (&p.method, &p.uri));
        assert_eq!(c.body.len(), p.body.len());
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(&c.body),
            xxhash_rust::xxh3::xxh3_64(&p.body),
            "the same body bytes"
        );
        assert_eq!(c.headers["x-veer-shadow"], "1");
        assert!(p.headers.get("x-veer-shadow").is_none());
        let mut shadow_headers = c.headers.clone();
        shadow_headers.remove("x-veer-shadow");
        assert_eq!(shadow_headers, p.headers, "the same headers as the primary");
    }
    let (first, second) = (&copies[0], &copies[1]);
    assert_eq!(
        (first.method.as_str(), first.uri.as_str()),
        ("PUT", "/p/a?x=1&y=two")
    );
    assert_eq!(first.body, body);
    assert_eq!(first.headers["x-custom"], "kept");
    assert_eq!(first.headers["x-forwarded-host"], "app.example.com");
    assert!(first.headers.get("x-hop").is_none() && first.headers.get("connection").is_none());
    assert_eq!(
        (second.method.as_str(), second.uri.as_str()),
        ("POST", "/chunked?z=9")
    );
    assert_eq!(second.body, b"hello world");

    let v = mirror_view(&api, route).await;
    assert_eq!(count(&v, "sent"), 2, "{v}");
    assert_eq!(count(&v, "mismatches"), 0, "{v}");
    let metrics = api.metrics().await;
    assert_eq!(requests_total(&metrics, route, "sent"), 2.0, "{metrics}");
}

#[tokio::test]
async fn percent_25_mirrors_a_quarter_of_the_requests() {
    let app = Upstream::named("primary").await;
    let shadow = Upstream::named("shadow").await;
    let route = "quarter";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "percent = 25",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();
    const N: u64 = 2000;
    for i in 0..N {
        let got = request(&c, veer.http_addr, "GET", &format!("/{i}"), &[], "").await;
        assert_eq!(got.body, "primary\n");
    }
    let v = settled(&api, route, 1).await;
    let sent = count(&v, "sent");
    assert_eq!(
        count(&v, "failed") + count(&v, "dropped") + count(&v, "skipped"),
        0
    );
    assert_eq!(
        shadow.hits() as u64,
        sent,
        "every copy counted reached the shadow"
    );
    assert_eq!(app.hits() as u64, N);
    // 25 % ± 4 points of 2,000 (the binomial's standard deviation is about 1 point).
    assert!((420..=580).contains(&sent), "{sent} of {N} mirrored");
}

#[tokio::test]
async fn bodies_over_max_body_are_not_mirrored() {
    let (app, app_log) = Upstream::recording("primary", 200).await;
    let (shadow, shadow_log) = Upstream::recording("shadow", 200).await;
    let route = "limited";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "max_body = 1024",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();

    // Over the limit by its length: known from the head, so no copy even starts, not even
    // while the body is still to come.
    let mut s = common::requests::connect(veer.http_addr).await;
    s.write_all(
        b"POST /long HTTP/1.1\r\nhost: x\r\ncontent-length: 4096\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    eventually(IO_TIMEOUT, "the primary gets the head", || async {
        app.hits() == 1
    })
    .await;
    s.write_all(&patterned(4096)).await.unwrap();
    let answer = common::requests::read_until_closed(&mut s, IO_TIMEOUT).await;
    assert!(answer.is_some_and(|a| a.ends_with("primary\n")));
    let v = settled(&api, route, 1).await;
    assert_eq!((count(&v, "skipped"), shadow.hits()), (1, 0), "{v}");
    // Over the limit only as it streams: chunked, 8 chunks of 512 bytes.
    let mut chunked =
        b"POST /chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    for _ in 0..8 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'c'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(veer.http_addr, &chunked).await;
    assert!(answer.ends_with("primary\n"), "{answer}");
    // Within the limit: mirrored.
    let got = request(&c, veer.http_addr, "POST", "/short", &[], patterned(1024)).await;
    assert_eq!(got.body, "primary\n");

    let v = settled(&api, route, 3).await;
    assert_eq!((count(&v, "skipped"), count(&v, "sent")), (2, 1), "{v}");
    let sizes: Vec<usize> = whole(&app_log).iter().map(|r| r.body.len()).collect();
    assert_eq!(
        sizes,
        [4096, 4096, 1024],
        "the primary gets every body whole"
    );
    let copies = whole(&shadow_log);
    assert_eq!(
        copies.len(),
        1,
        "only the short body is mirrored: {copies:?}"
    );
    assert_eq!(copies[0].uri, "/short");
    let metrics = api.metrics().await;
    assert_eq!(requests_total(&metrics, route, "skipped"), 2.0, "{metrics}");
}

#[tokio::test]
async fn a_shadow_that_falls_behind_loses_its_copy_and_never_holds_the_primary_back() {
    let (app, app_log) = Upstream::recording("primary", 200).await;
    // A shadow that reads no body until the gate opens: its socket fills, then the feed.
    let (shadow, gate) = Upstream::gated("shadow").await;
    let route = "behind";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "max_body = \"1GiB\"",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    // More than the copy's socket buffers and feed hold, far less than max_body.
    let body = patterned(64 << 20);
    let got = request(&client(), veer.http_addr, "POST", "/big", &[], body.clone()).await;
    assert_eq!(
        got.body, "primary\n",
        "the primary streams on while the copy is stuck"
    );
    assert_eq!(whole(&app_log)[0].body.len(), body.len());
    let v = mirror_view(&api, route).await;
    assert_eq!((count(&v, "skipped"), count(&v, "sent")), (1, 0), "{v}");
    gate.open();
    let v = settled(&api, route, 1).await;
    assert_eq!((count(&v, "skipped"), count(&v, "sent")), (1, 0), "{v}");
}

#[tokio::test]
async fn a_dead_shadow_pool_changes_nothing_for_clients() {
    let (app, _) = Upstream::recording("primary", 200).await;
    let (dead_a, dead_b) = (refused_addr(), refused_addr());
    let route = "dead";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &format!("{}, {}", quoted(&dead_a), quoted(&dead_b)),
        "",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();
    for i in 0..20 {
        let got = request(&c, veer.http_addr, "POST", &format!("/{i}"), &[], "body").await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "primary\n"));
    }
    let v = settled(&api, route, 20).await;
    assert_eq!((count(&v, "failed"), count(&v, "sent")), (20, 0), "{v}");
    // Shadow failures are no server's outcome: nothing counts against any server.
    let pools = api.get("/api/v1/pools").await.json;
    for pool in pools["pools"].as_array().expect("pools") {
        for server in pool["servers"].as_array().expect("servers") {
            assert_eq!(server["available"], true, "{server}");
            assert_eq!(server["ejection"]["count"], 0, "{server}");
            assert_eq!(server["ejection"]["consecutive_failures"], 0, "{server}");
        }
    }
    let metrics = api.metrics().await;
    assert_eq!(requests_total(&metrics, route, "failed"), 20.0, "{metrics}");
}

#[tokio::test]
async fn a_shadow_answering_another_status_class_is_counted() {
    let app = Upstream::named("primary").await;
    let (broken, _) = Upstream::recording("broken", 500).await;
    let (created, _) = Upstream::recording("created", 201).await;
    // Two routes: /diff mirrors to a shadow answering 500, /same to one answering 201.
    let veer = start_veer(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [pools.app]\nservers = [\"{}\"]\n[pools.broken]\nservers = [\"{}\"]\n\
         [pools.created]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"diff\"\npath_prefix = \"/diff\"\nsplit = {{ app = 1 }}\n\
         mirror = {{ pool = \"broken\" }}\n\n\
         [[routes]]\nname = \"sameclass\"\npath_prefix = \"/same\"\nsplit = {{ app = 1 }}\n\
         mirror = {{ pool = \"created\" }}\n",
        app.addr, broken.addr, created.addr
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();
    for i in 0..6 {
        for prefix in ["/diff", "/same"] {
            let got = request(&c, veer.http_addr, "GET", &format!("{prefix}/{i}"), &[], "").await;
            assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "primary\n"));
        }
    }
    // Mismatches are counted once the primary's answer is in; poll for them.
    eventually(IO_TIMEOUT, "6 mismatches on diff", || async {
        count(&mirror_view(&api, "diff").await, "mismatches") == 6
    })
    .await;
    let same = settled(&api, "sameclass", 6).await;
    assert_eq!(
        (count(&same, "sent"), count(&same, "mismatches")),
        (6, 0),
        "201 is 2xx too: {same}"
    );
    let metrics = api.metrics().await;
    let mismatches = |route| {
        metric_or_panic(
            &metrics,
            "veer_mirror_mismatches_total",
            &[("route", route)],
        )
    };
    assert_eq!(mismatches("diff"), 6.0, "{metrics}");
    assert_eq!(mismatches("sameclass"), 0.0, "{metrics}");
}

#[tokio::test]
async fn over_the_in_flight_cap_copies_are_dropped_and_clients_never_wait() {
    let app = Upstream::named("primary").await;
    // A shadow that never answers (until the end of the test).
    let (shadow, gate) = Upstream::gated("shadow").await;
    let route = "capped";
    let veer = start_veer(&format!(
        "[proxy]\nrequest_timeout = \"120s\"\n\n{}",
        config(
            route,
            &quoted(app.addr),
            &quoted(shadow.addr),
            "max_in_flight = 3",
            ""
        )
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();
    for i in 0..12 {
        // Each answer comes while the copies hang: the primary never waits on them.
        let got = request(&c, veer.http_addr, "GET", &format!("/{i}"), &[], "").await;
        assert_eq!(got.body, "primary\n");
    }
    let v = mirror_view(&api, route).await;
    assert_eq!(
        (count(&v, "in_flight"), count(&v, "dropped")),
        (3, 9),
        "{v}"
    );
    eventually(IO_TIMEOUT, "3 copies reach the shadow", || async {
        shadow.hits() == 3
    })
    .await;
    let metrics = api.metrics().await;
    assert_eq!(requests_total(&metrics, route, "dropped"), 9.0, "{metrics}");
    gate.open();
    let v = settled(&api, route, 3).await;
    assert_eq!((count(&v, "sent"), shadow.hits()), (3, 3), "{v}");
}

#[tokio::test]
async fn a_client_gone_mid_body_aborts_the_copy() {
    let (app, _) = Upstream::recording("primary", 200).await;
    let (shadow, shadow_log) = Upstream::recording("shadow", 200).await;
    let route = "cutoff";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    let mut s = common::requests::connect(veer.http_addr).await;
    // A chunked body that stops after its first chunk: a copy ended there would look whole.
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    s.write_all(b"1f4\r\n").await.unwrap();
    s.write_all(&[b'u'; 500]).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    eventually(IO_TIMEOUT, "both heads arrive", || async {
        app.hits() == 1 && shadow.hits() == 1
    })
    .await;
    drop(s);
    let v = settled(&api, route, 1).await;
    assert_eq!((count(&v, "failed"), count(&v, "sent")), (1, 0), "{v}");
    assert!(
        whole(&shadow_log).is_empty(),
        "no whole copy reached the shadow"
    );
}

#[tokio::test]
async fn the_mirror_pool_and_percent_change_through_the_api() {
    let app = Upstream::named("primary").await;
    let first = Upstream::named("first").await;
    let second = Upstream::named("second").await;
    let route = "changed";
    let veer = start_veer(&format!(
        "[pools.second]\nservers = [\"{}\"]\n\n{}",
        second.addr,
        config(route, &quoted(app.addr), &quoted(first.addr), "", "")
    ))
    .await;
    let api = Api::new(&veer, None);
    let c = client();
    let send = |n: usize| {
        let c = c.clone();
        let addr = veer.http_addr;
        async move {
            for i in 0..n {
                let got = request(&c, addr, "GET", &format!("/{i}"), &[], "").await;
                assert_eq!(got.body, "primary\n");
            }
        }
    };
    send(4).await;
    settled(&api, route, 4).await;
    assert_eq!(first.hits(), 4);

    let mut config = api.get("/api/v1/config").await.json;
    config["config"]["routes"][0]["mirror"] = serde_json::json!({"pool": "second", "percent": 0});
    let a = api.put("/api/v1/config", config.clone()).await;
    assert_eq!(a.status, 200, "{}", a.text);
    send(4).await;
    let v = mirror_view(&api, route).await;
    assert_eq!(
        (v["pool"].as_str(), count(&v, "sent")),
        (Some("second"), 0),
        "{v}"
    );

    let mut config = api.get("/api/v1/config").await.json;
    config["config"]["routes"][0]["mirror"]["percent"] = 100.into();
    let a = api.put("/api/v1/config", config).await;
    assert_eq!(a.status, 200, "{}", a.text);
    send(4).await;
    settled(&api, route, 4).await;
    assert_eq!((first.hits(), second.hits()), (4, 4));
    // A bad percent is refused like any other invalid change.
    let mut config = api.get("/api/v1/config").await.json;
    config["config"]["routes"][0]["mirror"]["percent"] = 101.into();
    assert_eq!(api.put("/api/v1/config", config).await.status, 422);
}

#[tokio::test]
async fn a_mismatch_sample_is_logged_with_both_statuses_and_latencies_at_a_bounded_rate() {
    let app = Upstream::named("primary").await;
    let (broken, _) = Upstream::recording("broken", 503).await;
    let dir = common::TempDir::new("mirror-sample");
    let path = dir.write(
        "veer.toml",
        &common::child_toml(
            "",
            &format!(
                "[pools.app]\nservers = [\"{}\"]\n[pools.shadow]\nservers = [\"{}\"]\n\n\
                 [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\nmirror = {{ pool = \"shadow\" }}\n",
                app.addr, broken.addr
            ),
        ),
    );
    let mut veer = common::VeerProcess::start(&path).await;
    let is_sample = |line: &str| {
        serde_json::from_str::<Value>(line).is_ok_and(|v| v["target"] == "veer::mirror")
    };
    let c = client();
    let got = request(&c, veer.http(), "DELETE", "/items/7?force=1", &[], "").await;
    assert_eq!(got.body, "primary\n");
    let line = veer
        .log_line(IO_TIMEOUT, is_sample)
        .await
        .expect("a mismatch sample");
    let v: Value = serde_json::from_str(&line).unwrap();
    let f = &v["fields"];
    assert_eq!(f["route"], "web");
    assert_eq!(f["method"], "DELETE");
    assert_eq!(f["path"], "/items/7?force=1");
    assert_eq!(
        (f["primary_status"].as_u64(), f["shadow_status"].as_u64()),
        (Some(200), Some(503))
    );
    assert!(
        f["primary_ms"].as_f64().is_some() && f["shadow_ms"].as_f64().is_some(),
        "{line}"
    );
    // Many more mismatches in a burst: at most one line a second, each saying how many it
    // left out. Count the lines until the burst's last mismatch is accounted for.
    let start = std::time::Instant::now();
    for i in 0..50 {
        request(&c, veer.http(), "GET", &format!("/{i}"), &[], "").await;
    }
    let burst = start.elapsed();
    let mut lines = 0u64;
    let mut unlogged = 0u64;
    // Every later sample reports the mismatches left out before it; one more request after
    // the throttle's second has passed flushes the count.
    while lines + unlogged < 50 {
        let next = veer.log_line(Duration::from_secs(3), is_sample).await;
        match next {
            Some(line) => {
                let v: Value = serde_json::from_str(&line).unwrap();
                lines += 1;
                unlogged += v["fields"]["unlogged"].as_u64().expect("unlogged");
            }
            None => {
                request(&c, veer.http(), "GET", "/flush", &[], "").await;
            }
        }
    }
    assert!(
        lines <= burst.as_secs() + 2,
        "{lines} sample lines for a burst of {burst:?}"
    );
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn a_copy_answered_before_its_body_ends_is_counted_once() {
    let (app, app_log) = Upstream::recording("primary", 200).await;
    // Answers at once, without reading the body.
    let shadow = Upstream::named("shadow").await;
    let route = "once";
    let veer = start_veer(&config(
        route,
        &quoted(app.addr),
        &quoted(shadow.addr),
        "max_body = 1024",
        "",
    ))
    .await;
    let api = Api::new(&veer, None);
    let mut s = common::requests::connect(veer.http_addr).await;
    s.write_all(
        b"POST /early HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let chunk = |n: usize| {
        let mut c = format!("{n:x}\r\n").into_bytes();
        c.extend(std::iter::repeat_n(b'e', n));
        c.extend_from_slice(b"\r\n");
        c
    };
    s.write_all(&chunk(1000)).await.unwrap();
    eventually(IO_TIMEOUT, "the shadow answered the copy", || async {
        count(&mirror_view(&api, route).await, "sent") == 1
    })
    .await;
    // The rest takes the body past max_body after the copy was answered and counted.
    for _ in 0..4 {
        s.write_all(&chunk(512)).await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = common::requests::read_until_closed(&mut s, IO_TIMEOUT).await;
    assert!(answer.is_some_and(|a| a.ends_with("primary\n")));
    assert_eq!(whole(&app_log)[0].body.len(), 1000 + 4 * 512);
    let v = settled(&api, route, 1).await;
    let total: u64 = ["sent", "skipped", "dropped", "failed"]
        .iter()
        .map(|f| count(&v, f))
        .sum();
    assert_eq!((count(&v, "sent"), total), (1, 1), "{v}");
}
