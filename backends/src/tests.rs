
use super::*;

fn bytes_of(s: Small) -> Vec<u8> {
    match s {
        Small::Bytes(b) => b.to_vec(),
        Small::TooLarge(n) => panic!("refused as {n} bytes"),
    }
}

/// A local store's fast path and object_store's stream read the same objects the same
/// way: whole, refused over the limit, absent.
#[tokio::test]
async fn small_reads_agree_between_the_file_path_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let local = Store::open(dir.path().to_str().unwrap(), false).unwrap();
    // The same directory through object_store only (no local fast path).
    let plain = Store::from_object_store(
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap()),
        "plain".into(),
    );
    local
        .put_create("c1/a.manifest.json", Bytes::from_static(b"{\"x\":1}"))
        .await
        .unwrap();
    local
        .put_create("c1/big.manifest.json", Bytes::from(vec![b'x'; 5000]))
        .await
        .unwrap();
    for store in [&local, &plain] {
        assert_eq!(
            bytes_of(store.get_small("c1/a.manifest.json", 100).await.unwrap()),
            b"{\"x\":1}"
        );
        assert!(matches!(
            store.get_small("c1/big.manifest.json", 4096).await.unwrap(),
            Small::TooLarge(5000)
        ));
        assert_eq!(
            bytes_of(store.get_small("c1/big.manifest.json", 5000).await.unwrap()).len(),
            5000
        );
        assert!(matches!(
            store.get_small("c1/none.manifest.json", 100).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    assert!(local.local_file("c1/a.manifest.json").is_some());
    // Keys object_store would encode or refuse go its way, not the file path's.
    for odd in ["c1/../x", "c1/.hidden", "c1/a#1", "c1//a", "", "c1/a b"] {
        assert!(local.local_file(odd).is_none(), "{odd:?}");
    }
    // A directory where a manifest should be is not a manifest.
    std::fs::create_dir(dir.path().join("c1/d.manifest.json")).unwrap();
    assert!(local.get_small("c1/d.manifest.json", 100).await.is_err());
    // Nor is a FIFO, which would block a plain open.
    let fifo = dir.path().join("c1/f.manifest.json");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    assert!(local.get_small("c1/f.manifest.json", 100).await.is_err());
}
