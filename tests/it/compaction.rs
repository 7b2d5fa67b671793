//! Compaction while the server works: SIGUSR1 compacts a large database while agents take and
//! report tasks and operators enqueue; every request is answered meanwhile (the copy does not
//! hold the store), nothing acknowledged is lost, and a SIGKILL in the middle of a compaction
//! loses nothing either.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orange::client::{AdminClient, AgentClient};
use orange::protocol::ReportRequest;
use orange::protocol::admin::EnqueueReply;
use orange::protocol::wire::DO_STATUS_SUCCESS;
use serde_json::json;

use crate::support::{Server, ServerOpts, queue_bulk, register_sim, wait_until};

/// Agents whose queues hold the bulk of the database.
const FILL_AGENTS: usize = 40;
/// Enqueues of one large payload to every fill agent.
const FILL_ENQUEUES: usize = 140;
/// Bytes of each fill payload: the database holds about FILL_AGENTS × FILL_ENQUEUES of them.
const FILL_PAYLOAD: usize = 60 * 1024;
/// Agents that take and report while the compaction runs.
const WORKERS: usize = 3;
/// A request waiting longer than this while a compaction runs fails the test; the copy of the
/// database (about 550 MB) takes several seconds on this machine, and the code before the
/// online compaction held every request for all of it.
const LONGEST_WAIT: Duration = Duration::from_secs(2);

/// What the load saw: tasks whose enqueue was acknowledged, tasks whose report was
/// acknowledged, and the longest request.
#[derive(Default)]
struct Seen {
    enqueued: Vec<String>,
    reported: Vec<String>,
    longest: Duration,
}

/// Load that runs until stopped: one enqueuer, and agents that take and report.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Seen>>,
}

impl Load {
    fn start(server: &Server, workers: Vec<AgentClient>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let app_ids: Vec<String> = (0..workers.len()).map(|i| format!("worker-{i}")).collect();
        let mut threads = vec![{
            let (admin, stop) = (server.admin(), Arc::clone(&stop));
            std::thread::spawn(move || enqueue_until(&admin, &app_ids, &stop))
        }];
        for agent in workers {
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || work_until(&agent, &stop)));
        }
        Load { stop, threads }
    }

    fn stop(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        let mut all = Seen::default();
        for thread in self.threads {
            let seen = thread.join().expect("load thread");
            all.enqueued.extend(seen.enqueued);
            all.reported.extend(seen.reported);
            all.longest = all.longest.max(seen.longest);
        }
        all
    }
}

/// Enqueues one small task at a time, round robin over `app_ids`, until `stop` (or until the
/// server stops answering).
fn enqueue_until(admin: &AdminClient, app_ids: &[String], stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    for app_id in app_ids.iter().cycle() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let body = json!({"app_ids": [app_id], "task_type": "ping", "payload": "small"});
        let started = Instant::now();
        let Ok(reply) = admin.post::<_, EnqueueReply>("/api/v1/tasks", &body) else { break };
        seen.longest = seen.longest.max(started.elapsed());
        seen.enqueued.push(reply.tasks[0].task_id.clone());
    }
    seen
}

/// Takes and reports tasks until `stop` (or until the server stops answering); times every
/// report and every poll that found a task (an empty poll parks for the window on purpose).
fn work_until(agent: &AgentClient, stop: &AtomicBool) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let Ok(task) = agent.get_task() else { break };
        let Some(task) = task else { continue };
        seen.longest = seen.longest.max(started.elapsed());
        let report = ReportRequest {
            task_id: task.task_id.clone(),
            task_type: task.task_type.clone(),
            create_at: task.create_at.clone(),
            payload: task.payload.clone(),
            do_status: DO_STATUS_SUCCESS.into(),
            exit_code: Some(0),
            result: "done".into(),
            ..ReportRequest::default()
        };
        let started = Instant::now();
        if agent.report(&report).is_err() {
            break;
        }
        seen.longest = seen.longest.max(started.elapsed());
        seen.reported.push(task.task_id);
    }
    seen
}

/// Queues FILL_AGENTS × FILL_ENQUEUES tasks with large payloads, which stay queued.
fn fill(server: &Server) {
    queue_bulk(server, "fill", FILL_AGENTS, FILL_ENQUEUES, FILL_PAYLOAD);
}

fn compactions_logged(server: &Server) -> usize {
    server.stderr().matches("database compacted").count()
}

fn current_database(data: &Path) -> String {
    std::fs::read_to_string(data.join("sled.current")).map_or_else(|_| "sled".into(), |s| s.trim().to_owned())
}

/// Every task whose enqueue was acknowledged exists, and every task whose report was
/// acknowledged succeeded.
fn assert_nothing_lost(server: &Server, seen: &Seen) {
    for id in &seen.enqueued {
        server.task(id); // panics if it is unknown
    }
    for id in &seen.reported {
        assert_eq!(server.task(id).status.as_str(), "succeeded", "task {id}");
    }
}

#[test]
fn requests_are_answered_while_a_large_database_is_compacted_and_a_sigkill_in_one_loses_nothing() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let workers: Vec<AgentClient> =
        (0..WORKERS).map(|i| register_sim(&server, &format!("worker-{i}"))).collect();
    fill(&server);
    let data = server.data_dir().to_owned();

    let load = Load::start(&server, workers);
    std::thread::sleep(Duration::from_millis(500));
    server.sigusr1();
    wait_until(Duration::from_secs(240), "the compaction", || compactions_logged(&server) == 1);
    std::thread::sleep(Duration::from_millis(500));
    let seen = load.stop();
    let log = server.stderr();
    let line = log.lines().find(|l| l.contains("database compacted")).unwrap_or_default();
    eprintln!(
        "{line}\nlongest request: {:?}, {} enqueued, {} reported",
        seen.longest,
        seen.enqueued.len(),
        seen.reported.len()
    );
    assert_eq!(current_database(&data), "sled.1");
    assert!(!seen.enqueued.is_empty() && !seen.reported.is_empty(), "the load made no progress");
    assert!(seen.longest < LONGEST_WAIT, "a request waited {:?} during the compaction\n{line}", seen.longest);
    assert_nothing_lost(&server, &seen);

    // Again, killed while it copies; what the load saw acknowledged survives the restart.
    let workers: Vec<AgentClient> =
        (0..WORKERS).map(|i| register_sim(&server, &format!("worker-{i}"))).collect();
    let load = Load::start(&server, workers);
    std::thread::sleep(Duration::from_millis(300));
    server.sigusr1();
    wait_until(Duration::from_secs(30), "the second copy", || data.join("sled.2").exists());
    std::thread::sleep(Duration::from_millis(200));
    server.kill();
    let seen = load.stop();
    eprintln!("killed with {} in use", current_database(&data));
    server.restart();
    assert_nothing_lost(&server, &seen);
    server.assert_alive();
}
