//! In-process upstream servers on 127.0.0.1:0 that count what they received, a WebSocket echo
//! server, and an address that refuses connections.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::requests::{full, Body};

/// What an upstream answers a request with.
pub type Handler = Arc<
    dyn Fn(
            Request<Incoming>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>
        + Send
        + Sync,
>;

/// An in-process HTTP/1.1 upstream: counts connections and requests, and keeps the last
/// request's headers.
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
        Self::slow(name, Duration::ZERO).await
    }

    /// Waits `delay` before answering `<name>\n`.
    pub async fn slow(name: &'static str, delay: Duration) -> Upstream {
        Self::with(Arc::new(move |_req| {
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Response::builder()
                    .header("x-server", name)
                    .body(full(format!("{name}\n")))
                    .unwrap()
            })
        }))
        .await
    }

    /// Holds every request until the gate lets it through, then answers `<name>\n`: a request
    /// in flight for exactly as long as the test wants.
    pub async fn gated(name: &'static str) -> (Upstream, Gate) {
        let gate = Gate(Arc::new(tokio::sync::Semaphore::new(0)));
        let held = gate.clone();
        let up = Self::with(Arc::new(move |_req| {
            let held = held.clone();
            Box::pin(async move {
                if let Ok(permit) = held.0.acquire().await {
                    permit.forget();
                }
                Response::builder()
                    .header("x-server", name)
                    .body(full(format!("{name}\n")))
                    .unwrap()
            })
        }))
        .await;
        (up, gate)
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

    /// Answers with `handler`.
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

    /// Requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The last request's headers (empty before the first request).
    pub fn headers(&self) -> HeaderMap {
        self.last_headers
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default()
    }
}

/// One request an upstream read to the end of its body.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// The requests a recording upstream read whole, in arrival order.
pub type Log = Arc<Mutex<Vec<Received>>>;

impl Upstream {
    /// Reads each request's body to its end and keeps the request, then answers `status` with
    /// `<name>\n`. A request whose body ends in an error (cut off, aborted) is not kept: only
    /// whole requests are in the log.
    pub async fn recording(name: &'static str, status: u16) -> (Upstream, Log) {
        let log: Log = Arc::default();
        let kept = Arc::clone(&log);
        let up = Self::with(Arc::new(move |req: Request<Incoming>| {
            let kept = Arc::clone(&kept);
            Box::pin(async move {
                let (parts, body) = req.into_parts();
                let whole = body.collect().await.map(|b| b.to_bytes());
                if let Ok(body) = whole {
                    kept.lock().unwrap().push(Received {
                        method: parts.method.to_string(),
                        uri: parts.uri.to_string(),
                        headers: parts.headers,
                        body: body.to_vec(),
                    });
                }
                Response::builder()
                    .status(status)
                    .header("x-server", name)
                    .body(full(format!("{name}\n")))
                    .unwrap()
            })
        }))
        .await;
        (up, log)
    }
}

/// What holds a gated upstream's requests.
#[derive(Clone)]
pub struct Gate(Arc<tokio::sync::Semaphore>);

impl Gate {
    /// Lets every request through, now and later (a closed semaphore no longer holds anyone).
    pub fn open(&self) {
        self.0.close();
    }
}

/// A WebSocket server that echoes text and binary messages back, counting connections.
pub struct WsEcho {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

/// Starts a WebSocket echo server.
pub async fn ws_echo() -> WsEcho {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    WsEcho { addr, connections }
}

/// A loopback address that refuses connections for as long as this value lives: its port is
/// bound (so no other socket of this machine, another test's included, can take it) but not
/// listening (so a connect is answered with a reset).
pub struct Refused {
    pub addr: SocketAddr,
    _held: socket2::Socket,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.addr.fmt(f)
    }
}

/// An address where connections are refused; keep the value alive while it is used.
pub fn refused_addr() -> Refused {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&any.into()).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    Refused {
        addr,
        _held: socket,
    }
}
