//! Client-side timers over real sockets: slow request heads, idle keep-alive connections
//! (HTTP/1.1 and HTTP/2), connections over the limit, and a drain that a stuck client cannot
//! hold up. Every wait is bounded well below the timers that must not fire.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{closes_within, one_pool, start_veer, Upstream};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(up: &Upstream, proxy: &str) -> String {
    one_pool(&[up.addr], &format!("[proxy]\n{proxy}"))
}

#[tokio::test]
async fn a_slow_request_head_is_cut_off_by_header_read_timeout() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"300ms\"\nidle_timeout = \"60s\"",
    ))
    .await;
    // Slowloris: a byte every 100 ms never completes the head.
    let mut slow = TcpStream::connect(veer.http_addr).await.unwrap();
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), trickle).await;
    assert!(
        closes_within(&mut slow, Duration::from_secs(3)).await,
        "cut off long before idle_timeout"
    );
    // A silent new connection gets the same treatment.
    let mut silent = TcpStream::connect(veer.http_addr).await.unwrap();
    assert!(closes_within(&mut silent, Duration::from_secs(5)).await);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout_and_not_before() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"200ms\"\nidle_timeout = \"1200ms\"",
    ))
    .await;
    let mut idle = TcpStream::connect(veer.http_addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle past header_read_timeout but within idle_timeout: still open and serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = idle.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closes_within(&mut idle, Duration::from_secs(5)).await,
        "closed once idle"
    );
}

#[tokio::test]
async fn an_http2_connection_sending_pings_is_kept_until_idle_timeout() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"200ms\"\nidle_timeout = \"5s\"",
    ))
    .await;
    let stream = TcpStream::connect(veer.http_addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(100))
            .keep_alive_while_idle(true)
            .handshake::<_, Empty<Bytes>>(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for round in 0..3 {
        let req = http::Request::get(format!("http://{}/", veer.http_addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = send
            .send_request(req)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
        // PINGs flow meanwhile: they are not request heads.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

#[tokio::test]
async fn a_connection_over_the_limit_is_answered_or_closed_promptly() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "max_connections = 1\nheader_read_timeout = \"300ms\"\nidle_timeout = \"60s\"",
    ))
    .await;
    let mut held = TcpStream::connect(veer.http_addr).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = held.read(&mut buf).await.unwrap();
    let mut silent = TcpStream::connect(veer.http_addr).await.unwrap();
    assert!(closes_within(&mut silent, Duration::from_secs(5)).await);
    drop(held);
}

#[tokio::test]
async fn a_stuck_client_does_not_hold_the_drain() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&config(
        &up,
        "header_read_timeout = \"300ms\"\nidle_timeout = \"60s\"\nshutdown_grace = \"60s\"",
    ))
    .await;
    let mut stuck = TcpStream::connect(veer.http_addr).await.unwrap();
    stuck
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    veer.shutdown();
    let drained = tokio::time::timeout(Duration::from_secs(10), veer.wait()).await;
    assert_eq!(
        drained.ok(),
        Some(true),
        "drained long before shutdown_grace"
    );
}

#[tokio::test]
async fn a_response_that_stops_moving_is_cut_off() {
    // The upstream sends a head and half its body, then stalls forever.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = upstream.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf")
                    .await;
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    let veer = start_veer(&format!(
        "[proxy]\nrequest_timeout = \"300ms\"\nidle_timeout = \"300ms\"\n\
         [pools.app]\nservers = [\"{up_addr}\"]\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n"
    ))
    .await;
    let mut client = TcpStream::connect(veer.http_addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        closes_within(&mut client, Duration::from_secs(5)).await,
        "a stalled response does not hold the connection forever"
    );
}

#[tokio::test]
async fn a_websocket_counts_against_max_connections_while_open() {
    use futures_util::{SinkExt, StreamExt};
    let echo = common::ws_echo().await;
    let ws_addr = echo.addr;
    let veer = start_veer(&format!(
        "[proxy]\nmax_connections = 1\n[pools.app]\nservers = [\"{ws_addr}\"]\n\
         [[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n"
    ))
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", veer.http_addr))
        .await
        .unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::text("hi"))
        .await
        .unwrap();
    assert!(ws.next().await.unwrap().unwrap().is_text());
    let mut other = TcpStream::connect(veer.http_addr).await.unwrap();
    other
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = other.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503"),
        "the open tunnel holds the only connection slot"
    );
    ws.close(None).await.unwrap();
}
