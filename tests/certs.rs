//! Certificate facts: a backup of a PKI of real certificates records each one's subject,
//! issuer, validity and key state; `show` lists them with the days left, `list` flags a
//! backup holding an expired certificate or one expiring within 30 days (text and JSON), a
//! file that is not a certificate only warns, and keys in the formats openssl writes (PKCS#1,
//! SEC1, PKCS#8) are matched. Restore's refusal of expired certificates is in
//! `restore::certs`.

use crate::support::tls::{day_from_now, LeafKey, TestCa};
use crate::support::*;

fn list_json(w: &World) -> Vec<serde_json::Value> {
    let out = w.run(&["list", "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn row<'a>(rows: &'a [serde_json::Value], reference: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| {
            format!(
                "{}/{}",
                r["cluster"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ) == reference
        })
        .unwrap()
}

#[test]
fn show_lists_certificate_expiry_and_list_flags_backups_that_need_renewal() {
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);

    // Healthy: every certificate valid for years.
    let good = w.path("good");
    let ca = TestCa::new(&good, "ca");
    ca.issue(&good, "apiserver", day_from_now(400), LeafKey::Own);
    let healthy = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "good"]);

    // Soon: the apiserver certificate ends in 10 days.
    let soon_dir = w.path("soon");
    let ca = TestCa::new(&soon_dir, "ca");
    ca.issue(&soon_dir, "apiserver", day_from_now(10), LeafKey::Own);
    let soon = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "soon"]);

    // Expired, with a key of another pair, a CA bundle without key, and a broken file.
    let bad = w.path("bad");
    let ca = TestCa::new(&bad, "ca");
    ca.issue(&bad, "apiserver", day_from_now(200), LeafKey::Own);
    ca.issue(&bad, "front-proxy-client", (2021, 1, 1), LeafKey::Other);
    ca.issue(&bad, "etcd/peer", day_from_now(200), LeafKey::Absent);
    std::fs::write(bad.join("broken.crt"), "not a certificate").unwrap();
    let out = w.run(&[
        "backup",
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--etcd-snapshot-file",
        "s.db",
        "--pki-dir",
        "bad",
    ]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("pki/broken.crt is not a certificate cpvault can read"),
        "{err}"
    );
    assert!(
        err.contains("pki/front-proxy-client.crt expired 2021-01-01"),
        "{err}"
    );
    let expired = stdout(&out).trim().to_string();
    assert_schema_valid(
        &serde_json::from_slice(&std::fs::read(w.manifest(&expired)).unwrap()).unwrap(),
    );

    // show: every certificate with subject, notAfter, days left and key state.
    let shown = w.run(&["show", &expired]);
    let text = stdout(&shown);
    assert!(shown.status.success(), "{}", stderr(&shown));
    assert!(text.contains("certificates: 5 (1 EXPIRED)"), "{text}");
    let line = |path: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(path))
            .unwrap_or_else(|| panic!("{path} not shown:\n{text}"))
            .to_string()
    };
    let api = line("pki/apiserver.crt");
    assert!(
        api.contains("CN=apiserver") && api.contains("days left") && api.ends_with("key ok"),
        "{api}"
    );
    let fp = line("pki/front-proxy-client.crt");
    assert!(
        fp.contains("notAfter 2021-01-01T00:00:00Z")
            && fp.contains("EXPIRED")
            && fp.ends_with("key mismatch"),
        "{fp}"
    );
    assert!(line("pki/etcd/peer.crt").ends_with("key missing"));
    assert!(line("pki/ca.crt").ends_with("key ok"));
    assert!(line("pki/broken.crt").contains("not parseable"));
    let shown_soon = stdout(&w.run(&["show", &soon]));
    assert!(
        shown_soon.contains("1 expiring within 30 days") && shown_soon.contains("RENEW SOON"),
        "{shown_soon}"
    );

    // show --output json: the recorded facts.
    let json: serde_json::Value =
        serde_json::from_slice(&w.run(&["show", &expired, "--output", "json"]).stdout).unwrap();
    let certs = json["certificates"].as_array().unwrap();
    let fact = |p: &str| certs.iter().find(|c| c["path"] == p).unwrap().clone();
    assert_eq!(fact("pki/front-proxy-client.crt")["key"], "mismatch");
    assert_eq!(fact("pki/front-proxy-client.crt")["issuer"], "CN=ca");
    assert_eq!(
        fact("pki/front-proxy-client.crt")["not_after"],
        "2021-01-01T00:00:00Z"
    );
    assert_eq!(fact("pki/etcd/peer.crt")["key"], "missing");
    assert!(fact("pki/broken.crt")["error"].is_string());
    assert!(fact("pki/broken.crt").get("not_after").is_none());

    // list: text column and JSON.
    let table = stdout(&w.run(&["list"]));
    let listed = |reference: &str| {
        table
            .lines()
            .find(|l| l.starts_with(reference))
            .unwrap()
            .to_string()
    };
    assert!(table.lines().next().unwrap().contains("CERTS"), "{table}");
    assert!(listed(&expired).contains("1 EXPIRED"), "{table}");
    assert!(listed(&soon).contains("1 EXPIRING"), "{table}");
    assert!(
        !listed(&healthy).contains("EXPIR") && listed(&healthy).contains(" ok "),
        "{table}"
    );
    let rows = list_json(&w);
    let flagged = |r: &str| -> Vec<(String, bool)> {
        row(&rows, r)["expiring_certificates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["path"].as_str().unwrap().to_string(),
                    c["expired"].as_bool().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        flagged(&expired),
        [("pki/front-proxy-client.crt".to_string(), true)]
    );
    assert_eq!(flagged(&soon), [("pki/apiserver.crt".to_string(), false)]);
    assert!(flagged(&healthy).is_empty());
    let days = row(&rows, &soon)["expiring_certificates"][0]["days_left"]
        .as_i64()
        .unwrap();
    assert!((9..=10).contains(&days), "{days}");
}

#[test]
fn a_backup_without_certificate_facts_lists_and_shows_as_before() {
    // Backups written before cpvault recorded facts have no `certificates` field.
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let reference = w.backup(&["--etcd-snapshot-file", "s.db"]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&reference)).unwrap()).unwrap();
    assert!(m.get("certificates").is_none(), "{m}");
    let table = stdout(&w.run(&["list"]));
    let line = table.lines().find(|l| l.starts_with(&reference)).unwrap();
    assert!(line.contains(" - "), "{table}");
    assert!(row(&list_json(&w), &reference)["expiring_certificates"]
        .as_array()
        .unwrap()
        .is_empty());
    let shown = stdout(&w.run(&["show", &reference]));
    assert!(!shown.contains("certificates:"), "{shown}");
}

#[test]
#[ignore = "needs openssl (apt-get install openssl); CI runs it"]
fn keys_as_openssl_writes_them_match_their_certificates() {
    require("openssl", "openssl");
    let w = World::new();
    fake_snapshot(&w.path("s.db"), 2);
    let pki = w.path("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .current_dir(&pki)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
    };
    // RSA, key as PKCS#1 ("RSA PRIVATE KEY", what kubeadm writes).
    openssl(&["genrsa", "-traditional", "-out", "ca.key", "2048"]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=kubernetes",
    ]);
    // ECDSA, key as SEC1 ("EC PRIVATE KEY").
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "front-proxy-ca.key",
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "front-proxy-ca.key",
        "-out",
        "front-proxy-ca.crt",
        "-days",
        "20",
        "-subj",
        "/CN=front-proxy-ca",
    ]);
    // Ed25519, key as PKCS#8 ("PRIVATE KEY"); and RSA PKCS#8 under another's name.
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", "sa.key"]);
    openssl(&[
        "req", "-x509", "-new", "-key", "sa.key", "-out", "sa.crt", "-days", "365", "-subj",
        "/CN=sa",
    ]);
    openssl(&["genpkey", "-algorithm", "rsa", "-out", "apiserver.key"]);
    std::fs::copy(pki.join("ca.crt"), pki.join("apiserver.crt")).unwrap();
    let reference = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "pki"]);
    let json: serde_json::Value =
        serde_json::from_slice(&w.run(&["show", &reference, "--output", "json"]).stdout).unwrap();
    let key = |p: &str| {
        json["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p)
            .unwrap_or_else(|| panic!("{p}: {json}"))["key"]
            .clone()
    };
    assert_eq!(key("pki/ca.crt"), "match");
    assert_eq!(key("pki/front-proxy-ca.crt"), "match");
    assert_eq!(key("pki/sa.crt"), "match");
    assert_eq!(key("pki/apiserver.crt"), "mismatch");
    let table = stdout(&w.run(&["list"]));
    assert!(table.contains("1 EXPIRING"), "{table}");
}
