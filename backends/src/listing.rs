//! Listing a store, every top-level prefix at once.
//!
//! A flat listing of a whole bucket is a chain of requests, each waiting for the previous
//! one's continuation token (1,000 keys per page on S3): 20,000 objects are 20 round trips one
//! after the other, and some servers (s3s-fs) walk the whole bucket for every page. A listing
//! of a remote store's root therefore asks for its first level (cpvault's clusters) and then
//! lists each of those prefixes flat, many at once. Only that one level is split, so a
//! hostile server's nesting cannot multiply the requests, and a foreign tree in a shared
//! bucket costs what a flat listing of it costs; a top level that is not one level deep is
//! listed flat whole. A local store is walked flat, as the file
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
    /// The backend's error.
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
        // A prefix that is not one level deep (a hostile answer, or `/` for keys that start
        // with a slash) is not split further: the whole store is then listed flat.
        if top.common_prefixes.iter().any(|p| p.parts().count() != 1) {
            return self.list_flat(None).await;
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

    /// An S3 endpoint on loopback that answers every request with `xml` (a listing); the
    /// request lines it saw.
    async fn s3_answering(
        xml: &'static str,
    ) -> (Store, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    log.lock()
                        .unwrap()
                        .push(line.lines().next().unwrap_or("").to_string());
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                        xml.len()
                    );
                    let _ = conn.write_all(reply.as_bytes()).await;
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
        (Store::open_with("s3://b", false, &settings).unwrap(), seen)
    }

    // A top level answered with a prefix two levels deep (hostile), or with `/` (keys that
    // start with a slash), is not split: the whole store is listed flat instead.
    #[tokio::test]
    async fn a_top_level_not_one_level_deep_is_listed_flat() {
        for odd in ["a/b/", "/"] {
            let xml: &'static str = Box::leak(
                format!(
                    concat!(
                        r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                        r#"<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">"#,
                        "<Name>b</Name><Prefix></Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>",
                        "<Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>",
                        "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes></ListBucketResult>"
                    ),
                    odd
                )
                .into_boxed_str(),
            );
            let (store, seen) = s3_answering(xml).await;
            assert_eq!(store.list(None).await.unwrap(), vec![], "{odd}");
            let seen = seen.lock().unwrap().clone();
            assert_eq!(seen.len(), 2, "{odd}: {seen:?}");
            assert!(seen[0].contains("delimiter"), "{seen:?}");
            assert!(!seen[1].contains("delimiter"), "{seen:?}");
        }
    }

    // Every object of a nested tree, once, sorted; a prefix lists only what is below it.
    #[tokio::test]
    async fn lists_every_object_of_a_tree_once() {
        use object_store::memory::InMemory;
        use object_store::{ObjectStoreExt, PutPayload};
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
