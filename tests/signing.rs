// Signed backups (design §8): keys from `keygen --signing` and ssh-keygen, signatures that
// stock `ssh-keygen -Y verify` accepts, and backups forged with stock age, zstd and tar
// refused by verify, extract, restore and `latest` once allowed signers are set; prune never
// counts untrusted backups; copy carries signatures; list shows who signed.

use std::path::PathBuf;
use std::process::Command;

use crate::support::forge::*;
use crate::support::*;

/// A world with a signing key and an allowed_signers file naming it.
pub(crate) struct Signed {
    pub(crate) w: World,
    key: PathBuf,
    allowed: PathBuf,
}

impl Signed {
    pub(crate) fn new() -> Signed {
        let w = World::new();
        let key = w.path("signing.key");
        let out = cpvault_in(
            w.dir.path(),
            &["keygen", "--signing", "-o", key.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let public = stdout(&out).trim().to_string();
        assert!(public.starts_with("ssh-ed25519 "), "{public}");
        let allowed = w.path("allowed_signers");
        std::fs::write(&allowed, format!("backup@admin {public}\n")).unwrap();
        make_pki(&w.path("pki"));
        fake_snapshot(&w.path("snapshot.db"), 16);
        Signed { w, key, allowed }
    }

    pub(crate) fn backup(&self) -> String {
        self.w.backup(&[
            "--etcd-snapshot-file",
            "snapshot.db",
            "--pki-dir",
            "pki",
            "--signing-key",
            self.key.to_str().unwrap(),
        ])
    }

    pub(crate) fn allowed(&self) -> &str {
        self.allowed.to_str().unwrap()
    }

    pub(crate) fn id_key(&self) -> &str {
        self.w.key.to_str().unwrap()
    }

    /// `extract REF` into `to` with this world's key, under its allowed signers.
    pub(crate) fn extract_trusted(
        &self,
        reference: &str,
        to: &std::path::Path,
    ) -> std::process::Output {
        self.w.run(&[
            "extract",
            reference,
            "-i",
            self.id_key(),
            "--allowed-signers",
            self.allowed(),
            "--to",
            to.to_str().unwrap(),
        ])
    }
}

fn signature(w: &World, reference: &str) -> PathBuf {
    w.store.join(format!("{reference}.manifest.sig"))
}

/// How a forged backup carries a signature.
enum ForgedSig {
    None,
    CopiedFrom(String),
}

/// Rebuilds `genuine` as an attacker who can write to the store would, with stock age, zstd
/// and tar: `pki/ca.key` replaced, inner and outer manifests recomputed, stored under a new
/// id `minutes` later. Returns the forged reference.
fn forge(w: &World, genuine: &str, minutes: i64, sig: ForgedSig) -> String {
    let (id, created) = later_id(w, genuine, minutes);
    let (work, mut inner) = unpack(w, genuine, &format!("forge-{id}"));
    let evil = b"-----BEGIN PRIVATE KEY-----\nattacker\n-----END PRIVATE KEY-----\n";
    std::fs::write(work.join("pki/ca.key"), evil).unwrap();
    inner["id"] = id.clone().into();
    inner["created"] = created.clone().into();
    inner["completed"] = created.clone().into();
    for e in inner["entries"].as_array_mut().unwrap() {
        let path = e["path"].as_str().unwrap().to_string();
        let bytes = std::fs::read(work.join(&path)).unwrap();
        e["size"] = bytes.len().into();
        e["sha256"] = sha256_hex(&bytes).into();
    }
    std::fs::write(
        work.join("manifest.json"),
        serde_json::to_vec_pretty(&inner).unwrap(),
    )
    .unwrap();
    let tar = w.path(&format!("forge-{id}.tar"));
    repack(&work, &inner, &tar);
    let reference = seal(w, genuine, &id, &created, &tar, |outer| {
        for (o, i) in outer["entries"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .zip(inner["entries"].as_array().unwrap())
        {
            o["size"] = i["size"].clone();
        }
    });
    if let ForgedSig::CopiedFrom(from) = sig {
        std::fs::copy(signature(w, &from), signature(w, &reference)).unwrap();
    }
    std::fs::remove_dir_all(&work).unwrap();
    reference
}

#[test]
#[ignore = "needs age, zstd, tar and ssh-keygen (apt-get install age zstd tar openssh-client); CI runs it"]
fn forged_backups_are_refused_and_the_genuine_one_is_trusted() {
    for (tool, pkg) in [
        ("age", "age"),
        ("zstd", "zstd"),
        ("tar", "tar"),
        ("ssh-keygen", "openssh-client"),
    ] {
        require(tool, pkg);
    }
    let s = Signed::new();
    let w = &s.w;
    let genuine = s.backup();
    let unsigned = forge(w, &genuine, 60, ForgedSig::None);
    let copied = forge(w, &genuine, 120, ForgedSig::CopiedFrom(genuine.clone()));

    // The threat: without allowed signers, the forgery verifies deep and is "latest".
    let out = w.run(&["verify", &copied, "-i", s.id_key()]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("authorship not checked"),
        "{}",
        stderr(&out)
    );

    // Stock ssh-keygen accepts the genuine signature over the manifest's bytes.
    let st = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f", s.allowed(), "-I", "backup@admin"])
        .args(["-n", "cpvault", "-s"])
        .arg(signature(w, &genuine))
        .stdin(std::fs::File::open(w.manifest(&genuine)).unwrap())
        .output()
        .unwrap();
    assert!(st.status.success(), "ssh-keygen: {}", stderr(&st));
    // ... and refuses the copied signature over the forged manifest.
    let st = Command::new("ssh-keygen")
        .args(["-Y", "verify", "-f", s.allowed(), "-I", "backup@admin"])
        .args(["-n", "cpvault", "-s"])
        .arg(signature(w, &copied))
        .stdin(std::fs::File::open(w.manifest(&copied)).unwrap())
        .output()
        .unwrap();
    assert!(!st.status.success());

    // With allowed signers: verify fails the forgeries with the `signature` check, with and
    // without a key; the genuine one passes and names its signer.
    for forged in [&unsigned, &copied] {
        for with_key in [true, false] {
            let mut args = vec!["verify", forged.as_str(), "--allowed-signers", s.allowed()];
            if with_key {
                args.extend(["-i", s.id_key()]);
            }
            let out = w.run(&args);
            assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
            let line = stdout(&out)
                .lines()
                .find(|l| l.trim_start().starts_with("signature"))
                .map(String::from)
                .unwrap_or_default();
            assert!(line.contains("FAILED"), "{}", stdout(&out));
        }
    }
    let out = w.run(&[
        "verify",
        &genuine,
        "-i",
        s.id_key(),
        "--allowed-signers",
        s.allowed(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reports[0]["checks"][0]["name"], "signature");
    assert_eq!(reports[0]["checks"][0]["status"], "ok");
    assert_eq!(
        reports[0]["authorship"]["signer"]["principals"],
        "backup@admin"
    );

    // extract and restore --to-dir refuse before writing anything.
    for forged in [&unsigned, &copied] {
        let to = w.path("out");
        let out = s.extract_trusted(forged, &to);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            !to.exists(),
            "extract of an untrusted backup created its target"
        );
        let out = w.run(&[
            "restore",
            forged,
            "-i",
            s.id_key(),
            "--allowed-signers",
            s.allowed(),
            "--to-dir",
            to.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains("signature"), "{}", stderr(&out));
        assert!(
            !to.exists(),
            "restore of an untrusted backup created its target"
        );
        // Onto a node: refused before any connection is tried (port 1 has no sshd).
        let out = w.run(&[
            "restore",
            forged,
            "-i",
            s.id_key(),
            "--allowed-signers",
            s.allowed(),
            "--ssh",
            "root@127.0.0.1",
            "--ssh-port",
            "1",
            "--yes",
        ]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("nothing was changed"),
            "{}",
            stderr(&out)
        );
    }

    // latest resolves among trusted backups only: the genuine CA key comes back.
    let to = w.path("latest");
    let out = s.extract_trusted("admin/latest", &to);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read(to.join("pki/ca.key")).unwrap(),
        std::fs::read(w.path("pki/ca.key")).unwrap()
    );

    // Without allowed signers, restore refuses unless --allow-unsigned.
    let out = w.run(&[
        "restore",
        &genuine,
        "-i",
        s.id_key(),
        "--to-dir",
        w.path("unsigned-restore").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow-unsigned"),
        "{}",
        stderr(&out)
    );
    assert!(!w.path("unsigned-restore").exists());

    // list shows each backup's state and signer.
    let out = w.run(&["list", "--allowed-signers", s.allowed(), "--output", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state = |r: &str| {
        listed
            .iter()
            .find(|m| format!("admin/{}", m["id"].as_str().unwrap()) == r)
            .map(|m| m["signature"]["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state(&genuine), "trusted");
    assert_eq!(state(&unsigned), "untrusted");
    assert_eq!(state(&copied), "untrusted");
    let text = stdout(&w.run(&["list", "--allowed-signers", s.allowed()]));
    assert!(text.contains("trusted (backup@admin)"), "{text}");
    assert_eq!(text.matches("UNTRUSTED").count(), 2, "{text}");
}

/// A forged backup: the genuine manifest under a newer id (its archive copied), with the
/// genuine signature copied beside it. Untrusted, and cheap to make in bulk.
fn forge_cheap(w: &World, genuine: &str, minutes: i64) -> String {
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(genuine)).unwrap()).unwrap();
    let created: chrono::DateTime<chrono::Utc> = m["created"].as_str().unwrap().parse().unwrap();
    let created = created + chrono::TimeDelta::minutes(minutes);
    let id = format!(
        "{}-{:08x}",
        created.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    );
    m["id"] = id.clone().into();
    m["created"] = created.to_rfc3339().into();
    m["archive"]["key"] = format!("admin/{id}.tar.zst.age").into();
    let reference = format!("admin/{id}");
    std::fs::copy(w.archive(genuine), w.archive(&reference)).unwrap();
    std::fs::write(w.manifest(&reference), serde_json::to_vec(&m).unwrap()).unwrap();
    std::fs::copy(signature(w, genuine), signature(w, &reference)).unwrap();
    reference
}

#[test]
fn prune_keeps_the_newest_trusted_backups_whatever_is_forged_after_them() {
    let s = Signed::new();
    let w = &s.w;
    let genuine: Vec<String> = (0..3)
        .map(|_| {
            // Distinct seconds, so the ids sort as the creation times do.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            s.backup()
        })
        .collect();
    let forged: Vec<String> = (1..=10)
        .map(|i| forge_cheap(w, &genuine[2], 60 * i))
        .collect();
    let out = w.run(&[
        "prune",
        "--keep-last",
        "2",
        "--allowed-signers",
        s.allowed(),
        "--output",
        "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |k: &str| -> Vec<String> {
        plan[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["cluster"].as_str().unwrap(),
                    d["id"].as_str().unwrap()
                )
            })
            .collect()
    };
    assert_eq!(ids("keep"), vec![genuine[2].clone(), genuine[1].clone()]);
    assert_eq!(ids("remove"), vec![genuine[0].clone()]);
    assert_eq!(ids("untrusted").len(), 10);
    assert!(!w.manifest(&genuine[0]).exists());
    assert!(!signature(w, &genuine[0]).exists());
    assert!(!w.archive(&genuine[0]).exists());
    for f in &forged {
        assert!(
            w.manifest(f).exists(),
            "untrusted backups are left in place"
        );
    }
    // On request, the untrusted ones go, and the genuine ones stay.
    let out = w.run(&[
        "prune",
        "--keep-last",
        "2",
        "--allowed-signers",
        s.allowed(),
        "--remove-untrusted",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    for f in &forged {
        assert!(!w.manifest(f).exists() && !w.archive(f).exists());
    }
    for g in &genuine[1..] {
        assert!(w.manifest(g).exists() && signature(w, g).exists());
    }
    // --remove-untrusted without allowed signers is a usage error.
    let out = w.run(&["prune", "--keep-last", "2", "--remove-untrusted"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn copy_carries_signatures_and_signs_unsigned_backups_on_request() {
    let s = Signed::new();
    let w = &s.w;
    let signed = s.backup();
    let unsigned = w.backup(&["--etcd-snapshot-file", "snapshot.db"]);
    let forged = forge_cheap(w, &signed, 60);
    let target = w.path("target");
    let t = target.to_str().unwrap();
    // With allowed signers, the forged one is not copied (and the copy says so).
    let out = w.run(&[
        "copy",
        &signed,
        &forged,
        "--to",
        t,
        "--allowed-signers",
        s.allowed(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not copied"), "{}", stderr(&out));
    assert!(!target.join(format!("{forged}.manifest.json")).exists());
    assert_eq!(
        std::fs::read(target.join(format!("{signed}.manifest.sig"))).unwrap(),
        std::fs::read(signature(w, &signed)).unwrap()
    );
    // An unsigned backup copied with --signing-key arrives signed.
    let out = w.run(&[
        "copy",
        &unsigned,
        "--to",
        t,
        "--signing-key",
        s.key.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v = cpvault_in(
        w.dir.path(),
        &[
            "verify",
            "--all",
            "--store",
            t,
            "-i",
            s.id_key(),
            "--allowed-signers",
            s.allowed(),
        ],
    );
    assert!(v.status.success(), "{}", stdout(&v));
    assert_eq!(stdout(&v).matches("signed by backup@admin").count(), 2);
}

#[test]
#[ignore = "needs ssh-keygen (apt-get install openssh-client); CI runs it"]
fn signing_keys_from_keygen_and_ssh_keygen_and_the_ones_refused() {
    require("ssh-keygen", "openssh-client");
    let s = Signed::new();
    let w = &s.w;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // Never overwrites.
    let out = cpvault_in(
        w.dir.path(),
        &["keygen", "--signing", "-o", s.key.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // --signing needs -o: a private key is never printed.
    let out = cpvault_in(w.dir.path(), &["keygen", "--signing"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // ssh-keygen derives the same public key from the file.
    let derived = Command::new("ssh-keygen")
        .args(["-y", "-f"])
        .arg(&s.key)
        .output()
        .unwrap();
    let allowed = std::fs::read_to_string(&s.allowed).unwrap();
    let derived = stdout(&derived);
    let derived_key: Vec<&str> = derived.split_whitespace().take(2).collect();
    assert!(allowed.contains(&derived_key.join(" ")), "{allowed}");

    // A key made by ssh-keygen signs too.
    let theirs = w.path("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops", "-f"])
        .arg(&theirs)
        .status()
        .unwrap();
    assert!(st.success());
    let public = std::fs::read_to_string(theirs.with_extension("pub")).unwrap();
    let allowed2 = w.path("allowed2");
    std::fs::write(&allowed2, format!("ops@admin {public}")).unwrap();
    let r = w.backup(&[
        "--etcd-snapshot-file",
        "snapshot.db",
        "--signing-key",
        theirs.to_str().unwrap(),
    ]);
    let out = w.run(&[
        "verify",
        &r,
        "--allowed-signers",
        allowed2.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("signed by ops@admin"),
        "{}",
        stdout(&out)
    );
    // ... but not under the other allowed signers.
    let out = w.run(&["verify", &r, "--allowed-signers", s.allowed()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("not in the allowed signers"),
        "{}",
        stdout(&out)
    );

    // Refused keys: passphrase-protected, not ed25519, not a key; each exits 2 before any
    // backup is written.
    let enc = w.path("enc");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
        .arg(&enc)
        .status()
        .unwrap()
        .success());
    let rsa = w.path("rsa");
    assert!(Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa)
        .status()
        .unwrap()
        .success());
    for (key, why) in [
        (&enc, "passphrase-protected"),
        (&rsa, "ed25519"),
        (&s.allowed, "not an OpenSSH private key"),
    ] {
        let out = w.run(&[
            "backup",
            "--cluster",
            "admin",
            "-r",
            &w.recipient,
            "--etcd-snapshot-file",
            "snapshot.db",
            "--signing-key",
            key.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    // A broken allowed_signers file names its line.
    let bad = w.path("bad_signers");
    std::fs::write(&bad, "# ok\nops@admin ssh-ed25519 not-base64\n").unwrap();
    let out = w.run(&["list", "--allowed-signers", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad_signers:2"), "{}", stderr(&out));
}
