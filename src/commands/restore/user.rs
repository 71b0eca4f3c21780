//! `cpvault restore REF --kubeconfig ADMIN --profile gke-user --namespace NS`: connects to the
//! admin cluster, hands the client to [`crate::restore::kube`], and renders the plan, the
//! question and the result like a node restore. The restore itself lives in the core.

use std::sync::Arc;

use super::render::{ask, confirm_steps, print_steps};
use super::{cancel_on_ctrl_c, Ctx, RestoreArgs};
use crate::archive::manifest::Manifest;
use crate::error::Usage;
use crate::restore::kube::api::UserApi;
use crate::restore::kube::plan::UserLayout;
use crate::restore::kube::{journal, UserRestore};
use crate::sources::kube::{Cluster, KubeTarget, Profile};
use crate::sources::settings::Sources;
use crate::trust::Authorship;

/// The user-cluster restore: preflight and plan; the plan printed (`--dry-run`) or, after the
/// verify and the user's yes, run.
pub(super) async fn run(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &Sources,
    store: &cpvault_backends::Store,
    m: &Manifest,
    who: &Authorship,
    identities: Arc<crate::crypto::Identities>,
) -> anyhow::Result<()> {
    let (api, namespace) = connect(settings, args).await?;
    let job = UserRestore {
        store,
        backup: m,
        authorship: who,
        identities,
        layout: layout(args, &namespace),
        api,
        force_expired: args.force_expired,
        force_version: args.force_version,
        quiet: ctx.quiet,
    };
    let prepared = job.prepare().await?;
    let dest = job.layout.destination();
    let steps = &prepared.plan.steps;
    if args.dry_run {
        return print_steps(ctx, m, &dest, &prepared.restore_id, steps);
    }
    // Always, even with -q: what an operator needs if cpvault dies mid-way.
    crate::say!(
        "restore id {id} (journal: annotation {} on {dest}); if cpvault is stopped before the restore ends, undo it with: cpvault restore --rollback {id} --profile gke-user --kubeconfig … --namespace {namespace} and this restore's flags",
        journal::ANNOTATION,
        id = prepared.restore_id,
    );
    let inner = job.verify().await?;
    if !args.yes {
        confirm_steps(m, &dest, steps)?;
    }
    let failed = job.execute(&prepared, &inner, &cancel_on_ctrl_c()).await?;
    if let Some((step, cause)) = failed.first() {
        let by_hand = (steps.iter().find(|s| s.kind == *step)).map_or("", |s| s.script.as_str());
        anyhow::bail!(
            "restored {} onto {dest}, but step {step} failed ({cause}); etcd serves the restored state and was NOT rolled back (the previous data is kept on its volume at {}) — finish by hand: {by_hand}",
            m.reference(),
            prepared.paths.data_aside
        );
    }
    if !ctx.quiet {
        crate::say!(
            "restored {} onto {dest}: {} replica(s), the previous data kept on its volume at {}{}",
            m.reference(),
            prepared.set.replicas,
            prepared.paths.data_aside,
            if job.layout.apiserver_pod.is_empty() {
                String::new()
            } else {
                format!("; pod {} restarted and Ready", job.layout.apiserver_pod)
            }
        );
    }
    super::super::print_text(&format!("{dest} {}", prepared.restore_id))
}

fn layout(args: &RestoreArgs, namespace: &str) -> UserLayout {
    let mut l = UserLayout::gke_user(namespace);
    let n = &args.node;
    l.etcdctl = l.etcdctl.with_overrides(
        n.node_etcdctl.as_ref(),
        n.node_etcd_endpoint.as_ref(),
        n.node_etcd_cacert.as_ref(),
        n.node_etcd_cert.as_ref(),
        n.node_etcd_key.as_ref(),
    );
    l.statefulset = args.statefulset.clone();
    l.container = args.etcd_container.clone();
    l.apiserver_pod = args.apiserver_pod.clone();
    l.restore_image = args.restore_pod_image.clone();
    l.wait_seconds = args.wait_timeout;
    l.skip_hash_check = args.skip_hash_check;
    l
}

/// The admin cluster's API in the user cluster's namespace.
/// `--ssh` on the command line is refused; an `ssh` in the config file is simply not used.
async fn connect(settings: &Sources, args: &RestoreArgs) -> anyhow::Result<(UserApi, String)> {
    let (Some(kubeconfig), Some(namespace)) = (&settings.kubeconfig, &settings.namespace) else {
        return Err(Usage(
            "restore --profile gke-user needs --kubeconfig ADMIN_KUBECONFIG (the admin cluster's) and --namespace USER_CLUSTER (its namespace there)".into(),
        )
        .into());
    };
    if !args.nodes.is_empty() {
        return Err(Usage(
            "restore --profile gke-user goes through the admin cluster's API; drop --ssh".into(),
        )
        .into());
    }
    let cluster = Cluster::connect(&KubeTarget {
        kubeconfig: kubeconfig.clone(),
        context: settings.context.clone(),
        profile: Profile::GkeUser,
        namespace: Some(namespace.clone()),
    })
    .await?;
    Ok((UserApi::new(cluster.client(), namespace), namespace.clone()))
}

/// `--rollback RESTORE_ID --profile gke-user`: the journal read back from the StatefulSet,
/// printed, and (after the user's yes) undone in reverse.
pub(super) async fn rollback(
    ctx: &Ctx,
    args: &RestoreArgs,
    settings: &Sources,
    id: &str,
) -> anyhow::Result<()> {
    crate::restore::journal::check_id(id)?;
    let (api, namespace) = connect(settings, args).await?;
    let l = layout(args, &namespace);
    let dest = l.destination();
    let (j, p) = crate::restore::kube::journaled(&api, &l, id)
        .await
        .map_err(|e| anyhow::anyhow!("restore --rollback {id}: {e}"))?;
    let mut text = format!(
        "roll back restore {id} of {} on {dest} (journal: annotation {}), in this order:\n",
        crate::text::escape_for_line(&j.backup, 200),
        journal::ANNOTATION
    );
    // What runs is the plan's own undo for each journaled step (rebuilt from the
    // StatefulSet and these flags), never text from the annotation.
    for (i, e) in j.steps.iter().rev().enumerate() {
        let state = if e.done { "" } else { " (was running)" };
        let undo = (p.plan.steps.iter())
            .find(|s| s.kind == e.name)
            .map_or("(not a step of this plan: skipped)", |s| s.undo.as_str());
        text.push_str(&format!(
            "{:>2}. undo {}{state}\n      run:  {undo}\n",
            i + 1,
            e.name,
        ));
    }
    if j.steps.is_empty() {
        text.push_str("    nothing: no step that changes the cluster had started\n");
    }
    if args.dry_run {
        return super::super::print_text(text.trim_end());
    }
    if !args.yes {
        ask(
            &text,
            &format!("Type 'yes' to roll back restore {id} on {dest}: "),
        )?;
    } else if !ctx.quiet {
        crate::say_raw!("{text}");
    }
    match crate::restore::kube::roll_back_journal(&api, &l, &p, &j).await {
        crate::restore::execute::Rollback::Complete => {
            if !ctx.quiet {
                crate::say!(
                    "rolled back restore {id} on {dest}: it is as it was before the restore"
                );
            }
            Ok(())
        }
        stopped => anyhow::bail!("rollback of restore {id} on {dest}: {stopped}"),
    }
}
