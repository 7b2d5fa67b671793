//! Refusals counted instead of logged one by one: under a flood, each kind of refusal writes
//! at most one line per [`SUMMARY_INTERVAL`], carrying how many there were since the last line.
//! The first refusal after a quiet interval is logged at once, so a single one is never hidden.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The shortest time between two lines about the same kind of refusal.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

/// Counts of refusals per kind `K`, with the time each kind was last logged.
#[derive(Debug)]
pub struct Summary<K> {
    interval: Duration,
    kinds: Mutex<HashMap<K, Tally>>,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    logged_at: Instant,
    unlogged: u64,
}

impl<K: Eq + Hash> Summary<K> {
    /// A summary writing a line per kind at most every `interval`.
    pub fn new(interval: Duration) -> Self {
        Summary { interval, kinds: Mutex::default() }
    }

    /// Counts one refusal of `kind` at `now`; when a line is due, returns how many refusals of
    /// that kind it reports (this one included).
    pub fn note(&self, kind: K, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        match kinds.get_mut(&kind) {
            Some(tally) if now.saturating_duration_since(tally.logged_at) < self.interval => {
                tally.unlogged += 1;
                None
            }
            Some(tally) => {
                let count = tally.unlogged + 1;
                *tally = Tally { logged_at: now, unlogged: 0 };
                Some(count)
            }
            None => {
                kinds.insert(kind, Tally { logged_at: now, unlogged: 0 });
                Some(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gives_one_line_per_kind_and_interval_with_its_count() {
        let summary = Summary::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(summary.note("slow", at(0)), Some(1), "the first one is logged at once");
        let quiet: Vec<Option<u64>> = (1..=999).map(|i| summary.note("slow", at(i * 5))).collect();
        assert!(quiet.iter().all(Option::is_none), "no line within the interval");
        assert_eq!(summary.note("busy", at(5_000)), Some(1), "another kind has its own line");
        assert_eq!(summary.note("slow", at(10_000)), Some(1000), "the next line counts them all");
        assert_eq!(summary.note("slow", at(10_001)), None);
        assert_eq!(summary.note("slow", at(60_000)), Some(2));
    }
}
