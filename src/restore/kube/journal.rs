//! The user-cluster restore's journal: the steps completed (and the one in flight), with the
//! replicas the StatefulSet had and the backup restored, kept as an annotation on the etcd
//! StatefulSet itself. The runner writes it before and after every step that changes
//! something, so `restore --rollback ID --profile gke-user` undoes a restore whose cpvault
//! died from the cluster alone. It holds no secret, and changing an annotation never rolls
//! the StatefulSet's pods.

use serde::{Deserialize, Serialize};

use super::api::UserApi;
use crate::restore::plan::{Step, StepKind};

/// The annotation on the StatefulSet.
pub const ANNOTATION: &str = "cpvault.io/restore-journal";

/// The journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserJournal {
    /// The restore.
    pub restore_id: String,
    /// The backup restored (`<cluster>/<id>`).
    pub backup: String,
    /// The StatefulSet's replicas before the restore.
    pub replicas: i32,
    /// The steps in the order they ran; the last may be in flight.
    #[serde(default)]
    pub steps: Vec<Entry>,
}

/// One journaled step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The step.
    pub name: StepKind,
    /// Its undo, as the `kubectl` commands that do it (for people; the rollback redoes the
    /// plan's own action).
    pub undo: String,
    /// Whether it completed (else it was running).
    pub done: bool,
}

impl UserJournal {
    /// This journal with `done` and then `in_flight`.
    pub fn with_steps(&self, done: &[&Step], in_flight: Option<&Step>) -> UserJournal {
        let entry = |s: &Step, done: bool| Entry {
            name: s.kind,
            undo: s.undo.clone(),
            done,
        };
        let mut steps: Vec<Entry> = done.iter().map(|s| entry(s, true)).collect();
        steps.extend(in_flight.map(|s| entry(s, false)));
        UserJournal {
            steps,
            ..self.clone()
        }
    }
}

/// Writes `j` on the StatefulSet.
///
/// # Errors
/// The API's answer, on one line.
pub async fn write(api: &UserApi, statefulset: &str, j: &UserJournal) -> Result<(), String> {
    let text = serde_json::to_string(j).map_err(|e| e.to_string())?;
    api.annotate(statefulset, ANNOTATION, Some(&text)).await
}

/// Removes the journal.
///
/// # Errors
/// The API's answer, on one line.
pub async fn remove(api: &UserApi, statefulset: &str) -> Result<(), String> {
    api.annotate(statefulset, ANNOTATION, None).await
}

/// Reads the journal of `restore_id` from the StatefulSet's annotations.
///
/// # Errors
/// None there, another restore's, or one that does not parse.
pub fn read(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    restore_id: &str,
) -> Result<UserJournal, String> {
    let text = annotations.and_then(|a| a.get(ANNOTATION)).ok_or_else(|| {
        format!("it has no annotation {ANNOTATION}: no restore is in progress or left undone there (or it was another StatefulSet's)")
    })?;
    let j: UserJournal = serde_json::from_str(text)
        .map_err(|e| format!("its annotation {ANNOTATION} is not a cpvault journal ({e})"))?;
    if j.restore_id != restore_id {
        return Err(format!(
            "its journal is of restore {}, not {restore_id}",
            crate::text::escape_for_line(&j.restore_id, 80)
        ));
    }
    Ok(j)
}
