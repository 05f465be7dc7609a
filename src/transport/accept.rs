//! The accept loop: every TCP connection either gets a `--max-connections`
//! slot and (for TLS) a handshake bounded by `--handshake-timeout`, or is
//! refused with a connection line saying why. Handshakes run on their own
//! tasks, so a slow or silent client never holds up the next one.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;

use super::tls;
use super::tracked::{seconds, Opened, Tracked};
use crate::log::{ConnectionLog, Ended};

/// How connections are accepted.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Open connections at once (`--max-connections`).
    pub max_connections: usize,
    /// From accept to a finished TLS handshake and HTTP/2 preface
    /// (`--handshake-timeout`).
    pub handshake_timeout: Duration,
}

/// Plaintext connections, ready for tonic.
pub fn incoming_plain(
    listener: TcpListener,
    settings: Settings,
    log: ConnectionLog,
) -> ReceiverStream<io::Result<Tracked<TcpStream>>> {
    accept(listener, settings, false, log, |tcp| async move {
        Ok((tcp, None))
    })
}

/// TLS connections with their handshake done, ready for tonic (which sees
/// the client certificate through `TlsStream`'s connect info).
pub fn incoming_tls(
    listener: TcpListener,
    settings: Settings,
    log: ConnectionLog,
    config: Arc<ServerConfig>,
) -> ReceiverStream<io::Result<Tracked<TlsStream<TcpStream>>>> {
    let acceptor = TlsAcceptor::from(config);
    accept(listener, settings, true, log, move |tcp| {
        tls::handshake(acceptor.clone(), tcp)
    })
}

/// Accepts connections while fewer than `max_connections` are open; past
/// that, new ones are refused at once (the client sees Unavailable) instead
/// of queueing. `upgrade` turns a TCP stream into what tonic serves, and
/// the subject of the client's certificate; or says why it refused.
fn accept<IO, F, Fut>(
    listener: TcpListener,
    settings: Settings,
    tls: bool,
    log: ConnectionLog,
    upgrade: F,
) -> ReceiverStream<io::Result<Tracked<IO>>>
where
    IO: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(IO, Option<String>), String>> + Send + 'static,
{
    let max = settings.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusals = Arc::new(Semaphore::new(64));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                // The server stopped listening: stop accepting too.
                () = tx.closed() => return,
            };
            let opened = Instant::now();
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off briefly.
                    log.event(&format!("accept failed: {err}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                log.ended(Ended::refused(
                    peer,
                    opened.elapsed(),
                    format!("refused: --max-connections {max} reached"),
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
            tokio::spawn(establish(
                upgrade(stream),
                Start {
                    peer,
                    opened,
                    permit,
                    timeout: settings.handshake_timeout,
                    tls,
                },
                log.clone(),
                tx.clone(),
            ));
        }
    });
    ReceiverStream::new(rx)
}

/// A connection that has a slot but no handshake yet.
struct Start {
    peer: SocketAddr,
    opened: Instant,
    permit: OwnedSemaphorePermit,
    timeout: Duration,
    tls: bool,
}

/// Finishes the handshake within the deadline and hands the connection to
/// tonic, or logs why it was refused (the slot is freed either way).
async fn establish<IO>(
    handshake: impl Future<Output = Result<(IO, Option<String>), String>>,
    start: Start,
    log: ConnectionLog,
    tx: tokio::sync::mpsc::Sender<io::Result<Tracked<IO>>>,
) {
    let deadline = start.opened + start.timeout;
    let (io, cert) = match tokio::time::timeout_at(deadline.into(), handshake).await {
        Ok(Ok(established)) => established,
        Ok(Err(reason)) => {
            log.ended(Ended::refused(start.peer, start.opened.elapsed(), reason));
            return;
        }
        Err(_) => {
            let reason = format!("tls: no handshake within {}", seconds(start.timeout));
            log.ended(Ended::refused(start.peer, start.opened.elapsed(), reason));
            return;
        }
    };
    log.opened(start.peer, start.tls, cert.as_deref());
    let tracked = Tracked::new(
        io,
        Opened {
            peer: start.peer,
            opened: start.opened,
            deadline,
            timeout: start.timeout,
            cert,
            permit: start.permit,
        },
        log,
    );
    // A failed send means the server is stopping; the connection's line
    // then says "closed by the server".
    let _ = tx.send(Ok(tracked)).await;
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
