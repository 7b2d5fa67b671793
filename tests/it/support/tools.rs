//! The tools besides cargo that some tests run (`openssl`, `systemd-analyze`, `promtool`),
//! found where `cargo xtask test` puts them: on the PATH, or in its cache directory. A missing
//! tool fails the test with the command that brings it; no test skips.

use std::path::{Path, PathBuf};

/// The path of `command`, or a panic naming the Debian `package` that has it and
/// `cargo xtask test`, which installs it.
pub fn tool(command: &str, package: &str) -> PathBuf {
    find(command).unwrap_or_else(|| {
        panic!(
            "{command} is missing (Debian package {package}): run the tests with `cargo xtask test`, \
             which brings it"
        )
    })
}

fn find(command: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(cache) = std::env::var_os("ORANGE_TEST_CACHE") {
        dirs.push(Path::new(&cache).join("bin"));
    }
    dirs.push(PathBuf::from("/var/cache/orange-test/bin"));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/orange-test/bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter().map(|dir| dir.join(command)).find(|candidate| candidate.is_file())
}
