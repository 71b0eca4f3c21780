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

/// Fills `w`'s store with `clusters` × `per_cluster` backups copied from `genuine` (each
/// with its own id, time and archive object, a hard link to the genuine archive): what a
/// fleet's store looks like to a listing, which reads manifests and only names archives.
fn fabricate(w: &World, genuine: &str, clusters: usize, per_cluster: usize) -> Vec<String> {
    let outer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(genuine)).unwrap()).unwrap();
    let archive = w.archive(genuine);
    let base: chrono::DateTime<chrono::Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
    let mut refs = vec![];
    for c in 0..clusters {
        let cluster = format!("fleet-{c:02}");
        std::fs::create_dir_all(w.store.join(&cluster)).unwrap();
        for i in 0..per_cluster {
            let created = base + chrono::TimeDelta::minutes((i * clusters + c) as i64);
            let id = format!("{}-{:08x}", created.format("%Y%m%dT%H%M%SZ"), i * 7919 + c);
            let reference = format!("{cluster}/{id}");
            let mut m = outer.clone();
            m["cluster"] = cluster.clone().into();
            m["id"] = id.clone().into();
            m["created"] = created.to_rfc3339().into();
            m["completed"] = created.to_rfc3339().into();
            m["archive"]["key"] = format!("{reference}.tar.zst.age").into();
            std::fs::write(w.manifest(&reference), serde_json::to_vec(&m).unwrap()).unwrap();
            std::fs::hard_link(&archive, w.archive(&reference)).unwrap();
            refs.push(reference);
        }
    }
    refs
}

#[test]
fn ten_thousand_backups_list_correctly_and_leftovers_are_classified_as_before() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 1);
    let genuine = w.backup(&["--etcd-snapshot-file", "s.db"]);
    let mut refs = fabricate(&w, &genuine, 10, 1000);
    refs.push(genuine.clone());
    // An archive without its manifest (an upload that never committed) and a manifest without
    // its archive (a broken backup), among them.
    let orphan = refs.remove(123);
    std::fs::remove_file(w.manifest(&orphan)).unwrap();
    let broken = refs[4567].clone();
    std::fs::remove_file(w.archive(&broken)).unwrap();

    let list = || listed_refs(&w.run(&["list", "--output", "json"]));
    let listed = list();
    assert_eq!(listed.len(), 10_000);
    let mut want = refs.clone();
    let created = |r: &str| r.split_once('/').unwrap().1.to_string();
    want.sort_by_key(|r| std::cmp::Reverse((created(r), r.clone())));
    assert_eq!(listed, want, "not every backup, newest first");

    // One cluster's listing holds that cluster's backups only.
    let one = w.run(&["list", "--cluster", "fleet-03", "--output", "json"]);
    let one: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1000);

    // What the catalog makes of the leftovers, as prune and verify --all see it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = cpvault_backends::Store::open(w.store.to_str().unwrap(), false).unwrap();
    let cat = rt.block_on(cpvault::catalog::load(&store, None)).unwrap();
    assert_eq!(cat.backups.len(), 10_000);
    assert_eq!(cat.broken, vec![broken.clone()]);
    let incomplete: Vec<&str> = cat.incomplete.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(incomplete, vec![format!("{orphan}.tar.zst.age")]);
    assert!(cat.unreadable.is_empty(), "{:?}", cat.unreadable);

    // With every cluster's listing cache written, the same listing and the same leftovers;
    // a manifest rewritten after its cluster's cache is read from the store, not the cache.
    let cached: usize = (0..10)
        .map(|c| format!("fleet-{c:02}"))
        .chain(["admin".into()])
        .map(|c| {
            rt.block_on(cpvault::catalog::cache::refresh(&store, &c))
                .unwrap()
        })
        .sum();
    assert_eq!(cached, 10_000, "every manifest cached");
    let edited = refs[42].clone();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&edited)).unwrap()).unwrap();
    m["cluster"] = "elsewhere".into();
    std::fs::write(w.manifest(&edited), serde_json::to_vec(&m).unwrap()).unwrap();
    let cat = rt
        .block_on(cpvault::catalog::load_cached(&store, None, None))
        .unwrap();
    assert_eq!(cat.backups.len(), 9_999);
    assert_eq!(cat.broken, vec![broken]);
    let incomplete: Vec<&str> = cat.incomplete.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(incomplete, vec![format!("{orphan}.tar.zst.age")]);
    let unreadable: Vec<&str> = cat.unreadable.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(unreadable, vec![format!("{edited}.manifest.json")]);
    want.retain(|r| *r != edited);
    assert_eq!(
        list(),
        want,
        "not every backup but the edited one, newest first"
    );
}

// Broke: `show` printed an `etcd:` line twice, once with "trailer present" and once with
// "trailer verified".
#[test]
fn show_describes_the_snapshot_once() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let reference = w.backup(&["--etcd-snapshot-file", "s.db"]);
    let shown = w.run(&["show", &reference]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = stdout(&shown);
    let etcd: Vec<&str> = text.lines().filter(|l| l.starts_with("etcd:")).collect();
    assert_eq!(etcd.len(), 1, "{text}");
    assert!(etcd[0].contains("etcd/snapshot.db"), "{text}");
}
