// A hostile store (design §8): archives and manifests built by someone who can write to the
// store, with stock age and zstd over hand-made tar bytes or stock tar. Verify, list, show
// and extract stay bounded in memory (RSS measured by /usr/bin/time) and output, refuse
// duplicates, escape control characters, and never apply setuid bits. Property tests run the
// same parsers the fuzz targets in fuzz/ do, so CI exercises them on every run.

use std::process::{Command, Output, Stdio};

use proptest::prelude::*;

use crate::support::forge::*;
use crate::support::*;

const MIB: u64 = 1024 * 1024;

fn require_tools() {
    for (tool, pkg) in [
        ("age", "age"),
        ("zstd", "zstd"),
        ("tar", "tar"),
        ("time", "time"),
    ] {
        require(tool, pkg);
    }
}

/// Runs cpvault in `w` under `/usr/bin/time` and returns its output and peak RSS in bytes.
fn run_measured(w: &World, args: &[&str]) -> (Output, u64) {
    let inner = cpvault_cmd(w.dir.path());
    let rss_file = w.path("rss.txt");
    let mut c = Command::new("/usr/bin/time");
    c.arg("-f").arg("%M").arg("-o").arg(&rss_file);
    c.arg(inner.get_program()).args(args);
    c.args(["--store", w.store.to_str().unwrap()]);
    c.current_dir(w.dir.path()).stdin(Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let out = c.output().unwrap();
    let kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out, kib * 1024)
}

/// A genuine backup of a small PKI and snapshot in a fresh world.
fn world_with_backup() -> (World, String) {
    let w = World::new();
    make_pki(&w.path("pki"));
    fake_snapshot(&w.path("snapshot.db"), 4);
    let genuine = w.backup(&["--etcd-snapshot-file", "snapshot.db", "--pki-dir", "pki"]);
    (w, genuine)
}

/// A raw ustar header block.
fn header(path: &str, size: u64, kind: tar::EntryType) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(1);
    h.set_entry_type(kind);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Appends one entry (header, data, padding) to `t`.
fn entry(t: &mut Vec<u8>, kind: tar::EntryType, path: &str, data: &[u8]) {
    t.extend(header(path, data.len() as u64, kind));
    t.extend(data);
    t.resize(t.len().div_ceil(512) * 512, 0);
}

/// A PAX record `"<len> key=value\n"`.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len = len.to_string().len() + body.len();
    }
    format!("{len}{body}").into_bytes()
}

const FORMAT_JSON: &[u8] = br#"{"format":"cpvault-archive","version":1}"#;

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn huge_pax_path_is_refused_in_bounded_memory_and_output() {
    // Broke: the tar crate read a whole PAX body into memory (933 MB RSS for a 256 MB path)
    // and the error quoted it whole (a 256 MB line).
    require_tools();
    let (w, genuine) = world_with_backup();
    let mut t = vec![];
    entry(&mut t, tar::EntryType::Regular, "format.json", FORMAT_JSON);
    let path = format!("pki/{}", "a".repeat(40_000_000));
    entry(
        &mut t,
        tar::EntryType::XHeader,
        "PaxHeader",
        &pax_record("path", &path),
    );
    entry(&mut t, tar::EntryType::Regular, "pki/x", b"x");
    t.extend([0u8; 1024]);
    let tar = w.path("huge-pax.tar");
    std::fs::write(&tar, &t).unwrap();
    drop(t);
    let (id, created) = later_id(&w, &genuine, 60);
    let forged = seal(&w, &genuine, &id, &created, &tar, |_| {});
    let ciphertext = std::fs::metadata(w.archive(&forged)).unwrap().len();
    let key = w.key.to_str().unwrap();
    let (out, rss) = run_measured(&w, &["verify", &forged, "-i", key]);
    let printed = out.stdout.len() + out.stderr.len();
    eprintln!(
        "40 MB PAX path ({ciphertext} bytes of ciphertext): verify exit {:?}, {} MiB RSS, {printed} bytes printed",
        out.status.code(),
        rss / MIB
    );
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(rss < 100 * MIB, "verify used {} MiB", rss / MIB);
    assert!(printed < 20_000, "verify printed {printed} bytes");
    assert!(stdout(&out).contains("4096-byte limit"), "{}", stdout(&out));
}

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn a_zstd_frame_with_a_huge_window_is_refused_in_bounded_memory() {
    // Broke: the reader accepted zstd's default limit (a 2^27 window), so a forged frame made
    // verify hold about 150 MB before it read a byte of the tar.
    require_tools();
    let (w, genuine) = world_with_backup();
    let (work, inner) = unpack(&w, &genuine, "work");
    let tar = w.path("repacked.tar");
    repack(&work, &inner, &tar);
    let (id, created) = later_id(&w, &genuine, 60);
    // The same genuine content, compressed with a 128 MiB window (long mode, from stdin so
    // the frame gives no content size that would let the decoder allocate less).
    let forged = seal_with(
        &w,
        &genuine,
        &id,
        &created,
        &tar,
        "zstd -q -c --long=27",
        |_| {},
    );
    let key = w.key.to_str().unwrap();
    let (out, rss) = run_measured(&w, &["verify", &forged, "-i", key]);
    eprintln!(
        "2^27 zstd window: verify exit {:?}, {} MiB RSS",
        out.status.code(),
        rss / MIB
    );
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(rss < 100 * MIB, "verify used {} MiB", rss / MIB);
    assert!(
        stdout(&out).contains("decompression window larger than 8 MiB"),
        "{}",
        stdout(&out)
    );
    // The genuine backup (level 3, the default) still reads.
    let ok = w.run(&["verify", &genuine, "-i", key]);
    assert!(ok.status.success(), "{}", stdout(&ok));
}

#[test]
#[ignore = "needs age and zstd (apt-get install age zstd); CI runs it"]
fn a_config_zstd_level_above_19_is_refused_before_anything_runs() {
    // Broke: the config file's zstd_level was not range-checked, so level 22 wrote archives
    // with a window the reader now refuses.
    let w = World::new();
    make_pki(&w.path("pki"));
    let config = w.path("config.toml");
    std::fs::write(&config, "zstd_level = 22\n").unwrap();
    let out = w.run(&[
        "backup",
        "--config",
        config.to_str().unwrap(),
        "--cluster",
        "admin",
        "-r",
        &w.recipient,
        "--pki-dir",
        "pki",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("zstd_level = 22"), "{}", stderr(&out));
    assert!(stderr(&out).contains("1–19"), "{}", stderr(&out));
    assert!(!w.store.join("admin").exists(), "something was written");
}

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn hostile_names_in_errors_are_escaped_and_cut() {
    // A path under the 4 KiB cap, full of terminal escapes: quoted escaped and cut short.
    require_tools();
    let (w, genuine) = world_with_backup();
    let mut t = vec![];
    entry(&mut t, tar::EntryType::Regular, "format.json", FORMAT_JSON);
    let path = format!("evil/\x1b]0;pwned\x07{}", "\x1b[2J".repeat(900));
    entry(
        &mut t,
        tar::EntryType::XHeader,
        "PaxHeader",
        &pax_record("path", &path),
    );
    entry(&mut t, tar::EntryType::Regular, "x", b"x");
    t.extend([0u8; 1024]);
    let tar = w.path("escapes.tar");
    std::fs::write(&tar, &t).unwrap();
    let (id, created) = later_id(&w, &genuine, 60);
    let forged = seal(&w, &genuine, &id, &created, &tar, |_| {});
    let out = w.run(&["verify", &forged, "-i", w.key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let text = stdout(&out) + &stderr(&out);
    assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
    assert!(text.contains("not allowed"), "{text}");
    assert!(text.lines().all(|l| l.len() < 4096), "{text}");
}

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn oversized_inner_manifest_is_refused_unread() {
    // Broke: manifest.json entries of up to 64 MiB were read into memory.
    require_tools();
    let (w, genuine) = world_with_backup();
    let mut t = vec![];
    entry(&mut t, tar::EntryType::Regular, "format.json", FORMAT_JSON);
    let body = vec![b' '; 30 * MIB as usize];
    entry(&mut t, tar::EntryType::Regular, "manifest.json", &body);
    t.extend([0u8; 1024]);
    let tar = w.path("big-manifest.tar");
    std::fs::write(&tar, &t).unwrap();
    let (id, created) = later_id(&w, &genuine, 60);
    let forged = seal(&w, &genuine, &id, &created, &tar, |_| {});
    let (out, rss) = run_measured(&w, &["verify", &forged, "-i", w.key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("1048576-byte limit"),
        "{}",
        stdout(&out)
    );
    assert!(rss < 100 * MIB, "verify used {} MiB", rss / MIB);
}

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn huge_age_header_is_refused_in_bounded_memory() {
    // Broke: the age crate buffers a header whole (and re-parses it on every line).
    require_tools();
    let (w, genuine) = world_with_backup();
    let (id, created) = later_id(&w, &genuine, 60);
    let mut ciphertext = b"age-encryption.org/v1\n-> X25519 ".to_vec();
    ciphertext.resize(ciphertext.len() + 50_000_000, b'A');
    ciphertext.extend(b"\n--- AAAA\n");
    std::fs::write(w.store.join(format!("admin/{id}.tar.zst.age")), &ciphertext).unwrap();
    drop(ciphertext);
    let forged = describe(&w, &genuine, &id, &created, |_| {});
    let (out, rss) = run_measured(&w, &["verify", &forged, "-i", w.key.to_str().unwrap()]);
    eprintln!(
        "50 MB age header: verify exit {:?}, {} MiB RSS",
        out.status.code(),
        rss / MIB
    );
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("longer than 131072 bytes"),
        "{}",
        stdout(&out)
    );
    assert!(rss < 100 * MIB, "verify used {} MiB", rss / MIB);
}

#[test]
#[ignore = "needs age, zstd, tar and time (apt-get install age zstd tar time); CI runs it"]
fn list_with_a_huge_manifest_is_bounded_and_lists_the_good_ones() {
    // Broke: a 200 MB manifest made list hold 217 MB.
    require_tools();
    let (w, genuine) = world_with_backup();
    let second = w.backup(&["--etcd-snapshot-file", "snapshot.db"]);
    let (id, _) = later_id(&w, &genuine, 60);
    let huge = w.manifest(&format!("admin/{id}"));
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(150_000_000).unwrap();
    let (out, rss) = run_measured(&w, &["list"]);
    eprintln!(
        "150 MB manifest: list exit {:?}, {} MiB RSS",
        out.status.code(),
        rss / MIB
    );
    assert!(rss < 100 * MIB, "list used {} MiB", rss / MIB);
    let text = stdout(&out);
    assert!(
        text.contains(&genuine) && text.contains(&second),
        "{text}\n{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("limit"), "{}", stderr(&out));
}

#[test]
#[ignore = "needs age, zstd and tar (apt-get install age zstd tar); CI runs it"]
fn duplicate_ca_key_fails_verify() {
    // Broke: a second pki/ca.key was never hashed, and stock `tar x` extracts that copy.
    require_tools();
    let (w, genuine) = world_with_backup();
    let (work, mut inner) = unpack(&w, &genuine, "dup");
    let (id, created) = later_id(&w, &genuine, 60);
    inner["id"] = id.clone().into();
    inner["created"] = created.clone().into();
    inner["completed"] = created.clone().into();
    std::fs::write(
        work.join("manifest.json"),
        serde_json::to_vec_pretty(&inner).unwrap(),
    )
    .unwrap();
    let evil = w.path("evil");
    std::fs::create_dir_all(evil.join("pki")).unwrap();
    std::fs::write(evil.join("pki/ca.key"), b"attacker\n").unwrap();
    let names: Vec<String> = inner["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    let tar = w.path("dup.tar");
    sh(&format!(
        "tar -c --no-recursion --format=posix -f '{}' -C '{}' format.json {} -C '{}' pki/ca.key -C '{}' manifest.json",
        tar.display(),
        work.display(),
        names.join(" "),
        evil.display(),
        work.display()
    ));
    let forged = seal(&w, &genuine, &id, &created, &tar, |_| {});
    let out = w.run(&["verify", &forged, "-i", w.key.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    let line = stdout(&out)
        .lines()
        .find(|l| l.trim_start().starts_with("entries"))
        .map(String::from)
        .unwrap_or_default();
    assert!(
        line.contains("FAILED") && line.contains("pki/ca.key: 2 copies"),
        "{}",
        stdout(&out)
    );
    // Only the duplicate is wrong: the manifests agree.
    assert!(
        !stdout(&out)
            .lines()
            .any(|l| l.trim_start().starts_with("manifests") && l.contains("FAILED")),
        "{}",
        stdout(&out)
    );
}

#[test]
#[ignore = "needs age, zstd and tar (apt-get install age zstd tar); CI runs it"]
fn extract_never_applies_setuid_and_keeps_recorded_mtimes() {
    // A forged inner manifest asks for mode 4755 (and the tar header carries it too).
    require_tools();
    let (w, genuine) = world_with_backup();
    let (work, mut inner) = unpack(&w, &genuine, "suid");
    let (id, created) = later_id(&w, &genuine, 60);
    inner["id"] = id.clone().into();
    inner["created"] = created.clone().into();
    inner["completed"] = created.clone().into();
    let mtime: i64 = 1_600_000_000;
    for e in inner["entries"].as_array_mut().unwrap() {
        if e["path"] == "pki/ca.crt" {
            e["mode"] = 0o4755.into();
            e["mtime"] = mtime.into();
        }
    }
    std::fs::write(
        work.join("manifest.json"),
        serde_json::to_vec_pretty(&inner).unwrap(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        work.join("pki/ca.crt"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let tar = w.path("suid.tar");
    repack(&work, &inner, &tar);
    let forged = seal(&w, &genuine, &id, &created, &tar, |_| {});
    let to = w.extract(&forged, "out");
    let meta = std::fs::metadata(to.join("pki/ca.crt")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.mtime(), mtime);
}

#[test]
#[ignore = "needs age, zstd and tar (apt-get install age zstd tar); CI runs it"]
fn control_characters_from_manifests_are_escaped_in_list_and_show() {
    // Broke: show printed the host, source and entry paths from the store raw.
    require_tools();
    let (w, genuine) = world_with_backup();
    let (id, created) = later_id(&w, &genuine, 60);
    std::fs::copy(
        w.archive(&genuine),
        w.store.join(format!("admin/{id}.tar.zst.age")),
    )
    .unwrap();
    let reference = format!("admin/{id}");
    let mut outer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.manifest(&genuine)).unwrap()).unwrap();
    outer["id"] = id.clone().into();
    outer["created"] = created.clone().into();
    outer["completed"] = created.into();
    outer["archive"]["key"] = format!("admin/{id}.tar.zst.age").into();
    outer["host"] = "node\x1b[2J\x1b]0;pwned\x07".into();
    outer["source"] = "src\x1b[31m".into();
    outer["tags"] = serde_json::json!({"env": "prod\x1b[2J", "k\r": "v"});
    outer["entries"][0]["path"] = "etcd/\x1b[1Asnap.db".into();
    std::fs::write(
        w.manifest(&reference),
        serde_json::to_vec_pretty(&outer).unwrap(),
    )
    .unwrap();
    for args in [vec!["list"], vec!["show", reference.as_str()]] {
        let out = w.run(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let text = stdout(&out) + &stderr(&out);
        assert!(text.contains(&id), "{args:?}: {text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\r'),
            "{args:?} printed a control character: {text:?}"
        );
    }
    let shown = stdout(&w.run(&["show", &reference]));
    assert!(shown.contains("node\\u{1b}[2J"), "{shown}");
}

// Property tests over the entry points the fuzz targets cover (fuzz/fuzz_targets/): no
// panic, and every error short enough for one line.

fn sample_tar() -> Vec<u8> {
    let mut w = cpvault::archive::tarfmt::TarWriter::new(Vec::new());
    w.append_bytes("format.json", 0o644, 1, FORMAT_JSON)
        .unwrap();
    w.append_bytes("pki/ca.crt", 0o644, 1, b"certificate")
        .unwrap();
    let long = format!("pki/{}/x.key", "d".repeat(150));
    w.append_bytes(&long, 0o600, 1, b"key").unwrap();
    let manifest = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/v1/store/sample/20261127T001240Z-8e20aa50.manifest.json"
    ))
    .unwrap();
    w.append_bytes("manifest.json", 0o644, 1, &manifest)
        .unwrap();
    w.finish().unwrap()
}

fn read_tar(tar: &[u8]) -> cpvault::archive::reader::Untarred {
    let compressed = zstd::encode_all(tar, 1).unwrap();
    cpvault::archive::reader::read_decrypted(
        &compressed[..],
        Box::new(cpvault::archive::reader::NullSink),
    )
}

/// A genuine signature over `b"manifest bytes"` by the key in [`SIGNERS`] (the fuzz seed).
const GENUINE_SIG: &[u8] = include_bytes!("../fuzz/seeds/signature/genuine.sig");

const SIGNERS: &str =
    "backup@admin ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJDWxrb7MojpvhzaHZjXLkGqYiIDQ28Sh/KsLCSzr547\n";

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn manifest_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(e) = cpvault::archive::manifest::parse_manifest(&bytes) {
            prop_assert!(e.len() < 4096);
        }
        if let Err(e) = cpvault::archive::manifest::check_format_json(&bytes) {
            prop_assert!(e.len() < 4096);
        }
    }

    #[test]
    fn manifest_with_a_hostile_string_gives_a_short_error(s in "\\PC{0,64}", n in 0usize..200_000) {
        // serde quotes an offending string in its message; the message must stay short.
        let bytes = format!(
            r#"{{"format":"cpvault-manifest","version":1,"id":{}}}"#,
            serde_json::to_string(&format!("{s}{}", "x".repeat(n))).unwrap()
        );
        let e = cpvault::archive::manifest::parse_manifest(bytes.as_bytes()).unwrap_err();
        prop_assert!(e.len() < 4096);
    }

    #[test]
    fn listing_cache_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let packed = zstd::bulk::compress(&bytes, 1).unwrap();
        for b in [&bytes[..], &packed[..]] {
            if let Err(e) = cpvault::catalog::cache::parse(b, "admin") {
                prop_assert!(e.len() < 4096);
            }
        }
    }

    #[test]
    fn reader_on_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let raw = cpvault::archive::reader::read_decrypted(
            &bytes[..],
            Box::new(cpvault::archive::reader::NullSink),
        );
        prop_assert!(raw.failure.is_some());
        // The same bytes as a valid zstd stream reach the tar layer.
        let out = read_tar(&bytes);
        prop_assert!(out.failure.is_none_or(|f| f.message.len() < 4096));
    }

    #[test]
    fn reader_on_a_mutated_archive_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut tar = sample_tar();
        for (at, byte) in flips {
            let i = at.index(tar.len());
            tar[i] = byte;
        }
        if truncate {
            tar.truncate(cut.index(tar.len()));
        }
        let out = read_tar(&tar);
        prop_assert!(out.failure.is_none_or(|f| f.message.len() < 4096));
    }

    #[test]
    fn a_mutated_signature_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let allowed = cpvault::trust::AllowedSigners::parse(SIGNERS, "prop").unwrap();
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut sig = GENUINE_SIG.to_vec();
        for (at, byte) in flips {
            let i = at.index(sig.len());
            sig[i] = byte;
        }
        if let Err(e) = allowed.verify(b"manifest bytes", &sig, now) {
            prop_assert!(e.len() < 4096);
        }
    }

    #[test]
    fn allowed_signers_and_signatures_never_panic(
        text in "(\\PC{0,80}\n){0,8}",
        sig in proptest::collection::vec(any::<u8>(), 0..1024),
    ) {
        let _ = cpvault::trust::AllowedSigners::parse(&text, "prop");
        let allowed = cpvault::trust::AllowedSigners::parse(SIGNERS, "prop").unwrap();
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let mut armored = b"-----BEGIN SSH SIGNATURE-----\n".to_vec();
        armored.extend(&sig);
        for candidate in [&sig[..], &armored[..]] {
            if let Err(e) = allowed.verify(b"manifest bytes", candidate, now) {
                prop_assert!(e.len() < 4096);
            }
        }
    }
}

#[test]
fn the_property_seeds_are_genuine() {
    // The signature seed verifies, so mutations of it reach the cryptographic check.
    let allowed = cpvault::trust::AllowedSigners::parse(SIGNERS, "seed").unwrap();
    let now = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
    allowed.verify(b"manifest bytes", GENUINE_SIG, now).unwrap();
}

#[test]
fn the_reader_reads_its_own_writer_with_long_paths() {
    // The property tests above start from this archive; it must read cleanly.
    let out = read_tar(&sample_tar());
    assert!(out.failure.is_none(), "{:?}", out.failure);
    assert!(out.format_ok && out.inner.is_some());
    assert_eq!(out.entries.len(), 2);
    assert!(out.entries[1].path.len() > 150);
}
