//! The kinds of restore step and their printed names: the one list that `--dry-run`, the
//! journal and the test hooks agree on, for plans onto nodes and onto user clusters alike.
//! Pure data; it knows nothing of what a step runs.

use serde::{Deserialize, Serialize};

/// What a step does. Its kebab-case name (`stop-control-plane`) is what the plan prints, what
/// `--dry-run --output json` carries as `name`, and what the test hook
/// [`super::execute::fail_at_hook`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepKind {
    /// Read-only checks on the node.
    Preflight,
    /// The archive's deep verify.
    Verify,
    /// Stream the payload into the staging dir.
    Stage,
    /// Move the static-pod manifests out and wait until the control plane stopped.
    StopControlPlane,
    /// Rewrite the (moved out) etcd.yaml for a cluster of this member alone.
    ShrinkToOneMember,
    /// Move the current data and PKI aside.
    MoveAside,
    /// `snapshot restore` into the data dir.
    RestoreSnapshot,
    /// Put the archive's PKI in place.
    Pki,
    /// Put the backup's encryption config in place (recovery kit).
    EncryptionConfig,
    /// Put the backup's static-pod manifests in place (recovery kit).
    Manifests,
    /// Put the backup's admin.conf in place (recovery kit).
    AdminConf,
    /// Move the manifests back.
    StartControlPlane,
    /// Wait for etcd and kube-apiserver.
    WaitReady,
    /// Several members: wait until every one is healthy and they agree on one leader.
    WaitQuorum,
    /// Fetch the admin kubeconfig.
    Kubeconfig,
    /// Remove the staging dir.
    Cleanup,
    /// User cluster: scale the etcd StatefulSet to 0 and wait until its pod is gone.
    ScaleDown,
    /// User cluster: start the restore pod on the etcd volume.
    RestorePod,
    /// User cluster: swap the restored data dir with the old one on the volume.
    SwapDataDir,
    /// User cluster: remove the restore pod.
    RemoveRestorePod,
    /// User cluster: scale the etcd StatefulSet back to its recorded replicas.
    ScaleUp,
    /// User cluster: delete its kube-apiserver pod and wait until its controller's new one is
    /// Ready (its watch cache may hold revisions newer than the restored etcd's).
    RestartApiserver,
}

impl StepKind {
    /// Every kind of a node plan, in plan order (`shrink-to-one-member` only in a plan that
    /// asks for it, the kit's steps only when the backup holds them, `wait-quorum` only over
    /// several nodes). A plan over several nodes runs each kind on every node before the next.
    pub const ALL: [StepKind; 16] = [
        StepKind::Preflight,
        StepKind::Verify,
        StepKind::Stage,
        StepKind::StopControlPlane,
        StepKind::ShrinkToOneMember,
        StepKind::MoveAside,
        StepKind::RestoreSnapshot,
        StepKind::Pki,
        StepKind::EncryptionConfig,
        StepKind::Manifests,
        StepKind::AdminConf,
        StepKind::StartControlPlane,
        StepKind::WaitReady,
        StepKind::WaitQuorum,
        StepKind::Kubeconfig,
        StepKind::Cleanup,
    ];

    /// Every kind of a user-cluster plan ([`crate::restore::kube`]), in plan order
    /// (`restart-apiserver` only when there is an apiserver pod to restart).
    pub const USER_CLUSTER: [StepKind; 12] = [
        StepKind::Preflight,
        StepKind::Verify,
        StepKind::ScaleDown,
        StepKind::RestorePod,
        StepKind::Stage,
        StepKind::RestoreSnapshot,
        StepKind::SwapDataDir,
        StepKind::Cleanup,
        StepKind::RemoveRestorePod,
        StepKind::ScaleUp,
        StepKind::WaitReady,
        StepKind::RestartApiserver,
    ];

    /// The printed name.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Preflight => "preflight",
            StepKind::Verify => "verify",
            StepKind::Stage => "stage",
            StepKind::StopControlPlane => "stop-control-plane",
            StepKind::ShrinkToOneMember => "shrink-to-one-member",
            StepKind::MoveAside => "move-aside",
            StepKind::RestoreSnapshot => "restore-snapshot",
            StepKind::Pki => "pki",
            StepKind::EncryptionConfig => "encryption-config",
            StepKind::Manifests => "manifests",
            StepKind::AdminConf => "admin-conf",
            StepKind::StartControlPlane => "start-control-plane",
            StepKind::WaitReady => "wait-ready",
            StepKind::WaitQuorum => "wait-quorum",
            StepKind::Kubeconfig => "kubeconfig",
            StepKind::Cleanup => "cleanup",
            StepKind::ScaleDown => "scale-down",
            StepKind::RestorePod => "restore-pod",
            StepKind::SwapDataDir => "swap-data-dir",
            StepKind::RemoveRestorePod => "remove-restore-pod",
            StepKind::ScaleUp => "scale-up",
            StepKind::RestartApiserver => "restart-apiserver",
        }
    }

    /// The kind printed as `name`.
    pub fn from_name(name: &str) -> Option<StepKind> {
        (StepKind::ALL.into_iter())
            .chain(StepKind::USER_CLUSTER)
            .find(|k| k.name() == name)
    }

    /// Checks done before the runner starts (and before the user is asked): listed in the plan
    /// so it reads as the whole procedure, but never run by the step runner.
    pub fn checked_before_changes(self) -> bool {
        matches!(self, StepKind::Preflight | StepKind::Verify)
    }

    /// A failure of this step only warns: it runs after the restore succeeded, so there is
    /// nothing to roll back for (and a rollback would undo a good restore).
    pub fn best_effort(self) -> bool {
        matches!(
            self,
            StepKind::Kubeconfig | StepKind::Cleanup | StepKind::RestartApiserver
        )
    }

    /// A best-effort step whose failure still fails the run (a non-zero exit, no rollback):
    /// the user asked for what it produces, or must finish it by hand.
    pub fn fails_the_run(self) -> bool {
        matches!(self, StepKind::Kubeconfig | StepKind::RestartApiserver)
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}
