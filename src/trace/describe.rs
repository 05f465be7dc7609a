//! What a traced event says: each gRPC message decoded field by field (the
//! Flight messages by their proto types, a FlightData's IPC header by the
//! Arrow format), and headers with credentials reduced to scheme and length.
//!
//! Everything here turns bytes a peer sent into a [`Value`]; nothing here
//! trusts them. Bodies are never copied out: sizes and a SHA-256 only.

use prost::bytes::Bytes;
use prost::Message as _;

use crate::json::Value;
use crate::proto;

/// The Flight RPCs, by the last segment of the request path; anything else
/// (reflection, health, unknown) is traced with sizes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    Handshake,
    ListFlights,
    GetFlightInfo,
    PollFlightInfo,
    GetSchema,
    DoGet,
    DoPut,
    DoExchange,
    DoAction,
    ListActions,
    Other,
}

const FLIGHT_PREFIX: &str = "/arrow.flight.protocol.FlightService/";

impl Rpc {
    pub fn of_path(path: &str) -> Rpc {
        match path.strip_prefix(FLIGHT_PREFIX) {
            Some("Handshake") => Rpc::Handshake,
            Some("ListFlights") => Rpc::ListFlights,
            Some("GetFlightInfo") => Rpc::GetFlightInfo,
            Some("PollFlightInfo") => Rpc::PollFlightInfo,
            Some("GetSchema") => Rpc::GetSchema,
            Some("DoGet") => Rpc::DoGet,
            Some("DoPut") => Rpc::DoPut,
            Some("DoExchange") => Rpc::DoExchange,
            Some("DoAction") => Rpc::DoAction,
            Some("ListActions") => Rpc::ListActions,
            _ => Rpc::Other,
        }
    }

    /// The proto message types of a request and of a response.
    fn types(self) -> (&'static str, &'static str) {
        match self {
            Rpc::Handshake => ("HandshakeRequest", "HandshakeResponse"),
            Rpc::ListFlights => ("Criteria", "FlightInfo"),
            Rpc::GetFlightInfo => ("FlightDescriptor", "FlightInfo"),
            Rpc::PollFlightInfo => ("FlightDescriptor", "PollInfo"),
            Rpc::GetSchema => ("FlightDescriptor", "SchemaResult"),
            Rpc::DoGet => ("Ticket", "FlightData"),
            Rpc::DoPut => ("FlightData", "PutResult"),
            Rpc::DoExchange => ("FlightData", "FlightData"),
            Rpc::DoAction => ("Action", "Result"),
            Rpc::ListActions => ("Empty", "ActionType"),
            Rpc::Other => ("", ""),
        }
    }
}

/// Fields of one gRPC message of `rpc`, sent by the client (`request`) or
/// the server. `fields` starts with `type`; a message that does not decode
/// gets `problems` saying why.
pub fn message(rpc: Rpc, request: bool, payload: &Bytes) -> Vec<(String, Value)> {
    let (req, resp) = rpc.types();
    let kind = if request { req } else { resp };
    let mut fields = Vec::new();
    if kind.is_empty() {
        return fields;
    }
    field(&mut fields, "type", kind);
    let decoded: Result<Vec<(String, Value)>, prost::DecodeError> =
        match kind {
            "HandshakeRequest" => proto::HandshakeRequest::decode(payload.clone())
                .map(|m| handshake(m.protocol_version, &m.payload)),
            "HandshakeResponse" => proto::HandshakeResponse::decode(payload.clone())
                .map(|m| handshake(m.protocol_version, &m.payload)),
            "Criteria" => proto::Criteria::decode(payload.clone())
                .map(|m| vec![("expression".into(), bytes(&m.expression))]),
            "FlightDescriptor" => proto::FlightDescriptor::decode(payload.clone())
                .map(|m| object_fields(descriptor(&m))),
            "FlightInfo" => proto::FlightInfo::decode(payload.clone()).map(|m| flight_info(&m)),
            "PollInfo" => proto::PollInfo::decode(payload.clone()).map(|m| poll_info(&m)),
            "SchemaResult" => proto::SchemaResult::decode(payload.clone())
                .map(|m| vec![("schema".into(), encapsulated_schema(&m.schema))]),
            "Ticket" => proto::Ticket::decode(payload.clone())
                .map(|m| vec![("ticket".into(), bytes(&m.ticket))]),
            "FlightData" => proto::FlightData::decode(payload.clone()).map(|m| flight_data(&m)),
            "PutResult" => proto::PutResult::decode(payload.clone())
                .map(|m| vec![("app_metadata".into(), bytes(&m.app_metadata))]),
            "Action" => proto::Action::decode(payload.clone()).map(|m| {
                vec![
                    ("action_type".into(), Value::from(text(&m.r#type))),
                    ("body".into(), bytes(&m.body)),
                ]
            }),
            "Result" => proto::Result::decode(payload.clone())
                .map(|m| vec![("body".into(), bytes(&m.body))]),
            "ActionType" => proto::ActionType::decode(payload.clone()).map(|m| {
                vec![
                    ("action_type".into(), Value::from(text(&m.r#type))),
                    ("description".into(), Value::from(text(&m.description))),
                ]
            }),
            "Empty" => proto::Empty::decode(payload.clone()).map(|_| Vec::new()),
            _ => Ok(Vec::new()),
        };
    match decoded {
        Ok(more) => fields.extend(more),
        Err(err) => field(
            &mut fields,
            "problems",
            Value::Array(vec![Value::from(format!("not a valid {kind}: {err}"))]),
        ),
    }
    fields
}

/// Entries of a list (fields, nodes, buffers) written out at most; a peer's
/// header can hold millions, and the line must stay readable and bounded.
const MAX_LISTED: usize = 1024;
/// Problems written out per message; the rest are counted.
const MAX_PROBLEMS: usize = 16;
/// Characters of peer text (tickets, names, metadata) written out.
const MAX_TEXT_CHARS: usize = 256;

/// What is off in one message, as sentences.
#[derive(Default)]
pub struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    fn has_room(&mut self) -> bool {
        let room = self.list.len() < MAX_PROBLEMS;
        if !room {
            self.more += 1;
        }
        room
    }

    fn push(&mut self, problem: impl Into<String>) {
        if self.list.len() < MAX_PROBLEMS {
            self.list.push(problem.into());
        } else {
            self.more += 1;
        }
    }

    /// Adds `problems` to `fields`, unless there are none.
    fn append_to(self, fields: &mut Vec<(String, Value)>) {
        if self.list.is_empty() {
            return;
        }
        let mut list: Vec<Value> = self
            .list
            .into_iter()
            .map(|p| Value::from(text(&p)))
            .collect();
        if self.more > 0 {
            list.push(Value::from(format!("… and {} more", self.more)));
        }
        fields.push(("problems".into(), Value::Array(list)));
    }
}

/// At most [`MAX_LISTED`] values, then `"… N more"`.
fn listed<T>(items: impl Iterator<Item = T>, mut value: impl FnMut(T) -> Value) -> Value {
    let mut out = Vec::new();
    let mut more = 0usize;
    for item in items {
        if out.len() < MAX_LISTED {
            out.push(value(item));
        } else {
            more += 1;
        }
    }
    if more > 0 {
        out.push(Value::from(format!("… {more} more")));
    }
    Value::Array(out)
}

/// Peer text, cut to [`MAX_TEXT_CHARS`] characters (then `…`).
pub fn text(s: &str) -> String {
    match s.char_indices().nth(MAX_TEXT_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

fn field(fields: &mut Vec<(String, Value)>, key: &str, value: impl Into<Value>) {
    fields.push((key.to_string(), value.into()));
}

fn object_fields(value: Value) -> Vec<(String, Value)> {
    match value {
        Value::Object(fields) => fields,
        other => vec![("value".into(), other)],
    }
}

/// A handshake payload may carry credentials (older Flight clients put a
/// BasicAuth message there): only its length is shown.
fn handshake(version: u64, payload: &Bytes) -> Vec<(String, Value)> {
    vec![
        ("protocol_version".into(), Value::from(version)),
        ("payload".into(), redacted("", payload.len())),
    ]
}

/// `<redacted, N bytes>`, after a scheme such as `Bearer` if there is one.
pub fn redacted(scheme: &str, len: usize) -> Value {
    let sep = if scheme.is_empty() { "" } else { " " };
    Value::from(format!("{scheme}{sep}<redacted, {len} bytes>"))
}

/// Bytes from the wire: as text when they are UTF-8 without control
/// characters, else `{"hex": …, "bytes": N}` (the first 64 bytes in hex).
pub fn bytes(data: &[u8]) -> Value {
    match std::str::from_utf8(data) {
        Ok(s) if !s.chars().any(char::is_control) => {
            if s.chars().nth(MAX_TEXT_CHARS).is_some() {
                Value::object([
                    ("text", Value::from(text(s))),
                    ("bytes", Value::from(s.len())),
                ])
            } else {
                Value::from(s)
            }
        }
        _ => {
            const SHOWN: usize = 64;
            let mut hex = hex(&data[..data.len().min(SHOWN)]);
            if data.len() > SHOWN {
                hex.push('…');
            }
            Value::object([
                ("hex", Value::from(hex)),
                ("bytes", Value::from(data.len())),
            ])
        }
    }
}

pub fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn descriptor(d: &proto::FlightDescriptor) -> Value {
    let kind = proto::flight_descriptor::DescriptorType::try_from(d.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("unknown ({})", d.r#type));
    let mut fields = vec![("descriptor_type".to_string(), Value::from(kind))];
    if !d.path.is_empty() {
        fields.push((
            "path".into(),
            listed(d.path.iter(), |p| Value::from(text(p))),
        ));
    }
    if !d.cmd.is_empty() {
        fields.push(("cmd".into(), bytes(&d.cmd)));
    }
    Value::Object(fields)
}

fn timestamp(t: &Option<prost_types::Timestamp>) -> Value {
    let Some(t) = t else { return Value::Null };
    match (u64::try_from(t.seconds), u32::try_from(t.nanos)) {
        (Ok(secs), Ok(nanos)) if nanos < 1_000_000_000 => {
            let time = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
            Value::from(crate::log::timestamp(time))
        }
        _ => Value::from(format!("invalid ({}s {}ns)", t.seconds, t.nanos)),
    }
}

fn flight_info(info: &proto::FlightInfo) -> Vec<(String, Value)> {
    let endpoints = info
        .endpoint
        .iter()
        .map(|e| {
            Value::object([
                (
                    "ticket",
                    e.ticket.as_ref().map_or(Value::Null, |t| bytes(&t.ticket)),
                ),
                (
                    "locations",
                    listed(e.location.iter(), |l| Value::from(text(&l.uri))),
                ),
                ("expiration_time", timestamp(&e.expiration_time)),
                ("app_metadata", bytes(&e.app_metadata)),
            ])
        })
        .collect();
    vec![
        ("schema".into(), encapsulated_schema(&info.schema)),
        (
            "flight_descriptor".into(),
            info.flight_descriptor
                .as_ref()
                .map_or(Value::Null, descriptor),
        ),
        ("endpoints".into(), Value::Array(endpoints)),
        ("total_records".into(), Value::from(info.total_records)),
        ("total_bytes".into(), Value::from(info.total_bytes)),
        ("ordered".into(), Value::from(info.ordered)),
        ("app_metadata".into(), bytes(&info.app_metadata)),
    ]
}

fn poll_info(poll: &proto::PollInfo) -> Vec<(String, Value)> {
    vec![
        (
            "info".into(),
            poll.info
                .as_ref()
                .map_or(Value::Null, |i| Value::Object(flight_info(i))),
        ),
        (
            "flight_descriptor".into(),
            poll.flight_descriptor
                .as_ref()
                .map_or(Value::Null, descriptor),
        ),
        (
            "progress".into(),
            poll.progress.map_or(Value::Null, Value::from),
        ),
        ("expiration_time".into(), timestamp(&poll.expiration_time)),
    ]
}

fn flight_data(data: &proto::FlightData) -> Vec<(String, Value)> {
    let mut fields = Vec::new();
    if let Some(d) = &data.flight_descriptor {
        field(&mut fields, "flight_descriptor", descriptor(d));
    }
    field(&mut fields, "header_bytes", data.data_header.len());
    field(&mut fields, "body_bytes", data.data_body.len());
    field(&mut fields, "body_sha256", sha256(&data.data_body));
    if !data.app_metadata.is_empty() {
        field(&mut fields, "app_metadata", bytes(&data.app_metadata));
    }
    let mut problems = Problems::default();
    if data.data_header.is_empty() {
        if !data.data_body.is_empty() {
            problems.push("a body without an IPC header".to_string());
        }
    } else {
        match arrow_ipc::root_as_message(&data.data_header) {
            Ok(message) => {
                field(
                    &mut fields,
                    "ipc",
                    ipc_message(&message, data.data_body.len(), &mut problems),
                );
            }
            Err(err) => problems.push(format!("data_header is not an IPC message: {err}")),
        }
    }
    problems.append_to(&mut fields);
    fields
}

/// An IPC message header: its type and version, then what that type holds,
/// checked against the body it came with (`body_len`).
fn ipc_message(message: &arrow_ipc::Message, body_len: usize, problems: &mut Problems) -> Value {
    let kind = message.header_type();
    let mut fields = vec![
        (
            "message".to_string(),
            Value::from(kind.variant_name().unwrap_or("unknown")),
        ),
        (
            "version".into(),
            Value::from(message.version().variant_name().unwrap_or("unknown")),
        ),
    ];
    let declared = message.bodyLength();
    fields.push(("body_length".into(), Value::from(declared)));
    if usize::try_from(declared).ok() != Some(body_len) {
        problems.push(format!(
            "bodyLength says {declared} bytes, the body has {body_len}"
        ));
    }
    if let Some(schema) = message.header_as_schema() {
        fields.extend(schema_fields(&schema, problems));
    } else if let Some(batch) = message.header_as_record_batch() {
        fields.extend(batch_fields(&batch, body_len, problems));
    } else if let Some(dictionary) = message.header_as_dictionary_batch() {
        fields.push(("id".into(), Value::from(dictionary.id())));
        fields.push(("is_delta".into(), Value::from(dictionary.isDelta())));
        match dictionary.data() {
            Some(batch) => fields.push((
                "data".into(),
                Value::Object(batch_fields(&batch, body_len, problems)),
            )),
            None => problems.push("a DictionaryBatch without data"),
        }
    } else if body_len > 0 {
        problems.push(format!(
            "a {} message with a {body_len}-byte body",
            kind.variant_name().unwrap_or("unknown")
        ));
    }
    if let Some(metadata) = message.custom_metadata() {
        fields.push(("metadata".into(), key_values(metadata.iter())));
    }
    Value::Object(fields)
}

fn key_values<'a>(pairs: impl Iterator<Item = arrow_ipc::KeyValue<'a>>) -> Value {
    Value::Object(
        pairs
            .take(MAX_LISTED)
            .map(|kv| {
                (
                    text(kv.key().unwrap_or_default()),
                    Value::from(text(kv.value().unwrap_or_default())),
                )
            })
            .collect(),
    )
}

fn schema_fields(schema: &arrow_ipc::Schema, problems: &mut Problems) -> Vec<(String, Value)> {
    let mut fields = vec![(
        "endianness".to_string(),
        Value::from(schema.endianness().variant_name().unwrap_or("unknown")),
    )];
    let columns = schema
        .fields()
        .map(|list| listed(list.iter(), |f| schema_field(f, problems)))
        .unwrap_or(Value::Array(Vec::new()));
    fields.push(("fields".into(), columns));
    if let Some(features) = schema.features() {
        let names = features
            .iter()
            .map(|f| Value::from(f.variant_name().unwrap_or("unknown")))
            .collect();
        fields.push(("features".into(), Value::Array(names)));
    }
    if let Some(metadata) = schema.custom_metadata() {
        fields.push(("metadata".into(), key_values(metadata.iter())));
    }
    fields
}

fn schema_field(field: arrow_ipc::Field, problems: &mut Problems) -> Value {
    let name = field.name().unwrap_or_default().to_string();
    // Arrow's conversion panics on some malformed types: a peer's bytes must
    // not take the tracer down.
    let data_type = crate::ipc::contain_panic(|| Ok(arrow_schema::Field::from(field)))
        .map(|f| f.data_type().to_string());
    let data_type = match data_type {
        Ok(t) => t,
        Err(err) => {
            problems.push(format!("field {name:?} has no valid type: {err}"));
            field
                .type_type()
                .variant_name()
                .unwrap_or("unknown")
                .to_string()
        }
    };
    let mut fields = vec![
        ("name".to_string(), Value::from(text(&name))),
        ("type".into(), Value::from(data_type)),
        ("nullable".into(), Value::from(field.nullable())),
    ];
    if let Some(dictionary) = field.dictionary() {
        let index = dictionary.indexType().map_or(Value::Null, |int| {
            Value::from(format!(
                "{}int{}",
                if int.is_signed() { "" } else { "u" },
                int.bitWidth()
            ))
        });
        fields.push((
            "dictionary".into(),
            Value::object([
                ("id", Value::from(dictionary.id())),
                ("index_type", index),
                ("ordered", Value::from(dictionary.isOrdered())),
            ]),
        ));
    }
    if let Some(metadata) = field.custom_metadata() {
        fields.push(("metadata".into(), key_values(metadata.iter())));
    }
    if let Some(children) = field.children() {
        if !children.is_empty() {
            fields.push((
                "children".into(),
                listed(children.iter(), |c| schema_field(c, problems)),
            ));
        }
    }
    Value::Object(fields)
}

/// The Arrow format asks for buffers at 8-byte aligned offsets (64 is
/// recommended) inside the body, and for the body to be padded to 8 bytes.
const ALIGNMENT: i64 = 8;

fn batch_fields(
    batch: &arrow_ipc::RecordBatch,
    body_len: usize,
    problems: &mut Problems,
) -> Vec<(String, Value)> {
    let mut fields = vec![("length".to_string(), Value::from(batch.length()))];
    let nodes = listed(batch.nodes().into_iter().flatten(), |n| {
        Value::Array(vec![Value::from(n.length()), Value::from(n.null_count())])
    });
    fields.push(("nodes".into(), nodes));
    let mut buffers = Vec::new();
    let mut unlisted = 0usize;
    for (i, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        if offset % ALIGNMENT != 0 && problems.has_room() {
            problems.push(format!(
                "buffer {i} starts at {offset}, not a multiple of {ALIGNMENT}"
            ));
        }
        let end = offset.checked_add(length);
        let outside =
            offset < 0 || length < 0 || end.is_none_or(|end| end as u128 > body_len as u128);
        if outside && problems.has_room() {
            problems.push(format!(
                "buffer {i} ({offset}+{length}) lies outside the {body_len}-byte body"
            ));
        }
        if buffers.len() < MAX_LISTED {
            buffers.push(Value::Array(vec![Value::from(offset), Value::from(length)]));
        } else {
            unlisted += 1;
        }
    }
    if unlisted > 0 {
        buffers.push(Value::from(format!("… {unlisted} more")));
    }
    fields.push(("buffers".into(), Value::Array(buffers)));
    if body_len as i64 % ALIGNMENT != 0 {
        problems.push(format!(
            "the body is {body_len} bytes, not padded to a multiple of {ALIGNMENT}"
        ));
    }
    let compression = batch.compression().map_or(Value::Null, |c| {
        Value::object([
            (
                "codec",
                Value::from(c.codec().variant_name().unwrap_or("unknown")),
            ),
            (
                "method",
                Value::from(c.method().variant_name().unwrap_or("unknown")),
            ),
        ])
    });
    fields.push(("compression".into(), compression));
    if let Some(counts) = batch.variadicBufferCounts() {
        fields.push((
            "variadic_buffer_counts".into(),
            Value::Array(counts.iter().map(Value::from).collect()),
        ));
    }
    fields
}

/// A schema as FlightInfo and SchemaResult carry it: an encapsulated IPC
/// message (0xFFFFFFFF, a 4-byte length, the flatbuffer; or the pre-1.0 form
/// without the marker). Empty means "no schema".
fn encapsulated_schema(data: &[u8]) -> Value {
    if data.is_empty() {
        return Value::Null;
    }
    let mut problems = Problems::default();
    let header = match data {
        [0xff, 0xff, 0xff, 0xff, a, b, c, d, rest @ ..] => {
            Some((u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest))
        }
        [a, b, c, d, rest @ ..] => {
            problems.push("no continuation marker (pre-1.0 IPC format)".to_string());
            Some((u32::from_le_bytes([*a, *b, *c, *d]) as usize, rest))
        }
        _ => None,
    };
    let mut fields = vec![("bytes".to_string(), Value::from(data.len()))];
    match header {
        Some((len, rest)) if len <= rest.len() => match arrow_ipc::root_as_message(&rest[..len]) {
            Ok(message) => {
                let body = rest.len() - len;
                match ipc_message(&message, body, &mut problems) {
                    Value::Object(more) => fields.extend(more),
                    other => fields.push(("ipc".into(), other)),
                }
            }
            Err(err) => problems.push(format!("not an IPC message: {err}")),
        },
        _ => problems.push("too short for an IPC message".to_string()),
    }
    problems.append_to(&mut fields);
    Value::Object(fields)
}

/// Header names whose values are credentials: shown as scheme and length.
const SECRET_HEADERS: [&str; 5] = [
    "authorization",
    "auth-token-bin",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Parts of header names that gateways and services use for credentials
/// (`x-api-key`, `x-auth-token`, `session-id`, …): redacted too.
const SECRET_PARTS: [&str; 7] = [
    "auth", "token", "key", "secret", "passw", "session", "cookie",
];

/// Schemes shown before a redacted value; anything else may be part of the
/// secret itself.
const SCHEMES: [&str; 4] = ["Basic", "Bearer", "Digest", "Negotiate"];

fn is_secret(name: &str, value: &tonic::codegen::http::HeaderValue) -> bool {
    value.is_sensitive()
        || SECRET_HEADERS.contains(&name)
        || SECRET_PARTS.iter().any(|part| name.contains(part))
}

/// Headers in the order they came, repeated names as arrays; credentials
/// redacted, binary (`-bin`) values as sent (base64).
pub fn headers(map: &tonic::codegen::http::HeaderMap) -> Value {
    let mut fields: Vec<(String, Value)> = Vec::new();
    for (name, value) in map {
        let name = name.as_str();
        let shown = if is_secret(name, value) {
            let raw = value.as_bytes();
            let scheme = raw
                .iter()
                .position(|&b| b == b' ')
                .and_then(|at| std::str::from_utf8(&raw[..at]).ok())
                .and_then(|s| SCHEMES.iter().find(|known| known.eq_ignore_ascii_case(s)));
            match scheme {
                Some(scheme) => redacted(scheme, raw.len() - scheme.len() - 1),
                None => redacted("", raw.len()),
            }
        } else {
            Value::from(text(&String::from_utf8_lossy(value.as_bytes())))
        };
        match fields.iter_mut().find(|(k, _)| k == name) {
            Some((_, Value::Array(values))) => values.push(shown),
            Some((_, first)) => {
                let first = std::mem::replace(first, Value::Null);
                fields
                    .iter_mut()
                    .find(|(k, _)| k == name)
                    .expect("just found")
                    .1 = Value::Array(vec![first, shown]);
            }
            None => fields.push((name.to_string(), shown)),
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::{HeaderMap, HeaderValue};

    #[test]
    fn credentials_are_reduced_to_scheme_and_length() {
        let mut map = HeaderMap::new();
        map.insert("authorization", HeaderValue::from_static("Bearer abcdef"));
        map.insert("auth-token-bin", HeaderValue::from_static("c2VjcmV0"));
        map.append("x-note", HeaderValue::from_static("one"));
        map.append("x-note", HeaderValue::from_static("two"));
        let text = headers(&map).to_string();
        assert_eq!(
            text,
            r#"{"authorization":"Bearer <redacted, 6 bytes>","auth-token-bin":"<redacted, 8 bytes>","x-note":["one","two"]}"#
        );
        assert!(!text.contains("abcdef") && !text.contains("c2VjcmV0"));
    }

    #[test]
    fn any_header_that_looks_like_a_credential_is_redacted_and_only_known_schemes_shown() {
        let mut map = HeaderMap::new();
        map.insert("x-api-key", HeaderValue::from_static("k-123456"));
        map.insert("x-auth-token", HeaderValue::from_static("t-abcdef"));
        map.insert("authorization", HeaderValue::from_static("alice:my secret"));
        let mut sensitive = HeaderValue::from_static("s3cr3t");
        sensitive.set_sensitive(true);
        map.insert("x-custom", sensitive);
        map.insert("x-plain", HeaderValue::from_static("visible"));
        let text = headers(&map).to_string();
        for secret in ["k-123456", "t-abcdef", "alice", "my secret", "s3cr3t"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(
            text.contains(r#""authorization":"<redacted, 15 bytes>""#),
            "{text}"
        );
        assert!(text.contains(r#""x-plain":"visible""#), "{text}");
    }

    #[test]
    fn lists_problems_and_text_from_a_peer_are_bounded() {
        let long = "t".repeat(10_000);
        let shown = bytes(long.as_bytes());
        assert_eq!(shown.get("bytes").and_then(Value::as_u64), Some(10_000));
        assert!(
            shown
                .get("text")
                .and_then(Value::as_str)
                .unwrap()
                .chars()
                .count()
                <= 257
        );
        let value = listed(0..5000u64, Value::from);
        let items = value.as_array().unwrap();
        assert_eq!(items.len(), MAX_LISTED + 1);
        assert_eq!(items[MAX_LISTED], Value::from("… 3976 more"));
        let mut problems = Problems::default();
        for i in 0..100 {
            if problems.has_room() {
                problems.push(format!("problem {i}"));
            }
        }
        let mut fields = Vec::new();
        problems.append_to(&mut fields);
        let list = fields[0].1.as_array().unwrap();
        assert_eq!(list.len(), MAX_PROBLEMS + 1);
        assert_eq!(list[MAX_PROBLEMS], Value::from("… and 84 more"));
    }

    #[test]
    fn bytes_are_text_when_printable_else_hex_and_length() {
        assert_eq!(bytes(b"trips"), Value::from("trips"));
        assert_eq!(
            bytes(&[0, 1, 0xff]).to_string(),
            r#"{"hex":"0001ff","bytes":3}"#
        );
        let long = vec![7u8; 100];
        let shown = bytes(&long);
        assert_eq!(shown.get("bytes").and_then(Value::as_u64), Some(100));
        assert!(shown
            .get("hex")
            .and_then(Value::as_str)
            .unwrap()
            .ends_with('…'));
    }

    #[test]
    fn a_handshake_payload_is_never_shown() {
        let request = proto::HandshakeRequest {
            protocol_version: 0,
            payload: Bytes::from_static(b"user:secret"),
        };
        let fields = message(Rpc::Handshake, true, &Bytes::from(request.encode_to_vec()));
        let text = Value::Object(fields).to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("<redacted, 11 bytes>"), "{text}");
    }

    #[test]
    fn overrunning_buffers_and_unpadded_bodies_are_problems() {
        use arrow_array::{Int32Array, RecordBatch};
        let batch = RecordBatch::try_from_iter([(
            "a",
            std::sync::Arc::new(Int32Array::from(vec![1, 2, 3])) as _,
        )])
        .unwrap();
        let mut encoder = crate::ipc::Encoder::new(Default::default(), 1 << 20, 1 << 24);
        let mut messages = Vec::new();
        encoder.batch(&batch, &mut messages).unwrap();
        let data = messages.last().unwrap();
        let good = flight_data(data);
        assert!(!Value::Object(good.clone()).to_string().contains("problems"));
        // The same header with a 7-byte body: the values buffer (12 bytes)
        // now overruns it, and 7 is not padded to 8.
        let mut short = data.clone();
        short.data_body = data.data_body.slice(..7);
        let text = Value::Object(flight_data(&short)).to_string();
        assert!(text.contains("lies outside"), "{text}");
        assert!(text.contains("not padded"), "{text}");
        assert!(text.contains("bodyLength says"), "{text}");
    }

    #[test]
    fn garbage_is_a_problem_not_a_panic() {
        for rpc in [Rpc::DoGet, Rpc::GetFlightInfo, Rpc::DoAction] {
            let fields = message(rpc, false, &Bytes::from_static(&[0xff; 7]));
            assert!(Value::Object(fields).to_string().contains("not a valid"));
        }
        let data = proto::FlightData {
            data_header: Bytes::from_static(&[1, 2, 3, 4, 5, 6, 7, 8]),
            ..Default::default()
        };
        let text = Value::Object(flight_data(&data)).to_string();
        assert!(text.contains("not an IPC message"), "{text}");
    }
}
