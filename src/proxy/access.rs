//! The access log (`log.access`): one line per request on the `veer::access` target, written
//! when the response's body has been sent (or the exchange ended early), so that it can say how
//! many bytes went each way and how long the whole exchange took. For an upgraded connection
//! (WebSocket) the line is written when the tunnel closes, with the tunnel's bytes. Only built
//! when the log is on; the line goes through a non-blocking writer (`telemetry`), never the
//! request's task.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::route::{Decision, Table};

/// The status logged for a request whose client went away before its answer (NGINX's 499).
pub const CLIENT_GONE: u16 = 499;

/// One request's line, completed as the exchange goes on and written when dropped.
#[derive(Debug)]
pub struct AccessRecord {
    started: Instant,
    client: IpAddr,
    method: http::Method,
    host: Box<str>,
    /// The request target: path and query.
    path: Box<str>,
    /// Route, pool, server and how the pool was chosen, once decided (copied, so that the line
    /// never holds a replaced table alive through a long response).
    served: Option<Served>,
    /// `None` until the answer's head is known.
    status: Option<u16>,
    mirrored: bool,
    /// The request body's bytes read so far (shared with the body sent upstream).
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

#[derive(Debug)]
struct Served {
    route: Box<str>,
    pool: Box<str>,
    server: Box<str>,
    chosen: &'static str,
}

impl AccessRecord {
    pub fn start(
        started: Instant,
        client: IpAddr,
        parts: &http::request::Parts,
        host: &str,
    ) -> Self {
        Self {
            started,
            client,
            method: parts.method.clone(),
            host: host.into(),
            path: parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .into(),
            served: None,
            status: None,
            mirrored: false,
            bytes_in: Arc::default(),
            bytes_out: 0,
        }
    }

    /// The counter the request body adds its bytes to.
    pub fn bytes_in(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_in)
    }

    /// The decision (or, once answered, the server that answered): kept for the line even if
    /// the client leaves before the answer.
    pub fn decided(&mut self, table: &Table, decision: &Decision) {
        let pool = table.pool(decision.pool);
        self.served = Some(Served {
            route: table.route(decision.route).name.clone(),
            pool: pool.name.clone(),
            server: pool
                .servers
                .get(usize::from(decision.server))
                .map_or("-".into(), |s| s.addr.clone()),
            chosen: decision.chosen.as_str(),
        });
    }

    /// The answer's status and whether a copy was mirrored.
    pub fn answered(&mut self, status: u16, mirrored: bool) {
        self.status = Some(status);
        self.mirrored = mirrored;
    }

    /// Counts response body bytes sent.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }

    /// Counts an upgraded connection's bytes: client to server, server to client.
    pub fn tunneled(&mut self, up: u64, down: u64) {
        self.bytes_in.fetch_add(up, Ordering::Relaxed);
        self.bytes_out += down;
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let (route, pool, server, chosen) = match &self.served {
            Some(s) => (&*s.route, &*s.pool, &*s.server, s.chosen),
            None => ("-", "-", "-", "-"),
        };
        tracing::info!(
            target: "veer::access",
            client = %self.client,
            method = %self.method,
            host = &*self.host,
            path = &*self.path,
            status = self.status.unwrap_or(CLIENT_GONE),
            bytes_in = self.bytes_in.load(Ordering::Relaxed),
            bytes_out = self.bytes_out,
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            route,
            pool,
            server,
            chosen,
            mirrored = self.mirrored,
            "request"
        );
    }
}
