//! The edges where requests used to be lost or mistakes let through: an upstream that closes a
//! kept connection without answering (its keep-alive timeout raced the request), and requests
//! whose `Host` is missing or repeated.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{client, get, raw_exchange, read_more, send, start_veer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// An upstream that answers the first request on each connection with keep-alive, then reads
/// the next request on it and closes without answering: what a server does when its idle
/// timeout fires just as a request arrives on a kept connection (Node after 5 s, gunicorn after
/// 2 s). Records the request line of every request it read.
struct Racing {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    /// Connections that veer closed while the upstream waited for their next request.
    closed_by_veer: Arc<AtomicUsize>,
}

impl Racing {
    async fn start() -> Racing {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let closed_by_veer = Arc::new(AtomicUsize::new(0));
        let (log, closed) = (Arc::clone(&seen), Arc::clone(&closed_by_veer));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(Racing::serve(stream, Arc::clone(&log), Arc::clone(&closed)));
            }
        });
        Racing {
            addr,
            seen,
            closed_by_veer,
        }
    }

    async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>, closed: Arc<AtomicUsize>) {
        for answered in [true, false] {
            let Some(line) = read_head(&mut stream).await else {
                if !answered {
                    closed.fetch_add(1, Ordering::SeqCst);
                }
                return;
            };
            seen.lock().unwrap().push(line);
            if answered {
                let resp =
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok";
                if stream.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
        // Dropping the stream closes it with the second request unanswered.
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request head (and a body announced by `content-length`); its request line. None
/// when the peer closes (or nothing comes within `IO_TIMEOUT`).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        read_more(stream, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < end + length {
        read_more(stream, &mut buf).await?;
    }
    head.lines().next().map(str::to_string)
}

fn one_pool(server: SocketAddr) -> String {
    common::one_pool(&[server], "")
}

#[tokio::test]
async fn idempotent_requests_on_a_connection_closed_unanswered_are_sent_again() {
    let up = Racing::start().await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let c = client();
    for (i, method) in ["GET", "HEAD", "OPTIONS"]
        .iter()
        .cycle()
        .take(30)
        .enumerate()
    {
        let got = send(&c, veer.http_addr, method, &format!("/r{i}"), &[]).await;
        assert_eq!(got.status, 200, "{method} /r{i}");
    }
    // Every other request went out on a kept connection that closed unanswered, and was sent
    // again on a new one: the upstream read those twice.
    let seen = up.seen();
    for i in 0..30 {
        let count = seen
            .iter()
            .filter(|l| l.contains(&format!(" /r{i} ")))
            .count();
        assert!(
            (1..=2).contains(&count),
            "/r{i} read {count} times: {seen:?}"
        );
    }
    assert!(seen.len() > 40, "kept connections were reused: {seen:?}");
}

#[tokio::test]
async fn a_post_on_a_connection_closed_unanswered_is_not_sent_again() {
    let up = Racing::start().await;
    let veer = start_veer(&one_pool(up.addr)).await;
    // The first request leaves a kept connection, which the POST then takes.
    assert_eq!(get(veer.http_addr, "/warm", &[]).await.status, 200);
    let c = common::client();
    let req = http::Request::post(format!("http://{}/order", veer.http_addr))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"pay=1",
        )))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 502);
    let posts = up
        .seen()
        .iter()
        .filter(|l| l.starts_with("POST /order"))
        .count();
    assert_eq!(
        posts, 1,
        "the POST may have been processed: never sent twice"
    );
    // A GET with a body is not resent either.
    assert_eq!(get(veer.http_addr, "/warm2", &[]).await.status, 200);
    let req = http::Request::get(format!("http://{}/with-body", veer.http_addr))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"q")))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 502);
    let gets = up
        .seen()
        .iter()
        .filter(|l| l.starts_with("GET /with-body"))
        .count();
    assert_eq!(gets, 1);
}

#[tokio::test]
async fn a_kept_connection_idle_past_upstream_idle_timeout_is_closed() {
    let up = Racing::start().await;
    let config = format!(
        "[proxy]\nupstream_idle_timeout = \"200ms\"\n\n{}",
        one_pool(up.addr)
    );
    let veer = start_veer(&config).await;
    assert_eq!(get(veer.http_addr, "/", &[]).await.status, 200);
    // The upstream would wait `IO_TIMEOUT` for another request; veer closes the kept one first.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while up.closed_by_veer.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the idle connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_or_repeated_host_is_400_and_never_forwarded() {
    let up = common::Upstream::named("app").await;
    let veer = start_veer(&one_pool(up.addr)).await;
    let cases = [
        "GET / HTTP/1.1\r\nconnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a.example\r\nhost: b.example\r\nconnection: close\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nconnection: close\r\n\r\n",
    ];
    for request in cases {
        let got = raw_exchange(veer.http_addr, request.as_bytes()).await;
        assert!(got.starts_with("HTTP/1.1 400"), "{request:?} -> {got}");
    }
    assert_eq!(up.hits(), 0, "none of them reached the upstream");
    // HTTP/1.0 may leave Host out; one Host is fine.
    let ok = raw_exchange(veer.http_addr, b"GET / HTTP/1.0\r\n\r\n").await;
    assert!(
        ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"),
        "{ok}"
    );
    let ok = raw_exchange(
        veer.http_addr,
        b"GET / HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(up.hits(), 2);
}

/// One admin request with the given extra headers (and `Host` as the client would send it
/// unless overridden); its status.
async fn admin_status(
    admin: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> u16 {
    let mut req = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("host: {admin}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    let got = raw_exchange(admin, req.as_bytes()).await;
    got.get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {got:?}"))
}

fn with_admin(up: SocketAddr, admin: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{admin}\n{}",
        one_pool(up)
    )
}

#[tokio::test]
async fn a_tokenless_admin_listener_answers_only_its_own_host() {
    let up = common::Upstream::named("app").await;
    let veer = start_veer(&with_admin(up.addr, "")).await;
    let admin = veer.admin_addr.unwrap();
    let port = admin.port();
    let own = [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
    ];
    for host in &own {
        let status = admin_status(admin, "GET", "/api/v1/routes", &[("host", host)], "").await;
        assert_eq!(status, 200, "Host {host}");
    }
    let foreign = [
        format!("rebound.example:{port}"),
        format!("127.0.0.1:{}", port.wrapping_add(1)),
        "10.0.0.1".to_string(),
    ];
    for host in &foreign {
        let status = admin_status(admin, "GET", "/api/v1/routes", &[("host", host)], "").await;
        assert_eq!(status, 403, "Host {host}");
        let status = admin_status(admin, "GET", "/metrics", &[("host", host)], "").await;
        assert_eq!(status, 403, "Host {host} on /metrics");
    }
    // A rebound name cannot change anything either; probes answer any Host.
    let split = r#"{"app": 1}"#;
    let host = format!("rebound.example:{port}");
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/json"),
    ];
    let status = admin_status(admin, "PUT", "/api/v1/routes/web/split", &headers, split).await;
    assert_eq!(status, 403);
    assert_eq!(veer.control.version(), 1, "nothing was applied");
    let status = admin_status(admin, "GET", "/healthz", &[("host", &host)], "").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_foreign_origin_is_403_and_changes_nothing_even_with_the_token() {
    let up = common::Upstream::named("app").await;
    let veer = start_veer(&with_admin(up.addr, "token = \"s3cret\"")).await;
    let admin = veer.admin_addr.unwrap();
    let split = r#"{"app": 1}"#;
    let path = "/api/v1/routes/web/split";
    let auth = ("authorization", "Bearer s3cret");
    let json = ("content-type", "application/json");
    for origin in ["http://evil.example", "null", "http://127.0.0.1:1"] {
        let headers = [auth, json, ("origin", origin)];
        let status = admin_status(admin, "PUT", path, &headers, split).await;
        assert_eq!(status, 403, "Origin {origin}");
    }
    assert_eq!(veer.control.version(), 1, "nothing was applied");
    // The listener's own origin (a page it serves) works, as does no Origin at all.
    let own = format!("http://{admin}");
    let headers = [auth, json, ("origin", own.as_str())];
    assert_eq!(admin_status(admin, "PUT", path, &headers, split).await, 200);
    assert_eq!(
        admin_status(admin, "PUT", path, &[auth, json], split).await,
        200
    );
    // With a token, the Host is not restricted: the token is what admits.
    let headers = [auth, ("host", "admin.internal:9901")];
    assert_eq!(
        admin_status(admin, "GET", "/api/v1/routes", &headers, "").await,
        200
    );
}
