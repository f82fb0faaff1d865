//! How veer reads servers' answers and frames what it sends them: bodies delimited by length,
//! by chunks (with trailers) or by the connection's end; answers without a body (`HEAD`, `204`,
//! `304`); interim `1xx` answers; broken framing (a `502`, never a hang or a torn body passed
//! on as whole); which connections may be kept afterwards; and uploads that go on streaming
//! while the answer already does.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::{
    client, field, get, read_head, read_more, request, send, start_veer, within, IO_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What a scripted server answers to one request: the raw bytes, and whether it then closes.
type Script = Arc<dyn Fn(&str) -> (Vec<u8>, bool) + Send + Sync>;

/// One request a scripted server read: its connection's number (in accept order), the head,
/// and the body's bytes as they came on the wire.
#[derive(Debug, Clone)]
struct Seen {
    conn: usize,
    head: String,
    body: Vec<u8>,
}

/// A server that answers each request with what its script says for the request line, and
/// records every request. `closed` reports each connection the server closed itself.
struct Scripted {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    closed: mpsc::UnboundedReceiver<usize>,
}

impl Scripted {
    async fn start(script: impl Fn(&str) -> (Vec<u8>, bool) + Send + Sync + 'static) -> Scripted {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed) = mpsc::unbounded_channel();
        let log = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut stream, _)) = listener.accept().await {
                let (conn, script, log, closed) =
                    (n, Arc::clone(&script), Arc::clone(&log), closed_tx.clone());
                n += 1;
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                        let line = head.lines().next().unwrap_or("").to_string();
                        log.lock().unwrap().push(Seen { conn, head, body });
                        let (answer, close) = script(&line);
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                        if close {
                            drop(stream);
                            let _ = closed.send(conn);
                            return;
                        }
                    }
                });
            }
        });
        Scripted { addr, seen, closed }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The connection each request (by its path) came on.
    fn conn_of(&self, path: &str) -> usize {
        let seen = self.seen();
        seen.iter()
            .find(|s| s.head.split(' ').nth(1) == Some(path))
            .unwrap_or_else(|| panic!("{path} never reached the server: {seen:?}"))
            .conn
    }
}

/// Reads one request from `stream` (`buf` holds what came past the last one): its head and
/// its body's raw bytes, framed by `content-length` or chunked (up to the last chunk). None
/// when the peer closes, or sends nothing for `IO_TIMEOUT`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head = read_head(stream, buf).await?;
    let field = |name: &str| field(&head, name);
    let body_end = if field("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            if let Some(at) = buf.windows(5).position(|w| w == b"0\r\n\r\n") {
                break at + 5;
            }
            read_more(stream, buf).await?;
        }
    } else {
        let length: usize = field("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < length {
            read_more(stream, buf).await?;
        }
        length
    };
    let body = buf[..body_end].to_vec();
    buf.drain(..body_end);
    Some((head, body))
}

/// The path of a request line.
fn path(line: &str) -> &str {
    line.split(' ').nth(1).unwrap_or("")
}

fn ok(body: &str) -> (Vec<u8>, bool) {
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    (answer.into_bytes(), false)
}

fn one_pool(server: SocketAddr) -> String {
    common::one_pool(&[server], "")
}

#[tokio::test]
async fn a_chunked_answer_with_extensions_and_trailers_arrives_whole_and_its_connection_is_kept() {
    let up = Scripted::start(|line| {
        if path(line) == "/chunked" {
            let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 11\r\n\r\n";
            (answer.to_vec(), false)
        } else {
            ok("next")
        }
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let got = get(veer.http_addr, "/chunked", &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "hello world")
    );
    assert!(
        !got.headers.contains_key("transfer-encoding")
            || got.headers["transfer-encoding"] == "chunked"
    );
    let got = get(veer.http_addr, "/next", &[]).await;
    assert_eq!(got.body, "next");
    assert_eq!(
        up.conn_of("/next"),
        up.conn_of("/chunked"),
        "the connection was kept"
    );
    // A client that takes trailers gets them, after the last chunk.
    let raw = common::raw_exchange(
        veer.http_addr,
        b"GET /chunked HTTP/1.1\r\nhost: x\r\nte: trailers\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.contains("trailer: x-sum"), "{raw:?}");
    assert!(raw.ends_with("0\r\nx-sum: 11\r\n\r\n"), "{raw:?}");
}

#[tokio::test]
async fn an_answer_delimited_by_the_connection_closing_is_passed_on_whole_and_not_kept() {
    let up = Scripted::start(|line| {
        if path(line) == "/until-close" {
            (
                b"HTTP/1.1 200 OK\r\n\r\nall of it, until the end".to_vec(),
                true,
            )
        } else {
            ok("next")
        }
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let got = get(veer.http_addr, "/until-close", &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "all of it, until the end")
    );
    assert_eq!(get(veer.http_addr, "/next", &[]).await.body, "next");
    assert_ne!(up.conn_of("/next"), up.conn_of("/until-close"));
}

#[tokio::test]
async fn head_204_and_304_answers_have_no_body_and_keep_the_connection() {
    let up = Scripted::start(|line| {
        let answer: &[u8] = if line.starts_with("HEAD /bare") {
            // No length at all: still no body, and the connection is kept.
            b"HTTP/1.1 200 OK\r\n\r\n"
        } else if line.starts_with("HEAD") {
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n"
        } else if path(line) == "/no-content" {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if path(line) == "/not-modified" {
            b"HTTP/1.1 304 Not Modified\r\netag: \"7\"\r\ncontent-length: 5\r\n\r\n"
        } else {
            return ok("after");
        };
        (answer.to_vec(), false)
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let c = client();
    let got = send(&c, veer.http_addr, "HEAD", "/head", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, ""));
    assert_eq!(got.headers["content-length"], "10");
    let got = send(&c, veer.http_addr, "GET", "/no-content", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (204, ""));
    let got = send(&c, veer.http_addr, "GET", "/not-modified", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (304, ""));
    let got = send(&c, veer.http_addr, "HEAD", "/bare", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, ""));
    let got = send(&c, veer.http_addr, "GET", "/after", &[]).await;
    assert_eq!(got.body, "after");
    // Had a body been awaited after any of them, the next answer would have been lost in it.
    let conns: Vec<usize> = up.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 0, 0, 0], "one connection for all five");
}

#[tokio::test]
async fn interim_answers_are_skipped_for_the_final_one() {
    let up = Scripted::start(|_| {
        let answer =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
            HTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nmade";
        (answer.to_vec(), false)
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let got = request(&client(), veer.http_addr, "POST", "/make", &[], "thing").await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (201, "made"));
    assert_eq!(up.seen()[0].body, b"thing");
}

#[tokio::test]
async fn a_post_without_a_body_says_so_with_a_zero_length() {
    let up = Scripted::start(|_| ok("done")).await;
    let veer = start_veer(&one_pool(up.addr)).await;
    // No content-length and no transfer-encoding from the client: a body of zero bytes.
    let raw = common::raw_exchange(
        veer.http_addr,
        b"POST /empty HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.ends_with("done"), "{raw:?}");
    let head = up.seen()[0].head.to_ascii_lowercase();
    assert!(head.contains("content-length: 0\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
}

#[tokio::test]
async fn broken_framing_is_a_502_and_veer_goes_on_serving() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok",
        "a".repeat(70 * 1024)
    );
    let up = Scripted::start(move |line| {
        let answer = if path(line) == "/conflicting" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd".to_vec()
        } else if path(line) == "/not-a-number" {
            b"HTTP/1.1 200 OK\r\ncontent-length: 3x\r\n\r\nabc".to_vec()
        } else if path(line) == "/huge-head" {
            big.clone().into_bytes()
        } else if path(line) == "/garbage" {
            b"SMTP ready\r\n\r\n".to_vec()
        } else if path(line) == "/bad-chunk" {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
                .to_vec()
        } else {
            return ok("fine");
        };
        (answer, true)
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    for path in ["/conflicting", "/not-a-number", "/huge-head", "/garbage"] {
        let got = get(veer.http_addr, path, &[]).await;
        assert_eq!(got.status.as_u16(), 502, "{path}: {}", got.status);
    }
    // A broken body after a good head: the head is on its way, so the client's connection is
    // cut rather than the body ending as if it were whole.
    let req = http::Request::get(format!("http://{}/bad-chunk", veer.http_addr))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let exchange = async {
        let resp = client().request(req).await.map_err(|e| e.to_string())?;
        let body = http_body_util::BodyExt::collect(resp.into_body()).await;
        body.map(|_| ()).map_err(|e| e.to_string())
    };
    let outcome = within(IO_TIMEOUT, "the broken body ends", exchange).await;
    assert!(outcome.is_err(), "a torn body was passed on as whole");
    assert_eq!(get(veer.http_addr, "/after", &[]).await.body, "fine");
}

#[tokio::test]
async fn a_body_cut_short_by_the_server_is_cut_short_for_the_client() {
    let up = Scripted::start(|line| {
        if path(line) != "/cut" {
            return ok("whole");
        }
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf".to_vec(),
            true,
        )
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let mut s = TcpStream::connect(veer.http_addr).await.unwrap();
    s.write_all(b"GET /cut HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = within(
        IO_TIMEOUT,
        "veer closes the client's connection",
        s.read_to_end(&mut got),
    )
    .await;
    // The connection ends without a whole answer: nothing, or the head and the part that came,
    // never ten bytes of body.
    let text = String::from_utf8_lossy(&got);
    let _ = read;
    if !text.is_empty() {
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        let (_, body) = text.split_once("\r\n\r\n").unwrap_or(("", ""));
        assert!(body.len() < 10, "{text:?}");
    }
    // And the next request is served whole on a new connection.
    assert_eq!(get(veer.http_addr, "/again", &[]).await.status, 200);
}

#[tokio::test]
async fn answers_that_end_the_connection_are_not_kept() {
    let up = Scripted::start(|line| {
        let answer: &[u8] = if path(line) == "/close" {
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\nc"
        } else if path(line) == "/old" {
            b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\no"
        } else if path(line) == "/gzip" {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\ncontent-length: 100\r\n\r\nz"
        } else if path(line) == "/both" {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n1\r\nb\r\n0\r\n\r\n"
        } else {
            return ok("next");
        };
        // A body delimited by the end of the connection needs that end.
        (answer.to_vec(), path(line) == "/gzip")
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    for (path, body) in [
        ("/close", "c"),
        ("/old", "o"),
        ("/both", "b"),
        ("/gzip", "z"),
    ] {
        let got = get(veer.http_addr, path, &[]).await;
        assert_eq!(
            (got.status.as_u16(), got.body.as_str()),
            (200, body),
            "{path}"
        );
        // A length beside a transfer coding is ignored, and not passed on.
        assert_ne!(
            got.headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"100"[..]),
            "{path}"
        );
        let next = format!("{path}-next");
        assert_eq!(get(veer.http_addr, &next, &[]).await.body, "next");
        assert_ne!(
            up.conn_of(&next),
            up.conn_of(path),
            "{path}'s connection was kept"
        );
    }
    // An HTTP/1.0 server that asks for keep-alive keeps its connection.
    let up = Scripted::start(|_| {
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\nk".to_vec(),
            false,
        )
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    get(veer.http_addr, "/a", &[]).await;
    get(veer.http_addr, "/b", &[]).await;
    assert_eq!(up.conn_of("/a"), up.conn_of("/b"));
}

#[tokio::test]
async fn a_post_after_the_server_closed_an_idle_kept_connection_goes_on_a_new_one() {
    // The server answers `/first` with keep-alive and then closes the connection while it is
    // idle in veer's pool. The POST that follows must not be written to that dead connection:
    // it could not be sent again once written.
    let mut up = Scripted::start(|line| {
        if path(line) == "/first" {
            (ok("first").0, true)
        } else {
            ok("posted")
        }
    })
    .await;
    let veer = start_veer(&one_pool(up.addr)).await;
    assert_eq!(get(veer.http_addr, "/first", &[]).await.body, "first");
    let closed = within(IO_TIMEOUT, "the server closes", up.closed.recv()).await;
    assert_eq!(closed, Some(0));
    let got = request(&client(), veer.http_addr, "POST", "/order", &[], "pay=1").await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "posted"));
    let posts: Vec<Seen> = up
        .seen()
        .into_iter()
        .filter(|s| s.head.starts_with("POST"))
        .collect();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].conn, 1);
}

#[tokio::test]
async fn an_upload_streams_while_the_answer_does() {
    // An echo server that answers at once and sends back each piece of the body as it reads
    // it: the answer's next chunk waits on the upload's next piece, so veer must go on
    // streaming the upload after the answer's head has come back.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads_tx, mut heads) = mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if read_more(&mut s, &mut buf).await.is_none() {
                return;
            }
        };
        let _ = heads_tx.send(String::from_utf8_lossy(&buf[..end]).into_owned());
        buf.drain(..end);
        if s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        // The upload is chunked; each chunk read is echoed as a chunk, raw.
        loop {
            while let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                let Ok(size) =
                    usize::from_str_radix(std::str::from_utf8(&buf[..at]).unwrap_or("x"), 16)
                else {
                    return;
                };
                if buf.len() < at + 2 + size + 2 {
                    break;
                }
                let piece = buf[at + 2..at + 2 + size].to_vec();
                buf.drain(..at + 2 + size + 2);
                let echo = [
                    format!("{size:x}\r\n").into_bytes(),
                    piece,
                    b"\r\n".to_vec(),
                ]
                .concat();
                if s.write_all(&echo).await.is_err() {
                    return;
                }
                if size == 0 {
                    return;
                }
            }
            if read_more(&mut s, &mut buf).await.is_none() {
                return;
            }
        }
    });
    let veer = start_veer(&one_pool(addr)).await;
    let mut c = TcpStream::connect(veer.http_addr).await.unwrap();
    c.write_all(
        b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nping1\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut c, &mut got, "ping1").await;
    c.write_all(b"5\r\nping2\r\n").await.unwrap();
    read_until(&mut c, &mut got, "ping2").await;
    c.write_all(b"0\r\n\r\n").await.unwrap();
    read_until(&mut c, &mut got, "\r\n0\r\n\r\n").await;
    let head = within(IO_TIMEOUT, "the server's head", heads.recv())
        .await
        .unwrap();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
}

/// Reads from `c` into `got` until `needle` has come.
async fn read_until(c: &mut TcpStream, got: &mut Vec<u8>, needle: &str) {
    let reading = async {
        while !String::from_utf8_lossy(got).contains(needle) {
            let mut chunk = [0u8; 1024];
            let n = c.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "closed before {needle:?}: {:?}",
                String::from_utf8_lossy(got)
            );
            got.extend_from_slice(&chunk[..n]);
        }
    };
    within(IO_TIMEOUT, needle, reading).await
}
