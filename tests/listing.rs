use crate::support::*;

#[test]
fn an_archive_without_its_manifest_is_not_a_backup() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 4);
    let kept = w.backup(&["--etcd-snapshot-file", "s.db"]);
    let orphan = w.backup(&["--etcd-snapshot-file", "s.db"]);
    std::fs::remove_file(w.manifest(&orphan)).unwrap();
    assert!(w.archive(&orphan).exists());

    let list = w.run(&["list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![kept.split_once('/').unwrap().1]);

    let show = w.run(&["show", &orphan]);
    assert_eq!(show.status.code(), Some(1));
    assert!(
        stderr(&show).contains("not found") && stderr(&show).contains("incomplete upload"),
        "{}",
        stderr(&show)
    );
    let all = w.run(&["verify", "--all"]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert!(!stdout(&all).contains(orphan.split_once('/').unwrap().1));
}

#[test]
fn concurrent_backups_in_the_same_second_get_distinct_ids() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let refs: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| w.backup(&["--etcd-snapshot-file", "s.db"])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = refs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6, "{refs:?}");
    let seconds: std::collections::HashSet<&str> = refs.iter().map(|r| &r[..22]).collect();
    assert!(
        seconds.len() < 6,
        "expected some backups to share a second: {refs:?}"
    );
    let list = w.run(&["list", "--output", "json"]);
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 6);
}

#[test]
fn list_is_newest_first_and_filters_by_cluster() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let a1 = w.backup(&["--etcd-snapshot-file", "s.db"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let a2 = w.backup(&["--etcd-snapshot-file", "s.db"]);
    let out = w.run(&[
        "backup",
        "--cluster",
        "user-a",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "s.db",
    ]);
    assert!(out.status.success());
    let text = stdout(&w.run(&["list", "--cluster", "admin"]));
    let pos1 = text.find(&a1).unwrap();
    let pos2 = text.find(&a2).unwrap();
    assert!(pos2 < pos1, "newest first: {text}");
    assert!(!text.contains("user-a"), "{text}");
}
