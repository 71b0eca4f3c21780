//! Time to recover (issue 15 part 7): `cpvault restore` of the realistic snapshot onto the
//! sandbox control-plane node over a real sshd, timed per step and in total, against its floor
//! in the same run: `etcdctl snapshot restore` of the same file alone, and the time a real
//! etcd then takes to serve the restored 1 GB database (the control plane's own start).
//!
//!     bash bench/make-snapshot.sh               # bench/cache/snapshot.db, once
//!     cargo bench --bench recover               # or CPVAULT_BENCH_SNAPSHOT=FILE
//!
//! Prints a Markdown table for the README. A benchmark, not a test: nothing is asserted
//! about times; it fails only when the restore itself fails.

#[path = "../tests/support/mod.rs"]
#[allow(dead_code, unused_imports, clippy::all)]
mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::node::SandboxNode;
use support::sshd::Sshd;
use support::World;

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn restore_args(w: &World, node: &SandboxNode, sshd: &Sshd, reference: &str) -> Vec<String> {
    let data = node.data_dir();
    let staging = w.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let mut a: Vec<String> = [
        "restore",
        reference,
        "--allow-unsigned",
        "--yes",
        "-i",
        &p(&w.key),
        "--ssh",
        &sshd.destination(),
        "--ssh-port",
        &sshd.port().to_string(),
        "--ssh-key",
        &p(sshd.client_key()),
        "--ssh-known-hosts",
        &p(sshd.known_hosts()),
        "--manifests-dir",
        &p(&node.manifests_dir()),
        "--etcd-data-dir",
        &p(&data),
        "--node-pki-dir",
        &p(&node.pki_dir()),
        "--admin-conf",
        &p(&node.admin_conf()),
        "--staging-dir",
        &p(&staging),
        "--node-etcd-endpoint",
        &node.client_url(),
        "--node-etcd-cacert",
        "",
        "--node-etcd-cert",
        "",
        "--node-etcd-key",
        "",
        "--wait-timeout",
        "600",
        "--kubeconfig-out",
        &p(&w.path("admin.conf")),
        "--store",
        &p(&w.store),
    ]
    .map(String::from)
    .to_vec();
    a.extend([
        "--stopped-check".to_string(),
        format!(
            "! pgrep -f -- '--data-dir=[/]{}' >/dev/null",
            data.display().to_string().trim_start_matches('/')
        ),
        "--ready-check".to_string(),
        format!(
            "ETCDCTL_API=3 etcdctl --endpoints={} endpoint health",
            node.client_url()
        ),
    ]);
    a
}

/// Runs the restore, timestamping each progress line: `(seconds since start, line)`.
fn timed_restore(w: &World, args: &[String]) -> (Duration, Vec<(Duration, String)>) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cpvault"))
        .current_dir(w.dir.path())
        .env("HOME", w.dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = vec![];
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        lines.push((start.elapsed(), line));
    }
    let status = child.wait().unwrap();
    let total = start.elapsed();
    if !status.success() {
        for (_, l) in &lines {
            eprintln!("{l}");
        }
        panic!("restore failed: {status}");
    }
    (total, lines)
}

/// `[i/n] step: …` lines, each step's time being up to the next line of that kind (or the
/// end), and the time before the first (preflight and verify).
fn steps(total: Duration, lines: &[(Duration, String)]) -> Vec<(String, Duration)> {
    let marks: Vec<(Duration, String)> = lines
        .iter()
        .filter_map(|(t, l)| {
            let rest = l.strip_prefix('[')?;
            let (_, after) = rest.split_once("] ")?;
            let (name, _) = after.split_once(':')?;
            Some((*t, name.to_string()))
        })
        .collect();
    let mut out = vec![(
        "preflight + verify".to_string(),
        marks.first().map_or(total, |m| m.0),
    )];
    for (i, (t, name)) in marks.iter().enumerate() {
        let end = marks.get(i + 1).map_or(total, |m| m.0);
        out.push((name.clone(), end - *t));
    }
    out
}

fn main() {
    let snapshot = std::env::var_os("CPVAULT_BENCH_SNAPSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/cache/snapshot.db"));
    if !snapshot.is_file() {
        eprintln!(
            "no snapshot at {}: run `bash bench/make-snapshot.sh` first (or set CPVAULT_BENCH_SNAPSHOT)",
            snapshot.display()
        );
        std::process::exit(1);
    }
    let size = std::fs::metadata(&snapshot).unwrap().len();
    let w = World::new();
    let node = SandboxNode::start();
    let sshd = Sshd::start();
    eprintln!("backing up {} ({size} bytes)…", snapshot.display());
    let reference = w.backup(&[
        "--etcd-snapshot-file",
        snapshot.to_str().unwrap(),
        "--pki-dir",
        node.pki_dir().to_str().unwrap(),
    ]);

    // The floor: etcdctl alone on the plain file (checking etcd's own hash, as the restore
    // does), then a real etcd serving the result.
    let floor_dir = w.path("floor");
    let t = Instant::now();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&snapshot)
        .arg("--data-dir")
        .arg(&floor_dir)
        .output()
        .unwrap();
    let floor = t.elapsed();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    let mut etcd = Command::new("etcd")
        .arg("--data-dir")
        .arg(&floor_dir)
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
            "--listen-peer-urls",
            &format!("http://127.0.0.1:{}", support::free_port()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while !Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &url, "endpoint", "health"])
        .output()
        .unwrap()
        .status
        .success()
    {
        assert!(t.elapsed() < Duration::from_secs(600), "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = t.elapsed();
    let _ = etcd.kill();
    let _ = etcd.wait();
    std::fs::remove_dir_all(&floor_dir).unwrap();

    eprintln!("restoring onto the sandbox node…");
    let (total, lines) = timed_restore(&w, &restore_args(&w, &node, &sshd, &reference));
    let keys = node.keys().len();

    println!(
        "Snapshot {:.2} GB, restored onto the sandbox node over sshd on loopback; {keys} keys served after.\n",
        size as f64 / 1e9
    );
    println!("| step | seconds |\n|---|--:|");
    for (name, d) in steps(total, &lines) {
        println!("| {name} | {} |", secs(d));
    }
    println!("| **cpvault restore, total** | **{}** |", secs(total));
    println!(
        "| floor: `etcdctl snapshot restore` alone | {} |",
        secs(floor)
    );
    println!(
        "| etcd start on the restored data until healthy | {} |",
        secs(start)
    );
    println!(
        "\nTotal / (floor + start) = {:.2}; total / floor = {:.2}",
        total.as_secs_f64() / (floor + start).as_secs_f64(),
        total.as_secs_f64() / floor.as_secs_f64()
    );
}
