//! Guards of the agent endpoints: the keys a call may be signed with (an agent's own secret,
//! the enrollment key, an enrollment token's secret) and protection against abuse. Replay
//! protection: every signed request is accepted once; the store remembers a digest of each
//! accepted request's identity (the app id and nonce for version-2 signatures, the signature
//! itself for legacy ones) until its time leaves the signing window, across restarts. And a
//! per-source limit on failed signatures, so a source cannot try secrets at line rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use thiserror::Error;

use super::clock::now_ms;
use super::error::ServiceError;
use super::store::{AgentRecord, AgentStatus, Store, StoreError, TokenError};
use crate::protocol::Signer;
use crate::protocol::limits::MAX_FAILURES_PER_MINUTE;
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
    failures: FailureLimiter,
    enroll_key: Signer,
}

impl Guard {
    /// Guards over `store`; registrations may be signed with `enroll_key`.
    pub fn new(store: Arc<Store>, enroll_key: &str) -> Self {
        Guard { store, failures: FailureLimiter::default(), enroll_key: Signer::new(enroll_key) }
    }

    /// Refuses a source that failed to sign too often in the minute of `now_secs`.
    pub fn check_source(&self, source: IpAddr, now_secs: i64) -> Result<(), TooManyFailures> {
        self.failures.check(source, now_secs)
    }

    /// Counts one failed signature from `source`.
    pub fn record_failure(&self, source: IpAddr, now_secs: i64) {
        self.failures.record(source, now_secs);
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

    /// Notes that `agent` is alive (at most every few seconds, to spare writes).
    pub fn touch(&self, agent: &AgentRecord) -> Result<(), StoreError> {
        self.store.touch_record(agent, now_ms(), TOUCH_GAP_MS)
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

/// A source that failed to sign too often.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("too many {what} from {address} ({count} this minute); retry in {retry_in} s")]
pub struct TooManyFailures {
    /// What failed, e.g. `failed signatures`.
    pub what: &'static str,
    /// The source address.
    pub address: IpAddr,
    /// Failures counted this minute.
    pub count: u32,
    /// Seconds until the minute ends.
    pub retry_in: i64,
}

/// Counts failures (bad signatures, wrong admin tokens) per source address over one-minute
/// windows.
pub struct FailureLimiter {
    what: &'static str,
    sources: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new("failed signatures")
    }
}

impl FailureLimiter {
    /// A limiter whose refusals name `what` failed (plural, e.g. `wrong admin tokens`).
    pub fn new(what: &'static str) -> Self {
        FailureLimiter { what, sources: Mutex::default() }
    }

    /// Refuses a source that failed too often in the minute of `now_secs`.
    pub fn check(&self, source: IpAddr, now_secs: i64) -> Result<(), TooManyFailures> {
        let minute = now_secs.div_euclid(60);
        let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        match sources.get(&source) {
            Some(&(m, count)) if m == minute && count >= MAX_FAILURES_PER_MINUTE => Err(TooManyFailures {
                what: self.what,
                address: source,
                count,
                retry_in: 60 - now_secs.rem_euclid(60),
            }),
            _ => Ok(()),
        }
    }

    /// Counts one failed signature from `source`.
    pub fn record(&self, source: IpAddr, now_secs: i64) {
        let minute = now_secs.div_euclid(60);
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        sources.retain(|_, (m, _)| *m == minute);
        sources.entry(source).or_insert((minute, 0)).1 += 1;
    }
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

    #[test]
    fn a_source_failing_too_often_is_refused_until_the_minute_ends() {
        let limiter = FailureLimiter::default();
        let source: IpAddr = [127, 0, 0, 1].into();
        let other: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert!(limiter.check(source, 600).is_ok());
            limiter.record(source, 600);
        }
        let refused = limiter.check(source, 630).unwrap_err();
        assert_eq!((refused.count, refused.retry_in), (MAX_FAILURES_PER_MINUTE, 30));
        assert!(limiter.check(other, 630).is_ok());
        assert!(limiter.check(source, 660).is_ok(), "a new minute");
    }
}
