//! A throwaway Debian 11 root: a copy of the cached one (so that the cache stays as debootstrap
//! made it), with /proc mounted on request, commands run in it with chroot, and children that
//! are killed before /proc is unmounted and the copy removed, also when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

use crate::artifacts::bullseye_root;

/// The PATH inside the root: Debian's default for root.
const DEBIAN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A copy of the Debian 11 root, removed on drop.
pub struct Root {
    /// The copy; taken out on drop only to be kept when /proc cannot be unmounted.
    dir: Option<TempDir>,
    proc_mounted: bool,
}

impl Root {
    /// Copies the cached root (about 200 MB; `cp -a`, a second or two).
    pub fn copy() -> Root {
        let dir = TempDir::with_prefix("orange-debian11-").expect("create temp dir");
        let cached = bullseye_root();
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(cached.join("."))
            .arg(dir.path())
            .status()
            .expect("run cp");
        assert!(status.success(), "cp -a {} {} failed ({status})", cached.display(), dir.path().display());
        assert!(
            std::fs::read_to_string(dir.path().join("etc/debian_version"))
                .is_ok_and(|v| v.starts_with("11.")),
            "{} is not a Debian 11 root",
            cached.display()
        );
        Root { dir: Some(dir), proc_mounted: false }
    }

    /// The root's directory on the host.
    pub fn path(&self) -> &Path {
        // Only drop takes the directory out.
        self.dir.as_ref().expect("the root exists until dropped").path()
    }

    /// The host path of `inside` (an absolute path in the root).
    pub fn host_path(&self, inside: &str) -> PathBuf {
        self.path().join(inside.trim_start_matches('/'))
    }

    /// Mounts /proc in the root (unmounted on drop).
    pub fn mount_proc(&mut self) {
        let status = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(self.host_path("/proc"))
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t proc in {} failed ({status})", self.path().display());
        self.proc_mounted = true;
    }

    /// Copies the host file `from` to `inside` in the root, executable.
    pub fn install(&self, from: &Path, inside: &str) {
        let to = self.host_path(inside);
        std::fs::copy(from, &to)
            .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    }

    /// `chroot ROOT ARGS...` with a clean environment (Debian's PATH, C locale) plus `env`.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        self.command_as(None, args, env)
    }

    /// [`Root::command`] run as `userspec` (`UID:GID`) when given.
    fn command_as(&self, userspec: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new("chroot");
        if let Some(userspec) = userspec {
            cmd.arg("--userspec").arg(userspec);
        }
        cmd.arg(self.path()).args(args).env_clear().env("PATH", DEBIAN_PATH).env("LANG", "C");
        cmd.envs(env.iter().copied());
        cmd
    }

    /// Runs `args` in the root to its end (stdin empty) and returns what it printed.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args, &[])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("chroot {args:?}: {e}"))
    }

    /// Runs `args` in the root, asserts it succeeds and returns its standard output.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(out.status.success(), "in Debian 11: {args:?} failed ({})\n{}", out.status, show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the root, as `userspec` (`UID:GID`) when given, its stderr going to
    /// `log`; the child is killed when the returned guard drops.
    pub fn spawn(
        &self,
        userspec: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
        stdout: Stdio,
        log: &Path,
    ) -> RootChild {
        let log_file = std::fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let child = self
            .command_as(userspec, args, env)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("chroot {args:?}: {e}"));
        RootChild { child, log: log.to_owned(), what: format!("{args:?}") }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if self.proc_mounted {
            // Lazy: a process of a failed test may still hold it; it goes once that one ends.
            let status = Command::new("umount").arg("--lazy").arg(self.host_path("/proc")).status();
            if !status.as_ref().is_ok_and(|s| s.success()) {
                eprintln!("umount {} failed: {status:?}", self.host_path("/proc").display());
                // Keep the copy rather than remove files through a mounted /proc.
                std::mem::forget(self.dir.take());
            }
        }
    }
}

/// A process started in a [`Root`]: SIGKILLed and reaped on drop, its stderr printed if the test
/// is failing. Declare it after its `Root`, so that it drops first.
pub struct RootChild {
    /// The chroot process (chroot execs the command, so this is the command itself).
    pub child: Child,
    log: PathBuf,
    what: String,
}

impl RootChild {
    /// Everything it wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }

    /// Panics with its stderr if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}\nstderr:\n{}", self.what, self.stderr());
        }
    }
}

impl Drop for RootChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- stderr of {} in Debian 11 -----\n{}", self.what, self.stderr());
        }
    }
}

/// The status, stdout and stderr of `out`, for a failure message.
pub fn show(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
