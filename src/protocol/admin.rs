//! The operator HTTP API under `/api/v1/`: JSON bodies shared by the server's handlers and the CLI.
//! Field names are stable: scripts read them through `orange ... --json`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use super::audit::{AUDIT_PATH, AuditEntry, AuditList};
use super::bytes::Encoding;
use super::task::TaskStatus;

/// Enqueue (POST) and list (GET, `?app_id=&limit=`) tasks.
/// What views show instead of the value of a secret environment variable.
pub const REDACTED: &str = "<secret>";

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
    /// Seconds it may wait in the queue of an offline agent before it ends `expired`; the
    /// server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Environment variables added to the task's process; only agents that announced the
    /// `env` feature take such a task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables added to the task's process (feature `env`, likewise):
    /// never shown in views, the audit or logs, and dropped from the server's records once
    /// the task ends. A name may not also be in `env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Working directory of the task's process (absolute); only agents that announced the
    /// `cwd` feature take such a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User the task's process runs as; only agents that announced the `user` feature take such
    /// a task, and the agent runs it only if the user is in its `--allow-user` list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Bytes for the task's standard input, as base64 (at most [`MAX_STDIN_BYTES`]); only
    /// agents that announced the `stdin` feature take such a task. Absent: an empty input.
    ///
    /// [`MAX_STDIN_BYTES`]: super::limits::MAX_STDIN_BYTES
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "super::bytes::base64_field")]
    pub stdin: Vec<u8>,
    /// Refuse (409, naming the agent's last-seen time) instead of queueing when a target agent
    /// is offline: not seen within [`ONLINE_WINDOW_SECS`], or it said goodbye when it stopped.
    /// `task run` sends it unless `--queue`; absent, an offline agent's task waits in its queue.
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_online: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// What every refusal of an offline agent says (`task run` adds its `--queue` hint to it).
pub const OFFLINE_REFUSAL: &str = "is offline (last seen";

/// The refusal of a task for offline agent `app_id`, last seen at `last_seen` (RFC 3339);
/// `left` when it said goodbye.
pub fn offline_refusal(app_id: &str, last_seen: &str, left: bool) -> String {
    let how = if left { ", when it stopped" } else { "" };
    format!("agent {app_id:?} {OFFLINE_REFUSAL} {last_seen}{how})")
}

/// Body of `POST /api/v1/tasks/{id}/cancel`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct CancelRequest {
    /// Close the task on the server at once, even if its agent never answers.
    #[serde(default)]
    pub force: bool,
}

/// One chunk of a task's output as the operator API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputChunkView {
    /// Position in the task's output.
    pub seq: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes: as text when they are valid UTF-8, else their base64 (see `encoding`).
    pub data: String,
    /// `base64` when `data` is base64; absent when it is the text itself (see [`super::bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

impl OutputChunkView {
    /// Chunk `seq` of `stream` holding `bytes`, encoded for JSON.
    pub fn new(seq: u32, stream: &str, bytes: &[u8]) -> Self {
        let (data, encoding) = super::bytes::encode(bytes);
        OutputChunkView { seq, stream: stream.to_owned(), data, encoding }
    }

    /// The chunk's bytes; the error says its base64 is bad.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.data, self.encoding)
    }
}

/// Answer of `GET /api/v1/tasks/{id}/output?after=SEQ&wait=S`: the chunks numbered `after` and
/// later (all of them when `after` is absent), waiting up to `wait` seconds for a first one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputPage {
    /// Chunks in order. Chunks dropped by the output cap are missing (numbers jump).
    pub chunks: Vec<OutputChunkView>,
    /// The `after` to ask for next.
    pub next: u32,
    /// The task is final and every chunk it will ever have was returned: stop following.
    pub done: bool,
    /// The task's state now.
    pub status: TaskStatus,
    /// Bytes of output dropped from the middle because the task exceeded the output cap.
    pub dropped_bytes: u64,
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
    /// Environment variables added to its process (servers that predate them send none); a
    /// secret one's value is shown as [`REDACTED`].
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of its secret environment variables (their values are never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Working directory of its process, if one was asked for.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User its process runs as, if one was asked for (absent: the agent's own user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An operator asked to cancel it and its agent has not yet confirmed.
    pub cancel_requested: bool,
    /// Bytes of output dropped from the middle by the output cap (the head and tail are kept).
    pub dropped_bytes: u64,
    /// Every state the task reached, in order, with its time (a task handed out again after a
    /// lost delivery shows `delivered` twice).
    pub history: Vec<Transition>,
    /// Exit code of the process, when there was one.
    pub exit_code: Option<i32>,
    /// Captured standard output: text when it is valid UTF-8, else base64 (see
    /// `stdout_encoding`).
    pub stdout: String,
    /// `base64` when `stdout` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// Captured standard error: text, or base64 when `stderr_encoding` says so.
    pub stderr: String,
    /// `base64` when `stderr` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<Encoding>,
    /// The original protocol's free-form result text (what an original Go client reported).
    pub result: String,
    /// Why the task failed without running, if it did.
    pub error: Option<String>,
    /// Wall time of the run in milliseconds, as the agent measured it.
    pub duration_ms: Option<u64>,
}

/// One step of a task's history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transition {
    /// The state reached.
    pub status: TaskStatus,
    /// RFC 3339 time it was reached.
    pub at: String,
}

impl TaskView {
    /// The bytes of the captured standard output; the error says its base64 is bad.
    pub fn stdout_bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.stdout, self.stdout_encoding)
    }

    /// The bytes of the captured standard error; the error says its base64 is bad.
    pub fn stderr_bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.stderr, self.stderr_encoding)
    }

    /// When the task first reached `status`, if it did.
    pub fn reached(&self, status: TaskStatus) -> Option<&str> {
        self.history.iter().find(|t| t.status == status).map(|t| t.at.as_str())
    }
}

/// Answer of `GET /api/v1/tasks`, newest first (see [`super::task_query::TaskQuery`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskList {
    /// The tasks.
    pub tasks: Vec<TaskView>,
    /// The `after` of the next page (a task id), when more tasks may match; absent on the last
    /// page and from older servers, which ignore the filters and the cursor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// An agent as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentView {
    /// App id.
    pub app_id: String,
    /// Seen within the last [`ONLINE_WINDOW_SECS`] (a parked long poll renews this every poll
    /// window, so an agent holding one counts).
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
    /// `accepted` (takes tasks), `pending` (waits for `orange agents accept`) or `forgotten`;
    /// servers that predate enrollment send none, which reads as `accepted`.
    #[serde(default = "accepted")]
    pub status: String,
    /// What the agent said about its host (OS, kernel, addresses, uptime); `null` for original
    /// clients and servers that predate facts.
    #[serde(default)]
    pub facts: Option<super::facts::FactsView>,
    /// Task features it announced (`cwd`, `env`): a task needing one is given only to agents
    /// that announced it. Empty for original clients and older orange agents.
    #[serde(default)]
    pub features: Vec<String>,
    /// The labels an admin approved: what operators' scopes match (absent: none approved, or a
    /// server before named operators).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub approved_labels: BTreeMap<String, String>,
}

fn accepted() -> String {
    "accepted".to_owned()
}

/// Body of `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenRequest {
    /// Seconds the token works.
    pub ttl_secs: u64,
    /// Enrollments it allows.
    pub uses: u32,
}

/// An enrollment token as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenView {
    /// Public id.
    pub token_id: String,
    /// The whole token to give agents (`<id>.<secret>`); only in the answer that created it.
    pub token: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 expiry.
    pub expires_at: String,
    /// Enrollments left.
    pub uses_left: u32,
    /// Revoked by an operator.
    pub revoked: bool,
    /// `active`, `expired`, `used_up` or `revoked` when the server answered (see
    /// [`TokenView::status_at`]); servers before it send none, read as empty.
    #[serde(default)]
    pub status: String,
}

impl TokenView {
    /// Where the token stands at `now_ms` (Unix milliseconds): `revoked`, else `used_up`, else
    /// `expired` (an unreadable expiry counts as past), else `active`.
    pub fn status_at(&self, now_ms: i64) -> &'static str {
        let expires_ms =
            chrono::DateTime::parse_from_rfc3339(&self.expires_at).map(|at| at.timestamp_millis());
        match () {
            _ if self.revoked => "revoked",
            _ if self.uses_left == 0 => "used_up",
            _ if expires_ms.map_or(true, |at| at <= now_ms) => "expired",
            _ => "active",
        }
    }
}

/// Answer of `GET /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// The tokens, by id.
    pub tokens: Vec<TokenView>,
}

/// Create (POST) and list (GET) enrollment tokens.
pub const TOKENS_PATH: &str = "/api/v1/tokens";
/// Admin route answering a backup of the server's data (`GET`), streamed as it is written.
pub const BACKUP_PATH: &str = "/api/v1/backup";

/// Answer of `GET /api/v1/agents`, sorted by app id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentList {
    /// The agents.
    pub agents: Vec<AgentView>,
    /// The `after` of the next page, when a `limit` cut the list short.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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

/// `POST` path cancelling a task.
pub fn cancel_path(task_id: &str) -> String {
    format!("{TASKS_PATH}/{task_id}/cancel")
}

/// `GET` path of a task's output.
pub fn output_path(task_id: &str) -> String {
    format!("{TASKS_PATH}/{task_id}/output")
}

/// `POST` path accepting a pending agent.
pub fn accept_path(app_id: &str) -> String {
    format!("{AGENTS_PATH}/{app_id}/accept")
}

/// `POST` path forgetting an agent (its secret; it may enroll again).
pub fn forget_path(app_id: &str) -> String {
    format!("{AGENTS_PATH}/{app_id}/forget")
}

/// `POST` path revoking an enrollment token.
pub fn revoke_path(token_id: &str) -> String {
    format!("{TOKENS_PATH}/{token_id}/revoke")
}

/// `GET` path of one agent.
pub fn agent_path(app_id: &str) -> String {
    format!("{AGENTS_PATH}/{app_id}")
}

/// Query key of `GET /api/v1/agents` keeping only agents with this label (`k=v`); repeatable, all
/// must match.
pub const QUERY_LABEL: &str = "label";
/// Query key of `GET /api/v1/agents` keeping only online agents (`true`).
pub const QUERY_ONLINE: &str = "online";
/// Query key of `GET /api/v1/agents` keeping only agents in one presence: `online`, `offline`
/// or `pending`.
pub const QUERY_STATUS: &str = "status";
/// Query key of `GET /api/v1/agents` continuing after this app id (the `next` of a page).
pub const QUERY_AFTER: &str = "after";
/// Query key of `GET /api/v1/agents` bounding a page (1 to [`MAX_LIST_LIMIT`]); without it
/// every matching agent is listed.
pub const QUERY_LIMIT: &str = "limit";

/// Where an agent stands for an operator: able to take tasks now, enrolled but silent, or
/// waiting for `orange agents accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Accepted and seen within [`ONLINE_WINDOW_SECS`].
    Online,
    /// Accepted and not seen within [`ONLINE_WINDOW_SECS`].
    Offline,
    /// Waiting to be accepted.
    Pending,
}

impl Presence {
    /// The presence of `agent`.
    pub fn of(agent: &AgentView) -> Presence {
        match (agent.status.as_str(), agent.online) {
            ("pending", _) => Presence::Pending,
            (_, true) => Presence::Online,
            (_, false) => Presence::Offline,
        }
    }

    fn parse(text: &str) -> Result<Presence, String> {
        match text {
            "online" => Ok(Presence::Online),
            "offline" => Ok(Presence::Offline),
            "pending" => Ok(Presence::Pending),
            other => {
                Err(format!("status={:?} must be online, offline or pending", super::wire::shown(other)))
            }
        }
    }
}

/// Which agents `GET /api/v1/agents` lists: those carrying every label, when `online` only
/// those seen within [`ONLINE_WINDOW_SECS`], when `presence` only those in it; in app id order,
/// after `after`, at most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFilter {
    /// Labels that must all be present with these values.
    pub labels: BTreeMap<String, String>,
    /// Only online agents.
    pub online: bool,
    /// Only agents in this presence.
    pub presence: Option<Presence>,
    /// Only agents whose app id sorts after this one.
    pub after: Option<String>,
    /// At most this many agents; every one when `None`.
    pub limit: Option<usize>,
}

impl AgentFilter {
    /// True when `agent` passes the filter's conditions (not its page bounds).
    pub fn matches(&self, agent: &AgentView) -> bool {
        (!self.online || agent.online)
            && self.presence.is_none_or(|presence| Presence::of(agent) == presence)
            && self.labels.iter().all(|(key, value)| agent.labels.get(key) == Some(value))
    }

    /// Reads the filter from query pairs; the error names the bad pair.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut filter = AgentFilter::default();
        for (key, value) in pairs {
            match key.as_str() {
                QUERY_LABEL => {
                    let (k, v) = super::limits::parse_label(value)?;
                    filter.labels.insert(k.to_owned(), v.to_owned());
                }
                QUERY_ONLINE => filter.online = parse_bool(value)?,
                QUERY_STATUS => filter.presence = Some(Presence::parse(value)?),
                QUERY_AFTER => {
                    super::wire::check_app_id(value).map_err(|e| format!("after: {e}"))?;
                    filter.after = Some(value.clone());
                }
                QUERY_LIMIT => filter.limit = Some(parse_page_limit(value)?),
                other => return Err(format!("unknown query parameter {:?}", super::wire::shown(other))),
            }
        }
        super::limits::check_labels(&filter.labels, super::limits::MAX_LABELS)?;
        Ok(filter)
    }
}

fn parse_page_limit(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(limit) if (1..=MAX_LIST_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(format!("limit={:?} must be 1 to {MAX_LIST_LIMIT}", super::wire::shown(value))),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("online={:?} must be true or false", super::wire::shown(other))),
    }
}
