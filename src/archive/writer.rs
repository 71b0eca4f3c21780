//! The writing pipeline: entries → tar (+ per-entry sha256) → zstd → age, each stage on its
//! own thread with bounded channels between them, ending in a channel of ciphertext chunks
//! and the sealed inner manifest. Where the ciphertext goes (a store upload) and how a backup
//! is committed belong to `crate::commit`; this module must never touch a store, and never
//! hold more than a few chunks of any stream in memory.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
use zeroize::Zeroizing;

use super::hashing::TrailerHasher;
use super::manifest::{format_json, Entry, EntryKind, EtcdInfo, KitInfo, Manifest, ToolInfo};
use super::pipe::{self, ChanReader, ChanWriter, Msg};
use super::tarfmt::{EntryHeader, TarWriter};
use crate::crypto::Recipients;

/// A payload entry a source offers: metadata known up front, bytes opened when written.
pub struct SourceEntry {
    /// Path inside the archive (`etcd/…`, `pki/…`, `files/…`).
    pub path: String,
    /// What it holds.
    pub kind: EntryKind,
    /// Exact size; the writer refuses a stream of another length.
    pub size: u64,
    /// Permission bits to record.
    pub mode: u32,
    /// Modification time to record, Unix seconds.
    pub mtime: i64,
    /// Opens the byte stream.
    pub open: Box<dyn FnOnce() -> io::Result<Box<dyn Read + Send>> + Send>,
    /// Extra etcd facts for a snapshot entry (revision, ids, version) the source knows.
    pub etcd: Option<EtcdInfo>,
    /// Facts the source works out while the entry streams (e.g. by reading a snapshot file
    /// on another thread), asked for once the entry is written, when `etcd` is `None`.
    pub etcd_later: Option<Box<dyn FnOnce() -> Option<EtcdInfo> + Send>>,
}

/// Who, what and when of a backup.
pub struct BackupMeta {
    /// Backup id.
    pub id: String,
    /// Cluster.
    pub cluster: String,
    /// Start time.
    pub created: DateTime<Utc>,
    /// Host name.
    pub host: String,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// Description of the sources.
    pub source: String,
    /// Where a node backup's recovery kit came from.
    pub kit: Option<KitInfo>,
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// zstd level (1–19).
    pub zstd_level: i32,
    /// zstd worker threads (0 = single-threaded in the stage thread).
    pub zstd_workers: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            zstd_level: 3,
            zstd_workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        }
    }
}

/// Why writing an archive failed. Nothing was committed in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A source could not be read.
    #[error("reading {path}: {source}")]
    Source {
        /// Entry path.
        path: String,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// The etcd snapshot's own checksum does not match.
    #[error("etcd snapshot {path}: its sha256 trailer does not match its content — the snapshot is corrupt; take a new one")]
    SnapshotTrailer {
        /// Entry path.
        path: String,
    },
    /// A pipeline stage failed.
    #[error("{stage}: {source}")]
    Stage {
        /// Which stage.
        stage: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// age refused the recipients.
    #[error("encryption setup: {0}")]
    Encrypt(#[from] age::EncryptError),
}

type StageResult<T> = Result<T, WriteError>;

fn stage_err(stage: &'static str) -> impl Fn(io::Error) -> WriteError {
    move |source| WriteError::Stage { stage, source }
}

impl WriteError {
    /// Whether this error only reports that the next stage stopped (so it is not the root
    /// cause of a failed pipeline).
    pub fn is_pipe(&self) -> bool {
        matches!(self, WriteError::Stage { source, .. } if pipe::is_downstream_closed(source))
            || matches!(self, WriteError::Source { source, .. } if pipe::is_downstream_closed(source))
    }
}

/// A running archive pipeline: its ciphertext comes out of `output` as [`Msg`] chunks, and
/// [`Encrypting::finish`] joins the stages for the sealed inner manifest.
pub struct Encrypting {
    /// The ciphertext, in order, ending with [`Msg::End`] on success.
    pub output: tokio::sync::mpsc::Receiver<Msg>,
    producer: tokio::task::JoinHandle<StageResult<Manifest>>,
    encrypter: tokio::task::JoinHandle<StageResult<()>>,
}

/// Starts writing one archive: entries are read, hashed, framed as tar, compressed and
/// encrypted on their own threads. The caller drains [`Encrypting::output`].
///
/// # Errors
/// [`WriteError::Encrypt`] when age refuses the recipients.
pub fn start(
    entries: Vec<SourceEntry>,
    meta: BackupMeta,
    recipients: &Recipients,
    opts: WriteOptions,
    progress: ProgressBar,
) -> Result<Encrypting, WriteError> {
    let encryptor = recipients.encryptor()?;
    // Stages: the producer reads and hashes entries and frames them as tar straight into
    // zstd, whose worker threads compress; age encrypts on its own thread; the caller hashes
    // the ciphertext and sends it on. Handing the uncompressed stream to zstd in the thread
    // that reads it saves a copy and a hand-off of every plaintext byte.
    let (tx2, rx2) = pipe::channel();
    let (tx3, rx3) = pipe::channel();
    let producer = tokio::task::spawn_blocking(move || produce(entries, meta, tx2, progress, opts));
    let encrypter = tokio::task::spawn_blocking(move || encrypt(rx2, tx3, encryptor));
    Ok(Encrypting {
        output: rx3,
        producer,
        encrypter,
    })
}

impl Encrypting {
    /// Waits for the stages (drop [`Encrypting::output`] first when stopping early) and
    /// returns the sealed inner manifest, or each stage's error in pipeline order.
    pub async fn finish(self) -> Result<Manifest, Vec<WriteError>> {
        fn joined<T>(r: Result<StageResult<T>, tokio::task::JoinError>) -> StageResult<T> {
            r.unwrap_or_else(|e| Err(stage_err("pipeline")(io::Error::other(e.to_string()))))
        }
        drop(self.output);
        let produced = joined(self.producer.await);
        let encrypted = joined(self.encrypter.await);
        match (produced, encrypted) {
            (Ok(inner), Ok(())) => Ok(inner),
            (p, e) => Err([p.err(), e.err()].into_iter().flatten().collect()),
        }
    }
}

fn produce(
    entries: Vec<SourceEntry>,
    meta: BackupMeta,
    tx: tokio::sync::mpsc::Sender<Msg>,
    progress: ProgressBar,
    opts: WriteOptions,
) -> StageResult<Manifest> {
    let tar_err = stage_err("tar");
    let mut tar =
        TarWriter::new(zstd_encoder(ChanWriter::new(tx), opts).map_err(stage_err("zstd"))?);
    let now = meta.created.timestamp();
    tar.append_bytes(super::FORMAT_ENTRY, 0o644, now, &format_json())
        .map_err(&tar_err)?;
    let mut recorded = vec![];
    let mut etcd = None;
    let mut certs = crate::certs::Collector::new();
    for e in entries {
        if !super::reader::is_safe_payload_path(&e.path) {
            return Err(WriteError::Source {
                path: e.path.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "this name cannot be stored safely (backslash, '..', or empty component); rename the file",
                ),
            });
        }
        let mut hasher = TrailerHasher::new();
        let path = e.path.clone();
        let src_err = |source: io::Error| WriteError::Source {
            path: path.clone(),
            source,
        };
        let mut reader = (e.open)().map_err(src_err)?;
        // Certificate facts come from a bounded copy of the bytes as they stream past.
        let wants_copy = e.kind == EntryKind::Pki && crate::certs::wanted(&e.path);
        let mut tagged = TaggedReader {
            inner: &mut reader,
            failed: false,
            copy: wants_copy.then(|| Zeroizing::new(Vec::new())),
        };
        let header = EntryHeader {
            path: &e.path,
            size: e.size,
            mode: e.mode,
            mtime: e.mtime,
        };
        let res = tar.append(&header, &mut tagged, &mut hasher, &|n| progress.inc(n));
        if let Err(err) = res {
            return Err(
                if tagged.failed || err.kind() == io::ErrorKind::InvalidData {
                    src_err(err)
                } else {
                    tar_err(err)
                },
            );
        }
        let d = hasher.finish();
        if let Some(copy) = tagged.copy.take() {
            certs.add(
                &e.path,
                &copy,
                e.size <= crate::certs::MAX_FILE_BYTES as u64,
            );
        }
        if e.kind == EntryKind::EtcdSnapshot {
            if d.trailer_expected && !d.trailer_matches {
                return Err(WriteError::SnapshotTrailer { path: e.path });
            }
            let mut info = e
                .etcd
                .or_else(|| e.etcd_later.and_then(|later| later()))
                .unwrap_or_default();
            info.entry = e.path.clone();
            info.db_size = e.size;
            info.hash_trailer = d.trailer_expected && d.trailer_matches;
            etcd = Some(info);
        }
        recorded.push(Entry {
            path: e.path,
            kind: e.kind,
            size: e.size,
            sha256: Some(hex::encode(d.sha256)),
            mode: Some(e.mode & 0o7777),
            mtime: Some(e.mtime),
        });
    }
    let inner = Manifest {
        format: super::MANIFEST_FORMAT.into(),
        version: super::VERSION,
        id: meta.id,
        cluster: meta.cluster,
        created: meta.created,
        completed: Utc::now(),
        tool: ToolInfo::current(),
        host: meta.host,
        tags: meta.tags,
        source: meta.source,
        etcd,
        entries: recorded,
        certificates: certs.finish(),
        kit: meta.kit,
        archive: None,
    };
    let json = serde_json::to_vec_pretty(&inner).expect("manifest serializes");
    tar.append_bytes(
        super::MANIFEST_ENTRY,
        0o600,
        inner.completed.timestamp(),
        &json,
    )
    .map_err(&tar_err)?;
    let zstd = tar.finish().map_err(&tar_err)?;
    zstd.finish()
        .and_then(ChanWriter::finish)
        .map_err(stage_err("zstd"))?;
    Ok(inner)
}

/// Remembers whether an error came from the source itself rather than from the pipeline,
/// and keeps a copy of the first [`crate::certs::MAX_FILE_BYTES`] read when asked to.
struct TaggedReader<'a> {
    inner: &'a mut Box<dyn Read + Send>,
    failed: bool,
    copy: Option<Zeroizing<Vec<u8>>>,
}

impl Read for TaggedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.failed = true)?;
        if let Some(copy) = &mut self.copy {
            let room = crate::certs::MAX_FILE_BYTES.saturating_sub(copy.len());
            copy.extend_from_slice(&buf[..n.min(room)]);
        }
        Ok(n)
    }
}

/// zstd job size: 4 MiB keeps the multithreaded compressor's buffers near 30 MiB at the
/// default level without costing speed (measured on the benchmark snapshot).
const ZSTD_JOB_SIZE: u32 = 4 * 1024 * 1024;

fn zstd_encoder(
    out: ChanWriter,
    opts: WriteOptions,
) -> io::Result<zstd::stream::write::Encoder<'static, ChanWriter>> {
    let mut enc = zstd::stream::write::Encoder::new(out, opts.zstd_level)?;
    enc.include_checksum(true)?;
    if opts.zstd_workers > 0 {
        enc.multithread(opts.zstd_workers)?;
        enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    Ok(enc)
}

fn encrypt(
    rx: tokio::sync::mpsc::Receiver<Msg>,
    tx: tokio::sync::mpsc::Sender<Msg>,
    encryptor: age::Encryptor,
) -> StageResult<()> {
    let err = stage_err("age");
    let mut input = ChanReader::new(rx);
    let mut out = encryptor.wrap_output(ChanWriter::new(tx)).map_err(&err)?;
    while let Some(chunk) = input.next_chunk().map_err(&err)? {
        out.write_all(&chunk).map_err(&err)?;
    }
    out.finish().map_err(&err)?.finish().map_err(&err)
}
