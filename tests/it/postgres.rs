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
        .query("SELECT version FROM orange_schema ORDER BY version", &[])
        .expect("read the schema")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2], "one row per version");
    assert!(servers.iter().all(|s| s.token == servers[0].token), "one admin token for all");
}

/// Two servers with a long poll window on one new database, and a real agent parked on the
/// first.
fn two_servers_and_a_parked_agent(app_id: &str) -> (String, Server, Server, Agent) {
    let database = cluster().create_database();
    let parked = |name: &str| ServerOpts { poll_window: Some(20), ..on_database(name) };
    let first = Server::start(parked(&database));
    let second = Server::start(parked(&database));
    let agent = Agent::start_online(&first, app_id, AgentOpts::shell());
    (database, first, second, agent)
}

/// `task run` through `server` for `app_id`; asserts it succeeded within `within` (shorter than
/// both the poll window and the re-check period, so only a relayed wake-up gets it there).
fn runs_within(server: &Server, app_id: &str, within: Duration) {
    let started = std::time::Instant::now();
    let run = server.operator(&["task", "run", "--appid", app_id, "--", "echo woken"]).run();
    run.assert_success();
    assert_eq!(run.stdout, "woken\n", "{run}");
    assert!(
        started.elapsed() < within,
        "took {:?}: the wake-up did not cross servers\n{run}",
        started.elapsed()
    );
}

#[test]
fn an_agent_parked_on_one_server_is_woken_by_an_enqueue_through_another() {
    let (_database, _first, second, _agent) = two_servers_and_a_parked_agent("pg3");
    for _ in 0..3 {
        runs_within(&second, "pg3", Duration::from_secs(5));
    }
}

#[test]
fn a_server_that_lost_its_listening_connection_hears_the_others_again() {
    let (database, _first, second, _agent) = two_servers_and_a_parked_agent("pg4");
    runs_within(&second, "pg4", Duration::from_secs(5));
    let mut admin = cluster().connect("postgres");
    let ended: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE query = 'LISTEN orange_wake' AND datname = $1",
            &[&database],
        )
        .expect("end the listening connections")
        .get(0);
    assert_eq!(ended, 2, "each server listens on one connection");
    // The listeners connect again within a second or two; the wake-up then crosses again.
    crate::support::wait_until(Duration::from_secs(20), "the servers listen again", || {
        let listening: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN orange_wake' AND datname = $1",
                &[&database],
            )
            .expect("count the listening connections")
            .get(0);
        listening == 2
    });
    runs_within(&second, "pg4", Duration::from_secs(5));
}

#[test]
fn a_signed_request_used_on_one_server_is_refused_by_another() {
    use crate::support::{GoAgent, REPORT_TASK, go_report, replay};
    let database = cluster().create_database();
    let first = Server::start(on_database(&database));
    let second = Server::start(on_database(&database));
    let agent = GoAgent::new(&first, "pg5", "s5").registered();
    let id = first.enqueue(&["pg5"], "PING", "once")[0].task_id.clone();
    let task = agent.take(&id);
    let doing = go_report(&task, "doing", "running").to_string();
    let captured = agent.v2_request(REPORT_TASK, "s5", doing.as_bytes());
    assert_eq!(replay(first.addr, &captured).json()["code"], 0, "the first use is answered");
    let refused = replay(second.addr, &captured).json();
    assert_eq!(refused["code"], 1, "the same request through the other server\n{refused}");
    assert!(refused["message"].as_str().unwrap_or_default().contains("already used"), "{refused}");
    let done = go_report(&task, "success", "finished").to_string();
    let captured = agent.v2_request(REPORT_TASK, "s5", done.as_bytes());
    assert_eq!(replay(second.addr, &captured).json()["code"], 0, "a new report through the other server");
    assert_eq!(replay(first.addr, &captured).json()["code"], 1, "and its replay to the first");
}

#[test]
fn an_operator_added_or_rotated_through_one_server_is_known_to_another() {
    let database = cluster().create_database();
    let first = Server::start(on_database(&database));
    let second = Server::start(on_database(&database));
    let whoami = |server: &Server, token: &str| {
        server.operator(&["operator", "whoami"]).env("ORANGE_TOKEN", token).run()
    };
    // The second server reads its token index before the operator exists.
    let before = whoami(&second, "orange_op_not_a_real_token");
    assert_ne!(before.code(), Some(0), "{before}");
    std::thread::sleep(Duration::from_millis(1100));
    let add = first.operator(&["operator", "add", "alice", "--role", "viewer"]).run();
    add.assert_success();
    let token = add.stdout.trim().to_owned();
    let me = whoami(&second, &token);
    me.assert_success();
    assert_eq!(me.stdout, "alice viewer all hosts\n");
    std::thread::sleep(Duration::from_millis(1100));
    let rotate = first.operator(&["operator", "rotate", "alice"]).run();
    rotate.assert_success();
    let rotated = rotate.stdout.trim().to_owned();
    whoami(&second, &rotated).assert_success();
    assert_ne!(whoami(&second, &token).code(), Some(0), "the old token is refused on the other server too");
}

#[test]
fn wrong_admin_tokens_spread_over_two_servers_are_limited_as_one_source() {
    use orange::protocol::limits::MAX_FAILURES_PER_MINUTE;
    let database = cluster().create_database();
    let first = Server::start(on_database(&database));
    let second = Server::start(on_database(&database));
    // The count is per minute: start early in one, so that the guesses all fall in it.
    while chrono::Utc::now().timestamp() % 60 >= 40 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let guess =
        |server: &Server, n: u32| server.admin_raw("GET", "/api/v1/agents", Some(&format!("guess-{n}")), b"");
    let on_first = MAX_FAILURES_PER_MINUTE * 2 / 3;
    for n in 0..MAX_FAILURES_PER_MINUTE {
        let server = if n < on_first { &first } else { &second };
        assert_eq!(guess(server, n).status, 401, "guess {n}: each server alone is below the limit");
    }
    // Within a few exchanges (one a second), each server counts the other's guesses too. The
    // second's own count stays far below the limit meanwhile (at most 10 + 8).
    let limited = (0..8).find_map(|n| {
        std::thread::sleep(Duration::from_millis(700));
        let response = guess(&second, 100 + n);
        (response.status != 401).then_some(response)
    });
    let limited = limited.expect("the second server limits the source within 6 s");
    assert_eq!(limited.status, 429, "{}", limited.text());
    assert!(limited.text().contains("too many wrong admin tokens from 127.0.0.1"), "{}", limited.text());
    let right = second.admin_raw("GET", "/api/v1/agents", Some(&second.token.clone()), b"");
    assert_eq!(right.status, 200, "the right token is never refused: {}", right.text());
}

#[test]
fn a_new_poll_through_another_server_ends_the_agents_older_parked_poll() {
    use crate::support::register_sim;
    use orange::client::{AgentClient, PollAnswer};
    let database = cluster().create_database();
    let parked = ServerOpts { poll_window: Some(20), ..on_database(&database) };
    let (first, second) = (Server::start(parked.clone()), Server::start(parked));
    let on_first = register_sim(&first, "pg7");
    let on_second = AgentClient::new(&second.url, "pg7", crate::support::SIM_SECRET);
    std::thread::scope(|scope| {
        let old = scope.spawn(|| {
            let started = std::time::Instant::now();
            (on_first.poll(1).expect("the first poll"), started.elapsed())
        });
        // The agent's old connection is gone (a restart, the balancer): its next poll parks on
        // the other server.
        std::thread::sleep(Duration::from_millis(500));
        let new = scope.spawn(|| on_second.poll(1).expect("the second poll"));
        let (answer, took) = old.join().expect("the first poll's thread");
        assert!(matches!(answer, PollAnswer::Idle(_)), "{answer:?}");
        assert!(took < Duration::from_secs(10), "the older poll stayed parked {took:?}");
        // A task enqueued through the first server goes to the poll parked on the second.
        let id = first.enqueue(&["pg7"], "ping", "")[0].task_id.clone();
        match new.join().expect("the second poll's thread") {
            PollAnswer::Task(task) => assert_eq!(task.task_id, id),
            other => panic!("the newer poll got {other:?}"),
        }
    });
}
