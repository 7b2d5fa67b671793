//! The server's operations on jobs, independent of HTTP: validate a request and resolve its
//! targets, create, pause, resume and cancel a job, wait for a change (results and groups are
//! in `job_results.rs`), the loop that turns committed job events into wake-ups, and job
//! retention. The sliding window itself lives in the store (see `store/jobs.rs`): it moves in
//! the same transaction as the task that frees a slot.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::fleet::Fleet;
use super::fleet::{FleetError, check_task_input, now_ms, rfc3339};
use super::store::{AgentRecord, AgentStatus, JobError, JobEvent, JobRecord, StoreError};
use crate::protocol::TaskId;
use crate::protocol::jobs::{JobCounts, JobRequest, JobState, JobView, Limit, Targets};
use crate::protocol::limits::{
    self, MAX_ENQUEUE_BYTES, MAX_JOB_TARGETS, MAX_NAMED_TARGETS, MAX_TARGET_LABELS,
};
use crate::protocol::task::new_task_id;
use crate::protocol::wire;

/// Most app ids named in an error message.
const NAMED_IN_ERRORS: usize = 10;

impl From<JobError> for FleetError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Store(e) => FleetError::Store(e),
            JobError::UnknownJob(_) => FleetError::NotFound(e.to_string()),
            JobError::BadState { .. } => FleetError::Conflict(e.to_string()),
        }
    }
}

/// The operator's view of a job.
pub fn job_view(job: &JobRecord) -> JobView {
    JobView {
        job_id: job.id.to_string(),
        created_at: rfc3339(job.created_ms),
        state: job.state,
        done: job.done_ms != 0,
        task_type: job.task_type.clone(),
        payload: job.payload.clone(),
        timeout_secs: job.timeout_secs,
        max_concurrency: job.max_concurrency,
        max_errors: job.max_errors,
        targets: job.targets,
        counts: job.counts.clone(),
        version: job.version,
    }
}

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
fn check_request(request: &JobRequest) -> Result<(), FleetError> {
    check_task_input(&request.task_type, &request.payload)?;
    let targets = &request.targets;
    if targets.is_empty() {
        return Err(FleetError::BadRequest("no targets: give app_ids, labels or all".into()));
    }
    if targets.app_ids.len() > MAX_NAMED_TARGETS {
        return Err(FleetError::TooLarge(format!(
            "{} app ids named; the limit is {MAX_NAMED_TARGETS} (use labels or all for more)",
            targets.app_ids.len()
        )));
    }
    for app_id in &targets.app_ids {
        wire::check_app_id(app_id).map_err(FleetError::BadRequest)?;
    }
    check_labels(targets)?;
    if request.max_concurrency == Some(Limit::Count(0)) {
        return Err(FleetError::BadRequest("max_concurrency must be at least 1".into()));
    }
    Ok(())
}

fn check_labels(targets: &Targets) -> Result<(), FleetError> {
    if targets.labels.len() > MAX_TARGET_LABELS {
        return Err(FleetError::TooLarge(format!(
            "{} labels given; the limit is {MAX_TARGET_LABELS}",
            targets.labels.len()
        )));
    }
    for (key, value) in &targets.labels {
        limits::check_label(key, value).map_err(FleetError::BadRequest)?;
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

impl Fleet {
    /// Checks a job request and resolves its targets: sorted, deduplicated app ids of accepted
    /// agents. Named agents must exist and be accepted; an empty result is refused.
    pub fn resolve_job(&self, request: &JobRequest) -> Result<Vec<String>, FleetError> {
        check_request(request)?;
        let targets = &request.targets;
        let mut chosen = self.named_targets(&targets.app_ids)?;
        if targets.all || !targets.labels.is_empty() {
            for agent in self.store.agents()? {
                if agent.status == AgentStatus::Accepted
                    && (targets.all || has_labels(&agent, &targets.labels))
                {
                    chosen.insert(agent.app_id);
                }
            }
        }
        if chosen.is_empty() {
            return Err(FleetError::BadRequest(format!("no accepted agent matches {}", describe(targets))));
        }
        if chosen.len() > MAX_JOB_TARGETS {
            return Err(FleetError::TooLarge(format!(
                "{} agents match {}; one job may target at most {MAX_JOB_TARGETS}",
                chosen.len(),
                describe(targets)
            )));
        }
        Ok(chosen.into_iter().collect())
    }

    /// The named agents, which must all exist and be accepted.
    fn named_targets(&self, app_ids: &[String]) -> Result<BTreeSet<String>, FleetError> {
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
            return Err(FleetError::NotFound(format!("unknown agents: {}", name_some(&unknown))));
        }
        if !not_accepted.is_empty() {
            return Err(FleetError::BadRequest(format!(
                "agents pending approval: {}; accept them with `orange agents accept`",
                name_some(&not_accepted)
            )));
        }
        Ok(chosen)
    }

    /// Creates a job, starts its first window and makes it durable; agents are woken by the
    /// job event loop.
    pub async fn create_job(&self, request: JobRequest) -> Result<JobRecord, FleetError> {
        let app_ids = self.resolve_job(&request)?;
        let (timeout_secs, ttl_secs) = self.task_times(request.timeout_secs, request.ttl_secs)?;
        let (window, error_limit) = resolve_limits(&request, app_ids.len());
        if request.payload.len().saturating_mul(window as usize) > MAX_ENQUEUE_BYTES {
            return Err(FleetError::TooLarge(format!(
                "a window of {window} tasks of {} payload bytes exceeds the {MAX_ENQUEUE_BYTES} bytes one \
                 enqueue may store; lower max_concurrency",
                request.payload.len()
            )));
        }
        let job = JobRecord {
            id: new_task_id(),
            created_ms: now_ms(),
            task_type: request.task_type,
            payload: request.payload,
            timeout_secs,
            ttl_secs,
            max_concurrency: request.max_concurrency,
            max_errors: request.max_errors,
            window,
            error_limit,
            // resolve_job keeps the count under MAX_JOB_TARGETS.
            targets: u32::try_from(app_ids.len()).unwrap_or(u32::MAX),
            next: 0,
            state: JobState::Running,
            counts: JobCounts::default(),
            version: 0,
            done_ms: 0,
        };
        let job = self.store.create_job(&job, &app_ids)?;
        self.store.durable().await?;
        info!(job = %job.id, targets = job.targets, window, "job created");
        Ok(job)
    }

    /// The job `id`; with `after_version`, parks up to `wait` until its version passes it (or
    /// the job is done, when it will not change any more).
    pub async fn wait_job(
        &self,
        id: TaskId,
        after_version: Option<u64>,
        wait: Duration,
    ) -> Result<JobRecord, FleetError> {
        let watch = self.dispatch.watch_job(id);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = watch.signal.notified();
            let job = self.store.job(id)?.ok_or_else(|| FleetError::NotFound(format!("unknown job {id}")))?;
            let ready = after_version.is_none_or(|v| job.version > v || job.done_ms != 0);
            if ready || tokio::time::Instant::now() >= deadline {
                return Ok(job);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.dispatch.stopped() => return Ok(job),
            }
        }
    }

    /// Pauses job `id` (durably).
    pub async fn pause_job(&self, id: TaskId) -> Result<JobRecord, FleetError> {
        let job = self.store.pause_job(id)?;
        self.store.durable().await?;
        Ok(job)
    }

    /// Resumes job `id` and refills its window (durably).
    pub async fn resume_job(&self, id: TaskId) -> Result<JobRecord, FleetError> {
        let job = self.store.resume_job(id, now_ms())?;
        self.store.durable().await?;
        Ok(job)
    }

    /// Cancels job `id` (see [`super::store::Store::cancel_job`]), durably, and tells the
    /// agents of its running tasks.
    pub async fn cancel_job(&self, id: TaskId, force: bool) -> Result<JobRecord, FleetError> {
        let (job, cancelled) = self.store.cancel_job(id, force, now_ms())?;
        self.store.durable().await?;
        for outcome in &cancelled {
            if outcome.tell_agent {
                self.dispatch.wake_agent(&outcome.task.app_id);
            }
            self.dispatch.task_changed(outcome.task.id);
        }
        info!(job = %id, force, tasks = cancelled.len(), "job cancelled");
        Ok(job)
    }

    /// Up to `limit` jobs, newest first.
    pub fn list_jobs(&self, limit: usize) -> Result<Vec<JobView>, FleetError> {
        Ok(self.store.jobs(limit)?.iter().map(job_view).collect())
    }

    /// Turns the job events of committed transactions into wake-ups (agents given a task by a
    /// job, operators waiting on a job) until the server stops.
    pub async fn job_event_loop(self: Arc<Self>) {
        loop {
            let ready = self.store.job_events_ready();
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

    /// Finishes cancels cut short by a crash (see [`super::store::Store::finish_cancels`]) and
    /// tells the agents; then removes jobs done before `cutoff_ms` with their targets and links.
    pub fn sweep_job_retention(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        self.finish_job_cancels()?;
        let mut removed = 0;
        loop {
            let batch = self.store.sweep_jobs(cutoff_ms)?;
            removed += batch;
            if batch == 0 {
                break;
            }
        }
        if removed > 0 {
            info!(jobs = removed, "retention removed old jobs");
        }
        Ok(())
    }

    /// Cancels the open tasks left behind by a job cancel that stopped half way, and tells
    /// their agents.
    fn finish_job_cancels(&self) -> Result<(), StoreError> {
        let cancelled = self.store.finish_cancels(now_ms())?;
        for outcome in &cancelled {
            if outcome.tell_agent {
                self.dispatch.wake_agent(&outcome.task.app_id);
            }
            self.dispatch.task_changed(outcome.task.id);
        }
        if !cancelled.is_empty() {
            info!(tasks = cancelled.len(), "finished the cancel of jobs cut short");
        }
        Ok(())
    }
}
