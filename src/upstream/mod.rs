//! Connections to servers: opening them (`connect`, with `connect_timeout`), keeping HTTP/1.1
//! keep-alive connections for reuse (`pool`), and the body type sent upstream. Knows nothing of
//! routes, weights or health: the proxy says which server, this room says how to reach it.

pub mod connect;
pub mod pool;

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

pub use connect::{connect, ConnectError, Io, Scheme};

/// A connection's request side.
pub type Sender = http1::SendRequest<ReqBody>;

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
