//! `orange task run` owns its remote task: Ctrl-C, and the loss of its terminal or of its output,
//! cancel the task rather than leave it running with nobody watching.
//!
//! - Ctrl-C (SIGINT): the first asks the server to cancel the task (not forced, so its agent stops
//!   it and reports) while `run` keeps showing the task until it ends; a second exits at once with
//!   [`EXIT_INTERRUPTED`], leaving the task to the server.
//! - SIGTERM, SIGHUP (the terminal went away) and SIGPIPE or a write to a closed stdout or stderr
//!   (the reader went away, as in `orange task run -- yes | head -1`): nobody is left to show the
//!   task to, so the same cancel is sent (once; one already in flight after Ctrl-C is waited for)
//!   and orange exits with 128 + the signal's number, as a shell reports a process killed by it
//!   (143, 129, 141). Another SIGTERM or Ctrl-C meanwhile exits at once.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use libc::c_int;
use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

use super::cancel::{CancelOutcome, request_cancel};
use super::operator::Api;

/// Exit status of `task run` after Ctrl-C, as a shell reports a process killed by SIGINT.
pub const EXIT_INTERRUPTED: i32 = 130;

/// The exit status of a process that ends because of `signal`, as a shell reports one killed by
/// it: 128 + its number.
pub fn signal_exit_code(signal: c_int) -> i32 {
    128 + signal
}

/// Ends the process with the given status (a recorder in unit tests).
type Exit = Box<dyn Fn(i32) + Send + Sync>;

/// What a watched signal means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meaning {
    /// Ctrl-C: cancel and keep watching; the second one stops watching.
    Interrupt,
    /// The terminal or the output is gone, or orange is told to stop: cancel and exit.
    Loss,
}

/// The signals `task run` watches while it owns a task.
const WATCHED: [(c_int, Meaning); 4] = [
    (SIGINT, Meaning::Interrupt),
    (SIGTERM, Meaning::Loss),
    (SIGHUP, Meaning::Loss),
    (SIGPIPE, Meaning::Loss),
];

/// Watches for Ctrl-C and the loss of the terminal or output until dropped; while it lives,
/// these signals no longer kill the process.
pub struct CancelOnInterrupt {
    shared: Arc<Shared>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

impl CancelOnInterrupt {
    /// Starts watching SIGINT, SIGTERM, SIGHUP and SIGPIPE; `api` sends the cancel.
    pub fn install(api: Api) -> Result<Self> {
        Self::watch(api, &WATCHED, Box::new(|code| std::process::exit(code)))
    }

    /// Starts watching `signals`, each with its meaning; `exit` ends the process.
    fn watch(api: Api, signals: &[(c_int, Meaning)], exit: Exit) -> Result<Self> {
        let numbers: Vec<c_int> = signals.iter().map(|(number, _)| *number).collect();
        let mut watched = Signals::new(&numbers).context("cannot watch for Ctrl-C")?;
        let handle = watched.handle();
        let shared = Arc::new(Shared::new(api, exit));
        let watcher = Arc::clone(&shared);
        let meanings = signals.to_vec();
        let thread = std::thread::Builder::new()
            .name("orange-ctrl-c".into())
            .spawn(move || {
                for number in watched.forever() {
                    match meanings.iter().find(|(n, _)| *n == number).map(|(_, m)| *m) {
                        Some(Meaning::Interrupt) => watcher.interrupted(),
                        Some(Meaning::Loss) => watcher.lost(number),
                        None => {}
                    }
                }
            })
            .context("cannot start the Ctrl-C thread")?;
        Ok(CancelOnInterrupt { shared, handle, thread: Some(thread) })
    }

    /// Names the task to cancel; cancels it now if Ctrl-C came while it was being created (and
    /// exits, after cancelling, if the terminal or output was lost meanwhile).
    pub fn set_task(&self, task_id: &str) {
        self.shared.set_task(task_id)
    }

    /// True once Ctrl-C was pressed.
    pub fn interrupted(&self) -> bool {
        self.shared.lock().interrupts > 0
    }

    /// `result`, unless the terminal or the output is lost, before or by `result`'s error (a
    /// write to a reader that went away or to a hung-up terminal): then the task is cancelled
    /// and the process exits, as [`Self::output_lost`] does, so that a task ending meanwhile
    /// never replaces the signal's exit status.
    pub fn unless_lost<T>(&self, result: Result<T>) -> Result<T> {
        let before = self.shared.lock().lost;
        match result.as_ref().err().and_then(lost_output).or(before) {
            Some(signal) => self.output_lost(signal),
            None => result,
        }
    }

    /// The task's output could not be written: its reader went away (`signal` SIGPIPE) or its
    /// terminal hung up (SIGHUP). Cancels the task as that signal does and exits; never
    /// returns.
    pub fn output_lost(&self, signal: c_int) -> ! {
        self.shared.output_lost(signal);
        // Another thread is cancelling and exits the process once it is done.
        loop {
            std::thread::park();
        }
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

/// Where the cancel stands.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    #[default]
    NotSent,
    Sending,
    Sent,
}

/// What has happened so far.
#[derive(Debug, Default)]
struct State {
    task_id: Option<String>,
    interrupts: u32,
    cancel: Cancel,
    /// The first signal that took the terminal or the output away, or told orange to stop.
    lost: Option<c_int>,
    /// A thread is cancelling on the way out; it exits the process.
    leaving: bool,
}

impl State {
    /// The task to cancel now, at most once: after an interrupt or a loss, once the task is known.
    fn take_cancel(&mut self) -> Option<String> {
        if (self.interrupts == 0 && self.lost.is_none()) || self.cancel != Cancel::NotSent {
            return None;
        }
        let id = self.task_id.clone()?;
        self.cancel = Cancel::Sending;
        Some(id)
    }

    /// Starts leaving for a loss known before the task was; the signal to exit with.
    fn start_leaving(&mut self) -> Option<c_int> {
        let signal = self.lost.filter(|_| !self.leaving && self.task_id.is_some())?;
        self.leaving = true;
        Some(signal)
    }
}

/// What the signal thread does about a loss.
enum AfterLoss {
    Nothing,
    ExitNow,
    Leave,
}

/// The state shared by the signal thread, the cancelling threads and `run`.
struct Shared {
    api: Api,
    state: Mutex<State>,
    /// Signalled when a cancel in flight has been answered.
    answered: Condvar,
    exit: Exit,
}

impl Shared {
    fn new(api: Api, exit: Exit) -> Self {
        Shared { api, state: Mutex::default(), answered: Condvar::new(), exit }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_task(self: &Arc<Self>, task_id: &str) {
        let (leave, cancel) = {
            let mut state = self.lock();
            state.task_id = Some(task_id.to_owned());
            match state.start_leaving() {
                Some(signal) => (Some(signal), None),
                None => (None, state.take_cancel()),
            }
        };
        if let Some(signal) = leave {
            self.leave(signal);
        } else if let Some(id) = cancel {
            self.spawn_cancel(id);
        }
    }

    /// One Ctrl-C: the first cancels the task (or leaves that to [`Self::set_task`] while it is
    /// being created); a second one, or one while orange is leaving, exits at once.
    fn interrupted(self: &Arc<Self>) {
        let (again, task_id, cancel) = {
            let mut state = self.lock();
            state.interrupts += 1;
            (state.interrupts > 1 || state.leaving, state.task_id.clone(), state.take_cancel())
        };
        if again {
            if let Some(id) = task_id {
                note(&format!("orange: stopped waiting for task {id}; see it with: orange task get {id}"));
            }
            (self.exit)(EXIT_INTERRUPTED);
        } else if let Some(id) = cancel {
            self.spawn_cancel(id);
        }
    }

    /// SIGTERM, SIGHUP or SIGPIPE: cancels the task on a thread of its own (once it is known)
    /// and exits. A further SIGTERM exits at once; a further SIGPIPE or SIGHUP does not, being
    /// the echo of the same loss (the signal that comes with a failed write, a hang-up told
    /// twice), which [`Self::output_lost`] or the first signal handles.
    fn lost(self: &Arc<Self>, signal: c_int) {
        let next = {
            let mut state = self.lock();
            if state.lost.is_some() {
                if signal == SIGTERM { AfterLoss::ExitNow } else { AfterLoss::Nothing }
            } else {
                state.lost = Some(signal);
                // Without a task yet, `set_task` leaves once it exists.
                if state.start_leaving().is_some() { AfterLoss::Leave } else { AfterLoss::Nothing }
            }
        };
        match next {
            AfterLoss::Nothing => {}
            AfterLoss::ExitNow => (self.exit)(signal_exit_code(signal)),
            AfterLoss::Leave => {
                let shared = Arc::clone(self);
                let spawned = std::thread::Builder::new()
                    .name("orange-leave".into())
                    .spawn(move || shared.leave(signal));
                if let Err(error) = spawned {
                    note(&format!("orange: cannot cancel the task: {error}"));
                    (self.exit)(signal_exit_code(signal));
                }
            }
        }
    }

    /// A write of the task's output failed: leaves as on `signal` (or the loss seen before), in
    /// the calling thread, unless another thread already does (then returns).
    fn output_lost(self: &Arc<Self>, signal: c_int) {
        let leave = {
            let mut state = self.lock();
            let signal = *state.lost.get_or_insert(signal);
            if state.leaving {
                None
            } else {
                state.leaving = true;
                Some(signal)
            }
        };
        if let Some(signal) = leave {
            self.leave(signal);
        }
    }

    /// Cancels the task (or waits for the answer to a cancel already sent) and exits with the
    /// status of `signal`.
    fn leave(&self, signal: c_int) {
        let cancel = self.lock().take_cancel();
        match cancel {
            Some(id) => {
                send_cancel(&self.api, &id, &mut std::io::stderr(), Some(signal));
                self.answer_came();
            }
            None => {
                let state = self.lock();
                let _answered = self
                    .answered
                    .wait_while(state, |state| state.cancel == Cancel::Sending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        }
        (self.exit)(signal_exit_code(signal));
    }

    /// Cancels on a thread of its own, so that a second Ctrl-C is handled during the call.
    fn spawn_cancel(self: &Arc<Self>, task_id: String) {
        let shared = Arc::clone(self);
        let spawned = std::thread::Builder::new().name("orange-cancel".into()).spawn(move || {
            send_cancel(&shared.api, &task_id, &mut std::io::stderr(), None);
            shared.answer_came();
        });
        if let Err(error) = spawned {
            note(&format!("orange: cannot cancel the task: {error}"));
            self.answer_came();
        }
    }

    /// The cancel was answered (or could not be sent): whoever waits for it may go on.
    fn answer_came(&self) {
        self.lock().cancel = Cancel::Sent;
        self.answered.notify_all();
    }
}

/// The signal a failed write of the output stands for: SIGPIPE for a pipe whose reader went
/// away (EPIPE: the runtime ignores SIGPIPE unless it is watched, and a watched one still fails
/// the write), SIGHUP for a terminal that hung up (EIO); none for any other error.
fn lost_output(error: &anyhow::Error) -> Option<c_int> {
    error.chain().filter_map(|cause| cause.downcast_ref::<std::io::Error>()).find_map(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Some(SIGPIPE)
        } else if e.raw_os_error() == Some(libc::EIO) {
            Some(SIGHUP)
        } else {
            None
        }
    })
}

/// Writes a line on stderr, which may be gone with the terminal: a failure is ignored.
fn note(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Why orange leaves after `signal`, in words.
fn loss_reason(signal: c_int) -> &'static str {
    match signal {
        SIGPIPE => "its output was closed",
        SIGHUP => "its terminal hung up",
        SIGTERM => "terminated",
        _ => "stopped by a signal",
    }
}

/// Sends a cancel (not forced) for `task_id`, saying so on `err`: after Ctrl-C (`lost` is none)
/// or before leaving because of the signal `lost`.
fn send_cancel(api: &Api, task_id: &str, err: &mut impl Write, lost: Option<c_int>) {
    let _ = match lost {
        None => writeln!(err, "orange: cancelling task {task_id}"),
        Some(signal) => writeln!(err, "orange: {}; cancelling task {task_id}", loss_reason(signal)),
    };
    let note = match request_cancel(api, task_id, false) {
        Ok(CancelOutcome::Taken(task)) if !task.status.is_final() => {
            let then = if lost.is_none() { " (Ctrl-C again to stop waiting)" } else { "" };
            Some(format!("orange: cancel requested; its agent will stop it{then}"))
        }
        Ok(_) => None,
        Err(error) => Some(format!("orange: cannot cancel task {task_id}: {error:#}")),
    };
    if let Some(note) = note {
        let _ = writeln!(err, "{note}");
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::cli::fake_api::{FakeApi, Seen};
    use crate::cli::follow::tests::ID;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    /// The exit statuses the process was asked to end with.
    type Exits = Arc<Mutex<Vec<i32>>>;

    /// An exit that records the status instead of ending the test process.
    fn recorder() -> (Exit, Exits) {
        let exits = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&exits);
        (Box::new(move |code| record.lock().unwrap().push(code)), exits)
    }

    /// A shared state whose exits are recorded.
    fn shared(api: &FakeApi) -> (Arc<Shared>, Exits) {
        let (exit, exits) = recorder();
        (Arc::new(Shared::new(api.client(), exit)), exits)
    }

    /// Waits up to 5 s for `count` exits, and returns them.
    fn exits_after(exits: &Exits, count: usize) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while exits.lock().unwrap().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        exits.lock().unwrap().clone()
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
        let (shared, exits) = shared(&api);
        shared.set_task(ID);
        assert!(api.seen().is_empty(), "no cancel before Ctrl-C");
        shared.interrupted();
        assert_eq!(api.wait_for(1), [cancel_request()]);
        assert!(exits.lock().unwrap().is_empty());
        shared.interrupted();
        assert_eq!(*exits.lock().unwrap(), [EXIT_INTERRUPTED]);
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
        let (exit, _) = recorder();
        let watcher =
            CancelOnInterrupt::watch(api.client(), &[(libc::SIGUSR2, Meaning::Interrupt)], exit).unwrap();
        watcher.set_task(ID);
        assert!(!watcher.interrupted());
        signal_hook::low_level::raise(libc::SIGUSR2).unwrap();
        assert_eq!(api.wait_for(1), [cancel_request()]);
        assert!(watcher.interrupted());
    }

    #[test]
    fn a_real_loss_signal_cancels_then_exits_with_its_status() {
        // SIGUSR1 stands in for SIGTERM, which would end the test process.
        let api = requested();
        let (exit, exits) = recorder();
        let watcher =
            CancelOnInterrupt::watch(api.client(), &[(libc::SIGUSR1, Meaning::Loss)], exit).unwrap();
        watcher.set_task(ID);
        signal_hook::low_level::raise(libc::SIGUSR1).unwrap();
        assert_eq!(exits_after(&exits, 1), [signal_exit_code(libc::SIGUSR1)]);
        assert_eq!(api.seen(), [cancel_request()], "cancelled before the exit");
        assert!(!watcher.interrupted(), "a loss is not Ctrl-C");
    }

    #[test]
    fn sigterm_and_sighup_cancel_then_exit_with_128_plus_the_signal() {
        for (signal, code) in [(SIGTERM, 143), (SIGHUP, 129)] {
            let api = requested();
            let (shared, exits) = shared(&api);
            shared.set_task(ID);
            shared.lost(signal);
            assert_eq!(exits_after(&exits, 1), [code]);
            assert_eq!(api.seen(), [cancel_request()]);
        }
    }

    #[test]
    fn a_loss_while_the_task_is_created_cancels_it_once_it_exists_then_exits() {
        let api = requested();
        let (shared, exits) = shared(&api);
        shared.lost(SIGHUP);
        assert!(api.seen().is_empty() && exits.lock().unwrap().is_empty());
        shared.set_task(ID);
        assert_eq!(api.seen(), [cancel_request()]);
        assert_eq!(*exits.lock().unwrap(), [129]);
    }

    #[test]
    fn a_second_termination_signal_exits_at_once() {
        let api = requested();
        let (shared, exits) = shared(&api);
        shared.lost(SIGTERM);
        shared.lost(SIGTERM);
        assert_eq!(*exits.lock().unwrap(), [143]);
        assert!(api.seen().is_empty());
    }

    #[test]
    fn a_failed_write_and_its_sigpipe_cancel_once_and_exit_141() {
        // Whichever comes first leaves; the other adds nothing.
        for pipe_signal_first in [true, false] {
            let api = requested();
            let (shared, exits) = shared(&api);
            shared.set_task(ID);
            if pipe_signal_first {
                shared.lost(SIGPIPE);
                shared.output_lost(SIGPIPE);
            } else {
                shared.output_lost(SIGPIPE);
                shared.lost(SIGPIPE);
            }
            assert_eq!(exits_after(&exits, 1), [141]);
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(api.seen(), [cancel_request()], "one cancel");
            assert_eq!(*exits.lock().unwrap(), [141], "one exit");
        }
    }

    #[test]
    fn output_lost_after_ctrl_c_waits_for_its_cancel_instead_of_sending_another() {
        let api = requested();
        let (shared, exits) = shared(&api);
        shared.set_task(ID);
        shared.interrupted();
        shared.output_lost(SIGPIPE);
        assert_eq!(*exits.lock().unwrap(), [141]);
        assert_eq!(api.seen(), [cancel_request()], "the Ctrl-C cancel was answered before the exit");
    }

    #[test]
    fn only_a_write_to_a_closed_pipe_or_a_hung_up_terminal_counts_as_a_lost_output() {
        let closed = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert_eq!(lost_output(&anyhow::Error::new(closed).context("cannot write to stdout")), Some(SIGPIPE));
        let hung_up = std::io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(lost_output(&anyhow::Error::new(hung_up).context("cannot write to stderr")), Some(SIGHUP));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(lost_output(&anyhow::Error::new(refused).context("cannot connect")), None);
        assert_eq!(lost_output(&anyhow::anyhow!("unknown task")), None);
    }

    #[test]
    fn a_hang_up_told_twice_still_cancels_before_the_exit() {
        let api = requested();
        let (shared, exits) = shared(&api);
        shared.lost(SIGHUP);
        shared.lost(SIGHUP);
        assert!(exits.lock().unwrap().is_empty(), "the echo does not exit at once");
        shared.set_task(ID);
        assert_eq!(api.seen(), [cancel_request()]);
        assert_eq!(*exits.lock().unwrap(), [129]);
    }

    #[test]
    fn the_cancel_says_what_happens_next() {
        let api = requested();
        let mut err = Vec::new();
        send_cancel(&api.client(), ID, &mut err, None);
        assert_eq!(
            String::from_utf8(err).unwrap(),
            format!(
                "orange: cancelling task {ID}\n\
                 orange: cancel requested; its agent will stop it (Ctrl-C again to stop waiting)\n"
            )
        );
    }

    #[test]
    fn the_cancel_on_leaving_says_why() {
        let api = requested();
        let mut err = Vec::new();
        send_cancel(&api.client(), ID, &mut err, Some(SIGPIPE));
        assert_eq!(
            String::from_utf8(err).unwrap(),
            format!(
                "orange: its output was closed; cancelling task {ID}\n\
                 orange: cancel requested; its agent will stop it\n"
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
        send_cancel(&api.client(), ID, &mut err, None);
        assert_eq!(String::from_utf8(err).unwrap(), format!("orange: cancelling task {ID}\n"));
    }
}
