//! Ctrl-C during `orange task run`: the first SIGINT asks the server to cancel the task (not
//! forced, so its agent stops it and reports) while `run` keeps showing the task until it ends;
//! a second one exits at once with [`EXIT_INTERRUPTED`], leaving the task to the server.

use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use signal_hook::consts::SIGINT;
use signal_hook::iterator::{Handle, Signals};

use super::cancel::{CancelOutcome, request_cancel};
use super::operator::Api;

/// Exit status of `task run` after Ctrl-C, as a shell reports a process killed by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// What the second interrupt does, given the task id when there is one.
type Again = Box<dyn Fn(Option<&str>) + Send + Sync>;

/// Watches for Ctrl-C until dropped; while it lives, SIGINT no longer kills the process.
pub struct CancelOnInterrupt {
    shared: Arc<Shared>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl CancelOnInterrupt {
    /// Starts watching SIGINT; `api` sends the cancel.
    pub fn install(api: Api) -> Result<Self> {
        Self::watch(api, &[SIGINT], Box::new(stop_waiting))
    }

    /// Starts watching `signals`, calling `again` on the second one.
    fn watch(api: Api, signals: &[libc::c_int], again: Again) -> Result<Self> {
        let mut signals = Signals::new(signals).context("cannot watch for Ctrl-C")?;
        let handle = signals.handle();
        let shared = Arc::new(Shared { api, state: Mutex::default(), again });
        let watcher = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("orange-ctrl-c".into())
            .spawn(move || signals.forever().for_each(|_| watcher.interrupted()))
            .context("cannot start the Ctrl-C thread")?;
        Ok(CancelOnInterrupt { shared, handle, thread: Some(thread) })
    }

    /// Names the task to cancel; cancels it now if Ctrl-C came while it was being created.
    pub fn set_task(&self, task_id: &str) {
        self.shared.set_task(task_id)
    }

    /// True once Ctrl-C was pressed.
    pub fn interrupted(&self) -> bool {
        self.shared.update(|state| state.interrupts > 0)
    }
}

impl Drop for CancelOnInterrupt {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            // The thread only loops over signals; it ends once the handle is closed.
            let _ = thread.join();
        }
    }
}

/// What has happened so far.
#[derive(Debug, Default)]
struct State {
    task_id: Option<String>,
    interrupts: u32,
    cancel_sent: bool,
}

impl State {
    /// The task to cancel now, at most once: after an interrupt, once the task is known.
    fn take_cancel(&mut self) -> Option<String> {
        if self.interrupts == 0 || self.cancel_sent {
            return None;
        }
        let id = self.task_id.clone()?;
        self.cancel_sent = true;
        Some(id)
    }
}

/// The state shared by the signal thread and `run`.
struct Shared {
    api: Api,
    state: Mutex<State>,
    again: Again,
}

impl Shared {
    fn update<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        change(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn set_task(self: &Arc<Self>, task_id: &str) {
        let cancel = self.update(|state| {
            state.task_id = Some(task_id.to_owned());
            state.take_cancel()
        });
        if let Some(id) = cancel {
            self.spawn_cancel(id);
        }
    }

    /// One Ctrl-C: the first cancels the task (or leaves that to [`Self::set_task`] while it is
    /// being created), the second calls `again`.
    fn interrupted(self: &Arc<Self>) {
        let (count, task_id, cancel) = self.update(|state| {
            state.interrupts += 1;
            (state.interrupts, state.task_id.clone(), state.take_cancel())
        });
        if count > 1 {
            (self.again)(task_id.as_deref());
        } else if let Some(id) = cancel {
            self.spawn_cancel(id);
        }
    }

    /// Cancels on a thread of its own, so that a second Ctrl-C is handled during the call.
    fn spawn_cancel(self: &Arc<Self>, task_id: String) {
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new()
            .name("orange-cancel".into())
            .spawn(move || send_cancel(&shared.api, &task_id, &mut std::io::stderr()));
        if let Err(error) = spawned {
            eprintln!("orange: cannot cancel the task: {error}");
        }
    }
}

/// Sends a cancel (not forced) for `task_id`, saying so on `err`.
fn send_cancel(api: &Api, task_id: &str, err: &mut impl Write) {
    let _ = writeln!(err, "orange: cancelling task {task_id}");
    let note = match request_cancel(api, task_id, false) {
        Ok(CancelOutcome::Taken(task)) if !task.status.is_final() => {
            Some("orange: cancel requested; its agent will stop it (Ctrl-C again to stop waiting)".to_owned())
        }
        Ok(_) => None,
        Err(error) => Some(format!("orange: cannot cancel task {task_id}: {error:#}")),
    };
    if let Some(note) = note {
        let _ = writeln!(err, "{note}");
    }
}

/// The second Ctrl-C: stop waiting and exit at once.
fn stop_waiting(task_id: Option<&str>) {
    if let Some(id) = task_id {
        eprintln!("orange: stopped waiting for task {id}; see it with: orange task get {id}");
    }
    std::process::exit(EXIT_INTERRUPTED);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::{FakeApi, Seen};
    use crate::cli::follow::tests::ID;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    /// The task ids the second interrupt was called with.
    type Calls = Arc<Mutex<Vec<Option<String>>>>;

    /// A shared state whose second interrupt records the task id instead of exiting.
    fn shared(api: &FakeApi) -> (Arc<Shared>, Calls) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&calls);
        let again: Again = Box::new(move |id| record.lock().unwrap().push(id.map(str::to_owned)));
        (Arc::new(Shared { api: api.client(), state: Mutex::default(), again }), calls)
    }

    fn cancel_request() -> Seen {
        Seen {
            method: "POST".into(),
            target: format!("/api/v1/tasks/{ID}/cancel"),
            body: r#"{"force":false}"#.into(),
        }
    }

    fn requested() -> FakeApi {
        let mut running = sample_task(ID, "web-1", Running, None);
        running.cancel_requested = true;
        FakeApi::serve(vec![FakeApi::ok(&running)])
    }

    #[test]
    fn the_first_interrupt_cancels_once_and_the_second_stops_waiting() {
        let api = requested();
        let (shared, again) = shared(&api);
        shared.set_task(ID);
        assert!(api.seen().is_empty(), "no cancel before Ctrl-C");
        shared.interrupted();
        assert_eq!(api.wait_for(1), [cancel_request()]);
        assert!(again.lock().unwrap().is_empty());
        shared.interrupted();
        assert_eq!(*again.lock().unwrap(), [Some(ID.to_owned())]);
        assert_eq!(api.seen().len(), 1, "one cancel only");
    }

    #[test]
    fn ctrl_c_while_the_task_is_created_cancels_it_once_it_exists() {
        let api = requested();
        let (shared, _) = shared(&api);
        shared.interrupted();
        assert!(api.seen().is_empty());
        shared.set_task(ID);
        assert_eq!(api.wait_for(1), [cancel_request()]);
    }

    #[test]
    fn a_real_signal_reaches_the_watcher() {
        // SIGUSR2 stands in for SIGINT, which would also reach every other test's process.
        let api = requested();
        let watcher = CancelOnInterrupt::watch(api.client(), &[libc::SIGUSR2], Box::new(|_| {})).unwrap();
        watcher.set_task(ID);
        assert!(!watcher.interrupted());
        signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
        assert_eq!(api.wait_for(1), [cancel_request()]);
        assert!(watcher.interrupted());
    }

    #[test]
    fn the_cancel_says_what_happens_next() {
        let api = requested();
        let mut err = Vec::new();
        send_cancel(&api.client(), ID, &mut err);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            format!(
                "orange: cancelling task {ID}\n\
                 orange: cancel requested; its agent will stop it (Ctrl-C again to stop waiting)\n"
            )
        );
    }

    #[test]
    fn a_task_that_ended_meanwhile_needs_no_more_words() {
        let api = FakeApi::serve(vec![
            FakeApi::error("409 Conflict", &format!("task {ID} already finished as succeeded")),
            FakeApi::ok(&sample_task(ID, "web-1", Succeeded, Some(0))),
        ]);
        let mut err = Vec::new();
        send_cancel(&api.client(), ID, &mut err);
        assert_eq!(String::from_utf8(err).unwrap(), format!("orange: cancelling task {ID}\n"));
    }
}
