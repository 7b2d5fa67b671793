//! Handing work to agents: the long poll (cancels to tell first, then the next task if the agent
//! has room), the wait of a pending agent for acceptance, and the answer to a ping. Whatever a
//! poll hands out is on stable storage before it is answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::clock::now_ms;
use super::dispatch::Dispatch;
use super::store::{AgentStatus, Delivery, Store, StoreError, TaskRecord};
use crate::protocol::TaskId;

/// What one long poll brings an agent.
#[derive(Debug)]
pub enum PollResult {
    /// Tasks to run, oldest first (never empty; more than one only when the poll asked for it).
    Tasks(Vec<TaskRecord>),
    /// Running tasks the agent must stop.
    Cancels(Vec<TaskId>),
    /// Nothing within the window (or a newer poll replaced this one, or the server stops).
    Empty,
}

/// The long polls of agents.
pub struct Polling {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    window: Duration,
}

impl Polling {
    /// Long polls over `store` that wait up to `window` for work.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>, window: Duration) -> Self {
        Polling { store, dispatch, window }
    }

    /// Long poll of `app_id`, waiting up to the poll window. `capacity` is what an orange agent
    /// said it can start now (`None` for an original client, which gets neither cancels nor an
    /// acknowledged delivery); `features` what it announced it understands (none for an original
    /// client): a queued task needing another one ends `failed` instead of being handed out. Up
    /// to `most` tasks (at least one) are handed out at once, if queued. Tasks or cancels are
    /// durable when this returns, all with one sync.
    pub async fn next_task(
        &self,
        app_id: &str,
        capacity: Option<usize>,
        features: &[String],
        most: usize,
    ) -> Result<PollResult, StoreError> {
        let found = self.wait_for_work(app_id, capacity, features, most.max(1)).await?;
        // What a poll hands out (a task, cancels) must not be had again by replaying it after a
        // crash: its use record, and the delivery, go to disk first. An empty answer needs neither.
        if !matches!(found, PollResult::Empty) {
            self.store.durable().await?;
        }
        Ok(found)
    }

    async fn wait_for_work(
        &self,
        app_id: &str,
        capacity: Option<usize>,
        features: &[String],
        most: usize,
    ) -> Result<PollResult, StoreError> {
        let poll = self.dispatch.park(app_id);
        // The agent counts as present while its poll is parked, however long it waits.
        let _present = self.dispatch.presence().park(app_id, now_ms());
        let deadline = tokio::time::Instant::now() + self.window;
        loop {
            // Registered before the store is read, so an enqueue in between is not missed.
            let woken = poll.slot.signal.notified();
            if poll.superseded() {
                return Ok(PollResult::Empty);
            }
            let mut refused = Vec::new();
            let found = self.poll_once(app_id, (capacity, most), features, &mut refused)?;
            self.tell_refused(&refused).await?;
            if let Some(found) = found {
                return Ok(found);
            }
            tokio::select! {
                _ = woken => continue,
                _ = self.dispatch.recheck() => continue,
                _ = tokio::time::sleep_until(deadline) => return Ok(PollResult::Empty),
                _ = self.dispatch.stopped() => return Ok(PollResult::Empty),
            }
        }
    }

    /// Wakes whoever follows the tasks a poll refused (their agent lacks a feature they need),
    /// once their end is on stable storage.
    async fn tell_refused(&self, refused: &[TaskId]) -> Result<(), StoreError> {
        if refused.is_empty() {
            return Ok(());
        }
        self.store.durable().await?;
        for &id in refused {
            self.dispatch.task_changed(id);
        }
        Ok(())
    }

    /// One look at the store for a poll: cancels to tell first, then up to `most` tasks if there
    /// is room (tasks needing a feature the agent lacks are ended and listed in `refused`).
    fn poll_once(
        &self,
        app_id: &str,
        (capacity, most): (Option<usize>, usize),
        features: &[String],
        refused: &mut Vec<TaskId>,
    ) -> Result<Option<PollResult>, StoreError> {
        if capacity.is_some() {
            let pending = self.store.pending_cancels(app_id)?;
            let cancels = self.dispatch.cancels_to_tell(pending, Instant::now());
            if !cancels.is_empty() {
                return Ok(Some(PollResult::Cancels(cancels)));
            }
        }
        let delivery = if capacity.is_some() { Delivery::Acknowledged } else { Delivery::Legacy };
        if capacity == Some(0) {
            return Ok(None);
        }
        let mut tasks = Vec::new();
        while tasks.len() < most {
            match self.store.take_next(app_id, delivery, features, refused, now_ms())? {
                Some(task) => tasks.push(task),
                None => break,
            }
        }
        Ok((!tasks.is_empty()).then_some(PollResult::Tasks(tasks)))
    }

    /// Parks a poll of a pending agent until an operator accepts it or the poll window ends.
    pub async fn wait_for_acceptance(&self, app_id: &str) {
        let poll = self.dispatch.park(app_id);
        let deadline = tokio::time::Instant::now() + self.window;
        loop {
            let woken = poll.slot.signal.notified();
            let accepted =
                matches!(self.store.agent(app_id), Ok(Some(a)) if a.status == AgentStatus::Accepted);
            if accepted || poll.superseded() {
                return;
            }
            tokio::select! {
                _ = woken => {}
                _ = self.dispatch.recheck() => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = self.dispatch.stopped() => return,
            }
        }
    }

    /// `app_id` said goodbye: it shows offline at once, and its parked poll (if the server
    /// still holds it) answers "no task", so no task is handed to a connection about to close.
    /// Returns once the request's use record is on stable storage.
    pub async fn goodbye(&self, app_id: &str) -> Result<(), StoreError> {
        self.dispatch.presence().goodbye(app_id, now_ms());
        self.dispatch.dismiss(app_id);
        self.store.durable().await
    }

    /// Returns once a ping may be answered: its use record is on stable storage, so a replay
    /// after a crash cannot earn a second pong.
    pub async fn pong(&self) -> Result<(), StoreError> {
        self.store.durable().await
    }
}
