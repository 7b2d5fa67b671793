//! What the server logs and at which level, with the real binaries: agents' and jobs' lifecycle
//! at INFO, each task's delivery and report only at DEBUG; `RUST_LOG` is honoured as well as
//! `ORANGE_LOG` (which wins); a TLS failure says the certificate is not trusted.

use std::time::Duration;

use crate::support::{Agent, AgentOpts, Server, ServerOpts};

/// A server with `env`, one agent on it, and one task run to its end; returns the server.
fn server_after_one_task(env: &[(&str, &str)]) -> Server {
    let env = env.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect();
    let server = Server::start(ServerOpts { env, ..ServerOpts::default() });
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let run = server
        .operator(&["task", "run", "--appid", "web-1", "--", "true"])
        .deadline(Duration::from_secs(60))
        .run();
    run.assert_success();
    server
}

#[test]
fn tasks_are_logged_at_debug_and_the_lifecycle_at_info() {
    let quiet = server_after_one_task(&[]);
    let log = quiet.stderr();
    assert!(log.contains("agent registered"), "lifecycle at info\n{log}");
    assert!(
        !log.contains("task delivered") && !log.contains("task reported"),
        "no task lines at info\n{log}"
    );

    let verbose = server_after_one_task(&[("RUST_LOG", "debug")]);
    let log = verbose.stderr();
    assert!(log.contains("task delivered") && log.contains("task reported"), "RUST_LOG=debug\n{log}");

    let both = server_after_one_task(&[("RUST_LOG", "debug"), ("ORANGE_LOG", "info")]);
    let log = both.stderr();
    assert!(log.contains("agent registered"), "{log}");
    assert!(!log.contains("task delivered"), "ORANGE_LOG wins over RUST_LOG\n{log}");

    let bad = server_after_one_task(&[("RUST_LOG", "=*=")]);
    let log = bad.stderr();
    assert!(log.contains("RUST_LOG=\"=*=\" is not a log filter"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line_and_a_bad_format_is_refused() {
    let server = server_after_one_task(&[("ORANGE_LOG_FORMAT", "json")]);
    let log = server.stderr();
    // The harness heads each start with its own line ("=== start #1: ...").
    let events: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.starts_with("=== start #") && !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n{log}")))
        .collect();
    let registered = events.iter().find(|e| e["fields"]["message"] == "agent registered");
    let registered = registered.unwrap_or_else(|| panic!("no agent registered event\n{log}"));
    assert_eq!(registered["level"], "INFO", "{registered}");
    assert!(registered["timestamp"].is_string(), "{registered}");

    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().to_str().expect("utf-8 temp dir");
    let run = crate::support::cli(&["server", "--data", dir, "--log-format", "xml"]);
    assert_eq!(run.code(), Some(2), "{run}");
    assert!(run.stderr.contains("--log-format: \"xml\" is not a log format; use text or json"), "{run}");
}
