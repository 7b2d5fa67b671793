//! Operator routes for who operates: `GET /api/v1/whoami` (the caller's name, role and
//! scope), the named operators under `/api/v1/operators` (list, add, revoke, rotate), and an
//! agent's approved labels (`POST /api/v1/agents/{id}/labels`), which scopes match.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::admin_common::{ApiResult, bad_path, read_json};
use super::permissions::AdminRoutes;
use crate::protocol::admin::{AGENTS_PATH, AgentView};
use crate::protocol::operators::{
    LABELS_SUFFIX, LabelsRequest, OPERATORS_PATH, OperatorList, OperatorRequest, OperatorView, WHOAMI_PATH,
    Whoami,
};
use crate::server::operators::Caller;

/// The whoami, operator and label routes.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new()
        .get(WHOAMI_PATH, whoami)
        .get(OPERATORS_PATH, list)
        .post(OPERATORS_PATH, add)
        .post(&format!("{OPERATORS_PATH}/{{name}}/revoke"), revoke)
        .post(&format!("{OPERATORS_PATH}/{{name}}/rotate"), rotate)
        .post(&format!("{AGENTS_PATH}/{{id}}/{LABELS_SUFFIX}"), approve_labels)
}

async fn whoami(caller: Caller) -> Json<Whoami> {
    Json(caller.whoami())
}

async fn list(State(app): State<AppState>) -> ApiResult<Json<OperatorList>> {
    Ok(Json(OperatorList { operators: app.operators().list()? }))
}

async fn add(
    State(app): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<OperatorView>)> {
    let request: OperatorRequest = read_json(body).await?;
    Ok((StatusCode::CREATED, Json(app.operators().add(&caller, request).await?)))
}

async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<OperatorView>> {
    let Path(name) = path.map_err(bad_path)?;
    Ok(Json(app.operators().revoke(&caller, &name).await?))
}

async fn rotate(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<OperatorView>> {
    let Path(name) = path.map_err(bad_path)?;
    Ok(Json(app.operators().rotate(&caller, &name).await?))
}

async fn approve_labels(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Body,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    let request: LabelsRequest = read_json(body).await?;
    let agent = app.enrollment().approve_labels(&caller.actor(), &app_id, &request.labels).await?;
    Ok(Json(app.inventory().view(&agent)?))
}
