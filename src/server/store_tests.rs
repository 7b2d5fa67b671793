//! Unit tests of the sled store: FIFO order, idempotent enqueue, report transitions, output
//! chunks, reopening.

use super::*;
use crate::protocol::task::new_task_id;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 8 * 1024 * 1024).unwrap();
    (dir, store)
}

fn agent(app_id: &str) -> AgentRecord {
    AgentRecord {
        app_id: app_id.into(),
        secret: "s".into(),
        labels: BTreeMap::new(),
        version: None,
        hostname: None,
        registered_at_ms: 1,
        last_seen_ms: 1,
        processed_task_count: 0,
    }
}

fn queued(store: &Store, app_id: &str, n: usize) -> Vec<TaskId> {
    let mut tasks: Vec<TaskRecord> =
        (0..n).map(|i| TaskRecord::new(new_task_id(), app_id, "ping", &i.to_string(), 60, 10)).collect();
    store.enqueue(&mut tasks).unwrap();
    tasks.iter().map(|t| t.id).collect()
}

fn success(stdout: &str) -> Outcome {
    Outcome {
        status: TaskStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        duration_ms: Some(3),
        output: vec![(Stream::Stdout, stdout.as_bytes().to_vec())],
    }
}

#[test]
fn queues_are_fifo_per_agent_and_separate() {
    let (_dir, store) = open();
    let a = queued(&store, "a", 3);
    let b = queued(&store, "b", 1);
    let taken: Vec<TaskId> = std::iter::from_fn(|| store.take_next("a", 20).unwrap()).map(|t| t.id).collect();
    assert_eq!(taken, a);
    let only_b = store.take_next("b", 20).unwrap().unwrap();
    assert_eq!(only_b.id, b[0]);
    assert_eq!(only_b.status, TaskStatus::Delivered);
    assert!(store.take_next("b", 20).unwrap().is_none());
}

#[test]
fn enqueue_with_the_same_id_twice_stores_it_once() {
    let (_dir, store) = open();
    let mut task = vec![TaskRecord::new(new_task_id(), "a", "ping", "", 60, 10)];
    store.enqueue(&mut task).unwrap();
    store.enqueue(&mut task).unwrap();
    assert!(store.take_next("a", 20).unwrap().is_some());
    assert!(store.take_next("a", 20).unwrap().is_none());
}

#[test]
fn report_moves_the_task_and_stores_output_in_chunks() {
    let (_dir, store) = open();
    store.put_agent(&agent("a")).unwrap();
    let id = queued(&store, "a", 1)[0];
    store.take_next("a", 20).unwrap();
    let big = "x".repeat(CHUNK_LEN * 2 + 5);
    let task = store.apply_report("a", id, &success(&big), 30).unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    let states: Vec<TaskStatus> = task.history.iter().map(|(s, _)| *s).collect();
    use TaskStatus::*;
    assert_eq!(states, vec![Queued, Delivered, Running, Succeeded]);
    assert_eq!(store.output(id, Stream::Stdout, usize::MAX).unwrap(), big.as_bytes());
    assert_eq!(store.output(id, Stream::Stdout, 10).unwrap().len(), 10);
    assert_eq!(store.agent("a").unwrap().unwrap().processed_task_count, 1);
}

#[test]
fn repeated_report_is_accepted_and_conflicting_one_refused() {
    let (_dir, store) = open();
    store.put_agent(&agent("a")).unwrap();
    let id = queued(&store, "a", 1)[0];
    store.take_next("a", 20).unwrap();
    store.apply_report("a", id, &success("one"), 30).unwrap();
    store.apply_report("a", id, &success("two"), 31).unwrap();
    assert_eq!(store.output(id, Stream::Stdout, 100).unwrap(), b"one");
    assert_eq!(store.agent("a").unwrap().unwrap().processed_task_count, 1);
    let failed = Outcome { status: TaskStatus::Failed, ..success("") };
    let err = store.apply_report("a", id, &failed, 32).unwrap_err();
    assert!(matches!(err, ReportError::AlreadyFinished { status: TaskStatus::Succeeded, .. }), "{err}");
}

#[test]
fn reports_for_unknown_or_foreign_tasks_are_refused() {
    let (_dir, store) = open();
    let id = queued(&store, "a", 1)[0];
    assert!(matches!(store.apply_report("b", id, &success(""), 30), Err(ReportError::NotYours(_))));
    let unknown = new_task_id();
    assert!(matches!(store.apply_report("a", unknown, &success(""), 30), Err(ReportError::UnknownTask(_))));
    assert_eq!(store.task(id).unwrap().unwrap().status, TaskStatus::Queued);
}

#[test]
fn a_report_for_a_still_queued_task_takes_it_out_of_the_queue() {
    let (_dir, store) = open();
    let id = queued(&store, "a", 1)[0];
    store.apply_report("a", id, &success("ran"), 30).unwrap();
    assert!(store.take_next("a", 40).unwrap().is_none(), "a task that ran must not be handed out again");
}

#[tokio::test]
async fn durable_writes_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let store = Store::open(dir.path(), 8 * 1024 * 1024).unwrap();
        let ids = queued(&store, "a", 2);
        store.durable().await.unwrap();
        ids
    };
    let store = Store::open(dir.path(), 8 * 1024 * 1024).unwrap();
    let listed: Vec<TaskId> = store.tasks(Some("a"), 10).unwrap().iter().map(|t| t.id).collect();
    assert_eq!(listed, vec![ids[1], ids[0]], "newest first");
    assert_eq!(store.tasks(None, 1).unwrap()[0].id, ids[1]);
}

#[test]
fn touch_updates_last_seen_only_after_the_gap() {
    let (_dir, store) = open();
    store.put_agent(&agent("a")).unwrap();
    store.touch_agent("a", 1_000, 5_000).unwrap();
    assert_eq!(store.agent("a").unwrap().unwrap().last_seen_ms, 1);
    store.touch_agent("a", 10_000, 5_000).unwrap();
    assert_eq!(store.agent("a").unwrap().unwrap().last_seen_ms, 10_000);
}
