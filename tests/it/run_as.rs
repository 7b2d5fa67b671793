//! `--user NAME` end to end with real agents: refused (naming `--allow-user`) by an agent that
//! does not list the user, run as that user by one that does (the agent runs as root here; as
//! any other user it refuses, saying it is not root), shown by `task get` and the audit, the
//! same per host in a job, and a bad name refused by the CLI before anything is sent.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts};

/// The user the tests switch to: present on every Debian-like system, never the agent's own.
const OTHER_USER: &str = "nobody";

fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(60)).run()
}

fn agent_euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail. The agents are this process's
    // children and keep its user.
    unsafe { libc::geteuid() }
}

fn allowing(users: &[&str]) -> AgentOpts {
    AgentOpts { allow_users: users.iter().map(|u| (*u).to_owned()).collect(), ..AgentOpts::shell() }
}

#[test]
fn another_user_is_refused_without_the_allow_list_and_used_with_it() {
    let server = Server::start(ServerOpts::default());
    let _strict = Agent::start_online(&server, "strict-1", AgentOpts::shell());
    let _open = Agent::start_online(&server, "open-1", allowing(&[OTHER_USER]));
    let command = "id -un; echo \"$USER $HOME\"";

    let refused =
        orange(&server, &["task", "run", "--appid", "strict-1", "--user", OTHER_USER, "--", command]);
    assert_eq!(refused.code(), Some(255), "orange's own failure\n{refused}");
    assert!(refused.stderr.contains("start the agent with --allow-user nobody"), "{refused}");
    assert!(refused.stdout.is_empty(), "the command must not run\n{refused}");

    let args = ["task", "run", "--appid", "open-1", "--user", OTHER_USER, "--json", "--", command];
    let run = orange(&server, &args);
    if agent_euid() != 0 {
        assert!(run.json()["error"].as_str().unwrap_or_default().contains("not root"), "{run}");
        return;
    }
    run.assert_success();
    let stdout = run.json()["stdout"].as_str().unwrap_or_default().to_owned();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(OTHER_USER), "{run}");
    assert!(lines.next().is_some_and(|l| l.starts_with("nobody /")), "USER and HOME are the user's\n{run}");

    let task_id = run.json()["task_id"].as_str().unwrap_or_default().to_owned();
    let shown = orange(&server, &["task", "get", &task_id, "--json"]);
    assert_eq!(shown.json()["user"], OTHER_USER, "{shown}");
    let text = orange(&server, &["task", "get", &task_id]);
    assert!(text.stdout.contains("user:") && text.stdout.contains(OTHER_USER), "{text}");
    let audit = orange(&server, &["audit", "--action", "task.send", "--json"]);
    assert!(audit.stdout.contains("user nobody"), "the audit names the user\n{audit}");

    // The agent's own user needs no allow-list.
    let own = orange(&server, &["task", "run", "--appid", "strict-1", "--user", "root", "--", "id -un"]);
    own.assert_success();
    assert_eq!(own.stdout, "root\n", "{own}");
}

#[test]
fn a_job_runs_as_the_user_where_allowed_and_fails_elsewhere_saying_why() {
    let server = Server::start(ServerOpts::default());
    let _strict = Agent::start_online(&server, "strict-1", AgentOpts::shell());
    let _open = Agent::start_online(&server, "open-1", allowing(&[OTHER_USER]));
    let args = ["job", "run", "--appid", "strict-1,open-1", "--user", OTHER_USER, "--json", "--", "id -un"];
    let run = orange(&server, &args);
    assert_eq!(run.code(), Some(1), "one host failed\n{run}");
    assert_eq!(run.json()["job"]["user"], OTHER_USER, "{run}");
    let results = run.json()["results"].as_array().cloned().unwrap_or_default();
    let of = |app_id: &str| -> Value {
        results
            .iter()
            .find(|r| r["app_id"] == app_id)
            .cloned()
            .unwrap_or_else(|| panic!("no {app_id}\n{run}"))
    };
    let strict = of("strict-1");
    assert_eq!(strict["status"], "failed", "{run}");
    assert!(strict["error"].as_str().unwrap_or_default().contains("--allow-user nobody"), "{run}");
    if agent_euid() == 0 {
        let open = of("open-1");
        assert_eq!((open["status"].as_str(), open["stdout"].as_str()), (Some("succeeded"), Some("nobody\n")));
    }
}

#[test]
fn a_bad_user_name_is_a_usage_error_before_anything_is_sent() {
    let server = Server::start(ServerOpts::default());
    for bad in ["a b", "-root", "x/y"] {
        let run = orange(&server, &["task", "run", "--appid", "web-1", "--user", bad, "--", "true"]);
        assert_eq!(run.code(), Some(2), "{run}");
        assert!(run.stderr.contains("--user: user"), "{run}");
    }
    let run = orange(&server, &["job", "run", "--all", "--user", "a b", "--", "true"]);
    assert_eq!(run.code(), Some(2), "{run}");
}
