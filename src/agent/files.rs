//! File copy on the host: `file.put` writes a file it fetches from the server in chunks, and
//! `file.get` sends a file to the server in chunks. Writes happen only under the agent's
//! `--allow-write-root` directories and reads only under its `--allow-read-root` ones (none by
//! default: refused, naming the flag); paths are canonicalised first, so neither `..` nor a
//! symlink leads out of a root. A write is atomic: a temporary file in the target's directory,
//! checked against the size and SHA-256 the server gave, synced, given its mode, renamed over
//! the target, and the directory synced; a failed write leaves no trace.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::handler::{TaskContext, TaskOutcome};
use super::retry::{Sent, until_done};
use super::shared::Shared;
use crate::protocol::WireTask;
use crate::protocol::files::{self, ChunkRequest, GetSpec, GotFile, PutSpec, UploadChunk, WIRE_CHUNK_LEN};

/// Why a task ended early, as its outcome.
type Stop = TaskOutcome;

/// The directories file tasks may touch.
#[derive(Debug, Clone, Default)]
pub struct FileRoots {
    /// Canonical directories `file.put` may write under.
    pub write: Vec<PathBuf>,
    /// Canonical directories `file.get` may read under.
    pub read: Vec<PathBuf>,
}

impl FileRoots {
    /// Runs a `file.put` task.
    pub fn put(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        self.try_put(task, ctx).unwrap_or_else(|stop| stop)
    }

    /// Runs a `file.get` task.
    pub fn get(&self, task: &WireTask, ctx: &TaskContext) -> TaskOutcome {
        self.try_get(task, ctx).unwrap_or_else(|stop| stop)
    }

    fn try_put(&self, task: &WireTask, ctx: &TaskContext) -> Result<TaskOutcome, Stop> {
        let spec: PutSpec = serde_json::from_str(&task.payload)
            .map_err(|e| TaskOutcome::failed(format!("file.put payload is not a file spec: {e}")))?;
        files::check_remote_path(&spec.path).map_err(TaskOutcome::failed)?;
        files::check_mode(spec.mode).map_err(TaskOutcome::failed)?;
        let shared = ctx.shared().ok_or_else(|| TaskOutcome::failed(DETACHED))?;
        let (dir, name) = self.write_target(&spec.path)?;
        let target = dir.join(name);
        if target.is_dir() {
            return Err(TaskOutcome::failed(format!("{} is a directory", target.display())));
        }
        let temp = dir.join(format!(".orange-{}.tmp", task.task_id));
        let written = write_temp(shared, task, ctx, &spec, &temp).and_then(|()| {
            fs::rename(&temp, &target).map_err(|e| io_failed("rename the temporary file to", &target, e))?;
            File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| io_failed("sync directory", &dir, e))
        });
        if let Err(stop) = written {
            let _ = fs::remove_file(&temp);
            return Err(stop);
        }
        Ok(TaskOutcome::success(format!(
            "wrote {} bytes to {} (mode {:04o}, sha256 {})\n",
            spec.size,
            target.display(),
            spec.mode,
            spec.sha256
        )))
    }

    /// The canonical directory and the file name `path` writes to, the directory under a write root.
    fn write_target<'a>(&self, path: &'a str) -> Result<(PathBuf, &'a std::ffi::OsStr), Stop> {
        if self.write.is_empty() {
            return Err(TaskOutcome::failed(
                "this agent writes no files: start it with --allow-write-root DIR to let orange cp write under DIR",
            ));
        }
        let path = Path::new(path);
        let (Some(parent), Some(Component::Normal(name))) = (path.parent(), path.components().next_back())
        else {
            return Err(TaskOutcome::failed(format!("{} does not name a file", path.display())));
        };
        let dir = parent
            .canonicalize()
            .map_err(|e| TaskOutcome::failed(format!("cannot open directory {}: {e}", parent.display())))?;
        if !self.write.iter().any(|root| dir.starts_with(root)) {
            return Err(TaskOutcome::failed(outside("write", path, &dir, &self.write, "--allow-write-root")));
        }
        Ok((dir, name))
    }

    fn try_get(&self, task: &WireTask, ctx: &TaskContext) -> Result<TaskOutcome, Stop> {
        let spec: GetSpec = serde_json::from_str(&task.payload)
            .map_err(|e| TaskOutcome::failed(format!("file.get payload is not a file spec: {e}")))?;
        files::check_remote_path(&spec.path).map_err(TaskOutcome::failed)?;
        if spec.max_size == 0 {
            return Err(TaskOutcome::failed("the server gave no size limit for file.get"));
        }
        let shared = ctx.shared().ok_or_else(|| TaskOutcome::failed(DETACHED))?;
        let path = self.read_source(&spec.path)?;
        let mut file = File::open(&path).map_err(|e| io_failed("open", &path, e))?;
        let meta = file.metadata().map_err(|e| io_failed("read the metadata of", &path, e))?;
        if !meta.is_file() {
            return Err(TaskOutcome::failed(format!("{} is not a regular file", path.display())));
        }
        if meta.len() > spec.max_size {
            return Err(TaskOutcome::failed(files::too_large(meta.len(), spec.max_size)));
        }
        let (size, sha256) = send_file(shared, task, ctx, &mut file, spec.max_size)?;
        Ok(success(&GotFile { size, mode: meta.permissions().mode() & files::MAX_MODE, sha256 }))
    }

    /// The canonical path `path` reads, under a read root.
    fn read_source(&self, path: &str) -> Result<PathBuf, Stop> {
        if self.read.is_empty() {
            return Err(TaskOutcome::failed(
                "this agent reads no files: start it with --allow-read-root DIR to let orange cp read under DIR",
            ));
        }
        let path = Path::new(path);
        let canonical = path
            .canonicalize()
            .map_err(|e| TaskOutcome::failed(format!("cannot open {}: {e}", path.display())))?;
        if !self.read.iter().any(|root| canonical.starts_with(root)) {
            return Err(TaskOutcome::failed(outside(
                "read",
                path,
                &canonical,
                &self.read,
                "--allow-read-root",
            )));
        }
        Ok(canonical)
    }
}

/// Why a file task cannot run outside an agent.
const DETACHED: &str = "file tasks run only inside an agent connected to its server";

/// The message refusing `path` (which resolves to `resolved`) outside `roots`.
fn outside(verb: &str, path: &Path, resolved: &Path, roots: &[PathBuf], flag: &str) -> String {
    let roots: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    format!(
        "{} resolves to {}, outside the directories this agent may {verb} ({flag}: {})",
        path.display(),
        resolved.display(),
        roots.join(", ")
    )
}

fn io_failed(what: &str, path: &Path, e: std::io::Error) -> Stop {
    TaskOutcome::failed(format!("cannot {what} {}: {e}", path.display()))
}

/// The outcome of a `file.get`: what it read, as JSON the CLI checks its download against.
fn success(got: &GotFile) -> TaskOutcome {
    // A struct of numbers and a string always serializes.
    TaskOutcome::success(serde_json::to_string(got).unwrap_or_default())
}

/// Fetches the file into a new `temp` (mode 0600 until it is complete), checks its size and
/// SHA-256, syncs it and gives it its mode.
fn write_temp(
    shared: &Shared,
    task: &WireTask,
    ctx: &TaskContext,
    spec: &PutSpec,
    temp: &Path,
) -> Result<(), Stop> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| io_failed("create", temp, e))?;
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    while offset < spec.size {
        if ctx.is_cancelled() {
            return Err(TaskOutcome::cancelled("cancelled while the file was copied"));
        }
        let request = ChunkRequest { task_id: task.task_id.clone(), offset };
        let reply = match until_done(shared, "file chunk", || shared.client.file_chunk(&request)) {
            Sent::Done(reply) => reply,
            Sent::Refused(reason) => {
                return Err(TaskOutcome::failed(format!("the server refused the file: {reason}")));
            }
            Sent::GaveUp => return Err(TaskOutcome::failed("the agent stopped during the copy")),
        };
        let bytes = files::decode(&reply.data).map_err(TaskOutcome::failed)?;
        if bytes.is_empty() || offset + bytes.len() as u64 > spec.size {
            return Err(TaskOutcome::failed(format!("the server's file is not {} bytes long", spec.size)));
        }
        file.write_all(&bytes).map_err(|e| io_failed("write", temp, e))?;
        hasher.update(&bytes);
        offset += bytes.len() as u64;
    }
    let sha256 = files::hex_digest(hasher);
    if sha256 != spec.sha256 {
        return Err(TaskOutcome::failed(format!(
            "checksum mismatch: wrote sha256 {sha256}, expected {}",
            spec.sha256
        )));
    }
    file.set_permissions(Permissions::from_mode(spec.mode))
        .map_err(|e| io_failed("set the mode of", temp, e))?;
    file.sync_all().map_err(|e| io_failed("sync", temp, e))
}

/// Sends `file` to the server in chunks; its size and SHA-256. A file that grows past `max`
/// while it is read is refused.
fn send_file(
    shared: &Shared,
    task: &WireTask,
    ctx: &TaskContext,
    file: &mut File,
    max: u64,
) -> Result<(u64, String), Stop> {
    let mut hasher = Sha256::new();
    let mut offset = 0u64;
    loop {
        let mut buf = Vec::with_capacity(WIRE_CHUNK_LEN);
        let read = Read::by_ref(file).take(WIRE_CHUNK_LEN as u64).read_to_end(&mut buf);
        read.map_err(|e| TaskOutcome::failed(format!("cannot read the file: {e}")))?;
        if buf.is_empty() {
            return Ok((offset, files::hex_digest(hasher)));
        }
        if offset + buf.len() as u64 > max {
            return Err(TaskOutcome::failed(files::too_large(offset + buf.len() as u64, max)));
        }
        hasher.update(&buf);
        let chunk = UploadChunk { task_id: task.task_id.clone(), offset, data: files::encode(&buf) };
        match until_done(shared, "file upload", || shared.client.file_upload(&chunk)) {
            Sent::Done(ack) if ack.cancel || ctx.is_cancelled() => {
                return Err(TaskOutcome::cancelled("cancelled while the file was copied"));
            }
            Sent::Done(_) => {}
            Sent::Refused(reason) => {
                return Err(TaskOutcome::failed(format!("the server refused the file: {reason}")));
            }
            Sent::GaveUp => return Err(TaskOutcome::failed("the agent stopped during the copy")),
        }
        offset += buf.len() as u64;
    }
}
