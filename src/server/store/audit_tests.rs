//! Unit tests of the audit streams: aggregation per period, the caps of each stream, the merged
//! order, paging by key and the time floor.

use test_case::test_case;

use super::super::Policy;
use super::super::test_engines::Engine;
use super::super::tests::{open, open_on};
use super::*;

const HOUR: i64 = AGENT_AUDIT_PERIOD_MS;

fn event(at_ms: i64, actor: &str, action: &str) -> AuditRecord {
    AuditRecord {
        at_ms,
        actor: actor.into(),
        action: action.into(),
        target: actor.trim_start_matches("agent:").into(),
        detail: "without a credential".into(),
    }
}

fn page(
    store: &Store,
    before: Option<AuditKey>,
    since_ms: Option<i64>,
    limit: usize,
) -> (Vec<AuditItem>, bool) {
    let scan = AuditScan { operators: true, agents: true, before, since_ms, limit, keep: &|_| true };
    store.audit_page(&scan).unwrap()
}

fn summary(items: &[AuditItem]) -> Vec<(i64, &str, u64)> {
    items.iter().map(|i| (i.record.at_ms, i.record.actor.as_str(), i.count)).collect()
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn repeated_agent_events_in_one_period_share_an_entry_with_a_count(engine: Engine) {
    let (_dir, store) = open_on(engine);
    for at in [10 * HOUR + 5, 10 * HOUR + 7, 10 * HOUR + 9] {
        store.audit_agent(&event(at, "agent:a", "agent.pending")).unwrap();
    }
    store.audit_agent(&event(10 * HOUR + 8, "agent:b", "agent.pending")).unwrap();
    store.audit_agent(&event(10 * HOUR + 9, "agent:a", "agent.enroll")).unwrap();
    store.audit_agent(&event(11 * HOUR + 1, "agent:a", "agent.pending")).unwrap();
    let (items, more) = page(&store, None, None, 100);
    assert!(!more);
    assert_eq!(
        summary(&items),
        [
            (11 * HOUR + 1, "agent:a", 1),
            (10 * HOUR + 9, "agent:a", 1),
            (10 * HOUR + 8, "agent:b", 1),
            (10 * HOUR + 5, "agent:a", 3)
        ]
    );
    assert_eq!(items[3].last_ms, Some(10 * HOUR + 9));
    assert_eq!(items[3].record.action, "agent.pending");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn an_entry_of_the_current_period_is_found_again_after_a_restart(engine: Engine) {
    let place = super::super::test_engines::Place::new(engine);
    let now = crate::server::clock::now_ms();
    for _ in 0..2 {
        let store = place.open(Policy::default());
        store.audit_agent(&event(now, "agent:a", "agent.pending")).unwrap();
    }
    let store = place.open(Policy::default());
    let (items, _) = page(&store, None, None, 10);
    assert_eq!(summary(&items), [(now, "agent:a", 2)]);
}

#[test]
fn each_stream_keeps_its_newest_entries_up_to_its_own_cap() {
    let (dir, store) = open();
    store.audit_capped(&event(1, "admin@::1", "agent.forget"), 3).unwrap();
    for at in 0..10 {
        store
            .audit_agent_capped(&event(100 + at, &format!("agent:x{at}"), "agent.pending"), HOUR, 4)
            .unwrap();
    }
    store.audit_capped(&event(200, "admin@::1", "token.revoke"), 3).unwrap();
    let (items, _) = page(&store, None, None, 100);
    let actors: Vec<&str> = items.iter().map(|i| i.record.actor.as_str()).collect();
    assert_eq!(actors, ["admin@::1", "agent:x9", "agent:x8", "agent:x7", "agent:x6", "admin@::1"]);
    for at in 300..305 {
        store.audit_capped(&event(at, "admin@::1", "task.send"), 3).unwrap();
    }
    let (items, _) = page(&store, None, None, 100);
    let operators = items.iter().filter(|i| i.last_ms.is_none()).count();
    assert_eq!((operators, items.len()), (3, 7));
    // The entries the caps dropped stay dropped when the write-ahead log is replayed.
    let (_copy, rebuilt) = super::super::tests::rebuilt_from_log(dir.path());
    assert_eq!(rebuilt.dump(), store.dump());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn pages_walk_both_streams_once_newest_first(engine: Engine) {
    let (_dir, store) = open_on(engine);
    for at in 0..25 {
        if at % 3 == 0 {
            store.audit(&event(at, "admin@::1", "task.send")).unwrap();
        } else {
            store.audit_agent(&event(at, &format!("agent:a{at}"), "agent.pending")).unwrap();
        }
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let (items, more) = page(&store, before, None, 4);
        seen.extend(items.iter().map(|i| i.record.at_ms));
        before = items.last().map(|i| i.key);
        if !more {
            break;
        }
    }
    assert_eq!(seen, (0..25).rev().collect::<Vec<i64>>());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn since_keeps_entries_whose_latest_event_is_recent_enough(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.audit(&event(HOUR + 10, "admin@::1", "task.send")).unwrap();
    store.audit(&event(HOUR + 30, "admin@::1", "task.send")).unwrap();
    store.audit_agent(&event(HOUR + 5, "agent:a", "agent.pending")).unwrap();
    store.audit_agent(&event(HOUR + 40, "agent:a", "agent.pending")).unwrap();
    store.audit_agent(&event(HOUR + 6, "agent:b", "agent.pending")).unwrap();
    let (items, _) = page(&store, None, Some(HOUR + 20), 10);
    assert_eq!(summary(&items), [(HOUR + 30, "admin@::1", 1), (HOUR + 5, "agent:a", 2)]);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn the_filter_skips_entries_without_ending_the_page(engine: Engine) {
    let (_dir, store) = open_on(engine);
    for at in 0..10 {
        store.audit(&event(at, if at % 2 == 0 { "admin@::1" } else { "admin@::2" }, "task.send")).unwrap();
    }
    let keep = |item: &AuditItem| item.record.actor == "admin@::2";
    let scan =
        AuditScan { operators: true, agents: false, before: None, since_ms: None, limit: 2, keep: &keep };
    let (items, more) = store.audit_page(&scan).unwrap();
    assert_eq!(summary(&items), [(9, "admin@::2", 1), (7, "admin@::2", 1)]);
    assert!(more);
}

#[test]
fn on_postgresql_servers_writing_one_stream_keep_it_near_its_cap() {
    use super::super::test_engines::Place;
    let place = Place::new(Engine::Postgres);
    let open = || {
        let mut store = place.open(Policy::default());
        store.audit_streams.recount_every = 5;
        store
    };
    let (first, second) = (open(), open());
    // Each server alone would see only its own writes and let the streams grow to twice the cap.
    for at in 0..200 {
        let store = if at % 2 == 0 { &first } else { &second };
        store.audit_capped(&event(at, "admin@::1", "task.send"), 50).unwrap();
        store.audit_agent_capped(&event(at, &format!("agent:x{at}"), "agent.pending"), HOUR, 50).unwrap();
    }
    let (operators, agents) = (first.trees().audit.len().unwrap(), first.trees().agent_audit.len().unwrap());
    // The cap, plus at most what each server wrote since it last counted.
    assert!((50..=60).contains(&operators), "{operators} operator entries");
    assert!((50..=60).contains(&agents), "{agents} agent entries");
}
