//! One client connection's context: who the client is (for `x-forwarded-for` and source pins)
//! and what it is doing (for the idle and header-read timeouts). Shared by the accept loop, the
//! I/O wrapper and the proxy service of that connection; atomics only.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::upstream::{BodyError, Scheme};

/// Per-connection facts, computed once at accept.
#[derive(Debug)]
pub struct ConnContext {
    pub peer: SocketAddr,
    /// The client's address as a header value, formatted once per connection.
    pub peer_header: HeaderValue,
    /// How the client reached veer, from its connection (`x-forwarded-proto`).
    pub scheme: Scheme,
    pub activity: Arc<Activity>,
    /// What the accept loop counts this connection by (the connection limit, the drain). It
    /// lives as long as the context: an upgraded connection's tunnel holds the context, so a
    /// WebSocket keeps counting after its HTTP exchange ended.
    _hold: Hold,
}

/// A type-erased guard kept alive with the context.
struct Hold(#[allow(dead_code)] Option<Box<dyn std::any::Any + Send + Sync>>);

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

impl ConnContext {
    pub fn new(peer: SocketAddr, scheme: Scheme) -> Self {
        let ip = canonical_ip(peer.ip());
        let peer_header = HeaderValue::from_str(&ip.to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer: SocketAddr::new(ip, peer.port()),
            peer_header,
            scheme,
            activity: Arc::default(),
            _hold: Hold(None),
        }
    }

    /// Keeps `guard` alive for as long as this context.
    pub fn holding(mut self, guard: impl Send + Sync + 'static) -> Self {
        self._hold = Hold(Some(Box::new(guard)));
        self
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so that `::ffff:10.0.0.1` is `10.0.0.1` everywhere.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// What a connection is doing, for its watchdog: requests being served, when the last one
/// ended, and when the bytes of a new request head began to arrive.
#[derive(Debug)]
pub struct Activity {
    /// The instant the times below count from: the connection's own, so that they read
    /// tokio's clock alone (paused in tests) and fit in atomics.
    origin: Instant,
    in_flight: AtomicU32,
    /// Milliseconds since `origin`, +1 (0 = never).
    last_done: AtomicU64,
    /// When the head now awaited began: the accept, or the first byte after the last request.
    head_started: AtomicU64,
    /// The last read or write on the connection.
    last_io: AtomicU64,
    /// The client speaks HTTP/2: its frames (PING, SETTINGS) are not request heads, so only the
    /// idle timeout applies.
    h2: AtomicBool,
    /// By when the HTTP/1.1 request in flight must have its response head (`request_timeout`),
    /// kept by the watchdog instead of a timer per request; 0 = none.
    head_by: AtomicU64,
    /// The watchdog found `head_by` passed: the request gives up.
    expired: AtomicBool,
    /// The latest the watchdog looks next: a deadline before it needs a timer of its own.
    next_look: AtomicU64,
}

impl Default for Activity {
    /// A connection just accepted: its first request head is awaited from now on.
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_done: AtomicU64::new(0),
            head_started: AtomicU64::new(1),
            last_io: AtomicU64::new(1),
            h2: AtomicBool::new(false),
            head_by: AtomicU64::new(0),
            expired: AtomicBool::new(false),
            next_look: AtomicU64::new(u64::MAX),
        }
    }
}

/// What the watchdog should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Look again at this instant.
    CheckAt(Instant),
    /// Idle past `idle_timeout`: close.
    Idle,
    /// A request head has been arriving for longer than `header_read_timeout`: close.
    SlowHead,
    /// Requests are in flight but nothing moved either way for the stall limit (a client that
    /// stopped reading, an upstream that stopped sending): close.
    Stalled,
}

/// The timers a connection is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    pub idle: Duration,
    pub header: Duration,
    /// No byte either way while requests are in flight: `max(request_timeout, idle_timeout)`,
    /// so a request waiting for its response head is bounded by `request_timeout` first.
    pub stall: Duration,
}

impl Activity {
    /// Bytes arrived from the client. Called by the I/O wrapper on every read; cheap when a
    /// request is in flight or a head is already being timed.
    pub fn on_read(&self) {
        let now = self.now_ms();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.head_started.store(now, Ordering::Relaxed);
        }
    }

    /// Bytes went to the client.
    pub fn on_write(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The connection turned out to speak HTTP/2 (prior knowledge).
    pub fn set_h2(&self) {
        self.h2.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
    }

    /// A request head was read whole; counts the request until the guard drops (when its
    /// response has been sent or abandoned).
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        RequestGuard(Arc::clone(self))
    }

    /// Hands the response-head deadline of the HTTP/1.1 request in flight to the watchdog, which
    /// looks at it when it wakes anyway: no timer per request. `false` when it cannot (an
    /// HTTP/2 connection, whose requests each keep a deadline of their own, or a deadline
    /// earlier than the watchdog's next look, after `request_timeout` was lowered): the caller
    /// then keeps a timer of its own.
    pub fn watch_head_by(&self, at: Instant) -> bool {
        let at = self.ms(at);
        if self.h2.load(Ordering::Relaxed) || self.next_look.load(Ordering::Relaxed) > at {
            return false;
        }
        self.expired.store(false, Ordering::Relaxed);
        self.head_by.store(at, Ordering::Relaxed);
        true
    }

    /// The response head arrived (or the request gave up): no deadline to watch.
    pub fn clear_head_by(&self) {
        self.head_by.store(0, Ordering::Relaxed);
    }

    /// The watchdog found the request's deadline passed.
    pub fn head_overdue(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// The watchdog will look again by `at`.
    pub fn looks_by(&self, at: Instant) {
        self.next_look.store(self.ms(at), Ordering::Relaxed);
    }

    /// A request has begun on this connection: one is in flight, or one has ended.
    pub fn started_any(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0 || self.last_done.load(Ordering::Relaxed) != 0
    }

    /// Judges the connection now (the watchdog's tick), given when it was opened.
    pub fn verdict(&self, opened: Instant, timers: Timers) -> Verdict {
        let now = self.now_ms();
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            let limit = self.last_io.load(Ordering::Relaxed) + millis(timers.stall);
            let head_by = self.head_by.load(Ordering::Relaxed);
            if head_by != 0 {
                // A request awaiting its response head is judged by its deadline alone (the
                // stall limit, `max(request_timeout, idle_timeout)` from the last byte, could
                // otherwise close the connection first and lose its `504`).
                if now < head_by {
                    return deadline(now, head_by, Verdict::Stalled);
                }
                // The request sees this when it is polled next, which the watchdog's own
                // wake-up does, and answers `504`; the stall limit applies again after.
                self.expired.store(true, Ordering::Relaxed);
                return deadline(now, limit.max(now + 1), Verdict::Stalled);
            }
            return deadline(now, limit, Verdict::Stalled);
        }
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            return deadline(now, head + millis(timers.header), Verdict::SlowHead);
        }
        let since = match self.last_done.load(Ordering::Relaxed) {
            0 => self.ms(opened),
            t => t,
        };
        deadline(now, since + millis(timers.idle), Verdict::Idle)
    }

    fn now_ms(&self) -> u64 {
        self.ms(Instant::now())
    }

    /// `at` in milliseconds since `origin`, +1.
    fn ms(&self, at: Instant) -> u64 {
        millis(at.saturating_duration_since(self.origin)) + 1
    }
}

/// `expired` once `now` reaches `limit`, else a look again at `limit`.
fn deadline(now: u64, limit: u64, expired: Verdict) -> Verdict {
    if now >= limit {
        expired
    } else {
        Verdict::CheckAt(Instant::now() + Duration::from_millis(limit - now))
    }
}

/// A request being served on a connection.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.head_by.store(0, Ordering::Relaxed);
        self.0.last_done.store(self.0.now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// The HTTP/2 connection preface's first bytes.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A client stream that reports reads to its connection's `Activity`.
#[derive(Debug)]
pub struct WatchedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    /// Nothing read yet: the first bytes tell HTTP/2 from HTTP/1.
    first: bool,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            activity,
            first: true,
        }
    }
}

impl<T> WatchedIo<T> {
    /// The connection's activity this stream reports to.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if self.first {
                self.first = false;
                // HTTP/2 clients send the whole preface at once; a head trickled in a byte at a
                // time stays under the header timeout.
                if buf.filled()[before..].starts_with(H2_PREFACE) {
                    self.activity.set_h2();
                }
            }
            self.activity.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client's request body, as its connection reads it: nothing, or the body of a request to
/// veer's HTTP/1.1 or HTTP/2 server.
#[derive(Debug)]
pub enum ClientBody {
    Empty,
    H1(crate::server::h1::RequestBody),
    H2(crate::server::h2::RequestBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::H1(body) => Pin::new(body).poll_frame(cx),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::H1(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::H1(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The watchdog's timers on tokio's paused clock: every instant below is exact.

    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::advance;

    const TIMERS: Timers = Timers {
        idle: Duration::from_secs(10),
        header: Duration::from_secs(2),
        stall: Duration::from_secs(30),
    };

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A connection accepted now: its activity and the instant it was opened.
    fn accepted() -> (Arc<Activity>, Instant) {
        (Arc::new(Activity::default()), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_is_cut_at_the_header_timeout() {
        let (a, opened) = accepted();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(opened + TIMERS.header)
        );
        advance(ms(1999)).await;
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(opened + TIMERS.header)
        );
        advance(ms(1)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::SlowHead);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_trickling_in_do_not_extend_the_head_timer() {
        let (a, opened) = accepted();
        for _ in 0..3 {
            advance(ms(600)).await;
            a.on_read();
            assert!(matches!(a.verdict(opened, TIMERS), Verdict::CheckAt(_)));
        }
        advance(ms(200)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::SlowHead);
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_request_the_idle_timer_runs_from_its_end() {
        let (a, opened) = accepted();
        advance(ms(500)).await;
        let request = a.begin();
        // Served for longer than both the header and the idle timeouts: neither applies.
        advance(ms(12_000)).await;
        assert!(matches!(a.verdict(opened, TIMERS), Verdict::CheckAt(_)));
        drop(request);
        let ended = Instant::now();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(ended + TIMERS.idle)
        );
        advance(ms(9_999)).await;
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(ended + TIMERS.idle)
        );
        advance(ms(1)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_byte_of_the_next_head_starts_the_header_timer() {
        let (a, opened) = accepted();
        drop(a.begin());
        advance(ms(5_000)).await;
        a.on_read();
        let head = Instant::now();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(head + TIMERS.header)
        );
        advance(TIMERS.header).await;
        // Long before the idle timeout would close it.
        assert_eq!(a.verdict(opened, TIMERS), Verdict::SlowHead);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_cut_only_when_nothing_moves_for_the_stall_limit() {
        let (a, opened) = accepted();
        let _request = a.begin();
        advance(ms(20_000)).await;
        a.on_write();
        let moved = Instant::now();
        advance(ms(20_000)).await;
        a.on_read();
        let moved_again = Instant::now();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(moved_again + TIMERS.stall)
        );
        assert!(moved_again > moved);
        advance(TIMERS.stall - ms(1)).await;
        assert!(matches!(a.verdict(opened, TIMERS), Verdict::CheckAt(_)));
        advance(ms(1)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::Stalled);
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_keeps_a_requests_head_deadline_and_marks_it_overdue() {
        let (a, opened) = accepted();
        a.looks_by(opened + ms(1_000));
        let request = a.begin();
        let head_by = Instant::now() + ms(5_000);
        assert!(a.watch_head_by(head_by));
        // Sooner than the stall limit: the watchdog wakes for it.
        assert_eq!(a.verdict(opened, TIMERS), Verdict::CheckAt(head_by));
        advance(ms(4_999)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::CheckAt(head_by));
        assert!(!a.head_overdue());
        advance(ms(1)).await;
        assert!(matches!(a.verdict(opened, TIMERS), Verdict::CheckAt(_)));
        assert!(a.head_overdue(), "the request is told to give up");
        drop(request);

        // A deadline before the watchdog's next look (a lowered request_timeout) is not taken:
        // the request keeps a timer of its own. Nor is any deadline of an HTTP/2 connection.
        a.looks_by(Instant::now() + ms(10_000));
        let _request = a.begin();
        assert!(!a.watch_head_by(Instant::now() + ms(2_000)));
        assert!(a.watch_head_by(Instant::now() + ms(10_000)));
        assert!(!a.head_overdue(), "a new deadline starts afresh");
        let (b, _) = accepted();
        b.looks_by(Instant::now());
        b.set_h2();
        assert!(!b.watch_head_by(Instant::now() + ms(10_000)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_awaiting_its_head_is_not_cut_by_the_stall_limit_first() {
        // request_timeout no shorter than idle_timeout: the stall limit (from the last byte,
        // read just before the request began) falls before the request's deadline.
        let timers = Timers {
            idle: ms(300),
            header: ms(300),
            stall: ms(300),
        };
        let (a, opened) = accepted();
        a.looks_by(opened);
        a.on_read();
        advance(ms(1)).await;
        let _request = a.begin();
        let head_by = Instant::now() + ms(300);
        assert!(a.watch_head_by(head_by));
        advance(ms(299)).await;
        assert_eq!(a.verdict(opened, timers), Verdict::CheckAt(head_by));
        advance(ms(1)).await;
        assert!(matches!(a.verdict(opened, timers), Verdict::CheckAt(_)));
        assert!(
            a.head_overdue(),
            "the request answers 504; the connection is not cut"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_are_not_request_heads_and_do_not_reset_the_idle_timer() {
        let (a, opened) = accepted();
        a.set_h2();
        // PINGs every second: never a slow head, and the idle timer still runs from the open.
        for _ in 0..9 {
            advance(ms(1_000)).await;
            a.on_read();
            a.on_write();
            assert_eq!(
                a.verdict(opened, TIMERS),
                Verdict::CheckAt(opened + TIMERS.idle)
            );
        }
        advance(ms(1_000)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_idle_runs_from_the_last_request() {
        let (a, opened) = accepted();
        a.set_h2();
        advance(ms(4_000)).await;
        drop(a.begin());
        let ended = Instant::now();
        advance(ms(8_000)).await;
        a.on_read();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(ended + TIMERS.idle)
        );
        advance(ms(2_000)).await;
        assert_eq!(a.verdict(opened, TIMERS), Verdict::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn watched_io_reports_reads_writes_and_the_http2_preface() {
        let (a, opened) = accepted();
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = WatchedIo::new(server, Arc::clone(&a));
        let _request = a.begin();
        advance(ms(25_000)).await;
        client.write_all(b"x").await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(io.read(&mut buf).await.unwrap(), 1);
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(Instant::now() + TIMERS.stall),
            "a read is progress"
        );
        advance(ms(25_000)).await;
        io.write_all(b"y").await.unwrap();
        assert_eq!(
            a.verdict(opened, TIMERS),
            Verdict::CheckAt(Instant::now() + TIMERS.stall),
            "a write is progress"
        );

        let (b, opened) = accepted();
        let (mut client, server) = tokio::io::duplex(1024);
        let mut io = WatchedIo::new(server, Arc::clone(&b));
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        advance(TIMERS.header * 2).await;
        assert_eq!(
            b.verdict(opened, TIMERS),
            Verdict::CheckAt(opened + TIMERS.idle),
            "an HTTP/2 client is judged by the idle timeout alone"
        );
    }
}
