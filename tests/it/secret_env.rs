//! `--secret-env NAME`: the value comes from the CLI's own environment, reaches the command, and
//! is shown nowhere (task get, job get, the audit, the server's log) and kept out of the database
//! once the task has ended (only the write-ahead log may hold it until its next checkpoint).

use std::time::Duration;

use orange::server::store::WAL_DIR;

use crate::support::{Agent, AgentOpts, Server, ServerOpts};

const SECRET: &str = "s3cr3t-value-4711";

#[test]
fn a_secret_env_reaches_the_command_is_shown_nowhere_and_left_out_of_the_database() {
    let env = vec![("RUST_LOG".to_owned(), "debug".to_owned())];
    let server = Server::start(ServerOpts { env, ..ServerOpts::default() });
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let deadline = Duration::from_secs(60);
    let args = [
        "task",
        "run",
        "--appid",
        "web-1",
        "--secret-env",
        "API_KEY",
        "--env",
        "A=b",
        "--json",
        "--",
        "echo ${#API_KEY} $A",
    ];
    let run = server.operator(&args).env("API_KEY", SECRET).deadline(deadline).run();
    run.assert_success();
    let task_id = run.json()["task_id"].as_str().map(str::to_owned).unwrap_or_default();
    assert_eq!(run.json()["stdout"], format!("{} b\n", SECRET.len()), "{run}");

    let shown = server.operator(&["task", "get", &task_id, "--json"]).deadline(deadline).run();
    shown.assert_success();
    assert_eq!(shown.json()["secret_env"], serde_json::json!(["API_KEY"]), "{shown}");
    assert_eq!(
        shown.json()["env"],
        serde_json::json!({"A": "b"}),
        "an ended task keeps no secret value\n{shown}"
    );

    let job =
        ["job", "run", "--appid", "web-1", "--secret-env", "API_KEY", "--json", "--", "echo ${#API_KEY}"];
    let run = server.operator(&job).env("API_KEY", SECRET).deadline(deadline).run();
    run.assert_success();
    assert_eq!(run.json()["results"][0]["stdout"], format!("{}\n", SECRET.len()), "{run}");
    assert_eq!(run.json()["job"]["secret_env"], serde_json::json!(["API_KEY"]), "{run}");
    let retry_id = run.json()["job"]["job_id"].as_str().map(str::to_owned).unwrap_or_default();
    let retry = server.operator(&["job", "retry", &retry_id]).deadline(deadline).run();
    assert!(retry.stderr.contains("secret environment variables (API_KEY)"), "{retry}");

    let audit = server.operator(&["audit", "--json"]).deadline(deadline).run();
    audit.assert_success();
    for (what, text) in [
        ("task get", shown.stdout.as_str()),
        ("audit", audit.stdout.as_str()),
        ("server log", &server.stderr()),
    ] {
        assert!(!text.contains(SECRET), "{what} shows the secret\n{text}");
    }
    // The log keeps what was written until a checkpoint drops it; sled's files hold no value
    // of an ended task: only the log's files may name it.
    let holders = files_holding(server.data_dir(), SECRET.as_bytes());
    for file in &holders {
        let in_log = file.strip_prefix(server.data_dir()).is_ok_and(|rel| rel.starts_with(WAL_DIR));
        assert!(in_log, "{} holds the secret after the task ended", file.display());
    }

    let missing = server
        .operator(&["task", "run", "--appid", "web-1", "--secret-env", "NOT_SET_HERE", "--", "true"])
        .deadline(deadline)
        .run();
    assert_eq!(missing.code(), Some(2), "{missing}");
    assert!(missing.stderr.contains("NOT_SET_HERE is not set in orange's environment"), "{missing}");
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_holding(dir: &std::path::Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}
