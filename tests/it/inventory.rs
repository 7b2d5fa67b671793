//! The fleet inventory with real processes: host facts a real `orange agent` reports, shown by
//! `orange agents`; the `--label` and `--online` filters over several agents; oversize facts
//! refused with a clear message; an original-protocol register without facts.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use orange::client::{AgentClient, ClientError, Enrollment};
use orange::protocol::RegisterRequest;
use orange::protocol::facts::HostFacts;
use serde_json::Value;

use crate::support::{Agent, AgentOpts, BASE_SECRET, GoAgent, Run, Server, ServerOpts, wait_until};

/// `orange agents ARGS --json` against `server`; the agents by app id.
fn agents_json(server: &Server, args: &[&str]) -> BTreeMap<String, Value> {
    let run = agents_cli(server, args, true);
    run.assert_success();
    let list = run.json()["agents"].as_array().cloned().unwrap_or_else(|| panic!("no agent list\n{run}"));
    list.into_iter().map(|a| (a["app_id"].as_str().unwrap_or_default().to_owned(), a)).collect()
}

fn agents_cli(server: &Server, args: &[&str], json: bool) -> Run {
    let mut all = vec!["agents"];
    all.extend_from_slice(args);
    if json {
        all.push("--json");
    }
    server.operator(&all).run()
}

fn ids(agents: &BTreeMap<String, Value>) -> Vec<&str> {
    agents.keys().map(String::as_str).collect()
}

/// What `uname FLAG` prints on this machine.
fn uname(flag: &str) -> String {
    let out = Command::new("uname").arg(flag).output().expect("run uname");
    assert!(out.status.success(), "uname {flag} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `KEY` of /etc/os-release, unquoted, read here independently of the agent.
fn os_release(key: &str) -> Option<String> {
    let text = std::fs::read_to_string("/etc/os-release").ok()?;
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}=")).map(|v| v.trim_matches('"').to_owned()))
}

fn labelled(labels: &[&str]) -> AgentOpts {
    AgentOpts { labels: labels.iter().map(|l| l.to_string()).collect(), ..AgentOpts::default() }
}

#[test]
fn a_real_agents_facts_show_in_orange_agents() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "w1", labelled(&["role=web"]));

    let agents = agents_json(&server, &[]);
    let w1 = &agents["w1"];
    let facts = &w1["facts"];
    assert_eq!(facts["kernel"], uname("-r"), "{w1}");
    assert_eq!(facts["arch"], uname("-m"), "{w1}");
    assert_eq!(facts["os_name"].as_str().map(str::to_owned), os_release("NAME"), "{w1}");
    assert_eq!(facts["os_version"].as_str().map(str::to_owned), os_release("VERSION_ID"), "{w1}");
    assert_eq!(facts["hostname"], uname("-n"), "{w1}");
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .expect("read /proc/stat")
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
        .expect("btime in /proc/stat");
    assert_eq!(facts["boot_time"], btime, "{w1}");
    let uptime = facts["uptime_secs"].as_i64().unwrap_or(-1);
    let expected = chrono::Utc::now().timestamp() - btime;
    assert!(
        (expected - 120..=expected).contains(&uptime),
        "uptime {uptime}, expected about {expected}: {w1}"
    );
    for ip in facts["ips"].as_array().cloned().unwrap_or_default() {
        let ip: std::net::IpAddr = ip.as_str().unwrap_or("").parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
        assert!(!ip.is_loopback(), "loopback address reported: {w1}");
    }
    assert_eq!(w1["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(w1["labels"], serde_json::json!({"role": "web"}));

    let table = agents_cli(&server, &[], false);
    table.assert_success();
    let header = table.stdout.lines().next().unwrap_or_default().to_owned();
    for column in ["UPTIME", "HOSTNAME", "OS", "KERNEL", "ARCH", "IPS", "VERSION", "LABELS"] {
        assert!(header.split_whitespace().any(|c| c == column), "no {column} column\n{table}");
    }
    let row =
        table.stdout.lines().find(|l| l.starts_with("w1 ")).unwrap_or_else(|| panic!("no w1 row\n{table}"));
    assert!(row.contains(&uname("-r")) && row.contains(&uname("-m")) && row.contains("role=web"), "{table}");
}

#[test]
fn label_and_online_filters_pick_agents() {
    let server = Server::start(ServerOpts::default());
    // Goes silent first, so it is offline by the end of the test (seen more than 90 s ago).
    let mut gone = Agent::start_online(&server, "gone", labelled(&["role=web", "env=prod"]));
    gone.kill();
    let mut running = [
        Agent::start(&server, "web-prod", labelled(&["role=web", "env=prod"])),
        Agent::start(&server, "web-dev", labelled(&["role=web", "env=dev"])),
        Agent::start(&server, "db-prod", labelled(&["role=db", "env=prod"])),
    ];
    for agent in &mut running {
        agent.wait_online(&server, Duration::from_secs(30));
    }

    assert_eq!(ids(&agents_json(&server, &["--label", "role=web"])), ["gone", "web-dev", "web-prod"]);
    assert_eq!(
        ids(&agents_json(&server, &["--label", "role=web", "--label", "env=prod"])),
        ["gone", "web-prod"]
    );
    assert_eq!(ids(&agents_json(&server, &["--label", "env=prod", "--label", "role=db"])), ["db-prod"]);
    assert!(agents_json(&server, &["--label", "role=cache"]).is_empty());
    assert_eq!(ids(&agents_json(&server, &[])), ["db-prod", "gone", "web-dev", "web-prod"]);

    // The filter runs on the server: the API itself answers only the matching agents.
    let list: orange::protocol::admin::AgentList =
        server.admin().get("/api/v1/agents?label=env%3Dprod&label=role%3Dweb").expect("filtered list");
    assert_eq!(list.agents.iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), ["gone", "web-prod"]);
    let bad = server.admin().get::<Value>("/api/v1/agents?label=role").unwrap_err();
    assert!(
        matches!(&bad, ClientError::Api { status: 400, message } if message == "label \"role\" is not k=v"),
        "{bad}"
    );

    wait_until(Duration::from_secs(150), "agent gone to be offline", || {
        server.agent("gone").is_some_and(|a| !a.online)
    });
    assert_eq!(ids(&agents_json(&server, &["--online"])), ["db-prod", "web-dev", "web-prod"]);
    assert_eq!(ids(&agents_json(&server, &["--online", "--label", "env=prod"])), ["db-prod", "web-prod"]);
    let list: orange::protocol::admin::AgentList =
        server.admin().get("/api/v1/agents?online=true&label=role%3Dweb").expect("filtered list");
    assert_eq!(list.agents.iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), ["web-dev", "web-prod"]);
}

fn facts_with(ips: usize) -> HostFacts {
    HostFacts {
        kernel: Some("6.1.0-test".into()),
        arch: Some("x86_64".into()),
        ips: (0..ips).map(|i| format!("10.0.{}.{}", i / 250, i % 250 + 1)).collect(),
        ..HostFacts::default()
    }
}

#[test]
fn oversize_facts_are_refused_and_store_nothing() {
    let server = Server::start(ServerOpts::default());
    let key = Enrollment::Key(BASE_SECRET.into());

    // A register whose facts break a limit is refused as a whole: no agent is stored.
    let client = AgentClient::new(&server.url, "big", "big-secret");
    let request = |facts| RegisterRequest {
        app_id: "big".into(),
        secret: "big-secret".into(),
        facts: Some(facts),
        ..RegisterRequest::default()
    };
    match client.register(&request(facts_with(65)), &key) {
        Err(ClientError::Refused(message)) => assert_eq!(message, "facts: 65 IP addresses; the limit is 64"),
        other => panic!("oversize facts not refused: {other:?}"),
    }
    assert!(server.agent("big").is_none(), "a refused register stored an agent");

    // Within the limits it registers, with its facts.
    client.register(&request(facts_with(64)), &key).expect("register with 64 addresses");
    let stored = server.agent("big").expect("registered").facts.expect("facts stored");
    assert_eq!(stored.facts, facts_with(64));

    // Facts sent again later are refused the same way, and the stored ones stay.
    let long_kernel = HostFacts { kernel: Some("k".repeat(300)), ..facts_with(1) };
    match client.send_facts(&long_kernel) {
        Err(ClientError::Refused(message)) => {
            assert_eq!(message, "facts: kernel must be at most 256 printable characters");
        }
        other => panic!("oversize facts not refused: {other:?}"),
    }
    let bad_ip = HostFacts { ips: vec!["10.0.0.1".into(), "999.1.1.1".into()], ..facts_with(0) };
    match client.send_facts(&bad_ip) {
        Err(ClientError::Refused(message)) => {
            assert_eq!(message, "facts: \"999.1.1.1\" is not an IP address")
        }
        other => panic!("a bad address was not refused: {other:?}"),
    }
    assert_eq!(server.agent("big").and_then(|a| a.facts).map(|f| f.facts), Some(facts_with(64)));

    // Good facts replace the old ones.
    client.send_facts(&facts_with(2)).expect("send facts");
    assert_eq!(server.agent("big").and_then(|a| a.facts).map(|f| f.facts), Some(facts_with(2)));
}

#[test]
fn an_original_register_without_facts_still_works() {
    let server = Server::start(ServerOpts::default());
    // The app id was an orange agent's before: its facts go when a client without facts registers.
    let orange = AgentClient::new(&server.url, "legacy-1", "s1");
    let request = RegisterRequest {
        app_id: "legacy-1".into(),
        secret: "s1".into(),
        facts: Some(facts_with(1)),
        ..RegisterRequest::default()
    };
    orange.register(&request, &Enrollment::Key(BASE_SECRET.into())).expect("register with facts");
    assert!(server.agent("legacy-1").and_then(|a| a.facts).is_some());
    let go = GoAgent::new(&server, "legacy-1", "s1");
    let envelope = go.register();
    assert_eq!(envelope["code"], 0, "{envelope}");
    assert_eq!(envelope["message"], "registration successful");
    assert_eq!(go.ping()["data"], "pong");
    let agents = agents_json(&server, &[]);
    let legacy = &agents["legacy-1"];
    assert_eq!(legacy["facts"], Value::Null, "{legacy}");
    assert_eq!(legacy["online"], true, "{legacy}");
    let table = agents_cli(&server, &["--online"], false);
    table.assert_success();
    assert!(table.stdout.lines().any(|l| l.starts_with("legacy-1 ")), "{table}");
}
