//! The Debian 11 (bullseye) root file system the release artifacts are tested in: made once with
//! `debootstrap --variant=minbase` into `CACHE/bullseye` and kept; tests work on copies of it.

use std::path::{Path, PathBuf};

use crate::tools::{apt, run};

/// The Debian mirror debootstrap downloads from.
const MIRROR: &str = "http://deb.debian.org/debian";

/// The environment variable naming the cached bullseye root, read by the tests.
pub const BULLSEYE_ENV: &str = "ORANGE_TEST_BULLSEYE";

/// The cached bullseye root in `cache`, made first if missing (about a minute and 50 MB of
/// downloads). debootstrap writes into a side directory renamed into place once it succeeded,
/// so an interrupted run leaves no half-made root behind.
pub fn ensure_bullseye(cache: &Path) -> Result<PathBuf, String> {
    let root = cache.join("bullseye");
    if root.join("etc/debian_version").is_file() {
        return Ok(root);
    }
    eprintln!("xtask: making a Debian 11 root in {} with debootstrap", root.display());
    let partial = cache.join("bullseye.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| format!("cannot remove {}: {e}", partial.display()))?;
    }
    run(apt("debootstrap").args(["--variant=minbase", "bullseye"]).arg(&partial).arg(MIRROR))?;
    std::fs::rename(&partial, &root).map_err(|e| format!("cannot place {}: {e}", root.display()))?;
    Ok(root)
}
