//! Live output: chunks in order without gaps or duplicates, flushed while the task runs, never
//! splitting a character, bounded memory for huge output, and the server's answers to chunks
//! (cancel, already finished) stopping the task.

use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use super::{Fixture, WAIT, shell};
use crate::protocol::wire::MAX_CHUNK_LEN;

#[test]
fn output_streams_in_order_without_gaps_and_a_retried_chunk_is_stored_once() {
    let fx = Fixture::new();
    fx.server.state.update(|s| s.drop_chunk_answers = 1);
    let _agent = fx.start(1);
    let script = "i=1; while [ $i -le 2000 ]; do echo \"line $i\"; \
        if [ $((i % 400)) -eq 0 ]; then echo \"err $i\" >&2; sleep 0.3; fi; i=$((i + 1)); done";
    fx.server.state.push_task(shell("t1", script));
    fx.server.state.wait_until(Duration::from_secs(10), "report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    let expected: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(state.stream_output("t1", "stdout"), expected);
    let errors: String = (1..=5).map(|i| format!("err {}\n", i * 400)).collect();
    assert_eq!(state.stream_output("t1", "stderr"), errors);
    let chunks = &state.chunks["t1"];
    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..chunks.len() as u32).collect::<Vec<_>>());
    assert!(chunks.len() >= 5, "the pauses flushed output while it ran: {} chunks", chunks.len());
    assert_eq!(state.report("t1").and_then(|r| r.output_chunks), Some(chunks.len() as u32));
    assert_eq!(
        (state.duplicate_chunks, state.skipped_chunks),
        (1, 0),
        "the dropped answer's chunk came again"
    );
}

#[test]
fn output_arrives_while_the_task_still_runs() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("t1", "echo first; sleep 1; echo second"));
    fx.server.state.wait_until(WAIT, "delivery", |s| s.delivered.len() == 1);
    let delivered = fx.server.state.lock().delivered[0].0;
    fx.server.state.wait_until(WAIT, "the first line", |s| s.output("t1") == "first\n");
    let took = delivered.elapsed();
    assert!(took < Duration::from_millis(700), "first line streamed after {took:?}");
    assert!(fx.server.state.lock().reports.is_empty(), "streamed before the task ended");
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    assert_eq!(fx.server.state.lock().output("t1"), "first\nsecond\n");
}

#[test]
fn a_task_that_ended_in_time_is_not_timed_out_by_a_slow_server() {
    let fx = Fixture::new();
    fx.server.state.update(|s| s.output_delay = Duration::from_millis(1500));
    let _agent = fx.start(1);
    let mut task = shell("t1", "echo hi");
    task.timeout_secs = Some(1);
    fx.server.state.push_task(task);
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    let report = state.report("t1").expect("reported");
    assert_eq!(
        (report.do_status.as_str(), report.exit_code, report.error.as_deref()),
        ("success", Some(0), None)
    );
    assert_eq!(state.output("t1"), "hi\n");
}

#[test]
fn text_chunks_never_split_a_character_and_nothing_is_lost() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    // 300000 bytes of 9-byte lines, cut in the middle of a character at the end.
    let script = "yes 'é€🍊' | head -c 300001";
    fx.server.state.push_task(shell("t1", script));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let line = "é€🍊\n".as_bytes();
    let bytes: Vec<u8> = line.iter().copied().cycle().take(300_001).collect();
    let state = fx.server.state.lock();
    assert_eq!(state.output_bytes("t1"), bytes);
    let chunks = &state.chunks["t1"];
    assert!(chunks.iter().all(|c| c.bytes().unwrap().len() <= MAX_CHUNK_LEN));
    assert!(chunks.len() >= 5);
    let (last, text) = chunks.split_last().expect("chunks");
    assert!(text.iter().all(|c| c.encoding.is_none()), "text goes as text");
    assert!(last.encoding.is_some(), "the cut character at the very end goes as bytes");
}

#[test]
fn bytes_that_are_not_text_stream_unchanged() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    // Random bytes on stdout; on stderr `caf` and Latin-1 é, then the same random bytes.
    let script = "printf 'caf\\351' >&2; head -c 300000 /dev/urandom | tee /dev/stderr";
    fx.server.state.push_task(shell("t1", script));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let state = fx.server.state.lock();
    let bytes_of = |stream: &str| -> Vec<u8> {
        let chunks = state.chunks["t1"].iter().filter(|c| c.stream == stream);
        chunks.flat_map(|c| c.bytes().expect("chunks decode")).collect()
    };
    let (stdout, stderr) = (bytes_of("stdout"), bytes_of("stderr"));
    assert_eq!(stdout.len(), 300_000);
    assert_eq!(&stderr[..4], b"caf\xe9");
    assert_eq!(&stderr[4..], &stdout[..]);
    assert!(state.chunks["t1"].iter().any(|c| c.encoding.is_some()));
}

#[test]
fn an_ack_saying_cancelled_stops_the_task() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.update(|s| {
        s.cancelled.insert("t1".into());
    });
    fx.server.state.push_task(shell("t1", "while :; do echo tick; sleep 0.05; done"));
    fx.server.state.wait_until(WAIT, "report", |s| s.reports.len() == 1);
    let report = fx.server.state.lock().report("t1").cloned().expect("reported");
    assert_eq!(report.do_status, "cancelled");
}

#[test]
fn a_chunk_refused_as_already_finished_stops_the_task_and_its_report_is_dropped() {
    let fx = Fixture::new();
    let _agent = fx.start(1);
    fx.server.state.push_task(shell("t1", "while :; do echo tick; sleep 0.05; done"));
    fx.server.state.wait_until(WAIT, "output", |s| !s.output("t1").is_empty());
    let finished = Instant::now();
    fx.server.state.update(|s| {
        s.finals.insert("t1".into(), "expired".into());
    });
    fx.server.state.wait_until(WAIT, "the refused report", |s| s.report_calls == 1);
    assert!(finished.elapsed() < Duration::from_secs(2), "{:?}", finished.elapsed());
    thread::sleep(Duration::from_millis(300));
    let state = fx.server.state.lock();
    assert_eq!(state.report_calls, 1, "a refused report is not retried");
    assert!(state.reports.is_empty());
}

/// The agent's resident memory (this test process's), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// The memory test proper; it runs in a process of its own (started by the test below) so
/// that no other test's allocations count.
#[test]
#[ignore = "run in its own process by a_hundred_mebibytes_of_output_stream_in_bounded_memory"]
fn hundred_mebibytes_in_this_process() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    let fx = Fixture::new();
    fx.server.state.update(|s| s.discard_output = true);
    let _agent = fx.start(1);
    fx.server.state.wait_until(WAIT, "registration", |s| !s.registrations.is_empty());
    let baseline = rss_kib();
    let mut task = shell("t1", &format!("head -c {TOTAL} /dev/zero | tr '\\0' a"));
    task.timeout_secs = Some(60);
    fx.server.state.push_task(task);
    let started = Instant::now();
    let mut peak = baseline;
    while fx.server.state.lock().reports.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(30), "100 MiB not streamed in 30 s");
        peak = peak.max(rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    let state = fx.server.state.lock();
    eprintln!("streamed 100 MiB in {:?}; RSS {baseline} KiB, peak {peak} KiB", started.elapsed());
    assert_eq!(state.chunk_bytes, TOTAL);
    let chunks = state.next_seq.get("t1").copied();
    assert_eq!(state.report("t1").and_then(|r| r.output_chunks), chunks);
    assert!(chunks.is_some_and(|n| n >= (TOTAL / MAX_CHUNK_LEN as u64) as u32));
    // Buffering the output would take well over 100 MiB; the agent needs a few.
    assert!(peak - baseline < 16 * 1024, "RSS grew by {} KiB", peak - baseline);
}

#[test]
fn a_hundred_mebibytes_of_output_stream_in_bounded_memory() -> std::io::Result<()> {
    let _alone = super::measuring();
    let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
    let name = format!("{module}::hundred_mebibytes_in_this_process");
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", &name, "--ignored", "--nocapture", "--test-threads=1"])
        .output()?;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("1 passed"), "{name} did not run\nstdout:\n{stdout}");
    eprintln!("{}", stderr.lines().find(|l| l.starts_with("streamed")).unwrap_or_default());
    Ok(())
}
