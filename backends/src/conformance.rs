//! The conformance suite every store must pass, as `pub async fn`s over a [`Store`], so the
//! same cases run against memory, a local directory and real servers from whichever test
//! binary starts them. Each case panics with the store's name and what differed; each
//! expects an empty store (or at least no keys under `conformance/`) and leaves its keys
//! behind for the test to inspect. It must never assume more than the [`Store`] facade
//! promises.

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use crate::{Store, StoreError};

/// Runs every case.
pub async fn run_all(store: &Store) {
    put_get_list_delete(store).await;
    create_if_absent(store).await;
    not_found(store).await;
    aborted_upload_leaves_nothing(store).await;
    multipart_large(store, 64 * 1024 * 1024 + 12_345).await;
    list_prefix_and_pagination(store, 1_050).await;
    list_root_and_rewrites(store).await;
}

/// A store opened with a wrong credential: writes and lists are refused with an error that
/// names the store and the server's 403, and never quotes `secret`.
pub async fn bad_credentials_refused(store: &Store, secret: &str) {
    let put = store
        .put_create("conformance/denied.json", Bytes::from_static(b"{}"))
        .await
        .err()
        .unwrap_or_else(|| panic!("{store}: a write with a wrong credential succeeded"))
        .to_string();
    let list = store
        .list(None)
        .await
        .err()
        .unwrap_or_else(|| panic!("{store}: a list with a wrong credential succeeded"))
        .to_string();
    for e in [put, list] {
        assert!(
            e.contains(&store.to_string()) && e.contains("403"),
            "{store}: {e}"
        );
        assert!(!e.contains(secret), "{store}: the secret leaked: {e}");
    }
}

/// Put, overwrite, get, head, list and delete of small objects.
pub async fn put_get_list_delete(store: &Store) {
    let k = "conformance/basic/a.bin";
    store
        .put_overwrite(k, Bytes::from_static(b"first"))
        .await
        .unwrap_or_else(|e| panic!("{store}: put: {e}"));
    store
        .put_overwrite(k, Bytes::from_static(b"second version"))
        .await
        .unwrap_or_else(|e| panic!("{store}: overwrite: {e}"));
    let got = store.get_bytes(k).await.unwrap();
    assert_eq!(&got[..], b"second version", "{store}: get after overwrite");
    let head = store.head(k).await.unwrap();
    assert_eq!(head.size, 14, "{store}: head size");
    assert_eq!(head.key, k, "{store}: head key");
    let (size, body) = store.get_stream(k).await.unwrap();
    let body: Vec<Bytes> = body.try_collect().await.unwrap();
    assert_eq!((size, body.concat()), (14, b"second version".to_vec()));

    store
        .put_overwrite("conformance/basic/b/c.bin", Bytes::from_static(b"c"))
        .await
        .unwrap();
    let listed: Vec<String> = store
        .list(Some("conformance/basic"))
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(
        listed,
        ["conformance/basic/a.bin", "conformance/basic/b/c.bin"],
        "{store}: list"
    );

    store.delete(k).await.unwrap();
    assert!(
        matches!(store.get_bytes(k).await, Err(StoreError::NotFound { .. })),
        "{store}: a deleted object must be gone"
    );
    store
        .delete(k)
        .await
        .unwrap_or_else(|e| panic!("{store}: deleting an absent key must succeed: {e}"));
    let listed = store.list(Some("conformance/basic")).await.unwrap();
    assert_eq!(listed.len(), 1, "{store}: list after delete: {listed:?}");
}

/// The commit point: a second create of the same key fails and the first content stays.
pub async fn create_if_absent(store: &Store) {
    let k = "conformance/create/manifest.json";
    store
        .put_create(k, Bytes::from_static(b"winner"))
        .await
        .unwrap_or_else(|e| panic!("{store}: first create: {e}"));
    match store.put_create(k, Bytes::from_static(b"loser")).await {
        Err(StoreError::AlreadyExists { store: s, key }) => {
            assert_eq!((s, key), (store.to_string(), k.to_string()));
        }
        other => panic!("{store}: second create must fail with AlreadyExists, got {other:?}"),
    }
    assert_eq!(
        &store.get_bytes(k).await.unwrap()[..],
        b"winner",
        "{store}: the first create must win"
    );
}

/// Absent objects are `NotFound` for every read, naming store and key.
pub async fn not_found(store: &Store) {
    let k = "conformance/missing/nothing.bin";
    let e = store.get_bytes(k).await.unwrap_err();
    assert!(
        matches!(e, StoreError::NotFound { .. }),
        "{store}: get: {e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&store.to_string()) && msg.contains(k),
        "{store}: {msg}"
    );
    assert!(matches!(
        store.get_stream(k).await.err(),
        Some(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.head(k).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store
        .list(Some("conformance/missing"))
        .await
        .unwrap()
        .is_empty());
}

/// An upload that is aborted, or dropped unfinished, leaves no object behind.
pub async fn aborted_upload_leaves_nothing(store: &Store) {
    let k = "conformance/abort/archive.bin";
    let mut up = store.start_upload(k).await.unwrap();
    up.write(Bytes::from(vec![7u8; 1024])).await.unwrap();
    assert!(
        matches!(store.head(k).await, Err(StoreError::NotFound { .. })),
        "{store}: an unfinished upload must not be visible"
    );
    up.abort().await;
    assert!(
        matches!(store.head(k).await, Err(StoreError::NotFound { .. })),
        "{store}: an aborted upload must not be visible"
    );
    let dropped = store.start_upload(k).await.unwrap();
    drop(dropped);
    assert!(store
        .list(Some("conformance/abort"))
        .await
        .unwrap()
        .is_empty());
}

/// The large object is written in chunks of this odd size.
const CHUNK: usize = 3 * 1024 * 1024 + 17;

/// One deterministic block of the large object; block `i` differs from every other.
fn block(base: &[u8], i: u64, len: usize) -> Bytes {
    let mut b = base[..len].to_vec();
    b[..8].copy_from_slice(&i.to_le_bytes());
    Bytes::from(b)
}

/// A streamed multipart upload of `size` bytes, written in odd-sized chunks, reads back
/// identical, with the right size in head and list.
pub async fn multipart_large(store: &Store, size: u64) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let base: Vec<u8> = (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let k = "conformance/large/archive.bin";
    let mut up = store.start_upload(k).await.unwrap();
    let (mut sent, mut i) = (0u64, 0u64);
    while sent < size {
        let len = CHUNK.min((size - sent) as usize);
        up.write(block(&base, i, len))
            .await
            .unwrap_or_else(|e| panic!("{store}: part: {e}"));
        sent += len as u64;
        i += 1;
    }
    up.finish()
        .await
        .unwrap_or_else(|e| panic!("{store}: complete: {e}"));
    assert_eq!(store.head(k).await.unwrap().size, size, "{store}: head");

    // One streaming GET, then the archive read (ranged GETs in flight on cloud stores).
    let (got_size, body) = store.get_stream(k).await.unwrap();
    assert_eq!(got_size, size, "{store}: get size");
    same_blocks(store, &base, size, body, "get").await;
    let (got_size, body) = store.get_large(k).await.unwrap();
    assert_eq!(got_size, size, "{store}: get_large size");
    same_blocks(store, &base, size, body, "get_large").await;
}

/// Asserts `body` is the `size` bytes [`multipart_large`] wrote, block by block.
async fn same_blocks(
    store: &Store,
    base: &[u8],
    size: u64,
    mut body: futures::stream::BoxStream<'static, Result<Bytes, StoreError>>,
    how: &str,
) {
    let (mut pos, mut want_i, mut want) = (0u64, 0u64, Bytes::new());
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.unwrap_or_else(|e| panic!("{store}: {how}: read: {e}"));
        while !chunk.is_empty() {
            if want.is_empty() {
                let len = CHUNK.min((size - pos) as usize);
                assert!(len > 0, "{store}: {how}: more bytes than were written");
                want = block(base, want_i, len);
                want_i += 1;
            }
            let n = want.len().min(chunk.len());
            assert!(
                chunk[..n] == want[..n],
                "{store}: {how}: read-back differs near byte {pos}"
            );
            pos += n as u64;
            chunk = chunk.slice(n..);
            want = want.slice(n..);
        }
    }
    assert_eq!(pos, size, "{store}: {how}: read-back length");
}

/// Listing returns exactly the keys below a prefix — not a sibling that merely shares its
/// first characters — past the 1,000 keys of one S3 list page.
pub async fn list_prefix_and_pagination(store: &Store, n: usize) {
    let keys: Vec<String> = (0..n)
        .map(|i| format!("conformance/many/{i:05}.json"))
        .collect();
    stream::iter(keys.iter().cloned())
        .map(|k| async move { store.put_overwrite(&k, Bytes::from(k.clone())).await })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .unwrap_or_else(|e| panic!("{store}: put: {e}"));
    for k in ["conformance/manyx/1.json", "conformance/other/1.json"] {
        store
            .put_overwrite(k, Bytes::from_static(b"x"))
            .await
            .unwrap();
    }
    let listed: Vec<String> = store
        .list(Some("conformance/many"))
        .await
        .unwrap_or_else(|e| panic!("{store}: list: {e}"))
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed.len(), n, "{store}: listed count");
    assert_eq!(listed, keys, "{store}: listed keys");
    let all = store.list(Some("conformance")).await.unwrap();
    assert!(all.len() >= n + 2, "{store}: list of the parent");
}

/// The whole store lists every key once, root-level ones too, sorted (a remote store's root is
/// listed one top-level prefix at a time); an object rewritten with as many bytes is listed
/// with another time or entity tag, which is what a listing cache tells it apart by.
pub async fn list_root_and_rewrites(store: &Store) {
    let root_key = "conformance-root.json";
    store
        .put_overwrite(root_key, Bytes::from_static(b"root"))
        .await
        .unwrap_or_else(|e| panic!("{store}: put: {e}"));
    let below = store.list(Some("conformance")).await.unwrap();
    let all = store
        .list(None)
        .await
        .unwrap_or_else(|e| panic!("{store}: list of the root: {e}"));
    let mut want: Vec<&str> = below.iter().map(|o| o.key.as_str()).collect();
    want.push(root_key);
    want.sort_unstable();
    let got: Vec<&str> = all
        .iter()
        .map(|o| o.key.as_str())
        .filter(|k| k.starts_with("conformance"))
        .collect();
    assert_eq!(got, want, "{store}: list of the root");
    store.delete(root_key).await.unwrap();

    let key = "conformance/rewrite.json";
    store
        .put_overwrite(key, Bytes::from_static(b"aaaa"))
        .await
        .unwrap();
    let before = listed_as(store, key).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    store
        .put_overwrite(key, Bytes::from_static(b"bbbb"))
        .await
        .unwrap();
    let after = listed_as(store, key).await;
    assert_ne!(
        before, after,
        "{store}: a rewrite listed like the object before it"
    );
}

/// Size, time and entity tag of `key` as its parent's listing shows it.
async fn listed_as(
    store: &Store,
    key: &str,
) -> (u64, chrono::DateTime<chrono::Utc>, Option<String>) {
    let parent = key.rsplit_once('/').map_or("", |(p, _)| p);
    let all = store.list(Some(parent)).await.unwrap();
    let o = all
        .into_iter()
        .find(|o| o.key == key)
        .unwrap_or_else(|| panic!("{store}: {key} not listed"));
    (o.size, o.last_modified, o.e_tag)
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_store_conforms() {
        super::run_all(&crate::Store::open("memory://", false).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn local_store_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("store");
        super::run_all(&crate::Store::open(url.to_str().unwrap(), true).unwrap()).await;
    }
}
