//! Listing a store, every top-level prefix at once.
//!
//! A flat listing of a whole bucket is a chain of requests, each waiting for the previous
//! one's continuation token (1,000 keys per page on S3): 20,000 objects are 20 round trips one
//! after the other, and some servers (s3s-fs) walk the whole bucket for every page. A listing
//! of a remote store's root therefore asks for its first level (cpvault's clusters) and then
//! lists each of those prefixes flat, many at once. Only that one level is split, so a
//! hostile server's nesting cannot multiply the requests, and a foreign tree in a shared
//! bucket costs what a flat listing of it costs. A local store is walked flat, as the file
//! system walk is fast and notices symlink loops.

use futures::stream::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectMeta;

use crate::{ObjectInfo, Store, StoreError};

/// Prefixes listed at once: enough to list every cluster of a fleet together, few enough to
/// stay far below a cloud store's request limits.
const LIST_CONCURRENCY: usize = 16;

impl From<ObjectMeta> for ObjectInfo {
    fn from(m: ObjectMeta) -> Self {
        ObjectInfo {
            key: m.location.to_string(),
            size: m.size,
            last_modified: m.last_modified,
            e_tag: m.e_tag,
        }
    }
}

impl Store {
    /// Lists every object below `prefix` (all objects when `None`), sorted by key, each key
    /// once. The root of a remote store is listed one top-level prefix per request, up to 16
    /// at once.
    ///
    /// # Errors
    /// The backend's error, or a store that answers the top-level listing with a prefix that
    /// is not one level deep.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = match prefix {
            None if self.local_root.is_none() => self.list_by_top_level().await?,
            _ => self.list_flat(prefix.map(Path::from)).await?,
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn list_flat(&self, prefix: Option<Path>) -> Result<Vec<ObjectInfo>, StoreError> {
        let shown = prefix.as_ref().map(Path::to_string).unwrap_or_default();
        self.inner
            .list(prefix.as_ref())
            .map_ok(ObjectInfo::from)
            .try_collect()
            .await
            .map_err(|e| self.err("list", &shown, e))
    }

    async fn list_by_top_level(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        let top = self
            .inner
            .list_with_delimiter(None)
            .await
            .map_err(|e| self.err("list", "", e))?;
        if let Some(bad) = top.common_prefixes.iter().find(|p| p.parts().count() != 1) {
            let source = object_store::Error::Generic {
                store: "cpvault",
                source: format!("the store answered with the prefix '{bad}', not one level deep")
                    .into(),
            };
            return Err(self.err("list", "", source));
        }
        let mut out: Vec<ObjectInfo> = top.objects.into_iter().map(ObjectInfo::from).collect();
        let below: Vec<Vec<ObjectInfo>> = futures::stream::iter(top.common_prefixes)
            .map(|p| self.list_flat(Some(p)))
            .buffer_unordered(LIST_CONCURRENCY)
            .try_collect()
            .await?;
        out.extend(below.into_iter().flatten());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An S3 endpoint on loopback that answers every request with `xml` (a listing).
    async fn s3_answering(xml: &'static str) -> Store {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        xml.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(xml.as_bytes()).await;
                });
            }
        });
        let vars = [
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ];
        let settings = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        Store::open_with("s3://b", false, &settings).unwrap()
    }

    // A server answering the top-level listing with a prefix two levels deep is refused
    // (it could otherwise make the listing split its tree level after level).
    #[tokio::test]
    async fn a_top_level_answer_more_than_one_level_deep_is_refused() {
        let store = s3_answering(concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
            "<Name>b</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>",
            "<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>",
            "<CommonPrefixes><Prefix>a/b/</Prefix></CommonPrefixes></ListBucketResult>"
        ))
        .await;
        let err = store.list(None).await.unwrap_err().to_string();
        assert!(err.contains("'a/b', not one level deep"), "{err}");
    }
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutPayload};

    // Every object of a nested tree, once, sorted; a prefix lists only what is below it.
    #[tokio::test]
    async fn lists_every_object_of_a_tree_once() {
        let mem = std::sync::Arc::new(InMemory::new());
        for k in ["a/1", "a/b/2", "a/b/c/3", "d/4", "top"] {
            mem.put(&Path::from(k), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let store = Store::from_object_store(mem, "memory".into());
        let keys = |v: Vec<ObjectInfo>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
        assert_eq!(
            keys(store.list(None).await.unwrap()),
            ["a/1", "a/b/2", "a/b/c/3", "d/4", "top"]
        );
        assert_eq!(
            keys(store.list(Some("a/b/")).await.unwrap()),
            ["a/b/2", "a/b/c/3"]
        );
    }
}
