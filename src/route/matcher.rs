//! Request matchers over borrowed input: host, path prefix, header, cookie and source CIDR.
//! Owns how a request's text is compared with a route's patterns. Never allocates, never
//! panics on any input, never looks at health or randomness.

use std::net::IpAddr;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use super::table::{HostPattern, PinMatch};
use super::RequestView;

/// The host name of a `Host` header or authority: without a `:port`, without the brackets of an
/// IPv6 literal (`[::1]:8080` -> `::1`) and without a trailing dot of a fully qualified name.
pub fn host_name(host: &str) -> &str {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(inner, _)| inner)
    } else {
        match host.split_once(':') {
            // Exactly one colon: `name:port`. More: a bare IPv6 address, kept whole.
            Some((name, port)) if !port.contains(':') => name,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Whether `host` (already passed through `host_name`) matches one of the patterns; an empty
/// list matches any host.
pub fn host_matches(patterns: &[HostPattern], host: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| host_matches_one(p, host))
}

fn host_matches_one(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(exact) => {
            let exact = exact.strip_prefix('[').unwrap_or(exact);
            let exact = exact.strip_suffix(']').unwrap_or(exact);
            exact.eq_ignore_ascii_case(host)
        }
        HostPattern::Suffix(suffix) => {
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
    }
}

/// A plain string prefix: `/api` matches `/api`, `/api/x` and `/apix`.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    path.as_bytes().starts_with(prefix.as_bytes())
}

/// Whether any occurrence of the header has exactly the bytes `equals`, or, with `None`,
/// whether the header is present at all.
pub fn header_matches(headers: &HeaderMap, name: &HeaderName, equals: Option<&[u8]>) -> bool {
    match equals {
        None => headers.contains_key(name),
        Some(want) => headers.get_all(name).iter().any(|v| v.as_bytes() == want),
    }
}

/// The value of the first cookie called `name` over every `Cookie` header, in order. Pairs are
/// `a=1; b=2`; ASCII spaces around names and values are trimmed and a double-quoted value is
/// unquoted. A pair without `=`, or whose value is not UTF-8, is skipped. Scans bytes and
/// validates only the value it returns: this runs several times per request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|v| cookie_in(v.as_bytes(), name.as_bytes()))
}

fn cookie_in<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a str> {
    line.split(|&b| b == b';').find_map(|pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (n, v) = (&pair[..eq], &pair[eq + 1..]);
        if n.trim_ascii() != name {
            return None;
        }
        let v = v.trim_ascii();
        let v = v
            .strip_prefix(b"\"")
            .and_then(|q| q.strip_suffix(b"\""))
            .unwrap_or(v);
        std::str::from_utf8(v).ok()
    })
}

/// Whether the address is in one of the networks. An IPv4-mapped IPv6 address is compared as
/// the IPv4 address it carries (and as itself, for IPv6 networks written that way).
pub fn source_matches(nets: &[IpNet], ip: IpAddr) -> bool {
    let canonical = ip.to_canonical();
    nets.iter()
        .any(|net| net.contains(&canonical) || net.contains(&ip))
}

/// Whether a pin rule matches the request.
pub fn pin_matches(pin: &PinMatch, req: &RequestView<'_>) -> bool {
    match pin {
        PinMatch::Header { name, equals } => header_matches(req.headers, name, equals.as_deref()),
        PinMatch::Cookie { name, equals } => match (cookie(req.headers, name), equals) {
            (Some(value), Some(want)) => value == &**want,
            (Some(_), None) => true,
            (None, _) => false,
        },
        PinMatch::Source(nets) => source_matches(nets, req.client_ip),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn exact(s: &str) -> HostPattern {
        HostPattern::Exact(s.into())
    }

    fn suffix(s: &str) -> HostPattern {
        HostPattern::Suffix(s.into())
    }

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            map.append(name, HeaderValue::from_bytes(value).unwrap());
        }
        map
    }

    #[test]
    fn host_name_strips_port_brackets_and_dot() {
        assert_eq!(host_name("app.example.com"), "app.example.com");
        assert_eq!(host_name("app.example.com:8080"), "app.example.com");
        assert_eq!(host_name("app.example.com."), "app.example.com");
        assert_eq!(host_name("app.example.com.:80"), "app.example.com");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("[::1]"), "::1");
        assert_eq!(host_name("[::1"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("10.0.0.1:80"), "10.0.0.1");
        assert_eq!(host_name(""), "");
        assert_eq!(host_name(":"), "");
        assert_eq!(host_name("["), "");
    }

    #[test]
    fn exact_host_is_case_insensitive() {
        let pats = [exact("app.example.com")];
        assert!(host_matches(&pats, host_name("APP.Example.com:443")));
        assert!(!host_matches(&pats, "www.example.com"));
        assert!(!host_matches(&pats, "app.example.com.evil"));
    }

    #[test]
    fn exact_ipv6_host_with_or_without_brackets() {
        assert!(host_matches(&[exact("::1")], host_name("[::1]:8080")));
        assert!(host_matches(&[exact("[::1]")], host_name("[::1]:8080")));
        assert!(!host_matches(&[exact("::2")], host_name("[::1]:8080")));
    }

    #[test]
    fn suffix_host_needs_a_label_before_it() {
        let pats = [suffix(".example.com")];
        assert!(host_matches(&pats, "a.example.com"));
        assert!(host_matches(&pats, "a.b.EXAMPLE.com"));
        assert!(!host_matches(&pats, "example.com"));
        assert!(!host_matches(&pats, ".example.com"));
        assert!(!host_matches(&pats, "badexample.com"));
        assert!(!host_matches(&pats, "é.com"));
    }

    #[test]
    fn empty_hosts_match_anything() {
        assert!(host_matches(&[], ""));
        assert!(host_matches(&[], "whatever"));
    }

    #[test]
    fn path_prefix_is_plain() {
        assert!(path_matches("/", "/x"));
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/v1"));
        assert!(path_matches("/api", "/apix"));
        assert!(!path_matches("/api", "/ap"));
        assert!(!path_matches("/api", "/API"));
        assert!(path_matches("", ""));
    }

    #[test]
    fn header_matching_sees_every_occurrence() {
        let h = headers(&[("x-canary", b"false"), ("x-canary", b"true")]);
        let name = HeaderName::from_static("x-canary");
        assert!(header_matches(&h, &name, None));
        assert!(header_matches(&h, &name, Some(b"true")));
        assert!(!header_matches(&h, &name, Some(b"TRUE")));
        assert!(!header_matches(&h, &name, Some(b"tru")));
        let other = HeaderName::from_static("x-other");
        assert!(!header_matches(&h, &other, None));
        let bin = headers(&[("x-bin", b"\xff\xfe")]);
        assert!(header_matches(
            &bin,
            &HeaderName::from_static("x-bin"),
            Some(b"\xff\xfe")
        ));
    }

    #[test]
    fn cookie_parsing() {
        let h = headers(&[
            ("cookie", b"a=1; b = 2 ;c=\"3\""),
            ("cookie", b"b=second; d=4"),
        ]);
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "d"), Some("4"));
        assert_eq!(cookie(&h, "e"), None);
        assert_eq!(cookie(&h, "A"), None);
    }

    #[test]
    fn cookie_edge_cases() {
        let h = headers(&[
            ("cookie", b"\xff\xfe=1; y=\xff; x=first"),
            ("cookie", b";;novalue; =empty; e=; f==g; x=second; y=ok"),
        ]);
        assert_eq!(cookie(&h, "x"), Some("first"));
        assert_eq!(cookie(&h, "y"), Some("ok"));
        assert_eq!(cookie(&h, "novalue"), None);
        assert_eq!(cookie(&h, ""), Some("empty"));
        assert_eq!(cookie(&h, "e"), Some(""));
        assert_eq!(cookie(&h, "f"), Some("=g"));
        assert_eq!(cookie(&HeaderMap::new(), "x"), None);
        let quote = headers(&[("cookie", b"q=\"")]);
        assert_eq!(cookie(&quote, "q"), Some("\""));
    }

    #[test]
    fn cidr_matching() {
        let nets: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
        assert!(source_matches(&nets, v4(10, 1, 2, 3)));
        assert!(!source_matches(&nets, v4(10, 2, 0, 1)));
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 9, 9).to_ipv6_mapped());
        assert!(source_matches(&nets, mapped));
        assert!(source_matches(&nets, "fd12::1".parse().unwrap()));
        assert!(!source_matches(&nets, IpAddr::V6(Ipv6Addr::LOCALHOST)));
        assert!(!source_matches(&[], v4(10, 1, 2, 3)));
        let mapped_net: Vec<IpNet> = vec!["::ffff:10.0.0.0/104".parse().unwrap()];
        assert!(source_matches(
            &mapped_net,
            IpAddr::V6(Ipv4Addr::new(10, 3, 3, 3).to_ipv6_mapped())
        ));
    }
}
