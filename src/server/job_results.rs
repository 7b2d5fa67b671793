//! A job's outcome as operators read it: results page by page in app id order, and the
//! targets grouped by outcome (state, exit code, output, error) in one pass. A target's task
//! gives the state and the first 4 KiB of each output while it is kept; after task retention the
//! target record still gives the final state, exit code and error.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::ServiceError;
use super::store::{JobRecord, Store, StoreError, TargetRecord};
use crate::protocol::TaskId;
use crate::protocol::bytes::{self, Encoding};
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
            status: String::new(),
            task_id: target.task_id.map(|id| id.to_string()),
            exit_code: None,
            stdout: String::new(),
            stdout_encoding: None,
            stderr: String::new(),
            stderr_encoding: None,
            result: String::new(),
            error: None,
            duration_ms: None,
        };
        if target.offline_since_ms.is_some() {
            result.state = OFFLINE_STATE.to_owned();
            result.error = Some(OFFLINE_NOTE.to_owned());
        } else if let Some(task) = task {
            let [stdout, stderr, text] = self.store.output_texts(&task, RESULT_OUTPUT_LEN)?;
            result.state = task.status.as_str().to_owned();
            (result.stdout, result.stdout_encoding) = shown(stdout);
            (result.stderr, result.stderr_encoding) = shown(stderr);
            // Text from the original client's JSON (stored as its UTF-8 bytes).
            result.result = String::from_utf8_lossy(&shortened(text)).into_owned();
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
        result.status = result.state.clone();
        Ok(result)
    }

    /// Job `id`'s targets grouped by outcome, biggest group first, in one pass.
    pub fn groups(&self, id: TaskId) -> Result<JobGroups, ServiceError> {
        let job = self.store.job(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown job {id}")))?;
        let mut groups: HashMap<GroupKey, OutputGroup> = HashMap::new();
        let mut other: Option<OutputGroup> = None;
        self.store.each_target(id, |target| {
            let mut r = self.job_result(&job, target)?;
            let app_id = std::mem::take(&mut r.app_id);
            let key = GroupKey::of(r);
            let group = if groups.contains_key(&key) || groups.len() < MAX_OUTPUT_GROUPS {
                groups.entry(key).or_insert_with_key(GroupKey::group)
            } else {
                other.get_or_insert_with(|| GroupKey::of(JobResult::default()).group_as("other"))
            };
            group.count += 1;
            if group.app_ids.len() < MAX_GROUP_HOSTS {
                group.app_ids.push(app_id);
            }
            Ok(())
        })?;
        let mut groups: Vec<OutputGroup> = groups.into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.app_ids.cmp(&b.app_ids)));
        groups.extend(other);
        Ok(JobGroups { groups })
    }
}

/// The first [`RESULT_OUTPUT_LEN`] bytes of an output (a character cut at the end dropped, so a
/// shortened text stays text) in its JSON form.
fn shown(bytes: Vec<u8>) -> (String, Option<Encoding>) {
    bytes::encode_owned(shortened(bytes))
}

/// The first [`RESULT_OUTPUT_LEN`] bytes of an output, without a character cut at the end.
fn shortened(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.len() >= RESULT_OUTPUT_LEN {
        bytes.truncate(RESULT_OUTPUT_LEN);
        bytes::trim_cut_character(&mut bytes);
    }
    bytes
}

/// What targets that ended alike share: a result without its app id, task and duration.
#[derive(PartialEq, Eq, Hash)]
struct GroupKey {
    state: String,
    exit_code: Option<i32>,
    stdout: (String, Option<Encoding>),
    stderr: (String, Option<Encoding>),
    result: String,
    error: Option<String>,
}

impl GroupKey {
    fn of(r: JobResult) -> Self {
        GroupKey {
            state: r.state,
            exit_code: r.exit_code,
            stdout: (r.stdout, r.stdout_encoding),
            stderr: (r.stderr, r.stderr_encoding),
            result: r.result,
            error: r.error,
        }
    }

    /// An empty group of this outcome.
    fn group(&self) -> OutputGroup {
        OutputGroup {
            state: self.state.clone(),
            status: self.state.clone(),
            exit_code: self.exit_code,
            stdout: self.stdout.0.clone(),
            stdout_encoding: self.stdout.1,
            stderr: self.stderr.0.clone(),
            stderr_encoding: self.stderr.1,
            result: self.result.clone(),
            error: self.error.clone(),
            count: 0,
            app_ids: Vec::new(),
        }
    }

    /// An empty group of state `state` and nothing else.
    fn group_as(self, state: &str) -> OutputGroup {
        OutputGroup { state: state.to_owned(), status: state.to_owned(), ..self.group() }
    }
}
