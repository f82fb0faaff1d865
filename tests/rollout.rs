//! Progressive rollouts over real sockets, with intervals of hundreds of milliseconds: a
//! healthy canary walks every step to promoted; a failing or slow canary is rolled back before
//! a long interval ends; too little traffic holds; pause, resume and abort; an operator's
//! split pauses; a restart resumes at the same step; `compare` judges the canary against the
//! stable pool in the same window. Every wait is a polled condition with a deadline.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Api, TempDir, Upstream, VeerProcess};
use http::{Response, StatusCode};
use serde_json::{json, Value};

/// Long enough for a loaded 2-core machine to walk a few steps; a bound on a hang, not a
/// performance claim.
const WAIT: Duration = Duration::from_secs(60);

/// Answers `<name>\n`, except every `every`-th request (counted from the first), which gets a
/// 500: an exact error share, so that no test depends on chance.
async fn failing(name: &'static str, every: usize) -> Upstream {
    let count = Arc::new(AtomicUsize::new(0));
    Upstream::with(Arc::new(move |_req| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let status = if every > 0 && n % every == 0 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            };
            Response::builder()
                .status(status)
                .header("x-server", name)
                .body(common::full(format!("{name}\n")))
                .unwrap()
        })
    }))
    .await
}

/// `[admin]`, pools blue and green, and route `web` with `plan` as its `[routes.rollout]`
/// (stable blue, canary green) and an `x-canary` pin to green.
fn config(blue: &Upstream, green: &Upstream, plan: &str, extra_admin: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{extra_admin}\n\
         [pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 100, green = 0 }}\n\
         sticky = {{ cookie = \"veer_web\", max_age = \"1h\" }}\n\
         [[routes.pin]]\nheader = \"x-canary\"\nequals = \"true\"\npool = \"green\"\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\n{plan}\n",
        blue.addr, green.addr
    )
}

/// Requests to `path` from `clients` loops until stopped (each bounded, so a lost stop
/// cannot run forever).
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn load(addr: std::net::SocketAddr, path: &'static str, clients: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|_| {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let client = common::client();
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    common::send(&client, addr, "GET", path, &[]).await;
                }
            })
        })
        .collect();
    Load { stop, tasks }
}

impl Load {
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = common::within(WAIT, "the load stops", t).await;
        }
    }
}

async fn rollout(api: &Api, route: &str) -> Value {
    let a = api.get(&format!("/api/v1/routes/{route}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json["route"]["rollout"].clone()
}

async fn wait_state(api: &Api, route: &str, state: &str) -> Value {
    let mut last = Value::Null;
    let what = format!("rollout of {route} is {state}");
    let found = common::within(WAIT, &what, async {
        loop {
            last = rollout(api, route).await;
            if last["state"] == state {
                return last.clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found
}

async fn act(api: &Api, route: &str, action: &str) -> Value {
    let a = api
        .post(
            &format!("/api/v1/routes/{route}/rollout/{action}"),
            json!({}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{action}: {}", a.text);
    a.json
}

/// The route's weights, pool by pool.
async fn weights(api: &Api, route: &str) -> Vec<(String, u64)> {
    let a = api.get(&format!("/api/v1/routes/{route}")).await;
    a.json["route"]["split"]
        .as_array()
        .expect("a split")
        .iter()
        .map(|e| {
            (
                e["pool"].as_str().unwrap_or_default().to_string(),
                e["weight"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

/// Waits until `veer_rollouts_total{labels}` has counted a rollout (the driver counts an
/// ended rollout at its next tick).
async fn counted(api: &Api, labels: &[(&str, &str)]) {
    eventually(WAIT, "veer_rollouts_total counts the rollout", || async {
        let text = api.metrics().await;
        common::metric(&text, "veer_rollouts_total", labels).is_some_and(|n| n >= 1.0)
    })
    .await;
}

fn history(rollout: &Value) -> Vec<(String, String)> {
    rollout["history"]
        .as_array()
        .expect("a history")
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or_default().to_string(),
                h["to"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_walks_every_step_to_promoted() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let plan = "steps = [20, 50, 100]\ninterval = \"300ms\"\nmax_error_rate = 0.1\nmax_p99 = \"5s\"\nmin_requests = 5";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    let traffic = load(veer.http_addr, "/", 4);
    act(&api, "web", "start").await;
    let done = wait_state(&api, "web", "promoted").await;
    traffic.stop().await;
    let steps = history(&done);
    let want: Vec<(String, String)> = [
        ("idle", "progressing(0)"),
        ("progressing(0)", "progressing(1)"),
        ("progressing(1)", "progressing(2)"),
        ("progressing(2)", "promoted"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(steps, want, "{done}");
    let last = &done["history"][3];
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("within the plan's limits"),
        "{last}"
    );
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 0), ("green".into(), 100)]
    );
    // Metrics are one registry per test process, shared by this file's tests: at least this
    // rollout's promotion is counted.
    let promoted = [("route", "web"), ("outcome", "promoted")];
    counted(&api, &promoted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_half_its_requests_is_rolled_back_long_before_the_interval_ends() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 2).await);
    let plan = "steps = [50, 100]\ninterval = \"1h\"\nmax_error_rate = 0.1\nmin_requests = 20";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    let traffic = load(veer.http_addr, "/", 4);
    act(&api, "web", "start").await;
    let back = wait_state(&api, "web", "rolled_back").await;
    traffic.stop().await;
    let reason = back["reason"].as_str().unwrap();
    assert!(
        reason.contains("over the limit 10.00%") && reason.contains("stable"),
        "{reason}"
    );
    assert_eq!(history(&back).last().unwrap().0, "progressing(0)");
    // The last analysis shows both pools' figures.
    let analysis = &back["analysis"];
    assert_eq!(analysis["verdict"], "roll_back", "{analysis}");
    assert!(
        analysis["canary"]["error_rate"].as_f64().unwrap() >= 0.4,
        "{analysis}"
    );
    assert_eq!(analysis["stable"]["errors"], 0, "{analysis}");
    assert!(
        analysis["stable"]["requests"].as_u64().unwrap() > 0,
        "{analysis}"
    );
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 100), ("green".into(), 0)]
    );
    // The rollback moves sticky canary users back; a pin still reaches the canary.
    let got = common::get(veer.http_addr, "/", &[("x-canary", "true")]).await;
    assert_eq!(got.headers["x-server"], "green");
    let set_cookie = got.headers.get("set-cookie").expect("a sticky cookie");
    let green_cookie = set_cookie.to_str().unwrap().split(';').next().unwrap();
    let got = common::get(veer.http_addr, "/", &[("cookie", green_cookie)]).await;
    assert_eq!(got.headers["x-server"], "blue");
    counted(&api, &[("route", "web"), ("outcome", "rolled_back")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_canary_over_max_p99_is_rolled_back() {
    let blue = failing("blue", 0).await;
    let green = Upstream::slow("green", Duration::from_millis(120)).await;
    let plan = "steps = [50, 100]\ninterval = \"1h\"\nmax_p99 = \"40ms\"\nmin_requests = 5";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    let traffic = load(veer.http_addr, "/", 4);
    act(&api, "web", "start").await;
    let back = wait_state(&api, "web", "rolled_back").await;
    traffic.stop().await;
    let reason = back["reason"].as_str().unwrap();
    assert!(
        reason.contains("p99") && reason.contains("over the limit 40ms"),
        "{reason}"
    );
    assert!(back["analysis"]["canary"]["p99_ms"].as_f64().unwrap() >= 120.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_little_traffic_holds_the_step() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let plan =
        "steps = [50, 100]\ninterval = \"200ms\"\nmax_error_rate = 0.1\nmin_requests = 100000";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    act(&api, "web", "start").await;
    for _ in 0..10 {
        common::get(veer.http_addr, "/", &[]).await;
    }
    eventually(WAIT, "the analysis holds", || {
        let api = &api;
        async move { rollout(api, "web").await["analysis"]["verdict"] == "hold" }
    })
    .await;
    let r = rollout(&api, "web").await;
    assert_eq!(
        (r["state"].as_str(), r["step"].as_u64()),
        (Some("progressing"), Some(0)),
        "{r}"
    );
    assert!(r["analysis"]["reason"]
        .as_str()
        .unwrap()
        .contains("of the 100000 requests needed"));
}

/// Two routes under one load: `api` walks to promoted while `web` stays paused, so the pause
/// is seen to hold across many ticks without timing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_freezes_the_step_and_resume_takes_it_up_again() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let plan =
        "steps = [20, 50, 100]\ninterval = \"200ms\"\nmax_error_rate = 0.1\nmin_requests = 5";
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [pools.blue]\nservers = [\"{b}\"]\n[pools.green]\nservers = [\"{g}\"]\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nsplit = {{ blue = 100, green = 0 }}\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\n{plan}\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 100, green = 0 }}\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\n{plan}\n",
        b = blue.addr,
        g = green.addr
    );
    let veer = common::start_veer(&text).await;
    let api = Api::new(&veer, None);
    let (web_load, api_load) = (
        load(veer.http_addr, "/", 2),
        load(veer.http_addr, "/api/x", 2),
    );
    act(&api, "web", "start").await;
    let paused = act(&api, "web", "pause").await;
    assert_eq!(paused["route"]["rollout"]["state"], "paused");
    let paused_step = paused["route"]["rollout"]["step"].clone();
    act(&api, "api", "start").await;
    wait_state(&api, "api", "promoted").await;
    let web = rollout(&api, "web").await;
    assert_eq!(
        (&web["state"], &web["step"]),
        (&json!("paused"), &paused_step),
        "{web}"
    );
    act(&api, "web", "resume").await;
    wait_state(&api, "web", "promoted").await;
    web_load.stop().await;
    api_load.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_rolls_back_and_names_the_operator() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let plan = "steps = [50, 100]\ninterval = \"1h\"\nmax_error_rate = 0.1";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    act(&api, "web", "start").await;
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 50), ("green".into(), 50)]
    );
    let aborted = act(&api, "web", "abort").await;
    let r = &aborted["route"]["rollout"];
    assert_eq!(r["state"], "rolled_back");
    assert_eq!(r["history"][1]["reason"], "aborted by an operator");
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 100), ("green".into(), 0)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_split_pauses_the_rollout_and_says_so() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let plan = "steps = [20, 50, 100]\ninterval = \"1h\"\nmax_error_rate = 0.1";
    let veer = common::start_veer(&config(&blue, &green, plan, "")).await;
    let api = Api::new(&veer, None);
    act(&api, "web", "start").await;
    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 70, "green": 30}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["rollout_paused"], true, "{}", a.text);
    assert!(a.json["note"]
        .as_str()
        .unwrap()
        .contains("paused the rollout of web at step 0"));
    let r = &a.json["route"]["rollout"];
    assert_eq!(r["state"], "paused");
    assert_eq!(r["history"][1]["reason"], "paused by an operator's split");
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 70), ("green".into(), 30)]
    );
    // A change while paused says nothing more; resume puts the step's weights back.
    let a = api
        .put("/api/v1/routes/web/split", json!({"blue": 60, "green": 40}))
        .await;
    assert_eq!(a.json.get("rollout_paused"), None, "{}", a.text);
    act(&api, "web", "resume").await;
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 80), ("green".into(), 20)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rollout_resumes_at_the_same_step() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 0).await);
    let d = TempDir::new("rollout-restart");
    let plan =
        "steps = [20, 50, 100]\ninterval = \"300ms\"\nmax_error_rate = 0.1\nmin_requests = 5";
    let admin = format!("state_file = \"{}\"", d.join("state.json").display());
    let body = config(&blue, &green, plan, &admin);
    let path = d.write("veer.toml", &common::child_toml("level = \"info\"", &body));
    let mut veer = VeerProcess::start(&path).await;
    let api = Api::at(veer.admin().expect("the admin API listens"), None);
    act(&api, "web", "start").await;
    // Enough traffic to finish step 0, then none: step 1 holds.
    let traffic = load(veer.http(), "/", 4);
    common::within(WAIT, "step 1 is reached", async {
        while rollout(&api, "web").await["step"] != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    traffic.stop().await;
    veer.kill();
    let veer = VeerProcess::start(&path).await;
    let api = Api::at(veer.admin().expect("the admin API listens"), None);
    let r = rollout(&api, "web").await;
    assert_eq!(
        (&r["state"], &r["step"]),
        (&json!("progressing"), &json!(1)),
        "{r}"
    );
    assert_eq!(
        weights(&api, "web").await,
        vec![("blue".into(), 50), ("green".into(), 50)]
    );
    let traffic = load(veer.http(), "/", 4);
    wait_state(&api, "web", "promoted").await;
    traffic.stop().await;
}

fn compare_plan(max_error_rate: &str) -> String {
    format!(
        "steps = [50, 100]\ninterval = \"300ms\"\n{max_error_rate}\nmin_requests = 40\n\
         compare = {{ max_error_increase = 0.0, confidence = 0.95 }}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_promotes_a_canary_as_bad_as_stable_in_a_fleet_wide_bad_minute() {
    let (blue, green) = (failing("blue", 5).await, failing("green", 5).await);
    let veer = common::start_veer(&config(&blue, &green, &compare_plan(""), "")).await;
    let api = Api::new(&veer, None);
    let traffic = load(veer.http_addr, "/", 4);
    act(&api, "web", "start").await;
    // Step 1 gives the canary 100 %: stable's figures from step 0 stand in.
    let done = wait_state(&api, "web", "promoted").await;
    traffic.stop().await;
    let stable_rate = done["analysis"]["stable"]["error_rate"].as_f64().unwrap();
    assert!((0.15..=0.25).contains(&stable_rate), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_rolls_back_a_canary_worse_than_stable_under_a_loose_fixed_limit() {
    let (blue, green) = (failing("blue", 0).await, failing("green", 4).await);
    let plan = compare_plan("max_error_rate = 0.5");
    let veer = common::start_veer(&config(&blue, &green, &plan, "")).await;
    let api = Api::new(&veer, None);
    let traffic = load(veer.http_addr, "/", 4);
    act(&api, "web", "start").await;
    let back = wait_state(&api, "web", "rolled_back").await;
    traffic.stop().await;
    let reason = back["reason"].as_str().unwrap();
    assert!(reason.contains("exceeds stable's 0.00%"), "{reason}");
    assert!(
        reason.contains("canary") && reason.contains("stable"),
        "{reason}"
    );
}

/// The address printed on the demo's line that starts with `label`.
async fn demo_addr(veer: &mut VeerProcess, label: &str) -> std::net::SocketAddr {
    let line = veer
        .log_line(common::IO_TIMEOUT, |line| line.trim().starts_with(label))
        .await
        .expect("the demo prints its addresses");
    let rest = line.trim().strip_prefix(label).unwrap();
    let url = rest.split_whitespace().next().unwrap();
    url.trim_start_matches("http://").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_rolls_back_a_rollout_once_green_is_made_to_fail() {
    let mut cmd = common::veer_cmd();
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let mut veer = VeerProcess::spawn(cmd);
    let proxy = demo_addr(&mut veer, "proxy").await;
    let admin = demo_addr(&mut veer, "admin API").await;
    let green = demo_addr(&mut veer, "green v2").await;
    let api = Api::at(admin, None);
    act(&api, "web", "start").await;
    let failing = common::get(green, "/_demo/fail?percent=50", &[]).await;
    assert_eq!(failing.body, "green now fails 50% of its requests\n");
    // The demo's own traffic would do; more makes the test quicker.
    let traffic = load(proxy, "/", 2);
    let back = wait_state(&api, "web", "rolled_back").await;
    traffic.stop().await;
    assert!(
        back["reason"].as_str().unwrap().contains("canary"),
        "{back}"
    );
    veer.stop_expecting_0("-INT", common::IO_TIMEOUT).await;
}
