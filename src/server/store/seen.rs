//! The record of signed requests already used, for replay protection. Keyed by the request's
//! signing time (i64 BE seconds) and a digest of its identity, so a replay (same time, same
//! identity) finds its entry, and entries that left the signing window are dropped by range.
//! Kept in the database so that a restart does not forget them; sled writes them to disk within
//! its flush interval, and a graceful stop syncs them.

use super::{Store, StoreError};

fn seen_key(sent_secs: i64, digest: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&sent_secs.max(0).to_be_bytes());
    key[8..].copy_from_slice(&digest.to_be_bytes());
    key
}

impl Store {
    /// Records the use of the request `digest` signed at `sent_secs`; false when it was used
    /// before.
    pub fn first_use(&self, sent_secs: i64, digest: u64) -> Result<bool, StoreError> {
        Ok(self.trees().seen.insert(seen_key(sent_secs, digest), &[])?.is_none())
    }

    /// Forgets the uses of requests signed before `cutoff_secs` (they are outside the window);
    /// returns how many.
    pub fn forget_uses_before(&self, cutoff_secs: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.trees().seen.range(..seen_key(cutoff_secs, 0)).keys() {
            self.trees().seen.remove(key?)?;
            removed += 1;
        }
        Ok(removed)
    }
}
