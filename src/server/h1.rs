//! veer's HTTP/1.1 server: one client connection, read and answered by that connection's task.
//! It parses each request head, hands the request to `proxy::handle` and polls the answer in
//! place (no task, no channel, no boxed future per request), writes the response head together
//! with the first body bytes, and reads the request's body only when the request is forwarded
//! and pulls it. A client that opens with the HTTP/2 preface is handed back to be served by
//! hyper's HTTP/2 server.
//!
//! Written here rather than taken from hyper's server because it is the hot path: hyper's
//! dispatcher boxes each request's future, moves the head through its layers and runs a
//! want/need handshake per body, which was about a fifth of veer's instructions per request.
//! Parsing is `httparse`'s; this module owns framing, keep-alive, `Expect: 100-continue`,
//! pipelining and the protocol switch. Knows nothing of routes: `proxy::handle` decides.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{request, response, Method, Request, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::sync::oneshot;

use crate::conn::{ClientBody, ConnContext, WatchedIo};
use crate::http1::{
    self, has_token, itoa, parse_length, put_field, settle_chunked, step_chunked, Chunk, Out, Step,
    Upgraded, MAX_HEAD, MAX_HEADERS, READ_SPACE,
};
use crate::proxy::RespBody;
use crate::state::State;
use crate::upstream::{BodyError, Io};

/// A client's connection after `101 Switching Protocols`.
pub type ClientIo = Upgraded<WatchedIo<Io>>;

/// The client side of a protocol switch, handed with a request whose head asked for one: the
/// connection arrives once the `101` has been written to it.
#[derive(Debug)]
pub struct ClientUpgrade(oneshot::Receiver<ClientIo>);

impl ClientUpgrade {
    /// The client's connection; `None` when the switch did not happen (the connection failed
    /// first).
    pub async fn connection(self) -> Option<ClientIo> {
        self.0.await.ok()
    }
}

/// How a connection's HTTP/1 service ended.
pub enum Served {
    /// The connection is over (closed by either side, drained, or switched to a tunnel).
    Closed,
    /// The client opened with the HTTP/2 preface: the connection, with what was read of it.
    H2 { io: WatchedIo<Io>, read: Bytes },
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `Expect: 100-continue`: where the interim answer stands for the request in hand.
const NO_EXPECT: u8 = 0;
/// The head asked for `100 Continue`; its body has not been pulled yet.
const EXPECTING: u8 = 1;
/// The body was pulled: the connection writes `100 Continue`, then polls again.
const ASKED: u8 = 2;
/// Written (or no longer due): the body is read.
const CONTINUED: u8 = 3;

/// What the connection's task and the request's body (polled by the same task, from inside
/// `proxy::handle` or the response body) share: the stream and what was read from it. Never
/// contended: one task polls both, one at a time.
struct Shared {
    wire: Mutex<Wire>,
    expect: AtomicU8,
}

impl Shared {
    fn wire(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `out` whole, then flushes.
    fn poll_write(&self, cx: &mut Context<'_>, out: &mut Out) -> Poll<io::Result<()>> {
        let mut wire = self.wire();
        out.poll_write_to(&mut wire.io, cx, &mut false)
    }
}

struct Wire {
    io: WatchedIo<Io>,
    rbuf: BytesMut,
    /// The body of the request in hand, as far as it has been read.
    body: Reading,
    /// The request in hand, counted from 1: a body kept past its request reads nothing.
    seq: u64,
}

/// Where reading a request body stands.
#[derive(Debug)]
enum Reading {
    Done,
    Length(u64),
    Chunked(Chunk),
    /// Cut short or badly framed: the connection cannot go on.
    Broken,
}

/// What a request head's fields said about the connection and the body (the head itself is
/// parsed into the connection's `request::Parts`).
struct Shape {
    body: Reading,
    /// The client wants the connection kept after this exchange.
    keep: bool,
    /// `Expect: 100-continue`.
    expect: bool,
    /// `Connection: upgrade` with `Upgrade` (HTTP/1.1).
    upgrade: bool,
    /// `TE: trailers`: the client takes trailer fields in a chunked answer.
    trailers: bool,
}

/// Why a head could not be taken.
enum Fault {
    /// `400`, with what was wrong.
    Bad(&'static str),
    /// `431`: more than `MAX_HEAD` bytes or `MAX_HEADERS` fields.
    TooLarge,
    /// `505`: not HTTP/1.0 or HTTP/1.1.
    Version,
    /// `501`: a method veer does not serve (`CONNECT`: veer is no forward proxy).
    NotImplemented(&'static str),
    Io(io::Error),
}

impl Wire {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        http1::poll_read_into(&mut self.io, cx, &mut self.rbuf)
    }

    /// Reads until the first bytes tell HTTP/2's preface from an HTTP/1 head: `true` for the
    /// preface.
    fn poll_preface(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        while self.rbuf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&self.rbuf) {
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Ok(false));
            }
        }
        Poll::Ready(Ok(self.rbuf.starts_with(H2_PREFACE)))
    }

    /// The next request head, parsed into `head`; `None` when the client closed between
    /// requests, or when the connection drains and no byte of another request has come.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        drain: &AtomicBool,
        head: &mut request::Parts,
    ) -> Poll<Result<Option<Shape>, Fault>> {
        loop {
            if !self.rbuf.is_empty() {
                if let Some(shape) = parse_request(&mut self.rbuf, head)? {
                    return Poll::Ready(Ok(Some(shape)));
                }
            } else if drain.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(None));
            }
            match ready!(self.poll_fill(cx)) {
                // A head cut short by the close is not answered: there is no one to read it.
                Ok(0) => return Poll::Ready(Ok(None)),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(Fault::Io(e))),
            }
        }
    }

    /// While a request is answered and its body is not being read: whether the client has
    /// closed its connection. What it sends meanwhile (the next request, pipelined) is kept.
    /// Costs no system call when nothing has arrived since the last read.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> bool {
        if !matches!(self.body, Reading::Done) {
            return false;
        }
        while self.rbuf.len() < MAX_HEAD {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return false,
            }
        }
        false
    }

    /// Reads the request's body as its framing says; `None` at its end.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            match &mut self.body {
                Reading::Done => return Poll::Ready(None),
                Reading::Broken => return Poll::Ready(Some(Err(CUT_SHORT.into()))),
                Reading::Length(left) => {
                    if !self.rbuf.is_empty() {
                        let take = (*left).min(self.rbuf.len() as u64);
                        *left -= take;
                        if *left == 0 {
                            self.body = Reading::Done;
                        }
                        let data = self.rbuf.split_to(take as usize).freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Reading::Chunked(chunk) => match step_chunked(chunk, &mut self.rbuf) {
                    Ok(Step::Data(data)) => {
                        if settle_chunked(chunk, &mut self.rbuf) {
                            self.body = Reading::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(Step::Trailers(fields)) => {
                        self.body = Reading::Done;
                        return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                    }
                    Ok(Step::End) => {
                        self.body = Reading::Done;
                        return Poll::Ready(None);
                    }
                    Ok(Step::More) => {}
                    Err(why) => {
                        self.body = Reading::Broken;
                        return Poll::Ready(Some(Err(why.into())));
                    }
                },
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) => {
                    self.body = Reading::Broken;
                    return Poll::Ready(Some(Err(CUT_SHORT.into())));
                }
                Ok(_) => {}
                Err(e) => {
                    self.body = Reading::Broken;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    /// Whether the request's body is over, or has arrived whole (so that `finish_body` will
    /// skip it).
    fn body_settled(&self) -> bool {
        match self.body {
            Reading::Done => true,
            Reading::Length(left) => left <= self.rbuf.len() as u64,
            Reading::Chunked(_) | Reading::Broken => false,
        }
    }

    /// After an exchange: whether the request's body is over, so that the next head can be
    /// read. What is left of it is skipped when it has already arrived whole (a small body the
    /// request was answered without); otherwise the connection is closed, as reading an unknown
    /// amount for no one is not worth keeping it.
    fn finish_body(&mut self) -> bool {
        loop {
            match &mut self.body {
                Reading::Done => return true,
                Reading::Length(left) if *left <= self.rbuf.len() as u64 => {
                    self.rbuf.advance(*left as usize);
                    self.body = Reading::Done;
                }
                Reading::Chunked(chunk) => match step_chunked(chunk, &mut self.rbuf) {
                    Ok(Step::Data(_)) => {}
                    Ok(Step::Trailers(_) | Step::End) => self.body = Reading::Done,
                    Ok(Step::More) | Err(_) => return false,
                },
                Reading::Length(_) | Reading::Broken => return false,
            }
        }
    }
}

const CUT_SHORT: &str = "the client's connection ended in the middle of the request body";

/// Parses a request head from the front of `buf` into `parts` and takes it out; `None` while
/// incomplete. Header values are views of the head's bytes, not copies. `parts` is the
/// connection's, reused from one request to the next: its header map keeps its room.
fn parse_request(buf: &mut BytesMut, parts: &mut request::Parts) -> Result<Option<Shape>, Fault> {
    // Uninitialised: zeroing a hundred fields (3 KiB) per head showed in the profile.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match parsed.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(Fault::TooLarge),
        Err(httparse::Error::Version) => return Err(Fault::Version),
        Err(_) => return Err(Fault::Bad("malformed request head\n")),
    };
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| Fault::Bad("invalid method\n"))?;
    // A tunnel's bytes may follow the head at once: the answer closes the connection.
    if method == Method::CONNECT {
        return Err(Fault::NotImplemented(crate::proxy::error::NO_CONNECT));
    }
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where the target and each field lie in the head, so that they can be slices of it once
    // frozen.
    let target = parsed.path.unwrap_or_default();
    let target = (
        target.as_ptr() as usize - buf.as_ptr() as usize,
        target.len(),
    );
    let mut spans = [(0, 0, 0, 0); MAX_HEADERS];
    let count = http1::field_spans(buf, parsed.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.0 + target.1))
        .map_err(|_| Fault::Bad("invalid request target\n"))?;
    let headers = &mut parts.headers;
    headers.clear();
    headers.reserve(count);
    let (mut chunked, mut length) = (None, None);
    let (mut close, mut keep_alive, mut conn_upgrade) = (false, false, false);
    let (mut upgrade_field, mut expect, mut trailers) = (false, false, false);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| Fault::Bad("invalid header name\n"))?;
        let raw = head.slice(vs as usize..ve as usize);
        // The fields that shape the connection are read here, on the way (a comparison of
        // known names is a tag comparison), rather than looked up in the map afterwards.
        if name == header::TRANSFER_ENCODING {
            let last = raw.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            let first = length.is_none();
            length = Some(match (length, parse_length(&raw)) {
                (Some(None), _) | (_, None) => None,
                (None, Some(n)) => Some(n),
                (Some(Some(m)), Some(n)) => (m == n).then_some(n),
            });
            // Equal repeats (`3, 3`, or the field twice) go on as one plain value: a strict
            // server behind veer may refuse them.
            match length {
                Some(Some(n)) if first && raw.contains(&b',') => {
                    let plain = HeaderValue::from_bytes(itoa(n, &mut [0; 20]))
                        .map_err(|_| Fault::Bad("invalid content-length\n"))?;
                    headers.append(name, plain);
                    continue;
                }
                Some(Some(_)) if !first => continue,
                _ => {}
            }
        } else if name == header::CONNECTION {
            close |= has_token(&raw, b"close");
            keep_alive |= has_token(&raw, b"keep-alive");
            conn_upgrade |= has_token(&raw, b"upgrade");
        } else if name == header::UPGRADE {
            upgrade_field = true;
        } else if name == header::EXPECT {
            expect |= raw.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name == header::TE {
            trailers |= has_token(&raw, b"trailers");
        }
        // httparse has already refused control characters in values; what it lets through
        // (visible ASCII, tabs, spaces, obs-text) is what a `HeaderValue` may hold.
        let value = HeaderValue::from_maybe_shared(raw)
            .map_err(|_| Fault::Bad("invalid header value\n"))?;
        headers.append(name, value);
    }
    // A body whose length the head does not say one way is refused rather than guessed at: a
    // server behind veer could read it the other way (request smuggling, RFC 9112 §6.3).
    let body = match (chunked, length) {
        (Some(_), Some(_)) => {
            return Err(Fault::Bad(
                "both transfer-encoding and content-length in one request\n",
            ))
        }
        (Some(false), None) => {
            return Err(Fault::Bad("transfer-encoding other than chunked last\n"))
        }
        (Some(true), None) if version == Version::HTTP_10 => {
            return Err(Fault::Bad("transfer-encoding in an HTTP/1.0 request\n"))
        }
        (Some(true), None) => Reading::Chunked(Chunk::Size),
        (None, Some(None)) => return Err(Fault::Bad("invalid content-length\n")),
        (None, Some(Some(0))) | (None, None) => Reading::Done,
        (None, Some(Some(n))) => Reading::Length(n),
    };
    let http11 = version == Version::HTTP_11;
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.extensions.clear();
    Ok(Some(Shape {
        body,
        keep: !close && (http11 || keep_alive),
        expect: expect && http11,
        upgrade: http11 && conn_upgrade && upgrade_field,
        trailers,
    }))
}

/// A request's body as its client sends it: read from the connection when pulled.
#[derive(Debug)]
pub struct RequestBody {
    shared: Arc<Shared>,
    seq: u64,
    hint: SizeHint,
    ended: bool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.shared.expect.load(Ordering::Acquire) {
            // The connection's task sees this when the poll returns, writes `100 Continue` and
            // polls again.
            EXPECTING => {
                this.shared.expect.store(ASKED, Ordering::Release);
                return Poll::Pending;
            }
            ASKED => return Poll::Pending,
            _ => {}
        }
        let mut wire = this.shared.wire();
        if wire.seq != this.seq {
            this.ended = true;
            return Poll::Ready(Some(Err("the request's exchange is over".into())));
        }
        let polled = wire.poll_body(cx);
        this.ended = matches!(wire.body, Reading::Done | Reading::Broken);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// How a response's body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Nothing,
    Length(u64),
    Chunked,
    /// An HTTP/1.0 client of a body of unknown length: the close ends it.
    UntilClose,
}

/// Serves HTTP/1.1 on a client's connection until it closes, fails, drains (`drain` turns
/// true: the connection ends once the request in hand is answered) or switches protocols.
pub async fn serve(
    io: WatchedIo<Io>,
    state: Arc<State>,
    ctx: Arc<ConnContext>,
    drain: Arc<AtomicBool>,
) -> Result<Served, BodyError> {
    let shared = Arc::new(Shared {
        wire: Mutex::new(Wire {
            io,
            rbuf: BytesMut::new(),
            body: Reading::Done,
            seq: 0,
        }),
        expect: AtomicU8::new(NO_EXPECT),
    });
    if poll_fn(|cx| shared.wire().poll_preface(cx)).await? {
        return Ok(match into_wire(shared) {
            Some(wire) => Served::H2 {
                io: wire.io,
                read: wire.rbuf.freeze(),
            },
            None => Served::Closed,
        });
    }
    let mut out = Out::default();
    // The request head in hand, parsed in place and lent to `proxy::handle`: it never moves, and
    // its header map keeps its room from one request to the next.
    let (mut head, ()) = Request::new(()).into_parts();
    loop {
        let shape = match poll_fn(|cx| shared.wire().poll_head(cx, &drain, &mut head)).await {
            Ok(Some(shape)) => shape,
            Ok(None) => {
                close(&shared, false).await;
                return Ok(Served::Closed);
            }
            Err(Fault::Io(e)) => return Err(e.into()),
            Err(Fault::Bad(why)) => {
                refuse(&shared, &mut out, StatusCode::BAD_REQUEST, why).await;
                return Ok(Served::Closed);
            }
            Err(Fault::TooLarge) => {
                let why = "request head too large\n";
                let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
                refuse(&shared, &mut out, status, why).await;
                return Ok(Served::Closed);
            }
            Err(Fault::Version) => {
                let why = "HTTP version not supported\n";
                let status = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
                refuse(&shared, &mut out, status, why).await;
                return Ok(Served::Closed);
            }
            Err(Fault::NotImplemented(why)) => {
                refuse(&shared, &mut out, StatusCode::NOT_IMPLEMENTED, why).await;
                return Ok(Served::Closed);
            }
        };
        let Shape {
            body: reading,
            keep,
            expect,
            upgrade,
            trailers,
        } = shape;
        let has_body = !matches!(reading, Reading::Done);
        let hint = match reading {
            Reading::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        };
        let seq = {
            let mut wire = shared.wire();
            wire.seq += 1;
            wire.body = reading;
            wire.seq
        };
        let body = if has_body {
            let expect = if expect { EXPECTING } else { NO_EXPECT };
            shared.expect.store(expect, Ordering::Release);
            ClientBody::H1(RequestBody {
                shared: Arc::clone(&shared),
                seq,
                hint,
                ended: false,
            })
        } else {
            ClientBody::Empty
        };
        let (switch, client_upgrade) = if upgrade {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(ClientUpgrade(rx)))
        } else {
            (None, None)
        };
        let head_only = head.method == Method::HEAD;
        let http10 = head.version == Version::HTTP_10;

        let resp = {
            // Made in place: made first and then pinned, the future would be copied whole.
            let mut answer = pin!(crate::proxy::handle(
                &state,
                &ctx,
                &mut head,
                body,
                client_upgrade
            ));
            poll_fn(|cx| loop {
                if let Poll::Ready(resp) = answer.as_mut().poll(cx) {
                    return Poll::Ready(Ok::<_, io::Error>(resp));
                }
                // A client that closes its connection before its answer has given up on it:
                // the exchange is dropped (the access log says 499), as NGINX and HAProxy do.
                if shared.wire().poll_gone(cx) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                if shared.expect.load(Ordering::Acquire) == ASKED {
                    out.buf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                    shared.expect.store(CONTINUED, Ordering::Release);
                } else if out.is_empty() {
                    return Poll::Pending;
                }
                // `100 Continue` on its way: the body, waiting for it, is polled again.
                ready!(shared.poll_write(cx, &mut out))?;
            })
            .await
        };
        let resp: http::Response<RespBody> = match resp {
            Ok(resp) => resp,
            Err(e) => return Err(e.into()),
        };
        let (mut parts, mut body) = resp.into_parts();
        let switching = switch.is_some() && parts.status == StatusCode::SWITCHING_PROTOCOLS;
        // A request body not read whole by now may never be (a `404` to a large upload, an early
        // `413`): the client is told the connection ends, rather than finding it cut after an
        // answer that promised more.
        let settled = shared.wire().body_settled();
        let mut keep = keep && settled && !switching && !drain.load(Ordering::Relaxed);
        let mut sending =
            encode_response(&mut out.buf, &parts, &body, head_only, http10, &mut keep);
        http1::recycle(std::mem::take(&mut parts.headers));
        poll_fn(|cx| poll_send(&shared, cx, &mut out, &mut body, &mut sending, trailers)).await?;
        drop(body);
        if let (true, Some(tx)) = (switching, switch) {
            // A body still held somewhere (an upload the upstream never read) keeps the stream:
            // the tunnel then does not open, and the connection closes.
            if let Some(wire) = into_wire(shared) {
                let _ = tx.send(Upgraded::new(wire.io, wire.rbuf.freeze()));
            }
            return Ok(Served::Closed);
        }
        let (finished, more) = {
            let mut wire = shared.wire();
            (wire.finish_body(), !wire.rbuf.is_empty())
        };
        if !keep || !finished {
            close(&shared, !finished).await;
            return Ok(Served::Closed);
        }
        // Bytes of the next head that came while this request was served (pipelined) start the
        // header timer now: they were read while a request was in flight, which it ignores.
        if more {
            ctx.activity.on_read();
        }
    }
}

/// The stream and its buffer, once nothing else holds them (a request's body ends with its
/// exchange, so only the connection's task does between requests).
fn into_wire(shared: Arc<Shared>) -> Option<Wire> {
    let shared = Arc::try_unwrap(shared).ok()?;
    Some(shared.wire.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// How long closing waits on the client: to take the end of the stream (TLS's close_notify)
/// and, when it may still be sending, to stop.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// Most of an unread request body read and dropped while closing.
const LINGER_BYTES: usize = 1 << 20;

/// Ends the connection cleanly: its write side is shut (a FIN; TLS's close_notify), then, when
/// the client may still be sending (`linger`: its request body was left unread, or its head was
/// refused), what it sends is read and dropped until it closes, for up to `CLOSE_WAIT` and
/// `LINGER_BYTES`. Closing with bytes unread makes the kernel reset the connection, and a reset
/// can destroy the answer before the client has read it.
async fn close(shared: &Shared, linger: bool) {
    let ending = async {
        let _ = poll_fn(|cx| Pin::new(&mut shared.wire().io).poll_shutdown(cx)).await;
        let mut dropped = 0;
        while linger && dropped < LINGER_BYTES {
            let read = poll_fn(|cx| {
                let mut wire = shared.wire();
                wire.rbuf.clear();
                wire.poll_fill(cx)
            });
            match read.await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_WAIT, ending).await;
}

/// Answers a head that cannot be served, and lets the connection close.
async fn refuse(shared: &Shared, out: &mut Out, status: StatusCode, why: &str) {
    tracing::debug!(
        status = status.as_u16(),
        reason = why.trim_end(),
        "request head refused"
    );
    let buf = &mut out.buf;
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    buf.extend_from_slice(b"\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ");
    buf.extend_from_slice(itoa(why.len() as u64, &mut [0; 20]));
    buf.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    buf.extend_from_slice(why.as_bytes());
    let _ = poll_fn(|cx| shared.poll_write(cx, out)).await;
    close(shared, true).await;
}

/// Writes a response head, with the framing its body needs, and says how the body goes. `keep`
/// turns false when the body can only end with the connection.
fn encode_response(
    buf: &mut Vec<u8>,
    parts: &response::Parts,
    body: &RespBody,
    head_only: bool,
    http10: bool,
    keep: &mut bool,
) -> Sending {
    let status = parts.status;
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status.canonical_reason().unwrap_or_default().as_bytes());
    buf.extend_from_slice(b"\r\n");
    let mut length = None;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH {
            length = parse_length(value.as_bytes());
        }
        put_field(buf, name, value);
    }
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let sending = if bodiless {
        Sending::Nothing
    } else if let Some(n) = length {
        Sending::Length(n)
    } else if head_only {
        // The answer to a `HEAD` says the length the `GET` would have, or nothing: its own
        // (empty) body says nothing about that.
        Sending::Nothing
    } else if let Some(n) = body.size_hint().exact() {
        buf.extend_from_slice(b"content-length: ");
        buf.extend_from_slice(itoa(n, &mut [0; 20]));
        buf.extend_from_slice(b"\r\n");
        Sending::Length(n)
    } else if http10 {
        *keep = false;
        Sending::UntilClose
    } else {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Sending::Chunked
    };
    // A `101`'s own `connection: upgrade` came with its fields.
    if status != StatusCode::SWITCHING_PROTOCOLS {
        if !*keep {
            buf.extend_from_slice(b"connection: close\r\n");
        } else if http10 {
            buf.extend_from_slice(b"connection: keep-alive\r\n");
        }
    }
    buf.extend_from_slice(b"\r\n");
    match sending {
        _ if head_only => Sending::Nothing,
        Sending::Length(0) => Sending::Nothing,
        other => other,
    }
}

/// Writes the response: the head (buffered in `out`) with the body's first bytes when they are
/// ready, then the rest as it comes. `Ready(Ok)` once all of it has been written and flushed;
/// an error leaves the connection unusable (the client cannot tell where the body ended).
fn poll_send(
    shared: &Shared,
    cx: &mut Context<'_>,
    out: &mut Out,
    body: &mut RespBody,
    sending: &mut Sending,
    trailers: bool,
) -> Poll<Result<(), BodyError>> {
    loop {
        // A body first pulled now (an upload streamed while the answer is written) gets no
        // `100 Continue`: the final answer has gone or is going.
        if shared.expect.load(Ordering::Acquire) == ASKED {
            shared.expect.store(CONTINUED, Ordering::Release);
        }
        let mut waiting = false;
        if *sending != Sending::Nothing && out.data.is_empty() && out.framed() < READ_SPACE {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(frame) => {
                    frame_into(out, frame, sending, trailers)?;
                    continue;
                }
                // A body that has just asked for `100 Continue` waits for the loop's next turn,
                // which lets it read.
                Poll::Pending if shared.expect.load(Ordering::Acquire) == ASKED => continue,
                Poll::Pending => waiting = true,
            }
        }
        if !out.is_empty() {
            ready!(shared.poll_write(cx, out))?;
            continue;
        }
        if waiting {
            // A client gone while its answer waits for more (a slow stream, server-sent
            // events) frees the upstream now rather than at the stall limit.
            if shared.wire().poll_gone(cx) {
                return Poll::Ready(Err("the client closed its connection mid-answer".into()));
            }
            return Poll::Pending;
        }
        return Poll::Ready(Ok(()));
    }
}

/// Frames one of the body's frames (or its end) into `out`.
fn frame_into(
    out: &mut Out,
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    sending: &mut Sending,
    trailers: bool,
) -> Result<(), BodyError> {
    match frame {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => match sending {
                Sending::Length(left) => {
                    let n = data.len() as u64;
                    if n > *left {
                        return Err("the response body is longer than its content-length".into());
                    }
                    *left -= n;
                    out.data = data;
                    if *left == 0 {
                        *sending = Sending::Nothing;
                    }
                }
                Sending::Chunked if !data.is_empty() => out.put_chunk(&data),
                Sending::UntilClose => out.data = data,
                Sending::Chunked | Sending::Nothing => {}
            },
            Err(frame) => {
                if let (Sending::Chunked, Ok(fields)) = (*sending, frame.into_trailers()) {
                    out.put_last_chunk(trailers.then_some(&fields));
                    *sending = Sending::Nothing;
                }
            }
        },
        None => {
            match *sending {
                Sending::Chunked => out.put_last_chunk(None),
                Sending::Length(_) => {
                    return Err("the response body ended before its content-length".into())
                }
                Sending::UntilClose | Sending::Nothing => {}
            }
            *sending = Sending::Nothing;
        }
        Some(Err(e)) => return Err(e),
    }
    Ok(())
}
