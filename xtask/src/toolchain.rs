//! The tools `cargo xtask dist` builds with, installed into the cache directory when missing and
//! never downloaded again: zig and cargo-zigbuild (Python packages, in the virtual environment
//! `CACHE/zig-venv`) link a binary against glibc 2.17; cargo-deb (`cargo install` into
//! `CACHE/cargo`) makes the Debian package.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{apt_install, cargo, run};

/// The Python packages of zig and cargo-zigbuild, pinned so that every machine links the same way.
const ZIG_PACKAGES: &[&str] = &["ziglang==0.17.1", "cargo-zigbuild==0.24.1"];
/// The cargo-deb release installed.
const CARGO_DEB_VERSION: &str = "3.8.0";
/// Written into the virtual environment once its packages are installed: a venv without it is
/// a broken earlier attempt and is made again.
const VENV_COMPLETE: &str = ".orange-complete";

/// Where the build tools are.
pub struct Toolchain {
    /// Directories to put first on the PATH: the venv's `bin` (cargo-zigbuild, and the `python3`
    /// that runs zig) and cargo-deb's.
    pub path_dirs: Vec<PathBuf>,
}

impl Toolchain {
    /// The PATH with the toolchain's directories first.
    pub fn path(&self) -> Result<std::ffi::OsString, String> {
        let current = std::env::var_os("PATH").unwrap_or_default();
        let dirs = self.path_dirs.iter().cloned().chain(std::env::split_paths(&current));
        std::env::join_paths(dirs).map_err(|e| format!("cannot build PATH: {e}"))
    }
}

/// Installs zig, cargo-zigbuild and cargo-deb into `cache` where missing.
pub fn ensure(cache: &Path) -> Result<Toolchain, String> {
    let venv = cache.join("zig-venv");
    if !venv.join(VENV_COMPLETE).is_file() {
        install_zig(&venv)?;
    }
    let cargo_root = cache.join("cargo");
    if !cargo_root.join("bin/cargo-deb").is_file() {
        install_cargo_deb(&cargo_root)?;
    }
    Ok(Toolchain { path_dirs: vec![venv.join("bin"), cargo_root.join("bin")] })
}

/// Makes the virtual environment `venv` and installs [`ZIG_PACKAGES`] into it.
fn install_zig(venv: &Path) -> Result<(), String> {
    eprintln!("xtask: installing zig and cargo-zigbuild into {}", venv.display());
    remove_dir(venv)?;
    if run(Command::new("python3").args(["-m", "venv"]).arg(venv)).is_err() {
        // Debian's python3 leaves the venv module's pip to a package of its own.
        remove_dir(venv)?;
        apt_install(&["python3-venv"])?;
        run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(ZIG_PACKAGES))?;
    std::fs::write(venv.join(VENV_COMPLETE), ZIG_PACKAGES.join("\n"))
        .map_err(|e| format!("cannot mark {} complete: {e}", venv.display()))
}

/// `cargo install cargo-deb` into `root` (a build of a few minutes, once per machine).
fn install_cargo_deb(root: &Path) -> Result<(), String> {
    eprintln!("xtask: installing cargo-deb {CARGO_DEB_VERSION} into {}", root.display());
    run(cargo()
        .args(["install", "--locked", "--quiet", "cargo-deb", "--version", CARGO_DEB_VERSION, "--root"])
        .arg(root))
}

fn remove_dir(dir: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("cannot remove {}: {e}", dir.display()))
        }
        _ => Ok(()),
    }
}
