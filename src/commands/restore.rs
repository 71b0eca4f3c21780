//! `cpvault restore`: gathers the inputs (settings, store, keys, the backup, the node's
//! connection), calls [`crate::restore`] — onto a control-plane node over SSH, or into a local
//! dir with `--to-dir` — and renders the plan, the question and the result. The restore itself
//! (preflight, plan, verify, the step runner and its rollback) lives in the core, never here;
//! so does the journal that `--rollback RESTORE_ID` reads back from the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

// `--profile gke-user`: a user cluster's etcd through the admin cluster's API.
mod user;

use super::Ctx;
use crate::archive::manifest::Manifest;
use crate::cli::RestoreArgs;
use crate::error::{Usage, VerifyFailed};
use crate::extract::{extract_verified, ExtractError};
use crate::restore::local::{LocalMember, Members};
use crate::restore::NodeRestore;
use crate::sources::kube::Profile;
use crate::sources::settings::Sources;
use crate::trust::Authorship;

// The nodes: destinations (with a port each), per-node layouts, connections.
mod nodes;
// The plan shown (`--dry-run`, before the question) and the question.
mod render;
// `--rollback RESTORE_ID` on each node from its journal.
mod rollback;

use nodes::{connect_with_layouts, destinations, layouts};
use render::{confirm, print_plan, Nodes};
use rollback::rollback;

/// Runs the command.
///
/// # Errors
/// Usage errors, a failed verify (exit 3), preflight refusals, or the failing step with the
/// rollback's result.
pub async fn run(ctx: &Ctx, args: RestoreArgs) -> anyhow::Result<()> {
    let node_settings = node_settings(ctx, &args);
    if let Some(id) = &args.rollback {
        if node_settings.profile == Some(Profile::GkeUser) {
            return user::rollback(ctx, &args, &node_settings, id).await;
        }
        return rollback(ctx, &args, &node_settings, id).await;
    }
    let reference = args.reference.clone().ok_or_else(|| {
        Usage("restore needs a REF (<cluster>/<id>) or --rollback RESTORE_ID".into())
    })?;
    crate::catalog::parse_ref(&reference)?;
    if args.to_dir.is_none() && node_settings.ssh.is_none() && node_settings.kubeconfig.is_none() {
        return Err(Usage(
            "restore needs a target: --ssh USER@HOST (the control-plane node; one per etcd member for an HA control plane), --kubeconfig FILE or --cluster NAME (to find it), or --to-dir DIR (a local etcd data dir)".into(),
        )
        .into());
    }
    let store = ctx.store(&args.store, false)?;
    let identities = ctx.identities(&args.identity)?.ok_or_else(|| {
        Usage("restore needs a key: pass -i IDENTITY_FILE (or set CPVAULT_PASSPHRASE)".into())
    })?;
    let signers = ctx.allowed_signers(&args.trust)?;
    let (m, who) = crate::catalog::resolve_with(&store, &reference, signers.as_ref()).await?;
    authorship_allows_restore(&m, &who, args.allow_unsigned)?;
    let Some(etcd) = &m.etcd else {
        return Err(Usage(format!(
            "{} holds no etcd snapshot, so there is nothing to restore; use extract for its files",
            m.reference()
        ))
        .into());
    };
    // Caught here, not by `snapshot restore` after the control plane is down.
    if !etcd.hash_trailer && !args.skip_hash_check {
        return Err(Usage(format!(
            "{}: its snapshot has no etcd sha256 trailer (it was not written by `etcdctl snapshot save`), so `snapshot restore` would refuse it after the control plane is stopped; nothing was changed — pass --skip-hash-check to restore it without etcd's own hash check (cpvault's checksums still cover every byte)",
            m.reference()
        ))
        .into());
    }
    if let Some(left_out) = m
        .kit
        .as_ref()
        .and_then(|k| k.encryption_config_left_out.as_ref())
    {
        crate::say!(
            "warning: {} was backed up with --no-encryption-config: it does not hold {}, which the apiserver needs to read the restored Secrets; put that file (with the keys in use when the backup was taken) in place yourself",
            m.reference(),
            crate::text::escape_for_line(left_out, 300)
        );
    }
    if let (Some(named), None) = (
        m.kit.as_ref().and_then(|k| k.encryption_config.as_ref()),
        &args.to_dir,
    ) {
        // Each node's layout decides (node flags can differ per node).
        let all = layouts(&args, nodes::count(&args))?;
        let left: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(_, l)| crate::restore::kit::kit_files(&m, l).encryption.is_none())
            .map(|(i, _)| (i + 1).to_string())
            .collect();
        if !left.is_empty() {
            let on = if all.len() > 1 {
                format!(" on node {} (in --ssh order)", left.join(", "))
            } else {
                String::new()
            };
            crate::say!(
                "warning: {}: its encryption config is recorded as '{}', which is not a plain absolute path under the manifests dir's parent outside the manifests and PKI dirs (or is not in the archive), so restore does not put it back{on}; extract it and place it yourself",
                m.reference(),
                crate::text::escape_for_line(named, 300)
            );
        }
    }
    if let Some(dir) = &args.to_dir {
        warn_expired(
            &m,
            "the restored data dir's cluster will not start with them until they are renewed",
        );
        return to_dir(ctx, &args, &store, &m, &who, identities, dir).await;
    }
    if node_settings.profile == Some(Profile::GkeUser) {
        return user::run(ctx, &args, &node_settings, &store, &m, &who, identities).await;
    }
    if args.force_expired {
        warn_expired(&m, "restoring anyway (--force-expired); renew them on the node (kubeadm certs renew) before the control plane can start");
    }
    onto_node(ctx, &args, &node_settings, &store, &m, &who, identities).await
}

/// Names the backup's expired certificates on stderr, with `what_now`.
fn warn_expired(m: &Manifest, what_now: &str) {
    let expired = crate::restore::preflight::expired_certificates(m, chrono::Utc::now());
    if !expired.is_empty() {
        crate::say!(
            "warning: {} holds {} expired certificate(s): {}; {what_now}",
            m.reference(),
            expired.len(),
            crate::text::escape_for_line(&expired.join(", "), 2000)
        );
    }
}

/// A restore installs the backup's CA and service-account keys on the control plane, so
/// its author must be known: trusted under the allowed signers, or explicitly waived.
fn authorship_allows_restore(
    m: &Manifest,
    who: &Authorship,
    allow_unsigned: bool,
) -> anyhow::Result<()> {
    match who {
        Authorship::Trusted { .. } => Ok(()),
        Authorship::Untrusted { reason } => Err(VerifyFailed(format!(
            "{}: signature check failed ({reason}); it is not restored, and nothing was changed",
            m.reference()
        ))
        .into()),
        Authorship::NotChecked { .. } if allow_unsigned => Ok(()),
        Authorship::NotChecked { .. } => Err(Usage(format!(
            "{}: restore installs the backup's CA and keys, so it checks who wrote the backup: give --allowed-signers FILE (the keys your backups are signed with), or --allow-unsigned to restore without that check; anyone who can write to the store can build a backup your key decrypts",
            m.reference()
        ))
        .into()),
    }
}

/// SSH and kubeconfig settings: flags over `[clusters.NAME]` (of `--cluster`, else of the
/// backup's cluster) over `[sources]`.
fn node_settings(ctx: &Ctx, args: &RestoreArgs) -> Sources {
    let cluster = args
        .cluster
        .as_deref()
        .or_else(|| args.reference.as_deref()?.split('/').next());
    Sources {
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        ssh: args.nodes.first().cloned(),
        profile: args.profile,
        namespace: args.namespace.clone(),
        ..Sources::from(&args.ssh)
    }
    .or(&ctx.config.sources_for(cluster))
}

async fn to_dir(
    ctx: &Ctx,
    args: &RestoreArgs,
    store: &cpvault_backends::Store,
    m: &Manifest,
    who: &Authorship,
    identities: Arc<crate::crypto::Identities>,
    dir: &Path,
) -> anyhow::Result<()> {
    let members = match &args.members {
        Some(spec) => Some(Members::parse(spec, args.skip_hash_check)?),
        None => None,
    };
    // The local etcd is the one that will run the restored data.
    let snapshot_version = m.etcd.as_ref().and_then(|e| e.version.as_deref());
    if let Err(too_new) = crate::restore::version::check(
        snapshot_version,
        crate::restore::local::local_etcd_version().as_ref(),
        args.force_version,
    ) {
        anyhow::bail!("restore {} --to-dir: {too_new}", m.reference());
    }
    let extract = async |work: &Path| match extract_verified(
        store, m, who, identities, work, ctx.quiet,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(ExtractError::Verify(report)) => Err(super::verify_failed(
            ctx,
            &report,
            format!(
                "{} failed verification; nothing was restored into {}",
                m.reference(),
                dir.display()
            ),
        )),
        Err(ExtractError::Other(e)) => Err(e),
    };
    let Some(members) = members else {
        let member = LocalMember {
            name: args.name.clone(),
            initial_cluster: args.initial_cluster.clone(),
            initial_advertise_peer_urls: args.initial_advertise_peer_urls.clone(),
            skip_hash_check: args.skip_hash_check,
        };
        crate::restore::local::to_dir(dir, &member, extract).await?;
        if !ctx.quiet {
            crate::say!(
                "restored {} into {}: etcd data dir {}, PKI {}",
                m.reference(),
                dir.display(),
                dir.join("etcd").display(),
                dir.join("pki").display()
            );
        }
        return super::print_text(&dir.join("etcd").display().to_string());
    };
    crate::restore::local::to_dirs(dir, &members, extract).await?;
    if !ctx.quiet {
        crate::say_raw!("{}", start_members_text(m, dir, &members));
    }
    let dirs: Vec<String> = members
        .members
        .iter()
        .map(|(n, _)| dir.join(n).display().to_string())
        .collect();
    super::print_text(&dirs.join("\n"))
}

/// What to run on each member's machine once its data dir is in place.
fn start_members_text(m: &Manifest, dir: &Path, members: &Members) -> String {
    let cluster = members.initial_cluster();
    let mut t = format!(
        "restored {} into {} as {} members of one new cluster (--initial-cluster-token {}); PKI in {}.\nStart each member on its own machine (the one its peer URL names), with its data dir there and its own client URL:\n",
        m.reference(),
        dir.display(),
        members.members.len(),
        members.token,
        dir.join("pki").display()
    );
    for (name, urls) in &members.members {
        let peers = urls.join(",");
        t.push_str(&format!(
            "  etcd --name {name} --data-dir {} --listen-peer-urls {peers} --initial-advertise-peer-urls {peers} --initial-cluster {cluster} --initial-cluster-token {} --initial-cluster-state new --listen-client-urls CLIENT_URL --advertise-client-urls CLIENT_URL\n",
            crate::etcdctl::quote(&dir.join(name).display().to_string()),
            members.token
        ));
    }
    t.push_str("(a kubeadm node: move the member's dir to /var/lib/etcd with etcd's owner and the same flags in its etcd.yaml)");
    t
}

async fn onto_node(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &Sources,
    store: &cpvault_backends::Store,
    m: &Manifest,
    who: &Authorship,
    identities: Arc<crate::crypto::Identities>,
) -> anyhow::Result<()> {
    let dests = destinations(args, settings);
    let (nodes, layouts) = connect_with_layouts(ctx, args, settings, &dests).await?;
    let job = NodeRestore {
        store,
        backup: m,
        authorship: who,
        identities,
        layouts,
        nodes: &nodes,
        kubeconfig_out: args
            .kubeconfig_out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}-admin.conf", m.cluster))),
        force_different_cluster: args.force_different_cluster,
        force_version: args.force_version,
        force_expired: args.force_expired,
        quiet: ctx.quiet,
    };
    let result = restore_onto(ctx, args, &job).await;
    for node in nodes {
        node.close().await;
    }
    result
}

/// Preflight and plan; the plan printed (`--dry-run`) or, after the verify and the user's
/// yes, run.
async fn restore_onto(ctx: &Ctx, args: &RestoreArgs, job: &NodeRestore<'_>) -> anyhow::Result<()> {
    let m = job.backup;
    if !args.dry_run {
        check_kubeconfig_out(&job.kubeconfig_out)?;
    }
    let (prepared, inner) = if args.dry_run {
        (job.prepare().await?, None)
    } else {
        let (p, inner) = job.prepare_and_verify().await?;
        (p, Some(inner))
    };
    let dest = job.destination();
    let dests: Vec<String> = job.nodes.iter().map(|n| n.destination()).collect();
    let shown = Nodes {
        dests: &dests,
        prepared: &prepared,
    };
    if args.dry_run {
        return print_plan(ctx, m, &shown);
    }
    let inner = inner.expect("verified unless --dry-run");
    let several = dests.len() > 1;
    // Always, even with -q: the one thing an operator needs if cpvault dies mid-way.
    if several {
        let journals: Vec<String> = (0..dests.len())
            .map(|i| format!("{}: {}", dests[i], job.journal_path(&prepared, i)))
            .collect();
        crate::say!(
            "restore id {id} (journals on each node: {}); if cpvault is stopped before the restore ends, undo it with: cpvault restore --rollback {id} --ssh {} and this restore's node flags",
            journals.join(", "),
            dests.join(" --ssh "),
            id = prepared.restore_id,
        );
    } else {
        crate::say!(
            "restore id {id} (journal on {dest}: {journal}); if cpvault is stopped before the restore ends, undo it with: cpvault restore --rollback {id} --ssh {ssh} and this restore's node flags",
            id = prepared.restore_id,
            journal = job.journal_path(&prepared, 0),
            ssh = job.nodes[0].destination(),
        );
    }
    if !args.yes {
        confirm(m, &shown)?;
    }
    let failed = job.execute(&prepared, &inner, &cancel_on_ctrl_c()).await?;
    let p = job.paths(&prepared, 0);
    let kept = if several {
        let each: Vec<String> = (0..dests.len())
            .map(|i| {
                let p = job.paths(&prepared, i);
                format!("on {}: {} and {}", dests[i], p.data_aside, p.pki_aside)
            })
            .collect();
        format!(
            "the previous data dirs and PKI are kept ({})",
            each.join("; ")
        )
    } else {
        format!(
            "the previous data dir is kept at {} and the previous PKI at {}",
            p.data_aside, p.pki_aside
        )
    };
    if let Some((step, cause)) = failed.first() {
        anyhow::bail!(
            "restored {} onto {dest}, but step {step} failed ({cause}); the control plane serves the restored state and was NOT rolled back — copy {} from {} by hand ({kept})",
            m.reference(),
            job.layout().admin_conf,
            dests[0],
        );
    }
    if !ctx.quiet {
        crate::say!(
            "restored {} onto {}; {kept}{}",
            m.reference(),
            shown.describe(),
            if job.layout().shrink_to_one_member {
                format!(
                    ", the previous etcd.yaml at {}; the node now runs a cluster of one member: reset the other members and re-join them (etcdctl member add)",
                    p.etcd_manifest_before
                )
            } else {
                String::new()
            }
        );
    }
    super::print_text(&job.kubeconfig_out.display().to_string())
}

/// The kubeconfig goes into an existing dir and never over a file.
fn check_kubeconfig_out(kubeconfig_out: &Path) -> Result<(), Usage> {
    let out_dir = match kubeconfig_out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(Usage(format!(
            "--kubeconfig-out '{}': directory {} does not exist",
            kubeconfig_out.display(),
            out_dir.display()
        )));
    }
    if kubeconfig_out.exists() {
        return Err(Usage(format!(
            "--kubeconfig-out '{}' exists; restore never overwrites it — choose another path",
            kubeconfig_out.display()
        )));
    }
    Ok(())
}

/// Cancelled by Ctrl-C, SIGTERM or SIGHUP: the runner finishes the step in flight, then
/// rolls back.
fn cancel_on_ctrl_c() -> CancellationToken {
    let cancel = crate::interrupt::token();
    let token = cancel.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        crate::say!("interrupted: finishing the current step, then rolling back");
    });
    cancel
}
