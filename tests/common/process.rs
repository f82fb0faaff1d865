//! The `veer` binary as a child process: run to completion with a deadline, or serving with its
//! JSON log read line by line; signals; temp dirs. No wait on a child is unbounded.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::IO_TIMEOUT;

/// `veer` as built for these tests, with `$VEER_*` cleared so that the tests' own environment
/// never leaks in.
pub fn veer_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_veer"));
    for var in ["VEER_CONFIG", "VEER_ADMIN", "VEER_ADMIN_TOKEN"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` to its end with stdin closed; fails the test (after killing it) if it has not
/// exited within `within`. Blocking: from async code call it in `spawn_blocking`.
pub fn output_within(cmd: &mut Command, within: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut out);
            }
            out
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let status = wait_blocking(&mut child, within);
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} did not exit within {within:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Waits for `child` to exit; after `within`, kills it and returns `None`.
fn wait_blocking(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` (`-TERM`, `-INT`, `-HUP`, …) to process `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    let out = output_within(
        Command::new("kill").args([sig, &pid.to_string()]),
        IO_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "kill {sig} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `veer` child process with its output (stdout and stderr, merged) read line by line.
/// Killed when dropped.
pub struct VeerProcess {
    pub child: Child,
    http: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far, for failure messages.
    seen: Vec<String>,
}

impl VeerProcess {
    /// `veer run --config CONFIG` (a config with `[log] format = "json"`, see `child_toml`);
    /// returns once it logged where it listens.
    pub async fn start(config: &Path) -> VeerProcess {
        let mut cmd = veer_cmd();
        cmd.args(["run", "--config"]).arg(config);
        Self::start_cmd(cmd).await
    }

    /// As `start`, for a prepared `veer run` command with a JSON log.
    pub async fn start_cmd(cmd: Command) -> VeerProcess {
        let mut veer = Self::spawn(cmd);
        while veer.http.is_none() {
            let line = veer.next_line(IO_TIMEOUT).await;
            let Some(line) = line else {
                panic!(
                    "veer did not log where it listens within {IO_TIMEOUT:?}:\n{}",
                    veer.seen.join("\n")
                );
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let addr = v["fields"]["addr"].as_str().and_then(|a| a.parse().ok());
                match v["fields"]["message"].as_str() {
                    Some("listening") => veer.http = addr,
                    Some("admin API listening") => veer.admin = addr,
                    _ => {}
                }
            }
        }
        veer
    }

    /// Starts `cmd` with stdin closed and its output read line by line, looking for nothing.
    pub fn spawn(mut cmd: Command) -> VeerProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("veer starts");
        let (tx, lines) = mpsc::unbounded_channel();
        let forward = |out: Box<dyn Read + Send>, tx: mpsc::UnboundedSender<String>| {
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        };
        forward(Box::new(child.stdout.take().unwrap()), tx.clone());
        forward(Box::new(child.stderr.take().unwrap()), tx);
        VeerProcess {
            child,
            http: None,
            admin: None,
            lines,
            seen: Vec::new(),
        }
    }

    /// Where the proxy listens (known once `start` returned).
    pub fn http(&self) -> SocketAddr {
        self.http.expect("the proxy's address was logged")
    }

    /// Where the admin API listens, when it was logged.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// Every output line read so far (those `start` read past included).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// The next output line, or `None` if none came within `within` (or the output closed).
    async fn next_line(&mut self, within: Duration) -> Option<String> {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(Some(line)) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Ok(None) | Err(_) => None,
        }
    }

    /// The next output line that satisfies `matches`, skipping others; `None` if none came
    /// within `within` (or the process closed its output).
    pub async fn log_line(
        &mut self,
        within: Duration,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_line(left).await {
                Some(line) if matches(&line) => return Some(line),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Waits for the process to exit; fails the test (killing it) if it has not within
    /// `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = wait_blocking(&mut self.child, IO_TIMEOUT);
                panic!("veer did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `sig` and expects exit code 0 within `within`.
    pub async fn stop_expecting_0(mut self, sig: &str, within: Duration) {
        self.signal(sig);
        let status = self.exit_within(within).await;
        assert_eq!(status.code(), Some(0), "exit after {sig}: {status:?}");
    }

    /// SIGKILL, and the exit reaped.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        assert!(
            wait_blocking(&mut self.child, IO_TIMEOUT).is_some(),
            "veer survived SIGKILL"
        );
    }
}

impl Drop for VeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_blocking(&mut self.child, IO_TIMEOUT);
    }
}

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// `veer-test-<pid>-<name>-<n>`.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("veer-test-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes `text` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
