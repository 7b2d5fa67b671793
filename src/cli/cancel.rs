//! `orange task cancel`, and [`request_cancel`], the cancel call it shares with Ctrl-C in
//! `orange task run`.

use anyhow::{Result, bail};
use argh::{ArgsInfo, FromArgs};

use super::flags::check_task_id;
use super::operator::{Api, OperatorConfig, operator_args, operator_flags};
use super::output;
use crate::client::{ADMIN_TIMEOUT, ClientError};
use crate::protocol::TaskStatus;
use crate::protocol::admin::{self, CancelRequest, TaskView};

operator_args! {
    /// Cancel a task: withdraw it from its queue, or have its agent stop it.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "cancel",
        example = "orange task cancel 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        example = "orange task cancel --force 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        note = "A queued task ends `cancelled` at once. A delivered or running task is stopped by its \
                agent (SIGTERM to its process group, a grace period, then SIGKILL) the next time the \
                agent talks to the server; until the agent confirms, the task stays running and shows \
                `cancel requested` (wait for the end with `orange task get ID --wait 60`). --force ends \
                the task `cancelled` on the server at once, for an agent that is gone for good; the agent \
                is still told to stop it, but nothing waits for that. Prints one line saying where the \
                task stands (--json: the task). Cancelling a task that is already cancelled succeeds \
                and says so, so scripts may repeat a cancel; cancelling a task that finished otherwise \
                is an error. Connection options as in `orange task run --help`.",
        error_code(1, "the task had already finished (not as cancelled), is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct CancelArgs {
        /// the task id
        #[argh(positional)]
        pub id: String,
        /// end the task on the server at once, without waiting for its agent to confirm
        #[argh(switch)]
        pub force: bool,
    }
    /// print the task as JSON
    json
}

/// What a cancel call found.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// The server took the cancel: the task as it is now (cancelled, or cancel requested).
    Taken(TaskView),
    /// The task had already finished (HTTP 409): the task as it ended.
    AlreadyFinished(TaskView),
}

/// Runs `orange task cancel` and returns the exit code.
pub fn cancel(args: CancelArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let task_id = check_task_id(&args.id)?;
    let (task, already) = match request_cancel(&config.api(ADMIN_TIMEOUT), &task_id, args.force)? {
        CancelOutcome::Taken(task) => (task, false),
        CancelOutcome::AlreadyFinished(task) if task.status == TaskStatus::Cancelled => (task, true),
        CancelOutcome::AlreadyFinished(task) => {
            bail!("cannot cancel task {task_id}: it already finished as {}", task.status)
        }
    };
    if config.json {
        output::print_json(&task)?
    } else {
        output::emit(&output::cancel_line(&task, already))?
    }
    Ok(0)
}

/// Asks the server to cancel `task_id`; on a 409 (already finished) fetches the task to say how
/// it ended.
pub fn request_cancel(api: &Api, task_id: &str, force: bool) -> Result<CancelOutcome> {
    let path = admin::cancel_path(task_id);
    match api.try_post(&path, &CancelRequest { force }) {
        Ok(task) => Ok(CancelOutcome::Taken(task)),
        Err(error @ ClientError::Api { status: 409, .. }) => match api.get(&admin::task_path(task_id)) {
            Ok(task) => Ok(CancelOutcome::AlreadyFinished(task)),
            Err(_) => Err(api.explain("POST", &path, error)),
        },
        Err(error) => Err(api.explain("POST", &path, error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::follow::tests::ID;
    use crate::cli::operator::tests::token_file;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    #[test]
    fn a_cancel_posts_force_and_returns_the_task() {
        let mut running = sample_task(ID, "web-1", Running, None);
        running.cancel_requested = true;
        let api = FakeApi::serve(vec![FakeApi::ok(&running)]);
        assert_eq!(request_cancel(&api.client(), ID, false).unwrap(), CancelOutcome::Taken(running));
        let seen = api.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str(), seen[0].body.as_str()),
            ("POST", format!("/api/v1/tasks/{ID}/cancel").as_str(), r#"{"force":false}"#)
        );
    }

    #[test]
    fn a_finished_task_is_fetched_to_say_how_it_ended() {
        let done = sample_task(ID, "web-1", Succeeded, Some(0));
        let api = FakeApi::serve(vec![
            FakeApi::error("409 Conflict", &format!("task {ID} already finished as succeeded")),
            FakeApi::ok(&done),
        ]);
        assert_eq!(request_cancel(&api.client(), ID, true).unwrap(), CancelOutcome::AlreadyFinished(done));
        let seen = api.seen();
        assert_eq!(seen[0].body, r#"{"force":true}"#);
        assert_eq!((seen[1].method.as_str(), seen[1].target.clone()), ("GET", format!("/api/v1/tasks/{ID}")));
    }

    #[test]
    fn the_409_message_names_how_the_task_ended() {
        let done = sample_task(ID, "web-1", Succeeded, Some(0));
        let api = FakeApi::serve(vec![
            FakeApi::error("409 Conflict", &format!("task {ID} already finished as succeeded")),
            FakeApi::ok(&done),
        ]);
        let args =
            CancelArgs::from_args(&["cancel"], &[ID, "--server", &api.url, "--token-file", token_file()])
                .unwrap();
        let error = cancel(args).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("cannot cancel task {ID}: it already finished as succeeded")
        );
    }

    #[test]
    fn an_already_cancelled_task_is_not_an_error() {
        let cancelled = sample_task(ID, "web-1", Cancelled, None);
        let api = FakeApi::serve(vec![
            FakeApi::error("409 Conflict", &format!("task {ID} already finished as cancelled")),
            FakeApi::ok(&cancelled),
        ]);
        let args = CancelArgs::from_args(
            &["cancel"],
            &[ID, "--json", "--server", &api.url, "--token-file", token_file()],
        )
        .unwrap();
        assert_eq!(cancel(args).unwrap(), 0);
    }

    #[test]
    fn when_the_task_cannot_be_fetched_the_servers_409_message_is_kept() {
        let api = FakeApi::serve(vec![FakeApi::error(
            "409 Conflict",
            &format!("task {ID} already finished as failed"),
        )]);
        let error = request_cancel(&api.client(), ID, false).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!(
                "POST {}/api/v1/tasks/{ID}/cancel: task {ID} already finished as failed (HTTP 409)",
                api.url
            )
        );
    }

    #[test]
    fn an_unknown_task_names_the_call() {
        let api = FakeApi::serve(vec![FakeApi::error("404 Not Found", &format!("unknown task {ID}"))]);
        let error = request_cancel(&api.client(), ID, false).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("POST {}/api/v1/tasks/{ID}/cancel: unknown task {ID} (HTTP 404)", api.url)
        );
    }
}
