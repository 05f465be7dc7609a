//! The repository on disk: one Parquet file per dataset in one folder.
//!
//! The store owns dataset names (which ones are legal), atomic writes (temporary
//! hidden file, fsync, rename, fsync of the folder), listing (with a cache of
//! Parquet footers so listing never scans data), reads and drops. Everything here
//! is blocking file I/O: callers run it on worker threads, never on async tasks.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

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
            next.map_err(|e| Error::Internal(format!("reading dataset '{}': {e}", self.name)))
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

/// Prefix of the temporary files that uploads write before they commit. They are
/// hidden (leading dot), so listings skip them, and swept at startup.
const TEMP_PREFIX: &str = ".hangar-tmp-";

/// Longest dataset name accepted, in bytes (the usual file-name limit).
const MAX_NAME_BYTES: usize = 255;

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

/// Identity of a file version: a cached footer is valid while this is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Stamp {
    /// The version string a query ticket carries.
    fn version(&self) -> String {
        let modified = self
            .modified
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        format!("{}-{}-{}", self.len, modified, self.inode)
    }

    fn of(meta: &fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: meta.ino(),
        }
    }
}

/// The dataset repository: a folder of Parquet files.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    codec: Codec,
    footers: Mutex<HashMap<String, Footer>>,
    uploads: AtomicU64,
    /// Largest file an upload may produce (`--max-dataset-bytes`).
    max_dataset_bytes: Option<u64>,
}

impl Store {
    /// Opens (creating if missing) the repository folder and removes temporary
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
        let root = root.as_ref();
        fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating repository {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(format!("opening repository {}", root.display()), e))?;
        let store = Store {
            root,
            codec,
            footers: Mutex::new(HashMap::new()),
            uploads: AtomicU64::new(0),
            max_dataset_bytes,
        };
        store.sweep_temporary_files()?;
        Ok(Arc::new(store))
    }

    /// The repository folder (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes temporary upload files of this process and of processes that no
    /// longer run (a crash, a power cut); returns how many.
    pub fn sweep_temporary_files(&self) -> Result<usize> {
        let mut removed = 0;
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("reading {}", self.root.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
                continue;
            };
            // Another live server may share the folder: leave its uploads alone.
            let owner = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let ours_or_orphaned = match owner {
                Some(pid) => {
                    pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists()
                }
                None => true,
            };
            if ours_or_orphaned && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Path of a dataset's file; the name must have passed [`validate_name`].
    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Metadata of a dataset's file, refusing anything but a regular file: a
    /// symlink planted in the repository must never lead reads or writes outside.
    fn regular_file_meta(&self, name: &str) -> Result<fs::Metadata> {
        validate_name(name)?;
        match fs::symlink_metadata(self.path_of(name)) {
            Ok(meta) if meta.file_type().is_file() => Ok(meta),
            Ok(_) => Err(Error::NotFound(format!(
                "dataset '{name}' not found (the repository entry is not a regular file)"
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::NotFound(format!("dataset '{name}' not found")))
            }
            Err(e) => Err(Error::io(format!("reading dataset '{name}'"), e)),
        }
    }

    /// Schema, row count and size of one dataset, from its footer (cached until
    /// the file changes).
    pub fn info(&self, name: &str) -> Result<DatasetInfo> {
        let meta = self.regular_file_meta(name)?;
        Ok(self.footer(name, &meta, None)?.info)
    }

    /// The footer of the version `meta` describes, from the cache or read
    /// from `file` (opened here if not given).
    fn footer(&self, name: &str, meta: &fs::Metadata, file: Option<&File>) -> Result<Footer> {
        let stamp = Stamp::of(meta);
        if let Some(cached) = self
            .footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            if cached.stamp == stamp {
                return Ok(cached.clone());
            }
        }
        let opened;
        let file = match file {
            Some(file) => file,
            None => {
                opened = self.open_file(name)?;
                &opened
            }
        };
        let arrow = ArrowReaderMetadata::load(file, ArrowReaderOptions::new()).map_err(|e| {
            Error::Internal(format!("dataset '{name}' is not readable Parquet: {e}"))
        })?;
        let footer = Footer {
            stamp,
            info: DatasetInfo {
                name: name.to_string(),
                schema: arrow.schema().clone(),
                rows: arrow.metadata().file_metadata().num_rows(),
                bytes: meta.len(),
            },
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
        let meta = self.regular_file_meta(name)?;
        let footer = self.footer(name, &meta, None)?;
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
        let version = footer.stamp.version();
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
        self.regular_file_meta(name)?;
        let file = self.open_file(name)?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("reading dataset '{name}'"), e))?;
        if Stamp::of(&meta).version() != scan.version {
            return Err(Error::FailedPrecondition(format!(
                "dataset '{name}' changed since this ticket was issued: call GetFlightInfo \
                 again for fresh tickets"
            )));
        }
        let footer = self.footer(name, &meta, Some(&file))?;
        // A filter can skip pages too: the page index is read for it (the
        // cached footer leaves it out, as listings never need it).
        let arrow = if scan.filter.is_empty() {
            footer.arrow
        } else {
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            ArrowReaderMetadata::load(&file, options).map_err(|e| {
                Error::Internal(format!("dataset '{name}' is not readable Parquet: {e}"))
            })?
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
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(file, arrow)
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
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("listing {}", self.root.display()), e))?;
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.starts_with(prefix) && validate_name(name).is_ok())
            .collect();
        names.sort();
        let mut infos = Vec::with_capacity(names.len());
        for name in &names {
            match self.info(name) {
                Ok(info) => infos.push(info),
                // Removed between read_dir and now: not an error, just gone.
                Err(Error::NotFound(_)) => {}
                Err(err) => skipped(name, &err),
            }
        }
        // Forget footers of files that no longer exist, so the cache stays bounded.
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, _| names.binary_search(name).is_ok());
        Ok(infos)
    }

    fn open_file(&self, name: &str) -> Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NOFOLLOW: a symlink swapped in after the metadata check fails to open.
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path_of(name))
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => Error::NotFound(format!("dataset '{name}' not found")),
                _ => Error::io(format!("opening dataset '{name}'"), e),
            })
    }

    /// Opens a dataset for streaming, `batch_rows` rows per batch. The open file
    /// handle keeps this version readable even if the dataset is replaced or
    /// dropped while the read goes on.
    pub fn reader(&self, name: &str, batch_rows: usize) -> Result<Batches> {
        self.regular_file_meta(name)?;
        let file = self.open_file(name)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| {
            Error::Internal(format!("dataset '{name}' is not readable Parquet: {e}"))
        })?;
        let schema = builder.schema().clone();
        let reader = builder
            .with_batch_size(batch_rows)
            .build()
            .map_err(|e| Error::Internal(format!("reading dataset '{name}': {e}")))?;
        Ok(Batches {
            name: name.to_string(),
            schema,
            reader,
        })
    }

    /// Starts an upload of `name`. Nothing is visible to readers until
    /// [`Upload::commit`]; dropping the upload without committing removes its
    /// temporary file and leaves any previous version untouched.
    pub fn create(&self, name: &str, schema: SchemaRef) -> Result<Upload> {
        validate_name(name)?;
        if let Ok(meta) = fs::symlink_metadata(self.path_of(name)) {
            if !meta.file_type().is_file() {
                return Err(Error::AlreadyExists(format!(
                    "'{name}' exists in the repository and is not a regular file; refusing to replace it"
                )));
            }
        }
        let seq = self.uploads.fetch_add(1, Ordering::Relaxed);
        // The pid comes first (the startup sweep reads it); the name is cut so
        // that a 255-byte dataset name still gives a legal temporary file name.
        let mut hint = String::new();
        for c in name.chars() {
            if hint.len() + c.len_utf8() > 64 {
                break;
            }
            hint.push(c);
        }
        let temp = self
            .root
            .join(format!("{TEMP_PREFIX}{}-{seq}-{hint}", std::process::id()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(format!("creating a temporary file for '{name}'"), e))?;
        let guard = TempFile(Some(temp));
        let props = WriterProperties::builder()
            .set_compression(self.codec.parquet())
            .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| {
            Error::InvalidArgument(format!("cannot store this schema as Parquet: {e}"))
        })?;
        Ok(Upload {
            name: name.to_string(),
            schema,
            writer: Some(writer),
            temp: guard,
            target: self.path_of(name),
            root: self.root.clone(),
            rows: 0,
            max_bytes: self.max_dataset_bytes,
        })
    }

    /// Deletes a dataset.
    pub fn drop_dataset(&self, name: &str) -> Result<()> {
        self.regular_file_meta(name)?;
        match fs::remove_file(self.path_of(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("dataset '{name}' not found")))
            }
            Err(e) => return Err(Error::io(format!("deleting dataset '{name}'"), e)),
        }
        self.footers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        sync_dir(&self.root).map_err(|e| Error::io("syncing the repository folder", e))
    }
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

/// Removes the temporary file when dropped, unless it was renamed into place.
#[derive(Debug)]
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}

/// An upload in progress: batches go straight into a hidden temporary Parquet
/// file, which [`Upload::commit`] makes durable and renames over the dataset.
pub struct Upload {
    name: String,
    schema: SchemaRef,
    writer: Option<ArrowWriter<File>>,
    temp: TempFile,
    target: PathBuf,
    root: PathBuf,
    rows: u64,
    max_bytes: Option<u64>,
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
            Some(writer) => writer
                .flush()
                .map_err(|e| parquet_error(format!("writing '{name}'"), e)),
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
        writer
            .write(batch)
            .map_err(|e| parquet_error(format!("writing '{name}'"), e))?;
        if writer.in_progress_size() >= ROW_GROUP_FLUSH_BYTES {
            writer
                .flush()
                .map_err(|e| parquet_error(format!("writing '{name}'"), e))?;
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
        let file = writer
            .into_inner()
            .map_err(|e| parquet_error(format!("finishing '{name}'"), e))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing '{name}'"), e))?;
        let bytes = file
            .metadata()
            .map_err(|e| Error::io(format!("reading size of '{name}'"), e))?
            .len();
        drop(file);
        // The footer (schema, metadata) is only written now: check the real size.
        if let Some(max) = self.max_bytes {
            if bytes > max {
                return Err(Error::ResourceExhausted(format!(
                    "upload of '{name}' exceeds --max-dataset-bytes ({max} bytes; the file \
                     would be {bytes} bytes); the previous version is kept"
                )));
            }
        }
        let temp = self
            .temp
            .0
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' lost its file")))?;
        fs::rename(temp, &self.target)
            .map_err(|e| Error::io(format!("replacing dataset '{name}'"), e))?;
        self.temp.0 = None;
        // The rename is only durable once the folder itself is synced.
        sync_dir(&self.root).map_err(|e| Error::io("syncing the repository folder", e))?;
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

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};
    use arrow_schema::{DataType, Field, Schema};
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

    fn temp_files(store: &Store) -> Vec<String> {
        fs::read_dir(store.root())
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
        let file = store.open_file("d").unwrap();
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
        assert_eq!(temp_files(&store).len(), 1);
        drop(up);
        assert!(temp_files(&store).is_empty());
        assert_eq!(store.info("d").unwrap().rows, 3);
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
        assert!(temp_files(&store).is_empty());
    }

    #[test]
    fn startup_sweeps_leftover_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        // pid 0 never names a running server.
        fs::write(dir.path().join(format!("{TEMP_PREFIX}0-0-x")), b"partial").unwrap();
        let store = Store::open(dir.path(), Codec::Snappy).unwrap();
        assert!(temp_files(&store).is_empty());
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
