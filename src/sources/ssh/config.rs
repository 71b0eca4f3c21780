//! The ssh configuration of cpvault's connections (`ssh -F`): what ssh reads by itself, the
//! user's `~/.ssh/config` and then `/etc/ssh/ssh_config`, followed by one preference of
//! cpvault's: AES-GCM first among the ciphers. ssh keeps the first value it meets for an
//! option, so the preference applies only where neither file sets `Ciphers`; a user's or an
//! administrator's choice always wins.
//!
//! Included files are not read exactly as ssh reads its own two files (`~` follows `$HOME`,
//! relative includes and permission checks differ), so the file is used only when `ssh -G`
//! resolves the host to the same settings with it as without it, ciphers aside; otherwise
//! (and with a jump host, whose own ssh would be handed the file too) ssh runs as before.
//!
//! Why: a restore streams the whole snapshot (a gigabyte and more) through one SSH channel,
//! and OpenSSH's default cipher, chacha20-poly1305, costs about twice the CPU of AES-GCM on a
//! CPU with AES instructions (1 GB through `ssh … cat` on loopback: 2.25 s against 1.14 s),
//! on the workstation and on the node alike. Every cipher in the list is in OpenSSH's own
//! defaults (since 6.5), so a server that accepts ssh's defaults accepts these.

use std::io::{self, Write};
use std::path::Path;

/// The ciphers in the order cpvault asks for them when no configuration says otherwise.
pub(crate) const CIPHERS: &str = "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr";

/// The configuration's text: `user` and `system` included in ssh's own order, then the
/// preference for every host.
pub(crate) fn text(user: &str, system: &Path) -> String {
    format!(
        "# Written by cpvault for one ssh connection and removed once it is up.\n\
         # The files ssh reads without -F, in its order; the first value of an option wins.\n\
         Include \"{user}\"\n\
         Include \"{}\"\n\
         # cpvault's preference, where neither file sets Ciphers.\n\
         Host *\n  Ciphers {CIPHERS}\n",
        system.display()
    )
}

/// Writes the configuration into a private temporary file (0600), to live as long as the
/// connection's start. The user's config is named by the home directory in the password
/// database, where ssh looks for it (a `~` in an `Include` would follow `$HOME` instead).
///
/// # Errors
/// The temporary file cannot be written, or this user has no home directory.
pub(crate) fn write() -> io::Result<tempfile::NamedTempFile> {
    let home = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .ok()
        .flatten()
        .map(|u| u.dir)
        .ok_or_else(|| io::Error::other("this user has no entry in the password database"))?;
    let user = home.join(".ssh/config");
    let user = user.to_str().filter(|p| !p.contains('"')).ok_or_else(|| {
        io::Error::other("the home directory's path cannot be written in ssh's config")
    })?;
    let mut f = tempfile::Builder::new()
        .prefix("cpvault-ssh-config.")
        .tempfile()?;
    f.write_all(text(user, Path::new("/etc/ssh/ssh_config")).as_bytes())?;
    f.flush()?;
    Ok(f)
}

/// The configuration file for a connection to `host` (as `user`, on `port`), or `None` when
/// ssh would resolve anything but the ciphers differently with it (see the module docs).
pub(crate) async fn for_connection(
    host: &str,
    user: Option<&str>,
    port: Option<u16>,
) -> Option<tempfile::NamedTempFile> {
    let f = write().ok()?;
    let same = resolves_the_same(f.path(), host, user, port, |_| {}).await;
    if !same {
        tracing::debug!(
            "ssh resolves {host} differently through cpvault's configuration file; ssh's own configuration is used as it is"
        );
    }
    same.then_some(f)
}

/// Whether `ssh -G` gives the same settings for `host` with `-F cfg` as without, the
/// `ciphers` line aside; `false` when either run fails. `env` adjusts both commands (tests).
async fn resolves_the_same(
    cfg: &Path,
    host: &str,
    user: Option<&str>,
    port: Option<u16>,
    env: impl Fn(&mut tokio::process::Command),
) -> bool {
    let resolved = |with: Option<&Path>| {
        let mut c = tokio::process::Command::new("ssh");
        c.arg("-G");
        if let Some(f) = with {
            c.arg("-F").arg(f);
        }
        if let Some(u) = user {
            c.arg("-l").arg(u);
        }
        if let Some(p) = port {
            c.arg("-p").arg(p.to_string());
        }
        c.arg("--").arg(host).stdin(std::process::Stdio::null());
        env(&mut c);
        async move {
            let out = c.output().await.ok().filter(|o| o.status.success())?;
            let mut lines: Vec<String> = String::from_utf8(out.stdout)
                .ok()?
                .lines()
                .filter(|l| !l.starts_with("ciphers "))
                .map(String::from)
                .collect();
            lines.sort();
            Some(lines)
        }
    };
    match (resolved(None).await, resolved(Some(cfg)).await) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// `ssh -G` with the written configuration: the options ssh would use for `host`.
    fn resolved(user_config: &str, host: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user config");
        std::fs::write(&user, user_config).unwrap();
        let system = dir.path().join("system");
        std::fs::write(&system, "Host *\n  ServerAliveCountMax 7\n").unwrap();
        let cfg = dir.path().join("cfg");
        std::fs::write(&cfg, text(user.to_str().unwrap(), &system)).unwrap();
        let out = Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(&cfg)
            .arg(host)
            .output()
            .expect("ssh (openssh-client) is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn line<'a>(all: &'a str, key: &str) -> &'a str {
        all.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in {all}"))
    }

    #[test]
    fn aes_gcm_comes_first_unless_a_config_file_chooses_and_both_files_apply() {
        // Neither file chooses: cpvault's order. Both files are read.
        let user = "Host node1\n  Port 2222\n  User ops\n";
        let got = resolved(user, "node1");
        assert_eq!(line(&got, "ciphers"), format!("ciphers {CIPHERS}"));
        assert_eq!(line(&got, "port"), "port 2222");
        assert_eq!(line(&got, "user"), "user ops");
        assert_eq!(line(&got, "serveralivecountmax"), "serveralivecountmax 7");
        // Another host is not touched by the user's Host block.
        assert_eq!(line(&resolved(user, "node2"), "port"), "port 22");
        // The user's choice wins, for the hosts it names.
        let chosen = "Host node1\n  Ciphers chacha20-poly1305@openssh.com\n";
        assert_eq!(
            line(&resolved(chosen, "node1"), "ciphers"),
            "ciphers chacha20-poly1305@openssh.com"
        );
        assert_eq!(
            line(&resolved(chosen, "node2"), "ciphers"),
            format!("ciphers {CIPHERS}")
        );
    }

    /// cpvault's file names the user's config where ssh looks for it (the password
    /// database's home), so a `$HOME` elsewhere changes nothing; a file that names it by
    /// `~` (which follows `$HOME`) resolves differently and is not used, nor is a file ssh
    /// refuses.
    #[tokio::test]
    async fn the_file_is_used_only_when_ssh_resolves_the_host_the_same_with_it() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(
            home.path().join(".ssh/config"),
            "Host node1\n  Port 2222\n  User ops\n",
        )
        .unwrap();
        let h = home.path().to_path_buf();
        let env = move |c: &mut tokio::process::Command| {
            c.env("HOME", &h);
        };
        let ours = write().unwrap();
        assert!(resolves_the_same(ours.path(), "node1", None, None, &env).await);
        assert!(resolves_the_same(ours.path(), "node1", Some("root"), Some(22), &env).await);
        let tilde = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            tilde.path(),
            text("~/.ssh/config", Path::new("/etc/ssh/ssh_config")),
        )
        .unwrap();
        assert!(!resolves_the_same(tilde.path(), "node1", None, None, &env).await);
        let broken = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(broken.path(), "NoSuchOption yes\n").unwrap();
        assert!(!resolves_the_same(broken.path(), "node1", None, None, &env).await);
    }

    #[test]
    fn the_written_file_is_private_and_holds_the_text() {
        use std::os::unix::fs::PermissionsExt;
        let f = write().unwrap();
        let meta = std::fs::metadata(f.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let body = std::fs::read_to_string(f.path()).unwrap();
        assert!(body.contains("/.ssh/config\"\n"), "{body}");
        assert!(!body.contains('~'), "{body}");
        assert!(body.contains("Include \"/etc/ssh/ssh_config\""), "{body}");
    }
}
