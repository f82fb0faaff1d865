//! The `veer` binary as a user runs it: `check` exit codes and messages, `run` refusing a bad
//! config, and SIGTERM draining a request in flight before exiting 0.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Upstream;

fn veer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_veer"))
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("veer-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("veer.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_accepts_every_example_config() {
    let mut checked = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = veer()
                .args(["check", "--config"])
                .arg(&path)
                .output()
                .unwrap();
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
    let path = temp_config(
        "bad",
        "[pools.blue]\nservers = [\"not an address\"]\n\n[[routes]]\nname = \"web\"\nsplit = { blue = 0, purple = 5 }\n",
    );
    let out = veer()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}:2:")), "{err}");
    assert!(err.contains("pools.blue.servers[0]"), "{err}");
    assert!(err.contains("routes[0].split.purple"), "{err}");
}

#[test]
fn check_and_run_refuse_a_missing_file_or_syntax_error_with_exit_2() {
    let out = veer()
        .args(["check", "--config", "/nonexistent/veer.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/veer.toml"));
    let path = temp_config("syntax", "[pools.blue\nservers = []\n");
    let out = veer()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:1:", path.display())), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let out = veer().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let slow = Upstream::slow("slow", Duration::from_millis(800)).await;
    let path = temp_config(
        "term",
        &format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[proxy]\nshutdown_grace = \"10s\"\n[log]\nformat = \"json\"\n\
             [pools.app]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            slow.addr
        ),
    );
    let (mut child, addr) = spawn_run(&path);
    let request = tokio::spawn(async move { common::get(addr, "/", &[]).await });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&child, "-TERM");
    let got = request.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "slow\n");
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Starts `veer run` on `path` and returns the child and the address it logged.
fn spawn_run(path: &std::path::Path) -> (std::process::Child, std::net::SocketAddr) {
    let (child, addr, _) = spawn_run_with_log(path);
    (child, addr)
}

/// As `spawn_run`, plus every later log line.
fn spawn_run_with_log(
    path: &std::path::Path,
) -> (
    std::process::Child,
    std::net::SocketAddr,
    std::sync::mpsc::Receiver<String>,
) {
    let mut child = veer()
        .args(["run", "--config"])
        .arg(path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (line_tx, line_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let _ = addr_tx.send(v["fields"]["addr"].as_str().unwrap().to_string());
            }
            let _ = line_tx.send(line);
        }
    });
    let addr = addr_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("veer logs its address")
        .parse()
        .unwrap();
    (child, addr, line_rx)
}

#[tokio::test]
async fn the_access_log_has_one_json_line_per_request() {
    let up = Upstream::named("app").await;
    let path = temp_config(
        "access",
        &format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\naccess = true\n\
             [pools.app]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            up.addr
        ),
    );
    let (child, addr, lines) = spawn_run_with_log(&path);
    assert_eq!(common::get(addr, "/hello?x=1", &[]).await.status, 200);
    let mut access = Vec::new();
    while access.is_empty() {
        let line = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("access lines");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["target"] == "veer::access" {
            access.push(v["fields"].clone());
        }
    }
    assert_eq!(access[0]["uri"], "/hello?x=1");
    assert_eq!(access[0]["method"], "GET");
    assert_eq!(access[0]["status"], 200);
    assert_eq!(access[0]["route"], "web");
    assert_eq!(access[0]["pool"], "app");
    assert_eq!(access[0]["server"], up.addr.to_string());
    stop_expecting_0(child, "-TERM").await;
}

/// Sends `sig` and waits for the process to exit 0.
async fn stop_expecting_0(child: std::process::Child, sig: &str) {
    signal(&child, sig);
    let mut child = child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn sighup_swaps_in_the_edited_file_and_a_broken_file_changes_nothing() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let config = |split: &str| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[log]\nformat = \"json\"\n\
             [pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {split}\n",
            blue.addr, green.addr
        )
    };
    let path = temp_config("hup", &config("{ blue = 1, green = 0 }"));
    let (child, addr, lines) = spawn_run_with_log(&path);
    assert_eq!(common::get(addr, "/", &[]).await.body, "blue\n");

    std::fs::write(&path, config("{ blue = 0, green = 1 }")).unwrap();
    signal(&child, "-HUP");
    let mut switched = false;
    for _ in 0..100 {
        if common::get(addr, "/", &[]).await.body == "green\n" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(switched, "the reload took effect");

    std::fs::write(&path, "[pools.green\nthis is not toml").unwrap();
    signal(&child, "-HUP");
    // The failure is logged with the file's line and column.
    let place = format!("{}:1:", path.display());
    let logged = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
        .any(|line| line.contains("reload failed") && line.contains(&place));
    assert!(logged, "the reload error names {place}");
    for _ in 0..20 {
        let got = common::get(addr, "/", &[]).await;
        assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "green\n"));
    }
    stop_expecting_0(child, "-TERM").await;
}

#[tokio::test]
async fn the_demo_serves_a_90_10_split_and_exits_0_on_ctrl_c() {
    let mut child = veer()
        .args(["demo", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr: std::net::SocketAddr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the demo prints its address");
        if let Some(rest) = line.trim().strip_prefix("proxy") {
            let url = rest.split_whitespace().next().unwrap();
            break url.trim_start_matches("http://").parse().unwrap();
        }
    };
    let counts = common::tally(400, |_| common::get(addr, "/", &[])).await;
    let green = counts.get("green v2").copied().unwrap_or(0);
    assert!((20..=70).contains(&green), "{counts:?}");
    assert_eq!(counts.get("blue v1").copied().unwrap_or(0) + green, 400);
    let pinned = common::get(addr, "/", &[("x-canary", "true")]).await;
    assert_eq!(pinned.body, "green v2\n");
    let page = common::get(addr, "/", &[("accept", "text/html"), ("x-canary", "true")]).await;
    assert!(page.body.contains("<h1>green v2</h1>"));
    stop_expecting_0(child, "-INT").await;
}

#[tokio::test]
async fn with_watch_an_edited_file_reloads_without_a_signal() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let config = |split: &str| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nwatch = true\n\
             [log]\nformat = \"json\"\n[pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {split}\n",
            blue.addr, green.addr
        )
    };
    let path = temp_config("watch", &config("{ blue = 1, green = 0 }"));
    let (child, addr) = spawn_run(&path);
    assert_eq!(common::get(addr, "/", &[]).await.body, "blue\n");
    std::fs::write(&path, config("{ blue = 0, green = 1 }")).unwrap();
    let mut switched = false;
    // The file is looked at every 2 s; allow a few rounds.
    for _ in 0..80 {
        if common::get(addr, "/", &[]).await.body == "green\n" {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "the edited file was picked up without a signal");
    stop_expecting_0(child, "-TERM").await;
}

#[test]
fn check_reads_veer_config_when_no_flag_is_given() {
    let path = temp_config(
        "envdefault",
        "[pools.a]\nservers = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nsplit = { a = 1 }\n",
    );
    let out = veer()
        .arg("check")
        .env("VEER_CONFIG", &path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&path.display().to_string()));
    // Without the variable the default is ./veer.toml.
    let dir = path.parent().unwrap();
    let out = veer()
        .arg("check")
        .env_remove("VEER_CONFIG")
        .current_dir(dir)
        .output()
        .unwrap();
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
    let path = temp_config(
        "taken",
        &format!(
            "[listen]\nhttp = \"{addr}\"\n[pools.a]\nservers = [\"127.0.0.1:1\"]\n\
             [[routes]]\nname = \"r\"\nsplit = {{ a = 1 }}\n"
        ),
    );
    let out = veer()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&addr.to_string()) && err.contains("listen.http"),
        "{err}"
    );
}

#[tokio::test]
async fn sigint_drains_and_a_request_past_the_grace_does_not_block_exit_0() {
    let slow = Upstream::slow("slow", Duration::from_secs(30)).await;
    let path = temp_config(
        "grace",
        &format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n[proxy]\nshutdown_grace = \"300ms\"\n[log]\nformat = \"json\"\n\
             [pools.app]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            slow.addr
        ),
    );
    let (child, addr) = spawn_run(&path);
    let stuck = tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(20), common::get(addr, "/", &[])).await;
    });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_expecting_0(child, "-INT").await;
    stuck.abort();
}

#[tokio::test]
async fn a_reload_that_changes_the_listener_says_it_needs_a_restart() {
    let up = Upstream::named("app").await;
    let config = |port: u16| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:{port}\"\n[log]\nformat = \"json\"\n\
             [pools.app]\nservers = [\"{}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
            up.addr
        )
    };
    let path = temp_config("restart-needed", &config(0));
    let (child, addr, lines) = spawn_run_with_log(&path);
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    drop(other);
    std::fs::write(&path, config(port)).unwrap();
    signal(&child, "-HUP");
    let warned = std::iter::from_fn(|| lines.recv_timeout(Duration::from_secs(10)).ok())
        .any(|line| line.contains("listen changed") && line.contains("after a restart"));
    assert!(warned, "the listener change is reported");
    // Still serving on the address it started with.
    assert_eq!(common::get(addr, "/", &[]).await.status, 200);
    stop_expecting_0(child, "-TERM").await;
}
