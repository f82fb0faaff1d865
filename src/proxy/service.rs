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
use crate::proxy::body::RespBody;
use crate::proxy::error::ProxyError;
use crate::proxy::forward::{self, Outbound};
use crate::proxy::headers;
use crate::route::{self, Refusal, RequestView};
use crate::state::State;

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
    ctx: &ConnContext,
    mut req: Request<Incoming>,
) -> Response<RespBody> {
    let guard = ctx.activity.begin();
    let started = state.access_log().then(Instant::now);
    let snap = state.snapshot();
    let client_upgrade =
        headers::is_upgrade(req.version(), req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let view = RequestView {
        host: request_host(&parts),
        path: parts.uri.path(),
        headers: &parts.headers,
        client_ip: ctx.peer.ip(),
        random: rand::random(),
    };
    let decided = route::decide(&snap.table, &view, &snap.slots);
    let method = started.map(|_| parts.method.clone());
    let path = started.map(|_| parts.uri.clone());
    let result = match decided {
        Err(Refusal::NoRoute) => Err(ProxyError::NoRoute),
        Err(Refusal::NoHealthyPool { .. }) => Err(ProxyError::NoHealthyServer),
        Ok(decision) => {
            let out = Outbound {
                parts,
                body,
                client_upgrade,
            };
            forward::forward(&snap, &decision, out, ctx)
                .await
                .map(|mut resp| {
                    if decision.set_cookie {
                        if let Some(cookie) = forward::sticky_cookie(&snap, &decision) {
                            resp.headers_mut().append(header::SET_COOKIE, cookie);
                        }
                    }
                    resp
                })
                .map_err(|e| (decision, e))
                .map_err(|(d, e)| {
                    tracing::debug!(route = %snap.table.route(d.route).name, pool = %snap.table.pool(d.pool).name, error = %e, "request failed");
                    e
                })
        }
    };
    let resp = result.unwrap_or_else(|e| e.to_response());
    if let (Some(started), Some(method), Some(uri)) = (started, method, path) {
        tracing::info!(
            target: "veer::access",
            client = %ctx.peer.ip(),
            method = %method,
            uri = %uri,
            status = resp.status().as_u16(),
            millis = started.elapsed().as_millis() as u64,
            "request"
        );
    }
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.with_guard(guard))
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
