//! `cpvault extract`: decrypts a backup into a new directory while verifying every layer.
//! Files are created 0600 inside 0700 directories and get their recorded modes only after
//! the whole archive verified; on any failure everything written is removed again, so a
//! directory left behind is always a verified, complete copy. It never overwrites.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::Ctx;
use crate::archive::reader::Sink;
use crate::cli::ExtractArgs;
use crate::error::{Usage, VerifyFailed};

struct DirSink {
    root: PathBuf,
}

impl Sink for DirSink {
    fn open(
        &mut self,
        path: &str,
        _size: u64,
        _mode: u32,
    ) -> io::Result<Option<Box<dyn Write + Send>>> {
        let dest = self.root.join(path);
        if let Some(parent) = dest.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)?;
        }
        let f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)?;
        Ok(Some(Box::new(io::BufWriter::with_capacity(
            256 * 1024,
            SyncOnFlush(f),
        ))))
    }
}

/// Makes `flush` durable, so a verified extract is on disk when the command says so.
struct SyncOnFlush(File);

impl Write for SyncOnFlush {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

fn prepare(dir: &Path) -> anyhow::Result<()> {
    match fs::read_dir(dir) {
        Ok(mut it) => {
            if it.next().is_some() {
                return Err(Usage(format!(
                    "--to '{}' exists and is not empty; extract never overwrites — choose a new directory",
                    dir.display()
                ))
                .into());
            }
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("--to '{}'", dir.display()))?;
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("--to '{}': cannot create it", dir.display())),
        Err(e) => Err(e).with_context(|| format!("--to '{}'", dir.display())),
    }
}

/// Runs the command.
///
/// # Errors
/// No identity, a non-empty target, a missing backup, or a failed verification (exit 3,
/// with nothing left in the target).
pub async fn run(ctx: &Ctx, args: ExtractArgs) -> anyhow::Result<()> {
    crate::catalog::parse_ref(&args.reference)?;
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?.ok_or_else(|| {
        Usage("extract needs a key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE for a passphrase archive)".into())
    })?;
    let m = crate::catalog::resolve(&store, &args.reference).await?;
    let (report, written) = extract_verified(ctx, &store, &m, identities, &args.to).await?;
    if ctx.json() {
        return super::print_json(
            &serde_json::json!({"backup": m.reference(), "to": args.to, "files": written, "verify": report}),
        );
    }
    if !ctx.quiet {
        eprintln!(
            "extracted and verified {} files of {} into {}",
            written.len(),
            m.reference(),
            args.to.display()
        );
    }
    super::print_text(&written.join("\n"))
}

/// Verifies `m` deeply while writing its files into the new dir `to`, then applies the
/// recorded modes; on failure `to` is left empty. Returns the report and the files written.
///
/// # Errors
/// [`Usage`] when `to` is not empty, [`VerifyFailed`] when a check fails, other errors when
/// this machine cannot write.
pub async fn extract_verified(
    ctx: &Ctx,
    store: &cpvault_backends::Store,
    m: &crate::archive::manifest::Manifest,
    identities: std::sync::Arc<crate::crypto::Identities>,
    to: &Path,
) -> anyhow::Result<(crate::verify::Report, Vec<String>)> {
    prepare(to)?;
    // Files are written into a hidden 0700 sibling and moved into `to` only once every byte
    // verified, so `to` never holds unverified plaintext, even if cpvault is killed midway.
    let parent = match to.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".cpvault-extract-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work dir beside '{}'", to.display()))?;
    let sink = DirSink {
        root: partial.path().to_path_buf(),
    };
    let bar = crate::progress::bytes(ctx.quiet, 0, &format!("extract {}", m.reference()));
    let report =
        crate::verify::verify(store, m, Some(identities), Box::new(sink), bar.clone()).await;
    bar.finish_and_clear();
    if !report.ok {
        let failed: Vec<&crate::verify::Check> = report.failures().collect();
        if let [only] = failed.as_slice() {
            if only.name == "write" {
                // The backup is fine; this machine could not write it (disk full, permissions).
                anyhow::bail!(
                    "writing into {}: {}; nothing was left there — free space or fix permissions and run extract again",
                    to.display(),
                    only.detail
                );
            }
        }
        let mut text = String::new();
        super::verify::render(&mut text, &report)?;
        if ctx.json() {
            super::print_json(&report)?;
        } else {
            eprint!("{text}");
        }
        return Err(VerifyFailed(format!(
            "{} failed verification; nothing was left in {}",
            m.reference(),
            to.display()
        ))
        .into());
    }
    // Verified: now give every file the mode recorded at backup time.
    let inner = report
        .inner
        .as_ref()
        .expect("a passing deep verify read the inner manifest");
    let mut written = vec![];
    for e in &inner.entries {
        let path = partial.path().join(&e.path);
        let mode = e.mode.unwrap_or(0o600) & 0o7777;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting mode {mode:o} on '{}'", path.display()))?;
        written.push(to.join(&e.path).display().to_string());
    }
    // `to` is empty (checked by prepare), and rename(2) may replace an empty directory.
    let partial = partial.keep();
    if let Err(e) = fs::rename(&partial, to) {
        let _ = fs::remove_dir_all(&partial);
        return Err(e)
            .with_context(|| format!("moving the extracted files into '{}'", to.display()));
    }
    Ok((report, written))
}
