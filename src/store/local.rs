//! The repository as a folder: one Parquet file per dataset.
//!
//! Atomic writes (a hidden temporary file, fsync, rename, fsync of the folder),
//! no symlinks followed, and a sweep of the temporary files a crash leaves.
//! Everything here is blocking file I/O, run on worker threads.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, Sink, Source, Stamp};
use crate::error::{Error, Result};

/// Prefix of the temporary files that uploads write before they commit. They are
/// hidden (leading dot), so listings skip them, and swept at startup.
pub(super) const TEMP_PREFIX: &str = ".hangar-tmp-";

/// A folder of Parquet files.
#[derive(Debug)]
pub struct Folder {
    root: PathBuf,
    uploads: AtomicU64,
}

impl Folder {
    /// Opens (creating if missing) the folder.
    pub fn open(root: &Path) -> Result<Folder> {
        fs::create_dir_all(root)
            .map_err(|e| Error::io(format!("creating repository {}", root.display()), e))?;
        let root = root
            .canonicalize()
            .map_err(|e| Error::io(format!("opening repository {}", root.display()), e))?;
        Ok(Folder {
            root,
            uploads: AtomicU64::new(0),
        })
    }

    /// The folder (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a dataset's file; the name must have passed `validate_name`.
    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Metadata of a dataset's file, refusing anything but a regular file: a
    /// symlink planted in the repository must never lead reads or writes outside.
    fn regular_file_meta(&self, name: &str) -> Result<fs::Metadata> {
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
}

/// A file version: length, modification time and inode.
fn stamp(meta: &fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let modified = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Stamp {
        len: meta.len(),
        version: format!("{}-{}-{}", meta.len(), modified, meta.ino()),
    }
}

impl Backend for Folder {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn stat(&self, name: &str) -> Result<Stamp> {
        Ok(stamp(&self.regular_file_meta(name)?))
    }

    fn open(&self, name: &str) -> Result<(Source, Stamp)> {
        self.regular_file_meta(name)?;
        let file = self.open_file(name)?;
        // The version of the file actually opened: the handle keeps it readable
        // even if the dataset is replaced or dropped while the read goes on.
        let meta = file
            .metadata()
            .map_err(|e| Error::io(format!("reading dataset '{name}'"), e))?;
        Ok((Source::File(file), stamp(&meta)))
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, Result<Stamp>)>> {
        let entries = fs::read_dir(&self.root)
            .map_err(|e| Error::io(format!("listing {}", self.root.display()), e))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !name.starts_with(prefix) || super::validate_name(&name).is_err() {
                continue;
            }
            match self.stat(&name) {
                // Removed between read_dir and now, or not a regular file: not listed.
                Err(Error::NotFound(_)) => {}
                stat => found.push((name, stat)),
            }
        }
        Ok(found)
    }

    fn create(&self, name: &str) -> Result<Box<dyn Sink>> {
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
        Ok(Box::new(TempFile {
            name: name.to_string(),
            file: Some(file),
            path: Some(temp),
            target: self.path_of(name),
            root: self.root.clone(),
            written: 0,
        }))
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.regular_file_meta(name)?;
        match fs::remove_file(self.path_of(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("dataset '{name}' not found")))
            }
            Err(e) => return Err(Error::io(format!("deleting dataset '{name}'"), e)),
        }
        sync_dir(&self.root).map_err(|e| Error::io("syncing the repository folder", e))
    }

    /// Removes temporary upload files of this process and of processes that no
    /// longer run (a crash, a power cut); returns how many.
    fn sweep(&self) -> Result<usize> {
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
}

/// An upload's hidden temporary file: renamed over the dataset on commit,
/// removed when dropped without one.
#[derive(Debug)]
struct TempFile {
    name: String,
    file: Option<File>,
    path: Option<PathBuf>,
    target: PathBuf,
    root: PathBuf,
    written: u64,
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already finished"))?;
        let n = file.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
    }
}

impl Sink for TempFile {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>) -> Result<()> {
        let name = self.name.clone();
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' lost its file")))?;
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing '{name}'"), e))?;
        drop(file);
        let temp = self
            .path
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("upload of '{name}' lost its file")))?;
        fs::rename(temp, &self.target)
            .map_err(|e| Error::io(format!("replacing dataset '{name}'"), e))?;
        self.path = None;
        // The rename is only durable once the folder itself is synced.
        sync_dir(&self.root).map_err(|e| Error::io("syncing the repository folder", e))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
