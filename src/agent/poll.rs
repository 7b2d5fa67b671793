//! The agent's loops: registration, the getTask long poll and the heartbeat.
//!
//! The poll loop always keeps one long poll parked on the server, even when every slot is busy:
//! it asks with `X-ORANGE-CAPACITY` = the number of free slots, and with 0 the server hands out
//! no task but answers at once with the ids of cancelled tasks. Polls run on short-lived threads
//! so the loop can react to a freed slot while a capacity-0 poll is parked: it starts a new poll,
//! which supersedes the old one on the server. Everything is blocking; there is no async runtime.
//!
//! Polls are paced by [`PollPace`]: a refusal, an error, or "no task" answered at once instead of
//! a held poll (a server that locked this source out answers so) makes the next poll wait longer
//! each time, up to half a minute, so a turned-away agent never hammers its server.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use super::backoff::{Backoff, PollOutcome, PollPace, honoured};
use super::config::AgentConfig;
use super::facts::{FACTS_CHECK_EVERY, collect};
use super::handler::TaskHandler;
use super::journal::PRUNE_EVERY;
use super::retry::is_unknown_agent;
use super::shared::{PollEvent, Shared};
use super::stop::STOP_CHECK;
use super::worker::{cancel_tasks, deliver, prune, recover};
use crate::client::{ClientError, PollAnswer};
use crate::protocol::RegisterRequest;
use crate::protocol::facts::HostFacts;

/// Delay before polling again when no poll thread could be started.
const SPAWN_RETRY: Duration = Duration::from_secs(1);

/// A long poll on its way.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    generation: u64,
    capacity: usize,
}

/// The poll loop's state.
struct Poller {
    shared: Arc<Shared>,
    handler: Arc<dyn TaskHandler>,
    generation: u64,
    in_flight: Option<InFlight>,
    /// No poll starts before this (backoff after a failure).
    not_before: Instant,
    /// Grows while the server is unreachable, refuses getTask or answers it at once with no task.
    pace: PollPace,
    /// Grows while getTask keeps saying "unknown app id" right after registering again.
    unknown: Backoff,
    /// Set once the server handed out a task with no free slot: it ignores the capacity
    /// header, so the loop polls only when a slot is free, like an agent of the original.
    capacity_ignored: bool,
    last_prune: Instant,
}

/// The poll loop: registers (and recovers the journal) first, then keeps one long poll going
/// and handles its answers, until the agent stops and no task is left.
pub fn poll_loop(shared: Arc<Shared>, handler: Arc<dyn TaskHandler>, events: &Receiver<PollEvent>) {
    shared.take_register_request();
    if !register(&shared) {
        return;
    }
    recover(&shared, &handler);
    let mut poller = Poller::new(shared, handler);
    while !(poller.shared.stop.stopping() && poller.shared.tasks.is_empty()) {
        poller.step(events);
    }
    debug!("poll loop stopped");
}

impl Poller {
    fn new(shared: Arc<Shared>, handler: Arc<dyn TaskHandler>) -> Self {
        let now = Instant::now();
        Poller {
            shared,
            handler,
            generation: 0,
            in_flight: None,
            not_before: now,
            pace: PollPace::default(),
            unknown: Backoff::default(),
            capacity_ignored: false,
            last_prune: now,
        }
    }

    fn step(&mut self, events: &Receiver<PollEvent>) {
        if !self.shared.stop.stopping() && self.shared.take_register_request() && !register(&self.shared) {
            return;
        }
        if self.last_prune.elapsed() >= PRUNE_EVERY {
            prune(&self.shared);
            self.last_prune = Instant::now();
        }
        if self.should_poll() {
            self.start_poll();
        }
        match events.recv_timeout(self.idle_wait()) {
            Ok(PollEvent::Answer { generation, lasted, result }) => {
                self.answered(generation, lasted, *result)
            }
            Ok(PollEvent::TaskEnded) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => self.shared.stop.request(),
        }
    }

    /// How long to wait for the next event: until the backoff ends when no poll is out, at most
    /// [`STOP_CHECK`] (the stop flag is looked at between waits).
    fn idle_wait(&self) -> Duration {
        match self.in_flight {
            None => self
                .not_before
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), STOP_CHECK),
            Some(_) => STOP_CHECK,
        }
    }

    /// The capacity to poll with now: the free slots, or 0 once stopping.
    fn capacity(&self) -> usize {
        if self.shared.stop.stopping() { 0 } else { self.shared.slots.free() }
    }

    /// Whether to start a poll now: none is parked (and no backoff holds), or the parked one
    /// asks for the wrong capacity (0 while a slot became free, or some while stopping).
    fn should_poll(&self) -> bool {
        let capacity = self.capacity();
        match self.in_flight {
            None if self.capacity_ignored && capacity == 0 => false,
            None => Instant::now() >= self.not_before,
            Some(poll) => (poll.capacity == 0) != (capacity == 0),
        }
    }

    fn start_poll(&mut self) {
        self.generation += 1;
        let poll = InFlight { generation: self.generation, capacity: self.capacity() };
        let shared = Arc::clone(&self.shared);
        let spawned = thread::Builder::new().name("orange-poll".into()).spawn(move || {
            let started = Instant::now();
            let result = shared.client.poll_announcing(poll.capacity, &shared.features);
            let lasted = started.elapsed();
            // The loop is gone only once the agent stopped; the answer is not needed then.
            let _ = shared.events.send(PollEvent::Answer {
                generation: poll.generation,
                lasted,
                result: Box::new(result),
            });
        });
        match spawned {
            Ok(_) => self.in_flight = Some(poll),
            Err(e) => {
                error!(error = %e, "cannot start a poll thread");
                self.not_before = Instant::now() + SPAWN_RETRY;
            }
        }
    }

    fn answered(&mut self, generation: u64, lasted: Duration, result: Result<PollAnswer, ClientError>) {
        let current = self.in_flight.is_some_and(|poll| poll.generation == generation);
        if current {
            self.in_flight = None;
        }
        match result {
            Ok(answer) => {
                self.unknown.reset();
                // A superseded poll ends early by design: only the current one sets the pace.
                if current {
                    self.pace_after(&answer, lasted);
                }
                self.handle(answer);
            }
            Err(e) if !current => debug!(error = %e, "a superseded poll failed"),
            Err(e) if is_unknown_agent(&e) => self.unknown_agent(&e),
            Err(e) => self.poll_failed(&e),
        }
    }

    fn handle(&mut self, answer: PollAnswer) {
        match answer {
            PollAnswer::Task(task) => {
                if deliver(&self.shared, &self.handler, task) && !self.capacity_ignored {
                    warn!("the server ignores X-ORANGE-CAPACITY; polling only when a slot is free");
                    self.capacity_ignored = true;
                }
            }
            PollAnswer::Idle(control) => cancel_tasks(&self.shared, &control.cancel),
        }
    }

    /// Sets when the next poll may start after `answer`, which took `lasted`.
    fn pace_after(&mut self, answer: &PollAnswer, lasted: Duration) {
        let outcome = match answer {
            PollAnswer::Task(_) => PollOutcome::Task,
            PollAnswer::Idle(control) if !control.cancel.is_empty() => PollOutcome::Cancels,
            PollAnswer::Idle(_) => PollOutcome::Empty { lasted },
        };
        let was_failing = self.pace.is_failing();
        let wait = self.pace.next_wait(outcome);
        if was_failing && !self.pace.is_failing() {
            info!("server reachable again");
        }
        if !wait.is_zero() {
            let retry_in_ms = wait.as_millis() as u64;
            let lasted_ms = lasted.as_millis() as u64;
            warn!(lasted_ms, retry_in_ms, "getTask answered at once without a task; polling again later");
            self.not_before = Instant::now() + wait;
        }
    }

    /// The server answered but lost this agent's registration: register again at once, and
    /// back off only if that keeps happening.
    fn unknown_agent(&mut self, e: &ClientError) {
        warn!(error = %e, "server does not know this agent; registering again");
        self.shared.request_register();
        let repeated = self.unknown.is_failing();
        let delay = self.unknown.next_delay();
        if repeated {
            self.not_before = Instant::now() + delay;
        }
    }

    fn poll_failed(&mut self, e: &ClientError) {
        let delay = self.pace.next_wait(PollOutcome::Failed { retry_after: e.retry_after() });
        warn_retrying("getTask", e, delay);
        self.not_before = Instant::now() + delay;
    }
}

/// Logs a failed `call` that is tried again after `delay`, saying why: the server is busy,
/// unreachable (a TLS certificate it shows that is not trusted included), answered with an
/// error status (named, with its body), or refused it.
fn warn_retrying(call: &str, e: &ClientError, delay: Duration) {
    let retry_in_ms = delay.as_millis() as u64;
    match e {
        ClientError::Busy { .. } => warn!(error = %e, retry_in_ms, "server busy, {call} again later"),
        ClientError::Transport { .. } => {
            warn!(error = %e, retry_in_ms, "server unreachable, retrying {call}")
        }
        ClientError::BadAnswer { .. } => {
            warn!(error = %e, retry_in_ms, "server answered {call} with an error, retrying")
        }
        ClientError::Api { .. } | ClientError::Refused(_) => {
            warn!(error = %e, retry_in_ms, "server refused {call}, retrying")
        }
    }
}

fn server_is_back(backoff: &mut Backoff) {
    if backoff.is_failing() {
        info!("server reachable again");
    }
    backoff.reset();
}

/// Registers, retrying with backoff; false if the agent stopped first.
fn register(shared: &Shared) -> bool {
    let request = register_request(&shared.config, shared.facts.for_register(), &shared.features);
    let mut backoff = Backoff::default();
    while !shared.stop.stopping() {
        match shared.client.register(&request, &shared.config.enrollment) {
            Ok(reply) => {
                server_is_back(&mut backoff);
                info!(app_id = %reply.app_id, server = %shared.config.server, "registered");
                return true;
            }
            Err(e) => {
                let delay = backoff.next_delay_after(e.retry_after());
                warn_retrying("register", &e, delay);
                shared.stop.sleep(delay);
            }
        }
    }
    false
}

fn register_request(config: &AgentConfig, facts: HostFacts, features: &[String]) -> RegisterRequest {
    RegisterRequest {
        app_id: config.app_id.clone(),
        secret: config.secret.expose().to_owned(),
        labels: config.labels.clone(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        hostname: Some(config.hostname.clone()),
        facts: Some(facts),
        features: features.to_vec(),
    }
}

/// The heartbeat: a ping every `config.heartbeat` until the agent stops, and every
/// [`FACTS_CHECK_EVERY`] the host's facts, sent again when they changed. Connectivity problems
/// are the poll loop's to report; an unknown app id asks it to register again; a busy server is
/// left alone for as long as it asked.
pub fn heartbeat_loop(shared: Arc<Shared>) {
    let mut facts_checked = Instant::now();
    loop {
        shared.stop.sleep(shared.config.heartbeat);
        if shared.stop.stopping() {
            return;
        }
        let mut result = shared.client.ping().map(|()| debug!("heartbeat sent"));
        if result.is_ok() && facts_checked.elapsed() >= FACTS_CHECK_EVERY {
            facts_checked = Instant::now();
            result = send_changed_facts(&shared);
        }
        match result {
            Ok(()) => {}
            Err(e) if is_unknown_agent(&e) => {
                warn!(error = %e, "heartbeat refused: server does not know this agent");
                shared.request_register();
            }
            Err(e) if e.retry_after().is_some() => {
                debug!(error = %e, "heartbeat: server busy");
                shared.stop.sleep(e.retry_after().map(honoured).unwrap_or_default());
            }
            Err(e) if e.is_transient() => debug!(error = %e, "heartbeat failed"),
            Err(e) => warn!(error = %e, "heartbeat refused"),
        }
    }
}

/// Sends the host's facts when they differ from those sent last.
fn send_changed_facts(shared: &Shared) -> Result<(), ClientError> {
    let Some(facts) = shared.facts.changed(collect()) else { return Ok(()) };
    shared.client.send_facts(&facts)?;
    info!("host facts changed; sent again");
    shared.facts.sent(facts);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;

    use super::*;
    use crate::agent::fake_server::FakeServer;
    use crate::agent::journal::Journal;
    use crate::agent::tests::config;

    #[test]
    fn facts_go_with_register_and_again_only_when_they_changed() {
        let server = FakeServer::start("facts-secret");
        let state = tempfile::tempdir().expect("state dir");
        let mut config = config(&server.url(), 1, state.path());
        config.secret = crate::agent::Secret::new("facts-secret");
        let journal = Journal::open(state.path()).expect("journal");
        let (events, _receiver) = mpsc::channel();
        let shared = Shared::new(config, journal, Arc::new(AtomicBool::new(false)), events, Vec::new());

        assert!(register(&shared));
        let sent = server.state.lock().registrations[0].facts.clone().expect("facts sent with register");
        assert_eq!(sent, collect());
        assert!(sent.kernel.is_some() && sent.arch.is_some(), "{sent:?}");

        // Unchanged: nothing is sent.
        send_changed_facts(&shared).expect("no call");
        assert!(server.state.lock().facts.is_empty());
        // Changed since they were sent: the current ones go, once.
        shared.facts.sent(HostFacts { kernel: Some("older".into()), ..sent.clone() });
        send_changed_facts(&shared).expect("facts sent");
        send_changed_facts(&shared).expect("no call");
        assert_eq!(server.state.lock().facts, [sent]);
    }
}
