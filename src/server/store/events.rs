//! The job events of committed transactions: what a transaction did that someone may be
//! waiting for (a job changed, an agent was given a task by a job), collected once each until
//! the server takes them. Waiting for them is the server's concern: the store only calls the
//! hook it was given after each push.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::protocol::TaskId;

/// Something a committed transaction did that someone may be waiting for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The job changed (its version grew).
    Changed(TaskId),
    /// A task was queued for this agent by a job.
    Started(String),
}

/// Job events of committed transactions, waiting for the wake-up loop. Each agent and each job
/// is kept once (a wake-up is a hint), so the queue holds at most one entry per agent and job
/// and never drops one.
#[derive(Default)]
pub struct EventQueue {
    events: Mutex<PendingEvents>,
    /// Called after a push, so that whoever turns events into wake-ups takes them.
    wake: Mutex<Option<Wake>>,
}

/// What [`EventQueue::push`] calls once events are waiting.
type Wake = Box<dyn Fn() + Send + Sync>;

/// The agents and jobs to wake, each once.
#[derive(Default)]
struct PendingEvents {
    changed: HashSet<TaskId>,
    started: HashSet<String>,
}

impl EventQueue {
    /// Adds the events of one committed transaction.
    pub fn push(&self, new: Vec<JobEvent>) {
        if new.is_empty() {
            return;
        }
        let mut events = self.events.lock().unwrap_or_else(|p| p.into_inner());
        for event in new {
            match event {
                JobEvent::Changed(id) => events.changed.insert(id),
                JobEvent::Started(app_id) => events.started.insert(app_id),
            };
        }
        drop(events);
        if let Some(wake) = &*self.wake.lock().unwrap_or_else(|p| p.into_inner()) {
            wake();
        }
    }

    /// Has `wake` called after every push from now on (replacing an earlier one). It runs on
    /// the committing thread, so it must only signal (e.g. notify a task), never block.
    pub fn on_push(&self, wake: impl Fn() + Send + Sync + 'static) {
        *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(wake));
    }

    /// Takes every event pushed so far.
    pub fn take(&self) -> Vec<JobEvent> {
        let events = std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()));
        let started = events.started.into_iter().map(JobEvent::Started);
        events.changed.into_iter().map(JobEvent::Changed).chain(started).collect()
    }
}
