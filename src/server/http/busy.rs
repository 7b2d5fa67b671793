//! The overload guard of the agent endpoints: at most `max_inflight` agent requests are handled
//! at once. A parked long poll gives its place back before it parks, so idle agents never count
//! as load. Past the limit an orange agent gets HTTP 429 with a `Retry-After` drawn at random
//! from `[retry_after, 2 × retry_after]` seconds, so a storm of agents does not come back in
//! lockstep. An original client is not refused (it exits on a getTask that is not HTTP 200): its
//! request waits the same drawn time, without counting as load, and is then served. Those waits
//! are bounded too ([`HELD_PER_PLACE`] per place): past them an original getTask answers "no
//! task" at once and any other original request HTTP 503, which original clients already meet
//! when the server defers a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{debug, warn};

use crate::protocol::busy::{BUSY_MESSAGE, HEADER_RETRY_AFTER};
use crate::protocol::wire::{CODE_ERROR, CODE_NO_TASK, Envelope, GET_TASK_PATH, HEADER_SIGN_VERSION};

/// Original clients' requests that may wait for their turn, per place.
pub const HELD_PER_PLACE: usize = 4;

/// Counts the agent requests being handled against the limit.
#[derive(Debug)]
pub struct Limiter {
    busy: AtomicUsize,
    max: usize,
    held: AtomicUsize,
    retry_after_secs: u64,
}

/// A place among the requests being handled; given back once, on [`BusyPermit::release`] or
/// when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct BusyPermit(Arc<Held>);

#[derive(Debug)]
struct Held {
    limiter: Arc<Limiter>,
    released: AtomicBool,
}

impl Held {
    fn release(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            self.limiter.busy.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.release();
    }
}

impl BusyPermit {
    /// Gives the place back early: a long poll calls this before it parks.
    pub fn release(&self) {
        self.0.release();
    }
}

impl Limiter {
    /// A limiter of `max` requests at once (at least 1) answering overload with a Retry-After
    /// of `retry_after_secs` to twice that (at least 1 s).
    pub fn new(max: usize, retry_after_secs: u64) -> Arc<Self> {
        Arc::new(Limiter {
            busy: AtomicUsize::new(0),
            max: max.max(1),
            held: AtomicUsize::new(0),
            retry_after_secs: retry_after_secs.max(1),
        })
    }

    /// Takes a place if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<BusyPermit> {
        self.busy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |busy| (busy < self.max).then_some(busy + 1))
            .ok()
            .map(|_| {
                BusyPermit(Arc::new(Held { limiter: Arc::clone(self), released: AtomicBool::new(false) }))
            })
    }

    /// Counts one more original client's request waiting for its turn, if within the bound.
    fn try_hold(self: &Arc<Self>) -> Option<HeldRequest> {
        let most = self.max.saturating_mul(HELD_PER_PLACE);
        self.held
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| (held < most).then_some(held + 1))
            .ok()
            .map(|_| HeldRequest(Arc::clone(self)))
    }

    /// Requests being handled now.
    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::SeqCst)
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

/// The middleware: handles the request with a place (put in its extensions for the handler), or
/// answers an orange agent 429, or makes an original client wait before serving it.
pub async fn limit(limiter: Arc<Limiter>, mut request: Request, next: Next) -> Response {
    if let Some(permit) = limiter.try_acquire() {
        request.extensions_mut().insert(permit.clone());
        let response = next.run(request).await;
        permit.release();
        return response;
    }
    let secs = limiter.retry_after();
    let path = request.uri().path().to_owned();
    if request.headers().contains_key(HEADER_SIGN_VERSION) {
        warn!(path = %path, retry_after = secs, busy = limiter.busy(), "overloaded: agent told to retry later");
        return too_many(secs);
    }
    let Some(held) = limiter.try_hold() else {
        warn!(path = %path, "overloaded: too many original clients' requests wait already");
        return original_refusal(&path, secs);
    };
    debug!(path = %path, delay = secs, "overloaded: holding an original client's request");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    drop(held);
    // Served without a place: it waited its turn, and refusing it could make it exit.
    request.extensions_mut().insert(BusyPermit(Arc::new(Held {
        limiter: Arc::clone(&limiter),
        released: AtomicBool::new(true),
    })));
    next.run(request).await
}

/// HTTP 429 with `Retry-After: secs` and an envelope naming the wait.
fn too_many(secs: u64) -> Response {
    busy_answer(StatusCode::TOO_MANY_REQUESTS, CODE_ERROR, secs)
}

/// What an original client tolerates: "no task" (HTTP 200, code 2) on getTask, else HTTP 503.
fn original_refusal(path: &str, secs: u64) -> Response {
    if path == GET_TASK_PATH {
        busy_answer(StatusCode::OK, CODE_NO_TASK, secs)
    } else {
        busy_answer(StatusCode::SERVICE_UNAVAILABLE, CODE_ERROR, secs)
    }
}

fn busy_answer(status: StatusCode, code: i32, secs: u64) -> Response {
    let envelope = Envelope::<()>::empty(code, format!("{BUSY_MESSAGE}: retry after {secs} s"));
    let mut response = (status, Json(envelope)).into_response();
    response.headers_mut().insert(HEADER_RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// One of the original clients' requests waiting for their turn; counted until dropped.
struct HeldRequest(Arc<Limiter>);

impl Drop for HeldRequest {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
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
    fn original_clients_wait_in_a_bounded_number() {
        let limiter = Limiter::new(2, 1);
        let held: Vec<HeldRequest> = (0..2 * HELD_PER_PLACE).map_while(|_| limiter.try_hold()).collect();
        assert_eq!(held.len(), 2 * HELD_PER_PLACE);
        assert!(limiter.try_hold().is_none());
        drop(held);
        assert!(limiter.try_hold().is_some());
        let no_task = original_refusal(GET_TASK_PATH, 3);
        assert_eq!(no_task.status(), StatusCode::OK);
        assert_eq!(no_task.headers()[HEADER_RETRY_AFTER], "3");
        assert_eq!(original_refusal("/orange-forge/api/ping", 3).status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn retry_after_is_spread_between_the_base_and_twice_it() {
        let limiter = Limiter::new(1, 3);
        let values: std::collections::BTreeSet<u64> = (0..500).map(|_| limiter.retry_after()).collect();
        assert_eq!(values.into_iter().collect::<Vec<_>>(), [3, 4, 5, 6]);
    }
}
