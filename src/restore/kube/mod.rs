//! Restore of a GKE on VMware user cluster's etcd through the admin cluster's API (design.md
//! §10): preflight (what the kubeconfig may do, what the etcd StatefulSet says, read-only) →
//! plan ([`plan`], pure, what `--dry-run` prints) → a deep verify of the archive → the same
//! step runner as a node restore ([`super::execute`]), which undoes every completed step in
//! reverse on a failure and keeps a [`journal`] of them on the StatefulSet, from which
//! [`roll_back_journal`] undoes a restore whose cpvault died. The snapshot goes from the decrypting reader over exec stdin into a
//! 0700 dir on the etcd volume, and is checked there against the verified manifest; nothing
//! decrypted touches this machine's disk. The API client is made by the caller and handed in;
//! nothing here asks the user or renders output beyond progress on stderr.

pub mod api;
pub mod execute;
pub mod journal;
pub mod plan;

use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::execute::{Rollback, RunOptions, StepFailed};
use super::plan::{Step, StepKind};
use super::preflight::PreflightError;
use crate::archive::manifest::Manifest;
use crate::crypto::Identities;
use api::{Check, UserApi};
use execute::{InCluster, OnCluster};
use journal::UserJournal;
use plan::{EtcdSet, UserLayout, UserPlan, VolumePaths};

/// Why a user-cluster restore did not start; nothing was changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UserPreflightError {
    /// The kubeconfig's user lacks verbs the restore needs.
    #[error("preflight on {target}: the kubeconfig's user may not {denied}; nothing was changed — bind it to a Role in namespace {namespace} granting them (README, \"User-cluster restore\", lists the rules) or use the admin cluster's admin kubeconfig")]
    Forbidden {
        /// The StatefulSet.
        target: String,
        /// The namespace.
        namespace: String,
        /// What it may not do, joined.
        denied: String,
    },
    /// The API or the StatefulSet stopped the preflight.
    #[error("preflight on {target}: {cause}; nothing was changed — {fix}")]
    Cluster {
        /// The StatefulSet.
        target: String,
        /// What went wrong.
        cause: String,
        /// What to do.
        fix: String,
    },
    /// The snapshot needs a newer etcd than the StatefulSet's image.
    #[error("preflight on {target}: {too_new}")]
    TooNew {
        /// The StatefulSet.
        target: String,
        /// The versions.
        too_new: super::version::TooNew,
    },
    /// The backup's own checks (expired certificates).
    #[error(transparent)]
    Backup(#[from] PreflightError),
}

/// One restore of a user cluster's etcd.
pub struct UserRestore<'a> {
    /// The store holding the backup.
    pub store: &'a cpvault_backends::Store,
    /// The backup's outer manifest.
    pub backup: &'a Manifest,
    /// Who wrote it (the caller has refused untrusted backups already).
    pub authorship: &'a crate::trust::Authorship,
    /// Keys that open it.
    pub identities: Arc<Identities>,
    /// The names and waits.
    pub layout: UserLayout,
    /// The admin cluster's API in the user cluster's namespace.
    pub api: UserApi,
    /// Restore even when certificates in the backup have expired.
    pub force_expired: bool,
    /// Restore a snapshot from a newer etcd minor than the StatefulSet's image.
    pub force_version: bool,
    /// No progress.
    pub quiet: bool,
}

/// What [`UserRestore::prepare`] found and planned.
#[derive(Debug, Clone)]
pub struct UserPrepared {
    /// Names the restore pod and what is kept aside.
    pub restore_id: String,
    /// What the StatefulSet said.
    pub set: EtcdSet,
    /// Paths on the volume.
    pub paths: VolumePaths,
    /// The plan.
    pub plan: UserPlan,
}

/// The verbs the restore uses: the Role the README documents.
pub fn needed(statefulset: &str) -> Vec<Check<'_>> {
    vec![
        ("get", "apps", "statefulsets", None, Some(statefulset)),
        // The journal is an annotation on it.
        ("patch", "apps", "statefulsets", None, Some(statefulset)),
        (
            "patch",
            "apps",
            "statefulsets",
            Some("scale"),
            Some(statefulset),
        ),
        ("get", "", "pods", None, None),
        ("create", "", "pods", None, None),
        ("delete", "", "pods", None, None),
        ("get", "", "pods", Some("exec"), None),
        ("create", "", "pods", Some("exec"), None),
    ]
}

impl UserPrepared {
    /// The plan of `restore_id` for `set`.
    pub fn new(l: &UserLayout, set: EtcdSet, restore_id: &str) -> UserPrepared {
        let paths = plan::volume_paths(&set, restore_id);
        UserPrepared {
            plan: plan::plan(l, &set, &paths, restore_id),
            paths,
            restore_id: restore_id.into(),
            set,
        }
    }
}

impl UserRestore<'_> {
    fn refuse(&self, cause: String, fix: &str) -> UserPreflightError {
        UserPreflightError::Cluster {
            target: self.layout.destination(),
            cause,
            fix: fix.into(),
        }
    }

    /// Checks what the kubeconfig may do, reads the StatefulSet (read-only) and plans.
    ///
    /// # Errors
    /// The first [`UserPreflightError`]; nothing was changed.
    pub async fn prepare(&self) -> Result<UserPrepared, UserPreflightError> {
        super::preflight::certificates_valid(self.backup, Utc::now(), self.force_expired)?;
        let l = &self.layout;
        let denied = self
            .api
            .denied(&needed(&l.statefulset))
            .await
            .map_err(|e| self.refuse(e, "check --kubeconfig and --context"))?;
        if !denied.is_empty() {
            return Err(UserPreflightError::Forbidden {
                target: self.layout.destination(),
                namespace: l.namespace.clone(),
                denied: denied.join(", "),
            });
        }
        let sts = self
            .api
            .statefulset(&l.statefulset)
            .await
            .map_err(|e| self.refuse(e, "check --kubeconfig and --context"))?
            .ok_or_else(|| {
                self.refuse(
                    format!("namespace {} has no statefulset {}", l.namespace, l.statefulset),
                    "--namespace must be the user cluster's name (its namespace in the admin cluster), --kubeconfig the admin cluster's, and --statefulset the etcd StatefulSet",
                )
            })?;
        // A restore that died left its journal: another one now would overwrite it (or start
        // etcd on that restore's half-done data), so its rollback comes first.
        if let Some(text) =
            (sts.metadata.annotations.as_ref()).and_then(|a| a.get(journal::ANNOTATION))
        {
            let id = serde_json::from_str::<journal::UserJournal>(text)
                .map(|j| crate::text::escape_for_line(&j.restore_id, 80))
                .unwrap_or_else(|_| "RESTORE_ID".into());
            return Err(self.refuse(
                format!("it carries the journal of restore {id} (annotation {}), which did not finish or was not rolled back", journal::ANNOTATION),
                &format!(
                    "undo it first: cpvault restore --rollback {id} --kubeconfig … --profile gke-user --namespace {}",
                    l.namespace
                ),
            ));
        }
        let set = plan::read_statefulset(&sts, &l.container).map_err(|e| {
            self.refuse(
                e,
                "point --statefulset and --etcd-container at the user cluster's etcd",
            )
        })?;
        if set.replicas == 0 {
            return Err(self.refuse(
                "it is scaled to 0 replicas, so the restore would scale it back to 0 and never see etcd serve".into(),
                &format!(
                    "scale it to 1 first (kubectl -n {} scale statefulset {} --replicas=1; a crash-looping etcd is fine) and restore again",
                    l.namespace, l.statefulset
                ),
            ));
        }
        if set.replicas > 1 {
            return Err(self.refuse(
                format!("it runs {} replicas; restoring a multi-member user-cluster etcd is not supported", set.replicas),
                "restore a single-member user cluster, or restore its data dirs with --to-dir --members",
            ));
        }
        let installed = super::version::from_image(&format!("image: {}", set.image)).map(|v| {
            super::version::Installed {
                version: v,
                from: format!(
                    "the image of container {} in {}",
                    l.container,
                    self.layout.destination()
                ),
            }
        });
        let snapshot_version = self.backup.etcd.as_ref().and_then(|e| e.version.as_deref());
        super::version::check(snapshot_version, installed.as_ref(), self.force_version).map_err(
            |too_new| UserPreflightError::TooNew {
                target: self.layout.destination(),
                too_new,
            },
        )?;
        Ok(UserPrepared::new(l, set, &super::new_restore_id()))
    }

    /// Verifies the whole archive; returns the verified inner manifest.
    ///
    /// # Errors
    /// [`crate::error::VerifyFailed`] (exit 3); nothing was changed.
    pub async fn verify(&self) -> anyhow::Result<Manifest> {
        super::verify_deeply(
            self.store,
            self.backup,
            self.authorship,
            self.identities.clone(),
            &self.layout.destination(),
            self.quiet,
        )
        .await
    }

    /// Runs the plan (the verified `inner` manifest checks the staged snapshot); a Ctrl-C that
    /// cancels `cancel` rolls back after the step in flight. Returns the best-effort steps
    /// that failed although their failure fails the restore (the apiserver's restart): etcd
    /// serves the restored data, and nothing was rolled back for them.
    ///
    /// # Errors
    /// [`StepFailed`], after the rollback.
    pub async fn execute(
        &self,
        p: &UserPrepared,
        inner: &Manifest,
        cancel: &CancellationToken,
    ) -> Result<Vec<(StepKind, String)>, StepFailed> {
        let exec = InCluster {
            on: OnCluster {
                api: &self.api,
                layout: &self.layout,
                p,
                journal: UserJournal {
                    restore_id: p.restore_id.clone(),
                    backup: self.backup.reference(),
                    replicas: p.set.replicas,
                    steps: vec![],
                },
            },
            job: self,
            inner,
        };
        let opts = RunOptions {
            quiet: self.quiet,
            fail_at: super::execute::fail_at_hook(),
            pause_at: super::execute::pause_at_hook(),
        };
        Ok(super::execute::run(&exec, &p.plan.steps, &opts, cancel)
            .await?
            .failed)
    }
}

/// The journal of `restore_id` on the StatefulSet, and the plan its steps came from (rebuilt
/// from the StatefulSet and the journal's replicas: the same flags give the same plan).
///
/// # Errors
/// One line: no such StatefulSet, no journal of that restore, or one the StatefulSet's etcd
/// container cannot be read for.
pub async fn journaled(
    api: &UserApi,
    l: &UserLayout,
    restore_id: &str,
) -> Result<(UserJournal, UserPrepared), String> {
    let dest = l.destination();
    let sts = api
        .statefulset(&l.statefulset)
        .await?
        .ok_or_else(|| format!("{dest} does not exist; check --namespace and --statefulset"))?;
    let j = journal::read(sts.metadata.annotations.as_ref(), restore_id)
        .map_err(|e| format!("{dest}: {e}"))?;
    let mut set = plan::read_statefulset(&sts, &l.container).map_err(|e| format!("{dest}: {e}"))?;
    set.replicas = j.replicas;
    Ok((j, UserPrepared::new(l, set, restore_id)))
}

/// Undoes, in reverse, the steps journal `j` lists, with the runner's own rollback (it stops
/// at the first undo that fails and keeps the journal of what is left).
pub async fn roll_back_journal(
    api: &UserApi,
    l: &UserLayout,
    p: &UserPrepared,
    j: &UserJournal,
) -> Rollback {
    let steps: Vec<Step> = (j.steps.iter())
        .filter_map(|e| p.plan.steps.iter().find(|s| s.kind == e.name).cloned())
        .collect();
    let refs: Vec<&Step> = steps.iter().collect();
    let on = OnCluster {
        api,
        layout: l,
        p,
        journal: j.with_steps(&[], None),
    };
    super::execute::roll_back(&on, &refs).await
}
