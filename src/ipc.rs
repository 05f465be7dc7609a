//! Arrow record batches ⇄ Flight `FlightData` messages.
//!
//! A Flight stream is an Arrow IPC stream cut into messages: the schema first,
//! then for each batch the dictionary batches it needs, then the batch itself.
//! `data_header` carries the IPC flatbuffer `Message`, `data_body` its buffers.
//! [`Encoder`] produces that sequence (slicing batches so no message outgrows the
//! limit); [`Decoder`] consumes it and checks every step, because on DoPut the
//! bytes come straight from a client.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_ipc::writer::{
    DictionaryTracker, EncodedData, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
};
use arrow_ipc::MessageHeader;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use prost::bytes::Bytes;

use crate::error::{Error, Result};
use crate::proto::FlightData;

/// Encodes a schema as the bytes `FlightInfo.schema` and `SchemaResult.schema`
/// carry: an encapsulated IPC message (continuation marker, length, flatbuffer).
pub fn schema_to_ipc(schema: &Schema) -> Result<Bytes> {
    let options = IpcWriteOptions::default();
    let mut tracker = DictionaryTracker::new(false);
    let encoded = IpcDataGenerator::default().schema_to_bytes_with_dictionary_tracker(
        schema,
        &mut tracker,
        &options,
    );
    let mut out = Vec::with_capacity(encoded.ipc_message.len() + 16);
    arrow_ipc::writer::write_message(&mut out, encoded, &options)
        .map_err(|e| Error::Internal(format!("encoding schema: {e}")))?;
    Ok(Bytes::from(out))
}

/// Decodes the bytes of `FlightInfo.schema` / `SchemaResult.schema`.
pub fn schema_from_ipc(bytes: &[u8]) -> Result<Schema> {
    arrow_ipc::convert::try_schema_from_ipc_buffer(bytes)
        .map_err(|e| Error::InvalidArgument(format!("invalid IPC schema: {e}")))
}

/// Turns a schema and its batches into FlightData messages.
pub struct Encoder {
    generator: IpcDataGenerator,
    tracker: DictionaryTracker,
    options: IpcWriteOptions,
    context: IpcWriteContext,
    /// Batches are sliced so that each message's body stays near this size.
    target_bytes: usize,
    /// No message may exceed this (the `--max-message-size` limit).
    max_bytes: usize,
}

impl Encoder {
    /// `target_bytes` is the size batches are sliced to; `max_bytes` is the hard
    /// limit on one message.
    pub fn new(options: IpcWriteOptions, target_bytes: usize, max_bytes: usize) -> Encoder {
        // Keep the scratch buffer between messages instead of regrowing it for
        // each one (measured: ~9 % of DoGet's server CPU went to regrowing).
        let mut context = IpcWriteContext::default();
        context.set_reserve_scratch(true);
        Encoder {
            generator: IpcDataGenerator::default(),
            // Replacement dictionaries are legal in a stream, so a new dictionary
            // per batch (as Parquet row groups produce) is resent, not an error.
            tracker: DictionaryTracker::new(false),
            options,
            context,
            target_bytes: target_bytes.max(1),
            max_bytes,
        }
    }

    /// The stream's first message. It also registers the schema's dictionary
    /// fields, so it must be called before [`Encoder::batch`].
    pub fn schema(&mut self, schema: &Schema) -> FlightData {
        let encoded = self.generator.schema_to_bytes_with_dictionary_tracker(
            schema,
            &mut self.tracker,
            &self.options,
        );
        to_flight_data(encoded)
    }

    /// Encodes one batch, preceded by any dictionary it needs, into `out`.
    pub fn batch(&mut self, batch: &RecordBatch, out: &mut Vec<FlightData>) -> Result<()> {
        for slice in slice_to_size(batch, self.target_bytes) {
            let (dictionaries, encoded) = self
                .generator
                .encode(&slice, &mut self.tracker, &self.options, &mut self.context)
                .map_err(|e| Error::Internal(format!("encoding a batch as IPC: {e}")))?;
            for message in dictionaries.into_iter().chain(std::iter::once(encoded)) {
                let size = message.ipc_message.len() + message.arrow_data.len();
                if size > self.max_bytes {
                    return Err(Error::ResourceExhausted(format!(
                        "a message of {size} bytes (one row, or one dictionary) exceeds \
                         --max-message-size ({} bytes); raise the limit to read this dataset",
                        self.max_bytes
                    )));
                }
                out.push(to_flight_data(message));
            }
        }
        Ok(())
    }
}

fn to_flight_data(encoded: EncodedData) -> FlightData {
    FlightData {
        flight_descriptor: None,
        data_header: Bytes::from(encoded.ipc_message),
        app_metadata: Bytes::new(),
        data_body: Bytes::from(encoded.arrow_data),
    }
}

/// Cuts a batch into row slices whose buffers are about `target_bytes` each.
/// Slicing is zero-copy; the IPC writer only writes the sliced range.
fn slice_to_size(batch: &RecordBatch, target_bytes: usize) -> Vec<RecordBatch> {
    let rows = batch.num_rows();
    let size: usize = batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum();
    if size <= target_bytes || rows <= 1 {
        return vec![batch.clone()];
    }
    let pieces = size.div_ceil(target_bytes).min(rows);
    let per_piece = rows.div_ceil(pieces);
    (0..rows)
        .step_by(per_piece)
        .map(|start| batch.slice(start, per_piece.min(rows - start)))
        .collect()
}

/// What one FlightData message contributed to the stream.
#[derive(Debug)]
pub enum Decoded {
    /// The stream's schema (first message).
    Schema(SchemaRef),
    /// A record batch.
    Batch(RecordBatch),
    /// A dictionary batch (kept for the batches that follow) or a message with
    /// only `app_metadata`: nothing to hand on.
    Nothing,
}

/// Reassembles batches from FlightData, validating each message.
#[derive(Debug, Default)]
pub struct Decoder {
    schema: Option<SchemaRef>,
    dictionaries: HashMap<i64, ArrayRef>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// The schema, once the first message has arrived.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// Decodes one message. Errors are `InvalidArgument` and say what was wrong.
    pub fn decode(&mut self, data: &FlightData) -> Result<Decoded> {
        // The Arrow IPC reader trusts more of the header than it should: some
        // malformed messages (misaligned buffers, overflowing lengths) make it
        // panic instead of erroring. The bytes come from a client, so such a
        // panic fails the call, not the server; it is reported as its own kind
        // so that the fuzz tests see every one that slips past our checks.
        contain_panic(|| self.decode_checked(data))
    }

    fn decode_checked(&mut self, data: &FlightData) -> Result<Decoded> {
        if data.data_header.is_empty() {
            if data.data_body.is_empty() {
                return Ok(Decoded::Nothing);
            }
            return Err(invalid(
                "a FlightData message has a body but no data_header",
            ));
        }
        let message = arrow_ipc::root_as_message(&data.data_header)
            .map_err(|e| invalid(format!("data_header is not an IPC message: {e}")))?;
        match message.header_type() {
            MessageHeader::Schema => {
                if self.schema.is_some() {
                    return Err(invalid(
                        "the schema changed mid-stream (a second Schema message); \
                         one upload has one schema",
                    ));
                }
                let schema =
                    arrow_ipc::convert::try_schema_from_flatbuffer_bytes(&data.data_header)
                        .map_err(|e| invalid(format!("invalid schema message: {e}")))?;
                let schema = Arc::new(schema);
                self.schema = Some(schema.clone());
                Ok(Decoded::Schema(schema))
            }
            MessageHeader::DictionaryBatch => {
                let schema = self.schema.as_ref().ok_or_else(|| {
                    invalid("a dictionary batch arrived before the schema message")
                })?;
                let batch = message
                    .header_as_dictionary_batch()
                    .ok_or_else(|| invalid("malformed dictionary batch header"))?;
                let records = batch
                    .data()
                    .ok_or_else(|| invalid("dictionary batch without data"))?;
                check_buffers(&records, &data.data_body)?;
                // The batch holds the dictionary's values: one column of the
                // value type of the fields that use this id.
                #[allow(deprecated)] // how arrow-ipc itself finds the field
                let values = schema
                    .fields_with_dict_id(batch.id())
                    .first()
                    .and_then(|f| match f.data_type() {
                        DataType::Dictionary(_, value) => {
                            Some(Field::new("values", value.as_ref().clone(), true))
                        }
                        _ => None,
                    });
                if let Some(values) = values {
                    check_widths(&[Arc::new(values)], &records, &data.data_body)?;
                }
                let body = arrow_buffer(&data.data_body);
                arrow_ipc::reader::read_dictionary(
                    &body,
                    batch,
                    schema,
                    &mut self.dictionaries,
                    &message.version(),
                )
                .map_err(|e| invalid(format!("invalid dictionary batch: {e}")))?;
                Ok(Decoded::Nothing)
            }
            MessageHeader::RecordBatch => {
                let schema = self
                    .schema
                    .as_ref()
                    .ok_or_else(|| invalid("a record batch arrived before the schema message"))?;
                let batch = message
                    .header_as_record_batch()
                    .ok_or_else(|| invalid("malformed record batch header"))?;
                check_buffers(&batch, &data.data_body)?;
                check_widths(schema.fields(), &batch, &data.data_body)?;
                let body = arrow_buffer(&data.data_body);
                let batch = arrow_ipc::reader::read_record_batch(
                    &body,
                    batch,
                    schema.clone(),
                    &self.dictionaries,
                    None,
                    &message.version(),
                )
                .map_err(|e| invalid(format!("invalid record batch: {e}")))?;
                Ok(Decoded::Batch(batch))
            }
            other => Err(invalid(format!(
                "unexpected IPC message type {other:?} in a Flight stream"
            ))),
        }
    }
}

/// Most bytes one compressed message may expand to (1 GiB).
const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// Checks that every buffer the header declares lies inside the body. The IPC
/// reader trusts these offsets (and panics on a bad one), so a client's
/// truncated body or huge declared length must be caught here.
fn check_buffers(batch: &arrow_ipc::RecordBatch, body: &[u8]) -> Result<()> {
    let body_len = body.len();
    if batch.length() < 0 {
        return Err(invalid(format!("negative row count {}", batch.length())));
    }
    for (i, buffer) in batch.buffers().into_iter().flatten().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let end = offset.checked_add(length);
        let inside =
            offset >= 0 && length >= 0 && end.is_some_and(|end| end as u64 <= body_len as u64);
        if !inside {
            return Err(invalid(format!(
                "buffer {i} (offset {offset}, length {length}) lies outside the {body_len}-byte body"
            )));
        }
    }
    // A compressed buffer starts with its uncompressed length, which the reader
    // allocates up front: a client must not make the server allocate gigabytes
    // from a few bytes.
    if batch.compression().is_some() {
        let mut declared: u64 = 0;
        for buffer in batch.buffers().into_iter().flatten() {
            let start = buffer.offset() as usize;
            if buffer.length() >= 8 {
                let prefix: [u8; 8] = body[start..start + 8].try_into().unwrap_or([0; 8]);
                declared = declared.saturating_add(i64::from_le_bytes(prefix).max(0) as u64);
            }
        }
        if declared > MAX_DECOMPRESSED_BYTES {
            return Err(invalid(format!(
                "compressed buffers declare {declared} bytes uncompressed, more than the \
                 {MAX_DECOMPRESSED_BYTES} bytes hangar decodes per message"
            )));
        }
    }
    // Arrow arrays index with i32 offsets; anything longer is a lie that would
    // only make the reader allocate or overflow.
    let max_len = i64::from(i32::MAX);
    if batch.length() > max_len {
        return Err(invalid(format!(
            "row count {} is too large",
            batch.length()
        )));
    }
    for (i, node) in batch.nodes().into_iter().flatten().enumerate() {
        if node.length() < 0 || node.null_count() < 0 {
            return Err(invalid(format!(
                "field node {i} has a negative length or null count"
            )));
        }
        if node.length() > max_len || node.null_count() > node.length() {
            return Err(invalid(format!(
                "field node {i} declares {} values ({} null), more than possible",
                node.length(),
                node.null_count()
            )));
        }
    }
    Ok(())
}

/// Checks that every buffer Arrow reads as a slice of integers (offsets,
/// dictionary keys, views, list-view sizes) is a whole number of them. Arrow's
/// validation of such a buffer (`Buffer::typed_data`) asserts, so a client's
/// 33-byte offsets buffer would panic the reader instead of being refused.
/// Walks the fields in the order the IPC reader takes buffers; a layout it
/// does not model (unions) ends the walk, leaving the rest to the reader.
/// Expects [`check_buffers`] to have passed.
fn check_widths(
    fields: &[arrow_schema::FieldRef],
    batch: &arrow_ipc::RecordBatch,
    body: &[u8],
) -> Result<()> {
    let Some(buffers) = batch.buffers() else {
        return Ok(());
    };
    let compressed = batch.compression().is_some();
    let mut variadic = batch.variadicBufferCounts().into_iter().flatten();
    let mut next = 0usize;
    // The length Arrow will see: a compressed buffer starts with its
    // uncompressed length (-1: stored as is).
    let data_len = |i: usize| -> Option<u64> {
        let b = buffers.get(i);
        let (start, len) = (b.offset() as usize, b.length() as usize);
        if !compressed || len == 0 {
            return Some(len as u64);
        }
        if len < 8 {
            return None; // no room for the prefix: the reader refuses it
        }
        let prefix = i64::from_le_bytes(body.get(start..start + 8)?.try_into().ok()?);
        match prefix {
            -1 => Some(len as u64 - 8),
            n => u64::try_from(n).ok(),
        }
    };
    // Stack of fields still to walk, children after their parent, in order.
    let mut todo: Vec<&arrow_schema::Field> = fields.iter().rev().map(|f| f.as_ref()).collect();
    while let Some(field) = todo.pop() {
        use DataType::*;
        // (buffers this field takes, which of them hold integers of what width)
        let (count, typed): (usize, &[(usize, u64)]) = match field.data_type() {
            Null | RunEndEncoded(_, _) => (0, &[]),
            Utf8 | Binary => (3, &[(1, 4)]),
            LargeUtf8 | LargeBinary => (3, &[(1, 8)]),
            Utf8View | BinaryView => match variadic.next() {
                Some(n) if n >= 0 => (2 + n as usize, &[(1, 16)]),
                _ => return Ok(()),
            },
            List(_) | Map(_, _) => (2, &[(1, 4)]),
            LargeList(_) => (2, &[(1, 8)]),
            ListView(_) => (3, &[(1, 4), (2, 4)]),
            LargeListView(_) => (3, &[(1, 8), (2, 8)]),
            FixedSizeList(_, _) | Struct(_) => (1, &[]),
            Dictionary(key, _) => match key.primitive_width() {
                Some(1) => (2, &[(1, 1)]),
                Some(2) => (2, &[(1, 2)]),
                Some(4) => (2, &[(1, 4)]),
                Some(8) => (2, &[(1, 8)]),
                _ => return Ok(()),
            },
            Union(_, _) => return Ok(()),
            _ => (2, &[]),
        };
        if next + count > buffers.len() {
            return Ok(()); // too few buffers: the reader says so
        }
        for &(k, width) in typed {
            let i = next + k;
            let Some(len) = data_len(i) else { continue };
            if len % width != 0 {
                return Err(invalid(format!(
                    "buffer {i} of column {:?} is {len} bytes, not a whole number of \
                     {width}-byte values",
                    field.name()
                )));
            }
        }
        next += count;
        match field.data_type() {
            List(child)
            | LargeList(child)
            | ListView(child)
            | LargeListView(child)
            | FixedSizeList(child, _)
            | Map(child, _) => todo.push(child),
            Struct(children) => todo.extend(children.iter().rev().map(|f| f.as_ref())),
            RunEndEncoded(ends, values) => todo.extend([values.as_ref(), ends.as_ref()]),
            _ => {}
        }
    }
    Ok(())
}

/// Wraps the body without copying when it is suitably aligned; otherwise the IPC
/// reader copies only the buffers that need it.
fn arrow_buffer(body: &Bytes) -> arrow_buffer::Buffer {
    arrow_buffer::Buffer::from(body.clone())
}

/// Runs `work`, turning a panic into [`Error::ContainedPanic`]. The default
/// panic hook would print the panic on stderr, breaking `--log-format json`
/// and alarming operators for what is only a malformed client message, so a
/// hook installed once stays quiet for panics raised inside this function.
pub fn contain_panic<T>(work: impl FnOnce() -> Result<T>) -> Result<T> {
    use std::cell::Cell;
    use std::sync::Once;
    thread_local!(static CONTAINING: Cell<bool> = const { Cell::new(false) });
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINING.with(Cell::get) {
                default(info);
            }
        }));
    });
    let outer = CONTAINING.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    CONTAINING.with(|c| c.set(outer));
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("malformed buffers");
        Err(Error::ContainedPanic(format!(
            "malformed IPC message (Arrow's reader panicked: {why})"
        )))
    })
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::types::Int32Type;
    use arrow_array::{DictionaryArray, Int64Array, StringArray};

    fn roundtrip(batches: &[RecordBatch], target: usize) -> (Vec<FlightData>, Vec<RecordBatch>) {
        let schema = batches[0].schema();
        let mut enc = Encoder::new(IpcWriteOptions::default(), target, usize::MAX);
        let mut messages = vec![enc.schema(&schema)];
        for b in batches {
            enc.batch(b, &mut messages).unwrap();
        }
        let mut dec = Decoder::new();
        let mut out = vec![];
        for m in &messages {
            if let Decoded::Batch(b) = dec.decode(m).unwrap() {
                out.push(b);
            }
        }
        (messages, out)
    }

    /// `message` with the declared length of its buffer `k` grown by one byte.
    fn buffer_one_byte_longer(message: &FlightData, k: usize) -> FlightData {
        let header = &message.data_header;
        let msg = arrow_ipc::root_as_message(header).unwrap();
        let buffers = match msg.header_type() {
            MessageHeader::RecordBatch => msg.header_as_record_batch().unwrap().buffers(),
            _ => msg
                .header_as_dictionary_batch()
                .unwrap()
                .data()
                .unwrap()
                .buffers(),
        };
        let buffers = buffers.unwrap();
        // A vector of 16-byte structs (offset, length) inside the header bytes.
        let start = buffers.bytes().as_ptr() as usize - header.as_ptr() as usize;
        let at = start + 16 * k + 8;
        let mut bytes = header.to_vec();
        let len = i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        bytes[at..at + 8].copy_from_slice(&(len + 1).to_le_bytes());
        FlightData {
            data_header: Bytes::from(bytes),
            ..message.clone()
        }
    }

    /// Arrow's reader panics (contained, but still a panic) on an offsets or
    /// keys buffer that is not a whole number of values; hangar refuses it first.
    #[test]
    fn integer_buffers_of_a_partial_value_are_invalid_argument() {
        let strings = StringArray::from(vec!["a", "bb", "ccc", "dddd", "e", "f", "g"]);
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a"].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("s", DataType::Utf8, false),
            Field::new(
                "d",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false,
            ),
        ]));
        let dict = Arc::new(dict.slice(0, 3));
        let strings = Arc::new(strings.slice(0, 3));
        let batch = RecordBatch::try_new(schema, vec![strings, dict]).unwrap();
        let (messages, _) = roundtrip(&[batch], usize::MAX);
        // schema, dictionary batch, record batch
        let (dictionary, record) = (1, messages.len() - 1);
        // Record batch: buffer 1 is the strings' offsets, 4 the dictionary keys.
        // Dictionary batch: buffer 1 is the values' offsets.
        for (m, k) in [(record, 1), (record, 4), (dictionary, 1)] {
            let mut stream = messages.clone();
            stream[m] = buffer_one_byte_longer(&messages[m], k);
            let mut decoder = Decoder::new();
            let err = stream
                .iter()
                .map(|message| decoder.decode(message))
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("message {m} buffer {k} one byte longer was accepted"));
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains("whole number")),
                "message {m} buffer {k}: {err:?}"
            );
        }
    }

    #[test]
    fn batches_with_dictionaries_roundtrip() {
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a", "c"].into_iter().collect();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "d",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            true,
        )]));
        let b1 = RecordBatch::try_new(schema.clone(), vec![Arc::new(dict)]).unwrap();
        let dict2: DictionaryArray<Int32Type> = vec!["x", "y"].into_iter().collect();
        let b2 = RecordBatch::try_new(schema, vec![Arc::new(dict2)]).unwrap();
        let (_, out) = roundtrip(&[b1.clone(), b2.clone()], usize::MAX);
        assert_eq!(out, vec![b1, b2]);
    }

    #[test]
    fn large_batches_are_sliced_near_the_target() {
        let values: Vec<i64> = (0..100_000).collect();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap();
        let (messages, out) = roundtrip(std::slice::from_ref(&b), 100_000);
        assert!(messages.len() >= 8, "{} messages", messages.len());
        assert!(messages.iter().all(|m| m.data_body.len() <= 110_000));
        let total: usize = out.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, 100_000);
        let parts: Vec<_> = out.iter().collect();
        let joined = arrow_select_concat(&parts);
        assert_eq!(joined, b);
    }

    fn arrow_select_concat(parts: &[&RecordBatch]) -> RecordBatch {
        let schema = parts[0].schema();
        let mut values = vec![];
        for p in parts {
            let col = p.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            values.extend(col.values().iter().copied());
        }
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).unwrap()
    }

    #[test]
    fn message_over_the_hard_limit_is_resource_exhausted() {
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["x".repeat(10_000)]))],
        )
        .unwrap();
        let mut enc = Encoder::new(IpcWriteOptions::default(), 1000, 5000);
        enc.schema(&schema);
        let err = enc.batch(&b, &mut vec![]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted);
        assert!(err.message().contains("--max-message-size"), "{err}");
    }

    #[test]
    fn hostile_sequences_are_invalid_argument() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2]))])
            .unwrap();
        let mut enc = Encoder::new(IpcWriteOptions::default(), usize::MAX, usize::MAX);
        let schema_msg = enc.schema(&schema);
        let mut msgs = vec![];
        enc.batch(&b, &mut msgs).unwrap();
        let batch_msg = msgs.pop().unwrap();

        // A batch before the schema.
        let err = Decoder::new().decode(&batch_msg).unwrap_err();
        assert!(err.message().contains("before the schema"), "{err}");
        // A second schema.
        let mut dec = Decoder::new();
        dec.decode(&schema_msg).unwrap();
        let err = dec.decode(&schema_msg).unwrap_err();
        assert!(err.message().contains("schema changed"), "{err}");
        // Garbage header.
        let garbage = FlightData {
            data_header: Bytes::from_static(b"\x01\x02\x03garbage"),
            ..Default::default()
        };
        assert_eq!(
            dec.decode(&garbage).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // Truncated body.
        let truncated = FlightData {
            data_body: batch_msg.data_body.slice(..4),
            ..batch_msg.clone()
        };
        assert_eq!(
            dec.decode(&truncated).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        // Every truncation of the header is an error or a valid message, never a panic.
        for cut in 0..batch_msg.data_header.len() {
            let data = FlightData {
                data_header: batch_msg.data_header.slice(..cut),
                ..batch_msg.clone()
            };
            let _ = dec.decode(&data);
        }
    }

    #[test]
    fn schema_ipc_bytes_roundtrip() {
        let schema = Schema::new(vec![Field::new("n", DataType::Int64, true)]).with_metadata(
            std::collections::HashMap::from([("k".to_string(), "v".to_string())]),
        );
        let bytes = schema_to_ipc(&schema).unwrap();
        assert_eq!(&bytes[..4], &[0xff; 4]);
        assert_eq!(schema_from_ipc(&bytes).unwrap(), schema);
    }
}
