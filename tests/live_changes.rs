//! Changes while traffic flows, and changes that outlive the process: split changes through the
//! admin API and SIGHUP reloads under continuous keep-alive load lose no request; a change the
//! API acknowledged survives SIGKILL; an edited file wins over saved state; a broken state file
//! stops the start with a clear error.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{metric, output_within, veer_cmd, Api, TempDir, Upstream, VeerProcess, IO_TIMEOUT};
use http_body_util::{BodyExt, Full};

fn config_text(blue: &Upstream, green: &Upstream, split: &str, state: &std::path::Path) -> String {
    common::child_toml(
        "level = \"info\"",
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"\n\
             [pools.blue]\nservers = [\"{}\"]\n[pools.green]\nservers = [\"{}\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {split}\n",
            state.display(),
            blue.addr,
            green.addr
        ),
    )
}

/// The admin API of a veer child process.
fn api(veer: &VeerProcess) -> Api {
    Api::at(veer.admin().expect("the admin API listens"), None)
}

async fn put_split(admin: &Api, body: &str) -> u16 {
    let a = admin
        .call(
            "PUT",
            "/api/v1/routes/web/split",
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await;
    a.status.as_u16()
}

#[tokio::test]
async fn split_changes_and_reloads_under_load_lose_no_request() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = TempDir::new("load");
    let path = d.write(
        "veer.toml",
        &config_text(
            &blue,
            &green,
            "{ blue = 90, green = 10 }",
            &d.join("state.json"),
        ),
    );
    let veer = VeerProcess::start(&path).await;
    let admin = api(&veer);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, addr) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            veer.http(),
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
                let exchange = async {
                    let resp = client.request(req).await.ok()?;
                    let status = resp.status();
                    resp.into_body().collect().await.ok()?;
                    Some(status)
                };
                match tokio::time::timeout(IO_TIMEOUT, exchange).await {
                    Ok(Some(status)) if status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
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
            &admin,
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
            veer.signal("-HUP");
            hups += 1;
        }
    }
    // The load runs on until the reloads have been taken (signals sent close together may be
    // delivered as one).
    let sighup = |result: &'static str| {
        let admin = &admin;
        async move {
            let metrics = admin.metrics().await;
            let value = metric(
                &metrics,
                "veer_config_reloads_total",
                &[("source", "sighup"), ("result", result)],
            );
            (value, metrics)
        }
    };
    common::eventually(IO_TIMEOUT, "at least 10 SIGHUP reloads counted", || async {
        sighup("ok").await.0.is_some_and(|n| n >= 10.0)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(hups, 50);
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed of {}", ok + failed);
    assert!(ok > 1000, "the load ran throughout: {ok} requests");
    assert!(blue.hits() > 0 && green.hits() > 0);
    // None of the reloads failed: one broken file afterwards is counted as the first error.
    std::fs::write(&path, "[pools.blue\nthis is not toml").unwrap();
    veer.signal("-HUP");
    common::eventually(IO_TIMEOUT, "the failed reload counted", || async {
        sighup("error").await.0.is_some()
    })
    .await;
    let (errors, metrics) = sighup("error").await;
    assert_eq!(errors, Some(1.0), "only the broken file failed: {metrics}");
    // The change path still takes a change afterwards.
    assert_eq!(put_split(&admin, "{\"blue\": 0, \"green\": 1}").await, 200);
    assert_eq!(common::get(veer.http(), "/", &[]).await.body, "green\n");
}

/// The running version, from the `ETag` of `GET /api/v1/routes`.
async fn etag(admin: &Api) -> u64 {
    admin.get("/api/v1/routes").await.etag()
}

#[tokio::test]
async fn an_acknowledged_change_survives_sigkill_and_an_edited_file_wins() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = TempDir::new("kill");
    let state = d.join("state.json");
    let path = d.write(
        "veer.toml",
        &config_text(&blue, &green, "{ blue = 100, green = 0 }", &state),
    );
    let mut veer = VeerProcess::start(&path).await;
    assert_eq!(
        put_split(&api(&veer), "{\"blue\": 0, \"green\": 100}").await,
        200
    );
    let acknowledged = etag(&api(&veer)).await;
    veer.kill();
    drop(veer);

    let veer = VeerProcess::start(&path).await;
    for _ in 0..10 {
        assert_eq!(common::get(veer.http(), "/", &[]).await.body, "green\n");
    }
    assert!(
        etag(&api(&veer)).await > acknowledged,
        "a restart never reuses a version"
    );
    drop(veer);

    // Editing the route in the file makes the file win at the next start.
    let edited = config_text(&blue, &green, "{ blue = 100, green = 0 }", &state)
        .replace("name = \"web\"", "name = \"web\"\npath_prefix = \"/\"");
    std::fs::write(&path, edited).unwrap();
    let veer = VeerProcess::start(&path).await;
    for _ in 0..10 {
        assert_eq!(common::get(veer.http(), "/", &[]).await.body, "blue\n");
    }
}

#[tokio::test]
async fn a_truncated_state_file_stops_the_start_with_a_clear_error() {
    let (blue, green) = (
        Upstream::named("blue").await,
        Upstream::named("green").await,
    );
    let d = TempDir::new("truncated");
    let state = d.join("state.json");
    let path = d.write(
        "veer.toml",
        &config_text(&blue, &green, "{ blue = 1 }", &state),
    );
    std::fs::write(
        &state,
        "{\n  \"version\": 4,\n  \"routes\": {\n    \"web\": {\n      \"base\": \"0",
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        output_within(veer_cmd().args(["run", "--config"]).arg(&path), IO_TIMEOUT)
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
