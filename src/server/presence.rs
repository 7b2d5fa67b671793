//! Which agents are there, as this server process saw them: when each last made a request (to
//! the millisecond, where the stored `last_seen` is rewritten only every few seconds), whether
//! it has a long poll parked right now, and whether it said goodbye (an orange agent stopping
//! cleanly does). Kept in memory: after a restart an agent is judged by its stored `last_seen`
//! until it is heard from, and the server's own start counts as a sighting, so agents that could
//! not reach a stopped server are not taken for silent.
//!
//! Two rules are read from here: *online* (seen within [`ONLINE_WINDOW_SECS`] and no goodbye
//! since) for `orange agents`, `task run` and a job's start, and *silent for* (no request in
//! flight and none for so long) for a job's host timeout.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::store::AgentRecord;
use crate::protocol::admin::ONLINE_WINDOW_SECS;

/// How long after a goodbye a request does not bring the agent back: a poll the agent sent
/// just before it stopped may reach the server after its goodbye. A registration always does
/// (the agent started again).
pub const GOODBYE_QUIET_MS: i64 = 5_000;

/// What this process knows of one agent.
#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Unix milliseconds of its last request (its start, or the end of a parked poll).
    last_ms: i64,
    /// Long polls parked right now.
    parked: u32,
    /// Unix milliseconds of its goodbye, until it is heard from again.
    left_ms: Option<i64>,
}

/// Where an agent stands at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Seen within the online window, and no goodbye since.
    pub online: bool,
    /// Unix milliseconds it was last seen (stored or in memory, the later).
    pub last_seen_ms: i64,
    /// It said goodbye and was not heard from since.
    pub left: bool,
}

/// The agents' presence, shared by every service (through [`super::dispatch::Dispatch`]).
pub struct Presence {
    started_ms: i64,
    agents: Mutex<HashMap<String, Seen>>,
}

/// A parked long poll: the agent counts as present until it is dropped.
pub struct Parked {
    presence: Arc<Presence>,
    app_id: String,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let now = super::clock::now_ms();
        let mut agents = self.presence.lock();
        if let Some(seen) = agents.get_mut(&self.app_id) {
            seen.parked = seen.parked.saturating_sub(1);
            seen.last_ms = seen.last_ms.max(now);
        }
    }
}

impl Presence {
    /// Presence in a server started at `started_ms`.
    pub fn new(started_ms: i64) -> Self {
        Presence { started_ms, agents: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Seen>> {
        self.agents.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A verified request of `app_id` arrived at `now_ms`; it brings back an agent that said
    /// goodbye more than [`GOODBYE_QUIET_MS`] ago.
    pub fn request(&self, app_id: &str, now_ms: i64) {
        let mut agents = self.lock();
        let seen = agents.entry(app_id.to_owned()).or_default();
        seen.last_ms = seen.last_ms.max(now_ms);
        if seen.left_ms.is_some_and(|left| now_ms - left >= GOODBYE_QUIET_MS) {
            seen.left_ms = None;
        }
    }

    /// `app_id` registered at `now_ms`: it is back, whatever it said before.
    pub fn registered(&self, app_id: &str, now_ms: i64) {
        let mut agents = self.lock();
        let seen = agents.entry(app_id.to_owned()).or_default();
        seen.last_ms = seen.last_ms.max(now_ms);
        seen.left_ms = None;
    }

    /// `app_id` said goodbye at `now_ms`: offline at once.
    pub fn goodbye(&self, app_id: &str, now_ms: i64) {
        let mut agents = self.lock();
        let seen = agents.entry(app_id.to_owned()).or_default();
        seen.last_ms = seen.last_ms.max(now_ms);
        seen.left_ms = Some(now_ms);
    }

    /// Counts a long poll of `app_id` as parked until the guard is dropped.
    pub fn park(self: &Arc<Self>, app_id: &str, now_ms: i64) -> Parked {
        let mut agents = self.lock();
        let seen = agents.entry(app_id.to_owned()).or_default();
        seen.parked += 1;
        seen.last_ms = seen.last_ms.max(now_ms);
        Parked { presence: Arc::clone(self), app_id: app_id.to_owned() }
    }

    /// Forgets what is known of `app_id` (an operator forgot it, or retention removed it).
    pub fn forget(&self, app_id: &str) {
        self.lock().remove(app_id);
    }

    /// Long polls parked right now, of every agent.
    pub fn parked_polls(&self) -> u64 {
        self.lock().values().map(|seen| u64::from(seen.parked)).sum()
    }

    /// Where `agent` stands at `now_ms`.
    pub fn liveness(&self, agent: &AgentRecord, now_ms: i64) -> Liveness {
        let seen = self.lock().get(&agent.app_id).copied().unwrap_or_default();
        let last_seen_ms = agent.last_seen_ms.max(seen.last_ms);
        let left = seen.left_ms.is_some();
        let recent = seen.parked > 0 || now_ms - last_seen_ms <= ONLINE_WINDOW_SECS * 1000;
        Liveness { online: recent && !left, last_seen_ms, left }
    }

    /// How long `agent` has been silent at `now_ms`: no request in flight and none since then
    /// (counted from this server's start at most). Zero while a poll is parked; a goodbye
    /// makes it silent since the goodbye.
    pub fn silent_ms(&self, agent: &AgentRecord, now_ms: i64) -> i64 {
        let seen = self.lock().get(&agent.app_id).copied().unwrap_or_default();
        if seen.parked > 0 && seen.left_ms.is_none() {
            return 0;
        }
        let last = agent.last_seen_ms.max(seen.last_ms).max(self.started_ms);
        (now_ms - last).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::AgentStatus;

    fn agent(last_seen_ms: i64) -> AgentRecord {
        AgentRecord {
            app_id: "web-1".into(),
            secret: "s".into(),
            labels: Default::default(),
            version: None,
            hostname: None,
            registered_at_ms: 0,
            last_seen_ms,
            processed_task_count: 0,
            status: AgentStatus::Accepted,
        }
    }

    #[test]
    fn an_agent_is_online_within_the_window_until_it_says_goodbye() {
        let presence = Presence::new(0);
        let record = agent(100_000);
        assert!(presence.liveness(&record, 150_000).online);
        assert!(!presence.liveness(&record, 100_000 + ONLINE_WINDOW_SECS * 1000 + 1).online);
        presence.goodbye("web-1", 120_000);
        let gone = presence.liveness(&record, 120_001);
        assert_eq!(gone, Liveness { online: false, last_seen_ms: 120_000, left: true });
    }

    #[test]
    fn a_late_request_right_after_goodbye_does_not_bring_the_agent_back_but_a_later_one_does() {
        let presence = Presence::new(0);
        let record = agent(100_000);
        presence.goodbye("web-1", 100_000);
        presence.request("web-1", 100_000 + GOODBYE_QUIET_MS - 1);
        assert!(!presence.liveness(&record, 104_000).online);
        presence.request("web-1", 100_000 + GOODBYE_QUIET_MS);
        assert!(presence.liveness(&record, 106_000).online);
        presence.goodbye("web-1", 200_000);
        presence.registered("web-1", 200_001);
        assert!(presence.liveness(&record, 200_002).online);
    }

    #[test]
    fn a_parked_poll_is_presence_and_its_end_is_a_sighting() {
        let presence = Arc::new(Presence::new(0));
        let record = agent(1_000);
        let parked = presence.park("web-1", 2_000);
        assert_eq!(presence.silent_ms(&record, 60_000), 0);
        assert!(presence.liveness(&record, 1_000_000).online);
        drop(parked);
        let silent = presence.silent_ms(&record, super::super::clock::now_ms() + 3_000);
        assert!((3_000..4_000).contains(&silent), "{silent}");
    }

    #[test]
    fn silence_is_counted_from_the_server_start_at_most() {
        let presence = Presence::new(50_000);
        assert_eq!(presence.silent_ms(&agent(1_000), 53_000), 3_000);
        assert_eq!(presence.silent_ms(&agent(52_000), 53_000), 1_000);
    }
}
