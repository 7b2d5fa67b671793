//! Task moves: enqueue, hand out the next task, apply an agent's report, cancel. Each is one
//! transaction that keeps the queue, the deadline index and the finished index in step with the
//! task record.

use super::records::{Outcome, TaskRecord, secs_to_ms};
use super::tx::{
    CancelOutcome, Tx, TxError, abort, agent_prefix, agent_task_key, cancel_open, queue_key, task_id_from,
};
use super::{ReportError, Store, StoreError, jobs, output};
use crate::protocol::features;
use crate::protocol::{TaskId, TaskStatus};
use crate::server::metrics::TaskEvent;

/// How a task is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// To an orange agent, which acknowledges with a `doing` report within the ack window;
    /// without it the task is handed out again.
    Acknowledged,
    /// To an original client, which sends no acknowledgement: its first report counts, and the
    /// task is never handed out again (it may have run); it ends `lost` at the end of its run.
    Legacy,
}

/// Ends queued `task` `failed` without handing it out: its agent lacks the `missing` features
/// (it would run the task wrong).
fn refuse_unsupported(
    tx: &Tx<'_>,
    mut task: TaskRecord,
    missing: &[&str],
    now_ms: i64,
) -> Result<(), TxError<StoreError>> {
    task.move_to(TaskStatus::Failed, now_ms);
    task.error = Some(features::refusal(&task.app_id, missing));
    tx.close(&mut task, now_ms)?;
    tx.put_task(&task)
}

/// Refuses a report or output chunk that names `attempt`, a delivery of `task` earlier than
/// its current one: its sender's lease was superseded (it may run the task too late, or a
/// clone of its agent does). One that names no attempt (an original client) passes.
pub(super) fn fence(task: &TaskRecord, attempt: Option<u32>) -> Result<(), ReportError> {
    match attempt {
        Some(attempt) if attempt < task.attempt => {
            Err(ReportError::Superseded { id: task.id, attempt, current: task.attempt })
        }
        _ => Ok(()),
    }
}

/// What one attempt of [`Store::take_next`] took from the queue.
enum Taken {
    /// The queue is empty (or what is left is held by other polls).
    Nothing,
    /// The task, now delivered.
    Task(Box<TaskRecord>),
    /// A task refused for a missing feature: it ended `failed`.
    Refused(TaskId),
    /// An entry left behind (its task ended or is cancelled): it is gone now.
    Stale,
}

impl Store {
    /// Queues `tasks` (each at the end of its agent's queue) in one transaction. Ids already
    /// stored are skipped, so retrying an enqueue with the same ids is safe.
    pub fn enqueue(&self, tasks: &mut [TaskRecord]) -> Result<(), StoreError> {
        // Numbers come from the pool jobs use too, taken inside the transaction (transactions
        // run one at a time), so queue order stays the order of enqueues, also across a
        // compaction.
        self.seqs.reserve(&self.trees(), tasks.len())?;
        self.transact(|tx| {
            let ids: Vec<&[u8]> = tasks.iter().map(|task| task.id.as_bytes().as_slice()).collect();
            let stored = tx.tasks.contains_each(&ids)?;
            let mut seen = std::collections::HashSet::new();
            // Those stored by an earlier try of this enqueue, or named twice in this one, are
            // left out.
            let new: Vec<&TaskRecord> = tasks
                .iter()
                .zip(stored)
                .filter(|(task, stored)| !stored && seen.insert(task.id))
                .map(|(t, _)| t)
                .collect();
            let seqs = tx.take_seqs(new.len())?;
            for (task, seq) in new.into_iter().zip(seqs) {
                let mut task = task.clone();
                task.queue_seq = seq;
                let expires = task.expires_ms;
                tx.set_deadline(&mut task, expires)?;
                tx.put_task(&task)?;
                tx.queue.put(queue_key(&task.app_id, task.queue_seq), task.id.as_bytes());
                tx.by_agent.put(agent_task_key(&task.app_id, task.id), &[]);
                tx.note(TaskEvent::Enqueued);
            }
            Ok::<_, TxError<StoreError>>(())
        })
    }

    /// Takes the oldest queued task of `app_id` and marks it delivered. A queued task that
    /// needs a feature the polling agent did not announce (`features`) is not handed out: it
    /// ends `failed` at once, saying which, and its id goes to `refused`.
    pub fn take_next(
        &self,
        app_id: &str,
        delivery: Delivery,
        features: &[String],
        refused: &mut Vec<TaskId>,
        now_ms: i64,
    ) -> Result<Option<TaskRecord>, StoreError> {
        let prefix = agent_prefix(app_id);
        loop {
            // An empty queue, what most polls find, costs one read and no transaction.
            if self.trees().queue.scan_prefix(&prefix).next().transpose()?.is_none() {
                return Ok(None);
            }
            let taken = self.transact(|tx| {
                // The first entry no other poll of this agent holds (on PostgreSQL, a poll
                // through another server takes the next one instead of waiting).
                let Some((key, id)) = tx.queue.claim_first(&prefix)? else { return Ok(Taken::Nothing) };
                tx.queue.delete(&key);
                let id = task_id_from(&id).map_err(TxError::Abort)?;
                let Some(mut task) = tx.task::<StoreError>(id)? else { return Ok(Taken::Stale) };
                if task.status != TaskStatus::Queued || task.cancel_requested {
                    return Ok(Taken::Stale); // a stale entry; it is gone now
                }
                if jobs::in_cancelled_job(tx, id)? {
                    // Its job's cancel stopped half way (a crash): finish it for this task.
                    cancel_open(tx, task, false, now_ms)?;
                    return Ok(Taken::Stale);
                }
                let missing = features::missing(&task.required_features(), features);
                if !missing.is_empty() {
                    refuse_unsupported(tx, task, &missing, now_ms)?;
                    return Ok(Taken::Refused(id));
                }
                task.move_to(TaskStatus::Delivered, now_ms);
                task.attempt = task.attempt.saturating_add(1);
                task.ack_required = delivery == Delivery::Acknowledged;
                let deadline = match delivery {
                    Delivery::Acknowledged => now_ms + self.policy.ack_window_ms,
                    Delivery::Legacy => self.run_deadline(&task, now_ms),
                };
                tx.set_deadline(&mut task, deadline)?;
                tx.put_task(&task)?;
                tx.note(TaskEvent::Delivered { waited_ms: now_ms - task.created_ms() });
                Ok::<_, TxError<StoreError>>(Taken::Task(Box::new(task)))
            })?;
            match taken {
                Taken::Task(task) => return Ok(Some(*task)),
                Taken::Nothing => return Ok(None),
                Taken::Refused(id) => refused.push(id),
                Taken::Stale => {}
            }
        }
    }

    /// When a task started at `now_ms` must have reported: its timeout plus the grace.
    fn run_deadline(&self, task: &TaskRecord, now_ms: i64) -> i64 {
        now_ms.saturating_add(secs_to_ms(task.timeout_secs)).saturating_add(self.policy.lost_grace_ms)
    }

    /// Applies an agent's report. A repeated report of the state the task is already in is
    /// accepted and changes nothing. A report for a task still queued (its delivery was not yet
    /// on disk when the server restarted) takes it out of the queue: it must not run again.
    pub fn apply_report(
        &self,
        app_id: &str,
        id: TaskId,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<TaskRecord, ReportError> {
        self.transact(|tx| self.report_in(tx, app_id, id, outcome, now_ms))?
    }

    /// Applies several reports of `app_id` in order, in one transaction, each as
    /// [`Store::apply_report`] would: a refused one changes nothing (but a cleared cancel) and
    /// does not stop the others. One record in the log and one write of each touched record
    /// (the agent's counter) instead of one per report.
    pub fn apply_reports(
        &self,
        app_id: &str,
        reports: &[(TaskId, Outcome)],
        now_ms: i64,
    ) -> Result<Vec<Result<TaskRecord, ReportError>>, StoreError> {
        self.transact(|tx| {
            reports.iter().map(|(id, outcome)| self.report_in(tx, app_id, *id, outcome, now_ms)).collect()
        })
    }

    /// One report inside a transaction: the task after it, or why it was refused.
    fn report_in(
        &self,
        tx: &Tx<'_>,
        app_id: &str,
        id: TaskId,
        outcome: &Outcome,
        now_ms: i64,
    ) -> Result<Result<TaskRecord, ReportError>, TxError<StoreError>> {
        let mut task = match tx.task::<StoreError>(id)? {
            None => return Ok(Err(ReportError::UnknownTask(id))),
            Some(task) if task.app_id != app_id => return Ok(Err(ReportError::NotYours(id))),
            Some(task) => task,
        };
        if let Err(superseded) = fence(&task, outcome.attempt) {
            return Ok(Err(superseded));
        }
        if task.status == outcome.status || task.status.is_final() {
            // The agent is done with it either way: no cancel is pending any more.
            tx.cancels.delete(agent_task_key(app_id, id));
            return Ok(if task.status == outcome.status {
                Ok(task)
            } else {
                Err(ReportError::AlreadyFinished { id, status: task.status })
            });
        }
        self.start_if_needed(tx, &mut task, outcome.status, now_ms)?;
        if !task.status.can_move_to(outcome.status) {
            return Ok(Err(ReportError::BadMove { id, from: task.status, to: outcome.status }));
        }
        task.move_to(outcome.status, now_ms);
        task.exit_code = outcome.exit_code.or(task.exit_code);
        task.error = outcome.error.clone().or(task.error.take());
        task.duration_ms = outcome.duration_ms.or(task.duration_ms);
        if task.status.is_final() {
            for (stream, bytes) in &outcome.output {
                output::append(tx, &mut task, *stream, bytes, self.policy.output_cap)?;
            }
            tx.close(&mut task, now_ms)?;
        }
        tx.put_task(&task)?;
        Ok(Ok(task))
    }

    /// Brings a task that an agent evidently runs to `running`: out of the queue if its
    /// delivery was lost with a restart, acknowledged, with the deadline of a run.
    pub(super) fn start_if_needed<E>(
        &self,
        tx: &Tx<'_>,
        task: &mut TaskRecord,
        next: TaskStatus,
        now_ms: i64,
    ) -> Result<(), TxError<E>> {
        if task.status == TaskStatus::Queued {
            tx.queue.delete(queue_key(&task.app_id, task.queue_seq));
            task.move_to(TaskStatus::Delivered, now_ms);
        }
        if task.status == TaskStatus::Delivered {
            task.ack_required = false;
            if next != TaskStatus::Running {
                task.move_to(TaskStatus::Running, now_ms);
            }
            let deadline = self.run_deadline(task, now_ms);
            tx.set_deadline(task, deadline)?;
        }
        Ok(())
    }

    /// Cancels a task: a queued one ends at once; a delivered or running one is marked so its
    /// agent stops it (or, with `force`, ends at once on the server while the agent is still
    /// told to stop it).
    pub fn cancel(&self, id: TaskId, force: bool, now_ms: i64) -> Result<CancelOutcome, ReportError> {
        self.transact(|tx| {
            let Some(task) = tx.task::<ReportError>(id)? else {
                return abort(ReportError::UnknownTask(id));
            };
            if task.status.is_final() {
                return abort(ReportError::AlreadyFinished { id, status: task.status });
            }
            cancel_open(tx, task, force, now_ms)
        })
    }

    /// How many tasks wait in `app_id`'s queue, counting no further than `limit`.
    pub fn queued_count(&self, app_id: &str, limit: usize) -> usize {
        self.trees().queue.scan_prefix(agent_prefix(app_id)).keys().take(limit).count()
    }

    /// Ids of `app_id`'s tasks that it must stop.
    pub fn pending_cancels(&self, app_id: &str) -> Result<Vec<TaskId>, StoreError> {
        let prefix = agent_prefix(app_id);
        self.trees().cancels.scan_prefix(&prefix).keys().map(|k| task_id_from(&k?[prefix.len()..])).collect()
    }
}
