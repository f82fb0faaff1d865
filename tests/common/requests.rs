//! Clients: HTTP/1.1 requests read whole (with or without a body), streaming request bodies,
//! and raw bytes over TCP for what a well-behaved client would never send. Every exchange has a
//! deadline (`IO_TIMEOUT` unless given).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::IO_TIMEOUT;

/// A response body an in-process upstream answers with.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A whole body from `text`.
pub fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

/// `GET path` on a new client.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Got {
    send(&client(), addr, "GET", path, headers).await
}

/// A request without a body on `client`.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Got {
    request(client, addr, method, path, headers, Bytes::new()).await
}

/// A request with `body` on `client`, its response read whole within `IO_TIMEOUT`.
pub async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Got {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).unwrap();
    let exchange = async {
        let resp = client.request(req).await.expect("the request reaches veer");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("the whole body");
        (status, headers, body.to_bytes())
    };
    let what = format!("{method} http://{addr}{path} answered");
    let (status, headers, body) = super::within(IO_TIMEOUT, &what, exchange).await;
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Counts response bodies (trimmed) over `n` requests made one after another by `make`.
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

/// A streaming request body fed through a channel of `Bytes`.
pub type StreamedBody = http_body_util::StreamBody<
    futures_util::stream::BoxStream<'static, Result<hyper::body::Frame<Bytes>, std::io::Error>>,
>;

/// A request body that streams what is sent on the returned channel, ending when it drops.
pub fn streaming_body() -> (tokio::sync::mpsc::Sender<Bytes>, StreamedBody) {
    use futures_util::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok(hyper::body::Frame::data(b)), rx))
    })
    .boxed();
    (tx, http_body_util::StreamBody::new(stream))
}

/// Sends raw `request` bytes and reads until the server closes the connection; fails if it has
/// not closed within `IO_TIMEOUT` (so send `Connection: close`, or use `raw_until`).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = connect(addr).await;
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(IO_TIMEOUT, s.read_to_end(&mut out)).await;
    match read {
        Ok(Ok(_)) => {}
        // A reset after the answer (the server closed with unread input) still ends the reply.
        Ok(Err(_)) if !out.is_empty() => {}
        Ok(Err(e)) => panic!("reading from {addr}: {e}"),
        Err(_) => panic!(
            "{addr} did not close within {IO_TIMEOUT:?}; read so far: {:?}",
            String::from_utf8_lossy(&out)
        ),
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends raw `request` bytes and reads until the reply contains `needle`; fails if it has not
/// within `IO_TIMEOUT` or the connection closes first.
pub async fn raw_until(addr: SocketAddr, request: &[u8], needle: &str) -> String {
    let mut s = connect(addr).await;
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    while !String::from_utf8_lossy(&out).contains(needle) {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!(
                "{addr} closed before {needle:?}; read: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no {needle:?} from {addr} within {IO_TIMEOUT:?}; read: {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A TCP connection to `addr`, within `IO_TIMEOUT`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let what = format!("connect to {addr}");
    super::within(IO_TIMEOUT, &what, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Reads one chunk (at most 4 KiB) within `IO_TIMEOUT`; empty when the peer closed.
pub async fn read_some(s: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let n = super::within(IO_TIMEOUT, "a read", s.read(&mut buf))
        .await
        .unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads until the peer closes (or resets); what was read, if it closed within `within`.
pub async fn read_until_closed(
    s: &mut (impl tokio::io::AsyncRead + Unpin),
    within: Duration,
) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

/// Reads and discards until the peer closes; `true` if it closed within `within`.
pub async fn closes_within(s: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    read_until_closed(s, within).await.is_some()
}

/// Reads a message head from `stream` (`buf` holds what came past the last message) and takes
/// it out of `buf`; None when the peer closes, or sends nothing for `IO_TIMEOUT`.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    Some(head)
}

/// A field's value in a head, by case-insensitive name.
pub fn field(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// Appends what the peer sends next to `buf`; None when it closes, fails, or sends nothing for
/// `IO_TIMEOUT`. For servers written byte by byte in tests.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut chunk))
        .await
        .ok()?
        .ok()?;
    if n == 0 {
        return None;
    }
    buf.extend_from_slice(&chunk[..n]);
    Some(())
}
