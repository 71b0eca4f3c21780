//! The store layer of cpvault: a [`Store`] facade over an `object_store` backend chosen by
//! URL, with the three operations the archive pipeline needs — a streaming multipart upload
//! that is aborted unless explicitly finished, a create-if-absent put used as the commit
//! point, and streaming reads. It holds no business logic: it never decides what a key means,
//! and it never prints or logs credentials (a store is displayed by its redacted URL).

pub mod azure;
#[cfg(any(test, feature = "testing"))]
pub mod conformance;
pub mod create_check;
mod download;
mod error;
#[cfg(any(test, feature = "testing"))]
pub mod fault;
pub mod gcs;
mod listing;
mod local;
mod retry;
pub mod s3;
mod settings;
mod small;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
pub use download::DownloadOptions;
pub use error::StoreError;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
pub(crate) use retry::retry_broken_off;
pub use small::Small;

/// How a streaming upload is cut into parts: memory held by an upload is about
/// `part_size × concurrency`.
#[derive(Debug, Clone, Copy)]
pub struct UploadOptions {
    /// Size of one multipart part in bytes.
    pub part_size: usize,
    /// Parts in flight at once.
    pub concurrency: usize,
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            part_size: 8 * 1024 * 1024,
            concurrency: 4,
        }
    }
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time.
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// The store's entity tag, when it gives one (a content hash on S3, inode, time and size
    /// on a local store); with the size and time, what tells a rewritten object from the one
    /// a cache saw.
    pub e_tag: Option<String>,
}

/// A store chosen by URL.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    display: String,
    upload: UploadOptions,
    download: DownloadOptions,
    /// The directory of a local store, for what object_store does not show (staging files).
    local_root: Option<std::path::PathBuf>,
    /// Said with a credentials failure when no credential setting was given (the client then
    /// falls back to instance metadata, whose failure alone names no setting).
    credentials_hint: Option<&'static str>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("url", &self.display).finish()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl Store {
    /// Opens the store named by `url`. With `create`, a missing local directory is created
    /// (mode 0700); without it, a missing directory is an error, so a typo in `--store` on a
    /// read command does not silently list an empty store.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] for an unknown scheme or malformed URL,
    /// [`StoreError::MissingDirectory`] for an absent local directory without `create`.
    pub fn open(url: &str, create: bool) -> Result<Store, StoreError> {
        Store::open_with(url, create, &std::collections::BTreeMap::new())
    }

    /// Like [`Store::open`], with `settings` (`AWS_*`, `GOOGLE_*`, `AZURE_*` names, e.g. from
    /// a config file) under the environment: a variable that is set wins over a setting.
    ///
    /// # Errors
    /// As [`Store::open`].
    pub fn open_with(
        url: &str,
        create: bool,
        settings: &std::collections::BTreeMap<String, String>,
    ) -> Result<Store, StoreError> {
        let vars = || {
            let mut v: std::collections::BTreeMap<String, String> = settings.clone();
            v.extend(std::env::vars());
            v.into_iter()
        };
        let bad = |reason: &str| StoreError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.is_empty() {
            return Err(bad("empty"));
        }
        let remote = match vars()
            .find(|(k, _)| k == "CPVAULT_DOWNLOAD_CONCURRENCY")
            .map(|(_, v)| v)
        {
            None => DownloadOptions::REMOTE,
            Some(v) => match v.parse::<usize>() {
                Ok(n @ 1..=64) => DownloadOptions {
                    concurrency: n,
                    ..DownloadOptions::REMOTE
                },
                _ => {
                    return Err(bad(&format!(
                        "CPVAULT_DOWNLOAD_CONCURRENCY={v:?}: give a number of ranged GETs in flight from 1 (one streaming GET) to 64"
                    )))
                }
            },
        };
        if let Some(rest) = url.strip_prefix("memory://") {
            if !rest.is_empty() {
                return Err(bad("memory:// takes no path"));
            }
            return Ok(Store::from_object_store(
                Arc::new(object_store::memory::InMemory::new()),
                "memory://".into(),
            ));
        }
        if url.starts_with("s3://") {
            let given =
                vars().any(|(k, v)| s3::CREDENTIAL_SETTINGS.contains(&k.as_str()) && !v.is_empty());
            let (store, display) = s3::open_with_vars(url, vars())?;
            let mut store = Store::from_object_store(store, display).with_download_options(remote);
            if !given {
                store.credentials_hint = Some(s3::NO_CREDENTIALS);
            }
            return Ok(store);
        }
        if url.starts_with("gs://") {
            let (store, display) = gcs::open_with_vars(url, vars())?;
            return Ok(Store::from_object_store(store, display).with_download_options(remote));
        }
        if url.starts_with("az://") {
            let (store, display) = azure::open_with_vars(url, vars())?;
            return Ok(Store::from_object_store(store, display).with_download_options(remote));
        }
        let dir = if url.starts_with("file://") {
            let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
            parsed
                .to_file_path()
                .map_err(|()| bad("a file:// URL needs an absolute path"))?
        } else if let Some((scheme, _)) = url.split_once("://") {
            return Err(bad(&format!(
                "scheme '{scheme}' is not supported by this build"
            )));
        } else {
            std::path::PathBuf::from(url)
        };
        let (store, display) = local::open(&dir, create, url)?;
        let mut store = Store::from_object_store(store, display);
        store.local_root = std::path::absolute(&dir).ok();
        Ok(store)
    }

    /// Staging files an interrupted upload left in a local store (object_store writes
    /// `<key>#<n>` and renames it on completion; a killed process leaves it behind, and
    /// object_store's own listing hides it). Empty for other stores, whose servers expire
    /// abandoned multipart uploads themselves (set a lifecycle rule on S3).
    pub fn upload_leftovers(&self) -> Vec<ObjectInfo> {
        let Some(root) = &self.local_root else {
            return vec![];
        };
        let mut out = vec![];
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_dir() {
                    dirs.push(p);
                    continue;
                }
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.contains('#') {
                    continue;
                }
                let (Ok(rel), Ok(modified)) = (p.strip_prefix(root), meta.modified()) else {
                    continue;
                };
                out.push(ObjectInfo {
                    key: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                    last_modified: modified.into(),
                    e_tag: None,
                });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Removes a staging file found by [`Store::upload_leftovers`].
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] when `key` is not a staging file of a local store; the I/O
    /// error otherwise.
    pub fn remove_upload_leftover(&self, key: &str) -> Result<(), StoreError> {
        let root = self
            .local_root
            .as_ref()
            .filter(|_| key.contains('#') && !key.contains(".."));
        let Some(root) = root else {
            return Err(StoreError::BadUrl {
                url: self.display.clone(),
                reason: format!("'{key}' is not an upload leftover of a local store"),
            });
        };
        match std::fs::remove_file(root.join(key)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::BadUrl {
                url: self.display.clone(),
                reason: format!("removing '{key}': {e}"),
            }),
        }
    }

    /// Wraps an existing object store (a test's fault injector, for instance).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, display: String) -> Store {
        Store {
            local_root: None,
            credentials_hint: None,
            inner,
            display,
            upload: UploadOptions::default(),
            download: DownloadOptions::SINGLE,
        }
    }

    /// Sets how large objects are downloaded (cloud stores default to
    /// [`DownloadOptions::REMOTE`], others to one streaming GET).
    pub fn with_download_options(mut self, download: DownloadOptions) -> Store {
        self.download = download;
        self
    }

    /// Sets how uploads are cut into parts.
    pub fn with_upload_options(mut self, upload: UploadOptions) -> Store {
        self.upload = upload;
        self
    }

    /// The underlying object store.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.inner.clone()
    }

    fn err(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                store: self.display.clone(),
                key: key.to_string(),
            },
            object_store::Error::AlreadyExists { .. } => StoreError::AlreadyExists {
                store: self.display.clone(),
                key: key.to_string(),
            },
            source => {
                let text = source.to_string();
                let source = match self.credentials_hint {
                    Some(hint)
                        if [
                            "credential",
                            "169.254.169.254",
                            "/latest/api/token",
                            "/latest/meta-data",
                        ]
                        .iter()
                        .any(|t| text.contains(t)) =>
                    {
                        object_store::Error::Generic {
                            store: "cpvault",
                            source: format!("{hint} ({text})").into(),
                        }
                    }
                    _ => source,
                };
                StoreError::Backend {
                    store: self.display.clone(),
                    op,
                    key: key.to_string(),
                    source: Box::new(source),
                }
            }
        }
    }

    /// Starts a streaming upload to `key`. Nothing is visible at `key` until
    /// [`Upload::finish`]; dropping or aborting the upload leaves nothing behind.
    ///
    /// # Errors
    /// The backend's error when the upload cannot be started.
    pub async fn start_upload(&self, key: &str) -> Result<Upload, StoreError> {
        let path = Path::from(key);
        let mp = self
            .inner
            .put_multipart(&path)
            .await
            .map_err(|e| self.err("start upload of", key, e))?;
        Ok(Upload {
            writer: Some(WriteMultipart::new_with_chunk_size(
                mp,
                self.upload.part_size,
            )),
            concurrency: self.upload.concurrency.max(1),
            key: key.to_string(),
            store: self.clone(),
        })
    }

    /// Puts `bytes` at `key` only if nothing is there yet: the commit point of a backup.
    ///
    /// # Errors
    /// [`StoreError::AlreadyExists`] when the key exists.
    pub async fn put_create(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // object_store never retries a conditional PUT whose connection broke (it is not
        // idempotent), so the commit would fail on one reset connection. Retry it here: if
        // an earlier attempt did land, the retry sees AlreadyExists, and the object is ours
        // exactly when its bytes are ours.
        let what = format!("store '{self}': create of '{key}'");
        let path = Path::from(key);
        let (r, attempts) = retry_broken_off(&what, || {
            self.inner
                .put_opts(&path, PutPayload::from(bytes.clone()), opts.clone())
        })
        .await;
        match r {
            Ok(_) => Ok(()),
            Err(object_store::Error::AlreadyExists { .. }) if attempts > 1 => {
                if self.get_bytes(key).await? == bytes {
                    Ok(())
                } else {
                    Err(StoreError::AlreadyExists {
                        store: self.display.clone(),
                        key: key.to_string(),
                    })
                }
            }
            Err(e) => Err(self.err("create", key, e)),
        }
    }

    /// Puts `bytes` at `key`, replacing what is there.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn put_overwrite(&self, key: &str, bytes: Bytes) -> Result<(), StoreError> {
        self.inner
            .put(&Path::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    /// Reads a whole (small) object.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent.
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let r = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(|e| self.err("get", key, e))?;
        r.bytes().await.map_err(|e| self.err("read", key, e))
    }

    /// Streams a large object (an archive): its size and its bytes in order. On a cloud store
    /// it is read as several ranged GETs in flight, after a HEAD (see [`DownloadOptions`]);
    /// elsewhere, and for an object of one part, as [`Store::get_stream`].
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent; read errors arrive in the stream.
    pub async fn get_large(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        if !self.download.parallel() {
            return self.get_stream(key).await;
        }
        let path = Path::from(key);
        let meta = self
            .inner
            .head(&path)
            .await
            .map_err(|e| self.err("head", key, e))?;
        if meta.size <= self.download.part_size {
            return self.get_stream(key).await;
        }
        let parts = download::ranged(
            self.inner.clone(),
            path,
            meta.size,
            meta.e_tag,
            self.download,
        );
        let this = self.clone();
        let key = key.to_string();
        Ok((
            meta.size,
            parts.map_err(move |e| this.err("read", &key, e)).boxed(),
        ))
    }

    /// Streams an object in one GET: its size and a stream of chunks.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent; read errors arrive in the stream.
    pub async fn get_stream(
        &self,
        key: &str,
    ) -> Result<(u64, BoxStream<'static, Result<Bytes, StoreError>>), StoreError> {
        let r = self
            .inner
            .get(&Path::from(key))
            .await
            .map_err(|e| self.err("get", key, e))?;
        let size = r.meta.size;
        let this = self.clone();
        let key = key.to_string();
        let stream = r
            .into_stream()
            .map_err(move |e| this.err("read", &key, e))
            .boxed();
        Ok((size, stream))
    }

    /// Size and time of one object.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when absent.
    pub async fn head(&self, key: &str) -> Result<ObjectInfo, StoreError> {
        let m = self
            .inner
            .head(&Path::from(key))
            .await
            .map_err(|e| self.err("head", key, e))?;
        Ok(ObjectInfo::from(m))
    }

    /// Deletes `key`. Deleting an absent key is not an error.
    ///
    /// # Errors
    /// The backend's error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.inner.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }
}

/// A streaming upload in progress. Dropping it unfinished aborts it in the background, so an
/// error path that forgets [`Upload::abort`] still leaves no staged parts behind.
pub struct Upload {
    writer: Option<WriteMultipart>,
    concurrency: usize,
    key: String,
    store: Store,
}

impl Upload {
    /// Appends a chunk, waiting while `concurrency` parts are already in flight.
    ///
    /// # Errors
    /// The backend's error for a failed part.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let w = self.writer.as_mut().expect("upload used after finish");
        if let Err(e) = w.wait_for_capacity(self.concurrency).await {
            return Err(self.store.err("upload", &self.key, e));
        }
        w.put(chunk);
        Ok(())
    }

    /// Completes the upload, making the object visible.
    ///
    /// # Errors
    /// The backend's error; the upload is aborted.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        let w = self.writer.take().expect("upload finished twice");
        w.finish()
            .await
            .map(|_| ())
            .map_err(|e| self.store.err("complete upload of", &self.key, e))
    }

    /// Abandons the upload and removes its parts.
    pub async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            if let Err(e) = w.abort().await {
                tracing::warn!(
                    "store '{}': aborting upload of '{}': {e}",
                    self.store,
                    self.key
                );
            }
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(w) = self.writer.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}
