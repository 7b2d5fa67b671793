//! The embedding API: the `TaskHandler` trait that runs one task, and the `TaskOutcome` it
//! returns, which the agent turns into a `reportTask` body.

use crate::protocol::WireTask;
use crate::protocol::wire::{DO_STATUS_FAILED, DO_STATUS_SUCCESS, DO_STATUS_TIMEOUT};

/// Runs tasks for the agent. Called on a worker thread, possibly for several tasks at once.
///
/// Any `Fn(&WireTask) -> TaskOutcome + Send + Sync` closure is a handler:
/// ```
/// use orange::agent::{TaskHandler, TaskOutcome};
/// let greet = |task: &orange::protocol::WireTask| TaskOutcome::success(format!("hello {}", task.payload));
/// let handler: std::sync::Arc<dyn TaskHandler> = std::sync::Arc::new(greet);
/// ```
pub trait TaskHandler: Send + Sync {
    /// Runs `task` to its end and says how it went. Must respect the task's timeout itself;
    /// a panic is caught and reported as a failure.
    fn run(&self, task: &WireTask) -> TaskOutcome;
}

impl<F> TaskHandler for F
where
    F: Fn(&WireTask) -> TaskOutcome + Send + Sync,
{
    fn run(&self, task: &WireTask) -> TaskOutcome {
        self(task)
    }
}

/// How a task ended, as reported in `do_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeStatus {
    /// Finished well (exit code 0); reported as `success`.
    Succeeded,
    /// Finished badly or could not run; reported as `failed`.
    Failed,
    /// Ran past its timeout and was stopped; reported as `timeout`.
    TimedOut,
}

impl OutcomeStatus {
    /// The wire `do_status` value.
    pub fn do_status(self) -> &'static str {
        match self {
            OutcomeStatus::Succeeded => DO_STATUS_SUCCESS,
            OutcomeStatus::Failed => DO_STATUS_FAILED,
            OutcomeStatus::TimedOut => DO_STATUS_TIMEOUT,
        }
    }
}

/// The result of running one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutcome {
    /// How it ended.
    pub status: OutcomeStatus,
    /// Exit code of the process, when there was one.
    pub exit_code: Option<i32>,
    /// Standard output (also sent as the original protocol's `result`).
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Why the task failed or did not run, in words.
    pub error: Option<String>,
}

impl TaskOutcome {
    /// A success with `stdout` as its output.
    pub fn success(stdout: impl Into<String>) -> Self {
        TaskOutcome {
            status: OutcomeStatus::Succeeded,
            exit_code: None,
            stdout: stdout.into(),
            stderr: String::new(),
            error: None,
        }
    }

    /// A failure explained by `error`.
    pub fn failed(error: impl Into<String>) -> Self {
        TaskOutcome {
            status: OutcomeStatus::Failed,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            error: Some(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closures_are_handlers_and_statuses_map_to_the_wire() {
        let handler = |task: &WireTask| TaskOutcome::success(task.payload.to_uppercase());
        let task = WireTask {
            task_id: "t".into(),
            task_type: "greet".into(),
            do_status: String::new(),
            create_at: String::new(),
            payload: "hi".into(),
            result: String::new(),
            timeout_secs: None,
        };
        assert_eq!(TaskHandler::run(&handler, &task).stdout, "HI");
        assert_eq!(OutcomeStatus::Succeeded.do_status(), "success");
        assert_eq!(OutcomeStatus::Failed.do_status(), "failed");
        assert_eq!(OutcomeStatus::TimedOut.do_status(), "timeout");
        assert_eq!(TaskOutcome::failed("no").error.as_deref(), Some("no"));
    }
}
