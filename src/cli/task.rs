//! `orange task ...`: the subcommands and their dispatch; `send` (give a task to several hosts),
//! `get` (show one task) and `list` (list tasks), plus the checks of ids and durations the other
//! task commands share. `run`, `logs` and `cancel` live in their own modules.

use std::time::{Duration, Instant};

use anyhow::Result;
use argh::FromArgs;

use super::argv::usage_bail;
use super::cancel::{self, CancelArgs};
use super::flags::{check_cwd_flag, check_env, check_secret_env, check_task_id, check_timeout, check_ttl};
use super::follow::{self, LogsArgs};
use super::operator::{OperatorConfig, encode, operator_args, operator_flags};
use super::output;
use super::run::{self, RunArgs};
use super::wait::{wait_task, wait_timeout};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, EnqueueReply, EnqueueRequest, TaskList};

/// Run, send, follow, cancel, show and list tasks.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "task",
    example = "orange task run --appid web-1 -- uptime",
    example = "orange task send --all --type shell --payload 'apt-get update'",
    example = "orange task logs -f 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
    example = "orange task list --appid web-1 --limit 20"
)]
pub struct TaskArgs {
    /// what to do
    #[argh(subcommand)]
    pub command: TaskCommand,
}

/// The `orange task` subcommands.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum TaskCommand {
    /// `orange task run`
    Run(RunArgs),
    /// `orange task send`
    Send(SendArgs),
    /// `orange task logs`
    Logs(LogsArgs),
    /// `orange task cancel`
    Cancel(CancelArgs),
    /// `orange task get`
    Get(GetArgs),
    /// `orange task list`
    List(ListArgs),
}

operator_args! {
    /// Give a task to some hosts, or all, without waiting; prints one task id per line.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "send",
        example = "orange task send --appid web-1,web-2 --type shell --payload 'apt-get update'",
        example = "orange task send --all --type ping",
        example = "orange task send --appid laptop-7 --type shell --ttl 3600 --payload 'apt-get -y upgrade'",
        note = "One task is created per host, queued whether its agent is online or not. A task whose \
                agent does not come back within its time to live (--ttl, else the server's default of \
                24 hours) ends `expired`. Follow them with `orange task logs -f ID`, `orange task get ID \
                --wait 50` or `orange task list`; stop one with `orange task cancel ID`. Connection \
                options as in `orange task run --help`."
    )]
    pub struct SendArgs {
        /// app ids to send to, comma separated (repeatable)
        #[argh(option)]
        pub appid: Vec<String>,
        /// send to every registered agent instead
        #[argh(switch)]
        pub all: bool,
        /// task type: ping, shell or the name of a handler on the host
        #[argh(option, long = "type")]
        pub task_type: String,
        /// the task's input, e.g. the command line of a shell task (default: empty)
        #[argh(option, default = "String::new()")]
        pub payload: String,
        /// seconds the task may run on the host (default: the server's --default-timeout)
        #[argh(option)]
        pub timeout: Option<u64>,
        /// seconds the task may wait queued for an offline agent before it ends `expired` (default:
        /// the server's, 24 hours)
        #[argh(option)]
        pub ttl: Option<u64>,
        /// environment variable NAME=value for the command (repeatable); the agent must support
        /// the `env` task feature
        #[argh(option)]
        pub env: Vec<String>,
        /// environment variable NAME whose value is read from orange's own environment and kept
        /// secret (repeatable): never shown by task get, the audit or logs, and dropped from the
        /// server once the task ends; the agents must support the `env` task feature
        #[argh(option)]
        pub secret_env: Vec<String>,
        /// working directory of the command on the host (an absolute path); the agent must
        /// support the `cwd` task feature
        #[argh(option)]
        pub cwd: Option<String>,
    }
    /// print the server's answer (the created tasks) as JSON
    json
}

operator_args! {
    /// Show one task: its state, history, exit code and captured output.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "get",
        example = "orange task get 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b --wait 60",
        note = "Shows every state the task reached, one per line in the order reached (a task handed \
                out again after a lost delivery shows `delivered` twice), `(cancel requested)` after \
                the status while a cancel waits for the agent, and how many bytes of output the \
                server's output cap dropped from the middle, if any (the kept head and tail are shown). \
                With --wait the command returns as soon as the task is finished, or when the wait is \
                over, and shows the task either way. Connection options as in `orange task run --help`."
    )]
    pub struct GetArgs {
        /// the task id
        #[argh(positional)]
        pub id: String,
        /// seconds to wait for the task to finish first (default 0)
        #[argh(option, default = "0")]
        pub wait: u64,
    }
    /// print the task as JSON
    json
}

operator_args! {
    /// List tasks, newest first.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "list",
        example = "orange task list --appid web-1 --limit 20",
        note = "Connection options as in `orange task run --help`."
    )]
    pub struct ListArgs {
        /// only tasks of this app id
        #[argh(option)]
        pub appid: Option<String>,
        /// most tasks to show, 1 to 1000 (default: the server's, 100)
        #[argh(option)]
        pub limit: Option<usize>,
    }
    /// print the list as JSON
    json
}

/// Runs an `orange task` subcommand and returns the exit code.
pub fn run(args: TaskArgs) -> Result<i32> {
    match args.command {
        TaskCommand::Run(args) => run::run_remote(args),
        TaskCommand::Send(args) => send(args),
        TaskCommand::Logs(args) => follow::logs(args),
        TaskCommand::Cancel(args) => cancel::cancel(args),
        TaskCommand::Get(args) => get(args),
        TaskCommand::List(args) => list(args),
    }
}

fn send(args: SendArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    if args.task_type.trim().is_empty() {
        usage_bail!("--type must name a task type: ping, shell or a handler");
    }
    let request = EnqueueRequest {
        stdin: Vec::new(),
        app_ids: targets(&args.appid, args.all)?,
        all: args.all,
        task_type: args.task_type,
        payload: args.payload,
        timeout_secs: check_timeout(args.timeout)?,
        ttl_secs: check_ttl(args.ttl)?,
        env: check_env(&args.env)?,
        secret_env: check_secret_env(&args.secret_env)?,
        cwd: check_cwd_flag(args.cwd)?,
        require_online: false,
    };
    let reply: EnqueueReply = config.api(ADMIN_TIMEOUT).post(admin::TASKS_PATH, &request)?;
    if config.json {
        output::print_json(&reply)?;
    } else {
        output::emit(&reply.tasks.iter().map(|task| format!("{}\n", task.task_id)).collect::<String>())?;
    }
    Ok(0)
}

/// The app ids of `send`: from `--appid` (empty with `--all`); exactly one of the two is needed.
fn targets(appid: &[String], all: bool) -> Result<Vec<String>> {
    match (appid.is_empty(), all) {
        (true, false) => usage_bail!("say where to send: --appid ID[,ID...] or --all"),
        (false, true) => usage_bail!("give either --appid or --all, not both"),
        (true, true) => Ok(Vec::new()),
        (false, false) => parse_app_ids(appid),
    }
}

/// Splits `--appid` values at commas; refuses empty items and repeats.
pub(super) fn parse_app_ids(values: &[String]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for value in values {
        for id in value.split(',').map(str::trim) {
            if id.is_empty() {
                usage_bail!("--appid {value:?} has an empty app id");
            }
            if ids.iter().any(|seen| seen == id) {
                usage_bail!("--appid lists {id:?} twice");
            }
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn get(args: GetArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let task_id = check_task_id(&args.id)?;
    let deadline = Instant::now() + Duration::from_secs(args.wait);
    let task = wait_task(&config.api(wait_timeout()), &task_id, Some(deadline))?;
    if config.json {
        output::print_json(&task)?
    } else {
        output::emit(&output::task_detail(&task))?
    }
    Ok(0)
}

fn list(args: ListArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let path = list_path(args.appid.as_deref(), args.limit)?;
    let list: TaskList = config.api(ADMIN_TIMEOUT).get(&path)?;
    if config.json {
        output::print_json(&list)?
    } else {
        output::emit(&output::tasks_table(&list.tasks))?
    }
    Ok(0)
}

/// `GET /api/v1/tasks` with the filters given.
fn list_path(app_id: Option<&str>, limit: Option<usize>) -> Result<String> {
    let mut query = Vec::new();
    if let Some(app_id) = app_id {
        query.push(format!("app_id={}", encode(app_id)));
    }
    if let Some(limit) = limit {
        if limit == 0 || limit > admin::MAX_LIST_LIMIT {
            usage_bail!("--limit {limit} must be between 1 and {}", admin::MAX_LIST_LIMIT);
        }
        query.push(format!("limit={limit}"));
    }
    if query.is_empty() {
        return Ok(admin::TASKS_PATH.to_owned());
    }
    Ok(format!("{}?{}", admin::TASKS_PATH, query.join("&")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::follow::tests::ID;
    use crate::cli::operator::tests::token_file;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn app_ids_split_at_commas_and_refuse_empty_items() {
        assert_eq!(parse_app_ids(&words(&["a,b", "c"])).unwrap(), words(&["a", "b", "c"]));
        assert_eq!(parse_app_ids(&words(&[" a , b "])).unwrap(), words(&["a", "b"]));
        assert_eq!(
            parse_app_ids(&words(&["a,,b"])).unwrap_err().to_string(),
            "--appid \"a,,b\" has an empty app id"
        );
        assert!(parse_app_ids(&words(&["a,"])).is_err());
        assert!(parse_app_ids(&words(&[""])).is_err());
        assert_eq!(
            parse_app_ids(&words(&["a,b", "a"])).unwrap_err().to_string(),
            "--appid lists \"a\" twice"
        );
    }

    #[test]
    fn send_needs_exactly_one_of_appid_and_all() {
        assert_eq!(targets(&[], true).unwrap(), Vec::<String>::new());
        assert_eq!(targets(&words(&["x"]), false).unwrap(), words(&["x"]));
        assert!(targets(&[], false).unwrap_err().to_string().contains("--appid ID[,ID...] or --all"));
        assert_eq!(
            targets(&words(&["x"]), true).unwrap_err().to_string(),
            "give either --appid or --all, not both"
        );
    }

    #[test]
    fn send_passes_the_ttl_to_the_server() {
        let reply = EnqueueReply { tasks: vec![sample_task(ID, "web-1", Queued, None)] };
        let api = FakeApi::serve(vec![FakeApi::ok(&reply)]);
        let argv = [
            "--appid",
            "web-1",
            "--type",
            "ping",
            "--ttl",
            "3600",
            "--server",
            &api.url,
            "--token-file",
            token_file(),
        ];
        assert_eq!(send(SendArgs::from_args(&["send"], &argv).unwrap()).unwrap(), 0);
        let body: serde_json::Value = serde_json::from_str(&api.seen()[0].body).unwrap();
        assert_eq!((body["ttl_secs"].as_u64(), body["timeout_secs"].is_null()), (Some(3600), true));
    }

    #[test]
    fn list_paths_carry_encoded_filters_and_checked_limits() {
        assert_eq!(list_path(None, None).unwrap(), "/api/v1/tasks");
        assert_eq!(list_path(Some("web 1"), Some(5)).unwrap(), "/api/v1/tasks?app_id=web%201&limit=5");
        assert!(list_path(None, Some(0)).is_err());
        assert!(list_path(None, Some(admin::MAX_LIST_LIMIT + 1)).is_err());
    }

    #[test]
    fn every_subcommand_parses() {
        let parse = |argv: &[&str]| TaskArgs::from_args(&["task"], argv).map(|args| args.command);
        assert!(matches!(
            parse(&["cancel", "--force", ID]),
            Ok(TaskCommand::Cancel(CancelArgs { force: true, .. }))
        ));
        assert!(matches!(parse(&["logs", "-f", ID]), Ok(TaskCommand::Logs(LogsArgs { follow: true, .. }))));
        assert!(matches!(
            parse(&["send", "--all", "--type", "ping", "--ttl", "9"]),
            Ok(TaskCommand::Send(SendArgs { ttl: Some(9), .. }))
        ));
        assert!(matches!(
            parse(&["run", "--appid", "a", "--queue", "--", "true"]),
            Ok(TaskCommand::Run(RunArgs { queue: true, .. }))
        ));
    }
}
