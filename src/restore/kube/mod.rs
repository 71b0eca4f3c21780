//! Restore of a GKE on VMware user cluster's etcd through the admin cluster's API (design.md
//! §10): preflight (what the kubeconfig may do, what the etcd StatefulSet says, read-only) →
//! plan ([`plan`], pure, what `--dry-run` prints) → a deep verify of the archive → the same
//! step runner as a node restore ([`super::execute`]), which undoes every completed step in
//! reverse on a failure. The snapshot goes from the decrypting reader over exec stdin into a
//! 0700 dir on the etcd volume, and is checked there against the verified manifest; nothing
//! decrypted touches this machine's disk. The API client is made by the caller and handed in;
//! nothing here asks the user or renders output beyond progress on stderr.

pub mod api;
pub mod plan;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::execute::{self, Executor, RunOptions, StepFailed, Undoer};
use super::plan::{NodeId, Step};
use super::preflight::PreflightError;
use crate::archive::manifest::{EntryKind, Manifest};
use crate::archive::reader::Sink;
use crate::crypto::Identities;
use api::{Check, UserApi};
use plan::{Action, EtcdSet, UserLayout, UserPlan, VolumePaths};

/// The container name of the restore pod.
const RESTORE_CONTAINER: &str = "restore";

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

impl UserRestore<'_> {
    /// `statefulset NS/NAME`, for messages.
    pub fn destination(&self) -> String {
        format!(
            "statefulset {}/{}",
            self.layout.namespace, self.layout.statefulset
        )
    }

    fn refuse(&self, cause: String, fix: &str) -> UserPreflightError {
        UserPreflightError::Cluster {
            target: self.destination(),
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
                target: self.destination(),
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
        let set = plan::read_statefulset(&sts, &l.container).map_err(|e| {
            self.refuse(
                e,
                "point --statefulset and --etcd-container at the user cluster's etcd",
            )
        })?;
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
                    self.destination()
                ),
            }
        });
        let snapshot_version = self.backup.etcd.as_ref().and_then(|e| e.version.as_deref());
        super::version::check(snapshot_version, installed.as_ref(), self.force_version).map_err(
            |too_new| UserPreflightError::TooNew {
                target: self.destination(),
                too_new,
            },
        )?;
        let restore_id = super::new_restore_id();
        Ok(UserPrepared {
            paths: plan::volume_paths(&set, &restore_id),
            plan: plan::plan(l, &set, &restore_id),
            restore_id,
            set,
        })
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
            &self.destination(),
            self.quiet,
        )
        .await
    }

    /// Runs the plan (the verified `inner` manifest checks the staged snapshot); a Ctrl-C that
    /// cancels `cancel` rolls back after the step in flight.
    ///
    /// # Errors
    /// [`StepFailed`], after the rollback.
    pub async fn execute(
        &self,
        p: &UserPrepared,
        inner: &Manifest,
        cancel: &CancellationToken,
    ) -> Result<(), StepFailed> {
        let exec = InCluster {
            job: self,
            p,
            inner,
        };
        let opts = RunOptions {
            quiet: self.quiet,
            fail_at: execute::fail_at_hook(),
            pause_at: execute::pause_at_hook(),
        };
        execute::run(&exec, &p.plan.steps, &opts, cancel).await?;
        Ok(())
    }
}

/// The executor: each step's action through the API.
struct InCluster<'a> {
    job: &'a UserRestore<'a>,
    p: &'a UserPrepared,
    inner: &'a Manifest,
}

impl InCluster<'_> {
    async fn act(&self, action: &Action) -> Result<(), String> {
        let (api, l, p) = (&self.job.api, &self.job.layout, self.p);
        let t = l.wait_seconds;
        match action {
            Action::Nothing => Ok(()),
            Action::Scale(n) => {
                api.scale(&l.statefulset, *n).await?;
                if *n == 0 {
                    api.wait_gone(&p.set.pod, t).await?;
                }
                Ok(())
            }
            Action::CreatePod => {
                let pod = plan::restore_pod(l, &p.set, &p.paths, &p.restore_id);
                match api.create_pod(&pod).await {
                    // Still there (a delete that never happened): use it.
                    Err(e) if e.contains("(409 ") => {}
                    other => other?,
                }
                (api.wait_ready(&p.paths.restore_pod, t).await)
                    .map_err(|e| format!("{e}{}", no_shell_hint(&e)))
            }
            Action::DeletePod => {
                api.delete_pod(&p.paths.restore_pod).await?;
                api.wait_gone(&p.paths.restore_pod, t).await
            }
            Action::Stage => self.stage().await,
            Action::Shell(script) => {
                let argv = ["sh".to_string(), "-c".into(), script.clone()];
                let ran = api
                    .run(&p.paths.restore_pod, Some(RESTORE_CONTAINER), &argv, None)
                    .await?;
                if ran.ok {
                    Ok(())
                } else {
                    Err(format!(
                        "in pod {}: {}{}",
                        p.paths.restore_pod,
                        ran.said,
                        no_shell_hint(&ran.said)
                    ))
                }
            }
            Action::WaitReady => self.wait_ready().await,
        }
    }

    /// Streams the verified snapshot into the staging dir and checks its sha256 there.
    async fn stage(&self) -> Result<(), String> {
        let (api, p, j) = (&self.job.api, self.p, self.job);
        let snapshot = self
            .inner
            .entries
            .iter()
            .find(|e| e.kind == EntryKind::EtcdSnapshot)
            .ok_or("the verified manifest lists no etcd snapshot")?;
        let argv = ["sh".to_string(), "-c".into(), plan::stage_script(&p.paths)];
        let mut child = api
            .exec(&p.paths.restore_pod, Some(RESTORE_CONTAINER), &argv, true)
            .await?;
        let stdin = child.stdin().ok_or("exec gave no stdin")?;
        let handle = tokio::runtime::Handle::current();
        let bridge = Arc::new(Mutex::new(tokio_util::io::SyncIoBridge::new_with_handle(
            stdin, handle,
        )));
        let sink = SnapshotSink {
            out: bridge.clone(),
            given: false,
            path: snapshot.path.clone(),
            size: snapshot.size,
        };
        let archive = j.backup.archive.as_ref().expect("committed backup");
        let ciphertext = j
            .store
            .get_large(&archive.key)
            .await
            .map_err(|e| e.to_string());
        let seen = crate::archive::reader::read_archive(
            ciphertext,
            Some(j.identities.clone()),
            Box::new(sink),
            indicatif::ProgressBar::hidden(),
        )
        .await;
        // Dropping the exec's stdin does not end it: only a shutdown sends the end of stdin.
        let mut stdin = Arc::try_unwrap(bridge)
            .map_err(|_| "the snapshot stream is still shared".to_string())?
            .into_inner()
            .map_err(|_| "the snapshot stream writer panicked".to_string())?
            .into_inner();
        let closed = stdin.shutdown().await;
        let ran = api::finish(child).await;
        if let Some(f) = seen.failure {
            return Err(format!(
                "streaming the snapshot into pod {}: {}",
                p.paths.restore_pod, f.message
            ));
        }
        if seen.ciphertext_size != archive.size || seen.ciphertext_sha256 != archive.sha256 {
            return Err(format!(
                "the archive read for staging ({} bytes, sha256 {}) is not the one verified ({} bytes, sha256 {}); the store changed it in between",
                seen.ciphertext_size, seen.ciphertext_sha256, archive.size, archive.sha256
            ));
        }
        closed.map_err(|e| format!("ending the snapshot stream: {e}"))?;
        if !ran.ok {
            return Err(format!(
                "writing the snapshot in pod {}: {}{}",
                p.paths.restore_pod,
                ran.said,
                no_shell_hint(&ran.said)
            ));
        }
        let sha = snapshot
            .sha256
            .as_deref()
            .ok_or("the verified manifest has no sha256 for the snapshot")?;
        let argv = ["sh".to_string(), "-c".into(), plan::check_script(&p.paths)];
        let list = format!("{sha}  snapshot.db\n");
        let ran = api
            .run(
                &p.paths.restore_pod,
                Some(RESTORE_CONTAINER),
                &argv,
                Some(list.as_bytes()),
            )
            .await?;
        if !ran.ok {
            return Err(format!(
                "the staged snapshot does not match the archive's sha256: {}",
                ran.said
            ));
        }
        Ok(())
    }

    async fn wait_ready(&self) -> Result<(), String> {
        let (api, l, p) = (&self.job.api, &self.job.layout, self.p);
        let t = l.wait_seconds;
        let end = Instant::now() + Duration::from_secs(t);
        api.wait_ready(&p.set.pod, t).await?;
        let mut argv: Vec<String> = l
            .etcdctl
            .command
            .split_whitespace()
            .map(String::from)
            .collect();
        argv.push(format!("--endpoints={}", l.etcdctl.endpoint));
        for (flag, v) in [
            ("cacert", &l.etcdctl.cacert),
            ("cert", &l.etcdctl.cert),
            ("key", &l.etcdctl.key),
        ] {
            if let Some(v) = v {
                argv.push(format!("--{flag}={v}"));
            }
        }
        argv.extend(["endpoint".into(), "health".into()]);
        loop {
            let ran = api.run(&p.set.pod, Some(&l.container), &argv, None).await?;
            if ran.ok {
                break;
            }
            if Instant::now() >= end {
                return Err(format!(
                    "timed out after {t}s waiting for etcd health in pod {}: {}",
                    p.set.pod, ran.said
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !l.apiserver_pod.is_empty() {
            let left = end
                .saturating_duration_since(Instant::now())
                .as_secs()
                .max(1);
            api.wait_ready(&l.apiserver_pod, left).await?;
        }
        Ok(())
    }
}

/// What to do when the restore pod's image has no shell.
fn no_shell_hint(said: &str) -> &'static str {
    if said.contains("exec: \"sh\"") {
        " — the restore pod's image has no shell (a distroless etcd image); the restore needs sh, cat, mv, chown, stat, sha256sum and etcdutl or etcdctl in it: pass --restore-pod-image with such an image (e.g. an etcd image of the same version with a shell)"
    } else {
        ""
    }
}

impl Undoer for InCluster<'_> {
    fn node_name(&self, _: NodeId) -> String {
        self.job.destination()
    }

    async fn undo(&self, step: &Step) -> Result<(), String> {
        let (_, undo) = self.p.plan.actions(step.kind);
        self.act(undo).await
    }

    // The journal lives in this process only: see the README on a killed restore.
    async fn record(&self, _: &[&Step], _: Option<&Step>) -> Result<(), String> {
        Ok(())
    }

    async fn forget(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Executor for InCluster<'_> {
    async fn run(&self, step: &Step) -> Result<(), String> {
        let (action, _) = self.p.plan.actions(step.kind);
        self.act(action).await
    }

    fn discard(&self, _: &Step) {}

    fn warning(&self, step: &Step, error: &str) -> String {
        format!(
            "step {} failed ({error}); the restore goes on — run by hand: {}",
            step.kind, step.script
        )
    }
}

type Stdin = tokio::io::WriteHalf<tokio::io::SimplexStream>;
type Shared = Arc<Mutex<tokio_util::io::SyncIoBridge<Stdin>>>;

/// Passes the snapshot entry's bytes (and nothing else) to the exec's stdin; the others are
/// only hashed by the reader.
struct SnapshotSink {
    out: Shared,
    /// Whether the snapshot's writer was handed out (once only).
    given: bool,
    path: String,
    size: u64,
}

impl Sink for SnapshotSink {
    fn open(
        &mut self,
        path: &str,
        size: u64,
        _mode: u32,
    ) -> std::io::Result<Option<Box<dyn Write + Send>>> {
        if path != self.path {
            return Ok(None);
        }
        if self.given || size != self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{}: not the verified snapshot's size, or twice; nothing more is staged",
                    crate::text::escape_for_line(path, 200)
                ),
            ));
        }
        self.given = true;
        Ok(Some(Box::new(Through(self.out.clone()))))
    }
}

struct Through(Shared);

impl Write for Through {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut w = (self.0.lock()).map_err(|_| std::io::Error::other("stream writer poisoned"))?;
        w.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let mut w = (self.0.lock()).map_err(|_| std::io::Error::other("stream writer poisoned"))?;
        w.flush()
    }
}
