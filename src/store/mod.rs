//! The dataset repository: one Parquet file per dataset, in a folder
//! ([`local`]) or, with the `object-store` feature, under a bucket prefix
//! ([`object`]).
//!
//! The store owns dataset names (which ones are legal), listing (with a cache
//! of Parquet footers keyed by each file's version, so listing never scans
//! data and never describes a replaced file), query planning, reads, uploads
//! and drops. Where the bytes live is a [`Backend`]: it stats, lists, opens a
//! version for reading, writes an upload that becomes visible only when it
//! commits, and deletes. Everything here blocks: callers run it on worker
//! threads, never on async tasks.

pub mod local;
#[cfg(feature = "object-store")]
pub mod object;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::file::reader::{ChunkReader, Length};

use arrow_array::RecordBatch;
use arrow_array::UInt64Array;
use arrow_schema::SchemaRef;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder, RowFilter, RowSelection, RowSelector,
};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::query::{self, GroupStats, Query, Scan};

/// What a query reads, planned from the footer.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The answer's schema: the projection, in the order asked.
    pub schema: SchemaRef,
    /// Rows in the answer, when statistics make it exact.
    pub rows: Option<u64>,
    /// Estimated bytes read: the needed column chunks of the kept row groups.
    pub bytes: u64,
    /// Row groups in the file, and those the filter may match.
    pub row_groups: usize,
    pub kept: usize,
    /// One per endpoint.
    pub scans: Vec<Scan>,
}

/// Verdicts for a column without statistics: keep everything, prove nothing.
fn continue_unknown(groups: usize) -> (arrow_array::BooleanArray, arrow_array::BooleanArray) {
    (
        arrow_array::BooleanArray::from(vec![true; groups]),
        arrow_array::BooleanArray::from(vec![false; groups]),
    )
}

/// The rows of `row_groups` whose pages' statistics (the page index, where
/// the file has one) may match every predicate; `None` when nothing can be
/// skipped. Each predicate's pages become row ranges; the ranges of all
/// predicates are intersected, since columns page at different rows.
fn page_selection(
    arrow: &ArrowReaderMetadata,
    row_groups: &[usize],
    predicates: &[query::Predicate],
) -> Result<Option<RowSelection>> {
    let metadata = arrow.metadata();
    let Some(index) = metadata.page_index() else {
        return Ok(None);
    };
    let mut selection: Option<RowSelection> = None;
    for predicate in predicates {
        let Ok(converter) =
            StatisticsConverter::try_new(&predicate.column, arrow.schema(), arrow.parquet_schema())
        else {
            continue;
        };
        let pages = (|| -> parquet::errors::Result<Option<GroupStats>> {
            let Some(rows) = converter.data_page_row_counts(
                index.as_ref(),
                metadata.row_groups(),
                row_groups,
            )?
            else {
                return Ok(None);
            };
            Ok(Some(GroupStats {
                min: converter.data_page_mins(index.as_ref(), row_groups)?,
                max: converter.data_page_maxes(index.as_ref(), row_groups)?,
                nulls: converter.data_page_null_counts(index.as_ref(), row_groups)?,
                rows,
            }))
        })();
        let Ok(Some(pages)) = pages else { continue };
        if arrow_array::Array::null_count(&pages.rows) > 0 {
            continue;
        }
        let (keep, _) = predicate.prune(&pages)?;
        let selectors: Vec<RowSelector> = (0..pages.rows.len())
            .map(|page| {
                let rows = pages.rows.value(page) as usize;
                if keep.value(page) {
                    RowSelector::select(rows)
                } else {
                    RowSelector::skip(rows)
                }
            })
            .collect();
        let this = RowSelection::from(selectors);
        selection = Some(match selection {
            None => this,
            Some(so_far) => so_far.intersection(&this),
        });
    }
    Ok(selection.filter(|s| s.skipped_row_count() > 0))
}

/// Top-level columns (by index) a query reads: its projection and its filter.
fn needed_roots(schema: &arrow_schema::Schema, query: &Query) -> Vec<usize> {
    let mut roots: Vec<usize> = match &query.columns {
        None => (0..schema.fields().len()).collect(),
        Some(columns) => columns
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect(),
    };
    roots.extend(
        query
            .filter
            .iter()
            .filter_map(|c| schema.index_of(&c.column).ok()),
    );
    roots.sort_unstable();
    roots.dedup();
    roots
}

/// The record batches of one dataset version, read row group by row group.
/// Parquet stays behind this type: callers see batches and crate errors.
pub struct Batches {
    name: String,
    schema: SchemaRef,
    reader: ParquetRecordBatchReader,
    /// Where the source records why a read failed, if it can.
    failure: Option<Arc<Mutex<Option<Error>>>>,
}

impl Batches {
    /// The dataset's schema as uploaded (metadata and dictionaries included).
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }
}

impl Iterator for Batches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        let next = self.reader.next()?;
        Some(
            next.map_err(|e| {
                self.failure
                    .as_ref()
                    .and_then(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take())
                    .unwrap_or_else(|| {
                        Error::Internal(format!("reading dataset '{}': {e}", self.name))
                    })
            })
            .and_then(|batch| self.in_schema_order(batch)),
        )
    }
}

impl Batches {
    /// The reader yields a projection's columns in file order; a query may
    /// ask for another order.
    fn in_schema_order(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let same_order = batch.num_columns() == self.schema.fields().len()
            && batch
                .schema()
                .fields()
                .iter()
                .zip(self.schema.fields())
                .all(|(a, b)| a.name() == b.name());
        if same_order {
            return Ok(batch);
        }
        let indices = self
            .schema
            .fields()
            .iter()
            .map(|f| batch.schema().index_of(f.name()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("reading dataset '{}': {e}", self.name)))?;
        batch
            .project(&indices)
            .map_err(|e| Error::Internal(format!("reading dataset '{}': {e}", self.name)))
    }
}

/// Longest dataset name accepted, in bytes (the usual file-name limit).
const MAX_NAME_BYTES: usize = 255;

/// A column chunk's dictionary grows to this before the writer falls back to
/// plain encoding. The parquet crate's 1 MiB default lets a column of unique
/// values (ids, measurements) intern 128K of them into a hash table in every
/// row group before giving up, which was a fifth of DoPut's CPU; columns with
/// few distinct values (labels, categories) fit in 64 KiB either way. Measured
/// on the benchmark's table (8M rows, pyarrow client): server CPU per upload
/// -21 %, upload time -24 %, file -6 %, peak memory -8 MiB.
const DICTIONARY_PAGE_BYTES: usize = 64 * 1024;

/// An upload flushes its row group once the encoded, buffered size passes this,
/// which bounds the writer's memory whatever the clients' batch sizes are.
const ROW_GROUP_FLUSH_BYTES: usize = 32 * 1024 * 1024;

/// Row count at which the writer starts a new row group regardless of size.
const MAX_ROW_GROUP_ROWS: usize = 1024 * 1024;

/// Compression codec for new Parquet files (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Snappy,
    Zstd,
    None,
}

impl std::str::FromStr for Codec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "snappy" => Ok(Codec::Snappy),
            "zstd" => Ok(Codec::Zstd),
            "none" => Ok(Codec::None),
            other => Err(format!(
                "unknown compression '{other}' (expected snappy, zstd or none)"
            )),
        }
    }
}

impl Codec {
    fn parquet(self) -> Compression {
        match self {
            Codec::Snappy => Compression::SNAPPY,
            Codec::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Codec::None => Compression::UNCOMPRESSED,
        }
    }
}

/// What the footer of one dataset says: no data pages are read to build it.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    pub name: String,
    pub schema: SchemaRef,
    pub rows: i64,
    /// Size of the Parquet file on disk.
    pub bytes: u64,
}

/// One dataset version's footer, parsed once.
#[derive(Debug, Clone)]
struct Footer {
    stamp: Stamp,
    info: DatasetInfo,
    arrow: ArrowReaderMetadata,
}

/// Identity of one version of a dataset's file: a cached footer is valid, and
/// a ticket readable, while this is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Bytes in the file.
    pub len: u64,
    /// What tells versions apart where the bytes live (a folder: length,
    /// modification time and inode; a bucket: the object's ETag).
    pub version: String,
}

/// Where datasets' bytes live. Names reaching a backend have passed
/// [`validate_name`].
pub trait Backend: Send + Sync + fmt::Debug {
    /// Where, for the log: a folder or a URL.
    fn describe(&self) -> String;
    /// The current version of a dataset; NotFound if there is none.
    fn stat(&self, name: &str) -> Result<Stamp>;
    /// Opens the current version for reading. Every read through the source
    /// sees that version, even if the dataset is replaced meanwhile, or
    /// fails with FAILED_PRECONDITION.
    fn open(&self, name: &str) -> Result<(Source, Stamp)>;
    /// Datasets whose names start with `prefix` (valid names only), each with
    /// its version or why it could not be read.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Result<Stamp>)>>;
    /// Starts writing a new version; nothing is visible until [`Sink::commit`],
    /// and a sink dropped without it leaves nothing behind.
    fn create(&self, name: &str) -> Result<Box<dyn Sink>>;
    /// Deletes a dataset; NotFound if there is none.
    fn delete(&self, name: &str) -> Result<()>;
    /// Cleans up what uploads interrupted by a crash left; returns how many.
    fn sweep(&self) -> Result<usize> {
        Ok(0)
    }
}

/// The bytes of an upload on their way to the backend.
pub trait Sink: io::Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Makes the written bytes the dataset's new version, atomically.
    fn commit(self: Box<Self>) -> Result<()>;
    /// The upload is being dropped unfinished: what the writer still
    /// flushes need not be kept.
    fn abandon(&self) {}
    /// Where the sink records why a write failed, when the backend knows
    /// better than the `io::Error` the Parquet writer saw (a bucket's status).
    fn failure_slot(&self) -> Option<Arc<Mutex<Option<Error>>>> {
        None
    }
    /// The failure recorded so far, taken out of the slot.
    fn failure(&self) -> Option<Error> {
        let slot = self.failure_slot()?;
        let taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken
    }
}

/// One version of a dataset's file, opened for reading.
#[derive(Debug)]
pub enum Source {
    File(File),
    #[cfg(feature = "object-store")]
    Object(object::Reader),
}

impl Source {
    /// Tells the source which byte ranges the reader will ask for, one list
    /// per row group in reading order (a filter's columns over every row
    /// group first, as the reader evaluates the filter before it reads the
    /// output), so that a remote source can fetch each row group's column
    /// chunks at once and the next one ahead.
    fn will_read(&self, _filter: Vec<Vec<Range<u64>>>, _output: Vec<Vec<Range<u64>>>) {
        #[cfg(feature = "object-store")]
        if let Source::Object(reader) = self {
            reader.will_read(_filter, _output);
        }
    }

    /// Why a read failed, when the source knows better than the Parquet error.
    fn failure(&self) -> Option<Arc<Mutex<Option<Error>>>> {
        match self {
            Source::File(_) => None,
            #[cfg(feature = "object-store")]
            Source::Object(reader) => Some(reader.failure()),
        }
    }
}

impl Length for Source {
    fn len(&self) -> u64 {
        match self {
            Source::File(file) => file.len(),
            #[cfg(feature = "object-store")]
            Source::Object(reader) => reader.size(),
        }
    }
}

/// A sequential reader over a [`Source`].
pub enum SourceRead {
    File(BufReader<File>),
    #[cfg(feature = "object-store")]
    Bytes(bytes::buf::Reader<Bytes>),
}

impl Read for SourceRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SourceRead::File(r) => r.read(buf),
            #[cfg(feature = "object-store")]
            SourceRead::Bytes(r) => r.read(buf),
        }
    }
}

impl ChunkReader for Source {
    type T = SourceRead;

    fn get_read(&self, start: u64) -> parquet::errors::Result<SourceRead> {
        match self {
            Source::File(file) => file.get_read(start).map(SourceRead::File),
            #[cfg(feature = "object-store")]
            Source::Object(reader) => {
                use bytes::Buf;
                reader
                    .get(start, None)
                    .map(|b| SourceRead::Bytes(b.reader()))
            }
        }
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        match self {
            Source::File(file) => file.get_bytes(start, length),
            #[cfg(feature = "object-store")]
            Source::Object(reader) => reader.get(start, Some(length)),
        }
    }
}

/// The dataset repository.
#[derive(Debug)]
pub struct Store {
    backend: Box<dyn Backend>,
    codec: Codec,
    footers: Mutex<HashMap<String, Footer>>,
    /// Largest file an upload may produce (`--max-dataset-bytes`).
    max_dataset_bytes: Option<u64>,
}

impl Store {
    /// Opens (creating if missing) a repository folder and removes temporary
    /// files left by uploads that never committed (a crash, a power cut).
    pub fn open(root: impl AsRef<Path>, codec: Codec) -> Result<Arc<Store>> {
        Store::open_limited(root, codec, None)
    }

    /// Like [`Store::open`], refusing uploads whose file would exceed
    /// `max_dataset_bytes`.
    pub fn open_limited(
        root: impl AsRef<Path>,
        codec: Codec,
        max_dataset_bytes: Option<u64>,
    ) -> Result<Arc<Store>> {
        let folder = local::Folder::open(root.as_ref())?;
        Store::with_backend(Box::new(folder), codec, max_dataset_bytes)
    }

    /// Opens the repository `--repo` names: a folder (a path, or a
    /// `file://` URL) or, with the `object-store` feature, a bucket prefix
    /// (`s3://bucket/prefix`). Fails if it cannot be reached.
    pub fn open_repo(
        repo: &str,
        codec: Codec,
        max_dataset_bytes: Option<u64>,
    ) -> Result<Arc<Store>> {
        if let Some(path) = repo.strip_prefix("file://") {
            return Store::open_limited(path, codec, max_dataset_bytes);
        }
        match repo.split_once("://") {
            None => Store::open_limited(repo, codec, max_dataset_bytes),
            #[cfg(feature = "object-store")]
            Some(_) => {
                let bucket = object::Bucket::open(repo)?;
                Store::with_backend(Box::new(bucket), codec, max_dataset_bytes)
            }
            #[cfg(not(feature = "object-store"))]
            Some((scheme, _)) => Err(Error::InvalidArgument(format!(
                "--repo {scheme}://…: this hangar was built without object storage; \
                 build it with `cargo build --release --features object-store`, or give a folder"
            ))),
        }
    }

    fn with_backend(
        backend: Box<dyn Backend>,
        codec: Codec,
        max_dataset_bytes: Option<u64>,
    ) -> Result<Arc<Store>> {
        let store = Store {
            backend,
            codec,
            footers: Mutex::new(HashMap::new()),
            max_dataset_bytes,
        };
        store.sweep_temporary_files()?;
        Ok(Arc::new(store))
    }

    /// Where the datasets live (a folder, or a bucket URL), for the log.
    pub fn location(&self) -> String {
        self.backend.describe()
    }

    /// Removes what uploads of this process, and of processes that no longer
    /// run, left behind (a crash, a power cut); returns how many.
    pub fn sweep_temporary_files(&self) -> Result<usize> {
        self.backend.sweep()
    }

    /// Schema, row count and size of one dataset, from its footer (cached until
    /// the file changes).
    pub fn info(&self, name: &str) -> Result<DatasetInfo> {
        validate_name(name)?;
        let stamp = self.backend.stat(name)?;
        Ok(self.footer(name, &stamp, None)?.info)
    }

    /// The footer of version `stamp`, from the cache or read from `source`
    /// (opened here if not given).
    fn footer(&self, name: &str, stamp: &Stamp, source: Option<&Source>) -> Result<Footer> {
        if let Some(cached) = self
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            if cached.stamp == *stamp {
                return Ok(cached.clone());
            }
        }
        let opened;
        let (source, stamp) = match source {
            Some(source) => (source, stamp.clone()),
            None => {
                opened = self.backend.open(name)?;
                (&opened.0, opened.1.clone())
            }
        };
        let arrow = ArrowReaderMetadata::load(source, ArrowReaderOptions::new())
            .map_err(|e| unreadable(name, source, e))?;
        let footer = Footer {
            info: DatasetInfo {
                name: name.to_string(),
                schema: arrow.schema().clone(),
                rows: arrow.metadata().file_metadata().num_rows(),
                bytes: stamp.len,
            },
            stamp,
            arrow,
        };
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), footer.clone());
        Ok(footer)
    }
    /// Plans a query from the dataset's footer: which row groups can hold
    /// matching rows (statistics prune the others), how many rows the answer
    /// has when that is known, how many bytes reading it takes, and the scans
    /// (tickets) that fetch it, contiguous runs of row groups balanced by bytes.
    pub fn plan(&self, query: &Query) -> Result<Plan> {
        let name = &query.dataset;
        validate_name(name)?;
        let stamp = self.backend.stat(name)?;
        let footer = self.footer(name, &stamp, None)?;
        let arrow = &footer.arrow;
        let (schema, predicates) = query.bind(arrow.schema())?;
        let groups = arrow.metadata().row_groups();
        let mut keep = vec![true; groups.len()];
        let mut all = vec![true; groups.len()];
        for predicate in &predicates {
            let converter = StatisticsConverter::try_new(
                &predicate.column,
                arrow.schema(),
                arrow.parquet_schema(),
            );
            let stats = converter.and_then(|c| {
                Ok(GroupStats {
                    min: c.row_group_mins(groups)?,
                    max: c.row_group_maxes(groups)?,
                    nulls: c.row_group_null_counts(groups)?,
                    rows: UInt64Array::from_iter_values(groups.iter().map(|g| g.num_rows() as u64)),
                })
            });
            let (k, a) = match stats {
                Ok(stats) => predicate.prune(&stats)?,
                // No usable statistics: nothing can be pruned or proven.
                Err(_) => continue_unknown(groups.len()),
            };
            for g in 0..groups.len() {
                keep[g] &= k.value(g);
                all[g] &= a.value(g);
            }
        }
        let needed = needed_roots(arrow.schema(), query);
        let parquet_schema = arrow.parquet_schema();
        let group_bytes = |g: usize| -> u64 {
            groups[g]
                .columns()
                .iter()
                .enumerate()
                .filter(|(leaf, _)| needed.contains(&parquet_schema.get_column_root_idx(*leaf)))
                .map(|(_, c)| u64::try_from(c.compressed_size()).unwrap_or(0))
                .sum()
        };
        let mut kept: Vec<(usize, u64)> = (0..groups.len())
            .filter(|&g| keep[g])
            .map(|g| (g, group_bytes(g)))
            .collect();
        let row_groups = groups.len();
        let kept_count = kept.len();
        let group_rows = |g: usize| u64::try_from(groups[g].num_rows()).unwrap_or(0);
        let exact = kept.iter().all(|(g, _)| all[*g]);
        let mut rows = exact.then(|| kept.iter().map(|(g, _)| group_rows(*g)).sum::<u64>());
        let version = footer.stamp.version.clone();
        let mut partitions = query.partitions;
        let mut limits: Option<Vec<u64>> = None;
        if let Some(limit) = query.limit {
            rows = rows.map(|r| r.min(limit));
            if query.filter.is_empty() {
                // Only the first groups are needed, and each endpoint knows
                // how many of the limit's rows are its own.
                let mut left = limit;
                kept.retain(|(g, _)| {
                    let take = left > 0;
                    left = left.saturating_sub(group_rows(*g));
                    take
                });
            } else {
                // Which rows match is unknown until read: one endpoint.
                partitions = 1;
            }
            let runs = query::balance(&kept, partitions);
            let mut left = limit;
            limits = Some(
                runs.iter()
                    .map(|run| {
                        let in_run: u64 = run.iter().map(|g| group_rows(*g)).sum();
                        let take = if query.filter.is_empty() {
                            left.min(in_run)
                        } else {
                            left
                        };
                        left -= take.min(left);
                        take
                    })
                    .collect(),
            );
        }
        let bytes = kept.iter().map(|(_, b)| *b).sum();
        let scans = query::balance(&kept, partitions)
            .into_iter()
            .enumerate()
            .map(|(i, run)| {
                let limit = limits.as_ref().map(|l| l[i]);
                Scan::of(query, run, limit, &version)
            })
            .collect();
        Ok(Plan {
            schema,
            rows,
            bytes,
            row_groups,
            kept: kept_count,
            scans,
        })
    }

    /// Opens one scan of a query for streaming. Fails with FAILED_PRECONDITION
    /// if the dataset is no longer the version the ticket was planned on, so a
    /// replaced dataset never answers with another version's rows.
    pub fn scan(&self, scan: &Scan, batch_rows: usize) -> Result<Batches> {
        let name = &scan.dataset;
        validate_name(name)?;
        let (source, stamp) = self.backend.open(name)?;
        if stamp.version != scan.version {
            return Err(Error::FailedPrecondition(format!(
                "dataset '{name}' changed since this ticket was issued: call GetFlightInfo \
                 again for fresh tickets"
            )));
        }
        let footer = self.footer(name, &stamp, Some(&source))?;
        // A filter can skip pages too: the page index is read for it (the
        // cached footer leaves it out, as listings never need it).
        let arrow = if scan.filter.is_empty() {
            footer.arrow
        } else {
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            ArrowReaderMetadata::load(&source, options).map_err(|e| unreadable(name, &source, e))?
        };
        let schema = arrow.schema().clone();
        let projected = query::project(&schema, scan.columns.as_deref())?;
        let predicates = scan
            .filter
            .iter()
            .map(|c| c.bind(&schema))
            .collect::<Result<Vec<_>>>()?;
        let groups = arrow.metadata().num_row_groups();
        if let Some(bad) = scan.row_groups.iter().find(|&&g| g >= groups) {
            return Err(Error::InvalidArgument(format!(
                "the ticket names row group {bad}, but dataset '{name}' has {groups}"
            )));
        }
        let roots = |names: &mut dyn Iterator<Item = &str>| -> Vec<usize> {
            let mut roots: Vec<usize> = names.filter_map(|n| schema.index_of(n).ok()).collect();
            roots.sort_unstable();
            roots.dedup();
            roots
        };
        let parquet_schema = arrow.parquet_schema().clone();
        let output = roots(&mut projected.fields().iter().map(|f| f.name().as_str()));
        let pages = page_selection(&arrow, &scan.row_groups, &predicates)?;
        let filtered = roots(&mut predicates.iter().map(|p| p.column.as_str()));
        source.will_read(
            chunk_ranges(&arrow, &scan.row_groups, &filtered),
            chunk_ranges(&arrow, &scan.row_groups, &output),
        );
        let failure = source.failure();
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(source, arrow)
            .with_batch_size(batch_rows)
            .with_row_groups(scan.row_groups.clone())
            .with_projection(ProjectionMask::roots(&parquet_schema, output));
        if let Some(selection) = pages {
            builder = builder.with_row_selection(selection);
        }
        if !predicates.is_empty() {
            let filter_roots = roots(&mut predicates.iter().map(|p| p.column.as_str()));
            let mask = ProjectionMask::roots(&parquet_schema, filter_roots);
            let predicate = ArrowPredicateFn::new(mask, move |batch: RecordBatch| {
                query::evaluate_all(&predicates, &batch)
                    .map_err(|e| arrow_schema::ArrowError::ComputeError(e.to_string()))
            });
            builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
        }
        if let Some(limit) = scan.limit {
            builder = builder.with_limit(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        let reader = builder
            .build()
            .map_err(|e| Error::Internal(format!("reading dataset '{name}': {e}")))?;
        Ok(Batches {
            name: name.to_string(),
            schema: projected,
            reader,
            failure,
        })
    }

    /// Every readable dataset whose name starts with `prefix`, sorted by name.
    /// Hidden files, temporary files and files that are not Parquet are skipped
    /// (and reported through `skipped`), so one bad file never breaks a listing.
    pub fn list(
        &self,
        prefix: &str,
        mut skipped: impl FnMut(&str, &Error),
    ) -> Result<Vec<DatasetInfo>> {
        let mut found = self.backend.list(prefix)?;
        found.sort_by(|a, b| a.0.cmp(&b.0));
        let mut infos = Vec::with_capacity(found.len());
        for (name, stamp) in &found {
            match stamp
                .clone()
                .and_then(|stamp| self.footer(name, &stamp, None))
            {
                Ok(footer) => infos.push(footer.info),
                // Removed between the listing and now: not an error, just gone.
                Err(Error::NotFound(_)) => {}
                // A store that does not answer fails the listing: skipping
                // would make its datasets look gone.
                Err(err @ Error::Unavailable(_)) => return Err(err),
                Err(err) => skipped(name, &err),
            }
        }
        // Forget footers of files that no longer exist, so the cache stays bounded.
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| {
                found
                    .binary_search_by(|(n, _)| n.as_str().cmp(name))
                    .is_ok()
            });
        Ok(infos)
    }

    /// Opens a dataset for streaming, `batch_rows` rows per batch. The version
    /// opened stays readable even if the dataset is replaced or dropped while
    /// the read goes on.
    pub fn reader(&self, name: &str, batch_rows: usize) -> Result<Batches> {
        validate_name(name)?;
        let (source, stamp) = self.backend.open(name)?;
        let footer = self.footer(name, &stamp, Some(&source))?;
        let groups: Vec<usize> = (0..footer.arrow.metadata().num_row_groups()).collect();
        let columns: Vec<usize> = (0..footer.arrow.schema().fields().len()).collect();
        source.will_read(Vec::new(), chunk_ranges(&footer.arrow, &groups, &columns));
        let failure = source.failure();
        let schema = footer.arrow.schema().clone();
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(source, footer.arrow)
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| Error::Internal(format!("reading dataset '{name}': {e}")))?;
        Ok(Batches {
            name: name.to_string(),
            schema,
            reader,
            failure,
        })
    }

    /// Starts an upload of `name`. Nothing is visible to readers until
    /// [`Upload::commit`]; dropping the upload without committing leaves any
    /// previous version untouched and nothing else behind.
    pub fn create(&self, name: &str, schema: SchemaRef) -> Result<Upload> {
        validate_name(name)?;
        let sink = self.backend.create(name)?;
        let props = WriterProperties::builder()
            .set_compression(self.codec.parquet())
            .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .build();
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(props)).map_err(|e| {
            Error::InvalidArgument(format!("cannot store this schema as Parquet: {e}"))
        })?;
        Ok(Upload {
            name: name.to_string(),
            schema,
            writer: Some(writer),
            rows: 0,
            max_bytes: self.max_dataset_bytes,
        })
    }

    /// Deletes a dataset.
    pub fn drop_dataset(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        self.backend.delete(name)?;
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        Ok(())
    }
}

/// The byte ranges of the column chunks of `columns` (top-level indices) in
/// each of `row_groups`, in that order.
fn chunk_ranges(
    arrow: &ArrowReaderMetadata,
    row_groups: &[usize],
    columns: &[usize],
) -> Vec<Vec<Range<u64>>> {
    let parquet_schema = arrow.parquet_schema();
    let groups = arrow.metadata().row_groups();
    row_groups
        .iter()
        .filter_map(|&g| groups.get(g))
        .map(|group| {
            group
                .columns()
                .iter()
                .enumerate()
                .filter(|(leaf, _)| columns.contains(&parquet_schema.get_column_root_idx(*leaf)))
                .map(|(_, chunk)| {
                    let (start, len) = chunk.byte_range();
                    start..start + len
                })
                .collect()
        })
        .collect()
}

/// A footer that would not load: the source's own failure when it has one
/// (a bucket that refused, a version replaced mid-read), else not Parquet.
fn unreadable(name: &str, source: &Source, err: ParquetError) -> Error {
    if let Some(failure) = source.failure() {
        if let Some(err) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return err;
        }
    }
    Error::Internal(format!("dataset '{name}' is not readable Parquet: {err}"))
}

/// Checks a dataset name against the rules that keep every name a plain file
/// inside the repository. The message names the rule that was broken.
pub fn validate_name(name: &str) -> Result<()> {
    let rule = if name.is_empty() {
        "must not be empty"
    } else if name == "." || name == ".." {
        "must not be '.' or '..'"
    } else if name.len() > MAX_NAME_BYTES {
        "must be at most 255 bytes"
    } else if name.contains('/') || name.contains('\\') {
        "must not contain '/' or '\\'"
    } else if name.contains('\0') {
        "must not contain NUL"
    } else if name.starts_with('.') {
        "must not start with '.' (hidden files are reserved)"
    } else if name.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    let shown: String = name
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    Err(Error::InvalidArgument(format!(
        "invalid dataset name \"{shown}\": a name {rule}"
    )))
}

/// An upload in progress: batches are encoded as Parquet straight into the
/// backend's [`Sink`], which [`Upload::commit`] turns into the dataset's new
/// version atomically.
pub struct Upload {
    name: String,
    schema: SchemaRef,
    writer: Option<ArrowWriter<Box<dyn Sink>>>,
    rows: u64,
    max_bytes: Option<u64>,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(writer) = &self.writer {
            writer.inner().abandon();
        }
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The schema every batch of this upload must have.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Memory the Parquet writer holds for the row group not yet flushed
    /// (encoded pages and the column writers' buffers).
    pub fn buffered_bytes(&self) -> u64 {
        self.writer.as_ref().map_or(0, |w| w.memory_size() as u64)
    }

    /// Writes the buffered rows out as a row group now, freeing the writer's
    /// buffers (a smaller row group; the data is the same).
    pub fn flush(&mut self) -> Result<()> {
        let name = &self.name;
        match self.writer.as_mut() {
            Some(writer) => writer.flush().map_err(|e| {
                writer
                    .inner()
                    .failure()
                    .unwrap_or_else(|| parquet_error(format!("writing '{name}'"), e))
            }),
            None => Ok(()),
        }
    }

    /// Appends one batch. Its schema must equal the upload's.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema_ref().fields() != self.schema.fields() {
            return Err(Error::InvalidArgument(format!(
                "batch schema differs from the upload's schema: expected {}, got {}",
                describe_fields(&self.schema),
                describe_fields(batch.schema_ref())
            )));
        }
        let name = &self.name;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' already finished")))?;
        let written = writer.write(batch).and_then(|()| {
            if writer.in_progress_size() >= ROW_GROUP_FLUSH_BYTES {
                writer.flush()?;
            }
            Ok(())
        });
        if let Err(err) = written {
            return Err(writer
                .inner()
                .failure()
                .unwrap_or_else(|| parquet_error(format!("writing '{name}'"), err)));
        }
        if let Some(max) = self.max_bytes {
            let size = (writer.bytes_written() + writer.in_progress_size()) as u64;
            if size > max {
                return Err(Error::ResourceExhausted(format!(
                    "upload of '{name}' exceeds --max-dataset-bytes ({max} bytes); \
                     the previous version is kept"
                )));
            }
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file, makes it durable and atomically replaces the dataset.
    /// Returns the file size in bytes.
    pub fn commit(mut self) -> Result<u64> {
        let name = self.name.clone();
        let writer = self
            .writer
            .take()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' already finished")))?;
        // A sink that failed says why; the writer (and the sink with it) is
        // gone by then, so the sink keeps its failure where we can still ask.
        let failure = writer.inner().failure_slot();
        let sink = writer.into_inner().map_err(|e| {
            failure
                .and_then(|slot| slot.lock().unwrap_or_else(|p| p.into_inner()).take())
                .unwrap_or_else(|| parquet_error(format!("finishing '{name}'"), e))
        })?;
        let bytes = sink.written();
        // The footer (schema, metadata) is only written now: check the real size.
        if let Some(max) = self.max_bytes {
            if bytes > max {
                return Err(Error::ResourceExhausted(format!(
                    "upload of '{name}' exceeds --max-dataset-bytes ({max} bytes; the file \
                     would be {bytes} bytes); the previous version is kept"
                )));
            }
        }
        sink.commit()?;
        Ok(bytes)
    }
}

fn describe_fields(schema: &SchemaRef) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}: {}", f.name(), f.data_type()))
        .collect();
    format!("[{}]", fields.join(", "))
}

/// Classifies a Parquet write error, recognising the I/O errors underneath it.
fn parquet_error(what: String, err: ParquetError) -> Error {
    if let ParquetError::External(inner) = &err {
        if let Some(io_err) = inner.downcast_ref::<io::Error>() {
            let io_err = match io_err.raw_os_error() {
                Some(code) => io::Error::from_raw_os_error(code),
                None => io::Error::new(io_err.kind(), io_err.to_string()),
            };
            return Error::io(what, io_err);
        }
    }
    let text = err.to_string();
    // Some write paths stringify the io::Error; the OS message is still there.
    if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
        return Error::ResourceExhausted(format!("{what}: disk full ({text})"));
    }
    if text.contains("File too large") {
        return Error::ResourceExhausted(format!("{what}: file too large ({text})"));
    }
    Error::Internal(format!("{what}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::local::TEMP_PREFIX;
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
    use std::fs;
    use tonic::Code;

    fn batch(values: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let strings: Vec<String> = values.iter().map(|v| format!("v{v}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(values.to_vec())),
                Arc::new(StringArray::from(strings)),
            ],
        )
        .unwrap()
    }

    fn temp_files(root: &Path) -> Vec<String> {
        fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TEMP_PREFIX))
            .collect()
    }

    #[test]
    fn names_that_could_escape_or_hide_are_rejected_with_the_rule() {
        for (name, rule) in [
            ("", "empty"),
            (".", "'.'"),
            ("..", "'.'"),
            ("a/b", "'/'"),
            ("a\\b", "'/'"),
            ("/etc/passwd", "'/'"),
            ("../x", "'/'"),
            ("a\0b", "NUL"),
            (".hidden", "start with '.'"),
        ] {
            let err = validate_name(name).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
            assert!(err.message().contains(rule), "{name:?}: {err}");
        }
        assert!(validate_name(&"x".repeat(256))
            .unwrap_err()
            .message()
            .contains("255"));
        assert!(validate_name(&"x".repeat(255)).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::None).unwrap();
        let longest = "é".repeat(127) + "x";
        assert_eq!(longest.len(), 255);
        let b = batch(&[1]);
        let mut up = store.create(&longest, b.schema()).unwrap();
        up.write(&b).unwrap();
        up.commit().unwrap();
        assert_eq!(store.info(&longest).unwrap().rows, 1);
        assert!(validate_name("uploaded.parquet").is_ok());
        assert!(validate_name("données été.parquet").is_ok());
    }

    #[test]
    fn queries_prune_row_groups_and_pages_and_tickets_die_with_their_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::Snappy).unwrap();
        let values: Vec<i64> = (0..200_000).collect();
        let mut up = store.create("d", batch(&values[..1]).schema()).unwrap();
        for chunk in values.chunks(50_000) {
            up.write(&batch(chunk)).unwrap();
        }
        up.commit().unwrap();
        let query = Query::from_command(
            br#"{"dataset":"d","columns":["s"],"filter":[["n",">=",195000]],"partitions":4}"#,
        )
        .unwrap();
        let plan = store.plan(&query).unwrap();
        assert_eq!(plan.schema.fields().len(), 1);
        let scans = &plan.scans;
        let rows: usize = scans
            .iter()
            .map(|scan| {
                store
                    .scan(scan, 1024)
                    .unwrap()
                    .map(|b| b.unwrap().num_rows())
                    .sum::<usize>()
            })
            .sum();
        assert_eq!(rows, 5_000);
        // The page index lets the scan skip most of the row group's pages.
        let file = File::open(dir.path().join("d")).unwrap();
        let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
        let arrow = ArrowReaderMetadata::load(&file, options).unwrap();
        let schema = arrow.schema().clone();
        let predicates: Vec<_> = query
            .filter
            .iter()
            .map(|c| c.bind(&schema).unwrap())
            .collect();
        let groups: Vec<usize> = (0..arrow.metadata().num_row_groups()).collect();
        let selection = page_selection(&arrow, &groups, &predicates)
            .unwrap()
            .unwrap();
        assert!(selection.skipped_row_count() >= 150_000, "{selection:?}");
        // A replaced dataset refuses the old tickets.
        let mut up = store.create("d", batch(&[1]).schema()).unwrap();
        up.write(&batch(&[1])).unwrap();
        up.commit().unwrap();
        let err = store
            .scan(&scans[0], 1024)
            .err()
            .expect("a stale ticket fails");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    }

    #[test]
    fn commit_replaces_and_abandoned_upload_leaves_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::Snappy).unwrap();
        let first = batch(&[1, 2, 3]);
        let mut up = store.create("d", first.schema()).unwrap();
        up.write(&first).unwrap();
        let bytes = up.commit().unwrap();
        let info = store.info("d").unwrap();
        assert_eq!((info.rows, info.bytes), (3, bytes));

        let mut up = store.create("d", first.schema()).unwrap();
        up.write(&batch(&[4, 5, 6, 7])).unwrap();
        assert_eq!(temp_files(dir.path()).len(), 1);
        drop(up);
        assert!(temp_files(dir.path()).is_empty());
        assert_eq!(store.info("d").unwrap().rows, 3);
    }

    #[test]
    fn unique_values_give_up_their_dictionary_early_and_few_distinct_keep_it() {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::None).unwrap();
        let rows = 200_000i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("label", DataType::Utf8, false),
        ]));
        let labels: Vec<String> = (0..rows).map(|i| format!("label-{}", i % 10)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..rows)),
                Arc::new(StringArray::from(labels)),
            ],
        )
        .unwrap();
        let mut up = store.create("d", schema).unwrap();
        up.write(&batch).unwrap();
        up.commit().unwrap();
        assert_eq!(store.info("d").unwrap().rows, rows);

        let file = fs::File::open(dir.path().join("d")).unwrap();
        let reader = SerializedFileReader::new(file).unwrap();
        let chunk = reader.metadata().row_group(0).column(0);
        // Uncompressed, the dictionary page is the dictionary: 1.6 MB of
        // unique ids would fill the parquet crate's default 1 MiB.
        let dictionary_page = chunk.data_page_offset() - chunk.dictionary_page_offset().unwrap();
        assert!(
            dictionary_page <= (DICTIONARY_PAGE_BYTES + 1024) as i64,
            "dictionary page of {dictionary_page} bytes"
        );
        let labels = reader.metadata().row_group(0).column(1);
        assert!(labels.dictionary_page_offset().is_some());
        // 4-bit dictionary indices: ~100 KB; plain strings would be ~2.2 MB.
        assert!(
            labels.compressed_size() < 500_000,
            "10 distinct labels take {} bytes: not dictionary-encoded",
            labels.compressed_size()
        );
    }

    #[test]
    fn batch_with_other_schema_is_invalid_argument() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::Zstd).unwrap();
        let mut up = store.create("d", batch(&[1]).schema()).unwrap();
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = up.write(&other).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("x: Int64"), "{err}");
    }

    #[test]
    fn listing_skips_hidden_temporary_and_non_parquet_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::None).unwrap();
        let b = batch(&[1, 2]);
        let mut up = store.create("good", b.schema()).unwrap();
        up.write(&b).unwrap();
        up.commit().unwrap();
        fs::write(dir.path().join("junk.txt"), b"not parquet").unwrap();
        fs::write(dir.path().join(".hidden"), b"x").unwrap();
        let mut skipped = vec![];
        let infos = store
            .list("", |name, _| skipped.push(name.to_string()))
            .unwrap();
        let names: Vec<_> = infos.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["good"]);
        assert_eq!(skipped, ["junk.txt"]);
        assert!(store.list("zzz", |_, _| {}).unwrap().is_empty());
    }

    #[test]
    fn uploads_beyond_the_size_limit_fail_and_keep_the_old_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_limited(dir.path(), Codec::None, Some(10_000)).unwrap();
        let small = batch(&[1, 2, 3]);
        let mut up = store.create("d", small.schema()).unwrap();
        up.write(&small).unwrap();
        up.commit().unwrap();
        let values: Vec<i64> = (0..10_000).collect();
        let mut up = store.create("d", small.schema()).unwrap();
        let err = up.write(&batch(&values)).unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted);
        assert!(err.message().contains("--max-dataset-bytes"), "{err}");
        drop(up);
        assert_eq!(store.info("d").unwrap().rows, 3);
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn repository_urls_are_checked_before_anything_is_opened() {
        let err = Store::open_repo("gs://bucket/x", Codec::Snappy, None).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        #[cfg(feature = "object-store")]
        {
            assert!(err.message().contains("s3://bucket/prefix"), "{err}");
            let err = Store::open_repo("s3:///x", Codec::Snappy, None).unwrap_err();
            assert!(err.message().contains("no bucket"), "{err}");
        }
        #[cfg(not(feature = "object-store"))]
        assert!(err.message().contains("--features object-store"), "{err}");
        // A file:// URL is a folder.
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("r").display());
        Store::open_repo(&url, Codec::Snappy, None).unwrap();
        assert!(dir.path().join("r").is_dir());
    }

    #[test]
    fn startup_sweeps_leftover_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 never names a running server.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}0-0-x")), b"partial").unwrap();
        Store::open(dir.path(), Codec::Snappy).unwrap();
        assert!(temp_files(dir.path()).is_empty());
    }

    #[test]
    fn footer_cache_notices_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::Snappy).unwrap();
        for n in [2usize, 5] {
            let values: Vec<i64> = (0..n as i64).collect();
            let b = batch(&values);
            let mut up = store.create("d", b.schema()).unwrap();
            up.write(&b).unwrap();
            up.commit().unwrap();
            assert_eq!(store.info("d").unwrap().rows, n as i64);
        }
    }

    #[test]
    fn symlinks_in_the_repository_are_not_followed() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("secret.parquet");
        fs::write(&secret, b"secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Codec::Snappy).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join("link")).unwrap();
        assert_eq!(store.info("link").unwrap_err().code(), Code::NotFound);
        assert!(store.reader("link", 10).is_err());
        assert_eq!(
            store.drop_dataset("link").unwrap_err().code(),
            Code::NotFound
        );
        assert!(store.create("link", batch(&[1]).schema()).is_err());
        assert_eq!(fs::read(&secret).unwrap(), b"secret");
    }
}
