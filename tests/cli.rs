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
            let out = veer().args(["check", "--config"]).arg(&path).output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
            assert!(stdout.contains("ok"), "{stdout}");
            checked += 1;
        }
    }
    assert!(checked >= 2, "the blue/green and canary examples are checked");
}

#[test]
fn check_reports_every_error_with_its_place_and_exits_2() {
    let path = temp_config(
        "bad",
        "[pools.blue]\nservers = [\"not an address\"]\n\n[[routes]]\nname = \"web\"\nsplit = { blue = 0, purple = 5 }\n",
    );
    let out = veer().args(["check", "--config"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(err.contains(&format!("{file}:2:")), "{err}");
    assert!(err.contains("pools.blue.servers[0]"), "{err}");
    assert!(err.contains("routes[0].split.purple"), "{err}");
}

#[test]
fn check_and_run_refuse_a_missing_file_or_syntax_error_with_exit_2() {
    let out = veer().args(["check", "--config", "/nonexistent/veer.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/veer.toml"));
    let path = temp_config("syntax", "[pools.blue\nservers = []\n");
    let out = veer().args(["run", "--config"]).arg(&path).output().unwrap();
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
    let mut child = veer()
        .args(["run", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let addr = v["fields"]["addr"].as_str().unwrap().to_string();
                let _ = addr_tx.send(addr);
            }
        }
    });
    let addr: std::net::SocketAddr = addr_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("veer logs its address")
        .parse()
        .unwrap();
    let request = tokio::spawn(async move { common::get(addr, "/", &[]).await });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let got = request.await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "slow\n");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}
