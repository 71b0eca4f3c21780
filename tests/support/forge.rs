//! Building backups as an attacker who can write to the store would: with stock age, zstd and
//! tar, from a genuine backup (the recipient is public, so anyone can). Used by the signing
//! and hostile-store tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::World;

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Runs a bash script (`set -euo pipefail`) and asserts it succeeded.
pub fn sh(script: &str) {
    let st = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail; {script}"))
        .stderr(Stdio::inherit())
        .status()
        .unwrap();
    assert!(st.success(), "{script}");
}

/// A backup id `minutes` after `genuine`'s creation time, and that time.
pub fn later_id(w: &World, genuine: &str, minutes: i64) -> (String, String) {
    let outer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(genuine)).unwrap()).unwrap();
    let created: chrono::DateTime<chrono::Utc> =
        outer["created"].as_str().unwrap().parse().unwrap();
    let created = created + chrono::TimeDelta::minutes(minutes);
    let id = format!(
        "{}-{:08x}",
        created.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    );
    (id, created.to_rfc3339())
}

/// Encrypts `tar` (plain tar bytes) with stock zstd and age to `w`'s recipient as backup `id`
/// and writes its outer manifest (see [`describe`]). Returns the reference.
pub fn seal(
    w: &World,
    genuine: &str,
    id: &str,
    created: &str,
    tar: &Path,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    seal_with(w, genuine, id, created, tar, "zstd -q -c", edit)
}

/// [`seal`] with another zstd command line (`zstd` reading the tar on stdin, so the frame
/// does not record the content size).
pub fn seal_with(
    w: &World,
    genuine: &str,
    id: &str,
    created: &str,
    tar: &Path,
    zstd: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let archive = w.store.join(format!("admin/{id}.tar.zst.age"));
    sh(&format!(
        "{zstd} < '{}' | age -r '{}' > '{}'",
        tar.display(),
        w.recipient,
        archive.display()
    ));
    describe(w, genuine, id, created, edit)
}

/// Writes the outer manifest of the archive already stored as backup `id`: `genuine`'s, with
/// `edit` applied, then the new id, times and the ciphertext's size and sha256.
pub fn describe(
    w: &World,
    genuine: &str,
    id: &str,
    created: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> String {
    let ciphertext = std::fs::read(w.store.join(format!("admin/{id}.tar.zst.age"))).unwrap();
    let mut outer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(genuine)).unwrap()).unwrap();
    edit(&mut outer);
    outer["id"] = id.into();
    outer["created"] = created.into();
    outer["completed"] = created.into();
    outer["archive"]["key"] = format!("admin/{id}.tar.zst.age").into();
    outer["archive"]["size"] = ciphertext.len().into();
    outer["archive"]["sha256"] = sha256_hex(&ciphertext).into();
    let reference = format!("admin/{id}");
    std::fs::write(
        w.manifest(&reference),
        serde_json::to_vec_pretty(&outer).unwrap(),
    )
    .unwrap();
    reference
}

/// Decrypts `genuine` with stock tools into a new work dir and returns it with the inner
/// manifest.
pub fn unpack(w: &World, genuine: &str, name: &str) -> (PathBuf, serde_json::Value) {
    let work = w.path(name);
    std::fs::create_dir_all(&work).unwrap();
    sh(&format!(
        "age -d -i '{}' '{}' | zstd -d | tar -x -p -C '{}'",
        w.key.display(),
        w.archive(genuine).display(),
        work.display()
    ));
    let inner =
        serde_json::from_slice(&std::fs::read(work.join("manifest.json")).unwrap()).unwrap();
    (work, inner)
}

/// Tars `work` as stock tar would for an archive: `format.json`, the inner manifest's entries
/// in its order, `manifest.json` last (POSIX format, no directory entries).
pub fn repack(work: &Path, inner: &serde_json::Value, tar: &Path) {
    let mut names = vec!["format.json".to_string()];
    names.extend(
        inner["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string()),
    );
    names.push("manifest.json".into());
    sh(&format!(
        "tar -c --no-recursion --format=posix -f '{}' -C '{}' {}",
        tar.display(),
        work.display(),
        names.join(" ")
    ));
}
