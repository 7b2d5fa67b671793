//! The query of a task list, `GET /api/v1/tasks?app_id=&status=&since=&after=&limit=`: its keys,
//! how it is read and checked (the server and the CLI accept the same queries), written back as
//! query pairs, and matched against a task. Times and limits read as the audit query's do.

use chrono::DateTime;

use super::admin::{MAX_LIST_LIMIT, TaskView};
use super::audit::{AuditSince, QUERY_AFTER, QUERY_LIMIT, QUERY_SINCE};
use super::limits::shown;
use super::task::{TaskId, TaskStatus, parse_task_id};

/// Query key: only tasks of this agent.
pub const QUERY_APP_ID: &str = "app_id";
/// Query key: the same as [`QUERY_APP_ID`], under the name the CLI's flag has.
pub const QUERY_AGENT: &str = "agent";
/// Query key: only tasks in one of these states; repeatable, each a comma-separated list.
pub const QUERY_STATUS: &str = "status";
/// Tasks listed when no limit is given.
pub const DEFAULT_TASK_LIMIT: usize = 100;
/// Most tasks one page reads while looking for matches: a page that reaches it ends early,
/// with a `next` cursor, so that a rare status never makes one request read the whole store.
pub const MAX_TASK_SCAN: usize = 20_000;

/// A query of the task list. Tasks are listed newest first; a page continues after the task
/// named by `after` (the `next` of the previous page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only tasks of this agent.
    pub app_id: Option<String>,
    /// Only tasks in one of these states; every state when empty.
    pub statuses: Vec<TaskStatus>,
    /// Only tasks created at or after this.
    pub since: Option<AuditSince>,
    /// Only tasks older than this one.
    pub after: Option<TaskId>,
    /// Most tasks; the server's default when absent.
    pub limit: Option<usize>,
}

impl TaskQuery {
    /// The number of tasks to list: the one asked for, or [`DEFAULT_TASK_LIMIT`], within 1 to
    /// [`MAX_LIST_LIMIT`] (older servers clamped too, so a limit out of range is not refused).
    pub fn limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_TASK_LIMIT).clamp(1, MAX_LIST_LIMIT)
    }

    /// True when a filter (agent, status, since) is given.
    pub fn filters(&self) -> bool {
        self.app_id.is_some() || !self.statuses.is_empty() || self.since.is_some()
    }

    /// Reads the query from its pairs; the error names the bad pair.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, String> {
        let mut query = TaskQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                QUERY_APP_ID | QUERY_AGENT => {
                    super::wire::check_app_id(value)?;
                    if query.app_id.as_ref().is_some_and(|seen| seen != value) {
                        return Err(format!("only one agent may be named, not {:?} too", shown(value)));
                    }
                    query.app_id = Some(value.clone());
                }
                QUERY_STATUS => {
                    for name in value.split(',').map(str::trim) {
                        let status = TaskStatus::parse(name)?;
                        if !query.statuses.contains(&status) {
                            query.statuses.push(status);
                        }
                    }
                }
                QUERY_SINCE => query.since = Some(AuditSince::parse(value)?),
                QUERY_AFTER => query.after = Some(parse_cursor(value)?),
                QUERY_LIMIT => query.limit = Some(parse_limit(value)?),
                other => return Err(format!("unknown query parameter {:?}", shown(other))),
            }
        }
        Ok(query)
    }

    /// The query as pairs, in the order `from_pairs` reads them back; `since` is `since_text`,
    /// as typed (a duration is counted back by the server's clock).
    pub fn to_pairs(&self, since_text: Option<&str>) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        if let Some(app_id) = &self.app_id {
            pairs.push((QUERY_APP_ID.to_owned(), app_id.clone()));
        }
        if !self.statuses.is_empty() {
            let names: Vec<&str> = self.statuses.iter().map(|status| status.as_str()).collect();
            pairs.push((QUERY_STATUS.to_owned(), names.join(",")));
        }
        if let Some(since) = since_text {
            pairs.push((QUERY_SINCE.to_owned(), since.to_owned()));
        }
        if let Some(after) = self.after {
            pairs.push((QUERY_AFTER.to_owned(), after.to_string()));
        }
        if let Some(limit) = self.limit {
            pairs.push((QUERY_LIMIT.to_owned(), limit.to_string()));
        }
        pairs
    }

    /// True when a task of agent `app_id` in state `status`, created at `created_ms` (Unix
    /// milliseconds), passes the agent, status and time filters, durations counted back from
    /// `now_ms`.
    pub fn matches(&self, app_id: &str, status: TaskStatus, created_ms: i64, now_ms: i64) -> bool {
        self.app_id.as_deref().is_none_or(|wanted| wanted == app_id)
            && (self.statuses.is_empty() || self.statuses.contains(&status))
            && self.since.is_none_or(|since| created_ms >= since.to_ms(now_ms))
    }

    /// [`TaskQuery::matches`] for a task view (its creation is its first state's time; a view
    /// without one passes the time filter).
    pub fn matches_view(&self, task: &TaskView, now_ms: i64) -> bool {
        let created_ms = task
            .history
            .first()
            .and_then(|step| DateTime::parse_from_rfc3339(&step.at).ok())
            .map_or(i64::MAX, |at| at.timestamp_millis());
        self.matches(&task.app_id, task.status, created_ms, now_ms)
    }
}

/// Reads a page cursor: the task id the previous page ended with.
pub fn parse_cursor(text: &str) -> Result<TaskId, String> {
    parse_task_id(text)
        .map_err(|_| format!("cursor {:?} is not one the server returned (a task id)", shown(text)))
}

fn parse_limit(value: &str) -> Result<usize, String> {
    value.parse().map_err(|_| format!("limit {:?} is not a number of tasks", shown(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskStatus::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_query_reads_every_filter_and_writes_it_back() {
        let cursor = "0190a1b2-0000-7000-8000-000000000001";
        let read = pairs(&[
            ("agent", "web-1"),
            ("status", "queued,running"),
            ("status", "running,lost"),
            ("since", "1h"),
            ("after", cursor),
            ("limit", "5"),
        ]);
        let query = TaskQuery::from_pairs(&read).unwrap();
        assert_eq!(query.app_id.as_deref(), Some("web-1"));
        assert_eq!(query.statuses, [Queued, Running, Lost]);
        assert_eq!(query.since, Some(AuditSince::Ago(3600)));
        assert_eq!(query.after.map(|id| id.to_string()).as_deref(), Some(cursor));
        assert_eq!((query.limit(), query.filters()), (5, true));
        let written = query.to_pairs(Some("1h"));
        assert_eq!(TaskQuery::from_pairs(&written).unwrap(), query);
        assert_eq!(written[1], ("status".to_owned(), "queued,running,lost".to_owned()));
        assert_eq!(TaskQuery::default().limit(), DEFAULT_TASK_LIMIT);
        assert!(!TaskQuery::default().filters());
        assert_eq!(TaskQuery::from_pairs(&pairs(&[("limit", "0")])).unwrap().limit(), 1);
    }

    #[test]
    fn bad_values_are_named() {
        let error = |k: &str, v: &str| TaskQuery::from_pairs(&pairs(&[(k, v)])).unwrap_err();
        assert!(error("status", "done").starts_with("unknown task status \"done\"; the states are queued,"));
        assert!(error("status", "").starts_with("unknown task status \"\""));
        assert!(error("since", "yesterday").starts_with("since \"yesterday\" is neither a time"));
        assert_eq!(error("after", "12"), "cursor \"12\" is not one the server returned (a task id)");
        assert_eq!(error("limit", "x"), "limit \"x\" is not a number of tasks");
        assert_eq!(error("sort", "x"), "unknown query parameter \"sort\"");
        assert!(error("app_id", "../x").contains("may only hold"));
        let two = TaskQuery::from_pairs(&pairs(&[("app_id", "a"), ("agent", "b")])).unwrap_err();
        assert_eq!(two, "only one agent may be named, not \"b\" too");
    }

    #[test]
    fn a_task_matches_every_filter_given() {
        let query = TaskQuery {
            app_id: Some("w1".into()),
            statuses: vec![Queued],
            since: Some(AuditSince::Ago(60)),
            ..TaskQuery::default()
        };
        let now = 1_000_000;
        assert!(query.matches("w1", Queued, now - 60_000, now));
        assert!(!query.matches("w1", Queued, now - 60_001, now));
        assert!(!query.matches("w2", Queued, now, now));
        assert!(!query.matches("w1", Lost, now, now));
        assert!(TaskQuery::default().matches("w2", Lost, 0, now));
    }
}
