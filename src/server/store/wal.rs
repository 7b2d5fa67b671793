//! The write-ahead log, the store's acknowledged truth: every committed write is appended here
//! (record format in `wal_record.rs`) while the store's write lock is held, in the order sled
//! applied it; [`Wal::sync`] (one fdatasync, run by the group committer) makes every appended
//! record durable. sled itself is flushed only by checkpoints.
//!
//! Files in `DIR/wal/`: segments `NNNNNNNNNNNNNNNNNNNN.log` (20 digits, increasing) and
//! `checkpoint`, the number of the first segment whose records may be missing from sled
//! (absent: 0). A checkpoint starts a new segment, flushes and syncs sled, then records the new
//! segment's number and deletes the older segments. Opening replays every segment from the
//! checkpoint on; only the last segment may end in a torn record, which is cut off.
//!
//! A compaction copying the database opens a [`Tap`]: the records appended meanwhile are kept
//! in memory too, and replayed onto the copy before it replaces the database. A backup opens
//! one the same way and ends it with a cut ([`Tap::take_cut`]).
//!
//! Appends reach the file (`write`) at once, under the write lock and before sled applies the
//! write, so a killed process loses none of the writes sled applied: sled's own files are never
//! ahead of the log.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::info;

use super::StoreError;
use super::db_dirs::{io_error, replace_file, sync_path};
use super::wal_record::{self, Op};

const CHECKPOINT_FILE: &str = "checkpoint";
const SEGMENT_SUFFIX: &str = ".log";

/// The log of a data directory.
pub struct Wal {
    dir: PathBuf,
    active: Mutex<Active>,
    /// Held by a checkpoint from start to end, so that two never interleave.
    checkpointing: Mutex<()>,
    /// Segments found at open whose records [`Wal::replay`] applies.
    pending: Vec<u64>,
}

/// The segment appended to.
struct Active {
    file: Arc<File>,
    number: u64,
    len: u64,
    /// Set by a failed append: the log no longer holds every applied write, so nothing may be
    /// acknowledged any more.
    failed: Option<String>,
    /// While a compaction copies the database: a copy of every record appended since it began
    /// (see [`Tap`]).
    tap: Option<Tapped>,
}

/// Records appended while a tap was open, not yet taken.
#[derive(Default)]
struct Tapped {
    /// Each record's ops, in the order appended.
    records: Vec<Vec<u8>>,
    /// Their bytes.
    bytes: usize,
}

/// An open tap on the log: from its opening on, every record appended is also kept in memory
/// (in append order, which is sled's), for a compaction to replay onto its copy. Dropping it
/// closes it.
pub struct Tap<'a> {
    wal: &'a Wal,
}

impl Tap<'_> {
    /// Takes the records appended since the tap opened or since the last take, oldest first,
    /// and their size in bytes.
    pub fn take(&self) -> (Vec<Vec<u8>>, usize) {
        let tapped = self.wal.writer().take_tapped();
        (tapped.records, tapped.bytes)
    }

    /// [`Tap::take`], where the log stands at that moment and what `clock` reads then: no
    /// record is appended in between (a backup's cut).
    pub fn take_cut(&self, clock: impl FnOnce() -> i64) -> (Vec<Vec<u8>>, Position, i64) {
        let mut writer = self.wal.writer();
        let position = Position { segment: writer.active.number, offset: writer.active.len };
        (writer.take_tapped().records, position, clock())
    }
}

/// Where the log stands: the active segment and the bytes appended to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// The active segment's number.
    pub segment: u64,
    /// Bytes appended to it.
    pub offset: u64,
}

impl Drop for Tap<'_> {
    fn drop(&mut self) {
        self.wal.writer().active.tap = None;
    }
}

/// The store's write lock: held while a write is appended and applied to sled, so that the
/// log's order is sled's. A write is appended before sled applies it, so the log is never
/// behind sled.
pub struct Writer<'a> {
    active: MutexGuard<'a, Active>,
}

impl Writer<'_> {
    /// The records an open tap kept since it opened or since the last take.
    fn take_tapped(&mut self) -> Tapped {
        self.active.tap.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Appends one record holding `ops` (see `wal_record::push_op`); nothing when empty.
    pub fn append(&mut self, ops: &[u8]) -> Result<(), StoreError> {
        if ops.is_empty() {
            return Ok(());
        }
        if let Some(e) = &self.active.failed {
            return Err(StoreError::Sync(e.clone()));
        }
        let record = wal_record::frame(ops);
        if let Err(e) = (&*self.active.file).write_all(&record) {
            let e = format!("cannot append to the write-ahead log: {e}");
            self.active.failed = Some(e.clone());
            return Err(StoreError::Sync(e));
        }
        self.active.len += record.len() as u64;
        if let Some(tap) = &mut self.active.tap {
            tap.records.push(ops.to_vec());
            tap.bytes += ops.len();
        }
        Ok(())
    }

    /// Marks the log failed: a write it holds did not reach sled (or the other way round), so
    /// from now on every append and sync fails and nothing more is acknowledged; a restart
    /// replays the log.
    pub fn fail(&mut self, why: &str) -> StoreError {
        let e = format!("the database failed after its write was logged: {why}");
        self.active.failed.get_or_insert(e.clone());
        StoreError::Sync(e)
    }
}

impl Wal {
    /// Opens the log in `dir` (creating it), cuts a torn tail off its last segment, and starts
    /// a new segment; the records to replay are read by [`Wal::replay`].
    pub fn open(dir: &Path) -> Result<Wal, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let first = read_checkpoint(dir)?;
        let mut pending = Vec::new();
        for number in segments(dir)? {
            if number < first {
                remove(&segment_path(dir, number))?; // a checkpoint's leftover
            } else {
                pending.push(number);
            }
        }
        if let Some(&last) = pending.last() {
            cut_torn_tail(&segment_path(dir, last))?;
        }
        let number = pending.last().map_or(first, |last| last + 1);
        let active =
            Active { file: Arc::new(create_segment(dir, number)?), number, len: 0, failed: None, tap: None };
        Ok(Wal { dir: dir.to_owned(), active: Mutex::new(active), checkpointing: Mutex::new(()), pending })
    }

    /// Calls `apply` with every write of the segments found at open, oldest first.
    pub fn replay(&self, mut apply: impl FnMut(Op<'_>) -> Result<(), StoreError>) -> Result<u64, StoreError> {
        let mut records = 0;
        for &number in &self.pending {
            let path = segment_path(&self.dir, number);
            let bytes = fs::read(&path).map_err(|e| io_error(&path, e))?;
            let scan = wal_record::scan(&bytes, &path)?;
            if scan.end != bytes.len() {
                // Open cut the last segment's torn tail; an earlier segment was synced whole.
                return Err(wal_record::corrupt(
                    &path,
                    scan.end,
                    "incomplete record before the end of the log",
                ));
            }
            let mut offset = 0;
            for ops in scan.records {
                for op in wal_record::decode_ops(ops, &path, offset)? {
                    apply(op)?;
                }
                offset += wal_record::HEADER + 1 + ops.len();
                records += 1;
            }
        }
        if records > 0 {
            info!(records, segments = self.pending.len(), "replayed the write-ahead log");
        }
        Ok(records)
    }

    /// The write lock (see [`Writer`]).
    pub fn writer(&self) -> Writer<'_> {
        Writer { active: self.active.lock().unwrap_or_else(|p| p.into_inner()) }
    }

    /// Opens a tap: every record appended from now on is kept for [`Tap::take`] too, until the
    /// tap is dropped. One at a time (compactions do not overlap).
    pub fn tap(&self) -> Tap<'_> {
        let mut writer = self.writer();
        debug_assert!(writer.active.tap.is_none(), "a second tap on the log");
        writer.active.tap = Some(Tapped::default());
        Tap { wal: self }
    }

    /// Bytes appended to the active segment.
    pub fn active_len(&self) -> u64 {
        self.writer().active.len
    }

    /// Makes every record appended so far durable (one fdatasync).
    pub fn sync(&self) -> std::io::Result<()> {
        let file = {
            let active = self.writer();
            if let Some(e) = &active.active.failed {
                return Err(std::io::Error::other(e.clone()));
            }
            Arc::clone(&active.active.file)
        };
        // Outside the lock: writers go on appending while the disk works.
        file.sync_data()
    }

    /// Keeps checkpoints from starting (one running is waited for) until the guard is dropped:
    /// a compaction holds it while it swaps the database, so that no checkpoint syncs the old
    /// one meanwhile.
    pub fn hold_checkpoints(&self) -> MutexGuard<'_, ()> {
        self.checkpointing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a new segment, runs `sync_db` (which must make every write sled applied so far
    /// durable in sled's own files), then drops the segments before the new one.
    pub fn checkpoint(&self, sync_db: impl FnOnce() -> std::io::Result<()>) -> Result<(), StoreError> {
        let _one = self.hold_checkpoints();
        let cut = self.rotate()?;
        sync_db().map_err(|e| StoreError::Sync(format!("cannot checkpoint the database: {e}")))?;
        write_checkpoint(&self.dir, cut)?;
        for number in segments(&self.dir)?.into_iter().filter(|&n| n < cut) {
            remove(&segment_path(&self.dir, number))?;
        }
        Ok(())
    }

    /// Starts a new segment unless the active one is empty; every earlier segment is synced.
    /// Returns the active segment's number.
    fn rotate(&self) -> Result<u64, StoreError> {
        let mut writer = self.writer();
        let active = &mut *writer.active;
        if active.len == 0 {
            return Ok(active.number);
        }
        active.file.sync_data().map_err(|e| io_error(&segment_path(&self.dir, active.number), e))?;
        let number = active.number + 1;
        active.file = Arc::new(create_segment(&self.dir, number)?);
        active.number = number;
        active.len = 0;
        Ok(number)
    }
}

/// The numbers of the segments in `dir`, in increasing order.
fn segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let name = entry.map_err(|e| io_error(dir, e))?.file_name();
        let number: Option<u64> =
            name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)).and_then(|n| n.parse().ok());
        numbers.extend(number);
    }
    numbers.sort_unstable();
    Ok(numbers)
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}{SEGMENT_SUFFIX}"))
}

/// Creates segment `number` and syncs the directory, so that it survives a power cut.
fn create_segment(dir: &Path, number: u64) -> Result<File, StoreError> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new().append(true).create(true).open(&path).map_err(|e| io_error(&path, e))?;
    sync_path(dir)?;
    Ok(file)
}

/// Cuts a torn record (a crash in the middle of an append) off the end of segment `path`; a
/// damaged complete record is an error.
fn cut_torn_tail(path: &Path) -> Result<(), StoreError> {
    let bytes = fs::read(path).map_err(|e| io_error(path, e))?;
    let end = wal_record::scan(&bytes, path)?.end;
    if end == bytes.len() {
        return Ok(());
    }
    info!(segment = %path.display(), at = end, cut = bytes.len() - end, "cutting a torn record off the write-ahead log");
    let file = OpenOptions::new().write(true).open(path).map_err(|e| io_error(path, e))?;
    file.set_len(end as u64).and_then(|()| file.sync_all()).map_err(|e| io_error(path, e))
}

fn read_checkpoint(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join(CHECKPOINT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map_err(|_| StoreError::Io(format!("{} holds no segment number: {text:?}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(&path, e)),
    }
}

/// Records durably that replay starts at segment `number`: a synced file renamed into place.
fn write_checkpoint(dir: &Path, number: u64) -> Result<(), StoreError> {
    replace_file(dir, CHECKPOINT_FILE, &format!("{number}\n"))?;
    sync_path(dir)
}

fn remove(path: &Path) -> Result<(), StoreError> {
    fs::remove_file(path).map_err(|e| io_error(path, e))
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
