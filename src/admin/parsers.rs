//! The admin API's request parsers as its endpoints call them, each answering what it parsed
//! or the status the client would get. For the fuzz targets and their corpus replay; the
//! server itself calls the functions behind these directly.

use http::{HeaderMap, StatusCode};
use indexmap::IndexMap;

use super::api;
use crate::config::RawConfig;

pub use super::wire::IfMatch;

/// `If-Match`: one version, `"<n>"` or `<n>`, or `*`.
pub fn if_match(headers: &HeaderMap) -> Result<IfMatch, StatusCode> {
    IfMatch::parse(headers).map_err(|e| e.status)
}

/// The body of `PUT /api/v1/routes/{route}/split`.
pub fn split_body(body: &[u8]) -> Result<IndexMap<String, u32>, StatusCode> {
    api::split_body(body).map_err(|e| e.status)
}

/// The body of `POST /api/v1/routes/{route}/promote`.
pub fn promote_body(body: &[u8]) -> Result<String, StatusCode> {
    api::promote_body(body).map_err(|e| e.status)
}

/// The body of `PUT /api/v1/config` with its media type: the config and the version it names.
pub fn config_body(
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(RawConfig, Option<u64>), StatusCode> {
    api::parse_config(body, content_type).map_err(|e| e.status)
}

/// A path segment's `%XX` escapes decoded; `None` when the result is not UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    api::percent_decode(segment)
}
