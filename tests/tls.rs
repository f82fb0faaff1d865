//! HTTPS on `listen.https`: TLS over HTTP/1.1 and h2 through veer, SNI choosing among
//! certificates, certificates swapped by a reload (SIGHUP's path and the API) while old
//! connections keep theirs, bad files refused with the old certificates kept, and handshakes
//! that fail or never finish costing only their own connection. Certificates are made at test
//! time by a throwaway CA.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::tls::{alpn, presented, tls_connect, Ca, Sender};
use common::{closes_within, Api, TempDir, Upstream, IO_TIMEOUT};
use tokio::io::AsyncWriteExt;
use veer::reload::Source;

/// A config serving `app` on HTTPS with `certs` (cert and key files), then `extra`.
fn config(app: &Upstream, certs: &[(&Path, &Path)], extra: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| {
            format!(
                "{{ cert = {:?}, key = {:?} }}",
                c.display().to_string(),
                k.display().to_string()
            )
        })
        .collect();
    format!(
        "[listen]\nhttp = \"127.0.0.1:0\"\nhttps = \"127.0.0.1:0\"\n\n[tls]\ncertificates = [{}]\n\n{extra}\n\n\
         [pools.app]\nservers = [\"{}\"]\n\n[[routes]]\nname = \"web\"\nsplit = {{ app = 1 }}\n",
        list.join(", "),
        app.addr
    )
}

/// veer started in-process from the config file `path`.
async fn start(path: &Path) -> veer::run::Running {
    let compiled = veer::config::load(path).unwrap_or_else(|e| panic!("{e}"));
    veer::run::start(compiled).await.expect("veer starts")
}

/// What SIGHUP does: read `path` again and hand it to the change path.
async fn sighup(running: &veer::run::Running, path: &Path) -> bool {
    let settings = running.control.effective().0.settings;
    veer::reload::reload(path, &settings, &running.control, Source::Sighup).await
}

#[tokio::test]
async fn https_over_http1_and_h2_with_alpn_and_forwarded_proto() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-basic");
    let ca = Ca::new("test ca");
    let site = ca.issue(&["app.test"]);
    let (cert, key) = site.write(&dir, "app");
    let path = dir.write("veer.toml", &config(&app, &[(&cert, &key)], ""));
    let veer = start(&path).await;
    let https = veer.https_addr.expect("an HTTPS address");

    for (proto, h2) in [(&b"http/1.1"[..], false), (&b"h2"[..], true)] {
        let stream = tls_connect(https, &ca.client(&[proto]), "app.test").await;
        assert_eq!(alpn(&stream).as_deref(), Some(proto), "ALPN");
        assert_eq!(presented(&stream), site.der);
        let mut send = Sender::new(stream, h2).await;
        let (status, _, body) = send.get("app.test", "/hello").await;
        assert_eq!((status, body.as_str()), (200, "app\n"), "h2: {h2}");
        let headers = app.headers();
        assert_eq!(headers["x-forwarded-proto"], "https", "h2: {h2}");
    }
    // Plain HTTP on the other listener still says http.
    let got = common::get(veer.http_addr, "/", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(app.headers()["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn sni_picks_the_certificate_for_each_name() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-sni");
    let ca = Ca::new("test ca");
    let first = ca.issue(&["one.test"]);
    let second = ca.issue(&["two.test", "*.two.test"]);
    let (c1, k1) = first.write(&dir, "one");
    let (c2, k2) = second.write(&dir, "two");
    let path = dir.write("veer.toml", &config(&app, &[(&c1, &k1), (&c2, &k2)], ""));
    let veer = start(&path).await;
    let https = veer.https_addr.unwrap();
    let client = ca.client(&[b"http/1.1"]);

    let one = tls_connect(https, &client, "one.test").await;
    assert_eq!(presented(&one), first.der, "one.test");
    let two = tls_connect(https, &client, "two.test").await;
    assert_eq!(presented(&two), second.der, "two.test");
    let wild = tls_connect(https, &client, "www.two.test").await;
    assert_eq!(presented(&wild), second.der, "www.two.test by the wildcard");
    let mut send = Sender::new(wild, false).await;
    assert_eq!(send.get("www.two.test", "/").await.0, 200);
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_an_old_connection_keeps_working() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-reload");
    let ca = Ca::new("test ca");
    let old = ca.issue(&["app.test"]);
    let (cert, key) = old.write(&dir, "app");
    let path = dir.write("veer.toml", &config(&app, &[(&cert, &key)], ""));
    let veer = start(&path).await;
    let https = veer.https_addr.unwrap();
    let client = ca.client(&[b"http/1.1"]);

    let before = tls_connect(https, &client, "app.test").await;
    assert_eq!(presented(&before), old.der);
    let mut kept = Sender::new(before, false).await;
    assert_eq!(kept.get("app.test", "/").await.0, 200);

    // The files are renewed in place; the config text is the same.
    let new = ca.issue(&["app.test"]);
    new.write(&dir, "app");
    assert!(sighup(&veer, &path).await, "the reload is accepted");

    let after = tls_connect(https, &client, "app.test").await;
    assert_eq!(
        presented(&after),
        new.der,
        "a new handshake gets the new certificate"
    );
    let (status, _, body) = kept.get("app.test", "/again").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "app\n"),
        "the old connection still serves"
    );
}

#[tokio::test]
async fn a_bad_or_mismatched_file_on_reload_keeps_the_old_certificate() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-bad-reload");
    let ca = Ca::new("test ca");
    let good = ca.issue(&["app.test"]);
    let (cert, key) = good.write(&dir, "app");
    let path = dir.write(
        "veer.toml",
        &config(
            &app,
            &[(&cert, &key)],
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
        ),
    );
    let veer = start(&path).await;
    let https = veer.https_addr.unwrap();
    let client = ca.client(&[b"http/1.1"]);
    let raw = || veer::config::load(&path).unwrap().raw;

    // Not a certificate at all.
    std::fs::write(&cert, "this is not PEM\n").unwrap();
    assert!(
        !sighup(&veer, &path).await,
        "a garbage certificate is refused"
    );
    let err = veer.control.reload(raw()).unwrap_err().to_string();
    assert!(
        err.contains(&cert.display().to_string()),
        "names the file: {err}"
    );
    assert!(
        err.contains("tls.certificates[0].cert"),
        "names the field: {err}"
    );
    let stream = tls_connect(https, &client, "app.test").await;
    assert_eq!(presented(&stream), good.der, "the old certificate stays");

    // Another certificate with the old key: they do not match.
    let other = ca.issue(&["app.test"]);
    std::fs::write(&cert, &other.cert_pem).unwrap();
    assert!(!sighup(&veer, &path).await, "a mismatched key is refused");
    let err = veer.control.reload(raw()).unwrap_err().to_string();
    assert!(err.contains("does not match"), "says why: {err}");
    assert!(
        err.contains(&key.display().to_string()),
        "names the key file: {err}"
    );

    // The API's replace reads the files too: 422, nothing applied.
    let api = Api::new(&veer, None);
    let text = std::fs::read_to_string(&path).unwrap();
    let answer = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/toml")],
            text.clone(),
        )
        .await;
    assert_eq!(answer.status, 422, "{}", answer.text);
    assert!(answer.text.contains("does not match"), "{}", answer.text);
    let stream = tls_connect(https, &client, "app.test").await;
    assert_eq!(presented(&stream), good.der, "the old certificate stays");

    // Fixed files: the API's replace takes them up.
    std::fs::write(&key, &other.key_pem).unwrap();
    let answer = api
        .call(
            "PUT",
            "/api/v1/config",
            &[("content-type", "application/toml")],
            text,
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    let stream = tls_connect(https, &client, "app.test").await;
    assert_eq!(
        presented(&stream),
        other.der,
        "the API's replace loads the new files"
    );
}

#[tokio::test]
async fn a_failed_or_unfinished_handshake_costs_only_its_connection() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-handshake");
    let ca = Ca::new("test ca");
    let site = ca.issue(&["app.test"]);
    let (cert, key) = site.write(&dir, "app");
    let extra = "[proxy]\nheader_read_timeout = \"300ms\"\n";
    let path = dir.write("veer.toml", &config(&app, &[(&cert, &key)], extra));
    let veer = start(&path).await;
    let https = veer.https_addr.unwrap();

    // A client that never starts a handshake is cut off by the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(https).await.unwrap();
    // One that sends plain HTTP to the HTTPS port fails the handshake.
    let mut plain = tokio::net::TcpStream::connect(https).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // A client that does not trust veer's certificate gives up.
    let stranger = Ca::new("another ca").client(&[b"http/1.1"]);
    let tcp = tokio::net::TcpStream::connect(https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
    assert!(
        stranger.connect(name, tcp).await.is_err(),
        "an untrusted certificate fails"
    );

    // Meanwhile others are served.
    let stream = tls_connect(https, &ca.client(&[b"h2"]), "app.test").await;
    let mut send = Sender::new(stream, true).await;
    assert_eq!(send.get("app.test", "/").await.0, 200);
    assert!(
        closes_within(&mut plain, IO_TIMEOUT).await,
        "the plain-text client is closed"
    );
    assert!(
        closes_within(&mut silent, IO_TIMEOUT).await,
        "the silent client is closed"
    );
    let stream = tls_connect(https, &ca.client(&[b"http/1.1"]), "app.test").await;
    let mut send = Sender::new(stream, false).await;
    assert_eq!(send.get("app.test", "/").await.0, 200);
}

#[tokio::test]
async fn check_validates_certificate_files_and_warns_of_expiry() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-check");
    let ca = Ca::new("test ca");
    let check = |path: std::path::PathBuf| async move {
        let mut cmd = common::veer_cmd();
        cmd.args(["check", "--config"]).arg(&path);
        let out = tokio::task::spawn_blocking(move || common::output_within(&mut cmd, IO_TIMEOUT))
            .await
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    // Expiring in ten days: valid, with a warning naming the file.
    let soon = SystemTime::now() + Duration::from_secs(10 * 86_400);
    let (cert, key) = ca
        .issue_until(&["app.test"], Some(soon))
        .write(&dir, "soon");
    let path = dir.write("soon.toml", &config(&app, &[(&cert, &key)], ""));
    let (code, text) = check(path).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("warning") && text.contains("expires in"),
        "{text}"
    );
    assert!(text.contains(&cert.display().to_string()), "{text}");

    // A year ahead: no warning.
    let later = SystemTime::now() + Duration::from_secs(365 * 86_400);
    let (cert, key) = ca
        .issue_until(&["app.test"], Some(later))
        .write(&dir, "later");
    let path = dir.write("later.toml", &config(&app, &[(&cert, &key)], ""));
    let (code, text) = check(path).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");

    // A missing file, and a key that belongs to another certificate: exit 2, each named.
    let missing = dir.join("missing.pem");
    let (other_cert, _) = ca.issue(&["app.test"]).write(&dir, "other");
    let path = dir.write(
        "bad.toml",
        &config(&app, &[(&missing, &key), (&other_cert, &key)], ""),
    );
    let (code, text) = check(path).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("tls.certificates[1].key") && text.contains("does not match"),
        "{text}"
    );
}

/// Where a child veer logged that it serves HTTPS.
fn https_logged(veer: &common::VeerProcess) -> std::net::SocketAddr {
    veer.seen()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .find(|v| v["fields"]["message"] == "HTTPS listening")
        .and_then(|v| v["fields"]["addr"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or_else(|| panic!("no HTTPS address logged:\n{}", veer.seen().join("\n")))
}

#[tokio::test]
async fn the_https_socket_travels_with_an_upgrade() {
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-upgrade");
    let ca = Ca::new("test ca");
    let site = ca.issue(&["app.test"]);
    let (cert, key) = site.write(&dir, "app");
    let text = config(&app, &[(&cert, &key)], "[log]\nformat = \"json\"\n").replace(
        "https = \"127.0.0.1:0\"\n",
        &format!(
            "https = \"127.0.0.1:0\"\nupgrade_socket = \"{}\"\n",
            dir.join("upgrade.sock").display()
        ),
    );
    let path = dir.write("veer.toml", &text);
    let mut old = common::VeerProcess::start(&path).await;
    let https = https_logged(&old);
    let client = ca.client(&[b"http/1.1"]);
    let stream = tls_connect(https, &client, "app.test").await;
    assert_eq!(
        Sender::new(stream, false)
            .await
            .get("app.test", "/")
            .await
            .0,
        200
    );

    let mut cmd = common::veer_cmd();
    cmd.args(["run", "--upgrade", "--config"]).arg(&path);
    let mut new = common::VeerProcess::start_cmd(cmd).await;
    assert_eq!(old.exit_within(IO_TIMEOUT).await.code(), Some(0));
    // Port 0 was asked for: the same port can only be the old process's socket.
    assert_eq!(https_logged(&new), https);
    let stream = tls_connect(https, &client, "app.test").await;
    let (status, _, body) = Sender::new(stream, false).await.get("app.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "app\n"));
    new.signal("-TERM");
    assert_eq!(new.exit_within(IO_TIMEOUT).await.code(), Some(0));
}

/// A pool `name` of `server` with `tls` (inline TOML, or none), routed at `/name`.
fn tls_pool(name: &str, server: std::net::SocketAddr, tls: Option<String>) -> String {
    let tls = tls.map(|t| format!("tls = {t}\n")).unwrap_or_default();
    format!(
        "[pools.{name}]\nservers = [\"{server}\"]\n{tls}\n[[routes]]\nname = \"{name}\"\n\
         path_prefix = \"/{name}\"\nsplit = {{ {name} = 1 }}\n\n"
    )
}

fn path_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[tokio::test]
async fn an_upstream_demanding_a_client_certificate_accepts_veers_and_refuses_a_pool_without() {
    let dir = TempDir::new("tls-mtls");
    let servers = Ca::new("server ca");
    let clients = Ca::new("client ca");
    let (upstream, hits) =
        common::tls::tls_upstream("secure", &servers, &["app.internal"], Some(&clients)).await;
    let ca = dir.write("ca.pem", &servers.pem());
    let (cert, key) = clients.issue(&["veer.internal"]).write(&dir, "client");
    let with = format!(
        "{{ sni = \"app.internal\", ca = {}, cert = {}, key = {} }}",
        path_str(&ca),
        path_str(&cert),
        path_str(&key)
    );
    let without = format!("{{ sni = \"app.internal\", ca = {} }}", path_str(&ca));
    let text = format!(
        "{}{}",
        tls_pool("signed", upstream, Some(with)),
        tls_pool("unsigned", upstream, Some(without))
    );
    let veer = common::start_veer(&text).await;

    let got = common::get(veer.http_addr, "/signed", &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "secure\n"),
        "mTLS"
    );
    let answered = hits.load(std::sync::atomic::Ordering::SeqCst);
    let got = common::get(veer.http_addr, "/unsigned", &[]).await;
    assert_eq!(got.status, 502, "no client certificate: {}", got.body);
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        answered,
        "the upstream answered nothing without a client certificate"
    );
}

#[tokio::test]
async fn a_wrong_ca_is_a_502_with_a_log_line_naming_pool_server_and_reason() {
    let dir = TempDir::new("tls-wrong-ca");
    let servers = Ca::new("server ca");
    let (upstream, hits) =
        common::tls::tls_upstream("secure", &servers, &["app.internal"], None).await;
    let right = dir.write("right.pem", &servers.pem());
    let wrong = dir.write("wrong.pem", &Ca::new("another ca").pem());
    let text = format!(
        "{}{}",
        tls_pool(
            "good",
            upstream,
            Some(format!(
                "{{ sni = \"app.internal\", ca = {} }}",
                path_str(&right)
            ))
        ),
        tls_pool(
            "bad",
            upstream,
            Some(format!(
                "{{ sni = \"app.internal\", ca = {} }}",
                path_str(&wrong)
            ))
        ),
    );
    let path = dir.write("veer.toml", &common::child_toml("", &text));
    let mut veer = common::VeerProcess::start(&path).await;

    let got = common::get(veer.http(), "/good", &[]).await;
    assert_eq!(
        (got.status.as_u16(), got.body.as_str()),
        (200, "secure\n"),
        "the right CA"
    );
    let got = common::get(veer.http(), "/bad", &[]).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let server = upstream.to_string();
    let line = veer
        .log_line(IO_TIMEOUT, |l| l.contains("upstream TLS failed"))
        .await
        .unwrap_or_else(|| panic!("no TLS failure logged:\n{}", veer.seen().join("\n")));
    assert!(line.contains("\"pool\":\"bad\""), "{line}");
    assert!(line.contains(&server), "{line}");
    assert!(line.contains("UnknownIssuer"), "the reason: {line}");
}

#[tokio::test]
async fn a_pool_gaining_tls_by_sighup_reaches_a_tls_only_upstream() {
    let dir = TempDir::new("tls-gain");
    let servers = Ca::new("server ca");
    let (upstream, _) =
        common::tls::tls_upstream("secure", &servers, &["app.internal"], None).await;
    let ca = dir.write("ca.pem", &servers.pem());
    let plain = common::child_toml("", &tls_pool("app", upstream, None));
    let path = dir.write("veer.toml", &plain);
    let veer = common::VeerProcess::start(&path).await;
    let got = common::get(veer.http(), "/app", &[]).await;
    assert_eq!(
        got.status, 502,
        "plain text to a TLS-only upstream: {}",
        got.body
    );

    let tls = format!("{{ sni = \"app.internal\", ca = {} }}", path_str(&ca));
    let text = common::child_toml("", &tls_pool("app", upstream, Some(tls)));
    std::fs::write(&path, text).unwrap();
    veer.signal("-HUP");
    common::eventually(IO_TIMEOUT, "the reloaded pool speaks TLS", || async {
        let got = common::get(veer.http(), "/app", &[]).await;
        got.status == 200 && got.body == "secure\n"
    })
    .await;
}

#[tokio::test]
async fn a_kept_plain_connection_is_never_reused_once_the_pool_asks_for_tls() {
    let dir = TempDir::new("tls-no-reuse");
    let plain_app = Upstream::named("plain").await;
    let ca = dir.write("ca.pem", &Ca::new("server ca").pem());
    let text = |tls: Option<String>| {
        format!(
            "[listen]\nhttp = \"127.0.0.1:0\"\n\n{}",
            tls_pool("app", plain_app.addr, tls)
        )
    };
    let path = dir.write("veer.toml", &text(None));
    let veer = start(&path).await;
    let got = common::get(veer.http_addr, "/app", &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(plain_app.connections(), 1, "one connection, now kept idle");

    let tls = format!("{{ sni = \"app.internal\", ca = {} }}", path_str(&ca));
    std::fs::write(&path, text(Some(tls))).unwrap();
    assert!(sighup(&veer, &path).await, "the reload is accepted");
    let got = common::get(veer.http_addr, "/app", &[]).await;
    assert_eq!(
        got.status, 502,
        "TLS is asked for and the server speaks plain text: {}",
        got.body
    );
    assert_eq!(
        plain_app.hits(),
        1,
        "no request went over the kept plain connection"
    );
}

#[tokio::test]
async fn active_health_checks_on_a_tls_pool_speak_tls() {
    let dir = TempDir::new("tls-health");
    let servers = Ca::new("server ca");
    let (upstream, hits) =
        common::tls::tls_upstream("secure", &servers, &["app.internal"], None).await;
    let ca = dir.write("ca.pem", &servers.pem());
    let tls = format!("{{ sni = \"app.internal\", ca = {} }}", path_str(&ca));
    let health = "[pools.app.health]\npath = \"/\"\ninterval = \"50ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1\n\n";
    let text = tls_pool("app", upstream, Some(tls))
        .replace("\n[[routes]]", &format!("\n{health}[[routes]]"));
    let veer = common::start_veer(&text).await;
    common::eventually(
        IO_TIMEOUT,
        "two health checks answered over TLS",
        || async { hits.load(std::sync::atomic::Ordering::SeqCst) >= 2 },
    )
    .await;
    let got = common::get(veer.http_addr, "/app", &[]).await;
    assert_eq!((got.status.as_u16(), got.body.as_str()), (200, "secure\n"));
}

#[tokio::test]
async fn an_https_connection_ends_with_close_notify() {
    // An HTTP/1.0 client over TLS, whose answer ends with the connection: only a close_notify
    // tells it the body is whole (a bare close could be a truncation).
    let app = Upstream::named("app").await;
    let dir = TempDir::new("tls-close");
    let ca = Ca::new("test ca");
    let site = ca.issue(&["app.test"]);
    let (cert, key) = site.write(&dir, "app");
    let path = dir.write("veer.toml", &config(&app, &[(&cert, &key)], ""));
    let veer = start(&path).await;
    let https = veer.https_addr.expect("an HTTPS address");
    let mut stream = tls_connect(https, &ca.client(&[b"http/1.1"]), "app.test").await;
    stream
        .write_all(b"GET / HTTP/1.0\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut got);
    let read = tokio::time::timeout(IO_TIMEOUT, read)
        .await
        .expect("the connection ends");
    let text = String::from_utf8_lossy(&got);
    assert!(read.is_ok(), "ended cleanly: {read:?} after {text:?}");
    assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
    assert!(text.ends_with("app\n"), "{text:?}");
}
