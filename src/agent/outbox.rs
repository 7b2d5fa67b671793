//! The outbox thread: final reports sent again from the journal, on their own thread so the poll
//! loop never waits for them. It takes task ids from the `Outbox` queue in the shared state, fed
//! at start (unreported results of an earlier life, and `lost` reports of tasks it left
//! unfinished) and whenever the server hands out or cancels a task this agent already finished
//! (the earlier acknowledgement may have been lost).

use tracing::{debug, error, info_span, warn};

use super::report::send_final;
use super::shared::Shared;

/// Sends queued reports one after the other until the outbox is closed and empty. Each is
/// retried until the server takes or refuses it; when the agent stops, retries end after the
/// stop grace and the rest stays in the journal.
pub fn outbox_loop(shared: &Shared) {
    while let Some(id) = shared.outbox.wait_next() {
        if shared.stop.grace_over() {
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
