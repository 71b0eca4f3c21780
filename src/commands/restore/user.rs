//! `cpvault restore REF --kubeconfig ADMIN --profile gke-user --namespace NS`: connects to the
//! admin cluster, hands the client to [`crate::restore::kube`], and renders the plan, the
//! question and the result like a node restore. The restore itself lives in the core.

use std::sync::Arc;

use super::{cancel_on_ctrl_c, confirm, print_plan, Ctx, RestoreArgs};
use crate::archive::manifest::Manifest;
use crate::error::Usage;
use crate::restore::kube::api::UserApi;
use crate::restore::kube::plan::UserLayout;
use crate::restore::kube::UserRestore;
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
    let (Some(kubeconfig), Some(namespace)) = (&settings.kubeconfig, &settings.namespace) else {
        return Err(Usage(
            "restore --profile gke-user needs --kubeconfig ADMIN_KUBECONFIG (the admin cluster's) and --namespace USER_CLUSTER (its namespace there)".into(),
        )
        .into());
    };
    if settings.ssh.is_some() {
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
    let job = UserRestore {
        store,
        backup: m,
        authorship: who,
        identities,
        layout: layout(args, namespace),
        api: UserApi::new(cluster.client(), namespace),
        force_expired: args.force_expired,
        force_version: args.force_version,
        quiet: ctx.quiet,
    };
    let prepared = job.prepare().await?;
    let dest = job.destination();
    let steps = &prepared.plan.steps;
    if args.dry_run {
        return print_plan(ctx, m, &dest, &prepared.restore_id, steps);
    }
    // Always, even with -q: what an operator needs if cpvault dies mid-way.
    crate::say!(
        "restore id {} on {dest}; the plan's undo commands (--dry-run prints them) are the way back if cpvault is stopped before the restore ends",
        prepared.restore_id
    );
    let inner = job.verify().await?;
    if !args.yes {
        confirm(m, &dest, steps)?;
    }
    job.execute(&prepared, &inner, &cancel_on_ctrl_c()).await?;
    if !ctx.quiet {
        crate::say!(
            "restored {} onto {dest}: {} replica(s), the previous data kept on its volume at {}",
            m.reference(),
            prepared.set.replicas,
            prepared.paths.data_aside
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
