//! The admin bearer token in front of every operator route: compared by SHA-256 digest and
//! checked first, so a right token is never refused. Wrong tokens are counted per source and in
//! all; past either limit, a wrong token is answered 429 after the tarpit delay, so a token
//! cannot be guessed at line rate and nobody can lock the operator out.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use chrono::Utc;

use super::AppState;
use super::admin_common::ApiFailure;
use super::client_addr::ClientAddr;
use super::refusal_log;
use crate::server::failures::{TARPIT, TokenFailures};
use crate::server::guard::{SecretHash, secret_hash};

/// `routes`, each letting through only requests that carry the token hashing to `token_hash`.
pub fn guarded(routes: Router<AppState>, token_hash: SecretHash) -> Router<AppState> {
    let failures = Arc::new(TokenFailures::default());
    routes.layer(middleware::from_fn(move |request: Request, next: Next| {
        let failures = Arc::clone(&failures);
        async move {
            match bearer_ok(request.headers(), &token_hash) {
                Ok(()) => next.run(request).await,
                Err(error) => {
                    let source = ClientAddr::of(request.extensions()).map(|peer| peer.ip());
                    let path = request.uri().path().to_owned();
                    drop(request);
                    refusal(source, &path, error, &failures).await.into_response()
                }
            }
        }
    }))
}

/// The answer to a request without the right token: 401, or for a wrong token over a limit
/// 429 after [`TARPIT`]. Only wrong tokens count (a missing header is no guess).
async fn refusal(
    source: Option<IpAddr>,
    path: &str,
    error: BearerError,
    failures: &TokenFailures,
) -> ApiFailure {
    let failure = match error {
        BearerError::Malformed(failure) => failure,
        BearerError::Wrong(failure) => match failures.record(source, Utc::now().timestamp()) {
            Ok(()) => failure,
            Err(too_many) => {
                tokio::time::sleep(TARPIT).await;
                ApiFailure(StatusCode::TOO_MANY_REQUESTS, too_many.to_string())
            }
        },
    };
    let reason = match failure.0 {
        StatusCode::TOO_MANY_REQUESTS => "too many wrong admin tokens",
        _ if failure.1 == WRONG_TOKEN => "wrong admin token",
        _ => "no admin token",
    };
    let unknown = IpAddr::from([0, 0, 0, 0]);
    refusal_log::refused(source.unwrap_or(unknown), path, reason, &failure.1);
    failure
}

/// The answer to a wrong token.
const WRONG_TOKEN: &str = "wrong admin token";

/// Why a bearer check failed: no usable header (not a guess), or a wrong token (a guess).
enum BearerError {
    Malformed(ApiFailure),
    Wrong(ApiFailure),
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
        return Err(BearerError::Wrong(ApiFailure(StatusCode::UNAUTHORIZED, WRONG_TOKEN.into())));
    }
    Ok(())
}
