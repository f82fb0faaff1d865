//! `veer ctl` as a user runs it: the real binary against a veer started in-process, with
//! in-process upstreams; its output, its effect on traffic, its messages and exit codes.

mod common;

use std::net::SocketAddr;

use common::{output_within, veer_cmd, Upstream, IO_TIMEOUT};
use serde_json::Value;

const TOKEN: &str = "s3cret-token";

/// What one `veer ctl` run did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `veer ctl ARGS` (with `$VEER_ADMIN*` cleared unless `env` sets them) off the runtime's
/// thread, so the veer in this process keeps serving meanwhile.
async fn ctl_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> Out {
    tokio::task::spawn_blocking(move || {
        let mut cmd = veer_cmd();
        cmd.arg("ctl").args(&args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = output_within(&mut cmd, IO_TIMEOUT);
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .unwrap()
}

async fn ctl(args: &[&str]) -> Out {
    ctl_env(args.iter().map(|s| s.to_string()).collect(), Vec::new()).await
}

/// A veer with an admin API (token `TOKEN`), pools blue and green of one server each (and v6,
/// in no route), and a route `web` split 90/10 with a rollout plan.
struct Fixture {
    veer: veer::run::Running,
    admin: SocketAddr,
    blue: Upstream,
    green: Upstream,
}

impl Fixture {
    async fn start() -> Fixture {
        let blue = Upstream::named("blue").await;
        let green = Upstream::named("green").await;
        let veer = common::start_veer(&format!(
            r#"[admin]
listen = "127.0.0.1:0"
token = "{TOKEN}"

[pools.blue]
servers = ["{}"]

[pools.green]
servers = ["{}"]

[pools.v6]
servers = ["[::1]:9"]

[[routes]]
name = "web"
split = {{ blue = 90, green = 10 }}

[routes.rollout]
stable = "blue"
canary = "green"
steps = [5, 20, 50, 100]
interval = "1m"
"#,
            blue.addr, green.addr
        ))
        .await;
        let admin = veer.admin_addr.expect("the admin API listens");
        Fixture {
            veer,
            admin,
            blue,
            green,
        }
    }

    /// `veer ctl --admin ADDR --token TOKEN ARGS`.
    async fn ctl(&self, args: &[&str]) -> Out {
        let mut all = vec![
            "--admin".to_string(),
            format!("http://{}", self.admin),
            "--token".to_string(),
            TOKEN.to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        ctl_env(all, Vec::new()).await
    }

    /// Like `ctl`, but asserts exit 0 and returns stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args).await;
        assert_eq!(out.code, 0, "veer ctl {args:?}: {out:?}");
        out.stdout
    }

    /// Bodies of `n` requests through the proxy, counted.
    async fn traffic(&self, n: usize) -> std::collections::HashMap<String, usize> {
        let addr = self.veer.http_addr;
        common::tally(n, |_| common::get(addr, "/", &[])).await
    }
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[tokio::test]
async fn status_names_routes_pools_and_servers() {
    let f = Fixture::start().await;
    let text = f.ok(&["status"]).await;
    assert!(text.contains("ROUTE"), "{text}");
    assert!(text.contains("web"), "{text}");
    assert!(text.contains("blue 90 (90%), green 10 (10%)"), "{text}");
    assert!(
        text.contains("idle"),
        "the route's rollout plan is idle:\n{text}"
    );
    assert!(text.contains("POOL"), "{text}");
    assert!(text.contains(&f.blue.addr.to_string()), "{text}");
    assert!(text.contains(&f.green.addr.to_string()), "{text}");
    let blue_row = text
        .lines()
        .find(|l| l.contains(&f.blue.addr.to_string()))
        .unwrap();
    assert!(blue_row.starts_with("blue "), "{blue_row}");
    assert_eq!(
        blue_row.split_whitespace().collect::<Vec<_>>()[2..],
        ["yes", "no", "0", "-"],
        "healthy, not draining, nothing in flight, never ejected: {blue_row}"
    );
}

#[tokio::test]
async fn split_changes_the_weights_and_the_traffic_follows() {
    let f = Fixture::start().await;
    let line = f.ok(&["split", "web", "blue=0", "green=100"]).await;
    assert!(
        line.starts_with("web: blue 0 (0%), green 100 (100%) — version "),
        "{line}"
    );
    let status = f.ok(&["status"]).await;
    assert!(status.contains("blue 0 (0%), green 100 (100%)"), "{status}");
    let seen = f.traffic(40).await;
    assert_eq!(seen.get("green"), Some(&40), "{seen:?}");

    // Pools left out get weight 0; relative weights show as percentages.
    let line = f.ok(&["split", "web", "blue=3", "green=1"]).await;
    assert!(
        line.starts_with("web: blue 3 (75%), green 1 (25%) — "),
        "{line}"
    );
    let seen = f.traffic(200).await;
    assert!(seen.get("blue").copied().unwrap_or(0) > 100, "{seen:?}");
    assert!(seen.get("green").copied().unwrap_or(0) > 20, "{seen:?}");
}

#[tokio::test]
async fn promote_then_rollback() {
    let f = Fixture::start().await;
    let line = f.ok(&["promote", "web", "green"]).await;
    assert!(
        line.contains("web: blue 0 (0%), green 100 (100%)"),
        "{line}"
    );
    assert_eq!(f.traffic(30).await.get("green"), Some(&30));

    let line = f.ok(&["rollback", "web"]).await;
    assert!(
        line.contains("web: blue 100 (100%), green 0 (0%)"),
        "{line}"
    );
    assert_eq!(f.traffic(30).await.get("blue"), Some(&30));
    let before = f.green.hits();
    f.traffic(10).await;
    assert_eq!(
        f.green.hits(),
        before,
        "green gets nothing after the rollback"
    );
}

#[tokio::test]
async fn drain_and_undrain_a_server() {
    let f = Fixture::start().await;
    let blue = f.blue.addr.to_string();
    let line = f.ok(&["drain", "blue", &blue]).await;
    assert!(
        line.starts_with(&format!("blue {blue}: draining")),
        "{line}"
    );
    let status = f.ok(&["status"]).await;
    let row = status.lines().find(|l| l.contains(&blue)).unwrap();
    assert_eq!(row.split_whitespace().nth(3), Some("yes"), "{row}");
    // Blue's only server is drained: blue's share goes to green.
    let before = f.blue.hits();
    let seen = f.traffic(30).await;
    assert_eq!(seen.get("green"), Some(&30), "{seen:?}");
    assert_eq!(f.blue.hits(), before);

    let pools = json(&f.ok(&["--json", "status"]).await);
    assert_eq!(pools["pools"][0]["servers"][0]["draining"], true, "{pools}");

    let line = f.ok(&["undrain", "blue", &blue]).await;
    assert!(line.starts_with(&format!("blue {blue}: serving")), "{line}");
    let seen = f.traffic(100).await;
    assert!(seen.get("blue").copied().unwrap_or(0) > 50, "{seen:?}");

    // An IPv6 address travels percent-encoded as one path segment.
    let line = f.ok(&["drain", "v6", "[::1]:9"]).await;
    assert!(line.starts_with("v6 [::1]:9: draining"), "{line}");
    let status = f.ok(&["status"]).await;
    let row = status.lines().find(|l| l.contains("[::1]:9")).unwrap();
    assert_eq!(row.split_whitespace().nth(3), Some("yes"), "{row}");
    f.ok(&["undrain", "v6", "[::1]:9"]).await;
}

#[tokio::test]
async fn rollout_start_on_a_route_with_a_plan() {
    let f = Fixture::start().await;
    let line = f.ok(&["rollout", "web", "start"]).await;
    assert!(
        line.contains("rollout progressing: step 1/4, green at 5%"),
        "{line}"
    );
    let route = json(&f.ok(&["rollout", "web", "pause", "--json"]).await);
    assert_eq!(route["route"]["rollout"]["state"], "paused", "{route}");
    let status = f.ok(&["status"]).await;
    assert!(status.contains("paused: step 1/4"), "{status}");
}

#[tokio::test]
async fn a_split_during_a_rollout_pauses_it_and_ctl_says_so() {
    let f = Fixture::start().await;
    f.ok(&["rollout", "web", "start"]).await;
    let out = f.ok(&["split", "web", "blue=70", "green=30"]).await;
    assert!(
        out.contains("rollout paused: step 1/4")
            && out.contains("note: this change paused the rollout of web at step 0"),
        "{out}"
    );
    let resumed = f.ok(&["rollout", "web", "resume"]).await;
    assert!(
        resumed.contains("rollout progressing: step 1/4, green at 5%"),
        "{resumed}"
    );
}

#[tokio::test]
async fn json_output_is_the_answer_as_json() {
    let f = Fixture::start().await;
    let status = json(&f.ok(&["status", "--json"]).await);
    assert!(status["version"].is_u64(), "{status}");
    assert_eq!(status["routes"][0]["name"], "web", "{status}");
    assert_eq!(status["pools"][0]["name"], "blue", "{status}");
    assert_eq!(status["pools"][1]["name"], "green", "{status}");

    let split = json(
        &f.ok(&["--json", "split", "web", "blue=80", "green=20"])
            .await,
    );
    assert!(split["version"].as_u64().unwrap() > status["version"].as_u64().unwrap());
    assert_eq!(split["route"]["split"][0]["pool"], "blue", "{split}");
    assert_eq!(split["route"]["split"][0]["weight"], 80, "{split}");
    assert_eq!(split["route"]["split"][1]["weight"], 20, "{split}");

    let blue = f.blue.addr.to_string();
    let drained = json(&f.ok(&["--json", "drain", "blue", &blue]).await);
    assert!(drained["version"].is_u64(), "{drained}");
}

#[tokio::test]
async fn a_wrong_or_missing_token_is_refused_with_exit_1() {
    let f = Fixture::start().await;
    let admin = format!("http://{}", f.admin);
    let out = ctl(&["--admin", &admin, "--token", "wrong", "status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        "veer ctl: the admin API refused the token (401): set --token or $VEER_ADMIN_TOKEN"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    let out = ctl(&["--admin", &admin, "split", "web", "green=100"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("(401)"), "{out:?}");
    assert_eq!(f.green.hits(), 0);
    let seen = f.traffic(50).await;
    assert!(
        seen.get("blue").copied().unwrap_or(0) > 30,
        "nothing changed: {seen:?}"
    );
}

#[tokio::test]
async fn admin_and_token_come_from_the_environment_and_flags_go_anywhere() {
    let f = Fixture::start().await;
    let env = vec![
        // Without a scheme.
        ("VEER_ADMIN", f.admin.to_string()),
        ("VEER_ADMIN_TOKEN", TOKEN.to_string()),
    ];
    let out = ctl_env(vec!["status".into()], env).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("web"), "{out:?}");

    // Global flags after the subcommand.
    let admin = f.admin.to_string();
    let out = ctl(&["status", "--admin", &admin, "--token", TOKEN, "--json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    json(&out.stdout);
}

#[tokio::test]
async fn an_invalid_change_lists_every_error_and_exits_1() {
    let f = Fixture::start().await;
    let out = f.ctl(&["split", "web", "blue=0", "green=0"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    let mut lines = out.stderr.lines();
    assert_eq!(lines.next(), Some("veer ctl: invalid change:"), "{out:?}");
    let errors: Vec<&str> = lines.collect();
    assert!(!errors.is_empty(), "{out:?}");
    for e in &errors {
        assert!(
            e.starts_with("  ") && e.contains(": "),
            "`  path: message`: {e:?}"
        );
    }
    assert!(
        out.stderr.contains("split"),
        "the field path is named: {out:?}"
    );

    let out = f.ctl(&["split", "web", "purple=5"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.starts_with("veer ctl: invalid change:\n  "),
        "{out:?}"
    );
    assert!(out.stderr.contains("purple"), "{out:?}");

    // Nothing was applied.
    let status = f.ok(&["status"]).await;
    assert!(status.contains("blue 90 (90%), green 10 (10%)"), "{status}");
}

#[tokio::test]
async fn unknown_names_and_stale_versions_are_refused() {
    let f = Fixture::start().await;
    let out = f.ctl(&["split", "nope", "blue=1"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.starts_with("veer ctl: "), "{out:?}");
    assert!(out.stderr.contains("nope"), "the server's message: {out:?}");
    assert!(out.stderr.contains("(404)"), "{out:?}");

    let out = f.ctl(&["drain", "blue", "10.9.9.9:1"]).await;
    assert_eq!(out.code, 1, "{out:?}");

    let version = json(&f.ok(&["status", "--json"]).await)["version"]
        .as_u64()
        .unwrap();
    let stale = (version + 100).to_string();
    let out = f
        .ctl(&["promote", "web", "green", "--if-match", &stale])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the config changed since version {stale} was read"
        )),
        "{out:?}"
    );
    assert!(out.stderr.contains("(412)"), "{out:?}");

    let current = version.to_string();
    let line = f
        .ok(&["promote", "web", "green", "--if-match", &current])
        .await;
    assert!(line.contains(&format!("version {}", version + 1)), "{line}");
}

#[tokio::test]
async fn every_subcommand_has_help_with_an_example() {
    for sub in [
        &[][..],
        &["status"],
        &["split"],
        &["promote"],
        &["rollback"],
        &["drain"],
        &["undrain"],
        &["rollout"],
    ] {
        let mut args: Vec<&str> = sub.to_vec();
        args.push("--help");
        let out = ctl(&args).await;
        assert_eq!(out.code, 0, "{args:?}: {out:?}");
        assert!(out.stdout.contains("Usage: veer ctl"), "{args:?}: {out:?}");
        assert!(out.stdout.contains("veer ctl "), "{args:?}: {out:?}");
        assert!(out.stdout.contains("Example"), "{args:?}: {out:?}");
    }
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let refused = common::refused_addr();
    let url = format!("http://{refused}");
    for args in [
        &["split", "web", "blue"][..],
        &["split", "web", "blue=x"],
        &["split", "web", "=5"],
        &["split", "web", "green=-1"],
        &["split", "web"],
        &["split", "web", "blue=1", "blue=2"],
        &["rollout", "web", "launch"],
        &["promote", "web"],
        &["promote", "web", "green", "--if-match", "seven"],
        &["--admin", "https://127.0.0.1:9901", "status"],
        &["--timeout", "soon", "status"],
        &[],
    ] {
        // Nothing listens there: a usage error must not get as far as trying.
        let mut all = vec!["--admin", &url];
        all.extend_from_slice(args);
        let out = ctl(&all).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

#[tokio::test]
async fn an_unreachable_admin_api_exits_1_with_the_reason() {
    let refused = common::refused_addr();
    let addr = refused.addr;
    for admin in [format!("http://{addr}"), addr.to_string()] {
        let out = ctl(&["--admin", &admin, "status"]).await;
        assert_eq!(out.code, 1, "{out:?}");
        let expected = format!("veer ctl: cannot reach the admin API at http://{addr}: ");
        assert!(out.stderr.starts_with(&expected), "{out:?}");
        assert!(out.stderr.to_lowercase().contains("refused"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let url = format!("http://{addr}");
    let out = ctl(&["--admin", &url, "rollback", "web"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out
        .stderr
        .contains(&format!("cannot reach the admin API at {url}")));
}

#[tokio::test]
async fn an_admin_api_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let admin = addr.to_string();
    let out = ctl(&["--admin", &admin, "--timeout", "300ms", "status"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("cannot reach the admin API") && out.stderr.contains("300ms"),
        "{out:?}"
    );
}
