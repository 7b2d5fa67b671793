//! The one agent launcher: `orange agent` with its own state directory, pointed at a
//! [`Server`] (or a proxy in front of it), restarted with the same state, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::process::{clean_env, kill_child, log_file, read_log, show_command, signal, wait_exit};
use super::{BASE_SECRET, BIN, Server, try_wait_until};

/// How long a started agent may take to be listed online; generous, since the wait ends as soon
/// as it is.
const ONLINE_DEADLINE: Duration = Duration::from_secs(30);

/// Flags of `orange agent` a test may set.
#[derive(Debug, Clone, Default)]
pub struct AgentOpts {
    /// `--allow-shell`.
    pub allow_shell: bool,
    /// `--handlers DIR`.
    pub handlers: Option<PathBuf>,
    /// `--label k=v`, repeated.
    pub labels: Vec<String>,
    /// `--max-tasks`.
    pub max_tasks: Option<usize>,
    /// `--allow-user NAME`, repeated.
    pub allow_users: Vec<String>,
    /// The URL the agent talks to instead of the server's own (e.g. a [`Proxy`] in front of it).
    pub server_url: Option<String>,
    /// Further flags, passed as given (e.g. `--allow-write-root DIR`).
    pub extra_args: Vec<String>,
    /// `--config FILE` instead of `--server`, `--appid` and `--state`, which the file then gives
    /// (its app id the one the agent is started with); the other options still add their flags.
    pub config: Option<PathBuf>,
    /// Environment variables set for the agent (after orange's own are cleared and the
    /// harness's set).
    pub env: Vec<(String, String)>,
}

/// A running `orange agent` with its own state directory.
pub struct Agent {
    child: Option<Child>,
    /// Its app id.
    pub app_id: String,
    /// The command line of the last start.
    pub command: String,
    server_url: String,
    state: TempDir,
    logs: TempDir,
    opts: AgentOpts,
    starts: u32,
}

impl AgentOpts {
    /// Options of an agent that runs `shell` tasks (`--allow-shell`).
    pub fn shell() -> Self {
        AgentOpts { allow_shell: true, ..AgentOpts::default() }
    }
}

impl Agent {
    /// [`Agent::start`], then waits until `server` lists the agent online.
    pub fn start_online(server: &Server, app_id: &str, opts: AgentOpts) -> Agent {
        let mut agent = Agent::start(server, app_id, opts);
        agent.wait_online(server, ONLINE_DEADLINE);
        agent
    }

    /// Starts `orange agent` against `server` with a fresh state directory.
    pub fn start(server: &Server, app_id: &str, opts: AgentOpts) -> Agent {
        let mut agent = Agent {
            child: None,
            app_id: app_id.to_owned(),
            command: String::new(),
            server_url: opts.server_url.clone().unwrap_or_else(|| server.url.clone()),
            state: TempDir::with_prefix("orange-agent-state-").expect("create state dir"),
            logs: TempDir::with_prefix("orange-agent-logs-").expect("create log dir"),
            opts,
            starts: 0,
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut cmd = Command::new(BIN);
        cmd.arg("agent");
        match &self.opts.config {
            Some(file) => cmd.arg("--config").arg(file),
            None => cmd
                .arg("--server")
                .arg(&self.server_url)
                .arg("--appid")
                .arg(&self.app_id)
                .arg("--state")
                .arg(self.state.path()),
        };
        if self.opts.allow_shell {
            cmd.arg("--allow-shell");
        }
        if let Some(dir) = &self.opts.handlers {
            cmd.arg("--handlers").arg(dir);
        }
        for label in &self.opts.labels {
            cmd.arg("--label").arg(label);
        }
        if let Some(max) = self.opts.max_tasks {
            cmd.arg("--max-tasks").arg(max.to_string());
        }
        for user in &self.opts.allow_users {
            cmd.arg("--allow-user").arg(user);
        }
        cmd.args(&self.opts.extra_args);
        clean_env(&mut cmd);
        // Harness servers run with `--enroll-key orange-forge` unless told otherwise.
        cmd.env("ORANGE_ENROLL_KEY", BASE_SECRET);
        cmd.envs(self.opts.env.iter().map(|(name, value)| (name, value)));
        self.command = show_command(&cmd);
        let log = log_file(&self.log_path(), &format!("start #{}: {}", self.starts, self.command));
        let out = log.try_clone().expect("clone log file");
        cmd.stdin(Stdio::null()).stdout(out).stderr(log);
        self.child = Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {}: {e}", self.command)));
    }

    /// The agent's state directory (kept across restarts).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Path of the file holding the agent's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.logs.path().join("agent.log")
    }

    /// Everything the agent printed so far.
    pub fn output(&self) -> String {
        read_log(&self.log_path())
    }

    /// Panics with the agent's output if its process has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("agent was started");
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "orange agent exited with {status}\ncommand: {}\noutput:\n{}",
                self.command,
                self.output()
            );
        }
    }

    /// Waits until `server` knows this agent and lists it online; fails at once if the agent
    /// process exits.
    pub fn wait_online(&mut self, server: &Server, timeout: Duration) {
        let registered = try_wait_until(timeout, || {
            self.assert_running();
            server.agent(&self.app_id).is_some_and(|a| a.online)
        });
        assert!(
            registered,
            "agent {} not online within {timeout:?}\ncommand: {}\noutput:\n{}",
            self.app_id,
            self.command,
            self.output()
        );
    }

    /// SIGKILLs the agent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Stops the agent cleanly (SIGTERM) and waits up to `timeout` for it to exit; panics with
    /// its output if it does not.
    pub fn stop(&mut self, timeout: Duration) {
        let mut child = self.child.take().expect("agent is running");
        signal(&mut child, libc::SIGTERM);
        if wait_exit(&mut child, timeout).is_none() {
            kill_child(&mut child);
            panic!(
                "agent {} did not stop within {timeout:?} of SIGTERM\noutput:\n{}",
                self.app_id,
                self.output()
            );
        }
    }

    /// Kills the agent if it runs and starts it again with the same state directory and flags.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- orange agent output ({}) -----\n{}", self.command, self.output());
        }
    }
}
