//! No ghosts: an agent stopped cleanly says goodbye and is listed offline at once; `task run` to
//! an offline agent fails at once naming when it was last seen, and with `--queue` waits for
//! it, saying so every few seconds, until it comes back. Real server, real agents, real CLI.

use std::time::{Duration, Instant};

use crate::support::{Agent, AgentOpts, Server, ServerOpts, wait_until};

/// `orange agents --json`'s entry for `app_id`.
fn listed(server: &Server, app_id: &str) -> serde_json::Value {
    let run = server.operator(&["agents", "--json"]).run();
    run.assert_success();
    let json = run.json();
    let agents = json["agents"].as_array().cloned().unwrap_or_default();
    agents.into_iter().find(|a| a["app_id"] == app_id).unwrap_or_else(|| panic!("{app_id} not listed\n{run}"))
}

#[test]
fn a_stopped_agent_is_offline_at_once_and_task_run_to_it_fails_naming_its_last_seen() {
    let server = Server::start(ServerOpts::default());
    let mut agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    assert_eq!(listed(&server, "web-1")["online"], true);

    agent.stop(Duration::from_secs(20));
    let stopped = Instant::now();
    let view = listed(&server, "web-1");
    assert_eq!(view["online"], false, "a stopped agent is listed offline at once: {view}");
    // The first listing after the stop already shows it (bounded generously for a loaded machine;
    // without the goodbye it would stay online for the 90 s window).
    assert!(stopped.elapsed() < Duration::from_secs(5), "listed after {:?}", stopped.elapsed());
    assert!(agent.output().contains("said goodbye"), "{}", agent.output());

    let run = server.operator(&["task", "run", "--appid", "web-1", "--", "echo", "hi"]).run();
    assert_eq!(run.code(), Some(255), "{run}");
    assert!(run.elapsed < Duration::from_secs(5), "task run took {:?}\n{run}", run.elapsed);
    let last_seen = view["last_seen"].as_str().expect("last_seen");
    let seconds = &last_seen[..19];
    assert!(
        run.stderr.contains(&format!("agent \"web-1\" is offline (last seen {seconds}"))
            && run.stderr.contains("add --queue"),
        "the refusal names the agent's last-seen time ({last_seen}) and --queue\n{run}"
    );
    assert!(server.tasks().is_empty(), "nothing was queued: {:?}", server.tasks());
}

#[test]
fn task_run_with_queue_waits_for_a_stopped_agent_says_so_and_runs_when_it_returns() {
    let server = Server::start(ServerOpts::default());
    let mut agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    agent.stop(Duration::from_secs(20));

    let run = server.operator(&["task", "run", "--appid", "web-1", "--queue", "--", "echo", "back"]).live();
    wait_until(Duration::from_secs(10), "the task queued", || server.tasks().len() == 1);
    // Long enough for the note at the start and at least one more a few seconds later.
    std::thread::sleep(Duration::from_secs(7));
    agent.restart();
    let (run, _) = run.finish(Duration::from_secs(60));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(run.stdout.trim(), "back", "{run}");
    let notes = run.stderr.matches("waiting for web-1 (offline since ").count();
    assert!(notes >= 2, "task run says every few seconds that it waits for the agent\n{run}");
}

#[test]
fn task_send_still_queues_for_a_stopped_agent() {
    let server = Server::start(ServerOpts::default());
    let mut agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    agent.stop(Duration::from_secs(20));
    let id = server.send_task("web-1", "shell", &[], "echo later");
    assert_eq!(server.task(&id).status.as_str(), "queued");
}
