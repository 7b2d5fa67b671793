//! Copied files' bytes: the `files` tree holds pieces of at most [`CHUNK_LEN`] bytes keyed by
//! file id and piece number (every piece but the last is full), the `file_meta` tree what an
//! operator's upload came to. An uploaded file's id is a fresh UUID v7; a file a `file.get`
//! task read is kept under the task's id. Writes go through the logged trees like every other.
//! Retention deletes a read file with its task, and an uploaded one once its id is older than
//! the retention period.

use super::{CHUNK_LEN, Store, StoreError};
use crate::protocol::TaskId;

/// Version byte of a `file_meta` value.
const META_VERSION: u8 = 1;
/// Length of a `file_meta` value: version, complete flag, size, SHA-256.
const META_LEN: usize = 1 + 1 + 8 + 32;

/// What an upload came to, as `file_meta` keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// False while the upload is under way (or if it never finished).
    pub complete: bool,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of the bytes.
    pub sha256: [u8; 32],
}

impl FileMeta {
    fn encode(&self) -> Vec<u8> {
        let mut value = Vec::with_capacity(META_LEN);
        value.push(META_VERSION);
        value.push(u8::from(self.complete));
        value.extend_from_slice(&self.size.to_be_bytes());
        value.extend_from_slice(&self.sha256);
        value
    }

    fn decode(value: &[u8]) -> Result<FileMeta, StoreError> {
        if value.len() != META_LEN || value[0] != META_VERSION {
            return Err(corrupt("file meta"));
        }
        let size = u64::from_be_bytes(value[2..10].try_into().map_err(|_| corrupt("file size"))?);
        let sha256 = value[10..42].try_into().map_err(|_| corrupt("file sha256"))?;
        Ok(FileMeta { complete: value[1] == 1, size, sha256 })
    }
}

fn piece_key(id: TaskId, index: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(id.as_bytes());
    key[16..].copy_from_slice(&index.to_be_bytes());
    key
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(crate::server::codec::CodecError::Corrupt(format!("bad {what}")))
}

impl Store {
    /// Records what an upload of file `id` came to (an unfinished one too, so retention finds it).
    pub fn put_file_meta(&self, id: TaskId, meta: &FileMeta) -> Result<(), StoreError> {
        self.trees().file_meta.insert(id.as_bytes(), meta.encode())?;
        Ok(())
    }

    /// What the upload of file `id` came to, if there was one.
    pub fn file_meta(&self, id: TaskId) -> Result<Option<FileMeta>, StoreError> {
        self.trees().file_meta.get(id.as_bytes())?.map(|v| FileMeta::decode(&v)).transpose()
    }

    /// Bytes stored of file `id` (0 when none).
    pub fn file_len(&self, id: TaskId) -> Result<u64, StoreError> {
        let last = self.trees().files.scan_prefix(id.as_bytes()).next_back().transpose()?;
        let Some((key, value)) = last else { return Ok(0) };
        let index = u32::from_be_bytes(key[16..20].try_into().map_err(|_| corrupt("file piece key"))?);
        Ok(u64::from(index) * CHUNK_LEN as u64 + value.len() as u64)
    }

    /// Appends `bytes` to file `id`, which holds `len` bytes, all in full pieces (`len` is a
    /// multiple of [`CHUNK_LEN`]).
    pub fn append_file(&self, id: TaskId, len: u64, bytes: &[u8]) -> Result<(), StoreError> {
        debug_assert_eq!(len % CHUNK_LEN as u64, 0, "appends start at a piece boundary");
        let first = (len / CHUNK_LEN as u64) as u32;
        for (n, piece) in bytes.chunks(CHUNK_LEN).enumerate() {
            self.trees().files.insert(piece_key(id, first + n as u32), piece)?;
        }
        Ok(())
    }

    /// Up to `max` bytes of file `id` from `offset` (fewer at its end).
    pub fn read_file(&self, id: TaskId, offset: u64, max: usize) -> Result<Vec<u8>, StoreError> {
        let first = (offset / CHUNK_LEN as u64).min(u64::from(u32::MAX)) as u32;
        let mut skip = (offset % CHUNK_LEN as u64) as usize;
        let mut out = Vec::new();
        for entry in self.trees().files.range(piece_key(id, first)..=piece_key(id, u32::MAX)) {
            let (_, value) = entry?;
            let piece = value.get(skip..).unwrap_or_default();
            skip = 0;
            let room = max - out.len();
            out.extend_from_slice(&piece[..piece.len().min(room)]);
            if out.len() == max {
                break;
            }
        }
        Ok(out)
    }

    /// Deletes file `id`: its pieces, then its meta.
    pub fn delete_file(&self, id: TaskId) -> Result<(), StoreError> {
        for key in self.trees().files.scan_prefix(id.as_bytes()).keys() {
            self.trees().files.remove(key?)?;
        }
        self.trees().file_meta.remove(id.as_bytes())?;
        Ok(())
    }

    /// Deletes uploaded files whose id was minted before `cutoff_ms`; returns how many.
    pub fn sweep_files(&self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let mut old = Vec::new();
        for key in self.trees().file_meta.iter().keys() {
            let id = TaskId::from_slice(&key?).map_err(|_| corrupt("file id"))?;
            let minted_ms = id.get_timestamp().map_or(0, |t| t.to_unix().0 as i64 * 1000);
            if minted_ms < cutoff_ms {
                old.push(id);
            }
        }
        for id in &old {
            self.delete_file(*id)?;
        }
        Ok(old.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Policy;

    #[test]
    fn a_file_is_kept_in_pieces_read_back_from_any_offset_and_deleted() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Io(e.to_string()))?;
        let store = Store::open(dir.path(), 1 << 20, Policy::default())?;
        let id = crate::protocol::task::new_task_id();
        let bytes: Vec<u8> = (0..CHUNK_LEN * 2 + 100).map(|i| (i % 251) as u8).collect();
        store.append_file(id, 0, &bytes[..CHUNK_LEN])?;
        assert_eq!(store.file_len(id)?, CHUNK_LEN as u64);
        store.append_file(id, CHUNK_LEN as u64, &bytes[CHUNK_LEN..])?;
        assert_eq!(store.file_len(id)?, bytes.len() as u64);
        assert_eq!(store.read_file(id, 0, usize::MAX / 2)?, bytes);
        assert_eq!(store.read_file(id, 70_000, 10)?, &bytes[70_000..70_010]);
        assert!(store.read_file(id, bytes.len() as u64, 10)?.is_empty());
        let meta = FileMeta { complete: true, size: bytes.len() as u64, sha256: [7; 32] };
        store.put_file_meta(id, &meta)?;
        assert_eq!(store.file_meta(id)?, Some(meta));
        assert_eq!(store.sweep_files(0)?, 0, "a file younger than the cutoff stays");
        assert_eq!(store.sweep_files(i64::MAX)?, 1);
        assert_eq!((store.file_len(id)?, store.file_meta(id)?), (0, None));
        Ok(())
    }
}
