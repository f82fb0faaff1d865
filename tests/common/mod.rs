//! Test helpers: in-process upstreams that count what they receive, a veer started on
//! 127.0.0.1:0 from a TOML string, and a small HTTP client. Everything stays on loopback.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An in-process upstream server: counts requests and keeps the last request's headers.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub last_headers: Arc<Mutex<Option<HeaderMap>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Upstream {
    /// Answers every request with `<name>\n` and an `x-server: <name>` header.
    pub async fn named(name: &'static str) -> Upstream {
        Self::with(Arc::new(move |_req| {
            Box::pin(async move {
                Response::builder()
                    .header("x-server", name)
                    .body(full(format!("{name}\n")))
                    .unwrap()
            })
        }))
        .await
    }

    /// Waits `delay` before answering `<name>\n`.
    pub async fn slow(name: &'static str, delay: Duration) -> Upstream {
        Self::with(Arc::new(move |_req| {
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Response::builder()
                    .header("x-server", name)
                    .body(full(format!("{name}\n")))
                    .unwrap()
            })
        }))
        .await
    }

    /// Streams the request body back as the response body.
    pub async fn echo() -> Upstream {
        Self::with(Arc::new(|req: Request<Incoming>| {
            Box::pin(async move {
                let body = req.into_body().boxed();
                Response::builder()
                    .header("x-server", "echo")
                    .body(body)
                    .unwrap()
            })
        }))
        .await
    }

    pub async fn with(handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Upstream {
            addr,
            hits: Arc::default(),
            last_headers: Arc::default(),
            connections: Arc::default(),
        };
        let state = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                let handler = Arc::clone(&handler);
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        state.hits.fetch_add(1, Ordering::SeqCst);
                        *state.last_headers.lock().unwrap() = Some(req.headers().clone());
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        up
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

/// A loopback address nothing listens on (bound, then closed).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

/// Starts veer from a TOML config whose `[listen]` is filled in with 127.0.0.1:0.
pub async fn start_veer(toml: &str) -> veer::run::Running {
    let text = format!("[listen]\nhttp = \"127.0.0.1:0\"\n\n{toml}");
    let compiled = match veer::config::from_toml(&text, "test.toml") {
        Ok(c) => c,
        Err(e) => panic!("test config invalid:\n{e}\n---\n{text}"),
    };
    veer::run::start(compiled).await.expect("veer starts")
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    send(&client(), addr, "GET", path, headers).await
}

pub async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("request reaches veer");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Counts response bodies (trimmed) over `n` requests made by `make`.
pub async fn tally<F, Fut>(n: usize, mut make: F) -> HashMap<String, usize>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Got>,
{
    let mut out = HashMap::new();
    for i in 0..n {
        let got = make(i).await;
        *out.entry(got.body.trim().to_string()).or_default() += 1;
    }
    out
}
