//! Running one task process: its own process group, input on stdin, stdout and stderr read
//! concurrently into an [`OutputSink`] (a capture, or the live stream to the server) through a
//! small bounded queue, and a supervisor that ends the whole group at the deadline (SIGKILL) or
//! on a cancel (SIGTERM, then SIGKILL after a grace).
//!
//! The group never outlives the agent. The leader is started with a parent-death signal
//! (`PR_SET_PDEATHSIG`, SIGKILL), so it dies with the agent; the kernel sends it when the
//! *thread* that forked dies, which is why a process is spawned by the thread that supervises
//! it until it ends (the task's worker). The signal reaches the leader only: the rest of the
//! group is ended by the restarted agent, which finds the group through the record a
//! [`GroupWatch`] was given when the process started (the task journal keeps it until the
//! process is gone).
//!
//! Memory stays bounded: each reader holds one buffer and the queue holds [`PIPE_QUEUE`] pieces,
//! so a sink that blocks (a slow server) blocks the readers, and then the child's writes.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::capture::Capture;
use super::group::GroupRecord;
use super::sink::{OutputSink, Stream};

/// How long to wait for the pipes to close after killing a process group; a process that left
/// the group (setsid) may hold them open forever, and the result must not wait for it.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Read buffer of the output readers.
const READ_CHUNK: usize = 64 * 1024;
/// Pieces of output queued between the readers and the sink.
pub const PIPE_QUEUE: usize = 2;
/// How often the supervisor and the sink's pump look at the clock and the cancel flag.
const TICK: Duration = Duration::from_millis(25);

/// Process groups of the task processes running now, so a forced exit can kill them.
static RUNNING_GROUPS: Mutex<BTreeSet<libc::pid_t>> = Mutex::new(BTreeSet::new());

/// Registers a process group as running for as long as it lives.
struct RunningGroup(libc::pid_t);

impl RunningGroup {
    fn new(pgid: libc::pid_t) -> Self {
        RUNNING_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).insert(pgid);
        RunningGroup(pgid)
    }
}

impl Drop for RunningGroup {
    fn drop(&mut self) {
        RUNNING_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// The process groups of task processes running now.
pub fn running_groups() -> Vec<libc::pid_t> {
    RUNNING_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect()
}

/// Kills every running task's process group (on a forced exit); returns how many.
pub fn kill_running_groups() -> usize {
    let groups = running_groups();
    groups.iter().for_each(|&pgid| signal_group(pgid, libc::SIGKILL));
    groups.len()
}

/// Told when a task's process group starts and when it is gone, so that what is left of a
/// group still running when the agent died can be found and ended after a restart.
pub trait GroupWatch: Send + Sync {
    /// The process group `group` started (called on the spawning thread, before its output is read).
    fn started(&self, group: &GroupRecord);
    /// The process of `group` exited and nothing holds its output open (or its group was
    /// killed): from now on, what it left in the group was left on purpose.
    fn ended(&self, group: &GroupRecord);
}

/// A process's deadline and how it can be cancelled.
#[derive(Clone, Copy)]
pub struct RunLimits<'a> {
    /// When the group is killed and the run counts as timed out.
    pub timeout: Duration,
    /// Set by someone else to stop the process: SIGTERM, then SIGKILL after `cancel_grace`.
    pub cancel: Option<&'a AtomicBool>,
    /// Time between SIGTERM and SIGKILL on a cancel.
    pub cancel_grace: Duration,
    /// Told when the process group starts and ends (the agent journals it).
    pub watch: Option<&'a dyn GroupWatch>,
}

impl std::fmt::Debug for RunLimits<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLimits")
            .field("timeout", &self.timeout)
            .field("cancel", &self.cancel)
            .field("cancel_grace", &self.cancel_grace)
            .field("watch", &self.watch.is_some())
            .finish()
    }
}

/// What a finished (or killed) process left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Exit code, when the process exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    pub signal: Option<i32>,
    /// What the sink kept of standard output.
    pub stdout: String,
    /// What the sink kept of standard error.
    pub stderr: String,
    /// The deadline passed and the process group was killed.
    pub timed_out: bool,
    /// The run was cancelled and the process group was stopped.
    pub cancelled: bool,
}

/// What the helper threads tell the supervisor.
enum Event {
    /// The process exited.
    Exited(io::Result<ExitStatus>),
    /// A reader saw the end of its pipe (every writer closed it).
    PipeClosed,
    /// The sink took all output and closed.
    OutputDone(String, String),
}

/// Runs `command` in a new process group with `input` on stdin (null stdin when `None`), keeping
/// at most `cap` bytes of each output stream; kills the group at `timeout`.
pub fn run_process(
    command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    cap: usize,
) -> io::Result<ProcessOutput> {
    let limits = RunLimits { timeout, cancel: None, cancel_grace: Duration::ZERO, watch: None };
    run_process_with(command, input, &limits, Box::new(Capture::new(cap)))
}

/// Runs `command` in a new process group with `input` on stdin, its output going to `sink`,
/// within `limits`. The process gets SIGKILL if the calling thread dies before it, so call
/// this from a thread that lives as long as the process is watched.
pub fn run_process_with(
    mut command: Command,
    input: Option<Vec<u8>>,
    limits: &RunLimits<'_>,
    sink: Box<dyn OutputSink>,
) -> io::Result<ProcessOutput> {
    let deadline = Instant::now() + limits.timeout;
    let mut child = spawn(&mut command, input.is_some())?;
    // A pid always fits in pid_t; the kernel hands out positive values below 2^22.
    let pgid = libc::pid_t::try_from(child.id()).unwrap_or(libc::pid_t::MAX);
    let _running = RunningGroup::new(pgid);
    // Read before the child can be reaped, so the record names this very process.
    let group = limits.watch.and_then(|_| GroupRecord::of_leader(pgid));
    if let (Some(watch), Some(group)) = (limits.watch, &group) {
        watch.started(group);
    }
    let (tx, rx) = mpsc::channel();
    let abandon = Arc::new(AtomicBool::new(false));
    start_helpers(&mut child, input, sink, tx.clone(), Arc::clone(&abandon));
    thread::spawn(move || tx.send(Event::Exited(child.wait())));
    let mut supervisor = Supervisor::new(rx, pgid, limits, deadline, group);
    supervisor.run();
    supervisor.tell_ended();
    if supervisor.output.is_none() {
        if supervisor.pipes_closed < 2 {
            abandon.store(true, Ordering::SeqCst);
        }
        supervisor.wait_for_output();
    }
    Ok(supervisor.finish())
}

fn spawn(command: &mut Command, with_stdin: bool) -> io::Result<Child> {
    die_with_parent(command);
    command
        .process_group(0)
        .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Has the kernel SIGKILL the child when the thread that spawns it dies (`PR_SET_PDEATHSIG`,
/// Linux 2.1.57 on); if the agent died between fork and exec, the child ends at once. The signal
/// is kept across exec, except of a set-user-id program. Best effort: a failing prctl leaves
/// the process to the restarted agent's sweep.
#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(libc::pid_t::MAX);
    let hook = move || {
        // SAFETY: prctl and getppid are async-signal-safe system calls taking no pointers;
        // _exit ends the child without running anything of the parent's.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(137);
            }
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec, and only makes system calls
    // that are safe there (see above); it allocates nothing and takes no lock.
    unsafe { command.pre_exec(hook) };
}

/// No parent-death signal on this system: the restarted agent's sweep ends a leftover group.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Starts the stdin writer, the two output readers and the pump that feeds the sink.
fn start_helpers(
    child: &mut Child,
    input: Option<Vec<u8>>,
    sink: Box<dyn OutputSink>,
    tx: Sender<Event>,
    abandon: Arc<AtomicBool>,
) {
    if let (Some(stdin), Some(input)) = (child.stdin.take(), input) {
        thread::spawn(move || feed(stdin, &input));
    }
    let (pieces_tx, pieces_rx) = mpsc::sync_channel(PIPE_QUEUE);
    if let Some(out) = child.stdout.take() {
        let (pieces, tx) = (pieces_tx.clone(), tx.clone());
        thread::spawn(move || read_into(out, Stream::Stdout, &pieces, &tx));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || read_into(err, Stream::Stderr, &pieces_tx, &tx));
    }
    thread::spawn(move || pump(&pieces_rx, sink, &abandon, &tx));
}

/// Writes the input and closes stdin. A child that exits without reading it all is not an
/// error, so a broken pipe is ignored.
fn feed(mut stdin: ChildStdin, input: &[u8]) {
    if let Err(e) = stdin.write_all(input)
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        tracing::debug!(error = %e, "cannot write the task input to stdin");
    }
}

/// Reads a pipe to its end, handing each piece to the pump, then tells the supervisor; stops
/// early if the pump is gone.
fn read_into(
    mut pipe: impl Read,
    stream: Stream,
    pieces: &SyncSender<(Stream, Vec<u8>)>,
    tx: &Sender<Event>,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if pieces.send((stream, buf[..n].to_vec())).is_err() {
            return;
        }
    }
    // The supervisor may be gone only if it panicked; nothing is left to tell then.
    let _ = tx.send(Event::PipeClosed);
}

/// Feeds the sink until both readers are done, then closes it and hands its text to the
/// supervisor. When the supervisor abandons pipes that a runaway process holds open, the
/// pieces already read still go to the sink.
fn pump(
    pieces: &Receiver<(Stream, Vec<u8>)>,
    mut sink: Box<dyn OutputSink>,
    abandon: &AtomicBool,
    tx: &Sender<Event>,
) {
    loop {
        if abandon.load(Ordering::SeqCst) {
            pieces.try_iter().for_each(|(stream, bytes)| sink.write(stream, &bytes));
            break;
        }
        match pieces.recv_timeout(TICK) {
            Ok((stream, bytes)) => sink.write(stream, &bytes),
            Err(RecvTimeoutError::Timeout) => sink.tick(),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let (stdout, stderr) = sink.close();
    // The supervisor may be gone only if it panicked; nothing is left to tell then.
    let _ = tx.send(Event::OutputDone(stdout, stderr));
}

/// Sends `signal` to the process group `pgid`.
fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names the process group.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc != 0 {
        tracing::debug!(pgid, signal, error = %io::Error::last_os_error(), "cannot signal the process group");
    }
}

/// Watches one process: collects its exit and its output, and ends its group at the deadline
/// or on a cancel.
struct Supervisor<'a> {
    rx: Receiver<Event>,
    pgid: libc::pid_t,
    limits: &'a RunLimits<'a>,
    deadline: Instant,
    status: Option<io::Result<ExitStatus>>,
    pipes_closed: usize,
    output: Option<(String, String)>,
    timed_out: bool,
    cancelled: bool,
    /// When SIGKILL follows the SIGTERM of a cancel.
    kill_at: Option<Instant>,
    /// When SIGKILL was sent.
    killed_at: Option<Instant>,
    /// The group's record, until the watch is told that it ended.
    group: Option<GroupRecord>,
}

impl<'a> Supervisor<'a> {
    fn new(
        rx: Receiver<Event>,
        pgid: libc::pid_t,
        limits: &'a RunLimits<'a>,
        deadline: Instant,
        group: Option<GroupRecord>,
    ) -> Self {
        Supervisor {
            rx,
            pgid,
            limits,
            deadline,
            status: None,
            pipes_closed: 0,
            output: None,
            timed_out: false,
            cancelled: false,
            kill_at: None,
            killed_at: None,
            group,
        }
    }

    /// Tells the watch, once, that the group's process is gone: called as soon as it is, before
    /// the last output is sent (which may wait on the server), and when the supervisor gives up.
    fn tell_ended(&mut self) {
        if let (Some(watch), Some(group)) = (self.limits.watch, self.group.take()) {
            watch.ended(&group);
        }
    }

    fn complete(&self) -> bool {
        self.status.is_some() && self.output.is_some()
    }

    /// True once the process exited and nothing holds its pipes open any more: what is left is
    /// the sink taking the last output, which no deadline or cancel needs to hurry.
    fn process_gone(&self) -> bool {
        self.status.is_some() && self.pipes_closed == 2
    }

    /// Receives events until the process has exited and its output is done, or until it was
    /// killed and [`KILL_GRACE`] passed without that (a process that left the group may hold
    /// the pipes open forever).
    fn run(&mut self) {
        while !self.complete() {
            if self.killed_at.is_some_and(|at| at.elapsed() >= KILL_GRACE) {
                return;
            }
            match self.rx.recv_timeout(TICK) {
                Ok(event) => self.record(event),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.process_gone() {
                self.tell_ended();
            }
            self.enforce(Instant::now());
        }
    }

    /// After [`Self::run`] gave up on the process: waits for the sink to close (it drains what
    /// was read when the pipes are abandoned).
    fn wait_for_output(&mut self) {
        while self.output.is_none() {
            match self.rx.recv() {
                Ok(event) => self.record(event),
                Err(_) => return,
            }
        }
    }

    fn record(&mut self, event: Event) {
        match event {
            Event::Exited(status) => self.status = Some(status),
            Event::PipeClosed => self.pipes_closed += 1,
            Event::OutputDone(stdout, stderr) => self.output = Some((stdout, stderr)),
        }
    }

    /// Applies the deadline and the cancel flag.
    fn enforce(&mut self, now: Instant) {
        if self.process_gone() || self.killed_at.is_some() {
            return;
        }
        let ending = self.timed_out || self.cancelled;
        if !ending && self.limits.cancel.is_some_and(|flag| flag.load(Ordering::SeqCst)) {
            self.cancelled = true;
            signal_group(self.pgid, libc::SIGTERM);
            self.kill_at = Some(now + self.limits.cancel_grace);
        } else if !ending && now >= self.deadline {
            self.timed_out = true;
            self.kill(now);
        } else if self.kill_at.is_some_and(|at| now >= at) {
            self.kill(now);
        }
    }

    fn kill(&mut self, now: Instant) {
        signal_group(self.pgid, libc::SIGKILL);
        self.killed_at = Some(now);
    }

    fn finish(self) -> ProcessOutput {
        let status = self.status.and_then(Result::ok);
        let (stdout, stderr) = self.output.unwrap_or_default();
        ProcessOutput {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout,
            stderr,
            timed_out: self.timed_out,
            cancelled: self.cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::wire::MAX_OUTPUT_LEN;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        command
    }

    #[test]
    fn captures_both_streams_and_the_exit_code() -> io::Result<()> {
        let out = run_process(sh("echo out; echo err >&2; exit 3"), None, Duration::from_secs(5), 100)?;
        assert_eq!(
            out,
            ProcessOutput {
                exit_code: Some(3),
                signal: None,
                stdout: "out\n".into(),
                stderr: "err\n".into(),
                timed_out: false,
                cancelled: false,
            }
        );
        Ok(())
    }

    #[test]
    fn input_goes_to_stdin() -> io::Result<()> {
        let input = b"x".repeat(300_000);
        let out = run_process(sh("wc -c"), Some(input), Duration::from_secs(5), 100)?;
        assert_eq!((out.exit_code, out.stdout.trim()), (Some(0), "300000"));
        Ok(())
    }

    #[test]
    fn output_beyond_the_cap_is_drained_counted_and_noted() -> io::Result<()> {
        let script = "head -c 3145728 /dev/zero | tr '\\0' a; echo done >&2";
        let started = Instant::now();
        let out = run_process(sh(script), None, Duration::from_secs(20), MAX_OUTPUT_LEN)?;
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout.len(), MAX_OUTPUT_LEN);
        assert!(out.stdout.bytes().all(|b| b == b'a'));
        assert_eq!(
            out.stderr,
            format!("done\n\n[orange: {} bytes of stdout dropped]", 3 * 1024 * 1024 - MAX_OUTPUT_LEN)
        );
        Ok(())
    }

    #[test]
    fn invalid_utf8_is_replaced_and_still_capped() -> io::Result<()> {
        let out = run_process(sh("printf 'ok\\377\\377\\377\\377'"), None, Duration::from_secs(5), 6)?;
        assert_eq!(out.stdout, "ok\u{fffd}");
        assert_eq!(out.stderr, "\n[orange: 9 bytes of stdout dropped]");
        Ok(())
    }

    #[test]
    fn timeout_kills_the_whole_process_group_quickly() -> io::Result<()> {
        let started = Instant::now();
        let script = "sleep 30 & echo $!; sleep 30";
        let out = run_process(sh(script), None, Duration::from_secs(1), 100)?;
        let elapsed = started.elapsed();
        assert!(out.timed_out && !out.cancelled);
        assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
        assert!(elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        let background: libc::pid_t = out.stdout.trim().parse().expect("the script prints a pid");
        assert!(gone(background), "background sleep {background} survived");
        Ok(())
    }

    #[test]
    fn a_background_child_holding_the_pipe_is_killed_at_the_deadline() -> io::Result<()> {
        let started = Instant::now();
        let out = run_process(sh("sleep 30 & echo started"), None, Duration::from_secs(1), 100)?;
        assert!(out.timed_out);
        assert_eq!((out.exit_code, out.stdout.as_str()), (Some(0), "started\n"));
        assert!(started.elapsed() < Duration::from_secs(3));
        Ok(())
    }

    #[test]
    fn pipes_held_by_a_process_that_left_the_group_are_abandoned_keeping_what_was_read() -> io::Result<()> {
        let started = Instant::now();
        let out = run_process(sh("setsid sleep 30 & echo $!"), None, Duration::from_secs(1), 100)?;
        let escaped: libc::pid_t = out.stdout.trim().parse().expect("the script prints a pid");
        // SAFETY: kill has no memory-safety preconditions; this is the test's own sleep.
        unsafe { libc::kill(escaped, libc::SIGKILL) };
        assert!(out.timed_out);
        assert_eq!(out.exit_code, Some(0));
        let took = started.elapsed();
        assert!(took >= KILL_GRACE && took < KILL_GRACE + Duration::from_secs(2), "{took:?}");
        Ok(())
    }

    /// Runs `script` and sets the cancel flag once it printed its first line.
    fn cancel_after_start(script: &str, grace: Duration) -> io::Result<(ProcessOutput, Duration)> {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            flag.store(true, Ordering::SeqCst);
            Instant::now()
        });
        let limits = RunLimits {
            timeout: Duration::from_secs(20),
            cancel: Some(&cancel),
            cancel_grace: grace,
            watch: None,
        };
        let out = run_process_with(sh(script), None, &limits, Box::new(Capture::new(1000)))?;
        let cancelled_at = canceller.join().expect("no panic");
        Ok((out, cancelled_at.elapsed()))
    }

    #[test]
    fn a_cancel_sends_sigterm_to_the_group() -> io::Result<()> {
        let script = "sleep 30 & echo $!; trap 'echo bye; exit 9' TERM; while :; do sleep 0.05; done";
        let (out, took) = cancel_after_start(script, Duration::from_secs(5))?;
        assert!(out.cancelled && !out.timed_out);
        assert_eq!(out.exit_code, Some(9));
        assert!(out.stdout.ends_with("bye\n"), "{:?}", out.stdout);
        assert!(took < Duration::from_secs(2), "{took:?}");
        let background: libc::pid_t = out.stdout.lines().next().and_then(|l| l.parse().ok()).expect("pid");
        assert!(gone(background), "background sleep {background} survived");
        Ok(())
    }

    #[test]
    fn a_cancelled_process_ignoring_sigterm_is_killed_after_the_grace() -> io::Result<()> {
        let script = "trap '' TERM; echo started; while :; do sleep 0.05; done";
        let (out, took) = cancel_after_start(script, Duration::from_millis(500))?;
        assert!(out.cancelled);
        assert_eq!((out.exit_code, out.signal), (None, Some(libc::SIGKILL)));
        assert_eq!(out.stdout, "started\n");
        assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(2), "{took:?}");
        Ok(())
    }

    /// True once `pid` no longer exists. The killed sleep was reparented to init (or the test
    /// harness if it is a subreaper), so allow a moment for it to be reaped.
    fn gone(pid: libc::pid_t) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid, 0) } != 0 {
                return true;
            }
            if zombie(pid) {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// A killed process that nobody reaped yet still answers kill(pid, 0); /proc says it is dead.
    fn zombie(pid: libc::pid_t) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true)
    }

    #[test]
    fn a_running_group_is_listed_until_it_ends() -> io::Result<()> {
        let runner =
            thread::spawn(|| run_process(sh("echo $$; sleep 0.3"), None, Duration::from_secs(5), 100));
        thread::sleep(Duration::from_millis(150));
        let listed = running_groups();
        let out = runner.join().expect("no panic")?;
        let pgid: libc::pid_t = out.stdout.trim().parse().expect("the script prints its pid");
        assert!(listed.contains(&pgid), "{pgid} not in {listed:?}");
        assert!(!running_groups().contains(&pgid));
        Ok(())
    }

    #[test]
    fn missing_program_is_an_error() {
        let err = run_process(Command::new("/nonexistent/x"), None, Duration::from_secs(1), 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
