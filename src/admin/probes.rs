//! The probes, the metrics page and the dashboard: `/healthz` (alive), `/readyz` (serving; 503
//! while the proxy drains), `/metrics` (Prometheus text) and `/` (the dashboard's page, which
//! then reads the JSON API itself). None needs a token; none holds state data.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use super::wire::{AdminBody, ApiError};
use super::Admin;

/// The answer for a probe path, or `None` when `path` is not one (the API's, then).
pub fn handle(admin: &Admin, method: &Method, path: &str) -> Option<Response<AdminBody>> {
    let reading = *method == Method::GET || *method == Method::HEAD;
    let resp = match path {
        "/" | "/healthz" | "/readyz" | "/metrics" if !reading => {
            ApiError::method_not_allowed("GET, HEAD").into_response()
        }
        "/" => super::dashboard::page(),
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/readyz" => {
            let draining = *admin.draining.borrow();
            if draining {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "draining\n".into(),
                )
            } else {
                text(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ready\n".into(),
                )
            }
        }
        "/metrics" => text(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            crate::metrics::render(&admin.control.state().snapshot()),
        ),
        _ => return None,
    };
    Some(resp)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
