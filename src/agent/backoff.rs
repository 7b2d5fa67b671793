//! Capped exponential backoff with full jitter, used for every retry the agent makes (register,
//! getTask, ping, report) so that a fleet does not hammer a server that comes back; the wait
//! an overloaded server asks for (`Retry-After`), honoured with jitter on top; and the pace of
//! the long poll ([`PollPace`]), which backs off as well when the server answers "no task" at
//! once, again and again, instead of holding the poll (a source it locked out, a server without
//! a long poll).

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

/// An empty getTask answer that came back sooner than this did not wait on the server: the
/// shortest poll window a server may have is a second.
pub const QUICK_ANSWER: Duration = Duration::from_millis(500);

/// How one long poll ended, as far as the pace of the next one is concerned.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PollOutcome {
    /// It brought a task.
    Task,
    /// It brought cancels for running tasks: the server answers those at once by design.
    Cancels,
    /// It ended without a task after `lasted`.
    Empty {
        /// How long the call took.
        lasted: Duration,
    },
    /// It failed (refused, unreachable, busy); the server may have asked to wait `retry_after`.
    Failed {
        /// The server's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
}

/// When the next long poll may start. A task, or an empty poll that lasted (the server held it),
/// starts over; a failure backs off, honouring the server's `Retry-After`; an empty answer that
/// came back at once ([`QUICK_ANSWER`]) backs off too, except the first after a poll that
/// lasted: a stopping server answers its parked polls that way, and a restarted one should be
/// polled again at once. Cancels change nothing: they are the one answer meant to come at once.
#[derive(Debug, Clone, Default)]
pub struct PollPace {
    backoff: Backoff,
    /// An empty answer came back at once since the last poll that lasted.
    quick_seen: bool,
}

impl PollPace {
    /// Records how a poll ended and returns how long to wait before the next one.
    pub fn next_wait(&mut self, outcome: PollOutcome) -> Duration {
        match outcome {
            PollOutcome::Task => self.reset(),
            PollOutcome::Empty { lasted } if lasted >= QUICK_ANSWER => self.reset(),
            PollOutcome::Cancels => Duration::ZERO,
            PollOutcome::Empty { .. } if !self.quick_seen && !self.backoff.is_failing() => {
                self.quick_seen = true;
                Duration::ZERO
            }
            PollOutcome::Empty { .. } => self.backoff.next_delay(),
            PollOutcome::Failed { retry_after } => self.backoff.next_delay_after(retry_after),
        }
    }

    /// True while polls fail or come back empty at once.
    pub fn is_failing(&self) -> bool {
        self.backoff.is_failing()
    }

    /// Starts over, as after a task; returns no wait.
    pub fn reset(&mut self) -> Duration {
        self.backoff.reset();
        self.quick_seen = false;
        Duration::ZERO
    }
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

    /// The waits a pace gives for `outcomes`, in order.
    fn waits(pace: &mut PollPace, outcomes: &[PollOutcome]) -> Vec<Duration> {
        outcomes.iter().map(|outcome| pace.next_wait(*outcome)).collect()
    }

    const QUICK: PollOutcome = PollOutcome::Empty { lasted: Duration::from_millis(3) };
    const LASTED: PollOutcome = PollOutcome::Empty { lasted: Duration::from_secs(1) };
    const REFUSED: PollOutcome = PollOutcome::Failed { retry_after: None };

    #[test]
    fn quick_empty_answers_back_off_after_the_first_up_to_the_cap() {
        let mut pace = PollPace::default();
        assert_eq!(pace.next_wait(QUICK), Duration::ZERO, "the first may be a stopping server");
        let mut ceiling = BACKOFF_START;
        for _ in 0..12 {
            assert!(pace.next_wait(QUICK) <= ceiling);
            ceiling = (ceiling * 2).min(BACKOFF_CAP);
        }
        assert!(pace.is_failing());
        assert_eq!(pace.backoff.ceiling(), BACKOFF_CAP);
        // Thousands of them cost a few minutes of waiting, not thousands of requests a second.
        let total: Duration = (0..200).map(|_| pace.next_wait(QUICK)).sum();
        assert!(total > Duration::from_secs(1000), "{total:?}");
    }

    #[test]
    fn a_task_or_a_poll_that_lasted_starts_over() {
        for start_over in [PollOutcome::Task, LASTED] {
            let mut pace = PollPace::default();
            waits(&mut pace, &[QUICK, QUICK, REFUSED, QUICK]);
            assert!(pace.is_failing());
            assert_eq!(pace.next_wait(start_over), Duration::ZERO);
            assert!(!pace.is_failing());
            assert_eq!(waits(&mut pace, &[QUICK]), [Duration::ZERO], "after {start_over:?}");
            assert!(pace.next_wait(QUICK) <= BACKOFF_START);
        }
    }

    #[test]
    fn cancels_come_at_once_and_change_nothing() {
        let mut pace = PollPace::default();
        assert_eq!(waits(&mut pace, &[PollOutcome::Cancels; 5]), [Duration::ZERO; 5]);
        assert!(!pace.is_failing());
        waits(&mut pace, &[QUICK, QUICK, QUICK, QUICK]);
        let ceiling = pace.backoff.ceiling();
        assert_eq!(pace.next_wait(PollOutcome::Cancels), Duration::ZERO);
        assert_eq!(pace.backoff.ceiling(), ceiling, "cancels neither grow nor reset the backoff");
    }

    #[test]
    fn failures_back_off_from_the_first_and_honour_retry_after() {
        let mut pace = PollPace::default();
        assert!(pace.next_wait(REFUSED) <= BACKOFF_START);
        // After a failure, even the first quick empty answer waits.
        assert!(pace.is_failing());
        let asked = Duration::from_secs(7);
        let busy = pace.next_wait(PollOutcome::Failed { retry_after: Some(asked) });
        assert!(busy >= asked && busy <= asked + asked / 2, "{busy:?}");
        let mut fresh = PollPace::default();
        fresh.next_wait(REFUSED);
        let quick: Vec<Duration> = (0..50).map(|_| fresh.clone().next_wait(QUICK)).collect();
        assert!(quick.iter().any(|w| *w > Duration::ZERO), "{quick:?}");
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
