//! Wiring: bind the socket, serve the Flight service, shut down gracefully.
//!
//! Shutdown follows mini-redis: when the shutdown future resolves the server
//! stops accepting, running calls get a grace period to finish, then leftover
//! temporary upload files are removed and [`run`] returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tonic::transport::Server;

use crate::auth::Authenticator;
use crate::discovery::Discovery;
use crate::error::{Error, Result};
use crate::log::{ConnectionLog, Format, Logger};
use crate::nodes::Nodes;
use crate::service::{Hangar, Limits};
use crate::store::{Codec, Store};
use crate::trace::{Traced, Tracer};
use crate::transport::TrackEndOfStream;

/// Everything `hangar serve` is configured with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub repo: String,
    pub codec: Codec,
    pub limits: Limits,
    pub log_format: Format,
    /// How long running calls may take to finish after shutdown begins.
    pub grace: Duration,
    /// Users file (`--users`): when set, every RPC but Handshake needs a token.
    pub users: Option<PathBuf>,
    /// Lifetime of issued tokens (`--token-ttl`).
    pub token_ttl: Duration,
    /// Sign tokens with the secret in this file (`--token-secret`), so every
    /// node with the same users file and secret accepts them.
    pub token_secret: Option<PathBuf>,
    /// TLS certificate and key (`--tls-cert`, `--tls-key`), and the CA that
    /// client certificates must chain to (`--tls-client-ca`, mTLS).
    pub tls: Option<TlsFiles>,
    /// Refuse uploads whose Parquet file would exceed this (`--max-dataset-bytes`).
    pub max_dataset_bytes: Option<u64>,
    /// Open connections at once (`--max-connections`); more are closed at once.
    pub max_connections: usize,
    /// From accept to a finished TLS handshake and HTTP/2 preface
    /// (`--handshake-timeout`); slower connections are closed and logged.
    pub handshake_timeout: Duration,
    /// Log every connection's open and end, not only refusals
    /// (`--log-connections`).
    pub log_connections: bool,
    /// This node's address as clients reach it (`--advertise`); by default
    /// the address it listens on.
    pub advertise: Option<String>,
    /// The other nodes serving the same repository (`--peer`), and a file
    /// naming more, re-read on SIGHUP (`--peers`).
    pub peers: Vec<String>,
    pub peers_file: Option<PathBuf>,
    /// Trace every gRPC event into the log (`--trace`): all calls
    /// (`Some(None)`) or those of the RPCs named (`--trace=DoGet,DoPut`).
    pub trace: Option<Option<Vec<String>>>,
    /// Serve gRPC server reflection (off with `--no-reflection`).
    pub reflection: bool,
    /// Serve the standard gRPC health service (off with `--no-health`).
    pub health: bool,
}

/// Largest header block a client may send; Flight headers are tiny, so this
/// only stops abuse.
const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// PEM files for TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn server_config(&self) -> Result<Arc<ServerConfig>> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| Error::io(format!("reading {what} {}", path.display()), e))
        };
        let client_ca = match &self.client_ca {
            Some(ca) => Some(read(ca, "--tls-client-ca")?),
            None => None,
        };
        crate::transport::server_config(
            &read(&self.cert, "--tls-cert")?,
            &read(&self.key, "--tls-key")?,
            client_ca.as_deref(),
        )
        .map_err(Error::InvalidArgument)
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8815)),
            repo: "./datasets".to_string(),
            codec: Codec::Snappy,
            limits: Limits::default(),
            log_format: Format::Text,
            grace: Duration::from_secs(5),
            users: None,
            token_ttl: Duration::from_secs(12 * 3600),
            token_secret: None,
            tls: None,
            max_dataset_bytes: None,
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(10),
            log_connections: false,
            advertise: None,
            peers: Vec::new(),
            peers_file: None,
            trace: None,
            reflection: true,
            health: true,
        }
    }
}

/// A bound, not yet serving, server: binding first lets the caller learn the
/// real port (for `--listen 127.0.0.1:0`) before anything is accepted.
pub struct Bound {
    listener: TcpListener,
    config: Config,
    store: Arc<Store>,
    auth: Option<Arc<Authenticator>>,
    tls: Option<Arc<ServerConfig>>,
    nodes: Option<Arc<Nodes>>,
    /// Registered before the listening line, so an early SIGHUP cannot kill us.
    hangups: Option<tokio::signal::unix::Signal>,
}

impl Bound {
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(|e| Error::io("reading the listening address", e))
    }

    /// The address clients use, e.g. `grpc://127.0.0.1:8815`.
    pub fn uri(&self) -> Result<String> {
        let scheme = if self.config.tls.is_some() {
            "grpc+tls"
        } else {
            "grpc"
        };
        Ok(format!("{scheme}://{}", self.local_addr()?))
    }
}

/// Binds the listening socket and does every fallible step of setup (open the
/// repository, load the users file, read the TLS files), so that once this
/// returns, the server will serve: the caller may announce it.
pub async fn bind(config: Config) -> Result<Bound> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {}", config.listen), e))?;
    let store = {
        let (repo, codec, max) = (config.repo.clone(), config.codec, config.max_dataset_bytes);
        // Opening a bucket blocks on its first listing.
        tokio::task::spawn_blocking(move || Store::open_repo(&repo, codec, max))
            .await
            .map_err(|e| Error::Internal(format!("opening the repository: {e}")))??
    };
    let auth = match &config.users {
        Some(path) => {
            let auth = Authenticator::open(path, config.token_ttl)?;
            Some(Arc::new(match &config.token_secret {
                Some(secret) => auth.with_secret(crate::auth::signed::Secret::read(secret)?),
                None => auth,
            }))
        }
        None => None,
    };
    let tls = config
        .tls
        .as_ref()
        .map(TlsFiles::server_config)
        .transpose()?;
    let nodes = nodes(&config, &listener)?;
    ignore_file_size_signal()?;
    let reloads = auth.is_some() || nodes.as_ref().is_some_and(|n| n.has_file());
    let hangups = match reloads {
        true => Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| Error::io("listening for SIGHUP", e))?,
        ),
        false => None,
    };
    Ok(Bound {
        listener,
        config,
        store,
        auth,
        tls,
        nodes,
        hangups,
    })
}

/// Serves until `shutdown` resolves, then drains and cleans up.
pub async fn run(bound: Bound, shutdown: impl Future<Output = ()>) -> Result<()> {
    let Bound {
        listener,
        config,
        store,
        auth,
        tls,
        nodes,
        hangups,
    } = bound;
    let log = Logger::new(config.log_format);
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    let mut service = Hangar::new(store.clone(), log, config.limits.clone());
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    if let Some(hangups) = hangups {
        spawn_reload_on_hangup(hangups, auth.clone(), nodes.clone(), log);
    }
    if let Some(nodes) = &nodes {
        service = service.with_nodes(nodes.clone());
    }
    let access = match (auth, &config.users) {
        (Some(auth), Some(path)) => {
            service = service.with_auth(auth);
            format!("users from {}", path.display())
        }
        _ => "no authentication: every client may read, write and drop".to_string(),
    };
    log.event(&format!(
        "serving repository {} on {scheme}://{addr} ({access})",
        store.location()
    ));
    let connections = ConnectionLog::new(log, config.log_connections);
    let flusher = connections.spawn_flusher();
    let settings = crate::transport::Settings {
        max_connections: config.max_connections,
        handshake_timeout: config.handshake_timeout,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = stop_rx.await;
    };
    let discovery = Discovery::default();
    let tracer = config.trace.clone().map(|only| Tracer::log(log, only));
    let (reflection_v1, reflection_v1alpha) = match config.reflection {
        true => {
            let (v1, v1alpha) = discovery.reflection(config.health)?;
            (Some(wrap(v1, &tracer)), Some(wrap(v1alpha, &tracer)))
        }
        false => (None, None),
    };
    let abandon = service.clone();
    let router = Server::builder()
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        // tonic lifts HTTP/2's stream limit by default: without one, a single
        // connection could open streams without end. A client past it waits
        // for a stream to end (SETTINGS_MAX_CONCURRENT_STREAMS), it is not
        // refused.
        .max_concurrent_streams(Some(
            config
                .limits
                .max_concurrent_calls
                .clamp(1, u32::MAX as usize) as u32,
        ))
        .add_service(Traced::server(service.into_server(), tracer.clone()))
        .add_optional_service(config.health.then(|| wrap(discovery.health(), &tracer)))
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha);
    // TLS is done in our accept path (transport::tls), not by tonic, so
    // refused handshakes are logged; the two kinds of connection are two
    // types, hence two instances of tonic's serve loop.
    type Serving =
        std::pin::Pin<Box<dyn Future<Output = std::result::Result<(), tonic::transport::Error>>>>;
    let mut serve: Serving = match tls {
        Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
            crate::transport::incoming_tls(listener, settings, connections.clone(), tls),
            stop,
        )),
        None => Box::pin(router.serve_with_incoming_shutdown(
            crate::transport::incoming_plain(listener, settings, connections.clone()),
            stop,
        )),
    };
    discovery.serving().await;
    let served = tokio::select! {
        result = &mut serve => result,
        () = shutdown => {
            discovery.shutting_down().await;
            log.event("shutting down: no new connections, running calls may finish");
            let _ = stop_tx.send(());
            match tokio::time::timeout(config.grace, &mut serve).await {
                Ok(result) => result,
                Err(_) => {
                    log.event("grace period over: abandoning calls still running");
                    abandon.abandon_uploads();
                    Ok(())
                }
            }
        }
    };
    flusher.abort();
    connections.flush_all();
    // Blocking: a bucket waits here for abandoned uploads' aborts.
    let sweeping = store.clone();
    let removed = tokio::task::spawn_blocking(move || sweeping.sweep_temporary_files())
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or(0);
    if removed > 0 {
        log.event(&format!(
            "removed {removed} unfinished upload(s) (temporary files, or multipart uploads aborted)"
        ));
    }
    log.event("stopped");
    served.map_err(|e| Error::Internal(format!("server failed: {e}")))
}

/// A service as the router gets it: traced outermost (the tracer sees the
/// bytes as they cross the wire), then the request caps.
fn wrap<S>(service: S, tracer: &Option<Arc<Tracer>>) -> Traced<TrackEndOfStream<S>> {
    Traced::server(TrackEndOfStream::new(service), tracer.clone())
}

/// The nodes list, when this node has peers (`--peer`, `--peers`).
fn nodes(config: &Config, listener: &TcpListener) -> Result<Option<Arc<Nodes>>> {
    if config.peers.is_empty() && config.peers_file.is_none() {
        return Ok(None);
    }
    let advertise = match &config.advertise {
        Some(uri) => uri.clone(),
        None => {
            let addr = listener
                .local_addr()
                .map_err(|e| Error::io("reading the listening address", e))?;
            if addr.ip().is_unspecified() {
                return Err(Error::InvalidArgument(format!(
                    "--peer/--peers need --advertise URI: listening on {addr} does not say \
                     how clients reach this node"
                )));
            }
            if config.tls.is_some() {
                return Err(Error::InvalidArgument(
                    "--peer/--peers with TLS need --advertise grpc+tls://HOST:PORT: clients \
                     check the host name the certificate names, not this node's IP address"
                        .into(),
                ));
            }
            let scheme = if config.tls.is_some() {
                "grpc+tls"
            } else {
                "grpc"
            };
            format!("{scheme}://{addr}")
        }
    };
    let nodes = Nodes::new(advertise, config.peers.clone(), config.peers_file.clone())?;
    Ok(Some(Arc::new(nodes)))
}

/// Re-reads the users file and the peers file on SIGHUP, so removed users
/// lose access and new nodes are named without a restart. A file that fails
/// to load keeps its previous content in force.
fn spawn_reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    auth: Option<Arc<Authenticator>>,
    nodes: Option<Arc<Nodes>>,
    log: Logger,
) {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Some(auth) = auth.clone() {
                match tokio::task::spawn_blocking(move || auth.reload()).await {
                    Ok(Ok(count)) => {
                        log.event(&format!("SIGHUP: reloaded users file ({count} users)"))
                    }
                    Ok(Err(err)) => log.event(&format!(
                        "SIGHUP: users file not reloaded, keeping the previous users: {err}"
                    )),
                    Err(err) => log.event(&format!("SIGHUP: reload failed: {err}")),
                }
            }
            if let Some(nodes) = nodes.clone().filter(|n| n.has_file()) {
                match tokio::task::spawn_blocking(move || nodes.reload()).await {
                    Ok(Ok(count)) => {
                        log.event(&format!("SIGHUP: reloaded peers file ({count} nodes)"))
                    }
                    Ok(Err(err)) => log.event(&format!(
                        "SIGHUP: peers file not reloaded, keeping the previous nodes: {err}"
                    )),
                    Err(err) => log.event(&format!("SIGHUP: reload failed: {err}")),
                }
            }
        }
    });
}

/// With a file size limit (`ulimit -f`, RLIMIT_FSIZE) the kernel kills a process
/// that writes past it with SIGXFSZ. Catching the signal turns that into an
/// EFBIG write error instead, which fails just the upload (RESOURCE_EXHAUSTED)
/// while the server keeps serving.
fn ignore_file_size_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut signals = signal(SignalKind::from_raw(libc::SIGXFSZ))
        .map_err(|e| Error::io("installing the SIGXFSZ handler", e))?;
    tokio::spawn(async move { while signals.recv().await.is_some() {} });
    Ok(())
}
