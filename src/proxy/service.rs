//! One request, whichever server read it: load the snapshot once, build the borrowed
//! `RequestView`, decide, forward, and add the response-side rules (sticky cookie). Never fails:
//! every error is already a response.

use std::sync::Arc;

use http::{header, Response, StatusCode};

use crate::conn::{ClientBody, ConnContext};
use crate::mirror;
use crate::proxy::access::AccessRecord;
use crate::proxy::body::RespBody;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::{self, Outbound};
use crate::proxy::headers;
use crate::route::{self, Refusal, RequestView};
use crate::server::h1::ClientUpgrade;
use crate::state::{Snapshot, State};
use crate::upstream::ReqBody;

/// Serves one request (its head lent: the connection's, rewritten here for the upstream, and its
/// body), whichever protocol its connection speaks: the answer, with its body to stream. `client_upgrade`: the request asks to switch protocols (HTTP/1.1), and this is its
/// connection's side of the switch.
pub async fn handle(
    state: &State,
    ctx: &Arc<ConnContext>,
    parts: &mut http::request::Parts,
    body: ClientBody,
    client_upgrade: Option<ClientUpgrade>,
) -> Response<RespBody> {
    // The one clock read of the request's start: its timeout, first attempt, stats and log.
    let started = tokio::time::Instant::now();
    let guard = ctx.activity.begin();
    let snap = state.snapshot();
    let (host, host_ok) = request_host(parts);
    let mut access = state.access_log().then(|| {
        Box::new(AccessRecord::start(
            started.into_std(),
            ctx.peer.ip(),
            parts,
            host,
        ))
    });
    let view = RequestView {
        host,
        path: parts.uri.path(),
        headers: &parts.headers,
        client_ip: ctx.peer.ip(),
        random: rand::random(),
    };
    let decided = host_ok.map(|()| route::decide(&snap.table, &view, &snap.slots));
    let (resp, decision, mirrored) = match decided {
        Err(e) => (e.to_response(), None, false),
        Ok(Err(Refusal::NoRoute)) => (ProxyError::NoRoute.to_response(), None, false),
        Ok(Err(Refusal::NoHealthyPool { .. })) => {
            (ProxyError::NoHealthyServer.to_response(), None, false)
        }
        Ok(Ok(decision)) => {
            let (body, shadow) = if decision.mirror {
                let upgrading = client_upgrade.is_some();
                mirror::start(&snap, &decision, parts, body, ctx, upgrading)
            } else {
                (ReqBody::Client(body), None)
            };
            let body = match &mut access {
                Some(access) => {
                    access.decided(&snap.table, &decision);
                    ReqBody::Counted(Box::new(body), access.bytes_in())
                }
                None => body,
            };
            // An upgraded exchange's line waits for its tunnel to close, with its bytes.
            let (tunnel_log, tunnel_rx) = match (&access, &client_upgrade) {
                (Some(_), Some(_)) => {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    (Some(tx), Some(rx))
                }
                _ => (None, None),
            };
            let out = Outbound {
                body,
                client_upgrade,
                tunnel_log: tunnel_rx,
            };
            let (resp, server, answered) =
                forward_decided(&snap, &decision, parts, out, ctx, started).await;
            let mirrored = shadow.is_some();
            if let Some(shadow) = shadow {
                shadow.answered(resp.status());
            }
            if let Some(lane) = snap.lanes.of_pool(decision.route, decision.pool) {
                lane.served(
                    resp.status().as_u16(),
                    answered.saturating_duration_since(started),
                );
            }
            let served = route::Decision { server, ..decision };
            if let Some(record) = access.as_mut() {
                record.decided(&snap.table, &served);
                record.answered(resp.status().as_u16(), mirrored);
            }
            let switched = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
            if let (Some(tx), true) = (tunnel_log, switched) {
                // Handed to the tunnel; back here if the tunnel has already ended.
                if let Some(record) = access.take() {
                    access = tx.send(record).err();
                }
            }
            (resp, Some(served), mirrored)
        }
    };
    if let (Some(record), None) = (access.as_mut(), &decision) {
        record.answered(resp.status().as_u16(), mirrored);
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.with_guard(guard).with_access(access))
}

/// Forwards a decided request; adds the sticky cookie to a response, or turns a failure into
/// its error response. Also returns the server that answered (or was last tried), and when the
/// answer's head came (or the failure).
async fn forward_decided(
    snap: &Snapshot,
    decision: &route::Decision,
    head: &mut http::request::Parts,
    out: Outbound,
    ctx: &Arc<ConnContext>,
    started: tokio::time::Instant,
) -> (Response<RespBody>, route::ServerId, tokio::time::Instant) {
    match forward::forward(snap, decision, head, out, ctx, started).await {
        Ok((mut resp, server, answered)) => {
            if let Some(cookie) = forward::sticky_cookie(snap, decision, server) {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            (resp, server, answered)
        }
        Err(e) => {
            tracing::debug!(
                route = %snap.table.route(decision.route).name,
                pool = %snap.table.pool(decision.pool).name,
                error = %e,
                "request failed"
            );
            (
                e.to_response(),
                decision.server,
                tokio::time::Instant::now(),
            )
        }
    }
}

/// The request's host: the URI's authority (HTTP/2, absolute-form) or the `Host` header; and
/// whether the head is acceptable: one `Host` at most, and one in every HTTP/1.1 request
/// (RFC 9112 §3.2), since a request that names two hosts could be routed on one and served for
/// the other. One lookup of `Host` for both.
fn request_host(parts: &http::request::Parts) -> (&str, Result<(), ProxyError>) {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    let ok = match (first, hosts.next()) {
        (Some(_), Some(_)) => Err(ProxyError::BadRequest("more than one Host header\n")),
        (None, None) if parts.version == http::Version::HTTP_11 => Err(ProxyError::BadRequest(
            "HTTP/1.1 request without a Host header\n",
        )),
        _ => Ok(()),
    };
    let host = match parts.uri.authority() {
        Some(authority) => headers::host_of(authority),
        None => first.and_then(|h| h.to_str().ok()).unwrap_or(""),
    };
    (host, ok)
}
