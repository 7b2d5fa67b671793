//! The batch feature of orange agents, on the real server binary: an agent announcing it takes
//! up to its capacity in tasks from one getTask and reports several tasks in one call, each
//! report answered on its own; an agent that does not announce it gets one task per poll, as
//! before; acknowledged batch reports survive a SIGKILL.

use orange::client::{AgentClient, PollAnswer};
use orange::protocol::features::AGENT_BATCH;
use orange::protocol::wire::{CODE_ERROR, CODE_OK, DO_STATUS_DOING, DO_STATUS_SUCCESS, MAX_TASKS_PER_POLL};
use orange::protocol::{ReportRequest, WireTask};

use crate::support::{Server, ServerOpts, register_sim};

fn report(task_id: &str, do_status: &str) -> ReportRequest {
    ReportRequest { task_id: task_id.into(), do_status: do_status.into(), ..ReportRequest::default() }
}

/// One poll with `capacity` announcing `features`: the tasks it brought, in order.
fn poll(agent: &AgentClient, capacity: usize, features: &[&str]) -> Vec<WireTask> {
    let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
    match agent.poll_announcing(capacity, &features).unwrap_or_else(|e| panic!("poll: {e}")) {
        PollAnswer::Task(mut first) => {
            let mut tasks = vec![];
            let more = std::mem::take(&mut first.more);
            tasks.push(first);
            tasks.extend(more);
            tasks
        }
        PollAnswer::Idle(control) => panic!("expected tasks, got an idle answer {control:?}"),
    }
}

fn ids(tasks: &[WireTask]) -> Vec<String> {
    tasks.iter().map(|t| t.task_id.clone()).collect()
}

#[test]
fn an_agent_announcing_batch_takes_up_to_its_capacity_per_poll_in_queue_order() {
    let server = Server::start(ServerOpts::default());
    let agent = register_sim(&server, "b1");
    let queued: Vec<String> =
        (0..5).map(|i| server.enqueue(&["b1"], "ping", &i.to_string())[0].task_id.clone()).collect();

    // Without the feature: one task per poll, whatever the capacity.
    let one = poll(&agent, 4, &[]);
    assert_eq!(ids(&one), queued[..1]);
    // With it: up to the capacity, oldest first.
    let three = poll(&agent, 3, &[AGENT_BATCH]);
    assert_eq!(ids(&three), queued[1..4]);
    let rest = poll(&agent, MAX_TASKS_PER_POLL + 10, &[AGENT_BATCH]);
    assert_eq!(ids(&rest), queued[4..]);
    for id in &queued {
        assert_eq!(server.task(id).status.as_str(), "delivered", "task {id}");
    }
}

#[test]
fn a_report_batch_answers_each_report_and_applies_the_good_ones() {
    let server = Server::start(ServerOpts::default());
    let agent = register_sim(&server, "b1");
    let other = register_sim(&server, "b2");
    let mine: Vec<String> = (0..3).map(|_| server.enqueue(&["b1"], "ping", "")[0].task_id.clone()).collect();
    let theirs = server.enqueue(&["b2"], "ping", "")[0].task_id.clone();
    assert_eq!(ids(&poll(&agent, 3, &[AGENT_BATCH])), mine);
    assert_eq!(ids(&poll(&other, 1, &[AGENT_BATCH])), std::slice::from_ref(&theirs));

    let doing: Vec<ReportRequest> = mine.iter().map(|id| report(id, DO_STATUS_DOING)).collect();
    let results = agent.report_many(&doing).unwrap_or_else(|e| panic!("doing batch: {e}"));
    assert!(results.iter().all(|r| r.code == CODE_OK), "{results:?}");
    for id in &mine {
        assert_eq!(server.task(id).status.as_str(), "running");
    }

    // Another agent's task and a bad status are refused one by one; the rest is applied.
    let batch = vec![
        report(&mine[0], DO_STATUS_SUCCESS),
        report(&theirs, DO_STATUS_SUCCESS),
        report(&mine[1], "finished-ish"),
        report(&mine[2], DO_STATUS_SUCCESS),
    ];
    let results = agent.report_many(&batch).unwrap_or_else(|e| panic!("final batch: {e}"));
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [CODE_OK, CODE_ERROR, CODE_ERROR, CODE_OK], "{results:?}");
    assert!(results[1].message.contains("another agent"), "{results:?}");
    assert!(results[2].message.contains("do_status"), "{results:?}");
    assert_eq!(server.task(&mine[0]).status.as_str(), "succeeded");
    assert_eq!(server.task(&mine[1]).status.as_str(), "running");
    assert_eq!(server.task(&mine[2]).status.as_str(), "succeeded");
    assert_eq!(server.task(&theirs).status.as_str(), "delivered");
}

#[test]
fn acknowledged_batch_deliveries_and_reports_survive_sigkill() {
    let mut server = Server::start(ServerOpts::default());
    let agent = register_sim(&server, "b1");
    let queued: Vec<String> =
        (0..6).map(|_| server.enqueue(&["b1"], "ping", "")[0].task_id.clone()).collect();
    let taken = ids(&poll(&agent, 6, &[AGENT_BATCH]));
    assert_eq!(taken, queued);
    let doing: Vec<ReportRequest> = taken.iter().map(|id| report(id, DO_STATUS_DOING)).collect();
    assert!(agent.report_many(&doing).expect("doing").iter().all(|r| r.code == CODE_OK));
    let done: Vec<ReportRequest> = taken[..3].iter().map(|id| report(id, DO_STATUS_SUCCESS)).collect();
    assert!(agent.report_many(&done).expect("done").iter().all(|r| r.code == CODE_OK));

    server.kill();
    server.restart();
    for (i, id) in queued.iter().enumerate() {
        let expected = if i < 3 { "succeeded" } else { "running" };
        assert_eq!(server.task(id).status.as_str(), expected, "task {i} after restart");
    }
}
