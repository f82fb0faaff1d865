//! Parsers for the config's small value languages: durations, sizes, socket and server
//! addresses, host patterns, header and cookie names, hash keys, CIDRs, log filters. Each returns
//! the parsed value or a message for the user (what was wrong, what is expected); `validate` and
//! `compile` share them, so a value is judged the same way in both. No field paths here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::HeaderName;
use ipnet::IpNet;

use super::raw::RawSize;
use crate::route::table::{HashKey, HostPattern, Target};

/// The longest duration any setting takes: timers are armed as `now + duration`, which must
/// stay representable.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `"250ms"`, `"2s"`, `"5m"`; at most a year.
pub fn duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        // humantime appends its whole unit list to an unknown unit; the example says enough.
        let why = e.to_string();
        let why = why.split(", supported units").next().unwrap_or_default();
        format!("invalid duration {s:?}: {why}; expected a number with a unit, like \"250ms\", \"2s\" or \"5m\"")
    })?;
    if d > MAX_DURATION {
        return Err(format!("duration {s:?} is too long: at most 365d"));
    }
    Ok(d)
}

/// Bytes as an integer, or `"64KiB"`, `"10MiB"`.
pub fn size(s: &RawSize) -> Result<u64, String> {
    match s {
        RawSize::Bytes(n) => Ok(*n),
        RawSize::Text(t) => size_text(t),
    }
}

fn size_text(t: &str) -> Result<u64, String> {
    let text = t.trim();
    let parsed = if significant_digits(text) > MAX_SIZE_DIGITS {
        Err("more digits than any size has".to_string())
    } else {
        parse_size::parse_size(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|why| {
        format!("invalid size {t:?} ({why}); expected bytes or a number with a unit, like \"64KiB\" or \"10MiB\"")
    })
}

/// The most significant digits a size's number may have: `u64::MAX` has 20. parse-size
/// rounds a number with more by adding 1 to a value that may already be `u64::MAX`, which
/// overflows (a panic in a debug build, a wrong size in a release build).
const MAX_SIZE_DIGITS: usize = 20;

/// The digits of the number that `s` starts with, from its first non-zero one (separators
/// `_`, ` ` and the decimal point are skipped; the exponent and the unit are not counted).
fn significant_digits(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_digit() || matches!(b, b'_' | b' ' | b'.'))
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count()
}

/// A listener: an IP socket address.
pub(crate) fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid address {s:?}; expected IP:port, like \"0.0.0.0:8080\" or \"[::1]:8080\"")
    })
}

/// A server: `host:port`, the host an IP literal (IPv6 in brackets) or a DNS name.
pub(crate) fn server_target(s: &str) -> Result<Target, String> {
    let bad = |why: &str| {
        format!("invalid server address {s:?}: {why}; expected host:port, like \"10.0.0.11:8080\", \"[fd00::1]:8080\" or \"app.internal:8080\"")
    };
    let Some((host, port)) = s.rsplit_once(':').filter(|(h, _)| !h.is_empty()) else {
        return Err(bad("no port"));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => p,
        _ => return Err(bad("the port must be a number in 1..=65535")),
    };
    if let Some(inner) = host.strip_prefix('[') {
        let ip = (inner
            .strip_suffix(']')
            .and_then(|i| i.parse::<Ipv6Addr>().ok()))
        .ok_or_else(|| bad("not an IPv6 address in brackets"))?;
        return Ok(Target::Addr(SocketAddr::new(IpAddr::V6(ip), port)));
    }
    if host.contains(':') {
        return Err(bad("an IPv6 address needs brackets"));
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Target::Addr(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    if !is_dns_name(host) {
        return Err(bad("the host is neither an IP address nor a DNS name"));
    }
    Ok(Target::Name {
        host: host.into(),
        port,
    })
}

/// Letters, digits, `-` and `_` in dot-separated labels; the last label not all digits (that
/// would be a mistyped IPv4 address).
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let last_numeric = host
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !host.is_empty() && host.len() <= 253 && host.split('.').all(label_ok) && !last_numeric
}

/// `app.example.com`, `*.example.com` (any depth below it), optionally with a port, which is
/// ignored: stored lower-case without the port.
pub(crate) fn host_pattern(s: &str) -> Result<HostPattern, String> {
    if s.is_empty() {
        return Err("empty host pattern; leave `hosts` out to match any host".into());
    }
    if s.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(format!(
            "invalid host pattern {s:?}: a host name only, without spaces, scheme or path"
        ));
    }
    let host = strip_port(s).to_ascii_lowercase();
    if let Some(rest) = host.strip_prefix("*.") {
        if !rest.contains('*') && is_host(rest) {
            return Ok(HostPattern::Suffix(format!(".{rest}").into()));
        }
    } else if !host.contains('*') && is_host(&host) {
        return Ok(HostPattern::Exact(host.into()));
    }
    if host.contains('*') {
        return Err(format!("invalid host pattern {s:?}: `*` is only allowed as a leading `*.`, like \"*.example.com\"; leave `hosts` out to match any host"));
    }
    Err(format!(
        "invalid host pattern {s:?}: expected a host name like \"app.example.com\""
    ))
}

fn strip_port(s: &str) -> &str {
    if s.starts_with('[') {
        return s.find(']').map_or(s, |end| &s[..=end]);
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => s,
    }
}

/// A host as a request names it: a DNS-like name or an IP literal (IPv6 in brackets).
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Route and pool names: they appear in admin API URLs, metric labels and cookies.
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// An RFC 6265 cookie-name: a token (visible ASCII but separators).
pub(crate) fn is_cookie_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| (0x21..0x7f).contains(&b) && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

pub(crate) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes())
        .map_err(|_| format!("invalid header name {s:?}: expected a token like \"x-canary\""))
}

pub(crate) fn cookie_name(s: &str) -> Result<&str, String> {
    if is_cookie_name(s) {
        Ok(s)
    } else {
        Err(format!(
            "invalid cookie name {s:?}: expected a token of letters, digits and `!#$%&'*+-.^_`|~`"
        ))
    }
}

/// `header:NAME`, `cookie:NAME` or `client_ip`.
pub(crate) fn hash_key(s: &str) -> Result<HashKey, String> {
    match s.split_once(':') {
        Some(("header", name)) => header_name(name).map(HashKey::Header),
        Some(("cookie", name)) => cookie_name(name).map(|n| HashKey::Cookie(n.into())),
        None if s == "client_ip" => Ok(HashKey::ClientIp),
        _ => Err(format!(
            "invalid hash_key {s:?}: expected \"header:NAME\", \"cookie:NAME\" or \"client_ip\""
        )),
    }
}

/// A CIDR block; a bare address means that one address.
pub(crate) fn cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("invalid CIDR {s:?}: expected an address block like \"10.1.0.0/16\" or \"2001:db8::/32\"")
    })
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A tracing filter, checked loosely: a level, or `target=level` directives, comma-separated.
pub(crate) fn log_filter(s: &str) -> Result<(), String> {
    let level_ok = |l: &str| LEVELS.iter().any(|v| v.eq_ignore_ascii_case(l.trim()));
    let target_ok = |t: &str| {
        let t = t.trim();
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-' | b'.'))
    };
    let ok = !s.trim().is_empty()
        && s.split(',').all(|d| match d.split_once('=') {
            Some((target, level)) => target_ok(target) && level_ok(level),
            None => level_ok(d),
        });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid log level {s:?}: expected one of trace, debug, info, warn, error, off, or target=level directives like \"info,veer=debug\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        assert!(matches!(server_target("10.0.0.1:80"), Ok(Target::Addr(_))));
        assert!(matches!(server_target("[::1]:80"), Ok(Target::Addr(_))));
        assert!(matches!(
            server_target("app.internal:80"),
            Ok(Target::Name { port: 80, .. })
        ));
        for bad in [
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            ":80",
            "::1:80",
            "a b:80",
            "10.0.0.300:80",
            "[::1:80",
            "-a:80",
            "x:+80",
        ] {
            assert!(server_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_patterns() {
        assert_eq!(
            host_pattern("App.Example.com:8080"),
            Ok(HostPattern::Exact("app.example.com".into()))
        );
        assert_eq!(
            host_pattern("*.Example.com"),
            Ok(HostPattern::Suffix(".example.com".into()))
        );
        assert_eq!(
            host_pattern("[::1]:80"),
            Ok(HostPattern::Exact("[::1]".into()))
        );
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "app*.com",
            "http://a.com",
            "a com",
            "a..com",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_keys() {
        assert!(is_name("web-1.v2_x") && !is_name("") && !is_name("a/b") && !is_name("a b"));
        assert!(is_cookie_name("veer_web") && !is_cookie_name("a;b") && !is_cookie_name("a=b"));
        assert_eq!(hash_key("client_ip"), Ok(HashKey::ClientIp));
        assert_eq!(
            hash_key("header:X-User"),
            Ok(HashKey::Header(HeaderName::from_static("x-user")))
        );
        assert_eq!(hash_key("cookie:sid"), Ok(HashKey::Cookie("sid".into())));
        for bad in ["header:", "header:a b", "cookie:a;b", "ip", "client_ip:x"] {
            assert!(hash_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(duration("2 parsecs").is_err() && duration("").is_err());
        assert_eq!(size(&RawSize::Text("64KiB".into())), Ok(65536));
        assert!(size(&RawSize::Text("lots".into())).is_err());
        let max = u64::MAX.to_string();
        assert_eq!(size(&RawSize::Text(max.clone())), Ok(u64::MAX));
        assert_eq!(size(&RawSize::Text(format!("000{max}"))), Ok(u64::MAX));
        // Past u64::MAX's digits, parse-size would round by adding 1 to u64::MAX.
        for over in [
            format!("{max}.5"),
            format!("{max}5KiB"),
            format!("0.{max}5"),
        ] {
            let e = size(&RawSize::Text(over.clone())).unwrap_err();
            assert!(e.contains("more digits than any size has"), "{over}: {e}");
        }
        assert_eq!(
            cidr("10.1.2.3/16").map(|n| n.to_string()),
            Ok("10.1.0.0/16".into())
        );
        assert_eq!(
            cidr("10.1.2.3").map(|n| n.to_string()),
            Ok("10.1.2.3/32".into())
        );
        assert!(cidr("10.1.0.0/33").is_err());
        for ok in ["info", "WARN", "info,veer=debug", "veer::proxy=trace"] {
            assert_eq!(log_filter(ok), Ok(()), "{ok}");
        }
        for bad in ["", "inof", "veer=loud", "=info"] {
            assert!(log_filter(bad).is_err(), "{bad}");
        }
    }
}
