//! Live output: a running task's stdout and stderr streamed to the server as numbered chunks.
//! [`ChunkSink`] buffers at most about one chunk per stream and flushes every
//! [`FLUSH_EVERY`] while output flows, or as soon as a stream has [`MAX_CHUNK_LEN`] bytes;
//! [`TaskStream`] numbers the chunks from 0 without gaps and sends them one at a time, each
//! retried until acknowledged. A chunk never splits a UTF-8 character; invalid bytes become
//! U+FFFD, one per invalid sequence, so no byte disappears without a trace.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::control::TaskControl;
use super::retry::{Sent, is_already_finished, until_done};
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

    /// Sends `data` as the next chunk, retrying until the server acknowledges it. After a
    /// refusal or giving up, later data is only counted as dropped.
    fn send(&self, stream: Stream, data: String) {
        let mut state = self.lock();
        if state.stopped.is_some() {
            state.dropped += data.len() as u64;
            return;
        }
        let chunk = OutputChunk {
            task_id: self.task_id.clone(),
            seq: state.next_seq,
            stream: stream.name().to_owned(),
            data,
        };
        match until_done(&self.shared, "output chunk", || self.shared.client.post_output(&chunk)) {
            Sent::Done(ack) => {
                debug!(seq = chunk.seq, stream = %chunk.stream, bytes = chunk.data.len(), "output chunk sent");
                state.next_seq += 1;
                if ack.cancel && !self.control.is_cancelled() {
                    info!("the server says the task was cancelled; stopping it");
                    self.control.cancel();
                }
            }
            Sent::Refused(reason) => {
                warn!(seq = chunk.seq, %reason, "server refused output; not streaming more");
                if is_already_finished(&reason) {
                    self.control.cancel();
                }
                state.dropped += chunk.data.len() as u64;
                state.stopped = Some(format!("the server refused it: {reason}"));
            }
            Sent::GaveUp => {
                state.dropped += chunk.data.len() as u64;
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
            let text = take_text(&mut self.pending[stream.index()], MAX_CHUNK_LEN, false);
            if text.is_empty() {
                break;
            }
            self.stream.send(stream, text);
        }
    }

    /// Sends everything buffered (but an incomplete character, unless the output `ended`).
    fn flush(&mut self, ended: bool) {
        for stream in [Stream::Stdout, Stream::Stderr] {
            loop {
                let text = take_text(&mut self.pending[stream.index()], MAX_CHUNK_LEN, ended);
                if text.is_empty() {
                    break;
                }
                self.stream.send(stream, text);
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

/// Takes from the front of `buf` the longest text of at most `max` bytes that does not split a
/// character. Invalid sequences become U+FFFD; an incomplete character at the end stays in
/// `buf` for more bytes, unless the output `ended`.
pub fn take_text(buf: &mut Vec<u8>, max: usize, ended: bool) -> String {
    let mut out = String::new();
    let mut used = 0;
    while used < buf.len() {
        let rest = &buf[used..];
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(_) => (rest.len(), None),
            Err(e) => (e.valid_up_to(), Some(e.error_len())),
        };
        let text = String::from_utf8_lossy(&rest[..valid]);
        let taken = push_fitting(&mut out, &text, max);
        used += taken;
        let replace = match bad {
            Some(Some(len)) => len,
            Some(None) if ended => rest.len() - valid,
            _ => break,
        };
        if taken < valid || out.len() + char::REPLACEMENT_CHARACTER.len_utf8() > max {
            break;
        }
        out.push(char::REPLACEMENT_CHARACTER);
        used += replace;
    }
    buf.drain(..used);
    out
}

/// Appends the longest prefix of `text` that keeps `out` within `max` bytes without splitting a
/// character; returns its length.
fn push_fitting(out: &mut String, text: &str, max: usize) -> usize {
    let mut end = max.saturating_sub(out.len()).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.push_str(&text[..end]);
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_character_boundaries_and_incomplete_tails_wait() {
        let mut buf = "aé€".as_bytes().to_vec();
        buf.push(0xF0); // the first byte of a four-byte character
        assert_eq!(take_text(&mut buf, 4, false), "aé");
        assert_eq!(take_text(&mut buf, 4, false), "€");
        assert_eq!(buf, [0xF0]);
        assert_eq!(take_text(&mut buf, 4, false), "");
        buf.extend_from_slice(&[0x9F, 0x8D, 0x8A]);
        assert_eq!(take_text(&mut buf, 4, false), "🍊");
        assert!(buf.is_empty());
    }

    #[test]
    fn invalid_bytes_become_replacement_characters_and_nothing_is_lost() {
        let mut buf = b"ok\xff\xfe!".to_vec();
        assert_eq!(take_text(&mut buf, 100, false), "ok\u{fffd}\u{fffd}!");
        let mut tail = b"x\xe2\x82".to_vec();
        assert_eq!(take_text(&mut tail, 100, false), "x");
        assert_eq!(take_text(&mut tail, 100, true), "\u{fffd}");
        assert!(tail.is_empty());
        let mut tight = b"ab\xff".to_vec();
        assert_eq!(take_text(&mut tight, 4, false), "ab");
        assert_eq!(take_text(&mut tight, 4, false), "\u{fffd}");
    }

    #[test]
    fn chunks_of_a_long_text_reassemble_exactly() {
        let text: String = (0..5000).map(|i| format!("{i} é€🍊\n")).collect();
        let mut buf = text.as_bytes().to_vec();
        let mut joined = String::new();
        loop {
            let piece = take_text(&mut buf, 1000, true);
            if piece.is_empty() {
                break;
            }
            assert!(piece.len() <= 1000);
            joined.push_str(&piece);
        }
        assert_eq!(joined, text);
    }
}
