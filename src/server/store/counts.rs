//! Counts of what the store holds, for the metrics' state gauges: open tasks by state (from the
//! deadline index, which holds one entry per open task, and their records), the depth of the
//! agents' queues (keys of the `queue` tree, values not read) and jobs by state (the job
//! records kept within retention). Every scan stops at a limit, so a scrape never reads the
//! whole database; counts cut short say so.

use std::collections::BTreeMap;

use super::tx::entries_before;
use super::{Store, StoreError};
use crate::protocol::TaskStatus;
use crate::server::codec;

/// What the store holds, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredCounts {
    /// Open tasks by state (`queued`, `delivered`, `running`), every one present.
    pub open_tasks: BTreeMap<&'static str, u64>,
    /// Entries in the agents' queues.
    pub queue_depth: u64,
    /// Jobs by state.
    pub jobs: BTreeMap<&'static str, u64>,
    /// A scan stopped at its limit: the counts are lower bounds.
    pub partial: bool,
}

impl Store {
    /// Counts open tasks, queue entries and jobs, reading at most `limit` entries of each.
    pub fn counts(&self, limit: usize) -> Result<StoredCounts, StoreError> {
        let mut counts = StoredCounts::default();
        for status in TaskStatus::ALL.into_iter().filter(|status| !status.is_final()) {
            counts.open_tasks.insert(status.as_str(), 0);
        }
        let open = entries_before(&self.trees().deadlines, i64::MAX, limit)?;
        counts.partial |= open.len() >= limit;
        for (deadline, id) in open {
            // An entry left behind by an interrupted move names a task whose deadline moved.
            let Some(task) = self.task(id)?.filter(|t| t.deadline_ms == deadline && !t.status.is_final())
            else {
                continue;
            };
            *counts.open_tasks.entry(task.status.as_str()).or_default() += 1;
        }
        let queued =
            self.trees().queue.iter().keys().take(limit).try_fold(0u64, |n, key| key.map(|_| n + 1))?;
        counts.queue_depth = queued;
        counts.partial |= queued as usize >= limit;
        let jobs = self.job_states(limit)?;
        counts.partial |= jobs.values().sum::<u64>() as usize >= limit;
        counts.jobs = jobs;
        Ok(counts)
    }

    /// Jobs by state, of at most `limit` jobs.
    fn job_states(&self, limit: usize) -> Result<BTreeMap<&'static str, u64>, StoreError> {
        let mut states = BTreeMap::new();
        for value in self.trees().jobs.iter().values().take(limit) {
            let value = value?;
            let job: super::JobRecord = codec::decode(&value)?;
            *states.entry(job.state.as_str()).or_default() += 1;
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::{Delivery, Policy, TaskRecord, TaskSpec};

    fn spec<'a>(env: &'a std::collections::BTreeMap<String, String>) -> TaskSpec<'a> {
        TaskSpec {
            app_id: "web-1",
            task_type: "ping",
            payload: "",
            env,
            cwd: None,
            user: None,
            stdin: &[],
            timeout_secs: 60,
            ttl_secs: 3600,
        }
    }

    #[test]
    fn open_tasks_and_queue_entries_are_counted_by_state_up_to_the_limit() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path(), 1 << 20, Policy::default())?;
        let env = Default::default();
        let mut tasks: Vec<TaskRecord> = (0..3)
            .map(|_| TaskRecord::new(spec(&env), crate::protocol::task::new_task_id(), 1_000))
            .collect();
        store.enqueue(&mut tasks)?;
        let taken = store.take_next("web-1", Delivery::Acknowledged, &[], &mut Vec::new(), 2_000)?;
        assert!(taken.is_some(), "a task is handed out");
        let counts = store.counts(100)?;
        assert_eq!(counts.open_tasks.get("queued"), Some(&2));
        assert_eq!(counts.open_tasks.get("delivered"), Some(&1));
        assert_eq!(counts.open_tasks.get("running"), Some(&0));
        assert_eq!(counts.queue_depth, 2);
        assert!(counts.jobs.is_empty() && !counts.partial);
        let cut = store.counts(2)?;
        assert!(cut.partial, "a scan stopped at its limit says so");
        assert_eq!(cut.queue_depth, 2);
        Ok(())
    }
}
