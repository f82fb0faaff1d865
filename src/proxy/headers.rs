//! Header rules for both directions: hop-by-hop removal (the fixed list and every name listed
//! in `Connection`), `x-forwarded-for` (appended), `x-forwarded-proto`, `x-forwarded-host`, and
//! `via`. Works in place on the parsed map; the only allocation is joining an existing
//! `x-forwarded-for` with the client's address.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri, Version};

use crate::conn::ConnContext;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the legacy ones).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_VEER_POOL: HeaderName = HeaderName::from_static("x-veer-pool");

/// An HTTP/1.1 request asking to switch protocols (`Connection: upgrade` and `Upgrade`).
pub fn is_upgrade(version: Version, headers: &HeaderMap) -> bool {
    version == Version::HTTP_11
        && headers.contains_key(header::UPGRADE)
        && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Removes hop-by-hop headers: the fixed list, `upgrade` unless the exchange is an upgrade,
/// and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most heads carry no hop-by-hop header at all: one pass over the names (equality of known
    // names is a tag comparison) finds that, where each removal costs a hash and a probe.
    let any = headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || (!keep_upgrade && name == header::UPGRADE));
    if !any {
        return;
    }
    let mut listed = headers.get_all(header::CONNECTION).iter();
    // Clones of the values are reference-counted views: no copy of the bytes.
    let first = listed.next().cloned();
    let rest_present = listed.next().is_some();
    if let Some(value) = first {
        remove_listed(headers, &value, keep_upgrade);
    }
    if rest_present {
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for value in values.iter().skip(1) {
            remove_listed(headers, value, keep_upgrade);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

fn remove_listed(headers: &mut HeaderMap, value: &HeaderValue, keep_upgrade: bool) {
    for token in value.as_bytes().split(|&b| b == b',') {
        let token = token.trim_ascii();
        // `Host` is end to end whatever a client lists; `upgrade` is kept for an upgrade.
        if token.is_empty()
            || token.eq_ignore_ascii_case(b"host")
            || (keep_upgrade && token.eq_ignore_ascii_case(b"upgrade"))
        {
            continue;
        }
        // Removing by `&str` looks the name up without building a `HeaderName`.
        if let Ok(name) = std::str::from_utf8(token) {
            headers.remove(name);
        }
    }
}

/// An authority's `host[:port]`, without the `user:password@` an absolute-form target may carry
/// (never a host, and never to be forwarded or logged).
pub fn host_of(authority: &http::uri::Authority) -> &str {
    let text = authority.as_str();
    text.rsplit_once('@').map_or(text, |(_, host)| host)
}

/// Turns a client's request head into the one sent upstream: HTTP/1.1, origin-form URI, `Host`
/// kept (taken from the authority for HTTP/2 clients), hop-by-hop removed, forwarding headers
/// added.
pub fn prepare_request(parts: &mut request::Parts, ctx: &ConnContext, upgrade: bool) {
    let via = match parts.version {
        Version::HTTP_2 => HeaderValue::from_static("2 veer"),
        Version::HTTP_10 => HeaderValue::from_static("1.0 veer"),
        _ => HeaderValue::from_static("1.1 veer"),
    };
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // An absolute-form or HTTP/2 request names its host in the URI: that is the one it was
    // routed on, so it is the one the upstream sees (RFC 9112 §3.2.2).
    if let Some(authority) = parts.uri.authority() {
        if let Ok(v) = HeaderValue::from_str(host_of(authority)) {
            headers.insert(header::HOST, v);
        }
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
    append_forwarded_for(headers, &ctx.peer_header);
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(ctx.scheme.as_str()),
    );
    headers.append(header::VIA, via);
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(origin);
    }
    parts.version = Version::HTTP_11;
}

/// `x-forwarded-for: <existing>, <client>`; every earlier value is kept in order. One lookup of
/// the name either way (`entry`), where a get and then an insert would hash it twice.
fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let mut existing = match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Vacant(slot) => {
            slot.insert(client.clone());
            return;
        }
        header::Entry::Occupied(existing) => existing,
    };
    let mut joined = bytes::BytesMut::with_capacity(existing.get().len() + client.len() + 24);
    for (i, value) in existing.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(client.as_bytes());
    // One allocation: the buffer becomes the header value without another copy.
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        existing.insert(value);
    }
}

/// Cleans an upstream's response head for the client. A `101 Switching Protocols` keeps its
/// `Connection: upgrade` and `Upgrade`.
pub fn prepare_response(headers: &mut HeaderMap, switching: bool) {
    strip_hop_by_hop(headers, switching);
    if switching {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    #[test]
    fn a_lone_hop_by_hop_header_is_removed_and_a_clean_head_is_left_as_it_is() {
        for (name, value) in [
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("keep-alive", "5"),
        ] {
            let mut h = map(&[("accept", "*/*"), (name, value), ("x-id", "7")]);
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(name), "{name} kept");
            assert_eq!(h.len(), 2, "{h:?}");
        }
        let mut h = map(&[("upgrade", "websocket")]);
        strip_hop_by_hop(&mut h, true);
        assert!(h.contains_key("upgrade"));
        let clean = map(&[("accept", "*/*"), ("x-id", "7"), ("x-id", "8")]);
        let mut h = clean.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, clean);
    }

    #[test]
    fn connection_listed_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Foo"),
            ("connection", "x-bar"),
            ("x-foo", "1"),
            ("x-bar", "2"),
            ("keep-alive", "timeout=5"),
            ("x-keep", "3"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec!["x-keep"]);
    }

    #[test]
    fn upgrade_is_kept_for_an_upgrade() {
        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        assert!(is_upgrade(Version::HTTP_11, &h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert!(!is_upgrade(Version::HTTP_2, &map(&[("upgrade", "h2c")])));
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        append_forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 2.2.2.2, 127.0.0.1"
        );
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(h.get("x-forwarded-for").unwrap(), "127.0.0.1");
    }
}
