//! Tasks do not inherit secrets: an agent started with every secret variable it accepts keeps
//! none of them where a task (or any process of its user) can read them: not in the task's own
//! environment, not in `/proc/<agent pid>/environ` (the environment the agent process started
//! with), not on its command line.

use std::process::{Child, Stdio};

use super::*;
use crate::support::{BIN, KillOnDrop};

const AGENT_SECRET: &str = "agent-secret-in-the-environment-7d2e";
const ADMIN_TOKEN: &str = "admin-token-in-the-agents-environment-41aa";

/// The NUL-separated text of `/proc/<pid>/<file>`, one entry a line.
fn proc_text(pid: u32, file: &str) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/{file}: {e}"));
    String::from_utf8_lossy(&bytes).replace('\0', "\n")
}

/// `orange agent` against `server` with `env` added to a clean environment.
fn spawn_agent(server: &Server, state: &Path, log: &Path, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &server.url, "--appid", "env-1", "--allow-shell", "--state"]).arg(state);
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env.iter().copied());
    let out = std::fs::File::create(log).expect("agent log");
    cmd.stdin(Stdio::null()).stdout(out.try_clone().expect("clone log")).stderr(out);
    cmd.spawn().expect("spawn orange agent")
}

#[test]
fn a_task_finds_no_secret_in_its_environment_nor_in_the_agents() {
    let server = private_server();
    let token = enroll_token(&server.create_token(3600, 5));
    let token_text = format!("{}.{}", token.id, token.secret);
    let dir = TempDir::new().expect("temp dir");
    let log = dir.path().join("agent.log");
    let env = [
        ("ORANGE_ENROLL_KEY", PRIVATE_KEY),
        ("ORANGE_ENROLL_TOKEN", token_text.as_str()),
        ("ORANGE_SECRET", AGENT_SECRET),
        ("ORANGE_TOKEN", ADMIN_TOKEN),
        ("ORANGE_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let mut child = spawn_agent(&server, dir.path(), &log, &env);
    let pid = child.id();
    let _guard = KillOnDrop(pid);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "the agent online", || {
        assert!(matches!(child.try_wait(), Ok(None)), "agent exited\n{}", show_log());
        server.agent("env-1").is_some_and(|a| a.online)
    });
    let script = "echo parent=$PPID; tr '\\0' '\\n' < /proc/$PPID/environ; echo ---; env; echo ---; \
                  tr '\\0' '\\n' < /proc/$PPID/cmdline";
    let run = server.operator(&["task", "run", "--appid", "env-1", "--", script]).run();
    run.assert_success();
    assert!(run.stdout.contains("PATH="), "the task did not show its environment\n{run}");
    let agent_environ = proc_text(pid, "environ");
    let agent_cmdline = proc_text(pid, "cmdline");
    assert!(agent_environ.contains("PATH="), "{agent_environ}");
    for (name, value) in env {
        for (what, text) in [
            ("the task's output", &run.stdout),
            ("the agent's environ", &agent_environ),
            ("its cmdline", &agent_cmdline),
        ] {
            assert!(
                !text.contains(value),
                "{name}'s value is in {what}:\n{text}\nagent log:\n{}",
                show_log()
            );
        }
    }
    // The secrets did their work: the agent enrolled (with the key) under its own secret.
    assert_eq!(server.agent("env-1").expect("enrolled").status, "accepted");
    let own = AgentClient::new(&server.url, "env-1", AGENT_SECRET);
    own.ping().unwrap_or_else(|e| panic!("the agent's secret from the environment is not in use: {e}"));
}
