//! Project tasks, run as `cargo xtask TASK`:
//!
//! - `dist`: builds the release artifacts into `target/dist/` (see [`dist`]): a portable binary
//!   for glibc 2.17 and newer, a Debian package, a tarball and their `SHA256SUMS`.
//! - `test [ARGS...]`: installs the tools the tests run when they are missing (see [`tools`]),
//!   builds the artifacts, makes the Debian 11 root they are tested in (see [`chroot`]), then runs
//!   `cargo test --locked ARGS...` with `ORANGE_TEST_CACHE`, `ORANGE_DIST_DIR` and
//!   `ORANGE_TEST_BULLSEYE` naming where these are. A test never skips because a tool or an
//!   artifact is absent: it fails and names this command.

mod chroot;
mod dist;
mod elf;
mod toolchain;
mod tools;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.split_first() {
        Some((task, rest)) if task == "test" => test(rest),
        Some((task, [])) if task == "dist" => {
            tools::cache_dir().and_then(|cache| dist::dist(&cache)).map(drop)
        }
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

const USAGE: &str = "usage: cargo xtask test [CARGO TEST ARGS...] | cargo xtask dist";

/// Brings every tool and artifact the tests need, then runs the tests with `extra` passed to
/// `cargo test`.
fn test(extra: &[String]) -> Result<(), String> {
    let cache = tools::cache_dir()?;
    tools::ensure_all(&cache)?;
    let dist = dist::dist(&cache)?;
    let bullseye = chroot::ensure_bullseye(&cache)?;
    let status = tools::cargo()
        .args(["test", "--locked"])
        .args(extra)
        .env(tools::CACHE_ENV, &cache)
        .env(dist::DIST_ENV, &dist)
        .env(chroot::BULLSEYE_ENV, &bullseye)
        .status()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("cargo test failed ({status})")) }
}
