//! veer's HTTP/1.1 client: one connection to a server, driven by the task of the request that
//! holds it. Sending writes the head (and the first body bytes with it when they are ready),
//! streams the rest of the body while the response head is awaited, and hands back the head
//! with a body that reads the server's answer, goes on streaming an unfinished upload, and puts
//! the connection back in its server's pool once both are done cleanly.
//!
//! Written here rather than taken from hyper's client because it is the hot path: hyper drives
//! each connection from a task of its own and passes every request and answer through channels
//! to it (two cross-task wake-ups and the head moved through each layer per request), which was
//! about a third of veer's instructions per request. Parsing is still `httparse`'s (heads,
//! chunk sizes, trailers); only framing and the connection's state are veer's.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{request, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};

use super::pool::ServerConns;
use super::{BodyError, Io, ReqBody};
use crate::http1::{
    self, itoa, parse_length, put_field, step_chunked, Chunk, Out, Step, Upgraded, MAX_HEAD,
    MAX_HEADERS,
};

/// Header fields written after a request's own, without going through its map.
pub trait Fields: Sync {
    fn each(&self, f: &mut dyn FnMut(&HeaderName, &HeaderValue));
}

/// No more fields.
impl Fields for () {
    fn each(&self, _: &mut dyn FnMut(&HeaderName, &HeaderValue)) {}
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server closed the connection (or reset it) before a single byte of an answer.
    #[error("connection closed before an answer: {0}")]
    ClosedUnanswered(io::Error),
    #[error("reading from the server: {0}")]
    Read(io::Error),
    #[error("writing to the server: {0}")]
    Write(io::Error),
    #[error("connection closed in the middle of {0}")]
    Incomplete(&'static str),
    #[error("invalid response: {0}")]
    Protocol(String),
    /// The client's body (streamed upstream) failed: the client's fault, not the server's.
    #[error("client body: {0}")]
    ClientBody(BodyError),
}

impl Error {
    fn protocol(what: impl std::fmt::Display) -> Self {
        Error::Protocol(what.to_string())
    }
}

/// A failed exchange, with the request's body back when it was never touched: on a kept
/// connection that the server closed, the request may go again on another.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub body: Option<ReqBody>,
    /// Some of the request reached the socket before the failure.
    pub sent: bool,
}

/// One connection to a server.
#[derive(Debug)]
pub struct Conn {
    io: Io,
    rbuf: BytesMut,
    out: Out,
}

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// A request body on its way upstream.
#[derive(Debug)]
struct Upload {
    body: ReqBody,
    framing: Framing,
    /// No frame has been taken from the body yet: it is still whole.
    untouched: bool,
}

impl Conn {
    /// Boxed: a connection moves between the pool, a request's future and its response body,
    /// and a pointer moves cheaper than the connection's buffers and stream.
    pub fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            rbuf: BytesMut::new(),
            out: Out::default(),
        })
    }

    /// Whether a kept connection can take a request: not closed by the server, and nothing
    /// unasked-for waiting on it. Costs no system call when the socket has had nothing to say
    /// since its last read (the runtime knows it is not readable).
    pub fn is_usable(&mut self) -> bool {
        if !self.rbuf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    /// Sends a request (`head` already as the server must see it, `added` written after its
    /// fields) and waits for the response head. `upgrade`: the request asks to switch
    /// protocols, and a `101` answer hands the connection over (`RespStream::into_upgraded`).
    /// The head is lent, not moved: it stays where the request's future put it, however many
    /// attempts it takes.
    pub async fn send(
        mut self: Box<Self>,
        head: &request::Parts,
        body: ReqBody,
        added: &dyn Fields,
        upgrade: bool,
    ) -> Result<Response<RespStream>, Failed> {
        let framing = self.encode_head(head, added, &body);
        let mut upload = framing.map(|framing| Upload {
            body,
            framing,
            untouched: true,
        });
        let mut written_any = false;
        let mut write_failed = false;
        let mut uploaded = false;
        // The head is written and flushed: a TLS stream may take every byte and still hold
        // them in its records until a flush goes through.
        let mut flushed = false;
        let head_only = head.method == Method::HEAD;
        let got = poll_fn(|cx| {
            if let (Some(up), false) = (upload.as_mut(), write_failed || uploaded) {
                match self.poll_upload(up, cx, &mut written_any) {
                    Poll::Ready(Ok(())) => uploaded = true,
                    Poll::Ready(Err(Error::Write(e))) => {
                        // The server stopped reading; it may still have answered (an early
                        // `413`, say), so the answer is read before giving up.
                        tracing::debug!(error = %e, "upstream stopped reading the request");
                        write_failed = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            } else if !write_failed && !flushed {
                match self.poll_drain(cx, &mut written_any) {
                    Poll::Ready(Ok(())) => flushed = true,
                    Poll::Ready(Err(e)) => {
                        tracing::debug!(error = %e, "upstream stopped reading the request");
                        write_failed = true;
                    }
                    Poll::Pending => {}
                }
            }
            self.poll_head(cx, upgrade, head_only)
        })
        .await;
        let head = match got {
            Ok(found) => found,
            Err(error) => {
                let body = match upload {
                    Some(up) if !up.untouched => None,
                    Some(up) => Some(up.body),
                    None => Some(ReqBody::Empty),
                };
                return Err(Failed {
                    error,
                    body,
                    sent: written_any,
                });
            }
        };
        let ((resp_parts, reusable), read) = head;
        // A finished upload is dropped; after a failed write, what the server did not read
        // leaves the connection in an unknown state: it is not kept.
        let upload = upload.filter(|_| !uploaded && !write_failed).map(Box::new);
        let stream = RespStream {
            read,
            conn: Some(self),
            upload,
            reusable: reusable && !write_failed,
            home: None,
        };
        Ok(Response::from_parts(resp_parts, stream))
    }

    /// Writes the request line and headers into the output buffer, with the framing of the
    /// body: its `content-length` when the client gave one or the body's size is known, else
    /// chunked. `None` when there is no body to send.
    fn encode_head(
        &mut self,
        parts: &request::Parts,
        added: &dyn Fields,
        body: &ReqBody,
    ) -> Option<Framing> {
        let buf = &mut self.out.buf;
        buf.clear();
        self.out.pos = 0;
        buf.extend_from_slice(parts.method.as_str().as_bytes());
        buf.push(b' ');
        match parts.uri.path_and_query() {
            Some(pq) => buf.extend_from_slice(pq.as_str().as_bytes()),
            None => buf.push(b'/'),
        }
        buf.extend_from_slice(b" HTTP/1.1\r\n");
        let mut length = None;
        for (name, value) in &parts.headers {
            if name == header::CONTENT_LENGTH {
                length = parse_length(value.as_bytes());
            }
            put_field(buf, name, value);
        }
        added.each(&mut |name, value| put_field(buf, name, value));
        let framing = if let Some(n) = length {
            Some(Framing::Length(n))
        } else if body.is_end_stream() {
            // A method whose request usually has content says that it has none (RFC 9110
            // §8.6; some servers answer 411 otherwise).
            if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                buf.extend_from_slice(b"content-length: 0\r\n");
            }
            None
        } else if let Some(n) = body.size_hint().exact() {
            buf.extend_from_slice(b"content-length: ");
            buf.extend_from_slice(itoa(n, &mut [0; 20]));
            buf.extend_from_slice(b"\r\n");
            Some(Framing::Length(n))
        } else {
            buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Some(Framing::Chunked)
        };
        buf.extend_from_slice(b"\r\n");
        framing
    }

    /// Writes what is buffered, then the body's frames as they come, until the body is done
    /// (`Ready(Ok)`) or has nothing more for now (`Pending`).
    fn poll_upload(
        &mut self,
        up: &mut Upload,
        cx: &mut Context<'_>,
        written_any: &mut bool,
    ) -> Poll<Result<(), Error>> {
        loop {
            std::task::ready!(self.poll_drain(cx, written_any)).map_err(Error::Write)?;
            if up.framing == Framing::Length(0) && up.body.is_end_stream() {
                return Poll::Ready(Ok(()));
            }
            let frame = match Pin::new(&mut up.body).poll_frame(cx) {
                Poll::Ready(frame) => frame,
                Poll::Pending => return Poll::Pending,
            };
            up.untouched = false;
            match frame {
                None => match up.framing {
                    Framing::Chunked => {
                        self.out.put_last_chunk(None);
                        up.framing = Framing::Length(0);
                        up.body = ReqBody::Empty;
                    }
                    Framing::Length(0) => return Poll::Ready(Ok(())),
                    Framing::Length(_) => {
                        return Poll::Ready(Err(Error::ClientBody(
                            "the request body ended before its content-length".into(),
                        )))
                    }
                },
                Some(Err(e)) => return Poll::Ready(Err(Error::ClientBody(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) => match &mut up.framing {
                        Framing::Chunked => self.out.put_chunk(&data),
                        Framing::Length(left) => {
                            let len = data.len() as u64;
                            if len > *left {
                                return Poll::Ready(Err(Error::ClientBody(
                                    "the request body is longer than its content-length".into(),
                                )));
                            }
                            *left -= len;
                            self.out.data = data;
                        }
                    },
                    Err(frame) => {
                        // Trailers: sent after the last chunk; a body framed by length has
                        // nowhere to carry them.
                        if let (Framing::Chunked, Ok(trailers)) =
                            (up.framing, frame.into_trailers())
                        {
                            self.out.put_last_chunk(Some(&trailers));
                            up.framing = Framing::Length(0);
                            up.body = ReqBody::Empty;
                        }
                    }
                },
            }
        }
    }

    /// Writes everything buffered.
    fn poll_drain(&mut self, cx: &mut Context<'_>, written_any: &mut bool) -> Poll<io::Result<()>> {
        self.out.poll_write_to(&mut self.io, cx, written_any)
    }

    /// Reads more from the server into the read buffer.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        http1::poll_read_into(&mut self.io, cx, &mut self.rbuf)
    }

    /// Reads until a final response head (skipping `1xx` ones) is parsed: the head, whether the
    /// connection may be kept after this exchange, and how its body is to be read.
    #[allow(clippy::type_complexity)]
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        upgrade: bool,
        head_only: bool,
    ) -> Poll<Result<((http::response::Parts, bool), Read), Error>> {
        let mut received = !self.rbuf.is_empty();
        loop {
            if !self.rbuf.is_empty() {
                received = true;
                if let Some(mut head) = parse_head(&mut self.rbuf)? {
                    let status = head.parts.status;
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        if !upgrade {
                            return Poll::Ready(Err(Error::protocol(
                                "101 Switching Protocols to a request that asked for no upgrade",
                            )));
                        }
                        return Poll::Ready(Ok(((head.parts, false), Read::Upgraded)));
                    }
                    if status.is_informational() {
                        // 100 Continue and other interim answers: the final one follows.
                        continue;
                    }
                    // The answer to a `HEAD` has no body, whatever its fields say.
                    let (read, keepable) = if head_only {
                        (Read::Done, true)
                    } else {
                        body_framing(&mut head)?
                    };
                    let keep = head.keep && keepable;
                    return Poll::Ready(Ok(((head.parts, keep), read)));
                }
            }
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) if received => {
                    return Poll::Ready(Err(Error::Incomplete("the response head")))
                }
                Ok(0) => {
                    return Poll::Ready(Err(Error::ClosedUnanswered(
                        io::ErrorKind::UnexpectedEof.into(),
                    )))
                }
                Ok(_) => {}
                Err(e) if !received && is_reset(&e) => {
                    return Poll::Ready(Err(Error::ClosedUnanswered(e)))
                }
                Err(e) => return Poll::Ready(Err(Error::Read(e))),
            }
        }
    }
}

fn is_reset(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

/// Parses a response head from the front of `buf` and takes it out; `None` while incomplete.
/// Header values are views of the head's bytes, not copies.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    // Uninitialised: zeroing a hundred fields (3 KiB) per head showed in the profile.
    let mut fields = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    let parsing = httparse::ParserConfig::default();
    let len = match parsing.parse_response_with_uninit_headers(&mut parsed, buf, &mut fields) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => {
            return Err(Error::protocol(format_args!(
                "response head larger than {MAX_HEAD} bytes"
            )))
        }
        Err(e) => return Err(Error::protocol(e)),
    };
    let code = parsed.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::protocol(format_args!("status code {code}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Where each field lies in the head, so that the values can be slices of it once frozen.
    let mut spans = [(0, 0, 0, 0); MAX_HEADERS];
    let count = http1::field_spans(buf, parsed.headers, &mut spans);
    let head = buf.split_to(len).freeze();
    // Room for two more: the response side may add `set-cookie` (sticky) and `x-veer-pool`,
    // and a full map grows (reallocates and rehashes) on the next insert.
    let mut headers = http1::header_map(count + 2);
    let mut keep = version == Version::HTTP_11;
    let (mut chunked, mut length) = (None, None);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| Error::protocol("invalid header name"))?;
        let raw = head.slice(vs as usize..ve as usize);
        // The framing fields are read here, on the way (a comparison of known names is a tag
        // comparison), rather than looked up in the map afterwards.
        if name == header::TRANSFER_ENCODING {
            // The last field's last coding decides.
            let last = raw.rsplit(|&b| b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONTENT_LENGTH {
            length = Some(match (length, parse_length(&raw)) {
                (Some(Err(why)), _) => Err(why),
                (_, None) => Err("invalid content-length"),
                (None, Some(n)) => Ok(n),
                (Some(Ok(m)), Some(n)) if m == n => Ok(n),
                (Some(Ok(_)), Some(_)) => Err("conflicting content-length values"),
            });
        } else if name == header::CONNECTION {
            for token in raw.split(|&b| b == b',').map(|t| t.trim_ascii()) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    keep = true;
                }
            }
        }
        // httparse has already refused control characters in values; what it lets through
        // (visible ASCII, tabs, spaces, obs-text) is what a `HeaderValue` may hold.
        let value = HeaderValue::from_maybe_shared(raw)
            .map_err(|_| Error::protocol("invalid header value"))?;
        headers.append(name, value);
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = headers;
    let (parts, ()) = resp.into_parts();
    Ok(Some(Head {
        parts,
        keep,
        chunked,
        length,
    }))
}

/// A parsed response head, with what its framing fields said.
struct Head {
    parts: http::response::Parts,
    /// The connection may serve another request after this answer, as far as the head says.
    keep: bool,
    /// Whether the last `transfer-encoding` coding is `chunked`; none without the field.
    chunked: Option<bool>,
    /// The `content-length`, or why it is unusable; none without the field.
    length: Option<Result<u64, &'static str>>,
}

/// How a response's body is delimited (RFC 9112 §6.3), and whether that framing lets the
/// connection be kept after it. `HEAD` answers are handled by the caller.
fn body_framing(head: &mut Head) -> Result<(Read, bool), Error> {
    let status = head.parts.status;
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Read::Done, true));
    }
    // Transfer-Encoding in an HTTP/1.0 answer is faulty framing: the connection is not kept
    // (RFC 9112 §6.1).
    let old = head.parts.version == Version::HTTP_10;
    match (head.chunked, head.length) {
        // Another coding last: the body ends when the connection does; a `content-length`
        // beside it is ignored and dropped (RFC 9112 §6.3).
        (Some(false), length) => {
            if length.is_some() {
                head.parts.headers.remove(header::CONTENT_LENGTH);
            }
            Ok((Read::Eof, false))
        }
        // With a `content-length` beside it, the length is ignored (RFC 9112 §6.3) and dropped,
        // so that the client is not told it either; the connection is not kept, as the framing
        // is in doubt.
        (Some(true), Some(_)) => {
            head.parts.headers.remove(header::CONTENT_LENGTH);
            Ok((Read::Chunked(Chunk::Size), false))
        }
        (Some(true), None) => Ok((Read::Chunked(Chunk::Size), !old)),
        (None, None) => Ok((Read::Eof, false)),
        (None, Some(Err(why))) => Err(Error::protocol(why)),
        (None, Some(Ok(0))) => Ok((Read::Done, true)),
        (None, Some(Ok(n))) => Ok((Read::Length(n), true)),
    }
}

/// Where reading a response body stands.
#[derive(Debug)]
enum Read {
    Length(u64),
    Chunked(Chunk),
    /// Delimited by the server closing the connection.
    Eof,
    Done,
    /// A `101` answer: the connection now belongs to the tunnel.
    Upgraded,
}

/// A response body as it comes from the server. Also carries an upload that the server
/// answered before it was finished, and goes on sending it while the answer is read.
#[derive(Debug)]
pub struct RespStream {
    read: Read,
    conn: Option<Box<Conn>>,
    upload: Option<Box<Upload>>,
    reusable: bool,
    home: Option<Arc<ServerConns>>,
}

impl RespStream {
    /// Where the connection goes once the exchange is over cleanly; at once when it already is.
    pub fn keep_in(&mut self, home: Arc<ServerConns>) {
        self.home = Some(home);
        if matches!(self.read, Read::Done) {
            self.finish();
        }
    }

    /// The connection after a `101` answer, with whatever the server sent past the head.
    pub fn into_upgraded(mut self) -> Option<Upgraded<Io>> {
        match (&self.read, self.conn.take()) {
            (Read::Upgraded, Some(conn)) => {
                let conn = *conn;
                Some(Upgraded::new(conn.io, conn.rbuf.freeze()))
            }
            _ => None,
        }
    }

    /// The answer is read whole: the connection goes home when nothing of the exchange is left
    /// unfinished, and is closed otherwise.
    fn finish(&mut self) {
        self.read = Read::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some(home), true, None) = (
            conn,
            self.home.as_ref(),
            self.reusable,
            self.upload.as_ref(),
        ) {
            if conn.rbuf.is_empty() && conn.out.is_empty() {
                home.give(conn, tokio::time::Instant::now());
            }
        }
    }

    /// Reads body bytes the way the framing says; `None` at its end.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match &mut self.read {
                Read::Done | Read::Upgraded => return Poll::Ready(None),
                Read::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let take = (*left).min(conn.rbuf.len() as u64);
                        *left -= take;
                        let data = conn.rbuf.split_to(take as usize).freeze();
                        if *left == 0 {
                            self.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Read::Eof => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Read::Chunked(chunk) => {
                    match step_chunked(chunk, &mut conn.rbuf).map_err(Error::protocol)? {
                        Step::Data(data) => {
                            self.settle();
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Step::Trailers(fields) => {
                            self.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(fields))));
                        }
                        Step::End => {
                            self.finish();
                            return Poll::Ready(None);
                        }
                        Step::More => {}
                    }
                }
            }
            match std::task::ready!(conn.poll_fill(cx)) {
                Ok(0) => {
                    if matches!(self.read, Read::Eof) {
                        self.reusable = false;
                        self.finish();
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(Error::Incomplete("the response body"))));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(Error::Read(e)))),
            }
        }
    }

    /// After a chunk's data: takes in the framing that follows when it is already buffered, so
    /// that a body whose last chunk has arrived is seen to end (and its connection goes home)
    /// without waiting for another poll. Never takes data or trailers: those are the next
    /// poll's.
    fn settle(&mut self) {
        if let (Some(conn), Read::Chunked(chunk)) = (self.conn.as_mut(), &mut self.read) {
            if http1::settle_chunked(chunk, &mut conn.rbuf) {
                self.finish();
            }
        }
    }
}

impl Body for RespStream {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        // An upload the server answered early goes on while the answer is read: a server that
        // echoes as it reads needs both.
        if let (Some(up), Some(conn)) = (this.upload.as_mut(), this.conn.as_mut()) {
            let mut written = false;
            match conn.poll_upload(up, cx, &mut written) {
                Poll::Ready(Ok(())) => this.upload = None,
                Poll::Ready(Err(Error::ClientBody(e))) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Error::ClientBody(e))));
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "upstream stopped reading the request");
                    this.upload = None;
                    this.reusable = false;
                }
                Poll::Pending => {}
            }
        }
        let polled = this.poll_read(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            // A broken exchange: the connection is closed.
            this.conn = None;
            this.read = Read::Done;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.read, Read::Done | Read::Upgraded) || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.read {
            Read::Length(n) => SizeHint::with_exact(n),
            Read::Done | Read::Upgraded => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
