//! Refusals written to the log without letting a flood of bad input flood the log. Each kind
//! of refusal (for example a source and a reason) is logged at once the first time in an
//! interval; the ones after it in that interval are only counted, and the count is written as
//! one line when the interval is over. The kinds tallied at once are bounded; refusals past the
//! bound are counted together. Connections refused by the acceptor, requests refused by the
//! agent and admin endpoints, and requests refused by the overload guard all go through here.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

/// How long a tally runs: the shortest time between two lines about one kind of refusal.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Most kinds tallied at once by the logs of this module.
pub const MAX_KINDS: usize = 4096;

/// Why a request was refused, as the log groups refusals.
pub type Reason = &'static str;

/// The log of refused requests, by source and reason.
static REQUESTS: LazyLock<RefusalLog<(IpAddr, Reason)>> =
    LazyLock::new(|| RefusalLog::new(INTERVAL, MAX_KINDS));
/// The log of connections refused before HTTP, by source and reason.
static CONNECTIONS: LazyLock<RefusalLog<(IpAddr, Reason)>> =
    LazyLock::new(|| RefusalLog::new(INTERVAL, MAX_KINDS));

/// Logs a refusal of a request from `source` to `endpoint` for `reason`, saying `message`, or
/// counts it if that source was refused for that reason lately.
pub fn refused(source: IpAddr, endpoint: &str, reason: Reason, message: &str) {
    let noted = REQUESTS.note((source, reason), Instant::now());
    if noted.first {
        warn!(source = %source, endpoint, reason, message, "request refused");
    }
    write_summaries("requests", noted.ended);
}

/// Logs a connection from `source` refused for `reason` (with `detail`, when there is some),
/// or counts it if that source's connections were refused for that reason lately.
pub fn connection_refused(source: IpAddr, reason: Reason, detail: Option<&str>) {
    let noted = CONNECTIONS.note((source, reason), Instant::now());
    if noted.first {
        warn!(source = %source, reason, detail = detail.unwrap_or(""), "connection refused");
    }
    write_summaries("connections", noted.ended);
}

/// Writes the counts of the tallies whose interval is over (of all of them, with
/// `everything`, as when the server stops), so the tail of a flood is logged even when no
/// refusal follows it.
pub fn flush(everything: bool) {
    for (what, log) in [("requests", &REQUESTS), ("connections", &CONNECTIONS)] {
        let ended = match everything {
            true => log.take_all(),
            false => log.sweep(Instant::now()),
        };
        write_summaries(what, ended);
    }
}

/// Flushes the logs every [`INTERVAL`], for as long as the task runs.
pub async fn flush_every_interval() {
    let mut ticks = tokio::time::interval(INTERVAL);
    loop {
        ticks.tick().await;
        flush(false);
    }
}

fn write_summaries(what: &str, ended: Vec<Ended<(IpAddr, Reason)>>) {
    for Ended { kind, count } in ended {
        match kind {
            Some((source, reason)) => warn!(source = %source, reason, count, "more {what} refused lately"),
            None => warn!(count, "more {what} refused lately, from sources not tallied one by one"),
        }
    }
}

/// What noting one refusal gives: whether to log it at once, and the tallies that ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Noted<K> {
    /// The first refusal of its kind in the interval: log it in full.
    pub first: bool,
    /// Tallies whose interval is over, with refusals counted but not logged.
    pub ended: Vec<Ended<K>>,
}

/// Refusals counted but not logged one by one.
#[derive(Debug, PartialEq, Eq)]
pub struct Ended<K> {
    /// Their kind, `None` for the refusals past the bound on kinds.
    pub kind: Option<K>,
    /// How many.
    pub count: u64,
}

#[derive(Debug, Clone, Copy)]
struct Tally {
    started: Instant,
    counted: u64,
}

/// Tallies of refusals per kind `K`.
#[derive(Debug)]
pub struct RefusalLog<K> {
    interval: Duration,
    max_kinds: usize,
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    tallies: HashMap<K, Tally>,
    /// Refusals whose kind did not fit.
    overflow: Option<Tally>,
    last_sweep: Option<Instant>,
}

impl<K: Eq + Hash + Copy> RefusalLog<K> {
    /// A log whose tallies run `interval`, tallying at most `max_kinds` kinds at once.
    pub fn new(interval: Duration, max_kinds: usize) -> Self {
        let state = State { tallies: HashMap::new(), overflow: None, last_sweep: None };
        RefusalLog { interval, max_kinds, state: Mutex::new(state) }
    }

    /// Notes a refusal of `kind` at `now`; ends, on the way, the tallies whose interval is
    /// over (looking at most once a second, since that reads them all).
    pub fn note(&self, kind: K, now: Instant) -> Noted<K> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let due = state.last_sweep.is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_EVERY);
        let ended = if due { state.sweep(now, self.interval) } else { Vec::new() };
        let full = state.tallies.len() >= self.max_kinds;
        let first = match state.tallies.get_mut(&kind) {
            Some(tally) => {
                tally.counted += 1;
                false
            }
            None if full => {
                state.overflow.get_or_insert(Tally { started: now, counted: 0 }).counted += 1;
                false
            }
            None => {
                state.tallies.insert(kind, Tally { started: now, counted: 0 });
                true
            }
        };
        Noted { first, ended }
    }

    /// Ends the tallies whose interval is over at `now`.
    pub fn sweep(&self, now: Instant) -> Vec<Ended<K>> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.sweep(now, self.interval)
    }

    /// Ends every tally, as when the server stops.
    pub fn take_all(&self) -> Vec<Ended<K>> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.sweep_where(|_| true)
    }
}

/// How often noting a refusal looks for tallies that ended.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<K: Eq + Hash + Copy> State<K> {
    fn sweep(&mut self, now: Instant, interval: Duration) -> Vec<Ended<K>> {
        self.last_sweep = Some(now);
        self.sweep_where(|tally| now.saturating_duration_since(tally.started) >= interval)
    }

    /// Ends the tallies for which `over` holds, returning those that counted refusals.
    fn sweep_where(&mut self, over: impl Fn(&Tally) -> bool) -> Vec<Ended<K>> {
        let mut ended = Vec::new();
        self.tallies.retain(|&kind, tally| {
            if !over(tally) {
                return true;
            }
            if tally.counted > 0 {
                ended.push(Ended { kind: Some(kind), count: tally.counted });
            }
            false
        });
        if let Some(tally) = self.overflow.filter(|tally| over(tally)) {
            ended.push(Ended { kind: None, count: tally.counted });
            self.overflow = None;
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        [127, 0, 0, last].into()
    }

    fn log() -> (RefusalLog<(IpAddr, Reason)>, impl Fn(u64) -> Instant) {
        let start = Instant::now();
        (RefusalLog::new(Duration::from_secs(60), MAX_KINDS), move |secs| start + Duration::from_secs(secs))
    }

    fn nothing_ended(first: bool) -> Noted<(IpAddr, Reason)> {
        Noted { first, ended: vec![] }
    }

    #[test]
    fn the_first_refusal_is_logged_and_the_rest_summed_up_once_the_interval_is_over() {
        let (log, at) = log();
        assert_eq!(log.note((ip(1), "bad signature"), at(100)), nothing_ended(true));
        for secs in 101..110 {
            assert_eq!(log.note((ip(1), "bad signature"), at(secs)), nothing_ended(false));
        }
        assert_eq!(log.note((ip(1), "replay"), at(110)), nothing_ended(true), "another reason");
        assert_eq!(log.note((ip(2), "bad signature"), at(110)), nothing_ended(true), "another source");
        let noted = log.note((ip(3), "bad signature"), at(160));
        assert!(noted.first);
        assert_eq!(noted.ended, vec![Ended { kind: Some((ip(1), "bad signature")), count: 9 }]);
        assert_eq!(log.note((ip(1), "bad signature"), at(161)), nothing_ended(true), "a new interval");
    }

    #[test]
    fn tallies_are_bounded_and_the_rest_counted_together() {
        let (log, at) = log();
        let sources = (0..=u32::MAX).map(|n| IpAddr::from(n.to_be_bytes()));
        let logged =
            sources.take(MAX_KINDS + 100).filter(|&source| log.note((source, "flood"), at(100)).first);
        assert_eq!(logged.count(), MAX_KINDS);
        let noted = log.note((ip(1), "flood"), at(200));
        assert_eq!(noted.ended.last(), Some(&Ended { kind: None, count: 100 }));
        assert_eq!(log.state.lock().unwrap().tallies.len(), 1);
    }

    #[test]
    fn the_tail_of_a_flood_is_written_by_a_sweep_or_at_the_end() {
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let log = RefusalLog::new(Duration::from_secs(60), 8);
        for secs in 0..5 {
            log.note(("pool", 1), at(secs));
        }
        assert_eq!(log.sweep(at(30)), vec![], "the interval is not over");
        assert_eq!(log.sweep(at(60)), vec![Ended { kind: Some(("pool", 1)), count: 4 }]);
        log.note(("pool", 1), at(61));
        log.note(("pool", 1), at(62));
        assert_eq!(log.take_all(), vec![Ended { kind: Some(("pool", 1)), count: 1 }]);
    }
}
