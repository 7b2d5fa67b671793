//! Compaction. sled 0.34.7 reuses the log segments of deleted records only once a segment is
//! at most half live, and re-examines a segment only when a page in it is rewritten; pages that
//! time-ordered deletes leave behind are never rewritten, so under steady churn the file keeps
//! growing. When the database is mostly garbage, its live records are copied into a fresh
//! database (`db_dirs.rs` names them), which then replaces it while the server runs.
//!
//! Online, without stopping the store for the copy:
//! 1. A tap opens on the write-ahead log (`wal::Tap`): every record appended from then on is
//!    also kept in memory, in the order sled applies them.
//! 2. Every tree is copied into `sled.N+1` while writers go on, on a thread of the lowest
//!    priority (steps 2 and 3), so that on a busy machine requests come first. A sled iterator
//!    is not a snapshot: each key is read with some value it held after the tap opened.
//! 3. The tapped records are replayed onto the copy, in rounds, while writers go on; then the
//!    copy is synced, and caught up again. A record holds the final values of the keys it
//!    wrote and replay is in append order, so every key the tap saw ends with its last value,
//!    whatever the copy read; a key it did not see was not written since the tap opened, so
//!    the copy read its current value.
//! 4. Last step, brief: checkpoints held off, sole access to the trees (no store operation is
//!    in the middle of a write, none starts), the last tapped records replayed, the id floor
//!    and size recorded, the copy synced, `sled.current` switched to it (atomic rename,
//!    directory fsync), and the copy made the database in use. Then the old one is deleted.
//!
//! A crash before the rename leaves the old database in use (the half-made copy is deleted at
//! the next start) and the log replays onto it as always; after it, the new one, complete up to
//! the switch, onto which the log replays from its checkpoint: replay is idempotent and in
//! order, so records the copy already holds end with the same values.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::db_dirs::{current_name, io_error, next_name, remove_dir, switch_to, sync_path};
use super::trees::Trees;
use super::wal::{Tap, Wal};
use super::wal_record;
use super::{Embedded, Store, StoreError};

/// Compact once the database is this many times the size of its last compacted copy.
const GROWTH: u64 = 4;
/// Records copied per batch.
const COPY_BATCH: usize = 1000;
/// The copy is synced every time this many bytes were copied, so that its writes reach the disk
/// in small steps: a large backlog of them would hold up the log's fdatasyncs (the file
/// system's journal commits wait for them) and with them every acknowledgement.
const SYNC_EVERY_BYTES: usize = 1 << 20;
/// Catching up stops once a round replayed at most this many bytes of records...
const CAUGHT_UP_BYTES: usize = 256 * 1024;
/// ... or after this many rounds (writers faster than replay: the last step replays the rest).
const CATCH_UP_ROUNDS: usize = 16;

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// Size on disk before.
    pub before_bytes: u64,
    /// Size on disk of the fresh copy.
    pub after_bytes: u64,
    /// How long it took, start to end.
    pub took: Duration,
    /// How long store operations were held off (the last step).
    pub paused: Duration,
}

/// The moments of an online compaction, for tests that look at the data directory or write
/// between them (see [`Store::compact_observed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Every tree is copied; the old database is in use and writers go on.
    Copied,
    /// The copy caught up with the log and is synced; writers go on.
    Synced,
    /// Sole access: the copy holds every write and is synced; the switch comes next.
    Sealed,
    /// `sled.current` names the copy; the old database is not yet replaced nor deleted.
    Switched,
}

/// Serialises compactions (the sweeper's, and tests' direct calls).
pub(super) type CompactLock = Mutex<()>;

impl Store {
    /// Compacts the database if it is mostly garbage: larger than both the policy's minimum
    /// and [`GROWTH`] times its size after the last compaction. Reads two numbers; scans
    /// nothing.
    /// Never on PostgreSQL, whose space autovacuum reclaims.
    pub fn compact_if_needed(&self) -> Result<Option<Compaction>, StoreError> {
        if self.embedded.is_none() {
            return Ok(None);
        }
        let needed = {
            let trees = self.trees();
            needs_compaction(&trees, self.policy.compact_min_bytes)?
        };
        if !needed {
            return Ok(None);
        }
        self.compact().map(Some)
    }

    /// Copies every tree into a fresh database while store operations go on, makes it the one
    /// in use (durably), and deletes the old one. Store operations wait only for the last step
    /// (replaying the writes made since the last catch-up and switching).
    pub fn compact(&self) -> Result<Compaction, StoreError> {
        self.compact_observed(&mut |_| {})
    }

    /// [`Store::compact`], calling `observe` at each [`Step`] (at `Copied` and `Synced` on the
    /// copying thread; at `Sealed` and `Switched` on this one, under sole access, so it must not
    /// call the store then).
    pub(super) fn compact_observed(
        &self,
        observe: &mut (dyn FnMut(Step) + Send),
    ) -> Result<Compaction, StoreError> {
        let embedded = self.embedded()?;
        let _one = self.compacting.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // The tap before the copy begins: every write the copy may miss is in it.
        let tap = embedded.wal.tap();
        let old = self.gate.current();
        let before_bytes = old.size_on_disk()?;
        let new_name = next_name(&old.name);
        info!(from = %old.name, to = %new_name, before_bytes, "compacting the database");
        let (after_bytes, paused) = self.copy_and_swap(&old, &tap, &new_name, observe).inspect_err(|_| {
            // Give the space back (the disk may be full); the old database stays in use.
            let _ = remove_dir(&embedded.dir.join(&new_name));
        })?;
        drop(tap);
        let old_path = embedded.dir.join(&old.name);
        drop(old);
        if let Err(e) = remove_dir(&old_path) {
            warn!(error = %e, "cannot delete the old database; the next start retries");
        }
        let took = started.elapsed();
        self.metrics.compaction(took);
        Ok(finished(Compaction { before_bytes, after_bytes, took, paused }))
    }

    /// Copies `old` into `new_name` and catches it up with `tap` on a thread of the lowest
    /// priority, then swaps it in on this one; returns its size and how long operations were
    /// held off.
    fn copy_and_swap(
        &self,
        old: &Trees,
        tap: &Tap<'_>,
        new_name: &str,
        observe: &mut (dyn FnMut(Step) + Send),
    ) -> Result<(u64, Duration), StoreError> {
        let mut fresh = std::thread::scope(|scope| {
            let copying = std::thread::Builder::new()
                .name("orange-compact".into())
                .spawn_scoped(scope, || {
                    lower_priority();
                    self.make_copy(old, tap, new_name, observe)
                })
                .map_err(|e| StoreError::Io(format!("cannot start the compaction thread: {e}")))?;
            copying.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        // At normal priority: every operation waits for this step.
        let embedded = self.embedded()?;
        let _no_checkpoint = embedded.wal.hold_checkpoints();
        let mut sole = self.gate.sole();
        let paused = Instant::now();
        replay(&fresh, &tap.take().0)?;
        let after_bytes = seal(&mut fresh, old.next_id()?, &embedded.dir)?;
        observe(Step::Sealed);
        switch_to(&embedded.dir, new_name)?;
        observe(Step::Switched);
        sole.replace(fresh);
        Ok((after_bytes, paused.elapsed()))
    }

    /// Copies `old` into `new_name` and catches the copy up with `tap`, synced.
    fn make_copy(
        &self,
        old: &Trees,
        tap: &Tap<'_>,
        new_name: &str,
        observe: &mut (dyn FnMut(Step) + Send),
    ) -> Result<Trees, StoreError> {
        let Embedded { dir, cache_bytes, wal, .. } = self.embedded()?;
        let fresh = open_fresh(dir, new_name, *cache_bytes, wal)?;
        copy_trees(old, &fresh)?;
        observe(Step::Copied);
        catch_up(&fresh, tap)?;
        sync_all(&fresh, dir)?;
        catch_up(&fresh, tap)?;
        // Writes of the last round are synced here, so the last step's sync is short.
        sync(&fresh, dir)?;
        catch_up(&fresh, tap)?;
        observe(Step::Synced);
        Ok(fresh)
    }
}

/// Gives the calling thread the lowest priority (nice 19), so that on a busy machine the copy
/// takes the CPU the server's requests leave. On Linux, `setpriority(PRIO_PROCESS, 0, ..)`
/// applies to the calling thread only.
pub(super) fn lower_priority() {
    // SAFETY: setpriority takes plain integers and changes only the calling thread's priority.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot lower the priority of the copying thread");
    }
}

/// Whether `trees` is large enough to be compacted.
fn needs_compaction(trees: &Trees, min_bytes: u64) -> Result<bool, StoreError> {
    let last = trees.compacted_bytes()?.unwrap_or(0);
    Ok(trees.size_on_disk()? > min_bytes.max(last.saturating_mul(GROWTH)))
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
    let before_bytes = trees.size_on_disk()?;
    let new_name = next_name(&name);
    info!(from = %name, to = %new_name, before_bytes, "compacting the database");
    let fresh = rewrite(&trees, dir, &new_name, cache_bytes, wal).inspect_err(|_| {
        let _ = remove_dir(&dir.join(&new_name));
    })?;
    drop(trees);
    remove_dir(&dir.join(&name))?;
    let took = started.elapsed();
    finished(Compaction { before_bytes, after_bytes: fresh.size_on_disk()?, took, paused: took });
    Ok(fresh)
}

/// Copies `old`, alone (at start, before anything writes), into `dir/new_name` and makes that
/// the database in use.
fn rewrite(
    old: &Trees,
    dir: &Path,
    new_name: &str,
    cache_bytes: u64,
    wal: &Arc<Wal>,
) -> Result<Trees, StoreError> {
    let mut fresh = open_fresh(dir, new_name, cache_bytes, wal)?;
    copy_trees(old, &fresh)?;
    sync_all(&fresh, dir)?;
    seal(&mut fresh, old.next_id()?, dir)?;
    switch_to(dir, new_name)?;
    Ok(fresh)
}

fn finished(done: Compaction) -> Compaction {
    let Compaction { before_bytes, after_bytes, .. } = done;
    let took_ms = u64::try_from(done.took.as_millis()).unwrap_or(u64::MAX);
    let paused_ms = u64::try_from(done.paused.as_millis()).unwrap_or(u64::MAX);
    info!(before_bytes, after_bytes, took_ms, paused_ms, "database compacted");
    done
}

/// Opens an empty database `dir/name`, deleting what a crash left there first.
fn open_fresh(dir: &Path, name: &str, cache_bytes: u64, wal: &Arc<Wal>) -> Result<Trees, StoreError> {
    let path = dir.join(name);
    if path.exists() {
        remove_dir(&path)?; // a copy a crash left half made
    }
    Trees::open(dir, name, cache_bytes, Arc::clone(wal))
}

/// Copies every tree sled lists in `old` into `fresh` (not logged: the log already holds
/// every write), syncing `fresh` every [`SYNC_EVERY_BYTES`] copied.
fn copy_trees(old: &Trees, fresh: &Trees) -> Result<(), StoreError> {
    let mut unsynced = 0;
    for tree in old.sled()?.db.tree_names() {
        copy_tree(&old.sled()?.db.open_tree(&tree)?, fresh, &tree, &mut unsynced)?;
    }
    Ok(())
}

/// Copies one tree; `unsynced` counts the bytes copied since `fresh` was last synced.
fn copy_tree(from: &sled::Tree, fresh: &Trees, name: &[u8], unsynced: &mut usize) -> Result<(), StoreError> {
    let to = fresh.sled()?.db.open_tree(name)?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    for entry in from.iter() {
        let (key, value) = entry?;
        *unsynced += key.len() + value.len();
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == COPY_BATCH || *unsynced >= SYNC_EVERY_BYTES {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
        if *unsynced >= SYNC_EVERY_BYTES {
            fresh.sync().map_err(|e| StoreError::Sync(format!("cannot sync the compacted copy: {e}")))?;
            *unsynced = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// Replays the records tapped so far onto `fresh`, round after round, until a round finds
/// little (or enough rounds ran).
fn catch_up(fresh: &Trees, tap: &Tap<'_>) -> Result<(), StoreError> {
    for _ in 0..CATCH_UP_ROUNDS {
        let (records, bytes) = tap.take();
        replay(fresh, &records)?;
        if bytes <= CAUGHT_UP_BYTES {
            break;
        }
    }
    Ok(())
}

/// Applies `records` (each a record's ops, as the log holds them) to `fresh`, in order.
fn replay(fresh: &Trees, records: &[Vec<u8>]) -> Result<(), StoreError> {
    let source = Path::new("(records appended during a compaction)");
    for ops in records {
        for op in wal_record::decode_ops(ops, source, 0)? {
            fresh.apply(&op)?;
        }
    }
    Ok(())
}

/// Records in `fresh` where ids continue and its size, and syncs it; returns the size.
fn seal(fresh: &mut Trees, id_floor: u64, dir: &Path) -> Result<u64, StoreError> {
    let bytes = fresh.size_on_disk()?;
    fresh.mark_compacted(id_floor, bytes)?;
    sync(fresh, dir)?;
    Ok(bytes)
}

/// Syncs `fresh` and its directory.
fn sync(fresh: &Trees, dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(&fresh.name);
    fresh.sync().map_err(|e| io_error(&path, e))?;
    sync_path(&path)
}

/// Syncs `fresh` with every directory entry it has (its files, itself in `dir`).
pub(super) fn sync_all(fresh: &Trees, dir: &Path) -> Result<(), StoreError> {
    sync(fresh, dir)?;
    let path = dir.join(&fresh.name);
    for file in ["conf", "blobs"] {
        sync_path(&path.join(file))?;
    }
    sync_path(dir)
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
        let db = &trees.sled().expect("a sled store").db;
        let mut dump = Dump::new();
        for name in db.tree_names() {
            if name == db.name() {
                continue;
            }
            let tree = db.open_tree(&name).expect("open a listed tree");
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
