//! In-memory wake-ups: a parked getTask waits on its agent's signal, an operator waiting for a
//! result waits on its task's signal. A wake-up is only a hint to look at the store again: the
//! store is the truth, so a lost or spurious wake-up costs a read, never a task. With several
//! servers on one PostgreSQL database, each wake-up is also handed to the [`relay`](super::relay),
//! which passes it to the other servers, and parked waits look again every
//! [`RECHECK`](super::relay::RECHECK). It also holds the agents' [`Presence`], which every
//! service reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::clock::now_ms;
use super::presence::Presence;
use super::relay::{RECHECK, Wake};
use crate::protocol::TaskId;

/// One agent's wake-up signal and the generation of its newest long poll.
#[derive(Default)]
pub struct AgentSlot {
    /// Woken (all waiters) when the agent's queue may have changed or a newer poll arrived.
    pub signal: Notify,
    generation: AtomicU64,
    /// Unix milliseconds when its newest poll parked here.
    parked_ms: AtomicI64,
}

/// A parked long poll of one agent. Only the newest poll of an agent stays parked: an agent
/// that restarted must not lose its next task to the dead connection of its former self.
pub struct Poll {
    /// The agent's slot.
    pub slot: Arc<AgentSlot>,
    generation: u64,
}

impl Poll {
    /// True once a newer poll of the same agent has arrived.
    pub fn superseded(&self) -> bool {
        self.slot.generation.load(Ordering::SeqCst) != self.generation
    }
}

/// How long a cancel told to an agent is not told again (the answer may have been lost).
const CANCEL_RESEND: Duration = Duration::from_secs(10);

/// The wake-up signals of every agent and every watched task, plus the server's stop signal.
pub struct Dispatch {
    agents: Mutex<HashMap<String, Arc<AgentSlot>>>,
    tasks: Mutex<HashMap<TaskId, Arc<Notify>>>,
    cancels_told: Mutex<HashMap<TaskId, Instant>>,
    stopping: watch::Receiver<bool>,
    presence: Arc<Presence>,
    /// Where wake-ups go to reach the other servers, if there are any.
    relay: OnceLock<Sender<Wake>>,
}

/// A registration to hear about one task; dropping it forgets the signal when no one else waits.
pub struct TaskWatch<'a> {
    dispatch: &'a Dispatch,
    id: TaskId,
    /// The signal to wait on.
    pub signal: Arc<Notify>,
}

impl Drop for TaskWatch<'_> {
    fn drop(&mut self) {
        let mut tasks = self.dispatch.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // The map and this watch hold one reference each: no one else waits on it.
        if Arc::strong_count(&self.signal) == 2 {
            tasks.remove(&self.id);
        }
    }
}

impl Dispatch {
    /// A dispatcher whose parked waits end when `stopping` turns true.
    pub fn new(stopping: watch::Receiver<bool>) -> Self {
        Dispatch {
            agents: Mutex::default(),
            tasks: Mutex::default(),
            cancels_told: Mutex::default(),
            stopping,
            presence: Arc::new(Presence::new(now_ms())),
            relay: OnceLock::new(),
        }
    }

    /// Hands every wake-up from now on to `relay` too, which passes it to the other servers;
    /// parked waits then also look again every [`RECHECK`].
    pub fn relay_to(&self, relay: Sender<Wake>) {
        let _ = self.relay.set(relay);
    }

    fn publish(&self, wake: Wake) {
        if let Some(relay) = self.relay.get() {
            // The relay's end is gone only while the server stops.
            let _ = relay.send(wake);
        }
    }

    /// Wakes what a wake-up from another server names, here only.
    pub fn wake_here(&self, wake: &Wake) {
        match wake {
            Wake::Agent(app_id) => self.wake_local_agent(app_id),
            Wake::Task(id) => self.wake_local_task(*id),
            Wake::Parked { app_id, at_ms } => self.dismiss_parked_before(app_id, *at_ms),
        }
    }

    /// Wakes every parked poll and every watcher here (wake-ups from other servers may have
    /// been lost).
    pub fn wake_all(&self) {
        for slot in self.agents.lock().unwrap_or_else(|p| p.into_inner()).values() {
            slot.signal.notify_waiters();
        }
        for signal in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).values() {
            signal.notify_waiters();
        }
    }

    /// Completes after [`RECHECK`] when wake-ups come from other servers too (one may be lost);
    /// never otherwise. A parked wait looks at the store again when it does.
    pub async fn recheck(&self) {
        match self.relay.get() {
            Some(_) => tokio::time::sleep(RECHECK).await,
            None => std::future::pending().await,
        }
    }

    /// The agents' presence (requests, parked polls, goodbyes).
    pub fn presence(&self) -> &Arc<Presence> {
        &self.presence
    }

    /// Ends the parked poll of `app_id`, if any, with "no task" (its agent said goodbye: its
    /// connection must not be handed a task).
    pub fn dismiss(&self, app_id: &str) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = agents.get(app_id) {
            slot.generation.fetch_add(1, Ordering::SeqCst);
            slot.signal.notify_waiters();
        }
    }

    /// Starts a long poll of `app_id`, superseding (and waking) any older one, also one on
    /// another server.
    pub fn park(&self, app_id: &str) -> Poll {
        let slot = {
            let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(agents.entry(app_id.to_owned()).or_default())
        };
        let generation = slot.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let at_ms = crate::server::clock::now_ms();
        slot.parked_ms.store(at_ms, Ordering::SeqCst);
        slot.signal.notify_waiters();
        self.publish(Wake::Parked { app_id: app_id.to_owned(), at_ms });
        Poll { slot, generation }
    }

    /// Ends the parked poll of `app_id` here if it parked before `at_ms`, when the agent
    /// parked a newer one on another server. A poll parked here since (the notice travelled
    /// slower than the agent) stays.
    fn dismiss_parked_before(&self, app_id: &str, at_ms: i64) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = agents.get(app_id).filter(|slot| slot.parked_ms.load(Ordering::SeqCst) < at_ms) {
            slot.generation.fetch_add(1, Ordering::SeqCst);
            slot.signal.notify_waiters();
        }
    }

    /// Tells the parked getTask of `app_id` to look at its queue. Waiters register (by creating
    /// their `notified()` future) before they read the store, so none misses this.
    pub fn wake_agent(&self, app_id: &str) {
        self.wake_local_agent(app_id);
        self.publish(Wake::Agent(app_id.to_owned()));
    }

    fn wake_local_agent(&self, app_id: &str) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = agents.get(app_id) {
            slot.signal.notify_waiters();
        }
    }

    /// Starts watching task `id` for a state change.
    pub fn watch_task(&self, id: TaskId) -> TaskWatch<'_> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let signal = Arc::clone(tasks.entry(id).or_default());
        TaskWatch { dispatch: self, id, signal }
    }

    /// Wakes everyone watching task `id`.
    pub fn task_changed(&self, id: TaskId) {
        self.wake_local_task(id);
        self.publish(Wake::Task(id));
    }

    fn wake_local_task(&self, id: TaskId) {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = tasks.get(&id) {
            signal.notify_waiters();
        }
    }

    /// Starts watching job `id` for a change of its version. Job ids are minted like task ids
    /// (UUID v7), so they share the map without colliding.
    pub fn watch_job(&self, id: TaskId) -> TaskWatch<'_> {
        self.watch_task(id)
    }

    /// Wakes everyone watching job `id`.
    pub fn job_changed(&self, id: TaskId) {
        self.task_changed(id);
    }

    /// Of the pending cancels `ids`, those not told to the agent within the last few seconds;
    /// they count as told from now. Keeps a poll that answers cancels from spinning.
    pub fn cancels_to_tell(&self, ids: Vec<TaskId>, now: Instant) -> Vec<TaskId> {
        let mut told = self.cancels_told.lock().unwrap_or_else(|p| p.into_inner());
        told.retain(|_, at| now.duration_since(*at) < CANCEL_RESEND);
        let fresh: Vec<TaskId> = ids.into_iter().filter(|id| !told.contains_key(id)).collect();
        for id in &fresh {
            told.insert(*id, now);
        }
        fresh
    }

    /// Completes when the server begins to stop.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.clone();
        // An error means the sender is gone, which also means the server is stopping.
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Number of task watches held (for tests and metrics).
    pub fn watched_tasks(&self) -> usize {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_wake_after_registering_is_not_lost() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let poll = dispatch.park("w1");
        let woken = poll.slot.signal.notified();
        dispatch.wake_agent("w1");
        tokio::time::timeout(Duration::from_secs(1), woken).await.expect("registered waiter wakes");
    }

    #[tokio::test]
    async fn a_newer_poll_supersedes_and_wakes_the_older() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let old = dispatch.park("w1");
        let woken = old.slot.signal.notified();
        let new = dispatch.park("w1");
        tokio::time::timeout(Duration::from_secs(1), woken).await.expect("older poll woken");
        assert!(old.superseded());
        assert!(!new.superseded());
    }

    #[tokio::test]
    async fn a_poll_parked_on_another_server_ends_only_the_polls_parked_here_before_it() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let poll = dispatch.park("w1");
        let parked_ms = poll.slot.parked_ms.load(Ordering::SeqCst);
        dispatch.wake_here(&Wake::Parked { app_id: "w1".into(), at_ms: parked_ms - 1 });
        assert!(!poll.superseded(), "a notice of an older poll elsewhere");
        let woken = poll.slot.signal.notified();
        dispatch.wake_here(&Wake::Parked { app_id: "w1".into(), at_ms: parked_ms + 1 });
        tokio::time::timeout(Duration::from_secs(1), woken).await.expect("the poll here woken");
        assert!(poll.superseded(), "a newer poll elsewhere ends it");
    }

    #[tokio::test]
    async fn task_watches_are_forgotten_when_dropped() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let id = crate::protocol::task::new_task_id();
        {
            let watch = dispatch.watch_task(id);
            let notified = watch.signal.notified();
            dispatch.task_changed(id);
            tokio::time::timeout(Duration::from_secs(1), notified).await.expect("watcher woken");
            assert_eq!(dispatch.watched_tasks(), 1);
        }
        assert_eq!(dispatch.watched_tasks(), 0);
    }

    #[test]
    fn a_cancel_is_told_once_then_again_after_a_while() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let id = crate::protocol::task::new_task_id();
        let now = Instant::now();
        assert_eq!(dispatch.cancels_to_tell(vec![id], now), vec![id]);
        assert!(dispatch.cancels_to_tell(vec![id], now + Duration::from_secs(1)).is_empty());
        assert_eq!(dispatch.cancels_to_tell(vec![id], now + CANCEL_RESEND), vec![id]);
    }

    #[tokio::test]
    async fn stopped_completes_when_the_server_stops() {
        let (tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), dispatch.stopped()).await.expect("stop seen");
    }
}
