// Reliability figures (issue: hostile store, interruption), each printed as a line the README
// quotes: the corruption matrix (single-bit flips at 1,000 random offsets and truncations at
// 100 lengths of one archive, each verified deeply and without a key) and the crash matrix
// (backup killed with SIGKILL at 200 points of its run, to a local store and to moto; after
// each, everything `list` shows verifies deeply, and prune removes the leftovers).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use cpvault::archive::reader::NullSink;
use cpvault::trust::Authorship;
use cpvault_backends::Store;
use rand::Rng;

use crate::support::*;

fn verify_one(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    m: &cpvault::archive::manifest::Manifest,
    ids: Option<Arc<cpvault::crypto::Identities>>,
) -> bool {
    rt.block_on(cpvault::verify::verify(
        store,
        m,
        &Authorship::NotChecked { signed: false },
        ids,
        Box::new(NullSink),
        indicatif::ProgressBar::hidden(),
    ))
    .ok
}

#[test]
fn corruption_matrix_every_flip_and_truncation_is_detected() {
    let w = World::new();
    make_pki(&w.path("pki"));
    // Incompressible, so the archive spans several of age's 64 KiB chunks.
    random_snapshot(&w, 300_000);
    let r = w.backup(&["--etcd-snapshot-file", "snapshot.db", "--pki-dir", "pki"]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::open(w.store.to_str().unwrap(), false).unwrap();
    let m = rt.block_on(cpvault::catalog::resolve(&store, &r)).unwrap();
    let ids = Arc::new(cpvault::crypto::identities(std::slice::from_ref(&w.key), None).unwrap());
    let archive = w.archive(&r);
    let good = std::fs::read(&archive).unwrap();
    assert!(
        verify_one(&rt, &store, &m, Some(ids.clone())),
        "the intact archive verifies"
    );

    let mut rng = rand::rng();
    let (flips, truncations) = (1000, 100);
    let (mut deep_caught, mut keyless_caught) = (0, 0);
    let started = Instant::now();
    for _ in 0..flips {
        let mut bad = good.clone();
        let at = rng.random_range(0..bad.len());
        bad[at] ^= 1 << rng.random_range(0..8);
        std::fs::write(&archive, &bad).unwrap();
        deep_caught += usize::from(!verify_one(&rt, &store, &m, Some(ids.clone())));
        keyless_caught += usize::from(!verify_one(&rt, &store, &m, None));
    }
    let (mut deep_cut, mut keyless_cut) = (0, 0);
    for i in 0..truncations {
        // Spread over the whole archive, the first and last bytes included.
        let len = (good.len() - 1) * i / (truncations - 1);
        std::fs::write(&archive, &good[..len]).unwrap();
        deep_cut += usize::from(!verify_one(&rt, &store, &m, Some(ids.clone())));
        keyless_cut += usize::from(!verify_one(&rt, &store, &m, None));
    }
    std::fs::write(&archive, &good).unwrap();
    eprintln!(
        "corruption matrix: {} B archive; bit flips at {flips} random offsets: deep verify caught {deep_caught}, keyless {keyless_caught}; truncations at {truncations} lengths: deep caught {deep_cut}, keyless {keyless_cut} ({:.1}s)",
        good.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!((deep_caught, keyless_caught), (flips, flips));
    assert_eq!((deep_cut, keyless_cut), (truncations, truncations));
}

/// Kills `cpvault backup` with SIGKILL after each of `points` delays spread over a full
/// backup's duration, then checks that every listed backup verifies deeply. Returns how many
/// backups committed.
fn crash_matrix(w: &World, points: usize, run: &dyn Fn(&[&str]) -> Command, store: &str) -> usize {
    let backup_args = [
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "snapshot.db",
        "--pki-dir",
        "pki",
        "--store",
        store,
    ];
    // One full backup to time the run.
    let t = Instant::now();
    let out = run(&backup_args).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let full = t.elapsed();
    for i in 0..points {
        let delay = full.mul_f64(1.1 * i as f64 / points as f64);
        let mut child = run(&backup_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
    }
    let listed = run(&["list", "--store", store, "--output", "json"])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).unwrap();
    let verify = run(&[
        "verify",
        "--all",
        "--store",
        store,
        "-i",
        w.key.to_str().unwrap(),
    ])
    .output()
    .unwrap();
    assert!(
        verify.status.success(),
        "a listed backup fails deep verify after a crash:\n{}",
        stdout(&verify)
    );
    listed.len()
}

#[test]
fn crash_matrix_local_store_lists_only_whole_backups_and_prune_cleans_up() {
    let w = World::new();
    make_pki(&w.path("pki"));
    random_snapshot(&w, 6_000_000);
    let store = w.store.to_str().unwrap().to_string();
    let cwd = w.dir.path().to_path_buf();
    let run = |args: &[&str]| {
        let mut c = cpvault_cmd(&cwd);
        c.args(args);
        c
    };
    let started = Instant::now();
    let committed = crash_matrix(&w, 200, &run, &store);
    // Leftovers of killed uploads, aged past the grace period, are all that prune removes.
    let all_files = || -> Vec<std::path::PathBuf> {
        let mut v = vec![];
        for e in std::fs::read_dir(w.store.join("admin")).unwrap().flatten() {
            v.push(e.path());
        }
        v
    };
    let before = all_files().len();
    for f in all_files() {
        let st = Command::new("touch")
            .args(["-d", "3 days ago"])
            .arg(&f)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let out = run(&["prune", "--store", &store, "--keep-last", "1000"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // What is left is exactly the committed backups, a manifest and an archive each, and
    // the cluster's listing cache, which prune leaves alone.
    let (cache, after): (Vec<_>, Vec<_>) = all_files()
        .into_iter()
        .partition(|f| f.ends_with("listing-cache.json.zst"));
    assert_eq!(cache.len(), 1, "{cache:?}");
    assert_eq!(after.len(), 2 * committed, "{after:?}");
    for f in &after {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.ends_with(".manifest.json") || name.ends_with(".tar.zst.age"),
            "{name}"
        );
    }
    eprintln!(
        "crash matrix (local store): 200 SIGKILLs spread over the backup; {committed} backups committed and every one verifies deeply; prune removed {} leftovers ({:.0}s)",
        before - after.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
#[ignore = "needs moto (pip install 'moto[server]'); CI runs it"]
fn crash_matrix_on_moto_lists_only_whole_backups() {
    let moto = S3Server::moto();
    let w = World::new();
    make_pki(&w.path("pki"));
    random_snapshot(&w, 6_000_000);
    let url = moto.url("crash");
    let cwd = w.dir.path().to_path_buf();
    let env = moto.env();
    let run = |args: &[&str]| {
        let mut c = cpvault_cmd(&cwd);
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c.args(args);
        c
    };
    let started = Instant::now();
    let committed = crash_matrix(&w, 200, &run, &url);
    let out = run(&[
        "prune",
        "--store",
        &url,
        "--keep-last",
        "1000",
        "--dry-run",
        "--output",
        "json",
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let young = plan["young_orphans"].as_array().map_or(0, Vec::len);
    eprintln!(
        "crash matrix (moto S3): 200 SIGKILLs spread over the backup; {committed} backups committed and every one verifies deeply; {young} leftover objects reported for prune after the grace period ({:.0}s)",
        started.elapsed().as_secs_f64()
    );
}

/// Random (incompressible) pages with etcd's sha256 trailer, so the backup takes a while.
fn random_snapshot(w: &World, bytes: usize) {
    use sha2::Digest;
    let mut data: Vec<u8> = (0..bytes / 4096 * 4096)
        .map(|_| rand::random::<u8>())
        .collect();
    let h = sha2::Sha256::digest(&data);
    data.extend_from_slice(&h);
    std::fs::write(w.path("snapshot.db"), data).unwrap();
}
