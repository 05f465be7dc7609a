//! The request body wrapper: it tells DoPut whether a request stream really
//! ended cleanly (END_STREAM, not a cancel), takes each DoPut message's
//! memory from the budget before the message is read, and caps every other
//! request's size.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tonic::codegen::Body as _;

use crate::budget::{Budget, Grant, Inbound};

/// Whether a request's HTTP/2 body ended cleanly (END_STREAM), as opposed to a
/// cancel (RST_STREAM), which tonic reports to handlers as a normal end.
#[derive(Debug, Clone, Default)]
pub struct CleanEnd(Arc<std::sync::atomic::AtomicBool>);

impl CleanEnd {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Largest request body of any RPC but DoPut (and DoExchange, which is
/// refused anyway): tickets, descriptors, criteria, action bodies and login
/// payloads are small, and capping them here means a caller, authenticated
/// or not, cannot make the server buffer a 64 MiB GetFlightInfo request.
pub const MAX_SMALL_REQUEST_BYTES: usize = 64 * 1024;

/// Where a DoPut body stands in its gRPC framing: each message is a 5-byte
/// prefix (compression flag, big-endian length) and that many bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Framing {
    prefix: [u8; 5],
    /// Bytes of the current prefix seen so far.
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Framing {
    /// Moves over `data`, returning for each message whose prefix completes
    /// in it where that prefix starts in `data` (0 if it began in an earlier
    /// frame) and the message's length.
    fn advance(&mut self, data: &[u8]) -> Vec<(usize, u64)> {
        let mut started = Vec::new();
        let mut at = 0;
        loop {
            let skip = self.remaining.min((data.len() - at) as u64) as usize;
            self.remaining -= skip as u64;
            at += skip;
            if at == data.len() {
                return started;
            }
            let start = if self.have == 0 { at } else { 0 };
            let take = (5 - self.have).min(data.len() - at);
            self.prefix[self.have..self.have + take].copy_from_slice(&data[at..at + take]);
            self.have += take;
            at += take;
            if self.have == 5 {
                let mut length = [0u8; 4];
                length.copy_from_slice(&self.prefix[1..]);
                self.remaining = u64::from(u32::from_be_bytes(length));
                self.have = 0;
                started.push((start, self.remaining));
            }
        }
    }
}

/// A DoPut body's share of the memory budget (see [`Inbound`]).
struct Reserve {
    budget: Budget,
    /// Messages longer than this are left to tonic, which refuses them.
    max_message: u64,
    framing: Framing,
    inbound: Inbound,
    /// tonic's current receive buffer: its length and the grant for it.
    buffer_len: u64,
    buffer: Grant,
    /// Messages whose headers have been admitted.
    admitted: u64,
    /// A frame that starts messages the budget has no room for yet.
    held: Option<http_body::Frame<prost::bytes::Bytes>>,
}

/// How tonic will hold one message that a frame starts.
enum Plan {
    /// In the buffer it has (grown by this many bytes): every earlier
    /// message is consumed, so the buffer is free to reuse.
    Reuse(u64),
    /// In a new buffer of this many bytes, the old one still being held by
    /// earlier messages.
    Fresh(u64),
}

impl Reserve {
    /// How many bytes of `data` come before the first message header it
    /// starts (0 if that header began in an earlier frame).
    fn lead(&self, data: &[u8]) -> usize {
        let mut framing = self.framing;
        framing.advance(data).first().map_or(0, |&(start, _)| start)
    }

    /// Takes from the budget the memory tonic will need for the messages
    /// `frame` starts; on success the frame may go on to tonic.
    fn admit(&mut self, frame: &http_body::Frame<prost::bytes::Bytes>) -> bool {
        let Some(data) = frame.data_ref() else {
            return true;
        };
        let mut framing = self.framing;
        let lengths: Vec<u64> = framing.advance(data).into_iter().map(|(_, l)| l).collect();
        if lengths.is_empty() {
            // Most frames only carry the middle of a message.
            self.framing = framing;
            return true;
        }
        let consumed = self.inbound.consumed();
        let mut buffer_len = self.buffer_len;
        let mut need = 0u64;
        let plans: Vec<Plan> = (self.admitted..)
            .zip(&lengths)
            .map(|(index, &length)| {
                // tonic refuses a message over the limit: nothing to hold.
                let length = if length <= self.max_message {
                    length
                } else {
                    0
                };
                if consumed >= index {
                    let grow = length.saturating_sub(buffer_len);
                    buffer_len = buffer_len.max(length);
                    need += grow;
                    Plan::Reuse(grow)
                } else {
                    buffer_len = length;
                    need += length;
                    Plan::Fresh(length)
                }
            })
            .collect();
        // What this stream already holds never stands in its own way: a
        // message too large for the room beside it goes through once half of
        // that room is free, on what is free (as a batch larger than the
        // whole budget does), rather than wait for the rest of the budget to
        // empty, which other uploads' small buffers may never let happen.
        let room = self.budget.limit().saturating_sub(self.buffer.bytes());
        let want = match need <= room {
            true => need,
            false => match self.budget.free() {
                free if free >= room / 2 => free.min(room),
                _ => return false,
            },
        };
        let mut fresh = match want {
            0 => self.budget.empty(),
            want => match self.budget.try_acquire(want) {
                Some(grant) => grant,
                None => return false,
            },
        };
        let grants: Vec<Grant> = plans
            .into_iter()
            .map(|plan| match plan {
                Plan::Reuse(grow) => {
                    self.buffer.absorb(fresh.split(grow));
                    self.budget.empty()
                }
                Plan::Fresh(length) => std::mem::replace(&mut self.buffer, fresh.split(length)),
            })
            .collect();
        self.admitted += grants.len() as u64;
        self.inbound.arrived(grants);
        self.buffer_len = buffer_len;
        self.framing = framing;
        true
    }
}

/// A request body as the service sees it: it records a clean end of stream,
/// reserves DoPut messages' memory, and fails once a request other than
/// DoPut carries more than `limit` bytes.
struct TrackEnd {
    inner: tonic::body::Body,
    clean: CleanEnd,
    seen: usize,
    limit: Option<usize>,
    reserve: Option<Reserve>,
}

impl TrackEnd {
    /// The next frame from the client, or a frame held back for memory once
    /// the budget has room for it (until then, the client's HTTP/2 window
    /// fills and it stops sending).
    fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<prost::bytes::Bytes>, tonic::Status>>> {
        let Some(reserve) = self.reserve.as_mut() else {
            return Pin::new(&mut self.inner).poll_frame(cx);
        };
        let frame = match reserve.held.take() {
            Some(frame) => frame,
            None => match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => frame,
                other => return other,
            },
        };
        if reserve.admit(&frame) {
            reserve.inbound.set_waiting(false);
            return Poll::Ready(Some(Ok(frame)));
        }
        // Woken when memory is released or the writer consumes a message
        // (after which tonic may reuse its buffer); registered before the
        // second try, so neither is missed.
        reserve.budget.wake_on_release(cx.waker());
        reserve.inbound.wake_when_consumed(cx.waker());
        if reserve.admit(&frame) {
            reserve.inbound.set_waiting(false);
            return Poll::Ready(Some(Ok(frame)));
        }
        // The frame may end one message before it starts the next: that
        // end goes on, so the message it completes can be consumed and its
        // memory returned; only the new message waits.
        if let Some(data) = frame.data_ref() {
            let lead = reserve.lead(data);
            if lead > 0 {
                let mut end = data.clone();
                let start = end.split_off(lead);
                reserve.framing.advance(&end);
                reserve.held = Some(http_body::Frame::data(start));
                return Poll::Ready(Some(Ok(http_body::Frame::data(end))));
            }
        }
        reserve.held = Some(frame);
        reserve.inbound.set_waiting(true);
        Poll::Pending
    }
}

impl tonic::codegen::Body for TrackEnd {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = self.poll_next(cx);
        match &polled {
            Poll::Ready(None) => {
                self.clean
                    .0
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len());
                self.seen = self.seen.saturating_add(len);
                if let Some(limit) = self.limit.filter(|&limit| self.seen > limit) {
                    return Poll::Ready(Some(Err(tonic::Status::resource_exhausted(format!(
                        "request larger than {limit} bytes: only DoPut carries large messages"
                    )))));
                }
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.reserve.as_ref().is_none_or(|r| r.held.is_none()) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps the service so every request carries a [`CleanEnd`] flag, every
/// request but DoPut's is capped at [`MAX_SMALL_REQUEST_BYTES`], and, given a
/// budget, DoPut's messages draw from it (an [`Inbound`] in the request's
/// extensions hands their grants to the handler).
#[derive(Debug, Clone)]
pub struct TrackEndOfStream<S> {
    service: S,
    budget: Option<(Budget, u64)>,
}

impl<S> TrackEndOfStream<S> {
    pub fn new(service: S) -> TrackEndOfStream<S> {
        TrackEndOfStream {
            service,
            budget: None,
        }
    }

    /// DoPut messages up to `max_message` bytes take their memory from
    /// `budget` as they arrive.
    pub fn with_budget(service: S, budget: Budget, max_message: usize) -> TrackEndOfStream<S> {
        TrackEndOfStream {
            service,
            budget: Some((budget, max_message as u64)),
        }
    }
}

impl<S> tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>>
    for TrackEndOfStream<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<tonic::body::Body>) -> S::Future {
        let clean = CleanEnd::default();
        request.extensions_mut().insert(clean.clone());
        let put = request.uri().path().ends_with("/DoPut");
        let limit = (!put).then_some(MAX_SMALL_REQUEST_BYTES);
        let reserve = match (&self.budget, put) {
            (Some((budget, max_message)), true) => {
                let inbound = Inbound::default();
                request.extensions_mut().insert(inbound.clone());
                Some(Reserve {
                    budget: budget.clone(),
                    max_message: *max_message,
                    framing: Framing::default(),
                    inbound,
                    buffer_len: 0,
                    buffer: budget.empty(),
                    admitted: 0,
                    held: None,
                })
            }
            _ => None,
        };
        let request = request.map(|inner| {
            tonic::body::Body::new(TrackEnd {
                inner,
                clean,
                seen: 0,
                limit,
                reserve,
            })
        });
        self.service.call(request)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for TrackEndOfStream<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc_stream(lengths: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        for &length in lengths {
            out.push(0);
            out.extend_from_slice(&length.to_be_bytes());
            out.extend(std::iter::repeat_n(7u8, length as usize));
        }
        out
    }

    #[test]
    fn message_headers_are_found_however_the_stream_is_cut() {
        let lengths = [132u32, 0, 5, 70_000, 1, 16_384];
        let stream = grpc_stream(&lengths);
        for cut in [1usize, 2, 3, 4, 5, 6, 7, 1000, 16_384, stream.len()] {
            let mut framing = Framing::default();
            let found: Vec<u64> = stream
                .chunks(cut)
                .flat_map(|chunk| framing.advance(chunk))
                .map(|(_, length)| length)
                .collect();
            let expected: Vec<u64> = lengths.iter().map(|&l| u64::from(l)).collect();
            assert_eq!(found, expected, "cut into {cut}-byte frames");
            assert_eq!((framing.have, framing.remaining), (0, 0));
        }
    }

    fn reserve(budget: &Budget) -> Reserve {
        Reserve {
            budget: budget.clone(),
            max_message: 1 << 20,
            framing: Framing::default(),
            inbound: Inbound::default(),
            buffer_len: 0,
            buffer: budget.empty(),
            admitted: 0,
            held: None,
        }
    }

    fn frame(bytes: &[u8]) -> http_body::Frame<prost::bytes::Bytes> {
        http_body::Frame::data(prost::bytes::Bytes::copy_from_slice(bytes))
    }

    #[test]
    fn a_message_is_admitted_only_when_the_budget_has_room_for_its_buffer() {
        let budget = Budget::new(1000);
        let mut put = reserve(&budget);
        let stream = grpc_stream(&[600, 600]);
        // The first message's header: 600 bytes of receive buffer.
        assert!(put.admit(&frame(&stream[..10])));
        assert_eq!(budget.used(), 600);
        // Someone else takes 300: the second message, arriving before the
        // writer consumed the first, needs a buffer of its own and waits.
        let other = budget.try_acquire(300).unwrap();
        let second = frame(&stream[10..610]);
        assert!(!put.admit(&second));
        assert_eq!(budget.used(), 900);
        // Once the writer has consumed the first, tonic reuses its buffer:
        // nothing more is needed, and the grant that travelled with the
        // first message is empty.
        put.inbound.next_message();
        put.inbound.consumed_one();
        assert!(put.admit(&second));
        assert_eq!(budget.used(), 900);
        drop(other);
        // A frame that ends one message and starts another: only the part
        // from the new header on has to wait.
        let third = grpc_stream(&[600, 600, 600]);
        let mut split = reserve(&budget);
        split.framing.advance(&third[..10]);
        assert_eq!(split.lead(&third[10..700]), 605 - 10);
        // A header begun in an earlier frame: nothing before it to let go.
        split.framing.advance(&third[10..607]);
        assert_eq!(split.lead(&third[607..700]), 0);
        // The buffer is returned with the stream.
        drop(put);
        assert_eq!(budget.used(), 0);
    }
}
