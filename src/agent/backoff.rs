//! Capped exponential backoff with full jitter, used for every retry the agent makes (register,
//! getTask, ping, report) so that a fleet does not hammer a server that comes back; and the wait
//! an overloaded server asks for (`Retry-After`), honoured with jitter on top.

use std::time::Duration;

/// First retry ceiling.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// Largest retry ceiling.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Least jitter added to a server's `Retry-After`.
pub const BUSY_JITTER_MIN: Duration = Duration::from_millis(500);

/// Retry delays that double from [`BACKOFF_START`] up to [`BACKOFF_CAP`]; each delay is drawn
/// uniformly from zero to the current ceiling ("full jitter"), which spreads a fleet's retries.
#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    cap: Duration,
    failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(BACKOFF_START, BACKOFF_CAP)
    }
}

impl Backoff {
    /// A backoff whose ceiling starts at `start` and doubles up to `cap`.
    pub fn new(start: Duration, cap: Duration) -> Self {
        Backoff { start, cap, failures: 0 }
    }

    /// The ceiling the next delay is drawn below.
    pub fn ceiling(&self) -> Duration {
        // 2^20 × 0.5 s is far beyond any sane cap, so the exponent never needs to go higher.
        let factor = 1u32 << self.failures.min(20);
        self.start.saturating_mul(factor).min(self.cap)
    }

    /// Records a failure and returns how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        jitter(ceiling)
    }

    /// Records a failure and returns how long to wait: the backoff's delay, but never less than
    /// what the server asked for (`retry_after`, from HTTP 429), jittered by [`honoured`].
    pub fn next_delay_after(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.next_delay();
        retry_after.map_or(delay, |asked| delay.max(honoured(asked)))
    }

    /// True after at least one failure since the last [`Backoff::reset`].
    pub fn is_failing(&self) -> bool {
        self.failures > 0
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How long to wait when a server asked for `asked`: at least that, plus a random part of up to
/// half of it again (at least up to [`BUSY_JITTER_MIN`]), so agents turned away together do not
/// come back together.
pub fn honoured(asked: Duration) -> Duration {
    asked.saturating_add(jitter((asked / 2).max(BUSY_JITTER_MIN)))
}

/// A uniformly random duration in `[0, ceiling]`.
fn jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(random_u64() % nanos.saturating_add(1))
}

/// Randomness for jitter; if the OS source fails, the clock's nanoseconds still spread retries.
fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map(|d| u64::from(d.subsec_nanos())).unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_half_a_second_and_stops_at_the_cap() {
        let mut b = Backoff::default();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), BACKOFF_CAP);
    }

    #[test]
    fn delays_stay_below_the_ceiling_and_are_spread() {
        let mut b = Backoff::default();
        for _ in 0..8 {
            b.next_delay();
        }
        let samples: Vec<Duration> = (0..2000).map(|_| b.clone().next_delay()).collect();
        assert!(samples.iter().all(|d| *d <= BACKOFF_CAP));
        let below_a_third = samples.iter().filter(|d| **d < BACKOFF_CAP / 3).count();
        let above_two_thirds = samples.iter().filter(|d| **d > BACKOFF_CAP * 2 / 3).count();
        // Uniform on [0, 30 s]: each third holds about 667 of 2000; 400 is far outside chance.
        assert!(below_a_third > 400, "only {below_a_third} samples below 10 s");
        assert!(above_two_thirds > 400, "only {above_two_thirds} samples above 20 s");
        let mean = samples.iter().sum::<Duration>() / 2000;
        assert!(mean > Duration::from_secs(12) && mean < Duration::from_secs(18), "mean {mean:?}");
    }

    #[test]
    fn a_servers_retry_after_is_a_floor_with_jitter_on_top() {
        let asked = Duration::from_secs(4);
        let waits: Vec<Duration> =
            (0..500).map(|_| Backoff::default().next_delay_after(Some(asked))).collect();
        assert!(waits.iter().all(|w| *w >= asked && *w <= asked + asked / 2), "{waits:?}");
        assert!(waits.iter().any(|w| *w > asked + asked / 4), "no jitter above the asked wait");
        assert!(waits.iter().any(|w| *w < asked + asked / 4), "no jitter below the middle");
        let zero: Vec<Duration> = (0..100).map(|_| honoured(Duration::ZERO)).collect();
        assert!(zero.iter().all(|w| *w <= BUSY_JITTER_MIN));
        // A backoff grown past the asked wait keeps its own, longer delay ceiling.
        let mut grown = Backoff::default();
        for _ in 0..10 {
            grown.next_delay();
        }
        assert!(grown.next_delay_after(Some(Duration::from_secs(1))) >= Duration::from_secs(1));
        assert!(Backoff::default().next_delay_after(None) <= BACKOFF_START);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::default();
        assert!(!b.is_failing());
        b.next_delay();
        b.next_delay();
        assert!(b.is_failing());
        b.reset();
        assert!(!b.is_failing());
        assert_eq!(b.ceiling(), BACKOFF_START);
        assert!(b.next_delay() <= BACKOFF_START);
    }
}
