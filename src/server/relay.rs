//! Wake-ups between the servers of one PostgreSQL database: what one server's [`Dispatch`]
//! wakes (an agent's parked poll, whoever waits on a task or a job) is sent to the others with
//! `NOTIFY`, and what the others send is woken here. A wake-up is a hint to read the store
//! again, never the truth, so a lost one costs latency only: parked waits also look again every
//! [`RECHECK`], and after the listening connection is lost and made again every local waiter is
//! woken once.
//!
//! - The notifier sends after the write that caused the wake-up committed (the services wake
//!   once the store says the write is durable), never inside a write transaction, on its own
//!   connection — the only one with `synchronous_commit` off, since a wake-up need not survive
//!   a crash. Wake-ups waiting when it sends go in one `NOTIFY` (a payload of at most
//!   [`MAX_PAYLOAD`] bytes, several if needed).
//! - The listener holds one connection in `LISTEN`; it and the notifier connect again (with a
//!   pause) when their connection breaks.
//! - A payload is this server's id on the first line (a server skips its own), then one wake-up
//!   per line: `a APP_ID` for an agent, `t TASK_ID` for a task or a job, `p MILLIS APP_ID` for
//!   an agent that parked a new long poll at that time (its older one on another server ends).
//!
//! Both run on threads of their own (the client is synchronous) and stop when the [`Relay`] is
//! dropped.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use tracing::{debug, info, warn};

use super::dispatch::Dispatch;
use super::store::PgTarget;
use crate::protocol::TaskId;

/// The channel every server listens on.
const CHANNEL: &str = "orange_wake";

/// Largest payload of one `NOTIFY` (PostgreSQL's limit is 8,000 bytes).
const MAX_PAYLOAD: usize = 7_000;

/// How often a parked wait looks at the store again when no wake-up came.
pub const RECHECK: Duration = Duration::from_secs(10);

/// How long the threads wait for work before they look at the stop flag.
const TICK: Duration = Duration::from_millis(500);

/// How long the listener waits before it connects again after losing its connection.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// One wake-up to pass on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// The agent's queue may have changed.
    Agent(String),
    /// The task (or job) may have changed.
    Task(TaskId),
    /// The agent parked a new long poll at `at_ms` (Unix milliseconds): one it left parked on
    /// another server before (its connection gone after a restart, or moved by the balancer)
    /// must end, and never be handed a task.
    Parked {
        /// The agent.
        app_id: String,
        /// When its new poll parked.
        at_ms: i64,
    },
}

/// The notifier and listener threads; dropping it stops both.
pub struct Relay {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Connects to `target` (both connections, so that a server that cannot listen does not
    /// start), then starts the threads and hands `dispatch` the way to the notifier.
    pub fn start(target: &PgTarget, dispatch: &Arc<Dispatch>) -> anyhow::Result<Relay> {
        let server_id = server_id()?;
        let notifying_client = notifier(target)?;
        let listener = listen(target)?;
        let (wakes, received) = mpsc::channel();
        dispatch.relay_to(wakes);
        let stop = Arc::new(AtomicBool::new(false));
        let notifying = {
            let (stop, server_id, target_for_notify) = (Arc::clone(&stop), server_id.clone(), target.clone());
            std::thread::Builder::new().name("orange-notify".into()).spawn(move || {
                notify_loop(notifying_client, &target_for_notify, &received, &server_id, &stop)
            })?
        };
        let listening = {
            let (stop, target, dispatch) = (Arc::clone(&stop), target.clone(), Arc::clone(dispatch));
            std::thread::Builder::new()
                .name("orange-listen".into())
                .spawn(move || listen_loop(listener, &target, &dispatch, &server_id, &stop))?
        };
        info!(database = %target.shown, "wake-ups relayed between the servers of the database");
        Ok(Relay { stop, threads: vec![notifying, listening] })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A random id for this server process, so that it skips its own notifications.
fn server_id() -> anyhow::Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    Ok(hex::encode(raw))
}

fn listen(target: &PgTarget) -> Result<postgres::Client, postgres::Error> {
    let mut client = target.connect()?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

/// Sends the wake-ups as they come, those waiting together, until `stop`; connects again
/// (with a pause) when its connection breaks.
fn notify_loop(
    mut client: postgres::Client,
    target: &PgTarget,
    received: &Receiver<Wake>,
    server_id: &str,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        let first = match received.recv_timeout(TICK) {
            Ok(wake) => wake,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = BTreeSet::from([first]);
        batch.extend(received.try_iter());
        for payload in payloads(server_id, &batch) {
            if let Err(e) = client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload]) {
                // Lost wake-ups cost latency only (parked waits look again every RECHECK).
                warn!(error = %e, "cannot send wake-ups to the other servers");
            }
        }
        if client.is_closed() {
            match reconnect(target, stop, notifier) {
                Some(fresh) => client = fresh,
                None => return,
            }
        }
    }
}

/// The notifier's own connection, with `synchronous_commit` off.
fn notifier(target: &PgTarget) -> Result<postgres::Client, postgres::Error> {
    let mut client = target.connect()?;
    client.batch_execute("SET synchronous_commit = off")?;
    Ok(client)
}

/// A new connection made by `connect`, tried again after a pause until it works; `None` once
/// `stop` is set.
fn reconnect(
    target: &PgTarget,
    stop: &AtomicBool,
    connect: fn(&PgTarget) -> Result<postgres::Client, postgres::Error>,
) -> Option<postgres::Client> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(RECONNECT_PAUSE);
        match connect(target) {
            Ok(client) => return Some(client),
            Err(e) => debug!(error = %e, "cannot reach the database yet"),
        }
    }
}

/// The payloads carrying `batch`, each at most [`MAX_PAYLOAD`] bytes.
fn payloads(server_id: &str, batch: &BTreeSet<Wake>) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut current = String::from(server_id);
    for wake in batch {
        let line = match wake {
            Wake::Agent(app_id) => format!("\na {app_id}"),
            Wake::Task(id) => format!("\nt {id}"),
            Wake::Parked { app_id, at_ms } => format!("\np {at_ms} {app_id}"),
        };
        if current.len() + line.len() > MAX_PAYLOAD {
            payloads.push(std::mem::replace(&mut current, String::from(server_id)));
        }
        current.push_str(&line);
    }
    payloads.push(current);
    payloads
}

/// Wakes, in `dispatch`, what the other servers send, until `stop`; connects again when the
/// connection breaks, and then wakes every local waiter once (what was sent meanwhile is lost).
fn listen_loop(
    mut client: postgres::Client,
    target: &PgTarget,
    dispatch: &Dispatch,
    server_id: &str,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::SeqCst) {
        match receive(&mut client, dispatch, server_id) {
            Ok(()) => continue,
            Err(e) => warn!(error = %e, "lost the connection that hears the other servers; connecting again"),
        }
        client = match reconnect(target, stop, listen) {
            Some(client) => client,
            None => return,
        };
        info!("hearing the other servers again");
        dispatch.wake_all();
    }
}

/// Handles the notifications that arrive within one [`TICK`].
fn receive(
    client: &mut postgres::Client,
    dispatch: &Dispatch,
    server_id: &str,
) -> Result<(), postgres::Error> {
    let mut notifications = client.notifications();
    let mut arrived = notifications.timeout_iter(TICK);
    while let Some(notification) = arrived.next()? {
        let mut lines = notification.payload().lines();
        if lines.next() == Some(server_id) {
            continue;
        }
        for line in lines {
            match parse(line) {
                Some(wake) => dispatch.wake_here(&wake),
                None => debug!(line, "an unknown wake-up from another server"),
            }
        }
    }
    Ok(())
}

fn parse(line: &str) -> Option<Wake> {
    match line.split_once(' ')? {
        ("a", app_id) => Some(Wake::Agent(app_id.to_owned())),
        ("t", id) => id.parse().ok().map(Wake::Task),
        ("p", rest) => {
            let (at_ms, app_id) = rest.split_once(' ')?;
            Some(Wake::Parked { app_id: app_id.to_owned(), at_ms: at_ms.parse().ok()? })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_ups_round_trip_through_payloads_of_bounded_size() {
        let id = crate::protocol::task::new_task_id();
        let mut batch: BTreeSet<Wake> = (0..2_000).map(|i| Wake::Agent(format!("host-{i:05}"))).collect();
        batch.insert(Wake::Task(id));
        batch.insert(Wake::Parked { app_id: "host-00001".into(), at_ms: 1_765_000_000_123 });
        let payloads = payloads("s1", &batch);
        assert!(payloads.len() > 1, "2,000 agents do not fit one payload");
        let mut back = BTreeSet::new();
        for payload in &payloads {
            assert!(payload.len() <= MAX_PAYLOAD, "{} bytes", payload.len());
            let mut lines = payload.lines();
            assert_eq!(lines.next(), Some("s1"));
            back.extend(lines.map(|line| parse(line).expect("a wake-up")));
        }
        assert_eq!(back, batch);
    }
}
