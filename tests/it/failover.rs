//! Three `orange server` processes on one PostgreSQL database behind a TCP balancer, with 50
//! real agents and the CLI going through the balancer: a job to every agent finishes while one
//! server is killed with SIGKILL in the middle of it, and no task runs twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::postgres::cluster;
use crate::support::{Agent, AgentOpts, Balancer, Server, ServerOpts, cli_with, wait_until};

/// Agents in the fleet.
const AGENTS: usize = 50;

/// How long the whole job may take, many times what it needs.
const JOB_DEADLINE: Duration = Duration::from_secs(240);

/// The CLI through the balancer, as operator of `server`'s fleet.
fn through(balancer: &Balancer, server: &Server, args: &[&str]) -> Value {
    let url = balancer.url();
    let at = args.iter().position(|a| *a == "--").unwrap_or(args.len());
    let mut all = args[..at].to_vec();
    all.extend(["--server", url.as_str()]);
    all.extend_from_slice(&args[at..]);
    let run = cli_with(&all, &[("ORANGE_TOKEN", server.token.as_str())], Duration::from_secs(60));
    run.assert_success();
    run.json()
}

/// Each line of `path` (one per run of a task) and how many times it appears.
fn runs(path: &Path) -> BTreeMap<String, usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().fold(BTreeMap::new(), |mut counts, line| {
        *counts.entry(line.to_owned()).or_default() += 1;
        counts
    })
}

#[test]
fn a_job_to_fifty_agents_finishes_when_one_of_three_servers_is_killed_in_the_middle() {
    let database = cluster().create_database();
    let opts = || ServerOpts {
        poll_window: Some(5),
        extra_args: vec!["--store".into(), cluster().url(&database)],
        ..ServerOpts::default()
    };
    let mut servers: Vec<Server> = (0..3).map(|_| Server::start(opts())).collect();
    let balancer = Balancer::start(servers.iter().map(|s| s.addr).collect());
    let agents: Vec<Agent> = (0..AGENTS)
        .map(|i| {
            let opts = AgentOpts {
                server_url: Some(balancer.url()),
                labels: vec!["fleet=failover".into()],
                ..AgentOpts::shell()
            };
            Agent::start(&servers[0], &format!("fo-{i:02}"), opts)
        })
        .collect();
    wait_until(Duration::from_secs(60), "every agent online", || {
        let listed = through(&balancer, &servers[0], &["agents", "--json"]);
        let list = listed.get("agents").unwrap_or(&listed).as_array().cloned().unwrap_or_default();
        list.iter().filter(|a| a["online"] == true).count() == AGENTS
    });

    let marks = tempfile::TempDir::with_prefix("orange-failover-").expect("a temp dir");
    let runs_file = marks.path().join("runs");
    let command = format!("echo \"$ORANGE_TASK_ID\" >> '{}'; sleep 1", runs_file.display());
    let sent = through(
        &balancer,
        &servers[0],
        &["job", "send", "--label", "fleet=failover", "--max-concurrency", "10", "--json", "--", &command],
    );
    let job_id = sent["job_id"].as_str().or(sent["job"]["job_id"].as_str()).expect("a job id").to_owned();

    // Kill one server once a fifth of the fleet has run.
    wait_until(Duration::from_secs(120), "a fifth of the job done", || runs(&runs_file).len() >= AGENTS / 5);
    servers[1].kill();
    let at_kill = runs(&runs_file).len();
    assert!(at_kill < AGENTS, "the server died in the middle of the job ({at_kill} of {AGENTS} had run)");

    let started = Instant::now();
    let job = loop {
        let job = through(&balancer, &servers[0], &["job", "get", &job_id, "--json"]);
        let job = job.get("job").cloned().unwrap_or(job);
        if job["done"] == true || started.elapsed() > JOB_DEADLINE {
            break job;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(job["state"], "finished", "the job finished after a server died\n{job:#}");
    assert_eq!(job["counts"]["succeeded"], AGENTS, "every target succeeded\n{job:#}");
    let ran = runs(&runs_file);
    assert_eq!(ran.len(), AGENTS, "one task per agent ran\n{ran:?}");
    let twice: Vec<_> = ran.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "tasks that ran more than once: {twice:?}");
    drop(agents);
}
