//! The operator HTTP API under `/api/v1/`: JSON bodies shared by the server's handlers and the CLI.
//! Field names are stable: scripts read them through `orange ... --json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::task::TaskStatus;

/// Enqueue (POST) and list (GET, `?app_id=&limit=`) tasks.
pub const TASKS_PATH: &str = "/api/v1/tasks";
/// List agents (GET).
pub const AGENTS_PATH: &str = "/api/v1/agents";
/// Most tasks one list call returns.
pub const MAX_LIST_LIMIT: usize = 1000;
/// Longest `?wait=` a task get may park for, in seconds.
pub const MAX_WAIT_SECS: u64 = 50;
/// An agent whose last sign of life is older than this is offline.
pub const ONLINE_WINDOW_SECS: i64 = 90;

/// Body of `POST /api/v1/tasks`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct EnqueueRequest {
    /// Agents to give the task to (one task per agent).
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// Give the task to every registered agent instead.
    #[serde(default)]
    pub all: bool,
    /// `ping`, `shell` or a handler name.
    pub task_type: String,
    /// Input of the task.
    #[serde(default)]
    pub payload: String,
    /// Seconds the agent may run it; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

/// Answer of `POST /api/v1/tasks`: one task per agent, in the order asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnqueueReply {
    /// The tasks created.
    pub tasks: Vec<TaskView>,
}

/// A task as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskView {
    /// Task id.
    pub task_id: String,
    /// Agent it is for.
    pub app_id: String,
    /// Task type.
    pub task_type: String,
    /// Task input.
    pub payload: String,
    /// Current state.
    pub status: TaskStatus,
    /// Seconds the agent may run it.
    pub timeout_secs: u64,
    /// RFC 3339 time of each state reached, keyed by state name (`queued`, `delivered`, ...).
    pub history: BTreeMap<String, String>,
    /// Exit code of the process, when there was one.
    pub exit_code: Option<i32>,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// The original protocol's free-form result text.
    pub result: String,
    /// Why the task failed without running, if it did.
    pub error: Option<String>,
    /// Wall time of the run in milliseconds, as the agent measured it.
    pub duration_ms: Option<u64>,
}

/// Answer of `GET /api/v1/tasks`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<TaskView>,
}

/// An agent as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentView {
    /// App id.
    pub app_id: String,
    /// Seen within the last [`ONLINE_WINDOW_SECS`], or holding a long poll now.
    pub online: bool,
    /// RFC 3339 time of its last request.
    pub last_seen: String,
    /// RFC 3339 time of its first registration.
    pub registered_at: String,
    /// Operator labels.
    pub labels: BTreeMap<String, String>,
    /// Agent version, if it said (the original client does not).
    pub version: Option<String>,
    /// Host name, if it said.
    pub hostname: Option<String>,
    /// Tasks it has finished.
    pub processed_task_count: u64,
}

/// Answer of `GET /api/v1/agents`, sorted by app id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentList {
    /// The agents.
    pub agents: Vec<AgentView>,
}

/// Body of every admin API error (4xx/5xx).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, naming the bad value.
    pub error: String,
}

/// `GET` path of one task.
pub fn task_path(task_id: &str) -> String {
    format!("{TASKS_PATH}/{task_id}")
}

/// `GET` path of one agent.
pub fn agent_path(app_id: &str) -> String {
    format!("{AGENTS_PATH}/{app_id}")
}
