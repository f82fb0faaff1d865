//! Changes while traffic flows, and changes that outlive the process: split changes through the
//! admin API and SIGHUP reloads under continuous keep-alive load lose no request; a change the
//! API acknowledged survives SIGKILL; an edited file wins over saved state; a broken state file
//! stops the start with a clear error.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::Upstream;
use http_body_util::{BodyExt, Full};

struct Veer {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Veer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("veer-live-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts `veer run` and waits for both listeners' addresses in its JSON log.
fn spawn(config: &std::path::Path) -> Veer {
    let mut child = Command::new(env!("CARGO_BIN_EXE_veer"))
        .args(["run", "--config"])
        .arg(config)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                let msg = v["fields"]["message"].as_str().unwrap_or("").to_string();
                if let Some(addr) = v["fields"]["addr"].as_str() {
                    let _ = tx.send((msg, addr.to_string()));
                }
            }
        }
    });
    let (mut http, mut admin) = (None, None);
    while http.is_none() || admin.is_none() {
        let (msg, addr) = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("veer starts");
        let addr: SocketAddr = addr.parse().unwrap();
        if msg.starts_with("admin") {
            admin = Some(addr);
        } else {
            http = Some(addr);
        }
    }
    Veer {
        child,
        http: http.unwrap(),
        admin: admin.unwrap(),
    }
}

fn config_text(blue: &Upstream, green: &Upstream, split: &str, state: &std::path::Path) -> String {
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\
         [pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {split}\n",
        state.display(),
        blue.addr,
        green.addr
    )
}

async fn put_split(admin: SocketAddr, body: &str) -> u16 {
    let req = http::Request::put(format!("http://{admin}/api/v1/routes/web/split"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

fn hup(child: &Child) {
    let ok = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn split_changes_and_reloads_under_load_lose_no_request() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = dir("load");
    let path = d.join("veer.toml");
    std::fs::write(
        &path,
        config_text(
            &blue,
            &green,
            "{ blue = 90, green = 10 }",
            &d.join("state.json"),
        ),
    )
    .unwrap();
    let veer = spawn(&path);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            veer.http,
        );
        clients.push(tokio::spawn(async move {
            let client = common::client();
            // Bounded: stops when told, and never runs past 200,000 requests.
            for _ in 0..200_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = http::Request::get(format!("http://{addr}/"))
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let body = resp.into_body().collect().await;
                        if body.is_ok() {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut hups = 0;
    for i in 0..200u32 {
        let canary = i % 101;
        let status = put_split(
            veer.admin,
            &format!("{{\"blue\": {}, \"green\": {canary}}}", 100 - canary),
        )
        .await;
        assert_eq!(status, 200, "split change {i}");
        if i % 4 == 0 && hups < 50 {
            let text = config_text(
                &blue,
                &green,
                &format!("{{ blue = {}, green = {} }}", 99 - hups, 1 + hups),
                &d.join("state.json"),
            );
            std::fs::write(&path, text).unwrap();
            hup(&veer.child);
            hups += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(hups, 50);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 1000, "the load ran throughout: {ok} requests");
    assert!(blue.hits() > 0 && green.hits() > 0);
    // The reloads happened (signals sent close together may be delivered as one) and none
    // failed; the change path still takes a change afterwards.
    let metrics = get_text(veer.admin, "/metrics").await;
    let count = |result: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("veer_config_reloads_total")
                    && l.contains("source=\"sighup\"")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(count("ok") >= 10, "{metrics}");
    assert_eq!(count("error"), 0, "{metrics}");
    assert_eq!(
        put_split(veer.admin, "{\"blue\": 0, \"green\": 1}").await,
        200
    );
    assert_eq!(common::get(veer.http, "/", &[]).await.body, "green\n");
}

async fn get_text(admin: SocketAddr, path: &str) -> String {
    let req = http::Request::get(format!("http://{admin}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

async fn etag(admin: SocketAddr) -> u64 {
    let req = http::Request::get(format!("http://{admin}/api/v1/routes"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    resp.headers()["etag"]
        .to_str()
        .unwrap()
        .trim_matches('"')
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_acknowledged_change_survives_sigkill_and_an_edited_file_wins() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = dir("kill");
    let (path, state) = (d.join("veer.toml"), d.join("state.json"));
    std::fs::write(
        &path,
        config_text(&blue, &green, "{ blue = 100, green = 0 }", &state),
    )
    .unwrap();
    let mut veer = spawn(&path);
    assert_eq!(
        put_split(veer.admin, "{\"blue\": 0, \"green\": 100}").await,
        200
    );
    let acknowledged = etag(veer.admin).await;
    veer.child.kill().unwrap();
    veer.child.wait().unwrap();
    drop(veer);

    let veer = spawn(&path);
    for _ in 0..10 {
        assert_eq!(common::get(veer.http, "/", &[]).await.body, "green\n");
    }
    assert!(
        etag(veer.admin).await > acknowledged,
        "a restart never reuses a version"
    );
    drop(veer);

    // Editing the route in the file makes the file win at the next start.
    let edited = config_text(&blue, &green, "{ blue = 100, green = 0 }", &state)
        .replace("name = \"web\"", "name = \"web\"\npath_prefix = \"/\"");
    std::fs::write(&path, edited).unwrap();
    let veer = spawn(&path);
    for _ in 0..10 {
        assert_eq!(common::get(veer.http, "/", &[]).await.body, "blue\n");
    }
}

#[tokio::test]
async fn a_truncated_state_file_stops_the_start_with_a_clear_error() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = dir("truncated");
    let (path, state) = (d.join("veer.toml"), d.join("state.json"));
    std::fs::write(&path, config_text(&blue, &green, "{ blue = 1 }", &state)).unwrap();
    std::fs::write(
        &state,
        "{\n  \"version\": 4,\n  \"routes\": {\n    \"web\": {\n      \"base\": \"0",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_veer"))
            .args(["run", "--config"])
            .arg(&path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("state.json") && err.contains("corrupt"),
        "{err}"
    );
}
