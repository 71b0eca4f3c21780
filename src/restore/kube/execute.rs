//! The user-cluster restore's executor: each step's action through the admin cluster's API —
//! scaling, the restore pod, shell in it, the snapshot streamed over exec stdin, readiness —
//! and each undo. [`OnCluster`] can undo and keep the journal on its own, which is all a
//! rollback from the journal needs; [`InCluster`] adds the run of every step. The runner
//! ([`crate::restore::execute`]) decides the order; nothing here does.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::api::{self, UserApi};
use super::journal::{self, UserJournal};
use super::plan::{self, Action, UserLayout};
use super::{UserPrepared, UserRestore};
use crate::archive::manifest::{EntryKind, Manifest};
use crate::archive::reader::Sink;
use crate::restore::execute::{Executor, Undoer};
use crate::restore::plan::{NodeId, Step};

/// The container name of the restore pod.
const RESTORE_CONTAINER: &str = "restore";

/// Acts through the API for one prepared restore, and keeps its journal on the StatefulSet.
pub struct OnCluster<'a> {
    /// The namespace's API.
    pub api: &'a UserApi,
    /// Names and waits.
    pub layout: &'a UserLayout,
    /// The plan and what it was made from.
    pub p: &'a UserPrepared,
    /// The journal without steps.
    pub journal: UserJournal,
}

impl OnCluster<'_> {
    /// Does `action` (any but [`Action::Stage`], which only a restore can).
    async fn act(&self, action: &Action) -> Result<(), String> {
        let (api, l, p) = (self.api, self.layout, self.p);
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
            Action::Stage => Err("staging runs only within a restore".into()),
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
            Action::RestartApiserver => self.restart_apiserver().await,
        }
    }

    /// Deletes the apiserver pod and waits, within the wait, until its controller's new pod
    /// (same name, another uid) is Ready.
    async fn restart_apiserver(&self) -> Result<(), String> {
        let (api, l) = (self.api, self.layout);
        let pod = &l.apiserver_pod;
        let uid = api.pod_uid(pod).await?.ok_or_else(|| {
            format!(
                "pod {}/{pod} does not exist (pass --apiserver-pod with the user cluster's kube-apiserver pod, or '' to leave it alone)",
                l.namespace
            )
        })?;
        api.delete_pod(pod).await?;
        (api.wait_replaced(pod, &uid, l.wait_seconds).await).map_err(|e| {
            format!("{e}; its controller (a StatefulSet in GKE on VMware) did not bring a new Ready pod up in time")
        })
    }

    /// Waits for the etcd pod to be Ready, then for `etcdctl endpoint health` in it (exec'd
    /// without a shell), all within the wait.
    async fn wait_ready(&self) -> Result<(), String> {
        let (api, l, p) = (self.api, self.layout, self.p);
        let t = l.wait_seconds;
        let end = Instant::now() + Duration::from_secs(t);
        api.wait_ready(&p.set.pod, t).await?;
        let mut argv = l.etcdctl.argv();
        argv.extend(["endpoint".into(), "health".into()]);
        loop {
            // An exec that cannot start yet (the container still starting) is waited out too.
            let said = match api.run(&p.set.pod, Some(&l.container), &argv, None).await {
                Ok(ran) if ran.ok => break,
                Ok(ran) => ran.said,
                Err(e) => e,
            };
            if Instant::now() >= end {
                return Err(format!(
                    "timed out after {t}s waiting for etcd health in pod {}: {said}",
                    p.set.pod
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

impl Undoer for OnCluster<'_> {
    fn node_name(&self, _: NodeId) -> String {
        self.layout.destination()
    }

    async fn undo(&self, step: &Step) -> Result<(), String> {
        let (_, undo) = self.p.plan.actions(step.kind);
        self.act(undo).await
    }

    async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String> {
        let j = self.journal.with_steps(done, in_flight);
        journal::write(self.api, &self.layout.statefulset, &j).await
    }

    async fn forget(&self) -> Result<(), String> {
        journal::remove(self.api, &self.layout.statefulset).await
    }
}

/// The executor of a restore: [`OnCluster`] plus the staging of the snapshot.
pub struct InCluster<'a> {
    /// Acts and undoes.
    pub on: OnCluster<'a>,
    /// The restore (store, backup, keys).
    pub job: &'a UserRestore<'a>,
    /// The verified inner manifest.
    pub inner: &'a Manifest,
}

impl InCluster<'_> {
    /// Streams the verified snapshot into the staging dir and checks its sha256 there.
    async fn stage(&self) -> Result<(), String> {
        let (api, p, j) = (self.on.api, self.on.p, self.job);
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
        let argv = [
            "sh".to_string(),
            "-c".into(),
            crate::restore::stage::check_script(&p.paths.staging),
        ];
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
    fn node_name(&self, node: NodeId) -> String {
        self.on.node_name(node)
    }

    async fn undo(&self, step: &Step) -> Result<(), String> {
        self.on.undo(step).await
    }

    async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String> {
        self.on.record(done, in_flight).await
    }

    async fn forget(&self) -> Result<(), String> {
        self.on.forget().await
    }
}

impl InCluster<'_> {
    /// Refuses to touch the volume unless etcd is still scaled to 0 and its pod gone: a
    /// controller (or a person) that scaled it back up meanwhile would have etcd running on
    /// the data being replaced.
    async fn still_scaled_down(&self) -> Result<(), String> {
        let (api, l, p) = (self.on.api, self.on.layout, self.on.p);
        let sts = api.statefulset(&l.statefulset).await?;
        let replicas = sts
            .as_ref()
            .and_then(|s| s.spec.as_ref()?.replicas)
            .unwrap_or(1);
        let present = api.wait_gone(&p.set.pod, 0).await.is_err();
        if replicas != 0 || present {
            return Err(format!(
                "{} was scaled up again ({replicas} replica(s), pod {} {}) while the restore had it at 0; something else manages it — stop that (e.g. the cluster's controller) and restore again",
                l.destination(),
                p.set.pod,
                if present { "present" } else { "gone" }
            ));
        }
        Ok(())
    }
}

impl Executor for InCluster<'_> {
    async fn run(&self, step: &Step) -> Result<(), String> {
        use crate::restore::plan::StepKind;
        if matches!(
            step.kind,
            StepKind::Stage | StepKind::RestoreSnapshot | StepKind::SwapDataDir
        ) {
            self.still_scaled_down().await?;
        }
        match self.on.p.plan.actions(step.kind) {
            (Action::Stage, _) => self.stage().await,
            (action, _) => self.on.act(action).await,
        }
    }

    fn discard(&self, _: &Step) {}

    fn warning(&self, step: &Step, error: &str) -> String {
        if step.kind == crate::restore::plan::StepKind::RestartApiserver {
            return format!(
                "could not restart the user cluster's kube-apiserver, pod {}/{} ({error}); etcd serves the restored backup and is NOT rolled back — restart it by hand: {}",
                self.on.layout.namespace, self.on.layout.apiserver_pod, step.script
            );
        }
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
