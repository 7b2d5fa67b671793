//! A job's outcome as operators read it: results page by page in app id order, and the
//! targets grouped by outcome (state, exit code, output, error) in one pass. A target's task
//! gives the state and the first 4 KiB of each output while it is kept; after task retention the
//! target record still gives the final state, exit code and error.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::ServiceError;
use super::store::{JobRecord, Store, StoreError, TargetRecord};
use crate::protocol::TaskId;
use crate::protocol::jobs::{
    JobGroups, JobResult, JobResults, JobState, MAX_GROUP_HOSTS, MAX_OUTPUT_GROUPS, MAX_RESULTS_PAGE,
    OFFLINE_NOTE, OFFLINE_STATE, OutputGroup,
};

/// Most output per stream shown in results and groups.
const RESULT_OUTPUT_LEN: usize = 4 * 1024;

/// Reads what became of a job's targets.
pub struct JobOutcomes {
    store: Arc<Store>,
}

impl JobOutcomes {
    /// Results read from `store`.
    pub fn new(store: Arc<Store>) -> Self {
        JobOutcomes { store }
    }

    /// Up to `limit` results of job `id` in app id order, after app id `after`.
    pub fn page(&self, id: TaskId, after: Option<&str>, limit: usize) -> Result<JobResults, ServiceError> {
        let job = self.store.job(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown job {id}")))?;
        let limit = limit.clamp(1, MAX_RESULTS_PAGE);
        let mut targets = self.store.job_targets(&job, after, limit + 1)?;
        let more = targets.len() > limit;
        targets.truncate(limit);
        let results: Vec<JobResult> =
            targets.into_iter().map(|t| self.job_result(&job, t)).collect::<Result<_, _>>()?;
        let next = if more { results.last().map(|r| r.app_id.clone()) } else { None };
        Ok(JobResults { results, next })
    }

    /// What became of one target: from its task while the task is kept, else from the target.
    fn job_result(&self, job: &JobRecord, target: TargetRecord) -> Result<JobResult, StoreError> {
        let task = match target.task_id {
            Some(id) => self.store.task(id)?,
            None => None,
        };
        let mut result = JobResult {
            app_id: target.app_id,
            state: String::new(),
            task_id: target.task_id.map(|id| id.to_string()),
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            error: None,
            duration_ms: None,
        };
        if target.offline_since_ms.is_some() {
            result.state = OFFLINE_STATE.to_owned();
            result.error = Some(OFFLINE_NOTE.to_owned());
        } else if let Some(task) = task {
            let [stdout, stderr, _] = self.store.output_texts(&task, RESULT_OUTPUT_LEN)?;
            result.state = task.status.as_str().to_owned();
            result.stdout = String::from_utf8_lossy(&stdout).into_owned();
            result.stderr = String::from_utf8_lossy(&stderr).into_owned();
            (result.exit_code, result.error, result.duration_ms) =
                (task.exit_code, task.error, task.duration_ms);
        } else if let Some(end) = target.end {
            result.state = end.status.as_str().to_owned();
            (result.exit_code, result.error, result.duration_ms) =
                (end.exit_code, end.error, end.duration_ms);
        } else if target.task_id.is_some() {
            result.state = "removed".to_owned();
        } else if matches!(job.state, JobState::Stopped | JobState::Cancelled) {
            result.state = "skipped".to_owned();
        } else {
            result.state = "waiting".to_owned();
        }
        Ok(result)
    }

    /// Job `id`'s targets grouped by outcome, biggest group first, in one pass.
    pub fn groups(&self, id: TaskId) -> Result<JobGroups, ServiceError> {
        let job = self.store.job(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown job {id}")))?;
        type Key = (String, Option<i32>, String, String, Option<String>);
        let mut groups: HashMap<Key, OutputGroup> = HashMap::new();
        let mut other: Option<OutputGroup> = None;
        self.store.each_target(id, |target| {
            let r = self.job_result(&job, target)?;
            let key: Key = (r.state, r.exit_code, r.stdout, r.stderr, r.error);
            let group = if groups.contains_key(&key) || groups.len() < MAX_OUTPUT_GROUPS {
                groups.entry(key).or_insert_with_key(|k| new_group(k.0.clone(), k.1, &k.2, &k.3, k.4.clone()))
            } else {
                other.get_or_insert_with(|| new_group("other".into(), None, "", "", None))
            };
            group.count += 1;
            if group.app_ids.len() < MAX_GROUP_HOSTS {
                group.app_ids.push(r.app_id);
            }
            Ok(())
        })?;
        let mut groups: Vec<OutputGroup> = groups.into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.app_ids.cmp(&b.app_ids)));
        groups.extend(other);
        Ok(JobGroups { groups })
    }
}

fn new_group(
    state: String,
    exit_code: Option<i32>,
    stdout: &str,
    stderr: &str,
    error: Option<String>,
) -> OutputGroup {
    OutputGroup {
        state,
        exit_code,
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        error,
        count: 0,
        app_ids: Vec::new(),
    }
}
