//! What a refused request must leave unchanged, and the shapes of a refusal: an envelope with
//! code 1 on the agent endpoints, a JSON `{"error": ...}` on the admin API.

use orange::protocol::admin::{AgentView, AuditEntry, TaskView, TokenView};
use serde_json::Value;

use super::{RawResponse, Server};

/// Everything the server holds that a refused request must not change.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    /// Every task in full.
    pub tasks: Vec<TaskView>,
    /// Every agent, without its liveness fields.
    pub agents: Vec<AgentView>,
    /// The enrollment tokens.
    pub tokens: Vec<TokenView>,
    /// The audit record.
    pub audit: Vec<AuditEntry>,
}

impl Snapshot {
    /// What `server` holds now; agents without their liveness fields, which move with time and
    /// with every accepted request, not with the requests under test.
    pub fn of(server: &Server) -> Snapshot {
        let agents = server
            .agents()
            .into_iter()
            .map(|mut a| {
                a.last_seen.clear();
                a.online = false;
                a
            })
            .collect();
        Snapshot { tasks: server.tasks(), agents, tokens: server.tokens(), audit: server.audit() }
    }
}

/// Asserts the server still runs and holds exactly what it held in `before`.
#[track_caller]
pub fn assert_unchanged(server: &mut Server, before: &Snapshot) {
    server.assert_alive();
    let after = Snapshot::of(server);
    assert_eq!(after.agents, before.agents, "agents changed");
    assert_eq!(after.tasks, before.tasks, "tasks changed");
    assert_eq!(after.tokens, before.tokens, "enrollment tokens changed");
    assert_eq!(after.audit, before.audit, "the audit record changed");
}

/// Asserts an envelope is a refusal (code 1, no data) whose message contains `needle`.
#[track_caller]
pub fn assert_refused(envelope: &Value, needle: &str) {
    assert_eq!(envelope["code"], 1, "expected a refusal: {envelope}");
    assert!(envelope["data"].is_null(), "a refusal carries no data: {envelope}");
    let message = envelope["message"].as_str().unwrap_or_else(|| panic!("no message: {envelope}"));
    assert!(message.contains(needle), "message {message:?} lacks {needle:?}");
}

/// Asserts an admin API error: the status, JSON content, exactly `{"error": text}` with `needle`.
#[track_caller]
pub fn assert_api_error(response: &RawResponse, status: u16, needle: &str) {
    assert_eq!(response.status, status, "body {:?}", response.text());
    assert!(
        response.header("content-type").is_some_and(|v| v.starts_with("application/json")),
        "an API error must be JSON: {response:?}"
    );
    let body = response.json();
    let object = body.as_object().unwrap_or_else(|| panic!("not an object: {body}"));
    assert_eq!(object.len(), 1, "only the error field: {body}");
    let error = object["error"].as_str().unwrap_or_else(|| panic!("error is not text: {body}"));
    assert!(error.contains(needle), "error {error:?} lacks {needle:?}");
}
