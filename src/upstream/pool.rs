//! Idle keep-alive connections to servers, kept per (pool, address) across table swaps. The most
//! recently used connection goes out first (the one least likely to have been closed by the
//! server's own keep-alive timeout), and connections idle longer than
//! `proxy.upstream_idle_timeout` are closed, on take and by a periodic sweep. Knows nothing of
//! health: a server's availability is `health::registry`'s.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::kept::Kept;
use crate::route::table::{PoolId, ServerId, Table};
use crate::upstream::Conn;

/// Idle connections kept per server; when one more comes back, the longest idle is closed.
pub const IDLE_PER_SERVER: usize = 256;

/// One server's idle connections, the most recently used last.
#[derive(Debug, Default)]
pub struct ServerConns {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

impl ServerConns {
    /// The most recently used connection that can take a request now, if it has been idle less
    /// than `max_idle`. Expired connections, and ones the server closed (or wrote to unasked),
    /// met on the way are closed (dropped). Only connections whose exchange finished cleanly
    /// are ever here, so none is busy.
    pub fn take(&self, now: Instant, max_idle: Duration) -> Option<Box<Conn>> {
        let mut idle = self.lock();
        while let Some(mut entry) = idle.pop() {
            if now.saturating_duration_since(entry.since) >= max_idle {
                // Everything below has been idle longer still.
                idle.clear();
                return None;
            }
            if entry.conn.is_usable() {
                return Some(entry.conn);
            }
        }
        None
    }

    /// Keeps a connection whose exchange finished cleanly; over the cap the longest idle one is
    /// closed.
    pub fn give(&self, conn: Box<Conn>, now: Instant) {
        let mut idle = self.lock();
        if idle.len() >= IDLE_PER_SERVER {
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
    }

    /// Closes the connections idle for `max_idle` or more, and ones the server closed.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        self.lock().retain_mut(|entry| {
            now.saturating_duration_since(entry.since) < max_idle && entry.conn.is_usable()
        });
    }

    /// How many connections are kept now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The idle connections of one table's servers, index for index: `pools[pool][server]`.
#[derive(Debug, Default)]
pub struct Conns {
    pools: Vec<Vec<Arc<ServerConns>>>,
}

impl Conns {
    pub fn server(&self, pool: PoolId, server: ServerId) -> &Arc<ServerConns> {
        &self.pools[usize::from(pool)][usize::from(server)]
    }

    /// Sweeps every server of the table.
    pub fn sweep(&self, now: Instant, max_idle: Duration) {
        for server in self.pools.iter().flatten() {
            server.sweep(now, max_idle);
        }
    }
}

/// (pool, address) -> idle connections, for every server some snapshot still holds.
#[derive(Debug, Default)]
pub struct Pools {
    known: Kept<(Box<str>, Box<str>), ServerConns>,
}

impl Pools {
    /// The connections for `table`: a server that remains keeps its idle connections.
    pub fn reconcile(&self, table: &Table) -> Conns {
        let mut known = self.known.begin();
        let pools = table
            .pools
            .iter()
            .map(|pool| {
                pool.servers
                    .iter()
                    .map(|server| {
                        // A connection made under other TLS settings (or none) is never reused.
                        let addr = match &pool.tls {
                            None => server.addr.clone(),
                            Some(tls) => format!("{} {tls:?}", server.addr).into(),
                        };
                        known.get((pool.name.clone(), addr), Default::default)
                    })
                    .collect()
            })
            .collect();
        Conns { pools }
    }
}

/// How often the sweep runs for a given idle timeout: often enough that a connection is
/// closed within a tenth of the timeout after it expires.
pub fn sweep_period(max_idle: Duration) -> Duration {
    (max_idle / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::table::Target;
    use crate::upstream::{connect, ReqBody};
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A keep-alive server that answers every request with the number of the connection it came
    /// on (0, 1, 2… in accept order); each accepted connection's server side is also reported.
    async fn numbering_server() -> (Target, tokio::sync::mpsc::UnboundedReceiver<u32>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut n = 0u32;
            while let Ok((mut s, _)) = l.accept().await {
                let id = n;
                n += 1;
                let closed = closed_tx.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let body = id.to_string();
                            let head = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                                body.len()
                            );
                            if s.write_all(format!("{head}{body}").as_bytes())
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    let _ = closed.send(id);
                });
            }
        });
        (Target::Addr(addr), closed_rx)
    }

    async fn open(target: &Target) -> Box<Conn> {
        connect::connect(target, Duration::from_secs(5), None)
            .await
            .unwrap()
    }

    /// Which connection (by the server's numbering) `conn` is; it comes back to `home` once
    /// the answer is read.
    async fn which(conn: Box<Conn>, home: &Arc<ServerConns>) -> u32 {
        let req = http::Request::get("/")
            .header("host", "x")
            .body(ReqBody::Empty)
            .unwrap();
        let call = async {
            let (head, body) = req.into_parts();
            let resp = conn.send(&head, body, &(), false).await.unwrap();
            let mut body = resp.into_body();
            body.keep_in(Arc::clone(home));
            let body = body.collect().await.unwrap().to_bytes();
            std::str::from_utf8(&body).unwrap().parse().unwrap()
        };
        tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .unwrap()
    }

    /// `count` connections, each asked once, and then held outside any pool.
    async fn opened(target: &Target, count: usize) -> Vec<Box<Conn>> {
        let scratch = Arc::new(ServerConns::default());
        let mut out = Vec::new();
        for i in 0..count {
            assert_eq!(which(open(target).await, &scratch).await, i as u32);
            out.push(
                scratch
                    .take(Instant::now(), Duration::from_secs(60))
                    .unwrap(),
            );
        }
        out
    }

    #[tokio::test]
    async fn the_most_recently_used_connection_goes_out_first() {
        let (target, _closed) = numbering_server().await;
        let conns = ServerConns::default();
        let now = Instant::now();
        for (i, conn) in opened(&target, 3).await.into_iter().enumerate() {
            conns.give(conn, now + Duration::from_millis(i as u64));
        }
        let later = now + Duration::from_secs(1);
        let max_idle = Duration::from_secs(60);
        let scratch = Arc::new(ServerConns::default());
        let mut got = Vec::new();
        while let Some(conn) = conns.take(later, max_idle) {
            got.push(which(conn, &scratch).await);
        }
        assert_eq!(got, [2, 1, 0]);
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_by_the_sweep_and_on_take() {
        let (target, mut closed) = numbering_server().await;
        let conns = ServerConns::default();
        let now = Instant::now();
        let mut kept = opened(&target, 2).await.into_iter();
        conns.give(kept.next().unwrap(), now);
        conns.give(kept.next().unwrap(), now + Duration::from_secs(5));
        let max_idle = Duration::from_secs(10);
        // The sweep closes the one idle for 10 s and keeps the one idle for 5 s.
        conns.sweep(now + Duration::from_secs(10), max_idle);
        assert_eq!(conns.idle(), 1);
        let first = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert_eq!(
            first.unwrap(),
            Some(0),
            "the server sees connection 0 closed"
        );
        // Past its own timeout, the other is closed rather than handed out.
        assert!(conns
            .take(now + Duration::from_secs(15), max_idle)
            .is_none());
        assert_eq!(conns.idle(), 0);
        let second = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert_eq!(second.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn over_the_cap_the_longest_idle_connection_is_closed() {
        let (target, mut closed) = numbering_server().await;
        let conns = ServerConns::default();
        let now = Instant::now();
        let kept = opened(&target, IDLE_PER_SERVER + 1).await;
        for (i, conn) in kept.into_iter().enumerate() {
            conns.give(conn, now + Duration::from_millis(i as u64));
        }
        assert_eq!(conns.idle(), IDLE_PER_SERVER);
        let first = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await;
        assert_eq!(first.unwrap(), Some(0), "the longest idle one was closed");
    }
}
