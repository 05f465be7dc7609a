//! The repository as a bucket prefix on S3, or anything speaking its protocol
//! (MinIO, Ceph RGW, R2, …), through the `object_store` crate.
//!
//! The same guarantees as the folder, by the object store's own means:
//! - an upload is a multipart upload, bounded in memory (one part filling, one
//!   in flight), and appears only when S3 completes it, atomically; any
//!   failure, cancel or limit aborts it so no parts stay billed;
//! - a version is the object's ETag: every read of an opened version is a
//!   ranged GET with `If-Match`, so a dataset replaced through another node
//!   fails the read (FAILED_PRECONDITION) instead of mixing two versions, and
//!   cached footers are keyed by it;
//! - reads fetch the needed column chunks of one row group at a time, and the
//!   next row group's while the current one's batches are on the wire.
//!
//! The store's calls are async; this module runs on the server's blocking
//! worker threads and waits on them through the runtime's handle.

use std::fmt;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{
    ClientConfigKey, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig,
    WriteMultipart,
};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use super::{validate_name, Backend, Sink, Source, Stamp};
use crate::error::{Error, Result};

/// Size of one multipart part (S3's minimum is 5 MiB, except for the last).
const PART_BYTES: usize = 8 * 1024 * 1024;

/// Parts uploading while the next one fills: an upload holds at most
/// `(1 + PARTS_IN_FLIGHT) * PART_BYTES` of its bytes in memory.
const PARTS_IN_FLIGHT: usize = 1;

/// Bytes read from the end of an object when it is opened: the footer of any
/// dataset with a modest schema, in the same request that returns the ETag.
const TAIL_BYTES: u64 = 64 * 1024;

/// Ranges of one row group closer than this are fetched together.
const COALESCE_GAP: u64 = 1024 * 1024;

/// Largest single GET: longer ranges are fetched in pieces, concurrently, so
/// no one request outlives the request timeout.
const MAX_GET_BYTES: u64 = 16 * 1024 * 1024;

/// Fetched row groups a read keeps, oldest dropped first: the reader goes
/// column by column through a batch's rows, so with row groups smaller than
/// a batch each column sweeps the same row groups again.
const HELD_BYTES: u64 = 64 * 1024 * 1024;

/// Largest row group (its needed chunks) fetched whole; larger ones, which
/// files written by other tools may have, are read request by request.
const MAX_STEP_BYTES: u64 = 64 * 1024 * 1024;

/// What a sequential read outside the plan fetches at once.
const WINDOW_BYTES: u64 = 1024 * 1024;

/// A prefix in a bucket holding one Parquet object per dataset.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
    runtime: Handle,
    uploads: Arc<Uploads>,
}

/// Uploads not yet completed or aborted, so that a stopping server can abort
/// the abandoned ones before it exits instead of leaving their parts stored.
#[derive(Default)]
struct Uploads {
    live: std::sync::atomic::AtomicUsize,
    aborts: Mutex<Vec<JoinHandle<()>>>,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket").field("url", &self.url).finish()
    }
}

impl Bucket {
    /// Connects to `url` (`s3://bucket/prefix`) with credentials, region and
    /// endpoint from the standard `AWS_*` environment variables, and lists the
    /// prefix once, so that a bucket that cannot be reached fails startup.
    /// Must run on a thread of the server's runtime that may block.
    pub fn open(url: &str) -> Result<Bucket> {
        let Some(rest) = url.strip_prefix("s3://") else {
            let scheme = url.split("://").next().unwrap_or(url);
            return Err(Error::InvalidArgument(format!(
                "--repo {scheme}://…: hangar reads buckets through S3 URLs \
                 (s3://bucket/prefix; other services through their S3 endpoint, AWS_ENDPOINT)"
            )));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "--repo {url}: no bucket named (expected s3://bucket/prefix)"
            )));
        }
        let prefix = Key::parse(prefix.trim_end_matches('/')).map_err(|e| {
            Error::InvalidArgument(format!("--repo {url}: not a usable prefix: {e}"))
        })?;
        let runtime = Handle::try_current().map_err(|_| {
            Error::Internal("object storage is opened from within the server's runtime".into())
        })?;
        // reqwest is built without a default TLS provider: use the ring
        // provider hangar's own TLS already builds. Fails only if one is set.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        // Our defaults first, so that the environment may override them: a
        // store that does not answer fails a call in seconds, not minutes.
        let mut builder = AmazonS3Builder::new()
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
                "5s",
            )
            .with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "60s")
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(15),
                ..RetryConfig::default()
            });
        for (key, value) in std::env::vars_os() {
            let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
                continue;
            };
            if key.starts_with("AWS_") {
                if let Ok(key) = key.to_ascii_lowercase().parse() {
                    builder = builder.with_config(key, value);
                }
            }
        }
        let store = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("--repo {url}: {e}")))?;
        let bucket = Bucket {
            store: Arc::new(store),
            prefix,
            url: url.trim_end_matches('/').to_string(),
            runtime,
            uploads: Arc::default(),
        };
        bucket
            .wait(bucket.store.list_with_delimiter(Some(&bucket.prefix)))
            .map_err(|e| classify(&format!("listing {}", bucket.url), e))?;
        Ok(bucket)
    }

    fn key(&self, name: &str) -> Key {
        self.prefix.clone().join(name)
    }

    fn wait<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn not_found(name: &str, err: object_store::Error) -> Error {
        match err {
            object_store::Error::NotFound { .. } => {
                Error::NotFound(format!("dataset '{name}' not found"))
            }
            other => classify(&format!("reading dataset '{name}'"), other),
        }
    }
}

/// The version of an object: its ETag. Every S3 server gives one; a store
/// that does not could not keep reads of a replaced object consistent (no
/// `If-Match`), so hangar refuses to serve from it.
fn stamp(meta: &ObjectMeta) -> Result<Stamp> {
    match &meta.e_tag {
        Some(tag) => Ok(Stamp {
            len: meta.size,
            version: tag.clone(),
        }),
        None => Err(Error::Internal(format!(
            "the object store gave no ETag for {}: hangar needs ETags to keep reads of \
             replaced datasets consistent",
            meta.location
        ))),
    }
}

/// An object store error as the crate's, for a call doing `what`. Credentials
/// are never repeated to clients; throttling, 5xx and an unreachable store are
/// UNAVAILABLE, which clients may retry.
pub(crate) fn classify(what: &str, err: object_store::Error) -> Error {
    use object_store::Error as E;
    match err {
        E::NotFound { path, .. } => Error::NotFound(format!("{what}: {path} not found")),
        E::Precondition { .. } | E::NotModified { .. } => Error::FailedPrecondition(format!(
            "{what}: the object changed meanwhile (replaced through another node?); \
             call GetFlightInfo again for fresh tickets"
        )),
        E::AlreadyExists { path, .. } => Error::AlreadyExists(format!("{what}: {path} exists")),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => credentials(what),
        E::Generic { .. }
            if ["status code: 401", "status code: 403"]
                .iter()
                .any(|code| err.to_string().contains(code)) =>
        {
            credentials(what)
        }
        E::Generic { .. } => {
            let text = one_line(&err.to_string());
            // Worth retrying: no answer at all (the transport failed, after
            // object_store's own retries), a 5xx, or throttling. Anything
            // else (another 4xx, a reply that breaks the protocol) would fail
            // again the same way.
            let transient = text.contains("HTTP error")
                || text.contains("status code: 5")
                || text.contains("status code: 429")
                || text.contains("SlowDown");
            if transient {
                Error::Unavailable(format!(
                    "{what}: the object store did not answer ({text}); retry later"
                ))
            } else {
                Error::Internal(format!("{what}: {text}"))
            }
        }
        other => Error::Internal(format!("{what}: {}", one_line(&other.to_string()))),
    }
}

/// A ranged GET the server would not answer as asked.
fn range_refused(err: &object_store::Error) -> bool {
    let text = err.to_string();
    text.contains("non-partial") || text.contains("status code: 416")
}

/// Refused credentials: never the store's reply, which may echo them.
fn credentials(what: &str) -> Error {
    Error::Internal(format!(
        "{what}: the object store refused the server's credentials or permissions \
         (an operator should check the AWS_* settings of the server)"
    ))
}

/// An error text on one line, an S3 XML error body reduced to its code and
/// message (what a person acts on; the request id is noise).
fn one_line(text: &str) -> String {
    let tag = |name: &str| {
        let (open, close) = (format!("<{name}>"), format!("</{name}>"));
        let start = text.find(&open)? + open.len();
        let len = text[start..].find(&close)?;
        Some(text[start..start + len].to_string())
    };
    let head = match text.find("<?xml").or_else(|| text.find("<Error>")) {
        Some(xml) => {
            let head = text[..xml].trim_end().trim_end_matches(':');
            match (tag("Code"), tag("Message")) {
                (Some(code), Some(message)) => format!("{head}: {code} ({message})"),
                (Some(code), None) => format!("{head}: {code}"),
                _ => head.to_string(),
            }
        }
        None => text.to_string(),
    };
    head.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Backend for Bucket {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn stat(&self, name: &str) -> Result<Stamp> {
        let meta = self
            .wait(self.store.head(&self.key(name)))
            .map_err(|e| Bucket::not_found(name, e))?;
        stamp(&meta)
    }

    fn open(&self, name: &str) -> Result<(Source, Stamp)> {
        let key = self.key(name);
        // The tail (footer) and the version in one request.
        let options = GetOptions {
            range: Some(GetRange::Suffix(TAIL_BYTES)),
            ..GetOptions::default()
        };
        let get = |options: GetOptions| async {
            let got = self.store.get_opts(&key, options).await?;
            let (meta, range) = (got.meta.clone(), got.range.clone());
            Ok::<_, object_store::Error>((meta, range, got.bytes().await?))
        };
        let (meta, range, tail) = match self.wait(get(options)) {
            // Some servers answer a suffix range over a small or empty object
            // with the whole object (200) or 416: ask for its size, then for
            // an explicit range (or all of a small object).
            Err(e) if range_refused(&e) => {
                let meta = self
                    .wait(self.store.head(&key))
                    .map_err(|e| Bucket::not_found(name, e))?;
                let range = (meta.size > TAIL_BYTES)
                    .then(|| GetRange::Bounded(meta.size - TAIL_BYTES..meta.size));
                let options = GetOptions {
                    if_match: meta.e_tag.clone(),
                    range,
                    ..GetOptions::default()
                };
                self.wait(get(options))
            }
            got => got,
        }
        .map_err(|e| Bucket::not_found(name, e))?;
        let stamp = stamp(&meta)?;
        let reader = Reader {
            store: self.store.clone(),
            key,
            name: name.to_string(),
            len: meta.size,
            etag: meta.e_tag.clone(),
            runtime: self.runtime.clone(),
            state: Mutex::new(ReadState {
                held: vec![(None, range.start, tail)],
                plan: Vec::new(),
                cursor: 0,
                ahead: None,
            }),
            failure: Arc::default(),
        };
        Ok((Source::Object(reader), stamp))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Result<Stamp>)>> {
        let listed = self
            .wait(self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| classify(&format!("listing {}", self.url), e))?;
        let mut found = Vec::new();
        for meta in &listed.objects {
            let Some(raw) = meta.location.filename() else {
                continue;
            };
            let Ok(name) = decode(raw) else { continue };
            // Only keys that are exactly what hangar would write for the name:
            // anything else could not be read back by that name.
            if !name.starts_with(prefix)
                || validate_name(&name).is_err()
                || self.key(&name) != meta.location
            {
                continue;
            }
            found.push((name, stamp(meta)));
        }
        Ok(found)
    }

    fn create(&self, name: &str) -> Result<Box<dyn Sink>> {
        let upload = self
            .wait(self.store.put_multipart(&self.key(name)))
            .map_err(|e| classify(&format!("starting the upload of '{name}'"), e))?;
        self.uploads
            .live
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Box::new(Multipart {
            name: name.to_string(),
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            runtime: self.runtime.clone(),
            written: 0,
            failure: Arc::default(),
            abandoned: std::sync::atomic::AtomicBool::new(false),
            uploads: self.uploads.clone(),
        }))
    }

    fn delete(&self, name: &str) -> Result<()> {
        // S3 deletes succeed for missing keys: ask first, for NOT_FOUND.
        self.stat(name)?;
        self.wait(self.store.delete(&self.key(name)))
            .map_err(|e| Bucket::not_found(name, e))
    }

    /// At shutdown: waits (up to 10 s) for abandoned uploads to be dropped and
    /// their aborts to finish, so a clean stop leaves no parts stored.
    /// Returns how many uploads were aborted.
    fn sweep(&self) -> Result<usize> {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.uploads.live.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let aborts = std::mem::take(
            &mut *self
                .uploads
                .aborts
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        );
        let mut aborted = 0;
        for abort in aborts {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Ok(Ok(())) = self.wait(tokio::time::timeout(left, abort)) {
                aborted += 1;
            }
        }
        Ok(aborted)
    }
}

/// Percent-decodes a key's last part, as `object_store` encodes names.
fn decode(raw: &str) -> std::result::Result<String, ()> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// An upload as an S3 multipart upload.
struct Multipart {
    name: String,
    upload: Option<WriteMultipart>,
    runtime: Handle,
    written: u64,
    failure: Arc<Mutex<Option<Error>>>,
    /// Set when the upload is dropped unfinished: the Parquet writer's
    /// buffers, flushed on drop, are discarded instead of uploaded.
    abandoned: std::sync::atomic::AtomicBool,
    uploads: Arc<Uploads>,
}

impl Multipart {
    /// Records why the upload failed and hands the writer an `io::Error`.
    fn fail(&self, err: object_store::Error) -> io::Error {
        let err = classify(&format!("uploading '{}'", self.name), err);
        let text = err.to_string();
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
        io::Error::other(text)
    }
}

impl io::Write for Multipart {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.abandoned.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(buf.len());
        }
        let runtime = self.runtime.clone();
        // Part uploads are spawned tasks: they need the runtime's context.
        let _context = runtime.enter();
        let part = PART_BYTES as u64;
        let mut rest = buf;
        while !rest.is_empty() {
            let room = (part - self.written % part) as usize;
            let take = rest.len().min(room);
            let upload = self
                .upload
                .as_mut()
                .ok_or_else(|| io::Error::other("upload already finished"))?;
            if take == room {
                // This completes a part, which starts uploading: first wait
                // until fewer than PARTS_IN_FLIGHT are, so memory stays
                // bounded and the client is pushed back by HTTP/2 meanwhile.
                if let Err(e) = runtime.block_on(upload.wait_for_capacity(PARTS_IN_FLIGHT)) {
                    return Err(self.fail(e));
                }
            }
            upload.write(&rest[..take]);
            self.written += take as u64;
            rest = &rest[take..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink for Multipart {
    fn written(&self) -> u64 {
        self.written
    }

    fn failure_slot(&self) -> Option<Arc<Mutex<Option<Error>>>> {
        Some(self.failure.clone())
    }

    fn abandon(&self) {
        self.abandoned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let name = self.name.clone();
        let upload = self
            .upload
            .take()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' already finished")))?;
        let runtime = self.runtime.clone();
        let _context = runtime.enter();
        // Completing is atomic: the new version appears whole, or not at all
        // (finish aborts the upload when completing fails).
        runtime
            .block_on(upload.finish())
            .map(|_| ())
            .map_err(|e| classify(&format!("completing the upload of '{name}'"), e))
    }
}

impl Drop for Multipart {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Not completed: abort, so that no parts stay stored (and billed).
            // Spawned rather than waited for, as a drop may happen anywhere;
            // a stopping server waits for it (Bucket::sweep).
            let abort = self.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
            let mut aborts = self
                .uploads
                .aborts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            aborts.retain(|a| !a.is_finished());
            aborts.push(abort);
        }
        self.uploads
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One version of an object, read with ranged GETs that all carry its ETag.
pub struct Reader {
    store: Arc<dyn ObjectStore>,
    key: Key,
    name: String,
    len: u64,
    etag: Option<String>,
    runtime: Handle,
    state: Mutex<ReadState>,
    failure: Arc<Mutex<Option<Error>>>,
}

impl fmt::Debug for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("key", &self.key)
            .field("etag", &self.etag)
            .finish_non_exhaustive()
    }
}

/// Ranges on their way: the GETs run on tasks owned by this one, so that
/// aborting it (a cancelled read, a skipped row group) cancels them too.
type Fetch = JoinHandle<object_store::Result<Vec<Bytes>>>;

/// Held bytes: (plan step they belong to, offset, bytes).
type Held = (Option<usize>, u64, Bytes);

struct ReadState {
    /// Bytes in memory, in the order fetched: recent plan steps (up to
    /// [`HELD_BYTES`]), the tail read at open, a window of a sequential read.
    held: Vec<Held>,
    /// What the reader will ask for, step by step: each step the coalesced
    /// ranges of one row group (for a filtered scan, the filter's columns of
    /// every row group first, then the output's).
    plan: Vec<Vec<Range<u64>>>,
    /// The step last fetched.
    cursor: usize,
    /// The next step, on its way.
    ahead: Option<(usize, Fetch)>,
}

impl ReadState {
    /// `length` bytes at `start` (None: up to the end of what is held there).
    fn find(&self, start: u64, length: Option<usize>) -> Option<Bytes> {
        self.held.iter().find_map(|(_, offset, bytes)| {
            let end = offset + bytes.len() as u64;
            let wanted_end = start + length.map_or(1, |l| l as u64);
            (*offset <= start && wanted_end <= end).then(|| {
                let from = (start - offset) as usize;
                match length {
                    Some(l) => bytes.slice(from..from + l),
                    None => bytes.slice(from..),
                }
            })
        })
    }

    /// The plan step holding `start..end`, looking forward from the cursor
    /// first (a column read twice, by a filter and by the output, is in two
    /// steps: the later one is the one wanted once the reader is past the first).
    fn step_of(&self, start: u64, end: u64) -> Option<usize> {
        let holds = |i: &usize| {
            self.plan[*i]
                .iter()
                .any(|r| r.start <= start && end <= r.end)
        };
        (self.cursor..self.plan.len())
            .chain(0..self.cursor.min(self.plan.len()))
            .find(holds)
    }
}

impl Drop for ReadState {
    fn drop(&mut self) {
        if let Some((_, fetch)) = self.ahead.take() {
            fetch.abort();
        }
    }
}

impl Reader {
    /// Bytes in this version of the object.
    pub fn size(&self) -> u64 {
        self.len
    }

    pub fn failure(&self) -> Arc<Mutex<Option<Error>>> {
        self.failure.clone()
    }

    /// Sets what the reader will ask for, row group by row group, in order
    /// (`filter` first when the scan has a filter: the reader evaluates it
    /// over every row group before it reads the output). A row group too
    /// large to hold is left out: it is read request by request instead.
    pub fn will_read(&self, filter: Vec<Vec<Range<u64>>>, output: Vec<Vec<Range<u64>>>) {
        let plan = filter
            .into_iter()
            .chain(output)
            .map(coalesce)
            .filter(|step| step.iter().map(|r| r.end - r.start).sum::<u64>() <= MAX_STEP_BYTES)
            .collect();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).plan = plan;
    }

    /// Fetches `ranges` of this version, concurrently, each in GETs of at
    /// most [`MAX_GET_BYTES`] (joined again in order).
    fn fetch(&self, ranges: Vec<Range<u64>>) -> Fetch {
        let (store, key, etag) = (self.store.clone(), self.key.clone(), self.etag.clone());
        self.runtime.spawn(async move {
            let mut gets = tokio::task::JoinSet::new();
            let mut pieces_of = Vec::with_capacity(ranges.len());
            let mut index = 0;
            for range in &ranges {
                let mut pieces = 0;
                let mut at = range.start;
                while at < range.end {
                    let piece = at..range.end.min(at + MAX_GET_BYTES);
                    at = piece.end;
                    let (store, key) = (store.clone(), key.clone());
                    let options = GetOptions {
                        if_match: etag.clone(),
                        range: Some(GetRange::Bounded(piece)),
                        ..GetOptions::default()
                    };
                    let i = index;
                    gets.spawn(async move {
                        let bytes = store.get_opts(&key, options).await?.bytes().await?;
                        Ok::<_, object_store::Error>((i, bytes))
                    });
                    index += 1;
                    pieces += 1;
                }
                pieces_of.push(pieces);
            }
            let mut got: Vec<Bytes> = vec![Bytes::new(); index];
            while let Some(joined) = gets.join_next().await {
                let (i, bytes) = joined??;
                got[i] = bytes;
            }
            // Pieces of one range back into one buffer.
            let mut pieces = got.into_iter();
            let mut fetched = Vec::with_capacity(ranges.len());
            for (range, count) in ranges.iter().zip(pieces_of) {
                let parts: Vec<Bytes> = pieces.by_ref().take(count).collect();
                let bytes = match parts.len() {
                    1 => parts.into_iter().next().unwrap_or_default(),
                    _ => {
                        let mut joined = Vec::with_capacity((range.end - range.start) as usize);
                        for part in parts {
                            joined.extend_from_slice(&part);
                        }
                        Bytes::from(joined)
                    }
                };
                fetched.push(bytes);
            }
            Ok(fetched)
        })
    }

    /// `length` bytes at `start`, or for `None` a run of bytes from `start`
    /// for a sequential read.
    pub fn get(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        if length == Some(0) {
            return Ok(Bytes::new());
        }
        let wanted_end = start + length.map_or(1, |l| l as u64);
        if wanted_end > self.len {
            return Err(parquet::errors::ParquetError::EOF(format!(
                "dataset '{}': bytes {start}..{wanted_end} asked, the object has {}",
                self.name, self.len
            )));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = state.find(start, length) {
            return Ok(bytes);
        }
        let Some(step) = state.step_of(start, wanted_end) else {
            // Outside the plan (the footer, the page index, a row group too
            // large to hold): what is asked, or for a sequential read (a page
            // header) a window that also holds most pages.
            let end = match length {
                Some(l) => start + l as u64,
                None => (start + WINDOW_BYTES).min(self.len),
            };
            let fetched = self
                .runtime
                .block_on(self.fetch(std::iter::once(start..end).collect()));
            let bytes = self.settle(fetched)?.pop().unwrap_or_default();
            if length.is_none() {
                // Kept, so the page that follows the header is not fetched again.
                state.held.retain(|(step, _, _)| step.is_some());
                state.held.push((None, start, bytes.clone()));
            }
            return Ok(bytes);
        };
        let fetch = match state.ahead.take() {
            Some((ahead, fetch)) if ahead == step => fetch,
            other => {
                if let Some((_, stale)) = other {
                    stale.abort();
                }
                self.fetch(state.plan[step].clone())
            }
        };
        let fetched = self.settle(self.runtime.block_on(fetch))?;
        let ranges = state.plan[step].clone();
        state.held.extend(
            ranges
                .iter()
                .zip(fetched)
                .map(|(r, bytes)| (Some(step), r.start, bytes)),
        );
        // Oldest first out, past HELD_BYTES (never the step just fetched).
        let mut held_bytes: usize = state.held.iter().map(|(_, _, b)| b.len()).sum();
        while held_bytes > HELD_BYTES as usize && state.held[0].0 != Some(step) {
            held_bytes -= state.held.remove(0).2.len();
        }
        state.cursor = step;
        // The next step downloads while this one is decoded and sent.
        if let Some(next) = state.plan.get(step + 1).cloned() {
            state.ahead = Some((step + 1, self.fetch(next)));
        }
        state.find(start, length).ok_or_else(|| {
            parquet::errors::ParquetError::EOF(format!(
                "dataset '{}': bytes at {start} missing from the fetched row group",
                self.name
            ))
        })
    }

    /// A fetch's outcome, its failure recorded for the caller to report.
    fn settle(
        &self,
        fetched: std::result::Result<object_store::Result<Vec<Bytes>>, tokio::task::JoinError>,
    ) -> parquet::errors::Result<Vec<Bytes>> {
        let err = match fetched {
            Ok(Ok(bytes)) => return Ok(bytes),
            Ok(Err(object_store::Error::Precondition { .. }))
            | Ok(Err(object_store::Error::NotFound { .. })) => Error::FailedPrecondition(format!(
                "dataset '{}' was replaced or dropped while being read; call \
                     GetFlightInfo again for fresh tickets",
                self.name
            )),
            Ok(Err(e)) => classify(&format!("reading dataset '{}'", self.name), e),
            Err(e) => Error::Internal(format!("reading dataset '{}': {e}", self.name)),
        };
        let text = err.to_string();
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
        Err(parquet::errors::ParquetError::External(text.into()))
    }
}

/// Sorts ranges and merges those closer than [`COALESCE_GAP`].
fn coalesce(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end + COALESCE_GAP => {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_near_ranges_only() {
        let far = COALESCE_GAP * 4;
        assert_eq!(
            coalesce(vec![10..20, 0..10, 25..30, far..far + 5]),
            vec![0..30, far..far + 5]
        );
        assert!(coalesce(vec![]).is_empty());
    }

    #[test]
    fn names_decode_as_object_store_encodes_them() {
        for name in ["plain.parquet", "a%b", "x y#z", "données été", "a~b[1]"] {
            let key = Key::from("p").join(name);
            assert_eq!(decode(key.filename().unwrap()).unwrap(), name);
        }
        assert!(decode("bad%zz").is_err());
        assert!(decode("cut%4").is_err());
    }

    #[test]
    fn held_bytes_are_found_by_offset() {
        let state = ReadState {
            held: vec![(None, 100, Bytes::from_static(b"0123456789"))],
            plan: vec![vec![0..10], vec![20..30], vec![0..10]],
            cursor: 1,
            ahead: None,
        };
        // A range in two steps: the one at or after the cursor.
        assert_eq!(state.step_of(2, 5), Some(2));
        assert_eq!(state.step_of(20, 30), Some(1));
        assert_eq!(state.step_of(25, 35), None);
        assert_eq!(state.find(102, Some(3)).unwrap(), &b"234"[..]);
        assert_eq!(state.find(105, None).unwrap(), &b"56789"[..]);
        assert!(state.find(108, Some(3)).is_none());
        assert!(state.find(99, Some(1)).is_none());
    }

    #[test]
    fn s3_error_bodies_become_one_line() {
        let text = "Error performing GET http://h/b in 3ms - Server returned non-2xx status \
                    code: 404 Not Found: <?xml version=\"1.0\"?>\n<Error><Code>NoSuchBucket</Code>\
                    <Message>The specified bucket does not exist</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            one_line(text),
            "Error performing GET http://h/b in 3ms - Server returned non-2xx status code: \
             404 Not Found: NoSuchBucket (The specified bucket does not exist)"
        );
        assert_eq!(one_line("a\n  b"), "a b");
    }

    #[test]
    fn errors_keep_credentials_out_and_mark_retryable_ones() {
        let denied = classify(
            "listing",
            object_store::Error::PermissionDenied {
                path: "k".into(),
                source: "SignatureDoesNotMatch secret=AKIA…".into(),
            },
        );
        assert_eq!(denied.code(), tonic::Code::Internal);
        assert!(!denied.to_string().contains("AKIA"), "{denied}");
        let busy = classify(
            "reading",
            object_store::Error::Generic {
                store: "S3",
                source: "Server returned non-2xx status code: 503 Service Unavailable".into(),
            },
        );
        assert_eq!(busy.code(), tonic::Code::Unavailable);
        let changed = classify(
            "reading",
            object_store::Error::Precondition {
                path: "k".into(),
                source: "etag".into(),
            },
        );
        assert_eq!(changed.code(), tonic::Code::FailedPrecondition);
    }
}
