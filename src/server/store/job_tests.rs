//! Unit tests of jobs in the store: the sliding window, the error limit, pause and resume,
//! cancel, counts that follow every task transition, deadlines that advance the window,
//! retention, and the size of stored values.

use std::collections::HashMap;

use test_case::test_case;

use super::test_engines::Engine;
use super::tests::open_on;
use super::*;
use crate::protocol::jobs::{JobCounts, JobState, Limit};
use crate::protocol::task::new_task_id;

const T0: i64 = 1_000_000;

fn app_ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("host-{i:05}")).collect()
}

fn job(targets: usize, window: usize, error_limit: Option<u32>) -> JobRecord {
    JobRecord {
        id: new_task_id(),
        created_ms: T0,
        task_type: "shell".into(),
        payload: "true".into(),
        env: Default::default(),
        cwd: None,
        user: None,
        secret_names: Default::default(),
        timeout_secs: 60,
        ttl_secs: 600,
        max_concurrency: Some(Limit::Count(window as u32)),
        max_errors: error_limit.map(Limit::Count),
        window: window as u32,
        error_limit,
        targets: targets as u32,
        next: 0,
        state: JobState::Running,
        counts: JobCounts::default(),
        version: 0,
        done_ms: 0,
        host_timeout_secs: 60,
        queue: false,
        retry_of: None,
    }
}

pub(super) fn create(store: &Store, targets: usize, window: usize, error_limit: Option<u32>) -> JobRecord {
    store.create_job(&job(targets, window, error_limit), &[], &app_ids(targets), &Default::default()).unwrap()
}

fn outcome(status: TaskStatus, exit_code: i32) -> Outcome {
    Outcome {
        status,
        exit_code: Some(exit_code),
        error: None,
        duration_ms: Some(1),
        output: vec![],
        attempt: None,
    }
}

/// Every target's task id, app id and task state (None: not started).
fn targets(store: &Store, job: TaskId) -> Vec<(String, Option<TaskRecord>)> {
    let mut all = Vec::new();
    store
        .each_target(job, |t| {
            all.push((t.app_id, t.task_id.map(|id| store.task(id).unwrap().unwrap())));
            Ok(())
        })
        .unwrap();
    all
}

fn open_tasks(store: &Store, job: TaskId) -> Vec<TaskRecord> {
    targets(store, job).into_iter().filter_map(|(_, t)| t).filter(|t| !t.status.is_final()).collect()
}

/// Delivers, starts and ends the task of `app_id` with `status`.
fn run(store: &Store, app_id: &str, status: TaskStatus, now: i64) -> TaskRecord {
    let task = store
        .take_next(app_id, Delivery::Acknowledged, &[], &mut Vec::new(), now)
        .unwrap()
        .expect("a task is queued");
    store.apply_report(app_id, task.id, &outcome(TaskStatus::Running, 0), now).unwrap();
    store.apply_report(app_id, task.id, &outcome(status, 1), now + 1).unwrap()
}

fn job_now(store: &Store, id: TaskId) -> JobRecord {
    store.job(id).unwrap().unwrap()
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn the_window_starts_the_next_target_when_a_task_ends(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 5, 2, None);
    assert_eq!(job.counts, JobCounts { waiting: 3, queued: 2, ..JobCounts::default() });
    assert_eq!(job.next, 2);
    let started: Vec<TaskId> = store
        .take_job_events()
        .into_iter()
        .filter_map(|e| match e {
            JobEvent::Started(app) => Some(app),
            JobEvent::Changed(_) => None,
        })
        .map(|app| store.tasks(Some(&app), 10).unwrap()[0].id)
        .collect();
    assert_eq!(started.len(), 2);
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 10);
    let after = job_now(&store, job.id);
    assert_eq!(after.counts, JobCounts { waiting: 2, queued: 2, succeeded: 1, ..JobCounts::default() });
    assert!(store.take_job_events().contains(&JobEvent::Started("host-00002".into())));
    for app in ["host-00001", "host-00002", "host-00003", "host-00004"] {
        run(&store, app, TaskStatus::Succeeded, T0 + 20);
        assert!(open_tasks(&store, job.id).len() <= 2);
    }
    let done = job_now(&store, job.id);
    assert_eq!(done.state, JobState::Finished);
    assert_eq!(done.counts, JobCounts { succeeded: 5, ..JobCounts::default() });
    assert!(done.done_ms > 0);
    assert!(done.version > job.version);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn counts_follow_every_transition_of_a_task(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 1, 1, None);
    let task =
        store.take_next("host-00000", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap().unwrap();
    assert_eq!(job_now(&store, job.id).counts.delivered, 1);
    store.apply_report("host-00000", task.id, &outcome(TaskStatus::Running, 0), T0 + 2).unwrap();
    let running = job_now(&store, job.id);
    assert_eq!(running.counts, JobCounts { running: 1, ..JobCounts::default() });
    store.apply_report("host-00000", task.id, &outcome(TaskStatus::Failed, 3), T0 + 3).unwrap();
    let ended = job_now(&store, job.id);
    assert_eq!(ended.counts, JobCounts { failed: 1, ..JobCounts::default() });
    assert_eq!(ended.state, JobState::Finished);
    assert_eq!(ended.version, job.version + 3);
    assert_eq!(ended.max_concurrency, Some(Limit::Count(1)), "limits decode from the stored record");
    assert_eq!(store.job_of_task(task.id).unwrap(), Some((job.id, 0)));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn past_the_error_limit_the_job_stops_and_waiting_targets_are_skipped(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 10, 3, Some(1));
    run(&store, "host-00000", TaskStatus::Failed, T0 + 1);
    assert_eq!(job_now(&store, job.id).state, JobState::Running, "one error is within the limit");
    run(&store, "host-00001", TaskStatus::TimedOut, T0 + 2);
    let stopped = job_now(&store, job.id);
    assert_eq!(stopped.state, JobState::Stopped);
    // host-00003 was started when host-00000 ended; host-00002 and it stay open.
    assert_eq!(stopped.counts.open(), 2);
    assert_eq!(stopped.counts.skipped, 6);
    assert_eq!(stopped.counts.waiting, 0);
    assert_eq!(stopped.done_ms, 0);
    run(&store, "host-00002", TaskStatus::Succeeded, T0 + 3);
    run(&store, "host-00003", TaskStatus::Succeeded, T0 + 4);
    let done = job_now(&store, job.id);
    assert_eq!(done.state, JobState::Stopped);
    assert!(done.done_ms > 0);
    assert_eq!(
        done.counts,
        JobCounts { succeeded: 2, failed: 1, timed_out: 1, skipped: 6, ..JobCounts::default() }
    );
    assert!(
        store
            .take_next("host-00004", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 5)
            .unwrap()
            .is_none()
    );
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_paused_job_starts_nothing_until_resumed(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 1, None);
    let paused = store.pause_job(job.id).unwrap();
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(store.pause_job(job.id).unwrap().version, paused.version, "pausing again changes nothing");
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 1);
    let idle = job_now(&store, job.id);
    assert_eq!(idle.counts, JobCounts { waiting: 2, succeeded: 1, ..JobCounts::default() });
    assert_eq!(idle.done_ms, 0);
    let resumed = store.resume_job(job.id, T0 + 2).unwrap();
    assert_eq!(resumed.state, JobState::Running);
    assert_eq!(resumed.counts, JobCounts { waiting: 1, queued: 1, succeeded: 1, ..JobCounts::default() });
    run(&store, "host-00001", TaskStatus::Succeeded, T0 + 3);
    run(&store, "host-00002", TaskStatus::Succeeded, T0 + 4);
    assert_eq!(job_now(&store, job.id).state, JobState::Finished);
    let err = store.resume_job(job.id, T0 + 5).unwrap_err();
    assert!(matches!(err, JobError::BadState { state: JobState::Finished, .. }), "{err}");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn cancel_skips_waiting_ends_queued_and_marks_running_tasks(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 6, 3, None);
    let running =
        store.take_next("host-00000", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap().unwrap();
    store.apply_report("host-00000", running.id, &outcome(TaskStatus::Running, 0), T0 + 1).unwrap();
    let (cancelled, outcomes) = store.cancel_job(job.id, false, T0 + 2).unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(outcomes.len(), 3);
    assert_eq!(outcomes.iter().filter(|o| o.tell_agent).count(), 1);
    assert_eq!(cancelled.counts, JobCounts { running: 1, cancelled: 2, skipped: 3, ..JobCounts::default() });
    assert_eq!(cancelled.done_ms, 0);
    assert!(store.task(running.id).unwrap().unwrap().cancel_requested);
    store.apply_report("host-00000", running.id, &outcome(TaskStatus::Cancelled, 143), T0 + 3).unwrap();
    let done = job_now(&store, job.id);
    assert!(done.done_ms > 0);
    assert_eq!(done.counts, JobCounts { cancelled: 3, skipped: 3, ..JobCounts::default() });
    assert!(matches!(store.cancel_job(job.id, false, T0 + 4), Err(JobError::BadState { done: true, .. })));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn cancelling_a_paused_job_with_nothing_open_makes_it_done(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 1, None);
    store.pause_job(job.id).unwrap();
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 1);
    let (cancelled, outcomes) = store.cancel_job(job.id, false, T0 + 2).unwrap();
    assert!(outcomes.is_empty());
    assert_eq!(cancelled.counts, JobCounts { succeeded: 1, skipped: 2, ..JobCounts::default() });
    assert_eq!((cancelled.state, cancelled.done_ms), (JobState::Cancelled, T0 + 2));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_forced_cancel_ends_running_tasks_at_once(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 2, 2, None);
    let task =
        store.take_next("host-00001", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap().unwrap();
    let (cancelled, outcomes) = store.cancel_job(job.id, true, T0 + 2).unwrap();
    assert_eq!(outcomes.len(), 2);
    assert_eq!(store.task(task.id).unwrap().unwrap().status, TaskStatus::Cancelled);
    assert_eq!(cancelled.counts, JobCounts { cancelled: 2, ..JobCounts::default() });
    assert!(cancelled.done_ms > 0);
    assert_eq!(cancelled.state, JobState::Cancelled);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn an_expired_task_counts_as_an_error_and_advances_the_window(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 1, Some(5));
    let first = open_tasks(&store, job.id).remove(0);
    let swept = store.sweep_deadlines(first.expires_ms).unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].task.status, TaskStatus::Expired);
    let after = job_now(&store, job.id);
    assert_eq!(after.counts, JobCounts { waiting: 1, queued: 1, expired: 1, ..JobCounts::default() });
    assert_eq!(open_tasks(&store, job.id)[0].app_id, "host-00001");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn an_unacknowledged_delivery_going_back_to_the_queue_is_counted(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 1, 1, None);
    let task =
        store.take_next("host-00000", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap().unwrap();
    store.sweep_deadlines(task.deadline_ms).unwrap();
    assert_eq!(job_now(&store, job.id).counts, JobCounts { queued: 1, ..JobCounts::default() });
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn results_outlive_task_retention_and_job_retention_removes_everything(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 2, 2, None);
    let first = run(&store, "host-00000", TaskStatus::Failed, T0 + 1);
    run(&store, "host-00001", TaskStatus::Succeeded, T0 + 2);
    while store.sweep_finished(T0 + 100).unwrap() > 0 {}
    assert!(store.task(first.id).unwrap().is_none());
    let done = job_now(&store, job.id);
    let page = store.job_targets(&done, Some("host-00000"), 10).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].app_id, "host-00001");
    let all = store.job_targets(&done, None, 10).unwrap();
    let end = all[0].end.as_ref().unwrap();
    assert_eq!((end.status, end.exit_code), (TaskStatus::Failed, Some(1)));
    assert_eq!(store.sweep_jobs(done.done_ms).unwrap(), 0, "not older than the cutoff yet");
    assert_eq!(store.sweep_jobs(done.done_ms + 1).unwrap(), 1);
    assert!(store.job(job.id).unwrap().is_none());
    assert_eq!(store.trees().job_targets.len().unwrap(), 0);
    assert_eq!(store.trees().job_links.len().unwrap(), 0);
    assert_eq!(store.trees().jobs_done.len().unwrap(), 0);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_job_of_ten_thousand_targets_stores_no_large_value(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let mut big = job(10_000, 100, None);
    big.payload = "x".repeat(crate::protocol::wire::MAX_PAYLOAD_LEN);
    let created = store.create_job(&big, &[], &app_ids(10_000), &Default::default()).unwrap();
    assert_eq!(created.counts.queued, 100);
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 1);
    let mut values = 0;
    for (name, tree) in store.trees().each() {
        for entry in tree.iter() {
            let (key, value) = entry.unwrap();
            assert!(value.len() < 100 * 1024, "tree {name:?} key {key:?}: {} bytes", value.len());
            values += 1;
        }
    }
    assert!(values > 10_000, "found {values} values");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_task_started_by_a_job_takes_its_place_at_the_end_of_its_agents_queue(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 2, 1, None);
    let spec = TaskSpec { ttl_secs: 600, ..super::tests::spec("host-00001") };
    let mut earlier = vec![TaskRecord::new(spec, new_task_id(), T0 + 1)];
    store.enqueue(&mut earlier).unwrap();
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 2);
    let first =
        store.take_next("host-00001", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 3).unwrap().unwrap();
    assert_eq!(first.id, earlier[0].id, "the task queued before the job reached this agent goes first");
    let second =
        store.take_next("host-00001", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 3).unwrap().unwrap();
    assert_eq!(store.job_of_task(second.id).unwrap(), Some((job.id, 1)));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn concurrent_reports_that_start_the_next_targets_all_succeed(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 400, 200, None);
    let started: Vec<TaskRecord> = (0..200)
        .map(|i| {
            let app_id = format!("host-{i:05}");
            let task = store
                .take_next(&app_id, Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1)
                .unwrap()
                .unwrap();
            store.apply_report(&app_id, task.id, &outcome(TaskStatus::Running, 0), T0 + 1).unwrap()
        })
        .collect();
    let failures = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for chunk in started.chunks(25) {
            let (store, failures) = (&store, &failures);
            scope.spawn(move || {
                for task in chunk {
                    let done = outcome(TaskStatus::Succeeded, 0);
                    if store.apply_report(&task.app_id, task.id, &done, T0 + 2).is_err() {
                        failures.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    assert_eq!(failures.into_inner(), 0, "every report is applied");
    let after = job_now(&store, job.id);
    assert_eq!(after.counts, JobCounts { succeeded: 200, queued: 200, ..JobCounts::default() });
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_queued_task_of_a_cancelled_job_is_never_handed_out(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 2, None);
    // A crash right after the cancel's first transaction: the job is cancelled, its queued
    // tasks are not yet.
    let mut half = job_now(&store, job.id);
    half.state = JobState::Cancelled;
    half.counts.skipped += half.counts.waiting;
    half.counts.waiting = 0;
    store.trees().jobs.insert(jobs::job_key(job.id), codec::encode(&half)).unwrap();
    assert_eq!(
        store.take_next("host-00000", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap(),
        None
    );
    let first = targets(&store, job.id).remove(0).1.unwrap();
    assert_eq!(first.status, TaskStatus::Cancelled);
    assert!(store.queued_count("host-00000", 10) == 0);
    assert_eq!(
        store.take_next("host-00001", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 2).unwrap(),
        None
    );
    let done = job_now(&store, job.id);
    assert_eq!(done.counts, JobCounts { cancelled: 2, skipped: 1, ..JobCounts::default() });
    assert_eq!((done.state, done.done_ms), (JobState::Cancelled, T0 + 2));
}

#[test]
fn a_burst_of_job_events_loses_no_earlier_wake_up() {
    let queue = events::EventQueue::default();
    queue.push(vec![JobEvent::Started("host-a".into())]);
    let job = new_task_id();
    let burst: Vec<JobEvent> = (0..100_000).map(|i| JobEvent::Started(format!("host-{i:06}"))).collect();
    queue.push(burst);
    queue.push(vec![JobEvent::Changed(job), JobEvent::Changed(job)]);
    let taken = queue.take();
    assert!(taken.contains(&JobEvent::Started("host-a".into())));
    assert_eq!(taken.len(), 100_002, "each agent and job once");
    assert!(queue.take().is_empty());
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_wide_window_opens_in_transactions_of_bounded_size(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 5000, 2500, None);
    assert_eq!(job.counts, JobCounts { queued: 2500, waiting: 2500, ..JobCounts::default() });
    assert_eq!(job.next, 2500);
    // One transaction (one version) per START_BATCH targets started.
    assert_eq!(job.version, 3);
    store.pause_job(job.id).unwrap();
    for i in 0..2500 {
        run(&store, &format!("host-{i:05}"), TaskStatus::Succeeded, T0 + 1);
    }
    let paused = job_now(&store, job.id);
    let resumed = store.resume_job(job.id, T0 + 2).unwrap();
    assert_eq!(resumed.counts, JobCounts { queued: 2500, succeeded: 2500, ..JobCounts::default() });
    assert_eq!((resumed.state, resumed.next), (JobState::Running, 5000));
    assert_eq!(resumed.version, paused.version + 3);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_cancel_cut_short_is_finished_for_running_tasks_by_the_next_pass(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 2, None);
    let task =
        store.take_next("host-00000", Delivery::Acknowledged, &[], &mut Vec::new(), T0 + 1).unwrap().unwrap();
    store.apply_report("host-00000", task.id, &outcome(TaskStatus::Running, 0), T0 + 1).unwrap();
    // A crash right after the cancel's first transaction.
    let mut half = job_now(&store, job.id);
    half.state = JobState::Cancelled;
    half.counts.skipped += half.counts.waiting;
    half.counts.waiting = 0;
    store.trees().jobs.insert(jobs::job_key(job.id), codec::encode(&half)).unwrap();
    let finished = store.finish_cancels(T0 + 2).unwrap();
    assert_eq!(finished.len(), 2);
    assert!(store.task(task.id).unwrap().unwrap().cancel_requested);
    assert_eq!(store.pending_cancels("host-00000").unwrap(), vec![task.id]);
    let after = job_now(&store, job.id);
    assert_eq!(after.counts, JobCounts { running: 1, cancelled: 1, skipped: 1, ..JobCounts::default() });
    assert!(store.finish_cancels(T0 + 3).unwrap().is_empty(), "a second pass finds nothing left to do");
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_target_whose_agent_was_forgotten_ends_expired_without_holding_the_window(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let job = create(&store, 3, 1, None);
    let forgotten = AgentRecord {
        app_id: "host-00001".into(),
        secret: String::new(),
        labels: Default::default(),
        version: None,
        hostname: None,
        registered_at_ms: 1,
        last_seen_ms: 1,
        processed_task_count: 0,
        status: AgentStatus::Forgotten,
    };
    store.put_agent(&forgotten).unwrap();
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 1);
    let after = job_now(&store, job.id);
    assert_eq!(after.counts, JobCounts { succeeded: 1, expired: 1, queued: 1, ..JobCounts::default() });
    assert_eq!(store.queued_count("host-00001", 10), 0, "no task waits for a forgotten agent");
    assert_eq!(open_tasks(&store, job.id)[0].app_id, "host-00002");
    let (_, skipped) = targets(&store, job.id).remove(1);
    assert!(skipped.is_none(), "no task was made for it");
    let mut ends = Vec::new();
    store
        .each_target(job.id, |t| {
            ends.push(t.end.map(|e| (e.status, e.error)));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        ends[1],
        Some((TaskStatus::Expired, Some("its agent was forgotten before its turn came".to_owned())))
    );
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_target_whose_agent_lacks_a_feature_of_the_job_ends_failed_without_a_task(engine: Engine) {
    let (_dir, store) = open_on(engine);
    store.note_features("host-00001", &["cwd".to_owned(), "env".to_owned()], T0).unwrap();
    let mut job = job(2, 2, None);
    job.env = std::collections::BTreeMap::from([("A".to_owned(), "b".to_owned())]);
    let job = store.create_job(&job, &[], &app_ids(2), &HashMap::new()).unwrap();
    let all = targets(&store, job.id);
    assert!(all[0].1.is_none(), "no task for the agent that announced nothing");
    assert_eq!(all[1].1.as_ref().map(|t| t.env.clone()), Some(job.env.clone()));
    assert_eq!((job.counts.failed, job.counts.queued, job.counts.waiting), (1, 1, 0));
    let mut ends = Vec::new();
    store
        .each_target(job.id, |t| {
            ends.push(t.end);
            Ok(())
        })
        .unwrap();
    let end = ends[0].clone().expect("ended");
    assert_eq!(end.status, TaskStatus::Failed);
    assert!(end.error.unwrap_or_default().contains("\"host-00000\" does not support the task feature env"));
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn targets_offline_at_the_start_end_offline_without_a_task_and_are_no_errors(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let offline: HashMap<String, i64> = [("host-00001".to_owned(), 7), ("host-00003".to_owned(), 8)].into();
    let created = store.create_job(&job(4, 1, Some(0)), &[], &app_ids(4), &offline).unwrap();
    assert_eq!((created.counts.offline, created.counts.waiting, created.counts.queued), (2, 1, 1));
    // The window of one goes past the offline targets to the next online one.
    run(&store, "host-00000", TaskStatus::Succeeded, T0 + 10);
    run(&store, "host-00002", TaskStatus::Succeeded, T0 + 20);
    let done = job_now(&store, created.id);
    assert_eq!((done.counts.succeeded, done.counts.offline, done.counts.errors()), (2, 2, 0));
    assert_eq!((done.state, done.done_ms), (JobState::Finished, T0 + 21));
    let started: Vec<bool> = targets(&store, created.id).iter().map(|(_, t)| t.is_some()).collect();
    assert_eq!(started, [true, false, true, false]);
}

#[test_case(Engine::Sled; "sled")]
#[test_case(Engine::Postgres; "postgres")]
fn a_job_whose_targets_are_all_offline_is_done_at_once(engine: Engine) {
    let (_dir, store) = open_on(engine);
    let offline: HashMap<String, i64> = app_ids(3).into_iter().map(|a| (a, 5)).collect();
    let created = store.create_job(&job(3, 3, None), &[], &app_ids(3), &offline).unwrap();
    assert_eq!((created.counts.offline, created.counts.total(), created.done_ms), (3, 3, T0));
    assert_eq!(created.state, JobState::Finished);
}
