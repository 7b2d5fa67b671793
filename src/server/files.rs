//! `Files`: copied files on the server. An operator's upload is stored piece by piece while it
//! streams in, hashed, bounded by `--max-file-mb`, and durable before it is answered; a
//! `file.put` task's agent reads it back in chunks, a `file.get` task's agent sends what it read
//! in chunks, and the operator downloads that. [`check_file_task`] is what an enqueue of a file
//! task must pass (the upload it names exists and matches; a read is given the server's limit).

use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::dispatch::Dispatch;
use super::error::ServiceError;
use super::store::{CHUNK_LEN, FileMeta, Store, TaskRecord};
use crate::protocol::files::{
    self, GetSpec, PutSpec, TASK_FILE_GET, TASK_FILE_PUT, UploadChunk, Uploaded, WIRE_CHUNK_LEN,
};
use crate::protocol::task::{new_task_id, parse_task_id};
use crate::protocol::{TaskId, wire};

/// Copied files, over the store.
pub struct Files {
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    max_bytes: u64,
}

/// An operator's upload under way: full pieces are stored as they come, the rest waits.
pub struct Upload {
    id: TaskId,
    stored: u64,
    pending: Vec<u8>,
    hasher: Sha256,
}

impl Files {
    /// Files over `store`, each at most `max_bytes`.
    pub fn new(store: Arc<Store>, dispatch: Arc<Dispatch>, max_bytes: u64) -> Self {
        Files { store, dispatch, max_bytes }
    }

    /// Starts an upload under a new file id.
    pub fn begin(&self) -> Result<Upload, ServiceError> {
        let id = new_task_id();
        self.store.put_file_meta(id, &FileMeta { complete: false, size: 0, sha256: [0; 32] })?;
        Ok(Upload { id, stored: 0, pending: Vec::new(), hasher: Sha256::new() })
    }

    /// Adds `bytes` to `upload`; past the limit the upload is deleted and refused.
    pub fn push(&self, upload: &mut Upload, bytes: &[u8]) -> Result<(), ServiceError> {
        let total = upload.stored + (upload.pending.len() + bytes.len()) as u64;
        if total > self.max_bytes {
            self.store.delete_file(upload.id)?;
            return Err(ServiceError::TooLarge(format!(
                "upload refused after {total} bytes: {}",
                files::too_large(total, self.max_bytes)
            )));
        }
        upload.hasher.update(bytes);
        upload.pending.extend_from_slice(bytes);
        let full = upload.pending.len() / CHUNK_LEN * CHUNK_LEN;
        if full > 0 {
            self.store.append_file(upload.id, upload.stored, &upload.pending[..full])?;
            upload.pending.drain(..full);
            upload.stored += full as u64;
        }
        Ok(())
    }

    /// Stores the rest of `upload`, marks it complete and waits until it is durable.
    pub async fn finish(&self, upload: Upload) -> Result<Uploaded, ServiceError> {
        self.store.append_file(upload.id, upload.stored, &upload.pending)?;
        let size = upload.stored + upload.pending.len() as u64;
        let sha256: [u8; 32] = upload.hasher.finalize().into();
        self.store.put_file_meta(upload.id, &FileMeta { complete: true, size, sha256 })?;
        self.store.durable().await?;
        Ok(Uploaded { file_id: upload.id.to_string(), size, sha256: hex::encode(sha256) })
    }

    /// Deletes an upload that did not finish (its body failed).
    pub fn abandon(&self, upload: Upload) -> Result<(), ServiceError> {
        Ok(self.store.delete_file(upload.id)?)
    }

    /// The bytes from `offset` of the file that agent `app_id`'s `file.put` task `task_id` writes.
    pub fn chunk_for_agent(&self, app_id: &str, task_id: &str, offset: u64) -> Result<Vec<u8>, ServiceError> {
        let task = self.open_task_of(app_id, task_id, TASK_FILE_PUT)?;
        let spec: PutSpec = serde_json::from_str(&task.payload)
            .map_err(|e| ServiceError::BadRequest(format!("task payload is not a file.put spec: {e}")))?;
        let file_id = parse_task_id(&spec.file_id).map_err(ServiceError::BadRequest)?;
        if !self.store.file_meta(file_id)?.is_some_and(|m| m.complete) {
            return Err(ServiceError::NotFound(format!(
                "file {file_id} is no longer on the server (kept for the retention period)"
            )));
        }
        Ok(self.store.read_file(file_id, offset, WIRE_CHUNK_LEN)?)
    }

    /// Stores a chunk of what agent `app_id`'s `file.get` task read; answers whether the task
    /// was cancelled. A chunk already stored is acknowledged again; one that skips ahead, or
    /// goes past the limit, is refused.
    pub async fn upload_from_agent(&self, app_id: &str, chunk: UploadChunk) -> Result<bool, ServiceError> {
        let task = self.open_task_of(app_id, &chunk.task_id, TASK_FILE_GET)?;
        if chunk.data.len() > WIRE_CHUNK_LEN.div_ceil(3) * 4 {
            return Err(ServiceError::TooLarge(format!(
                "a file chunk carries at most {WIRE_CHUNK_LEN} bytes"
            )));
        }
        let data = files::decode(&chunk.data).map_err(ServiceError::BadRequest)?;
        let end = chunk.offset.saturating_add(data.len() as u64);
        if end > self.max_bytes {
            return Err(ServiceError::TooLarge(files::too_large(end, self.max_bytes)));
        }
        let stored = self.store.file_len(task.id)?;
        if end <= stored {
            return Ok(task.cancel_requested);
        }
        if chunk.offset != stored || stored % CHUNK_LEN as u64 != 0 {
            return Err(ServiceError::BadRequest(format!(
                "file chunk at offset {} of task {} is out of order; {stored} bytes are stored",
                chunk.offset, task.id
            )));
        }
        self.store.append_file(task.id, stored, &data)?;
        self.store.durable().await?;
        self.dispatch.task_changed(task.id);
        Ok(task.cancel_requested)
    }

    /// Up to `max` bytes from `offset` of what `file.get` task `id` read.
    pub fn download(&self, id: TaskId, offset: u64, max: usize) -> Result<Vec<u8>, ServiceError> {
        let task =
            self.store.task(id)?.ok_or_else(|| ServiceError::NotFound(format!("unknown task {id}")))?;
        if task.task_type != TASK_FILE_GET {
            return Err(ServiceError::BadRequest(format!(
                "task {id} is a {} task, not file.get",
                task.task_type
            )));
        }
        Ok(self.store.read_file(id, offset, max)?)
    }

    /// Agent `app_id`'s task `task_id`, of type `task_type`, not finished.
    fn open_task_of(&self, app_id: &str, task_id: &str, task_type: &str) -> Result<TaskRecord, ServiceError> {
        let id = parse_task_id(task_id).map_err(ServiceError::BadRequest)?;
        let unknown = || ServiceError::NotFound(format!("unknown task {id}"));
        let task = self.store.task(id)?.ok_or_else(unknown)?;
        if task.app_id != app_id {
            return Err(ServiceError::BadRequest(format!("task {id} belongs to another agent")));
        }
        if task.task_type != task_type {
            return Err(ServiceError::BadRequest(format!(
                "task {id} is a {} task, not {task_type}",
                wire::shown(&task.task_type)
            )));
        }
        if task.status.is_final() {
            return Err(ServiceError::Conflict(format!("task {id} already finished as {}", task.status)));
        }
        Ok(task)
    }
}

/// Checks a file task's payload before it is enqueued: a `file.put` must name a complete
/// upload of the size and checksum it says, a valid path and mode; a `file.get` a valid path,
/// and its `max_size` is set to the server's limit. Other task types pass unchanged.
pub fn check_file_task(
    store: &Store,
    task_type: &str,
    payload: &mut String,
    max_bytes: u64,
) -> Result<(), ServiceError> {
    let bad = |e: String| ServiceError::BadRequest(e);
    match task_type {
        TASK_FILE_PUT => {
            let spec: PutSpec = serde_json::from_str(payload)
                .map_err(|e| bad(format!("a file.put payload must be its JSON spec: {e}")))?;
            files::check_remote_path(&spec.path).map_err(bad)?;
            files::check_mode(spec.mode).map_err(bad)?;
            files::check_sha256(&spec.sha256).map_err(bad)?;
            let file_id = parse_task_id(&spec.file_id).map_err(bad)?;
            let meta = store.file_meta(file_id)?.filter(|m| m.complete);
            let meta = meta.ok_or_else(|| ServiceError::NotFound(format!("no uploaded file {file_id}")))?;
            if meta.size != spec.size || hex::encode(meta.sha256) != spec.sha256 {
                return Err(bad(format!(
                    "file {file_id} holds {} bytes with sha256 {}, not what the payload says",
                    meta.size,
                    hex::encode(meta.sha256)
                )));
            }
            Ok(())
        }
        TASK_FILE_GET => {
            let mut spec: GetSpec = serde_json::from_str(payload)
                .map_err(|e| bad(format!("a file.get payload must be its JSON spec: {e}")))?;
            files::check_remote_path(&spec.path).map_err(bad)?;
            spec.max_size = max_bytes;
            // A struct of a string and a number always serializes.
            *payload = serde_json::to_string(&spec).unwrap_or_default();
            Ok(())
        }
        _ => Ok(()),
    }
}
