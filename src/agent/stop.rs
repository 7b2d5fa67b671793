//! Stopping: the flag a signal (or the agent itself) sets, how soon a sleeping loop notices it
//! ([`STOP_CHECK`]), and the stop grace after which retries give up. Every thread of the agent
//! reads it; it reads nothing of the agent, so any file may use it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Longest pause before a sleeping loop notices a stop. Idle, the agent's threads wake only
/// this often (plus their polls and heartbeats), so an idle agent costs no measurable CPU.
pub const STOP_CHECK: Duration = Duration::from_millis(500);

/// The agent's stop flag and its grace: once stopping, retries go on for at most the grace,
/// counted from the first retry that waits after the stop.
pub struct Stop {
    flag: Arc<AtomicBool>,
    grace: Duration,
    give_up_at: OnceLock<Instant>,
}

impl Stop {
    /// A stop that `flag` triggers, with retries given `grace` once it is set.
    pub fn new(flag: Arc<AtomicBool>, grace: Duration) -> Self {
        Stop { flag, grace, give_up_at: OnceLock::new() }
    }

    /// True once the agent was asked to stop.
    pub fn stopping(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Stops the agent, as a signal would.
    pub fn request(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Sleeps for `duration`, returning early when the agent stops.
    pub fn sleep(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(STOP_CHECK));
        }
    }

    /// Sleeps before a retry: the full `delay` even when stopping (so a stopping agent does not
    /// hammer the server), but never past the stop grace. False when the grace is over.
    pub fn retry_sleep(&self, delay: Duration) -> bool {
        if !self.stopping() {
            self.sleep(delay);
        }
        if !self.stopping() {
            return true;
        }
        let give_up_at = *self.give_up_at.get_or_init(|| Instant::now() + self.grace);
        let left = give_up_at.saturating_duration_since(Instant::now());
        thread::sleep(delay.min(left));
        !left.is_zero()
    }

    /// True once the agent is stopping and a retry already used up the stop grace.
    pub fn grace_over(&self) -> bool {
        self.stopping() && self.give_up_at.get().is_some_and(|at| Instant::now() >= *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_sleep_in_full_until_stopped_then_only_within_the_grace() {
        let stop = Stop::new(Arc::new(AtomicBool::new(false)), Duration::from_millis(100));
        assert!(stop.retry_sleep(Duration::from_millis(1)));
        assert!(!stop.grace_over());
        stop.request();
        let started = Instant::now();
        assert!(stop.retry_sleep(Duration::from_millis(60)));
        assert!(!stop.grace_over());
        // The second retry sleeps only what is left of the grace, the third not at all.
        assert!(stop.retry_sleep(Duration::from_millis(60)));
        assert!(!stop.retry_sleep(Duration::from_millis(60)));
        assert!(stop.grace_over());
        assert!(started.elapsed() < Duration::from_secs(5));
        let started = Instant::now();
        stop.sleep(Duration::from_secs(60));
        assert!(started.elapsed() < Duration::from_secs(1), "a stopped agent does not sleep");
    }
}
