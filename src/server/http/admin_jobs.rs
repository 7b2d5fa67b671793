//! Operator routes for jobs under `/api/v1/jobs`: create, dry run, list, get (with a wait for
//! the next version), results, groups, pause, resume, cancel.

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
    ApiResult, bad_query, path_id, payload_detail, read_json, read_json_within, refused_in_audit,
};
use super::permissions::AdminRoutes;
use crate::protocol::TaskId;
use crate::protocol::admin::{CancelRequest, MAX_LIST_LIMIT, MAX_WAIT_SECS};
use crate::protocol::jobs::{
    JOBS_DRY_RUN_PATH, JOBS_PATH, JobGroups, JobList, JobRequest, JobResults, JobView, MAX_RESULTS_PAGE,
    RetryRequest, TargetList,
};
use crate::protocol::limits::MAX_ENQUEUE_BODY;
use crate::server::operators::Caller;
use crate::server::views::job_view;

/// Jobs listed when no limit is given.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The job routes.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new()
        .get(JOBS_PATH, list_jobs)
        .post(JOBS_PATH, create_job)
        .post(JOBS_DRY_RUN_PATH, dry_run)
        .get(&format!("{JOBS_PATH}/{{id}}"), get_job)
        .get(&format!("{JOBS_PATH}/{{id}}/results"), results)
        .get(&format!("{JOBS_PATH}/{{id}}/groups"), groups)
        .post(&format!("{JOBS_PATH}/{{id}}/pause"), pause)
        .post(&format!("{JOBS_PATH}/{{id}}/resume"), resume)
        .post(&format!("{JOBS_PATH}/{{id}}/cancel"), cancel)
        .post(&format!("{JOBS_PATH}/{{id}}/retry"), retry)
}

fn job_id(path: Result<Path<String>, PathRejection>) -> ApiResult<TaskId> {
    path_id(path, "job")
}

async fn create_job(
    State(app): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    // A job may carry the stdin of its tasks, so it may be larger than other requests.
    let request: JobRequest = read_json_within(body, MAX_ENQUEUE_BODY).await?;
    let mut detail = format!(
        "type {}, {}, max_concurrency {}, max_errors {}",
        request.task_type,
        payload_detail(&request.task_type, &request.payload),
        request.max_concurrency.map_or("none".into(), |l| l.to_string()),
        request.max_errors.map_or("none".into(), |l| l.to_string()),
    );
    if let Some(user) = &request.user {
        detail.push_str(&format!(", user {user}"));
    }
    if !request.stdin.is_empty() {
        detail.push_str(&format!(", stdin {} bytes", request.stdin.len()));
    }
    let job = app
        .jobs()
        .create(&caller, request)
        .await
        .map_err(|refused| refused_in_audit(&app, &caller, "job.send", refused))?;
    app.audit().record(
        &caller.actor(),
        "job.send",
        &job.id.to_string(),
        &format!("{} targets, {detail}", job.targets),
    )?;
    Ok((StatusCode::CREATED, Json(job_view(&job))))
}

async fn dry_run(State(app): State<AppState>, caller: Caller, body: Body) -> ApiResult<Json<TargetList>> {
    let request: JobRequest = read_json_within(body, MAX_ENQUEUE_BODY).await?;
    Ok(Json(app.jobs().dry_run(&caller, &request)?))
}

/// Query of a job list.
#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_jobs(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
    Ok(Json(JobList { jobs: app.jobs().list(&caller, limit)? }))
}

/// Query of a job get.
#[derive(Deserialize)]
struct JobQuery {
    after_version: Option<u64>,
    wait: Option<u64>,
}

async fn get_job(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    app.jobs().visible(&caller, id)?;
    let Query(query) = query.map_err(bad_query)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let job = app.jobs().wait(id, query.after_version, wait).await?;
    Ok(Json(job_view(&job)))
}

/// Query of a results page.
#[derive(Deserialize)]
struct ResultsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn results(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> ApiResult<Json<JobResults>> {
    let id = job_id(path)?;
    app.jobs().visible(&caller, id)?;
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(MAX_RESULTS_PAGE);
    Ok(Json(app.job_outcomes().page(id, query.after.as_deref(), limit)?))
}

async fn groups(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobGroups>> {
    let id = job_id(path)?;
    app.jobs().visible(&caller, id)?;
    Ok(Json(app.job_outcomes().groups(id)?))
}

async fn pause(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    app.jobs()
        .visible(&caller, id)
        .map_err(|refused| refused_in_audit(&app, &caller, "job.pause", refused))?;
    let job = app.jobs().pause(id).await?;
    app.audit().record(&caller.actor(), "job.pause", &id.to_string(), "")?;
    info!(job = %id, "job paused");
    Ok(Json(job_view(&job)))
}

async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    app.jobs()
        .visible(&caller, id)
        .map_err(|refused| refused_in_audit(&app, &caller, "job.resume", refused))?;
    let job = app.jobs().resume(id).await?;
    app.audit().record(&caller.actor(), "job.resume", &id.to_string(), "")?;
    info!(job = %id, "job resumed");
    Ok(Json(job_view(&job)))
}

async fn retry(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let id = job_id(path)?;
    let request: RetryRequest = read_json(body).await?;
    let job = app
        .jobs()
        .retry(&caller, id, request.failed)
        .await
        .map_err(|refused| refused_in_audit(&app, &caller, "job.retry", refused))?;
    let detail = format!(
        "as job {}, {} hosts{}",
        job.id,
        job.targets,
        if request.failed { ", failed only" } else { "" }
    );
    app.audit().record(&caller.actor(), "job.retry", &id.to_string(), &detail)?;
    Ok((StatusCode::CREATED, Json(job_view(&job))))
}

async fn cancel(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    let request: CancelRequest = read_json(body).await?;
    app.jobs()
        .visible(&caller, id)
        .map_err(|refused| refused_in_audit(&app, &caller, "job.cancel", refused))?;
    let job = app.jobs().cancel(id, request.force).await?;
    app.audit().record(
        &caller.actor(),
        "job.cancel",
        &id.to_string(),
        if request.force { "forced" } else { "" },
    )?;
    Ok(Json(job_view(&job)))
}
