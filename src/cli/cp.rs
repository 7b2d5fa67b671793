//! `orange cp`: copy a file to many hosts (`LOCAL :REMOTE`), or from one host (`:REMOTE LOCAL`).
//! A push hashes the local file, streams it to the server (which checks the size and SHA-256 it
//! stored against the CLI's), then runs a job of `file.put` tasks followed like `job run`. A
//! pull sends one `file.get` task, waits for it, downloads what the agent read page by page,
//! checks the size and SHA-256 the agent reported, and writes the local file atomically (a
//! temporary file beside it, synced, given the remote mode, renamed, the directory synced).

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};
use sha2::{Digest, Sha256};

use super::argv::{usage, usage_bail};
use super::flags::check_timeout;
use super::job_args::targets;
use super::job_run::follow_to_the_end;
use super::local_file::{parent_dir, replace_atomically};
use super::operator::{Api, OperatorConfig, encode, operator_args, operator_flags};
use super::output;
use super::wait::{wait_task, wait_timeout};
use crate::protocol::admin::{EnqueueReply, EnqueueRequest, TASKS_PATH};
use crate::protocol::files::{
    self, FILES_PATH, GetSpec, GotFile, PutSpec, TASK_FILE_GET, TASK_FILE_PUT, TASK_FILE_SUFFIX, Uploaded,
};
use crate::protocol::jobs::{self, JobRequest, JobView, Limit};
use crate::protocol::{TaskStatus, limits};

/// Read deadline of the upload: long enough for the largest file on a slow link.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(3600);

operator_args! {
    /// Copy a file to hosts (LOCAL :REMOTE_PATH) or from one host (:REMOTE_PATH LOCAL).
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "cp",
        example = "orange cp ./nginx.conf --label role=web :/etc/nginx/nginx.conf",
        example = "orange cp ./app.tar.gz --appid web-1,web-2 --mode 600 :/srv/app/app.tar.gz",
        example = "orange cp --appid web-1 :/var/log/app.log ./web-1-app.log",
        note = "A push (LOCAL first) goes to every host named by --appid, --label or --all, as a job \
                followed like `orange job run`; a pull (:REMOTE_PATH first) comes from the one host named \
                by --appid. The remote path is absolute. The file keeps its mode (or --mode for a push); \
                it is written atomically on the host (temporary file, fsync, rename) and, for a pull, \
                locally (LOCAL may be a directory: the remote file name is kept). Its SHA-256 is checked \
                end to end. Agents write only under their --allow-write-root directories and read only \
                under their --allow-read-root ones (none by default); the server limits a file's size \
                (orange server --max-file-mb, default 256). Connection options as in `orange task run --help`.",
        error_code(1, "a host did not get the file, the file could not be read or written, or orange failed"),
        error_code(2, "usage: bad paths, flags or targets")
    )]
    pub struct CpArgs {
        /// LOCAL :REMOTE_PATH to push, or :REMOTE_PATH LOCAL to pull
        #[argh(positional)]
        pub paths: Vec<String>,
        /// app ids to copy to, comma separated (repeatable); a pull names exactly one
        #[argh(option)]
        pub appid: Vec<String>,
        /// label k=v the hosts of a push must carry (repeatable: all must match)
        #[argh(option)]
        pub label: Vec<String>,
        /// push to every accepted agent
        #[argh(switch)]
        pub all: bool,
        /// mode of the pushed file, octal (default: the local file's)
        #[argh(option)]
        pub mode: Option<String>,
        /// seconds a host may take to copy the file (default: the server's --default-timeout)
        #[argh(option)]
        pub timeout: Option<u64>,
        /// most hosts copying at once, N or P% (default: all at once)
        #[argh(option)]
        pub max_concurrency: Option<String>,
        /// list every host of every result group of a push
        #[argh(switch)]
        pub hosts: bool,
    }
    /// print the push's job and results, or the pulled file's size, mode and checksum, as JSON
    json
}

/// Which way a copy goes.
enum Direction {
    /// A local file to remote hosts.
    Push { local: PathBuf, remote: String },
    /// A remote file to a local path.
    Pull { remote: String, local: PathBuf },
}

/// Runs `orange cp` and returns its exit status.
pub fn run(args: CpArgs) -> Result<i32> {
    let direction = direction(&args.paths)?;
    let timeout = check_timeout(args.timeout)?;
    match direction {
        Direction::Push { local, remote } => {
            let mut request = JobRequest {
                targets: targets(&args.appid, &args.label, args.all)?,
                task_type: TASK_FILE_PUT.to_owned(),
                timeout_secs: timeout,
                max_concurrency: concurrency(args.max_concurrency.as_deref())?,
                ..JobRequest::default()
            };
            let mode = args.mode.as_deref().map(parse_mode).transpose()?;
            let (hosts, flags) = (args.hosts, operator_flags!(args));
            let config = OperatorConfig::from_flags(flags)?;
            let uploaded = upload(&config.api(UPLOAD_TIMEOUT), &local)?;
            let mode = match mode {
                Some(mode) => mode,
                None => fs::metadata(&local).map(|m| m.permissions().mode() & files::MAX_MODE)?,
            };
            let spec = PutSpec {
                file_id: uploaded.file_id,
                path: remote,
                mode,
                size: uploaded.size,
                sha256: uploaded.sha256,
            };
            // A struct of strings and numbers always serializes.
            request.payload = serde_json::to_string(&spec).unwrap_or_default();
            let api = config.api(wait_timeout());
            let job: JobView = api.post(jobs::JOBS_PATH, &request)?;
            output::note(format_args!(
                "orange: copying {} bytes to {}",
                spec.size,
                super::job_print::hosts(job.targets)
            ));
            follow_to_the_end(&api, job, config.json, hosts)
        }
        Direction::Pull { remote, local } => {
            if !args.label.is_empty() || args.all || args.mode.is_some() {
                usage_bail!(
                    "a pull comes from one host: give --appid ID only (and no --mode: the remote one is kept)"
                );
            }
            let app_id = match args.appid.as_slice() {
                [one] if !one.contains(',') => one.clone(),
                _ => usage_bail!("a pull comes from one host: give exactly one --appid ID"),
            };
            let config = OperatorConfig::from_flags(operator_flags!(args))?;
            pull(&config, &app_id, &remote, &local, timeout)
        }
    }
}

/// Reads the two paths: the one starting with `:` is the remote one.
fn direction(paths: &[String]) -> Result<Direction> {
    let [first, second] = paths else {
        usage_bail!("give two paths: LOCAL :REMOTE_PATH (push) or :REMOTE_PATH LOCAL (pull)");
    };
    let checked = |remote: &str| -> Result<String> {
        files::check_remote_path(remote).map_err(usage)?;
        Ok(remote.to_owned())
    };
    match (first.strip_prefix(':'), second.strip_prefix(':')) {
        (None, Some(remote)) => Ok(Direction::Push { local: first.into(), remote: checked(remote)? }),
        (Some(remote), None) => Ok(Direction::Pull { remote: checked(remote)?, local: second.into() }),
        _ => usage_bail!("one path, and only one, must be remote (:REMOTE_PATH)"),
    }
}

/// Parses `--mode` as octal.
fn parse_mode(text: &str) -> Result<u32> {
    let mode =
        u32::from_str_radix(text, 8).map_err(|_| usage(format!("--mode {text:?} is not an octal mode")))?;
    files::check_mode(mode).map_err(usage)?;
    Ok(mode)
}

/// Parses `--max-concurrency`.
fn concurrency(text: Option<&str>) -> Result<Option<Limit>> {
    let Some(text) = text else { return Ok(None) };
    match Limit::parse(text).map_err(|e| usage(format!("--max-concurrency: {e}")))? {
        Limit::Count(0) | Limit::Percent(0) => usage_bail!("--max-concurrency must allow at least one host"),
        limit => Ok(Some(limit)),
    }
}

/// Streams `local` to the server and checks that what it stored is what was read.
fn upload(api: &Api, local: &Path) -> Result<Uploaded> {
    let (size, sha256) = hash_file(local)?;
    let mut file = File::open(local).with_context(|| format!("cannot open {}", local.display()))?;
    let uploaded: Uploaded = api.post_file(FILES_PATH, &mut file)?;
    if uploaded.size != size || uploaded.sha256 != sha256 {
        bail!(
            "the server stored {} bytes with sha256 {}, but {} has {size} bytes with sha256 {sha256} (did it change \
             during the copy?)",
            uploaded.size,
            uploaded.sha256,
            local.display()
        );
    }
    Ok(uploaded)
}

/// The size and SHA-256 of a local regular file.
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if !file.metadata()?.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; files::WIRE_CHUNK_LEN];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            return Ok((size, files::hex_digest(hasher)));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// Runs a `file.get` on `app_id`, then downloads, checks and writes what it read.
fn pull(
    config: &OperatorConfig,
    app_id: &str,
    remote: &str,
    local: &Path,
    timeout: Option<u64>,
) -> Result<i32> {
    let api = config.api(wait_timeout());
    let spec = GetSpec { path: remote.to_owned(), max_size: 0 };
    let request = EnqueueRequest {
        app_ids: vec![app_id.to_owned()],
        task_type: TASK_FILE_GET.to_owned(),
        // A struct of a string and a number always serializes.
        payload: serde_json::to_string(&spec).unwrap_or_default(),
        timeout_secs: timeout,
        require_online: true,
        ..EnqueueRequest::default()
    };
    let reply: EnqueueReply = api.post(TASKS_PATH, &request)?;
    let Some(task) = reply.tasks.into_iter().next() else { bail!("the server created no task") };
    let task = wait_task(&api, &task.task_id, None)?;
    if task.status != TaskStatus::Succeeded {
        let reason = task.error.clone().unwrap_or_else(|| "no reason given".into());
        bail!("{app_id}:{remote}: task {} {}: {reason}", task.task_id, task.status);
    }
    let got: GotFile = serde_json::from_str(&task.stdout).with_context(|| {
        format!("task {} reported no file: {:?}", task.task_id, limits::shown(&task.stdout))
    })?;
    let target = local_target(local, remote)?;
    write_local(&api, &task.task_id, &got, &target)?;
    if config.json {
        output::print_json(&got)?;
    } else {
        output::note(format_args!(
            "orange: copied {} bytes from {app_id}:{remote} to {} (sha256 {})",
            got.size,
            target.display(),
            got.sha256
        ));
    }
    Ok(0)
}

/// Where a pull writes: `local`, or the remote file's name inside it when it is a directory.
fn local_target(local: &Path, remote: &str) -> Result<PathBuf> {
    if local.is_dir() {
        let name = remote.rsplit('/').next().unwrap_or_default();
        return Ok(local.join(name));
    }
    Ok(local.to_owned())
}

/// Downloads task `task_id`'s file into a temporary file beside `target`, checks it against
/// `got`, gives it its mode, syncs it and renames it over `target`; removes it on failure.
fn write_local(api: &Api, task_id: &str, got: &GotFile, target: &Path) -> Result<()> {
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = parent_dir(target).join(format!(".{name}.orange-{}.tmp", std::process::id()));
    replace_atomically(&temp, target, || download_into(api, task_id, got, &temp))
}

fn download_into(api: &Api, task_id: &str, got: &GotFile, temp: &Path) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < got.size {
        let path = format!("{TASKS_PATH}/{}/{TASK_FILE_SUFFIX}?offset={offset}", encode(task_id));
        let bytes = api.get_bytes(&path)?;
        if bytes.is_empty() {
            bail!("the server holds {offset} bytes of the file, not the {} the agent reported", got.size);
        }
        file.write_all(&bytes).with_context(|| format!("cannot write {}", temp.display()))?;
        hasher.update(&bytes);
        offset += bytes.len() as u64;
    }
    let sha256 = files::hex_digest(hasher);
    if offset != got.size || sha256 != got.sha256 {
        bail!(
            "checksum mismatch: downloaded {offset} bytes with sha256 {sha256}, the agent read {} bytes with \
             sha256 {}",
            got.size,
            got.sha256
        );
    }
    file.set_permissions(Permissions::from_mode(got.mode))
        .with_context(|| format!("cannot chmod {}", temp.display()))?;
    file.sync_all().with_context(|| format!("cannot sync {}", temp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_path_says_which_way_a_copy_goes() {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(matches!(direction(&words(&["a", ":/srv/a"])), Ok(Direction::Push { .. })));
        assert!(matches!(direction(&words(&[":/srv/a", "a"])), Ok(Direction::Pull { .. })));
        assert!(direction(&words(&["a", "b"])).is_err());
        assert!(direction(&words(&[":/a", ":/b"])).is_err());
        assert!(direction(&words(&["a"])).is_err());
        let relative = direction(&words(&["a", ":srv/a"])).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(relative.contains("not absolute"), "{relative}");
        assert_eq!(parse_mode("644").ok(), Some(0o644));
        assert!(parse_mode("9").is_err() && parse_mode("17777").is_err());
    }
}
