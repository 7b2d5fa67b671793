//! The operator API for jobs under `/api/v1/jobs`: one command sent to many agents, a task per
//! agent, started in a sliding window (`max_concurrency`) and stopped after too many errors
//! (`max_errors`). JSON bodies shared by the server's handlers and the CLI; field names are
//! stable, scripts read them through `orange job ... --json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::bytes::Encoding;
use super::task::TaskStatus;

/// Create (POST) and list (GET, `?limit=N`, newest first) jobs.
pub const JOBS_PATH: &str = "/api/v1/jobs";
/// Resolve a job's targets without creating it (POST a [`JobRequest`], answers [`TargetList`]).
pub const JOBS_DRY_RUN_PATH: &str = "/api/v1/jobs/dry-run";
/// Most results one results page returns.
pub const MAX_RESULTS_PAGE: usize = 1000;
/// Most distinct outcomes a groups answer keeps apart (see [`OutputGroup::state`]).
pub const MAX_OUTPUT_GROUPS: usize = 1000;
/// Most app ids one output group lists (the count is always exact).
pub const MAX_GROUP_HOSTS: usize = 10_000;

/// Which agents a job is for. The selections add up: named agents, plus every agent carrying all
/// the labels, or every agent with `all`. Only accepted agents are chosen; the list is resolved
/// and frozen when the job is created.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Targets {
    /// Agents named by app id.
    #[serde(default)]
    pub app_ids: Vec<String>,
    /// Every accepted agent whose labels include all of these (`--label k=v`, repeatable).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Every accepted agent.
    #[serde(default)]
    pub all: bool,
}

impl Targets {
    /// True when the selection names no agent at all (no app id, no label, not `all`).
    pub fn is_empty(&self) -> bool {
        self.app_ids.is_empty() && self.labels.is_empty() && !self.all
    }
}

/// A limit given as a number of agents or as a percentage of the job's targets; written `10` or
/// `10%` on the command line and in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// This many agents.
    Count(u32),
    /// This percentage (1 to 100) of the job's targets.
    Percent(u8),
}

impl Limit {
    /// Parses `N` or `P%`; a count may be 0 (for `max_errors`: stop at the first error), a
    /// percentage is 0 to 100.
    pub fn parse(text: &str) -> Result<Limit, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p) if p <= 100 => Ok(Limit::Percent(p)),
                _ => Err(format!("{text:?} is not a percentage from 0% to 100%")),
            };
        }
        text.parse::<u32>().map(Limit::Count).map_err(|_| {
            format!("{text:?} is neither a number of agents (e.g. 10) nor a percentage (e.g. 10%)")
        })
    }

    /// The number of agents this limit allows for a job of `targets` agents: a count as given; a
    /// percentage rounded down (so `10%` of 5 agents is 0: for `max_errors`, the first error stops).
    pub fn of(self, targets: usize) -> usize {
        match self {
            Limit::Count(n) => n as usize,
            Limit::Percent(p) => targets * p as usize / 100,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

/// A limit as JSON may carry it: the string `"10"` or `"10%"`, or a plain number of agents.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawLimit {
    Text(String),
    Number(u64),
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Limit, D::Error> {
        match RawLimit::deserialize(deserializer)? {
            RawLimit::Text(text) => Limit::parse(&text).map_err(serde::de::Error::custom),
            RawLimit::Number(n) => u32::try_from(n)
                .map(Limit::Count)
                .map_err(|_| serde::de::Error::custom(format!("{n} agents is more than a limit may name"))),
        }
    }
}

/// Body of `POST /api/v1/jobs` (and of the dry run).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct JobRequest {
    /// The agents to run it on.
    pub targets: Targets,
    /// `ping`, `shell` or a handler name.
    pub task_type: String,
    /// Input of every task.
    #[serde(default)]
    pub payload: String,
    /// Seconds each agent may run it; the server's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Seconds each task may wait in an offline agent's queue before it ends `expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
    /// Most tasks of the job open at once (a sliding window: the next agent starts when one
    /// finishes); every agent at once when absent. A percentage is rounded down, but is at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<Limit>,
    /// Once more tasks than this ended in error (`failed`, `timed_out`, `lost`, `expired`), no
    /// new agent is started and the agents not started end `skipped`; no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<Limit>,
    /// Environment variables added to every task's process (feature `env`: a target whose
    /// agent did not announce it ends `failed` at once, saying so).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables of every task's process (feature `env`): never shown, and
    /// dropped from the server's records once the job is done. A name may not also be in `env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// Working directory of every task's process (feature `cwd`, likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// User every task's process runs as (feature `user`, likewise; each agent must also allow
    /// the user with `--allow-user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Bytes every task's process reads on its standard input, as base64 (feature `stdin`,
    /// likewise; at most [`MAX_STDIN_BYTES`]). Absent: an empty input.
    ///
    /// [`MAX_STDIN_BYTES`]: super::limits::MAX_STDIN_BYTES
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "super::bytes::base64_field")]
    pub stdin: Vec<u8>,
    /// Queue tasks for agents offline when the job starts too (they run when their agent comes
    /// back, within the TTL; the host timeout does not end a queued task then). Without it
    /// those targets end `offline` at once, not run and not counted as errors.
    #[serde(default, skip_serializing_if = "is_false")]
    pub queue: bool,
    /// Seconds a target's task may wait on an agent that has gone silent (no request from it, no
    /// poll parked) before it ends: `expired` if it was still queued, `lost` if it was handed
    /// out. [`DEFAULT_HOST_TIMEOUT_SECS`] when absent; 1 to [`MAX_HOST_TIMEOUT_SECS`]. An agent
    /// that keeps polling or reporting is never silent, however long its task runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_timeout_secs: Option<u64>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The host timeout of a job that names none, in seconds.
pub const DEFAULT_HOST_TIMEOUT_SECS: u64 = 60;
/// The longest host timeout a job may ask for, in seconds (a day).
pub const MAX_HOST_TIMEOUT_SECS: u64 = 86_400;

/// Checks a requested host timeout: 1 to [`MAX_HOST_TIMEOUT_SECS`] seconds.
pub fn check_host_timeout(secs: u64) -> Result<u64, String> {
    if (1..=MAX_HOST_TIMEOUT_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(format!("host timeout {secs}s is out of range: give 1 to {MAX_HOST_TIMEOUT_SECS} seconds"))
    }
}

/// The state of a target whose agent was offline when the job started (without `queue`).
pub const OFFLINE_STATE: &str = "offline";
/// What an `offline` target's result says.
pub const OFFLINE_NOTE: &str = "its agent was offline when the job started; not run (--queue waits for it)";

/// Answer of the dry run: the agents a job would be sent to, sorted by app id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetList {
    /// Their app ids.
    pub app_ids: Vec<String>,
    /// Those offline now, sorted: the job would end them `offline` unless sent with `queue`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offline: Vec<String>,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Starting agents as the window allows.
    #[default]
    Running,
    /// An operator paused it: tasks already started go on, no new agent starts.
    Paused,
    /// More errors than `max_errors`: tasks already started go on, the rest are skipped.
    Stopped,
    /// An operator cancelled it: open tasks are cancelled, the rest are skipped.
    Cancelled,
    /// Every target's task ended, none skipped. (A stopped or cancelled job keeps its state;
    /// [`JobView::done`] tells when its last task has ended.)
    Finished,
}

impl JobState {
    /// The lowercase name shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Stopped => "stopped",
            JobState::Cancelled => "cancelled",
            JobState::Finished => "finished",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many of a job's targets are in each state.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct JobCounts {
    /// Not started yet (waiting for the window, or the job is paused).
    pub waiting: u32,
    /// Task in its agent's queue.
    pub queued: u32,
    /// Task handed to its agent, not yet started.
    pub delivered: u32,
    /// Task running.
    pub running: u32,
    /// Ended `succeeded`.
    pub succeeded: u32,
    /// Ended `failed`.
    pub failed: u32,
    /// Ended `timed_out`.
    pub timed_out: u32,
    /// Ended `cancelled`.
    pub cancelled: u32,
    /// Ended `expired` (its agent never came for it).
    pub expired: u32,
    /// Ended `lost` (its agent went silent while it ran).
    pub lost: u32,
    /// Never started: the job was stopped or cancelled first.
    pub skipped: u32,
    /// Never started: its agent was offline when the job started (not an error).
    #[serde(default)]
    pub offline: u32,
}

impl JobCounts {
    /// Targets whose task ended in error: `failed`, `timed_out`, `expired` or `lost`.
    pub fn errors(&self) -> u32 {
        self.failed + self.timed_out + self.expired + self.lost
    }

    /// Targets that will not change any more (ended or skipped).
    pub fn ended(&self) -> u32 {
        self.succeeded + self.errors() + self.cancelled + self.skipped + self.offline
    }

    /// Targets with a task that is open (queued, delivered or running).
    pub fn open(&self) -> u32 {
        self.queued + self.delivered + self.running
    }

    /// Every target.
    pub fn total(&self) -> u32 {
        self.waiting + self.open() + self.ended()
    }

    /// Adds one target in `status` (a task's state).
    pub fn add(&mut self, status: TaskStatus) {
        let slot = match status {
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Delivered => &mut self.delivered,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Succeeded => &mut self.succeeded,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::TimedOut => &mut self.timed_out,
            TaskStatus::Cancelled => &mut self.cancelled,
            TaskStatus::Expired => &mut self.expired,
            TaskStatus::Lost => &mut self.lost,
        };
        *slot += 1;
    }
}

/// A job as the operator sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobView {
    /// Job id.
    pub job_id: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Where it stands.
    pub state: JobState,
    /// The same as `state`, under the name tasks use for theirs (one vocabulary across
    /// commands); `state` stays for the clients that read it.
    #[serde(default)]
    pub status: JobState,
    /// Every target's task has ended or was skipped: nothing more will happen.
    pub done: bool,
    /// Task type.
    pub task_type: String,
    /// Task input.
    pub payload: String,
    /// Seconds each agent may run it.
    pub timeout_secs: u64,
    /// Environment variables added to every task's process.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of its secret environment variables (their values are never shown).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Working directory of every task's process, if one was asked for.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User every task's process runs as, if one was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The window as asked (`10`, `10%`), if any.
    pub max_concurrency: Option<Limit>,
    /// The error limit as asked, if any.
    pub max_errors: Option<Limit>,
    /// Number of agents targeted (frozen at creation).
    pub targets: u32,
    /// Targets per state.
    pub counts: JobCounts,
    /// Seconds a task may wait on a silent agent (0: no limit, for jobs made before it existed).
    #[serde(default)]
    pub host_timeout_secs: u64,
    /// The job this one runs again (`POST /api/v1/jobs/{id}/retry`), if it is a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<String>,
    /// Grows by one at every change of the job; `GET /api/v1/jobs/{id}?after_version=V&wait=S`
    /// waits up to S seconds for a version above V (a done job answers at once: it will not
    /// change any more).
    pub version: u64,
}

/// Answer of `GET /api/v1/jobs`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobList {
    /// The jobs.
    pub jobs: Vec<JobView>,
}

/// One target of a job and what became of it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct JobResult {
    /// The agent.
    pub app_id: String,
    /// `waiting`, `skipped`, `offline`, or the task's state (`queued` … `lost`).
    pub state: String,
    /// The same as `state`, under the name tasks use (one vocabulary across commands).
    #[serde(default)]
    pub status: String,
    /// The agent's task, once started.
    pub task_id: Option<String>,
    /// Exit code of the process, when there was one.
    pub exit_code: Option<i32>,
    /// Standard output (its first 4 KiB): text, or base64 when `stdout_encoding` says so.
    pub stdout: String,
    /// `base64` when `stdout` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// Standard error (its first 4 KiB): text, or base64 when `stderr_encoding` says so.
    pub stderr: String,
    /// `base64` when `stderr` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<Encoding>,
    /// The result text an original Go client reported (its first 4 KiB); empty for orange agents.
    #[serde(default)]
    pub result: String,
    /// Why the task failed without running, if it did.
    pub error: Option<String>,
    /// Wall time of the run in milliseconds, as the agent measured it.
    pub duration_ms: Option<u64>,
}

/// Answer of `GET /api/v1/jobs/{id}/results?after=APP_ID&limit=M`: targets in app id order,
/// those after app id `after` (from the start without it), at most `limit` (default and most
/// [`MAX_RESULTS_PAGE`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResults {
    /// The results.
    pub results: Vec<JobResult>,
    /// The `after` to ask for the next page; absent on the last page.
    pub next: Option<String>,
}

/// Targets that ended alike: same state, exit code and output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutputGroup {
    /// The state they share (`succeeded`, `failed`, …, `waiting`, `skipped`). Past
    /// [`MAX_OUTPUT_GROUPS`] distinct outcomes, the remaining targets are counted in one last
    /// group of state `other` with empty outputs.
    pub state: String,
    /// The same as `state`, under the name tasks use (one vocabulary across commands).
    #[serde(default)]
    pub status: String,
    /// The exit code they share.
    pub exit_code: Option<i32>,
    /// The standard output they share (its first 4 KiB): text, or base64 when
    /// `stdout_encoding` says so.
    pub stdout: String,
    /// `base64` when `stdout` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_encoding: Option<Encoding>,
    /// The standard error they share (its first 4 KiB): text, or base64 when `stderr_encoding`
    /// says so.
    pub stderr: String,
    /// `base64` when `stderr` is base64; absent when it is the text itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_encoding: Option<Encoding>,
    /// The result text they share (original Go clients'; empty for orange agents).
    #[serde(default)]
    pub result: String,
    /// The error they share.
    pub error: Option<String>,
    /// How many targets are in the group.
    pub count: u32,
    /// Their app ids, sorted (at most [`MAX_GROUP_HOSTS`]).
    pub app_ids: Vec<String>,
}

impl OutputGroup {
    /// The bytes of the standard output they share; the error says its base64 is bad.
    pub fn stdout_bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.stdout, self.stdout_encoding)
    }

    /// The bytes of the standard error they share; the error says its base64 is bad.
    pub fn stderr_bytes(&self) -> Result<Vec<u8>, String> {
        super::bytes::decode(&self.stderr, self.stderr_encoding)
    }
}

/// Answer of `GET /api/v1/jobs/{id}/groups`: the targets grouped by outcome, biggest group first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobGroups {
    /// The groups.
    pub groups: Vec<OutputGroup>,
}

/// `GET` path of one job.
pub fn job_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}")
}

/// `GET` path of a job's per-target results.
pub fn job_results_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/results")
}

/// `GET` path of a job's results grouped by outcome.
pub fn job_groups_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/groups")
}

/// `POST` path cancelling a job (`{"force": true}` closes its running tasks on the server at once).
pub fn job_cancel_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/cancel")
}

/// `POST` path running a job that ended again, as a new job (body [`RetryRequest`]).
pub fn job_retry_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/retry")
}

/// Body of `POST /api/v1/jobs/{id}/retry`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct RetryRequest {
    /// Only the hosts that did not succeed (failed, timed out, expired, lost, cancelled,
    /// skipped or offline); else every host of the job.
    #[serde(default)]
    pub failed: bool,
}

/// `POST` path pausing a job.
pub fn job_pause_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/pause")
}

/// `POST` path resuming a paused job.
pub fn job_resume_path(job_id: &str) -> String {
    format!("{JOBS_PATH}/{job_id}/resume")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_counts_and_percentages_and_name_bad_ones() {
        assert_eq!(Limit::parse("10"), Ok(Limit::Count(10)));
        assert_eq!(Limit::parse("0"), Ok(Limit::Count(0)));
        assert_eq!(Limit::parse("25%"), Ok(Limit::Percent(25)));
        assert_eq!(Limit::parse(" 100% "), Ok(Limit::Percent(100)));
        assert!(Limit::parse("101%").unwrap_err().contains("0% to 100%"));
        assert!(Limit::parse("ten").unwrap_err().contains("\"ten\""));
        assert!(Limit::parse("-1").is_err());
    }

    #[test]
    fn limits_resolve_against_the_target_count() {
        assert_eq!(Limit::Count(3).of(50), 3);
        assert_eq!(Limit::Percent(10).of(50), 5);
        assert_eq!(Limit::Percent(10).of(5), 0);
        assert_eq!(Limit::Percent(100).of(7), 7);
    }

    #[test]
    fn limits_travel_as_strings() {
        let request = JobRequest {
            targets: Targets { all: true, ..Targets::default() },
            task_type: "shell".into(),
            max_concurrency: Some(Limit::Percent(10)),
            max_errors: Some(Limit::Count(2)),
            ..JobRequest::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert!(json.contains(r#""max_concurrency":"10%""#), "{json}");
        assert!(json.contains(r#""max_errors":"2""#), "{json}");
        let back: JobRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.max_concurrency, Some(Limit::Percent(10)));
        assert!(serde_json::from_str::<JobRequest>(&json.replace("10%", "abc")).is_err());
        let number: JobRequest =
            serde_json::from_str(r#"{"targets":{"all":true},"task_type":"ping","max_errors":3}"#).unwrap();
        assert_eq!(number.max_errors, Some(Limit::Count(3)));
    }

    #[test]
    fn counts_add_up() {
        let mut counts = JobCounts { waiting: 2, skipped: 1, ..JobCounts::default() };
        for status in [TaskStatus::Running, TaskStatus::Failed, TaskStatus::Lost, TaskStatus::Succeeded] {
            counts.add(status);
        }
        assert_eq!(counts.errors(), 2);
        assert_eq!(counts.open(), 1);
        assert_eq!(counts.ended(), 4);
        assert_eq!(counts.total(), 7);
    }
}
