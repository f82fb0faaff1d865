//! Health over real sockets: active checks eject and readmit, a dead server costs at most its
//! requests in flight, a dead canary pool hands its share to stable, passive ejection holds
//! `max_ejection_percent`, draining lets in-flight requests finish and moves sticky users, a
//! reload keeps what is known about servers that remain, and the operator sees all of it.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{client, send, start_veer, Got};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tokio::time::{timeout, Instant};

/// Every wait in this file ends by this; a bug fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

/// An in-process server whose check path (`/ready`) and other answers the test sets, which
/// counts what it receives, and which can be killed (listener and connections closed at once).
#[derive(Clone)]
struct Server {
    addr: SocketAddr,
    name: &'static str,
    /// Status of `/ready`.
    ready: Arc<AtomicU16>,
    /// Status of every other path.
    status: Arc<AtomicU16>,
    /// Requests other than checks: received, and in flight now.
    hits: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    /// Requests other than checks answered to the end.
    answered: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Server {
    /// `/slow` answers after 2 s; `/work` after 20 ms; anything else at once.
    async fn start(name: &'static str) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: listener.local_addr().unwrap(),
            name,
            ready: Arc::new(AtomicU16::new(200)),
            status: Arc::new(AtomicU16::new(200)),
            hits: Arc::default(),
            in_flight: Arc::default(),
            answered: Arc::default(),
            checks: Arc::default(),
            tasks: Arc::default(),
        };
        let state = server.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state2 = state.clone();
                let conn = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = state2.clone();
                        async move { Ok::<_, Infallible>(s.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                state.tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        server.tasks.lock().unwrap().push(accept.abort_handle());
        server
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/ready" {
            self.checks.fetch_add(1, Ordering::SeqCst);
            let status = self.ready.load(Ordering::SeqCst);
            return reply(status, self.name);
        }
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _done = Decrement(Arc::clone(&self.in_flight));
        match req.uri().path() {
            "/slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            "/work" => tokio::time::sleep(Duration::from_millis(20)).await,
            _ => {}
        }
        self.answered.fetch_add(1, Ordering::SeqCst);
        reply(self.status.load(Ordering::SeqCst), self.name)
    }

    /// Closes the listener and every connection, as a crashed process would.
    fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reply(status: u16, name: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-server", name)
        .body(Full::new(Bytes::from(format!("{name}\n"))))
        .unwrap()
}

fn servers(list: &[&Server]) -> String {
    let addrs: Vec<String> = list.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    format!("servers = [{}]", addrs.join(", "))
}

fn checks(interval_ms: u64) -> String {
    format!(
        "path = \"/ready\"\ninterval = \"{interval_ms}ms\"\ntimeout = \"{interval_ms}ms\"\n\
         healthy_threshold = 2\nunhealthy_threshold = 3\n"
    )
}

/// A GET through veer, bounded.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    let c = client();
    timeout(PATIENCE, send(&c, addr, "GET", path, headers))
        .await
        .expect("veer answers in time")
}

/// Waits until `cond` holds, polling; panics with `what` at the deadline.
async fn until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

fn slot(
    veer: &veer::run::Running,
    pool: &str,
    server: usize,
) -> Arc<veer::health::registry::ServerSlot> {
    let snap = veer.state.snapshot();
    let p = snap.table.pool_id(pool).expect("the pool exists");
    Arc::clone(snap.slots.server(p, server as u16))
}

async fn pools_json(veer: &veer::run::Running) -> Value {
    let admin = veer.admin_addr.expect("the admin API listens");
    let got = get(admin, "/api/v1/pools", &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.body);
    let body: Value = serde_json::from_str(&got.body).unwrap();
    body["pools"].clone()
}

async fn admin_post(veer: &veer::run::Running, path: &str) {
    let admin = veer.admin_addr.expect("the admin API listens");
    let c = client();
    let got = timeout(PATIENCE, send(&c, admin, "POST", path, &[]))
        .await
        .expect("the admin API answers in time");
    assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.body);
}

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\n";

#[tokio::test]
async fn a_failing_check_path_ejects_within_the_thresholds_and_recovery_readmits() {
    let (a, b) = (Server::start("a").await, Server::start("b").await);
    let interval = 300;
    let veer = start_veer(&format!(
        "{ADMIN}[pools.app]\n{}\nbalance = \"round_robin\"\n[pools.app.health]\n{}\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        servers(&[&a, &b]),
        checks(interval)
    ))
    .await;
    let first = slot(&veer, "app", 0);
    until("a is checked", PATIENCE, || {
        a.checks.load(Ordering::SeqCst) > 0
    })
    .await;
    a.ready.store(500, Ordering::SeqCst);
    let failing_from = a.checks.load(Ordering::SeqCst);
    // interval × unhealthy_threshold, plus the interval in which the path turned.
    let bound = Duration::from_millis(interval * 3 + interval);
    let took = until("a is ejected", bound, || !first.healthy()).await;
    let failed_checks = a.checks.load(Ordering::SeqCst) - failing_from;
    assert!(
        (3..=4).contains(&failed_checks),
        "{failed_checks} failed checks"
    );
    println!("detection took {took:?} for interval {interval}ms, threshold 3");
    let before = a.hits();
    for _ in 0..20 {
        let got = get(veer.http_addr, "/", &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "b\n"));
    }
    assert_eq!(a.hits(), before, "an unhealthy server gets nothing");
    let pools = pools_json(&veer).await;
    let view = &pools[0]["servers"][0];
    assert_eq!(view["healthy"], false);
    assert_eq!(view["available"], false);
    assert_eq!(view["ejection"]["reason"], "active");
    assert_eq!(view["ejection"]["count"], 1);

    a.ready.store(200, Ordering::SeqCst);
    until("a is readmitted", PATIENCE, || first.available()).await;
    let mut seen_a = false;
    for _ in 0..10 {
        seen_a |= get(veer.http_addr, "/", &[]).await.body == "a\n";
    }
    assert!(seen_a, "a serves again");
}

#[tokio::test]
async fn killing_one_of_three_servers_under_load_costs_at_most_its_requests_in_flight() {
    let list = [
        Server::start("a").await,
        Server::start("b").await,
        Server::start("c").await,
    ];
    let veer = start_veer(&format!(
        "[pools.app]\n{}\n[pools.app.health]\n{}\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        servers(&[&list[0], &list[1], &list[2]]),
        checks(100)
    ))
    .await;
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let total = 600;
    let mut workers = Vec::new();
    for _ in 0..6 {
        let (done, errors, addr) = (Arc::clone(&done), Arc::clone(&errors), veer.http_addr);
        workers.push(tokio::spawn(async move {
            let c = client();
            while done.fetch_add(1, Ordering::SeqCst) < total {
                let got = timeout(PATIENCE, send(&c, addr, "GET", "/work", &[]))
                    .await
                    .expect("veer answers in time");
                if got.status.is_server_error() {
                    errors.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    until("load runs", PATIENCE, || done.load(Ordering::SeqCst) > 150).await;
    let victim = &list[0];
    victim.kill();
    for w in workers {
        timeout(PATIENCE, w).await.unwrap().unwrap();
    }
    // Requests that reached the killed server and never got its answer: those in flight on it
    // when it died.
    let in_flight = victim.hits() - victim.answered.load(Ordering::SeqCst);
    let errors = errors.load(Ordering::SeqCst);
    println!("{errors} errors; {in_flight} requests in flight on the killed server");
    assert!(
        errors <= in_flight,
        "{errors} errors, {in_flight} requests were in flight on the killed server"
    );
    assert!(!slot(&veer, "app", 0).healthy(), "the dead server is out");
}

#[tokio::test]
async fn a_dead_canary_pool_sends_all_its_traffic_to_stable_with_no_5xx_once_detected() {
    let (stable, canary) = (Server::start("stable").await, Server::start("canary").await);
    let veer = start_veer(&format!(
        "{ADMIN}[pools.stable]\n{}\n[pools.canary]\n{}\n[pools.canary.health]\n{}\n\
         [[routes]]\nname = \"web\"\nsplit = {{ stable = 50, canary = 50 }}\n\
         [[routes.pin]]\nheader = \"x-canary\"\npool = \"canary\"\n",
        servers(&[&stable]),
        servers(&[&canary]),
        checks(100)
    ))
    .await;
    let got = get(veer.http_addr, "/", &[("x-canary", "1")]).await;
    assert_eq!(got.body, "canary\n");
    canary.kill();
    let snap = veer.state.snapshot();
    let canary_id = snap.table.pool_id("canary").unwrap();
    use veer::route::HealthView;
    until("the canary pool is out", PATIENCE, || {
        !snap.slots.pool_available(canary_id)
    })
    .await;
    for i in 0..200 {
        let pin: &[(&str, &str)] = if i % 4 == 0 {
            &[("x-canary", "1")]
        } else {
            &[]
        };
        let got = get(veer.http_addr, "/", pin).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::OK, "stable\n"),
            "request {i}"
        );
    }
    let admin = veer.admin_addr.unwrap();
    let routes: Value =
        serde_json::from_str(&get(admin, "/api/v1/routes", &[]).await.body).unwrap();
    let split = &routes["routes"][0]["split"];
    assert_eq!(split[0]["effective_percent"], 100.0);
    assert_eq!(split[1]["effective_percent"], 0.0);
    let metrics = get(admin, "/metrics", &[]).await.body;
    let line = "veer_route_effective_percent{route=\"web\",pool=\"canary\"} 0";
    assert!(metrics.contains(line), "{line} in\n{metrics}");
}

#[tokio::test]
async fn nothing_healthy_anywhere_is_a_fast_503() {
    let only = Server::start("only").await;
    only.ready.store(500, Ordering::SeqCst);
    let veer = start_veer(&format!(
        "[pools.app]\n{}\n[pools.app.health]\n{}\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        servers(&[&only]),
        checks(50)
    ))
    .await;
    let s = slot(&veer, "app", 0);
    until("the only server is out", PATIENCE, || !s.healthy()).await;
    let got = get(veer.http_addr, "/", &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(got.body, "no healthy upstream\n");
    assert_eq!(only.hits(), 0, "nothing was sent to the server");
}

#[tokio::test]
async fn passive_ejection_after_consecutive_503s_and_the_percent_holds_the_last_server() {
    let (a, b) = (Server::start("a").await, Server::start("b").await);
    let (c, d) = (Server::start("c").await, Server::start("d").await);
    for s in [&a, &b, &c] {
        s.status.store(503, Ordering::SeqCst);
    }
    let veer = start_veer(&format!(
        "{ADMIN}[pools.bad]\n{}\nbalance = \"round_robin\"\n\
         [pools.bad.outlier]\nconsecutive_failures = 3\nmax_ejection_percent = 50\n\
         [pools.mixed]\n{}\nbalance = \"round_robin\"\n\
         [pools.mixed.outlier]\nconsecutive_failures = 3\n\
         [[routes]]\nname = \"bad\"\npath_prefix = \"/bad\"\nsplit = {{ bad = 1 }}\n\
         [[routes]]\nname = \"mixed\"\nsplit = {{ mixed = 1 }}\n",
        servers(&[&a, &b]),
        servers(&[&c, &d]),
    ))
    .await;
    // The mixed pool: c answers 503 every time, d 200; after 3 in a row c is out.
    for _ in 0..6 {
        get(veer.http_addr, "/", &[]).await;
    }
    assert_eq!(c.hits(), 3);
    let c_slot = slot(&veer, "mixed", 0);
    assert!(c_slot.ejected());
    for _ in 0..20 {
        let got = get(veer.http_addr, "/", &[]).await;
        assert_eq!((got.status, got.body.as_str()), (StatusCode::OK, "d\n"));
    }
    assert_eq!(c.hits(), 3, "an ejected server gets nothing");
    // The bad pool: both fail, but 50% of two is one: the last server stays.
    for _ in 0..20 {
        let got = get(veer.http_addr, "/bad", &[]).await;
        assert_eq!(
            got.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "the server's 503"
        );
    }
    let ejected = [slot(&veer, "bad", 0), slot(&veer, "bad", 1)].map(|s| s.ejected());
    assert_eq!(ejected.iter().filter(|&&e| e).count(), 1, "{ejected:?}");
    let pools = pools_json(&veer).await;
    let view = &pools[1]["servers"][0];
    assert_eq!(view["addr"], c.addr.to_string());
    assert_eq!(view["ejection"]["reason"], "outlier");
    assert_eq!(view["ejection"]["count"], 1);
    assert!(view["ejection"]["until"].is_string(), "{view}");
    let metrics = get(veer.admin_addr.unwrap(), "/metrics", &[]).await.body;
    let line = format!(
        "veer_ejections_total{{pool=\"mixed\",server=\"{}\",reason=\"outlier\"}} 1",
        c.addr
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    let line = format!(
        "veer_server_healthy{{pool=\"mixed\",server=\"{}\"}} 0",
        c.addr
    );
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
}

#[tokio::test]
async fn connect_failures_are_counted_by_kind_and_eject_the_server() {
    let a = Server::start("a").await;
    let dead = common::refused_addr();
    let veer = start_veer(&format!(
        "{ADMIN}[pools.app]\nservers = [\"{dead}\", \"{}\"]\nbalance = \"round_robin\"\n\
         [pools.app.outlier]\nconsecutive_failures = 2\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        a.addr
    ))
    .await;
    for _ in 0..10 {
        let got = get(veer.http_addr, "/", &[]).await;
        assert_eq!(got.body, "a\n", "the retry goes to the live server");
    }
    assert!(slot(&veer, "app", 0).ejected());
    let metrics = get(veer.admin_addr.unwrap(), "/metrics", &[]).await.body;
    let line =
        format!("veer_upstream_errors_total{{pool=\"app\",server=\"{dead}\",kind=\"connect\"}} 2");
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
}

#[tokio::test]
async fn the_connect_failure_retry_skips_an_ejected_server() {
    let (a, b, c) = (
        Server::start("a").await,
        Server::start("b").await,
        Server::start("c").await,
    );
    b.status.store(503, Ordering::SeqCst);
    let veer = start_veer(&format!(
        "[pools.app]\n{}\nbalance = \"round_robin\"\n\
         [pools.app.outlier]\nconsecutive_failures = 2\nmax_ejection_percent = 100\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        servers(&[&a, &b, &c])
    ))
    .await;
    for _ in 0..6 {
        get(veer.http_addr, "/", &[]).await;
    }
    assert!(slot(&veer, "app", 1).ejected(), "b ejected by its 503s");
    let b_hits = b.hits();
    // a dies: each request decided for it fails to connect and is retried on the next
    // server after it that is not ejected: c, never b.
    a.kill();
    for i in 0..10 {
        let got = get(veer.http_addr, "/", &[]).await;
        assert_eq!(
            (got.status, got.body.as_str()),
            (StatusCode::OK, "c\n"),
            "request {i}"
        );
    }
    assert_eq!(b.hits(), b_hits, "the ejected server got no retry");
}

#[tokio::test]
async fn a_drained_server_finishes_a_2_second_request_and_gets_nothing_new() {
    let (a, b) = (Server::start("a").await, Server::start("b").await);
    let veer = start_veer(&format!(
        "{ADMIN}[pools.app]\n{}\nbalance = \"round_robin\"\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        servers(&[&a, &b])
    ))
    .await;
    let addr = veer.http_addr;
    let slow = tokio::spawn(async move { get(addr, "/slow", &[]).await });
    until("the slow request is in flight", PATIENCE, || {
        a.in_flight.load(Ordering::SeqCst) + b.in_flight.load(Ordering::SeqCst) == 1
    })
    .await;
    let (busy, idle) = if a.in_flight.load(Ordering::SeqCst) == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    admin_post(
        &veer,
        &format!("/api/v1/pools/app/servers/{}/drain", busy.addr),
    )
    .await;
    let before = busy.hits();
    for _ in 0..30 {
        let got = get(veer.http_addr, "/", &[]).await;
        assert_eq!(got.body, format!("{}\n", idle.name));
    }
    assert_eq!(busy.hits(), before, "a drained server gets nothing new");
    let pools = pools_json(&veer).await;
    let index = if busy.name == "a" { 0 } else { 1 };
    assert_eq!(pools[0]["servers"][index]["draining"], true);
    assert_eq!(pools[0]["servers"][index]["in_flight"], 1);
    let got = timeout(PATIENCE, slow).await.unwrap().unwrap();
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(
        got.body,
        format!("{}\n", busy.name),
        "the in-flight request finished"
    );
}

#[tokio::test]
async fn sticky_users_of_a_drained_or_ejected_server_move_within_the_pool_with_a_new_cookie() {
    let (a, b, g) = (
        Server::start("a").await,
        Server::start("b").await,
        Server::start("g").await,
    );
    let veer = start_veer(&format!(
        "{ADMIN}[pools.blue]\n{}\n[pools.blue.outlier]\nconsecutive_failures = 1\n\
         [pools.green]\n{}\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 50, green = 50 }}\n\
         sticky = {{ cookie = \"s\", max_age = \"1h\" }}\n",
        servers(&[&a, &b]),
        servers(&[&g])
    ))
    .await;
    // A user on each blue server.
    let mut cookies = std::collections::HashMap::new();
    for _ in 0..200 {
        let got = get(veer.http_addr, "/", &[]).await;
        let cookie = got.headers["set-cookie"].to_str().unwrap();
        let pair = cookie.split(';').next().unwrap().to_string();
        cookies.entry(got.body.clone()).or_insert(pair);
        if cookies.contains_key("a\n") && cookies.contains_key("b\n") {
            break;
        }
    }
    let (on_a, on_b) = (cookies["a\n"].clone(), cookies["b\n"].clone());
    let back = get(veer.http_addr, "/", &[("cookie", &on_a)]).await;
    assert_eq!(back.body, "a\n");
    assert!(
        back.headers.get("set-cookie").is_none(),
        "the same server: no new cookie"
    );

    admin_post(
        &veer,
        &format!("/api/v1/pools/blue/servers/{}/drain", a.addr),
    )
    .await;
    let moved = get(veer.http_addr, "/", &[("cookie", &on_a)]).await;
    assert_eq!(moved.body, "b\n", "moved within blue");
    let renewed = moved.headers["set-cookie"].to_str().unwrap();
    let renewed = renewed.split(';').next().unwrap().to_string();
    assert_ne!(renewed, on_a);
    let again = get(veer.http_addr, "/", &[("cookie", &renewed)]).await;
    assert_eq!(again.body, "b\n");
    assert!(again.headers.get("set-cookie").is_none());
    admin_post(
        &veer,
        &format!("/api/v1/pools/blue/servers/{}/undrain", a.addr),
    )
    .await;

    // b fails once and is ejected (consecutive_failures = 1): its user moves to a.
    b.status.store(503, Ordering::SeqCst);
    let failed = get(veer.http_addr, "/", &[("cookie", &on_b)]).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(slot(&veer, "blue", 1).ejected());
    let moved = get(veer.http_addr, "/", &[("cookie", &on_b)]).await;
    assert_eq!(moved.body, "a\n", "moved within blue");
    assert!(moved.headers.get("set-cookie").is_some());
}

#[tokio::test]
async fn a_reload_keeps_the_health_of_servers_that_remain() {
    let (a, b, c) = (
        Server::start("a").await,
        Server::start("b").await,
        Server::start("c").await,
    );
    a.ready.store(500, Ordering::SeqCst);
    b.status.store(503, Ordering::SeqCst);
    let config = |list: &[&Server], weight: u32| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n{ADMIN}[pools.app]\n{}\nbalance = \"round_robin\"\n\
             [pools.app.health]\n{}\n[pools.app.outlier]\nconsecutive_failures = 1\n\
             max_ejection_percent = 100\n[pools.other]\n{}\n\
             [[routes]]\nname = \"web\"\nsplit = {{ app = 1, other = {weight} }}\n",
            servers(list),
            checks(50),
            servers(&[&c]),
        )
    };
    let compiled = veer::config::from_toml(&config(&[&a, &b, &c], 0), "test.toml").unwrap();
    let veer = veer::run::start(compiled).await.unwrap();
    let (sa, sb) = (slot(&veer, "app", 0), slot(&veer, "app", 1));
    until("a fails its checks", PATIENCE, || !sa.healthy()).await;
    b.ready.store(200, Ordering::SeqCst);
    for _ in 0..6 {
        get(veer.http_addr, "/", &[]).await;
    }
    assert!(sb.ejected(), "b ejected by its 503");
    let checks_before = c.checks.load(Ordering::SeqCst);
    // The file changes: c leaves the pool, the split changes; a and b remain.
    let reloaded = veer::config::from_toml(&config(&[&a, &b], 1), "test.toml").unwrap();
    let control = Arc::clone(&veer.control);
    tokio::task::spawn_blocking(move || control.reload(reloaded.raw))
        .await
        .unwrap()
        .unwrap();
    let (ra, rb) = (slot(&veer, "app", 0), slot(&veer, "app", 1));
    assert!(!ra.healthy(), "a is still unhealthy after the reload");
    assert!(rb.ejected(), "b is still ejected after the reload");
    assert_eq!(ra.ejection().count, 1);
    // c's checks in the app pool stop (it is checked nowhere else).
    let stopped = c.checks.load(Ordering::SeqCst);
    until("a checks again after the reload", PATIENCE, || {
        a.checks.load(Ordering::SeqCst) > 4 + stopped
    })
    .await;
    assert!(
        c.checks.load(Ordering::SeqCst) <= stopped + 1,
        "c, removed, is checked no more ({checks_before} before, {stopped} at reload)"
    );
    a.ready.store(200, Ordering::SeqCst);
    until("a recovers", PATIENCE, || ra.healthy()).await;
}

#[tokio::test]
async fn each_server_is_checked_by_one_task_across_reloads() {
    let (a, b) = (Server::start("a").await, Server::start("b").await);
    let config = |list: &[&Server]| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[pools.app]\n{}\n[pools.app.health]\n{}\n\
             [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            servers(list),
            checks(50),
        )
    };
    let compiled = veer::config::from_toml(&config(&[&a]), "test.toml").unwrap();
    let veer = veer::run::start(compiled).await.unwrap();
    for list in [vec![&a, &b], vec![&b, &a], vec![&a, &b]] {
        let next = veer::config::from_toml(&config(&list), "test.toml").unwrap();
        let control = Arc::clone(&veer.control);
        tokio::task::spawn_blocking(move || control.reload(next.raw))
            .await
            .unwrap()
            .unwrap();
    }
    until("b is checked", PATIENCE, || {
        b.checks.load(Ordering::SeqCst) > 0
    })
    .await;
    let (a0, b0) = (
        a.checks.load(Ordering::SeqCst),
        b.checks.load(Ordering::SeqCst),
    );
    until("b is checked 20 more times", PATIENCE, || {
        b.checks.load(Ordering::SeqCst) >= b0 + 20
    })
    .await;
    let a_more = a.checks.load(Ordering::SeqCst) - a0;
    // One task each: a is checked as often as b, give or take one check in flight and jitter;
    // two tasks for a would check it about twice as often.
    assert!(
        a_more <= 24,
        "a checked {a_more} times while b was checked 20 times"
    );
}

/// Not a check but a measurement for the README: how long the default active checks (interval
/// 2 s, timeout 1 s, unhealthy_threshold 3, healthy_threshold 2) take to take a server out after
/// its check path turns 500 at a random moment, and to bring it back after it recovers. Run with
/// `cargo test --test health -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_detection_time_with_default_checks() {
    let rounds = (0..8).map(|round| async move {
        let a = Server::start("a").await;
        let veer = start_veer(&format!(
            "[pools.app]\n{}\n[pools.app.health]\npath = \"/ready\"\n\
             [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            servers(&[&a])
        ))
        .await;
        let s = slot(&veer, "app", 0);
        until("first check", PATIENCE, || {
            a.checks.load(Ordering::SeqCst) > 0
        })
        .await;
        // A random moment within the check interval.
        tokio::time::sleep(Duration::from_millis(250 * round)).await;
        a.ready.store(500, Ordering::SeqCst);
        let out = until("ejected", PATIENCE, || !s.healthy()).await;
        a.ready.store(200, Ordering::SeqCst);
        let back = until("readmitted", PATIENCE, || s.healthy()).await;
        (out, back)
    });
    let results = futures_util::future::join_all(rounds).await;
    for (out, back) in &results {
        println!("out after {out:?}, back after {back:?}");
    }
    let outs: Vec<f64> = results.iter().map(|r| r.0.as_secs_f64()).collect();
    let backs: Vec<f64> = results.iter().map(|r| r.1.as_secs_f64()).collect();
    let span = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        (min, v.iter().sum::<f64>() / v.len() as f64, max)
    };
    println!("out: min/mean/max {:?} s", span(&outs));
    println!("back: min/mean/max {:?} s", span(&backs));
}
