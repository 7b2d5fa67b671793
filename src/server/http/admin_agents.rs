//! Operator routes for who is in the fleet: list and get agents (with their facts), accept or
//! forget an agent, create, list and revoke enrollment tokens, and read the audit record.

use std::net::SocketAddr;

use super::client_addr::ClientAddr;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};

use super::AppState;
use super::admin_common::{ApiFailure, ApiResult, actor, bad_path, bad_query, read_json};
use crate::protocol::admin::{
    AGENTS_PATH, AUDIT_PATH, AgentFilter, AgentList, AgentView, AuditList, TOKENS_PATH, TokenList,
    TokenRequest, TokenView,
};
use crate::protocol::audit::AuditQuery;
use crate::server::store::AgentStatus;

/// The agent, enrollment and audit routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(AGENTS_PATH, get(list_agents))
        .route(&format!("{AGENTS_PATH}/{{id}}"), get(get_agent))
        .route(&format!("{AGENTS_PATH}/{{id}}/accept"), post(accept))
        .route(&format!("{AGENTS_PATH}/{{id}}/forget"), post(forget))
        .route(TOKENS_PATH, get(list_tokens).post(create_token))
        .route(&format!("{TOKENS_PATH}/{{id}}/revoke"), post(revoke_token))
        .route(AUDIT_PATH, get(audit))
}

async fn list_agents(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<AgentList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let filter = AgentFilter::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    let (agents, next) = app.inventory().agents(&filter)?;
    Ok(Json(AgentList { agents, next }))
}

async fn get_agent(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    Ok(Json(app.inventory().agent(&app_id)?))
}

async fn set_status(
    app: AppState,
    peer: SocketAddr,
    path: Result<Path<String>, PathRejection>,
    status: AgentStatus,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    let agent = app.enrollment().set_status(&actor(peer), &app_id, status).await?;
    Ok(Json(app.inventory().view(&agent)?))
}

async fn accept(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(app, peer, path, AgentStatus::Accepted).await
}

async fn forget(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(app, peer, path, AgentStatus::Forgotten).await
}

async fn create_token(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    body: Body,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    let request: TokenRequest = read_json(body).await?;
    let token = app.enrollment().create_token(&actor(peer), request.ttl_secs, request.uses).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

async fn list_tokens(State(app): State<AppState>) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList { tokens: app.enrollment().tokens()? }))
}

async fn revoke_token(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TokenView>> {
    let Path(id) = path.map_err(bad_path)?;
    Ok(Json(app.enrollment().revoke_token(&actor(peer), &id).await?))
}

/// The audit record: `?kind=&action=&actor=&since=&after=&limit=` (see [`AuditQuery`]).
async fn audit(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<AuditList>> {
    let Query(pairs) = query.map_err(bad_query)?;
    let query = AuditQuery::from_pairs(&pairs).map_err(|m| ApiFailure(StatusCode::BAD_REQUEST, m))?;
    Ok(Json(app.audit().list(&query)?))
}
