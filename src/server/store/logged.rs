//! sled trees whose writes go to the write-ahead log (`wal.rs`) as well: [`LoggedTree`] for
//! writes outside transactions (each one record, appended under the store's write lock just
//! before sled applies it) and [`LoggedTx`] for writes inside one (gathered, then appended as
//! one record by `Trees::transaction` when the transaction's closure succeeded, before sled
//! commits it, still under the lock). A write logged that sled then fails to apply marks the
//! log failed (`Writer::fail`).
//! The wrappers offer the reads the store uses, straight from sled, and the writes it uses
//! (`insert`, `remove`, `compare_and_swap`, `pop_min`; in a transaction also `put` and `delete`,
//! which do not read the value they replace), logged; nothing else, so a write that would bypass
//! the log does not compile.

use std::cell::RefCell;
use std::sync::Arc;

use std::collections::BTreeMap;

use sled::transaction::UnabortableTransactionError;
use sled::{CompareAndSwapError, IVec};

/// What a transactional write returns.
type TxResult = Result<Option<IVec>, UnabortableTransactionError>;

use super::wal::Wal;
use super::wal_record::push_op;

/// A tree written outside transactions.
pub struct LoggedTree {
    tree: sled::Tree,
    name: &'static str,
    wal: Arc<Wal>,
}

impl LoggedTree {
    /// `tree`, named `name` in the log, writing to `wal`.
    pub fn new(tree: sled::Tree, name: &'static str, wal: Arc<Wal>) -> LoggedTree {
        LoggedTree { tree, name, wal }
    }

    /// The tree itself, for replay (writes through it are not logged).
    pub fn raw(&self) -> &sled::Tree {
        &self.tree
    }

    /// sled's `insert`, logged first.
    pub fn insert<K: AsRef<[u8]>, V: Into<IVec>>(&self, key: K, value: V) -> sled::Result<Option<IVec>> {
        let value = value.into();
        let mut writer = self.wal.writer();
        writer.append(&self.op(key.as_ref(), Some(&value))).map_err(to_sled)?;
        self.tree.insert(key.as_ref(), value).map_err(|e| to_sled(writer.fail(&e.to_string())))
    }

    /// sled's `remove`, logged first.
    pub fn remove<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        let mut writer = self.wal.writer();
        writer.append(&self.op(key.as_ref(), None)).map_err(to_sled)?;
        self.tree.remove(key.as_ref()).map_err(|e| to_sled(writer.fail(&e.to_string())))
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
        let mut writer = self.wal.writer();
        let current = self.tree.get(key.as_ref())?;
        let swaps = current.as_deref() == old.as_ref().map(AsRef::as_ref);
        if swaps {
            writer.append(&self.op(key.as_ref(), new.as_deref())).map_err(to_sled)?;
        }
        match self.tree.compare_and_swap(key.as_ref(), old, new) {
            Ok(Err(_)) | Err(_) if swaps => {
                Err(to_sled(writer.fail("a logged compare-and-swap did not swap")))
            }
            result => result,
        }
    }

    /// sled's `pop_min` (removes and returns the first entry), logged first: every write of
    /// the tree holds the write lock, so the first entry read under it is the one removed.
    pub fn pop_min(&self) -> sled::Result<Option<(IVec, IVec)>> {
        let mut writer = self.wal.writer();
        let Some((key, value)) = self.tree.first()? else { return Ok(None) };
        writer.append(&self.op(&key, None)).map_err(to_sled)?;
        self.tree.remove(&key).map_err(|e| to_sled(writer.fail(&e.to_string())))?;
        Ok(Some((key, value)))
    }

    fn op(&self, key: &[u8], value: Option<&[u8]>) -> Vec<u8> {
        let mut ops = Vec::with_capacity(key.len() + value.map_or(0, <[u8]>::len) + 32);
        push_op(&mut ops, self.name, key, value);
        ops
    }
}

/// Reads, straight from sled. There is deliberately no `Deref` to `sled::Tree`: a write method
/// not defined above must not compile.
impl LoggedTree {
    /// sled's `get`.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> sled::Result<Option<IVec>> {
        self.tree.get(key)
    }

    /// sled's `iter`.
    pub fn iter(&self) -> sled::Iter {
        self.tree.iter()
    }

    /// sled's `range`.
    pub fn range<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(&self, range: R) -> sled::Iter {
        self.tree.range(range)
    }

    /// sled's `scan_prefix`.
    pub fn scan_prefix<P: AsRef<[u8]>>(&self, prefix: P) -> sled::Iter {
        self.tree.scan_prefix(prefix)
    }

    /// sled's `len` (a full scan).
    pub fn len(&self) -> usize {
        self.tree.len()
    }
}

/// The writes of one tree inside a transaction, not yet applied: key → new value or removal.
pub type Overlay = RefCell<BTreeMap<Vec<u8>, Option<IVec>>>;

/// A tree inside one transaction: its writes are kept in the transaction's overlay (which its
/// reads see) and gathered into the transaction's record; `Trees::transaction` applies them.
#[derive(Clone, Copy)]
pub struct LoggedTx<'a> {
    tree: &'a sled::Tree,
    name: &'static str,
    ops: &'a RefCell<Vec<u8>>,
    overlay: &'a Overlay,
}

impl<'a> LoggedTx<'a> {
    /// `tree`, named `name` in the log, gathering its writes into `ops` and `overlay`.
    pub fn new(
        tree: &'a sled::Tree,
        name: &'static str,
        ops: &'a RefCell<Vec<u8>>,
        overlay: &'a Overlay,
    ) -> LoggedTx<'a> {
        LoggedTx { tree, name, ops, overlay }
    }

    /// The value of `key` as this transaction sees it.
    pub fn get<K: AsRef<[u8]>>(&self, key: K) -> TxResult {
        if let Some(value) = self.overlay.borrow().get(key.as_ref()) {
            return Ok(value.clone());
        }
        self.tree.get(key).map_err(UnabortableTransactionError::Storage)
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
    for (key, value) in overlay.into_inner() {
        match value {
            Some(value) => tree.tree.insert(key, value)?,
            None => tree.tree.remove(key)?,
        };
    }
    Ok(())
}

/// A log failure as a sled error, for callers that speak sled's.
fn to_sled(e: super::StoreError) -> sled::Error {
    sled::Error::Io(std::io::Error::other(e.to_string()))
}
