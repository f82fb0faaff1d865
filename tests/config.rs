//! The config contract: every validation rule reports its field path, a clear message and the
//! `file:line:col` of the offending value; all errors come back at once; valid configs compile
//! into the table the routing rules expect; the shipped examples under config/ load.

mod common;

use std::path::Path;
use std::time::Duration;

use veer::config::{from_json, from_toml, load, Compiled, ConfigErrors, LogFormat};
use veer::route::table::{Balance, HashKey, HostPattern, PinMatch, Target, BUCKETS};

const FILE: &str = "t.toml";

/// Two pools every test can route to.
const POOLS: &str = "[pools.blue]\nservers = [\"127.0.0.1:9001\"]\n\n[pools.green]\nservers = [\"127.0.0.1:9002\"]\n\n";

fn with_pools(rest: &str) -> String {
    format!("{POOLS}{rest}")
}

/// A well-formed fragment about one section is completed with a pool and a route of its own
/// when it has none (a config without routes is an error), after the fragment, so that places
/// in it stand.
fn whole(text: &str) -> String {
    if text.contains("[[routes]]") || text.parse::<toml::Table>().is_err() {
        return text.to_string();
    }
    format!("{text}\n[pools.fill]\nservers = [\"127.0.0.1:1\"]\n\n[[routes]]\nname = \"fill\"\nsplit = {{ fill = 1 }}\n")
}

fn compile(text: &str) -> Compiled {
    match from_toml(&whole(text), FILE) {
        Ok(c) => c,
        Err(e) => panic!("rejected:\n{e}\n---\n{text}"),
    }
}

fn errors(text: &str) -> Vec<String> {
    match from_toml(&whole(text), FILE) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigErrors(errs)) => errs.iter().map(ToString::to_string).collect(),
    }
}

/// `t.toml:LINE:COL` of the first occurrence of `needle`.
fn at(text: &str, needle: &str) -> String {
    place(
        text,
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in text")),
    )
}

/// `t.toml:LINE:COL` of a byte offset.
fn place(text: &str, offset: usize) -> String {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{FILE}:{line}:{col}")
}

/// Asserts that the config has exactly these errors: (field path, gist of the message, the
/// text the error must point at).
fn expect(text: &str, want: &[(&str, &str, &str)]) {
    let errs = errors(text);
    for (path, gist, needle) in want {
        assert!(
            !gist.is_empty(),
            "{path}: an empty gist matches any message"
        );
        let prefix = format!("{}: {path}: ", at(text, needle));
        assert!(
            errs.iter()
                .any(|e| e.starts_with(&prefix) && e.contains(gist)),
            "no error `{prefix}…{gist}…` in:\n{}",
            errs.join("\n")
        );
    }
    assert_eq!(
        errs.len(),
        want.len(),
        "unexpected errors:\n{}",
        errs.join("\n")
    );
}

fn route(body: &str) -> String {
    with_pools(&format!("[[routes]]\nname = \"web\"\n{body}"))
}

// ---- unknown pools ----

#[test]
fn unknown_pool_in_split() {
    let text = route("split = { blue = 95, grene = 5 }\n");
    expect(
        &text,
        &[(
            "routes[0].split.grene",
            "unknown pool \"grene\"; known pools: blue, green",
            "5 }",
        )],
    );
}

#[test]
fn unknown_pool_in_pin_mirror_and_rollout() {
    let text = route(
        "split = { blue = 95, green = 5 }\n\n[[routes.pin]]\nheader = \"x-canary\"\npool = \"pink\"\n\n\
         [routes.mirror]\npool = \"shadow\"\n\n[routes.rollout]\nstable = \"old\"\ncanary = \"new\"\nsteps = [5, 100]\n",
    );
    expect(
        &text,
        &[
            ("routes[0].pin[0].pool", "unknown pool \"pink\"", "\"pink\""),
            (
                "routes[0].mirror.pool",
                "unknown pool \"shadow\"",
                "\"shadow\"",
            ),
            (
                "routes[0].rollout.stable",
                "unknown pool \"old\"",
                "\"old\"",
            ),
            (
                "routes[0].rollout.canary",
                "unknown pool \"new\"",
                "\"new\"",
            ),
        ],
    );
}

// ---- splits ----

#[test]
fn split_of_zeros_is_rejected() {
    let text = route("split = { blue = 0, green = 0 }\n");
    expect(
        &text,
        &[(
            "routes[0].split",
            "every weight in the split is 0",
            "{ blue = 0",
        )],
    );
}

#[test]
fn empty_split_is_rejected() {
    let text = route("split = {}\n");
    expect(&text, &[("routes[0].split", "the split is empty", "{}")]);
}

// ---- pools and servers ----

#[test]
fn empty_pool_is_rejected() {
    let text = "[pools.blue]\nservers = []\n";
    expect(text, &[("pools.blue.servers", "no servers", "[]")]);
}

#[test]
fn bad_server_addresses_are_named() {
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\", \"10.0.0.1\", \"10.0.0.2:0\", \"::1:80\", \
                \"10.0.0.300:80\", { addr = \"app internal:80\" }, \"[::1]:80\", \"app.internal:8080\"]\n";
    expect(
        text,
        &[
            (
                "pools.blue.servers[1]",
                "invalid server address \"10.0.0.1\": no port",
                "\"10.0.0.1\"",
            ),
            (
                "pools.blue.servers[2]",
                "port must be a number in 1..=65535",
                "\"10.0.0.2:0\"",
            ),
            (
                "pools.blue.servers[3]",
                "IPv6 address needs brackets",
                "\"::1:80\"",
            ),
            (
                "pools.blue.servers[4]",
                "neither an IP address nor a DNS name",
                "\"10.0.0.300:80\"",
            ),
            (
                "pools.blue.servers[5].addr",
                "invalid server address",
                "\"app internal:80\"",
            ),
        ],
    );
}

#[test]
fn duplicate_servers_and_zero_weights() {
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\", { addr = \"127.0.0.1:9001\", weight = 0 }, \"App.Internal:80\", \"app.internal:80\"]\n";
    expect(
        text,
        &[
            (
                "pools.blue.servers[1].addr",
                "duplicate server \"127.0.0.1:9001\" (also servers[0])",
                "\"127.0.0.1:9001\", weight",
            ),
            (
                "pools.blue.servers[1].weight",
                "weight must be at least 1",
                "0 }",
            ),
            (
                "pools.blue.servers[3]",
                "duplicate server \"app.internal:80\" (also servers[2])",
                "\"app.internal:80\"",
            ),
        ],
    );
}

#[test]
fn bad_pool_name_and_balance() {
    let text = "[pools.\"blue/1\"]\nservers = [\"127.0.0.1:9001\"]\n";
    expect(
        text,
        &[("pools.\"blue/1\"", "invalid pool name \"blue/1\"", "[pools")],
    );
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\"]\nbalance = \"random\"\n";
    expect(
        text,
        &[(
            "pools.blue.balance",
            "unknown variant `random`, expected `least_request` or `round_robin`",
            "\"random\"",
        )],
    );
}

#[test]
fn health_and_outlier_rules() {
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\"]\n\n[pools.blue.health]\npath = \"ready\"\n\
                interval = \"2 fortnights\"\ntimeout = \"0s\"\nhealthy_threshold = 0\nunhealthy_threshold = 0\n\n\
                [pools.blue.outlier]\nconsecutive_failures = 0\nbase_ejection = \"30\"\nmax_ejection_percent = 120\n";
    expect(
        text,
        &[
            (
                "pools.blue.health.path",
                "must start with \"/\"",
                "\"ready\"",
            ),
            (
                "pools.blue.health.interval",
                "invalid duration \"2 fortnights\"",
                "\"2 fortnights\"",
            ),
            (
                "pools.blue.health.timeout",
                "\"0s\" must be more than 0",
                "\"0s\"",
            ),
            (
                "pools.blue.health.healthy_threshold",
                "must be at least 1",
                "0\nunhealthy",
            ),
            (
                "pools.blue.health.unhealthy_threshold",
                "must be at least 1",
                "0\n\n",
            ),
            (
                "pools.blue.outlier.consecutive_failures",
                "must be at least 1",
                "0\nbase",
            ),
            (
                "pools.blue.outlier.base_ejection",
                "like \"250ms\", \"2s\" or \"5m\"",
                "\"30\"",
            ),
            (
                "pools.blue.outlier.max_ejection_percent",
                "120 is outside 0..=100",
                "120",
            ),
        ],
    );
}

#[test]
fn upstream_tls_needs_cert_and_key_together() {
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\"]\ntls = { cert = \"c.pem\" }\n";
    expect(
        text,
        &[(
            "pools.blue.tls.key",
            "needs both `cert` and `key`",
            "{ cert",
        )],
    );
}

// ---- routes ----

#[test]
fn duplicate_route_names() {
    let text = with_pools(
        "[[routes]]\nname = \"web\"\nsplit = { blue = 1 }\n\n[[routes]]\nname = \"web\"\nsplit = { green = 1 }\n",
    );
    let second = text.rfind("\"web\"").unwrap();
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    let want = format!(
        "{}: routes[1].name: duplicate route name \"web\" (also routes[0])",
        place(&text, second)
    );
    assert_eq!(errs[0], want);
}

#[test]
fn route_names_must_be_url_safe() {
    let text = with_pools("[[routes]]\nname = \"my route\"\nsplit = { blue = 1 }\n\n[[routes]]\nname = \"\"\nsplit = { blue = 1 }\n");
    expect(
        &text,
        &[
            (
                "routes[0].name",
                "invalid route name \"my route\"",
                "\"my route\"",
            ),
            ("routes[1].name", "invalid route name \"\"", "\"\""),
        ],
    );
}

#[test]
fn path_prefix_and_hosts() {
    let text = route(
        "split = { blue = 1 }\npath_prefix = \"api\"\nhosts = [\"ok.example.com\", \"*\", \"a.*.com\", \"http://a.com/x\", \"\"]\n",
    );
    expect(
        &text,
        &[
            (
                "routes[0].path_prefix",
                "invalid path_prefix \"api\"",
                "\"api\"",
            ),
            (
                "routes[0].hosts[1]",
                "`*` is only allowed as a leading `*.`",
                "\"*\"",
            ),
            (
                "routes[0].hosts[2]",
                "`*` is only allowed as a leading `*.`",
                "\"a.*.com\"",
            ),
            (
                "routes[0].hosts[3]",
                "without spaces, scheme or path",
                "\"http://a.com/x\"",
            ),
            ("routes[0].hosts[4]", "empty host pattern", "\"\"]"),
        ],
    );
}

#[test]
fn hash_key_forms() {
    let form = "expected \"header:NAME\", \"cookie:NAME\" or \"client_ip\"";
    for (bad, gist) in [
        ("ip", format!("invalid hash_key \"ip\": {form}")),
        (
            "header:",
            "invalid header name \"\": expected a token".to_string(),
        ),
        (
            "header:x y",
            "invalid header name \"x y\": expected a token".to_string(),
        ),
        (
            "cookie:a;b",
            "invalid cookie name \"a;b\": expected a token".to_string(),
        ),
        (
            "Client_IP",
            format!("invalid hash_key \"Client_IP\": {form}"),
        ),
    ] {
        let text = route(&format!("split = {{ blue = 1 }}\nhash_key = \"{bad}\"\n"));
        let needle = format!("\"{bad}\"");
        expect(&text, &[("routes[0].hash_key", &gist, &needle)]);
    }
    let text = route("split = { blue = 1 }\nhash_key = \"ip\"\n");
    expect(
        &text,
        &[(
            "routes[0].hash_key",
            "expected \"header:NAME\", \"cookie:NAME\" or \"client_ip\"",
            "\"ip\"",
        )],
    );
}

#[test]
fn sticky_cookie_must_be_a_token() {
    let text =
        route("split = { blue = 1 }\nsticky = { cookie = \"veer web\", max_age = \"1 aeon\" }\n");
    expect(
        &text,
        &[
            (
                "routes[0].sticky.cookie",
                "invalid cookie name \"veer web\"",
                "\"veer web\"",
            ),
            (
                "routes[0].sticky.max_age",
                "invalid duration \"1 aeon\"",
                "\"1 aeon\"",
            ),
        ],
    );
}

#[test]
fn pin_rules() {
    let text = route(
        "split = { blue = 1, green = 1 }\n\n[[routes.pin]]\npool = \"green\"\n\n\
         [[routes.pin]]\nheader = \"x-canary\"\ncookie = \"beta\"\npool = \"green\"\n\n\
         [[routes.pin]]\nheader = \"x canary\"\npool = \"green\"\n\n\
         [[routes.pin]]\nsource = []\npool = \"green\"\n\n\
         [[routes.pin]]\nsource = [\"10.1.0.0/16\", \"10.1.0.0/33\", \"not-an-ip\"]\nequals = \"x\"\npool = \"green\"\n\n\
         [[routes.pin]]\ncookie = \"be;ta\"\npool = \"green\"\n",
    );
    expect(
        &text,
        &[
            (
                "routes[0].pin[0]",
                "needs one of `header`, `cookie` or `source`",
                "[[routes.pin]]\npool",
            ),
            (
                "routes[0].pin[1]",
                "only one of `header`, `cookie` or `source`",
                "[[routes.pin]]\nheader = \"x-canary\"",
            ),
            (
                "routes[0].pin[2].header",
                "invalid header name \"x canary\"",
                "\"x canary\"",
            ),
            (
                "routes[0].pin[3].source",
                "the source list is empty",
                "[]\npool",
            ),
            (
                "routes[0].pin[4].source[1]",
                "invalid CIDR \"10.1.0.0/33\"",
                "\"10.1.0.0/33\"",
            ),
            (
                "routes[0].pin[4].source[2]",
                "invalid CIDR \"not-an-ip\"",
                "\"not-an-ip\"",
            ),
            (
                "routes[0].pin[4].equals",
                "`equals` applies to `header` and `cookie` pins",
                "\"x\"\npool",
            ),
            (
                "routes[0].pin[5].cookie",
                "invalid cookie name \"be;ta\"",
                "\"be;ta\"",
            ),
        ],
    );
}

#[test]
fn mirror_percent_and_size() {
    let text = route(
        "split = { blue = 1 }\nmirror = { pool = \"green\", percent = 150, max_body = \"lots\", max_in_flight = 0 }\n",
    );
    expect(
        &text,
        &[
            ("routes[0].mirror.percent", "150 is outside 0..=100", "150"),
            (
                "routes[0].mirror.max_body",
                "invalid size \"lots\"",
                "\"lots\"",
            ),
            (
                "routes[0].mirror.max_in_flight",
                "must be at least 1 (to stop mirroring, set percent = 0)",
                "0 }",
            ),
        ],
    );
}

#[test]
fn a_size_with_more_digits_than_u64_is_an_error_not_a_panic() {
    let text = route(
        "split = { blue = 1 }\nmirror = { pool = \"green\", max_body = \"18446744073709551615.5\" }\n",
    );
    expect(
        &text,
        &[(
            "routes[0].mirror.max_body",
            "invalid size \"18446744073709551615.5\" (more digits than any size has)",
            "\"18446744073709551615.5\"",
        )],
    );
}

#[test]
fn rollout_steps() {
    let rollout = |steps: &str| {
        route(&format!(
            "split = {{ blue = 100, green = 0 }}\n\n[routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = {steps}\n"
        ))
    };
    let text = rollout("[5, 0, 20, 20, 10, 101]");
    expect(
        &text,
        &[
            (
                "routes[0].rollout.steps[1]",
                "step 0 is outside 1..=100",
                "0, 20",
            ),
            (
                "routes[0].rollout.steps[3]",
                "steps must increase: 20 follows 20",
                "20, 10",
            ),
            (
                "routes[0].rollout.steps[4]",
                "steps must increase: 10 follows 20",
                "10, 101",
            ),
            (
                "routes[0].rollout.steps[5]",
                "step 101 is outside 1..=100",
                "101",
            ),
        ],
    );
    let text = rollout("[]");
    expect(&text, &[("routes[0].rollout.steps", "no steps", "[]")]);
}

#[test]
fn rollout_compare_limits() {
    let text = route(
        "split = { blue = 100, green = 0 }\n\n[routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [50]\n\
         compare = { max_error_increase = 2.0, max_p99_ratio = 0.5, confidence = 1.5 }\n",
    );
    expect(
        &text,
        &[
            (
                "routes[0].rollout.compare.max_error_increase",
                "2 is outside 0..=1",
                "2.0",
            ),
            (
                "routes[0].rollout.compare.max_p99_ratio",
                "0.5 is below 1",
                "0.5",
            ),
            (
                "routes[0].rollout.compare.confidence",
                "1.5 is outside 0.5..1",
                "1.5",
            ),
        ],
    );
}

#[test]
fn rollout_pools_and_limits() {
    let text = with_pools(
        "[pools.canary]\nservers = [\"127.0.0.1:9003\"]\n\n[[routes]]\nname = \"web\"\nsplit = { blue = 100 }\n\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"blue\"\nsteps = [50]\nmax_error_rate = 1.5\nmax_p99 = \"fast\"\n\n\
         [[routes]]\nname = \"api\"\nsplit = { blue = 100 }\nrollout = { stable = \"blue\", canary = \"canary\", steps = [100] }\n",
    );
    expect(
        &text,
        &[
            (
                "routes[0].rollout.canary",
                "the canary must differ from the stable pool",
                "\"blue\"\nsteps",
            ),
            (
                "routes[0].rollout.max_error_rate",
                "1.5 is outside 0..=1",
                "1.5",
            ),
            (
                "routes[0].rollout.max_p99",
                "invalid duration \"fast\"",
                "\"fast\"",
            ),
            (
                "routes[1].rollout.canary",
                "pool \"canary\" is not in this route's split",
                "\"canary\", steps",
            ),
        ],
    );
}

// ---- listeners, admin, proxy, log ----

#[test]
fn https_needs_certificates() {
    let text = "[listen]\nhttps = \"0.0.0.0:8443\"\n";
    expect(
        text,
        &[(
            "listen.https",
            "`https` needs certificates",
            "\"0.0.0.0:8443\"",
        )],
    );
    let text = "[listen]\nhttps = \"0.0.0.0:8443\"\n[tls]\ncertificates = []\n";
    expect(
        text,
        &[(
            "listen.https",
            "`https` needs certificates",
            "\"0.0.0.0:8443\"",
        )],
    );
    let ok = compile("[listen]\nhttps = \"0.0.0.0:8443\"\n[tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n");
    assert_eq!(
        ok.settings.listen.https,
        Some("0.0.0.0:8443".parse().unwrap())
    );
    assert_eq!(ok.settings.tls.unwrap().certificates.len(), 1);
}

#[test]
fn bad_listener_addresses() {
    let text = "[listen]\nhttp = \"localhost:8080\"\nhttps = \"8443\"\n[tls]\ncertificates = [{ cert = \"a\", key = \"b\" }]\n\n[admin]\nlisten = \"127.0.0.1\"\n";
    expect(
        text,
        &[
            (
                "listen.http",
                "invalid address \"localhost:8080\"; expected IP:port",
                "\"localhost",
            ),
            ("listen.https", "invalid address \"8443\"", "\"8443\""),
            (
                "admin.listen",
                "invalid address \"127.0.0.1\"",
                "\"127.0.0.1\"",
            ),
        ],
    );
}

#[test]
fn listeners_must_not_share_a_port() {
    let text = "[listen]\nhttp = \"0.0.0.0:9901\"\n\n[admin]\nlisten = \"127.0.0.1:9901\"\n";
    expect(
        text,
        &[(
            "admin.listen",
            "127.0.0.1:9901 overlaps listen.http (0.0.0.0:9901)",
            "\"127.0.0.1:9901\"",
        )],
    );
    compile("[listen]\nhttp = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n");
}

#[test]
fn public_admin_needs_a_token() {
    let text = "[admin]\nlisten = \"0.0.0.0:9901\"\n";
    expect(
        text,
        &[(
            "admin.listen",
            "not on loopback and has no token",
            "\"0.0.0.0:9901\"",
        )],
    );
    let ok = compile("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"s3cret\"\n");
    assert_eq!(ok.settings.admin.unwrap().token.as_deref(), Some("s3cret"));
    // Loopback without a token is allowed: the API is open to this machine only.
    let ok = compile("[admin]\nlisten = \"127.0.0.1:9901\"\n");
    assert_eq!(ok.settings.admin.unwrap().token, None);
}

/// `token_env` is read from the environment of the process that loads the config: here a
/// `veer check` child given the variable (or not), so that no test changes this process's
/// environment while others read it.
#[test]
fn token_env_naming_an_unset_variable_is_an_error_on_any_listener() {
    // A token asked for but missing must not become an open API, on loopback or not.
    for listen in ["0.0.0.0:9901", "127.0.0.1:9901"] {
        let text = format!(
            "[admin]\nlisten = \"{listen}\"\ntoken_env = \"VEER_TEST_CONFIG_SURELY_UNSET_9C1E\"\n"
        );
        expect(
            &text,
            &[(
                "admin.token_env",
                "VEER_TEST_CONFIG_SURELY_UNSET_9C1E is unset or empty",
                "\"VEER_TEST_CONFIG_SURELY_UNSET_9C1E\"",
            )],
        );
    }
}

#[test]
fn token_env_is_read_from_the_environment() {
    let dir = common::TempDir::new("token-env");
    let path = dir.write(
        "veer.toml",
        &whole("[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"VEER_TEST_CONFIG_TOKEN_4B7D\"\n"),
    );
    let check = |token: Option<&str>| {
        let mut cmd = common::veer_cmd();
        cmd.args(["check", "--config"]).arg(&path);
        match token {
            Some(t) => cmd.env("VEER_TEST_CONFIG_TOKEN_4B7D", t),
            None => cmd.env_remove("VEER_TEST_CONFIG_TOKEN_4B7D"),
        };
        common::output_within(&mut cmd, common::IO_TIMEOUT)
    };
    let with = check(Some("from-env"));
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(String::from_utf8_lossy(&with.stdout).contains("admin on 0.0.0.0:9901"));
    for missing in [None, Some("")] {
        let without = check(missing);
        assert_eq!(without.status.code(), Some(2), "{missing:?}");
        let err = String::from_utf8_lossy(&without.stderr);
        assert!(
            err.contains("admin.token_env: the environment variable VEER_TEST_CONFIG_TOKEN_4B7D is unset or empty"),
            "{err}"
        );
    }
}

#[test]
fn token_rules() {
    let text = "[admin]\ntoken = \"a\"\ntoken_env = \"B\"\n";
    expect(
        text,
        &[(
            "admin.token_env",
            "set `token` or `token_env`, not both",
            "\"B\"",
        )],
    );
    let text = "[admin]\ntoken = \"\"\n";
    expect(text, &[("admin.token", "the token is empty", "\"\"")]);
    let text = "[admin]\ntoken_env = \"A=B\"\n";
    expect(
        text,
        &[(
            "admin.token_env",
            "not an environment variable name",
            "\"A=B\"",
        )],
    );
}

#[test]
fn proxy_rules() {
    let text = "[proxy]\nconnect_timeout = \"2 parsecs\"\nrequest_timeout = \"0ms\"\nshutdown_grace = \"0s\"\nmax_connections = 0\n";
    let gist = "invalid duration \"2 parsecs\": unknown time unit \"parsecs\"; expected a number with a unit, like \"250ms\", \"2s\" or \"5m\"";
    expect(
        text,
        &[
            ("proxy.connect_timeout", gist, "\"2 parsecs\""),
            ("proxy.request_timeout", "must be more than 0", "\"0ms\""),
            ("proxy.max_connections", "must be at least 1", "0\n"),
        ],
    );
}

#[test]
fn log_level_is_checked() {
    let text = "[log]\nlevel = \"inof\"\n";
    expect(
        text,
        &[("log.level", "invalid log level \"inof\"", "\"inof\"")],
    );
    let text = "[log]\nformat = \"yaml\"\n";
    expect(
        text,
        &[("log.format", "unknown variant `yaml`", "\"yaml\"")],
    );
    let ok = compile("[log]\nlevel = \"info,veer=debug\"\naccess = true\nformat = \"json\"\n");
    assert_eq!(ok.settings.log.level, "info,veer=debug");
    assert!(ok.settings.log.access);
    assert_eq!(ok.settings.log.format, LogFormat::Json);
}

// ---- serde errors: unknown keys, types, syntax ----

#[test]
fn unknown_keys_are_errors_with_a_place() {
    let text = "[pools.blue]\nservers = [\"127.0.0.1:9001\"]\nbalanse = \"least_request\"\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with(
            "t.toml:3:1: pools.blue.balanse: unknown field `balanse`, expected one of"
        ),
        "{}",
        errs[0]
    );
}

#[test]
fn type_errors_have_a_place() {
    let text = route("split = { blue = \"all\" }\n");
    expect(
        &text,
        &[(
            "routes[0].split.blue",
            "invalid type: string \"all\", expected u32",
            "\"all\"",
        )],
    );
}

#[test]
fn a_missing_field_points_at_its_table() {
    let text = with_pools("[[routes]]\nname = \"web\"\n");
    expect(
        &text,
        &[("routes[0]", "missing field `split`", "[[routes]]")],
    );
}

#[test]
fn serde_errors_in_every_section_are_reported() {
    let text = "[listen]\nhtp = \"0.0.0.0:80\"\n\n[proxy]\nretries = \"two\"\n\n[pools.blue]\nservers = [\"127.0.0.1:1\"]\nwieght = 2\n\n\
                [pools.green]\nservers = [{ adr = \"127.0.0.1:2\" }]\n\n[[routes]]\nname = \"a\"\nsplit = { blue = 1 }\n\n\
                [[routes]]\nname = \"b\"\nsplt = { blue = 1 }\n\n[metrics]\nenabled = true\n";
    let errs = errors(text);
    let want = [
        "t.toml:2:1: listen.htp: unknown field `htp`",
        "t.toml:5:11: proxy.retries: invalid type: string \"two\", expected u32",
        "t.toml:9:1: pools.blue.wieght: unknown field `wieght`",
        "t.toml:12:14: pools.green.servers[0].adr: unknown field `adr`",
        "t.toml:20:1: routes[1].splt: unknown field `splt`",
        "t.toml:22:2: metrics: unknown field `metrics`",
    ];
    assert_eq!(errs.len(), want.len(), "{}", errs.join("\n"));
    for (e, w) in errs.iter().zip(want) {
        assert!(e.starts_with(w), "{e}\n  wanted {w}");
    }
}

#[test]
fn syntax_errors_name_file_line_and_column() {
    let errs = errors("[pools.blue]\nservers = [\"127.0.0.1:9001\"\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("t.toml:3:1: "), "{}", errs[0]);
    let errs = errors("[listen]\nhttp = 0.0.0.0:8080\n");
    assert!(errs[0].starts_with("t.toml:2:"), "{}", errs[0]);
    // A control character in a comment, where the TOML parser itself gives no message.
    let errs = errors("[pools.blue]\n# a comment\u{0} with a NUL\n");
    assert_eq!(
        errs,
        ["t.toml:2:12: invalid TOML: unexpected character '\\0'"]
    );
}

#[test]
fn all_validation_errors_come_back_at_once() {
    let text = "[admin]\nlisten = \"0.0.0.0:9901\"\n\n[pools.blue]\nservers = []\n\n[pools.green]\nservers = [\"nope\"]\n\n\
                [[routes]]\nname = \"web\"\nsplit = { blue = 0, pink = 0 }\nmirror = { pool = \"green\", percent = 101 }\n\n\
                [[routes]]\nname = \"web\"\npath_prefix = \"x\"\nsplit = { green = 1 }\n";
    let errs = errors(text);
    let want = [
        "t.toml:2:10: admin.listen: ",
        "t.toml:5:11: pools.blue.servers: ",
        "t.toml:8:12: pools.green.servers[0]: ",
        "t.toml:12:28: routes[0].split.pink: ",
        "t.toml:12:9: routes[0].split: every weight",
        "t.toml:13:38: routes[0].mirror.percent: ",
        "t.toml:16:8: routes[1].name: duplicate",
        "t.toml:17:15: routes[1].path_prefix: ",
    ];
    assert_eq!(errs.len(), want.len(), "{}", errs.join("\n"));
    for w in want {
        assert!(
            errs.iter().any(|e| e.starts_with(w)),
            "no {w} in\n{}",
            errs.join("\n")
        );
    }
}

#[test]
fn an_unreadable_file_is_named() {
    let Err(ConfigErrors(errs)) = load(Path::new("/nonexistent/veer-test.toml")) else {
        panic!("loaded a missing file")
    };
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].message.contains("/nonexistent/veer-test.toml"),
        "{}",
        errs[0]
    );
}

// ---- compiling ----

#[test]
fn split_upper_bounds() {
    let uppers = |split: &str| -> Vec<u16> {
        let text = with_pools(&format!(
            "[pools.canary]\nservers = [\"127.0.0.1:9003\"]\n\n[[routes]]\nname = \"r\"\nsplit = {split}\n"
        ));
        compile(&text).table.routes[0]
            .split
            .iter()
            .map(|e| e.upper)
            .collect()
    };
    assert_eq!(uppers("{ blue = 95, green = 5 }"), [9500, 10000]);
    assert_eq!(
        uppers("{ blue = 1, green = 0, canary = 1 }"),
        [5000, 5000, 10000]
    );
    assert_eq!(uppers("{ blue = 1, green = 2 }"), [3333, 10000]);
    assert_eq!(uppers("{ blue = 0, green = 7 }"), [0, BUCKETS]);
    assert_eq!(uppers("{ blue = 4294967295 }"), [BUCKETS]);
}

#[test]
fn split_keeps_config_order() {
    let c = compile(&route("split = { green = 5, blue = 95 }\n"));
    let r = &c.table.routes[0];
    let names: Vec<&str> = r
        .split
        .iter()
        .map(|e| &*c.table.pool(e.pool).name)
        .collect();
    assert_eq!(names, ["green", "blue"]);
    assert_eq!(
        r.split
            .iter()
            .map(|e| (e.weight, e.upper))
            .collect::<Vec<_>>(),
        [(5, 500), (95, 10000)]
    );
    assert_eq!(r.total_weight, 100);
    // Pool ids follow the pools' config order, not the split's.
    assert_eq!(c.table.pool_id("blue"), Some(0));
    assert_eq!(c.table.pool_id("green"), Some(1));
    assert_eq!(r.seed, xxhash_rust::xxh3::xxh3_64(b"web"));
}

#[test]
fn host_patterns_compile() {
    let c = compile(&route(
        "split = { blue = 1 }\nhosts = [\"App.Example.com:8080\", \"*.Example.COM\"]\n",
    ));
    assert_eq!(
        c.table.routes[0].hosts,
        [
            HostPattern::Exact("app.example.com".into()),
            HostPattern::Suffix(".example.com".into())
        ]
    );
}

#[test]
fn round_robin_order_is_smooth() {
    let c = compile(
        "[pools.p]\nservers = [{ addr = \"127.0.0.1:1\", weight = 5 }, \"127.0.0.1:2\", \"127.0.0.1:3\"]\n",
    );
    let order = &c.table.pools[0].rr_order;
    assert_eq!(&**order, &[0, 0, 1, 0, 2, 0, 0]);
    let count = |s| order.iter().filter(|x| **x == s).count();
    assert_eq!((count(0), count(1), count(2)), (5, 1, 1));
}

#[test]
fn defaults_are_applied() {
    let c = compile(&route(
        "split = { blue = 1, green = 0 }\nsticky = { cookie = \"veer_web\" }\nmirror = { pool = \"green\" }\n\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [10]\n",
    ));
    let t = &c.table;
    assert_eq!(t.proxy, veer::route::table::ProxySettings::default());
    assert_eq!(c.settings.listen.http, "0.0.0.0:8080".parse().unwrap());
    assert_eq!(c.settings.listen.https, None);
    assert_eq!(c.settings.admin, None);
    assert_eq!(
        (c.settings.log.level.as_str(), c.settings.log.access),
        ("info", false)
    );
    assert_eq!(c.settings.log.format, LogFormat::Text);
    assert_eq!(c.settings.workers, 0);
    let pool = &t.pools[0];
    assert_eq!(pool.balance, Balance::RoundRobin);
    assert_eq!(pool.health, None);
    assert_eq!(pool.outlier, veer::route::table::Outlier::default());
    assert_eq!(pool.servers[0].weight, 1);
    assert_eq!(
        pool.servers[0].target,
        Target::Addr("127.0.0.1:9001".parse().unwrap())
    );
    assert_eq!(
        pool.servers[0].cookie_id,
        xxhash_rust::xxh3::xxh3_64(b"blue/127.0.0.1:9001")
    );
    assert_eq!(pool.name_header, "blue");
    let r = &t.routes[0];
    assert!(r.hosts.is_empty());
    assert_eq!(&*r.path_prefix, "/");
    let sticky = r.sticky.as_ref().unwrap();
    assert_eq!(sticky.max_age, Duration::from_secs(3600));
    assert_eq!(
        &*sticky.attributes,
        "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax"
    );
    let mirror = r.mirror.as_ref().unwrap();
    assert_eq!(
        (mirror.percent, mirror.max_body, mirror.max_in_flight),
        (100, 1 << 20, 256)
    );
    let plan = r.rollout.as_ref().unwrap();
    assert_eq!(
        (plan.stable, plan.canary, plan.steps.as_slice()),
        (0, 1, &[10u8][..])
    );
    assert_eq!(
        (plan.interval, plan.max_p99),
        (Duration::from_secs(60), None)
    );
    // No limit unless set: a plan without any is a timed ramp.
    assert_eq!(
        (plan.max_error_rate, plan.min_requests, plan.compare),
        (None, 50, None)
    );
}

#[test]
fn health_defaults() {
    let c = compile("[pools.p]\nservers = [\"127.0.0.1:1\"]\nhealth = {}\n");
    let h = c.table.pools[0].health.clone().unwrap();
    assert_eq!(&*h.path, "/");
    assert_eq!(
        (h.interval, h.timeout),
        (Duration::from_secs(2), Duration::from_secs(1))
    );
    assert_eq!((h.healthy_threshold, h.unhealthy_threshold), (2, 3));
}

#[test]
fn values_are_parsed() {
    let c = compile(&with_pools(
        "[proxy]\nworkers = 4\nconnect_timeout = \"250ms\"\nidle_timeout = \"5m\"\nmax_connections = 20\nretries = 0\nexpose_pool_header = true\n\n\
         [pools.dns]\nservers = [\"App.Internal:8080\", \"[::1]:81\"]\nbalance = \"least_request\"\nhealth = { path = \"/ready\", interval = \"500ms\" }\n\
         outlier = { max_ejection_percent = 100 }\ntls = { sni = \"app.internal\", ca = \"ca.pem\" }\n\n\
         [[routes]]\nname = \"a\"\nsplit = { blue = 1 }\nhash_key = \"header:X-User\"\nsticky = { cookie = \"s\", max_age = \"90s\" }\n\
         mirror = { pool = \"dns\", percent = 5, max_body = \"64KiB\" }\n\n\
         [[routes]]\nname = \"b\"\nsplit = { blue = 1 }\nhash_key = \"cookie:sid\"\nmirror = { pool = \"dns\", max_body = 1000 }\n\n\
         [[routes.pin]]\nheader = \"X-Canary\"\nequals = \"true\"\npool = \"green\"\n\n\
         [[routes.pin]]\ncookie = \"beta\"\npool = \"green\"\n\n\
         [[routes.pin]]\nsource = [\"10.1.2.3/16\", \"192.168.0.7\"]\npool = \"green\"\n",
    ));
    let (t, s) = (&c.table, &c.settings);
    assert_eq!(s.workers, 4);
    assert_eq!(t.proxy.connect_timeout, Duration::from_millis(250));
    assert_eq!(t.proxy.idle_timeout, Duration::from_secs(300));
    assert_eq!(
        (
            t.proxy.max_connections,
            t.proxy.retries,
            t.proxy.expose_pool_header
        ),
        (20, 0, true)
    );
    let dns = &t.pools[2];
    assert_eq!(
        dns.servers[0].target,
        Target::Name {
            host: "App.Internal".into(),
            port: 8080
        }
    );
    assert_eq!(
        dns.servers[1].target,
        Target::Addr("[::1]:81".parse().unwrap())
    );
    assert_eq!(dns.balance, Balance::LeastRequest);
    assert_eq!(
        dns.health.as_ref().unwrap().interval,
        Duration::from_millis(500)
    );
    assert_eq!(dns.outlier.max_ejection_percent, 100);
    assert_eq!(
        dns.tls.as_ref().unwrap().sni.as_deref(),
        Some("app.internal")
    );
    let (a, b) = (&t.routes[0], &t.routes[1]);
    assert_eq!(
        a.hash_key,
        Some(HashKey::Header(http::HeaderName::from_static("x-user")))
    );
    assert_eq!(
        &*a.sticky.as_ref().unwrap().attributes,
        "; Path=/; Max-Age=90; HttpOnly; SameSite=Lax"
    );
    assert_eq!(
        a.mirror.as_ref().map(|m| (m.pool, m.percent, m.max_body)),
        Some((2, 5, 65536))
    );
    assert_eq!(b.hash_key, Some(HashKey::Cookie("sid".into())));
    assert_eq!(b.mirror.as_ref().unwrap().max_body, 1000);
    match &b.pins[0].matcher {
        PinMatch::Header { name, equals } => {
            assert_eq!(name, "x-canary");
            assert_eq!(equals.as_deref(), Some(&b"true"[..]));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&b.pins[1].matcher, PinMatch::Cookie { name, equals: None } if &**name == "beta")
    );
    match &b.pins[2].matcher {
        PinMatch::Source(nets) => {
            let nets: Vec<String> = nets.iter().map(ToString::to_string).collect();
            assert_eq!(nets, ["10.1.0.0/16", "192.168.0.7/32"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(b.pins[2].pool, 1);
}

#[test]
fn summary_is_one_line() {
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:8080\"\n\n[admin]\nlisten = \"127.0.0.1:9901\"\n\n{}",
        route("split = { blue = 1 }\n")
    );
    let c = compile(&text);
    assert_eq!(
        c.summary(),
        "ok: 1 route, 2 pools, 2 servers; listening on 127.0.0.1:8080, admin on 127.0.0.1:9901"
    );
}

// ---- JSON (the admin API) ----

const JSON: &str = r#"{
  "pools": { "green": { "servers": ["127.0.0.1:9002"] }, "blue": { "servers": [{ "addr": "127.0.0.1:9001", "weight": 2 }] } },
  "routes": [{ "name": "web", "split": { "green": 10, "blue": 90 }, "mirror": { "pool": "blue", "max_body": "2KiB" } }]
}"#;

#[test]
fn json_is_accepted() {
    let c = from_json(JSON).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.table.pool_id("green"), Some(0));
    let r = &c.table.routes[0];
    assert_eq!(
        r.split
            .iter()
            .map(|e| (e.pool, e.upper))
            .collect::<Vec<_>>(),
        [(0, 1000), (1, 10000)]
    );
    assert_eq!(r.mirror.as_ref().unwrap().max_body, 2048);
    assert_eq!(c.table.pools[1].servers[0].weight, 2);
}

#[test]
fn json_rejects_unknown_keys_and_has_no_location() {
    let Err(ConfigErrors(errs)) =
        from_json(r#"{"pools": {"a": {"servers": ["127.0.0.1:1"], "balanse": "x"}}}"#)
    else {
        panic!("accepted")
    };
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].location, None);
    assert!(
        errs[0].message.contains("unknown field `balanse`") && errs[0].message.contains("line 1"),
        "{}",
        errs[0]
    );
    let Err(ConfigErrors(errs)) = from_json(r#"{"routes": [{"name": "r", "split": {"nope": 1}}]}"#)
    else {
        panic!("accepted")
    };
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0].to_string(),
        "routes[0].split.nope: unknown pool \"nope\"; no pools are defined"
    );
}

#[test]
fn toml_round_trips_through_json() {
    let text = std::fs::read_to_string("config/canary.toml").unwrap();
    let c = compile(&text);
    let json = serde_json::to_string(&c.raw).unwrap();
    let back = from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(back.raw, c.raw);
    assert_eq!(back.settings, c.settings);
    assert_eq!(format!("{:?}", back.table), format!("{:?}", c.table));
}

// ---- the shipped examples ----

#[test]
fn every_example_config_loads() {
    let mut seen = 0;
    for entry in std::fs::read_dir("config").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = load(&path) {
                panic!("{}:\n{e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 2, "expected the example configs under config/");
}

#[test]
fn blue_green_example_flips_by_weight() {
    let c = load(Path::new("config/blue-green.toml")).unwrap_or_else(|e| panic!("{e}"));
    let r = &c.table.routes[0];
    let split: Vec<(&str, u32)> = r
        .split
        .iter()
        .map(|e| (&*c.table.pool(e.pool).name, e.weight))
        .collect();
    assert_eq!(split, [("blue", 100), ("green", 0)]);
}

#[test]
fn a_config_without_routes_is_an_error() {
    // An empty or truncated file would otherwise answer every request 404.
    for text in ["", "[listen]\nhttp = \"127.0.0.1:8080\"\n", POOLS] {
        let errs = match from_toml(text, FILE) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(ConfigErrors(errs)) => errs,
        };
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].path, "routes");
        assert!(errs[0].message.contains("no routes"), "{}", errs[0]);
    }
}
