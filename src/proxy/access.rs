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
    /// The decision's route, pool and server: a second call with the same ones copies nothing.
    ids: (
        crate::route::RouteId,
        crate::route::PoolId,
        crate::route::ServerId,
    ),
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
        let ids = (decision.route, decision.pool, decision.server);
        if let Some(served) = self.served.as_mut().filter(|s| s.ids == ids) {
            served.chosen = decision.chosen.as_str();
            return;
        }
        let pool = table.pool(decision.pool);
        self.served = Some(Served {
            ids,
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
        let mut ip = IpText::default();
        tracing::info!(
            target: "veer::access",
            client = ip.of(self.client),
            method = self.method.as_str(),
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

/// An address's text for the line: IPv4 written digit by digit (the line is written for every
/// request, and `Display` pads through the general formatting machinery), IPv6 through `Display`.
struct IpText {
    /// The longest IPv6 text is 45 bytes.
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl IpText {
    fn of(&mut self, ip: IpAddr) -> &str {
        use std::io::Write;
        self.len = 0;
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.push(b'.');
                    }
                    if octet >= 100 {
                        self.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        self.push(b'0' + octet / 10 % 10);
                    }
                    self.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
                if write!(cursor, "{v6}").is_ok() {
                    self.len = usize::try_from(cursor.position()).unwrap_or(0);
                }
            }
        }
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("-")
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "10.1.20.255",
            "127.0.0.1",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::default().of(ip), ip.to_string());
        }
    }
}
