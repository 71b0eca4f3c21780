//! Listing a store as a tree of "directories", many at once.
//!
//! A flat listing of a whole bucket is a chain of requests, each waiting for the previous
//! one's continuation token (1,000 keys per page on S3): 20,000 objects are 20 round trips one
//! after the other, and some servers (s3s-fs) walk the whole bucket for every page. Walking
//! the key tree with one delimited listing per level instead lets every cluster's prefix be
//! listed at once, and a server can answer each from that prefix alone.

use std::collections::VecDeque;

use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;

use crate::{ObjectInfo, Store, StoreError};

/// Listings in flight at once while walking the key tree: enough to list every cluster of a
/// fleet together, few enough to stay far below a cloud store's request limits.
const LIST_CONCURRENCY: usize = 16;

/// Deepest level below the listed prefix that is walked. cpvault's own keys are two levels
/// deep; this only stops a store that answers with prefixes nested without end.
const MAX_DEPTH: usize = 64;

impl Store {
    /// Lists every object below `prefix` (all objects when `None`), sorted by key: one
    /// delimited listing per level of the key tree, up to 16 in flight.
    ///
    /// # Errors
    /// The backend's error, or a store that answers with a prefix outside the one asked (or
    /// nested deeper than 64 levels).
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = vec![];
        let mut queue: VecDeque<(Option<Path>, usize)> =
            VecDeque::from([(prefix.map(Path::from), 0)]);
        let mut pending = FuturesUnordered::new();
        loop {
            while pending.len() < LIST_CONCURRENCY {
                let Some((dir, depth)) = queue.pop_front() else {
                    break;
                };
                let inner = self.inner.clone();
                pending.push(async move {
                    let r = inner.list_with_delimiter(dir.as_ref()).await;
                    (dir, depth, r)
                });
            }
            let Some((dir, depth, r)) = pending.next().await else {
                break;
            };
            let shown = dir.as_ref().map(Path::to_string).unwrap_or_default();
            let r = r.map_err(|e| self.err("list", &shown, e))?;
            out.extend(r.objects.into_iter().map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
                e_tag: m.e_tag,
            }));
            for sub in r.common_prefixes {
                let refused = if !is_strictly_below(&sub, dir.as_ref()) {
                    Some(format!("the store answered with the prefix '{sub}', which is not a level below '{shown}'"))
                } else if depth >= MAX_DEPTH {
                    Some(format!(
                        "the prefix '{sub}' is nested more than {MAX_DEPTH} levels deep"
                    ))
                } else {
                    None
                };
                if let Some(reason) = refused {
                    let source = object_store::Error::Generic {
                        store: "cpvault",
                        source: reason.into(),
                    };
                    return Err(self.err("list", &shown, source));
                }
                queue.push_back((Some(sub), depth + 1));
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
}

/// Whether `sub` names a level strictly below `dir` (anything when `dir` is the root).
fn is_strictly_below(sub: &Path, dir: Option<&Path>) -> bool {
    match dir {
        None => sub.parts().count() > 0,
        Some(dir) => sub
            .prefix_match(dir)
            .is_some_and(|mut rest| rest.next().is_some()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_must_be_a_level_below_the_listed_one() {
        let p = |s: &str| Path::from(s);
        assert!(is_strictly_below(&p("admin"), None));
        assert!(is_strictly_below(&p("a/admin"), Some(&p("a"))));
        assert!(!is_strictly_below(&p("a"), Some(&p("a"))));
        assert!(!is_strictly_below(&p("b/admin"), Some(&p("a"))));
        assert!(!is_strictly_below(&p("ab"), Some(&p("a"))));
        assert!(!is_strictly_below(&p(""), None));
    }

    // A store whose every level names a deeper one stops the walk with an error instead of
    // listing for ever; a normal tree of three levels lists every object.
    #[tokio::test]
    async fn walks_the_tree_and_stops_an_endless_one() {
        use object_store::memory::InMemory;
        use object_store::{ObjectStoreExt, PutPayload};
        let mem = std::sync::Arc::new(InMemory::new());
        for k in ["a/1", "a/b/2", "a/b/c/3", "d/4", "top"] {
            mem.put(&Path::from(k), PutPayload::from_static(b"x"))
                .await
                .unwrap();
        }
        let store = Store::from_object_store(mem.clone(), "memory".into());
        let keys: Vec<String> = store
            .list(None)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["a/1", "a/b/2", "a/b/c/3", "d/4", "top"]);
        let keys: Vec<String> = store
            .list(Some("a/b/"))
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["a/b/2", "a/b/c/3"]);

        let mut deep = String::from("x");
        for _ in 0..=MAX_DEPTH {
            deep.push_str("/x");
        }
        mem.put(&Path::from(deep.as_str()), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let err = store.list(None).await.unwrap_err().to_string();
        assert!(err.contains("levels deep"), "{err}");
    }
}
