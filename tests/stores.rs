//! Stores: the backends conformance suite against a real S3 server (moto), the conditional-
//! create refusal, faults injected into a backup and a read, and a CLI round trip on moto.

use std::sync::Arc;

use cpvault_backends::fault::FaultStore;
use cpvault_backends::{conformance, Store};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs moto_server (pip install 'moto[server]')"]
async fn moto_s3_passes_the_conformance_suite() {
    let m = S3Server::moto();
    conformance::run_all(&m.store("suite/prefix")).await;
}

// A server that ignores If-None-Match must be refused before anything is uploaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_ignoring_conditional_create_is_refused() {
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = Arc::new(FaultStore::new(mem.clone()).ignore_create());
    let checked = Arc::new(cpvault_backends::create_check::CreateCheck::new(faulty));
    let store = Store::from_object_store(checked, "s3://sloppy/server".into());
    let e = store
        .start_upload("admin/x.tar.zst.age")
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("s3://sloppy/server") && e.contains("ignores conditional create"),
        "{e}"
    );
    let e = store
        .put_create("admin/x.manifest.json", "{}".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("refuses to commit"), "{e}");
}

#[test]
#[ignore = "needs moto_server (pip install 'moto[server]')"]
fn cli_round_trip_on_moto() {
    let m = S3Server::moto();
    let store = m.url("backups");
    cli_round_trip(&store, |cwd, args| m.cpvault(cwd, args));
}

fn keys() -> (
    cpvault::crypto::Recipients,
    Arc<cpvault::crypto::Identities>,
    tempfile::TempDir,
) {
    use secrecy_free::*;
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = cpvault::crypto::generate();
    let path = dir.path().join("key.txt");
    std::fs::write(&path, expose(&secret)).unwrap();
    let r = cpvault::crypto::recipients(&[public], &[], None).unwrap();
    let i = cpvault::crypto::identities(&[path], None).unwrap();
    (r, Arc::new(i), dir)
}

mod secrecy_free {
    pub fn expose(s: &age::secrecy::SecretString) -> String {
        use age::secrecy::ExposeSecret;
        s.expose_secret().to_string()
    }
}

async fn backup(
    store: &Store,
    r: &cpvault::crypto::Recipients,
) -> Result<cpvault::archive::manifest::Manifest, String> {
    use cpvault::archive::writer::{BackupMeta, SourceEntry, WriteOptions};
    use cpvault::commit::write_backup;
    // Random, so it does not compress: the archive spans several upload parts.
    let body: Vec<u8> = (0..600_000).map(|_| rand::random::<u8>()).collect();
    let entry = SourceEntry {
        path: "files/data.bin".into(),
        kind: cpvault::archive::manifest::EntryKind::File,
        size: body.len() as u64,
        mode: 0o600,
        mtime: 0,
        open: Box::new(move || {
            Ok(Box::new(std::io::Cursor::new(body)) as Box<dyn std::io::Read + Send>)
        }),
        etcd: None,
        etcd_later: None,
    };
    let meta = BackupMeta {
        kit: None,
        id: format!("20261127T000000Z-{:08x}", rand::random::<u32>()),
        cluster: "admin".into(),
        created: chrono::Utc::now(),
        host: "test".into(),
        tags: Default::default(),
        source: "test".into(),
    };
    let opts = WriteOptions {
        zstd_level: 1,
        zstd_workers: 0,
    };
    write_backup(
        store,
        vec![entry],
        meta,
        r,
        opts,
        indicatif::ProgressBar::hidden(),
        None,
        std::future::pending::<()>(),
    )
    .await
    .map_err(|e| e.to_string())
}

// Every single failed request of a backup fails it, names the store and cause, commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_interrupted_by_store_errors_commits_nothing() {
    let (r, _, _d) = keys();
    let small = cpvault_backends::UploadOptions {
        part_size: 128 * 1024,
        concurrency: 2,
    };
    let counter = Arc::new(FaultStore::new(Arc::new(
        object_store::memory::InMemory::new(),
    )));
    let s = Store::from_object_store(counter.clone(), "memory://count".into())
        .with_upload_options(small);
    backup(&s, &r).await.unwrap();
    let total = counter.requests();
    assert!(total > 4, "{total}");
    for n in 1..=total {
        let mem: Arc<dyn object_store::ObjectStore> =
            Arc::new(object_store::memory::InMemory::new());
        let faulty = Arc::new(FaultStore::new(mem.clone()).fail_request(n));
        let s =
            Store::from_object_store(faulty, "memory://faulty".into()).with_upload_options(small);
        let e = backup(&s, &r)
            .await
            .expect_err(&format!("request {n} failed but the backup succeeded"));
        assert!(
            e.contains("memory://faulty") && e.contains("injected fault"),
            "{e}"
        );
        let plain = Store::from_object_store(mem, "memory://".into());
        let cat = cpvault::catalog::load(&plain, None).await.unwrap();
        assert!(
            cat.backups.is_empty(),
            "request {n}: a backup was committed"
        );
    }
}

// A bit flipped on the way back from the store is caught by verify (the CLI exits 3 on this).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_on_read_fails_verify() {
    let (r, ids, _d) = keys();
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let m = backup(
        &Store::from_object_store(mem.clone(), "memory://".into()),
        &r,
    )
    .await
    .unwrap();
    let flipping = Arc::new(FaultStore::new(mem).flip_bit(".tar.zst.age", 5_000));
    let s = Store::from_object_store(flipping, "memory://flip".into());
    let bar = indicatif::ProgressBar::hidden();
    let rep = cpvault::verify::verify(
        &s,
        &m,
        &cpvault::trust::Authorship::NotChecked { signed: false },
        Some(ids),
        Box::new(cpvault::archive::reader::NullSink),
        bar,
    )
    .await;
    assert!(!rep.ok, "{rep:?}");
    assert!(rep.failures().any(|c| c.name == "ciphertext"), "{rep:?}");
}

// The documented opt-in: on a store that ignores If-None-Match, weak commit mode still
// refuses a key that exists (checked before writing) and lets a new one through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_commit_mode_checks_before_writing_on_a_store_that_ignores_create() {
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let faulty = Arc::new(FaultStore::new(mem.clone()).ignore_create());
    let checked =
        Arc::new(cpvault_backends::create_check::CreateCheck::with_weak_commit(faulty, true));
    let store = Store::from_object_store(checked, "s3://sloppy/server".into());
    store
        .put_create("admin/x.manifest.json", "{\"a\":1}".into())
        .await
        .unwrap();
    let e = store
        .put_create("admin/x.manifest.json", "{\"a\":2}".into())
        .await
        .unwrap_err();
    assert!(
        matches!(e, cpvault_backends::StoreError::AlreadyExists { .. }),
        "{e}"
    );
    assert_eq!(
        &store.get_bytes("admin/x.manifest.json").await.unwrap()[..],
        b"{\"a\":1}"
    );
    // And without the opt-in, the refusal names the variable that opts in.
    let strict = Store::from_object_store(
        Arc::new(
            cpvault_backends::create_check::CreateCheck::with_weak_commit(
                Arc::new(FaultStore::new(mem).ignore_create()),
                false,
            ),
        ),
        "s3://sloppy/server".into(),
    );
    let e = strict
        .put_create("admin/y.manifest.json", "{}".into())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("CPVAULT_STORE_WEAK_COMMIT"), "{e}");
}

// S3 settings from the config file ([store_settings]); the secret stays in the environment.
#[test]
#[ignore = "needs moto_server (pip install 'moto[server]')"]
fn s3_settings_come_from_the_config_file_and_secrets_from_the_environment() {
    let w = World::new();
    let m = S3Server::moto();
    let config = w.path("config.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"s3://{}/from-config\"\n[store_settings]\nAWS_ENDPOINT_URL = \"{}\"\nAWS_REGION = \"us-east-1\"\nAWS_ALLOW_HTTP = \"true\"\nAWS_ACCESS_KEY_ID = \"testing\"\n",
            m.bucket, m.endpoint
        ),
    )
    .unwrap();
    fake_snapshot(&w.path("snap.db"), 10);
    let cfg = config.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut c = cpvault_cmd(w.dir.path());
        c.env("AWS_SECRET_ACCESS_KEY", "testing-secret")
            .arg("--config")
            .arg(cfg)
            .args(args)
            .output()
            .unwrap()
    };
    let b = run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "snap.db",
    ]);
    assert!(b.status.success(), "{}", stderr(&b));
    let list = run(&["list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{}", stderr(&list));

    // A secret in the file is refused, naming the fix.
    std::fs::write(&config, "[store_settings]\nAWS_SECRET_ACCESS_KEY = \"x\"\n").unwrap();
    let refused = run(&["list"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        stderr(&refused).contains("environment"),
        "{}",
        stderr(&refused)
    );
}

// Regression: object_store does not retry a conditional PUT whose connection broke, so one
// reset connection failed the commit. The facade retries, and a retry that finds its own
// bytes already there (the lost response's put did land) counts as committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_response_is_lost_is_retried_and_recognised() {
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let lossy = Arc::new(FaultStore::new(mem.clone()).lose_put_response(".manifest.json", 2));
    let store = Store::from_object_store(lossy, "s3://lossy/server".into());
    store
        .put_create("admin/x.manifest.json", "{\"a\":1}".into())
        .await
        .unwrap();
    assert_eq!(
        &store.get_bytes("admin/x.manifest.json").await.unwrap()[..],
        b"{\"a\":1}"
    );
    // Someone else's object under the same key is still a conflict.
    let e = store
        .put_create("admin/x.manifest.json", "{\"a\":2}".into())
        .await
        .unwrap_err();
    assert!(
        matches!(e, cpvault_backends::StoreError::AlreadyExists { .. }),
        "{e}"
    );
}
