//! The commit protocol (design §3), the one path by which a backup lands in a store, used by
//! `backup` and `copy` alike: the archive is uploaded while its ciphertext is hashed; then,
//! with a signing key, the signature `<cluster>/<id>.manifest.sig` over the outer manifest's
//! exact bytes; last, the outer manifest, created only if absent: the commit point. It must
//! never create a manifest for an archive that did not upload completely, and never replace
//! an object of a committed backup.

use std::future::Future;

use bytes::Bytes;
use cpvault_backends::{Store, StoreError};
use futures::{Stream, StreamExt};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};

use crate::archive::manifest::{ArchiveInfo, Manifest};
use crate::archive::pipe::{self, Msg};
use crate::archive::writer::{self, BackupMeta, SourceEntry, WriteError, WriteOptions};
use crate::archive::{archive_key, manifest_key};
use crate::crypto::Recipients;
use crate::trust::{signature_key, SigningKey};

/// Why a backup or copy was not committed. Nothing was committed in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Writing the archive failed.
    #[error(transparent)]
    Archive(#[from] WriteError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The caller cancelled (Ctrl-C).
    #[error("interrupted; the partial upload was removed and nothing was committed")]
    Interrupted,
    /// The signature could not be made.
    #[error("signing the manifest of {backup}: {reason}; nothing was committed")]
    Sign {
        /// `<cluster>/<id>`.
        backup: String,
        /// Cause.
        reason: String,
    },
}

impl CommitError {
    fn is_pipe(&self) -> bool {
        matches!(self, CommitError::Archive(w) if w.is_pipe())
    }
}

/// The uploaded archive: what the outer manifest records of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Ciphertext bytes.
    pub size: u64,
    /// Ciphertext sha256, hex.
    pub sha256: String,
}

/// Writes one backup and commits it, signed when `signing` is given. Returns the outer
/// manifest. When `cancel` completes first, the upload is aborted and
/// [`CommitError::Interrupted`] returned.
///
/// # Errors
/// [`CommitError`]; on any error the upload is aborted and no manifest is written.
#[allow(clippy::too_many_arguments)]
pub async fn write_backup(
    store: &Store,
    entries: Vec<SourceEntry>,
    meta: BackupMeta,
    recipients: &Recipients,
    opts: WriteOptions,
    progress: ProgressBar,
    signing: Option<&SigningKey>,
    cancel: impl Future<Output = ()>,
) -> Result<Manifest, CommitError> {
    let key = archive_key(&meta.cluster, &meta.id);
    let mut pipeline = writer::start(entries, meta, recipients, opts, progress)?;
    let chunks = futures::stream::poll_fn(|cx| pipeline.output.poll_recv(cx)).map(|m| match m {
        Msg::Data(b) => Ok::<_, CommitError>(Some(b)),
        Msg::End => Ok(None),
    });
    let uploaded = upload(store, &key, chunks, None, cancel).await;
    let stages = pipeline.finish().await;
    // The root cause is the first failing stage that did not merely see the next one stop.
    let (inner, uploaded) = match (stages, uploaded) {
        (Ok(inner), Ok(u)) => (inner, u),
        (stages, u) => {
            let mut errs: Vec<CommitError> = stages
                .err()
                .unwrap_or_default()
                .into_iter()
                .map(CommitError::from)
                .collect();
            errs.extend(u.err());
            let pos = errs.iter().position(|e| !e.is_pipe()).unwrap_or(0);
            return Err(errs.into_iter().nth(pos).expect("at least one error"));
        }
    };
    let outer = inner.to_outer(ArchiveInfo {
        key,
        size: uploaded.size,
        sha256: uploaded.sha256,
        compression: "zstd".into(),
        encryption: "age-v1".into(),
        recipients: recipients.public(),
    });
    let json = Bytes::from(serde_json::to_vec_pretty(&outer).expect("manifest serializes"));
    let signature = match signing {
        Some(k) => Some(sign(k, &outer.reference(), &json)?),
        None => None,
    };
    commit_manifest(store, &outer.cluster, &outer.id, json, signature).await?;
    Ok(outer)
}

/// Signs an outer manifest's exact bytes.
///
/// # Errors
/// [`CommitError::Sign`].
pub fn sign(key: &SigningKey, backup: &str, manifest: &[u8]) -> Result<Bytes, CommitError> {
    key.sign(manifest)
        .map(Bytes::from)
        .map_err(|e| CommitError::Sign {
            backup: backup.to_string(),
            reason: e.to_string(),
        })
}

/// Uploads the archive object `key` from `chunks` (`Ok(None)` marks a complete stream; a
/// stream that ends without it is a failed upstream), hashing the ciphertext on the way.
/// With `expect`, the upload is completed only if size and sha256 match it. On any failure,
/// or when `cancel` completes first, the upload is aborted and nothing is left visible.
///
/// # Errors
/// The store's error, [`CommitError::Interrupted`], an upstream failure, or a mismatch with
/// `expect` (as [`StoreError`]-free text in [`CommitError::Archive`]'s stage `verify`).
pub async fn upload<E>(
    store: &Store,
    key: &str,
    chunks: impl Stream<Item = Result<Option<Bytes>, E>>,
    expect: Option<&Uploaded>,
    cancel: impl Future<Output = ()>,
) -> Result<Uploaded, CommitError>
where
    CommitError: From<E>,
{
    let mut upload = store.start_upload(key).await?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let upload_loop = async {
        futures::pin_mut!(chunks);
        loop {
            match chunks.next().await {
                Some(Ok(Some(b))) => {
                    hasher.update(&b);
                    size += b.len() as u64;
                    upload.write(b).await?;
                }
                Some(Ok(None)) => return Ok(()),
                Some(Err(e)) => return Err(CommitError::from(e)),
                None => {
                    return Err(WriteError::Stage {
                        stage: "upload",
                        source: pipe::upstream_failed(),
                    }
                    .into())
                }
            }
        }
    };
    // Cancellation races the whole upload, including a part write stuck in retries.
    let streamed: Result<(), CommitError> = tokio::select! {
        r = upload_loop => r,
        () = cancel => Err(CommitError::Interrupted),
    };
    if let Err(e) = streamed {
        upload.abort().await;
        return Err(e);
    }
    let got = Uploaded {
        size,
        sha256: hex::encode(hasher.finalize()),
    };
    if let Some(want) = expect {
        if &got != want {
            upload.abort().await;
            return Err(WriteError::Stage {
                stage: "verify",
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "the archive read is {} bytes with sha256 {}, but its manifest says {} bytes with sha256 {}",
                        got.size, got.sha256, want.size, want.sha256
                    ),
                ),
            }
            .into());
        }
    }
    upload.finish().await?;
    Ok(got)
}

/// Commits a backup whose archive is uploaded: the signature first (when given), then the
/// manifest, created only if absent.
///
/// # Errors
/// [`StoreError::AlreadyExists`] when the manifest (or a different signature of a committed
/// backup) is already there; other store errors.
pub async fn commit_manifest(
    store: &Store,
    cluster: &str,
    id: &str,
    manifest: Bytes,
    signature: Option<Bytes>,
) -> Result<(), StoreError> {
    if let Some(sig) = signature {
        let skey = signature_key(cluster, id);
        match store.put_create(&skey, sig.clone()).await {
            Ok(()) => {}
            Err(StoreError::AlreadyExists { .. }) => {
                // A signature without its manifest is the leftover of a commit that never
                // happened; one beside a manifest belongs to a committed backup.
                let mkey = manifest_key(cluster, id);
                match store.head(&mkey).await {
                    Err(StoreError::NotFound { .. }) => store.put_overwrite(&skey, sig).await?,
                    Ok(_) if store.get_bytes(&skey).await? == sig => {}
                    Ok(_) => {
                        return Err(StoreError::AlreadyExists {
                            store: store.to_string(),
                            key: skey,
                        })
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    }
    store.put_create(&manifest_key(cluster, id), manifest).await
}
