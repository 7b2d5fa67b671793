//! The write-ahead log through the real server: a record a crash tore at the end of the log is
//! cut at the next start and every acknowledged task is still there, in order; a damaged record
//! before the end stops the server with a message naming the file and the offset.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orange::client::AgentClient;
use orange::protocol::RegisterRequest;

use crate::support::{Server, ServerOpts, register_as};

/// The newest segment of the server's log (the one appended to when it was killed).
fn last_segment(data_dir: &Path) -> PathBuf {
    let dir = data_dir.join("wal");
    let mut segments: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    segments.pop().unwrap_or_else(|| panic!("no segment in {}", dir.display()))
}

/// A killed server that had acknowledged `count` tasks for `w1`; their ids, in order.
fn killed_after_enqueues(server: &mut Server, count: usize) -> Vec<String> {
    let request = RegisterRequest { app_id: "w1".into(), secret: "s1".into(), ..RegisterRequest::default() };
    register_as(server, &request);
    let ids =
        (0..count).map(|i| server.enqueue(&["w1"], "ping", &format!("p{i}"))[0].task_id.clone()).collect();
    server.kill();
    ids
}

/// Every task `w1` is handed until its queue is empty.
fn drain(server: &Server, most: usize) -> Vec<String> {
    let agent = AgentClient::new(&server.url, "w1", "s1");
    let started = Instant::now();
    let mut ids = Vec::new();
    while let Some(task) = agent.get_task().unwrap_or_else(|e| panic!("getTask: {e}")) {
        ids.push(task.task_id);
        assert!(ids.len() <= most, "more tasks delivered than were enqueued: {ids:?}");
        assert!(started.elapsed() < Duration::from_secs(30), "drain did not end");
    }
    ids
}

#[test]
fn a_record_torn_by_a_crash_is_cut_and_every_acknowledged_task_is_delivered_in_order() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let acked = killed_after_enqueues(&mut server, 12);
    let segment = last_segment(server.data_dir());
    let before = fs::metadata(&segment).unwrap().len();
    assert!(before > 0, "the acknowledged tasks are in the log");
    // What a crash in the middle of an append leaves: a header announcing 300 bytes, 9 of them.
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[44, 1, 0, 0, 7, 7, 7, 7, 1, 1, 5, 0, 116, 97, 115, 107, 115]).unwrap();
    drop(file);
    server.restart();
    assert_eq!(drain(&server, acked.len()), acked, "every acknowledged task, once, in order");
    server.assert_alive();
}

#[test]
fn a_damaged_record_before_the_end_of_the_log_stops_the_server_naming_file_and_offset() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    killed_after_enqueues(&mut server, 3);
    let segment = last_segment(server.data_dir());
    let mut bytes = fs::read(&segment).unwrap();
    assert!(bytes.len() > 64, "several records in {}", segment.display());
    bytes[12] ^= 0x20; // inside the first record's checksummed part
    fs::write(&segment, &bytes).unwrap();
    let dir = server.data_dir().to_str().expect("a utf-8 path").to_owned();
    let args = ["server", "--data", &dir, "--listen", "127.0.0.1:0", "--enroll-key", "orange-forge"];
    let run = crate::support::cli_with(&args, &[], Duration::from_secs(15));
    assert!(run.code().is_some_and(|code| code != 0), "the server must not start\n{run}");
    assert!(run.stderr.contains(&segment.display().to_string()), "{run}");
    assert!(run.stderr.contains("offset 0") && run.stderr.contains("checksum"), "{run}");
}
