//! The shared handles: the running snapshot (table plus the runtime slots and idle connections
//! of its servers) behind an `ArcSwap`, and the registries that outlive snapshots. No logic
//! beyond installing a snapshot.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::health::registry::{Registry, Slots};
use crate::lanes::{LaneRegistry, Lanes};
use crate::mirror::{MirrorRegistry, Mirrors};
use crate::route::Table;
use crate::upstream::pool::{Conns, Pools};

/// One consistent view for a request: the table and, index for index, its servers' runtime
/// state. A request loads it once and uses it to the end.
#[derive(Debug)]
pub struct Snapshot {
    pub table: Table,
    pub slots: Slots,
    /// Idle keep-alive connections, index for index with the table's servers.
    pub conns: Conns,
    /// Per (route, pool) state, entry for entry with each route's split.
    pub lanes: Lanes,
    /// Per route with `[routes.mirror]`: its copies in flight, counts and metric handles.
    pub mirrors: Mirrors,
    /// Each pool's TLS to its servers (`pools.NAME.tls`), index for index with the pools.
    pub upstream_tls: Vec<crate::tls::UpstreamTlsSlot>,
}

#[derive(Debug)]
pub struct State {
    current: ArcSwap<Snapshot>,
    registry: Registry,
    pools: Pools,
    lanes: LaneRegistry,
    mirrors: MirrorRegistry,
    access_log: AtomicBool,
    /// The certificates `listen.https` handshakes use now.
    pub certificates: Arc<crate::tls::Store>,
    /// The rollout driver's last analysis per route.
    pub rollouts: crate::rollout::driver::Analyses,
    /// The version of each installed table, for tasks that follow swaps (health checks).
    installed: watch::Sender<u64>,
}

impl State {
    /// A state serving `table`, as version 1 unless the table carries a later one (restored
    /// from a state file).
    pub fn new(mut table: Table) -> Self {
        let registry = Registry::default();
        let pools = Pools::default();
        let lanes = LaneRegistry::default();
        let mirrors = MirrorRegistry::default();
        table.version = table.version.max(1);
        let slots = registry.reconcile(&table, None);
        let conns = pools.reconcile(&table);
        Self {
            current: ArcSwap::from_pointee(Snapshot {
                slots,
                conns,
                lanes: lanes.reconcile(&table),
                mirrors: mirrors.reconcile(&table),
                upstream_tls: crate::tls::upstream_slots(&table),
                table,
            }),
            registry,
            pools,
            lanes,
            mirrors,
            access_log: AtomicBool::new(false),
            certificates: Arc::default(),
            rollouts: Default::default(),
            installed: watch::Sender::new(0),
        }
    }

    /// The snapshot in force now. Held for a whole request (an `Arc`, not a short-lived guard).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Installs `table` as the next version, keeping what is known about servers that remain.
    /// Callers serialise changes (the change path); readers never see a mix.
    pub fn install(&self, mut table: Table) -> u64 {
        let previous = self.current.load_full();
        let version = previous.table.version + 1;
        table.version = version;
        let slots = self.registry.reconcile(&table, Some(&previous.slots));
        let conns = self.pools.reconcile(&table);
        let lanes = self.lanes.reconcile(&table);
        let mirrors = self.mirrors.reconcile(&table);
        let upstream_tls = crate::tls::upstream_slots(&table);
        self.current.store(Arc::new(Snapshot {
            upstream_tls,
            table,
            slots,
            conns,
            lanes,
            mirrors,
        }));
        self.installed.send_replace(version);
        version
    }

    /// Woken when some pool gains its first available server or loses its last.
    pub fn availability_changed(&self) -> &tokio::sync::Notify {
        self.registry.availability_changed()
    }

    /// Turns changed each time a table is installed.
    pub fn installed(&self) -> watch::Receiver<u64> {
        self.installed.subscribe()
    }

    /// One log line per request (`log.access`).
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }
}
