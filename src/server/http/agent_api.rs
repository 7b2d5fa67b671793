//! The four agent endpoints of the original protocol, and orange's own (output, facts, goodbye;
//! the file chunks are in `agent_files.rs`). Every answer is HTTP 200 with the JSON
//! envelope; errors carry code 1 and a specific message, except on getTask, where a transient
//! server fault answers code 2 so that an original client (which exits on code 1) keeps polling.
//! The body is read under a size limit and its signature verified before it is parsed. Refusals
//! are logged through the refusal log, which sums up repeated ones.

use std::net::IpAddr;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json};
use chrono::Utc;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use super::AppState;
use super::agent_auth::{Refusal, RefusalKind, Registration, agent_call, failed_attempt, registration};
use super::busy::BusyPermit;
use super::client_addr::ClientAddr;
use super::refusal_log::{self, Reason};
use crate::protocol::busy::HEADER_RETRY_AFTER;
use crate::protocol::facts::{FACTS_PATH, HostFacts};
use crate::protocol::features::{AGENT_BATCH, HEADER_FEATURES, parse_header};
use crate::protocol::wire::{
    self, CODE_ERROR, CODE_NO_TASK, CODE_OK, Envelope, MAX_REPORTS_PER_CALL, MAX_TASKS_PER_POLL, OutputAck,
    OutputChunk, PollControl, RegisterReply, ReportBatch, ReportRequest, ReportResult, ReportResults, shown,
};
use crate::server::enroll::{RegisterError, not_proven};
use crate::server::error::ServiceError;
use crate::server::failures::TARPIT;
use crate::server::polling::PollResult;
use crate::server::store::{AgentRecord, AgentStatus};
use crate::server::views::wire_task;

/// Routes of the agent protocol.
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new()
        .route(wire::REGISTER_PATH, post(register))
        .route(wire::PING_PATH, post(ping))
        .route(wire::GET_TASK_PATH, post(get_task))
        .route(wire::REPORT_TASK_PATH, post(report_task))
        .route(wire::REPORT_TASKS_PATH, post(report_tasks))
        .route(wire::OUTPUT_PATH, post(output))
        .route(FACTS_PATH, post(facts))
        .route(wire::GOODBYE_PATH, post(goodbye))
        .merge(super::agent_files::routes())
        .method_not_allowed_fallback(|| async {
            (axum::http::StatusCode::METHOD_NOT_ALLOWED, refuse("agent endpoints accept only POST"))
        })
}

pub(super) fn reply<T: Serialize>(envelope: Envelope<T>) -> Response {
    Json(envelope).into_response()
}

fn refuse(message: impl Into<String>) -> Response {
    reply(Envelope::<()>::empty(CODE_ERROR, message))
}

async fn register(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = peer.ip();
    let Registration { request, credential, standing } =
        match registration(&app, source, &headers, body).await {
            Ok(ok) => ok,
            Err(refusal) => return answer_refusal("register", source, refusal, &place).await,
        };
    match app.enrollment().register(request, credential).await {
        Ok(agent) => {
            app.guard().record_success(source, &agent.app_id, Utc::now().timestamp());
            info!(agent = %agent.app_id, version = ?agent.version, status = agent.status.as_str(), "agent registered");
            reply(Envelope::ok("registration successful", register_reply(&agent)))
        }
        Err(RegisterError::NotProven(app_id)) => {
            let refusal = failed_attempt(&app, source, &app_id, standing, not_proven(&app_id));
            answer_refusal("register", source, refusal, &place).await
        }
        Err(RegisterError::Service(ServiceError::Store(e))) => {
            unavailable("register", source, format!("server error, retry later: {e}"))
        }
        Err(RegisterError::Service(e)) => refused("register", source, "bad request", e.to_string()),
    }
}

fn register_reply(agent: &AgentRecord) -> RegisterReply {
    RegisterReply {
        app_id: agent.app_id.clone(),
        secret: "***".into(),
        register_time: agent.registered_at_ms / 1000,
        last_ping_time: agent.last_seen_ms / 1000,
        do_status: "registered".into(),
        processed_task_count: agent.processed_task_count,
    }
}

fn refused(endpoint: &str, source: IpAddr, reason: Reason, message: String) -> Response {
    refusal_log::refused(source, endpoint, reason, &message);
    refuse(message)
}

/// A refusal to retry later: HTTP 503 with the envelope, which clients treat as "try again"
/// (orange agents retry; they never drop work on it).
fn unavailable(endpoint: &str, source: IpAddr, message: String) -> Response {
    refusal_log::refused(source, endpoint, "deferred", &message);
    (axum::http::StatusCode::SERVICE_UNAVAILABLE, refuse(message)).into_response()
}

/// Answers a refusal as its kind says (not for getTask, which never answers code 1 for a
/// passing reason); a failure over a limit waits [`TARPIT`] first, without its place among the
/// requests being handled.
async fn answer_refusal(endpoint: &str, source: IpAddr, refusal: Refusal, place: &BusyPermit) -> Response {
    if refusal.tarpit {
        place.release();
        tokio::time::sleep(TARPIT).await;
    }
    refusal_log::refused(source, endpoint, refusal.reason, &refusal.message);
    let mut response = match refusal.kind {
        RefusalKind::Transient => {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, refuse(refusal.message)).into_response()
        }
        RefusalKind::Final | RefusalKind::Replay => refuse(refusal.message),
    };
    if let Some(secs) = refusal.retry_after {
        response.headers_mut().insert(HEADER_RETRY_AFTER, secs.into());
    }
    response
}

async fn ping(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = peer.ip();
    match agent_call(&app, source, wire::PING_PATH, &headers, body).await {
        Ok((agent, _)) => {
            debug!(agent = %agent.app_id, "ping");
            if let Err(e) = app.polling().pong().await {
                return unavailable("ping", source, format!("server error, retry later: {e}"));
            }
            reply(Envelope::ok("pong", "pong"))
        }
        Err(refusal) => answer_refusal("ping", source, refusal, &place).await,
    }
}

/// An orange agent stopping cleanly: offline from now on, until it is heard from again.
async fn goodbye(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = peer.ip();
    match agent_call(&app, source, wire::GOODBYE_PATH, &headers, body).await {
        Ok((agent, _)) => {
            if let Err(e) = app.polling().goodbye(&agent.app_id).await {
                return unavailable("goodbye", source, format!("server error, retry later: {e}"));
            }
            info!(agent = %agent.app_id, "agent said goodbye");
            reply(Envelope::<()>::empty(wire::CODE_OK, "goodbye"))
        }
        Err(refusal) => answer_refusal("goodbye", source, refusal, &place).await,
    }
}

async fn get_task(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let source = peer.ip();
    let agent = match agent_call(&app, source, wire::GET_TASK_PATH, &headers, body).await {
        Ok((agent, _)) => agent,
        // A replayed or rate-limited getTask gets nothing; code 2 keeps an original client
        // (which exits on code 1) polling.
        Err(refusal) if refusal.kind != RefusalKind::Final => {
            refusal_log::refused(source, "getTask", refusal.reason, &refusal.message);
            return reply(Envelope::<()>::empty(CODE_NO_TASK, refusal.message));
        }
        Err(refusal) => return answer_refusal("getTask", source, refusal, &place).await,
    };
    // A parked poll is not load: its place goes back before it parks.
    place.release();
    if agent.status == AgentStatus::Pending {
        app.polling().wait_for_acceptance(&agent.app_id).await;
        let message = format!(
            "pending approval: an operator must run `orange agents accept {}` before this agent gets tasks",
            agent.app_id
        );
        return reply(Envelope::<()>::empty(CODE_NO_TASK, message));
    }
    let (capacity, features) = match capacity(&headers).and_then(|c| Ok((c, features(&headers)?))) {
        Ok(found) => found,
        Err(message) => return refused("getTask", source, "bad request", message),
    };
    if let Err(e) = app.inventory().note_features(&agent.app_id, &features) {
        warn!(agent = %agent.app_id, error = %e, "cannot store the agent's features");
    }
    let most = tasks_per_poll(capacity, &features);
    match app.polling().next_task(&agent.app_id, capacity, &features, most).await {
        Ok(PollResult::Tasks(tasks)) => {
            for task in &tasks {
                debug!(agent = %agent.app_id, task = %task.id, task_type = %task.task_type, "task delivered");
            }
            let Some((first, more)) = tasks.split_first() else {
                return reply(Envelope::<()>::empty(
                    CODE_NO_TASK,
                    "timeout reached without receiving a task",
                ));
            };
            let mut task = wire_task(first);
            task.more = more.iter().map(wire_task).collect();
            reply(Envelope::ok("task fetched", task))
        }
        Ok(PollResult::Cancels(ids)) => {
            debug!(agent = %agent.app_id, count = ids.len(), "cancels told");
            let control = PollControl { cancel: ids.iter().map(ToString::to_string).collect() };
            reply(Envelope {
                code: CODE_NO_TASK,
                message: "cancel running tasks".into(),
                data: Some(control),
            })
        }
        Ok(PollResult::Empty) => {
            reply(Envelope::<()>::empty(CODE_NO_TASK, "timeout reached without receiving a task"))
        }
        Err(e) => {
            // Code 2, not 1: the original client exits on code 1, and this fault is ours.
            warn!(agent = %agent.app_id, error = %e, "getTask failed; answering no task");
            reply(Envelope::<()>::empty(CODE_NO_TASK, format!("no task: server error: {e}")))
        }
    }
}

/// How many tasks one getTask may hand out: up to the announced capacity (at most
/// [`MAX_TASKS_PER_POLL`]) for an agent that announced the batch feature, else one.
fn tasks_per_poll(capacity: Option<usize>, features: &[String]) -> usize {
    match capacity {
        Some(free) if features.iter().any(|f| f == AGENT_BATCH) => free.clamp(1, MAX_TASKS_PER_POLL),
        _ => 1,
    }
}

/// The capacity an orange agent announces on getTask; `None` for an original client.
fn capacity(headers: &HeaderMap) -> Result<Option<usize>, String> {
    let Some(value) = headers.get(wire::HEADER_CAPACITY) else { return Ok(None) };
    let text = value.to_str().unwrap_or("");
    text.parse::<u16>()
        .map(|n| Some(usize::from(n)))
        .map_err(|_| format!("{} {:?} is not a number from 0 to 65535", wire::HEADER_CAPACITY, shown(text)))
}

/// The task features an agent announces on getTask; none when the header is absent (original
/// clients, older orange agents).
fn features(headers: &HeaderMap) -> Result<Vec<String>, String> {
    let Some(value) = headers.get(HEADER_FEATURES) else { return Ok(Vec::new()) };
    let text = value.to_str().map_err(|_| format!("{HEADER_FEATURES} is not plain text"))?;
    parse_header(text).map_err(|e| format!("{HEADER_FEATURES}: {e}"))
}

/// A signed call to `path` by an agent, its JSON body parsed as `T`; or the answer refusing it
/// (logged under `endpoint`).
pub(super) async fn signed_json<T: DeserializeOwned>(
    app: &AppState,
    source: IpAddr,
    place: &BusyPermit,
    (endpoint, path): (&str, &str),
    headers: &HeaderMap,
    body: Body,
) -> Result<(AgentRecord, T), Response> {
    let (agent, body) = match agent_call(app, source, path, headers, body).await {
        Ok(ok) => ok,
        Err(refusal) => return Err(answer_refusal(endpoint, source, refusal, place).await),
    };
    match serde_json::from_slice(&body) {
        Ok(parsed) => Ok((agent, parsed)),
        Err(e) => Err(refused(endpoint, source, "bad request", format!("malformed JSON: {e}"))),
    }
}

/// The answer to a service's refusal: a store failure is deferred (the agent retries), any
/// other error refused with its message.
pub(super) fn service_failure(endpoint: &str, source: IpAddr, error: ServiceError) -> Response {
    match error {
        ServiceError::Store(e) => unavailable(endpoint, source, format!("server error, retry later: {e}")),
        e => refused(endpoint, source, "bad request", e.to_string()),
    }
}

async fn output(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("output", wire::OUTPUT_PATH));
    let (agent, chunk): (_, OutputChunk) = match signed_json(&app, source, &place, call, &headers, body).await
    {
        Ok(ok) => ok,
        Err(answer) => return answer,
    };
    match app.reports().output(&agent.app_id, chunk).await {
        Ok(ack) => reply(Envelope::ok("output stored", OutputAck { cancel: ack.cancel })),
        Err(e) => service_failure(call.0, source, e),
    }
}

async fn report_task(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("reportTask", wire::REPORT_TASK_PATH));
    let (agent, report): (_, ReportRequest) =
        match signed_json(&app, source, &place, call, &headers, body).await {
            Ok(ok) => ok,
            Err(answer) => return answer,
        };
    match app.reports().report(&agent.app_id, report).await {
        Ok(task) => {
            debug!(agent = %agent.app_id, task = %task.id, status = %task.status, "task reported");
            reply(Envelope::<()>::empty(wire::CODE_OK, "task status updated successfully"))
        }
        Err(e) => service_failure(call.0, source, e),
    }
}

/// Several reports in one call (orange agents announcing the batch feature): each applied as
/// `reportTask` would, all made durable by one sync, and answered one result each. A failure
/// of the store answers the whole call "retry later" (a repeated report changes nothing).
async fn report_tasks(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("reportTasks", wire::REPORT_TASKS_PATH));
    let (agent, batch): (_, ReportBatch) = match signed_json(&app, source, &place, call, &headers, body).await
    {
        Ok(ok) => ok,
        Err(answer) => return answer,
    };
    if batch.reports.len() > MAX_REPORTS_PER_CALL {
        let message =
            format!("{} reports in one call; the limit is {MAX_REPORTS_PER_CALL}", batch.reports.len());
        return refused(call.0, source, "bad request", message);
    }
    let results = match app.reports().report_many(&agent.app_id, batch.reports).await {
        Ok(results) => results,
        Err(e) => return service_failure(call.0, source, e),
    };
    let mut answers = Vec::with_capacity(results.len());
    for result in results {
        answers.push(match result {
            Ok(task) => {
                debug!(agent = %agent.app_id, task = %task.id, status = %task.status, "task reported");
                ReportResult { code: CODE_OK, message: "task status updated successfully".into() }
            }
            Err(ServiceError::Store(e)) => {
                return unavailable(call.0, source, format!("server error, retry later: {e}"));
            }
            Err(e) => {
                refusal_log::refused(source, call.0, "bad request", &e.to_string());
                ReportResult { code: CODE_ERROR, message: e.to_string() }
            }
        });
    }
    reply(Envelope::ok("reports taken", ReportResults { results: answers }))
}

async fn facts(
    State(app): State<AppState>,
    ClientAddr(peer): ClientAddr,
    Extension(place): Extension<BusyPermit>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (source, call) = (peer.ip(), ("facts", FACTS_PATH));
    let (agent, facts): (_, HostFacts) = match signed_json(&app, source, &place, call, &headers, body).await {
        Ok(ok) => ok,
        Err(answer) => return answer,
    };
    match app.inventory().update_facts(&agent.app_id, facts).await {
        Ok(()) => {
            debug!(agent = %agent.app_id, "facts updated");
            reply(Envelope::<()>::empty(wire::CODE_OK, "facts stored"))
        }
        Err(e) => service_failure(call.0, source, e),
    }
}
