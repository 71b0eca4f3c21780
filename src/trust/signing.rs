//! The signing side: an unencrypted OpenSSH ed25519 private key (from `cpvault keygen
//! --signing` or `ssh-keygen -t ed25519 -N ''`) that signs outer manifests as armored SSHSIG.
//! The key material zeroizes on drop (ssh-key's own types) and is never printed.

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey};
use zeroize::Zeroizing;

use super::{read_bounded, KeyError, NAMESPACE};

/// A loaded signing key.
pub struct SigningKey {
    key: PrivateKey,
    public: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads an OpenSSH private key file.
    ///
    /// # Errors
    /// [`KeyError`] when the file cannot be read, is not an OpenSSH private key, is
    /// passphrase-protected (a scheduled backup cannot type it), or is not ed25519.
    pub fn load(path: &std::path::Path) -> Result<SigningKey, KeyError> {
        let text = Zeroizing::new(read_bounded(path, 64 * 1024)?);
        let invalid = |reason: String| KeyError::Invalid {
            path: path.display().to_string(),
            reason,
        };
        let key = PrivateKey::from_openssh(&*text).map_err(|e| {
            invalid(format!("not an OpenSSH private key ({e}); make one with `cpvault keygen --signing -o FILE`"))
        })?;
        if key.is_encrypted() {
            return Err(invalid(
                "the key is passphrase-protected; signing runs unattended, so use an unencrypted key kept 0600 (`cpvault keygen --signing -o FILE`)".into(),
            ));
        }
        if key.algorithm() != Algorithm::Ed25519 {
            return Err(invalid(format!(
                "a {} key; backups are signed with ed25519 keys only (`cpvault keygen --signing -o FILE`)",
                key.algorithm()
            )));
        }
        let public = key
            .public_key()
            .to_openssh()
            .map_err(|e| invalid(e.to_string()))?;
        Ok(SigningKey { key, public })
    }

    /// The public key line (`ssh-ed25519 AAAA… comment`) for an allowed-signers file.
    pub fn public(&self) -> &str {
        &self.public
    }

    /// Signs `message` (an outer manifest's exact bytes): an armored SSHSIG in namespace
    /// `cpvault`, as `ssh-keygen -Y sign -n cpvault` writes it.
    ///
    /// # Errors
    /// Only when the signature cannot be encoded (not expected for ed25519).
    pub fn sign(&self, message: &[u8]) -> Result<String, ssh_key::Error> {
        let mut pem = self
            .key
            .sign(NAMESPACE, HashAlg::Sha512, message)?
            .to_pem(LineEnding::LF)?;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        Ok(pem)
    }
}

/// A new ed25519 signing key with `comment`: the key and its public line.
///
/// # Errors
/// Only when the key cannot be encoded.
pub fn generate(comment: &str) -> Result<(SigningKey, String), ssh_key::Error> {
    let mut seed = Zeroizing::new([0u8; 32]);
    rand::fill(&mut seed[..]);
    let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::new(pair.into(), comment)?;
    let public = key.public_key().to_openssh()?;
    Ok((
        SigningKey {
            key,
            public: public.clone(),
        },
        public,
    ))
}

impl SigningKey {
    /// The private key in OpenSSH format, unencrypted, for writing to a 0600 file.
    ///
    /// # Errors
    /// Only when the key cannot be encoded.
    pub fn to_openssh(&self) -> Result<Zeroizing<String>, ssh_key::Error> {
        self.key.to_openssh(LineEnding::LF)
    }
}
