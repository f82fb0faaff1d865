//! The HTTP side of `veer ctl`: where the admin API is, and one request to it.

use std::fmt;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as Legacy;
use hyper_util::rt::TokioExecutor;

/// The most of a response body `veer ctl` reads.
const MAX_BODY: usize = 16 << 20;

/// The admin API's base address: `http://host:port` and an optional path prefix (for an admin
/// API behind another proxy). `host:port` alone means plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUrl {
    authority: String,
    /// Empty, or starts with `/` and has no trailing `/`.
    prefix: String,
}

impl AdminUrl {
    /// Parses `http://host:port[/prefix]` or `host:port`.
    pub fn parse(text: &str) -> Result<AdminUrl, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty address: expected a URL like http://127.0.0.1:9901".into());
        }
        let full = if text.contains("://") {
            text.to_string()
        } else {
            format!("http://{text}")
        };
        let uri: Uri = full.parse().map_err(|e| {
            format!("{text:?} is not a URL ({e}): expected e.g. http://127.0.0.1:9901")
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{text:?}: https is not supported by veer ctl; reach the admin API over \
                     plain HTTP (it binds loopback by default), e.g. through an SSH tunnel"
                ))
            }
            Some(other) => return Err(format!("{text:?}: unsupported scheme {other:?}; use http")),
            None => return Err(format!("{text:?} has no scheme; use http://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(format!(
                "{text:?} has no host: expected e.g. http://127.0.0.1:9901"
            ));
        };
        if authority.as_str().contains('@') {
            return Err(format!(
                "{text:?}: credentials in the URL are not used; pass --token"
            ));
        }
        if uri.query().is_some() {
            return Err(format!(
                "{text:?}: a query string has no place in the admin address"
            ));
        }
        let authority = match authority.port() {
            Some(_) => authority.to_string(),
            None => format!("{authority}:80"),
        };
        Ok(AdminUrl {
            authority,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn uri(&self, path: &str) -> Result<Uri, String> {
        format!("http://{}{}{}", self.authority, self.prefix, path)
            .parse()
            .map_err(|e| format!("cannot form a request URL for {path}: {e}"))
    }
}

impl fmt::Display for AdminUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

/// One path segment, percent-encoded: everything but RFC 3986 unreserved characters, so an
/// address's `:`, `[` and `]` (and a `/` in a name) travel as one segment.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What the admin API answered.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The version in `ETag: "<n>"`, when there is one.
    pub etag: Option<u64>,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub enum SendError {
    /// The request could not even be formed (a bad token, say): a usage matter.
    Request(String),
    /// No answer: connection refused, reset, a broken response.
    Unreachable(String),
}

/// A client for one admin API.
pub struct Client {
    http: Legacy<HttpConnector, Full<Bytes>>,
    pub admin: AdminUrl,
    token: Option<String>,
}

impl Client {
    pub fn new(admin: AdminUrl, token: Option<String>) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Client {
            http: Legacy::builder(TokioExecutor::new()).build(connector),
            admin,
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Sends `method path` with an optional JSON body and `If-Match`, and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        if_match: Option<u64>,
    ) -> Result<Answer, SendError> {
        let uri = self.admin.uri(path).map_err(SendError::Request)?;
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, concat!("veer-ctl/", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                SendError::Request(
                    "the token cannot be sent in an HTTP header (it holds control or non-ASCII characters)"
                        .into(),
                )
            })?;
            req = req.header(AUTHORIZATION, value);
        }
        if let Some(version) = if_match {
            req = req.header(IF_MATCH, format!("\"{version}\""));
        }
        let payload = match body {
            Some(json) => {
                req = req.header(CONTENT_TYPE, "application/json");
                Bytes::from(json.to_string())
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(payload))
            .map_err(|e| SendError::Request(format!("cannot form the request: {e}")))?;
        let resp = self
            .http
            .request(req)
            .await
            .map_err(|e| SendError::Unreachable(reason(&e)))?;
        let status = resp.status();
        let etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.trim()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .parse()
                    .ok()
            });
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| SendError::Unreachable(format!("the answer broke off: {e}")))?
            .to_bytes();
        Ok(Answer { status, etag, body })
    }
}

/// The useful part of a client error: its causes, innermost last, without hyper-util's
/// generic top line ("client error (Connect)").
fn reason(err: &hyper_util::client::legacy::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    if parts.is_empty() {
        return err.to_string();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_with_and_without_scheme() {
        let a = AdminUrl::parse("127.0.0.1:9901").unwrap();
        assert_eq!(a.to_string(), "http://127.0.0.1:9901");
        assert_eq!(AdminUrl::parse("http://127.0.0.1:9901/").unwrap(), a);
        assert_eq!(
            AdminUrl::parse("http://[::1]:9901").unwrap().to_string(),
            "http://[::1]:9901"
        );
        assert_eq!(
            AdminUrl::parse("http://admin.internal/veer/")
                .unwrap()
                .to_string(),
            "http://admin.internal:80/veer"
        );
        assert_eq!(
            a.uri("/api/v1/routes").unwrap().to_string(),
            "http://127.0.0.1:9901/api/v1/routes"
        );
        assert!(AdminUrl::parse("https://127.0.0.1:9901").is_err());
        assert!(AdminUrl::parse("ftp://x:1").is_err());
        assert!(AdminUrl::parse("").is_err());
        assert!(AdminUrl::parse("http://x:1/?a=b").is_err());
    }

    #[test]
    fn segments_encode_addresses() {
        assert_eq!(segment("10.0.0.1:8080"), "10.0.0.1%3A8080");
        assert_eq!(segment("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(segment("web-1_a.b~"), "web-1_a.b~");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
