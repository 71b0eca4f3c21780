//! Extracting a backup into a new local directory while verifying every layer: the one
//! implementation behind `extract` and `restore --to-dir`. Files are created 0600 inside 0700
//! directories, in a hidden work dir beside the target, and get their recorded modes and
//! their place only after the whole archive verified; on any failure everything written is
//! removed again, so a directory left behind is always a verified, complete copy. It never
//! overwrites and never prints.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::archive::reader::Sink;
use crate::error::Usage;
use crate::trust::Authorship;
use crate::verify::Report;

/// A verified extract.
#[derive(Debug)]
pub struct Extracted {
    /// The verification report.
    pub report: Report,
    /// The files written, as paths under the target.
    pub written: Vec<String>,
}

/// Why an extract left nothing behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The backup failed verification (the report says which check).
    #[error("the backup failed verification")]
    Verify(Box<Report>),
    /// Anything else: a bad target, this machine could not write.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<Usage> for ExtractError {
    fn from(u: Usage) -> Self {
        ExtractError::Other(u.into())
    }
}

struct DirSink {
    root: PathBuf,
    stop: tokio_util::sync::CancellationToken,
}

impl Sink for DirSink {
    fn open(
        &mut self,
        path: &str,
        _size: u64,
        _mode: u32,
    ) -> io::Result<Option<Box<dyn Write + Send>>> {
        if self.stop.is_cancelled() {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        // Directories are made one level at a time below the work dir, never the work dir
        // itself: once an interruption has removed it, nothing can bring it back.
        let dest = self.root.join(path);
        let mut dir = self.root.clone();
        if let Some((dirs, _)) = path.rsplit_once('/') {
            for part in dirs.split('/') {
                dir.push(part);
                match fs::DirBuilder::new().mode(0o700).create(&dir) {
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                    _ => {}
                }
            }
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(e.kind(), "the archive holds this path twice")
                } else {
                    e
                }
            })?;
        Ok(Some(Box::new(io::BufWriter::with_capacity(
            WRITE_CHUNK,
            FileThread::start(f),
        ))))
    }
}

/// Bytes handed to a file's writer thread at a time, and how many may wait for it.
const WRITE_CHUNK: usize = 256 * 1024;
const WRITE_QUEUE: usize = 4;

/// After this many bytes written, the file's writeback is started (see [`EarlySync`]).
const EARLY_SYNC_BYTES: u64 = 32 * 1024 * 1024;

/// A file written on a thread of its own, so that copying into the page cache (the largest
/// cost of an extract) overlaps decompression and hashing instead of following them; `flush`
/// waits for every byte and makes them durable (`sync_data`), so a verified extract is on
/// disk when the command says so. Memory: at most `WRITE_QUEUE` chunks in flight.
struct FileThread {
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl FileThread {
    fn start(mut f: File) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(WRITE_QUEUE);
        let thread = std::thread::spawn(move || {
            let mut early = EarlySync::default();
            let mut since = 0u64;
            for chunk in rx {
                f.write_all(&chunk)?;
                since += chunk.len() as u64;
                if since >= EARLY_SYNC_BYTES {
                    since = 0;
                    early.nudge(&f)?;
                }
            }
            early.finish()?;
            f.sync_data()
        });
        FileThread {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    /// Ends the thread and returns its outcome (once; later calls say Ok).
    fn finish(&mut self) -> io::Result<()> {
        self.tx = None;
        join(self.thread.take(), "writer")
    }
}

/// Durability while the file is still being written: a second thread flushes what has been
/// written so far (`sync_data` on a clone of the handle) while the writer goes on, so the
/// final `sync_data` finds little left to do and the disk works alongside decompression and
/// hashing instead of after them. A nudge while a flush runs is dropped (the running one or
/// the final one covers those bytes). An error of any early flush is the file's error: the
/// kernel reports a failed writeback once only.
#[derive(Default)]
struct EarlySync {
    nudge: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<io::Result<()>>>,
}

impl Drop for EarlySync {
    /// A writer that stopped on an error still closes its clone of the file.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

impl EarlySync {
    fn nudge(&mut self, f: &File) -> io::Result<()> {
        if self.nudge.is_none() {
            let clone = f.try_clone()?;
            let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
            self.thread = Some(std::thread::spawn(move || {
                for () in rx {
                    clone.sync_data()?;
                }
                Ok(())
            }));
            self.nudge = Some(tx);
        }
        match self.nudge.as_ref().map(|tx| tx.try_send(())) {
            Some(Err(std::sync::mpsc::TrySendError::Disconnected(()))) => self.finish(),
            _ => Ok(()),
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.nudge = None;
        join(self.thread.take(), "sync")
    }
}

/// The outcome of a finished helper thread (Ok when there was none).
fn join(thread: Option<std::thread::JoinHandle<io::Result<()>>>, what: &str) -> io::Result<()> {
    match thread.map(std::thread::JoinHandle::join) {
        None => Ok(()),
        Some(Ok(r)) => r,
        Some(Err(_)) => Err(io::Error::other(format!(
            "the file's {what} thread panicked"
        ))),
    }
}

impl Write for FileThread {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let sent = self.tx.as_ref().map(|tx| tx.send(b.to_vec()));
        match sent {
            Some(Ok(())) => Ok(b.len()),
            // The thread stopped on an error: that error is the answer.
            _ => Err(self
                .finish()
                .err()
                .unwrap_or_else(|| io::Error::other("the file was already closed"))),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        self.finish()
    }
}

impl Drop for FileThread {
    /// A file dropped unflushed (a failed or interrupted extract) is still closed before the
    /// work dir is removed.
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

fn prepare(dir: &Path) -> Result<(), ExtractError> {
    match fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Usage(format!(
                    "--to '{}' exists and is not empty; extract never overwrites — choose a new directory",
                    dir.display()
                ))
                .into());
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("--to '{}'", dir.display()))?;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("--to '{}': cannot create it", dir.display()))?),
        Err(e) => Err(anyhow::Error::from(e)
            .context(format!("--to '{}'", dir.display()))
            .into()),
    }
}

/// Verifies `m` deeply while writing its files into the new dir `to`, then applies the
/// recorded modes; on failure `to` is left empty. Returns the report and the files written.
///
/// # Errors
/// [`Usage`] when `to` is not empty, [`VerifyFailed`] when a check fails, other errors when
/// this machine cannot write.
pub async fn extract_verified(
    store: &cpvault_backends::Store,
    m: &crate::archive::manifest::Manifest,
    who: &Authorship,
    identities: std::sync::Arc<crate::crypto::Identities>,
    to: &Path,
    quiet: bool,
) -> Result<Extracted, ExtractError> {
    // An untrusted backup is refused before anything is created.
    if let Some(refused) = crate::verify::refuse_untrusted(m, who, true) {
        return Err(ExtractError::Verify(Box::new(refused)));
    }
    // Ctrl-C, SIGTERM or SIGHUP stop the read; the work dir (plaintext CA keys) is removed
    // when `partial` drops on the way out, instead of the process dying with it on disk.
    let stop = crate::interrupt::token();
    prepare(to)?;
    // Files are written into a hidden 0700 sibling and moved into `to` only once every byte
    // verified, so `to` never holds unverified plaintext, even if cpvault is killed midway.
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".cpvault-extract-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work dir beside '{}'", to.display()))?;
    let sink = DirSink {
        root: partial.path().to_path_buf(),
        stop: stop.clone(),
    };
    let bar = crate::progress::bytes(quiet, 0, &format!("extract {}", m.reference()));
    let verified =
        crate::verify::verify(store, m, who, Some(identities), Box::new(sink), bar.clone());
    let report = tokio::select! {
        r = verified => r,
        () = stop.cancelled() => {
            bar.finish_and_clear();
            return Err(anyhow::anyhow!(
                "interrupted; nothing was left in {} and the work dir was removed",
                to.display()
            )
            .into());
        }
    };
    bar.finish_and_clear();
    if !report.ok {
        let failed: Vec<&crate::verify::Check> = report.failures().collect();
        if let [only] = failed.as_slice() {
            if only.name == "write" {
                // The backup is fine; this machine could not write it (disk full, permissions).
                return Err(anyhow::anyhow!(
                    "writing into {}: {}; nothing was left there — free space or fix permissions and run extract again",
                    to.display(),
                    only.detail
                )
                .into());
            }
        }
        return Err(ExtractError::Verify(Box::new(report)));
    }
    // Verified: now give every file the mode recorded at backup time.
    let inner = report
        .inner
        .as_ref()
        .expect("a passing deep verify read the inner manifest");
    let mut written = vec![];
    for e in &inner.entries {
        let path = partial.path().join(&e.path);
        // Permission bits only: a hostile archive never gets a setuid, setgid or sticky file.
        let mode = e.mode.unwrap_or(0o600) & 0o777;
        if let Some(mtime) = e.mtime.and_then(|t| u64::try_from(t).ok()) {
            let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(when))
                .with_context(|| format!("setting the recorded mtime on '{}'", path.display()))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on '{}'", path.display()))?;
        written.push(to.join(&e.path).display().to_string());
    }
    // `to` is empty (checked by prepare), and rename(2) may replace an empty directory.
    let partial = partial.keep();
    if let Err(e) = fs::rename(&partial, to) {
        let _ = fs::remove_dir_all(&partial);
        return Err(anyhow::Error::from(e)
            .context(format!(
                "moving the extracted files into '{}'",
                to.display()
            ))
            .into());
    }
    Ok(Extracted { report, written })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_thread_writes_every_byte_in_order_and_reports_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut w = FileThread::start(File::create(&path).unwrap());
        let mut expected = vec![];
        for i in 0..(WRITE_QUEUE * 3) {
            let chunk = vec![i as u8; WRITE_CHUNK + i];
            w.write_all(&chunk).unwrap();
            expected.extend_from_slice(&chunk);
        }
        w.flush().unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);

        // A file the thread cannot write (opened read-only): the error reaches the caller,
        // at the latest when it flushes.
        let mut w = FileThread::start(File::open(&path).unwrap());
        let mut failed = false;
        for _ in 0..(WRITE_QUEUE * 2) {
            if w.write_all(&[1u8; 1024]).is_err() {
                failed = true;
                break;
            }
        }
        assert!(failed || w.flush().is_err());
    }

    /// A file of several early-sync intervals: the sync thread runs beside the writer (and is
    /// nudged while it may still be flushing), and every byte arrives in order.
    #[test]
    fn a_large_file_is_flushed_while_written_and_arrives_whole() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let mut w = io::BufWriter::with_capacity(
            WRITE_CHUNK,
            FileThread::start(File::create(&path).unwrap()),
        );
        let mut want = sha2::Sha256::new();
        let total = 3 * EARLY_SYNC_BYTES + 12_345;
        let mut written = 0u64;
        let mut i = 0u8;
        while written < total {
            let n = (total - written).min(1_000_003) as usize;
            let chunk = vec![i; n];
            w.write_all(&chunk).unwrap();
            want.update(&chunk);
            written += n as u64;
            i = i.wrapping_add(1);
        }
        w.flush().unwrap();
        drop(w);
        let got = sha2::Sha256::digest(fs::read(&path).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), total);
        assert_eq!(got, want.finalize());

        // The sync thread alone: nudged repeatedly, then finished, says Ok; a second finish
        // is harmless.
        let f = File::open(&path).unwrap();
        let mut early = EarlySync::default();
        for _ in 0..5 {
            early.nudge(&f).unwrap();
        }
        assert!(early.thread.is_some());
        early.finish().unwrap();
        early.finish().unwrap();
    }
}
