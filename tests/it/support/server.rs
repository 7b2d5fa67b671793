//! The one server launcher: `orange server` on an ephemeral port of 127.0.0.1, with its own data
//! directory (or one the test chose), the flags a test asks for in [`ServerOpts`], and secrets
//! given as the environment or files, never on argv. Killed on drop; its stderr is printed when
//! a test fails.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use orange::client::{AdminClient, ClientError};
use orange::protocol::admin::{AgentList, AgentView, EnqueueReply, EnqueueRequest, TaskList, TaskView};
use tempfile::TempDir;

use super::process::{clean_env, kill_child, log_file, read_log, show_command, signal, wait_exit};
use super::{BASE_SECRET, BIN, RawResponse, http, listening_line, rss_kib, stdout_lines, write_secret};

/// The enrollment key a server is started with.
#[derive(Debug, Clone, Default)]
pub enum EnrollKey {
    /// `--enroll-key orange-forge`, the original's public key [`BASE_SECRET`], so that original
    /// clients and simulated agents enroll as they do against the original server.
    #[default]
    Public,
    /// A private key, given in a file named by `--enroll-key-file`.
    Private(String),
    /// No flag: the server generates DIR/enroll.key.
    Generated,
}

/// Flags of `orange server` a test may set; the rest is chosen by the harness.
#[derive(Debug, Clone, Default)]
pub struct ServerOpts {
    /// The admin token, given as `ORANGE_ADMIN_TOKEN`; without it the server generates
    /// DIR/admin.token, which the harness reads.
    pub admin_token: Option<String>,
    /// The enrollment key.
    pub enroll_key: EnrollKey,
    /// The data directory; without it a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    /// `--tls-cert` and `--tls-key`: the server speaks HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
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
    /// Further flags, passed as given (e.g. `--max-inflight 1`).
    pub extra_args: Vec<String>,
    /// `--config FILE` instead of `--data` and `--listen`, which the file then gives (the data
    /// directory set here too, for the harness to find the admin token in); the other options
    /// still add their flags.
    pub config: Option<PathBuf>,
    /// Environment variables set for it (e.g. `RUST_LOG`), after the harness cleared orange's.
    pub env: Vec<(String, String)>,
    /// A listening socket the test holds, handed to every start as systemd's socket activation
    /// does (descriptor 3, `LISTEN_FDS=1`, `LISTEN_PID` the server's pid); `--listen` is then
    /// not given.
    pub listen_socket: Option<Arc<TcpListener>>,
}

impl ServerOpts {
    /// Options with the given poll window.
    pub fn poll_window(secs: u64) -> Self {
        ServerOpts { poll_window: Some(secs), ..ServerOpts::default() }
    }
}

/// A running `orange server` on 127.0.0.1.
pub struct Server {
    child: Option<Child>,
    /// Bound address.
    pub addr: SocketAddr,
    /// The listening line's URL: `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    /// The admin bearer token.
    pub token: String,
    /// The last command line used to start it.
    pub command: String,
    data_dir: PathBuf,
    /// Holds the temporary data directory, if the harness made it.
    _data: Option<TempDir>,
    /// Logs and secret files.
    logs: TempDir,
    opts: ServerOpts,
    starts: u32,
    /// The lines of stdout after the listening line, of the last start.
    stdout: Option<std::sync::Mutex<mpsc::Receiver<String>>>,
}

/// `orange server --data DIR` started as systemd starts a socket-activated service: `socket`
/// as descriptor 3, and `LISTEN_PID` set to the server's own pid by a shell that then `exec`s
/// it (the pid is not known before the fork).
fn socket_activated(socket: &TcpListener, data_dir: &Path) -> Command {
    let fd = socket.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg("LISTEN_PID=$$ exec \"$0\" \"$@\"").arg(BIN).arg("server").arg("--data").arg(data_dir);
    cmd.env("LISTEN_FDS", "1");
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if fd == 3 {
                // dup2 onto itself keeps close-on-exec set: clear it.
                if libc::fcntl(3, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

impl Server {
    /// Starts a server on an ephemeral port; panics (showing its stderr) if it does not print
    /// its listening line in time.
    pub fn start(opts: ServerOpts) -> Server {
        let (data_dir, data) = match &opts.data_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = TempDir::with_prefix("orange-data-").expect("create data dir");
                (temp.path().to_owned(), Some(temp))
            }
        };
        let mut server = Server {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            url: String::new(),
            token: String::new(),
            command: String::new(),
            data_dir,
            _data: data,
            logs: TempDir::with_prefix("orange-logs-").expect("create log dir"),
            opts,
            starts: 0,
            stdout: None,
        };
        if let Err(e) = server.spawn("127.0.0.1:0") {
            panic!("{e}");
        }
        server
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
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
        let mut cmd = match &self.opts.listen_socket {
            None => {
                let mut cmd = Command::new(BIN);
                cmd.arg("server");
                match &self.opts.config {
                    Some(file) => cmd.arg("--config").arg(file),
                    None => cmd.arg("--data").arg(&self.data_dir).arg("--listen").arg(listen),
                };
                cmd
            }
            Some(socket) => socket_activated(socket, &self.data_dir),
        };
        clean_env(&mut cmd);
        if let Some(token) = &self.opts.admin_token {
            cmd.env("ORANGE_ADMIN_TOKEN", token);
        }
        match &self.opts.enroll_key {
            EnrollKey::Public => {
                cmd.arg("--enroll-key").arg(BASE_SECRET);
            }
            EnrollKey::Private(key) => {
                cmd.arg("--enroll-key-file").arg(write_secret(self.logs.path(), "enroll.key", key));
            }
            EnrollKey::Generated => {}
        }
        if let Some((cert, key)) = &self.opts.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let numbers = [
            ("--poll-window", self.opts.poll_window),
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
        cmd.args(&self.opts.extra_args);
        cmd.envs(self.opts.env.iter().map(|(name, value)| (name, value)));
        cmd
    }

    /// Starts the same server (data directory and flags) on another port without waiting for
    /// it to listen, e.g. to kill it while it starts; the caller kills it. The current process,
    /// if any, must be stopped first.
    pub fn spawn_unwaited(&mut self) -> Child {
        assert!(self.child.is_none(), "stop the running server first");
        self.starts += 1;
        let mut cmd = self.build_command("127.0.0.1:0");
        let cmd_line = show_command(&cmd);
        let log =
            log_file(&self.stderr_path(), &format!("start #{} (not waited for): {cmd_line}", self.starts));
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
        match self.listening(&mut child) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(why) => {
                kill_child(&mut child);
                Err(self.failure(&why, child.try_wait().ok().flatten()))
            }
        }
    }

    /// Reads the listening line of `child` and the admin token; says why not if it cannot.
    fn listening(&mut self, child: &mut Child) -> Result<(), String> {
        let rx = stdout_lines(child.stdout.take().expect("piped stdout"));
        let (url, addr) = listening_line(&rx)?;
        self.token = match &self.opts.admin_token {
            Some(token) => token.clone(),
            None => std::fs::read_to_string(self.data_dir.join("admin.token"))
                .map_err(|e| format!("cannot read admin.token: {e}"))?
                .trim()
                .to_owned(),
        };
        self.url = url;
        self.addr = addr;
        self.stdout = Some(std::sync::Mutex::new(rx));
        Ok(())
    }

    /// The next line the server printed on stdout after its listening line, waiting up to
    /// `timeout`; `None` if none came.
    pub fn stdout_line(&self, timeout: Duration) -> Option<String> {
        let lines = self.stdout.as_ref()?.lock().unwrap_or_else(|p| p.into_inner());
        lines.recv_timeout(timeout).ok()
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

    /// Sends SIGUSR1 (compact the database now) and returns at once.
    pub fn sigusr1(&mut self) {
        signal(self.child.as_mut().expect("server is running"), libc::SIGUSR1);
    }

    /// Sends SIGHUP (reload the TLS certificate) and returns at once.
    pub fn sighup(&mut self) {
        signal(self.child.as_mut().expect("server is running"), libc::SIGHUP);
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

    /// Starts the server again after it stopped (same data directory, flags and port, or the
    /// same passed socket).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server still runs");
        let listen = self.addr.to_string();
        if let Err(e) = self.spawn(&listen) {
            panic!("{e}");
        }
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

impl Server {
    /// `GET /api/v1/audit?kind=all&limit=1000`: the audit record (operator actions and what
    /// agents did), newest first.
    pub fn audit(&self) -> Vec<orange::protocol::admin::AuditEntry> {
        let list: orange::protocol::admin::AuditList =
            self.admin().get("/api/v1/audit?kind=all&limit=1000").unwrap_or_else(|e| panic!("audit: {e}"));
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
