//! The background checkpointer: a thread that moves the write-ahead log's records into sled's
//! own files (sled flush + fdatasync, then the log's older segments are dropped) once the log
//! has grown past a size or some time has passed, so that the request path never flushes sled
//! and a restart replays little.

use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tracing::warn;

use super::gate::Gate;
use super::trees::Trees;
use super::wal::Wal;

/// Checkpoint once the active segment holds this many bytes.
pub const CHECKPOINT_BYTES: u64 = 64 << 20;
/// Checkpoint at least this often while anything is written.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);
/// How often the thread looks at the log's size.
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// Handle to the checkpointer thread; dropping it stops the thread.
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread for the log `wal` of the database behind `gate`.
    pub fn start(wal: Arc<Wal>, gate: Arc<Gate<Trees>>) -> std::io::Result<Checkpointer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let for_thread = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("orange-checkpoint".into())
            .spawn(move || run(&for_thread, &wal, &gate))?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(stop: &(Mutex<bool>, Condvar), wal: &Wal, gate: &Gate<Trees>) {
    let mut last = Instant::now();
    while !stopped(stop, LOOK_EVERY) {
        let len = wal.active_len();
        if len < CHECKPOINT_BYTES && (len == 0 || last.elapsed() < CHECKPOINT_EVERY) {
            continue;
        }
        // The log's checkpoint lock first, then the pass: the order compaction takes them in
        // (the lock, then sole access), so a compaction never waits for a checkpoint's pass.
        if let Err(e) = wal.checkpoint(|| gate.pass().sync()) {
            warn!(error = %e, "checkpoint failed; the write-ahead log keeps growing until one succeeds");
        }
        last = Instant::now();
    }
}

/// Waits up to `wait`; whether the thread is to stop.
fn stopped(stop: &(Mutex<bool>, Condvar), wait: Duration) -> bool {
    let (lock, wake) = stop;
    let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
    if *guard {
        return true;
    }
    let (guard, _) = wake.wait_timeout(guard, wait).unwrap_or_else(|p| p.into_inner());
    *guard
}
