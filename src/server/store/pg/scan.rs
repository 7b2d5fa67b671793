//! An ordered scan of one table between two bounds, read a page at a time from either end, so
//! that a caller who stops early (the first queued task, the newest audit entry) reads one page.

use std::collections::VecDeque;
use std::ops::Bound;

use postgres::types::{ToSql, Type};
use sled::IVec;

use std::sync::Arc;

use super::{PgKv, blocking, entry, pg_error};

/// Entries read per round trip.
const PAGE: i64 = 256;

/// The entries of one table between two bounds, oldest key first; double-ended.
pub struct Scan {
    kv: Arc<PgKv>,
    tree: &'static str,
    /// What is left unread: every read entry is outside these bounds.
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    /// Read from the low end, ascending.
    front: VecDeque<(IVec, IVec)>,
    /// Read from the high end, descending.
    back: VecDeque<(IVec, IVec)>,
    /// Nothing is left between the bounds (or a read failed).
    drained: bool,
}

impl Scan {
    /// A scan of `tree` between `lower` and `upper`; nothing is read until the first item.
    pub fn new(kv: Arc<PgKv>, tree: &'static str, lower: Bound<Vec<u8>>, upper: Bound<Vec<u8>>) -> Scan {
        Scan { kv, tree, lower, upper, front: VecDeque::new(), back: VecDeque::new(), drained: false }
    }

    /// Reads the next page from the low end (`ascending`) or the high end, and narrows the
    /// bounds past it.
    fn fill(&mut self, ascending: bool) -> sled::Result<()> {
        let mut sql = format!("SELECT key, value FROM orange_{} WHERE true", self.tree);
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::new();
        for (bound, inclusive, exclusive) in [(&self.lower, ">=", ">"), (&self.upper, "<=", "<")] {
            let (key, operator) = match bound {
                Bound::Included(key) => (key, inclusive),
                Bound::Excluded(key) => (key, exclusive),
                Bound::Unbounded => continue,
            };
            params.push((key, Type::BYTEA));
            sql.push_str(&format!(" AND key {operator} ${}", params.len()));
        }
        sql.push_str(if ascending { " ORDER BY key LIMIT " } else { " ORDER BY key DESC LIMIT " });
        sql.push_str(&PAGE.to_string());
        let rows = blocking(|| self.kv.client()?.query_typed(&sql, &params).map_err(pg_error))?;
        if (rows.len() as i64) < PAGE {
            self.drained = true;
        }
        let entries = rows.iter().map(entry);
        let (buffer, bound) =
            if ascending { (&mut self.front, &mut self.lower) } else { (&mut self.back, &mut self.upper) };
        buffer.extend(entries);
        if let Some((key, _)) = buffer.back() {
            *bound = Bound::Excluded(key.to_vec());
        }
        Ok(())
    }

    fn step(&mut self, ascending: bool) -> Option<sled::Result<(IVec, IVec)>> {
        let near_empty = if ascending { self.front.is_empty() } else { self.back.is_empty() };
        if near_empty && !self.drained {
            if let Err(e) = self.fill(ascending) {
                self.drained = true;
                self.front.clear();
                self.back.clear();
                return Some(Err(e));
            }
        }
        let next = if ascending {
            self.front.pop_front().or_else(|| self.back.pop_back())
        } else {
            self.back.pop_front().or_else(|| self.front.pop_back())
        };
        next.map(Ok)
    }
}

impl Iterator for Scan {
    type Item = sled::Result<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl DoubleEndedIterator for Scan {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}
