//! The database directories of a data directory and the pointer naming the one in use:
//! `DIR/sled` (a database never compacted) or `DIR/sled.N`, and the file `DIR/sled.current`
//! naming the one in use (absent: `sled`). The pointer changes only by an atomic rename of a
//! synced file, followed by a directory fsync; at open, every other database directory (a copy
//! a crash left half made, or an old database a crash kept from being deleted) is deleted.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use tracing::{info, warn};

use super::StoreError;

/// The file naming the database directory in use.
pub const CURRENT_FILE: &str = "sled.current";
/// The database directory of a data directory that was never compacted.
const FIRST_NAME: &str = "sled";

/// The database directory in use in `dir`, after deleting any other.
pub fn current_name(dir: &Path) -> Result<String, StoreError> {
    let pointer = dir.join(CURRENT_FILE);
    let name = match fs::read_to_string(&pointer) {
        Ok(text) => text.trim().to_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FIRST_NAME.to_owned(),
        Err(e) => return Err(io_error(&pointer, e)),
    };
    if generation(&name).is_none() {
        return Err(StoreError::Io(format!("{} names no database: {name:?}", pointer.display())));
    }
    if pointer.exists() && !dir.join(&name).is_dir() {
        // Opening it would create an empty database in place of the data.
        return Err(StoreError::Io(format!("{} names {name}, which is missing", pointer.display())));
    }
    remove_others(dir, &name)?;
    Ok(name)
}

/// `sled` → 0, `sled.N` → N.
fn generation(name: &str) -> Option<u64> {
    let rest = name.strip_prefix(FIRST_NAME)?;
    if rest.is_empty() {
        return Some(0);
    }
    let digits = rest.strip_prefix('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The name of the database a compaction of `name` writes.
pub fn next_name(name: &str) -> String {
    format!("{FIRST_NAME}.{}", generation(name).unwrap_or(0) + 1)
}

/// Deletes every database directory in `dir` other than `keep`.
fn remove_others(dir: &Path, keep: &str) -> Result<(), StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().map_err(|e| io_error(&entry.path(), e))?.is_dir();
        if is_dir && name != keep && generation(&name).is_some() {
            info!(database = %name, "deleting a database no longer in use");
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

/// Makes `name` the database in use: writes the pointer beside, syncs it, renames it over the
/// old one, and syncs the directory. Once the rename succeeded, `name` is in use whatever
/// follows, so a failure of the last sync is only logged.
pub fn switch_to(dir: &Path, name: &str) -> Result<(), StoreError> {
    replace_file(dir, CURRENT_FILE, &format!("{name}\n"))?;
    if let Err(e) = sync_path(dir) {
        warn!(error = %e, "the switch to the compacted database may not survive a power cut");
    }
    Ok(())
}

/// Replaces the file `dir/name` by one holding `contents`: a temporary file written and synced
/// beside it, then renamed over it (atomic). The directory is not synced: the caller does.
pub fn replace_file(dir: &Path, name: &str, contents: &str) -> Result<(), StoreError> {
    let target = dir.join(name);
    let temp = dir.join(format!("{name}.new"));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&temp)?;
        file.write_all(contents.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temp, &target)
    };
    write().map_err(|e| io_error(&target, e))
}

/// fsync of a file or a directory.
pub fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| io_error(path, e))
}

/// Deletes a database directory and everything in it.
pub fn remove_dir(path: &Path) -> Result<(), StoreError> {
    fs::remove_dir_all(path).map_err(|e| io_error(path, e))
}

/// An I/O error on `path`.
pub fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_carry_their_generation() {
        assert_eq!(generation("sled"), Some(0));
        assert_eq!(generation("sled.7"), Some(7));
        assert_eq!(generation("sled.current"), None);
        assert_eq!(generation("sled.+7"), None);
        assert_eq!(generation("sled."), None);
        assert_eq!(generation("sledge"), None);
        assert_eq!(next_name("sled"), "sled.1");
        assert_eq!(next_name("sled.9"), "sled.10");
    }
}
