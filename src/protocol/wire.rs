//! The agent protocol of orange-forge-connect: routes, headers, the response envelope and the JSON
//! bodies. Field names and shapes are those of the original so that its unmodified Go client works;
//! everything orange adds is an optional field that the original client ignores.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::bytes::Encoding;
use super::limits;

/// Route of the register call (signed with the enrollment key).
pub const REGISTER_PATH: &str = "/orange-forge/api/register";
/// Route of the heartbeat (body is the literal `ping`).
pub const PING_PATH: &str = "/orange-forge/api/ping";
/// Route of the long poll that hands out the next task.
pub const GET_TASK_PATH: &str = "/orange-forge/api/getTask";
/// Route on which an agent reports a task's state or result.
pub const REPORT_TASK_PATH: &str = "/orange-forge/api/reportTask";

/// Route on which an orange agent that announced [`features::AGENT_BATCH`] reports several tasks
/// in one call (orange addition): body [`ReportBatch`], answer [`ReportResults`].
///
/// [`features::AGENT_BATCH`]: super::features::AGENT_BATCH
pub const REPORT_TASKS_PATH: &str = "/orange-forge/api/reportTasks";
/// Most tasks one getTask hands to an agent that announced the batch feature.
pub const MAX_TASKS_PER_POLL: usize = 16;
/// Most reports one [`REPORT_TASKS_PATH`] call carries.
pub const MAX_REPORTS_PER_CALL: usize = 64;

/// Route on which an orange agent streams a running task's output (orange addition).
pub const OUTPUT_PATH: &str = "/orange-forge/api/output";
/// Route on which an orange agent stopping cleanly says goodbye (orange addition; empty body):
/// the server shows it offline at once instead of after the online window.
pub const GOODBYE_PATH: &str = "/orange-forge/api/goodbye";

/// Header carrying the agent's app id.
pub const HEADER_APPID: &str = "X-FORGE-APPID";
/// Header carrying the signing time (legacy `YYYY-MM-DD HH:MM:SS` or Unix seconds).
pub const HEADER_TIME: &str = "X-FORGE-TIME";
/// Header carrying the lowercase hex HMAC-SHA256 signature.
pub const HEADER_SIGN: &str = "X-FORGE-SIGN";
/// Header announcing the version-2 canonical signature (value `2`); absent for the legacy scheme.
pub const HEADER_SIGN_VERSION: &str = "X-ORANGE-SIGN-VERSION";
/// Header carrying the random nonce of a version-2 signature.
pub const HEADER_NONCE: &str = "X-ORANGE-NONCE";
/// Register header of an agent enrolling with an enrollment token: the token's id (the
/// request is signed with the token's secret).
pub const HEADER_ENROLL_TOKEN: &str = "X-ORANGE-ENROLL-TOKEN";
/// Register header of an agent with no enrollment credential (value `pending`): the request is
/// signed with the agent's own secret, and the agent waits for an operator to accept it.
pub const HEADER_ENROLL: &str = "X-ORANGE-ENROLL";
/// Value of [`HEADER_ENROLL`] asking to wait for acceptance.
pub const ENROLL_PENDING: &str = "pending";
/// getTask header of orange agents: how many tasks the agent can start now. `0` asks the server
/// to hand out no task and answer only control messages (cancels). Absent (original clients)
/// means 1.
pub const HEADER_CAPACITY: &str = "X-ORANGE-CAPACITY";

/// The base secret the original client signs `register` with; public, so only a compatibility default.
pub const LEGACY_BASE_SECRET: &str = "orange-forge";
/// Start of the message refusing a call from an app id the server does not know; an agent that
/// sees it registers again (the server may have lost its data).
pub const UNKNOWN_APP_ID: &str = "unknown app id";
/// Body of a heartbeat.
pub const PING_BODY: &[u8] = b"ping";

/// Envelope code: success.
pub const CODE_OK: i32 = 0;
/// Envelope code: error (the original client exits on it for getTask; never send it for a transient reason).
pub const CODE_ERROR: i32 = 1;
/// Envelope code: the long poll ended without a task.
pub const CODE_NO_TASK: i32 = 2;

/// Largest request body any agent endpoint accepts.
pub const MAX_AGENT_BODY: usize = 4 * 1024 * 1024;
/// Longest app id accepted.
pub const MAX_APP_ID_LEN: usize = 128;
/// Longest agent secret accepted.
pub const MAX_SECRET_LEN: usize = 256;
/// Longest task payload accepted (values stay below sled's inline-item threshold, which is synced).
pub const MAX_PAYLOAD_LEN: usize = 64 * 1024;
/// Most of one output stream (stdout or stderr) an agent sends inside a final report.
pub const MAX_OUTPUT_LEN: usize = 1024 * 1024;
/// Most bytes of data in one streamed output chunk.
pub const MAX_CHUNK_LEN: usize = 64 * 1024;
/// Longest long-poll window a server may use; the clients' read timeout is longer.
pub const MAX_POLL_WINDOW_SECS: u64 = 50;
/// HTTP timeout of agent calls; longer than any server poll window.
pub const CLIENT_TIMEOUT_SECS: u64 = 60;

pub use super::limits::shown;

// A long poll's server window must end before the client gives up on it.
const _: () = assert!(CLIENT_TIMEOUT_SECS > MAX_POLL_WINDOW_SECS + 5);

/// Checks an app id: 1 to [`MAX_APP_ID_LEN`] characters of `A-Z a-z 0-9 . _ - : @`, so it is
/// safe in keys, logs and paths. The error names the bad value.
pub fn check_app_id(app_id: &str) -> Result<(), String> {
    let shown: String = app_id.chars().take(40).collect();
    if app_id.is_empty() || app_id.len() > MAX_APP_ID_LEN {
        return Err(format!("app id {shown:?} must be 1 to {MAX_APP_ID_LEN} characters"));
    }
    if !app_id.chars().all(|c| c.is_ascii_alphanumeric() || "._-:@".contains(c)) {
        return Err(format!("app id {shown:?} may only hold letters, digits and . _ - : @"));
    }
    if app_id.chars().all(|c| c == '.') {
        return Err(format!("app id {shown:?} must hold something besides dots"));
    }
    Ok(())
}

/// Longest version or host name.
pub const MAX_FIELD_LEN: usize = 256;

/// Checks the inventory fields of a register call (labels, features, version, host name) against their
/// limits; the error names the bad value.
pub fn check_register_fields(request: &RegisterRequest) -> Result<(), String> {
    limits::check_labels(&request.labels, limits::MAX_LABELS)?;
    super::features::check_features(&request.features)?;
    let too_long = |text: &str| text.len() > MAX_FIELD_LEN || text.chars().any(char::is_control);
    for (name, value) in [("version", &request.version), ("hostname", &request.hostname)] {
        if value.as_deref().is_some_and(too_long) {
            return Err(format!("{name} must be at most {MAX_FIELD_LEN} printable characters"));
        }
    }
    Ok(())
}

/// The JSON envelope every agent endpoint answers with (always HTTP 200).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Envelope<T> {
    /// 0 success, 1 error, 2 no task.
    pub code: i32,
    /// Human-readable outcome; specific on errors.
    pub message: String,
    /// The payload; `null` on errors.
    pub data: Option<T>,
}

impl<T> Envelope<T> {
    /// A success envelope carrying `data`.
    pub fn ok(message: &str, data: T) -> Self {
        Envelope { code: CODE_OK, message: message.to_owned(), data: Some(data) }
    }

    /// An envelope with no data and the given code.
    pub fn empty(code: i32, message: impl Into<String>) -> Self {
        Envelope { code, message: message.into(), data: None }
    }
}

/// Body of `register`: the original's two fields plus orange's optional inventory.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RegisterRequest {
    /// The agent's app id.
    pub app_id: String,
    /// The agent's own secret, used to sign every later call.
    pub secret: String,
    /// Operator labels (`--label k=v`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Agent version (absent for the original client).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Host name of the agent's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Facts about the agent's host (orange addition; see [`super::facts`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<super::facts::HostFacts>,
    /// Task features the agent understands (orange addition; see [`super::features`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// The client record `register` answers with, as the original shapes it (`secret` masked).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The app id.
    pub app_id: String,
    /// Always `***`.
    pub secret: String,
    /// Unix seconds of the first registration.
    pub register_time: i64,
    /// Unix seconds of the last sign of life.
    pub last_ping_time: i64,
    /// Always `registered`.
    pub do_status: String,
    /// Number of tasks this agent has finished.
    pub processed_task_count: u64,
}

/// The task object of the original protocol, handed out by getTask.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WireTask {
    /// Task id (UUID text).
    pub task_id: String,
    /// Task type: `ping`, `shell` or a handler name.
    pub task_type: String,
    /// Empty when handed out.
    #[serde(default)]
    pub do_status: String,
    /// RFC 3339 creation time.
    pub create_at: String,
    /// Task input.
    #[serde(default)]
    pub payload: String,
    /// Empty when handed out.
    #[serde(default)]
    pub result: String,
    /// Seconds the agent may run the task before killing it (orange addition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Environment variables added to the task's process (orange addition, feature `env`;
    /// absent when none, so original clients see the task they know).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of the task's process (orange addition, feature `cwd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Bytes written to the task's standard input, as base64 (orange addition, feature `stdin`;
    /// absent when none: the process reads an empty input).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "super::bytes::base64_field")]
    pub stdin: Vec<u8>,
    /// User the task's process runs as (orange addition, feature `user`; absent: the agent's
    /// own user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Which delivery of the task this is: 1 the first time, one more each time it is handed
    /// out again (orange addition). An orange agent names it in its reports and output chunks;
    /// the server refuses those of an earlier delivery once a later one was made (the fence
    /// of the delivery's lease).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Further tasks handed out by the same poll, oldest first, to an agent that announced the
    /// batch feature (orange addition; absent otherwise, so other clients see the task they know).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<WireTask>,
}

impl WireTask {
    /// The features an agent must understand to run this task.
    pub fn required_features(&self) -> Vec<&'static str> {
        super::features::TaskAsks {
            task_type: &self.task_type,
            env: &self.env,
            cwd: self.cwd.as_deref(),
            stdin: &self.stdin,
            user: self.user.as_deref(),
        }
        .required()
    }
}

/// `do_status` an agent reports while a task still runs.
pub const DO_STATUS_DOING: &str = "doing";
/// `do_status` of a finished task (for orange agents: exit code 0).
pub const DO_STATUS_SUCCESS: &str = "success";
/// `do_status` of a task that ran out of time.
pub const DO_STATUS_TIMEOUT: &str = "timeout";
/// `do_status` of a task that finished unsuccessfully (orange addition).
pub const DO_STATUS_FAILED: &str = "failed";
/// `do_status` of a task the agent stopped because it was cancelled (orange addition).
pub const DO_STATUS_CANCELLED: &str = "cancelled";
/// `do_status` of a task whose run was interrupted by an agent restart (orange addition): it is
/// never run again.
pub const DO_STATUS_LOST: &str = "lost";

/// Body of [`REPORT_TASKS_PATH`]: several reports, each as `reportTask` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReportBatch {
    /// The reports, applied in order; at most [`MAX_REPORTS_PER_CALL`].
    pub reports: Vec<ReportRequest>,
}

/// Data of the answer to [`REPORT_TASKS_PATH`]: one result per report, in the order sent.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReportResults {
    /// What `reportTask` would have answered to each report.
    pub results: Vec<ReportResult>,
}

/// The answer to one report of a batch: its envelope code and message.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReportResult {
    /// [`CODE_OK`] when the report was taken, [`CODE_ERROR`] when refused.
    pub code: i32,
    /// The outcome, specific on a refusal.
    pub message: String,
}

/// Body of `reportTask`: the task object with the outcome, plus orange's optional result detail.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReportRequest {
    /// The task being reported.
    pub task_id: String,
    /// Echoed task type (ignored by the server).
    #[serde(default)]
    pub task_type: String,
    /// `doing`, `success`, `timeout` or `failed`.
    pub do_status: String,
    /// Echoed creation time (ignored by the server).
    #[serde(default)]
    pub create_at: String,
    /// Echoed payload (ignored by the server).
    #[serde(default)]
    pub payload: String,
    /// The original's free-form result text.
    #[serde(default)]
    pub result: String,
    /// Process exit code, when the task was a process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Captured standard output (capped at [`MAX_OUTPUT_LEN`] bytes): text, or base64 when
    /// `stdout_encoding` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// `base64` when `stdout` holds bytes that are not UTF-8 (see [`super::bytes`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// Captured standard error (capped at [`MAX_OUTPUT_LEN`] bytes): text, or base64 when
    /// `stderr_encoding` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// `base64` when `stderr` holds bytes that are not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<Encoding>,
    /// Wall time the task ran, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why the task failed without running (unknown type, shell refused, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Number of output chunks the agent streamed for this task before this final report (all
    /// acknowledged); when set, the report's `stdout`/`stderr` are not sent again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_chunks: Option<u32>,
    /// The delivery of the task the agent runs ([`WireTask::attempt`]; orange addition): a
    /// report of a delivery the server has since superseded is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

/// What a getTask answer without a task (code 2) may carry for an orange agent; the original
/// client ignores `data` on code 2.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct PollControl {
    /// Ids of this agent's running tasks that an operator cancelled: stop them and report
    /// `cancelled`.
    #[serde(default)]
    pub cancel: Vec<String>,
}

/// One piece of a running task's output, streamed by an orange agent on [`OUTPUT_PATH`].
/// Chunks of a task are numbered from 0 without gaps; the server stores each number once (a
/// retried chunk is acknowledged again and not stored twice) and refuses a chunk that skips
/// ahead, so the agent sends them one at a time, in order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputChunk {
    /// The running task.
    pub task_id: String,
    /// Position of this chunk in the task's output, from 0.
    pub seq: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The bytes (at most [`MAX_CHUNK_LEN`]): as text when they are valid UTF-8, else base64.
    pub data: String,
    /// `base64` when `data` is the base64 of bytes that are not UTF-8; absent for text (and from
    /// agents before orange sent bytes, whose data is always text). See [`super::bytes`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The delivery of the task the agent runs ([`WireTask::attempt`]): a chunk of a delivery
    /// the server has since superseded is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
}

impl OutputChunk {
    /// Chunk `seq` of `task_id`'s `stream` holding `bytes`, encoded for JSON.
    pub fn new(task_id: &str, seq: u32, stream: &str, bytes: &[u8]) -> Self {
        let (data, encoding) = super::bytes::encode(bytes);
        OutputChunk {
            task_id: task_id.to_owned(),
            seq,
            stream: stream.to_owned(),
            data,
            encoding,
            attempt: None,
        }
    }

    /// The chunk's bytes; the error says its base64 is bad.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.data, self.encoding)
    }
}

/// Answer (`data`) of an output post.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct OutputAck {
    /// True when an operator cancelled the task: stop it.
    #[serde(default)]
    pub cancel: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_task_json_decodes_and_round_trips() {
        let text = r#"{"task_id":"afb3efa1-7f07-4264-a207-7036fcbac526","task_type":"PING","do_status":"","create_at":"2026-11-26T06:40:41.520661222Z","payload":"x","result":""}"#;
        let task: WireTask = serde_json::from_str(text).unwrap();
        assert_eq!(task.task_type, "PING");
        assert_eq!(task.timeout_secs, None);
        assert_eq!(serde_json::to_string(&task).unwrap(), text);
    }

    #[test]
    fn original_report_decodes_without_orange_fields() {
        let text = r#"{"task_id":"t","task_type":"PING","do_status":"success","create_at":"x","payload":"x","result":"hello from curl"}"#;
        let report: ReportRequest = serde_json::from_str(text).unwrap();
        assert_eq!(report.do_status, DO_STATUS_SUCCESS);
        assert_eq!(report.result, "hello from curl");
        assert_eq!(report.exit_code, None);
    }

    #[test]
    fn app_ids_are_plain_names() {
        assert!(check_app_id("web-01.prod").is_ok());
        assert!(check_app_id("").is_err());
        assert!(check_app_id("a/b").is_err());
        assert!(check_app_id("..").is_err());
        assert!(check_app_id(&"x".repeat(10_000)).is_err());
    }

    #[test]
    fn labels_an_agent_or_the_cli_accepts_are_accepted_by_register_and_no_others() {
        let texts = ["k8s.io/zone=a".to_owned(), format!("{}={}", "k".repeat(63), "v".repeat(256))];
        let labels = limits::parse_labels(&texts, limits::MAX_LABELS).unwrap();
        let request = RegisterRequest { labels, ..Default::default() };
        assert_eq!(check_register_fields(&request), Ok(()));
        let spaced = BTreeMap::from([("a b".to_owned(), "v".to_owned())]);
        let refused = check_register_fields(&RegisterRequest { labels: spaced, ..Default::default() });
        assert_eq!(limits::parse_labels(&["a b=v".to_owned()], limits::MAX_LABELS).map(|_| ()), refused);
    }

    #[test]
    fn envelope_without_data_serializes_null() {
        let env: Envelope<()> = Envelope::empty(CODE_NO_TASK, "no task");
        assert_eq!(serde_json::to_string(&env).unwrap(), r#"{"code":2,"message":"no task","data":null}"#);
    }
}
