//! One open sled database: the `Db`, its data file (for fdatasync) and every tree the store
//! uses, plus the few values kept in sled's default tree about the database itself. A new tree
//! is one line in the `trees!` list here: it declares the field, opens the tree and, for a
//! tree transactions use, adds it to the transaction view; compaction copies every tree sled
//! lists, so it needs no change. Every tree's writes go to the write-ahead log too
//! (`logged.rs`); a transaction runs under the log's write lock and appends its record before
//! sled commits it, so the log holds writes in the order sled applied them, never behind.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, TransactionResult,
};

use super::StoreError;
use super::logged::{LoggedTree, LoggedTx, Overlay, apply_overlay, storage};
use super::pg::PgKv;
use super::wal::Wal;
use super::wal_record::Op;

/// Key, in sled's default tree, of the smallest id [`Trees::next_id`] may hand out: ids of a
/// compacted database continue above those of the one it was copied from.
const ID_FLOOR_KEY: &[u8] = b"orange.id_floor";
/// Key, in the `meta` tree (logged), of the id ceiling: every id [`Trees::next_id`] handed out
/// is below it.
const ID_CEILING_KEY: &[u8] = b"id_ceiling";
/// Ids reserved by one write of the ceiling.
const ID_BLOCK: u64 = 4096;
/// Key, in sled's default tree, of the database's size on disk right after it was written by a
/// compaction (absent for a database that was never compacted).
const COMPACTED_BYTES_KEY: &[u8] = b"orange.compacted_bytes";

/// Declares the trees once: the [`Trees`] struct, its opening, the transactional view
/// [`TxTrees`] and [`Trees::transaction`] over the trees transactions use. A tree listed under
/// `in_transactions` may be written inside a transaction; one under `outside` only directly.
macro_rules! trees {
    (
        in_transactions { $($(#[doc = $tdoc:literal])* $tx:ident,)* }
        outside { $($(#[doc = $pdoc:literal])* $plain:ident,)* }
    ) => {
        /// The open database and its trees.
        pub struct Trees {
            /// Name of its directory inside the data directory (`postgres` on PostgreSQL).
            pub name: String,
            /// What the trees are kept in.
            engine: Engine,
            $($(#[doc = $tdoc])* pub $tx: LoggedTree,)*
            $($(#[doc = $pdoc])* pub $plain: LoggedTree,)*
        }

        /// The trees transactions use, inside one transaction.
        #[derive(Clone, Copy)]
        pub struct TxTrees<'a> {
            $($(#[doc = $tdoc])* pub $tx: LoggedTx<'a>,)*
        }

        impl Trees {
            /// The name of every tree, in the order declared.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($tx),)* $(stringify!($plain),)*];

            /// Opens (or creates) the sled database `dir/name`, its writes logged to `wal`.
            pub fn open(dir: &Path, name: &str, cache_bytes: u64, wal: Arc<Wal>) -> Result<Trees, StoreError> {
                let path = dir.join(name);
                // No background flush every 500 ms: the write-ahead log carries durability, and
                // checkpoints flush sled (a flush holds up every sled transaction meanwhile).
                let db = open_sled(&path, cache_bytes)?;
                let data_file = File::open(path.join("db"))
                    .map_err(|e| StoreError::Io(format!("cannot open {}: {e}", path.join("db").display())))?;
                let id_floor = read_u64(&db, ID_FLOOR_KEY)?.unwrap_or(0);
                Ok(Trees {
                    $($tx: LoggedTree::new(db.open_tree(stringify!($tx))?, stringify!($tx), Arc::clone(&wal)),)*
                    $($plain: LoggedTree::new(db.open_tree(stringify!($plain))?, stringify!($plain), Arc::clone(&wal)),)*
                    name: name.to_owned(),
                    engine: Engine::Sled(SledDb {
                        wal,
                        db,
                        data_file,
                        blobs: BlobFiles::new(path.join("blobs")),
                        id_floor,
                        ids: Mutex::new(None),
                    }),
                })
            }

            /// The trees as tables of the PostgreSQL database `kv`.
            pub fn postgres(kv: Arc<PgKv>) -> Trees {
                Trees {
                    $($tx: LoggedTree::postgres(Arc::clone(&kv), stringify!($tx)),)*
                    $($plain: LoggedTree::postgres(Arc::clone(&kv), stringify!($plain)),)*
                    name: "postgres".to_owned(),
                    engine: Engine::Postgres(kv),
                }
            }

            /// Runs `f` as one transaction over every tree of [`TxTrees`], under the log's
            /// write lock, which every writer holds: `f`'s writes go to an overlay (its reads
            /// see them); once it succeeded they are appended to the log as one record, then
            /// applied to sled with plain writes (sled's own transactions would seal and write
            /// an I/O buffer each). A crash in the middle of the apply is repaired by the
            /// replay of the record; a failed apply fails the log.
            /// On PostgreSQL, the same in one `SERIALIZABLE` database transaction (`pg/mod.rs`),
            /// the overlay written out just before its commit; `f` runs again when the database
            /// refuses the transaction as conflicting with another.
            pub fn transaction<A, E>(
                &self,
                f: impl Fn(TxTrees<'_>) -> ConflictableTransactionResult<A, E>,
            ) -> TransactionResult<A, E> {
                let wal = match &self.engine {
                    Engine::Sled(sled) => &sled.wal,
                    Engine::Postgres(kv) => return Self::pg_transaction(kv, f),
                };
                let ops = RefCell::new(Vec::new());
                $(let $tx = Overlay::default();)*
                let mut writer = wal.writer();
                let result = settled(f(TxTrees { $($tx: LoggedTx::new(self.$tx.raw()?, stringify!($tx), &ops, &$tx)),* }))?;
                writer.append(&ops.borrow()).map_err(|e| TransactionError::Storage(storage(e)))?;
                let applied = || -> sled::Result<()> {
                    $(apply_overlay(&self.$tx, $tx)?;)*
                    Ok(())
                };
                applied().map_err(|e| TransactionError::Storage(storage(writer.fail(&e.to_string()))))?;
                Ok(result)
            }

            fn pg_transaction<A, E>(
                kv: &PgKv,
                f: impl Fn(TxTrees<'_>) -> ConflictableTransactionResult<A, E>,
            ) -> TransactionResult<A, E> {
                // Each attempt starts from nothing: the database may refuse one as conflicting.
                kv.transaction(|txn| {
                    let ops = RefCell::new(Vec::new());
                    $(let $tx = Overlay::default();)*
                    let result = settled(f(TxTrees { $($tx: LoggedTx::new(txn, stringify!($tx), &ops, &$tx)),* }))?;
                    $(txn.write(stringify!($tx), $tx.into_inner())?;)*
                    Ok(result)
                })
            }

            /// Every tree with its name, in the order declared.
            #[cfg(test)]
            pub fn each(&self) -> [(&'static str, &LoggedTree); Trees::NAMES.len()] {
                [$((stringify!($tx), &self.$tx),)* $((stringify!($plain), &self.$plain),)*]
            }

            /// Applies one write read back from the log, without logging it again.
            pub fn apply(&self, op: &Op<'_>) -> Result<(), StoreError> {
                let tree = match op.tree {
                    $(name if name == stringify!($tx).as_bytes() => self.$tx.raw()?,)*
                    $(name if name == stringify!($plain).as_bytes() => self.$plain.raw()?,)*
                    name => {
                        return Err(StoreError::Io(format!(
                            "the write-ahead log names an unknown tree {:?}",
                            String::from_utf8_lossy(name)
                        )))
                    }
                };
                match op.value {
                    Some(value) => tree.insert(op.key, value)?,
                    None => tree.remove(op.key)?,
                };
                Ok(())
            }
        }
    };
}

trees! {
    in_transactions {
        /// task id → task record.
        tasks,
        /// app id, 0, sequence → task id.
        queue,
        /// app id, 0, task id → empty.
        by_agent,
        /// task id, chunk number → stream tag and bytes.
        output,
        /// app id → agent record.
        agents,
        /// time, task id → empty: open tasks' next deadline.
        deadlines,
        /// time, task id → empty: finished tasks.
        finished,
        /// app id, 0, task id → empty: unconfirmed cancels.
        cancels,
        /// job id → job record.
        jobs,
        /// job id, target index → target record.
        job_targets,
        /// task id → job id, target index.
        job_links,
        /// time, job id → empty: done jobs.
        jobs_done,
        /// job id → the stdin of every task of the job (absent: none).
        job_inputs,
        /// app id → task features the agent announced.
        features,
        /// job id → empty: jobs not done yet (those written since the host timeout existed),
        /// read by the host-timeout sweep.
        jobs_open,
    }
    outside {
        /// signing time, digest → empty: used signed requests.
        seen,
        /// token id → token record.
        tokens,
        /// time, sequence → audit record of an operator action.
        audit,
        /// first time, sequence → agent-made audit entry (a count within a period).
        agent_audit,
        /// app id → host facts.
        facts,
        /// name → value: what the store keeps about itself that must follow the log (the id
        /// ceiling).
        meta,
        /// file id (an upload's, or a `file.get` task's), piece number → bytes.
        files,
        /// file id → what an operator's upload came to.
        file_meta,
        /// operator name → operator record (role, scope, token hash).
        operators,
        /// app id → the labels an admin approved for the agent.
        approved_labels,
        /// minute, kind, key, server → failed attempts that server counted under the key in
        /// that minute (several servers on PostgreSQL; see `shared_counts.rs`).
        failure_counts,
    }
}

/// What the trees are kept in.
enum Engine {
    /// A sled database in the data directory, written through the log.
    Sled(SledDb),
    /// A PostgreSQL database.
    Postgres(Arc<PgKv>),
}

/// An open sled database and what the store keeps beside it.
pub struct SledDb {
    /// The database.
    pub db: sled::Db,
    /// sled's data file, synced by [`Trees::sync`].
    data_file: File,
    /// sled's blob files (values past its blob threshold, 128 KiB), synced by [`Trees::sync`]
    /// too: sled never fsyncs them.
    blobs: BlobFiles,
    /// Ids from `db.generate_id()` are offset by this.
    id_floor: u64,
    /// The next id and the ceiling logged for it; `None` until the first id (after the log was
    /// replayed).
    ids: Mutex<Option<IdRange>>,
    /// The log every tree's writes go to.
    wal: Arc<Wal>,
}

impl Trees {
    /// The sled database, for what only the embedded store does (compaction, its backup's
    /// copy); an error on PostgreSQL.
    pub fn sled(&self) -> Result<&SledDb, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => Ok(sled),
            Engine::Postgres(kv) => Err(StoreError::Io(format!(
                "the store is the PostgreSQL database {}, not a data directory",
                kv.shown()
            ))),
        }
    }

    /// A new id, larger than every id handed out before, also by the databases this one was
    /// compacted from.
    ///
    /// sled's `generate_id` alone is not enough: with sled flushed only by checkpoints, the
    /// counter it recovers after a crash can be below ids already handed out (and stored in the
    /// log). So ids come from a counter of our own, whose ceiling is written through the log
    /// before an id under it is handed out: any write carrying an id is logged after the
    /// ceiling that covers it, so a replay never restarts below a used id. The first id of a
    /// process starts above both the ceiling and sled's counter (which databases written
    /// before the log relied on).
    /// On PostgreSQL, ids come from the database's sequence.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        let sled = match &self.engine {
            Engine::Sled(sled) => sled,
            Engine::Postgres(kv) => return first_of(kv.next_ids(1)?),
        };
        let mut ids = sled.ids.lock().unwrap_or_else(|p| p.into_inner());
        let range = match &mut *ids {
            Some(range) => range,
            empty => empty.insert(self.first_ids(sled)?),
        };
        if range.next >= range.ceiling {
            let ceiling = range.next.saturating_add(ID_BLOCK);
            self.meta.insert(ID_CEILING_KEY, &ceiling.to_be_bytes())?;
            range.ceiling = ceiling;
        }
        let id = range.next;
        range.next += 1;
        Ok(id)
    }

    /// Where ids start in this process: above sled's counter and above the logged ceiling.
    fn first_ids(&self, sled: &SledDb) -> Result<IdRange, StoreError> {
        let sled_next = sled.id_floor.saturating_add(sled.db.generate_id()?);
        let ceiling = read_u64_from(self.meta.raw()?, ID_CEILING_KEY)?.unwrap_or(0);
        Ok(IdRange { next: sled_next.max(ceiling), ceiling })
    }

    /// Writes sled's buffers and fdatasyncs its data file and its new blob files. sled's own
    /// `flush` only calls sync_file_range, which does not survive a power cut, and never syncs
    /// a blob file. Nothing to do on PostgreSQL, whose commits are durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let Engine::Sled(sled) = &self.engine else { return Ok(()) };
        sled.db.flush().map_err(std::io::Error::other)?;
        sled.data_file.sync_data()?;
        sled.blobs.sync_new()
    }

    /// The database's size on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => Ok(sled.db.size_on_disk()?),
            Engine::Postgres(kv) => kv.size_on_disk(),
        }
    }

    /// How many of sled's blob files the checkpoints have synced.
    #[cfg(test)]
    pub fn synced_blob_count(&self) -> usize {
        self.sled().map_or(0, |sled| sled.blobs.synced_count())
    }

    /// Its size right after the compaction that wrote it, if it was written by one (never, on
    /// PostgreSQL).
    pub fn compacted_bytes(&self) -> Result<Option<u64>, StoreError> {
        match &self.engine {
            Engine::Sled(sled) => read_u64(&sled.db, COMPACTED_BYTES_KEY),
            Engine::Postgres(_) => Ok(None),
        }
    }

    /// Records, in a database just written by a compaction, the id floor it continues from and
    /// its size.
    pub fn mark_compacted(&mut self, id_floor: u64, bytes: u64) -> Result<(), StoreError> {
        let Engine::Sled(sled) = &mut self.engine else {
            return Err(StoreError::Io("only a sled database is compacted".into()));
        };
        sled.db.insert(ID_FLOOR_KEY, &id_floor.to_be_bytes())?;
        sled.id_floor = id_floor;
        // Ids start again from the new floor (and the ceiling copied with the `meta` tree).
        *sled.ids.get_mut().unwrap_or_else(|p| p.into_inner()) = None;
        sled.db.insert(COMPACTED_BYTES_KEY, &bytes.to_be_bytes())?;
        Ok(())
    }
}

/// A transaction closure's result as the transaction's: its abort or storage error as it is;
/// a conflict, which no closure of the store raises, as a storage error.
fn settled<A, E>(result: ConflictableTransactionResult<A, E>) -> TransactionResult<A, E> {
    result.map_err(|e| match e {
        ConflictableTransactionError::Abort(e) => TransactionError::Abort(e),
        ConflictableTransactionError::Storage(e) => TransactionError::Storage(e),
        ConflictableTransactionError::Conflict => {
            TransactionError::Storage(storage(StoreError::Io("a transaction conflicted".into())))
        }
    })
}

/// The one id of a list of one.
fn first_of(ids: Vec<u64>) -> Result<u64, StoreError> {
    ids.first().copied().ok_or_else(|| StoreError::Io("the database handed out no id".into()))
}

/// The next id to hand out and the ceiling logged for it (ids below it are covered).
struct IdRange {
    next: u64,
    ceiling: u64,
}

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<Option<u64>, StoreError> {
    read_u64_from(db, key)
}

fn read_u64_from(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, StoreError> {
    let Some(bytes) = tree.get(key)? else { return Ok(None) };
    let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
        StoreError::Codec(crate::server::codec::CodecError::Corrupt(format!(
            "{} is not 8 bytes",
            String::from_utf8_lossy(key)
        )))
    })?;
    Ok(Some(u64::from_be_bytes(bytes)))
}

/// sled's blob directory: each value past sled's blob threshold is a file of its own, written
/// once and removed when the value is replaced; sled never fsyncs them, so a checkpoint does.
struct BlobFiles {
    dir: PathBuf,
    /// Names of the files already synced (each is written once).
    synced: Mutex<HashSet<OsString>>,
}

impl BlobFiles {
    fn new(dir: PathBuf) -> BlobFiles {
        BlobFiles { dir, synced: Mutex::new(HashSet::new()) }
    }

    /// fdatasyncs every blob file not synced before, then the directory that names them.
    fn sync_new(&self) -> std::io::Result<()> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut present = HashSet::new();
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()) {
                    Ok(file) => file.sync_data()?,
                    // Removed by sled since it was listed: nothing to keep.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            present.insert(name);
        }
        let new = present.iter().any(|name| !synced.contains(name));
        *synced = present;
        if new {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// How many blob files are known synced.
    #[cfg(test)]
    fn synced_count(&self) -> usize {
        self.synced.lock().map(|synced| synced.len()).unwrap_or(0)
    }
}

/// How long [`open_sled`] waits for the previous handle of the same database to let go of it.
const SLED_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the sled database at `path`. sled locks its file, and its background threads close the
/// file a moment after the last handle is dropped; the data directory's own lock
/// ([`crate::server::lock`]) already keeps other processes out, so a held sled lock is this
/// process's previous handle of the same database still closing (a store reopened at once), and
/// the open is retried for up to [`SLED_LOCK_WAIT`].
fn open_sled(path: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let started = std::time::Instant::now();
    loop {
        match sled::Config::new().path(path).cache_capacity(cache_bytes).flush_every_ms(None).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && started.elapsed() < SLED_LOCK_WAIT =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            opened => return opened,
        }
    }
}
