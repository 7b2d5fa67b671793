//! Refused connections, counted and logged in summary: at most one line per source and reason
//! per interval, and one more for the sources past [`MAX_SOURCES`], so a flood of refused
//! connections writes a bounded number of lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

/// How often the counts are logged and reset.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Most sources named one by one in an interval; the rest are summed on one line.
pub const MAX_SOURCES: usize = 64;

/// Counts of refused connections since the last summary.
#[derive(Default)]
pub struct Refusals {
    counts: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    by_source: HashMap<(IpAddr, &'static str), Tally>,
    /// Refusals of sources past [`MAX_SOURCES`].
    others: u64,
}

/// Refusals of one source for one reason.
struct Tally {
    count: u64,
    /// The last refusal's details, when the reason has some (a malformed PROXY header).
    detail: Option<String>,
}

/// One line of a summary.
#[derive(Debug, PartialEq, Eq)]
pub struct Summary {
    /// The source refused, `None` for the sources summed together.
    pub source: Option<IpAddr>,
    /// Why, `None` for the sources summed together.
    pub reason: Option<&'static str>,
    /// How many connections.
    pub count: u64,
    /// The last refusal's details.
    pub detail: Option<String>,
}

impl Refusals {
    /// Counts a connection from `source` refused for `reason`.
    pub fn note(&self, source: IpAddr, reason: &'static str, detail: Option<String>) {
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = counts.by_source.len();
        match counts.by_source.get_mut(&(source, reason)) {
            Some(tally) => {
                tally.count += 1;
                tally.detail = detail;
            }
            None if known < MAX_SOURCES => {
                counts.by_source.insert((source, reason), Tally { count: 1, detail });
            }
            None => counts.others += 1,
        }
    }

    /// Takes the counts since the last call, busiest source first.
    pub fn take(&self) -> Vec<Summary> {
        let counts =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        let mut lines: Vec<Summary> = counts
            .by_source
            .into_iter()
            .map(|((source, reason), tally)| Summary {
                source: Some(source),
                reason: Some(reason),
                count: tally.count,
                detail: tally.detail,
            })
            .collect();
        lines.sort_by_key(|line| std::cmp::Reverse(line.count));
        if counts.others > 0 {
            lines.push(Summary { source: None, reason: None, count: counts.others, detail: None });
        }
        lines
    }

    /// Logs what [`Refusals::take`] gives, one line each.
    pub fn log(&self) {
        for line in self.take() {
            match line.source {
                Some(source) => warn!(
                    %source,
                    reason = line.reason.unwrap_or_default(),
                    count = line.count,
                    detail = line.detail.as_deref().unwrap_or(""),
                    "connections refused"
                ),
                None => warn!(count = line.count, "connections refused from further sources"),
            }
        }
    }

    /// Logs the counts every [`INTERVAL`], for as long as the task runs.
    pub async fn log_every_interval(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(INTERVAL);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            self.log();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn refusals_are_summed_per_source_and_reason_and_reset_when_taken() {
        let refusals = Refusals::default();
        for _ in 0..1000 {
            refusals.note(ip(1), "source at its limit", None);
        }
        refusals.note(ip(2), "bad header", Some("first".into()));
        refusals.note(ip(2), "bad header", Some("last".into()));
        let lines = refusals.take();
        assert_eq!(lines.len(), 2);
        assert_eq!((lines[0].source, lines[0].count), (Some(ip(1)), 1000));
        assert_eq!((lines[1].count, lines[1].detail.as_deref()), (2, Some("last")));
        assert!(refusals.take().is_empty(), "taken once");
    }

    #[test]
    fn sources_past_the_bound_share_one_line() {
        let refusals = Refusals::default();
        for round in 0..3 {
            for last in 0..=255 {
                refusals.note(ip(last), "server at its limit", Some(format!("{round}")));
            }
        }
        let lines = refusals.take();
        assert_eq!(lines.len(), MAX_SOURCES + 1);
        let others = lines.last().expect("a line for the others");
        assert_eq!((others.source, others.count), (None, 3 * (256 - MAX_SOURCES as u64)));
        assert_eq!(lines.iter().map(|line| line.count).sum::<u64>(), 3 * 256);
    }
}
