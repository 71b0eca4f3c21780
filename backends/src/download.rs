//! Reading a large object from a remote store as several ranged GETs in flight at once,
//! handed on in order: one streaming GET is bound by one connection's window and round
//! trips, while the archive pipeline behind it (age, zstd, tar, sha256) runs faster than
//! that on a cloud store. Memory is bounded by `part_size × concurrency`. Every part is
//! pinned to the ETag a HEAD saw first (`If-Match`), so an object replaced mid-read fails
//! the read instead of splicing two objects; a part whose connection breaks off is
//! fetched again, alone. This module decides nothing about what the bytes mean.

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};
use std::sync::Arc;

/// How downloads of large objects are cut into ranged GETs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadOptions {
    /// Bytes per ranged GET.
    pub part_size: u64,
    /// Ranged GETs in flight at once; 1 reads the object with one streaming GET.
    pub concurrency: usize,
}

impl DownloadOptions {
    /// One streaming GET: right for a local directory (no round trips to hide).
    pub const SINGLE: DownloadOptions = DownloadOptions {
        part_size: 0,
        concurrency: 1,
    };

    /// For cloud stores: 4 × 8 MiB in flight, 32 MiB of memory at most.
    pub const REMOTE: DownloadOptions = DownloadOptions {
        part_size: 8 * 1024 * 1024,
        concurrency: 4,
    };

    pub(crate) fn parallel(&self) -> bool {
        self.concurrency > 1 && self.part_size > 0
    }
}

type Part = Result<Bytes, object_store::Error>;

/// Fetches the `size` bytes of `path` (whose ETag is `etag`, from a HEAD) as ranged parts,
/// `opts.concurrency` at a time, in order.
pub(crate) fn ranged(
    inner: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
    etag: Option<String>,
    opts: DownloadOptions,
) -> BoxStream<'static, Part> {
    let parts = (0..size)
        .step_by(usize::try_from(opts.part_size).unwrap_or(usize::MAX))
        .map(move |start| {
            let end = (start + opts.part_size).min(size);
            let fetch: BoxFuture<'static, Part> =
                Box::pin(part(inner.clone(), path.clone(), start..end, etag.clone()));
            fetch
        });
    stream::iter(parts).buffered(opts.concurrency).boxed()
}

/// One part, fetched again (up to four tries) when its connection breaks off.
async fn part(
    inner: Arc<dyn ObjectStore>,
    path: Path,
    range: std::ops::Range<u64>,
    etag: Option<String>,
) -> Part {
    let what = format!("bytes {}..{} of {path}", range.start, range.end);
    let (got, _) = crate::retry_broken_off(&what, || {
        let (inner, path, range, etag) = (inner.clone(), path.clone(), range.clone(), etag.clone());
        let what = what.clone();
        async move {
            let r = inner
                .get_opts(
                    &path,
                    GetOptions {
                        range: Some(GetRange::Bounded(range.clone())),
                        if_match: etag,
                        ..GetOptions::default()
                    },
                )
                .await?;
            let bytes = r.bytes().await?;
            if bytes.len() as u64 != range.end - range.start {
                return Err(object_store::Error::Generic {
                    store: "download",
                    source: format!(
                        "{} bytes for {what}, expected {} (the object changed while it was read)",
                        bytes.len(),
                        range.end - range.start
                    )
                    .into(),
                });
            }
            Ok(bytes)
        }
    })
    .await;
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use futures::TryStreamExt;
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    async fn read_all(store: &Store, key: &str) -> (u64, Vec<u8>) {
        let (size, s) = store.get_large(key).await.unwrap();
        let chunks: Vec<Bytes> = s.try_collect().await.unwrap();
        (size, chunks.concat())
    }

    #[tokio::test]
    async fn parts_come_back_in_order_whatever_the_size() {
        let mem = Arc::new(InMemory::new());
        let store = Store::from_object_store(mem.clone(), "memory://".into())
            .with_download_options(DownloadOptions {
                part_size: 1000,
                concurrency: 3,
            });
        for len in [0usize, 1, 999, 1000, 1001, 10_007] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let key = format!("obj-{len}");
            mem.put(&Path::from(key.as_str()), PutPayload::from(data.clone()))
                .await
                .unwrap();
            let (size, got) = read_all(&store, &key).await;
            assert_eq!(size, len as u64);
            assert_eq!(got, data, "{len} bytes");
        }
    }

    #[tokio::test]
    async fn an_object_replaced_mid_read_fails_the_read() {
        let mem = Arc::new(InMemory::new());
        let store = Store::from_object_store(mem.clone(), "memory://".into())
            .with_download_options(DownloadOptions {
                part_size: 100,
                concurrency: 2,
            });
        let path = Path::from("obj");
        mem.put(&path, PutPayload::from(vec![1u8; 1000]))
            .await
            .unwrap();
        let (_, mut s) = store.get_large("obj").await.unwrap();
        let first = s.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 100);
        mem.put(&path, PutPayload::from(vec![2u8; 1000]))
            .await
            .unwrap();
        let rest: Result<Vec<Bytes>, _> = s.try_collect().await;
        let err = rest.expect_err("a splice of two objects was read");
        assert!(err.to_string().contains("obj"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_object_is_not_found() {
        let store = Store::from_object_store(Arc::new(InMemory::new()), "memory://".into())
            .with_download_options(DownloadOptions::REMOTE);
        assert!(matches!(
            store.get_large("nope").await,
            Err(crate::StoreError::NotFound { .. })
        ));
    }
}
