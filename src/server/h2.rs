//! veer's HTTP/2 server: the `h2` crate's connection (framing, HPACK, flow control, stream
//! states), with every stream's exchange driven by the connection's own task. A stream costs no
//! task of its own and no cross-task wake-up: its exchange (`proxy::handle`, then the answer's
//! body piped into the stream) is one future among the connection's, polled when its own waker
//! fires, and the frames it queues go out on the connection's next write.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::conn::{ClientBody, ConnContext, WatchedIo};
use crate::http1::{self, parse_length, Upgraded};
use crate::proxy::error::NO_CONNECT;
use crate::proxy::{handle, headers, ProxyError, RespBody};
use crate::state::State;
use crate::upstream::{BodyError, Io};

/// Most streams one client may have open at once (NGINX's default; HAProxy allows 100). With
/// `MAX_SEND_BUFFER`, it bounds what a client that stops reading can make veer hold.
const MAX_CONCURRENT_STREAMS: u32 = 128;
/// Each stream's and the connection's receive window: room for a client's upload to run ahead
/// of the upstream by this much.
const WINDOW: u32 = 1024 * 1024;
/// The largest header list a client may send (the decoded request head, as `MAX_HEAD` bounds
/// an HTTP/1.1 one).
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// How much of a stream's answer may wait in h2's buffer, for the client's window or for the
/// socket, before the answer's body is read further: two full frames. h2 bounds this per
/// stream, not per connection, so a client that grants large windows and stops reading holds
/// this much for each of its streams (about 10 MiB in all with 128 streams, where 400 KiB a
/// stream let one connection hold over 100 MiB). What is in flight waits in the kernel's socket
/// buffer, not here, so a small buffer costs a large download nothing.
const MAX_SEND_BUFFER: usize = 32 * 1024;
/// Streams a client may make fail (malformed, refused) before the connection is closed.
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The connection of a client that sent the HTTP/2 preface (`io`, with what was read of it
/// already), served until the client or the drain closes it. `drain` turning true sends
/// `GOAWAY` and lets the streams in hand finish.
pub async fn serve(
    io: Upgraded<WatchedIo<Io>>,
    state: Arc<State>,
    ctx: Arc<ConnContext>,
    drain: Arc<AtomicBool>,
) -> Result<(), BodyError> {
    let mut conn = h2::server::Builder::new()
        .initial_window_size(WINDOW)
        .initial_connection_window_size(WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io)
        .await?;
    let (state, ctx) = (&*state, &ctx);
    let mut exchanges = FuturesUnordered::new();
    let mut shut = false;
    let mut yielded = false;
    loop {
        let next = poll_fn(|cx| loop {
            if !shut && drain.load(Ordering::Relaxed) {
                conn.graceful_shutdown();
                shut = true;
            }
            let mut answered = false;
            while let Poll::Ready(Some(())) = exchanges.poll_next_unpin(cx) {
                answered = true;
            }
            // Answers are written when the connection is next driven. Each write wakes the
            // client, and on another core that wake-up costs more than the write: so the
            // write waits for the runtime's next look at the sockets, and carries every answer
            // whose upstream has spoken by then.
            if answered && !yielded {
                return Poll::Ready(None);
            }
            yielded = false;
            match conn.poll_accept(cx) {
                Poll::Ready(Some(Ok((req, respond)))) => {
                    // Pinned in the set's own node: one allocation per stream.
                    exchanges.push(exchange(req, respond, state, ctx));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                // The connection is over: an exchange still waiting on its upstream is dropped
                // (its access log says 499), its upstream connection freed.
                Poll::Ready(None) => return Poll::Ready(Some(Ok(()))),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        match next {
            Some(done) => return done,
            None => {
                // Polled again once the runtime has looked at its sockets.
                tokio::task::yield_now().await;
                yielded = true;
            }
        }
    }
}

/// One stream: its request through `proxy::handle`, then the answer into the stream. A client
/// that resets the stream ends the exchange wherever it stands.
async fn exchange(
    req: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    state: &State,
    ctx: &Arc<ConnContext>,
) {
    let (mut head, recv) = req.into_parts();
    let answer = if head.method == Method::CONNECT {
        Some(ProxyError::NotImplemented(NO_CONNECT).to_response())
    } else {
        let body = RequestBody::new(recv, &head.headers);
        let mut expecting = body.wanted();
        let mut handling = pin!(handle(state, ctx, &mut head, ClientBody::H2(body), None));
        let mut first = true;
        poll_fn(|cx| {
            // A stream the client reset in the same read as its HEADERS (a rapid reset) is
            // never sent upstream: the reset is looked at before the first poll.
            if std::mem::take(&mut first) && respond.poll_reset(cx).is_ready() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(resp) = handling.as_mut().poll(cx) {
                return Poll::Ready(Some(resp));
            }
            // The body is wanted (the upstream is ready for it): the client that waits for
            // `100 Continue` gets it, once. An answer before that needs none.
            if expecting
                .as_ref()
                .is_some_and(|wanted| wanted.load(Ordering::Relaxed))
            {
                expecting = None;
                let go_on = Response::builder().status(StatusCode::CONTINUE).body(());
                if let Ok(interim) = go_on {
                    let _ = respond.send_informational(interim);
                }
            }
            // Reset by the client (or the connection gone): the answer is not wanted.
            respond.poll_reset(cx).map(|_| None)
        })
        .await
    };
    let Some(resp) = answer else {
        tracing::debug!(client = %ctx.peer, "stream reset before its answer");
        return;
    };
    // The request's header map is done with: the next answer read from an upstream on this
    // thread takes it, where h2 keeps the answer's own.
    http1::recycle(std::mem::take(&mut head.headers));
    let (mut parts, body) = resp.into_parts();
    stream_head(&mut parts.headers, &body);
    // An answer to HEAD has no content, whatever its fields say (RFC 9110 §9.3.2).
    let end = body.is_end_stream() || head.method == Method::HEAD;
    match respond.send_response(Response::from_parts(parts, ()), end) {
        Ok(send) if !end => pipe(body, send).await,
        Ok(_) => {}
        Err(e) => {
            // A head h2 refuses (a field HTTP/2 forbids), or the stream already gone.
            tracing::debug!(client = %ctx.peer, error = %e, "answer not sent");
            respond.send_reset(Reason::INTERNAL_ERROR);
        }
    }
}

/// The fields of an answer's head as they go into its stream. An upstream's answer keeps its
/// own framing fields; veer's own says its length. Every value gets storage of its own
/// (`own_values`).
fn stream_head(fields: &mut HeaderMap, body: &RespBody) {
    if let Some(n) = body.fixed_len() {
        fields.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    own_values(fields);
}

/// Gives the values of an answer's fields one small block of their own. h2's HPACK encoder keeps
/// each field it indexes in the connection's dynamic table for as long as the table has room,
/// and the values of an upstream's answer are views of the buffer its head was read into: each
/// kept value (a new `date` every second, on every connection) would keep that whole buffer
/// (16 KiB) alive, up to about sixty per connection once the table is full. One copy per answer
/// keeps only the values' bytes.
fn own_values(fields: &mut HeaderMap) {
    // Both passes walk the map with the same iterator, so the offsets line up.
    let mut block = BytesMut::with_capacity(fields.values_mut().map(|v| v.len()).sum());
    for value in fields.values_mut() {
        block.extend_from_slice(value.as_bytes());
    }
    let block = block.freeze();
    let mut at = 0;
    for value in fields.values_mut() {
        let end = at + value.len();
        // The bytes were a valid value a moment ago; on the impossible failure the view stays.
        if let Ok(mut own) = HeaderValue::from_maybe_shared(block.slice(at..end)) {
            own.set_sensitive(value.is_sensitive());
            *value = own;
        }
        at = end;
    }
}

/// Streams an answer's body into its stream. The next chunk is read only once h2 has taken the
/// last: a chunk larger than the client's window waits in h2's buffer (bounded by
/// `MAX_SEND_BUFFER`) and the stream's capacity stays 0 until it is sent, so a slow client holds
/// back the upstream instead of filling veer's memory. Capacity is claimed only for a chunk in
/// hand, never ahead of one, so that an idle stream pins none of the connection's window.
async fn pipe(mut body: RespBody, mut send: SendStream<Bytes>) {
    let mut waiting: Option<(Bytes, bool)> = None;
    let ended = poll_fn(|cx| loop {
        if let Poll::Ready(reset) = send.poll_reset(cx) {
            return Poll::Ready(Err(match reset {
                Ok(reason) => Cut::Reset(reason),
                Err(e) => Cut::Stream(e),
            }));
        }
        if let Some((chunk, last)) = waiting.take() {
            while send.capacity() == 0 {
                match send.poll_capacity(cx) {
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(Cut::Stream(e))),
                    Poll::Ready(None) => return Poll::Ready(Err(Cut::Closed)),
                    Poll::Pending => {
                        waiting = Some((chunk, last));
                        return Poll::Pending;
                    }
                }
            }
            send.send_data(chunk, last).map_err(Cut::Stream)?;
            if last {
                return Poll::Ready(Ok(()));
            }
            continue;
        }
        match ready!(Pin::new(&mut body).poll_frame(cx)) {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(chunk) => {
                    let last = body.is_end_stream();
                    if chunk.is_empty() {
                        // Needs no window: an empty last chunk ends the stream at once.
                        if last {
                            return Poll::Ready(send.send_data(chunk, true).map_err(Cut::Stream));
                        }
                        continue;
                    }
                    send.reserve_capacity(1);
                    waiting = Some((chunk, last));
                }
                Err(frame) => {
                    if let Ok(mut trailers) = frame.into_trailers() {
                        send.reserve_capacity(0);
                        // h2 refuses connection-specific fields in trailers as in heads.
                        headers::strip_hop_by_hop(&mut trailers, false);
                        own_values(&mut trailers);
                        return Poll::Ready(match send.send_trailers(trailers) {
                            Ok(()) => Ok(()),
                            Err(e) => {
                                // Refused: the body is whole all the same, so end it without.
                                let _ = send.send_data(Bytes::new(), true);
                                Err(Cut::Stream(e))
                            }
                        });
                    }
                }
            },
            Some(Err(e)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Poll::Ready(Err(Cut::Body(e)));
            }
            None => return Poll::Ready(send.send_data(Bytes::new(), true).map_err(Cut::Stream)),
        }
    })
    .await;
    if let Err(cut) = ended {
        tracing::debug!(error = %cut, "answer cut short");
    }
}

/// Why an answer's body did not reach its stream whole.
#[derive(Debug, thiserror::Error)]
enum Cut {
    #[error("client reset the stream ({0})")]
    Reset(Reason),
    #[error("stream failed: {0}")]
    Stream(h2::Error),
    #[error("stream closed")]
    Closed,
    #[error("upstream's body failed: {0}")]
    Body(BodyError),
}

/// A request's body as its stream delivers it. Each chunk taken gives its bytes back to the
/// client's window, so that the client may send more.
#[derive(Debug)]
pub struct RequestBody {
    recv: RecvStream,
    /// What the `content-length` promises is still to come.
    left: Option<u64>,
    /// DATA is over; trailers (if any) are next.
    data_done: bool,
    /// `Expect: 100-continue`: turned true when the body is first wanted, which the stream's
    /// exchange answers with `100 Continue`.
    wanted: Option<Arc<AtomicBool>>,
}

impl RequestBody {
    fn new(recv: RecvStream, headers: &http::HeaderMap) -> Self {
        // One pass over the fields (a known name's comparison is a tag's) costs less than two
        // lookups, each hashing its name.
        let (mut left, mut expects) = (None, false);
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                left = parse_length(value.as_bytes());
            } else if name == header::EXPECT {
                expects |= value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue");
            }
        }
        Self {
            recv,
            left,
            data_done: false,
            wanted: expects.then(Arc::default),
        }
    }

    /// What turns true once the body is wanted, when the client waits for `100 Continue`.
    fn wanted(&self) -> Option<Arc<AtomicBool>> {
        self.wanted.clone()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Some(wanted) = this.wanted.take() {
            wanted.store(true, Ordering::Relaxed);
        }
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.left {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e.into()))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.left {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What h2's encoder may keep of an answer holds none of the buffer its head was read into.
    #[test]
    fn an_answers_values_let_go_of_the_buffer_they_were_read_into() {
        let mut read = BytesMut::with_capacity(16 * 1024);
        read.extend_from_slice(b"Sun, 06 Dec 2026 05:30:00 GMTnginxAccept-Encodingsecret");
        let buffer = read.freeze();
        let view = |from: usize, to: usize| HeaderValue::from_maybe_shared(buffer.slice(from..to));
        let mut fields = HeaderMap::new();
        fields.insert(header::DATE, view(0, 29).unwrap());
        fields.insert(header::SERVER, view(29, 34).unwrap());
        fields.insert(header::VARY, HeaderValue::from_static("Origin"));
        fields.append(header::VARY, view(34, 49).unwrap());
        let mut secret = view(49, 55).unwrap();
        secret.set_sensitive(true);
        fields.insert(header::SET_COOKIE, secret);
        assert!(!buffer.is_unique());

        stream_head(&mut fields, &RespBody::fixed(Bytes::from_static(b"gone\n")));

        assert!(buffer.is_unique(), "a value still holds the read buffer");
        assert_eq!(fields[header::DATE], "Sun, 06 Dec 2026 05:30:00 GMT");
        assert_eq!(fields[header::SERVER], "nginx");
        let vary: Vec<_> = fields.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Origin", "Accept-Encoding"]);
        assert_eq!(fields[header::SET_COOKIE], "secret");
        assert!(fields[header::SET_COOKIE].is_sensitive());
        assert!(!fields[header::SERVER].is_sensitive());
        assert_eq!(fields[header::CONTENT_LENGTH], "5");
    }
}
