//! The wire side of the admin API: bearer-token auth, `If-Match`, size-limited request
//! bodies, and the error and JSON answers (SPEC.md's error body, `ETag`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::config::ConfigErrors;
use crate::control::ControlError;

/// The response body of every admin answer.
pub type AdminBody = Full<Bytes>;

/// The largest request body accepted (`413` beyond it).
pub(super) const MAX_BODY: usize = 1 << 20;
/// An over-long body is read and discarded up to this much, so that the `413` reaches the
/// client instead of a reset; beyond it the connection is closed.
const MAX_DISCARD: usize = 16 << 20;
/// A request body must arrive within this.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers `error` after discarding the request's body, so that the client reads the answer
/// rather than a reset; a body too long or too slow to discard closes the connection instead.
pub(super) async fn refuse(error: ApiError, body: Incoming) -> Response<AdminBody> {
    if body.size_hint().lower() > MAX_DISCARD as u64 {
        return error.closing().into_response();
    }
    let drained = tokio::time::timeout(BODY_TIMEOUT, discard(body))
        .await
        .unwrap_or(false);
    if drained {
        error.into_response()
    } else {
        error.closing().into_response()
    }
}

/// Reads and drops a body of at most `MAX_DISCARD` bytes; `false` when it is longer or fails.
async fn discard(mut body: Incoming) -> bool {
    let mut seen: usize = 0;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > MAX_DISCARD {
                return false;
            }
        }
    }
    true
}

/// The media type of the request, lower-case, without parameters.
pub(super) fn content_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next().unwrap_or("").trim();
    (!media.is_empty()).then(|| media.to_ascii_lowercase())
}

/// Reads a request body of at most `MAX_BODY` bytes. An over-long one is discarded (up to
/// `MAX_DISCARD`) before the `413`, so that the client reads the answer, not a reset.
pub(super) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    if body.size_hint().lower() > MAX_DISCARD as u64 {
        return Err(ApiError::too_large().closing());
    }
    match tokio::time::timeout(BODY_TIMEOUT, collect_limited(body)).await {
        Ok(result) => result,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )
        .closing()),
    }
}

async fn collect_limited(mut body: Incoming) -> Result<Bytes, ApiError> {
    let mut buf = BytesMut::new();
    let mut seen: usize = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request(format!("cannot read the request body: {e}")).closing()
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > MAX_DISCARD {
            return Err(ApiError::too_large().closing());
        }
        if seen > MAX_BODY {
            buf = BytesMut::new();
            continue;
        }
        buf.extend_from_slice(&data);
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buf.freeze())
}

/// `Authorization: Bearer <token>`, compared in constant time. No token configured: open.
pub(super) fn authorized(token: Option<&str>, headers: &HeaderMap) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|&b| b == b' ') else {
        return false;
    };
    let (scheme, rest) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return false;
    }
    let given = rest.trim_ascii();
    bool::from(given.ct_eq(token.as_bytes()))
}

/// A browser must not be a way in. A request carrying an `Origin` that is not this listener's
/// own (the scheme and the `Host` it was sent to) comes from another site's page: refused, so
/// that a page open in an operator's browser cannot drive the API. Without a token, the `Host`
/// must also name the listener (its address or `localhost`): a page whose name was rebound to
/// 127.0.0.1 (DNS rebinding) is same-origin with itself and would otherwise get in.
pub(super) fn browser_allowed(
    listen: SocketAddr,
    token: bool,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if !token && !host.is_some_and(|h| names_listener(h, listen)) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Host {:?} does not name this admin listener ({listen} or localhost); without a token only those are answered", host.unwrap_or("")),
        ));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let own = origin
        .to_str()
        .ok()
        .and_then(|o| {
            o.strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
        })
        .zip(host)
        .is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    if own {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "cross-origin request from {:?} refused",
                String::from_utf8_lossy(origin.as_bytes())
            ),
        ))
    }
}

/// `host` (a `Host` header) names the listener: `localhost` or the listener's IP, with the
/// listener's port or none.
fn names_listener(host: &str, listen: SocketAddr) -> bool {
    let Ok(authority) = host.parse::<http::uri::Authority>() else {
        return false;
    };
    if authority.port_u16().is_some_and(|p| p != listen.port()) {
        return false;
    }
    let name = authority.host();
    let ip = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip == listen.ip())
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfMatch {
    Absent,
    /// `*`: any version.
    Any,
    Version(u64),
}

impl IfMatch {
    /// `"<n>"`, `<n>` or `*`; anything else (a list included) is a `400`.
    pub(super) fn parse(headers: &HeaderMap) -> Result<Self, ApiError> {
        let mut values = headers.get_all(header::IF_MATCH).iter();
        let Some(value) = values.next() else {
            return Ok(IfMatch::Absent);
        };
        let malformed = || {
            ApiError::bad_request(
                "malformed If-Match: send one version, like If-Match: \"7\" (or *)",
            )
        };
        if values.next().is_some() {
            return Err(malformed());
        }
        let text = value.to_str().map_err(|_| malformed())?.trim();
        if text == "*" {
            return Ok(IfMatch::Any);
        }
        let digits = match text.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or_else(malformed)?,
            None => text,
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        digits
            .parse::<u64>()
            .map(IfMatch::Version)
            .map_err(|_| malformed())
    }

    pub(super) fn version(self) -> Option<u64> {
        match self {
            IfMatch::Version(v) => Some(v),
            IfMatch::Absent | IfMatch::Any => None,
        }
    }
}

/// A text made one line (for the `error` field and the log).
pub(super) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One validation error in a `422` body.
#[derive(Debug, Clone)]
pub(super) struct FieldError {
    pub(super) path: String,
    pub(super) message: String,
    /// `file:line:col`, for a TOML body.
    pub(super) location: Option<String>,
}

/// An error answer: status, one-line message, and what goes with it.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    pub(super) errors: Vec<FieldError>,
    pub(super) allow: Option<&'static str>,
    pub(super) etag: Option<u64>,
    pub(super) close: bool,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: Vec::new(),
            allow: None,
            etag: None,
            close: false,
        }
    }

    pub(super) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(super) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send Authorization: Bearer <token>",
        )
    }

    pub(super) fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method not allowed here; allowed: {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    pub(super) fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is over the limit of {MAX_BODY} bytes"),
        )
    }

    pub(super) fn invalid(message: impl Into<String>, errors: Vec<FieldError>) -> Self {
        let mut e = Self::new(StatusCode::UNPROCESSABLE_ENTITY, message);
        e.errors = errors;
        e
    }

    pub(super) fn invalid_config(errors: ConfigErrors) -> Self {
        let list: Vec<FieldError> = errors
            .0
            .iter()
            .map(|e| FieldError {
                path: e.path.clone(),
                message: e.message.clone(),
                location: e
                    .location
                    .as_ref()
                    .map(|l| format!("{}:{}:{}", l.file, l.line, l.col)),
            })
            .collect();
        let message = match errors.0.first() {
            Some(first) if list.len() > 1 => format!(
                "invalid change: {} (and {} more)",
                one_line(&first.to_string()),
                list.len() - 1
            ),
            Some(first) => format!("invalid change: {}", one_line(&first.to_string())),
            None => "invalid change".to_string(),
        };
        Self::invalid(message, list)
    }

    pub(super) fn from_control(e: ControlError, current: u64) -> Self {
        match e {
            ControlError::NotFound(m) => Self::not_found(m),
            e @ ControlError::Stale { .. } => {
                let mut out = Self::new(StatusCode::PRECONDITION_FAILED, e.to_string());
                out.etag = Some(current);
                out
            }
            ControlError::Invalid(errors) => Self::invalid_config(errors),
            e @ ControlError::HandedOver => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            e @ ControlError::Persist { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, one_line(&e.to_string()))
            }
        }
    }

    /// Closes the connection after the answer.
    pub(super) fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub(super) fn into_response(self) -> Response<AdminBody> {
        let mut body = json!({"error": one_line(&self.message)});
        if !self.errors.is_empty() {
            let list: Vec<Value> = self
                .errors
                .iter()
                .map(|e| {
                    let mut v = json!({"path": e.path, "message": e.message});
                    if let (Some(loc), Value::Object(map)) = (&e.location, &mut v) {
                        map.insert("location".into(), Value::String(loc.clone()));
                    }
                    v
                })
                .collect();
            if let Value::Object(map) = &mut body {
                map.insert("errors".into(), Value::Array(list));
            }
        }
        let mut resp = json_response(self.status, &body, self.etag);
        let headers = resp.headers_mut();
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.close {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A JSON answer, with `ETag: "<version>"` when given.
pub(super) fn json_response(
    status: StatusCode,
    value: &Value,
    etag: Option<u64>,
) -> Response<AdminBody> {
    let mut bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(version) = etag {
        if let Ok(v) = HeaderValue::try_from(format!("\"{version}\"")) {
            headers.insert(header::ETAG, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn if_match_forms() {
        let parse = |v: &str| IfMatch::parse(&headers(&[("if-match", v)])).ok();
        assert_eq!(
            IfMatch::parse(&HeaderMap::new()).ok(),
            Some(IfMatch::Absent)
        );
        assert_eq!(parse("\"7\""), Some(IfMatch::Version(7)));
        assert_eq!(parse("7"), Some(IfMatch::Version(7)));
        assert_eq!(parse(" \"12\" "), Some(IfMatch::Version(12)));
        assert_eq!(parse("*"), Some(IfMatch::Any));
        for bad in [
            "",
            "\"7",
            "7\"",
            "abc",
            "\"\"",
            "-1",
            "\"1\", \"2\"",
            "W/\"1\"",
            "+1",
            "99999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let two = headers(&[("if-match", "1"), ("if-match", "2")]);
        assert!(IfMatch::parse(&two).is_err());
    }

    #[test]
    fn bearer_tokens() {
        let ok = |v: &str| authorized(Some("s3cret"), &headers(&[("authorization", v)]));
        assert!(ok("Bearer s3cret"));
        assert!(ok("bearer  s3cret "));
        assert!(!ok("Bearer s3cre"));
        assert!(!ok("Bearer s3cret2"));
        assert!(!ok("Basic s3cret"));
        assert!(!ok("s3cret"));
        assert!(!authorized(Some("s3cret"), &HeaderMap::new()));
        assert!(authorized(None, &HeaderMap::new()));
    }
}
