//! The listing cache: one object per cluster, `<cluster>/listing-cache.json.zst`, that holds
//! the bytes of the cluster's outer manifests and signatures as they were when it was
//! written, so that `list` and `status` over tens of thousands of backups read one object per
//! cluster instead of one per backup. It is a cache, never the truth. An entry is used only
//! when the store's listing shows an object of that key with the same size, time and entity
//! tag, and its bytes then go through exactly the checks a fetched manifest goes through
//! (bounds, parse, key, signature), so it cannot make an unsigned or edited manifest trusted.
//! It is only read for showing what is there: commands that decide or act on a backup
//! (verify, prune, drill, copy, `latest` for extract and restore, `run`'s choice of drills)
//! read the manifests in the store, so a forged cache can change only what `list` and
//! `status` show, as a forged manifest could. Nothing in this module decides whether a
//! backup exists or is trusted.

use std::collections::HashMap;
use std::io::Read;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use cpvault_backends::{ObjectInfo, Store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::archive::{is_valid_cluster, MANIFEST_SUFFIX};
use crate::trust::{MAX_SIGNATURE_BYTES, SIGNATURE_SUFFIX};

/// The cache object's name inside its cluster's prefix.
pub const CACHE_NAME: &str = "listing-cache.json.zst";

/// Largest cache object read from the store.
pub const MAX_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Largest cache once decompressed: about 5,000 manifests of a few KiB. A writer keeps the
/// newest entries that fit; a reader refuses a cache that decompresses to more.
pub const MAX_CACHE_PLAIN: u64 = 16 * 1024 * 1024;

/// Caches read at once. With the bound above, what a hostile store can make a listing hold
/// while parsing is a few times 4 × 16 MiB; what is kept is only what matches the listing.
const READ_CONCURRENCY: usize = 4;

const FORMAT: &str = "cpvault-listing-cache";
const VERSION: u32 = 1;

/// Objects fetched at once while a cache is rebuilt.
const FETCH_CONCURRENCY: usize = 64;

/// The cache key of `cluster`.
pub fn cache_key(cluster: &str) -> String {
    format!("{cluster}/{CACHE_NAME}")
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    format: String,
    version: u32,
    cluster: String,
    objects: Vec<Entry>,
}

/// One cached object, as the listing showed it when the cache was written.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    key: String,
    size: u64,
    last_modified: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    /// The object's bytes: manifests and signatures are text.
    text: String,
}

impl Entry {
    fn sees(&self, o: &ObjectInfo) -> bool {
        self.size == o.size && self.last_modified == o.last_modified && self.e_tag == o.e_tag
    }
}

/// Cached objects, usable only where a listing agrees with them.
#[derive(Default)]
pub struct Cache {
    by_key: HashMap<String, Entry>,
}

impl Cache {
    /// The bytes of the listed object `o`, when the cache saw that same object (same key,
    /// size, time and entity tag).
    pub fn get(&self, o: &ObjectInfo) -> Option<Bytes> {
        self.by_key
            .get(&o.key)
            .filter(|e| e.sees(o))
            .map(|e| Bytes::copy_from_slice(e.text.as_bytes()))
    }

    /// Cached entries (usable or not).
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// Whether `key` is a manifest or signature object a listing reads, and its size bound.
fn cached_limit(key: &str) -> Option<u64> {
    if key.ends_with(MANIFEST_SUFFIX) {
        Some(crate::archive::manifest::MAX_MANIFEST_BYTES)
    } else if key.ends_with(SIGNATURE_SUFFIX) {
        Some(MAX_SIGNATURE_BYTES)
    } else {
        None
    }
}

/// Parses the cache object of `cluster`: bounded decompression, then every entry checked to
/// be one of that cluster's manifests or signatures, within its size bound, whose text is as
/// long as the size it claims. A cache with one bad entry is refused whole: cpvault never
/// writes one.
///
/// # Errors
/// Why the cache cannot be used, as a short sentence.
pub fn parse(bytes: &[u8], cluster: &str) -> Result<Cache, String> {
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .and_then(|mut d| {
            d.window_log_max(crate::archive::reader::ZSTD_WINDOW_LOG_MAX)?;
            d.take(MAX_CACHE_PLAIN + 1).read_to_end(&mut plain)
        })
        .map_err(|e| format!("not zstd: {e}"))?;
    if plain.len() as u64 > MAX_CACHE_PLAIN {
        return Err(format!("decompresses to more than {MAX_CACHE_PLAIN} bytes"));
    }
    let file: CacheFile = serde_json::from_slice(&plain).map_err(|e| {
        let e = e.to_string();
        format!(
            "not a listing cache: {}",
            crate::text::escape_for_line(&e, 200)
        )
    })?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(format!(
            "format {:?} version {}, not {FORMAT} version {VERSION}",
            crate::text::escape_for_line(&file.format, 64),
            file.version
        ));
    }
    if file.cluster != cluster {
        return Err("written for another cluster".into());
    }
    let own = format!("{cluster}/");
    let mut by_key = HashMap::with_capacity(file.objects.len());
    for e in file.objects {
        let fits = e.key.starts_with(&own)
            && cached_limit(&e.key).is_some_and(|limit| e.size <= limit)
            && e.text.len() as u64 == e.size;
        if !fits {
            return Err(format!(
                "entry {} is not one of the cluster's manifests or signatures, or its size is wrong",
                crate::text::escape_for_line(&e.key, 200)
            ));
        }
        by_key.insert(e.key.clone(), e);
    }
    Ok(Cache { by_key })
}

/// Reads the cache object of every cluster that has one in `objects` (a listing), a few at
/// once, keeping only the entries that match an object of the listing. A cache that cannot be
/// read or parsed is left out (and said in the debug log): it only makes the listing slower.
pub async fn load(store: &Store, objects: &[ObjectInfo]) -> Cache {
    let listed: HashMap<&str, &ObjectInfo> = objects.iter().map(|o| (o.key.as_str(), o)).collect();
    let listed = &listed;
    let found = objects.iter().filter_map(|o| {
        let cluster = o.key.strip_suffix(CACHE_NAME)?.strip_suffix('/')?;
        is_valid_cluster(cluster).then_some((o, cluster))
    });
    let read: Vec<_> = futures::stream::iter(found)
        .map(|(o, cluster)| async move {
            let got = match super::read_small(store, &o.key, MAX_CACHE_BYTES).await {
                Ok(Some(bytes)) => parse(&bytes, cluster),
                Ok(None) => Err("it vanished while listing".into()),
                Err(e) => Err(e),
            };
            let kept = got.map(|mut c| {
                c.by_key
                    .retain(|k, e| listed.get(k.as_str()).is_some_and(|o| e.sees(o)));
                c
            });
            (o, kept)
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut cache = Cache::default();
    for (o, got) in read {
        match got {
            Ok(c) => cache.by_key.extend(c.by_key),
            Err(e) => tracing::debug!("listing cache {} not used: {e}", o.key),
        }
    }
    cache
}

/// [`refresh`] of `clusters` after a commit or a prune, a few at once, all within one minute
/// and given up on Ctrl-C. Outcomes go to the log only: a store that refuses (write-only
/// credentials, say) only keeps listings slower.
pub async fn refresh_clusters<'a>(store: &Store, clusters: impl IntoIterator<Item = &'a str>) {
    let all = futures::stream::iter(clusters)
        .map(|cluster| async move {
            match refresh(store, cluster).await {
                Ok(n) => tracing::debug!("listing cache of {cluster} holds {n} objects"),
                Err(e) => tracing::info!("listing cache of {cluster} not updated: {e}"),
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect::<Vec<()>>();
    let stop = crate::interrupt::token();
    tokio::select! {
        _ = all => {}
        () = stop.cancelled() => tracing::info!("listing caches not updated: interrupted"),
        () = tokio::time::sleep(REFRESH_TIMEOUT) => {
            tracing::info!("listing caches not updated: over {} s", REFRESH_TIMEOUT.as_secs());
        }
    }
}

/// How long rewriting listing caches may take after a command's own work.
const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Rewrites `cluster`'s cache from a fresh listing of its prefix: entries of the old cache
/// that still match are kept, the other manifests and signatures are read. Called after a
/// commit; a failure leaves listings slower, never wrong. Returns the number of entries.
///
/// # Errors
/// The store's error, as a sentence.
pub async fn refresh(store: &Store, cluster: &str) -> Result<usize, String> {
    let objects = store
        .list(Some(&format!("{cluster}/")))
        .await
        .map_err(|e| e.to_string())?;
    if !objects.iter().any(|o| o.key.ends_with(MANIFEST_SUFFIX)) {
        // No backup left (a prune removed the last): no cache either.
        store
            .delete(&cache_key(cluster))
            .await
            .map_err(|e| e.to_string())?;
        return Ok(0);
    }
    let old = load(store, &objects).await;
    // Newest first (ids sort by time), and no more than fits in a cache: a cluster of more
    // backups (or a store planting large manifests) is not read beyond that.
    let mut wanted: Vec<&ObjectInfo> = objects
        .iter()
        .filter(|o| cached_limit(&o.key).is_some_and(|limit| o.size <= limit))
        .collect();
    wanted.sort_by(|a, b| b.key.cmp(&a.key));
    let mut budget = MAX_CACHE_PLAIN;
    wanted.retain(|o| {
        let fits = o.size <= budget;
        budget = budget.saturating_sub(o.size);
        fits
    });
    let old = &old;
    let read: Vec<Result<Option<Entry>, String>> = futures::stream::iter(wanted)
        .map(|o| async move {
            let bytes = match old.get(o) {
                Some(b) => b,
                None => match super::read_small(store, &o.key, o.size).await {
                    Ok(Some(b)) => b,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(format!("{} not read: {e}", o.key)),
                },
            };
            // What is read must be what was listed, or the entry would describe another object.
            let Ok(text) = String::from_utf8(bytes.to_vec()) else {
                return Ok(None);
            };
            Ok((text.len() as u64 == o.size).then(|| Entry {
                key: o.key.clone(),
                size: o.size,
                last_modified: o.last_modified,
                e_tag: o.e_tag.clone(),
                text,
            }))
        })
        .buffer_unordered(FETCH_CONCURRENCY)
        .collect()
        .await;
    // A read that failed (throttling, credentials that may list but not read) would leave a
    // good cache poorer: nothing is written then.
    let mut entries = Vec::with_capacity(read.len());
    for r in read {
        entries.extend(r?);
    }
    // The oldest are left out until the cache fits (JSON escaping makes it larger).
    entries.sort_by(|a, b| b.key.cmp(&a.key));
    let mut file = CacheFile {
        format: FORMAT.into(),
        version: VERSION,
        cluster: cluster.into(),
        objects: entries,
    };
    let packed = loop {
        let json = serde_json::to_vec(&file).map_err(|e| e.to_string())?;
        let packed = zstd::bulk::compress(&json, 3).map_err(|e| e.to_string())?;
        if json.len() as u64 <= MAX_CACHE_PLAIN && packed.len() as u64 <= MAX_CACHE_BYTES {
            break packed;
        }
        file.objects.truncate(file.objects.len() * 3 / 4);
    };
    let n = file.objects.len();
    store
        .put_overwrite(&cache_key(cluster), Bytes::from(packed))
        .await
        .map_err(|e| e.to_string())?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(key: &str, text: &str, secs: i64, e_tag: Option<&str>) -> ObjectInfo {
        ObjectInfo {
            key: key.into(),
            size: text.len() as u64,
            last_modified: DateTime::from_timestamp(secs, 0).unwrap(),
            e_tag: e_tag.map(Into::into),
        }
    }

    fn pack(cluster: &str, objects: &[(&ObjectInfo, &str)]) -> Vec<u8> {
        let file = CacheFile {
            format: FORMAT.into(),
            version: VERSION,
            cluster: cluster.into(),
            objects: objects
                .iter()
                .map(|(o, text)| Entry {
                    key: o.key.clone(),
                    size: o.size,
                    last_modified: o.last_modified,
                    e_tag: o.e_tag.clone(),
                    text: (*text).into(),
                })
                .collect(),
        };
        zstd::bulk::compress(&serde_json::to_vec(&file).unwrap(), 3).unwrap()
    }

    const M: &str = "admin/20260101T000000Z-00000001.manifest.json";

    // An entry serves only the object it saw: another size, time or entity tag (a rewritten
    // object) or another key is read from the store.
    #[test]
    fn an_entry_is_used_only_for_the_object_it_saw() {
        let o = info(M, "{\"m\":1}", 100, Some("abc"));
        let cache = parse(&pack("admin", &[(&o, "{\"m\":1}")]), "admin").unwrap();
        assert_eq!(cache.get(&o).as_deref(), Some(&b"{\"m\":1}"[..]));
        for changed in [
            info(M, "{\"m\":12}", 100, Some("abc")),
            info(M, "{\"m\":1}", 101, Some("abc")),
            info(M, "{\"m\":1}", 100, Some("abd")),
            info(M, "{\"m\":1}", 100, None),
            info(
                "admin/20260101T000000Z-00000002.manifest.json",
                "{\"m\":1}",
                100,
                Some("abc"),
            ),
        ] {
            assert!(cache.get(&changed).is_none(), "{changed:?}");
        }
    }

    #[test]
    fn a_cache_that_does_not_fit_its_cluster_is_refused_whole() {
        let good = info(M, "{}", 1, None);
        let text_too_short = info(M, "{}", 1, None);
        let archive = info("admin/20260101T000000Z-00000001.tar.zst.age", "{}", 1, None);
        let other = info(
            "user1/20260101T000000Z-00000001.manifest.json",
            "{}",
            1,
            None,
        );
        let big = "x".repeat(MAX_SIGNATURE_BYTES as usize + 1);
        let sig = info(
            "admin/20260101T000000Z-00000001.manifest.sig",
            &big,
            1,
            None,
        );
        assert!(parse(&pack("admin", &[(&good, "{}")]), "admin").is_ok());
        assert!(parse(&pack("admin", &[(&good, "{}")]), "user1").is_err());
        for bad in [
            pack("admin", &[(&good, "{}"), (&text_too_short, "{")]),
            pack("admin", &[(&archive, "{}")]),
            pack("admin", &[(&other, "{}")]),
            pack("admin", &[(&sig, &big)]),
        ] {
            let err = parse(&bad, "admin").err().expect("refused");
            assert!(err.contains("entry"), "{err}");
        }
        assert!(parse(b"not zstd", "admin").err().unwrap().contains("zstd"));
        let json = zstd::bulk::compress(b"{\"format\":\"x\"}", 3).unwrap();
        assert!(parse(&json, "admin")
            .err()
            .unwrap()
            .contains("not a listing cache"));
    }

    // A manifest that cannot be read (throttled, or credentials that may list but not read)
    // leaves the cache as it was instead of writing a poorer one.
    #[tokio::test]
    async fn a_failed_read_leaves_the_cache_as_it_was() {
        use object_store::{ObjectStoreExt, PutPayload};
        let mem = std::sync::Arc::new(object_store::memory::InMemory::new());
        let put = |id: u32| {
            let mem = mem.clone();
            async move {
                let key = format!("admin/20260101T000000Z-{id:08x}.manifest.json");
                let path = object_store::path::Path::from(key.as_str());
                mem.put(&path, PutPayload::from(format!("{{\"n\":{id}}}")))
                    .await
                    .unwrap();
            }
        };
        put(1).await;
        put(2).await;
        let store = Store::from_object_store(mem.clone(), "memory".into());
        assert_eq!(refresh(&store, "admin").await.unwrap(), 2);
        put(3).await;
        let cache_object = |objects: &[ObjectInfo]| {
            objects
                .iter()
                .find(|o| o.key == cache_key("admin"))
                .cloned()
                .expect("cache written")
        };
        let before = cache_object(&store.list(Some("admin/")).await.unwrap());
        // Request 1 lists, 2 reads the cache, 3 reads the new manifest.
        let faulty = cpvault_backends::fault::FaultStore::new(mem.clone()).fail_request(3);
        let faulty = Store::from_object_store(std::sync::Arc::new(faulty), "faulty".into());
        let err = refresh(&faulty, "admin").await.unwrap_err();
        assert!(err.contains("not read"), "{err}");
        let objects = store.list(Some("admin/")).await.unwrap();
        assert_eq!(cache_object(&objects), before, "the cache was rewritten");
        assert_eq!(load(&store, &objects).await.len(), 2);
        assert_eq!(refresh(&store, "admin").await.unwrap(), 3);
    }

    // A few KiB that decompress to more than the bound are refused without holding it all.
    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![0u8; MAX_CACHE_PLAIN as usize + 1024];
        let bomb = zstd::bulk::compress(&zeros, 19).unwrap();
        assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
        let err = parse(&bomb, "admin").err().expect("refused");
        assert!(err.contains("more than"), "{err}");
    }
}
