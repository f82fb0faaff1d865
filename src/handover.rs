//! `veer run --upgrade`: a running veer hands its listening sockets to a new process over the
//! Unix socket `listen.upgrade_socket`, so that a binary or config upgrade refuses and resets
//! nothing. The sockets themselves change hands (`SCM_RIGHTS`), with the connections queued on
//! them; closing a `SO_REUSEPORT` twin instead would reset those.
//!
//! The exchange, one message each way at a time:
//!
//! 1. new -> old `hello`; old -> new `listeners`, with the listening sockets attached (proxy,
//!    admin, and the upgrade socket itself).
//! 2. The new process binds what its config adds, then says `ready`. The old one stops taking
//!    changes, releases the state file (every acknowledged change is in it) and answers
//!    `released` with its runtime state.
//! 3. The new process locks the state file, starts serving and says `serving`; the old one
//!    drains as on SIGTERM. Should the new one say `abort` or go away instead, the old one takes
//!    the state file back and goes on as before.
//!
//! Owns the wire format and both ends of the exchange; what to do with the sockets is `run`'s.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream as StdUnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::control::{Control, Runtime};

/// Each step of the exchange must be answered within this.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many sockets change hands.
const MAX_FDS: usize = 8;
/// The largest message (a runtime state holding a whole config).
const MAX_MESSAGE: usize = 16 << 20;

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Http,
    Https,
    Admin,
    Upgrade,
}

/// One socket that changes hands: its role and the address (or path) it was configured with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Described {
    pub role: Role,
    pub addr: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Message {
    Hello { pid: u32 },
    Listeners { pid: u32, listeners: Vec<Described> },
    Ready,
    Released { runtime: Box<Runtime> },
    Serving,
    Abort { reason: String },
}

/// Why a handover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("nothing answers on the upgrade socket {path}: {source} (is veer running with this listen.upgrade_socket?)")]
    NoOne { path: String, source: io::Error },
    #[error("the upgrade socket {path} is in use by a running veer; take over from it with `veer run --upgrade`")]
    InUse { path: String },
    #[error("cannot listen on the upgrade socket {path}: {source}")]
    Bind { path: String, source: io::Error },
    #[error("handover with the running veer failed: {0}")]
    Exchange(#[from] io::Error),
}

// ---- the old process's side ----

/// Resolves once `handed_over` turns true; never, if it cannot any more (its sender is gone).
pub async fn handed_over(mut handed_over: watch::Receiver<bool>) {
    if handed_over.wait_for(|done| *done).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The sockets a running veer offers to its successor: duplicates of its listeners.
#[derive(Debug, Default)]
pub struct Offer {
    sockets: Vec<(Described, OwnedFd)>,
}

impl Offer {
    /// Adds a duplicate of `socket`, configured as `addr`, to the offer.
    pub fn add(&mut self, role: Role, addr: String, socket: BorrowedFd<'_>) -> io::Result<()> {
        let fd = socket.try_clone_to_owned()?;
        self.sockets.push((Described { role, addr }, fd));
        Ok(())
    }
}

/// Answers `veer run --upgrade` on `listener`, one at a time, until a successor takes over (then
/// `handed_over` turns true and this returns) or the process drains.
pub async fn serve(
    listener: tokio::net::UnixListener,
    offer: Offer,
    control: Arc<Control>,
    handed_over: Arc<watch::Sender<bool>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let offer = Arc::new(offer);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "upgrade socket accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade connection unusable");
                continue;
            }
        };
        let (offer, control) = (Arc::clone(&offer), Arc::clone(&control));
        match tokio::task::spawn_blocking(move || give(stream, &offer, &control)).await {
            Ok(Ok(Some(pid))) => {
                tracing::info!(new_pid = pid, "handed over to the new process; draining");
                let _ = handed_over.send(true);
                return;
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "handover failed; this process goes on serving")
            }
            Err(e) => tracing::error!(error = %e, "handover task failed"),
        }
    }
}

/// One exchange with a would-be successor. `Some(pid)` once it serves; `None` when it gave up
/// (this process goes on as before).
fn give(mut s: StdUnixStream, offer: &Offer, control: &Control) -> io::Result<Option<u32>> {
    s.set_read_timeout(Some(STEP_TIMEOUT))?;
    s.set_write_timeout(Some(STEP_TIMEOUT))?;
    let pid = match read_message(&mut s) {
        Ok((Message::Hello { pid }, _)) => pid,
        Ok((other, _)) => return Err(protocol(&other)),
        // A probe (a plain `veer run` finding this socket in use) says nothing.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    tracing::info!(new_pid = pid, "a new process asks to take over");
    let described = offer.sockets.iter().map(|(d, _)| d.clone()).collect();
    let fds: Vec<BorrowedFd<'_>> = offer.sockets.iter().map(|(_, fd)| fd.as_fd()).collect();
    let listeners = Message::Listeners {
        pid: std::process::id(),
        listeners: described,
    };
    write_message(&mut s, &listeners, &fds)?;
    match read_message(&mut s) {
        Ok((Message::Ready, _)) => {}
        Ok((Message::Abort { reason }, _)) => {
            tracing::warn!(new_pid = pid, %reason, "the new process could not start; this one goes on serving");
            return Ok(None);
        }
        Ok((other, _)) => return Err(protocol(&other)),
        Err(e) => {
            tracing::warn!(new_pid = pid, error = %e, "the new process went away before it was ready; this one goes on serving");
            return Ok(None);
        }
    }
    // From here until `serving` or `abort`, changes wait for the new process.
    let runtime = control.hand_over();
    let answer = write_message(
        &mut s,
        &Message::Released {
            runtime: Box::new(runtime),
        },
        &[],
    )
    .and_then(|()| read_message(&mut s));
    match answer {
        Ok((Message::Serving, _)) => Ok(Some(pid)),
        other => {
            let why = match other {
                Ok((Message::Abort { reason }, _)) => reason,
                Ok((m, _)) => protocol(&m).to_string(),
                Err(e) => e.to_string(),
            };
            tracing::warn!(new_pid = pid, reason = %why, "the new process did not take over; this one goes on serving and takes changes again");
            control.take_back().map_err(io::Error::other)?;
            Ok(None)
        }
    }
}

// ---- the new process's side ----

/// A takeover in progress: the old process's sockets, and the line to it.
#[derive(Debug)]
pub struct Takeover {
    stream: StdUnixStream,
    sockets: Vec<(Described, OwnedFd)>,
    pub old_pid: u32,
}

impl Takeover {
    /// Connects to the running veer at `path` and receives its listening sockets. Blocking.
    pub fn connect(path: &Path) -> Result<Takeover, HandoverError> {
        let mut stream = StdUnixStream::connect(path).map_err(|source| HandoverError::NoOne {
            path: path.display().to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(STEP_TIMEOUT))?;
        stream.set_write_timeout(Some(STEP_TIMEOUT))?;
        let hello = Message::Hello {
            pid: std::process::id(),
        };
        write_message(&mut stream, &hello, &[])?;
        let (old_pid, listeners, fds) = match read_message(&mut stream)? {
            (Message::Listeners { pid, listeners }, fds) => (pid, listeners, fds),
            (other, _) => return Err(protocol(&other).into()),
        };
        if listeners.len() != fds.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} sockets described, {} received",
                    listeners.len(),
                    fds.len()
                ),
            )
            .into());
        }
        let sockets = listeners.into_iter().zip(fds).collect();
        Ok(Takeover {
            stream,
            sockets,
            old_pid,
        })
    }

    /// The old process's socket for `role` if it was configured as `addr` too; a listener the
    /// new config moved is bound fresh, and the old one closes with the old process.
    pub fn take(&mut self, role: Role, addr: &str) -> Option<OwnedFd> {
        let at = self
            .sockets
            .iter()
            .position(|(d, _)| d.role == role && d.addr == addr)?;
        Some(self.sockets.swap_remove(at).1)
    }

    /// Everything is bound: asks the old process to stop taking changes; its runtime state.
    pub fn ready(&mut self) -> io::Result<Runtime> {
        write_message(&mut self.stream, &Message::Ready, &[])?;
        match read_message(&mut self.stream)? {
            (Message::Released { runtime }, _) => Ok(*runtime),
            (other, _) => Err(protocol(&other)),
        }
    }

    /// This process serves: the old one drains.
    pub fn serving(mut self) -> io::Result<()> {
        write_message(&mut self.stream, &Message::Serving, &[])
    }

    /// This process cannot start: the old one goes on.
    pub fn abort(mut self, reason: &str) {
        let abort = Message::Abort {
            reason: reason.to_string(),
        };
        if let Err(e) = write_message(&mut self.stream, &abort, &[]) {
            tracing::debug!(error = %e, "the old process did not hear the abort (closing says it too)");
        }
    }
}

/// Binds the upgrade socket at `path` (owner only). A socket file left by a process that is
/// gone is replaced; one a running veer answers on is an error.
pub fn bind(path: &Path) -> Result<StdUnixListener, HandoverError> {
    let shown = || path.display().to_string();
    if std::fs::symlink_metadata(path).is_ok() {
        if StdUnixStream::connect(path).is_ok() {
            return Err(HandoverError::InUse { path: shown() });
        }
        if let Err(source) = std::fs::remove_file(path) {
            return Err(HandoverError::Bind {
                path: shown(),
                source,
            });
        }
    }
    let bind = || -> io::Result<StdUnixListener> {
        let listener = StdUnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    };
    bind().map_err(|source| HandoverError::Bind {
        path: shown(),
        source,
    })
}

/// A listening socket received from the old process, ready for tokio.
pub fn unix_listener(fd: OwnedFd) -> io::Result<StdUnixListener> {
    let listener = StdUnixListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

// ---- the wire: a 4-byte big-endian length, then JSON; sockets ride on the first byte ----

fn write_message(
    s: &mut StdUnixStream,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    let json = serde_json::to_vec(message).map_err(io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(io::Error::other)?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&json);
    let mut sent = 0;
    if !fds.is_empty() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("too many sockets to pass"));
        }
        sent = sendmsg(
            &*s,
            &[IoSlice::new(&frame)],
            &mut control,
            SendFlags::empty(),
        )?;
    }
    s.write_all(&frame[sent..])?;
    s.flush()
}

fn read_message(s: &mut StdUnixStream) -> io::Result<(Message, Vec<OwnedFd>)> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        &*s,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let mut data = buf[..got.bytes].to_vec();
    fill(s, &mut data, 4)?;
    let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a {len}-byte message is over the limit"),
        ));
    }
    fill(s, &mut data, 4 + len)?;
    if data.len() > 4 + len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "more than one message at once",
        ));
    }
    let message = serde_json::from_slice(&data[4..])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((message, fds))
}

/// Reads until `data` holds at least `want` bytes.
fn fill(s: &mut StdUnixStream, data: &mut Vec<u8>, want: usize) -> io::Result<()> {
    let mut chunk = [0u8; 64 * 1024];
    while data.len() < want {
        let room = (want - data.len()).min(chunk.len());
        let n = s.read(&mut chunk[..room])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        data.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

fn protocol(unexpected: &Message) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected message in the handover: {unexpected:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_sockets_cross_a_socket_pair() {
        let (mut a, mut b) = StdUnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let msg = Message::Listeners {
            pid: 7,
            listeners: vec![Described {
                role: Role::Http,
                addr: addr.to_string(),
            }],
        };
        write_message(&mut a, &msg, &[listener.as_fd()]).unwrap();
        let (got, fds) = read_message(&mut b).unwrap();
        assert!(matches!(got, Message::Listeners { pid: 7, .. }), "{got:?}");
        assert_eq!(fds.len(), 1);
        // The received socket is the same listening socket: a connect to it is accepted there.
        let received = std::net::TcpListener::from(fds.into_iter().next().unwrap());
        assert_eq!(received.local_addr().unwrap(), addr);
        drop(listener);
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(received.accept().is_ok());
        // A large message arrives whole.
        let runtime = Runtime {
            version: 3,
            ..Runtime::default()
        };
        let big = Message::Abort {
            reason: "x".repeat(200_000),
        };
        let writer = std::thread::spawn(move || {
            write_message(&mut b, &big, &[]).unwrap();
            b
        });
        assert!(
            matches!(read_message(&mut a).unwrap().0, Message::Abort { reason } if reason.len() == 200_000)
        );
        let mut b = writer.join().unwrap();
        let released = Message::Released {
            runtime: Box::new(runtime),
        };
        write_message(&mut a, &released, &[]).unwrap();
        assert!(
            matches!(read_message(&mut b).unwrap().0, Message::Released { runtime } if runtime.version == 3)
        );
    }

    #[test]
    fn a_closed_peer_is_an_end_of_file() {
        let (a, mut b) = StdUnixStream::pair().unwrap();
        drop(a);
        let err = read_message(&mut b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
