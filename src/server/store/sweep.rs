//! Time-driven moves, read from the indexes so that nothing scans every task: deadlines that
//! passed (queue expiry, unacknowledged deliveries, silent runs) and retention of finished tasks
//! and of agents gone silent.

use super::records::{TaskRecord, secs_to_ms};
use super::tx::{Tx, TxError, agent_task_key, entries_before, queue_key, time_key};
use super::{Store, StoreError};
use crate::protocol::jobs::JobState;
use crate::protocol::{TaskId, TaskStatus};

/// A task a deadline moved.
#[derive(Debug, Clone)]
pub struct Swept {
    /// The task after the move.
    pub task: TaskRecord,
    /// It went back to its agent's queue (wake the agent).
    pub requeued: bool,
}

/// Most times a task is handed out without an acknowledgement before it ends `lost`.
pub const MAX_DELIVERIES: u32 = 10;
/// Most entries one sweep handles, so a sweep never holds the server up for long.
const SWEEP_BATCH: usize = 1000;

impl Store {
    /// Applies every deadline due at `now_ms` (at most a batch): a queued task ends `expired`,
    /// an unacknowledged delivery goes back to the front of its queue, a run that went silent
    /// ends `lost`.
    pub fn sweep_deadlines(&self, now_ms: i64) -> Result<Vec<Swept>, StoreError> {
        let due = entries_before(&self.trees().deadlines, now_ms.saturating_add(1), SWEEP_BATCH)?;
        let mut swept = Vec::new();
        for (deadline, id) in due {
            if let Some(moved) = self.transact(|tx| self.pass_deadline(tx, deadline, id, now_ms))? {
                swept.push(moved);
            }
        }
        Ok(swept)
    }

    /// Puts the deliveries an earlier process made and no agent acknowledged yet back at the
    /// front of their queues, at start: the answer that carried one may have been lost with
    /// that process, and its agent must get it again before the tasks queued behind it, or
    /// they would run first (its ack window would hand it out again only later). An agent that
    /// did get it re-reports it from its journal instead of running it twice. Returns how
    /// many went back. One handed out [`MAX_DELIVERIES`] times is left to its deadline. Such
    /// a delivery's deadline is within one ack window of now, so only that part of the
    /// deadline index is read.
    pub fn requeue_unacknowledged(&self, now_ms: i64) -> Result<usize, StoreError> {
        let horizon = now_ms.saturating_add(self.policy.ack_window_ms).saturating_add(1);
        let due = entries_before(&self.trees().deadlines, horizon, usize::MAX)?;
        let mut requeued = 0;
        for (deadline, id) in due {
            let moved = self.transact(|tx| {
                let task = tx.task::<StoreError>(id)?;
                let Some(mut task) = task.filter(|t| {
                    t.deadline_ms == deadline
                        && t.status == TaskStatus::Delivered
                        && t.ack_required
                        && !t.cancel_requested
                        && t.attempt < MAX_DELIVERIES
                }) else {
                    return Ok(false);
                };
                task.move_to(TaskStatus::Queued, now_ms);
                task.ack_required = false;
                tx.queue.insert(queue_key(&task.app_id, task.queue_seq), id.as_bytes())?;
                let expires = task.expires_ms;
                tx.set_deadline(&mut task, expires)?;
                tx.put_task(&task)?;
                Ok::<_, TxError<StoreError>>(true)
            })?;
            requeued += usize::from(moved);
        }
        Ok(requeued)
    }

    fn pass_deadline(
        &self,
        tx: &Tx<'_>,
        deadline: i64,
        id: TaskId,
        now_ms: i64,
    ) -> Result<Option<Swept>, TxError<StoreError>> {
        if !tx.deadlines.claim(&time_key(deadline, id))? {
            return Ok(None); // passed already, or being passed by another server's sweep
        }
        let task = tx.task::<StoreError>(id)?;
        let Some(mut task) = task.filter(|t| t.deadline_ms == deadline && !t.status.is_final()) else {
            tx.deadlines.remove(time_key(deadline, id))?; // stale index entry
            return Ok(None);
        };
        let requeue = task.status == TaskStatus::Delivered
            && task.ack_required
            && !task.cancel_requested
            && task.attempt < MAX_DELIVERIES
            && task.expires_ms > now_ms;
        if requeue {
            task.move_to(TaskStatus::Queued, now_ms);
            task.ack_required = false;
            tx.queue.insert(queue_key(&task.app_id, task.queue_seq), id.as_bytes())?;
            let expires = task.expires_ms;
            tx.set_deadline(&mut task, expires)?;
        } else {
            let (status, note) = match task.status {
                TaskStatus::Queued => {
                    (TaskStatus::Expired, "never delivered before its time to live ran out")
                }
                TaskStatus::Delivered if task.ack_required => {
                    (TaskStatus::Expired, "handed out but never acknowledged before its time to live ran out")
                }
                _ => (TaskStatus::Lost, "its agent went silent: no result before the timeout plus grace"),
            };
            if task.status == TaskStatus::Queued {
                tx.queue.remove(queue_key(&task.app_id, task.queue_seq))?;
            }
            task.move_to(status, now_ms);
            task.error = Some(note.to_owned());
            tx.close(&mut task, now_ms)?;
        }
        tx.put_task(&task)?;
        Ok(Some(Swept { task, requeued: requeue }))
    }

    /// The open tasks of jobs not done that have a host timeout, each with that timeout in
    /// milliseconds (tasks of a cancelled job are left to the cancel; queued tasks of a job sent
    /// with `queue` wait for their agent within their TTL).
    pub fn open_job_tasks(&self) -> Result<Vec<(TaskRecord, i64)>, StoreError> {
        let mut open = Vec::new();
        for key in self.trees().jobs_open.iter().keys() {
            let Some(job) = self.job(super::tx::task_id_from(&key?)?)? else { continue };
            if job.host_timeout_secs == 0 || job.done_ms != 0 || job.state == JobState::Cancelled {
                continue;
            }
            let timeout_ms = secs_to_ms(job.host_timeout_secs);
            for id in self.open_tasks(job.id)? {
                let waits = |t: &TaskRecord| job.queue && t.status == TaskStatus::Queued;
                if let Some(task) = self.task(id)?.filter(|t| !t.status.is_final() && !waits(t)) {
                    open.push((task, timeout_ms));
                }
            }
        }
        Ok(open)
    }

    /// Ends open task `id` because its agent went silent: `expired` if it was still queued,
    /// else `lost`, with `note` as its error. `None` if it had ended already.
    pub fn end_silent(&self, id: TaskId, note: &str, now_ms: i64) -> Result<Option<TaskRecord>, StoreError> {
        self.transact(|tx| {
            let Some(mut task) = tx.task::<StoreError>(id)?.filter(|t| !t.status.is_final()) else {
                return Ok(None);
            };
            let status = if task.status == TaskStatus::Queued {
                tx.queue.remove(queue_key(&task.app_id, task.queue_seq))?;
                TaskStatus::Expired
            } else {
                TaskStatus::Lost
            };
            task.move_to(status, now_ms);
            task.error = Some(note.to_owned());
            tx.close(&mut task, now_ms)?;
            tx.put_task(&task)?;
            Ok::<_, TxError<StoreError>>(Some(task))
        })
    }

    /// Removes finished tasks (record, index entries, output) that finished before `cutoff_ms`
    /// (at most a batch); returns how many.
    pub fn sweep_finished(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let old = entries_before(&self.trees().finished, cutoff_ms, SWEEP_BATCH)?;
        for &(ms, id) in &old {
            let key = time_key(ms, id);
            // Output first: if this stops half way, the index entry still leads here next time.
            self.delete_output(id)?;
            self.delete_file(id)?;
            self.transact(|tx| {
                tx.finished.remove(key.as_slice())?;
                if let Some(task) = tx.task::<StoreError>(id)? {
                    tx.tasks.remove(id.as_bytes())?;
                    tx.by_agent.remove(agent_task_key(&task.app_id, id))?;
                    tx.cancels.remove(agent_task_key(&task.app_id, id))?;
                }
                Ok::<_, TxError<StoreError>>(())
            })?;
        }
        Ok(old.len())
    }

    /// Removes agents not seen since `cutoff_ms` that have no task waiting in their queue;
    /// returns their app ids.
    pub fn forget_silent_agents(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut forgotten = Vec::new();
        for agent in self.agents()? {
            let queued =
                self.trees().queue.scan_prefix(super::tx::agent_prefix(&agent.app_id)).next().is_some();
            if agent.last_seen_ms < cutoff_ms && !queued {
                self.trees().agents.remove(agent.app_id.as_bytes())?;
                self.remove_facts(&agent.app_id)?;
                forgotten.push(agent.app_id);
            }
        }
        Ok(forgotten)
    }
}
