//! Starting and stopping veer: bind the listeners, install the table, serve until told to stop,
//! then drain. `start` is what the CLI, the demo and the integration tests call.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{Compiled, ConfigErrors};
use crate::control::{Control, StateFileError};
use crate::state::State;
use crate::{reload, server, upstream};

/// Why veer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        field: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("{0}")]
    Refused(ConfigErrors),
}

/// A serving veer: where it listens, its state, and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    /// Where the admin API listens, when `[admin]` is configured.
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<State>,
    pub control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<io::Result<bool>>,
}

impl Running {
    /// Starts the drain: stop accepting, finish in-flight requests within `shutdown_grace`.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for the drain to end. `true`: every connection finished within the grace period.
    pub async fn wait(self) -> bool {
        matches!(self.task.await, Ok(Ok(true)))
    }

    /// A receiver that turns true when the drain starts (for tasks that must stop with it).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Binds and serves `compiled` on the current tokio runtime, with the runtime state saved in
/// `admin.state_file` laid over it.
pub async fn start(compiled: Compiled) -> Result<Running, StartError> {
    compiled.admit().map_err(StartError::Refused)?;
    let settings = compiled.settings.clone();
    let listener = bind("listen.http", settings.listen.http)?;
    let http_addr = local_addr("listen.http", &listener, settings.listen.http)?;
    let admin_listener = match &settings.admin {
        Some(a) => Some(bind("admin.listen", a.listen)?),
        None => None,
    };
    let control = Arc::new(Control::start(compiled)?);
    let state = Arc::clone(control.state());
    let (shutdown, rx) = watch::channel(false);
    let admin_addr = match (admin_listener, &settings.admin) {
        (Some(listener), Some(a)) => {
            let addr = local_addr("admin.listen", &listener, a.listen)?;
            let admin = Arc::new(Admin {
                control: Arc::clone(&control),
                addr,
                token: a.token.clone(),
                draining: shutdown.subscribe(),
            });
            tokio::spawn(admin::serve(listener, admin));
            tracing::info!(addr = %addr, "admin API listening");
            Some(addr)
        }
        _ => None,
    };
    crate::health::active::spawn(Arc::clone(&state), shutdown.subscribe());
    tokio::spawn(sweep_idle_connections(
        Arc::clone(&state),
        shutdown.subscribe(),
    ));
    let task = tokio::spawn(server::serve(listener, Arc::clone(&state), rx));
    tracing::info!(addr = %http_addr, "listening");
    Ok(Running {
        http_addr,
        admin_addr,
        state,
        control,
        shutdown,
        task,
    })
}

/// Closes pooled upstream connections idle past `proxy.upstream_idle_timeout`, also where no
/// request comes to take them, until the drain starts.
async fn sweep_idle_connections(state: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let snap = state.snapshot();
        let max_idle = snap.table.proxy.upstream_idle_timeout;
        snap.conns.sweep(tokio::time::Instant::now(), max_idle);
        drop(snap);
        tokio::select! {
            _ = tokio::time::sleep(upstream::pool::sweep_period(max_idle)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

fn bind(field: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    server::bind(addr).map_err(|source| StartError::Bind {
        field,
        addr,
        source,
    })
}

fn local_addr(
    field: &'static str,
    listener: &tokio::net::TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        field,
        addr,
        source,
    })
}

/// `veer run`: serve the config at `path` until SIGTERM or SIGINT, reloading on SIGHUP.
/// Returns the process exit code.
pub fn main(path: PathBuf, compiled: Compiled) -> i32 {
    crate::telemetry::init(&compiled.settings.log);
    crate::telemetry::raise_open_files_limit(compiled.table.proxy.max_connections);
    let workers = match compiled.settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    runtime.block_on(serve_until_signal(path, compiled))
}

async fn serve_until_signal(path: PathBuf, compiled: Compiled) -> i32 {
    // Handlers first: a signal that arrives while veer starts must not take its default
    // action (SIGHUP would end the process).
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for signals");
            return 1;
        }
    };
    for note in compiled.notes() {
        tracing::warn!("{note}");
    }
    let settings = compiled.settings.clone();
    let running = match start(compiled).await {
        Ok(r) => r,
        Err(e @ StartError::StateFile(StateFileError::Locked { .. })) => {
            tracing::error!("{e}");
            return 1;
        }
        Err(e @ (StartError::Refused(_) | StartError::StateFile(_))) => {
            tracing::error!("{e}");
            return 2;
        }
        Err(e) => {
            tracing::error!("{e}");
            return 1;
        }
    };
    let reloader = tokio::spawn(reload::run(
        path,
        settings,
        Arc::clone(&running.control),
        signals.hup,
        running.shutdown_signal(),
    ));
    tokio::select! {
        _ = signals.term.recv() => tracing::info!("SIGTERM received"),
        _ = signals.int.recv() => tracing::info!("SIGINT received"),
    }
    running.shutdown();
    reloader.abort();
    if running.wait().await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("shutdown_grace passed with requests in flight; exiting");
    }
    0
}

/// The signals `veer run` acts on.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}
