//! The request body wrapper: it tells DoPut whether a request stream really
//! ended cleanly (END_STREAM, not a cancel) and caps every other request's size.

use std::pin::Pin;
use std::sync::Arc;

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

/// A request body as the service sees it: it records a clean end of stream,
/// and fails once it carries more than `limit` bytes.
struct TrackEnd {
    inner: tonic::body::Body,
    clean: CleanEnd,
    seen: usize,
    limit: Option<usize>,
}

impl tonic::codegen::Body for TrackEnd {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            std::task::Poll::Ready(None) => {
                self.clean
                    .0
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            std::task::Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len());
                self.seen = self.seen.saturating_add(len);
                if let Some(limit) = self.limit.filter(|&limit| self.seen > limit) {
                    return std::task::Poll::Ready(Some(Err(tonic::Status::resource_exhausted(
                        format!(
                            "request larger than {limit} bytes: only DoPut carries large messages"
                        ),
                    ))));
                }
            }
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

/// Wraps the service so every request carries a [`CleanEnd`] flag and every
/// request but DoPut's is capped at [`MAX_SMALL_REQUEST_BYTES`].
#[derive(Debug, Clone)]
pub struct TrackEndOfStream<S>(S);

impl<S> TrackEndOfStream<S> {
    pub fn new(service: S) -> TrackEndOfStream<S> {
        TrackEndOfStream(service)
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
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: tonic::codegen::http::Request<tonic::body::Body>) -> S::Future {
        let clean = CleanEnd::default();
        request.extensions_mut().insert(clean.clone());
        let limit = (!request.uri().path().ends_with("/DoPut")).then_some(MAX_SMALL_REQUEST_BYTES);
        let request = request.map(|inner| {
            tonic::body::Body::new(TrackEnd {
                inner,
                clean,
                seen: 0,
                limit,
            })
        });
        self.0.call(request)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for TrackEndOfStream<S> {
    const NAME: &'static str = S::NAME;
}
