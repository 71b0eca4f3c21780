//! Looking inside a stored backup without restoring it (design §11): the etcd snapshot is
//! read straight out of the verified archive stream, twice — first for its page tree, then
//! for the leaves of bucket `key` — and folded into the live key set at the snapshot's
//! revision. Each pass is a full deep verify with the reader as its sink, so nothing is
//! believed unless every layer of the archive checked out, and no plaintext byte is ever
//! written to disk. Memory holds the tree and one record per key, never the file; values
//! only for the keys a caller selects. It never prints; the commands render.

pub mod bbolt;
pub mod k8s;
pub mod keys;
pub mod mvcc;
pub mod objects;
pub mod page;
pub mod schema;
pub mod summary;

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use cpvault_backends::Store;

use crate::archive::manifest::Manifest;
use crate::archive::reader::Sink;
use crate::crypto::Identities;
use crate::trust::Authorship;
use crate::verify::Report;
use bbolt::{BoltError, LeafScan, TreeScan};
use mvcc::{Index, Snapshot, Wants, BUCKETS};

/// Why a backup could not be looked into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The archive failed verification (or its author is not trusted): nothing read is used.
    #[error("the backup failed verification")]
    Verify(Box<Report>),
    /// The archive verified, but its snapshot is not a readable etcd database.
    #[error("the etcd snapshot cannot be read: {0}")]
    Snapshot(#[from] BoltError),
    /// The backup holds no etcd snapshot.
    #[error("{0} holds no etcd snapshot (a PKI-only backup); there are no keys to look at")]
    NoSnapshot(String),
}

/// One pass's reader of the snapshot bytes.
trait Scanner: Send {
    fn push(&mut self, data: &[u8]) -> Result<(), BoltError>;
}

impl Scanner for TreeScan {
    fn push(&mut self, data: &[u8]) -> Result<(), BoltError> {
        TreeScan::push(self, data)
    }
}

impl Scanner for LeafScan<Index> {
    fn push(&mut self, data: &[u8]) -> Result<(), BoltError> {
        LeafScan::push(self, data)
    }
}

struct Shared<S> {
    scan: Option<S>,
    error: Option<BoltError>,
    opened: bool,
}

type SharedScan<S> = Arc<Mutex<Shared<S>>>;

fn lock<S>(s: &SharedScan<S>) -> std::sync::MutexGuard<'_, Shared<S>> {
    s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hands the snapshot entry's bytes to a scanner; every other entry is only hashed.
struct ScanSink<S> {
    entry: String,
    shared: SharedScan<S>,
}

impl<S: Scanner + 'static> Sink for ScanSink<S> {
    fn open(
        &mut self,
        path: &str,
        _size: u64,
        _mode: u32,
    ) -> io::Result<Option<Box<dyn Write + Send>>> {
        if path != self.entry {
            return Ok(None);
        }
        lock(&self.shared).opened = true;
        Ok(Some(Box::new(ScanWriter(self.shared.clone()))))
    }
}

struct ScanWriter<S>(SharedScan<S>);

impl<S: Scanner> Write for ScanWriter<S> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        // A snapshot the reader refuses is not an archive failure: the read goes on so that
        // verify still judges every layer, and the reader's error is reported after it.
        let mut g = lock(&self.0);
        if g.error.is_none() {
            if let Some(Err(e)) = g.scan.as_mut().map(|s| s.push(b)) {
                g.error = Some(e);
            }
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The backup both passes read.
struct Source<'a> {
    store: &'a Store,
    m: &'a Manifest,
    who: &'a Authorship,
    identities: Arc<Identities>,
    entry: String,
    quiet: bool,
}

async fn pass<S: Scanner + 'static>(
    src: &Source<'_>,
    scan: S,
    label: &str,
) -> Result<S, InspectError> {
    let Source {
        store,
        m,
        who,
        identities,
        entry,
        quiet,
    } = src;
    let shared = Arc::new(Mutex::new(Shared {
        scan: Some(scan),
        error: None,
        opened: false,
    }));
    let sink = ScanSink {
        entry: entry.to_string(),
        shared: shared.clone(),
    };
    let bar = crate::progress::bytes(*quiet, 0, &format!("{label} {}", m.reference()));
    let report = crate::verify::verify(
        store,
        m,
        who,
        Some(identities.clone()),
        Box::new(sink),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    if !report.ok {
        return Err(InspectError::Verify(Box::new(report)));
    }
    let mut g = lock(&shared);
    if let Some(e) = g.error.take() {
        return Err(e.into());
    }
    if !g.opened {
        return Err(InspectError::NoSnapshot(m.reference()));
    }
    g.scan
        .take()
        .ok_or_else(|| InspectError::Snapshot(BoltError::Corrupt("the reader was lost".into())))
}

/// Reads the etcd snapshot of the backup `m` (whose authorship was judged as `who`) in two
/// verified passes over its archive.
///
/// # Errors
/// [`InspectError::Verify`] when the archive fails any check or is untrusted,
/// [`InspectError::Snapshot`] when its snapshot is not a readable etcd database,
/// [`InspectError::NoSnapshot`] for a backup without one.
pub async fn read_backup(
    store: &Store,
    m: &Manifest,
    who: &Authorship,
    identities: Arc<Identities>,
    wants: Wants,
    quiet: bool,
) -> Result<Snapshot, InspectError> {
    if let Some(refused) = crate::verify::refuse_untrusted(m, who, true) {
        return Err(InspectError::Verify(Box::new(refused)));
    }
    let entry = m
        .etcd
        .as_ref()
        .map(|e| e.entry.clone())
        .ok_or_else(|| InspectError::NoSnapshot(m.reference()))?;
    let src = Source {
        store,
        m,
        who,
        identities,
        entry,
        quiet,
    };
    let tree = pass(&src, TreeScan::new(), "reading the page tree of").await?;
    let scan = leaf_scan(tree, wants)?;
    let scan = pass(&src, scan, "reading the keys of").await?;
    Ok(scan.finish()?.finish())
}

fn leaf_scan(tree: TreeScan, wants: Wants) -> Result<LeafScan<Index>, BoltError> {
    let plan = tree.finish(&BUCKETS)?;
    if !plan.found[0] {
        return Err(BoltError::Corrupt(
            "the database has no `key` bucket: not an etcd v3 snapshot".into(),
        ));
    }
    LeafScan::new(plan, Index::new(wants))
}

/// Reads a snapshot from a source that can be opened twice (a file, or bytes in tests and
/// fuzzing), with the same two passes as [`read_backup`].
///
/// # Errors
/// I/O errors of `open` or the reads, as [`BoltError::Corrupt`]; a snapshot that is not a
/// readable etcd database.
pub fn read_snapshot<R: Read>(
    mut open: impl FnMut() -> io::Result<R>,
    wants: Wants,
) -> Result<Snapshot, BoltError> {
    fn feed<R: Read>(
        mut r: R,
        f: &mut dyn FnMut(&[u8]) -> Result<(), BoltError>,
    ) -> Result<(), BoltError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => f(&buf[..n])?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BoltError::Corrupt(format!("reading the snapshot: {e}"))),
            }
        }
    }
    let io_err = |e: io::Error| BoltError::Corrupt(format!("opening the snapshot: {e}"));
    let mut tree = TreeScan::new();
    feed(open().map_err(io_err)?, &mut |b| tree.push(b))?;
    let mut scan = leaf_scan(tree, wants)?;
    feed(open().map_err(io_err)?, &mut |b| scan.push(b))?;
    Ok(scan.finish()?.finish())
}
