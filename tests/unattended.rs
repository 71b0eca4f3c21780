// Running unattended (design §9): status and its exit 4, drill against a real etcd (key count
// and revision, key pairs, no plaintext left), metrics checked by promtool and served by a real
// Pushgateway, the `run` scheduler entry point, shell completions and the man page.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// A real PKI made by openssl: a CA, an apiserver certificate it signed, the SA key pair.
fn real_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.crt -days 365 -subj /CN=kubernetes 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 100 2>/dev/null
openssl genpkey -algorithm ec -pkeyopt ec_paramgen_curve:prime256v1 -out sa.key 2>/dev/null
openssl pkey -in sa.key -pubout -out sa.pub
rm -f apiserver.csr ca.srl
chmod 600 ca.key apiserver.key sa.key";
    let st = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(st.success(), "openssl");
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

/// A world whose backup of a real etcd (with `keys` keys) and a real PKI is committed.
fn backed_up(keys: usize) -> (World, Etcd, String) {
    require("etcd", "etcd-server");
    require("etcdctl", "etcd-client");
    require("openssl", "openssl");
    let w = World::new();
    let etcd = Etcd::start();
    for i in 0..keys {
        etcd.put(&format!("/registry/configmaps/default/k{i}"), "v");
    }
    real_pki(&w.path("pki"));
    let r = w.backup(&["--etcd-endpoint", &etcd.endpoint, "--pki-dir", "pki"]);
    (w, etcd, r)
}

#[test]
#[ignore = "needs etcd, etcdctl and openssl (apt-get install etcd-server etcd-client openssl); CI runs it"]
fn drill_proves_a_good_backup_and_status_follows_it() {
    let (w, etcd, r) = backed_up(12);
    etcd.put("/registry/late", "written after the backup");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&r)).unwrap()).unwrap();
    assert_eq!(
        manifest["etcd"]["keys"], 12,
        "the backup records the live key count"
    );
    let recorded_rev = manifest["etcd"]["revision"].as_i64().unwrap();

    let tmp = w.path("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let mut cmd = cpvault_cmd(w.dir.path());
    let out = cmd
        .env("TMPDIR", &tmp)
        .args([
            "drill",
            &r,
            "-i",
            w.key.to_str().unwrap(),
            "--output",
            "json",
        ])
        .args(["--store", w.store.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let rec = &json(&out)[0];
    assert_eq!(rec["ok"], true, "{rec:#}");
    assert_eq!(rec["keys"], 12);
    assert!(rec["revision"].as_i64().unwrap() >= recorded_rev);
    // The restored copy checked by hand with etcdctl: same count at the same revision.
    let extracted = w.extract(&r, "by-hand");
    let restored = restore_snapshot(&extracted.join("etcd/snapshot.db"), &w.path("by-hand-data"));
    let count = restored.ctl(&["get", "", "--prefix", "--keys-only", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&count.stdout).unwrap();
    assert_eq!(v["count"], 12);
    assert_eq!(v["header"]["revision"], rec["revision"]);
    let names: Vec<&str> = rec["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "verify",
            "restore",
            "etcd",
            "revision",
            "keys",
            "key-pairs",
            "certificates"
        ]
    );
    let pairs = rec["checks"][5]["detail"].as_str().unwrap();
    assert!(
        pairs.contains("ca.key") && pairs.contains("apiserver.key") && pairs.contains("sa.key"),
        "{pairs}"
    );
    assert_eq!(rec["certificates"][0]["path"], "pki/apiserver.crt");
    // No plaintext left behind, and the record sits beside the backup.
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "drill left files in TMPDIR"
    );
    assert!(w.store.join(format!("{r}.drill.json")).exists());

    let status = w.run(&["status", "--cluster", "admin", "--output", "json"]);
    assert!(status.status.success(), "{}", stdout(&status));
    let s = &json(&status)[0];
    assert_eq!(s["ok"], true);
    assert_eq!(s["newest"], r.as_str());
    assert_eq!(s["last_drill"]["ok"], true);
}

#[test]
#[ignore = "needs etcd, etcdctl and openssl (apt-get install etcd-server etcd-client openssl); CI runs it"]
fn a_ca_key_that_is_not_the_certificates_fails_the_drill_and_status() {
    require("openssl", "openssl");
    let w = World::new();
    real_pki(&w.path("pki"));
    // Another CA's key in place of ca.key.
    real_pki(&w.path("other"));
    std::fs::copy(w.path("other/ca.key"), w.path("pki/ca.key")).unwrap();
    require("etcd", "etcd-server");
    // A snapshot etcd can restore: take one from a real etcd.
    let etcd = Etcd::start();
    etcd.put("/a", "b");
    etcd.snapshot(&w.path("snapshot.db"));
    let r = w.backup(&["--etcd-snapshot-file", "snapshot.db", "--pki-dir", "pki"]);
    let out = w.run(&["drill", &r, "-i", w.key.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let line = text.lines().find(|l| l.contains("key-pairs")).unwrap();
    assert!(line.contains("FAILED") && line.contains("ca.key"), "{text}");
    let status = w.run(&["status", "--cluster", "admin", "--output", "json"]);
    assert_eq!(status.status.code(), Some(4), "{}", stdout(&status));
    let s = &json(&status)[0];
    assert_eq!(s["last_drill"]["ok"], false);
    assert!(s["problems"][0].as_str().unwrap().contains("drill"));
}

#[test]
fn status_is_0_when_fresh_and_4_when_stale_or_missing() {
    let w = World::new();
    fake_snapshot(&w.path("snapshot.db"), 4);
    let r = w.backup(&["--etcd-snapshot-file", "snapshot.db"]);
    let out = w.run(&["status", "--cluster", "admin"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("never"),
        "no drill yet: {}",
        stdout(&out)
    );
    // No backup at all.
    let out = w.run(&["status", "--cluster", "other", "--output", "json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert_eq!(json(&out)[0]["problems"][0], "no backup");
    // Stale: the newest backup is three days old against a 26h maximum.
    let path = w.manifest(&r);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old = chrono::Utc::now() - chrono::TimeDelta::days(3);
    m["created"] = old.to_rfc3339().into();
    std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = w.run(&["status", "--all", "--output", "json"]);
    assert_eq!(out.status.code(), Some(4), "{}", stdout(&out));
    assert!(json(&out)[0]["problems"][0]
        .as_str()
        .unwrap()
        .contains("older than"));
    // A longer maximum age accepts it.
    let out = w.run(&["status", "--all", "--max-age", "4d"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// A real Pushgateway on loopback, killed on drop.
struct Pushgateway(Child, u16);

impl Pushgateway {
    fn start() -> Pushgateway {
        require("prometheus-pushgateway", "prometheus-pushgateway");
        let port = free_port();
        let child = Command::new("prometheus-pushgateway")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let gw = Pushgateway(child, port);
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return gw;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("pushgateway did not start");
    }

    fn metrics(&self) -> String {
        let o = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{}/metrics", self.1)])
            .output()
            .unwrap();
        assert!(o.status.success());
        stdout(&o)
    }
}

impl Drop for Pushgateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs promtool, prometheus-pushgateway and curl (apt-get install prometheus prometheus-pushgateway curl); CI runs it"]
fn metrics_pass_promtool_merge_per_cluster_and_reach_a_pushgateway() {
    require("promtool", "prometheus");
    require("curl", "curl");
    let w = World::new();
    fake_snapshot(&w.path("snapshot.db"), 4);
    let prom = w.path("cpvault.prom");
    let gw = Pushgateway::start();
    let url = format!("http://127.0.0.1:{}", gw.1);
    for cluster in ["admin", "user1"] {
        let out = w.run(&[
            "backup",
            "--cluster",
            cluster,
            "-r",
            &w.recipient,
            "--etcd-snapshot-file",
            "snapshot.db",
            "--metrics-file",
            prom.to_str().unwrap(),
            "--pushgateway",
            &url,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A failed run is recorded as such, and keeps the last success time.
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "missing.db",
        "--metrics-file",
        prom.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let out = w.run(&[
        "prune",
        "--keep-last",
        "5",
        "--metrics-file",
        prom.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let text = std::fs::read_to_string(&prom).unwrap();
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool: {}\n{text}",
        stderr(&check)
    );
    assert_contains_all(
        &text,
        &[
            r#"cpvault_last_run_success{cluster="admin",operation="backup"} 0"#,
            r#"cpvault_last_run_success{cluster="user1",operation="backup"} 1"#,
            r#"cpvault_last_success_timestamp_seconds{cluster="admin",operation="backup"}"#,
            r#"cpvault_last_run_duration_seconds{cluster="user1",operation="backup"}"#,
            r#"cpvault_backup_size_bytes{cluster="user1",layer="stored"}"#,
            r#"cpvault_backup_size_bytes{cluster="admin",layer="data"}"#,
            r#"cpvault_last_run_success{cluster="admin",operation="prune"} 1"#,
            r#"cpvault_backups{cluster="admin"} 1"#,
            r#"cpvault_backups{cluster="user1"} 1"#,
        ],
    );
    let pushed = gw.metrics();
    assert_contains_all(
        &pushed,
        &[
            r#"cpvault_last_run_success{cluster="admin",instance="",job="cpvault",operation="backup"} 1"#,
            r#"cpvault_last_run_success{cluster="user1",instance="",job="cpvault",operation="backup"} 1"#,
        ],
    );
    // An unreachable Pushgateway fails the run loudly, after the backup itself succeeded.
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "snapshot.db",
        "--pushgateway",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("pushgateway"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs etcd, etcdctl and openssl (apt-get install etcd-server etcd-client openssl); CI runs it"]
fn run_backs_up_prunes_and_drills_every_configured_cluster() {
    require("etcd", "etcd-server");
    require("openssl", "openssl");
    let w = World::new();
    let etcd = Etcd::start();
    etcd.put("/registry/a", "1");
    real_pki(&w.path("pki"));
    let config = w.path("config.toml");
    let prom = w.path("cpvault.prom");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\nrecipients = [\"{}\"]\nidentities = [\"{}\"]\nmetrics_file = \"{}\"\n\
             [clusters.admin]\netcd_endpoints = [\"{}\"]\npki_dir = \"{}\"\n\
             [clusters.admin.retention]\nkeep_last = 2\n",
            w.store.display(),
            w.recipient,
            w.key.display(),
            prom.display(),
            etcd.endpoint,
            w.path("pki").display()
        ),
    )
    .unwrap();
    let out = cpvault_in(w.dir.path(), &["--config", config.to_str().unwrap(), "run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&prom).unwrap();
    for op in ["backup", "prune", "drill"] {
        let want = format!(r#"cpvault_last_run_success{{cluster="admin",operation="{op}"}} 1"#);
        assert!(text.contains(&want), "missing {want} in:\n{text}");
    }
    // A second run does not drill again (the last drill is fresh), and status is healthy.
    let out = cpvault_in(w.dir.path(), &["--config", config.to_str().unwrap(), "run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cpvault drill"), "{}", stderr(&out));
    let out = cpvault_in(
        w.dir.path(),
        &["--config", config.to_str().unwrap(), "status", "--all"],
    );
    assert!(out.status.success(), "{}", stdout(&out));
    // A cluster whose backup fails makes the run fail, and says which step.
    let broken = w.path("broken.toml");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&etcd.endpoint, "http://127.0.0.1:1"),
    )
    .unwrap();
    let out = cpvault_in(w.dir.path(), &["--config", broken.to_str().unwrap(), "run"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("run: backup"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs bash and man (apt-get install bash man-db); CI runs it"]
fn completions_source_in_bash_and_the_man_page_renders() {
    require("man", "man-db");
    let w = World::new();
    let out = cpvault_in(w.dir.path(), &["completions", "bash"]);
    assert!(out.status.success());
    let script = w.path("cpvault.bash");
    std::fs::write(&script, &out.stdout).unwrap();
    // Sourced, it registers a completion function that offers the subcommands.
    let probe = format!(
        "source '{}' && COMP_WORDS=(cpvault dr) COMP_CWORD=1 COMP_LINE='cpvault dr' COMP_POINT=10 && _cpvault cpvault dr cpvault && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let o = Command::new("bash").arg("-c").arg(&probe).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).lines().any(|l| l == "drill"), "{}", stdout(&o));
    let out = cpvault_in(w.dir.path(), &["man"]);
    assert!(out.status.success());
    let page = w.path("cpvault.1");
    std::fs::write(&page, &out.stdout).unwrap();
    let o = Command::new("man")
        .args(["-l", page.to_str().unwrap()])
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("cpvault") && text.contains("backup"),
        "{text}"
    );
}

// The config.toml the CronJob mounts must be one cpvault accepts (keys such as pushgateway
// and max_age are real settings), so a scheduled run does not die on its own config.
#[test]
fn the_shipped_cronjob_config_loads() {
    let cm = crate::deploy::manifests("kubernetes/configmap.yaml");
    let text = cm[0]["data"]["config.toml"].as_str().unwrap();
    let w = World::new();
    let config = w.path("config.toml");
    std::fs::write(&config, text).unwrap();
    std::fs::create_dir_all(&w.store).unwrap();
    // The store is overridden by a local, empty one: nothing leaves this machine. The
    // configured clusters have no backup, so status says so (exit 4), not a config error.
    let out = w.run(&["--config", config.to_str().unwrap(), "status", "--all"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("admin"), "{}", stdout(&out));
}

// A scheduled run against S3 with no credentials reported a raw failed request to the cloud
// metadata address instead of naming the settings it looked for. (The metadata endpoint is
// pointed at a closed loopback port: no test talks to anything outside 127.0.0.0/8.)
#[test]
fn an_s3_store_without_credentials_names_the_settings_it_looked_for() {
    let w = World::new();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let vars = [
        ("AWS_METADATA_ENDPOINT", closed.as_str()),
        ("AWS_ENDPOINT_URL", closed.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("CPVAULT_STORE_MAX_RETRIES", "0"),
        ("CPVAULT_STORE_RETRY_TIMEOUT", "1"),
    ];
    let out = cpvault_with(
        w.dir.path(),
        pairs(&vars),
        &["list", "--store", "s3://backups/cpvault"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("no S3 credentials were given") && e.contains("AWS_ACCESS_KEY_ID"),
        "{e}"
    );
}
