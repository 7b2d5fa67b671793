//! `orange server backup` (a running server's backup, through the admin API, written to a file
//! atomically and checked) and `orange server restore` (a backup into a new data directory).

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use argh::{ArgsInfo, FromArgs};
use serde_json::json;

use super::argv::usage;
use super::local_file::replace_atomically;
use super::operator::{OperatorConfig, operator_args, operator_flags};
use crate::protocol::admin::BACKUP_PATH;
use crate::server::clock::rfc3339;
use crate::server::store::{self, Header, Restored, Trailer};

/// Largest `--cache-mb` of a restore.
const MAX_CACHE_MB: u64 = 1 << 20;

/// What `orange server` does besides serving.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand)]
pub enum ServerAction {
    /// `orange server backup`
    Backup(BackupArgs),
    /// `orange server restore`
    Restore(RestoreArgs),
}

operator_args! {
    /// Write a backup of a running server to a file: every record, consistent to one moment,
    /// while agents keep working, and the admin token and enrollment key of its data directory
    /// (keep the file as secret as the data directory; it is written 0600).
    #[derive(FromArgs, ArgsInfo)]
    #[argh(
        subcommand,
        name = "backup",
        example = "orange server backup --to /backups/orange.bak --data /var/lib/orange",
        example = "orange server backup --to orange.bak --server https://orange.example:8890 --token-file admin.token"
    )]
    pub struct BackupArgs {
        /// file to write; replaced only once the backup arrived whole and checked
        #[argh(option)]
        pub to: PathBuf,
        /// seconds the whole backup may take (default 3600)
        #[argh(option, default = "3600")]
        pub timeout: u64,
    }
    /// print what was written as JSON
    json
}

/// Restore a backup into a new data directory; `orange server --data DIR` then serves it.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "restore",
    example = "orange server restore --from /backups/orange.bak --data /var/lib/orange-restored"
)]
pub struct RestoreArgs {
    /// backup file to read (written by `orange server backup`)
    #[argh(option)]
    pub from: PathBuf,
    /// data directory to write; it must be missing or empty
    #[argh(option)]
    pub data: PathBuf,
    /// database cache size in MiB while restoring (default 64)
    #[argh(option, default = "64")]
    pub cache_mb: u64,
    /// print what was restored as JSON
    #[argh(switch)]
    pub json: bool,
}

/// Runs `orange server backup` or `orange server restore`.
pub fn run(action: ServerAction) -> Result<i32> {
    // Operator commands, unlike the server itself: a closed output ends them quietly.
    super::quiet_broken_pipe();
    match action {
        ServerAction::Backup(args) => backup(args),
        ServerAction::Restore(args) => restore(args),
    }
}

fn backup(args: BackupArgs) -> Result<i32> {
    if args.timeout == 0 {
        return Err(usage("--timeout must be at least 1 second"));
    }
    let (to, timeout) = (args.to.clone(), Duration::from_secs(args.timeout));
    let config = OperatorConfig::from_flags(operator_flags!(args))?;
    let partial = partial_path(&to)?;
    let (bytes, header, trailer) = replace_atomically(&partial, &to, || {
        let bytes = download(&config, timeout, &partial)?;
        let (header, trailer) = check(&partial)?;
        Ok((bytes, header, trailer))
    })?;
    print_backup(&to, bytes, &header, &trailer, config.json);
    Ok(0)
}

/// `FILE.partial` beside `FILE`, where the backup arrives.
fn partial_path(to: &Path) -> Result<PathBuf> {
    let name = to.file_name().with_context(|| format!("--to {} names no file", to.display()))?;
    let mut partial = name.to_owned();
    partial.push(".partial");
    Ok(to.with_file_name(partial))
}

/// Streams the server's backup into `path` (0600), synced; returns its size.
fn download(config: &OperatorConfig, timeout: Duration, path: &Path) -> Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let bytes = config.api(timeout).get_into(BACKUP_PATH, &mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", path.display()))?;
    Ok(bytes)
}

/// Reads the downloaded backup through, checking every record and its trailer.
fn check(path: &Path) -> Result<(Header, Trailer)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    store::verify(BufReader::new(file))
        .with_context(|| format!("the backup the server sent is not whole ({})", path.display()))
}

fn print_backup(to: &Path, bytes: u64, header: &Header, trailer: &Trailer, as_json: bool) {
    let counts = trailer.counts;
    if as_json {
        let report = json!({
            "file": to.display().to_string(),
            "bytes": bytes,
            "records": counts.records(),
            "puts": counts.puts,
            "removes": counts.removes,
            "files": counts.files,
            "started_at": rfc3339(header.created_at_ms),
            "consistent_at": rfc3339(trailer.cut.at_ms),
            "consistent_at_ms": trailer.cut.at_ms,
            "log_segment": trailer.cut.segment,
            "log_offset": trailer.cut.offset,
        });
        println!("{report}");
        return;
    }
    println!(
        "backup written to {}: {bytes} bytes, {} records ({} files), consistent to {} (log segment {}, offset {})",
        to.display(),
        counts.records(),
        counts.files,
        rfc3339(trailer.cut.at_ms),
        trailer.cut.segment,
        trailer.cut.offset
    );
}

fn restore(args: RestoreArgs) -> Result<i32> {
    if args.cache_mb == 0 || args.cache_mb > MAX_CACHE_MB {
        return Err(usage(format!("--cache-mb must be between 1 and {MAX_CACHE_MB}")));
    }
    let restored = crate::server::backups::restore(&args.from, &args.data, args.cache_mb << 20)?;
    print_restore(&args, &restored);
    Ok(0)
}

fn print_restore(args: &RestoreArgs, restored: &Restored) {
    let trailer = &restored.trailer;
    if args.json {
        let trees: serde_json::Map<String, serde_json::Value> =
            restored.trees.iter().map(|(name, count)| (name.clone(), json!(count))).collect();
        let report = json!({
            "data": args.data.display().to_string(),
            "records": trailer.counts.records(),
            "files": trailer.counts.files,
            "consistent_at": rfc3339(trailer.cut.at_ms),
            "consistent_at_ms": trailer.cut.at_ms,
            "written_by": restored.header.orange_version,
            "trees": trees,
        });
        println!("{report}");
        return;
    }
    println!(
        "restored {} into {}: {} records ({} files), consistent to {} (written by orange {})",
        args.from.display(),
        args.data.display(),
        trailer.counts.records(),
        trailer.counts.files,
        rfc3339(trailer.cut.at_ms),
        restored.header.orange_version
    );
    for (tree, count) in &restored.trees {
        println!("  {tree:<12} {count}");
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::ServerArgs;
    use super::*;

    fn parse(argv: &[&str]) -> ServerArgs {
        ServerArgs::from_args(&["server"], argv).expect("flags parse")
    }

    #[test]
    fn server_takes_backup_and_restore_and_still_serves_without_a_subcommand() {
        let serve = parse(&["--data", "d", "--listen", "127.0.0.1:0"]);
        assert!(serve.action.is_none() && serve.data.is_some());
        let Some(ServerAction::Backup(backup)) = parse(&["backup", "--to", "f.bak", "--data", "d"]).action
        else {
            panic!("not a backup")
        };
        assert_eq!(
            (backup.to, backup.timeout, backup.data),
            (PathBuf::from("f.bak"), 3600, Some(PathBuf::from("d")))
        );
        let Some(ServerAction::Restore(restore)) =
            parse(&["restore", "--from", "f.bak", "--data", "new"]).action
        else {
            panic!("not a restore")
        };
        assert_eq!((restore.from, restore.data), (PathBuf::from("f.bak"), PathBuf::from("new")));
        assert!(
            ServerArgs::from_args(&["server"], &["restore", "--from", "f.bak"]).is_err(),
            "--data is needed"
        );
    }

    #[test]
    fn serving_without_a_data_directory_is_a_usage_error() {
        let err = super::super::server::server_options(parse(&[]), &|_| None).expect_err("refused");
        assert!(err.downcast_ref::<super::super::argv::Usage>().is_some(), "{err}");
        assert!(err.to_string().contains("--data DIR"), "{err}");
    }

    #[test]
    fn a_backup_arrives_beside_its_target() -> Result<()> {
        assert_eq!(partial_path(Path::new("/b/orange.bak"))?, PathBuf::from("/b/orange.bak.partial"));
        assert!(partial_path(Path::new("/")).is_err());
        Ok(())
    }
}
