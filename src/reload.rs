//! Config reloads: on SIGHUP, and with `admin.watch` whenever the file's content changes. The
//! file is read and handed to `control`, the one change path; a file with any error leaves the
//! running table serving, and every error is logged with `file:line:col`. Settings only a
//! restart can change (listeners, admin, workers) are reported, not silently ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::config::{self, Settings};
use crate::control::{self, Control};

/// How often `admin.watch` looks at the file.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// What set a reload off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sighup,
    Watch,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Sighup => "sighup",
            Source::Watch => "watch",
        }
    }
}

/// Reloads `path` on every SIGHUP received on `hup` (and on content changes with
/// `admin.watch`) until `stop`. The signal stream is made by the caller before anything
/// listens, so that an early SIGHUP is never the default action (exit).
/// `loaded` is `content_hash` of the file as it was read at start, taken before anything
/// listened: an edit made once veer serves is always seen as one.
pub async fn run(
    path: PathBuf,
    started: Settings,
    control: Arc<Control>,
    mut hup: Signal,
    mut stop: watch::Receiver<bool>,
    loaded: Option<u64>,
) {
    let watching = started.admin.as_ref().is_some_and(|a| a.watch);
    let mut seen = loaded;
    let mut tick = tokio::time::interval(WATCH_EVERY);
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                seen = content_hash(&path);
                reload(&path, &started, &control, Source::Sighup).await;
            }
            _ = tick.tick(), if watching => {
                let now = content_hash(&path);
                if now != seen && now.is_some() {
                    seen = now;
                    reload(&path, &started, &control, Source::Watch).await;
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// A hash of the file's bytes, to notice an edit.
pub fn content_hash(path: &Path) -> Option<u64> {
    std::fs::read(path)
        .ok()
        .map(|bytes| xxhash_rust::xxh3::xxh3_64(&bytes))
}

/// Reads, validates and installs `path`; `true` when the new table is serving.
pub async fn reload(
    path: &Path,
    started: &Settings,
    control: &Arc<Control>,
    source: Source,
) -> bool {
    let compiled = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!(?source, "reload failed: {e}");
            }
            tracing::error!(file = %path.display(), "reload failed; the running config stays");
            crate::metrics::config_reload(source.label(), false);
            return false;
        }
    };
    for change in control::restart_needed(started, &compiled.settings) {
        tracing::warn!(
            "{change} changed in {}: takes effect after a restart",
            path.display()
        );
    }
    let control = Arc::clone(control);
    let raw = compiled.raw;
    let applied = tokio::task::spawn_blocking(move || control.reload(raw)).await;
    let ok = matches!(applied, Ok(Ok(_)));
    crate::metrics::config_reload(source.label(), ok);
    match applied {
        Ok(Ok(version)) => {
            tracing::info!(version, ?source, file = %path.display(), "config reloaded");
            true
        }
        Ok(Err(e)) => {
            tracing::error!(?source, file = %path.display(), "reload failed; the running config stays: {e}");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            false
        }
    }
}
