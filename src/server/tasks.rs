//! The operator's task operations: enqueue (checks, targets, queue room), cancel, list, wait for
//! a task to finish, and read its output page by page. Each write is on stable storage before it
//! is answered; agents and waiters are woken after.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::clock::{now_ms, rfc3339_secs};
use super::dispatch::Dispatch;
use super::error::ServiceError;
use super::operators::{Caller, ScopedScan};
use super::store::{
    AgentStatus, CancelOutcome, Store, StoreError, Stream, TaskPage, TaskPageQuery, TaskRecord, TaskSpec,
};
use super::views::chunk_view;
use crate::protocol::TaskId;
use crate::protocol::admin::{EnqueueRequest, OutputPage, offline_refusal};
use crate::protocol::features::{TaskAsks, missing, refusal};
use crate::protocol::limits::{
    self, MAX_ENQUEUE_BYTES, MAX_NAMED_TARGETS, MAX_QUEUED_PER_AGENT, MAX_TIMEOUT_SECS, MAX_TTL_SECS,
};
use crate::protocol::task::new_task_id;
use crate::protocol::task_query::{MAX_TASK_SCAN, TaskQuery};
use crate::protocol::wire;

/// Most output bytes one output page carries.
const PAGE_BYTES: usize = 1024 * 1024;

/// The timeout and time to live of tasks sent without one, and the size limit of file tasks.
#[derive(Debug, Clone, Copy)]
pub struct TaskDefaults {
    /// Timeout of a task enqueued without one.
    pub timeout: Duration,
    /// How long a task may wait queued when the operator gives no time to live.
    pub ttl: Duration,
    /// Most bytes of a copied file (`--max-file-mb`).
    pub max_file_bytes: u64,
}

impl TaskDefaults {
    /// A task's timeout and time to live in seconds: as asked, or the defaults, within their
    /// limits.
    pub fn resolve(
        &self,
        timeout_secs: Option<u64>,
        ttl_secs: Option<u64>,
    ) -> Result<(u64, u64), ServiceError> {
        let timeout = bounded("timeout_secs", timeout_secs, self.timeout, MAX_TIMEOUT_SECS)?;
        let ttl = bounded("ttl_secs", ttl_secs, self.ttl, MAX_TTL_SECS)?;
        Ok((timeout, ttl))
    }
}

/// Tasks as operators send and follow them.
pub struct Tasks {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    defaults: TaskDefaults,
}

impl Tasks {
    /// Task operations over `store`, waking through `dispatch`.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>, defaults: TaskDefaults) -> Self {
        Tasks { store, dispatch, defaults }
    }

    /// Creates one task per target agent, makes them durable, then wakes the agents.
    pub async fn enqueue(
        &self,
        caller: &Caller,
        mut request: EnqueueRequest,
    ) -> Result<Vec<TaskRecord>, ServiceError> {
        let secret_names = merge_secret_env(&mut request.env, std::mem::take(&mut request.secret_env))?;
        check_task_input(&request.task_type, &request.payload)?;
        let max_file = self.defaults.max_file_bytes;
        super::files::check_file_task(&self.store, &request.task_type, &mut request.payload, max_file)?;
        check_task_context(&request.env, request.cwd.as_deref(), request.user.as_deref())?;
        check_stdin(&request.stdin)?;
        let (timeout_secs, ttl_secs) = self.defaults.resolve(request.timeout_secs, request.ttl_secs)?;
        if request.app_ids.len() > MAX_NAMED_TARGETS {
            return Err(ServiceError::TooLarge(format!(
                "{} app ids named; the limit is {MAX_NAMED_TARGETS} (use all for the whole fleet)",
                request.app_ids.len()
            )));
        }
        let targets = self.targets(caller, &request)?;
        caller.check_limits(&request.task_type, targets.len())?;
        let task_bytes =
            task_bytes(&request.payload, &request.env, request.cwd.as_deref(), request.user.as_deref())
                + request.stdin.len();
        if task_bytes.saturating_mul(targets.len()) > MAX_ENQUEUE_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "{} tasks of {task_bytes} payload, environment and stdin bytes exceed the {MAX_ENQUEUE_BYTES} bytes \
                 one enqueue may store",
                targets.len(),
            )));
        }
        let required = TaskAsks {
            task_type: &request.task_type,
            env: &request.env,
            cwd: request.cwd.as_deref(),
            stdin: &request.stdin,
            user: request.user.as_deref(),
        }
        .required();
        self.check_features(&targets, &required)?;
        self.check_queue_room(&targets)?;
        let now = now_ms();
        if request.require_online {
            self.check_online(&targets, now)?;
        }
        let mut tasks: Vec<TaskRecord> = targets
            .iter()
            .map(|app_id| {
                let spec = TaskSpec {
                    app_id,
                    task_type: &request.task_type,
                    payload: &request.payload,
                    env: &request.env,
                    cwd: request.cwd.as_deref(),
                    user: request.user.as_deref(),
                    stdin: &request.stdin,
                    timeout_secs,
                    ttl_secs,
                };
                let mut task = TaskRecord::new(spec, new_task_id(), now);
                task.secret_names = secret_names.clone();
                task
            })
            .collect();
        self.store.enqueue(&mut tasks)?;
        self.store.durable().await?;
        for app_id in &targets {
            self.dispatch.wake_agent(app_id);
        }
        Ok(tasks)
    }

    /// Refuses an enqueue of a task needing `required` features to agents that did not
    /// announce them all: they would run it wrong. The message names the first such agent and
    /// what it lacks.
    fn check_features(&self, targets: &[String], required: &[&str]) -> Result<(), ServiceError> {
        if required.is_empty() {
            return Ok(());
        }
        let mut lacking = Vec::new();
        for app_id in targets {
            let missing = missing(required, &self.store.features(app_id)?);
            if !missing.is_empty() {
                lacking.push(refusal(app_id, &missing));
            }
        }
        match lacking.len() {
            0 => Ok(()),
            1 => Err(ServiceError::Conflict(lacking.swap_remove(0))),
            n => Err(ServiceError::Conflict(format!("{} (and {} more agents)", lacking[0], n - 1))),
        }
    }

    /// Refuses an enqueue that would take any agent's queue past [`MAX_QUEUED_PER_AGENT`].
    fn check_queue_room(&self, targets: &[String]) -> Result<(), ServiceError> {
        let mut adding: HashMap<&str, usize> = HashMap::new();
        for app_id in targets {
            *adding.entry(app_id).or_default() += 1;
        }
        for (app_id, new) in adding {
            let queued = self.store.queued_count(app_id, MAX_QUEUED_PER_AGENT);
            if queued + new > MAX_QUEUED_PER_AGENT {
                return Err(ServiceError::TooLarge(format!(
                    "agent {app_id:?} has {queued} tasks waiting; {new} more would pass the limit of \
                     {MAX_QUEUED_PER_AGENT}; let it catch up or cancel some"
                )));
            }
        }
        Ok(())
    }

    /// Resolves the target agents of an enqueue: named ones must exist.
    /// The agents an enqueue is for: every accepted agent within the caller's scope for `all`,
    /// else the named ones, each accepted and within the scope.
    fn targets(&self, caller: &Caller, request: &EnqueueRequest) -> Result<Vec<String>, ServiceError> {
        match (request.all, request.app_ids.is_empty()) {
            (true, true) => {
                let mut chosen = Vec::new();
                for agent in self.store.agents()? {
                    if agent.status == AgentStatus::Accepted
                        && caller.may_reach(&self.store, &agent.app_id)?
                    {
                        chosen.push(agent.app_id);
                    }
                }
                Ok(chosen)
            }
            (false, false) => {
                for app_id in &request.app_ids {
                    self.check_target(app_id)?;
                    caller.check_reach(&self.store, app_id)?;
                }
                Ok(request.app_ids.clone())
            }
            (true, false) => Err(ServiceError::BadRequest("give either app_ids or all, not both".into())),
            (false, true) => Err(ServiceError::BadRequest("give app_ids or set all".into())),
        }
    }

    /// Refuses targets of which one is offline, naming it and when it was last seen.
    fn check_online(&self, targets: &[String], now_ms: i64) -> Result<(), ServiceError> {
        for app_id in targets {
            let Some(agent) = self.store.agent(app_id)? else { continue };
            let liveness = self.dispatch.presence().liveness(&agent, now_ms);
            if !liveness.online {
                let last_seen = rfc3339_secs(liveness.last_seen_ms);
                return Err(ServiceError::Conflict(offline_refusal(app_id, &last_seen, liveness.left)));
            }
        }
        Ok(())
    }

    /// Refuses a named target that is not an accepted agent.
    fn check_target(&self, app_id: &str) -> Result<(), ServiceError> {
        wire::check_app_id(app_id).map_err(ServiceError::BadRequest)?;
        match self.store.agent(app_id)?.map(|a| a.status) {
            Some(AgentStatus::Accepted) => Ok(()),
            Some(AgentStatus::Pending) => Err(ServiceError::Conflict(format!(
                "agent {app_id:?} is pending approval; accept it with `orange agents accept {app_id}`"
            ))),
            _ => Err(ServiceError::NotFound(format!("unknown agent {app_id:?}"))),
        }
    }

    /// The page of tasks `query` asks for, newest first, with the cursor of the next page.
    pub fn page(&self, caller: &Caller, query: &TaskQuery) -> Result<TaskPage, StoreError> {
        let now = now_ms();
        let page = TaskPageQuery {
            app_id: query.app_id.as_deref(),
            before: query.after,
            since_ms: query.since.map(|since| since.to_ms(now)),
            limit: query.limit(),
            max_scan: MAX_TASK_SCAN,
        };
        let scan = ScopedScan::new(caller, &self.store);
        self.store.task_page(&page, |task| {
            (query.statuses.is_empty() || query.statuses.contains(&task.status))
                && scan.reaches(&task.app_id).unwrap_or(false)
        })
    }

    /// Task `id` if `caller` may see it: a task of an agent outside its scope is answered as
    /// unknown (404), so that a scoped operator learns nothing of hosts it cannot reach.
    pub fn visible(&self, caller: &Caller, id: TaskId) -> Result<TaskRecord, ServiceError> {
        let unknown = || ServiceError::NotFound(format!("unknown task {id}"));
        let task = self.store.task(id)?.ok_or_else(unknown)?;
        if caller.may_reach(&self.store, &task.app_id)? { Ok(task) } else { Err(unknown()) }
    }

    /// Cancels task `id` (see [`Store::cancel`]), makes it durable, and tells its agent.
    pub async fn cancel(&self, id: TaskId, force: bool) -> Result<TaskRecord, ServiceError> {
        let outcome = self.store.cancel(id, force, now_ms())?;
        self.store.durable().await?;
        tell_cancelled(&self.dispatch, std::slice::from_ref(&outcome));
        Ok(outcome.task)
    }

    /// The task `id`; with a `wait`, parks until it is final or the wait ends.
    pub async fn wait(&self, id: TaskId, wait: Duration) -> Result<TaskRecord, ServiceError> {
        self.wait_until(id, wait, |task| Ok(task.status.is_final())).await
    }

    /// Output chunks of `id` from `after` on; with a `wait`, parks until there is one or the
    /// task is final.
    pub async fn output_page(
        &self,
        id: TaskId,
        after: u32,
        wait: Duration,
    ) -> Result<OutputPage, ServiceError> {
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
    ) -> Result<TaskRecord, ServiceError> {
        let watch = self.dispatch.watch_task(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = watch.signal.notified();
            let task =
                self.store.task(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown task {id}")))?;
            if ready(&task)? || tokio::time::Instant::now() >= deadline {
                return Ok(task);
            }
            tokio::select! {
                _ = changed => {}
                _ = self.dispatch.recheck() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.dispatch.stopped() => return Ok(task),
            }
        }
    }
}

/// Wakes the agents that must stop a cancelled task, and whoever follows the tasks.
pub(super) fn tell_cancelled(dispatch: &Dispatch, cancelled: &[CancelOutcome]) {
    for outcome in cancelled {
        if outcome.tell_agent {
            dispatch.wake_agent(&outcome.task.app_id);
        }
        dispatch.task_changed(outcome.task.id);
    }
}

/// Checks a task's type and the size of its payload.
pub(super) fn check_task_input(task_type: &str, payload: &str) -> Result<(), ServiceError> {
    crate::protocol::limits::check_task_type(task_type).map_err(ServiceError::BadRequest)?;
    if payload.len() > wire::MAX_PAYLOAD_LEN {
        return Err(ServiceError::TooLarge(format!(
            "payload is {} bytes; the limit is {}",
            payload.len(),
            wire::MAX_PAYLOAD_LEN
        )));
    }
    Ok(())
}

/// Checks a task's environment, working directory and user against their limits.
pub(super) fn check_task_context(
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    user: Option<&str>,
) -> Result<(), ServiceError> {
    limits::check_env(env).map_err(ServiceError::BadRequest)?;
    cwd.map_or(Ok(()), limits::check_cwd).map_err(ServiceError::BadRequest)?;
    user.map_or(Ok(()), limits::check_user).map_err(ServiceError::BadRequest)
}

/// Adds the `secret` environment variables to `env` and returns their names; a name in both
/// is refused. The merged environment is then checked as a whole, by the same rules.
pub fn merge_secret_env(
    env: &mut BTreeMap<String, String>,
    secret: BTreeMap<String, String>,
) -> Result<BTreeSet<String>, ServiceError> {
    let mut names = BTreeSet::new();
    for (name, value) in secret {
        if env.contains_key(&name) {
            return Err(ServiceError::BadRequest(format!(
                "environment variable {name:?} is given both as env and as secret_env"
            )));
        }
        names.insert(name.clone());
        env.insert(name, value);
    }
    Ok(names)
}

/// Refuses a task's stdin past [`limits::MAX_STDIN_BYTES`].
pub fn check_stdin(stdin: &[u8]) -> Result<(), ServiceError> {
    if stdin.len() > limits::MAX_STDIN_BYTES {
        return Err(ServiceError::TooLarge(format!(
            "stdin of {} bytes is larger than the {} bytes a task may carry",
            stdin.len(),
            limits::MAX_STDIN_BYTES
        )));
    }
    Ok(())
}

/// The bytes one task stores of what the operator sent: its payload, environment, working
/// directory and user (what [`MAX_ENQUEUE_BYTES`] bounds).
pub(super) fn task_bytes(
    payload: &str,
    env: &BTreeMap<String, String>,
    cwd: Option<&str>,
    user: Option<&str>,
) -> usize {
    let env_bytes: usize = env.iter().map(|(name, value)| name.len() + value.len()).sum();
    payload.len() + env_bytes + cwd.map_or(0, str::len) + user.map_or(0, str::len)
}

/// A number of seconds from a request, between 1 and `max`, or the default.
fn bounded(name: &str, value: Option<u64>, default: Duration, max: u64) -> Result<u64, ServiceError> {
    match value {
        Some(secs) => crate::protocol::limits::check_secs(name, secs, max).map_err(ServiceError::BadRequest),
        None => Ok(default.as_secs().clamp(1, max)),
    }
}
