//! Client-side timers over real sockets: slow request heads, idle keep-alive connections
//! (HTTP/1.1 and HTTP/2), connections over the limit, and a drain that a stuck client cannot
//! hold up. A timer that must not be the cause of what a test sees is set far above
//! `IO_TIMEOUT`, the bound on every wait; the exact instants are tested on tokio's paused clock
//! in `src/conn.rs`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::requests::{connect, read_some, read_until_closed};
use common::{closes_within, one_pool, raw_exchange, start_veer, Upstream, IO_TIMEOUT};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(up: &Upstream, proxy: &str) -> String {
    one_pool(&[up.addr], &format!("[proxy]\n{proxy}"))
}

/// A timer's value that no test here waits for.
const NEVER: &str = "\"300s\"";

#[tokio::test]
async fn a_slow_request_head_is_cut_off_by_header_read_timeout() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        &format!("header_read_timeout = \"300ms\"\nidle_timeout = {NEVER}"),
    ))
    .await;
    // Slowloris: a byte every 100 ms, for longer than any wait here, never completing the head.
    let (mut from_veer, mut to_veer) = connect(veer.http_addr).await.into_split();
    let trickle = tokio::spawn(async move {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter();
        for b in head.chain(std::iter::repeat(&b'a')).take(400) {
            if to_veer.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(
        closes_within(&mut from_veer, IO_TIMEOUT).await,
        "cut off while the head was still arriving"
    );
    trickle.abort();
    // A silent new connection gets the same treatment.
    let mut silent = connect(veer.http_addr).await;
    assert!(closes_within(&mut silent, IO_TIMEOUT).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout_and_not_before() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"200ms\"\nidle_timeout = \"3s\"",
    ))
    .await;
    let mut idle = connect(veer.http_addr).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_some(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    // Idle past header_read_timeout but within idle_timeout: still open and serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_some(&mut idle).await;
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
    assert!(
        closes_within(&mut idle, IO_TIMEOUT).await,
        "closed once idle"
    );
}

#[tokio::test]
async fn an_http2_connection_sending_pings_is_kept_until_idle_timeout() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"200ms\"\nidle_timeout = \"3s\"",
    ))
    .await;
    let stream = connect(veer.http_addr).await;
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    for round in 0..3 {
        let req = http::Request::get(format!("http://{}/", veer.http_addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let exchange = async {
            let resp = send.send_request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        let (status, body) = common::within(IO_TIMEOUT, "an HTTP/2 exchange", exchange)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!((status.as_u16(), &body[..]), (200, &b"app\n"[..]));
        // PINGs flow meanwhile, for longer than header_read_timeout: they are not request heads.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // With PINGs still flowing, the connection is closed once idle: they do not reset the idle
    // timer.
    let ended = common::within(IO_TIMEOUT, "the idle connection closed", conn).await;
    assert!(
        ended.is_ok(),
        "the connection task ended cleanly: {ended:?}"
    );
    assert!(send.is_closed(), "the connection is closed");
}

#[tokio::test]
async fn a_connection_over_the_limit_is_answered_503_and_closed() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        &format!("max_connections = 1\nheader_read_timeout = {NEVER}\nidle_timeout = {NEVER}"),
    ))
    .await;
    let mut held = connect(veer.http_addr).await;
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_some(&mut held).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    // A client over the limit that has sent its head is answered at once and closed: no timer
    // here would close it within the wait.
    let refused = raw_exchange(veer.http_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    drop(held);
}

#[tokio::test]
async fn a_stuck_client_does_not_hold_the_drain() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        &format!("header_read_timeout = {NEVER}\nidle_timeout = {NEVER}\nshutdown_grace = {NEVER}"),
    ))
    .await;
    // A keep-alive client that sent its head, got its answer and then sits there.
    let mut stuck = connect(veer.http_addr).await;
    stuck
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_some(&mut stuck).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    veer.shutdown();
    let drained = common::within(IO_TIMEOUT, "the drain", veer.wait()).await;
    assert!(drained, "drained long before any timer or the grace");
    assert!(closes_within(&mut stuck, IO_TIMEOUT).await);
}

#[tokio::test]
async fn a_response_that_stops_moving_is_cut_off() {
    // The upstream sends a head and half its body, then stalls for longer than any wait here.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.expect("the request");
                assert!(n > 0, "the request");
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                    .await
                    .expect("the head and half the body sent");
                tokio::time::sleep(Duration::from_secs(300)).await;
            });
        }
    });
    let veer = start_veer(&format!(
        "[proxy]\nrequest_timeout = \"300ms\"\nidle_timeout = \"300ms\"\n\
         [pools.app]\nservers = [\"{up_addr}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n"
    ))
    .await;
    let mut client = connect(veer.http_addr).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut client, IO_TIMEOUT)
        .await
        .expect("a stalled response does not hold the connection forever");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(
        got.ends_with("half"),
        "cut off after the bytes that came: {got:?}"
    );
}

#[tokio::test]
async fn a_websocket_counts_against_max_connections_while_open() {
    use futures_util::{SinkExt, StreamExt};
    let echo = common::ws_echo().await;
    let veer = start_veer(&format!(
        "[proxy]\nmax_connections = 1\n[pools.app]\nservers = [\"{}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        echo.addr
    ))
    .await;
    let url = format!("ws://{}/", veer.http_addr);
    let (mut ws, _) = common::within(
        IO_TIMEOUT,
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    let back = common::within(IO_TIMEOUT, "the echo", ws.next()).await;
    assert!(back.unwrap().unwrap().is_text());
    let refused = raw_exchange(veer.http_addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        refused.starts_with("HTTP/1.1 503"),
        "the open tunnel holds the only connection slot: {refused:?}"
    );
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_lowered_request_timeout_applies_on_a_connection_opened_before_the_change() {
    // HTTP/1.1 request deadlines are kept by the connection's watchdog, which was set up under
    // the old value: the lowered one must still cut the next request on that connection.
    let up = Upstream::with(std::sync::Arc::new(|req| {
        let slow = req.uri().path() == "/slow";
        Box::pin(async move {
            if slow {
                tokio::time::sleep(Duration::from_secs(300)).await;
            }
            http::Response::new(common::full("fast\n"))
        })
    }))
    .await;
    let veer = start_veer(&one_pool(
        &[up.addr],
        &format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[proxy]\nrequest_timeout = {NEVER}\n\
             idle_timeout = {NEVER}\nheader_read_timeout = {NEVER}"
        ),
    ))
    .await;
    let mut client = connect(veer.http_addr).await;
    client
        .write_all(b"GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let first = read_some(&mut client).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");

    let api = common::Api::new(&veer, None);
    let mut config = api.get("/api/v1/config").await.json;
    config["config"]["proxy"]["request_timeout"] = "300ms".into();
    let put = api.put("/api/v1/config", config).await;
    assert_eq!(put.status, 200, "{}", put.text);

    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_some(&mut client).await;
    assert!(second.starts_with("HTTP/1.1 504"), "{second:?}");
}

#[tokio::test]
async fn a_pipelined_head_left_unfinished_is_cut_off_by_header_read_timeout() {
    // The second head arrives with the first request, while it is served, and never ends: the
    // header timer, not the idle timer, must cut it.
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        &format!("header_read_timeout = \"300ms\"\nidle_timeout = {NEVER}"),
    ))
    .await;
    let mut client = connect(veer.http_addr).await;
    client
        .write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHos")
        .await
        .unwrap();
    let got = read_until_closed(&mut client, IO_TIMEOUT)
        .await
        .expect("the connection is closed by the header timeout");
    assert!(got.starts_with("HTTP/1.1 200"), "{got:?}");
    assert_eq!(got.matches("HTTP/1.1 ").count(), 1, "{got:?}");
}
