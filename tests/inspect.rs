//! Looking inside backups (design §11) against a real etcd: a known set of keys across
//! resources and namespaces (JSON values, protobuf envelopes, values over a page, enough
//! keys for a multi-level tree), then deletes, updates and puts with a compaction between.
//! The snapshot reader's live set must equal what etcd serves at the snapshot's revision;
//! `inspect`, `diff` and `get` on stored backups must agree with the keys written; a
//! corrupt snapshot inside a sound archive exits 3.

mod cluster;

use std::collections::BTreeMap;
use std::path::Path;

use cpvault::inspect::mvcc::{Snapshot, Wants};
use sha2::{Digest, Sha256};

use crate::support::*;
use cluster::*;

fn read(path: &Path) -> Snapshot {
    cpvault::inspect::read_snapshot(
        || std::fs::File::open(path),
        Wants {
            digests: true,
            values: Some(Box::new(|_| true)),
        },
    )
    .unwrap()
}

/// The reader's answer equals etcd's own, key by key.
fn assert_same_as_served(snap: &Snapshot, served: &Served, rev: i64) {
    assert_eq!(snap.revision, rev, "revision");
    assert_eq!(snap.keys.len(), served.len(), "live key count");
    let values: BTreeMap<&[u8], &[u8]> = snap
        .values
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    for (k, r) in &snap.keys {
        let (v, m, c, ver) = served
            .get(k)
            .unwrap_or_else(|| panic!("{} is not served", String::from_utf8_lossy(k)));
        assert_eq!(
            (r.revision.main, r.create_revision, r.version),
            (*m, *c, *ver),
            "{}",
            String::from_utf8_lossy(k)
        );
        assert_eq!(
            values[k.as_slice()],
            v.as_slice(),
            "{}",
            String::from_utf8_lossy(k)
        );
    }
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn the_reader_sees_exactly_what_etcd_serves_before_and_after_a_compaction() {
    let w = World::new();
    let mut c = Cluster::start();
    first_state(&mut c);
    let (served_a, rev_a) = c.served();
    c.etcd.snapshot(&w.path("a.db"));
    let compacted = c.compact_now();
    second_state(&mut c);
    let (served_b, rev_b) = c.served();
    c.etcd.snapshot(&w.path("b.db"));

    let a = read(&w.path("a.db"));
    assert_same_as_served(&a, &served_a, rev_a);
    assert_eq!(a.compacted, None);
    assert!(
        a.records > a.keys.len() as u64,
        "history and tombstones are kept before compaction"
    );
    let b = read(&w.path("b.db"));
    assert_same_as_served(&b, &served_b, rev_b);
    assert_eq!(b.compacted, Some(compacted));
    let model: Vec<&[u8]> = c.model.keys().map(|k| k.as_bytes()).collect();
    let live: Vec<&[u8]> = b.keys.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(live, model);
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn a_compaction_that_removed_every_record_after_it_still_gives_etcds_revision() {
    let w = World::new();
    let mut c = Cluster::start();
    c.put(
        "/registry/configmaps/default/a",
        configmap("default", "a", "1"),
    );
    c.delete_prefix("/registry/configmaps/default/a");
    let compacted = c.compact_now();
    c.etcd.snapshot(&w.path("s.db"));
    let s = read(&w.path("s.db"));
    assert!(s.keys.is_empty());
    assert_eq!((s.revision, s.compacted), (compacted, Some(compacted)));
    let restored = restore_snapshot(&w.path("s.db"), &w.path("restored"));
    let o = restored.ctl(&["get", "x", "-w", "json"]);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j["header"]["revision"], compacted,
        "etcd's own revision after restore"
    );
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn inspect_diff_and_get_answer_from_stored_backups() {
    let w = World::new();
    make_pki(&w.path("pki"));
    let mut c = Cluster::start();
    first_state(&mut c);
    let before = c.model.clone();
    c.etcd.snapshot(&w.path("a.db"));
    let a = w.backup(&["--etcd-snapshot-file", "a.db", "--pki-dir", "pki"]);
    c.compact_now();
    second_state(&mut c);
    c.etcd.snapshot(&w.path("b.db"));
    let b = w.backup(&["--etcd-snapshot-file", "b.db", "--pki-dir", "pki"]);
    let key = w.key.to_str().unwrap();

    // inspect: the counts per resource and namespace are those of the keys a restored
    // copy serves.
    let restored = restore_snapshot(&w.path("b.db"), &w.path("restored"));
    let o = restored.ctl(&["get", "", "--prefix", "--keys-only"]);
    let served: Vec<String> = stdout(&o)
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(served, c.model.keys().cloned().collect::<Vec<_>>());
    let s = json(&w.run(&["inspect", &b, "-i", key, "--output", "json"]));
    assert_eq!(s["keys"], served.len());
    let resources: BTreeMap<String, &serde_json::Value> = s["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["resource"].as_str().unwrap().to_string(), r))
        .collect();
    let count = |p: &str| served.iter().filter(|k| k.starts_with(p)).count();
    for (resource, ns, prefix) in [
        ("configmaps", "default", "/registry/configmaps/default/"),
        ("configmaps", "team-a", "/registry/configmaps/team-a/"),
        ("secrets", "team-a", "/registry/secrets/team-a/"),
        (
            "certificates.cert-manager.io",
            "default",
            "/registry/cert-manager.io/certificates/default/",
        ),
        ("pods", "team-a", "/registry/pods/team-a/"),
    ] {
        assert_eq!(
            resources[resource]["namespaces"][ns]["keys"],
            count(prefix),
            "{resource} {ns}"
        );
    }
    assert!(
        resources["secrets"]["namespaces"].get("team-b").is_none(),
        "team-b was deleted"
    );
    assert_eq!(resources["minions"]["keys"], 5);
    assert_eq!(resources["minions"]["namespaces"], serde_json::json!({}));
    assert_eq!(resources["clusterroles"]["keys"], 1);
    assert_eq!(resources["(other)"]["keys"], 1, "compact_rev_key");
    assert_eq!(s["cluster_scoped"]["keys"], 6);
    let text = w.run(&["inspect", &b, "-i", key]);
    assert!(stdout(&text).contains("configmaps"), "{}", stdout(&text));

    // diff: exactly the keys that changed, each once.
    let d = json(&w.run(&["diff", &a, &b, "-i", key, "--output", "json"]));
    let mut want: Vec<(String, &str)> = vec![];
    for (k, v) in &before {
        match c.model.get(k) {
            None => want.push((k.clone(), "removed")),
            Some(nv) if nv != v => want.push((k.clone(), "changed")),
            Some(_) => {}
        }
    }
    for k in c.model.keys().filter(|k| !before.contains_key(*k)) {
        want.push((k.clone(), "added"));
    }
    want.sort();
    let got: Vec<(String, &str)> = d["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_string(),
                k["change"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(d["groups"]["secrets"]["team-b"]["removed"], 120);
    let text = stdout(&w.run(&["diff", &a, &b, "-i", key]));
    assert!(text.contains("+ /registry/clusterroles/admin"), "{text}");
    assert!(
        text.contains("- /registry/cert-manager.io/certificates/team-b/web"),
        "{text}"
    );
    assert!(
        text.contains("more (--output json lists every key)"),
        "{text}"
    );
    let narrowed = json(&w.run(&[
        "diff",
        &a,
        &b,
        "-i",
        key,
        "--prefix",
        "/registry/pods/",
        "--output",
        "json",
    ]));
    assert_eq!(narrowed["keys"].as_array().unwrap().len(), 1, "{narrowed}");
    // Backups of two clusters are not compared unless asked for.
    let other = format!("other-cluster/{}", b.split_once('/').unwrap().1);
    let o = w.run(&["diff", &a, &other, "-i", key]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--across-clusters"), "{}", stderr(&o));
    let o = w.run(&["diff", &a, &other, "-i", key, "--across-clusters"]);
    assert_ne!(o.status.code(), Some(2), "{}", stderr(&o));

    // get: JSON byte for byte; protobuf named by kind and handed over raw.
    let cm = "/registry/configmaps/default/cm-100";
    let o = w.run(&["get", &b, cm, "-i", key]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        o.stdout.strip_suffix(b"\n").unwrap(),
        c.model[cm].as_slice()
    );
    let o = w.run(&["get", &b, cm, "-i", key, "--clean", "--output", "json"]);
    let meta = &json(&o)["keys"][0]["value"]["metadata"];
    assert!(
        meta.get("uid").is_none() && meta.get("resourceVersion").is_none(),
        "{meta}"
    );
    assert_eq!(meta["name"], "cm-100");
    let secret = "/registry/secrets/team-a/s-007";
    let o = w.run(&["get", &b, secret, "-i", key, "--format", "raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, c.model[secret]);
    // A protobuf Secret comes back as the JSON it was built from, ready to apply.
    let o = json(&w.run(&["get", &b, secret, "-i", key]));
    assert_eq!(o, secret_json("team-a", "s-007", 7));
    let o = json(&w.run(&["get", &b, secret, "-i", key, "--clean"]));
    let mut want = secret_json("team-a", "s-007", 7);
    want["metadata"].as_object_mut().unwrap().remove("uid");
    assert_eq!(o, want);
    // Every built-in kind decodes: a Deployment as k8s-pb encoded it.
    let dep = "/registry/deployments/shop/web";
    let o = w.run(&["get", &b, dep, "-i", key]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o), deployment().1);
    let o = w.run(&["get", &b, dep, "-i", key, "--format", "yaml"]);
    assert!(stdout(&o).contains("maxSurge: 25%"), "{}", stdout(&o));
    // Fields unknown to the schema table are left out, told once for all keys (and not
    // under --quiet).
    let future = [
        "get",
        &b,
        "--prefix",
        "/registry/secrets/future/",
        "-i",
        key,
    ];
    let o = w.run(&future);
    assert!(o.status.success(), "{}", stderr(&o));
    let warnings: Vec<&str> = std::str::from_utf8(&o.stderr)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{}", stderr(&o));
    assert!(
        warnings[0].contains("2 keys had fields unknown")
            && warnings[0].contains("/registry/secrets/future/s-0"),
        "{}",
        warnings[0]
    );
    assert!(stdout(&o).contains("\"name\": \"s-1\""), "{}", stdout(&o));
    let o = w.run(&[&future[..], &["-q"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning:"), "{}", stderr(&o));
    assert!(stdout(&o).contains("\"name\": \"s-1\""), "{}", stdout(&o));
    // A value that does not decode is named, and refused as JSON.
    let o = w.run(&["get", &b, "/registry/pods/team-a/p", "-i", key]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("v1 Pod"), "{}", stderr(&o));
    let all = json(&w.run(&[
        "get",
        &b,
        "--prefix",
        "/registry/secrets/team-a/",
        "-i",
        key,
        "--output",
        "json",
    ]));
    assert_eq!(all["keys"].as_array().unwrap().len(), 120);
    assert_eq!(all["keys"][0]["value"], secret_json("team-a", "s-000", 0));
    assert_eq!(all["keys"][0]["encoding"], "protobuf");
    let o = w.run(&["get", &b, "/registry/secrets/team-b/s-001", "-i", key]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a deleted key is not served: {}",
        stdout(&o)
    );
    let o = w.run(&[
        "get",
        &a,
        "/registry/secrets/team-b/s-001",
        "-i",
        key,
        "--format",
        "raw",
    ]);
    assert_eq!(
        o.stdout, before["/registry/secrets/team-b/s-001"],
        "the older backup still has it"
    );
}

/// `snapshot` with its trailer recomputed, so the archive verifies and only the reader can
/// tell.
fn with_trailer(mut db: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&db);
    db.extend_from_slice(&sum);
    db
}

#[test]
#[ignore = "needs etcd and etcdctl (apt-get install etcd-server etcd-client); CI runs it"]
fn a_corrupt_page_tree_in_a_sound_archive_exits_3_without_a_panic() {
    let w = World::new();
    make_pki(&w.path("pki"));
    let mut c = Cluster::start();
    first_state(&mut c);
    c.etcd.snapshot(&w.path("good.db"));
    let good = std::fs::read(w.path("good.db")).unwrap();
    let db = &good[..good.len() - 32];
    let page = 4096;
    let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![];
    cases.push((
        "truncated",
        with_trailer(db[..db.len() / 2 / page * page].to_vec()),
        "truncated",
    ));
    let mut no_meta = db.to_vec();
    no_meta[16..2 * page].fill(0);
    cases.push(("no-meta", with_trailer(no_meta), "not a bbolt database"));
    // Every data page's id field overwritten: the tree's pages are not where it says.
    let mut ids = db.to_vec();
    for p in 2..db.len() / page {
        ids[p * page..p * page + 8].copy_from_slice(&7u64.to_le_bytes());
    }
    cases.push(("ids", with_trailer(ids), "page tree is corrupt"));
    for (name, bytes, why) in cases {
        let file = format!("{name}.db");
        std::fs::write(w.path(&file), bytes).unwrap();
        let r = w.backup(&["--etcd-snapshot-file", &file, "--pki-dir", "pki"]);
        let o = w.run(&["inspect", &r, "-i", w.key.to_str().unwrap()]);
        assert_no_panic(&o);
        assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "{name}: {}", stderr(&o));
    }
}

/// A small real etcd 3.4 snapshot (also the fuzz seed): 150 puts of
/// /registry/configmaps/ns<i%3>/cm-<i>, cm-1 deleted, /registry/minions/n1 put.
const SEED: &[u8] = include_bytes!("../fuzz/seeds/bbolt/etcd-small.db");

#[test]
fn the_checked_in_snapshot_reads_as_etcd_served_it() {
    let s = cpvault::inspect::read_snapshot(|| Ok(SEED), Wants::default()).unwrap();
    assert_eq!(s.revision, 153);
    assert_eq!(s.keys.len(), 150);
    assert!(s
        .keys
        .iter()
        .all(|(k, _)| k.as_slice() != b"/registry/configmaps/ns1/cm-1"));
    assert!(s
        .keys
        .iter()
        .any(|(k, _)| k.as_slice() == b"/registry/minions/n1"));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    // Flips land in page headers and element tables, where the tree lives.
    #[test]
    fn the_reader_on_a_mutated_snapshot_never_panics(
        flips in proptest::collection::vec((0usize..12, 0usize..256, proptest::prelude::any::<u8>()), 1..6),
        cut in proptest::prelude::any::<proptest::sample::Index>(),
        truncate in proptest::prelude::any::<bool>(),
    ) {
        let mut db = SEED.to_vec();
        for (page, at, byte) in flips {
            db[page * 4096 + at] = byte;
        }
        if truncate {
            db.truncate(cut.index(db.len()));
        }
        let wants = Wants { digests: true, values: Some(Box::new(|_: &[u8]| true)) };
        if let Err(e) = cpvault::inspect::read_snapshot(|| Ok(&db[..]), wants) {
            proptest::prop_assert!(e.to_string().len() < 4096);
        }
    }
}

#[test]
fn a_backup_of_a_snapshot_file_records_its_revision_and_live_keys() {
    let w = World::new();
    make_pki(&w.path("pki"));
    std::fs::write(w.path("s.db"), SEED).unwrap();
    let r = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "pki"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&r)).unwrap()).unwrap();
    assert_eq!(
        (m["etcd"]["revision"].clone(), m["etcd"]["keys"].clone()),
        (153.into(), 150.into())
    );
    // A file the reader cannot read is still backed up, without the facts.
    fake_snapshot(&w.path("fake.db"), 4);
    let r = w.backup(&["--etcd-snapshot-file", "fake.db", "--pki-dir", "pki"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&r)).unwrap()).unwrap();
    assert!(m["etcd"].get("revision").is_none(), "{m}");
}

#[test]
fn inspect_diff_and_get_refuse_untrusted_or_damaged_backups_like_extract() {
    let w = World::new();
    make_pki(&w.path("pki"));
    std::fs::write(w.path("s.db"), SEED).unwrap();
    let key = w.path("signing.key");
    let out = cpvault_in(
        w.dir.path(),
        &["keygen", "--signing", "-o", key.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        w.path("allowed"),
        format!("backup@admin {}\n", stdout(&out).trim()),
    )
    .unwrap();
    let signed = w.backup(&[
        "--etcd-snapshot-file",
        "s.db",
        "--pki-dir",
        "pki",
        "--signing-key",
        key.to_str().unwrap(),
    ]);
    let unsigned = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "pki"]);
    let id = w.key.to_str().unwrap();
    let allowed = w.path("allowed");
    let trust = ["--allowed-signers", allowed.to_str().unwrap()];

    let ok = json(
        &w.run(
            &[
                &["inspect", &signed, "-i", id, "--output", "json"][..],
                &trust[..],
            ]
            .concat(),
        ),
    );
    assert_eq!(ok["keys"], 150);
    for args in [
        vec!["inspect", &unsigned, "-i", id],
        vec!["get", &unsigned, "/registry/minions/n1", "-i", id],
        vec!["diff", &signed, &unsigned, "-i", id],
    ] {
        let o = w.run(&[&args[..], &trust[..]].concat());
        assert_eq!(o.status.code(), Some(3), "{args:?}: {}", stderr(&o));
        assert!(
            stdout(&o).is_empty(),
            "nothing from an untrusted backup: {}",
            stdout(&o)
        );
        assert!(stderr(&o).contains("signature"), "{}", stderr(&o));
    }
    // A flipped ciphertext byte: the archive fails verification, nothing is printed.
    let archive = w.archive(&unsigned);
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&archive, bytes).unwrap();
    let o = w.run(&["get", &unsigned, "/registry/minions/n1", "-i", id]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stdout(&o).is_empty(), "{}", stdout(&o));
    // No key: a usage error.
    let o = w.run(&["inspect", &signed]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `get`'s field table is what the checked-in generator makes from the k8s-pb and k8s-openapi
/// sources cargo fetched for this build (so a bump of either crate cannot leave it stale).
#[test]
#[ignore = "needs python3 and cargo's registry sources of k8s-pb and k8s-openapi; CI runs it"]
fn the_schema_table_is_what_its_generator_makes_from_k8s_pb_and_k8s_openapi() {
    require("python3", "python3");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let o = std::process::Command::new("python3")
        .arg(root.join("scripts/gen-k8s-schema.py"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let checked_in = std::fs::read_to_string(root.join("src/inspect/k8s_schema.txt")).unwrap();
    assert!(
        o.stdout == checked_in.as_bytes(),
        "src/inspect/k8s_schema.txt is stale: run python3 scripts/gen-k8s-schema.py > src/inspect/k8s_schema.txt"
    );
}
