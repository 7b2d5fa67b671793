//! The server's operations on agents and tasks, independent of HTTP: register, authenticate,
//! hand out the next task (long poll), take reports and output, enqueue, cancel, wait, and the
//! sweeper that applies deadlines and retention. Each write that is acknowledged waits for
//! [`Store::durable`] first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use thiserror::Error;
use tracing::{info, warn};

use super::ServerConfig;
use super::dispatch::Dispatch;
use super::guard::{FailureLimiter, forget_old_uses};
use super::store::{
    AgentRecord, AgentStatus, Chunk, ChunkAck, Delivery, Outcome, Policy, ReportError, Store, StoreError,
    Stream, TaskRecord, TaskSpec,
};
use crate::protocol::admin::{
    AgentView, EnqueueRequest, ONLINE_WINDOW_SECS, OutputChunkView, OutputPage, TaskView, Transition,
};
use crate::protocol::limits::{
    MAX_ENQUEUE_BYTES, MAX_NAMED_TARGETS, MAX_QUEUED_PER_AGENT, MAX_TIMEOUT_SECS, MAX_TTL_SECS,
};
use crate::protocol::task::new_task_id;
use crate::protocol::wire::{self, OutputChunk, ReportRequest, WireTask};
use crate::protocol::{TaskId, TaskStatus};

/// How stale `last_seen` may get before a request rewrites it.
const TOUCH_GAP_MS: i64 = 5_000;
/// Most output per stream shown in a task list.
const LIST_OUTPUT_LEN: usize = 4 * 1024;
/// Most output bytes one output page carries.
const PAGE_BYTES: usize = 1024 * 1024;
/// How often retention runs (more often when the retention period is shorter than 4 minutes).
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Why an operation was refused; the HTTP layer maps each kind to a status or envelope.
#[derive(Debug, Error)]
pub enum FleetError {
    /// The request is malformed or invalid.
    #[error("{0}")]
    BadRequest(String),
    /// A named agent or task does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A value is over its size limit.
    #[error("{0}")]
    TooLarge(String),
    /// The task is in a state that does not allow it (e.g. already finished).
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReportError> for FleetError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => FleetError::Store(e),
            ReportError::UnknownTask(_) => FleetError::NotFound(e.to_string()),
            ReportError::AlreadyFinished { .. } | ReportError::BadMove { .. } => {
                FleetError::Conflict(e.to_string())
            }
            other => FleetError::BadRequest(other.to_string()),
        }
    }
}

/// What one long poll brings an agent.
#[derive(Debug)]
pub enum PollResult {
    /// A task to run.
    Task(Box<TaskRecord>),
    /// Running tasks the agent must stop.
    Cancels(Vec<TaskId>),
    /// Nothing within the window (or a newer poll replaced this one, or the server stops).
    Empty,
}

/// The store, the wake-ups and the settings: everything a request handler needs.
pub struct Fleet {
    /// The database.
    pub store: Store,
    /// Wake-ups of parked requests.
    pub dispatch: Dispatch,
    /// Server settings.
    pub config: ServerConfig,
    /// Failed signatures per source.
    pub failures: FailureLimiter,
    /// SHA-256 of the admin token (an agent secret must never equal it).
    pub admin_token_hash: [u8; 32],
    /// The key `register` calls are signed with.
    pub enroll_key: String,
}

/// The current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Unix milliseconds as RFC 3339 in UTC, to the millisecond (as the operator API shows times).
pub fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The store policy a configuration asks for.
pub fn policy(config: &ServerConfig) -> Policy {
    Policy {
        ack_window_ms: millis(config.ack_window),
        lost_grace_ms: millis(config.lost_grace),
        output_cap: config.output_cap_bytes,
        compact_min_bytes: config.compact_min_bytes,
    }
}

impl Fleet {
    /// The agent `app_id`, or an error saying it must register (also when an operator forgot it).
    pub fn known_agent(&self, app_id: &str) -> Result<AgentRecord, FleetError> {
        self.store.agent(app_id)?.filter(|a| a.status != AgentStatus::Forgotten).ok_or_else(|| {
            FleetError::NotFound(format!("{} {app_id:?}; register first", wire::UNKNOWN_APP_ID))
        })
    }

    /// Notes that `app_id` is alive.
    pub fn touch(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.store.touch_record(agent, now_ms(), TOUCH_GAP_MS)
    }

    /// Long poll of `app_id`, waiting up to the poll window. `capacity` is what an orange agent
    /// said it can start now (`None` for an original client, which gets neither cancels nor an
    /// acknowledged delivery).
    pub async fn next_task(&self, app_id: &str, capacity: Option<usize>) -> Result<PollResult, StoreError> {
        let poll = self.dispatch.park(app_id);
        let deadline = tokio::time::Instant::now() + self.config.poll_window;
        loop {
            // Registered before the store is read, so an enqueue in between is not missed.
            let woken = poll.slot.signal.notified();
            if poll.superseded() {
                return Ok(PollResult::Empty);
            }
            if let Some(found) = self.poll_once(app_id, capacity)? {
                return Ok(found);
            }
            tokio::select! {
                _ = woken => continue,
                _ = tokio::time::sleep_until(deadline) => return Ok(PollResult::Empty),
                _ = self.dispatch.stopped() => return Ok(PollResult::Empty),
            }
        }
    }

    /// One look at the store for a poll: cancels to tell first, then a task if there is room.
    fn poll_once(&self, app_id: &str, capacity: Option<usize>) -> Result<Option<PollResult>, StoreError> {
        if capacity.is_some() {
            let pending = self.store.pending_cancels(app_id)?;
            let cancels = self.dispatch.cancels_to_tell(pending, Instant::now());
            if !cancels.is_empty() {
                return Ok(Some(PollResult::Cancels(cancels)));
            }
        }
        let delivery = if capacity.is_some() { Delivery::Acknowledged } else { Delivery::Legacy };
        if capacity == Some(0) {
            return Ok(None);
        }
        Ok(self.store.take_next(app_id, delivery, now_ms())?.map(|task| PollResult::Task(Box::new(task))))
    }

    /// Applies a report from `app_id`, makes it durable and wakes waiters.
    pub async fn report(&self, app_id: &str, report: ReportRequest) -> Result<TaskRecord, FleetError> {
        let id = parse_task_id(&report.task_id)?;
        let outcome = outcome_of(report)?;
        let result = self.store.apply_report(app_id, id, &outcome, now_ms());
        // A refused report may still have cleared a pending cancel: sync either way.
        self.store.durable().await?;
        let task = result?;
        self.dispatch.task_changed(id);
        Ok(task)
    }

    /// Stores one streamed output chunk, makes it durable and wakes followers.
    pub async fn store_output(&self, app_id: &str, chunk: OutputChunk) -> Result<ChunkAck, FleetError> {
        let id = parse_task_id(&chunk.task_id)?;
        let stream = Stream::from_name(&chunk.stream).ok_or_else(|| {
            FleetError::BadRequest(format!("stream {:?} is not stdout or stderr", wire::shown(&chunk.stream)))
        })?;
        if chunk.data.len() > wire::MAX_CHUNK_LEN {
            return Err(FleetError::TooLarge(format!(
                "output chunk is {} bytes; the limit is {}",
                chunk.data.len(),
                wire::MAX_CHUNK_LEN
            )));
        }
        let ack = self.store.store_chunk(app_id, id, chunk.seq, stream, chunk.data.as_bytes(), now_ms())?;
        self.store.durable().await?;
        self.dispatch.task_changed(id);
        Ok(ack)
    }

    /// A task's timeout and time to live in seconds: as asked, or the server's defaults, within
    /// their limits.
    pub(super) fn task_times(
        &self,
        timeout_secs: Option<u64>,
        ttl_secs: Option<u64>,
    ) -> Result<(u64, u64), FleetError> {
        let timeout =
            bounded("timeout_secs", timeout_secs, self.config.default_task_timeout, MAX_TIMEOUT_SECS)?;
        let ttl = bounded("ttl_secs", ttl_secs, self.config.default_ttl, MAX_TTL_SECS)?;
        Ok((timeout, ttl))
    }

    /// Creates one task per target agent, makes them durable, then wakes the agents.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<Vec<TaskRecord>, FleetError> {
        check_task_input(&request.task_type, &request.payload)?;
        let (timeout_secs, ttl_secs) = self.task_times(request.timeout_secs, request.ttl_secs)?;
        if request.app_ids.len() > MAX_NAMED_TARGETS {
            return Err(FleetError::TooLarge(format!(
                "{} app ids named; the limit is {MAX_NAMED_TARGETS} (use all for the whole fleet)",
                request.app_ids.len()
            )));
        }
        let targets = self.targets(&request)?;
        if request.payload.len().saturating_mul(targets.len()) > MAX_ENQUEUE_BYTES {
            return Err(FleetError::TooLarge(format!(
                "{} tasks of {} payload bytes exceed the {MAX_ENQUEUE_BYTES} bytes one enqueue may store",
                targets.len(),
                request.payload.len()
            )));
        }
        self.check_queue_room(&targets)?;
        let now = now_ms();
        let mut tasks: Vec<TaskRecord> = targets
            .iter()
            .map(|app_id| {
                let spec = TaskSpec {
                    app_id,
                    task_type: &request.task_type,
                    payload: &request.payload,
                    timeout_secs,
                    ttl_secs,
                };
                TaskRecord::new(spec, new_task_id(), now)
            })
            .collect();
        self.store.enqueue(&mut tasks)?;
        self.store.durable().await?;
        for app_id in &targets {
            self.dispatch.wake_agent(app_id);
        }
        Ok(tasks)
    }

    /// Refuses an enqueue that would take any agent's queue past [`MAX_QUEUED_PER_AGENT`].
    fn check_queue_room(&self, targets: &[String]) -> Result<(), FleetError> {
        let mut adding: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for app_id in targets {
            *adding.entry(app_id).or_default() += 1;
        }
        for (app_id, new) in adding {
            let queued = self.store.queued_count(app_id, MAX_QUEUED_PER_AGENT);
            if queued + new > MAX_QUEUED_PER_AGENT {
                return Err(FleetError::TooLarge(format!(
                    "agent {app_id:?} has {queued} tasks waiting; {new} more would pass the limit of \
                     {MAX_QUEUED_PER_AGENT}; let it catch up or cancel some"
                )));
            }
        }
        Ok(())
    }

    /// Resolves the target agents of an enqueue: named ones must exist.
    fn targets(&self, request: &EnqueueRequest) -> Result<Vec<String>, FleetError> {
        match (request.all, request.app_ids.is_empty()) {
            (true, true) => Ok(self
                .store
                .agents()?
                .into_iter()
                .filter(|a| a.status == AgentStatus::Accepted)
                .map(|a| a.app_id)
                .collect()),
            (false, false) => {
                for app_id in &request.app_ids {
                    wire::check_app_id(app_id).map_err(FleetError::BadRequest)?;
                    match self.store.agent(app_id)?.map(|a| a.status) {
                        Some(AgentStatus::Accepted) => {}
                        Some(AgentStatus::Pending) => {
                            return Err(FleetError::Conflict(format!(
                                "agent {app_id:?} is pending approval; accept it with `orange agents accept {app_id}`"
                            )));
                        }
                        _ => return Err(FleetError::NotFound(format!("unknown agent {app_id:?}"))),
                    }
                }
                Ok(request.app_ids.clone())
            }
            (true, false) => Err(FleetError::BadRequest("give either app_ids or all, not both".into())),
            (false, true) => Err(FleetError::BadRequest("give app_ids or set all".into())),
        }
    }

    /// Cancels task `id` (see [`Store::cancel`]), makes it durable, and tells its agent.
    pub async fn cancel(&self, id: TaskId, force: bool) -> Result<TaskRecord, FleetError> {
        let outcome = self.store.cancel(id, force, now_ms())?;
        self.store.durable().await?;
        if outcome.tell_agent {
            self.dispatch.wake_agent(&outcome.task.app_id);
        }
        self.dispatch.task_changed(id);
        Ok(outcome.task)
    }

    /// The task `id`; with a `wait`, parks until it is final or the wait ends.
    pub async fn wait_task(&self, id: TaskId, wait: Duration) -> Result<TaskRecord, FleetError> {
        self.wait_until(id, wait, |task| Ok(task.status.is_final())).await
    }

    /// Output chunks of `id` from `after` on; with a `wait`, parks until there is one or the
    /// task is final.
    pub async fn output_page(
        &self,
        id: TaskId,
        after: u32,
        wait: Duration,
    ) -> Result<OutputPage, FleetError> {
        let task = self
            .wait_until(id, wait, |task| {
                Ok(task.status.is_final() || !self.store.chunks(task.id, after, 1)?.is_empty())
            })
            .await?;
        let chunks = self.store.chunks(id, after, PAGE_BYTES)?;
        let next = chunks.last().map_or(after, |c| c.seq + 1);
        let done = task.status.is_final() && next >= task.output.next_seq;
        Ok(OutputPage {
            // The original protocol's `result` text is kept with the output but is no stream
            // of the process: the page skips it (its number still advances `next`).
            chunks: chunks.into_iter().filter(|c| c.stream != Stream::Result).map(chunk_view).collect(),
            next,
            done,
            status: task.status,
            dropped_bytes: task.output.dropped_bytes,
        })
    }

    /// Parks until `ready(task)` or the wait ends, re-reading the task on every change.
    async fn wait_until(
        &self,
        id: TaskId,
        wait: Duration,
        ready: impl Fn(&TaskRecord) -> Result<bool, StoreError>,
    ) -> Result<TaskRecord, FleetError> {
        let watch = self.dispatch.watch_task(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = watch.signal.notified();
            let task =
                self.store.task(id)?.ok_or_else(|| FleetError::NotFound(format!("unknown task {id}")))?;
            if ready(&task)? || tokio::time::Instant::now() >= deadline {
                return Ok(task);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.dispatch.stopped() => return Ok(task),
            }
        }
    }

    /// Applies deadlines every sweep interval and retention every minute (or every quarter of
    /// the retention period, if shorter), until the server stops.
    pub async fn sweep_loop(self: Arc<Self>) {
        let mut last_retention = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.config.sweep_interval) => {}
                _ = self.dispatch.stopped() => return,
            }
            if let Err(e) = self.sweep_deadlines().await {
                warn!(error = %e, "deadline sweep failed");
            }
            if last_retention.elapsed() >= RETENTION_INTERVAL.min(self.config.retention / 4) {
                last_retention = tokio::time::Instant::now();
                if let Err(e) = self.sweep_retention() {
                    warn!(error = %e, "retention sweep failed");
                }
                self.compact_if_needed().await;
            }
        }
    }

    /// Applies the deadlines that passed; requeued tasks wake their agent.
    pub async fn sweep_deadlines(&self) -> Result<usize, StoreError> {
        let swept = self.store.sweep_deadlines(now_ms())?;
        if swept.is_empty() {
            return Ok(0);
        }
        self.store.durable().await?;
        for moved in &swept {
            info!(task = %moved.task.id, agent = %moved.task.app_id, status = %moved.task.status, "deadline passed");
            if moved.requeued {
                self.dispatch.wake_agent(&moved.task.app_id);
            }
            self.dispatch.task_changed(moved.task.id);
        }
        Ok(swept.len())
    }

    /// Compacts the database if it is mostly garbage, on a blocking thread (store operations
    /// wait while it copies).
    async fn compact_if_needed(self: &Arc<Self>) {
        let fleet = Arc::clone(self);
        match tokio::task::spawn_blocking(move || fleet.store.compact_if_needed()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "compaction failed"),
            Err(e) => warn!(error = %e, "compaction stopped"),
        }
    }

    /// Removes finished tasks and silent agents older than the retention period.
    pub fn sweep_retention(&self) -> Result<(), StoreError> {
        let cutoff = now_ms() - millis(self.config.retention);
        let mut removed = 0;
        loop {
            let batch = self.store.sweep_finished(cutoff)?;
            removed += batch;
            if batch == 0 {
                break;
            }
        }
        self.sweep_job_retention(cutoff)?;
        forget_old_uses(&self.store, now_ms() / 1000)?;
        let forgotten = self.store.forget_silent_agents(cutoff)?;
        if removed > 0 || !forgotten.is_empty() {
            info!(tasks = removed, agents = forgotten.len(), "retention removed old records");
        }
        Ok(())
    }

    /// The operator's view of a task, with up to `max_output` bytes of each stream.
    pub fn task_view(&self, task: &TaskRecord, max_output: usize) -> Result<TaskView, StoreError> {
        let [stdout, stderr, result] = self.store.output_texts(task, max_output)?;
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ok(TaskView {
            task_id: task.id.to_string(),
            app_id: task.app_id.clone(),
            task_type: task.task_type.clone(),
            payload: task.payload.clone(),
            status: task.status,
            timeout_secs: task.timeout_secs,
            cancel_requested: task.cancel_requested,
            dropped_bytes: task.output.dropped_bytes,
            history: task.history.iter().map(|(s, t)| Transition { status: *s, at: rfc3339(*t) }).collect(),
            exit_code: task.exit_code,
            stdout: text(stdout),
            stderr: text(stderr),
            result: text(result),
            error: task.error.clone(),
            duration_ms: task.duration_ms,
        })
    }

    /// Views for a task list (outputs shortened).
    pub fn list_views(&self, tasks: &[TaskRecord]) -> Result<Vec<TaskView>, StoreError> {
        tasks.iter().map(|t| self.task_view(t, LIST_OUTPUT_LEN)).collect()
    }

    /// The full view of a task (outputs up to the cap).
    pub fn full_view(&self, task: &TaskRecord) -> Result<TaskView, StoreError> {
        self.task_view(task, usize::try_from(self.config.output_cap_bytes).unwrap_or(usize::MAX) + 1024)
    }
}

fn chunk_view(chunk: Chunk) -> OutputChunkView {
    OutputChunkView {
        seq: chunk.seq,
        stream: chunk.stream.name().to_owned(),
        data: String::from_utf8_lossy(&chunk.data).into_owned(),
    }
}

/// Checks a task's type and the size of its payload.
pub(super) fn check_task_input(task_type: &str, payload: &str) -> Result<(), FleetError> {
    crate::protocol::limits::check_task_type(task_type).map_err(FleetError::BadRequest)?;
    if payload.len() > wire::MAX_PAYLOAD_LEN {
        return Err(FleetError::TooLarge(format!(
            "payload is {} bytes; the limit is {}",
            payload.len(),
            wire::MAX_PAYLOAD_LEN
        )));
    }
    Ok(())
}

/// A number of seconds from a request, between 1 and `max`, or the default.
fn bounded(name: &str, value: Option<u64>, default: Duration, max: u64) -> Result<u64, FleetError> {
    match value {
        Some(secs) => crate::protocol::limits::check_secs(name, secs, max).map_err(FleetError::BadRequest),
        None => Ok(default.as_secs().clamp(1, max)),
    }
}

/// The operator's view of an agent at time `now_ms`.
pub fn agent_view(agent: &AgentRecord, now_ms: i64) -> AgentView {
    AgentView {
        app_id: agent.app_id.clone(),
        online: now_ms - agent.last_seen_ms <= ONLINE_WINDOW_SECS * 1000,
        last_seen: rfc3339(agent.last_seen_ms),
        registered_at: rfc3339(agent.registered_at_ms),
        labels: agent.labels.clone(),
        version: agent.version.clone(),
        hostname: agent.hostname.clone(),
        processed_task_count: agent.processed_task_count,
        status: agent.status.as_str().to_owned(),
        facts: None,
    }
}

/// The task object getTask hands out.
pub fn wire_task(task: &TaskRecord) -> WireTask {
    WireTask {
        task_id: task.id.to_string(),
        task_type: task.task_type.clone(),
        do_status: String::new(),
        create_at: rfc3339(task.created_ms()),
        payload: task.payload.clone(),
        result: String::new(),
        timeout_secs: Some(task.timeout_secs),
    }
}

fn parse_task_id(text: &str) -> Result<TaskId, FleetError> {
    TaskId::parse_str(text)
        .map_err(|_| FleetError::BadRequest(format!("task id {:?} is not a UUID", wire::shown(text))))
}

/// Maps a report's `do_status` and fields to a state change.
fn outcome_of(report: ReportRequest) -> Result<Outcome, FleetError> {
    let status = match report.do_status.as_str() {
        wire::DO_STATUS_DOING => TaskStatus::Running,
        wire::DO_STATUS_SUCCESS => TaskStatus::Succeeded,
        wire::DO_STATUS_FAILED => TaskStatus::Failed,
        wire::DO_STATUS_TIMEOUT => TaskStatus::TimedOut,
        wire::DO_STATUS_CANCELLED => TaskStatus::Cancelled,
        wire::DO_STATUS_LOST => TaskStatus::Lost,
        other => {
            return Err(FleetError::BadRequest(format!(
                "do_status {:?} is not one of doing, success, failed, timeout, cancelled, lost",
                wire::shown(other)
            )));
        }
    };
    let mut output = Vec::new();
    if report.output_chunks.is_none() {
        output.push((Stream::Stdout, capped(report.stdout.unwrap_or_default())));
        output.push((Stream::Stderr, capped(report.stderr.unwrap_or_default())));
    }
    output.push((Stream::Result, capped(report.result)));
    output.retain(|(_, bytes)| !bytes.is_empty());
    Ok(Outcome {
        status,
        exit_code: report.exit_code,
        error: report.error.map(|e| e.chars().take(4096).collect()),
        duration_ms: report.duration_ms,
        output,
    })
}

/// Output a report may carry per stream: the agent caps it, the server enforces it.
fn capped(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.truncate(wire::MAX_OUTPUT_LEN);
    bytes
}
