//! Judging an archive: runs the reading pipeline and turns what it saw into named checks
//! against the outer and inner manifests, one per layer of format v1 (§3 of the design).
//! It decides pass or fail and says why; it must never print, and never stop at the first
//! failure when later layers can still be reported.

use std::sync::Arc;

use cpvault_backends::Store;
use serde::Serialize;

use crate::archive::manifest::Manifest;
use crate::archive::reader::{read_archive, Layer, ReadOutcome, Sink};
use crate::crypto::Identities;
use crate::trust::Authorship;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Passed.
    Ok,
    /// Passed with a caveat the operator should know.
    Warning,
    /// Failed.
    Failed,
    /// Not reached because an earlier layer failed, or not run without a key.
    Skipped,
}

/// One named check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Name: signature, ciphertext, decrypt, decompress, format, entries, etcd-trailer, manifests, write.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
}

/// The verdict on one backup.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `<cluster>/<id>`.
    pub backup: String,
    /// Whether every layer was checked (an identity was given).
    pub deep: bool,
    /// Whether no check failed.
    pub ok: bool,
    /// The checks, outermost layer first (`signature` first of all).
    pub checks: Vec<Check>,
    /// Who wrote the backup, as far as this run could tell.
    pub authorship: Authorship,
    /// The sealed inner manifest, when the read reached it.
    #[serde(skip)]
    pub inner: Option<Manifest>,
}

impl Report {
    /// The report as text: a verdict line, then one line per check.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut text = String::new();
        let depth = if self.deep {
            "deep"
        } else {
            "ciphertext only; give -i for every layer"
        };
        let _ = writeln!(
            text,
            "{}  {} ({depth})",
            if self.ok { "OK    " } else { "FAILED" },
            self.backup
        );
        for c in &self.checks {
            let s = match c.status {
                Status::Ok => "ok",
                Status::Warning => "WARNING",
                Status::Failed => "FAILED",
                Status::Skipped => "skipped",
            };
            let _ = writeln!(
                text,
                "  {:13} {:8} {}",
                c.name,
                s,
                crate::text::escape_for_line(&c.detail, 2000)
            );
        }
        text
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Failed)
    }
}

/// Verifies the backup described by `outer`, whose authorship was judged as `who`; with
/// identities, every layer, writing payload entries into `sink` as they pass. An untrusted
/// backup fails the `signature` check and is not read at all, so no byte of it reaches the
/// sink.
pub async fn verify(
    store: &Store,
    outer: &Manifest,
    who: &Authorship,
    identities: Option<Arc<Identities>>,
    sink: Box<dyn Sink>,
    progress: indicatif::ProgressBar,
) -> Report {
    let deep = identities.is_some();
    if let Some(refused) = refuse_untrusted(outer, who, deep) {
        return refused;
    }
    let signature = signature_check(who);
    let Some(archive) = &outer.archive else {
        return Report {
            backup: outer.reference(),
            deep,
            ok: false,
            checks: vec![
                signature,
                Check {
                    name: "manifests",
                    status: Status::Failed,
                    detail: "the outer manifest has no archive section".into(),
                },
            ],
            authorship: who.clone(),
            inner: None,
        };
    };
    let ciphertext = store
        .get_large(&archive.key)
        .await
        .map_err(|e| e.to_string());
    let seen = read_archive(ciphertext, identities, sink, progress).await;
    let mut checks = vec![signature, ciphertext_check(outer, &seen)];
    if deep {
        checks.extend(deep_checks(outer, &seen));
        // A failure the layer checks did not place (e.g. an entry after manifest.json) still fails.
        if let Some(f) = &seen.failure {
            if !checks.iter().any(|c| c.status == Status::Failed) {
                checks.push(check("tar", Status::Failed, f.message.clone()));
            }
        }
    }
    Report {
        backup: outer.reference(),
        deep,
        ok: checks.iter().all(|c| c.status != Status::Failed),
        checks,
        authorship: who.clone(),
        inner: seen.inner,
    }
}

/// The report for a backup whose author is not trusted (its `signature` check failed, no
/// other layer read), or `None` when it may be read.
pub fn refuse_untrusted(outer: &Manifest, who: &Authorship, deep: bool) -> Option<Report> {
    let signature = signature_check(who);
    (signature.status == Status::Failed).then(|| Report {
        backup: outer.reference(),
        deep,
        ok: false,
        checks: vec![signature],
        authorship: who.clone(),
        inner: None,
    })
}

fn signature_check(who: &Authorship) -> Check {
    let status = match who {
        Authorship::Trusted { .. } => Status::Ok,
        Authorship::Untrusted { .. } => Status::Failed,
        Authorship::NotChecked { .. } => Status::Skipped,
    };
    check("signature", status, who.describe())
}

fn check(name: &'static str, status: Status, detail: impl Into<String>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
    }
}

fn ciphertext_check(outer: &Manifest, seen: &ReadOutcome) -> Check {
    let a = outer.archive.as_ref().expect("checked by caller");
    if let Some(f) = seen.failure.as_ref().filter(|f| f.layer == Layer::Store) {
        return check("ciphertext", Status::Failed, f.message.clone());
    }
    if seen.ciphertext_size != a.size {
        return check(
            "ciphertext",
            Status::Failed,
            format!(
                "archive object is {} bytes, the manifest says {} (truncated, appended to, or the manifest was edited)",
                seen.ciphertext_size, a.size
            ),
        );
    }
    if seen.ciphertext_sha256 != a.sha256 {
        return check(
            "ciphertext",
            Status::Failed,
            "sha256 of the archive object differs from the manifest (the object was modified, or the manifest was edited)",
        );
    }
    check(
        "ciphertext",
        Status::Ok,
        format!("{} bytes, sha256 {}", a.size, short(&a.sha256)),
    )
}

fn short(h: &str) -> &str {
    &h[..h.len().min(16)]
}

fn deep_checks(outer: &Manifest, seen: &ReadOutcome) -> Vec<Check> {
    let failed_at = seen.failure.as_ref().map(|f| f.layer);
    let not_reached = |layer: Layer| {
        failed_at
            .filter(|l| *l < layer)
            .map(|l| format!("not reached: the {} layer failed", layer_name(l)))
    };
    let mut out = vec![];
    let mut layer_check = |name: &'static str, layer: Layer, ok: &str| {
        let c = match (&seen.failure, not_reached(layer)) {
            (Some(f), _) if f.layer == layer => check(name, Status::Failed, f.message.clone()),
            (_, Some(msg)) => check(name, Status::Skipped, msg),
            (Some(f), None) => check(
                name,
                Status::Ok,
                format!(
                    "{ok}, as far as read (reading stopped at the {} layer)",
                    layer_name(f.layer)
                ),
            ),
            (None, None) => check(name, Status::Ok, ok),
        };
        out.push(c);
    };
    layer_check(
        "decrypt",
        Layer::Decrypt,
        "age header and every chunk authenticated",
    );
    layer_check(
        "decompress",
        Layer::Decompress,
        "zstd frames and content checksum intact",
    );
    layer_check(
        "format",
        Layer::Format,
        "format.json: cpvault-archive version 1",
    );
    if let Some(f) = seen.failure.as_ref().filter(|f| f.layer == Layer::Write) {
        out.push(check("write", Status::Failed, f.message.clone()));
    }
    let Some(inner) = &seen.inner else {
        let reason = match &seen.failure {
            Some(f) if f.layer == Layer::Tar => f.message.clone(),
            Some(f) => format!("not reached: the {} layer failed", layer_name(f.layer)),
            None => "no inner manifest".into(),
        };
        let status = if matches!(&seen.failure, Some(f) if f.layer == Layer::Tar) {
            Status::Failed
        } else {
            Status::Skipped
        };
        out.push(check("entries", status, reason.clone()));
        out.push(check("etcd-trailer", Status::Skipped, "not reached"));
        out.push(check("manifests", Status::Skipped, "not reached"));
        return out;
    };
    out.push(entries_check(inner, seen));
    out.push(trailer_check(inner, seen));
    let dis = outer.disagreements(inner);
    out.push(if dis.is_empty() {
        check("manifests", Status::Ok, "outer and inner manifests agree")
    } else {
        check(
            "manifests",
            Status::Failed,
            format!(
                "outer manifest differs from the sealed inner one in: {} (the outer manifest was edited)",
                dis.join(", ")
            ),
        )
    });
    out
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Store => "store",
        Layer::Decrypt => "decrypt",
        Layer::Decompress => "decompress",
        Layer::Format => "format",
        Layer::Tar => "tar",
        Layer::Write => "write",
    }
}

fn entries_check(inner: &Manifest, seen: &ReadOutcome) -> Check {
    use std::collections::HashMap;
    let name = |p: &str| crate::text::escape_for_line(p, 200);
    let mut problems = vec![];
    // A path twice, in the archive or in its manifest, is refused: only one copy would be
    // checked, and `tar x` keeps the last one.
    let mut in_archive: HashMap<&str, Vec<&crate::archive::reader::SeenEntry>> = HashMap::new();
    for s in &seen.entries {
        in_archive.entry(s.path.as_str()).or_default().push(s);
    }
    let mut in_manifest: HashMap<&str, usize> = HashMap::new();
    for e in &inner.entries {
        *in_manifest.entry(e.path.as_str()).or_default() += 1;
    }
    for (path, n) in &in_manifest {
        if *n > 1 {
            problems.push(format!("{}: listed {n} times in the manifest", name(path)));
        }
    }
    for e in &inner.entries {
        match in_archive.get(e.path.as_str()).map(Vec::as_slice) {
            None => problems.push(format!("{}: missing from the archive", name(&e.path))),
            Some([s]) if s.size != e.size => problems.push(format!(
                "{}: {} bytes, manifest says {}",
                name(&e.path),
                s.size,
                e.size
            )),
            Some([s]) if Some(&s.sha256) != e.sha256.as_ref() => problems.push(format!(
                "{}: sha256 does not match the manifest",
                name(&e.path)
            )),
            Some([_]) => {}
            Some(copies) => problems.push(format!(
                "{}: {} copies in the archive; a second copy is never checked and would be what tar extracts",
                name(&e.path),
                copies.len()
            )),
        }
    }
    for s in &seen.entries {
        if !in_manifest.contains_key(s.path.as_str()) {
            problems.push(format!(
                "{}: in the archive but not in its manifest",
                name(&s.path)
            ));
        }
    }
    problems.sort();
    problems.dedup();
    // Bounded output: a hostile archive may hold many entries.
    if problems.len() > 20 {
        let more = problems.len() - 20;
        problems.truncate(20);
        problems.push(format!("and {more} more problems"));
    }
    if problems.is_empty() {
        check(
            "entries",
            Status::Ok,
            format!(
                "{} entries, {} bytes, sha256 of each matches",
                inner.entries.len(),
                inner.payload_size()
            ),
        )
    } else {
        check("entries", Status::Failed, problems.join("; "))
    }
}

fn trailer_check(inner: &Manifest, seen: &ReadOutcome) -> Check {
    let Some(etcd) = &inner.etcd else {
        return check(
            "etcd-trailer",
            Status::Skipped,
            "no etcd snapshot in this backup",
        );
    };
    let Some(s) = seen.entries.iter().find(|s| s.path == etcd.entry) else {
        return check(
            "etcd-trailer",
            Status::Failed,
            format!("{} is missing", etcd.entry),
        );
    };
    match (s.trailer_expected, s.trailer_matches) {
        (true, true) => check("etcd-trailer", Status::Ok, "etcd's sha256 trailer matches the snapshot"),
        (true, false) => check(
            "etcd-trailer",
            Status::Failed,
            "etcd's sha256 trailer does not match the snapshot: it was corrupt when taken",
        ),
        (false, _) => check(
            "etcd-trailer",
            Status::Warning,
            "the snapshot has no sha256 trailer (not written by `etcdctl snapshot save`); its integrity rests on the archive's checksums, and restoring it needs --skip-hash-check",
        ),
    }
}
