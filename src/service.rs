//! The Flight RPCs: decode the request, ask the [`Store`], encode the reply.
//!
//! This is the only module that knows gRPC. Every handler follows one shape: log
//! record opened, request checked, blocking work sent to a worker thread, reply
//! streamed back through a bounded channel, log record closed with the final
//! status. Errors become a `Status` only through `From<Error> for Status`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arrow_ipc::writer::IpcWriteOptions;
use prost::bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tonic::codegen::tokio_stream::{self, wrappers::ReceiverStream, Stream};
use tonic::{Code, Request, Response, Status, Streaming};

use crate::auth::{self, Authenticator, Credentials, Operation, Principal};
use crate::error::{Error, Result};
use crate::ipc::{self, Decoded, Decoder, Encoder};
use crate::log::{Call, Logger};
use crate::proto::flight_descriptor::DescriptorType;
use crate::proto::*;
use crate::store::{self, DatasetInfo, Store};

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
    /// Messages buffered between a worker and a gRPC stream, each way.
    pub channel_depth: usize,
    /// A stream that moves nothing for this long is aborted (`--idle-timeout`):
    /// an upload that stops sending, a download that stops reading.
    pub idle_timeout: Duration,
    /// Calls served at once (`--max-concurrent-calls`); beyond, ResourceExhausted.
    pub max_concurrent_calls: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 64 * 1024 * 1024,
            target_message_bytes: 2 * 1024 * 1024,
            batch_rows: 64 * 1024,
            channel_depth: 4,
            idle_timeout: Duration::from_secs(60),
            max_concurrent_calls: 256,
        }
    }
}

/// The actions DoAction understands, with the description ListActions gives.
const ACTIONS: &[(&str, &str)] = &[(
    "drop_dataset",
    "Delete a dataset. Body: the dataset name, UTF-8.",
)];

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

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
}

impl Hangar {
    pub fn new(store: Arc<Store>, log: Logger, limits: Limits) -> Hangar {
        let calls = Arc::new(Semaphore::new(limits.max_concurrent_calls.max(1)));
        Hangar {
            store,
            log,
            limits,
            auth: None,
            calls,
        }
    }

    /// Requires a token (or Basic credentials) on every RPC but Handshake.
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> Hangar {
        self.auth = Some(auth);
        self
    }

    /// Wraps the service for tonic, with the message size limit applied to both
    /// directions.
    pub fn into_server(self) -> FlightServiceServer<Hangar> {
        let limit = self.limits.max_message_bytes;
        FlightServiceServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit)
    }

    /// Opens the log record of a call; with mTLS, the client certificate's
    /// subject is the user until a token says otherwise.
    fn call<T>(&self, rpc: &'static str, request: &Request<T>) -> Call {
        let mut call = self.log.call(rpc, request.remote_addr());
        call.user = request
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| auth::certificate_subject(c)));
        call
    }

    /// Takes a slot for one call, or answers ResourceExhausted at once: under
    /// overload, a quick refusal beats an unbounded queue.
    fn admit(&self, call: &Call) -> Result<OwnedSemaphorePermit, Status> {
        self.calls.clone().try_acquire_owned().map_err(|_| {
            let err = Error::ResourceExhausted(format!(
                "server busy: {} calls already running (--max-concurrent-calls); retry shortly",
                self.limits.max_concurrent_calls
            ));
            call.clone().finish(err.code(), err.message());
            err.into()
        })
    }

    /// Checks the caller may perform `op` and returns who it is. Without
    /// `--users` everyone may, and nobody is named.
    async fn authorize<T>(
        &self,
        call: &mut Call,
        request: &Request<T>,
        op: Operation,
    ) -> Result<Option<Principal>> {
        let Some(auth) = &self.auth else {
            return Ok(None);
        };
        let principal = self.authenticate(auth, request).await?;
        call.user = Some(principal.user.clone());
        principal.check(op)?;
        Ok(Some(principal))
    }

    /// Who the request's credentials name: a bearer token (in `authorization` or,
    /// for older clients, `auth-token-bin`), or Basic credentials.
    async fn authenticate<T>(
        &self,
        auth: &Arc<Authenticator>,
        request: &Request<T>,
    ) -> Result<Principal> {
        let metadata = request.metadata();
        if let Some(value) = metadata.get("authorization") {
            let peer = request.remote_addr().map(|a| a.ip());
            return match auth::parse_authorization(value.as_bytes())? {
                Credentials::Bearer(token) => auth.verify_token(&token),
                Credentials::Basic { user, password } => {
                    let auth = auth.clone();
                    blocking(move || auth.login(&user, &password, peer)).await
                }
            };
        }
        if let Some(value) = metadata.get_bin("auth-token-bin") {
            let token = value.to_bytes().map_err(|_| {
                Error::Unauthenticated("auth-token-bin header is not valid base64".into())
            })?;
            let token = std::str::from_utf8(&token)
                .map_err(|_| Error::Unauthenticated(auth::INVALID_TOKEN.into()))?;
            return auth.verify_token(token);
        }
        Err(Error::Unauthenticated(auth::NO_CREDENTIALS.into()))
    }

    /// Handshake with authentication: Basic credentials from the header (the
    /// cookbook's `authenticate_basic_token`), else a `BasicAuth` protobuf in the
    /// first request's payload (older clients). Returns the principal and token.
    async fn log_in(
        &self,
        auth: &Arc<Authenticator>,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<(Principal, String)> {
        let peer = request.remote_addr().map(|a| a.ip());
        let principal = match request.metadata().get("authorization") {
            Some(value) => match auth::parse_authorization(value.as_bytes())? {
                Credentials::Basic { user, password } => {
                    let auth = auth.clone();
                    blocking(move || auth.login(&user, &password, peer)).await?
                }
                Credentials::Bearer(token) => auth.verify_token(&token)?,
            },
            None => {
                let mut stream = request.into_inner();
                // A client that opens the stream and sends nothing must not hold
                // a handler forever.
                let first =
                    tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                        .await
                        .map_err(|_| Error::Unauthenticated(auth::NO_CREDENTIALS.into()))?
                        .map_err(|s| {
                            Error::Unauthenticated(format!(
                                "reading the handshake: {}",
                                s.message()
                            ))
                        })?;
                let payload = first.map(|m| m.payload).unwrap_or_default();
                if payload.is_empty() {
                    return Err(Error::Unauthenticated(auth::NO_CREDENTIALS.into()));
                }
                let basic = <BasicAuth as prost::Message>::decode(payload).map_err(|_| {
                    Error::Unauthenticated(
                        "handshake payload is not a BasicAuth message (username, password)".into(),
                    )
                })?;
                let auth = auth.clone();
                blocking(move || auth.login(&basic.username, &basic.password, peer)).await?
            }
        };
        let token = auth.issue(&principal)?;
        Ok((principal, token))
    }

    fn flight_info(&self, info: &DatasetInfo) -> Result<FlightInfo> {
        Ok(FlightInfo {
            schema: ipc::schema_to_ipc(&info.schema)?,
            flight_descriptor: Some(path_descriptor(&info.name)),
            endpoint: vec![FlightEndpoint {
                ticket: Some(Ticket {
                    ticket: Bytes::from(info.name.clone().into_bytes()),
                }),
                // Empty: the ticket is redeemed on this same server.
                location: vec![],
                expiration_time: None,
                app_metadata: Bytes::new(),
            }],
            total_records: info.rows,
            total_bytes: i64::try_from(info.bytes).unwrap_or(i64::MAX),
            ordered: true,
            app_metadata: Bytes::new(),
        })
    }

    /// Looks up one dataset by descriptor, on a worker thread.
    async fn describe(
        &self,
        call: &mut Call,
        descriptor: &FlightDescriptor,
    ) -> Result<DatasetInfo> {
        let name = descriptor_name(descriptor)?;
        call.dataset(&name);
        let store = self.store.clone();
        let info = blocking(move || store.info(&name)).await?;
        call.rows = u64::try_from(info.rows).unwrap_or(0);
        call.bytes = info.bytes;
        Ok(info)
    }
}

/// Logs the outcome of a unary call and converts its error.
fn finish<T>(call: Call, result: Result<T>) -> Result<T, Status> {
    match result {
        Ok(value) => {
            call.finish(Code::Ok, "");
            Ok(value)
        }
        Err(err) => {
            call.finish(err.code(), err.message());
            Err(err.into())
        }
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
                "CMD descriptors are not supported: use a PATH descriptor whose one \
                 element is the dataset name"
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
        let mut call = self.call("Handshake", &request);
        let _permit = self.admit(&call)?;
        let Some(auth) = &self.auth else {
            // Without authentication there is nothing to trade: one empty
            // answer, as Flight servers without auth give.
            finish(call, Ok(()))?;
            let reply = HandshakeResponse {
                protocol_version: 0,
                payload: Bytes::new(),
            };
            return Ok(Response::new(Box::pin(tokio_stream::iter([Ok(reply)]))));
        };
        let result = self.log_in(auth, request).await;
        if let Ok((principal, _)) = &result {
            call.user = Some(principal.user.clone());
        }
        let (_, token) = finish(call, result)?;
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("token is not a valid header value"))?;
        // The token goes both ways clients look for it: the response header
        // (pyarrow's authenticate_basic_token) and the payload (FlightClient).
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token.into_bytes()),
        };
        let mut response =
            Response::new(Box::pin(tokio_stream::iter([Ok(reply)])) as Self::HandshakeStream);
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let mut call = self.call("ListFlights", &request);
        let _permit = self.admit(&call)?;
        let result = async {
            self.authorize(&mut call, &request, Operation::ListFlights)
                .await?;
            // The criteria expression, if any, is a dataset name prefix.
            let prefix =
                String::from_utf8(request.get_ref().expression.to_vec()).map_err(|_| {
                    Error::InvalidArgument(
                        "ListFlights criteria must be a UTF-8 dataset name prefix".into(),
                    )
                })?;
            let store = self.store.clone();
            let log = self.log;
            let infos = blocking(move || {
                store.list(&prefix, |name, err| {
                    log.event(&format!("skipping '{name}' in listing: {err}"))
                })
            })
            .await?;
            let flights = infos
                .iter()
                .map(|info| self.flight_info(info))
                .collect::<Result<Vec<_>>>()?;
            call.rows = flights.len() as u64;
            Ok(flights)
        }
        .await;
        let flights = finish(call, result)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            flights.into_iter().map(Ok),
        ))))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let mut call = self.call("GetFlightInfo", &request);
        let _permit = self.admit(&call)?;
        let result = async {
            self.authorize(&mut call, &request, Operation::GetFlightInfo)
                .await?;
            let info = self.describe(&mut call, request.get_ref()).await?;
            self.flight_info(&info)
        }
        .await;
        finish(call, result).map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        let mut call = self.call("PollFlightInfo", &request);
        let _permit = self.admit(&call)?;
        let result = async {
            self.authorize(&mut call, &request, Operation::PollFlightInfo)
                .await?;
            let info = self.describe(&mut call, request.get_ref()).await?;
            // Datasets are complete when they exist: no retry descriptor, done.
            Ok(PollInfo {
                info: Some(self.flight_info(&info)?),
                flight_descriptor: None,
                progress: Some(1.0),
                expiration_time: None,
            })
        }
        .await;
        finish(call, result).map(Response::new)
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let mut call = self.call("GetSchema", &request);
        let _permit = self.admit(&call)?;
        let result = async {
            self.authorize(&mut call, &request, Operation::GetSchema)
                .await?;
            let info = self.describe(&mut call, request.get_ref()).await?;
            Ok(SchemaResult {
                schema: ipc::schema_to_ipc(&info.schema)?,
            })
        }
        .await;
        finish(call, result).map(Response::new)
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let mut call = self.call("DoGet", &request);
        let permit = self.admit(&call)?;
        let opened = async {
            self.authorize(&mut call, &request, Operation::DoGet)
                .await?;
            let name = name_from_bytes(&request.get_ref().ticket, "ticket")?;
            call.dataset(&name);
            let store = self.store.clone();
            let rows = self.limits.batch_rows;
            blocking(move || store.reader(&name, rows)).await
        }
        .await;
        let (schema, reader) = match opened {
            Ok(opened) => opened,
            Err(err) => return Err(finish::<()>(call, Err(err)).unwrap_err()),
        };
        let (tx, rx) = mpsc::channel(self.limits.channel_depth);
        let abort = Arc::new(std::sync::Mutex::new(None));
        let encoder = Encoder::new(
            IpcWriteOptions::default(),
            self.limits.target_message_bytes,
            self.limits.max_message_bytes,
        );
        let idle = self.limits.idle_timeout;
        let runtime = tokio::runtime::Handle::current();
        let worker_abort = abort.clone();
        tokio::task::spawn_blocking(move || {
            let outbound = Outbound {
                tx,
                idle,
                runtime,
                abort: worker_abort,
            };
            stream_dataset(schema, reader, encoder, &outbound, call);
            drop(permit);
        });
        Ok(Response::new(Box::pin(Abortable {
            rx,
            abort,
            done: false,
        })))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut call = self.call("DoPut", &request);
        let permit = self.admit(&call)?;
        let limit = self.limits.max_message_bytes;
        if let Err(err) = self.authorize(&mut call, &request, Operation::DoPut).await {
            return Err(finish::<()>(call, Err(err)).unwrap_err());
        }
        // Set by `TrackEndOfStream` only when the HTTP/2 body ended with
        // END_STREAM; tonic reports a cancel (RST_STREAM) as a clean end too.
        let clean_end = request.extensions().get::<CleanEnd>().cloned();
        let mut inbound = request.into_inner();
        // The first message names the dataset; check it before anything is written.
        let idle = self.limits.idle_timeout;
        let first = async {
            // A client that opens the call and sends nothing must not hold a
            // call slot forever: the idle timeout covers the first message too.
            let next = tokio::time::timeout(idle, inbound.message())
                .await
                .map_err(|_| {
                    Error::DeadlineExceeded(format!(
                        "no data for {} s: upload aborted (--idle-timeout)",
                        idle.as_secs()
                    ))
                })?;
            let first = match next {
                Ok(Some(first)) => first,
                Ok(None) => {
                    return Err(Error::InvalidArgument(
                        "empty DoPut stream: the first message must carry a PATH descriptor \
                         and the schema"
                            .into(),
                    ))
                }
                Err(status) => return Err(inbound_error(status, limit)),
            };
            let descriptor = first.flight_descriptor.as_ref().ok_or_else(|| {
                Error::InvalidArgument(
                    "the first DoPut message has no flight descriptor: it must name the dataset"
                        .into(),
                )
            })?;
            let name = descriptor_name(descriptor)?;
            call.dataset(&name);
            Ok((name, first))
        }
        .await;
        let (name, first) = match first {
            Ok(first) => first,
            Err(err) => return Err(finish::<()>(call, Err(err)).unwrap_err()),
        };

        let (data_tx, data_rx) = mpsc::channel::<Inbound>(self.limits.channel_depth);
        let (reply_tx, reply_rx) = mpsc::channel::<Result<PutResult, Status>>(1);
        let store = self.store.clone();
        let worker = tokio::task::spawn_blocking(move || ingest(&store, &name, first, data_rx));

        tokio::spawn(async move {
            // Pump client messages to the worker until the stream ends, fails, or
            // the worker stops listening (it failed and has its answer).
            let mut stream_error = None;
            let _permit = permit;
            loop {
                let next = tokio::select! {
                    next = tokio::time::timeout(idle, inbound.message()) => match next {
                        Ok(next) => next,
                        Err(_) => {
                            stream_error = Some(Error::DeadlineExceeded(format!(
                                "no data for {} s: upload aborted (--idle-timeout); the previous \
                                 version is kept",
                                idle.as_secs()
                            )));
                            break;
                        }
                    },
                    // The caller is gone: hyper dropped our response stream.
                    _ = reply_tx.closed() => Err(Status::cancelled("the client went away")),
                };
                match next {
                    Ok(Some(message)) => {
                        if data_tx.send(Inbound::Data(message)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        stream_error = Some(inbound_error(status, limit));
                        break;
                    }
                }
            }
            // A clean end of stream is only trusted if the client is still there
            // to hear the answer: tonic can report a reset like a normal end.
            if stream_error.is_none() && clean_end.as_ref().is_some_and(|c| !c.get()) {
                stream_error = Some(Error::Cancelled(
                    "the client cancelled the upload before closing its stream".into(),
                ));
            }
            if stream_error.is_none() && reply_tx.is_closed() {
                stream_error = Some(Error::Cancelled(
                    "the client went away before the upload finished".into(),
                ));
            }
            // If the worker already failed, its own error (bad batch, disk full)
            // explains more than the aborted stream that followed it.
            let verdict = match stream_error {
                Some(err) => Inbound::Abort(err),
                None => Inbound::Commit,
            };
            let _ = data_tx.send(verdict).await;
            drop(data_tx);
            let result = match worker.await {
                Ok(result) => result,
                Err(e) => Err(Error::Internal(format!("upload worker failed: {e}"))),
            };
            match result {
                Ok(summary) => {
                    call.rows = summary.rows;
                    call.bytes = summary.bytes;
                    let metadata =
                        format!("{{\"rows\":{},\"bytes\":{}}}", summary.rows, summary.bytes);
                    call.finish(Code::Ok, "");
                    let _ = reply_tx
                        .send(Ok(PutResult {
                            app_metadata: Bytes::from(metadata),
                        }))
                        .await;
                }
                Err(err) => {
                    call.finish(err.code(), err.message());
                    let _ = reply_tx.send(Err(err.into())).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(reply_rx))))
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let mut call = self.call("DoExchange", &request);
        let _permit = self.admit(&call)?;
        let result = match self
            .authorize(&mut call, &request, Operation::DoExchange)
            .await
        {
            Ok(_) => Err(Error::Unimplemented(
                "DoExchange is not supported by hangar: upload with DoPut, download with DoGet"
                    .into(),
            )),
            Err(err) => Err(err),
        };
        finish(call, result)
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let mut call = self.call("DoAction", &request);
        let _permit = self.admit(&call)?;
        let result = async {
            let principal = self
                .authorize(&mut call, &request, Operation::DoAction)
                .await?;
            let action = request.get_ref();
            match action.r#type.as_str() {
                "drop_dataset" => {
                    if let Some(principal) = &principal {
                        principal.check(Operation::DropDataset)?;
                    }
                    let name = name_from_bytes(&action.body, "drop_dataset body")?;
                    call.dataset(&name);
                    let store = self.store.clone();
                    let dropped = name.clone();
                    // Eagerly, before the reply stream: clients that never read
                    // the result (the cookbook's) still get the drop.
                    blocking(move || store.drop_dataset(&dropped)).await?;
                    let mut body = String::from("{\"dropped\":");
                    crate::log::push_json_str(&mut body, &name);
                    body.push('}');
                    Ok(vec![crate::proto::Result {
                        body: Bytes::from(body),
                    }])
                }
                other => {
                    let known: Vec<&str> = ACTIONS.iter().map(|(name, _)| *name).collect();
                    Err(Error::InvalidArgument(format!(
                        "unknown action '{}'; available actions: {}",
                        other.escape_debug(),
                        known.join(", ")
                    )))
                }
            }
        }
        .await;
        let results = finish(call, result)?;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            results.into_iter().map(Ok),
        ))))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let mut call = self.call("ListActions", &request);
        let _permit = self.admit(&call)?;
        call.rows = ACTIONS.len() as u64;
        let result = self
            .authorize(&mut call, &request, Operation::ListActions)
            .await;
        finish(call, result.map(drop))?;
        let actions = ACTIONS.iter().map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(actions))))
    }
}

/// The DoGet worker's end of the bounded channel to the gRPC stream.
struct Outbound {
    tx: mpsc::Sender<Result<FlightData, Status>>,
    idle: Duration,
    runtime: tokio::runtime::Handle,
    /// Set when the worker gives up while the channel is full: the stream
    /// then ends with this error instead of looking complete.
    abort: Arc<std::sync::Mutex<Option<Status>>>,
}

impl Outbound {
    /// Waits while the channel is full, so a slow client slows this reader; fails
    /// once the client is gone (which stops the read promptly) or has not read
    /// anything for the idle timeout (so a stalled reader cannot pin a worker).
    fn send(&self, item: Result<FlightData, Status>) -> Result<()> {
        use tokio::sync::mpsc::error::SendTimeoutError;
        self.runtime
            .block_on(self.tx.send_timeout(item, self.idle))
            .map_err(|e| match e {
                SendTimeoutError::Timeout(_) => Error::DeadlineExceeded(format!(
                    "the client read nothing for {} s: download aborted (--idle-timeout)",
                    self.idle.as_secs()
                )),
                SendTimeoutError::Closed(_) => {
                    Error::Cancelled("the client went away during DoGet".into())
                }
            })
    }
}

/// The DoGet worker: reads row groups, encodes each batch, and hands messages
/// to the gRPC stream through the bounded channel.
fn stream_dataset(
    schema: arrow_schema::SchemaRef,
    reader: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    mut encoder: Encoder,
    out: &Outbound,
    mut call: Call,
) {
    let send = |call: &mut Call, message: FlightData| -> Result<()> {
        call.bytes += (message.data_header.len() + message.data_body.len()) as u64;
        out.send(Ok(message))
    };
    let mut result = send(&mut call, encoder.schema(&schema));
    let mut messages = Vec::new();
    if result.is_ok() {
        for batch in reader {
            let step = batch
                .map_err(|e| Error::Internal(format!("reading Parquet: {e}")))
                .and_then(|batch| {
                    call.rows += batch.num_rows() as u64;
                    encoder.batch(&batch, &mut messages)
                })
                .and_then(|()| {
                    messages
                        .drain(..)
                        .try_for_each(|message| send(&mut call, message))
                });
            if let Err(err) = step {
                result = Err(err);
                break;
            }
        }
    }
    match result {
        Ok(()) => call.finish(Code::Ok, ""),
        Err(err) => {
            call.finish(err.code(), err.message());
            // The stream must end with this error, never look complete. The
            // abort flag covers a full channel whose reader stalled.
            *out.abort.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.clone().into());
            if !matches!(err, Error::Cancelled(_) | Error::DeadlineExceeded(_)) {
                let _ = out.send(Err(err.into()));
            }
        }
    }
}

/// The DoGet response stream: the worker's messages, unless the worker gave up,
/// in which case its error comes next and the stream ends. Without this, a
/// stalled reader whose worker timed out would see a truncated stream end OK.
struct Abortable {
    rx: mpsc::Receiver<Result<FlightData, Status>>,
    abort: Arc<std::sync::Mutex<Option<Status>>>,
    done: bool,
}

impl Abortable {
    fn take_abort(&mut self) -> Option<Status> {
        let status = self.abort.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.done |= status.is_some();
        status
    }
}

impl Stream for Abortable {
    type Item = Result<FlightData, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(status) = self.take_abort() {
            return Poll::Ready(Some(Err(status)));
        }
        match self.rx.poll_recv(cx) {
            // The worker finished: an abort it recorded last still wins.
            Poll::Ready(None) => Poll::Ready(self.take_abort().map(Err)),
            other => other,
        }
    }
}

/// What the DoPut pump hands the upload worker.
enum Inbound {
    Data(FlightData),
    /// The stream ended cleanly and the client is still there: commit.
    Commit,
    /// The stream failed or the client vanished: discard the upload.
    Abort(Error),
}

struct PutSummary {
    rows: u64,
    bytes: u64,
}

/// The DoPut worker: decodes messages and writes batches into a temporary file,
/// committing only on an explicit [`Inbound::Commit`]. Any other ending drops
/// the upload, which removes the temporary file and leaves the old dataset.
fn ingest(
    store: &Store,
    name: &str,
    first: FlightData,
    mut rx: mpsc::Receiver<Inbound>,
) -> Result<PutSummary> {
    let mut decoder = Decoder::new();
    let mut upload = None;
    let mut next = Some(first);
    loop {
        if let Some(data) = next.take() {
            match decoder.decode(&data)? {
                Decoded::Schema(schema) => upload = Some(store.create(name, schema)?),
                Decoded::Batch(batch) => match upload.as_mut() {
                    Some(upload) => upload.write(&batch)?,
                    None => {
                        return Err(Error::Internal(
                            "a batch arrived with no upload open".into(),
                        ))
                    }
                },
                Decoded::Nothing => {}
            }
        }
        match rx.blocking_recv() {
            Some(Inbound::Data(data)) => next = Some(data),
            Some(Inbound::Commit) => break,
            Some(Inbound::Abort(err)) => return Err(err),
            None => return Err(Error::Cancelled("the upload was abandoned".into())),
        }
    }
    let upload = upload.ok_or_else(|| {
        Error::InvalidArgument(
            "the DoPut stream ended without a schema message: nothing to store".into(),
        )
    })?;
    let rows = upload.rows();
    let bytes = upload.commit()?;
    Ok(PutSummary { rows, bytes })
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

/// Whether a request's HTTP/2 body ended cleanly (END_STREAM), as opposed to a
/// cancel (RST_STREAM), which tonic reports to handlers as a normal end.
#[derive(Debug, Clone, Default)]
pub struct CleanEnd(Arc<std::sync::atomic::AtomicBool>);

impl CleanEnd {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct TrackEnd<B> {
    inner: B,
    clean: CleanEnd,
}

impl<B> tonic::codegen::Body for TrackEnd<B>
where
    B: tonic::codegen::Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = polled {
            self.clean
                .0
                .store(true, std::sync::atomic::Ordering::SeqCst);
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

/// Wraps the service so every request carries a [`CleanEnd`] flag.
#[derive(Debug, Clone)]
pub struct TrackEndOfStream<S>(pub S);

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
        let request = request.map(|inner| tonic::body::Body::new(TrackEnd { inner, clean }));
        self.0.call(request)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for TrackEndOfStream<S> {
    const NAME: &'static str = S::NAME;
}
