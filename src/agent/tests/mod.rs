//! Tests of the whole agent (`agent::run`) against the fake server over real sockets, each
//! with its own state directory: `basics` (delivery, reports, registration, retries, stop,
//! concurrency, latency), `lifecycle` (journal, acks, duplicates, restarts, cancels, capacity)
//! and `streaming` (live output: order, retries, UTF-8, memory bound).

mod basics;
mod lifecycle;
mod streaming;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Result;
use tempfile::TempDir;

use super::fake_server::FakeServer;
use super::journal::Journal;
use super::{AgentConfig, BuiltinExecutor, Secret, TaskHandler, run};
use crate::protocol::WireTask;
use crate::protocol::wire::LEGACY_BASE_SECRET;

const SECRET: &str = "test-agent-secret";
/// Held by the tests that measure time or memory, so they do not run at the same time (the
/// 100 MiB streaming test keeps the CPUs busy for seconds).
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`MEASURING`] (also after a measuring test failed while holding it).
fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
const WAIT: Duration = Duration::from_secs(5);

/// A fake server and a state directory that outlives any one agent started on it.
struct Fixture {
    server: FakeServer,
    state: TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { server: FakeServer::start(SECRET), state: tempfile::tempdir().expect("state dir") }
    }

    fn config(&self, max_tasks: usize) -> AgentConfig {
        config(&self.server.url(), max_tasks, self.state.path())
    }

    /// Starts an agent with the built-in executors (shell allowed).
    fn start(&self, max_tasks: usize) -> RunningAgent {
        RunningAgent::start(self.config(max_tasks))
    }

    fn journal(&self) -> Journal {
        Journal::open(self.state.path()).expect("open journal")
    }
}

/// A config for an agent `w1` against the fake server at `server`, with its state in `state`.
pub(crate) fn config(server: &str, max_tasks: usize, state: &Path) -> AgentConfig {
    AgentConfig {
        server: server.to_owned(),
        app_id: "w1".into(),
        secret: Secret::new(SECRET),
        enrollment: crate::client::Enrollment::Key(LEGACY_BASE_SECRET.into()),
        tls: crate::client::TlsSettings::default(),
        proxy: None,
        state_dir: state.to_owned(),
        allow_shell: true,
        handlers_dir: None,
        allowed_users: Vec::new(),
        allowed_handlers: Vec::new(),
        write_roots: Vec::new(),
        read_roots: Vec::new(),
        labels: BTreeMap::from([("env".to_owned(), "test".to_owned())]),
        max_tasks,
        hostname: "h1".into(),
        heartbeat: Duration::from_secs(30),
        cancel_grace: Duration::from_millis(500),
        stop_grace: Duration::from_millis(500),
    }
}

fn shell(id: &str, script: &str) -> WireTask {
    WireTask {
        task_id: id.into(),
        task_type: "shell".into(),
        do_status: String::new(),
        create_at: "2026-11-26T06:40:41Z".into(),
        payload: script.into(),
        result: String::new(),
        timeout_secs: Some(10),
        env: Default::default(),
        cwd: None,
        user: None,
        stdin: Vec::new(),
        attempt: None,
        more: Vec::new(),
    }
}

/// An agent running on a thread; stopped when dropped so a failed test leaves no loop behind.
struct RunningAgent {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl RunningAgent {
    fn start(config: AgentConfig) -> Self {
        let handler: Arc<dyn TaskHandler> = Arc::new(BuiltinExecutor::new(&config));
        RunningAgent::with_handler(config, handler)
    }

    fn with_handler(config: AgentConfig, handler: Arc<dyn TaskHandler>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || run(config, handler, flag));
        RunningAgent { stop, handle: Some(handle) }
    }

    /// Stops the agent and returns how long `run` took to return.
    fn stop(mut self, within: Duration) -> Duration {
        let started = Instant::now();
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("stopped once");
        while !handle.is_finished() {
            assert!(started.elapsed() < within, "agent did not stop within {within:?}");
            thread::sleep(Duration::from_millis(10));
        }
        handle.join().expect("run does not panic").expect("run returns Ok");
        started.elapsed()
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Waits until `path` exists, or panics after [`WAIT`].
fn wait_for_file(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        thread::sleep(Duration::from_millis(10));
    }
}

/// Lines in `path` (0 if it does not exist): how often a task with a side effect ran.
fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|text| text.lines().count()).unwrap_or(0)
}
