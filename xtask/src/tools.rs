//! The tools the tests run besides cargo, and how each is brought when missing: a Debian package
//! installed with apt, or one binary taken out of a Debian package's archive into the cache
//! directory (so that nothing else of the package, such as a service, is installed).
//!
//! The cache directory is `/var/cache/orange-test` (or `ORANGE_TEST_CACHE`, or
//! `~/.cache/orange-test` when `/var/cache` is not writable); it lives outside the checkout, so a
//! machine pays for a download once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The environment variable naming the cache directory, read by the tests to find cached tools.
pub const CACHE_ENV: &str = "ORANGE_TEST_CACHE";

/// How a missing tool is brought.
enum Source {
    /// `apt-get install PACKAGE`: the tool lands on the PATH.
    Apt(&'static str),
    /// The file at `path` inside Debian package `package`, copied to `CACHE/bin/`.
    FromPackage { package: &'static str, path: &'static str },
}

/// One command the tests run.
struct Tool {
    command: &'static str,
    what_for: &'static str,
    source: Source,
}

const TOOLS: &[Tool] = &[
    Tool { command: "openssl", what_for: "the HTTPS tests make a test CA", source: Source::Apt("openssl") },
    Tool {
        command: "systemd-analyze",
        what_for: "the unit files are checked with `systemd-analyze verify`",
        source: Source::Apt("systemd"),
    },
    Tool {
        command: "chromium",
        what_for: "the web console is tested in a browser",
        source: Source::Apt("chromium"),
    },
    Tool {
        command: "chromedriver",
        what_for: "the browser is driven through WebDriver",
        source: Source::Apt("chromium-driver"),
    },
    Tool {
        command: "promtool",
        what_for: "the metrics exposition is checked with `promtool check metrics`",
        source: Source::FromPackage { package: "prometheus", path: "usr/bin/promtool" },
    },
    Tool {
        command: "bash",
        what_for: "the bash completion script is loaded and driven",
        source: Source::Apt("bash"),
    },
    Tool {
        command: "zsh",
        what_for: "the zsh completion script is loaded by zsh",
        source: Source::Apt("zsh"),
    },
    Tool {
        command: "fish",
        what_for: "the fish completion script is asked for completions",
        source: Source::Apt("fish"),
    },
    Tool {
        command: "man",
        what_for: "the manual page is rendered with `man -l`",
        source: Source::Apt("man-db"),
    },
    Tool {
        command: "initdb",
        what_for: "the store's tests start a PostgreSQL server of their own",
        source: Source::Apt("postgresql"),
    },
    Tool {
        command: "debootstrap",
        what_for: "the release artifacts are tested in a Debian 11 root it makes",
        source: Source::Apt("debootstrap"),
    },
];

/// The cache directory, created if missing.
pub fn cache_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(CACHE_ENV) {
        let dir = PathBuf::from(dir);
        std::fs::create_dir_all(dir.join("bin"))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        return Ok(dir);
    }
    let system = PathBuf::from("/var/cache/orange-test");
    if std::fs::create_dir_all(system.join("bin")).is_ok() {
        return Ok(system);
    }
    let home = std::env::var_os("HOME").ok_or("neither /var/cache/orange-test nor HOME is usable")?;
    let user = Path::new(&home).join(".cache/orange-test");
    std::fs::create_dir_all(user.join("bin"))
        .map_err(|e| format!("cannot create {}: {e}", user.display()))?;
    Ok(user)
}

/// Brings every missing tool: one `apt-get install` for the packaged ones, then the extracted
/// ones one by one.
pub fn ensure_all(cache: &Path) -> Result<(), String> {
    let missing: Vec<&Tool> = TOOLS.iter().filter(|t| !is_present(t, cache)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    for tool in &missing {
        eprintln!("xtask: {} is missing ({}); bringing it", tool.command, tool.what_for);
    }
    apt_update()?;
    let packages: Vec<&str> = missing
        .iter()
        .filter_map(|t| match t.source {
            Source::Apt(package) => Some(package),
            Source::FromPackage { .. } => None,
        })
        .collect();
    if !packages.is_empty() {
        install(&packages)?;
    }
    for tool in &missing {
        if let Source::FromPackage { package, path } = tool.source {
            extract(package, path, &cache.join("bin").join(tool.command))?;
        }
    }
    match missing.iter().find(|t| !is_present(t, cache)) {
        Some(tool) => Err(format!("{} is still missing after installing it", tool.command)),
        None => Ok(()),
    }
}

/// Whether `tool` runs from the PATH or sits in the cache.
fn is_present(tool: &Tool, cache: &Path) -> bool {
    cache.join("bin").join(tool.command).is_file() || on_path(tool.command)
}

/// Whether `command` is on the PATH, or among the PostgreSQL server binaries, which Debian keeps
/// off the PATH in `/usr/lib/postgresql/VERSION/bin`.
fn on_path(command: &str) -> bool {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|path| std::env::split_paths(&path).collect()).unwrap_or_default();
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        dirs.extend(versions.flatten().map(|version| version.path().join("bin")));
    }
    dirs.iter().any(|dir| dir.join(command).is_file())
}

/// Downloads Debian package `package` and copies its file `path` to `target`, executable.
fn extract(package: &str, path: &str, target: &Path) -> Result<(), String> {
    let work = target.with_extension("download");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    let mut download = Command::new("apt-get");
    if is_root() {
        // apt's download user cannot write into a directory of root's; root downloads itself.
        download.args(["-o", "APT::Sandbox::User=root"]);
    }
    run(download.args(["download", "-qq", package]).current_dir(&work))?;
    let deb = std::fs::read_dir(&work)
        .map_err(|e| format!("cannot read {}: {e}", work.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {package} left no .deb"))?;
    let unpacked = work.join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let partial = target.with_extension("partial");
    std::fs::copy(unpacked.join(path), &partial).map_err(|e| format!("{package} has no {path}: {e}"))?;
    std::fs::rename(&partial, target).map_err(|e| format!("cannot place {}: {e}", target.display()))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Installs Debian `packages` with apt, refreshing its package lists first.
pub fn apt_install(packages: &[&str]) -> Result<(), String> {
    apt_update()?;
    install(packages)
}

fn install(packages: &[&str]) -> Result<(), String> {
    run(apt("apt-get").args(["install", "-y", "-qq", "--no-install-recommends"]).args(packages))
}

/// Refreshes apt's package lists (a fresh machine has none), once a run.
fn apt_update() -> Result<(), String> {
    static UPDATED: OnceLock<Result<(), String>> = OnceLock::new();
    UPDATED.get_or_init(|| run(apt("apt-get").args(["update", "-qq"]))).clone()
}

/// `program` run as root: directly when this is root, else through sudo.
pub fn apt(program: &str) -> Command {
    if is_root() {
        let mut command = Command::new(program);
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    } else {
        let mut command = Command::new("sudo");
        command.args(["env", "DEBIAN_FRONTEND=noninteractive", program]);
        command
    }
}

/// Whether xtask runs as root, asked of `id -u` once.
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
    })
}

/// `cargo`: the one that runs xtask (`CARGO`), else the one on the PATH.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command`, failing with its command line and exit status unless it succeeds.
pub fn run(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    let status = command.status().map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{shown} failed ({status})")) }
}
