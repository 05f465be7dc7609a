//! `--trace`: every gRPC event of a call, decoded, one line each.
//!
//! [`Traced`] wraps a gRPC service at the HTTP level, the same way on both
//! sides: around the client's channel (`hangar --trace get …`, lines on
//! stderr) and around the server's services (`hangar serve --trace`, lines in
//! the server log). It sees what crosses the wire between tonic and the HTTP/2
//! connection: the call (method, target or peer, TLS), request headers, every
//! length-prefixed message in both directions (decoded by [`describe`]), the
//! end of the request stream, response headers, trailers and the final
//! status. Directions are absolute: `>` is client to server, `<` server to
//! client, so a client's trace and a server's trace of one call read alike.
//!
//! It costs: every message is copied once and decoded, and every FlightData
//! body is hashed (SHA-256). It is off unless asked for, and then only for
//! the calls asked for. Credentials never appear (see
//! [`describe::headers`]) and bodies only as size and digest.

mod describe;

use std::fmt::Write as _;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use prost::bytes::{Buf, Bytes, BytesMut};
use tonic::body::Body;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;

use crate::json::Value;
use crate::log::{Format, Logger};
pub use describe::Rpc;

/// Messages larger than this are reported by size only, not buffered and
/// decoded (the server's default message limit).
const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Where trace lines go and which calls are traced; shared by every call.
#[derive(Debug)]
pub struct Tracer {
    sink: Sink,
    /// RPC names to trace (the last segment of the method path, any case);
    /// `None` traces every call.
    only: Option<Vec<String>>,
    next_call: AtomicU64,
}

#[derive(Debug)]
enum Sink {
    /// The client's stderr, in the `--trace-format` chosen.
    Stderr(Format),
    /// The server's log (its `--log-format`, with a timestamp).
    Log(Logger),
}

impl Tracer {
    /// A client's tracer: every call, on stderr.
    pub fn stderr(format: Format) -> Arc<Tracer> {
        Arc::new(Tracer {
            sink: Sink::Stderr(format),
            only: None,
            next_call: AtomicU64::new(1),
        })
    }

    /// A server's tracer: the calls named in `only` (all when `None`), into
    /// the log.
    pub fn log(logger: Logger, only: Option<Vec<String>>) -> Arc<Tracer> {
        Arc::new(Tracer {
            sink: Sink::Log(logger),
            only: only.map(|names| names.iter().map(|n| n.to_ascii_lowercase()).collect()),
            next_call: AtomicU64::new(1),
        })
    }

    fn traces(&self, path: &str) -> bool {
        match &self.only {
            None => true,
            Some(names) => {
                let rpc = path.rsplit('/').next().unwrap_or_default();
                names.iter().any(|n| n.eq_ignore_ascii_case(rpc))
            }
        }
    }

    fn write(&self, event: Value) {
        match &self.sink {
            Sink::Stderr(Format::Json) => line(&event.to_string()),
            Sink::Stderr(Format::Text) => line(&text(&event)),
            Sink::Log(logger) => logger.trace(&event),
        }
    }
}

fn line(text: &str) {
    // One write per line, so lines of concurrent calls never interleave.
    let mut buf = String::with_capacity(text.len() + 1);
    buf.push_str(text);
    buf.push('\n');
    let _ = std::io::stderr().lock().write_all(buf.as_bytes());
}

/// The text form of an event: `trace #CALL DIR EVENT key=value …`, nested
/// objects in braces and arrays in brackets, strings quoted when they need it.
pub fn text(event: &Value) -> String {
    let mut out = String::from("trace");
    let Value::Object(fields) = event else {
        render(&mut out, event);
        return out;
    };
    let get = |key: &str| fields.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    if let Some(Value::Int(call)) = get("call") {
        let _ = write!(out, " #{call}");
    }
    let arrow = match get("direction").and_then(Value::as_str) {
        Some("request") => ">",
        Some("response") => "<",
        _ => "-",
    };
    let _ = write!(out, " {arrow}");
    if let Some(Value::String(event)) = get("event") {
        let _ = write!(out, " {event}");
    }
    for (key, value) in fields {
        if matches!(key.as_str(), "call" | "direction" | "event") {
            continue;
        }
        // Keys can come from the peer too (IPC metadata): quoted like values.
        let _ = write!(out, " {}=", crate::log::quote_if_needed(key));
        render(&mut out, value);
    }
    out
}

fn render(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push('-'),
        Value::String(s) => out.push_str(&crate::log::quote_if_needed(s)),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                render(out, item);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (key, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{}=", crate::log::quote_if_needed(key));
                render(out, item);
            }
            out.push('}');
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// One traced call: its number and RPC, and the tracer its events go to.
struct CallTrace {
    tracer: Arc<Tracer>,
    id: u64,
    rpc: Rpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
    None,
}

impl CallTrace {
    fn emit(&self, direction: Direction, event: &str, fields: Vec<(String, Value)>) {
        let mut all = Vec::with_capacity(fields.len() + 3);
        all.push(("call".to_string(), Value::from(self.id)));
        all.push(("event".to_string(), Value::from(event)));
        match direction {
            Direction::Request => all.push(("direction".into(), Value::from("request"))),
            Direction::Response => all.push(("direction".into(), Value::from("response"))),
            Direction::None => {}
        }
        all.extend(fields);
        self.tracer.write(Value::Object(all));
    }

    /// The final status, from trailers (or from the headers of a
    /// trailers-only response).
    fn status(&self, map: &HeaderMap) {
        if let Some(status) = tonic::Status::from_header_map(map) {
            let mut fields = vec![
                (
                    "code".to_string(),
                    Value::from(crate::log::code_name(status.code())),
                ),
                ("message".to_string(), Value::from(status.message())),
            ];
            if !status.details().is_empty() {
                fields.push(("details_bytes".into(), Value::from(status.details().len())));
            }
            self.emit(Direction::None, "status", fields);
        }
    }
}

/// A gRPC service (or client channel) whose calls are traced when a tracer is
/// set; without one it only forwards.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
    tracer: Option<Arc<Tracer>>,
    /// Client side: the server as the user named it. Server side: `None`,
    /// the peer comes from the connection.
    target: Option<Arc<str>>,
}

impl<S> Traced<S> {
    /// The client side: `target` is the server's URI.
    pub fn client(inner: S, tracer: Option<Arc<Tracer>>, target: String) -> Traced<S> {
        Traced {
            inner,
            tracer,
            target: Some(target.into()),
        }
    }

    /// The server side.
    pub fn server(inner: S, tracer: Option<Arc<Tracer>>) -> Traced<S> {
        Traced {
            inner,
            tracer,
            target: None,
        }
    }
}

impl<S: NamedService> NamedService for Traced<S> {
    const NAME: &'static str = S::NAME;
}

use crate::transport::BoxFuture;

impl<S> Service<Request<Body>> for Traced<S>
where
    S: Service<Request<Body>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display + Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let tracer = match &self.tracer {
            Some(tracer) if tracer.traces(&path) => tracer.clone(),
            _ => return Box::pin(self.inner.call(request)),
        };
        let call = Arc::new(CallTrace {
            id: tracer.next_call.fetch_add(1, Ordering::Relaxed),
            tracer,
            rpc: Rpc::of_path(&path),
        });
        let mut fields = vec![("method".to_string(), Value::from(path))];
        match &self.target {
            Some(target) => {
                fields.push(("target".into(), Value::from(&**target)));
                fields.push(("tls".into(), Value::from(target.starts_with("grpc+tls"))));
            }
            None => {
                let (peer, tls) = crate::transport::peer(request.extensions());
                let peer = peer.map_or_else(|| "-".to_string(), |a| a.to_string());
                fields.push(("peer".into(), Value::from(peer)));
                fields.push(("tls".into(), Value::from(tls)));
            }
        }
        call.emit(Direction::None, "call", fields);
        call.emit(
            Direction::Request,
            "headers",
            vec![("headers".into(), describe::headers(request.headers()))],
        );
        let request =
            request.map(|body| Body::new(TracedBody::new(body, call.clone(), Direction::Request)));
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    call.emit(
                        Direction::Response,
                        "headers",
                        vec![
                            (
                                "http_status".into(),
                                Value::from(response.status().as_u16()),
                            ),
                            ("headers".into(), describe::headers(response.headers())),
                        ],
                    );
                    // A trailers-only response (an error before any message)
                    // carries its status in the headers, and its body ends
                    // there.
                    call.status(response.headers());
                    let trailers_only = response.headers().contains_key("grpc-status");
                    Ok(response.map(|body| {
                        let mut body = TracedBody::new(body, call, Direction::Response);
                        body.finished = trailers_only;
                        Body::new(body)
                    }))
                }
                Err(err) => {
                    call.emit(
                        Direction::None,
                        "error",
                        vec![("error".into(), Value::from(err.to_string()))],
                    );
                    Err(err)
                }
            }
        })
    }
}

/// A request or response body whose gRPC messages are traced as they pass.
struct TracedBody {
    inner: Body,
    call: Arc<CallTrace>,
    direction: Direction,
    frames: Frames,
    messages: u64,
    /// The body reached its end (or trailers): nothing more to report.
    finished: bool,
}

impl TracedBody {
    fn new(inner: Body, call: Arc<CallTrace>, direction: Direction) -> TracedBody {
        TracedBody {
            inner,
            call,
            direction,
            frames: Frames::default(),
            messages: 0,
            finished: false,
        }
    }

    fn data(&mut self, chunk: &Bytes) {
        let mut frames = Vec::new();
        self.frames.push(chunk.clone(), &mut frames);
        for frame in frames {
            self.messages += 1;
            let mut fields = vec![("n".to_string(), Value::from(self.messages))];
            match frame {
                Frame::Message {
                    compressed: false,
                    payload,
                } => {
                    fields.push(("bytes".into(), Value::from(payload.len())));
                    fields.extend(describe::message(
                        self.call.rpc,
                        self.direction == Direction::Request,
                        &payload,
                    ));
                }
                Frame::Message {
                    compressed: true,
                    payload,
                } => {
                    fields.push(("bytes".into(), Value::from(payload.len())));
                    fields.push(("compressed".into(), Value::from(true)));
                    fields.push((
                        "problems".into(),
                        Value::Array(vec![Value::from(
                            "compressed with the call's grpc-encoding: not decoded",
                        )]),
                    ));
                }
                Frame::Skipped { len } => {
                    fields.push(("bytes".into(), Value::from(len)));
                    fields.push((
                        "problems".into(),
                        Value::Array(vec![Value::from(format!(
                            "larger than the {MAX_DECODED_BYTES} bytes the tracer decodes: \
                             size only"
                        ))]),
                    ));
                }
            }
            self.call.emit(self.direction, "message", fields);
        }
    }

    fn end(&mut self, trailers: Option<&HeaderMap>) {
        self.finished = true;
        let mut fields = vec![("messages".to_string(), Value::from(self.messages))];
        if let Some((received, declared)) = self.frames.partial() {
            fields.push((
                "problems".into(),
                Value::Array(vec![Value::from(format!(
                    "the stream ended inside a message ({received} of its {declared} bytes)"
                ))]),
            ));
        }
        match trailers {
            Some(trailers) => {
                fields.push(("trailers".into(), describe::headers(trailers)));
                self.call.emit(self.direction, "trailers", fields);
                self.call.status(trailers);
            }
            None => self.call.emit(self.direction, "end", fields),
        }
    }
}

impl tonic::codegen::Body for TracedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, tonic::Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.data(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.end(Some(trailers));
                }
            }
            Poll::Ready(Some(Err(status))) => {
                self.finished = true;
                self.call.emit(
                    self.direction,
                    "error",
                    vec![
                        ("messages".into(), Value::from(self.messages)),
                        ("error".into(), Value::from(status.to_string())),
                    ],
                );
            }
            Poll::Ready(None) if !self.finished => self.end(None),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        if !self.finished {
            // The reader let go before the end: a cancel, a reset, or a
            // client that stopped reading.
            self.call.emit(
                self.direction,
                "abandoned",
                vec![("messages".into(), Value::from(self.messages))],
            );
        }
    }
}

/// gRPC's length-prefixed framing: a compressed flag, a 4-byte big-endian
/// length, the message.
#[derive(Default)]
struct Frames {
    buf: BytesMut,
    /// Bytes of an oversized message still to pass over.
    skip: usize,
    skipped: usize,
}

enum Frame {
    Message { compressed: bool, payload: Bytes },
    Skipped { len: usize },
}

const PREFIX: usize = 5;

impl Frames {
    fn push(&mut self, mut data: Bytes, out: &mut Vec<Frame>) {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                data.advance(n);
                self.skip -= n;
                if self.skip == 0 {
                    out.push(Frame::Skipped { len: self.skipped });
                }
                continue;
            }
            if self.buf.len() < PREFIX {
                let n = (PREFIX - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..n]);
                data.advance(n);
                if self.buf.len() < PREFIX {
                    break;
                }
                let len = self.declared();
                if len > MAX_DECODED_BYTES {
                    self.buf.clear();
                    (self.skip, self.skipped) = (len, len);
                    continue;
                }
                // Grow with what arrives, not with what the prefix claims.
                self.buf.reserve(len.min(64 * 1024));
            }
            let want = PREFIX + self.declared() - self.buf.len();
            let n = want.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data.advance(n);
            if self.buf.len() == PREFIX + self.declared() {
                let frame = self.buf.split().freeze();
                out.push(Frame::Message {
                    compressed: frame[0] != 0,
                    payload: frame.slice(PREFIX..),
                });
            }
        }
        // A zero-length message completes with its prefix.
        if self.buf.len() == PREFIX && self.declared() == 0 {
            let frame = self.buf.split().freeze();
            out.push(Frame::Message {
                compressed: frame[0] != 0,
                payload: Bytes::new(),
            });
        }
    }

    fn declared(&self) -> usize {
        u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize
    }

    /// A message begun but not finished, if any: (bytes received, bytes
    /// it declared), prefix excluded.
    fn partial(&self) -> Option<(usize, usize)> {
        if self.skip > 0 {
            return Some((self.skipped - self.skip, self.skipped));
        }
        match self.buf.len() {
            0 => None,
            n if n < PREFIX => Some((0, 0)),
            n => Some((n - PREFIX, self.declared())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn messages(frames: &[Frame]) -> Vec<Vec<u8>> {
        frames
            .iter()
            .map(|f| match f {
                Frame::Message { payload, .. } => payload.to_vec(),
                Frame::Skipped { len } => format!("skipped {len}").into_bytes(),
            })
            .collect()
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let mut wire = frame(b"hello");
        wire.extend(frame(b""));
        wire.extend(frame(b"world!"));
        for chunk in 1..wire.len() {
            let mut frames = Frames::default();
            let mut out = Vec::new();
            for piece in wire.chunks(chunk) {
                frames.push(Bytes::copy_from_slice(piece), &mut out);
            }
            assert_eq!(
                messages(&out),
                vec![b"hello".to_vec(), b"".to_vec(), b"world!".to_vec()],
                "chunks of {chunk}"
            );
            assert_eq!(frames.partial(), None);
        }
    }

    #[test]
    fn an_oversized_message_is_passed_over_not_buffered() {
        let mut frames = Frames::default();
        let mut out = Vec::new();
        let len = MAX_DECODED_BYTES + 1;
        let mut prefix = vec![0];
        prefix.extend_from_slice(&(len as u32).to_be_bytes());
        frames.push(Bytes::from(prefix), &mut out);
        frames.push(Bytes::from(vec![0u8; len - 10]), &mut out);
        assert!(out.is_empty());
        assert_eq!(frames.partial(), Some((len - 10, len)));
        assert!(frames.buf.capacity() < 1024);
        let mut rest = vec![0u8; 10];
        rest.extend(frame(b"next"));
        frames.push(Bytes::from(rest), &mut out);
        assert_eq!(
            messages(&out),
            vec![format!("skipped {len}").into_bytes(), b"next".to_vec()]
        );
    }

    #[test]
    fn text_lines_show_call_direction_event_then_fields() {
        let event = Value::object([
            ("call", Value::from(3u64)),
            ("event", Value::from("message")),
            ("direction", Value::from("response")),
            ("n", Value::from(1u64)),
            ("ticket", Value::from("two words")),
            (
                "ipc",
                Value::object([("nodes", Value::Array(vec![Value::from(1u64)]))]),
            ),
            ("progress", Value::Null),
        ]);
        assert_eq!(
            text(&event),
            r#"trace #3 < message n=1 ticket="two words" ipc={nodes=[1]} progress=-"#
        );
    }

    #[test]
    fn keys_from_a_peer_cannot_start_a_new_line() {
        let event = Value::object([
            ("call", Value::from(1u64)),
            ("event", Value::from("message")),
            (
                "metadata",
                Value::object([("x\n2026-12-01T00:00:00Z forged=1", Value::from("v"))]),
            ),
        ]);
        let line = text(&event);
        assert!(!line.contains('\n'), "{line}");
        assert!(
            line.contains(r#"metadata={"x\n2026-12-01T00:00:00Z forged=1"=v}"#),
            "{line}"
        );
    }

    #[test]
    fn only_the_named_rpcs_are_traced() {
        let tracer = Tracer::log(Logger::new(Format::Text), Some(vec!["doget".into()]));
        assert!(tracer.traces("/arrow.flight.protocol.FlightService/DoGet"));
        assert!(!tracer.traces("/arrow.flight.protocol.FlightService/DoPut"));
        assert!(Tracer::stderr(Format::Json).traces("/x/Y"));
    }
}
