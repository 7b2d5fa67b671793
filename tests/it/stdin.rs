//! `task run` forwards its stdin to the remote command: a `tar` stream unpacks on the host
//! byte for byte, `-n` sends none, an input past the limit is refused before anything is sent,
//! and an original client, which cannot take stdin, is never given such a task; `job run` sends
//! one stdin to every host.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use orange::protocol::limits::MAX_STDIN_BYTES;

use crate::support::{Agent, AgentOpts, GoAgent, Run, Server, ServerOpts};

/// `orange ARGS` against `server` with `input` on a pipe as its stdin.
fn orange_with_stdin(server: &Server, args: &[&str], input: Vec<u8>) -> Run {
    let cli = server.operator(args).deadline(Duration::from_secs(60));
    cli.stdin(input).run()
}

/// A directory with a few files, one of them binary and one in a subdirectory.
fn sample_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::fs::write(dir.join("hello.txt"), "hello\n").expect("write");
    std::fs::write(dir.join("sub/notes.md"), "# notes\nline two\n").expect("write");
    let binary: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    std::fs::write(dir.join("blob.bin"), binary).expect("write");
}

/// Every file under `dir` with its bytes, by relative path, sorted.
fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path.strip_prefix(dir).expect("inside").display().to_string();
                files.push((name, std::fs::read(&path).expect("read")));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_tar_stream_piped_to_task_run_unpacks_on_the_host() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let work = tempfile::tempdir().expect("temp dir");
    let (source, dest) = (work.path().join("src"), work.path().join("dest"));
    sample_tree(&source);
    std::fs::create_dir(&dest).expect("mkdir dest");
    let archive = Command::new("tar").arg("c").arg("-C").arg(&source).arg(".").output().expect("tar c");
    assert!(archive.status.success(), "tar c failed");

    let script = format!("tar x -C {}", dest.display());
    let run = orange_with_stdin(&server, &["task", "run", "--appid", "web-1", "--", &script], archive.stdout);
    run.assert_success();
    assert_eq!(tree(&dest), tree(&source));

    // A command that does not read its stdin still ends, and the next task's stdin is empty.
    let run =
        orange_with_stdin(&server, &["task", "run", "--appid", "web-1", "--", "true"], vec![b'x'; 1 << 20]);
    run.assert_success();
}

#[test]
fn no_stdin_flag_and_a_null_stdin_give_the_task_an_empty_input() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let count = ["task", "run", "--appid", "web-1", "--", "wc -c"];
    let run = orange_with_stdin(&server, &count, b"four".to_vec());
    run.assert_success();
    assert_eq!(run.stdout.trim(), "4", "{run}");
    for flag in ["-n", "--no-stdin"] {
        let args = ["task", "run", flag, "--appid", "web-1", "--", "wc -c"];
        let run = orange_with_stdin(&server, &args, b"ignored".to_vec());
        run.assert_success();
        assert_eq!(run.stdout.trim(), "0", "{flag}\n{run}");
    }
    let run = server.operator(&count).deadline(Duration::from_secs(60)).run();
    run.assert_success();
    assert_eq!(run.stdout.trim(), "0", "/dev/null as stdin\n{run}");
}

#[test]
fn stdin_past_the_limit_is_refused_before_anything_is_sent() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "web-1", AgentOpts::shell());
    let args = ["task", "run", "--appid", "web-1", "--", "cat >/dev/null"];
    let run = orange_with_stdin(&server, &args, vec![0u8; MAX_STDIN_BYTES + 1]);
    assert_eq!(run.code(), Some(255), "{run}");
    let needle = format!("stdin is larger than the {MAX_STDIN_BYTES} bytes a task may carry");
    assert!(run.stderr.contains(&needle), "stderr lacks {needle:?}\n{run}");
    let listed = server.operator(&["task", "list", "--json"]).run();
    listed.assert_success();
    assert_eq!(listed.json()["tasks"].as_array().map(Vec::len), Some(0), "nothing sent\n{listed}");
}

#[test]
fn an_original_client_is_refused_a_task_with_stdin() {
    let server = Server::start(ServerOpts::default());
    let _go = GoAgent::new(&server, "go-1", "s1").registered();
    let args = ["task", "run", "--appid", "go-1", "--", "cat"];
    let run = orange_with_stdin(&server, &args, b"data".to_vec());
    assert_ne!(run.code(), Some(0), "{run}");
    let needle = "agent \"go-1\" does not support the task feature stdin";
    assert!(run.stderr.contains(needle), "stderr lacks {needle:?}\n{run}");
}

/// Each result of a `job run --json` as (app id, status, stdout), in app id order.
fn job_results(run: &Run) -> Vec<(String, String, String)> {
    let json = run.json();
    let results = json["results"].as_array().cloned().unwrap_or_default();
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    results.iter().map(|r| (text(&r["app_id"]), text(&r["state"]), text(&r["stdout"]))).collect()
}

#[test]
fn job_run_sends_the_same_stdin_to_every_host_and_none_with_n() {
    let server = Server::start(ServerOpts::default());
    let _agents: Vec<Agent> =
        ["j-1", "j-2"].iter().map(|id| Agent::start_online(&server, id, AgentOpts::shell())).collect();
    let job = ["job", "run", "--appid", "j-1,j-2", "--json", "--", "tr a-z A-Z"];
    let run = orange_with_stdin(&server, &job, b"same input\n".to_vec());
    run.assert_success();
    let upper = |id: &str| (id.to_owned(), "succeeded".to_owned(), "SAME INPUT\n".to_owned());
    assert_eq!(job_results(&run), [upper("j-1"), upper("j-2")], "{run}");

    let count = ["job", "run", "-n", "--appid", "j-1,j-2", "--json", "--", "wc -c"];
    let run = orange_with_stdin(&server, &count, b"ignored".to_vec());
    run.assert_success();
    let none = |id: &str| (id.to_owned(), "succeeded".to_owned(), "0\n".to_owned());
    assert_eq!(job_results(&run), [none("j-1"), none("j-2")], "{run}");
}

#[test]
fn a_job_with_stdin_fails_at_once_on_an_original_client_and_runs_on_orange_agents() {
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "j-1", AgentOpts::shell());
    let _go = GoAgent::new(&server, "go-1", "s1").registered();
    let job = ["job", "run", "--appid", "go-1,j-1", "--json", "--", "cat"];
    let run = orange_with_stdin(&server, &job, b"data".to_vec());
    assert_eq!(run.code(), Some(1), "one host did not succeed\n{run}");
    let results = run.json()["results"].as_array().cloned().unwrap_or_default();
    let go = results.iter().find(|r| r["app_id"] == "go-1").expect("go-1 has a result");
    assert_eq!(go["state"], "failed", "{run}");
    let needle = "does not support the task feature stdin";
    assert!(go.to_string().contains(needle), "go-1's result lacks {needle:?}\n{run}");
    let orange = results.iter().find(|r| r["app_id"] == "j-1").expect("j-1 has a result");
    assert_eq!(
        (orange["state"].as_str(), orange["stdout"].as_str()),
        (Some("succeeded"), Some("data")),
        "{run}"
    );
}
