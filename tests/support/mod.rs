//! Test support: runs the real `cpvault` binary in an isolated environment, builds input
//! fixtures, starts real servers (etcd here; S3, sshd, Azurite, GCS and a Kubernetes API in
//! the modules below) on free loopback ports and stops them on drop, and validates manifests
//! against the JSON schema. A test that needs a tool which is missing
//! panics with the package to install; such tests are `#[ignore = "needs …"]` so a plain
//! `cargo test` lists them as ignored, and CI runs them with `--include-ignored`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Panics unless `tool` is on PATH, naming the Debian package that provides it.
pub fn require(tool: &str, package: &str) {
    if !on_path(tool) {
        missing(&format!("`{tool}`"), &format!("apt-get install {package}"));
    }
}

/// Whether `tool` is an executable file in a PATH directory.
pub fn on_path(tool: &str) -> bool {
    find_on_path(tool).is_some()
}

/// The first file named `tool` in a PATH directory.
pub fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Fails the test: `what` is not installed; `install` says how to get it.
pub fn missing(what: &str, install: &str) -> ! {
    panic!(
        "this test needs {what} ({install}); .ci/run installs it{}",
        if std::env::var("CI").as_deref() == Ok("true") {
            " — CI=true, so a missing tool is a failure"
        } else {
            ""
        }
    )
}

/// A scratch world: a temp dir, a store in it, and a fresh age key.
pub struct World {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub key: PathBuf,
    pub recipient: String,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let key = dir.path().join("key.txt");
        let out = cpvault_in(dir.path(), &["keygen", "-o", key.to_str().unwrap()]);
        assert!(out.status.success(), "keygen: {}", stderr(&out));
        let recipient = stdout(&out).trim().to_string();
        assert!(recipient.starts_with("age1"), "{recipient}");
        World {
            dir,
            store,
            key,
            recipient,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs cpvault with `--store` set to this world's store.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        let store = self.store.to_str().unwrap().to_string();
        full.push("--store");
        full.push(&store);
        cpvault_in(self.dir.path(), &full)
    }

    /// Backs up, asserts success and schema-validity of the committed manifest, and returns
    /// the reference.
    pub fn backup(&self, extra: &[&str]) -> String {
        let mut args = vec!["backup", "--cluster", "admin", "-r", &self.recipient];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "backup failed: {}", stderr(&out));
        let reference = stdout(&out).trim().to_string();
        let manifest = self.store.join(format!("{reference}.manifest.json"));
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
        assert_schema_valid(&json);
        reference
    }

    /// Extracts `reference` with this world's key into a new directory `to`; asserts success.
    pub fn extract(&self, reference: &str, to: &str) -> PathBuf {
        let out = self.path(to);
        let ex = self.run(&[
            "extract",
            reference,
            "-i",
            self.key.to_str().unwrap(),
            "--to",
            out.to_str().unwrap(),
        ]);
        assert!(ex.status.success(), "extract failed: {}", stderr(&ex));
        out
    }

    /// The archive object of `reference`.
    pub fn archive(&self, reference: &str) -> PathBuf {
        self.store.join(format!("{reference}.tar.zst.age"))
    }

    /// The outer manifest object of `reference`.
    pub fn manifest(&self, reference: &str) -> PathBuf {
        self.store.join(format!("{reference}.manifest.json"))
    }
}

/// Runs the binary in `cwd` with a clean environment: no CPVAULT_* and no store settings
/// (AWS_*, GOOGLE_*, AZURE_*, AZURITE_*) from the caller, and a config home with no config
/// file.
pub fn cpvault_in(cwd: &Path, args: &[&str]) -> Output {
    cpvault_cmd(cwd).args(args).output().unwrap()
}

/// A restore started with the test hook that pauses it after a step, once the pause is
/// reached: the process, its restore id, the stderr read so far, and the lines still to come
/// (the pipe stays drained, so cpvault never writes into a closed one).
pub struct Paused {
    pub child: std::process::Child,
    pub id: String,
    pub seen: String,
    pub rest: std::sync::mpsc::Receiver<String>,
}

impl Paused {
    /// SIGKILL, so that cpvault rolls nothing back itself, and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Starts `cmd` (a `cpvault restore …`) paused after `step` (`KIND` or `KIND@NODE`) and waits
/// for the pause, at most two minutes; on a timeout it kills cpvault and fails with what it
/// said and `log()` (the node's or the API server's log).
pub fn start_paused(cmd: &mut Command, step: &str, log: impl Fn() -> String) -> Paused {
    use std::io::BufRead;
    let mut child = cmd
        .env("CPVAULT_RESTORE_PAUSE_AT", step)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rest) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    // The pause line names the step's kind, without the node.
    let pause = format!("paused after {} ", step.split('@').next().unwrap_or(step));
    let (mut seen, mut id) = (String::new(), None);
    loop {
        let line = match rest.recv_timeout(std::time::Duration::from_secs(120)) {
            Ok(l) => l,
            Err(e) => {
                let _ = child.kill();
                panic!("no pause after {step} ({e:?}):\n{seen}\n{}", log());
            }
        };
        seen.push_str(&line);
        seen.push('\n');
        if let Some(r) = line.strip_prefix("restore id ") {
            id = r.split_whitespace().next().map(String::from);
        }
        if line.starts_with(&pause) {
            break;
        }
    }
    let id = id.unwrap_or_else(|| panic!("no restore id printed:\n{seen}"));
    Paused {
        child,
        id,
        seen,
        rest,
    }
}

pub fn cpvault_cmd(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cpvault"));
    c.current_dir(cwd)
        .env("XDG_CONFIG_HOME", cwd.join(".no-config"))
        .stdin(Stdio::null());
    const SCRUBBED: [&str; 5] = ["CPVAULT_", "AWS_", "GOOGLE_", "AZURE_", "AZURITE_"];
    for (k, _) in std::env::vars() {
        if SCRUBBED.iter().any(|p| k.starts_with(p)) {
            c.env_remove(k);
        }
    }
    c
}

/// `cpvault` with `vars` as its only store settings (none inherited from the caller).
pub fn cpvault_with(cwd: &Path, vars: Vec<(String, String)>, args: &[&str]) -> Output {
    cpvault_cmd(cwd).envs(vars).args(args).output().unwrap()
}

/// Settings as owned pairs, the shape `Command::envs` and the store builders take.
pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the process ended without a panic or backtrace.
pub fn assert_no_panic(o: &Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "panic: {e}"
    );
}

/// The `error: …` line cpvault printed on stderr; panics (showing stderr) when there is none.
pub fn error_line(o: &Output) -> String {
    let err = stderr(o);
    err.lines()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line: {err}"))
        .to_string()
}

/// Validates a manifest against schema/manifest.v1.json.
pub fn assert_schema_valid(json: &serde_json::Value) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../../schema/manifest.v1.json")).unwrap();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(json)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "manifest does not validate: {errors:?}\n{json:#}"
    );
}

/// backup → list → verify -i → extract through the real binary on `store`; `run` supplies
/// the server's settings. Returns the world and the backup for further checks.
pub fn cli_round_trip(store: &str, run: impl Fn(&Path, &[&str]) -> Output) -> (World, String) {
    let w = World::new();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snapshot.db"), 300);
    let run = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--store", store]);
        run(w.dir.path(), &a)
    };
    let b = run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "snapshot.db",
        "--pki-dir",
        "pki",
    ]);
    assert!(b.status.success(), "backup: {}", stderr(&b));
    let reference = stdout(&b).trim().to_string();
    let l = run(&["list"]);
    assert!(
        l.status.success() && stdout(&l).contains(&reference),
        "{}{}",
        stdout(&l),
        stderr(&l)
    );
    let key = w.key.to_str().unwrap().to_string();
    let v = run(&["verify", &reference, "-i", &key]);
    assert!(v.status.success(), "verify: {}{}", stdout(&v), stderr(&v));
    let to = w.path("out");
    let x = run(&[
        "extract",
        &reference,
        "-i",
        &key,
        "--to",
        to.to_str().unwrap(),
    ]);
    assert!(x.status.success(), "extract: {}", stderr(&x));
    assert_eq!(tree(&to.join("pki")), tree(&w.path("pki")));
    (w, reference)
}

/// A PKI tree like kubeadm's: nested directories, keys 0600, certificates 0644.
pub fn make_pki(dir: &Path) {
    let files: &[(&str, u32, usize)] = &[
        ("ca.crt", 0o644, 1100),
        ("ca.key", 0o600, 1700),
        ("apiserver.crt", 0o644, 1300),
        ("apiserver.key", 0o600, 1700),
        ("sa.pub", 0o644, 450),
        ("sa.key", 0o600, 1700),
        ("etcd/ca.crt", 0o644, 1000),
        ("etcd/ca.key", 0o600, 1700),
        ("etcd/healthcheck-client.crt", 0o644, 1100),
        ("etcd/healthcheck-client.key", 0o600, 1700),
        ("front-proxy/deep/nested/ca.key", 0o600, 300),
    ];
    for (i, (rel, mode, len)) in files.iter().enumerate() {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let body: Vec<u8> = (0..*len)
            .map(|j| b"ABCDEFGHIJKLMNOPQRSTUVWXYZ+/0123456789"[(j * 7 + i) % 38])
            .collect();
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// A fake snapshot of `pages` 4 KiB pages with etcd's sha256 trailer.
pub fn fake_snapshot(path: &Path, pages: usize) {
    let mut db: Vec<u8> = (0..pages * 4096).map(|i| ((i * 131) % 253) as u8).collect();
    let h = Sha256::digest(&db);
    db.extend_from_slice(&h);
    std::fs::write(path, db).unwrap();
}

/// Every file below `dir` with its relative path, mode and content.
pub fn tree(dir: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let mut out = vec![];
    fn walk(root: &Path, d: &Path, out: &mut Vec<(String, u32, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    mode,
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd on loopback, killed on drop.
pub struct Etcd {
    child: Child,
    pub endpoint: String,
    pub data_dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
    tls_args: Vec<String>,
}

impl Etcd {
    /// Starts a fresh single-member etcd.
    pub fn start() -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut e = Etcd::start_on(&data, "test", None);
        e._dir = Some(dir);
        e
    }

    /// Starts a fresh single-member etcd that serves clients only over mutual TLS.
    pub fn start_tls(certs: &tls::EtcdCerts) -> Etcd {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut e = Etcd::start_with(&data, "test", None, Some(certs));
        e._dir = Some(dir);
        e
    }

    /// Starts etcd on an existing (e.g. restored) data dir.
    pub fn start_on(data_dir: &Path, name: &str, peer_port: Option<u16>) -> Etcd {
        Etcd::start_with(data_dir, name, peer_port, None)
    }

    fn start_with(
        data_dir: &Path,
        name: &str,
        peer_port: Option<u16>,
        tls: Option<&tls::EtcdCerts>,
    ) -> Etcd {
        require("etcd", "etcd-server");
        let client = free_port();
        let peer = peer_port.unwrap_or_else(free_port);
        let log = std::fs::File::create(data_dir.with_extension("log")).unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut cmd = Command::new("etcd");
        if let Some(c) = tls {
            cmd.args(["--client-cert-auth", "--trusted-ca-file"])
                .arg(&c.ca)
                .arg("--cert-file")
                .arg(&c.server_cert)
                .arg("--key-file")
                .arg(&c.server_key);
        }
        let child = cmd
            .args([
                "--name",
                name,
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--listen-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("{scheme}://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &format!("{name}=http://127.0.0.1:{peer}"),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let e = Etcd {
            child,
            endpoint: format!("{scheme}://127.0.0.1:{client}"),
            data_dir: data_dir.to_path_buf(),
            _dir: None,
            tls_args: tls
                .map(|c| {
                    vec![
                        format!("--cacert={}", c.ca.display()),
                        format!("--cert={}", c.client_cert.display()),
                        format!("--key={}", c.client_key.display()),
                    ]
                })
                .unwrap_or_default(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if e.ctl(&["endpoint", "health"]).status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not become healthy: {}",
                std::fs::read_to_string(data_dir.with_extension("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        e
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        require("etcdctl", "etcd-client");
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(&self.endpoint)
            .args(&self.tls_args)
            .args(args)
            .output()
            .unwrap()
    }

    pub fn put(&self, k: &str, v: &str) {
        let o = self.ctl(&["put", k, v]);
        assert!(o.status.success(), "put: {}", stderr(&o));
    }

    pub fn get(&self, k: &str) -> Option<String> {
        let o = self.ctl(&["get", "--print-value-only", k]);
        assert!(o.status.success(), "get: {}", stderr(&o));
        let s = stdout(&o);
        let s = s.trim_end_matches('\n');
        (!s.is_empty()).then(|| s.to_string())
    }

    pub fn snapshot(&self, path: &Path) {
        let o = self.ctl(&["snapshot", "save", path.to_str().unwrap()]);
        assert!(o.status.success(), "snapshot save: {}", stderr(&o));
    }
}

/// `etcdctl snapshot restore` of `snapshot` into `data_dir`, then a real etcd started on it.
pub fn restore_snapshot(snapshot: &Path, data_dir: &Path) -> Etcd {
    require("etcdctl", "etcd-client");
    let peer = free_port();
    let o = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "snapshot",
            "restore",
            snapshot.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--name",
            "restored",
            "--initial-cluster",
            &format!("restored=http://127.0.0.1:{peer}"),
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "snapshot restore: {}", stderr(&o));
    Etcd::start_on(data_dir, "restored", Some(peer))
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use s3::S3Server;

// The loopback HTTP server under the in-process test servers.
pub mod http;
// A Kubernetes test API server (REST + exec websocket) that runs exec'd commands for real.
pub mod kubeapi;
// A real multi-member etcd cluster on loopback (one process per member).
pub mod etcd_cluster;
// Test certificates for etcd's mutual TLS.
pub mod tls;
// A real sshd on a free loopback port with its own host key and authorized key.
pub mod sshd;
// A sandbox "node" filesystem with a test kubelet that runs its static-pod manifests.
pub mod node;
// A TCP proxy that can die mid-upload or cut chosen connections.
pub mod proxy;
// Azurite, the Azure Storage emulator, from a local npm install (or PATH).
pub mod azurite;
// The real S3 servers (moto, and s3s-fs which checks SigV4 signatures) as one type.
pub mod s3;
// Base64 and percent-encoding for the test servers and emulator clients.
pub mod encoding;
// Backups forged with stock age, zstd and tar, as a hostile store could hold them.
pub mod forge;
// A server child process: log file, wait until ready, killed on drop; one raw HTTP request.
pub mod server;
// A GCS XML-API test server (in process, credential-checking) and the real fake-gcs-server.
pub mod gcs;

/// Asserts that `text` holds every one of `wants`, naming the first missing one.
#[track_caller]
pub fn assert_contains_all(text: &str, wants: &[&str]) {
    for want in wants {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

/// The backups a successful `list --output json` printed, as `<cluster>/<id>`, in its order.
#[track_caller]
pub fn listed_refs(out: &Output) -> Vec<String> {
    assert!(out.status.success(), "list failed: {}", stderr(out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["cluster"].as_str().unwrap(),
                m["id"].as_str().unwrap()
            )
        })
        .collect()
}
