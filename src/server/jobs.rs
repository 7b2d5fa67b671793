//! The job operations: validate a request and resolve its targets (the dry run), create,
//! pause, resume and cancel a job, list jobs, wait for a change, and the loop that turns
//! committed job events into wake-ups. Results and groups are in `job_results.rs`, job
//! retention in `sweeper.rs`. The sliding window itself lives in the store (see
//! `store/jobs.rs`): it moves in the same transaction as the task that frees a slot.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::clock::now_ms;
use super::dispatch::Dispatch;
use super::error::ServiceError;
use super::operators::Caller;
use super::store::{AgentRecord, AgentStatus, JobEvent, JobRecord, Store};
use super::tasks::{
    TaskDefaults, check_stdin, check_task_context, check_task_input, merge_secret_env, task_bytes,
    tell_cancelled,
};
use super::views::job_view;
use crate::protocol::jobs::{
    DEFAULT_HOST_TIMEOUT_SECS, JobCounts, JobRequest, JobState, JobView, Limit, TargetList, Targets,
    check_host_timeout,
};
use crate::protocol::limits::{
    self, MAX_ENQUEUE_BYTES, MAX_JOB_TARGETS, MAX_NAMED_TARGETS, MAX_TARGET_LABELS,
};
use crate::protocol::operators::scope_text;
use crate::protocol::task::new_task_id;
use crate::protocol::wire;
use crate::protocol::{TaskId, TaskStatus};

/// Most app ids named in an error message.
const NAMED_IN_ERRORS: usize = 10;

/// How many times the asked number of jobs a scoped caller's list looks at, newest first.
const SCOPED_LIST_SCAN: usize = 10;

/// `a, b, c` (and how many more), for error messages naming agents.
fn name_some(app_ids: &[String]) -> String {
    let shown: Vec<String> =
        app_ids.iter().take(NAMED_IN_ERRORS).map(|a| format!("{:?}", wire::shown(a))).collect();
    match app_ids.len().saturating_sub(NAMED_IN_ERRORS) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// What a target selection asks for, in words.
fn describe(targets: &Targets) -> String {
    let mut parts = Vec::new();
    if !targets.app_ids.is_empty() {
        parts.push(format!("app ids {}", name_some(&targets.app_ids)));
    }
    if !targets.labels.is_empty() {
        let labels: Vec<String> = targets.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("labels {}", labels.join(",")));
    }
    if targets.all {
        parts.push("all".to_owned());
    }
    parts.join(" + ")
}

/// Checks everything in a job request but its targets' existence.
fn check_request(request: &JobRequest) -> Result<(), ServiceError> {
    check_task_input(&request.task_type, &request.payload)?;
    let mut env = request.env.clone();
    merge_secret_env(&mut env, request.secret_env.clone())?;
    check_task_context(&env, request.cwd.as_deref(), request.user.as_deref())?;
    let targets = &request.targets;
    if targets.is_empty() {
        return Err(ServiceError::BadRequest("no targets: give app_ids, labels or all".into()));
    }
    if targets.app_ids.len() > MAX_NAMED_TARGETS {
        return Err(ServiceError::TooLarge(format!(
            "{} app ids named; the limit is {MAX_NAMED_TARGETS} (use labels or all for more)",
            targets.app_ids.len()
        )));
    }
    for app_id in &targets.app_ids {
        wire::check_app_id(app_id).map_err(ServiceError::BadRequest)?;
    }
    check_labels(targets)?;
    if request.max_concurrency == Some(Limit::Count(0)) {
        return Err(ServiceError::BadRequest("max_concurrency must be at least 1".into()));
    }
    Ok(())
}

fn check_labels(targets: &Targets) -> Result<(), ServiceError> {
    if targets.labels.len() > MAX_TARGET_LABELS {
        return Err(ServiceError::TooLarge(format!(
            "{} labels given; the limit is {MAX_TARGET_LABELS}",
            targets.labels.len()
        )));
    }
    for (key, value) in &targets.labels {
        limits::check_label(key, value).map_err(ServiceError::BadRequest)?;
    }
    Ok(())
}

/// True when the agent carries every label asked for.
fn has_labels(agent: &AgentRecord, labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.iter().all(|(k, v)| agent.labels.get(k) == Some(v))
}

/// The window and error limit of a job of `targets` agents.
fn resolve_limits(request: &JobRequest, targets: usize) -> (u32, Option<u32>) {
    let window = request.max_concurrency.map_or(targets, |l| l.of(targets).max(1)).min(targets);
    let errors = request.max_errors.map(|l| u32::try_from(l.of(targets)).unwrap_or(u32::MAX));
    (u32::try_from(window).unwrap_or(u32::MAX), errors)
}

/// Jobs: many agents given the same task, a window of them at a time.
pub struct Jobs {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    defaults: TaskDefaults,
}

impl Jobs {
    /// Job operations over `store`, waking through `dispatch`; `defaults` fill the times a
    /// request leaves out.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>, defaults: TaskDefaults) -> Self {
        Jobs { store, dispatch, defaults }
    }

    /// Checks a job request and resolves its targets: sorted, deduplicated app ids of accepted
    /// agents. Named agents must exist and be accepted; an empty result is refused.
    pub fn resolve(&self, caller: &Caller, request: &JobRequest) -> Result<Vec<String>, ServiceError> {
        check_request(request)?;
        let targets = &request.targets;
        let mut chosen = self.named_targets(&targets.app_ids)?;
        for app_id in &chosen {
            caller.check_reach(&self.store, app_id)?;
        }
        if targets.all || !targets.labels.is_empty() {
            // A selector (or all) is intersected with the caller's scope.
            for agent in self.store.agents()? {
                if agent.status == AgentStatus::Accepted
                    && (targets.all || has_labels(&agent, &targets.labels))
                    && caller.may_reach(&self.store, &agent.app_id)?
                {
                    chosen.insert(agent.app_id);
                }
            }
        }
        if chosen.is_empty() {
            let within = if caller.unscoped() {
                String::new()
            } else {
                format!(" within the scope of operator {} ({})", caller.name, scope_text(&caller.scope))
            };
            return Err(ServiceError::BadRequest(format!(
                "no accepted agent matches {}{within}",
                describe(targets)
            )));
        }
        if chosen.len() > MAX_JOB_TARGETS {
            return Err(ServiceError::TooLarge(format!(
                "{} agents match {}; one job may target at most {MAX_JOB_TARGETS}",
                chosen.len(),
                describe(targets)
            )));
        }
        Ok(chosen.into_iter().collect())
    }

    /// The named agents, which must all exist and be accepted.
    fn named_targets(&self, app_ids: &[String]) -> Result<BTreeSet<String>, ServiceError> {
        let (mut unknown, mut not_accepted) = (Vec::new(), Vec::new());
        let mut chosen = BTreeSet::new();
        for app_id in app_ids {
            match self.store.agent(app_id)?.map(|a| a.status) {
                Some(AgentStatus::Accepted) => {
                    chosen.insert(app_id.clone());
                }
                Some(AgentStatus::Pending) => not_accepted.push(app_id.clone()),
                _ => unknown.push(app_id.clone()),
            }
        }
        if !unknown.is_empty() {
            return Err(ServiceError::NotFound(format!("unknown agents: {}", name_some(&unknown))));
        }
        if !not_accepted.is_empty() {
            return Err(ServiceError::BadRequest(format!(
                "agents pending approval: {}; accept them with `orange agents accept`",
                name_some(&not_accepted)
            )));
        }
        Ok(chosen)
    }

    /// Creates a job, starts its first window and makes it durable; agents are woken by the
    /// job event loop.
    pub async fn create(&self, caller: &Caller, mut request: JobRequest) -> Result<JobRecord, ServiceError> {
        let max_file = self.defaults.max_file_bytes;
        super::files::check_file_task(&self.store, &request.task_type, &mut request.payload, max_file)?;
        let app_ids = self.resolve(caller, &request)?;
        caller.check_limits(&request.task_type, app_ids.len())?;
        self.create_on(request, app_ids, None).await
    }

    /// Runs job `id` again as a new job linked to it (`retry_of`), with the same command,
    /// input and limits: on every host it targeted, or with `failed_only` on those that did
    /// not succeed. The job must have ended; hosts whose agent is no longer accepted are left
    /// out.
    pub async fn retry(
        &self,
        caller: &Caller,
        id: TaskId,
        failed_only: bool,
    ) -> Result<JobRecord, ServiceError> {
        let first = self.visible(caller, id)?;
        if !first.secret_names.is_empty() {
            let names: Vec<&str> = first.secret_names.iter().map(String::as_str).collect();
            return Err(ServiceError::Conflict(format!(
                "job {id} had secret environment variables ({}), whose values were dropped when it ended; \
                 run it again with job run --secret-env",
                names.join(", ")
            )));
        }
        if first.done_ms == 0 {
            return Err(ServiceError::Conflict(format!(
                "job {id} has not ended yet; wait for it, or cancel it, before retrying it"
            )));
        }
        let mut app_ids = Vec::new();
        self.store.each_target(id, |target| {
            let succeeded = target.end.as_ref().is_some_and(|end| end.status == TaskStatus::Succeeded);
            if !(failed_only && succeeded) {
                app_ids.push(target.app_id);
            }
            Ok(())
        })?;
        let accepted = |app_id: &String| {
            self.store.agent(app_id).map(|agent| agent.is_some_and(|a| a.status == AgentStatus::Accepted))
        };
        let mut reachable = Vec::with_capacity(app_ids.len());
        for app_id in app_ids {
            if accepted(&app_id)? && caller.may_reach(&self.store, &app_id)? {
                reachable.push(app_id);
            }
        }
        if reachable.is_empty() {
            let why = if failed_only { "every host succeeded" } else { "no host of it is still accepted" };
            return Err(ServiceError::Conflict(format!("nothing to retry in job {id}: {why}")));
        }
        caller.check_limits(&first.task_type, reachable.len())?;
        let request = JobRequest {
            targets: Targets { app_ids: reachable.clone(), ..Targets::default() },
            task_type: first.task_type,
            payload: first.payload,
            timeout_secs: Some(first.timeout_secs),
            ttl_secs: Some(first.ttl_secs),
            max_concurrency: first.max_concurrency,
            max_errors: first.max_errors,
            env: first.env,
            secret_env: BTreeMap::new(),
            cwd: first.cwd,
            user: first.user,
            queue: first.queue,
            // 0: a job written before host timeouts existed; it gets the default.
            host_timeout_secs: (first.host_timeout_secs != 0).then_some(first.host_timeout_secs),
            stdin: self.store.job_stdin(id)?,
        };
        self.create_on(request, reachable, Some(id)).await
    }

    /// Creates the job of `request` on the resolved `app_ids`.
    async fn create_on(
        &self,
        request: JobRequest,
        app_ids: Vec<String>,
        retry_of: Option<TaskId>,
    ) -> Result<JobRecord, ServiceError> {
        let mut request = request;
        let secret_names = merge_secret_env(&mut request.env, std::mem::take(&mut request.secret_env))?;
        let (timeout_secs, ttl_secs) = self.defaults.resolve(request.timeout_secs, request.ttl_secs)?;
        let host_timeout = request.host_timeout_secs.unwrap_or(DEFAULT_HOST_TIMEOUT_SECS);
        let host_timeout_secs = check_host_timeout(host_timeout).map_err(ServiceError::BadRequest)?;
        let (window, error_limit) = resolve_limits(&request, app_ids.len());
        check_stdin(&request.stdin)?;
        let task_bytes =
            task_bytes(&request.payload, &request.env, request.cwd.as_deref(), request.user.as_deref())
                + request.stdin.len();
        if task_bytes.saturating_mul(window as usize) > MAX_ENQUEUE_BYTES {
            return Err(ServiceError::TooLarge(format!(
                "a window of {window} tasks of {task_bytes} payload, environment and stdin bytes exceeds \
                 the {MAX_ENQUEUE_BYTES} bytes one enqueue may store; lower max_concurrency",
            )));
        }
        let job = JobRecord {
            id: new_task_id(),
            created_ms: now_ms(),
            task_type: request.task_type,
            payload: request.payload,
            env: request.env,
            cwd: request.cwd,
            user: request.user,
            timeout_secs,
            ttl_secs,
            max_concurrency: request.max_concurrency,
            max_errors: request.max_errors,
            window,
            error_limit,
            // resolve keeps the count under MAX_JOB_TARGETS.
            targets: u32::try_from(app_ids.len()).unwrap_or(u32::MAX),
            next: 0,
            state: JobState::Running,
            counts: JobCounts::default(),
            version: 0,
            done_ms: 0,
            host_timeout_secs,
            queue: request.queue,
            secret_names,
            retry_of,
        };
        let offline = if request.queue { HashMap::new() } else { self.offline(&app_ids)? };
        let job = self.store.create_job(&job, &request.stdin, &app_ids, &offline)?;
        self.store.durable().await?;
        info!(job = %job.id, targets = job.targets, offline = offline.len(), window, retry_of = ?retry_of, "job created");
        Ok(job)
    }

    /// The dry run: the targets `request` resolves to, and which of them are offline now.
    pub fn dry_run(&self, caller: &Caller, request: &JobRequest) -> Result<TargetList, ServiceError> {
        let app_ids = self.resolve(caller, request)?;
        let mut offline: Vec<String> = self.offline(&app_ids)?.into_keys().collect();
        offline.sort();
        Ok(TargetList { app_ids, offline })
    }

    /// Of `app_ids`, the agents offline now, with when each was last seen.
    fn offline(&self, app_ids: &[String]) -> Result<HashMap<String, i64>, ServiceError> {
        let now = now_ms();
        let mut offline = HashMap::new();
        for app_id in app_ids {
            let Some(agent) = self.store.agent(app_id)? else { continue };
            let liveness = self.dispatch.presence().liveness(&agent, now);
            if !liveness.online {
                offline.insert(app_id.clone(), liveness.last_seen_ms);
            }
        }
        Ok(offline)
    }

    /// The job `id`; with `after_version`, parks up to `wait` until its version passes it (or
    /// the job is done, when it will not change any more).
    pub async fn wait(
        &self,
        id: TaskId,
        after_version: Option<u64>,
        wait: Duration,
    ) -> Result<JobRecord, ServiceError> {
        let watch = self.dispatch.watch_job(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = watch.signal.notified();
            let job =
                self.store.job(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown job {id}")))?;
            let ready = after_version.is_none_or(|v| job.version > v || job.done_ms != 0);
            if ready || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            tokio::select! {
                _ = changed => {}
                _ = self.dispatch.recheck() => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.dispatch.stopped() => return Ok(job),
            }
        }
    }

    /// Pauses job `id` (durably).
    pub async fn pause(&self, id: TaskId) -> Result<JobRecord, ServiceError> {
        let job = self.store.pause_job(id)?;
        self.store.durable().await?;
        Ok(job)
    }

    /// Resumes job `id` and refills its window (durably).
    pub async fn resume(&self, id: TaskId) -> Result<JobRecord, ServiceError> {
        let job = self.store.resume_job(id, now_ms())?;
        self.store.durable().await?;
        Ok(job)
    }

    /// Cancels job `id` (see [`super::store::Store::cancel_job`]), durably, and tells the
    /// agents of its running tasks.
    pub async fn cancel(&self, id: TaskId, force: bool) -> Result<JobRecord, ServiceError> {
        let (job, cancelled) = self.store.cancel_job(id, force, now_ms())?;
        self.store.durable().await?;
        tell_cancelled(&self.dispatch, &cancelled);
        info!(job = %id, force, tasks = cancelled.len(), "job cancelled");
        Ok(job)
    }

    /// Up to `limit` jobs, newest first.
    pub fn list(&self, caller: &Caller, limit: usize) -> Result<Vec<JobView>, ServiceError> {
        if caller.unscoped() {
            return Ok(self.store.jobs(limit)?.iter().map(job_view).collect());
        }
        let mut views = Vec::new();
        for job in self.store.jobs(limit.saturating_mul(SCOPED_LIST_SCAN))? {
            if views.len() == limit {
                break;
            }
            if caller.reaches_job(&self.store, job.id)? {
                views.push(job_view(&job));
            }
        }
        Ok(views)
    }

    /// Job `id` if `caller` may see it: every target within its scope. Another is answered as
    /// unknown (404), so that a scoped operator learns nothing of hosts it cannot reach.
    pub fn visible(&self, caller: &Caller, id: TaskId) -> Result<JobRecord, ServiceError> {
        let unknown = || ServiceError::NotFound(format!("unknown job {id}"));
        let job = self.store.job(id)?.ok_or_else(unknown)?;
        if caller.reaches_job(&self.store, id)? { Ok(job) } else { Err(unknown()) }
    }

    /// Turns the job events of committed transactions into wake-ups (agents given a task by a
    /// job, operators waiting on a job) until the server stops.
    pub async fn relay_events(&self) {
        let events = Arc::new(tokio::sync::Notify::new());
        let notify = Arc::clone(&events);
        self.store.on_job_events(move || notify.notify_one());
        loop {
            let ready = events.notified();
            let mut changed = BTreeSet::new();
            for event in self.store.take_job_events() {
                match event {
                    JobEvent::Started(app_id) => self.dispatch.wake_agent(&app_id),
                    JobEvent::Changed(id) => {
                        changed.insert(id);
                    }
                }
            }
            for id in changed {
                self.dispatch.job_changed(id);
            }
            tokio::select! {
                _ = ready => {}
                _ = self.dispatch.stopped() => return,
            }
        }
    }
}
