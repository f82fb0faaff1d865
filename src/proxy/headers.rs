//! Header rules for both directions: hop-by-hop removal (the fixed list and every name listed
//! in `Connection`), `x-forwarded-for` (appended), `x-forwarded-proto`, `x-forwarded-host`, and
//! `via`. Works in place on the parsed map; the only allocation is joining an existing
//! `x-forwarded-for` with the client's address.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{request, Uri, Version};

use crate::conn::ConnContext;

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1, plus the legacy ones).
/// `Trailer` is not one (RFC 9110 §6.6.2): it names the trailer fields that follow the body,
/// and an HTTP/1.1 client gets those only when it is passed on.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRANSFER_ENCODING,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_VEER_POOL: HeaderName = HeaderName::from_static("x-veer-pool");

/// Removes hop-by-hop headers: the fixed list, `upgrade` unless the exchange is an upgrade,
/// and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One pass over the names (equality of known names is a tag comparison) finds which of the
    // fixed list are there: most heads carry none, or only `Connection`, and each removal costs
    // a hash and a probe. Bit i: HOP_BY_HOP[i]; the bit after them: `Upgrade`.
    let mut present = 0u16;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        } else if !keep_upgrade && name == header::UPGRADE {
            present |= 1 << HOP_BY_HOP.len();
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is `Connection`: the names it lists go too.
    if present & 1 != 0 {
        let mut listed = headers.get_all(header::CONNECTION).iter();
        // Clones of the values are reference-counted views: no copy of the bytes.
        let first = listed.next().cloned();
        let rest_present = listed.next().is_some();
        if let Some(value) = first {
            remove_listed(headers, &value);
        }
        if rest_present {
            let values: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            for value in values.iter().skip(1) {
                remove_listed(headers, value);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if present & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::UPGRADE);
    }
}

/// Removes the fields a `Connection` value names, but for those the fixed list (and `Upgrade`)
/// already deal with, `Host` (end to end whatever a client lists) and `close`, which names no
/// field: each lookup of an absent name costs a hash.
fn remove_listed(headers: &mut HeaderMap, value: &HeaderValue) {
    for token in value.as_bytes().split(|&b| b == b',') {
        let token = token.trim_ascii();
        let handled = |name: &str| token.eq_ignore_ascii_case(name.as_bytes());
        if token.is_empty()
            || handled("close")
            || handled("host")
            || handled("upgrade")
            || HOP_BY_HOP.iter().any(|h| handled(h.as_str()))
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
    // A byte scan: `rsplit_once` sets up a UTF-8 searcher for the one ASCII byte, which cost
    // more than the scan of a short authority.
    match text.bytes().rposition(|b| b == b'@') {
        Some(at) => &text[at + 1..],
        None => text,
    }
}

/// The fields veer adds to a request on its way upstream. They are written after the request's
/// own (`upstream::h1::Fields`) rather than inserted in its map: a parsed map has room for the
/// fields it came with, and growing it (twice, for four more) cost more than the whole rest of
/// the rewrite.
#[derive(Debug, Clone)]
pub struct Added {
    /// `Host`, when the request named it in its URI (HTTP/2, absolute form).
    host: Option<HeaderValue>,
    forwarded_for: HeaderValue,
    forwarded_host: Option<HeaderValue>,
    forwarded_proto: HeaderValue,
    via: HeaderValue,
    /// One more field of the caller's (a mirrored copy's mark).
    other: Option<(HeaderName, HeaderValue)>,
}

impl Added {
    /// These fields and one more.
    pub fn with(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.other = Some((name, value));
        self
    }
}

impl crate::upstream::h1::Fields for Added {
    fn each(&self, f: &mut dyn FnMut(&HeaderName, &HeaderValue)) {
        if let Some(host) = &self.host {
            f(&header::HOST, host);
        }
        if let Some(host) = &self.forwarded_host {
            f(&X_FORWARDED_HOST, host);
        }
        f(&X_FORWARDED_FOR, &self.forwarded_for);
        f(&X_FORWARDED_PROTO, &self.forwarded_proto);
        f(&header::VIA, &self.via);
        if let Some((name, value)) = &self.other {
            f(name, value);
        }
    }
}

/// Turns a client's request head into the one sent upstream: HTTP/1.1, origin-form URI, `Host`
/// kept (taken from the authority for HTTP/2 clients), hop-by-hop removed; returns the
/// forwarding fields to write after it (a client's own `x-forwarded-proto` and
/// `x-forwarded-host` are replaced, its `x-forwarded-for` list extended, its `via` kept).
pub fn prepare_request(parts: &mut request::Parts, ctx: &ConnContext, upgrade: bool) -> Added {
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
    // Most clients send none of the forwarding fields: one pass over the names finds out,
    // where each removal would hash the name.
    let h2 = parts.version == Version::HTTP_2;
    let (mut had_for, mut had_other, mut had_cookie) = (false, false, false);
    for name in headers.keys() {
        if name == X_FORWARDED_FOR {
            had_for = true;
        } else if name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST {
            had_other = true;
        } else if h2 && name == header::COOKIE {
            had_cookie = true;
        }
    }
    if had_cookie {
        join_cookies(headers);
    }
    if had_other {
        headers.remove(&X_FORWARDED_PROTO);
        headers.remove(&X_FORWARDED_HOST);
    }
    let forwarded_for = if had_for {
        forwarded_for(headers, &ctx.peer_header)
    } else {
        ctx.peer_header.clone()
    };
    // An absolute-form or HTTP/2 request names its host in the URI: that is the one it was
    // routed on, so it is the one the upstream sees (RFC 9112 §3.2.2).
    let host = parts
        .uri
        .authority()
        .and_then(|authority| HeaderValue::from_str(host_of(authority)).ok());
    let forwarded_host = match &host {
        Some(host) => {
            headers.remove(header::HOST);
            Some(host.clone())
        }
        None => headers.get(header::HOST).cloned(),
    };
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let origin = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        parts.uri = Uri::from(origin);
    }
    parts.version = Version::HTTP_11;
    Added {
        host,
        forwarded_for,
        forwarded_host,
        forwarded_proto: HeaderValue::from_static(ctx.scheme.as_str()),
        via,
        other: None,
    }
}

/// An HTTP/2 client may send each cookie pair in a field of its own (RFC 9113 §8.2.3); the
/// HTTP/1.1 hop upstream gets them in one field, joined with "; ", as that section requires.
fn join_cookies(headers: &mut HeaderMap) {
    let header::Entry::Occupied(mut entry) = headers.entry(header::COOKIE) else {
        return;
    };
    if entry.iter().nth(1).is_none() {
        return;
    }
    let mut joined = bytes::BytesMut::new();
    for (i, value) in entry.iter().enumerate() {
        if i > 0 {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_maybe_shared(joined.freeze()) {
        entry.insert(value);
    }
}

/// `<existing>, <client>`: every earlier `x-forwarded-for` value in order, then the client;
/// the earlier fields are taken out of the map (the joined one is written in their place).
fn forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) -> HeaderValue {
    let header::Entry::Occupied(existing) = headers.entry(&X_FORWARDED_FOR) else {
        return client.clone();
    };
    let mut joined = bytes::BytesMut::new();
    for value in existing.remove_entry_mult().1 {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(client.as_bytes());
    // One allocation: the buffer becomes the header value without another copy.
    HeaderValue::from_maybe_shared(joined.freeze()).unwrap_or_else(|_| client.clone())
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
    fn cookie_fields_split_by_an_http2_client_are_joined_in_one() {
        let mut h = map(&[("cookie", "a=1"), ("accept", "*/*"), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one.get_all("cookie").iter().collect::<Vec<_>>(), ["a=1"]);
    }

    #[test]
    fn the_host_of_an_authority_leaves_out_its_userinfo() {
        let of = |a: &'static str| host_of(&http::uri::Authority::from_static(a)).to_string();
        assert_eq!(of("example.com:8080"), "example.com:8080");
        assert_eq!(of("user:pw@example.com:8080"), "example.com:8080");
        assert_eq!(of("user@[::1]:80"), "[::1]:80");
        assert_eq!(of("example.com"), "example.com");
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
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("accept", "*/*"),
        ]);
        let joined = forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(joined, "1.1.1.1, 2.2.2.2, 127.0.0.1");
        assert_eq!(h.len(), 1, "the earlier fields are taken out: {h:?}");
        let mut h = HeaderMap::new();
        let alone = forwarded_for(&mut h, &HeaderValue::from_static("127.0.0.1"));
        assert_eq!(alone, "127.0.0.1");
    }
}
