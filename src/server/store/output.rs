//! A task's output: numbered chunks of at most [`CHUNK_LEN`] bytes, each tagged with its
//! stream. Past half the output cap, the head stops growing and only the newest chunks up to
//! the other half are kept (what failed is usually at the end); the bytes dropped between the
//! two are counted.

use super::records::{Stream, TaskRecord};
use super::tx::{Tx, TxError, chunk_key};
use super::{CHUNK_LEN, ReportError, Store, StoreError, tasks::owned_task};
use crate::protocol::{TaskId, TaskStatus};

/// One stored chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Its number.
    pub seq: u32,
    /// Its stream.
    pub stream: Stream,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// What the agent learns when a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkAck {
    /// An operator cancelled the task: stop it.
    pub cancel: bool,
}

/// Appends `bytes` of `stream` to a task's output, in chunks, applying the cap.
pub(super) fn append<E>(
    tx: &Tx<'_>,
    task: &mut TaskRecord,
    stream: Stream,
    bytes: &[u8],
    cap: u64,
) -> Result<(), TxError<E>> {
    for piece in bytes.chunks(CHUNK_LEN) {
        append_one(tx, task, stream, piece, cap)?;
    }
    Ok(())
}

fn append_one<E>(
    tx: &Tx<'_>,
    task: &mut TaskRecord,
    stream: Stream,
    piece: &[u8],
    cap: u64,
) -> Result<(), TxError<E>> {
    let seq = task.output.next_seq;
    let mut value = Vec::with_capacity(piece.len() + 1);
    value.push(stream as u8);
    value.extend_from_slice(piece);
    tx.output.insert(chunk_key(task.id, seq), value)?;
    task.output.next_seq += 1;
    let half = cap / 2;
    let state = &mut task.output;
    if state.tail_start.is_none() && state.head_bytes + piece.len() as u64 <= half {
        state.head_bytes += piece.len() as u64;
        return Ok(());
    }
    if state.tail_start.is_none() {
        state.tail_start = Some(seq);
        state.tail_oldest = seq;
    }
    state.tail_bytes += piece.len() as u64;
    while state.tail_bytes > half && state.tail_oldest < seq {
        let dropped =
            tx.output.remove(chunk_key(task.id, state.tail_oldest))?.map_or(0, |v| v.len().saturating_sub(1));
        state.tail_bytes -= dropped as u64;
        state.dropped_bytes += dropped as u64;
        state.tail_oldest += 1;
    }
    Ok(())
}

impl Store {
    /// Stores output chunk `seq` of a running task. A chunk already stored is acknowledged
    /// again without being stored twice; a chunk that skips ahead is refused. A chunk for a
    /// task the server still thinks queued or delivered shows the agent runs it.
    pub fn store_chunk(
        &self,
        app_id: &str,
        id: TaskId,
        seq: u32,
        stream: Stream,
        data: &[u8],
        now_ms: i64,
    ) -> Result<ChunkAck, ReportError> {
        self.transact(|tx| {
            let mut task = owned_task(tx, app_id, id)?;
            if task.status.is_final() {
                return Ok(Err(ReportError::AlreadyFinished { id, status: task.status }));
            }
            let expected = task.output.next_seq;
            if seq < expected {
                return Ok(Ok(ChunkAck { cancel: task.cancel_requested }));
            }
            if seq > expected {
                return Ok(Err(ReportError::OutOfOrder { id, seq, expected }));
            }
            self.start_if_needed(tx, &mut task, TaskStatus::Running, now_ms)?;
            if task.status == TaskStatus::Delivered {
                task.move_to(TaskStatus::Running, now_ms);
            }
            append(tx, &mut task, stream, data, self.policy.output_cap)?;
            tx.put_task(&task)?;
            Ok::<_, TxError<ReportError>>(Ok(ChunkAck { cancel: task.cancel_requested }))
        })?
    }

    /// A task's chunks numbered `after` and later, in order, up to about `max_bytes`.
    pub fn chunks(&self, id: TaskId, after: u32, max_bytes: usize) -> Result<Vec<Chunk>, StoreError> {
        let mut out = Vec::new();
        let mut total = 0;
        for entry in self.output.range(chunk_key(id, after)..chunk_key(id, u32::MAX)) {
            let (key, value) = entry?;
            let seq = u32::from_be_bytes(key[16..20].try_into().map_err(|_| corrupt("chunk key"))?);
            let (&tag, data) = value.split_first().ok_or_else(|| corrupt("empty chunk"))?;
            let stream = Stream::from_tag(tag).ok_or_else(|| corrupt("chunk stream tag"))?;
            total += data.len();
            out.push(Chunk { seq, stream, data: data.to_vec() });
            if total >= max_bytes {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `max_bytes` of one stream of a task's output: the head, a note of what the cap
    /// dropped (if anything), and the tail.
    pub fn output_text(
        &self,
        task: &TaskRecord,
        stream: Stream,
        max_bytes: usize,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        let mut note_at = None;
        for chunk in self.chunks(task.id, 0, usize::MAX)? {
            let past_head = task.output.tail_start.is_some_and(|start| chunk.seq >= start);
            if note_at.is_none() && task.output.dropped_bytes > 0 && past_head {
                note_at = Some(out.len());
            }
            if chunk.stream == stream {
                out.extend_from_slice(&chunk.data);
            }
            if note_at.is_none() && out.len() >= max_bytes {
                break;
            }
        }
        // The note goes where the dropped bytes were, in a stream that has output at all.
        if let Some(at) = note_at.filter(|_| !out.is_empty()) {
            let note = format!("\n[orange: {} bytes of output dropped]\n", task.output.dropped_bytes);
            out.splice(at..at, note.into_bytes());
        }
        out.truncate(max_bytes);
        Ok(out)
    }

    /// Deletes every output chunk of a task.
    pub(super) fn delete_output(&self, id: TaskId) -> Result<(), StoreError> {
        for key in self.output.range(chunk_key(id, 0)..=chunk_key(id, u32::MAX)).keys() {
            self.output.remove(key?)?;
        }
        Ok(())
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(crate::server::codec::CodecError::Corrupt(format!("bad {what}")))
}
