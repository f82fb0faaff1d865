//! The operator surface on `admin.listen`: the JSON API (`api`, with its JSON `views` and the
//! `wire` side: auth, `If-Match`, bodies, errors), the probes `/healthz`, `/readyz` and
//! `/metrics` (`probes`), and the dashboard's page on `/` (`dashboard`). Every change goes
//! through `control`; this room only parses, authorises and answers.

pub mod api;
mod dashboard;
#[doc(hidden)]
pub mod parsers;
mod probes;
mod views;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::control::Control;

/// What the admin listener needs.
#[derive(Debug)]
pub struct Admin {
    pub control: Arc<Control>,
    /// The address the listener is bound to: a token-less listener answers only requests
    /// whose `Host` names it.
    pub addr: SocketAddr,
    /// `Authorization: Bearer <token>` is required when set.
    pub token: Option<String>,
    /// Turns true when the proxy starts draining: `/readyz` answers 503 from then on.
    pub draining: watch::Receiver<bool>,
}

/// Serves the admin API on `listener` until the process ends (it keeps answering while the
/// proxy drains, so that `/readyz` can say so), or until `handed_over` turns true: the listener
/// is then the new process's alone.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, handed_over: watch::Receiver<bool>) {
    api::serve(listener, admin, handed_over).await
}
