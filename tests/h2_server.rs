//! veer's HTTP/2 server, driven by an `h2` client so that each frame is the test's to send:
//! bodies larger than both sides' windows in both directions, many streams at once on one
//! connection, a stream reset before and during its answer (the upstream connection is let go
//! at once, not at a timeout) and one reset in the same write as its HEADERS (never forwarded),
//! the upstream's trailers, split cookie fields, HEAD, CONNECT and `Expect: 100-continue`, the
//! drain (`GOAWAY`, the streams in hand finished, then the connection closed) and the idle
//! close (`GOAWAY` first).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{one_pool, start_veer, Upstream, IO_TIMEOUT};
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::{Method, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Every timer veer has, far beyond any wait here: what a test sees is never a timeout.
const NO_TIMERS: &str = "[proxy]\nrequest_timeout = \"300s\"\nidle_timeout = \"300s\"\n\
                         shutdown_grace = \"300s\"";

/// Opens an h2c connection (prior knowledge) to `addr` and waits until it takes requests; the
/// connection is driven in a task of its own, whose end (the server closed it) is the returned
/// receiver's.
async fn h2c(addr: SocketAddr) -> (SendRequest<Bytes>, tokio::sync::oneshot::Receiver<()>) {
    let tcp = common::within(IO_TIMEOUT, "connect", TcpStream::connect(addr))
        .await
        .unwrap();
    let (client, conn) = common::within(IO_TIMEOUT, "the h2 handshake", h2::client::handshake(tcp))
        .await
        .expect("an h2 handshake");
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = closed_tx.send(());
    });
    let client = common::within(IO_TIMEOUT, "the connection ready", client.ready())
        .await
        .expect("a ready connection");
    (client, closed_rx)
}

fn get(path: &str) -> Request<()> {
    Request::get(format!("http://veer.test{path}"))
        .body(())
        .unwrap()
}

/// Sends `req`, with no body, and waits for its answer's head.
async fn ask(client: &mut SendRequest<Bytes>, req: Request<()>) -> Response<RecvStream> {
    let (answer, _) = client.send_request(req, true).unwrap();
    common::within(IO_TIMEOUT, "the answer", answer)
        .await
        .unwrap()
}

/// Reads a response body to its end, giving each chunk's bytes back to veer's window.
async fn read_all(body: &mut RecvStream) -> Vec<u8> {
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("a body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    got
}

/// What a raw upstream saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A request head arrived (its text).
    Head(String),
    /// veer closed the connection.
    Closed,
}

/// An HTTP/1.1 upstream written byte by byte: on each connection it reports every request
/// head (only bodiless requests are sent to it) and writes `answer` after it (perhaps a partial
/// one, which the connection then never gets past), and reports when veer closes the
/// connection.
async fn raw_upstream(answer: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = buf.drain(..end + 4).collect();
                        let _ = tx.send(Seen::Head(String::from_utf8_lossy(&head).into_owned()));
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(Seen::Closed);
            });
        }
    });
    (addr, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>, what: &str) -> Seen {
    common::within(IO_TIMEOUT, what, rx.recv())
        .await
        .expect("the upstream is running")
}

#[tokio::test]
async fn an_upload_and_an_answer_larger_than_every_window_stream_through() {
    // 3 MiB: three times veer's receive windows, and far more than the client's 64 KiB one.
    let payload: Bytes = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let up = Upstream::echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://veer.test/echo")
        .body(())
        .unwrap();
    let (answer, mut upload) = client.send_request(req, false).unwrap();
    // h2 sends the buffered payload as the windows allow: veer must give its window back as
    // the upstream takes the bytes, or the upload stalls at 1 MiB.
    upload.send_data(payload.clone(), true).unwrap();
    let exchange = async {
        let resp = answer.await.expect("an answer");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-server"], "echo");
        let mut body = resp.into_body();
        read_all(&mut body).await
    };
    let got = common::within(Duration::from_secs(20), "3 MiB up and back", exchange).await;
    assert_eq!(got.len(), payload.len());
    assert!(
        got == payload[..],
        "the echoed bytes differ from the upload"
    );
}

#[tokio::test]
async fn many_streams_at_once_on_one_connection_are_each_answered() {
    let up = Upstream::slow("app", Duration::from_millis(20)).await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let (client, _closed) = h2c(veer.http_addr).await;
    let mut answers = Vec::new();
    for i in 0..64 {
        let mut client = common::within(IO_TIMEOUT, "ready", client.clone().ready())
            .await
            .unwrap();
        let (answer, _) = client.send_request(get(&format!("/{i}")), true).unwrap();
        answers.push(answer);
    }
    for answer in answers {
        let resp = common::within(IO_TIMEOUT, "an answer", answer)
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        assert_eq!(read_all(&mut body).await, b"app\n");
    }
    assert_eq!(up.hits(), 64);
}

#[tokio::test]
async fn a_stream_reset_before_its_answer_lets_the_upstream_go() {
    let (up, mut seen) = raw_upstream(b"").await;
    let veer = start_veer(&one_pool(&[up], NO_TIMERS)).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let (_answer, mut stream) = client.send_request(get("/held"), true).unwrap();
    let head = next_seen(&mut seen, "the request reaches the upstream").await;
    assert!(
        matches!(&head, Seen::Head(h) if h.starts_with("GET /held HTTP/1.1")),
        "{head:?}"
    );
    stream.send_reset(Reason::CANCEL);
    assert_eq!(
        next_seen(&mut seen, "veer closes the upstream connection").await,
        Seen::Closed
    );
    // The connection still serves.
    let (_answer, _stream) = client.send_request(get("/next"), true).unwrap();
    assert!(matches!(
        next_seen(&mut seen, "the next request").await,
        Seen::Head(_)
    ));
}

#[tokio::test]
async fn a_stream_reset_during_its_answer_lets_the_upstream_go() {
    let (up, mut seen) =
        raw_upstream(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n").await;
    let veer = start_veer(&one_pool(&[up], NO_TIMERS)).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let (answer, mut stream) = client.send_request(get("/stream"), true).unwrap();
    let resp = common::within(IO_TIMEOUT, "the answer's head", answer)
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = common::within(IO_TIMEOUT, "the first chunk", body.data()).await;
    assert_eq!(first.unwrap().unwrap(), "first");
    assert!(matches!(
        next_seen(&mut seen, "the head").await,
        Seen::Head(_)
    ));
    stream.send_reset(Reason::CANCEL);
    assert_eq!(
        next_seen(&mut seen, "veer closes the upstream connection").await,
        Seen::Closed
    );
}

#[tokio::test]
async fn the_drain_lets_the_streams_in_hand_finish_then_closes_the_connection() {
    let (up, gate) = Upstream::gated("held").await;
    let veer = start_veer(&one_pool(&[up.addr], NO_TIMERS)).await;
    let (mut client, closed) = h2c(veer.http_addr).await;
    let (answer, _) = client.send_request(get("/held"), true).unwrap();
    common::eventually(IO_TIMEOUT, "the request reaches the upstream", || {
        let hits = up.hits();
        async move { hits == 1 }
    })
    .await;
    veer.shutdown();
    gate.open();
    let resp = common::within(IO_TIMEOUT, "the answer in hand", answer)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(read_all(&mut body).await, b"held\n");
    // GOAWAY, then the close, long before the 300 s grace.
    common::within(IO_TIMEOUT, "the connection closes", closed)
        .await
        .expect("the connection task ends");
    assert!(common::within(IO_TIMEOUT, "the drain", veer.wait()).await);
}

#[tokio::test]
async fn veers_own_answer_says_its_length_and_a_head_answer_has_no_content() {
    let refused = common::refused_addr();
    let veer = start_veer(&one_pool(&[refused.addr], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    for method in [Method::GET, Method::HEAD] {
        let req = Request::builder()
            .method(method.clone())
            .uri("http://veer.test/")
            .body(())
            .unwrap();
        let resp = ask(&mut client, req).await;
        assert_eq!(resp.status(), 502);
        let length: usize = resp.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(length > 0);
        let mut body = resp.into_body();
        let got = common::within(IO_TIMEOUT, "the body", read_all(&mut body)).await;
        if method == Method::HEAD {
            assert!(got.is_empty(), "a HEAD answer carried {got:?}");
        } else {
            assert_eq!(got.len(), length);
        }
    }
}

#[tokio::test]
async fn connect_is_501() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("example.com:443")
        .body(())
        .unwrap();
    let (answer, _tunnel) = client.send_request(req, false).unwrap();
    let resp = common::within(IO_TIMEOUT, "the answer", answer)
        .await
        .unwrap();
    assert_eq!(resp.status(), 501);
    assert_eq!(up.hits(), 0);
    // The connection serves on.
    assert_eq!(ask(&mut client, get("/after")).await.status(), 200);
}

#[tokio::test]
async fn a_stream_reset_in_the_same_write_as_its_headers_is_never_sent_upstream() {
    let (up, mut heads) = raw_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let veer = start_veer(&one_pool(&[up], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    // A kept upstream connection in the pool: the first poll of a request would write it.
    assert_eq!(ask(&mut client, get("/warm")).await.status(), 200);
    for i in 0..5 {
        let mut c = common::within(IO_TIMEOUT, "ready", client.clone().ready())
            .await
            .unwrap();
        // HEADERS and RST_STREAM are queued before the client's connection task writes.
        let (_answer, mut stream) = c.send_request(get(&format!("/reset-{i}")), true).unwrap();
        stream.send_reset(Reason::CANCEL);
        tokio::task::yield_now().await;
    }
    // Frames are handled in order: by this answer, a reset stream would have been forwarded.
    assert_eq!(ask(&mut client, get("/after")).await.status(), 200);
    let mut reached = Vec::new();
    while let Ok(seen) = heads.try_recv() {
        if let Seen::Head(head) = seen {
            reached.push(head.lines().next().unwrap_or_default().to_string());
        }
    }
    assert_eq!(reached, ["GET /warm HTTP/1.1", "GET /after HTTP/1.1"]);
}

#[tokio::test]
async fn split_cookie_fields_reach_the_upstream_as_one() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let req = Request::get("http://veer.test/c")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .body(())
        .unwrap();
    assert_eq!(ask(&mut client, req).await.status(), 200);
    let seen = up.headers();
    let cookies: Vec<_> = seen.get_all("cookie").iter().collect();
    assert_eq!(cookies, ["a=1; b=2"]);
}

#[tokio::test]
async fn the_upstreams_trailers_reach_an_h2_client_without_fields_http2_forbids() {
    // The second carries `connection`, which h2 refuses in trailers as in heads: dropped, the
    // answer whole, rather than the stream reset.
    for answer in [
        &b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
           4\r\nbody\r\n0\r\nx-sum: 42\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          4\r\nbody\r\n0\r\nx-sum: 42\r\nconnection: close\r\n\r\n",
    ] {
        let (up, _heads) = raw_upstream(answer).await;
        let veer = start_veer(&one_pool(&[up], "")).await;
        let (mut client, _closed) = h2c(veer.http_addr).await;
        let (answer, _) = client.send_request(get("/t"), true).unwrap();
        let exchange = async {
            let resp = answer.await.unwrap();
            let mut body = resp.into_body();
            let got = read_all(&mut body).await;
            (got, body.trailers().await.expect("trailers, not a reset"))
        };
        let (got, trailers) = common::within(IO_TIMEOUT, "the answer", exchange).await;
        assert_eq!(got, b"body");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "42");
        assert!(!trailers.contains_key("connection"));
    }
}

#[tokio::test]
async fn an_idle_connection_is_told_goaway_before_it_is_closed() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(
        &[up.addr],
        "[proxy]\nidle_timeout = \"300ms\"\nheader_read_timeout = \"1s\"",
    ))
    .await;
    // A client written frame by frame: the preface and empty SETTINGS, then nothing (it never
    // answers the server's PING either), reading every frame until the server closes.
    let mut s = common::within(IO_TIMEOUT, "connect", TcpStream::connect(veer.http_addr))
        .await
        .unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut bytes = Vec::new();
    common::within(IO_TIMEOUT, "the server closes", s.read_to_end(&mut bytes))
        .await
        .expect("read until the close");
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    const GOAWAY: u8 = 0x7;
    assert!(
        types.contains(&GOAWAY),
        "frames before the close: {types:?}"
    );
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_answer_once_the_body_is_wanted() {
    let up = Upstream::echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let (mut client, _closed) = h2c(veer.http_addr).await;
    let req = Request::post("http://veer.test/e")
        .header("expect", "100-continue")
        .body(())
        .unwrap();
    // The client holds its body back until it hears `100 Continue`.
    let (mut answer, mut upload) = client.send_request(req, false).unwrap();
    let interim = common::within(
        IO_TIMEOUT,
        "the 100 Continue",
        std::future::poll_fn(|cx| answer.poll_informational(cx)),
    )
    .await;
    assert_eq!(interim.expect("an interim answer").unwrap().status(), 100);
    upload
        .send_data(Bytes::from_static(b"hello"), true)
        .unwrap();
    let resp = common::within(IO_TIMEOUT, "the answer", answer)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    assert_eq!(read_all(&mut body).await, b"hello");
}
