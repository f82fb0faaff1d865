//! Test-only builders for hand-made tables and requests, and a fake `HealthView` whose down
//! servers, in-flight counts and round-robin counter the test controls.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::hash;
use super::table::{
    Balance, HashKey, Mirror, Outlier, Pin, PinMatch, Pool, ProxySettings, Route, Server,
    SplitEntry, Sticky, Target,
};
use super::{HealthView, PoolId, RequestView, ServerId, Table, BUCKETS};

/// A pool of servers `10.0.<pool index>.<i + 1>:80` with these weights.
pub fn pool(name: &str, index: u8, weights: &[u32], balance: Balance) -> Pool {
    let servers: Vec<Server> = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            let ip = Ipv4Addr::new(10, 0, index, i as u8 + 1);
            let addr = SocketAddr::new(IpAddr::V4(ip), 80);
            let text = addr.to_string();
            Server {
                cookie_id: hash::server_cookie_id(name, &text),
                addr: text.into(),
                target: Target::Addr(addr),
                weight,
            }
        })
        .collect();
    Pool {
        name: name.into(),
        name_header: HeaderValue::from_str(name).unwrap(),
        rr_order: smooth_order(weights),
        servers,
        balance,
        health: None,
        outlier: Outlier::default(),
        tls: None,
    }
}

/// Smooth weighted round robin (NGINX's), as config::compile lays it out.
pub fn smooth_order(weights: &[u32]) -> Box<[ServerId]> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::new();
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(weights) {
            *c += i64::from(w);
        }
        let (best, _) = current
            .iter()
            .enumerate()
            .max_by_key(|&(i, &c)| (c, std::cmp::Reverse(i)))
            .unwrap();
        current[best] -= total;
        order.push(best as ServerId);
    }
    order.into_boxed_slice()
}

/// The split with its `upper` bounds computed as config::compile does.
pub fn split(entries: &[(PoolId, u32)]) -> (Vec<SplitEntry>, u32) {
    let total: u32 = entries.iter().map(|&(_, w)| w).sum();
    let mut cumulative = 0u64;
    let split = entries
        .iter()
        .map(|&(pool, weight)| {
            cumulative += u64::from(weight);
            let upper = (cumulative * u64::from(BUCKETS) / u64::from(total)) as u16;
            SplitEntry {
                pool,
                weight,
                upper,
            }
        })
        .collect();
    (split, total)
}

/// A route for any host under `/` with this split and nothing else.
pub fn route(name: &str, entries: &[(PoolId, u32)]) -> Route {
    let (split, total_weight) = split(entries);
    Route {
        name: name.into(),
        hosts: Vec::new(),
        path_prefix: "/".into(),
        split,
        total_weight,
        pins: Vec::new(),
        hash_key: None,
        seed: hash::route_seed(name),
        sticky: None,
        mirror: None,
        rollout: None,
    }
}

pub fn set_split(route: &mut Route, entries: &[(PoolId, u32)]) {
    (route.split, route.total_weight) = split(entries);
}

pub fn sticky(cookie: &str) -> Sticky {
    Sticky {
        cookie: cookie.into(),
        max_age: Duration::from_secs(3600),
        attributes: "; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax".into(),
    }
}

pub fn mirror(pool: PoolId, percent: u8) -> Mirror {
    Mirror {
        pool,
        percent,
        max_body: 1 << 20,
        max_in_flight: 256,
    }
}

pub fn header_pin(name: &'static str, equals: Option<&str>, pool: PoolId) -> Pin {
    let matcher = PinMatch::Header {
        name: HeaderName::from_static(name),
        equals: equals.map(|e| e.as_bytes().into()),
    };
    Pin { matcher, pool }
}

pub fn cookie_pin(name: &str, equals: Option<&str>, pool: PoolId) -> Pin {
    let matcher = PinMatch::Cookie {
        name: name.into(),
        equals: equals.map(Into::into),
    };
    Pin { matcher, pool }
}

pub fn source_pin(nets: &[&str], pool: PoolId) -> Pin {
    let nets = nets.iter().map(|n| n.parse().unwrap()).collect();
    Pin {
        matcher: PinMatch::Source(nets),
        pool,
    }
}

pub fn header_key(name: &'static str) -> HashKey {
    HashKey::Header(HeaderName::from_static(name))
}

pub fn table(routes: Vec<Route>, pools: Vec<Pool>) -> Table {
    Table {
        version: 1,
        routes,
        pools,
        proxy: ProxySettings::default(),
    }
}

/// An owned request to borrow a `RequestView` from.
pub struct Req {
    pub host: String,
    pub path: String,
    pub headers: HeaderMap,
    pub client_ip: IpAddr,
    pub random: u64,
}

impl Req {
    pub fn new(host: &str, path: &str) -> Self {
        Self {
            host: host.into(),
            path: path.into(),
            headers: HeaderMap::new(),
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            random: 0,
        }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Self {
        let value = HeaderValue::from_str(value).unwrap();
        self.headers.append(HeaderName::from_static(name), value);
        self
    }

    pub fn ip(mut self, ip: &str) -> Self {
        self.client_ip = ip.parse().unwrap();
        self
    }

    pub fn random(mut self, random: u64) -> Self {
        self.random = random;
        self
    }

    pub fn view(&self) -> RequestView<'_> {
        RequestView {
            host: &self.host,
            path: &self.path,
            headers: &self.headers,
            client_ip: self.client_ip,
            random: self.random,
        }
    }
}

/// Health the test controls: everything up, nothing in flight, until told otherwise.
pub struct FakeHealth {
    pool_sizes: Vec<usize>,
    down: RefCell<HashSet<(PoolId, ServerId)>>,
    in_flight: RefCell<HashMap<(PoolId, ServerId), u32>>,
    round_robin: Vec<Cell<u64>>,
}

impl FakeHealth {
    pub fn new(table: &Table) -> Self {
        Self {
            pool_sizes: table.pools.iter().map(|p| p.servers.len()).collect(),
            down: RefCell::default(),
            in_flight: RefCell::default(),
            round_robin: table.pools.iter().map(|_| Cell::new(0)).collect(),
        }
    }

    pub fn down(&self, pool: PoolId, server: ServerId) -> &Self {
        self.down.borrow_mut().insert((pool, server));
        self
    }

    pub fn up(&self, pool: PoolId, server: ServerId) -> &Self {
        self.down.borrow_mut().remove(&(pool, server));
        self
    }

    pub fn pool_down(&self, pool: PoolId) -> &Self {
        for s in 0..self.pool_sizes[usize::from(pool)] {
            self.down(pool, s as ServerId);
        }
        self
    }

    pub fn set_in_flight(&self, pool: PoolId, server: ServerId, n: u32) -> &Self {
        self.in_flight.borrow_mut().insert((pool, server), n);
        self
    }
}

impl HealthView for FakeHealth {
    fn available(&self, pool: PoolId, server: ServerId) -> bool {
        usize::from(server) < self.pool_sizes[usize::from(pool)]
            && !self.down.borrow().contains(&(pool, server))
    }

    fn pool_available(&self, pool: PoolId) -> bool {
        (0..self.pool_sizes[usize::from(pool)]).any(|s| self.available(pool, s as ServerId))
    }

    fn in_flight(&self, pool: PoolId, server: ServerId) -> u32 {
        self.in_flight
            .borrow()
            .get(&(pool, server))
            .copied()
            .unwrap_or(0)
    }

    fn next_round_robin(&self, pool: PoolId) -> u64 {
        let cell = &self.round_robin[usize::from(pool)];
        let n = cell.get();
        cell.set(n + 1);
        n
    }
}
