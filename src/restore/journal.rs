//! The restore journal on the node: which steps of a restore completed (and which one was in
//! flight) with the shell that undoes each, written by the step runner before and after every
//! step that changes the node, so that `cpvault restore --rollback ID` can undo a restore whose
//! cpvault was killed or lost its SSH link, with no input but the journal. It lives beside the
//! staging dir (`<staging parent>/<restore id>.journal`), 0600 and written through the same
//! sudo shell as the steps (so root's), atomically (temp file, then `mv`); its content goes on
//! stdin, never on the command line. It holds no secret, and this module must never run an
//! undo itself: that is the runner's [`super::execute::roll_back`].

use serde::{Deserialize, Serialize};

use super::plan::{NodeId, NodeLayout, Paths, Step, StepKind};
use crate::etcdctl::quote;
use crate::sources::ssh::Node;

/// `format` of every journal.
pub const FORMAT: &str = "cpvault-restore-journal";
/// The journal version this build writes and reads.
pub const VERSION: u32 = 1;
/// A journal is a few KiB; anything much larger is not one.
const MAX_BYTES: usize = 1024 * 1024;
/// `read_script`'s exit code for "no journal there".
const MISSING: i32 = 3;

/// Why a journal cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Not a restore id cpvault makes.
    #[error("'{0}' is not a restore id (they look like cpvault-restore-20260102T030405Z-1a2b, as printed when the restore started)")]
    BadId(String),
    /// No journal at that path.
    #[error("no restore journal {path} on {node}: restore {id} has nothing left to undo there, or it ran with another --staging-dir; check the id printed when the restore started and pass the same --staging-dir")]
    NotFound {
        /// The restore id.
        id: String,
        /// The journal's path on the node.
        path: String,
        /// The node.
        node: String,
    },
    /// It could not be read or parsed, or the node refused a write.
    #[error("restore journal {path} on {node}: {cause}")]
    Node {
        /// The journal's path on the node.
        path: String,
        /// The node.
        node: String,
        /// What went wrong.
        cause: String,
    },
}

/// Where things were on the node: enough to find what the restore kept aside by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Static-pod manifests dir.
    pub manifests_dir: String,
    /// etcd's data dir.
    pub data_dir: String,
    /// PKI dir.
    pub pki_dir: String,
    /// Where the staging dir (and this journal) are.
    pub staging_parent: String,
}

impl From<&NodeLayout> for Layout {
    fn from(l: &NodeLayout) -> Layout {
        Layout {
            manifests_dir: l.manifests_dir.clone(),
            data_dir: l.data_dir.clone(),
            pki_dir: l.pki_dir.clone(),
            staging_parent: l.staging_parent.clone(),
        }
    }
}

/// One step that may have changed the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The step.
    pub name: StepKind,
    /// Index of its node in the restore.
    pub node: usize,
    /// `false`: it was running when the journal was written (it may have changed something,
    /// so it is undone too; every undo is safe on a step that did not run).
    pub done: bool,
    /// Shell that undoes it.
    pub undo: String,
}

/// The journal file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The restore.
    pub restore_id: String,
    /// `<cluster>/<id>` of the backup restored.
    pub backup: String,
    /// The node(s), for messages.
    pub node: String,
    /// The node layout.
    pub layout: Layout,
    /// What the restore creates and keeps aside.
    pub paths: Paths,
    /// Steps in the order they ran.
    pub steps: Vec<Entry>,
}

impl Journal {
    /// An empty journal of a restore.
    pub fn new(restore_id: &str, backup: &str, node: &str, layout: &NodeLayout) -> Journal {
        Journal {
            format: FORMAT.into(),
            version: VERSION,
            restore_id: restore_id.into(),
            backup: backup.into(),
            node: node.into(),
            layout: layout.into(),
            paths: super::plan::paths(layout, restore_id),
            steps: vec![],
        }
    }

    /// This journal listing `done`, then `in_flight`.
    pub fn with_steps(&self, done: &[&Step], in_flight: Option<&Step>) -> Journal {
        let entry = |s: &Step, done: bool| Entry {
            name: s.kind,
            node: s.node.0,
            done,
            undo: s.undo.clone(),
        };
        let mut steps: Vec<Entry> = done.iter().map(|s| entry(s, true)).collect();
        steps.extend(in_flight.map(|s| entry(s, false)));
        Journal {
            steps,
            ..self.clone()
        }
    }

    /// The journal's steps as plan steps, in the order they ran, for the runner's rollback.
    pub fn steps(&self) -> Vec<Step> {
        self.steps
            .iter()
            .map(|e| Step {
                kind: e.name,
                node: NodeId(e.node),
                does: String::new(),
                changes_node: true,
                script: String::new(),
                undo: e.undo.clone(),
            })
            .collect()
    }
}

/// The journal's path on the node: `<staging parent>/<restore id>.journal`.
pub fn path(staging_parent: &str, restore_id: &str) -> String {
    format!(
        "{}/{restore_id}.journal",
        staging_parent.trim_end_matches('/')
    )
}

/// Refuses what is not a restore id (it becomes part of a path on the node).
///
/// # Errors
/// [`JournalError::BadId`].
pub fn check_id(id: &str) -> Result<(), JournalError> {
    let rest = id.strip_prefix("cpvault-restore-").unwrap_or("");
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(JournalError::BadId(id.into()));
    }
    Ok(())
}

/// The shell that replaces the journal at `path` with its stdin: 0600 from creation, a
/// complete file or none.
fn write_script(path: &str) -> String {
    let tmp = quote(&format!("{path}.tmp"));
    format!(
        "umask 077 && cat > {tmp} && chmod 600 {tmp} && mv -f {tmp} {}",
        quote(path)
    )
}

fn read_script(path: &str) -> String {
    let p = quote(path);
    format!("if [ -e {p} ]; then exec cat {p}; else exit {MISSING}; fi")
}

/// Writes `j` to `path` on `node`.
///
/// # Errors
/// A one-line description of what the node said.
pub async fn write(node: &Node, path: &str, j: &Journal) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(j).map_err(|e| e.to_string())?;
    let out = node
        .run_with_stdin(&write_script(path), &text)
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(super::node_err(&format!("writing {path}"), &out));
    }
    Ok(())
}

/// Removes the journal at `path` on `node` (and a temp file left by a killed write).
///
/// # Errors
/// A one-line description of what the node said.
pub async fn remove(node: &Node, path: &str) -> Result<(), String> {
    let p = quote(path);
    let tmp = quote(&format!("{path}.tmp"));
    let out = node
        .run(&format!("rm -f {p} {tmp}"))
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(super::node_err(&format!("removing {path}"), &out));
    }
    Ok(())
}

/// Reads the journal of restore `id` from `node`, where `staging_parent` is the restore's.
///
/// # Errors
/// [`JournalError::BadId`], [`JournalError::NotFound`], or [`JournalError::Node`] when it
/// cannot be read or is not a journal this build knows.
pub async fn read(node: &Node, staging_parent: &str, id: &str) -> Result<Journal, JournalError> {
    check_id(id)?;
    let path = path(staging_parent, id);
    let fail = |cause: String| JournalError::Node {
        path: path.clone(),
        node: node.destination(),
        cause,
    };
    let out = node
        .run(&read_script(&path))
        .await
        .map_err(|e| fail(e.to_string()))?;
    if out.status.code() == Some(MISSING) {
        return Err(JournalError::NotFound {
            id: id.into(),
            path,
            node: node.destination(),
        });
    }
    if !out.status.success() {
        return Err(fail(super::said(&out)));
    }
    parse(&out.stdout, id).map_err(fail)
}

/// Parses a journal's bytes and checks that it is restore `id`'s.
fn parse(bytes: &[u8], id: &str) -> Result<Journal, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!("larger than {MAX_BYTES} bytes, so not a journal"));
    }
    let j: Journal =
        serde_json::from_slice(bytes).map_err(|e| format!("not a restore journal ({e})"))?;
    if j.format != FORMAT || j.version != VERSION {
        return Err(format!(
            "format {} version {}, which this cpvault does not know (it reads {FORMAT} version {VERSION}); use the cpvault that made the restore",
            j.format, j.version
        ));
    }
    if j.restore_id != id {
        return Err(format!("it is restore {}'s, not {id}'s", j.restore_id));
    }
    Ok(j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plan::{parse_member, plan};

    fn sample() -> (Journal, Vec<Step>) {
        let l = NodeLayout::kubeadm();
        let m = parse_member("- --name=n\n- --initial-cluster=n=http://a:2380\n- --initial-advertise-peer-urls=http://a:2380\n").unwrap();
        let id = "cpvault-restore-20260102T030405Z-1a2b";
        let steps = plan(&l, &m, id, "admin.conf", &Default::default(), NodeId(0));
        (Journal::new(id, "c/1", "root@node", &l), steps)
    }

    #[test]
    fn a_journal_round_trips_with_its_step_in_flight_last() {
        let (j, steps) = sample();
        let done: Vec<&Step> = steps[2..4].iter().collect();
        let j = j.with_steps(&done, Some(&steps[4]));
        let text = serde_json::to_vec(&j).unwrap();
        let back = parse(&text, &j.restore_id).unwrap();
        assert_eq!(back, j);
        let names: Vec<(&str, bool)> = back.steps.iter().map(|e| (e.name.name(), e.done)).collect();
        assert_eq!(
            names,
            [
                ("stage", true),
                ("stop-control-plane", true),
                ("move-aside", false)
            ]
        );
        let again = back.steps();
        assert_eq!(again[2].undo, steps[4].undo);
        assert_eq!(
            back.paths.staging,
            "/var/tmp/cpvault-restore-20260102T030405Z-1a2b"
        );
        assert!(parse(&text, "cpvault-restore-other").is_err());
        assert!(parse(b"{}", &j.restore_id).is_err());
    }

    #[test]
    fn ids_are_checked_and_paths_sit_beside_the_staging_dir() {
        assert!(check_id("cpvault-restore-20260102T030405Z-1a2b").is_ok());
        for bad in [
            "",
            "cpvault-restore-",
            "x",
            "cpvault-restore-../../etc",
            "cpvault-restore-a b",
        ] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            path("/var/tmp/", "cpvault-restore-X"),
            "/var/tmp/cpvault-restore-X.journal"
        );
        // Atomic and private: a temp file made under umask 077, then renamed.
        let w = write_script("/var/tmp/cpvault-restore-X.journal");
        assert!(
            w.starts_with("umask 077 && cat > /var/tmp/cpvault-restore-X.journal.tmp"),
            "{w}"
        );
        assert!(
            w.ends_with(
                "mv -f /var/tmp/cpvault-restore-X.journal.tmp /var/tmp/cpvault-restore-X.journal"
            ),
            "{w}"
        );
    }
}
