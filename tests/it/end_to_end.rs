//! The whole system: real server, real `orange agent`, real operator CLI. The first group drives
//! the CLI against a simulated agent (a thread that runs shell tasks with `sh -c` like the real
//! agent), so that a CLI failure is told apart from an agent failure; the second group runs the
//! real agent.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orange::protocol::wire::{DO_STATUS_FAILED, DO_STATUS_SUCCESS};
use orange::protocol::{ReportRequest, WireTask};
use serde_json::Value;

use crate::support::{
    Agent, AgentOpts, CLI_DEADLINE, Run, Server, ServerOpts, cli, cli_with, register_sim, wait_until,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// The agents in `orange agents --json` output, by app id.
fn agents_json(run: &Run) -> BTreeMap<String, Value> {
    let json = run.json();
    let list = json.get("agents").unwrap_or(&json).as_array().cloned();
    let list = list.unwrap_or_else(|| panic!("no agent list in the output\n{run}"));
    list.into_iter().map(|a| (a["app_id"].as_str().unwrap_or_default().to_owned(), a)).collect()
}

/// `orange task get ID --wait S --json`; asserts the task is final and returns it.
fn get_final(server: &Server, id: &str, wait_secs: u64) -> Value {
    let wait = wait_secs.to_string();
    let run = server.operator(&["task", "get", id, "--wait", &wait, "--json"]).run();
    run.assert_success();
    let task = run.json();
    assert_eq!(task["task_id"], id, "{run}");
    let status = task["status"].as_str().unwrap_or_default();
    assert!(
        !["queued", "delivered", "running"].contains(&status),
        "task not final after --wait {wait_secs}\n{run}"
    );
    task
}

/// A simulated agent: a thread that long-polls as `app_id`, runs `shell` tasks with `sh -c` and
/// `ping` tasks, and reports the way an orange agent does. Stops and joins on drop.
struct SimAgent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SimAgent {
    fn start(server: &Server, app_id: &str) -> SimAgent {
        let client = register_sim(server, app_id);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match client.get_task() {
                    Ok(Some(task)) => {
                        let report = run_like_an_agent(&task);
                        client.report(&report).unwrap_or_else(|e| panic!("report {}: {e}", task.task_id));
                    }
                    Ok(None) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        SimAgent { stop, thread: Some(thread) }
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_like_an_agent(task: &WireTask) -> ReportRequest {
    let mut report = ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        create_at: task.create_at.clone(),
        payload: task.payload.clone(),
        ..ReportRequest::default()
    };
    match task.task_type.as_str() {
        "shell" => {
            let out = std::process::Command::new("sh").arg("-c").arg(&task.payload).output().expect("run sh");
            report.exit_code = out.status.code();
            report.do_status = if out.status.success() { DO_STATUS_SUCCESS } else { DO_STATUS_FAILED }.into();
            report.stdout = Some(String::from_utf8_lossy(&out.stdout).into_owned());
            report.stderr = Some(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        "ping" => {
            report.do_status = DO_STATUS_SUCCESS.into();
            report.result = "pong".into();
        }
        other => {
            report.do_status = DO_STATUS_FAILED.into();
            report.error = Some(format!("no handler for {other}"));
        }
    }
    report
}

/// A server with a short poll window and a real agent that is online.
fn server_and_agent(app_id: &str, opts: AgentOpts) -> (Server, Agent) {
    let server = Server::start(ServerOpts::poll_window(2));
    let agent = Agent::start_online(&server, app_id, opts);
    (server, agent)
}

/// Every regular file under `dir` with its content.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).expect("read state dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                // The task journal grows with every task; the identity is everything else.
                if path.file_name() != Some(std::ffi::OsStr::new("tasks")) {
                    stack.push(path);
                }
            } else {
                let name = path.strip_prefix(dir).unwrap().display().to_string();
                files.insert(name, std::fs::read(&path).expect("read state file"));
            }
        }
    }
    files
}

fn write_handler(dir: &Path, name: &str, script: &str) {
    let path = dir.join(name);
    std::fs::write(&path, script).expect("write handler");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod handler");
}

// ---------------------------------------------------------------------------------------------
// The CLI against a simulated agent

#[test]
fn cli_task_run_prints_remote_output_and_exits_with_remote_code() {
    let server = Server::start(ServerOpts::poll_window(1));
    let _agent = SimAgent::start(&server, "sim");
    let run =
        server.operator(&["task", "run", "--appid", "sim", "--", "echo out; echo err >&2; exit 3"]).run();
    assert_eq!(run.code(), Some(3), "exit code must be the remote one\n{run}");
    assert_eq!(run.stdout, "out\n", "{run}");
    assert!(run.stderr.contains("err\n"), "{run}");
}

#[test]
fn cli_send_get_list_and_agents_with_a_simulated_agent() {
    let server = Server::start(ServerOpts::poll_window(1));
    let _agent = SimAgent::start(&server, "sim");
    let id = server.send_task("sim", "ping", &[], "");

    // get, finding the token through --data DIR/admin.token.
    let data = server.data_dir().display().to_string();
    let run = cli(&["task", "get", &id, "--wait", "10", "--json", "--server", &server.url, "--data", &data]);
    run.assert_success();
    let task = run.json();
    assert_eq!(task["task_id"], id.as_str(), "{run}");
    assert_eq!(task["app_id"], "sim", "{run}");
    assert_eq!(task["status"], "succeeded", "{run}");

    // list, finding server and token in the environment.
    let env = [("ORANGE_SERVER", server.url.as_str()), ("ORANGE_TOKEN", server.token.as_str())];
    let run = cli_with(&["task", "list", "--appid", "sim", "--json"], &env, CLI_DEADLINE);
    run.assert_success();
    let json = run.json();
    let tasks = json.get("tasks").unwrap_or(&json).as_array().cloned().unwrap_or_default();
    let listed = tasks.iter().find(|t| t["task_id"] == id.as_str());
    let listed = listed.unwrap_or_else(|| panic!("task {id} not listed\n{run}"));
    assert_eq!(listed["status"], "succeeded", "{run}");

    let run = server.operator(&["agents", "--json"]).run();
    run.assert_success();
    let agents = agents_json(&run);
    assert_eq!(agents.keys().collect::<Vec<_>>(), ["sim"], "{run}");
    assert_eq!(agents["sim"]["online"], true, "{run}");
}

#[test]
fn cli_unknown_agent_fails_at_once_with_a_message() {
    let server = Server::start(ServerOpts::poll_window(1));
    let _agent = SimAgent::start(&server, "sim");
    for args in [
        vec!["task", "run", "--appid", "ghost", "--", "true"],
        vec!["task", "send", "--appid", "ghost", "--type", "ping"],
    ] {
        let run = server.operator(&args).run();
        assert!(run.code().is_some_and(|c| c != 0), "must fail\n{run}");
        assert!(run.stderr.contains("ghost"), "the message must name the agent\n{run}");
        assert!(run.elapsed < Duration::from_secs(5), "did not fail at once\n{run}");
    }
    assert!(server.tasks().is_empty(), "a task was created for an unknown agent");
}

#[test]
fn cli_wrong_token_fails_with_a_message() {
    let server = Server::start(ServerOpts::poll_window(1));
    let run = cli_with(&["agents", "--server", &server.url], &[("ORANGE_TOKEN", "wrong")], CLI_DEADLINE);
    assert!(run.code().is_some_and(|c| c != 0), "must fail\n{run}");
    assert!(run.stderr.contains("token"), "the message must say the token is wrong\n{run}");
}

// ---------------------------------------------------------------------------------------------
// The real agent

#[test]
fn agent_runs_task_run_and_the_cli_exits_with_the_remote_code() {
    let (server, _agent) = server_and_agent("e1", AgentOpts::shell());
    let run =
        server.operator(&["task", "run", "--appid", "e1", "--", "echo out; echo err >&2; exit 3"]).run();
    assert_eq!(run.code(), Some(3), "exit code must be the remote one\n{run}");
    assert_eq!(run.stdout, "out\n", "{run}");
    assert!(run.stderr.contains("err\n"), "{run}");
}

#[test]
fn agent_is_listed_online_with_its_labels() {
    let opts = AgentOpts { labels: vec!["role=web".into(), "zone=a".into()], ..AgentOpts::shell() };
    let (server, _agent) = server_and_agent("e1", opts);
    let run = server.operator(&["agents", "--json"]).run();
    run.assert_success();
    let agents = agents_json(&run);
    let agent = agents.get("e1").unwrap_or_else(|| panic!("e1 not listed\n{run}"));
    assert_eq!(agent["online"], true, "{run}");
    assert_eq!(agent["labels"], serde_json::json!({"role": "web", "zone": "a"}), "{run}");
}

#[test]
fn agent_answers_ping_sent_with_task_send() {
    let (server, _agent) = server_and_agent("e1", AgentOpts::default());
    let id = server.send_task("e1", "ping", &[], "");
    let task = get_final(&server, &id, 10);
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["app_id"], "e1", "{task}");
    assert!(server.agent("e1").unwrap().processed_task_count >= 1);
}

#[test]
fn agent_handler_gets_payload_on_stdin_and_task_id_in_env() {
    let handlers = tempfile::TempDir::with_prefix("orange-handlers-").expect("handlers dir");
    write_handler(
        handlers.path(),
        "echo-task",
        "#!/bin/sh\nprintf 'id=%s\\n' \"$ORANGE_TASK_ID\"\nprintf 'payload=%s\\n' \"$(cat)\"\necho handler-err >&2\n",
    );
    write_handler(handlers.path(), "fail-task", "#!/bin/sh\necho failing >&2\nexit 5\n");
    let opts = AgentOpts { handlers: Some(handlers.path().to_path_buf()), ..AgentOpts::default() };
    let (server, _agent) = server_and_agent("e1", opts);

    let id = server.send_task("e1", "echo-task", &[], "hello world");
    let task = get_final(&server, &id, 10);
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["exit_code"], 0, "{task}");
    let stdout = task["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains(&format!("id={id}\n")), "handler did not see ORANGE_TASK_ID: {task}");
    assert!(stdout.contains("payload=hello world\n"), "handler did not get the payload on stdin: {task}");
    assert!(task["stderr"].as_str().unwrap_or_default().contains("handler-err"), "{task}");

    let id = server.send_task("e1", "fail-task", &[], "");
    let task = get_final(&server, &id, 10);
    assert_eq!(task["status"], "failed", "{task}");
    assert_eq!(task["exit_code"], 5, "{task}");
    assert!(task["stderr"].as_str().unwrap_or_default().contains("failing"), "{task}");

    // A type with no handler is reported failed, with the reason.
    let id = server.send_task("e1", "no-such-handler", &[], "");
    assert_eq!(get_final(&server, &id, 10)["status"], "failed");
    let view = server.task(&id);
    assert!(view.error.as_deref().is_some_and(|e| !e.trim().is_empty()), "no reason given: {view:?}");
}

#[test]
fn agent_stops_a_task_past_its_timeout() {
    let (server, _agent) = server_and_agent("e1", AgentOpts::shell());
    let started = Instant::now();
    let id = server.send_task("e1", "shell", &["--timeout", "1"], "sleep 30");
    let task = get_final(&server, &id, 10);
    assert_eq!(task["status"], "timed_out", "{task}");
    assert!(started.elapsed() < Duration::from_secs(10), "a 1 s timeout took {:?}", started.elapsed());
}

#[test]
fn agent_refuses_shell_without_allow_shell_and_says_why() {
    let (server, mut agent) = server_and_agent("e1", AgentOpts::default());
    let id = server.send_task("e1", "shell", &[], "echo should-not-run");
    let task = get_final(&server, &id, 10);
    assert_eq!(task["status"], "failed", "{task}");
    assert!(!task["stdout"].as_str().unwrap_or_default().contains("should-not-run"), "shell ran: {task}");
    let view = server.task(&id);
    let reason = view.error.clone().unwrap_or_default();
    assert!(!reason.trim().is_empty(), "a refused task must carry a reason: {view:?}");
    // The agent keeps working after a refusal.
    agent.assert_running();
    let ping = server.send_task("e1", "ping", &[], "");
    assert_eq!(get_final(&server, &ping, 10)["status"], "succeeded");
}

#[test]
fn restarted_agent_keeps_its_identity() {
    let (server, mut agent) = server_and_agent("e1", AgentOpts::default());
    let first = server.send_task("e1", "ping", &[], "");
    assert_eq!(get_final(&server, &first, 10)["status"], "succeeded");
    let before = snapshot(agent.state_dir());
    assert!(!before.is_empty(), "the agent kept nothing in its state dir {}", agent.state_dir().display());
    let registered_at = server.agent("e1").unwrap().registered_at;

    agent.restart();
    let second = server.send_task("e1", "ping", &[], "");
    assert_eq!(get_final(&server, &second, 15)["status"], "succeeded", "restarted agent does not poll");
    agent.assert_running();
    assert_eq!(snapshot(agent.state_dir()), before, "the state dir (the agent's secret) changed");
    assert_eq!(server.agent("e1").unwrap().registered_at, registered_at);
}

#[test]
fn agent_comes_back_by_itself_after_the_server_restarts() {
    let (mut server, mut agent) = server_and_agent("e1", AgentOpts::default());
    let first = server.send_task("e1", "ping", &[], "");
    assert_eq!(get_final(&server, &first, 10)["status"], "succeeded");

    let down = Instant::now();
    server.restart();
    let id = server.send_task("e1", "ping", &[], "");
    let task = get_final(&server, &id, 15);
    assert_eq!(task["status"], "succeeded", "the agent did not come back: {task}");
    agent.assert_running();
    assert!(down.elapsed() < Duration::from_secs(20), "took {:?}", down.elapsed());
    wait_until(Duration::from_secs(5), "agent listed online", || {
        server.agent("e1").is_some_and(|a| a.online)
    });
}
