//! One served connection as tonic sees it: its I/O (TCP, or TLS over TCP),
//! its `--max-connections` slot, and what it did, for the connection line
//! written when it closes.
//!
//! hyper never tells us how or why a connection ended, so the wrapper reads
//! the HTTP/2 byte stream as it passes: it checks the 24-byte client preface,
//! counts the requests the client opens (a HEADERS frame on a new stream: one
//! per RPC), and notes any GOAWAY carrying an error code. It also closes a
//! connection whose preface has not arrived by the handshake deadline, which
//! hyper would otherwise keep open forever.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Sleep;
use tonic::transport::server::Connected;

use crate::log::{ConnectionLog, Ended};

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const GOAWAY: u8 = 0x7;
const NO_ERROR: u32 = 0;

/// A connection holding one of the `--max-connections` slots until it
/// closes; when dropped, it writes its connection line.
pub struct Tracked<IO> {
    io: IO,
    _permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    opened: Instant,
    cert: Option<String>,
    log: ConnectionLog,
    /// Fires if the preface has not fully arrived by then; gone once it has.
    preface_deadline: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
    inbound: Inbound,
    outbound: Frames,
    bytes_in: u64,
    bytes_out: u64,
    timed_out: bool,
    client_closed: bool,
    read_error: Option<io::ErrorKind>,
}

/// Everything [`Tracked::new`] needs to know about a connection.
pub struct Opened {
    pub peer: SocketAddr,
    pub opened: Instant,
    /// The accept time plus `--handshake-timeout`.
    pub deadline: Instant,
    pub timeout: Duration,
    pub cert: Option<String>,
    pub permit: OwnedSemaphorePermit,
}

impl<IO> Tracked<IO> {
    pub fn new(io: IO, opened: Opened, log: ConnectionLog) -> Tracked<IO> {
        Tracked {
            io,
            _permit: opened.permit,
            peer: opened.peer,
            opened: opened.opened,
            cert: opened.cert,
            log,
            preface_deadline: Some(Box::pin(tokio::time::sleep_until(opened.deadline.into()))),
            timeout: opened.timeout,
            inbound: Inbound::default(),
            outbound: Frames::default(),
            bytes_in: 0,
            bytes_out: 0,
            timed_out: false,
            client_closed: false,
            read_error: None,
        }
    }

    /// Why the connection ended, most telling cause first.
    fn reason(&self) -> String {
        if let Some(first) = &self.inbound.bad_preface {
            return not_http2(first);
        }
        if self.timed_out {
            return format!("http2: no preface within {}", seconds(self.timeout));
        }
        if let Some((code, debug)) = &self.outbound.goaway {
            return format!("http2: protocol error: {}", goaway_reason(*code, debug));
        }
        if let Some((code, debug)) = &self.inbound.frames.goaway {
            return format!(
                "http2: client reported an error: {}",
                goaway_reason(*code, debug)
            );
        }
        if let Some(kind) = self.read_error {
            return match kind {
                io::ErrorKind::ConnectionReset => "reset by the client".into(),
                other => format!("read error: {}", io::Error::from(other)),
            };
        }
        if self.client_closed || self.inbound.frames.goodbye {
            return match self.inbound.preface_seen {
                0 => "closed by the client before sending anything".into(),
                n if n < PREFACE.len() => "http2: closed by the client during the preface".into(),
                _ => "closed by the client".into(),
            };
        }
        "closed by the server".into()
    }
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        self.log.ended(Ended {
            peer: self.peer,
            lived: self.opened.elapsed(),
            calls: self.inbound.calls,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            cert: self.cert.take(),
            reason: self.reason(),
        });
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> IO::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = this.preface_deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                this.timed_out = true;
                this.preface_deadline = None;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no HTTP/2 preface in time",
                )));
            }
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if read.is_empty() {
                    this.client_closed = true;
                } else {
                    this.bytes_in += read.len() as u64;
                    this.inbound.feed(read);
                    if this.inbound.preface_seen == PREFACE.len()
                        || this.inbound.bad_preface.is_some()
                    {
                        this.preface_deadline = None;
                    }
                }
            }
            // A TLS peer that closes without close_notify is still a close.
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                this.client_closed = true;
            }
            Poll::Ready(Err(err)) => this.read_error = Some(err.kind()),
            Poll::Pending => {}
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.wrote(&[io::IoSlice::new(buf)], n);
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.wrote(bufs, n);
        }
        polled
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

impl<IO> Tracked<IO> {
    /// Notes the first `n` bytes of `bufs`, which were just written.
    fn wrote(&mut self, bufs: &[io::IoSlice<'_>], n: usize) {
        self.bytes_out += n as u64;
        let mut left = n;
        for buf in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(buf.len());
            self.outbound.feed(&buf[..take], |_, _| {});
            left -= take;
        }
    }
}

/// The client's side of the byte stream: preface, then frames.
#[derive(Default)]
struct Inbound {
    /// How many bytes of the preface have arrived (and matched).
    preface_seen: usize,
    /// The first bytes, if they were not the preface.
    bad_preface: Option<Vec<u8>>,
    frames: Frames,
    calls: u64,
    last_stream: u32,
}

impl Inbound {
    fn feed(&mut self, mut data: &[u8]) {
        if self.bad_preface.is_some() {
            return;
        }
        if self.preface_seen < PREFACE.len() {
            let n = data.len().min(PREFACE.len() - self.preface_seen);
            if data[..n] != PREFACE[self.preface_seen..self.preface_seen + n] {
                let mut first = PREFACE[..self.preface_seen].to_vec();
                first.extend_from_slice(&data[..data.len().min(16)]);
                self.bad_preface = Some(first);
                return;
            }
            self.preface_seen += n;
            data = &data[n..];
        }
        let (calls, last_stream) = (&mut self.calls, &mut self.last_stream);
        self.frames.feed(data, |kind, stream| {
            // A request opens a new (odd, increasing) stream with HEADERS;
            // HEADERS on a known stream are trailers.
            if kind == HEADERS && stream % 2 == 1 && stream > *last_stream {
                *calls += 1;
                *last_stream = stream;
            }
        });
    }
}

/// Reads HTTP/2 frame boundaries out of a byte stream, keeping the start of
/// the last GOAWAY frame's payload.
#[derive(Default)]
struct Frames {
    header: [u8; FRAME_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    kind: u8,
    /// The current GOAWAY payload's first bytes.
    payload: Vec<u8>,
    /// The error code and debug data of the last GOAWAY with an error.
    goaway: Option<(u32, Vec<u8>)>,
    /// Whether any GOAWAY went by (a client's, without error, is its goodbye).
    goodbye: bool,
}

/// How much of a GOAWAY's debug data is kept for the log.
const GOAWAY_KEPT: usize = 8 + 120;

impl Frames {
    fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(u8, u32)) {
        while !data.is_empty() {
            if self.left == 0 && self.have < FRAME_HEADER {
                let n = data.len().min(FRAME_HEADER - self.have);
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < FRAME_HEADER {
                    return;
                }
                let h = self.header;
                self.left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.kind = h[3];
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                on_frame(self.kind, stream);
                self.payload.clear();
                if self.left == 0 {
                    self.end_frame();
                }
                continue;
            }
            let n = data.len().min(self.left);
            if self.kind == GOAWAY && self.payload.len() < GOAWAY_KEPT {
                let keep = n.min(GOAWAY_KEPT - self.payload.len());
                self.payload.extend_from_slice(&data[..keep]);
            }
            self.left -= n;
            data = &data[n..];
            if self.left == 0 {
                self.end_frame();
            }
        }
    }

    fn end_frame(&mut self) {
        self.goodbye |= self.kind == GOAWAY;
        if self.kind == GOAWAY && self.payload.len() >= 8 {
            let p = &self.payload;
            let code = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            if code != NO_ERROR {
                self.goaway = Some((code, p[8..].to_vec()));
            }
        }
        self.have = 0;
    }
}

/// `FRAME_SIZE_ERROR: frame with invalid size`, plus the debug text if any.
fn goaway_reason(code: u32, debug: &[u8]) -> String {
    let reason = h2::Reason::from(code);
    let mut text = format!("{reason:?}: {reason}");
    let debug = String::from_utf8_lossy(debug);
    if !debug.trim().is_empty() {
        text.push_str(&format!(" ({})", debug.trim()));
    }
    text
}

/// Why bytes that are not the HTTP/2 preface were sent, guessed from the
/// first of them.
fn not_http2(first: &[u8]) -> String {
    let starts = |prefix: &[u8]| first.starts_with(prefix);
    if first.first() == Some(&0x16) {
        "http2: client spoke TLS to a plaintext port".into()
    } else if [
        &b"GET "[..],
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"OPTIONS ",
        b"DELETE ",
    ]
    .iter()
    .any(|m| starts(m))
    {
        "http2: client spoke HTTP/1, not HTTP/2 (gRPC)".into()
    } else {
        "http2: not an HTTP/2 client (bad preface)".into()
    }
}

/// `10 s`, or `1.5 s`: a timeout as the log states it.
pub fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, 0];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn requests_are_counted_one_per_new_stream_in_any_chunking() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, &[0; 6])); // SETTINGS
        bytes.extend(frame(HEADERS, 1, &[1, 2, 3]));
        bytes.extend(frame(0x0, 1, &[0; 40])); // DATA
        bytes.extend(frame(HEADERS, 1, &[4])); // trailers
        bytes.extend(frame(HEADERS, 3, &[5]));
        for chunk in [1, 2, 5, 9, 10, 1000] {
            let mut inbound = Inbound::default();
            for part in bytes.chunks(chunk) {
                inbound.feed(part);
            }
            assert_eq!(inbound.calls, 2, "chunks of {chunk}");
            assert!(inbound.bad_preface.is_none());
        }
    }

    #[test]
    fn goaway_error_codes_are_kept_and_no_error_is_not() {
        let mut frames = Frames::default();
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.extend(NO_ERROR.to_be_bytes());
        frames.feed(&frame(GOAWAY, 0, &payload), |_, _| {});
        assert_eq!(frames.goaway, None);
        assert!(frames.goodbye);
        let mut payload = 0u32.to_be_bytes().to_vec();
        payload.extend(6u32.to_be_bytes());
        payload.extend(b"too big");
        frames.feed(&frame(GOAWAY, 0, &payload), |_, _| {});
        assert_eq!(frames.goaway, Some((6, b"too big".to_vec())));
        assert_eq!(
            goaway_reason(6, b"too big"),
            "FRAME_SIZE_ERROR: frame with invalid size (too big)"
        );
    }

    #[test]
    fn a_bad_preface_is_named_by_what_it_looks_like() {
        for (bytes, reason) in [
            (
                &b"GET / HTTP/1.1\r\n"[..],
                "http2: client spoke HTTP/1, not HTTP/2 (gRPC)",
            ),
            (
                &[0x16, 0x03, 0x01][..],
                "http2: client spoke TLS to a plaintext port",
            ),
            (
                &b"PRI * HTTP/1.1"[..],
                "http2: not an HTTP/2 client (bad preface)",
            ),
            (
                &b"\x00garbage"[..],
                "http2: not an HTTP/2 client (bad preface)",
            ),
        ] {
            let mut inbound = Inbound::default();
            inbound.feed(bytes);
            let first = inbound.bad_preface.expect("a bad preface");
            assert_eq!(not_http2(&first), reason);
        }
    }

    #[test]
    fn timeouts_read_as_seconds() {
        assert_eq!(seconds(Duration::from_secs(10)), "10 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }
}
