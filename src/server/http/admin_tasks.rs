//! Operator routes for tasks under `/api/v1/tasks`: send, list, get (with a wait for the end),
//! cancel, and read output page by page.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tracing::info;

use super::AppState;
use super::admin_common::{
    ApiFailure, ApiResult, bad_path, bad_query, parse_id, path_id, payload_detail, read_json,
    read_json_within, refused_in_audit,
};
use super::permissions::AdminRoutes;
use crate::protocol::admin::{
    CancelRequest, EnqueueReply, EnqueueRequest, MAX_WAIT_SECS, OutputPage, TASKS_PATH, TaskList, TaskView,
};
use crate::protocol::limits::MAX_ENQUEUE_BODY;
use crate::protocol::task_query::TaskQuery;
use crate::server::operators::Caller;
use crate::server::store::TaskRecord;

/// The task routes.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new()
        .get(TASKS_PATH, list_tasks)
        .post(TASKS_PATH, enqueue)
        .get(&format!("{TASKS_PATH}/{{id}}"), get_task)
        .post(&format!("{TASKS_PATH}/{{id}}/cancel"), cancel_task)
        .get(&format!("{TASKS_PATH}/{{id}}/output"), task_output)
}

async fn enqueue(
    State(app): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<EnqueueReply>)> {
    // An enqueue may carry a task's stdin, so it may be larger than other requests.
    let request: EnqueueRequest = read_json_within(body, MAX_ENQUEUE_BODY).await?;
    let detail = send_detail(&request);
    let tasks = app
        .tasks()
        .enqueue(&caller, request)
        .await
        .map_err(|refused| refused_in_audit(&app, &caller, "task.send", refused))?;
    app.audit().record(&caller.actor(), "task.send", &audit_target(&tasks), &detail)?;
    info!(count = tasks.len(), task_type = %tasks.first().map_or("", |t| t.task_type.as_str()), "tasks enqueued");
    Ok((StatusCode::CREATED, Json(EnqueueReply { tasks: app.task_views().list(&tasks)? })))
}

/// What the audit record says of an enqueue: the type, the command or payload (its head), the
/// names of the environment variables (not their values), the working directory, the user and
/// the size of the stdin.
fn send_detail(request: &EnqueueRequest) -> String {
    let mut detail =
        format!("type {}, {}", request.task_type, payload_detail(&request.task_type, &request.payload));
    if !request.env.is_empty() {
        let names: Vec<&str> = request.env.keys().map(String::as_str).collect();
        detail.push_str(&format!(", env {}", names.join(" ")));
    }
    if let Some(cwd) = &request.cwd {
        detail.push_str(&format!(", cwd {cwd}"));
    }
    if let Some(user) = &request.user {
        detail.push_str(&format!(", user {user}"));
    }
    if !request.stdin.is_empty() {
        detail.push_str(&format!(", stdin {} bytes", request.stdin.len()));
    }
    detail
}

/// The tasks of an enqueue as the audit record names them.
fn audit_target(tasks: &[TaskRecord]) -> String {
    match tasks {
        [one] => one.id.to_string(),
        many => format!(
            "{} tasks, first {}",
            many.len(),
            many.first().map_or(String::new(), |t| t.id.to_string())
        ),
    }
}

/// A page of tasks: `?app_id=&status=&since=&after=&limit=` (see [`TaskQuery`]).
async fn list_tasks(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<TaskList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let query = TaskQuery::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    let page = app.tasks().page(&caller, &query)?;
    Ok(Json(TaskList {
        tasks: app.task_views().list(&page.tasks)?,
        next: page.next.map(|id| id.to_string()),
    }))
}

/// Query of a task get.
#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<u64>,
}

async fn get_task(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> ApiResult<Json<TaskView>> {
    let Path(id) = path.map_err(bad_path)?;
    let Query(query) = query.map_err(bad_query)?;
    let id = parse_id(&id, "task")?;
    app.tasks().visible(&caller, id)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let task = app.tasks().wait(id, wait).await?;
    Ok(Json(app.task_views().full(&task)?))
}

async fn cancel_task(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<TaskView>> {
    let id = path_id(path, "task")?;
    let request: CancelRequest = read_json(body).await?;
    app.tasks()
        .visible(&caller, id)
        .map_err(|refused| refused_in_audit(&app, &caller, "task.cancel", refused))?;
    let task = app.tasks().cancel(id, request.force).await?;
    let detail = if request.force { "forced" } else { "" };
    app.audit().record(&caller.actor(), "task.cancel", &id.to_string(), detail)?;
    info!(task = %id, force = request.force, status = %task.status, "task cancel");
    Ok(Json(app.task_views().full(&task)?))
}

/// Query of an output page.
#[derive(Deserialize)]
struct OutputQuery {
    after: Option<u32>,
    wait: Option<u64>,
}

async fn task_output(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<OutputQuery>, QueryRejection>,
) -> ApiResult<Json<OutputPage>> {
    let id = path_id(path, "task")?;
    app.tasks().visible(&caller, id)?;
    let Query(query) = query.map_err(bad_query)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    Ok(Json(app.tasks().output_page(id, query.after.unwrap_or(0), wait).await?))
}
