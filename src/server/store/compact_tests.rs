//! Unit tests of compaction: the copy keeps every record of every tree, ids and queue order go
//! on from where they were, the switch survives reopening, start-up compaction and its
//! clean-up of leftovers, writes and reads go on while it copies and are all kept, and a crash
//! at any step of it loses nothing.

use std::path::Path;
use std::sync::Arc;

use super::compact::Step;

use super::tests::{agent, open, open_with, queued, success, take};
use super::*;
use crate::protocol::task::new_task_id;

const CACHE: u64 = 8 * 1024 * 1024;

/// The store's records, without the id ceiling in `meta`, which moves whenever a process
/// hands out its first id (a compaction takes one).
pub(super) fn records(store: &Store) -> super::compact::Dump {
    let mut dump = store.dump();
    dump.remove(b"meta".as_slice());
    dump
}

/// Puts records into every tree: agents, queued, delivered, running (with a pending cancel),
/// finished tasks with multi-chunk output, tokens, audit entries, used requests.
pub(super) fn fill(store: &Store) {
    store.put_agent(&agent("a")).unwrap();
    store.put_agent(&agent("b")).unwrap();
    let a = queued(store, "a", 12);
    queued(store, "b", 3);
    for (i, id) in a.iter().take(6).enumerate() {
        take(store, "a");
        let out = format!("out-{i}-").repeat(if i == 0 { CHUNK_LEN / 3 } else { 4 });
        store.apply_report("a", *id, &success(&out), 40).unwrap();
    }
    take(store, "a");
    store
        .store_chunk(
            "a",
            &NewChunk { id: a[6], seq: 0, stream: Stream::Stderr, data: b"running", attempt: None },
            50,
        )
        .unwrap();
    store.cancel(a[6], false, 60).unwrap();
    take(store, "a");
    let token = TokenRecord {
        id: "t1".into(),
        secret: "token-secret".into(),
        created_ms: 1,
        expires_ms: 1_000_000,
        uses_left: 3,
        revoked: false,
    };
    store.put_token(&token).unwrap();
    for at in 0..5 {
        let record = AuditRecord {
            at_ms: at,
            actor: "admin".into(),
            action: "task.send".into(),
            target: "a".into(),
            detail: String::new(),
        };
        store.audit(&record).unwrap();
    }
    for digest in 0..20 {
        assert!(store.first_use(1_000 + digest as i64, digest).unwrap());
    }
}

pub(super) fn every_tree_has_records(dump: &compact::Dump) {
    for tree in ["agents", "tasks", "queue", "by_agent", "output", "deadlines", "finished", "cancels", "seen"]
    {
        assert!(dump.get(tree.as_bytes()).is_some_and(|r| !r.is_empty()), "tree {tree} is empty");
    }
    for tree in ["tokens", "audit"] {
        assert!(dump.get(tree.as_bytes()).is_some_and(|r| !r.is_empty()), "tree {tree} is empty");
    }
}

#[tokio::test]
async fn compaction_keeps_every_record_and_ids_go_on_rising() {
    let (dir, store) = open();
    fill(&store);
    let before = records(&store);
    every_tree_has_records(&before);
    let id_before = store.fresh_id();

    let done = store.compact().unwrap();
    assert!(done.after_bytes > 0 && done.before_bytes > 0, "{done:?}");
    assert_eq!(records(&store), before);
    assert_eq!(store.current_dir_name(), "sled.1");
    assert_eq!(std::fs::read_to_string(dir.path().join(CURRENT_FILE)).unwrap(), "sled.1\n");
    assert!(!dir.path().join("sled").exists(), "the old database is deleted");
    let id_after = store.fresh_id();
    assert!(id_after > id_before, "{id_after} after {id_before}");

    // A task queued now goes behind the ones queued before the compaction.
    let waiting: Vec<TaskId> = store
        .tasks(Some("a"), 100)
        .unwrap()
        .iter()
        .filter(|t| t.status == TaskStatus::Queued)
        .map(|t| t.id)
        .rev()
        .collect();
    assert_eq!(waiting.len(), 4);
    let newest = queued(&store, "a", 1)[0];
    let order: Vec<TaskId> = std::iter::from_fn(|| take(&store, "a")).map(|t| t.id).collect();
    assert_eq!(order, [waiting, vec![newest]].concat());

    store.durable().await.unwrap();
    let after = records(&store);
    drop(store);
    let store = Store::open(dir.path(), CACHE, Policy::default()).unwrap();
    assert_eq!(store.current_dir_name(), "sled.1");
    assert_eq!(records(&store), after);
    assert!(store.fresh_id() > id_after);
    store.compact().unwrap();
    assert_eq!(store.current_dir_name(), "sled.2");
    assert_eq!(records(&store), after);
}

#[test]
fn a_mostly_garbage_database_is_compacted_at_start_and_leftovers_are_deleted() {
    let (dir, store) = open();
    fill(&store);
    let before = records(&store);
    drop(store);
    // A half-made copy a crash left behind, and an unrelated file that must stay.
    std::fs::create_dir_all(dir.path().join("sled.5/blobs")).unwrap();
    std::fs::write(dir.path().join("sled.notes"), "keep").unwrap();

    let tiny = Policy { compact_min_bytes: 1, ..Policy::default() };
    let store = Store::open(dir.path(), CACHE, tiny).unwrap();
    assert_eq!(store.current_dir_name(), "sled.1");
    assert_eq!(records(&store), before);
    assert!(!dir.path().join("sled").exists());
    assert!(!dir.path().join("sled.5").exists(), "the half-made copy is deleted");
    assert!(dir.path().join("sled.notes").exists());
    drop(store);

    // Freshly compacted: not four times its compacted size, so not compacted again.
    let store = Store::open(dir.path(), CACHE, tiny).unwrap();
    assert_eq!(store.current_dir_name(), "sled.1");
    assert_eq!(store.compact_if_needed().unwrap(), None);
    assert_eq!(records(&store), before);
}

#[test]
fn a_pointer_naming_no_database_or_a_missing_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CURRENT_FILE), "../elsewhere\n").unwrap();
    let err = Store::open(dir.path(), CACHE, Policy::default()).err().expect("refused");
    assert!(err.to_string().contains("names no database"), "{err}");
    std::fs::write(dir.path().join(CURRENT_FILE), "sled.4\n").unwrap();
    let err = Store::open(dir.path(), CACHE, Policy::default()).err().expect("refused");
    assert!(err.to_string().contains("names sled.4, which is missing"), "{err}");
    assert!(!dir.path().join("sled.4").exists(), "no empty database was created");
}

#[test]
fn writes_racing_compactions_are_all_kept_in_order() {
    const WRITERS: usize = 4;
    const EACH: usize = 150;
    let (_dir, store) = open_with(Policy::default());
    let store = Arc::new(store);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let app_id = format!("w{w}");
                (0..EACH)
                    .map(|_| {
                        let mut task = vec![TaskRecord::new(super::tests::spec(&app_id), new_task_id(), 10)];
                        store.enqueue(&mut task).unwrap();
                        task[0].id
                    })
                    .collect::<Vec<TaskId>>()
            })
        })
        .collect();
    let mut compactions = 0;
    while !writers.iter().all(|w| w.is_finished()) || compactions < 3 {
        store.compact().unwrap();
        compactions += 1;
    }
    let sent: Vec<Vec<TaskId>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for (w, ids) in sent.iter().enumerate() {
        let app_id = format!("w{w}");
        let order: Vec<TaskId> = std::iter::from_fn(|| take(&store, &app_id)).map(|t| t.id).collect();
        assert_eq!(&order, ids, "{app_id}: every task, in the order it was queued");
    }
    assert_eq!(store.current_dir_name(), format!("sled.{compactions}"));
}

/// Writes and reads while the copy is made: a task queued, one taken and reported, an agent
/// added; the reads see the data. Returns the ids queued and the one reported.
fn write_and_read_meanwhile(store: &Store) -> (Vec<TaskId>, TaskId) {
    let queued_now = queued(store, "b", 5);
    let first = take(store, "b").expect("a queued task is handed out during the copy");
    store.apply_report("b", first.id, &success("during"), 70).unwrap();
    store.put_agent(&agent("c")).unwrap();
    assert_eq!(store.task(queued_now[4]).unwrap().map(|t| t.status), Some(TaskStatus::Queued));
    assert_eq!(store.agents().unwrap().len(), 3);
    assert!(!store.tasks(Some("a"), 100).unwrap().is_empty());
    (queued_now, first.id)
}

#[test]
fn writes_and_reads_go_on_while_the_copy_is_made_and_every_write_is_in_the_copy() {
    let (_dir, store) = open();
    fill(&store);
    let mut expected = None;
    let mut during = (Vec::new(), new_task_id());
    let done = store
        .compact_observed(&mut |step| match step {
            Step::Copied => during = write_and_read_meanwhile(&store),
            Step::Synced => {
                // Still written after the copy was synced: caught up in the last step.
                store.put_agent(&agent("d")).unwrap();
                expected = Some(store.dump());
            }
            Step::Sealed | Step::Switched => {}
        })
        .unwrap();
    assert!(done.paused <= done.took, "{done:?}");
    assert_eq!(store.current_dir_name(), "sled.1");
    assert_eq!(Some(store.dump()), expected);
    let (queued_during, reported) = during;
    assert_eq!(store.task(reported).unwrap().map(|t| t.status), Some(TaskStatus::Succeeded));
    assert!(store.agent("d").unwrap().is_some());
    // The queue goes on in order from the copy.
    let rest: Vec<TaskId> = std::iter::from_fn(|| take(&store, "b")).map(|t| t.id).collect();
    assert_eq!(rest.len(), 2 + 5, "b's two left from before and five queued during the copy");
    assert_eq!(rest[2..], queued_during);
}

/// Copies the directory `from` into `to`, file by file: what a process killed now leaves.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_crash_at_any_step_of_a_compaction_loses_nothing_and_keeps_one_database() {
    for (kill_at, in_use) in
        [(Step::Copied, "sled"), (Step::Synced, "sled"), (Step::Sealed, "sled"), (Step::Switched, "sled.1")]
    {
        let (dir, store) = open();
        fill(&store);
        let crashed = tempfile::tempdir().unwrap();
        store
            .compact_observed(&mut |step| {
                if step == Step::Copied {
                    write_and_read_meanwhile(&store);
                }
                if step == kill_at {
                    copy_dir(dir.path(), crashed.path());
                }
            })
            .unwrap();
        let expected = store.dump();
        drop(store);

        let reopened = Store::open(crashed.path(), CACHE, Policy::default()).unwrap();
        assert_eq!(reopened.current_dir_name(), in_use, "killed at {kill_at:?}");
        assert_eq!(reopened.dump(), expected, "killed at {kill_at:?}");
        let databases: Vec<String> = std::fs::read_dir(crashed.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("sled") && n != CURRENT_FILE)
            .collect();
        assert_eq!(databases, [in_use], "killed at {kill_at:?}: the other database is deleted");
    }
}
