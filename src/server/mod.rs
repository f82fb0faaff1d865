//! Listeners and client connections: `SO_REUSEPORT` binding, the accept loop, the connection
//! limit, each connection's idle and header-read watchdog, and the graceful drain on shutdown.
//! HTTP/1.1 is served by veer's own server (`h1`), HTTP/2 (prior knowledge, or `h2` by ALPN) by
//! `h2`, which the HTTP/1.1 server hands a client that opens with the HTTP/2 preface. Knows
//! nothing of routing: each request goes to `proxy::handle`.

pub mod h1;
pub mod h2;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::conn::{ConnContext, Timers, Verdict, WatchedIo};
use crate::http1::Upgraded;
use crate::proxy::{ProxyError, RespBody};
use crate::state::State;
use crate::telemetry::Throttled;
use crate::upstream::{BodyError, Io};

/// While draining, how often a connection whose first request has not begun looks again.
const FIRST_REQUEST_POLL: Duration = Duration::from_millis(5);

/// The largest request head accepted; a bigger one is answered `431`.
const MAX_HEAD_BYTES: usize = crate::http1::MAX_HEAD;

/// Binds a listening socket with `SO_REUSEADDR` and `SO_REUSEPORT`, so that a new veer process
/// can bind the same port while the old one drains.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Serves `listener` until `shutdown` turns true, then stops accepting, lets every connection
/// finish its requests within the table's `shutdown_grace`, and returns. `Ok(true)`: every
/// connection finished in time. With `tls`, each connection's TLS handshake comes first
/// (`listen.https`), bounded by `proxy.header_read_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    tls: Option<TlsAcceptor>,
) -> io::Result<bool> {
    let builders = Builders::new();
    let active = Arc::new(AtomicUsize::new(0));
    let gauge = crate::metrics::connections(if tls.is_some() { "https" } else { "http" });
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accept_errors = Throttled::new(Duration::from_secs(1));
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let conn = Conn {
                        state: Arc::clone(&state),
                        shutdown: shutdown.clone(),
                        hold: Held {
                            _done: done_tx.clone(),
                            _count: Counted::new(&active, &gauge),
                        },
                    };
                    let max = state.snapshot().table.proxy.max_connections;
                    let over = active.load(Ordering::Relaxed) > max;
                    let builders = builders.clone();
                    tokio::spawn(conn.run(stream, peer, builders, over, tls.clone()));
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning, and
                    // log at a bounded rate.
                    if let Some(unlogged) = accept_errors.hit(Instant::now()) {
                        tracing::warn!(error = %e, unlogged, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    drop(done_tx);
    let grace = state.snapshot().table.proxy.shutdown_grace;
    let open = active.load(Ordering::Relaxed);
    tracing::info!(connections = open, grace = ?grace, "draining");
    Ok(tokio::time::timeout(grace, done_rx.recv()).await.is_ok())
}

#[derive(Clone)]
struct Builders {
    refusing: Arc<auto::Builder<TokioExecutor>>,
}

impl Builders {
    fn new() -> Self {
        let mut refusing = auto::Builder::new(TokioExecutor::new());
        refusing
            .http1()
            .header_read_timeout(None)
            .max_buf_size(MAX_HEAD_BYTES)
            .keep_alive(false);
        Self {
            refusing: Arc::new(refusing),
        }
    }
}

/// A client connection being served: HTTP/1.1 (the server hands a client that opens with the
/// HTTP/2 preface over), or HTTP/2.
enum Serving {
    H1 {
        conn: Pin<Box<dyn Future<Output = Result<h1::Served, BodyError>> + Send>>,
        state: Arc<State>,
        ctx: Arc<ConnContext>,
        drain: Arc<AtomicBool>,
    },
    H2 {
        conn: Pin<Box<dyn Future<Output = Result<(), BodyError>> + Send>>,
        drain: Arc<AtomicBool>,
    },
}

impl Serving {
    fn new(io: WatchedIo<Io>, state: Arc<State>, ctx: Arc<ConnContext>) -> Self {
        // A client that chose `h2` by ALPN opens with the preface like one with prior knowledge.
        let drain = Arc::new(AtomicBool::new(false));
        Serving::H1 {
            conn: Box::pin(h1::serve(
                io,
                Arc::clone(&state),
                Arc::clone(&ctx),
                Arc::clone(&drain),
            )),
            state,
            ctx,
            drain,
        }
    }

    fn is_h2(&self) -> bool {
        matches!(self, Serving::H2 { .. })
    }

    /// Ends the connection once the requests in hand are answered. Both servers look at the
    /// flag each time they are polled, and the connection's task polls them next.
    fn graceful_shutdown(&mut self) {
        match self {
            Serving::H1 { drain, .. } | Serving::H2 { drain, .. } => {
                drain.store(true, Ordering::Relaxed)
            }
        }
    }
}

impl Future for Serving {
    type Output = Result<(), BodyError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = &mut *self;
            match this {
                Serving::H1 {
                    conn,
                    state,
                    ctx,
                    drain,
                } => match std::task::ready!(conn.as_mut().poll(cx)) {
                    Ok(h1::Served::Closed) => return Poll::Ready(Ok(())),
                    Err(e) => return Poll::Ready(Err(e)),
                    Ok(h1::Served::H2 { io, read }) => {
                        // Whatever the first read held: this connection's requests keep their
                        // own deadlines and its frames are not request heads.
                        io.activity().set_h2();
                        let io = Upgraded::new(io, read);
                        let conn = Box::pin(h2::serve(
                            io,
                            Arc::clone(state),
                            Arc::clone(ctx),
                            Arc::clone(drain),
                        ));
                        let drain = Arc::clone(drain);
                        *this = Serving::H2 { conn, drain };
                    }
                },
                Serving::H2 { conn, .. } => return conn.as_mut().poll(cx),
            }
        }
    }
}

/// Counts a connection in `active` (the connection limit) and in `veer_connections_active`
/// while alive.
struct Counted(Arc<AtomicUsize>, metrics::Gauge);

impl Counted {
    fn new(active: &Arc<AtomicUsize>, gauge: &metrics::Gauge) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        gauge.increment(1.0);
        Self(Arc::clone(active), gauge.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.decrement(1.0);
    }
}

/// One accepted client connection and what it must report to.
struct Conn {
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    hold: Held,
}

/// What counts a connection, held by its context until the connection (and any tunnel it
/// became) ends.
struct Held {
    /// The drain waits for every clone to drop.
    _done: mpsc::Sender<()>,
    /// The connection limit.
    _count: Counted,
}

impl Conn {
    async fn run(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        builders: Builders,
        over: bool,
        tls: Option<TlsAcceptor>,
    ) {
        let _ = stream.set_nodelay(true);
        let Conn {
            state,
            mut shutdown,
            hold,
        } = self;
        let settings = state.snapshot().table.proxy.clone();
        let Some(stream) = handshake(stream, peer, tls, settings.header_read_timeout).await else {
            return;
        };
        let ctx = Arc::new(ConnContext::new(peer, stream.scheme()).holding(hold));
        let io = WatchedIo::new(stream, Arc::clone(&ctx.activity));
        if over {
            let io = TokioIo::new(io);
            // One answer, then close; a client that sends nothing is not waited on for longer
            // than a request head may take.
            let refuse = service_fn(|_: Request<Incoming>| async {
                Ok::<Response<RespBody>, Infallible>(ProxyError::OverCapacity.to_response())
            });
            let serving = builders.refusing.serve_connection(io, refuse);
            let _ = tokio::time::timeout(settings.header_read_timeout, serving).await;
            return;
        }
        let timers = Timers {
            idle: settings.idle_timeout,
            header: settings.header_read_timeout,
            stall: settings.request_timeout.max(settings.idle_timeout),
        };
        let mut conn = Serving::new(io, Arc::clone(&state), Arc::clone(&ctx));
        let opened = Instant::now();
        // The watchdog also keeps each HTTP/1.1 request's `request_timeout` (conn::Activity::
        // watch_head_by), so it never sleeps longer than that: a request that starts while it
        // sleeps has its deadline after the wake-up.
        let look_within = settings.request_timeout;
        let mut check_at = opened + settings.idle_timeout.min(settings.header_read_timeout);
        check_at = check_at.min(opened + look_within);
        ctx.activity.looks_by(check_at);
        let mut draining = *shutdown.borrow();
        // The drain shuts a connection down (an idle one closes, a busy one answers with
        // `connection: close`) only once its first request has begun: its client connected to
        // be answered, and closing it unanswered would lose that request, which under a
        // handover a successor sharing the socket would have served. A client that never sends
        // is cut off by the header timeout as usual.
        let mut shut = false;
        let mut idle_goaway = false;
        loop {
            if draining && !shut && ctx.activity.started_any() {
                conn.graceful_shutdown();
                shut = true;
            }
            let wake = if draining && !shut {
                check_at.min(Instant::now() + FIRST_REQUEST_POLL)
            } else {
                check_at
            };
            let watch = async {
                tokio::select! {
                    biased;
                    _ = shutdown.changed(), if !draining => Watch::Shutdown,
                    // Still running while draining: a stuck client must not hold the drain.
                    _ = tokio::time::sleep_until(wake) => Watch::Timer,
                }
            };
            match Beside::new(&mut conn, watch).await {
                Either::Main(res) => {
                    if let Err(e) = res {
                        tracing::debug!(client = %peer, error = %e, "client connection ended");
                    }
                    return;
                }
                Either::Side(Watch::Shutdown) => draining = true,
                Either::Side(Watch::Timer) => {
                    if Instant::now() < check_at {
                        continue;
                    }
                    match ctx.activity.verdict(opened, timers) {
                        Verdict::CheckAt(at) => {
                            check_at = at.min(Instant::now() + look_within);
                            ctx.activity.looks_by(check_at);
                        }
                        // HTTP/2 says goodbye first (GOAWAY, RFC 9113 §9.1), so that a request
                        // the client sends meanwhile is known to be unserved; the close follows
                        // once h2 is done, or at the next look.
                        Verdict::Idle if !idle_goaway && conn.is_h2() => {
                            conn.graceful_shutdown();
                            idle_goaway = true;
                            check_at = Instant::now() + timers.header.min(look_within);
                            ctx.activity.looks_by(check_at);
                        }
                        Verdict::Idle => return,
                        Verdict::SlowHead => {
                            tracing::debug!(client = %peer, "request head too slow; closing");
                            return;
                        }
                        Verdict::Stalled => {
                            tracing::debug!(client = %peer, "no progress with requests in flight; closing");
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// What woke a connection's watchdog.
enum Watch {
    Shutdown,
    Timer,
}

enum Either<A, B> {
    Main(A),
    Side(B),
}

/// Runs `main` and `side` together, like a two-branch `select!`, but polls `side` only when its
/// own waker fired: a connection's task wakes for every read and write, while its watchdog (a
/// timer and the shutdown signal) fires about once per idle timeout, so polling the watchdog on
/// every wake-up would cost each request a timer poll and a watch-channel poll for nothing.
struct Beside<M, S> {
    main: M,
    side: Pin<Box<S>>,
    flag: Arc<SideFlag>,
    side_waker: Waker,
    /// The task waker last handed to `flag`.
    seen: Option<Waker>,
}

/// Set by the side future's waker; wakes the task that polls both.
#[derive(Default)]
struct SideFlag {
    woken: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for SideFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

impl<M: Future + Unpin, S: Future> Beside<M, S> {
    fn new(main: M, side: S) -> Self {
        // Woken from the start: the side future has never been polled.
        let flag = Arc::new(SideFlag {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            main,
            side: Box::pin(side),
            side_waker: Waker::from(Arc::clone(&flag)),
            flag,
            seen: None,
        }
    }
}

impl<M: Future + Unpin, S: Future> Future for Beside<M, S> {
    type Output = Either<M::Output, S::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Poll::Ready(out) = Pin::new(&mut this.main).poll(cx) {
            return Poll::Ready(Either::Main(out));
        }
        // The task's waker first, then the flag: a side wake-up in between sets the flag and
        // finds the waker.
        if !this.seen.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *this.flag.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            this.seen = Some(cx.waker().clone());
        }
        if this.flag.woken.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&this.side_waker);
            if let Poll::Ready(out) = this.side.as_mut().poll(&mut side_cx) {
                return Poll::Ready(Either::Side(out));
            }
        }
        Poll::Pending
    }
}

/// The connection's stream: plain, or once its TLS handshake has finished. A handshake that
/// fails or takes longer than `timeout` ends this connection alone.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
) -> Option<Io> {
    let Some(acceptor) = tls else {
        return Some(Io::Tcp(stream));
    };
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(Io::Tls(Box::new(tls.into()))),
        Ok(Err(e)) => {
            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(client = %peer, "TLS handshake not finished in time; closing");
            None
        }
    }
}
