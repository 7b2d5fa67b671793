//! Output is bytes from the process to the operator: a random binary file and a Latin-1 word
//! come back unchanged through `task run`, `task logs [-f]`, `--json` (base64 with its marker)
//! and a job's results and output groups, on stdout and on stderr; chunks of text from agents
//! that predate bytes are still stored as they are; an original Go client's `result` shows in
//! `task run`, job results and groups.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use orange::client::ClientError;
use orange::protocol::jobs::{JobGroups, job_groups_path};
use orange::protocol::wire::{DO_STATUS_DOING, OutputChunk, ReportRequest};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::{
    Agent, AgentOpts, GoAgent, Run, Server, ServerOpts, go_report, next_legacy_second, register_sim,
};

/// Deadline of a CLI call that waits for a task or a job.
const DEADLINE: Duration = Duration::from_secs(60);
/// `printf 'caf\351'`: `café` in Latin-1, which is not UTF-8.
const CAFE_LATIN1: &[u8] = b"caf\xe9";

/// `head -c 200000 /dev/urandom` into a file of a fresh directory; the file and its bytes.
fn random_file() -> (TempDir, PathBuf, Vec<u8>) {
    let dir = TempDir::with_prefix("orange-bytes-").expect("create a temp dir");
    let path = dir.path().join("rand.bin");
    let script = format!("head -c 200000 /dev/urandom > '{}'", path.display());
    let status = Command::new("sh").args(["-c", &script]).status().expect("run head");
    assert!(status.success(), "head -c 200000 /dev/urandom failed");
    let bytes = std::fs::read(&path).expect("read rand.bin");
    assert_eq!(bytes.len(), 200_000);
    assert!(std::str::from_utf8(&bytes).is_err(), "random bytes that happen to be UTF-8 test nothing");
    (dir, path, bytes)
}

/// Asserts `got` equals the file `expected` byte for byte, as `cmp` says.
fn assert_cmp_equal(got: &[u8], expected: &Path, what: &str) {
    let copy = expected.with_file_name(format!("{}.out", what.replace(' ', "_")));
    std::fs::write(&copy, got).expect("write the output to compare");
    let cmp = Command::new("cmp").arg(expected).arg(&copy).output().expect("run cmp");
    assert!(
        cmp.status.success(),
        "{what}: {} bytes, not those of {}: {}",
        got.len(),
        expected.display(),
        String::from_utf8_lossy(&cmp.stdout)
    );
}

/// The bytes of a JSON text field `name` of `value`, base64-decoded when `{name}_encoding` (or,
/// for a chunk, `encoding`) is `base64`.
fn field_bytes(value: &Value, name: &str, marker: &str) -> Vec<u8> {
    let text = value[name].as_str().unwrap_or_else(|| panic!("no text field {name:?} in {value}"));
    match value.get(marker) {
        None | Some(Value::Null) => text.as_bytes().to_vec(),
        Some(Value::String(encoding)) if encoding == "base64" => {
            STANDARD.decode(text).unwrap_or_else(|e| panic!("{name} is not base64: {e}"))
        }
        Some(other) => panic!("unknown {marker} {other}"),
    }
}

/// The stdout and stderr bytes of a task or job result in JSON.
fn outputs(value: &Value) -> (Vec<u8>, Vec<u8>) {
    (field_bytes(value, "stdout", "stdout_encoding"), field_bytes(value, "stderr", "stderr_encoding"))
}

/// Runs `orange ARGS` against `server` and asserts it exits 0.
fn ok(server: &Server, args: &[&str]) -> Run {
    let run = server.operator(args).deadline(DEADLINE).run();
    run.assert_success();
    run
}

#[test]
fn a_random_binary_and_latin1_text_come_back_byte_for_byte_through_task_run_logs_and_json() {
    let (_dir, file, _) = random_file();
    let path = file.display().to_string();
    let server = Server::start(ServerOpts::default());
    let _agent = Agent::start_online(&server, "bin-1", AgentOpts::shell());
    let run = |command: &str| ok(&server, &["task", "run", "--appid", "bin-1", "--", command]);

    let out = run(&format!("cat '{path}'"));
    assert_cmp_equal(&out.raw_stdout, &file, "task run stdout");
    assert!(out.raw_stderr.is_empty(), "{out}");
    let err = run(&format!("cat '{path}' >&2"));
    assert_cmp_equal(&err.raw_stderr, &file, "task run stderr");
    assert!(err.raw_stdout.is_empty(), "{err}");
    assert_eq!(run("printf 'caf\\351'").raw_stdout, CAFE_LATIN1);
    assert_eq!(run("printf 'caf\\351' >&2").raw_stderr, CAFE_LATIN1);

    let both = format!("cat '{path}'; printf 'caf\\351' >&2");
    let json = ok(&server, &["task", "run", "--appid", "bin-1", "--json", "--", &both]).json();
    assert_eq!(
        (json["stdout_encoding"].as_str(), json["stderr_encoding"].as_str()),
        (Some("base64"), Some("base64"))
    );
    assert_eq!(json["stderr"], "Y2Fm6Q==", "{json}");
    let (stdout, stderr) = outputs(&json);
    assert_cmp_equal(&stdout, &file, "task run --json stdout");
    assert_eq!(stderr, CAFE_LATIN1);

    let id = json["task_id"].as_str().expect("a task id");
    for follow in [&[][..], &["-f"][..]] {
        let mut args = vec!["task", "logs", id];
        args.extend_from_slice(follow);
        let logs = ok(&server, &args);
        assert_cmp_equal(&logs.raw_stdout, &file, "task logs stdout");
        assert_eq!(logs.raw_stderr, CAFE_LATIN1, "{logs}");
    }
    let lines = ok(&server, &["task", "logs", id, "--json"]);
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    for line in lines.stdout.lines() {
        let chunk: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let into = if chunk["stream"] == "stderr" { &mut stderr } else { &mut stdout };
        into.extend(field_bytes(&chunk, "data", "encoding"));
    }
    assert_cmp_equal(&stdout, &file, "task logs --json stdout");
    assert_eq!(stderr, CAFE_LATIN1);

    let text = ok(&server, &["task", "run", "--appid", "bin-1", "--json", "--", "echo café"]).json();
    assert_eq!(text["stdout"], "café\n", "text stays text: {text}");
    assert!(text.get("stdout_encoding").is_none(), "no marker on text: {text}");
}

#[test]
fn a_jobs_results_and_output_groups_keep_the_bytes_the_hosts_wrote() {
    let (_dir, file, bytes) = random_file();
    let server = Server::start(ServerOpts::default());
    let _agents: Vec<Agent> =
        ["j-1", "j-2"].iter().map(|id| Agent::start_online(&server, id, AgentOpts::shell())).collect();
    let command = "printf 'caf\\351'; printf 'oops\\377\\n' >&2";
    let job = ok(&server, &["job", "run", "--appid", "j-1,j-2", "--json", "--", command]).json();
    for result in job["results"].as_array().expect("results") {
        assert_eq!(outputs(result), (CAFE_LATIN1.to_vec(), b"oops\xff\n".to_vec()), "{result}");
    }
    let id = job["job"]["job_id"].as_str().expect("a job id");
    let groups: JobGroups = server.admin().get(&job_groups_path(id)).expect("the job's groups");
    let group = &groups.groups[0];
    assert_eq!((groups.groups.len(), group.count), (1, 2), "{groups:?}");
    assert_eq!(group.stdout_bytes().unwrap(), CAFE_LATIN1);
    assert_eq!(group.stderr_bytes().unwrap(), b"oops\xff\n");
    let summary = ok(&server, &["job", "get", id]);
    let expected = b"\n2 hosts: succeeded (exit 0)\n    caf\xe9\n    oops\xff\n";
    assert!(summary.raw_stdout.ends_with(expected), "the summary writes the bytes\n{summary}");

    let path = file.display().to_string();
    let cat = format!("cat '{path}'");
    let job = ok(&server, &["job", "run", "--appid", "j-1", "--json", "--", &cat]).json();
    let (stdout, _) = outputs(&job["results"][0]);
    assert_eq!(stdout, bytes[..4096], "a result shows the first 4 KiB, unchanged");

    // 4096 bytes of `é€` repeated end inside an `é`: the shortened text drops it and stays text.
    let long_text = "yes 'é€' | tr -d '\\n' | head -c 6000";
    let job = ok(&server, &["job", "run", "--appid", "j-1", "--json", "--", long_text]).json();
    let result = &job["results"][0];
    assert!(result.get("stdout_encoding").is_none(), "{result}");
    assert_eq!(result["stdout"].as_str().map(str::len), Some(4095), "{result}");
}

/// A task for the simulated agent `w1`, delivered and acknowledged.
fn running(server: &Server, agent: &orange::client::AgentClient) -> String {
    let id = server.enqueue(&["w1"], "shell", "true")[0].task_id.clone();
    let task = agent.get_task().expect("poll").expect("the task");
    assert_eq!(task.task_id, id);
    let ack = ReportRequest { task_id: id.clone(), do_status: DO_STATUS_DOING.into(), ..Default::default() };
    agent.report(&ack).expect("ack");
    id
}

#[test]
fn text_chunks_of_earlier_agents_and_base64_chunks_are_stored_as_their_bytes_and_bad_base64_is_refused() {
    let server = Server::start(ServerOpts::poll_window(2));
    let agent = register_sim(&server, "w1");
    let id = running(&server, &agent);
    let earlier = OutputChunk {
        task_id: id.clone(),
        seq: 0,
        stream: "stdout".into(),
        data: "hé ".into(),
        encoding: None,
        attempt: None,
    };
    agent.post_output(&earlier).expect("a text chunk without a marker");
    agent.post_output(&OutputChunk::new(&id, 1, "stdout", CAFE_LATIN1)).expect("a base64 chunk");
    let bad =
        OutputChunk { data: "not base64!".into(), seq: 2, ..OutputChunk::new(&id, 2, "stdout", b"\xff") };
    match agent.post_output(&bad) {
        Err(ClientError::Refused(message)) => assert!(message.contains("base64"), "{message}"),
        other => panic!("bad base64 must be refused, got {other:?}"),
    }
    let done = ReportRequest {
        task_id: id.clone(),
        do_status: "success".into(),
        exit_code: Some(0),
        output_chunks: Some(2),
        ..Default::default()
    };
    agent.report(&done).expect("final report");
    let logs = ok(&server, &["task", "logs", &id]);
    assert_eq!(logs.raw_stdout, b"h\xc3\xa9 caf\xe9", "{logs}");
}

#[test]
fn an_original_clients_result_is_a_line_of_task_run_exits_0_or_1_and_shows_in_job_results_and_groups() {
    let server = Server::start(ServerOpts::default());
    let go = GoAgent::new(&server, "go-1", "s1").registered();
    for (do_status, result, code) in [("success", "hello", 0), ("failed", "boom\n", 1)] {
        let live = server.operator(&["task", "run", "--appid", "go-1", "--", "uptime"]).live();
        next_legacy_second();
        let task = go.get_task();
        assert_eq!(task["code"], 0, "{task}");
        let answer = go.report(&go_report(&task["data"], do_status, result));
        assert_eq!(answer["code"], 0, "{answer}");
        let (run, _) = live.finish(DEADLINE);
        assert_eq!(run.code(), Some(code), "{run}");
        assert_eq!(run.stdout, format!("{}\n", result.trim_end()), "{run}");
        let id = server.tasks()[0].task_id.clone();
        assert_eq!(ok(&server, &["task", "logs", &id]).stdout, run.stdout, "task logs prints it alike");
    }

    let sent = ok(&server, &["job", "send", "--appid", "go-1", "--", "uptime"]);
    let id = sent.stdout.trim().to_owned();
    next_legacy_second();
    let task = go.get_task();
    assert_eq!(go.report(&go_report(&task["data"], "success", "up 3 days"))["code"], 0);
    let summary = ok(&server, &["job", "get", &id, "--wait", "30"]);
    assert!(summary.stdout.ends_with("\n1 host: succeeded\n    up 3 days\n"), "{summary}");
    let json = ok(&server, &["job", "get", &id, "--json"]).json();
    assert_eq!(json["results"][0]["result"], "up 3 days", "{json}");
    let groups: JobGroups = server.admin().get(&job_groups_path(&id)).expect("the job's groups");
    assert_eq!(groups.groups[0].result, "up 3 days", "{groups:?}");
}
