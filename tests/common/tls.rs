//! Certificates made at test time (a throwaway CA issuing one certificate per name set), a
//! TLS client for veer's HTTPS listener (the handshake, what the server presented, and one
//! request over HTTP/1.1 or h2), and HTTPS-only upstreams, with or without client certificates.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{within, TempDir, IO_TIMEOUT};

/// A certificate authority that exists for one test.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// One issued certificate: its PEM files' contents and its DER, to recognise it.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &TempDir, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.write(&format!("{stem}.pem"), &self.cert_pem);
        let key = dir.write(&format!("{stem}.key"), &self.key_pem);
        (cert, key)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// The CA certificate as PEM (a trust anchor file).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for `names` (DNS subject alternative names), with a new key.
    pub fn issue(&self, names: &[&str]) -> Issued {
        self.issue_until(names, None)
    }

    /// As `issue`, valid until `not_after` when given.
    pub fn issue_until(&self, names: &[&str], not_after: Option<SystemTime>) -> Issued {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        if let Some(at) = not_after {
            params.not_after = at.into();
        }
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// A client trusting this CA only, offering `alpn`, never resuming a session.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Every handshake a full one, so that each shows the certificate served now (a resumed
        // session keeps the certificate of the handshake it resumes).
        config.resumption = rustls::client::Resumption::disabled();
        TlsConnector::from(Arc::new(config))
    }
}

/// A finished TLS handshake with `addr`, asking for `sni`.
pub async fn tls_connect(
    addr: SocketAddr,
    client: &TlsConnector,
    sni: &str,
) -> TlsStream<TcpStream> {
    let name = ServerName::try_from(sni.to_string()).unwrap();
    within(IO_TIMEOUT, "TLS handshake", async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        client.connect(name, tcp).await
    })
    .await
    .unwrap_or_else(|e| panic!("TLS handshake with {addr} as {sni}: {e}"))
}

/// The certificate the server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// The protocol ALPN settled on.
pub fn alpn(stream: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// A request sender over an established TLS stream, HTTP/1.1 or h2.
pub enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    pub async fn new(stream: TlsStream<TcpStream>, h2: bool) -> Sender {
        let io = TokioIo::new(stream);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Sender::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Sender::H1(send)
        }
    }

    /// `GET path` with `Host: host`: the status, the response headers and the body.
    pub async fn get(&mut self, host: &str, path: &str) -> (u16, http::HeaderMap, String) {
        let uri = format!("https://{host}{path}");
        within(IO_TIMEOUT, "HTTPS exchange", async {
            let resp = match self {
                Sender::H1(s) => {
                    let req = Request::get(path)
                        .header("host", host)
                        .body(Empty::new())
                        .unwrap();
                    s.send_request(req).await.unwrap()
                }
                Sender::H2(s) => {
                    let req = Request::get(uri).body(Empty::new()).unwrap();
                    s.send_request(req).await.unwrap()
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, headers, String::from_utf8_lossy(&body).into_owned())
        })
        .await
    }
}

/// An HTTPS-only upstream answering `<name>\n` with a certificate from `ca` for `names`; with
/// `clients`, it demands a client certificate issued by that CA. Counts requests it answered.
pub async fn tls_upstream(
    name: &'static str,
    ca: &Ca,
    names: &[&str],
    clients: Option<&Ca>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let issued = ca.issue(names);
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(clients.cert.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(vec![issued.der], key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let hits = Arc::clone(&counted);
            tokio::spawn(async move {
                let Ok(Ok(stream)) = tokio::time::timeout(IO_TIMEOUT, acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        async move {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from(format!("{name}\n"))),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, hits)
}
