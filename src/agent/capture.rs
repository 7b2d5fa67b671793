//! The capturing output sink: keeps the first bytes of each stream of a process, counts the
//! rest, and turns them into capped text with notes on what was dropped. Used when a task runs
//! outside the agent (no server to stream to), e.g. `BuiltinExecutor::run`.

use super::sink::{OutputSink, Stream};

/// Bytes of stderr reserved for the notes about dropped output (two notes of at most ~55 bytes).
const NOTE_ROOM: usize = 128;

/// Keeps the first `cap` bytes of stdout and of stderr.
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    kept: [Vec<u8>; 2],
    dropped: [u64; 2],
}

impl Capture {
    /// A capture keeping at most `cap` bytes of each stream.
    pub fn new(cap: usize) -> Self {
        Capture { cap, kept: [Vec::new(), Vec::new()], dropped: [0, 0] }
    }
}

impl OutputSink for Capture {
    fn write(&mut self, stream: Stream, bytes: &[u8]) {
        let i = stream.index();
        let room = self.cap.saturating_sub(self.kept[i].len()).min(bytes.len());
        self.kept[i].extend_from_slice(&bytes[..room]);
        self.dropped[i] += (bytes.len() - room) as u64;
    }

    fn tick(&mut self) {}

    fn close(&mut self) -> (String, String) {
        let (stdout, stdout_dropped) = capped_text(&self.kept[0], self.dropped[0], self.cap);
        let (mut stderr, mut stderr_dropped) = capped_text(&self.kept[1], self.dropped[1], self.cap);
        if stdout_dropped + stderr_dropped > 0 {
            // Make room so stderr with its notes still fits in the cap.
            stderr_dropped += truncate_at_char(&mut stderr, self.cap.saturating_sub(NOTE_ROOM)) as u64;
        }
        append_drop_note(&mut stderr, "stdout", stdout_dropped);
        append_drop_note(&mut stderr, "stderr", stderr_dropped);
        (stdout, stderr)
    }
}

/// Lossy UTF-8 text of kept bytes, cut to at most `cap` bytes, and how many bytes were dropped
/// in all (lossy decoding can grow invalid input, so the cut is made again on the text).
fn capped_text(kept: &[u8], dropped: u64, cap: usize) -> (String, u64) {
    let mut text = String::from_utf8_lossy(kept).into_owned();
    let cut = truncate_at_char(&mut text, cap);
    (text, dropped + cut as u64)
}

/// Cuts `text` to at most `max` bytes on a character boundary; returns how many bytes went.
pub fn truncate_at_char(text: &mut String, max: usize) -> usize {
    if text.len() <= max {
        return 0;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    cut
}

fn append_drop_note(stderr: &mut String, stream: &str, dropped: u64) {
    if dropped > 0 {
        stderr.push_str(&format!("\n[orange: {dropped} bytes of {stream} dropped]"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_of_each_stream_and_notes_the_rest() {
        let mut capture = Capture::new(130);
        capture.write(Stream::Stdout, &[b'a'; 100]);
        capture.write(Stream::Stderr, b"xy");
        capture.write(Stream::Stdout, &[b'a'; 40]);
        let (stdout, stderr) = capture.close();
        assert_eq!(stdout, "a".repeat(130));
        assert_eq!(stderr, "xy\n[orange: 10 bytes of stdout dropped]");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        let mut text = "aé".to_owned();
        assert_eq!(truncate_at_char(&mut text, 2), 2);
        assert_eq!(text, "a");
        assert_eq!(truncate_at_char(&mut text, 5), 0);
    }
}
