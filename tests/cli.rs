//! The `veer` binary as a user runs it: `check` exit codes and messages, `run` refusing a bad
//! config, SIGTERM draining a request in flight before exiting 0, and a single worker serving on
//! the main thread.

mod common;

use std::process::{Command, Output};

use tokio::io::AsyncWriteExt;

use common::{child_toml, output_within, veer_cmd, TempDir, Upstream, VeerProcess, IO_TIMEOUT};

/// `cmd` run to its end, within `IO_TIMEOUT`.
fn output(cmd: &mut Command) -> Output {
    output_within(cmd, IO_TIMEOUT)
}

/// A temp dir holding `veer.toml` with `text`.
fn temp_config(name: &str, text: &str) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(name);
    let path = dir.write("veer.toml", text);
    (dir, path)
}

#[test]
fn check_accepts_every_example_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = output(veer_cmd().args(["check", "--config"]).arg(&path));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("ok"), "{stdout}");
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "the blue/green and canary examples are checked"
    );
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_2() {
    let (_dir, path) = temp_config(
        "bad",
        "[pools.blue]\nservers = [\"not an address\"]\n\n[[routes]]\nname = \"web\"\nsplit = { blue = 0, purple = 5 }\n",
    );
    let out = output(veer_cmd().args(["check", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}:2:")), "{err}");
    assert!(err.contains("pools.blue.servers[0]"), "{err}");
    assert!(err.contains("routes[0].split.purple"), "{err}");
}

#[test]
fn check_and_run_refuse_a_missing_file_or_syntax_error_with_exit_2() {
    let out = output(veer_cmd().args(["check", "--config", "/nonexistent/veer.toml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/veer.toml"));
    let (_dir, path) = temp_config("syntax", "[pools.blue\nservers = []\n");
    let out = output(veer_cmd().args(["run", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1:", path.display())), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = output(veer_cmd().arg("frobnicate"));
    assert_eq!(out.status.code(), Some(2));
}

/// Route `web` to one pool `app` of `server`, for a child veer (JSON log, `log` added to it),
/// with `proxy` as the `[proxy]` table.
fn app_config(server: std::net::SocketAddr, proxy: &str, log: &str) -> String {
    child_toml(
        log,
        &format!(
            "[proxy]\n{proxy}\n[pools.app]\nservers = [\"{server}\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n"
        ),
    )
}

/// A JSON-logging config with `head` (tables before the pools), pools `blue` and `green` and a
/// route `web` with `split`.
fn split_config(
    blue: std::net::SocketAddr,
    green: std::net::SocketAddr,
    head: &str,
    split: &str,
) -> String {
    child_toml(
        "",
        &format!(
            "{head}\n{}",
            common::two_pools(
                blue,
                green,
                &format!("[[routes]]\nname = \"web\"\nsplit = {split}\n")
            )
        ),
    )
}

/// Polls until `addr` refuses connections: the listener closed, the drain started.
async fn refuses_connections(addr: std::net::SocketAddr) {
    common::eventually(
        IO_TIMEOUT,
        "the listener closes for the drain",
        || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
}

#[tokio::test]
async fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let (held, gate) = Upstream::gated("held").await;
    let (_dir, path) = temp_config(
        "term",
        &app_config(held.addr, "shutdown_grace = \"30s\"", ""),
    );
    let veer = VeerProcess::start(&path).await;
    let addr = veer.http();
    let request = tokio::spawn(async move { common::get(addr, "/", &[]).await });
    common::eventually(IO_TIMEOUT, "the request reached the upstream", || async {
        held.hits() > 0
    })
    .await;
    veer.signal("-TERM");
    // Draining with the request still held; then it is answered, and only then does veer exit.
    refuses_connections(addr).await;
    assert!(!request.is_finished(), "the request is still in flight");
    gate.open();
    let got = common::within(IO_TIMEOUT, "the answer", request)
        .await
        .unwrap();
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "held\n"));
    let mut veer = veer;
    let status = veer.exit_within(IO_TIMEOUT).await;
    assert_eq!(status.code(), Some(0));
}

/// The `fields` of the access log line for `path`.
async fn access_line(veer: &mut VeerProcess, path: &str) -> serde_json::Value {
    let line = veer
        .log_line(IO_TIMEOUT, |line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v["target"] == "veer::access" && v["fields"]["path"] == path)
        })
        .await
        .expect("an access log line");
    serde_json::from_str::<serde_json::Value>(&line).unwrap()["fields"].clone()
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request() {
    let up = Upstream::named("app").await;
    let pin = "[[routes.pin]]\nheader = \"x-pin\"\npool = \"app\"\n";
    let config = app_config(up.addr, "", "access = true") + pin;
    let (_dir, path) = temp_config("access", &config);
    let mut veer = VeerProcess::start(&path).await;
    let client = common::client();
    let host = veer.http().to_string();
    let got = common::request(
        &client,
        veer.http(),
        "POST",
        "/hello?x=1",
        &[],
        "0123456789",
    )
    .await;
    assert_eq!(
        (got.status, got.body.as_str()),
        (http::StatusCode::OK, "app\n")
    );
    let access = access_line(&mut veer, "/hello?x=1").await;
    assert_eq!(access["method"], "POST");
    assert_eq!(access["host"], host.as_str());
    assert_eq!(access["status"], 200);
    assert_eq!(
        (access["bytes_in"].as_u64(), access["bytes_out"].as_u64()),
        (Some(10), Some(4))
    );
    assert!(
        access["duration_ms"].as_f64().is_some_and(|ms| ms > 0.0),
        "{access}"
    );
    assert_eq!(access["route"], "web");
    assert_eq!(access["pool"], "app");
    assert_eq!(access["server"], up.addr.to_string());
    assert_eq!(access["chosen"], "random");
    assert_eq!(access["mirrored"], false);
    assert!(access["client"].as_str().is_some_and(|c| c == "127.0.0.1"));
    let got = common::send(&client, veer.http(), "GET", "/pinned", &[("x-pin", "1")]).await;
    assert_eq!(got.status, 200);
    assert_eq!(access_line(&mut veer, "/pinned").await["chosen"], "pin");
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn the_access_log_says_499_for_a_client_gone_before_its_answer_and_counts_a_tunnel() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (held, gate) = Upstream::gated("held").await;
    let echo = common::ws_echo().await;
    let config = child_toml(
        "access = true",
        &format!(
            "[pools.held]\nservers = [\"{}\"]\n[pools.ws]\nservers = [\"{}\"]\n\
             [[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\nsplit = {{ ws = 1 }}\n\
             [[routes]]\nname = \"web\"\nsplit = {{ held = 1 }}\n",
            held.addr, echo.addr
        ),
    );
    let (_dir, path) = temp_config("access-gone", &config);
    let mut veer = VeerProcess::start(&path).await;

    // The client sends its request and leaves while the server holds the answer.
    let mut s = common::requests::connect(veer.http()).await;
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .unwrap();
    common::eventually(IO_TIMEOUT, "the request reaches the server", || {
        let hits = std::sync::Arc::clone(&held.hits);
        async move { hits.load(std::sync::atomic::Ordering::SeqCst) == 1 }
    })
    .await;
    drop(s);
    let gone = access_line(&mut veer, "/slow").await;
    assert_eq!(gone["status"], 499, "{gone}");
    assert_eq!(
        (gone["route"].as_str(), gone["pool"].as_str()),
        (Some("web"), Some("held"))
    );
    assert_eq!(gone["server"], held.addr.to_string());
    gate.open();

    // A WebSocket's line comes when the tunnel closes, with the tunnel's bytes.
    let url = format!("ws://{}/chat", veer.http());
    let (mut ws, _) = common::within(
        IO_TIMEOUT,
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("handshake through veer");
    ws.send(Message::text("x".repeat(1000))).await.unwrap();
    let back = common::within(IO_TIMEOUT, "the echo", ws.next()).await;
    assert_eq!(back.unwrap().unwrap().into_text().unwrap().len(), 1000);
    ws.close(None).await.unwrap();
    drop(ws);
    let tunnel = access_line(&mut veer, "/chat").await;
    assert_eq!(tunnel["status"], 101, "{tunnel}");
    assert!(
        tunnel["bytes_in"].as_u64().is_some_and(|b| b >= 1000),
        "{tunnel}"
    );
    assert!(
        tunnel["bytes_out"].as_u64().is_some_and(|b| b >= 1000),
        "{tunnel}"
    );
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn sighup_swaps_in_the_edited_file_and_a_broken_file_changes_nothing() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let config = |split: &str| split_config(blue.addr, green.addr, "", split);
    let (_dir, path) = temp_config("hup", &config("{ blue = 1, green = 0 }"));
    let mut veer = VeerProcess::start(&path).await;
    let addr = veer.http();
    assert_eq!(common::get(addr, "/", &[]).await.body, "blue\n");

    std::fs::write(&path, config("{ blue = 0, green = 1 }")).unwrap();
    veer.signal("-HUP");
    common::eventually(IO_TIMEOUT, "the reload took effect", || async move {
        common::get(addr, "/", &[]).await.body == "green\n"
    })
    .await;

    std::fs::write(&path, "[pools.green\nthis is not toml").unwrap();
    veer.signal("-HUP");
    // The failure is logged with the file's line and column.
    let place = format!("{}:1:", path.display());
    let logged = veer
        .log_line(IO_TIMEOUT, |line| {
            line.contains("reload failed") && line.contains(&place)
        })
        .await;
    assert!(logged.is_some(), "the reload error names {place}");
    for _ in 0..20 {
        let got = common::get(addr, "/", &[]).await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "green\n"));
    }
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[tokio::test]
async fn the_demo_serves_a_90_10_split_and_exits_0_on_ctrl_c() {
    let mut cmd = veer_cmd();
    cmd.args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"]);
    let mut veer = VeerProcess::spawn(cmd);
    // The dashboard's address comes first, and it serves the page.
    let first = veer
        .log_line(IO_TIMEOUT, |line| {
            let line = line.trim();
            line.starts_with("dashboard") || line.starts_with("proxy")
        })
        .await
        .expect("the demo prints its addresses");
    let dashboard = first
        .trim()
        .strip_prefix("dashboard")
        .expect("the dashboard first");
    let url = dashboard.split_whitespace().next().unwrap();
    let admin: std::net::SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .unwrap();
    let page = common::get(admin, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<title>"), "{}", page.body);
    let line = veer
        .log_line(IO_TIMEOUT, |line| line.trim().starts_with("proxy"))
        .await
        .expect("the demo prints its address");
    let rest = line.trim().strip_prefix("proxy").unwrap();
    let url = rest.split_whitespace().next().unwrap();
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    let counts = common::tally(400, |_| common::get(addr, "/", &[])).await;
    let green = counts.get("green v2").copied().unwrap_or(0);
    assert!((20..=70).contains(&green), "{counts:?}");
    assert_eq!(counts.get("blue v1").copied().unwrap_or(0) + green, 400);
    let pinned = common::get(addr, "/", &[("x-canary", "true")]).await;
    assert_eq!(pinned.body, "green v2\n");
    let page = common::get(addr, "/", &[("accept", "text/html"), ("x-canary", "true")]).await;
    assert!(page.body.contains("<h1>green v2</h1>"));
    veer.stop_expecting_0("-INT", IO_TIMEOUT).await;
}

#[tokio::test]
async fn with_watch_an_edited_file_reloads_without_a_signal() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let config = |split: &str| {
        split_config(
            blue.addr,
            green.addr,
            "[admin]\nlisten = \"127.0.0.1:0\"\nwatch = true",
            split,
        )
    };
    let (_dir, path) = temp_config("watch", &config("{ blue = 1, green = 0 }"));
    let veer = VeerProcess::start(&path).await;
    let addr = veer.http();
    assert_eq!(common::get(addr, "/", &[]).await.body, "blue\n");
    // The file is looked at every 2 s, against what it held when the watch began, which is
    // some time after veer logs its address: each look finds the file edited again (a new
    // comment), so that an edit made before the watch began is not the only one.
    let edited = config("{ blue = 0, green = 1 }");
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    for edit in 0.. {
        std::fs::write(&path, format!("{edited}# edit {edit}\n")).unwrap();
        if common::get(addr, "/", &[]).await.body == "green\n" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edited file was not picked up within {IO_TIMEOUT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

#[test]
fn check_reads_veer_config_when_no_flag_is_given() {
    let (dir, path) = temp_config(
        "envdefault",
        "[pools.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nsplit = { a = 1 }\n",
    );
    let out = output(veer_cmd().arg("check").env("VEER_CONFIG", &path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&path.display().to_string()));
    // Without the variable the default is ./veer.toml.
    let out = output(veer_cmd().arg("check").current_dir(&dir.path));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_port_already_taken_is_a_runtime_failure_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_dir, path) = temp_config(
        "taken",
        &format!(
            "[listen]\nhttp = \"{addr}\"\n[pools.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nname = \"r\"\nsplit = {{ a = 1 }}\n"
        ),
    );
    let out = output(veer_cmd().args(["run", "--config"]).arg(&path));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr.to_string()) && err.contains("listen.http"),
        "{err}"
    );
}

#[tokio::test]
async fn sigint_drains_and_a_request_past_the_grace_does_not_block_exit_0() {
    // The upstream never answers, and nothing but the grace may end the request within the
    // wait: request_timeout is far longer.
    let (held, _closed_gate) = Upstream::gated("held").await;
    let (_dir, path) = temp_config(
        "grace",
        &app_config(
            held.addr,
            "shutdown_grace = \"300ms\"\nrequest_timeout = \"300s\"",
            "",
        ),
    );
    let mut veer = VeerProcess::start(&path).await;
    let mut stuck = common::requests::connect(veer.http()).await;
    stuck
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    common::eventually(IO_TIMEOUT, "the request reached the upstream", || async {
        held.hits() > 0
    })
    .await;
    veer.signal("-INT");
    let status = veer.exit_within(IO_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    let closed = common::requests::read_until_closed(&mut stuck, IO_TIMEOUT).await;
    assert!(closed.is_some(), "the request past the grace was cut off");
}

#[tokio::test]
async fn a_reload_that_changes_the_listener_says_it_needs_a_restart() {
    let up = Upstream::named("app").await;
    let config = |port: u16| {
        app_config(up.addr, "", "").replace(
            "http = \"127.0.0.1:0\"",
            &format!("http = \"127.0.0.1:{port}\""),
        )
    };
    let (_dir, path) = temp_config("restart-needed", &config(0));
    let mut veer = VeerProcess::start(&path).await;
    let addr = veer.http();
    // A port held by this test, so that nothing else can be listening there.
    let other = common::refused_addr();
    std::fs::write(&path, config(other.addr.port())).unwrap();
    veer.signal("-HUP");
    let warned = veer
        .log_line(IO_TIMEOUT, |line| {
            line.contains("listen changed") && line.contains("after a restart")
        })
        .await;
    assert!(warned.is_some(), "the listener change is reported");
    // Still serving on the address it started with.
    assert_eq!(common::get(addr, "/", &[]).await.status, 200);
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

/// The names of the process's threads, from /proc.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads");
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

#[tokio::test]
async fn one_worker_serves_changes_reloads_and_drains_on_the_main_thread_alone() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let config = |split: &str| {
        split_config(
            blue.addr,
            green.addr,
            "[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nworkers = 1",
            split,
        )
    };
    let (_dir, path) = temp_config("one-worker", &config("{ blue = 1, green = 0 }"));
    let veer = VeerProcess::start(&path).await;
    let addr = veer.http();
    // No scheduler threads: every connection runs on the thread that serves.
    let names = thread_names(veer.pid());
    assert!(
        !names.iter().any(|n| n.starts_with("tokio-r")),
        "threads: {names:?}"
    );
    let answers = futures_util::future::join_all(
        (0..16).map(|_| async move { common::get(addr, "/", &[]).await.body }),
    )
    .await;
    assert!(answers.iter().all(|b| b == "blue\n"), "{answers:?}");

    // A reload, then a change through the admin API (applied off the serving thread).
    std::fs::write(&path, config("{ blue = 0, green = 1 }")).unwrap();
    veer.signal("-HUP");
    common::eventually(IO_TIMEOUT, "the reload took effect", || async move {
        common::get(addr, "/", &[]).await.body == "green\n"
    })
    .await;
    let api = common::Api::at(veer.admin().expect("an admin listener"), None);
    let put = api.put(
        "/api/v1/routes/web/split",
        serde_json::json!({"blue": 1, "green": 0}),
    );
    assert_eq!(put.await.status, http::StatusCode::OK);
    assert_eq!(common::get(addr, "/", &[]).await.body, "blue\n");
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}

/// The process's anonymous (heap and stack) memory in KiB, from /proc.
fn anonymous_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps");
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("an Anonymous line")
}

#[tokio::test]
async fn a_resting_veer_holds_under_4_mib_of_heap_and_stacks() {
    let up = Upstream::named("app").await;
    let (_dir, path) = temp_config(
        "resting",
        // Two workers whatever the machine's cores, the access log's queue allocated.
        &app_config(up.addr, "workers = 2", "access = true"),
    );
    let veer = VeerProcess::start(&path).await;
    // Served once, so that what a first request sets up is counted too.
    assert_eq!(common::get(veer.http(), "/", &[]).await.body, "app\n");
    let kib = anonymous_kib(veer.pid());
    assert!(kib < 4096, "{kib} KiB of anonymous memory at rest");
    veer.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}
