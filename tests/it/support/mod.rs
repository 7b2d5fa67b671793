//! Test harness: one server launcher ([`Server`]), one agent launcher ([`Agent`]) and one CLI
//! runner ([`Cli`](cli::Cli)), each starting the real `orange` binary as a child process with
//! its own temp dirs and an ephemeral port, killing it on drop, and on a failing test printing
//! its command and stderr. Secrets reach children through the environment or files, never
//! argv. Also a raw HTTP/1.1 client that writes requests byte for byte as Go's net/http does,
//! an independent implementation of both signatures, and the snapshot a refused request must
//! leave unchanged.

mod agent;
mod balancer;
mod browser;
mod cli;
mod go;
mod http;
pub mod postgres;
mod process;
mod server;
mod sim;
mod snapshot;
mod tools;

use std::time::{Duration, Instant};

pub use agent::{Agent, AgentOpts};
pub use balancer::Balancer;
pub use browser::Browser;
pub use cli::{Cli, LiveRun, Run, cli, cli_with};
pub use go::*;
pub use http::{Connection, ProxiedRequest, Proxy, RawResponse, http, raw_exchange};
pub use process::{KillOnDrop, listening_line, process_alive, rss_kib, stdout_lines, write_secret};
pub use server::{EnrollKey, Server, ServerOpts};
pub use sim::{SIM_SECRET, history, most_open_at_once, ms_between, queue_bulk, register_as, register_sim};
pub use snapshot::{Snapshot, assert_api_error, assert_refused, assert_unchanged};
pub use tools::tool;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_orange");
/// How long a child may take to print its listening line.
pub const START_DEADLINE: Duration = Duration::from_secs(15);
/// Default deadline of one CLI invocation.
pub const CLI_DEADLINE: Duration = Duration::from_secs(30);

/// Polls `cond` every 20 ms until it holds; panics naming `what` once `timeout` has passed.
pub fn wait_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(try_wait_until(timeout, cond), "timed out after {timeout:?} waiting for {what}");
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; says whether it held.
pub fn try_wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
