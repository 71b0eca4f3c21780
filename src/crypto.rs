//! Recipients and identities: parsing the public keys an archive is encrypted to, and
//! loading the identities that open it. Secret material stays inside age's types (which
//! zeroize) or `SecretString`; nothing here may print, log or `Debug`-format a secret.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};

/// Errors loading keys. Each names the key or file, the cause and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A recipient string is not one age understands.
    #[error("recipient '{0}' is not an age (age1…) or SSH (ssh-ed25519/ssh-rsa) public key; check the -r value or run `cpvault keygen`")]
    BadRecipient(String),
    /// A secret key was given where a public recipient belongs; it is never repeated.
    #[error("a secret key (AGE-SECRET-KEY-… or a private key) was given as a recipient; pass its public key (age1…, shown by `age-keygen -y KEYFILE`), and keep the identity for -i")]
    SecretAsRecipient,
    /// A file could not be read.
    #[error("{what} '{path}': {source}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable key.
    #[error("{what} '{path}' holds no usable key: {reason}")]
    Empty {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Nothing to encrypt to.
    #[error("no recipient: give -r age1…/ssh-ed25519 …, -R FILE, or set CPVAULT_PASSPHRASE (the archive holds CA private keys, so encryption is not optional)")]
    NoRecipients,
    /// Passphrase together with public keys.
    #[error("CPVAULT_PASSPHRASE cannot be combined with -r/-R: age allows a passphrase only as the sole recipient; unset one of them")]
    PassphraseWithRecipients,
}

/// What a backup encrypts to.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send>>,
    public: Vec<String>,
    passphrase: Option<SecretString>,
}

impl Recipients {
    /// Public descriptions for the manifest: the public keys, or `["scrypt"]`.
    pub fn public(&self) -> Vec<String> {
        if self.passphrase.is_some() {
            vec!["scrypt".into()]
        } else {
            self.public.clone()
        }
    }

    /// A fresh encryptor (new file key) for one archive.
    ///
    /// # Errors
    /// age's error when the recipients cannot be combined.
    pub fn encryptor(&self) -> Result<age::Encryptor, age::EncryptError> {
        match &self.passphrase {
            Some(p) => Ok(age::Encryptor::with_user_passphrase(p.clone())),
            None => age::Encryptor::with_recipients(
                self.keys.iter().map(|k| k.as_ref() as &dyn age::Recipient),
            ),
        }
    }
}

fn parse_recipient(s: &str) -> Result<(Box<dyn age::Recipient + Send>, String), KeyError> {
    let s = s.trim();
    if s.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") || s.contains("PRIVATE KEY") {
        return Err(KeyError::SecretAsRecipient);
    }
    // Repeat at most the start of what was given: enough to recognise it, never a whole blob.
    let shown = |s: &str| {
        s.chars().take(40).collect::<String>() + if s.chars().count() > 40 { "…" } else { "" }
    };
    if s.starts_with("age1") {
        let r: age::x25519::Recipient = s.parse().map_err(|_| KeyError::BadRecipient(shown(s)))?;
        Ok((Box::new(r), s.to_string()))
    } else if s.starts_with("ssh-") {
        let r: age::ssh::Recipient = s.parse().map_err(|_| KeyError::BadRecipient(shown(s)))?;
        Ok((Box::new(r), s.to_string()))
    } else {
        Err(KeyError::BadRecipient(shown(s)))
    }
}

/// Collects recipients from `-r` values, `-R` files (one per line, `#` comments) and a
/// passphrase.
///
/// # Errors
/// [`KeyError`] for a bad key, an unreadable file, none at all, or a passphrase mixed with
/// keys.
pub fn recipients(
    inline: &[String],
    files: &[PathBuf],
    passphrase: Option<SecretString>,
) -> Result<Recipients, KeyError> {
    let mut keys = vec![];
    let mut public: Vec<String> = vec![];
    let add = |s: &str, keys: &mut Vec<_>, public: &mut Vec<String>| -> Result<(), KeyError> {
        let (k, p) = parse_recipient(s)?;
        if !public.contains(&p) {
            keys.push(k);
            public.push(p);
        }
        Ok(())
    };
    for r in inline {
        add(r, &mut keys, &mut public)?;
    }
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|source| KeyError::Read {
            what: "recipients file",
            path: f.clone(),
            source,
        })?;
        let before = public.len();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            add(line, &mut keys, &mut public)?;
        }
        if public.len() == before {
            return Err(KeyError::Empty {
                what: "recipients file",
                path: f.clone(),
                reason: "no recipient lines".into(),
            });
        }
    }
    match (passphrase, keys.is_empty()) {
        (Some(_), false) => Err(KeyError::PassphraseWithRecipients),
        (None, true) => Err(KeyError::NoRecipients),
        (passphrase, _) => Ok(Recipients {
            keys,
            public,
            passphrase,
        }),
    }
}

/// Identities that can open archives.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// The identities as age wants them.
    pub fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }

    /// Whether there are none (a shallow verify).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Loads identity files (age `AGE-SECRET-KEY-…` files as written by `cpvault keygen` or
/// `age-keygen`, or unencrypted OpenSSH private keys) and a passphrase.
///
/// # Errors
/// [`KeyError`] for an unreadable file or one without a usable key.
pub fn identities(
    files: &[PathBuf],
    passphrase: Option<SecretString>,
) -> Result<Identities, KeyError> {
    let mut keys: Vec<Box<dyn age::Identity + Send + Sync>> = vec![];
    for f in files {
        keys.extend(load_identity_file(f)?);
    }
    if let Some(p) = passphrase {
        keys.push(Box::new(age::scrypt::Identity::new(p)));
    }
    Ok(Identities { keys })
}

fn load_identity_file(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, KeyError> {
    let bytes = std::fs::read(path).map_err(|source| KeyError::Read {
        what: "identity file",
        path: path.into(),
        source,
    })?;
    let empty = |reason: String| KeyError::Empty {
        what: "identity file",
        path: path.into(),
        reason,
    };
    if bytes.starts_with(b"-----BEGIN") {
        let id = age::ssh::Identity::from_buffer(&bytes[..], Some(path.display().to_string()))
            .map_err(|e| empty(e.to_string()))?;
        return match id {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(id)]),
            age::ssh::Identity::Encrypted(_) => Err(empty(
                "the SSH key is passphrase-protected; decrypt a copy with `ssh-keygen -p` or use an age identity".into(),
            )),
            age::ssh::Identity::Unsupported(_) => Err(empty("unsupported SSH key type (use ed25519 or RSA)".into())),
        };
    }
    let file = age::IdentityFile::from_buffer(&bytes[..]).map_err(|e| empty(e.to_string()))?;
    let ids = file.into_identities().map_err(|e| empty(e.to_string()))?;
    if ids.is_empty() {
        return Err(empty("no AGE-SECRET-KEY-1… line".into()));
    }
    Ok(ids)
}

/// A new X25519 identity as `age-keygen` writes it, and its public recipient.
pub fn generate() -> (SecretString, String) {
    let id = age::x25519::Identity::generate();
    let public = id.to_public().to_string();
    let text = format!(
        "# created: {}\n# public key: {public}\n{}\n",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        id.to_string().expose_secret()
    );
    (SecretString::from(text), public)
}

/// The passphrase from `CPVAULT_PASSPHRASE`, if set and non-empty.
pub fn passphrase_from_env() -> Option<SecretString> {
    std::env::var("CPVAULT_PASSPHRASE")
        .ok()
        .filter(|s| !s.is_empty())
        .map(SecretString::from)
}
