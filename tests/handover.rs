//! `veer run --upgrade` over real processes: the listening sockets, the admin API and every
//! acknowledged change move to the new process while clients connect for every request, and
//! nothing is refused or reset; a new process that cannot start leaves the old one serving and
//! taking changes; with nothing on the socket, `--upgrade` exits 1 and binds nothing.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{output_within, veer_cmd, Api, TempDir, Upstream, VeerProcess, IO_TIMEOUT};
use serde_json::json;

/// A config for a child veer with an upgrade socket, an admin API and a state file in `dir`;
/// `web` splits blue/green 100/0.
fn config(dir: &TempDir, blue: SocketAddr, green: SocketAddr, extra: &str) -> String {
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nupgrade_socket = \"{sock}\"\n\n\
         [log]\nformat = \"json\"\n\n\
         [admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{state}\"\n\n\
         {extra}\n\
         [pools.blue]\nservers = [\"{blue}\"]\n\n[pools.green]\nservers = [\"{green}\"]\n\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 100, green = 0 }}\n",
        sock = dir.join("upgrade.sock").display(),
        state = dir.join("state.json").display(),
    )
}

fn plain_cmd(path: &Path) -> std::process::Command {
    let mut cmd = veer_cmd();
    cmd.args(["run", "--config"]).arg(path);
    cmd
}

/// Runs `cmd` to its end off the runtime (the upstreams run on it); its exit and output.
async fn run_to_end(mut cmd: std::process::Command) -> (std::process::Output, String) {
    let out = tokio::task::spawn_blocking(move || output_within(&mut cmd, IO_TIMEOUT))
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out, text)
}

fn upgrade_cmd(path: &Path) -> std::process::Command {
    let mut cmd = veer_cmd();
    cmd.args(["run", "--upgrade", "--config"]).arg(path);
    cmd
}

/// One request on a connection of its own (`Connection: close`); the body, or what went wrong.
fn one_request(addr: SocketAddr) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&out).into_owned();
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("answer: {text:?}"));
    }
    Ok(text
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Client threads that each connect for every request until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize, want: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let t0 = std::time::Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        let at = t0.elapsed();
                        match one_request(addr).map_err(|e| format!("{e} (sent at {at:?})")) {
                            Ok(body) if body == want => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(body) => failures.lock().unwrap().push(format!("body {body:?}")),
                            Err(e) => failures.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            threads,
        }
    }

    fn served(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the threads; (requests answered, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

async fn served_at_least(load: &Load, n: usize) {
    let from = load.served();
    common::eventually(IO_TIMEOUT, "requests are served", || async {
        load.served() >= from + n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handover_under_connect_per_request_load_loses_nothing() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let dir = TempDir::new("handover");
    let path = dir.write("veer.toml", &config(&dir, blue.addr, green.addr, ""));
    let old = VeerProcess::start(&path).await;
    let (http, admin) = (old.http(), old.admin().expect("the admin API listens"));
    // A change acknowledged by the old process.
    let api = Api::at(admin, None);
    let changed = api
        .put("/api/v1/routes/web/split", json!({"blue": 0, "green": 100}))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.text);
    let acknowledged = changed.version();

    let load = Load::start(http, 12, "green");
    served_at_least(&load, 200).await;
    let mut new = VeerProcess::start_cmd(upgrade_cmd(&path)).await;
    assert_eq!(new.http(), http, "the new process serves the same socket");
    let mut old = old;
    let status = old.exit_within(IO_TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "the old process drains and exits 0");
    served_at_least(&load, 200).await;
    // The upstreams run on this test's runtime: the threads are joined off it.
    let (served, failures) = tokio::task::spawn_blocking(move || load.finish())
        .await
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed across the handover: {:?}",
        failures.len(),
        served + failures.len(),
        &failures[..failures.len().min(10)]
    );

    // The admin API moved too, with the change it had acknowledged; it takes changes.
    let route = api.get("/api/v1/routes/web").await;
    assert_eq!(route.status, 200);
    assert!(
        route.version() > acknowledged,
        "versions go on: {}",
        route.text
    );
    assert!(route.text.contains("\"green\""), "{}", route.text);
    let weights = api.get("/api/v1/config").await;
    assert_eq!(
        weights.json["config"]["routes"][0]["split"],
        json!({"blue": 0, "green": 100}),
        "the acknowledged change survived the handover"
    );
    let next = api
        .put("/api/v1/routes/web/split", json!({"blue": 50, "green": 50}))
        .await;
    assert_eq!(
        next.status, 200,
        "the new process takes changes: {}",
        next.text
    );
    new.signal("-TERM");
    assert_eq!(new.exit_within(IO_TIMEOUT).await.code(), Some(0));
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving_and_taking_changes() {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let dir = TempDir::new("handover-fails");
    let good = config(&dir, blue.addr, green.addr, "");
    let path = dir.write("veer.toml", &good);
    let mut old = VeerProcess::start(&path).await;
    let api = Api::at(old.admin().unwrap(), None);

    // A broken config: refused before the old process is even asked.
    std::fs::write(&path, good.replace("[[routes]]", "[[routes]]\nsplit = 3")).unwrap();
    let (out, err) = run_to_end(upgrade_cmd(&path)).await;
    assert_eq!(out.status.code(), Some(2), "{err}");

    // A state file the new process cannot read: found after the old one stopped taking
    // changes, which it takes again.
    let corrupt = dir.write("corrupt.json", "{ not json");
    let moved = good.replace(
        &dir.join("state.json").display().to_string(),
        &corrupt.display().to_string(),
    );
    std::fs::write(&path, moved).unwrap();
    let (out, err) = run_to_end(upgrade_cmd(&path)).await;
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("corrupt.json"),
        "the error names the file: {err}"
    );

    assert!(
        old.child.try_wait().unwrap().is_none(),
        "the old process still runs"
    );
    let got = common::get(old.http(), "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body.trim(), "blue");
    let change = api
        .put("/api/v1/routes/web/split", json!({"blue": 0, "green": 100}))
        .await;
    assert_eq!(
        change.status, 200,
        "the old process takes changes again: {}",
        change.text
    );
    std::fs::write(&path, &good).unwrap();
    old.signal("-TERM");
    assert_eq!(old.exit_within(IO_TIMEOUT).await.code(), Some(0));
}

#[tokio::test]
async fn upgrade_with_nothing_on_the_socket_exits_1_and_binds_nothing() {
    let dir = TempDir::new("handover-none");
    let path = dir.write(
        "veer.toml",
        &config(
            &dir,
            "127.0.0.1:9".parse().unwrap(),
            "127.0.0.1:9".parse().unwrap(),
            "",
        ),
    );
    let (out, err) = run_to_end(upgrade_cmd(&path)).await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing answers on the upgrade socket"),
        "{err}"
    );
    assert!(!err.contains("\"listening\""), "nothing was bound: {err}");
    assert!(
        !dir.join("upgrade.sock").exists(),
        "not even the upgrade socket"
    );
}

#[tokio::test]
async fn a_second_plain_veer_is_refused_the_upgrade_socket_and_the_state_file() {
    let blue = Upstream::named("blue").await;
    let dir = TempDir::new("handover-second");
    let path = dir.write("veer.toml", &config(&dir, blue.addr, blue.addr, ""));
    let old = VeerProcess::start(&path).await;
    let (out, err) = run_to_end(plain_cmd(&path)).await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("veer run --upgrade"),
        "the error says how to take over: {err}"
    );
    // Without the upgrade socket, the state file's lock still keeps one owner.
    let plain = std::fs::read_to_string(&path).unwrap().replace(
        &format!(
            "upgrade_socket = \"{}\"\n",
            dir.join("upgrade.sock").display()
        ),
        "",
    );
    let second = dir.write("second.toml", &plain);
    let (out, err) = run_to_end(plain_cmd(&second)).await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("in use by another veer process"), "{err}");
    old.stop_expecting_0("-TERM", IO_TIMEOUT).await;
}
