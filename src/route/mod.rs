//! The routing decision: which route, pool and server a request goes to, and what the sticky
//! cookie should say. Pure: no I/O, no clock, no locks, no allocation on the common path. Every
//! instance with the same table, request and health view decides the same way (randomness is an
//! input: `RequestView::random`).

pub mod hash;
pub mod matcher;
pub mod sticky;
pub mod table;

#[cfg(test)]
mod server_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use std::net::IpAddr;

use http::HeaderMap;

pub use table::{PoolId, RouteId, ServerId, Table, BUCKETS};

use table::{Balance, HashKey, Pool, Route, SplitEntry};

/// What the decision may read of a request: borrowed, never copied.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The `Host` header or the URI's authority, as sent (a port, if any, is ignored).
    pub host: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
    /// Fresh randomness from the caller: the random bucket, the mirror draw, the two choices.
    pub random: u64,
}

/// What the decision may read of server health. Implemented by the health registry's view of a
/// table, and by fakes in tests.
pub trait HealthView {
    /// The server takes new requests: healthy, not ejected, not draining.
    fn available(&self, pool: PoolId, server: ServerId) -> bool;
    /// The pool has at least one available server.
    fn pool_available(&self, pool: PoolId) -> bool;
    /// Requests in flight to the server (for least_request).
    fn in_flight(&self, pool: PoolId, server: ServerId) -> u32;
    /// A per-pool counter, incremented on each call (for round_robin).
    fn next_round_robin(&self, pool: PoolId) -> u64;
}

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub route: RouteId,
    pub pool: PoolId,
    pub server: ServerId,
    /// The request's place on the split's line, `0..BUCKETS`.
    pub bucket: u16,
    /// How the pool was chosen.
    pub chosen: Chosen,
    /// The route is sticky and the response must carry a new `Set-Cookie`
    /// (no valid cookie came in, or its server changed).
    pub set_cookie: bool,
    /// A copy of the request goes to the route's mirror pool.
    pub mirror: bool,
}

/// How a decision's pool was chosen (the access log's `chosen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// A pin rule named it.
    Pin,
    /// The request's sticky cookie held its place on the split.
    Sticky,
    /// The route's `hash_key` placed the request on the split.
    Hash,
    /// A random place on the split.
    Random,
}

impl Chosen {
    pub fn as_str(self) -> &'static str {
        match self {
            Chosen::Pin => "pin",
            Chosen::Sticky => "sticky",
            Chosen::Hash => "hash",
            Chosen::Random => "random",
        }
    }
}

impl Decision {
    /// A pin rule chose the pool.
    pub fn pinned(&self) -> bool {
        self.chosen == Chosen::Pin
    }
}

/// Why no server was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches: 404.
    NoRoute,
    /// The route matched but no pool of its split has an available server: 503.
    NoHealthyPool { route: RouteId },
}

/// A valid sticky cookie that came with the request.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    bucket: u16,
    server_id: u64,
}

/// Decides where a request goes (SPEC "Routing", steps 1–6). Pure and allocation-free: the same
/// table, request (randomness included) and health view always give the same answer.
pub fn decide(
    table: &Table,
    req: &RequestView<'_>,
    health: &impl HealthView,
) -> Result<Decision, Refusal> {
    let (route_id, route) = find_route(table, req).ok_or(Refusal::NoRoute)?;
    let refused = Refusal::NoHealthyPool { route: route_id };
    let incoming = incoming_cookie(route, req);
    let (bucket, placed) = match incoming {
        Some(c) => (c.bucket, Chosen::Sticky),
        None => match hashed_bucket(route, req) {
            Some(bucket) => (bucket, Chosen::Hash),
            None => (random_bucket(req.random), Chosen::Random),
        },
    };
    let pinned_pool = pinned_pool(route, req, health);
    let pool_id = match pinned_pool {
        Some(pool) => pool,
        None => choose_pool(&route.split, bucket, health).ok_or(refused)?,
    };
    let pool = table.pools.get(usize::from(pool_id)).ok_or(refused)?;
    let server = sticky_server(pool_id, pool, incoming, health)
        .or_else(|| balance(pool_id, pool, req.random, health))
        .ok_or(refused)?;
    let set_cookie = route.sticky.is_some()
        && incoming
            .is_none_or(|c| c.bucket != bucket || Some(c.server_id) != cookie_id(pool, server));
    Ok(Decision {
        route: route_id,
        pool: pool_id,
        server,
        bucket,
        chosen: if pinned_pool.is_some() {
            Chosen::Pin
        } else {
            placed
        },
        set_cookie,
        mirror: mirror_draw(route, req.random),
    })
}

/// The value of the `Set-Cookie` a decision with `set_cookie` asks for, or `None` when the route
/// is not sticky.
pub fn sticky_value(table: &Table, decision: &Decision) -> Option<sticky::StickyValue> {
    let route = table.routes.get(usize::from(decision.route))?;
    route.sticky.as_ref()?;
    let pool = table.pools.get(usize::from(decision.pool))?;
    let id = cookie_id(pool, decision.server)?;
    Some(sticky::encode(route.seed, decision.bucket, id))
}

/// For a connect-failure retry: the `attempt`-th (1-based) available server after `first` in
/// index order, wrapping around, never `first` itself. `None` when there is none.
pub fn fallback(
    table: &Table,
    health: &impl HealthView,
    pool: PoolId,
    first: ServerId,
    attempt: u32,
) -> Option<ServerId> {
    let n = table.pools.get(usize::from(pool))?.servers.len();
    if attempt == 0 || usize::from(first) >= n {
        return None;
    }
    let mut remaining = attempt;
    for step in 1..n {
        let candidate = server_id((usize::from(first) + step) % n)?;
        if health.available(pool, candidate) {
            remaining -= 1;
            if remaining == 0 {
                return Some(candidate);
            }
        }
    }
    None
}

/// Where a copy of a decided request goes: the route's mirror pool and a server of it picked by
/// the pool's balance among its available servers, as for any request (a copy has no cookie:
/// there is no user to keep on a server). `None` when the route mirrors nothing or its mirror
/// pool has no available server.
pub fn mirror_target(
    table: &Table,
    route: RouteId,
    random: u64,
    health: &impl HealthView,
) -> Option<(PoolId, ServerId)> {
    let mirror = table.routes.get(usize::from(route))?.mirror.as_ref()?;
    let pool = table.pools.get(usize::from(mirror.pool))?;
    let server = balance(mirror.pool, pool, random, health)?;
    Some((mirror.pool, server))
}

fn server_id(index: usize) -> Option<ServerId> {
    ServerId::try_from(index).ok()
}

fn cookie_id(pool: &Pool, server: ServerId) -> Option<u64> {
    pool.servers.get(usize::from(server)).map(|s| s.cookie_id)
}

/// Step 1: the first route whose hosts and path prefix match.
fn find_route<'t>(table: &'t Table, req: &RequestView<'_>) -> Option<(RouteId, &'t Route)> {
    let host = matcher::host_name(req.host);
    table
        .routes
        .iter()
        .enumerate()
        .find(|(_, r)| {
            matcher::path_matches(&r.path_prefix, req.path) && matcher::host_matches(&r.hosts, host)
        })
        .and_then(|(i, r)| Some((RouteId::try_from(i).ok()?, r)))
}

/// Step 2: the pool of the first matching pin, if it has an available server. Only the first
/// match counts: when its pool is down the split decides (SPEC step 2), not a later pin.
fn pinned_pool(route: &Route, req: &RequestView<'_>, health: &impl HealthView) -> Option<PoolId> {
    let pin = route
        .pins
        .iter()
        .find(|pin| matcher::pin_matches(&pin.matcher, req))?;
    health.pool_available(pin.pool).then_some(pin.pool)
}

fn incoming_cookie(route: &Route, req: &RequestView<'_>) -> Option<Incoming> {
    let sticky = route.sticky.as_ref()?;
    let value = matcher::cookie(req.headers, &sticky.cookie)?;
    let (bucket, server_id) = sticky::decode(route.seed, value)?;
    Some(Incoming { bucket, server_id })
}

/// Step 3, from `hash_key`: `None` when the route has none or the request lacks it (an empty
/// value counts as lacking it, so that clients without a key are not all herded onto one bucket).
fn hashed_bucket(route: &Route, req: &RequestView<'_>) -> Option<u16> {
    let key: &[u8] = match route.hash_key.as_ref()? {
        HashKey::Header(name) => req.headers.get(name)?.as_bytes(),
        HashKey::Cookie(name) => matcher::cookie(req.headers, name)?.as_bytes(),
        HashKey::ClientIp => {
            return Some(hash::bucket(
                route.seed,
                hash::IpKey::new(req.client_ip).as_bytes(),
            ))
        }
    };
    (!key.is_empty()).then(|| hash::bucket(route.seed, key))
}

fn random_bucket(random: u64) -> u16 {
    (hash::draw(random, hash::Lane::Bucket) % u64::from(BUCKETS)) as u16
}

fn mirror_draw(route: &Route, random: u64) -> bool {
    route
        .mirror
        .as_ref()
        .is_some_and(|m| hash::draw(random, hash::Lane::Mirror) % 100 < u64::from(m.percent))
}

/// Step 4: the split's eligible entries (non-zero weight, pool available) laid end to end over
/// `0..BUCKETS`; the bucket's segment names the pool. With every entry eligible this is exactly
/// the precomputed `upper` bounds.
fn choose_pool(split: &[SplitEntry], bucket: u16, health: &impl HealthView) -> Option<PoolId> {
    let mut eligible_total = 0u64;
    let mut all_eligible = true;
    for entry in split.iter().filter(|e| e.weight > 0) {
        if health.pool_available(entry.pool) {
            eligible_total += u64::from(entry.weight);
        } else {
            all_eligible = false;
        }
    }
    if eligible_total == 0 {
        return None;
    }
    if all_eligible {
        let hit = split.iter().find(|e| e.weight > 0 && bucket < e.upper);
        // The last upper is BUCKETS; the fallback only guards a malformed table.
        return hit
            .or_else(|| split.iter().rfind(|e| e.weight > 0))
            .map(|e| e.pool);
    }
    let mut cumulative = 0u64;
    let mut last = None;
    for entry in split.iter().filter(|e| e.weight > 0) {
        if !health.pool_available(entry.pool) {
            continue;
        }
        cumulative += u64::from(entry.weight);
        last = Some(entry.pool);
        if u64::from(bucket) < cumulative * u64::from(BUCKETS) / eligible_total {
            return last;
        }
    }
    // Health changed between the two passes: the last eligible pool still serves.
    last
}

/// Step 5, from the cookie: its server if it is in this pool and available.
fn sticky_server(
    pool_id: PoolId,
    pool: &Pool,
    incoming: Option<Incoming>,
    health: &impl HealthView,
) -> Option<ServerId> {
    let wanted = incoming?.server_id;
    let index = pool.servers.iter().position(|s| s.cookie_id == wanted)?;
    let server = server_id(index)?;
    health.available(pool_id, server).then_some(server)
}

/// Step 5, from the pool's balance.
fn balance(
    pool_id: PoolId,
    pool: &Pool,
    random: u64,
    health: &impl HealthView,
) -> Option<ServerId> {
    match pool.balance {
        Balance::RoundRobin => round_robin(pool_id, pool, health),
        Balance::LeastRequest => least_request(pool_id, pool, random, health),
    }
}

/// The counter's place in `rr_order`, then forward to the first available server.
fn round_robin(pool_id: PoolId, pool: &Pool, health: &impl HealthView) -> Option<ServerId> {
    let order = &pool.rr_order;
    if order.is_empty() {
        return first_available(pool_id, pool, 0, health);
    }
    let len = order.len();
    let start = (health.next_round_robin(pool_id) % len as u64) as usize;
    (0..len)
        .map(|step| order[(start + step) % len])
        .find(|&s| usize::from(s) < pool.servers.len() && health.available(pool_id, s))
        .or_else(|| first_available(pool_id, pool, 0, health))
}

/// Power of two choices: two distinct servers drawn by weight (a uniform index into the
/// weighted `rr_order`), the available one with fewer requests in flight (ties: the first).
fn least_request(
    pool_id: PoolId,
    pool: &Pool,
    random: u64,
    health: &impl HealthView,
) -> Option<ServerId> {
    let n = pool.servers.len();
    let (a, b) = two_choices(pool, random)?;
    let up = |s: ServerId| usize::from(s) < n && health.available(pool_id, s);
    match (up(a), up(b)) {
        (true, true) if health.in_flight(pool_id, b) < health.in_flight(pool_id, a) => Some(b),
        (true, _) => Some(a),
        (false, true) => Some(b),
        (false, false) => first_available(pool_id, pool, usize::from(a), health),
    }
}

/// Two distinct servers (the same one twice only in a pool of one).
fn two_choices(pool: &Pool, random: u64) -> Option<(ServerId, ServerId)> {
    let first = hash::draw(random, hash::Lane::FirstChoice);
    let second = hash::draw(random, hash::Lane::SecondChoice);
    let order = &pool.rr_order;
    if order.is_empty() {
        let n = pool.servers.len() as u64;
        if n == 0 {
            return None;
        }
        let a = first % n;
        let b = if n == 1 {
            a
        } else {
            (a + 1 + second % (n - 1)) % n
        };
        return Some((server_id(a as usize)?, server_id(b as usize)?));
    }
    let len = order.len();
    let a = order[(first % len as u64) as usize];
    let start = (second % len as u64) as usize;
    let b = (0..len)
        .map(|step| order[(start + step) % len])
        .find(|&s| s != a)
        .unwrap_or(a);
    Some((a, b))
}

/// Any available server, scanning in index order from `start`.
fn first_available(
    pool_id: PoolId,
    pool: &Pool,
    start: usize,
    health: &impl HealthView,
) -> Option<ServerId> {
    let n = pool.servers.len();
    (0..n)
        .filter_map(|step| server_id((start + step) % n))
        .find(|&s| health.available(pool_id, s))
}
