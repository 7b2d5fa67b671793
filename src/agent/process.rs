//! Running one task process: its own process group, input on stdin, stdout and stderr captured
//! concurrently and capped (the pipes keep being drained so the child never blocks), and a
//! deadline after which the whole process group is killed.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for the pipes to close after killing a process group; a process that left
/// the group (setsid) may hold them open forever, and the result must not wait for it.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Bytes of stderr reserved for the notes about dropped output (two notes of at most ~55 bytes).
const NOTE_ROOM: usize = 128;
/// Read buffer of the output readers.
const READ_CHUNK: usize = 64 * 1024;

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
    groups.iter().for_each(|&pgid| kill_group(pgid));
    groups.len()
}

/// What a finished (or killed) process left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// Exit code, when the process exited on its own.
    pub exit_code: Option<i32>,
    /// The signal that ended the process, when one did.
    pub signal: Option<i32>,
    /// Captured standard output, lossy UTF-8, at most the cap.
    pub stdout: String,
    /// Captured standard error, lossy UTF-8, at most the cap, plus notes on dropped output.
    pub stderr: String,
    /// The deadline passed and the process group was killed.
    pub timed_out: bool,
}

/// One output stream read to its end: the first `cap` bytes and a count of the rest.
#[derive(Debug, Default)]
struct Capture {
    kept: Vec<u8>,
    dropped: u64,
}

/// What the helper threads send back.
enum Event {
    Exited(io::Result<ExitStatus>),
    Stdout(Capture),
    Stderr(Capture),
}

/// Runs `command` in a new process group with `input` on stdin (null stdin when `None`), keeping
/// at most `cap` bytes of each output stream; kills the group at `timeout`.
pub fn run_process(
    mut command: Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
    cap: usize,
) -> io::Result<ProcessOutput> {
    let deadline = Instant::now() + timeout;
    let mut child = spawn(&mut command, input.is_some())?;
    // A pid always fits in pid_t; the kernel hands out positive values below 2^22.
    let pgid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    let _running = RunningGroup::new(pgid);
    let (tx, rx) = mpsc::channel();
    start_helpers(&mut child, input, cap, &tx);
    thread::spawn(move || tx.send(Event::Exited(child.wait())));
    let mut collected = Collected::default();
    let timed_out = !collected.gather(&rx, deadline);
    if timed_out {
        kill_group(pgid);
        collected.gather(&rx, Instant::now() + KILL_GRACE);
    }
    Ok(collected.finish(timed_out, cap))
}

fn spawn(command: &mut Command, with_stdin: bool) -> io::Result<Child> {
    command
        .process_group(0)
        .stdin(if with_stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
}

/// Starts the stdin writer and the two output readers.
fn start_helpers(child: &mut Child, input: Option<Vec<u8>>, cap: usize, tx: &Sender<Event>) {
    if let (Some(stdin), Some(input)) = (child.stdin.take(), input) {
        thread::spawn(move || feed(stdin, &input));
    }
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || tx.send(Event::Stdout(read_capped(out, cap))));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        thread::spawn(move || tx.send(Event::Stderr(read_capped(err, cap))));
    }
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

/// Reads a stream to its end, keeping the first `cap` bytes and counting the rest.
fn read_capped(mut stream: impl Read, cap: usize) -> Capture {
    let mut capture = Capture::default();
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = cap.saturating_sub(capture.kept.len()).min(n);
        capture.kept.extend_from_slice(&buf[..room]);
        capture.dropped += (n - room) as u64;
    }
    capture
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill has no memory-safety preconditions; a negative pid names the process group.
    let rc = unsafe { libc::kill(-pgid, libc::SIGKILL) };
    if rc != 0 {
        tracing::debug!(pgid, error = %io::Error::last_os_error(), "cannot kill the process group");
    }
}

/// The events received so far.
#[derive(Default)]
struct Collected {
    status: Option<io::Result<ExitStatus>>,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
}

impl Collected {
    fn complete(&self) -> bool {
        self.status.is_some() && self.stdout.is_some() && self.stderr.is_some()
    }

    /// Receives events until the process has exited and both pipes are closed (true) or the
    /// deadline passes (false).
    fn gather(&mut self, rx: &Receiver<Event>, deadline: Instant) -> bool {
        while !self.complete() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Event::Exited(status)) => self.status = Some(status),
                Ok(Event::Stdout(capture)) => self.stdout = Some(capture),
                Ok(Event::Stderr(capture)) => self.stderr = Some(capture),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return self.complete(),
            }
        }
        true
    }

    fn finish(self, timed_out: bool, cap: usize) -> ProcessOutput {
        let status = self.status.and_then(Result::ok);
        let (stdout, stdout_dropped) = capped_text(&self.stdout.unwrap_or_default(), cap);
        let (mut stderr, mut stderr_dropped) = capped_text(&self.stderr.unwrap_or_default(), cap);
        if stdout_dropped + stderr_dropped > 0 {
            // Make room so stderr with its notes still fits in the cap.
            stderr_dropped += truncate_at_char(&mut stderr, cap.saturating_sub(NOTE_ROOM)) as u64;
        }
        append_drop_note(&mut stderr, "stdout", stdout_dropped);
        append_drop_note(&mut stderr, "stderr", stderr_dropped);
        ProcessOutput {
            exit_code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stdout,
            stderr,
            timed_out,
        }
    }
}

/// Lossy UTF-8 text of a capture, cut to at most `cap` bytes, and how many bytes were dropped
/// (lossy decoding can grow invalid input, so the cut is made again on the text).
fn capped_text(capture: &Capture, cap: usize) -> (String, u64) {
    let mut text = String::from_utf8_lossy(&capture.kept).into_owned();
    let cut = truncate_at_char(&mut text, cap);
    (text, capture.dropped + cut as u64)
}

/// Cuts `text` to at most `max` bytes on a character boundary; returns how many bytes went.
pub fn truncate_at_char(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    cut
}

fn append_drop_note(stderr: &mut String, stream: &str, dropped: u64) {
    if dropped > 0 {
        stderr.push_str(&format!("\n[orange: {dropped} bytes of {stream} dropped]"));
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
        assert!(out.timed_out);
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
