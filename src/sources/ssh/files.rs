//! Files read from the node over SSH: the PKI and the recovery kit, as `tar -cf -` under
//! sudo into zeroized memory, modes kept, nothing on the node changed.

use std::io::Read;

use openssh::Stdio;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use super::super::SourceError;
use super::Node;
use crate::archive::manifest::EntryKind;
use crate::archive::writer::SourceEntry;
use crate::etcdctl::quote;

impl Node {
    /// Every regular file below `dir` on the node as `pki/<relative path>` entries with their
    /// modes, read with `tar -cf - .` into memory. Nothing on the node is changed.
    ///
    /// # Errors
    /// [`SourceError::Ssh`] when tar fails there (missing dir, no permission) or the PKI
    /// is implausibly large.
    pub async fn pki(&self, dir: &str) -> Result<Vec<SourceEntry>, SourceError> {
        let fix_dir = "point --ssh-pki-dir at the PKI directory itself (e.g. /etc/kubernetes/pki)";
        let files = self
            .tar_files(&format!("exec tar -C {} -cf - .", quote(dir)))
            .await
            .map_err(|e| match e {
                TarFailure::Ssh(e) => e,
                TarFailure::TooLarge => {
                    self.fail(format!("PKI dir {dir} holds more than 64 MiB"), fix_dir)
                }
                TarFailure::Failed(err_text) => self.fail(
                    format!("cannot read PKI dir {dir}: {err_text}"),
                    "check --ssh-pki-dir and that the user (or sudo) may read it",
                ),
                TarFailure::Unreadable(e) => self.fail(
                    format!("the tar stream of {dir} is unreadable: {e}"),
                    "check that GNU tar or busybox tar is on the node",
                ),
            })?;
        if files.is_empty() {
            return Err(self.fail(
                format!("PKI dir {dir} holds no regular files"),
                "check --ssh-pki-dir",
            ));
        }
        Ok(files
            .into_iter()
            .map(|f| f.into_entry("pki/", EntryKind::Pki))
            .collect())
    }

    /// Runs `script` (a `tar -cf -` on the node, under sudo when needed) and reads the
    /// regular files of its output into memory (at most 64 MiB). Nothing on the node is
    /// changed.
    ///
    /// # Errors
    /// [`TarFailure`]: the connection, a non-zero exit with tar's stderr, too much data, or
    /// a stream that is not tar.
    pub async fn tar_files(&self, script: &str) -> Result<Vec<NodeFile>, TarFailure> {
        const LIMIT: u64 = 64 * 1024 * 1024;
        let mut child = self
            .command(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .await
            .map_err(|e| {
                TarFailure::Ssh(self.fail(format!("running tar: {e}"), "check the connection"))
            })?;
        let mut stdout = child.stdout().take().expect("piped");
        let mut stderr = child.stderr().take().expect("piped");
        // stderr drains on its own task: waiting for it while a too-large stdout is no
        // longer read would block tar on the node forever.
        let err_task = tokio::spawn(async move {
            let mut err_text = Vec::new();
            let _ = stderr.read_to_end(&mut err_text).await;
            err_text
        });
        let mut limited = (&mut stdout).take(LIMIT + 1);
        let (buf, read) = read_secret(&mut limited).await;
        drop(limited);
        drop(stdout);
        if buf.len() as u64 > LIMIT {
            // Dropping the child ends the remote tar (its stdout is gone).
            drop(child);
            err_task.abort();
            return Err(TarFailure::TooLarge);
        }
        let status = child.wait().await;
        let err_text = err_task.await.unwrap_or_default();
        read.map_err(|e| {
            TarFailure::Ssh(self.fail(format!("reading tar output: {e}"), "check the connection"))
        })?;
        let ok = matches!(&status, Ok(s) if s.success());
        if !ok {
            return Err(TarFailure::Failed(
                String::from_utf8_lossy(&err_text)
                    .trim()
                    .replace('\n', "; "),
            ));
        }
        tar_files(&buf).map_err(|e| TarFailure::Unreadable(e.to_string()))
    }
}

/// Reads `r` to its end into memory that is wiped when dropped, and so is every smaller
/// buffer it outgrew on the way (`read_to_end` would free those unwiped when it grows the
/// vector). Returns what was read, and how the reading ended.
async fn read_secret<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> (Zeroizing<Vec<u8>>, std::io::Result<()>) {
    let mut buf = Zeroizing::new(Vec::with_capacity(64 * 1024));
    let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
    loop {
        let n = match r.read(&mut chunk[..]).await {
            Ok(0) => return (buf, Ok(())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return (buf, Err(e)),
        };
        if buf.len() + n > buf.capacity() {
            let mut bigger =
                Zeroizing::new(Vec::with_capacity((buf.capacity() * 2).max(buf.len() + n)));
            bigger.extend_from_slice(&buf);
            // The smaller buffer is wiped as it drops here.
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Why [`Node::tar_files`] failed.
#[derive(Debug)]
pub enum TarFailure {
    /// The connection.
    Ssh(SourceError),
    /// More than 64 MiB.
    TooLarge,
    /// tar exited non-zero; its stderr on one line.
    Failed(String),
    /// The output is not a tar stream.
    Unreadable(String),
}

/// One regular file read from the node, its bytes held in memory that is wiped when dropped.
pub struct NodeFile {
    /// Path relative to the dir tar ran in.
    pub rel: String,
    /// Permission bits.
    pub mode: u32,
    /// Modification time, Unix seconds.
    pub mtime: i64,
    /// Content.
    pub data: Zeroizing<Vec<u8>>,
}

impl NodeFile {
    /// The archive entry `<prefix><rel>` of kind `kind` that streams this file.
    pub fn into_entry(self, prefix: &str, kind: EntryKind) -> SourceEntry {
        let data = self.data;
        SourceEntry {
            path: format!("{prefix}{}", self.rel),
            kind,
            size: data.len() as u64,
            mode: self.mode,
            mtime: self.mtime,
            open: Box::new(move || {
                Ok(Box::new(ZeroizingCursor { data, pos: 0 }) as Box<dyn Read + Send>)
            }),
            etcd: None,
            etcd_later: None,
        }
    }
}

/// Parses an in-memory tar into its regular files, sorted by path; directories are implied
/// by paths, links and special files are skipped with a warning.
fn tar_files(tar_bytes: &[u8]) -> std::io::Result<Vec<NodeFile>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = vec![];
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let rel = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        if rel.is_empty() || rel == "." {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            tracing::warn!("skipping {rel} on the node: not a regular file");
            continue;
        }
        let mode = entry.header().mode()? & 0o7777;
        let mtime = entry.header().mtime()? as i64;
        // Exactly the entry's size (tar's reader stops there), so `read_to_end` never grows
        // the vector and leaves no unwiped copy behind.
        // A header cannot make it reserve more than the whole stream holds.
        let size = entry.size().min(tar_bytes.len() as u64) as usize;
        let mut data = Zeroizing::new(Vec::with_capacity(size));
        entry.read_to_end(&mut data)?;
        out.push(NodeFile {
            rel,
            mode,
            mtime,
            data,
        });
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// A reader over secret bytes that wipes them when dropped.
struct ZeroizingCursor {
    data: Zeroizing<Vec<u8>>,
    pos: usize,
}

impl Read for ZeroizingCursor {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.data[self.pos..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_secret_read_keeps_every_byte_across_the_buffers_it_outgrows() {
        let want: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = &want[..];
        let (got, ended) = read_secret(&mut r).await;
        ended.unwrap();
        assert_eq!(&got[..], &want[..]);
        let mut empty: &[u8] = &[];
        let (got, ended) = read_secret(&mut empty).await;
        ended.unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn a_tar_header_claiming_more_than_the_stream_reserves_no_more_than_the_stream() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, "ca.key", &b"key"[..]).unwrap();
        let mut bytes = b.into_inner().unwrap();
        // The size field claims 2^60 bytes (GNU base-256); the checksum is made to match.
        bytes[124] = 0x80;
        bytes[125..128].fill(0);
        bytes[128..136].copy_from_slice(&(1u64 << 60).to_be_bytes());
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&bytes[..512]);
        header.set_cksum();
        bytes[..512].copy_from_slice(header.as_bytes());
        // Whatever tar makes of it, nothing of that size is reserved (the allocation would abort
        // the test).
        let _ = tar_files(&bytes);
    }
}
