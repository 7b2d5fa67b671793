//! `orange store copy`: a whole fleet moved from one store to another — a data directory, a
//! PostgreSQL database or a backup file into an empty data directory or an empty database.
//!
//! The steps, whatever the engines:
//! 1. The destination must hold nothing (every tree empty); anything else is refused before a
//!    write.
//! 2. Every tree's entries are written in batches of [`BATCH`] (one transaction each on
//!    PostgreSQL; unlogged applies on sled, as a restore writes, then synced and checkpointed).
//!    A data directory being written holds [`RESTORING_FILE`] until the end, a database the
//!    `meta` entry [`COPY_MARKER`], so no server serves a copy cut short; and a destination cut
//!    short is not empty, so the next copy refuses it.
//! 3. Ids go on above the source's: sled's id floor, or the database's sequence. A database
//!    source is read as it is: its schema must be this release's (the copy migrates nothing).
//! 4. Each tree's entries are counted in the source and in the destination; any difference is
//!    an error naming the tree.
//!
//! The data directory's secret files (`admin.token`, `enroll.key`) are the database's
//! `secret.*` entries of the `meta` tree on PostgreSQL: a copy into a database adds them there
//! when the source has none, a copy into a data directory hands them back as files.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::backup::{FileWriter, RESTORING_FILE, read_backup};
use super::backup_format::Item;
use super::compact::{open_current, sync_all};
use super::db_dirs::{io_error, sync_path};
use super::pg::{PgKv, described, pg_error};
use super::trees::Trees;
use super::wal::Wal;
use super::wal_record::Op;
use super::{PgTarget, Policy, Store, StoreError, WAL_DIR};
use crate::server::lock::LOCK_FILE;

/// Entries written per batch (per transaction on PostgreSQL).
pub const BATCH: usize = 1000;

/// Prefix, in the `meta` tree, of the secrets servers on a database share.
const SECRET_PREFIX: &str = "secret.";

/// The `meta` key a copy into a database holds until it finished: a server refuses to open a
/// database that has it (the database counterpart of a data directory's [`RESTORING_FILE`]).
pub const COPY_MARKER: &[u8] = b"copy.in_progress";

/// Where a copy reads from.
pub enum Source<'a> {
    /// A data directory whose lock the caller holds.
    Dir(&'a Path),
    /// A PostgreSQL database, read as one consistent moment.
    Postgres(&'a PgTarget),
    /// A backup file (`orange server backup`).
    Backup(&'a Path),
}

/// Where a copy writes to; it must be empty.
pub enum Destination<'a> {
    /// A data directory (existing, private and empty) whose lock the caller holds.
    Dir(&'a Path),
    /// A PostgreSQL database whose trees are all empty.
    Postgres(&'a PgTarget),
}

/// The data directory's secret files and the names they have in the database.
pub struct Secrets<'a> {
    /// (file name, secret name): `admin.token` is `secret.admin_token` in the `meta` tree.
    pub names: &'a [(&'a str, &'a str)],
    /// The source data directory's secret files (name, bytes), for a copy from one.
    pub files: Vec<(String, Vec<u8>)>,
}

/// What a copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Entries of each tree, the same in the source and the destination, in declared order.
    pub trees: Vec<(String, u64)>,
    /// Ids handed out from the destination start at least here.
    pub id_floor: u64,
    /// Secret files carried into the destination (as files or as `meta` entries).
    pub secrets: u64,
    /// Files of the source that have no place in the destination, left out.
    pub files_skipped: u64,
}

/// One tree's writes of a batch: key → new value, or removal.
type Batch = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Copies everything `source` holds into the empty `destination`, then checks every tree's
/// count; secret files go where `secrets` says.
pub fn copy(
    source: &Source<'_>,
    destination: &Destination<'_>,
    secrets: Secrets<'_>,
    cache_bytes: u64,
    on_file: &mut FileWriter<'_>,
) -> Result<Copied, StoreError> {
    let mut sink = Sink::open(destination, cache_bytes)?;
    let mut carried = Carried { secrets, on_file, copied: 0, skipped: 0, meta_added: HashSet::new() };
    let (source_counts, id_floor) = match source {
        Source::Dir(dir) => from_dir(dir, cache_bytes, &mut sink, &mut carried)?,
        Source::Postgres(target) => from_postgres(target, &mut sink, &mut carried)?,
        Source::Backup(path) => from_backup(path, &mut sink, &mut carried)?,
    };
    let trees = sink.finish(id_floor, &source_counts)?;
    info!(id_floor, secrets = carried.copied, "store copied");
    Ok(Copied { trees, id_floor, secrets: carried.copied, files_skipped: carried.skipped })
}

/// Where the copy's writes go.
enum Sink {
    /// A new sled database in a data directory, and its log.
    Sled { dir: std::path::PathBuf, wal: Arc<Wal>, trees: Box<Trees> },
    /// The database.
    Postgres(Arc<PgKv>),
}

impl Sink {
    /// Opens the destination and refuses it unless it is empty.
    fn open(destination: &Destination<'_>, cache_bytes: u64) -> Result<Sink, StoreError> {
        match destination {
            Destination::Dir(dir) => Sink::open_dir(dir, cache_bytes),
            Destination::Postgres(target) => {
                let kv = Arc::new(PgKv::open(target)?);
                refuse_full_database(&kv)?;
                let marker = (COPY_MARKER.to_vec(), Some(b"a copy is writing this database".to_vec()));
                write_pg(&kv, "meta", &Batch::from([marker]))?;
                Ok(Sink::Postgres(kv))
            }
        }
    }

    /// Marks `dir` as being written, then opens a new database in it.
    fn open_dir(dir: &Path, cache_bytes: u64) -> Result<Sink, StoreError> {
        refuse_full_dir(dir)?;
        let marker = dir.join(RESTORING_FILE);
        std::fs::write(&marker, b"a copy is writing this directory\n").map_err(|e| io_error(&marker, e))?;
        sync_path(dir)?;
        let wal = Arc::new(Wal::open(&dir.join(WAL_DIR))?);
        let trees = open_current(dir, cache_bytes, u64::MAX, &wal)?;
        Ok(Sink::Sled { dir: dir.to_owned(), wal, trees: Box::new(trees) })
    }

    /// Writes one batch of `tree`.
    fn write(&mut self, tree: &str, batch: Batch) -> Result<(), StoreError> {
        match self {
            Sink::Sled { trees, .. } => {
                for (key, value) in &batch {
                    trees.apply(&Op { tree: tree.as_bytes(), key, value: value.as_deref() })?;
                }
                Ok(())
            }
            Sink::Postgres(kv) => write_pg(kv, tree, &batch),
        }
    }

    /// Sets the id floor, makes everything durable, counts every tree and checks the counts
    /// against `expected`; removes the marker last (a data directory's file, a database's
    /// `meta` entry).
    fn finish(self, id_floor: u64, expected: &[(String, u64)]) -> Result<Vec<(String, u64)>, StoreError> {
        let counts = match self {
            Sink::Sled { dir, wal, mut trees } => {
                let bytes = trees.size_on_disk()?;
                trees.mark_compacted(id_floor, bytes)?;
                wal.checkpoint(|| trees.sync())?;
                sync_all(&trees, &dir)?;
                let counts = super::backup::tree_counts(&trees)?;
                check_counts(expected, &counts)?;
                drop(trees);
                let marker = dir.join(RESTORING_FILE);
                std::fs::remove_file(&marker).map_err(|e| io_error(&marker, e))?;
                sync_path(&dir)?;
                counts
            }
            Sink::Postgres(kv) => {
                kv.raise_ids(id_floor)?;
                let mut counts = pg_counts(&kv)?;
                // The marker is the copy's own entry, removed once the counts agree.
                for (name, count) in &mut counts {
                    if name == "meta" {
                        *count = count.saturating_sub(1);
                    }
                }
                check_counts(expected, &counts)?;
                write_pg(&kv, "meta", &Batch::from([(COPY_MARKER.to_vec(), None)]))?;
                counts
            }
        };
        Ok(counts)
    }
}

/// Writes one batch of `tree` into the database, in one transaction.
fn write_pg(kv: &PgKv, tree: &str, batch: &Batch) -> Result<(), StoreError> {
    let writes = || batch.iter().map(|(key, value)| (key.clone(), value.as_deref().map(sled::IVec::from)));
    kv.transaction(|txn| txn.write(tree, writes())).map_err(StoreError::from)
}

/// What happens to the files a source carries, and what was done with them.
struct Carried<'a, 'w> {
    secrets: Secrets<'a>,
    on_file: &'a mut FileWriter<'w>,
    /// Secrets carried over.
    copied: u64,
    /// Files left out.
    skipped: u64,
    /// Keys this copy added to the destination's `meta` tree (the source does not have them).
    meta_added: HashSet<Vec<u8>>,
}

impl Carried<'_, '_> {
    /// The secret name of the file `name`, if it is one.
    fn secret_of(&self, file: &str) -> Option<&str> {
        self.secrets.names.iter().find(|(f, _)| *f == file).map(|(_, s)| *s)
    }

    /// The file name of the `meta` key `key`, if it is a secret's.
    fn file_of(&self, key: &[u8]) -> Option<&str> {
        let name = std::str::from_utf8(key).ok()?.strip_prefix(SECRET_PREFIX)?;
        self.secrets.names.iter().find(|(_, s)| *s == name).map(|(f, _)| *f)
    }

    /// Carries the file `name` into `sink`: as a file into a data directory, as a `meta` secret
    /// into a database unless `source_meta` already has it (then it is the database's already).
    fn file(
        &mut self,
        sink: &mut Sink,
        name: &str,
        bytes: &[u8],
        source_meta: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        if matches!(sink, Sink::Sled { .. }) {
            (self.on_file)(name, bytes)?;
            self.copied += 1;
            return Ok(());
        }
        let Some(secret) = self.secret_of(name) else {
            self.skipped += 1;
            return Ok(());
        };
        let key = format!("{SECRET_PREFIX}{secret}").into_bytes();
        if !source_meta(&key) {
            let value = String::from_utf8_lossy(bytes).trim().as_bytes().to_vec();
            sink.write("meta", Batch::from([(key.clone(), Some(value))]))?;
            self.meta_added.insert(key);
            self.copied += 1;
        }
        Ok(())
    }

    /// Into a data directory, the database's secrets (the `meta` tree's `secret.*` entries of
    /// `entries`) become its files.
    fn meta_secrets(&mut self, sink: &Sink, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StoreError> {
        if !matches!(sink, Sink::Sled { .. }) {
            return Ok(());
        }
        for (key, value) in entries {
            if let Some(file) = self.file_of(key).map(str::to_owned) {
                let mut text = value.clone();
                text.push(b'\n');
                (self.on_file)(&file, &text)?;
                self.copied += 1;
            }
        }
        Ok(())
    }

    /// `counts` with the `meta` entries this copy added.
    fn expected(&self, mut counts: Vec<(String, u64)>) -> Vec<(String, u64)> {
        for (name, count) in &mut counts {
            if name == "meta" {
                *count += self.meta_added.len() as u64;
            }
        }
        counts
    }
}

/// From a data directory: opened as a server would (its log replayed), each tree read in key
/// order.
fn from_dir(
    dir: &Path,
    cache_bytes: u64,
    sink: &mut Sink,
    carried: &mut Carried<'_, '_>,
) -> Result<(Vec<(String, u64)>, u64), StoreError> {
    let store = Store::open(dir, cache_bytes, Policy::default())?;
    let trees = store.trees();
    let db = &trees.sled()?.db;
    for name in Trees::NAMES {
        let mut batch = Batch::new();
        for entry in db.open_tree(name)?.iter() {
            let (key, value) = entry?;
            batch.insert(key.to_vec(), Some(value.to_vec()));
            if batch.len() == BATCH {
                sink.write(name, std::mem::take(&mut batch))?;
            }
        }
        sink.write(name, batch)?;
    }
    let meta = db.open_tree("meta")?;
    let files = std::mem::take(&mut carried.secrets.files);
    for (name, bytes) in &files {
        carried.file(sink, name, bytes, &|key| meta.contains_key(key).unwrap_or(false))?;
    }
    let counts = super::backup::tree_counts(&trees)?;
    drop(trees);
    let id_floor = store.next_id()?;
    Ok((carried.expected(counts), id_floor))
}

/// From a PostgreSQL database: every table read inside one `REPEATABLE READ READ ONLY`
/// transaction, so the copy is one moment even while servers write.
fn from_postgres(
    target: &PgTarget,
    sink: &mut Sink,
    carried: &mut Carried<'_, '_>,
) -> Result<(Vec<(String, u64)>, u64), StoreError> {
    // Read as it is: its schema must be this release's, and the copy does not migrate it.
    let kv = PgKv::open_as_is(target)?;
    if kv.get("meta", COPY_MARKER)?.is_some() {
        return Err(StoreError::Io(format!(
            "the database {} holds a copy that did not finish: it is not a fleet to copy from",
            target.shown
        )));
    }
    let mut client = target.connect().map_err(|e| {
        StoreError::Io(format!("cannot connect to the database {}: {}", target.shown, described(&e)))
    })?;
    let sql = |e| StoreError::from(pg_error(e));
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(sql)?;
    let mut counts = Vec::new();
    for name in Trees::NAMES {
        let mut count = 0;
        let mut after: Vec<u8> = Vec::new();
        let mut first = true;
        loop {
            let rows = tx
                .query(
                    &format!(
                        "SELECT key, value FROM orange_{name} WHERE $1 OR key > $2 ORDER BY key LIMIT {BATCH}"
                    ),
                    &[&first, &after],
                )
                .map_err(sql)?;
            let entries: Vec<(Vec<u8>, Vec<u8>)> = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
            if *name == "meta" {
                carried.meta_secrets(sink, &entries)?;
            }
            let Some((last, _)) = entries.last() else { break };
            after = last.clone();
            first = false;
            count += entries.len() as u64;
            let full = entries.len() == BATCH;
            sink.write(name, entries.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
            if !full {
                break;
            }
        }
        let row = tx.query_one(&format!("SELECT count(*) FROM orange_{name}"), &[]).map_err(sql)?;
        let counted = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        if counted != count {
            return Err(StoreError::Io(format!(
                "tree {name}: counted {counted} entries in the source but read {count}"
            )));
        }
        counts.push((name.to_string(), count));
    }
    tx.commit().map_err(sql)?;
    // Taken after the copy: above every id the source handed out before it.
    let id_floor = kv.next_ids(1)?.first().copied().unwrap_or(0);
    Ok((counts, id_floor))
}

/// From a backup file: its puts and removes applied in order (a batch at a time, the last write
/// of a key in the batch winning), the keys each tree holds afterwards kept to count.
fn from_backup(
    path: &Path,
    sink: &mut Sink,
    carried: &mut Carried<'_, '_>,
) -> Result<(Vec<(String, u64)>, u64), StoreError> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|e| StoreError::Io(format!("cannot open the backup {}: {e}", path.display())))
    };
    // Checked whole first: nothing is written for a damaged backup.
    super::backup::verify(open()?)?;
    let mut held: BTreeMap<String, HashSet<Vec<u8>>> = BTreeMap::new();
    let mut pending: BTreeMap<String, Batch> = BTreeMap::new();
    let mut queued = 0;
    let mut files = Vec::new();
    let (_, trailer) = read_backup(open()?, |item| {
        match item {
            Item::Put { tree, key, value } => {
                let tree = String::from_utf8_lossy(tree).into_owned();
                held.entry(tree.clone()).or_default().insert(key.clone());
                pending.entry(tree).or_default().insert(key.clone(), Some(value.clone()));
            }
            Item::Remove { tree, key } => {
                let tree = String::from_utf8_lossy(tree).into_owned();
                held.entry(tree.clone()).or_default().remove(key);
                pending.entry(tree).or_default().insert(key.clone(), None);
            }
            Item::File { name, bytes } => {
                files.push((name.clone(), bytes.clone()));
                return Ok(());
            }
        }
        queued += 1;
        if queued == BATCH {
            queued = 0;
            for (tree, batch) in std::mem::take(&mut pending) {
                sink.write(&tree, batch)?;
            }
        }
        Ok(())
    })?;
    for (tree, batch) in pending {
        sink.write(&tree, batch)?;
    }
    let meta = held.get("meta").cloned().unwrap_or_default();
    for (name, bytes) in &files {
        carried.file(sink, name, bytes, &|key| meta.contains(key))?;
    }
    let counts = Trees::NAMES
        .iter()
        .map(|name| (name.to_string(), held.get(*name).map_or(0, |k| k.len() as u64)))
        .collect();
    Ok((carried.expected(counts), trailer.id_floor))
}

/// Refuses a data directory that holds anything but the lock file its holder made.
fn refuse_full_dir(dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, e))?;
    let mut others = entries.filter(|entry| entry.as_ref().map_or(true, |e| e.file_name() != LOCK_FILE));
    if others.next().is_some() {
        return Err(StoreError::Io(format!(
            "{} is not empty; copy into a new or empty directory (if a copy was cut short there, \
             empty it and copy again)",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuses a database whose trees hold anything.
fn refuse_full_database(kv: &PgKv) -> Result<(), StoreError> {
    for name in Trees::NAMES {
        let count = kv.len(name)?;
        if count > 0 {
            return Err(StoreError::Io(format!(
                "the database {} is not empty (tree {name} holds {count} entries); copy into an empty \
                 database (if a copy was cut short there, drop its orange_* tables or the database and \
                 copy again)",
                kv.shown()
            )));
        }
    }
    Ok(())
}

/// How many entries each table of the database holds.
fn pg_counts(kv: &PgKv) -> Result<Vec<(String, u64)>, StoreError> {
    Trees::NAMES.iter().map(|name| Ok((name.to_string(), kv.len(name)? as u64))).collect()
}

/// An error naming the first tree whose counts differ.
fn check_counts(source: &[(String, u64)], destination: &[(String, u64)]) -> Result<(), StoreError> {
    for ((name, want), (_, got)) in source.iter().zip(destination) {
        if want != got {
            return Err(StoreError::Io(format!(
                "the copy does not match: tree {name} holds {want} entries in the source but {got} in the \
                 destination; empty the destination and copy again"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
