//! Operator routes for who is in the fleet: accept or forget an agent, create, list and revoke
//! enrollment tokens, and read the audit record. Mounted under the admin token by `admin_api`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::AppState;
use super::admin_api::{ApiResult, bad_path, bad_query, read_json};
use crate::protocol::admin::{
    AGENTS_PATH, AUDIT_PATH, AgentView, AuditList, MAX_LIST_LIMIT, TOKENS_PATH, TokenList, TokenRequest,
    TokenView,
};
use crate::server::store::AgentStatus;

/// The enrollment and audit routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(&format!("{AGENTS_PATH}/{{id}}/accept"), post(accept))
        .route(&format!("{AGENTS_PATH}/{{id}}/forget"), post(forget))
        .route(TOKENS_PATH, get(list_tokens).post(create_token))
        .route(&format!("{TOKENS_PATH}/{{id}}/revoke"), post(revoke_token))
        .route(AUDIT_PATH, get(audit))
}

/// Who an operator request comes from, for the audit record.
pub fn actor(peer: SocketAddr) -> String {
    format!("admin@{}", peer.ip())
}

async fn set_status(
    fleet: AppState,
    peer: SocketAddr,
    path: Result<Path<String>, PathRejection>,
    status: AgentStatus,
) -> ApiResult<Json<AgentView>> {
    let Path(app_id) = path.map_err(bad_path)?;
    let agent = fleet.set_status(&actor(peer), &app_id, status).await?;
    Ok(Json(fleet.full_agent_view(&agent)?))
}

async fn accept(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(fleet, peer, path, AgentStatus::Accepted).await
}

async fn forget(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<AgentView>> {
    set_status(fleet, peer, path, AgentStatus::Forgotten).await
}

async fn create_token(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> ApiResult<(StatusCode, Json<TokenView>)> {
    let request: TokenRequest = read_json(body).await?;
    let token = fleet.create_token(&actor(peer), request.ttl_secs, request.uses).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

async fn list_tokens(State(fleet): State<AppState>) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList { tokens: fleet.token_views()? }))
}

async fn revoke_token(
    State(fleet): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<TokenView>> {
    let Path(id) = path.map_err(bad_path)?;
    Ok(Json(fleet.revoke_token(&actor(peer), &id).await?))
}

/// Query of the audit record.
#[derive(Deserialize)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(
    State(fleet): State<AppState>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult<Json<AuditList>> {
    let Query(query) = query.map_err(bad_query)?;
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_LIST_LIMIT);
    Ok(Json(AuditList { entries: fleet.audit_entries(limit)? }))
}
