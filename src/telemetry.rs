//! Logging: the tracing subscriber (text or JSON, filtered by `log.level` or `RUST_LOG`). The
//! access log is the `veer::access` target, written by the proxy when `log.access` is on; its
//! lines go to standard error through their own non-blocking writer (a bounded queue drained
//! by a thread; when it is full, lines are dropped rather than holding a request), and they do
//! not depend on `log.level`.

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::{Directive, EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, Layer};

use crate::access_format::AccessFormat;
use crate::config::{LogFormat, LogSettings};

/// The access log's target.
pub const ACCESS: &str = "veer::access";

/// How many access lines wait for the writer thread before new ones are dropped.
pub const ACCESS_QUEUE_LINES: usize = 16_384;

/// The access log writer's thread, kept until `flush`.
static ACCESS_WRITER: OnceLock<Mutex<Option<tracing_appender::non_blocking::WorkerGuard>>> =
    OnceLock::new();

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`. Safe to call
/// more than once (later calls do nothing).
pub fn init(log: &LogSettings) {
    let (subscriber, guard) = subscriber(log);
    if subscriber.try_init().is_ok() {
        let _ = ACCESS_WRITER.set(Mutex::new(Some(guard)));
    }
}

/// The subscriber `init` installs, and the guard of the access log's writer thread.
///
/// Each layer has one filter that knows its most verbose level (the main layer's `EnvFilter`
/// with the access target turned off in it, the access layer's `Targets`), so the subscriber as
/// a whole knows it too and the spans and events below it are disabled where they are written.
/// A filter without that knowledge (a closure) made every `trace` span of h2 (several per HTTP/2
/// request) reach the registry, which cost an HTTP/2 request four times its own work.
fn subscriber(
    log: &LogSettings,
) -> (
    impl tracing::Subscriber + Send + Sync + 'static,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let mut filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .or_else(|| EnvFilter::try_new(&log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    // The access lines are the access layer's alone.
    if let Ok(off) = format!("{ACCESS}=off").parse::<Directive>() {
        filter = filter.add_directive(off);
    }
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The queue is an array allocated and touched whole at start: 16 384 lines (half a MiB)
    // absorb a burst of 160 ms at 100 000 requests a second, where the default 128 000 would hold
    // 4 MiB of memory for the life of the process, access log on or off.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(ACCESS_QUEUE_LINES)
        .lossy(true)
        .thread_name("veer-access-log")
        .finish(std::io::stderr());
    let access_only = Targets::new().with_target(ACCESS, tracing::Level::INFO);
    let (main, access) = match log.format {
        LogFormat::Json => (
            fmt::layer().json().with_writer(std::io::stderr).boxed(),
            fmt::layer()
                .event_format(AccessFormat { json: true })
                .with_writer(writer)
                .boxed(),
        ),
        LogFormat::Text => (
            fmt::layer()
                .with_ansi(ansi)
                .with_writer(std::io::stderr)
                .boxed(),
            fmt::layer()
                .event_format(AccessFormat { json: false })
                .with_writer(writer)
                .boxed(),
        ),
    };
    let subscriber = tracing_subscriber::registry()
        .with(main.with_filter(filter))
        .with(access.with_filter(access_only));
    (subscriber, guard)
}

/// Writes out the access log lines still queued; for the end of the process.
pub fn flush() {
    if let Some(writer) = ACCESS_WRITER.get() {
        drop(writer.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
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
    use tracing::Subscriber;
    use tracing_subscriber::filter::LevelFilter;

    fn log(level: &str) -> LogSettings {
        LogSettings {
            level: level.to_string(),
            access: true,
            format: LogFormat::Json,
        }
    }

    #[test]
    fn the_subscriber_knows_its_most_verbose_level_so_trace_spans_cost_nothing() {
        // Under RUST_LOG the level is the user's; this test is about `log.level`.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        for (level, hint) in [
            ("info", LevelFilter::INFO),
            ("warn", LevelFilter::INFO), // the access layer's own level
            ("debug", LevelFilter::DEBUG),
        ] {
            let (subscriber, _guard) = subscriber(&log(level));
            assert_eq!(
                subscriber.max_level_hint(),
                Some(hint),
                "log.level = {level}"
            );
        }
    }

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
