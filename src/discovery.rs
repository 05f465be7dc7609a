//! What generic gRPC tools see besides Flight: server reflection (so
//! `grpcurl list` and `describe` work with no proto file at hand) and the
//! standard health service (for supervisors and load balancers).
//!
//! Both answer without credentials and know nothing about datasets: reflection
//! serves the compiled-in descriptors of `Flight.proto` (and of the reflection
//! service itself), health serves one status per service name. Both keep
//! streams open as long as a client likes (reflection is a bidirectional
//! stream, health's `Watch` never ends by itself), so every such stream holds
//! one of [`MAX_OPEN_CALLS`] slots, and one of its address's
//! [`MAX_OPEN_CALLS_PER_PEER`], until its response ends: an anonymous peer
//! cannot pile up watchers, nor starve others of them. A health `Check` is
//! never refused for want of a slot.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::Service;
use tonic::server::NamedService;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use crate::proto::FlightServiceServer;

/// Reflection and health streams open at once, server-wide...
pub const MAX_OPEN_CALLS: usize = 64;
/// ...and from one client address, so one peer cannot take every slot.
pub const MAX_OPEN_CALLS_PER_PEER: usize = 8;

/// Health's one unary RPC: it ends at once, so it takes no slot, and a
/// supervisor's probe is answered even while every slot is taken.
const CHECK: &str = "/grpc.health.v1.Health/Check";

/// The service name of Flight in the health service (`grpc.health.v1`), as
/// supervisors ask for it; "" is the whole server.
pub const FLIGHT_SERVICE: &str =
    <FlightServiceServer<crate::service::Hangar> as NamedService>::NAME;

/// The two services and what they share: the call slots, the health
/// statuses, and the signal that ends their open streams at shutdown.
pub struct Discovery {
    slots: Arc<Semaphore>,
    per_peer: PerPeer,
    closing: watch::Sender<bool>,
    reporter: HealthReporter,
}

impl Default for Discovery {
    fn default() -> Discovery {
        Discovery {
            slots: Arc::new(Semaphore::new(MAX_OPEN_CALLS)),
            per_peer: PerPeer::default(),
            closing: watch::Sender::new(false),
            reporter: HealthReporter::new(),
        }
    }
}

impl Discovery {
    /// The health service, reporting this server's statuses.
    pub fn health(&self) -> Bounded<HealthServer<HealthService>> {
        let service = HealthService::from_health_reporter(self.reporter.clone());
        self.bounded(HealthServer::new(service))
    }

    /// Reflection, in both versions tools ask for: v1 (grpcurl and grpcio
    /// try it first) and v1alpha (older tools only know it). It describes
    /// Flight, reflection itself and, when served, health.
    pub fn reflection(&self, with_health: bool) -> crate::Result<(impl Served, impl Served)> {
        let builder = || {
            // Each version describes itself only; both are served, so each
            // lists the other too.
            let builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .include_reflection_service(false);
            match with_health {
                true => builder
                    .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
                false => builder,
            }
        };
        let failed = |e: tonic_reflection::server::Error| {
            crate::Error::Internal(format!("building the reflection service: {e}"))
        };
        let v1 = builder().build_v1().map_err(failed)?;
        let v1alpha = builder().build_v1alpha().map_err(failed)?;
        Ok((self.bounded(v1), self.bounded(v1alpha)))
    }

    /// SERVING for the whole server and for Flight, once the repository is
    /// open.
    pub async fn serving(&self) {
        self.set(ServingStatus::Serving).await;
    }

    /// NOT_SERVING for the whole server and for Flight, so balancers stop
    /// sending new calls while running ones finish; then the open reflection
    /// and health streams end (a `Watch` after it has delivered NOT_SERVING),
    /// so they do not hold the shutdown for the whole grace period.
    pub async fn shutting_down(&self) {
        self.set(ServingStatus::NotServing).await;
        self.closing.send_replace(true);
    }

    async fn set(&self, status: ServingStatus) {
        for name in ["", FLIGHT_SERVICE] {
            self.reporter.set_service_status(name, status).await;
        }
    }

    fn bounded<S>(&self, inner: S) -> Bounded<S> {
        Bounded {
            inner,
            slots: self.slots.clone(),
            per_peer: self.per_peer.clone(),
            closing: self.closing.subscribe(),
        }
    }
}

/// What the router takes as a service, with every bound spelled out (an
/// `impl Service` alone would hide that its futures are `Send`).
pub trait Served:
    Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
    + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Served for T where
    T: Service<
            Request<Body>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// The address a per-peer limit counts by: an IPv4 address, or an IPv6
/// host's /64 (one host usually holds the whole /64, so counting single
/// addresses would let it take every slot).
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// Open streams per client address.
#[derive(Clone, Default)]
struct PerPeer(Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>);

impl PerPeer {
    fn take(&self, ip: IpAddr) -> Option<PeerSlot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(ip).or_insert(0);
        if *count >= MAX_OPEN_CALLS_PER_PEER {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            ip,
            table: self.clone(),
        })
    }
}

/// One open stream of one address; the count drops with it.
struct PeerSlot {
    ip: IpAddr,
    table: PerPeer,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The slots one call holds until its response ends.
struct Slot {
    _global: OwnedSemaphorePermit,
    _peer: Option<PeerSlot>,
}

/// A service whose streaming calls each hold a slot of a shared semaphore,
/// and one of their peer's, until their response body ends or is dropped;
/// with none free, a call is answered RESOURCE_EXHAUSTED at once.
#[derive(Clone)]
pub struct Bounded<S> {
    inner: S,
    slots: Arc<Semaphore>,
    per_peer: PerPeer,
    closing: watch::Receiver<bool>,
}

impl<S> Bounded<S> {
    fn slot(&self, request: &Request<Body>) -> Result<Option<Slot>, tonic::Status> {
        if request.uri().path() == CHECK {
            return Ok(None);
        }
        let peer = match crate::transport::peer(request.extensions()).0 {
            Some(addr) => match self.per_peer.take(peer_key(addr.ip())) {
                Some(slot) => Some(slot),
                None => {
                    return Err(tonic::Status::resource_exhausted(format!(
                        "{MAX_OPEN_CALLS_PER_PEER} reflection and health streams are already \
                         open from {}; close one (e.g. a health Watch) and retry",
                        peer_key(addr.ip())
                    )))
                }
            },
            None => None,
        };
        let global = self.slots.clone().try_acquire_owned().map_err(|_| {
            tonic::Status::resource_exhausted(format!(
                "{MAX_OPEN_CALLS} reflection and health streams are already open; \
                 close one (e.g. a health Watch) and retry"
            ))
        })?;
        Ok(Some(Slot {
            _global: global,
            _peer: peer,
        }))
    }
}

impl<S: NamedService> NamedService for Bounded<S> {
    const NAME: &'static str = S::NAME;
}

use crate::transport::BoxFuture;

impl<S> Service<Request<Body>> for Bounded<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let permit = match self.slot(&request) {
            Ok(permit) => permit,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let response = self.inner.call(request);
        let mut closing = self.closing.clone();
        Box::pin(async move {
            let response = response.await?;
            let closed = Box::pin(async move {
                let _ = closing.wait_for(|closing| *closing).await;
            });
            Ok(response.map(|body| {
                Body::new(Holding {
                    body,
                    closed: Some(closed),
                    ended: false,
                    _permit: permit,
                })
            }))
        })
    }
}

/// A response body that keeps its call's slot until it is done, and ends
/// (status OK) once shutdown begins and it has nothing left to send.
struct Holding {
    body: Body,
    /// Resolves when shutdown begins; `None` once it has.
    closed: Option<BoxFuture<()>>,
    /// The trailers that end the stream at shutdown have been sent.
    ended: bool,
    _permit: Option<Slot>,
}

impl tonic::codegen::Body for Holding {
    type Data = prost::bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if polled.is_pending() {
            let shutting_down = match self.closed.as_mut() {
                Some(closed) => closed.as_mut().poll(cx).is_ready(),
                None => true,
            };
            if shutting_down {
                self.closed = None;
                self.ended = true;
                let mut trailers = tonic::codegen::http::HeaderMap::new();
                trailers.insert(
                    "grpc-status",
                    tonic::codegen::http::HeaderValue::from_static("0"),
                );
                return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_peers_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(other));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(peer_key(mapped), "127.0.0.2".parse::<IpAddr>().unwrap());
        let table = PerPeer::default();
        let slots: Vec<PeerSlot> = (0..MAX_OPEN_CALLS_PER_PEER)
            .map(|_| table.take(peer_key(a)).unwrap())
            .collect();
        assert!(table.take(peer_key(b)).is_none());
        drop(slots);
        assert!(table.take(peer_key(b)).is_some());
    }
}
