//! `orange job ...`: one command to many hosts. Dispatches the subcommands (their flags are in
//! `job_args.rs`) and runs the short ones (`send`, `get`, `list`, `cancel`, `pause`, `resume`).
//! `run`, which waits and shows progress, is in `job_run.rs`.

use anyhow::Result;
use serde::Serialize;

use super::argv::usage_bail;
use super::job_args::{GetArgs, JobArgs, JobCommand, ListArgs, SendArgs, check_job_id, job_flags};
use super::job_print;
use super::job_run::{self, JobReport, dry_run, fetch_results, wait_job};
use super::operator::{OperatorConfig, OperatorFlags, encode, operator_flags};
use super::output;
use super::wait::wait_timeout;
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{CancelRequest, MAX_LIST_LIMIT};
use crate::protocol::jobs::{self, JobList, JobView};

/// Runs an `orange job` subcommand and returns the exit code.
pub fn run(args: JobArgs) -> Result<i32> {
    match args.command {
        JobCommand::Run(args) => job_run::run(args),
        JobCommand::Retry(args) => job_run::retry(args),
        JobCommand::Send(args) => send(args),
        JobCommand::Get(args) => get(args),
        JobCommand::List(args) => list(args),
        JobCommand::Cancel(args) => {
            let flags = operator_flags!(args);
            act(flags, &args.id, jobs::job_cancel_path, &CancelRequest { force: args.force })
        }
        JobCommand::Pause(args) => {
            let flags = operator_flags!(args);
            act(flags, &args.id, jobs::job_pause_path, &serde_json::json!({}))
        }
        JobCommand::Resume(args) => {
            let flags = operator_flags!(args);
            act(flags, &args.id, jobs::job_resume_path, &serde_json::json!({}))
        }
    }
}

fn send(args: SendArgs) -> Result<i32> {
    let request = job_flags!(args).request()?;
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let api = config.api(ADMIN_TIMEOUT);
    if args.dry_run {
        return dry_run(&api, &request, config.json);
    }
    let job: JobView = api.post(jobs::JOBS_PATH, &request)?;
    if config.json {
        output::print_json(&job)?;
    } else {
        output::emit(&format!("{}\n", job.job_id))?;
    }
    Ok(0)
}

fn get(args: GetArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let job_id = check_job_id(&args.id)?;
    let api = config.api(wait_timeout());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(args.wait);
    let job = wait_job(&api, &job_id, Some(deadline), |_| {})?;
    if config.json {
        output::print_json(&JobReport::new(job, fetch_results(&api, &job_id)?))?;
    } else {
        output::emit_bytes(&job_run::summary_text(&api, &job, args.hosts)?)?;
    }
    Ok(0)
}

fn list(args: ListArgs) -> Result<i32> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let path = match args.limit {
        Some(limit) if limit == 0 || limit > MAX_LIST_LIMIT => {
            usage_bail!("--limit {limit} must be between 1 and {MAX_LIST_LIMIT}")
        }
        Some(limit) => format!("{}?limit={limit}", jobs::JOBS_PATH),
        None => jobs::JOBS_PATH.to_owned(),
    };
    let list: JobList = config.api(ADMIN_TIMEOUT).get(&path)?;
    if config.json {
        output::print_json(&list)?;
    } else {
        output::emit(&job_print::jobs_table(&list.jobs))?;
    }
    Ok(0)
}

/// `cancel`, `pause` and `resume`: POST to the job's action path and print where it stands.
fn act<B: Serialize>(flags: OperatorFlags, id: &str, path: impl Fn(&str) -> String, body: &B) -> Result<i32> {
    let config = OperatorConfig::from_flags(flags)?;
    let job_id = check_job_id(id)?;
    let job: JobView = config.api(ADMIN_TIMEOUT).post(&path(&encode(&job_id)), body)?;
    if config.json {
        output::print_json(&job)?;
    } else {
        output::emit(&job_print::job_state_line(&job))?;
    }
    Ok(0)
}
