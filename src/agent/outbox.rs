//! The outbox: final reports to send again from the journal, on their own thread so the poll
//! loop never waits for them. Fed at start (unreported results of an earlier life, and `lost`
//! reports of tasks it left unfinished) and whenever the server hands out or cancels a task this
//! agent already finished (the earlier acknowledgement may have been lost).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use tracing::{debug, error, info_span, warn};

use super::report::send_final;
use super::shared::{STOP_CHECK, Shared};

/// Task ids whose journaled final report is to be sent again.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<String>,
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // Nothing panics while holding the lock; the queue stays consistent anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues task `id` (once, however often it is pushed before being sent).
    pub fn push(&self, id: &str) {
        let mut state = self.lock();
        if !state.queue.iter().any(|queued| queued == id) {
            state.queue.push_back(id.to_owned());
        }
        self.changed.notify_all();
    }

    /// Lets the outbox thread end once its queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Number of ids waiting.
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// The next id, waiting for one; `None` once closed and empty.
    fn next(&self) -> Option<String> {
        let mut state = self.lock();
        loop {
            if let Some(id) = state.queue.pop_front() {
                return Some(id);
            }
            if state.closed {
                return None;
            }
            state = self.changed.wait_timeout(state, STOP_CHECK).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Sends queued reports one after the other until the outbox is closed and empty. Each is
/// retried until the server takes or refuses it; when the agent stops, retries end after the
/// stop grace and the rest stays in the journal.
pub fn outbox_loop(shared: &Shared) {
    while let Some(id) = shared.outbox.next() {
        if shared.grace_over() {
            warn!(
                left = shared.outbox.waiting() + 1,
                "agent is stopping; reports stay in the journal for the next start"
            );
            return;
        }
        let _span = info_span!("task", id = %id).entered();
        match shared.journal.get(&id) {
            Ok(Some(entry)) => match entry.report {
                Some(report) => send_final(shared, &report),
                None => warn!("journal entry has no final report; nothing to send"),
            },
            Ok(None) => warn!("journal entry vanished; nothing to send"),
            Err(e) => error!(error = %format!("{e:#}"), "cannot read the journal entry"),
        }
    }
    debug!("outbox stopped");
}
