//! Unit tests of online backup and restore: a backup restores into a store equal to the one it
//! was taken from, one taken while a writer goes on is consistent to one moment (its puts and
//! removes), ids go on above the source's, and a restore cut short is never opened.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use super::compact_tests::{every_tree_has_records, fill, records};
use super::tests::{agent, open};
use super::*;

const CACHE: u64 = 8 * 1024 * 1024;

fn files() -> Vec<(String, Vec<u8>)> {
    vec![("admin.token".into(), b"secret-token\n".to_vec())]
}

/// Restores `backup` into a fresh directory; returns it, the store opened on it, the summary
/// and the files handed over.
fn restored(backup: &[u8]) -> (tempfile::TempDir, Store, Restored, Vec<(String, Vec<u8>)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut got = Vec::new();
    let summary = restore(dir.path(), backup, CACHE, &mut |name, bytes| {
        got.push((name.to_owned(), bytes.to_vec()));
        Ok(())
    })
    .unwrap();
    let store = Store::open(dir.path(), CACHE, Policy::default()).unwrap();
    (dir, store, summary, got)
}

#[tokio::test]
async fn a_backup_restores_into_an_equal_store_whose_ids_go_on_above() {
    let (_dir, store) = open();
    fill(&store);
    let before = records(&store);
    every_tree_has_records(&before);
    let minted_before = store.fresh_id();
    let mut backup = Vec::new();
    let summary = store.backup(&mut backup, &files()).unwrap();
    assert_eq!(summary.bytes, backup.len() as u64);
    assert_eq!(verify(&backup[..]).unwrap().1, summary.trailer);

    let (_copy, copy, restored, got) = restored(&backup);
    assert_eq!(records(&copy), before);
    assert_eq!(got, files());
    assert_eq!(restored.trailer, summary.trailer);
    let tasks = restored.trees.iter().find(|(name, _)| name == "tasks").map(|(_, n)| *n);
    assert_eq!(tasks, Some(before[b"tasks".as_slice()].len() as u64));
    let first = copy.fresh_id();
    assert!(first > minted_before && first >= summary.trailer.id_floor, "{first} {summary:?}");
}

/// The writer's step `i`: a new agent, a signed request used and the old ones forgotten, then
/// the counter agent set to `i`.
fn step(store: &Store, i: i64) {
    store.put_agent(&agent(&format!("w-{i:06}"))).unwrap();
    store.first_use(1_000_000 + i, 7).unwrap();
    store.forget_uses_before(1_000_000 + i - 5).unwrap();
    store.put_agent(&AgentRecord { last_seen_ms: i, ..agent("counter") }).unwrap();
}

#[test]
fn a_backup_taken_while_a_writer_goes_on_is_consistent_to_one_moment() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    // Enough entries that the copy drains the tap many times while the writer runs.
    for i in 0..5_000 {
        store.put_agent(&agent(&format!("a-{i:06}"))).unwrap();
    }
    let (stop, last) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicI64::new(-1)));
    let writer = {
        let (store, stop, last) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&last));
        std::thread::spawn(move || {
            for i in 0..1_000_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                step(&store, i);
                last.store(i, Ordering::SeqCst);
            }
        })
    };
    while last.load(Ordering::SeqCst) < 50 {
        std::thread::yield_now();
    }
    // On a busy machine the writer may not be scheduled during one backup: take backups until
    // one ran while the writer wrote and removed (bounded).
    let mut taken = None;
    for _ in 0..20 {
        let done_before = last.load(Ordering::SeqCst);
        let mut backup = Vec::new();
        let summary = store.backup(&mut backup, &[]).unwrap();
        let done_after = last.load(Ordering::SeqCst);
        if done_after > done_before && summary.trailer.counts.removes > 0 {
            taken = Some((backup, done_before));
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (backup, done_before) = taken.expect("in 20 backups, none ran while the writer wrote and removed");

    let (_copy, copy, _, _) = restored(&backup);
    let agents = copy.agents().unwrap();
    assert_eq!(agents.iter().filter(|a| a.app_id.starts_with("a-")).count(), 5_000);
    let written: Vec<i64> =
        agents.iter().filter_map(|a| a.app_id.strip_prefix("w-")).map(|n| n.parse().unwrap()).collect();
    let n = *written.last().unwrap();
    assert_eq!(written, (0..=n).collect::<Vec<_>>(), "the writer's agents are a prefix");
    assert!(n >= done_before, "every step done before the backup began is in it");
    let counter = copy.agent("counter").unwrap().unwrap().last_seen_ms;
    assert!(counter == n || counter == n - 1, "counter {counter} after agent {n}");
    let trees = copy.trees();
    let seen: Vec<i64> = trees
        .seen
        .iter()
        .keys()
        .map(|k| i64::from_be_bytes(k.unwrap()[..8].try_into().unwrap()) - 1_000_000)
        .collect();
    let (lo, hi) = (seen[0], *seen.last().unwrap());
    assert_eq!(seen, (lo..=hi).collect::<Vec<_>>(), "no forgotten use came back: {seen:?}");
    assert!(hi <= n && hi >= n - 1 && lo >= n - 6, "uses {lo}..={hi} after agent {n}");
}

#[test]
fn a_restore_cut_short_leaves_a_directory_no_store_opens() {
    let (_dir, store) = open();
    fill(&store);
    let mut backup = Vec::new();
    store.backup(&mut backup, &files()).unwrap();
    let target = tempfile::tempdir().unwrap();
    let failed =
        restore(target.path(), &backup[..], CACHE, &mut |_, _| Err(StoreError::Io("disk full".into())));
    assert!(failed.is_err());
    let refused = Store::open(target.path(), CACHE, Policy::default()).err().expect("refused");
    assert!(refused.to_string().contains("restore that did not finish"), "{refused}");
}

#[test]
fn a_truncated_backup_is_refused_by_verify_naming_the_offset() {
    let (_dir, store) = open();
    fill(&store);
    let mut backup = Vec::new();
    store.backup(&mut backup, &files()).unwrap();
    let cut = backup.len() / 2;
    let err = verify(&backup[..cut]).unwrap_err().to_string();
    assert!(err.contains(&format!("truncated at byte {cut}")), "{err}");
}
