//! State shared by the agent's threads: the client and settings, the stop flag and its grace,
//! the task slots that cap concurrency, the registry of tasks in this process, the journal and
//! the outbox of reports to send again. Only state: what acts on it (the poll loop, workers,
//! reports, the outbox thread) lives in the files above, which take it as `&Shared`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::config::AgentConfig;
use super::control::TaskControl;
use super::facts::FactsWatch;
use super::journal::Journal;
use super::stop::{STOP_CHECK, Stop};
use crate::client::AgentClient;

/// What wakes the poll loop.
pub enum PollEvent {
    /// A long poll (generation `gen`) came back.
    Answer {
        /// Which poll.
        generation: u64,
        /// How long the call took.
        lasted: std::time::Duration,
        /// What it brought (boxed: a task is large next to the other event).
        result: Box<Result<crate::client::PollAnswer, crate::client::ClientError>>,
    },
    /// A task ended, so a slot may be free.
    TaskEnded,
}

/// State shared by the poll loop, the heartbeat, the outbox and the task workers.
pub struct Shared {
    /// Signed connection to the server.
    pub client: AgentClient,
    /// The agent's settings.
    pub config: AgentConfig,
    /// The task journal in the state directory.
    pub journal: Journal,
    /// Final reports waiting to be sent again.
    pub outbox: Outbox,
    /// Slots capping how many tasks run at once.
    pub slots: Arc<Slots>,
    /// The tasks this process handles now, by id.
    pub tasks: Tasks,
    /// Wakes the poll loop.
    pub events: Sender<PollEvent>,
    /// The host facts sent last.
    pub facts: FactsWatch,
    /// The task features the handler applies, announced with register and every poll.
    pub features: Vec<String>,
    /// The stop flag and its grace.
    pub stop: Stop,
    need_register: AtomicBool,
}

impl Shared {
    /// Shared state for `config` and a handler applying `features`; the poll loop starts by
    /// registering.
    pub fn new(
        config: AgentConfig,
        journal: Journal,
        stop: Arc<AtomicBool>,
        events: Sender<PollEvent>,
        features: Vec<String>,
    ) -> Self {
        let client = AgentClient::through(
            &config.server,
            &config.app_id,
            config.secret.expose(),
            &config.tls,
            config.proxy.as_ref(),
        );
        let slots = Arc::new(Slots::new(config.max_tasks));
        let stop = Stop::new(stop, config.stop_grace);
        Shared {
            client,
            config,
            journal,
            outbox: Outbox::default(),
            slots,
            tasks: Tasks::default(),
            events,
            facts: FactsWatch::default(),
            features,
            stop,
            need_register: AtomicBool::new(true),
        }
    }

    /// Asks the poll loop to register again before its next poll.
    pub fn request_register(&self) {
        self.need_register.store(true, Ordering::SeqCst);
    }

    /// Takes the register request; true if one was pending.
    pub fn take_register_request(&self) -> bool {
        self.need_register.swap(false, Ordering::SeqCst)
    }

    /// Tells the poll loop that a task ended.
    pub fn task_ended(&self) {
        // The poll loop holds the receiver until the agent stops; then nobody needs the news.
        let _ = self.events.send(PollEvent::TaskEnded);
    }
}

/// The tasks this process is handling (from delivery to the end of their final report), each
/// with its control, so a cancel or a repeated delivery finds them.
#[derive(Default)]
pub struct Tasks {
    map: Mutex<HashMap<String, Arc<TaskControl>>>,
    changed: Condvar,
}

impl Tasks {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<TaskControl>>> {
        // Nothing panics while holding the lock, and the map stays consistent anyway.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers task `id`, handed out as delivery `attempt`; `None` if it is already
    /// registered.
    pub fn insert(&self, id: &str, attempt: Option<u32>) -> Option<Arc<TaskControl>> {
        let mut map = self.lock();
        if map.contains_key(id) {
            return None;
        }
        let control = Arc::new(TaskControl::new(attempt));
        map.insert(id.to_owned(), Arc::clone(&control));
        Some(control)
    }

    /// The control of task `id`, if this process handles it.
    pub fn get(&self, id: &str) -> Option<Arc<TaskControl>> {
        self.lock().get(id).cloned()
    }

    /// Forgets task `id`.
    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
        self.changed.notify_all();
    }

    /// Ids of the tasks handled now.
    pub fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Number of tasks handled now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no task is handled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Blocks until no task is handled. Call only once no new task can start.
    pub fn wait_empty(&self) {
        let mut map = self.lock();
        while !map.is_empty() {
            map = self.changed.wait(map).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Task ids whose journaled final report is to be sent again.
#[derive(Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutboxState {
    queue: VecDeque<String>,
    closed: bool,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // Nothing panics while holding the lock; the queue stays consistent anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues task `id` (once, however often it is pushed before being sent).
    pub fn push(&self, id: &str) {
        let mut state = self.lock();
        if !state.queue.iter().any(|queued| queued == id) {
            state.queue.push_back(id.to_owned());
        }
        self.changed.notify_all();
    }

    /// Lets the outbox thread end once its queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Number of ids waiting.
    pub fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// The next id, waiting for one; `None` once closed and empty.
    pub fn wait_next(&self) -> Option<String> {
        let mut state = self.lock();
        loop {
            if let Some(id) = state.queue.pop_front() {
                return Some(id);
            }
            if state.closed {
                return None;
            }
            state = self.changed.wait_timeout(state, STOP_CHECK).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Counts running tasks against `max_tasks`.
pub struct Slots {
    busy: Mutex<usize>,
    changed: Condvar,
    max: usize,
}

impl Slots {
    /// Slots for at most `max` tasks (at least one).
    pub fn new(max: usize) -> Self {
        Slots { busy: Mutex::new(0), changed: Condvar::new(), max: max.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, usize> {
        // Nothing panics while holding the lock, and a count stays meaningful anyway.
        self.busy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Number of free slots now.
    pub fn free(&self) -> usize {
        self.max.saturating_sub(*self.lock())
    }

    /// Takes a free slot, if there is one.
    pub fn try_take(self: &Arc<Self>) -> Option<SlotGuard> {
        let mut busy = self.lock();
        if *busy >= self.max {
            return None;
        }
        *busy += 1;
        Some(SlotGuard(Arc::clone(self)))
    }

    /// Waits until a slot is free and takes it; `None` if `stop` is set first.
    pub fn take_when_free(self: &Arc<Self>, stop: &dyn Fn() -> bool) -> Option<SlotGuard> {
        let mut busy = self.lock();
        while *busy >= self.max {
            if stop() {
                return None;
            }
            busy = self.changed.wait_timeout(busy, STOP_CHECK).unwrap_or_else(PoisonError::into_inner).0;
        }
        *busy += 1;
        Some(SlotGuard(Arc::clone(self)))
    }
}

/// A taken slot, given back when dropped (also if the worker panics).
pub struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        *self.0.lock() -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::thread;
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn slots_cap_running_tasks_and_waiting_ends_on_stop() {
        let slots = Arc::new(Slots::new(2));
        let a = slots.try_take().expect("free");
        let _b = slots.try_take().expect("free");
        assert!(slots.try_take().is_none());
        assert_eq!(slots.free(), 0);
        let started = Instant::now();
        let release = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            drop(a);
        });
        let c = slots.take_when_free(&|| false).expect("freed by the other thread");
        assert!(started.elapsed() >= Duration::from_millis(90));
        release.join().expect("no panic");
        assert!(slots.take_when_free(&|| true).is_none());
        drop(c);
        assert_eq!(slots.free(), 1);
    }

    #[test]
    fn tasks_register_once_and_wait_empty_returns_when_all_ended() {
        let tasks = Arc::new(Tasks::default());
        let control = tasks.insert("t1", Some(1)).expect("new");
        assert!(tasks.insert("t1", Some(2)).is_none());
        assert!(Arc::ptr_eq(&control, &tasks.get("t1").expect("registered")));
        assert_eq!(tasks.ids(), ["t1"]);
        let remover = {
            let tasks = Arc::clone(&tasks);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                tasks.remove("t1");
            })
        };
        tasks.wait_empty();
        assert!(tasks.is_empty());
        remover.join().expect("no panic");
    }
}
