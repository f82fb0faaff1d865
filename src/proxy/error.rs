//! Why a request was not proxied, classified by source, and the one map from failure to
//! status and short plain-text body.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::proxy::body::RespBody;
use crate::upstream::{h1, BodyError, ConnectError};

/// What a `CONNECT` is answered (`501`, over HTTP/1.1 and HTTP/2 alike).
pub const NO_CONNECT: &str = "CONNECT is not supported: veer is a reverse proxy\n";

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches the request")]
    NoRoute,
    #[error("no healthy server in the route's pools")]
    NoHealthyServer,
    #[error("connection limit reached")]
    OverCapacity,
    #[error("upstream unreachable: {0}")]
    Connect(#[from] ConnectError),
    #[error("upstream broke the protocol: {0}")]
    UpstreamProtocol(#[source] h1::Error),
    #[error("upstream sent no response head within {0:?}")]
    Timeout(Duration),
    #[error("client request body failed: {0}")]
    ClientBody(#[source] BodyError),
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyServer | ProxyError::OverCapacity => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Connect(_) | ProxyError::UpstreamProtocol(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::ClientBody(_) | ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    fn text(&self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no route\n",
            ProxyError::NoHealthyServer => "no healthy upstream\n",
            ProxyError::OverCapacity => "over capacity\n",
            ProxyError::Connect(_) | ProxyError::UpstreamProtocol(_) => "bad gateway\n",
            ProxyError::Timeout(_) => "gateway timeout\n",
            ProxyError::ClientBody(_) => "bad request\n",
            ProxyError::BadRequest(why) | ProxyError::NotImplemented(why) => why,
        }
    }

    /// The response a client gets: the status and a short plain-text body.
    pub fn to_response(&self) -> Response<RespBody> {
        let mut resp = Response::new(RespBody::fixed(Bytes::from_static(self.text().as_bytes())));
        *resp.status_mut() = self.status();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

/// Classifies an error from sending a request upstream: a failure of the body we were
/// streaming from the client is the client's; anything else is the upstream's.
pub fn from_send(err: h1::Error) -> ProxyError {
    match err {
        h1::Error::ClientBody(e) => ProxyError::ClientBody(e),
        other => ProxyError::UpstreamProtocol(other),
    }
}
