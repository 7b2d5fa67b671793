//! In-memory wake-ups: a parked getTask waits on its agent's signal, an operator waiting for a
//! result waits on its task's signal. A wake-up is only a hint to look at the store again: the
//! store is the truth, so a lost or spurious wake-up costs a read, never a task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::protocol::TaskId;

/// The wake-up signals of every agent and every watched task, plus the server's stop signal.
pub struct Dispatch {
    agents: Mutex<HashMap<String, Arc<Notify>>>,
    tasks: Mutex<HashMap<TaskId, Arc<Notify>>>,
    stopping: watch::Receiver<bool>,
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
        Dispatch { agents: Mutex::default(), tasks: Mutex::default(), stopping }
    }

    /// The signal a getTask of `app_id` parks on.
    pub fn agent_signal(&self, app_id: &str) -> Arc<Notify> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(agents.entry(app_id.to_owned()).or_default())
    }

    /// Tells a parked getTask of `app_id` (or the next one) to look at its queue.
    pub fn wake_agent(&self, app_id: &str) {
        let agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = agents.get(app_id) {
            signal.notify_one();
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
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(signal) = tasks.get(&id) {
            signal.notify_waiters();
        }
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
    async fn a_wake_before_the_wait_is_not_lost() {
        let (_tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        let signal = dispatch.agent_signal("w1");
        dispatch.wake_agent("w1");
        tokio::time::timeout(Duration::from_secs(1), signal.notified()).await.expect("stored permit wakes");
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

    #[tokio::test]
    async fn stopped_completes_when_the_server_stops() {
        let (tx, rx) = watch::channel(false);
        let dispatch = Dispatch::new(rx);
        tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), dispatch.stopped()).await.expect("stop seen");
    }
}
