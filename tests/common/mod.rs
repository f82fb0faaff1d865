//! The one set of helpers the integration tests share (`mod common;`): veer started in-process
//! or as a child process, in-process upstreams that count what they received, HTTP clients
//! (plain, raw bytes, the admin API), config builders, metric reading, temp dirs and signals.
//! Everything stays on 127.0.0.1, every listener binds port 0, and every read and every wait
//! for a child process has a deadline, so that a bug fails the test instead of hanging CI.
//!
//! What the helpers are for, so that a test fails exactly when its feature does not work:
//! - wait for events, not time: `eventually` polls a condition with a deadline, a gated
//!   upstream holds a request for as long as the test needs, and a timer that must not be
//!   the cause of what a test sees is set far above `IO_TIMEOUT`;
//! - a metric that should exist is read with `metric_or_panic` (never as 0 when missing);
//! - a child's environment is given with `Command::env`, never by changing this process's;
//! - an address that must refuse connections comes from `refused_addr`, which holds its port.
#![allow(dead_code, unused_imports)]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod process;
pub mod requests;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::time::Duration;

pub use self::admin::{Answer, Api};
pub use self::config::{child_toml, one_pool, start_veer, two_pools};
pub use self::metrics::{metric, metric_or_panic};
pub use self::process::{output_within, signal, veer_cmd, TempDir, VeerProcess};
pub use self::requests::{
    client, closes_within, field, full, get, raw_exchange, raw_until, read_head, read_more,
    request, send, streaming_body, tally, Body, Got,
};
pub use self::upstream::{refused_addr, ws_echo, Gate, Log, Received, Refused, Upstream, WsEcho};

/// The longest one exchange (a request and its whole response, a read, a child's start) may
/// take before the test fails. Generous: it bounds a hang on a loaded 2-core machine, it is
/// not a performance claim.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `check` every 10 ms until it holds; panics naming `what` if `within` passes first.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `fut`, or a panic naming `what` if it takes longer than `within`.
pub async fn within<T>(within: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(v) => v,
        Err(_) => panic!("not within {within:?}: {what}"),
    }
}
