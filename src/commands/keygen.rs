//! `cpvault keygen`: a new age X25519 identity in age-keygen's text format, or with
//! `--signing` an OpenSSH ed25519 signing key, written 0600 and never over an existing file;
//! the public recipient (or public key line) goes to stdout.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use age::secrecy::ExposeSecret;
use anyhow::Context;

use super::Ctx;
use crate::cli::KeygenArgs;

/// Runs the command.
///
/// # Errors
/// The file exists or cannot be written.
pub fn run(ctx: &Ctx, args: KeygenArgs) -> anyhow::Result<()> {
    if args.signing {
        return signing(ctx, &args);
    }
    let (identity, public) = crate::crypto::generate();
    match &args.output_file {
        Some(path) => {
            write_new(path, identity.expose_secret().as_bytes())?;
            if ctx.json() {
                super::print_json(&serde_json::json!({"recipient": public, "identity_file": path}))
            } else {
                if !ctx.quiet {
                    crate::say!(
                        "Wrote identity to {} (mode 0600). Public recipient:",
                        path.display()
                    );
                }
                super::print_text(&public)
            }
        }
        None => {
            if !ctx.quiet {
                crate::say!("Public key: {public}");
            }
            super::print_text(identity.expose_secret())
        }
    }
}

/// Writes a new signing key to the (required) output file and prints its public key line.
fn signing(ctx: &Ctx, args: &KeygenArgs) -> anyhow::Result<()> {
    let path = args
        .output_file
        .as_ref()
        .expect("clap requires -o with --signing");
    let (key, public) = crate::trust::generate(&args.comment)
        .map_err(|e| anyhow::anyhow!("making a signing key: {e}"))?;
    let text = key
        .to_openssh()
        .map_err(|e| anyhow::anyhow!("encoding the signing key: {e}"))?;
    write_new(path, text.as_bytes())?;
    if ctx.json() {
        return super::print_json(
            &serde_json::json!({"public_key": public, "signing_key_file": path}),
        );
    }
    if !ctx.quiet {
        crate::say!(
            "Wrote signing key to {} (mode 0600). Public key, for the allowed_signers file as `NAME {public}`:",
            path.display()
        );
    }
    super::print_text(&public)
}

/// Creates `path` (0600, never over an existing file) with `bytes`.
fn write_new(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| {
            format!("key file '{}': cannot create it (it must not exist yet; keygen never overwrites a key)", path.display())
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("key file '{}'", path.display()))
}
