//! `TaskControl`: the flags the agent and one running task share (cancelled, acknowledged), in a
//! file of their own so the handler, the output stream and the shared state all use it without
//! importing each other.

use std::sync::atomic::{AtomicBool, Ordering};

/// What the agent and a running task share: the cancel flag and whether the server has
/// acknowledged the task's start.
#[derive(Debug, Default)]
pub(crate) struct TaskControl {
    cancelled: AtomicBool,
    acked: AtomicBool,
}

impl TaskControl {
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
