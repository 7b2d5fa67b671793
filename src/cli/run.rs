//! `orange task run`: run a command on one host and wait for it like ssh, showing its output live
//! and exiting with its exit status; Ctrl-C, SIGTERM, SIGHUP and a closed output cancel it.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};

use super::argv::usage;
use super::flags::{
    check_cwd_flag, check_env, check_secret_env, check_timeout, check_ttl, check_user_flag, command_line,
};
use super::follow::{Sink, Until, follow};
use super::interrupt::{CancelOnInterrupt, EXIT_INTERRUPTED};
use super::operator::{Api, OperatorConfig, encode, operator_args, operator_flags};
use super::output;
use super::wait::{wait_task, wait_timeout};
use crate::client::{ADMIN_TIMEOUT, ClientError};
use crate::protocol::TaskStatus;
use crate::protocol::admin::{self, AgentView, EnqueueReply, EnqueueRequest, OutputPage, TaskView};
use crate::protocol::limits::MAX_STDIN_BYTES;

/// Exit status of `task run` when the task ran past its timeout, like timeout(1).
pub const EXIT_TIMED_OUT: i32 = 124;
/// Exit status of `task run` when an original Go client reported the task failed (it sends no
/// exit code).
pub const EXIT_ORIGINAL_FAILED: i32 = 1;
/// Exit status of `task run` when the task ended without an exit code, like ssh's own failures.
pub const EXIT_NO_CODE: i32 = 255;

operator_args! {
    /// Run a command on one host and wait for it, like ssh: its stdout and stderr are printed live as
    /// the host writes them and its exit status becomes orange's.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "run",
        example = "orange task run --appid web-1 -- df -h /",
        example = "orange task run --appid web-1 --timeout 30 -- 'systemctl restart nginx && echo ok'",
        example = "orange task run --appid laptop-7 --queue --ttl 3600 -- 'apt-get -y upgrade'",
        example = "tar c ./site | orange task run --appid web-1 -- 'tar x -C /srv/www'",
        note = "The command runs with sh -c on the host. One argument after -- is a shell script, taken \
                as it is (-- 'cd /srv && ls | wc -l'); several are a command and its arguments, each \
                quoted for the remote shell so that it sees exactly those words (-- sh -c 'echo a; echo \
                b' runs sh with the two arguments -c and 'echo a; echo b'; -- printf '%s\\n' 'a b' c \
                prints two lines). orange's stdin, when it is a pipe or a file (at most 16 MiB), is the \
                command's stdin (tar c dir | orange task run --appid web-1 -- 'tar x -C /srv'); -n sends \
                none; otherwise the command reads an empty input. The agent must be started with --allow-shell. An unknown agent is \
                an error at once; so is an offline one (not seen \
                within 90 s, or stopped: a stopping agent says goodbye), named with its last-seen time, \
                unless --queue is given: then the task waits in the agent's queue until the agent comes \
                back or its time to live (--ttl, else the server's default of 24 hours) runs out, and \
                ends `expired`; while it waits, a line on stderr says so every few seconds. The remote \
                stdout and stderr are written to orange's stdout and stderr byte for byte as the host \
                sends them (if orange falls behind a task that writes more than the server's \
                output cap, the chunks dropped meanwhile are missing and a note on stderr says so). \
                Ctrl-C cancels the task (its agent stops the command: SIGTERM, a \
                grace period, SIGKILL) and orange keeps printing until the task has ended; a second \
                Ctrl-C stops waiting at once and leaves the task to the server (see `orange task cancel \
                --help`). orange owns the task while it waits: if its output's reader goes away (SIGPIPE, \
                e.g. `orange task run ... -- yes | head -1`), its terminal hangs up (SIGHUP) or it is \
                told to stop (SIGTERM), it cancels the task the same way and exits with 128 + the \
                signal (141, 129, 143); SIGTERM or Ctrl-C again meanwhile exits at once. The exit \
                status is the remote command's, or one of the codes below. An original Go client's result \
                text is printed as one line, and orange exits 1 when it reported a failure. With \
                --json nothing is printed live: the final task is printed as JSON (stdout and stderr \
                as text, or as base64 with \"stdout_encoding\": \"base64\" when they are not UTF-8), \
                and the exit status is the same. Connection options: --server (else ORANGE_SERVER, else \
                http://127.0.0.1:8890); the admin token from --token-file, else ORANGE_TOKEN, else --data \
                DIR/admin.token.",
        error_code(124, "the task ran past its timeout on the host (like timeout(1))"),
        error_code(129, "SIGHUP (the terminal went away): the task was cancelled"),
        error_code(130, "Ctrl-C: the task was cancelled, or a second Ctrl-C stopped waiting for it"),
        error_code(141, "the output's reader went away (SIGPIPE): the task was cancelled"),
        error_code(143, "SIGTERM: the task was cancelled"),
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
        /// if the agent is offline, queue the task and wait for the agent instead of failing
        #[argh(switch)]
        pub queue: bool,
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
        /// send no stdin: the command reads an empty input even when orange's stdin is a pipe
        /// or a file (as ssh -n; for scripts and `while read` loops)
        #[argh(switch, short = 'n')]
        pub no_stdin: bool,
        /// the command and its arguments, after --
        #[argh(positional, greedy)]
        pub command: Vec<String>,
    }
    /// print the final task as JSON instead of the command's output
    json
}

/// `task run` flags, validated.
struct RunConfig {
    operator: OperatorConfig,
    app_id: String,
    request: EnqueueRequest,
}

impl RunConfig {
    fn from_args(args: RunArgs) -> Result<Self> {
        let flags = operator_flags!(args);
        let request = EnqueueRequest {
            app_ids: vec![args.appid.clone()],
            all: false,
            task_type: "shell".to_owned(),
            payload: join_command(&args.command)?,
            timeout_secs: check_timeout(args.timeout)?,
            ttl_secs: check_ttl(args.ttl)?,
            env: check_env(&args.env)?,
            secret_env: check_secret_env(&args.secret_env)?,
            cwd: check_cwd_flag(args.cwd)?,
            user: check_user_flag(args.user)?,
            stdin: stdin_unless(args.no_stdin)?,
            require_online: !args.queue,
        };
        let operator = OperatorConfig::from_flags(flags)?;
        Ok(RunConfig { operator, app_id: args.appid, request })
    }
}

/// Nothing when `no_stdin` (the flag -n), else [`read_stdin`].
pub fn stdin_unless(no_stdin: bool) -> Result<Vec<u8>> {
    if no_stdin { Ok(Vec::new()) } else { read_stdin() }
}

/// orange's own stdin when it is a pipe, a socket or a regular file (not a terminal, not
/// `/dev/null`), read whole, at most [`MAX_STDIN_BYTES`]; else nothing. Past the limit it is an
/// error, before anything is sent.
pub fn read_stdin() -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    if !forwards(&stdin) {
        return Ok(Vec::new());
    }
    let mut bytes = Vec::new();
    let limit = MAX_STDIN_BYTES as u64;
    stdin.lock().take(limit + 1).read_to_end(&mut bytes).context("cannot read stdin")?;
    if bytes.len() > MAX_STDIN_BYTES {
        bail!(
            "stdin is larger than the {MAX_STDIN_BYTES} bytes a task may carry; nothing was sent \
             (copy large files another way, or give -n to send no stdin)"
        );
    }
    Ok(bytes)
}

/// True when `stdin` is a pipe, a socket or a regular file: input meant for the command.
fn forwards(stdin: &std::io::Stdin) -> bool {
    use std::os::unix::fs::FileTypeExt;
    if stdin.is_terminal() {
        return false;
    }
    // A closed stdin has no file to look at: nothing to forward.
    let Ok(fd) = stdin.as_fd().try_clone_to_owned() else { return false };
    let Ok(meta) = std::fs::File::from(fd).metadata() else { return false };
    let kind = meta.file_type();
    kind.is_fifo() || kind.is_socket() || kind.is_file()
}

/// Runs `orange task run` and returns the remote exit status (or one of ours).
pub fn run_remote(args: RunArgs) -> Result<i32> {
    let config = RunConfig::from_args(args)?;
    let api = config.operator.api(wait_timeout());
    let ctrl_c = CancelOnInterrupt::install(config.operator.api(ADMIN_TIMEOUT))?;
    let task = enqueue(&api, &config.request)?;
    ctrl_c.set_task(&task.task_id);
    wait_for_agent(&api, &config.app_id, &task.task_id)?;
    let done = if config.operator.json {
        wait_task(&api, &task.task_id, None)?
    } else {
        let mut sink = Sink::new(std::io::stdout(), std::io::stderr(), false);
        ctrl_c.unless_lost(show_live(&api, &task.task_id, &mut sink))?
    };
    let original = failed_on_original_client(&api, &done);
    ctrl_c.unless_lost(finish_run(&done, config.operator.json, ctrl_c.interrupted(), original))
}

/// The command line of the task (see [`command_line`]); refuses an empty command.
fn join_command(words: &[String]) -> Result<String> {
    command_line(words)
        .ok_or_else(|| usage("no command given; usage: orange task run --appid ID -- CMD [ARGS...]"))
}

/// Enqueues the task. The server refuses an unknown agent, and an offline one unless the
/// request leaves `require_online` unset (`--queue`): one round trip, no race with the check.
fn enqueue(api: &Api, request: &EnqueueRequest) -> Result<TaskView> {
    let reply: EnqueueReply = match api.try_post(admin::TASKS_PATH, request) {
        Ok(reply) => reply,
        Err(ClientError::Api { status: 404, message }) => bail!("{message}"),
        Err(ClientError::Api { status: 409, message }) if message.contains(admin::OFFLINE_REFUSAL) => {
            bail!("{message}; add --queue to wait for it")
        }
        Err(error) => return Err(api.explain("POST", admin::TASKS_PATH, error)),
    };
    reply.tasks.into_iter().next().context("the server answered the enqueue with no task")
}

/// How long one look at a queued task waits, and so how often `task run` says that it still
/// waits for its agent.
const WAITING_NOTE_SECS: u64 = 5;

/// Returns once the task left its agent's queue (or ended). While it waits, says so on stderr:
/// at once when its agent is offline, then every [`WAITING_NOTE_SECS`] seconds.
fn wait_for_agent(api: &Api, app_id: &str, task_id: &str) -> Result<()> {
    let mut first = true;
    loop {
        let wait = if first { 0 } else { WAITING_NOTE_SECS };
        let path = format!("{}?wait={wait}", admin::output_path(task_id));
        // A server without the output API: `show_live` waits the old way.
        let Ok(page) = api.try_get::<OutputPage>(&path) else { return Ok(()) };
        if page.status != TaskStatus::Queued {
            return Ok(());
        }
        let agent: AgentView = api.get(&admin::agent_path(&encode(app_id)))?;
        if !(first && agent.online) {
            output::note(format_args!("{}", waiting_note(&agent, task_id)));
        }
        first = false;
    }
}

/// The stderr line of a task still waiting in its agent's queue.
fn waiting_note(agent: &AgentView, task_id: &str) -> String {
    let app_id = &agent.app_id;
    if agent.online {
        format!(
            "orange: waiting for {app_id} to take task {task_id} (it is online; its task slots may all be busy)"
        )
    } else {
        format!(
            "orange: waiting for {app_id} (offline since {}); task {task_id} stays queued until it comes \
             back or its time to live runs out (Ctrl-C cancels it)",
            output::short_time(&agent.last_seen)
        )
    }
}

/// Writes the task's output into `sink` as it comes and returns the final task.
fn show_live<O: Write, E: Write>(api: &Api, task_id: &str, sink: &mut Sink<O, E>) -> Result<TaskView> {
    if let Err(error) = follow(api, task_id, sink, Until::Done) {
        if !(sink.is_empty() && no_output_route(&error)) {
            return Err(error);
        }
        // A server older than the output API: wait for the end and print the output it kept.
        let task = wait_task(api, task_id, None)?;
        sink.whole(&task)?;
        return Ok(task);
    }
    let task: TaskView = api.get(&admin::task_path(task_id))?;
    if sink.is_empty() {
        // An agent that reports its output at the end instead of streaming it.
        sink.whole(&task)?;
    }
    sink.finish()?;
    Ok(task)
}

/// True when the output call was answered 404: for a task just created, the route is missing.
fn no_output_route(error: &anyhow::Error) -> bool {
    matches!(error.downcast_ref::<ClientError>(), Some(ClientError::Api { status: 404, .. }))
}

/// True when `task` failed without an exit code or an error on an original Go client (an agent
/// that gave no version): such a client reports only its result text and whether it failed.
fn failed_on_original_client(api: &Api, task: &TaskView) -> bool {
    if task.status != TaskStatus::Failed || task.exit_code.is_some() || task.error.is_some() {
        return false;
    }
    let path = admin::agent_path(&encode(&task.app_id));
    api.try_get::<AgentView>(&path).is_ok_and(|agent| agent.version.is_none())
}

/// Prints the JSON (when asked) and the problem of the finished task, and returns the exit status.
fn finish_run(task: &TaskView, json: bool, interrupted: bool, original: bool) -> Result<i32> {
    let (code, problem) = run_outcome(task, interrupted, original);
    if json {
        output::print_json(task)?;
    }
    if let Some(problem) = problem {
        output::note(format_args!("orange: {problem}"));
    }
    Ok(code)
}

/// The exit status of `task run` for a final task, and what to say when the host gave no code:
/// [`EXIT_INTERRUPTED`] for a task cancelled after Ctrl-C; [`EXIT_TIMED_OUT`] for a timeout; else
/// the remote code; 0 for a success without a code (an original client); 1 for a failure an
/// `original` client reported (it has no exit code to give); else [`EXIT_NO_CODE`].
pub fn run_outcome(task: &TaskView, interrupted: bool, original: bool) -> (i32, Option<String>) {
    let problem = || {
        let reason = task.error.clone().unwrap_or_else(|| no_code_reason(task));
        Some(format!("task {} {}: {reason}", task.task_id, task.status))
    };
    match (task.status, task.exit_code) {
        (TaskStatus::Cancelled, _) if interrupted => {
            (EXIT_INTERRUPTED, Some(format!("task {} cancelled", task.task_id)))
        }
        (TaskStatus::TimedOut, _) => (EXIT_TIMED_OUT, problem()),
        (_, Some(code)) => (code, None),
        (TaskStatus::Succeeded, None) => (0, None),
        (TaskStatus::Failed, None) if original => (EXIT_ORIGINAL_FAILED, None),
        _ => (EXIT_NO_CODE, problem()),
    }
}

/// Why a final task has no exit code, when its agent did not say.
fn no_code_reason(task: &TaskView) -> String {
    match task.status {
        TaskStatus::TimedOut => format!("ran past its {}s timeout", task.timeout_secs),
        TaskStatus::Cancelled => "cancelled by an operator".to_owned(),
        TaskStatus::Expired => {
            "its agent did not come back before the task's time to live ran out".to_owned()
        }
        TaskStatus::Lost => "its agent went silent while it ran".to_owned(),
        _ => "no exit code".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::follow::tests::{ID, chunk, page};
    use crate::cli::operator::tests::token_file;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn one_command_word_is_a_script_and_several_are_quoted() {
        assert_eq!(join_command(&words(&["ls", "-la", "/tmp dir"])).unwrap(), "ls -la '/tmp dir'");
        assert_eq!(join_command(&words(&["echo hi && id"])).unwrap(), "echo hi && id");
        assert!(join_command(&[]).unwrap_err().to_string().starts_with("no command given"));
        assert!(join_command(&words(&[""])).is_err());
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
            (Cancelled, None, 255, Some("task t-1 cancelled: cancelled by an operator")),
            (
                Expired,
                None,
                255,
                Some("task t-1 expired: its agent did not come back before the task's time to live ran out"),
            ),
            (Lost, None, 255, Some("task t-1 lost: its agent went silent while it ran")),
        ];
        for (status, exit_code, code, problem) in cases {
            let task = sample_task(id, "web-1", status, exit_code);
            let expected = (code, problem.map(str::to_owned));
            assert_eq!(run_outcome(&task, false, false), expected, "{status} {exit_code:?}");
        }
    }

    #[test]
    fn an_original_clients_failure_exits_1_and_its_success_0() {
        let failed = sample_task("t-4", "go-1", Failed, None);
        assert_eq!(run_outcome(&failed, false, true), (1, None));
        let succeeded = sample_task("t-4", "go-1", Succeeded, None);
        assert_eq!(run_outcome(&succeeded, false, true), (0, None));
    }

    #[test]
    fn after_ctrl_c_a_cancelled_task_exits_130_and_a_finished_one_keeps_its_code() {
        let cancelled = sample_task("t-3", "web-1", Cancelled, Some(143));
        assert_eq!(run_outcome(&cancelled, true, false), (130, Some("task t-3 cancelled".to_owned())));
        let finished = sample_task("t-3", "web-1", Failed, Some(4));
        assert_eq!(run_outcome(&finished, true, false), (4, None));
    }

    #[test]
    fn the_error_text_explains_a_task_without_exit_code() {
        let mut task = sample_task("t-2", "web-1", Failed, None);
        task.error = Some("shell tasks are not allowed on this agent".into());
        let (code, problem) = run_outcome(&task, false, false);
        assert_eq!(code, EXIT_NO_CODE);
        assert_eq!(problem.unwrap(), "task t-2 failed: shell tasks are not allowed on this agent");
    }

    const AGENT: &str = r#"{"app_id":"web-1","online":false,"last_seen":"2024-05-01T10:00:00.5Z",
        "registered_at":"2024-04-01T00:00:00Z","labels":{},"version":null,"hostname":null,
        "processed_task_count":0}"#;

    fn agent(online: bool) -> AgentView {
        let agent: AgentView = serde_json::from_str(AGENT).unwrap();
        AgentView { online, ..agent }
    }

    fn request(require_online: bool) -> EnqueueRequest {
        EnqueueRequest {
            app_ids: vec!["web-1".into()],
            task_type: "shell".into(),
            payload: "true".into(),
            require_online,
            ..EnqueueRequest::default()
        }
    }

    #[test]
    fn an_unknown_agent_is_refused_in_the_servers_words() {
        let api = FakeApi::serve(vec![FakeApi::error("404 Not Found", "unknown agent \"web-9\"")]);
        let error = enqueue(&api.client(), &request(false)).unwrap_err();
        assert_eq!(format!("{error:#}"), "unknown agent \"web-9\"");
    }

    #[test]
    fn an_offline_agent_refused_by_the_server_gets_the_queue_hint() {
        let refusal = admin::offline_refusal("web-1", "2024-05-01T10:00:00Z", true);
        let api = FakeApi::serve(vec![FakeApi::error("409 Conflict", &refusal)]);
        let error = enqueue(&api.client(), &request(true)).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "agent \"web-1\" is offline (last seen 2024-05-01T10:00:00Z, when it stopped); add --queue to \
             wait for it"
        );
        let body: serde_json::Value = serde_json::from_str(&api.seen()[0].body).unwrap();
        assert_eq!(body["require_online"], true);
        assert!(serde_json::to_value(request(false)).unwrap().get("require_online").is_none());
    }

    #[test]
    fn the_waiting_note_names_the_agent_and_when_it_was_last_seen() {
        assert_eq!(
            waiting_note(&agent(false), ID),
            format!(
                "orange: waiting for web-1 (offline since 2024-05-01T10:00:00Z); task {ID} stays queued until \
                 it comes back or its time to live runs out (Ctrl-C cancels it)"
            )
        );
        assert!(waiting_note(&agent(true), ID).contains("it is online"));
    }

    #[test]
    fn a_task_queued_for_an_offline_agent_is_announced_until_it_leaves_the_queue() {
        let api = FakeApi::serve(vec![
            FakeApi::ok(&page(vec![], 0, Queued)),
            FakeApi::ok(&agent(false)),
            FakeApi::ok(&page(vec![], 0, Queued)),
            FakeApi::ok(&agent(false)),
            FakeApi::ok(&page(vec![], 0, Running)),
        ]);
        wait_for_agent(&api.client(), "web-1", ID).unwrap();
        let targets: Vec<String> = api.seen().into_iter().map(|seen| seen.target).collect();
        let output = format!("/api/v1/tasks/{ID}/output");
        assert_eq!(targets[0], format!("{output}?wait=0"));
        assert_eq!(targets[2], format!("{output}?wait={WAITING_NOTE_SECS}"));
        assert_eq!(targets.len(), 5);
    }

    #[test]
    fn live_output_is_written_as_it_comes_then_the_final_task_is_fetched() {
        let done = sample_task(ID, "web-1", Failed, Some(3));
        let api = FakeApi::serve(vec![
            FakeApi::ok(&page(vec![chunk(0, "stdout", "out\n")], 1, Running)),
            FakeApi::ok(&page(vec![chunk(1, "stderr", "err\n")], 2, Failed)),
            FakeApi::ok(&done),
        ]);
        let mut sink = Sink::new(Vec::new(), Vec::new(), false);
        assert_eq!(show_live(&api.client(), ID, &mut sink).unwrap(), done);
        assert_eq!((text(&sink.out), text(&sink.err)), ("out\n".to_owned(), "err\n".to_owned()));
        let targets: Vec<String> = api.seen().into_iter().map(|seen| seen.target).collect();
        let output = format!("/api/v1/tasks/{ID}/output");
        assert_eq!(
            targets,
            [format!("{output}?wait=20"), format!("{output}?after=1&wait=20"), admin::task_path(ID)]
        );
    }

    #[test]
    fn output_reported_only_at_the_end_is_printed_from_the_task() {
        let mut done = sample_task(ID, "web-1", Succeeded, None);
        done.stdout.clear();
        done.result = "legacy result".into();
        let api = FakeApi::serve(vec![FakeApi::ok(&page(vec![], 0, Succeeded)), FakeApi::ok(&done)]);
        let mut sink = Sink::new(Vec::new(), Vec::new(), false);
        show_live(&api.client(), ID, &mut sink).unwrap();
        assert_eq!((text(&sink.out), text(&sink.err)), ("legacy result\n".to_owned(), String::new()));
    }

    #[test]
    fn a_server_without_the_output_api_is_waited_on_the_old_way() {
        let done = sample_task(ID, "web-1", Succeeded, Some(0));
        let api =
            FakeApi::serve(vec![FakeApi::error("404 Not Found", "no such API route"), FakeApi::ok(&done)]);
        let mut sink = Sink::new(Vec::new(), Vec::new(), false);
        assert_eq!(show_live(&api.client(), ID, &mut sink).unwrap(), done);
        assert_eq!(text(&sink.out), "up 3 days\n");
        assert_eq!(api.seen()[1].target, format!("/api/v1/tasks/{ID}?wait=20"));
    }

    #[test]
    fn run_takes_the_command_after_double_dash() {
        let args = RunArgs::from_args(
            &["run"],
            &["--appid", "web-1", "--json", "--queue", "--ttl", "60", "--", "ls", "--help", "-l"],
        )
        .unwrap();
        assert_eq!((args.appid.as_str(), args.json, args.queue, args.ttl), ("web-1", true, true, Some(60)));
        assert_eq!(args.command, words(&["ls", "--help", "-l"]));
    }

    #[test]
    fn the_enqueue_carries_timeout_and_ttl() {
        let args = RunArgs::from_args(
            &["run"],
            &[
                "--appid",
                "web-1",
                "--timeout",
                "5",
                "--ttl",
                "60",
                "--token-file",
                token_file(),
                "--",
                "true",
            ],
        )
        .unwrap();
        let config = RunConfig::from_args(args).unwrap();
        let body = serde_json::to_value(&config.request).unwrap();
        assert_eq!(body["ttl_secs"], 60);
        assert_eq!(body["timeout_secs"], 5);
        assert_eq!(body["payload"], "true");
        assert!(body.get("env").is_none() && body.get("cwd").is_none(), "left out when unused: {body}");
    }

    #[test]
    fn the_enqueue_carries_env_and_cwd_and_refuses_bad_ones() {
        let parse = |extra: &[&str]| {
            let mut all = vec!["--appid", "web-1", "--token-file", token_file()];
            all.extend_from_slice(extra);
            all.extend(["--", "env"]);
            RunConfig::from_args(RunArgs::from_args(&["run"], &all).unwrap())
        };
        let config = parse(&["--env", "A=b", "--env", "C=d=e", "--cwd", "/srv"]).unwrap();
        let body = serde_json::to_value(&config.request).unwrap();
        assert_eq!(body["env"], serde_json::json!({"A": "b", "C": "d=e"}));
        assert_eq!(body["cwd"], "/srv");
        let refused = |extra: &[&str]| parse(extra).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused(&["--env", "A"]).starts_with("--env: environment variable \"A\" is not NAME=value"));
        assert!(refused(&["--env", "ORANGE_TASK_ID=x"]).contains("belong to the agent"));
        assert!(refused(&["--cwd", "srv"]).starts_with("--cwd: working directory \"srv\""));
    }
}
