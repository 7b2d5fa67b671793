//! The portable binary: it needs glibc 2.17 at most (read from its ELF version needs, a check
//! shown to catch the binary built for this host), it starts on Debian 11 where the host's
//! binary does not, and a real agent on Debian 11 enrolls with a real server and runs a task.

use std::process::Stdio;
use std::time::Duration;

use orange::protocol::TaskStatus;

use crate::artifacts::dist_dir;
use crate::debian11::Root;
use crate::elf::{self, MAX_GLIBC};
use crate::support::{BASE_SECRET, BIN, Server, ServerOpts, try_wait_until};

/// How long the agent in the root may take to be listed online.
const ONLINE_DEADLINE: Duration = Duration::from_secs(30);

/// The highest `GLIBC_` version the file at `path` needs.
fn highest_glibc(path: &std::path::Path) -> (String, Vec<u32>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let names = elf::needed_versions(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    elf::highest_glibc(&names)
        .unwrap_or_else(|| panic!("{} needs no GLIBC_ version: {names:?}", path.display()))
}

#[test]
fn the_portable_binary_needs_glibc_2_17_at_most() {
    let (name, numbers) = highest_glibc(&dist_dir().join("orange"));
    assert!(numbers.as_slice() <= MAX_GLIBC.as_slice(), "the portable binary needs {name}, newer than 2.17");
}

#[test]
fn the_glibc_check_catches_the_binary_built_for_this_host() {
    let (name, numbers) = highest_glibc(std::path::Path::new(BIN));
    assert!(
        numbers.as_slice() > MAX_GLIBC.as_slice(),
        "the host build needs only {name}: the check cannot fail"
    );
}

#[test]
fn a_truncated_or_foreign_file_is_an_error_not_a_panic() {
    let bytes = std::fs::read(dist_dir().join("orange")).expect("read the portable binary");
    for cut in [0, 5, 64, 4096] {
        assert!(elf::needed_versions(&bytes[..cut]).is_err(), "{cut} bytes of an ELF file were accepted");
    }
    assert!(elf::needed_versions(b"#!/bin/sh\necho not an ELF file\n").is_err());
    assert_eq!(elf::glibc_numbers("GLIBC_2.2.5"), Some(vec![2, 2, 5]));
    assert_eq!(elf::glibc_numbers("GLIBC_PRIVATE"), None);
}

#[test]
fn the_portable_binary_starts_on_debian_11_where_the_host_build_does_not() {
    let root = Root::copy();
    root.install(&dist_dir().join("orange"), "/orange");
    root.install(std::path::Path::new(BIN), "/orange-host");
    let version = root.run_ok(&["/orange", "--version"]);
    assert_eq!(version.trim(), format!("orange {}", env!("CARGO_PKG_VERSION")));
    let host = root.output(&["/orange-host", "--version"]);
    let stderr = String::from_utf8_lossy(&host.stderr);
    assert!(
        !host.status.success() && stderr.contains("GLIBC_2."),
        "the host build ran on Debian 11: {stderr}"
    );
}

#[test]
fn an_agent_on_debian_11_enrolls_and_runs_a_task_end_to_end() {
    let server = Server::start(ServerOpts::default());
    let mut root = Root::copy();
    root.mount_proc();
    root.install(&dist_dir().join("orange"), "/orange");
    let args = [
        "/orange",
        "agent",
        "--server",
        &server.url,
        "--appid",
        "debian11",
        "--state",
        "/var/lib/orange-agent",
        "--allow-shell",
    ];
    let log = root.host_path("/agent.log");
    let mut agent = root.spawn(None, &args, &[("ORANGE_ENROLL_KEY", BASE_SECRET)], Stdio::null(), &log);
    let online = try_wait_until(ONLINE_DEADLINE, || {
        agent.assert_running();
        server.agent("debian11").is_some_and(|a| a.online)
    });
    assert!(online, "the agent in Debian 11 was not online within {ONLINE_DEADLINE:?}\n{}", agent.stderr());

    let id = server.send_task("debian11", "shell", &[], "cat /etc/debian_version; ldd --version | head -n 1");
    let task = server.wait_task(&id, 30);
    assert_eq!(task.status, TaskStatus::Succeeded, "{task:?}\nagent:\n{}", agent.stderr());
    assert!(task.stdout.starts_with("11."), "the task did not run on Debian 11: {:?}", task.stdout);
    assert!(task.stdout.contains("2.31"), "the task did not see glibc 2.31: {:?}", task.stdout);
}
