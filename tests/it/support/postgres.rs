//! A PostgreSQL server for tests, started from the installed server binaries
//! (`/usr/lib/postgresql/*/bin`, Debian package `postgresql`): `initdb` into a temporary
//! directory, then `postgres` listening only on a Unix socket in that directory, run as the
//! `postgres` user when the tests run as root (PostgreSQL refuses root). One server per test
//! process, started by the first test that asks; it dies with the process (its parent-death
//! signal is SIGKILL, set by the thread that started it, which lives as long as the process),
//! and the next process removes what is left of it. Each test gets a database of its own.
//!
//! [`start_tls`] starts another server, for a test of its own: TLS only, on a loopback TCP port.
//!
//! This file is shared by the library's unit tests and the integration tests (`#[path]`), so
//! it uses only the standard library and the crate's own dependencies.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates; tests connect as this user.
pub const PG_USER: &str = "orange";

/// Prefix of the temporary directories of test servers under the system's temp directory.
const DIR_PREFIX: &str = "orange-test-pg-";

/// How long the server may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// The running test server.
pub struct Cluster {
    /// The directory holding the data directory and the server's socket.
    dir: PathBuf,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The test process's server, started on first use; a panic naming what is missing if it
/// cannot start.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(|| on_own_thread(start)) {
        Ok(cluster) => cluster,
        Err(message) => panic!("{message}"),
    }
}

impl Cluster {
    /// The directory of the server's Unix socket (the `host` to connect to).
    #[allow(dead_code)] // used by the library's unit tests, which share this file
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A URL for database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://{PG_USER}@{}/{name}", percent_encode_path(&self.dir))
    }

    /// Creates a new, empty database and returns its name.
    pub fn create_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("orange_test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        on_own_thread(|| {
            let mut admin = self.connect("postgres");
            admin.batch_execute(&format!("CREATE DATABASE {name}")).expect("create a test database");
        });
        name
    }

    /// A connection to database `name`, for tests that look at the tables themselves. The
    /// synchronous client runs a runtime of its own: call it off any async runtime's threads
    /// (e.g. through [`on_own_thread`]).
    pub fn connect(&self, name: &str) -> postgres::Client {
        postgres::Config::new()
            .host_path(&self.dir)
            .user(PG_USER)
            .dbname(name)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| {
                panic!("cannot connect to the test PostgreSQL in {}: {e}", self.dir.display())
            })
    }
}

/// Runs `f` on a thread of its own: the synchronous client may not run on an async runtime's
/// thread, and a test may call from one.
pub fn on_own_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// The directory of the newest installed PostgreSQL server binaries.
fn binaries() -> Result<PathBuf, String> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        "the PostgreSQL server is missing (Debian package postgresql): run the tests with \
         `cargo xtask test`, which brings it"
            .to_owned()
    })
}

/// Whom the server runs as: the `postgres` user when this process is root, else this process.
fn server_user() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| format!("cannot look up the postgres user: {e}"))?
        .ok_or("running as root, the test PostgreSQL needs the `postgres` user (package postgresql)")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn start() -> Result<Cluster, String> {
    let bin = binaries()?;
    let user = server_user()?;
    remove_leftovers();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
    let data = init(&bin, user, &dir)?;
    spawn_server(&bin, user, &dir, &data, &[])?;
    wait_until_ready(&dir, DEFAULT_PORT)?;
    Ok(Cluster { dir })
}

/// The port of the default server (its socket's name carries it).
const DEFAULT_PORT: u16 = 5432;

/// A test server speaking TLS only, on a loopback TCP port.
#[allow(dead_code)] // used by the integration tests only, which share this file
pub struct TlsCluster {
    /// The port it listens on, at 127.0.0.1.
    pub port: u16,
}

#[allow(dead_code)] // used by the integration tests only, which share this file
impl TlsCluster {
    /// A URL for its `postgres` database over TCP, with `query` (like `sslmode=require`).
    pub fn url(&self, query: &str) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/postgres?{query}", self.port)
    }
}

/// Starts a new server (apart from [`cluster`]'s, living as long as the process) that listens on
/// a free loopback TCP port with `ssl=on`, the certificate `cert` and key `key` (PEM files), and
/// a `pg_hba.conf` that takes TLS connections from 127.0.0.1 and refuses plain ones.
#[allow(dead_code)] // used by the integration tests only, which share this file
pub fn start_tls(cert: &Path, key: &Path) -> Result<TlsCluster, String> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let bin = binaries()?;
    let user = server_user()?;
    let dir = std::env::temp_dir().join(format!(
        "{DIR_PREFIX}{}-tls-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let data = init(&bin, user, &dir)?;
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 reject\n";
    std::fs::write(data.join("pg_hba.conf"), hba).map_err(|e| format!("cannot write pg_hba.conf: {e}"))?;
    for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
        let copy = data.join(to);
        std::fs::copy(from, &copy).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        // PostgreSQL refuses a key that others may read, or that it does not own.
        std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| format!("cannot chmod {}: {e}", copy.display()))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&copy, Some(uid), Some(gid))
                .map_err(|e| format!("cannot chown {}: {e}", copy.display()))?;
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    let settings = [
        "listen_addresses=127.0.0.1".to_owned(),
        format!("port={port}"),
        "ssl=on".to_owned(),
        "ssl_cert_file=server.crt".to_owned(),
        "ssl_key_file=server.key".to_owned(),
    ];
    spawn_server(&bin, user, &dir, &data, &settings)?;
    wait_until_ready(&dir, port)?;
    Ok(TlsCluster { port })
}

/// Makes `dir` (owned by `user`) and a new database cluster in `dir/data`; returns the latter.
fn init(bin: &Path, user: Option<(u32, u32)>, dir: &Path) -> Result<PathBuf, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| format!("cannot chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let initdb = as_user(Command::new(bin.join("initdb")), user)
        .args(["-D"])
        .arg(&data)
        .args(["-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync", "--locale=C"])
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
    if !initdb.status.success() {
        return Err(format!("initdb failed: {}", String::from_utf8_lossy(&initdb.stderr)));
    }
    Ok(data)
}

/// Starts the server from a thread that lives as long as the process, so that the server's
/// parent-death signal (sent when the thread that started it ends) fires only when the process
/// ends. `settings` (`name=value`) come after, and so override, the defaults.
fn spawn_server(
    bin: &Path,
    user: Option<(u32, u32)>,
    dir: &Path,
    data: &Path,
    settings: &[String],
) -> Result<(), String> {
    let mut command = as_user(Command::new(bin.join("postgres")), user);
    command
        .arg("-D")
        .arg(data)
        .arg("-k")
        .arg(dir)
        .args(["-c", "listen_addresses=", "-c", "max_connections=300", "-c", "fsync=off"])
        .args([
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=64MB",
            "-c",
            "dynamic_shared_memory_type=mmap",
        ])
        .args(settings.iter().flat_map(|setting| ["-c", setting.as_str()]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("server.log"))
                .map_err(|e| format!("cannot create the server log: {e}"))?,
        ));
    // SAFETY: prctl only sets this child's parent-death signal; it runs after the fork and the
    // change of user (which would clear it), before exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("test-postgres".into())
        .spawn(move || match command.spawn() {
            Ok(mut child) => {
                let _ = started_tx.send(Ok(()));
                let _ = child.wait();
            }
            Err(e) => {
                let _ = started_tx.send(Err(format!("cannot start postgres: {e}")));
            }
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).map_err(|e| e.to_string())?;
    started_rx.recv().map_err(|e| e.to_string())?
}

fn wait_until_ready(dir: &Path, port: u16) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let attempt = postgres::Config::new()
            .host_path(dir)
            .port(port)
            .user(PG_USER)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(2))
            .connect(postgres::NoTls);
        match attempt {
            Ok(_) => return Ok(()),
            Err(e) if started.elapsed() > START_DEADLINE => {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                return Err(format!("the test PostgreSQL did not start: {e}\n{log}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// `command`, run as `user` (uid, gid) if given.
fn as_user(mut command: Command, user: Option<(u32, u32)>) -> Command {
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
    command
}

/// Removes the directories of test servers whose process has ended.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner.pid")).ok();
        let alive = owner
            .and_then(|pid| pid.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A path as the host part of a URL.
fn percent_encode_path(path: &Path) -> String {
    path.to_string_lossy().bytes().fold(String::new(), |mut out, byte| {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
        out
    })
}
