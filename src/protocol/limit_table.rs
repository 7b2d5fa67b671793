//! [`TABLE`]: every limit of the protocol, with its value and what it bounds, as SECURITY.md
//! lists them; a test keeps the two equal.

use super::limits::*;
use super::{admin, busy, facts, features, files, jobs, operators, wire};

/// Every limit: its name, its value and what it bounds; SECURITY.md holds the same table.
pub const TABLE: &[(&str, u64, &str)] = &[
    ("MAX_HEAD_BYTES", MAX_HEAD_BYTES as u64, "bytes of one request's line and headers"),
    ("MAX_ADMIN_BODY", MAX_ADMIN_BODY as u64, "bytes of one operator API request body"),
    (
        "MAX_FAILURES_PER_MINUTE",
        MAX_FAILURES_PER_MINUTE as u64,
        "failed signatures, agent secrets or admin tokens per source and minute",
    ),
    (
        "MAX_FAILURES_PER_APP_ID_SOURCE",
        MAX_FAILURES_PER_APP_ID_SOURCE as u64,
        "failed signatures or secrets per app id, source and minute",
    ),
    (
        "MAX_FAILURES_PER_APP_ID",
        MAX_FAILURES_PER_APP_ID as u64,
        "failed signatures or secrets per app id and minute, all sources",
    ),
    (
        "MAX_WRONG_ADMIN_TOKENS_PER_MINUTE",
        MAX_WRONG_ADMIN_TOKENS_PER_MINUTE as u64,
        "wrong admin tokens per minute, all sources",
    ),
    ("MAX_AGENT_BODY", wire::MAX_AGENT_BODY as u64, "bytes of one agent request body"),
    ("MAX_APP_ID_LEN", wire::MAX_APP_ID_LEN as u64, "characters of an app id"),
    ("MAX_SECRET_LEN", wire::MAX_SECRET_LEN as u64, "bytes of an agent secret"),
    ("MAX_PAYLOAD_LEN", wire::MAX_PAYLOAD_LEN as u64, "bytes of a task payload"),
    ("MAX_OUTPUT_LEN", wire::MAX_OUTPUT_LEN as u64, "bytes of one output stream inside a report"),
    ("MAX_CHUNK_LEN", wire::MAX_CHUNK_LEN as u64, "bytes of one streamed output chunk"),
    ("MAX_POLL_WINDOW_SECS", wire::MAX_POLL_WINDOW_SECS, "seconds a long poll may be parked"),
    (
        "MAX_TASKS_PER_POLL",
        wire::MAX_TASKS_PER_POLL as u64,
        "tasks one getTask hands to an agent announcing the batch feature",
    ),
    ("MAX_REPORTS_PER_CALL", wire::MAX_REPORTS_PER_CALL as u64, "reports in one reportTasks call"),
    ("MAX_FIELD_LEN", wire::MAX_FIELD_LEN as u64, "bytes of an agent's version or host name"),
    ("MAX_LABEL_KEY_LEN", MAX_LABEL_KEY_LEN as u64, "characters of a label key (A-Z a-z 0-9 . _ / -)"),
    ("MAX_LABEL_VALUE_LEN", MAX_LABEL_VALUE_LEN as u64, "bytes of a label value"),
    ("MAX_LABELS", MAX_LABELS as u64, "labels of an agent, or of an agent list filter"),
    ("MAX_TARGET_LABELS", MAX_TARGET_LABELS as u64, "labels of a job's target selection"),
    ("MAX_TASK_TYPE_LEN", MAX_TASK_TYPE_LEN as u64, "characters of a task type (A-Z a-z 0-9 . _ -)"),
    ("MAX_TIMEOUT_SECS", MAX_TIMEOUT_SECS, "seconds of a task's timeout"),
    ("MAX_TTL_SECS", MAX_TTL_SECS, "seconds a task may wait queued"),
    ("MAX_TOKEN_TTL_SECS", MAX_TOKEN_TTL_SECS, "seconds an enrollment token may work"),
    ("MAX_QUEUED_PER_AGENT", MAX_QUEUED_PER_AGENT as u64, "tasks queued for one agent"),
    ("MAX_NAMED_TARGETS", MAX_NAMED_TARGETS as u64, "app ids named by one enqueue or job"),
    (
        "MAX_ENQUEUE_BYTES",
        MAX_ENQUEUE_BYTES as u64,
        "payload, environment and stdin bytes one enqueue or job window stores",
    ),
    ("MAX_STDIN_BYTES", MAX_STDIN_BYTES as u64, "bytes of standard input one task carries"),
    (
        "MAX_ENQUEUE_BODY",
        MAX_ENQUEUE_BODY as u64,
        "bytes of one enqueue or job request body (stdin as base64)",
    ),
    ("WIRE_CHUNK_LEN", files::WIRE_CHUNK_LEN as u64, "bytes of a copied file in one agent call"),
    ("MAX_REMOTE_PATH_LEN", files::MAX_REMOTE_PATH_LEN as u64, "bytes of a copied file's remote path"),
    ("MAX_JOB_TARGETS", MAX_JOB_TARGETS as u64, "agents one job may target"),
    ("MAX_PENDING", MAX_PENDING as u64, "agents waiting to be accepted"),
    (
        "MAX_OPERATORS",
        operators::MAX_OPERATORS as u64,
        "named operators a server keeps, revoked ones included",
    ),
    ("MAX_OPERATOR_NAME_LEN", operators::MAX_OPERATOR_NAME_LEN as u64, "characters of an operator name"),
    ("MAX_OPERATOR_TTL_SECS", operators::MAX_OPERATOR_TTL_SECS, "seconds an operator token may work"),
    (
        "MAX_OPERATOR_TASK_TYPES",
        operators::MAX_OPERATOR_TASK_TYPES as u64,
        "task types an operator may be limited to",
    ),
    ("MAX_LIST_LIMIT", admin::MAX_LIST_LIMIT as u64, "entries of one list page"),
    ("MAX_WAIT_SECS", admin::MAX_WAIT_SECS, "seconds an operator call may be parked"),
    ("MAX_RESULTS_PAGE", jobs::MAX_RESULTS_PAGE as u64, "results of one job results page"),
    ("MAX_OUTPUT_GROUPS", jobs::MAX_OUTPUT_GROUPS as u64, "output groups of one job"),
    ("MAX_GROUP_HOSTS", jobs::MAX_GROUP_HOSTS as u64, "hosts named in one output group"),
    ("MAX_HOST_TIMEOUT_SECS", jobs::MAX_HOST_TIMEOUT_SECS, "seconds a job's task may wait on a silent agent"),
    ("MAX_FACT_IPS", facts::MAX_FACT_IPS as u64, "addresses in an agent's host facts"),
    ("MAX_FACT_LEN", facts::MAX_FACT_LEN as u64, "bytes of one host fact"),
    ("MAX_ENV_VARS", MAX_ENV_VARS as u64, "environment variables one task may set"),
    (
        "MAX_ENV_NAME_LEN",
        MAX_ENV_NAME_LEN as u64,
        "characters of an environment variable name (A-Z a-z 0-9 _)",
    ),
    ("MAX_ENV_BYTES", MAX_ENV_BYTES as u64, "bytes of a task's environment, names and values"),
    ("MAX_CWD_LEN", MAX_CWD_LEN as u64, "bytes of a task's working directory"),
    ("MAX_USER_LEN", MAX_USER_LEN as u64, "characters of the user a task runs as"),
    ("MAX_FEATURES", features::MAX_FEATURES as u64, "task features an agent may announce"),
    ("MAX_FEATURE_LEN", features::MAX_FEATURE_LEN as u64, "characters of a task feature name"),
    ("MAX_RETRY_AFTER", busy::MAX_RETRY_AFTER.as_secs(), "seconds of a Retry-After"),
];

/// [`TABLE`] as the Markdown table SECURITY.md holds.
pub fn markdown_table() -> String {
    let mut out = String::from("| Limit | Value | Bounds |\n|---|---:|---|\n");
    for (name, value, bounds) in TABLE {
        out.push_str(&format!("| `{name}` | {value} | {bounds} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_md_lists_every_limit() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("SECURITY.md");
        let text = std::fs::read_to_string(&path).expect("SECURITY.md is readable");
        let (begin, end) = ("<!-- limits:begin -->\n", "<!-- limits:end -->");
        let found = text
            .split_once(begin)
            .and_then(|(_, rest)| rest.split_once(end))
            .map(|(table, _)| table.to_owned())
            .unwrap_or_default();
        let expected = markdown_table();
        assert!(TABLE.len() >= 20, "the table lists {} limits", TABLE.len());
        assert!(
            found == expected,
            "SECURITY.md's limits table (between {begin:?} and {end:?}) differs from protocol::limit_table::TABLE; \
             paste this:\n{expected}"
        );
    }
}
