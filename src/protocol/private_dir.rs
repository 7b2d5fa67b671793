//! Directories that hold secrets: the server's data directory and the agent's state directory.
//! [`make_private`] creates one 0700, or makes an existing one and everything under it private
//! to its owner, so no other user on the host can read an agent secret, an enrollment key or
//! the database.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Group and other permission bits: none may be set on anything in a private directory.
const OPEN_TO_OTHERS: u32 = 0o077;
/// Group and other write bits: a directory others could write to is refused, not fixed, since
/// they may already have replaced what is in it.
const WRITABLE_BY_OTHERS: u32 = 0o022;

/// What [`make_private`] changed, for the caller to log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tightened {
    /// The directory's own mode before it was made 0700, when it was open to others.
    pub dir_mode_was: Option<u32>,
    /// Entries under the directory whose group and other permissions were removed.
    pub entries: usize,
}

/// Creates `dir` (and its parents) 0700 if it is missing; otherwise refuses it when group or
/// others can write to it, makes it 0700 when they can read or enter it, and removes the group
/// and other permissions of every file and directory under it (symbolic links are not
/// followed). `what` names the directory in messages, e.g. "data directory".
pub fn make_private(dir: &Path, what: &str) -> Result<Tightened> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {what} {}", dir.display()))?;
    let dir_mode_was = close_dir(dir, what)?;
    let entries = close_entries(dir, dir)?;
    Ok(Tightened { dir_mode_was, entries })
}

/// Makes `dir` itself 0700 unless others can write to it; returns its old mode if it changed.
fn close_dir(dir: &Path, what: &str) -> Result<Option<u32>> {
    let mode =
        fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?.permissions().mode()
            & 0o777;
    let shown = dir.display();
    if mode & WRITABLE_BY_OTHERS != 0 {
        bail!("{what} {shown} is writable by group or others (mode {mode:o}); run `chmod 700 {shown}`");
    }
    if mode & OPEN_TO_OTHERS == 0 {
        return Ok(None);
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        bail!(
            "{what} {shown} is readable by group or others (mode {mode:o}) and cannot be changed ({e}); \
             run `chmod 700 {shown}`"
        );
    }
    Ok(Some(mode))
}

/// Removes group and other permissions from everything under `dir`, recursively; returns how
/// many entries changed. `top` is the private directory, named in the command to fix a failure.
fn close_entries(dir: &Path, top: &Path) -> Result<usize> {
    let mut changed = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let path = entry.path();
        // `DirEntry::metadata` does not follow symbolic links: a link is not ours to change.
        let meta = entry.metadata().with_context(|| format!("cannot read {}", path.display()))?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode();
        if mode & OPEN_TO_OTHERS != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o700)).with_context(|| {
                format!("cannot make {} private; run `chmod -R go= {}`", path.display(), top.display())
            })?;
            changed += 1;
        }
        if meta.is_dir() {
            changed += close_entries(&path, top)?;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).map(|m| m.permissions().mode() & 0o777).unwrap_or(0)
    }

    fn chmod(path: &Path, mode: u32) -> Result<()> {
        Ok(fs::set_permissions(path, fs::Permissions::from_mode(mode))?)
    }

    #[test]
    fn a_missing_directory_is_created_0700() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("a/b");
        assert_eq!(make_private(&dir, "data directory")?, Tightened::default());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        Ok(())
    }

    #[test]
    fn a_readable_directory_and_its_entries_are_made_private() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("data");
        fs::create_dir_all(dir.join("sled/blobs"))?;
        fs::write(dir.join("sled/db"), "db")?;
        fs::write(dir.join("admin.token"), "t")?;
        fs::write(dir.join("run.sh"), "#!/bin/sh\n")?;
        let outside = tmp.path().join("outside");
        fs::write(&outside, "not ours")?;
        std::os::unix::fs::symlink(&outside, dir.join("link"))?;
        for (path, m) in [("", 0o755), ("sled", 0o755), ("sled/blobs", 0o750), ("sled/db", 0o644)] {
            chmod(&dir.join(path), m)?;
        }
        chmod(&dir.join("admin.token"), 0o600)?;
        chmod(&dir.join("run.sh"), 0o755)?;
        chmod(&outside, 0o644)?;

        let done = make_private(&dir, "data directory")?;
        assert_eq!(done, Tightened { dir_mode_was: Some(0o755), entries: 4 });
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("sled")), 0o700);
        assert_eq!(mode(&dir.join("sled/blobs")), 0o700);
        assert_eq!(mode(&dir.join("sled/db")), 0o600);
        assert_eq!(mode(&dir.join("admin.token")), 0o600);
        assert_eq!(mode(&dir.join("run.sh")), 0o700, "the owner keeps what it had");
        assert_eq!(mode(&outside), 0o644, "a symbolic link is not followed");
        assert_eq!(make_private(&dir, "data directory")?, Tightened::default(), "nothing left to fix");
        Ok(())
    }

    #[test]
    fn a_directory_others_can_write_is_refused_and_left_alone() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("state");
        fs::create_dir(&dir)?;
        fs::write(dir.join("secret"), "s")?;
        chmod(&dir.join("secret"), 0o644)?;
        chmod(&dir, 0o775)?;
        let err = make_private(&dir, "state directory").unwrap_err();
        let shown = dir.display();
        assert_eq!(
            err.to_string(),
            format!(
                "state directory {shown} is writable by group or others (mode 775); run `chmod 700 {shown}`"
            )
        );
        assert_eq!(mode(&dir), 0o775);
        assert_eq!(mode(&dir.join("secret")), 0o644);
        Ok(())
    }
}
