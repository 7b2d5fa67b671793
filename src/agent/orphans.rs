//! No orphans: a task's process groups in its journal entry while they run ([`JournaledGroups`]),
//! and, when the agent starts, the end of what an earlier life of the agent died with
//! ([`end_orphans`]). Only tasks without a final report are concerned: what a finished task left
//! behind on purpose (`nohup cmd &`, a service it started) is never touched, since the record of
//! a group is removed as soon as its process is gone.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::{error, info, info_span, warn};

use super::group::{GroupRecord, ORPHAN_GRACE, end_groups};
use super::journal::{Entry, Journal};
use super::process::GroupWatch;
use super::shared::Shared;

/// Keeps a running task's process groups in its journal entry, written durably, so that a
/// restart after a crash finds them.
pub struct JournaledGroups {
    shared: Arc<Shared>,
    /// The task's entry as last written here (the worker writes it again only when the task
    /// ended, with its report).
    entry: Mutex<Entry>,
}

impl JournaledGroups {
    /// Watches the groups of the task whose current entry is `entry`.
    pub fn new(shared: Arc<Shared>, entry: Entry) -> Self {
        JournaledGroups { shared, entry: Mutex::new(entry) }
    }

    fn update(&self, change: impl FnOnce(&mut Vec<GroupRecord>)) {
        // A poisoned entry is still the last one written: keep using it.
        let mut entry = self.entry.lock().unwrap_or_else(PoisonError::into_inner);
        change(&mut entry.groups);
        if let Err(e) = self.shared.journal.put(&entry) {
            error!(error = %format!("{e:#}"), "cannot journal the task's process group");
        }
    }
}

impl GroupWatch for JournaledGroups {
    fn started(&self, group: &GroupRecord) {
        self.update(|groups| groups.push(group.clone()));
    }

    fn ended(&self, group: &GroupRecord) {
        self.update(|groups| groups.retain(|g| g != group));
    }
}

/// At start, before anything is reported: ends what is left of the process groups of every task
/// an earlier life of the agent was running when it died (SIGTERM, then SIGKILL after
/// [`ORPHAN_GRACE`]), and forgets the groups in the journal. The tasks stay without a report,
/// so recovery reports them `lost`.
pub fn end_orphans(journal: &Journal) {
    let entries = match journal.entries() {
        Ok(entries) => entries,
        Err(e) => {
            error!(error = %format!("{e:#}"), "cannot read the task journal");
            return;
        }
    };
    let unfinished: Vec<Entry> =
        entries.into_iter().filter(|e| e.report.is_none() && !e.groups.is_empty()).collect();
    if unfinished.is_empty() {
        return;
    }
    let groups: Vec<GroupRecord> = unfinished.iter().flat_map(|e| e.groups.iter().cloned()).collect();
    // All at once, so that many tasks share one grace.
    let found = end_groups(&groups, ORPHAN_GRACE);
    for entry in unfinished {
        let _span = info_span!("task", id = %entry.task_id).entered();
        info!(
            groups = entry.groups.len(),
            "the agent died while this task ran; its process groups were ended"
        );
        if let Err(e) = journal.put(&Entry { groups: Vec::new(), ..entry }) {
            error!(error = %format!("{e:#}"), "cannot journal that the task's process groups ended");
        }
    }
    if found > 0 {
        warn!(processes = found, "ended the processes of tasks the agent died with");
    }
}
