//! Faults around the task lifecycle: the server SIGKILLed in the middle of concurrent enqueues
//! and reports, an agent SIGKILLed while it runs a task, the server down while a fleet of real
//! agents waits, refused reports and chunks, a task printing 100 MiB, and a graceful stop with
//! requests in flight. Each test states exactly what must hold afterwards.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use orange::client::{AdminClient, AgentClient, ClientError, PollAnswer};
use orange::protocol::admin::{EnqueueReply, EnqueueRequest, TaskView};
use orange::protocol::wire::{DO_STATUS_DOING, DO_STATUS_FAILED, DO_STATUS_SUCCESS, OutputAck, OutputChunk};
use orange::protocol::{ReportRequest, TaskStatus, WireTask};

use crate::support;
use crate::support::{
    Agent, AgentOpts, KillOnDrop, Proxy, SIM_SECRET, Server, ServerOpts, history, process_alive,
    register_sim, wait_until,
};

// ---------------------------------------------------------------------------------------------
// Helpers

fn report(task_id: &str, do_status: &str) -> ReportRequest {
    ReportRequest { task_id: task_id.into(), do_status: do_status.into(), ..ReportRequest::default() }
}

/// The final report the simulated agents send: success with a result naming the task.
fn success(task_id: &str) -> ReportRequest {
    ReportRequest {
        result: format!("done-{task_id}"),
        exit_code: Some(0),
        ..report(task_id, DO_STATUS_SUCCESS)
    }
}

fn chunk(task_id: &str, seq: u32, data: &str) -> OutputChunk {
    OutputChunk {
        task_id: task_id.into(),
        seq,
        stream: "stdout".into(),
        data: data.into(),
        encoding: None,
        attempt: None,
    }
}

fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Refused(message)) => message,
        other => panic!("expected a refusal (code 1), got {other:?}"),
    }
}

fn poll_task(agent: &AgentClient) -> WireTask {
    match agent.poll(1).unwrap_or_else(|e| panic!("poll: {e}")) {
        PollAnswer::Task(task) => task,
        PollAnswer::Idle(control) => panic!("expected a task, got {control:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of the server under concurrent load

/// What one simulated agent saw before the kill.
#[derive(Default)]
struct AgentSide {
    /// Task ids handed out, in order.
    delivered: Vec<String>,
    /// Tasks whose `doing` report was acknowledged (code 0).
    doing_acked: HashSet<String>,
    /// Tasks whose final report was acknowledged (code 0).
    success_acked: HashSet<String>,
}

/// Runs a simulated agent until the server dies: one thread polls (capacity 4) and hands tasks to
/// two reporter threads, which acknowledge (`doing`) and finish (`success`) each one.
fn busy_agent(
    url: &str,
    app_id: &'static str,
    killed: Arc<AtomicBool>,
) -> std::thread::JoinHandle<AgentSide> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let side = Arc::new(Mutex::new(AgentSide::default()));
        let (tx, rx) = mpsc::channel::<String>();
        let rx = Arc::new(Mutex::new(rx));
        let reporters: Vec<_> = (0..2)
            .map(|_| {
                let (url, side, rx) = (url.clone(), Arc::clone(&side), Arc::clone(&rx));
                std::thread::spawn(move || {
                    let client = AgentClient::new(&url, app_id, SIM_SECRET);
                    loop {
                        let next = rx.lock().expect("queue").recv();
                        let Ok(id) = next else { return };
                        if client.report(&report(&id, DO_STATUS_DOING)).is_ok() {
                            side.lock().expect("side").doing_acked.insert(id.clone());
                        }
                        if client.report(&success(&id)).is_ok() {
                            side.lock().expect("side").success_acked.insert(id);
                        }
                    }
                })
            })
            .collect();
        let client = AgentClient::new(&url, app_id, SIM_SECRET);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            match client.poll(4) {
                Ok(PollAnswer::Task(task)) => {
                    side.lock().expect("side").delivered.push(task.task_id.clone());
                    tx.send(task.task_id).expect("reporters alive");
                }
                Ok(PollAnswer::Idle(_)) => {}
                Err(_) if killed.load(Ordering::SeqCst) => break,
                Err(e) => panic!("{app_id}: poll failed before the kill: {e}"),
            }
        }
        drop(tx);
        for reporter in reporters {
            reporter.join().expect("reporter");
        }
        Arc::try_unwrap(side).ok().expect("reporters joined").into_inner().expect("side")
    })
}

/// After the restart: polls as `app_id`, acknowledging and finishing every task, until no task
/// came for `quiet` (longer than the ack window plus a sweep), at most 20 s. Returns the ids.
fn drain_after_restart(url: &str, app_id: &str, quiet: Duration) -> Vec<String> {
    let client = AgentClient::new(url, app_id, SIM_SECRET);
    let started = Instant::now();
    let mut last = Instant::now();
    let mut got = Vec::new();
    while last.elapsed() < quiet {
        assert!(started.elapsed() < Duration::from_secs(20), "{app_id}: drain did not settle: {got:?}");
        match client.poll(4).unwrap_or_else(|e| panic!("{app_id}: poll after restart: {e}")) {
            PollAnswer::Task(task) => {
                client.report(&report(&task.task_id, DO_STATUS_DOING)).expect("ack after restart");
                client.report(&success(&task.task_id)).expect("final report after restart");
                got.push(task.task_id);
                last = Instant::now();
            }
            PollAnswer::Idle(_) => {}
        }
    }
    got
}

#[test]
fn sigkill_during_concurrent_enqueues_and_reports_loses_and_repeats_nothing_acknowledged() {
    const ENQUEUERS: usize = 4;
    const PER_ENQUEUER: usize = 60;
    const KILL_AFTER: usize = 70;
    // "replay" re-sends its unacknowledged final reports after the restart, as an agent with a
    // journal does; "forget" does not, as an agent that lost its memory.
    const AGENTS: [&str; 2] = ["replay", "forget"];
    // An ack window long enough that no delivery times out while the reporters lag behind the
    // poller before the kill, short enough that the drain after the restart sees redeliveries.
    let opts = ServerOpts { poll_window: Some(1), ack_window: Some(3), ..ServerOpts::default() };
    let mut server = Server::start(opts);
    for app_id in AGENTS {
        register_sim(&server, app_id);
    }

    let killed = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicUsize::new(0));
    let agents: Vec<_> = AGENTS.iter().map(|a| busy_agent(&server.url, a, Arc::clone(&killed))).collect();
    let enqueuers: Vec<_> = (0..ENQUEUERS)
        .map(|t| {
            let admin = server.admin();
            let count = Arc::clone(&acked_count);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0..PER_ENQUEUER {
                    let app_id = AGENTS[(t + i) % 2];
                    let request = EnqueueRequest {
                        app_ids: vec![app_id.into()],
                        task_type: "ping".into(),
                        payload: format!("t{t}-{i}"),
                        ..EnqueueRequest::default()
                    };
                    match admin.post::<_, EnqueueReply>("/api/v1/tasks", &request) {
                        Ok(reply) => {
                            acked.push((reply.tasks[0].task_id.clone(), app_id, request.payload));
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break, // the server is gone; this request may or may not exist
                    }
                }
                acked
            })
        })
        .collect();
    // Checked every millisecond, so the kill lands while enqueues are still being made.
    let waiting = Instant::now();
    while acked_count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(waiting.elapsed() < Duration::from_secs(20), "enqueues too slow");
        std::thread::sleep(Duration::from_millis(1));
    }
    killed.store(true, Ordering::SeqCst);
    server.kill();

    let acked: Vec<(String, &str, String)> =
        enqueuers.into_iter().flat_map(|t| t.join().expect("enqueuer")).collect();
    let sides: Vec<AgentSide> = agents.into_iter().map(|a| a.join().expect("agent")).collect();
    assert!(acked.len() >= KILL_AFTER && acked.len() < ENQUEUERS * PER_ENQUEUER, "{} acked", acked.len());

    server.restart();
    // The replaying agent re-sends every final report that was not acknowledged, before polling.
    let replay = AgentClient::new(&server.url, "replay", SIM_SECRET);
    for id in sides[0].delivered.iter().filter(|id| !sides[0].success_acked.contains(*id)) {
        replay.report(&success(id)).unwrap_or_else(|e| panic!("replayed report of {id}: {e}"));
    }
    let after: Vec<Vec<String>> = std::thread::scope(|scope| {
        let drains: Vec<_> = AGENTS
            .iter()
            .map(|a| scope.spawn(|| drain_after_restart(&server.url, a, Duration::from_secs(5))))
            .collect();
        drains.into_iter().map(|d| d.join().expect("drain")).collect()
    });

    let acked_ids: HashMap<&str, (&str, &str)> =
        acked.iter().map(|(id, app, payload)| (id.as_str(), (*app, payload.as_str()))).collect();
    for (side, app_id) in sides.iter().zip(AGENTS) {
        let distinct: HashSet<&String> = side.delivered.iter().collect();
        assert_eq!(
            distinct.len(),
            side.delivered.len(),
            "{app_id}: a task was delivered twice before the kill"
        );
    }
    let mut in_flight_enqueues = HashSet::new();
    let mut redelivered = 0;
    for (n, app_id) in AGENTS.iter().enumerate() {
        let side = &sides[n];
        let mut deliveries: HashMap<&str, usize> = HashMap::new();
        for id in side.delivered.iter().chain(&after[n]) {
            *deliveries.entry(id).or_default() += 1;
        }
        for (id, count) in &deliveries {
            let view = server.task(id);
            assert_eq!(view.app_id, *app_id, "{id} went to the wrong agent");
            match acked_ids.get(id) {
                Some((_, payload)) => assert_eq!(view.payload, *payload),
                // Its enqueue was in flight at the kill: stored, but its 201 never arrived.
                None => assert!(in_flight_enqueues.insert(id.to_string())),
            }
            let was_acknowledged = side.doing_acked.contains(*id) || side.success_acked.contains(*id);
            // Exactly once, except that a delivery the agent never got acknowledged may be
            // repeated, once, to the agent that forgot it.
            let allowed = if *app_id == "forget" && !was_acknowledged { 2 } else { 1 };
            assert!(*count <= allowed, "{id} delivered {count} times to {app_id}: {:?}", history(&view));
            if *count == 2 {
                redelivered += 1;
            }
        }
        for (id, (app, _)) in acked_ids.iter().filter(|(_, (app, _))| app == app_id) {
            assert!(deliveries.contains_key(id), "acknowledged task {id} of {app} was never delivered");
        }
        for id in deliveries.keys() {
            let view = server.task(id);
            let steps = history(&view);
            let succeeded = view.status == TaskStatus::Succeeded;
            if side.success_acked.contains(*id) || after[n].iter().any(|a| a == id) || *app_id == "replay" {
                assert!(succeeded, "{id} must have succeeded: {view:?}");
            } else {
                // The forgetful agent's unfinished task: its `doing` reached the server (else it
                // would have been handed out again), and its final report may have.
                assert!(matches!(view.status, TaskStatus::Running | TaskStatus::Succeeded), "{id}: {view:?}");
            }
            if side.doing_acked.contains(*id) {
                assert!(steps.contains(&"running"), "acknowledged doing of {id} lost: {steps:?}");
            }
            if succeeded {
                assert_eq!(view.result, format!("done-{id}"), "{id}");
            }
            for once in ["running", "succeeded"] {
                assert!(
                    steps.iter().filter(|s| **s == once).count() <= 1,
                    "{id} was {once} twice: {steps:?}"
                );
            }
        }
        // Every final task was counted once for its agent.
        let finished = server.tasks().iter().filter(|t| t.app_id == *app_id && t.status.is_final()).count();
        let agent = server.agent(app_id).expect("agent kept");
        assert_eq!(agent.processed_task_count, finished as u64, "{app_id}");
    }
    assert!(in_flight_enqueues.len() <= ENQUEUERS, "more unacknowledged tasks than requests in flight");
    let all = server.tasks();
    assert!(
        all.iter().all(|t| !matches!(t.status, TaskStatus::Queued | TaskStatus::Delivered)),
        "left behind"
    );
    assert_eq!(all.len(), acked.len() + in_flight_enqueues.len(), "a task nobody enqueued appeared");
    eprintln!(
        "sigkill under load: {} enqueues acknowledged, {} in flight stored, deliveries before the kill {}+{}, \
         after {}+{}, redelivered {redelivered}",
        acked.len(),
        in_flight_enqueues.len(),
        sides[0].delivered.len(),
        sides[1].delivered.len(),
        after[0].len(),
        after[1].len()
    );
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Refused reports and chunks

#[test]
fn refused_reports_and_chunks_leave_the_record_intact_across_a_restart() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let agent = register_sim(&server, "w1");
    let other = register_sim(&server, "w2");
    let id = server.enqueue(&["w1"], "shell", "x")[0].task_id.clone();
    assert_eq!(poll_task(&agent).task_id, id);
    agent.report(&report(&id, DO_STATUS_DOING)).expect("ack");
    for (seq, data) in ["a\n", "b\n"].iter().enumerate() {
        agent.post_output(&chunk(&id, seq as u32, data)).expect("chunk");
    }
    let running = server.task(&id);

    // While it runs: a duplicate, a gap, another agent's chunk and report.
    assert_eq!(agent.post_output(&chunk(&id, 0, "changed\n")).expect("duplicate"), OutputAck::default());
    let gap = refused(agent.post_output(&chunk(&id, 3, "c\n")));
    assert_eq!(gap, format!("output chunk 3 of task {id} is out of order; expected 2"));
    let foreign = refused(other.post_output(&chunk(&id, 2, "evil\n")));
    assert_eq!(foreign, format!("task {id} belongs to another agent"));
    assert_eq!(refused(other.report(&success(&id))), format!("task {id} belongs to another agent"));
    assert_eq!(server.task(&id), running, "a refused call changed the running task");

    let mut done = success(&id);
    done.output_chunks = Some(2);
    agent.report(&done).expect("final report");
    let finished = server.task(&id);
    assert_eq!(history(&finished), ["queued", "delivered", "running", "succeeded"]);
    assert_eq!((finished.stdout.as_str(), finished.result.clone()), ("a\nb\n", format!("done-{id}")));

    // After the end: the same report again is fine; a different one, a chunk, are refused.
    agent.report(&done).expect("repeated identical final report");
    let mut conflicting = report(&id, DO_STATUS_FAILED);
    conflicting.exit_code = Some(9);
    conflicting.stdout = Some("other".into());
    assert_eq!(refused(agent.report(&conflicting)), format!("task {id} already finished as succeeded"));
    assert_eq!(
        refused(agent.report(&report(&id, DO_STATUS_DOING))),
        format!("task {id} already finished as succeeded")
    );
    assert_eq!(
        refused(agent.post_output(&chunk(&id, 2, "late\n"))),
        format!("task {id} already finished as succeeded")
    );
    assert_eq!(
        refused(agent.post_output(&chunk(&id, 0, "a\n"))),
        format!("task {id} already finished as succeeded")
    );
    let unknown = "0190b6a4-0000-7000-8000-000000000000";
    assert_eq!(refused(agent.report(&success(unknown))), format!("unknown task {unknown}"));
    assert_eq!(server.task(&id), finished, "a refused call changed the finished task");
    assert_eq!(server.agent("w1").expect("w1").processed_task_count, 1);

    server.kill();
    server.restart();
    assert_eq!(server.task(&id), finished, "the record changed across the restart");
    let page = server.output(&id, 0, 0);
    let got: Vec<(u32, &str)> = page.chunks.iter().map(|c| (c.seq, c.data.as_str())).collect();
    assert_eq!(got, [(0, "a\n"), (1, "b\n")]);
    // The report's `result` text is stored after the chunks (number 2) and is not shown as
    // output; the cursor moves past it.
    assert_eq!((page.next, page.done), (3, true));
    assert_eq!(server.agent("w1").expect("w1").processed_task_count, 1);
}

// ---------------------------------------------------------------------------------------------
// 100 MiB of output

#[test]
fn a_task_printing_100_mib_is_capped_and_server_memory_stays_flat() {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: u64 = 100 * 1024 * 1024;
    const CAP_MB: u64 = 16;
    let opts = ServerOpts { poll_window: Some(1), output_cap_mb: Some(CAP_MB), ..ServerOpts::default() };
    let server = Server::start(opts);
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "shell", "head -c 104857600 /dev/zero | tr '\\0' x")[0].task_id.clone();
    assert_eq!(poll_task(&agent).task_id, id);
    agent.report(&report(&id, DO_STATUS_DOING)).expect("ack");

    let data = "x".repeat(CHUNK);
    let chunks = (TOTAL / CHUNK as u64) as u32;
    let before = server.rss_kib();
    let mut peak = before;
    // VmRSS after each 10 MiB.
    let mut marks = Vec::new();
    let started = Instant::now();
    for seq in 0..chunks {
        assert!(started.elapsed() < Duration::from_secs(60), "streaming took too long: chunk {seq}");
        agent.post_output(&chunk(&id, seq, &data)).unwrap_or_else(|e| panic!("chunk {seq}: {e}"));
        if seq % 64 == 0 {
            peak = peak.max(server.rss_kib());
        }
        if seq % 160 == 159 {
            marks.push(server.rss_kib());
        }
    }
    let streamed = started.elapsed();
    let mut done = report(&id, DO_STATUS_SUCCESS);
    done.output_chunks = Some(chunks);
    agent.report(&done).expect("final");
    let after = server.rss_kib();
    peak = peak.max(after);

    let cap = CAP_MB * 1024 * 1024;
    let page = server.output(&id, 0, 0);
    assert_eq!(page.dropped_bytes, TOTAL - cap, "head and tail of {CAP_MB} MiB in whole chunks");
    let view = server.task(&id);
    assert_eq!(view.dropped_bytes, TOTAL - cap);
    let note = format!("\n[orange: {} bytes of output dropped]\n", TOTAL - cap);
    assert_eq!(view.stdout.len() as u64, cap + note.len() as u64);
    assert!(view.stdout.contains(&note));
    eprintln!(
        "100 MiB output: streamed in {streamed:?}; server VmRSS before {before} KiB, peak {peak} KiB, \
         after {after} KiB (growth {} KiB); after each 10 MiB: {marks:?} KiB",
        after.saturating_sub(before)
    );
    // Holding the output in memory would take 100 MiB; the store keeps at most the cap on disk.
    let bound = 100 * 1024;
    assert!(peak - before < bound, "server RSS grew by {} KiB while streaming 100 MiB", peak - before);
    assert!(after.saturating_sub(before) < bound, "server RSS grew by {} KiB", after - before);
    // Flat, not just bounded: the second 50 MiB may not cost what holding them would (50 MiB).
    let second_half = after.saturating_sub(marks[4]);
    assert!(second_half < 32 * 1024, "server RSS grew by {second_half} KiB over the second 50 MiB");
}

// ---------------------------------------------------------------------------------------------
// Graceful stop

#[test]
fn sigterm_answers_parked_calls_finishes_an_upload_in_flight_and_exits_zero() {
    let mut server = Server::start(ServerOpts::poll_window(20));
    let agent = register_sim(&server, "w1");
    let waiting = server.enqueue(&["w1"], "ping", "")[0].task_id.clone();
    let running = server.enqueue(&["w1"], "ping", "")[0].task_id.clone();
    // Take both: the first stays delivered, the second runs.
    assert_eq!(poll_task(&agent).task_id, waiting);
    assert_eq!(poll_task(&agent).task_id, running);
    agent.report(&report(&running, DO_STATUS_DOING)).expect("ack");

    let url = server.url.clone();
    let poller = std::thread::spawn(move || {
        let started = Instant::now();
        (AgentClient::new(&url, "w1", SIM_SECRET).poll(1), started.elapsed())
    });
    let admin = AdminClient::new(&server.url, &server.token, Duration::from_secs(60));
    let path = format!("/api/v1/tasks/{running}?wait=40");
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        (admin.get::<TaskView>(&path), started.elapsed())
    });
    // An enqueue whose body is half sent when the signal comes.
    let body =
        serde_json::json!({"app_ids": ["w1"], "task_type": "ping", "payload": "in flight"}).to_string();
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        server.addr,
        server.token,
        body.len()
    );
    let mut upload = std::net::TcpStream::connect(server.addr).expect("connect");
    upload.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let (first, rest) = body.as_bytes().split_at(body.len() / 2);
    use std::io::Write;
    upload.write_all(head.as_bytes()).and_then(|_| upload.write_all(first)).expect("send first half");
    std::thread::sleep(Duration::from_millis(500));

    server.sigterm();
    std::thread::sleep(Duration::from_millis(300));
    upload.write_all(rest).expect("send second half");
    let status = server.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "server exit\nstderr:\n{}", server.stderr());

    let (answer, waited) = poller.join().expect("poller");
    assert!(matches!(answer, Ok(PollAnswer::Idle(_))), "the parked poll must answer code 2: {answer:?}");
    assert!(waited < Duration::from_secs(5), "the parked poll waited {waited:?}");
    let (view, waited) = waiter.join().expect("waiter");
    let view = view.expect("the parked task wait must be answered");
    assert_eq!(view.status, TaskStatus::Running);
    assert!(waited < Duration::from_secs(5), "the parked wait took {waited:?}");
    let mut reader = std::io::BufReader::new(upload);
    let mut status_line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut status_line).expect("answer to the upload");
    assert!(status_line.starts_with("HTTP/1.1 201"), "upload in flight answered {status_line:?}");

    server.restart();
    let tasks = server.tasks();
    assert_eq!(tasks.len(), 3, "the in-flight enqueue was acknowledged, so it must be stored");
    assert!(tasks.iter().any(|t| t.payload == "in flight" && t.status == TaskStatus::Queued));
    assert_eq!(server.task(&running).status, TaskStatus::Running);
}

// ---------------------------------------------------------------------------------------------
// The real agent

/// Waits until `path` holds a pid of a live process and returns it.
fn wait_for_pid(path: &std::path::Path) -> u32 {
    let mut pid = None;
    wait_until(Duration::from_secs(10), "the task to start", || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        pid = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok());
        pid.is_some_and(process_alive)
    });
    pid.expect("pid")
}

#[test]
fn an_agent_killed_while_its_task_runs_reports_it_lost_after_restart_and_never_reruns_it() {
    let server = Server::start(ServerOpts::poll_window(2));
    let opts = AgentOpts::shell();
    let mut agent = Agent::start_online(&server, "k1", opts);
    let dir = tempfile::TempDir::with_prefix("orange-marker-").expect("temp dir");
    let marker = dir.path().join("ran");
    let payload = format!("echo $$ >> {}; exec sleep 30", marker.display());
    let id = server.enqueue(&["k1"], "shell", &payload)[0].task_id.clone();
    let pid = wait_for_pid(&marker);
    let _cleanup = KillOnDrop(pid);
    wait_until(Duration::from_secs(5), "the task to be running", || {
        server.task(&id).status == TaskStatus::Running
    });

    agent.kill();
    agent.restart();
    let restarted = Instant::now();
    let view = server.wait_task(&id, 15);
    assert_eq!(view.status, TaskStatus::Lost, "{view:?}");
    // The server alone would call it lost only after timeout (600 s) plus grace (60 s).
    assert!(restarted.elapsed() < Duration::from_secs(15), "took {:?}", restarted.elapsed());
    assert_eq!(history(&view), ["queued", "delivered", "running", "lost"]);
    let error = view.error.clone().unwrap_or_default();
    assert!(error.contains("restarted"), "the reason must say the agent restarted: {view:?}");
    // It ran once and is not run again.
    std::thread::sleep(Duration::from_secs(2));
    let runs = std::fs::read_to_string(&marker).expect("marker");
    assert_eq!(runs.lines().count(), 1, "the task ran {} times", runs.lines().count());
    agent.assert_running();
    let ping = server.enqueue(&["k1"], "ping", "")[0].task_id.clone();
    assert_eq!(server.wait_task(&ping, 15).status, TaskStatus::Succeeded, "restarted agent works");
}

#[test]
fn an_agent_killed_before_its_ack_was_taken_leaves_a_task_that_runs_exactly_once() {
    // The proxy holds every report, so the agent's `doing` never reaches the server: the agent
    // has the task journaled and delivered, but unacknowledged, for as long as the test likes.
    let opts = ServerOpts { poll_window: Some(2), ack_window: Some(1), ..ServerOpts::default() };
    let server = Server::start(opts);
    let proxy = Proxy::start(server.addr);
    let agent_opts =
        AgentOpts { allow_shell: true, server_url: Some(proxy.url.clone()), ..AgentOpts::default() };
    let mut agent = Agent::start_online(&server, "k1", agent_opts);
    proxy.hold(support::REPORT_TASK);
    let dir = tempfile::TempDir::with_prefix("orange-marker-").expect("temp dir");
    let marker = dir.path().join("ran");
    let payload = format!("echo $$ >> {}", marker.display());
    let id = server.enqueue(&["k1"], "shell", &payload)[0].task_id.clone();
    wait_until(Duration::from_secs(10), "the agent's acknowledgement to be sent (and held)", || {
        proxy.requests().iter().any(|r| r.path == support::REPORT_TASK)
    });
    // An orange agent runs a task only once the server took its acknowledgement.
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "the task ran before its acknowledgement was taken");
    assert_eq!(history(&server.task(&id)), ["queued", "delivered"]);

    agent.kill();
    proxy.release_all();
    agent.restart();
    let view = server.wait_task(&id, 15);
    let runs = std::fs::read_to_string(&marker).unwrap_or_default();
    // The task provably never started (no acknowledgement, no marker), and an unacknowledged task
    // is handed out again (README, "Delivery guarantees"): it must run, once.
    assert_eq!(
        view.status,
        TaskStatus::Succeeded,
        "a task that never ran must not end {}: {view:?}",
        view.status
    );
    assert_eq!(runs.lines().count(), 1, "the task ran {} times", runs.lines().count());
}

#[test]
fn agents_come_back_after_the_server_is_down_with_jittered_reconnects() {
    const AGENTS: usize = 8;
    let mut server = Server::start(ServerOpts::poll_window(5));
    let proxy = Proxy::start(server.addr);
    let mut agents: Vec<Agent> = (0..AGENTS)
        .map(|n| {
            let opts = AgentOpts { server_url: Some(proxy.url.clone()), ..AgentOpts::default() };
            Agent::start(&server, &format!("fleet-{n}"), opts)
        })
        .collect();
    for agent in &mut agents {
        agent.wait_online(&server, Duration::from_secs(15));
    }
    // Let every agent park its long poll.
    std::thread::sleep(Duration::from_millis(500));

    server.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    let up = Instant::now();

    // First getTask of each agent that reached the restarted server.
    let mut first: BTreeMap<String, Instant> = BTreeMap::new();
    wait_until(Duration::from_secs(20), "every agent to poll the restarted server", || {
        for request in proxy.requests() {
            let Some(app_id) = request.app_id else { continue };
            if request.at > down && request.path == support::GET_TASK {
                first.entry(app_id).or_insert(request.at);
            }
        }
        first.len() == AGENTS
    });
    let times: Vec<Duration> = first.values().map(|at| at.saturating_duration_since(up)).collect();
    let spread = *times.iter().max().expect("times") - *times.iter().min().expect("times");
    eprintln!("reconnects after the restart (from the restart): {times:?}; spread {spread:?}");
    // All parked polls broke at the same instant. Without jitter every agent would follow the same
    // backoff schedule and poll the restarted server within a few milliseconds of the others.
    assert!(spread >= Duration::from_millis(200), "reconnects not spread: {times:?}");

    for agent in &mut agents {
        agent.assert_running();
    }
    let app_ids: Vec<String> = (0..AGENTS).map(|n| format!("fleet-{n}")).collect();
    let refs: Vec<&str> = app_ids.iter().map(String::as_str).collect();
    let pings = server.enqueue(&refs, "ping", "");
    for ping in &pings {
        assert_eq!(server.wait_task(&ping.task_id, 20).status, TaskStatus::Succeeded, "{}", ping.app_id);
    }
    for app_id in &app_ids {
        assert!(server.agent(app_id).expect("known").online, "{app_id} offline");
    }
}
