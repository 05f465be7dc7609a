//! Moving data: `put` streams a Parquet or Arrow IPC file into DoPut, `get`
//! reads every endpoint with DoGet into Parquet, an Arrow IPC file, or an IPC
//! stream on stdout.
//!
//! Both directions have the same shape as the server's: file work runs on a
//! blocking thread, async code only moves messages, and the channel between
//! them is bounded, so memory stays flat whatever the size of the data.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, IsTerminal, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use arrow_array::{RecordBatch, RecordBatchReader};
use arrow_ipc::writer::{DictionaryHandling, FileWriter, IpcWriteOptions, StreamWriter};
use arrow_schema::{ArrowError, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use prost::bytes::Bytes;
use tonic::codegen::tokio_stream::Stream;

use super::connect::{Client, Connector};
use super::progress::Progress;
use super::{Failure, Format, Input, Output};
use crate::ipc::{self, Decoded, Decoder, Encoder};
use crate::json::Value;
use crate::proto::flight_descriptor::DescriptorType;
use crate::proto::{FlightData, FlightDescriptor, FlightInfo};
use crate::stream::{self, Next};

/// Uploads slice batches so each message body stays near this size (what
/// hangar sends too; well under every server's default 4 MiB limit).
const TARGET_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Rows per batch read from a Parquet file.
const BATCH_ROWS: usize = 64 * 1024;
/// Messages or batches in flight between the file thread and the network.
const CHANNEL_DEPTH: usize = 4;
/// A downloaded Parquet file gets a new row group once this much is buffered,
/// which bounds the writer's memory.
const ROW_GROUP_FLUSH_BYTES: usize = 64 * 1024 * 1024;

/// A PATH descriptor naming one dataset, as the cookbook and hangar expect.
pub fn path_descriptor(name: &str) -> FlightDescriptor {
    FlightDescriptor {
        r#type: DescriptorType::Path as i32,
        cmd: Bytes::new(),
        path: vec![name.to_string()],
    }
}

/// A CMD descriptor carrying a hangar query.
pub fn command_descriptor(query: &crate::query::Query) -> FlightDescriptor {
    FlightDescriptor {
        r#type: DescriptorType::Cmd as i32,
        cmd: Bytes::from(query.to_command()),
        path: vec![],
    }
}

/// `get` without `-o` writes binary data to stdout: never onto a terminal.
pub fn check_stdout() -> Result<(), Failure> {
    if std::io::stdout().is_terminal() {
        let mut failure = Failure::usage("refusing to write binary Arrow data to a terminal");
        failure.hint("write a file with -o FILE.parquet (or .arrow, .arrows), or pipe stdout");
        return Err(failure);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// put

/// An opened input: its batches and, when the file says, how many rows.
struct Source {
    label: String,
    /// The file's schema, with its metadata (a Parquet reader's batches may
    /// not carry the metadata, and the server should store it).
    schema: SchemaRef,
    reader: Box<dyn RecordBatchReader + Send>,
    total_rows: Option<u64>,
}

/// Opens `input`, recognising the format from the first bytes: `PAR1` is
/// Parquet, `ARROW1` an IPC file, anything else is read as an IPC stream.
fn open_source(input: &Input) -> Result<Source, Failure> {
    let path = match input {
        Input::Stdin => {
            if std::io::stdin().is_terminal() {
                let mut failure =
                    Failure::usage("refusing to read binary Arrow data from a terminal");
                failure.hint("pipe an Arrow IPC stream into 'hangar put NAME -', or give a FILE");
                return Err(failure);
            }
            let reader = arrow_ipc::reader::StreamReader::try_new(
                BufReader::with_capacity(1 << 20, std::io::stdin()),
                None,
            )
            .map_err(|e| Failure::local(format!("reading an Arrow IPC stream from stdin: {e}")))?;
            return Ok(Source {
                label: "stdin".into(),
                schema: reader.schema(),
                reader: Box::new(reader),
                total_rows: None,
            });
        }
        Input::File(path) => path,
    };
    let label = path.display().to_string();
    let mut file = File::open(path).map_err(|e| Failure::io(format!("opening {label}"), e))?;
    let mut magic = [0u8; 6];
    let mut filled = 0;
    while filled < magic.len() {
        match file.read(&mut magic[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(Failure::io(format!("reading {label}"), e)),
        }
    }
    file.rewind()
        .map_err(|e| Failure::io(format!("reading {label}"), e))?;
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        Failure::local(format!("reading {label} as {what}: {e}"))
    };
    if magic.starts_with(b"PAR1") {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad("Parquet", &e))?;
        let total_rows = u64::try_from(builder.metadata().file_metadata().num_rows()).ok();
        let schema = builder.schema().clone();
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| bad("Parquet", &e))?;
        return Ok(Source {
            label,
            schema,
            reader: Box::new(reader),
            total_rows,
        });
    }
    if &magic == b"ARROW1" {
        let reader = arrow_ipc::reader::FileReader::try_new(BufReader::new(file), None)
            .map_err(|e| bad("an Arrow IPC file", &e))?;
        return Ok(Source {
            label,
            schema: reader.schema(),
            reader: Box::new(reader),
            total_rows: None,
        });
    }
    let reader =
        arrow_ipc::reader::StreamReader::try_new(BufReader::with_capacity(1 << 20, file), None)
            .map_err(|e| {
                let mut failure = bad("an Arrow IPC stream", &e);
                failure
                    .hint("put reads Parquet, Arrow IPC files (.arrow) and IPC streams (.arrows)");
                failure
            })?;
    Ok(Source {
        label,
        schema: reader.schema(),
        reader: Box::new(reader),
        total_rows: None,
    })
}

/// The DoPut request stream, fed by the file thread through the bridge. It
/// ends only when the file thread finished: if it failed (or panicked) the
/// stream stays open and the caller cancels the call, so the server discards
/// the upload instead of committing half of it.
struct UploadStream(stream::Receiver<FlightData, ()>);

impl Stream for UploadStream {
    type Item = FlightData;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<FlightData>> {
        match self.0.poll_step(cx) {
            Poll::Ready(Next::Item(data)) => Poll::Ready(Some(data)),
            Poll::Ready(Next::End) => Poll::Ready(None),
            Poll::Ready(Next::Failed(()) | Next::Abandoned) | Poll::Pending => Poll::Pending,
        }
    }
}

/// How the file thread of an upload ended.
enum Pumped {
    /// Everything was sent; the counts are in the progress.
    Done(Progress),
    /// Reading or encoding failed: the upload must be cancelled.
    Failed(Failure),
    /// The call ended first (the server answered early, with an error).
    CallClosed,
}

/// The upload's file thread: schema first (with the descriptor), then each
/// batch, sliced to messages of about [`TARGET_MESSAGE_BYTES`].
fn pump(
    source: Source,
    name: &str,
    tx: stream::Sender<FlightData, ()>,
    max_message_bytes: usize,
    quiet: bool,
) -> Pumped {
    let Source {
        label,
        schema,
        reader,
        total_rows,
    } = source;
    let mut progress = Progress::new("put", quiet, total_rows);
    let mut encoder = Encoder::new(
        IpcWriteOptions::default(),
        TARGET_MESSAGE_BYTES,
        max_message_bytes,
    );
    let mut first = encoder.schema(&schema);
    first.flight_descriptor = Some(path_descriptor(name));
    let mut messages = vec![first];
    let send = |messages: &mut Vec<FlightData>, progress: &mut Progress, rows: u64| {
        let mut bytes = 0;
        for message in messages.drain(..) {
            bytes += (message.data_header.len() + message.data_body.len()) as u64;
            if tx.blocking_send(message, None).is_err() {
                return false;
            }
        }
        progress.add(rows, bytes);
        true
    };
    if !send(&mut messages, &mut progress, 0) {
        return Pumped::CallClosed;
    }
    for batch in reader {
        let batch = match batch {
            Ok(batch) => batch,
            Err(e) => {
                progress.finish();
                return Pumped::Failed(Failure::local(format!("reading {label}: {e}")));
            }
        };
        if let Err(err) = encoder.batch(&batch, &mut messages) {
            progress.finish();
            return Pumped::Failed(err.into());
        }
        if !send(&mut messages, &mut progress, batch.num_rows() as u64) {
            progress.finish();
            return Pumped::CallClosed;
        }
    }
    progress.finish();
    if tx.is_closed() {
        return Pumped::CallClosed;
    }
    tx.finish();
    Pumped::Done(progress)
}

/// `hangar put NAME FILE`.
pub async fn put(
    connector: &mut Connector,
    name: &str,
    input: &Input,
    quiet: bool,
) -> Result<(), Failure> {
    // The file is opened before connecting: a typo costs no login.
    let opened = input.clone();
    let source = tokio::task::spawn_blocking(move || open_source(&opened))
        .await
        .map_err(|e| Failure::local(format!("opening the input failed: {e}")))??;
    let mut client = connector.main().await?;
    let max_message_bytes = connector.max_message_bytes();

    let (tx, rx) = stream::channel(CHANNEL_DEPTH);
    let dataset = name.to_string();
    let mut pumping =
        tokio::task::spawn_blocking(move || pump(source, &dataset, tx, max_message_bytes, quiet));
    let call = async move {
        let response = client.do_put(UploadStream(rx)).await?;
        let mut results = response.into_inner();
        let mut metadata = Vec::new();
        while let Some(result) = results.message().await? {
            metadata.push(result.app_metadata);
        }
        Ok::<_, tonic::Status>(metadata)
    };
    tokio::pin!(call);

    let mut pumped = None;
    let replies = loop {
        tokio::select! {
            joined = &mut pumping, if pumped.is_none() => match joined {
                Ok(Pumped::Failed(failure)) => return Err(failure), // drops the call: cancelled
                Ok(end) => pumped = Some(end),
                Err(e) => return Err(Failure::local(format!("the upload's reader failed: {e}"))),
            },
            replies = &mut call => break replies,
        }
    };
    let replies = replies?;
    let pumped = match pumped {
        Some(end) => end,
        None => pumping
            .await
            .map_err(|e| Failure::local(format!("the upload's reader failed: {e}")))?,
    };
    let progress = match pumped {
        Pumped::Done(progress) => progress,
        Pumped::Failed(failure) => return Err(failure),
        Pumped::CallClosed => {
            return Err(Failure::local(
                "the server ended the upload before all data was sent",
            ))
        }
    };
    // hangar answers {"rows":N,"bytes":M}; other servers may say nothing.
    let stored = replies.iter().rev().find_map(|metadata| {
        let value = Value::parse(std::str::from_utf8(metadata).ok()?).ok()?;
        let rows = value.get("rows")?.as_u64()?;
        Some((rows, value.get("bytes").and_then(Value::as_u64)))
    });
    if let Some((rows, _)) = stored {
        if rows != progress.rows {
            return Err(Failure::local(format!(
                "sent {} rows of '{name}' but the server stored {rows}",
                progress.rows
            )));
        }
    }
    if !quiet {
        let mut line = progress.summary(name);
        if let Some((_, Some(bytes))) = stored {
            line.push_str(&format!(
                "; stored as {}",
                super::progress::human_bytes(bytes)
            ));
        }
        eprintln!("hangar: {line}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// get

/// What the network side hands the writer thread; finishing the channel
/// means every endpoint was read and the file may be completed.
enum ToWriter {
    Schema(SchemaRef),
    Batch(RecordBatch),
}

/// Why the writer thread stopped early.
enum WriteError {
    Failed(Failure),
    /// The reader of stdout went away (`hangar get d | head -c 100`): not an
    /// error, the consumer has what it wanted.
    BrokenPipe,
    /// The download failed; the writer just stops.
    Abandoned,
}

/// A file being downloaded next to its target; removed unless renamed.
struct Partial {
    path: Option<PathBuf>,
}

impl Partial {
    fn create(target: &Path) -> Result<(Partial, File), Failure> {
        if target.is_dir() {
            return Err(Failure::usage(format!(
                "-o {} is a directory: give a file name",
                target.display()
            )));
        }
        let file_name = target
            .file_name()
            .ok_or_else(|| Failure::usage(format!("-o {} has no file name", target.display())))?;
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let path = dir.join(format!(
            ".{}.hangar-partial-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let file = File::create(&path)
            .map_err(|e| Failure::io(format!("creating a file in {}", dir.display()), e))?;
        Ok((Partial { path: Some(path) }, file))
    }

    fn commit(mut self, target: &Path) -> Result<(), Failure> {
        if let Some(path) = self.path.take() {
            if let Err(e) = fs::rename(&path, target) {
                let _ = fs::remove_file(&path);
                return Err(Failure::io(format!("writing {}", target.display()), e));
            }
        }
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// Where the writer thread writes.
enum Sink {
    Stdout,
    File(File, Format),
}

enum BatchWriter {
    Parquet(ArrowWriter<File>),
    IpcFile(FileWriter<BufWriter<File>>),
    IpcStream(StreamWriter<BufWriter<Box<dyn Write + Send>>>),
}

impl BatchWriter {
    fn open(sink: Sink, schema: &SchemaRef) -> Result<BatchWriter, WriteError> {
        let stream = |out: Box<dyn Write + Send>| {
            StreamWriter::try_new(BufWriter::with_capacity(1 << 20, out), schema)
                .map(BatchWriter::IpcStream)
        };
        let opened = match sink {
            Sink::Stdout => stream(Box::new(std::io::stdout())),
            Sink::File(file, Format::IpcStream) => stream(Box::new(file)),
            Sink::File(file, Format::IpcFile) => {
                // A dictionary that only grows is written as deltas; the IPC
                // file format cannot hold a replaced one (see `write`).
                let options =
                    IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
                FileWriter::try_new_with_options(
                    BufWriter::with_capacity(1 << 20, file),
                    schema,
                    options,
                )
                .map(BatchWriter::IpcFile)
            }
            Sink::File(file, Format::Parquet) => {
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                return ArrowWriter::try_new(file, schema.clone(), Some(properties))
                    .map(BatchWriter::Parquet)
                    .map_err(|e| {
                        WriteError::Failed(Failure::local(format!("writing Parquet: {e}")))
                    });
            }
        };
        opened.map_err(arrow_write_error)
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), WriteError> {
        match self {
            BatchWriter::Parquet(writer) => {
                writer.write(batch).map_err(parquet_write_error)?;
                if writer.in_progress_size() >= ROW_GROUP_FLUSH_BYTES {
                    writer.flush().map_err(parquet_write_error)?;
                }
                Ok(())
            }
            BatchWriter::IpcFile(writer) => writer.write(batch).map_err(|e| {
                if e.to_string().contains("Dictionary replacement") {
                    let mut failure = Failure::local(
                        "the dataset's dictionaries change between batches, which an Arrow IPC \
                         file cannot hold",
                    );
                    failure.hint("write an IPC stream (-o FILE.arrows) or Parquet instead");
                    WriteError::Failed(failure)
                } else {
                    arrow_write_error(e)
                }
            }),
            BatchWriter::IpcStream(writer) => writer.write(batch).map_err(arrow_write_error),
        }
    }

    /// Completes the file (footer, end-of-stream marker) and makes it durable.
    fn finish(self) -> Result<(), WriteError> {
        let file = match self {
            BatchWriter::Parquet(writer) => writer.into_inner().map_err(parquet_write_error)?,
            BatchWriter::IpcFile(mut writer) => {
                writer.finish().map_err(arrow_write_error)?;
                writer
                    .into_inner()
                    .map_err(arrow_write_error)?
                    .into_inner()
                    .map_err(|e| io_write_error(e.into_error()))?
            }
            BatchWriter::IpcStream(mut writer) => {
                writer.finish().map_err(arrow_write_error)?;
                let mut out = writer.into_inner().map_err(arrow_write_error)?;
                return out.flush().map_err(io_write_error);
            }
        };
        file.sync_all().map_err(io_write_error)
    }
}

fn io_write_error(e: std::io::Error) -> WriteError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        WriteError::BrokenPipe
    } else {
        WriteError::Failed(Failure::io("writing the download", e))
    }
}

fn arrow_write_error(e: ArrowError) -> WriteError {
    match e {
        ArrowError::IoError(_, io) => io_write_error(io),
        other => WriteError::Failed(Failure::local(format!("writing the download: {other}"))),
    }
}

fn parquet_write_error(e: parquet::errors::ParquetError) -> WriteError {
    WriteError::Failed(Failure::local(format!("writing Parquet: {e}")))
}

/// The download's writer thread.
fn write_batches(
    sink: Sink,
    fallback_schema: Option<SchemaRef>,
    mut rx: stream::Receiver<ToWriter, ()>,
) -> Result<(), WriteError> {
    let mut sink = Some(sink);
    let mut writer = None;
    loop {
        match rx.blocking_next() {
            Next::Item(ToWriter::Schema(schema)) => {
                if let Some(sink) = sink.take() {
                    writer = Some(BatchWriter::open(sink, &schema)?);
                }
            }
            Next::Item(ToWriter::Batch(batch)) => match writer.as_mut() {
                Some(writer) => writer.write(&batch)?,
                None => {
                    return Err(WriteError::Failed(Failure::local(
                        "a batch arrived before the schema",
                    )))
                }
            },
            Next::End => {
                let writer = match (writer, sink, fallback_schema) {
                    (Some(writer), _, _) => writer,
                    // No stream sent a schema (no endpoints had data): the
                    // FlightInfo's schema still makes a valid empty file.
                    (None, Some(sink), Some(schema)) => BatchWriter::open(sink, &schema)?,
                    _ => {
                        return Err(WriteError::Failed(Failure::local(
                            "the server sent no schema for the dataset",
                        )))
                    }
                };
                return writer.finish();
            }
            Next::Failed(()) | Next::Abandoned => return Err(WriteError::Abandoned),
        }
    }
}

/// `hangar get NAME [-o FILE]`.
pub async fn get(
    connector: &mut Connector,
    name: &str,
    output: &Output,
    select: &super::Selection,
    quiet: bool,
) -> Result<(), Failure> {
    let mut client = connector.main().await?;
    let descriptor = match select.query(name) {
        Some(query) => command_descriptor(&query),
        None => path_descriptor(name),
    };
    let info = client.get_flight_info(descriptor).await?.into_inner();
    let fallback_schema = ipc::schema_from_ipc(&info.schema).ok().map(SchemaRef::new);

    let (partial, sink) = match output {
        Output::Stdout => (None, Sink::Stdout),
        Output::File(path, format) => {
            let (partial, file) = Partial::create(path)?;
            (Some((partial, path)), Sink::File(file, *format))
        }
    };
    let (tx, rx) = stream::channel(CHANNEL_DEPTH);
    let writing = tokio::task::spawn_blocking(move || write_batches(sink, fallback_schema, rx));
    let total_rows = u64::try_from(info.total_records).ok();
    let mut progress = Progress::new("get", quiet, total_rows);

    let fetched = fetch(connector, &info, select.parallel.max(1), &tx, &mut progress).await;
    progress.finish();
    let finished = match fetched {
        Ok(()) if !tx.is_closed() => {
            tx.finish();
            true
        }
        Ok(()) | Err(Fetch::WriterGone) => false,
        Err(Fetch::Failed(failure)) => return Err(failure), // the partial file goes
    };
    let written = writing
        .await
        .map_err(|e| Failure::local(format!("the download's writer failed: {e}")))?;
    match written {
        Ok(()) if finished => {}
        Ok(()) | Err(WriteError::Abandoned) => {
            return Err(Failure::local("the download's writer stopped early"))
        }
        Err(WriteError::BrokenPipe) => return Ok(()),
        Err(WriteError::Failed(failure)) => return Err(failure),
    }
    if let Some((partial, path)) = partial {
        partial.commit(path)?;
    }
    if !quiet {
        eprintln!("hangar: {}", progress.summary(name));
    }
    Ok(())
}

enum Fetch {
    Failed(Failure),
    /// The writer thread stopped; its result says why.
    WriterGone,
}

impl From<Failure> for Fetch {
    fn from(failure: Failure) -> Fetch {
        Fetch::Failed(failure)
    }
}

impl From<tonic::Status> for Fetch {
    fn from(status: tonic::Status) -> Fetch {
        Fetch::Failed(status.into())
    }
}

/// One decoded message of an endpoint's stream, and its size on the wire.
type Fetched = (Decoded, u64);

/// Reads every endpoint and hands the batches to the writer in endpoint
/// order. Up to `window` endpoints are read at once, each into a bounded
/// channel of its own: the ones ahead of the writer stall on a full channel
/// (and HTTP/2 flow control stalls their servers), so memory stays bounded.
/// Each endpoint is its own IPC stream; all must have the first one's schema.
async fn fetch(
    connector: &mut Connector,
    info: &FlightInfo,
    window: usize,
    tx: &stream::Sender<ToWriter, ()>,
    progress: &mut Progress,
) -> Result<(), Fetch> {
    let count = info.endpoint.len();
    let mut pending = std::collections::VecDeque::new();
    let mut next = 0;
    let mut schema: Option<SchemaRef> = None;
    for index in 0..count {
        while next < count && pending.len() < window {
            pending.push_back(start_endpoint(connector, info, next).await?);
            next += 1;
        }
        let Some(mut rx) = pending.pop_front() else {
            break;
        };
        loop {
            let step = std::future::poll_fn(|cx| rx.poll_step(cx)).await;
            let (decoded, bytes) = match step {
                Next::Item(item) => item,
                Next::End => break,
                Next::Failed(failure) => return Err(Fetch::Failed(failure)),
                Next::Abandoned => {
                    return Err(Fetch::Failed(Failure::local(format!(
                        "reading endpoint {} of {count} stopped unexpectedly",
                        index + 1
                    ))))
                }
            };
            match decoded {
                Decoded::Schema(got) => match &schema {
                    None => {
                        schema = Some(got.clone());
                        tx.send(ToWriter::Schema(got))
                            .await
                            .map_err(|_| Fetch::WriterGone)?;
                    }
                    Some(first) if first.fields() == got.fields() => {}
                    Some(first) => {
                        return Err(Fetch::Failed(Failure::local(format!(
                            "endpoint {} of {count} has another schema than the first: {} vs {}",
                            index + 1,
                            got,
                            first
                        ))))
                    }
                },
                Decoded::Batch(batch) => {
                    let rows = batch.num_rows() as u64;
                    tx.send(ToWriter::Batch(batch))
                        .await
                        .map_err(|_| Fetch::WriterGone)?;
                    progress.add(rows, bytes);
                }
                Decoded::Nothing => progress.add(0, bytes),
            }
        }
    }
    Ok(())
}

/// Starts reading endpoint `index` in a task of its own; its decoded
/// messages arrive through the returned bounded channel.
async fn start_endpoint(
    connector: &mut Connector,
    info: &FlightInfo,
    index: usize,
) -> Result<stream::Receiver<Fetched, Failure>, Failure> {
    let mut stream = open_endpoint(connector, info, index).await?;
    let (tx, rx) = stream::channel(CHANNEL_DEPTH);
    tokio::spawn(async move {
        let mut decoder = Decoder::new();
        loop {
            let message = match stream.message().await {
                Ok(Some(message)) => message,
                Ok(None) => return tx.finish(),
                Err(status) => return tx.fail(status.into()),
            };
            let bytes = (message.data_header.len() + message.data_body.len()) as u64;
            match decoder.decode(&message) {
                Ok(decoded) => {
                    if tx.send((decoded, bytes)).await.is_err() {
                        return; // the download stopped: dropping the stream cancels the call
                    }
                }
                Err(err) => return tx.fail(invalid_stream(err)),
            }
        }
    });
    Ok(rx)
}

/// Starts DoGet on endpoint `index` of `info`, on the server its locations
/// name (or this one).
pub async fn open_endpoint(
    connector: &mut Connector,
    info: &FlightInfo,
    index: usize,
) -> Result<tonic::codec::Streaming<FlightData>, Failure> {
    let endpoint = &info.endpoint[index];
    let ticket = endpoint.ticket.clone().ok_or_else(|| {
        Failure::local(format!(
            "endpoint {} of {} has no ticket",
            index + 1,
            info.endpoint.len()
        ))
    })?;
    let mut client: Client = connector.for_locations(&endpoint.location).await?;
    Ok(client.do_get(ticket).await?.into_inner())
}

/// The server sent bytes that are not a valid Flight stream.
pub fn invalid_stream(err: crate::Error) -> Failure {
    Failure::local(format!(
        "the server sent an invalid Flight stream: {}",
        err.message()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_vanish_unless_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.parquet");
        let (partial, mut file) = Partial::create(&target).unwrap();
        file.write_all(b"half").unwrap();
        drop(partial);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);

        let (partial, mut file) = Partial::create(&target).unwrap();
        file.write_all(b"whole").unwrap();
        partial.commit(&target).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(Partial::create(dir.path()).is_err());
    }
}
