//! The background sweeper: applies due deadlines every sweep interval (queue expiry, ack window,
//! end of run) and jobs' host timeouts (tasks of agents gone silent), and retention every minute (or every quarter of a shorter retention period):
//! finished tasks, done jobs, used request records and silent agents older than the retention
//! period, and job cancels cut short by a crash. After retention it compacts the database if it
//! is mostly garbage; SIGUSR1 compacts it at once, whatever its size.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::clock::{millis, now_ms};
use super::dispatch::Dispatch;
use super::guard::forget_old_uses;
use super::store::{Store, StoreError};
use super::tasks::tell_cancelled;

/// How often retention runs (more often when the retention period is shorter than 4 minutes).
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// Applies deadlines and retention until the server stops.
pub struct Sweeper {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    interval: Duration,
    retention: Duration,
}

impl Sweeper {
    /// A sweeper looking at deadlines every `interval` and keeping records for `retention`.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>, interval: Duration, retention: Duration) -> Self {
        Sweeper { store, dispatch, interval, retention }
    }

    /// Sweeps until the server stops.
    pub async fn run(self) {
        let mut last_retention = tokio::time::Instant::now();
        let mut compact_signal = compact_signal();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                () = next_signal(&mut compact_signal) => {
                    info!("SIGUSR1: compacting the database now");
                    self.compact(false).await;
                    continue;
                }
                _ = self.dispatch.stopped() => return,
            }
            if let Err(e) = self.sweep_deadlines().await {
                warn!(error = %e, "deadline sweep failed");
            }
            if let Err(e) = self.sweep_silent_hosts().await {
                warn!(error = %e, "host timeout sweep failed");
            }
            if last_retention.elapsed() >= RETENTION_INTERVAL.min(self.retention / 4) {
                last_retention = tokio::time::Instant::now();
                if let Err(e) = self.sweep_retention() {
                    warn!(error = %e, "retention sweep failed");
                }
                self.compact(true).await;
            }
        }
    }

    /// Applies the deadlines that passed; requeued tasks wake their agent.
    async fn sweep_deadlines(&self) -> Result<usize, StoreError> {
        let swept = self.store.sweep_deadlines(now_ms())?;
        if swept.is_empty() {
            return Ok(0);
        }
        self.store.durable().await?;
        for moved in &swept {
            debug!(task = %moved.task.id, agent = %moved.task.app_id, status = %moved.task.status, "deadline passed");
            if moved.requeued {
                self.dispatch.wake_agent(&moved.task.app_id);
            }
            self.dispatch.task_changed(moved.task.id);
        }
        Ok(swept.len())
    }

    /// Ends the open tasks of jobs whose agent has been silent (no request, no poll parked) for
    /// longer than the job's host timeout; a live agent, which keeps a poll parked while its
    /// tasks run, is never silent.
    async fn sweep_silent_hosts(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let mut agents = HashMap::new();
        let mut ended = Vec::new();
        for (task, timeout_ms) in self.store.open_job_tasks()? {
            if !agents.contains_key(&task.app_id) {
                let agent = self.store.agent(&task.app_id)?;
                agents.insert(task.app_id.clone(), agent);
            }
            let Some(Some(agent)) = agents.get(&task.app_id) else { continue };
            let silent_ms = self.dispatch.presence().silent_ms(agent, now);
            if silent_ms <= timeout_ms {
                continue;
            }
            let note = format!(
                "its agent went silent: no request from it for {} s, past the job's host timeout of {} s",
                silent_ms / 1000,
                timeout_ms / 1000
            );
            if let Some(task) = self.store.end_silent(task.id, &note, now)? {
                ended.push(task);
            }
        }
        if ended.is_empty() {
            return Ok(0);
        }
        self.store.durable().await?;
        for task in &ended {
            debug!(task = %task.id, agent = %task.app_id, status = %task.status, "host timeout passed");
            self.dispatch.task_changed(task.id);
        }
        Ok(ended.len())
    }

    /// Compacts the database (only if it is mostly garbage when `if_needed`), on a blocking
    /// thread; store operations go on while it copies (see `store/compact.rs`).
    async fn compact(&self, if_needed: bool) {
        let store = Arc::clone(&self.store);
        let compact = move || if if_needed { store.compact_if_needed() } else { store.compact().map(Some) };
        match tokio::task::spawn_blocking(compact).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "compaction failed"),
            Err(e) => warn!(error = %e, "compaction stopped"),
        }
    }
}

/// SIGUSR1, which asks for a compaction now; `None` (and a warning) if it cannot be listened to.
fn compact_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::user_defined1())
        .inspect_err(|e| warn!(error = %e, "cannot listen to SIGUSR1; compaction only by size"))
        .ok()
}

/// The next arrival of `signal`; never, without one.
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            if signal.recv().await.is_none() {
                std::future::pending::<()>().await; // no more signals can arrive
            }
        }
        None => std::future::pending().await,
    }
}

impl Sweeper {
    /// Removes finished tasks (and the files they read), done jobs, uploaded files and silent
    /// agents older than the retention period.
    fn sweep_retention(&self) -> Result<(), StoreError> {
        let cutoff = now_ms() - millis(self.retention);
        let removed = repeat_batches(|| self.store.sweep_finished(cutoff))?;
        self.sweep_job_retention(cutoff)?;
        let files = self.store.sweep_files(cutoff)?;
        if files > 0 {
            info!(files, "retention removed uploaded files");
        }
        forget_old_uses(&self.store, now_ms() / 1000)?;
        let forgotten = self.store.forget_silent_agents(cutoff)?;
        for app_id in &forgotten {
            self.dispatch.presence().forget(app_id);
        }
        if removed > 0 || !forgotten.is_empty() {
            info!(tasks = removed, agents = forgotten.len(), "retention removed old records");
        }
        Ok(())
    }

    /// Finishes cancels cut short by a crash (see [`Store::finish_cancels`]) and tells the
    /// agents; then removes jobs done before `cutoff_ms` with their targets and links.
    fn sweep_job_retention(&self, cutoff_ms: i64) -> Result<(), StoreError> {
        let cancelled = self.store.finish_cancels(now_ms())?;
        tell_cancelled(&self.dispatch, &cancelled);
        if !cancelled.is_empty() {
            info!(tasks = cancelled.len(), "finished the cancel of jobs cut short");
        }
        let removed = repeat_batches(|| self.store.sweep_jobs(cutoff_ms))?;
        if removed > 0 {
            info!(jobs = removed, "retention removed old jobs");
        }
        Ok(())
    }
}

/// Runs a batched removal until a batch removes nothing; the total removed.
fn repeat_batches(mut batch: impl FnMut() -> Result<usize, StoreError>) -> Result<usize, StoreError> {
    let mut removed = 0;
    loop {
        let done = batch()?;
        if done == 0 {
            return Ok(removed);
        }
        removed += done;
    }
}
