//! The words after `--` on a real agent: one argument is a shell script, several are an argv
//! that the remote shell sees word for word, in `task run` and in `job run`.

use std::time::Duration;

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts};

/// `orange ARGS` against `server`.
fn orange(server: &Server, args: &[&str]) -> Run {
    server.operator(args).deadline(Duration::from_secs(60)).run()
}

#[test]
fn several_words_reach_the_remote_shell_as_those_words() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let run = |command: &[&str]| {
        let run = orange(&server, &[&["task", "run", "--appid", "web-1", "--"], command].concat());
        run.assert_success();
        run.stdout
    };
    assert_eq!(run(&["sh", "-c", "echo a; echo b"]), "a\nb\n");
    assert_eq!(run(&["printf", "%s\\n", "a b", "c"]), "a b\nc\n");
    assert_eq!(run(&["printf", "[%s]\\n", "it's", "", "$HOME", "*"]), "[it's]\n[]\n[$HOME]\n[*]\n");
    // One argument is still a shell script.
    assert_eq!(run(&["echo one; echo two | tr a-z A-Z"]), "one\nTWO\n");

    let job = ["job", "run", "--appid", "web-1", "--json", "--", "sh", "-c", "echo a; echo b"];
    let run = orange(&server, &job);
    run.assert_success();
    let hosts = &run.json()["results"];
    let stdout = hosts.as_array().and_then(|hosts| hosts.first()).map(|host| host["stdout"].clone());
    assert_eq!(stdout, Some("a\nb\n".into()), "{run}");
}
