//! The dashboard's page, `GET /` on the admin listener: one self-contained HTML file (inline
//! style and script, no external asset) that holds no data. In the browser it reads
//! `/api/v1/routes`, `/api/v1/pools` and `/api/v1/stats` every second, asking for the token on
//! a `401`, and sends its changes with `If-Match`. The page is served with a strict
//! content security policy: it may talk to its own origin and nothing else, and may not be
//! framed.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::wire::AdminBody;

/// The page's source; `@VEER_VERSION@` is replaced with this build's version.
const SOURCE: &str = include_str!("dashboard.html");

/// The page as served.
static PAGE: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(SOURCE.replace("@VEER_VERSION@", env!("CARGO_PKG_VERSION"))));

/// Inline script and style are the page's own; it fetches only from its origin (the admin
/// API), loads nothing else, and no other site may frame it (clickjacking the controls).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `200` with the page (hyper leaves the body out for `HEAD`).
pub(super) fn page() -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(PAGE.clone()));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}
