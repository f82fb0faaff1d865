//! Connections to servers: opening them (`connect`, with `connect_timeout`), speaking HTTP/1.1
//! on them (`h1`), keeping keep-alive connections for reuse (`pool`), and the body type sent
//! upstream. Knows nothing of routes, weights or health: the proxy says which server, this room
//! says how to reach it.

pub mod connect;
pub mod h1;
pub mod pool;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

pub use connect::{connect, ConnectError, Io, Scheme};
pub use h1::Conn;

/// The error a request body may end with: the client's connection failed, or a copy was
/// abandoned before its end.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a request sent upstream: the client's body, streamed as it arrives (and teed to
/// a shadow copy when the request is mirrored), the copy's body, or nothing.
#[derive(Debug)]
pub enum ReqBody {
    Empty,
    /// The client's body, streamed as it arrives.
    Client(crate::conn::ClientBody),
    /// The client's body, each chunk also handed to a mirrored copy.
    Teed(crate::mirror::Tee),
    /// A mirrored copy's body, fed by the primary's `Teed`.
    Copy(crate::mirror::CopyBody),
    /// Another body whose data bytes are counted as they pass (for the access log).
    Counted(Box<ReqBody>, std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::Client(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Teed(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Copy(body) => Pin::new(body).poll_frame(cx),
            ReqBody::Counted(body, count) => {
                let polled = Pin::new(&mut **body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(data) = frame.data_ref() {
                        count.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::Client(body) => body.is_end_stream(),
            ReqBody::Teed(body) => body.is_end_stream(),
            ReqBody::Copy(body) => body.is_end_stream(),
            ReqBody::Counted(body, _) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::Client(body) => body.size_hint(),
            ReqBody::Teed(body) => body.size_hint(),
            ReqBody::Copy(body) => body.size_hint(),
            ReqBody::Counted(body, _) => body.size_hint(),
        }
    }
}
