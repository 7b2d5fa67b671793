//! File copy (`orange cp`): the two task types (`file.put` writes a file the operator uploaded,
//! `file.get` reads one back), their JSON payloads, the routes that carry the bytes (the
//! operator's upload and download, the agent's signed chunk calls), the size of a chunk, the
//! rules a remote path and a mode follow, and the messages shared by the server, the agent and
//! the CLI. A file task needs the agent feature [`super::features::FEATURE_FILES`], so an agent
//! that does not announce it never gets one.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// Task type writing an uploaded file on the host.
pub const TASK_FILE_PUT: &str = "file.put";
/// Task type reading a file of the host back to the server.
pub const TASK_FILE_GET: &str = "file.get";

/// Operator route: `POST` a file's bytes as the raw body; answers [`Uploaded`].
pub const FILES_PATH: &str = "/api/v1/files";
/// Operator route under a task: `GET /api/v1/tasks/{id}/file`, the bytes a `file.get` task read.
pub const TASK_FILE_SUFFIX: &str = "file";
/// Agent route (signed): a piece of the file a `file.put` task writes ([`ChunkRequest`] →
/// [`ChunkReply`]).
pub const FILE_CHUNK_PATH: &str = "/orange-forge/api/fileChunk";
/// Agent route (signed): a piece of the file a `file.get` task read ([`UploadChunk`] → the
/// output acknowledgement).
pub const FILE_UPLOAD_PATH: &str = "/orange-forge/api/fileUpload";

/// Bytes one agent call carries (the last piece of a file may be shorter).
pub const WIRE_CHUNK_LEN: usize = 1024 * 1024;
/// Longest remote path, in bytes (Linux's `PATH_MAX`).
pub const MAX_REMOTE_PATH_LEN: usize = 4096;
/// Highest mode a file may be given: permission bits, setuid, setgid and sticky.
pub const MAX_MODE: u32 = 0o7777;

/// Payload of a `file.put` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutSpec {
    /// The uploaded file's id ([`Uploaded::file_id`]).
    pub file_id: String,
    /// Absolute path to write on the host.
    pub path: String,
    /// Mode bits of the written file.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// Payload of a `file.get` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetSpec {
    /// Absolute path to read on the host.
    pub path: String,
    /// Most bytes the server takes: set by the server at enqueue (its `--max-file-mb`).
    #[serde(default)]
    pub max_size: u64,
}

/// What a successful `file.get` reports as its output: what it read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GotFile {
    /// Size in bytes.
    pub size: u64,
    /// Mode bits of the file on the host.
    pub mode: u32,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
}

/// The answer to an upload on [`FILES_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    /// Id naming the file in a [`PutSpec`].
    pub file_id: String,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes stored, lowercase hex.
    pub sha256: String,
}

/// Body of [`FILE_CHUNK_PATH`]: the bytes of task `task_id`'s file from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    /// The `file.put` task.
    pub task_id: String,
    /// First byte wanted.
    pub offset: u64,
}

/// Data of the answer to [`FILE_CHUNK_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkReply {
    /// Up to [`WIRE_CHUNK_LEN`] bytes from the offset asked, base64 (empty at the end).
    pub data: String,
}

/// Body of [`FILE_UPLOAD_PATH`]: bytes of a `file.get` task's file at `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadChunk {
    /// The `file.get` task.
    pub task_id: String,
    /// Where the bytes go; every chunk but the last is [`WIRE_CHUNK_LEN`] bytes.
    pub offset: u64,
    /// The bytes, base64.
    pub data: String,
}

/// `bytes` as a chunk's `data`.
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A chunk's `data` as bytes; the error says the base64 is bad.
pub fn decode(data: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(data).map_err(|e| format!("chunk data is not base64: {e}"))
}

/// True for the task types of file copy.
pub fn is_file_task(task_type: &str) -> bool {
    task_type == TASK_FILE_PUT || task_type == TASK_FILE_GET
}

/// Checks a remote path as typed: absolute, at most [`MAX_REMOTE_PATH_LEN`] bytes, no NUL, and
/// naming a file (not `/`, not ending in `/`, `.` or `..`). Where it leads is the agent's check.
pub fn check_remote_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("remote path {path:?} is not absolute (it must start with /)"));
    }
    if path.len() > MAX_REMOTE_PATH_LEN {
        return Err(format!("remote path is {} bytes; the limit is {MAX_REMOTE_PATH_LEN}", path.len()));
    }
    if path.contains('\0') {
        return Err("remote path contains a NUL byte".into());
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    if last.is_empty() || last == "." || last == ".." {
        return Err(format!("remote path {path:?} does not name a file"));
    }
    Ok(())
}

/// Checks mode bits: at most [`MAX_MODE`].
pub fn check_mode(mode: u32) -> Result<(), String> {
    if mode > MAX_MODE {
        return Err(format!("mode {mode:o} is not a file mode (at most 7777 octal)"));
    }
    Ok(())
}

/// Checks a SHA-256 as written in a spec: 64 lowercase hex digits.
pub fn check_sha256(sha256: &str) -> Result<(), String> {
    let hex = sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if sha256.len() != 64 || !hex {
        return Err(format!("sha256 {:?} is not 64 lowercase hex digits", super::limits::shown(sha256)));
    }
    Ok(())
}

/// Why a file of `size` bytes is refused under a limit of `limit` bytes.
pub fn too_large(size: u64, limit: u64) -> String {
    format!(
        "the file is {size} bytes, larger than the server's limit of {limit} bytes ({} MiB, orange server \
         --max-file-mb)",
        limit / (1024 * 1024)
    )
}

/// The lowercase hex SHA-256 of a finished hasher.
pub fn hex_digest(hasher: sha2::Sha256) -> String {
    use sha2::Digest;
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_paths_must_be_absolute_bounded_and_name_a_file() {
        assert!(check_remote_path("/srv/app.conf").is_ok());
        assert!(check_remote_path("srv/app.conf").unwrap_err().contains("not absolute"));
        assert!(check_remote_path("/").unwrap_err().contains("does not name a file"));
        assert!(check_remote_path("/srv/").is_err());
        assert!(check_remote_path("/srv/..").is_err());
        assert!(
            check_remote_path(&format!("/{}", "a".repeat(MAX_REMOTE_PATH_LEN)))
                .unwrap_err()
                .contains("limit")
        );
        assert!(check_remote_path("/a\0b").is_err());
    }

    #[test]
    fn modes_hashes_and_chunks_are_checked() {
        assert!(check_mode(0o755).is_ok());
        assert!(check_mode(0o10000).is_err());
        assert!(check_sha256(&"a".repeat(64)).is_ok());
        assert!(check_sha256(&"A".repeat(64)).is_err());
        assert_eq!(decode(&encode(b"\0\xffx")).unwrap(), b"\0\xffx");
        assert!(decode("!!").is_err());
        assert!(too_large(10, 1024 * 1024).contains("--max-file-mb"));
    }
}
