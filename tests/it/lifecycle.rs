//! The life of a task, end to end on the real server binary: acknowledged delivery and
//! redelivery, legacy delivery ending `lost`, expiry in the queue, cancel (queued, running,
//! forced, finished), streamed output (order, duplicates, follow, cap), and, with the real agent
//! and CLI, live output, cancel and timeout. Simulated agents (`AgentClient`) make the server's
//! side deterministic; the real agent is used where the behaviour is the agent's.

use std::time::{Duration, Instant};

use orange::client::{AgentClient, ClientError, PollAnswer};
use orange::protocol::admin::{EnqueueRequest, OutputPage, output_path};
use orange::protocol::wire::{
    DO_STATUS_CANCELLED, DO_STATUS_DOING, DO_STATUS_SUCCESS, OutputAck, OutputChunk, PollControl,
};
use orange::protocol::{ReportRequest, WireTask};

use crate::support;
use crate::support::{
    Agent, AgentOpts, KillOnDrop, LiveRun, Server, ServerOpts, history, ms_between, process_alive,
    register_sim, wait_until,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A report of `do_status` for `task_id`.
fn report(task_id: &str, do_status: &str) -> ReportRequest {
    ReportRequest { task_id: task_id.into(), do_status: do_status.into(), ..ReportRequest::default() }
}

/// One orange-agent poll that must bring a task.
fn poll_task(agent: &AgentClient, capacity: usize) -> WireTask {
    match agent.poll(capacity).unwrap_or_else(|e| panic!("poll: {e}")) {
        PollAnswer::Task(task) => task,
        PollAnswer::Idle(control) => panic!("expected a task, got an idle answer {control:?}"),
    }
}

/// Polls (capacity 1) until a task comes or `within` passes.
fn poll_until_task(agent: &AgentClient, within: Duration) -> Option<(WireTask, Instant)> {
    let deadline = Instant::now() + within;
    for _ in 0..100 {
        if Instant::now() >= deadline {
            return None;
        }
        if let PollAnswer::Task(task) = agent.poll(1).unwrap_or_else(|e| panic!("poll: {e}")) {
            return Some((task, Instant::now()));
        }
    }
    None
}

/// An output chunk.
fn chunk(task_id: &str, seq: u32, stream: &str, data: &str) -> OutputChunk {
    OutputChunk {
        task_id: task_id.into(),
        seq,
        stream: stream.into(),
        data: data.into(),
        encoding: None,
        attempt: None,
    }
}

/// The message of a refused agent call.
fn refused<T: std::fmt::Debug>(result: Result<T, ClientError>) -> String {
    match result {
        Err(ClientError::Refused(message)) => message,
        other => panic!("expected a refusal (code 1), got {other:?}"),
    }
}

/// A server with a short poll window, one simulated agent `w1`, one task for it delivered and
/// acknowledged (`running`).
fn running_task(opts: ServerOpts) -> (Server, AgentClient, String) {
    let server = Server::start(opts);
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "shell", "sleep 60")[0].task_id.clone();
    assert_eq!(poll_task(&agent, 1).task_id, id);
    agent.report(&report(&id, DO_STATUS_DOING)).expect("ack");
    assert_eq!(server.task(&id).status.as_str(), "running");
    (server, agent, id)
}

// ---------------------------------------------------------------------------------------------
// Delivery

#[test]
fn unacknowledged_delivery_comes_back_after_the_ack_window_and_stops_once_acknowledged() {
    let opts = ServerOpts { poll_window: Some(1), ack_window: Some(1), ..ServerOpts::default() };
    let server = Server::start(opts);
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "ping", "p")[0].task_id.clone();

    let first = poll_task(&agent, 1);
    let delivered = Instant::now();
    assert_eq!((first.task_id.as_str(), first.attempt), (id.as_str(), Some(1)));
    assert_eq!(server.task(&id).status.as_str(), "delivered");

    // No `doing`: the same task comes back, not before the 1 s window and within a few seconds,
    // as the second delivery.
    let (again, at) = poll_until_task(&agent, Duration::from_secs(6)).expect("task handed out again");
    assert_eq!(
        again,
        WireTask { attempt: Some(2), ..first },
        "the same task object must be handed out again"
    );
    let gap = at - delivered;
    assert!(gap >= Duration::from_millis(900), "redelivered after only {gap:?} (ack window 1 s)");
    let view = server.task(&id);
    assert_eq!(history(&view), ["queued", "delivered", "queued", "delivered"], "{view:?}");
    let requeued_after = ms_between(&view.history[1].at, &view.history[2].at);
    assert!(requeued_after >= 1000, "requeued {requeued_after} ms after delivery: {view:?}");

    // Acknowledged now: it stays with the agent past several ack windows.
    agent.report(&report(&id, DO_STATUS_DOING)).expect("ack");
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < quiet_until {
        match agent.poll(1).expect("poll") {
            PollAnswer::Idle(control) => assert_eq!(control, PollControl::default()),
            PollAnswer::Task(task) => panic!("acknowledged task handed out again: {task:?}"),
        }
    }
    let view = server.task(&id);
    assert_eq!(history(&view), ["queued", "delivered", "queued", "delivered", "running"], "{view:?}");

    let mut done = report(&id, DO_STATUS_SUCCESS);
    done.result = "pong".into();
    agent.report(&done).expect("final report");
    let view = server.task(&id);
    assert_eq!(history(&view), ["queued", "delivered", "queued", "delivered", "running", "succeeded"]);
    assert_eq!(view.result, "pong");
}

#[test]
fn what_names_a_superseded_delivery_is_refused_and_changes_nothing() {
    // A holder of the first delivery (a clone of the agent's host, or the agent itself when the
    // answer to its acknowledgement was lost) speaks after the task was handed out again.
    let opts = ServerOpts { poll_window: Some(1), ack_window: Some(1), ..ServerOpts::default() };
    let server = Server::start(opts);
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "shell", "sleep 60")[0].task_id.clone();
    assert_eq!(poll_task(&agent, 1).attempt, Some(1));
    let (again, _) = poll_until_task(&agent, Duration::from_secs(6)).expect("task handed out again");
    assert_eq!(again.attempt, Some(2));

    let first = |report: ReportRequest| ReportRequest { attempt: Some(1), ..report };
    let message = refused(agent.report(&first(report(&id, DO_STATUS_DOING))));
    assert!(message.contains("delivery 1 was superseded by delivery 2"), "{message}");
    let stale_chunk = OutputChunk { attempt: Some(1), ..chunk(&id, 0, "stdout", "stale") };
    assert!(refused(agent.post_output(&stale_chunk)).contains("superseded"));
    assert_eq!(history(&server.task(&id)), ["queued", "delivered", "queued", "delivered"]);

    let second = |report: ReportRequest| ReportRequest { attempt: Some(2), ..report };
    agent.report(&second(report(&id, DO_STATUS_DOING))).expect("the second delivery's ack");
    agent
        .post_output(&OutputChunk { attempt: Some(2), ..chunk(&id, 0, "stdout", "fresh") })
        .expect("its chunk");
    let message = refused(agent.report(&first(report(&id, DO_STATUS_SUCCESS))));
    assert!(message.contains("superseded"), "a stale final report while the task runs: {message}");
    agent.report(&second(report(&id, DO_STATUS_SUCCESS))).expect("the second delivery's report");
    let view = server.task(&id);
    assert_eq!(history(&view), ["queued", "delivered", "queued", "delivered", "running", "succeeded"]);
    assert_eq!(view.stdout, "fresh", "only the current delivery's output: {view:?}");
}

#[test]
fn legacy_delivery_is_never_requeued_and_ends_lost_when_the_agent_goes_silent() {
    let opts = ServerOpts {
        poll_window: Some(1),
        ack_window: Some(1),
        default_timeout: Some(1),
        lost_grace: Some(1),
        ..ServerOpts::default()
    };
    let server = Server::start(opts);
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "ping", "p")[0].task_id.clone();
    // getTask without the capacity header, as the original client polls.
    let task = agent.get_task().expect("getTask").expect("a task");
    assert_eq!(task.task_id, id);
    assert_eq!(task.timeout_secs, Some(1));

    // Past the ack window (1 s) and until the end: never handed out again.
    let started = Instant::now();
    let mut view = server.task(&id);
    while !view.status.is_final() {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "not lost after {:?}: {view:?}",
            started.elapsed()
        );
        if let Some(again) = agent.get_task().expect("getTask") {
            panic!("legacy delivery handed out again: {again:?}");
        }
        view = server.task(&id);
    }
    assert_eq!(view.status.as_str(), "lost", "{view:?}");
    assert_eq!(history(&view), ["queued", "delivered", "lost"]);
    // Timeout 1 s plus grace 1 s after the delivery.
    let silent_for = ms_between(&view.history[1].at, &view.history[2].at);
    assert!((2000..5000).contains(&silent_for), "lost {silent_for} ms after delivery: {view:?}");
    assert_eq!(
        view.error.as_deref(),
        Some("its agent went silent: no result before the timeout plus grace"),
        "{view:?}"
    );
    // A late report does not revive it.
    let late = refused(agent.report(&report(&id, DO_STATUS_SUCCESS)));
    assert_eq!(late, format!("task {id} already finished as lost"));
}

#[test]
fn a_task_past_its_ttl_in_the_queue_ends_expired() {
    let opts = ServerOpts { poll_window: Some(1), ttl: Some(1), ..ServerOpts::default() };
    let server = Server::start(opts);
    // Registered (so listed online) but never polling.
    register_sim(&server, "silent");
    let by_flag = server.enqueue(&["silent"], "ping", "")[0].task_id.clone();
    let by_api = EnqueueRequest {
        app_ids: vec!["silent".into()],
        task_type: "ping".into(),
        ttl_secs: Some(3),
        require_online: false,
        ..EnqueueRequest::default()
    };
    let by_api = server.enqueue_request(&by_api)[0].task_id.clone();
    let send = server.operator(&["task", "send", "--appid", "silent", "--type", "ping", "--ttl", "3"]).run();
    send.assert_success();
    let by_cli = send.stdout.trim().to_owned();

    let started = Instant::now();
    let view = server.wait_task(&by_flag, 10);
    assert_eq!(view.status.as_str(), "expired", "{view:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "expired only after {:?}", started.elapsed());
    assert_eq!(history(&view), ["queued", "expired"]);
    let waited = ms_between(&view.history[0].at, &view.history[1].at);
    assert!((1000..3500).contains(&waited), "expired {waited} ms after enqueue");
    assert_eq!(view.error.as_deref(), Some("never delivered before its time to live ran out"));
    // A task's own TTL (3 s, by API or CLI) overrides the server's (1 s).
    assert_eq!(server.task(&by_api).status.as_str(), "queued");
    assert_eq!(server.task(&by_cli).status.as_str(), "queued");

    let run = server.operator(&["task", "get", &by_flag, "--json"]).run();
    run.assert_success();
    let json = run.json();
    assert_eq!(json["status"], "expired", "{run}");
    assert_eq!(json["history"][0]["status"], "queued", "{run}");
    assert_eq!(json["history"][1]["status"], "expired", "{run}");

    for id in [&by_api, &by_cli] {
        let view = server.wait_task(id, 10);
        assert_eq!(view.status.as_str(), "expired", "{view:?}");
        let waited = ms_between(&view.history[0].at, &view.history[1].at);
        assert!((3000..5500).contains(&waited), "expired {waited} ms after enqueue, TTL 3 s");
    }
    // An expired task is never handed out.
    let agent = AgentClient::new(&server.url, "silent", support::SIM_SECRET);
    assert!(matches!(agent.poll(4).expect("poll"), PollAnswer::Idle(_)));
}

#[test]
fn task_run_queue_with_a_ttl_ends_expired_when_the_agent_never_polls() {
    let server = Server::start(ServerOpts::poll_window(1));
    register_sim(&server, "silent");
    let run = server
        .operator(&["task", "run", "--appid", "silent", "--queue", "--ttl", "2", "--", "echo never"])
        .run();
    assert_eq!(run.code(), Some(255), "an expired task has no exit code\n{run}");
    assert!(run.elapsed < Duration::from_secs(8), "{run}");
    assert_eq!(run.stdout, "", "{run}");
    let tasks = server.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(history(&tasks[0]), ["queued", "expired"], "{run}");
    let waited = ms_between(&tasks[0].history[0].at, &tasks[0].history[1].at);
    assert!((2000..4500).contains(&waited), "expired {waited} ms after enqueue, TTL 2 s");
}

// ---------------------------------------------------------------------------------------------
// Cancel

#[test]
fn cancel_of_a_queued_task_ends_it_at_once_and_it_is_never_delivered() {
    let server = Server::start(ServerOpts::poll_window(1));
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "shell", "echo never")[0].task_id.clone();
    let view = server.cancel(&id, false).expect("cancel");
    assert_eq!(view.status.as_str(), "cancelled", "{view:?}");
    assert!(!view.cancel_requested);
    assert_eq!(history(&view), ["queued", "cancelled"]);
    assert_eq!(view.error.as_deref(), Some("cancelled before it was delivered"));
    assert_eq!(server.task(&id), view);
    // Neither an orange poll nor a legacy one gets it, and no cancel is sent for it.
    assert_eq!(agent.poll(1).expect("poll"), PollAnswer::Idle(PollControl::default()));
    assert_eq!(agent.get_task().expect("getTask"), None);
}

#[test]
fn cancel_of_a_running_task_reaches_a_parked_poll_at_once_and_ends_with_the_agents_report() {
    let (server, agent, id) = running_task(ServerOpts::poll_window(20));
    let url = server.url.clone();
    let parked = std::thread::spawn(move || {
        let agent = AgentClient::new(&url, "w1", support::SIM_SECRET);
        let answer = agent.poll(0);
        (answer, Instant::now())
    });
    // There is no observable "parked" state: give the poll a moment to reach the server.
    std::thread::sleep(Duration::from_millis(500));
    let asked = Instant::now();
    let view = server.cancel(&id, false).expect("cancel");
    assert_eq!(view.status.as_str(), "running", "{view:?}");
    assert!(view.cancel_requested, "{view:?}");

    let (answer, answered) = parked.join().expect("poller");
    let control = match answer.expect("poll") {
        PollAnswer::Idle(control) => control,
        other => panic!("expected the cancel list, got {other:?}"),
    };
    assert_eq!(control.cancel, vec![id.clone()]);
    let latency = answered.saturating_duration_since(asked);
    assert!(
        latency < Duration::from_secs(2),
        "cancel reached the parked poll after {latency:?} (window 20 s)"
    );

    // A chunk posted meanwhile is stored and answered with the cancel flag.
    assert_eq!(
        agent.post_output(&chunk(&id, 0, "stdout", "partial\n")).expect("output"),
        OutputAck { cancel: true }
    );
    agent.report(&report(&id, DO_STATUS_CANCELLED)).expect("cancelled report");
    let view = server.task(&id);
    assert_eq!(view.status.as_str(), "cancelled", "{view:?}");
    assert!(!view.cancel_requested, "{view:?}");
    assert_eq!(history(&view), ["queued", "delivered", "running", "cancelled"]);
    assert_eq!(view.stdout, "partial\n");
}

#[test]
fn forced_cancel_ends_the_task_at_once_and_still_tells_the_agent_once() {
    let (server, agent, id) = running_task(ServerOpts::poll_window(2));
    let view = server.cancel(&id, true).expect("force cancel");
    assert_eq!(view.status.as_str(), "cancelled", "{view:?}");
    assert!(!view.cancel_requested);
    assert_eq!(history(&view), ["queued", "delivered", "running", "cancelled"]);
    assert_eq!(
        view.error.as_deref(),
        Some("cancelled by force on the server; its agent was told to stop it")
    );

    let started = Instant::now();
    assert_eq!(agent.poll(0).expect("poll"), PollAnswer::Idle(PollControl { cancel: vec![id.clone()] }));
    assert!(started.elapsed() < Duration::from_secs(1), "the cancel was not answered at once");
    // Told once: within the resend interval (10 s) the next poll waits out its window empty.
    let started = Instant::now();
    assert_eq!(agent.poll(0).expect("poll"), PollAnswer::Idle(PollControl::default()));
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "empty poll ended after {:?}",
        started.elapsed()
    );

    // The agent's confirmation matches the final state and is accepted; output is refused.
    agent.report(&report(&id, DO_STATUS_CANCELLED)).expect("confirmation");
    let message = refused(agent.post_output(&chunk(&id, 0, "stdout", "late")));
    assert_eq!(message, format!("task {id} already finished as cancelled"));
    assert_eq!(server.task(&id), view, "the record changed after the force cancel");
}

#[test]
fn cancel_of_a_finished_task_is_a_conflict_with_its_state() {
    let (server, agent, id) = running_task(ServerOpts::poll_window(1));
    agent.report(&report(&id, DO_STATUS_SUCCESS)).expect("final report");
    let before = server.task(&id);
    for force in [false, true] {
        match server.cancel(&id, force) {
            Err(ClientError::Api { status: 409, message }) => {
                assert_eq!(message, format!("task {id} already finished as succeeded"));
            }
            other => panic!("expected 409, got {other:?}"),
        }
    }
    assert_eq!(server.task(&id), before);
    match server.cancel("0190b6a4-0000-7000-8000-000000000000", false) {
        Err(ClientError::Api { status: 404, .. }) => {}
        other => panic!("expected 404 for an unknown task, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

#[test]
fn output_chunks_are_stored_in_order_once_and_a_gap_is_refused() {
    let server = Server::start(ServerOpts::poll_window(1));
    let agent = register_sim(&server, "w1");
    let id = server.enqueue(&["w1"], "shell", "x")[0].task_id.clone();
    assert_eq!(poll_task(&agent, 1).task_id, id);

    // The first chunk shows the agent runs it, even before a `doing`.
    let sent = [("stdout", "one\n"), ("stderr", "warn\n"), ("stdout", "two\n")];
    for (seq, (stream, data)) in sent.iter().enumerate() {
        let ack = agent.post_output(&chunk(&id, seq as u32, stream, data)).expect("chunk");
        assert_eq!(ack, OutputAck { cancel: false });
    }
    let page = server.output(&id, 0, 0);
    let got: Vec<(u32, &str, &str)> =
        page.chunks.iter().map(|c| (c.seq, c.stream.as_str(), c.data.as_str())).collect();
    assert_eq!(got, [(0, "stdout", "one\n"), (1, "stderr", "warn\n"), (2, "stdout", "two\n")]);
    assert_eq!((page.next, page.done, page.status.as_str(), page.dropped_bytes), (3, false, "running", 0));
    let before = server.task(&id);
    assert_eq!(history(&before), ["queued", "delivered", "running"]);
    assert_eq!((before.stdout.as_str(), before.stderr.as_str()), ("one\ntwo\n", "warn\n"));

    // A retried chunk is acknowledged and not stored again (nor replaced).
    assert_eq!(
        agent.post_output(&chunk(&id, 1, "stderr", "DUPLICATE\n")).expect("dup"),
        OutputAck::default()
    );
    // A chunk that skips ahead is refused.
    let message = refused(agent.post_output(&chunk(&id, 5, "stdout", "gap\n")));
    assert_eq!(message, format!("output chunk 5 of task {id} is out of order; expected 3"));
    assert_eq!(server.task(&id), before, "a duplicate or refused chunk changed the record");
    assert_eq!(server.output(&id, 0, 0), page);

    // The final report says the output was streamed: its own stdout/stderr are ignored.
    let mut done = report(&id, DO_STATUS_SUCCESS);
    done.exit_code = Some(0);
    done.output_chunks = Some(3);
    done.stdout = Some("IGNORED".into());
    done.stderr = Some("IGNORED".into());
    agent.report(&done).expect("final report");
    let view = server.task(&id);
    assert_eq!((view.stdout.as_str(), view.stderr.as_str()), ("one\ntwo\n", "warn\n"), "{view:?}");
    let page = server.output(&id, 0, 0);
    assert_eq!((page.chunks.len(), page.next, page.done, page.status.as_str()), (3, 3, true, "succeeded"));
    let message = refused(agent.post_output(&chunk(&id, 3, "stdout", "late\n")));
    assert_eq!(message, format!("task {id} already finished as succeeded"));
    assert_eq!(server.task(&id), view);
}

#[test]
fn a_parked_output_follow_returns_as_soon_as_a_chunk_arrives() {
    let (server, agent, id) = running_task(ServerOpts::poll_window(1));
    agent.post_output(&chunk(&id, 0, "stdout", "a\n")).expect("chunk 0");

    // Nothing new after 1: the page is empty after the wait and the cursor stays.
    let started = Instant::now();
    let page = server.output(&id, 1, 1);
    assert!(started.elapsed() >= Duration::from_millis(900), "returned after {:?}", started.elapsed());
    assert!(page.chunks.is_empty(), "{page:?}");
    assert_eq!((page.next, page.done), (1, false));

    let follower = follow(&server, &id, 1);
    std::thread::sleep(Duration::from_millis(500));
    let posted = Instant::now();
    agent.post_output(&chunk(&id, 1, "stdout", "b\n")).expect("chunk 1");
    let (page, returned) = follower.join().expect("follower");
    let latency = returned.saturating_duration_since(posted);
    assert!(latency < Duration::from_secs(1), "the parked follow returned {latency:?} after the chunk");
    let got: Vec<(u32, &str)> = page.chunks.iter().map(|c| (c.seq, c.data.as_str())).collect();
    assert_eq!(got, [(1, "b\n")]);
    assert_eq!((page.next, page.done), (2, false));

    // The final report ends a follow that waits for more.
    let follower = follow(&server, &id, 2);
    std::thread::sleep(Duration::from_millis(300));
    let mut done = report(&id, DO_STATUS_SUCCESS);
    done.output_chunks = Some(2);
    agent.report(&done).expect("final");
    let (page, _) = follower.join().expect("follower");
    assert!(page.chunks.is_empty());
    assert_eq!((page.next, page.done, page.status.as_str()), (2, true, "succeeded"));
}

/// Follows `id`'s output from `after` on another thread (waiting up to 20 s); the thread returns
/// the page and when it came.
fn follow(server: &Server, id: &str, after: u32) -> std::thread::JoinHandle<(OutputPage, Instant)> {
    let admin = server.admin();
    let path = format!("{}?after={after}&wait=20", output_path(id));
    std::thread::spawn(move || (admin.get::<OutputPage>(&path).expect("follow"), Instant::now()))
}

/// A 64 KiB chunk that says which one it is.
fn numbered_chunk(seq: u32) -> String {
    let mut data = format!("<chunk {seq}>");
    data.push_str(&"x".repeat(64 * 1024 - data.len()));
    data
}

#[test]
fn output_over_the_cap_keeps_head_and_tail_and_counts_what_it_dropped() {
    const CHUNKS: u32 = 48; // 3 MiB in 64 KiB chunks against a 1 MiB cap
    let opts = ServerOpts { poll_window: Some(1), output_cap_mb: Some(1), ..ServerOpts::default() };
    let (server, agent, id) = running_task(opts);
    for seq in 0..CHUNKS {
        agent.post_output(&chunk(&id, seq, "stdout", &numbered_chunk(seq))).expect("chunk");
    }
    let mut done = report(&id, DO_STATUS_SUCCESS);
    done.output_chunks = Some(CHUNKS);
    agent.report(&done).expect("final");

    // Half the cap (512 KiB = 8 chunks) of head, half of tail (the last 8), the 32 between dropped.
    let dropped = 32 * 64 * 1024;
    let view = server.task(&id);
    assert_eq!(view.dropped_bytes, dropped);
    let mut expected: String = (0..8).map(numbered_chunk).collect();
    expected.push_str(&format!("\n[orange: {dropped} bytes of output dropped]\n"));
    expected.extend((CHUNKS - 8..CHUNKS).map(numbered_chunk));
    assert!(view.stdout == expected, "stdout is {} bytes, expected {}", view.stdout.len(), expected.len());

    let page = server.output(&id, 0, 0);
    let seqs: Vec<u32> = page.chunks.iter().map(|c| c.seq).collect();
    let kept: Vec<u32> = (0..8).chain(CHUNKS - 8..CHUNKS).collect();
    assert_eq!(seqs, kept);
    assert!(page.chunks.iter().all(|c| c.data == numbered_chunk(c.seq)));
    assert_eq!((page.next, page.done, page.dropped_bytes), (CHUNKS, true, dropped));
}

// ---------------------------------------------------------------------------------------------
// The real agent and CLI

/// A server and a real shell-enabled agent `e1`, online.
fn server_and_shell_agent() -> (Server, Agent) {
    let server = Server::start(ServerOpts::poll_window(5));
    let agent = Agent::start_online(&server, "e1", AgentOpts::shell());
    (server, agent)
}

/// Prints 1 to 5, one a second.
const COUNT_SLOWLY: &str = "for i in $(seq 5); do echo $i; sleep 1; done";

/// Asserts `lines` are 1..=5 and arrived over time: the first well before the last.
fn assert_streamed(run: &support::Run, lines: &[(Duration, String)], offset: usize) {
    let numbers: Vec<&str> = lines[offset..].iter().map(|(_, l)| l.trim_end()).collect();
    assert_eq!(numbers, ["1", "2", "3", "4", "5"], "{run}");
    let first = lines[offset].0;
    let last = lines[offset + 4].0;
    let arrivals: Vec<Duration> = lines.iter().map(|(at, _)| *at).collect();
    eprintln!("{}: lines arrived at {arrivals:?}, run took {:?}", run.command, run.elapsed);
    // The task takes about 5 s; printed only at the end, all lines would arrive within a moment.
    assert!(last - first >= Duration::from_secs(3), "lines arrived together: {arrivals:?}\n{run}");
    assert!(
        run.elapsed - first >= Duration::from_secs(3),
        "the first line came {first:?} into a {:?} run: not live\n{run}",
        run.elapsed
    );
}

#[test]
fn task_logs_follow_streams_a_running_tasks_output() {
    let (server, _agent) = server_and_shell_agent();
    let id = server.send_task("e1", "shell", &[], COUNT_SLOWLY);
    let live: LiveRun = server.operator(&["task", "logs", "-f", &id]).live();
    let (run, lines) = live.finish(Duration::from_secs(20));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(lines.len(), 5, "{run}");
    assert_streamed(&run, &lines, 0);
    assert_eq!(server.task(&id).status.as_str(), "succeeded");
}

#[test]
fn task_run_prints_output_live() {
    let (server, _agent) = server_and_shell_agent();
    let live = server.operator(&["task", "run", "--appid", "e1", "--", COUNT_SLOWLY]).live();
    let (run, lines) = live.finish(Duration::from_secs(20));
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(lines.len(), 5, "{run}");
    assert_streamed(&run, &lines, 0);
}

#[test]
fn task_cancel_stops_a_real_task_within_seconds() {
    let (server, mut agent) = server_and_shell_agent();
    let dir = tempfile::TempDir::with_prefix("orange-cancel-").expect("temp dir");
    let pid_file = dir.path().join("pid");
    let payload = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let id = server.send_task("e1", "shell", &[], &payload);
    let mut pid = None;
    wait_until(Duration::from_secs(10), "the task's sleep to start", || {
        pid = std::fs::read_to_string(&pid_file).ok().and_then(|t| t.trim().parse::<u32>().ok());
        pid.is_some_and(process_alive)
    });
    let pid = pid.expect("pid");
    let _cleanup = KillOnDrop(pid);

    let started = Instant::now();
    let run = server.operator(&["task", "cancel", &id]).run();
    run.assert_success();
    let view = server.wait_task(&id, 10);
    assert_eq!(view.status.as_str(), "cancelled", "{view:?}\n{run}");
    assert!(started.elapsed() < Duration::from_secs(5), "cancel took {:?}", started.elapsed());
    assert_eq!(history(&view).last(), Some(&"cancelled"));
    wait_until(Duration::from_secs(3), "the sleep process to be gone", || !process_alive(pid));
    agent.assert_running();
}

#[test]
fn a_real_task_past_its_timeout_ends_timed_out() {
    let (server, _agent) = server_and_shell_agent();
    let started = Instant::now();
    let id = server.send_task("e1", "shell", &["--timeout", "1"], "sleep 30");
    let view = server.wait_task(&id, 15);
    assert_eq!(view.status.as_str(), "timed_out", "{view:?}");
    assert!(started.elapsed() < Duration::from_secs(8), "a 1 s timeout took {:?}", started.elapsed());
    assert_eq!(history(&view), ["queued", "delivered", "running", "timed_out"]);
}
