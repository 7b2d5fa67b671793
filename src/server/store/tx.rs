//! Keys of every tree and the transaction view ([`Tx`]: the trees of `trees.rs` and the
//! transaction's queue numbers and job events), with the small moves that keep the indexes in
//! step with a task record (queue entry, deadline, finished index), the cancel of an open task
//! and the check that a reported task is the reporter's.

use std::cell::{Cell, RefCell};
use std::ops::Deref;

use sled::transaction::ConflictableTransactionError;

use super::events::JobEvent;
use super::records::{AgentRecord, TaskRecord};
use super::seq::SeqPool;
use super::trees::TxTrees;
use super::{ReportError, StoreError};
use crate::protocol::{TaskId, TaskStatus};
use crate::server::codec;
use crate::server::metrics::TaskEvent;

/// An error inside a transaction: aborts it with `E`.
pub type TxError<E> = ConflictableTransactionError<E>;

/// Aborts the transaction with `e`.
pub fn abort<T, E>(e: impl Into<E>) -> Result<T, TxError<E>> {
    Err(ConflictableTransactionError::Abort(e.into()))
}

/// `app_id`, 0: the prefix of an agent's queue and task index.
pub fn agent_prefix(app_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(app_id.len() + 17);
    key.extend_from_slice(app_id.as_bytes());
    key.push(0);
    key
}

/// Key of a queue entry.
pub fn queue_key(app_id: &str, seq: u64) -> Vec<u8> {
    let mut key = agent_prefix(app_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Key of an agent's task (task index and pending cancels).
pub fn agent_task_key(app_id: &str, id: TaskId) -> Vec<u8> {
    let mut key = agent_prefix(app_id);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Key of a time index entry: big-endian time, then the task id.
pub fn time_key(ms: i64, id: TaskId) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&ms.max(0).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// The entries of a time index (`deadlines`, `finished`, `jobs_done`: time, then an id) before
/// `before_ms`, oldest first, at most `limit`.
pub fn entries_before(
    tree: &super::logged::LoggedTree,
    before_ms: i64,
    limit: usize,
) -> Result<Vec<(i64, TaskId)>, StoreError> {
    tree.range(..time_key(before_ms, TaskId::nil()))
        .keys()
        .take(limit)
        .map(|key| {
            let key = key?;
            let (ms, id) =
                key.split_at_checked(8).ok_or_else(|| corrupt_key("time index key is too short"))?;
            let ms =
                i64::from_be_bytes(ms.try_into().map_err(|_| corrupt_key("time index key is too short"))?);
            Ok((ms, task_id_from(id)?))
        })
        .collect()
}

fn corrupt_key(what: &str) -> StoreError {
    StoreError::Codec(codec::CodecError::Corrupt(what.into()))
}

/// Key of an output chunk.
pub fn chunk_key(id: TaskId, seq: u32) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Reads a task id from 16 bytes.
pub fn task_id_from(bytes: &[u8]) -> Result<TaskId, StoreError> {
    TaskId::from_slice(bytes).map_err(|_| corrupt_key("task id is not 16 bytes"))
}

/// What a transaction announces once it commits, and only then (an attempt that runs again
/// starts from nothing): its moves of jobs to their relay, its moves of tasks to the metrics.
#[derive(Debug, Default)]
pub struct Announced {
    /// What the transaction did to jobs.
    pub jobs: Vec<JobEvent>,
    /// What the transaction did to tasks that the metrics count.
    pub tasks: Vec<TaskEvent>,
}

/// Every tree a transaction uses (through [`Deref`] to [`TxTrees`]), and what the
/// transaction needs besides: queue numbers and what it announces.
pub struct Tx<'a> {
    /// The trees.
    pub trees: TxTrees<'a>,
    /// Queue sequence numbers reserved for tasks a job starts.
    pub seqs: &'a SeqPool,
    /// Queue numbers this attempt asked `seqs` for.
    pub seqs_wanted: &'a Cell<usize>,
    /// Set when the pool ran dry in this attempt.
    pub seq_short: &'a Cell<bool>,
    /// What the transaction announces once it commits.
    pub announced: &'a RefCell<Announced>,
    /// Moves what follows a task's change of state (its job), in this transaction: called by
    /// [`Tx::put_task`] with the task's previous stored value.
    pub follow: Follow,
}

/// What [`Tx::put_task`] calls when it replaces a task record (see `jobs::follow`).
pub type Follow = fn(&Tx<'_>, &[u8], &TaskRecord) -> Result<(), TxError<StoreError>>;

impl<'a> Deref for Tx<'a> {
    type Target = TxTrees<'a>;

    fn deref(&self) -> &TxTrees<'a> {
        &self.trees
    }
}

impl Tx<'_> {
    /// Takes a reserved queue number; when none is left, aborts with `StoreError::Io` and marks
    /// the attempt short so that `Store::transact` reserves more and runs it again.
    /// On PostgreSQL the number is the ids' sequence's next, taken on this transaction's own
    /// connection.
    pub fn take_seq<E: From<StoreError>>(&self) -> Result<u64, TxError<E>> {
        let seqs = self.take_seqs(1)?;
        // take_seqs(1) gives one number or fails.
        seqs.first().copied().ok_or_else(|| TxError::Abort(E::from(StoreError::Io("no queue number".into()))))
    }

    /// Takes `count` queue numbers, in increasing order, as [`Tx::take_seq`] does; on
    /// PostgreSQL with one statement.
    pub fn take_seqs<E: From<StoreError>>(&self, count: usize) -> Result<Vec<u64>, TxError<E>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        if let Some(seqs) = self.trees.tasks.next_ids_here(count) {
            return Ok(seqs?);
        }
        self.seqs_wanted.set(self.seqs_wanted.get() + count);
        let seqs: Vec<u64> = std::iter::from_fn(|| self.seqs.take()).take(count).collect();
        if seqs.len() < count {
            self.seq_short.set(true);
            return abort(StoreError::Io("no queue sequence number was reserved for a task".into()));
        }
        Ok(seqs)
    }

    /// The task `id`, if stored.
    pub fn task<E: From<StoreError>>(&self, id: TaskId) -> Result<Option<TaskRecord>, TxError<E>> {
        self.tasks.get(id.as_bytes())?.map(|bytes| decode(&bytes)).transpose()
    }

    /// Writes a task record. A change of state of a job's task moves the job along with it
    /// (counts, window, error limit), in this same transaction. A task that has ended is
    /// written without its stdin (nothing reads it again, and it may be megabytes) and without
    /// the values of its secret environment variables.
    pub fn put_task<E: From<StoreError>>(&self, task: &TaskRecord) -> Result<(), TxError<E>> {
        let keeps_inputs =
            !task.stdin.is_empty() || task.secret_names.iter().any(|n| task.env.contains_key(n));
        let bytes = if task.status.is_final() && keeps_inputs {
            let mut ended = TaskRecord { stdin: Vec::new(), ..task.clone() };
            ended.env.retain(|name, _| !task.secret_names.contains(name));
            codec::encode(&ended)
        } else {
            codec::encode(task)
        };
        // Only a job's task needs the value it replaces (the job follows its change of state):
        // a task outside jobs is written without reading it back from sled.
        if self.job_links.get(task.id.as_bytes())?.is_none() {
            self.tasks.put(task.id.as_bytes(), bytes);
        } else if let Some(old) = self.tasks.insert(task.id.as_bytes(), bytes)? {
            (self.follow)(self, &old, task).map_err(widen)?;
        }
        Ok(())
    }

    /// Moves the task's indexed deadline to `deadline_ms` (0: none).
    pub fn set_deadline<E>(&self, task: &mut TaskRecord, deadline_ms: i64) -> Result<(), TxError<E>> {
        if task.deadline_ms != 0 {
            self.deadlines.delete(time_key(task.deadline_ms, task.id));
        }
        if deadline_ms != 0 {
            self.deadlines.put(time_key(deadline_ms, task.id), &[]);
        }
        task.deadline_ms = deadline_ms;
        Ok(())
    }

    /// Bookkeeping of a task that just reached a final state: no deadline, no pending cancel,
    /// an entry in the finished index, and one more processed task for its agent.
    pub fn close<E: From<StoreError>>(&self, task: &mut TaskRecord, now_ms: i64) -> Result<(), TxError<E>> {
        self.set_deadline(task, 0)?;
        task.cancel_requested = false;
        self.cancels.delete(agent_task_key(&task.app_id, task.id));
        self.finished.put(time_key(now_ms, task.id), &[]);
        self.note(TaskEvent::Finished { status: task.status, took_ms: now_ms - task.created_ms() });
        self.count_processed(&task.app_id)
    }

    /// Notes a task event for the metrics, counted if the transaction commits.
    pub fn note(&self, event: TaskEvent) {
        self.announced.borrow_mut().tasks.push(event);
    }

    /// Notes a job event for the jobs' relay, announced if the transaction commits.
    pub fn announce_job(&self, event: JobEvent) {
        self.announced.borrow_mut().jobs.push(event);
    }

    fn count_processed<E: From<StoreError>>(&self, app_id: &str) -> Result<(), TxError<E>> {
        let Some(bytes) = self.agents.get(app_id)? else { return Ok(()) };
        let mut agent: AgentRecord = decode(&bytes)?;
        agent.processed_task_count += 1;
        self.agents.put(app_id.as_bytes(), codec::encode(&agent));
        Ok(())
    }
}

/// An error of a transaction step that aborts with a [`StoreError`], as an error of a
/// transaction that aborts with `E`.
fn widen<E: From<StoreError>>(e: TxError<StoreError>) -> TxError<E> {
    match e {
        ConflictableTransactionError::Abort(e) => ConflictableTransactionError::Abort(e.into()),
        ConflictableTransactionError::Conflict => ConflictableTransactionError::Conflict,
        ConflictableTransactionError::Storage(e) => ConflictableTransactionError::Storage(e),
    }
}

/// Decodes a stored value inside a transaction, aborting it on a corrupt value.
pub fn decode<T: codec::Record, E: From<StoreError>>(bytes: &[u8]) -> Result<T, TxError<E>> {
    codec::decode(bytes).map_err(|e| ConflictableTransactionError::Abort(StoreError::from(e).into()))
}

/// What a cancel did.
#[derive(Debug, Clone)]
pub struct CancelOutcome {
    /// The task after the cancel.
    pub task: TaskRecord,
    /// Its agent may be running it and must be told to stop.
    pub tell_agent: bool,
}

/// Cancels `task`, which is not final: see `Store::cancel`.
pub(super) fn cancel_open<E: From<StoreError>>(
    tx: &Tx<'_>,
    mut task: TaskRecord,
    force: bool,
    now_ms: i64,
) -> Result<CancelOutcome, TxError<E>> {
    let queued = task.status == TaskStatus::Queued;
    if queued {
        tx.queue.delete(queue_key(&task.app_id, task.queue_seq));
    }
    if queued || force {
        task.move_to(TaskStatus::Cancelled, now_ms);
        task.error = Some(cancel_note(queued).to_owned());
        tx.close(&mut task, now_ms)?;
    } else {
        task.cancel_requested = true;
    }
    if !queued {
        tx.cancels.put(agent_task_key(&task.app_id, task.id), &[]);
    }
    tx.put_task(&task)?;
    Ok(CancelOutcome { tell_agent: !queued, task })
}

fn cancel_note(queued: bool) -> &'static str {
    if queued {
        "cancelled before it was delivered"
    } else {
        "cancelled by force on the server; its agent was told to stop it"
    }
}

/// The task `id`, checked to belong to `app_id`.
pub(super) fn owned_task(tx: &Tx<'_>, app_id: &str, id: TaskId) -> Result<TaskRecord, TxError<ReportError>> {
    let Some(task) = tx.task::<ReportError>(id)? else { return abort(ReportError::UnknownTask(id)) };
    if task.app_id != app_id {
        return abort(ReportError::NotYours(id));
    }
    Ok(task)
}
