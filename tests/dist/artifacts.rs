//! Where the artifacts under test are: the directory `cargo xtask dist` filled and the cached
//! Debian 11 root, both named by `cargo xtask test` in the environment.

use std::path::PathBuf;

/// The artifacts directory (`ORANGE_DIST_DIR`); panics naming `cargo xtask test` if unset.
pub fn dist_dir() -> PathBuf {
    existing_dir("ORANGE_DIST_DIR", "the release artifacts (`cargo xtask dist`)")
}

/// The cached Debian 11 root (`ORANGE_TEST_BULLSEYE`); panics naming `cargo xtask test` if unset.
pub fn bullseye_root() -> PathBuf {
    existing_dir("ORANGE_TEST_BULLSEYE", "the Debian 11 root (debootstrap)")
}

/// The one file in the artifacts directory whose name ends with `suffix`.
pub fn dist_file(suffix: &str) -> PathBuf {
    let dir = dist_dir();
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    let found: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "one *{suffix} expected in {}, found {found:?}", dir.display());
    found.into_iter().next().expect("one file, asserted above")
}

fn existing_dir(variable: &str, what: &str) -> PathBuf {
    let dir = std::env::var_os(variable).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{variable} is not set: run the tests with `cargo xtask test`, which makes {what} first")
    });
    assert!(dir.is_dir(), "{variable}={} is not a directory: run `cargo xtask test`", dir.display());
    dir
}
