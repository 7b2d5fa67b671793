//! No orphans: a task's process group never outlives the agent that started it. A real agent is
//! SIGKILLed while its task runs: the group's leader dies with it (parent-death signal), and the
//! restarted agent ends the rest before it reports the task `lost`. What a finished task left
//! behind on purpose (`nohup cmd &`) is never killed by a restart.

use std::time::Duration;

use orange::protocol::TaskStatus;

use crate::support::{Agent, AgentOpts, KillOnDrop, Server, ServerOpts, process_alive, wait_until};

/// The live (not zombie) processes whose process group is `pgid`, read from /proc.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Fields after the parenthesized command: state (3), ppid (4), pgrp (5).
            let rest: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
            rest.len() > 2 && rest[0] != "Z" && rest[2] == pgid.to_string()
        })
        .collect()
}

/// SIGKILLs what is left of process group `pgid` when dropped, so a failing test leaves nothing.
struct KillGroupOnDrop(u32);

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if !group_members(self.0).is_empty() {
            // SAFETY: kill(2) of a process group that still has members, started by this test's
            // task (a group id is not reused while the group has members).
            unsafe { libc::kill(-(self.0 as libc::pid_t), libc::SIGKILL) };
        }
    }
}

#[test]
fn an_agent_killed_mid_task_leaves_no_process_of_the_task_after_its_restart() {
    let server = Server::start(ServerOpts::poll_window(2));
    let mut agent = Agent::start_online(&server, "o1", AgentOpts::shell());
    let dir = tempfile::TempDir::with_prefix("orange-orphans-").expect("temp dir");
    let leader_file = dir.path().join("leader");
    let payload = format!("echo $$ > {}; sleep 300 & sleep 300;", leader_file.display());
    let id = server.send_task("o1", "shell", &[], &payload);
    let mut pgid = 0;
    wait_until(Duration::from_secs(10), "the task's shell to write its pid", || {
        let text = std::fs::read_to_string(&leader_file).unwrap_or_default();
        pgid = text.trim().parse().unwrap_or(0);
        pgid != 0
    });
    let _cleanup = KillGroupOnDrop(pgid);
    wait_until(Duration::from_secs(10), "the shell and its two sleeps", || group_members(pgid).len() == 3);
    wait_until(Duration::from_secs(5), "the task to be running", || {
        server.task(&id).status == TaskStatus::Running
    });
    let sleeps: Vec<u32> = group_members(pgid).into_iter().filter(|&pid| pid != pgid).collect();

    agent.kill();
    // The leader gets the parent-death signal; its children are the restart's to end.
    wait_until(Duration::from_secs(5), "the task's shell to die with its agent", || !process_alive(pgid));
    assert!(
        sleeps.iter().all(|&pid| process_alive(pid)),
        "the sleeps outlive a dead agent until it restarts"
    );

    agent.restart();
    let view = server.wait_task(&id, 15);
    assert_eq!(view.status, TaskStatus::Lost, "{view:?}");
    assert!(view.error.clone().unwrap_or_default().contains("restarted"), "{view:?}");
    wait_until(Duration::from_secs(5), "no process of the task left", || group_members(pgid).is_empty());
    assert!(sleeps.iter().all(|&pid| !process_alive(pid)), "{sleeps:?} survived");
    agent.assert_running();
    assert!(
        agent.output().contains("ended the processes of tasks the agent died with"),
        "{}",
        agent.output()
    );
}

#[test]
fn what_a_finished_task_left_behind_on_purpose_survives_an_agent_restart() {
    let server = Server::start(ServerOpts::poll_window(2));
    let mut agent = Agent::start_online(&server, "o2", AgentOpts::shell());
    let run = server
        .operator(&["task", "run", "--appid", "o2", "--", "nohup sleep 300 >/dev/null 2>&1 & echo $!"])
        .run();
    run.assert_success();
    let pid: u32 = run.stdout.trim().parse().unwrap_or_else(|e| panic!("no pid printed: {e}\n{run}"));
    let _cleanup = KillOnDrop(pid);
    assert!(process_alive(pid), "the nohup sleep runs after its task finished");

    agent.kill();
    agent.restart();
    agent.wait_online(&server, Duration::from_secs(30));
    // The restarted agent ends leftovers before it registers, so this ping comes after it.
    let ping = server.enqueue(&["o2"], "ping", "")[0].task_id.clone();
    assert_eq!(server.wait_task(&ping, 15).status, TaskStatus::Succeeded);
    std::thread::sleep(Duration::from_millis(300));
    assert!(process_alive(pid), "the nohup sleep {pid} of a finished task was killed by the restart");
    assert!(!agent.output().contains("ended the processes"), "{}", agent.output());
}
