//! `orange store copy` with the real binary: a fleet a real agent worked in moves from a data
//! directory into PostgreSQL (and from a backup file into another database), a server started on
//! the database serves it with the same admin token, and it moves back into a new data
//! directory; a destination that holds anything is refused.

use std::path::Path;
use std::time::Duration;

use crate::support::postgres::cluster;
use crate::support::{Agent, AgentOpts, Server, ServerOpts, cli};

/// A server on `data` (its own fresh data directory if `None`), keeping the fleet in `store`
/// when given.
fn server(data: &Path, store: Option<&str>) -> Server {
    let extra_args = store.map(|url| vec!["--store".to_owned(), url.to_owned()]).unwrap_or_default();
    Server::start(ServerOpts { data_dir: Some(data.to_owned()), extra_args, ..ServerOpts::poll_window(2) })
}

/// `orange store copy --from FROM --to TO --json`, which must succeed; its report.
fn copy(from: &str, to: &str) -> serde_json::Value {
    let run = cli(&["store", "copy", "--from", from, "--to", to, "--json"]);
    run.assert_success();
    run.json()
}

/// Asserts that `server` has the task `id` with its output, the agent, and the admin token `token`.
fn serves_the_fleet(server: &Server, id: &str, token: &str) {
    assert_eq!(server.token, token, "the admin token came with the fleet");
    let got = server.operator(&["task", "get", id, "--json"]).run();
    got.assert_success();
    assert_eq!(got.json()["status"], "succeeded", "{got}");
    assert_eq!(got.json()["stdout"], "copied-along\n", "{got}");
    let agents = server.operator(&["agents", "--json"]).run();
    agents.assert_success();
    assert!(agents.stdout.contains("\"copy1\""), "{agents}");
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

#[test]
fn a_fleet_moves_from_a_data_directory_to_postgresql_and_back() {
    let temp = tempfile::tempdir().expect("a temp dir");
    let first_data = temp.path().join("first");
    let mut first = server(&first_data, None);
    let mut agent = Agent::start_online(&first, "copy1", AgentOpts::shell());
    let run = first.operator(&["task", "run", "--appid", "copy1", "--json", "--", "echo copied-along"]).run();
    run.assert_success();
    let id = run.json()["task_id"].as_str().expect("a task id").to_owned();
    let backup = temp.path().join("orange.bak");
    first.operator(&["server", "backup", "--to", text(&backup)]).run().assert_success();

    let url = cluster().url(&cluster().create_database());
    let refused = cli(&["store", "copy", "--from", text(&first_data), "--to", &url]);
    assert_ne!(refused.code(), Some(0), "the source's server still runs\n{refused}");
    assert!(refused.stderr.contains("in use by another orange server"), "{refused}");

    agent.stop(Duration::from_secs(30));
    first.terminate(Duration::from_secs(30));
    let report = copy(text(&first_data), &url);
    assert!(report["trees"]["tasks"].as_u64() > Some(0), "{report}");
    // The admin token; the harness gives the enrollment key by flag, so no file holds it.
    assert_eq!(report["secrets"], 1, "{report}");
    let on_pg = server(&temp.path().join("pg-data"), Some(&url));
    serves_the_fleet(&on_pg, &id, &first.token);

    let again = cli(&["store", "copy", "--from", text(&first_data), "--to", &url]);
    assert_ne!(again.code(), Some(0), "{again}");
    assert!(again.stderr.contains("is not empty"), "a database holding a fleet is refused\n{again}");

    let from_backup = cluster().url(&cluster().create_database());
    let report = copy(text(&backup), &from_backup);
    assert_eq!(report["secrets"], 1, "{report}");
    let on_backup = server(&temp.path().join("backup-data"), Some(&from_backup));
    serves_the_fleet(&on_backup, &id, &first.token);

    let back = temp.path().join("back");
    let report = copy(&url, text(&back));
    assert_eq!(report["secrets"], 1, "{report}");
    drop(on_pg);
    let back_server = server(&back, None);
    serves_the_fleet(&back_server, &id, &first.token);
}
