//! `orange task ...`: run a command on one host and wait for it like ssh (`run`), give a task to
//! several hosts (`send`), show one task (`get`) and list tasks (`list`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use argh::FromArgs;

use super::operator::{AdminToken, Api, OperatorConfig, OperatorFlags, encode};
use super::output;
use crate::client::{ADMIN_TIMEOUT, ClientError};
use crate::protocol::admin::{self, AgentView, EnqueueReply, EnqueueRequest, TaskList, TaskView};
use crate::protocol::{TaskId, TaskStatus};

/// Seconds one `?wait=` call parks on the server while `run` or `get --wait` waits.
const WAIT_CHUNK_SECS: u64 = 20;
/// Read deadline of a waiting call beyond the server's wait, so the server answers first.
const WAIT_GRACE_SECS: u64 = 15;
/// Failed waiting calls in a row that `run` and `get --wait` ride out (server restart, network).
const WAIT_RETRIES: u32 = 3;
/// Pause before retrying a failed waiting call.
const RETRY_PAUSE: Duration = Duration::from_secs(2);
/// Exit status of `task run` when the task ran past its timeout, like timeout(1).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status of `task run` when the task ended without an exit code, like ssh's own failures.
pub const EXIT_NO_CODE: i32 = 255;

/// Run, send, show and list tasks.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "task")]
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
    /// `orange task get`
    Get(GetArgs),
    /// `orange task list`
    List(ListArgs),
}

/// Run a command on one host and wait for it, like ssh: its stdout and stderr are printed as they
/// were and its exit status becomes orange's.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "run",
    example = "orange task run --appid web-1 -- df -h /",
    example = "orange task run --appid web-1 --timeout 30 -- 'systemctl restart nginx && echo ok'",
    note = "The words after -- are joined by single spaces and run with sh -c on the host, like ssh \
            does: quote what the remote shell must see as one word. The agent must be online and \
            started with --allow-shell; an unknown or offline agent is an error at once. The exit \
            status is the remote command's, or one of the codes below. With --json the final task is \
            printed as JSON instead of its output, and the exit status is the same. \
            Connection options: --server (else ORANGE_SERVER, else http://127.0.0.1:8890); the admin \
            token from --token, else ORANGE_TOKEN, else --data DIR/admin.token.",
    error_code(124, "the task ran past its timeout on the host (like timeout(1))"),
    error_code(
        255,
        "the task ended without an exit code (could not start, cancelled, expired, lost), or orange failed"
    )
)]
pub struct RunArgs {
    /// app id of the host to run on
    #[argh(option)]
    pub appid: String,
    /// seconds the command may run on the host (default: the server's --default-timeout)
    #[argh(option)]
    pub timeout: Option<u64>,
    /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
    #[argh(option)]
    pub server: Option<String>,
    /// admin token (default: ORANGE_TOKEN, else --data); ps shows argv, so prefer those two
    #[argh(option)]
    pub token: Option<AdminToken>,
    /// the server's data directory; its admin.token is used when neither --token nor ORANGE_TOKEN is set
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// print the final task as JSON instead of the command's output
    #[argh(switch)]
    pub json: bool,
    /// the command and its arguments, after --
    #[argh(positional, greedy)]
    pub command: Vec<String>,
}

/// Give a task to some hosts, or all, without waiting; prints one task id per line.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "send",
    example = "orange task send --appid web-1,web-2 --type shell --payload 'apt-get update'",
    example = "orange task send --all --type ping",
    note = "One task is created per host. Follow them with `orange task get ID --wait 50` or \
            `orange task list`. Connection options as in `orange task run --help`."
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
    /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
    #[argh(option)]
    pub server: Option<String>,
    /// admin token (default: ORANGE_TOKEN, else --data); ps shows argv, so prefer those two
    #[argh(option)]
    pub token: Option<AdminToken>,
    /// the server's data directory; its admin.token is used when neither --token nor ORANGE_TOKEN is set
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// print the server's answer (the created tasks) as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Show one task: its state, history, exit code and captured output.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "get",
    example = "orange task get 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b --wait 60",
    note = "With --wait the command returns as soon as the task is finished, or when the wait is \
            over, and shows the task either way. Connection options as in `orange task run --help`."
)]
pub struct GetArgs {
    /// the task id
    #[argh(positional)]
    pub id: String,
    /// seconds to wait for the task to finish first (default 0)
    #[argh(option, default = "0")]
    pub wait: u64,
    /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
    #[argh(option)]
    pub server: Option<String>,
    /// admin token (default: ORANGE_TOKEN, else --data); ps shows argv, so prefer those two
    #[argh(option)]
    pub token: Option<AdminToken>,
    /// the server's data directory; its admin.token is used when neither --token nor ORANGE_TOKEN is set
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// print the task as JSON
    #[argh(switch)]
    pub json: bool,
}

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
    /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
    #[argh(option)]
    pub server: Option<String>,
    /// admin token (default: ORANGE_TOKEN, else --data); ps shows argv, so prefer those two
    #[argh(option)]
    pub token: Option<AdminToken>,
    /// the server's data directory; its admin.token is used when neither --token nor ORANGE_TOKEN is set
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// print the list as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Runs an `orange task` subcommand and returns the exit code.
pub fn run(args: TaskArgs) -> Result<i32> {
    match args.command {
        TaskCommand::Run(args) => run_remote(args),
        TaskCommand::Send(args) => send(args),
        TaskCommand::Get(args) => get(args),
        TaskCommand::List(args) => list(args),
    }
}

fn run_remote(args: RunArgs) -> Result<i32> {
    let flags = OperatorFlags { server: args.server, token: args.token, data: args.data, json: args.json };
    let config = OperatorConfig::from_flags(flags)?;
    let request = EnqueueRequest {
        ttl_secs: None,
        app_ids: vec![args.appid.clone()],
        all: false,
        task_type: "shell".to_owned(),
        payload: join_command(&args.command)?,
        timeout_secs: check_timeout(args.timeout)?,
    };
    let api = config.api(ADMIN_TIMEOUT);
    ensure_online(&api, &args.appid)?;
    let reply: EnqueueReply = api.post(admin::TASKS_PATH, &request)?;
    let task = reply.tasks.into_iter().next().context("the server answered the enqueue with no task")?;
    let done = wait_task(&config.api(wait_timeout()), &task.task_id, None)?;
    finish_run(&done, config.json)
}

/// Joins command words with single spaces, as ssh does; refuses an empty command.
fn join_command(words: &[String]) -> Result<String> {
    let command = words.join(" ");
    if command.trim().is_empty() {
        bail!("no command given; usage: orange task run --appid ID -- CMD [ARGS...]");
    }
    Ok(command)
}

fn check_timeout(timeout: Option<u64>) -> Result<Option<u64>> {
    if timeout == Some(0) {
        bail!("--timeout must be at least 1 second");
    }
    Ok(timeout)
}

/// Fails at once when the agent is unknown or offline, rather than queueing work nobody takes.
fn ensure_online(api: &Api, app_id: &str) -> Result<()> {
    let path = admin::agent_path(&encode(app_id));
    let agent: AgentView = match api.try_get(&path) {
        Ok(agent) => agent,
        Err(ClientError::Api { status: 404, .. }) => bail!("unknown agent {app_id:?}"),
        Err(error) => return Err(api.explain("GET", &path, error)),
    };
    if !agent.online {
        bail!("agent {app_id:?} is offline (last seen {})", agent.last_seen);
    }
    Ok(())
}

/// Read deadline of a client whose calls park on the server for up to [`WAIT_CHUNK_SECS`].
fn wait_timeout() -> Duration {
    Duration::from_secs(WAIT_CHUNK_SECS + WAIT_GRACE_SECS)
}

/// Asks for the task with `?wait=` until it is final, or until `deadline` when there is one.
fn wait_task(api: &Api, task_id: &str, deadline: Option<Instant>) -> Result<TaskView> {
    let mut failures = 0;
    loop {
        let wait = wait_secs(deadline, Instant::now());
        let path = format!("{}?wait={wait}", admin::task_path(task_id));
        match api.try_get::<TaskView>(&path) {
            Ok(task) if task.status.is_final() || wait == 0 => return Ok(task),
            Ok(_) => failures = 0,
            Err(error) if error.is_transient() && failures < WAIT_RETRIES => {
                failures += 1;
                eprintln!("orange: waiting for task {task_id}: {error}; retrying");
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(error) if failures > 0 => {
                let error = api.explain("GET", &path, error);
                return Err(
                    error.context(format!("gave up waiting for task {task_id} after {failures} retries"))
                );
            }
            Err(error) => return Err(api.explain("GET", &path, error)),
        }
    }
}

/// Seconds the next waiting call may park: a chunk, or what is left before `deadline` (rounded
/// up, 0 once it has passed).
fn wait_secs(deadline: Option<Instant>, now: Instant) -> u64 {
    let Some(deadline) = deadline else { return WAIT_CHUNK_SECS };
    let left_ms = deadline.saturating_duration_since(now).as_millis();
    u64::try_from(left_ms.div_ceil(1000)).unwrap_or(u64::MAX).min(WAIT_CHUNK_SECS)
}

/// Prints the finished task the way `run` promises and returns its exit status.
fn finish_run(task: &TaskView, json: bool) -> Result<i32> {
    let (code, problem) = run_outcome(task);
    if json {
        output::print_json(task)?;
    } else {
        print_streams(task)?;
    }
    if let Some(problem) = problem {
        eprintln!("orange: {problem}");
    }
    Ok(code)
}

/// The exit status of `task run` for a final task, and what to say when the host gave no code:
/// the remote code; [`EXIT_TIMED_OUT`] for a timeout; 0 for a success without a code (a legacy
/// agent); else [`EXIT_NO_CODE`].
pub fn run_outcome(task: &TaskView) -> (i32, Option<String>) {
    let problem = || {
        let reason = match (&task.error, task.status) {
            (Some(error), _) => error.clone(),
            (None, TaskStatus::TimedOut) => format!("ran past its {}s timeout", task.timeout_secs),
            (None, _) => "no exit code".to_owned(),
        };
        Some(format!("task {} {}: {reason}", task.task_id, task.status))
    };
    match (task.status, task.exit_code) {
        (TaskStatus::TimedOut, _) => (EXIT_TIMED_OUT, problem()),
        (_, Some(code)) => (code, None),
        (TaskStatus::Succeeded, None) => (0, None),
        _ => (EXIT_NO_CODE, problem()),
    }
}

/// Writes the host's stdout and stderr unchanged; a legacy agent's `result` stands in for stdout
/// when both are empty.
fn print_streams(task: &TaskView) -> Result<()> {
    use std::io::Write;
    let stdout = if task.stdout.is_empty() && task.stderr.is_empty() { &task.result } else { &task.stdout };
    output::emit(stdout)?;
    let mut stderr = std::io::stderr().lock();
    stderr.write_all(task.stderr.as_bytes()).and_then(|()| stderr.flush()).context("cannot write to stderr")
}

fn send(args: SendArgs) -> Result<i32> {
    let flags = OperatorFlags { server: args.server, token: args.token, data: args.data, json: args.json };
    let config = OperatorConfig::from_flags(flags)?;
    if args.task_type.trim().is_empty() {
        bail!("--type must name a task type: ping, shell or a handler");
    }
    let request = EnqueueRequest {
        ttl_secs: None,
        app_ids: targets(&args.appid, args.all)?,
        all: args.all,
        task_type: args.task_type,
        payload: args.payload,
        timeout_secs: check_timeout(args.timeout)?,
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
        (true, false) => bail!("say where to send: --appid ID[,ID...] or --all"),
        (false, true) => bail!("give either --appid or --all, not both"),
        (true, true) => Ok(Vec::new()),
        (false, false) => parse_app_ids(appid),
    }
}

/// Splits `--appid` values at commas; refuses empty items and repeats.
fn parse_app_ids(values: &[String]) -> Result<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for value in values {
        for id in value.split(',').map(str::trim) {
            if id.is_empty() {
                bail!("--appid {value:?} has an empty app id");
            }
            if ids.iter().any(|seen| seen == id) {
                bail!("--appid lists {id:?} twice");
            }
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

fn get(args: GetArgs) -> Result<i32> {
    let flags = OperatorFlags { server: args.server, token: args.token, data: args.data, json: args.json };
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

/// Task ids are UUIDs; checking here gives a clear message and keeps the id a plain path segment.
fn check_task_id(id: &str) -> Result<String> {
    let parsed =
        TaskId::parse_str(id.trim()).map_err(|_| anyhow::anyhow!("{id:?} is not a task id (a UUID)"))?;
    Ok(parsed.hyphenated().to_string())
}

fn list(args: ListArgs) -> Result<i32> {
    let flags = OperatorFlags { server: args.server, token: args.token, data: args.data, json: args.json };
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
            bail!("--limit {limit} must be between 1 and {}", admin::MAX_LIST_LIMIT);
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
    use crate::cli::operator::tests::{api_for, serve_once};
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    #[test]
    fn command_words_are_joined_by_single_spaces() {
        assert_eq!(join_command(&words(&["ls", "-la", "/tmp dir"])).unwrap(), "ls -la /tmp dir");
        assert_eq!(join_command(&words(&["echo hi && id"])).unwrap(), "echo hi && id");
        assert!(join_command(&[]).unwrap_err().to_string().starts_with("no command given"));
        assert!(join_command(&words(&[""])).is_err());
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
    fn exit_status_for_each_final_state() {
        let id = "t-1";
        let cases = [
            (Succeeded, Some(0), 0, None),
            (Succeeded, None, 0, None),
            (Failed, Some(3), 3, None),
            (Failed, None, 255, Some("task t-1 failed: no exit code")),
            (TimedOut, None, 124, Some("task t-1 timed_out: ran past its 600s timeout")),
            (TimedOut, Some(137), 124, Some("task t-1 timed_out: ran past its 600s timeout")),
            (Cancelled, None, 255, Some("task t-1 cancelled: no exit code")),
            (Expired, None, 255, Some("task t-1 expired: no exit code")),
            (Lost, None, 255, Some("task t-1 lost: no exit code")),
        ];
        for (status, exit_code, code, problem) in cases {
            let task = sample_task(id, "web-1", status, exit_code);
            assert_eq!(run_outcome(&task), (code, problem.map(str::to_owned)), "{status} {exit_code:?}");
        }
    }

    #[test]
    fn the_error_text_explains_a_task_without_exit_code() {
        let mut task = sample_task("t-2", "web-1", Failed, None);
        task.error = Some("shell tasks are not allowed on this agent".into());
        let (code, problem) = run_outcome(&task);
        assert_eq!(code, EXIT_NO_CODE);
        assert_eq!(problem.unwrap(), "task t-2 failed: shell tasks are not allowed on this agent");
    }

    #[test]
    fn waits_are_chunked_and_end_at_the_deadline() {
        let now = Instant::now();
        assert_eq!(wait_secs(None, now), WAIT_CHUNK_SECS);
        assert_eq!(wait_secs(Some(now + Duration::from_secs(300)), now), WAIT_CHUNK_SECS);
        assert_eq!(wait_secs(Some(now + Duration::from_millis(4200)), now), 5);
        assert_eq!(wait_secs(Some(now), now), 0);
        assert!(wait_timeout().as_secs() > WAIT_CHUNK_SECS && WAIT_CHUNK_SECS <= admin::MAX_WAIT_SECS);
    }

    #[test]
    fn list_paths_carry_encoded_filters_and_checked_limits() {
        assert_eq!(list_path(None, None).unwrap(), "/api/v1/tasks");
        assert_eq!(list_path(Some("web 1"), Some(5)).unwrap(), "/api/v1/tasks?app_id=web%201&limit=5");
        assert!(list_path(None, Some(0)).is_err());
        assert!(list_path(None, Some(admin::MAX_LIST_LIMIT + 1)).is_err());
    }

    #[test]
    fn task_ids_must_be_uuids() {
        let id = "0190a1b2-0000-7000-8000-000000000001";
        assert_eq!(check_task_id(id).unwrap(), id);
        assert_eq!(
            check_task_id("../agents").unwrap_err().to_string(),
            "\"../agents\" is not a task id (a UUID)"
        );
    }

    #[test]
    fn an_unknown_agent_is_refused_before_enqueueing() {
        let server = serve_once("404 Not Found", r#"{"error":"unknown agent \"web-9\""}"#);
        let error = ensure_online(&api_for(&server), "web-9").unwrap_err();
        assert_eq!(format!("{error:#}"), "unknown agent \"web-9\"");
    }

    #[test]
    fn an_offline_agent_is_refused_with_its_last_sign_of_life() {
        let agent = r#"{"app_id":"web-1","online":false,"last_seen":"2024-05-01T10:00:00Z",
            "registered_at":"2024-04-01T00:00:00Z","labels":{},"version":null,"hostname":null,
            "processed_task_count":0}"#;
        let error = ensure_online(&api_for(&serve_once("200 OK", agent)), "web-1").unwrap_err();
        assert_eq!(format!("{error:#}"), "agent \"web-1\" is offline (last seen 2024-05-01T10:00:00Z)");
        let online = agent.replace("false", "true");
        assert!(ensure_online(&api_for(&serve_once("200 OK", &online)), "web-1").is_ok());
    }

    #[test]
    fn waiting_returns_a_final_task() {
        let task = sample_task("0190a1b2-0000-7000-8000-000000000001", "web-1", Succeeded, Some(0));
        let server = serve_once("200 OK", &serde_json::to_string(&task).unwrap());
        assert_eq!(wait_task(&api_for(&server), &task.task_id, None).unwrap(), task);
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let args = RunArgs::from_args(&["run"], &["--appid", "web-1", "--json", "--", "ls", "--help", "-l"])
            .unwrap();
        assert_eq!((args.appid.as_str(), args.json), ("web-1", true));
        assert_eq!(args.command, words(&["ls", "--help", "-l"]));
    }
}
