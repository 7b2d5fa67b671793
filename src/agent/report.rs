//! Turning a task's outcome into a `reportTask` body that fits the server's limits, and sending
//! it until the server acknowledges it (or refuses it for good, or the agent stops).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::backoff::Backoff;
use super::handler::TaskOutcome;
use super::poll::{Shared, is_unknown_agent};
use super::process::truncate_at_char;
use crate::client::ClientError;
use crate::protocol::wire::{MAX_AGENT_BODY, MAX_OUTPUT_LEN};
use crate::protocol::{ReportRequest, WireTask};

/// How long a report keeps being retried once the agent is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Room left in the body limit for JSON framing and the echoed fields' escapes.
const BODY_SLACK: usize = 4096;

/// The `reportTask` body for `task`: its id, type and time echoed, the outcome in orange's own
/// fields (`stdout` is the result, so `result` and the payload are not sent again), outputs capped.
pub fn build_report(task: &WireTask, outcome: TaskOutcome, duration: Duration) -> ReportRequest {
    let (mut stdout, mut stderr) = (outcome.stdout, outcome.stderr);
    truncate_at_char(&mut stdout, MAX_OUTPUT_LEN);
    truncate_at_char(&mut stderr, MAX_OUTPUT_LEN);
    let mut report = ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        do_status: outcome.status.do_status().to_owned(),
        create_at: task.create_at.clone(),
        payload: String::new(),
        result: String::new(),
        exit_code: outcome.exit_code,
        stdout: Some(stdout),
        stderr: Some(stderr),
        duration_ms: Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        error: outcome.error,
        output_chunks: None,
    };
    fit_body(&mut report);
    report
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

/// Sends `report` until the server acknowledges it. A refusal (e.g. unknown task) drops it; an
/// unknown agent asks the poll loop to register again and retries; once the agent is stopping,
/// retries end after [`STOP_GRACE`].
pub fn send_report(shared: &Shared, report: &ReportRequest) {
    let mut backoff = Backoff::default();
    let mut give_up_at: Option<Instant> = None;
    loop {
        let Err(e) = shared.client.report(report) else {
            info!(status = %report.do_status, "task reported");
            return;
        };
        if !should_retry(shared, &e) {
            return;
        }
        let delay = backoff.next_delay();
        if shared.stopping() {
            let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            if Instant::now() + delay > deadline {
                error!(error = %e, "agent is stopping; giving up on reporting the task");
                return;
            }
        }
        warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot report the task, retrying");
        shared.sleep(delay);
    }
}

/// Whether a failed report is worth sending again.
fn should_retry(shared: &Shared, e: &ClientError) -> bool {
    if is_unknown_agent(e) {
        shared.request_register();
        return true;
    }
    if let ClientError::Refused(reason) = e {
        warn!(%reason, "server refused the report; dropping it");
        return false;
    }
    true
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
        let report = build_report(&task(), outcome, Duration::from_millis(1234));
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
                stderr: Some("bad\n".into()),
                duration_ms: Some(1234),
                error: None,
                output_chunks: None,
            }
        );
    }

    #[test]
    fn huge_or_escape_heavy_output_is_cut_to_fit_the_body_limit() {
        let mut outcome = TaskOutcome::success("\u{1}".repeat(3 * MAX_OUTPUT_LEN));
        outcome.stderr = "x".repeat(2 * MAX_OUTPUT_LEN);
        let report = build_report(&task(), outcome, Duration::ZERO);
        assert!(body_len(&report) <= MAX_AGENT_BODY - BODY_SLACK, "{}", body_len(&report));
        assert!(report.stdout.as_ref().is_some_and(|s| !s.is_empty() && s.len() <= MAX_OUTPUT_LEN));
        assert_eq!(
            report.stderr.as_ref().map(String::len),
            Some(report.stdout.as_ref().map_or(0, String::len))
        );
    }
}
