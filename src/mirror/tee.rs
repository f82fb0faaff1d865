//! The body tee: the client's body, polled by the primary's connection as always, each chunk
//! also offered to the copy through a bounded channel without ever waiting for it; and the
//! copy's body, which ends in an error when the tee stopped short, so that a shadow never sees a
//! shortened request as a whole one.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use crate::conn::ClientBody;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

use super::{Fate, MirrorLane, FEED_CHUNKS};
use crate::upstream::BodyError;

/// How a teed body ended, as the copy's side needs to know it.
#[derive(Debug)]
pub(super) struct FeedState {
    /// Counts the copy: as skipped the moment it is abandoned (its task may wait on the shadow
    /// until its timeout), else when its task ends.
    lane: Arc<MirrorLane>,
    /// The client's body ended cleanly and every chunk went to the copy.
    complete: AtomicBool,
    /// The copy was given up: over `max_body`, or it fell `FEED_CHUNKS` behind.
    pub(super) abandoned: AtomicBool,
    /// The copy has been counted (by its tee when abandoned, else by its task).
    counted: AtomicBool,
}

impl FeedState {
    /// Counts the copy as `fate` unless it was counted already; `true` when this counted it.
    pub(super) fn settle(&self, fate: Fate) -> bool {
        let first = !self.counted.swap(true, Ordering::AcqRel);
        if first {
            self.lane.count(fate);
        }
        first
    }
}

/// Splits a client's body into the primary's (the same body, each chunk also handed on) and the
/// copy's.
pub(super) fn tee(body: ClientBody, max_body: u64, lane: Arc<MirrorLane>) -> (Tee, CopyBody) {
    let (tx, rx) = mpsc::channel(FEED_CHUNKS);
    let state = Arc::new(FeedState {
        lane,
        complete: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
        counted: AtomicBool::new(false),
    });
    let hint = body.size_hint();
    let feed = Feed {
        tx,
        fed: 0,
        max: max_body,
        state: Arc::clone(&state),
    };
    let tee = Tee {
        body,
        feed: Some(feed),
    };
    (tee, CopyBody { rx, state, hint })
}

/// The primary's request body when it is mirrored: the client's body, polled by the primary's
/// connection as always, each chunk also offered to the copy (a `Bytes` clone, no copy of the
/// bytes) without ever waiting for it.
#[derive(Debug)]
pub struct Tee {
    body: ClientBody,
    /// `None` once the copy has all it gets.
    feed: Option<Feed>,
}

#[derive(Debug)]
struct Feed {
    tx: mpsc::Sender<Bytes>,
    fed: u64,
    max: u64,
    state: Arc<FeedState>,
}

impl Tee {
    fn feed(&mut self, data: &Bytes) {
        let Some(feed) = &mut self.feed else {
            return;
        };
        feed.fed += data.len() as u64;
        if feed.fed > feed.max {
            return self.abandon();
        }
        match feed.tx.try_send(data.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.abandon(),
            // The copy ended already (it failed): nothing more to hand on.
            Err(mpsc::error::TrySendError::Closed(_)) => self.feed = None,
        }
    }

    /// Gives the copy up: its body ends in an error, so the shadow never sees it whole.
    fn abandon(&mut self) {
        if let Some(feed) = self.feed.take() {
            feed.state.abandoned.store(true, Ordering::Release);
            feed.state.settle(Fate::Skipped);
        }
    }

    /// The client's body ended: so does the copy's.
    fn finish(&mut self) {
        if let Some(feed) = self.feed.take() {
            feed.state.complete.store(true, Ordering::Release);
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.body).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.feed(data);
                }
                if this.body.is_end_stream() {
                    this.finish();
                }
            }
            None => this.finish(),
            // The client went away mid-body: the copy is cut off as the primary is.
            Some(Err(_)) => this.feed = None,
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A copy's request body: the chunks the primary's `Tee` handed on. Ends when the client's body
/// ended; ends in an error when the tee stopped short (abandoned, client gone, primary dropped
/// its body), so that a shortened copy is never sent as a whole request.
#[derive(Debug)]
pub struct CopyBody {
    rx: mpsc::Receiver<Bytes>,
    pub(super) state: Arc<FeedState>,
    hint: SizeHint,
}

/// The copy's body stopped short of the client's.
#[derive(Debug, thiserror::Error)]
#[error("the shadow copy's body was abandoned")]
struct Abandoned;

impl Body for CopyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        Poll::Ready(match ready!(this.rx.poll_recv(cx)) {
            Some(data) => Some(Ok(Frame::data(data))),
            None if this.state.complete.load(Ordering::Acquire) => None,
            None => Some(Err(Abandoned.into())),
        })
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
