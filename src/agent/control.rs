//! `TaskControl`: what the agent and one running task share (cancelled, acknowledged, the
//! delivery held), in a file of their own so the handler, the output stream and the shared
//! state all use it without importing each other.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// What the agent and a running task share: the cancel flag, whether the server has
/// acknowledged the task's start, and which delivery of the task the agent holds.
#[derive(Debug, Default)]
pub(crate) struct TaskControl {
    cancelled: AtomicBool,
    acked: AtomicBool,
    /// The delivery named in reports and chunks (0: the server numbers no deliveries).
    attempt: AtomicU32,
}

impl TaskControl {
    /// The control of a task handed out as delivery `attempt`.
    pub(crate) fn new(attempt: Option<u32>) -> Self {
        TaskControl { attempt: AtomicU32::new(attempt.unwrap_or(0)), ..TaskControl::default() }
    }

    /// The delivery the agent holds, to name in reports and chunks.
    pub(crate) fn attempt(&self) -> Option<u32> {
        Some(self.attempt.load(Ordering::SeqCst)).filter(|&attempt| attempt > 0)
    }

    /// Holds delivery `attempt` from now on if it is later than the one held: the server
    /// handed the task out again (it missed the acknowledgement), and refuses what names an
    /// earlier delivery.
    pub(crate) fn adopt(&self, attempt: Option<u32>) {
        if let Some(attempt) = attempt {
            self.attempt.fetch_max(attempt, Ordering::SeqCst);
        }
    }

    /// Asks the task to stop.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// The flag a process supervisor watches.
    pub(crate) fn cancel_flag(&self) -> &AtomicBool {
        &self.cancelled
    }

    /// True once the task was asked to stop.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Records that the server acknowledged the start (`doing`).
    pub(crate) fn set_acked(&self) {
        self.acked.store(true, Ordering::SeqCst);
    }

    /// True once the server acknowledged the start.
    pub(crate) fn is_acked(&self) -> bool {
        self.acked.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_delivery_is_held_from_then_on_an_earlier_one_never() {
        let control = TaskControl::new(Some(2));
        control.adopt(Some(1));
        control.adopt(None);
        assert_eq!(control.attempt(), Some(2));
        control.adopt(Some(3));
        assert_eq!(control.attempt(), Some(3));
        assert_eq!(TaskControl::new(None).attempt(), None, "a server that numbers no deliveries");
    }
}
