//! Delivery and reports, re-registration, retries while the server is down, a stop that waits
//! for running tasks, dropped refusals, the concurrency cap and round-trip latency.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Result;

use super::{Fixture, RunningAgent, WAIT, config, shell, wait_for_file};
use crate::agent::fake_server::FakeServer;
use crate::agent::{TaskHandler, TaskOutcome};
use crate::protocol::WireTask;

#[test]
fn registers_runs_tasks_and_reports_them() {
    let fx = Fixture::new();
    let agent = fx.start(4);
    fx.server.state.push_task(shell("t1", "echo hi; echo e >&2"));
    fx.server.state.push_task(WireTask { task_type: "ping".into(), ..shell("t2", "") });
    fx.server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    agent.stop(Duration::from_secs(1));
    let state = fx.server.state.lock();
    let registration = &state.registrations[0];
    assert_eq!((registration.app_id.as_str(), registration.secret.as_str()), ("w1", super::SECRET));
    assert_eq!(registration.labels, BTreeMap::from([("env".to_owned(), "test".to_owned())]));
    assert_eq!(registration.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(registration.hostname.as_deref(), Some("h1"));
    assert_eq!(
        registration.features,
        ["cwd", "env", "files", "stdin", "user"],
        "the built-in executors apply env, cwd, files, stdin and user"
    );
    assert!(
        state.poll_features.iter().all(|f| f.as_deref() == Some("cwd,env,files,stdin,user")),
        "{:?}",
        state.poll_features
    );
    let t1 = state.report("t1").expect("reported");
    assert_eq!((t1.do_status.as_str(), t1.exit_code), ("success", Some(0)));
    assert_eq!((t1.stdout.as_deref(), t1.stderr.as_deref()), (None, None), "output was streamed");
    assert_eq!(t1.output_chunks, Some(2));
    assert_eq!(
        (state.stream_output("t1", "stdout"), state.stream_output("t1", "stderr")),
        ("hi\n".into(), "e\n".into())
    );
    assert_eq!((t1.result.as_str(), t1.payload.as_str()), ("", ""), "nothing is sent twice");
    assert_eq!((t1.task_type.as_str(), t1.create_at.as_str()), ("shell", "2026-11-26T06:40:41Z"));
    assert!(t1.duration_ms.is_some());
    let t2 = state.report("t2").expect("reported");
    assert_eq!(t2.stdout, Some(format!("orange {} on h1", env!("CARGO_PKG_VERSION"))));
    assert_eq!(t2.output_chunks, None);
    assert_eq!((state.registrations.len(), state.bad_signatures), (1, 0));
}

#[test]
fn registers_again_when_the_server_forgets_the_agent() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    fx.server.state.update(|s| s.forget_agent = true);
    // The "unknown app id" answer proves the server is up, so the agent registers at once.
    fx.server
        .state
        .wait_until(Duration::from_millis(500), "second registration", |s| s.registrations.len() == 2);
    fx.server.state.push_task(shell("t1", "true"));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
}

#[test]
fn a_refused_registration_is_retried() {
    let fx = Fixture::new();
    fx.server.state.update(|s| s.refuse_register = true);
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "two refused registrations", |s| s.register_calls >= 2);
    assert!(fx.server.state.lock().registrations.is_empty());
    fx.server.state.update(|s| s.refuse_register = false);
    fx.server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    fx.server.state.push_task(shell("t1", "true"));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
}

#[test]
fn keeps_retrying_until_the_server_comes_up() -> Result<()> {
    let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let state = tempfile::tempdir()?;
    let _agent = RunningAgent::start(config(&format!("http://{addr}"), 1, state.path()));
    thread::sleep(Duration::from_millis(1200));
    let server = FakeServer::start_on(addr, super::SECRET);
    server.state.push_task(shell("t1", "echo up"));
    server
        .state
        .wait_until(Duration::from_secs(10), "report after the server came up", |s| s.reports.len() == 1);
    assert_eq!(server.state.lock().output("t1"), "up\n");
    Ok(())
}

#[test]
fn stop_waits_for_running_tasks_and_their_reports() -> Result<()> {
    let fx = Fixture::new();
    let agent = fx.start(2);
    let tmp = tempfile::tempdir()?;
    let started = tmp.path().join("started");
    fx.server.state.push_task(shell("slow", &format!("touch {}; sleep 1; echo done", started.display())));
    wait_for_file(&started);
    let took = agent.stop(Duration::from_secs(3));
    assert!(took >= Duration::from_millis(700), "stopped after {took:?}, before the task ended");
    let state = fx.server.state.lock();
    assert_eq!(state.reports.len(), 1, "the report was sent before run returned");
    assert_eq!(state.output("slow"), "done\n");
    assert_eq!(
        state.polls.last().and_then(|(_, capacity)| *capacity),
        Some(0),
        "no task taken while stopping"
    );
    Ok(())
}

#[test]
fn a_refused_report_is_dropped_and_polling_goes_on() -> Result<()> {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.update(|s| s.refuse_reports = true);
    fx.server.state.push_task(shell("t1", "true"));
    fx.server.state.wait_until(WAIT, "report call", |s| s.report_calls == 1);
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(fx.server.state.lock().report_calls, 1, "a refused report was retried");
    assert!(fx.journal().get("t1")?.is_some_and(|e| e.reported), "a refusal counts as reported");
    fx.server.state.update(|s| s.refuse_reports = false);
    fx.server.state.push_task(shell("t2", "true"));
    fx.server.state.wait_until(WAIT, "second report", |s| s.reports.len() == 1);
    assert_eq!(fx.server.state.lock().report_calls, 2);
    Ok(())
}

#[test]
fn a_second_agent_on_the_same_state_directory_is_refused() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    let handler: Arc<dyn TaskHandler> = Arc::new(|_: &WireTask| TaskOutcome::success(""));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let err = crate::agent::run(fx.config(1), handler, stop).unwrap_err();
    assert!(format!("{err:#}").starts_with("another agent is using the task journal"), "{err:#}");
    assert_eq!(fx.server.state.lock().registrations.len(), 1);
}

#[test]
fn max_tasks_caps_how_many_run_at_once() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("a", "sleep 0.3"));
    fx.server.state.push_task(shell("b", "sleep 0.3"));
    fx.server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    let state = fx.server.state.lock();
    assert!(state.delivered[1].0 >= state.reports[0].0, "b was fetched while a still ran");
}

#[test]
fn a_panicking_handler_is_reported_failed_and_the_agent_goes_on() {
    let fx = Fixture::new();
    let handler: Arc<dyn TaskHandler> = Arc::new(|task: &WireTask| {
        assert_ne!(task.payload, "boom", "handler blew up on purpose");
        TaskOutcome::success(format!("hello {}", task.payload))
    });
    let _agent = RunningAgent::with_handler(fx.config(1), handler);
    fx.server.state.push_task(WireTask { task_type: "greet".into(), ..shell("t1", "boom") });
    fx.server.state.push_task(WireTask { task_type: "greet".into(), ..shell("t2", "you") });
    fx.server.state.wait_until(WAIT, "two reports", |s| s.reports.len() == 2);
    let state = fx.server.state.lock();
    assert_eq!(state.reports[0].1.do_status, "failed");
    assert_eq!(state.reports[0].1.error.as_deref(), Some("the task handler panicked"));
    assert_eq!(state.reports[1].1.stdout.as_deref(), Some("hello you"));
}

#[test]
fn heartbeat_pings_on_its_interval() {
    let fx = Fixture::new();
    let mut config = fx.config(1);
    config.heartbeat = Duration::from_millis(100);
    let _agent = RunningAgent::start(config);
    fx.server.state.wait_until(WAIT, "three pings", |s| s.pings >= 3);
}

#[test]
fn a_handler_without_features_announces_none_and_fails_a_task_needing_one_unrun() {
    let fx = Fixture::new();
    let handler: Arc<dyn TaskHandler> =
        Arc::new(|task: &WireTask| TaskOutcome::success(task.payload.clone()));
    let _agent = RunningAgent::with_handler(fx.config(1), handler);
    // A server that hands it out anyway (it must not) does not get it run without its cwd.
    let mut task = WireTask { task_type: "greet".into(), ..shell("t1", "ran") };
    task.cwd = Some("/tmp".into());
    fx.server.state.push_task(task);
    fx.server.state.wait_until(WAIT, "a report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    assert!(state.registrations[0].features.is_empty());
    assert!(state.poll_features.iter().all(Option::is_none), "{:?}", state.poll_features);
    let report = &state.reports[0].1;
    assert_eq!((report.do_status.as_str(), report.stdout.as_deref()), ("failed", Some("")), "not run");
    let error = report.error.as_deref().unwrap_or_default();
    assert!(error.contains("does not support the task feature(s) cwd"), "{error}");
}
