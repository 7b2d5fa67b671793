//! The overload guard of the agent endpoints, in two pools of places. Calls of enrolled,
//! accepted agents are served from the main pool (`max_inflight` requests at once); registrations
//! and calls of app ids that are not accepted agents (unknown, pending, forgotten) from a smaller
//! one of their own (`max_unverified_inflight`), so strangers can never take an enrolled agent's
//! place. The pool is chosen from the path and the headers before anything else, and the body is
//! read in full, under a short deadline that grows with its announced size ([`body`]), before a
//! place is taken: a client trickling its body holds a connection, never a place.
//!
//! A parked long poll gives its place back before it parks, so idle agents never count as load.
//! Past the limit an orange agent gets HTTP 429 with a `Retry-After` drawn at random from
//! `[retry_after, 2 × retry_after]` seconds, so a storm of agents does not come back in lockstep.
//! An original client is never refused (it exits on a getTask that is not HTTP 200 and never
//! retries a report): its request waits for a place, in turn. A register, ping, report or
//! output post waits as long as it takes and is never dropped (their number is bounded by the
//! connection limits). A getTask waits at most the drawn Retry-After, and at most
//! [`HELD_PER_PLACE`] polls per place wait at once; past either bound it is answered "no task",
//! which the client takes as an empty poll. Refusals are logged as a count per kind and interval
//! ([`super::refusal_log`]), not one line each.

mod body;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::AppState;
use super::refusal_log::{self, Ended, RefusalLog};
use crate::protocol::busy::{BUSY_MESSAGE, HEADER_RETRY_AFTER};
use crate::protocol::wire::{
    CODE_ERROR, CODE_NO_TASK, Envelope, GET_TASK_PATH, HEADER_APPID, HEADER_SIGN_VERSION, REGISTER_PATH,
    check_app_id,
};

/// Original clients' polls that may wait for a place, per place.
pub const HELD_PER_PLACE: usize = 4;

/// Counts the agent requests being handled against the limit. Places are handed out in the
/// order asked for: once a request waits, a place given back goes to it, not to whoever asks
/// next.
#[derive(Debug)]
pub struct Limiter {
    places: Arc<Semaphore>,
    max: usize,
    held_polls: AtomicUsize,
    retry_after_secs: u64,
}

/// A place among the requests being handled; given back once, on [`BusyPermit::release`] or
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct BusyPermit(Arc<Mutex<Option<OwnedSemaphorePermit>>>);

impl BusyPermit {
    fn new(place: OwnedSemaphorePermit) -> Self {
        BusyPermit(Arc::new(Mutex::new(Some(place))))
    }

    /// Gives the place back early: a long poll calls this before it parks.
    pub fn release(&self) {
        let place = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        drop(place);
    }
}

impl Limiter {
    /// A limiter of `max` requests at once (at least 1) answering overload with a Retry-After
    /// of `retry_after_secs` to twice that (at least 1 s).
    pub fn new(max: usize, retry_after_secs: u64) -> Arc<Self> {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Limiter {
            places: Arc::new(Semaphore::new(max)),
            max,
            held_polls: AtomicUsize::new(0),
            retry_after_secs: retry_after_secs.max(1),
        })
    }

    /// Takes a place if one is free and nobody waits for one.
    pub fn try_acquire(&self) -> Option<BusyPermit> {
        Arc::clone(&self.places).try_acquire_owned().ok().map(BusyPermit::new)
    }

    /// Waits for a place, after those already waiting.
    pub async fn acquire(&self) -> BusyPermit {
        // The semaphore is never closed, the only way acquiring fails.
        let place = Arc::clone(&self.places).acquire_owned().await.expect("the places are never closed");
        BusyPermit::new(place)
    }

    /// Counts one more original client's poll waiting for a place, if within the bound.
    fn try_hold_poll(self: &Arc<Self>) -> Option<HeldPoll> {
        let most = self.max.saturating_mul(HELD_PER_PLACE);
        self.held_polls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| (held < most).then_some(held + 1))
            .ok()
            .map(|_| HeldPoll(Arc::clone(self)))
    }

    /// Requests being handled now.
    pub fn busy(&self) -> usize {
        self.max - self.places.available_permits()
    }

    /// A Retry-After in `[retry_after, 2 × retry_after]` seconds, drawn at random.
    pub fn retry_after(&self) -> u64 {
        let spread = self.retry_after_secs.saturating_add(1);
        // Without OS randomness the clock's nanoseconds still spread the answers.
        let random =
            getrandom::u64().unwrap_or_else(|_| u64::from(chrono::Utc::now().timestamp_subsec_nanos()));
        self.retry_after_secs.saturating_add(random % spread)
    }
}

/// Which pool of places a request is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// Calls of enrolled agents an operator has accepted: `max_inflight` places.
    Verified,
    /// Registrations, and calls naming no accepted agent: `max_unverified_inflight` places.
    Unverified,
}

impl Pool {
    /// The name shown in log lines.
    fn as_str(self) -> &'static str {
        match self {
            Pool::Verified => "verified",
            Pool::Unverified => "unverified",
        }
    }
}

/// The pool of a request to `path` with `headers`; `accepted` says whether an app id is an
/// accepted agent. Only a call naming one may use the main pool: its signature is checked
/// later, but a forger gains only a place for as long as a refusal takes, and the failed
/// signature counts against its source.
pub fn classify(path: &str, headers: &HeaderMap, accepted: impl FnOnce(&str) -> bool) -> Pool {
    if path == REGISTER_PATH {
        return Pool::Unverified;
    }
    let app_id = headers.get(HEADER_APPID).and_then(|v| v.to_str().ok());
    match app_id {
        Some(app_id) if check_app_id(app_id).is_ok() && accepted(app_id) => Pool::Verified,
        _ => Pool::Unverified,
    }
}

/// Whether `app_id` is an accepted agent; a store that cannot say makes it a stranger.
fn is_accepted(app: &AppState, app_id: &str) -> bool {
    app.inventory().is_accepted(app_id).unwrap_or_else(|e| {
        debug!(app_id, error = %e, "cannot look the agent up; serving it as unverified");
        false
    })
}

/// What a line about refusals is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Refused {
    /// An orange agent told to retry later (HTTP 429).
    RetryLater,
    /// An original client's poll answered "no task" because too many wait already.
    TooManyHeld,
    /// An original client's poll answered "no task" after waiting its Retry-After in vain.
    PollWaitedTooLong,
    /// A body that did not arrive in time or was too large.
    Body,
}

impl Refused {
    fn as_str(self) -> &'static str {
        match self {
            Refused::RetryLater => "retry later",
            Refused::TooManyHeld => "too many held",
            Refused::PollWaitedTooLong => "poll waited too long",
            Refused::Body => "body",
        }
    }
}

/// The two pools and the summary of their refusals.
#[derive(Debug)]
pub struct Pools {
    verified: Arc<Limiter>,
    unverified: Arc<Limiter>,
    refusals: RefusalLog<(Refused, Pool)>,
}

impl Pools {
    /// Pools of `max_inflight` places for accepted agents and `max_unverified_inflight` for the
    /// rest, answering overload with a Retry-After of `retry_after_secs` to twice that.
    pub fn new(max_inflight: usize, max_unverified_inflight: usize, retry_after_secs: u64) -> Arc<Self> {
        Arc::new(Pools {
            verified: Limiter::new(max_inflight, retry_after_secs),
            unverified: Limiter::new(max_unverified_inflight, retry_after_secs),
            refusals: RefusalLog::new(refusal_log::INTERVAL, refusal_log::MAX_KINDS),
        })
    }

    fn limiter(&self, pool: Pool) -> &Arc<Limiter> {
        match pool {
            Pool::Verified => &self.verified,
            Pool::Unverified => &self.unverified,
        }
    }

    /// Logs a refusal, or counts it when one of its kind was logged lately.
    fn log_refusal(&self, refused: Refused, pool: Pool, path: &str, detail: &str) {
        let noted = self.refusals.note((refused, pool), Instant::now());
        for Ended { kind, count } in noted.ended {
            let (refused, pool) =
                kind.map_or(("any", "any"), |(refused, pool)| (refused.as_str(), pool.as_str()));
            warn!(refused, pool, count, "more agent requests refused in the last interval");
        }
        if !noted.first {
            return;
        }
        let (pool, busy) = (pool.as_str(), self.limiter(pool).busy());
        match refused {
            Refused::RetryLater => warn!(path, pool, busy, detail, "overloaded: agent told to retry later"),
            Refused::TooManyHeld => {
                warn!(
                    path,
                    pool, busy, "overloaded: too many original clients' polls wait already; answered no task"
                );
            }
            Refused::PollWaitedTooLong => {
                warn!(
                    path,
                    pool,
                    busy,
                    detail,
                    "overloaded: an original client's poll found no place; answered no task"
                );
            }
            Refused::Body => warn!(path, pool, detail, "agent request body refused"),
        }
    }
}

/// The middleware: chooses the request's pool, reads its body, then handles it with a place
/// (put in its extensions for the handler), or answers an orange agent 429, or makes an
/// original client wait before serving it.
pub async fn limit(pools: Arc<Pools>, app: AppState, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let pool = classify(&path, request.headers(), |app_id| is_accepted(&app, app_id));
    let request = match body::buffered(request).await {
        Ok(request) => request,
        Err(failure) => {
            pools.log_refusal(Refused::Body, pool, &path, &failure.to_string());
            return failure.answer(&path);
        }
    };
    with_place(&pools, pool, path, request, next).await
}

/// Serves `request` with a place of `pool`, or refuses or holds it as the module says.
async fn with_place(pools: &Pools, pool: Pool, path: String, request: Request, next: Next) -> Response {
    let limiter = pools.limiter(pool);
    if let Some(place) = limiter.try_acquire() {
        return serve(place, request, next).await;
    }
    let secs = limiter.retry_after();
    if request.headers().contains_key(HEADER_SIGN_VERSION) {
        pools.log_refusal(Refused::RetryLater, pool, &path, &format!("retry after {secs} s"));
        return too_many(secs);
    }
    if path != GET_TASK_PATH {
        debug!(path = %path, pool = pool.as_str(), "overloaded: an original client's request waits for a place");
        return serve(limiter.acquire().await, request, next).await;
    }
    let Some(_held) = limiter.try_hold_poll() else {
        pools.log_refusal(Refused::TooManyHeld, pool, &path, "");
        return no_task_now(secs);
    };
    match tokio::time::timeout(Duration::from_secs(secs), limiter.acquire()).await {
        Ok(place) => serve(place, request, next).await,
        Err(_) => {
            pools.log_refusal(Refused::PollWaitedTooLong, pool, &path, &format!("waited {secs} s"));
            no_task_now(secs)
        }
    }
}

/// Handles `request` holding `place` (put in its extensions for the handler).
async fn serve(place: BusyPermit, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(place.clone());
    let response = next.run(request).await;
    place.release();
    response
}

/// HTTP 429 with `Retry-After: secs` and an envelope naming the wait.
fn too_many(secs: u64) -> Response {
    busy_answer(StatusCode::TOO_MANY_REQUESTS, CODE_ERROR, secs)
}

/// What an original client's poll gets when it cannot be served: "no task" (HTTP 200, code 2),
/// which it takes as an empty poll; anything else would end its process.
fn no_task_now(secs: u64) -> Response {
    busy_answer(StatusCode::OK, CODE_NO_TASK, secs)
}

fn busy_answer(status: StatusCode, code: i32, secs: u64) -> Response {
    let mut response = envelope_answer(status, code, format!("{BUSY_MESSAGE}: retry after {secs} s"));
    response.headers_mut().insert(HEADER_RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// An answer with `status` and an envelope of `code` and `message`.
fn envelope_answer(status: StatusCode, code: i32, message: String) -> Response {
    (status, Json(Envelope::<()>::empty(code, message))).into_response()
}

/// One of the original clients' polls waiting for a place; counted until dropped.
struct HeldPoll(Arc<Limiter>);

impl Drop for HeldPoll {
    fn drop(&mut self) {
        self.0.held_polls.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_and_given_back_once() {
        let limiter = Limiter::new(2, 1);
        let a = limiter.try_acquire().expect("first place");
        let b = limiter.try_acquire().expect("second place");
        assert!(limiter.try_acquire().is_none());
        let a_clone = a.clone();
        a.release();
        a_clone.release();
        drop(a);
        drop(a_clone);
        assert_eq!(limiter.busy(), 1);
        let c = limiter.try_acquire().expect("a place was given back");
        drop(b);
        drop(c);
        assert_eq!(limiter.busy(), 0);
    }

    #[test]
    fn original_polls_wait_in_a_bounded_number_and_are_answered_no_task() {
        let limiter = Limiter::new(2, 1);
        let held: Vec<HeldPoll> = (0..2 * HELD_PER_PLACE).map_while(|_| limiter.try_hold_poll()).collect();
        assert_eq!(held.len(), 2 * HELD_PER_PLACE);
        assert!(limiter.try_hold_poll().is_none());
        drop(held);
        assert!(limiter.try_hold_poll().is_some());
        let no_task = no_task_now(3);
        assert_eq!(no_task.status(), StatusCode::OK);
        assert_eq!(no_task.headers()[HEADER_RETRY_AFTER], "3");
    }

    #[tokio::test]
    async fn a_waiting_request_gets_the_next_place_before_anyone_asking_later() {
        let limiter = Limiter::new(1, 1);
        let first = limiter.try_acquire().expect("the place");
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await })
        };
        // Lets the waiter run and queue up.
        tokio::time::sleep(Duration::from_millis(50)).await;
        first.release();
        assert!(limiter.try_acquire().is_none(), "the freed place went to the waiter");
        let place = waiter.await.expect("waiter");
        assert_eq!(limiter.busy(), 1);
        place.release();
        assert_eq!(limiter.busy(), 0);
    }

    #[test]
    fn only_calls_naming_an_accepted_agent_use_the_main_pool() {
        let with_app_id = |app_id: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(HEADER_APPID, HeaderValue::from_static(app_id));
            headers
        };
        let accepted = |app_id: &str| app_id == "w1";
        assert_eq!(classify(GET_TASK_PATH, &with_app_id("w1"), accepted), Pool::Verified);
        assert_eq!(classify(REGISTER_PATH, &with_app_id("w1"), accepted), Pool::Unverified, "a register");
        assert_eq!(classify(GET_TASK_PATH, &with_app_id("w2"), accepted), Pool::Unverified, "not accepted");
        assert_eq!(classify(GET_TASK_PATH, &HeaderMap::new(), accepted), Pool::Unverified, "no app id");
        let never = |_: &str| -> bool { panic!("an invalid app id is not looked up") };
        assert_eq!(classify(GET_TASK_PATH, &with_app_id("a/b"), never), Pool::Unverified);
    }

    #[test]
    fn retry_after_is_spread_between_the_base_and_twice_it() {
        let limiter = Limiter::new(1, 3);
        let values: std::collections::BTreeSet<u64> = (0..500).map(|_| limiter.retry_after()).collect();
        assert_eq!(values.into_iter().collect::<Vec<_>>(), [3, 4, 5, 6]);
    }
}
