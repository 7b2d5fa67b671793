//! The only module that knows sled: agents, per-agent FIFO queues, task records and their output,
//! and making writes durable (flush plus fsync, through the group committer).
//!
//! Trees and keys:
//! - `agents`:   app id → [`AgentRecord`]
//! - `tasks`:    task id (16 bytes, UUID v7 so keys sort by creation) → [`TaskRecord`]
//! - `queue`:    app id, 0, sequence (u64 big-endian) → task id: each agent's FIFO
//! - `by_agent`: app id, 0, task id → empty: an agent's tasks, oldest first
//! - `output`:   task id, stream, chunk number (u32 big-endian) → raw bytes of at most
//!   [`CHUNK_LEN`], so that no value reaches sled's blob threshold (128 KiB), whose files sled
//!   does not fsync.
//!
//! Writes are applied in memory first; [`Store::durable`] returns once they are on stable storage.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use thiserror::Error;

use super::codec::{self, CodecError};
use super::commit::Committer;
use crate::protocol::{TaskId, TaskStatus};

/// Largest stored output chunk.
pub const CHUNK_LEN: usize = 32 * 1024;

/// A failure of the database itself.
#[derive(Debug, Error)]
pub enum StoreError {
    /// sled reported an I/O or corruption error.
    #[error("database error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value did not decode.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The flush or fsync failed.
    #[error("{0}")]
    Sync(String),
    /// The data directory could not be prepared.
    #[error("{0}")]
    Io(String),
}

/// Why a report was refused.
#[derive(Debug, Error)]
pub enum ReportError {
    /// No task has this id.
    #[error("unknown task {0}")]
    UnknownTask(TaskId),
    /// The task belongs to another agent.
    #[error("task {0} belongs to another agent")]
    NotYours(TaskId),
    /// The task already ended in another state.
    #[error("task {id} already finished as {status}")]
    AlreadyFinished {
        /// The task.
        id: TaskId,
        /// Its final state.
        status: TaskStatus,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A registered agent.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentRecord {
    /// App id.
    pub app_id: String,
    /// The secret it signs with.
    pub secret: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Agent version, if it said.
    pub version: Option<String>,
    /// Host name, if it said.
    pub hostname: Option<String>,
    /// Unix milliseconds of the first registration.
    pub registered_at_ms: i64,
    /// Unix milliseconds of its last request.
    pub last_seen_ms: i64,
    /// Tasks it has finished.
    pub processed_task_count: u64,
}

impl std::fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRecord")
            .field("app_id", &self.app_id)
            .field("secret", &"***")
            .finish_non_exhaustive()
    }
}

/// A task and everything known about it except its output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskRecord {
    /// Task id.
    pub id: TaskId,
    /// The agent it is for.
    pub app_id: String,
    /// Task type.
    pub task_type: String,
    /// Input.
    pub payload: String,
    /// Current state.
    pub status: TaskStatus,
    /// Seconds the agent may run it.
    pub timeout_secs: u64,
    /// Each state reached, with Unix milliseconds.
    pub history: Vec<(TaskStatus, i64)>,
    /// Position in its agent's queue.
    pub queue_seq: u64,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Why it failed without running.
    pub error: Option<String>,
    /// Run time the agent measured.
    pub duration_ms: Option<u64>,
}

impl TaskRecord {
    /// A new queued task.
    pub fn new(
        id: TaskId,
        app_id: &str,
        task_type: &str,
        payload: &str,
        timeout_secs: u64,
        now_ms: i64,
    ) -> Self {
        TaskRecord {
            id,
            app_id: app_id.to_owned(),
            task_type: task_type.to_owned(),
            payload: payload.to_owned(),
            status: TaskStatus::Queued,
            timeout_secs,
            history: vec![(TaskStatus::Queued, now_ms)],
            queue_seq: 0,
            exit_code: None,
            error: None,
            duration_ms: None,
        }
    }

    /// Unix milliseconds at which the task was created.
    pub fn created_ms(&self) -> i64 {
        self.history.first().map_or(0, |(_, t)| *t)
    }

    fn move_to(&mut self, status: TaskStatus, now_ms: i64) {
        self.status = status;
        self.history.push((status, now_ms));
    }
}

/// The captured output streams of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stream {
    /// Standard output.
    Stdout = 0,
    /// Standard error.
    Stderr = 1,
    /// The original protocol's free-form result text.
    Result = 2,
}

/// What an agent reported about a task.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The state the task moves to.
    pub status: TaskStatus,
    /// Process exit code.
    pub exit_code: Option<i32>,
    /// Why it failed without running.
    pub error: Option<String>,
    /// Run time.
    pub duration_ms: Option<u64>,
    /// Output per stream.
    pub output: Vec<(Stream, Vec<u8>)>,
}

/// The embedded database.
pub struct Store {
    db: sled::Db,
    agents: sled::Tree,
    tasks: sled::Tree,
    queue: sled::Tree,
    by_agent: sled::Tree,
    output: sled::Tree,
    committer: Committer,
}

/// Aborts a sled transaction with `e`.
fn abort<T, E>(e: impl Into<E>) -> Result<T, ConflictableTransactionError<E>> {
    Err(ConflictableTransactionError::Abort(e.into()))
}

fn flatten<T, E: From<StoreError>>(result: Result<T, TransactionError<E>>) -> Result<T, E> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e).into(),
    })
}

fn agent_prefix(app_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(app_id.len() + 17);
    key.extend_from_slice(app_id.as_bytes());
    key.push(0);
    key
}

fn queue_key(app_id: &str, seq: u64) -> Vec<u8> {
    let mut key = agent_prefix(app_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn by_agent_key(app_id: &str, id: TaskId) -> Vec<u8> {
    let mut key = agent_prefix(app_id);
    key.extend_from_slice(id.as_bytes());
    key
}

fn output_prefix(id: TaskId, stream: Stream) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.push(stream as u8);
    key
}

fn task_id_from(bytes: &[u8]) -> Result<TaskId, StoreError> {
    TaskId::from_slice(bytes)
        .map_err(|_| StoreError::Codec(CodecError::Corrupt("task id is not 16 bytes".into())))
}

impl Store {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let path = dir.join("sled");
        let db = sled::Config::new().path(&path).cache_capacity(cache_bytes).open()?;
        let data_file = File::open(path.join("db"))
            .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.join("db").display())))?;
        let flusher = db.clone();
        let committer = Committer::start(Box::new(move || {
            // sled's flush writes its buffers but only calls sync_file_range; fdatasync makes
            // them survive a power cut too.
            flusher.flush().map_err(std::io::Error::other)?;
            data_file.sync_data()
        }))
        .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Ok(Store {
            agents: db.open_tree("agents")?,
            tasks: db.open_tree("tasks")?,
            queue: db.open_tree("queue")?,
            by_agent: db.open_tree("by_agent")?,
            output: db.open_tree("output")?,
            db,
            committer,
        })
    }

    /// Returns once every write applied before the call is on stable storage.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.committer.wait().await.map_err(StoreError::Sync)
    }

    /// The agent registered as `app_id`.
    pub fn agent(&self, app_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.agents.get(app_id)?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Creates or replaces an agent record.
    pub fn put_agent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        self.agents.insert(record.app_id.as_bytes(), codec::encode(record))?;
        Ok(())
    }

    /// Records that `app_id` was seen at `now_ms`, if it is at least `min_gap_ms` later than last time.
    pub fn touch_agent(&self, app_id: &str, now_ms: i64, min_gap_ms: i64) -> Result<(), StoreError> {
        let Some(mut record) = self.agent(app_id)? else { return Ok(()) };
        if now_ms - record.last_seen_ms < min_gap_ms {
            return Ok(());
        }
        let old = codec::encode(&record);
        record.last_seen_ms = now_ms;
        // A concurrent register or report changed the record: its own write is newer, keep it.
        let _ = self.agents.compare_and_swap(app_id, Some(old), Some(codec::encode(&record)))?;
        Ok(())
    }

    /// Every agent, sorted by app id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.agents.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// Queues `tasks` (each at the end of its agent's queue) in one transaction. Ids already
    /// stored are skipped, so retrying an enqueue with the same ids is safe.
    pub fn enqueue(&self, tasks: &mut [TaskRecord]) -> Result<(), StoreError> {
        for task in tasks.iter_mut() {
            task.queue_seq = self.db.generate_id()?;
        }
        let result = (&self.tasks, &self.queue, &self.by_agent).transaction(|(t, q, b)| {
            for task in tasks.iter() {
                if t.get(task.id.as_bytes())?.is_some() {
                    continue;
                }
                t.insert(task.id.as_bytes(), codec::encode(task))?;
                q.insert(queue_key(&task.app_id, task.queue_seq), task.id.as_bytes())?;
                b.insert(by_agent_key(&task.app_id, task.id), &[])?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        });
        flatten(result)
    }

    /// Takes the oldest queued task of `app_id` and marks it delivered.
    pub fn take_next(&self, app_id: &str, now_ms: i64) -> Result<Option<TaskRecord>, StoreError> {
        loop {
            let Some(entry) = self.queue.scan_prefix(agent_prefix(app_id)).next() else { return Ok(None) };
            let (key, id) = entry?;
            let id = task_id_from(&id)?;
            let result = (&self.queue, &self.tasks).transaction(|(q, t)| {
                if q.remove(&key)?.is_none() {
                    return Ok(None); // another poll of the same agent took it first
                }
                let Some(mut task) = read_task::<StoreError>(t, id)? else { return Ok(None) };
                if task.status == TaskStatus::Queued {
                    task.move_to(TaskStatus::Delivered, now_ms);
                    t.insert(id.as_bytes(), codec::encode(&task))?;
                }
                Ok::<_, ConflictableTransactionError<StoreError>>(Some(task))
            });
            match flatten(result)? {
                Some(task) if task.status == TaskStatus::Delivered => return Ok(Some(task)),
                _ => continue,
            }
        }
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
        let result = (&self.tasks, &self.queue, &self.output, &self.agents).transaction(|(t, q, o, a)| {
            let Some(mut task) = read_task(t, id)? else { return abort(ReportError::UnknownTask(id)) };
            if task.app_id != app_id {
                return abort(ReportError::NotYours(id));
            }
            if task.status == outcome.status {
                return Ok(task);
            }
            if task.status.is_final() {
                return abort(ReportError::AlreadyFinished { id, status: task.status });
            }
            if task.status == TaskStatus::Queued {
                q.remove(queue_key(app_id, task.queue_seq))?;
                task.move_to(TaskStatus::Delivered, now_ms);
            }
            record_outcome(&mut task, outcome, now_ms);
            t.insert(id.as_bytes(), codec::encode(&task))?;
            // Output is stored once, with the final report; a `doing` report carries none.
            if task.status.is_final() {
                write_output(o, id, &outcome.output)?;
                count_processed(a, app_id)?;
            }
            Ok::<_, ConflictableTransactionError<ReportError>>(task)
        });
        flatten(result)
    }

    /// The task with this id.
    pub fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.tasks.get(id.as_bytes())?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Up to `limit` tasks, newest first, of one agent or of all.
    pub fn tasks(&self, app_id: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        let ids: Vec<TaskId> = match app_id {
            None => self
                .tasks
                .iter()
                .keys()
                .rev()
                .take(limit)
                .map(|k| task_id_from(&k?))
                .collect::<Result<_, _>>()?,
            Some(app_id) => {
                let prefix = agent_prefix(app_id);
                self.by_agent
                    .scan_prefix(&prefix)
                    .keys()
                    .rev()
                    .take(limit)
                    .map(|k| task_id_from(&k?[prefix.len()..]))
                    .collect::<Result<_, _>>()?
            }
        };
        ids.into_iter().filter_map(|id| self.task(id).transpose()).collect()
    }

    /// Up to `max_bytes` of a task's output stream, from its start.
    pub fn output(&self, id: TaskId, stream: Stream, max_bytes: usize) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        for chunk in self.output.scan_prefix(output_prefix(id, stream)).values() {
            let chunk = chunk?;
            let room = max_bytes - out.len();
            out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if out.len() >= max_bytes {
                break;
            }
        }
        Ok(out)
    }
}

fn read_task<E: From<StoreError>>(
    tree: &TransactionalTree,
    id: TaskId,
) -> Result<Option<TaskRecord>, ConflictableTransactionError<E>> {
    tree.get(id.as_bytes())?.map(|bytes| decode_in_tx(&bytes)).transpose()
}

/// Decodes a stored value inside a transaction, aborting it on a corrupt value.
fn decode_in_tx<T: serde::de::DeserializeOwned, E: From<StoreError>>(
    bytes: &[u8],
) -> Result<T, ConflictableTransactionError<E>> {
    codec::decode(bytes).map_err(|e| ConflictableTransactionError::Abort(StoreError::from(e).into()))
}

fn record_outcome(task: &mut TaskRecord, outcome: &Outcome, now_ms: i64) {
    if task.status == TaskStatus::Delivered && outcome.status.is_final() {
        // Fast tasks report their end without a `doing` first; the history still shows a start.
        task.move_to(TaskStatus::Running, now_ms);
    }
    task.move_to(outcome.status, now_ms);
    task.exit_code = outcome.exit_code.or(task.exit_code);
    task.error = outcome.error.clone().or(task.error.take());
    task.duration_ms = outcome.duration_ms.or(task.duration_ms);
}

fn write_output<E>(
    tree: &TransactionalTree,
    id: TaskId,
    output: &[(Stream, Vec<u8>)],
) -> Result<(), ConflictableTransactionError<E>> {
    for (stream, bytes) in output {
        for (n, chunk) in bytes.chunks(CHUNK_LEN).enumerate() {
            let mut key = output_prefix(id, *stream);
            key.extend_from_slice(&(n as u32).to_be_bytes());
            tree.insert(key, chunk)?;
        }
    }
    Ok(())
}

fn count_processed<E: From<StoreError>>(
    tree: &TransactionalTree,
    app_id: &str,
) -> Result<(), ConflictableTransactionError<E>> {
    let Some(bytes) = tree.get(app_id)? else { return Ok(()) };
    let mut agent: AgentRecord = decode_in_tx(&bytes)?;
    agent.processed_task_count += 1;
    tree.insert(app_id.as_bytes(), codec::encode(&agent))?;
    Ok(())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
