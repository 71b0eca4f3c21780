//! `drill`: proof that a backup restores, on the machine running it, without touching a
//! cluster (design §9). The backup is extracted verified into a private temp dir, its
//! snapshot restored with the local `etcdctl` and served by a throwaway etcd on loopback, and
//! what that etcd serves is compared with what the manifest recorded; each private key of the
//! PKI must match its certificate, and certificates' expiry is reported. Everything plaintext
//! lives in one 0700 temp dir that is removed when the drill ends, also on Ctrl-C, SIGTERM or
//! SIGHUP. It never prints; the command renders the [`Record`].

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cpvault_backends::Store;
use serde::{Deserialize, Serialize};

use crate::archive::manifest::Manifest;
use crate::crypto::Identities;
use crate::extract::{extract_verified, ExtractError};
use crate::restore::local::{to_dir, LocalMember};
use crate::trust::Authorship;

/// Suffix of drill records: `<cluster>/<id>.drill.json`, beside the backup they prove.
pub const DRILL_SUFFIX: &str = ".drill.json";
/// Suffix of a drill record's signature.
pub const DRILL_SIGNATURE_SUFFIX: &str = ".drill.sig";
/// Largest drill record read.
pub const MAX_DRILL_BYTES: u64 = 256 * 1024;

/// Object key of the drill record of `cluster/id`.
pub fn drill_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}{DRILL_SUFFIX}")
}

/// One check of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillCheck {
    /// verify, restore, etcd, revision, keys, key-pairs, certificates.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

/// A certificate of the backup's PKI and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Path in the archive (`pki/…`).
    pub path: String,
    /// notAfter.
    pub not_after: DateTime<Utc>,
    /// Days left at the drill (negative: expired).
    pub days_left: i64,
}

/// The outcome of one drill, stored as `<cluster>/<id>.drill.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `cpvault-drill`.
    pub format: String,
    /// `<cluster>/<id>`.
    pub backup: String,
    /// When the drill ran.
    pub drilled_at: DateTime<Utc>,
    /// Whether every check passed.
    pub ok: bool,
    /// The restored etcd's revision.
    pub revision: Option<i64>,
    /// Live keys in the restored etcd at the recorded revision (or its own, when none was).
    pub keys: Option<u64>,
    /// The checks, in order.
    pub checks: Vec<DrillCheck>,
    /// Certificates and their expiry, soonest first.
    pub certificates: Vec<Certificate>,
    /// The host that ran the drill.
    pub host: String,
}

impl Record {
    fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(DrillCheck {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
        self.ok &= ok;
    }
}

/// Runs a drill of `m`. Returns the record (its `ok` says whether the drill passed); an
/// error only when the drill could not run at all (no etcd/etcdctl/openssl, no temp space,
/// interrupted).
///
/// # Errors
/// Missing tools (named, with the package), temp dir failures, interruption.
pub async fn drill(
    store: &Store,
    m: &Manifest,
    who: &Authorship,
    identities: Arc<Identities>,
    quiet: bool,
) -> anyhow::Result<Record> {
    for (tool, package) in [
        ("etcd", "etcd-server"),
        ("etcdctl", "etcd-client"),
        ("openssl", "openssl"),
    ] {
        if !on_path(tool) {
            anyhow::bail!(
                "drill needs `{tool}` on this machine; install it (apt-get install {package})"
            );
        }
    }
    let stop = crate::interrupt::token();
    let mut record = Record {
        format: "cpvault-drill".into(),
        backup: m.reference(),
        drilled_at: Utc::now(),
        ok: true,
        revision: None,
        keys: None,
        checks: vec![],
        certificates: vec![],
        host: gethostname::gethostname().to_string_lossy().into_owned(),
    };
    // Every plaintext byte of the drill lives below this 0700 dir, removed on drop.
    let work = tempfile::Builder::new()
        .prefix("cpvault-drill-")
        .tempdir()
        .map_err(|e| anyhow::anyhow!("creating the drill's temp dir: {e}"))?;
    let root = work.path().join("restore");
    let peer = free_port()?;
    let member = LocalMember {
        name: "drill".into(),
        initial_cluster: None,
        initial_advertise_peer_urls: Some(format!("http://127.0.0.1:{peer}")),
        skip_hash_check: !m.etcd.as_ref().is_some_and(|e| e.hash_trailer),
    };
    let restored = tokio::select! {
        r = to_dir(&root, &member, async |dir: &Path| {
            match extract_verified(store, m, who, identities, dir, quiet).await {
                Ok(_) => Ok(()),
                Err(ExtractError::Verify(report)) => Err(anyhow::anyhow!(
                    "deep verify failed: {}",
                    report
                        .failures()
                        .map(|c| format!("{}: {}", c.name, c.detail))
                        .collect::<Vec<_>>()
                        .join("; ")
                )),
                Err(ExtractError::Other(e)) => Err(e),
            }
        }) => r,
        () = stop.cancelled() => anyhow::bail!("interrupted; the drill's temp dir was removed"),
    };
    if let Err(e) = restored {
        let text = format!("{e:#}");
        let name = if text.starts_with("deep verify") {
            "verify"
        } else {
            "restore"
        };
        record.check(name, false, text);
        return Ok(record);
    }
    record.check("verify", true, "every layer checked while extracting");
    record.check("restore", true, "etcdctl snapshot restore succeeded");

    let client_port = free_port()?;
    let etcd = Etcd::start(&root.join("etcd"), client_port, peer)?;
    let served = tokio::select! {
        r = served(client_port, m.etcd.as_ref().and_then(|e| e.revision)) => r,
        () = stop.cancelled() => Err("interrupted".to_string()),
    };
    drop(etcd);
    match served {
        Ok((revision, keys)) => {
            record.revision = Some(revision);
            record.keys = Some(keys);
            record.check(
                "etcd",
                true,
                format!("a throwaway etcd served the restored data at revision {revision}"),
            );
            compare(&mut record, m, revision, keys);
        }
        Err(e) if stop.is_cancelled() => {
            anyhow::bail!("interrupted ({e}); the drill's temp dir was removed")
        }
        Err(e) => record.check("etcd", false, e),
    }
    check_pki(&mut record, &root.join("pki"));
    Ok(record)
}

/// Compares what the restored etcd serves with what the backup recorded.
fn compare(record: &mut Record, m: &Manifest, revision: i64, keys: u64) {
    let recorded = m.etcd.as_ref();
    match recorded.and_then(|e| e.revision) {
        Some(r) if revision >= r => record.check(
            "revision",
            true,
            format!("{revision} (the backup recorded {r} before its snapshot)"),
        ),
        Some(r) => record.check(
            "revision",
            false,
            format!("the restored etcd is at revision {revision}, older than the {r} recorded at backup"),
        ),
        None => record.check(
            "revision",
            true,
            format!("{revision} (the source recorded no revision to compare)"),
        ),
    }
    match recorded.and_then(|e| e.keys) {
        Some(k) if k == keys => record.check(
            "keys",
            true,
            format!("{keys} live keys, as recorded at backup"),
        ),
        Some(k) => record.check(
            "keys",
            false,
            format!("{keys} live keys, but {k} were recorded at backup"),
        ),
        None => record.check(
            "keys",
            true,
            format!("{keys} live keys (the source recorded no count to compare)"),
        ),
    }
}

/// The restored etcd's revision, and its live keys at `at` (or at its own revision).
async fn served(port: u16, at: Option<i64>) -> Result<(i64, u64), String> {
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        if let Ok(mut c) = etcd_client::Client::connect([endpoint.as_str()], None).await {
            if c.status().await.is_ok() {
                break c;
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err("the throwaway etcd did not answer within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = client.status().await.map_err(|e| e.to_string())?;
    let revision = status.header().map_or(0, |h| h.revision());
    let mut opts = etcd_client::GetOptions::new()
        .with_all_keys()
        .with_count_only();
    if let Some(r) = at.filter(|r| *r <= revision) {
        opts = opts.with_revision(r);
    }
    let count = client
        .get("", Some(opts))
        .await
        .map_err(|e| format!("counting keys: {e}"))?
        .count();
    Ok((revision, u64::try_from(count).unwrap_or(0)))
}

/// Each private key must belong to its certificate (or `sa.key` to `sa.pub`); certificates'
/// expiry is recorded.
fn check_pki(record: &mut Record, pki: &Path) {
    if !pki.is_dir() {
        record.check("key-pairs", true, "the backup holds no PKI");
        return;
    }
    let mut files = vec![];
    collect(pki, &mut files);
    files.sort();
    let mut pairs = vec![];
    let mut problems = vec![];
    for key in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
    {
        let rel = key.strip_prefix(pki).unwrap_or(key).display().to_string();
        let (public, is_cert) = if key.with_extension("crt").exists() {
            (key.with_extension("crt"), true)
        } else if key.with_extension("pub").exists() {
            (key.with_extension("pub"), false)
        } else {
            continue;
        };
        let from_key = openssl(&["pkey", "-pubout", "-in"], key);
        let from_public = if is_cert {
            openssl(&["x509", "-noout", "-pubkey", "-in"], &public)
        } else {
            openssl(&["pkey", "-pubin", "-pubout", "-in"], &public)
        };
        match (from_key, from_public) {
            (Ok(a), Ok(b)) if a == b => pairs.push(rel),
            (Ok(_), Ok(_)) => problems.push(format!(
                "pki/{rel} does not belong to pki/{}",
                public.strip_prefix(pki).unwrap_or(&public).display()
            )),
            (Err(e), _) | (_, Err(e)) => problems.push(format!("pki/{rel}: {e}")),
        }
    }
    if problems.is_empty() {
        record.check(
            "key-pairs",
            true,
            format!(
                "{} private keys match their certificates: {}",
                pairs.len(),
                pairs.join(", ")
            ),
        );
    } else {
        record.check("key-pairs", false, problems.join("; "));
    }
    let now = Utc::now();
    let mut unreadable = vec![];
    for crt in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "crt"))
    {
        let rel = format!("pki/{}", crt.strip_prefix(pki).unwrap_or(crt).display());
        match openssl(&["x509", "-noout", "-enddate", "-in"], crt)
            .ok()
            .and_then(|s| parse_enddate(&s))
        {
            Some(not_after) => record.certificates.push(Certificate {
                path: rel,
                not_after,
                days_left: (not_after - now).num_days(),
            }),
            None => unreadable.push(rel),
        }
    }
    record.certificates.sort_by_key(|c| c.not_after);
    let expired: Vec<&str> = record
        .certificates
        .iter()
        .filter(|c| c.not_after <= now)
        .map(|c| c.path.as_str())
        .collect();
    let detail = match record.certificates.first() {
        Some(c) => format!(
            "{} certificates; the first to expire is {} on {} ({} days)",
            record.certificates.len(),
            c.path,
            c.not_after.format("%Y-%m-%d"),
            c.days_left
        ),
        None => "no certificates".into(),
    };
    if !expired.is_empty() {
        let msg = format!("expired: {}; {detail}", expired.join(", "));
        record.check("certificates", false, msg);
    } else if !unreadable.is_empty() {
        let msg = format!("not certificates: {}; {detail}", unreadable.join(", "));
        record.check("certificates", false, msg);
    } else {
        record.check("certificates", true, detail);
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn openssl(args: &[&str], file: &Path) -> Result<String, String> {
    let out = Command::new("openssl")
        .args(args)
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "openssl cannot read it ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        ))
    }
}

/// `notAfter=Nov 27 12:00:00 2036 GMT`.
fn parse_enddate(s: &str) -> Option<DateTime<Utc>> {
    let v = s.trim().strip_prefix("notAfter=")?;
    let v = v.strip_suffix(" GMT").unwrap_or(v);
    let v = v.split_whitespace().collect::<Vec<_>>().join(" ");
    chrono::NaiveDateTime::parse_from_str(&v, "%b %d %H:%M:%S %Y")
        .ok()
        .map(|t| t.and_utc())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| anyhow::anyhow!("finding a free loopback port: {e}"))?;
    Ok(l.local_addr()?.port())
}

/// The throwaway etcd, killed on drop.
struct Etcd(Child);

impl Etcd {
    fn start(data: &Path, client: u16, peer: u16) -> anyhow::Result<Etcd> {
        let log = std::fs::File::create(data.with_extension("log"))?;
        let child = Command::new("etcd")
            .arg("--name=drill")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=drill=http://127.0.0.1:{peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start etcd: {e}"))?;
        Ok(Etcd(child))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_enddate_parses() {
        let t = parse_enddate("notAfter=Nov  7 12:00:00 2036 GMT\n").unwrap();
        assert_eq!(t.to_rfc3339(), "2036-11-07T12:00:00+00:00");
        assert!(parse_enddate("garbage").is_none());
    }
}
