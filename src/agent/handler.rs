//! The embedding API: the `TaskHandler` trait that runs one task, the `TaskOutcome` it returns
//! (which the agent journals and reports), and the `TaskContext` through which a running task
//! learns that it was cancelled, streams its process output to the server and has its process
//! groups journaled.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::config::CANCEL_GRACE;
use super::control::TaskControl;
use super::process::GroupWatch;
use super::stream::{ChunkSink, TaskStream};
use crate::protocol::WireTask;
use crate::protocol::wire::{DO_STATUS_CANCELLED, DO_STATUS_FAILED, DO_STATUS_SUCCESS, DO_STATUS_TIMEOUT};

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

    /// Runs `task` with its context: the agent calls this one. The default ignores the context
    /// and calls [`TaskHandler::run`]; a handler that wants cancels or live output overrides it
    /// (or hands the context on, as an embedding program does with [`super::BuiltinExecutor`]).
    fn run_with(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        let _ = ctx;
        self.run(task)
    }

    /// The task features this handler applies (see [`crate::protocol::features`]), announced
    /// to the server so that it hands out only tasks the handler runs as asked. None by
    /// default: a handler that honours a task's `env` or `cwd` says so here (an embedding
    /// program that hands tasks to [`super::BuiltinExecutor`] may forward its features).
    fn features(&self) -> Vec<String> {
        Vec::new()
    }
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
    /// Stopped because an operator cancelled it; reported as `cancelled`.
    Cancelled,
}

impl OutcomeStatus {
    /// The wire `do_status` value.
    pub fn do_status(self) -> &'static str {
        match self {
            OutcomeStatus::Succeeded => DO_STATUS_SUCCESS,
            OutcomeStatus::Failed => DO_STATUS_FAILED,
            OutcomeStatus::TimedOut => DO_STATUS_TIMEOUT,
            OutcomeStatus::Cancelled => DO_STATUS_CANCELLED,
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
    /// Standard output, when it was not streamed.
    pub stdout: String,
    /// Standard error, when it was not streamed.
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
        TaskOutcome { error: Some(error.into()), ..TaskOutcome::success("") }
            .with_status(OutcomeStatus::Failed)
    }

    /// A cancellation explained by `error`.
    pub fn cancelled(error: impl Into<String>) -> Self {
        TaskOutcome::failed(error).with_status(OutcomeStatus::Cancelled)
    }

    fn with_status(self, status: OutcomeStatus) -> Self {
        TaskOutcome { status, ..self }
    }
}

/// A running task's view of the agent: whether it was cancelled, and (crate-internal) where its
/// process output streams to, how long a cancelled process may take to stop and who journals
/// its process groups.
pub struct TaskContext {
    control: Arc<TaskControl>,
    stream: Option<Arc<TaskStream>>,
    cancel_grace: Duration,
    watch: Option<Arc<dyn GroupWatch>>,
}

impl TaskContext {
    /// A context outside the agent: never cancelled, output captured into the outcome.
    pub fn detached() -> Self {
        TaskContext { control: Arc::default(), stream: None, cancel_grace: CANCEL_GRACE, watch: None }
    }

    /// The context of a task the agent runs.
    pub(crate) fn new(control: Arc<TaskControl>, stream: Arc<TaskStream>, cancel_grace: Duration) -> Self {
        TaskContext { control, stream: Some(stream), cancel_grace, watch: None }
    }

    /// The same context, with its processes' groups told to `watch`.
    pub(crate) fn watched_by(self, watch: Arc<dyn GroupWatch>) -> Self {
        TaskContext { watch: Some(watch), ..self }
    }

    /// True once an operator cancelled the task (or the server finished it): stop soon.
    pub fn is_cancelled(&self) -> bool {
        self.control.is_cancelled()
    }

    /// The flag a process supervisor watches.
    pub(crate) fn cancel_flag(&self) -> &AtomicBool {
        self.control.cancel_flag()
    }

    /// Time between SIGTERM and SIGKILL for a cancelled process group.
    pub(crate) fn cancel_grace(&self) -> Duration {
        self.cancel_grace
    }

    /// Who is told when a process group of the task starts and ends; `None` when detached.
    pub(crate) fn group_watch(&self) -> Option<&dyn GroupWatch> {
        self.watch.as_deref()
    }

    /// The agent's shared state, for a task that calls the server itself (file copy); `None`
    /// when detached.
    pub(crate) fn shared(&self) -> Option<&Arc<super::shared::Shared>> {
        self.stream.as_ref().map(|stream| stream.shared())
    }

    /// A sink streaming process output to the server; `None` when detached (capture instead).
    pub(crate) fn output_sink(&self) -> Option<ChunkSink> {
        self.stream.as_ref().map(|stream| ChunkSink::new(Arc::clone(stream)))
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
            env: Default::default(),
            cwd: None,
            user: None,
            stdin: Vec::new(),
            attempt: None,
            more: Vec::new(),
        };
        assert_eq!(TaskHandler::run(&handler, &task).stdout, "HI");
        assert_eq!(handler.run_with(&task, &TaskContext::detached()).stdout, "HI");
        assert_eq!(OutcomeStatus::Succeeded.do_status(), "success");
        assert_eq!(OutcomeStatus::Failed.do_status(), "failed");
        assert_eq!(OutcomeStatus::TimedOut.do_status(), "timeout");
        assert_eq!(OutcomeStatus::Cancelled.do_status(), "cancelled");
        assert_eq!(TaskOutcome::failed("no").error.as_deref(), Some("no"));
        let cancelled = TaskOutcome::cancelled("stop");
        assert_eq!((cancelled.status, cancelled.error.as_deref()), (OutcomeStatus::Cancelled, Some("stop")));
        assert!(!TaskContext::detached().is_cancelled());
        assert!(handler.features().is_empty(), "a closure announces no task feature");
    }
}
