//! One validation on every path: what `veer check` rejects and `veer run` refuses at start is
//! refused the same way by a SIGHUP reload, by `PUT /api/v1/config` and by a state file, and the
//! running table stays. Each rule here is one the foundation let through on some path.

mod common;

use std::time::Duration;

use common::IO_TIMEOUT;
use common::{child_toml, get, output_within, veer_cmd, Api, TempDir, Upstream, VeerProcess};

const UNSET: &str = "VEER_TEST_VALIDATION_SURELY_UNSET_51F3";
const MISSING_CA: &str = "/nonexistent/veer-test-validation-ca.pem";

/// The rules: a name, the config body (after `[listen]`/`[log]`) breaking it, the field path
/// the error must name.
fn broken(app: &str) -> Vec<(&'static str, String, &'static str)> {
    let route = "[[routes]]\nname = \"web\"\nsplit = { app = 1 }\n";
    vec![
        ("no routes", format!("[pools.app]\nservers = [\"{app}\"]\n"), "routes"),
        (
            "token_env unset",
            format!("[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"{UNSET}\"\n\n[pools.app]\nservers = [\"{app}\"]\n\n{route}"),
            "admin.token_env",
        ),
        (
            "upstream tls CA file missing",
            format!("[pools.app]\nservers = [\"{app}\"]\ntls = {{ sni = \"app.internal\", ca = \"{MISSING_CA}\" }}\n\n{route}"),
            "pools.app.tls.ca",
        ),
    ]
}

fn good(app: &str) -> String {
    format!(
        "[pools.app]\nservers = [\"{app}\"]\n\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n"
    )
}

#[tokio::test]
async fn check_rejects_each_rule_with_exit_2_and_the_field() {
    let dir = TempDir::new("validation-check");
    let mut cases = broken("127.0.0.1:9");
    cases.push(("empty file", String::new(), "routes"));
    for (name, body, field) in cases {
        let path = dir.write("veer.toml", &child_toml("", &body));
        let mut cmd = veer_cmd();
        cmd.args(["check", "--config"]).arg(&path).env_remove(UNSET);
        let out = tokio::task::spawn_blocking(move || output_within(&mut cmd, IO_TIMEOUT))
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(field), "{name}: no {field} in {err}");
    }
}

#[tokio::test]
async fn a_sighup_with_a_broken_file_keeps_the_running_table() {
    let up = Upstream::named("app").await;
    let dir = TempDir::new("validation-sighup");
    let app = up.addr.to_string();
    let path = dir.write("veer.toml", &child_toml("", &good(&app)));
    let mut veer = VeerProcess::start(&path).await;
    let mut cases = broken(&app);
    cases.push(("empty file", String::new(), "routes"));
    cases.push((
        "truncated file",
        "[pools.app]\nservers = [\"".to_string(),
        "",
    ));
    for (name, body, field) in cases {
        let text = if body.is_empty() {
            body
        } else {
            child_toml("", &body)
        };
        std::fs::write(&path, text).unwrap();
        veer.signal("-HUP");
        // Each error is a line of its own, then the verdict.
        let mut named = false;
        let verdict = veer
            .log_line(IO_TIMEOUT, |l| {
                named |= l.contains("reload failed") && l.contains(field);
                l.contains("the running config stays")
            })
            .await;
        assert!(verdict.is_some(), "{name}: no failed reload logged");
        assert!(named, "{name}: no error naming {field:?}");
        let got = get(veer.http(), "/", &[]).await;
        assert_eq!(got.status, 200, "{name}: the old table still serves");
        assert_eq!(got.body.trim(), "app");
    }
    // A good file is taken again afterwards.
    std::fs::write(&path, child_toml("", &good(&app))).unwrap();
    veer.signal("-HUP");
    let reloaded = veer
        .log_line(IO_TIMEOUT, |l| l.contains("config reloaded"))
        .await;
    assert!(reloaded.is_some(), "a good file reloads");
    veer.stop_expecting_0("-TERM", Duration::from_secs(30))
        .await;
}

#[tokio::test]
async fn the_api_refuses_each_rule_with_422_and_applies_nothing() {
    let up = Upstream::named("app").await;
    let app = up.addr.to_string();
    let config = format!("[admin]\nlisten = \"127.0.0.1:0\"\n\n{}", good(&app));
    let veer = common::start_veer(&config).await;
    let api = Api::new(&veer, None);
    let before = api.get("/api/v1/config").await.etag();
    // Admin settings are restart-only (kept from the file), so the token rule cannot be
    // reached through the API; the others can.
    for (name, body, field) in broken(&app)
        .into_iter()
        .filter(|c| c.0 != "token_env unset")
    {
        let text = format!("[listen]\nhttp = \"127.0.0.1:0\"\n\n{body}");
        let answer = api
            .call(
                "PUT",
                "/api/v1/config",
                &[("content-type", "application/toml")],
                text,
            )
            .await;
        assert_eq!(answer.status, 422, "{name}: {}", answer.text);
        assert!(answer.text.contains(field), "{name}: {}", answer.text);
    }
    assert_eq!(
        api.get("/api/v1/config").await.etag(),
        before,
        "nothing applied"
    );
    assert_eq!(get(veer.http_addr, "/", &[]).await.status, 200);
}

#[tokio::test]
async fn a_state_file_holding_a_config_this_version_cannot_serve_is_refused_at_start() {
    let dir = TempDir::new("validation-state");
    let state = dir.join("state.json");
    let file = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\nstate_file = \"{}\"\n\n{}",
        state.display(),
        good("127.0.0.1:9")
    );
    let compiled = veer::config::from_toml(&file, "veer.toml").unwrap();
    // A config set through the API earlier, its pool's CA file gone since.
    let mut replaced = compiled.raw.clone();
    let pool = replaced.pools.get_mut("app").unwrap();
    let tls = serde_json::json!({"sni": "app.internal", "ca": MISSING_CA});
    pool.tls = Some(serde_json::from_value(tls).unwrap());
    let saved = serde_json::json!({
        "version": 4,
        "config": {"file": veer::control::fingerprint(&compiled.raw), "config": replaced},
    });
    std::fs::write(&state, saved.to_string()).unwrap();
    let err = veer::run::start(compiled).await.unwrap_err().to_string();
    assert!(err.contains("pools.app.tls"), "{err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
}
