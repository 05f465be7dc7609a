//! What sits between the socket and the Flight service: the connection limit
//! (`--max-connections`, with a polite HTTP/2 refusal past it) and the body
//! wrapper that tells DoPut whether a request stream really ended cleanly.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::log::Logger;

/// Accepts connections while fewer than `max` are open; past that, new ones are
/// closed at once (the client sees Unavailable) instead of queueing.
pub fn limit_connections(
    listener: TcpListener,
    max: usize,
    log: Logger,
) -> ReceiverStream<io::Result<Limited>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    let refusals = Arc::new(Semaphore::new(64));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped listening: stop accepting too.
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly.
                    log.event(&format!("accept failed: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                let peer = stream
                    .peer_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                log.event(&format!(
                    "refusing connection from {peer}: --max-connections ({max}) reached"
                ));
                // Answer in HTTP/2 so clients see UNAVAILABLE (retry later), not
                // a reset; a bounded number of refusals at a time, each bounded in time.
                if let Ok(refusal) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream).await;
                        drop(refusal);
                    });
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            if tx
                .send(Ok(Limited {
                    stream,
                    _permit: permit,
                }))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Serves an over-limit connection just long enough to refuse its calls with
/// REFUSED_STREAM, which gRPC clients report as UNAVAILABLE.
async fn refuse(stream: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async move {
        let Ok(mut connection) = h2::server::handshake(stream).await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
            connection.graceful_shutdown();
        }
    })
    .await;
}

/// A connection holding one of the `--max-connections` slots until it closes.
pub struct Limited {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for Limited {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

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
