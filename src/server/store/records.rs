//! The values the store keeps, as the rest of the server sees them: agents, tasks (with their
//! deadline and output bookkeeping), jobs and their targets, and what an agent's report says.
//! How each is written to disk (its layout and version) is in `stored.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::protocol::jobs::{JobCounts, JobState, Limit};
use crate::protocol::{TaskId, TaskStatus};

/// A registered agent.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    /// App id.
    pub app_id: String,
    /// The secret it signs with.
    pub secret: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Agent version, if it said (the original client does not).
    pub version: Option<String>,
    /// Host name, if it said.
    pub hostname: Option<String>,
    /// Unix milliseconds of the first registration.
    pub registered_at_ms: i64,
    /// Unix milliseconds of its last request.
    pub last_seen_ms: i64,
    /// Tasks it has finished.
    pub processed_task_count: u64,
    /// Whether it may take tasks.
    pub status: AgentStatus,
}

/// Where an agent stands with the operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentStatus {
    /// Registered without an enrollment credential: waits for `orange agents accept`.
    Pending,
    /// Enrolled: takes tasks.
    Accepted,
    /// Reset by an operator: its secret is gone; the app id may enroll again with a new one.
    Forgotten,
}

impl AgentStatus {
    /// The lowercase name shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Pending => "pending",
            AgentStatus::Accepted => "accepted",
            AgentStatus::Forgotten => "forgotten",
        }
    }
}

/// An enrollment token: lets agents enroll without the server's key, a limited number of times
/// until it expires or is revoked.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    /// Public id (sent in a header by the enrolling agent).
    pub id: String,
    /// Secret the enrolling agent signs `register` with.
    pub secret: String,
    /// Unix milliseconds of creation.
    pub created_ms: i64,
    /// Unix milliseconds after which it no longer works.
    pub expires_ms: i64,
    /// Enrollments left.
    pub uses_left: u32,
    /// Revoked by an operator.
    pub revoked: bool,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord").field("id", &self.id).field("secret", &"***").finish_non_exhaustive()
    }
}

/// One entry of the audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditRecord {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who: `admin@<address>` for an operator, `agent:<app id>` for an enrolling agent.
    pub actor: String,
    /// What, e.g. `task.send`, `agent.accept`, `token.create`, `agent.enroll`.
    pub action: String,
    /// On what: a task id, an app id, a token id.
    pub target: String,
    /// More, e.g. the task type and payload size, or how the agent enrolled.
    pub detail: String,
}

impl std::fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRecord")
            .field("app_id", &self.app_id)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// A task and everything known about it except its output chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// The agent it is for.
    pub app_id: String,
    /// Task type.
    pub task_type: String,
    /// Input.
    pub payload: String,
    /// Environment variables added to its process (feature `env`).
    pub env: BTreeMap<String, String>,
    /// Working directory of its process (feature `cwd`).
    pub cwd: Option<String>,
    /// User its process runs as (feature `user`; `None`: the agent's own user).
    pub user: Option<String>,
    /// Names of the `env` entries whose values are secret: never shown, and dropped from the
    /// record when the task ends (the names stay).
    pub secret_names: BTreeSet<String>,
    /// Bytes written to its process's standard input (feature `stdin`; empty: none).
    pub stdin: Vec<u8>,
    /// Current state.
    pub status: TaskStatus,
    /// Seconds the agent may run it.
    pub timeout_secs: u64,
    /// Unix milliseconds after which it ends `expired` if it was never delivered.
    pub expires_ms: i64,
    /// Each state reached, with Unix milliseconds.
    pub history: Vec<(TaskStatus, i64)>,
    /// Position in its agent's queue (kept, so a lost delivery goes back to the same place).
    pub queue_seq: u64,
    /// Handed to an orange agent, which must acknowledge it with a `doing` report.
    pub ack_required: bool,
    /// The deadline indexed in the `deadlines` tree (0: none): queue expiry, ack window, or
    /// the end of the run (timeout plus grace).
    pub deadline_ms: i64,
    /// An operator asked to cancel it; its agent has not confirmed yet.
    pub cancel_requested: bool,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Why it failed without running, or how it ended.
    pub error: Option<String>,
    /// Run time the agent measured.
    pub duration_ms: Option<u64>,
    /// Output bookkeeping.
    pub output: OutputState,
    /// The number of its current delivery: 1 once handed out, one more each time it is handed
    /// out again (0: never handed out). The fence of its lease: a report or output chunk that
    /// names an earlier delivery comes from a holder that was superseded, and is refused.
    /// Records stored before it existed count each `delivered` of their history (which may be
    /// more than the hand-outs; their agents name no delivery).
    pub attempt: u32,
}

/// Where a task's output chunks stand: the head is kept whole up to half the cap; after it,
/// only the newest chunks up to the other half (the tail) are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OutputState {
    /// Number of the next chunk expected.
    pub next_seq: u32,
    /// Bytes kept in the head.
    pub head_bytes: u64,
    /// First chunk number past the head (`None` while everything fits in the head).
    pub tail_start: Option<u32>,
    /// Oldest tail chunk still stored.
    pub tail_oldest: u32,
    /// Bytes kept in the tail.
    pub tail_bytes: u64,
    /// Bytes dropped between head and tail.
    pub dropped_bytes: u64,
}

impl TaskRecord {
    /// A new queued task.
    pub fn new(spec: TaskSpec<'_>, id: TaskId, now_ms: i64) -> Self {
        TaskRecord {
            id,
            app_id: spec.app_id.to_owned(),
            task_type: spec.task_type.to_owned(),
            payload: spec.payload.to_owned(),
            env: spec.env.clone(),
            cwd: spec.cwd.map(str::to_owned),
            user: spec.user.map(str::to_owned),
            secret_names: BTreeSet::new(),
            stdin: spec.stdin.to_vec(),
            status: TaskStatus::Queued,
            timeout_secs: spec.timeout_secs,
            expires_ms: now_ms.saturating_add(secs_to_ms(spec.ttl_secs)),
            history: vec![(TaskStatus::Queued, now_ms)],
            queue_seq: 0,
            ack_required: false,
            deadline_ms: 0,
            cancel_requested: false,
            exit_code: None,
            error: None,
            duration_ms: None,
            output: OutputState::default(),
            attempt: 0,
        }
    }

    /// Unix milliseconds at which the task was created.
    pub fn created_ms(&self) -> i64 {
        self.history.first().map_or(0, |(_, t)| *t)
    }

    /// Unix milliseconds at which the task reached a final state.
    pub fn finished_ms(&self) -> Option<i64> {
        self.status.is_final().then(|| self.history.last().map_or(0, |(_, t)| *t))
    }

    /// The features an agent must have announced to be given this task.
    pub fn required_features(&self) -> Vec<&'static str> {
        crate::protocol::features::TaskAsks {
            task_type: &self.task_type,
            env: &self.env,
            cwd: self.cwd.as_deref(),
            stdin: &self.stdin,
            user: self.user.as_deref(),
        }
        .required()
    }

    /// Moves to `status`, recording when.
    pub fn move_to(&mut self, status: TaskStatus, now_ms: i64) {
        self.status = status;
        self.history.push((status, now_ms));
    }
}

/// What an enqueue asks for, per target agent.
#[derive(Debug, Clone, Copy)]
pub struct TaskSpec<'a> {
    /// The agent.
    pub app_id: &'a str,
    /// Task type.
    pub task_type: &'a str,
    /// Input.
    pub payload: &'a str,
    /// Environment variables added to its process.
    pub env: &'a BTreeMap<String, String>,
    /// Working directory of its process.
    pub cwd: Option<&'a str>,
    /// User its process runs as.
    pub user: Option<&'a str>,
    /// Bytes for its process's standard input (empty: none).
    pub stdin: &'a [u8],
    /// Seconds the agent may run it.
    pub timeout_secs: u64,
    /// Seconds it may wait in the queue.
    pub ttl_secs: u64,
}

/// Seconds as milliseconds, saturating.
pub fn secs_to_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// The captured output streams of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
    /// The original protocol's free-form result text.
    Result = 2,
}

impl Stream {
    /// The stream stored under tag byte `tag`.
    pub fn from_tag(tag: u8) -> Option<Stream> {
        match tag {
            0 => Some(Stream::Stdout),
            1 => Some(Stream::Stderr),
            2 => Some(Stream::Result),
            _ => None,
        }
    }

    /// The stream named on the wire (`stdout`, `stderr`).
    pub fn from_name(name: &str) -> Option<Stream> {
        match name {
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Result => "result",
        }
    }
}

/// What an agent reported about a task.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state the task moves to.
    pub status: TaskStatus,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Why it failed without running.
    pub error: Option<String>,
    /// Run time.
    pub duration_ms: Option<u64>,
    /// Output carried by the report itself (agents that did not stream it).
    pub output: Vec<(Stream, Vec<u8>)>,
    /// The delivery the sender holds (orange agents); an earlier one than the task's current
    /// delivery is refused ([`TaskRecord::attempt`]).
    pub attempt: Option<u32>,
}

/// The time limits and sizes the store applies.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long an orange agent has to acknowledge a delivery before it is handed out again.
    pub ack_window_ms: i64,
    /// Added to a task's timeout before a silent task ends `lost`.
    pub lost_grace_ms: i64,
    /// Most output bytes kept per task (half head, half tail).
    pub output_cap: u64,
    /// The database is compacted only when larger than this (and than 4 times its size after
    /// the last compaction).
    pub compact_min_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            ack_window_ms: 30_000,
            lost_grace_ms: 60_000,
            output_cap: 16 * 1024 * 1024,
            compact_min_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A job: one command for many agents, started in a sliding window. Its targets are stored one
/// per record in `job_targets`, so this value stays small whatever the number of targets.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// Job id (a UUID v7 like task ids, so keys sort by creation).
    pub id: TaskId,
    /// Unix milliseconds of creation.
    pub created_ms: i64,
    /// Task type of every task.
    pub task_type: String,
    /// Input of every task (at most the payload limit, 64 KiB).
    pub payload: String,
    /// Environment variables added to every task's process.
    pub env: BTreeMap<String, String>,
    /// Working directory of every task's process.
    pub cwd: Option<String>,
    /// User every task's process runs as (`None`: each agent's own user).
    pub user: Option<String>,
    /// Names of the `env` entries whose values are secret: never shown, and dropped from the
    /// record when the job is done (the names stay).
    pub secret_names: BTreeSet<String>,
    /// Seconds each agent may run it.
    pub timeout_secs: u64,
    /// Seconds each task may wait in its agent's queue.
    pub ttl_secs: u64,
    /// The window as asked.
    pub max_concurrency: Option<Limit>,
    /// The error limit as asked.
    pub max_errors: Option<Limit>,
    /// Most tasks open at once (resolved, at least 1).
    pub window: u32,
    /// Most errors before the job stops (resolved); none when absent.
    pub error_limit: Option<u32>,
    /// Number of targets.
    pub targets: u32,
    /// Index of the next target to start.
    pub next: u32,
    /// Where the job stands.
    pub state: JobState,
    /// Targets per state.
    pub counts: JobCounts,
    /// Grows by one at every change.
    pub version: u64,
    /// Unix milliseconds at which the last task ended (0 while not done).
    pub done_ms: i64,
    /// Seconds a task may wait on a silent agent before it ends (0: no limit).
    pub host_timeout_secs: u64,
    /// Sent with `queue`: tasks wait in offline agents' queues (within the TTL), so the host
    /// timeout applies only once a task was handed out.
    pub queue: bool,
    /// The job this one runs again (`orange job retry`), if any.
    pub retry_of: Option<TaskId>,
}

/// One target of a job: its agent, its task once started, and how that task ended (kept here so
/// the job's results outlive the task's retention).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetRecord {
    /// The agent.
    pub app_id: String,
    /// Its task, once started.
    pub task_id: Option<TaskId>,
    /// How the task ended, once it has.
    pub end: Option<TargetEnd>,
    /// Its agent was offline when the job started (last seen then): it ended `offline`,
    /// without a task.
    pub offline_since_ms: Option<i64>,
}

/// The final state of a target's task.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetEnd {
    /// Final state.
    pub status: TaskStatus,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Error text (its first 1 KiB, `TARGET_ERROR_LEN`).
    pub error: Option<String>,
    /// Run time the agent measured.
    pub duration_ms: Option<u64>,
}

/// Most bytes of a task's error text a target record keeps.
pub const TARGET_ERROR_LEN: usize = 1024;
