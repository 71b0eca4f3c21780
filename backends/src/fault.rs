//! A fault-injecting store for tests: wraps another store and, by a plan fixed when it is
//! built, fails the Nth request or every request after N, delays requests, truncates or
//! flips a bit in the bodies it returns, or ignores create-if-absent the way a non-conforming
//! S3 server would. Every request is counted: starting a multipart upload, each part, its
//! completion or abort, each put, get, head, list and delete. It exists to prove what cpvault
//! does when a store misbehaves; it must never be reachable from a store URL.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    Result, UploadPart,
};

#[derive(Debug, Default)]
struct Plan {
    fail_nth: Option<u64>,
    fail_after: Option<u64>,
    delay: Option<Duration>,
    /// Key suffix and byte offset of a bit to flip in GET bodies.
    flip: Option<(String, u64)>,
    /// Key suffix and length at which GET bodies end early.
    truncate: Option<(String, u64)>,
    ignore_create: bool,
    /// Puts of keys with this suffix are carried out, then reported as a broken connection
    /// (the first `usize` of them).
    lose_put_response: Option<(String, usize)>,
}

#[derive(Debug, Default)]
struct State {
    plan: Plan,
    requests: AtomicU64,
    lost: AtomicU64,
}

impl State {
    /// Counts one request and decides whether it fails.
    async fn request(&self, what: &str, key: &str) -> Result<()> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(d) = self.plan.delay {
            tokio::time::sleep(d).await;
        }
        let fail = self.plan.fail_nth == Some(n) || self.plan.fail_after.is_some_and(|a| n > a);
        if fail {
            return Err(object_store::Error::Generic {
                store: "fault",
                source: format!("injected fault: request {n} ({what} '{key}') failed").into(),
            });
        }
        Ok(())
    }
}

/// The wrapper. Build it with [`FaultStore::new`] and the `fail_*`/`delay`/… methods.
#[derive(Clone)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    state: Arc<State>,
}

impl FaultStore {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: Arc<dyn ObjectStore>) -> FaultStore {
        FaultStore {
            inner,
            state: Arc::default(),
        }
    }

    fn plan(mut self, f: impl FnOnce(&mut Plan)) -> FaultStore {
        f(&mut Arc::get_mut(&mut self.state)
            .expect("plan faults before using the store")
            .plan);
        self
    }

    /// Fails only the `n`th request (1-based).
    pub fn fail_request(self, n: u64) -> FaultStore {
        self.plan(|p| p.fail_nth = Some(n))
    }

    /// Lets the first `n` requests through and fails every one after them.
    pub fn fail_after(self, n: u64) -> FaultStore {
        self.plan(|p| p.fail_after = Some(n))
    }

    /// Carries out the first `times` puts of keys ending in `suffix`, then reports each as a
    /// connection reset, as when a response is lost on the way back.
    pub fn lose_put_response(self, suffix: &str, times: usize) -> FaultStore {
        let suffix = suffix.to_string();
        self.plan(|p| p.lose_put_response = Some((suffix, times)))
    }

    /// Delays every request.
    pub fn delay(self, d: Duration) -> FaultStore {
        self.plan(|p| p.delay = Some(d))
    }

    /// Flips the lowest bit of byte `offset` in GET bodies of keys ending in `suffix`.
    pub fn flip_bit(self, suffix: &str, offset: u64) -> FaultStore {
        self.plan(|p| p.flip = Some((suffix.to_string(), offset)))
    }

    /// Ends GET bodies of keys ending in `suffix` after `len` bytes, as a dropped connection
    /// that the client failed to notice would.
    pub fn truncate_reads(self, suffix: &str, len: u64) -> FaultStore {
        self.plan(|p| p.truncate = Some((suffix.to_string(), len)))
    }

    /// Treats create-if-absent puts as plain overwrites, like a server that ignores
    /// `If-None-Match: *`.
    pub fn ignore_create(self) -> FaultStore {
        self.plan(|p| p.ignore_create = true)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn mangle(&self, location: &Path, r: GetResult) -> GetResult {
        let key = location.as_ref();
        let flip = self
            .state
            .plan
            .flip
            .as_ref()
            .filter(|(s, _)| key.ends_with(s.as_str()))
            .map(|(_, o)| *o);
        let truncate = self
            .state
            .plan
            .truncate
            .as_ref()
            .filter(|(s, _)| key.ends_with(s.as_str()))
            .map(|(_, l)| *l);
        if flip.is_none() && truncate.is_none() {
            return r;
        }
        let (meta, range, attributes, extensions) = (
            r.meta.clone(),
            r.range.clone(),
            r.attributes.clone(),
            r.extensions.clone(),
        );
        let mut pos = range.start;
        let stream = r
            .into_stream()
            .map(move |chunk| {
                let chunk = chunk?;
                let start = pos;
                pos += chunk.len() as u64;
                let mut chunk = chunk;
                if let Some(off) = flip.filter(|o| (start..pos).contains(o)) {
                    let mut v = chunk.to_vec();
                    v[(off - start) as usize] ^= 1;
                    chunk = Bytes::from(v);
                }
                if let Some(len) = truncate {
                    chunk = chunk.slice(..(len.saturating_sub(start) as usize).min(chunk.len()));
                }
                Ok(chunk)
            })
            .filter(|c| futures::future::ready(!matches!(c, Ok(b) if b.is_empty())))
            .boxed();
        GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions,
        }
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStore")
            .field("plan", &self.state.plan)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> Result<PutResult> {
        self.state.request("put", location.as_ref()).await?;
        if self.state.plan.ignore_create && opts.mode == PutMode::Create {
            opts.mode = PutMode::Overwrite;
        }
        let r = self.inner.put_opts(location, payload, opts).await?;
        if let Some((suffix, times)) = &self.state.plan.lose_put_response {
            if location.as_ref().ends_with(suffix.as_str())
                && self.state.lost.fetch_add(1, Ordering::SeqCst) < *times as u64
            {
                return Err(object_store::Error::Generic {
                    store: "fault",
                    source: "error sending request: connection error: Connection reset by peer (injected after the put landed)".into(),
                });
            }
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.state
            .request("start upload", location.as_ref())
            .await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultUpload {
            inner,
            state: self.state.clone(),
            key: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.state.request("get", location.as_ref()).await?;
        let r = self.inner.get_opts(location, options).await?;
        Ok(self.mangle(location, r))
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.state.request("get ranges", location.as_ref()).await?;
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let state = self.state.clone();
        let inner = self.inner.clone();
        locations
            .then(move |p| {
                let state = state.clone();
                async move {
                    let p = p?;
                    state.request("delete", p.as_ref()).await?;
                    Ok(p)
                }
            })
            .flat_map(move |r| match r {
                Ok(p) => inner.delete_stream(futures::stream::once(async move { Ok(p) }).boxed()),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let state = self.state.clone();
        let inner = self.inner.list(prefix);
        let key = prefix.map(|p| p.to_string()).unwrap_or_default();
        futures::stream::once(async move { state.request("list", &key).await })
            .flat_map(move |r| match r {
                Ok(()) => futures::stream::empty().boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .chain(inner)
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let key = prefix.map(|p| p.to_string()).unwrap_or_default();
        self.state.request("list", &key).await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.state.request("copy", to.as_ref()).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.state.request("rename", to.as_ref()).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

struct FaultUpload {
    inner: Box<dyn MultipartUpload>,
    state: Arc<State>,
    key: String,
}

impl fmt::Debug for FaultUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultUpload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for FaultUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let state = self.state.clone();
        let key = self.key.clone();
        Box::pin(async move {
            state.request("upload part of", &key).await?;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.state.request("complete upload of", &self.key).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.state.request("abort upload of", &self.key).await?;
        self.inner.abort().await
    }
}
