use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use crate::support::*;

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn reference() -> String {
    std::fs::read_to_string(data().join("v1/reference.txt"))
        .unwrap()
        .trim()
        .to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Runs a deep verify of the fixture store `case` and returns (exit code, stdout+stderr).
fn verify_case(case: &str, key: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data().join(case), &dir.path().join("store"));
    let key = data().join("v1").join(key);
    let out = cpvault_in(
        dir.path(),
        &[
            "verify",
            "--store",
            "store",
            "--all",
            "-i",
            key.to_str().unwrap(),
        ],
    );
    assert_no_panic(&out);
    (
        out.status.code(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

fn failed_check(text: &str, name: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with(name) && l.contains("FAILED"))
}

#[test]
fn the_checked_in_sample_verifies_cleanly() {
    let (code, text) = verify_case("v1/store", "key.txt");
    assert_eq!(code, Some(0), "{text}");
}

/// Asserts that verifying fixture `case` exits 3 with each of `checks` failed; returns the output.
fn assert_fails(case: &str, key: &str, checks: &[&str]) -> String {
    let (code, text) = verify_case(case, key);
    assert_eq!(code, Some(3), "{text}");
    for c in checks {
        assert!(failed_check(&text, c), "{c} should fail: {text}");
    }
    text
}

#[test]
fn truncated_archive_fails_ciphertext_and_decrypt() {
    assert_fails("corrupt/truncated", "key.txt", &["ciphertext", "decrypt"]);
}

#[test]
fn bit_flipped_archive_fails_ciphertext_and_decrypt() {
    assert_fails("corrupt/bit-flipped", "key.txt", &["ciphertext", "decrypt"]);
}

#[test]
fn trailing_garbage_fails_ciphertext_size() {
    let text = assert_fails("corrupt/trailing-garbage", "key.txt", &["ciphertext"]);
    assert!(text.contains("bytes, the manifest says"), "{text}");
}

#[test]
fn edited_outer_manifest_fails_the_manifests_check_naming_the_fields() {
    let text = assert_fails("corrupt/edited-manifest", "key.txt", &["manifests"]);
    assert!(text.contains("created") && text.contains("tags"), "{text}");
}

#[test]
fn a_future_major_version_is_refused_with_a_clear_message() {
    let (code, text) = verify_case("corrupt/future-version", "key.txt");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        text.contains("manifest version 2 is not supported") && text.contains("upgrade cpvault"),
        "{text}"
    );
}

#[test]
fn the_wrong_identity_fails_decrypt_naming_the_key() {
    let (code, text) = verify_case("v1/store", "wrong-key.txt");
    assert_eq!(code, Some(3), "{text}");
    assert!(
        failed_check(&text, "decrypt") && text.contains("none of the given identities"),
        "{text}"
    );
    // The ciphertext itself is intact, and verify says so.
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("ciphertext") && l.contains(" ok ")),
        "{text}"
    );
}

/// Flips one byte of the sample archive at `offset` in a fresh copy of the store; with
/// `fix_manifest`, also rewrites the outer manifest's size and sha256 to match, so only the
/// inner layers can catch it.
fn flipped(offset: usize, fix_manifest: bool) -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&data().join("v1/store"), &dir.path().join("store"));
    let r = reference();
    let archive = dir.path().join("store").join(format!("{r}.tar.zst.age"));
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[offset] ^= 1 << (offset % 8);
    std::fs::write(&archive, &bytes).unwrap();
    if fix_manifest {
        let mp = dir.path().join("store").join(format!("{r}.manifest.json"));
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
        m["archive"]["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
        std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    }
    (dir, bytes)
}

#[test]
fn any_single_flipped_byte_makes_verify_exit_3_without_panicking() {
    let key = data().join("v1/key.txt");
    let size = std::fs::metadata(data().join(format!("v1/store/{}.tar.zst.age", reference())))
        .unwrap()
        .len() as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut offsets: Vec<usize> = (0..200).map(|_| rng.random_range(0..size)).collect();
    offsets.extend([0, 5, 30, size / 2, size - 1]);
    for (i, offset) in offsets.iter().enumerate() {
        // Every fifth case also fixes the outer manifest's hash: the deep layers must catch it alone.
        let fix = i % 5 == 0;
        let (dir, _) = flipped(*offset, fix);
        let out = cpvault_in(
            dir.path(),
            &[
                "verify",
                "--store",
                "store",
                "--all",
                "-i",
                key.to_str().unwrap(),
            ],
        );
        assert_no_panic(&out);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(
            out.status.code(),
            Some(3),
            "offset {offset} (manifest fixed: {fix}): {text}"
        );
        if fix {
            assert!(
                ["decrypt", "decompress", "format", "entries"]
                    .iter()
                    .any(|c| failed_check(&text, c)),
                "offset {offset}: no inner layer named the failure: {text}"
            );
        } else {
            assert!(failed_check(&text, "ciphertext"), "offset {offset}: {text}");
        }
    }
}

#[test]
fn a_flipped_byte_is_caught_without_a_key_too() {
    let size = std::fs::metadata(data().join(format!("v1/store/{}.tar.zst.age", reference())))
        .unwrap()
        .len() as usize;
    let (dir, _) = flipped(size / 3, false);
    let out = cpvault_in(dir.path(), &["verify", "--store", "store", "--all"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        failed_check(&stdout(&out), "ciphertext"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn extract_of_an_archive_corrupt_in_a_late_chunk_leaves_nothing_behind() {
    // Several age chunks of incompressible snapshot data come first, so extract has written
    // files before it reaches the flipped byte near the end.
    let w = World::new();
    let mut data = vec![0u8; 400 * 1024];
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(w.path("s.db"), &data).unwrap();
    make_pki(&w.path("pki"));
    let reference = w.backup(&["--etcd-snapshot-file", "s.db", "--pki-dir", "pki"]);
    let archive = w.archive(&reference);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() - 200;
    bytes[at] ^= 0x01;
    std::fs::write(&archive, &bytes).unwrap();
    let mp = w.manifest(&reference);
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mp).unwrap()).unwrap();
    m["archive"]["sha256"] = hex::encode(Sha256::digest(&bytes)).into();
    std::fs::write(&mp, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let to = w.path("out");
    let out = w.run(&[
        "extract",
        &reference,
        "-i",
        w.key.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("nothing was left"),
        "{}",
        stderr(&out)
    );
    assert!(failed_check(&stderr(&out), "decrypt"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&to).map(|d| d.count()).unwrap_or(0), 0);
}

// extract writes into a hidden work dir and moves it into --to only after every byte
// verified: a corrupted archive leaves --to empty and no work dir behind.
#[test]
fn a_failed_extract_leaves_neither_files_nor_its_work_dir() {
    let w = World::new();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snap.db"), 600);
    let r = w.backup(&["--etcd-snapshot-file", "snap.db", "--pki-dir", "pki"]);
    let archive = w.archive(&r);
    let mut bytes = std::fs::read(&archive).unwrap();
    let at = bytes.len() * 3 / 4;
    bytes[at] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();
    let to = w.path("out");
    let out = w.run(&[
        "extract",
        &r,
        "-i",
        w.key.to_str().unwrap(),
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let left: Vec<_> = std::fs::read_dir(&to)
        .map(|d| d.count())
        .into_iter()
        .collect();
    assert!(left.iter().all(|n| *n == 0), "files left in --to");
    let work: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".cpvault-extract-")
        })
        .collect();
    assert!(work.is_empty(), "work dir left: {work:?}");
}
