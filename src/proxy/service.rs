//! The hyper service for one client connection: load the snapshot once, build the borrowed
//! `RequestView`, decide, forward, and add the response-side rules (sticky cookie). Never fails:
//! every error is already a response.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::{header, Request, Response};
use hyper::body::Incoming;

use crate::conn::ConnContext;
use crate::mirror;
use crate::proxy::body::RespBody;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::{self, Outbound};
use crate::proxy::headers;
use crate::route::{self, Refusal, RequestView};
use crate::state::{Snapshot, State};
use crate::upstream::ReqBody;

#[derive(Debug, Clone)]
pub struct ProxyService {
    state: Arc<State>,
    ctx: Arc<ConnContext>,
}

impl ProxyService {
    pub fn new(state: Arc<State>, ctx: Arc<ConnContext>) -> Self {
        Self { state, ctx }
    }
}

impl hyper::service::Service<Request<Incoming>> for ProxyService {
    type Response = Response<RespBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<RespBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let state = Arc::clone(&self.state);
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move { Ok(handle(&state, &ctx, req).await) })
    }
}

async fn handle(
    state: &State,
    ctx: &Arc<ConnContext>,
    mut req: Request<Incoming>,
) -> Response<RespBody> {
    let guard = ctx.activity.begin();
    let snap = state.snapshot();
    let access = state.access_log().then(|| Access::start(&req));
    let client_upgrade =
        headers::is_upgrade(req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let host_ok = check_host(&req);
    let (parts, body) = req.into_parts();
    let view = RequestView {
        host: request_host(&parts),
        path: parts.uri.path(),
        headers: &parts.headers,
        client_ip: ctx.peer.ip(),
        random: rand::random(),
    };
    let decided = host_ok.map(|()| route::decide(&snap.table, &view, &snap.slots));
    let (resp, decision) = match decided {
        Err(e) => (e.to_response(), None),
        Ok(Err(Refusal::NoRoute)) => (ProxyError::NoRoute.to_response(), None),
        Ok(Err(Refusal::NoHealthyPool { .. })) => (ProxyError::NoHealthyServer.to_response(), None),
        Ok(Ok(decision)) => {
            let (body, shadow) = if decision.mirror {
                let upgrading = client_upgrade.is_some();
                mirror::start(&snap, &decision, &parts, body, ctx, upgrading)
            } else {
                (ReqBody::Incoming(body), None)
            };
            let out = Outbound {
                parts,
                body,
                client_upgrade,
            };
            let (resp, server) = forward_decided(&snap, &decision, out, ctx).await;
            if let Some(shadow) = shadow {
                shadow.answered(resp.status());
            }
            let served = route::Decision { server, ..decision };
            (resp, Some(served))
        }
    };
    if let Some(access) = access {
        access.log(ctx, &snap, decision.as_ref(), resp.status());
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.with_guard(guard))
}

/// Forwards a decided request; adds the sticky cookie to a response, or turns a failure into
/// its error response. Also returns the server that answered (or was last tried).
async fn forward_decided(
    snap: &Snapshot,
    decision: &route::Decision,
    out: Outbound,
    ctx: &Arc<ConnContext>,
) -> (Response<RespBody>, route::ServerId) {
    match forward::forward(snap, decision, out, ctx).await {
        Ok((mut resp, server)) => {
            if let Some(cookie) = forward::sticky_cookie(snap, decision, server) {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            (resp, server)
        }
        Err(e) => {
            tracing::debug!(
                route = %snap.table.route(decision.route).name,
                pool = %snap.table.pool(decision.pool).name,
                error = %e,
                "request failed"
            );
            (e.to_response(), decision.server)
        }
    }
}

/// What the access log line needs from the request; taken only when the log is on.
struct Access {
    started: Instant,
    method: http::Method,
    uri: http::Uri,
}

impl Access {
    fn start(req: &Request<Incoming>) -> Self {
        Self {
            started: Instant::now(),
            method: req.method().clone(),
            uri: req.uri().clone(),
        }
    }

    fn log(
        self,
        ctx: &ConnContext,
        snap: &Snapshot,
        decision: Option<&route::Decision>,
        status: http::StatusCode,
    ) {
        let (route, pool, server) = match decision {
            Some(d) => {
                let pool = snap.table.pool(d.pool);
                (
                    &*snap.table.route(d.route).name,
                    &*pool.name,
                    &*pool.servers[usize::from(d.server)].addr,
                )
            }
            None => ("-", "-", "-"),
        };
        tracing::info!(
            target: "veer::access",
            client = %ctx.peer.ip(),
            method = %self.method,
            uri = %self.uri,
            status = status.as_u16(),
            route,
            pool,
            server,
            head_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
    }
}

/// One `Host` at most, and one in every HTTP/1.1 request (RFC 9112 §3.2): a request that names
/// two hosts could be routed on one and served for the other.
fn check_host(req: &Request<Incoming>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host header\n")),
        (None, None) if req.version() == http::Version::HTTP_11 => Err(ProxyError::BadRequest(
            "HTTP/1.1 request without a Host header\n",
        )),
        _ => Ok(()),
    }
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the `Host` header.
fn request_host(parts: &http::request::Parts) -> &str {
    if let Some(authority) = parts.uri.authority() {
        return authority.as_str();
    }
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}
