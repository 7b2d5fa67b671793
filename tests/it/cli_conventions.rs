//! What every `orange` command accepts and how it exits, with the real binary: `-h`/`--help`
//! and `-V`/`--version` everywhere, `--flag=value`, a "did you mean" for a mistyped word, and
//! exit codes 0 (done), 2 (usage), 1 (orange failed), and for `task run` the remote status with
//! 255 for orange's own failures.

use std::time::Duration;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts, cli, cli_with};

/// `orange ARGS` against `server`.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(60)).run()
}

#[test]
fn help_and_version_work_on_every_command_group_and_exit_0() {
    let version = format!("orange {}", env!("CARGO_PKG_VERSION"));
    for args in
        [&["-V"][..], &["--version"], &["task", "run", "-V"], &["job", "-V"], &["agents", "--version"]]
    {
        let run = cli(args);
        run.assert_success();
        assert_eq!(run.stdout.trim(), version, "{run}");
    }
    for group in ["", "task", "task run", "job", "job run", "agents", "token", "audit", "server", "agent"] {
        for flag in ["-h", "--help"] {
            let mut args: Vec<&str> = group.split_whitespace().collect();
            args.push(flag);
            let run = cli(&args);
            run.assert_success();
            let usage = format!("Usage: orange {group}").trim_end().to_owned();
            assert!(run.stdout.starts_with(&usage), "{args:?} prints its usage\n{run}");
        }
    }
    let groups = ["", "task", "job", "agents", "token", "audit"];
    for group in groups {
        let mut args: Vec<&str> = group.split_whitespace().collect();
        args.push("--help");
        let run = cli(&args);
        assert!(run.stdout.contains("Examples:\n  orange "), "{args:?} shows examples\n{run}");
    }
    let top = cli(&["--help"]);
    for code in ["0 done", "1 orange failed", "2 usage"] {
        assert!(top.stdout.contains(code), "the exit codes are documented: {code:?}\n{top}");
    }
}

#[test]
fn mistyped_words_get_a_suggestion_and_usage_errors_exit_2() {
    let cases: [(&[&str], &str); 3] = [
        (&["tsak", "list"], "Did you mean `task`?"),
        (&["job", "rnu", "--all", "--", "true"], "Did you mean `run`?"),
        (&["task", "list", "--limt", "3"], "Did you mean `--limit`?"),
    ];
    for (args, suggestion) in cases {
        let run = cli(args);
        assert_eq!(run.code(), Some(2), "{run}");
        assert!(run.stderr.contains(suggestion), "{args:?}: stderr lacks {suggestion:?}\n{run}");
        assert!(run.stderr.contains("--help` for more information"), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    // orange's own checks of a value are usage errors too.
    for args in
        [&["task", "run", "--appid", "x", "--timeout", "0", "--", "true"][..], &["job", "run", "--", "true"]]
    {
        let run = cli_with(args, &[("ORANGE_TOKEN", "t")], Duration::from_secs(30));
        assert_eq!(run.code(), Some(2), "{run}");
    }
}

#[test]
fn flag_equals_value_works_and_task_run_keeps_the_remote_status() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let run = orange(&server, &["task", "run", "--appid=web-1", "--timeout=30", "--", "echo hi; exit 3"]);
    assert_eq!((run.code(), run.stdout.as_str()), (Some(3), "hi\n"), "{run}");
    // After `--`, `-h` and `--x=y` are the command's own words.
    let run = orange(&server, &["task", "run", "--appid=web-1", "--", "printf", "%s,", "-h", "--x=y", "-V"]);
    assert_eq!((run.code(), run.stdout.as_str()), (Some(0), "-h,--x=y,-V,"), "{run}");

    // orange's own failure: 255 for task run (like ssh), 1 for the other commands.
    let unreachable = "http://127.0.0.1:9";
    let env = [("ORANGE_TOKEN", "t")];
    let deadline = Duration::from_secs(60);
    let run = cli_with(
        &["task", "run", "--appid=web-1", &format!("--server={unreachable}"), "--", "true"],
        &env,
        deadline,
    );
    assert_eq!(run.code(), Some(255), "{run}");
    let run = cli_with(&["task", "list", "--server", unreachable], &env, deadline);
    assert_eq!(run.code(), Some(1), "{run}");
    let run = orange(&server, &["task", "get", "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b"]);
    assert_eq!(run.code(), Some(1), "an unknown task\n{run}");
}
