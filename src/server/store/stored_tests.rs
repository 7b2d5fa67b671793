//! Tests of the stored layouts: values written by 0.1.0 (version 1 of every record, bytes
//! captured from that release) still decode, records new since keep the bytes of their first
//! layout, and an unknown version is refused by name.

use std::collections::BTreeMap;

use super::records::*;
use crate::protocol::jobs::{JobCounts, JobState, Limit};
use crate::protocol::{TaskId, TaskStatus};
use crate::server::codec;
use crate::server::store::{AgentAuditRecord, FactsRecord};

fn id(n: u8) -> TaskId {
    TaskId::from_bytes([n; 16])
}

fn sample_agent() -> AgentRecord {
    AgentRecord {
        app_id: "web-1".into(),
        secret: "s3cret".into(),
        labels: BTreeMap::from([("role".into(), "web".into())]),
        version: Some("0.1.0".into()),
        hostname: None,
        registered_at_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_001_000,
        processed_task_count: 7,
        status: AgentStatus::Pending,
    }
}

fn sample_token() -> TokenRecord {
    TokenRecord {
        id: "0123456789abcdef".into(),
        secret: "tok".into(),
        created_ms: 5,
        expires_ms: 6,
        uses_left: 2,
        revoked: true,
    }
}

fn sample_audit() -> AuditRecord {
    AuditRecord {
        at_ms: 9,
        actor: "admin@127.0.0.1".into(),
        action: "task.send".into(),
        target: "t".into(),
        detail: "d".into(),
    }
}

fn sample_task() -> TaskRecord {
    TaskRecord {
        id: id(1),
        app_id: "web-1".into(),
        task_type: "shell".into(),
        payload: "echo hi".into(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        secret_names: Default::default(),
        stdin: Vec::new(),
        status: TaskStatus::TimedOut,
        timeout_secs: 60,
        expires_ms: 1000,
        history: vec![(TaskStatus::Queued, 1), (TaskStatus::Lost, 2), (TaskStatus::TimedOut, 3)],
        queue_seq: 42,
        ack_required: true,
        deadline_ms: 77,
        cancel_requested: true,
        exit_code: Some(-3),
        error: Some("boom".into()),
        duration_ms: Some(12),
        output: OutputState {
            next_seq: 3,
            head_bytes: 100,
            tail_start: Some(2),
            tail_oldest: 2,
            tail_bytes: 50,
            dropped_bytes: 7,
        },
        attempt: 0,
    }
}

fn sample_job() -> JobRecord {
    JobRecord {
        id: id(2),
        created_ms: 11,
        task_type: "shell".into(),
        payload: "uptime".into(),
        env: BTreeMap::new(),
        cwd: None,
        user: None,
        secret_names: Default::default(),
        timeout_secs: 30,
        ttl_secs: 60,
        max_concurrency: Some(Limit::Percent(10)),
        max_errors: Some(Limit::Count(2)),
        window: 1,
        error_limit: Some(2),
        targets: 11,
        next: 3,
        state: JobState::Stopped,
        counts: JobCounts {
            waiting: 1,
            queued: 2,
            delivered: 3,
            running: 4,
            succeeded: 5,
            failed: 6,
            timed_out: 7,
            cancelled: 8,
            expired: 9,
            lost: 10,
            skipped: 11,
            offline: 0,
        },
        version: 12,
        done_ms: 13,
        host_timeout_secs: 0,
        queue: false,
        retry_of: None,
    }
}

fn sample_target() -> TargetRecord {
    TargetRecord {
        app_id: "web-2".into(),
        task_id: Some(id(3)),
        end: Some(TargetEnd {
            status: TaskStatus::Expired,
            exit_code: None,
            error: Some("gone".into()),
            duration_ms: None,
        }),
        offline_since_ms: None,
    }
}

fn sample_facts() -> FactsRecord {
    FactsRecord {
        hostname: Some("h".into()),
        os_name: None,
        os_version: Some("12".into()),
        kernel: None,
        arch: Some("x86_64".into()),
        ips: vec!["10.0.0.1".into()],
        boot_time: Some(-1),
        updated_ms: 4,
    }
}

/// Asserts that `hex`, a value as orange 0.1.0 wrote it in version 1 of a record this build
/// writes in a later version, decodes to `expected` (the new fields at their defaults) and is
/// written back in the current version.
fn older<T: codec::Record + PartialEq + std::fmt::Debug>(hex: &str, expected: T) {
    assert_eq!(unhex(hex)[0], 1, "0.1.0 wrote version 1");
    earlier(hex, expected);
}

/// Asserts that `hex`, a value in an earlier version of its record, decodes to `expected` (the
/// new fields at their defaults) and is written back in the current version.
fn earlier<T: codec::Record + PartialEq + std::fmt::Debug>(hex: &str, expected: T) {
    let bytes = unhex(hex);
    assert!(bytes[0] < T::VERSION, "{} version {} is not an earlier one", T::NAME, bytes[0]);
    assert_eq!(codec::decode::<T>(&bytes).unwrap(), expected, "decoding {}", T::NAME);
    assert_eq!(codec::encode(&expected)[0], T::VERSION, "{} is written in its current version", T::NAME);
}

/// Asserts that `expected` is written as `hex` (frozen bytes of a layout since 0.1.0) and reads
/// back.
fn frozen<T: codec::Record + PartialEq + std::fmt::Debug>(hex: &str, expected: T) {
    assert_eq!(hex::encode(codec::encode(&expected)), hex, "encoding {}", T::NAME);
    assert_eq!(codec::decode::<T>(&unhex(hex)).unwrap(), expected, "decoding {}", T::NAME);
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// Asserts that `hex`, a value as orange 0.1.0 wrote it, decodes to `expected` and that this
/// build, still at version 1 of the record, writes the same bytes.
fn v1<T: codec::Record + PartialEq + std::fmt::Debug>(hex: &str, expected: T) {
    let bytes = unhex(hex);
    assert_eq!(bytes[0], 1, "0.1.0 wrote version 1");
    assert_eq!(codec::decode::<T>(&bytes).unwrap(), expected, "decoding {}", T::NAME);
    assert_eq!(codec::encode(&expected), bytes, "encoding {}", T::NAME);
}

// Bytes written by orange 0.1.0 for the samples above.
const AGENT_V1: &str = "01057765622d31067333637265740104726f6c65037765620105302e312e3000fd00d0ca9f17030000fdd0d7ca9f170300000700";
const TOKEN_V1: &str = "01103031323334353637383961626364656603746f6b0a0c0201";
const AUDIT_V1: &str = "01120f61646d696e403132372e302e302e31097461736b2e73656e6401740164";
const TASK_V1: &str = "011001010101010101010101010101010101057765622d31057368656c6c076563686f206869053cfbd007030002080405062a019a0101050104626f6f6d010c03640102023207";
const JOB_V1: &str = "01100202020202020202020202020202020216057368656c6c06757074696d651e3c01033130250101320101020b03020102030405060708090a0b0c1a";
const JOB_V1_NO_LIMITS: &str = "01100202020202020202020202020202020216057368656c6c06757074696d651e3c000001000b03040102030405060708090a0b0c1a";
const TARGET_V1: &str = "01057765622d320110030303030303030303030303030303030107000104676f6e6500";
const TARGET_V1_NOT_STARTED: &str = "01057765622d320000";
const FACTS_V1: &str = "0101016800010231320001067838365f3634010831302e302e302e31010108";

#[test]
fn agents_tokens_audit_and_facts_written_by_0_1_0_decode() {
    v1(AGENT_V1, sample_agent());
    v1(TOKEN_V1, sample_token());
    v1(AUDIT_V1, sample_audit());
    v1(FACTS_V1, sample_facts());
}

#[test]
fn tasks_written_by_0_1_0_decode() {
    older(TASK_V1, sample_task());
}

/// A task with an environment and a working directory: version 2 of the task record.
fn sample_task_v2() -> TaskRecord {
    let mut task = sample_task();
    task.env = BTreeMap::from([("A".to_owned(), "b".to_owned())]);
    task.cwd = Some("/tmp".into());
    task
}

/// A job with an environment, a working directory, offline targets, a host timeout and
/// `queue`: version 2 of the job record.
fn sample_job_v2() -> JobRecord {
    let mut job = sample_job();
    job.env = BTreeMap::from([("A".to_owned(), "b".to_owned())]);
    job.cwd = Some("/srv".into());
    job.counts.offline = 14;
    job.host_timeout_secs = 60;
    job.queue = true;
    job
}

// Version 2 of the task and job records (environment and working directory; a job's offline
// count, host timeout and `queue`): frozen here so that a change of the layout is noticed (the
// records have a third version since; their second is still read).
const TASK_V2: &str = "021001010101010101010101010101010101057765622d31057368656c6c076563686f206869010141016201042f746d70053cfbd007030002080405062a019a0101050104626f6f6d010c03640102023207";
const JOB_V2: &str = "02100202020202020202020202020202020216057368656c6c06757074696d65010141016201042f7372761e3c01033130250101320101020b03020102030405060708090a0b0e0c1a3c01";

#[test]
fn tasks_and_jobs_of_the_second_layout_still_read() {
    earlier(TASK_V2, sample_task_v2());
    earlier(JOB_V2, sample_job_v2());
}

/// A job that retries another, with a secret environment variable: version 3 of the job record.
fn sample_job_v3() -> JobRecord {
    let mut job = sample_job_v2();
    job.retry_of = Some(id(9));
    job.secret_names = ["A".to_owned()].into();
    job
}

// Version 3 of the job record (the job it retries): frozen here so that a change of the layout
// is noticed (the record has a fourth version since; its third is still read).
const JOB_V3: &str = "03100202020202020202020202020202020216057368656c6c06757074696d65010141016201042f7372760101411e3c01033130250101320101020b03020102030405060708090a0b0e0c1a3c01011009090909090909090909090909090909";

#[test]
fn jobs_that_retry_another_of_the_third_layout_still_read() {
    earlier(JOB_V3, sample_job_v3());
}

/// A task with an environment (one variable secret), a working directory and a standard input:
/// version 3 of the task record.
fn sample_task_v3() -> TaskRecord {
    let mut task = sample_task_v2();
    task.stdin = b"in\n\xff".to_vec();
    task.secret_names = ["A".to_owned()].into();
    task
}

// Version 3 of the task record (standard input): frozen here so that a change of the layout is
// noticed (the record has a fourth version since; its third is still read).
const TASK_V3: &str = "031001010101010101010101010101010101057765622d31057368656c6c076563686f206869010141016201042f746d7001014104696e0aff053cfbd007030002080405062a019a0101050104626f6f6d010c03640102023207";

#[test]
fn tasks_with_stdin_of_the_third_layout_still_read() {
    earlier(TASK_V3, sample_task_v3());
}

/// A task that runs as another user: version 4 of the task record.
fn sample_task_v4() -> TaskRecord {
    let mut task = sample_task_v3();
    task.user = Some("www-data".into());
    task
}

/// A job whose tasks run as another user: version 4 of the job record.
fn sample_job_v4() -> JobRecord {
    let mut job = sample_job_v3();
    job.user = Some("www-data".into());
    job
}

// Version 4 of the task and job records (the user): frozen here so that a change of the layout
// is noticed (the task record has a fifth version since; its fourth is still read).
const TASK_V4: &str = "041001010101010101010101010101010101057765622d31057368656c6c076563686f206869010141016201042f746d7001087777772d6461746101014104696e0aff053cfbd007030002080405062a019a0101050104626f6f6d010c03640102023207";
const JOB_V4: &str = "04100202020202020202020202020202020216057368656c6c06757074696d65010141016201042f73727601087777772d646174610101411e3c01033130250101320101020b03020102030405060708090a0b0e0c1a3c01011009090909090909090909090909090909";
// The same task of version 4, its history queued, then handed out twice.
const TASK_V4_HANDED_OUT_TWICE: &str = "041001010101010101010101010101010101057765622d31057368656c6c076563686f206869010141016201042f746d7001087777772d6461746101014104696e0aff053cfbd007030002010401062a019a0101050104626f6f6d010c03640102023207";

#[test]
fn tasks_and_jobs_that_run_as_another_user_keep_their_fourth_layout() {
    earlier(TASK_V4, sample_task_v4());
    frozen(JOB_V4, sample_job_v4());
}

#[test]
fn a_task_of_the_fourth_layout_reads_its_attempt_from_how_often_its_history_shows_it_handed_out() {
    let mut task = sample_task_v4();
    task.history = vec![(TaskStatus::Queued, 1), (TaskStatus::Delivered, 2), (TaskStatus::Delivered, 3)];
    task.attempt = 2;
    earlier(TASK_V4_HANDED_OUT_TWICE, task);
}

/// A task handed out three times: version 5 of the task record.
fn sample_task_v5() -> TaskRecord {
    TaskRecord { attempt: 3, ..sample_task_v4() }
}

// Version 5 of the task record (the attempt): frozen here so that a change of the layout is
// noticed.
const TASK_V5: &str = "051001010101010101010101010101010101057765622d31057368656c6c076563686f206869010141016201042f746d7001087777772d6461746101014104696e0aff053cfbd007030002080405062a019a0101050104626f6f6d010c0364010202320703";

#[test]
fn tasks_with_their_attempt_keep_their_fifth_layout() {
    frozen(TASK_V5, sample_task_v5());
}

#[test]
fn jobs_and_targets_written_by_0_1_0_decode_without_host_timeout_or_offline_targets() {
    older(JOB_V1, sample_job());
    let mut job = sample_job();
    (job.max_concurrency, job.max_errors, job.error_limit) = (None, None, None);
    job.state = JobState::Finished;
    older(JOB_V1_NO_LIMITS, job);
    older(TARGET_V1, sample_target());
    let not_started =
        TargetRecord { app_id: "web-2".into(), task_id: None, end: None, offline_since_ms: None };
    older(TARGET_V1_NOT_STARTED, not_started);
}

// Version 2 of targets (offline targets): the bytes are frozen here so that a change of the
// layout is noticed.
const TARGET_V2_OFFLINE: &str = "02057765622d330000011e";

#[test]
fn targets_keep_their_second_layout() {
    let target =
        TargetRecord { app_id: "web-3".into(), task_id: None, end: None, offline_since_ms: Some(15) };
    frozen(TARGET_V2_OFFLINE, target);
}

#[test]
fn a_future_version_is_refused_naming_the_record() {
    let mut bytes = unhex(TASK_V1);
    bytes[0] = 6;
    let err = codec::decode::<TaskRecord>(&bytes).unwrap_err();
    assert_eq!(err.to_string(), "stored task record has version 6; this build reads versions up to 5");
    let mut bytes = unhex(TARGET_V1);
    bytes[0] = 7;
    let err = codec::decode::<TargetRecord>(&bytes).unwrap_err();
    assert_eq!(err.to_string(), "stored job target record has version 7; this build reads versions up to 2");
}

#[test]
fn a_stored_limit_that_does_not_parse_is_corrupt() {
    let mut job = sample_job();
    job.max_errors = Some(Limit::Count(2));
    let bytes = codec::encode(&job);
    // "2" is stored as length 1, b'2'; make it "x".
    let at = bytes.windows(2).position(|w| w == [1, b'2']).unwrap();
    let mut bad = bytes.clone();
    bad[at + 1] = b'x';
    assert!(matches!(codec::decode::<JobRecord>(&bad), Err(codec::CodecError::Corrupt(_))));
}

fn sample_agent_audit() -> AgentAuditRecord {
    AgentAuditRecord {
        first_ms: 1_700_000_000_000,
        last_ms: 1_700_000_003_000,
        count: 300,
        actor: "agent:p1".into(),
        action: "agent.pending".into(),
        target: "p1".into(),
        detail: "without a credential".into(),
    }
}

// Version 1 of the agent audit entry, new after 0.1.0: its bytes are frozen here so that a
// change of the layout is noticed.
const AGENT_AUDIT_V1: &str = "01fd00d0ca9f17030000fd70e7ca9f17030000fb2c01086167656e743a70310d6167656e742e70656e64696e6702703114776974686f757420612063726564656e7469616c";

#[test]
fn agent_audit_entries_keep_their_first_layout() {
    v1(AGENT_AUDIT_V1, sample_agent_audit());
}
