//! What sits between the socket and the Flight service.
//!
//! - [`accept`]: the accept loop, the connection limit (`--max-connections`,
//!   with a polite HTTP/2 refusal past it) and the bounded handshake time.
//! - [`tls`]: TLS done here rather than inside tonic, so a refused handshake
//!   (no client certificate, a certificate from another CA, plaintext on the
//!   TLS port) is logged with a reason a person can act on.
//! - [`tracked`]: the per-connection I/O wrapper that counts calls and bytes,
//!   enforces the HTTP/2 preface deadline, and logs the connection's end.
//! - [`body`]: the request body wrapper that tells DoPut whether a request
//!   stream really ended cleanly, and caps the size of every other request.

mod accept;
mod body;
mod tls;
mod tracked;

pub use accept::{incoming_plain, incoming_tls, Settings};
pub use body::{CleanEnd, TrackEndOfStream, MAX_SMALL_REQUEST_BYTES};
pub use tls::server_config;
pub use tracked::Tracked;

/// The client's address, and whether its connection is TLS, as tonic records
/// them on each request that came through our accept path.
pub fn peer(extensions: &tonic::Extensions) -> (Option<std::net::SocketAddr>, bool) {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    if let Some(info) = extensions.get::<TcpConnectInfo>() {
        return (info.remote_addr(), false);
    }
    if let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() {
        return (info.get_ref().remote_addr(), true);
    }
    (None, false)
}

/// The future of a service wrapper that does its own work around the inner
/// call (trace, discovery's slots): one boxed type for all of them.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;
