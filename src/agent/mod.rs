//! `orange agent`: registers with the server, long-polls for tasks, runs them on worker threads
//! and reports the results. Blocking code on ureq; no async runtime.
//!
//! A task is never lost and never run twice: it is journaled as started (in `<state>/tasks/`)
//! before the agent acknowledges it with `doing` and runs it, and its final report is journaled
//! before it is sent and retried until the server takes it, across outages and restarts. A task
//! delivered again is re-reported or re-acknowledged, never re-run; one that a restart cut short
//! while it ran is reported `lost` (after what is left of its process group is ended), and one
//! taken but never run is run after the restart. While tasks run, a capacity-0 long poll stays parked so operator cancels
//! arrive within moments (SIGTERM to the process group, SIGKILL after a grace), and process
//! output streams live to the server in ordered, acknowledged chunks with bounded memory.
//!
//! # Layout
//! - [`config`]: `AgentConfig` and `AgentBuilder`, which checks plain values into one.
//! - [`state`]: the state directory and the generated secret kept in it.
//! - [`journal`]: one durable JSON file per task: taken, ran, finished (the report), reported.
//! - [`facts`]: the host's facts (OS, kernel, architecture, addresses, boot time) and when they changed.
//! - `shared`: state shared by the threads: slots, the tasks running here, the outbox queue.
//! - `stop`: the stop flag, its grace and how soon sleeping loops notice it.
//! - `poll`: registration, the capacity-aware poll loop and the heartbeat.
//! - `worker`: what happens to a delivered task: journal, ack, run, report; cancels; recovery.
//! - `orphans`: a running task's process groups in the journal, and ending at start what a
//!   dead agent left of them.
//! - `outbox`: the thread sending final reports again from the journal.
//! - `control`: the cancel and acknowledged flags the agent and a running task share.
//! - [`handler`]: the embedding API, `TaskHandler`, `TaskOutcome` and `TaskContext`.
//! - [`executor`]: the built-in handler (`ping`, `shell`, file copy, the handlers directory).
//! - [`files`]: file copy on the host (`file.put`, `file.get`) under the allowed roots.
//! - [`process`]: running a process in its own group with a deadline, cancel and an output sink.
//! - [`group`]: a task's process group as journaled, and ending what a dead agent left of one.
//! - [`sink`]: where a process's output goes (`OutputSink`) and its two streams.
//! - [`capture`]: the sink that keeps capped output (for runs outside the agent).
//! - `stream`: the sink that streams output to the server as numbered chunks.
//! - `report`: building `reportTask` bodies and sending final reports.
//! - `retry`: sending one call until the server takes or refuses it.
//! - [`backoff`]: capped exponential backoff with full jitter, and the pace of the long poll.
//!
//! Files depend downwards in this order: `mod`, `poll`, `worker`, `orphans`, `outbox`, `report`,
//! `executor`, `files`, `handler`, `stream`, `retry`, `backoff`, `shared`, `stop`, `facts`, `config`,
//! `state`, `journal`, `control`, `process`, `group`, `capture`, `sink` (`fake_server`, for
//! tests, on none of them).
//!
//! # Embedding
//! ```no_run
//! use std::sync::Arc;
//! use orange::agent::{AgentConfig, TaskHandler, TaskOutcome};
//! # fn main() -> anyhow::Result<()> {
//! let config = AgentConfig::builder("http://10.0.0.1:8890").app_id("web-1").max_tasks(2).build()?;
//! let handler: Arc<dyn TaskHandler> = Arc::new(|task: &orange::protocol::WireTask| {
//!     TaskOutcome::success(format!("got {}", task.payload))
//! });
//! orange::agent::run(config, handler, orange::agent::stop_on_signals()?)
//! # }
//! ```

pub mod backoff;
pub mod capture;
pub mod config;
mod control;
pub mod executor;
pub mod facts;
pub mod files;
pub mod group;
pub mod handler;
pub mod journal;
mod orphans;
mod outbox;
mod poll;
pub mod process;
mod report;
mod retry;
pub mod run_as;
mod shared;
pub mod sink;
pub mod state;
mod stop;
mod stream;
mod worker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::thread;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use tracing::{info, warn};

pub use crate::protocol::Secret;
pub use config::CANCEL_GRACE;
pub use config::{AgentBuilder, AgentConfig};
pub use executor::BuiltinExecutor;
pub use handler::{OutcomeStatus, TaskContext, TaskHandler, TaskOutcome};

use journal::Journal;
use shared::Shared;

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

/// Runs the agent with `handler` until `stop` is set: makes the state directory private, opens
/// the journal, ends what is left of the process groups of tasks an earlier run died with,
/// registers, reports what an earlier run left in the journal, polls, runs tasks
/// (at most `config.max_tasks` at once) and reports them. On stop it keeps polling with capacity 0 (for cancels) until running
/// tasks finish and report, sends queued re-reports within the stop grace, then returns; results
/// it could not report stay in the journal for the next start.
pub fn run(config: AgentConfig, handler: Arc<dyn TaskHandler>, stop: Arc<AtomicBool>) -> Result<()> {
    info!(server = %config.server, app_id = %config.app_id, max_tasks = config.max_tasks, "agent starting");
    if let Some(proxy) = &config.proxy {
        // Its Display masks a password.
        info!(%proxy, "reaching the server through an HTTP proxy");
    }
    state::prepare_state_dir(&config.state_dir)?;
    let journal = Journal::open(&config.state_dir)?;
    // Held until this function returns, whatever threads still hold the shared state.
    let _journal_lock = journal.lock()?;
    journal.remove_temp_files()?;
    orphans::end_orphans(&journal);
    let (events_tx, events) = mpsc::channel();
    let shared = Arc::new(Shared::new(config, journal, stop, events_tx, handler.features()));
    let poller = spawn_named("orange-poll-loop", {
        let shared = Arc::clone(&shared);
        move || poll::poll_loop(shared, handler, &events)
    })?;
    let outbox = spawn_named("orange-outbox", {
        let shared = Arc::clone(&shared);
        move || outbox::outbox_loop(&shared)
    })?;
    spawn_named("orange-heartbeat", {
        let shared = Arc::clone(&shared);
        move || poll::heartbeat_loop(shared)
    })?;
    while !shared.stop.stopping() && !poller.is_finished() {
        thread::sleep(stop::STOP_CHECK);
    }
    let crashed = !shared.stop.stopping();
    shared.stop.request();
    info!(running = shared.tasks.len(), "stopping: waiting for running tasks to finish");
    shared.tasks.wait_empty();
    let _ = poller.join();
    shared.outbox.close();
    let _ = outbox.join();
    if crashed {
        bail!("the poll loop ended unexpectedly");
    }
    say_goodbye(&shared);
    info!("agent stopped");
    Ok(())
}

/// How long a stopping agent waits for the server to take its goodbye.
const GOODBYE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Tells the server this agent stops, so it shows offline at once (one try: a server that
/// does not hear it, or an older one without the call, shows it offline after its online
/// window instead).
fn say_goodbye(shared: &Shared) {
    match shared.client.goodbye(GOODBYE_TIMEOUT) {
        Ok(()) => info!("said goodbye to the server"),
        Err(e) => warn!(error = %e, "could not say goodbye to the server; it shows this agent offline later"),
    }
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
