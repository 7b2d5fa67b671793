//! `orange task ...`: the subcommands and their dispatch; `send` (give a task to several hosts),
//! `get` (show one task) and `list` (list tasks), plus the checks of ids and durations the other
//! task commands share. `run`, `logs` and `cancel` live in their own modules.

use std::time::{Duration, Instant};

use anyhow::Result;
use argh::{ArgsInfo, FromArgs};

use super::argv::{usage, usage_bail};
use super::cancel::{self, CancelArgs};
use super::flags::{
    check_cwd_flag, check_env, check_secret_env, check_task_id, check_timeout, check_ttl, check_user_flag,
};
use super::follow::{self, LogsArgs};
use super::operator::{OperatorConfig, encode, operator_args, operator_flags};
use super::output::{self, Printed};
use super::run::{self, RunArgs};
use super::wait::{wait_task, wait_timeout};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, EnqueueReply, EnqueueRequest, TaskList};
use crate::protocol::audit;
use crate::protocol::task_query::{self, TaskQuery};

/// Run, send, follow, cancel, show and list tasks.
#[derive(FromArgs, ArgsInfo, Debug)]
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
#[derive(FromArgs, ArgsInfo, Debug)]
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
    #[derive(FromArgs, ArgsInfo, Debug)]
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
        /// user the command runs as on the host; its agent must run as root and list the user
        /// in its --allow-user (otherwise the task fails, saying so)
        #[argh(option)]
        pub user: Option<String>,
    }
    /// print the server's answer (the created tasks) as JSON
    json
}

operator_args! {
    /// Show one task: its state, history, exit code and captured output.
    #[derive(FromArgs, ArgsInfo, Debug)]
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
    /// List tasks, newest first, filtered by agent, state and age on the server, a page at a time.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "list",
        example = "orange task list --agent web-1 --limit 20",
        example = "orange task list --status failed,timed_out --since 24h",
        example = "orange task list --status queued,delivered,running",
        example = "orange task list --limit 100 --after 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        note = "STATUS is one of queued, delivered, running, succeeded, failed, timed_out, cancelled, \
                expired and lost; --status takes several, repeated or comma separated. --since takes \
                a time (2026-12-04T10:00:00Z) or a duration back from the server's now (1h, 30m, 7d, \
                3600). COMMAND is the first line of the task's payload, cut to 40 characters (`…` \
                marks a cut or more lines); `orange task get ID` shows it whole. When more tasks match \
                than were shown, a line on stderr names the --after cursor of the next page (--json: \
                `next`); with no match, stdout is empty and stderr says `no tasks`. Connection options \
                as in `orange task run --help`."
    )]
    pub struct ListArgs {
        /// only tasks of this agent (app id)
        #[argh(option)]
        pub agent: Option<String>,
        /// the same as --agent
        #[argh(option)]
        pub appid: Option<String>,
        /// only tasks in this state; repeatable or a comma list (e.g. failed,timed_out)
        #[argh(option)]
        pub status: Vec<String>,
        /// only tasks created since this time (2026-12-04T10:00:00Z) or for this long (1h, 30m, 7d)
        #[argh(option)]
        pub since: Option<String>,
        /// continue after this cursor, printed at the end of the previous page
        #[argh(option)]
        pub after: Option<String>,
        /// most tasks to show, 1 to 1000 (default: the server's, 100)
        #[argh(option)]
        pub limit: Option<usize>,
    }
    /// print the page as JSON (tasks; and next, when more tasks match)
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
        user: check_user_flag(args.user)?,
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
    list_page(args)?.emit()?;
    Ok(0)
}

/// `GET /api/v1/tasks` with the filters given, and what to print.
fn list_page(args: ListArgs) -> Result<Printed> {
    let query = list_query(&args)?;
    let path = list_path(&query, args.since.as_deref());
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let mut list: TaskList = config.api(ADMIN_TIMEOUT).get(&path)?;
    // Older servers ignore the filters: they are applied here again.
    let now_ms = chrono::Utc::now().timestamp_millis();
    list.tasks.retain(|task| query.matches_view(task, now_ms));
    let mut printed = Printed::json_or(config.json, &list, |list| {
        if list.tasks.is_empty() { String::new() } else { output::tasks_table(&list.tasks) }
    })?;
    if !config.json {
        printed.stderr = list_notes(&list, query.filters());
    }
    Ok(printed)
}

/// The stderr lines after a task table: that nothing matched, that a next page exists.
fn list_notes(list: &TaskList, filtered: bool) -> String {
    let mut notes = String::new();
    if list.tasks.is_empty() {
        notes.push_str(if filtered { "orange: no tasks match\n" } else { "orange: no tasks\n" });
    }
    if let Some(next) = &list.next {
        notes.push_str(&format!("orange: more tasks may match; the next page: --after {next}\n"));
    }
    notes
}

/// The query the flags ask for, checked as the server checks it, so a bad value is named
/// before anything is sent.
fn list_query(args: &ListArgs) -> Result<TaskQuery> {
    if let Some(limit) = args.limit
        && (limit == 0 || limit > admin::MAX_LIST_LIMIT)
    {
        usage_bail!("--limit {limit} must be between 1 and {}", admin::MAX_LIST_LIMIT);
    }
    let agent = match (&args.agent, &args.appid) {
        (Some(agent), Some(appid)) if agent != appid => {
            usage_bail!("--agent and --appid name the same thing; give one")
        }
        (agent, appid) => agent.as_ref().or(appid.as_ref()),
    };
    let mut pairs = Vec::new();
    let mut add = |key: &str, value: Option<&String>| {
        if let Some(value) = value {
            pairs.push((key.to_owned(), value.clone()));
        }
    };
    add(task_query::QUERY_APP_ID, agent);
    for status in &args.status {
        add(task_query::QUERY_STATUS, Some(status));
    }
    add(audit::QUERY_SINCE, args.since.as_ref());
    add(audit::QUERY_AFTER, args.after.as_ref());
    add(audit::QUERY_LIMIT, args.limit.map(|limit| limit.to_string()).as_ref());
    TaskQuery::from_pairs(&pairs).map_err(usage)
}

/// `GET /api/v1/tasks` with the query; `since` as typed.
pub(super) fn list_path(query: &TaskQuery, since: Option<&str>) -> String {
    let pairs = query.to_pairs(since);
    if pairs.is_empty() {
        return admin::TASKS_PATH.to_owned();
    }
    let query: Vec<String> = pairs.iter().map(|(key, value)| format!("{key}={}", encode(value))).collect();
    format!("{}?{}", admin::TASKS_PATH, query.join("&"))
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

    fn list_args(argv: &[&str]) -> ListArgs {
        ListArgs::from_args(&["list"], argv).unwrap()
    }

    fn path_of(argv: &[&str]) -> Result<String> {
        let args = list_args(argv);
        Ok(list_path(&list_query(&args)?, args.since.as_deref()))
    }

    #[test]
    fn list_paths_carry_encoded_filters_and_checked_limits() {
        assert_eq!(path_of(&[]).unwrap(), "/api/v1/tasks");
        assert!(path_of(&["--appid", "web 1", "--limit", "5"]).unwrap_err().to_string().contains("web 1"));
        assert_eq!(
            path_of(&["--appid", "web-1", "--limit", "5"]).unwrap(),
            "/api/v1/tasks?app_id=web-1&limit=5"
        );
        assert_eq!(
            path_of(&[
                "--agent",
                "w1",
                "--status",
                "failed",
                "--status",
                "lost,queued",
                "--since",
                "1h",
                "--after",
                ID
            ])
            .unwrap(),
            format!("/api/v1/tasks?app_id=w1&status=failed%2Clost%2Cqueued&since=1h&after={ID}")
        );
        assert_eq!(path_of(&["--agent", "w1", "--appid", "w1"]).unwrap(), "/api/v1/tasks?app_id=w1");
        let refused = |argv: &[&str]| {
            let error = path_of(argv).unwrap_err();
            assert!(error.downcast_ref::<crate::cli::argv::Usage>().is_some(), "{error}");
            error.to_string()
        };
        assert_eq!(refused(&["--limit", "0"]), "--limit 0 must be between 1 and 1000");
        assert!(refused(&["--limit", "1001"]).starts_with("--limit 1001"));
        assert_eq!(
            refused(&["--agent", "a", "--appid", "b"]),
            "--agent and --appid name the same thing; give one"
        );
        assert!(refused(&["--status", "done"]).starts_with("unknown task status \"done\""));
        assert!(refused(&["--since", "yesterday"]).starts_with("since \"yesterday\" is neither"));
        assert!(refused(&["--after", "12"]).starts_with("cursor \"12\" is not one the server returned"));
    }

    #[test]
    fn list_prints_a_table_a_next_page_line_or_no_tasks() {
        let mut old = sample_task(ID, "web-1", Succeeded, Some(0));
        old.payload = "echo a\necho b".into();
        let page = TaskList { tasks: vec![old], next: Some(ID.into()) };
        let empty = TaskList { tasks: Vec::new(), next: None };
        let api = FakeApi::serve(vec![FakeApi::ok(&page), FakeApi::ok(&empty), FakeApi::ok(&empty)]);
        let with = |extra: &[&str]| {
            let mut argv = vec!["--server", api.url.as_str(), "--token-file", token_file()];
            argv.extend_from_slice(extra);
            list_page(list_args(&argv)).unwrap()
        };
        let printed = with(&["--limit", "1"]);
        assert!(printed.stdout.starts_with("TASK ID"), "{}", printed.stdout);
        assert!(printed.stdout.contains("echo a …"), "{}", printed.stdout);
        assert_eq!(printed.stderr, format!("orange: more tasks may match; the next page: --after {ID}\n"));
        assert_eq!(
            with(&["--status", "lost"]),
            Printed { stdout: String::new(), stderr: "orange: no tasks match\n".into() }
        );
        let json = with(&["--json"]);
        assert_eq!((json.stdout.trim(), json.stderr.as_str()), ("{\n  \"tasks\": []\n}", ""));
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
