//! The `orange job` subcommands and their flags, and turning the target and rate flags that
//! `run` and `send` share into a [`JobRequest`]. What the subcommands do is in `job.rs` and
//! `job_run.rs`, which both read their flags from here.

use anyhow::Result;
use argh::{ArgsInfo, FromArgs};

use super::argv::{usage, usage_bail};
use super::flags::{
    check_cwd_flag, check_env, check_secret_env, check_timeout, check_ttl, check_user_flag, command_line,
};
use super::operator::operator_args;
use super::task::parse_app_ids;
use crate::protocol::jobs::{JobRequest, Limit, Targets, check_host_timeout};
use crate::protocol::limits;

/// Run one command on many hosts: targets, rate control, progress and grouped results.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "job",
    example = "orange job run --label role=web --max-concurrency 10% -- 'systemctl restart nginx'",
    example = "orange job send --all -- 'apt-get -y upgrade'",
    example = "orange job get 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b --hosts",
    example = "orange job list"
)]
pub struct JobArgs {
    /// what to do
    #[argh(subcommand)]
    pub command: JobCommand,
}

/// The `orange job` subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum JobCommand {
    /// `orange job run`
    Run(RunArgs),
    /// `orange job send`
    Send(SendArgs),
    /// `orange job get`
    Get(GetArgs),
    /// `orange job list`
    List(ListArgs),
    /// `orange job cancel`
    Cancel(CancelArgs),
    /// `orange job pause`
    Pause(PauseArgs),
    /// `orange job resume`
    Resume(ResumeArgs),
    /// `orange job retry`
    Retry(RetryArgs),
}

operator_args! {
    /// Run a command on many hosts and wait: a live progress line on a terminal, then a summary
    /// with identical outputs grouped.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "run",
        example = "orange job run --label role=web --label env=prod -- df -h /",
        example = "orange job run --all --max-concurrency 10% --max-errors 2 -- 'systemctl restart nginx'",
        example = "orange job run --appid web-1,web-2 --dry-run -- uptime",
        example = "orange job run --all --type ping",
        note = "Targets: --appid names hosts, --label picks every accepted agent carrying all the given \
                labels, --all every accepted agent; --appid and --label add up. The list is resolved \
                and frozen when the job is created; --dry-run prints it and sends nothing. The words \
                after -- are the task's payload: for the default type shell, a command line run with sh -c \
                on each host (agents need --allow-shell), one argument being a shell script and several \
                a command and its arguments, quoted so that the remote shell sees exactly those words, \
                as in `orange task run --help`; for another type, the words joined by single spaces. \
                --max-concurrency N or P% keeps at most that many hosts' tasks open (the next host \
                starts when one finishes); --max-errors N or P% stops starting hosts once more than \
                that many failed, timed out, expired or were lost (the rest end `skipped`). Hosts \
                offline when the job starts end `offline` at once (not an error, but exit 1 names them) \
                unless --queue; a host whose agent goes silent mid-job (no request at all: a live agent \
                keeps polling while its task runs) ends after --host-timeout. \
                `orange job pause|resume|cancel ID` act on a running job from anywhere; Ctrl-C only \
                stops watching, and so do SIGTERM, SIGHUP and a closed output: the job goes on. Hosts \
                that ended alike (same state, exit code and output) are shown \
                as one group, with the first 4 KiB of their output as the hosts wrote it (an original Go \
                client's result text too); --hosts lists every host of every group. --json prints the job \
                and every host's result (stdout and stderr as text, or base64 with \"stdout_encoding\": \
                \"base64\" when they are not UTF-8). Connection options as in `orange task run --help`.",
        error_code(1, "some host did not succeed (failed, timed out, expired, lost, cancelled, skipped or offline), or orange failed (server unreachable, refused)"),
        error_code(2, "usage: bad flags, no target, no command")
    )]
    pub struct RunArgs {
        /// app ids to run on, comma separated (repeatable)
        #[argh(option)]
        pub appid: Vec<String>,
        /// label k=v the hosts must carry (repeatable: all must match)
        #[argh(option)]
        pub label: Vec<String>,
        /// run on every accepted agent
        #[argh(switch)]
        pub all: bool,
        /// task type: shell (default), ping or the name of a handler on the hosts
        #[argh(option, long = "type", default = "String::from(\"shell\")")]
        pub task_type: String,
        /// most hosts with an open task at once: N or P% of the targets (default: all at once)
        #[argh(option)]
        pub max_concurrency: Option<String>,
        /// stop starting hosts once more than N or P% of them ended in error (default: no limit)
        #[argh(option)]
        pub max_errors: Option<String>,
        /// seconds the command may run on each host (default: the server's --default-timeout)
        #[argh(option)]
        pub timeout: Option<u64>,
        /// seconds a task may wait for an offline host before it ends `expired` (default: the
        /// server's, 24 hours)
        #[argh(option)]
        pub ttl: Option<u64>,
        /// seconds a task may wait on a host whose agent went silent (no request, no poll) before
        /// it ends `lost` (or `expired` if not yet handed out); default 60
        #[argh(option)]
        pub host_timeout: Option<u64>,
        /// also queue tasks for hosts offline when the job starts (they run when their agent comes
        /// back, within --ttl); without it such hosts end `offline` at once, not as errors
        #[argh(switch)]
        pub queue: bool,
        /// print the hosts the job would run on and their count; send nothing
        #[argh(switch)]
        pub dry_run: bool,
        /// list every host of every result group
        #[argh(switch)]
        pub hosts: bool,
        /// environment variable NAME=value for the command (repeatable); the agents must support
        /// the `env` task feature
        #[argh(option)]
        pub env: Vec<String>,
        /// environment variable NAME whose value is read from orange's own environment and kept
        /// secret (repeatable): never shown by task get, the audit or logs, and dropped from the
        /// server once the task ends; the agents must support the `env` task feature
        #[argh(option)]
        pub secret_env: Vec<String>,
        /// working directory of the command on each host (an absolute path); the agents must
        /// support the `cwd` task feature
        #[argh(option)]
        pub cwd: Option<String>,
        /// user the command runs as on each host; each agent must run as root and list the
        /// user in its --allow-user (otherwise that host's task fails, saying so)
        #[argh(option)]
        pub user: Option<String>,
        /// send no stdin: the command reads an empty input on every host even when orange's
        /// stdin is a pipe or a file (as ssh -n)
        #[argh(switch, short = 'n')]
        pub no_stdin: bool,
        /// the command (the task's payload), after --
        #[argh(positional, greedy)]
        pub command: Vec<String>,
    }
    /// print the job and every host's result as JSON
    json
}

operator_args! {
    /// Start a job on many hosts without waiting; prints its id.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "send",
        example = "orange job send --label role=web --max-concurrency 5 -- 'apt-get -y upgrade'",
        note = "Flags as in `orange job run --help`. Follow it with `orange job get ID --wait 60`."
    )]
    pub struct SendArgs {
        /// app ids to run on, comma separated (repeatable)
        #[argh(option)]
        pub appid: Vec<String>,
        /// label k=v the hosts must carry (repeatable: all must match)
        #[argh(option)]
        pub label: Vec<String>,
        /// run on every accepted agent
        #[argh(switch)]
        pub all: bool,
        /// task type: shell (default), ping or the name of a handler on the hosts
        #[argh(option, long = "type", default = "String::from(\"shell\")")]
        pub task_type: String,
        /// most hosts with an open task at once: N or P% of the targets (default: all at once)
        #[argh(option)]
        pub max_concurrency: Option<String>,
        /// stop starting hosts once more than N or P% of them ended in error (default: no limit)
        #[argh(option)]
        pub max_errors: Option<String>,
        /// seconds the command may run on each host (default: the server's --default-timeout)
        #[argh(option)]
        pub timeout: Option<u64>,
        /// seconds a task may wait for an offline host before it ends `expired` (default: 24 hours)
        #[argh(option)]
        pub ttl: Option<u64>,
        /// seconds a task may wait on a host whose agent went silent (no request, no poll) before
        /// it ends `lost` (or `expired` if not yet handed out); default 60
        #[argh(option)]
        pub host_timeout: Option<u64>,
        /// also queue tasks for hosts offline when the job starts (they run when their agent comes
        /// back, within --ttl); without it such hosts end `offline` at once, not as errors
        #[argh(switch)]
        pub queue: bool,
        /// print the hosts the job would run on and their count; send nothing
        #[argh(switch)]
        pub dry_run: bool,
        /// environment variable NAME=value for the command (repeatable); the agents must support
        /// the `env` task feature
        #[argh(option)]
        pub env: Vec<String>,
        /// environment variable NAME whose value is read from orange's own environment and kept
        /// secret (repeatable): never shown by task get, the audit or logs, and dropped from the
        /// server once the task ends; the agents must support the `env` task feature
        #[argh(option)]
        pub secret_env: Vec<String>,
        /// working directory of the command on each host (an absolute path); the agents must
        /// support the `cwd` task feature
        #[argh(option)]
        pub cwd: Option<String>,
        /// user the command runs as on each host; each agent must run as root and list the
        /// user in its --allow-user (otherwise that host's task fails, saying so)
        #[argh(option)]
        pub user: Option<String>,
        /// send no stdin: the command reads an empty input on every host even when orange's
        /// stdin is a pipe or a file (as ssh -n)
        #[argh(switch, short = 'n')]
        pub no_stdin: bool,
        /// the command (the task's payload), after --
        #[argh(positional, greedy)]
        pub command: Vec<String>,
    }
    /// print the created job as JSON
    json
}

operator_args! {
    /// Run a job that ended again, as a new job linked to it: the same command, input and limits,
    /// on every host it targeted or, with --failed, on those that did not succeed.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "retry",
        example = "orange job retry 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b --failed",
        note = "The new job's `retry_of` names the first one. Hosts whose agent was forgotten since are \
                left out. It is followed like `orange job run`: a progress line, then the summary. \
                Connection options as in `orange task run --help`.",
        error_code(1, "some host did not succeed, nothing was left to retry, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct RetryArgs {
        /// the job id
        #[argh(positional)]
        pub id: String,
        /// only the hosts that did not succeed (failed, timed out, expired, lost, cancelled,
        /// skipped or offline)
        #[argh(switch)]
        pub failed: bool,
        /// list every host of every result group
        #[argh(switch)]
        pub hosts: bool,
    }
    /// print the new job and every host's result as JSON
    json
}

operator_args! {
    /// Show a job: its state, counts and results grouped by outcome.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(subcommand, name = "get", note = "Connection options as in `orange task run --help`.")]
    pub struct GetArgs {
        /// the job id
        #[argh(positional)]
        pub id: String,
        /// seconds to wait for the job to end first (default 0)
        #[argh(option, default = "0")]
        pub wait: u64,
        /// list every host of every result group
        #[argh(switch)]
        pub hosts: bool,
    }
    /// print the job and every host's result as JSON
    json
}

operator_args! {
    /// List jobs, newest first.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(subcommand, name = "list", note = "Connection options as in `orange task run --help`.")]
    pub struct ListArgs {
        /// most jobs to show, 1 to 1000 (default: the server's, 100)
        #[argh(option)]
        pub limit: Option<usize>,
    }
    /// print the list as JSON
    json
}

operator_args! {
    /// Cancel a job: hosts not started are skipped, queued tasks withdrawn, running ones stopped.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "cancel",
        note = "Running tasks are stopped by their agents (SIGTERM, a grace period, SIGKILL) as with \
                `orange task cancel`; --force closes them on the server at once. Connection options as \
                in `orange task run --help`."
    )]
    pub struct CancelArgs {
        /// the job id
        #[argh(positional)]
        pub id: String,
        /// close running tasks on the server at once, even if their agents never answer
        #[argh(switch)]
        pub force: bool,
    }
    /// print the job as JSON
    json
}

operator_args! {
    /// Pause a job: tasks already started go on, no new host starts until `orange job resume`.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(subcommand, name = "pause", note = "Connection options as in `orange task run --help`.")]
    pub struct PauseArgs {
        /// the job id
        #[argh(positional)]
        pub id: String,
    }
    /// print the job as JSON
    json
}

operator_args! {
    /// Resume a paused job: hosts start again as the window allows.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(subcommand, name = "resume", note = "Connection options as in `orange task run --help`.")]
    pub struct ResumeArgs {
        /// the job id
        #[argh(positional)]
        pub id: String,
    }
    /// print the job as JSON
    json
}

/// The flags `run` and `send` share, before validation.
pub(super) struct JobFlags<'a> {
    pub appid: &'a [String],
    pub label: &'a [String],
    pub all: bool,
    pub task_type: String,
    pub max_concurrency: Option<&'a str>,
    pub max_errors: Option<&'a str>,
    pub timeout: Option<u64>,
    pub ttl: Option<u64>,
    pub env: &'a [String],
    pub secret_env: &'a [String],
    pub cwd: Option<String>,
    pub user: Option<String>,
    pub host_timeout: Option<u64>,
    pub queue: bool,
    pub command: &'a [String],
    /// What every task's process reads on its standard input (empty: nothing).
    pub stdin: Vec<u8>,
}

/// The [`JobFlags`] of a [`RunArgs`] or [`SendArgs`], which declare the same job flags; `task_type`
/// is moved out, the rest borrowed.
macro_rules! job_flags {
    ($args:expr) => {
        $crate::cli::job_args::JobFlags {
            appid: &$args.appid,
            label: &$args.label,
            all: $args.all,
            task_type: $args.task_type,
            max_concurrency: $args.max_concurrency.as_deref(),
            max_errors: $args.max_errors.as_deref(),
            timeout: $args.timeout,
            ttl: $args.ttl,
            env: &$args.env,
            secret_env: &$args.secret_env,
            cwd: $args.cwd,
            user: $args.user,
            host_timeout: $args.host_timeout,
            queue: $args.queue,
            command: &$args.command,
            stdin: $crate::cli::run::stdin_unless($args.no_stdin)?,
        }
    };
}
pub(super) use job_flags;

impl JobFlags<'_> {
    /// Validates the flags into the request the server takes.
    pub(super) fn request(self) -> Result<JobRequest> {
        if self.task_type.trim().is_empty() {
            usage_bail!("--type must name a task type: shell, ping or a handler");
        }
        let payload = match self.task_type.as_str() {
            "shell" => command_line(self.command)
                .ok_or_else(|| usage("no command given; usage: orange job run --all -- CMD [ARGS...]"))?,
            _ => self.command.join(" "),
        };
        Ok(JobRequest {
            targets: targets(self.appid, self.label, self.all)?,
            task_type: self.task_type,
            payload,
            timeout_secs: check_timeout(self.timeout)?,
            ttl_secs: check_ttl(self.ttl)?,
            max_concurrency: limit("--max-concurrency", self.max_concurrency)?,
            max_errors: limit("--max-errors", self.max_errors)?,
            env: check_env(self.env)?,
            secret_env: check_secret_env(self.secret_env)?,
            cwd: check_cwd_flag(self.cwd)?,
            user: check_user_flag(self.user)?,
            queue: self.queue,
            stdin: self.stdin,
            host_timeout_secs: self
                .host_timeout
                .map(|secs| check_host_timeout(secs).map_err(|e| usage(format!("--host-timeout: {e}"))))
                .transpose()?,
        })
    }
}

/// The target selection: `--appid` and `--label` add up; `--all` stands alone.
pub(super) fn targets(appid: &[String], label: &[String], all: bool) -> Result<Targets> {
    if all && !(appid.is_empty() && label.is_empty()) {
        usage_bail!("--all already picks every agent; leave out --appid and --label");
    }
    if !all && appid.is_empty() && label.is_empty() {
        usage_bail!("say where to run: --appid ID[,ID...], --label k=v or --all");
    }
    let app_ids = if appid.is_empty() { Vec::new() } else { parse_app_ids(appid)? };
    let labels =
        limits::parse_labels(label, limits::MAX_TARGET_LABELS).map_err(|e| usage(format!("--label: {e}")))?;
    Ok(Targets { app_ids, labels, all })
}

/// Parses an `N` or `P%` flag; `--max-concurrency` must allow at least one host.
fn limit(flag: &str, value: Option<&str>) -> Result<Option<Limit>> {
    let Some(value) = value else { return Ok(None) };
    let limit = Limit::parse(value).map_err(|e| usage(format!("{flag}: {e}")))?;
    if flag == "--max-concurrency" && matches!(limit, Limit::Count(0) | Limit::Percent(0)) {
        usage_bail!("{flag} must allow at least one host at a time");
    }
    Ok(Some(limit))
}

/// Job ids are UUIDs; checking here gives a clear message and keeps the id a plain path segment.
pub(super) fn check_job_id(id: &str) -> Result<String> {
    let parsed =
        uuid::Uuid::parse_str(id.trim()).map_err(|_| usage(format!("{id:?} is not a job id (a UUID)")))?;
    Ok(parsed.hyphenated().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|word| word.to_string()).collect()
    }

    fn flags<'a>(appid: &'a [String], label: &'a [String], all: bool, command: &'a [String]) -> JobFlags<'a> {
        JobFlags {
            appid,
            label,
            all,
            task_type: "shell".into(),
            max_concurrency: Some("10%"),
            max_errors: Some("2"),
            timeout: None,
            ttl: None,
            env: &[],
            secret_env: &[],
            cwd: None,
            user: None,
            host_timeout: None,
            queue: false,
            command,
            stdin: Vec::new(),
        }
    }

    #[test]
    fn targets_add_up_and_all_stands_alone() {
        let request =
            flags(&words(&["a,b"]), &words(&["role=web"]), false, &words(&["df", "-h"])).request().unwrap();
        assert_eq!(request.targets.app_ids, words(&["a", "b"]));
        assert_eq!(request.targets.labels.get("role").map(String::as_str), Some("web"));
        assert_eq!(request.payload, "df -h");
        let (argv, host) = (words(&["sh", "-c", "echo a; echo b"]), words(&["a"]));
        let quoted = flags(&host, &[], false, &argv).request().unwrap();
        assert_eq!(quoted.payload, "sh -c 'echo a; echo b'");
        let mut handler = flags(&host, &[], false, &argv);
        handler.task_type = "deploy".into();
        assert_eq!(handler.request().unwrap().payload, "sh -c echo a; echo b");
        assert_eq!(
            (request.max_concurrency, request.max_errors),
            (Some(Limit::Percent(10)), Some(Limit::Count(2)))
        );
        let all = flags(&[], &[], true, &words(&["true"])).request().unwrap();
        assert!(all.targets.all && all.targets.app_ids.is_empty());
        let both = flags(&words(&["a"]), &[], true, &words(&["true"])).request().unwrap_err();
        assert_eq!(both.to_string(), "--all already picks every agent; leave out --appid and --label");
        let none = flags(&[], &[], false, &words(&["true"])).request().unwrap_err();
        assert!(none.to_string().starts_with("say where to run"), "{none}");
    }

    #[test]
    fn bad_limits_labels_and_commands_are_named() {
        let mut bad = flags(&[], &[], true, &[]);
        assert!(bad.request().unwrap_err().to_string().starts_with("no command given"));
        bad = flags(&[], &[], true, &[]);
        bad.task_type = "ping".into();
        assert_eq!(bad.request().unwrap().payload, "");
        let cmd = words(&["true"]);
        bad = flags(&[], &[], true, &cmd);
        bad.max_concurrency = Some("0");
        assert_eq!(
            bad.request().unwrap_err().to_string(),
            "--max-concurrency must allow at least one host at a time"
        );
        bad = flags(&[], &[], true, &cmd);
        bad.max_errors = Some("lots");
        assert!(bad.request().unwrap_err().to_string().starts_with("--max-errors: \"lots\""));
        let label = words(&["role"]);
        let err = flags(&[], &label, false, &cmd).request().unwrap_err();
        assert!(format!("{err:#}").contains("--label: label \"role\" is not k=v"), "{err:#}");
    }

    #[test]
    fn job_ids_must_be_uuids() {
        assert!(check_job_id("0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b").is_ok());
        assert_eq!(check_job_id("../x").unwrap_err().to_string(), "\"../x\" is not a job id (a UUID)");
    }

    #[test]
    fn every_subcommand_parses() {
        let parse = |argv: &[&str]| JobArgs::from_args(&["job"], argv).map(|args| args.command);
        assert!(matches!(
            parse(&["run", "--label", "a=b", "--max-concurrency", "5", "--", "true"]),
            Ok(JobCommand::Run(RunArgs { dry_run: false, .. }))
        ));
        assert!(matches!(
            parse(&["send", "--all", "--type", "ping", "--dry-run"]),
            Ok(JobCommand::Send(SendArgs { dry_run: true, .. }))
        ));
        assert!(matches!(
            parse(&["cancel", "--force", "x"]),
            Ok(JobCommand::Cancel(CancelArgs { force: true, .. }))
        ));
        assert!(matches!(parse(&["pause", "x"]), Ok(JobCommand::Pause(_))));
        assert!(matches!(parse(&["resume", "x"]), Ok(JobCommand::Resume(_))));
        assert!(matches!(
            parse(&["get", "x", "--wait", "5", "--hosts"]),
            Ok(JobCommand::Get(GetArgs { wait: 5, hosts: true, .. }))
        ));
        assert!(matches!(
            parse(&["list", "--limit", "3"]),
            Ok(JobCommand::List(ListArgs { limit: Some(3), .. }))
        ));
    }
}
