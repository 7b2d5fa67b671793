//! Tests of the whole agent loop (`agent::run`) against the fake server over real sockets:
//! delivery and reports, re-registration, retries while the server is down, a stop that waits
//! for running tasks, dropped refusals, the concurrency cap and round-trip latency.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::fake_server::FakeServer;
use super::{AgentConfig, BuiltinExecutor, Secret, TaskHandler, TaskOutcome, run};
use crate::protocol::WireTask;
use crate::protocol::wire::LEGACY_BASE_SECRET;

const SECRET: &str = "test-agent-secret";
const WAIT: Duration = Duration::from_secs(5);

fn config(server: &str, max_tasks: usize) -> AgentConfig {
    AgentConfig {
        server: server.to_owned(),
        app_id: "w1".into(),
        secret: Secret::new(SECRET),
        enroll_key: Secret::new(LEGACY_BASE_SECRET),
        state_dir: PathBuf::from("/nonexistent"),
        allow_shell: true,
        handlers_dir: None,
        labels: BTreeMap::from([("env".to_owned(), "test".to_owned())]),
        max_tasks,
        hostname: "h1".into(),
        heartbeat: Duration::from_secs(30),
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

#[test]
fn registers_runs_tasks_and_reports_them() {
    let server = FakeServer::start(SECRET);
    let agent = RunningAgent::start(config(&server.url(), 4));
    server.state.push_task(shell("t1", "echo hi; echo e >&2"));
    server.state.push_task(WireTask { task_type: "ping".into(), ..shell("t2", "") });
    server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    agent.stop(Duration::from_secs(1));
    let state = server.state.lock();
    let registration = &state.registrations[0];
    assert_eq!((registration.app_id.as_str(), registration.secret.as_str()), ("w1", SECRET));
    assert_eq!(registration.labels, BTreeMap::from([("env".to_owned(), "test".to_owned())]));
    assert_eq!(registration.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(registration.hostname.as_deref(), Some("h1"));
    let report = |id: &str| state.reports.iter().map(|(_, r)| r).find(|r| r.task_id == id).expect("reported");
    let t1 = report("t1");
    assert_eq!((t1.do_status.as_str(), t1.exit_code), ("success", Some(0)));
    assert_eq!((t1.stdout.as_deref(), t1.stderr.as_deref()), (Some("hi\n"), Some("e\n")));
    assert_eq!(
        (t1.result.as_str(), t1.payload.as_str()),
        ("", ""),
        "stdout is the result; nothing is sent twice"
    );
    assert_eq!((t1.task_type.as_str(), t1.create_at.as_str()), ("shell", "2026-11-26T06:40:41Z"));
    assert!(t1.duration_ms.is_some());
    assert_eq!(report("t2").stdout, Some(format!("orange {} on h1", env!("CARGO_PKG_VERSION"))));
    assert_eq!((state.registrations.len(), state.bad_signatures), (1, 0));
}

#[test]
fn registers_again_when_the_server_forgets_the_agent() {
    let server = FakeServer::start(SECRET);
    let _agent = RunningAgent::start(config(&server.url(), 1));
    server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    server.state.update(|s| s.forget_agent = true);
    // The "unknown app id" answer proves the server is up, so the agent registers at once.
    server
        .state
        .wait_until(Duration::from_millis(500), "second registration", |s| s.registrations.len() == 2);
    server.state.push_task(shell("t1", "true"));
    server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
}

#[test]
fn a_refused_registration_is_retried() {
    let server = FakeServer::start(SECRET);
    server.state.update(|s| s.refuse_register = true);
    let _agent = RunningAgent::start(config(&server.url(), 1));
    server.state.wait_until(WAIT, "two refused registrations", |s| s.register_calls >= 2);
    assert!(server.state.lock().registrations.is_empty());
    server.state.update(|s| s.refuse_register = false);
    server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    server.state.push_task(shell("t1", "true"));
    server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
}

#[test]
fn keeps_retrying_until_the_server_comes_up() -> Result<()> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let _agent = RunningAgent::start(config(&format!("http://{addr}"), 1));
    thread::sleep(Duration::from_millis(1200));
    let server = FakeServer::start_on(addr, SECRET);
    server.state.push_task(shell("t1", "echo up"));
    server
        .state
        .wait_until(Duration::from_secs(10), "report after the server came up", |s| s.reports.len() == 1);
    assert_eq!(server.state.lock().reports[0].1.stdout.as_deref(), Some("up\n"));
    Ok(())
}

#[test]
fn stop_waits_for_running_tasks_and_their_reports() -> Result<()> {
    let server = FakeServer::start(SECRET);
    let agent = RunningAgent::start(config(&server.url(), 2));
    let tmp = tempfile::tempdir()?;
    let started = tmp.path().join("started");
    server.state.push_task(shell("slow", &format!("touch {}; sleep 1; echo done", started.display())));
    let deadline = Instant::now() + WAIT;
    while !started.exists() {
        assert!(Instant::now() < deadline, "the task never started");
        thread::sleep(Duration::from_millis(10));
    }
    let took = agent.stop(Duration::from_secs(3));
    assert!(took >= Duration::from_millis(700), "stopped after {took:?}, before the task ended");
    let state = server.state.lock();
    assert_eq!(state.reports.len(), 1, "the report was sent before run returned");
    assert_eq!(state.reports[0].1.stdout.as_deref(), Some("done\n"));
    Ok(())
}

#[test]
fn a_refused_report_is_dropped_and_polling_goes_on() {
    let server = FakeServer::start(SECRET);
    let _agent = RunningAgent::start(config(&server.url(), 1));
    server.state.update(|s| s.refuse_reports = true);
    server.state.push_task(shell("t1", "true"));
    server.state.wait_until(WAIT, "report call", |s| s.report_calls == 1);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(server.state.lock().report_calls, 1, "a refused report was retried");
    server.state.update(|s| s.refuse_reports = false);
    server.state.push_task(shell("t2", "true"));
    server.state.wait_until(WAIT, "second report", |s| s.reports.len() == 1);
    assert_eq!(server.state.lock().report_calls, 2);
}

#[test]
fn max_tasks_caps_how_many_run_at_once() {
    let server = FakeServer::start(SECRET);
    let _agent = RunningAgent::start(config(&server.url(), 1));
    server.state.push_task(shell("a", "sleep 0.3"));
    server.state.push_task(shell("b", "sleep 0.3"));
    server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    let state = server.state.lock();
    assert!(state.delivered[1].0 >= state.reports[0].0, "b was fetched while a still ran");
}

#[test]
fn a_panicking_handler_is_reported_failed_and_the_agent_goes_on() {
    let server = FakeServer::start(SECRET);
    let handler: Arc<dyn TaskHandler> = Arc::new(|task: &WireTask| {
        assert_ne!(task.payload, "boom", "handler blew up on purpose");
        TaskOutcome::success(format!("hello {}", task.payload))
    });
    let _agent = RunningAgent::with_handler(config(&server.url(), 1), handler);
    server.state.push_task(WireTask { task_type: "greet".into(), ..shell("t1", "boom") });
    server.state.push_task(WireTask { task_type: "greet".into(), ..shell("t2", "you") });
    server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    let state = server.state.lock();
    assert_eq!(state.reports[0].1.do_status, "failed");
    assert_eq!(state.reports[0].1.error.as_deref(), Some("the task handler panicked"));
    assert_eq!(state.reports[1].1.stdout.as_deref(), Some("hello you"));
}

#[test]
fn heartbeat_pings_on_its_interval() {
    let server = FakeServer::start(SECRET);
    let mut config = config(&server.url(), 1);
    config.heartbeat = Duration::from_millis(100);
    let _agent = RunningAgent::start(config);
    server.state.wait_until(WAIT, "three pings", |s| s.pings >= 3);
}

/// The agent's share of `orange task run -- true`: from queueing (which wakes the parked poll)
/// to the report arriving, over loopback with a real `sh -c true`.
#[test]
fn round_trip_of_a_trivial_task_is_fast() {
    let server = FakeServer::start(SECRET);
    let _agent = RunningAgent::start(config(&server.url(), 4));
    server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    let mut samples = Vec::new();
    for i in 0..40 {
        let queued = Instant::now();
        server.state.push_task(shell(&format!("t{i}"), "true"));
        server.state.wait_until(WAIT, "report", |s| s.reports.len() == i + 1);
        samples.push(server.state.lock().reports[i].0 - queued);
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];
    eprintln!("round trip p50 {p50:?}, max {:?}", samples[samples.len() - 1]);
    assert!(p50 < Duration::from_millis(10), "p50 {p50:?}");
}
