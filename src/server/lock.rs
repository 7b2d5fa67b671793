//! One server per data directory: [`DataDirLock`] holds an exclusive `flock` on `DIR/lock`, with
//! the holder's pid written in it, for as long as the server runs. It is taken before the
//! database is opened, so a second server on the same directory stops at once with one line
//! naming the directory and the holder, before it touches the database or announces anything.
//! The kernel drops the lock when the process ends, however it ends, so a crash leaves no stale
//! lock behind.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "lock";

/// Most bytes of the lock file read back for the holder's pid.
const MAX_PID_TEXT: u64 = 32;

/// Why the data directory could not be locked.
#[derive(Debug, Error)]
pub enum LockError {
    /// Another process holds the lock: another orange server uses the directory.
    #[error("data directory {} is in use by another orange server ({})", dir.display(), holder(*pid))]
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, when its lock file names one.
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock the data directory {}: {what}: {source}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// The exclusive lock on a data directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    /// The open lock file: closing it releases the lock.
    _file: File,
}

impl DataDirLock {
    /// Locks `dir` (which must exist) for this process and writes its pid into the lock file;
    /// fails with [`LockError::InUse`] at once if another process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |what| move |source| LockError::Io { dir: dir.to_owned(), what, source };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(io("open the lock file"))?;
        // SAFETY: flock(2) on a file descriptor that `file` keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::WouldBlock {
                return Err(LockError::InUse { dir: dir.to_owned(), pid: read_pid(&mut file) });
            }
            return Err(io("lock the lock file")(error));
        }
        write_pid(&mut file, std::process::id()).map_err(io("write the pid into the lock file"))?;
        Ok(DataDirLock { _file: file })
    }
}

/// Replaces the lock file's contents with `pid` and a newline.
fn write_pid(file: &mut File, pid: u32) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(format!("{pid}\n").as_bytes())
}

/// The pid the holder wrote, if the file names one (it may not have written it yet).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(MAX_PID_TEXT).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_held_directory_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks belong to the open file, so a second open in this process is refused too.
        let error = DataDirLock::acquire(dir.path()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "data directory {} is in use by another orange server (pid {})",
                dir.path().display(),
                std::process::id()
            )
        );
        drop(held);
        DataDirLock::acquire(dir.path()).expect("free again once the holder is gone");
    }

    #[test]
    fn a_holder_that_wrote_no_pid_yet_is_named_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let held = File::create(dir.path().join(LOCK_FILE)).unwrap();
        // SAFETY: flock(2) on a file descriptor `held` keeps open.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
        let error = DataDirLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(error, LockError::InUse { pid: None, .. }), "{error:?}");
        assert!(error.to_string().ends_with("(pid unknown)"), "{error}");
    }

    #[test]
    fn a_stale_pid_left_by_a_dead_holder_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "4194999999\n").unwrap();
        let _held = DataDirLock::acquire(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
    }
}
