//! The invariants the fuzz targets check, one function per target, each taking the raw input.
//! Shared by the targets (`fuzz_targets/*.rs`) and by `tests/fuzz_corpus.rs`, which replays
//! every committed corpus file through these same functions on stable Rust in CI.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode};
use veer::admin::parsers::{self, IfMatch};
use veer::config::RawSize;
use veer::health::registry::{InFlight, Slots};
use veer::route::{
    decide, sticky, HealthView, PoolId, Refusal, RequestView, ServerId, Table, BUCKETS,
};
use veer::state::State;

/// A target's check over one input.
pub type Check = fn(&[u8]);

/// Every target by the name of its corpus directory.
pub const TARGETS: &[(&str, Check)] = &[
    ("config_toml", config_toml),
    ("sticky_decode", sticky_decode),
    ("decide", decide_request),
    ("admin_body", admin_body),
    ("if_match", if_match),
    ("percent_decode", percent_decode),
    ("duration_size", duration_size),
];

/// Any text as a config file yields a compiled config or a list of errors, never a panic;
/// every error has a message.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(errors) = veer::config::from_toml(text, "fuzz.toml") {
        assert!(!errors.0.is_empty());
        assert!(errors.0.iter().all(|e| !e.message.is_empty()));
    }
}

/// Any cookie value decodes to a bucket below `BUCKETS` or to nothing, never a panic; a
/// decoded value encodes back to the same text.
pub fn sticky_decode(data: &[u8]) {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let seed = veer::route::hash::route_seed("web");
    if let Some((bucket, server)) = sticky::decode(seed, value) {
        assert!(bucket < BUCKETS);
        assert_eq!(sticky::encode(seed, bucket, server).as_str(), value);
    }
}

const DECIDE_CONFIG: &str = r#"
[listen]
http = "127.0.0.1:0"
[pools.blue]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
balance = "least_request"
[pools.green]
servers = ["127.0.0.1:9011"]
[pools.red]
servers = ["127.0.0.1:9021", "127.0.0.1:9022", { addr = "127.0.0.1:9023", weight = 3 }]
[[routes]]
name = "api"
hosts = ["api.example.com", "*.api.example.com"]
path_prefix = "/api"
split = { blue = 1, green = 1 }
hash_key = "header:x-user"
[[routes]]
name = "by-ip"
path_prefix = "/ip"
split = { red = 3, blue = 0, green = 1 }
hash_key = "client_ip"
sticky = { cookie = "veer_ip" }
mirror = { pool = "green", percent = 50 }
[[routes]]
name = "web"
split = { blue = 95, green = 5 }
sticky = { cookie = "veer_web" }
[[routes.pin]]
header = "x-canary"
equals = "true"
pool = "green"
[[routes.pin]]
cookie = "beta"
pool = "red"
[[routes.pin]]
source = ["10.0.0.0/8", "fd00::/8"]
pool = "green"
"#;

/// One state for every run: the production table and the production health slots.
fn decide_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let table = veer::config::from_toml(DECIDE_CONFIG, "fuzz.toml")
            .map(|c| c.table)
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        State::new(table)
    })
}

/// The decision, over any request (host, path, cookie, header values, client address) and
/// any server health: a route, pool and server inside the table, the pool one of the route's
/// (its split's, or a pin's when pinned), an available server, `set_cookie` only on sticky
/// routes with a cookie that decodes back to the decision, and no refusal while every server
/// is available. Input: a fixed head of `DECIDE_HEAD` bytes (missing ones read as 0), then
/// host, path, cookie and header value separated by `\n`. The head: the randomness (8 bytes),
/// the client address (1 byte: odd for IPv6; then 16 bytes, the first 4 for IPv4), and per
/// server of the table in order one byte of health (bit 0 unhealthy, bit 1 draining, bit 2
/// ejected) and one of requests in flight (0..8).
pub fn decide_request(data: &[u8]) {
    let head = |i: usize| data.get(i).copied().unwrap_or(0);
    let rest = data.get(DECIDE_HEAD..).unwrap_or_default();
    let parts: Vec<&[u8]> = rest.splitn(4, |&b| b == b'\n').collect();
    let field = |i: usize| parts.get(i).copied().unwrap_or_default();
    let host = std::str::from_utf8(field(0)).unwrap_or("");
    let path = std::str::from_utf8(field(1)).unwrap_or("/");
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(field(2)) {
        headers.insert(http::header::COOKIE, v);
    }
    if let Ok(v) = HeaderValue::from_bytes(field(3)) {
        headers.insert("x-user", v.clone());
        headers.insert("x-canary", v);
    }
    let random = u64::from_le_bytes(std::array::from_fn(head));
    let addr: [u8; 16] = std::array::from_fn(|i| head(9 + i));
    let client_ip = if head(8) % 2 == 1 {
        IpAddr::V6(Ipv6Addr::from(addr))
    } else {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    };
    let health: Vec<u8> = (25..DECIDE_HEAD).map(head).collect();
    let state = decide_state();
    let snap = state.snapshot();
    let table = &snap.table;
    let (all_available, _in_flight) = set_health(table, &snap.slots, &health);
    let view = RequestView {
        host,
        path,
        headers: &headers,
        client_ip,
        random,
    };
    match decide(table, &view, &snap.slots) {
        Ok(d) => {
            let route = &table.routes[usize::from(d.route)];
            let pool = table.pool(d.pool);
            assert!(usize::from(d.server) < pool.servers.len());
            assert!(d.bucket < BUCKETS);
            assert!(snap.slots.available(d.pool, d.server), "{d:?}");
            if d.pinned() {
                assert!(route.pins.iter().any(|p| p.pool == d.pool), "{d:?}");
            } else {
                let in_split = route.split.iter().any(|e| e.pool == d.pool && e.weight > 0);
                assert!(in_split, "{d:?}");
            }
            if d.set_cookie {
                let value = veer::route::sticky_value(table, &d).expect("a sticky route");
                let decoded = sticky::decode(route.seed, value.as_str());
                assert_eq!(
                    decoded,
                    Some((d.bucket, pool.servers[usize::from(d.server)].cookie_id))
                );
            } else if route.sticky.is_none() {
                assert_eq!(veer::route::sticky_value(table, &d), None);
            }
            if route.sticky.is_none() {
                assert!(!d.set_cookie, "{d:?}");
            }
            if route.mirror.is_none() {
                assert!(!d.mirror, "{d:?}");
            }
        }
        Err(Refusal::NoRoute) => {}
        Err(Refusal::NoHealthyPool { route }) => {
            assert!(!all_available, "refused while every server is available");
            let route = &table.routes[usize::from(route)];
            let serving = route
                .split
                .iter()
                .any(|e| e.weight > 0 && snap.slots.pool_available(e.pool));
            assert!(!serving, "refused while a pool of the split serves");
        }
    }
}

/// The decision's input head: randomness, client address, and two bytes per server (the
/// fuzz table has 6).
const DECIDE_HEAD: usize = 8 + 1 + 16 + 2 * 6;

/// Sets every server's flags and in-flight count from `health` (two bytes per server; missing
/// bytes: available, idle). Returns whether every server is available, and the guards that
/// hold the in-flight counts until they drop.
fn set_health(table: &Table, slots: &Slots, health: &[u8]) -> (bool, Vec<InFlight>) {
    let mut i = 0;
    let mut all = true;
    let mut guards = Vec::new();
    for (p, pool) in table.pools.iter().enumerate() {
        for s in 0..pool.servers.len() {
            let bits = health.get(2 * i).copied().unwrap_or(0);
            let busy = health.get(2 * i + 1).copied().unwrap_or(0);
            let slot = slots.server(PoolId::try_from(p).unwrap(), ServerId::try_from(s).unwrap());
            slot.set_unhealthy(bits & 1 != 0);
            slot.set_draining(bits & 2 != 0);
            slot.set_ejected(bits & 4 != 0);
            all &= bits & 7 == 0;
            while slot.in_flight() < u32::from(busy % 8) {
                guards.push(slot.begin());
            }
            i += 1;
        }
    }
    (all, guards)
}

/// The admin API's JSON (and TOML) bodies: any bytes are parsed or refused with a 4xx, never a
/// panic or a 5xx; an accepted split survives a round trip through JSON; an accepted config
/// validates without a panic. The first byte picks the body: split, promote, config as JSON,
/// config as TOML.
pub fn admin_body(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let refused = |status: StatusCode| {
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::UNPROCESSABLE_ENTITY,
            "{status}"
        );
    };
    match kind % 4 {
        0 => match parsers::split_body(body) {
            Ok(weights) => {
                let again = serde_json::to_vec(&weights).unwrap();
                assert_eq!(parsers::split_body(&again), Ok(weights));
            }
            Err(status) => refused(status),
        },
        1 => match parsers::promote_body(body) {
            Ok(pool) => {
                let again = serde_json::to_vec(&serde_json::json!({ "pool": pool })).unwrap();
                assert_eq!(parsers::promote_body(&again), Ok(pool));
            }
            Err(status) => refused(status),
        },
        kind => {
            let content_type = (kind == 3).then_some("application/toml");
            match parsers::config_body(body, content_type) {
                Ok((raw, _version)) => {
                    if let Err(errors) = veer::config::from_raw(raw) {
                        assert!(errors.0.iter().all(|e| !e.message.is_empty()));
                    }
                }
                Err(status) => refused(status),
            }
        }
    }
}

/// `If-Match`: any header value is a version, `*`, or a 400, never a panic; a version parsed
/// is the digits that were sent, and the `ETag` the API sends for it parses back to it.
pub fn if_match(data: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::IF_MATCH, value);
    match parsers::if_match(&headers) {
        Ok(IfMatch::Version(v)) => {
            let text = std::str::from_utf8(data).unwrap().trim();
            let digits = text.trim_matches('"');
            assert_eq!(
                digits.trim_start_matches('0').parse::<u64>().unwrap_or(0),
                v
            );
            let mut etag = HeaderMap::new();
            etag.insert(
                http::header::IF_MATCH,
                HeaderValue::try_from(format!("\"{v}\"")).unwrap(),
            );
            assert_eq!(parsers::if_match(&etag), Ok(IfMatch::Version(v)));
        }
        Ok(IfMatch::Any) => assert_eq!(std::str::from_utf8(data).unwrap().trim(), "*"),
        Ok(IfMatch::Absent) => panic!("a header was sent"),
        Err(status) => assert_eq!(status, StatusCode::BAD_REQUEST),
    }
}

/// Percent-decoding of admin API path segments: never a panic, never longer than its input,
/// text without `%` unchanged, and whatever `veer ctl` encodes decodes back to the same text.
pub fn percent_decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(decoded) = parsers::percent_decode(text) {
        assert!(decoded.len() <= text.len());
        if !text.contains('%') {
            assert_eq!(decoded, text);
        }
    }
    let encoded = veer::ctl::segment(text);
    assert!(encoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
    assert_eq!(parsers::percent_decode(&encoded).as_deref(), Some(text));
}

/// The duration and size parsers: any text is a value or a message naming it, never a panic;
/// a duration is at most a year and reads back the same when written in nanoseconds; a size
/// reads back the same when written in bytes.
pub fn duration_size(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match veer::config::parse_duration(text) {
        Ok(d) => {
            assert!(d <= Duration::from_secs(365 * 24 * 3600), "{d:?}");
            let again = veer::config::parse_duration(&format!("{}ns", d.as_nanos()));
            assert_eq!(again, Ok(d));
        }
        Err(message) => assert!(message.contains(&format!("{text:?}")), "{message}"),
    }
    match veer::config::parse_size(&RawSize::Text(text.to_string())) {
        Ok(n) => {
            assert_eq!(veer::config::parse_size(&RawSize::Bytes(n)), Ok(n));
            let again = veer::config::parse_size(&RawSize::Text(n.to_string()));
            assert_eq!(again, Ok(n));
        }
        Err(message) => assert!(message.contains(&format!("{text:?}")), "{message}"),
    }
}
