//! What happens to a delivered task. A new one is registered, journaled as started, acknowledged
//! with `doing`, run on a worker thread with its cancel flag and output stream, journaled as
//! finished and reported. A task this agent already knows is never run again: a finished one is
//! re-reported, one running here is re-acknowledged, and one an earlier life of the agent left
//! unfinished is reported `lost`. Also: cancels from the poll, and the journal's recovery at start.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, error, info, info_span, warn};

use super::control::TaskControl;
use super::handler::{TaskContext, TaskHandler, TaskOutcome};
use super::journal::{Entry, RETENTION, file_name};
use super::orphans::JournaledGroups;
use super::report::{build_report, doing_report, lost_report, send_final};
use super::retry::{Sent, is_superseded, until_done};
use super::shared::{Shared, SlotGuard};
use super::stream::{StreamSummary, TaskStream};
use crate::protocol::features;
use crate::protocol::{ReportRequest, WireTask};

/// Start of the error of a task whose journal entry could not be read: it may have run once.
const UNREADABLE_ERROR: &str =
    "the agent's journal entry for this task is unreadable, so it may have run before; it was not run again";

/// Takes a task the server handed out. Returns true when no slot was free for it: the server
/// ignored the capacity the agent asked with (the task then waits here for a slot).
pub fn deliver(shared: &Arc<Shared>, handler: &Arc<dyn TaskHandler>, task: WireTask) -> bool {
    let _span = info_span!("task", id = %task.task_id).entered();
    if shared.stop.stopping() {
        info!("task arrived while stopping; not acknowledged, so the server hands it out again");
        return false;
    }
    if let Some(control) = shared.tasks.get(&task.task_id) {
        reacknowledge(shared, &task, &control);
        return false;
    }
    match shared.journal.get(&task.task_id) {
        Ok(None) => start(shared, handler, task),
        Ok(Some(entry)) if entry.report.is_none() && !entry.ran => {
            info!("an earlier run of the agent took this task but never ran it; running it now");
            restart(shared, handler, task)
        }
        Ok(Some(entry)) => {
            known_task(shared, entry, task.attempt);
            false
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "cannot read the task's journal entry; reporting it lost");
            let mut entry = Entry::started(&task);
            let mut report = lost_report(&entry);
            report.error = Some(format!("{UNREADABLE_ERROR}: {e:#}"));
            entry.report = Some(report);
            queue_final(shared, &entry);
            false
        }
    }
}

/// Forgets the journal entry of a task never run, then starts it like a new delivery.
fn restart(shared: &Arc<Shared>, handler: &Arc<dyn TaskHandler>, task: WireTask) -> bool {
    if let Err(e) = shared.journal.remove(&task.task_id) {
        error!(error = %format!("{e:#}"), "cannot clear the task's journal entry; not running it");
        return false;
    }
    start(shared, handler, task)
}

/// A repeated delivery of a task running here: the earlier `doing` may have been lost. The
/// agent holds the new delivery from now on (the server refuses what names the earlier one).
fn reacknowledge(shared: &Shared, task: &WireTask, control: &TaskControl) {
    control.adopt(task.attempt);
    if !control.is_acked() {
        debug!("task delivered again while its start is being acknowledged");
        return;
    }
    match shared.client.report(&doing_report(task, control.attempt())) {
        Ok(()) => info!("task delivered again while running here; acknowledged it again"),
        Err(e) => warn!(error = %e, "task delivered again; cannot acknowledge it again"),
    }
}

/// A delivery (number `attempt`) of a task the journal knows but this process does not run.
/// Its report names this delivery, the one the server now holds the agent to.
fn known_task(shared: &Shared, mut entry: Entry, attempt: Option<u32>) {
    if let Some(report) = &mut entry.report {
        info!("task already finished here; reporting it again instead of running it");
        name_newest(report, attempt);
        queue_final(shared, &Entry { reported: false, ..entry });
    } else {
        warn!("an earlier run of the agent started this task and never finished it; reporting it lost");
        mark_lost(shared, entry, attempt);
    }
}

/// Makes `report` name delivery `attempt` if it is later than the one it names.
fn name_newest(report: &mut ReportRequest, attempt: Option<u32>) {
    report.attempt = report.attempt.max(attempt);
}

/// Journals a `lost` report (naming delivery `attempt`) for an entry an earlier life left
/// unfinished and queues it.
fn mark_lost(shared: &Shared, entry: Entry, attempt: Option<u32>) {
    let mut report = lost_report(&entry);
    name_newest(&mut report, attempt);
    queue_final(shared, &Entry { report: Some(report), reported: false, ..entry });
}

/// Journals an entry holding a final report and queues the report in the outbox.
fn queue_final(shared: &Shared, entry: &Entry) {
    match shared.journal.put(entry) {
        Ok(()) => shared.outbox.push(&entry.task_id),
        Err(e) => error!(error = %format!("{e:#}"), "cannot journal the final report"),
    }
}

/// Registers a new task and starts its worker thread.
fn start(shared: &Arc<Shared>, handler: &Arc<dyn TaskHandler>, task: WireTask) -> bool {
    let Some(control) = shared.tasks.insert(&task.task_id, task.attempt) else {
        return false;
    };
    let slot = shared.slots.try_take();
    let over_capacity = slot.is_none();
    if over_capacity {
        warn!("task handed out with no free slot; it waits for one");
    }
    let id = task.task_id.clone();
    let worker = {
        let (shared, handler) = (Arc::clone(shared), Arc::clone(handler));
        move || Worker { shared: &shared, task: &task, control }.run(handler.as_ref(), slot)
    };
    if let Err(e) = thread::Builder::new().name("orange-task".into()).spawn(worker) {
        // Not journaled, not acknowledged: the server hands the task out again.
        error!(error = %e, "cannot start a thread for the task");
        shared.tasks.remove(&id);
    }
    over_capacity
}

/// One task's life on its worker thread.
struct Worker<'a> {
    shared: &'a Arc<Shared>,
    task: &'a WireTask,
    control: Arc<TaskControl>,
}

impl Worker<'_> {
    fn run(self, handler: &dyn TaskHandler, slot: Option<SlotGuard>) {
        let _span = info_span!("task", id = %self.task.task_id).entered();
        let _registered = Registered(self.shared, &self.task.task_id);
        // Moved here so the slot is given back before the poll loop hears that the task ended.
        let slot = slot;
        let mut entry = Entry::started(self.task);
        if let Err(e) = self.shared.journal.put(&entry) {
            let reason = format!("the agent cannot journal the task, so it did not run it: {e:#}");
            error!(%reason, "task not run");
            return self.report_unjournaled(&reason);
        }
        if !self.acknowledge(&mut entry) {
            return;
        }
        let Some(_slot) = slot.or_else(|| self.wait_for_slot()) else {
            let outcome = self.not_run_outcome();
            return self.finish(entry, outcome, Duration::ZERO, None);
        };
        entry.ran = true;
        if let Err(e) = self.shared.journal.put(&entry) {
            let outcome = TaskOutcome::failed(format!(
                "the agent cannot journal the task's start, so it did not run it: {e:#}"
            ));
            return self.finish(entry, outcome, Duration::ZERO, None);
        }
        debug!(task_type = %self.task.task_type, "task started");
        let stream = TaskStream::new(Arc::clone(self.shared), &self.task.task_id, Arc::clone(&self.control));
        let groups = JournaledGroups::new(Arc::clone(self.shared), entry.clone());
        let ctx =
            TaskContext::new(Arc::clone(&self.control), Arc::clone(&stream), self.shared.config.cancel_grace)
                .watched_by(Arc::new(groups));
        let started = Instant::now();
        let outcome = run_handler(handler, self.task, &ctx);
        self.finish(entry, outcome, started.elapsed(), stream.summary());
    }

    /// Sends `doing` until the server takes it. False when the task must not run: the server
    /// refused it (it is final there: then it is reported failed; or it was handed out again
    /// to someone else: then it is forgotten here), or the agent stopped first (then it is
    /// reported failed). Once the server took it, the task runs and cannot be handed out
    /// again, so the delivery held then is the task's last: it is journaled with the task.
    fn acknowledge(&self, entry: &mut Entry) -> bool {
        // Built for each try: a delivery made again meanwhile is named from then on.
        let named = std::cell::Cell::new(None);
        let doing = || {
            named.set(self.control.attempt());
            self.shared.client.report(&doing_report(self.task, named.get()))
        };
        let sent = loop {
            match until_done(self.shared, "start acknowledgement", doing) {
                // Handed to this agent again meanwhile (the server missed the acknowledgement's
                // deadline): acknowledge that delivery instead.
                Sent::Refused(reason) if is_superseded(&reason) && self.control.attempt() != named.get() => {}
                sent => break sent,
            }
        };
        match sent {
            Sent::Done(()) => {
                self.control.set_acked();
                if self.control.attempt() != named.get() {
                    // Handed out again after the last try was sent, before it was taken: the
                    // poll loop left that acknowledgement to this one.
                    reacknowledge(self.shared, self.task, &self.control);
                }
                if let Some(task) = &mut entry.task {
                    task.attempt = self.control.attempt();
                }
                true
            }
            Sent::Refused(reason) if is_superseded(&reason) => {
                warn!(%reason, "the server handed the task out again since; not running it here");
                if let Err(e) = self.shared.journal.remove(&self.task.task_id) {
                    error!(error = %format!("{e:#}"), "cannot clear the task's journal entry");
                }
                false
            }
            Sent::Refused(reason) => {
                warn!(%reason, "server refused the task's start; not running it");
                let outcome = TaskOutcome::failed(format!("the server refused to start the task: {reason}"));
                entry.report = Some(build_report(self.task, outcome, Duration::ZERO, None));
                entry.reported = true;
                self.journal(entry);
                false
            }
            Sent::GaveUp => {
                let outcome = TaskOutcome::failed(
                    "the agent stopped before the server acknowledged the task; it did not run",
                );
                self.finish(entry.clone(), outcome, Duration::ZERO, None);
                false
            }
        }
    }

    fn wait_for_slot(&self) -> Option<SlotGuard> {
        let shared = self.shared;
        shared.slots.take_when_free(&|| shared.stop.stopping() || self.control.is_cancelled())
    }

    fn not_run_outcome(&self) -> TaskOutcome {
        if self.control.is_cancelled() {
            TaskOutcome::cancelled("cancelled before it started")
        } else {
            TaskOutcome::failed("the agent stopped before a slot was free; the task did not run")
        }
    }

    /// Journals the final report, then sends it.
    fn finish(
        &self,
        mut entry: Entry,
        outcome: TaskOutcome,
        took: Duration,
        streamed: Option<StreamSummary>,
    ) {
        let report = ReportRequest {
            attempt: self.control.attempt(),
            ..build_report(self.task, outcome, took, streamed)
        };
        debug!(
            status = %report.do_status,
            exit_code = ?report.exit_code,
            duration_ms = report.duration_ms,
            output_chunks = report.output_chunks,
            "task finished"
        );
        entry.report = Some(report.clone());
        self.journal(&entry);
        send_final(self.shared, &report);
    }

    fn journal(&self, entry: &Entry) {
        if let Err(e) = self.shared.journal.put(entry) {
            error!(error = %format!("{e:#}"), "cannot journal the task's result");
        }
    }

    /// Reports a failure that could not be journaled.
    fn report_unjournaled(&self, reason: &str) {
        let report = ReportRequest {
            attempt: self.control.attempt(),
            ..build_report(self.task, TaskOutcome::failed(reason), Duration::ZERO, None)
        };
        if let Sent::Refused(why) = until_done(self.shared, "report", || self.shared.client.report(&report)) {
            warn!(reason = %why, "server refused the report; dropping it");
        }
    }
}

/// Runs the handler unless the task was already cancelled or needs a feature the handler does
/// not have (a server must not hand it out; if one does, the task fails instead of running
/// wrong); a panic becomes a failure.
fn run_handler(handler: &dyn TaskHandler, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
    if ctx.is_cancelled() {
        return TaskOutcome::cancelled("cancelled before it started");
    }
    let missing = features::missing(&task.required_features(), &handler.features());
    if !missing.is_empty() {
        return TaskOutcome::failed(format!(
            "this agent does not support the task feature(s) {}; the task was not run",
            missing.join(", ")
        ));
    }
    catch_unwind(AssertUnwindSafe(|| handler.run_with(task, ctx))).unwrap_or_else(|_| {
        error!("task handler panicked");
        TaskOutcome::failed("the task handler panicked")
    })
}

/// A task registered in [`Shared::tasks`]; forgotten (and the poll loop told) when dropped.
struct Registered<'a>(&'a Shared, &'a str);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.tasks.remove(self.1);
        self.0.task_ended();
    }
}

/// Handles the cancel list of a poll answer: stops each task running here; re-reports one the
/// journal has finished; ignores any other.
pub fn cancel_tasks(shared: &Shared, ids: &[String]) {
    for id in ids {
        let _span = info_span!("task", id = %id).entered();
        if let Some(control) = shared.tasks.get(id) {
            info!("task cancelled by an operator; stopping it");
            control.cancel();
            continue;
        }
        match shared.journal.get(id) {
            Ok(Some(entry)) if entry.report.is_some() => {
                info!("cancel for a task already finished here; reporting it again");
                shared.outbox.push(id);
            }
            Ok(_) => debug!("cancel for a task not running here; ignored"),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "cancel for a task with an unreadable journal entry; ignored")
            }
        }
    }
}

/// At start: runs again every task an earlier life took but never ran, reports `lost` every
/// task it ran and never finished, queues every unreported result, and prunes old entries.
pub fn recover(shared: &Arc<Shared>, handler: &Arc<dyn TaskHandler>) {
    let entries = match shared.journal.entries() {
        Ok(entries) => entries,
        Err(e) => {
            error!(error = %format!("{e:#}"), "cannot read the task journal");
            return;
        }
    };
    let (mut lost, mut unreported) = (0, 0);
    for entry in entries {
        if shared.tasks.get(&entry.task_id).is_some() {
            continue;
        }
        let _span = info_span!("task", id = %entry.task_id).entered();
        match (&entry.report, entry.reported) {
            (None, _) if !entry.ran && entry.task.is_some() => {
                info!("the agent restarted before this task ran; running it now");
                if let Some(task) = entry.task {
                    restart(shared, handler, task);
                }
            }
            (None, _) => {
                warn!("the agent restarted while this task ran; reporting it lost");
                mark_lost(shared, entry, None);
                lost += 1;
            }
            (Some(_), false) => {
                shared.outbox.push(&entry.task_id);
                unreported += 1;
            }
            (Some(_), true) => {}
        }
    }
    info!(lost, unreported, "task journal recovered");
    prune(shared);
}

/// Removes journal entries older than [`RETENTION`], keeping those of tasks handled now.
pub fn prune(shared: &Shared) {
    let mut keep: Vec<String> = shared.tasks.ids().iter().map(|id| file_name(id)).collect();
    // A result not yet taken by the server, or a task taken and never run, is kept however old:
    // it is still owed to the server.
    if let Ok(entries) = shared.journal.entries() {
        let owed = entries.into_iter().filter(|e| !e.reported && (e.report.is_some() || !e.ran));
        keep.extend(owed.map(|e| file_name(&e.task_id)));
    }
    let before = SystemTime::now().checked_sub(RETENTION).unwrap_or(SystemTime::UNIX_EPOCH);
    match shared.journal.prune(before, &|name| keep.iter().any(|k| k == name)) {
        Ok(0) => {}
        Ok(removed) => info!(removed, "pruned old journal entries"),
        Err(e) => warn!(error = %format!("{e:#}"), "cannot prune the task journal"),
    }
}
