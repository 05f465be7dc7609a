//! The Flight RPCs: decode the request, ask the [`Store`], encode the reply.
//!
//! Every handler has one shape: a log record opened ([`Call`]), a call slot
//! taken, credentials checked, blocking work sent to a worker thread, the
//! reply streamed back through a bounded channel ([`crate::stream`]), the
//! record closed with the final status. Errors become a `Status` only through
//! `From<Error> for Status`. One file per RPC family: `handshake.rs`,
//! `info.rs` (ListFlights, GetFlightInfo, GetSchema, PollFlightInfo), `get.rs`
//! (DoGet), `put.rs` (DoPut), `action.rs` (ListActions, DoAction).

mod action;
mod get;
mod handshake;
mod info;
mod put;

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prost::bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codegen::tokio_stream::Stream;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{self, Authenticator, Credentials, Operation, Principal};
use crate::budget::{self, Budget};
use crate::error::{Error, Result};
use crate::log::{Call, Logger};
use crate::proto::flight_descriptor::DescriptorType;
use crate::proto::*;
use crate::query::IpcCompression;
use crate::store::{self, Store};
use crate::transport::TrackEndOfStream;

/// Tunables of the service; [`Limits::default`] is what `hangar serve` uses
/// unless flags say otherwise.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message accepted or sent (`--max-message-size`).
    pub max_message_bytes: usize,
    /// DoGet slices batches so each message body stays near this size. 2 MiB
    /// keeps every message under the 4 MiB that gRPC clients accept by default.
    pub target_message_bytes: usize,
    /// Rows per batch read from Parquet.
    pub batch_rows: usize,
    /// Messages a download's worker may queue ahead of its gRPC stream.
    pub channel_depth: usize,
    /// Messages an upload may receive ahead of its writer. They are outside
    /// the memory budget until decoded, so one: the pump still reads the next
    /// message while the writer works. A queue of 4 made uploads no faster
    /// (pyarrow, 288 MB: 0.38-0.44 s with 1, 0.40-0.75 s with 4) and raised
    /// one upload's peak memory by 5 MiB.
    pub upload_queue: usize,
    /// A stream that moves nothing for this long is aborted (`--idle-timeout`):
    /// an upload that stops sending, a download that stops reading.
    pub idle_timeout: Duration,
    /// Calls served at once (`--max-concurrent-calls`); beyond, ResourceExhausted.
    pub max_concurrent_calls: usize,
    /// IPC body compression of DoGet unless a query ticket says otherwise
    /// (`--ipc-compression`).
    pub ipc_compression: IpcCompression,
    /// Bytes that uploads and downloads may hold in flight, server-wide
    /// (`--memory-limit`, see [`crate::budget`]).
    pub memory_limit: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            target_message_bytes: 2 * 1024 * 1024,
            batch_rows: 64 * 1024,
            channel_depth: 4,
            upload_queue: 1,
            idle_timeout: Duration::from_secs(60),
            max_concurrent_calls: 256,
            ipc_compression: IpcCompression::None,
            memory_limit: budget::DEFAULT_LIMIT,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// How often an idle memory budget checks whether to return freed memory to
/// the system: RSS comes back within about this long after the load ends.
const TRIM_PERIOD: Duration = Duration::from_secs(1);

/// The Flight service over one repository.
#[derive(Debug, Clone)]
pub struct Hangar {
    store: Arc<Store>,
    log: Logger,
    limits: Limits,
    /// `None`: the server is open, as the cookbook's first recipe.
    auth: Option<Arc<Authenticator>>,
    /// One permit per running call; streaming calls hold theirs until the
    /// stream ends, so the limit counts real work, not just handler entry.
    calls: Arc<Semaphore>,
    /// Password checks that may run at once (see [`PASSWORD_CHECKS`]).
    password_checks: Arc<Semaphore>,
    /// The Handshake budget (see [`Hangar::handshake_slot`]).
    handshakes: Arc<Semaphore>,
    handshakes_per_peer: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
    /// The nodes a query's endpoints name (`--peer`); `None`: no locations.
    nodes: Option<Arc<crate::nodes::Nodes>>,
    /// The server-wide memory budget DoGet and DoPut draw from.
    memory: Budget,
    /// Turns true when the grace period is over: uploads still running are
    /// abandoned then, so their cleanup (an aborted multipart upload) runs
    /// before the server exits rather than never.
    abandon: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Hangar {
    pub fn new(store: Arc<Store>, log: Logger, limits: Limits) -> Hangar {
        let calls = Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1)));
        let memory = limits.memory_limit;
        Hangar {
            store,
            log,
            limits,
            auth: None,
            calls,
            password_checks: Arc::new(Semaphore::new(PASSWORD_CHECKS)),
            handshakes: Arc::new(Semaphore::new(HANDSHAKES)),
            handshakes_per_peer: Arc::default(),
            nodes: None,
            memory: {
                let budget = Budget::new(memory);
                budget.trim_when_idle(TRIM_PERIOD);
                budget
            },
            abandon: Arc::new(tokio::sync::watch::Sender::new(false)),
        }
    }

    /// Abandons the uploads still running (the grace period is over).
    pub fn abandon_uploads(&self) {
        self.abandon.send_replace(true);
    }

    /// Names these nodes in query endpoints' locations.
    pub fn with_nodes(mut self, nodes: Arc<crate::nodes::Nodes>) -> Hangar {
        self.nodes = Some(nodes);
        self
    }

    /// Requires a token (or Basic credentials) on every RPC but Handshake.
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> Hangar {
        self.auth = Some(auth);
        self
    }

    /// The service as tonic serves it: message size limits applied both ways,
    /// and wrapped so DoPut can tell a clean end of stream from a cancel and
    /// its messages draw from the memory budget as they arrive.
    pub fn into_server(self) -> TrackEndOfStream<FlightServiceServer<Hangar>> {
        let limit = self.limits.max_message_bytes;
        let budget = self.memory.clone();
        TrackEndOfStream::with_budget(
            FlightServiceServer::new(self)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
            budget,
            limit,
        )
    }

    /// Opens the log record of a call. The peer's TLS certificate subject is
    /// kept aside: it names the user only once the call is authorised.
    fn call<T>(&self, rpc: &'static str, request: &Request<T>) -> Call {
        let mut call = self.log.call(rpc, request.remote_addr());
        call.certificate = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| auth::certificate_subject(c)));
        call
    }

    /// The gate every RPC but Handshake passes: credentials first, then a
    /// call slot. Checking credentials first means a caller without valid
    /// ones never holds one of the `--max-concurrent-calls` slots, so
    /// unauthenticated traffic cannot starve logged-in users. A refusal is
    /// logged and returned as the status to answer with.
    async fn enter<T>(
        &self,
        call: &mut Call,
        request: &Request<T>,
        op: Operation,
    ) -> Result<(Option<Principal>, OwnedSemaphorePermit), Status> {
        let principal = match self.authorize(call, request, op).await {
            Ok(principal) => principal,
            Err(err) => return Err(call.fail(err)),
        };
        Ok((principal, self.admit(call)?))
    }

    /// Takes a slot for one call, or answers ResourceExhausted at once: under
    /// overload, a quick refusal beats an unbounded queue.
    fn admit(&self, call: &mut Call) -> Result<OwnedSemaphorePermit, Status> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            call.fail(Error::ResourceExhausted(format!(
                "server busy: {} calls already running (--max-concurrent-calls); retry shortly",
                self.limits.max_concurrent_calls
            )))
        })
    }

    /// Checks the caller may perform `op` and returns who it is. Without
    /// `--users` everyone may, and the certificate subject (if any) is the user.
    async fn authorize<T>(
        &self,
        call: &mut Call,
        request: &Request<T>,
        op: Operation,
    ) -> Result<Option<Principal>> {
        let Some(auth) = &self.auth else {
            call.user = call.certificate.clone();
            return Ok(None);
        };
        let credentials = credentials_of(request)?;
        let peer = request.remote_addr().map(|a| a.ip());
        let principal = self.authenticate(auth, call, credentials, peer).await?;
        call.user = Some(principal.user.clone());
        principal.check(op)?;
        Ok(Some(principal))
    }

    /// Who the credentials name. Basic credentials cost a password check;
    /// tokens are a table lookup. Shared by every RPC and Handshake.
    async fn authenticate(
        &self,
        auth: &Arc<Authenticator>,
        call: &mut Call,
        credentials: Credentials,
        peer: Option<IpAddr>,
    ) -> Result<Principal> {
        match credentials {
            Credentials::Bearer(token) => auth.verify_token(&token),
            Credentials::Basic { user, password } => {
                call.tried_user = Some(user.clone());
                let _check = self.password_check_slot().await?;
                let auth = auth.clone();
                blocking(move || auth.login(&user, &password, peer)).await
            }
        }
    }
}

impl Hangar {
    /// One of the few password checks that may run at once. Each Argon2
    /// check costs ~19 MiB and a core for tens of milliseconds, so a login
    /// flood queues here briefly and is then refused, instead of taking every
    /// core and hundreds of MiB.
    async fn password_check_slot(&self) -> Result<OwnedSemaphorePermit> {
        let wait = tokio::time::timeout(
            PASSWORD_CHECK_WAIT,
            self.password_checks.clone().acquire_owned(),
        );
        match wait.await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::ResourceExhausted(format!(
                "too many logins at once ({PASSWORD_CHECKS} password checks running); retry shortly"
            ))),
        }
    }

    /// A place for one Handshake without credentials in its headers (it may
    /// wait for a first message): at most [`HANDSHAKES_PER_PEER`] per peer
    /// address and [`HANDSHAKES`] in all. They come before credentials are
    /// known, so they have this budget of their own instead of the call slots
    /// that logged-in users need.
    fn handshake_slot(&self, peer: Option<IpAddr>) -> Result<HandshakeSlot> {
        let total = self.handshakes.clone().try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "too many handshakes at once ({HANDSHAKES}); retry shortly"
            ))
        })?;
        let peer = peer.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let mut per_peer = self
            .handshakes_per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let count = per_peer.entry(peer).or_insert(0);
        if *count >= HANDSHAKES_PER_PEER {
            return Err(Error::ResourceExhausted(format!(
                "too many handshakes at once from {peer} ({HANDSHAKES_PER_PEER}); retry shortly"
            )));
        }
        *count += 1;
        Ok(HandshakeSlot {
            _total: total,
            peer,
            per_peer: self.handshakes_per_peer.clone(),
        })
    }
}

/// Password checks run at once (each Argon2id check takes ~19 MiB).
const PASSWORD_CHECKS: usize = 2;
/// How long a login waits for a password check before RESOURCE_EXHAUSTED.
const PASSWORD_CHECK_WAIT: Duration = Duration::from_secs(3);
/// Handshakes in progress at once, in all and per peer address.
const HANDSHAKES: usize = 64;
const HANDSHAKES_PER_PEER: usize = 4;

/// A Handshake's place in the handshake budget, given back on drop.
struct HandshakeSlot {
    _total: OwnedSemaphorePermit,
    peer: IpAddr,
    per_peer: Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut per_peer = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = per_peer.get_mut(&self.peer) {
            *count -= 1;
            if *count == 0 {
                per_peer.remove(&self.peer);
            }
        }
    }
}

/// The credentials a request carries: the `authorization` header (Basic or
/// Bearer), or for older clients a token in `auth-token-bin`.
fn credentials_of<T>(request: &Request<T>) -> Result<Credentials> {
    let metadata = request.metadata();
    if let Some(value) = metadata.get("authorization") {
        return auth::parse_authorization(value.as_bytes());
    }
    if let Some(value) = metadata.get_bin("auth-token-bin") {
        let token = value.to_bytes().map_err(|_| {
            Error::Unauthenticated("auth-token-bin header is not valid base64".into())
        })?;
        let token = std::str::from_utf8(&token)
            .map_err(|_| Error::Unauthenticated(auth::INVALID_TOKEN.into()))?;
        return Ok(Credentials::Bearer(token.to_string()));
    }
    Err(Error::Unauthenticated(auth::NO_CREDENTIALS.into()))
}

/// Logs the outcome of a call and converts its error.
fn finish<T>(mut call: Call, result: Result<T>) -> Result<T, Status> {
    match result {
        Ok(value) => {
            call.finish(Code::Ok, "");
            Ok(value)
        }
        Err(err) => Err(call.fail(err)),
    }
}

/// Runs blocking work (file and Parquet I/O) on a worker thread. A panic there
/// becomes an Internal error for this call, never a crash of the server.
async fn blocking<T, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("worker failed: {e}")))?
}

fn path_descriptor(name: &str) -> FlightDescriptor {
    FlightDescriptor {
        r#type: DescriptorType::Path as i32,
        cmd: Bytes::new(),
        path: vec![name.to_string()],
    }
}

/// The dataset a descriptor names: a PATH with exactly one valid element.
pub fn descriptor_name(descriptor: &FlightDescriptor) -> Result<String> {
    match DescriptorType::try_from(descriptor.r#type) {
        Ok(DescriptorType::Path) => {}
        Ok(DescriptorType::Cmd) => {
            return Err(Error::InvalidArgument(
                "a CMD descriptor (a query) cannot name an upload: use a PATH descriptor \
                 whose one element is the dataset name"
                    .into(),
            ))
        }
        _ => {
            return Err(Error::InvalidArgument(format!(
                "descriptor type {} is not PATH: use a PATH descriptor whose one element \
                 is the dataset name",
                descriptor.r#type
            )))
        }
    }
    match descriptor.path.as_slice() {
        [name] => {
            store::validate_name(name)?;
            Ok(name.clone())
        }
        other => Err(Error::InvalidArgument(format!(
            "a PATH descriptor must have exactly one element, the dataset name; this one has {}",
            other.len()
        ))),
    }
}

/// The dataset a ticket or an action body names (UTF-8 bytes).
pub fn name_from_bytes(bytes: &[u8], what: &str) -> Result<String> {
    let name = std::str::from_utf8(bytes).map_err(|_| {
        Error::InvalidArgument(format!(
            "the {what} is not UTF-8: it must be a dataset name"
        ))
    })?;
    store::validate_name(name)?;
    Ok(name.to_string())
}

/// Maps an error reading the client's stream: tonic's "too large" becomes the
/// limit the operator can change, a vanished client becomes Cancelled.
fn inbound_error(status: Status, limit: usize) -> Error {
    match status.code() {
        Code::OutOfRange if status.message().contains("too large") => {
            let found = status
                .message()
                .split("found ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap_or("?");
            Error::ResourceExhausted(format!(
                "a message of {found} bytes exceeds --max-message-size ({limit} bytes); \
                 send smaller batches or raise the server's limit"
            ))
        }
        // The transport's own refusals (the budget, the request caps) are
        // already worded for the client.
        Code::ResourceExhausted => Error::ResourceExhausted(status.message().to_string()),
        Code::Cancelled | Code::Unknown | Code::Unavailable => Error::Cancelled(format!(
            "the client aborted the stream: {}",
            status.message()
        )),
        _ => Error::InvalidArgument(format!("reading the request stream: {}", status.message())),
    }
}

#[tonic::async_trait]
impl FlightService for Hangar {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<crate::proto::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        handshake::handshake(self, request).await
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        info::list_flights(self, request).await
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        info::get_flight_info(self, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        info::poll_flight_info(self, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        info::get_schema(self, request).await
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        get::do_get(self, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        put::do_put(self, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let mut call = self.call("DoExchange", &request);
        let _permit = self
            .enter(&mut call, &request, Operation::DoExchange)
            .await?;
        finish(
            call,
            Err(Error::Unimplemented(
                "DoExchange is not supported by hangar: upload with DoPut, download with DoGet"
                    .into(),
            )),
        )
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        action::do_action(self, request).await
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        action::list_actions(self, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_must_be_a_single_valid_path() {
        let ok = path_descriptor("uploaded.parquet");
        assert_eq!(descriptor_name(&ok).unwrap(), "uploaded.parquet");
        let cmd = FlightDescriptor {
            r#type: DescriptorType::Cmd as i32,
            cmd: Bytes::from_static(b"SELECT 1"),
            path: vec![],
        };
        assert!(descriptor_name(&cmd).unwrap_err().message().contains("CMD"));
        let two = FlightDescriptor {
            path: vec!["a".into(), "b".into()],
            ..ok.clone()
        };
        assert!(descriptor_name(&two)
            .unwrap_err()
            .message()
            .contains("exactly one"));
        let none = FlightDescriptor {
            path: vec![],
            ..ok.clone()
        };
        assert!(descriptor_name(&none)
            .unwrap_err()
            .message()
            .contains("has 0"));
        let escape = FlightDescriptor {
            path: vec!["../etc".into()],
            ..ok
        };
        assert_eq!(
            descriptor_name(&escape).unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn tickets_must_be_utf8_names() {
        assert_eq!(
            name_from_bytes(b"a.parquet", "ticket").unwrap(),
            "a.parquet"
        );
        assert!(name_from_bytes(b"\xff", "ticket")
            .unwrap_err()
            .message()
            .contains("UTF-8"));
        assert!(name_from_bytes(b"", "ticket").is_err());
    }

    #[test]
    fn oversized_messages_name_the_flag() {
        let status = Status::out_of_range(
            "Error, decoded message length too large: found 70000000 bytes, the limit is: 67108864 bytes",
        );
        let err = inbound_error(status, 67108864);
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("--max-message-size"), "{err}");
        assert!(err.message().contains("70000000"), "{err}");
    }
}
