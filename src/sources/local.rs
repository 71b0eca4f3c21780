//! Local sources: an existing etcd snapshot file, a PKI directory, and single files. Files
//! are opened and stat'ed when the source is built, so a missing or unreadable file fails the
//! backup before anything is uploaded; the writer then refuses any file whose size changes.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::archive::manifest::{EntryKind, EtcdInfo};
use crate::archive::writer::SourceEntry;

use super::SourceError;

fn open_err(what: &'static str, path: &Path, source: io::Error) -> SourceError {
    let hint = match source.kind() {
        io::ErrorKind::PermissionDenied => {
            " (run cpvault as a user that can read it, e.g. with sudo)"
        }
        io::ErrorKind::NotFound => " (check the path)",
        _ => "",
    };
    SourceError::Open {
        what,
        path: path.into(),
        source,
        hint,
    }
}

fn entry_for(
    what: &'static str,
    path: &Path,
    archive_path: String,
    kind: EntryKind,
) -> Result<SourceEntry, SourceError> {
    let file = File::open(path).map_err(|e| open_err(what, path, e))?;
    let meta = file.metadata().map_err(|e| open_err(what, path, e))?;
    if !meta.is_file() {
        return Err(SourceError::Invalid {
            what,
            path: path.into(),
            reason: "not a regular file".into(),
        });
    }
    Ok(SourceEntry {
        path: archive_path,
        kind,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        open: Box::new(move || Ok(Box::new(file) as Box<dyn Read + Send>)),
        etcd: None,
        etcd_later: None,
    })
}

/// An existing etcd snapshot file, stored as `etcd/snapshot.db`.
///
/// # Errors
/// [`SourceError`] when it cannot be opened or is not a regular file.
pub fn snapshot_file(path: &Path) -> Result<SourceEntry, SourceError> {
    entry_for(
        "etcd snapshot file",
        path,
        "etcd/snapshot.db".into(),
        EntryKind::EtcdSnapshot,
    )
}

/// The revision and live key count of the snapshot file at `path`, for the manifest (and so
/// for `drill` and `status` to compare with), read by cpvault's own snapshot reader on a thread
/// of its own while the backup streams the file (two reads of it, memory bounded by its keys);
/// the returned closure waits for the answer. `None` when the reader cannot read it; the
/// backup goes ahead, since the facts are a convenience and the bytes are what is kept.
/// Dropping the closure uncalled (a backup that failed) stops the reading at its next read.
pub fn snapshot_facts(path: &Path) -> Box<dyn FnOnce() -> Option<EtcdInfo> + Send> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Sets the flag when the closure goes, called or not (once called, the thread is done).
    struct StopOnDrop(Arc<AtomicBool>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    /// The file, failing every read once the flag is set.
    struct Stoppable(File, Arc<AtomicBool>);
    impl Read for Stoppable {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.1.load(Ordering::Relaxed) {
                return Err(io::Error::other("the backup ended without its facts"));
            }
            self.0.read(buf)
        }
    }
    let p = path.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    let reader = std::thread::spawn(move || {
        let read = crate::inspect::read_snapshot(
            || File::open(&p).map(|f| Stoppable(f, stop.clone())),
            crate::inspect::mvcc::Wants::default(),
        );
        match read {
            Ok(s) => Some(EtcdInfo {
                revision: Some(s.revision),
                keys: Some(s.keys.len() as u64),
                ..EtcdInfo::default()
            }),
            Err(e) => {
                tracing::info!(
                    "{}: {e}; its revision and key count are not recorded",
                    p.display()
                );
                None
            }
        }
    });
    Box::new(move || {
        let facts = reader.join().ok().flatten();
        drop(guard);
        facts
    })
}

/// One file, stored as `files/<file name>`.
///
/// # Errors
/// [`SourceError`] when it cannot be opened, is not a regular file, or has no name.
pub fn plain_file(path: &Path) -> Result<SourceEntry, SourceError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SourceError::Invalid {
            what: "file",
            path: path.into(),
            reason: "has no UTF-8 file name".into(),
        })?;
    entry_for("file", path, format!("files/{name}"), EntryKind::File)
}

/// Every regular file below `dir`, stored as `pki/<relative path>` with its mode, in sorted
/// order. Symlinks and special files are skipped with a warning.
///
/// # Errors
/// [`SourceError`] when the directory or a file in it cannot be read, or it holds no files.
pub fn pki_dir(dir: &Path) -> Result<Vec<SourceEntry>, SourceError> {
    let what = "PKI directory";
    let meta = std::fs::metadata(dir).map_err(|e| open_err(what, dir, e))?;
    if !meta.is_dir() {
        return Err(SourceError::Invalid {
            what,
            path: dir.into(),
            reason: "not a directory".into(),
        });
    }
    let mut files = vec![];
    walk(dir, dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(SourceError::Invalid {
            what,
            path: dir.into(),
            reason: "holds no regular files".into(),
        });
    }
    files
        .into_iter()
        .map(|(rel, abs)| entry_for("PKI file", &abs, format!("pki/{rel}"), EntryKind::Pki))
        .collect()
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|e| open_err("PKI directory", dir, e))?;
    for item in rd {
        let item = item.map_err(|e| open_err("PKI directory", dir, e))?;
        let path = item.path();
        let ft = item
            .file_type()
            .map_err(|e| open_err("PKI file", &path, e))?;
        if ft.is_dir() {
            walk(root, &path, out)?;
        } else if ft.is_file() {
            let rel = path.strip_prefix(root).expect("below root");
            let rel = rel.to_str().ok_or_else(|| SourceError::Invalid {
                what: "PKI file",
                path: path.clone(),
                reason: "name is not UTF-8".into(),
            })?;
            out.push((rel.to_string(), path.clone()));
        } else {
            tracing::warn!(
                "skipping {} in the PKI directory: not a regular file",
                path.display()
            );
        }
    }
    Ok(())
}
