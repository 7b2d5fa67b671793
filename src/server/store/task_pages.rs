//! Pages of the task list: tasks newest first, of one agent (through the `by_agent` index) or
//! of all, older than a cursor, kept by a filter, stopping at a creation time, with the cursor of
//! the next page when more tasks may match.

use super::records::TaskRecord;
use super::trees::Trees;
use super::tx::{agent_prefix, agent_task_key, task_id_from};
use super::{Store, StoreError};
use crate::protocol::TaskId;

/// Slack on the time bound, in milliseconds: a task id's time and the task's creation time are
/// read from the same clock a moment apart, so the scan goes on a little past the bound.
const ID_TIME_SLACK_MS: i64 = 1_000;

/// What a page asks for.
pub struct TaskPageQuery<'a> {
    /// Only tasks of this agent.
    pub app_id: Option<&'a str>,
    /// Only tasks older than this one (the previous page's cursor).
    pub before: Option<TaskId>,
    /// Stop at tasks created before this (Unix milliseconds).
    pub since_ms: Option<i64>,
    /// Most tasks to return.
    pub limit: usize,
    /// Most tasks to read; a page that reaches it ends with a cursor.
    pub max_scan: usize,
}

/// One page of tasks.
#[derive(Debug)]
pub struct TaskPage {
    /// The tasks, newest first.
    pub tasks: Vec<TaskRecord>,
    /// Where the next page starts, when more tasks may match.
    pub next: Option<TaskId>,
}

impl Store {
    /// The tasks `query` asks for that `keep` accepts, newest first. Reads one match past the
    /// limit (within `max_scan`) to know whether there is a next page.
    pub fn task_page(
        &self,
        query: &TaskPageQuery<'_>,
        keep: impl Fn(&TaskRecord) -> bool,
    ) -> Result<TaskPage, StoreError> {
        // Held for the whole scan, so that a compaction cannot swap the trees under it.
        let trees = self.trees();
        let mut tasks = Vec::new();
        for (scanned, id) in task_ids_newest_first(&trees, query.app_id, query.before).enumerate() {
            let id = id?;
            if query.since_ms.is_some_and(|since| id_ms(id) < since.saturating_sub(ID_TIME_SLACK_MS)) {
                break;
            }
            if scanned == query.max_scan {
                let next = tasks.last().map_or(id, |task: &TaskRecord| task.id);
                return Ok(TaskPage { tasks, next: Some(next) });
            }
            let Some(task) = self.task(id)? else { continue };
            let created_ms = task.history.first().map_or(0, |(_, ms)| *ms);
            if query.since_ms.is_some_and(|since| created_ms < since) || !keep(&task) {
                continue;
            }
            if tasks.len() == query.limit {
                let next = tasks.last().map(|task: &TaskRecord| task.id);
                return Ok(TaskPage { tasks, next });
            }
            tasks.push(task);
        }
        Ok(TaskPage { tasks, next: None })
    }
}

/// Task ids, newest first, of one agent or of all, older than `before` if given.
fn task_ids_newest_first(
    trees: &Trees,
    app_id: Option<&str>,
    before: Option<TaskId>,
) -> Box<dyn Iterator<Item = Result<TaskId, StoreError>>> {
    match app_id {
        None => {
            let keys = match before {
                Some(before) => trees.tasks.range(..before.as_bytes().to_vec()),
                None => trees.tasks.iter(),
            };
            Box::new(keys.keys().rev().map(|key| task_id_from(&key?)))
        }
        Some(app_id) => {
            let prefix = agent_prefix(app_id);
            let keys = match before {
                Some(before) => trees.by_agent.range(prefix.clone()..agent_task_key(app_id, before)),
                None => trees.by_agent.scan_prefix(&prefix),
            };
            Box::new(keys.keys().rev().map(move |key| task_id_from(&key?[prefix.len()..])))
        }
    }
}

/// The Unix milliseconds a UUID v7 task id was minted at (0 for another kind of id).
fn id_ms(id: TaskId) -> i64 {
    id.get_timestamp().map_or(0, |at| {
        let (secs, nanos) = at.to_unix();
        i64::try_from(secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000)
            .saturating_add(i64::from(nanos / 1_000_000))
    })
}
