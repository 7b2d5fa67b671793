//! Jobs in the store: the job record, one record per target, the task → target links, and the
//! moves that keep a job in step with its tasks. [`follow`] runs inside every transaction that
//! changes a linked task's state (called by `Tx::put_task`, which `Store::transact` gives it
//! as `Tx::follow`): it moves the job's counts, records
//! how a target ended, stops the job past its error limit, and starts the next waiting targets
//! while the window has room. Nothing here waits for the disk: callers make writes durable.

use crate::server::metrics::TaskEvent;
use std::collections::HashMap;

use thiserror::Error;

use super::events::JobEvent;
use super::facts::FeaturesRecord;
use super::records::{
    AgentRecord, AgentStatus, JobRecord, TARGET_ERROR_LEN, TargetEnd, TargetRecord, TaskRecord, TaskSpec,
};
use super::tx::{
    CancelOutcome, Tx, TxError, abort, agent_task_key, cancel_open, decode, queue_key, task_id_from, time_key,
};
use super::{Store, StoreError};
use crate::protocol::features;
use crate::protocol::jobs::{JobCounts, JobState};
use crate::protocol::task::new_task_id;
use crate::protocol::{TaskId, TaskStatus};
use crate::server::codec;

/// Most tasks one cancel transaction closes.
const CANCEL_BATCH: usize = 1000;
/// Most targets one transaction starts: a wide window opens in several transactions, so none
/// holds sled's write lock (and every other write) for long.
const START_BATCH: u32 = 1000;

/// Why a job operation was refused.
#[derive(Debug, Error)]
pub enum JobError {
    /// No job has this id.
    #[error("unknown job {0}")]
    UnknownJob(TaskId),
    /// The job's state does not allow the operation.
    #[error("job {id} is {state}{}; it cannot be {action}", if *.done { " and done" } else { "" })]
    BadState {
        /// The job.
        id: TaskId,
        /// Its state.
        state: JobState,
        /// Whether it is done.
        done: bool,
        /// What was asked (`paused`, `resumed`, `cancelled`).
        action: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an operator's change does to a job.
enum Change {
    /// Save the changed job.
    Save,
    /// Nothing to change (it already is as asked).
    Keep,
    /// The job's state does not allow it.
    Refuse,
}

/// Key of a job record or the prefix of its targets.
pub(super) fn job_key(id: TaskId) -> [u8; 16] {
    *id.as_bytes()
}

/// Key of a job's target.
pub(super) fn target_key(job: TaskId, index: u32) -> Vec<u8> {
    let mut key = id_bytes(job);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn id_bytes(id: TaskId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// Reads a job id and target index from a link value or target key.
pub(super) fn split_link(bytes: &[u8]) -> Result<(TaskId, u32), StoreError> {
    let index = bytes
        .get(16..20)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .ok_or_else(|| StoreError::Codec(codec::CodecError::Corrupt("job link is not 20 bytes".into())))?;
    Ok((task_id_from(&bytes[..16])?, u32::from_be_bytes(index)))
}

fn tx_err<E: From<StoreError>>(e: StoreError) -> TxError<E> {
    TxError::Abort(e.into())
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(codec::CodecError::Corrupt(what.to_owned()))
}

/// The count of `status` in `counts`.
fn slot(counts: &mut JobCounts, status: TaskStatus) -> &mut u32 {
    match status {
        TaskStatus::Queued => &mut counts.queued,
        TaskStatus::Delivered => &mut counts.delivered,
        TaskStatus::Running => &mut counts.running,
        TaskStatus::Succeeded => &mut counts.succeeded,
        TaskStatus::Failed => &mut counts.failed,
        TaskStatus::TimedOut => &mut counts.timed_out,
        TaskStatus::Cancelled => &mut counts.cancelled,
        TaskStatus::Expired => &mut counts.expired,
        TaskStatus::Lost => &mut counts.lost,
    }
}

fn load_job<E: From<StoreError>>(tx: &Tx<'_>, id: TaskId) -> Result<Option<JobRecord>, TxError<E>> {
    tx.jobs.get(job_key(id))?.map(|bytes| decode(&bytes)).transpose()
}

/// Writes the job with its version bumped, and announces the change.
fn save_job<E>(tx: &Tx<'_>, job: &mut JobRecord) -> Result<(), TxError<E>> {
    job.version += 1;
    tx.jobs.insert(&job_key(job.id), codec::encode(job))?;
    if job.done_ms == 0 {
        tx.jobs_open.insert(&job_key(job.id), &[])?;
    } else {
        tx.jobs_open.remove(&job_key(job.id))?;
    }
    tx.announce_job(JobEvent::Changed(job.id));
    Ok(())
}

fn load_target<E: From<StoreError>>(
    tx: &Tx<'_>,
    job: TaskId,
    index: u32,
) -> Result<TargetRecord, TxError<E>> {
    match tx.job_targets.get(target_key(job, index))? {
        Some(bytes) => decode(&bytes),
        None => Err(tx_err(corrupt("a job target is missing"))),
    }
}

/// Moves the job of `task` (if it has one) along with the task's change from the stored
/// value `old`: counts, the target's end, the error limit, the window, done.
pub(super) fn follow(tx: &Tx<'_>, old: &[u8], task: &TaskRecord) -> Result<(), TxError<StoreError>> {
    let Some(link) = tx.job_links.get(task.id.as_bytes())? else { return Ok(()) };
    let old: TaskRecord = decode(old)?;
    if old.status == task.status {
        return Ok(());
    }
    let (job_id, index) = split_link(&link).map_err(tx_err)?;
    let Some(mut job) = load_job(tx, job_id)? else { return Ok(()) };
    let now_ms = task.history.last().map_or(0, |(_, t)| *t);
    let was = slot(&mut job.counts, old.status);
    *was = was.saturating_sub(1);
    job.counts.add(task.status);
    if task.status.is_final() {
        record_end(tx, job_id, index, task)?;
        stop_past_error_limit(&mut job);
        refill(tx, &mut job, now_ms)?;
    }
    mark_done(tx, &mut job, now_ms)?;
    save_job(tx, &mut job)
}

/// True when task `id` belongs to a job that was cancelled.
pub(super) fn in_cancelled_job<E: From<StoreError>>(tx: &Tx<'_>, id: TaskId) -> Result<bool, TxError<E>> {
    let Some(link) = tx.job_links.get(id.as_bytes())? else { return Ok(false) };
    let (job_id, _) = split_link(&link).map_err(tx_err)?;
    Ok(load_job(tx, job_id)?.is_some_and(|job| job.state == JobState::Cancelled))
}

/// Keeps how a target's task ended in the target record.
fn record_end<E: From<StoreError>>(
    tx: &Tx<'_>,
    job: TaskId,
    index: u32,
    task: &TaskRecord,
) -> Result<(), TxError<E>> {
    let mut target = load_target(tx, job, index)?;
    let error = task.error.as_ref().map(|e| {
        let mut end = e.len().min(TARGET_ERROR_LEN);
        while !e.is_char_boundary(end) {
            end -= 1;
        }
        e[..end].to_owned()
    });
    target.end = Some(TargetEnd {
        status: task.status,
        exit_code: task.exit_code,
        error,
        duration_ms: task.duration_ms,
    });
    tx.job_targets.insert(target_key(job, index), codec::encode(&target))?;
    Ok(())
}

/// Stops a running or paused job once its errors pass the limit: waiting targets are skipped.
fn stop_past_error_limit(job: &mut JobRecord) {
    let over = job.error_limit.is_some_and(|limit| job.counts.errors() > limit);
    if over && matches!(job.state, JobState::Running | JobState::Paused) {
        job.state = JobState::Stopped;
        skip_waiting(job);
    }
}

/// Counts every waiting target as skipped; they will never start (`next` stays where it is:
/// a target at or past it is skipped when the job is stopped or cancelled).
fn skip_waiting(job: &mut JobRecord) {
    job.counts.skipped += job.counts.waiting;
    job.counts.waiting = 0;
}

/// True while the job runs, has waiting targets and the window has room.
fn has_room(job: &JobRecord) -> bool {
    job.state == JobState::Running && job.next < job.targets && job.counts.open() < job.window
}

/// Starts waiting targets while the job runs and the window has room, at most
/// [`START_BATCH`] of them (a wider gap is filled by [`Store::top_up`]).
fn refill<E: From<StoreError>>(tx: &Tx<'_>, job: &mut JobRecord, now_ms: i64) -> Result<(), TxError<E>> {
    let mut started = 0;
    while started < START_BATCH && has_room(job) {
        start_target(tx, job, now_ms)?;
        started += 1;
    }
    Ok(())
}

/// Queues the task of target `job.next` and links it to the job (or, if its agent was
/// forgotten, ends the target without a task).
fn start_target<E: From<StoreError>>(
    tx: &Tx<'_>,
    job: &mut JobRecord,
    now_ms: i64,
) -> Result<(), TxError<E>> {
    let index = job.next;
    let mut target = load_target(tx, job.id, index)?;
    if target.offline_since_ms.is_some() {
        // Ended `offline` when the job was created (and counted then).
        job.next += 1;
        return Ok(());
    }
    if agent_forgotten(tx, &target.app_id)? {
        let note = "its agent was forgotten before its turn came".to_owned();
        return end_unstarted(tx, job, index, target, TaskStatus::Expired, note);
    }
    let stdin = tx.job_inputs.get(job_key(job.id))?.unwrap_or_default();
    if let Some(refusal) = lacks_features(tx, job, &stdin, &target.app_id)? {
        return end_unstarted(tx, job, index, target, TaskStatus::Failed, refusal);
    }
    let spec = TaskSpec {
        app_id: &target.app_id,
        task_type: &job.task_type,
        payload: &job.payload,
        env: &job.env,
        cwd: job.cwd.as_deref(),
        user: job.user.as_deref(),
        stdin: &stdin,
        timeout_secs: job.timeout_secs,
        ttl_secs: job.ttl_secs,
    };
    let mut task = TaskRecord::new(spec, new_task_id(), now_ms);
    task.secret_names = job.secret_names.clone();
    task.queue_seq = tx.take_seq()?;
    let mut link = id_bytes(job.id);
    link.extend_from_slice(&index.to_be_bytes());
    tx.job_links.insert(task.id.as_bytes(), link)?;
    let expires = task.expires_ms;
    tx.set_deadline(&mut task, expires)?;
    tx.put_task(&task)?;
    tx.queue.insert(queue_key(&task.app_id, task.queue_seq), task.id.as_bytes())?;
    tx.by_agent.insert(agent_task_key(&task.app_id, task.id), &[])?;
    tx.note(TaskEvent::Enqueued);
    target.task_id = Some(task.id);
    tx.job_targets.insert(target_key(job.id, index), codec::encode(&target))?;
    job.counts.waiting = job.counts.waiting.saturating_sub(1);
    job.counts.queued += 1;
    job.next += 1;
    tx.announce_job(JobEvent::Started(target.app_id));
    Ok(())
}

/// True when an operator forgot the agent `app_id`: a task queued for it could never be
/// delivered (it must enroll again) and would hold a place in the window until its TTL.
fn agent_forgotten<E: From<StoreError>>(tx: &Tx<'_>, app_id: &str) -> Result<bool, TxError<E>> {
    let Some(bytes) = tx.agents.get(app_id)? else { return Ok(false) };
    let agent: AgentRecord = decode(&bytes)?;
    Ok(agent.status == AgentStatus::Forgotten)
}

/// Why the job's task cannot go to agent `app_id`, when the agent did not announce a feature
/// the task needs (an original client or an older orange agent would run it wrong).
fn lacks_features<E: From<StoreError>>(
    tx: &Tx<'_>,
    job: &JobRecord,
    stdin: &[u8],
    app_id: &str,
) -> Result<Option<String>, TxError<E>> {
    let asks = features::TaskAsks {
        task_type: &job.task_type,
        env: &job.env,
        cwd: job.cwd.as_deref(),
        stdin,
        user: job.user.as_deref(),
    };
    let required = asks.required();
    if required.is_empty() {
        return Ok(None);
    }
    let announced: Vec<String> = match tx.features.get(app_id)? {
        Some(bytes) => decode::<FeaturesRecord, E>(&bytes)?.features,
        None => Vec::new(),
    };
    let missing = features::missing(&required, &announced);
    Ok((!missing.is_empty()).then(|| features::refusal(app_id, &missing)))
}

/// Ends target `index` in `status` without a task (its agent was forgotten, or lacks a feature
/// the task needs), saying why in `note`, and moves on.
fn end_unstarted<E: From<StoreError>>(
    tx: &Tx<'_>,
    job: &mut JobRecord,
    index: u32,
    mut target: TargetRecord,
    status: TaskStatus,
    note: String,
) -> Result<(), TxError<E>> {
    target.end = Some(TargetEnd { status, exit_code: None, error: Some(note), duration_ms: None });
    tx.job_targets.insert(target_key(job.id, index), codec::encode(&target))?;
    job.counts.waiting = job.counts.waiting.saturating_sub(1);
    job.counts.add(status);
    job.next += 1;
    stop_past_error_limit(job);
    Ok(())
}

/// Marks the job done once nothing is open or waiting; a running (or paused) job is then
/// finished, a stopped or cancelled one keeps its state.
fn mark_done<E>(tx: &Tx<'_>, job: &mut JobRecord, now_ms: i64) -> Result<(), TxError<E>> {
    if job.done_ms != 0 || job.counts.open() != 0 || job.counts.waiting != 0 {
        return Ok(());
    }
    job.done_ms = now_ms.max(1);
    // Its secrets are needed no more: every target has ended.
    let secret = std::mem::take(&mut job.secret_names);
    job.env.retain(|name, _| !secret.contains(name));
    job.secret_names = secret;
    if matches!(job.state, JobState::Running | JobState::Paused) {
        job.state = JobState::Finished;
    }
    tx.jobs_done.insert(time_key(job.done_ms, job.id), &[])?;
    Ok(())
}

impl Store {
    /// Creates `job` over `app_ids` (sorted, one target each) and starts its first window.
    /// Targets whose agent is in `offline` (with its last-seen time) end `offline` at once.
    pub fn create_job(
        &self,
        job: &JobRecord,
        stdin: &[u8],
        app_ids: &[String],
        offline: &HashMap<String, i64>,
    ) -> Result<JobRecord, StoreError> {
        // The targets go in first, outside the transaction: a crash before the job record is
        // written leaves only unreachable targets, and the transaction stays small.
        // (Not a sled batch: `apply_batch` takes sled's global write lock.)
        let mut offline_count = 0;
        for (index, app_id) in app_ids.iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| corrupt("too many targets"))?;
            let offline_since_ms = offline.get(app_id).copied();
            offline_count += u32::from(offline_since_ms.is_some());
            let target = TargetRecord { app_id: app_id.clone(), task_id: None, end: None, offline_since_ms };
            self.trees().job_targets.insert(target_key(job.id, index), codec::encode(&target))?;
        }
        if !stdin.is_empty() {
            self.trees().job_inputs.insert(job_key(job.id), stdin)?;
        }
        self.seqs.reserve(&self.trees(), job.window.min(START_BATCH) as usize)?;
        let created = self.transact(|tx| {
            let mut job = job.clone();
            let waiting = job.targets.saturating_sub(offline_count);
            job.counts = JobCounts { waiting, offline: offline_count, ..JobCounts::default() };
            let now_ms = job.created_ms;
            refill(tx, &mut job, now_ms)?;
            mark_done(tx, &mut job, now_ms)?;
            save_job(tx, &mut job)?;
            Ok::<_, TxError<StoreError>>(job)
        })?;
        self.fill_window(created, job.created_ms)
    }

    /// Starts more targets of `job` (as just written) until its window is full, a batch per
    /// transaction; returns the job as stored at the end.
    fn fill_window(&self, mut job: JobRecord, now_ms: i64) -> Result<JobRecord, StoreError> {
        while has_room(&job) {
            match self.top_up(job.id, now_ms)? {
                Some(more) => job = more,
                None => break,
            }
        }
        Ok(job)
    }

    /// Starts up to a batch of waiting targets of job `id` if its window has room; `None` when
    /// the job is gone.
    fn top_up(&self, id: TaskId, now_ms: i64) -> Result<Option<JobRecord>, StoreError> {
        self.seqs.reserve(&self.trees(), START_BATCH as usize)?;
        self.transact(|tx| {
            let Some(mut job) = load_job::<StoreError>(tx, id)? else { return Ok(None) };
            if has_room(&job) {
                refill(tx, &mut job, now_ms)?;
                mark_done(tx, &mut job, now_ms)?;
                save_job(tx, &mut job)?;
            }
            Ok(Some(job))
        })
    }

    /// Pauses a running job: no new target starts; open tasks go on. Pausing a paused job
    /// changes nothing.
    pub fn pause_job(&self, id: TaskId) -> Result<JobRecord, JobError> {
        self.change_job(id, "paused", |_, job| {
            Ok(match job.state {
                JobState::Paused => Change::Keep,
                JobState::Running => {
                    job.state = JobState::Paused;
                    Change::Save
                }
                _ => Change::Refuse,
            })
        })
    }

    /// Resumes a paused job and refills its window. Resuming a running job changes nothing.
    pub fn resume_job(&self, id: TaskId, now_ms: i64) -> Result<JobRecord, JobError> {
        if let Some(job) = self.job(id)? {
            self.seqs.reserve(&self.trees(), job.window.min(START_BATCH) as usize)?;
        }
        let resumed = self.change_job(id, "resumed", |tx, job| {
            Ok(match job.state {
                JobState::Running => Change::Keep,
                JobState::Paused => {
                    job.state = JobState::Running;
                    refill(tx, job, now_ms)?;
                    mark_done(tx, job, now_ms)?;
                    Change::Save
                }
                _ => Change::Refuse,
            })
        })?;
        Ok(self.fill_window(resumed, now_ms)?)
    }

    /// Runs `change` on job `id` in one transaction.
    fn change_job(
        &self,
        id: TaskId,
        action: &'static str,
        change: impl Fn(&Tx<'_>, &mut JobRecord) -> Result<Change, TxError<JobError>>,
    ) -> Result<JobRecord, JobError> {
        self.transact(|tx| {
            let Some(mut job) = load_job::<JobError>(tx, id)? else { return abort(JobError::UnknownJob(id)) };
            match change(tx, &mut job)? {
                Change::Save => save_job(tx, &mut job)?,
                Change::Keep => {}
                Change::Refuse => {
                    let (state, done) = (job.state, job.done_ms != 0);
                    return abort(JobError::BadState { id, state, done, action });
                }
            }
            Ok(job)
        })
    }

    /// Cancels a job that is not done: waiting targets are skipped, queued tasks end at once,
    /// running ones are marked for their agents (or, with `force`, end at once). Returns the
    /// job and the tasks it cancelled. Cancelling a cancelled job that is not done yet cancels
    /// what is still open (a retry after a crash half way).
    pub fn cancel_job(
        &self,
        id: TaskId,
        force: bool,
        now_ms: i64,
    ) -> Result<(JobRecord, Vec<CancelOutcome>), JobError> {
        self.transact(|tx| {
            let Some(mut job) = load_job::<JobError>(tx, id)? else { return abort(JobError::UnknownJob(id)) };
            if job.done_ms != 0 {
                let state = job.state;
                return abort(JobError::BadState { id, state, done: true, action: "cancelled" });
            }
            if job.state != JobState::Cancelled {
                job.state = JobState::Cancelled;
                skip_waiting(&mut job);
                mark_done(tx, &mut job, now_ms)?;
                save_job(tx, &mut job)?;
            }
            Ok(())
        })?;
        // No target starts any more, so the open tasks found now are all there will be.
        let cancelled = self.cancel_open_tasks(id, force, now_ms)?;
        let job = self.job(id)?.ok_or(JobError::UnknownJob(id))?;
        Ok((job, cancelled))
    }

    /// Cancels the open tasks of cancelled job `id` (with `force`, ends them at once); a task
    /// already marked is left alone unless forced.
    fn cancel_open_tasks(
        &self,
        id: TaskId,
        force: bool,
        now_ms: i64,
    ) -> Result<Vec<CancelOutcome>, StoreError> {
        let open = self.open_tasks(id)?;
        let mut cancelled = Vec::new();
        for batch in open.chunks(CANCEL_BATCH) {
            cancelled.extend(self.transact(|tx| {
                let mut outcomes = Vec::new();
                for &task_id in batch {
                    match tx.task::<StoreError>(task_id)? {
                        Some(task) if !task.status.is_final() && (force || !task.cancel_requested) => {
                            outcomes.push(cancel_open(tx, task, force, now_ms)?);
                        }
                        _ => {}
                    }
                }
                Ok::<_, TxError<StoreError>>(outcomes)
            })?);
        }
        Ok(cancelled)
    }

    /// Finishes the cancels that stopped half way (a crash between a job's cancel and the
    /// cancel of its tasks): every open, unmarked task of a cancelled job that is not done is
    /// cancelled now. Returns what was cancelled, so the agents can be told.
    pub fn finish_cancels(&self, now_ms: i64) -> Result<Vec<CancelOutcome>, StoreError> {
        let mut half_done = Vec::new();
        for value in self.trees().jobs.iter().values() {
            let job: JobRecord = codec::decode(&value?)?;
            if job.state == JobState::Cancelled && job.done_ms == 0 {
                half_done.push(job.id);
            }
        }
        let mut cancelled = Vec::new();
        for id in half_done {
            cancelled.extend(self.cancel_open_tasks(id, false, now_ms)?);
        }
        Ok(cancelled)
    }
}
