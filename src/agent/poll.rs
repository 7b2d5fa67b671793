//! The agent's loops: registration, the getTask long poll that hands tasks to worker threads (at
//! most `max_tasks` at once), the heartbeat, and the task slots that let a stop wait for running
//! tasks. Everything is blocking; there is no async runtime in the agent.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, info_span, warn};

use super::backoff::Backoff;
use super::config::AgentConfig;
use super::handler::{TaskHandler, TaskOutcome};
use super::report::{build_report, send_report};
use crate::client::{AgentClient, ClientError, Enrollment};
use crate::protocol::{RegisterRequest, WireTask};

/// Longest pause before a sleeping loop notices a stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// State shared by the poll loop, the heartbeat and the task workers.
pub struct Shared {
    /// Signed connection to the server.
    pub client: AgentClient,
    /// The agent's settings.
    pub config: AgentConfig,
    stop: Arc<AtomicBool>,
    need_register: AtomicBool,
    slots: Arc<Slots>,
}

impl Shared {
    /// Shared state for `config`; the poll loop starts by registering.
    pub fn new(config: AgentConfig, stop: Arc<AtomicBool>) -> Self {
        let client = AgentClient::new(&config.server, &config.app_id, config.secret.expose());
        let slots = Arc::new(Slots::new(config.max_tasks));
        Shared { client, config, stop, need_register: AtomicBool::new(true), slots }
    }

    /// True once the agent was asked to stop.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops the agent, as a signal would.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Sleeps for `duration`, returning early when the agent stops.
    pub fn sleep(&self, duration: Duration) {
        let until = Instant::now() + duration;
        while !self.stopping() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            thread::sleep(left.min(STOP_CHECK));
        }
    }

    /// Asks the poll loop to register again before its next poll.
    pub fn request_register(&self) {
        self.need_register.store(true, Ordering::SeqCst);
    }

    /// Blocks until no task is running. Call only after a stop, so no new task starts.
    pub fn wait_idle(&self) {
        self.slots.wait_idle();
    }

    /// Number of tasks running now.
    pub fn running(&self) -> usize {
        *self.slots.lock()
    }
}

/// Counts running tasks against `max_tasks`.
struct Slots {
    busy: Mutex<usize>,
    changed: Condvar,
    max: usize,
}

impl Slots {
    fn new(max: usize) -> Self {
        Slots { busy: Mutex::new(0), changed: Condvar::new(), max: max.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // Nothing panics while holding the lock, and a count stays meaningful anyway.
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until a slot is free; false if the agent stopped meanwhile.
    fn wait_for_free(&self, stop: &AtomicBool) -> bool {
        let mut busy = self.lock();
        while *busy >= self.max && !stop.load(Ordering::SeqCst) {
            busy = self.changed.wait_timeout(busy, STOP_CHECK).unwrap_or_else(PoisonError::into_inner).0;
        }
        !stop.load(Ordering::SeqCst)
    }

    /// Takes a slot unless the agent is stopping. Checking the stop under the lock means a
    /// stopping agent that saw no running task cannot have one start behind its back.
    fn take(self: &Arc<Self>, stop: &AtomicBool) -> Option<SlotGuard> {
        let mut busy = self.lock();
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        *busy += 1;
        Some(SlotGuard(Arc::clone(self)))
    }

    fn wait_idle(&self) {
        let mut busy = self.lock();
        while *busy > 0 {
            busy = self.changed.wait(busy).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A taken slot, given back when dropped (also if the worker panics).
struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.changed.notify_all();
    }
}

/// True when the server refused a call because it does not know this app id (it lost the
/// registration), which registering again fixes.
pub fn is_unknown_agent(e: &ClientError) -> bool {
    let ClientError::Refused(message) = e else {
        return false;
    };
    let m = message.to_ascii_lowercase();
    [crate::protocol::wire::UNKNOWN_APP_ID, "unknown agent", "not registered", "register first"]
        .iter()
        .any(|needle| m.contains(needle))
}

/// Retry state of the poll loop.
#[derive(Default)]
struct PollRetry {
    /// Grows while the server is unreachable or refuses getTask.
    server: Backoff,
    /// Grows while getTask keeps saying "unknown app id" right after registering again.
    unknown: Backoff,
}

/// The poll loop: registers when needed, then long-polls and starts each task on a worker
/// thread, until the agent stops.
pub fn poll_loop(shared: Arc<Shared>, handler: Arc<dyn TaskHandler>) {
    let mut retry = PollRetry::default();
    while !shared.stopping() {
        if shared.need_register.swap(false, Ordering::SeqCst) && !register(&shared) {
            break;
        }
        if !shared.slots.wait_for_free(&shared.stop) {
            break;
        }
        match shared.client.get_task() {
            Ok(task) => {
                server_is_back(&mut retry.server);
                retry.unknown.reset();
                if let Some(task) = task {
                    dispatch(&shared, &handler, task);
                }
            }
            Err(e) if is_unknown_agent(&e) => unknown_agent(&shared, &mut retry, &e),
            Err(e) => poll_failed(&shared, &mut retry.server, &e),
        }
    }
    debug!("poll loop stopped");
}

fn server_is_back(backoff: &mut Backoff) {
    if backoff.is_failing() {
        info!("server reachable again");
    }
    backoff.reset();
}

/// The server answered but lost this agent's registration: register again at once, and back
/// off only if that keeps happening.
fn unknown_agent(shared: &Shared, retry: &mut PollRetry, e: &ClientError) {
    server_is_back(&mut retry.server);
    warn!(error = %e, "server does not know this agent; registering again");
    shared.request_register();
    let repeated = retry.unknown.is_failing();
    let delay = retry.unknown.next_delay();
    if repeated {
        shared.sleep(delay);
    }
}

fn poll_failed(shared: &Shared, backoff: &mut Backoff, e: &ClientError) {
    let delay = backoff.next_delay();
    let retry_in_ms = delay.as_millis() as u64;
    if e.is_transient() {
        warn!(error = %e, retry_in_ms, "server unreachable, retrying");
    } else {
        warn!(error = %e, retry_in_ms, "server refused getTask, retrying");
    }
    shared.sleep(delay);
}

/// Registers, retrying with backoff; false if the agent stopped first.
fn register(shared: &Shared) -> bool {
    let request = register_request(&shared.config);
    let mut backoff = Backoff::default();
    while !shared.stopping() {
        match shared.client.register(&request, &Enrollment::Key(shared.config.enroll_key.expose().to_owned()))
        {
            Ok(reply) => {
                server_is_back(&mut backoff);
                info!(app_id = %reply.app_id, server = %shared.config.server, "registered");
                return true;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                let retry_in_ms = delay.as_millis() as u64;
                if e.is_transient() {
                    warn!(error = %e, retry_in_ms, "server unreachable, retrying");
                } else {
                    warn!(error = %e, retry_in_ms, "registration refused, retrying");
                }
                shared.sleep(delay);
            }
        }
    }
    false
}

fn register_request(config: &AgentConfig) -> RegisterRequest {
    RegisterRequest {
        app_id: config.app_id.clone(),
        secret: config.secret.expose().to_owned(),
        labels: config.labels.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        hostname: Some(config.hostname.clone()),
    }
}

/// Starts `task` on a worker thread holding a slot. A task that arrives once the agent is
/// stopping, or that gets no thread, is reported failed rather than dropped.
fn dispatch(shared: &Arc<Shared>, handler: &Arc<dyn TaskHandler>, task: WireTask) {
    let Some(slot) = shared.slots.take(&shared.stop) else {
        refuse(shared, &task, "the agent was stopping and did not run the task");
        return;
    };
    let (worker_shared, worker_handler, worker_task) =
        (Arc::clone(shared), Arc::clone(handler), task.clone());
    let spawned = thread::Builder::new().name("orange-task".into()).spawn(move || {
        let _slot = slot;
        run_task(&worker_shared, worker_handler.as_ref(), &worker_task);
    });
    if let Err(e) = spawned {
        refuse(shared, &task, &format!("the agent could not start a thread for the task: {e}"));
    }
}

fn refuse(shared: &Shared, task: &WireTask, reason: &str) {
    let _span = info_span!("task", id = %task.task_id).entered();
    warn!(reason, "task not run");
    send_report(shared, &build_report(task, TaskOutcome::failed(reason), Duration::ZERO));
}

/// Runs one task in its own span, measures it and reports the outcome.
fn run_task(shared: &Shared, handler: &dyn TaskHandler, task: &WireTask) {
    let _span = info_span!("task", id = %task.task_id).entered();
    info!(task_type = %task.task_type, "task started");
    let started = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.run(task))).unwrap_or_else(|_| {
        error!("task handler panicked");
        TaskOutcome::failed("the task handler panicked")
    });
    let duration = started.elapsed();
    info!(
        status = %outcome.status.do_status(),
        exit_code = ?outcome.exit_code,
        duration_ms = duration.as_millis() as u64,
        "task finished"
    );
    send_report(shared, &build_report(task, outcome, duration));
}

/// The heartbeat: a ping every `config.heartbeat` until the agent stops. Connectivity problems
/// are the poll loop's to report; an unknown app id asks it to register again.
pub fn heartbeat_loop(shared: Arc<Shared>) {
    loop {
        shared.sleep(shared.config.heartbeat);
        if shared.stopping() {
            return;
        }
        match shared.client.ping() {
            Ok(()) => debug!("heartbeat sent"),
            Err(e) if is_unknown_agent(&e) => {
                warn!(error = %e, "heartbeat refused: server does not know this agent");
                shared.request_register();
            }
            Err(e) if e.is_transient() => debug!(error = %e, "heartbeat failed"),
            Err(e) => warn!(error = %e, "heartbeat refused"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_agent_is_told_apart_from_other_refusals() {
        let refused = |m: &str| ClientError::Refused(m.into());
        assert!(is_unknown_agent(&refused("unknown app id \"w1\"")));
        assert!(is_unknown_agent(&refused("Agent w1 is not registered")));
        assert!(!is_unknown_agent(&refused("unknown task t1")));
        assert!(!is_unknown_agent(&refused("signature does not match")));
        let transport = ClientError::Transport { url: "u".into(), reason: "unknown app".into() };
        assert!(!is_unknown_agent(&transport));
    }

    #[test]
    fn slots_cap_running_tasks_and_refuse_after_stop() {
        let slots = Arc::new(Slots::new(2));
        let stop = AtomicBool::new(false);
        let a = slots.take(&stop).expect("free");
        let _b = slots.take(&stop).expect("free");
        let started = Instant::now();
        let release = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drop(a);
        });
        assert!(slots.wait_for_free(&stop));
        assert!(started.elapsed() >= Duration::from_millis(90));
        release.join().expect("no panic");
        stop.store(true, Ordering::SeqCst);
        assert!(slots.take(&stop).is_none());
        assert!(!slots.wait_for_free(&stop));
        assert_eq!(*slots.lock(), 1);
    }
}
