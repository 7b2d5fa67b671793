//! The store's trees on either engine. On sled, every write goes to the write-ahead log
//! (`wal.rs`) as well: [`LoggedTree`] for writes outside transactions (each one record,
//! appended under the store's write lock just before sled applies it) and [`LoggedTx`] for
//! writes inside one (gathered, then appended as one record by `Trees::transaction` when the
//! transaction's closure succeeded, before sled commits it, still under the lock). A write
//! logged that sled then fails to apply marks the log failed (`Writer::fail`). On PostgreSQL
//! (`pg/`), each tree is a table and the database's commit makes a write durable.
//! The wrappers offer the reads the store uses and the writes it uses (`insert`, `remove`,
//! `compare_and_swap`, `pop_min`; in a transaction also `put` and `delete`, which do not read
//! the value they replace); nothing else, so a write that would bypass the log does not
//! compile.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use sled::transaction::UnabortableTransactionError;
use sled::{CompareAndSwapError, IVec};

/// What a transactional write returns.
type TxResult = Result<Option<IVec>, UnabortableTransactionError>;

use super::pg::{PgKv, Scan};
use super::wal::Wal;
use super::wal_record::push_op;

/// A tree, read and written outside transactions.
pub struct LoggedTree {
    name: &'static str,
    engine: Engine,
}

/// What a tree is kept in.
enum Engine {
    /// A sled tree, its writes logged to `wal` first.
    Sled { tree: sled::Tree, wal: Arc<Wal> },
    /// A table of the PostgreSQL database.
    Postgres(Arc<PgKv>),
}

/// What a transaction reads through when its overlay does not have the key.
pub trait TxRead {
    /// The committed value at `key` of `tree`, as this transaction sees it.
    fn get(&self, tree: &str, key: &[u8]) -> sled::Result<Option<IVec>>;

    /// Which of `keys` of `tree` are committed, as this transaction sees them, in their order:
    /// one read for all where the engine can (one statement on PostgreSQL).
    fn contains_each(&self, tree: &str, keys: &[&[u8]]) -> sled::Result<Vec<bool>> {
        keys.iter().map(|key| Ok(self.get(tree, key)?.is_some())).collect()
    }

    /// `count` new ids, in increasing order, taken within the transaction itself where the
    /// engine has them there (the PostgreSQL sequence, one statement for all); `None` where ids
    /// come from outside transactions (sled).
    fn next_ids(&self, _count: usize) -> Option<sled::Result<Vec<u64>>> {
        None
    }

    /// The first committed entry of `tree` from `from` (and before `to`) that no other
    /// transaction holds, now held by this one until it ends. On sled, where one transaction
    /// runs at a time, simply the first entry.
    fn claim_first(&self, tree: &str, from: &[u8], to: Option<&[u8]>) -> sled::Result<Option<(IVec, IVec)>>;

    /// Whether `key` of `tree` is committed and no other transaction holds it; if so, this one
    /// holds it now. On sled, whether it is there.
    fn claim(&self, tree: &str, key: &[u8]) -> sled::Result<bool>;
}

impl TxRead for sled::Tree {
    fn get(&self, _tree: &str, key: &[u8]) -> sled::Result<Option<IVec>> {
        sled::Tree::get(self, key)
    }

    fn claim_first(&self, _tree: &str, from: &[u8], to: Option<&[u8]>) -> sled::Result<Option<(IVec, IVec)>> {
        let upper = to.map_or(Bound::Unbounded, Bound::Excluded);
        self.range::<&[u8], _>((Bound::Included(from), upper)).next().transpose()
    }

    fn claim(&self, _tree: &str, key: &[u8]) -> sled::Result<bool> {
        self.contains_key(key)
    }
}

impl LoggedTree {
    /// The sled tree `tree`, named `name` in the log, writing to `wal`.
    pub fn new(tree: sled::Tree, name: &'static str, wal: Arc<Wal>) -> LoggedTree {
        LoggedTree { name, engine: Engine::Sled { tree, wal } }
    }

    /// The table of tree `name` in the PostgreSQL database `kv`.
    pub fn postgres(kv: Arc<PgKv>, name: &'static str) -> LoggedTree {
        LoggedTree { name, engine: Engine::Postgres(kv) }
    }

    /// The sled tree itself, for replay (writes through it are not logged); an error on
    /// PostgreSQL, which has no log to replay.
    pub fn raw(&self) -> sled::Result<&sled::Tree> {
        match &self.engine {
            Engine::Sled { tree, .. } => Ok(tree),
            Engine::Postgres(_) => Err(sled::Error::Unsupported(format!(
                "tree {} is a PostgreSQL table, not a sled tree",
                self.name
            ))),
        }
    }

    /// sled's `insert`, logged first.
    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) -> sled::Result<Option<IVec>> {
        let value = value.into();
        let (tree, wal) = match &self.engine {
            Engine::Sled { tree, wal } => (tree, wal),
            Engine::Postgres(kv) => return kv.write_one(self.name, key.as_ref(), Some(&value)),
        };
        let mut writer = wal.writer();
        writer.append(&self.op(key.as_ref(), Some(&value))).map_err(storage)?;
        tree.insert(key.as_ref(), value).map_err(|e| storage(writer.fail(&e.to_string())))
    }

    /// sled's `remove`, logged first.
    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let (tree, wal) = match &self.engine {
            Engine::Sled { tree, wal } => (tree, wal),
            Engine::Postgres(kv) => return kv.write_one(self.name, key.as_ref(), None),
        };
        let mut writer = wal.writer();
        writer.append(&self.op(key.as_ref(), None)).map_err(storage)?;
        tree.remove(key.as_ref()).map_err(|e| storage(writer.fail(&e.to_string())))
    }

    /// sled's `compare_and_swap`, logged first when it is going to swap: every write of the
    /// tree holds the write lock, so the value read under it is the one sled compares.
    pub fn compare_and_swap<K: AsRef<[u8]>, OV: AsRef<[u8]>, NV: Into<IVec>>(
        &self,
        key: K,
        old: Option<OV>,
        new: Option<NV>,
    ) -> sled::Result<Result<(), CompareAndSwapError>> {
        let new: Option<IVec> = new.map(Into::into);
        let (tree, wal) = match &self.engine {
            Engine::Sled { tree, wal } => (tree, wal),
            Engine::Postgres(kv) => {
                return kv.compare_and_swap(self.name, key.as_ref(), old.as_ref().map(AsRef::as_ref), new);
            }
        };
        let mut writer = wal.writer();
        let current = tree.get(key.as_ref())?;
        let swaps = current.as_deref() == old.as_ref().map(AsRef::as_ref);
        if swaps {
            writer.append(&self.op(key.as_ref(), new.as_deref())).map_err(storage)?;
        }
        match tree.compare_and_swap(key.as_ref(), old, new) {
            Ok(Err(_)) | Err(_) if swaps => {
                Err(storage(writer.fail("a logged compare-and-swap did not swap")))
            }
            result => result,
        }
    }

    /// sled's `pop_min` (removes and returns the first entry), logged first: every write of
    /// the tree holds the write lock, so the first entry read under it is the one removed.
    pub fn pop_min(&self) -> sled::Result<Option<(IVec, IVec)>> {
        let (tree, wal) = match &self.engine {
            Engine::Sled { tree, wal } => (tree, wal),
            Engine::Postgres(kv) => return kv.pop_min(self.name),
        };
        let mut writer = wal.writer();
        let Some((key, value)) = tree.first()? else { return Ok(None) };
        writer.append(&self.op(&key, None)).map_err(storage)?;
        tree.remove(&key).map_err(|e| storage(writer.fail(&e.to_string())))?;
        Ok(Some((key, value)))
    }

    fn op(&self, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut ops = Vec::with_capacity(key.len() + value.map_or(0, <[u8]>::len) + 32);
        push_op(&mut ops, self.name, key, value);
        ops
    }
}

/// Reads, straight from the engine. There is deliberately no `Deref` to `sled::Tree`: a write
/// method not defined above must not compile.
impl LoggedTree {
    /// sled's `get`.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        match &self.engine {
            Engine::Sled { tree, .. } => tree.get(key),
            Engine::Postgres(kv) => kv.get(self.name, key.as_ref()),
        }
    }

    /// Every entry, in key order (sled's `iter`).
    pub fn iter(&self) -> Iter {
        self.range::<&[u8], _>(..)
    }

    /// The entries within `range`, in key order (sled's `range`).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        match &self.engine {
            Engine::Sled { tree, .. } => Iter::Sled(tree.range(range)),
            Engine::Postgres(kv) => Iter::Postgres(PgKv::scan(
                kv,
                self.name,
                owned(range.start_bound()),
                owned(range.end_bound()),
            )),
        }
    }

    /// The entries whose key starts with `prefix`, in key order (sled's `scan_prefix`).
    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> Iter {
        match &self.engine {
            Engine::Sled { tree, .. } => Iter::Sled(tree.scan_prefix(prefix)),
            Engine::Postgres(kv) => {
                let prefix = prefix.as_ref().to_vec();
                let upper = successor(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
                Iter::Postgres(PgKv::scan(kv, self.name, Bound::Included(prefix), upper))
            }
        }
    }

    /// The number of entries (a full scan on sled, a count on PostgreSQL).
    pub fn len(&self) -> sled::Result<usize> {
        match &self.engine {
            Engine::Sled { tree, .. } => Ok(tree.len()),
            Engine::Postgres(kv) => kv.len(self.name),
        }
    }
}

/// A bound on borrowed key bytes, owned.
fn owned<K: AsRef<[u8]>>(bound: Bound<&K>) -> Bound<Vec<u8>> {
    bound.map(|key| key.as_ref().to_vec())
}

/// The smallest key above every key that starts with `prefix` (none if the prefix is all 0xff).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Entries of a tree in key order, from either end, on either engine.
pub enum Iter {
    /// A sled iterator.
    Sled(sled::Iter),
    /// A paged scan of a PostgreSQL table.
    Postgres(Scan),
}

impl Iterator for Iter {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(iter) => iter.next(),
            Iter::Postgres(scan) => scan.next(),
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Sled(iter) => iter.next_back(),
            Iter::Postgres(scan) => scan.next_back(),
        }
    }
}

impl Iter {
    /// The keys alone.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = sled::Result<IVec>> {
        self.map(|entry| entry.map(|(key, _)| key))
    }

    /// The values alone.
    pub fn values(self) -> impl DoubleEndedIterator<Item = sled::Result<IVec>> {
        self.map(|entry| entry.map(|(_, value)| value))
    }
}

/// The writes of one tree inside a transaction, not yet applied: key → new value or removal.
pub type Overlay = RefCell<BTreeMap<Vec<u8>, Option<IVec>>>;

/// A tree inside one transaction: its writes are kept in the transaction's overlay (which its
/// reads see) and gathered into the transaction's record; `Trees::transaction` applies them.
#[derive(Clone, Copy)]
pub struct LoggedTx<'a> {
    base: &'a dyn TxRead,
    name: &'static str,
    ops: &'a RefCell<Vec<u8>>,
    overlay: &'a Overlay,
}

impl<'a> LoggedTx<'a> {
    /// Tree `name`, read through `base`, gathering its writes into `ops` (the log's record)
    /// and `overlay`.
    pub fn new(
        base: &'a dyn TxRead,
        name: &'static str,
        ops: &'a RefCell<Vec<u8>>,
        overlay: &'a Overlay,
    ) -> LoggedTx<'a> {
        LoggedTx { base, name, ops, overlay }
    }

    /// The value of `key` as this transaction sees it.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> TxResult {
        if let Some(value) = self.overlay.borrow().get(key.as_ref()) {
            return Ok(value.clone());
        }
        self.base.get(self.name, key.as_ref()).map_err(UnabortableTransactionError::Storage)
    }

    /// Whether each of `keys` is there as this transaction sees it, in their order; the keys
    /// this transaction did not write are read together ([`TxRead::contains_each`]).
    pub fn contains_each(&self, keys: &[&[u8]]) -> Result<Vec<bool>, UnabortableTransactionError> {
        let overlay = self.overlay.borrow();
        let unwritten: Vec<&[u8]> = keys.iter().copied().filter(|key| !overlay.contains_key(*key)).collect();
        let mut stored = self
            .base
            .contains_each(self.name, &unwritten)
            .map_err(UnabortableTransactionError::Storage)?
            .into_iter();
        keys.iter()
            .map(|key| match overlay.get(*key) {
                Some(written) => Ok(written.is_some()),
                // One answer per key not written here, in order.
                None => stored.next().ok_or_else(|| {
                    UnabortableTransactionError::Storage(sled::Error::Unsupported(format!(
                        "tree {}: fewer answers than keys",
                        self.name
                    )))
                }),
            })
            .collect()
    }

    /// The first committed entry with `prefix` that no other transaction holds; held by this
    /// one until it ends ([`TxRead::claim_first`]): how an agent's next queued task is taken.
    /// A claim comes before the transaction writes to the tree (what it would see is then
    /// what is committed); one after is refused as a storage error.
    pub fn claim_first(&self, prefix: &[u8]) -> Result<Option<(IVec, IVec)>, UnabortableTransactionError> {
        if !self.overlay.borrow().is_empty() {
            let message =
                format!("a claim in tree {} after a write to it in the same transaction", self.name);
            return Err(UnabortableTransactionError::Storage(sled::Error::Unsupported(message)));
        }
        let end = successor(prefix);
        self.base.claim_first(self.name, prefix, end.as_deref()).map_err(UnabortableTransactionError::Storage)
    }

    /// Whether `key` is there as this transaction sees it and no other transaction holds it;
    /// if so, this one holds it until it ends ([`TxRead::claim`]): how a due deadline is
    /// taken by one sweeper.
    pub fn claim(&self, key: &[u8]) -> Result<bool, UnabortableTransactionError> {
        match self.overlay.borrow().get(key) {
            Some(value) => Ok(value.is_some()),
            None => self.base.claim(self.name, key).map_err(UnabortableTransactionError::Storage),
        }
    }

    /// `count` new ids from within the transaction, if its engine gives them there
    /// ([`TxRead::next_ids`]).
    pub fn next_ids_here(&self, count: usize) -> Option<sled::Result<Vec<u64>>> {
        self.base.next_ids(count)
    }

    /// Puts `value` at `key` in this transaction; returns the value before.
    pub fn insert<K: AsRef<[u8]> + Into<IVec>, V: Into<IVec>>(&self, key: K, value: V) -> TxResult {
        self.write(key.as_ref(), Some(value.into()))
    }

    /// Removes `key` in this transaction; returns the value before.
    pub fn remove<K: AsRef<[u8]> + Into<IVec>>(&self, key: K) -> TxResult {
        self.write(key.as_ref(), None)
    }

    /// Puts `value` at `key` in this transaction without reading the value before: a write
    /// whose caller needs no old value skips a lookup in sled (a third of a write's cost).
    pub fn put<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) {
        self.record(key.as_ref(), Some(value.into()));
    }

    /// Removes `key` in this transaction without reading the value before (see [`Self::put`]).
    pub fn delete<K: AsRef<[u8]>>(&self, key: K) {
        self.record(key.as_ref(), None);
    }

    fn write(&self, key: &[u8], value: Option<IVec>) -> TxResult {
        let old = self.get(key)?;
        self.record(key, value);
        Ok(old)
    }

    fn record(&self, key: &[u8], value: Option<IVec>) {
        push_op(&mut self.ops.borrow_mut(), self.name, key, value.as_deref());
        self.overlay.borrow_mut().insert(key.to_vec(), value);
    }
}

/// Applies a committed transaction's writes of one tree to sled.
pub fn apply_overlay(tree: &LoggedTree, overlay: Overlay) -> sled::Result<()> {
    let tree = tree.raw()?;
    for (key, value) in overlay.into_inner() {
        match value {
            Some(value) => tree.insert(key, value)?,
            None => tree.remove(key)?,
        };
    }
    Ok(())
}

/// A store error (a log failure) as a sled storage error, for callers that speak sled's.
pub fn storage(e: super::StoreError) -> sled::Error {
    sled::Error::Io(std::io::Error::other(e.to_string()))
}
