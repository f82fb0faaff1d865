//! Logging: the tracing subscriber (text or JSON, filtered by `log.level` or `RUST_LOG`). The
//! access log is the `veer::access` target, written by the proxy when `log.access` is on.

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Safe to call
/// more than once (later calls do nothing).
pub fn init(log: &LogSettings) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Logs a repeating failure (an accept that fails while descriptors are exhausted) at most once
/// per `every`, with the count of failures not logged since: the cause stays visible without
/// one line per attempt.
#[derive(Debug)]
pub struct Throttled {
    every: std::time::Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
}

impl Throttled {
    pub fn new(every: std::time::Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Counts one failure; `Some(n)` when it should be logged now, `n` being the failures left
    /// unlogged since the last line.
    pub fn hit(&mut self, now: tokio::time::Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Raises the soft limit on open files to the hard limit (the soft default, often 1024, is far
/// below what a proxy needs) and warns when even that cannot hold `max_connections`: each
/// client connection takes a descriptor, and its upstream connection another.
pub fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let soft = if limit.current != limit.maximum && setrlimit(Resource::Nofile, raised).is_ok() {
        limit.maximum
    } else {
        limit.current
    };
    let needed = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64);
    match soft {
        Some(soft) if soft < needed => tracing::warn!(
            open_files = soft,
            needed,
            "the open-file limit is below what proxy.max_connections needs (two descriptors a connection): raise it (systemd: LimitNOFILE=) or lower max_connections"
        ),
        soft => tracing::debug!(open_files = ?soft, "open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_repeating_failure_is_logged_once_per_period_with_the_count_left_out() {
        let start = tokio::time::Instant::now();
        let mut t = Throttled::new(Duration::from_secs(1));
        assert_eq!(t.hit(start), Some(0));
        for i in 1..=50 {
            assert_eq!(t.hit(start + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(t.hit(start + Duration::from_millis(1000)), Some(50));
        assert_eq!(t.hit(start + Duration::from_millis(1500)), None);
        assert_eq!(t.hit(start + Duration::from_millis(2100)), Some(1));
    }
}
