//! A wrapper that refuses create-if-absent writes on a server that does not honour them. A
//! backup commits by creating its manifest only if absent; an S3-compatible server that
//! ignores `If-None-Match: *` would let two writers overwrite each other silently. Before the
//! first write through a store, this wrapper probes it once — creates a scratch object twice
//! and expects the second create to fail — and from then on fails every write with a clear
//! message if the server got it wrong. It must never let a commit through unprobed, and it
//! never changes what a read returns.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result,
};
use tokio::sync::OnceCell;

/// Why the probe refused the server, when it did.
type Verdict = std::result::Result<(), String>;

/// Probes conditional-create support before the first write, then passes writes through.
pub struct CreateCheck {
    inner: Arc<dyn ObjectStore>,
    verdict: OnceCell<Verdict>,
    weak: bool,
}

/// The variable that opts in to committing on a store without conditional create.
pub const WEAK_COMMIT_ENV: &str = "CPVAULT_STORE_WEAK_COMMIT";

impl CreateCheck {
    /// Wraps `inner`; nothing is probed until the first write. The weak mode is on when
    /// `CPVAULT_STORE_WEAK_COMMIT` is `1` or `true`.
    pub fn new(inner: Arc<dyn ObjectStore>) -> CreateCheck {
        let weak = matches!(
            std::env::var(WEAK_COMMIT_ENV).as_deref(),
            Ok("1") | Ok("true")
        );
        CreateCheck::with_weak_commit(inner, weak)
    }

    /// Wraps `inner`. With `weak`, a store that fails the probe is still written to, and a
    /// create-if-absent becomes check-then-write: it refuses an existing key, but two writers
    /// racing for the same key can both succeed and the later one wins. Backup ids are
    /// random, so that needs two commits of the same backup at once (two copies of it, say).
    pub fn with_weak_commit(inner: Arc<dyn ObjectStore>, weak: bool) -> CreateCheck {
        CreateCheck {
            inner,
            verdict: OnceCell::new(),
            weak,
        }
    }

    /// Runs the probe once (a transient error is returned and the probe retried next time).
    /// `Ok(true)` means the store failed the probe and the weak mode carries on.
    async fn ensure(&self) -> Result<bool> {
        // Each probe uses a fresh key, so one whose connection broke off can simply run again.
        let (verdict, _) = crate::retry_broken_off("the conditional-create probe", || {
            self.verdict.get_or_try_init(|| self.probe())
        })
        .await;
        let verdict = verdict?;
        match verdict {
            Ok(()) => Ok(false),
            Err(why) if self.weak => {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    tracing::warn!("{WEAK_COMMIT_ENV} is set: committing with check-then-write ({why})");
                });
                Ok(true)
            }
            Err(why) => Err(object_store::Error::NotSupported {
                source: format!(
                    "{why} (or set {WEAK_COMMIT_ENV}=1 to commit with check-then-write, accepting that two writers of the same key at once could overwrite each other)"
                )
                .into(),
            }),
        }
    }

    async fn probe(&self) -> Result<Verdict> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = Path::from(format!(
            ".cpvault-probe/create-{nanos}-{}",
            std::process::id()
        ));
        let create = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let first = self
            .inner
            .put_opts(&key, PutPayload::from_static(b"1"), create.clone())
            .await;
        match first {
            Ok(_) => {}
            Err(object_store::Error::NotImplemented { .. })
            | Err(object_store::Error::NotSupported { .. }) => {
                return Ok(Err(REFUSAL_DISABLED.into()));
            }
            Err(e) => return Err(e),
        }
        let second = self
            .inner
            .put_opts(&key, PutPayload::from_static(b"2"), create)
            .await;
        let _ = self.inner.delete(&key).await;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Ok(())),
            Ok(_) => Ok(Err(REFUSAL_IGNORED.into())),
            Err(e) => Err(e),
        }
    }
}

const REFUSAL_IGNORED: &str = "the server ignores conditional create (If-None-Match: *): a second create of the same key succeeded, so a backup could be silently overwritten; cpvault refuses to commit here — use a server that supports conditional writes";
const REFUSAL_DISABLED: &str = "conditional create is disabled for this store (AWS_CONDITIONAL_PUT), so a backup could be silently overwritten; cpvault refuses to commit here — unset AWS_CONDITIONAL_PUT";

impl fmt::Display for CreateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CreateCheck({})", self.inner)
    }
}

// Deliberately not derived: the inner client's Debug may hold credentials.
impl fmt::Debug for CreateCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateCheck").finish_non_exhaustive()
    }
}

#[async_trait]
impl ObjectStore for CreateCheck {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let degraded = self.ensure().await?;
        if degraded && matches!(opts.mode, PutMode::Create) {
            match self.inner.head(location).await {
                Ok(_) => {
                    return Err(object_store::Error::AlreadyExists {
                        path: location.to_string(),
                        source: "exists (checked before writing: weak commit mode)".into(),
                    })
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let opts = PutOptions {
                mode: PutMode::Overwrite,
                ..opts
            };
            return self.inner.put_opts(location, payload, opts).await;
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        // Probing before an upload, not just before its commit, fails a backup before it has
        // sent gigabytes to a store it could never commit to.
        self.ensure().await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.ensure().await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.ensure().await?;
        self.inner.rename_opts(from, to, options).await
    }
}
