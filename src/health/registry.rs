//! The registry: one runtime slot per (pool name, server address), with atomics only. A table
//! swap reconciles it: servers that remain keep their slot (health, drain state, in-flight
//! count); servers that left are forgotten once no snapshot holds them. Knows nothing of
//! sockets: idle connections are `upstream::pool`'s.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::kept::Kept;
use crate::metrics::ServerMetrics;
use crate::route::table::{PoolId, ServerId, Table};
use crate::route::HealthView;

const UNHEALTHY: u8 = 1;
const DRAINING: u8 = 2;
const EJECTED: u8 = 4;

/// Runtime state of one server of one pool.
#[derive(Debug)]
pub struct ServerSlot {
    pub pool: Box<str>,
    pub addr: Box<str>,
    /// Bit set of reasons the server takes no new requests; 0 = available.
    flags: AtomicU8,
    in_flight: AtomicU32,
    pub metrics: ServerMetrics,
}

impl ServerSlot {
    fn new(pool: &str, addr: &str) -> Self {
        Self {
            pool: pool.into(),
            addr: addr.into(),
            flags: AtomicU8::new(0),
            in_flight: AtomicU32::new(0),
            metrics: ServerMetrics::register(pool, addr),
        }
    }

    pub fn available(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == 0
    }

    pub fn draining(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & DRAINING != 0
    }

    pub fn healthy(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & (UNHEALTHY | EJECTED) == 0
    }

    pub fn set_draining(&self, on: bool) {
        self.set_flag(DRAINING, on);
    }

    pub fn set_unhealthy(&self, on: bool) {
        self.set_flag(UNHEALTHY, on);
    }

    pub fn set_ejected(&self, on: bool) {
        self.set_flag(EJECTED, on);
    }

    fn set_flag(&self, flag: u8, on: bool) {
        if on {
            self.flags.fetch_or(flag, Ordering::Relaxed);
        } else {
            self.flags.fetch_and(!flag, Ordering::Relaxed);
        }
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
    servers: Vec<Arc<ServerSlot>>,
    round_robin: AtomicU64,
}

impl Slots {
    pub fn server(&self, pool: PoolId, server: ServerId) -> &Arc<ServerSlot> {
        &self.pools[usize::from(pool)].servers[usize::from(server)]
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

    fn pool_available(&self, pool: PoolId) -> bool {
        self.pools[usize::from(pool)]
            .servers
            .iter()
            .any(|s| s.available())
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

/// (pool, address) -> slot, for every server some snapshot still holds.
#[derive(Debug, Default)]
pub struct Registry {
    known: Kept<ServerKey, ServerSlot>,
}

impl Registry {
    /// The slots for `table`: existing ones for servers that remain, fresh ones for new servers.
    /// Runs on the change path only.
    pub fn reconcile(&self, table: &Table) -> Slots {
        let mut known = self.known.begin();
        let pools = table
            .pools
            .iter()
            .map(|pool| PoolSlots {
                servers: pool
                    .servers
                    .iter()
                    .map(|server| {
                        let key = (pool.name.clone(), server.addr.clone());
                        known.get(key, || ServerSlot::new(&pool.name, &server.addr))
                    })
                    .collect(),
                round_robin: AtomicU64::new(0),
            })
            .collect();
        Slots { pools }
    }
}
