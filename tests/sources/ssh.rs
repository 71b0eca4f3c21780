//! SSH to a real sshd as the node: the PKI comes back identical, etcdctl on the node
//! snapshots and leaves no temp dir, a bad trailer commits nothing, host keys (unknown,
//! accept-new, changed), a client key the node does not know, no sudo, and Ctrl-C while the
//! node saves the snapshot.

use std::path::Path;
use std::process::Command;

use super::{
    assert_fails, assert_restores, assert_temp_dir_removed, backup, load, manifest,
    recording_etcdctl,
};
use crate::support::sshd::Sshd;
use crate::support::*;

fn ssh_args(sshd: &Sshd) -> Vec<String> {
    vec![
        "--ssh".into(),
        sshd.destination(),
        "--ssh-port".into(),
        sshd.port().to_string(),
        "--ssh-key".into(),
        sshd.client_key().display().to_string(),
        "--ssh-known-hosts".into(),
        sshd.known_hosts().display().to_string(),
    ]
}

/// SSH flags for PKI from `node_pki` and a snapshot by `etcdctl` on the node, talking to
/// the plain-http test etcd (so no certificate flags).
fn ssh_etcd_args(sshd: &Sshd, etcdctl: &Path, node_pki: &Path, etcd: &Etcd) -> Vec<String> {
    let mut args = ssh_args(sshd);
    args.extend(
        [
            "--ssh-etcd",
            "--node-etcdctl",
            etcdctl.to_str().unwrap(),
            "--ssh-pki-dir",
            node_pki.to_str().unwrap(),
            "--node-etcd-endpoint",
            &etcd.endpoint,
            "--node-etcd-cacert",
            "",
            "--node-etcd-cert",
            "",
            "--node-etcd-key",
            "",
        ]
        .map(String::from),
    );
    args
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn ssh_pki_comes_back_identical_and_the_node_is_unchanged() {
    let w = World::new();
    let sshd = Sshd::start();
    let node_pki = w.path("node/etc/kubernetes/pki");
    make_pki(&node_pki);
    let before = tree(&node_pki);
    let mut args = ssh_args(&sshd);
    args.extend(["--ssh-pki-dir".into(), node_pki.display().to_string()]);
    let reference = w.backup(&refs(&args));
    assert_eq!(tree(&node_pki), before, "the node's PKI changed");
    let out = w.extract(&reference, "out");
    assert_eq!(tree(&out.join("pki")), before);
    assert!(manifest(&w, &reference)["source"]
        .as_str()
        .unwrap()
        .contains("ssh-pki:"));
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn ssh_etcdctl_snapshot_restores_and_leaves_no_temp_dir_on_the_node() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    let (etcdctl, record) = recording_etcdctl(&w);
    let args = ssh_etcd_args(&sshd, &etcdctl, &node_pki, &etcd);
    let reference = w.backup(&refs(&args));
    etcd.put("/registry/late", "x");
    assert_temp_dir_removed(&record);
    // What etcdctl on the node said about the member it asked.
    let e = &manifest(&w, &reference)["etcd"];
    assert_eq!(e["from_member"], "test", "{e:#}");
    assert_eq!(e["members"][0]["name"], "test", "{e:#}");
    assert_eq!(e["members"][0]["client_urls"][0], etcd.endpoint.as_str());
    assert!(
        e["version"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{e:#}"
    );
    assert_eq!(e["member_id"], e["members"][0]["id"], "{e:#}");
    let out = assert_restores(&w, &reference, "out");
    assert_eq!(tree(&out.join("pki")), tree(&node_pki));
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn a_snapshot_with_a_bad_trailer_from_the_node_fails_the_backup_and_commits_nothing() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    // An etcdctl on the "node" whose saved file has one byte flipped: the stream's own
    // sha256 trailer no longer matches.
    let fake = w.path("corrupting-etcdctl");
    std::fs::write(
        &fake,
        "#!/bin/sh\nset -e\netcdctl \"$@\"\nfor last; do :; done\ncase \" $* \" in *' snapshot save '*) printf 'X' | dd of=\"$last\" bs=1 seek=5000 conv=notrunc status=none;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    let args = ssh_etcd_args(&sshd, &fake, &node_pki, &etcd);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["trailer does not match"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn an_unknown_host_key_is_refused_and_accept_new_trusts_it_once() {
    let w = World::new();
    let sshd = Sshd::start();
    make_pki(&w.path("pki-on-node"));
    let kh = sshd.empty_known_hosts();
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-known-hosts").unwrap();
    args[i + 1] = kh.display().to_string();
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
    ]);
    let out = backup(&w, &refs(&args));
    let name = format!("[127.0.0.1]:{}", sshd.port());
    assert_fails(&w, &out, &[&name, "not in", "--ssh-accept-new"]);

    args.push("--ssh-accept-new".into());
    let ok = backup(&w, &refs(&args));
    assert!(ok.status.success(), "{}", stderr(&ok));
    // ssh may hash the host name (HashKnownHosts), so look for the key itself.
    let recorded = std::fs::read_to_string(&kh).unwrap();
    let host_key = std::fs::read_to_string(sshd.known_hosts()).unwrap();
    let host_key = host_key.split_whitespace().nth(2).unwrap();
    assert!(recorded.contains(host_key), "key not recorded: {recorded}");
    // Trusted from now on without the flag.
    args.pop();
    let again = backup(&w, &refs(&args));
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_changed_host_key_is_refused_even_with_accept_new() {
    let w = World::new();
    let sshd = Sshd::start();
    make_pki(&w.path("pki-on-node"));
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-known-hosts").unwrap();
    args[i + 1] = sshd.wrong_known_hosts().display().to_string();
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
        "--ssh-accept-new".into(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["CHANGED", "ssh-keygen -R"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn an_ssh_key_the_node_does_not_know_fails_naming_ssh_key() {
    let w = World::new();
    let sshd = Sshd::start();
    let other = w.path("other_key");
    let o = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    let mut args = ssh_args(&sshd);
    let i = args.iter().position(|a| a == "--ssh-key").unwrap();
    args[i + 1] = other.display().to_string();
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["authentication failed", "--ssh-key"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_missing_pki_dir_on_the_node_fails_naming_the_dir() {
    let w = World::new();
    let sshd = Sshd::start();
    let mut args = ssh_args(&sshd);
    args.extend(["--ssh-pki-dir".into(), "/nonexistent/pki".into()]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["/nonexistent/pki", "--ssh-pki-dir"]);
}

#[test]
#[ignore = "needs openssh-server, openssh-client (apt-get install); CI runs it"]
fn a_node_without_sudo_fails_naming_sudo_and_the_fix() {
    let w = World::new();
    // A node whose PATH has a shell and tar but no sudo.
    let bin = w.path("node-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["sh", "tar", "cat", "id"] {
        let real = find_on_path(tool).unwrap_or_else(|| panic!("{tool} not on PATH"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let sshd = Sshd::start_with(&format!("SetEnv PATH={}", bin.display()));
    make_pki(&w.path("pki-on-node"));
    let mut args = ssh_args(&sshd);
    args.extend([
        "--ssh-pki-dir".into(),
        w.path("pki-on-node").display().to_string(),
        "--ssh-sudo".into(),
        "always".into(),
    ]);
    let out = backup(&w, &refs(&args));
    assert_fails(&w, &out, &["sudo is not installed", "log in as root"]);
}

#[test]
#[ignore = "needs openssh-server, etcd-server, etcd-client (apt-get install); CI runs it"]
fn ctrl_c_while_the_node_saves_the_snapshot_removes_it_and_commits_nothing() {
    let w = World::new();
    let sshd = Sshd::start();
    let etcd = Etcd::start();
    load(&etcd);
    let node_pki = w.path("node/pki");
    make_pki(&node_pki);
    // An etcdctl that records where it saves, then takes its time.
    let (recording, record) = recording_etcdctl(&w);
    let slow = w.path("slow-etcdctl");
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\n'{}' \"$@\" || exit 1\nsleep 3\n",
            recording.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&slow, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let args = ssh_etcd_args(&sshd, &slow, &node_pki, &etcd);
    let mut full = vec!["backup", "--cluster", "admin", "-r", &w.recipient];
    full.extend(refs(&args));
    let store = w.store.display().to_string();
    full.extend(["--store", &store]);
    let child = cpvault_cmd(w.dir.path())
        .args(&full)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Once etcdctl has saved, interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !record.exists() {
        assert!(std::time::Instant::now() < deadline, "etcdctl never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(o.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("interrupted"), "{}", stderr(&out));
    assert_temp_dir_removed(&record);
    let list = w.run(&["list", "--output", "json"]);
    assert_eq!(stdout(&list).trim(), "[]");
}
