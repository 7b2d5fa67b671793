//! Project tasks, run as `cargo xtask TASK`:
//!
//! - `test [ARGS...]`: installs the tools the tests run when they are missing (see [`tools`]),
//!   then runs `cargo test --locked ARGS...` with `ORANGE_TEST_CACHE` naming where the cached
//!   tools are. A test never skips because a tool is absent: it fails and names this command.

mod tools;

use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((task, rest)) if task == "test" => test(rest),
        _ => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo xtask test [CARGO TEST ARGS...]";

/// Brings every tool the tests need, then runs the tests with `extra` passed to `cargo test`.
fn test(extra: &[String]) -> Result<(), String> {
    let cache = tools::cache_dir()?;
    tools::ensure_all(&cache)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["test", "--locked"])
        .args(extra)
        .env(tools::CACHE_ENV, &cache)
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo test failed ({status})")) }
}
