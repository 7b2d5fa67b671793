//! The real processes a scenario drives: the release `orange server` and `orange agent`
//! binaries, started with their own data and state directories and killed (by their own pid)
//! when their guard is dropped, even on error; and what `/proc` says about them.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The binary under test: the one cargo built next to this bench (release profile), unless
/// [`BIN_VAR`] names another (to compare two builds with one load generator).
pub fn bin() -> String {
    std::env::var(BIN_VAR).unwrap_or_else(|_| env!("CARGO_BIN_EXE_orange").to_owned())
}
/// The environment variable that names another `orange` binary to run.
pub const BIN_VAR: &str = "LOADGEN_ORANGE";
/// The admin token every scenario's server uses (given through the environment, not argv).
pub const ADMIN_TOKEN: &str = "loadgen-admin-token-0123456789abcdef";
/// The enrollment key simulated and real agents enroll with.
pub const ENROLL_KEY: &str = "loadgen-enroll-key-0123456789abcdef";
/// How long a server may take to print its listening line.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A running `orange server`, killed on drop.
pub struct ServerProc {
    child: Child,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data: PathBuf,
}

impl ServerProc {
    /// Starts a server on `data` on a free loopback port and waits for its listening line.
    pub fn start(data: &Path, extra: &[String]) -> Result<ServerProc> {
        let started = Self::spawn(data, "127.0.0.1:0", extra)?;
        let (child, line) = started;
        let mut server = ServerProc { child, addr: "127.0.0.1:0".parse()?, data: data.to_owned() };
        let line = line.recv_timeout(START_DEADLINE).map_err(|_| anyhow!("no listening line"))?;
        let addr = line
            .strip_prefix("orange server listening on http://")
            .ok_or_else(|| anyhow!("unexpected first line {line:?}"))?;
        server.addr = addr.trim().parse().with_context(|| format!("bad address {addr:?}"))?;
        Ok(server)
    }

    /// Starts a server on `data` listening on `addr` without waiting for it; the caller
    /// measures when it serves.
    pub fn start_on(data: &Path, addr: SocketAddr, extra: &[String]) -> Result<ServerProc> {
        let (child, _line) = Self::spawn(data, &addr.to_string(), extra)?;
        Ok(ServerProc { child, addr, data: data.to_owned() })
    }

    fn spawn(data: &Path, listen: &str, extra: &[String]) -> Result<(Child, mpsc::Receiver<String>)> {
        std::fs::create_dir_all(data).context("cannot create the data directory")?;
        let key_file = data.with_extension("enroll.key");
        std::fs::write(&key_file, ENROLL_KEY).context("cannot write the enrollment key file")?;
        let log = std::fs::File::create(data.with_extension("server.log")).context("cannot create log")?;
        let mut child = Command::new(bin())
            .args(["server", "--data"])
            .arg(data)
            .args(["--listen", listen, "--enroll-key-file"])
            .arg(&key_file)
            .args(extra)
            .env("ORANGE_ADMIN_TOKEN", ADMIN_TOKEN)
            // Compactions are logged at info: `throughput --compact-at` reports them.
            .env("ORANGE_LOG", "warn,orange::server::store::compact=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} server", bin()))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Ok((child, rx))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines of the server's log (its stderr) so far that contain `what`.
    pub fn log_lines(&self, what: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.data.with_extension("server.log")).unwrap_or_default();
        text.lines().filter(|l| l.contains(what)).map(str::to_owned).collect()
    }

    /// Sends SIGUSR1, which asks the server to compact its database now.
    pub fn compact_now(&self) {
        signal(self.child.id(), libc::SIGUSR1);
    }

    /// The server's log so far (its stderr), for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.with_extension("server.log")).unwrap_or_default();
        text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops it with SIGTERM and waits (bounded) for it to exit.
    pub fn stop(mut self) -> Result<()> {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("server {} did not stop within 30 s", self.child.id())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The servers of one scenario: one on its data directory, or several sharing one PostgreSQL
/// database (`--store`), each with a data directory of its own; each killed on drop.
pub struct Servers {
    /// The servers, in the order they started (server 0 first: it migrated the database).
    pub procs: Vec<ServerProc>,
    /// How the report names where they keep the fleet.
    pub store: String,
}

impl Servers {
    /// Starts `count` servers one after the other with the same `extra` flags, each on a free
    /// loopback port: server 0 on data directory `first`, server `i` on `first` with `i` appended
    /// to its name.
    pub fn start(first: &Path, count: usize, store: String, extra: &[String]) -> Result<Servers> {
        let data = |i: usize| match i {
            0 => first.to_owned(),
            i => first
                .with_file_name(format!("{}{i}", first.file_name().unwrap_or_default().to_string_lossy())),
        };
        let procs = (0..count.max(1)).map(|i| ServerProc::start(&data(i), extra)).collect::<Result<_>>()?;
        Ok(Servers { procs, store })
    }

    /// The server agent or enqueuer `i` talks to: `i` round robin over the servers.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.procs[i % self.procs.len()].addr
    }

    /// Every server's address, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.procs.iter().map(|s| s.addr).collect()
    }

    /// Server 0, the one a scenario with a single server uses.
    pub fn first(&self) -> &ServerProc {
        &self.procs[0]
    }

    /// Every server's CPU time so far, in order.
    pub fn cpu_times(&self) -> Result<Vec<Duration>> {
        self.procs.iter().map(|s| cpu_time(s.pid())).collect()
    }

    /// The line under a scenario's heading: the store and the number of servers.
    pub fn describe(&self) -> String {
        let count = self.procs.len();
        format!("Store: {}; {count} server{}.", self.store, if count == 1 { "" } else { "s" })
    }

    /// The tail of every server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let tails = self.procs.iter().enumerate().map(|(i, s)| format!("server {i}:\n{}", s.log_tail()));
        tails.collect::<Vec<_>>().join("\n")
    }

    /// Stops every server with SIGTERM (see [`ServerProc::stop`]).
    pub fn stop(self) -> Result<()> {
        self.procs.into_iter().try_for_each(ServerProc::stop)
    }
}

/// A running real `orange agent`, killed on drop.
pub struct AgentProc {
    child: Child,
}

impl AgentProc {
    /// Starts `orange agent --appid APP_ID --allow-shell` against `server`, state under `state`.
    pub fn start(server: SocketAddr, app_id: &str, state: &Path) -> Result<AgentProc> {
        let log = std::fs::File::create(state.with_extension("agent.log")).context("cannot create log")?;
        let child = Command::new(bin())
            .args(["agent", "--appid", app_id, "--allow-shell", "--state"])
            .arg(state)
            .env("ORANGE_SERVER", format!("http://{server}"))
            .env("ORANGE_ENROLL_KEY", ENROLL_KEY)
            .env("ORANGE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {} agent", bin()))?;
        Ok(AgentProc { child })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) on a child this process started and has not reaped yet.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn kill(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A free loopback address (bound, then released) for a server whose start is timed.
pub fn free_addr() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind a probe port")?;
    listener.local_addr().context("cannot read the probe port")
}

/// CPU time a process has used (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("cannot read /proc stat")?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or_else(|| anyhow!("bad stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields
        .get(11..13)
        .ok_or_else(|| anyhow!("short stat"))?
        .iter()
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100).max(1);
    Ok(Duration::from_millis(ticks * 1000 / per_sec))
}

/// Memory of a process from `/proc/PID/status`, in KiB: (VmRSS, VmHWM).
pub fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("cannot read /proc status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Total size of the files under `dir`, in bytes.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}
