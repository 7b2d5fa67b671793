//! What the job commands print: the live progress line, the end-of-job summary (counts per
//! state, the hosts that did not succeed, identical outputs grouped), the jobs table and the
//! one-line answers of cancel, pause and resume. Builders return strings so tests compare them
//! exactly.

use super::output::{short_time, table};
use crate::protocol::jobs::{JobCounts, JobView, OutputGroup};

/// Most hosts named per line of the summary without `--hosts`.
const HOSTS_SHOWN: usize = 10;
/// Most output lines shown per group without `--hosts`.
const LINES_SHOWN: usize = 10;
/// Width of the progress bar in characters.
const BAR_WIDTH: usize = 24;

/// `n` with thousands separators: `1842` → `1,842`.
pub fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `1 host` or `1,842 hosts`.
pub fn hosts(n: u32) -> String {
    format!("{} host{}", thousands(n), if n == 1 { "" } else { "s" })
}

/// The progress line shown on a terminal while a job runs (no newline: it is redrawn in place).
pub fn progress_line(job: &JobView) -> String {
    let counts = &job.counts;
    let total = counts.total().max(1) as usize;
    let filled = counts.ended() as usize * BAR_WIDTH / total;
    format!(
        "[{}{}] {}/{} done, {} failed, {} running, {} queued, {} waiting{}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        thousands(counts.ended()),
        thousands(counts.total()),
        thousands(counts.errors()),
        thousands(counts.running + counts.delivered),
        thousands(counts.queued),
        thousands(counts.waiting),
        if job.state.as_str() == "running" { String::new() } else { format!(" ({})", job.state) },
    )
}

/// The counts line of a summary: every state with at least one host, in lifecycle order.
pub fn counts_line(counts: &JobCounts) -> String {
    let parts: Vec<String> = [
        ("succeeded", counts.succeeded),
        ("failed", counts.failed),
        ("timed_out", counts.timed_out),
        ("lost", counts.lost),
        ("expired", counts.expired),
        ("cancelled", counts.cancelled),
        ("skipped", counts.skipped),
        ("offline", counts.offline),
        ("running", counts.running + counts.delivered),
        ("queued", counts.queued),
        ("waiting", counts.waiting),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{} {name}", thousands(n)))
    .collect();
    if parts.is_empty() { "no hosts".to_owned() } else { parts.join(", ") }
}

/// The first line of a summary: the job, its state and its counts.
pub fn job_headline(job: &JobView) -> String {
    format!("job {}: {} on {}: {}\n", job.job_id, job.state, hosts(job.targets), counts_line(&job.counts))
}

/// The summary printed when a job ends (and by `job get`): the headline, then each group of
/// hosts that ended alike, biggest first, with their shared output (the bytes the hosts wrote);
/// `all_hosts` names every host of every group, else only the hosts of groups that did not
/// succeed, up to a few per group.
pub fn summary(job: &JobView, groups: &[OutputGroup], all_hosts: bool) -> Vec<u8> {
    let mut out = job_headline(job).into_bytes();
    for group in groups {
        out.extend_from_slice(&group_block(group, all_hosts));
    }
    out
}

/// One group: `1,842 hosts: succeeded (exit 0)`, its output indented, and its hosts.
fn group_block(group: &OutputGroup, all_hosts: bool) -> Vec<u8> {
    let mut out =
        format!("\n{}: {}{}\n", hosts(group.count), group.state, exit_note(group.exit_code)).into_bytes();
    let text = group_text(group);
    let lines: Vec<&[u8]> =
        text.split(|&b| b == b'\n').map(|line| line.strip_suffix(b"\r").unwrap_or(line)).collect();
    let shown = if all_hosts { lines.len() } else { lines.len().min(LINES_SHOWN) };
    for line in &lines[..shown] {
        out.extend_from_slice(b"    ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    if shown < lines.len() {
        let more = format!("    … {} more lines (orange job get --hosts shows all)\n", lines.len() - shown);
        out.extend_from_slice(more.as_bytes());
    }
    if all_hosts || group.state != "succeeded" {
        out.extend_from_slice(hosts_line(group, all_hosts).as_bytes());
    }
    out
}

/// ` (exit 3)` when the group has an exit code.
fn exit_note(exit_code: Option<i32>) -> String {
    exit_code.map_or_else(String::new, |code| format!(" (exit {code})"))
}

/// What the hosts of a group said: their error, stdout, stderr and (original clients) result,
/// without trailing blank space; `(no output)` when they said nothing.
fn group_text(group: &OutputGroup) -> Vec<u8> {
    let undecodable = |e: String| format!("(output not shown: {e})").into_bytes();
    let stdout = group.stdout_bytes().unwrap_or_else(undecodable);
    let stderr = group.stderr_bytes().unwrap_or_else(undecodable);
    let error = group.error.as_deref().unwrap_or("").as_bytes();
    let parts: Vec<&[u8]> = [error, &stdout, &stderr, group.result.as_bytes()]
        .into_iter()
        .map(<[u8]>::trim_ascii_end)
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() { b"(no output)".to_vec() } else { parts.join(&b'\n') }
}

/// `  hosts: a, b, c (+ 12 more)`.
fn hosts_line(group: &OutputGroup, all_hosts: bool) -> String {
    let shown = if all_hosts { group.app_ids.len() } else { group.app_ids.len().min(HOSTS_SHOWN) };
    let more = group.count as usize - shown;
    let tail = if more > 0 {
        format!(" (+ {} more; --hosts lists them)", thousands(more as u32))
    } else {
        String::new()
    };
    format!("  hosts: {}{tail}\n", group.app_ids[..shown].join(", "))
}

/// The `orange job list` table.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let rows = jobs.iter().map(|job| {
        vec![
            job.job_id.clone(),
            short_time(&job.created_at),
            job.state.to_string(),
            thousands(job.targets),
            thousands(job.counts.ended()),
            thousands(job.counts.errors()),
            format!("{} {}", job.task_type, job.payload).trim_end().chars().take(40).collect(),
        ]
    });
    table(&["JOB ID", "CREATED", "STATE", "HOSTS", "DONE", "ERRORS", "TASK"], rows.collect())
}

/// The line of `orange job cancel|pause|resume`: where the job stands now.
pub fn job_state_line(job: &JobView) -> String {
    let open = job.counts.open();
    let note = match job.state.as_str() {
        "paused" if open > 0 => format!("; {} already started go on", hosts(open)),
        "cancelled" if open > 0 => format!("; {} still stopping", hosts(open)),
        _ => String::new(),
    };
    format!("job {}: {}{note}\n", job.job_id, job.state)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::jobs::{JobState, Limit};

    pub(crate) fn sample_job(state: JobState, counts: JobCounts) -> JobView {
        JobView {
            job_id: "0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b".into(),
            created_at: "2026-11-26T10:00:00.123Z".into(),
            state,
            status: state,
            done: counts.ended() == counts.total(),
            task_type: "shell".into(),
            payload: "df -h /".into(),
            timeout_secs: 600,
            env: Default::default(),
            cwd: None,
            user: None,
            secret_env: Vec::new(),
            max_concurrency: Some(Limit::Percent(10)),
            max_errors: None,
            targets: counts.total(),
            counts,
            host_timeout_secs: 60,
            retry_of: None,
            version: 7,
        }
    }

    fn group(state: &str, code: Option<i32>, stdout: &str, hosts: &[&str], count: u32) -> OutputGroup {
        OutputGroup {
            state: state.into(),
            status: state.into(),
            exit_code: code,
            stdout: stdout.into(),
            stdout_encoding: None,
            stderr: String::new(),
            stderr_encoding: None,
            result: String::new(),
            error: None,
            count,
            app_ids: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }

    fn block(group: &OutputGroup, all_hosts: bool) -> String {
        String::from_utf8(group_block(group, all_hosts)).expect("text groups print text")
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1842), "1,842");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!((hosts(1), hosts(2000)), ("1 host".to_owned(), "2,000 hosts".to_owned()));
    }

    #[test]
    fn the_progress_line_fills_with_ended_hosts() {
        let counts = JobCounts {
            succeeded: 40,
            failed: 10,
            running: 25,
            queued: 25,
            waiting: 100,
            ..Default::default()
        };
        let line = progress_line(&sample_job(JobState::Running, counts));
        assert_eq!(
            line,
            "[######..................] 50/200 done, 10 failed, 25 running, 25 queued, 100 waiting"
        );
        let paused =
            progress_line(&sample_job(JobState::Paused, JobCounts { waiting: 3, ..Default::default() }));
        assert!(paused.ends_with("0/3 done, 0 failed, 0 running, 0 queued, 3 waiting (paused)"), "{paused}");
    }

    #[test]
    fn the_summary_groups_identical_outputs_and_names_failed_hosts() {
        let counts = JobCounts { succeeded: 1842, failed: 3, ..Default::default() };
        let groups = vec![
            group("succeeded", Some(0), "ok\n", &["web-1", "web-2"], 1842),
            group("failed", Some(1), "disk full\n", &["db-1", "db-2", "db-3"], 3),
        ];
        let text =
            String::from_utf8(summary(&sample_job(JobState::Finished, counts), &groups, false)).unwrap();
        assert_eq!(
            text,
            "job 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b: finished on 1,845 hosts: 1,842 succeeded, 3 failed\n\
             \n1,842 hosts: succeeded (exit 0)\n    ok\n\
             \n3 hosts: failed (exit 1)\n    disk full\n  hosts: db-1, db-2, db-3\n"
        );
    }

    #[test]
    fn hosts_are_capped_unless_asked_for() {
        let names: Vec<String> = (0..12).map(|i| format!("h{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let failed = group("failed", Some(2), "", &refs, 12);
        let short = block(&failed, false);
        assert!(short.contains("    (no output)\n"), "{short}");
        assert!(short.ends_with("h9 (+ 2 more; --hosts lists them)\n"), "{short}");
        let long = block(&failed, true);
        assert!(long.ends_with("h10, h11\n"), "{long}");
        let ok = group("succeeded", Some(0), "fine", &["a"], 1);
        assert!(!block(&ok, false).contains("hosts:"));
        assert!(block(&ok, true).contains("  hosts: a\n"));
    }

    #[test]
    fn long_outputs_are_cut_to_a_few_lines() {
        let text: String = (0..15).map(|i| format!("line {i}\n")).collect();
        let shown = block(&group("succeeded", Some(0), &text, &["a"], 1), false);
        assert!(shown.contains("    line 9\n    … 5 more lines"), "{shown}");
        assert!(!shown.contains("line 10"));
    }

    #[test]
    fn bytes_are_shown_as_the_hosts_wrote_them_and_a_result_as_text() {
        let (stdout, stdout_encoding) = crate::protocol::bytes::encode(b"caf\xe9\r\n");
        let binary = OutputGroup { stdout, stdout_encoding, ..group("succeeded", Some(0), "", &["a"], 1) };
        assert_eq!(group_block(&binary, false), b"\n1 host: succeeded (exit 0)\n    caf\xe9\n");
        let original = OutputGroup { result: "hello".into(), ..group("succeeded", None, "", &["go-1"], 1) };
        assert_eq!(block(&original, false), "\n1 host: succeeded\n    hello\n");
    }

    #[test]
    fn state_lines_say_what_goes_on() {
        let counts = JobCounts { running: 2, waiting: 5, ..Default::default() };
        let line = job_state_line(&sample_job(JobState::Paused, counts));
        assert_eq!(line, "job 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b: paused; 2 hosts already started go on\n");
        assert_eq!(counts_line(&JobCounts::default()), "no hosts");
    }
}
