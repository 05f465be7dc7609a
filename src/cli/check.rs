//! `hangar check URI`: audits any Flight server, message by message, and
//! reports one PASS, FAIL or SKIP line per check.
//!
//! It works on raw `FlightData` (the generated client, not a decoder that
//! would hide the order of messages): each DoGet stream is watched by a
//! [`StreamAudit`], which reads every IPC header with `arrow_ipc`, and decoded
//! with [`ipc::Decoder`] for the schema and the rows. The streams are those of
//! one dataset ListFlights names (the smallest non-empty one, and an empty one
//! if there is one) and, with `--write`, of two datasets the check uploads
//! itself under a random name and always drops afterwards.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, DictionaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, LargeStringArray,
    ListArray, RecordBatch, StringArray, StructArray, TimestampMicrosecondArray, UInt64Array,
    UInt8Array,
};
use arrow_buffer::NullBuffer;
use arrow_ipc::writer::IpcWriteOptions;
use arrow_ipc::MessageHeader;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef};
use prost::bytes::Bytes;
use prost::Message as _;
use tonic::codegen::tokio_stream;
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

use super::connect::{self, Client, Connector};
use super::transfer::{open_endpoint, path_descriptor};
use super::Failure;
use crate::ipc::{self, Decoded, Decoder, Encoder};
use crate::json::Value;
use crate::log::{code_name, quote};
use crate::proto::flight_descriptor::DescriptorType;
use crate::proto::{Action, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo, Ticket};

/// The largest message a gRPC client accepts unless told otherwise (grpc-go,
/// grpc-java, grpc C++ and so pyarrow all default to 4 MiB).
pub const CLIENT_LIMIT_BYTES: usize = 4 * 1024 * 1024;

/// Messages the check itself uploads stay near this size.
const UPLOAD_MESSAGE_BYTES: usize = 1024 * 1024;

/// The checks in the order they print (`hangar check --help` and README say
/// what each verifies; a test keeps the help in step with this list).
pub const CHECKS: &[&str] = &[
    "handshake",
    "token-accepted",
    "token-altered",
    "list-flights",
    "schema-first",
    "empty-schema-first",
    "dictionaries-first",
    "message-size",
    "info-schema",
    "total-records",
    "missing-dataset",
    "malformed-descriptor",
    "malformed-ticket",
    "unknown-action",
    "list-actions",
    "roundtrip",
    "drop-dataset",
];

/// What `hangar check` was asked to do besides the connection options.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Upload, read back and drop datasets of the check's own.
    pub write: bool,
    pub json: bool,
    /// Longest wait for any one step (a call and its whole stream).
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// One check's result: PASS, FAIL or SKIP, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub check: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

fn outcome(check: &'static str, verdict: Verdict, detail: impl Into<String>) -> Outcome {
    Outcome {
        check,
        verdict,
        detail: detail.into(),
    }
}

fn pass(check: &'static str, detail: impl Into<String>) -> Outcome {
    outcome(check, Verdict::Pass, detail)
}

fn fail(check: &'static str, detail: impl Into<String>) -> Outcome {
    outcome(check, Verdict::Fail, detail)
}

fn skip(check: &'static str, detail: impl Into<String>) -> Outcome {
    outcome(check, Verdict::Skip, detail)
}

/// A status as the report shows it: `CODE: message` on one line.
fn status_text(status: &Status) -> String {
    let failure = Failure::from(status.clone());
    format!("{}: {}", code_name(status.code()), failure.message)
}

/// What one DoGet stream looked like, message by message.
#[derive(Debug, Default)]
pub struct StreamAudit {
    messages: usize,
    schema_seen: bool,
    /// The dictionary ids the Schema message declares.
    dictionary_ids: Vec<i64>,
    dictionaries_seen: HashSet<i64>,
    /// Rows the RecordBatch headers declare.
    pub rows: i64,
    record_batches: usize,
    /// The first message that came before the Schema, or a stream without one.
    pub schema_problem: Option<String>,
    /// The first batch that used a dictionary not yet sent.
    pub dictionary_problem: Option<String>,
    /// The first message over [`CLIENT_LIMIT_BYTES`].
    pub oversized: Option<String>,
    pub largest: usize,
    /// The schema decoded from the Schema message.
    pub schema: Option<SchemaRef>,
    /// Why the stream is not a valid Arrow stream (or the call failed).
    pub error: Option<String>,
    /// Why the rows could not all be counted: the call failed, or a header
    /// was unreadable. (A batch that does not decode still has its row count.)
    pub incomplete: Option<String>,
    decoder: Decoder,
    keep: bool,
    pub batches: Vec<RecordBatch>,
}

impl StreamAudit {
    /// An audit that keeps the decoded batches when `keep` (for comparing).
    pub fn new(keep: bool) -> StreamAudit {
        StreamAudit {
            keep,
            ..StreamAudit::default()
        }
    }

    /// Looks at the next message of the stream.
    pub fn observe(&mut self, data: &FlightData) {
        self.messages += 1;
        let n = self.messages;
        let size = data.encoded_len();
        self.largest = self.largest.max(size);
        if size > CLIENT_LIMIT_BYTES && self.oversized.is_none() {
            self.oversized = Some(format!(
                "message {n} is {size} bytes, over the {CLIENT_LIMIT_BYTES}-byte default limit"
            ));
        }
        if data.data_header.is_empty() {
            return; // app_metadata only: no IPC message
        }
        let message = match arrow_ipc::root_as_message(&data.data_header) {
            Ok(message) => message,
            Err(e) => {
                let why = format!("message {n}: data_header is not an IPC message: {e}");
                self.incomplete.get_or_insert(why.clone());
                self.error.get_or_insert(why);
                return;
            }
        };
        match message.header_type() {
            MessageHeader::Schema if !self.schema_seen => {
                self.schema_seen = true;
                self.dictionary_ids = dictionary_ids(&message);
            }
            MessageHeader::Schema => {}
            MessageHeader::DictionaryBatch => {
                self.before_schema(n, "a DictionaryBatch");
                if let Some(batch) = message.header_as_dictionary_batch() {
                    self.dictionaries_seen.insert(batch.id());
                }
            }
            MessageHeader::RecordBatch => {
                self.before_schema(n, "a RecordBatch");
                self.record_batches += 1;
                if let Some(batch) = message.header_as_record_batch() {
                    self.rows += batch.length();
                }
                let missing = self
                    .dictionary_ids
                    .iter()
                    .find(|id| !self.dictionaries_seen.contains(id));
                if let (Some(id), None) = (missing, &self.dictionary_problem) {
                    self.dictionary_problem = Some(format!(
                        "message {n} is a RecordBatch using dictionary {id}, which no \
                         DictionaryBatch sent before it"
                    ));
                }
            }
            other => {
                self.error
                    .get_or_insert(format!("message {n} is an unexpected {other:?} message"));
            }
        }
        if self.error.is_none() {
            match self.decoder.decode(data) {
                Ok(Decoded::Schema(schema)) => self.schema = Some(schema),
                Ok(Decoded::Batch(batch)) if self.keep => self.batches.push(batch),
                Ok(_) => {}
                Err(e) => self.error = Some(format!("message {n}: {}", e.message())),
            }
        }
    }

    fn before_schema(&mut self, n: usize, what: &str) {
        if !self.schema_seen && self.schema_problem.is_none() {
            self.schema_problem = Some(format!("message {n} is {what}, sent before the Schema"));
        }
    }

    /// The stream ended (cleanly or with `status`).
    pub fn finish(&mut self, status: Option<&Status>) {
        if let Some(status) = status {
            let why = format!("the stream failed: {}", status_text(status));
            self.incomplete.get_or_insert(why.clone());
            self.error.get_or_insert(why);
        }
        if !self.schema_seen && self.schema_problem.is_none() {
            self.schema_problem = Some(match self.messages {
                0 => "the stream ended without any message, so without a Schema".into(),
                n => format!("none of its {n} messages is a Schema"),
            });
        }
    }

    /// Whether record batches with dictionary-encoded columns were sent.
    pub fn uses_dictionaries(&self) -> bool {
        !self.dictionary_ids.is_empty() && self.record_batches > 0
    }
}

/// The dictionary ids a Schema message's fields (and their children) declare.
fn dictionary_ids(message: &arrow_ipc::Message) -> Vec<i64> {
    let mut ids = Vec::new();
    let Some(schema) = message.header_as_schema() else {
        return ids;
    };
    let mut todo: Vec<arrow_ipc::Field> = schema.fields().into_iter().flatten().collect();
    while let Some(field) = todo.pop() {
        if let Some(encoding) = field.dictionary() {
            ids.push(encoding.id());
        }
        todo.extend(field.children().into_iter().flatten());
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// One dataset whose DoGet streams the data checks look at.
#[derive(Debug)]
pub struct Target {
    pub name: String,
    /// Expected to hold no rows (the empty-result checks look at these).
    pub empty: bool,
    pub info: Result<FlightInfo, String>,
    /// One audit per endpoint, in order.
    pub streams: Vec<StreamAudit>,
}

impl Target {
    fn label(&self) -> String {
        quote(&self.name)
    }
}

/// `schema-first` (non-empty targets) or `empty-schema-first` (empty ones).
pub fn schema_first(targets: &[Target], empty: bool) -> Outcome {
    let check = if empty {
        "empty-schema-first"
    } else {
        "schema-first"
    };
    let chosen: Vec<&Target> = targets.iter().filter(|t| t.empty == empty).collect();
    if chosen.is_empty() {
        return skip(
            check,
            if empty {
                "no empty dataset listed; --write uploads one"
            } else {
                "no dataset with rows listed; --write uploads one"
            },
        );
    }
    let mut streams = 0;
    for target in &chosen {
        if let Err(why) = &target.info {
            return fail(check, format!("{}: {why}", target.label()));
        }
        for (i, stream) in target.streams.iter().enumerate() {
            streams += 1;
            if let Some(problem) = &stream.schema_problem {
                return fail(
                    check,
                    format!("{} endpoint {}: {problem}", target.label(), i + 1),
                );
            }
        }
    }
    pass(
        check,
        format!(
            "{streams} DoGet stream(s) of {} start with the Schema",
            names(&chosen)
        ),
    )
}

/// `dictionaries-first`.
pub fn dictionaries_first(targets: &[Target]) -> Outcome {
    let check = "dictionaries-first";
    let mut used: Vec<&Target> = Vec::new();
    for target in targets {
        for (i, stream) in target.streams.iter().enumerate() {
            if let Some(problem) = &stream.dictionary_problem {
                return fail(
                    check,
                    format!("{} endpoint {}: {problem}", target.label(), i + 1),
                );
            }
            if stream.uses_dictionaries() && !used.iter().any(|t| std::ptr::eq(*t, target)) {
                used.push(target);
            }
        }
    }
    if used.is_empty() {
        return skip(
            check,
            "no stream has a dictionary-encoded column; --write uploads one",
        );
    }
    pass(
        check,
        format!("every batch of {} follows its dictionaries", names(&used)),
    )
}

/// `message-size`.
pub fn message_size(targets: &[Target]) -> Outcome {
    let check = "message-size";
    let mut largest = 0;
    let mut streams = 0;
    for target in targets {
        for (i, stream) in target.streams.iter().enumerate() {
            streams += 1;
            largest = largest.max(stream.largest);
            if let Some(problem) = &stream.oversized {
                return fail(
                    check,
                    format!("{} endpoint {}: {problem}", target.label(), i + 1),
                );
            }
        }
    }
    if streams == 0 {
        return skip(
            check,
            "no DoGet stream to measure; --write uploads a dataset",
        );
    }
    pass(
        check,
        format!("largest message {largest} bytes in {streams} stream(s)"),
    )
}

/// `info-schema`.
pub fn info_schema(targets: &[Target]) -> Outcome {
    let check = "info-schema";
    let mut compared = Vec::new();
    for target in targets {
        let info = match &target.info {
            Ok(info) => info,
            Err(why) => return fail(check, format!("{}: {why}", target.label())),
        };
        let declared = match ipc::schema_from_ipc(&info.schema) {
            Ok(schema) => schema,
            Err(_) if info.schema.is_empty() => {
                return fail(
                    check,
                    format!("{}: the FlightInfo carries no schema", target.label()),
                )
            }
            Err(e) => {
                return fail(
                    check,
                    format!("{}: FlightInfo.schema: {}", target.label(), e.message()),
                )
            }
        };
        for (i, stream) in target.streams.iter().enumerate() {
            let Some(streamed) = &stream.schema else {
                let why = stream
                    .error
                    .as_deref()
                    .unwrap_or("it has no Schema message");
                return fail(
                    check,
                    format!(
                        "{} endpoint {}: no stream schema to compare ({why})",
                        target.label(),
                        i + 1
                    ),
                );
            };
            if let Some(difference) = schema_difference(&declared, streamed) {
                return fail(
                    check,
                    format!(
                        "{} endpoint {}: FlightInfo says {difference}",
                        target.label(),
                        i + 1
                    ),
                );
            }
        }
        compared.push(target);
    }
    if compared.is_empty() {
        return skip(check, "no dataset to compare; --write uploads one");
    }
    pass(
        check,
        format!("GetFlightInfo and DoGet agree for {}", names(&compared)),
    )
}

/// How `declared` differs from `streamed` ("X, the stream Y"), or None.
/// Field names, types, nullability and metadata, and the schema's metadata.
pub fn schema_difference(declared: &Schema, streamed: &Schema) -> Option<String> {
    let (a, b) = (declared.fields(), streamed.fields());
    if a.len() != b.len() {
        return Some(format!(
            "{} fields, the stream {}: {declared} vs {streamed}",
            a.len(),
            b.len()
        ));
    }
    for (x, y) in a.iter().zip(b.iter()) {
        let same = x.name() == y.name()
            && x.data_type() == y.data_type()
            && x.is_nullable() == y.is_nullable()
            && x.metadata() == y.metadata();
        if !same {
            return Some(format!("field {x:?}, the stream {y:?}"));
        }
    }
    if declared.metadata() != streamed.metadata() {
        return Some(format!(
            "schema metadata {:?}, the stream {:?}",
            declared.metadata(),
            streamed.metadata()
        ));
    }
    None
}

/// `total-records`.
pub fn total_records(targets: &[Target]) -> Outcome {
    let check = "total-records";
    let mut counted = Vec::new();
    for target in targets {
        let info = match &target.info {
            Ok(info) => info,
            Err(why) => return fail(check, format!("{}: {why}", target.label())),
        };
        if let Some(error) = target.streams.iter().find_map(|s| s.incomplete.as_ref()) {
            return fail(
                check,
                format!("{}: cannot count the rows: {error}", target.label()),
            );
        }
        let streamed: i64 = target.streams.iter().map(|s| s.rows).sum();
        match info.total_records {
            -1 => {}
            n if n == streamed => {}
            n => {
                return fail(
                    check,
                    format!(
                        "{}: total_records is {n}, but DoGet streamed {streamed} rows",
                        target.label()
                    ),
                )
            }
        }
        counted.push(target);
    }
    if counted.is_empty() {
        return skip(check, "no dataset to count; --write uploads one");
    }
    pass(
        check,
        format!("total_records matches the rows of {}", names(&counted)),
    )
}

fn names(targets: &[&Target]) -> String {
    targets
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Judges a status a request for something missing or malformed got:
/// PASS if its code is one of `expected`, FAIL otherwise (success included).
pub fn expect_codes(
    check: &'static str,
    what: &str,
    result: &Result<(), Status>,
    expected: &[Code],
) -> Outcome {
    let wanted = expected
        .iter()
        .map(|c| code_name(*c))
        .collect::<Vec<_>>()
        .join(" or ");
    match result {
        Ok(()) => fail(check, format!("{what} succeeded (expected {wanted})")),
        Err(status) if expected.contains(&status.code()) => {
            pass(check, format!("{what}: {}", code_name(status.code())))
        }
        Err(status) => {
            let blame = match status.code() {
                Code::Internal | Code::Unknown => {
                    " (a client cannot tell a server bug from a bad request)"
                }
                _ => "",
            };
            fail(
                check,
                format!("{what}: {} (expected {wanted}){blame}", status_text(status)),
            )
        }
    }
}

/// Two judgements of one check: the failures, else both passes, joined.
fn both(a: Outcome, b: Outcome) -> Outcome {
    match (a.verdict, b.verdict) {
        (Verdict::Fail, Verdict::Fail) => fail(a.check, format!("{}; {}", a.detail, b.detail)),
        (Verdict::Fail, _) => a,
        (_, Verdict::Fail) => b,
        _ => pass(a.check, format!("{}; {}", a.detail, b.detail)),
    }
}

/// The table `--write` round-trips: every common type, nulls in every column.
pub fn all_types_table() -> RecordBatch {
    let nulls = |valid: [bool; 4]| Some(NullBuffer::from(valid.to_vec()));
    let struct_fields = Fields::from(vec![
        Field::new("a", DataType::Int32, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let struct_array = StructArray::new(
        struct_fields.clone(),
        vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(3), None])) as ArrayRef,
            Arc::new(StringArray::from(vec![Some("x"), None, None, Some("w")])),
        ],
        nulls([true, false, true, true]),
    );
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2)]),
        None,
        Some(vec![]),
        Some(vec![None, Some(-4)]),
    ]);
    let dictionary: DictionaryArray<Int32Type> = vec![Some("red"), None, Some("blue"), Some("red")]
        .into_iter()
        .collect();
    let zone = "Europe/Oslo";
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "i8",
            Arc::new(Int8Array::from(vec![Some(-8), None, Some(0), Some(127)])),
        ),
        (
            "i16",
            Arc::new(Int16Array::from(vec![Some(-16), None, Some(0), Some(16)])),
        ),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(-32), None, Some(0), Some(32)])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![
                Some(i64::MIN),
                None,
                Some(0),
                Some(i64::MAX),
            ])),
        ),
        (
            "u8",
            Arc::new(UInt8Array::from(vec![Some(8), None, Some(0), Some(255)])),
        ),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![
                Some(64),
                None,
                Some(0),
                Some(u64::MAX),
            ])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![
                Some(1.5),
                None,
                Some(-0.0),
                Some(f32::MAX),
            ])),
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![
                Some(2.25),
                None,
                Some(1e-300),
                Some(-1e300),
            ])),
        ),
        (
            "utf8",
            Arc::new(StringArray::from(vec![
                Some("héllo"),
                None,
                Some(""),
                Some("✈"),
            ])),
        ),
        (
            "large_utf8",
            Arc::new(LargeStringArray::from(vec![
                Some("large"),
                None,
                Some(""),
                Some("ü"),
            ])),
        ),
        (
            "binary",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\x00\xff"[..]),
                None,
                Some(&b""[..]),
                Some(&b"bin"[..]),
            ])),
        ),
        (
            "bool",
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                Some(true),
            ])),
        ),
        (
            "date32",
            Arc::new(Date32Array::from(vec![
                Some(19_000),
                None,
                Some(0),
                Some(-1),
            ])),
        ),
        (
            "timestamp_tz",
            Arc::new(
                TimestampMicrosecondArray::from(vec![
                    Some(1_700_000_000_000_000),
                    None,
                    Some(0),
                    Some(-1),
                ])
                .with_timezone(zone),
            ),
        ),
        (
            "decimal",
            Arc::new(
                Decimal128Array::from(vec![Some(12_345), None, Some(0), Some(-99_999_999)])
                    .with_precision_and_scale(10, 2)
                    .expect("precision 10, scale 2 is valid"),
            ),
        ),
        ("list", Arc::new(list)),
        ("struct", Arc::new(struct_array)),
        ("dictionary", Arc::new(dictionary)),
    ];
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| Field::new(*name, array.data_type().clone(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, array)| array).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .expect("the columns match their fields")
}

/// How the batches read back differ from `sent`, or None. Batches may be cut
/// differently; values are compared logically (dictionaries by value).
pub fn table_difference(
    sent: &RecordBatch,
    got_schema: &Schema,
    got: &[RecordBatch],
) -> Option<String> {
    if let Some(difference) = schema_difference(&sent.schema(), got_schema) {
        return Some(format!("the schema changed: sent {difference}"));
    }
    let rows: usize = got.iter().map(|b| b.num_rows()).sum();
    if rows != sent.num_rows() {
        return Some(format!("sent {} rows, read back {rows}", sent.num_rows()));
    }
    let mut offset = 0;
    for batch in got {
        let expected = sent.slice(offset, batch.num_rows());
        for (i, field) in sent.schema().fields().iter().enumerate() {
            let (a, b) = (expected.column(i), batch.column(i));
            if a.to_data() != b.to_data() {
                return Some(format!(
                    "column {:?} differs in rows {}..{}: sent {a:?}, read back {b:?}",
                    field.name(),
                    offset,
                    offset + batch.num_rows()
                ));
            }
        }
        offset += batch.num_rows();
    }
    None
}

/// Runs `step`, failing with DEADLINE_EXCEEDED if it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    step: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    tokio::time::timeout(limit, step).await.unwrap_or_else(|_| {
        Err(Status::deadline_exceeded(format!(
            "no answer within {} s (raise --timeout)",
            limit.as_secs_f64()
        )))
    })
}

/// Reads a response stream to its end (an error may come after messages).
async fn drain<T>(stream: &mut tonic::codec::Streaming<T>) -> Result<(), Status> {
    while stream.message().await?.is_some() {}
    Ok(())
}

struct Checker<'a> {
    connector: &'a mut Connector,
    client: Client,
    options: Options,
    /// The prefix of every name the check makes up.
    prefix: String,
}

impl Checker<'_> {
    async fn get_info(&mut self, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            Ok(client.get_flight_info(descriptor).await?.into_inner())
        })
        .await
    }

    /// GetFlightInfo of `descriptor`, then every endpoint's DoGet audited.
    async fn read_target(
        &mut self,
        name: &str,
        descriptor: FlightDescriptor,
        empty: bool,
        keep: bool,
    ) -> Target {
        let mut target = Target {
            name: name.to_string(),
            empty,
            info: Err(String::new()),
            streams: Vec::new(),
        };
        let info = match self.get_info(descriptor).await {
            Ok(info) => info,
            Err(status) => {
                target.info = Err(format!("GetFlightInfo failed: {}", status_text(&status)));
                return target;
            }
        };
        if info.endpoint.is_empty() {
            target.info = Err("the FlightInfo has no endpoint to DoGet".into());
            return target;
        }
        for index in 0..info.endpoint.len() {
            let mut audit = StreamAudit::new(keep);
            let limit = self.options.timeout;
            let read = within(limit, async {
                let mut stream = open_endpoint(self.connector, &info, index)
                    .await
                    .map_err(|f| Status::new(f.code.unwrap_or(Code::Unknown), f.message))?;
                while let Some(data) = stream.message().await? {
                    audit.observe(&data);
                }
                Ok(())
            })
            .await;
            audit.finish(read.as_ref().err());
            target.streams.push(audit);
        }
        target.info = Ok(info);
        target
    }

    /// DoPut of `batches` (zero: an empty dataset) under `name`.
    async fn put(
        &mut self,
        name: &str,
        schema: &Schema,
        batches: &[RecordBatch],
    ) -> Result<(), Status> {
        let mut encoder = Encoder::new(
            IpcWriteOptions::default(),
            UPLOAD_MESSAGE_BYTES,
            self.connector.max_message_bytes(),
        );
        let mut messages = vec![encoder.schema(schema)];
        for batch in batches {
            encoder
                .batch(batch, &mut messages)
                .map_err(|e| Status::internal(format!("encoding the table: {}", e.message())))?;
        }
        messages[0].flight_descriptor = Some(path_descriptor(name));
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            let mut results = client
                .do_put(tokio_stream::iter(messages))
                .await?
                .into_inner();
            drain(&mut results).await
        })
        .await
    }

    async fn action(&mut self, kind: &str, body: &str) -> Result<(), Status> {
        let action = Action {
            r#type: kind.to_string(),
            body: Bytes::from(body.as_bytes().to_vec()),
        };
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            let mut results = client.do_action(action).await?.into_inner();
            drain(&mut results).await
        })
        .await
    }

    async fn list(&mut self) -> Result<Vec<FlightInfo>, Status> {
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            let mut stream = client.list_flights(Criteria::default()).await?.into_inner();
            let mut infos = Vec::new();
            while let Some(info) = stream.message().await? {
                infos.push(info);
            }
            Ok(infos)
        })
        .await
    }

    async fn list_actions(&mut self) -> Result<Vec<String>, Status> {
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            let mut stream = client.list_actions(Empty {}).await?.into_inner();
            let mut types = Vec::new();
            while let Some(action) = stream.message().await? {
                types.push(action.r#type);
            }
            Ok(types)
        })
        .await
    }

    async fn do_get(&mut self, ticket: &[u8]) -> Result<(), Status> {
        let ticket = Ticket {
            ticket: Bytes::from(ticket.to_vec()),
        };
        let mut client = self.client.clone();
        within(self.options.timeout, async move {
            let mut stream = client.do_get(ticket).await?.into_inner();
            drain(&mut stream).await
        })
        .await
    }
}

/// `handshake`, `token-accepted`, `token-altered`: the cookbook's login
/// done by hand on a connection without credentials, to see each step.
async fn login(
    connector: &Connector,
    limit: Duration,
    out: &mut Vec<Outcome>,
) -> Result<(), Failure> {
    let Some((user, password)) = connector.credentials() else {
        for check in ["handshake", "token-accepted", "token-altered"] {
            out.push(skip(check, "pass --user NAME to check the login flow"));
        }
        return Ok(());
    };
    let basic = connect::basic(user, password)?;
    let mut client = connector.anonymous().await?;
    let answered = within(limit, connect::basic_handshake(&mut client, basic)).await;
    let token = match answered {
        Ok(connect::HandshakeAnswer {
            bearer: Some(token),
            ..
        }) => {
            out.push(pass(
                "handshake",
                "Basic credentials answered with a Bearer header",
            ));
            token
        }
        Ok(answer) => {
            let payload = if answer.payload.is_empty() {
                ""
            } else {
                " (a token only in the payload, not in the header pyarrow's authenticate_basic_token reads)"
            };
            out.push(fail(
                "handshake",
                format!(
                    "Handshake succeeded but answered no authorization: Bearer header{payload}"
                ),
            ));
            for check in ["token-accepted", "token-altered"] {
                out.push(skip(check, "no token to try"));
            }
            return Ok(());
        }
        Err(status) => {
            let mut detail = format!("Handshake as {}: {}", quote(user), status_text(&status));
            if status.code() == Code::Unauthenticated {
                detail.push_str(" (check --user and HANGAR_PASSWORD)");
            }
            out.push(fail("handshake", detail));
            for check in ["token-accepted", "token-altered"] {
                out.push(skip(check, "no token to try"));
            }
            return Ok(());
        }
    };
    let text = token.to_str().unwrap_or_default().to_string();
    let altered = alter_token(&text);
    let call = |value: String| {
        let mut client = client.clone();
        async move {
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|_| Status::internal("the token is not a valid header value"))?;
            within(limit, async move {
                let mut request = Request::new(Criteria::default());
                request.metadata_mut().insert("authorization", value);
                let mut stream = client.list_flights(request).await?.into_inner();
                drain(&mut stream).await
            })
            .await
        }
    };
    out.push(match call(text).await {
        Ok(()) => pass(
            "token-accepted",
            "ListFlights with the Bearer token was served",
        ),
        Err(status) => fail(
            "token-accepted",
            format!(
                "ListFlights with the Bearer token: {}",
                status_text(&status)
            ),
        ),
    });
    out.push(match call(altered).await {
        Ok(()) => fail(
            "token-altered",
            "ListFlights with an altered Bearer token was served",
        ),
        Err(status) if status.code() == Code::Unauthenticated => pass(
            "token-altered",
            "an altered Bearer token was refused: UNAUTHENTICATED",
        ),
        Err(status) => fail(
            "token-altered",
            format!(
                "an altered Bearer token: {} (expected UNAUTHENTICATED)",
                status_text(&status)
            ),
        ),
    });
    Ok(())
}

/// The Bearer header value with the token's last character changed.
pub fn alter_token(header: &str) -> String {
    let mut text = header.to_string();
    match text.pop() {
        Some('A') => text.push('B'),
        Some(_) => text.push('A'),
        None => text.push('A'),
    }
    text
}

/// A random hex suffix, so names never collide with a dataset that exists.
fn random_suffix() -> String {
    use ring::rand::SecureRandom;
    let mut raw = [0u8; 6];
    // The OS generator only fails when the OS has none; a clock-based suffix
    // is still unique enough for a name that is dropped at the end.
    if ring::rand::SystemRandom::new().fill(&mut raw).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw.copy_from_slice(&nanos.to_le_bytes()[..6]);
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// The name of a listed FlightInfo: its one-element PATH, if it has one.
fn listed_name(info: &FlightInfo) -> Option<String> {
    let descriptor = info.flight_descriptor.as_ref()?;
    (descriptor.r#type == DescriptorType::Path as i32 && !descriptor.path.is_empty())
        .then(|| descriptor.path.join("/"))
}

/// `hangar check`: runs every check and prints the report. Ctrl-C stops the
/// checks but still drops what `--write` uploaded.
pub async fn check(connector: &mut Connector, options: &Options) -> Result<(), Failure> {
    let mut outcomes = Vec::new();
    // First, on a connection of its own, so a broken login is reported
    // even when it leaves nothing else to check.
    login(connector, options.timeout, &mut outcomes).await?;
    let client = match connector.main().await {
        Ok(client) => client,
        Err(failure) => {
            if outcomes.iter().any(|o| o.verdict == Verdict::Fail) {
                let _ = report(&outcomes, options.json, &connector.server().to_string());
            }
            return Err(failure);
        }
    };
    let mut checker = Checker {
        connector,
        client,
        options: options.clone(),
        prefix: format!("hangar-check-{}", random_suffix()),
    };
    let mut written = Vec::new();
    let result = tokio::select! {
        result = run_checks(&mut checker, &mut outcomes, &mut written) => Some(result),
        _ = tokio::signal::ctrl_c() => None,
    };
    // Always, whatever happened above: leave nothing behind. An upload that
    // failed may still have left a file (the cookbook writes as it reads).
    let mut dropped = Vec::new();
    for Upload { name, stored } in &written {
        match checker.action("drop_dataset", name).await {
            Ok(()) => dropped.push(name.clone()),
            Err(_) if !stored => {}
            Err(status) => {
                eprintln!(
                    "hangar: could not drop {} the check uploaded: {}",
                    quote(name),
                    status_text(&status)
                );
                eprintln!("hangar: hint: remove it with 'hangar rm {name}'");
            }
        }
    }
    match result {
        None => return Err(Failure::interrupted()),
        Some(Err(failure)) => return Err(failure),
        Some(Ok(())) => {}
    }
    if options.write {
        outcomes.push(drop_outcome(&mut checker, &written, &dropped).await);
    }
    report(
        &outcomes,
        options.json,
        &checker.connector.server().to_string(),
    )
}

fn mark_stored(uploads: &mut [Upload], name: &str) {
    if let Some(upload) = uploads.iter_mut().find(|u| u.name == name) {
        upload.stored = true;
    }
}

/// An upload of `--write` failed: a refusal of the user (a server may well
/// keep some users from writing) leaves `check` unchecked, anything else FAILs.
fn upload_failed(check: &'static str, what: String, status: &Status) -> Outcome {
    let text = format!("{what}: {}", status_text(status));
    match status.code() {
        Code::PermissionDenied | Code::Unauthenticated => skip(
            check,
            format!("{text} (--user a user who may upload to check this)"),
        ),
        _ => fail(check, text),
    }
}

/// A dataset `--write` uploads, and whether the server took it.
struct Upload {
    name: String,
    stored: bool,
}

async fn drop_outcome(
    checker: &mut Checker<'_>,
    uploads: &[Upload],
    dropped: &[String],
) -> Outcome {
    let check = "drop-dataset";
    let written: Vec<&String> = uploads
        .iter()
        .filter(|u| u.stored)
        .map(|u| &u.name)
        .collect();
    if written.is_empty() {
        return skip(check, "no upload succeeded, so there was nothing to drop");
    }
    if let Some(name) = written.iter().find(|n| !dropped.contains(n)) {
        return fail(
            check,
            format!("drop_dataset of {} failed (see above)", quote(name)),
        );
    }
    match checker.list().await {
        Ok(infos) => {
            let left: Vec<String> = infos
                .iter()
                .filter_map(listed_name)
                .filter(|n| written.contains(&n))
                .collect();
            if left.is_empty() {
                pass(
                    check,
                    format!(
                        "{} dropped; ListFlights no longer lists them",
                        written.len()
                    ),
                )
            } else {
                fail(
                    check,
                    format!(
                        "ListFlights still lists {} after drop_dataset",
                        left.join(", ")
                    ),
                )
            }
        }
        Err(status) => fail(
            check,
            format!("ListFlights after the drop: {}", status_text(&status)),
        ),
    }
}

async fn run_checks(
    checker: &mut Checker<'_>,
    out: &mut Vec<Outcome>,
    written: &mut Vec<Upload>,
) -> Result<(), Failure> {
    let listed = match checker.list().await {
        Ok(infos) => {
            out.push(pass(
                "list-flights",
                format!("{} flight(s) listed", infos.len()),
            ));
            infos
        }
        // Nothing else can work without credentials or a connection.
        Err(status)
            if status.code() == Code::Unauthenticated
                && checker.connector.credentials().is_some() =>
        {
            out.push(fail(
                "list-flights",
                format!(
                    "with the login's credentials: {} (the other checks need them, so \
                     they did not run)",
                    status_text(&status)
                ),
            ));
            return Ok(());
        }
        Err(status) if matches!(status.code(), Code::Unauthenticated | Code::Unavailable) => {
            return Err(status.into())
        }
        Err(status) => {
            out.push(fail("list-flights", status_text(&status)));
            Vec::new()
        }
    };

    // The data checks read the smallest listed dataset with rows and the
    // first empty one, plus (with --write) the check's own two.
    let mut targets = Vec::new();
    let with_path: Vec<&FlightInfo> = listed.iter().filter(|i| listed_name(i).is_some()).collect();
    let smallest = with_path
        .iter()
        .filter(|i| i.total_records != 0)
        .min_by_key(|i| u64::try_from(i.total_records).unwrap_or(u64::MAX));
    let empty = with_path.iter().find(|i| i.total_records == 0);
    for (info, is_empty) in [(smallest, false), (empty, true)] {
        if let (Some(info), Some(name)) = (info, info.and_then(|i| listed_name(i))) {
            let descriptor = info.flight_descriptor.clone().unwrap_or_default();
            targets.push(
                checker
                    .read_target(&name, descriptor, is_empty, false)
                    .await,
            );
        }
    }

    let table = all_types_table();
    let mut roundtrip = skip(
        "roundtrip",
        "pass --write to upload, read back and drop a table",
    );
    if checker.options.write {
        let name = checker.prefix.clone();
        let empty_name = format!("{name}-empty");
        written.push(Upload {
            name: name.clone(),
            stored: false,
        });
        let put = checker
            .put(&name, &table.schema(), std::slice::from_ref(&table))
            .await;
        match put {
            Err(status) => {
                roundtrip =
                    upload_failed("roundtrip", format!("DoPut of {}", quote(&name)), &status);
            }
            Ok(()) => {
                mark_stored(written, &name);
                let target = checker
                    .read_target(&name, path_descriptor(&name), false, true)
                    .await;
                roundtrip = judge_roundtrip(&table, &target);
                targets.push(target);
            }
        }
        written.push(Upload {
            name: empty_name.clone(),
            stored: false,
        });
        match checker.put(&empty_name, &table.schema(), &[]).await {
            Err(status) => out.push(upload_failed(
                "empty-schema-first",
                format!("DoPut of the empty dataset {}", quote(&empty_name)),
                &status,
            )),
            Ok(()) => {
                mark_stored(written, &empty_name);
                let target = checker
                    .read_target(&empty_name, path_descriptor(&empty_name), true, false)
                    .await;
                targets.push(target);
            }
        }
    }

    out.push(schema_first(&targets, false));
    if !out.iter().any(|o| o.check == "empty-schema-first") {
        out.push(schema_first(&targets, true));
    }
    out.push(dictionaries_first(&targets));
    out.push(message_size(&targets));
    out.push(info_schema(&targets));
    out.push(total_records(&targets));

    let missing = format!("{}-missing", checker.prefix);
    let info = checker
        .get_info(path_descriptor(&missing))
        .await
        .map(|_| ());
    let get = checker.do_get(missing.as_bytes()).await;
    out.push(both(
        expect_codes("missing-dataset", "GetFlightInfo", &info, &[Code::NotFound]),
        expect_codes("missing-dataset", "DoGet", &get, &[Code::NotFound]),
    ));

    let no_path = FlightDescriptor {
        r#type: DescriptorType::Path as i32,
        cmd: Bytes::new(),
        path: vec![],
    };
    let info = checker.get_info(no_path).await.map(|_| ());
    out.push(expect_codes(
        "malformed-descriptor",
        "GetFlightInfo of a PATH descriptor without a path",
        &info,
        &[Code::InvalidArgument],
    ));

    // Not UTF-8, with a NUL and a path separator: no server issues this.
    let get = checker.do_get(b"\xff\xfe\x00/..").await;
    out.push(expect_codes(
        "malformed-ticket",
        "DoGet of a ticket that is not UTF-8",
        &get,
        &[Code::InvalidArgument],
    ));

    let unknown = format!("{}-no-such-action", checker.prefix);
    let refused = checker.action(&unknown, "").await;
    out.push(expect_codes(
        "unknown-action",
        "DoAction of an unlisted type",
        &refused,
        &[Code::Unimplemented, Code::InvalidArgument, Code::NotFound],
    ));

    out.push(list_actions(checker, &missing).await);
    out.push(roundtrip);
    Ok(())
}

/// `list-actions`: each listed type is accepted (invoked, with `--write`,
/// with the name of a dataset that does not exist), and drop_dataset, which
/// `--write` relies on, is listed.
async fn list_actions(checker: &mut Checker<'_>, missing: &str) -> Outcome {
    let check = "list-actions";
    let types = match checker.list_actions().await {
        Ok(types) => types,
        Err(status) => return fail(check, format!("ListActions: {}", status_text(&status))),
    };
    if !checker.options.write {
        return skip(
            check,
            format!(
                "{} action(s) listed; --write invokes each to see it is accepted",
                types.len()
            ),
        );
    }
    if !types.iter().any(|t| t == "drop_dataset") {
        return fail(
            check,
            format!(
                "drop_dataset (which removed the uploads) is not listed; listed: {}",
                listing(&types)
            ),
        );
    }
    for kind in &types {
        if let Err(status) = checker.action(kind, missing).await {
            if status.code() == Code::Unimplemented {
                return fail(
                    check,
                    format!(
                        "{} is listed, but DoAction answers {}",
                        quote(kind),
                        status_text(&status)
                    ),
                );
            }
        }
    }
    pass(check, format!("listed and accepted: {}", listing(&types)))
}

fn listing(types: &[String]) -> String {
    if types.is_empty() {
        return "nothing".into();
    }
    types
        .iter()
        .map(|t| quote(t))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `roundtrip`: the table read back equals the table sent.
fn judge_roundtrip(sent: &RecordBatch, target: &Target) -> Outcome {
    let check = "roundtrip";
    if let Err(why) = &target.info {
        return fail(check, format!("{}: {why}", target.label()));
    }
    let mut batches = Vec::new();
    let mut schema = None;
    for stream in &target.streams {
        if let Some(error) = &stream.error {
            // A batch read without its dictionary fails with an obscure
            // index error; the missing dictionary is the reason to give.
            let error = match (&stream.schema_problem, &stream.dictionary_problem) {
                (Some(problem), _) | (None, Some(problem)) => {
                    format!("{problem}, so it cannot be decoded")
                }
                _ => error.clone(),
            };
            return fail(check, format!("DoGet of {}: {error}", target.label()));
        }
        schema = schema.or(stream.schema.clone());
        batches.extend(stream.batches.iter().cloned());
    }
    let Some(schema) = schema else {
        return fail(check, format!("DoGet of {} sent no schema", target.label()));
    };
    match table_difference(sent, &schema, &batches) {
        None => pass(
            check,
            format!(
                "{} columns of {} types, nulls in each, read back unchanged",
                sent.num_columns(),
                sent.num_columns()
            ),
        ),
        Some(difference) => fail(check, difference),
    }
}

/// Prints the outcomes (text or JSON) on stdout; FAILs make the exit code 1.
fn report(outcomes: &[Outcome], json: bool, server: &str) -> Result<(), Failure> {
    let mut ordered: Vec<&Outcome> = outcomes.iter().collect();
    let rank = |o: &Outcome| {
        CHECKS
            .iter()
            .position(|n| *n == o.check)
            .unwrap_or(usize::MAX)
    };
    ordered.sort_by_key(|o| rank(o));
    let count = |v: Verdict| ordered.iter().filter(|o| o.verdict == v).count();
    let (passed, failed, skipped) = (
        count(Verdict::Pass),
        count(Verdict::Fail),
        count(Verdict::Skip),
    );
    let text = if json {
        let checks = ordered.iter().map(|o| {
            Value::object([
                ("check", Value::from(o.check)),
                (
                    "result",
                    Value::from(o.verdict.as_str().to_ascii_lowercase()),
                ),
                ("detail", Value::from(o.detail.as_str())),
            ])
        });
        let value = Value::object([
            ("server", Value::from(server)),
            ("checks", Value::Array(checks.collect())),
            ("passed", Value::from(passed)),
            ("failed", Value::from(failed)),
            ("skipped", Value::from(skipped)),
        ]);
        format!("{value}\n")
    } else {
        render_text(&ordered, server, passed, failed, skipped)
    };
    super::show::emit(&text)?;
    if failed > 0 {
        let mut failure = Failure::local(format!("{failed} of {} checks failed", ordered.len()));
        failure.hint("'hangar check --help' says what each check verifies");
        return Err(failure);
    }
    Ok(())
}

fn render_text(
    ordered: &[&Outcome],
    server: &str,
    passed: usize,
    failed: usize,
    skipped: usize,
) -> String {
    let width = ordered.iter().map(|o| o.check.len()).max().unwrap_or(0);
    let mut text = String::new();
    for o in ordered {
        let _ = writeln!(
            text,
            "{}  {:width$}  {}",
            o.verdict.as_str(),
            o.check,
            o.detail
        );
    }
    let _ = writeln!(
        text,
        "{server}: {} checks, {passed} passed, {failed} failed, {skipped} skipped",
        ordered.len()
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A correct stream of `batch`: schema, dictionaries, batch.
    fn messages(batch: &RecordBatch) -> Vec<FlightData> {
        let mut encoder = Encoder::new(IpcWriteOptions::default(), 1 << 20, 1 << 24);
        let mut out = vec![encoder.schema(&batch.schema())];
        encoder.batch(batch, &mut out).unwrap();
        out
    }

    fn audited(messages: &[FlightData], keep: bool) -> StreamAudit {
        let mut audit = StreamAudit::new(keep);
        for m in messages {
            audit.observe(m);
        }
        audit.finish(None);
        audit
    }

    fn target(name: &str, empty: bool, info: FlightInfo, streams: Vec<StreamAudit>) -> Target {
        Target {
            name: name.into(),
            empty,
            info: Ok(info),
            streams,
        }
    }

    fn info_of(schema: &Schema, total_records: i64) -> FlightInfo {
        FlightInfo {
            schema: ipc::schema_to_ipc(schema).unwrap(),
            total_records,
            ..Default::default()
        }
    }

    #[test]
    fn a_correct_stream_has_no_problem_and_counts_its_rows() {
        let table = all_types_table();
        let audit = audited(&messages(&table), true);
        assert_eq!(audit.schema_problem, None);
        assert_eq!(audit.dictionary_problem, None);
        assert_eq!(audit.oversized, None);
        assert_eq!(audit.error, None);
        assert_eq!(audit.rows, 4);
        assert!(audit.uses_dictionaries());
        let got = audit.batches.clone();
        assert_eq!(
            table_difference(&table, audit.schema.as_ref().unwrap(), &got),
            None
        );
    }

    #[test]
    fn out_of_order_and_missing_messages_are_named() {
        let table = all_types_table();
        let correct = messages(&table);
        assert_eq!(correct.len(), 3, "schema, one dictionary, batch");

        let batch_first = [correct[2].clone(), correct[0].clone(), correct[1].clone()];
        let audit = audited(&batch_first, false);
        assert_eq!(
            audit.schema_problem.as_deref(),
            Some("message 1 is a RecordBatch, sent before the Schema")
        );
        assert!(audit.error.is_some(), "the decoder refuses it too");

        let dictionary_late = [correct[0].clone(), correct[2].clone(), correct[1].clone()];
        let audit = audited(&dictionary_late, false);
        assert_eq!(audit.schema_problem, None);
        assert!(audit
            .dictionary_problem
            .as_deref()
            .unwrap()
            .starts_with("message 2 is a RecordBatch using dictionary"));

        let nothing = audited(&[], false);
        assert!(nothing
            .schema_problem
            .unwrap()
            .contains("without any message"));
        let metadata_only = FlightData {
            app_metadata: Bytes::from_static(b"hello"),
            ..Default::default()
        };
        let audit = audited(&[metadata_only], false);
        assert_eq!(
            audit.schema_problem.as_deref(),
            Some("none of its 1 messages is a Schema")
        );
    }

    #[test]
    fn a_message_over_4_mib_is_oversized_one_under_is_not() {
        let sized = |bytes: usize| FlightData {
            app_metadata: Bytes::from(vec![0u8; bytes]),
            ..Default::default()
        };
        let under = audited(&[sized(CLIENT_LIMIT_BYTES - 16)], false);
        assert_eq!(under.oversized, None);
        assert!(under.largest <= CLIENT_LIMIT_BYTES);
        let over = audited(&[sized(CLIENT_LIMIT_BYTES)], false);
        assert!(over.oversized.unwrap().starts_with("message 1 is 41943"));
    }

    #[test]
    fn stream_checks_judge_targets() {
        let table = all_types_table();
        let schema = table.schema();
        let good = || audited(&messages(&table), false);
        let targets = vec![target("t", false, info_of(&schema, 4), vec![good()])];
        for outcome in [
            schema_first(&targets, false),
            dictionaries_first(&targets),
            message_size(&targets),
            info_schema(&targets),
            total_records(&targets),
        ] {
            assert_eq!(outcome.verdict, Verdict::Pass, "{outcome:?}");
        }
        assert_eq!(schema_first(&targets, true).verdict, Verdict::Skip);

        let unknown = vec![target("t", false, info_of(&schema, -1), vec![good()])];
        assert_eq!(total_records(&unknown).verdict, Verdict::Pass);
        let wrong = vec![target("t", false, info_of(&schema, 5), vec![good()])];
        let outcome = total_records(&wrong);
        assert_eq!(outcome.verdict, Verdict::Fail);
        assert_eq!(
            outcome.detail,
            "\"t\": total_records is 5, but DoGet streamed 4 rows"
        );

        let other = Schema::new(vec![Field::new("x", DataType::Int8, true)]);
        let mismatched = vec![target("t", false, info_of(&other, 4), vec![good()])];
        assert_eq!(info_schema(&mismatched).verdict, Verdict::Fail);
        assert_eq!(message_size(&[]).verdict, Verdict::Skip);
    }

    #[test]
    fn schema_difference_sees_types_nullability_and_metadata() {
        let a = Schema::new(vec![Field::new("x", DataType::Int32, true)]);
        assert_eq!(schema_difference(&a, &a.clone()), None);
        let b = Schema::new(vec![Field::new("x", DataType::Int64, true)]);
        assert!(schema_difference(&a, &b).unwrap().starts_with("field"));
        let c = Schema::new(vec![Field::new("x", DataType::Int32, false)]);
        assert!(schema_difference(&a, &c).is_some());
        let d = a.clone().with_metadata(std::collections::HashMap::from([(
            "k".to_string(),
            "v".to_string(),
        )]));
        assert!(schema_difference(&a, &d)
            .unwrap()
            .starts_with("schema metadata"));
    }

    #[test]
    fn the_table_has_every_type_with_nulls_in_each_column() {
        let table = all_types_table();
        for (field, column) in table.schema().fields().iter().zip(table.columns()) {
            assert!(column.null_count() > 0, "{} has no null", field.name());
        }
        let types: Vec<String> = table
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{:?}", f.data_type()))
            .collect();
        for wanted in [
            "LargeUtf8",
            "Binary",
            "Date32",
            "Europe/Oslo",
            "Decimal128",
            "List",
            "Struct",
            "Dictionary",
        ] {
            assert!(
                types.iter().any(|t| t.contains(wanted)),
                "{wanted}: {types:?}"
            );
        }
        // Batches cut differently still compare equal; a changed value not.
        let halves = [table.slice(0, 1), table.slice(1, 3)];
        assert_eq!(table_difference(&table, &table.schema(), &halves), None);
        let mut columns = table.columns().to_vec();
        columns[2] = Arc::new(Int32Array::from(vec![Some(-32), None, Some(1), Some(32)]));
        let changed = RecordBatch::try_new(table.schema(), columns).unwrap();
        let difference = table_difference(&table, &table.schema(), &[changed]).unwrap();
        assert!(
            difference.starts_with("column \"i32\" differs"),
            "{difference}"
        );
        assert!(table_difference(&table, &table.schema(), &halves[..1])
            .unwrap()
            .contains("read back 1"));
    }

    #[test]
    fn status_judgements_name_what_was_expected() {
        let ok = expect_codes("c", "DoGet", &Ok(()), &[Code::NotFound]);
        assert_eq!(ok.verdict, Verdict::Fail);
        assert_eq!(ok.detail, "DoGet succeeded (expected NOT_FOUND)");
        let found = expect_codes(
            "c",
            "DoGet",
            &Err(Status::not_found("x")),
            &[Code::NotFound],
        );
        assert_eq!(found.verdict, Verdict::Pass);
        let internal = expect_codes(
            "c",
            "DoGet",
            &Err(Status::internal("boom")),
            &[Code::NotFound],
        );
        assert_eq!(internal.verdict, Verdict::Fail);
        assert!(internal
            .detail
            .contains("INTERNAL: boom (expected NOT_FOUND) (a client cannot"));
        assert_eq!(both(found.clone(), internal.clone()), internal);
        assert_eq!(
            both(found.clone(), found.clone()).detail,
            "DoGet: NOT_FOUND; DoGet: NOT_FOUND"
        );
    }

    #[test]
    fn an_altered_token_differs_in_its_last_character() {
        assert_eq!(alter_token("Bearer abc"), "Bearer abA");
        assert_eq!(alter_token("Bearer abA"), "Bearer abB");
        assert_ne!(alter_token("Bearer x"), "Bearer x");
    }
}
