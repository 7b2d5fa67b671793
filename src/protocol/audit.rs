//! The audit API, `GET /api/v1/audit`: its entries, its answer with the cursor of the next page,
//! and its query (kind, actions, actor, since, cursor, limit), read and checked here so that the
//! server and the CLI accept the same queries.
//!
//! The record has two streams: what operators did through the API, one entry per action, and
//! what agents did (enrollments, pending registrations), one entry per app id, action and hour
//! with a count, so that agent noise never pushes operator actions out.

use chrono::DateTime;
use serde::{Deserialize, Serialize};

use super::limits::{DURATION_LIKE, parse_duration, shown};

/// Read the audit record (GET).
pub const AUDIT_PATH: &str = "/api/v1/audit";
/// Entries listed when no limit is given.
pub const DEFAULT_AUDIT_LIMIT: usize = 100;
/// Longest `since` duration: ten years back.
pub const MAX_SINCE_SECS: u64 = 3650 * 86_400;
/// Longest `actor` filter.
pub const MAX_ACTOR_LEN: usize = 300;

/// Query key: most entries to list (1 to [`super::admin::MAX_LIST_LIMIT`]).
pub const QUERY_LIMIT: &str = "limit";
/// Query key: keep only these actions; repeatable, each a comma-separated list.
pub const QUERY_ACTION: &str = "action";
/// Query key: keep only this actor (`admin@10.0.0.9`, `agent:web-1`) or kind of actor (`admin`,
/// `agent`).
pub const QUERY_ACTOR: &str = "actor";
/// Query key: keep only entries at or after this RFC 3339 time, or within this duration (`1h`).
pub const QUERY_SINCE: &str = "since";
/// Query key: continue after this cursor (the `next` of the previous page).
pub const QUERY_AFTER: &str = "after";
/// Query key: which stream, `operator`, `agent` or `all`.
pub const QUERY_KIND: &str = "kind";

/// Every action the server records, for the check of an `action` filter.
pub const AUDIT_ACTIONS: &[&str] = &[
    "task.send",
    "task.cancel",
    "job.send",
    "job.pause",
    "job.resume",
    "job.cancel",
    "job.retry",
    "agent.accept",
    "agent.forget",
    "agent.enroll",
    "agent.pending",
    "token.create",
    "token.revoke",
    "agent.label",
    "operator.add",
    "operator.revoke",
    "operator.rotate",
    "access.denied",
    "file.upload",
    "server.backup",
];

/// One entry of the audit record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEntry {
    /// RFC 3339 time (of the first event, for an agent-made entry).
    pub at: String,
    /// Who: `NAME@ADDRESS` for an operator (`admin@ADDRESS` for the server's admin token),
    /// `agent:APP_ID` for an agent.
    pub actor: String,
    /// What, one of [`AUDIT_ACTIONS`].
    pub action: String,
    /// On what.
    pub target: String,
    /// More about it.
    pub detail: String,
    /// How many events this entry stands for: 1 for an operator action, the number of times an
    /// agent did it within the hour for an agent-made entry.
    #[serde(default = "one")]
    pub count: u64,
    /// RFC 3339 time of the latest of those events; absent for an operator action (and for
    /// agent entries written by servers before 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

fn one() -> u64 {
    1
}

/// Answer of `GET /api/v1/audit`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditList {
    /// The entries.
    pub entries: Vec<AuditEntry>,
    /// The `after` of the next page, when more entries match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Which stream of the record a listing reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// Operator actions (and entries of servers before 0.2, which kept one stream).
    Operator,
    /// What agents did, aggregated per app id, action and hour.
    Agent,
    /// Both, merged newest first.
    All,
}

impl AuditKind {
    /// Its name in a query.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Operator => "operator",
            AuditKind::Agent => "agent",
            AuditKind::All => "all",
        }
    }

    /// Reads `operator`, `agent` or `all`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "operator" => Ok(AuditKind::Operator),
            "agent" => Ok(AuditKind::Agent),
            "all" => Ok(AuditKind::All),
            other => Err(format!("kind {:?} must be operator, agent or all", shown(other))),
        }
    }
}

/// The lower bound of a listing in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditSince {
    /// This many seconds before the server's now.
    Ago(u64),
    /// This Unix time in milliseconds.
    At(i64),
}

impl AuditSince {
    /// Reads an RFC 3339 time (`2026-12-04T10:00:00Z`) or a duration (`1h`, `30m`, `7d`, `3600`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
            return Ok(AuditSince::At(time.timestamp_millis()));
        }
        if text.trim().starts_with(|c: char| c.is_ascii_digit()) && !text.contains(['-', ':']) {
            return parse_duration(text, MAX_SINCE_SECS, "the audit keeps").map(AuditSince::Ago);
        }
        Err(format!(
            "since {:?} is neither a time like 2026-12-04T10:00:00Z nor a duration like {DURATION_LIKE}",
            shown(text)
        ))
    }

    /// The bound in Unix milliseconds, counting a duration back from `now_ms`.
    pub fn to_ms(self, now_ms: i64) -> i64 {
        match self {
            AuditSince::At(ms) => ms,
            AuditSince::Ago(secs) => {
                now_ms.saturating_sub(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
            }
        }
    }
}

/// Where a page ends: the time and sequence number of its last entry. Shown as `TIME-SEQ`,
/// opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditCursor {
    /// Unix milliseconds of the entry.
    pub at_ms: u64,
    /// Its sequence number.
    pub seq: u64,
}

impl std::fmt::Display for AuditCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.at_ms, self.seq)
    }
}

impl AuditCursor {
    /// Reads a cursor the server returned.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("cursor {:?} is not one the server returned (TIME-SEQ)", shown(text));
        let (at, seq) = text.split_once('-').ok_or_else(bad)?;
        Ok(AuditCursor { at_ms: at.parse().map_err(|_| bad())?, seq: seq.parse().map_err(|_| bad())? })
    }
}

/// A query of the audit record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Most entries; the server's default when absent.
    pub limit: Option<usize>,
    /// Keep only these actions (any of them); every action when empty.
    pub actions: Vec<String>,
    /// Keep only this actor or kind of actor.
    pub actor: Option<String>,
    /// Keep only entries at or after this (an agent-made entry counts when its last event is).
    pub since: Option<AuditSince>,
    /// Continue after this cursor.
    pub after: Option<AuditCursor>,
    /// The stream; see [`AuditQuery::kind`] for the default.
    pub kind: Option<AuditKind>,
}

impl AuditQuery {
    /// The stream read: the one asked for, else both when an action or an actor is named (they
    /// already say what is wanted), else operator actions only, which agent noise cannot hide.
    pub fn kind(&self) -> AuditKind {
        match self.kind {
            Some(kind) => kind,
            None if !self.actions.is_empty() || self.actor.is_some() => AuditKind::All,
            None => AuditKind::Operator,
        }
    }

    /// The number of entries to list: the one asked for, or [`DEFAULT_AUDIT_LIMIT`], within 1 to
    /// [`super::admin::MAX_LIST_LIMIT`].
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_AUDIT_LIMIT).clamp(1, super::admin::MAX_LIST_LIMIT)
    }

    /// True when `actor` and `action` pass the action and actor filters.
    pub fn matches(&self, actor: &str, action: &str) -> bool {
        (self.actions.is_empty() || self.actions.iter().any(|a| a == action))
            && self.actor.as_deref().is_none_or(|wanted| actor_matches(wanted, actor))
    }

    /// Reads the query from its pairs; the error names the bad pair.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut query = AuditQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                QUERY_LIMIT => query.limit = Some(parse_limit(value)?),
                QUERY_ACTION => {
                    for action in value.split(',').map(str::trim) {
                        check_action(action)?;
                        query.actions.push(action.to_owned());
                    }
                }
                QUERY_ACTOR => query.actor = Some(check_actor(value)?.to_owned()),
                QUERY_SINCE => query.since = Some(AuditSince::parse(value)?),
                QUERY_AFTER => query.after = Some(AuditCursor::parse(value)?),
                QUERY_KIND => query.kind = Some(AuditKind::parse(value)?),
                other => return Err(format!("unknown query parameter {:?}", shown(other))),
            }
        }
        Ok(query)
    }
}

/// True when the filter `wanted` names `actor` exactly, or its kind: the part before `@` or `:`
/// (`admin` for every operator, `agent` for every agent).
pub fn actor_matches(wanted: &str, actor: &str) -> bool {
    wanted == actor || actor.split_once(['@', ':']).is_some_and(|(kind, _)| kind == wanted)
}

fn parse_limit(value: &str) -> Result<usize, String> {
    value.parse().map_err(|_| format!("limit {:?} is not a number of entries", shown(value)))
}

/// Checks that `action` is one the server records.
pub fn check_action(action: &str) -> Result<(), String> {
    if AUDIT_ACTIONS.contains(&action) {
        return Ok(());
    }
    Err(format!("unknown audit action {:?}; the actions are {}", shown(action), AUDIT_ACTIONS.join(", ")))
}

/// Checks an actor filter: 1 to [`MAX_ACTOR_LEN`] characters, no control character.
pub fn check_actor(actor: &str) -> Result<&str, String> {
    if actor.is_empty() || actor.chars().count() > MAX_ACTOR_LEN || actor.chars().any(char::is_control) {
        return Err(format!(
            "actor {:?} must be 1 to {MAX_ACTOR_LEN} characters without control characters, like \
             admin@10.0.0.9, agent:web-1, admin or agent",
            shown(actor)
        ));
    }
    Ok(actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_query_reads_every_filter_and_actions_from_lists_and_repeats() {
        let query = AuditQuery::from_pairs(&pairs(&[
            ("action", "agent.forget,token.revoke"),
            ("action", "task.send"),
            ("actor", "admin"),
            ("since", "2026-12-04T10:00:00Z"),
            ("after", "1733310000000-42"),
            ("limit", "5"),
        ]))
        .unwrap();
        assert_eq!(query.actions, ["agent.forget", "token.revoke", "task.send"]);
        assert_eq!(query.since, Some(AuditSince::At(1_796_378_400_000)));
        assert_eq!(query.after, Some(AuditCursor { at_ms: 1_733_310_000_000, seq: 42 }));
        assert_eq!((query.limit(), query.kind()), (5, AuditKind::All));
        assert_eq!(AuditQuery::default().kind(), AuditKind::Operator);
        assert_eq!(AuditQuery::default().limit(), DEFAULT_AUDIT_LIMIT);
    }

    #[test]
    fn bad_values_are_named() {
        let error = |k: &str, v: &str| AuditQuery::from_pairs(&pairs(&[(k, v)])).unwrap_err();
        assert!(
            error("action", "agent.forgot")
                .starts_with("unknown audit action \"agent.forgot\"; the actions are")
        );
        assert!(error("action", "").starts_with("unknown audit action \"\""));
        assert!(error("actor", "").starts_with("actor \"\" must be 1 to 300 characters"));
        assert_eq!(
            error("since", "yesterday"),
            "since \"yesterday\" is neither a time like 2026-12-04T10:00:00Z nor a duration like 24h, 30m, \
             7d or 3600 (seconds)"
        );
        assert_eq!(
            error("since", "1y"),
            "\"1y\" has an unknown unit 'y'; use s, m, h or d, like 24h, 30m, 7d or 3600 (seconds)"
        );
        assert_eq!(error("after", "12"), "cursor \"12\" is not one the server returned (TIME-SEQ)");
        assert_eq!(error("kind", "ops"), "kind \"ops\" must be operator, agent or all");
        assert_eq!(error("limit", "x"), "limit \"x\" is not a number of entries");
        assert_eq!(error("sort", "x"), "unknown query parameter \"sort\"");
    }

    #[test]
    fn since_takes_a_duration_back_from_now() {
        assert_eq!(AuditSince::parse("1h").unwrap().to_ms(10_000_000), 10_000_000 - 3_600_000);
        assert_eq!(AuditSince::parse("90").unwrap(), AuditSince::Ago(90));
        assert_eq!(AuditSince::At(5).to_ms(10_000_000), 5);
    }

    #[test]
    fn an_actor_filter_names_an_actor_or_its_kind() {
        assert!(actor_matches("admin@10.0.0.9", "admin@10.0.0.9"));
        assert!(actor_matches("admin", "admin@::1"));
        assert!(actor_matches("agent", "agent:web-1"));
        assert!(!actor_matches("agent:web", "agent:web-1"));
        assert!(!actor_matches("admin@10.0.0.1", "admin@10.0.0.9"));
    }

    #[test]
    fn a_cursor_reads_back_what_it_shows() {
        let cursor = AuditCursor { at_ms: 1_733_310_000_000, seq: 7 };
        assert_eq!(AuditCursor::parse(&cursor.to_string()), Ok(cursor));
    }
}
