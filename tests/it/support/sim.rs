//! Simulated agents, whose every call the test makes itself through the crate's client, and
//! what task histories say about when tasks ran.

use orange::client::{AgentClient, Enrollment};
use orange::protocol::RegisterRequest;
use orange::protocol::admin::{EnqueueReply, TaskView};

use super::{BASE_SECRET, Server};

/// Secret of the simulated agents that [`register_sim`] registers.
pub const SIM_SECRET: &str = "sim-secret";

/// Registers `request` at `server` with the public enrollment key and returns its signed
/// client: a simulated agent whose every call the test makes itself.
pub fn register_as(server: &Server, request: &RegisterRequest) -> AgentClient {
    let client = AgentClient::new(&server.url, &request.app_id, &request.secret);
    client
        .register(request, &Enrollment::Key(BASE_SECRET.into()))
        .unwrap_or_else(|e| panic!("register {}: {e}", request.app_id));
    client
}

/// Registers `app_id` with [`SIM_SECRET`] and no labels; see [`register_as`].
pub fn register_sim(server: &Server, app_id: &str) -> AgentClient {
    let request =
        RegisterRequest { app_id: app_id.into(), secret: SIM_SECRET.into(), ..RegisterRequest::default() };
    register_as(server, &request)
}

/// Registers `agents` simulated agents `PREFIX-N` that never poll and queues `enqueues` tasks
/// of a `payload_bytes` payload for each, so the store holds megabytes to copy; returns their
/// app ids. Each payload starts with its enqueue's number (`0000`, `0001`, ...).
pub fn queue_bulk(
    server: &Server,
    prefix: &str,
    agents: usize,
    enqueues: usize,
    payload_bytes: usize,
) -> Vec<String> {
    let app_ids: Vec<String> = (0..agents).map(|i| format!("{prefix}-{i}")).collect();
    for app_id in &app_ids {
        register_sim(server, app_id);
    }
    let admin = server.admin();
    for i in 0..enqueues {
        let payload = format!("{i:04}{}", "b".repeat(payload_bytes));
        let body = serde_json::json!({"app_ids": app_ids, "task_type": "ping", "payload": payload});
        let reply: EnqueueReply = admin.post("/api/v1/tasks", &body).expect("bulk enqueue");
        assert_eq!(reply.tasks.len(), agents);
    }
    app_ids
}

/// The statuses of a task's history, in order.
pub fn history(task: &TaskView) -> Vec<&'static str> {
    task.history.iter().map(|t| t.status.as_str()).collect()
}

/// The most tasks open at the same moment, from their histories: a task is open from its
/// first state to its final one; at equal times an end counts before a start, since a job
/// starts the next task in the same transaction (at the same millisecond) as one ends.
pub fn most_open_at_once(tasks: &[TaskView]) -> usize {
    let time = |at: &str| chrono::DateTime::parse_from_rfc3339(at).expect("rfc3339").timestamp_millis();
    let mut events: Vec<(i64, i32)> = Vec::new();
    for task in tasks {
        let first = task.history.first().expect("a history");
        let last = task.history.last().expect("a history");
        assert!(last.status.is_final(), "task {} is {}", task.task_id, last.status);
        events.push((time(&first.at), 1));
        events.push((time(&last.at), -1));
    }
    events.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, change) in events {
        open += change;
        most = most.max(open);
    }
    most as usize
}

/// Milliseconds between two RFC 3339 times of a task's history.
pub fn ms_between(from: &str, to: &str) -> i64 {
    let parse = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("bad time {at:?}: {e}"))
    };
    (parse(to) - parse(from)).num_milliseconds()
}
