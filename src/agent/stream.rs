//! Live output: a running task's stdout and stderr streamed to the server as numbered chunks.
//! [`ChunkSink`] buffers at most about one chunk per stream and flushes every
//! [`FLUSH_EVERY`] while output flows, or as soon as a stream has [`MAX_CHUNK_LEN`] bytes;
//! [`TaskStream`] numbers the chunks from 0 without gaps and sends them one at a time, each
//! retried until acknowledged. Chunks carry the bytes the process wrote, unchanged: as text when
//! they are valid UTF-8 (a character cut by a flush waits for its last bytes), else as base64
//! marked so on the wire (see `protocol::bytes`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::control::TaskControl;
use super::retry::{Sent, stops_the_task, until_done};
use super::shared::Shared;
use super::sink::{OutputSink, Stream};
use crate::protocol::wire::{MAX_CHUNK_LEN, OutputChunk};

/// Longest time output waits in the agent before it is sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// What streaming a task's output came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSummary {
    /// Chunks the server acknowledged.
    pub chunks: u32,
    /// Bytes of output that could not be streamed.
    pub dropped: u64,
    /// Why streaming stopped early, if it did.
    pub stopped: Option<String>,
}

/// The output stream of one task: numbering and sending its chunks.
pub struct TaskStream {
    shared: Arc<Shared>,
    task_id: String,
    control: Arc<TaskControl>,
    state: Mutex<StreamState>,
}

#[derive(Debug, Default)]
struct StreamState {
    next_seq: u32,
    used: bool,
    dropped: u64,
    stopped: Option<String>,
}

impl TaskStream {
    /// The stream of task `task_id`; an ack asking to cancel sets `control`'s flag.
    pub fn new(shared: Arc<Shared>, task_id: &str, control: Arc<TaskControl>) -> Arc<Self> {
        Arc::new(TaskStream { shared, task_id: task_id.to_owned(), control, state: Mutex::default() })
    }

    /// The agent's shared state (its client, its stop flag), for a task's own calls.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        // Only the sink thread of the task's current process sends; a poisoned count is still right.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What streaming came to; `None` if the task never streamed (no process ran).
    pub fn summary(&self) -> Option<StreamSummary> {
        let state = self.lock();
        state.used.then(|| StreamSummary {
            chunks: state.next_seq,
            dropped: state.dropped,
            stopped: state.stopped.clone(),
        })
    }

    /// Sends `bytes` as the next chunk, retrying until the server acknowledges it. After a
    /// refusal or giving up, later bytes are only counted as dropped.
    fn send(&self, stream: Stream, bytes: &[u8]) {
        let mut state = self.lock();
        let len = bytes.len() as u64;
        if state.stopped.is_some() {
            state.dropped += len;
            return;
        }
        let chunk = OutputChunk {
            attempt: self.control.attempt(),
            ..OutputChunk::new(&self.task_id, state.next_seq, stream.name(), bytes)
        };
        match until_done(&self.shared, "output chunk", || self.shared.client.post_output(&chunk)) {
            Sent::Done(ack) => {
                debug!(seq = chunk.seq, stream = %chunk.stream, bytes = len, "output chunk sent");
                state.next_seq += 1;
                if ack.cancel && !self.control.is_cancelled() {
                    info!("the server says the task was cancelled; stopping it");
                    self.control.cancel();
                }
            }
            Sent::Refused(reason) => {
                warn!(seq = chunk.seq, %reason, "server refused output; not streaming more");
                if stops_the_task(&reason) {
                    self.control.cancel();
                }
                state.dropped += len;
                state.stopped = Some(format!("the server refused it: {reason}"));
            }
            Sent::GaveUp => {
                state.dropped += len;
                state.stopped = Some("the agent stopped while the server was unreachable".to_owned());
            }
        }
    }
}

/// The [`OutputSink`] of one process of a streaming task.
pub struct ChunkSink {
    stream: Arc<TaskStream>,
    pending: [Vec<u8>; 2],
    since: Option<Instant>,
}

impl ChunkSink {
    /// A sink sending to `stream`; from now on the task counts as streaming.
    pub fn new(stream: Arc<TaskStream>) -> Self {
        stream.lock().used = true;
        ChunkSink { stream, pending: [Vec::new(), Vec::new()], since: None }
    }

    /// Sends full chunks of `stream` while it has at least [`MAX_CHUNK_LEN`] bytes buffered.
    fn send_full(&mut self, stream: Stream) {
        while self.pending[stream.index()].len() >= MAX_CHUNK_LEN {
            let bytes = take_chunk(&mut self.pending[stream.index()], MAX_CHUNK_LEN, false);
            if bytes.is_empty() {
                break;
            }
            self.stream.send(stream, &bytes);
        }
    }

    /// Sends everything buffered (but a cut character, unless the output `ended`).
    fn flush(&mut self, ended: bool) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            loop {
                let bytes = take_chunk(&mut self.pending[stream.index()], MAX_CHUNK_LEN, ended);
                if bytes.is_empty() {
                    break;
                }
                self.stream.send(stream, &bytes);
            }
        }
        self.since = self.pending.iter().any(|p| !p.is_empty()).then(Instant::now);
    }
}

impl OutputSink for ChunkSink {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        self.pending[stream.index()].extend_from_slice(bytes);
        self.since.get_or_insert_with(Instant::now);
        self.send_full(stream);
        if self.pending.iter().all(Vec::is_empty) {
            self.since = None;
        }
        self.tick();
    }

    fn tick(&mut self) {
        if self.since.is_some_and(|since| since.elapsed() >= FLUSH_EVERY) {
            self.flush(false);
        }
    }

    fn close(&mut self) -> (String, String) {
        self.flush(true);
        (String::new(), String::new())
    }
}

/// Takes from the front of `buf` at most `max` bytes to send as one chunk. A character cut at
/// the end stays in `buf` for the bytes that complete it, unless the output `ended`, so that
/// text output travels as text; any other bytes go as they are.
pub fn take_chunk(buf: &mut Vec<u8>, max: usize, ended: bool) -> Vec<u8> {
    let mut end = buf.len().min(max);
    if !ended {
        end -= incomplete_tail(&buf[..end]);
    }
    buf.drain(..end).collect()
}

/// Length of the start of a UTF-8 character at the end of `bytes` that misses its last bytes
/// (0 when `bytes` ends on a character boundary or in bytes that are not UTF-8 anyway).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let back = bytes.len().min(3);
    for len in 1..=back {
        let byte = bytes[bytes.len() - len];
        if byte & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead byte
        }
        let needed = match byte {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        return if len < needed { len } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_character_cut_at_the_end_waits_for_its_last_bytes() {
        let mut buf = "aé€".as_bytes().to_vec();
        buf.push(0xF0); // the first byte of a four-byte character
        assert_eq!(take_chunk(&mut buf, 4, false), "aé".as_bytes());
        assert_eq!(take_chunk(&mut buf, 4, false), "€".as_bytes());
        assert_eq!(buf, [0xF0]);
        assert_eq!(take_chunk(&mut buf, 4, false), b"");
        buf.extend_from_slice(&[0x9F, 0x8D, 0x8A]);
        assert_eq!(take_chunk(&mut buf, 4, false), "🍊".as_bytes());
        assert!(buf.is_empty());
    }

    #[test]
    fn bytes_that_are_not_text_go_unchanged() {
        let mut buf = b"ok\xff\xfe!".to_vec();
        assert_eq!(take_chunk(&mut buf, 100, false), b"ok\xff\xfe!");
        let mut tail = b"x\xe2\x82".to_vec();
        assert_eq!(take_chunk(&mut tail, 100, false), b"x");
        assert_eq!(take_chunk(&mut tail, 100, true), b"\xe2\x82");
        assert!(tail.is_empty());
        let mut stray = b"a\x80\x80\x80\x80".to_vec();
        assert_eq!(take_chunk(&mut stray, 100, false), b"a\x80\x80\x80\x80");
    }

    #[test]
    fn chunks_of_any_output_reassemble_exactly() {
        let text: String = (0..5000).map(|i| format!("{i} é€🍊\n")).collect();
        let binary: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for bytes in [text.as_bytes(), &binary] {
            let mut buf = bytes.to_vec();
            let mut joined = Vec::new();
            loop {
                let piece = take_chunk(&mut buf, 1000, true);
                if piece.is_empty() {
                    break;
                }
                assert!(piece.len() <= 1000);
                joined.extend_from_slice(&piece);
            }
            assert_eq!(joined, bytes);
        }
        let mut buf = text.as_bytes().to_vec();
        while !buf.is_empty() {
            let piece = take_chunk(&mut buf, 1000, false);
            assert!(std::str::from_utf8(&piece).is_ok(), "text is cut on character boundaries");
        }
    }
}
