//! The admin bearer token in front of every operator route: compared by SHA-256 digest, with a
//! per-source limit on wrong tokens so a token cannot be guessed at line rate.

use std::sync::Arc;

use super::client_addr::ClientAddr;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use chrono::Utc;

use super::AppState;
use super::admin_common::{ApiFailure, ApiResult};
use crate::server::guard::{FailureLimiter, SecretHash, secret_hash};

/// `routes`, each letting through only requests that carry the token hashing to `token_hash`.
pub fn guarded(routes: Router<AppState>, token_hash: SecretHash) -> Router<AppState> {
    let failures = Arc::new(FailureLimiter::new("wrong admin tokens"));
    routes.layer(middleware::from_fn(move |request: Request, next: Next| {
        let failures = Arc::clone(&failures);
        async move {
            match admitted(&request, &token_hash, &failures) {
                Ok(()) => next.run(request).await,
                Err(failure) => failure.into_response(),
            }
        }
    }))
}

/// Lets a request with the right token through; counts a wrong one against its source, which is
/// refused with 429 for the rest of the minute after [`MAX_FAILURES_PER_MINUTE`](crate::protocol::limits::MAX_FAILURES_PER_MINUTE) of them, so a
/// token cannot be guessed at line rate.
fn admitted(request: &Request, token_hash: &SecretHash, failures: &FailureLimiter) -> ApiResult<()> {
    let source = ClientAddr::of(request.extensions()).map(|peer| peer.ip());
    let now = Utc::now().timestamp();
    if let Some(source) = source {
        failures.check(source, now).map_err(|e| ApiFailure(StatusCode::TOO_MANY_REQUESTS, e.to_string()))?;
    }
    let checked = bearer_ok(request.headers(), token_hash);
    if let (Err(BearerError::Wrong(_)), Some(source)) = (&checked, source) {
        failures.record(source, now);
    }
    checked.map_err(BearerError::into_failure)
}

/// Why a bearer check failed: no usable header (not a guess), or a wrong token (a guess).
enum BearerError {
    Malformed(ApiFailure),
    Wrong(ApiFailure),
}

impl BearerError {
    fn into_failure(self) -> ApiFailure {
        match self {
            BearerError::Malformed(failure) | BearerError::Wrong(failure) => failure,
        }
    }
}

/// Checks the bearer token by comparing SHA-256 digests, which reveals nothing through timing
/// about the token itself.
fn bearer_ok(headers: &HeaderMap, token_hash: &SecretHash) -> Result<(), BearerError> {
    let unauthorized = |m: &str| BearerError::Malformed(ApiFailure(StatusCode::UNAUTHORIZED, m.to_owned()));
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
    let given = secret_hash(token.trim());
    let diff = given.iter().zip(token_hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(BearerError::Wrong(ApiFailure(StatusCode::UNAUTHORIZED, "wrong admin token".into())));
    }
    Ok(())
}
