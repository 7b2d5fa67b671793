//! Files the CLI writes on the operator's machine (a pulled file, a backup): written beside
//! their target under another name, synced, then renamed over it with the directory synced, so
//! the target is always the old file or the whole new one, never a part.

use std::fs::{self, File};
use std::path::Path;

use anyhow::{Context, Result};

/// Runs `fill` (which writes and syncs `temp`, beside `target`), then renames `temp` over
/// `target` and syncs their directory; removes `temp` if any step fails.
pub fn replace_atomically<T>(temp: &Path, target: &Path, fill: impl FnOnce() -> Result<T>) -> Result<T> {
    let replaced = fill().and_then(|value| {
        fs::rename(temp, target)
            .with_context(|| format!("cannot rename {} to {}", temp.display(), target.display()))?;
        let dir = parent_dir(target);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync {}", dir.display()))?;
        Ok(value)
    });
    if replaced.is_err() {
        let _ = fs::remove_file(temp);
    }
    replaced
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_replaced_whole_or_left_alone() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let (temp, target) = (dir.path().join("t.partial"), dir.path().join("t"));
        fs::write(&target, "old")?;
        let failed = replace_atomically(&temp, &target, || -> Result<()> {
            fs::write(&temp, "half")?;
            anyhow::bail!("the download broke off")
        });
        assert!(failed.is_err());
        assert_eq!(fs::read_to_string(&target)?, "old");
        assert!(!temp.exists(), "the partial file is removed");
        replace_atomically(&temp, &target, || Ok(fs::write(&temp, "new")?))?;
        assert_eq!(fs::read_to_string(&target)?, "new");
        assert_eq!(parent_dir(Path::new("bare")), Path::new("."));
        Ok(())
    }
}
