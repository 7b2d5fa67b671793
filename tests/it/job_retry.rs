//! `orange job retry`: a job that ended runs again as a new job linked to it, on exactly the
//! hosts that did not succeed with `--failed`, or on every host; a job still running is refused.

use std::time::Duration;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts};

/// `orange ARGS` against `server`.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(90)).run()
}

/// The (app id, state) of every result of a `--json` job report, in app id order.
fn states(run: &Run) -> Vec<(String, String)> {
    let json = run.json();
    let results = json["results"].as_array().cloned().unwrap_or_default();
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    for result in &results {
        assert_eq!(result["status"], result["state"], "`status` beside `state`: {result}");
    }
    assert_eq!(json["job"]["status"], json["job"]["state"], "`status` beside `state` on the job");
    results.iter().map(|r| (text(&r["app_id"]), text(&r["state"]))).collect()
}

#[test]
fn retry_failed_reaches_exactly_the_hosts_that_did_not_succeed_and_retry_reaches_all() {
    let server = Server::start(ServerOpts::default());
    let hosts = ["r-1", "r-2", "r-3", "r-4"];
    let _agents: Vec<Agent> =
        hosts.iter().map(|id| Agent::start_online(&server, id, AgentOpts::shell())).collect();
    let work = tempfile::tempdir().expect("temp dir");
    let lock = work.path().join("lock");
    let log = work.path().join("ran");
    // Exactly one host takes the lock and succeeds; each run appends its task id to the log.
    let command = format!("echo $ORANGE_TASK_ID >> {}; mkdir {}", log.display(), lock.display());
    let first = orange(&server, &["job", "run", "--appid", &hosts.join(","), "--json", "--", &command]);
    assert_eq!(first.code(), Some(1), "three hosts failed\n{first}");
    let first_states = states(&first);
    let failed: Vec<String> =
        first_states.iter().filter(|(_, state)| state != "succeeded").map(|(id, _)| id.clone()).collect();
    assert_eq!(failed.len(), 3, "{first_states:?}");
    let first_id = first.json()["job"]["job_id"].as_str().expect("a job id").to_owned();

    std::fs::remove_dir(&lock).expect("free the lock");
    let retry = orange(&server, &["job", "retry", &first_id, "--failed", "--json"]);
    let retried: Vec<String> = states(&retry).into_iter().map(|(id, _)| id).collect();
    assert_eq!(retried, failed, "exactly the hosts that did not succeed\n{retry}");
    assert_eq!(retry.json()["job"]["retry_of"].as_str(), Some(first_id.as_str()), "{retry}");
    let succeeded = states(&retry).iter().filter(|(_, state)| state == "succeeded").count();
    assert_eq!(succeeded, 1, "one of them took the freed lock\n{retry}");

    std::fs::remove_dir(&lock).expect("free the lock again");
    let all = orange(&server, &["job", "retry", &first_id, "--json"]);
    let everyone: Vec<String> = states(&all).into_iter().map(|(id, _)| id).collect();
    assert_eq!(everyone, hosts, "without --failed, every host\n{all}");
    let ran = std::fs::read_to_string(&log).expect("the log");
    assert_eq!(ran.lines().count(), 4 + 3 + 4, "each host ran once per job\n{ran}");

    let audit = orange(&server, &["audit", "--action", "job.retry", "--json"]);
    audit.assert_success();
    assert_eq!(audit.json()["entries"].as_array().map(Vec::len), Some(2), "{audit}");
}

#[test]
fn a_running_job_or_one_with_nothing_to_retry_is_refused() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "r-1", AgentOpts::shell());
    let sent = orange(&server, &["job", "send", "--appid", "r-1", "--", "sleep 30"]);
    sent.assert_success();
    let id = sent.stdout.trim().to_owned();
    let refused = orange(&server, &["job", "retry", &id]);
    assert_eq!(refused.code(), Some(1), "{refused}");
    assert!(refused.stderr.contains("has not ended yet"), "{refused}");
    orange(&server, &["job", "cancel", &id, "--force"]).assert_success();

    let ok = orange(&server, &["job", "run", "--appid", "r-1", "--json", "--", "true"]);
    ok.assert_success();
    let ok_id = ok.json()["job"]["job_id"].as_str().expect("a job id").to_owned();
    let nothing = orange(&server, &["job", "retry", &ok_id, "--failed"]);
    assert_eq!(nothing.code(), Some(1), "{nothing}");
    assert!(
        nothing.stderr.contains("nothing to retry") && nothing.stderr.contains("every host succeeded"),
        "{nothing}"
    );
    let bad = orange(&server, &["job", "retry", "not-a-job"]);
    assert_eq!(bad.code(), Some(2), "{bad}");
}
