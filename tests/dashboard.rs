//! The dashboard, `GET /` on the admin listener: the page itself over plain HTTP (headers, no
//! external asset, no token needed to load it), and the page at work in headless Chromium
//! driven through chromedriver: it asks for the token, renders routes, pools, weights and live
//! figures, promotes a pool, and refuses (412) a change made on data that went stale.
//!
//! The browser test needs `chromium` and `chromedriver` on `PATH`; without them it says it was
//! skipped, unless `VEER_REQUIRE_BROWSER` is set (CI sets it), where it fails.

mod common;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use http::StatusCode;
use serde_json::{json, Value};

use common::{client, eventually, send, start_veer, within, Api, Upstream, IO_TIMEOUT};

const TOKEN: &str = "dash-s3cret";

/// Pools `blue` and `green` (one in-process upstream each) behind route `web` at 90/10, with a
/// rollout plan that never moves by itself (its interval is an hour), and the admin API with a
/// token.
async fn veer_with_dashboard() -> (veer::run::Running, Upstream, Upstream) {
    let blue = Upstream::named("blue").await;
    let green = Upstream::named("green").await;
    let toml = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\n\
         [pools.blue]\nservers = [\"{}\"]\n\n\
         [pools.green]\nservers = [\"{}\"]\n\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 90, green = 10 }}\n\
         sticky = {{ cookie = \"veer_web\", max_age = \"1h\" }}\n\n\
         [[routes.pin]]\nheader = \"x-canary\"\nequals = \"true\"\npool = \"green\"\n\n\
         [routes.rollout]\nstable = \"blue\"\ncanary = \"green\"\nsteps = [10, 50, 100]\n\
         interval = \"1h\"\nmax_error_rate = 0.05\nmin_requests = 10\n",
        blue.addr, green.addr
    );
    (start_veer(&toml).await, blue, green)
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_loads_nothing_from_elsewhere() {
    let (running, _b, _g) = veer_with_dashboard().await;
    let anon = Api::new(&running, None);

    let page = anon.get("/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(page.header("cache-control"), "no-store");
    assert_eq!(page.header("x-frame-options"), "DENY");
    let csp = page.header("content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'unsafe-inline'",
        "style-src 'unsafe-inline'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive:?}");
    }
    assert!(
        page.text.starts_with("<!doctype html>"),
        "{}",
        &page.text[..80]
    );
    assert!(page.text.contains("<script>") && page.text.contains("/api/v1/routes"));
    assert!(
        !page.text.contains("@VEER_VERSION@"),
        "the version is filled in"
    );
    let lower = page.text.to_ascii_lowercase();
    for external in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
        "@import",
        "src=\"//",
        "href=\"//",
    ] {
        assert!(
            !lower.contains(external),
            "the page loads something from elsewhere: {external}"
        );
    }

    // The page holds no data; the API behind it still needs the token.
    let a = anon.get("/api/v1/routes").await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let head = anon.call("HEAD", "/", &[], "").await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-type"), "text/html; charset=utf-8");
    assert!(head.text.is_empty());

    let post = anon.call("POST", "/", &[], "").await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);

    // Another site's page cannot load it into its own origin's reach either.
    let cross = anon
        .call("GET", "/", &[("origin", "http://evil.example")], "")
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
}

/// Kills the child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Aborts a background task when dropped.
struct Aborted(tokio::task::JoinHandle<()>);

impl Drop for Aborted {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `name` on `PATH`.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    let l = StdListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Proxied requests, one after another, each with a deadline, until the task is aborted.
fn background_traffic(proxy: SocketAddr, sent: Arc<AtomicUsize>) -> Aborted {
    Aborted(tokio::spawn(async move {
        let client = client();
        loop {
            let _ = tokio::time::timeout(IO_TIMEOUT, send(&client, proxy, "GET", "/", &[])).await;
            sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }))
}

/// The value `script` returns in the page, within `IO_TIMEOUT`.
async fn js(browser: &Client, script: &str) -> Value {
    within(IO_TIMEOUT, script, browser.execute(script, vec![]))
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` (a JavaScript body that returns a boolean) until it returns true; panics
/// with `what` and the page's text if `within` passes first.
async fn page_until(browser: &Client, within: Duration, what: &str, script: &str) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if js(browser, script).await == Value::Bool(true) {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            let text = js(browser, "return document.body.innerText").await;
            panic!(
                "not within {within:?}: {what}\n--- the page says:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The text of the first element matching `css`, if any.
async fn text_of(browser: &Client, css: &str) -> Option<String> {
    let script = format!(
        "const e = document.querySelector({}); return e ? e.textContent.trim() : null;",
        json!(css)
    );
    js(browser, &script).await.as_str().map(str::to_string)
}

async fn click(browser: &Client, css: &str) {
    let what = format!("click {css}");
    let element = within(IO_TIMEOUT, &what, browser.find(Locator::Css(css)))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    within(IO_TIMEOUT, &what, element.click())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn type_into(browser: &Client, css: &str, text: &str) {
    let what = format!("type into {css}");
    let element = within(IO_TIMEOUT, &what, browser.find(Locator::Css(css)))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    within(IO_TIMEOUT, &what, element.clear())
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    within(IO_TIMEOUT, &what, element.send_keys(text))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
}

/// `route`'s weights as the API has them.
async fn api_weights(api: &Api, route: &str) -> Vec<(String, u64)> {
    let a = api.get(&format!("/api/v1/routes/{route}")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    a.json["route"]["split"]
        .as_array()
        .expect("a split")
        .iter()
        .map(|e| {
            (
                e["pool"].as_str().unwrap().to_string(),
                e["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn weights(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
    pairs.iter().map(|(p, w)| (p.to_string(), *w)).collect()
}

/// A JavaScript expression: the page's legend shows `weight` for `pool` of route `web`.
fn weight_shown(pool: &str, weight: u64) -> String {
    format!(
        "(document.querySelector('[data-route=\"web\"] .legend li[data-pool=\"{pool}\"] [data-weight]')\
         ?.textContent.trim() === '{weight}')"
    )
}

/// A script for `page_until`: the legend shows `weight` for `pool` of route `web`.
fn page_weight_is(pool: &str, weight: u64) -> String {
    format!("return {};", weight_shown(pool, weight))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_routes_live_and_drives_them() {
    let (Some(chromium), Some(driver)) = (
        on_path("chromium")
            .or_else(|| on_path("chromium-browser"))
            .or_else(|| on_path("google-chrome")),
        on_path("chromedriver"),
    ) else {
        if std::env::var_os("VEER_REQUIRE_BROWSER").is_some() {
            panic!("VEER_REQUIRE_BROWSER is set but chromium or chromedriver is not on PATH");
        }
        eprintln!("skipped: chromium or chromedriver is not on PATH");
        return;
    };

    let (running, _blue, _green) = veer_with_dashboard().await;
    let admin = running.admin_addr.expect("the admin API listens");
    let api = Api::new(&running, Some(TOKEN));
    let sent = Arc::new(AtomicUsize::new(0));
    let _traffic = background_traffic(running.http_addr, Arc::clone(&sent));

    let port = free_port();
    let _driver = Killed(
        Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts"),
    );
    eventually(IO_TIMEOUT, "chromedriver listens", || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;

    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = within(
        Duration::from_secs(60),
        "a Chromium session starts",
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .expect("chromedriver gives a session");

    let outcome = AssertUnwindSafe(drive(&browser, admin, &api, &sent))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        if let Ok(Ok(png)) = tokio::time::timeout(IO_TIMEOUT, browser.screenshot()).await {
            let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failed.png");
            if std::fs::write(&path, png).is_ok() {
                eprintln!("the page when the test failed: {}", path.display());
            }
        }
    }
    let _ = tokio::time::timeout(IO_TIMEOUT, browser.close()).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The browser part: everything the operator does, in order.
async fn drive(browser: &Client, admin: SocketAddr, api: &Api, sent: &AtomicUsize) {
    let long = Duration::from_secs(30);
    let url = format!("http://{admin}/");
    within(IO_TIMEOUT, "the dashboard loads", browser.goto(&url))
        .await
        .expect("the page loads");

    // A token is configured: the page asks for it, in the page, and says when it is wrong.
    page_until(
        browser,
        long,
        "the page asks for the token",
        "return document.querySelector('#token-overlay').classList.contains('show');",
    )
    .await;
    type_into(browser, "#token-input", "not-the-token").await;
    click(browser, "#token-submit").await;
    page_until(
        browser,
        long,
        "a wrong token is refused and asked again",
        "const e = document.querySelector('#token-error'); \
         return document.querySelector('#token-overlay').classList.contains('show') \
           && !e.hidden && e.textContent.includes('refused');",
    )
    .await;
    type_into(browser, "#token-input", TOKEN).await;
    click(browser, "#token-submit").await;

    // Routes, pools and weights render.
    page_until(
        browser,
        long,
        "route web renders with its weights",
        &page_weight_is("blue", 90),
    )
    .await;
    assert_eq!(
        text_of(browser, "[data-route=\"web\"] h2").await.as_deref(),
        Some("web")
    );
    page_until(
        browser,
        long,
        "blue 90, green 10",
        &page_weight_is("green", 10),
    )
    .await;
    for pool in ["blue", "green"] {
        let title = text_of(browser, &format!("[data-pool-card=\"{pool}\"] h2")).await;
        assert_eq!(title.as_deref(), Some(pool), "pool {pool}'s card");
    }
    let version = api.get("/api/v1/routes").await.version();
    assert_eq!(
        text_of(browser, "#config-version").await,
        Some(version.to_string())
    );
    assert_eq!(text_of(browser, "#live").await.as_deref(), Some("live"));
    assert_eq!(
        text_of(browser, "[data-route=\"web\"] [data-rollout-state]")
            .await
            .as_deref(),
        Some("idle")
    );

    // Live figures: the background traffic shows as requests per second.
    page_until(
        browser,
        long,
        "blue's requests/s is above 0",
        "const e = document.querySelector('[data-route=\"web\"] [data-fig=\"rps\"][data-pool=\"blue\"]'); \
         return !!e && Number(e.textContent) > 0;",
    )
    .await;
    page_until(
        browser,
        long,
        "the requests/s chart has a line",
        "return !!document.querySelector('[data-route=\"web\"] [data-chart=\"requests_per_s\"] path');",
    )
    .await;
    for fig in ["error-rate", "p50", "p99"] {
        let shown = text_of(
            browser,
            &format!("[data-route=\"web\"] [data-fig=\"{fig}\"][data-pool=\"blue\"]"),
        )
        .await;
        assert!(
            shown.is_some_and(|t| !t.is_empty()),
            "blue's {fig} is shown"
        );
    }
    assert!(sent.load(Ordering::Relaxed) > 0, "background traffic flows");

    // Pause holds the view (and says so); resume takes it up again.
    click(browser, "#pause").await;
    page_until(
        browser,
        long,
        "the header says paused",
        "return document.querySelector('#live').textContent === 'paused';",
    )
    .await;
    click(browser, "#pause").await;
    page_until(
        browser,
        long,
        "the header says live again",
        "return document.querySelector('#live').textContent === 'live';",
    )
    .await;

    // Promote green: an in-page confirm, then the page and the API both show 100% green.
    click(
        browser,
        "button[data-action=\"promote\"][data-route=\"web\"][data-pool=\"green\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "promote asks for confirmation",
        "return document.querySelector('#confirm-overlay').classList.contains('show');",
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 90), ("green", 10)]),
        "nothing changes before the confirm"
    );
    click(browser, "#confirm-ok").await;
    page_until(
        browser,
        long,
        "the page shows green at 100",
        &page_weight_is("green", 100),
    )
    .await;
    page_until(
        browser,
        long,
        "the page shows blue at 0",
        &page_weight_is("blue", 0),
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 0), ("green", 100)])
    );
    page_until(
        browser,
        long,
        "the page says the promote was applied",
        "const m = document.querySelector('#message'); \
         return m.classList.contains('ok') && m.textContent.includes('applied');",
    )
    .await;

    // A 412: the operator opens the rollback confirm on version v; the split changes behind
    // the page's back (v+1); the page refreshes under the dialog; the confirm is then refused
    // and the page says what changed, without retrying.
    let before = api.get("/api/v1/routes").await.version();
    click(
        browser,
        "button[data-action=\"rollback\"][data-route=\"web\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "rollback asks for confirmation",
        "return document.querySelector('#confirm-overlay').classList.contains('show');",
    )
    .await;
    let changed = api
        .put("/api/v1/routes/web/split", json!({"blue": 30, "green": 70}))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text);
    let after = changed.version();
    assert!(after > before);
    page_until(
        browser,
        long,
        "the page refreshes to the new version under the dialog",
        &format!(
            "return document.querySelector('#config-version').textContent.trim() === '{after}';"
        ),
    )
    .await;
    click(browser, "#confirm-ok").await;
    page_until(
        browser,
        long,
        "the page reports the 412 and what changed",
        &format!(
            "const m = document.querySelector('#message'); const t = m.textContent; \
             return m.classList.contains('error') && t.includes('412') \
               && t.includes('version {before} → {after}') && t.includes('blue 30 / green 70');"
        ),
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 30), ("green", 70)]),
        "the stale rollback was not applied, nor retried"
    );
    page_until(
        browser,
        long,
        "the page shows green at 70",
        &page_weight_is("green", 70),
    )
    .await;

    // The split form: weights that do not validate are refused (422) with the errors shown;
    // good ones are applied.
    let blue_input = "[data-route=\"web\"] input[data-split-input][data-pool=\"blue\"]";
    let green_input = "[data-route=\"web\"] input[data-split-input][data-pool=\"green\"]";
    type_into(browser, blue_input, "0").await;
    type_into(browser, green_input, "0").await;
    click(
        browser,
        "[data-route=\"web\"] button[data-action=\"split\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "the page shows the 422 and its errors",
        "const m = document.querySelector('#message'); \
         return m.classList.contains('error') && m.textContent.includes('422') \
           && m.textContent.includes('•');",
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 30), ("green", 70)])
    );
    type_into(browser, blue_input, "60").await;
    type_into(browser, green_input, "40").await;
    click(
        browser,
        "[data-route=\"web\"] button[data-action=\"split\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "the page shows green at 40",
        &page_weight_is("green", 40),
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 60), ("green", 40)])
    );

    // The rollout: only the buttons that make sense for its state; start, pause, then abort
    // (confirmed), with the history in the page.
    assert!(
        js(
            browser,
            "return !document.querySelector('[data-action=\"rollout\"][data-verb=\"pause\"]');"
        )
        .await
            == Value::Bool(true),
        "an idle rollout offers no pause"
    );
    click(
        browser,
        "button[data-action=\"rollout\"][data-verb=\"start\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "the rollout shows as progressing at 10%",
        &format!(
            "return document.querySelector('[data-route=\"web\"] [data-rollout-state]').textContent === 'progressing' && ({});",
            weight_shown("green", 10)
        ),
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 90), ("green", 10)])
    );
    page_until(
        browser,
        long,
        "the step's figures count the canary's requests",
        "const e = document.querySelector('[data-route=\"web\"] [data-fig=\"step-requests\"][data-pool=\"green\"]'); \
         return !!e && Number(e.textContent.replace(/,/g, '')) > 0;",
    )
    .await;
    // The screenshot: the rollout under way, from the top of the page.
    js(browser, "window.scrollTo(0, 0); return true;").await;
    let png = within(IO_TIMEOUT, "a screenshot", browser.screenshot())
        .await
        .expect("a screenshot");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).expect("the screenshot is written");
    println!("dashboard screenshot: {}", path.display());

    click(
        browser,
        "button[data-action=\"rollout\"][data-verb=\"pause\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "the rollout shows as paused, with resume and abort",
        "return document.querySelector('[data-route=\"web\"] [data-rollout-state]').textContent === 'paused' \
           && !!document.querySelector('[data-action=\"rollout\"][data-verb=\"resume\"]') \
           && !document.querySelector('[data-action=\"rollout\"][data-verb=\"start\"]');",
    )
    .await;
    click(
        browser,
        "button[data-action=\"rollout\"][data-verb=\"abort\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "abort asks for confirmation",
        "return document.querySelector('#confirm-overlay').classList.contains('show');",
    )
    .await;
    click(browser, "#confirm-ok").await;
    page_until(
        browser,
        long,
        "the rollout shows as rolled back, with its history",
        "return document.querySelector('[data-route=\"web\"] [data-rollout-state]').textContent === 'rolled back' \
           && document.querySelectorAll('[data-route=\"web\"] [data-history] tbody tr').length >= 3;",
    )
    .await;
    page_until(
        browser,
        long,
        "the page shows green at 0",
        &page_weight_is("green", 0),
    )
    .await;
    assert_eq!(
        api_weights(api, "web").await,
        weights(&[("blue", 100), ("green", 0)])
    );

    // Drain and undrain green's server.
    click(
        browser,
        "[data-pool-card=\"green\"] button[data-action=\"drain\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "green's server shows as draining",
        "return !!document.querySelector('[data-pool-card=\"green\"] [data-draining]');",
    )
    .await;
    let pools = api.get("/api/v1/pools").await;
    assert_eq!(pools.json["pools"][1]["name"], "green");
    assert_eq!(pools.json["pools"][1]["servers"][0]["draining"], true);
    click(
        browser,
        "[data-pool-card=\"green\"] button[data-action=\"undrain\"]",
    )
    .await;
    page_until(
        browser,
        long,
        "green's server serves again",
        "return !document.querySelector('[data-pool-card=\"green\"] [data-draining]') \
           && !!document.querySelector('[data-pool-card=\"green\"] button[data-action=\"drain\"]');",
    )
    .await;

    // The same page under the name localhost works too (its own origin, its own token).
    let url = format!("http://localhost:{}/", admin.port());
    within(
        IO_TIMEOUT,
        "the dashboard loads as localhost",
        browser.goto(&url),
    )
    .await
    .expect("the page loads as localhost");
    page_until(
        browser,
        long,
        "the page at localhost asks for the token",
        "return document.querySelector('#token-overlay').classList.contains('show');",
    )
    .await;
    type_into(browser, "#token-input", TOKEN).await;
    click(browser, "#token-submit").await;
    page_until(
        browser,
        long,
        "the page at localhost shows the routes",
        &page_weight_is("blue", 100),
    )
    .await;
}
