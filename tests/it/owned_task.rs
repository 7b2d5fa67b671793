//! `orange task run` owns its remote task: when it loses its output (the reader of its stdout
//! goes away: SIGPIPE), its terminal (SIGHUP) or is told to stop (SIGTERM), it cancels the task
//! as Ctrl-C does and exits with 128 + the signal, as a shell reports a process killed by it.
//! The real server, a real shell agent and the real CLI.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orange::protocol::admin::TaskView;

use crate::support::{Agent, AgentOpts, KillOnDrop, Server, ServerOpts, wait_until};

/// A server and a real shell-enabled agent `e1`, online.
fn server_and_shell_agent() -> (Server, Agent) {
    let server = Server::start(ServerOpts::poll_window(5));
    let agent = Agent::start_online(&server, "e1", AgentOpts::shell());
    (server, agent)
}

/// Waits up to `timeout` for `child` to exit; kills it and panics if it does not.
fn exit_code_within(child: &mut Child, timeout: Duration, what: &str) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Everything left on `child`'s stderr pipe.
fn stderr_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut text);
    }
    text
}

/// The task whose payload is `payload`, once it is running on its agent.
fn running_task(server: &Server, payload: &str) -> TaskView {
    let mut found = None;
    wait_until(Duration::from_secs(15), &format!("task {payload:?} to run"), || {
        found = server.tasks().into_iter().find(|t| t.payload == payload && t.status.as_str() == "running");
        found.is_some()
    });
    found.expect("found")
}

/// The status `orange task get ID --wait 15 --json` shows once the task has ended.
fn final_status(server: &Server, task_id: &str) -> String {
    let run = server.operator(&["task", "get", task_id, "--wait", "15", "--json"]).run();
    run.assert_success();
    run.json()["status"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn task_run_piped_into_a_reader_that_goes_away_cancels_its_task_and_exits_141() {
    let (server, _agent) = server_and_shell_agent();
    let payload = "yes";
    let mut orange = server
        .operator(&["task", "run", "--appid", "e1", "--timeout", "60", "--", payload])
        .command()
        .spawn()
        .expect("spawn orange task run");
    let _orange_guard = KillOnDrop(orange.id());
    // `orange task run -- yes | head -1`
    let head = Command::new("head")
        .arg("-1")
        .stdin(orange.stdout.take().expect("piped stdout"))
        .stdout(Stdio::piped())
        .output()
        .expect("run head -1");
    assert_eq!(String::from_utf8_lossy(&head.stdout), "y\n");
    let code = exit_code_within(&mut orange, Duration::from_secs(15), "orange task run");
    let stderr = stderr_of(&mut orange);
    assert_eq!(code, Some(141), "stderr:\n{stderr}");
    let task = server.tasks().into_iter().find(|t| t.payload == payload).expect("the task exists");
    assert!(stderr.contains(&format!("cancelling task {}", task.task_id)), "stderr:\n{stderr}");
    assert_eq!(final_status(&server, &task.task_id), "cancelled", "stderr:\n{stderr}");
}

#[test]
fn sigterm_and_sighup_to_task_run_cancel_its_task_and_exit_128_plus_the_signal() {
    let (server, _agent) = server_and_shell_agent();
    for (signal, code, payload) in [(libc::SIGTERM, 143, "sleep 61"), (libc::SIGHUP, 129, "sleep 62")] {
        let mut orange = server
            .operator(&["task", "run", "--appid", "e1", "--", payload])
            .command()
            .spawn()
            .expect("spawn orange task run");
        let _orange_guard = KillOnDrop(orange.id());
        let task = running_task(&server, payload);
        let sent = Instant::now();
        // SAFETY: kill(2) on the pid of a child of this test that has not been reaped.
        assert_eq!(unsafe { libc::kill(orange.id() as libc::pid_t, signal) }, 0);
        let exited = exit_code_within(&mut orange, Duration::from_secs(15), "orange task run");
        let stderr = stderr_of(&mut orange);
        assert_eq!(exited, Some(code), "signal {signal}; stderr:\n{stderr}");
        assert_eq!(final_status(&server, &task.task_id), "cancelled", "signal {signal}; stderr:\n{stderr}");
        assert!(sent.elapsed() < Duration::from_secs(10), "took {:?}", sent.elapsed());
    }
}
