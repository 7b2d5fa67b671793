//! Compaction. sled 0.34.7 reuses the log segments of deleted records only once a segment is
//! at most half live, and re-examines a segment only when a page in it is rewritten; pages that
//! time-ordered deletes leave behind are never rewritten, so under steady churn the file keeps
//! growing. When the database is mostly garbage, its live records are copied into a fresh
//! database, which then replaces it while the server runs.
//!
//! Layout: `DIR/sled` (a database never compacted) or `DIR/sled.N`; the file `DIR/sled.current`
//! names the one in use (absent: `sled`). A compaction of `sled.N` writes `sled.N+1`, syncs it,
//! then replaces `sled.current` by an atomic rename and syncs `DIR`; only then does the server
//! switch to it and delete the old one. A crash before the rename leaves the old database in use
//! (the half-made copy is deleted at the next start); after it, the new one, complete. Every
//! store operation is paused during the copy, so no write lands in the old database after its
//! copy began. The write-ahead log is checkpointed into the old database before the copy, so
//! the fresh one holds every logged write and the log needs nothing from the old one.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::trees::Trees;
use super::wal::Wal;
use super::{Store, StoreError};

/// The file naming the database directory in use.
pub const CURRENT_FILE: &str = "sled.current";
/// The database directory of a data directory that was never compacted.
const FIRST_NAME: &str = "sled";
/// Compact once the database is this many times the size of its last compacted copy.
const GROWTH: u64 = 4;
/// Records copied per batch.
const COPY_BATCH: usize = 1000;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Size on disk before.
    pub before_bytes: u64,
    /// Size on disk of the fresh copy.
    pub after_bytes: u64,
    /// How long the store was paused.
    pub took: Duration,
}

impl Store {
    /// Compacts the database if it is mostly garbage: larger than both the policy's minimum
    /// and [`GROWTH`] times its size after the last compaction. Reads two numbers; scans
    /// nothing.
    pub fn compact_if_needed(&self) -> Result<Option<Compaction>, StoreError> {
        let needed = {
            let trees = self.trees();
            needs_compaction(&trees, self.policy.compact_min_bytes)?
        };
        if !needed {
            return Ok(None);
        }
        self.compact().map(Some)
    }

    /// Copies every tree into a fresh database, makes it the one in use (durably), and deletes
    /// the old one. Store operations wait while it runs.
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        let started = Instant::now();
        let mut sole = self.gate.sole();
        let old_name = sole.name.clone();
        // Everything logged is in the old database first, so the copy needs no log.
        self.wal.checkpoint(|| sole.sync())?;
        let (fresh, before_bytes) = rewrite(&sole, &self.dir, self.cache_bytes, &self.wal)?;
        let after_bytes = fresh.size_on_disk()?;
        // Drops the old database: passes always take the current one, so nothing else holds it.
        sole.replace(fresh);
        drop(sole);
        if let Err(e) = remove_dir(&self.dir.join(&old_name)) {
            warn!(error = %e, "cannot delete the old database; the next start retries");
        }
        Ok(finished(before_bytes, after_bytes, started))
    }
}

/// Whether `trees` is large enough to be compacted.
fn needs_compaction(trees: &Trees, min_bytes: u64) -> Result<bool, StoreError> {
    let last = trees.compacted_bytes()?.unwrap_or(0);
    Ok(trees.size_on_disk()? > min_bytes.max(last.saturating_mul(GROWTH)))
}

/// The database directory in use in `dir`, after deleting any other (a copy a crash left half
/// made, or an old database a crash kept from being deleted).
pub(super) fn current_name(dir: &Path) -> Result<String, StoreError> {
    let pointer = dir.join(CURRENT_FILE);
    let name = match fs::read_to_string(&pointer) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FIRST_NAME.to_owned(),
        Err(e) => return Err(io_error(&pointer, e)),
    };
    if generation(&name).is_none() {
        return Err(StoreError::Io(format!("{} names no database: {name:?}", pointer.display())));
    }
    if pointer.exists() && !dir.join(&name).is_dir() {
        // Opening it would create an empty database in place of the data.
        return Err(StoreError::Io(format!("{} names {name}, which is missing", pointer.display())));
    }
    remove_others(dir, &name)?;
    Ok(name)
}

/// Opens the database in use in `dir`, compacting it first if it is mostly garbage.
/// Before that, replays the write-ahead log onto it and checkpoints.
pub(super) fn open_current(
    dir: &Path,
    cache_bytes: u64,
    min_bytes: u64,
    wal: &Arc<Wal>,
) -> Result<Trees, StoreError> {
    let name = current_name(dir)?;
    let trees = Trees::open(dir, &name, cache_bytes, Arc::clone(wal))?;
    wal.replay(|op| trees.apply(&op))?;
    wal.checkpoint(|| trees.sync())?;
    if !needs_compaction(&trees, min_bytes)? {
        return Ok(trees);
    }
    let started = Instant::now();
    let (fresh, before_bytes) = rewrite(&trees, dir, cache_bytes, wal)?;
    drop(trees);
    remove_dir(&dir.join(&name))?;
    finished(before_bytes, fresh.size_on_disk()?, started);
    Ok(fresh)
}

/// Copies `old` into the next database directory and makes that the one in use; returns it
/// and the old one's size.
fn rewrite(old: &Trees, dir: &Path, cache_bytes: u64, wal: &Arc<Wal>) -> Result<(Trees, u64), StoreError> {
    let before_bytes = old.size_on_disk()?;
    let new_name = next_name(&old.name);
    info!(from = %old.name, to = %new_name, before_bytes, "compacting the database");
    let fresh = copy_into(old, dir, &new_name, cache_bytes, wal).inspect_err(|_| {
        // Give the space back (the disk may be full); the old database stays in use.
        let _ = remove_dir(&dir.join(&new_name));
    })?;
    switch_to(dir, &new_name)?;
    Ok((fresh, before_bytes))
}

fn finished(before_bytes: u64, after_bytes: u64, started: Instant) -> Compaction {
    let done = Compaction { before_bytes, after_bytes, took: started.elapsed() };
    let took_ms = u64::try_from(done.took.as_millis()).unwrap_or(u64::MAX);
    info!(before_bytes, after_bytes, took_ms, "database compacted");
    done
}

/// `sled` → 0, `sled.N` → N.
fn generation(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(FIRST_NAME)?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn next_name(name: &str) -> String {
    format!("{FIRST_NAME}.{}", generation(name).unwrap_or(0) + 1)
}

/// Deletes every database directory in `dir` other than `keep`.
fn remove_others(dir: &Path, keep: &str) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map_err(|e| io_error(&entry.path(), e))?.is_dir();
        if is_dir && name != keep && generation(&name).is_some() {
            info!(database = %name, "deleting a database no longer in use");
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

/// Copies every tree of `old` into a fresh database `dir/name`, records where its ids continue
/// and its size, and syncs it with its directory entries.
fn copy_into(
    old: &Trees,
    dir: &Path,
    name: &str,
    cache_bytes: u64,
    wal: &Arc<Wal>,
) -> Result<Trees, StoreError> {
    let path = dir.join(name);
    if path.exists() {
        remove_dir(&path)?; // a copy a crash left half made
    }
    let mut fresh = Trees::open(dir, name, cache_bytes, Arc::clone(wal))?;
    for tree in old.db.tree_names() {
        copy_tree(&old.db.open_tree(&tree)?, &fresh.db.open_tree(&tree)?)?;
    }
    fresh.sync().map_err(|e| io_error(&path, e))?;
    let bytes = fresh.size_on_disk()?;
    fresh.mark_compacted(old.next_id()?, bytes)?;
    fresh.sync().map_err(|e| io_error(&path, e))?;
    for file in ["conf", "blobs", ""] {
        sync_path(&path.join(file))?;
    }
    sync_path(dir)?;
    Ok(fresh)
}

fn copy_tree(from: &sled::Tree, to: &sled::Tree) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for entry in from.iter() {
        let (key, value) = entry?;
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == COPY_BATCH {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Makes `name` the database in use: writes the pointer beside, syncs it, renames it over the
/// old one, and syncs the directory. Once the rename succeeded, `name` is in use whatever
/// follows, so a failure of the last sync is only logged.
fn switch_to(dir: &Path, name: &str) -> Result<(), StoreError> {
    let target = dir.join(CURRENT_FILE);
    let temp = dir.join(format!("{CURRENT_FILE}.new"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(format!("{name}\n").as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    };
    write().map_err(|e| io_error(&target, e))?;
    if let Err(e) = sync_path(dir) {
        warn!(error = %e, "the switch to the compacted database may not survive a power cut");
    }
    Ok(())
}

/// fsync of a file or a directory.
fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_error(path, e))
}

fn remove_dir(path: &Path) -> Result<(), StoreError> {
    fs::remove_dir_all(path).map_err(|e| io_error(path, e))
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", path.display()))
}

/// Every record of every tree, by tree name, except sled's default tree (which holds the
/// compaction's own bookkeeping).
#[cfg(test)]
pub(super) type Dump = std::collections::BTreeMap<Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>>;

#[cfg(test)]
impl Store {
    /// Every record of every tree but sled's default one.
    pub(super) fn dump(&self) -> Dump {
        let trees = self.trees();
        let mut dump = Dump::new();
        for name in trees.db.tree_names() {
            if name == trees.db.name() {
                continue;
            }
            let tree = trees.db.open_tree(&name).expect("open a listed tree");
            let records = tree.iter().map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).expect("read"));
            dump.insert(name.to_vec(), records.collect());
        }
        dump
    }

    /// The database directory in use.
    pub(super) fn current_dir_name(&self) -> String {
        self.trees().name.clone()
    }

    /// [`Store::next_id`] for tests.
    pub(super) fn fresh_id(&self) -> u64 {
        self.next_id().expect("generate an id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_carry_their_generation() {
        assert_eq!(generation("sled"), Some(0));
        assert_eq!(generation("sled.7"), Some(7));
        assert_eq!(generation("sled.current"), None);
        assert_eq!(generation("sled.+7"), None);
        assert_eq!(generation("sled."), None);
        assert_eq!(generation("sledge"), None);
        assert_eq!(next_name("sled"), "sled.1");
        assert_eq!(next_name("sled.9"), "sled.10");
    }
}
