//! `cpvault extract`: decrypts a backup into a new directory while verifying every layer
//! (the work is `crate::extract`'s), then lists the files written. With allowed signers, an
//! untrusted backup is refused before anything is written.

use super::Ctx;
use crate::cli::ExtractArgs;
use crate::error::Usage;
use crate::extract::{extract_verified, ExtractError};

/// Runs the command.
///
/// # Errors
/// No identity, a non-empty target, a missing or untrusted backup, or a failed verification
/// (exit 3, with nothing left in the target).
pub async fn run(ctx: &Ctx, args: ExtractArgs) -> anyhow::Result<()> {
    crate::catalog::parse_ref(&args.reference)?;
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?.ok_or_else(|| {
        Usage("extract needs a key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE for a passphrase archive)".into())
    })?;
    let signers = ctx.allowed_signers(&args.trust)?;
    let (m, who) = crate::catalog::resolve_with(&store, &args.reference, signers.as_ref()).await?;
    super::note_authorship(ctx, &m.reference(), &who);
    let done = match extract_verified(&store, &m, &who, identities, &args.to, ctx.quiet).await {
        Ok(done) => done,
        Err(ExtractError::Verify(report)) => {
            return Err(super::verify_failed(
                ctx,
                &report,
                format!(
                    "{} failed verification; nothing was left in {}",
                    m.reference(),
                    args.to.display()
                ),
            ));
        }
        Err(ExtractError::Other(e)) => return Err(e),
    };
    if ctx.json() {
        return super::print_json(
            &serde_json::json!({"backup": m.reference(), "to": args.to, "files": done.written, "verify": done.report}),
        );
    }
    if !ctx.quiet {
        crate::say!(
            "extracted and verified {} files of {} into {}",
            done.written.len(),
            m.reference(),
            args.to.display()
        );
    }
    super::print_text(&done.written.join("\n"))
}
