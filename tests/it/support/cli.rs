//! The one CLI runner: [`Cli`] runs `orange ARGS` with a clean orange environment plus what the
//! test gives it, to completion ([`Run`]) or live, its stdout read line by line as it comes
//! ([`LiveRun`]). [`Server::operator`] makes one that talks to a server with its admin token
//! in `ORANGE_TOKEN`, as operators are told to give it.

use std::ffi::OsString;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::process::{clean_env, kill_child, show_command, wait_exit};
use super::{BIN, CLI_DEADLINE, Server};

/// A CLI invocation to run: arguments, extra environment, deadline.
#[derive(Debug, Clone)]
pub struct Cli {
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    deadline: Duration,
    stdin: Option<Vec<u8>>,
}

impl Cli {
    /// `orange ARGS` with a clean orange environment and the default deadline.
    pub fn new<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Cli {
        let args = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        Cli { args, env: Vec::new(), deadline: CLI_DEADLINE, stdin: None }
    }

    /// Sets the environment variable `name` for the child.
    pub fn env(mut self, name: &str, value: &str) -> Cli {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Gives the child `bytes` on a pipe as its stdin (by default its stdin is /dev/null).
    pub fn stdin(mut self, bytes: Vec<u8>) -> Cli {
        self.stdin = Some(bytes);
        self
    }

    /// Kills the child if it has not exited after `deadline`.
    pub fn deadline(mut self, deadline: Duration) -> Cli {
        self.deadline = deadline;
        self
    }

    /// The command, not started: stdin null (or piped, with [`Cli::stdin`]), stdout and stderr piped (a test that spawns it
    /// itself kills it).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args);
        clean_env(&mut cmd);
        for (name, value) in &self.env {
            cmd.env(name, value);
        }
        let stdin = if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() };
        cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd
    }

    /// Runs to the exit (or the deadline, then kills it).
    pub fn run(&self) -> Run {
        let mut cmd = self.command();
        let command = show_command(&cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
        if let (Some(mut pipe), Some(bytes)) = (child.stdin.take(), self.stdin.clone()) {
            // A child that exits without reading it all closes the pipe: not the test's concern.
            std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &bytes));
        }
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        let status = wait_exit(&mut child, self.deadline);
        if status.is_none() {
            kill_child(&mut child);
        }
        let raw_stdout = stdout.join().expect("stdout reader");
        let raw_stderr = stderr.join().expect("stderr reader");
        Run {
            command,
            status,
            stdout: String::from_utf8_lossy(&raw_stdout).into_owned(),
            stderr: String::from_utf8_lossy(&raw_stderr).into_owned(),
            raw_stdout,
            raw_stderr,
            elapsed: started.elapsed(),
        }
    }

    /// Starts it; its stdout is read line by line as it arrives. The deadline is the caller's,
    /// given to [`LiveRun::finish`].
    pub fn live(&self) -> LiveRun {
        let mut cmd = self.command();
        let command = show_command(&cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot spawn {command}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = timed_lines(child.stdout.take().expect("piped stdout"), started, Arc::clone(&lines));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        LiveRun { child: Some(child), command, started, lines, stdout: Some(stdout), stderr: Some(stderr) }
    }
}

/// Runs the CLI with `args` and a clean orange environment.
pub fn cli(args: &[&str]) -> Run {
    Cli::new(args).run()
}

/// Runs the CLI with `args`, the extra environment `env`, killing it after `deadline`.
pub fn cli_with(args: &[&str], env: &[(&str, &str)], deadline: Duration) -> Run {
    env.iter().fold(Cli::new(args), |cli, (name, value)| cli.env(name, value)).deadline(deadline).run()
}

impl Server {
    /// The CLI talking to this server: `--server URL` added before `--` (after which every word
    /// is the command) and the admin token in `ORANGE_TOKEN`.
    pub fn operator(&self, args: &[&str]) -> Cli {
        let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
        let mut all = args[..at].to_vec();
        all.extend(["--server", self.url.as_str()]);
        all.extend_from_slice(&args[at..]);
        Cli::new(all).env("ORANGE_TOKEN", &self.token)
    }

    /// `orange task send --appid APP_ID --type TASK_TYPE FLAGS --payload PAYLOAD` to this server;
    /// asserts it succeeds and printed one task id, and returns that id.
    pub fn send_task(&self, app_id: &str, task_type: &str, flags: &[&str], payload: &str) -> String {
        let mut args = vec!["task", "send", "--appid", app_id, "--type", task_type];
        args.extend_from_slice(flags);
        args.extend(["--payload", payload]);
        let run = self.operator(&args).run();
        run.assert_success();
        let ids: Vec<&str> = run.stdout.split_whitespace().collect();
        assert_eq!(ids.len(), 1, "one task id expected\n{run}");
        uuid::Uuid::parse_str(ids[0]).unwrap_or_else(|e| panic!("{:?} is not a task id: {e}\n{run}", ids[0]));
        ids[0].to_owned()
    }
}

/// Reads `pipe` to its end on another thread, so the child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Reads `pipe` line by line into `sink`, each line with the time since `started` it arrived.
fn timed_lines(
    pipe: impl Read + Send + 'static,
    started: Instant,
    sink: Arc<Mutex<Vec<(Duration, String)>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => sink.lock().expect("lines lock").push((started.elapsed(), line)),
            }
        }
    })
}

/// The outcome of one CLI run: everything needed to explain a failure.
pub struct Run {
    /// The command line.
    pub command: String,
    /// Exit status; `None` if it was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Standard output (lossy text).
    pub stdout: String,
    /// Standard error (lossy text).
    pub stderr: String,
    /// Standard output, the bytes themselves.
    pub raw_stdout: Vec<u8>,
    /// Standard error, the bytes themselves.
    pub raw_stderr: Vec<u8>,
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

/// A running CLI whose stdout lines are recorded with their arrival time.
pub struct LiveRun {
    child: Option<Child>,
    /// The command line.
    pub command: String,
    started: Instant,
    lines: Arc<Mutex<Vec<(Duration, String)>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl LiveRun {
    /// The stdout lines so far, each with the time since the start at which it arrived.
    pub fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().expect("lines lock").clone()
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
        let raw_stderr = self.stderr.take().map(|r| r.join().expect("stderr reader")).unwrap_or_default();
        let stderr = String::from_utf8_lossy(&raw_stderr).into_owned();
        let lines = self.lines();
        let stdout: String = lines.iter().map(|(_, l)| l.as_str()).collect();
        let raw_stdout = stdout.as_bytes().to_vec();
        (
            Run { command: self.command.clone(), status, stdout, stderr, raw_stdout, raw_stderr, elapsed },
            lines,
        )
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
    }
}
