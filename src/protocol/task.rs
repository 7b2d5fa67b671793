//! The task state machine shared by every part of orange: the states a task moves through and
//! which moves are allowed, plus the task id type.

use serde::{Deserialize, Serialize};

/// A task id: a UUID v7, so ids sort by creation time. Minted by the server before any write,
/// which makes a store write under the same id idempotent.
pub type TaskId = uuid::Uuid;

/// Reads a task id as typed by an operator: a UUID, surrounding whitespace ignored. The error
/// names the text.
pub fn parse_task_id(text: &str) -> Result<TaskId, String> {
    TaskId::parse_str(text.trim()).map_err(|_| format!("{text:?} is not a task id (a UUID)"))
}

/// Mints a new task id.
pub fn new_task_id() -> TaskId {
    uuid::Uuid::now_v7()
}

/// Where a task is in its life. Serialized in snake_case (`timed_out`), which is also what the
/// admin API and `--json` output show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Waiting in its agent's queue.
    Queued,
    /// Handed to the agent by getTask; not yet reported.
    Delivered,
    /// The agent said it is running (`do_status: doing`).
    Running,
    /// Finished with success (exit code 0, or `success` from the original client).
    Succeeded,
    /// Finished unsuccessfully, or could not be run.
    Failed,
    /// Ran past its timeout and was stopped.
    TimedOut,
    /// Withdrawn or stopped by an operator.
    Cancelled,
    /// Never delivered before its time to live.
    Expired,
    /// Its agent went silent while it ran.
    Lost,
}

impl TaskStatus {
    /// True once the task can no longer change.
    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Delivered | TaskStatus::Running)
    }

    /// Whether the state machine allows moving from `self` to `next`.
    pub fn can_move_to(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Queued, Delivered | Cancelled | Expired) => true,
            // A fast task may be reported finished without a `doing` report first.
            (Delivered, Running) => true,
            (Delivered | Running, Succeeded | Failed | TimedOut | Cancelled | Lost) => true,
            _ => false,
        }
    }

    /// Every state, in the order a task may reach them.
    pub const ALL: [TaskStatus; 9] = [
        TaskStatus::Queued,
        TaskStatus::Delivered,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::TimedOut,
        TaskStatus::Cancelled,
        TaskStatus::Expired,
        TaskStatus::Lost,
    ];

    /// Reads a state by its lowercase name (`timed_out`); the error lists the names.
    pub fn parse(text: &str) -> Result<Self, String> {
        TaskStatus::ALL.into_iter().find(|status| status.as_str() == text).ok_or_else(|| {
            let names: Vec<&str> = TaskStatus::ALL.iter().map(|status| status.as_str()).collect();
            format!(
                "unknown task status {:?}; the states are {}",
                super::limits::shown(text),
                names.join(", ")
            )
        })
    }

    /// The lowercase name used in the admin API and CLI output.
    pub fn as_str(self) -> &'static str {
        use TaskStatus::*;
        match self {
            Queued => "queued",
            Delivered => "delivered",
            Running => "running",
            Succeeded => "succeeded",
            Failed => "failed",
            TimedOut => "timed_out",
            Cancelled => "cancelled",
            Expired => "expired",
            Lost => "lost",
        }
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskStatus::*;

    #[test]
    fn final_states_do_not_move() {
        for done in [Succeeded, Failed, TimedOut, Cancelled, Expired, Lost] {
            assert!(done.is_final());
            for next in [Queued, Delivered, Running, Succeeded, Failed] {
                assert!(!done.can_move_to(next), "{done} -> {next}");
            }
        }
    }

    #[test]
    fn the_happy_path_is_allowed_and_skipping_delivery_is_not() {
        assert!(Queued.can_move_to(Delivered));
        assert!(Delivered.can_move_to(Running));
        assert!(Running.can_move_to(Succeeded));
        assert!(Delivered.can_move_to(Failed));
        assert!(!Queued.can_move_to(Succeeded));
        assert!(!Running.can_move_to(Queued));
    }

    #[test]
    fn names_match_serde() {
        assert_eq!(serde_json::to_string(&TimedOut).unwrap(), "\"timed_out\"");
        assert_eq!(TimedOut.as_str(), "timed_out");
    }
}
