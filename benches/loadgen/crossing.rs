//! Scenario `crossing`: the wake-up between servers on one PostgreSQL database. One simulated
//! agent parks its long poll on server 0 (`--poll-window`, default 20 s, so a poll waits for the
//! task rather than ending), and `--tasks` tasks (default 100) are enqueued one at a time
//! through server 1: from sending the enqueue to the agent holding the task, the enqueue's
//! commit, its notification and server 0's wake-up all lie on the path. The samples are taken
//! as `latency` takes them on one server.

use anyhow::{Context, Result};

use crate::Options;
use crate::latency::dispatch;
use crate::report::{Table, ms, quantile};

/// The agent's poll window when `--poll-window` is not given, in seconds.
const POLL_WINDOW: u64 = 20;

/// Runs the scenario and prints its table.
pub async fn run(options: &Options) -> Result<()> {
    let tasks = options.tasks.unwrap_or(100);
    let options =
        Options { poll_window: Some(options.poll_window.unwrap_or(POLL_WINDOW)), ..options.clone() };
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let servers = options.start_servers(&dir.path().join("db"))?;
    let samples =
        dispatch(servers.addr(0), servers.addr(1), tasks).await.with_context(|| servers.log_tail())?;
    let mut table = Table::new(&["measure", "n", "p50", "p90", "p99", "max"]);
    let names = [
        "enqueue sent to server 1 → agent on server 0 holds the task",
        "enqueue acknowledged by server 1 (durable)",
        "enqueue sent → final report acknowledged by server 0",
    ];
    for (name, mut sample) in names.into_iter().zip(samples) {
        sample.sort_unstable();
        let cells = [0.50, 0.90, 0.99, 1.0].map(|q| ms(quantile(&sample, q)));
        table.row(&[[name.to_owned(), sample.len().to_string()].as_slice(), &cells].concat());
    }
    println!(
        "## crossing: one agent parked on server 0, tasks enqueued through server 1 (poll window {} s)\n\n{}\n",
        options.poll_window.unwrap_or(POLL_WINDOW),
        servers.describe()
    );
    table.print();
    servers.stop()
}
