//! Restore (design.md §6): onto control-plane nodes over SSH — one, or every member of an HA
//! control plane as one plan — into a local dir ([`local`]), or a user cluster's etcd through
//! the admin cluster's API ([`kube`], design.md §10). A restore onto nodes goes preflight
//! ([`preflight`], read-only, on every node) → plan ([`plan`], pure, what `--dry-run` prints)
//! → a deep verify of the archive and the CA check → the step runner ([`execute`]), which
//! undoes every completed step of every node in reverse on a failure and keeps on each node a
//! [`journal`] of that node's steps, from which [`roll_back_journal`] undoes a restore whose
//! cpvault died. Plaintext reaches a node only inside its 0700 staging dir ([`stage`]); nothing decrypted is
//! written on this machine except the kubeconfig the user asked for (0600). The connections are
//! made by the command and handed in; nothing here asks the user or renders output beyond
//! progress on stderr.

pub mod execute;
pub mod journal;
pub mod kit;
pub mod kube;
pub mod local;
pub mod plan;
pub mod preflight;
pub mod stage;
pub mod version;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::archive::manifest::Manifest;
use crate::crypto::Identities;
use crate::error::VerifyFailed;
use crate::sources::ssh::Node;
use execute::{Executor, Rollback, RunOptions, StepFailed, Undoer};
use journal::Journal;
use plan::{NodeId, NodeLayout, Paths, Step, StepKind};
use preflight::{NodeFacts, PreflightError};

/// The node's stderr on one line, or "failed" when it said nothing.
fn said(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr)
        .trim()
        .replace('\n', "; ");
    if err.is_empty() {
        "failed".into()
    } else {
        err
    }
}

/// `what: <the node's stderr>`.
fn node_err(what: &str, out: &std::process::Output) -> String {
    format!("{what}: {}", said(out))
}

/// One restore onto nodes: what is restored, where, and how. The nodes are connected by the
/// caller; [`NodeId`] `i` in the plan is `nodes[i]`, laid out as `layouts[i]`. Several nodes
/// are the members of one etcd cluster, restored together.
pub struct NodeRestore<'a> {
    /// The store holding the backup.
    pub store: &'a cpvault_backends::Store,
    /// The backup's outer manifest.
    pub backup: &'a Manifest,
    /// Who wrote it (the caller has refused untrusted backups already).
    pub authorship: &'a crate::trust::Authorship,
    /// Keys that open it.
    pub identities: Arc<Identities>,
    /// Where things are on each node (one per node).
    pub layouts: Vec<NodeLayout>,
    /// The nodes.
    pub nodes: &'a [Node],
    /// Where the restored cluster's admin kubeconfig goes (0600, never overwritten).
    pub kubeconfig_out: PathBuf,
    /// Restore even when the node's CA is not the archive's.
    pub force_different_cluster: bool,
    /// Restore a snapshot from a newer etcd minor than the nodes run.
    pub force_version: bool,
    /// Restore even when certificates in the backup have expired.
    pub force_expired: bool,
    /// No progress.
    pub quiet: bool,
}

/// What [`NodeRestore::prepare`] found and planned.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Names the staging dir and everything kept aside.
    pub restore_id: String,
    /// Per node, what preflight learned.
    pub facts: Vec<NodeFacts>,
    /// The plan, in order.
    pub steps: Vec<Step>,
}

impl NodeRestore<'_> {
    /// The nodes' names, for messages.
    pub fn destination(&self) -> String {
        let names: Vec<String> = self.nodes.iter().map(Node::destination).collect();
        names.join(", ")
    }

    /// The first node's layout (the one the kubeconfig comes from).
    pub fn layout(&self) -> &NodeLayout {
        &self.layouts[0]
    }

    /// The paths of this restore on node `i`.
    pub fn paths(&self, p: &Prepared, i: usize) -> Paths {
        plan::paths(&self.layouts[i], &p.restore_id)
    }

    /// Probes the nodes (read-only) and plans the restore.
    ///
    /// # Errors
    /// The first [`PreflightError`]; nothing was changed.
    pub async fn prepare(&self) -> Result<Prepared, PreflightError> {
        preflight::certificates_valid(self.backup, Utc::now(), self.force_expired)?;
        // Every node at once: each probe is a few round trips.
        let facts = futures::future::try_join_all(
            self.nodes
                .iter()
                .zip(&self.layouts)
                .map(|(node, l)| preflight::probe(node, l, self.backup)),
        )
        .await?;
        let dests: Vec<String> = self.nodes.iter().map(Node::destination).collect();
        let recorded: Vec<String> = self
            .backup
            .etcd
            .iter()
            .flat_map(|e| e.members.iter().flatten())
            // A member that never started has no name yet.
            .filter(|m| !m.name.is_empty())
            .map(|m| crate::text::escape_for_line(&m.name, 100))
            .collect();
        preflight::membership(
            &facts,
            &dests,
            &self.layouts,
            &recorded,
            self.layout().shrink_to_one_member,
        )?;
        let snapshot_version = self.backup.etcd.as_ref().and_then(|e| e.version.as_deref());
        preflight::versions(&facts, &dests, snapshot_version, self.force_version)?;
        if let (Some(v), false) = (snapshot_version, self.quiet) {
            for (f, dest) in facts.iter().zip(&dests) {
                if f.etcd_version.is_none() {
                    crate::say!("warning: cannot tell which etcd version {dest} runs (no version in its etcd image tag, no `etcd --version` there), so the snapshot's etcd {} is not checked against it", crate::text::escape_for_line(v, 60));
                }
            }
        }
        let restore_id = new_restore_id();
        let kubeconfig_out = self.kubeconfig_out.display().to_string();
        let kits: Vec<kit::KitFiles> = self
            .layouts
            .iter()
            .map(|l| kit::kit_files(self.backup, l))
            .collect();
        let nodes: Vec<_> = self
            .layouts
            .iter()
            .zip(&facts)
            .zip(&kits)
            .map(|((l, f), k)| (l, &f.member, k))
            .collect();
        let steps = plan::plan_all(&nodes, &restore_id, &kubeconfig_out);
        Ok(Prepared {
            restore_id,
            facts,
            steps,
        })
    }

    /// [`Self::prepare`] and the verify of the whole archive (every layer) at once: the
    /// preflight only reads the nodes and the verify only reads the store, so neither waits
    /// for the other (the first to fail stops both). Then the archive must be of the nodes'
    /// cluster. Returns the plan and the verified inner manifest; nothing was changed.
    ///
    /// # Errors
    /// [`PreflightError`], [`VerifyFailed`] (exit 3), or a [`PreflightError`] about the CA.
    pub async fn prepare_and_verify(&self) -> anyhow::Result<(Prepared, Manifest)> {
        let dest = self.destination();
        let (p, inner) = tokio::try_join!(
            async { self.prepare().await.map_err(anyhow::Error::from) },
            verify_deeply(
                self.store,
                self.backup,
                self.authorship,
                self.identities.clone(),
                &dest,
                self.quiet,
            )
        )?;
        for ((node, facts), l) in self.nodes.iter().zip(&p.facts).zip(&self.layouts) {
            preflight::same_cluster(
                &inner,
                facts,
                &l.pki_dir,
                &node.destination(),
                self.force_different_cluster,
            )?;
        }
        Ok((p, inner))
    }

    /// The journal's path on node `i`.
    pub fn journal_path(&self, p: &Prepared, i: usize) -> String {
        journal::path(&self.layouts[i].staging_parent, &p.restore_id)
    }

    /// Runs the plan (the verified `inner` manifest checks the staged files); a Ctrl-C that
    /// cancels `cancel` rolls back after the step in flight. Returns the best-effort steps
    /// that failed although their failure fails the restore (the kubeconfig): the control
    /// plane serves the restored state and was not rolled back.
    ///
    /// # Errors
    /// [`StepFailed`], after the rollback.
    pub async fn execute(
        &self,
        p: &Prepared,
        inner: &Manifest,
        cancel: &CancellationToken,
    ) -> Result<Vec<(StepKind, String)>, StepFailed> {
        let n = self.nodes.len();
        let exec = OnNodes {
            job: self,
            inner,
            paths: (0..n).map(|i| self.paths(p, i)).collect(),
            journals: (0..n)
                .map(|i| {
                    Journal::new(
                        &p.restore_id,
                        &self.backup.reference(),
                        &self.nodes[i].destination(),
                        &self.layouts[i],
                    )
                })
                .collect(),
            journal_paths: (0..n).map(|i| self.journal_path(p, i)).collect(),
            written: std::cell::RefCell::new(vec![None; n]),
            wrote_kubeconfig: std::cell::Cell::new(false),
        };
        let opts = RunOptions {
            quiet: self.quiet,
            fail_at: execute::fail_at_hook(),
            pause_at: execute::pause_at_hook(),
        };
        Ok(execute::run(&exec, &p.steps, &opts, cancel).await?.failed)
    }
}

/// A new restore id: names the staging dir and everything kept aside.
pub fn new_restore_id() -> String {
    format!(
        "cpvault-restore-{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// Verifies the whole archive `m` (every layer) before anything on `dest` changes; returns
/// the verified inner manifest.
///
/// # Errors
/// [`VerifyFailed`] (exit 3); nothing was changed.
pub async fn verify_deeply(
    store: &cpvault_backends::Store,
    m: &Manifest,
    authorship: &crate::trust::Authorship,
    identities: Arc<Identities>,
    dest: &str,
    quiet: bool,
) -> anyhow::Result<Manifest> {
    let bar = crate::progress::bytes(quiet, 0, &format!("verify {}", m.reference()));
    let report = crate::verify::verify(
        store,
        m,
        authorship,
        Some(identities),
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
    Ok(report
        .inner
        .expect("a passing deep verify read the inner manifest"))
}

/// Undoes, in reverse, what the journal `j` (read from `node`, where it lives at `path`;
/// after a restore over several nodes, that node's own steps) lists, with the runner's own
/// rollback: it stops at the first undo that fails, keeps the
/// journal of what is left, and removes it once everything is undone.
pub async fn roll_back_journal(node: &Node, path: &str, j: &Journal) -> Rollback {
    let steps = j.steps();
    let refs: Vec<&Step> = steps.iter().collect();
    let from = FromJournal {
        node,
        path,
        journal: j,
    };
    execute::roll_back(&from, &refs).await
}

/// Undoes a journal's steps on the one node it was read from.
struct FromJournal<'a> {
    node: &'a Node,
    path: &'a str,
    journal: &'a Journal,
}

impl Undoer for FromJournal<'_> {
    fn node_name(&self, _: NodeId) -> String {
        self.node.destination()
    }

    async fn undo(&self, step: &Step) -> Result<(), String> {
        undo_on(self.node, step).await
    }

    async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String> {
        let j = self.journal.with_steps(done, in_flight);
        journal::write(self.node, self.path, &j).await
    }

    async fn forget(&self) -> Result<(), String> {
        journal::remove(self.node, self.path).await
    }
}

async fn undo_on(node: &Node, step: &Step) -> Result<(), String> {
    match node.run(&step.undo).await {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(node_err("undo failed", &out)),
        Err(e) => Err(e.to_string()),
    }
}

/// The real executor: each step's script over SSH on its node, plus what a step does on this
/// side (streaming the payload, writing the kubeconfig).
struct OnNodes<'a> {
    job: &'a NodeRestore<'a>,
    inner: &'a Manifest,
    /// Per node: the restore's paths there.
    paths: Vec<Paths>,
    /// Per node: its journal without steps, and where it goes there.
    journals: Vec<Journal>,
    journal_paths: Vec<String>,
    /// Per node: the journal last written there, so only a node whose steps changed is
    /// written again.
    written: std::cell::RefCell<Vec<Option<Journal>>>,
    /// Whether this restore wrote the kubeconfig (only then is it ours to remove).
    wrote_kubeconfig: std::cell::Cell<bool>,
}

impl OnNodes<'_> {
    fn node(&self, id: NodeId) -> &Node {
        &self.job.nodes[id.0]
    }
}

impl Undoer for OnNodes<'_> {
    fn node_name(&self, node: NodeId) -> String {
        self.node(node).destination()
    }

    async fn undo(&self, step: &Step) -> Result<(), String> {
        undo_on(self.node(step.node), step).await
    }

    // Each node gets the journal of its own steps, so `--rollback` on that node alone undoes
    // what changed there (the step in flight included).
    async fn record(&self, done: &[&Step], in_flight: Option<&Step>) -> Result<(), String> {
        for (i, node) in self.job.nodes.iter().enumerate() {
            let mine: Vec<&Step> = done.iter().copied().filter(|s| s.node.0 == i).collect();
            let j = self.journals[i].with_steps(&mine, in_flight.filter(|s| s.node.0 == i));
            // A node none of whose steps started has nothing to undo: no journal yet.
            let unchanged = match &self.written.borrow()[i] {
                Some(w) => *w == j,
                None => j.steps.is_empty(),
            };
            if unchanged {
                continue;
            }
            journal::write(node, &self.journal_paths[i], &j).await?;
            self.written.borrow_mut()[i] = Some(j);
        }
        Ok(())
    }

    async fn forget(&self) -> Result<(), String> {
        let mut first_error = None;
        for (i, node) in self.job.nodes.iter().enumerate() {
            if self.written.borrow()[i].is_none() {
                continue;
            }
            match journal::remove(node, &self.journal_paths[i]).await {
                Ok(()) => self.written.borrow_mut()[i] = None,
                Err(e) => {
                    first_error.get_or_insert(format!("on {}: {e}", node.destination()));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Executor for OnNodes<'_> {
    async fn run(&self, step: &Step) -> Result<(), String> {
        let node = self.node(step.node);
        let out = node.run(&step.script).await.map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(node_err("the command failed", &out));
        }
        match step.kind {
            // Every node's staging dir is made (and journaled) by its own stage step; the
            // last node's step then streams the archive once into all of them.
            StepKind::Stage if step.node.0 + 1 < self.job.nodes.len() => Ok(()),
            StepKind::Stage => {
                let j = self.job;
                let targets: Vec<(&Node, &str)> = j
                    .nodes
                    .iter()
                    .zip(&self.paths)
                    .map(|(n, p)| (n, p.staging.as_str()))
                    .collect();
                stage::stage(
                    &targets,
                    j.store,
                    j.backup,
                    j.identities.clone(),
                    self.inner,
                )
                .await
            }
            StepKind::Kubeconfig => {
                write_private(&self.job.kubeconfig_out, &out.stdout)?;
                self.wrote_kubeconfig.set(true);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn discard(&self, step: &Step) {
        if step.kind == StepKind::Kubeconfig && self.wrote_kubeconfig.take() {
            let _ = std::fs::remove_file(&self.job.kubeconfig_out);
        }
    }

    fn warning(&self, step: &Step, error: &str) -> String {
        if step.kind == StepKind::Kubeconfig {
            return format!(
                "could not fetch {} from {} to {} ({error}); the control plane serves the restored state and is NOT rolled back — copy that file from the node by hand",
                self.job.layouts[step.node.0].admin_conf,
                self.node_name(step.node),
                self.job.kubeconfig_out.display()
            );
        }
        format!(
            "could not remove the staging dir on {} ({error}); it holds the CA keys in plaintext — remove {} by hand",
            self.node_name(step.node),
            self.paths[step.node.0].staging
        )
    }
}

/// Writes a new 0600 file (never over an existing one; a partly written one is removed).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
        let _ = std::fs::remove_file(path);
        format!("writing {}: {e}", path.display())
    })
}
