//! Jobs through the real operator CLI on a fleet of real `orange agent` processes: targeting and
//! the dry run, the sliding window (`--max-concurrency`), grouped results, `--max-errors`, pause,
//! resume and cancel. Hosts differ by the handlers directory they are given: a `check` handler
//! that says `ok`, or one that says `disk full` and fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orange::protocol::admin::TaskView;
use orange::protocol::jobs::{JobResult, JobView};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts, most_open_at_once, wait_until};

/// Deadline of a CLI call that waits for a whole job.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

/// Runs `orange ARGS` against `server`.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(JOB_DEADLINE).run()
}

/// A handlers directory whose `check` handler prints `text` and exits with `code`.
fn handlers(text: &str, code: i32) -> TempDir {
    let dir = TempDir::with_prefix("orange-handlers-").expect("create handlers dir");
    let path = dir.path().join("check");
    std::fs::write(&path, format!("#!/bin/sh\necho '{text}'\nexit {code}\n")).expect("write handler");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod handler");
    dir
}

/// Starts `count` agents `host-00`…; `bad(i)` picks the ones given the failing handlers, `labels(i)`
/// their labels; waits until every one is online.
fn fleet(
    server: &Server,
    count: usize,
    ok: &Path,
    failing: &Path,
    bad: impl Fn(usize) -> bool,
    labels: impl Fn(usize) -> Vec<String>,
) -> Vec<Agent> {
    let mut agents: Vec<Agent> = (0..count)
        .map(|i| {
            let dir: PathBuf = if bad(i) { failing.to_owned() } else { ok.to_owned() };
            let opts = AgentOpts {
                allow_shell: true,
                handlers: Some(dir),
                labels: labels(i),
                ..AgentOpts::default()
            };
            Agent::start(server, &format!("host-{i:02}"), opts)
        })
        .collect();
    for agent in &mut agents {
        agent.wait_online(server, Duration::from_secs(30));
    }
    agents
}

/// The job and results of `orange job get ID --json`.
fn job_report(server: &Server, id: &str, wait: u64) -> (JobView, Vec<JobResult>) {
    let run = orange(server, &["job", "get", id, "--wait", &wait.to_string(), "--json"]);
    run.assert_success();
    let value = run.json();
    let job = serde_json::from_value(value["job"].clone()).unwrap_or_else(|e| panic!("job: {e}\n{run}"));
    let results =
        serde_json::from_value(value["results"].clone()).unwrap_or_else(|e| panic!("results: {e}\n{run}"));
    (job, results)
}

/// The tasks of `results`, each asserted started.
fn started_tasks(server: &Server, results: &[JobResult]) -> Vec<TaskView> {
    results.iter().map(|r| server.task(r.task_id.as_deref().expect("every target was started"))).collect()
}

#[test]
fn fifty_agents_run_a_job_in_a_sliding_window_and_identical_outputs_are_grouped() {
    let server = Server::start(ServerOpts::default());
    let (ok, failing) = (handlers("ok", 0), handlers("disk full", 1));
    let bad = |i: usize| [7, 23, 41].contains(&i);
    let labels = |i: usize| {
        let role = if i < 40 { "role=web" } else { "role=db" };
        let env = if i % 2 == 0 { "env=prod" } else { "env=test" };
        vec![role.to_owned(), env.to_owned()]
    };
    let _agents = fleet(&server, 50, ok.path(), failing.path(), bad, labels);

    let dry = orange(
        &server,
        &["job", "run", "--label", "role=web", "--label", "env=prod", "--dry-run", "--", "true"],
    );
    dry.assert_success();
    let expected: String = (0..40).step_by(2).map(|i| format!("host-{i:02}\n")).collect();
    assert_eq!(dry.stdout, format!("{expected}20 hosts (dry run: nothing sent)\n"), "{dry}");
    let listed = orange(&server, &["job", "list", "--json"]);
    assert_eq!(listed.json()["jobs"], Value::Array(vec![]), "a dry run creates no job\n{listed}");

    let run = orange(&server, &["job", "run", "--all", "--type", "check", "--max-concurrency", "5"]);
    assert_eq!(run.code(), Some(1), "three hosts fail, so the exit status is 1\n{run}");
    assert!(run.stdout.contains("finished on 50 hosts: 47 succeeded, 3 failed\n"), "{run}");
    assert!(run.stdout.contains("\n47 hosts: succeeded (exit 0)\n    ok\n"), "{run}");
    assert!(
        run.stdout
            .contains("\n3 hosts: failed (exit 1)\n    disk full\n  hosts: host-07, host-23, host-41\n"),
        "{run}"
    );
    let job_id = run.stdout.split_whitespace().nth(1).expect("job id in the headline").trim_end_matches(':');

    let (job, results) = job_report(&server, job_id, 0);
    assert_eq!((job.done, job.targets, job.counts.succeeded, job.counts.failed), (true, 50, 47, 3));
    assert_eq!(results.len(), 50);
    assert_eq!(results[7].app_id, "host-07");
    assert_eq!((results[7].state.as_str(), results[7].exit_code), ("failed", Some(1)));
    assert_eq!(
        most_open_at_once(&started_tasks(&server, &results)),
        5,
        "the window is full at the start, never more"
    );

    let all_hosts = orange(&server, &["job", "get", job_id, "--hosts"]);
    all_hosts.assert_success();
    assert!(all_hosts.stdout.contains("host-00, host-01, host-02, host-03"), "{all_hosts}");
}

#[test]
fn max_errors_stops_the_job_and_skips_the_hosts_not_started() {
    let server = Server::start(ServerOpts::default());
    let (ok, failing) = (handlers("ok", 0), handlers("disk full", 1));
    let _agents = fleet(&server, 12, ok.path(), failing.path(), |i| i < 3, |_| Vec::new());

    let argv =
        ["job", "run", "--all", "--type", "check", "--max-concurrency", "1", "--max-errors", "1", "--json"];
    let run = orange(&server, &argv);
    assert_eq!(run.code(), Some(1), "{run}");
    let value = run.json();
    let job: JobView = serde_json::from_value(value["job"].clone()).expect("job");
    let results: Vec<JobResult> = serde_json::from_value(value["results"].clone()).expect("results");
    assert_eq!(job.state.as_str(), "stopped", "{run}");
    assert_eq!((job.counts.failed, job.counts.skipped, job.counts.succeeded), (2, 10, 0), "{run}");
    let states: Vec<&str> = results.iter().map(|r| r.state.as_str()).collect();
    assert_eq!(&states[..3], ["failed", "failed", "skipped"]);
    assert!(results[2..].iter().all(|r| r.state == "skipped" && r.task_id.is_none()), "{run}");
}

#[test]
fn a_paused_job_starts_no_host_until_resumed_and_a_cancelled_one_stops() {
    let server = Server::start(ServerOpts::default());
    let (ok, failing) = (handlers("ok", 0), handlers("disk full", 1));
    let _agents = fleet(&server, 10, ok.path(), failing.path(), |_| false, |_| Vec::new());

    let sent =
        orange(&server, &["job", "send", "--all", "--max-concurrency", "2", "--", "sleep 1; echo done"]);
    sent.assert_success();
    let job_id = sent.stdout.trim().to_owned();
    let paused = orange(&server, &["job", "pause", &job_id]);
    paused.assert_success();
    assert!(paused.stdout.starts_with(&format!("job {job_id}: paused")), "{paused}");
    wait_until(Duration::from_secs(30), "the started hosts to finish", || {
        job_report(&server, &job_id, 0).0.counts.open() == 0
    });
    let (before, _) = job_report(&server, &job_id, 0);
    std::thread::sleep(Duration::from_millis(1500));
    let (after, _) = job_report(&server, &job_id, 0);
    assert_eq!(before.counts, after.counts, "a paused job starts no host");
    assert!(after.counts.waiting >= 6 && after.counts.succeeded <= 4, "{:?}", after.counts);

    let resumed = orange(&server, &["job", "resume", &job_id]);
    assert_eq!(resumed.stdout, format!("job {job_id}: running\n"), "{resumed}");
    let (done, results) = job_report(&server, &job_id, 60);
    assert_eq!((done.state.as_str(), done.counts.succeeded), ("finished", 10), "{:?}", done);
    assert!(results.iter().all(|r| r.stdout == "done\n"));

    let sent = orange(&server, &["job", "send", "--all", "--max-concurrency", "3", "--", "sleep 60"]);
    let job_id = sent.stdout.trim().to_owned();
    wait_until(Duration::from_secs(30), "three hosts running", || {
        job_report(&server, &job_id, 0).0.counts.running == 3
    });
    let cancelled = orange(&server, &["job", "cancel", &job_id]);
    assert_eq!(cancelled.stdout, format!("job {job_id}: cancelled; 3 hosts still stopping\n"), "{cancelled}");
    let (job, _) = job_report(&server, &job_id, 60);
    assert!(job.done, "{job:?}");
    assert_eq!((job.counts.cancelled, job.counts.skipped), (3, 7), "{:?}", job.counts);
}
