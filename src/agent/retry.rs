//! Sending one thing until the server takes it: retries with backoff while the server is down
//! or has forgotten the agent, stops at a refusal, and gives up only once the agent is stopping
//! and its grace is over. Used for `doing` acks, final reports and output chunks.

use tracing::{error, warn};

use super::backoff::Backoff;
use super::shared::Shared;
use crate::client::ClientError;

/// How sending ended.
#[derive(Debug, PartialEq)]
pub enum Sent<T> {
    /// The server acknowledged it.
    Done(T),
    /// The server refused it for good (code 1), with its reason.
    Refused(String),
    /// The agent is stopping and its grace ran out first.
    GaveUp,
}

/// True when the server refused a call because it does not know this app id (it lost the
/// registration), which registering again fixes.
pub fn is_unknown_agent(e: &ClientError) -> bool {
    let ClientError::Refused(message) = e else {
        return false;
    };
    let m = message.to_ascii_lowercase();
    [crate::protocol::wire::UNKNOWN_APP_ID, "unknown agent", "not registered", "register first"]
        .iter()
        .any(|needle| m.contains(needle))
}

/// True when a refusal says the task is over for this agent, so the task should stop: it is
/// already final on the server, or the server handed it out again since this agent's delivery
/// (the delivery was superseded).
pub fn stops_the_task(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("already finished") || is_superseded(reason)
}

/// True when a refusal says the task was handed out again since the delivery the agent named.
pub fn is_superseded(reason: &str) -> bool {
    reason.to_ascii_lowercase().contains("was superseded")
}

/// Calls `call` until it succeeds, is refused, or the agent's stop grace is over. An unknown
/// agent asks the poll loop to register again and is retried. `what` names the call in logs.
pub fn until_done<T>(
    shared: &Shared,
    what: &str,
    mut call: impl FnMut() -> Result<T, ClientError>,
) -> Sent<T> {
    let mut backoff = Backoff::default();
    loop {
        let e = match call() {
            Ok(value) => return Sent::Done(value),
            Err(e) => e,
        };
        if is_unknown_agent(&e) {
            shared.request_register();
        } else if let ClientError::Refused(reason) = e {
            return Sent::Refused(reason);
        }
        let delay = backoff.next_delay_after(e.retry_after());
        warn!(error = %e, what, retry_in_ms = delay.as_millis() as u64, "call failed, retrying");
        if !shared.stop.retry_sleep(delay) {
            error!(error = %e, what, "agent is stopping; giving up");
            return Sent::GaveUp;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_agent_is_told_apart_from_other_refusals() {
        let refused = |m: &str| ClientError::Refused(m.into());
        assert!(is_unknown_agent(&refused("unknown app id \"w1\"")));
        assert!(is_unknown_agent(&refused("Agent w1 is not registered")));
        assert!(!is_unknown_agent(&refused("unknown task t1")));
        assert!(!is_unknown_agent(&refused("signature does not match")));
        let transport = ClientError::Transport { url: "u".into(), reason: "unknown app".into() };
        assert!(!is_unknown_agent(&transport));
        assert!(stops_the_task("task t1 already finished as cancelled"));
        assert!(stops_the_task("task t1: delivery 1 was superseded by delivery 2; stop running it"));
        assert!(!stops_the_task("chunk skips ahead"));
    }
}
