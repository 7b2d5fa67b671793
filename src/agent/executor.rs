//! The built-in executors, chosen by task type: `ping` answers at once, `shell` runs `sh -c` (only
//! when allowed), `file.put` and `file.get` copy a file (`files.rs`, under the allowed roots),
//! and any other type T runs the executable `<handlers>/T`. A task that cannot run
//! becomes a failed outcome with a reason, never a dropped task. Inside the agent a process's
//! output streams to the server and a cancel stops its group; outside it (`run`), output is
//! captured into the outcome. A task's `env` is added to its process's environment (never the
//! agent's own `ORANGE_*` variables), its `cwd` becomes the process's working directory,
//! which must exist, and its `user` the process's identity when the agent allows it
//! ([`super::run_as`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::capture::Capture;
use super::config::AgentConfig;
use super::files::FileRoots;
use super::handler::{OutcomeStatus, TaskContext, TaskHandler, TaskOutcome};
use super::process::{ProcessOutput, RunLimits, run_process_with};
use super::run_as;
use super::sink::OutputSink;
use crate::protocol::WireTask;
use crate::protocol::wire::MAX_OUTPUT_LEN;
use crate::protocol::{features, files, limits};

/// Timeout of a task that does not carry one.
pub const DEFAULT_TASK_TIMEOUT: Duration = Duration::from_secs(600);
/// Why a handler task carrying stdin fails: a handler reads its payload on stdin.
const HANDLER_STDIN: &str = "a handler reads its payload on stdin; a task for it cannot carry stdin";
/// Why a shell task was refused.
pub const SHELL_DISABLED: &str = "shell tasks are disabled on this agent; start it with --allow-shell";
/// The shell of `shell` tasks, by absolute path so that the agent's PATH does not matter.
const SHELL: &str = "/bin/sh";
/// Variables that hold secrets (and the descriptor `orange agent` hands its secrets over on):
/// task processes never inherit them, and `orange agent` runs without them in its environment.
pub const SECRET_ENV: [&str; 6] = [
    "ORANGE_SECRET",
    "ORANGE_ENROLL_KEY",
    "ORANGE_ENROLL_TOKEN",
    "ORANGE_TOKEN",
    "ORANGE_ADMIN_TOKEN",
    "ORANGE_SECRETS_FD",
];

/// The default [`TaskHandler`]: `ping`, `shell` and the handlers directory.
#[derive(Debug, Clone)]
pub struct BuiltinExecutor {
    allow_shell: bool,
    handlers_dir: Option<PathBuf>,
    allowed_users: Vec<String>,
    allowed_handlers: Vec<String>,
    ping_answer: String,
    file_roots: FileRoots,
}

impl BuiltinExecutor {
    /// The executors `config` allows.
    pub fn new(config: &AgentConfig) -> Self {
        let roots = FileRoots { write: config.write_roots.clone(), read: config.read_roots.clone() };
        BuiltinExecutor::with(config.allow_shell, config.handlers_dir.clone(), &config.hostname)
            .allowing_users(config.allowed_users.clone())
            .allowing_handlers(config.allowed_handlers.clone())
            .file_roots(roots)
    }

    /// The same executors, with file copy allowed under `roots` (canonical directories).
    pub fn file_roots(self, roots: FileRoots) -> Self {
        BuiltinExecutor { file_roots: roots, ..self }
    }

    /// Executors from their settings; `handlers_dir` should be canonical.
    pub fn with(allow_shell: bool, handlers_dir: Option<PathBuf>, hostname: &str) -> Self {
        let ping_answer = format!("orange {} on {hostname}", env!("CARGO_PKG_VERSION"));
        BuiltinExecutor {
            allow_shell,
            handlers_dir,
            allowed_users: Vec::new(),
            allowed_handlers: Vec::new(),
            ping_answer,
            file_roots: FileRoots::default(),
        }
    }

    /// These executors, running a task as another user when it asks for one of `users` (and
    /// the agent runs as root).
    pub fn allowing_users(mut self, users: Vec<String>) -> Self {
        self.allowed_users = users;
        self
    }

    /// These executors, running only the handlers named in `handlers` (none named: every one).
    pub fn allowing_handlers(mut self, handlers: Vec<String>) -> Self {
        self.allowed_handlers = handlers;
        self
    }

    fn shell(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        if !self.allow_shell {
            return TaskOutcome::failed(SHELL_DISABLED);
        }
        let mut command = Command::new(SHELL);
        command.arg("-c").arg(&task.payload);
        // The task's stdin, written from a thread (a command that does not read it never blocks
        // the agent); none: /dev/null.
        let input = (!task.stdin.is_empty()).then(|| task.stdin.clone());
        run_command(command, task, input, SHELL, &self.allowed_users, ctx)
    }

    fn handler(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        match self.handler_path(&task.task_type) {
            Ok(_) if !task.stdin.is_empty() => TaskOutcome::failed(HANDLER_STDIN),
            Ok(path) => {
                let what = path.display().to_string();
                let input = Some(task.payload.as_bytes().to_vec());
                run_command(Command::new(&path), task, input, &what, &self.allowed_users, ctx)
            }
            Err(reason) => TaskOutcome::failed(reason),
        }
    }

    /// The executable for task type `name`, which must be a plain file inside the handlers dir.
    fn handler_path(&self, name: &str) -> Result<PathBuf, String> {
        if !self.allowed_handlers.is_empty() && !self.allowed_handlers.iter().any(|h| h == name) {
            return Err(format!(
                "handler {name:?} is not allowed on this agent (allowed: {}); start it with --allow-handler {name}",
                self.allowed_handlers.join(", ")
            ));
        }
        let Some(dir) = &self.handlers_dir else {
            return Err(format!(
                "unknown task type {name:?}: this agent has no handlers directory; start it with --handlers DIR"
            ));
        };
        if !is_plain_name(name) {
            return Err(format!(
                "task type {name:?} is not a valid handler name (A-Z a-z 0-9 . _ -, not starting with '.')"
            ));
        }
        resolve_inside(dir, name)
    }
}

impl TaskHandler for BuiltinExecutor {
    fn run(&self, task: &WireTask) -> TaskOutcome {
        self.run_with(task, &TaskContext::detached())
    }

    fn features(&self) -> Vec<String> {
        features::KNOWN.iter().map(|f| (*f).to_owned()).collect()
    }

    fn run_with(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        match task.task_type.as_str() {
            // The original's own server names this type `PING`, so any case is accepted.
            t if t.eq_ignore_ascii_case("ping") => TaskOutcome::success(self.ping_answer.clone()),
            "shell" => self.shell(task, ctx),
            files::TASK_FILE_PUT => self.file_roots.put(task, ctx),
            files::TASK_FILE_GET => self.file_roots.get(task, ctx),
            _ => self.handler(task, ctx),
        }
    }
}

/// A task type the server accepts is a file name without path separators or a leading dot.
fn is_plain_name(name: &str) -> bool {
    crate::protocol::limits::check_task_type(name).is_ok()
}

/// `dir/name`, refusing anything that canonicalizes (through symlinks) outside `dir`.
fn resolve_inside(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let candidate = dir.join(name);
    let path = candidate
        .canonicalize()
        .map_err(|e| format!("unknown task type {name:?}: no handler {}: {e}", candidate.display()))?;
    if !path.starts_with(dir) {
        return Err(format!("handler {name:?} resolves to {}, outside {}", path.display(), dir.display()));
    }
    if !path.is_file() {
        return Err(format!("handler {} is not a regular file", path.display()));
    }
    Ok(path)
}

/// Runs a task's process with the task's timeout and the context's cancel flag, its output
/// streamed through the context (or captured when detached), and turns what it left into an
/// outcome.
fn run_command(
    mut command: Command,
    task: &WireTask,
    input: Option<Vec<u8>>,
    what: &str,
    allowed_users: &[String],
    ctx: &TaskContext,
) -> TaskOutcome {
    if let Err(reason) = apply_context(&mut command, task, allowed_users) {
        return TaskOutcome::failed(reason);
    }
    command.env("ORANGE_TASK_ID", &task.task_id);
    for name in SECRET_ENV {
        command.env_remove(name);
    }
    let timeout = task.timeout_secs.map_or(DEFAULT_TASK_TIMEOUT, Duration::from_secs);
    let limits = RunLimits {
        timeout,
        cancel: Some(ctx.cancel_flag()),
        cancel_grace: ctx.cancel_grace(),
        watch: ctx.group_watch(),
    };
    let sink: Box<dyn OutputSink> = match ctx.output_sink() {
        Some(sink) => Box::new(sink),
        None => Box::new(Capture::new(MAX_OUTPUT_LEN)),
    };
    match run_process_with(command, input, &limits, sink) {
        Ok(output) => outcome_of(output, &limits),
        Err(e) => TaskOutcome::failed(format!("cannot start {what}: {e}")),
    }
}

/// Gives `command` the task's user, environment and working directory, checked again here (a
/// server is not trusted to have done it): the user must be allowed, names of the agent's own
/// `ORANGE_*` variables are refused, and the directory must exist on this host.
fn apply_context(command: &mut Command, task: &WireTask, allowed_users: &[String]) -> Result<(), String> {
    if let Some(user) = &task.user {
        limits::check_user(user)?;
        // First: the switch must come before the other pre-exec hooks, and the task's own
        // environment and directory override the user's defaults.
        if let Some(run_as) = run_as::resolve(user, allowed_users, run_as::effective_uid())? {
            run_as.apply(command);
        }
    }
    limits::check_env(&task.env)?;
    command.envs(&task.env);
    if let Some(cwd) = &task.cwd {
        limits::check_cwd(cwd)?;
        match std::fs::metadata(cwd) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format!("working directory {cwd:?} is not a directory on this host")),
            Err(e) => return Err(format!("working directory {cwd:?} cannot be used on this host: {e}")),
        }
        command.current_dir(cwd);
    }
    Ok(())
}

fn outcome_of(output: ProcessOutput, limits: &RunLimits<'_>) -> TaskOutcome {
    let (status, error) = match (output.cancelled, output.timed_out, output.exit_code, output.signal) {
        (true, _, _, signal) => (OutcomeStatus::Cancelled, Some(cancel_note(signal, limits.cancel_grace))),
        (false, true, _, _) => {
            let secs = limits.timeout.as_secs();
            (OutcomeStatus::TimedOut, Some(format!("timed out after {secs} s; the process group was killed")))
        }
        (false, false, Some(0), _) => (OutcomeStatus::Succeeded, None),
        (false, false, _, Some(signal)) => {
            (OutcomeStatus::Failed, Some(format!("killed by signal {signal}")))
        }
        (false, false, _, None) => (OutcomeStatus::Failed, None),
    };
    TaskOutcome { status, exit_code: output.exit_code, stdout: output.stdout, stderr: output.stderr, error }
}

/// The error text of a cancelled process: how its group was stopped.
fn cancel_note(signal: Option<i32>, grace: Duration) -> String {
    if signal == Some(libc::SIGKILL) {
        let ms = grace.as_millis();
        format!("cancelled; the process group ignored SIGTERM and was killed after the {ms} ms grace")
    } else {
        "cancelled; the process group was sent SIGTERM".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    use super::*;

    fn task(task_type: &str, payload: &str) -> WireTask {
        WireTask {
            task_id: "0190a5e3-aaaa-7000-8000-000000000001".into(),
            task_type: task_type.into(),
            do_status: String::new(),
            create_at: "2026-11-26T06:40:41Z".into(),
            payload: payload.into(),
            result: String::new(),
            timeout_secs: Some(5),
            env: Default::default(),
            cwd: None,
            user: None,
            stdin: Vec::new(),
            attempt: None,
            more: Vec::new(),
        }
    }

    fn shell_allowed() -> BuiltinExecutor {
        BuiltinExecutor::with(true, None, "h1")
    }

    fn write_handler(dir: &Path, name: &str, script: &str) -> std::io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
    }

    /// A handlers dir (canonical, as the config makes it) and an executor using it.
    fn with_handlers() -> std::io::Result<(tempfile::TempDir, BuiltinExecutor)> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("handlers");
        std::fs::create_dir(&dir)?;
        let executor = BuiltinExecutor::with(false, Some(dir.canonicalize()?), "h1");
        Ok((tmp, executor))
    }

    #[test]
    fn ping_answers_with_version_and_host() {
        let outcome = shell_allowed().run(&task("ping", ""));
        let expected = format!("orange {} on h1", env!("CARGO_PKG_VERSION"));
        assert_eq!(outcome, TaskOutcome::success(expected.clone()));
        assert_eq!(shell_allowed().run(&task("PING", "")).stdout, expected);
    }

    #[test]
    fn shell_runs_and_captures_stdout_stderr_and_exit_code() {
        let outcome = shell_allowed().run(&task("shell", "echo hello; echo oops >&2; exit 7"));
        assert_eq!(
            outcome,
            TaskOutcome {
                status: OutcomeStatus::Failed,
                exit_code: Some(7),
                stdout: "hello\n".into(),
                stderr: "oops\n".into(),
                error: None,
            }
        );
        let ok = shell_allowed().run(&task("shell", "printf %s \"$ORANGE_TASK_ID\""));
        assert_eq!((ok.status, ok.exit_code), (OutcomeStatus::Succeeded, Some(0)));
        assert_eq!(ok.stdout, "0190a5e3-aaaa-7000-8000-000000000001");
    }

    #[test]
    fn shell_is_refused_without_allow_shell() {
        let outcome = BuiltinExecutor::with(false, None, "h1").run(&task("shell", "touch /tmp/never"));
        assert_eq!(outcome, TaskOutcome::failed(SHELL_DISABLED));
    }

    #[test]
    fn handler_gets_payload_on_stdin_and_the_task_id() -> std::io::Result<()> {
        let (_tmp, executor) = with_handlers()?;
        let dir = executor.handlers_dir.clone().expect("set above");
        write_handler(&dir, "echo-in", "#!/bin/sh\nprintf 'id=%s in=' \"$ORANGE_TASK_ID\"\ncat\n")?;
        let outcome = executor.run(&task("echo-in", "{\"x\":1}"));
        assert_eq!(outcome.status, OutcomeStatus::Succeeded);
        assert_eq!(outcome.stdout, "id=0190a5e3-aaaa-7000-8000-000000000001 in={\"x\":1}");
        Ok(())
    }

    #[test]
    fn only_allowed_handlers_run_when_some_are_named() -> std::io::Result<()> {
        let (_tmp, executor) = with_handlers()?;
        let dir = executor.handlers_dir.clone().expect("set above");
        write_handler(&dir, "deploy", "#!/bin/sh\necho deployed\n")?;
        write_handler(&dir, "wipe", "#!/bin/sh\necho wiped\n")?;
        let executor = executor.allowing_handlers(vec!["deploy".into()]);
        assert_eq!(executor.run(&task("deploy", "")).stdout, "deployed\n");
        let refused = executor.run(&task("wipe", ""));
        assert_eq!(refused.status, OutcomeStatus::Failed);
        assert!(refused.stdout.is_empty(), "{refused:?}");
        let error = refused.error.unwrap_or_default();
        assert!(
            error.starts_with("handler \"wipe\" is not allowed on this agent (allowed: deploy)"),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn handler_names_that_escape_the_dir_are_refused() -> std::io::Result<()> {
        let (tmp, executor) = with_handlers()?;
        for name in ["../../bin/sh", "/bin/sh", "..", ".hidden", "a/b", ""] {
            let outcome = executor.run(&task(name, "echo pwned"));
            let error = outcome.error.clone().unwrap_or_default();
            assert_eq!(outcome.status, OutcomeStatus::Failed, "{name}");
            assert!(error.starts_with(&format!("task type {name:?} is not a valid handler name")), "{error}");
        }
        let dir = executor.handlers_dir.clone().expect("set above");
        std::os::unix::fs::symlink("/bin/sh", dir.join("sneaky"))?;
        let outcome = executor.run(&task("sneaky", "echo pwned"));
        assert!(outcome.error.unwrap_or_default().contains("outside"));
        drop(tmp);
        Ok(())
    }

    #[test]
    fn missing_handler_and_unknown_type_fail_with_a_reason() -> std::io::Result<()> {
        let (_tmp, executor) = with_handlers()?;
        let missing = executor.run(&task("deploy", ""));
        let error = missing.error.unwrap_or_default();
        assert_eq!(missing.status, OutcomeStatus::Failed);
        assert!(error.starts_with("unknown task type \"deploy\": no handler "), "{error}");
        let unknown = BuiltinExecutor::with(true, None, "h1").run(&task("deploy", ""));
        assert_eq!(
            unknown,
            TaskOutcome::failed(
                "unknown task type \"deploy\": this agent has no handlers directory; start it with --handlers DIR"
            )
        );
        Ok(())
    }

    #[test]
    fn non_executable_handler_fails_to_start() -> std::io::Result<()> {
        let (_tmp, executor) = with_handlers()?;
        let dir = executor.handlers_dir.clone().expect("set above");
        std::fs::write(dir.join("plain"), "#!/bin/sh\n")?;
        let outcome = executor.run(&task("plain", ""));
        let error = outcome.error.unwrap_or_default();
        assert!(error.starts_with("cannot start ") && error.contains("ermission denied"), "{error}");
        Ok(())
    }

    #[test]
    fn timeout_kills_the_group_and_reports_timeout() {
        let started = Instant::now();
        let mut slow = task("shell", "sleep 30 & sleep 30");
        slow.timeout_secs = Some(1);
        let outcome = shell_allowed().run(&slow);
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        assert_eq!(outcome.status, OutcomeStatus::TimedOut);
        assert_eq!(outcome.error.as_deref(), Some("timed out after 1 s; the process group was killed"));
    }

    #[test]
    fn env_is_added_and_cwd_is_used_by_shell_and_handlers() -> std::io::Result<()> {
        let mut shell = task("shell", "printf '%s %s' \"$GREETING\" \"$(pwd)\"");
        shell.env.insert("GREETING".into(), "hi there".into());
        shell.cwd = Some("/tmp".into());
        assert_eq!(shell_allowed().run(&shell).stdout, "hi there /tmp");
        let (_tmp, executor) = with_handlers()?;
        let dir = executor.handlers_dir.clone().expect("set above");
        write_handler(&dir, "show", "#!/bin/sh\nprintf '%s %s' \"$A\" \"$(pwd)\"\n")?;
        let mut handled = task("show", "");
        handled.env.insert("A".into(), "b".into());
        handled.cwd = Some("/".into());
        assert_eq!(executor.run(&handled).stdout, "b /");
        assert_eq!(executor.features(), ["cwd", "env", "files", "stdin", "user"]);
        Ok(())
    }

    #[test]
    fn a_missing_cwd_or_an_orange_variable_fails_the_task_without_running_it() {
        let mut missing = task("shell", "touch /tmp/orange-never-run");
        missing.cwd = Some("/nonexistent/orange-test".into());
        let outcome = shell_allowed().run(&missing);
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        let error = outcome.error.unwrap_or_default();
        assert!(
            error.starts_with("working directory \"/nonexistent/orange-test\" cannot be used"),
            "{error}"
        );
        let mut secret = task("shell", "echo \"$ORANGE_TASK_ID\"");
        secret.env.insert("ORANGE_TASK_ID".into(), "forged".into());
        let outcome = shell_allowed().run(&secret);
        assert_eq!(outcome.status, OutcomeStatus::Failed);
        assert!(outcome.error.unwrap_or_default().contains("belong to the agent"));
    }

    #[test]
    fn another_user_is_refused_unless_allowed_and_then_switched_to() {
        let mut as_nobody = task("shell", "id -un; id -u; printf '%s %s ' \"$HOME\" \"$USER\"; pwd");
        as_nobody.user = Some("nobody".into());
        let refused = shell_allowed().run(&as_nobody);
        assert_eq!(refused.status, OutcomeStatus::Failed);
        assert!(refused.error.unwrap_or_default().contains("--allow-user nobody"));
        let outcome = shell_allowed().allowing_users(vec!["nobody".into()]).run(&as_nobody);
        if run_as::effective_uid() != 0 {
            assert!(outcome.error.unwrap_or_default().contains("not root"));
            return;
        }
        let nobody = nix::unistd::User::from_name("nobody").ok().flatten().expect("a nobody user");
        let home = nobody.dir.display().to_string();
        let start = if nobody.dir.is_dir() { home.clone() } else { "/".to_owned() };
        let expected = format!("nobody\n{}\n{home} nobody {start}\n", nobody.uid);
        assert_eq!((outcome.status, outcome.stdout), (OutcomeStatus::Succeeded, expected));
    }

    #[test]
    fn secrets_in_the_environment_are_not_inherited() {
        let outcome = shell_allowed().run(&task("shell", "echo \"${ORANGE_SECRET-unset}\""));
        assert_eq!(outcome.stdout, "unset\n");
    }
}
