//! Child processes: their command lines, the files their stderr goes to, signals and exits,
//! secret files to hand them, and what /proc says about a process.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::mpsc;
use std::time::Duration;

use super::{START_DEADLINE, try_wait_until};

/// Environment variables of orange (and the proxy variables it reads) that must not leak from
/// the developer's shell into children.
const ORANGE_ENV: &[&str] = &[
    "ORANGE_PROXY",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "ORANGE_SERVER",
    "ORANGE_TOKEN",
    "ORANGE_SECRET",
    "ORANGE_ADMIN_TOKEN",
    "ORANGE_ENROLL_KEY",
    "ORANGE_ENROLL_TOKEN",
    "ORANGE_CA_FILE",
    "ORANGE_INSECURE",
    "ORANGE_PROFILE",
    "ORANGE_LOG",
    "RUST_LOG",
];

/// Writes `secret` to `dir/name`, readable by its owner only, and returns the path: how a test
/// hands a secret to a child without putting it on argv, where `ps` shows it.
pub fn write_secret(dir: &Path, name: &str, secret: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, secret).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    path
}

/// Removes orange's environment variables so a child sees only what the test gives it.
pub(super) fn clean_env(cmd: &mut Command) {
    for name in ORANGE_ENV {
        cmd.env_remove(name);
    }
}

/// A printable form of a command line.
pub(super) fn show_command(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&shell_quote(&arg.to_string_lossy()));
    }
    line
}

fn shell_quote(arg: &str) -> String {
    if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c)) {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Opens (appending) the file a child's stderr goes to, after writing a header naming the command.
pub(super) fn log_file(path: &Path, header: &str) -> File {
    let mut file = OpenOptions::new().create(true).append(true).open(path).expect("open child log");
    writeln!(file, "=== {header}").expect("write child log header");
    file
}

/// The text of a child's log file, empty if it does not exist yet.
pub(super) fn read_log(path: &Path) -> String {
    std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}

/// Sends `signal` to `child` unless it already exited.
pub(super) fn signal(child: &mut Child, signal: libc::c_int) {
    if matches!(child.try_wait(), Ok(None)) {
        // SAFETY: kill(2) with the pid of a child we own and have not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }
}

/// Waits up to `timeout` for `child` to exit.
pub(super) fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let mut status = None;
    try_wait_until(timeout, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    status
}

/// The lines `stdout` prints, on a channel, the first being the server's listening line; the
/// pipe is drained to its end so the child never blocks on a full pipe.
pub fn stdout_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Every line is sent (the first is the listening line; a test may read the ones after
        // it); once the receiver is gone, the rest is only drained.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits up to [`START_DEADLINE`] for a server's listening line (`orange server listening on
/// http://ADDR`), the first of `lines`, and returns the URL it names and its address.
pub fn listening_line(lines: &mpsc::Receiver<String>) -> Result<(String, SocketAddr), String> {
    let line = lines.recv_timeout(START_DEADLINE).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => format!("no listening line within {START_DEADLINE:?}"),
        mpsc::RecvTimeoutError::Disconnected => "stdout closed without a listening line".into(),
    })?;
    let url = line.strip_prefix("orange server listening on ").unwrap_or_default().trim();
    let addr = url.split_once("://").and_then(|(_, a)| a.parse::<SocketAddr>().ok());
    let addr = addr.ok_or_else(|| format!("unexpected first stdout line {line:?}"))?;
    Ok((url.to_owned(), addr))
}

/// SIGKILLs and reaps `child`.
pub(super) fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `VmRSS` of process `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// True while process `pid` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills the process with this id (SIGKILL) when dropped, if it still exists: cleans up a process
/// a killed agent left behind, also when the test fails.
pub struct KillOnDrop(pub u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if process_alive(self.0) {
            // SAFETY: kill(2) on a pid read from a marker file written by a task of this test.
            unsafe { libc::kill(self.0 as libc::pid_t, libc::SIGKILL) };
        }
    }
}
