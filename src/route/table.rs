//! The compiled, immutable routing state. Built only by `config::compile`; read by the decision
//! and the proxy. Every name is already resolved to an index and every split to ranges, so
//! nothing downstream looks a pool up by string or re-checks a weight.

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;

/// Index of a route in `Table::routes`.
pub type RouteId = u16;
/// Index of a pool in `Table::pools`.
pub type PoolId = u16;
/// Index of a server in `Pool::servers`.
pub type ServerId = u16;

/// Buckets are numbers in `0..BUCKETS`: a request's place on the split's line.
pub const BUCKETS: u16 = 10_000;

/// The whole routing state. Swapped as one value; a request uses one snapshot from start to end.
#[derive(Debug, Clone)]
pub struct Table {
    /// Monotonic version, assigned by the change path (0 until installed).
    pub version: u64,
    pub routes: Vec<Route>,
    pub pools: Vec<Pool>,
    pub proxy: ProxySettings,
}

/// Per-request and per-connection limits; read from the snapshot, so a reload changes them.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    /// Until the upstream's response head arrives.
    pub request_timeout: Duration,
    /// Client keep-alive: an idle client connection is closed after this.
    pub idle_timeout: Duration,
    /// A client must send a whole request head within this.
    pub header_read_timeout: Duration,
    pub max_connections: usize,
    /// Extra attempts on another server of the same pool after a connect failure.
    pub retries: u32,
    pub shutdown_grace: Duration,
    /// Pooled upstream connections idle longer than this are closed.
    pub upstream_idle_timeout: Duration,
    pub expose_pool_header: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            retries: 1,
            shutdown_grace: Duration::from_secs(30),
            upstream_idle_timeout: Duration::from_secs(60),
            expose_pool_header: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: Box<str>,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    pub path_prefix: Box<str>,
    /// The split in config order, weight-0 entries included (they own an empty range).
    pub split: Vec<SplitEntry>,
    /// Sum of the split's weights (> 0, validated).
    pub total_weight: u32,
    pub pins: Vec<Pin>,
    pub hash_key: Option<HashKey>,
    /// `xxh3_64(route name)`: the seed for `hash_key` buckets and sticky-cookie checksums.
    pub seed: u64,
    pub sticky: Option<Sticky>,
    pub mirror: Option<Mirror>,
    pub rollout: Option<RolloutPlan>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Lower-case, no port.
    Exact(Box<str>),
    /// `*.example.com` stored as `.example.com`: matches any name ending in it (any depth),
    /// never the bare `example.com`.
    Suffix(Box<str>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitEntry {
    pub pool: PoolId,
    pub weight: u32,
    /// Cumulative upper bound over `0..BUCKETS` when every pool of the split is eligible:
    /// this entry owns `[previous upper, upper)`. The walk for a partly eligible split uses the
    /// same formula (`cumulative weight * BUCKETS / total`) over the eligible entries.
    pub upper: u16,
}

#[derive(Debug, Clone)]
pub struct Pin {
    pub matcher: PinMatch,
    pub pool: PoolId,
}

#[derive(Debug, Clone)]
pub enum PinMatch {
    /// `equals: None` matches any value.
    Header {
        name: HeaderName,
        equals: Option<Box<[u8]>>,
    },
    Cookie {
        name: Box<str>,
        equals: Option<Box<str>>,
    },
    Source(Vec<IpNet>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(Box<str>),
    /// The client address's octets (IPv4-mapped IPv6 addresses as IPv4).
    ClientIp,
}

#[derive(Debug, Clone)]
pub struct Sticky {
    pub cookie: Box<str>,
    pub max_age: Duration,
    /// `; Path=/; Max-Age=<secs>; HttpOnly; SameSite=Lax`, prebuilt.
    pub attributes: Box<str>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub pool: PoolId,
    /// 0..=100
    pub percent: u8,
    /// A body longer than this is not mirrored (a copy under way is abandoned).
    pub max_body: u64,
    /// Copies of this route in flight at once; over it a copy is dropped.
    pub max_in_flight: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutPlan {
    pub stable: PoolId,
    pub canary: PoolId,
    /// Canary percent at each step, strictly increasing, each in 1..=100.
    pub steps: Vec<u8>,
    pub interval: Duration,
    pub max_error_rate: Option<f64>,
    pub max_p99: Option<Duration>,
    pub min_requests: u64,
    pub compare: Option<Compare>,
}

/// The canary judged against the stable pool in the same window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Compare {
    /// How far the canary's error rate may exceed stable's (a share).
    pub max_error_increase: f64,
    /// The canary's p99 may be at most this many times stable's.
    pub max_p99_ratio: Option<f64>,
    /// Of the one-sided two-proportion test, in (0, 1).
    pub confidence: f64,
}

#[derive(Debug, Clone)]
pub struct Pool {
    pub name: Box<str>,
    /// `x-veer-pool` value, prebuilt.
    pub name_header: HeaderValue,
    pub servers: Vec<Server>,
    pub balance: Balance,
    /// Smooth weighted round-robin order of server indices (length = sum of weights, capped);
    /// a pool-wide counter walks it.
    pub rr_order: Box<[ServerId]>,
    pub health: Option<HealthCheck>,
    pub outlier: Outlier,
    pub tls: Option<UpstreamTls>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// As written in the config: `host:port`.
    pub addr: Box<str>,
    pub target: Target,
    pub weight: u32,
    /// Stable id written into sticky cookies: `xxh3_64("pool/addr")`. Survives table swaps.
    pub cookie_id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP literal: connect without a lookup.
    Addr(SocketAddr),
    /// A DNS name, resolved when a new connection is made.
    Name { host: Box<str>, port: u16 },
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    pub path: Box<str>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u8,
}

impl Default for Outlier {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamTls {
    pub sni: Option<Box<str>>,
    pub ca: Option<std::path::PathBuf>,
    pub cert: Option<std::path::PathBuf>,
    pub key: Option<std::path::PathBuf>,
}

impl Table {
    pub fn pool(&self, id: PoolId) -> &Pool {
        &self.pools[usize::from(id)]
    }

    pub fn route(&self, id: RouteId) -> &Route {
        &self.routes[usize::from(id)]
    }

    /// Index of a pool by name (the change path only; the hot path never looks names up).
    pub fn pool_id(&self, name: &str) -> Option<PoolId> {
        self.pools
            .iter()
            .position(|p| &*p.name == name)
            .and_then(|i| PoolId::try_from(i).ok())
    }
}
