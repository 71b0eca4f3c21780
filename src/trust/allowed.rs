//! OpenSSH's `allowed_signers` format (ssh-keygen(1), "ALLOWED SIGNERS"; the file git uses for
//! SSH-signed commits): `principals [options] keytype base64 [comment]` per line, with the
//! options `namespaces="…"`, `valid-after="…"`, `valid-before="…"` and `cert-authority`.
//! Parsing is bounded (file and line sizes, entry count) and every refusal names the line.
//! Certificate authorities are accepted in the file but never match: cpvault signatures are
//! made with plain keys.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::Serialize;
use ssh_key::{HashAlg, PublicKey, SshSig};

use super::{read_bounded, KeyError, MAX_SIGNATURE_BYTES, NAMESPACE};

const MAX_FILE_BYTES: u64 = 1024 * 1024;
const MAX_LINE_BYTES: usize = 16 * 1024;
const MAX_ENTRIES: usize = 10_000;

/// Who signed a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// The principals field of the matching allowed-signers line (e.g. `backup@admin`).
    pub principals: String,
    /// The key's SHA256 fingerprint, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
struct Line {
    principals: String,
    namespaces: Option<Vec<String>>,
    valid_after: Option<DateTime<Utc>>,
    valid_before: Option<DateTime<Utc>>,
    cert_authority: bool,
    key: PublicKey,
}

/// The keys whose signatures are trusted.
#[derive(Debug, Clone)]
pub struct AllowedSigners {
    lines: Vec<Line>,
}

impl AllowedSigners {
    /// Reads an allowed-signers file.
    ///
    /// # Errors
    /// [`KeyError`] naming the file and line when it cannot be read or parsed, or holds no
    /// key (an empty trust file would refuse every backup, which is never what was meant).
    pub fn load(path: &std::path::Path) -> Result<AllowedSigners, KeyError> {
        let bytes = read_bounded(path, MAX_FILE_BYTES)?;
        let shown = path.display().to_string();
        let text = String::from_utf8(bytes).map_err(|_| KeyError::Invalid {
            path: shown.clone(),
            reason: "not UTF-8 text; expected OpenSSH allowed_signers lines".into(),
        })?;
        AllowedSigners::parse(&text, &shown)
    }

    /// Parses allowed-signers text; `origin` names it in errors.
    ///
    /// # Errors
    /// As [`AllowedSigners::load`].
    pub fn parse(text: &str, origin: &str) -> Result<AllowedSigners, KeyError> {
        let mut lines = vec![];
        for (n, raw) in text.lines().enumerate() {
            let invalid = |reason: String| KeyError::Invalid {
                path: format!("{origin}:{}", n + 1),
                reason,
            };
            if raw.len() > MAX_LINE_BYTES {
                return Err(invalid(format!("line longer than {MAX_LINE_BYTES} bytes")));
            }
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if lines.len() == MAX_ENTRIES {
                return Err(invalid(format!("more than {MAX_ENTRIES} keys")));
            }
            lines.push(parse_line(line).map_err(invalid)?);
        }
        if lines.is_empty() {
            return Err(KeyError::Invalid {
                path: origin.to_string(),
                reason: "holds no key; add a line `NAME ssh-ed25519 AAAA…` (the public key `cpvault keygen --signing` printed)".into(),
            });
        }
        Ok(AllowedSigners { lines })
    }

    /// Checks an armored SSHSIG over `message` at time `now`. Returns the signer, or why
    /// the signature does not make the message trusted.
    ///
    /// # Errors
    /// A sentence for the operator: malformed, wrong namespace, unknown key, bad signature.
    pub fn verify(
        &self,
        message: &[u8],
        armored: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Signer, String> {
        if armored.len() as u64 > MAX_SIGNATURE_BYTES {
            return Err(format!(
                "signature rejected: larger than {MAX_SIGNATURE_BYTES} bytes"
            ));
        }
        let sig = SshSig::from_pem(armored)
            .map_err(|e| format!("signature rejected: not an SSH signature ({e})"))?;
        if sig.namespace() != NAMESPACE {
            return Err(format!(
                "signature rejected: made for namespace {:?}, not {NAMESPACE:?}",
                crate::text::escape_for_line(sig.namespace(), 64)
            ));
        }
        let signing_key = PublicKey::from(sig.public_key().clone());
        let fingerprint = signing_key.fingerprint(HashAlg::Sha256).to_string();
        let mut candidates = self
            .lines
            .iter()
            .filter(|l| !l.cert_authority && l.key.key_data() == sig.public_key())
            .peekable();
        if candidates.peek().is_none() {
            return Err(format!(
                "signature rejected: signed by key {fingerprint}, which is not in the allowed signers"
            ));
        }
        let mut why = String::new();
        for l in candidates {
            if let Some(ns) = &l.namespaces {
                if !ns.iter().any(|p| glob(p, NAMESPACE)) {
                    why = format!("key {fingerprint} is allowed only for namespaces {ns:?}");
                    continue;
                }
            }
            if l.valid_after.is_some_and(|t| now < t) || l.valid_before.is_some_and(|t| now > t) {
                why = format!("key {fingerprint} is outside its valid-after/valid-before window");
                continue;
            }
            return match signing_key.verify(NAMESPACE, message, &sig) {
                Ok(()) => Ok(Signer {
                    principals: l.principals.clone(),
                    fingerprint,
                }),
                Err(_) => Err(format!(
                    "signature rejected: it does not match the manifest's bytes (key {fingerprint}); the manifest was altered or the signature belongs to another backup"
                )),
            };
        }
        Err(format!("signature rejected: {why}"))
    }
}

fn parse_line(line: &str) -> Result<Line, String> {
    let (principals, rest) = split_token(line);
    if principals.is_empty() || rest.is_empty() {
        return Err("expected `principals [options] keytype base64-key`".into());
    }
    let (mut namespaces, mut valid_after, mut valid_before, mut cert_authority) =
        (None, None, None, false);
    // Options are present when the second token is not a key type.
    let mut rest = rest;
    let (second, after) = split_token(rest);
    if !is_key_type(second) {
        for opt in split_options(second)? {
            let (name, value) = match opt.split_once('=') {
                Some((n, v)) => (n.to_ascii_lowercase(), Some(unquote(v)?)),
                None => (opt.to_ascii_lowercase(), None),
            };
            match (name.as_str(), value) {
                ("cert-authority", None) => cert_authority = true,
                ("namespaces", Some(v)) => {
                    namespaces = Some(v.split(',').map(|s| s.trim().to_string()).collect())
                }
                ("valid-after", Some(v)) => valid_after = Some(parse_time(&v)?),
                ("valid-before", Some(v)) => valid_before = Some(parse_time(&v)?),
                (other, _) => return Err(format!("unknown or malformed option {other:?}")),
            }
        }
        rest = after;
    }
    let mut parts = rest.split_whitespace();
    let (kind, data) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !is_key_type(kind) || data.is_empty() {
        return Err(format!(
            "expected a public key (e.g. `ssh-ed25519 AAAA…`) after the principals, found {:?}",
            crate::text::escape_for_line(kind, 40)
        ));
    }
    let key = PublicKey::from_openssh(&format!("{kind} {data}"))
        .map_err(|e| format!("the {kind} key does not parse ({e})"))?;
    Ok(Line {
        principals: principals.to_string(),
        namespaces,
        valid_after,
        valid_before,
        cert_authority,
        key,
    })
}

fn is_key_type(s: &str) -> bool {
    s.starts_with("ssh-") || s.starts_with("ecdsa-sha2-") || s.starts_with("sk-")
}

/// The first token (up to unquoted white space) and the rest, trimmed.
fn split_token(s: &str) -> (&str, &str) {
    let mut quoted = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => return (&s[..i], s[i..].trim_start()),
            _ => {}
        }
    }
    (s, "")
}

fn split_options(s: &str) -> Result<Vec<&str>, String> {
    let mut out = vec![];
    let (mut quoted, mut start) = (false, 0);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if quoted {
        return Err("unterminated quote in the options".into());
    }
    out.push(&s[start..]);
    Ok(out)
}

fn unquote(v: &str) -> Result<String, String> {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => Ok(inner.to_string()),
        None if !v.contains('"') => Ok(v.to_string()),
        None => Err(format!("badly quoted option value {v:?}")),
    }
}

/// `YYYYMMDD[HHMM[SS]][Z]`: UTC with `Z`, local time without (as ssh-keygen reads it).
fn parse_time(v: &str) -> Result<DateTime<Utc>, String> {
    let (digits, utc) = match v.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (v, false),
    };
    let bad = || format!("time {v:?} is not YYYYMMDD[HHMM[SS]][Z]");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let naive = match digits.len() {
        8 => NaiveDate::parse_from_str(digits, "%Y%m%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0)),
        12 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M").ok(),
        14 => NaiveDateTime::parse_from_str(digits, "%Y%m%d%H%M%S").ok(),
        _ => None,
    }
    .ok_or_else(bad)?;
    if utc {
        Ok(Utc.from_utc_datetime(&naive))
    } else {
        chrono::Local
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .ok_or_else(bad)
    }
}

/// OpenSSH pattern matching: `*` and `?`, a leading `!` negates (never matches here).
fn glob(pattern: &str, s: &str) -> bool {
    if pattern.starts_with('!') {
        return false;
    }
    fn rec(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => rec(&p[1..], s) || (!s.is_empty() && rec(p, &s[1..])),
            (Some(b'?'), Some(_)) => rec(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => rec(&p[1..], &s[1..]),
            _ => false,
        }
    }
    rec(pattern.as_bytes(), s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHtULEN8vGvl0Ni3EKFJ0s0iLg+/A6K8PuQZYhYhE1VY";

    #[test]
    fn parses_options_comments_and_quotes() {
        let text = format!(
            "# trust\n\nops@x,backup@* namespaces=\"git,cpvault\",valid-after=\"20200101\" {KEY} laptop\nca@x cert-authority {KEY}\nplain {KEY}\n"
        );
        let s = AllowedSigners::parse(&text, "f").unwrap();
        assert_eq!(s.lines.len(), 3);
        assert_eq!(s.lines[0].principals, "ops@x,backup@*");
        assert_eq!(
            s.lines[0].namespaces.as_deref(),
            Some(&["git".to_string(), "cpvault".to_string()][..])
        );
        assert!(s.lines[0].valid_after.is_some());
        assert!(s.lines[1].cert_authority);
    }

    #[test]
    fn refusals_name_the_line() {
        for (text, want) in [
            ("", "holds no key"),
            ("only-a-name\n", "f:1"),
            (
                &format!("x bogus=1 {KEY}\n") as &str,
                "unknown or malformed option",
            ),
            ("x ssh-ed25519 !!!\n", "does not parse"),
            (&format!("x valid-before=\"2020\" {KEY}\n"), "YYYYMMDD"),
            (&format!("x namespaces=\"a {KEY}\n"), "f:1"),
        ] {
            let e = AllowedSigners::parse(text, "f").unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let long = format!("x {KEY} {}\n", "c".repeat(MAX_LINE_BYTES));
        assert!(AllowedSigners::parse(&long, "f").is_err());
    }

    #[test]
    fn namespace_and_window_restrict_a_key() {
        let (key, public) = super::super::generate("k").unwrap();
        let sig = key.sign(b"m").unwrap();
        let now = Utc::now();
        let check = |line: String| {
            AllowedSigners::parse(&line, "f")
                .unwrap()
                .verify(b"m", sig.as_bytes(), now)
        };
        assert!(check(format!("a {public}")).is_ok());
        assert!(check(format!("a namespaces=\"cp*\" {public}")).is_ok());
        assert!(check(format!("a namespaces=\"git\" {public}")).is_err());
        assert!(check(format!("a valid-before=\"20200101Z\" {public}")).is_err());
        assert!(check(format!("a valid-after=\"29990101Z\" {public}")).is_err());
        assert!(check(format!("a cert-authority {public}")).is_err());
        // Garbage and oversized signatures are refused, not parsed.
        let s = AllowedSigners::parse(&format!("a {public}"), "f").unwrap();
        assert!(s
            .verify(b"m", b"-----BEGIN SSH SIGNATURE-----\nxx\n", now)
            .is_err());
        assert!(s.verify(b"m", &vec![b'A'; 20_000], now).is_err());
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("cpvault", "cpvault"));
        assert!(glob("cp*", "cpvault"));
        assert!(glob("c?vault", "cpvault"));
        assert!(!glob("git", "cpvault"));
        assert!(!glob("!cpvault", "cpvault"));
    }
}
