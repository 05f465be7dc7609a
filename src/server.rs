//! Wiring: bind the socket, serve the Flight service, shut down gracefully.
//!
//! Shutdown follows mini-redis: when the shutdown future resolves the server
//! stops accepting, running calls get a grace period to finish, then leftover
//! temporary upload files are removed and [`run`] returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

use crate::error::{Error, Result};
use crate::log::{Format, Logger};
use crate::service::{Hangar, Limits};
use crate::store::{Codec, Store};

/// Everything `hangar serve` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub repo: PathBuf,
    pub codec: Codec,
    pub limits: Limits,
    pub log_format: Format,
    /// How long running calls may take to finish after shutdown begins.
    pub grace: Duration,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8815)),
            repo: PathBuf::from("./datasets"),
            codec: Codec::Snappy,
            limits: Limits::default(),
            log_format: Format::Text,
            grace: Duration::from_secs(5),
        }
    }
}

/// A bound, not yet serving, server: binding first lets the caller learn the
/// real port (for `--listen 127.0.0.1:0`) before anything is accepted.
pub struct Bound {
    listener: TcpListener,
    config: Config,
}

impl Bound {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))
    }

    /// The address clients use, e.g. `grpc://127.0.0.1:8815`.
    pub fn uri(&self) -> Result<String> {
        Ok(format!("grpc://{}", self.local_addr()?))
    }
}

/// Binds the listening socket.
pub async fn bind(config: Config) -> Result<Bound> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", config.listen), e))?;
    Ok(Bound { listener, config })
}

/// Serves until `shutdown` resolves, then drains and cleans up.
pub async fn run(bound: Bound, shutdown: impl Future<Output = ()>) -> Result<()> {
    let Bound { listener, config } = bound;
    let log = Logger::new(config.log_format);
    let store = Store::open(&config.repo, config.codec)?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    log.event(&format!(
        "serving repository {} on grpc://{addr} (no authentication: every client may read, write and drop)",
        store.root().display()
    ));
    let service = Hangar::new(store.clone(), log, config.limits.clone()).into_server();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serve = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    tokio::pin!(serve);
    let served = tokio::select! {
        result = &mut serve => result,
        () = shutdown => {
            log.event("shutting down: no new connections, running calls may finish");
            let _ = stop_tx.send(());
            match tokio::time::timeout(config.grace, &mut serve).await {
                Ok(result) => result,
                Err(_) => {
                    log.event("grace period over: abandoning calls still running");
                    Ok(())
                }
            }
        }
    };
    let removed = store.sweep_temporary_files().unwrap_or(0);
    if removed > 0 {
        log.event(&format!("removed {removed} temporary upload file(s)"));
    }
    log.event("stopped");
    served.map_err(|e| Error::Internal(format!("server failed: {e}")))
}
