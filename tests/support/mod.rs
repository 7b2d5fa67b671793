//! Test harness: starts the real `orange` binary (server, agent, CLI) as child processes, each
//! with its own temp dirs and an ephemeral port, kills them on drop, and on a failing test prints
//! every child's command and stderr. Also a raw HTTP/1.1 client that writes requests byte for byte
//! as Go's net/http does, and an independent implementation of the original signature.
//!
//! Not every test crate uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use orange::client::{AdminClient, ClientError};
use orange::protocol::admin::{AgentList, AgentView, EnqueueReply, EnqueueRequest, TaskList, TaskView};
use sha2::Sha256;
use tempfile::TempDir;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_orange");
/// How long a child may take to print its listening line.
pub const START_DEADLINE: Duration = Duration::from_secs(15);
/// Default deadline of one CLI invocation.
pub const CLI_DEADLINE: Duration = Duration::from_secs(30);
/// Environment variables of orange that must not leak from the developer's shell into children.
const ORANGE_ENV: &[&str] = &[
    "ORANGE_SERVER",
    "ORANGE_TOKEN",
    "ORANGE_SECRET",
    "ORANGE_ADMIN_TOKEN",
    "ORANGE_ENROLL_KEY",
    "ORANGE_ENROLL_TOKEN",
    "ORANGE_CA_FILE",
    "ORANGE_INSECURE",
    "ORANGE_LOG",
];

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `cond` every 20 ms until it holds; panics naming `what` once `timeout` has passed.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(try_wait_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; says whether it held.
pub fn try_wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Children

/// Removes orange's environment variables so a child sees only what the test gives it.
fn clean_env(cmd: &mut Command) {
    for name in ORANGE_ENV {
        cmd.env_remove(name);
    }
}

/// A printable form of a command line.
fn show_command(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    line
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Opens (appending) the file a child's stderr goes to, after writing a header naming the command.
fn log_file(path: &Path, header: &str) -> File {
    let mut file = OpenOptions::new().create(true).append(true).open(path).expect("open child log");
    writeln!(file, "=== {header}").expect("write child log header");
    file
}

fn read_log(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Sends `signal` to `child` unless it already exited.
fn signal(child: &mut Child, signal: libc::c_int) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: kill(2) with the pid of a child we own and have not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
}

/// Waits up to `timeout` for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    try_wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// The first line `stdout` prints (the server's listening line), on a channel; the rest is
/// drained so the child never blocks on a full pipe.
fn first_line(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    rx
}

/// SIGKILLs and reaps `child`.
fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Server

/// Flags of `orange server` a test may set; the rest is chosen by the harness.
#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    /// `--admin-token`; without it the server generates DIR/admin.token, which the harness reads.
    pub admin_token: Option<String>,
    /// `--poll-window` in seconds.
    pub poll_window: Option<u64>,
    /// `--default-timeout` in seconds.
    pub default_timeout: Option<u64>,
    /// `--ack-window` in seconds.
    pub ack_window: Option<u64>,
    /// `--ttl` in seconds.
    pub ttl: Option<u64>,
    /// `--lost-grace` in seconds.
    pub lost_grace: Option<u64>,
    /// `--output-cap-mb`.
    pub output_cap_mb: Option<u64>,
    /// `--cache-mb` (sled's page cache).
    pub cache_mb: Option<u64>,
    /// `--retention` in seconds.
    pub retention: Option<u64>,
    /// `--compact-at-mb`.
    pub compact_at_mb: Option<u64>,
    /// `--enroll-key`; without it the original's public key [`BASE_SECRET`], so that original
    /// clients and simulated agents enroll as they do against the original server.
    pub enroll_key: Option<String>,
    /// Further flags, passed as given (e.g. `--max-inflight 1`).
    pub extra_args: Vec<String>,
}

impl ServerOpts {
    /// Options with the given poll window.
    pub fn poll_window(secs: u64) -> Self {
        ServerOpts { poll_window: Some(secs), ..ServerOpts::default() }
    }
}

/// A running `orange server` on 127.0.0.1 with its own data directory.
pub struct Server {
    child: Option<Child>,
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    /// The last command line used to start it.
    pub command: String,
    data: TempDir,
    logs: TempDir,
    opts: ServerOpts,
    starts: u32,
}

impl Server {
    /// Starts a server on an ephemeral port with a fresh data directory; panics (showing its
    /// stderr) if it does not print its listening line in time.
    pub fn start(opts: ServerOpts) -> Server {
        let data = TempDir::with_prefix("orange-data-").expect("create data dir");
        let logs = TempDir::with_prefix("orange-logs-").expect("create log dir");
        let mut server = Server {
            child: None,
            addr: "127.0.0.1:0".parse().unwrap(),
            url: String::new(),
            token: String::new(),
            command: String::new(),
            data,
            logs,
            opts,
            starts: 0,
        };
        if let Err(e) = server.spawn("127.0.0.1:0") {
            panic!("{e}");
        }
        server
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// Path of the file holding the server's stderr (all starts).
    pub fn stderr_path(&self) -> PathBuf {
        self.logs.path().join("server.stderr")
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read_log(&self.stderr_path())
    }

    /// Process id of the current server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is running").id()
    }

    /// The command line that starts this server on `listen`.
    fn build_command(&self, listen: &str) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.arg("server").arg("--data").arg(self.data.path()).arg("--listen").arg(listen);
        if let Some(token) = &self.opts.admin_token {
            cmd.arg("--admin-token").arg(token);
        }
        if let Some(secs) = self.opts.poll_window {
            cmd.arg("--poll-window").arg(secs.to_string());
        }
        let numbers = [
            ("--default-timeout", self.opts.default_timeout),
            ("--ack-window", self.opts.ack_window),
            ("--ttl", self.opts.ttl),
            ("--lost-grace", self.opts.lost_grace),
            ("--output-cap-mb", self.opts.output_cap_mb),
            ("--cache-mb", self.opts.cache_mb),
            ("--retention", self.opts.retention),
            ("--compact-at-mb", self.opts.compact_at_mb),
        ];
        for (flag, value) in numbers {
            if let Some(value) = value {
                cmd.arg(flag).arg(value.to_string());
            }
        }
        cmd.arg("--enroll-key").arg(self.opts.enroll_key.as_deref().unwrap_or(BASE_SECRET));
        cmd.args(&self.opts.extra_args);
        clean_env(&mut cmd);
        cmd
    }

    /// Starts the same server (data directory and flags) on another port without waiting for
    /// it to listen, e.g. to kill it while it starts; the caller kills it. The current process,
    /// if any, must be stopped first.
    pub fn spawn_unwaited(&mut self) -> Child {
        assert!(self.child.is_none(), "stop the running server first");
        self.starts += 1;
        let cmd_line = show_command(&self.build_command("127.0.0.1:0"));
        let log =
            log_file(&self.stderr_path(), &format!("start #{} (not waited for): {cmd_line}", self.starts));
        let mut cmd = self.build_command("127.0.0.1:0");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log);
        cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {cmd_line}: {e}"))
    }

    fn spawn(&mut self, listen: &str) -> Result<(), String> {
        self.starts += 1;
        let mut cmd = self.build_command(listen);
        self.command = show_command(&cmd);
        let log = log_file(&self.stderr_path(), &format!("start #{}: {}", self.starts, self.command));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
        let mut child = cmd.spawn().map_err(|e| format!("cannot spawn {}: {e}", self.command))?;
        let rx = first_line(child.stdout.take().expect("piped stdout"));
        let line = match rx.recv_timeout(START_DEADLINE) {
            Ok(line) => line,
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => format!("no listening line within {START_DEADLINE:?}"),
                    mpsc::RecvTimeoutError::Disconnected => "stdout closed without a listening line".into(),
                };
                kill_child(&mut child);
                return Err(self.failure(&why, child.try_wait().ok().flatten()));
            }
        };
        let addr = line
            .strip_prefix("orange server listening on http://")
            .and_then(|a| a.trim().parse::<SocketAddr>().ok());
        let Some(addr) = addr else {
            kill_child(&mut child);
            return Err(self.failure(&format!("unexpected first stdout line {line:?}"), None));
        };
        self.token = match &self.opts.admin_token {
            Some(token) => token.clone(),
            None => match std::fs::read_to_string(self.data.path().join("admin.token")) {
                Ok(text) => text.trim().to_owned(),
                Err(e) => {
                    kill_child(&mut child);
                    return Err(self.failure(&format!("cannot read admin.token: {e}"), None));
                }
            },
        };
        self.addr = addr;
        self.url = format!("http://{addr}");
        self.child = Some(child);
        Ok(())
    }

    fn failure(&self, why: &str, status: Option<ExitStatus>) -> String {
        format!(
            "orange server failed to start: {why}\ncommand: {}\nstatus: {status:?}\nstderr:\n{}",
            self.command,
            self.stderr()
        )
    }

    /// True while the server process runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Asserts the process still runs and still answers the admin API.
    pub fn assert_alive(&mut self) {
        assert!(self.is_alive(), "the server process exited\nstderr:\n{}", self.stderr());
        self.agents();
    }

    /// SIGKILL: no graceful stop, no final sync.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }

    /// Sends SIGTERM and returns at once; [`Server::terminate`] then waits for the exit.
    pub fn sigterm(&mut self) {
        signal(self.child.as_mut().expect("server is running"), libc::SIGTERM);
    }

    /// SIGTERM, then waits up to `timeout` for the exit; returns its status (SIGKILL and panic
    /// if it does not stop).
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server is running");
        signal(&mut child, libc::SIGTERM);
        match wait_exit(&mut child, timeout) {
            Some(status) => status,
            None => {
                kill_child(&mut child);
                panic!("server did not stop within {timeout:?} of SIGTERM\nstderr:\n{}", self.stderr());
            }
        }
    }

    /// Stops the server if it runs (SIGKILL) and starts it again on the same data directory and
    /// the same port, so that agents configured with the old URL find it again.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        let mut last = String::new();
        // The port was ours a moment ago; retry briefly in case the kernel still holds it.
        for _ in 0..20 {
            match self.spawn(&listen) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("cannot restart the server on {listen}: {last}");
    }

    /// An admin API client with this server's token.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.url, &self.token, Duration::from_secs(60))
    }

    /// `POST /api/v1/tasks` for the given agents; panics unless 201.
    pub fn enqueue(&self, app_ids: &[&str], task_type: &str, payload: &str) -> Vec<TaskView> {
        let request = EnqueueRequest {
            app_ids: app_ids.iter().map(|s| s.to_string()).collect(),
            task_type: task_type.into(),
            payload: payload.into(),
            ..EnqueueRequest::default()
        };
        let reply: EnqueueReply =
            self.admin().post("/api/v1/tasks", &request).unwrap_or_else(|e| panic!("enqueue failed: {e}"));
        assert_eq!(reply.tasks.len(), app_ids.len(), "one task per agent");
        reply.tasks
    }

    /// `GET /api/v1/tasks/{id}`.
    pub fn task(&self, id: &str) -> TaskView {
        self.admin().get(&format!("/api/v1/tasks/{id}")).unwrap_or_else(|e| panic!("get task {id}: {e}"))
    }

    /// `GET /api/v1/tasks/{id}?wait=S`.
    pub fn wait_task(&self, id: &str, wait_secs: u64) -> TaskView {
        self.admin()
            .get(&format!("/api/v1/tasks/{id}?wait={wait_secs}"))
            .unwrap_or_else(|e| panic!("get task {id}: {e}"))
    }

    /// Every task (up to 1000), newest first.
    pub fn tasks(&self) -> Vec<TaskView> {
        let list: TaskList =
            self.admin().get("/api/v1/tasks?limit=1000").unwrap_or_else(|e| panic!("list tasks: {e}"));
        list.tasks
    }

    /// Every agent.
    pub fn agents(&self) -> Vec<AgentView> {
        let list: AgentList =
            self.admin().get("/api/v1/agents").unwrap_or_else(|e| panic!("list agents: {e}"));
        list.agents
    }

    /// One agent, `None` if the server does not know it.
    pub fn agent(&self, app_id: &str) -> Option<AgentView> {
        match self.admin().get(&format!("/api/v1/agents/{app_id}")) {
            Ok(view) => Some(view),
            Err(ClientError::Api { status: 404, .. }) => None,
            Err(e) => panic!("get agent {app_id}: {e}"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- orange server stderr ({}) -----\n{}", self.command, self.stderr());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Agent

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
    /// The URL the agent talks to instead of the server's own (e.g. a [`Proxy`] in front of it).
    pub server_url: Option<String>,
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

impl Agent {
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
        cmd.arg("agent")
            .arg("--server")
            .arg(&self.server_url)
            .arg("--appid")
            .arg(&self.app_id)
            .arg("--state")
            .arg(self.state.path());
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
        clean_env(&mut cmd);
        // Harness servers run with `--enroll-key orange-forge` unless told otherwise.
        cmd.env("ORANGE_ENROLL_KEY", BASE_SECRET);
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

    /// Process id of the running agent.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent is running").id()
    }

    /// SIGKILLs the agent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
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

// ---------------------------------------------------------------------------------------------
// CLI

/// The outcome of one CLI run: everything needed to explain a failure.
pub struct Run {
    /// The command line.
    pub command: String,
    /// Exit status; `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// The exit code (`None` if killed by a signal or the deadline).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panics with the whole run unless it exited 0.
    pub fn assert_success(&self) -> &Self {
        assert_eq!(self.code(), Some(0), "command failed\n{self}");
        self
    }

    /// Parses stdout as JSON, panicking with the whole run if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{self}"))
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.command)?;
        writeln!(f, "status: {:?} after {:?}", self.status, self.elapsed)?;
        writeln!(f, "stdout:\n{}", self.stdout)?;
        write!(f, "stderr:\n{}", self.stderr)
    }
}

/// Runs the CLI with `args` and a clean orange environment.
pub fn cli(args: &[&str]) -> Run {
    cli_with(args, &[], CLI_DEADLINE)
}

/// Runs the CLI with `args`, the extra environment `env`, killing it after `deadline`.
pub fn cli_with(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    clean_env(&mut cmd);
    for (name, value) in env {
        cmd.env(name, value);
    }
    let command = show_command(&cmd);
    let started = Instant::now();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_exit(&mut child, deadline);
    if status.is_none() {
        kill_child(&mut child);
    }
    Run {
        command,
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// HTTP status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked if it was chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): status {} body {:?}", self.status, self.text())
        })
    }
}

/// Writes `request` verbatim to `addr` and reads one response, with `timeout` for each read.
/// The request is written from another thread, so a server that answers before reading a
/// large body completely is still heard.
pub fn raw_exchange(addr: SocketAddr, request: Vec<u8>, timeout: Duration) -> std::io::Result<RawResponse> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut writer = stream.try_clone()?;
    let sender = std::thread::spawn(move || {
        // The server may close the connection after answering an oversized body; that is fine.
        let _ = writer.write_all(&request);
        let _ = writer.flush();
    });
    let response = read_response(&mut BufReader::new(stream));
    let _ = sender.join();
    response
}

fn bad_data(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

fn read_response(reader: &mut impl BufRead) -> std::io::Result<RawResponse> {
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad_data(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(bad_data("connection closed inside the headers".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad_data(format!("bad header {line:?}")))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut response = RawResponse { status, headers, body: Vec::new() };
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().map_err(|_| bad_data(format!("bad content-length {len:?}")))?;
        response.body.resize(len, 0);
        reader.read_exact(&mut response.body)?;
    } else if response.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        response.body = read_chunked(reader)?;
    } else {
        reader.read_to_end(&mut response.body)?;
    }
    Ok(response)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size_text = size_line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad_data(format!("bad chunk size {size_line:?}")))?;
        let mut chunk = vec![0; size + 2];
        reader.read_exact(&mut chunk)?;
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..size]);
    }
}

/// A plain HTTP/1.1 request (`Connection: close`) with the given extra headers.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawResponse {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    raw_exchange(addr, bytes, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path} on {addr} failed: {e}"))
}

// ---------------------------------------------------------------------------------------------
// The original protocol, as the Go client speaks it

/// The original's public base secret that `register` is signed with.
pub const BASE_SECRET: &str = "orange-forge";
/// Register route.
pub const REGISTER: &str = "/orange-forge/api/register";
/// Heartbeat route.
pub const PING: &str = "/orange-forge/api/ping";
/// Long-poll route.
pub const GET_TASK: &str = "/orange-forge/api/getTask";
/// Report route.
pub const REPORT_TASK: &str = "/orange-forge/api/reportTask";

/// `hex(HMAC-SHA256(secret, appid + body + time))`, written here independently of the crate.
pub fn go_sign(secret: &str, app_id: &str, body: &[u8], time: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(app_id.as_bytes());
    mac.update(body);
    mac.update(time.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The time header of the original client: local wall-clock time, Go layout `2006-01-02 15:04:05`.
pub fn go_time_now() -> String {
    go_time(chrono::Local::now())
}

/// A time in the original client's layout.
pub fn go_time(at: chrono::DateTime<chrono::Local>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The three signing headers as Go canonicalizes their names, in Go's (sorted) order.
pub fn go_signed_headers(app_id: &str, secret: &str, body: &[u8], time: &str) -> Vec<(String, String)> {
    vec![
        ("X-Forge-Appid".into(), app_id.into()),
        ("X-Forge-Sign".into(), go_sign(secret, app_id, body, time)),
        ("X-Forge-Time".into(), time.into()),
    ]
}

/// A POST exactly as Go's net/http writes it: Host, User-Agent, Content-Length, then the
/// request's headers sorted by name (Content-Type first, then `extra` in the order given), then
/// the transport's Accept-Encoding, then the body.
pub fn go_request(addr: SocketAddr, path: &str, extra: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Accept-Encoding: gzip\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An agent speaking the original protocol over raw sockets, as the Go client does.
#[derive(Debug, Clone)]
pub struct GoAgent {
    /// Server address.
    pub addr: SocketAddr,
    /// App id.
    pub app_id: String,
    /// The agent's own secret.
    pub secret: String,
}

impl GoAgent {
    /// An agent `app_id` with `secret`, talking to `server`.
    pub fn new(server: &Server, app_id: &str, secret: &str) -> Self {
        GoAgent { addr: server.addr, app_id: app_id.into(), secret: secret.into() }
    }

    /// Sends `body` to `path` signed with `key` now, and returns the raw response.
    pub fn send_signed(&self, path: &str, key: &str, body: &[u8]) -> RawResponse {
        let headers = go_signed_headers(&self.app_id, key, body, &go_time_now());
        self.send(path, &headers, body)
    }

    /// Sends `body` to `path` with exactly the given signing headers.
    pub fn send(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> RawResponse {
        let request = go_request(self.addr, path, headers, body);
        let response = raw_exchange(self.addr, request, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        // 200 always, but 503 (same envelope) when the server defers a request to be retried.
        assert!(matches!(response.status, 200 | 503), "agent endpoints answer 200 or 503: {response:?}");
        response
    }

    /// Registers with the base secret; returns the envelope.
    pub fn register(&self) -> serde_json::Value {
        let body = serde_json::json!({"app_id": self.app_id, "secret": self.secret}).to_string();
        self.send_signed(REGISTER, BASE_SECRET, body.as_bytes()).json()
    }

    /// Registers and asserts success.
    pub fn registered(self) -> Self {
        let envelope = self.register();
        assert_eq!(envelope["code"], 0, "register refused: {envelope}");
        self
    }

    /// A heartbeat; returns the envelope.
    pub fn ping(&self) -> serde_json::Value {
        self.send_signed(PING, &self.secret, b"ping").json()
    }

    /// A getTask long poll; returns the envelope.
    pub fn get_task(&self) -> serde_json::Value {
        self.send_signed(GET_TASK, &self.secret, b"").json()
    }

    /// A report with the given JSON body; returns the envelope.
    pub fn report(&self, report: &serde_json::Value) -> serde_json::Value {
        self.send_signed(REPORT_TASK, &self.secret, report.to_string().as_bytes()).json()
    }

    /// Takes the next task and asserts it is the one with id `task_id`; returns the task object.
    pub fn take(&self, task_id: &str) -> serde_json::Value {
        let envelope = self.get_task();
        assert_eq!(envelope["code"], 0, "getTask: {envelope}");
        assert_eq!(envelope["data"]["task_id"], task_id, "getTask: {envelope}");
        envelope["data"].clone()
    }
}

/// The report the Go client sends: the task object echoed with `do_status` and `result` set.
pub fn go_report(task: &serde_json::Value, do_status: &str, result: &str) -> serde_json::Value {
    serde_json::json!({
        "task_id": task["task_id"],
        "task_type": task["task_type"],
        "do_status": do_status,
        "create_at": task["create_at"],
        "payload": task["payload"],
        "result": result,
    })
}

// ---------------------------------------------------------------------------------------------
// Task lifecycle: simulated agents, cancel, output pages

/// Secret of the simulated agents that [`register_sim`] registers.
pub const SIM_SECRET: &str = "sim-secret";

/// Registers `app_id` with [`SIM_SECRET`] and returns its signed client: a simulated agent
/// whose every call the test makes itself.
pub fn register_sim(server: &Server, app_id: &str) -> orange::client::AgentClient {
    register_sim_at(&server.url, app_id)
}

/// [`register_sim`] against the server at `url`.
pub fn register_sim_at(url: &str, app_id: &str) -> orange::client::AgentClient {
    let client = orange::client::AgentClient::new(url, app_id, SIM_SECRET);
    let request = orange::protocol::RegisterRequest {
        app_id: app_id.into(),
        secret: SIM_SECRET.into(),
        ..Default::default()
    };
    client
        .register(&request, &orange::client::Enrollment::Key(BASE_SECRET.into()))
        .unwrap_or_else(|e| panic!("register {app_id}: {e}"));
    client
}

impl Server {
    /// `POST /api/v1/tasks/{id}/cancel`.
    pub fn cancel(&self, id: &str, force: bool) -> Result<TaskView, ClientError> {
        let request = orange::protocol::admin::CancelRequest { force };
        self.admin().post(&orange::protocol::admin::cancel_path(id), &request)
    }

    /// `GET /api/v1/tasks/{id}/output?after=A&wait=W`; panics on an error answer.
    pub fn output(&self, id: &str, after: u32, wait_secs: u64) -> orange::protocol::admin::OutputPage {
        let path = format!("{}?after={after}&wait={wait_secs}", orange::protocol::admin::output_path(id));
        self.admin().get(&path).unwrap_or_else(|e| panic!("get output of {id}: {e}"))
    }

    /// `POST /api/v1/tasks` with a whole request; panics unless 201.
    pub fn enqueue_request(&self, request: &EnqueueRequest) -> Vec<TaskView> {
        let reply: EnqueueReply =
            self.admin().post("/api/v1/tasks", request).unwrap_or_else(|e| panic!("enqueue failed: {e}"));
        reply.tasks
    }

    /// Resident set size of the server process, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

/// The statuses of a task's history, in order.
pub fn history(task: &TaskView) -> Vec<&'static str> {
    task.history.iter().map(|t| t.status.as_str()).collect()
}

/// The most tasks open at the same moment, from their histories: a task is open from its
/// first state to its final one; at equal times an end counts before a start, since a job
/// starts the next task in the same transaction (at the same millisecond) as one ends.
pub fn most_open_at_once(tasks: &[TaskView]) -> usize {
    let time = |at: &str| chrono::DateTime::parse_from_rfc3339(at).expect("rfc3339").timestamp_millis();
    let mut events: Vec<(i64, i32)> = Vec::new();
    for task in tasks {
        let first = task.history.first().expect("a history");
        let last = task.history.last().expect("a history");
        assert!(last.status.is_final(), "task {} is {}", task.task_id, last.status);
        events.push((time(&first.at), 1));
        events.push((time(&last.at), -1));
    }
    events.sort();
    let (mut open, mut most) = (0i32, 0i32);
    for (_, change) in events {
        open += change;
        most = most.max(open);
    }
    most as usize
}

/// Milliseconds between two RFC 3339 times of a task's history.
pub fn ms_between(from: &str, to: &str) -> i64 {
    let parse = |at: &str| {
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("bad time {at:?}: {e}"))
    };
    (parse(to) - parse(from)).num_milliseconds()
}

// ---------------------------------------------------------------------------------------------
// Processes seen through /proc

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// True while process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILLs process `pid` if it exists (cleanup of processes a killed agent left behind).
pub fn kill_pid(pid: u32) {
    if process_alive(pid) {
        // SAFETY: kill(2) on a pid read from a marker file written by a task of this test.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
}

// ---------------------------------------------------------------------------------------------
// A CLI whose stdout is read as it comes

/// A running CLI whose stdout lines are recorded with their arrival time.
pub struct LiveRun {
    child: Option<Child>,
    /// The command line.
    pub command: String,
    started: Instant,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Duration, String)>>>,
    stdout: Option<std::thread::JoinHandle<()>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// Starts the CLI with `args`; its stdout is read line by line as it arrives.
pub fn cli_live(args: &[&str]) -> LiveRun {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    clean_env(&mut cmd);
    let command = show_command(&cmd);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let pipe = child.stdout.take().expect("piped stdout");
    let sink = std::sync::Arc::clone(&lines);
    let stdout = std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => sink.lock().expect("lines lock").push((started.elapsed(), line)),
            }
        }
    });
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    LiveRun { child: Some(child), command, started, lines, stdout: Some(stdout), stderr: Some(stderr) }
}

impl LiveRun {
    /// The stdout lines so far, each with the time since the start at which it arrived.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().expect("lines lock").clone()
    }

    /// Time since the CLI started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits up to `deadline` for the exit (then kills it); returns the run and the timed lines.
    pub fn finish(mut self, deadline: Duration) -> (Run, Vec<(Duration, String)>) {
        let mut child = self.child.take().expect("running");
        let status = wait_exit(&mut child, deadline);
        if status.is_none() {
            kill_child(&mut child);
        }
        let elapsed = self.started.elapsed();
        if let Some(reader) = self.stdout.take() {
            reader.join().expect("stdout reader");
        }
        let stderr = self.stderr.take().map(|r| r.join().expect("stderr reader")).unwrap_or_default();
        let lines = self.lines();
        let stdout = lines.iter().map(|(_, l)| l.as_str()).collect();
        (Run { command: self.command.clone(), status, stdout, stderr, elapsed }, lines)
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that notes every HTTP request it forwards

/// One request the [`Proxy`] forwarded.
#[derive(Debug, Clone)]
pub struct ProxiedRequest {
    /// When its head had been read.
    pub at: Instant,
    /// Its `X-FORGE-APPID` header, if any.
    pub app_id: Option<String>,
    /// The request path.
    pub path: String,
}

/// A plain TCP proxy on 127.0.0.1 in front of a server: each client connection gets its own
/// upstream connection (none if the server is down: the client connection is closed at once, as
/// a refused connection would be), and the head of every request forwarded is noted. When the
/// upstream connection ends, the client connection is closed too.
pub struct Proxy {
    /// Its address.
    pub addr: SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// What a proxy connection thread shares with its [`Proxy`].
#[derive(Clone)]
struct ProxyShared {
    log: std::sync::Arc<std::sync::Mutex<Vec<ProxiedRequest>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    held: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    /// Starts a proxy forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = ProxyShared {
            log: std::sync::Arc::default(),
            stop: std::sync::Arc::default(),
            held: std::sync::Arc::default(),
        };
        let accept = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stop.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = accept.clone();
                std::thread::spawn(move || proxy_connection(client, upstream, &shared));
            }
        });
        let ProxyShared { log, stop, held } = shared;
        Proxy { addr, url: format!("http://{addr}"), log, stop, held }
    }

    /// From now on, requests to `path` are read and noted but never forwarded nor answered:
    /// the client waits until its own timeout (or until it is killed).
    pub fn hold(&self, path: &str) {
        self.held.lock().expect("held paths").push(path.to_owned());
    }

    /// Forwards requests to every path again (requests already held stay held).
    pub fn release_all(&self) {
        self.held.lock().expect("held paths").clear();
    }

    /// Every request forwarded so far, in order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.log.lock().expect("proxy log").clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn proxy_connection(client: TcpStream, upstream: SocketAddr, shared: &ProxyShared) {
    let Ok(mut up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        let _ = client.shutdown(std::net::Shutdown::Both);
        return;
    };
    let (Ok(mut up_reader), Ok(mut client_writer)) = (up.try_clone(), client.try_clone()) else { return };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_reader, &mut client_writer);
        let _ = client_writer.shutdown(std::net::Shutdown::Both);
    });
    let mut reader = BufReader::new(client);
    while let Some((head, request)) = read_request_head(&mut reader) {
        let length = request_content_length(&head);
        let held = shared.held.lock().expect("held paths").contains(&request.path);
        shared.log.lock().expect("proxy log").push(request);
        if held {
            // Keep both connections open, answering nothing, until the proxy is dropped.
            while !shared.stop.load(std::sync::atomic::Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        if up.write_all(head.as_bytes()).is_err() {
            break;
        }
        let copied = std::io::copy(&mut (&mut reader).take(length), &mut up);
        if copied.ok() != Some(length) {
            break;
        }
    }
    let _ = up.shutdown(std::net::Shutdown::Both);
}

/// Reads one request head (through the blank line); `None` at the end of the connection.
fn read_request_head(reader: &mut impl BufRead) -> Option<(String, ProxiedRequest)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let path = head.split_whitespace().nth(1).unwrap_or_default().to_owned();
    let app_id = header_value(&head, "x-forge-appid");
    Some((head, ProxiedRequest { at: Instant::now(), app_id, path }))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

fn request_content_length(head: &str) -> u64 {
    header_value(head, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Version-2 signatures, written here independently of the crate

/// Value of `X-ORANGE-SIGN-VERSION` for the canonical scheme.
pub const SIGN_VERSION_2: &str = "2";
/// Route on which orange agents stream output.
pub const OUTPUT: &str = "/orange-forge/api/output";

/// The text a version-2 signature covers: `orange-v2`, method, path, app id, time, nonce and the
/// body's SHA-256 in hex, one per line.
pub fn v2_canonical(path: &str, app_id: &str, time: &str, nonce: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let body_hash = hex::encode(Sha256::digest(body));
    format!("orange-v2\nPOST\n{path}\n{app_id}\n{time}\n{nonce}\n{body_hash}")
}

/// `hex(HMAC-SHA256(key, canonical text))`.
pub fn v2_sign(key: &str, path: &str, app_id: &str, time: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(v2_canonical(path, app_id, time, nonce, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The time header of orange agents: Unix seconds now.
pub fn unix_time_now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// A fresh random nonce: 32 hex digits.
pub fn fresh_nonce() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("random bytes");
    hex::encode(raw)
}

/// The headers of a version-2 request to `path` signed with `key` at `time` with `nonce`.
pub fn v2_headers(
    path: &str,
    app_id: &str,
    key: &str,
    body: &[u8],
    time: &str,
    nonce: &str,
) -> Vec<(String, String)> {
    vec![
        ("X-Forge-Appid".into(), app_id.into()),
        ("X-Forge-Sign".into(), v2_sign(key, path, app_id, time, nonce, body)),
        ("X-Forge-Time".into(), time.into()),
        ("X-Orange-Nonce".into(), nonce.into()),
        ("X-Orange-Sign-Version".into(), SIGN_VERSION_2.into()),
    ]
}

/// Sends the bytes of a captured request again and returns the answer (agent endpoints answer
/// 200, or 503 with the same envelope when the server defers a request).
pub fn replay(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let response = raw_exchange(addr, request.to_vec(), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("replay to {addr} failed: {e}"));
    assert!(matches!(response.status, 200 | 503), "agent endpoints answer 200 or 503: {response:?}");
    response
}

impl GoAgent {
    /// The bytes of a version-2 request to `path` signed with `key` now, with a fresh nonce.
    pub fn v2_request(&self, path: &str, key: &str, body: &[u8]) -> Vec<u8> {
        let headers = v2_headers(path, &self.app_id, key, body, &unix_time_now(), &fresh_nonce());
        go_request(self.addr, path, &headers, body)
    }

    /// The bytes of a legacy request to `path` signed with `key` now.
    pub fn legacy_request(&self, path: &str, key: &str, body: &[u8]) -> Vec<u8> {
        go_request(self.addr, path, &go_signed_headers(&self.app_id, key, body, &go_time_now()), body)
    }

    /// Sends `body` to `path` with a version-2 signature by `key`; returns the envelope.
    pub fn send_v2(&self, path: &str, key: &str, body: &[u8]) -> serde_json::Value {
        replay(self.addr, &self.v2_request(path, key, body)).json()
    }
}

// ---------------------------------------------------------------------------------------------
// Operator records

impl Server {
    /// `GET /api/v1/audit?limit=1000`: the audit record, newest first.
    pub fn audit(&self) -> Vec<orange::protocol::admin::AuditEntry> {
        let list: orange::protocol::admin::AuditList =
            self.admin().get("/api/v1/audit?limit=1000").unwrap_or_else(|e| panic!("audit: {e}"));
        list.entries
    }

    /// `GET /api/v1/tokens`.
    pub fn tokens(&self) -> Vec<orange::protocol::admin::TokenView> {
        let list: orange::protocol::admin::TokenList =
            self.admin().get("/api/v1/tokens").unwrap_or_else(|e| panic!("list tokens: {e}"));
        list.tokens
    }

    /// `POST /api/v1/tokens`; panics unless created. The answer carries `<id>.<secret>`.
    pub fn create_token(&self, ttl_secs: u64, uses: u32) -> orange::protocol::admin::TokenView {
        let request = orange::protocol::admin::TokenRequest { ttl_secs, uses };
        self.admin().post("/api/v1/tokens", &request).unwrap_or_else(|e| panic!("create token: {e}"))
    }

    /// `POST /api/v1/agents/{id}/{action}` (`accept` or `forget`); panics unless it succeeds.
    pub fn agent_action(&self, app_id: &str, action: &str) -> AgentView {
        self.admin()
            .post(&format!("/api/v1/agents/{app_id}/{action}"), &serde_json::json!({}))
            .unwrap_or_else(|e| panic!("{action} {app_id}: {e}"))
    }

    /// An operator API request with the given bearer token (none: no Authorization header).
    pub fn admin_raw(&self, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> RawResponse {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth.as_str()));
        }
        http(self.addr, method, path, &headers, body)
    }
}

// ---------------------------------------------------------------------------------------------
// A server started with arbitrary flags

/// An `orange server` started with the caller's own flags (TLS, no enrollment key, ...), killed
/// on drop; its stderr is printed when a test fails.
pub struct ServerProcess {
    child: Option<Child>,
    /// The listening line's URL, e.g. `https://127.0.0.1:PORT`.
    pub url: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// The command line.
    pub command: String,
    logs: TempDir,
}

impl ServerProcess {
    /// Starts `orange server ARGS --listen 127.0.0.1:0` and waits for its listening line.
    pub fn start<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> ServerProcess {
        let logs = TempDir::with_prefix("orange-logs-").expect("create log dir");
        let mut cmd = Command::new(BIN);
        cmd.arg("server").args(args).arg("--listen").arg("127.0.0.1:0");
        clean_env(&mut cmd);
        let command = show_command(&cmd);
        let stderr_path = logs.path().join("server.stderr");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file(&stderr_path, &command));
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
        let rx = first_line(child.stdout.take().expect("piped stdout"));
        let line = rx.recv_timeout(START_DEADLINE).unwrap_or_else(|e| {
            kill_child(&mut child);
            panic!("{command}: no listening line ({e})\nstderr:\n{}", read_log(&stderr_path))
        });
        let url = line.strip_prefix("orange server listening on ").unwrap_or("").trim().to_owned();
        let addr = url.rsplit("://").next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
            kill_child(&mut child);
            panic!("{command}: unexpected first stdout line {line:?}")
        });
        ServerProcess { child: Some(child), url, addr, command, logs }
    }

    /// Everything the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        read_log(&self.logs.path().join("server.stderr"))
    }

    /// True while the process runs.
    pub fn is_alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
        if std::thread::panicking() {
            eprintln!("----- orange server stderr ({}) -----\n{}", self.command, self.stderr());
        }
    }
}
