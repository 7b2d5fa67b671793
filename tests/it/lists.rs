//! Listing with real processes: `orange task list` filtered by agent, status and age on the
//! server, paged by its cursor through every task once, with its COMMAND column; `orange agents
//! show` with an agent's open and latest tasks; and empty results said on stderr.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts};

/// `orange task list ARGS` against `server`.
fn list(server: &Server, args: &[&str]) -> Run {
    let mut all = vec!["task", "list"];
    all.extend_from_slice(args);
    server.operator(&all).run()
}

/// The task ids of `orange task list ARGS --json`, in the order listed, and its `next`.
fn listed(server: &Server, args: &[&str]) -> (Vec<String>, Option<String>) {
    let mut all = args.to_vec();
    all.push("--json");
    let run = list(server, &all);
    run.assert_success();
    (ids(&run.json()["tasks"]), run.json()["next"].as_str().map(str::to_owned))
}

/// The `task_id`s of a JSON array of tasks.
fn ids(tasks: &Value) -> Vec<String> {
    let tasks = tasks.as_array().unwrap_or_else(|| panic!("not a task array: {tasks}"));
    tasks.iter().map(|task| task["task_id"].as_str().unwrap_or_default().to_owned()).collect()
}

fn set(ids: &[String]) -> BTreeSet<String> {
    ids.iter().cloned().collect()
}

/// An agent that registered and went away: tasks sent to it stay queued.
fn gone_agent(server: &Server, app_id: &str) {
    let mut agent = Agent::start_online(server, app_id, AgentOpts::default());
    agent.kill();
}

/// Sends shell `payload` to `app_id` and waits until it is finished; returns its id.
fn ran(server: &Server, app_id: &str, payload: &str) -> String {
    let id = server.enqueue(&[app_id], "shell", payload)[0].task_id.clone();
    let task = server.wait_task(&id, 30);
    assert!(task.status.is_final(), "{payload:?} did not finish: {task:?}");
    id
}

#[test]
fn task_list_filters_by_agent_status_and_age_on_the_server() {
    let server = Server::start(ServerOpts::default());
    let _w1 = Agent::start_online(&server, "w1", AgentOpts::shell());
    gone_agent(&server, "w2");
    let ok = ran(&server, "w1", "true");
    let failed = ran(&server, "w1", "exit 3");
    let long = format!("echo {}\necho second line", "x".repeat(60));
    let long_id = ran(&server, "w1", &long);
    std::thread::sleep(Duration::from_millis(1100));
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let queued: Vec<String> =
        (0..2).map(|_| server.enqueue(&["w2"], "shell", "uptime")[0].task_id.clone()).collect();

    assert_eq!(set(&listed(&server, &["--agent", "w2"]).0), set(&queued));
    assert_eq!(set(&listed(&server, &["--appid", "w2"]).0), set(&queued), "--appid is --agent");
    assert_eq!(listed(&server, &["--status", "failed"]).0, vec![failed.clone()]);
    let mut queued_or_failed = queued.clone();
    queued_or_failed.push(failed.clone());
    assert_eq!(set(&listed(&server, &["--status", "queued,failed"]).0), set(&queued_or_failed));
    assert_eq!(
        set(&listed(&server, &["--status", "queued", "--status", "failed"]).0),
        set(&queued_or_failed)
    );
    assert_eq!(listed(&server, &["--agent", "w1", "--status", "succeeded", "--since", "1h"]).0.len(), 2);
    assert_eq!(set(&listed(&server, &["--since", &since]).0), set(&queued), "only tasks since {since}");
    let all = listed(&server, &["--since", "1h"]).0;
    assert_eq!(set(&all), set(&[ok, failed, long_id, queued[0].clone(), queued[1].clone()]));

    let table = list(&server, &["--agent", "w1"]);
    table.assert_success();
    let head = table.stdout.lines().next().unwrap_or_default();
    assert!(head.ends_with("CREATED               COMMAND"), "{table}");
    let cut = format!("echo {}…", "x".repeat(34));
    assert!(
        table.stdout.lines().any(|line| line.ends_with(&cut)),
        "a long line is cut to 40 characters\n{table}"
    );
    assert!(table.stdout.lines().any(|line| line.ends_with("  exit 3")), "{table}");
    assert_eq!(table.stderr, "", "one page, no note\n{table}");

    let refused = list(&server, &["--status", "done"]);
    assert_eq!(refused.code(), Some(2), "{refused}");
    assert!(refused.stderr.contains("unknown task status \"done\""), "{refused}");
}

#[test]
fn paging_walks_every_task_once() {
    let server = Server::start(ServerOpts::default());
    let agents = ["p1", "p2", "p3", "p4", "p5"];
    for app_id in agents {
        gone_agent(&server, app_id);
    }
    let mut sent = BTreeSet::new();
    for _ in 0..50 {
        sent.extend(server.enqueue(&agents, "shell", "true").into_iter().map(|task| task.task_id));
    }
    assert_eq!(sent.len(), 250);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut args = vec!["--limit", "100"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let (page, next) = listed(&server, &args);
        pages += 1;
        assert!(page.len() <= 100 && pages <= 3, "page {pages}: {} tasks", page.len());
        seen.extend(page);
        match next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!((pages, seen.len()), (3, 250), "100, 100 and 50");
    assert_eq!(set(&seen), sent, "every task once");

    let (p1, next) = listed(&server, &["--agent", "p1", "--limit", "49"]);
    let (rest, last) =
        listed(&server, &["--agent", "p1", "--limit", "49", "--after", next.as_deref().unwrap_or("")]);
    assert_eq!((p1.len(), rest.len(), last), (49, 1, None));

    let first = list(&server, &["--limit", "100"]);
    first.assert_success();
    assert_eq!(first.stdout.lines().count(), 101, "a header and 100 rows\n{first}");
    let note = format!("orange: more tasks may match; the next page: --after {}\n", seen[99]);
    assert_eq!(first.stderr, note);
}

#[test]
fn agents_show_gives_facts_labels_open_and_latest_tasks() {
    let server = Server::start(ServerOpts::default());
    let opts = AgentOpts { labels: vec!["role=web".into()], ..AgentOpts::shell() };
    let _w1 = Agent::start_online(&server, "w1", opts);
    gone_agent(&server, "w2");
    let done: Vec<String> = (0..12).map(|i| ran(&server, "w1", &format!("echo {i}"))).collect();
    let open: Vec<String> =
        (0..3).map(|_| server.enqueue(&["w2"], "shell", "uptime")[0].task_id.clone()).collect();

    let run = server.operator(&["agents", "show", "w1", "--json"]).run();
    run.assert_success();
    let json = run.json();
    assert_eq!(
        (json["agent"]["app_id"].as_str(), json["agent"]["online"].as_bool()),
        (Some("w1"), Some(true))
    );
    assert_eq!(json["agent"]["labels"]["role"], "web");
    assert!(json["agent"]["facts"]["kernel"].is_string(), "{run}");
    assert_eq!(ids(&json["open_tasks"]), Vec::<String>::new());
    let newest: Vec<String> = done.iter().rev().take(10).cloned().collect();
    assert_eq!(ids(&json["recent_tasks"]), newest, "the last 10, newest first");

    let run = server.operator(&["agents", "show", "w2"]).run();
    run.assert_success();
    for line in ["agent:      w2", "status:     accepted", "labels:     -"] {
        assert!(run.stdout.contains(&format!("{line}\n")), "{line:?}\n{run}");
    }
    assert!(run.stdout.contains("\nlast seen:  20"), "{run}");
    let (open_part, recent_part) = run.stdout.split_once("last 10 tasks:").unwrap_or_else(|| panic!("{run}"));
    assert!(open_part.contains("open tasks (queued, delivered, running):\nTASK ID"), "{run}");
    for id in &open {
        assert!(open_part.contains(id.as_str()) && recent_part.contains(id.as_str()), "{id}\n{run}");
    }

    let unknown = server.operator(&["agents", "show", "w9"]).run();
    assert_eq!(unknown.code(), Some(1), "{unknown}");
    assert!(unknown.stderr.contains("unknown agent \"w9\""), "{unknown}");
}

#[test]
fn empty_results_say_so_on_stderr() {
    let server = Server::start(ServerOpts::default());
    let run = list(&server, &[]);
    assert_eq!((run.code(), run.stdout.as_str(), run.stderr.as_str()), (Some(0), "", "orange: no tasks\n"));
    let run = list(&server, &["--agent", "nobody", "--status", "lost"]);
    assert_eq!(
        (run.code(), run.stdout.as_str(), run.stderr.as_str()),
        (Some(0), "", "orange: no tasks match\n")
    );
    let run = list(&server, &["--json"]);
    run.assert_success();
    assert_eq!(run.json(), serde_json::json!({ "tasks": [] }));

    let _w1 = Agent::start_online(
        &server,
        "w1",
        AgentOpts { labels: vec!["role=web".into()], ..Default::default() },
    );
    let run = server.operator(&["agents", "--label", "role=nothing"]).run();
    assert_eq!(
        (run.code(), run.stdout.as_str(), run.stderr.as_str()),
        (Some(0), "", "orange: no agents match\n")
    );
    let run = server.operator(&["agents", "--label", "role=web"]).run();
    assert!(run.stdout.starts_with("APP ID") && run.stdout.contains("\nw1 "), "{run}");
}
