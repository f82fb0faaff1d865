//! The routing table and requests that `benches/decision.rs` measures and
//! `tests/decide_alloc.rs` counts allocations for: one route over three pools (three servers
//! each; least_request on one, round_robin on the others), three pins (header with a value,
//! cookie, source CIDR) that only the pinned case matches, and a sticky cookie.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};
use veer::route::{sticky, HealthView, PoolId, RequestView, ServerId, Table};

const CONFIG: &str = r#"
[pools.blue]
servers = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
balance = "round_robin"

[pools.green]
servers = ["10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"]
balance = "round_robin"

[pools.canary]
servers = ["10.0.2.1:8080", "10.0.2.2:8080", "10.0.2.3:8080"]
balance = "least_request"

[[routes]]
name = "web"
hosts = ["app.example.com", "*.app.example.com"]
split = { blue = 90, green = 9, canary = 1 }
sticky = { cookie = "veer_web", max_age = "1h" }

[[routes.pin]]
header = "x-canary"
equals = "true"
pool = "canary"

[[routes.pin]]
cookie = "beta"
pool = "green"

[[routes.pin]]
source = ["10.99.0.0/16"]
pool = "canary"
"#;

/// The table: route `web` for `app.example.com` and `*.app.example.com`, split 90/9/1 over
/// blue, green and canary, compiled by `config::from_toml` as `veer run` would.
pub fn table() -> Table {
    match veer::config::from_toml(CONFIG, "decision_fixture.toml") {
        Ok(compiled) => compiled.table,
        Err(errors) => panic!("the fixture config is invalid:\n{errors}"),
    }
}

/// A pool's index by name.
pub fn pool(table: &Table, name: &str) -> PoolId {
    table.pool_id(name).expect("a pool of the fixture")
}

/// The kinds of request measured.
#[derive(Debug, Clone, Copy)]
pub enum Case {
    /// A returning user with a valid sticky cookie for a blue server.
    Sticky,
    /// A new user: no sticky cookie.
    NewUser,
    /// A request pinned by its `x-canary: true` header.
    Pinned,
}

pub const CASES: [Case; 3] = [Case::Sticky, Case::NewUser, Case::Pinned];

/// Typical browser headers for the case (the `Host` header included).
pub fn headers(table: &Table, case: Case) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        let value = HeaderValue::from_str(value).expect("a header value");
        h.append(HeaderName::from_static(name), value);
    };
    put("host", "app.example.com");
    put(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    );
    put("accept", "text/html,application/xhtml+xml,*/*;q=0.8");
    put("accept-encoding", "gzip, deflate, br");
    put("accept-language", "en-US,en;q=0.5");
    put("x-request-id", "5f0c6d1e-8a43-4b7e-9a2e-3c1d2b4a5e6f");
    match case {
        Case::Sticky => {
            let route = &table.routes[0];
            let blue = usize::from(pool(table, "blue"));
            let server_id = table.pools[blue].servers[1].cookie_id;
            let value = sticky::encode(route.seed, 1234, server_id);
            put(
                "cookie",
                &format!("_ga=GA1.2.3.4; session=abc123; veer_web={value}; theme=dark"),
            );
        }
        Case::NewUser => put("cookie", "_ga=GA1.2.3.4; session=abc123; theme=dark"),
        Case::Pinned => put("x-canary", "true"),
    }
    h
}

/// A request view over `headers`.
pub fn view(headers: &HeaderMap, random: u64) -> RequestView<'_> {
    RequestView {
        host: "app.example.com",
        path: "/products/42",
        headers,
        client_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        random,
    }
}

/// Health kept in atomics, as the registry keeps it: every server up.
pub struct AtomicHealth {
    round_robin: [AtomicU64; 3],
    in_flight: [[AtomicU32; 3]; 3],
}

impl AtomicHealth {
    pub fn new() -> Self {
        Self {
            round_robin: Default::default(),
            in_flight: Default::default(),
        }
    }
}

impl HealthView for AtomicHealth {
    fn available(&self, pool: PoolId, server: ServerId) -> bool {
        usize::from(pool) < 3 && usize::from(server) < 3
    }

    fn pool_available(&self, pool: PoolId) -> bool {
        usize::from(pool) < 3
    }

    fn in_flight(&self, pool: PoolId, server: ServerId) -> u32 {
        self.in_flight[usize::from(pool)][usize::from(server)].load(Ordering::Relaxed)
    }

    fn next_round_robin(&self, pool: PoolId) -> u64 {
        self.round_robin[usize::from(pool)].fetch_add(1, Ordering::Relaxed)
    }
}
