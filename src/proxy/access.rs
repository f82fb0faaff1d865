//! The access log (`log.access`): one line per request on the `veer::access` target, written
//! when the response's body has been sent (or the exchange ended early), so that it can say how
//! many bytes went each way and how long the whole exchange took. Only built when the log is
//! on; the line goes through a non-blocking writer (`telemetry`), never the request's task.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::route::Decision;
use crate::state::Snapshot;

/// One request's line, completed as the exchange goes on and written when dropped.
#[derive(Debug)]
pub struct AccessRecord {
    started: Instant,
    client: IpAddr,
    method: http::Method,
    host: Box<str>,
    /// The request target: path and query.
    path: Box<str>,
    snap: Arc<Snapshot>,
    decision: Option<Decision>,
    status: u16,
    mirrored: bool,
    /// The request body's bytes read so far (shared with the body sent upstream).
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
}

impl AccessRecord {
    pub fn start(
        started: Instant,
        client: IpAddr,
        parts: &http::request::Parts,
        host: &str,
        snap: &Arc<Snapshot>,
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
            snap: Arc::clone(snap),
            decision: None,
            status: 0,
            mirrored: false,
            bytes_in: Arc::default(),
            bytes_out: 0,
        }
    }

    /// The counter the request body adds its bytes to.
    pub fn bytes_in(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.bytes_in)
    }

    /// The answer's status, the decision that served it and whether a copy was mirrored.
    pub fn answered(&mut self, status: u16, decision: Option<Decision>, mirrored: bool) {
        self.status = status;
        self.decision = decision;
        self.mirrored = mirrored;
    }

    /// Counts response body bytes sent.
    pub fn sent(&mut self, bytes: usize) {
        self.bytes_out += bytes as u64;
    }
}

impl Drop for AccessRecord {
    fn drop(&mut self) {
        let table = &self.snap.table;
        let (route, pool, server, chosen) = match &self.decision {
            Some(d) => {
                let pool = table.pool(d.pool);
                let server = pool
                    .servers
                    .get(usize::from(d.server))
                    .map_or("-", |s| &*s.addr);
                (
                    &*table.route(d.route).name,
                    &*pool.name,
                    server,
                    d.chosen.as_str(),
                )
            }
            None => ("-", "-", "-", "-"),
        };
        tracing::info!(
            target: "veer::access",
            client = %self.client,
            method = %self.method,
            host = &*self.host,
            path = &*self.path,
            status = self.status,
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
