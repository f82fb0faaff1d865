//! How veer's HTTP/1.1 server reads its clients and frames what it answers them: pipelined
//! requests, `Expect: 100-continue`, HTTP/1.0 clients (kept alive only when they ask, bodies of
//! unknown length delimited by the close), chunked uploads, heads whose body framing is
//! ambiguous (refused before anything is forwarded), a small body the answer did not need, a
//! large one that ends the connection, `HEAD` answers, and a head that is not HTTP at all.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use common::requests::{connect, full, Body};
use common::{field, one_pool, raw_exchange, read_head, read_more, start_veer, Upstream};
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// An upstream that answers each request with its path.
async fn path_echo() -> Upstream {
    Upstream::with(Arc::new(|req| {
        let path = req.uri().path().to_string();
        Box::pin(async move { Response::new(full(path)) })
    }))
    .await
}

/// An upstream that answers every request with `parts` as separate frames, its length unsaid.
async fn streaming(parts: [&'static str; 2]) -> Upstream {
    Upstream::with(Arc::new(move |_req| {
        Box::pin(async move {
            let frames =
                parts.map(|p| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(p.as_bytes()))));
            let body: Body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
            Response::new(body)
        })
    }))
    .await
}

/// A config routing only `/app…` to `up`: anything else is veer's own `404`.
fn app_only(up: &Upstream) -> String {
    format!(
        "[pools.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"web\"\npath_prefix = \"/app\"\nsplit = {{ app = 1 }}\n",
        up.addr
    )
}

/// Reads one response from `stream` (`buf` keeps what came past it): its head and its body,
/// framed by `content-length`, by chunks (decoded), or by the close. `None` when the connection
/// closes before a whole head, or nothing comes for `IO_TIMEOUT`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head = read_head(stream, buf).await?;
    let field = |name: &str| field(&head, name);
    if head.starts_with("HTTP/1.1 1") {
        return Some((head, Vec::new()));
    }
    if field("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                read_more(stream, buf).await?;
            };
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            while buf.len() < line_end + 2 + size + 2 {
                read_more(stream, buf).await?;
            }
            body.extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    match field("content-length") {
        Some(length) => {
            let length: usize = length.parse().ok()?;
            while buf.len() < length {
                read_more(stream, buf).await?;
            }
            Some((head, buf.drain(..length).collect()))
        }
        None => {
            while read_more(stream, buf).await.is_some() {}
            Some((head, std::mem::take(buf)))
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let up = path_echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let mut s = connect(veer.http_addr).await;
    s.write_all(
        b"GET /a HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /b HTTP/1.1\r\nhost: x\r\n\r\n\
          GET /c HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for path in ["/a", "/b", "/c"] {
        let (head, body) = read_response(&mut s, &mut buf).await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, path.as_bytes());
    }
}

#[tokio::test]
async fn expect_100_continue_gets_its_interim_answer_before_the_body_is_sent() {
    let up = Upstream::echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let mut s = connect(veer.http_addr).await;
    s.write_all(
        b"POST /up HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (interim, _) = read_response(&mut s, &mut buf)
        .await
        .expect("100 Continue before the body");
    assert_eq!(interim, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"hello").await.unwrap();
    let (head, body) = read_response(&mut s, &mut buf).await.expect("the answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello");
}

#[tokio::test]
async fn http10_clients_are_kept_alive_only_when_they_ask() {
    let up = path_echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;

    // Without `keep-alive`: one answer, then the close.
    let raw = raw_exchange(veer.http_addr, b"GET /once HTTP/1.0\r\nhost: x\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("\r\nconnection: close\r\n"), "{raw}");
    assert!(raw.ends_with("\r\n\r\n/once"), "{raw}");

    // With it: told so, and the connection serves the next request.
    let mut s = connect(veer.http_addr).await;
    let mut buf = Vec::new();
    for path in ["/first", "/second"] {
        let request = format!("GET {path} HTTP/1.0\r\nhost: x\r\nconnection: keep-alive\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let (head, body) = read_response(&mut s, &mut buf).await.expect("an answer");
        assert!(head.contains("\r\nconnection: keep-alive\r\n"), "{head}");
        assert_eq!(body, path.as_bytes());
    }
}

#[tokio::test]
async fn an_http10_client_gets_a_body_of_unknown_length_delimited_by_the_close() {
    let up = streaming(["part one, ", "part two"]).await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let raw = raw_exchange(veer.http_addr, b"GET / HTTP/1.0\r\nhost: x\r\n\r\n").await;
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, "part one, part two");

    // An HTTP/1.1 client gets the same body in chunks, on a kept connection.
    let mut s = connect(veer.http_addr).await;
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf).await.expect("an answer");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, b"part one, part two");
}

#[tokio::test]
async fn a_chunked_upload_reaches_the_upstream_whole() {
    let up = Upstream::echo().await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let mut s = connect(veer.http_addr).await;
    s.write_all(
        b"POST /up HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let (head, body) = read_response(&mut s, &mut buf).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"hello world");
    // The framing was read to its end: the connection goes on.
    s.write_all(b"GET /next HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut s, &mut buf)
        .await
        .expect("the next answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn a_head_whose_body_framing_is_ambiguous_is_400_and_never_forwarded() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let heads: [&[u8]; 5] = [
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3x\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    for head in heads {
        let raw = raw_exchange(veer.http_addr, head).await;
        assert!(
            raw.starts_with("HTTP/1.1 400"),
            "{:?}: {raw:?}",
            String::from_utf8_lossy(head)
        );
        assert!(raw.contains("connection: close"), "{raw:?}");
    }
    assert_eq!(up.hits(), 0, "nothing was forwarded");
}

#[tokio::test]
async fn a_small_body_the_answer_did_not_need_is_skipped_and_the_connection_kept() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&app_only(&up)).await;
    let mut s = connect(veer.http_addr).await;
    // No route: answered 404 without the body being read.
    s.write_all(b"POST /elsewhere HTTP/1.1\r\nhost: x\r\ncontent-length: 11\r\n\r\nhello world")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (head, _) = read_response(&mut s, &mut buf).await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    s.write_all(b"GET /app HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut s, &mut buf)
        .await
        .expect("the next request is served on the same connection");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"app\n");
}

#[tokio::test]
async fn a_client_that_is_not_speaking_http_gets_400_and_the_listener_serves_on() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let raw = raw_exchange(veer.http_addr, b"HELLO\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400"), "{raw:?}");
    let raw = raw_exchange(veer.http_addr, b"GET / HTTP/2.0\r\nhost: x\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 505"), "{raw:?}");
    let addr: SocketAddr = veer.http_addr;
    let raw = raw_exchange(
        addr,
        b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
}

#[tokio::test]
async fn an_answer_before_a_large_upload_is_read_says_the_connection_ends() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&app_only(&up)).await;
    let mut s = connect(veer.http_addr).await;
    // No route: answered 404 while most of the 4 MiB body is still to come.
    let size = 4 << 20;
    let head = format!("POST /elsewhere HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let sending = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(
            common::IO_TIMEOUT,
            tokio::io::AsyncReadExt::read(&mut rd, &mut chunk),
        )
        .await
        .expect("the answer within the timeout")
        .expect("the answer, not a reset");
        assert!(n > 0, "the answer before the close: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    sending.abort();
}

#[tokio::test]
async fn a_head_answer_without_a_length_gets_none_added() {
    let up = streaming(["some", " body"]).await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let raw = raw_exchange(
        veer.http_addr,
        b"HEAD / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
    assert!(!raw.contains("content-length"), "{raw:?}");
    assert!(raw.ends_with("\r\n\r\n"), "no body: {raw:?}");
}

#[tokio::test]
async fn repeated_equal_content_lengths_go_upstream_as_one() {
    // A raw upstream: the head exactly as it came.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = listener.local_addr().unwrap();
    let (heads_tx, mut heads) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads_tx = heads_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while let Some((head, _)) = read_response(&mut stream, &mut buf).await {
                    let _ = heads_tx.send(head);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let veer = start_veer(&one_pool(&[up_addr], "")).await;
    for head in [
        &b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5, 5\r\nconnection: close\r\n\r\nhello"[..],
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    ] {
        let raw = raw_exchange(veer.http_addr, head).await;
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
        let seen = tokio::time::timeout(common::IO_TIMEOUT, heads.recv())
            .await
            .expect("the upstream got the request")
            .expect("a head");
        let lengths: Vec<&str> = seen
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths, ["content-length: 5"], "{seen}");
    }
}

#[tokio::test]
async fn a_client_gone_mid_answer_frees_the_upstream() {
    // The upstream sends one chunk, then nothing more; it notes when its body is dropped (its
    // connection closed by veer).
    struct Dropped(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&dropped);
    let up = Upstream::with(Arc::new(move |_req| {
        let guard = Dropped(Arc::clone(&flag));
        Box::pin(async move {
            let frames = futures_util::stream::unfold((guard, false), |(guard, sent)| async move {
                if sent {
                    std::future::pending::<()>().await;
                }
                let frame = Frame::data(Bytes::from_static(b"first"));
                Some((Ok::<_, hyper::Error>(frame), (guard, true)))
            });
            let body: Body = StreamBody::new(frames).boxed();
            Response::new(body)
        })
    }))
    .await;
    // Every timer far beyond the wait: only the close can free the upstream.
    let veer = start_veer(&one_pool(
        &[up.addr],
        "[proxy]\nrequest_timeout = \"300s\"\nidle_timeout = \"300s\"",
    ))
    .await;
    let mut s = connect(veer.http_addr).await;
    s.write_all(b"GET /stream HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    while !String::from_utf8_lossy(&buf).contains("first") {
        read_more(&mut s, &mut buf).await.expect("the first chunk");
    }
    assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
    drop(s);
    common::eventually(common::IO_TIMEOUT, "the upstream's answer dropped", || {
        let gone = dropped.load(std::sync::atomic::Ordering::SeqCst);
        async move { gone }
    })
    .await;
}

#[tokio::test]
async fn connect_is_501_and_the_connection_closes_before_any_tunnel_bytes() {
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    // A client may send its tunnel's first bytes right behind the head: never read as a request.
    let raw = raw_exchange(
        veer.http_addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n\x16\x03\x01\x00",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 501"), "{raw:?}");
    assert!(raw.contains("connection: close"), "{raw:?}");
    assert!(
        raw.ends_with("CONNECT is not supported: veer is a reverse proxy\n"),
        "{raw:?}"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn an_http10_request_asking_to_upgrade_is_served_as_a_plain_request() {
    // HTTP/1.0 has no protocol switch (RFC 9110 §7.8): its `Upgrade` is a hop-by-hop field.
    let up = Upstream::named("app").await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let raw = raw_exchange(
        veer.http_addr,
        b"GET /ws HTTP/1.0\r\nhost: x\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw:?}");
    assert!(raw.ends_with("app\n"), "{raw:?}");
    let seen = up.headers();
    assert!(!seen.contains_key("upgrade"), "{seen:?}");
    assert!(!seen.contains_key("connection"), "{seen:?}");
}
