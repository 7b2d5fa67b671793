//! The server's operations on agents and tasks, independent of HTTP: register, authenticate,
//! hand out the next task (long poll), apply a report, enqueue, wait for a task. Each write that
//! is acknowledged waits for [`Store::durable`] first.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use thiserror::Error;

use super::ServerConfig;
use super::dispatch::Dispatch;
use super::store::{AgentRecord, Outcome, ReportError, Store, StoreError, Stream, TaskRecord};
use crate::protocol::admin::{AgentView, EnqueueRequest, ONLINE_WINDOW_SECS, TaskView, Transition};
use crate::protocol::task::new_task_id;
use crate::protocol::wire::{self, RegisterRequest, ReportRequest, WireTask};
use crate::protocol::{TaskId, TaskStatus};

/// How stale `last_seen` may get before a request rewrites it.
const TOUCH_GAP_MS: i64 = 5_000;
/// Most output per stream shown in a task list.
const LIST_OUTPUT_LEN: usize = 4 * 1024;

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
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReportError> for FleetError {
    fn from(e: ReportError) -> Self {
        match e {
            ReportError::Store(e) => FleetError::Store(e),
            ReportError::UnknownTask(_) => FleetError::NotFound(e.to_string()),
            other => FleetError::BadRequest(other.to_string()),
        }
    }
}

/// The store, the wake-ups and the settings: everything a request handler needs.
pub struct Fleet {
    /// The database.
    pub store: Store,
    /// Wake-ups of parked requests.
    pub dispatch: Dispatch,
    /// Server settings.
    pub config: ServerConfig,
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn rfc3339(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Fleet {
    /// Registers an agent (or refreshes its record) and makes it durable.
    pub async fn register(&self, request: RegisterRequest) -> Result<AgentRecord, FleetError> {
        wire::check_app_id(&request.app_id).map_err(FleetError::BadRequest)?;
        if request.secret.is_empty() || request.secret.len() > wire::MAX_SECRET_LEN {
            return Err(FleetError::BadRequest(format!(
                "secret must be 1 to {} bytes",
                wire::MAX_SECRET_LEN
            )));
        }
        let now = now_ms();
        let old = self.store.agent(&request.app_id)?;
        let record = AgentRecord {
            registered_at_ms: old.as_ref().map_or(now, |a| a.registered_at_ms),
            processed_task_count: old.as_ref().map_or(0, |a| a.processed_task_count),
            app_id: request.app_id,
            secret: request.secret,
            labels: request.labels,
            version: request.version,
            hostname: request.hostname,
            last_seen_ms: now,
        };
        self.store.put_agent(&record)?;
        self.store.durable().await?;
        Ok(record)
    }

    /// The agent `app_id`, or an error saying it must register.
    pub fn known_agent(&self, app_id: &str) -> Result<AgentRecord, FleetError> {
        self.store.agent(app_id)?.ok_or_else(|| {
            FleetError::NotFound(format!("{} {app_id:?}; register first", wire::UNKNOWN_APP_ID))
        })
    }

    /// Notes that `app_id` is alive.
    pub fn touch(&self, app_id: &str) -> Result<(), StoreError> {
        self.store.touch_agent(app_id, now_ms(), TOUCH_GAP_MS)
    }

    /// Long poll: the next task of `app_id`, waiting up to the poll window; `None` when the
    /// window ends empty, a newer poll of the same agent replaced this one, or the server stops.
    pub async fn next_task(&self, app_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        let poll = self.dispatch.park(app_id);
        let deadline = tokio::time::Instant::now() + self.config.poll_window;
        loop {
            // Registered before the store is read, so an enqueue in between is not missed.
            let woken = poll.slot.signal.notified();
            if poll.superseded() {
                return Ok(None);
            }
            if let Some(task) = self.store.take_next(app_id, now_ms())? {
                return Ok(Some(task));
            }
            tokio::select! {
                _ = woken => continue,
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                _ = self.dispatch.stopped() => return Ok(None),
            }
        }
    }

    /// Applies a report from `app_id`, makes it durable and wakes waiters.
    pub async fn report(&self, app_id: &str, report: ReportRequest) -> Result<TaskRecord, FleetError> {
        let id = parse_task_id(&report.task_id)?;
        let outcome = outcome_of(report)?;
        let task = self.store.apply_report(app_id, id, &outcome, now_ms())?;
        self.store.durable().await?;
        self.dispatch.task_changed(id);
        Ok(task)
    }

    /// Creates one task per target agent, makes them durable, then wakes the agents.
    pub async fn enqueue(&self, request: EnqueueRequest) -> Result<Vec<TaskRecord>, FleetError> {
        wire::check_task_type(&request.task_type).map_err(FleetError::BadRequest)?;
        if request.payload.len() > wire::MAX_PAYLOAD_LEN {
            return Err(FleetError::TooLarge(format!(
                "payload is {} bytes; the limit is {}",
                request.payload.len(),
                wire::MAX_PAYLOAD_LEN
            )));
        }
        let timeout = match request.timeout_secs {
            Some(0) => return Err(FleetError::BadRequest("timeout_secs must be at least 1".into())),
            Some(secs) => secs,
            None => self.config.default_task_timeout.as_secs(),
        };
        let targets = self.targets(&request)?;
        let now = now_ms();
        let mut tasks: Vec<TaskRecord> = targets
            .iter()
            .map(|app_id| {
                TaskRecord::new(new_task_id(), app_id, &request.task_type, &request.payload, timeout, now)
            })
            .collect();
        self.store.enqueue(&mut tasks)?;
        self.store.durable().await?;
        for app_id in &targets {
            self.dispatch.wake_agent(app_id);
        }
        Ok(tasks)
    }

    /// Resolves the target agents of an enqueue: named ones must exist.
    fn targets(&self, request: &EnqueueRequest) -> Result<Vec<String>, FleetError> {
        match (request.all, request.app_ids.is_empty()) {
            (true, true) => Ok(self.store.agents()?.into_iter().map(|a| a.app_id).collect()),
            (false, false) => {
                for app_id in &request.app_ids {
                    wire::check_app_id(app_id).map_err(FleetError::BadRequest)?;
                    if self.store.agent(app_id)?.is_none() {
                        return Err(FleetError::NotFound(format!("unknown agent {app_id:?}")));
                    }
                }
                Ok(request.app_ids.clone())
            }
            (true, false) => Err(FleetError::BadRequest("give either app_ids or all, not both".into())),
            (false, true) => Err(FleetError::BadRequest("give app_ids or set all".into())),
        }
    }

    /// The task `id`; with a `wait`, parks until it is final or the wait ends.
    pub async fn wait_task(&self, id: TaskId, wait: Duration) -> Result<TaskRecord, FleetError> {
        let watch = self.dispatch.watch_task(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = watch.signal.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let task =
                self.store.task(id)?.ok_or_else(|| FleetError::NotFound(format!("unknown task {id}")))?;
            if task.status.is_final() || tokio::time::Instant::now() >= deadline {
                return Ok(task);
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.dispatch.stopped() => return Ok(task),
            }
        }
    }

    /// The operator's view of a task, with up to `max_output` bytes of each stream.
    pub fn task_view(&self, task: &TaskRecord, max_output: usize) -> Result<TaskView, StoreError> {
        let text = |stream| -> Result<String, StoreError> {
            Ok(String::from_utf8_lossy(&self.store.output(task.id, stream, max_output)?).into_owned())
        };
        Ok(TaskView {
            task_id: task.id.to_string(),
            app_id: task.app_id.clone(),
            task_type: task.task_type.clone(),
            payload: task.payload.clone(),
            status: task.status,
            timeout_secs: task.timeout_secs,
            cancel_requested: false,
            dropped_bytes: 0,
            history: task.history.iter().map(|(s, t)| Transition { status: *s, at: rfc3339(*t) }).collect(),
            exit_code: task.exit_code,
            stdout: text(Stream::Stdout)?,
            stderr: text(Stream::Stderr)?,
            result: text(Stream::Result)?,
            error: task.error.clone(),
            duration_ms: task.duration_ms,
        })
    }

    /// Views for a task list (outputs shortened).
    pub fn list_views(&self, tasks: &[TaskRecord]) -> Result<Vec<TaskView>, StoreError> {
        tasks.iter().map(|t| self.task_view(t, LIST_OUTPUT_LEN)).collect()
    }

    /// Views of a task as the full record.
    pub fn full_view(&self, task: &TaskRecord) -> Result<TaskView, StoreError> {
        self.task_view(task, 4 * wire::MAX_OUTPUT_LEN)
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

/// The current time as Unix milliseconds (for views).
pub fn current_ms() -> i64 {
    now_ms()
}

fn parse_task_id(text: &str) -> Result<TaskId, FleetError> {
    TaskId::parse_str(text).map_err(|_| {
        FleetError::BadRequest(format!(
            "task id {:?} is not a UUID",
            text.chars().take(40).collect::<String>()
        ))
    })
}

/// Maps a report's `do_status` and fields to a state change.
fn outcome_of(report: ReportRequest) -> Result<Outcome, FleetError> {
    let status = match report.do_status.as_str() {
        wire::DO_STATUS_DOING => TaskStatus::Running,
        wire::DO_STATUS_SUCCESS => TaskStatus::Succeeded,
        wire::DO_STATUS_FAILED => TaskStatus::Failed,
        wire::DO_STATUS_TIMEOUT => TaskStatus::TimedOut,
        other => {
            return Err(FleetError::BadRequest(format!(
                "do_status {:?} is not one of doing, success, failed, timeout",
                other.chars().take(40).collect::<String>()
            )));
        }
    };
    let mut output = Vec::new();
    for (stream, text) in [(Stream::Stdout, report.stdout), (Stream::Stderr, report.stderr)] {
        output.push((stream, capped(text.unwrap_or_default())));
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

/// Output kept per stream: the agent caps it, the server enforces it.
fn capped(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.truncate(wire::MAX_OUTPUT_LEN);
    bytes
}
