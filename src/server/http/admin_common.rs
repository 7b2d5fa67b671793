//! What every operator route shares: the error answer (`{"error": message}` with a status),
//! reading a JSON body under its limit, refusing a malformed path or query, parsing an id, and
//! naming the operator in the audit record.

use axum::Json;
use axum::body::Body;
use axum::extract::Path;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tracing::error;

use super::AppState;
use crate::protocol::TaskId;
use crate::protocol::admin::ApiError;
use crate::protocol::limits::MAX_ADMIN_BODY;
use crate::protocol::wire::shown;
use crate::server::error::ServiceError;
use crate::server::operators::Caller;
use crate::server::store::StoreError;

/// An admin API failure: a status and a message, answered as `{"error": message}`.
pub struct ApiFailure(pub StatusCode, pub String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<ServiceError> for ApiFailure {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest(m) => ApiFailure(StatusCode::BAD_REQUEST, m),
            ServiceError::NotFound(m) => ApiFailure(StatusCode::NOT_FOUND, m),
            ServiceError::TooLarge(m) => ApiFailure(StatusCode::PAYLOAD_TOO_LARGE, m),
            ServiceError::Conflict(m) => ApiFailure(StatusCode::CONFLICT, m),
            ServiceError::Forbidden(m) => ApiFailure(StatusCode::FORBIDDEN, m),
            ServiceError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiFailure {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store failure in admin API");
        ApiFailure(StatusCode::INTERNAL_SERVER_ERROR, format!("server error: {e}"))
    }
}

/// The result of an admin handler.
pub type ApiResult<T> = Result<T, ApiFailure>;

/// Reads a JSON body under the admin body limit.
pub async fn read_json<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    read_json_within(body, MAX_ADMIN_BODY).await
}

/// Reads a JSON body of at most `limit` bytes.
pub async fn read_json_within<T: DeserializeOwned>(body: Body, limit: usize) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiFailure(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiFailure(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))
}

/// A malformed query as a 400.
pub fn bad_query(e: QueryRejection) -> ApiFailure {
    ApiFailure(StatusCode::BAD_REQUEST, format!("bad query: {}", e.body_text()))
}

/// A malformed path as a 400.
pub fn bad_path(e: PathRejection) -> ApiFailure {
    ApiFailure(StatusCode::BAD_REQUEST, format!("bad path: {}", e.body_text()))
}

/// The id in a path, of a `what` (`task`, `job`): a UUID, else a 400.
pub fn path_id(path: Result<Path<String>, PathRejection>, what: &str) -> ApiResult<TaskId> {
    let Path(id) = path.map_err(bad_path)?;
    parse_id(&id, what)
}

/// The id of a `what` (`task`, `job`): a UUID, else a 400.
pub fn parse_id(id: &str, what: &str) -> ApiResult<TaskId> {
    TaskId::parse_str(id)
        .map_err(|_| ApiFailure(StatusCode::BAD_REQUEST, format!("{what} id {:?} is not a UUID", shown(id))))
}

/// `refused`, recorded in the audit record first when it is a refusal of the caller (a target
/// outside its scope, or one it may not see) rather than a mistake in the request.
pub fn refused_in_audit(app: &AppState, caller: &Caller, action: &str, refused: ServiceError) -> ApiFailure {
    let (ServiceError::Forbidden(reason) | ServiceError::NotFound(reason)) = &refused else {
        return refused.into();
    };
    if !caller.unscoped() {
        let detail = format!("refused: {reason}");
        if let Err(e) = app.audit().record(&caller.actor(), action, "", &detail) {
            return e.into();
        }
    }
    refused.into()
}

/// Characters of a task's command or payload an audit record quotes.
pub const AUDIT_PAYLOAD_CHARS: usize = 200;

/// What an audit record says of a task's input: `command "..."` for a shell task, `payload
/// "..."` for another type, quoted, its first [`AUDIT_PAYLOAD_CHARS`] characters and its size
/// when it is longer; environment values are never part of it.
pub fn payload_detail(task_type: &str, payload: &str) -> String {
    let label = if task_type == "shell" { "command" } else { "payload" };
    match payload.char_indices().nth(AUDIT_PAYLOAD_CHARS) {
        Some((cut, _)) => format!("{label} {:?}... ({} bytes)", &payload[..cut], payload.len()),
        None => format!("{label} {payload:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_quotes_a_commands_head_and_the_size_of_a_long_one() {
        assert_eq!(payload_detail("shell", "df -h /"), r#"command "df -h /""#);
        assert_eq!(payload_detail("ping", "a\"b\n"), r#"payload "a\"b\n""#);
        let long = "é".repeat(AUDIT_PAYLOAD_CHARS + 1);
        let head = "é".repeat(AUDIT_PAYLOAD_CHARS);
        assert_eq!(payload_detail("shell", &long), format!("command {head:?}... ({} bytes)", long.len()));
    }
}
