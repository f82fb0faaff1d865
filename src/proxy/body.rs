//! The response body veer sends to clients: a short fixed text (errors) or the upstream's body
//! streamed frame by frame. When an upstream body ends cleanly its connection goes back to the
//! server's idle pool (`upstream::h1`); dropped early, the connection is closed instead.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::conn::RequestGuard;
use crate::health::registry::InFlight;
use crate::proxy::access::AccessRecord;
use crate::upstream::h1::RespStream;
use crate::upstream::BodyError;

/// The in-flight count of a request on a server, held until its answer is sent.
#[derive(Debug)]
pub struct Lease {
    pub flight: InFlight,
    /// The server that answered: the decision's, or another after a connect-failure retry.
    pub server: crate::route::ServerId,
    /// The attempt that answered went out on a kept connection.
    pub reused: bool,
    /// When the response head arrived.
    pub answered: tokio::time::Instant,
}

#[derive(Debug)]
pub struct RespBody {
    kind: Kind,
    /// Holds the client connection's request count until the body is done.
    request: Option<RequestGuard>,
    /// The request's access log line, written once the body is done or dropped.
    access: Option<Box<AccessRecord>>,
}

#[derive(Debug)]
enum Kind {
    Fixed(Option<Bytes>),
    Upstream { body: RespStream, _lease: Lease },
}

impl RespBody {
    pub fn fixed(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Fixed(Some(bytes)),
            request: None,
            access: None,
        }
    }

    /// The upstream's body, which puts its connection back in the pool once read whole.
    pub fn upstream(body: RespStream, lease: Lease) -> Self {
        Self {
            kind: Kind::Upstream {
                body,
                _lease: lease,
            },
            request: None,
            access: None,
        }
    }

    /// The length of a fixed body (veer's own answers), whose head says none.
    pub fn fixed_len(&self) -> Option<usize> {
        match &self.kind {
            Kind::Fixed(bytes) => Some(bytes.as_ref().map_or(0, Bytes::len)),
            Kind::Upstream { .. } => None,
        }
    }

    pub fn with_guard(mut self, guard: RequestGuard) -> Self {
        self.request = Some(guard);
        self
    }

    /// Counts the bytes sent in `access` and writes its line when the body is done.
    pub fn with_access(mut self, access: Option<Box<AccessRecord>>) -> Self {
        self.access = access;
        self
    }

    /// Counts a frame's bytes for the access log; writes the line once the body is over.
    fn account(&mut self, frame: &Poll<Option<Result<Frame<Bytes>, BodyError>>>) {
        let Some(access) = self.access.as_mut() else {
            return;
        };
        match frame {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    access.sent(data.len());
                }
            }
            Poll::Ready(_) => self.access = None,
            Poll::Pending => {}
        }
    }
}

impl Body for RespBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let res = match &mut this.kind {
            Kind::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream { body, .. } => Pin::new(&mut *body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BodyError::from))),
        };
        this.account(&res);
        res
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Fixed(bytes) => bytes.is_none(),
            Kind::Upstream { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Fixed(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Fixed(None) => SizeHint::with_exact(0),
            Kind::Upstream { body, .. } => body.size_hint(),
        }
    }
}
