//! Runtime state per lane of a route, a (route, pool) pair, kept by those names across table
//! swaps exactly as the registry keeps servers: a lane that remains keeps its value, a new one
//! gets a fresh value, and one no snapshot holds is forgotten. A route has a lane for each
//! entry of its split, in split order, then one for each pool only its pins name. Held in the
//! snapshot, so the hot path and the tasks that follow health never look a name up. Holds the
//! lane's pre-registered metric handles, its request statistics (`stats`, which rollout
//! analysis and `GET /api/v1/stats` read) and their per-second history.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::kept::Kept;
use crate::route::table::{PoolId, RouteId, Table};
use crate::stats::History;

/// One (route, pool) lane.
#[derive(Debug)]
pub struct Lane {
    pub route: Box<str>,
    pub pool: Box<str>,
    /// `veer_route_weight_percent{route, pool}`.
    pub weight: metrics::Gauge,
    /// `veer_route_effective_percent{route, pool}`.
    pub effective: metrics::Gauge,
    /// `veer_requests_total{route, pool, code}`, for `1xx` … `5xx`.
    requests: [metrics::Counter; 5],
    /// `veer_request_duration_seconds{route, pool}`.
    duration: metrics::Histogram,
    /// Attempts, errors and latencies of this route's requests to this pool (what rollout
    /// analysis judges: a connect-failure retry is a second attempt).
    pub stats: crate::stats::Stats,
    /// Requests as their clients saw them: one per request, the status it got, the time to
    /// its answer's head (what `GET /api/v1/stats` shows, as `veer_requests_total` counts).
    pub answered: crate::stats::Stats,
    /// `answered` once a second, for the windows of `GET /api/v1/stats`.
    pub history: Mutex<History>,
}

impl Lane {
    fn new(route: &str, pool: &str) -> Self {
        crate::metrics::handle();
        let labels = [("route", route.to_string()), ("pool", pool.to_string())];
        let code = |class: &'static str| {
            let mut labels = labels.to_vec();
            labels.push(("code", class.to_string()));
            metrics::counter!(crate::metrics::REQUESTS, &labels)
        };
        Self {
            route: route.into(),
            pool: pool.into(),
            weight: metrics::gauge!(crate::metrics::ROUTE_WEIGHT, &labels),
            effective: metrics::gauge!(crate::metrics::ROUTE_EFFECTIVE, &labels),
            requests: ["1xx", "2xx", "3xx", "4xx", "5xx"].map(code),
            duration: metrics::histogram!(crate::metrics::REQUEST_DURATION, &labels),
            stats: crate::stats::Stats::default(),
            answered: crate::stats::Stats::default(),
            history: Mutex::new(History::default()),
        }
    }

    /// Counts one request this lane served: the status its client got and the time from its
    /// arrival to that response's head. Pre-registered handles only: no label is formatted.
    pub fn served(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].increment(1);
        self.duration.record(took.as_secs_f64());
        self.answered.record_answer(status, took);
    }

    /// Adds the totals of this second to the history (the stats recorder, once a second).
    pub fn remember(&self, at: tokio::time::Instant) {
        let totals = self.answered.totals();
        self.history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(at, totals);
    }
}

/// The lanes of one table: `routes[route]` holds `(pool, lane)` for each split entry, in split
/// order, then for each pool only the route's pins name.
#[derive(Debug, Default)]
pub struct Lanes {
    routes: Vec<Vec<(PoolId, Arc<Lane>)>>,
}

impl Lanes {
    /// The lane of a route's `entry`-th split entry.
    pub fn get(&self, route: RouteId, entry: usize) -> Option<&Arc<Lane>> {
        self.routes
            .get(usize::from(route))?
            .get(entry)
            .map(|(_, lane)| lane)
    }

    /// The lane of `pool` in `route` (a short scan of the route's lanes); `None` for a pool
    /// the route never sends to.
    pub fn of_pool(&self, route: RouteId, pool: PoolId) -> Option<&Arc<Lane>> {
        self.routes
            .get(usize::from(route))?
            .iter()
            .find(|(p, _)| *p == pool)
            .map(|(_, lane)| lane)
    }

    /// Every lane of `route`, split entries first.
    pub fn of_route(&self, route: RouteId) -> impl Iterator<Item = &Arc<Lane>> {
        self.routes
            .get(usize::from(route))
            .into_iter()
            .flatten()
            .map(|(_, lane)| lane)
    }

    /// Every lane of the table.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Lane>> {
        self.routes.iter().flatten().map(|(_, lane)| lane)
    }
}

/// (route, pool) -> lane, for every lane some snapshot still holds.
#[derive(Debug, Default)]
pub struct LaneRegistry {
    known: Kept<(Box<str>, Box<str>), Lane>,
}

impl LaneRegistry {
    /// The lanes of `table`, with each split lane's `veer_route_weight_percent` set. Runs on
    /// the change path only.
    pub fn reconcile(&self, table: &Table) -> Lanes {
        let mut known = self.known.begin();
        let routes = table
            .routes
            .iter()
            .map(|route| {
                let split = route.split.iter().map(|e| e.pool);
                let pinned = route
                    .pins
                    .iter()
                    .map(|pin| pin.pool)
                    .filter(|p| !route.split.iter().any(|e| e.pool == *p));
                let mut pools: Vec<PoolId> = split.collect();
                for pool in pinned {
                    if !pools.contains(&pool) {
                        pools.push(pool);
                    }
                }
                let total = f64::from(route.total_weight.max(1));
                pools
                    .into_iter()
                    .map(|pool_id| {
                        let pool = &table.pool(pool_id).name;
                        let key = (route.name.clone(), pool.clone());
                        let lane = known.get(key, || Lane::new(&route.name, pool));
                        let weight = route
                            .split
                            .iter()
                            .find(|e| e.pool == pool_id)
                            .map_or(0, |e| e.weight);
                        lane.weight.set(f64::from(weight) * 100.0 / total);
                        (pool_id, lane)
                    })
                    .collect()
            })
            .collect();
        Lanes { routes }
    }
}

/// Remembers every lane's totals once a second (`Lane::remember`), for the windows of
/// `GET /api/v1/stats`, and folds the queued histogram samples into their buckets, until
/// `shutdown` turns true.
pub async fn record_every_second(
    state: Arc<crate::state::State>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let now = tokio::time::Instant::now();
        for lane in state.snapshot().lanes.all() {
            lane.remember(now);
        }
        // The exporter queues each histogram sample until a scrape or an upkeep folds it into
        // the buckets: folding them here bounds that queue where nothing scrapes.
        crate::metrics::handle().run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(split: &str, extra: &str) -> Table {
        let text = format!(
            "[pools.blue]\nservers = [\"127.0.0.1:1\"]\n[pools.green]\nservers = [\"127.0.0.1:2\"]\n\
             [pools.beta]\nservers = [\"127.0.0.1:3\"]\n\
             [[routes]]\nname = \"web\"\nsplit = {{ {split} }}\n{extra}"
        );
        crate::config::from_toml(&text, "t.toml").unwrap().table
    }

    #[test]
    fn a_lane_keeps_its_state_while_its_route_and_pool_remain() {
        let registry = LaneRegistry::default();
        let first = registry.reconcile(&table("blue = 90, green = 10", ""));
        // The split's order changes: each lane follows its pool, not its place.
        let second = registry.reconcile(&table("green = 50, blue = 50", ""));
        let (blue, green) = (first.get(0, 0).unwrap(), first.get(0, 1).unwrap());
        assert!(Arc::ptr_eq(blue, second.get(0, 1).unwrap()));
        assert!(Arc::ptr_eq(green, second.get(0, 0).unwrap()));
        assert!(second.get(0, 2).is_none() && second.get(1, 0).is_none());
    }

    #[test]
    fn a_pool_only_a_pin_names_has_a_lane_after_the_split() {
        let pins = "[[routes.pin]]\nheader = \"x-beta\"\npool = \"beta\"\n";
        let t = table("blue = 1", pins);
        let lanes = LaneRegistry::default().reconcile(&t);
        let names: Vec<&str> = lanes.of_route(0).map(|l| &*l.pool).collect();
        assert_eq!(names, ["blue", "beta"]);
        let beta = t.pools.iter().position(|p| &*p.name == "beta").unwrap() as PoolId;
        assert_eq!(&*lanes.of_pool(0, beta).unwrap().pool, "beta");
        assert!(lanes.get(0, 1).is_some_and(|l| &*l.pool == "beta"));
    }
}
