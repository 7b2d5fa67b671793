//! Backups of a data directory: [`Backups`] writes one of the running server (the store's
//! records, consistent to one moment, and the secret files of the data directory), and
//! [`restore`] writes a backup into a new data directory that a server can then be started on.
//!
//! The secrets: a backup carries `admin.token` and `enroll.key` when the data directory holds
//! them (the generated ones), so that a restored server answers the same operators and enrolls
//! with the same key; secrets given by flag or environment are not in the data directory and
//! stay where the operator keeps them. A backup is therefore as secret as the data directory:
//! the CLI writes it 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};

use super::lock::DataDirLock;
use super::store::{self, BackupSummary, Restored, Store, StoreError};
use super::{ADMIN_TOKEN_FILE, ENROLL_KEY_FILE};
use crate::protocol::private_dir::make_private;

/// The data directory's files a backup carries.
pub const SECRET_FILES: [&str; 2] = [ADMIN_TOKEN_FILE, ENROLL_KEY_FILE];

/// Writes backups of the running server, one at a time.
pub struct Backups {
    store: Arc<Store>,
    data_dir: PathBuf,
    /// Set while a backup is being written.
    running: AtomicBool,
}

/// The one backup being written; dropping it lets the next one start.
pub struct Running {
    backups: Arc<Backups>,
}

impl Backups {
    /// Backups of `store`, whose data directory is `data_dir`.
    pub fn new(store: Arc<Store>, data_dir: PathBuf) -> Self {
        Backups { store, data_dir, running: AtomicBool::new(false) }
    }

    /// Starts a backup, unless one is being written.
    pub fn start(self: &Arc<Self>) -> Option<Running> {
        let free = self.running.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        free.then(|| Running { backups: Arc::clone(self) })
    }

    /// The secret files the data directory holds, by name.
    fn secret_files(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut files = Vec::new();
        for name in SECRET_FILES {
            let path = self.data_dir.join(name);
            match fs::read(&path) {
                Ok(bytes) => files.push((name.to_owned(), bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::Io(format!("cannot read {}: {e}", path.display()))),
            }
        }
        Ok(files)
    }
}

impl Running {
    /// Writes the backup to `out` while the server goes on (see [`Store::backup`]); blocks until
    /// it is written, so call it on a thread of its own.
    pub fn write(&self, out: impl Write + Send) -> Result<BackupSummary, StoreError> {
        self.backups.store.backup(out, &self.backups.secret_files()?)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.backups.running.store(false, Ordering::SeqCst);
    }
}

/// Restores the backup file `from` into the data directory `dir`, which must be missing or
/// empty: checks the whole file first (nothing is written for a damaged one), then writes the
/// store and the secret files, all synced. A restore that fails after it began writing deletes
/// what it wrote.
pub fn restore(from: &Path, dir: &Path, cache_bytes: u64) -> Result<Restored> {
    refuse_non_empty(dir)?;
    super::set_private_umask();
    let open = || File::open(from).with_context(|| format!("cannot open the backup {}", from.display()));
    store::verify(BufReader::new(open()?))
        .with_context(|| format!("{} cannot be restored", from.display()))?;
    make_private(dir, "data directory")?;
    let lock = DataDirLock::acquire(dir)?;
    let restored = store::restore(dir, BufReader::new(open()?), cache_bytes, &mut |name, bytes| {
        write_secret(dir, name, bytes)
    });
    drop(lock);
    match restored {
        Ok(restored) => Ok(restored),
        Err(e) => {
            let _ = empty_dir(dir);
            Err(e).with_context(|| format!("cannot restore {} into {}", from.display(), dir.display()))
        }
    }
}

/// Refuses a directory that holds anything: a restore never mixes with other data.
fn refuse_non_empty(dir: &Path) -> Result<()> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    if entries.next().is_some() {
        bail!("{} is not empty; restore into a new or empty directory", dir.display());
    }
    Ok(())
}

/// Writes the secret file `name` into `dir`, 0600 and synced; refuses a name that is not one of
/// [`SECRET_FILES`].
fn write_secret(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    if !SECRET_FILES.contains(&name) {
        return Err(StoreError::Io(format!("the backup carries an unexpected file {name:?}")));
    }
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| StoreError::Io(format!("cannot write {}: {e}", path.display())))
}

/// Deletes everything in `dir` (which a failed restore wrote).
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() { fs::remove_dir_all(&path)? } else { fs::remove_file(&path)? }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Policy;

    #[test]
    fn one_backup_is_written_at_a_time() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Arc::new(Store::open(dir.path(), 8 << 20, Policy::default()).expect("open"));
        let backups = Arc::new(Backups::new(store, dir.path().to_owned()));
        let first = backups.start().expect("the first backup starts");
        assert!(backups.start().is_none(), "a second waits for the first to end");
        drop(first);
        let again = backups.start().expect("the next one starts once the first ended");
        std::fs::write(dir.path().join(ADMIN_TOKEN_FILE), "token\n").expect("write");
        let mut out = Vec::new();
        let summary = again.write(&mut out).expect("a backup");
        assert_eq!(summary.trailer.counts.files, 1, "the token file is carried");
        assert_eq!(summary.bytes, out.len() as u64);
    }

    #[test]
    fn a_restore_refuses_a_directory_that_holds_anything() {
        let dir = tempfile::tempdir().expect("a temp dir");
        std::fs::write(dir.path().join("x"), "x").expect("write");
        let err = restore(Path::new("/nonexistent.bak"), dir.path(), 8 << 20).expect_err("refused");
        assert!(err.to_string().contains("is not empty"), "{err:#}");
    }
}
