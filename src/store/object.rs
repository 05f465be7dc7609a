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

/// Ranges of one row group closer than this are fetched as one GET.
const COALESCE_GAP: u64 = 1024 * 1024;

/// A prefix in a bucket holding one Parquet object per dataset.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    prefix: Key,
    url: String,
    runtime: Handle,
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
        let runtime = Handle::try_current().map_err(|_| {
            Error::Internal("object storage is opened from within the server's runtime".into())
        })?;
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
        for (key, value) in std::env::vars() {
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

/// The version of an object: its ETag (which every S3 server gives), else
/// its modification time.
fn stamp(meta: &ObjectMeta) -> Stamp {
    Stamp {
        len: meta.size,
        version: match &meta.e_tag {
            Some(tag) => tag.clone(),
            None => format!(
                "{}-{}",
                meta.size,
                meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
            ),
        },
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
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::Internal(format!(
            "{what}: the object store refused the server's credentials or permissions \
             (an operator should check the AWS_* settings of the server)"
        )),
        E::Generic { .. } => {
            let text = one_line(&err.to_string());
            // A 4xx other than throttling is a request the store will never
            // accept: retrying does not help.
            let refused = text.contains("status code: 4") && !text.contains("status code: 429");
            if refused {
                Error::Internal(format!("{what}: {text}"))
            } else {
                Error::Unavailable(format!(
                    "{what}: the object store did not answer ({text}); retry later"
                ))
            }
        }
        other => Error::Internal(format!("{what}: {}", one_line(&other.to_string()))),
    }
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
        Ok(stamp(&meta))
    }

    fn open(&self, name: &str) -> Result<(Source, Stamp)> {
        let key = self.key(name);
        // The tail (footer) and the version in one request.
        let options = GetOptions {
            range: Some(GetRange::Suffix(TAIL_BYTES)),
            ..GetOptions::default()
        };
        let (meta, range, tail) = self
            .wait(async {
                let got = self.store.get_opts(&key, options).await?;
                let (meta, range) = (got.meta.clone(), got.range.clone());
                Ok::<_, object_store::Error>((meta, range, got.bytes().await?))
            })
            .map_err(|e| Bucket::not_found(name, e))?;
        let stamp = stamp(&meta);
        let reader = Reader {
            store: self.store.clone(),
            key,
            name: name.to_string(),
            len: meta.size,
            etag: meta.e_tag.clone(),
            runtime: self.runtime.clone(),
            state: Mutex::new(ReadState {
                held: vec![(range.start, tail)],
                plan: Vec::new(),
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
            found.push((name, Ok(stamp(meta))));
        }
        Ok(found)
    }

    fn create(&self, name: &str) -> Result<Box<dyn Sink>> {
        let upload = self
            .wait(self.store.put_multipart(&self.key(name)))
            .map_err(|e| classify(&format!("starting the upload of '{name}'"), e))?;
        Ok(Box::new(Multipart {
            name: name.to_string(),
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            runtime: self.runtime.clone(),
            written: 0,
            failure: Arc::default(),
        }))
    }

    fn delete(&self, name: &str) -> Result<()> {
        // S3 deletes succeed for missing keys: ask first, for NOT_FOUND.
        self.stat(name)?;
        self.wait(self.store.delete(&self.key(name)))
            .map_err(|e| Bucket::not_found(name, e))
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
        let runtime = self.runtime.clone();
        // Part uploads are spawned tasks: they need the runtime's context.
        let _context = runtime.enter();
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        // Wait for room before buffering more: memory stays bounded, and the
        // client's stream is pushed back by HTTP/2 flow control meanwhile.
        if let Err(e) = runtime.block_on(upload.wait_for_capacity(PARTS_IN_FLIGHT)) {
            return Err(self.fail(e));
        }
        upload.write(buf);
        self.written += buf.len() as u64;
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
            // Spawned rather than waited for, as a drop may happen anywhere.
            self.runtime.spawn(async move {
                let _ = upload.abort().await;
            });
        }
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

/// The fetched row group fetched ahead.
type Fetch = JoinHandle<object_store::Result<Vec<Bytes>>>;

#[derive(Default)]
struct ReadState {
    /// Bytes in memory, by offset: the current row group's chunks (or the
    /// tail read at open).
    held: Vec<(u64, Bytes)>,
    /// The ranges each row group will need, in reading order, coalesced.
    plan: Vec<Vec<Range<u64>>>,
    /// The next row group, on its way: its index in `plan`.
    ahead: Option<(usize, Fetch)>,
}

impl ReadState {
    /// `length` bytes at `start` (None: up to the end of what is held there).
    fn find(&self, start: u64, length: Option<usize>) -> Option<Bytes> {
        self.held.iter().find_map(|(offset, bytes)| {
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

    /// Sets the row groups' ranges the reader will ask for, in order.
    pub fn will_read(&self, row_groups: Vec<Vec<Range<u64>>>) {
        let plan = row_groups.into_iter().map(coalesce).collect();
        self.state.lock().unwrap_or_else(|p| p.into_inner()).plan = plan;
    }

    /// Fetches `ranges` of this version, concurrently.
    fn fetch(&self, ranges: Vec<Range<u64>>) -> Fetch {
        let (store, key, etag) = (self.store.clone(), self.key.clone(), self.etag.clone());
        self.runtime.spawn(async move {
            let gets: Vec<_> = ranges
                .into_iter()
                .map(|range| {
                    let (store, key) = (store.clone(), key.clone());
                    let options = GetOptions {
                        if_match: etag.clone(),
                        range: Some(GetRange::Bounded(range)),
                        ..GetOptions::default()
                    };
                    tokio::spawn(async move { store.get_opts(&key, options).await?.bytes().await })
                })
                .collect();
            let mut fetched = Vec::with_capacity(gets.len());
            for get in gets {
                fetched.push(get.await??);
            }
            Ok(fetched)
        })
    }

    /// `length` bytes at `start`, or for `None` a run of bytes from `start`
    /// for a sequential read.
    pub fn get(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bytes) = state.find(start, length) {
            return Ok(bytes);
        }
        let wanted_end = start + length.map_or(1, |l| l as u64);
        let planned = state.plan.iter().position(|group| {
            group
                .iter()
                .any(|r| r.start <= start && wanted_end <= r.end)
        });
        let Some(group) = planned else {
            // Outside the plan (the footer, the page index): what is asked,
            // or for a sequential read up to 64 KiB.
            let end = match length {
                Some(l) => start + l as u64,
                None => (start + TAIL_BYTES).min(self.len),
            };
            let fetched = self
                .runtime
                .block_on(self.fetch(std::iter::once(start..end).collect()));
            let mut fetched = self.settle(fetched)?;
            return Ok(fetched.pop().unwrap_or_default());
        };
        let fetch = match state.ahead.take() {
            Some((ahead, fetch)) if ahead == group => fetch,
            other => {
                if let Some((_, stale)) = other {
                    stale.abort();
                }
                self.fetch(state.plan[group].clone())
            }
        };
        let fetched = self.settle(self.runtime.block_on(fetch))?;
        state.held = state.plan[group]
            .iter()
            .map(|r| r.start)
            .zip(fetched)
            .collect();
        // The next row group downloads while this one is decoded and sent.
        if let Some(next) = state.plan.get(group + 1).cloned() {
            state.ahead = Some((group + 1, self.fetch(next)));
        }
        state.find(start, length).ok_or_else(|| {
            parquet::errors::ParquetError::EOF(format!(
                "dataset '{}': {} bytes at {start} are past the object's end",
                self.name,
                length.unwrap_or(0)
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
            Ok(Err(object_store::Error::Precondition { .. })) => {
                Error::FailedPrecondition(format!(
                    "dataset '{}' was replaced while being read; call GetFlightInfo again \
                     for fresh tickets",
                    self.name
                ))
            }
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
            held: vec![(100, Bytes::from_static(b"0123456789"))],
            plan: Vec::new(),
            ahead: None,
        };
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
