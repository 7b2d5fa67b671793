//! A task's output: numbered chunks of at most [`CHUNK_LEN`] bytes, each tagged with its
//! stream. Past half the output cap, the head stops growing and only the newest chunks up to
//! the other half are kept (what failed is usually at the end); the bytes dropped between the
//! two are counted.

use super::records::{Stream, TaskRecord};
use super::tasks::fence;
use super::tx::owned_task;
use super::tx::{Tx, TxError, chunk_key};
use super::{CHUNK_LEN, ReportError, Store, StoreError};
use crate::protocol::{TaskId, TaskStatus};
use crate::server::metrics::TaskEvent;

/// An output chunk an agent sends ([`Store::store_chunk`]).
#[derive(Debug, Clone, Copy)]
pub struct NewChunk<'a> {
    /// The task.
    pub id: TaskId,
    /// Its number in the task's output, from 0.
    pub seq: u32,
    /// The stream it belongs to.
    pub stream: Stream,
    /// The bytes.
    pub data: &'a [u8],
    /// The delivery the agent holds; `None` from agents that name none.
    pub attempt: Option<u32>,
}

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
    let dropped_before = task.output.dropped_bytes;
    for piece in bytes.chunks(CHUNK_LEN) {
        append_one(tx, task, stream, piece, cap)?;
    }
    let dropped = task.output.dropped_bytes - dropped_before;
    tx.note(TaskEvent::Output { stored: bytes.len() as u64, dropped });
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
    tx.output.put(chunk_key(task.id, seq), value);
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
    /// task the server still thinks queued or delivered shows the agent runs it. A chunk of a
    /// superseded delivery (`attempt` earlier than the task's) is refused.
    pub fn store_chunk(
        &self,
        app_id: &str,
        chunk: &NewChunk<'_>,
        now_ms: i64,
    ) -> Result<ChunkAck, ReportError> {
        let NewChunk { id, seq, stream, data, attempt } = *chunk;
        self.transact(|tx| {
            let mut task = owned_task(tx, app_id, id)?;
            if let Err(superseded) = fence(&task, attempt) {
                return Ok(Err(superseded));
            }
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
        for entry in self.trees().output.range(chunk_key(id, after)..chunk_key(id, u32::MAX)) {
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
        let [stdout, stderr, result] = self.output_texts(task, max_bytes)?;
        Ok(match stream {
            Stream::Stdout => stdout,
            Stream::Stderr => stderr,
            Stream::Result => result,
        })
    }

    /// Up to `max_bytes` of each stream (stdout, stderr, result), read in one pass over the
    /// task's chunks, each with the note of what the cap dropped where it was dropped.
    pub fn output_texts(&self, task: &TaskRecord, max_bytes: usize) -> Result<[Vec<u8>; 3], StoreError> {
        let mut texts: [Vec<u8>; 3] = Default::default();
        let mut note_at: Option<[usize; 3]> = None;
        for entry in self.trees().output.range(chunk_key(task.id, 0)..chunk_key(task.id, u32::MAX)) {
            let (key, value) = entry?;
            let seq = u32::from_be_bytes(key[16..20].try_into().map_err(|_| corrupt("chunk key"))?);
            let (&tag, data) = value.split_first().ok_or_else(|| corrupt("empty chunk"))?;
            let stream = Stream::from_tag(tag).ok_or_else(|| corrupt("chunk stream tag"))?;
            let past_head = task.output.tail_start.is_some_and(|start| seq >= start);
            if note_at.is_none() && task.output.dropped_bytes > 0 && past_head {
                note_at = Some(texts.each_ref().map(Vec::len));
            }
            let text = &mut texts[stream as usize];
            if text.len() < max_bytes || note_at.is_some() {
                text.extend_from_slice(data);
            }
            let all_full = texts.iter().all(|t| t.len() >= max_bytes);
            if all_full && (note_at.is_some() || task.output.dropped_bytes == 0) {
                break;
            }
        }
        // The note goes where the dropped bytes were, in each stream that has output at all.
        if let Some(at) = note_at {
            let note = format!("\n[orange: {} bytes of output dropped]\n", task.output.dropped_bytes);
            for (text, at) in texts.iter_mut().zip(at) {
                if !text.is_empty() {
                    text.splice(at..at, note.bytes());
                }
            }
        }
        for text in &mut texts {
            text.truncate(max_bytes);
        }
        Ok(texts)
    }

    /// Deletes every output chunk of a task.
    pub(super) fn delete_output(&self, id: TaskId) -> Result<(), StoreError> {
        for key in self.trees().output.range(chunk_key(id, 0)..=chunk_key(id, u32::MAX)).keys() {
            self.trees().output.remove(key?)?;
        }
        Ok(())
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Codec(crate::server::codec::CodecError::Corrupt(format!("bad {what}")))
}
