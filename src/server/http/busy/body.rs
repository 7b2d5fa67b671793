//! An agent request's body, read in full under its size limit before the request takes a place
//! in a pool, so that a client trickling its body holds a connection but never a place. The
//! deadline grows with the size the client announces: a few seconds for the small bodies agents
//! send all the time, more for a large report, never more than [`BODY_DEADLINE_MAX`].

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::envelope_answer;
use crate::protocol::wire::{CODE_ERROR, CODE_NO_TASK, GET_TASK_PATH, MAX_AGENT_BODY};

/// What any body may take to arrive, however small.
pub const BODY_DEADLINE_BASE: Duration = Duration::from_secs(5);
/// The announced bytes that earn one more second of deadline.
pub const BODY_BYTES_PER_SECOND: u64 = 64 * 1024;
/// The longest deadline, also that of a body whose size is not announced.
pub const BODY_DEADLINE_MAX: Duration = Duration::from_secs(30);

/// Why a body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFailure {
    /// It did not arrive within its deadline.
    TooSlow(Duration),
    /// It was larger than [`MAX_AGENT_BODY`] or the connection ended before it did.
    TooLarge,
}

/// The deadline of a body of `content_length` bytes (`None`: not announced, e.g. chunked).
pub fn deadline(content_length: Option<u64>) -> Duration {
    let Some(bytes) = content_length else { return BODY_DEADLINE_MAX };
    let extra = Duration::from_secs(bytes / BODY_BYTES_PER_SECOND);
    BODY_DEADLINE_BASE.saturating_add(extra).min(BODY_DEADLINE_MAX)
}

/// The `Content-Length` of `headers`, if it is a number.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// `request` with its body read in full, within its deadline and size limit.
pub async fn buffered(request: Request) -> Result<Request, BodyFailure> {
    let limit = deadline(content_length(request.headers()));
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(limit, axum::body::to_bytes(body, MAX_AGENT_BODY)).await {
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
        Ok(Err(_)) => Err(BodyFailure::TooLarge),
        Err(_) => Err(BodyFailure::TooSlow(limit)),
    }
}

impl BodyFailure {
    /// The answer to a request to `path` whose body failed so. A body too large is refused
    /// for good (HTTP 200, code 1). A late one is a passing fault, answered as a deferral
    /// original clients already meet (getTask: "no task"; else HTTP 503), and its connection
    /// is closed: whatever still trickles in is not read.
    pub fn answer(self, path: &str) -> Response {
        match self {
            BodyFailure::TooLarge => envelope_answer(StatusCode::OK, CODE_ERROR, self.to_string()),
            BodyFailure::TooSlow(_) => {
                let mut response = if path == GET_TASK_PATH {
                    envelope_answer(StatusCode::OK, CODE_NO_TASK, self.to_string())
                } else {
                    envelope_answer(StatusCode::SERVICE_UNAVAILABLE, CODE_ERROR, self.to_string())
                };
                response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
                response
            }
        }
    }
}

impl std::fmt::Display for BodyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyFailure::TooSlow(limit) => {
                write!(f, "request body did not arrive within {} s", limit.as_secs())
            }
            BodyFailure::TooLarge => {
                write!(f, "request body is larger than {MAX_AGENT_BODY} bytes or was cut off")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_grows_a_second_per_64_kib_announced_up_to_its_cap() {
        assert_eq!(deadline(Some(0)), Duration::from_secs(5));
        assert_eq!(deadline(Some(4_000)), Duration::from_secs(5));
        assert_eq!(deadline(Some(64 * 1024)), Duration::from_secs(6));
        assert_eq!(deadline(Some(10 * 64 * 1024 + 1)), Duration::from_secs(15));
        assert_eq!(deadline(Some(MAX_AGENT_BODY as u64)), BODY_DEADLINE_MAX);
        assert_eq!(deadline(Some(u64::MAX)), BODY_DEADLINE_MAX);
        assert_eq!(deadline(None), BODY_DEADLINE_MAX, "an unannounced size gets the longest");
    }

    #[test]
    fn content_length_is_read_when_it_is_a_number() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("4000"));
        assert_eq!(content_length(&headers), Some(4000));
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("lots"));
        assert_eq!(content_length(&headers), None);
    }

    #[test]
    fn a_late_body_is_deferred_and_its_connection_closed() {
        let late = BodyFailure::TooSlow(Duration::from_secs(5));
        assert_eq!(late.to_string(), "request body did not arrive within 5 s");
        let on_get_task = late.answer(GET_TASK_PATH);
        assert_eq!(on_get_task.status(), StatusCode::OK, "an original getTask is never refused");
        assert_eq!(on_get_task.headers()[CONNECTION], "close");
        let on_register = late.answer("/orange-forge/api/register");
        assert_eq!(on_register.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(on_register.headers()[CONNECTION], "close");
        assert_eq!(BodyFailure::TooLarge.answer(GET_TASK_PATH).status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_body_is_buffered_whole_and_one_too_large_is_refused() {
        let request = Request::builder().body(Body::from("{\"app_id\":\"w1\"}")).expect("a request");
        let request = buffered(request).await.expect("a small body is read");
        let bytes = axum::body::to_bytes(request.into_body(), usize::MAX).await.expect("buffered");
        assert_eq!(&bytes[..], b"{\"app_id\":\"w1\"}");
        let big = Request::builder().body(Body::from(vec![b'x'; MAX_AGENT_BODY + 1])).expect("a request");
        assert_eq!(buffered(big).await.err(), Some(BodyFailure::TooLarge));
    }
}
