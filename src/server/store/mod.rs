//! The only module that knows sled: agents, per-agent FIFO queues, task records, their output,
//! the deadline and retention indexes, and making writes durable: every write is appended to
//! the store's write-ahead log (`wal.rs`), whose fdatasync the group committer runs; sled is
//! flushed only by background checkpoints (`checkpoint.rs`).
//!
//! Trees and keys (app ids never contain a 0 byte):
//! - `agents`:    app id → [`AgentRecord`]
//! - `tasks`:     task id (16 bytes, UUID v7, so keys sort by creation) → [`TaskRecord`]
//! - `queue`:     app id, 0, sequence (u64 BE) → task id: each agent's FIFO
//! - `by_agent`:  app id, 0, task id → empty: an agent's tasks, oldest first
//! - `output`:    task id, chunk number (u32 BE) → stream tag byte + raw bytes (≤ 64 KiB), so
//!   that no value reaches sled's blob threshold (128 KiB), whose files sled does not fsync
//! - `deadlines`: time (i64 BE ms), task id → empty: the next moment each open task must be
//!   looked at (queue expiry, ack window, end of run); the sweeper reads only what is due
//! - `finished`:  time (i64 BE ms), task id → empty: finished tasks, oldest first, for retention
//! - `cancels`:   app id, 0, task id → empty: cancels its agent has not confirmed yet
//! - `tokens`:    token id → [`TokenRecord`]
//! - `audit`:     time (i64 BE ms), sequence (u64 BE) → [`AuditRecord`]: operator actions, kept
//!   past task retention up to their cap (`audit.rs`)
//! - `agent_audit`: first time (i64 BE ms), sequence (u64 BE) → [`AgentAuditRecord`]: what agents
//!   did, one entry per app id, action and hour with a count, up to its own cap
//! - `seen`:      signing time (i64 BE s), request digest (u64) → empty: signed requests used
//! - `facts`:     app id → [`FactsRecord`]: what each agent said about its host
//! - `features`:  app id → [`FeaturesRecord`]: the task features each agent announced
//! - `jobs`:      job id (16 bytes, UUID v7) → [`JobRecord`]
//! - `job_targets`: job id, target index (u32 BE) → [`TargetRecord`], targets sorted by app id
//! - `job_links`: task id → job id, target index (u32 BE): which tasks belong to a job
//! - `jobs_done`: time (i64 BE ms), job id → empty: done jobs, oldest first, for retention
//! - `job_inputs`: job id → raw bytes: the stdin every task of the job gets (absent: none),
//!   stored once and copied into each task as it starts
//! - `operators`: operator name → [`OperatorRecord`]: role, scope, token hash, lifetime
//! - `approved_labels`: app id → [`ApprovedLabels`]: the labels scopes match an agent by
//! - sled's default tree: the id floor and size of a compacted database (see `trees.rs`)
//!
//! Every value is encoded by `codec` with its record type's own version and stored layout
//! (`stored.rs`), so a record can gain a field without making older data directories unreadable.
//!
//! A backup (`backup.rs`, file format in `backup_format.rs`) copies every tree while the server
//! runs, consistent to one moment through the log's tap, and a restore writes one into an empty
//! directory. A copy (`copy.rs`) moves every tree into an empty data directory or an empty
//! PostgreSQL database and checks each tree's count.
//!
//! Writes are applied in memory first; [`Store::durable`] returns once they are on stable storage.
//! The trees are reached only through [`Store::trees`], so that compaction (`compact.rs`) can
//! replace the whole database while the server runs.

mod admin;
mod audit;
mod backup;
mod backup_format;
mod checkpoint;
mod compact;
mod copy;
mod counts;
mod db_dirs;
mod events;
mod facts;
mod files;
mod gate;
mod job_reads;
mod jobs;
mod logged;
mod operators;
mod output;
mod pg;
mod records;
mod seen;
mod seq;
mod shared_counts;
mod stored;
mod sweep;
mod task_pages;
mod tasks;
#[cfg(test)]
mod test_engines;
mod trees;
mod tx;
mod wal;
mod wal_record;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use checkpoint::Checkpointer;
use sled::transaction::TransactionError;
use thiserror::Error;

pub use admin::TokenError;
pub use audit::{
    AGENT_AUDIT_PERIOD_MS, AgentAuditRecord, AuditItem, AuditKey, AuditScan, MAX_AGENT_AUDIT,
    MAX_OPERATOR_AUDIT,
};
pub use backup::{BackupSummary, RESTORING_FILE, Restored, restore, verify};
pub use backup_format::{Counts, Cut, FormatError, Header, Trailer};
pub use compact::Compaction;
pub use copy::{Copied, Destination, Secrets, Source, copy};
pub use counts::StoredCounts;
pub use db_dirs::CURRENT_FILE;
pub use events::JobEvent;
pub use facts::{FactsRecord, FeaturesRecord};
pub use files::FileMeta;
use gate::{Gate, Pass};
pub use jobs::JobError;
pub use operators::{ApprovedLabels, OperatorRecord, OperatorRole};
pub use output::{Chunk, ChunkAck, NewChunk};
use pg::PgKv;
pub use pg::{PgTarget, blocking, tls as pg_tls};
pub use records::{
    AgentRecord, AgentStatus, AuditRecord, JobRecord, Outcome, OutputState, Policy, Stream, TargetEnd,
    TargetRecord, TaskRecord, TaskSpec, TokenRecord, secs_to_ms,
};
pub use shared_counts::{SERVER_ID_LEN, SharedCount};
pub use sweep::Swept;
pub use task_pages::{TaskPage, TaskPageQuery};
pub use tasks::Delivery;
use trees::Trees;
pub use tx::CancelOutcome;
use tx::{Tx, TxError};
use wal::Wal;

use super::codec::{self, CodecError};
use super::commit::Committer;
use super::metrics::Metrics;
use crate::protocol::{TaskId, TaskStatus};

/// Most times a transaction runs again because the queue-number pool ran dry under it.
const MAX_SEQ_RETRIES: usize = 12;

/// The write-ahead log's directory inside the data directory.
pub const WAL_DIR: &str = "wal";

/// Largest stored output chunk.
pub const CHUNK_LEN: usize = 64 * 1024;

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

/// Why an agent's report, output chunk or an operator's cancel was refused.
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
    /// The move is not allowed from the task's state.
    #[error("task {id} is {from}; it cannot become {to}")]
    BadMove {
        /// The task.
        id: TaskId,
        /// Its state.
        from: TaskStatus,
        /// The state asked for.
        to: TaskStatus,
    },
    /// An output chunk skipped ahead.
    #[error("output chunk {seq} of task {id} is out of order; expected {expected}")]
    OutOfOrder {
        /// The task.
        id: TaskId,
        /// The chunk number sent.
        seq: u32,
        /// The chunk number expected.
        expected: u32,
    },
    /// A report or chunk of a delivery since superseded: the task was handed out again.
    #[error("task {id}: delivery {attempt} was superseded by delivery {current}; stop running it")]
    Superseded {
        /// The task.
        id: TaskId,
        /// The delivery the sender named.
        attempt: u32,
        /// The task's current delivery.
        current: u32,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store: the embedded sled database in a data directory, or a PostgreSQL database.
pub struct Store {
    /// The open database; compaction swaps it (see [`Store::trees`]).
    gate: Arc<Gate<Trees>>,
    /// The data directory and its log, on the embedded store; `None` on PostgreSQL.
    embedded: Option<Embedded>,
    /// Held by a compaction from start to end.
    compacting: compact::CompactLock,
    job_events: events::EventQueue,
    seqs: seq::SeqPool,
    policy: Policy,
    committer: Committer,
    audit_streams: audit::AuditStreams,
    /// Where committed task moves, output bytes, commits and compactions are counted.
    metrics: Arc<Metrics>,
}

/// What only the embedded store has: the data directory, the write-ahead log (what is
/// acknowledged is there first) and the thread that checkpoints sled.
struct Embedded {
    dir: PathBuf,
    cache_bytes: u64,
    wal: Arc<Wal>,
    _checkpointer: Checkpointer,
}

fn flatten<T, E: From<StoreError>>(result: Result<T, TransactionError<E>>) -> Result<T, E> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e).into(),
    })
}

impl Store {
    /// Opens (or creates) the database in `dir` with a page cache of `cache_bytes`, replays
    /// its write-ahead log, and compacts it first if it is mostly garbage.
    pub fn open(dir: &Path, cache_bytes: u64, policy: Policy) -> Result<Store, StoreError> {
        Store::open_measured(dir, cache_bytes, policy, Arc::default())
    }

    /// [`Store::open`], recording what the store does in `metrics`.
    pub fn open_measured(
        dir: &Path,
        cache_bytes: u64,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        backup::refuse_unfinished_restore(dir)?;
        let wal = Arc::new(Wal::open(&dir.join(WAL_DIR))?);
        let trees = compact::open_current(dir, cache_bytes, policy.compact_min_bytes, &wal)?;
        let gate = Arc::new(Gate::new(trees));
        let syncing = Arc::clone(&wal);
        let committer = Committer::start(Box::new(move || syncing.sync()), Arc::clone(&metrics))
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        let checkpointer = Checkpointer::start(Arc::clone(&wal), Arc::clone(&gate))
            .map_err(|e| StoreError::Io(format!("cannot start the checkpoint thread: {e}")))?;
        let embedded = Embedded { dir: dir.to_owned(), cache_bytes, wal, _checkpointer: checkpointer };
        Store::assemble(gate, Some(embedded), seq::SeqPool::default(), committer, policy, metrics)
    }

    /// Opens the PostgreSQL database `target`, bringing its schema up to date first.
    pub fn open_postgres(
        target: &PgTarget,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let kv = Arc::new(PgKv::open(target)?);
        if kv.get("meta", copy::COPY_MARKER)?.is_some() {
            return Err(StoreError::Io(format!(
                "the database {} holds a copy that did not finish (`orange store copy` was stopped, \
                 or is still running): let it finish, or recreate the database and copy again",
                target.shown
            )));
        }
        let seqs = seq::SeqPool::in_transactions();
        let gate = Arc::new(Gate::new(Trees::postgres(kv)));
        // A commit on PostgreSQL returns once it is durable: the committer has nothing to sync.
        let committer = Committer::start(Box::new(|| Ok(())), Arc::clone(&metrics))
            .map_err(|e| StoreError::Io(format!("cannot start the commit thread: {e}")))?;
        Store::assemble(gate, None, seqs, committer, policy, metrics)
    }

    fn assemble(
        gate: Arc<Gate<Trees>>,
        embedded: Option<Embedded>,
        seqs: seq::SeqPool,
        committer: Committer,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let store = Store {
            gate,
            embedded,
            compacting: compact::CompactLock::default(),
            job_events: events::EventQueue::default(),
            seqs,
            policy,
            committer,
            audit_streams: audit::AuditStreams::default(),
            metrics,
        };
        store.approve_labels_of_earlier_agents(crate::server::clock::now_ms())?;
        Ok(store)
    }

    /// The data directory and its log; an error on PostgreSQL, for what only the embedded
    /// store does (compaction, backup).
    fn embedded(&self) -> Result<&Embedded, StoreError> {
        self.embedded.as_ref().ok_or_else(|| {
            StoreError::Io("this needs the embedded store; the store is a PostgreSQL database".into())
        })
    }

    /// The open database. Every store method reaches the trees through this and holds the pass
    /// while it works with them, so that a compaction never swaps the database while a write
    /// to it is half done (nor lets a write reach the old one after it).
    /// Holding a pass while calling another store method is fine (passes are re-entrant).
    fn trees(&self) -> Pass<'_, Trees> {
        self.gate.pass()
    }

    /// A new id, larger than every id handed out before (also before a compaction).
    fn next_id(&self) -> Result<u64, StoreError> {
        self.trees().next_id()
    }

    /// Returns once every write applied before the call is on stable storage.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.committer.wait().await.map_err(StoreError::Sync)
    }

    /// Runs `f` as one transaction over every tree; once it commits, announces what it did to
    /// jobs (see [`Store::take_job_events`]) and counts what it did to tasks in the metrics.
    /// Most transactions take no queue number, so none is reserved up front (callers that know
    /// they need some, like [`Store::enqueue`], reserve them first); a transaction that found the
    /// queue-number pool dry reserves what it asked for and runs again. Concurrent transactions
    /// take from the same pool, so each retry reserves twice as many as the one before: with
    /// N enqueues racing, a few retries leave room for all of them.
    fn transact<T, E: From<StoreError>>(&self, f: impl Fn(&Tx<'_>) -> Result<T, TxError<E>>) -> Result<T, E> {
        for attempt in 0..MAX_SEQ_RETRIES {
            let wanted = std::cell::Cell::new(0);
            let short = std::cell::Cell::new(false);
            let result = self.transact_once(&f, &wanted, &short);
            if result.is_ok() || !short.get() {
                return result;
            }
            self.seqs.reserve(&self.trees(), wanted.get() << attempt)?;
        }
        Err(StoreError::Io("the queue-number pool kept running dry; try again".into()).into())
    }

    fn transact_once<T, E: From<StoreError>>(
        &self,
        f: &impl Fn(&Tx<'_>) -> Result<T, TxError<E>>,
        seqs_wanted: &std::cell::Cell<usize>,
        seq_short: &std::cell::Cell<bool>,
    ) -> Result<T, E> {
        let announced = std::cell::RefCell::new(tx::Announced::default());
        let result = flatten(self.trees().transaction(|trees| {
            announced.replace(tx::Announced::default());
            seqs_wanted.set(0);
            seq_short.set(false);
            f(&Tx {
                trees,
                seqs: &self.seqs,
                seqs_wanted,
                seq_short,
                announced: &announced,
                follow: jobs::follow,
            })
        }));
        if result.is_ok() {
            let announced = announced.into_inner();
            self.job_events.push(announced.jobs);
            self.metrics.task_events(&announced.tasks);
        }
        result
    }

    /// The agent registered as `app_id`.
    pub fn agent(&self, app_id: &str) -> Result<Option<AgentRecord>, StoreError> {
        self.trees().agents.get(app_id)?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Creates or replaces an agent record.
    pub fn put_agent(&self, record: &AgentRecord) -> Result<(), StoreError> {
        self.trees().agents.insert(record.app_id.as_bytes(), codec::encode(record))?;
        Ok(())
    }

    /// Records that `app_id` was seen at `now_ms`, if it is at least `min_gap_ms` later than last time.
    pub fn touch_agent(&self, app_id: &str, now_ms: i64, min_gap_ms: i64) -> Result<(), StoreError> {
        match self.agent(app_id)? {
            Some(record) => self.touch_record(&record, now_ms, min_gap_ms),
            None => Ok(()),
        }
    }

    /// [`Self::touch_agent`] for a record just read, so a request reads its agent once.
    pub fn touch_record(&self, record: &AgentRecord, now_ms: i64, min_gap_ms: i64) -> Result<(), StoreError> {
        if now_ms - record.last_seen_ms < min_gap_ms {
            return Ok(());
        }
        // The encoding is deterministic, so this is the stored value the record was read from.
        let old = codec::encode(record);
        let new = AgentRecord { last_seen_ms: now_ms, ..record.clone() };
        // A concurrent register or report changed the record: its own write is newer, keep it.
        let _ = self.trees().agents.compare_and_swap(
            record.app_id.as_bytes(),
            Some(old),
            Some(codec::encode(&new)),
        )?;
        Ok(())
    }

    /// Every agent, sorted by app id.
    pub fn agents(&self) -> Result<Vec<AgentRecord>, StoreError> {
        self.trees().agents.iter().values().map(|v| Ok(codec::decode(&v?)?)).collect()
    }

    /// The task with this id.
    pub fn task(&self, id: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.trees().tasks.get(id.as_bytes())?.map(|v| codec::decode(&v)).transpose().map_err(Into::into)
    }

    /// Up to `limit` tasks, newest first, of one agent or of all.
    pub fn tasks(&self, app_id: Option<&str>, limit: usize) -> Result<Vec<TaskRecord>, StoreError> {
        let ids: Vec<TaskId> = match app_id {
            None => self
                .trees()
                .tasks
                .iter()
                .keys()
                .rev()
                .take(limit)
                .map(|k| tx::task_id_from(&k?))
                .collect::<Result<_, _>>()?,
            Some(app_id) => {
                let prefix = tx::agent_prefix(app_id);
                self.trees()
                    .by_agent
                    .scan_prefix(&prefix)
                    .keys()
                    .rev()
                    .take(limit)
                    .map(|k| tx::task_id_from(&k?[prefix.len()..]))
                    .collect::<Result<_, _>>()?
            }
        };
        ids.into_iter().filter_map(|id| self.task(id).transpose()).collect()
    }
}

#[cfg(test)]
mod backup_tests;
#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod job_tests;
#[cfg(test)]
mod stored_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upgrade_tests;
