//! Tests of the write-ahead log's files: a torn tail cut at any byte comes back as exactly the
//! complete records, damage before the end is an error naming the file and offset, checkpoints
//! drop what sled holds, and the log alone rebuilds the store.

use super::*;
use crate::server::store::tests::{open, rebuilt_from_log};
use crate::server::store::wal_record::push_op;

/// The ops of record `n`: a put and a removal.
fn ops(n: u8) -> Vec<u8> {
    let mut ops = Vec::new();
    push_op(&mut ops, "tasks", &[n; 5], Some(&vec![n; usize::from(n) * 11]));
    push_op(&mut ops, "queue", &[n, n], None);
    ops
}

/// Every write the log replays, as (tree, key, value).
type Writes = Vec<(Vec<u8>, Vec<u8>, Option<Vec<u8>>)>;

fn replayed(wal: &Wal) -> Writes {
    let mut writes = Vec::new();
    wal.replay(|op| {
        writes.push((op.tree.to_vec(), op.key.to_vec(), op.value.map(<[u8]>::to_vec)));
        Ok(())
    })
    .unwrap();
    writes
}

fn writes_of(records: std::ops::Range<u8>) -> Writes {
    records
        .flat_map(|n| {
            [
                (b"tasks".to_vec(), vec![n; 5], Some(vec![n; usize::from(n) * 11])),
                (b"queue".to_vec(), vec![n, n], None),
            ]
        })
        .collect()
}

/// A log with records 1..=count in one segment; returns that segment's path.
fn written(dir: &Path, count: u8) -> PathBuf {
    let wal = Wal::open(dir).unwrap();
    for n in 1..=count {
        wal.writer().append(&ops(n)).unwrap();
    }
    wal.sync().unwrap();
    let [segment] = segments(dir).unwrap()[..] else { panic!("one segment expected") };
    segment_path(dir, segment)
}

#[test]
fn a_log_cut_at_any_byte_of_its_last_records_reopens_with_exactly_the_complete_ones() {
    let source = tempfile::tempdir().unwrap();
    let segment = written(source.path(), 6);
    let bytes = fs::read(&segment).unwrap();
    let record_len = |n: u8| wal_record::frame(&ops(n)).len();
    let first_three: usize = (1..=3).map(record_len).sum();
    let mut checked = 0;
    for cut in first_three..=bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 0), &bytes[..cut]).unwrap();
        let complete = (1..=6u8).take_while(|&n| (1..=n).map(record_len).sum::<usize>() <= cut).count();
        let wal = Wal::open(dir.path()).unwrap();
        assert_eq!(replayed(&wal), writes_of(1..complete as u8 + 1), "cut at byte {cut}");
        // The torn tail is gone from the file, so the segment reads whole from now on.
        let kept: usize = (1..=complete as u8).map(record_len).sum();
        assert_eq!(
            fs::metadata(segment_path(dir.path(), 0)).unwrap().len(),
            kept as u64,
            "cut at byte {cut}"
        );
        checked += 1;
    }
    assert!(checked > 100, "only {checked} cuts checked");
}

#[test]
fn a_store_whose_log_is_cut_at_any_byte_of_its_last_enqueue_reopens_with_exactly_the_earlier_ones() {
    use crate::server::store::tests::{queued, take};
    let (dir, store) = crate::server::store::tests::open();
    let wal_dir = dir.path().join(crate::server::store::WAL_DIR);
    let mut ids = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..4 {
        ids.extend(queued(&store, "a", 1));
        ends.push(store.embedded().unwrap().wal.active_len() as usize);
    }
    drop(store);
    let last = *segments(&wal_dir).unwrap().last().unwrap();
    let bytes = fs::read(segment_path(&wal_dir, last)).unwrap();
    assert_eq!(bytes.len(), ends[3], "the enqueues are in the last segment");
    let mut checked = 0;
    for cut in ends[2]..=ends[3] {
        let copy = tempfile::tempdir().unwrap();
        let wal_copy = copy.path().join(crate::server::store::WAL_DIR);
        fs::create_dir(&wal_copy).unwrap();
        for number in segments(&wal_dir).unwrap() {
            fs::copy(segment_path(&wal_dir, number), segment_path(&wal_copy, number)).unwrap();
        }
        fs::write(segment_path(&wal_copy, last), &bytes[..cut]).unwrap();
        let store = crate::server::store::Store::open(copy.path(), 1 << 20, Default::default()).unwrap();
        let kept = if cut == ends[3] { 4 } else { 3 };
        let order: Vec<_> = std::iter::from_fn(|| take(&store, "a")).map(|t| t.id).collect();
        assert_eq!(order, ids[..kept], "cut at byte {cut}: the tasks whose record is whole, in order");
        assert_eq!(store.tasks(None, 100).unwrap().len(), kept, "cut at byte {cut}");
        checked += 1;
    }
    assert!(checked > 50, "only {checked} cuts checked");
}

#[test]
fn a_bad_checksum_before_the_end_is_an_error_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let segment = written(dir.path(), 4);
    let mut bytes = fs::read(&segment).unwrap();
    let second = wal_record::frame(&ops(1)).len();
    bytes[second + wal_record::HEADER + 4] ^= 1;
    fs::write(&segment, &bytes).unwrap();
    let err = Wal::open(dir.path()).err().expect("a damaged log must not open").to_string();
    assert!(err.contains(&segment.display().to_string()), "{err}");
    assert!(err.contains(&format!("offset {second}")), "{err}");
}

#[test]
fn a_damaged_length_before_the_end_is_an_error_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let segment = written(dir.path(), 4);
    let mut bytes = fs::read(&segment).unwrap();
    let second = wal_record::frame(&ops(1)).len();
    // One flipped bit makes the second record's length run past the end of the segment, as
    // a torn last record's does; records 2 to 4 are complete and were acknowledged.
    bytes[second + 2] ^= 0x10;
    fs::write(&segment, &bytes).unwrap();
    match Wal::open(dir.path()) {
        Err(e) => assert!(e.to_string().contains(&format!("offset {second}")), "{e}"),
        Ok(wal) => assert_eq!(replayed(&wal), writes_of(1..5), "acknowledged records were cut off"),
    }
}

#[test]
fn a_torn_record_in_a_segment_before_the_last_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let segment = written(dir.path(), 3);
    let bytes = fs::read(&segment).unwrap();
    fs::write(&segment, &bytes[..bytes.len() - 3]).unwrap();
    fs::write(segment_path(dir.path(), 9), wal_record::frame(&ops(7))).unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    let err = wal.replay(|_| Ok(())).unwrap_err().to_string();
    assert!(err.contains(&segment.display().to_string()) && err.contains("incomplete"), "{err}");
}

#[test]
fn a_checkpoint_drops_the_segments_sled_holds_and_replay_starts_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    wal.writer().append(&ops(1)).unwrap();
    let mut synced = false;
    wal.checkpoint(|| {
        synced = true;
        Ok(())
    })
    .unwrap();
    assert!(synced);
    wal.writer().append(&ops(2)).unwrap();
    drop(wal);
    let wal = Wal::open(dir.path()).unwrap();
    assert_eq!(replayed(&wal), writes_of(2..3));
}

#[test]
fn a_failed_database_sync_keeps_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path()).unwrap();
    wal.writer().append(&ops(1)).unwrap();
    assert!(wal.checkpoint(|| Err(std::io::Error::other("disk gone"))).is_err());
    drop(wal);
    assert_eq!(replayed(&Wal::open(dir.path()).unwrap()), writes_of(1..2));
}

#[test]
fn the_log_alone_rebuilds_every_tree_of_the_store() {
    let (dir, store) = open();
    crate::server::store::compact_tests::fill(&store);
    let before = store.dump();
    crate::server::store::compact_tests::every_tree_has_records(&before);
    drop(store);
    // A data directory with only the log: every write since the (empty) start is in it.
    let (_copy, rebuilt) = rebuilt_from_log(dir.path());
    assert_eq!(rebuilt.dump(), before);
}

#[test]
fn ids_after_a_replay_of_the_log_alone_continue_above_every_id_it_holds() {
    let (dir, store) = open();
    let tasks = crate::server::store::tests::queued(&store, "a", 40);
    let used = store.task(*tasks.last().unwrap()).unwrap().unwrap().queue_seq;
    drop(store);
    // sled's own id counter is not in the log: a database rebuilt from the log alone (what a
    // crash before sled's checkpoint leaves of the counter) starts it again from zero.
    let (_copy, rebuilt) = rebuilt_from_log(dir.path());
    let next = rebuilt.fresh_id();
    assert!(next > used, "id {next} handed out again below the used queue number {used}");
    let newer = crate::server::store::tests::queued(&rebuilt, "a", 1)[0];
    let order: Vec<_> =
        std::iter::from_fn(|| crate::server::store::tests::take(&rebuilt, "a")).map(|t| t.id).collect();
    assert_eq!(order, [tasks, vec![newer]].concat(), "queue order across the replay");
}

#[test]
fn concurrent_writers_of_the_same_key_are_logged_in_the_order_sled_applied_them() {
    use crate::server::store::AgentRecord;
    use crate::server::store::tests::{agent, queued, success, take};
    let (dir, store) = open();
    store.put_agent(&agent("a")).unwrap();
    std::thread::scope(|scope| {
        // Transactions that read agent `a` and write it back with one more finished task...
        for _ in 0..3 {
            scope.spawn(|| {
                for i in 0..60 {
                    queued(&store, "a", 1);
                    if let Some(task) = take(&store, "a") {
                        store.apply_report("a", task.id, &success("x"), 100 + i).unwrap();
                    }
                }
            });
        }
        // ...racing compare-and-swaps of the same record to a later `last_seen_ms`.
        scope.spawn(|| {
            for i in 2..400 {
                let current = store.agent("a").unwrap().unwrap();
                store.touch_record(&current, i, 0).unwrap();
            }
        });
    });
    let live = store.agent("a").unwrap().unwrap();
    drop(store);
    // Each write of `a` was made from the one before it, so in sled's order both counters only
    // grow; a log out of that order would show one going back.
    let mut versions = Vec::new();
    Wal::open(&dir.path().join(crate::server::store::WAL_DIR))
        .unwrap()
        .replay(|op| {
            if op.tree == b"agents" && op.key == b"a" {
                let record: AgentRecord = crate::server::codec::decode(op.value.unwrap()).unwrap();
                versions.push((record.processed_task_count, record.last_seen_ms));
            }
            Ok(())
        })
        .unwrap();
    assert!(versions.len() > 100, "only {} writes of the agent", versions.len());
    let backwards: Vec<_> = versions.windows(2).filter(|w| w[1].0 < w[0].0 || w[1].1 < w[0].1).collect();
    assert!(backwards.is_empty(), "the log has writes out of sled's order: {backwards:?}");
    assert_eq!(versions.last(), Some(&(live.processed_task_count, live.last_seen_ms)));
}
