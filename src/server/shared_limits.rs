//! Failure limits across the servers of one PostgreSQL database. Every second each server
//! writes the failed attempts it counted in the current minute under the keys that changed
//! since the last exchange, reads the sums of what the others counted, and adds them to its own
//! counts ([`AgentFailures`], [`TokenFailures`]). A source whose guesses a balancer spreads
//! over several servers is refused once the sum reaches the limit, within about a second, by
//! every server.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tracing::warn;

use super::dispatch::Dispatch;
use super::failures::{AgentFailures, TokenFailures, minute};
use super::services::Services;
use super::store::{SERVER_ID_LEN, Store, StoreError};

/// How often the counts are exchanged.
pub const EXCHANGE_INTERVAL: Duration = Duration::from_secs(1);

/// Exchanges the counts of `services` with the other servers of `store` every
/// [`EXCHANGE_INTERVAL`] until the server stops.
pub async fn run(store: Arc<Store>, services: Arc<Services>, dispatch: Arc<Dispatch>) {
    let server = server_id();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(EXCHANGE_INTERVAL) => {}
            _ = dispatch.stopped() => return,
        }
        let (store, services) = (Arc::clone(&store), Arc::clone(&services));
        let exchanged = tokio::task::spawn_blocking(move || {
            let now_secs = Utc::now().timestamp();
            exchange(&store, services.guard().failures(), services.token_failures(), &server, now_secs)
        })
        .await;
        match exchanged {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "cannot share the failure counts with the other servers"),
            Err(e) => warn!(error = %e, "the exchange of failure counts stopped"),
        }
    }
}

/// A random id naming this server's rows, new at each start.
fn server_id() -> [u8; SERVER_ID_LEN] {
    *crate::protocol::task::new_task_id().as_bytes()
}

/// One exchange at `now_secs`: this server's new counts out, the others' sums in, the rows of
/// past minutes dropped.
pub fn exchange(
    store: &Store,
    agents: &AgentFailures,
    tokens: &TokenFailures,
    server: &[u8; SERVER_ID_LEN],
    now_secs: i64,
) -> Result<(), StoreError> {
    let current = minute(now_secs);
    let mut mine = agents.take_unshared(now_secs);
    mine.extend(tokens.take_unshared(now_secs));
    if !mine.is_empty() {
        store.publish_counts(server, current, &mine)?;
    }
    let others = store.counts_of_others(server, current)?;
    agents.set_others(now_secs, &others);
    tokens.set_others(now_secs, &others);
    store.forget_counts_before(current)?;
    Ok(())
}
