//! Following a task's output: the loop over `GET /api/v1/tasks/{id}/output`, the [`Sink`] that
//! writes each chunk to stdout or stderr as it arrives, and `orange task logs`, its command.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use argh::{ArgsInfo, FromArgs};

use super::flags::check_task_id;
use super::operator::{Api, OperatorConfig, operator_args, operator_flags};
use super::output;
use super::wait::{WAIT_CHUNK_SECS, get_patiently, wait_timeout};
use crate::protocol::admin::{self, OutputChunkView, OutputPage, TaskView};

/// Shortest time between two output calls that came back empty, in case a server answers at
/// once instead of parking (short in unit tests, which script such answers).
const EMPTY_PAGE_PAUSE: Duration = Duration::from_millis(if cfg!(test) { 10 } else { 1000 });

operator_args! {
    /// Print a task's output: what it has written so far, or everything until it ends with -f.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "logs",
        example = "orange task logs 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b",
        example = "orange task logs -f 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b 2>/dev/null | grep -i error",
        example = "orange task logs 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b > output.bin",
        example = "orange task logs --json 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b | jq -r 'select(.stream == \"stderr\") | .data'",
        note = "The host's stdout goes to stdout and its stderr to stderr, byte for byte and in the \
                order the host wrote them (an original Go client's result text is printed as one line). With -f the command keeps printing new output as the host \
                sends it and exits 0 once the task has ended, whatever its result: the remote exit code \
                is not mirrored (see it with `orange task get ID`, or use `orange task run`, which \
                mirrors it). Ctrl-C stops following and leaves the task alone. With --json every chunk \
                is one JSON line on stdout: {{\"seq\": N, \"stream\": \"stdout\"|\"stderr\", \"data\": TEXT}}; \
                TEXT is the bytes themselves when they are valid UTF-8, else their base64, and then the \
                line also has \"encoding\": \"base64\". \
                When the task wrote more than the server keeps, the middle of its output is dropped \
                (numbers of --json chunks jump) and, if chunks were missing here, a note saying how \
                many bytes the server dropped is printed on stderr at the end. Connection options as in `orange task run --help`."
    )]
    pub struct LogsArgs {
        /// the task id
        #[argh(positional)]
        pub id: String,
        /// keep printing output as it comes until the task ends
        #[argh(switch, short = 'f')]
        pub follow: bool,
    }
    /// print each output chunk as a JSON line (seq, stream, data) on stdout
    json
}

/// Runs `orange task logs` and returns the exit code: 0 once the output was printed.
pub fn logs(args: LogsArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let task_id = check_task_id(&args.id)?;
    let until = if args.follow { Until::Done } else { Until::CaughtUp };
    let mut sink = Sink::new(std::io::stdout(), std::io::stderr(), config.json);
    let api = config.api(wait_timeout());
    let last = follow(&api, &task_id, &mut sink, until)?;
    if last.done && sink.is_empty() && !config.json {
        // An original client's output is its result text, kept in the task, not in chunks.
        let task: TaskView = api.get(&admin::task_path(&task_id))?;
        sink.whole(&task)?;
    }
    sink.finish()?;
    Ok(0)
}

/// How long [`follow`] keeps asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Until the output so far was printed: no parking on the server.
    CaughtUp,
    /// Until the task has ended and every chunk was printed, parking for new ones.
    Done,
}

/// Prints a task's output into `sink` page by page and returns the last page.
pub fn follow<O: Write, E: Write>(
    api: &Api,
    task_id: &str,
    sink: &mut Sink<O, E>,
    until: Until,
) -> Result<OutputPage> {
    let what = format!("the output of task {task_id}");
    let wait = (until == Until::Done).then_some(WAIT_CHUNK_SECS);
    let mut after = None;
    loop {
        let asked = Instant::now();
        let page: OutputPage = get_patiently(api, &what, || output_query(task_id, after, wait))?;
        sink.page(&page)?;
        let empty = page.chunks.is_empty();
        if page.done || (until == Until::CaughtUp && empty) {
            return Ok(page);
        }
        if empty {
            std::thread::sleep(EMPTY_PAGE_PAUSE.saturating_sub(asked.elapsed()));
        }
        after = Some(page.next);
    }
}

/// `GET` path of the output chunks numbered `after` and later, parking `wait` seconds.
fn output_query(task_id: &str, after: Option<u32>, wait: Option<u64>) -> String {
    let query: Vec<String> = [after.map(|n| format!("after={n}")), wait.map(|s| format!("wait={s}"))]
        .into_iter()
        .flatten()
        .collect();
    let path = admin::output_path(task_id);
    if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) }
}

/// Where followed output goes: the host's stdout chunks to `out`, its stderr chunks to `err`
/// (or every chunk as a JSON line to `out`), each written whole and flushed as it arrives.
pub struct Sink<O: Write, E: Write> {
    /// Receives stdout chunks, or every chunk as JSON.
    pub out: O,
    /// Receives stderr chunks and notes.
    pub err: E,
    json: bool,
    /// Number of the next chunk to write; older ones (a repeat) are skipped.
    next_seq: u32,
    written: usize,
    /// A chunk number was skipped: the output cap dropped chunks before they were read.
    missed: bool,
    dropped_bytes: u64,
}

impl<O: Write, E: Write> Sink<O, E> {
    /// A sink writing text (or JSON lines when `json`) to `out` and `err`.
    pub fn new(out: O, err: E, json: bool) -> Self {
        Sink { out, err, json, next_seq: 0, written: 0, missed: false, dropped_bytes: 0 }
    }

    /// Writes the new chunks of `page`, in order.
    pub fn page(&mut self, page: &OutputPage) -> Result<()> {
        self.dropped_bytes = self.dropped_bytes.max(page.dropped_bytes);
        for chunk in &page.chunks {
            if chunk.seq >= self.next_seq {
                self.missed |= chunk.seq > self.next_seq;
                self.chunk(chunk)?;
                self.next_seq = chunk.seq.saturating_add(1);
            }
        }
        Ok(())
    }

    fn chunk(&mut self, chunk: &OutputChunkView) -> Result<()> {
        self.written += 1;
        if self.json {
            let line = output::chunk_json_line(chunk)?;
            return write_flush(&mut self.out, line.as_bytes(), "stdout");
        }
        let bytes = chunk.bytes().map_err(|e| anyhow!("output chunk {}: {e}", chunk.seq))?;
        match chunk.stream.as_str() {
            "stderr" => write_flush(&mut self.err, &bytes, "stderr"),
            _ => write_flush(&mut self.out, &bytes, "stdout"),
        }
    }

    /// True while no chunk was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Writes the output a server kept only in the final task (an agent that reports output
    /// instead of streaming it). An original client's `result` text stands in for stdout when
    /// both are empty, as a line (a newline is added when it has none).
    pub fn whole(&mut self, task: &TaskView) -> Result<()> {
        let mut stdout = task.stdout_bytes().map_err(|e| anyhow!("task {} stdout: {e}", task.task_id))?;
        let stderr = task.stderr_bytes().map_err(|e| anyhow!("task {} stderr: {e}", task.task_id))?;
        if stdout.is_empty() && stderr.is_empty() && !task.result.is_empty() {
            stdout = task.result.clone().into_bytes();
            if !task.result.ends_with('\n') {
                stdout.push(b'\n');
            }
        }
        write_flush(&mut self.out, &stdout, "stdout")?;
        write_flush(&mut self.err, &stderr, "stderr")
    }

    /// Ends the output: says on `err` how much the output cap dropped, when chunks were missing
    /// (a reader that kept up with the task saw them before they were dropped).
    pub fn finish(&mut self) -> Result<()> {
        if !self.missed || self.dropped_bytes == 0 {
            return Ok(());
        }
        write_flush(&mut self.err, output::dropped_note(self.dropped_bytes).as_bytes(), "stderr")
    }
}

fn write_flush(writer: &mut impl Write, bytes: &[u8], name: &str) -> Result<()> {
    writer.write_all(bytes).and_then(|()| writer.flush()).with_context(|| format!("cannot write to {name}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::protocol::TaskStatus::{self, *};

    pub(crate) const ID: &str = "0190a1b2-0000-7000-8000-000000000001";

    pub(crate) fn chunk(seq: u32, stream: &str, data: &str) -> OutputChunkView {
        OutputChunkView::new(seq, stream, data.as_bytes())
    }

    pub(crate) fn page(chunks: Vec<OutputChunkView>, next: u32, status: TaskStatus) -> OutputPage {
        OutputPage { chunks, next, done: status.is_final(), status, dropped_bytes: 0 }
    }

    fn text_sink() -> Sink<Vec<u8>, Vec<u8>> {
        Sink::new(Vec::new(), Vec::new(), false)
    }

    fn written(sink: &Sink<Vec<u8>, Vec<u8>>) -> (String, String) {
        (String::from_utf8_lossy(&sink.out).into_owned(), String::from_utf8_lossy(&sink.err).into_owned())
    }

    fn targets(api: &FakeApi) -> Vec<String> {
        api.seen().into_iter().map(|seen| seen.target).collect()
    }

    #[test]
    fn following_asks_after_each_next_and_writes_every_chunk_once() {
        let mut second = page(vec![chunk(3, "stderr", "warn\n"), chunk(4, "stdout", "b")], 5, Running);
        second.dropped_bytes = 4096;
        let mut last = page(vec![chunk(5, "stdout", "c\n")], 6, Succeeded);
        last.dropped_bytes = 4096;
        let api = FakeApi::serve(vec![
            FakeApi::ok(&page(vec![chunk(0, "stdout", "a1 "), chunk(1, "stdout", "a2\n")], 2, Running)),
            FakeApi::ok(&second),
            FakeApi::ok(&page(vec![], 5, Running)),
            FakeApi::ok(&last),
        ]);
        let mut sink = text_sink();
        let end = follow(&api.client(), ID, &mut sink, Until::Done).unwrap();
        sink.finish().unwrap();
        assert_eq!((end.done, end.status), (true, Succeeded));
        let output = format!("/api/v1/tasks/{ID}/output");
        assert_eq!(
            targets(&api),
            [
                format!("{output}?wait=20"),
                format!("{output}?after=2&wait=20"),
                format!("{output}?after=5&wait=20"),
                format!("{output}?after=5&wait=20"),
            ]
        );
        assert_eq!(
            written(&sink),
            (
                "a1 a2\nbc\n".to_owned(),
                "warn\norange: 4096 bytes of output were dropped from the middle (output cap)\n".to_owned()
            )
        );
    }

    #[test]
    fn catching_up_stops_at_an_empty_page_without_parking() {
        let api = FakeApi::serve(vec![
            FakeApi::ok(&page(vec![chunk(0, "stdout", "so far\n")], 1, Running)),
            FakeApi::ok(&page(vec![], 1, Running)),
        ]);
        let mut sink = text_sink();
        let end = follow(&api.client(), ID, &mut sink, Until::CaughtUp).unwrap();
        assert_eq!((end.done, end.status), (false, Running));
        let output = format!("/api/v1/tasks/{ID}/output");
        assert_eq!(targets(&api), [output.clone(), format!("{output}?after=1")]);
        assert_eq!(written(&sink), ("so far\n".to_owned(), String::new()));
    }

    #[test]
    fn a_finished_task_takes_one_call() {
        let api = FakeApi::serve(vec![FakeApi::ok(&page(vec![chunk(0, "stderr", "e")], 1, Failed))]);
        let mut sink = text_sink();
        follow(&api.client(), ID, &mut sink, Until::CaughtUp).unwrap();
        sink.finish().unwrap();
        assert_eq!(written(&sink), (String::new(), "e".to_owned()));
        assert_eq!(api.seen().len(), 1);
    }

    #[test]
    fn json_lines_carry_seq_stream_and_data() {
        let mut sink = Sink::new(Vec::new(), Vec::new(), true);
        let chunks = vec![chunk(0, "stdout", "a\n"), chunk(7, "stderr", "b \"q\"")];
        sink.page(&page(chunks, 8, Succeeded)).unwrap();
        assert_eq!(
            written(&sink),
            (
                "{\"seq\":0,\"stream\":\"stdout\",\"data\":\"a\\n\"}\n\
                 {\"seq\":7,\"stream\":\"stderr\",\"data\":\"b \\\"q\\\"\"}\n"
                    .to_owned(),
                String::new()
            )
        );
    }

    #[test]
    fn repeated_chunks_are_written_once() {
        let mut sink = text_sink();
        sink.page(&page(vec![chunk(0, "stdout", "a"), chunk(1, "stdout", "b")], 2, Running)).unwrap();
        sink.page(&page(vec![chunk(1, "stdout", "b"), chunk(2, "stdout", "c")], 3, Running)).unwrap();
        assert_eq!(written(&sink).0, "abc");
    }

    #[test]
    fn a_reader_that_missed_nothing_gets_no_note() {
        let mut sink = text_sink();
        let mut all = page(vec![chunk(0, "stdout", "a"), chunk(1, "stdout", "b")], 2, Succeeded);
        all.dropped_bytes = 1;
        sink.page(&all).unwrap();
        sink.finish().unwrap();
        assert_eq!(written(&sink), ("ab".to_owned(), String::new()));
    }

    #[test]
    fn an_unknown_task_is_an_error_naming_the_call() {
        let api = FakeApi::serve(vec![FakeApi::error("404 Not Found", &format!("unknown task {ID}"))]);
        let error = follow(&api.client(), ID, &mut text_sink(), Until::Done).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("GET {}/api/v1/tasks/{ID}/output?wait=20: unknown task {ID} (HTTP 404)", api.url)
        );
    }

    #[test]
    fn logs_flags_parse() {
        let args = LogsArgs::from_args(&["logs"], &["-f", "--json", ID]).unwrap();
        assert!(args.follow && args.json);
        assert_eq!(args.id, ID);
        assert!(LogsArgs::from_args(&["logs"], &["--follow", ID]).unwrap().follow);
    }
}
