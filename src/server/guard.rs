//! Guards of the agent endpoints: the keys a call may be signed with (an agent's own secret,
//! the enrollment key, an enrollment token's secret) and protection against abuse. Replay
//! protection: every signed request is accepted once; the store remembers a digest of each
//! accepted request's identity (the app id and nonce for version-2 signatures, the signature
//! itself for legacy ones) until its time leaves the signing window, across restarts. And the
//! failure limits of [`super::failures`], so that nobody can try secrets at line rate.

use std::net::IpAddr;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::clock::now_ms;
use super::error::ServiceError;
use super::failures::{AgentFailures, Standing, TooManyFailures};
use super::presence::Presence;
use super::store::{AgentRecord, AgentStatus, Store, StoreError, TokenError};
use crate::protocol::Signer;
use crate::protocol::sign::TIME_WINDOW_SECS;
use crate::protocol::wire;

/// How stale `last_seen` may get before a request rewrites it.
const TOUCH_GAP_MS: i64 = 5_000;

/// SHA-256 of a secret: what the server keeps of the admin token.
pub type SecretHash = [u8; 32];

/// The SHA-256 of `secret`.
pub fn secret_hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// What the agent endpoints check a signed call against.
pub struct Guard {
    store: Arc<Store>,
    failures: AgentFailures,
    enroll_key: Signer,
    presence: Arc<Presence>,
}

impl Guard {
    /// Guards over `store`; registrations may be signed with `enroll_key`; verified calls are
    /// noted in `presence`.
    pub fn new(store: Arc<Store>, enroll_key: &str, presence: Arc<Presence>) -> Self {
        Guard { store, failures: AgentFailures::default(), enroll_key: Signer::new(enroll_key), presence }
    }

    /// The failed attempts counted against agents' calls (shared with the other servers of a
    /// PostgreSQL database by `shared_limits.rs`).
    pub fn failures(&self) -> &AgentFailures {
        &self.failures
    }

    /// How a request from `source` signed for `app_id` is handled; an error if it must be
    /// refused before its signature is checked.
    pub fn standing(&self, source: IpAddr, app_id: &str, now_secs: i64) -> Result<Standing, TooManyFailures> {
        self.failures.standing(source, app_id, now_secs)
    }

    /// Counts one failed attempt (a bad signature, a wrong secret) from `source` for `app_id`.
    pub fn record_failure(&self, source: IpAddr, app_id: &str, now_secs: i64) {
        self.failures.record_failure(source, app_id, now_secs);
    }

    /// Notes that a request from `source` proved the right to `app_id`: its last good source.
    pub fn record_success(&self, source: IpAddr, app_id: &str, now_secs: i64) {
        self.failures.record_success(source, app_id, now_secs);
    }

    /// Admits a request identified by `parts`, signed at `sent_secs`, once. The record of the
    /// use is written but not synced.
    pub fn admit_once(&self, parts: &[&[u8]], sent_secs: i64) -> Result<(), ReplayError> {
        admit_once(&self.store, parts, sent_secs)
    }

    /// The key registrations are signed with by default.
    pub fn enroll_key(&self) -> &Signer {
        &self.enroll_key
    }

    /// The key of enrollment token `id`, if the token may still be used.
    pub fn token_key(&self, id: &str) -> Result<Result<Signer, TokenError>, StoreError> {
        Ok(self.store.usable_token(id, now_ms())?.map(|token| Signer::new(&token.secret)))
    }

    /// The agent `app_id`, or an error saying it must register (also when an operator forgot it).
    pub fn known_agent(&self, app_id: &str) -> Result<AgentRecord, ServiceError> {
        self.store.agent(app_id)?.filter(|a| a.status != AgentStatus::Forgotten).ok_or_else(|| {
            ServiceError::NotFound(format!("{} {app_id:?}; register first", wire::UNKNOWN_APP_ID))
        })
    }

    /// Notes that `agent` is alive: in memory at once, in the store at most every few seconds
    /// (to spare writes).
    pub fn touch(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        let now = now_ms();
        self.presence.request(&agent.app_id, now);
        self.store.touch_record(agent, now, TOUCH_GAP_MS)
    }
}

/// Why a request was refused as a replay.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The same request was accepted before.
    #[error("this signed request was already used; replays are refused")]
    Seen,
    /// The record of used requests could not be read or written.
    #[error("cannot check for a replay: {0}")]
    Store(#[from] StoreError),
}

/// The identity of a signed request: a digest of its parts, each length-prefixed so that no two
/// different part lists give the same bytes.
pub fn request_digest(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    // The first 8 bytes of SHA-256 collide with odds of 2^-64 per pair: good enough to key on.
    u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

/// Admits a request identified by `parts`, signed at `sent_secs`, once.
pub fn admit_once(store: &Store, parts: &[&[u8]], sent_secs: i64) -> Result<(), ReplayError> {
    if store.first_use(sent_secs, request_digest(parts))? { Ok(()) } else { Err(ReplayError::Seen) }
}

/// Forgets used requests that left the signing window.
pub fn forget_old_uses(store: &Store, now_secs: i64) -> Result<usize, StoreError> {
    store.forget_uses_before(now_secs - TIME_WINDOW_SECS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1024 * 1024, crate::server::store::Policy::default()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_request_is_admitted_once() {
        let (_dir, store) = store();
        assert!(admit_once(&store, &[b"w1", b"nonce-1"], 1_000).is_ok());
        assert!(matches!(admit_once(&store, &[b"w1", b"nonce-1"], 1_000), Err(ReplayError::Seen)));
        assert!(admit_once(&store, &[b"w1", b"nonce-2"], 1_000).is_ok());
        assert!(admit_once(&store, &[b"w2", b"nonce-1"], 1_000).is_ok(), "another agent's nonce");
    }

    #[test]
    fn parts_are_not_confused_by_concatenation() {
        assert_ne!(request_digest(&[b"ab", b"c"]), request_digest(&[b"a", b"bc"]));
    }

    #[test]
    fn uses_are_remembered_across_a_reopen_and_forgotten_out_of_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let open = || Store::open(dir.path(), 1024 * 1024, crate::server::store::Policy::default()).unwrap();
        {
            let store = open();
            admit_once(&store, &[b"old"], 100).unwrap();
            admit_once(&store, &[b"new"], 500).unwrap();
        }
        let store = open();
        assert!(
            matches!(admit_once(&store, &[b"new"], 500), Err(ReplayError::Seen)),
            "a restart forgets nothing"
        );
        assert_eq!(forget_old_uses(&store, 500).unwrap(), 1);
        assert!(matches!(admit_once(&store, &[b"new"], 500), Err(ReplayError::Seen)));
    }
}
