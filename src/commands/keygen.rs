//! `cpvault keygen`: a new age X25519 identity in age-keygen's text format, written 0600
//! and never over an existing file; the public recipient goes to stdout.

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
    let (identity, public) = crate::crypto::generate();
    match &args.output_file {
        Some(path) => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| {
                    format!("identity file '{}': cannot create it (it must not exist yet; keygen never overwrites a key)", path.display())
                })?;
            f.write_all(identity.expose_secret().as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("identity file '{}'", path.display()))?;
            if ctx.json() {
                super::print_json(&serde_json::json!({"recipient": public, "identity_file": path}))
            } else {
                if !ctx.quiet {
                    eprintln!(
                        "Wrote identity to {} (mode 0600). Public recipient:",
                        path.display()
                    );
                }
                super::print_text(&public)
            }
        }
        None => {
            if !ctx.quiet {
                eprintln!("Public key: {public}");
            }
            super::print_text(identity.expose_secret())
        }
    }
}
