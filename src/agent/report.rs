//! Building `reportTask` bodies (the `doing` ack, a final report that fits the server's limits,
//! the `lost` report of a task a restart interrupted) and sending a final report: journaled
//! first, retried until the server takes or refuses it, then marked reported in the journal.

use std::time::Duration;

use tracing::{error, info, warn};

use super::capture::truncate_at_char;
use super::handler::TaskOutcome;
use super::journal::Entry;
use super::retry::{Sent, until_done};
use super::shared::Shared;
use super::stream::StreamSummary;
use crate::protocol::wire::{DO_STATUS_DOING, DO_STATUS_LOST, MAX_AGENT_BODY, MAX_OUTPUT_LEN};
use crate::protocol::{ReportRequest, WireTask};

/// Room left in the body limit for JSON framing and the echoed fields' escapes.
const BODY_SLACK: usize = 4096;
/// The error of a task whose run a restart of the agent interrupted.
pub const LOST_ERROR: &str = "the agent restarted while the task ran; it was not run again";

/// The `doing` report that acknowledges `task`'s delivery number `attempt`.
pub fn doing_report(task: &WireTask, attempt: Option<u32>) -> ReportRequest {
    ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        do_status: DO_STATUS_DOING.to_owned(),
        create_at: task.create_at.clone(),
        attempt,
        ..ReportRequest::default()
    }
}

/// The final report of a journaled task that never finished because the agent restarted.
pub fn lost_report(entry: &Entry) -> ReportRequest {
    ReportRequest {
        task_id: entry.task_id.clone(),
        task_type: entry.task_type.clone(),
        do_status: DO_STATUS_LOST.to_owned(),
        create_at: entry.create_at.clone(),
        error: Some(LOST_ERROR.to_owned()),
        attempt: entry.task.as_ref().and_then(|task| task.attempt),
        ..ReportRequest::default()
    }
}

/// The final `reportTask` body for `task`: its id, type and time echoed, the outcome in orange's
/// own fields (`stdout` is the result, so `result` and the payload are not sent again). When the
/// output was streamed, the report says how many chunks and carries no output; otherwise the
/// outputs are capped to fit.
pub fn build_report(
    task: &WireTask,
    outcome: TaskOutcome,
    duration: Duration,
    streamed: Option<StreamSummary>,
) -> ReportRequest {
    let mut report = ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        do_status: outcome.status.do_status().to_owned(),
        create_at: task.create_at.clone(),
        exit_code: outcome.exit_code,
        duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        error: outcome.error,
        attempt: task.attempt,
        ..ReportRequest::default()
    };
    match streamed {
        Some(summary) => {
            report.output_chunks = Some(summary.chunks);
            add_stream_note(&mut report, &summary);
        }
        None => {
            let (mut stdout, mut stderr) = (outcome.stdout, outcome.stderr);
            truncate_at_char(&mut stdout, MAX_OUTPUT_LEN);
            truncate_at_char(&mut stderr, MAX_OUTPUT_LEN);
            (report.stdout, report.stderr) = (Some(stdout), Some(stderr));
            fit_body(&mut report);
        }
    }
    report
}

/// Says in `error` how much output could not be streamed, and why.
fn add_stream_note(report: &mut ReportRequest, summary: &StreamSummary) {
    if summary.dropped == 0 {
        return;
    }
    let why = summary.stopped.as_deref().unwrap_or("unknown reason");
    let note = format!("{} bytes of output were not streamed: {why}", summary.dropped);
    report.error = Some(match report.error.take() {
        Some(error) => format!("{error}; {note}"),
        None => note,
    });
}

/// Halves the outputs until the JSON body fits [`MAX_AGENT_BODY`]; JSON escapes can make a
/// megabyte of control characters six times larger.
fn fit_body(report: &mut ReportRequest) {
    let mut cap = MAX_OUTPUT_LEN;
    while body_len(report) > MAX_AGENT_BODY - BODY_SLACK && cap > 1024 {
        cap /= 2;
        for text in [&mut report.stdout, &mut report.stderr].into_iter().flatten() {
            truncate_at_char(text, cap);
        }
    }
}

fn body_len(report: &ReportRequest) -> usize {
    serde_json::to_vec(report).map_or(usize::MAX, |body| body.len())
}

/// Sends a journaled final report until the server acknowledges or refuses it, then marks it
/// reported. If the agent stops first, the entry stays unreported for the next start.
pub fn send_final(shared: &Shared, report: &ReportRequest) {
    match until_done(shared, "final report", || shared.client.report(report)) {
        Sent::Done(()) => info!(status = %report.do_status, "task reported"),
        Sent::Refused(reason) => {
            warn!(%reason, status = %report.do_status, "server refused the report; dropping it")
        }
        Sent::GaveUp => {
            warn!(status = %report.do_status, "report kept in the journal for the next start");
            return;
        }
    }
    if let Err(e) = shared.journal.mark_reported(&report.task_id) {
        error!(error = %format!("{e:#}"), "cannot mark the task reported in the journal");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::handler::OutcomeStatus;

    fn task() -> WireTask {
        WireTask {
            task_id: "t1".into(),
            task_type: "shell".into(),
            do_status: String::new(),
            create_at: "2026-11-26T06:40:41Z".into(),
            payload: "echo hi".into(),
            result: String::new(),
            timeout_secs: None,
            env: Default::default(),
            cwd: None,
            user: None,
            stdin: Vec::new(),
            attempt: None,
            more: Vec::new(),
        }
    }

    #[test]
    fn report_echoes_the_task_and_carries_the_outcome() {
        let outcome = TaskOutcome {
            status: OutcomeStatus::Failed,
            exit_code: Some(2),
            stdout: "hi\n".into(),
            stderr: "bad\n".into(),
            error: None,
        };
        let report = build_report(&task(), outcome, Duration::from_millis(1234), None);
        assert_eq!(
            report,
            ReportRequest {
                task_id: "t1".into(),
                task_type: "shell".into(),
                do_status: "failed".into(),
                create_at: "2026-11-26T06:40:41Z".into(),
                payload: String::new(),
                result: String::new(),
                exit_code: Some(2),
                stdout: Some("hi\n".into()),
                stdout_encoding: None,
                stderr: Some("bad\n".into()),
                stderr_encoding: None,
                duration_ms: Some(1234),
                error: None,
                output_chunks: None,
                attempt: None,
            }
        );
    }

    #[test]
    fn huge_or_escape_heavy_output_is_cut_to_fit_the_body_limit() {
        let mut outcome = TaskOutcome::success("\u{1}".repeat(3 * MAX_OUTPUT_LEN));
        outcome.stderr = "x".repeat(2 * MAX_OUTPUT_LEN);
        let report = build_report(&task(), outcome, Duration::ZERO, None);
        assert!(body_len(&report) <= MAX_AGENT_BODY - BODY_SLACK, "{}", body_len(&report));
        assert!(report.stdout.as_ref().is_some_and(|s| !s.is_empty() && s.len() <= MAX_OUTPUT_LEN));
        assert_eq!(
            report.stderr.as_ref().map(String::len),
            Some(report.stdout.as_ref().map_or(0, String::len))
        );
    }

    #[test]
    fn a_streamed_report_carries_the_chunk_count_and_no_output() {
        let mut outcome = TaskOutcome::cancelled("cancelled by an operator");
        outcome.exit_code = Some(143);
        let summary = StreamSummary { chunks: 7, dropped: 0, stopped: None };
        let report = build_report(&task(), outcome.clone(), Duration::from_millis(5), Some(summary));
        assert_eq!((report.do_status.as_str(), report.exit_code), ("cancelled", Some(143)));
        assert_eq!((report.output_chunks, report.stdout, report.stderr), (Some(7), None, None));
        assert_eq!(report.error.as_deref(), Some("cancelled by an operator"));
        let cut = StreamSummary { chunks: 2, dropped: 10, stopped: Some("the server refused it: x".into()) };
        let report = build_report(&task(), outcome, Duration::ZERO, Some(cut));
        assert_eq!(
            report.error.as_deref(),
            Some("cancelled by an operator; 10 bytes of output were not streamed: the server refused it: x")
        );
    }

    #[test]
    fn doing_and_lost_reports_echo_the_task() {
        let doing = doing_report(&task(), Some(2));
        assert_eq!(
            (doing.task_id.as_str(), doing.do_status.as_str(), doing.task_type.as_str()),
            ("t1", "doing", "shell")
        );
        assert_eq!((doing.stdout, doing.output_chunks, doing.duration_ms), (None, None, None));
        assert_eq!(doing.attempt, Some(2), "the delivery it acknowledges");
        let delivered = WireTask { attempt: Some(3), ..task() };
        let lost = lost_report(&Entry::started(&delivered));
        assert_eq!((lost.do_status.as_str(), lost.error.as_deref()), ("lost", Some(LOST_ERROR)));
        assert_eq!(lost.create_at, "2026-11-26T06:40:41Z");
        assert_eq!(lost.attempt, Some(3), "the delivery journaled with the task");
    }
}
