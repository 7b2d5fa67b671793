//! The failure counts several servers on one PostgreSQL database share: each server writes what
//! it counted in the current minute under its own keys (so no two servers write one row), and
//! reads the sums of the others'. Keyed by the minute first, so the rows of a minute are read
//! with one prefix and those of past minutes dropped by range.
//!
//! Key: minute (i64 BE) · kind (1 byte) · the counted key · server id (16 bytes); value: the
//! count (u32 BE).

use std::collections::HashMap;

use super::{Store, StoreError};

/// Length of a server id.
pub const SERVER_ID_LEN: usize = 16;
/// Most rows of other servers read per exchange: past it the rest count from the next one.
const MAX_READ: usize = 65_536;

/// Failures one server counted under one key in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedCount {
    /// What is counted (the failure limits number their counts).
    pub kind: u8,
    /// Under which key (an address, an app id, both, or nothing), as bytes.
    pub key: Vec<u8>,
    /// How many.
    pub count: u32,
}

fn minute_prefix(minute: i64) -> [u8; 8] {
    minute.max(0).to_be_bytes()
}

fn row_key(minute: i64, server: &[u8; SERVER_ID_LEN], count: &SharedCount) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + 1 + count.key.len() + SERVER_ID_LEN);
    key.extend_from_slice(&minute_prefix(minute));
    key.push(count.kind);
    key.extend_from_slice(&count.key);
    key.extend_from_slice(server);
    key
}

impl Store {
    /// Writes `counts`, what server `server` counted in `minute` (each replaces that server's
    /// earlier count under the same key).
    pub fn publish_counts(
        &self,
        server: &[u8; SERVER_ID_LEN],
        minute: i64,
        counts: &[SharedCount],
    ) -> Result<(), StoreError> {
        for count in counts {
            self.trees().failure_counts.insert(row_key(minute, server, count), &count.count.to_be_bytes())?;
        }
        Ok(())
    }

    /// What the servers other than `server` counted in `minute`, summed per kind and key.
    pub fn counts_of_others(
        &self,
        server: &[u8; SERVER_ID_LEN],
        minute: i64,
    ) -> Result<Vec<SharedCount>, StoreError> {
        let mut sums: HashMap<(u8, Vec<u8>), u32> = HashMap::new();
        for row in self.trees().failure_counts.scan_prefix(minute_prefix(minute)).take(MAX_READ) {
            let (key, value) = row?;
            let Some(rest) = key.get(8..) else { continue };
            let Some((&kind, rest)) = rest.split_first() else { continue };
            let Some(split) = rest.len().checked_sub(SERVER_ID_LEN) else { continue };
            let (counted, writer) = rest.split_at(split);
            let Ok(count) = <[u8; 4]>::try_from(value.as_ref()) else { continue };
            if writer != server {
                let sum = sums.entry((kind, counted.to_vec())).or_default();
                *sum = sum.saturating_add(u32::from_be_bytes(count));
            }
        }
        Ok(sums.into_iter().map(|((kind, key), count)| SharedCount { kind, key, count }).collect())
    }

    /// Drops the counts of minutes before `minute`; returns how many rows went.
    pub fn forget_counts_before(&self, minute: i64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for key in self.trees().failure_counts.range(..minute_prefix(minute)).keys() {
            self.trees().failure_counts.remove(key?)?;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use test_case::test_case;

    use super::*;
    use crate::server::store::test_engines::{Engine, Place};
    use crate::server::store::tests::open_on;

    fn count(kind: u8, key: &[u8], count: u32) -> SharedCount {
        SharedCount { kind, key: key.to_vec(), count }
    }

    fn sorted(mut counts: Vec<SharedCount>) -> Vec<SharedCount> {
        counts.sort_by(|a, b| (a.kind, &a.key).cmp(&(b.kind, &b.key)));
        counts
    }

    #[test_case(Engine::Sled; "sled")]
    #[test_case(Engine::Postgres; "postgres")]
    fn a_server_reads_the_sums_of_the_others_counts_of_the_minute(engine: Engine) {
        let (_place, store): (Place, Store) = open_on(engine);
        let (a, b, c) = ([1; SERVER_ID_LEN], [2; SERVER_ID_LEN], [3; SERVER_ID_LEN]);
        store.publish_counts(&a, 7, &[count(1, b"web-1", 4), count(3, b"", 9)]).unwrap();
        store.publish_counts(&b, 7, &[count(1, b"web-1", 2)]).unwrap();
        store.publish_counts(&b, 7, &[count(1, b"web-1", 5)]).unwrap(); // replaces its own
        store.publish_counts(&c, 6, &[count(1, b"web-1", 100)]).unwrap(); // the minute before
        assert_eq!(sorted(store.counts_of_others(&c, 7).unwrap()), [count(1, b"web-1", 9), count(3, b"", 9)]);
        assert_eq!(store.counts_of_others(&a, 7).unwrap(), [count(1, b"web-1", 5)], "not its own");
        assert_eq!(store.forget_counts_before(7).unwrap(), 1);
        assert!(store.counts_of_others(&a, 6).unwrap().is_empty());
        assert_eq!(store.counts_of_others(&a, 7).unwrap(), [count(1, b"web-1", 5)]);
    }
}
