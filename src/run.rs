//! Starting and stopping veer: bind the listeners, install the table, serve until told to stop,
//! then drain. `start` is what the CLI, the demo and the integration tests call.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin};
use crate::config::{Compiled, ConfigErrors};
use crate::control::{Control, StateFileError};
use crate::handover::{self, HandoverError, Offer, Role, Takeover};
use crate::state::State;
use crate::{reload, server, tls, upstream};

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
    #[error(transparent)]
    Handover(#[from] HandoverError),
    #[error("cannot set up TLS: {0}")]
    Tls(rustls::Error),
}

/// A serving veer: where it listens, its state, and the handle to stop it.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    /// Where HTTPS is served, when `listen.https` is configured.
    pub https_addr: Option<SocketAddr>,
    /// Where the admin API listens, when `[admin]` is configured.
    pub admin_addr: Option<SocketAddr>,
    pub state: Arc<State>,
    pub control: Arc<Control>,
    shutdown: watch::Sender<bool>,
    /// Turns true once a new process took over (`veer run --upgrade`).
    handed_over: watch::Receiver<bool>,
    /// Keeps `handed_over` open for as long as this process runs.
    _handed_over_tx: Arc<watch::Sender<bool>>,
    upgrade_socket: Option<PathBuf>,
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

    /// A receiver that turns true once a new process took over: this one should drain.
    pub fn handed_over(&self) -> watch::Receiver<bool> {
        self.handed_over.clone()
    }

    /// A receiver that turns true when the drain starts (for tasks that must stop with it).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }
}

/// Binds and serves `compiled` on the current tokio runtime, with the runtime state saved in
/// `admin.state_file` laid over it.
pub async fn start(compiled: Compiled) -> Result<Running, StartError> {
    start_with(compiled, None).await
}

/// As `start`, taking over the listening sockets and the runtime state of the veer that
/// `takeover` is connected to (`veer run --upgrade`): that process drains once this one
/// serves. If this one cannot start, the old one is told and goes on serving.
pub async fn start_with(
    compiled: Compiled,
    mut takeover: Option<Takeover>,
) -> Result<Running, StartError> {
    match launch(compiled, &mut takeover).await {
        Ok(running) => {
            if let Some(t) = takeover {
                let old = t.old_pid;
                match t.serving() {
                    Ok(()) => tracing::info!(old_pid = old, "took over; the old process drains"),
                    Err(e) => {
                        tracing::warn!(old_pid = old, error = %e, "serving, but the old process did not hear it")
                    }
                }
            }
            Ok(running)
        }
        Err(e) => {
            if let Some(t) = takeover {
                t.abort(&e.to_string());
            }
            Err(e)
        }
    }
}

async fn launch(
    compiled: Compiled,
    takeover: &mut Option<Takeover>,
) -> Result<Running, StartError> {
    compiled.admit().map_err(StartError::Refused)?;
    let settings = compiled.settings.clone();
    let certificates = tls::load(settings.tls.as_ref()).map_err(StartError::Refused)?;
    let listener = tcp_listener(takeover, Role::Http, "listen.http", settings.listen.http)?;
    let http_addr = local_addr("listen.http", &listener, settings.listen.http)?;
    let https_listener = match settings.listen.https {
        Some(addr) => Some(tcp_listener(takeover, Role::Https, "listen.https", addr)?),
        None => None,
    };
    let admin_listener = match &settings.admin {
        Some(a) => Some(tcp_listener(
            takeover,
            Role::Admin,
            "admin.listen",
            a.listen,
        )?),
        None => None,
    };
    let upgrade_listener = match &settings.listen.upgrade_socket {
        Some(path) => Some(unix_listener(takeover, path)?),
        None => None,
    };
    // Everything is bound: from here the old process's changes come to this one.
    let inherited = match takeover.as_mut() {
        Some(t) => Some(t.ready().map_err(HandoverError::from)?),
        None => None,
    };
    let control = Arc::new(Control::start_with(compiled, inherited)?);
    let state = Arc::clone(control.state());
    state.certificates.set(certificates);
    let (shutdown, rx) = watch::channel(false);
    let (handed_over_tx, handed_over) = watch::channel(false);
    let handed_over_tx = Arc::new(handed_over_tx);
    let mut offer = Offer::default();
    if upgrade_listener.is_some() {
        offered(
            &mut offer,
            Role::Http,
            settings.listen.http.to_string(),
            listener.as_fd(),
        )?;
    }
    let https = match (https_listener, settings.listen.https) {
        (Some(listener), Some(addr)) => {
            let local = local_addr("listen.https", &listener, addr)?;
            if upgrade_listener.is_some() {
                offered(&mut offer, Role::Https, addr.to_string(), listener.as_fd())?;
            }
            let acceptor =
                tls::acceptor(Arc::clone(&state.certificates)).map_err(StartError::Tls)?;
            Some((listener, local, acceptor))
        }
        _ => None,
    };
    let https_addr = https.as_ref().map(|(_, addr, _)| *addr);
    let admin_addr = match (admin_listener, &settings.admin) {
        (Some(listener), Some(a)) => {
            let addr = local_addr("admin.listen", &listener, a.listen)?;
            if upgrade_listener.is_some() {
                offered(
                    &mut offer,
                    Role::Admin,
                    a.listen.to_string(),
                    listener.as_fd(),
                )?;
            }
            let admin = Arc::new(Admin {
                control: Arc::clone(&control),
                addr,
                token: a.token.clone(),
                draining: shutdown.subscribe(),
            });
            tokio::spawn(admin::serve(listener, admin, handed_over.clone()));
            tracing::info!(addr = %addr, "admin API listening");
            Some(addr)
        }
        _ => None,
    };
    let upgrade_socket = settings.listen.upgrade_socket.clone();
    if let (Some(listener), Some(path)) = (upgrade_listener, &upgrade_socket) {
        offered(
            &mut offer,
            Role::Upgrade,
            path.display().to_string(),
            listener.as_fd(),
        )?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(HandoverError::from)?;
        tokio::spawn(handover::serve(
            listener,
            offer,
            Arc::clone(&control),
            Arc::clone(&handed_over_tx),
            shutdown.subscribe(),
        ));
        tracing::info!(path = %path.display(), "upgrade socket listening");
    }
    crate::health::active::spawn(Arc::clone(&state), shutdown.subscribe());
    crate::rollout::driver::spawn(Arc::clone(&control), shutdown.subscribe());
    tokio::spawn(crate::lanes::record_every_second(
        Arc::clone(&state),
        shutdown.subscribe(),
    ));
    tokio::spawn(sweep_idle_connections(
        Arc::clone(&state),
        shutdown.subscribe(),
    ));
    let https_task = https.map(|(listener, addr, acceptor)| {
        tracing::info!(addr = %addr, "HTTPS listening");
        let serving = server::serve(listener, Arc::clone(&state), rx.clone(), Some(acceptor));
        tokio::spawn(serving)
    });
    let http_task = tokio::spawn(server::serve(listener, Arc::clone(&state), rx, None));
    tracing::info!(addr = %http_addr, "listening");
    // The drain is over when both listeners' connections have finished.
    let task = tokio::spawn(async move {
        let http = http_task.await.map_err(io::Error::other)??;
        let https = match https_task {
            Some(task) => task.await.map_err(io::Error::other)??,
            None => true,
        };
        Ok(http && https)
    });
    Ok(Running {
        http_addr,
        https_addr,
        admin_addr,
        state,
        control,
        shutdown,
        handed_over,
        _handed_over_tx: handed_over_tx,
        upgrade_socket,
        task,
    })
}

/// Adds a listening socket to what a successor may take over.
fn offered(
    offer: &mut Offer,
    role: Role,
    addr: String,
    fd: BorrowedFd<'_>,
) -> Result<(), StartError> {
    offer
        .add(role, addr, fd)
        .map_err(|e| HandoverError::from(e).into())
}

/// The old process's listening socket for `role` when it was configured with the same address,
/// else a new one bound here.
fn tcp_listener(
    takeover: &mut Option<Takeover>,
    role: Role,
    field: &'static str,
    addr: SocketAddr,
) -> Result<tokio::net::TcpListener, StartError> {
    let inherited = takeover
        .as_mut()
        .and_then(|t| t.take(role, &addr.to_string()));
    let Some(fd) = inherited else {
        return bind(field, addr);
    };
    let listener = std::net::TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|source| StartError::Bind {
            field,
            addr,
            source,
        })
}

fn unix_listener(
    takeover: &mut Option<Takeover>,
    path: &Path,
) -> Result<std::os::unix::net::UnixListener, StartError> {
    let key = path.display().to_string();
    match takeover.as_mut().and_then(|t| t.take(Role::Upgrade, &key)) {
        Some(fd) => Ok(handover::unix_listener(fd).map_err(HandoverError::from)?),
        None => Ok(handover::bind(path)?),
    }
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

/// `veer run`: serve the config at `path` until SIGTERM or SIGINT (or until a new process takes
/// over), reloading on SIGHUP; with `upgrade`, take over from the veer running with this
/// config's `listen.upgrade_socket` first. Returns the process exit code.
pub fn main(path: PathBuf, compiled: Compiled, upgrade: bool) -> i32 {
    crate::telemetry::init(&compiled.settings.log);
    crate::telemetry::raise_open_files_limit(compiled.table.proxy.max_connections);
    let workers = match compiled.settings.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker runs every task on the thread that serves: a current-thread runtime, with no
    // cross-thread queue, work stealing or parked-worker wake-ups for the connection tasks to
    // pay. More workers share the multi-threaded scheduler.
    let built = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    runtime.block_on(serve_until_signal(path, compiled, upgrade))
}

async fn serve_until_signal(path: PathBuf, compiled: Compiled, upgrade: bool) -> i32 {
    // Handlers first: a signal that arrives while veer starts must not take its default
    // action (SIGHUP would end the process).
    let mut signals = match Signals::install() {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for signals");
            return 1;
        }
    };
    let settings = compiled.settings.clone();
    let loaded = reload::content_hash(&path);
    let takeover = if upgrade {
        let Some(socket) = &settings.listen.upgrade_socket else {
            tracing::error!("veer run --upgrade needs listen.upgrade_socket in the config: the socket the running veer listens on");
            return 2;
        };
        // Nothing is bound before the old process answers.
        match Takeover::connect(socket) {
            Ok(t) => {
                tracing::info!(old_pid = t.old_pid, socket = %socket.display(), "taking over");
                Some(t)
            }
            Err(e) => {
                tracing::error!("{e}");
                return 1;
            }
        }
    } else {
        None
    };
    let running = match start_with(compiled, takeover).await {
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
        loaded,
    ));
    tokio::select! {
        _ = signals.term.recv() => tracing::info!("SIGTERM received"),
        _ = signals.int.recv() => tracing::info!("SIGINT received"),
        _ = handover::handed_over(running.handed_over()) => {}
    }
    running.shutdown();
    reloader.abort();
    let handed = *running.handed_over.borrow();
    if let (false, Some(path)) = (handed, &running.upgrade_socket) {
        // The socket is this process's alone (a successor took it over otherwise).
        let _ = std::fs::remove_file(path);
    }
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
