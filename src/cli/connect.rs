//! Reaching a Flight server: the `--server` URI, TLS and mTLS, the Basic→Bearer
//! handshake, and one gRPC client per location, all with the same options.
//!
//! The handshake follows pyarrow's `authenticate_basic_token` (the cookbook's
//! auth recipe): Handshake carries `authorization: Basic base64(user:password)`,
//! and the server answers with `authorization: Bearer <token>` in its headers
//! (or trailers, or the response payload). Every later call carries that header.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tonic::codegen::tokio_stream;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Request, Status};

use super::Failure;
use crate::log::Format;
use crate::proto::{FlightServiceClient, HandshakeRequest, Location};
use crate::trace::{Traced, Tracer};

/// The server used when neither `--server` nor `HANGAR_SERVER` says otherwise.
pub const DEFAULT_SERVER: &str = "grpc://127.0.0.1:8815";

/// Largest message accepted from a server unless `--max-message-size` says
/// otherwise: servers send batches of any size, and a refusal mid-download helps
/// nobody.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// A gRPC client that adds the `authorization` header to every call, and
/// traces every call when `--trace` asks for it.
pub type Client = FlightServiceClient<InterceptedService<Traced<Channel>, Authorization>>;

/// A Flight location we can connect to: `grpc://HOST:PORT` or `grpc+tls://HOST:PORT`
/// (`grpc+tcp://` is accepted as a synonym of `grpc://`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerUri {
    pub tls: bool,
    /// Host name or IP address; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
}

impl ServerUri {
    /// Parses a Flight URI; the error says which part is wrong.
    pub fn parse(text: &str) -> Result<ServerUri, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("'{text}' is not a URI like grpc://HOST:PORT"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "grpc" | "grpc+tcp" => false,
            "grpc+tls" => true,
            other => {
                return Err(format!(
                    "unsupported scheme '{other}' in '{text}' (expected grpc:// or grpc+tls://)"
                ))
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('/') || authority.contains('@') {
            return Err(format!(
                "'{text}' must be SCHEME://HOST:PORT, without a path or user"
            ));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, port) = v6
                .split_once(']')
                .ok_or_else(|| format!("unclosed '[' in '{text}'"))?;
            (host, port.strip_prefix(':').unwrap_or(port))
        } else {
            authority.rsplit_once(':').unwrap_or((authority, ""))
        };
        if host.is_empty() {
            return Err(format!("'{text}' has no host"));
        }
        if port.is_empty() {
            return Err(format!(
                "'{text}' has no port (e.g. {scheme}://{host}:8815)"
            ));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid port '{port}' in '{text}'"))?;
        Ok(ServerUri {
            tls,
            host: host.to_string(),
            port,
        })
    }

    /// True for `0.0.0.0` and `::`: a server that advertises the address it
    /// binds to (the cookbook does) means "here", not a host to dial.
    pub fn is_unspecified(&self) -> bool {
        self.host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    }

    fn http_uri(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "grpc+tls" } else { "grpc" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Everything needed to reach a server, as the flags gave it.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub server: ServerUri,
    /// PEM file of the CA certificates to trust instead of the system's.
    pub tls_root: Option<PathBuf>,
    /// PEM client certificate and key, for mutual TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub user: Option<String>,
    pub max_message_bytes: usize,
    /// Send credentials to servers that endpoint locations name, too
    /// (`--trust-locations`). Off: they go only to `server`.
    pub trust_locations: bool,
    /// Trace every gRPC event on stderr in this format (`--trace`,
    /// `--trace-format`).
    pub trace: Option<Format>,
}

impl ConnectOptions {
    pub fn new(server: ServerUri) -> ConnectOptions {
        ConnectOptions {
            server,
            tls_root: None,
            tls_cert: None,
            tls_key: None,
            user: None,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            trust_locations: false,
            trace: None,
        }
    }
}

/// The value of the `authorization` header every call carries, if any.
#[derive(Debug, Clone, Default)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Authorization {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            if !request.metadata().contains_key("authorization") {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
        }
        Ok(request)
    }
}

/// Opens clients with the user's options, one per distinct location.
pub struct Connector {
    options: ConnectOptions,
    password: Option<String>,
    clients: HashMap<ServerUri, Client>,
    /// One for all clients, so call numbers are unique in the trace.
    tracer: Option<Arc<Tracer>>,
}

impl Connector {
    /// Reads the password now (from `HANGAR_PASSWORD`, else a prompt on the
    /// terminal), so a prompt never interrupts a progress line later.
    pub fn new(options: ConnectOptions) -> Result<Connector, Failure> {
        let password = match &options.user {
            None => None,
            Some(user) => Some(read_password(user, &options.server)?),
        };
        Ok(Connector {
            tracer: options.trace.map(Tracer::stderr),
            options,
            password,
            clients: HashMap::new(),
        })
    }

    /// The server `--server` names.
    pub fn server(&self) -> &ServerUri {
        &self.options.server
    }

    /// The `--max-message-size` limit, for messages either way.
    pub fn max_message_bytes(&self) -> usize {
        self.options.max_message_bytes
    }

    /// The client for `--server`.
    pub async fn main(&mut self) -> Result<Client, Failure> {
        let server = self.options.server.clone();
        self.client(&server).await
    }

    /// The client for an endpoint: the first location we can speak, else the
    /// server that gave us the endpoint (an empty list means "this server").
    pub async fn for_locations(&mut self, locations: &[Location]) -> Result<Client, Failure> {
        let chosen = locations.iter().find_map(|l| {
            if l.uri == "arrow-flight-reuse-connection://?" {
                return Some(None);
            }
            ServerUri::parse(&l.uri)
                .ok()
                .map(|uri| Some(uri).filter(|uri| !uri.is_unspecified()))
        });
        match chosen.flatten() {
            Some(uri) if uri != self.options.server => {
                // A server's FlightInfo may name any host: the user's
                // credentials are not handed to it unless the user says so.
                let trusted = self.options.trust_locations;
                if !self.clients.contains_key(&uri) {
                    let how = match (&self.options.user, trusted) {
                        (Some(_), false) => {
                            " without credentials (--trust-locations would send them)"
                        }
                        (Some(_), true) => " with your credentials (--trust-locations)",
                        (None, _) => "",
                    };
                    eprintln!(
                        "hangar: fetching an endpoint from {}, not the server named by \
                         --server,{how}",
                        uri
                    );
                }
                self.client_with(&uri, trusted).await
            }
            Some(uri) => self.client(&uri).await,
            None => self.main().await,
        }
    }

    async fn client(&mut self, uri: &ServerUri) -> Result<Client, Failure> {
        self.client_with(uri, true).await
    }

    /// A client for `uri`, logged in only if `credentials` allows it.
    async fn client_with(&mut self, uri: &ServerUri, credentials: bool) -> Result<Client, Failure> {
        if let Some(client) = self.clients.get(uri) {
            return Ok(client.clone());
        }
        // Clones of a channel share its connection: the handshake and the
        // calls after it go over the same one.
        let channel = self.channel(uri).await?;
        let limit = self.options.max_message_bytes;
        let with = |authorization| client_of(channel.clone(), authorization, limit);
        let authorization = match (&self.options.user, &self.password) {
            (Some(user), Some(password)) if credentials => {
                handshake(with(Authorization::default()), user, password).await?
            }
            _ => Authorization::default(),
        };
        let client = with(authorization);
        self.clients.insert(uri.clone(), client.clone());
        Ok(client)
    }

    /// The `--user` name and its password, for callers that log in by hand
    /// to see each step (`hangar check`).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options.user.as_deref().zip(self.password.as_deref())
    }

    /// A client for `--server` on a connection of its own that carries no
    /// credentials: every header is the caller's to set.
    pub async fn anonymous(&self) -> Result<Client, Failure> {
        let channel = self.channel(&self.options.server).await?;
        Ok(client_of(
            channel,
            Authorization::default(),
            self.options.max_message_bytes,
        ))
    }

    /// A connection to `uri`, traced when `--trace` asks for it.
    async fn channel(&self, uri: &ServerUri) -> Result<Traced<Channel>, Failure> {
        let options = &self.options;
        let mut endpoint = Endpoint::from_shared(uri.http_uri())
            .map_err(|e| Failure::usage(format!("invalid server address {uri}: {e}")))?
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            // Large windows keep multi-megabyte batches flowing without waiting
            // for window updates on every message.
            .initial_stream_window_size(Some(8 * 1024 * 1024))
            .initial_connection_window_size(Some(16 * 1024 * 1024))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        if uri.tls {
            let mut tls = ClientTlsConfig::new().domain_name(uri.host.clone());
            tls = match &options.tls_root {
                Some(path) => tls.ca_certificate(Certificate::from_pem(read_pem(path)?)),
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Failure::local(format!("TLS setup for {uri}: {}", chain(&e))))?;
        }
        let channel = endpoint.connect().await.map_err(|e| {
            let message = format!("cannot connect to {uri}: {}", chain(&e));
            let tls_problem = message.contains("certificate") || message.contains("alert");
            let mut failure = Failure::status(Code::Unavailable, message);
            // Keep the hint that names a TLS flag (see `Failure::status`);
            // the generic one becomes specific.
            failure
                .hints
                .retain(|h| !h.starts_with("is the server running"));
            if failure.hints.is_empty() {
                failure.hint(if tls_problem {
                    "check --tls-root, --tls-cert and --tls-key, and that the server's \
                     certificate names the host in --server"
                        .to_string()
                } else {
                    format!(
                        "is a Flight server running there? Choose one with --server or \
                         HANGAR_SERVER (default {DEFAULT_SERVER})"
                    )
                });
            }
            failure
        })?;
        Ok(Traced::client(
            channel,
            self.tracer.clone(),
            uri.to_string(),
        ))
    }
}

fn client_of(channel: Traced<Channel>, authorization: Authorization, limit: usize) -> Client {
    FlightServiceClient::with_interceptor(channel, authorization)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

/// The `authorization: Basic base64(user:password)` value Handshake carries.
pub fn basic(user: &str, password: &str) -> Result<MetadataValue<Ascii>, Failure> {
    let basic = format!(
        "Basic {}",
        crate::auth::base64_encode(format!("{user}:{password}").as_bytes())
    );
    MetadataValue::try_from(basic.as_str()).map_err(|_| {
        Failure::usage("the user name or password has characters a header cannot carry")
    })
}

/// Trades user and password for a token (see the module comment).
async fn handshake(
    mut client: Client,
    user: &str,
    password: &str,
) -> Result<Authorization, Failure> {
    let basic_value = basic(user, password)?;
    let answer = match basic_handshake(&mut client, basic_value.clone()).await {
        Ok(answer) => answer,
        // A server without Handshake may still accept Basic on every call
        // (the cookbook's middleware does).
        Err(status) if status.code() == Code::Unimplemented => {
            return Ok(Authorization(Some(basic_value)))
        }
        Err(status) => return Err(auth_failure(status, user)),
    };
    let token = answer.bearer.or_else(|| {
        let text = std::str::from_utf8(&answer.payload).ok()?.trim();
        (!text.is_empty())
            .then(|| MetadataValue::try_from(format!("Bearer {text}")).ok())
            .flatten()
    });
    // No token at all: the server did not need one, or takes Basic per call.
    Ok(Authorization(Some(token.unwrap_or(basic_value))))
}

/// What a Handshake answered.
pub struct HandshakeAnswer {
    /// The `authorization: Bearer ...` header, from the response headers or,
    /// failing that, the trailers.
    pub bearer: Option<MetadataValue<Ascii>>,
    /// The first non-empty response payload (some servers put the token there).
    pub payload: Bytes,
}

/// One Handshake call carrying `authorization: <basic>`, read to its end.
pub async fn basic_handshake(
    client: &mut Client,
    basic: MetadataValue<Ascii>,
) -> Result<HandshakeAnswer, Status> {
    let hello = HandshakeRequest {
        protocol_version: 0,
        payload: Bytes::new(),
    };
    let mut request = Request::new(tokio_stream::iter([hello]));
    request.metadata_mut().insert("authorization", basic);
    let response = client.handshake(request).await?;
    let mut token = bearer(response.metadata());
    let mut stream = response.into_inner();
    let mut payload = Bytes::new();
    while let Some(reply) = stream.message().await? {
        if payload.is_empty() {
            payload = reply.payload;
        }
    }
    if token.is_none() {
        if let Ok(Some(trailers)) = stream.trailers().await {
            token = bearer(&trailers);
        }
    }
    Ok(HandshakeAnswer {
        bearer: token,
        payload,
    })
}

/// The `authorization: Bearer ...` value in a header map, if there is one.
pub fn bearer(metadata: &MetadataMap) -> Option<MetadataValue<Ascii>> {
    metadata.get_all("authorization").iter().find_map(|value| {
        let text = value.to_str().ok()?;
        let (kind, token) = text.split_once(' ')?;
        (kind.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| value.clone())
    })
}

fn auth_failure(status: Status, user: &str) -> Failure {
    let mut failure = Failure::from(status);
    if failure.code == Some(Code::Unauthenticated) {
        failure.hints.clear();
        failure.hint(format!(
            "check the password of '{user}' (read from HANGAR_PASSWORD, else prompted)"
        ));
    }
    failure
}

fn read_password(user: &str, server: &ServerUri) -> Result<String, Failure> {
    if let Some(password) = std::env::var_os("HANGAR_PASSWORD") {
        return password
            .into_string()
            .map_err(|_| Failure::usage("HANGAR_PASSWORD is not UTF-8"));
    }
    rpassword::prompt_password(format!("Password for {user} at {server}: ")).map_err(|e| {
        let mut failure = Failure::local(format!("cannot read the password of '{user}': {e}"));
        failure.hint("set HANGAR_PASSWORD, or run in a terminal to be prompted");
        failure
    })
}

fn read_pem(path: &PathBuf) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::io(format!("reading {}", path.display()), e))
}

/// An error and its causes on one line: tonic's transport errors say little
/// at the top ("transport error") and everything useful underneath.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_with_scheme_host_and_port() {
        let plain = ServerUri::parse("grpc://127.0.0.1:8815").unwrap();
        assert_eq!(
            plain,
            ServerUri {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8815
            }
        );
        assert_eq!(plain.http_uri(), "http://127.0.0.1:8815");
        assert_eq!(plain.to_string(), "grpc://127.0.0.1:8815");
        let tls = ServerUri::parse("grpc+tls://flight.example.com:443/").unwrap();
        assert!(tls.tls);
        assert_eq!(tls.http_uri(), "https://flight.example.com:443");
        let v6 = ServerUri::parse("grpc+tcp://[::1]:9000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port, v6.tls), ("::1", 9000, false));
        assert_eq!(v6.to_string(), "grpc://[::1]:9000");
        assert_eq!(v6.http_uri(), "http://[::1]:9000");
        assert!(ServerUri::parse("grpc://0.0.0.0:8815")
            .unwrap()
            .is_unspecified());
        assert!(!plain.is_unspecified());
    }

    #[test]
    fn bad_uris_say_what_is_wrong() {
        for (text, expected) in [
            ("localhost:8815", "not a URI"),
            ("http://h:1", "unsupported scheme 'http'"),
            ("grpc+unix:///tmp/s", "unsupported scheme"),
            ("grpc://h", "no port"),
            ("grpc://h:99999", "invalid port"),
            ("grpc://:1", "no host"),
            ("grpc://h:1/path", "without a path"),
            ("grpc://[::1:1", "unclosed"),
        ] {
            let err = ServerUri::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn bearer_is_found_case_insensitively() {
        let mut map = MetadataMap::new();
        assert!(bearer(&map).is_none());
        map.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&map).is_none());
        map.append("authorization", "bearer tok".parse().unwrap());
        assert_eq!(bearer(&map).unwrap().to_str().unwrap(), "bearer tok");
    }
}
