//! The state gauges, read at scrape time rather than kept up to date on every request:
//! agents by status (pending, and accepted ones online or offline by the presence's rule), long
//! polls parked now, open tasks by state, the queues' depth, jobs by state, and the size of the
//! data directory.
//!
//! The store keeps no running counts, so they are counted from its indexes with bounded scans
//! ([`Store::counts`]: the deadline index holds only open tasks, never the finished ones that
//! retention keeps; queue keys are read without their values), agents from their records, and
//! the data directory by listing it. One reading is kept for [`FRESH_FOR`]: scrapes closer
//! together than that (several Prometheus servers, a curious operator) cost nothing more.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::warn;

use super::Metrics;
use crate::protocol::jobs::JobState;
use crate::server::clock::now_ms;
use crate::server::presence::Presence;
use crate::server::store::{AgentStatus, Store, StoredCounts};

/// How long one reading of the state is served before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// Most entries one scrape reads from each index (open tasks, queue entries, jobs).
pub const SCAN_LIMIT: usize = 100_000;
/// Most files counted in the data directory (sled's files, the log's segments: a few dozen).
const MAX_DIR_ENTRIES: usize = 10_000;
/// Deepest directory level counted (`DIR/sled.N/blobs/...`).
const MAX_DIR_DEPTH: usize = 4;

/// Every job state, each with its gauge.
const JOB_STATES: [JobState; 5] =
    [JobState::Running, JobState::Paused, JobState::Stopped, JobState::Cancelled, JobState::Finished];

/// Reads the state gauges from the store, the presence and the data directory.
pub struct StateGauges {
    store: Arc<Store>,
    presence: Arc<Presence>,
    data_dir: PathBuf,
    /// When the gauges were last set; held while they are read, so scrapes do not read twice.
    read_at: tokio::sync::Mutex<Option<Instant>>,
}

/// One reading of the state.
#[derive(Debug, Default)]
struct Reading {
    online: u64,
    offline: u64,
    pending: u64,
    parked_polls: u64,
    stored: StoredCounts,
    data_dir_bytes: u64,
}

impl StateGauges {
    /// The gauges of the server whose store, presence and data directory these are.
    pub fn new(store: Arc<Store>, presence: Arc<Presence>, data_dir: PathBuf) -> Self {
        StateGauges { store, presence, data_dir, read_at: tokio::sync::Mutex::new(None) }
    }

    /// Sets the state gauges of `metrics`, unless they were set less than [`FRESH_FOR`] ago.
    /// A failed reading leaves the last values (and is logged).
    pub async fn refresh(&self, metrics: &Metrics) {
        let mut read_at = self.read_at.lock().await;
        if read_at.is_some_and(|at| at.elapsed() < FRESH_FOR) {
            return;
        }
        let (store, presence, dir) =
            (Arc::clone(&self.store), Arc::clone(&self.presence), self.data_dir.clone());
        match tokio::task::spawn_blocking(move || read(&store, &presence, &dir)).await {
            Ok(Ok(reading)) => {
                set(metrics, &reading);
                *read_at = Some(Instant::now());
            }
            Ok(Err(e)) => warn!(error = %format!("{e:#}"), "cannot read the state for the metrics"),
            Err(e) => warn!(error = %e, "reading the state for the metrics stopped"),
        }
    }
}

/// Reads the state (blocking: store scans and a directory listing).
fn read(store: &Store, presence: &Presence, data_dir: &Path) -> Result<Reading> {
    let mut reading = Reading { parked_polls: presence.parked_polls(), ..Reading::default() };
    let now = now_ms();
    for agent in store.agents().context("cannot read the agents")? {
        match agent.status {
            AgentStatus::Pending => reading.pending += 1,
            AgentStatus::Accepted if presence.liveness(&agent, now).online => reading.online += 1,
            AgentStatus::Accepted => reading.offline += 1,
            AgentStatus::Forgotten => {}
        }
    }
    reading.stored = store.counts(SCAN_LIMIT).context("cannot count tasks and jobs")?;
    if reading.stored.partial {
        warn!(limit = SCAN_LIMIT, "the metrics counted tasks and jobs only up to the scan limit");
    }
    reading.data_dir_bytes = dir_bytes(data_dir, MAX_DIR_DEPTH, &mut MAX_DIR_ENTRIES.clone())
        .with_context(|| format!("cannot measure {}", data_dir.display()))?;
    Ok(reading)
}

/// Puts `reading` into the gauges of `metrics`.
fn set(metrics: &Metrics, reading: &Reading) {
    let state = metrics.state();
    for (status, n) in
        [("online", reading.online), ("offline", reading.offline), ("pending", reading.pending)]
    {
        state.agents.get_or_create(&[("status", status)]).set(gauge(n));
    }
    state.parked_polls.set(gauge(reading.parked_polls));
    for (status, n) in &reading.stored.open_tasks {
        state.tasks_open.get_or_create(&[("state", status)]).set(gauge(*n));
    }
    state.queue_depth.set(gauge(reading.stored.queue_depth));
    // Every state is set, so one with no job left reads 0 rather than its last count.
    for job_state in JOB_STATES {
        let n = reading.stored.jobs.get(job_state.as_str()).copied().unwrap_or(0);
        state.jobs.get_or_create(&[("state", job_state.as_str())]).set(gauge(n));
    }
    state.data_dir_bytes.set(gauge(reading.data_dir_bytes));
}

fn gauge(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Bytes of the files under `dir`, down to `depth` levels, counting at most `budget` entries.
fn dir_bytes(dir: &Path, depth: usize, budget: &mut usize) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_file() {
            total += entry.metadata()?.len();
        } else if kind.is_dir() && depth > 0 {
            total += dir_bytes(&entry.path(), depth - 1, budget)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_directory_is_measured_within_its_depth_and_budget() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("a"), [0u8; 100])?;
        std::fs::create_dir(dir.path().join("sub"))?;
        std::fs::write(dir.path().join("sub").join("b"), [0u8; 20])?;
        assert_eq!(dir_bytes(dir.path(), 1, &mut 100)?, 120);
        assert_eq!(dir_bytes(dir.path(), 0, &mut 100)?, 100, "too deep is not counted");
        let mut budget = 1;
        assert!(dir_bytes(dir.path(), 1, &mut budget)? <= 120);
        assert_eq!(budget, 0, "the budget is spent");
        Ok(())
    }
}
