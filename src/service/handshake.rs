//! Handshake: Basic credentials traded for a bearer token (the cookbook's
//! `authenticate_basic_token`), or a `BasicAuth` payload from older clients.

use prost::bytes::Bytes;
use tonic::codegen::tokio_stream;
use tonic::{Request, Response, Status, Streaming};

use super::{credentials_of, finish, BoxStream, Hangar};
use crate::auth::{self, Credentials, Principal};
use crate::error::{Error, Result};
use crate::log::Call;
use crate::proto::{BasicAuth, HandshakeRequest, HandshakeResponse};

/// How long a client may take to send its first handshake message when it
/// carries no `authorization` header: a login is one small message, so a
/// peer that sends nothing is not waited for long.
const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub(super) async fn handshake(
    service: &Hangar,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
    let mut call = service.call("Handshake", &request);
    // Not a call slot. A handshake that carries its credentials in a header
    // goes straight to the (bounded, queued) password check; one that does
    // not may sit waiting for its first message, so those have a small
    // budget of their own, per peer and in all.
    let carries_header = request.metadata().contains_key("authorization")
        || request.metadata().contains_key("auth-token-bin");
    let _slot = if carries_header {
        None
    } else {
        match service.handshake_slot(request.remote_addr().map(|a| a.ip())) {
            Ok(slot) => Some(slot),
            Err(err) => return Err(call.fail(err)),
        }
    };
    if service.auth.is_none() {
        // Without authentication there is nothing to trade: one empty answer,
        // as Flight servers without auth give.
        call.user = call.certificate.clone();
        finish(call, Ok(()))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        return Ok(Response::new(Box::pin(tokio_stream::iter([Ok(reply)]))));
    }
    let result = log_in(service, &mut call, request).await;
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
        Response::new(Box::pin(tokio_stream::iter([Ok(reply)])) as BoxStream<HandshakeResponse>);
    response.metadata_mut().insert("authorization", header);
    Ok(response)
}

/// Credentials from the `authorization` header, else a `BasicAuth` protobuf
/// in the first message's payload. Returns the principal and a fresh token.
async fn log_in(
    service: &Hangar,
    call: &mut Call,
    request: Request<Streaming<HandshakeRequest>>,
) -> Result<(Principal, String)> {
    let auth = service
        .auth
        .as_ref()
        .ok_or_else(|| Error::Internal("log in without authentication configured".into()))?;
    let peer = request.remote_addr().map(|a| a.ip());
    let credentials = match credentials_of(&request) {
        Ok(credentials) => credentials,
        Err(Error::Unauthenticated(m)) if m == auth::NO_CREDENTIALS => {
            first_message_credentials(request.into_inner()).await?
        }
        Err(err) => return Err(err),
    };
    match credentials {
        // Re-doing the handshake with a token returns that same token: it
        // neither extends a login past --token-ttl nor mints new tokens.
        Credentials::Bearer(token) => Ok((auth.verify_token(&token)?, token)),
        basic => {
            let principal = service.authenticate(auth, call, basic, peer).await?;
            let token = auth.issue(&principal)?;
            Ok((principal, token))
        }
    }
}

/// Reads a `BasicAuth` payload from the first handshake message. A client
/// that opens the stream and sends nothing must not hold a handler forever.
async fn first_message_credentials(mut stream: Streaming<HandshakeRequest>) -> Result<Credentials> {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, stream.message())
        .await
        .map_err(|_| Error::Unauthenticated(auth::NO_CREDENTIALS.into()))?
        .map_err(|s| match s.code() {
            // The transport's request size cap: say so, not "unauthenticated".
            tonic::Code::ResourceExhausted => Error::ResourceExhausted(s.message().to_string()),
            _ => Error::Unauthenticated(format!("reading the handshake: {}", s.message())),
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
    Ok(Credentials::Basic {
        user: basic.username,
        password: basic.password,
    })
}
