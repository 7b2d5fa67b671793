//! `orange server --store postgres://...`: the fleet kept in PostgreSQL (a server the tests
//! start, `support::postgres`), with real servers, real agents and the real CLI. Two servers on
//! one database serve one fleet; a restart loses nothing; a database the server cannot use is
//! a clear error at start.

use std::time::Duration;

use crate::support::postgres::cluster;
use crate::support::{Agent, AgentOpts, Server, ServerOpts, cli_with};

/// Server options keeping the fleet in database `name` of the test server.
fn on_database(name: &str) -> ServerOpts {
    ServerOpts {
        poll_window: Some(2),
        extra_args: vec!["--store".into(), cluster().url(name)],
        ..ServerOpts::default()
    }
}

#[test]
fn a_server_on_postgresql_runs_a_real_agents_task_and_a_restart_keeps_it() {
    let database = cluster().create_database();
    let mut server = Server::start(on_database(&database));
    let _agent = Agent::start_online(&server, "pg1", AgentOpts::shell());
    let run = server.operator(&["task", "run", "--appid", "pg1", "--json", "--", "echo from-postgres"]).run();
    run.assert_success();
    let id = run.json()["task_id"].as_str().expect("a task id").to_owned();
    server.kill();
    server.start_again();
    let got = server.operator(&["task", "get", &id, "--json"]).run();
    got.assert_success();
    assert_eq!(got.json()["status"], "succeeded", "{got}");
    assert_eq!(got.json()["stdout"], "from-postgres\n", "{got}");
}

#[test]
fn two_servers_on_one_database_serve_one_fleet_with_the_same_secrets() {
    let database = cluster().create_database();
    let first = Server::start(on_database(&database));
    let second = Server::start(on_database(&database));
    assert_eq!(first.token, second.token, "the admin token is the database's");
    let _agent = Agent::start_online(&first, "pg2", AgentOpts::shell());
    // Enqueued through the server the agent does not poll: the task is in the database the
    // agent's server reads at its next poll.
    let run = second.operator(&["task", "run", "--appid", "pg2", "--", "echo through-the-other"]).run();
    run.assert_success();
    assert_eq!(run.stdout, "through-the-other\n", "{run}");
    let listed = first.operator(&["agents", "--json"]).run();
    listed.assert_success();
    assert!(listed.stdout.contains("\"pg2\""), "{listed}");
}

/// Runs `orange server` on database `url` with a fresh data directory and returns what it said
/// as it stopped; it must stop by itself.
fn server_refusing(args: &[&str], env: &[(&str, &str)]) -> String {
    let data = tempfile::TempDir::with_prefix("orange-pg-refused-").expect("a temp dir");
    let mut all =
        vec!["server", "--data", data.path().to_str().expect("a UTF-8 path"), "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let run = cli_with(&all, env, Duration::from_secs(60));
    assert_ne!(run.code(), Some(0), "the server must refuse to start\n{run}");
    assert!(run.code().is_some(), "the server must stop by itself\n{run}");
    run.stderr.clone()
}

#[test]
fn a_database_the_server_cannot_use_is_a_clear_error_at_start() {
    let database = cluster().create_database();
    let url = cluster().url(&database);
    let with_password = url.replacen("orange@", "orange:s3cret@", 1);
    let said = server_refusing(&["--store", &with_password], &[]);
    assert!(said.contains("must not carry a password") && !said.contains("s3cret"), "{said}");

    let missing = cluster().url("no_such_database");
    let said = server_refusing(&["--store", &missing], &[]);
    assert!(said.contains("cannot connect to the database") && said.contains("no_such_database"), "{said}");

    // A schema written by a newer orange.
    let mut client = cluster().connect(&database);
    client
        .batch_execute(
            "CREATE TABLE orange_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO orange_schema (version) VALUES (999);",
        )
        .expect("mark the schema newer");
    let said = server_refusing(&["--store", &url], &[]);
    assert!(said.contains("schema version 999, newer than this orange"), "{said}");
}

#[test]
fn servers_starting_together_migrate_the_schema_once() {
    let database = cluster().create_database();
    let servers: Vec<Server> = std::thread::scope(|scope| {
        let starting: Vec<_> =
            (0..3).map(|_| scope.spawn(|| Server::start(on_database(&database)))).collect();
        starting.into_iter().map(|s| s.join().expect("a server started")).collect()
    });
    let mut client = cluster().connect(&database);
    let versions: Vec<i32> = client
        .query("SELECT version FROM orange_schema", &[])
        .expect("read the schema")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1], "one row per version");
    assert!(servers.iter().all(|s| s.token == servers[0].token), "one admin token for all");
}
