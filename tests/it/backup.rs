//! Online backup and restore with the real binary: `orange server backup` while real agents run
//! tasks and an operator keeps enqueuing, `orange server restore` into a new directory, and a
//! server started there holds every task acknowledged before the backup began, the agents and
//! the secrets; and the refusals (no token, a wrong one, a non-empty directory, a cut file).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orange::client::{AdminClient, AgentClient};
use orange::protocol::admin::EnqueueReply;
use orange::server::clock::now_ms;
use serde_json::json;

use crate::support::{
    Agent, AgentOpts, SIM_SECRET, Server, ServerOpts, cli, cli_with, queue_bulk, wait_until,
};

/// Offline agents whose queues give the backup some bulk to copy.
const BULK_AGENTS: usize = 8;
/// Enqueues of one large payload to every bulk agent.
const BULK_ENQUEUES: usize = 40;
/// Bytes of each bulk payload (the store holds about 20 MB of them).
const BULK_PAYLOAD: usize = 60 * 1024;
/// Longest an enqueue may wait while a backup runs: the backup holds the store only for a
/// moment, so anything near this means it stalled the server.
const LONGEST_ENQUEUE: Duration = Duration::from_secs(10);

/// An acknowledged enqueue: the task id and when the answer arrived.
struct Acked {
    id: String,
    at: Instant,
    took: Duration,
}

/// An operator enqueuing small shell tasks for the real agents, one at a time, until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    /// Enqueues acknowledged so far.
    acked: Arc<AtomicUsize>,
    thread: JoinHandle<Vec<Acked>>,
}

impl Writer {
    fn start(admin: AdminClient, app_ids: [&'static str; 2]) -> Writer {
        let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (flag, acked_count) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = std::thread::spawn(move || {
            let mut acked = Vec::new();
            // Bounded: about a minute of load at most, far more than the test needs.
            for i in 0..100_000 {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let body = json!({"app_ids": [app_ids[i % 2]], "task_type": "shell", "payload": "true"});
                let started = Instant::now();
                let reply: EnqueueReply = admin.post("/api/v1/tasks", &body).expect("enqueue under load");
                acked.push(Acked {
                    id: reply.tasks[0].task_id.clone(),
                    at: Instant::now(),
                    took: started.elapsed(),
                });
                acked_count.fetch_add(1, Ordering::SeqCst);
            }
            acked
        });
        Writer { stop, acked: count, thread }
    }

    fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer thread")
    }
}

/// Queues large tasks for offline agents, so the backup has megabytes to copy.
fn bulk(server: &Server) {
    queue_bulk(server, "bulk", BULK_AGENTS, BULK_ENQUEUES, BULK_PAYLOAD);
}

#[test]
fn a_backup_under_load_restores_every_task_acknowledged_before_it_began() {
    let server = Server::start(ServerOpts::poll_window(2));
    let _agents = [
        Agent::start_online(&server, "web-1", AgentOpts::shell()),
        Agent::start_online(&server, "web-2", AgentOpts::shell()),
    ];
    bulk(&server);
    let mut succeeded_before = Vec::new();
    for app_id in ["web-1", "web-2"].repeat(5) {
        let id = server.enqueue(&[app_id], "shell", "echo ran").remove(0).task_id;
        wait_until(Duration::from_secs(60), "a task to run", || {
            server.wait_task(&id, 5).status.as_str() == "succeeded"
        });
        succeeded_before.push(id);
    }
    let writer = Writer::start(server.admin(), ["web-1", "web-2"]);
    wait_until(Duration::from_secs(60), "the load to start", || writer.acked.load(Ordering::SeqCst) >= 20);

    let backup_dir = tempfile::tempdir().expect("a temp dir");
    let file = backup_dir.path().join("orange.bak");
    let file_arg = file.to_str().expect("a UTF-8 path");
    let (began, began_ms) = (Instant::now(), now_ms());
    let run = server
        .operator(&["server", "backup", "--to", file_arg, "--json"])
        .deadline(Duration::from_secs(120))
        .run();
    let ended = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let acked = writer.stop();
    run.assert_success();
    let report = run.json();

    let before: Vec<&Acked> = acked.iter().filter(|a| a.at < began).collect();
    let during: Vec<&Acked> = acked.iter().filter(|a| a.at > began && a.at < ended).collect();
    eprintln!(
        "{report}\n{} enqueues acknowledged before the backup, {} during it",
        before.len(),
        during.len()
    );
    assert!(!before.is_empty() && !during.is_empty(), "the load went on while the backup ran");
    let longest = during.iter().map(|a| a.took).max().unwrap_or_default();
    assert!(longest < LONGEST_ENQUEUE, "an enqueue waited {longest:?} during the backup");
    for a in &during {
        server.task(&a.id); // panics if the original server lost it
    }
    assert!(report["consistent_at_ms"].as_i64().expect("a cut time") >= began_ms, "{report}");
    assert_eq!(report["bytes"].as_u64(), Some(std::fs::metadata(&file).expect("the backup file").len()));
    assert!(report["bytes"].as_u64().expect("bytes") > (BULK_AGENTS * BULK_ENQUEUES * BULK_PAYLOAD) as u64);
    assert_eq!(mode_of(&file), 0o600, "the backup holds secrets");

    let restored_dir = tempfile::tempdir().expect("a temp dir");
    let data = restored_dir.path().join("data");
    let data_arg = data.to_str().expect("a UTF-8 path");
    let run = cli(&["server", "restore", "--from", file_arg, "--data", data_arg, "--json"]);
    run.assert_success();
    let restored = run.json();
    assert_eq!(restored["records"], report["records"], "{restored}");

    let copy = Server::start(ServerOpts { data_dir: Some(data.clone()), ..ServerOpts::poll_window(2) });
    assert_eq!(copy.token, server.token, "the admin token came back with the backup");
    for a in &before {
        copy.task(&a.id); // panics if it is missing
    }
    for id in &succeeded_before {
        assert_eq!(copy.task(id).status.as_str(), "succeeded", "task {id}");
    }
    let agents: Vec<String> = copy.agents().into_iter().map(|a| a.app_id).collect();
    for app_id in ["web-1", "web-2", "bulk-0"] {
        assert!(agents.iter().any(|a| a == app_id), "{app_id} is restored: {agents:?}");
    }
    // A restored agent signs in with its old credentials and gets its queue, in order.
    let bulk_1 = AgentClient::new(&copy.url, "bulk-1", SIM_SECRET);
    let task = bulk_1.get_task().expect("a poll of the restored server").expect("bulk-1's first task");
    assert!(task.payload.starts_with("0000"), "the oldest queued task comes first");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn a_backup_needs_the_admin_token_and_a_restore_needs_an_empty_directory_and_a_whole_file() {
    let server = Server::start(ServerOpts::default());
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("b.bak");
    let file_arg = file.to_str().expect("a UTF-8 path");

    let raw = server.admin_raw("GET", "/api/v1/backup", None, b"");
    assert_eq!(raw.status, 401, "no token, no backup");
    let run = cli(&["server", "backup", "--to", file_arg, "--server", &server.url]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("no admin token"), "{run}");
    let run = cli_with(
        &["server", "backup", "--to", file_arg, "--server", &server.url],
        &[("ORANGE_TOKEN", "wrong")],
        Duration::from_secs(30),
    );
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("refused the admin token"), "{run}");
    assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0, "nothing was left behind");

    server.operator(&["server", "backup", "--to", file_arg]).run().assert_success();
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).expect("mkdir");
    std::fs::write(busy.join("keep"), "mine").expect("write");
    let run = cli(&["server", "restore", "--from", file_arg, "--data", busy.to_str().expect("utf-8")]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert!(run.stderr.contains("is not empty"), "{run}");
    assert_eq!(std::fs::read_dir(&busy).expect("list").count(), 1, "the directory was left alone");

    let bytes = std::fs::read(&file).expect("read the backup");
    let cut = dir.path().join("cut.bak");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).expect("write");
    let target = dir.path().join("target");
    let run = cli(&[
        "server",
        "restore",
        "--from",
        cut.to_str().expect("utf-8"),
        "--data",
        target.to_str().expect("utf-8"),
    ]);
    assert_eq!(run.code(), Some(1), "{run}");
    let offset = bytes.len() - 3;
    assert!(run.stderr.contains(&format!("truncated at byte {offset}")), "{run}");
    assert!(!target.exists(), "nothing was written for a damaged backup");
}

#[test]
fn a_second_backup_is_refused_while_one_is_written_and_a_reader_that_leaves_ends_it() {
    use std::io::{Read, Write};
    let server = Server::start(ServerOpts::default());
    bulk(&server);
    // A reader that asks for a backup, reads its first bytes, then stops reading: the backup
    // waits for it, with megabytes still to send.
    let mut slow = std::net::TcpStream::connect(server.addr).expect("connect");
    let request = format!(
        "GET /api/v1/backup HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\r\n",
        server.token
    );
    slow.write_all(request.as_bytes()).expect("send the request");
    let mut first = [0; 12];
    slow.read_exact(&mut first).expect("the answer begins");
    assert_eq!(&first, b"HTTP/1.1 200");

    let second = server.admin_raw("GET", "/api/v1/backup", Some(&server.token), b"");
    assert_eq!(second.status, 409, "{}", String::from_utf8_lossy(&second.body));
    assert!(String::from_utf8_lossy(&second.body).contains("already being written"));

    drop(slow);
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("after.bak");
    let file_arg = file.to_str().expect("a UTF-8 path");
    wait_until(Duration::from_secs(30), "the abandoned backup to end", || {
        server.operator(&["server", "backup", "--to", file_arg]).run().code() == Some(0)
    });
    assert!(server.stderr().contains("backup failed"), "the abandoned backup stopped");
}
