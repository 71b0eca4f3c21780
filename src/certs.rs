//! Certificate facts (design.md §10): what each certificate in a backup's PKI says about
//! itself — subject, issuer, validity — and whether its private key (same stem, `.key`) is in
//! the backup and belongs to it. The facts are computed at backup from the PKI bytes as the
//! archive writer streams them (a bounded copy of each small `.crt`/`.key` file, never a second
//! read of the source), recorded in the manifest, and read by `show`, `list` and the restore
//! preflight through the pure helpers at the bottom. A private key is only ever turned into its
//! public half here; its bytes live in zeroized buffers and nothing of it is kept or logged.

use std::collections::BTreeMap;

use aws_lc_rs::signature::{self, KeyPair};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

use crate::archive::manifest::{CertInfo, KeyStatus};

/// Largest `.crt`/`.key` file read for facts; a real one is 1–4 KiB.
pub const MAX_FILE_BYTES: usize = 64 * 1024;

/// Largest number of certificate and key files one backup reads for facts (a PKI dir has a
/// few dozen); more are recorded as not read, so memory stays bounded whatever the source.
const MAX_FILES: usize = 4096;

/// Longest subject or issuer kept in the manifest.
const MAX_NAME_CHARS: usize = 1000;

/// Days before `notAfter` from which `list` flags a backup.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// What a certificate file of the PKI says about its first certificate.
struct CertFile {
    path: String,
    parsed: Result<Parsed, String>,
}

struct Parsed {
    subject: String,
    issuer: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    /// The subjectPublicKey bits: PKCS#1 `RSAPublicKey` for RSA, the point for ECDSA, the
    /// raw key for Ed25519 — the same bytes a key pair gives as its public key.
    public_key: Vec<u8>,
}

/// Collects certificate and key files as the writer streams them, and joins them into facts.
#[derive(Default)]
pub struct Collector {
    certs: Vec<CertFile>,
    /// Key path without `.key` → the public key derived from it, or why not.
    keys: BTreeMap<String, Result<Vec<u8>, String>>,
    files: usize,
}

/// Whether `path` (an archive path) is a file the collector reads: a `.crt` or `.key` below
/// `pki/`.
pub fn wanted(path: &str) -> bool {
    path.starts_with("pki/") && (path.ends_with(".crt") || path.ends_with(".key"))
}

impl Collector {
    /// A new, empty collector.
    pub fn new() -> Collector {
        Collector::default()
    }

    /// Takes the content of the [`wanted`] file `path`: `bytes` is the whole file when
    /// `complete`, else its first bytes of a file larger than [`MAX_FILE_BYTES`].
    pub fn add(&mut self, path: &str, bytes: &[u8], complete: bool) {
        self.files += 1;
        let too_many = self.files > MAX_FILES;
        if let Some(stem) = path.strip_suffix(".key") {
            let public = if too_many {
                Err("not read (too many key files)".into())
            } else if !complete {
                Err(format!("larger than {MAX_FILE_BYTES} bytes"))
            } else {
                public_key_of(bytes)
            };
            self.keys.insert(stem.to_string(), public);
        } else if path.ends_with(".crt") {
            let parsed = if too_many {
                Err(format!(
                    "not read: more than {MAX_FILES} certificate and key files"
                ))
            } else if !complete {
                Err(format!(
                    "larger than {MAX_FILE_BYTES} bytes, so not read as a certificate"
                ))
            } else {
                parse_cert(bytes)
            };
            self.certs.push(CertFile {
                path: path.to_string(),
                parsed,
            });
        }
    }

    /// The facts, one per certificate file, in the order the files came.
    pub fn finish(self) -> Vec<CertInfo> {
        self.certs
            .into_iter()
            .map(|c| {
                let stem = c.path.strip_suffix(".crt").unwrap_or(&c.path);
                match c.parsed {
                    Ok(p) => CertInfo {
                        key: Some(match self.keys.get(stem) {
                            None => KeyStatus::Missing,
                            Some(Err(_)) => KeyStatus::Unreadable,
                            Some(Ok(k)) if *k == p.public_key => KeyStatus::Match,
                            Some(Ok(_)) => KeyStatus::Mismatch,
                        }),
                        path: c.path,
                        subject: Some(p.subject),
                        issuer: Some(p.issuer),
                        not_before: Some(p.not_before),
                        not_after: Some(p.not_after),
                        error: None,
                    },
                    Err(e) => CertInfo {
                        path: c.path,
                        subject: None,
                        issuer: None,
                        not_before: None,
                        not_after: None,
                        key: None,
                        error: Some(e),
                    },
                }
            })
            .collect()
    }
}

/// One PEM block: its label and decoded bytes, wiped when dropped (it may be a private key).
type PemBlock = (String, Zeroizing<Vec<u8>>);

/// PEM blocks of `text`.
fn pem_blocks(text: &[u8]) -> Result<Vec<PemBlock>, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not PEM text (not UTF-8)".to_string())?;
    let mut out = vec![];
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        // Sized once: a growing String would leave copies of the key in freed memory.
        let mut b64 = Zeroizing::new(String::with_capacity(text.len()));
        let mut ended = false;
        for l in lines.by_ref() {
            if l == end {
                ended = true;
                break;
            }
            // RFC 7468 allows headers only in the legacy encrypted form; such a key is
            // reported as unreadable by the decode below.
            b64.push_str(l);
        }
        if !ended {
            return Err(format!("PEM block {label} has no END line"));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| format!("PEM block {label} is not valid base64"))?;
        out.push((label.to_string(), Zeroizing::new(der)));
    }
    if out.is_empty() {
        return Err("no PEM block (-----BEGIN …-----) in the file".into());
    }
    Ok(out)
}

fn name(n: &x509_parser::x509::X509Name<'_>) -> String {
    crate::text::escape_for_line(&n.to_string(), MAX_NAME_CHARS)
}

fn time(t: &x509_parser::time::ASN1Time) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp(t.timestamp(), 0).ok_or_else(|| "validity out of range".into())
}

/// The first certificate of a PEM file (a bundle's first is its leaf).
fn parse_cert(bytes: &[u8]) -> Result<Parsed, String> {
    let blocks = pem_blocks(bytes)?;
    let (_, der) = blocks
        .iter()
        .find(|(label, _)| label == "CERTIFICATE")
        .ok_or("no CERTIFICATE block in the file")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let v = cert.validity();
    Ok(Parsed {
        subject: name(cert.subject()),
        issuer: name(cert.issuer()),
        not_before: time(&v.not_before)?,
        not_after: time(&v.not_after)?,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// The public half of a PEM private key: RSA (PKCS#1 or PKCS#8), ECDSA P-256/P-384/P-521
/// (SEC1 or PKCS#8) or Ed25519 (PKCS#8).
fn public_key_of(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let blocks = pem_blocks(bytes)?;
    let (label, der) = blocks
        .iter()
        .find(|(label, _)| label.ends_with("PRIVATE KEY"))
        .ok_or("no PRIVATE KEY block in the file")?;
    let unsupported =
        || format!("a {label} this build cannot read (encrypted, or another algorithm)");
    let ecdsa = |der: &[u8]| {
        [
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &signature::ECDSA_P521_SHA512_ASN1_SIGNING,
        ]
        .into_iter()
        .find_map(|alg| signature::EcdsaKeyPair::from_private_key_der(alg, der).ok())
        .map(|k| k.public_key().as_ref().to_vec())
    };
    match label.as_str() {
        "RSA PRIVATE KEY" => signature::RsaKeyPair::from_der(der)
            .map(|k| k.public_key().as_ref().to_vec())
            .map_err(|_| unsupported()),
        "EC PRIVATE KEY" => ecdsa(der).ok_or_else(unsupported),
        "PRIVATE KEY" => signature::RsaKeyPair::from_pkcs8(der)
            .map(|k| k.public_key().as_ref().to_vec())
            .ok()
            .or_else(|| ecdsa(der))
            .or_else(|| {
                signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .ok()
                    .map(|k| k.public_key().as_ref().to_vec())
            })
            .ok_or_else(unsupported),
        _ => Err(unsupported()),
    }
}

/// Whole days from `now` until `not_after` (negative once expired; a certificate expiring
/// later today has 0 days left).
pub fn days_left(not_after: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (not_after - now).num_seconds().div_euclid(86_400)
}

/// The certificates of `certs` no longer valid at `now`.
pub fn expired(certs: &[CertInfo], now: DateTime<Utc>) -> Vec<&CertInfo> {
    certs
        .iter()
        .filter(|c| c.not_after.is_some_and(|t| t <= now))
        .collect()
}

/// The certificates of `certs` expired at `now` or expiring within `days` days of it.
pub fn expiring_within(certs: &[CertInfo], now: DateTime<Utc>, days: i64) -> Vec<&CertInfo> {
    let limit = now + chrono::Duration::days(days);
    certs
        .iter()
        .filter(|c| c.not_after.is_some_and(|t| t <= limit))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_pem_is_reported_not_parsed() {
        let mut c = Collector::new();
        c.add("pki/ca.crt", b"not a certificate", true);
        c.add("pki/big.crt", b"-----BEGIN", false);
        c.add(
            "pki/ca.key",
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            true,
        );
        let facts = c.finish();
        assert_eq!(facts.len(), 2);
        assert!(facts[0].error.as_deref().unwrap().contains("no PEM block"));
        assert!(facts[1].error.as_deref().unwrap().contains("larger than"));
        assert!(facts
            .iter()
            .all(|f| f.key.is_none() && f.not_after.is_none()));
    }

    /// A self-signed certificate for `alg` valid over `years` (PEM) and its PKCS#8 key.
    fn cert(alg: &'static rcgen::SignatureAlgorithm, years: (i32, i32)) -> (String, String) {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["node".to_string()]).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver");
        p.not_before = rcgen::date_time_ymd(years.0, 1, 1);
        p.not_after = rcgen::date_time_ymd(years.1, 1, 1);
        (p.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    #[test]
    fn keys_of_every_kind_match_their_certificate_and_no_other() {
        let mut c = Collector::new();
        let algs = [
            ("rsa", &rcgen::PKCS_RSA_SHA256),
            ("p256", &rcgen::PKCS_ECDSA_P256_SHA256),
            ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
            ("ed25519", &rcgen::PKCS_ED25519),
        ];
        let mut keys = vec![];
        for (name, alg) in algs {
            let (crt, key) = cert(alg, (2020, 2040));
            c.add(&format!("pki/{name}.crt"), crt.as_bytes(), true);
            c.add(&format!("pki/{name}.key"), key.as_bytes(), true);
            keys.push(key);
        }
        let (crt, _) = cert(&rcgen::PKCS_ECDSA_P256_SHA256, (2020, 2040));
        c.add("pki/other.crt", crt.as_bytes(), true);
        c.add("pki/other.key", keys[1].as_bytes(), true);
        c.add("pki/alone.crt", crt.as_bytes(), true);
        let facts = c.finish();
        let status: Vec<(&str, Option<KeyStatus>)> =
            facts.iter().map(|f| (f.path.as_str(), f.key)).collect();
        assert_eq!(
            status,
            [
                ("pki/rsa.crt", Some(KeyStatus::Match)),
                ("pki/p256.crt", Some(KeyStatus::Match)),
                ("pki/p384.crt", Some(KeyStatus::Match)),
                ("pki/ed25519.crt", Some(KeyStatus::Match)),
                ("pki/other.crt", Some(KeyStatus::Mismatch)),
                ("pki/alone.crt", Some(KeyStatus::Missing)),
            ]
        );
        let f = &facts[0];
        assert_eq!(f.subject.as_deref(), Some("CN=kube-apiserver"));
        assert_eq!(f.issuer, f.subject);
        assert_eq!(
            f.not_after.unwrap(),
            "2040-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(f.error.is_none());
    }

    #[test]
    fn pem_blocks_need_their_end_line() {
        assert!(pem_blocks(b"-----BEGIN CERTIFICATE-----\nAAAA\n")
            .unwrap_err()
            .contains("no END line"));
        let b = pem_blocks(b"junk\n-----BEGIN X-----\nAAEC\n-----END X-----\n").unwrap();
        assert_eq!((b[0].0.as_str(), &b[0].1[..]), ("X", &[0u8, 1, 2][..]));
    }

    #[test]
    fn days_left_counts_whole_days_and_goes_negative() {
        let now: DateTime<Utc> = "2026-01-10T12:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(days_left(at("2026-01-10T13:00:00Z"), now), 0);
        assert_eq!(days_left(at("2026-01-12T12:00:00Z"), now), 2);
        assert_eq!(days_left(at("2026-01-10T11:00:00Z"), now), -1);
        let cert = |na: &str| CertInfo {
            path: "pki/x.crt".into(),
            subject: None,
            issuer: None,
            not_before: None,
            not_after: Some(at(na)),
            key: None,
            error: None,
        };
        let certs = [
            cert("2026-01-09T00:00:00Z"),
            cert("2026-02-01T00:00:00Z"),
            cert("2027-01-01T00:00:00Z"),
        ];
        assert_eq!(expired(&certs, now).len(), 1);
        assert_eq!(expiring_within(&certs, now, 30).len(), 2);
    }
}
