//! Runtime state per lane of a route's split, a (route, pool) pair, kept by those names across
//! table swaps exactly as the registry keeps servers: a lane that remains keeps its value, a new
//! one gets a fresh value, and one no snapshot holds is forgotten. Held in the snapshot index
//! for index with each route's split, so the hot path and the tasks that follow health never
//! look a name up. Holds the lane's pre-registered metric handles and its request statistics
//! (`stats`), which rollout analysis reads.

use std::sync::Arc;

use crate::kept::Kept;
use crate::route::table::{PoolId, RouteId, Table};

/// One (route, pool) lane.
#[derive(Debug)]
pub struct Lane {
    /// `veer_route_effective_percent{route, pool}`.
    pub effective: metrics::Gauge,
    /// Attempts, errors and latencies of this route's requests to this pool.
    pub stats: crate::stats::Stats,
}

impl Lane {
    fn new(route: &str, pool: &str) -> Self {
        crate::metrics::handle();
        Self {
            effective: metrics::gauge!(
                crate::metrics::ROUTE_EFFECTIVE,
                "route" => route.to_string(),
                "pool" => pool.to_string()
            ),
            stats: crate::stats::Stats::default(),
        }
    }
}

/// The lanes of one table: `routes[route][entry]`, entry for entry with `Route::split`.
#[derive(Debug, Default)]
pub struct Lanes {
    routes: Vec<Vec<Arc<Lane>>>,
}

impl Lanes {
    /// The lane of a route's `entry`-th split entry.
    pub fn get(&self, route: RouteId, entry: usize) -> Option<&Arc<Lane>> {
        self.routes.get(usize::from(route))?.get(entry)
    }

    /// The lane of `pool` in `route`'s split (a short scan of the split); `None` for a pool
    /// the split does not name (a pin may send a request there).
    pub fn of_pool(&self, table: &Table, route: RouteId, pool: PoolId) -> Option<&Arc<Lane>> {
        let split = &table.routes.get(usize::from(route))?.split;
        let entry = split.iter().position(|e| e.pool == pool)?;
        self.get(route, entry)
    }
}

/// (route, pool) -> lane, for every lane some snapshot still holds.
#[derive(Debug, Default)]
pub struct LaneRegistry {
    known: Kept<(Box<str>, Box<str>), Lane>,
}

impl LaneRegistry {
    /// The lanes of `table`. Runs on the change path only.
    pub fn reconcile(&self, table: &Table) -> Lanes {
        let mut known = self.known.begin();
        let routes = table
            .routes
            .iter()
            .map(|route| {
                route
                    .split
                    .iter()
                    .map(|entry| {
                        let pool = &table.pool(entry.pool).name;
                        let key = (route.name.clone(), pool.clone());
                        known.get(key, || Lane::new(&route.name, pool))
                    })
                    .collect()
            })
            .collect();
        Lanes { routes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(split: &str) -> Table {
        let text = format!(
            "[pools.blue]\nservers = [\"127.0.0.1:1\"]\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {{ {split} }}\n"
        );
        crate::config::from_toml(&text, "t.toml").unwrap().table
    }

    #[test]
    fn a_lane_keeps_its_state_while_its_route_and_pool_remain() {
        let registry = LaneRegistry::default();
        let first = registry.reconcile(&table("blue = 90, green = 10"));
        // The split's order changes: each lane follows its pool, not its place.
        let second = registry.reconcile(&table("green = 50, blue = 50"));
        let (blue, green) = (first.get(0, 0).unwrap(), first.get(0, 1).unwrap());
        assert!(Arc::ptr_eq(blue, second.get(0, 1).unwrap()));
        assert!(Arc::ptr_eq(green, second.get(0, 0).unwrap()));
        assert!(second.get(0, 2).is_none() && second.get(1, 0).is_none());
    }
}
