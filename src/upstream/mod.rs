//! Connections to servers: opening them (with `connect_timeout`), keeping HTTP/1.1 keep-alive
//! connections for reuse, and the body type sent upstream. Knows nothing of routes or pools'
//! weights: the proxy says which server, this room says how to reach it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::route::table::Target;

/// A connection's request side.
pub type Sender = http1::SendRequest<ReqBody>;

/// Idle keep-alive connections kept per server; more are closed when they come back.
const IDLE_PER_SERVER: usize = 256;

/// Why a connection could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {target} timed out after {after:?}")]
    Timeout { target: String, after: Duration },
    #[error("connect to {target}: {source}")]
    Io { target: String, source: io::Error },
    #[error("HTTP/1.1 handshake with {target}: {source}")]
    Handshake {
        target: String,
        source: hyper::Error,
    },
}

/// Keep-alive connections ready for the next request: lock-free, first in first out, so every
/// connection is used and none sits idle until the server times it out.
#[derive(Debug)]
pub struct IdleConns {
    queue: ArrayQueue<Sender>,
}

impl Default for IdleConns {
    fn default() -> Self {
        Self {
            queue: ArrayQueue::new(IDLE_PER_SERVER),
        }
    }
}

impl IdleConns {
    /// An open idle connection that can take a request now, if one is kept. A connection
    /// still busy (its last request body still streaming after an early response) is put back
    /// rather than waited on: waiting would stall this request behind another client's upload.
    pub fn take_ready(&self) -> Option<Sender> {
        for _ in 0..self.queue.capacity() {
            let sender = self.queue.pop()?;
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                return Some(sender);
            }
            if self.queue.push(sender).is_err() {
                return None;
            }
        }
        None
    }

    /// Keeps a connection whose last exchange finished; a closed one, or one over the cap, is
    /// dropped (which closes it).
    pub fn give(&self, sender: Sender) {
        if !sender.is_closed() {
            let _ = self.queue.push(sender);
        }
    }
}

/// Opens a new HTTP/1.1 connection to `target`. `upgrades`: the connection may be taken over by
/// an `Upgrade` (WebSocket) exchange; such a connection is never pooled.
pub async fn connect(
    target: &Target,
    timeout: Duration,
    upgrades: bool,
) -> Result<Sender, ConnectError> {
    let stream = match tokio::time::timeout(timeout, open(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(source)) => {
            return Err(ConnectError::Io {
                target: target.to_string(),
                source,
            })
        }
        Err(_) => {
            return Err(ConnectError::Timeout {
                target: target.to_string(),
                after: timeout,
            })
        }
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ConnectError::Handshake {
            target: target.to_string(),
            source,
        })?;
    if upgrades {
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
    } else {
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
    }
    Ok(sender)
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

/// The body of a request sent upstream: the client's body, streamed as it arrives, or nothing.
#[derive(Debug)]
pub enum ReqBody {
    Empty,
    Incoming(Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Incoming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Incoming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Incoming(body) => body.size_hint(),
        }
    }
}
