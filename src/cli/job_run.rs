//! `orange job run`: create the job, follow it with parked calls (`?after_version=&wait=`)
//! while a progress line is redrawn on a terminal, then print the summary with identical outputs
//! grouped, or every result as JSON. Also what `job send` and `job get` share with it: the dry
//! run, the waiting and the fetching.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::job_args::{RetryArgs, RunArgs, check_job_id, job_flags};
use super::job_print;
use super::operator::{Api, OperatorConfig, encode, operator_flags};
use super::output;
use super::wait::{get_patiently, wait_secs, wait_timeout};
use crate::protocol::jobs::{
    self, JobGroups, JobRequest, JobResult, JobResults, JobView, MAX_RESULTS_PAGE, RetryRequest, TargetList,
};

/// Exit status of `job run` when some host did not succeed.
pub const EXIT_SOME_FAILED: i32 = 1;

/// What `--json` prints: the job's fields at the top level, as every single object is printed
/// (`task get`, `GET /api/v1/jobs/{id}`), with every host's result beside them. `job` holds the
/// same job again, where releases before the JSON vocabulary printed it (deprecated, kept).
#[derive(Debug, Serialize)]
pub struct JobReport {
    /// The job as it ended (or stands), its fields at the top level.
    #[serde(flatten)]
    pub fields: JobView,
    /// Deprecated: the same job, nested, for scripts that read `.job.job_id`.
    pub job: JobView,
    /// Every target's result, in app id order.
    pub results: Vec<JobResult>,
}

impl JobReport {
    /// The report of `job` with `results`.
    pub fn new(job: JobView, results: Vec<JobResult>) -> Self {
        JobReport { fields: job.clone(), job, results }
    }
}

/// Runs `orange job run` and returns its exit status.
pub fn run(args: RunArgs) -> Result<i32> {
    let request = job_flags!(args).request()?;
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let api = config.api(wait_timeout());
    if args.dry_run {
        return dry_run(&api, &request, config.json);
    }
    let job: JobView = api.post(jobs::JOBS_PATH, &request)?;
    output::note(format_args!("orange: job {} on {}", job.job_id, job_print::hosts(job.targets)));
    follow_to_the_end(&api, job, config.json, args.hosts)
}

/// Runs `orange job retry`: the job again as a new one, followed like `job run`.
pub fn retry(args: RetryArgs) -> Result<i32> {
    let id = check_job_id(&args.id)?;
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let api = config.api(wait_timeout());
    let request = RetryRequest { failed: args.failed };
    let job: JobView = api.post(&jobs::job_retry_path(&encode(&id)), &request)?;
    output::note(format_args!(
        "orange: job {} retries job {id} on {}",
        job.job_id,
        job_print::hosts(job.targets)
    ));
    follow_to_the_end(&api, job, config.json, args.hosts)
}

/// Follows the new `job` with a progress line on a terminal until it is done, then prints its
/// summary (every host with `hosts`) or, with `json`, the job and every result; returns the
/// exit status.
pub(super) fn follow_to_the_end(api: &Api, job: JobView, json: bool, hosts: bool) -> Result<i32> {
    let show_progress = !json && std::io::stderr().is_terminal();
    let mut progress = Progress { shown: show_progress };
    progress.draw(&job);
    let job = wait_job(api, &job.job_id, None, |job| progress.draw(job))?;
    progress.clear();
    if json {
        output::print_json(&JobReport::new(job.clone(), fetch_results(api, &job.job_id)?))?;
    } else {
        output::emit_bytes(&summary_text(api, &job, hosts)?)?;
    }
    Ok(exit_status(&job))
}

/// 0 when every host succeeded, else [`EXIT_SOME_FAILED`].
fn exit_status(job: &JobView) -> i32 {
    if job.counts.succeeded == job.targets { 0 } else { EXIT_SOME_FAILED }
}

/// The progress line on stderr, redrawn in place; nothing unless stderr is a terminal.
struct Progress {
    shown: bool,
}

impl Progress {
    fn draw(&mut self, job: &JobView) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r{}\x1b[K", job_print::progress_line(job));
            let _ = stderr.flush();
        }
    }

    fn clear(&mut self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }
}

/// Asks for the job with `?after_version=&wait=` until it is done, or until `deadline` when there
/// is one, calling `changed` with every new version seen.
pub fn wait_job(
    api: &Api,
    job_id: &str,
    deadline: Option<Instant>,
    mut changed: impl FnMut(&JobView),
) -> Result<JobView> {
    let what = format!("job {job_id}");
    let mut version = 0;
    loop {
        let mut wait = 0;
        let job: JobView = get_patiently(api, &what, || {
            wait = wait_secs(deadline, Instant::now());
            format!("{}?after_version={version}&wait={wait}", jobs::job_path(&encode(job_id)))
        })?;
        if job.version != version {
            changed(&job);
            version = job.version;
        }
        if job.done || wait == 0 {
            return Ok(job);
        }
    }
}

/// Every target's result, page by page.
pub fn fetch_results(api: &Api, job_id: &str) -> Result<Vec<JobResult>> {
    let mut results = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("{}?limit={MAX_RESULTS_PAGE}", jobs::job_results_path(&encode(job_id)));
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        let page: JobResults = api.get(&path)?;
        results.extend(page.results);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(results),
        }
    }
}

/// The summary of `job`, with its groups asked from the server.
pub fn summary_text(api: &Api, job: &JobView, all_hosts: bool) -> Result<Vec<u8>> {
    let groups: JobGroups = api.get(&jobs::job_groups_path(&encode(&job.job_id)))?;
    Ok(job_print::summary(job, &groups.groups, all_hosts))
}

/// Prints the hosts a job would run on and their count; sends nothing.
pub(super) fn dry_run(api: &Api, request: &JobRequest, json: bool) -> Result<i32> {
    let list: TargetList = api.post(jobs::JOBS_DRY_RUN_PATH, request)?;
    if json {
        output::print_json(&list)?;
    } else {
        output::emit(&dry_run_text(&list))?;
    }
    Ok(0)
}

/// The hosts one per line (those offline now marked), then their count.
fn dry_run_text(list: &TargetList) -> String {
    let mark = |id: &String| if list.offline.contains(id) { " (offline)" } else { "" };
    let mut text: String = list.app_ids.iter().map(|id| format!("{id}{}\n", mark(id))).collect();
    let count = u32::try_from(list.app_ids.len()).unwrap_or(u32::MAX);
    text.push_str(&format!("{} (dry run: nothing sent)\n", job_print::hosts(count)));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::job_print::tests::sample_job;
    use crate::protocol::jobs::{JobCounts, JobState};

    #[test]
    fn only_a_clean_sweep_exits_zero() {
        let ok = sample_job(JobState::Finished, JobCounts { succeeded: 3, ..Default::default() });
        assert_eq!(exit_status(&ok), 0);
        let skipped = sample_job(
            JobState::Stopped,
            JobCounts { succeeded: 2, failed: 1, skipped: 4, ..Default::default() },
        );
        assert_eq!(exit_status(&skipped), EXIT_SOME_FAILED);
    }

    #[test]
    fn dry_runs_list_hosts_and_count_them() {
        let mut list = TargetList { app_ids: vec!["web-1".into(), "web-2".into()], offline: vec![] };
        assert_eq!(dry_run_text(&list), "web-1\nweb-2\n2 hosts (dry run: nothing sent)\n");
        list.offline = vec!["web-2".into()];
        assert_eq!(dry_run_text(&list), "web-1\nweb-2 (offline)\n2 hosts (dry run: nothing sent)\n");
    }
}
