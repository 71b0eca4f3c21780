//! Authorship of backups (design §8): OpenSSH signatures (SSHSIG, namespace `cpvault`) over
//! the exact bytes of an outer manifest, and trust as an OpenSSH `allowed_signers` file. age
//! gives secrecy, not authorship: anyone holding the public recipient can build an archive
//! that decrypts and checks out, so a backup counts as genuine only when its signature
//! verifies under an allowed key. This module decides that and nothing else; it must never
//! read the store, never log key material, and never accept input it has not bounded.

mod allowed;
mod signing;

pub use allowed::{AllowedSigners, Signer};
pub use signing::{generate, SigningKey};

use serde::Serialize;

/// The SSHSIG namespace of every cpvault signature (`ssh-keygen -Y verify -n cpvault`).
pub const NAMESPACE: &str = "cpvault";
/// Suffix of signature objects: `<cluster>/<id>.manifest.sig`.
pub const SIGNATURE_SUFFIX: &str = ".manifest.sig";
/// Largest signature object read: an ed25519 SSHSIG is under 1 KiB armored.
pub const MAX_SIGNATURE_BYTES: u64 = 16 * 1024;

/// Object key of the signature of `cluster/id`.
pub fn signature_key(cluster: &str, id: &str) -> String {
    format!("{cluster}/{id}{SIGNATURE_SUFFIX}")
}

/// Why a key or a trust file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file cannot be read.
    #[error("'{path}': {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what it must be.
    #[error("'{path}': {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// Whether a backup's author is trusted, as far as this run can tell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Authorship {
    /// The signature verifies under a key of the allowed signers.
    Trusted {
        /// Who signed: the principals of the matching allowed-signers line, and the key.
        signer: Signer,
    },
    /// Allowed signers are configured and this backup is unsigned or badly signed.
    Untrusted {
        /// Why, for the operator.
        reason: String,
    },
    /// No allowed signers are configured: authorship was not checked.
    NotChecked {
        /// Whether a signature object exists beside the manifest.
        signed: bool,
    },
}

impl Authorship {
    /// Judges one backup: `signature` is the signature object's bytes, `None` when there is
    /// none; `signers` is `None` when no allowed signers are configured.
    pub fn judge(
        manifest: &[u8],
        signature: Option<&[u8]>,
        signers: Option<&AllowedSigners>,
    ) -> Authorship {
        match (signers, signature) {
            (None, sig) => Authorship::NotChecked {
                signed: sig.is_some(),
            },
            (Some(_), None) => Authorship::Untrusted {
                reason: "unsigned: there is no signature beside its manifest".into(),
            },
            (Some(s), Some(sig)) => match s.verify(manifest, sig, chrono::Utc::now()) {
                Ok(signer) => Authorship::Trusted { signer },
                Err(reason) => Authorship::Untrusted { reason },
            },
        }
    }

    /// Whether the backup may be used: trusted, or trust is not configured.
    pub fn usable(&self) -> bool {
        !matches!(self, Authorship::Untrusted { .. })
    }

    /// One short phrase for tables: `trusted`, `UNTRUSTED`, `signed`, `unsigned`.
    pub fn short(&self) -> &'static str {
        match self {
            Authorship::Trusted { .. } => "trusted",
            Authorship::Untrusted { .. } => "UNTRUSTED",
            Authorship::NotChecked { signed: true } => "signed",
            Authorship::NotChecked { signed: false } => "unsigned",
        }
    }

    /// One sentence for reports.
    pub fn describe(&self) -> String {
        match self {
            Authorship::Trusted { signer } => {
                format!("signed by {} ({})", signer.principals, signer.fingerprint)
            }
            Authorship::Untrusted { reason } => reason.clone(),
            Authorship::NotChecked { signed } => format!(
                "authorship not checked ({}): give --allowed-signers FILE to check who wrote it",
                if *signed { "signed" } else { "unsigned" }
            ),
        }
    }
}

/// Reads a local file of at most `limit` bytes.
fn read_bounded(path: &std::path::Path, limit: u64) -> Result<Vec<u8>, KeyError> {
    use std::io::Read;
    let shown = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut bytes = vec![];
    f.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(KeyError::Invalid {
            path: shown,
            reason: format!("larger than {limit} bytes; this is not a key or allowed-signers file"),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_judge_under_allowed_signers() {
        let (key, public) = generate("ops@example").unwrap();
        let manifest = br#"{"id":"x"}"#;
        let sig = key.sign(manifest).unwrap();
        let signers = AllowedSigners::parse(&format!("ops@example {public}\n"), "test").unwrap();
        match Authorship::judge(manifest, Some(sig.as_bytes()), Some(&signers)) {
            Authorship::Trusted { signer } => {
                assert_eq!(signer.principals, "ops@example");
                assert!(signer.fingerprint.starts_with("SHA256:"));
            }
            other => panic!("{other:?}"),
        }
        // The same signature over other bytes (a forged manifest) is refused.
        let forged = Authorship::judge(b"{}", Some(sig.as_bytes()), Some(&signers));
        assert!(!forged.usable(), "{forged:?}");
        // An unsigned backup is refused with trust configured, usable without.
        assert!(!Authorship::judge(manifest, None, Some(&signers)).usable());
        assert_eq!(
            Authorship::judge(manifest, None, None),
            Authorship::NotChecked { signed: false }
        );
    }

    #[test]
    fn a_key_not_in_allowed_signers_is_untrusted() {
        let (key, _) = generate("a").unwrap();
        let (_, other) = generate("b").unwrap();
        let signers = AllowedSigners::parse(&format!("b {other}\n"), "test").unwrap();
        let sig = key.sign(b"m").unwrap();
        match Authorship::judge(b"m", Some(sig.as_bytes()), Some(&signers)) {
            Authorship::Untrusted { reason } => assert!(reason.contains("not in"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
