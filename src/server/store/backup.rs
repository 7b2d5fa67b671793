//! Online backup and restore of the store (file format in `backup_format.rs`).
//!
//! A backup is taken while the server runs, with compaction's machinery and its argument:
//! 1. A tap opens on the write-ahead log: every record appended from then on is kept too.
//! 2. Every tree is read with sled iterators while writers go on, each entry written out as a
//!    `put`; every [`DRAIN_EVERY`] entries, the records tapped so far are written out too, as the
//!    `put`s and `remove`s they hold, so the tap never grows with the size of the store.
//! 3. The cut: under the log's write lock (a moment, no scan), the last tapped records are
//!    taken with the log's position, and the tap closes. They are written out, then the trailer.
//!
//! Applied in file order, the frames give every key its value at the cut: a key no record
//! touched between the tap and the cut was read with that value; for one a record touched, the
//! last such record comes after any read of the key that could have seen an older value
//! (records are taken under the write lock, after sled applied them), and a read after it saw
//! its value. So the backup is consistent to one moment, the cut, and holds every write
//! acknowledged before the backup began, while agents and operators go on writing.
//!
//! A restore writes into an empty directory through the store's own open path (log, database,
//! checkpoint), applies the frames without logging them, records the id floor, syncs, and
//! checkpoints. A marker file stands in the directory until it is done; the store refuses to
//! open a directory holding it, so a restore cut short is never served as if whole.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use tracing::info;

use super::backup_format::{BackupReader, BackupWriter, Cut, FormatError, Header, Item, Trailer};
use super::compact::{lower_priority, open_current, sync_all};
use super::db_dirs::{io_error, sync_path};
use super::trees::Trees;
use super::wal::{Tap, Wal};
use super::wal_record::{self, Op};
use super::{Store, StoreError, WAL_DIR};
use crate::server::clock::now_ms;

/// Entries copied between two drains of the tap.
const DRAIN_EVERY: usize = 1000;
/// Most files a backup may carry.
const MAX_FILES: usize = 16;
/// What a restore hands each file of the backup to (its name and bytes), to write it.
pub type FileWriter<'a> = dyn FnMut(&str, &[u8]) -> Result<(), StoreError> + 'a;
/// The file that stands in a data directory while a restore writes it.
pub const RESTORING_FILE: &str = "restore.incomplete";

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Its header.
    pub header: Header,
    /// Its trailer: the cut and the counts.
    pub trailer: Trailer,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The backup's header.
    pub header: Header,
    /// The backup's trailer.
    pub trailer: Trailer,
    /// Entries in each tree afterwards, by tree name (every tree, empty ones too).
    pub trees: Vec<(String, u64)>,
}

impl From<FormatError> for StoreError {
    fn from(e: FormatError) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl Store {
    /// Writes a backup of every tree to `out`, with `files` (name, bytes) of the data directory
    /// first, while store operations go on; store writes wait only for the cut, a moment under
    /// the log's write lock. Waits for a running compaction (and another backup) to end first.
    /// Lowers the calling thread to the lowest priority for good: call it from a thread of its
    /// own (the backup route's sending thread).
    pub fn backup<W: Write>(&self, out: W, files: &[(String, Vec<u8>)]) -> Result<BackupSummary, StoreError> {
        let _one = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        lower_priority();
        self.backup_holding_the_lock(out, files)
    }

    /// [`Store::backup`], once no compaction can swap the database.
    fn backup_holding_the_lock<W: Write>(
        &self,
        out: W,
        files: &[(String, Vec<u8>)],
    ) -> Result<BackupSummary, StoreError> {
        let tap = self.embedded()?.wal.tap();
        let header = Header { orange_version: env!("CARGO_PKG_VERSION").into(), created_at_ms: now_ms() };
        let mut writer = BackupWriter::start(out, &header)?;
        for (name, bytes) in files {
            writer.file(name, bytes)?;
        }
        // No swap can happen while the compaction lock is held, so this stays the database.
        copy_trees(&self.gate.current(), &tap, &mut writer)?;
        let (records, position, at_ms) = tap.take_cut(now_ms);
        drop(tap);
        write_records(&records, &mut writer)?;
        // Taken after the cut: above every id handed out before it.
        let id_floor = self.next_id()?;
        let cut = Cut { at_ms, segment: position.segment, offset: position.offset };
        let (_, trailer, bytes) = writer.finish(cut, id_floor)?;
        info!(bytes, records = trailer.counts.records(), cut_at_ms = at_ms, "backup written");
        Ok(BackupSummary { header, trailer, bytes })
    }
}

/// Writes every entry of every tree as a `put`, with the tapped records every
/// [`DRAIN_EVERY`] entries.
fn copy_trees<W: Write>(
    trees: &Trees,
    tap: &Tap<'_>,
    writer: &mut BackupWriter<W>,
) -> Result<(), StoreError> {
    let mut since_drain = 0;
    for name in Trees::NAMES {
        for entry in trees.sled()?.db.open_tree(name)?.iter() {
            let (key, value) = entry?;
            writer.put(name.as_bytes(), &key, &value)?;
            since_drain += 1;
            if since_drain == DRAIN_EVERY {
                write_records(&tap.take().0, writer)?;
                since_drain = 0;
            }
        }
    }
    Ok(())
}

/// Writes the ops of tapped `records`, in order.
fn write_records<W: Write>(records: &[Vec<u8>], writer: &mut BackupWriter<W>) -> Result<(), StoreError> {
    let source = Path::new("(records appended during a backup)");
    for ops in records {
        for op in wal_record::decode_ops(ops, source, 0)? {
            match op.value {
                Some(value) => writer.put(op.tree, op.key, value)?,
                None => writer.remove(op.tree, op.key)?,
            }
        }
    }
    Ok(())
}

/// Reads a whole backup, checking every record, without writing anything.
pub fn verify(input: impl Read) -> Result<(Header, Trailer), StoreError> {
    read_backup(input, |_| Ok(()))
}

/// Reads the backup `input` through, checking every record ([`check_item`]) and handing it to
/// `each`; returns its header and trailer.
pub(super) fn read_backup(
    input: impl Read,
    mut each: impl FnMut(&Item) -> Result<(), StoreError>,
) -> Result<(Header, Trailer), StoreError> {
    let (mut reader, header) = BackupReader::open(input)?;
    let mut files = 0;
    while let Some((at, item)) = reader.next_item()? {
        check_item(&item, at, &mut files)?;
        each(&item)?;
    }
    let trailer =
        reader.trailer().cloned().ok_or_else(|| StoreError::Io("the backup has no trailer".into()))?;
    Ok((header, trailer))
}

/// Restores the backup `input` into `dir`, which must hold nothing of a data directory yet:
/// every tree's entries, written through the store's open path and synced; each file the
/// backup carries is handed to `on_file` (name, bytes), which writes it. Until it returns `Ok`,
/// `dir` holds [`RESTORING_FILE`] and no store opens it.
pub fn restore(
    dir: &Path,
    input: impl Read,
    cache_bytes: u64,
    on_file: &mut FileWriter<'_>,
) -> Result<Restored, StoreError> {
    let marker = dir.join(RESTORING_FILE);
    std::fs::write(&marker, b"a restore is writing this directory\n").map_err(|e| io_error(&marker, e))?;
    sync_path(dir)?;
    let wal = Arc::new(Wal::open(&dir.join(WAL_DIR))?);
    let mut trees = open_current(dir, cache_bytes, u64::MAX, &wal)?;
    let (header, trailer) = apply_backup(&trees, input, on_file)?;
    let bytes = trees.size_on_disk()?;
    trees.mark_compacted(trailer.id_floor, bytes)?;
    wal.checkpoint(|| trees.sync())?;
    sync_all(&trees, dir)?;
    let counts = tree_counts(&trees)?;
    drop(trees);
    std::fs::remove_file(&marker).map_err(|e| io_error(&marker, e))?;
    sync_path(dir)?;
    info!(dir = %dir.display(), records = trailer.counts.records(), "backup restored");
    Ok(Restored { header, trailer, trees: counts })
}

/// Applies every record of `input` to `trees` (not logged), files to `on_file`.
fn apply_backup(
    trees: &Trees,
    input: impl Read,
    on_file: &mut FileWriter<'_>,
) -> Result<(Header, Trailer), StoreError> {
    read_backup(input, |item| match item {
        Item::Put { tree, key, value } => trees.apply(&Op { tree, key, value: Some(value) }),
        Item::Remove { tree, key } => trees.apply(&Op { tree, key, value: None }),
        Item::File { name, bytes } => on_file(name, bytes),
    })
}

/// Refuses a record naming a tree this build does not have, and files past [`MAX_FILES`].
fn check_item(item: &Item, at: u64, files: &mut usize) -> Result<(), StoreError> {
    let tree = match item {
        Item::Put { tree, .. } | Item::Remove { tree, .. } => tree,
        Item::File { .. } => {
            *files += 1;
            if *files > MAX_FILES {
                return Err(StoreError::Io(format!(
                    "the backup carries more than {MAX_FILES} files (at byte {at})"
                )));
            }
            return Ok(());
        }
    };
    if !Trees::NAMES.iter().any(|name| name.as_bytes() == tree.as_slice()) {
        return Err(StoreError::Io(format!(
            "the record at byte {at} names the tree {:?}, which this orange does not have",
            String::from_utf8_lossy(tree)
        )));
    }
    Ok(())
}

/// How many entries each tree holds.
pub(super) fn tree_counts(trees: &Trees) -> Result<Vec<(String, u64)>, StoreError> {
    let db = &trees.sled()?.db;
    Trees::NAMES.iter().map(|name| Ok((name.to_string(), db.open_tree(name)?.len() as u64))).collect()
}

/// Refuses a data directory a restore did not finish writing.
pub fn refuse_unfinished_restore(dir: &Path) -> Result<(), StoreError> {
    if dir.join(RESTORING_FILE).exists() {
        return Err(StoreError::Io(format!(
            "{} holds a restore that did not finish ({RESTORING_FILE} is there); delete the directory and \
             restore again",
            dir.display()
        )));
    }
    Ok(())
}
