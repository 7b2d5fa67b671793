//! `orange store copy`: a fleet moved between the embedded store (a data directory) and a
//! PostgreSQL database, or from a backup file into either. The copy itself is
//! `server::store::copy`; this file reads the flags, tells a directory from a file and a URL,
//! holds the data directories' locks, and reads and writes their secret files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};
use serde_json::json;

use super::agent::non_empty_env;
use super::server::ENV_STORE_PASSWORD;
use crate::protocol::private_dir::make_private;
use crate::protocol::read_secret_file;
use crate::server::backups::SECRET_FILES;
use crate::server::config::store_target;
use crate::server::lock::DataDirLock;
use crate::server::store::{self, Copied, Destination, PgTarget, Secrets, Source, StoreError};
use crate::server::{ADMIN_TOKEN_FILE, ENROLL_KEY_FILE};

/// Largest `--cache-mb`.
const MAX_CACHE_MB: u64 = 1 << 20;

/// The data directory's secret files and their names in a database's `meta` tree.
const SECRET_NAMES: [(&str, &str); 2] = [(ADMIN_TOKEN_FILE, "admin_token"), (ENROLL_KEY_FILE, "enroll_key")];

/// Work on a store without a server.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "store")]
pub struct StoreArgs {
    /// what to do
    #[argh(subcommand)]
    pub command: StoreCommand,
}

/// What `orange store` does.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
pub enum StoreCommand {
    /// `orange store copy`
    Copy(CopyArgs),
}

/// Copy a whole fleet from a data directory, a PostgreSQL database or a backup file into an
/// empty data directory or an empty database, then check every tree's count in both. A data
/// directory's server must be stopped (its lock is taken); a database is read in one
/// REPEATABLE READ READ ONLY transaction, one consistent moment even while servers run on it.
/// The admin token and enrollment key go with the fleet.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "copy",
    example = "orange store copy --from /var/lib/orange --to postgres://orange@db.example/orange",
    example = "orange store copy --from postgres://orange@db.example/orange --to /var/lib/orange-new",
    example = "orange store copy --from /backups/orange.bak --to postgres://orange@db.example/orange",
    note = "The database password comes from --from-password-file/--to-password-file or \
            ORANGE_STORE_PASSWORD, never the URL. A copy cut short leaves the destination not \
            empty: empty the directory (or drop the database's orange_* tables) and copy again."
)]
pub struct CopyArgs {
    /// data directory, postgres:// URL or backup file to copy from
    #[argh(option)]
    pub from: String,
    /// empty (or missing) data directory, or postgres:// URL of a database with empty trees
    #[argh(option)]
    pub to: String,
    /// file holding the password of the --from database
    #[argh(option)]
    pub from_password_file: Option<PathBuf>,
    /// file holding the password of the --to database
    #[argh(option)]
    pub to_password_file: Option<PathBuf>,
    /// database cache size in MiB of a data directory while copying (default 64)
    #[argh(option, default = "64")]
    pub cache_mb: u64,
    /// print what was copied as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Runs `orange store ...`.
pub fn run(args: StoreArgs) -> Result<i32> {
    super::quiet_broken_pipe();
    match args.command {
        StoreCommand::Copy(args) => copy(args),
    }
}

/// One end of a copy, as given.
enum End {
    Dir(PathBuf),
    Postgres(Box<PgTarget>),
    Backup(PathBuf),
}

fn copy(args: CopyArgs) -> Result<i32> {
    if args.cache_mb == 0 || args.cache_mb > MAX_CACHE_MB {
        return Err(super::argv::usage(format!("--cache-mb must be between 1 and {MAX_CACHE_MB}")));
    }
    let env = |name: &str| std::env::var(name).ok();
    let from = end(&args.from, password(&args.from_password_file, "--from-password-file", &env)?, "--from")?;
    let to = end(&args.to, password(&args.to_password_file, "--to-password-file", &env)?, "--to")?;
    for (file, end, flag) in
        [(&args.from_password_file, &from, "--from"), (&args.to_password_file, &to, "--to")]
    {
        if file.is_some() && !matches!(end, End::Postgres(_)) {
            return Err(super::argv::usage(format!(
                "a password file was given but {flag} is not a postgres:// URL"
            )));
        }
    }
    let copied = match (&from, &to) {
        (_, End::Backup(_)) => bail!("--to {} is a file; copy into a data directory or a database", args.to),
        (End::Backup(file), End::Dir(dir)) => return restore(&args, file, dir),
        _ => copy_between(&from, &to, args.cache_mb << 20)?,
    };
    print_copied(&args, &copied);
    Ok(0)
}

/// A database password: from its file (given by `flag`), else `ORANGE_STORE_PASSWORD`.
fn password(file: &Option<PathBuf>, flag: &str, env: super::agent::Env) -> Result<Option<String>> {
    match file {
        Some(path) => Ok(Some(read_secret_file(path).context(flag.to_owned())?)),
        None => Ok(non_empty_env(env, ENV_STORE_PASSWORD)),
    }
}

/// What `text` names: a URL is a database; a path is a backup file if it is a file on disk,
/// else a data directory.
fn end(text: &str, password: Option<String>, flag: &str) -> Result<End> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        let target = store_target(text, password).map_err(|e| anyhow::anyhow!("{flag}: {e:#}"))?;
        return Ok(End::Postgres(Box::new(target)));
    }
    let path = PathBuf::from(text);
    Ok(if path.is_file() { End::Backup(path) } else { End::Dir(path) })
}

/// A backup into a data directory is a restore.
fn restore(args: &CopyArgs, file: &Path, dir: &Path) -> Result<i32> {
    let restored = crate::server::backups::restore(file, dir, args.cache_mb << 20)?;
    let copied = Copied {
        trees: restored.trees,
        id_floor: restored.trailer.id_floor,
        secrets: restored.trailer.counts.files,
        files_skipped: 0,
    };
    print_copied(args, &copied);
    Ok(0)
}

/// Copies between a data directory, a database and a backup, holding each data directory's
/// lock.
fn copy_between(from: &End, to: &End, cache_bytes: u64) -> Result<Copied> {
    crate::server::set_private_umask();
    let _from_lock = match from {
        End::Dir(dir) => Some(lock_source(dir)?),
        _ => None,
    };
    let _to_lock = match to {
        End::Dir(dir) => Some(lock_destination(dir)?),
        _ => None,
    };
    let source = match from {
        End::Dir(dir) => Source::Dir(dir),
        End::Postgres(target) => Source::Postgres(target),
        End::Backup(file) => Source::Backup(file),
    };
    let destination = match to {
        End::Dir(dir) => Destination::Dir(dir),
        End::Postgres(target) => Destination::Postgres(target),
        End::Backup(_) => bail!("a copy writes into a data directory or a database"),
    };
    let files = match from {
        End::Dir(dir) => secret_files(dir)?,
        _ => Vec::new(),
    };
    let secrets = Secrets { names: &SECRET_NAMES, files };
    let mut on_file = |name: &str, bytes: &[u8]| match to {
        End::Dir(dir) => write_secret(dir, name, bytes),
        _ => Ok(()),
    };
    store::copy(&source, &destination, secrets, cache_bytes, &mut on_file).context("the copy failed")
}

/// Locks the source data directory, which must exist: no server may run on it meanwhile.
fn lock_source(dir: &Path) -> Result<DataDirLock> {
    if !dir.is_dir() {
        bail!("--from {} is neither a data directory, a backup file nor a postgres:// URL", dir.display());
    }
    DataDirLock::acquire(dir).context("stop the server on it first")
}

/// Refuses a destination directory that holds anything, then creates it private and locks it.
fn lock_destination(dir: &Path) -> Result<DataDirLock> {
    if fs::read_dir(dir).map(|mut entries| entries.next().is_some()).unwrap_or(false) {
        bail!(
            "--to {} is not empty; copy into a new or empty directory (if a copy was cut short there, empty \
             it and copy again)",
            dir.display()
        );
    }
    make_private(dir, "data directory")?;
    Ok(DataDirLock::acquire(dir)?)
}

/// The secret files a data directory holds, by name.
fn secret_files(dir: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for name in SECRET_FILES {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => files.push((name.to_owned(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(files)
}

/// Writes the secret file `name` into `dir`, 0600 and synced.
fn write_secret(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        file.write_all(bytes)?;
        file.sync_all()
    };
    write().map_err(|e| StoreError::Io(format!("cannot write {}: {e}", path.display())))
}

fn print_copied(args: &CopyArgs, copied: &Copied) {
    if args.json {
        let trees: serde_json::Map<String, serde_json::Value> =
            copied.trees.iter().map(|(name, count)| (name.clone(), json!(count))).collect();
        let report = json!({
            "from": args.from,
            "to": args.to,
            "records": copied.trees.iter().map(|(_, count)| count).sum::<u64>(),
            "id_floor": copied.id_floor,
            "secrets": copied.secrets,
            "files_skipped": copied.files_skipped,
            "trees": trees,
        });
        println!("{report}");
        return;
    }
    let records: u64 = copied.trees.iter().map(|(_, count)| count).sum();
    println!(
        "copied {} into {}: {records} records, the same count in every tree; {} secrets carried, {} files \
         left out; ids go on from {}",
        args.from, args.to, copied.secrets, copied.files_skipped, copied.id_floor
    );
    for (tree, count) in &copied.trees {
        println!("  {tree:<16} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_is_a_url_a_file_or_a_directory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("orange.bak");
        fs::write(&file, b"x")?;
        assert!(matches!(end(file.to_str().unwrap_or_default(), None, "--from")?, End::Backup(_)));
        assert!(matches!(end(dir.path().to_str().unwrap_or_default(), None, "--from")?, End::Dir(_)));
        assert!(matches!(end("postgres://orange@db/orange", None, "--to")?, End::Postgres(_)));
        let err = end("postgres://orange:pw@db/orange", None, "--to").err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("must not carry a password") && !e.contains("pw@")));
        Ok(())
    }
}
