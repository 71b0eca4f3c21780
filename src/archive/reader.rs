//! The reading pipeline: ciphertext (from wherever the caller opened it) → sha256 → age → zstd → tar → per-entry sha256 →
//! a caller's sink, each stage on its own thread with bounded channels between them. It
//! reports what it saw layer by layer and names the layer that failed; judging the result
//! against the manifests is the verifier's job, and it must never hand a sink bytes from an
//! entry it cannot place safely (absolute paths, `..`, unknown prefixes).

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::hashing::TrailerHasher;
use super::manifest::{check_format_json, parse_manifest, Manifest, MAX_MANIFEST_BYTES};
use super::pipe::{self, ChanReader, ChanWriter, Msg};
use super::tarfmt::TarReader;
use crate::crypto::Identities;
use crate::text::escape_for_line;

const COPY_BUF: usize = 256 * 1024;

/// zstd's own words, with the window refusal said in terms of this archive format.
fn zstd_failure(e: &io::Error) -> String {
    let text = e.to_string();
    if text.contains("too much memory") || text.contains("window") {
        format!(
            "zstd: the frame asks for a decompression window larger than {} MiB, which no cpvault backup writes (zstd levels 1–19); refused as foreign or forged ({text})",
            1u32 << (ZSTD_WINDOW_LOG_MAX - 20)
        )
    } else {
        format!("zstd: {text}")
    }
}
/// The largest zstd window a reader accepts (2^23 = 8 MiB), and so the most memory a hostile
/// frame can make the decoder hold. Levels 1–19, the only ones backup writes (the command
/// line and the config file are both range-checked), stay at or under 2^23; zstd's own
/// default limit (2^27) let a forged frame hold about 150 MB.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Receives the payload entries of an archive as they stream past.
pub trait Sink: Send {
    /// Called at the start of each payload entry; returns where its bytes go, or `None` to
    /// only hash them.
    ///
    /// # Errors
    /// Any I/O error; it stops the read and is reported as a `write` failure.
    fn open(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
    ) -> io::Result<Option<Box<dyn Write + Send>>>;
}

/// A sink that keeps nothing: verify.
pub struct NullSink;

impl Sink for NullSink {
    fn open(&mut self, _: &str, _: u64, _: u32) -> io::Result<Option<Box<dyn Write + Send>>> {
        Ok(None)
    }
}

/// The layers of an archive, outermost first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layer {
    /// Reading the object from the store.
    Store,
    /// age: header, identity, per-chunk authentication.
    Decrypt,
    /// zstd: frame structure and content checksum.
    Decompress,
    /// `format.json`.
    Format,
    /// tar structure, entry paths, the inner manifest.
    Tar,
    /// The caller's sink.
    Write,
}

/// Where and why the stream stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The layer.
    pub layer: Layer,
    /// What went wrong.
    pub message: String,
    #[serde(skip)]
    neighbor: bool,
}

impl Failure {
    fn new(layer: Layer, message: impl Into<String>) -> Self {
        Failure {
            layer,
            message: message.into(),
            neighbor: false,
        }
    }

    fn neighbor(layer: Layer) -> Self {
        Failure {
            layer,
            message: "stopped because another stage failed".into(),
            neighbor: true,
        }
    }
}

/// One payload entry as read.
#[derive(Debug, Clone)]
pub struct SeenEntry {
    /// Path in the tar.
    pub path: String,
    /// Bytes read.
    pub size: u64,
    /// sha256, hex.
    pub sha256: String,
    /// Mode from the tar header.
    pub mode: u32,
    /// Whether the size has etcd's trailer shape.
    pub trailer_expected: bool,
    /// Whether the trailer matched.
    pub trailer_matches: bool,
}

/// Everything the read saw.
#[derive(Debug, Clone)]
pub struct ReadOutcome {
    /// Ciphertext bytes read.
    pub ciphertext_size: u64,
    /// sha256 of those bytes, hex.
    pub ciphertext_sha256: String,
    /// The root cause when the stream stopped early.
    pub failure: Option<Failure>,
    /// Payload entries in order.
    pub entries: Vec<SeenEntry>,
    /// The inner manifest, when reached and parsed.
    pub inner: Option<Manifest>,
    /// Whether `format.json` was present and acceptable.
    pub format_ok: bool,
}

/// The ciphertext to read: its announced size and a stream of chunks, or why it could not be
/// opened. Errors in the stream are reported as [`Layer::Store`] failures.
pub type Ciphertext<E> = Result<(u64, BoxStream<'static, Result<Bytes, E>>), String>;

/// Reads an archive's ciphertext: only hashes it without identities, and runs every layer
/// into `sink` with them.
pub async fn read_archive<E: std::fmt::Display>(
    ciphertext: Ciphertext<E>,
    identities: Option<Arc<Identities>>,
    sink: Box<dyn Sink>,
    progress: indicatif::ProgressBar,
) -> ReadOutcome {
    let mut out = ReadOutcome {
        ciphertext_size: 0,
        ciphertext_sha256: String::new(),
        failure: None,
        entries: vec![],
        inner: None,
        format_ok: false,
    };
    let (size, mut stream) = match ciphertext {
        Ok(s) => s,
        Err(e) => {
            out.failure = Some(Failure::new(Layer::Store, e));
            return out;
        }
    };
    progress.set_length(size);

    let mut stages = vec![];
    let mut tx = None;
    let mut tail = None;
    if let Some(ids) = identities {
        let (tx1, rx1) = pipe::channel();
        let (tx2, rx2) = pipe::channel();
        tx = Some(tx1);
        stages.push(tokio::task::spawn_blocking(move || decrypt(rx1, tx2, &ids)));
        tail = Some(tokio::task::spawn_blocking(move || {
            read_decrypted(ChanReader::new(rx2), sink)
        }));
    }

    let mut hasher = Sha256::new();
    let mut download: Result<(), Failure> = Ok(());
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(b) => {
                hasher.update(&b);
                out.ciphertext_size += b.len() as u64;
                progress.inc(b.len() as u64);
                // Keep hashing when a later stage has stopped: the ciphertext check still
                // gets its answer.
                if let Some(t) = &tx {
                    if t.send(Msg::Data(b)).await.is_err() {
                        tx = None;
                    }
                }
            }
            Err(e) => {
                download = Err(Failure::new(Layer::Store, e.to_string()));
                break;
            }
        }
    }
    if download.is_ok() {
        if let Some(t) = tx.take() {
            let _ = t.send(Msg::End).await;
        }
    }
    drop(tx);
    out.ciphertext_sha256 = hex::encode(hasher.finalize());

    let mut failures = vec![download.err()];
    for s in stages {
        let r = s
            .await
            .unwrap_or_else(|e| Err(Failure::new(Layer::Decrypt, e.to_string())));
        failures.push(r.err());
    }
    if let Some(t) = tail {
        match t.await {
            Ok(u) => {
                out.entries = u.entries;
                out.inner = u.inner;
                out.format_ok = u.format_ok;
                failures.push(u.failure);
            }
            Err(e) => failures.push(Some(Failure::new(Layer::Tar, e.to_string()))),
        }
    }
    let failures: Vec<Failure> = failures.into_iter().flatten().collect();
    out.failure = failures
        .iter()
        .find(|f| !f.neighbor)
        .or(failures.first())
        .cloned();
    out
}

fn decrypt(
    rx: tokio::sync::mpsc::Receiver<Msg>,
    tx: tokio::sync::mpsc::Sender<Msg>,
    ids: &Identities,
) -> Result<(), Failure> {
    let upstream = Arc::new(AtomicBool::new(false));
    let input = Flagged::new(ChanReader::new(rx), upstream.clone());
    let header_err = |e: age::DecryptError| {
        if upstream.load(Ordering::Relaxed) {
            return Failure::neighbor(Layer::Decrypt);
        }
        Failure::new(
            Layer::Decrypt,
            match e {
                age::DecryptError::NoMatchingKeys => {
                    "none of the given identities can open this archive (wrong -i key or passphrase)".to_string()
                }
                e => format!("age header: {e}"),
            },
        )
    };
    let mut input = io::BufReader::with_capacity(COPY_BUF, input);
    let header = read_age_header(&mut input).map_err(|e| header_err(e.into()))?;
    let decryptor =
        age::Decryptor::new_buffered(io::Cursor::new(header).chain(input)).map_err(header_err)?;
    let mut reader = decryptor.decrypt(ids.iter()).map_err(header_err)?;
    let mut out = ChanWriter::new(tx);
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                if upstream.load(Ordering::Relaxed) {
                    return Err(Failure::neighbor(Layer::Decrypt));
                }
                return Err(Failure::new(
                    Layer::Decrypt,
                    format!("age payload: {e} (the ciphertext was modified or truncated)"),
                ));
            }
        };
        out.write_all(&buf[..n])
            .map_err(|_| Failure::neighbor(Layer::Decrypt))?;
    }
    out.finish().map_err(|_| Failure::neighbor(Layer::Decrypt))
}

/// Largest age header a reader accepts: a recipient stanza is at most a few hundred bytes
/// (ssh-rsa 4096), so this leaves room for a hundred recipients.
const MAX_AGE_HEADER: usize = 128 * 1024;

/// The age header's bytes, up to and including its `---` MAC line (or the end of input, for
/// age to report): the age crate buffers a header whole and re-parses it on every line, so a
/// hostile one is refused here once it passes [`MAX_AGE_HEADER`].
fn read_age_header(input: &mut impl io::BufRead) -> io::Result<Vec<u8>> {
    let mut header = Vec::new();
    loop {
        let start = header.len();
        let room = (MAX_AGE_HEADER + 1 - start) as u64;
        if io::BufRead::read_until(&mut input.take(room), b'\n', &mut header)? == 0 {
            return Ok(header);
        }
        if header[start..].starts_with(b"--- ") {
            return Ok(header);
        }
        if header.len() > MAX_AGE_HEADER {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("longer than {MAX_AGE_HEADER} bytes; not an archive cpvault wrote"),
            ));
        }
    }
}

/// Wraps a reader and raises a flag when it fails.
struct Flagged<R> {
    inner: R,
    flag: Arc<AtomicBool>,
}

impl<R> Flagged<R> {
    fn new(inner: R, flag: Arc<AtomicBool>) -> Self {
        Flagged { inner, flag }
    }
}

impl<R: Read> Read for Flagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|_| self.flag.store(true, Ordering::Relaxed))
    }
}

/// What the zstd → tar → sha256 part of a read saw.
#[derive(Debug)]
pub struct Untarred {
    /// Payload entries in order.
    pub entries: Vec<SeenEntry>,
    /// The inner manifest, when reached and parsed.
    pub inner: Option<Manifest>,
    /// Whether `format.json` was present and acceptable.
    pub format_ok: bool,
    /// Where and why the read stopped early.
    pub failure: Option<Failure>,
}

/// Most payload entries an archive may hold: a manifest of [`MAX_MANIFEST_BYTES`] cannot
/// list more (each entry takes over 100 bytes of JSON), and it bounds what a read keeps.
pub const MAX_ENTRIES: usize = 10_000;

/// How much of a name from the archive an error message quotes.
const NAME_IN_ERROR: usize = 200;

fn quoted(name: &str) -> String {
    escape_for_line(name, NAME_IN_ERROR)
}

/// Runs the part of a read after decryption over `input` (a zstd stream of a tar):
/// checks `format.json`, hashes every payload entry into `sink`, parses the inner manifest,
/// and reads to the end so zstd checks its frame checksum. Memory stays bounded whatever the
/// bytes: tar extension headers are capped by
/// [`MAX_EXTENSION_BYTES`](super::tarfmt::MAX_EXTENSION_BYTES), `format.json` and
/// `manifest.json` by [`MAX_MANIFEST_BYTES`], and payload entries by [`MAX_ENTRIES`].
pub fn read_decrypted(input: impl Read, mut sink: Box<dyn Sink>) -> Untarred {
    let mut out = Untarred {
        entries: vec![],
        inner: None,
        format_ok: false,
        failure: None,
    };
    let upstream = Arc::new(AtomicBool::new(false));
    let zstd_failed = Arc::new(AtomicBool::new(false));
    let sink_failed = Arc::new(AtomicBool::new(false));
    let classify = |e: &io::Error, layer: Layer| {
        if upstream.load(Ordering::Relaxed) {
            Failure::neighbor(Layer::Decompress)
        } else if zstd_failed.load(Ordering::Relaxed) {
            Failure::new(Layer::Decompress, zstd_failure(e))
        } else if sink_failed.load(Ordering::Relaxed) {
            Failure::new(Layer::Write, e.to_string())
        } else {
            Failure::new(layer, format!("tar: {e}"))
        }
    };
    let input = Flagged::new(input, upstream.clone());
    let decoder = zstd::stream::read::Decoder::new(input).and_then(|mut d| {
        d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
        Ok(d)
    });
    let decoder = match decoder {
        Ok(d) => d,
        Err(e) => {
            out.failure = Some(Failure::new(Layer::Decompress, zstd_failure(&e)));
            return out;
        }
    };
    let mut archive = TarReader::new(Flagged::new(decoder, zstd_failed.clone()));
    let result = (|| -> Result<(), Failure> {
        let mut first = true;
        while let Some(head) = archive.next_entry().map_err(|e| classify(&e, Layer::Tar))? {
            let path = head.path;
            if head.entry_type != tar::EntryType::Regular {
                return Err(Failure::new(
                    Layer::Tar,
                    format!("entry '{}' is not a regular file", quoted(&path)),
                ));
            }
            if first {
                first = false;
                if path != super::FORMAT_ENTRY {
                    return Err(Failure::new(
                        Layer::Format,
                        format!(
                            "first entry is '{}', not format.json: not a cpvault archive",
                            quoted(&path)
                        ),
                    ));
                }
                let bytes = read_small(&mut archive, head.size, super::FORMAT_ENTRY)
                    .map_err(|e| classify(&e, Layer::Format))?;
                check_format_json(&bytes).map_err(|m| Failure::new(Layer::Format, m))?;
                out.format_ok = true;
                continue;
            }
            if path == super::MANIFEST_ENTRY {
                let bytes = read_small(&mut archive, head.size, super::MANIFEST_ENTRY)
                    .map_err(|e| classify(&e, Layer::Tar))?;
                let inner = parse_manifest(&bytes)
                    .map_err(|m| Failure::new(Layer::Tar, format!("inner manifest.json: {m}")))?;
                out.inner = Some(inner);
                if let Some(next) = archive.next_entry().map_err(|e| classify(&e, Layer::Tar))? {
                    return Err(Failure::new(
                        Layer::Tar,
                        format!(
                            "entry '{}' follows manifest.json, which must be last",
                            quoted(&next.path)
                        ),
                    ));
                }
                break;
            }
            if !is_safe_payload_path(&path) {
                return Err(Failure::new(
                    Layer::Tar,
                    format!("entry path '{}' is not allowed (must be etcd/, pki/ or files/ with no '..')", quoted(&path)),
                ));
            }
            if out.entries.len() >= MAX_ENTRIES {
                return Err(Failure::new(
                    Layer::Tar,
                    format!("more than {MAX_ENTRIES} entries; not a cpvault backup"),
                ));
            }
            let mode = head.mode;
            let mut dest = sink
                .open(&path, head.size, mode)
                .map_err(|e| Failure::new(Layer::Write, format!("{}: {e}", quoted(&path))))?;
            let mut hasher = TrailerHasher::new();
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = match archive.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(classify(&e, Layer::Tar)),
                };
                hasher.update(&buf[..n]);
                if let Some(d) = dest.as_mut() {
                    d.write_all(&buf[..n]).map_err(|e| {
                        sink_failed.store(true, Ordering::Relaxed);
                        Failure::new(Layer::Write, format!("{}: {e}", quoted(&path)))
                    })?;
                }
            }
            if let Some(mut d) = dest {
                d.flush()
                    .map_err(|e| Failure::new(Layer::Write, format!("{}: {e}", quoted(&path))))?;
            }
            let d = hasher.finish();
            out.entries.push(SeenEntry {
                path,
                size: d.size,
                sha256: hex::encode(d.sha256),
                mode,
                trailer_expected: d.trailer_expected,
                trailer_matches: d.trailer_matches,
            });
        }
        if first {
            return Err(Failure::new(Layer::Format, "the archive holds no entries"));
        }
        if out.inner.is_none() {
            return Err(Failure::new(
                Layer::Tar,
                "the archive ends without manifest.json (truncated before it was sealed)",
            ));
        }
        Ok(())
    })();
    // Read to the very end so zstd checks its frame checksum and the stream's end marker.
    let result = result.and_then(|()| {
        io::copy(&mut archive.into_inner(), &mut io::sink())
            .map(|_| ())
            .map_err(|e| classify(&e, Layer::Decompress))
    });
    out.failure = result.err();
    out
}

/// The whole of a small entry (`format.json`, `manifest.json`), refused by its declared size
/// before any of it is read when over [`MAX_MANIFEST_BYTES`].
fn read_small(entry: &mut impl Read, size: u64, name: &str) -> io::Result<Vec<u8>> {
    if size > MAX_MANIFEST_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} is {size} bytes, over the {MAX_MANIFEST_BYTES}-byte limit; not read"),
        ));
    }
    let mut v = Vec::with_capacity(size as usize);
    entry.take(size).read_to_end(&mut v)?;
    Ok(v)
}

/// Whether `path` may be written below an extraction directory.
pub fn is_safe_payload_path(path: &str) -> bool {
    let ok_prefix = ["etcd/", "pki/", "files/"]
        .iter()
        .any(|p| path.starts_with(p));
    ok_prefix
        && !path.chars().any(char::is_control)
        && !path.contains('\\')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(is_safe_payload_path("pki/etcd/ca.key"));
        assert!(is_safe_payload_path("etcd/snapshot.db"));
        assert!(!is_safe_payload_path("pki/../../etc/passwd"));
        assert!(!is_safe_payload_path("/etc/passwd"));
        assert!(!is_safe_payload_path("other/x"));
        assert!(!is_safe_payload_path("pki//x"));
        assert!(!is_safe_payload_path("pki/"));
        // A name that would rewrite the terminal in a printed plan or error.
        assert!(!is_safe_payload_path(
            "files/kit/manifests/a\u{1b}[2Kb.yaml"
        ));
        assert!(!is_safe_payload_path("files/x\ny"));
    }
}
