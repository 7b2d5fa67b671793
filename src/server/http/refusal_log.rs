//! Refusals written to the log without letting a flood of bad requests flood the log: the first
//! refusal per (source, reason) in an interval is logged at once; the rest are counted and
//! written as one line with the count when the interval is over (at the next refusal of any
//! source after it). The tallies are bounded; refusals past the bound are counted together.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};

use tracing::warn;

/// How long one tally runs.
const INTERVAL_SECS: i64 = 60;
/// Most (source, reason) tallies kept at once.
const MAX_TALLIES: usize = 4096;

/// Why a request was refused, as the log groups refusals.
pub type Reason = &'static str;

/// The server's refusal log.
static LOG: LazyLock<RefusalLog> = LazyLock::new(RefusalLog::default);

/// Logs a refusal of a request from `source` to `endpoint` for `reason`, saying `message`, or
/// counts it if that source was refused for that reason lately.
pub fn refused(source: IpAddr, endpoint: &str, reason: Reason, message: &str) {
    let now = chrono::Utc::now().timestamp();
    let (first, summaries) = LOG.note(source, reason, now);
    for summary in summaries {
        summary.write();
    }
    if first {
        warn!(source = %source, endpoint, reason, message, "request refused");
    }
}

/// Refusals counted but not logged, for one source and reason (or for every source whose
/// tally did not fit).
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// The source, `None` for the refusals past the bound on tallies.
    pub source: Option<IpAddr>,
    /// The reason.
    pub reason: Reason,
    /// Refusals not logged one by one.
    pub count: u64,
}

impl Summary {
    fn write(&self) {
        let (reason, count) = (self.reason, self.count);
        match self.source {
            Some(source) => {
                warn!(source = %source, reason, count, "more requests refused in the last minute")
            }
            None => {
                warn!(count, "more requests refused in the last minute, from sources not logged one by one")
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    started: i64,
    counted: u64,
}

/// Tallies of refusals per (source, reason).
#[derive(Default)]
pub struct RefusalLog {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    tallies: HashMap<(IpAddr, Reason), Tally>,
    /// Refusals whose tally did not fit, since `.started`.
    overflow: Option<Tally>,
    last_sweep: i64,
}

impl RefusalLog {
    /// Notes a refusal at `now` (Unix seconds): whether to log it at once, and the summaries of
    /// tallies whose interval is over.
    pub fn note(&self, source: IpAddr, reason: Reason, now: i64) -> (bool, Vec<Summary>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let summaries = state.sweep(now);
        let full = state.tallies.len() >= MAX_TALLIES;
        let first = match state.tallies.get_mut(&(source, reason)) {
            Some(tally) => {
                tally.counted += 1;
                false
            }
            None if full => {
                let overflow = state.overflow.get_or_insert(Tally { started: now, counted: 0 });
                overflow.counted += 1;
                false
            }
            None => {
                state.tallies.insert((source, reason), Tally { started: now, counted: 0 });
                true
            }
        };
        (first, summaries)
    }
}

impl State {
    /// Ends the tallies whose interval is over (at most once a second, since it reads them all).
    fn sweep(&mut self, now: i64) -> Vec<Summary> {
        if now == self.last_sweep {
            return Vec::new();
        }
        self.last_sweep = now;
        let over = |tally: &Tally| now - tally.started >= INTERVAL_SECS;
        let mut summaries = Vec::new();
        self.tallies.retain(|&(source, reason), tally| {
            if !over(tally) {
                return true;
            }
            if tally.counted > 0 {
                summaries.push(Summary { source: Some(source), reason, count: tally.counted });
            }
            false
        });
        if let Some(tally) = self.overflow.filter(|tally| over(tally)) {
            summaries.push(Summary { source: None, reason: "any", count: tally.counted });
            self.overflow = None;
        }
        summaries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [127, 0, 0, last].into()
    }

    #[test]
    fn the_first_refusal_is_logged_and_the_rest_summed_up_once_the_interval_is_over() {
        let log = RefusalLog::default();
        assert_eq!(log.note(ip(1), "bad signature", 100), (true, vec![]));
        for now in 101..110 {
            assert_eq!(log.note(ip(1), "bad signature", now), (false, vec![]));
        }
        assert_eq!(log.note(ip(1), "replay", 110), (true, vec![]), "another reason");
        assert_eq!(log.note(ip(2), "bad signature", 110), (true, vec![]), "another source");
        let (first, summaries) = log.note(ip(3), "bad signature", 160);
        assert!(first);
        assert_eq!(summaries, vec![Summary { source: Some(ip(1)), reason: "bad signature", count: 9 }]);
        assert_eq!(log.note(ip(1), "bad signature", 161), (true, vec![]), "a new interval");
    }

    #[test]
    fn tallies_are_bounded_and_the_rest_counted_together() {
        let log = RefusalLog::default();
        let sources = (0..=u32::MAX).map(|n| IpAddr::from(n.to_be_bytes()));
        let logged =
            sources.take(MAX_TALLIES + 100).filter(|&source| log.note(source, "flood", 100).0).count();
        assert_eq!(logged, MAX_TALLIES);
        let (_, summaries) = log.note(ip(1), "flood", 200);
        assert_eq!(summaries.last(), Some(&Summary { source: None, reason: "any", count: 100 }));
        assert_eq!(log.state.lock().unwrap().tallies.len(), 1);
    }
}
