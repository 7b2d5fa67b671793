//! Task features end to end: `--env` and `--cwd` reach the command on a real agent, and a task
//! that needs a feature is never given to an agent that did not announce it: the original Go
//! client (spoken byte for byte) and an orange agent of the previous release (which announces
//! nothing) are refused at once, naming the agent and the feature, in `task run`, `task send`
//! and in a job; what they are handed is the task they always knew.

use std::time::Duration;

use orange::client::PollAnswer;
use orange::protocol::RegisterRequest;
use orange::protocol::admin::EnqueueRequest;
use serde_json::Value;

use crate::support::{
    Agent, AgentOpts, GoAgent, Run, SIM_SECRET, Server, ServerOpts, register_as, register_sim, wait_until,
};

/// Deadline of a CLI call that must be refused at once; generous, the wait ends at the answer.
const REFUSED_WITHIN: Duration = Duration::from_secs(10);

/// `orange ARGS` against `server`.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(60)).run()
}

/// Asserts `run` failed at once, saying that `app_id` lacks `feature`.
fn assert_refused_for(run: &Run, app_id: &str, feature: &str) {
    assert_ne!(run.code(), Some(0), "refused expected\n{run}");
    assert!(run.elapsed < REFUSED_WITHIN, "refused at once expected, took {:?}\n{run}", run.elapsed);
    let needle = format!("agent \"{app_id}\" does not support the task feature {feature}");
    assert!(run.stderr.contains(&needle), "stderr lacks {needle:?}\n{run}");
}

#[test]
fn task_run_gives_the_command_its_env_and_working_directory() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());

    let run = orange(&server, &["task", "run", "--appid", "web-1", "--env", "A=b", "--", "echo $A"]);
    run.assert_success();
    assert_eq!(run.stdout, "b\n", "{run}");

    let both = ["task", "run", "--appid", "web-1", "--env", "A=x y", "--env", "B=2", "--cwd", "/tmp"];
    let run = orange(&server, &[&both[..], &["--", "echo \"$A $B\"; pwd"]].concat());
    run.assert_success();
    assert_eq!(run.stdout, "x y 2\n/tmp\n", "{run}");

    let run = orange(&server, &["task", "run", "--appid", "web-1", "--cwd", "/tmp", "--", "pwd"]);
    run.assert_success();
    assert_eq!(run.stdout, "/tmp\n", "{run}");
}

#[test]
fn a_missing_working_directory_fails_the_task_without_running_it() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let marker = tempfile::tempdir().expect("temp dir");
    let touched = marker.path().join("ran");
    let command = format!("touch {}", touched.display());
    let args = ["task", "run", "--appid", "web-1", "--cwd", "/nonexistent/orange-cwd", "--", &command];
    let run = orange(&server, &args);
    assert_eq!(run.code(), Some(255), "{run}");
    assert!(run.stderr.contains("working directory \"/nonexistent/orange-cwd\" cannot be used"), "{run}");
    assert!(!touched.exists(), "the command must not run elsewhere");
}

#[test]
fn the_cli_refuses_an_orange_variable_and_a_relative_directory_before_sending() {
    let server = Server::start(ServerOpts::default());
    let run =
        orange(&server, &["task", "send", "--appid", "x", "--type", "shell", "--env", "ORANGE_SECRET=x"]);
    assert_eq!(run.code(), Some(2), "a usage error\n{run}");
    assert!(run.stderr.contains("--env: environment variable \"ORANGE_SECRET\""), "{run}");
    let run = orange(&server, &["task", "run", "--appid", "x", "--cwd", "tmp", "--", "pwd"]);
    assert_eq!(run.code(), Some(2), "a usage error\n{run}");
    assert!(run.stderr.contains("--cwd: working directory \"tmp\" must be an absolute path"), "{run}");
}

#[test]
fn an_original_client_is_refused_a_task_needing_a_feature_and_gets_plain_tasks_as_before() {
    let server = Server::start(ServerOpts::default());
    let go = GoAgent::new(&server, "go-1", "s1").registered();

    let run = orange(&server, &["task", "run", "--appid", "go-1", "--env", "A=b", "--", "echo $A"]);
    assert_refused_for(&run, "go-1", "env");
    let args = ["task", "send", "--appid", "go-1", "--type", "shell", "--cwd", "/tmp", "--payload", "pwd"];
    assert_refused_for(&orange(&server, &args), "go-1", "cwd");
    let listed = orange(&server, &["task", "list", "--appid", "go-1", "--json"]);
    listed.assert_success();
    assert_eq!(listed.json()["tasks"].as_array().map(Vec::len), Some(0), "nothing queued\n{listed}");

    // A plain task reaches it with exactly the fields of the original protocol (and orange's
    // timeout, which it always had).
    let id = server.send_task("go-1", "shell", &[], "uptime");
    let task = go.take(&id);
    let mut keys: Vec<&str> = task.as_object().expect("a task object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["create_at", "do_status", "payload", "result", "task_id", "task_type", "timeout_secs"]);
}

#[test]
fn a_job_needing_a_feature_ends_the_hosts_lacking_it_at_once_and_runs_on_the_others() {
    let server = Server::start(ServerOpts::default());
    let _go = GoAgent::new(&server, "go-1", "s1").registered();
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());

    let listed = orange(&server, &["agents", "--json"]);
    listed.assert_success();
    let features: Vec<(Value, Value)> = listed.json()["agents"]
        .as_array()
        .unwrap_or_else(|| panic!("no agent list\n{listed}"))
        .iter()
        .map(|a| (a["app_id"].clone(), a["features"].clone()))
        .collect();
    let expected = [
        ("go-1", serde_json::json!([])),
        ("web-1", serde_json::json!(["cwd", "env", "files", "stdin", "user"])),
    ];
    assert_eq!(features, expected.map(|(id, f)| (Value::from(id), f)), "{listed}");

    let args =
        ["job", "run", "--appid", "go-1,web-1", "--env", "GREETING=hi", "--json", "--", "echo $GREETING"];
    let run = orange(&server, &args);
    assert_eq!(run.code(), Some(1), "a failed host makes the job exit 1\n{run}");
    assert!(run.elapsed < Duration::from_secs(30), "no wait on the host lacking the feature\n{run}");
    let report = run.json();
    let results = report["results"].as_array().unwrap_or_else(|| panic!("no results\n{run}"));
    let by_host = |app_id: &str| -> &Value {
        results
            .iter()
            .find(|r| r["app_id"] == app_id)
            .unwrap_or_else(|| panic!("no result of {app_id}\n{run}"))
    };
    let go = by_host("go-1");
    assert_eq!(go["state"], "failed", "{run}");
    let error = go["error"].as_str().unwrap_or_default();
    assert!(error.contains("agent \"go-1\" does not support the task feature env"), "{run}");
    assert_eq!(go["task_id"], Value::Null, "no task was made for it\n{run}");
    let web = by_host("web-1");
    assert_eq!((web["state"].as_str(), web["stdout"].as_str()), (Some("succeeded"), Some("hi\n")), "{run}");

    // The summary names the host and says why.
    let args = ["job", "run", "--appid", "go-1,web-1", "--cwd", "/tmp", "--", "pwd"];
    let run = orange(&server, &args);
    assert_eq!(run.code(), Some(1), "{run}");
    let shown = format!("{}{}", run.stdout, run.stderr);
    assert!(shown.contains("go-1") && shown.contains("does not support the task feature cwd"), "{run}");
}

#[test]
fn an_orange_agent_announcing_no_feature_is_refused_and_never_handed_such_a_task() {
    let server = Server::start(ServerOpts::poll_window(2));
    // The previous release registered and polled without announcing anything.
    let old = register_sim(&server, "old-1");
    let request = EnqueueRequest {
        app_ids: vec!["old-1".into()],
        task_type: "shell".into(),
        payload: "echo $A".into(),
        env: [("A".to_owned(), "b".to_owned())].into(),
        ..EnqueueRequest::default()
    };
    let refused = server.admin().post::<_, Value>("/api/v1/tasks", &request).expect_err("refused");
    assert!(
        refused.to_string().contains("agent \"old-1\" does not support the task feature env"),
        "{refused}"
    );

    // An agent that announced the feature at registration but polls without it (it was replaced
    // by an older build under the same app id) is not handed the task: it ends failed, saying why.
    let features = vec!["cwd".to_owned(), "env".to_owned()];
    let announced = RegisterRequest {
        app_id: "old-1".into(),
        secret: SIM_SECRET.into(),
        features: features.clone(),
        ..RegisterRequest::default()
    };
    register_as(&server, &announced);
    let queued = server.enqueue_request(&request);
    let id = queued[0].task_id.clone();
    assert!(matches!(old.poll(1).expect("poll"), PollAnswer::Idle(_)), "not handed out");
    let task = server.wait_task(&id, 10);
    assert_eq!(task.status.as_str(), "failed");
    let error = task.error.unwrap_or_default();
    assert!(error.contains("agent \"old-1\" does not support the task feature env"), "{error}");

    // That poll also told the server it lacks the feature: the next enqueue is refused at once.
    let refused = server.admin().post::<_, Value>("/api/v1/tasks", &request).expect_err("refused");
    assert!(refused.to_string().contains("does not support the task feature env"), "{refused}");
    // Announcing it on a poll is enough to be given one again, with its environment.
    assert!(matches!(old.poll_announcing(0, &features).expect("poll"), PollAnswer::Idle(_)));
    let queued = server.enqueue_request(&request);
    wait_until(Duration::from_secs(10), "the task is handed out", || {
        match old.poll_announcing(1, &features).expect("poll") {
            PollAnswer::Task(task) => {
                assert_eq!(
                    (task.task_id.as_str(), task.env.get("A").map(String::as_str)),
                    (&*queued[0].task_id, Some("b"))
                );
                true
            }
            PollAnswer::Idle(_) => false,
        }
    });
}
