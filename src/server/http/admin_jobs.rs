//! Operator routes for jobs under `/api/v1/jobs`: create, dry run, list, get (with a wait for
//! the next version), results, groups, pause, resume, cancel. Mounted under the admin token by
//! `admin_api`; handlers parse, call the job operations of `Fleet`, and map errors.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tracing::info;

use super::AppState;
use super::admin_api::{ApiFailure, ApiResult, bad_path, bad_query, read_json};
use super::admin_enroll::actor;
use crate::protocol::TaskId;
use crate::protocol::admin::{CancelRequest, MAX_LIST_LIMIT, MAX_WAIT_SECS};
use crate::protocol::jobs::{
    JOBS_DRY_RUN_PATH, JOBS_PATH, JobGroups, JobList, JobRequest, JobResults, JobView, MAX_RESULTS_PAGE,
    TargetList,
};
use crate::protocol::wire::shown;
use crate::server::jobs::job_view;

/// Jobs listed when no limit is given.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The job routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(JOBS_PATH, get(list_jobs).post(create_job))
        .route(JOBS_DRY_RUN_PATH, post(dry_run))
        .route(&format!("{JOBS_PATH}/{{id}}"), get(get_job))
        .route(&format!("{JOBS_PATH}/{{id}}/results"), get(results))
        .route(&format!("{JOBS_PATH}/{{id}}/groups"), get(groups))
        .route(&format!("{JOBS_PATH}/{{id}}/pause"), post(pause))
        .route(&format!("{JOBS_PATH}/{{id}}/resume"), post(resume))
        .route(&format!("{JOBS_PATH}/{{id}}/cancel"), post(cancel))
}

fn job_id(path: Result<Path<String>, PathRejection>) -> ApiResult<TaskId> {
    let Path(id) = path.map_err(bad_path)?;
    TaskId::parse_str(&id)
        .map_err(|_| ApiFailure(StatusCode::BAD_REQUEST, format!("job id {:?} is not a UUID", shown(&id))))
}

async fn create_job(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    let request: JobRequest = read_json(body).await?;
    let detail = format!(
        "type {}, payload {} bytes, max_concurrency {}, max_errors {}",
        request.task_type,
        request.payload.len(),
        request.max_concurrency.map_or("none".into(), |l| l.to_string()),
        request.max_errors.map_or("none".into(), |l| l.to_string()),
    );
    let job = fleet.create_job(request).await?;
    fleet.audit(
        &actor(peer),
        "job.send",
        &job.id.to_string(),
        &format!("{} targets, {detail}", job.targets),
    )?;
    Ok((StatusCode::CREATED, Json(job_view(&job))))
}

async fn dry_run(State(fleet): State<AppState>, body: Body) -> ApiResult<Json<TargetList>> {
    let request: JobRequest = read_json(body).await?;
    Ok(Json(TargetList { app_ids: fleet.resolve_job(&request)? }))
}

/// Query of a job list.
#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_jobs(
    State(fleet): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<JobList>> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).clamp(1, MAX_LIST_LIMIT);
    Ok(Json(JobList { jobs: fleet.list_jobs(limit)? }))
}

/// Query of a job get.
#[derive(Deserialize)]
struct JobQuery {
    after_version: Option<u64>,
    wait: Option<u64>,
}

async fn get_job(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<JobQuery>, QueryRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    let Query(query) = query.map_err(bad_query)?;
    let wait = Duration::from_secs(query.wait.unwrap_or(0).min(MAX_WAIT_SECS));
    let job = fleet.wait_job(id, query.after_version, wait).await?;
    Ok(Json(job_view(&job)))
}

/// Query of a results page.
#[derive(Deserialize)]
struct ResultsQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn results(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ResultsQuery>, QueryRejection>,
) -> ApiResult<Json<JobResults>> {
    let id = job_id(path)?;
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(MAX_RESULTS_PAGE);
    Ok(Json(fleet.job_results(id, query.after.as_deref(), limit)?))
}

async fn groups(
    State(fleet): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobGroups>> {
    Ok(Json(fleet.job_groups(job_id(path)?)?))
}

async fn pause(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    let job = fleet.pause_job(id).await?;
    fleet.audit(&actor(peer), "job.pause", &id.to_string(), "")?;
    info!(job = %id, "job paused");
    Ok(Json(job_view(&job)))
}

async fn resume(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    let job = fleet.resume_job(id).await?;
    fleet.audit(&actor(peer), "job.resume", &id.to_string(), "")?;
    info!(job = %id, "job resumed");
    Ok(Json(job_view(&job)))
}

async fn cancel(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<JobView>> {
    let id = job_id(path)?;
    let request: CancelRequest = read_json(body).await?;
    let job = fleet.cancel_job(id, request.force).await?;
    fleet.audit(&actor(peer), "job.cancel", &id.to_string(), if request.force { "forced" } else { "" })?;
    Ok(Json(job_view(&job)))
}
