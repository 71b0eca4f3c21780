use std::process::Command;

use crate::support::*;

fn backups(w: &World, n: usize) -> Vec<String> {
    fake_snapshot(&w.path("s.db"), 2);
    (0..n)
        .map(|_| w.backup(&["--etcd-snapshot-file", "s.db"]))
        .collect()
}

fn listed(w: &World) -> Vec<String> {
    listed_refs(&w.run(&["list", "--output", "json"]))
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn keep_last_removes_the_rest_manifest_and_archive_and_dry_run_changes_nothing() {
    let w = World::new();
    let refs = backups(&w, 4);
    let before = files_under(&w.store);
    let dry = w.run(&["prune", "--keep-last", "2", "--dry-run", "--output", "json"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(plan["keep"].as_array().unwrap().len(), 2);
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    assert_eq!(plan["keep"][0]["reasons"][0], "last snapshot");
    assert_eq!(files_under(&w.store), before, "dry run removed something");

    let run = w.run(&["prune", "--keep-last", "2"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let mut expect = refs[2..].to_vec();
    expect.reverse();
    assert_eq!(listed(&w), expect);
    for r in &refs[..2] {
        assert!(
            !w.archive(r).exists() && !w.manifest(r).exists(),
            "{r} left behind"
        );
    }
}

#[test]
fn an_empty_policy_removes_nothing_and_says_so() {
    let w = World::new();
    backups(&w, 3);
    let out = w.run(&["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no retention rule given"),
        "{}",
        stdout(&out)
    );
    assert_eq!(listed(&w).len(), 3);
}

#[test]
fn the_newest_backup_survives_a_policy_that_matches_nothing() {
    let w = World::new();
    let refs = backups(&w, 3);
    let out = w.run(&["prune", "--keep-tag", "no-such-tag"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(listed(&w), vec![refs[2].clone()]);
}

#[test]
fn prune_interrupted_between_manifest_and_archive_leaves_an_orphan_the_next_prune_removes() {
    // The state a prune killed right after deleting a manifest leaves behind.
    let w = World::new();
    let refs = backups(&w, 2);
    std::fs::remove_file(w.manifest(&refs[0])).unwrap();
    assert_eq!(
        listed(&w),
        vec![refs[1].clone()],
        "a backup without its manifest is never listed"
    );

    // Within the grace period the orphan may be an upload in progress: left alone.
    let out = w.run(&["prune", "--keep-last", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(w.archive(&refs[0]).exists());
    assert!(
        stdout(&out).contains("younger than the grace period"),
        "{}",
        stdout(&out)
    );

    // Once older than the grace period it goes.
    let st = Command::new("touch")
        .args(["-d", "2 days ago", w.archive(&refs[0]).to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = w.run(&["prune", "--keep-last", "5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !w.archive(&refs[0]).exists(),
        "orphan not removed: {}",
        stdout(&out)
    );
    assert_eq!(listed(&w), vec![refs[1].clone()]);
    // Every listed backup still has its archive.
    assert!(w.archive(&refs[1]).exists());
}

#[test]
fn a_manifest_without_its_archive_is_reported_and_removed_only_on_request() {
    let w = World::new();
    let refs = backups(&w, 2);
    std::fs::remove_file(w.archive(&refs[0])).unwrap();
    let out = w.run(&["prune", "--keep-last", "5"]);
    assert!(
        stdout(&out).contains("archive is missing"),
        "{}",
        stdout(&out)
    );
    assert!(w.manifest(&refs[0]).exists());
    let out = w.run(&["prune", "--keep-last", "5", "--remove-broken"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!w.manifest(&refs[0]).exists());
}

#[test]
fn retention_from_the_config_file_per_cluster() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    for cluster in ["admin", "admin", "admin", "user-1", "user-1", "user-1"] {
        let out = w.run(&[
            "backup",
            "--cluster",
            cluster,
            "-r",
            &w.recipient,
            "--etcd-snapshot-file",
            "s.db",
        ]);
        assert!(out.status.success());
    }
    let cfg = w.path("c.toml");
    std::fs::write(
        &cfg,
        "[retention]\nkeep_last = 2\n[clusters.user-1.retention]\nkeep_last = 1\n",
    )
    .unwrap();
    let out = w.run(&["--config", cfg.to_str().unwrap(), "prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let l = listed(&w);
    assert_eq!(
        l.iter().filter(|r| r.starts_with("admin/")).count(),
        2,
        "{l:?}"
    );
    assert_eq!(
        l.iter().filter(|r| r.starts_with("user-1/")).count(),
        1,
        "{l:?}"
    );
}

#[test]
fn a_bad_policy_is_a_usage_error() {
    let w = World::new();
    backups(&w, 1);
    let out = w.run(&["prune", "--keep-daily", "-5"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = w.run(&["prune", "--keep-within", "7x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = w.run(&["prune", "--keep-last", "1", "--timezone", "Mars/Olympus"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
#[ignore = "needs moto (pip install 'moto[server]'); CI runs it"]
fn prune_on_moto_s3_removes_manifest_and_archive_and_keeps_the_rest() {
    let m = S3Server::moto();
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let store = m.url("prune");
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--store", &store]);
        m.cpvault(w.dir.path(), &a)
    };
    let refs: Vec<String> = (0..3)
        .map(|_| {
            let b = run(&[
                "backup",
                "--cluster",
                "admin",
                "-r",
                &w.recipient,
                "--etcd-snapshot-file",
                "s.db",
            ]);
            assert!(b.status.success(), "{}", stderr(&b));
            stdout(&b).trim().to_string()
        })
        .collect();
    let p = run(&["prune", "--keep-last", "1", "--output", "json"]);
    assert!(p.status.success(), "{}", stderr(&p));
    let plan: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert_eq!(plan["remove"].as_array().unwrap().len(), 2);
    let l = run(&["list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![refs[2].split_once('/').unwrap().1]);
    // The removed backups left no archive behind: a second prune finds no orphan either.
    let again = run(&[
        "prune",
        "--keep-last",
        "1",
        "--grace-hours",
        "1",
        "--output",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        plan["remove_orphans"].as_array().unwrap().len()
            + plan["young_orphans"].as_array().unwrap().len(),
        0,
        "{plan}"
    );
    let v = run(&["verify", "--all", "-i", w.key.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stdout(&v));
}

// A backup killed midway (SIGKILL) leaves object_store's `<key>#<n>` staging file in a local
// store, which object_store's listing hides: prune removes it after the grace period, and
// leaves a young one alone (an upload may be running).
#[test]
fn prune_removes_staging_files_of_killed_uploads_after_the_grace_period() {
    let w = World::new();
    backups(&w, 1);
    let dir = w.store.join("admin");
    let old = dir.join("20200101T000000Z-deadbeef.tar.zst.age#3");
    let young = dir.join("20200102T000000Z-cafef00d.tar.zst.age#1");
    std::fs::write(&old, vec![7u8; 4096]).unwrap();
    std::fs::write(&young, vec![7u8; 4096]).unwrap();
    let st = Command::new("touch")
        .args(["-d", "3 days ago", old.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let dry = w.run(&["prune", "--keep-last", "1", "--dry-run", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(
        v["remove_orphans"][0]["key"], "admin/20200101T000000Z-deadbeef.tar.zst.age#3",
        "{v:#}"
    );
    assert_eq!(
        v["young_orphans"][0]["key"],
        "admin/20200102T000000Z-cafef00d.tar.zst.age#1"
    );
    assert!(old.exists(), "dry run removed something");
    let out = w.run(&["prune", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!old.exists(), "the stale staging file is still there");
    assert!(young.exists(), "a young staging file was removed");
    assert_eq!(listed(&w).len(), 1);
}

// prune deleted any file with '#' in its name anywhere under a local store's root.
#[test]
fn files_that_are_not_our_staging_files_survive_prune_whatever_their_name() {
    let w = World::new();
    backups(&w, 1);
    let mut others = vec![];
    for rel in ["notes#v2.md", "team-notes/runbook#v2.md", "admin/notes#2"] {
        let p = w.store.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"not cpvault's").unwrap();
        let st = Command::new("touch")
            .args(["-d", "3 days ago", p.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        others.push(p);
    }
    let out = w.run(&["prune", "--keep-last", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for p in &others {
        assert!(p.exists(), "prune removed {}", p.display());
    }
}
