//! WebSocket and other `Upgrade` pass-through: once the upstream answers `101 Switching
//! Protocols`, the client's and the server's connections are joined byte for byte until either
//! side closes. The upstream connection is a fresh one and never returns to the pool.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::conn::ConnContext;
use crate::http1::Upgraded;
use crate::proxy::access::AccessRecord;
use crate::proxy::body::Lease;
use crate::server::h1::ClientUpgrade;
use crate::upstream::Io;

/// Joins the two upgraded connections in a task of their own. The lease keeps the server's
/// in-flight count, and the client's context its place under `max_connections` and in the
/// drain, for as long as the tunnel is open.
pub fn tunnel(
    client: ClientUpgrade,
    mut upstream: Upgraded<Io>,
    lease: Lease,
    ctx: Arc<ConnContext>,
    log: Option<oneshot::Receiver<Box<AccessRecord>>>,
) {
    tokio::spawn(async move {
        let _held = (lease, ctx);
        let Some(mut client) = client.connection().await else {
            tracing::debug!("upgrade did not complete");
            return;
        };
        let (up, down) = match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok(counts) => counts,
            Err(e) => {
                tracing::debug!(error = %e, "upgraded connection ended");
                (0, 0)
            }
        };
        // The access log line, when on, is written now, with the tunnel's bytes.
        if let Some(mut record) = log.and_then(|mut rx| rx.try_recv().ok()) {
            record.tunneled(up, down);
        }
    });
}
