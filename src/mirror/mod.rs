//! Shadow copies: for a request decided with `mirror`, a copy goes to a server of the route's
//! mirror pool, its answer is read to the end and discarded, and its status class is compared
//! with the primary's. The primary never waits on the copy: its body is teed chunk by chunk into
//! a bounded channel with `try_send` (a full channel abandons the copy, never holds the primary
//! back), the copy runs in a task of its own with its own timeouts, and what becomes of it is
//! counted here (`sent`, `skipped`, `dropped`, `failed`, mismatches), never reported as an
//! outcome of the primary's servers: a shadow's failures touch no one's health, retries or
//! answer. Copies in flight per route are capped by `max_in_flight`; over it a copy is dropped.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::conn::ClientBody;
use http::{request, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::conn::ConnContext;
use crate::kept::Kept;
use crate::proxy::headers;
use crate::route::table::{PoolId, RouteId, ServerId, Table};
use crate::route::{self, Decision};
use crate::state::Snapshot;
use crate::telemetry::Throttled;
use crate::upstream::{self, ReqBody};

mod tee;

use tee::{tee, FeedState};
pub use tee::{CopyBody, Tee};

/// Marks a copy, so that the shadow can tell it from real traffic.
pub static X_VEER_SHADOW: HeaderName = HeaderName::from_static("x-veer-shadow");

/// Chunks of a body that may wait for the copy's connection; when it falls further behind, the
/// copy is abandoned rather than the primary held back.
const FEED_CHUNKS: usize = 64;

/// At most one mismatch sample a second per route is logged.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// What became of a request drawn for mirroring (`veer_mirror_requests_total`'s `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The copy went out and the shadow answered.
    Sent,
    /// Not mirrored: the body is over `max_body` (or the copy fell behind the primary's body,
    /// or the request is a protocol upgrade).
    Skipped,
    /// Over `max_in_flight`.
    Dropped,
    /// No shadow server available, a connect error, a timeout, a broken exchange, or a client
    /// that went away mid-body.
    Failed,
}

impl Fate {
    const ALL: [Fate; 4] = [Fate::Sent, Fate::Skipped, Fate::Dropped, Fate::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Sent => "sent",
            Fate::Skipped => "skipped",
            Fate::Dropped => "dropped",
            Fate::Failed => "failed",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One route's mirroring state, kept by (route, mirror pool) name across swaps: the copies in
/// flight, the counts shown by the admin API, and the pre-registered metric handles.
#[derive(Debug)]
pub struct MirrorLane {
    route: Box<str>,
    in_flight: AtomicU32,
    counts: [AtomicU64; 4],
    mismatches: AtomicU64,
    counters: [metrics::Counter; 4],
    mismatch_counter: metrics::Counter,
    sample: Mutex<Throttled>,
}

/// What the admin API shows of a route's mirroring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorCounts {
    pub in_flight: u32,
    pub sent: u64,
    pub skipped: u64,
    pub dropped: u64,
    pub failed: u64,
    pub mismatches: u64,
}

impl MirrorLane {
    fn new(route: &str, pool: &str) -> Self {
        crate::metrics::handle();
        let counter = |fate: Fate| {
            metrics::counter!(
                crate::metrics::MIRROR_REQUESTS,
                "route" => route.to_string(),
                "pool" => pool.to_string(),
                "outcome" => fate.as_str()
            )
        };
        Self {
            route: route.into(),
            in_flight: AtomicU32::new(0),
            counts: Default::default(),
            mismatches: AtomicU64::new(0),
            counters: Fate::ALL.map(counter),
            mismatch_counter: metrics::counter!(
                crate::metrics::MIRROR_MISMATCHES,
                "route" => route.to_string()
            ),
            sample: Mutex::new(Throttled::new(SAMPLE_EVERY)),
        }
    }

    fn count(&self, fate: Fate) {
        self.counts[fate.index()].fetch_add(1, Ordering::Relaxed);
        self.counters[fate.index()].increment(1);
    }

    pub fn counts(&self) -> MirrorCounts {
        let count = |fate: Fate| self.counts[fate.index()].load(Ordering::Relaxed);
        MirrorCounts {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            sent: count(Fate::Sent),
            skipped: count(Fate::Skipped),
            dropped: count(Fate::Dropped),
            failed: count(Fate::Failed),
            mismatches: self.mismatches.load(Ordering::Relaxed),
        }
    }

    /// Takes a place among the copies in flight if fewer than `max` are.
    fn try_begin(self: &Arc<Self>, max: u32) -> Option<CopyFlight> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(CopyFlight(Arc::clone(self)))
    }

    /// Counts a status-class mismatch and logs a sample at a bounded rate.
    fn mismatch(&self, sample: &Sample) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        self.mismatch_counter.increment(1);
        let unlogged = self
            .sample
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hit(Instant::now());
        if let Some(unlogged) = unlogged {
            tracing::info!(
                target: "veer::mirror",
                route = %self.route,
                method = %sample.method,
                path = %sample.uri,
                primary_status = sample.primary.as_u16(),
                shadow_status = sample.shadow.as_u16(),
                primary_ms = sample.primary_latency.as_secs_f64() * 1000.0,
                shadow_ms = sample.shadow_latency.as_secs_f64() * 1000.0,
                unlogged,
                "the shadow answered differently"
            );
        }
    }
}

/// A copy in flight; dropping it gives its place back.
#[derive(Debug)]
struct CopyFlight(Arc<MirrorLane>);

impl Drop for CopyFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One mismatch, as logged.
struct Sample {
    method: Method,
    uri: Uri,
    primary: StatusCode,
    shadow: StatusCode,
    primary_latency: Duration,
    shadow_latency: Duration,
}

/// The mirror lanes of one table, route for route (`None` for a route that mirrors nothing).
#[derive(Debug, Default)]
pub struct Mirrors {
    routes: Vec<Option<Arc<MirrorLane>>>,
}

impl Mirrors {
    pub fn get(&self, route: RouteId) -> Option<&Arc<MirrorLane>> {
        self.routes.get(usize::from(route))?.as_ref()
    }
}

/// (route, mirror pool) -> lane, for every lane some snapshot still holds.
#[derive(Debug, Default)]
pub struct MirrorRegistry {
    known: Kept<(Box<str>, Box<str>), MirrorLane>,
}

impl MirrorRegistry {
    /// The mirror lanes of `table`; metric handles are registered here, on the change path.
    pub fn reconcile(&self, table: &Table) -> Mirrors {
        let mut known = self.known.begin();
        let routes = table
            .routes
            .iter()
            .map(|route| {
                let mirror = route.mirror.as_ref()?;
                let pool = &table.pools.get(usize::from(mirror.pool))?.name;
                let key = (route.name.clone(), pool.clone());
                Some(known.get(key, || MirrorLane::new(&route.name, pool)))
            })
            .collect();
        Mirrors { routes }
    }
}

/// The primary's side of a copy: its answer goes to the copy's task for the comparison.
#[derive(Debug)]
pub struct Primary {
    answer: oneshot::Sender<(StatusCode, Duration)>,
    started: Instant,
}

impl Primary {
    /// The status the client gets; dropping a `Primary` unanswered leaves the copy uncompared.
    pub fn answered(self, status: StatusCode) {
        let _ = self.answer.send((status, self.started.elapsed()));
    }
}

/// Starts the copy of a request decided with `mirror`, unless it is skipped or dropped (and
/// counted so). Returns the primary's body, teed when the copy takes a body, and the handle for
/// the primary's answer when a copy went out. Never waits.
pub fn start(
    snap: &Arc<Snapshot>,
    decision: &Decision,
    parts: &request::Parts,
    body: ClientBody,
    ctx: &ConnContext,
    upgrading: bool,
) -> (ReqBody, Option<Primary>) {
    let route = snap.table.route(decision.route);
    let (Some(lane), Some(mirror)) = (snap.mirrors.get(decision.route), route.mirror.as_ref())
    else {
        return (ReqBody::Client(body), None);
    };
    // A tunnel cannot be copied; a declared length over the limit is known before any byte.
    if upgrading || body.size_hint().lower() > mirror.max_body {
        lane.count(Fate::Skipped);
        return (ReqBody::Client(body), None);
    }
    let Some(flight) = lane.try_begin(mirror.max_in_flight) else {
        lane.count(Fate::Dropped);
        return (ReqBody::Client(body), None);
    };
    let Some((pool, server)) =
        route::mirror_target(&snap.table, decision.route, rand::random(), &snap.slots)
    else {
        lane.count(Fate::Failed);
        return (ReqBody::Client(body), None);
    };
    let (primary_body, copy_body, feed) = if body.is_end_stream() {
        (ReqBody::Client(body), ReqBody::Empty, None)
    } else {
        let (tee, copy) = tee(body, mirror.max_body, Arc::clone(lane));
        let state = Arc::clone(&copy.state);
        (ReqBody::Teed(tee), ReqBody::Copy(copy), Some(state))
    };
    let (head, added) = copy_head(parts, ctx);
    let req = Request::from_parts(head, copy_body);
    let (answer, primary) = oneshot::channel();
    let started = Instant::now();
    let copy = Copy {
        snap: Arc::clone(snap),
        pool,
        server,
        flight,
        feed,
        primary,
    };
    tokio::spawn(copy.run(req, added));
    (primary_body, Some(Primary { answer, started }))
}

/// The copy's head: the client's method, path, query and headers, rewritten as for the primary
/// (hop-by-hop removed), and the forwarding fields to add, plus `x-veer-shadow: 1`.
fn copy_head(parts: &request::Parts, ctx: &ConnContext) -> (request::Parts, headers::Added) {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    let (mut head, ()) = req.into_parts();
    let added = headers::prepare_request(&mut head, ctx, false)
        .with(X_VEER_SHADOW.clone(), HeaderValue::from_static("1"));
    (head, added)
}

/// Why a copy got no answer.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error(transparent)]
    Connect(#[from] upstream::ConnectError),
    #[error("shadow exchange: {0}")]
    Send(#[from] upstream::h1::Error),
    #[error("no answer from the shadow within {0:?}")]
    Timeout(Duration),
}

/// A copy on its way: sent, answered, read to the end, compared.
struct Copy {
    snap: Arc<Snapshot>,
    pool: PoolId,
    server: ServerId,
    flight: CopyFlight,
    feed: Option<Arc<FeedState>>,
    primary: oneshot::Receiver<(StatusCode, Duration)>,
}

impl Copy {
    async fn run(self, req: Request<ReqBody>, added: headers::Added) {
        let (method, uri) = (req.method().clone(), req.uri().clone());
        let started = Instant::now();
        let answered = exchange(&self.snap, self.pool, self.server, req, &added).await;
        let shadow_latency = started.elapsed();
        let lane = Arc::clone(&self.flight.0);
        drop(self.flight);
        let abandoned = self
            .feed
            .as_ref()
            .is_some_and(|f| f.abandoned.load(Ordering::Acquire));
        let (fate, shadow) = match answered {
            _ if abandoned => (Fate::Skipped, None),
            Ok(status) => (Fate::Sent, Some(status)),
            Err(e) => {
                tracing::debug!(route = %lane.route, error = %e, "shadow copy failed");
                (Fate::Failed, None)
            }
        };
        // A copy is counted once: its tee may have counted it skipped already.
        let counted = match &self.feed {
            Some(feed) => feed.settle(fate),
            None => {
                lane.count(fate);
                true
            }
        };
        let Some(shadow) = shadow.filter(|_| counted) else {
            return;
        };
        // The primary's answer comes within its own request_timeout, or never (client gone).
        let Ok((primary, primary_latency)) = self.primary.await else {
            return;
        };
        if primary.as_u16() / 100 != shadow.as_u16() / 100 {
            lane.mismatch(&Sample {
                method,
                uri,
                primary,
                shadow,
                primary_latency,
                shadow_latency,
            });
        }
    }
}

/// Sends the copy on a kept (or new) connection of the shadow server, within the proxy's
/// `request_timeout` for the head and again for the body, which is read to the end and
/// discarded. The server's in-flight count follows the copy (least_request sees it); no outcome
/// is reported: a shadow's failures are nobody's health.
async fn exchange(
    snap: &Snapshot,
    pool: PoolId,
    server: ServerId,
    req: Request<ReqBody>,
    added: &headers::Added,
) -> Result<StatusCode, CopyError> {
    let settings = &snap.table.proxy;
    let _in_flight = snap.slots.server(pool, server).begin();
    let conns = snap.conns.server(pool, server);
    let target = &snap.table.pool(pool).servers[usize::from(server)].target;
    // The mirror pool's own TLS, as for any request to its servers.
    let tls = snap.upstream_tls[usize::from(pool)].as_ref();
    let timeout = settings.request_timeout;
    let (head, mut body) = req.into_parts();
    let head = async {
        let mut fresh = false;
        loop {
            let kept = if fresh {
                None
            } else {
                conns.take(Instant::now(), settings.upstream_idle_timeout)
            };
            let reused = kept.is_some();
            let conn = match kept {
                Some(conn) => conn,
                None => upstream::connect(target, settings.connect_timeout, tls).await?,
            };
            match conn.send(&head, body, added, false).await {
                Ok(resp) => return Ok::<_, CopyError>(resp),
                Err(failed) => match (failed.body, reused, failed.sent) {
                    // A kept connection closed before the copy went out: once more, on a new one.
                    (Some(back), true, false)
                        if matches!(failed.error, upstream::h1::Error::ClosedUnanswered(_)) =>
                    {
                        body = back;
                        fresh = true;
                    }
                    _ => return Err(failed.error.into()),
                },
            }
        }
    };
    let resp = tokio::time::timeout(timeout, head)
        .await
        .map_err(|_| CopyError::Timeout(timeout))??;
    let status = resp.status();
    let mut body = resp.into_body();
    // Read to the end, the connection goes back to the pool (by the body itself).
    body.keep_in(Arc::clone(conns));
    let drain = async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return false;
            }
        }
        true
    };
    let _ = tokio::time::timeout(timeout, drain).await;
    Ok(status)
}
