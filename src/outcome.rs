//! What one attempt to reach a server ended as, and the one place `proxy` reports it. Every
//! consumer of per-attempt facts (passive ejection, upstream error metrics, the per-lane stats
//! that rollout analysis reads) is reached from `report`, never from inside `proxy`. An `Outcome` is a
//! small `Copy` value; reporting touches atomics and pre-registered metric handles only: no
//! allocation, no lock, no label formatting.

use std::time::Duration;

use crate::route::{PoolId, RouteId, ServerId};
use crate::state::Snapshot;

/// How an attempt failed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No connection could be had (refused, unreachable, connect timeout, handshake).
    Connect,
    /// No response head within `request_timeout`.
    Timeout,
    /// The server broke the exchange (closed or reset mid-request, malformed response).
    Protocol,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 3] = [ErrorKind::Connect, ErrorKind::Timeout, ErrorKind::Protocol];

    /// The `kind` label of `veer_upstream_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
        }
    }

    /// Index into per-kind arrays (`ALL` order).
    pub fn index(self) -> usize {
        match self {
            ErrorKind::Connect => 0,
            ErrorKind::Timeout => 1,
            ErrorKind::Protocol => 2,
        }
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server sent a response head with this status.
    Answered(u16),
    Failed(ErrorKind),
}

/// One attempt: which route, pool and server, how it ended, how long it took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub route: RouteId,
    pub pool: PoolId,
    pub server: ServerId,
    pub ended: Ended,
    /// From the attempt's start (connection wanted) to its end (head arrived or failure).
    pub latency: Duration,
    /// The attempt went out on a kept (pooled) connection.
    pub reused: bool,
}

impl Outcome {
    /// The status class (2 for 2xx … 5); `None` for an attempt without an answer.
    pub fn status_class(&self) -> Option<u8> {
        match self.ended {
            Ended::Answered(status) => u8::try_from(status / 100).ok(),
            Ended::Failed(_) => None,
        }
    }

    /// The attempt counts against the server for outlier detection: no answer at all, or a
    /// gateway answer (502, 503, 504) that says the server cannot serve now.
    pub fn server_failure(&self) -> bool {
        match self.ended {
            Ended::Answered(status) => matches!(status, 502..=504),
            Ended::Failed(_) => true,
        }
    }
}

/// Reports one attempt to every consumer. Called by `proxy` exactly once per attempt, on the
/// snapshot the request was decided on.
pub fn report(snap: &Snapshot, outcome: &Outcome) {
    if let Some(lane) = snap.lanes.of_pool(outcome.route, outcome.pool) {
        lane.stats.record(outcome);
    }
    let Some(slot) = snap.slots.get(outcome.pool, outcome.server) else {
        return;
    };
    if let Ended::Failed(kind) = outcome.ended {
        slot.metrics.upstream_error(kind);
    }
    crate::health::passive::observe(snap, slot, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(ended: Ended) -> Outcome {
        Outcome {
            route: 0,
            pool: 0,
            server: 0,
            ended,
            latency: Duration::ZERO,
            reused: false,
        }
    }

    #[test]
    fn gateway_answers_and_errors_are_server_failures_other_answers_are_not() {
        for status in [502, 503, 504] {
            assert!(ended(Ended::Answered(status)).server_failure(), "{status}");
        }
        for status in [200, 301, 404, 500, 501, 505] {
            assert!(!ended(Ended::Answered(status)).server_failure(), "{status}");
        }
        for kind in ErrorKind::ALL {
            assert!(ended(Ended::Failed(kind)).server_failure());
            assert_eq!(ErrorKind::ALL[kind.index()], kind);
        }
        assert_eq!(ended(Ended::Answered(503)).status_class(), Some(5));
        assert_eq!(
            ended(Ended::Failed(ErrorKind::Timeout)).status_class(),
            None
        );
    }
}
