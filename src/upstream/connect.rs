//! Opening connections to servers (with `connect_timeout`) and the `Io` type that both sides of
//! the proxy carry: a client connection accepted by `server` and a server connection opened here
//! are the same kind of stream, whatever transport lies under it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::route::table::Target;
use crate::tls::UpstreamClient;
use crate::upstream::Conn;

/// A connection's byte stream. Every transport veer speaks is a variant here, so that the
/// accept loop, the proxy and the upstream side handle one type.
#[derive(Debug)]
pub enum Io {
    Tcp(TcpStream),
    /// TLS over TCP: a client's connection to `listen.https`, or one to a server of a pool
    /// with `tls`.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Io {
    /// The URI scheme a client used to reach veer over this stream (`x-forwarded-proto`).
    pub fn scheme(&self) -> Scheme {
        match self {
            Io::Tcp(_) => Scheme::Http,
            Io::Tls(_) => Scheme::Https,
        }
    }
}

/// How a client reached veer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Tcp(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {target} timed out after {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("connect to {target}: {source}")]
    Io { target: String, source: io::Error },
    #[error("TLS with {target}: {reason}")]
    Tls { target: String, reason: String },
}

impl ConnectError {
    /// A TLS failure (verification, handshake, unusable files), as opposed to the network.
    pub fn is_tls(&self) -> bool {
        matches!(self, ConnectError::Tls { .. })
    }
}

/// Opens a new HTTP/1.1 connection to `target`, over TLS when `tls` is set (a slot holding an
/// error fails: never plain text where TLS was asked for).
pub async fn connect(
    target: &Target,
    timeout: Duration,
    tls: Option<&Result<UpstreamClient, std::sync::Arc<str>>>,
) -> Result<Box<Conn>, ConnectError> {
    // Boxed: opening a connection (TCP, TLS) is a large future, and the futures that may open
    // one (a request's, a mirrored copy's task) are moved whole for every request, most of
    // which find a kept connection instead.
    Box::pin(open_connection(target, timeout, tls)).await
}

async fn open_connection(
    target: &Target,
    timeout: Duration,
    tls: Option<&Result<UpstreamClient, std::sync::Arc<str>>>,
) -> Result<Box<Conn>, ConnectError> {
    let opening = async {
        let tcp = open(target).await.map_err(|source| ConnectError::Io {
            target: target.to_string(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Io::Tcp(tcp)),
            Some(Err(reason)) => Err(ConnectError::Tls {
                target: target.to_string(),
                reason: reason.to_string(),
            }),
            Some(Ok(client)) => match client.connect(target, tcp).await {
                Ok(stream) => Ok(Io::Tls(Box::new(stream.into()))),
                Err(e) => Err(ConnectError::Tls {
                    target: target.to_string(),
                    reason: e.to_string(),
                }),
            },
        }
    };
    match tokio::time::timeout(timeout, opening).await {
        Ok(Ok(stream)) => Ok(Conn::new(stream)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Timeout {
            target: target.to_string(),
            after: timeout,
        }),
    }
}

async fn open(target: &Target) -> io::Result<TcpStream> {
    match target {
        Target::Addr(addr) => TcpStream::connect(addr).await,
        Target::Name { host, port } => TcpStream::connect((&**host, *port)).await,
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}
