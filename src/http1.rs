//! HTTP/1.1 framing that veer's server (`server::h1`) and client (`upstream::h1`) share: chunked
//! bodies, `content-length` values, field lines, the output buffer both write from, and a
//! connection taken over after `101 Switching Protocols`. Parsing of heads, chunk sizes and
//! trailer sections is `httparse`'s; no I/O happens here beyond writing an `Out`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most header fields a head (or trailer section) may carry (hyper's default too).
pub const MAX_HEADERS: usize = 100;
/// Largest head (or trailer section) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Room made in a read buffer when it runs short.
pub const READ_SPACE: usize = 16 * 1024;
/// Less room than this left in a read buffer, and it gets `READ_SPACE` more.
const MIN_READ_SPACE: usize = 2 * 1024;
/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Where a field's name and value lie in its head: name start and end, value start and end.
/// Offsets within a head of at most `MAX_HEAD` bytes fit in 16 bits.
pub type Span = (u16, u16, u16, u16);

/// Where each field parsed from `head` lies in it, so that names and values can be sliced from
/// the head once it is split off its buffer and frozen (the parse borrows the buffer the split
/// needs). Fills `spans` and returns how many; the fields must lie in the first `MAX_HEAD`
/// bytes of `head` (a complete head no longer than that).
pub fn field_spans(
    head: &[u8],
    fields: &[httparse::Header<'_>],
    spans: &mut [Span; MAX_HEADERS],
) -> usize {
    let base = head.as_ptr() as usize;
    for (span, field) in spans.iter_mut().zip(fields) {
        let name = field.name.as_ptr() as usize - base;
        let value = field.value.as_ptr() as usize - base;
        *span = (
            name as u16,
            (name + field.name.len()) as u16,
            value as u16,
            (value + field.value.len()) as u16,
        );
    }
    fields.len().min(MAX_HEADERS)
}

/// Most header maps kept for reuse on one thread.
const SPARE_MAPS: usize = 64;

thread_local! {
    /// Header maps whose heads have been written, emptied, kept for the next heads parsed on
    /// this thread: a map costs two allocations to make and two to free.
    static SPARE: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty header map with room for `capacity` fields: a spare one when this thread has one.
pub fn header_map(capacity: usize) -> HeaderMap {
    match SPARE.with_borrow_mut(Vec::pop) {
        Some(mut map) => {
            map.reserve(capacity);
            map
        }
        None => HeaderMap::with_capacity(capacity),
    }
}

/// Empties `map` (its values, views of a read buffer, let the buffer go) and keeps it for the
/// next head parsed on this thread.
pub fn recycle(mut map: HeaderMap) {
    map.clear();
    SPARE.with_borrow_mut(|spare| {
        if spare.len() < SPARE_MAPS {
            spare.push(map);
        }
    });
}

/// Reads what `io` has into `buf`. The buffer grows only when it has less than
/// `MIN_READ_SPACE` left: heads are split off the front of it and frozen (their values are
/// views of it), so growing it before every read would allocate a fresh buffer per message.
pub fn poll_read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_READ_SPACE {
        buf.reserve(READ_SPACE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// What is still to be written: bytes framed in `buf` (from `pos`), then `data`, which is sent
/// as it is (a body's bytes, never copied into `buf`).
#[derive(Debug, Default)]
pub struct Out {
    pub buf: Vec<u8>,
    pub pos: usize,
    pub data: Bytes,
}

impl Out {
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len() && self.data.is_empty()
    }

    /// Bytes framed but not yet written.
    pub fn framed(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Writes everything buffered (one vectored write for framing and data when it can), then
    /// flushes. `written_any` turns true once a byte has gone.
    pub fn poll_write_to<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
        written_any: &mut bool,
    ) -> Poll<io::Result<()>> {
        while !self.is_empty() {
            let framed = &self.buf[self.pos..];
            let n = if framed.is_empty() {
                std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.data))?
            } else if self.data.is_empty() {
                std::task::ready!(Pin::new(&mut *io).poll_write(cx, framed))?
            } else {
                let bufs = [io::IoSlice::new(framed), io::IoSlice::new(&self.data)];
                std::task::ready!(Pin::new(&mut *io).poll_write_vectored(cx, &bufs))?
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written_any = true;
            let from_framed = n.min(framed.len());
            self.pos += from_framed;
            self.data.advance(n - from_framed);
            if self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
            }
        }
        Pin::new(io).poll_flush(cx)
    }

    /// Frames one chunk of a chunked body: its size line, its bytes (copied: they sit between
    /// two pieces of framing) and its CRLF.
    pub fn put_chunk(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(hex(data.len(), &mut [0; 16]));
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(data);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// Ends a chunked body: the last chunk and the trailer section (`None`: no fields).
    pub fn put_last_chunk(&mut self, trailers: Option<&HeaderMap>) {
        self.buf.extend_from_slice(b"0\r\n");
        for (name, value) in trailers.into_iter().flatten() {
            put_field(&mut self.buf, name, value);
        }
        self.buf.extend_from_slice(b"\r\n");
    }
}

/// Where reading a chunked body stands.
#[derive(Debug, Clone, Copy)]
pub enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// What the bytes buffered gave of a chunked body.
pub enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More bytes are needed.
    More,
}

/// Advances a chunked body over the bytes buffered. Returns data, the trailer section, the end,
/// or a need for more bytes; an error says what was wrong with the framing.
pub fn step_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Step, &'static str> {
    loop {
        match *chunk {
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *chunk = if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    };
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                    return Err("chunk size line too long")
                }
                Ok(httparse::Status::Partial) => return Ok(Step::More),
                Err(_) => return Err("invalid chunk size"),
            },
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let take = left.min(buf.len() as u64);
                let data = buf.split_to(take as usize).freeze();
                *chunk = if take == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - take)
                };
                return Ok(Step::Data(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("chunk data not followed by CRLF");
                }
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.len() < 2 {
                    return Ok(Step::More);
                }
                if &buf[..2] == b"\r\n" {
                    buf.advance(2);
                    return Ok(Step::End);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut map = HeaderMap::with_capacity(fields.len());
                        for field in fields {
                            let name = HeaderName::from_bytes(field.name.as_bytes());
                            let value = HeaderValue::from_bytes(field.value);
                            if let (Ok(name), Ok(value)) = (name, value) {
                                map.append(name, value);
                            }
                        }
                        buf.advance(used);
                        Ok(Step::Trailers(map))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        Err("trailer section too large")
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::More),
                    Err(_) => Err("invalid trailer section"),
                };
            }
        }
    }
}

/// After a chunk's data: takes in the framing that follows when it is already buffered, so that
/// a body whose last chunk has arrived is seen to end without waiting for another read. Never
/// takes data or trailer fields. `true`: the body has ended.
pub fn settle_chunked(chunk: &mut Chunk, buf: &mut BytesMut) -> bool {
    loop {
        match *chunk {
            Chunk::DataEnd if buf.starts_with(b"\r\n") => {
                buf.advance(2);
                *chunk = Chunk::Size;
            }
            Chunk::Size => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, 0))) => {
                    buf.advance(used);
                    *chunk = Chunk::Trailers;
                }
                _ => return false,
            },
            Chunk::Trailers if buf.starts_with(b"\r\n") => {
                buf.advance(2);
                return true;
            }
            _ => return false,
        }
    }
}

/// A `content-length` value: digits only (a list of equal values, as some senders write, too),
/// leading zeros allowed, too large for 64 bits refused.
pub fn parse_length(value: &[u8]) -> Option<u64> {
    let mut found = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() {
            return None;
        }
        let mut n = 0u64;
        for &d in part {
            if !d.is_ascii_digit() {
                return None;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        if found.is_some_and(|f| f != n) {
            return None;
        }
        found = Some(n);
    }
    found
}

/// Whether a comma-separated field value (`Connection`, `TE`) lists `token`.
pub fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// One `name: value` line.
pub fn put_field(buf: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    buf.extend_from_slice(name.as_str().as_bytes());
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// `n` in decimal.
pub fn itoa(mut n: u64, out: &mut [u8; 20]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &out[i..];
        }
    }
}

fn hex(mut n: usize, out: &mut [u8; 16]) -> &[u8] {
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            return &out[i..];
        }
    }
}

/// A connection taken over after `101 Switching Protocols`: what the peer sent right after the
/// head (already read into the parser's buffer) is read first.
#[derive(Debug)]
pub struct Upgraded<T> {
    io: T,
    early: Bytes,
}

impl<T> Upgraded<T> {
    pub fn new(io: T, early: Bytes) -> Self {
        Self { io, early }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Upgraded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.early.is_empty() {
            let n = this.early.len().min(buf.remaining());
            buf.put_slice(&this.early.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Upgraded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_values() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b"0042"), Some(42));
        assert_eq!(parse_length(b"7, 7"), Some(7));
        assert_eq!(parse_length(b"7, 8"), None);
        assert_eq!(parse_length(b""), None);
        assert_eq!(parse_length(b"-1"), None);
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }

    #[test]
    fn a_chunked_body_split_anywhere_reads_the_same() {
        let wire = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 1\r\n\r\n";
        for cut in 0..wire.len() {
            let mut buf = BytesMut::new();
            let mut chunk = Chunk::Size;
            let mut data = Vec::new();
            let mut trailers = None;
            for part in [&wire[..cut], &wire[cut..]] {
                buf.extend_from_slice(part);
                loop {
                    match step_chunked(&mut chunk, &mut buf).expect("valid framing") {
                        Step::Data(d) => data.extend_from_slice(&d),
                        Step::Trailers(t) => trailers = Some(t),
                        Step::End | Step::More => break,
                    }
                }
            }
            assert_eq!(data, b"hello world", "cut at {cut}");
            let trailers = trailers.expect("trailer section");
            assert_eq!(trailers["x-sum"], "1");
        }
    }

    #[test]
    fn broken_chunk_framing_is_an_error() {
        let mut chunk = Chunk::Size;
        let mut buf = BytesMut::from(&b"zz\r\n"[..]);
        assert!(step_chunked(&mut chunk, &mut buf).is_err());
        let mut chunk = Chunk::Size;
        let mut buf = BytesMut::from(&b"2\r\nabXY"[..]);
        assert!(matches!(
            step_chunked(&mut chunk, &mut buf),
            Ok(Step::Data(_))
        ));
        assert!(step_chunked(&mut chunk, &mut buf).is_err());
    }

    #[test]
    fn a_recycled_map_comes_back_empty_with_its_room() {
        let mut map = header_map(8);
        for i in 0..8 {
            map.append("x-field", HeaderValue::from(i));
        }
        let room = map.capacity();
        recycle(map);
        let again = header_map(2);
        assert!(again.is_empty(), "no field of the last head: {again:?}");
        assert!(again.capacity() >= room, "its room kept");
    }

    #[test]
    fn tokens() {
        assert!(has_token(b"keep-alive, Upgrade", b"upgrade"));
        assert!(!has_token(b"keep-alive, upgraded", b"upgrade"));
    }
}
