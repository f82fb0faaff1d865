//! `veer demo`: the embedded default. Two small app versions (blue v1 and green v2) on loopback,
//! veer in front of them with a 90/10 split, sticky sessions and an `x-canary` pin, and a list
//! of things to try. A light stream of requests (`TRAFFIC_PER_SECOND`) flows through the proxy
//! so that a rollout started with `veer ctl rollout web start` walks its steps by itself, and
//! green can be told to fail a share of its requests (`/_demo/fail?percent=N`) to watch the
//! automatic rollback. Everything runs in this one process and stops on Ctrl-C.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config;

/// The demo's config; `@BLUE@`, `@GREEN@` and `@LISTEN@` are filled in at start.
pub const CONFIG: &str = r#"
[listen]
http = "@LISTEN@"

[admin]
listen = "@ADMIN@"           # the admin API: try `veer ctl status`

[proxy]
expose_pool_header = true     # responses say which pool answered: x-veer-pool

[log]
level = "info"
access = false                # true: one line per request (the demo sends 20 a second)

[pools.blue]
servers = ["@BLUE@"]

[pools.green]
servers = ["@GREEN@"]

[[routes]]
name = "web"
split = { blue = 90, green = 10 }
sticky = { cookie = "veer_web", max_age = "1h" }

[[routes.pin]]
header = "x-canary"
equals = "true"
pool = "green"

[routes.rollout]
stable = "blue"
canary = "green"
steps = [10, 25, 50, 100]
interval = "20s"
max_error_rate = 0.05
max_p99 = "500ms"
min_requests = 10
compare = { max_error_increase = 0.02, max_p99_ratio = 2.0, confidence = 0.95 }
"#;

/// One demo app version: answers every request with a page in its colour.
#[derive(Debug, Clone, Copy)]
pub struct App {
    pub name: &'static str,
    pub version: &'static str,
    pub colour: &'static str,
    /// The percent of requests this app answers 500 (set through `/_demo/fail?percent=N`).
    pub fail_percent: &'static AtomicU32,
    served: &'static AtomicU64,
}

/// Requests per second the demo sends through the proxy by itself.
pub const TRAFFIC_PER_SECOND: u64 = 20;

static BLUE_FAIL: AtomicU32 = AtomicU32::new(0);
static BLUE_SERVED: AtomicU64 = AtomicU64::new(0);
static GREEN_FAIL: AtomicU32 = AtomicU32::new(0);
static GREEN_SERVED: AtomicU64 = AtomicU64::new(0);

pub const BLUE: App = App {
    name: "blue",
    version: "v1",
    colour: "#1f6feb",
    fail_percent: &BLUE_FAIL,
    served: &BLUE_SERVED,
};
pub const GREEN: App = App {
    name: "green",
    version: "v2",
    colour: "#2da44e",
    fail_percent: &GREEN_FAIL,
    served: &GREEN_SERVED,
};

impl App {
    fn page(&self, path: &str) -> String {
        format!(
            "<!doctype html><html><head><title>{name} {version}</title></head>\
             <body style=\"background:{colour};color:white;font-family:sans-serif;text-align:center;padding-top:20vh\">\
             <h1>{name} {version}</h1><p>You asked for <code>{path}</code>.</p>\
             <p>This page comes from the <b>{name}</b> pool.</p></body></html>\n",
            name = self.name,
            version = self.version,
            colour = self.colour,
            path = html_escape(path),
        )
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() == "/_demo/fail" {
            let percent = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("percent="))
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(100)
                .min(100);
            self.fail_percent.store(percent, Ordering::Relaxed);
            return text(
                http::StatusCode::OK,
                format!("{} now fails {percent}% of its requests\n", self.name),
            );
        }
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        if n % 100 < u64::from(self.fail_percent.load(Ordering::Relaxed)) {
            return text(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("{} {} failed (demo)\n", self.name, self.version),
            );
        }
        let wants_html = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
        let (body, kind) = if wants_html {
            (self.page(req.uri().path()), "text/html; charset=utf-8")
        } else {
            (
                format!("{} {}\n", self.name, self.version),
                "text/plain; charset=utf-8",
            )
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        resp
    }
}

fn text(status: http::StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Sends `TRAFFIC_PER_SECOND` requests a second through the proxy, answers discarded, so that
/// a rollout has traffic to judge.
async fn traffic(proxy: SocketAddr) {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / TRAFFIC_PER_SECOND));
    loop {
        tick.tick().await;
        let Ok(uri) = format!("http://{proxy}/").parse::<http::Uri>() else {
            return;
        };
        let client = client.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), client.get(uri)).await;
        });
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Serves `app` on a loopback port of its own; returns the address.
pub async fn serve_app(app: App) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(app.respond(&req))
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    Ok(addr)
}

/// The demo config for apps at `blue` and `green`, the proxy at `listen`, the admin API at
/// `admin`.
pub fn config_text(
    listen: SocketAddr,
    admin: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
) -> String {
    CONFIG
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string())
        .replace("@BLUE@", &blue.to_string())
        .replace("@GREEN@", &green.to_string())
}

/// HTTPS for the demo: where it listens, and the certificate and key files it serves.
#[derive(Debug, Clone)]
pub struct DemoTls {
    pub https: SocketAddr,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `text` (a demo config) serving HTTPS as `tls` says as well.
pub fn with_https(text: &str, tls: &DemoTls) -> String {
    let quoted = |p: &PathBuf| toml::Value::String(p.display().to_string()).to_string();
    let listen = format!(
        "https = \"{}\"\n\n[tls]\ncertificates = [{{ cert = {}, key = {} }}]\n\n[admin]",
        tls.https,
        quoted(&tls.cert),
        quoted(&tls.key)
    );
    text.replacen("\n[admin]", &listen, 1)
}

/// `veer demo`: returns the exit code.
pub fn main(listen: SocketAddr, admin: SocketAddr, tls: Option<DemoTls>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("veer demo: cannot start the runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(run(listen, admin, tls))
}

async fn run(listen: SocketAddr, admin: SocketAddr, tls: Option<DemoTls>) -> i32 {
    let (blue, green) = match (serve_app(BLUE).await, serve_app(GREEN).await) {
        (Ok(b), Ok(g)) => (b, g),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("veer demo: cannot start the demo apps: {e}");
            return 1;
        }
    };
    let mut text = config_text(listen, admin, blue, green);
    if let Some(tls) = &tls {
        text = with_https(&text, tls);
    }
    let compiled = match config::from_toml(&text, "<demo>") {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("veer demo: the embedded config is invalid:\n{errors}");
            return 1;
        }
    };
    crate::telemetry::init(&compiled.settings.log);
    let running = match crate::run::start(compiled).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("veer demo: {e}");
            eprintln!(
                "(is something else on {listen} or {admin}? try `veer demo --listen 127.0.0.1:8081 --admin 127.0.0.1:9902`)"
            );
            return 1;
        }
    };
    let admin = running.admin_addr.unwrap_or(admin);
    tokio::spawn(traffic(running.http_addr));
    println!("{}", instructions(running.http_addr, admin, blue, green));
    if let (Some(https), Some(tls)) = (running.https_addr, &tls) {
        println!(
            "HTTPS:\n\n\x20 curl --cacert {} https://localhost:{}/   # the same split over TLS (h2 or HTTP/1.1)\n",
            tls.cert.display(),
            https.port()
        );
    }
    if let Err(e) = stop_signal().await {
        eprintln!("veer demo: cannot wait for Ctrl-C: {e}");
    }
    running.shutdown();
    running.wait().await;
    0
}

/// Ctrl-C (SIGINT) or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

fn instructions(
    proxy: SocketAddr,
    admin: SocketAddr,
    blue: SocketAddr,
    green: SocketAddr,
) -> String {
    // The command as this process was started (`target/release/veer` under cargo run).
    let veer = std::env::args().next().unwrap_or_else(|| "veer".into());
    format!(
        "\nveer demo is running.\n\n\
         \x20 dashboard    http://{admin}/   (open it in a browser: live split, health, rollout, controls)\n\
         \x20 proxy        http://{proxy}   (90% blue v1, 10% green v2, sticky sessions)\n\
         \x20 admin API    http://{admin}\n\
         \x20 blue v1      http://{blue}\n\
         \x20 green v2     http://{green}\n\n\
         Things to try:\n\n\
         \x20 curl -s http://{proxy}/                          # mostly \"blue v1\", sometimes \"green v2\"\n\
         \x20 for i in $(seq 20); do curl -s http://{proxy}/; done | sort | uniq -c\n\
         \x20 curl -s -H 'x-canary: true' http://{proxy}/      # pinned: always \"green v2\"\n\
         \x20 curl -si http://{proxy}/ | grep -i -e set-cookie -e x-veer-pool\n\
         \x20 curl -s -b 'veer_web=<value from set-cookie>' http://{proxy}/   # sticky: same answer every time\n\
         \x20 open http://{proxy}/ in a browser: the page's colour shows the version; reload it, it sticks\n\n\
         Change the split while it runs (another terminal):\n\n\
         \x20 {veer} ctl --admin {admin} status\n\
         \x20 {veer} ctl --admin {admin} split web blue=50 green=50\n\
         \x20 {veer} ctl --admin {admin} promote web green      # blue/green switch: 100% green\n\
         \x20 {veer} ctl --admin {admin} rollback web           # 100% back to blue\n\
         \x20 curl -s http://{admin}/api/v1/routes/web\n\n\
         A progressive rollout (the demo sends {TRAFFIC_PER_SECOND} requests a second through the proxy):\n\n\
         \x20 {veer} ctl --admin {admin} rollout web start      # green 10% -> 25% -> 50% -> 100%, 20s a step\n\
         \x20 {veer} ctl --admin {admin} status                 # where the rollout stands\n\
         \x20 curl -s 'http://{green}/_demo/fail?percent=30'    # green fails 30%: rolled back within seconds\n\
         \x20 curl -s 'http://{green}/_demo/fail?percent=0'     # heal it, then start again\n\
         \x20 {veer} ctl --admin {admin} rollout web pause      # or resume, abort\n\n\
         Ctrl-C stops everything.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_https_demo_config_serves_the_given_files() {
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let tls = DemoTls {
            https: addr(8443),
            cert: PathBuf::from("dir with \"quotes\"/demo.pem"),
            key: PathBuf::from("demo.key"),
        };
        let text = with_https(&config_text(addr(8080), addr(9901), addr(1), addr(2)), &tls);
        let compiled = config::from_toml(&text, "<demo>").unwrap();
        assert_eq!(compiled.settings.listen.https, Some(addr(8443)));
        assert!(compiled.admit().is_ok());
        let certificates = compiled.settings.tls.unwrap().certificates;
        assert_eq!(certificates.len(), 1);
        assert_eq!(certificates[0].cert, tls.cert);
        assert_eq!(certificates[0].key, tls.key);
    }
}
