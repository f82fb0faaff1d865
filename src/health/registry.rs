//! The registry: one runtime slot per (pool name, server address) and one per pool name, read
//! and written with atomics on the request path. A table swap reconciles it: servers and pools that remain keep their slot
//! (health, ejections, drain state, in-flight count, the pool's count of available servers);
//! those that left are forgotten once no snapshot holds them. Knows nothing of sockets: idle
//! connections are `upstream::pool`'s.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::health::{active, passive};
use crate::kept::Kept;
use crate::metrics::ServerMetrics;
use crate::route::table::{PoolId, ServerId, Table};
use crate::route::HealthView;

const UNHEALTHY: u8 = 1;
const DRAINING: u8 = 2;
const EJECTED: u8 = 4;
/// Not a reason to refuse requests: the server is in the newest table's pool, so it counts in
/// the pool's `available` (a server only older snapshots hold does not).
const MEMBER: u8 = 0x80;
const REASONS: u8 = UNHEALTHY | DRAINING | EJECTED;

/// Runtime state of one pool, kept by pool name across swaps.
#[derive(Debug)]
pub struct PoolState {
    /// Woken when the pool gains its first available server or loses its last (the effective
    /// split changes).
    changed: Arc<Notify>,
    /// Servers of the newest table's pool that take new requests now. Kept by the flag setters,
    /// so that `pool_available` reads one atomic instead of scanning.
    available: AtomicU32,
    /// Servers in the newest table's pool.
    members: AtomicU32,
    /// Servers of the pool ejected by outlier detection now (`max_ejection_percent`).
    ejected: AtomicU32,
}

impl PoolState {
    fn new(changed: Arc<Notify>) -> Self {
        Self {
            changed,
            available: AtomicU32::new(0),
            members: AtomicU32::new(0),
            ejected: AtomicU32::new(0),
        }
    }

    fn count_up(&self) {
        if self.available.fetch_add(1, Ordering::Relaxed) == 0 {
            self.changed.notify_one();
        }
    }

    fn count_down(&self) {
        if self.available.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.changed.notify_one();
        }
    }

    pub fn available(&self) -> u32 {
        self.available.load(Ordering::Relaxed)
    }

    pub fn members(&self) -> u32 {
        self.members.load(Ordering::Relaxed)
    }

    pub fn ejected(&self) -> u32 {
        self.ejected.load(Ordering::Relaxed)
    }

    /// Takes one place among the pool's outlier ejections if `max_percent` of its members
    /// allows one more; `false` leaves the count unchanged.
    pub fn try_take_ejection(&self, max_percent: u8) -> bool {
        let members = u64::from(self.members());
        self.ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                let after = u64::from(n) + 1;
                (after * 100 <= members * u64::from(max_percent)).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a place taken by `try_take_ejection`.
    pub fn release_ejection(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

/// Runtime state of one server of one pool.
#[derive(Debug)]
pub struct ServerSlot {
    pub pool: Box<str>,
    pub addr: Box<str>,
    /// Bit set of reasons the server takes no new requests (none = available), and `MEMBER`.
    flags: AtomicU8,
    /// The pool's state: the same for every server of one pool name.
    pub pool_state: Arc<PoolState>,
    in_flight: AtomicU32,
    pub metrics: ServerMetrics,
    pub passive: passive::Tracker,
    pub active: active::Tracker,
    ejections: Ejections,
}

/// Why a server was last taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Active checks failed `unhealthy_threshold` times in a row.
    Active,
    /// Passive outlier ejection.
    Outlier,
}

impl Reason {
    /// The `reason` label of `veer_ejections_total` and the API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Active => "active",
            Reason::Outlier => "outlier",
        }
    }
}

/// A server's ejection record, for the operator's view.
#[derive(Debug, Default)]
struct Ejections {
    /// Times the server was taken out (active or outlier).
    count: AtomicU32,
    /// 0: never; 1: active; 2: outlier.
    reason: AtomicU8,
    /// Unix milliseconds when the current outlier ejection's time is up; 0 when none.
    until_ms: AtomicU64,
}

/// What the operator's view shows of a server's ejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionView {
    pub count: u32,
    /// The reason of the last one.
    pub reason: Option<Reason>,
    /// When the current outlier ejection's time is up.
    pub until: Option<SystemTime>,
}

impl ServerSlot {
    fn new(pool: &str, addr: &str, pool_state: Arc<PoolState>) -> Self {
        Self {
            pool: pool.into(),
            addr: addr.into(),
            flags: AtomicU8::new(0),
            pool_state,
            in_flight: AtomicU32::new(0),
            metrics: ServerMetrics::register(pool, addr),
            passive: passive::Tracker::default(),
            active: active::Tracker::default(),
            ejections: Ejections::default(),
        }
    }

    pub fn available(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & REASONS == 0
    }

    pub fn draining(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & DRAINING != 0
    }

    pub fn healthy(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (UNHEALTHY | EJECTED) == 0
    }

    /// `true` when that changed whether the server is available.
    pub fn set_draining(&self, on: bool) -> bool {
        self.set_flag(DRAINING, on)
    }

    /// `true` when that changed whether the server is available.
    pub fn set_unhealthy(&self, on: bool) -> bool {
        let changed = self.set_flag(UNHEALTHY, on);
        self.metrics.set_healthy(self.healthy());
        changed
    }

    pub fn ejected(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & EJECTED != 0
    }

    pub fn unhealthy(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & UNHEALTHY != 0
    }

    /// Sets or clears the ejected flag; `true` when the flag itself changed, so that of two
    /// concurrent ejections of one server exactly one wins.
    pub fn set_ejected(&self, on: bool) -> bool {
        let was = self.flags.load(Ordering::Relaxed) & EJECTED != 0;
        if was == on {
            return false;
        }
        let before = if on {
            self.flags.fetch_or(EJECTED, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!EJECTED, Ordering::Relaxed)
        };
        self.count_change(before, on, EJECTED);
        self.metrics.set_healthy(self.healthy());
        (before & EJECTED != 0) != on
    }

    /// Records that the server was taken out; `time`: how long an outlier ejection lasts.
    pub fn record_ejection(&self, reason: Reason, time: Option<Duration>) {
        let record = &self.ejections;
        record.count.fetch_add(1, Ordering::Relaxed);
        let code = match reason {
            Reason::Active => 1,
            Reason::Outlier => 2,
        };
        record.reason.store(code, Ordering::Relaxed);
        if let Some(time) = time {
            let until = SystemTime::now() + time;
            let ms = until
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            record.until_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// The outlier ejection ended.
    pub fn record_ejection_end(&self) {
        self.ejections.until_ms.store(0, Ordering::Relaxed);
    }

    pub fn ejection(&self) -> EjectionView {
        let record = &self.ejections;
        let reason = match record.reason.load(Ordering::Relaxed) {
            1 => Some(Reason::Active),
            2 => Some(Reason::Outlier),
            _ => None,
        };
        let until = match record.until_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        };
        EjectionView {
            count: record.count.load(Ordering::Relaxed),
            reason,
            until,
        }
    }

    fn set_member(&self, on: bool) {
        self.set_flag(MEMBER, on);
    }

    /// Sets or clears `flag`; `true` when that changed whether the server is available. The
    /// pool's count follows every change exactly: the swap of the flags says what was before.
    fn set_flag(&self, flag: u8, on: bool) -> bool {
        let before = if on {
            self.flags.fetch_or(flag, Ordering::Relaxed)
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed)
        };
        self.count_change(before, on, flag)
    }

    /// Moves the pool's count for a change of `flag` from the `before` flags; `true` when the
    /// change made the server available or unavailable.
    fn count_change(&self, before: u8, on: bool, flag: u8) -> bool {
        let after = if on { before | flag } else { before & !flag };
        match (counted(before), counted(after)) {
            (false, true) => self.pool_state.count_up(),
            (true, false) => self.pool_state.count_down(),
            _ => {}
        }
        (before & REASONS == 0) != (after & REASONS == 0)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request to this server until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// The server counts in its pool's `available`: in the newest table, no reason to refuse.
fn counted(flags: u8) -> bool {
    flags == MEMBER
}

impl Drop for ServerSlot {
    fn drop(&mut self) {
        if counted(*self.flags.get_mut()) {
            self.pool_state.count_down();
        }
    }
}

/// One request in flight to a server; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<ServerSlot>);

impl InFlight {
    pub fn slot(&self) -> &Arc<ServerSlot> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The slots of one table, index for index: `pools[pool].servers[server]`.
#[derive(Debug, Default)]
pub struct Slots {
    pools: Vec<PoolSlots>,
}

#[derive(Debug)]
struct PoolSlots {
    state: Arc<PoolState>,
    servers: Vec<Arc<ServerSlot>>,
    round_robin: AtomicU64,
}

impl Slots {
    pub fn server(&self, pool: PoolId, server: ServerId) -> &Arc<ServerSlot> {
        &self.pools[usize::from(pool)].servers[usize::from(server)]
    }

    /// The pool's state.
    pub fn pool(&self, pool: PoolId) -> &Arc<PoolState> {
        &self.pools[usize::from(pool)].state
    }

    /// Every server slot of the table, pool by pool.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ServerSlot>> {
        self.pools.iter().flat_map(|p| p.servers.iter())
    }

    /// The slot, or `None` for indices outside this table.
    pub fn get(&self, pool: PoolId, server: ServerId) -> Option<&Arc<ServerSlot>> {
        self.pools
            .get(usize::from(pool))?
            .servers
            .get(usize::from(server))
    }
}

impl HealthView for Slots {
    fn available(&self, pool: PoolId, server: ServerId) -> bool {
        self.server(pool, server).available()
    }

    /// One atomic load while the pool has an available server. At 0 the servers are scanned:
    /// a snapshot older than the newest (a request decided just before a swap) may hold
    /// servers the newest table dropped, and those are not counted.
    fn pool_available(&self, pool: PoolId) -> bool {
        let pool = &self.pools[usize::from(pool)];
        pool.state.available() > 0 || pool.servers.iter().any(|s| s.available())
    }

    fn in_flight(&self, pool: PoolId, server: ServerId) -> u32 {
        self.server(pool, server).in_flight()
    }

    fn next_round_robin(&self, pool: PoolId) -> u64 {
        self.pools[usize::from(pool)]
            .round_robin
            .fetch_add(1, Ordering::Relaxed)
    }
}

/// A server's identity across tables: (pool name, address as written).
type ServerKey = (Box<str>, Box<str>);

/// (pool, address) -> slot and pool name -> pool state, for every one some snapshot still
/// holds.
#[derive(Debug, Default)]
pub struct Registry {
    known: Kept<ServerKey, ServerSlot>,
    pools: Kept<Box<str>, PoolState>,
    changed: Arc<Notify>,
}

impl Registry {
    /// Woken when some pool gains its first available server or loses its last.
    pub fn availability_changed(&self) -> &Notify {
        &self.changed
    }
}

impl Registry {
    /// The slots for `table`: existing ones for servers and pools that remain, fresh ones for
    /// new ones. `previous` are the slots of the table being replaced: its servers that are not
    /// in `table` stop counting in their pool's available servers. Runs on the change path
    /// only, serialised by it.
    pub fn reconcile(&self, table: &Table, previous: Option<&Slots>) -> Slots {
        let mut known = self.known.begin();
        let mut pool_states = self.pools.begin();
        let pools: Vec<PoolSlots> = table
            .pools
            .iter()
            .map(|pool| {
                let state = pool_states.get(pool.name.clone(), || {
                    PoolState::new(Arc::clone(&self.changed))
                });
                let servers = pool
                    .servers
                    .iter()
                    .map(|server| {
                        let key = (pool.name.clone(), server.addr.clone());
                        known.get(key, || {
                            ServerSlot::new(&pool.name, &server.addr, Arc::clone(&state))
                        })
                    })
                    .collect::<Vec<_>>();
                PoolSlots {
                    state,
                    servers,
                    round_robin: AtomicU64::new(0),
                }
            })
            .collect();
        let slots = Slots { pools };
        if let Some(previous) = previous {
            for pool in &previous.pools {
                pool.state.members.store(0, Ordering::Relaxed);
            }
            for old in previous.all() {
                if !slots.all().any(|s| Arc::ptr_eq(s, old)) {
                    old.set_member(false);
                }
            }
        }
        for pool in &slots.pools {
            let members = u32::try_from(pool.servers.len()).unwrap_or(u32::MAX);
            pool.state.members.store(members, Ordering::Relaxed);
        }
        for slot in slots.all() {
            slot.set_member(true);
        }
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> Table {
        let text = format!("{toml}\n[[routes]]\nname = \"web\"\nsplit = {{ blue = 1 }}\n");
        crate::config::from_toml(&text, "t.toml").unwrap().table
    }

    const TWO: &str = "[pools.blue]\nservers = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n";
    const ONE: &str = "[pools.blue]\nservers = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\n";

    #[test]
    fn the_pool_count_follows_flags_and_membership_across_swaps() {
        let registry = Registry::default();
        let first = registry.reconcile(&table(TWO), None);
        let pool = Arc::clone(first.pool(0));
        assert_eq!((pool.available(), pool.members()), (2, 2));
        assert!(first.server(0, 0).set_draining(true));
        assert!(first.server(0, 0).set_ejected(true));
        assert!(!first.server(0, 0).set_ejected(true), "already ejected");
        assert_eq!(pool.available(), 1);
        assert!(first.server(0, 1).set_unhealthy(true));
        assert_eq!(pool.available(), 0);
        assert!(!first.pool_available(0));
        assert!(first.server(0, 1).set_unhealthy(false));
        // 127.0.0.1:1 leaves, :3 comes: the pool's state and :2's slot are kept.
        let second = registry.reconcile(&table(ONE), Some(&first));
        assert!(Arc::ptr_eq(second.pool(0), &pool));
        assert!(Arc::ptr_eq(second.server(0, 0), first.server(0, 1)));
        assert_eq!((pool.available(), pool.members()), (2, 2));
        // The departed server's flags no longer move the count.
        first.server(0, 0).set_draining(false);
        first.server(0, 0).set_ejected(false);
        assert_eq!(pool.available(), 2);
        drop(first);
        assert_eq!(pool.available(), 2);
        drop(second);
        assert_eq!(pool.available(), 0, "dropped slots leave the count");
    }

    #[test]
    fn ejections_never_pass_the_pools_percent() {
        let registry = Registry::default();
        let slots = registry.reconcile(&table(TWO), None);
        let pool = slots.pool(0);
        assert!(pool.try_take_ejection(50));
        assert!(!pool.try_take_ejection(50), "the second of two is over 50%");
        assert!(pool.try_take_ejection(100));
        pool.release_ejection();
        pool.release_ejection();
        assert_eq!(pool.ejected(), 0);
        assert!(!pool.try_take_ejection(0));
    }
}
