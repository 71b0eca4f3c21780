use super::*;

#[test]
fn a_journal_left_on_the_node_is_an_unfinished_restore() {
    assert!(unfinished("").is_empty());
    assert_eq!(
            unfinished("cpvault-restore-20260102T030405Z-1a2b.journal\nnotes.journal\ncpvault-restore-x y.journal\n"),
            ["cpvault-restore-20260102T030405Z-1a2b"]
        );
}

#[test]
fn the_pki_files_the_manifests_name_must_all_be_in_the_archive() {
    let etcd = "    command:\n    - etcd\n    - --cert-file=/etc/kubernetes/pki/etcd/server.crt\n    - --data-dir=/var/lib/etcd\n    - '--trusted-ca-file=/etc/kubernetes/pki/etcd/ca.crt'\n";
    let api = "    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt\n    - --encryption-provider-config=/etc/kubernetes/enc/enc.yaml\n    - --sneaky=/etc/kubernetes/pki/../admin.conf\n";
    let needed = pki_files_named(&[etcd, api], "/etc/kubernetes/pki/");
    assert_eq!(
        needed.iter().map(String::as_str).collect::<Vec<_>>(),
        ["apiserver.crt", "etcd/ca.crt", "etcd/server.crt"]
    );
    let mut m = inner(Some("x"));
    assert_eq!(
        missing_from(&needed, &m),
        ["apiserver.crt", "etcd/ca.crt", "etcd/server.crt"]
    );
    for p in ["pki/apiserver.crt", "pki/etcd/ca.crt"] {
        let mut e = m.entries[0].clone();
        e.path = p.into();
        m.entries.push(e);
    }
    assert_eq!(missing_from(&needed, &m), ["etcd/server.crt"]);
}

#[test]
fn space_adds_up_on_one_filesystem_and_splits_across_two() {
    let l = NodeLayout::kubeadm();
    let gib: u64 = 1 << 30;
    // 3 GiB free (in KiB) on both; one filesystem.
    let one_fs = parse_space("3145728\n3145728\n41\n41\n").unwrap();
    // Staging 2× + data 1× of a 1 GiB snapshot = 3 GiB: fits exactly, one byte more not.
    assert!(check_space(&one_fs, &l, gib, "n").is_ok());
    let e = check_space(&one_fs, &l, gib + 1, "n").unwrap_err();
    assert!(
        matches!(e, PreflightError::NoSpace { ref dir, .. } if dir == "/var/tmp"),
        "{e}"
    );
    // Two filesystems: staging's 2 GiB fit, but the data dir's has 10 KiB.
    let two_fs = parse_space("3145728 10 41 42").unwrap();
    let e = check_space(&two_fs, &l, gib, "n").unwrap_err();
    assert!(
        matches!(e, PreflightError::NoSpace { ref dir, .. } if dir == "/var/lib"),
        "{e}"
    );
    assert_eq!(parse_space("df: /nope: No such file\n"), None);
}

#[test]
fn the_data_dir_must_be_the_one_etcd_runs_on() {
    let l = NodeLayout::kubeadm();
    let mut m = Member {
        name: "n".into(),
        initial_cluster: "n=https://a:2380".into(),
        initial_advertise_peer_urls: "https://a:2380".into(),
        data_dir: Some("/var/lib/etcd/".into()),
        initial_cluster_token: None,
    };
    assert!(check_data_dir(&m, &l, "n").is_ok());
    m.data_dir = Some("/data/etcd".into());
    let e = check_data_dir(&m, &l, "n").unwrap_err().to_string();
    assert!(
        e.contains("--data-dir=/data/etcd") && e.contains("pass --etcd-data-dir /data/etcd"),
        "{e}"
    );
    m.data_dir = None;
    assert!(check_data_dir(&m, &l, "n").is_ok());
}

#[test]
fn a_node_naming_members_not_restored_is_a_split_unless_shrinking() {
    let l = NodeLayout::kubeadm();
    let facts = |cluster: &str| NodeFacts {
        member: Member {
            name: "b".into(),
            initial_cluster: cluster.into(),
            initial_advertise_peer_urls: "https://b:2380".into(),
            data_dir: None,
            initial_cluster_token: None,
        },
        ca_sha256: None,
        etcd_version: None,
    };
    let dests = ["root@b".to_string()];
    let three = [facts("a=https://a:2380,b=https://b:2380,c=https://c:2380")];
    let e = membership(&three, &dests, std::slice::from_ref(&l), &[], false).unwrap_err();
    assert!(
        matches!(&e, PreflightError::Split { missing, .. } if missing == &["a", "c"]),
        "{e}"
    );
    let text = e.to_string();
    assert!(
        text.contains("names 3 etcd members")
            && text.contains("while a and c still hold")
            && text.contains("nothing was changed")
            && text.contains("--to-dir DIR --members")
            && text.contains("--shrink-to-one-member"),
        "{text}"
    );
    assert!(membership(&three, &dests, std::slice::from_ref(&l), &[], true).is_ok());
    let alone = [facts("b=https://b:2380")];
    assert!(membership(&alone, &dests, std::slice::from_ref(&l), &[], false).is_ok());
    // kubeadm's first node names itself alone; the backup's member list still knows a and c.
    let recorded: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let e = membership(&alone, &dests, std::slice::from_ref(&l), &recorded, false).unwrap_err();
    assert!(
        matches!(&e, PreflightError::Split { missing, .. } if missing == &["a", "c"]),
        "{e}"
    );
    assert!(e.to_string().contains("the backup's member list"), "{e}");
    assert!(membership(&alone, &dests, std::slice::from_ref(&l), &recorded, true).is_ok());
    // A one-member backup under another name is no split.
    assert!(membership(
        &alone,
        &dests,
        std::slice::from_ref(&l),
        &["default".into()],
        false
    )
    .is_ok());
}

#[test]
fn several_nodes_must_cover_every_member_each_once() {
    let l = NodeLayout::kubeadm();
    let node = |name: &str| NodeFacts {
        member: Member {
            name: name.into(),
            initial_cluster: "a=https://a:2380,b=https://b:2380,c=https://c:2380".into(),
            initial_advertise_peer_urls: format!("https://{name}:2380"),
            data_dir: None,
            initial_cluster_token: None,
        },
        ca_sha256: None,
        etcd_version: None,
    };
    let layouts = vec![l.clone(), l.clone(), l];
    let dests: Vec<String> = ["root@a", "root@b", "root@c"].map(String::from).to_vec();
    let all = [node("a"), node("b"), node("c")];
    assert!(membership(&all, &dests, &layouts, &[], false).is_ok());
    // Two of three: the third is named.
    let e = membership(&all[..2], &dests[..2], &layouts[..2], &[], false).unwrap_err();
    assert!(
        matches!(&e, PreflightError::Split { missing, .. } if missing == &["c"]),
        "{e}"
    );
    assert!(
        e.to_string().contains("the restore covers only a and b;"),
        "{e}"
    );
    // One member given twice.
    let twice = [node("a"), node("b"), node("a")];
    let e = membership(&twice, &dests, &layouts, &[], false).unwrap_err();
    assert!(
        matches!(&e, PreflightError::SameMember { first, second, member } if first == "root@a" && second == "root@c" && member == "a"),
        "{e}"
    );
}

#[test]
fn the_version_guard_names_the_node() {
    let mut f = NodeFacts {
        member: Member {
            name: "n".into(),
            initial_cluster: "n=https://a:2380".into(),
            initial_advertise_peer_urls: "https://a:2380".into(),
            data_dir: None,
            initial_cluster_token: None,
        },
        ca_sha256: None,
        etcd_version: Some(Installed {
            version: "3.4.23".into(),
            from: "the etcd image in etcd.yaml".into(),
        }),
    };
    let dests = ["root@n".to_string()];
    let e = versions(&[f.clone()], &dests, Some("3.5.1"), false)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("preflight on root@n: the snapshot was taken from etcd 3.5.1"),
        "{e}"
    );
    assert!(versions(&[f.clone()], &dests, Some("3.5.1"), true).is_ok());
    f.etcd_version = None;
    assert!(versions(&[f], &dests, Some("3.5.1"), false).is_ok());
}

#[test]
fn sha256sum_output_reads_as_its_hash() {
    assert_eq!(
        parse_sha256("abc123  /etc/kubernetes/pki/ca.crt\n").as_deref(),
        Some("abc123")
    );
    assert_eq!(parse_sha256(""), None);
}

fn inner(ca: Option<&str>) -> Manifest {
    let mut entries = vec![
        serde_json::json!({"path": "etcd/snapshot.db", "kind": "etcd-snapshot", "size": 1, "sha256": "s"}),
    ];
    if let Some(h) = ca {
        entries
            .push(serde_json::json!({"path": "pki/ca.crt", "kind": "pki", "size": 1, "sha256": h}));
    }
    serde_json::from_value(serde_json::json!({
        "format": "cpvault-manifest", "version": 1, "id": "20260101T000000Z-00000000",
        "cluster": "c", "created": "2026-01-01T00:00:00Z", "completed": "2026-01-01T00:00:00Z",
        "tool": {"name": "cpvault", "version": "0"}, "host": "h", "source": "s",
        "entries": entries,
    }))
    .unwrap()
}

#[test]
fn an_expired_certificate_stops_the_restore_unless_forced() {
    let mut m = inner(Some("x"));
    let now: chrono::DateTime<chrono::Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
    assert!(
        certificates_valid(&m, now, false).is_ok(),
        "no facts, nothing to check"
    );
    let cert = |path: &str, not_after: &str| crate::archive::manifest::CertInfo {
        path: path.into(),
        subject: Some("CN=x".into()),
        issuer: Some("CN=ca".into()),
        not_before: Some("2020-01-01T00:00:00Z".parse().unwrap()),
        not_after: Some(not_after.parse().unwrap()),
        key: None,
        error: None,
    };
    m.certificates = vec![
        cert("pki/ca.crt", "2036-01-01T00:00:00Z"),
        cert("pki/apiserver.crt", "2026-05-31T23:59:59Z"),
    ];
    let e = certificates_valid(&m, now, false).unwrap_err().to_string();
    assert!(
        e.contains("1 certificate(s)")
            && e.contains("pki/apiserver.crt (notAfter 2026-05-31T23:59:59Z)")
            && !e.contains("pki/ca.crt")
            && e.contains("--force-expired")
            && e.contains("nothing was changed"),
        "{e}"
    );
    assert!(certificates_valid(&m, now, true).is_ok());
}

#[test]
fn the_ca_decides_whether_the_backup_is_of_this_cluster_unless_forced() {
    let member = Member {
        name: "n".into(),
        initial_cluster: "n=https://a:2380".into(),
        initial_advertise_peer_urls: "https://a:2380".into(),
        data_dir: None,
        initial_cluster_token: None,
    };
    let facts = |ca: Option<&str>| NodeFacts {
        member: member.clone(),
        ca_sha256: ca.map(str::to_string),
        etcd_version: None,
    };
    let check = |archive: Option<&str>, node: Option<&str>, force: bool| {
        same_cluster(&inner(archive), &facts(node), "/pki", "n", force)
    };
    assert!(check(Some("aa"), Some("aa"), false).is_ok());
    assert!(matches!(
        check(Some("aa"), Some("bb"), false),
        Err(PreflightError::OtherCluster { .. })
    ));
    assert!(matches!(
        check(Some("aa"), None, false),
        Err(PreflightError::NodeCaUnreadable { .. })
    ));
    assert!(matches!(
        check(None, Some("aa"), false),
        Err(PreflightError::ArchiveHasNoCa { .. })
    ));
    for (a, n) in [(Some("aa"), Some("bb")), (Some("aa"), None), (None, None)] {
        assert!(check(a, n, true).is_ok());
    }
}
