//! The stored layouts of the records and their versions: which layout each record type is
//! written in, and how each older version is read. The store's records that hold protocol
//! types (task states, job states and counts, limits) are written through private mirrors of
//! those types, so a change to the wire cannot change the bytes on disk unnoticed; the records
//! made only of the store's own types are their own layout.
//!
//! The mirrors are `pub` only because they name [`Record::Stored`]; this module is private.
//!
//! To add a field to a record: copy its current layout here as `...V<n>` (frozen), add the field
//! to the layout and the in-memory type, raise `VERSION`, and make `from_older` read version
//! `n` through the frozen copy. Never change a layout whose version was released.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::audit::AgentAuditRecord;
use super::facts::{FactsRecord, FeaturesRecord};
use super::operators::{ApprovedLabels, OperatorRecord};
use super::records::{
    AgentRecord, AuditRecord, JobRecord, OutputState, TargetEnd, TargetRecord, TaskRecord, TokenRecord,
};
use crate::protocol::jobs::{JobCounts, JobState, Limit};
use crate::protocol::{TaskId, TaskStatus};
use crate::server::codec::{CodecError, Record, decode_body};

/// Implements [`Record`] for a store type that is its own stored layout.
macro_rules! own_layout {
    ($($ty:ty => $name:literal, $version:literal;)*) => {$(
        impl Record for $ty {
            const NAME: &'static str = $name;
            const VERSION: u8 = $version;
            type Stored = $ty;

            fn to_stored(&self) -> $ty {
                self.clone()
            }

            fn from_stored(stored: $ty) -> Result<$ty, CodecError> {
                Ok(stored)
            }
        }
    )*};
}

own_layout! {
    AgentRecord => "agent", 1;
    TokenRecord => "token", 1;
    AuditRecord => "audit", 1;
    FactsRecord => "facts", 1;
    FeaturesRecord => "agent features", 1;
    AgentAuditRecord => "agent audit", 1;
    OperatorRecord => "operator", 1;
    ApprovedLabels => "approved labels", 1;
}

/// [`TaskStatus`] as stored: variants in the order of version 1, never reordered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum StoredTaskStatus {
    Queued,
    Delivered,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Expired,
    Lost,
}

impl From<TaskStatus> for StoredTaskStatus {
    fn from(status: TaskStatus) -> Self {
        match status {
            TaskStatus::Queued => StoredTaskStatus::Queued,
            TaskStatus::Delivered => StoredTaskStatus::Delivered,
            TaskStatus::Running => StoredTaskStatus::Running,
            TaskStatus::Succeeded => StoredTaskStatus::Succeeded,
            TaskStatus::Failed => StoredTaskStatus::Failed,
            TaskStatus::TimedOut => StoredTaskStatus::TimedOut,
            TaskStatus::Cancelled => StoredTaskStatus::Cancelled,
            TaskStatus::Expired => StoredTaskStatus::Expired,
            TaskStatus::Lost => StoredTaskStatus::Lost,
        }
    }
}

impl From<StoredTaskStatus> for TaskStatus {
    fn from(status: StoredTaskStatus) -> Self {
        match status {
            StoredTaskStatus::Queued => TaskStatus::Queued,
            StoredTaskStatus::Delivered => TaskStatus::Delivered,
            StoredTaskStatus::Running => TaskStatus::Running,
            StoredTaskStatus::Succeeded => TaskStatus::Succeeded,
            StoredTaskStatus::Failed => TaskStatus::Failed,
            StoredTaskStatus::TimedOut => TaskStatus::TimedOut,
            StoredTaskStatus::Cancelled => TaskStatus::Cancelled,
            StoredTaskStatus::Expired => TaskStatus::Expired,
            StoredTaskStatus::Lost => TaskStatus::Lost,
        }
    }
}

/// A task record, version 5: version 4 with the number of its current delivery.
#[derive(Serialize, Deserialize)]
pub struct StoredTask {
    id: TaskId,
    app_id: String,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    secret_names: BTreeSet<String>,
    stdin: Vec<u8>,
    status: StoredTaskStatus,
    timeout_secs: u64,
    expires_ms: i64,
    history: Vec<(StoredTaskStatus, i64)>,
    queue_seq: u64,
    ack_required: bool,
    deadline_ms: i64,
    cancel_requested: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
    output: OutputState,
    attempt: u32,
}

/// A task record, version 4 (frozen): version 3 with the user its process runs as.
#[derive(Serialize, Deserialize)]
pub struct StoredTaskV4 {
    id: TaskId,
    app_id: String,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    secret_names: BTreeSet<String>,
    stdin: Vec<u8>,
    status: StoredTaskStatus,
    timeout_secs: u64,
    expires_ms: i64,
    history: Vec<(StoredTaskStatus, i64)>,
    queue_seq: u64,
    ack_required: bool,
    deadline_ms: i64,
    cancel_requested: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
    output: OutputState,
}

/// A task record, version 3 (frozen): version 2 with the names of its secret environment
/// variables and the bytes of its standard input.
#[derive(Serialize, Deserialize)]
pub struct StoredTaskV3 {
    id: TaskId,
    app_id: String,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    secret_names: BTreeSet<String>,
    stdin: Vec<u8>,
    status: StoredTaskStatus,
    timeout_secs: u64,
    expires_ms: i64,
    history: Vec<(StoredTaskStatus, i64)>,
    queue_seq: u64,
    ack_required: bool,
    deadline_ms: i64,
    cancel_requested: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
    output: OutputState,
}

/// A task record, version 2: version 1 and the task's environment and working directory; frozen.
#[derive(Serialize, Deserialize)]
pub struct StoredTaskV2 {
    id: TaskId,
    app_id: String,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    status: StoredTaskStatus,
    timeout_secs: u64,
    expires_ms: i64,
    history: Vec<(StoredTaskStatus, i64)>,
    queue_seq: u64,
    ack_required: bool,
    deadline_ms: i64,
    cancel_requested: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
    output: OutputState,
}

/// A task record, version 1 (orange 0.1.0); frozen.
#[derive(Serialize, Deserialize)]
pub struct StoredTaskV1 {
    id: TaskId,
    app_id: String,
    task_type: String,
    payload: String,
    status: StoredTaskStatus,
    timeout_secs: u64,
    expires_ms: i64,
    history: Vec<(StoredTaskStatus, i64)>,
    queue_seq: u64,
    ack_required: bool,
    deadline_ms: i64,
    cancel_requested: bool,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
    output: OutputState,
}

impl From<StoredTaskV1> for StoredTaskV2 {
    fn from(v1: StoredTaskV1) -> Self {
        StoredTaskV2 {
            id: v1.id,
            app_id: v1.app_id,
            task_type: v1.task_type,
            payload: v1.payload,
            env: BTreeMap::new(),
            cwd: None,
            status: v1.status,
            timeout_secs: v1.timeout_secs,
            expires_ms: v1.expires_ms,
            history: v1.history,
            queue_seq: v1.queue_seq,
            ack_required: v1.ack_required,
            deadline_ms: v1.deadline_ms,
            cancel_requested: v1.cancel_requested,
            exit_code: v1.exit_code,
            error: v1.error,
            duration_ms: v1.duration_ms,
            output: v1.output,
        }
    }
}

impl From<StoredTaskV2> for StoredTaskV3 {
    fn from(v2: StoredTaskV2) -> Self {
        StoredTaskV3 {
            id: v2.id,
            app_id: v2.app_id,
            task_type: v2.task_type,
            payload: v2.payload,
            env: v2.env,
            cwd: v2.cwd,
            secret_names: BTreeSet::new(),
            stdin: Vec::new(),
            status: v2.status,
            timeout_secs: v2.timeout_secs,
            expires_ms: v2.expires_ms,
            history: v2.history,
            queue_seq: v2.queue_seq,
            ack_required: v2.ack_required,
            deadline_ms: v2.deadline_ms,
            cancel_requested: v2.cancel_requested,
            exit_code: v2.exit_code,
            error: v2.error,
            duration_ms: v2.duration_ms,
            output: v2.output,
        }
    }
}

impl From<StoredTaskV3> for StoredTaskV4 {
    /// A task of version 3 ran as its agent's own user.
    fn from(v3: StoredTaskV3) -> Self {
        StoredTaskV4 {
            id: v3.id,
            app_id: v3.app_id,
            task_type: v3.task_type,
            payload: v3.payload,
            env: v3.env,
            cwd: v3.cwd,
            user: None,
            secret_names: v3.secret_names,
            stdin: v3.stdin,
            status: v3.status,
            timeout_secs: v3.timeout_secs,
            expires_ms: v3.expires_ms,
            history: v3.history,
            queue_seq: v3.queue_seq,
            ack_required: v3.ack_required,
            deadline_ms: v3.deadline_ms,
            cancel_requested: v3.cancel_requested,
            exit_code: v3.exit_code,
            error: v3.error,
            duration_ms: v3.duration_ms,
            output: v3.output,
        }
    }
}

impl From<StoredTaskV4> for StoredTask {
    /// The attempt of a task of version 4 is the number of times its history shows it handed
    /// out.
    fn from(v4: StoredTaskV4) -> Self {
        let handed_out = v4.history.iter().filter(|(s, _)| matches!(s, StoredTaskStatus::Delivered)).count();
        StoredTask {
            id: v4.id,
            app_id: v4.app_id,
            task_type: v4.task_type,
            payload: v4.payload,
            env: v4.env,
            cwd: v4.cwd,
            user: v4.user,
            secret_names: v4.secret_names,
            stdin: v4.stdin,
            status: v4.status,
            timeout_secs: v4.timeout_secs,
            expires_ms: v4.expires_ms,
            history: v4.history,
            queue_seq: v4.queue_seq,
            ack_required: v4.ack_required,
            deadline_ms: v4.deadline_ms,
            cancel_requested: v4.cancel_requested,
            exit_code: v4.exit_code,
            error: v4.error,
            duration_ms: v4.duration_ms,
            output: v4.output,
            attempt: u32::try_from(handed_out).unwrap_or(u32::MAX),
        }
    }
}

impl Record for TaskRecord {
    const NAME: &'static str = "task";
    const VERSION: u8 = 5;
    type Stored = StoredTask;

    fn to_stored(&self) -> StoredTask {
        StoredTask {
            id: self.id,
            app_id: self.app_id.clone(),
            task_type: self.task_type.clone(),
            payload: self.payload.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            secret_names: self.secret_names.clone(),
            stdin: self.stdin.clone(),
            status: self.status.into(),
            timeout_secs: self.timeout_secs,
            expires_ms: self.expires_ms,
            history: self.history.iter().map(|&(s, at)| (s.into(), at)).collect(),
            queue_seq: self.queue_seq,
            ack_required: self.ack_required,
            deadline_ms: self.deadline_ms,
            cancel_requested: self.cancel_requested,
            exit_code: self.exit_code,
            error: self.error.clone(),
            duration_ms: self.duration_ms,
            output: self.output.clone(),
            attempt: self.attempt,
        }
    }

    fn from_stored(s: StoredTask) -> Result<TaskRecord, CodecError> {
        Ok(TaskRecord {
            id: s.id,
            app_id: s.app_id,
            task_type: s.task_type,
            payload: s.payload,
            env: s.env,
            cwd: s.cwd,
            user: s.user,
            secret_names: s.secret_names,
            stdin: s.stdin,
            status: s.status.into(),
            timeout_secs: s.timeout_secs,
            expires_ms: s.expires_ms,
            history: s.history.into_iter().map(|(st, at)| (st.into(), at)).collect(),
            queue_seq: s.queue_seq,
            ack_required: s.ack_required,
            deadline_ms: s.deadline_ms,
            cancel_requested: s.cancel_requested,
            exit_code: s.exit_code,
            error: s.error,
            duration_ms: s.duration_ms,
            output: s.output,
            attempt: s.attempt,
        })
    }

    fn from_older(version: u8, body: &[u8]) -> Option<Result<TaskRecord, CodecError>> {
        match version {
            1 => Some(decode_body::<StoredTaskV1>(body).and_then(|v1| {
                let v3: StoredTaskV3 = StoredTaskV2::from(v1).into();
                Self::from_stored(StoredTaskV4::from(v3).into())
            })),
            2 => Some(decode_body::<StoredTaskV2>(body).and_then(|v2| {
                let v3: StoredTaskV3 = v2.into();
                Self::from_stored(StoredTaskV4::from(v3).into())
            })),
            3 => Some(
                decode_body::<StoredTaskV3>(body)
                    .and_then(|v3| Self::from_stored(StoredTaskV4::from(v3).into())),
            ),
            4 => Some(decode_body::<StoredTaskV4>(body).and_then(|v4| Self::from_stored(v4.into()))),
            _ => None,
        }
    }
}

/// [`JobState`] as stored: variants in the order of version 1, never reordered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum StoredJobState {
    Running,
    Paused,
    Stopped,
    Cancelled,
    Finished,
}

impl From<JobState> for StoredJobState {
    fn from(state: JobState) -> Self {
        match state {
            JobState::Running => StoredJobState::Running,
            JobState::Paused => StoredJobState::Paused,
            JobState::Stopped => StoredJobState::Stopped,
            JobState::Cancelled => StoredJobState::Cancelled,
            JobState::Finished => StoredJobState::Finished,
        }
    }
}

impl From<StoredJobState> for JobState {
    fn from(state: StoredJobState) -> Self {
        match state {
            StoredJobState::Running => JobState::Running,
            StoredJobState::Paused => JobState::Paused,
            StoredJobState::Stopped => JobState::Stopped,
            StoredJobState::Cancelled => JobState::Cancelled,
            StoredJobState::Finished => JobState::Finished,
        }
    }
}

/// Expands to a stored mirror of [`JobCounts`] with `$field`s and the conversions, field by
/// field (a field the mirror lacks reads as 0).
macro_rules! job_counts {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize)]
        pub struct $name {
            $($field: u32,)*
        }

        impl From<&JobCounts> for $name {
            fn from(c: &JobCounts) -> Self {
                $name { $($field: c.$field,)* }
            }
        }

        impl From<$name> for JobCounts {
            #[allow(clippy::needless_update)] // the last version names every field
            fn from(c: $name) -> Self {
                JobCounts { $($field: c.$field,)* ..JobCounts::default() }
            }
        }
    };
}

job_counts!(
    /// [`JobCounts`] as stored in version 1 of a job (frozen).
    StoredJobCountsV1 {
        waiting, queued, delivered, running, succeeded, failed, timed_out, cancelled, expired, lost, skipped
    }
);

job_counts!(
    /// [`JobCounts`] as stored: the fields of version 1, then `offline` (version 2).
    StoredJobCounts {
        waiting, queued, delivered, running, succeeded, failed, timed_out, cancelled, expired, lost, skipped,
        offline
    }
);

/// A job record, version 4: version 3 with the user its tasks run as.
#[derive(Serialize, Deserialize)]
pub struct StoredJob {
    id: TaskId,
    created_ms: i64,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    user: Option<String>,
    secret_names: BTreeSet<String>,
    timeout_secs: u64,
    ttl_secs: u64,
    max_concurrency: Option<String>,
    max_errors: Option<String>,
    window: u32,
    error_limit: Option<u32>,
    targets: u32,
    next: u32,
    state: StoredJobState,
    counts: StoredJobCounts,
    version: u64,
    done_ms: i64,
    host_timeout_secs: u64,
    queue: bool,
    retry_of: Option<TaskId>,
}

/// A job record, version 3 (frozen): version 2 with the names of its secret environment
/// variables and the job it retries.
#[derive(Serialize, Deserialize)]
pub struct StoredJobV3 {
    id: TaskId,
    created_ms: i64,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    secret_names: BTreeSet<String>,
    timeout_secs: u64,
    ttl_secs: u64,
    max_concurrency: Option<String>,
    max_errors: Option<String>,
    window: u32,
    error_limit: Option<u32>,
    targets: u32,
    next: u32,
    state: StoredJobState,
    counts: StoredJobCounts,
    version: u64,
    done_ms: i64,
    host_timeout_secs: u64,
    queue: bool,
    retry_of: Option<TaskId>,
}

/// A job record, version 2 (frozen): version 1 with its tasks' environment and working directory, the
/// `offline` count, the host timeout and `queue`. Limits are kept as operators write them
/// (`10`, `10%`).
#[derive(Serialize, Deserialize)]
pub struct StoredJobV2 {
    id: TaskId,
    created_ms: i64,
    task_type: String,
    payload: String,
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    timeout_secs: u64,
    ttl_secs: u64,
    max_concurrency: Option<String>,
    max_errors: Option<String>,
    window: u32,
    error_limit: Option<u32>,
    targets: u32,
    next: u32,
    state: StoredJobState,
    counts: StoredJobCounts,
    version: u64,
    done_ms: i64,
    host_timeout_secs: u64,
    queue: bool,
}

/// A job record, version 1 (orange 0.1.0); frozen.
#[derive(Serialize, Deserialize)]
pub struct StoredJobV1 {
    id: TaskId,
    created_ms: i64,
    task_type: String,
    payload: String,
    timeout_secs: u64,
    ttl_secs: u64,
    max_concurrency: Option<String>,
    max_errors: Option<String>,
    window: u32,
    error_limit: Option<u32>,
    targets: u32,
    next: u32,
    state: StoredJobState,
    counts: StoredJobCountsV1,
    version: u64,
    done_ms: i64,
}

impl From<StoredJobV1> for StoredJobV2 {
    /// A job of version 1 had no environment, working directory, host timeout (0: none) or
    /// offline targets.
    fn from(v1: StoredJobV1) -> Self {
        StoredJobV2 {
            id: v1.id,
            created_ms: v1.created_ms,
            task_type: v1.task_type,
            payload: v1.payload,
            env: BTreeMap::new(),
            cwd: None,
            timeout_secs: v1.timeout_secs,
            ttl_secs: v1.ttl_secs,
            max_concurrency: v1.max_concurrency,
            max_errors: v1.max_errors,
            window: v1.window,
            error_limit: v1.error_limit,
            targets: v1.targets,
            next: v1.next,
            state: v1.state,
            counts: (&JobCounts::from(v1.counts)).into(),
            version: v1.version,
            done_ms: v1.done_ms,
            host_timeout_secs: 0,
            queue: false,
        }
    }
}

impl From<StoredJobV2> for StoredJobV3 {
    /// A job of version 2 retried no other job.
    fn from(v2: StoredJobV2) -> Self {
        StoredJobV3 {
            id: v2.id,
            created_ms: v2.created_ms,
            task_type: v2.task_type,
            payload: v2.payload,
            env: v2.env,
            cwd: v2.cwd,
            timeout_secs: v2.timeout_secs,
            ttl_secs: v2.ttl_secs,
            max_concurrency: v2.max_concurrency,
            max_errors: v2.max_errors,
            window: v2.window,
            error_limit: v2.error_limit,
            targets: v2.targets,
            next: v2.next,
            state: v2.state,
            counts: v2.counts,
            version: v2.version,
            done_ms: v2.done_ms,
            host_timeout_secs: v2.host_timeout_secs,
            queue: v2.queue,
            secret_names: BTreeSet::new(),
            retry_of: None,
        }
    }
}

impl From<StoredJobV3> for StoredJob {
    /// A job of version 3 ran its tasks as each agent's own user.
    fn from(v3: StoredJobV3) -> Self {
        StoredJob {
            id: v3.id,
            created_ms: v3.created_ms,
            task_type: v3.task_type,
            payload: v3.payload,
            env: v3.env,
            cwd: v3.cwd,
            user: None,
            secret_names: v3.secret_names,
            timeout_secs: v3.timeout_secs,
            ttl_secs: v3.ttl_secs,
            max_concurrency: v3.max_concurrency,
            max_errors: v3.max_errors,
            window: v3.window,
            error_limit: v3.error_limit,
            targets: v3.targets,
            next: v3.next,
            state: v3.state,
            counts: v3.counts,
            version: v3.version,
            done_ms: v3.done_ms,
            host_timeout_secs: v3.host_timeout_secs,
            queue: v3.queue,
            retry_of: v3.retry_of,
        }
    }
}

fn limit_from(text: Option<String>) -> Result<Option<Limit>, CodecError> {
    text.map(|t| Limit::parse(&t).map_err(|e| CodecError::Corrupt(format!("stored job limit: {e}"))))
        .transpose()
}

impl Record for JobRecord {
    const NAME: &'static str = "job";
    const VERSION: u8 = 4;
    type Stored = StoredJob;

    fn to_stored(&self) -> StoredJob {
        StoredJob {
            id: self.id,
            created_ms: self.created_ms,
            task_type: self.task_type.clone(),
            payload: self.payload.clone(),
            env: self.env.clone(),
            cwd: self.cwd.clone(),
            user: self.user.clone(),
            timeout_secs: self.timeout_secs,
            ttl_secs: self.ttl_secs,
            max_concurrency: self.max_concurrency.map(|l| l.to_string()),
            max_errors: self.max_errors.map(|l| l.to_string()),
            window: self.window,
            error_limit: self.error_limit,
            targets: self.targets,
            next: self.next,
            state: self.state.into(),
            counts: (&self.counts).into(),
            version: self.version,
            done_ms: self.done_ms,
            host_timeout_secs: self.host_timeout_secs,
            queue: self.queue,
            secret_names: self.secret_names.clone(),
            retry_of: self.retry_of,
        }
    }

    fn from_stored(s: StoredJob) -> Result<JobRecord, CodecError> {
        Ok(JobRecord {
            id: s.id,
            created_ms: s.created_ms,
            task_type: s.task_type,
            payload: s.payload,
            env: s.env,
            cwd: s.cwd,
            user: s.user,
            timeout_secs: s.timeout_secs,
            ttl_secs: s.ttl_secs,
            max_concurrency: limit_from(s.max_concurrency)?,
            max_errors: limit_from(s.max_errors)?,
            window: s.window,
            error_limit: s.error_limit,
            targets: s.targets,
            next: s.next,
            state: s.state.into(),
            counts: s.counts.into(),
            version: s.version,
            done_ms: s.done_ms,
            host_timeout_secs: s.host_timeout_secs,
            queue: s.queue,
            secret_names: s.secret_names,
            retry_of: s.retry_of,
        })
    }

    fn from_older(version: u8, body: &[u8]) -> Option<Result<JobRecord, CodecError>> {
        match version {
            1 => Some(decode_body::<StoredJobV1>(body).and_then(|v1| {
                let v3: StoredJobV3 = StoredJobV2::from(v1).into();
                Self::from_stored(v3.into())
            })),
            2 => Some(decode_body::<StoredJobV2>(body).and_then(|v2| {
                let v3: StoredJobV3 = v2.into();
                Self::from_stored(v3.into())
            })),
            3 => Some(decode_body::<StoredJobV3>(body).and_then(|v3| Self::from_stored(v3.into()))),
            _ => None,
        }
    }
}

/// A job target, version 1 (frozen).
#[derive(Serialize, Deserialize)]
pub struct StoredTargetV1 {
    app_id: String,
    task_id: Option<TaskId>,
    end: Option<StoredTargetEnd>,
}

/// A job target, version 2: version 1 with when its agent was last seen, for a target that
/// ended `offline` without a task.
#[derive(Serialize, Deserialize)]
pub struct StoredTarget {
    app_id: String,
    task_id: Option<TaskId>,
    end: Option<StoredTargetEnd>,
    offline_since_ms: Option<i64>,
}

/// How a target's task ended, as stored in version 1 of a target.
#[derive(Serialize, Deserialize)]
pub struct StoredTargetEnd {
    status: StoredTaskStatus,
    exit_code: Option<i32>,
    error: Option<String>,
    duration_ms: Option<u64>,
}

impl Record for TargetRecord {
    const NAME: &'static str = "job target";
    const VERSION: u8 = 2;
    type Stored = StoredTarget;

    fn from_older(version: u8, body: &[u8]) -> Option<Result<Self, CodecError>> {
        (version == 1).then(|| {
            let v: StoredTargetV1 = decode_body(body)?;
            Self::from_stored(StoredTarget {
                app_id: v.app_id,
                task_id: v.task_id,
                end: v.end,
                offline_since_ms: None,
            })
        })
    }

    fn to_stored(&self) -> StoredTarget {
        let end = self.end.as_ref().map(|e| StoredTargetEnd {
            status: e.status.into(),
            exit_code: e.exit_code,
            error: e.error.clone(),
            duration_ms: e.duration_ms,
        });
        StoredTarget {
            app_id: self.app_id.clone(),
            task_id: self.task_id,
            end,
            offline_since_ms: self.offline_since_ms,
        }
    }

    fn from_stored(s: StoredTarget) -> Result<TargetRecord, CodecError> {
        let end = s.end.map(|e| TargetEnd {
            status: e.status.into(),
            exit_code: e.exit_code,
            error: e.error,
            duration_ms: e.duration_ms,
        });
        Ok(TargetRecord { app_id: s.app_id, task_id: s.task_id, end, offline_since_ms: s.offline_since_ms })
    }
}
