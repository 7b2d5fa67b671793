//! Group commit: one committer thread makes writes durable for every request waiting on it with
//! a single sync, so durability does not cap throughput at one sync per request.
//!
//! A writer first applies its change to the store (in memory), then calls [`Committer::wait`].
//! The committer takes every waiter queued so far, runs the sync once, and answers them all;
//! waiters that arrive during a sync are served by the next one. Because a waiter is queued only
//! after its write was applied, the sync that answers it always covers that write.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use tokio::sync::oneshot;

use super::metrics::Metrics;

/// The durable-sync function the committer runs: flush and fsync the database.
pub type SyncFn = Box<dyn Fn() -> std::io::Result<()> + Send>;

struct Queue {
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    closed: bool,
}

/// Handle to the committer thread; dropping the last handle stops the thread.
pub struct Committer {
    shared: Arc<(Mutex<Queue>, Condvar)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Committer {
    /// Starts the committer thread around `sync`, recording each batch's size and sync time in
    /// `metrics`.
    pub fn start(sync: SyncFn, metrics: Arc<Metrics>) -> std::io::Result<Committer> {
        let shared = Arc::new((Mutex::new(Queue { waiters: Vec::new(), closed: false }), Condvar::new()));
        let for_thread = Arc::clone(&shared);
        let thread = thread::Builder::new()
            .name("orange-commit".into())
            .spawn(move || commit_loop(&for_thread, &sync, &metrics))?;
        Ok(Committer { shared, thread: Some(thread) })
    }

    /// Waits until every write applied before this call is on stable storage.
    pub async fn wait(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        {
            let (lock, ready) = &*self.shared;
            let mut queue = lock.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiters.push(tx);
            ready.notify_one();
        }
        rx.await.map_err(|_| "the committer thread stopped".to_owned())?
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        let (lock, ready) = &*self.shared;
        lock.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        ready.notify_one();
        // Joined so that the sync function (and the database handle it holds) is gone when
        // the committer is.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(shared: &(Mutex<Queue>, Condvar), sync: &SyncFn, metrics: &Metrics) {
    let (lock, ready) = shared;
    loop {
        let batch = {
            let mut queue = lock.lock().unwrap_or_else(|p| p.into_inner());
            while queue.waiters.is_empty() && !queue.closed {
                queue = ready.wait(queue).unwrap_or_else(|p| p.into_inner());
            }
            if queue.waiters.is_empty() {
                return;
            }
            std::mem::take(&mut queue.waiters)
        };
        let started = Instant::now();
        let outcome = sync().map_err(|e| format!("cannot sync the database to disk: {e}"));
        metrics.commit(batch.len(), started.elapsed());
        for waiter in batch {
            // A waiter that gave up (its request was dropped) is simply skipped.
            let _ = waiter.send(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_few_syncs() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&syncs);
        let committer = Arc::new(
            Committer::start(
                Box::new(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    Ok(())
                }),
                Arc::default(),
            )
            .unwrap(),
        );
        let waits: Vec<_> = (0..200)
            .map(|_| {
                let c = Arc::clone(&committer);
                tokio::spawn(async move { c.wait().await })
            })
            .collect();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        let n = syncs.load(Ordering::SeqCst);
        assert!((1..100).contains(&n), "200 waiters took {n} syncs");
    }

    #[tokio::test]
    async fn a_failed_sync_reaches_every_waiter() {
        let committer =
            Committer::start(Box::new(|| Err(std::io::Error::other("disk gone"))), Arc::default()).unwrap();
        let err = committer.wait().await.unwrap_err();
        assert!(err.contains("disk gone"), "{err}");
    }
}
