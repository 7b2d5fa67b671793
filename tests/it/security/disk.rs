//! Secrets on disk: the server's data directory and the agent's state directory end up private
//! to their user, however they were made before (a directory `mkdir`ed under a default umask, a
//! database or a secret file written readable by others); no other user can read an agent
//! secret, a token or the database.

use std::fs::Permissions;

use orange::protocol::TaskStatus;

use super::*;
use crate::support::{Agent, AgentOpts};

/// A world-readable secret the operator wrote into the data directory beforehand.
const ADMIN_TOKEN: &str = "5f0c0ffee5f0c0ffee5f0c0ffee5f0c0ffee5f0c0ffee5f0c0ffee5f0c0ffee0";

/// The mode of every entry under `dir` (recursively, symbolic links not followed), relative
/// path first.
fn modes(dir: &Path) -> Vec<(String, u32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
        let entry = entry.expect("directory entry");
        let meta = entry.metadata().expect("stat");
        found.push((entry.path().display().to_string(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            found.extend(modes(&entry.path()));
        }
    }
    found
}

/// Panics naming every entry of `dir` (itself included) that group or others have any
/// permission on; `expected` names entries that must be among those checked.
#[track_caller]
fn assert_private(dir: &Path, expected: &[&str]) {
    let mut all = modes(dir);
    all.push((dir.display().to_string(), std::fs::metadata(dir).expect("stat").permissions().mode() & 0o777));
    for name in expected {
        let path = dir.join(name).display().to_string();
        assert!(all.iter().any(|(p, _)| *p == path), "{path} is missing; found {all:?}");
    }
    let open: Vec<_> = all.iter().filter(|(_, mode)| mode & 0o077 != 0).collect();
    assert!(open.is_empty(), "open to other users: {open:?}");
}

/// What an older version (or a careless `mkdir`/`cp`) leaves: directories 0755, files 0644.
fn open_up(dir: &Path) {
    let set =
        |path: &Path, mode| std::fs::set_permissions(path, Permissions::from_mode(mode)).expect("chmod");
    set(dir, 0o755);
    for (path, _) in modes(dir) {
        let path = Path::new(&path);
        let meta = std::fs::symlink_metadata(path).expect("stat");
        if meta.is_dir() {
            set(path, 0o755);
        } else if meta.is_file() {
            set(path, 0o644);
        }
    }
}

/// Sends a ping to `app_id` and waits for it to succeed.
fn ping(server: &Server, app_id: &str) {
    let id = server.enqueue(&[app_id], "ping", "disk")[0].task_id.clone();
    wait_until(Duration::from_secs(20), &format!("the ping to {app_id}"), || {
        server.wait_task(&id, 2).status.is_final()
    });
    assert_eq!(server.task(&id).status, TaskStatus::Succeeded);
}

#[test]
fn a_data_dir_readable_by_others_and_what_is_in_it_are_made_private() {
    let parent = TempDir::with_prefix("orange-parent-").expect("temp dir");
    let data = parent.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::write(data.join("admin.token"), format!("{ADMIN_TOKEN}\n")).expect("write admin.token");
    open_up(&data);

    let mut server = Server::start(ServerOpts { data_dir: Some(data.clone()), ..ServerOpts::default() });
    let stderr = server.stderr();
    assert!(stderr.contains("the data directory was open to other users; made it 0700"), "{stderr}");
    assert!(stderr.contains("old_mode=755"), "{stderr}");
    assert!(stderr.contains("count=1"), "{stderr}");
    assert_eq!(server.token, ADMIN_TOKEN);
    let _agent = Agent::start_online(&server, "d1", AgentOpts::default());
    enroll(&server, "d2", "a-secret-of-d2", BASE_SECRET);
    server.create_token(3600, 1);
    ping(&server, "d1");
    assert_private(&data, &["admin.token", "sled", "sled/db"]);

    // A database written before the umask: everything readable by others, fixed at the next start.
    server.terminate(Duration::from_secs(30));
    open_up(&data);
    // Counted before the restart: the database may add a file of its own once it is open.
    let opened = modes(&data).len();
    server.restart();
    assert!(opened >= 3, "too few entries to prove anything: {opened}");
    assert!(server.stderr().contains(&format!("count={opened}")), "{}", server.stderr());
    ping(&server, "d1");
    assert_private(&data, &["admin.token", "sled", "sled/db"]);
}

#[test]
fn an_agent_state_dir_readable_by_others_is_made_private() {
    let server = Server::start(ServerOpts::default());
    let mut agent = Agent::start_online(&server, "d3", AgentOpts::default());
    ping(&server, "d3");
    let state = agent.state_dir().to_owned();
    assert_private(&state, &["secret"]);

    agent.kill();
    open_up(&state);
    agent.restart();
    ping(&server, "d3");
    let output = agent.output();
    assert!(output.contains("the state directory was open to other users; made it 0700"), "{output}");
    assert!(output.contains("files in the state directory were open to other users"), "{output}");
    assert_private(&state, &["secret"]);
}
