//! The operator API under `/api/v1/`: JSON in and out, proper HTTP status codes, every route
//! behind the admin bearer token. Handlers are thin: they parse, call [`Fleet`], and map errors.
//!
//! [`Fleet`]: crate::server::fleet::Fleet

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tracing::{error, info};

use super::AppState;
use super::admin_enroll::actor;
use crate::protocol::TaskId;
use crate::protocol::admin::{
    AGENTS_PATH, AgentFilter, AgentList, ApiError, CancelRequest, EnqueueReply, EnqueueRequest,
    MAX_LIST_LIMIT, MAX_WAIT_SECS, OutputPage, TASKS_PATH, TaskList, TaskView,
};
use crate::protocol::limits::MAX_ADMIN_BODY;
use crate::protocol::wire::shown;
use crate::server::fleet::FleetError;
use crate::server::guard::FailureLimiter;
use crate::server::store::StoreError;
/// Tasks listed when no limit is given.
const DEFAULT_LIST_LIMIT: usize = 100;

/// An admin API failure: a status and a message, answered as `{"error": message}`.
pub struct ApiFailure(pub StatusCode, pub String);

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

impl From<FleetError> for ApiFailure {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::BadRequest(m) => ApiFailure(StatusCode::BAD_REQUEST, m),
            FleetError::NotFound(m) => ApiFailure(StatusCode::NOT_FOUND, m),
            FleetError::TooLarge(m) => ApiFailure(StatusCode::PAYLOAD_TOO_LARGE, m),
            FleetError::Conflict(m) => ApiFailure(StatusCode::CONFLICT, m),
            FleetError::Store(e) => e.into(),
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

/// Routes of the operator API, guarded by `admin_token`.
pub fn routes(admin_token: &str) -> Router<AppState> {
    let token_hash: [u8; 32] = Sha256::digest(admin_token.as_bytes()).into();
    let failures = Arc::new(FailureLimiter::new("wrong admin tokens"));
    Router::new()
        .route(TASKS_PATH, get(list_tasks).post(enqueue))
        .route(&format!("{TASKS_PATH}/{{id}}"), get(get_task))
        .route(&format!("{TASKS_PATH}/{{id}}/cancel"), post(cancel_task))
        .route(&format!("{TASKS_PATH}/{{id}}/output"), get(task_output))
        .route(AGENTS_PATH, get(list_agents))
        .route(&format!("{AGENTS_PATH}/{{id}}"), get(get_agent))
        .merge(super::admin_enroll::routes())
        .merge(super::admin_jobs::routes())
        .fallback(|| async { ApiFailure(StatusCode::NOT_FOUND, "no such API route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiFailure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this API route".into())
        })
        .layer(middleware::from_fn(move |request: Request, next: Next| {
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
fn admitted(request: &Request, token_hash: &[u8; 32], failures: &FailureLimiter) -> ApiResult<()> {
    let source = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|peer| peer.0.ip());
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
fn bearer_ok(headers: &HeaderMap, token_hash: &[u8; 32]) -> Result<(), BearerError> {
    let unauthorized = |m: &str| BearerError::Malformed(ApiFailure(StatusCode::UNAUTHORIZED, m.to_owned()));
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer token"))?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("Authorization must be \"Bearer <token>\""))?;
    let given: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    let diff = given.iter().zip(token_hash).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(BearerError::Wrong(ApiFailure(StatusCode::UNAUTHORIZED, "wrong admin token".into())));
    }
    Ok(())
}

/// Reads a JSON body under the admin body limit.
pub async fn read_json<T: DeserializeOwned>(body: Body) -> ApiResult<T> {
    let bytes = axum::body::to_bytes(body, MAX_ADMIN_BODY).await.map_err(|_| {
        ApiFailure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_ADMIN_BODY} bytes"),
        )
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

async fn enqueue(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    let request: EnqueueRequest = read_json(body).await?;
    let detail = format!("type {}, payload {} bytes", request.task_type, request.payload.len());
    let tasks = fleet.enqueue(request).await?;
    let target = match tasks.as_slice() {
        [one] => one.id.to_string(),
        many => format!(
            "{} tasks, first {}",
            many.len(),
            many.first().map_or(String::new(), |t| t.id.to_string())
        ),
    };
    fleet.audit(&actor(peer), "task.send", &target, &detail)?;
    info!(count = tasks.len(), task_type = %tasks.first().map_or("", |t| t.task_type.as_str()), "tasks enqueued");
    Ok((StatusCode::CREATED, Json(EnqueueReply { tasks: fleet.list_views(&tasks)? })))
}

/// Query of a task list.
#[derive(Deserialize)]
struct ListQuery {
    app_id: Option<String>,
    limit: Option<usize>,
}

async fn list_tasks(
    State(fleet): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<TaskList>> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
    let tasks = fleet.store.tasks(query.app_id.as_deref(), limit)?;
    Ok(Json(TaskList { tasks: fleet.list_views(&tasks)? }))
}

/// Query of a task get.
#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn get_task(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let Path(id) = path.map_err(bad_path)?;
    let Query(query) = query.map_err(bad_query)?;
    let id = TaskId::parse_str(&id).map_err(|_| {
        ApiFailure(StatusCode::BAD_REQUEST, format!("task id {:?} is not a UUID", shown(&id)))
    })?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let task = fleet.wait_task(id, wait).await?;
    Ok(Json(fleet.full_view(&task)?).into_response())
}

fn task_id(path: Result<Path<String>, PathRejection>) -> ApiResult<TaskId> {
    let Path(id) = path.map_err(bad_path)?;
    TaskId::parse_str(&id)
        .map_err(|_| ApiFailure(StatusCode::BAD_REQUEST, format!("task id {:?} is not a UUID", shown(&id))))
}

async fn cancel_task(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<TaskView>> {
    let id = task_id(path)?;
    let request: CancelRequest = read_json(body).await?;
    let task = fleet.cancel(id, request.force).await?;
    let detail = if request.force { "forced" } else { "" };
    fleet.audit(&actor(peer), "task.cancel", &id.to_string(), detail)?;
    info!(task = %id, force = request.force, status = %task.status, "task cancel");
    Ok(Json(fleet.full_view(&task)?))
}

/// Query of an output page.
#[derive(Deserialize)]
struct OutputQuery {
    after: Option<u32>,
    wait: Option<u64>,
}

async fn task_output(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<OutputQuery>, QueryRejection>,
) -> ApiResult<Json<OutputPage>> {
    let id = task_id(path)?;
    let Query(query) = query.map_err(bad_query)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    Ok(Json(fleet.output_page(id, query.after.unwrap_or(0), wait).await?))
}

async fn list_agents(
    State(fleet): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<AgentList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let filter = AgentFilter::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    Ok(Json(AgentList { agents: fleet.agent_views(&filter)? }))
}

async fn get_agent(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Path(app_id) = path.map_err(bad_path)?;
    let agent = fleet
        .store
        .agent(&app_id)?
        .ok_or_else(|| ApiFailure(StatusCode::NOT_FOUND, format!("unknown agent {:?}", shown(&app_id))))?;
    Ok(Json(fleet.full_agent_view(&agent)?).into_response())
}
