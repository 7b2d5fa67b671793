//! Reading jobs back and letting them go: one job, the newest jobs, a page of targets in app id
//! order (a binary search over point reads, since targets are stored sorted by app id), every
//! target in one pass, the tasks still open, the job a task belongs to, the job events waiting
//! for the wake-up loop, and retention of done jobs with their targets and links.

use super::events::JobEvent;
use super::jobs::{corrupt, job_key, split_link, target_key};
use super::records::{JobRecord, TargetRecord};
use super::tx::{entries_before, time_key};
use super::{Store, StoreError};
use crate::protocol::TaskId;
use crate::server::codec;

/// Most jobs one retention pass removes.
const SWEEP_BATCH: usize = 100;

impl Store {
    /// The job `id`.
    pub fn job(&self, id: TaskId) -> Result<Option<JobRecord>, StoreError> {
        self.trees().jobs.get(job_key(id))?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// The stdin every task of job `id` gets (empty: none).
    pub fn job_stdin(&self, id: TaskId) -> Result<Vec<u8>, StoreError> {
        Ok(self.trees().job_inputs.get(job_key(id))?.map(|bytes| bytes.to_vec()).unwrap_or_default())
    }

    /// Up to `limit` jobs, newest first.
    pub fn jobs(&self, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.trees().jobs.iter().values().rev().take(limit).map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Tasks of job `id` that were started and have not ended.
    pub(super) fn open_tasks(&self, id: TaskId) -> Result<Vec<TaskId>, StoreError> {
        let mut open = Vec::new();
        for value in self.trees().job_targets.scan_prefix(job_key(id)).values() {
            let target: TargetRecord = codec::decode(&value?)?;
            if let (Some(task_id), None) = (target.task_id, &target.end) {
                open.push(task_id);
            }
        }
        Ok(open)
    }

    /// Up to `limit` targets of `job`, in app id order, after app id `after`.
    pub fn job_targets(
        &self,
        job: &JobRecord,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TargetRecord>, StoreError> {
        let start = match after {
            Some(after) => self.first_target_after(job, after)?,
            None => 0,
        };
        self.trees()
            .job_targets
            .range(target_key(job.id, start)..)
            .values()
            .take(limit.min(job.targets.saturating_sub(start) as usize))
            .map(|v| Ok(codec::decode(&v?)?))
            .collect()
    }

    /// Index of the first target whose app id sorts after `after` (targets are sorted by app
    /// id, so a binary search over point reads finds it).
    fn first_target_after(&self, job: &JobRecord, after: &str) -> Result<u32, StoreError> {
        let (mut low, mut high) = (0u32, job.targets);
        while low < high {
            let mid = low + (high - low) / 2;
            let bytes = self
                .trees()
                .job_targets
                .get(target_key(job.id, mid))?
                .ok_or_else(|| corrupt("job target missing"))?;
            let target: TargetRecord = codec::decode(&bytes)?;
            if target.app_id.as_str() <= after {
                low = mid + 1;
            } else {
                high = mid;
            }
        }
        Ok(low)
    }

    /// Calls `visit` with every target of job `id`, in app id order.
    pub fn each_target(
        &self,
        id: TaskId,
        mut visit: impl FnMut(TargetRecord) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for value in self.trees().job_targets.scan_prefix(job_key(id)).values() {
            visit(codec::decode(&value?)?)?;
        }
        Ok(())
    }

    /// Takes the job events of the transactions committed so far.
    pub fn take_job_events(&self) -> Vec<JobEvent> {
        self.job_events.take()
    }

    /// Has `wake` called after every commit that left job events to take (replacing an earlier
    /// one). It runs on the committing thread: it should only signal whoever takes the events.
    pub fn on_job_events(&self, wake: impl Fn() + Send + Sync + 'static) {
        self.job_events.on_push(wake);
    }

    /// Removes jobs that were done before `cutoff_ms`, with their targets, task links and stdin (at
    /// most a batch); returns how many.
    pub fn sweep_jobs(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let trees = self.trees();
        let old = entries_before(&trees.jobs_done, cutoff_ms, SWEEP_BATCH)?;
        for &(ms, id) in &old {
            for entry in trees.job_targets.scan_prefix(job_key(id)) {
                let (target_key, value) = entry?;
                let target: TargetRecord = codec::decode(&value)?;
                if let Some(task_id) = target.task_id {
                    trees.job_links.remove(task_id.as_bytes())?;
                }
                trees.job_targets.remove(target_key)?;
            }
            trees.job_inputs.remove(job_key(id))?;
            // The index entry goes last: if this stops half way, it still leads here next time.
            trees.jobs.remove(job_key(id))?;
            trees.jobs_done.remove(time_key(ms, id))?;
        }
        Ok(old.len())
    }

    /// The job and target index of task `id`, if it belongs to a job.
    pub fn job_of_task(&self, id: TaskId) -> Result<Option<(TaskId, u32)>, StoreError> {
        self.trees().job_links.get(id.as_bytes())?.map(|v| split_link(&v)).transpose()
    }
}
