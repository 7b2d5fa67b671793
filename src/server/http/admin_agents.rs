//! Operator routes for who is in the fleet: list and get agents (with their facts), accept or
//! forget an agent, create, list and revoke enrollment tokens, and read the audit record.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::AppState;
use super::admin_common::{ApiFailure, ApiResult, bad_path, bad_query, read_json};
use super::permissions::AdminRoutes;
use crate::protocol::admin::{
    AGENTS_PATH, AUDIT_PATH, AgentFilter, AgentList, AgentView, AuditList, TOKENS_PATH, TokenList,
    TokenRequest, TokenView,
};
use crate::protocol::audit::AuditQuery;
use crate::server::operators::Caller;
use crate::server::store::AgentStatus;

/// The agent, enrollment and audit routes.
pub fn routes() -> AdminRoutes {
    AdminRoutes::new()
        .get(AGENTS_PATH, list_agents)
        .get(&format!("{AGENTS_PATH}/{{id}}"), get_agent)
        .post(&format!("{AGENTS_PATH}/{{id}}/accept"), accept)
        .post(&format!("{AGENTS_PATH}/{{id}}/forget"), forget)
        .get(TOKENS_PATH, list_tokens)
        .post(TOKENS_PATH, create_token)
        .post(&format!("{TOKENS_PATH}/{{id}}/revoke"), revoke_token)
        .get(AUDIT_PATH, audit)
}

async fn list_agents(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<AgentList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let filter = AgentFilter::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    let (agents, next) = app.inventory().agents(&caller, &filter)?;
    Ok(Json(AgentList { agents, next }))
}

async fn get_agent(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    Ok(Json(app.inventory().agent(&caller, &app_id)?))
}

async fn set_status(
    app: AppState,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    status: AgentStatus,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    let agent = app.enrollment().set_status(&caller.actor(), &app_id, status).await?;
    Ok(Json(app.inventory().view(&agent)?))
}

async fn accept(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(app, caller, path, AgentStatus::Accepted).await
}

async fn forget(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(app, caller, path, AgentStatus::Forgotten).await
}

async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    body: Body,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    let request: TokenRequest = read_json(body).await?;
    let token = app.enrollment().create_token(&caller.actor(), request.ttl_secs, request.uses).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

async fn list_tokens(State(app): State<AppState>) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList { tokens: app.enrollment().tokens()? }))
}

async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TokenView>> {
    let Path(id) = path.map_err(bad_path)?;
    Ok(Json(app.enrollment().revoke_token(&caller.actor(), &id).await?))
}

/// The audit record: `?kind=&action=&actor=&since=&after=&limit=` (see [`AuditQuery`]).
async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<AuditList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let query = AuditQuery::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    Ok(Json(app.audit().list(&caller, &query)?))
}
