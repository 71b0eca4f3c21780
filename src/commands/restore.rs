//! `cpvault restore`: onto a control-plane node over SSH, by the plan of
//! [`crate::plan::restore`] (preflight and a deep verify before anything changes, every later
//! step undone in reverse on failure), or into a local dir with `--to-dir`. Plaintext reaches
//! the node only inside the 0700 staging dir, streamed straight from the decrypting reader
//! into `tar -x` there; nothing decrypted is written on this machine except the kubeconfig the
//! user asked for (0600) or the `--to-dir` output.

use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use chrono::Utc;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::archive::reader::Sink;
use crate::archive::tarfmt::{EntryHeader, TarWriter};
use crate::cli::RestoreArgs;
use crate::error::{Usage, VerifyFailed};
use crate::etcdctl::quote;
use crate::plan::restore::{self as rplan, NodeLayout, Step};
use crate::sources::gather;
use crate::sources::kube::{Cluster, KubeTarget, Profile};
use crate::sources::ssh::Node;

/// Test hook: makes the named step fail after it ran, to exercise the rollback.
const FAIL_AT_ENV: &str = "CPVAULT_RESTORE_FAIL_AT";

/// Runs the command.
///
/// # Errors
/// Usage errors, a failed verify (exit 3), preflight refusals, or the failing step with the
/// rollback's result.
pub async fn run(ctx: &Ctx, args: RestoreArgs) -> anyhow::Result<()> {
    crate::catalog::parse_ref(&args.reference)?;
    let node_settings = node_settings(ctx, &args);
    if args.to_dir.is_none() && node_settings.ssh.is_none() && node_settings.kubeconfig.is_none() {
        return Err(Usage(
            "restore needs a target: --ssh USER@HOST (the control-plane node), --kubeconfig FILE or --cluster NAME (to find it), or --to-dir DIR (a local etcd data dir)".into(),
        )
        .into());
    }
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?.ok_or_else(|| {
        Usage("restore needs a key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE)".into())
    })?;
    let m = crate::catalog::resolve(&store, &args.reference).await?;
    if m.etcd.is_none() {
        return Err(Usage(format!(
            "{} holds no etcd snapshot, so there is nothing to restore; use extract for its files",
            m.reference()
        ))
        .into());
    }
    if let Some(dir) = &args.to_dir {
        return to_dir(ctx, &args, &store, &m, identities, dir).await;
    }
    onto_node(ctx, &args, &node_settings, &store, &m, identities).await
}

/// SSH and kubeconfig settings: flags over `[clusters.NAME]` (of `--cluster`, else of the
/// backup's cluster) over `[sources]`.
fn node_settings(ctx: &Ctx, args: &RestoreArgs) -> crate::config::Sources {
    let cfg = &ctx.config;
    let cluster = args
        .cluster
        .clone()
        .or_else(|| args.reference.split('/').next().map(str::to_string));
    let configured = cluster
        .and_then(|c| cfg.clusters.get(&c))
        .map(|c| c.sources.clone())
        .unwrap_or_default()
        .or(&cfg.sources);
    let s = &args.ssh;
    crate::config::Sources {
        ssh: s.ssh.clone(),
        ssh_user: s.ssh_user.clone(),
        ssh_key: s.ssh_key.clone(),
        ssh_port: s.ssh_port,
        ssh_jump: s.ssh_jump.clone(),
        ssh_known_hosts: s.ssh_known_hosts.clone(),
        ssh_accept_new: s.ssh_accept_new.then_some(true),
        ssh_sudo: s.ssh_sudo,
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        ..Default::default()
    }
    .or(&configured)
}

async fn to_dir(
    ctx: &Ctx,
    args: &RestoreArgs,
    store: &cpvault_backends::Store,
    m: &Manifest,
    identities: Arc<crate::crypto::Identities>,
    dir: &Path,
) -> anyhow::Result<()> {
    if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
        return Err(Usage(format!(
            "--to-dir '{}' exists and is not empty; restore never overwrites — choose a new directory",
            dir.display()
        ))
        .into());
    }
    let work = dir.join(".cpvault-extract");
    super::extract::extract_verified(ctx, store, m, identities, &work).await?;
    let result = restore_locally(args, dir, &work);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    if !ctx.quiet {
        eprintln!(
            "restored {} into {}: etcd data dir {}, PKI {}",
            m.reference(),
            dir.display(),
            dir.join("etcd").display(),
            dir.join("pki").display()
        );
    }
    super::print_text(&dir.join("etcd").display().to_string())
}

fn restore_locally(args: &RestoreArgs, dir: &Path, work: &Path) -> anyhow::Result<()> {
    let peer = args
        .initial_advertise_peer_urls
        .clone()
        .unwrap_or_else(|| "http://localhost:2380".into());
    let cluster = args
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={peer}", args.name));
    let data = dir.join("etcd");
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(work.join("etcd/snapshot.db"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--name={}", args.name))
        .arg(format!("--initial-cluster={cluster}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"))
        .output()
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot run etcdctl ({e}); install etcd-client (it provides `etcdctl snapshot restore`)"
            )
        })?;
    if !out.status.success() {
        anyhow::bail!(
            "etcdctl snapshot restore failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .trim()
                .replace('\n', "; ")
        );
    }
    for sub in ["pki", "files"] {
        if work.join(sub).exists() {
            std::fs::rename(work.join(sub), dir.join(sub))
                .with_context(|| format!("moving {sub} into {}", dir.display()))?;
        }
    }
    Ok(())
}

fn layout(args: &RestoreArgs) -> NodeLayout {
    let mut l = NodeLayout::kubeadm();
    let n = &args.node;
    l.etcdctl = l.etcdctl.with_overrides(
        n.node_etcdctl.as_ref(),
        n.node_etcd_endpoint.as_ref(),
        n.node_etcd_cacert.as_ref(),
        n.node_etcd_cert.as_ref(),
        n.node_etcd_key.as_ref(),
    );
    l.manifests_dir = args.manifests_dir.clone();
    l.data_dir = args.etcd_data_dir.clone();
    l.pki_dir = args.pki_dir.clone();
    l.admin_conf = args.admin_conf.clone();
    l.staging_parent = args.staging_dir.clone();
    l.wait_seconds = args.wait_timeout;
    if let Some(c) = &args.stopped_check {
        l.stopped_check = c.clone();
    }
    l.ready_check = args.ready_check.clone();
    l
}

fn node_err(what: &str, out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    format!(
        "{what}: {}",
        if err.is_empty() { "failed".into() } else { err }
    )
}

async fn onto_node(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &crate::config::Sources,
    store: &cpvault_backends::Store,
    m: &Manifest,
    identities: Arc<crate::crypto::Identities>,
) -> anyhow::Result<()> {
    let l = layout(args);
    // The node: given, or found through the cluster's API (with its key from the secret,
    // held in a 0600 temp file that `_key_file` removes when the restore ends).
    let (target, _key_file) = match &settings.ssh {
        Some(dest) => (gather::ssh_target(settings, dest), None),
        None => {
            let cluster = Cluster::connect(&KubeTarget {
                kubeconfig: settings.kubeconfig.clone().expect("checked"),
                context: settings.context.clone(),
                profile: settings.profile.unwrap_or(Profile::GkeAdmin),
                namespace: None,
            })
            .await?;
            let found = gather::discover_node(&cluster, settings).await?;
            if !ctx.quiet {
                eprintln!(
                    "control-plane node {} at {} (found through the cluster's API)",
                    found.name, found.address
                );
            }
            (found.target, found.key_file)
        }
    };
    let node = Node::connect(&target).await?;
    let result = restore_on(ctx, args, store, m, identities, &l, &node).await;
    node.close().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn restore_on(
    ctx: &Ctx,
    args: &RestoreArgs,
    store: &cpvault_backends::Store,
    m: &Manifest,
    identities: Arc<crate::crypto::Identities>,
    l: &NodeLayout,
    node: &Node,
) -> anyhow::Result<()> {
    let dest = node.destination();
    // ---- preflight: read-only ----
    let etcd_yaml_path = format!("{}/{}", l.manifests_dir, l.etcd_manifest);
    let out = node.run(&format!("cat {}", quote(&etcd_yaml_path))).await?;
    if !out.status.success() {
        anyhow::bail!(
            "preflight on {dest}: {} (check --manifests-dir; the node's etcd.yaml gives the member name and peer URLs)",
            node_err(&format!("cannot read {etcd_yaml_path}"), &out)
        );
    }
    let member = rplan::parse_member(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| anyhow::anyhow!("preflight on {dest}: {e}"))?;
    // The data dir the restore replaces must be the one this etcd runs on.
    if let Some(d) = &member.data_dir {
        if d.trim_end_matches('/') != l.data_dir.trim_end_matches('/') {
            anyhow::bail!(
                "preflight on {dest}: {etcd_yaml_path} runs etcd with --data-dir={d}, but --etcd-data-dir is {}; nothing was changed — pass --etcd-data-dir {d}",
                l.data_dir
            );
        }
    }
    let out = node
        .run(&format!("test -d {}/member", quote(&l.data_dir)))
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "preflight on {dest}: {} has no member/ directory, so it is not an etcd data dir; nothing was changed — check --etcd-data-dir",
            l.data_dir
        );
    }
    let tools = format!(
        "for t in tar sha256sum df stat mv cp chown; do command -v $t >/dev/null || {{ echo \"$t is missing\" >&2; exit 1; }}; done; ETCDCTL_API=3 {} version >/dev/null || {{ echo 'etcdctl does not run' >&2; exit 1; }}",
        l.etcdctl.command
    );
    let out = node.run(&tools).await?;
    if !out.status.success() {
        anyhow::bail!(
            "preflight on {dest}: {} (install it, or set --node-etcdctl)",
            node_err("a required tool", &out)
        );
    }
    let snapshot_size = m.etcd.as_ref().map(|e| e.db_size).unwrap_or(0);
    // The staged snapshot (plus the rest of the archive) and the restored data dir both
    // need room; on one filesystem they add up.
    let data_parent = match l.data_dir.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((d, _)) => d.to_string(),
    };
    let out = node
        .run(&format!(
            "df -Pk {s} {d} | awk 'NR>1 {{print $4}}'; stat -c %d {s} {d}",
            s = quote(&l.staging_parent),
            d = quote(&data_parent)
        ))
        .await?;
    let nums: Vec<u64> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [staging_kib, data_kib, staging_dev, data_dev] = nums[..] else {
        anyhow::bail!("preflight on {dest}: {}", node_err("df/stat", &out));
    };
    let mut needs = vec![(l.staging_parent.clone(), staging_kib, 2 * snapshot_size)];
    if staging_dev == data_dev {
        needs[0].2 += snapshot_size;
    } else {
        needs.push((data_parent, data_kib, snapshot_size));
    }
    for (dir, free_kib, need) in needs {
        if free_kib * 1024 < need {
            anyhow::bail!(
                "preflight on {dest}: {dir} has {} free, the restore needs {} there (staging takes 2× the snapshot, the new data dir 1×); free space or choose --staging-dir",
                crate::progress::human(free_kib * 1024),
                crate::progress::human(need)
            );
        }
    }
    let out = node
        .run(&format!("sha256sum {}/ca.crt", quote(&l.pki_dir)))
        .await?;
    // Empty when the node has no readable CA: then there is nothing to compare with.
    let node_ca = if out.status.success() {
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string()
    } else {
        String::new()
    };
    let restore_id = format!(
        "cpvault-restore-{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    );
    let kubeconfig_out = args
        .kubeconfig_out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}-admin.conf", m.cluster)));
    let steps = rplan::plan(
        l,
        &member,
        &restore_id,
        &kubeconfig_out.display().to_string(),
    );
    if args.dry_run {
        return print_plan(ctx, m, &dest, &restore_id, &steps);
    }
    let out_dir = match kubeconfig_out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(Usage(format!(
            "--kubeconfig-out '{}': directory {} does not exist",
            kubeconfig_out.display(),
            out_dir.display()
        ))
        .into());
    }
    if kubeconfig_out.exists() {
        return Err(Usage(format!(
            "--kubeconfig-out '{}' exists; restore never overwrites it — choose another path",
            kubeconfig_out.display()
        ))
        .into());
    }

    // ---- verify: the whole archive, before anything changes ----
    let bar = crate::progress::bytes(ctx.quiet, 0, &format!("verify {}", m.reference()));
    let report = crate::verify::verify(
        store,
        m,
        Some(identities.clone()),
        Box::new(crate::archive::reader::NullSink),
        bar.clone(),
    )
    .await;
    bar.finish_and_clear();
    if !report.ok {
        let failed: Vec<String> = report
            .failures()
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        return Err(VerifyFailed(format!(
            "{} failed verification ({}); nothing on {dest} was changed",
            m.reference(),
            failed.join("; ")
        ))
        .into());
    }
    let inner = report
        .inner
        .expect("a passing deep verify read the inner manifest");
    let archive_ca = inner
        .entries
        .iter()
        .find(|e| e.path == "pki/ca.crt")
        .and_then(|e| e.sha256.clone());
    match (&archive_ca, node_ca.is_empty()) {
        (Some(_), true) if !args.force_different_cluster => {
            anyhow::bail!(
                "preflight on {dest}: the node has no readable {}/ca.crt to compare with the archive's CA, so it cannot be told that this backup is of this cluster; nothing was changed — check --node-pki-dir, or pass --force-different-cluster",
                l.pki_dir
            );
        }
        (Some(a), false) if *a != node_ca && !args.force_different_cluster => {
            anyhow::bail!(
                "preflight on {dest}: the node's {}/ca.crt differs from the archive's pki/ca.crt, so this backup is from another cluster (or the CA was rotated); nothing was changed — pass --force-different-cluster if that is intended",
                l.pki_dir
            );
        }
        (None, _) if !args.force_different_cluster => {
            anyhow::bail!(
                "preflight: {} has no pki/ca.crt to compare with the node's CA; nothing was changed — pass --force-different-cluster to restore anyway",
                m.reference()
            );
        }
        _ => {}
    }

    if !args.yes {
        confirm(m, &dest, &steps)?;
    }

    // ---- execute, with rollback ----
    let fail_at = std::env::var(FAIL_AT_ENV).ok();
    // Ctrl-C from here on finishes the step in flight, then rolls back like any failure:
    // stopping halfway would leave the control plane down and the CA keys staged.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: finishing the current step, then rolling back");
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
    }
    let runnable: Vec<&Step> = steps
        .iter()
        .filter(|s| !matches!(s.name, "preflight" | "verify"))
        .collect();
    let mut done: Vec<&Step> = vec![];
    for (i, step) in runnable.iter().enumerate() {
        if !ctx.quiet {
            eprintln!(
                "[{}/{}] {}: {}",
                i + 1,
                runnable.len(),
                step.name,
                step.does
            );
        }
        let mut r = run_step(
            step,
            node,
            store,
            m,
            identities.clone(),
            &inner,
            &restore_id,
            l,
            &kubeconfig_out,
        )
        .await;
        if r.is_ok() && fail_at.as_deref() == Some(step.name) {
            r = Err(format!("injected failure ({FAIL_AT_ENV})"));
        }
        if r.is_ok()
            && step.name != "cleanup"
            && interrupted.load(std::sync::atomic::Ordering::SeqCst)
        {
            r = Err("interrupted (Ctrl-C)".into());
        }
        match r {
            Ok(()) => done.push(step),
            Err(e) if step.name == "cleanup" => {
                eprintln!(
                    "warning: could not remove the staging dir on {dest} ({e}); it holds the CA keys in plaintext — remove {} by hand",
                    rplan::paths(l, &restore_id).staging
                );
            }
            Err(e) => {
                done.push(step);
                if step.name == "kubeconfig" {
                    let _ = std::fs::remove_file(&kubeconfig_out);
                }
                let rollback = roll_back(node, &done).await;
                anyhow::bail!(
                    "restore step {} failed on {dest}: {e}; {rollback}",
                    step.name
                );
            }
        }
    }
    let p = rplan::paths(l, &restore_id);
    if !ctx.quiet {
        eprintln!(
            "restored {} onto {dest}; the previous data dir is kept at {} and the previous PKI at {}",
            m.reference(),
            p.data_aside,
            p.pki_aside
        );
    }
    super::print_text(&kubeconfig_out.display().to_string())
}

fn print_plan(
    ctx: &Ctx,
    m: &Manifest,
    dest: &str,
    restore_id: &str,
    steps: &[Step],
) -> anyhow::Result<()> {
    if ctx.json() {
        return super::print_json(&serde_json::json!({
            "backup": m.reference(), "node": dest, "restore_id": restore_id, "steps": steps,
        }));
    }
    super::print_text(&render_plan(m, dest, steps))
}

fn render_plan(m: &Manifest, dest: &str, steps: &[Step]) -> String {
    let mut t = format!("restore {} onto {dest}:\n", m.reference());
    for (i, s) in steps.iter().enumerate() {
        t.push_str(&format!("{:>2}. {:<20} {}\n", i + 1, s.name, s.does));
        if !s.script.is_empty() {
            t.push_str(&format!("      run:  {}\n", s.script));
        }
        if !s.undo.is_empty() {
            t.push_str(&format!("      undo: {}\n", s.undo));
        }
    }
    t
}

fn confirm(m: &Manifest, dest: &str, steps: &[Step]) -> anyhow::Result<()> {
    if !io::stdin().is_terminal() {
        return Err(Usage(
            "restore changes the node and asks first; stdin is not a terminal, so pass --yes (review the plan with --dry-run)".into(),
        )
        .into());
    }
    eprint!("{}", render_plan(m, dest, steps));
    eprint!("Type 'yes' to restore onto {dest}: ");
    io::stderr().flush()?;
    let mut answer = String::new();
    io::stdin().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    step: &Step,
    node: &Node,
    store: &cpvault_backends::Store,
    m: &Manifest,
    identities: Arc<crate::crypto::Identities>,
    inner: &Manifest,
    restore_id: &str,
    l: &NodeLayout,
    kubeconfig_out: &Path,
) -> Result<(), String> {
    let out = node.run(&step.script).await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(node_err("the command failed", &out));
    }
    match step.name {
        "stage" => {
            stage(
                node,
                store,
                m,
                identities,
                inner,
                &rplan::paths(l, restore_id).staging,
            )
            .await
        }
        "kubeconfig" => {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(kubeconfig_out)
                .map_err(|e| format!("writing {}: {e}", kubeconfig_out.display()))?;
            f.write_all(&out.stdout)
                .and_then(|_| f.sync_all())
                .map_err(|e| format!("writing {}: {e}", kubeconfig_out.display()))
        }
        _ => Ok(()),
    }
}

/// Streams the archive's payload from the decrypting reader into `tar -x` in the staging dir
/// on the node, then checks every file's sha256 there against the verified inner manifest.
async fn stage(
    node: &Node,
    store: &cpvault_backends::Store,
    m: &Manifest,
    identities: Arc<crate::crypto::Identities>,
    inner: &Manifest,
    staging: &str,
) -> Result<(), String> {
    let mut child = node
        .spawn_with_stdin(&format!(
            "exec tar -x -f - -C {} --no-same-owner",
            quote(staging)
        ))
        .await
        .map_err(|e| e.to_string())?;
    let stdin = child.stdin().take().expect("piped");
    let handle = tokio::runtime::Handle::current();
    let bridge: Box<dyn Write + Send> =
        Box::new(tokio_util::io::SyncIoBridge::new_with_handle(stdin, handle));
    let writer = Arc::new(Mutex::new(TarWriter::new(bridge)));
    let sink = TarSink {
        out: writer.clone(),
        open: None,
    };
    let key = &m.archive.as_ref().expect("committed backup").key;
    let seen = crate::archive::reader::read_archive(
        store,
        key,
        Some(identities),
        Box::new(sink),
        indicatif::ProgressBar::hidden(),
    )
    .await;
    let stream_failure = seen.failure.map(|f| f.message);
    // End the tar stream (unless the read failed) and close tar's stdin either way, then
    // wait for tar: nothing may still be writing into the staging dir when this returns (a
    // rollback removes it next). The bridge blocks, so not on a runtime thread.
    let complete = stream_failure.is_none();
    let closed = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let tar = Arc::try_unwrap(writer)
            .map_err(|_| "stream writer still shared".to_string())?
            .into_inner()
            .map_err(|_| "stream writer poisoned".to_string())?;
        if complete {
            tar.finish()
                .and_then(|mut w| w.flush())
                .map_err(|e| format!("streaming to the node: {e}"))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut stderr = child.stderr().take();
    let mut err_text = String::new();
    if let Some(s) = stderr.as_mut() {
        use tokio::io::AsyncReadExt;
        let _ = s.read_to_string(&mut err_text).await;
    }
    let status = child.wait().await.map_err(|e| e.to_string())?;
    let tar_said = err_text.trim().replace('\n', "; ");
    if let Some(f) = stream_failure {
        return Err(format!(
            "streaming the archive to the node: {f}; tar there said: {tar_said}"
        ));
    }
    closed?;
    if !status.success() {
        return Err(format!("tar on the node: {tar_said}"));
    }
    // Every file, checked where it landed.
    let mut list = String::new();
    for e in &inner.entries {
        if let Some(h) = &e.sha256 {
            list.push_str(&format!("{h}  {}\n", e.path));
        }
    }
    let script = format!(
        "cd {} && printf %s {} | sha256sum -c --quiet --strict",
        quote(staging),
        quote(&list)
    );
    let out = node.run(&script).await.map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(node_err(
            "the staged files do not match the archive's sha256",
            &out,
        ));
    }
    Ok(())
}

type SharedTar = Arc<Mutex<TarWriter<Box<dyn Write + Send>>>>;

/// Re-frames the payload entries as a tar stream with the archive's own tar writer (ustar,
/// PAX for long paths; recorded modes).
struct TarSink {
    out: SharedTar,
    /// Size of the entry in progress, padded when the next one starts or the sink drops.
    open: Option<u64>,
}

fn locked(
    out: &SharedTar,
) -> io::Result<std::sync::MutexGuard<'_, TarWriter<Box<dyn Write + Send>>>> {
    out.lock()
        .map_err(|_| io::Error::other("stream writer poisoned"))
}

impl Sink for TarSink {
    fn open(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
    ) -> io::Result<Option<Box<dyn Write + Send>>> {
        let mut tar = locked(&self.out)?;
        if let Some(prev) = self.open.take() {
            tar.end_entry(prev)?;
        }
        tar.start_entry(&EntryHeader {
            path,
            size,
            mode,
            mtime: 0,
        })?;
        self.open = Some(size);
        Ok(Some(Box::new(Through(self.out.clone()))))
    }
}

impl Drop for TarSink {
    fn drop(&mut self) {
        if let (Some(size), Ok(mut tar)) = (self.open.take(), self.out.lock()) {
            let _ = tar.end_entry(size);
        }
    }
}

struct Through(SharedTar);

impl Write for Through {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        locked(&self.0)?.write_data(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Undoes `done` in reverse, stopping at the first undo that fails (later undos assume the
/// earlier ones worked: moving the old data dir back while etcd still runs on the new one
/// would be worse than stopping); says what happened and what is left to do by hand.
async fn roll_back(node: &Node, done: &[&Step]) -> String {
    let pending: Vec<&&Step> = done.iter().rev().filter(|s| !s.undo.is_empty()).collect();
    for (i, step) in pending.iter().enumerate() {
        eprintln!("rolling back {}", step.name);
        let failure = match node.run(&step.undo).await {
            Ok(out) if out.status.success() => continue,
            Ok(out) => node_err("undo failed", &out),
            Err(e) => e.to_string(),
        };
        let left: Vec<String> = pending[i..]
            .iter()
            .map(|s| format!("[{}] {}", s.name, s.undo))
            .collect();
        return format!(
            "ROLLBACK STOPPED at {} ({failure}); nothing after it was undone — run these on the node by hand, in order: {}",
            step.name,
            left.join(" ; ")
        );
    }
    "rolled back: the node is as it was before the restore".into()
}
