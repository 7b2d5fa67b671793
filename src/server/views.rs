//! Records as their readers see them: the operator API's views of tasks, agents, jobs and
//! tokens, and the task object getTask hands out (audit entries are mapped by `audit.rs`). Only task views read the store (for
//! their output); the others are plain mappings.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::clock::rfc3339;
use super::presence::Liveness;
use super::store::{AgentRecord, Chunk, JobRecord, Store, StoreError, TaskRecord, TokenRecord};
use crate::protocol::admin::{AgentView, OutputChunkView, REDACTED, TaskView, TokenView, Transition};
use crate::protocol::bytes;
use crate::protocol::jobs::JobView;
use crate::protocol::wire::WireTask;

/// Most output per stream shown in a task list.
const LIST_OUTPUT_LEN: usize = 4 * 1024;
/// Room above the output cap in a full view, for the original protocol's `result` text.
const FULL_OUTPUT_SLACK: usize = 1024;

/// Builds the operator's views of tasks, with their output read from the store.
pub struct TaskViews {
    store: Arc<Store>,
    full_output: usize,
}

impl TaskViews {
    /// Views over `store`; a full view shows up to `output_cap_bytes` of each stream.
    pub fn new(store: Arc<Store>, output_cap_bytes: u64) -> Self {
        let cap = usize::try_from(output_cap_bytes).unwrap_or(usize::MAX);
        TaskViews { store, full_output: cap.saturating_add(FULL_OUTPUT_SLACK) }
    }

    /// Views for a task list (outputs shortened).
    pub fn list(&self, tasks: &[TaskRecord]) -> Result<Vec<TaskView>, StoreError> {
        tasks.iter().map(|t| self.with_output(t, LIST_OUTPUT_LEN)).collect()
    }

    /// The full view of a task (outputs up to the cap).
    pub fn full(&self, task: &TaskRecord) -> Result<TaskView, StoreError> {
        self.with_output(task, self.full_output)
    }

    /// The view of a task with up to `max_output` bytes of each stream.
    fn with_output(&self, task: &TaskRecord, max_output: usize) -> Result<TaskView, StoreError> {
        let [mut stdout, mut stderr, result] = self.store.output_texts(task, max_output)?;
        for output in [&mut stdout, &mut stderr] {
            if output.len() >= max_output {
                // Shortened here: a character cut at the end must not turn text into base64.
                bytes::trim_cut_character(output);
            }
        }
        let (stdout, stdout_encoding) = bytes::encode_owned(stdout);
        let (stderr, stderr_encoding) = bytes::encode_owned(stderr);
        Ok(TaskView {
            task_id: task.id.to_string(),
            app_id: task.app_id.clone(),
            task_type: task.task_type.clone(),
            payload: task.payload.clone(),
            status: task.status,
            timeout_secs: task.timeout_secs,
            env: shown_env(&task.env, &task.secret_names),
            secret_env: task.secret_names.iter().cloned().collect(),
            cwd: task.cwd.clone(),
            user: task.user.clone(),
            cancel_requested: task.cancel_requested,
            dropped_bytes: task.output.dropped_bytes,
            history: task.history.iter().map(|(s, t)| Transition { status: *s, at: rfc3339(*t) }).collect(),
            exit_code: task.exit_code,
            stdout,
            stdout_encoding,
            stderr,
            stderr_encoding,
            // Text from the original client's JSON (stored as its UTF-8 bytes).
            result: String::from_utf8_lossy(&result).into_owned(),
            error: task.error.clone(),
            duration_ms: task.duration_ms,
        })
    }
}

/// One output chunk as an output page shows it.
pub fn chunk_view(chunk: Chunk) -> OutputChunkView {
    OutputChunkView::new(chunk.seq, chunk.stream.name(), &chunk.data)
}

/// The operator's view of an agent whose presence is `liveness` (without its facts).
pub fn agent_view(agent: &AgentRecord, liveness: Liveness) -> AgentView {
    AgentView {
        app_id: agent.app_id.clone(),
        online: liveness.online,
        last_seen: rfc3339(liveness.last_seen_ms),
        registered_at: rfc3339(agent.registered_at_ms),
        labels: agent.labels.clone(),
        version: agent.version.clone(),
        hostname: agent.hostname.clone(),
        processed_task_count: agent.processed_task_count,
        status: agent.status.as_str().to_owned(),
        facts: None,
        features: Vec::new(),
        approved_labels: Default::default(),
    }
}

/// `env` as views show it: the value of each name in `secret` replaced by [`REDACTED`] (a
/// secret dropped once its task ended is not there any more).
fn shown_env(env: &BTreeMap<String, String>, secret: &BTreeSet<String>) -> BTreeMap<String, String> {
    env.iter()
        .map(|(name, value)| {
            let shown = if secret.contains(name) { REDACTED.to_owned() } else { value.clone() };
            (name.clone(), shown)
        })
        .collect()
}

/// The task object getTask hands out (`task` as just delivered).
pub fn wire_task(task: &TaskRecord) -> WireTask {
    WireTask {
        task_id: task.id.to_string(),
        task_type: task.task_type.clone(),
        do_status: String::new(),
        create_at: rfc3339(task.created_ms()),
        payload: task.payload.clone(),
        result: String::new(),
        timeout_secs: Some(task.timeout_secs),
        env: task.env.clone(),
        cwd: task.cwd.clone(),
        user: task.user.clone(),
        stdin: task.stdin.clone(),
        // Only an orange agent's delivery, which it acknowledges, is numbered for it: an
        // original client sees the task object it knows.
        attempt: task.ack_required.then_some(task.attempt),
        more: Vec::new(),
    }
}

/// The operator's view of a job.
pub fn job_view(job: &JobRecord) -> JobView {
    JobView {
        job_id: job.id.to_string(),
        created_at: rfc3339(job.created_ms),
        state: job.state,
        status: job.state,
        done: job.done_ms != 0,
        task_type: job.task_type.clone(),
        payload: job.payload.clone(),
        timeout_secs: job.timeout_secs,
        env: shown_env(&job.env, &job.secret_names),
        secret_env: job.secret_names.iter().cloned().collect(),
        cwd: job.cwd.clone(),
        user: job.user.clone(),
        max_concurrency: job.max_concurrency,
        max_errors: job.max_errors,
        targets: job.targets,
        counts: job.counts.clone(),
        host_timeout_secs: job.host_timeout_secs,
        retry_of: job.retry_of.map(|id| id.to_string()),
        version: job.version,
    }
}

/// An enrollment token without its secret, its status as of now.
pub fn token_view(token: &TokenRecord) -> TokenView {
    let mut view = TokenView {
        token_id: token.id.clone(),
        token: None,
        created_at: rfc3339(token.created_ms),
        expires_at: rfc3339(token.expires_ms),
        uses_left: token.uses_left,
        revoked: token.revoked,
        status: String::new(),
    };
    view.status = view.status_at(super::clock::now_ms()).to_owned();
    view
}
