//! A job never waits on a down host: hosts offline when the job starts end `offline` at once
//! (named, not errors) unless `--queue`; a host whose agent goes silent mid-job ends after
//! `--host-timeout`, while a live agent's long task is never cut. Real server, real agents,
//! real CLI.

use std::time::{Duration, Instant};

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts, wait_until};

/// Deadline of a CLI call that waits for a whole job; a job that waits on a down host would
/// wait out the 24-hour TTL and be killed here.
const JOB_DEADLINE: Duration = Duration::from_secs(60);

fn fleet(server: &Server, names: &[&str]) -> Vec<Agent> {
    names.iter().map(|name| Agent::start_online(server, name, AgentOpts::shell())).collect()
}

fn job_run(server: &Server, args: &[&str]) -> Run {
    let mut all = vec!["job", "run"];
    all.extend_from_slice(args);
    server.operator(&all).deadline(JOB_DEADLINE).run()
}

#[test]
fn job_run_all_with_one_agent_stopped_returns_at_once_naming_it() {
    let server = Server::start(ServerOpts::default());
    let mut agents = fleet(&server, &["web-1", "web-2", "web-3"]);
    agents[1].stop(Duration::from_secs(20));
    let dry = job_run(&server, &["--all", "--dry-run", "--", "echo", "ok"]);
    assert_eq!(dry.stdout, "web-1\nweb-2 (offline)\nweb-3\n3 hosts (dry run: nothing sent)\n", "{dry}");

    let run = job_run(&server, &["--all", "--max-errors", "0", "--", "echo", "ok"]);
    assert_eq!(run.code(), Some(1), "a host did not run it\n{run}");
    assert!(run.elapsed < Duration::from_secs(20), "job run took {:?}\n{run}", run.elapsed);
    assert!(run.stdout.contains("2 succeeded, 1 offline"), "{run}");
    let offline_group = run.stdout.split("\n\n").find(|block| block.contains(": offline")).unwrap_or("");
    assert!(offline_group.contains("web-2") && !offline_group.contains("web-1"), "names the host\n{run}");
    // Not an error: --max-errors 0 did not stop the job.
    assert!(run.stdout.contains(": finished on 3 hosts"), "{run}");
}

#[test]
fn job_run_with_queue_waits_for_a_stopped_agent() {
    let server = Server::start(ServerOpts::default());
    let mut agents = fleet(&server, &["web-1", "web-2"]);
    agents[1].stop(Duration::from_secs(20));
    let run = server
        .operator(&["job", "run", "--all", "--queue", "--host-timeout", "1", "--", "echo", "ok"])
        .deadline(JOB_DEADLINE)
        .live();
    wait_until(Duration::from_secs(20), "web-1's task done", || {
        server.tasks().iter().any(|t| t.app_id == "web-1" && t.status.as_str() == "succeeded")
    });
    // Longer than the host timeout: a queued task of a --queue job waits for its agent.
    std::thread::sleep(Duration::from_secs(3));
    agents[1].restart();
    let (run, _) = run.finish(JOB_DEADLINE);
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(run.stdout.contains("2 succeeded"), "{run}");
}

#[test]
fn a_host_silent_mid_job_ends_after_the_host_timeout_and_a_live_long_task_is_not_cut() {
    let server = Server::start(ServerOpts::default());
    let mut agents = fleet(&server, &["live-1", "dead-1"]);
    let run = server
        .operator(&["job", "run", "--all", "--host-timeout", "3", "--", "sleep 8; echo done"])
        .deadline(JOB_DEADLINE)
        .live();
    wait_until(Duration::from_secs(20), "both tasks running", || {
        let tasks = server.tasks();
        tasks.len() == 2 && tasks.iter().all(|t| t.status.as_str() == "running")
    });
    agents[1].kill();
    let killed = Instant::now();
    wait_until(Duration::from_secs(30), "the silent host's task ended", || {
        server.tasks().iter().any(|t| t.app_id == "dead-1" && t.status.as_str() == "lost")
    });
    let after = killed.elapsed();
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(15),
        "lost {after:?} after the kill"
    );
    let (run, _) = run.finish(JOB_DEADLINE);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stdout.contains("1 succeeded, 1 lost"), "{run}");
    assert!(run.stdout.contains("done") && run.stdout.contains("dead-1"), "{run}");
    let live = server.tasks().into_iter().find(|t| t.app_id == "live-1").expect("live-1's task");
    assert_eq!(live.status.as_str(), "succeeded", "a live agent's 8 s task outlives the 3 s host timeout");
}
