//! Unit tests of the store's rules, each run on both engines: FIFO order, idempotent enqueue,
//! report transitions, output chunks and the cap, cancels, deadlines, retention, reopening.
//! A few look at what only sled has (its blob files, its log).

use std::collections::BTreeMap;

use test_case::test_case;

use super::test_engines::{Engine, Place};
use super::*;
use crate::protocol::task::new_task_id;

const MINUTE: i64 = 60_000;

pub(super) fn open_with(policy: Policy) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 * 1024 * 1024, policy).unwrap();
    (dir, store)
}

pub(super) fn open() -> (tempfile::TempDir, Store) {
    open_with(Policy::default())
}

/// A new store on `engine`, with `policy`.
pub(super) fn open_on_with(engine: Engine, policy: Policy) -> (Place, Store) {
    let place = Place::new(engine);
    let store = place.open(policy);
    (place, store)
}

/// A new store on `engine`.
pub(super) fn open_on(engine: Engine) -> (Place, Store) {
    open_on_with(engine, Policy::default())
}

/// A store opened on a copy of only the write-ahead log of the data directory `dir` (whose
/// store may still be open): what replaying the log alone gives.
pub(super) fn rebuilt_from_log(dir: &std::path::Path) -> (tempfile::TempDir, Store) {
    let copy = tempfile::tempdir().unwrap();
    let wal_copy = copy.path().join(WAL_DIR);
    std::fs::create_dir(&wal_copy).unwrap();
    for entry in std::fs::read_dir(dir.join(WAL_DIR)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), wal_copy.join(entry.file_name())).unwrap();
    }
    let store = Store::open(copy.path(), 8 * 1024 * 1024, Policy::default()).unwrap();
    (copy, store)
}

pub(super) fn agent(app_id: &str) -> AgentRecord {
    AgentRecord {
        app_id: app_id.into(),
        secret: "s".into(),
        labels: BTreeMap::new(),
        version: None,
        hostname: None,
        registered_at_ms: 1,
        last_seen_ms: 1,
        processed_task_count: 0,
        status: AgentStatus::Accepted,
    }
}

/// The environment of a task without one.
pub(super) static NO_ENV: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();

pub(super) fn spec(app_id: &str) -> TaskSpec<'_> {
    TaskSpec {
        app_id,
        task_type: "ping",
        payload: "",
        env: &NO_ENV,
        cwd: None,
        user: None,
        stdin: &[],
        timeout_secs: 60,
        ttl_secs: 3600,
    }
}

pub(super) fn queued(store: &Store, app_id: &str, n: usize) -> Vec<TaskId> {
    let mut tasks: Vec<TaskRecord> =
        (0..n).map(|_| TaskRecord::new(spec(app_id), new_task_id(), 10)).collect();
    store.enqueue(&mut tasks).unwrap();
    tasks.iter().map(|t| t.id).collect()
}

pub(super) fn take(store: &Store, app_id: &str) -> Option<TaskRecord> {
    store.take_next(app_id, Delivery::Acknowledged, &[], &mut Vec::new(), 20).unwrap()
}

fn outcome(status: TaskStatus, stdout: &str) -> Outcome {
    Outcome {
        status,
        exit_code: Some(0),
        error: None,
        duration_ms: Some(3),
        output: vec![(Stream::Stdout, stdout.as_bytes().to_vec())],
        attempt: None,
    }
}

pub(super) fn success(stdout: &str) -> Outcome {
    outcome(TaskStatus::Succeeded, stdout)
}

fn status(store: &Store, id: TaskId) -> TaskStatus {
    store.task(id).unwrap().unwrap().status
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn queues_are_fifo_per_agent_and_separate(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let a = queued(&store, "a", 3);
    let b = queued(&store, "b", 1);
    let taken: Vec<TaskId> = std::iter::from_fn(|| take(&store, "a")).map(|t| t.id).collect();
    assert_eq!(taken, a);
    let only_b = take(&store, "b").unwrap();
    assert_eq!(only_b.id, b[0]);
    assert_eq!(only_b.status, TaskStatus::Delivered);
    assert!(take(&store, "b").is_none());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn concurrent_large_enqueues_all_get_queue_numbers(engine: Engine) {
    // Eight writers of 200 tasks at once drain the shared pool of queue numbers between each
    // other's reservation and transaction; every enqueue must still go through.
    let (_dir, store) = open_on(engine);
    std::thread::scope(|scope| {
        for writer in 0..8 {
            let store = &store;
            scope.spawn(move || {
                for round in 0..10 {
                    let mut tasks: Vec<TaskRecord> = (0..200)
                        .map(|i| TaskRecord::new(spec(&format!("w{writer}-{}", i % 7)), new_task_id(), 10))
                        .collect();
                    store
                        .enqueue(&mut tasks)
                        .unwrap_or_else(|e| panic!("writer {writer} round {round}: {e}"));
                }
            });
        }
    });
    let queued: usize = (0..8)
        .flat_map(|writer| (0..7).map(move |agent| format!("w{writer}-{agent}")))
        .map(|app_id| std::iter::from_fn(|| take(&store, &app_id)).count())
        .sum();
    assert_eq!(queued, 8 * 10 * 200);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn enqueue_with_the_same_id_twice_stores_it_once(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let mut task = vec![TaskRecord::new(spec("a"), new_task_id(), 10)];
    store.enqueue(&mut task).unwrap();
    store.enqueue(&mut task).unwrap();
    assert!(take(&store, "a").is_some());
    assert!(take(&store, "a").is_none());
    // Named twice in one enqueue, with one already stored: each new one once.
    let fresh = TaskRecord::new(spec("a"), new_task_id(), 11);
    let mut tasks = vec![fresh.clone(), task[0].clone(), fresh.clone()];
    store.enqueue(&mut tasks).unwrap();
    assert_eq!(take(&store, "a").map(|t| t.id), Some(fresh.id));
    assert!(take(&store, "a").is_none());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn report_moves_the_task_and_stores_output_in_chunks(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.put_agent(&agent("a")).unwrap();
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    let big = "x".repeat(CHUNK_LEN * 2 + 5);
    let task = store.apply_report("a", id, &success(&big), 30).unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    let states: Vec<TaskStatus> = task.history.iter().map(|(s, _)| *s).collect();
    use TaskStatus::*;
    assert_eq!(states, vec![Queued, Delivered, Running, Succeeded]);
    assert_eq!(task.output.next_seq, 3);
    assert_eq!(store.output_text(&task, Stream::Stdout, usize::MAX).unwrap(), big.as_bytes());
    assert_eq!(store.output_text(&task, Stream::Stdout, 10).unwrap().len(), 10);
    assert_eq!(store.agent("a").unwrap().unwrap().processed_task_count, 1);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_task_keeps_its_stdin_until_it_ends_and_is_stored_without_it_after(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.put_agent(&agent("a")).unwrap();
    let mut spec = spec("a");
    spec.stdin = b"input bytes";
    let mut tasks = vec![TaskRecord::new(spec, new_task_id(), 10)];
    store.enqueue(&mut tasks).unwrap();
    let id = tasks[0].id;
    let stdin = ["stdin".to_owned()];
    let taken = store.take_next("a", Delivery::Acknowledged, &stdin, &mut Vec::new(), 20).unwrap();
    assert_eq!(taken.expect("handed out").stdin, b"input bytes", "the delivery carries the stdin");
    assert_eq!(
        store.task(id).unwrap().unwrap().stdin,
        b"input bytes",
        "kept while it may be handed out again"
    );
    store.apply_report("a", id, &success(""), 30).unwrap();
    assert!(store.task(id).unwrap().unwrap().stdin.is_empty(), "an ended task is stored without its stdin");
}

#[test]
fn a_sync_makes_sleds_blob_files_durable_too() {
    let (_dir, store) = open();
    let mut spec = spec("a");
    // Past sled's blob threshold (128 KiB): sled keeps the record in a file of its own.
    let big = vec![7u8; 300 * 1024];
    spec.stdin = &big;
    let mut tasks = vec![TaskRecord::new(spec, new_task_id(), 10)];
    store.enqueue(&mut tasks).unwrap();
    store.trees().sync().unwrap();
    assert!(store.trees().synced_blob_count() >= 1, "the task record's blob file was synced");
    assert_eq!(store.task(tasks[0].id).unwrap().unwrap().stdin, big);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn repeated_report_is_accepted_and_conflicting_one_refused(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.put_agent(&agent("a")).unwrap();
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    store.apply_report("a", id, &success("one"), 30).unwrap();
    let again = store.apply_report("a", id, &success("two"), 31).unwrap();
    assert_eq!(store.output_text(&again, Stream::Stdout, 100).unwrap(), b"one");
    assert_eq!(store.agent("a").unwrap().unwrap().processed_task_count, 1);
    let err = store.apply_report("a", id, &outcome(TaskStatus::Failed, ""), 32).unwrap_err();
    assert!(matches!(err, ReportError::AlreadyFinished { status: TaskStatus::Succeeded, .. }), "{err}");
}

#[test]
fn a_batch_of_reports_is_applied_in_order_in_one_transaction_and_refusals_stay_apart() {
    let (dir, store) = open();
    store.put_agent(&agent("a")).unwrap();
    let ids = queued(&store, "a", 2);
    let foreign = queued(&store, "b", 1)[0];
    let (first, second) = (take(&store, "a").unwrap().id, take(&store, "a").unwrap().id);
    assert_eq!([first, second], [ids[0], ids[1]]);
    let batch = [
        (first, outcome(TaskStatus::Running, "")),
        (first, success("one")),
        (foreign, success("not mine")),
        (second, success("two")),
    ];
    let results = store.apply_reports("a", &batch, 30).unwrap();
    let statuses: Vec<_> = results.iter().map(|r| r.as_ref().map(|t| t.status)).collect();
    assert!(matches!(
        statuses[..],
        [Ok(TaskStatus::Running), Ok(TaskStatus::Succeeded), Err(_), Ok(TaskStatus::Succeeded)]
    ));
    assert!(matches!(results[2], Err(ReportError::NotYours(id)) if id == foreign));
    assert_eq!(
        (status(&store, first), status(&store, second)),
        (TaskStatus::Succeeded, TaskStatus::Succeeded)
    );
    assert_eq!(status(&store, foreign), TaskStatus::Queued);
    assert_eq!(store.agent("a").unwrap().unwrap().processed_task_count, 2);
    // The log alone holds the same.
    let (_copy, rebuilt) = rebuilt_from_log(dir.path());
    assert_eq!(status(&rebuilt, second), TaskStatus::Succeeded);
    assert_eq!(rebuilt.agent("a").unwrap().unwrap().processed_task_count, 2);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn reports_for_unknown_or_foreign_tasks_are_refused(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    assert!(matches!(store.apply_report("b", id, &success(""), 30), Err(ReportError::NotYours(_))));
    let unknown = new_task_id();
    assert!(matches!(store.apply_report("a", unknown, &success(""), 30), Err(ReportError::UnknownTask(_))));
    assert_eq!(status(&store, id), TaskStatus::Queued);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_report_for_a_still_queued_task_takes_it_out_of_the_queue(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    store.apply_report("a", id, &success("ran"), 30).unwrap();
    assert!(take(&store, "a").is_none(), "a task that ran must not be handed out again");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn chunks_are_stored_once_in_order(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    store
        .store_chunk("a", &NewChunk { id, seq: 0, stream: Stream::Stdout, data: b"one ", attempt: None }, 30)
        .unwrap();
    store
        .store_chunk("a", &NewChunk { id, seq: 0, stream: Stream::Stdout, data: b"one ", attempt: None }, 31)
        .unwrap(); // a retry
    let skipped = store
        .store_chunk("a", &NewChunk { id, seq: 2, stream: Stream::Stdout, data: b"three", attempt: None }, 32)
        .unwrap_err();
    assert!(matches!(skipped, ReportError::OutOfOrder { seq: 2, expected: 1, .. }), "{skipped}");
    store
        .store_chunk("a", &NewChunk { id, seq: 1, stream: Stream::Stderr, data: b"oops", attempt: None }, 33)
        .unwrap();
    let task = store.task(id).unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Running, "a chunk shows the task runs");
    assert_eq!(store.output_text(&task, Stream::Stdout, 100).unwrap(), b"one ");
    assert_eq!(store.output_text(&task, Stream::Stderr, 100).unwrap(), b"oops");
    let seqs: Vec<u32> = store.chunks(id, 0, usize::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(seqs, vec![0, 1]);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn output_over_the_cap_keeps_head_and_tail_and_counts_the_rest(engine: Engine) {
    let cap = 4 * CHUNK_LEN as u64;
    let (_dir, store) = open_on_with(engine, Policy { output_cap: cap, ..Policy::default() });
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    for seq in 0..10u32 {
        let data = vec![b'0' + seq as u8; CHUNK_LEN];
        store
            .store_chunk("a", &NewChunk { id, seq, stream: Stream::Stdout, data: &data, attempt: None }, 30)
            .unwrap();
    }
    let task = store.task(id).unwrap().unwrap();
    let kept: Vec<u32> = store.chunks(id, 0, usize::MAX).unwrap().iter().map(|c| c.seq).collect();
    assert_eq!(kept, vec![0, 1, 8, 9], "head 0-1 and tail 8-9 within the cap");
    assert_eq!(task.output.dropped_bytes, 6 * CHUNK_LEN as u64);
    let text = store.output_text(&task, Stream::Stdout, usize::MAX).unwrap();
    let note = format!("[orange: {} bytes of output dropped]", 6 * CHUNK_LEN);
    assert!(String::from_utf8_lossy(&text).contains(&note));
    assert!(text.ends_with(&vec![b'9'; CHUNK_LEN]));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn cancel_withdraws_a_queued_task_and_marks_a_running_one(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let ids = queued(&store, "a", 2);
    let first = take(&store, "a").unwrap().id;
    assert_eq!(first, ids[0]);
    let withdrawn = store.cancel(ids[1], false, 30).unwrap();
    assert_eq!((withdrawn.task.status, withdrawn.tell_agent), (TaskStatus::Cancelled, false));
    assert!(take(&store, "a").is_none(), "a cancelled task is not handed out");
    let asked = store.cancel(first, false, 31).unwrap();
    assert_eq!(
        (asked.task.status, asked.task.cancel_requested, asked.tell_agent),
        (TaskStatus::Delivered, true, true)
    );
    assert_eq!(store.pending_cancels("a").unwrap(), vec![first]);
    store.apply_report("a", first, &outcome(TaskStatus::Cancelled, "partial"), 32).unwrap();
    assert!(store.pending_cancels("a").unwrap().is_empty());
    let err = store.cancel(first, false, 33).unwrap_err();
    assert!(matches!(err, ReportError::AlreadyFinished { status: TaskStatus::Cancelled, .. }));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn forced_cancel_ends_at_once_and_still_tells_the_agent(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    let forced = store.cancel(id, true, 30).unwrap();
    assert_eq!(forced.task.status, TaskStatus::Cancelled);
    assert_eq!(store.pending_cancels("a").unwrap(), vec![id]);
    // The agent confirms later: accepted as a repeat, and the pending cancel is gone.
    store.apply_report("a", id, &outcome(TaskStatus::Cancelled, ""), 40).unwrap();
    assert!(store.pending_cancels("a").unwrap().is_empty());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn an_unacknowledged_delivery_is_handed_out_again_at_the_front(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let ids = queued(&store, "a", 2);
    take(&store, "a");
    let ack_deadline = 20 + Policy::default().ack_window_ms;
    assert!(store.sweep_deadlines(ack_deadline - 1).unwrap().is_empty());
    let swept = store.sweep_deadlines(ack_deadline).unwrap();
    assert_eq!((swept.len(), swept[0].requeued), (1, true));
    assert_eq!(take(&store, "a").unwrap().id, ids[0], "back at the front of the queue");
    let task = store.task(ids[0]).unwrap().unwrap();
    let states: Vec<TaskStatus> = task.history.iter().map(|(s, _)| *s).collect();
    use TaskStatus::*;
    assert_eq!(states, vec![Queued, Delivered, Queued, Delivered]);
}

/// `outcome` as sent by the holder of delivery `attempt`.
fn of_delivery(attempt: u32, outcome: Outcome) -> Outcome {
    Outcome { attempt: Some(attempt), ..outcome }
}

/// Chunk `seq` of task `id` from the holder of delivery `attempt` (`None`: an agent that names
/// none).
fn chunk_of(id: TaskId, seq: u32, attempt: Option<u32>) -> NewChunk<'static> {
    NewChunk { id, seq, stream: Stream::Stdout, data: b"out", attempt }
}

/// A task of agent `a` handed out once (delivery 1) and back in the queue after its ack
/// window; its id and the end of that window.
fn requeued_after_one_delivery(store: &Store) -> (TaskId, i64) {
    let id = queued(store, "a", 1)[0];
    assert_eq!(take(store, "a").unwrap().attempt, 1);
    let ack_deadline = 20 + Policy::default().ack_window_ms;
    assert!(store.sweep_deadlines(ack_deadline).unwrap()[0].requeued);
    (id, ack_deadline)
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn each_hand_out_numbers_the_delivery_and_a_superseded_one_is_fenced_off(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let (id, ack_deadline) = requeued_after_one_delivery(&store);
    let again = store.take_next("a", Delivery::Acknowledged, &[], &mut Vec::new(), ack_deadline + 1).unwrap();
    assert_eq!(again.unwrap().attempt, 2, "handed out again: the second delivery");

    // The holder of the first delivery acknowledges late, streams, reports: all refused.
    let late =
        store.apply_report("a", id, &of_delivery(1, outcome(TaskStatus::Running, "")), ack_deadline + 2);
    assert!(
        matches!(late, Err(ReportError::Superseded { attempt: 1, current: 2, .. })),
        "a late acknowledgement: {late:?}"
    );
    let chunk = store.store_chunk("a", &chunk_of(id, 0, Some(1)), ack_deadline + 2);
    assert!(matches!(chunk, Err(ReportError::Superseded { .. })), "{chunk:?}");
    let report = store.apply_report("a", id, &of_delivery(1, success("first")), ack_deadline + 3);
    let refused = report.unwrap_err();
    assert!(refused.to_string().contains("delivery 1 was superseded by delivery 2"), "{refused}");
    let task = store.task(id).unwrap().unwrap();
    assert_eq!((task.status, task.output.next_seq), (TaskStatus::Delivered, 0), "nothing of it was kept");

    // The holder of the second delivery runs it.
    store.apply_report("a", id, &of_delivery(2, outcome(TaskStatus::Running, "")), ack_deadline + 4).unwrap();
    store.store_chunk("a", &chunk_of(id, 0, Some(2)), ack_deadline + 5).unwrap();
    let done = store.apply_report("a", id, &of_delivery(2, success("second")), ack_deadline + 6).unwrap();
    assert_eq!((done.status, done.attempt), (TaskStatus::Succeeded, 2));
    let late = store.apply_report("a", id, &of_delivery(1, success("first")), ack_deadline + 7);
    assert!(matches!(late, Err(ReportError::Superseded { .. })), "even once finished: {late:?}");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_late_acknowledgement_before_the_next_hand_out_keeps_its_delivery(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let (id, ack_deadline) = requeued_after_one_delivery(&store);
    // Back in the queue, not yet handed out again: the acknowledgement takes it out, and the
    // agent that sent it holds the task, still as delivery 1.
    let running =
        store.apply_report("a", id, &of_delivery(1, outcome(TaskStatus::Running, "")), ack_deadline + 1);
    assert_eq!((running.unwrap().status, store.task(id).unwrap().unwrap().attempt), (TaskStatus::Running, 1));
    assert!(take(&store, "a").is_none(), "not handed out again");
    store.store_chunk("a", &chunk_of(id, 0, Some(1)), ack_deadline + 2).unwrap();
    let done = store.apply_report("a", id, &of_delivery(1, success("ok")), ack_deadline + 3).unwrap();
    assert_eq!(done.status, TaskStatus::Succeeded);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn reports_and_chunks_that_name_no_delivery_are_taken_as_before(engine: Engine) {
    // The original client names no delivery; neither did orange agents before they did.
    let (_dir, store) = open_on(engine);
    let (id, ack_deadline) = requeued_after_one_delivery(&store);
    take(&store, "a");
    store.store_chunk("a", &chunk_of(id, 0, None), ack_deadline + 1).unwrap();
    let done = store.apply_report("a", id, &success("ok"), ack_deadline + 2).unwrap();
    assert_eq!((done.status, done.attempt), (TaskStatus::Succeeded, 2));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn at_start_an_unacknowledged_delivery_goes_back_to_the_front_before_the_tasks_behind_it(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let ids = queued(&store, "a", 3);
    take(&store, "a");
    let acknowledged = take(&store, "a").unwrap();
    store.apply_report("a", acknowledged.id, &outcome(TaskStatus::Running, ""), 25).unwrap();
    // A restart well within the ack window: the first delivery's answer may have been lost.
    assert_eq!(store.requeue_unacknowledged(30).unwrap(), 1);
    assert_eq!(take(&store, "a").unwrap().id, ids[0], "the lost delivery comes first");
    assert_eq!(take(&store, "a").unwrap().id, ids[2]);
    assert_eq!(store.task(ids[1]).unwrap().unwrap().status, TaskStatus::Running, "acknowledged: kept");
    assert_eq!(store.requeue_unacknowledged(30).unwrap(), 2, "both deliveries since are unacknowledged");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn an_acknowledged_task_is_not_handed_out_again_and_ends_lost_when_silent(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    take(&store, "a");
    store.apply_report("a", id, &outcome(TaskStatus::Running, ""), 25).unwrap();
    assert!(store.sweep_deadlines(25 + MINUTE).unwrap().is_empty(), "running within its timeout");
    let end = 25 + 60_000 + Policy::default().lost_grace_ms;
    let swept = store.sweep_deadlines(end).unwrap();
    assert_eq!(swept[0].task.status, TaskStatus::Lost);
    assert!(take(&store, "a").is_none());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_legacy_delivery_is_never_handed_out_again(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    store.take_next("a", Delivery::Legacy, &[], &mut Vec::new(), 20).unwrap().unwrap();
    let swept = store.sweep_deadlines(20 + 60_000 + Policy::default().lost_grace_ms).unwrap();
    assert_eq!((swept[0].task.id, swept[0].task.status, swept[0].requeued), (id, TaskStatus::Lost, false));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_task_never_delivered_expires_after_its_ttl(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let id = queued(&store, "a", 1)[0];
    let swept = store.sweep_deadlines(10 + 3_600_000).unwrap();
    assert_eq!(swept[0].task.status, TaskStatus::Expired);
    assert_eq!(status(&store, id), TaskStatus::Expired);
    assert!(take(&store, "a").is_none());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn retention_removes_finished_tasks_with_their_output_their_file_and_silent_agents(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.put_agent(&agent("a")).unwrap();
    let ids = queued(&store, "a", 2);
    take(&store, "a");
    store.append_file(ids[0], 0, b"what a file.get read").unwrap();
    store.apply_report("a", ids[0], &success("bye"), 30).unwrap();
    assert_eq!(store.sweep_finished(30).unwrap(), 0, "kept until the cutoff passes");
    assert_eq!(store.file_len(ids[0]).unwrap(), 20);
    assert_eq!(store.sweep_finished(31).unwrap(), 1);
    assert!(store.task(ids[0]).unwrap().is_none());
    assert!(store.chunks(ids[0], 0, usize::MAX).unwrap().is_empty());
    assert_eq!(store.file_len(ids[0]).unwrap(), 0, "the file a task read goes with it");
    assert_eq!(store.tasks(Some("a"), 10).unwrap().len(), 1, "the queued one stays");
    assert!(store.forget_silent_agents(100).unwrap().is_empty(), "an agent with queued work stays");
    store.sweep_deadlines(10 + 3_600_000).unwrap();
    assert_eq!(store.forget_silent_agents(100).unwrap(), vec!["a".to_owned()]);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn tasks_are_listed_newest_first_after_reopening(engine: Engine) {
    let place = Place::new(engine);
    let ids = {
        let store = place.open(Policy::default());
        let ids = queued(&store, "a", 2);
        store.durable().await.unwrap();
        ids
    };
    let store = place.try_open(Policy::default()).expect("reopening the store");
    let listed: Vec<TaskId> = store.tasks(Some("a"), 10).unwrap().iter().map(|t| t.id).collect();
    assert_eq!(listed, vec![ids[1], ids[0]], "newest first");
    assert_eq!(store.tasks(None, 1).unwrap()[0].id, ids[1]);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn touch_updates_last_seen_only_after_the_gap(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.put_agent(&agent("a")).unwrap();
    store.touch_agent("a", 1_000, 5_000).unwrap();
    assert_eq!(store.agent("a").unwrap().unwrap().last_seen_ms, 1);
    store.touch_agent("a", 10_000, 5_000).unwrap();
    assert_eq!(store.agent("a").unwrap().unwrap().last_seen_ms, 10_000);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_task_needing_a_feature_is_handed_only_to_a_poll_announcing_it_and_ends_failed_otherwise(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let env = BTreeMap::from([("A".to_owned(), "b".to_owned())]);
    let mut tasks: Vec<TaskRecord> =
        (0..2).map(|_| TaskRecord::new(TaskSpec { env: &env, ..spec("a") }, new_task_id(), 10)).collect();
    store.enqueue(&mut tasks).unwrap();
    let mut refused = Vec::new();
    let only_cwd = ["cwd".to_owned()];
    assert_eq!(store.take_next("a", Delivery::Legacy, &only_cwd, &mut refused, 20).unwrap(), None);
    // Both were looked at and ended; neither is handed out later.
    assert_eq!(refused, [tasks[0].id, tasks[1].id]);
    let failed = store.task(tasks[0].id).unwrap().unwrap();
    assert_eq!((failed.status, failed.deadline_ms), (TaskStatus::Failed, 0));
    assert!(
        failed.error.unwrap_or_default().starts_with("agent \"a\" does not support the task feature env")
    );

    let mut again = vec![TaskRecord::new(TaskSpec { env: &env, ..spec("a") }, new_task_id(), 30)];
    store.enqueue(&mut again).unwrap();
    let both = ["cwd".to_owned(), "env".to_owned()];
    let taken = store.take_next("a", Delivery::Acknowledged, &both, &mut refused, 40).unwrap().unwrap();
    assert_eq!((taken.id, taken.env), (again[0].id, env));
    assert_eq!(refused.len(), 2);
}

/// Several servers on one PostgreSQL database each run the sweeper: every due deadline is
/// handled by exactly one of them, and a task is handed out to one poll only.
#[test]
fn on_postgresql_several_stores_handle_each_deadline_and_each_task_once() {
    let place = Place::new(Engine::Postgres);
    let stores: Vec<Store> = (0..3).map(|_| place.open(Policy::default())).collect();
    let expiring = queued(&stores[0], "a", 30);
    let swept: Vec<TaskId> = std::thread::scope(|scope| {
        let sweeping: Vec<_> = stores
            .iter()
            .map(|store| scope.spawn(|| store.sweep_deadlines(10 + 3_600_000).unwrap()))
            .collect();
        sweeping.into_iter().flat_map(|s| s.join().unwrap()).map(|swept| swept.task.id).collect()
    });
    let mut once = swept.clone();
    once.sort();
    once.dedup();
    assert_eq!((swept.len(), once.len()), (30, 30), "each expired once: {swept:?}");
    assert!(expiring.iter().all(|id| status(&stores[1], *id) == TaskStatus::Expired));

    let handed = queued(&stores[0], "b", 30);
    let taken: Vec<TaskId> = std::thread::scope(|scope| {
        let polling: Vec<_> = stores
            .iter()
            .map(|store| {
                scope.spawn(|| std::iter::from_fn(|| take(store, "b")).map(|t| t.id).collect::<Vec<_>>())
            })
            .collect();
        polling.into_iter().flat_map(|p| p.join().unwrap()).collect()
    });
    let mut sorted = taken.clone();
    sorted.sort();
    let mut expected = handed.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every task handed out once, none twice");
}

/// More writers at once than the PostgreSQL engine keeps connections: each still gets its turn
/// (a writer holding the lock never waits for a connection another writer holds).
#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn more_concurrent_writers_than_connections_all_get_their_turn(engine: Engine) {
    let (_place, store) = open_on(engine);
    let ids: Vec<TaskId> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..48)
            .map(|i| {
                scope.spawn({
                    let store = &store;
                    move || queued(store, &format!("w{i:02}"), 3)
                })
            })
            .collect();
        writers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 144);
    for i in 0..48 {
        let app_id = format!("w{i:02}");
        let taken: Vec<TaskId> = std::iter::from_fn(|| take(&store, &app_id)).map(|t| t.id).collect();
        assert_eq!(taken.len(), 3, "{app_id}'s queue holds its three tasks in order");
    }
}

/// Servers on one PostgreSQL database asked at once to record the same signed request: one of
/// them, and one only, sees its first use (a replay through another server is refused).
#[test]
fn on_postgresql_one_request_recorded_at_once_by_several_stores_is_first_used_once() {
    let place = Place::new(Engine::Postgres);
    let stores: Vec<Store> = (0..3).map(|_| place.open(Policy::default())).collect();
    for digest in 0..20u64 {
        let firsts: usize = std::thread::scope(|scope| {
            let recording: Vec<_> = (0..12)
                .map(|i| {
                    let store = &stores[i % stores.len()];
                    scope.spawn(move || store.first_use(1_700_000_000, digest).unwrap())
                })
                .collect();
            recording.into_iter().map(|r| usize::from(r.join().unwrap())).sum()
        });
        assert_eq!(firsts, 1, "request {digest}: exactly one first use");
    }
}
