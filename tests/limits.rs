//! Process limits: the open-file limit raised at start, a warning when it cannot hold
//! `max_connections`, and accept failures (descriptors exhausted) logged at a bounded rate
//! while veer keeps serving.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{child_toml, get, one_pool, TempDir, Upstream, VeerProcess, IO_TIMEOUT};

/// `veer run --config CONFIG` under a shell that first sets `ulimit`.
fn under_ulimit(ulimit: &str, config: &std::path::Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit {ulimit} && exec \"$0\" run --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_veer"))
        .arg(config);
    for var in ["VEER_CONFIG", "VEER_ADMIN", "VEER_ADMIN_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd
}

/// (soft, hard) "Max open files" of a process, from /proc.
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .expect("/proc/<pid>/limits is readable on Linux");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_string(), fields[4].to_string())
}

#[tokio::test]
async fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let up = Upstream::named("app").await;
    let dir = TempDir::new("limits-raise");
    let path = dir.write("veer.toml", &child_toml("", &one_pool(&[up.addr], "")));
    let veer = VeerProcess::start_cmd(under_ulimit("-Sn 64", &path)).await;
    let (soft, hard) = open_files_limit(veer.pid());
    assert_eq!(soft, hard, "soft limit raised to the hard one");
    assert_ne!(soft, "64");
}

#[tokio::test]
async fn exhausted_descriptors_are_warned_about_and_logged_at_a_bounded_rate() {
    let up = Upstream::named("app").await;
    let dir = TempDir::new("limits-exhaust");
    let path = dir.write("veer.toml", &child_toml("", &one_pool(&[up.addr], "")));
    let mut veer = VeerProcess::start_cmd(under_ulimit("-n 48", &path)).await;
    // Started with a limit far below what 10000 connections need: said at start.
    let warned = veer
        .seen()
        .iter()
        .any(|l| l.contains("open-file limit is below"));
    assert!(warned, "no warning about the open-file limit");
    // More connections than descriptors: accepts fail for as long as they are held.
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(veer.http()),
        )
        .await
        {
            held.push(s);
        }
    }
    let mut lines = 0;
    let mut counted = false;
    let window = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Some(line) = veer
        .log_line(
            window.saturating_duration_since(tokio::time::Instant::now()),
            |l| l.contains("accept failed"),
        )
        .await
    {
        lines += 1;
        counted |= line.contains("\"unlogged\":") && !line.contains("\"unlogged\":0");
    }
    assert!(lines >= 1, "accept failures are logged");
    assert!(lines <= 4, "{lines} lines in 2.5 s: not bounded");
    assert!(counted, "a later line counts the failures left unlogged");
    // Once the descriptors are free again, veer serves.
    drop(held);
    let got = common::within(IO_TIMEOUT, "a request after the flood", async {
        loop {
            if let Ok(got) =
                tokio::time::timeout(Duration::from_secs(2), get(veer.http(), "/", &[])).await
            {
                return got;
            }
        }
    })
    .await;
    assert_eq!(got.status, 200);
}
