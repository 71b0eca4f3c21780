//! The recovery kit of a node backup, on the sandbox node: a backup over SSH holds the
//! EncryptionConfiguration kube-apiserver names, the static-pod manifests and admin.conf; an
//! encryption config that cannot be read fails the backup naming the file and
//! `--no-encryption-config`; a restore puts them back before the control plane starts (the
//! old ones kept), and a failure after that rolls them back.

use super::*;

/// The sandbox node with an encryption config named in kube-apiserver.yaml and a scheduler
/// manifest; returns the encryption config's path.
fn with_kit(node: &SandboxNode) -> PathBuf {
    let enc = node.root().join("etc/kubernetes/enc/enc.yaml");
    std::fs::create_dir_all(enc.parent().unwrap()).unwrap();
    std::fs::write(&enc, ENCRYPTION_CONFIG).unwrap();
    std::fs::set_permissions(&enc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let api = node.manifests_dir().join("kube-apiserver.yaml");
    let yaml = std::fs::read_to_string(&api).unwrap().replacen(
        "    - \"100000\"\n",
        &format!(
            "    - \"100000\"\n    args:\n    - --encryption-provider-config={}\n",
            enc.display()
        ),
        1,
    );
    std::fs::write(&api, yaml).unwrap();
    std::fs::write(
        node.manifests_dir().join("kube-scheduler.yaml"),
        SCHEDULER_YAML,
    )
    .unwrap();
    enc
}

const ENCRYPTION_CONFIG: &str = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: c2VjcmV0IGlzIHNlY3VyZSwgb3IgaXMgaXQ/Cg==\n  - identity: {}\n";

const SCHEDULER_YAML: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-scheduler\n  namespace: kube-system\nspec:\n  containers:\n  - name: kube-scheduler\n    command:\n    - sleep\n    - \"100001\"\n";

/// Backs the sandbox node up over SSH (etcd over gRPC, PKI and kit over SSH).
fn node_backup(s: &Scene, extra: &[&str]) -> Output {
    let mut args = vec![
        "backup".to_string(),
        "--cluster".into(),
        "admin".into(),
        "-r".into(),
        s.w.recipient.clone(),
        "--etcd-endpoint".into(),
        s.node.client_url(),
        "--ssh".into(),
        s.sshd.destination(),
        "--ssh-port".into(),
        s.sshd.port().to_string(),
        "--ssh-key".into(),
        s.sshd.client_key().display().to_string(),
        "--ssh-known-hosts".into(),
        s.sshd.known_hosts().display().to_string(),
        "--ssh-pki-dir".into(),
        s.node.pki_dir().display().to_string(),
        "--ssh-manifests-dir".into(),
        s.node.manifests_dir().display().to_string(),
        "--ssh-admin-conf".into(),
        s.node.admin_conf().display().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    s.w.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_node_backup_holds_the_encryption_config_manifests_and_admin_conf() {
    let mut enc = PathBuf::new();
    let s = scene_with(|node| enc = with_kit(node));
    let before = s.node.snapshot_tree();
    let out = node_backup(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = stdout(&out).trim().to_string();
    assert_eq!(
        s.node.snapshot_tree(),
        before,
        "the backup changed the node"
    );
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.w.manifest(&reference)).unwrap()).unwrap();
    assert_schema_valid(&m);
    assert_eq!(m["kit"]["encryption_config"], enc.display().to_string());
    let x = s.w.extract(&reference, "x");
    let kit = x.join("files/kit");
    assert_eq!(
        std::fs::read_to_string(kit.join("encryption/enc.yaml")).unwrap(),
        ENCRYPTION_CONFIG
    );
    assert_eq!(
        std::fs::read(kit.join("admin.conf")).unwrap(),
        std::fs::read(s.node.admin_conf()).unwrap()
    );
    for name in ["etcd.yaml", "kube-apiserver.yaml", "kube-scheduler.yaml"] {
        assert_eq!(
            std::fs::read(kit.join("manifests").join(name)).unwrap(),
            std::fs::read(s.node.manifests_dir().join(name)).unwrap(),
            "{name}"
        );
    }

    // A node layout whose manifests dir's parent does not hold the recorded path: restore
    // says it will not put the config back (before any preflight).
    let mut args = s.restore_args();
    args[1] = reference.clone();
    let i = args.iter().position(|a| a == "--manifests-dir").unwrap();
    args[i + 1] = s.w.path("elsewhere/manifests").display().to_string();
    let dry = s.run_args(args, &["--dry-run"], &[]);
    assert!(
        stderr(&dry).contains("so restore does not put it back; extract it"),
        "{}",
        stderr(&dry)
    );

    // An encryption config the apiserver names but the node does not have.
    std::fs::rename(&enc, enc.with_extension("moved")).unwrap();
    let out = node_backup(&s, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&enc.display().to_string()) && err.contains("--no-encryption-config"),
        "{err}"
    );
    let out = node_backup(&s, &["--no-encryption-config"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is NOT in this backup"),
        "{}",
        stderr(&out)
    );
    // Its restore says what it lacks.
    let mut args = s.restore_args();
    args[1] = stdout(&out).trim().to_string();
    let dry = s.run_args(args, &["--dry-run"], &[]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        stderr(&dry).contains("--no-encryption-config: it does not hold")
            && stderr(&dry).contains(&enc.display().to_string()),
        "{}",
        stderr(&dry)
    );
    assert!(
        !stdout(&dry).contains("encryption-config"),
        "{}",
        stdout(&dry)
    );
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn restore_puts_the_kit_back_before_the_control_plane_starts_and_rolls_it_back() {
    let mut enc = PathBuf::new();
    let mut s = scene_with(|node| enc = with_kit(node));
    let out = node_backup(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    s.reference = stdout(&out).trim().to_string();
    s.keys_at_backup = s.node.keys();
    let admin_at_backup = std::fs::read(s.node.admin_conf()).unwrap();
    // Changed since the backup: a rotated key, a new admin.conf, an edited scheduler.
    std::fs::write(&enc, "rotated").unwrap();
    std::fs::write(s.node.admin_conf(), "new admin.conf").unwrap();
    std::fs::write(
        s.node.manifests_dir().join("kube-scheduler.yaml"),
        SCHEDULER_YAML.replace("100001", "100002"),
    )
    .unwrap();

    let plan = s.run(&["--dry-run"], &[]);
    let text = stdout(&plan);
    assert!(plan.status.success(), "{}", stderr(&plan));
    let pos = |name: &str| {
        text.find(&format!(". {name} "))
            .unwrap_or_else(|| panic!("{name}:\n{text}"))
    };
    assert!(pos("pki") < pos("encryption-config"));
    assert!(pos("encryption-config") < pos("manifests"));
    assert!(pos("admin-conf") < pos("start-control-plane"), "{text}");

    // A failure after the kit is in place undoes it.
    let before = s.node.snapshot_tree();
    let out = s.run(&["--yes"], &[("CPVAULT_RESTORE_FAIL_AT", "wait-ready")]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(s.node.wait_healthy(Duration::from_secs(60)));
    assert_eq!(
        s.node.snapshot_tree(),
        before,
        "the rollback left the node changed"
    );

    let out = s.run(&["--yes"], &[]);
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.node.log());
    assert_eq!(s.keys_when_healthy(), s.keys_at_backup);
    assert_eq!(std::fs::read_to_string(&enc).unwrap(), ENCRYPTION_CONFIG);
    assert_eq!(
        std::fs::metadata(&enc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read(s.node.admin_conf()).unwrap(), admin_at_backup);
    assert_eq!(
        std::fs::read_to_string(s.node.manifests_dir().join("kube-scheduler.yaml")).unwrap(),
        SCHEDULER_YAML
    );
    // The kubeconfig fetched at the end is the restored admin.conf.
    assert_eq!(
        std::fs::read(s.w.path("admin.conf")).unwrap(),
        admin_at_backup
    );
    // The replaced files are kept.
    let kept: Vec<PathBuf> = std::fs::read_dir(s.node.root().join("etc/kubernetes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".kit-before"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept_enc = kept[0].join(enc.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read_to_string(kept_enc).unwrap(), "rotated");
}
