//! Where a process's output goes: the [`OutputSink`] trait and the two [`Stream`]s. The process
//! runner writes into a sink; the capturing sink and the streaming sink implement it.

/// One of a process's two output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// 0 for stdout, 1 for stderr.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The wire name: `stdout` or `stderr`.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where a process's output goes. Runs on its own thread; a call may block, which is the
/// back-pressure that keeps memory bounded.
pub trait OutputSink: Send {
    /// Takes bytes the process wrote on `stream`.
    fn write(&mut self, stream: Stream, bytes: &[u8]);
    /// Called at least every few tens of milliseconds while nothing arrives.
    fn tick(&mut self);
    /// The output ended (or was abandoned): hands out what was kept as stdout and stderr text.
    fn close(&mut self) -> (String, String);
}
