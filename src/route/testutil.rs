//! For the decision's unit tests: tables compiled from TOML by `config::from_toml`, exactly as
//! `veer run` loads them (no hand-made tables, no copy of the compiler's arithmetic); owned
//! requests to borrow a `RequestView` from; and a fake `HealthView`, standing for what probes
//! and passive outcomes would report, whose down servers, in-flight counts and round-robin
//! counter the test controls.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderName, HeaderValue};

use super::{HealthView, PoolId, RequestView, ServerId, Table};

/// The table `veer run` would serve for this config (which need not name listeners).
pub fn compile(toml: &str) -> Table {
    match crate::config::from_toml(toml, "test.toml") {
        Ok(compiled) => compiled.table,
        Err(errors) => panic!("test config invalid:\n{errors}\n---\n{toml}"),
    }
}

/// `pools` then one route `web` with `split` (TOML for the value) and `extra` lines.
pub fn web(pools: &str, split: &str, extra: &str) -> Table {
    compile(&format!(
        "{pools}\n[[routes]]\nname = \"web\"\nsplit = {split}\n{extra}\n"
    ))
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
