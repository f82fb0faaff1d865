//! An HTTP/2 client that asks for many large answers, grants every window, and then stops
//! reading holds a bounded share of veer's memory: veer allows 128 streams at once (its
//! SETTINGS say so, and it refuses the rest), and each holds at most a small send buffer in h2
//! and a chunk in hand; the rest of each answer waits upstream, held back by TCP. The heap is
//! counted by dhat's global allocator over the whole test process (veer, its upstream and the
//! client).

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{full, one_pool, start_veer, Upstream, IO_TIMEOUT};
use http::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

/// Each answer's length: far more than any buffer on the way.
const ANSWER: usize = 4 << 20;
/// Streams the client opens: twice what veer allows.
const STREAMS: u32 = 256;
/// What veer advertises as SETTINGS_MAX_CONCURRENT_STREAMS.
const ALLOWED: u32 = 128;
/// The most the whole process may hold for the stalled answers. With 400 KiB of send buffer a
/// stream (veer's earlier setting), 128 streams held over 50 MiB.
const HELD_AT_MOST: u64 = 24 << 20;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The value of `id` in the first SETTINGS frame (not an ACK) among `bytes`, read frame by frame.
fn setting(bytes: &[u8], id: u16) -> Option<Option<u32>> {
    let mut at = 0;
    while bytes.len() >= at + 9 {
        let len = usize::from(bytes[at]) << 16
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]);
        let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
        let payload = bytes.get(at + 9..at + 9 + len)?;
        if kind == 4 && flags & 1 == 0 {
            let value = payload.chunks_exact(6).find_map(|entry| {
                (u16::from_be_bytes([entry[0], entry[1]]) == id)
                    .then(|| u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]))
            });
            return Some(value);
        }
        at += 9 + len;
    }
    None
}

#[tokio::test]
async fn a_client_that_stops_reading_holds_a_bounded_share_of_veers_memory() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let body = Bytes::from(vec![b'x'; ANSWER]);
    let up = Upstream::with(Arc::new(move |_| {
        let body = body.clone();
        Box::pin(async move { Response::new(full(body)) })
    }))
    .await;
    let veer = start_veer(&one_pool(&[up.addr], "")).await;
    let before = dhat::HeapStats::get().curr_bytes;

    // A small receive buffer, so that the kernel takes little of what veer sends.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = common::within(IO_TIMEOUT, "connect", socket.connect(veer.http_addr))
        .await
        .unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS_INITIAL_WINDOW_SIZE at its largest, and the connection's window as large.
    let mut settings = 4u16.to_be_bytes().to_vec();
    settings.extend_from_slice(&(u32::MAX >> 1).to_be_bytes());
    out.extend(frame(4, 0, 0, &settings));
    out.extend(frame(8, 0, 0, &((u32::MAX >> 1) - 65_535).to_be_bytes()));
    // GET http://x/big, from HPACK's static table and two literals not indexed.
    let head = b"\x82\x86\x04\x04/big\x01\x01x";
    for i in 0..STREAMS {
        out.extend(frame(1, 0x5, 2 * i + 1, head));
    }
    s.write_all(&out).await.unwrap();

    // veer's SETTINGS come first; after them, nothing more is read.
    let mut seen = Vec::new();
    let allowed = loop {
        if let Some(value) = setting(&seen, 3) {
            break value;
        }
        let mut chunk = [0; 4096];
        let n = common::within(IO_TIMEOUT, "veer's SETTINGS", s.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "veer closed before its SETTINGS");
        seen.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(allowed, Some(ALLOWED));

    // Every allowed stream reaches the upstream, and no more.
    common::eventually(IO_TIMEOUT, "the allowed streams reach the upstream", || {
        let hits = up.hits();
        async move { hits >= ALLOWED as usize }
    })
    .await;
    // Then the heap settles: less than 64 KiB of growth over half a second (sampled every
    // 10 ms).
    let mut base = dhat::HeapStats::get().curr_bytes;
    let (mut peak, mut still) = (base, 0);
    common::eventually(IO_TIMEOUT, "veer's memory settles", || {
        let now = dhat::HeapStats::get().curr_bytes;
        if now > base + (64 << 10) {
            (base, still) = (now, 0);
        } else {
            still += 1;
        }
        peak = peak.max(now);
        let settled = still >= 50;
        async move { settled }
    })
    .await;
    assert_eq!(
        up.hits(),
        ALLOWED as usize,
        "streams beyond the limit were served"
    );
    let held = (peak as u64).saturating_sub(before as u64);
    assert!(
        held < HELD_AT_MOST,
        "the stalled answers hold {} KiB (at most {} KiB)",
        held >> 10,
        HELD_AT_MOST >> 10
    );
    drop(s);
}
