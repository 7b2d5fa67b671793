//! The pool of queue sequence numbers reserved outside transactions, taken inside them by
//! every enqueue and by every task a job starts. On PostgreSQL there is no pool: the numbers
//! come from the database's sequence inside the transaction, on its own connection, all those
//! of one enqueue with one statement (`Tx::take_seqs`), shared by every server.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::StoreError;
use super::trees::Trees;

/// Queue sequence numbers reserved outside transactions. sled 0.34 runs a transaction under
/// its global write lock, so `generate_id` (which takes the read lock) must not be called inside
/// one: a job that starts a target inside another move's transaction takes its number from here.
/// Every enqueue takes its numbers from here too, and the pool hands them out in increasing
/// order, so an agent's queue stays in the order tasks were queued.
#[derive(Default)]
pub struct SeqPool {
    ids: Mutex<VecDeque<u64>>,
    /// Held while numbers are made and added, so that refills add them in increasing order.
    refill: Mutex<()>,
    /// Numbers are taken inside transactions (PostgreSQL): nothing to reserve.
    in_transactions: bool,
}

/// Numbers the pool refills to when it runs low.
const SEQ_POOL_LOW: usize = 32;

impl SeqPool {
    /// Makes sure at least `needed` (plus a margin) numbers are reserved; call outside any
    /// transaction.
    pub fn reserve(&self, trees: &Trees, needed: usize) -> Result<(), StoreError> {
        if self.in_transactions {
            return Ok(());
        }
        let _refilling = self.refill.lock().unwrap_or_else(|p| p.into_inner());
        let have = self.ids.lock().unwrap_or_else(|p| p.into_inner()).len();
        if have > needed {
            return Ok(());
        }
        // Not under the pool's lock: a transaction (holding the store's write lock) may be waiting
        // for it, and generate_id waits for sled's read lock. Transactions never take the
        // refill lock, so holding it here blocks nobody who holds sled's lock.
        let fresh: Vec<u64> =
            (0..needed + SEQ_POOL_LOW - have).map(|_| trees.next_id()).collect::<Result<_, _>>()?;
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).extend(fresh);
        Ok(())
    }

    /// A pool that reserves nothing: the engine gives numbers inside transactions.
    pub fn in_transactions() -> SeqPool {
        SeqPool { in_transactions: true, ..SeqPool::default() }
    }

    /// Takes the oldest reserved number.
    pub fn take(&self) -> Option<u64> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }
}
