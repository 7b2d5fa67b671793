//! `orange agent`: registers with the server, long-polls for tasks, runs them on worker threads
//! and reports the results. Blocking code on ureq; no async runtime.
//!
//! # Layout
//! - [`config`]: `AgentConfig`, validated once from flags and environment; the `Secret` newtype.
//! - [`state`]: the state directory and the generated secret kept in it.
//! - [`poll`]: registration, the poll loop, the heartbeat and the task slots.
//! - [`handler`]: the embedding API, `TaskHandler` and `TaskOutcome`.
//! - [`executor`]: the built-in handler (`ping`, `shell`, the handlers directory).
//! - [`process`]: running a process in its own group with a deadline and capped output.
//! - [`report`]: building and sending `reportTask` bodies.
//! - [`backoff`]: capped exponential backoff with full jitter.
//!
//! # Embedding
//! ```no_run
//! use std::sync::Arc;
//! use orange::agent::{AgentConfig, TaskHandler, TaskOutcome};
//! # fn main() -> anyhow::Result<()> {
//! # let args: orange::cli::AgentArgs = unimplemented!();
//! let config = AgentConfig::from_args(args)?;
//! let handler: Arc<dyn TaskHandler> = Arc::new(|task: &orange::protocol::WireTask| {
//!     TaskOutcome::success(format!("got {}", task.payload))
//! });
//! orange::agent::run(config, handler, orange::agent::stop_on_signals()?)
//! # }
//! ```

pub mod backoff;
pub mod config;
pub mod executor;
pub mod handler;
pub mod poll;
pub mod process;
pub mod report;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{info, warn};

pub use config::{AgentConfig, Secret};
pub use executor::BuiltinExecutor;
pub use handler::{OutcomeStatus, TaskHandler, TaskOutcome};

use poll::Shared;

/// How often the main thread looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Runs the agent with the built-in executors until SIGINT or SIGTERM.
pub fn run_blocking(config: AgentConfig) -> Result<()> {
    let handler: Arc<dyn TaskHandler> = Arc::new(BuiltinExecutor::new(&config));
    run(config, handler, stop_on_signals()?)
}

/// A flag that the first SIGINT or SIGTERM sets (stop polling, let running tasks finish); a
/// second one kills the running tasks' process groups and exits the process at once.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install the signal handlers")?;
    let flag = Arc::clone(&stop);
    spawn_named("orange-signals", move || {
        for signal in signals.forever() {
            if flag.swap(true, Ordering::SeqCst) {
                let killed = process::kill_running_groups();
                warn!(signal, killed, "second signal: killed running tasks, exiting now");
                std::process::exit(128 + signal);
            }
            info!(signal, "signal received: stopping once running tasks finish (again to exit now)");
        }
    })?;
    Ok(stop)
}

/// Runs the agent with `handler` until `stop` is set: registers, polls, runs tasks (at most
/// `config.max_tasks` at once) and reports them. On stop it waits for running tasks to finish and
/// report, then returns; a long poll still parked on the server is abandoned.
pub fn run(config: AgentConfig, handler: Arc<dyn TaskHandler>, stop: Arc<AtomicBool>) -> Result<()> {
    info!(server = %config.server, app_id = %config.app_id, max_tasks = config.max_tasks, "agent starting");
    let shared = Arc::new(Shared::new(config, stop));
    let poller = spawn_named("orange-poll", {
        let shared = Arc::clone(&shared);
        move || poll::poll_loop(shared, handler)
    })?;
    spawn_named("orange-heartbeat", {
        let shared = Arc::clone(&shared);
        move || poll::heartbeat_loop(shared)
    })?;
    while !shared.stopping() && !poller.is_finished() {
        thread::sleep(STOP_CHECK);
    }
    let crashed = !shared.stopping();
    if crashed {
        shared.request_stop();
    }
    info!(running = shared.running(), "stopping: waiting for running tasks to finish");
    shared.wait_idle();
    if crashed {
        bail!("the poll loop ended unexpectedly");
    }
    info!("agent stopped");
    Ok(())
}

fn spawn_named<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))
}

#[cfg(test)]
mod fake_server;
#[cfg(test)]
mod tests;
