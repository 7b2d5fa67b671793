//! Never lost, never twice: the journal written before the run and before the report, results
//! re-sent after a restart, duplicates re-reported instead of re-run, unfinished runs reported
//! lost, the `doing` acknowledgement before the run, cancels through the poll, and polling with
//! capacity 0 while every slot is busy.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{Fixture, RunningAgent, WAIT, runs, shell, wait_for_file};
use crate::agent::journal::{Entry, file_name};
use crate::agent::report::LOST_ERROR;
use crate::agent::{TaskHandler, TaskOutcome};
use crate::protocol::WireTask;

/// A script that records a run in `runs` and says whether its journal entry existed first.
fn recording_script(fx: &Fixture, runs: &std::path::Path) -> String {
    let journal = fx.state.path().join("tasks");
    format!(
        "echo run >> {}; test -f {}/\"$ORANGE_TASK_ID\".json && echo journaled",
        runs.display(),
        journal.display()
    )
}

#[test]
fn a_result_the_server_did_not_take_stays_journaled_and_a_restart_sends_it() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    fx.server.state.update(|s| s.fail_reports = true);
    let agent = fx.start(1);
    fx.server.state.push_task(shell("t1", &recording_script(&fx, &log)));
    fx.server.state.wait_until(WAIT, "a failed report", |s| s.report_calls >= 1);
    let entry = fx.journal().get("t1")?.expect("journaled");
    let report = entry.report.clone().expect("the result is journaled before it is sent");
    assert_eq!((report.do_status.as_str(), entry.reported), ("success", false));
    agent.stop(Duration::from_secs(3));
    assert_eq!(fx.journal().get("t1")?, Some(entry.clone()), "still unreported after the stop");
    assert!(fx.server.state.lock().reports.is_empty());

    fx.server.state.update(|s| s.fail_reports = false);
    let _again = fx.start(1);
    fx.server.state.wait_until(WAIT, "the re-sent report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    assert_eq!(state.report("t1"), Some(&report));
    assert_eq!(state.output("t1"), "journaled\n", "the journal entry existed before the run");
    assert_eq!(runs(&log), 1, "the restart did not run the task again");
    drop(state);
    wait_until_reported(&fx, "t1");
    Ok(())
}

fn wait_until_reported(fx: &Fixture, id: &str) {
    let deadline = Instant::now() + WAIT;
    while !fx.journal().get(id).ok().flatten().is_some_and(|e| e.reported) {
        assert!(Instant::now() < deadline, "{id} never marked reported");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_duplicate_delivery_of_a_finished_task_is_reported_again_not_run() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let _agent = fx.start(2);
    let task = shell("t1", &recording_script(&fx, &log));
    fx.server.state.push_task(task.clone());
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    wait_until_reported(&fx, "t1");
    fx.server.state.push_task(task);
    fx.server
        .state
        .wait_until(WAIT, "the report sent again", |s| s.report_calls_by_task.get("t1") == Some(&2));
    thread::sleep(Duration::from_millis(300));
    let state = fx.server.state.lock();
    assert_eq!(runs(&log), 1);
    assert_eq!(state.delivered.len(), 2);
    assert_eq!(state.doings.len(), 1, "no second start");
    assert_eq!(state.report_calls_by_task.get("t1"), Some(&2));
    Ok(())
}

/// What the agent named as its delivery of `id` in each call of `kind` (`doing`, `final`,
/// `chunk`), in order.
fn named(fx: &Fixture, id: &str, kind: &str) -> Vec<Option<u32>> {
    let state = fx.server.state.lock();
    state.named_deliveries.iter().filter(|(t, k, _)| t == id && *k == kind).map(|(_, _, a)| *a).collect()
}

#[test]
fn a_task_handed_out_again_while_it_runs_is_acknowledged_and_reported_as_the_new_delivery() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let _agent = fx.start(2);
    let script = format!("{}; echo early; sleep 1; echo late", recording_script(&fx, &log));
    let first = WireTask { attempt: Some(1), ..shell("t1", &script) };
    fx.server.state.push_task(first.clone());
    fx.server.state.wait_until(WAIT, "the first acknowledgement", |s| s.doings.len() == 1);
    // The server missed that acknowledgement and hands the task out again.
    fx.server.state.push_task(WireTask { attempt: Some(2), ..first });
    fx.server.state.wait_until(WAIT, "the second acknowledgement", |s| s.doings.len() == 2);
    fx.server.state.wait_until(WAIT, "the report", |s| s.reports.len() == 1);
    assert_eq!(named(&fx, "t1", "doing"), [Some(1), Some(2)]);
    assert_eq!(named(&fx, "t1", "final"), [Some(2)], "reported as the delivery it holds now");
    let chunks = named(&fx, "t1", "chunk");
    assert_eq!(chunks.last(), Some(&Some(2)), "output after the second delivery names it: {chunks:?}");
    assert_eq!(runs(&log), 1, "run once");
    Ok(())
}

#[test]
fn a_delivery_superseded_before_its_acknowledgement_is_not_run_nor_reported_and_a_later_one_runs()
-> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let superseded = "task t1: delivery 1 was superseded by delivery 2; stop running it";
    fx.server.state.update(|s| s.refuse_doing = Some(superseded.into()));
    let _agent = fx.start(1);
    let task = WireTask { attempt: Some(1), ..shell("t1", &recording_script(&fx, &log)) };
    fx.server.state.push_task(task.clone());
    fx.server.state.wait_until(WAIT, "the refused acknowledgement", |s| {
        s.named_deliveries.iter().any(|(id, kind, _)| id == "t1" && *kind == "doing")
    });
    let deadline = Instant::now() + WAIT;
    while fx.journal().get("t1")?.is_some() {
        assert!(Instant::now() < deadline, "the journal entry of a superseded delivery stays");
        thread::sleep(Duration::from_millis(10));
    }
    // Handed to this agent later: it runs, once, as that delivery.
    fx.server.state.update(|s| s.refuse_doing = None);
    fx.server.state.push_task(WireTask { attempt: Some(3), ..task });
    fx.server.state.wait_until(WAIT, "the report", |s| s.reports.len() == 1);
    assert_eq!(named(&fx, "t1", "final"), [Some(3)], "no failed report of the superseded delivery");
    assert_eq!(runs(&log), 1);
    Ok(())
}

#[test]
fn a_finished_task_handed_out_again_is_reported_again_as_the_new_delivery() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let _agent = fx.start(1);
    let task = WireTask { attempt: Some(1), ..shell("t1", &recording_script(&fx, &log)) };
    fx.server.state.push_task(task.clone());
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    wait_until_reported(&fx, "t1");
    fx.server.state.push_task(WireTask { attempt: Some(3), ..task });
    fx.server
        .state
        .wait_until(WAIT, "the report sent again", |s| s.report_calls_by_task.get("t1") == Some(&2));
    assert_eq!(named(&fx, "t1", "final"), [Some(1), Some(3)]);
    assert_eq!(runs(&log), 1);
    Ok(())
}

#[test]
fn a_task_an_earlier_run_left_unfinished_is_reported_lost_and_not_run() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let left = shell("left", &recording_script(&fx, &log));
    let late = shell("late", &recording_script(&fx, &log));
    let journal = fx.journal();
    journal.put(&Entry { ran: true, ..Entry::started(&left) })?;
    journal.put(&Entry { ran: true, ..Entry::started(&late) })?;
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "two lost reports", |s| s.reports.len() == 2);
    fx.server.state.push_task(late);
    fx.server
        .state
        .wait_until(WAIT, "the lost report again", |s| s.report_calls_by_task.get("late") == Some(&2));
    let state = fx.server.state.lock();
    for id in ["left", "late"] {
        let report = state.report(id).expect("reported");
        assert_eq!((report.do_status.as_str(), report.error.as_deref()), ("lost", Some(LOST_ERROR)));
        assert_eq!((report.exit_code, report.output_chunks), (None, None));
    }
    assert_eq!(runs(&log), 0);
    assert!(state.doings.is_empty());
    Ok(())
}

#[test]
fn a_task_an_earlier_run_took_but_never_ran_is_run_once_after_a_restart() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let taken = shell("taken", &recording_script(&fx, &log));
    fx.journal().put(&Entry::started(&taken))?;
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "its report", |s| s.report("taken").is_some());
    let state = fx.server.state.lock();
    assert_eq!(state.report("taken").expect("reported").do_status, "success");
    assert_eq!(runs(&log), 1, "run exactly once");
    assert!(state.doings.iter().any(|(_, id)| id == "taken"), "acknowledged before it ran");
    Ok(())
}

#[test]
fn a_task_with_an_unreadable_journal_entry_is_reported_lost_and_not_run() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let log = tmp.path().join("runs");
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "registration", |s| s.registrations.len() == 1);
    std::fs::write(fx.state.path().join("tasks").join(file_name("t1")), "{garbage")?;
    fx.server.state.push_task(shell("t1", &recording_script(&fx, &log)));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let report = fx.server.state.lock().report("t1").cloned().expect("reported");
    assert_eq!(report.do_status, "lost");
    let error = report.error.unwrap_or_default();
    assert!(error.starts_with("the agent's journal entry for this task is unreadable"), "{error}");
    assert_eq!(runs(&log), 0);
    assert!(fx.journal().get("t1")?.is_some_and(|e| e.report.is_some()), "the bad entry was replaced");
    Ok(())
}

#[test]
fn the_start_is_journaled_and_acknowledged_before_the_task_runs() {
    let fx = Fixture::new();
    let server = Arc::clone(&fx.server.state);
    let journal_dir = fx.state.path().join("tasks");
    let handler: Arc<dyn TaskHandler> = Arc::new(move |task: &WireTask| {
        let acked = server.lock().doings.iter().any(|(_, id)| *id == task.task_id);
        let journaled = journal_dir.join(file_name(&task.task_id)).exists();
        TaskOutcome::success(format!("acked={acked} journaled={journaled}"))
    });
    let _agent = RunningAgent::with_handler(fx.config(1), handler);
    fx.server.state.push_task(WireTask { task_type: "check".into(), ..shell("t1", "") });
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    assert_eq!(state.report("t1").and_then(|r| r.stdout.as_deref()), Some("acked=true journaled=true"));
    assert_eq!(state.doings.len(), 1);
}

#[test]
fn a_refused_start_means_the_task_never_runs() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let ran = tmp.path().join("ran");
    let reason = "task t1 already finished as cancelled";
    fx.server.state.update(|s| s.refuse_doing = Some(reason.into()));
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("t1", &format!("touch {}", ran.display())));
    wait_until_reported(&fx, "t1");
    thread::sleep(Duration::from_millis(300));
    assert!(!ran.exists(), "the task ran although its start was refused");
    let entry = fx.journal().get("t1")?.expect("journaled");
    let error = entry.report.and_then(|r| r.error).unwrap_or_default();
    assert_eq!(error, format!("the server refused to start the task: {reason}"));
    assert_eq!(fx.server.state.lock().report_calls, 0, "nothing more is sent for it");
    Ok(())
}

/// Runs `script` on an agent with one slot, cancels it through the poll once it started and
/// returns its report and the time from the cancel to the report.
fn cancel_running(script: &str) -> Result<(crate::protocol::ReportRequest, String, Duration)> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let started = tmp.path().join("started");
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("t1", &format!("touch {}; {script}", started.display())));
    wait_for_file(&started);
    fx.server.state.wait_until(WAIT, "the first chunk", |s| !s.output("t1").is_empty());
    let cancelled = Instant::now();
    fx.server.state.cancel("t1");
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let took = cancelled.elapsed();
    let state = fx.server.state.lock();
    assert!(state.pending_cancels.is_empty(), "the cancel went out with a poll");
    Ok((state.report("t1").cloned().expect("reported"), state.output("t1"), took))
}

#[test]
fn a_cancel_through_the_poll_stops_the_process_group_and_reports_cancelled() -> Result<()> {
    let (report, output, took) = cancel_running("echo before; sleep 30 & wait")?;
    assert_eq!(report.do_status, "cancelled");
    assert_eq!(report.error.as_deref(), Some("cancelled; the process group was sent SIGTERM"));
    assert_eq!((report.output_chunks, output.as_str()), (Some(1), "before\n"));
    eprintln!("cancel to report: {took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    Ok(())
}

#[test]
fn a_cancelled_process_ignoring_sigterm_is_killed_after_the_grace() -> Result<()> {
    let (report, output, took) = cancel_running("trap '' TERM; echo before; while :; do sleep 0.05; done")?;
    assert_eq!(report.do_status, "cancelled");
    let error = report.error.unwrap_or_default();
    assert_eq!(error, "cancelled; the process group ignored SIGTERM and was killed after the 500 ms grace");
    assert_eq!(output, "before\n", "output up to the kill is kept");
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(2), "{took:?}");
    Ok(())
}

#[test]
fn polling_goes_on_with_capacity_zero_while_the_only_slot_is_busy() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("t1", "sleep 1"));
    fx.server.state.wait_until(WAIT, "delivery", |s| s.delivered.len() == 1);
    let delivered = fx.server.state.lock().delivered[0].0;
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let reported = fx.server.state.lock().reports[0].0;
    // A poll may cross the report on its way (the slot is freed once the report is sent); the
    // ones after it ask for the freed slot.
    fx.server.state.wait_until(WAIT, "a poll asking for the freed slot", |s| {
        s.polls.iter().any(|(at, capacity)| *at > reported && *capacity == Some(1))
    });
    let state = fx.server.state.lock();
    let busy: Vec<Option<usize>> =
        state.polls.iter().filter(|(at, _)| *at > delivered && *at < reported).map(|p| p.1).collect();
    assert!(busy.len() >= 2, "the 300 ms polls went on while the task ran: {busy:?}");
    assert!(busy.iter().all(|capacity| *capacity == Some(0)), "{busy:?}");
}

#[test]
fn a_running_task_has_its_process_group_journaled_until_its_process_is_gone() -> Result<()> {
    let fx = Fixture::new();
    let tmp = tempfile::tempdir()?;
    let (pid_file, release) = (tmp.path().join("pid"), tmp.path().join("release"));
    let script = format!(
        "echo $$ > {pid}.tmp && mv {pid}.tmp {pid}; while [ ! -e {release} ]; do sleep 0.02; done; \
         nohup sleep 30 >/dev/null 2>&1 &",
        pid = pid_file.display(),
        release = release.display()
    );
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("g1", &script));
    wait_for_file(&pid_file);
    let pgid: libc::pid_t = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    // Journaled just after the spawn, so possibly after the shell's first line.
    let deadline = Instant::now() + WAIT;
    let groups = loop {
        let groups = fx.journal().get("g1")?.expect("journaled").groups;
        if !groups.is_empty() || Instant::now() > deadline {
            break groups;
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(groups.iter().map(|g| g.pgid).collect::<Vec<_>>(), [pgid], "{groups:?}");
    assert!(groups[0].members().contains(&pgid), "the record finds the running shell");

    std::fs::write(&release, "")?;
    fx.server.state.wait_until(WAIT, "its report", |s| s.report("g1").is_some());
    let entry = fx.journal().get("g1")?.expect("journaled");
    assert!(entry.groups.is_empty(), "a finished task keeps no group: {entry:?}");
    let left = groups[0].members();
    assert_eq!(left.len(), 1, "the nohup sleep is left in the group: {left:?}");
    // SAFETY: kill(2) of the test's own sleep.
    unsafe { libc::kill(left[0], libc::SIGKILL) };
    Ok(())
}

#[test]
fn a_stopped_agent_says_goodbye_once_after_its_running_task_reported() -> Result<()> {
    let fx = Fixture::new();
    let agent = fx.start(1);
    fx.server.state.push_task(shell("t1", "sleep 0.3; echo done"));
    fx.server.state.wait_until(WAIT, "the task acknowledged", |s| s.doings.len() == 1);
    agent.stop(Duration::from_secs(10));
    let state = fx.server.state.lock();
    assert_eq!(state.goodbyes.len(), 1, "one goodbye");
    assert_eq!(state.reports.len(), 1, "the running task finished and reported first");
    assert!(state.reports[0].0 <= state.goodbyes[0]);
    Ok(())
}
