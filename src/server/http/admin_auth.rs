//! The bearer token in front of every operator route, then the route's least role. A token is
//! the server's admin token (the admin named `admin`) or a named operator's; it is checked
//! first, so a right token is never refused because of others' failures. Wrong tokens are
//! counted per source and in all; past either limit, a wrong token is answered 429 after the
//! tarpit delay, so a token cannot be guessed at line rate and nobody can lock the operators
//! out. A revoked or expired token is answered 401 saying so. A known caller whose role is below
//! the route's ([`super::permissions`]) is answered 403 naming the role needed, and the refusal
//! is recorded in the audit record under its name. The [`Caller`] is handed to the handlers.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::AppState;
use super::admin_common::ApiFailure;
use super::client_addr::ClientAddr;
use super::permissions::{PERMISSIONS, least_role};
use super::refusal_log;
use crate::server::failures::{TARPIT, TokenFailures};
use crate::server::operators::{AuthError, Caller};

/// `routes`, each letting through only requests whose bearer token names a caller whose role
/// the route allows.
pub fn guarded(routes: Router<AppState>, app: AppState) -> Router<AppState> {
    routes.layer(middleware::from_fn(move |request: Request, next: Next| {
        let app = Arc::clone(&app);
        async move { admit(app, request, next).await }
    }))
}

/// Authenticates, authorises, and runs the route with the [`Caller`] in the request.
async fn admit(app: AppState, mut request: Request, next: Next) -> Response {
    let failures = app.token_failures();
    let source = ClientAddr::of(request.extensions()).map(|peer| peer.ip());
    let path = request.uri().path().to_owned();
    let caller = match authenticate(&app, request.headers(), source) {
        Ok(caller) => caller,
        Err(error) => {
            drop(request);
            return refusal(source, &path, error, failures).await.into_response();
        }
    };
    if let Err(refused) = authorise(&app, &caller, &request) {
        return refused.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The caller of a request, from its bearer token.
fn authenticate(app: &AppState, headers: &HeaderMap, source: Option<IpAddr>) -> Result<Caller, BearerError> {
    let token = bearer(headers)?;
    let addr = source.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    app.operators().authenticate(token, addr).map_err(|e| match e {
        AuthError::Wrong => BearerError::Wrong,
        AuthError::Revoked(_) | AuthError::Expired(..) => {
            BearerError::Unusable(ApiFailure(StatusCode::UNAUTHORIZED, e.to_string()))
        }
        AuthError::Store(e) => BearerError::Malformed(ApiFailure::from(e)),
    })
}

/// Refuses `caller` a route whose least role is above its own (403, recorded in the audit
/// record), and anyone a route missing from the permission table.
fn authorise(app: &AppState, caller: &Caller, request: &Request) -> Result<(), ApiFailure> {
    // No matched route: the fallback answers 404.
    let Some(route) = request.extensions().get::<MatchedPath>() else { return Ok(()) };
    let method = request.method();
    let needed = match least_role(method, route.as_str()) {
        Some(role) => role,
        // Another method of a known route: the router answers 405.
        None if PERMISSIONS.iter().any(|p| p.path == route.as_str()) => return Ok(()),
        None => {
            let message = format!("{method} {} has no entry in the permission table", route.as_str());
            return Err(ApiFailure(StatusCode::FORBIDDEN, message));
        }
    };
    if caller.role >= needed {
        return Ok(());
    }
    let reason = format!(
        "{} has the role {}; {method} {} needs the role {needed}",
        caller.name,
        caller.role,
        route.as_str()
    );
    let target = format!("{method} {}", request.uri().path());
    app.audit().record(&caller.actor(), "access.denied", &target, &reason)?;
    Err(ApiFailure(StatusCode::FORBIDDEN, reason))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, "the request was not authenticated".into())
        })
    }
}

/// The answer to a request without a usable token: 401, or for a wrong token over a limit
/// 429 after [`TARPIT`]. Only wrong tokens count (a missing header is no guess, and a revoked
/// or expired token is a known one).
async fn refusal(
    source: Option<IpAddr>,
    path: &str,
    error: BearerError,
    failures: &TokenFailures,
) -> ApiFailure {
    let (failure, reason) = match error {
        BearerError::Malformed(failure) => (failure, "no admin token"),
        BearerError::Unusable(failure) => (failure, "revoked or expired token"),
        BearerError::Wrong => match failures.record(source, Utc::now().timestamp()) {
            Ok(()) => (ApiFailure(StatusCode::UNAUTHORIZED, WRONG_TOKEN.into()), "wrong admin token"),
            Err(too_many) => {
                tokio::time::sleep(TARPIT).await;
                let failure = ApiFailure(StatusCode::TOO_MANY_REQUESTS, too_many.to_string());
                (failure, "too many wrong admin tokens")
            }
        },
    };
    let unknown = IpAddr::from([0, 0, 0, 0]);
    refusal_log::refused(source.unwrap_or(unknown), path, reason, &failure.1);
    failure
}

/// The answer to a wrong token.
const WRONG_TOKEN: &str = "wrong admin token";

/// Why a bearer check failed; only a wrong token is a guess.
enum BearerError {
    /// No usable header, or the store failed.
    Malformed(ApiFailure),
    /// A known operator's token, revoked or expired.
    Unusable(ApiFailure),
    /// A token nobody has.
    Wrong,
}

/// The bearer token of `headers`, trimmed.
fn bearer(headers: &HeaderMap) -> Result<&str, BearerError> {
    let unauthorized = |m: &str| BearerError::Malformed(ApiFailure(StatusCode::UNAUTHORIZED, m.to_owned()));
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
    Ok(token.trim())
}
