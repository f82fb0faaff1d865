//! SIGHUP: re-read the config file and install its table. A file with any error leaves the
//! running table serving, and the errors are logged with `file:line:col`. Settings that only a
//! restart can change (listeners) are reported, not silently ignored.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::config::{self, Settings};
use crate::state::State;

/// Reloads `path` on every SIGHUP until `stop` turns true.
pub async fn on_sighup(
    path: PathBuf,
    started: Settings,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reloads are off");
            return;
        }
    };
    loop {
        tokio::select! {
            got = hup.recv() => {
                if got.is_none() {
                    return;
                }
                reload(&path, &started, &state);
            }
            _ = stop.changed() => return,
        }
    }
}

fn reload(path: &Path, started: &Settings, state: &State) {
    match config::load(path) {
        Ok(compiled) => {
            for change in restart_needed(started, &compiled.settings) {
                tracing::warn!(
                    "{change} changed in {}: takes effect after a restart",
                    path.display()
                );
            }
            state.set_access_log(compiled.settings.log.access);
            let version = state.install(compiled.table);
            tracing::info!(version, file = %path.display(), "config reloaded");
        }
        Err(errors) => {
            for e in &errors.0 {
                tracing::error!("reload failed: {e}");
            }
            tracing::error!(file = %path.display(), "reload failed; the running config stays");
        }
    }
}

/// Settings fixed at start that differ in the new file.
pub fn restart_needed(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if old.tls != new.tls {
        out.push("tls");
    }
    if old.admin != new.admin {
        out.push("admin");
    }
    if old.workers != new.workers {
        out.push("proxy.workers");
    }
    if old.log.level != new.log.level || old.log.format != new.log.format {
        out.push("log.level/log.format");
    }
    out
}
