//! Invariant: for any host, path, cookie and header values, `decide` returns a decision whose
//! indices are inside the table, or a refusal, never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use veer::route::{decide, RequestView};
use veer::state::State;

const CONFIG: &str = r#"
[listen]
http = "127.0.0.1:0"
[pools.blue]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
balance = "least_request"
[pools.green]
servers = ["127.0.0.1:9011"]
[[routes]]
name = "api"
hosts = ["api.example.com", "*.api.example.com"]
path_prefix = "/api"
split = { blue = 1, green = 1 }
hash_key = "header:x-user"
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
pool = "green"
[[routes.pin]]
source = ["10.0.0.0/8"]
pool = "green"
"#;

fn state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let table = veer::config::from_toml(CONFIG, "fuzz.toml")
            .map(|c| c.table)
            .unwrap_or_else(|e| panic!("fuzz config: {e}"));
        State::new(table)
    })
}

fuzz_target!(|data: &[u8]| {
    let parts: Vec<&[u8]> = data.splitn(5, |&b| b == b'\n').collect();
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
    let random = field(4)
        .iter()
        .fold(0u64, |acc, &b| acc.rotate_left(8) ^ u64::from(b));
    let view = RequestView {
        host,
        path,
        headers: &headers,
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
        random,
    };
    let snap = state().snapshot();
    if let Ok(d) = decide(&snap.table, &view, &snap.slots) {
        let pool = snap.table.pool(d.pool);
        assert!(usize::from(d.server) < pool.servers.len());
        assert!(d.bucket < veer::route::BUCKETS);
    }
});
