//! Sends a decided request upstream: a pooled (or new) connection to the chosen server, the
//! request head rewritten, the body streamed, and on a connect failure the next server of the
//! same pool (`retries`); a bodiless idempotent request whose kept connection the server closed
//! unanswered goes again on a new one. The whole exchange up to the response head is bounded by
//! `request_timeout`.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use http::{request, HeaderValue, Method, Response, StatusCode};
use tokio::time::Instant;

use crate::conn::{Activity, ConnContext};
use crate::outcome::{self, Ended, ErrorKind, Outcome};
use crate::proxy::body::{Lease, RespBody};
use crate::proxy::error::{self, ProxyError};
use crate::proxy::{headers, upgrade};
use crate::route::table::{ProxySettings, Target};
use crate::route::{self, Decision, ServerId};
use crate::server::h1::ClientUpgrade;
use crate::state::Snapshot;
use crate::upstream::h1::{self, RespStream};
use crate::upstream::pool::ServerConns;
use crate::upstream::{self, Conn, ReqBody};

/// A request to forward, with what the decision said about it; its head is lent beside it.
pub struct Outbound {
    /// The client's body, teed when the request is mirrored.
    pub body: ReqBody,
    /// Set for an HTTP/1.1 `Upgrade` request: the client side of the switch.
    pub client_upgrade: Option<ClientUpgrade>,
    /// Where the access log line of an upgraded exchange arrives, for the tunnel to finish.
    pub tunnel_log: Option<tokio::sync::oneshot::Receiver<Box<crate::proxy::access::AccessRecord>>>,
}

/// What every attempt of one request sends: its head (lent, so that it stays where the request's
/// future put it rather than moving into each layer's), the fields added after it, and whether
/// it asks to switch protocols.
#[derive(Clone, Copy)]
struct Outgoing<'a> {
    head: &'a request::Parts,
    added: &'a headers::Added,
    upgrading: bool,
}

/// Forwards the request (`head`, rewritten here for the upstream, and `out`) as `decision`
/// says; the response head comes back with its body streaming, together with the server that
/// answered (another than the decision's after a retry) and when its head arrived. `started`: when the request arrived,
/// the start of its `request_timeout`.
pub async fn forward(
    snap: &Snapshot,
    decision: &Decision,
    head: &mut request::Parts,
    out: Outbound,
    ctx: &Arc<ConnContext>,
    started: Instant,
) -> Result<(Response<RespBody>, ServerId, Instant), ProxyError> {
    let settings = &snap.table.proxy;
    let upgrading = out.client_upgrade.is_some();
    let added = headers::prepare_request(head, ctx, upgrading);
    let outgoing = Outgoing {
        head,
        added: &added,
        upgrading,
    };
    let (resp, lease) = send(snap, decision, outgoing, out.body, started, &ctx.activity).await?;
    let (mut parts, body) = resp.into_parts();
    let switching = parts.status == StatusCode::SWITCHING_PROTOCOLS;
    headers::prepare_response(&mut parts.headers, switching && upgrading);
    let pool = snap.table.pool(decision.pool);
    if settings.expose_pool_header {
        parts
            .headers
            .insert(headers::X_VEER_POOL.clone(), pool.name_header.clone());
    }
    let (server, answered) = (lease.server, lease.answered);
    if let (true, Some(client)) = (switching, out.client_upgrade) {
        if let Some(upstream) = body.into_upgraded() {
            upgrade::tunnel(client, upstream, lease, Arc::clone(ctx), out.tunnel_log);
        }
        let resp = Response::from_parts(parts, RespBody::fixed(bytes::Bytes::new()));
        return Ok((resp, server, answered));
    }
    let resp = Response::from_parts(parts, RespBody::upstream(body, lease));
    Ok((resp, server, answered))
}

/// Connection, then the request; a connect failure moves on to the pool's next server, and a
/// kept connection that the server closed without answering costs an idempotent request without
/// a body nothing: it goes again on a new connection (the resend rule). Each attempt's outcome
/// is reported once, when its response head arrives or it fails; a resend after a kept
/// connection closed unanswered is not a server failure and reports nothing. Everything up to
/// the response head must be done by `request_timeout` after `started`: one timer for the whole
/// exchange, whatever the number of attempts.
async fn send(
    snap: &Snapshot,
    decision: &Decision,
    out: Outgoing<'_>,
    body: ReqBody,
    started: Instant,
    activity: &Activity,
) -> Result<(Response<RespStream>, Lease), ProxyError> {
    let settings = &snap.table.proxy;
    let mut current = Attempt {
        server: decision.server,
        started,
        reused: false,
    };
    let head_by = started + settings.request_timeout;
    let done = if activity.watch_head_by(head_by) {
        // The connection's watchdog keeps the deadline: a timer registered and removed per
        // request cost about 700 instructions. (The attempts' future is made in place: made
        // first and then pinned, it was copied whole.)
        let mut attempts = pin!(attempt(snap, decision, out, body, &mut current));
        let done = poll_fn(|cx| {
            if activity.head_overdue() {
                return Poll::Ready(None);
            }
            attempts.as_mut().poll(cx).map(Some)
        })
        .await;
        activity.clear_head_by();
        done
    } else {
        let attempts = attempt(snap, decision, out, body, &mut current);
        tokio::time::timeout_at(head_by, attempts).await.ok()
    };
    match done {
        Some(done) => done,
        None => {
            current.report(snap, decision, Ended::Failed(ErrorKind::Timeout));
            Err(ProxyError::Timeout(settings.request_timeout))
        }
    }
}

/// The attempt in progress: the one a timeout is charged to.
struct Attempt {
    server: ServerId,
    started: Instant,
    /// It went out on a kept connection.
    reused: bool,
}

impl Attempt {
    fn report(&self, snap: &Snapshot, decision: &Decision, ended: Ended) {
        self.report_at(snap, decision, ended, Instant::now());
    }

    /// Reports the attempt as ended at `now`.
    fn report_at(&self, snap: &Snapshot, decision: &Decision, ended: Ended, now: Instant) {
        let attempt = Outcome {
            route: decision.route,
            pool: decision.pool,
            server: self.server,
            ended,
            latency: now.saturating_duration_since(self.started),
            reused: self.reused,
        };
        outcome::report(snap, &attempt);
    }
}

/// The attempts of `send`, without its deadline; `current` follows the attempt in progress.
async fn attempt(
    snap: &Snapshot,
    decision: &Decision,
    out: Outgoing<'_>,
    mut body: ReqBody,
    current: &mut Attempt,
) -> Result<(Response<RespStream>, Lease), ProxyError> {
    let upgrading = out.upgrading;
    let settings = &snap.table.proxy;
    let pool = snap.table.pool(decision.pool);
    let mut tries = 0;
    let mut fresh = upgrading;
    loop {
        let server = current.server;
        let slot = snap.slots.server(decision.pool, server);
        let conns = snap.conns.server(decision.pool, server);
        let target = &pool.servers[usize::from(server)].target;
        let flight = slot.begin();
        let tls = snap.upstream_tls[usize::from(decision.pool)].as_ref();
        let obtained = obtain(conns, target, settings, fresh, tls, current.started);
        let (conn, reused) = match obtained.await {
            Ok(found) => found,
            Err(e) => {
                if e.is_tls() {
                    tracing::warn!(pool = %pool.name, server = %slot.addr, error = %e, "upstream TLS failed");
                } else {
                    tracing::debug!(pool = %pool.name, server = %slot.addr, error = %e, "connect failed");
                }
                current.report(snap, decision, Ended::Failed(ErrorKind::Connect));
                tries += 1;
                let next = (tries <= settings.retries)
                    .then(|| {
                        route::fallback(
                            &snap.table,
                            &snap.slots,
                            decision.pool,
                            decision.server,
                            tries,
                        )
                    })
                    .flatten();
                match next {
                    Some(next) => {
                        *current = Attempt {
                            server: next,
                            started: Instant::now(),
                            reused: false,
                        };
                        continue;
                    }
                    None => return Err(ProxyError::Connect(e)),
                }
            }
        };
        current.reused = reused;
        match conn.send(out.head, body, out.added, upgrading).await {
            Ok(mut resp) => {
                // One clock read for the attempt's latency and the request's (`Lease::answered`).
                let answered = Instant::now();
                let ended = Ended::Answered(resp.status().as_u16());
                current.report_at(snap, decision, ended, answered);
                if !upgrading {
                    resp.body_mut().keep_in(Arc::clone(conns));
                }
                let lease = Lease {
                    flight,
                    server,
                    reused,
                    answered,
                };
                return Ok((resp, lease));
            }
            Err(failed) => {
                // A kept connection that the server closed unanswered: a request that never
                // reached it, or one that may be sent twice, goes again, once, on a new
                // connection to the same server.
                match failed.body {
                    Some(back)
                        if reused
                            && matches!(failed.error, h1::Error::ClosedUnanswered(_))
                            && (!failed.sent || resendable(&out.head.method, &back)) =>
                    {
                        tracing::debug!(pool = %pool.name, server = %slot.addr, error = %failed.error, "kept connection closed unanswered; sending again on a new one");
                        body = back;
                        fresh = true;
                        *current = Attempt {
                            server,
                            started: Instant::now(),
                            reused: false,
                        };
                    }
                    _ => {
                        let e = error::from_send(failed.error);
                        if matches!(e, ProxyError::UpstreamProtocol(_)) {
                            current.report(snap, decision, Ended::Failed(ErrorKind::Protocol));
                        }
                        return Err(e);
                    }
                }
            }
        }
    }
}

/// A request that may be sent twice: idempotent by its method and without a body, so the
/// server cannot have acted on a first copy in a way a second would repeat.
fn resendable(method: &Method, body: &ReqBody) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
        && http_body::Body::is_end_stream(body)
}

/// The most recently used kept connection that is ready now, else a new one (always new when
/// `fresh`). `true` with a kept connection.
async fn obtain(
    conns: &ServerConns,
    target: &Target,
    settings: &ProxySettings,
    fresh: bool,
    tls: Option<&Result<crate::tls::UpstreamClient, std::sync::Arc<str>>>,
    now: Instant,
) -> Result<(Box<Conn>, bool), upstream::ConnectError> {
    if !fresh {
        if let Some(conn) = conns.take(now, settings.upstream_idle_timeout) {
            return Ok((conn, true));
        }
    }
    let conn = upstream::connect(target, settings.connect_timeout, tls).await?;
    Ok((conn, false))
}

/// The `Set-Cookie` value for a sticky route: when the decision asked for one, or when a retry
/// moved the request to another server than the cookie (or the decision) named.
pub fn sticky_cookie(
    snap: &Snapshot,
    decision: &Decision,
    served_by: ServerId,
) -> Option<HeaderValue> {
    let sticky = snap.table.route(decision.route).sticky.as_ref()?;
    if !decision.set_cookie && served_by == decision.server {
        return None;
    }
    let served = Decision {
        server: served_by,
        ..*decision
    };
    let value = route::sticky_value(&snap.table, &served)?;
    Some(route::sticky::set_cookie_header(sticky, &value))
}
