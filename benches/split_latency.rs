//! How long a split change takes to reach traffic: from sending `PUT /api/v1/routes/web/split`
//! to the first proxied request answered by the newly weighted pool, over loopback, with and
//! without a state file (whose fsync is on the change path). Prints p50/p99/max over 200
//! changes. Run: `cargo bench --bench split_latency`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn upstream(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(move |_req| async move {
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(name))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn body(client: &HttpClient, req: hyper::Request<Full<Bytes>>) -> (u16, Bytes) {
    let resp = client.request(req).await.expect("request");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, bytes)
}

async fn measure(state_file: Option<&std::path::Path>) -> Vec<Duration> {
    let (blue, green) = (upstream("blue").await, upstream("green").await);
    let state = state_file
        .map(|p| format!("state_file = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let text = format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{state}\
         [pools.blue]\nservers = [\"{blue}\"]\n[pools.green]\nservers = [\"{green}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ blue = 100, green = 0 }}\n"
    );
    let compiled = veer::config::from_toml(&text, "bench.toml").expect("config");
    let running = veer::run::start(compiled).await.expect("veer starts");
    let admin = running.admin_addr.expect("admin listener");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut samples = Vec::new();
    for i in 0..200 {
        let (to, weights) = if i % 2 == 0 {
            ("green", r#"{"blue": 0, "green": 100}"#)
        } else {
            ("blue", r#"{"blue": 100, "green": 0}"#)
        };
        let started = Instant::now();
        let put = hyper::Request::put(format!("http://{admin}/api/v1/routes/web/split"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(weights)))
            .expect("request");
        let (status, _) = body(&client, put).await;
        assert_eq!(status, 200, "split change accepted");
        loop {
            let get = hyper::Request::get(format!("http://{}/", running.http_addr))
                .body(Full::new(Bytes::new()))
                .expect("request");
            if body(&client, get).await.1 == to.as_bytes() {
                break;
            }
        }
        samples.push(started.elapsed());
    }
    samples.sort();
    samples
}

fn report(what: &str, samples: &[Duration]) {
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    println!(
        "split change -> first request on the new table, {what}: p50 {:?}, p99 {:?}, max {:?} ({} changes)",
        at(0.5),
        at(0.99),
        at(1.0),
        samples.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        report("no state file", &measure(None).await);
        let dir = std::env::temp_dir().join(format!("veer-split-latency-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        report(
            "with a state file (fsync)",
            &measure(Some(&dir.join("state.json"))).await,
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
