//! Calls that park on the server (`?wait=`): how long one call parks and how long the client
//! waits for its answer (named once here), riding out a few failed calls in a row (a server
//! restart, a network blip), and waiting for a task to finish.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde::de::DeserializeOwned;

use super::operator::Api;
use super::output;
use crate::protocol::admin::{self, TaskView};

/// Seconds one `?wait=` call parks on the server while `run`, `logs -f` or `get --wait` waits.
pub const WAIT_CHUNK_SECS: u64 = 20;
// A server refuses longer parks than its maximum.
const _: () = assert!(WAIT_CHUNK_SECS <= admin::MAX_WAIT_SECS);
/// Read deadline of a waiting call beyond the server's wait, so the server always answers first.
pub const WAIT_GRACE_SECS: u64 = 15;
/// Failed waiting calls in a row that are ridden out before giving up.
const WAIT_RETRIES: u32 = 3;
/// Pause before retrying a failed waiting call.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// Read deadline of a client whose calls park on the server for up to [`WAIT_CHUNK_SECS`].
pub fn wait_timeout() -> Duration {
    Duration::from_secs(WAIT_CHUNK_SECS + WAIT_GRACE_SECS)
}

/// Seconds the next waiting call may park: a chunk, or what is left before `deadline` (rounded
/// up, 0 once it has passed).
pub fn wait_secs(deadline: Option<Instant>, now: Instant) -> u64 {
    let Some(deadline) = deadline else { return WAIT_CHUNK_SECS };
    let left_ms = deadline.saturating_duration_since(now).as_millis();
    u64::try_from(left_ms.div_ceil(1000)).unwrap_or(u64::MAX).min(WAIT_CHUNK_SECS)
}

/// `GET` the path that `path` builds (again for each try), riding out up to [`WAIT_RETRIES`]
/// transient failures in a row with a note on stderr naming `what` is being waited for.
pub fn get_patiently<T: DeserializeOwned>(
    api: &Api,
    what: &str,
    mut path: impl FnMut() -> String,
) -> Result<T> {
    let mut failures = 0;
    loop {
        let path = path();
        match api.try_get::<T>(&path) {
            Ok(value) => return Ok(value),
            Err(error) if error.is_transient() && failures < WAIT_RETRIES => {
                failures += 1;
                output::note(format_args!("orange: waiting for {what}: {error}; retrying"));
                std::thread::sleep(RETRY_PAUSE);
            }
            Err(error) if failures > 0 => {
                let error = api.explain("GET", &path, error);
                return Err(error.context(format!("gave up waiting for {what} after {failures} retries")));
            }
            Err(error) => return Err(api.explain("GET", &path, error)),
        }
    }
}

/// Asks for the task with `?wait=` until it is final, or until `deadline` when there is one.
pub fn wait_task(api: &Api, task_id: &str, deadline: Option<Instant>) -> Result<TaskView> {
    let what = format!("task {task_id}");
    loop {
        let mut wait = 0;
        let task: TaskView = get_patiently(api, &what, || {
            wait = wait_secs(deadline, Instant::now());
            format!("{}?wait={wait}", admin::task_path(task_id))
        })?;
        if task.status.is_final() || wait == 0 {
            return Ok(task);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::output::tests::sample_task;
    use crate::protocol::TaskStatus::*;

    #[test]
    fn waits_are_chunked_and_end_at_the_deadline() {
        let now = Instant::now();
        assert_eq!(wait_secs(None, now), WAIT_CHUNK_SECS);
        assert_eq!(wait_secs(Some(now + Duration::from_secs(300)), now), WAIT_CHUNK_SECS);
        assert_eq!(wait_secs(Some(now + Duration::from_millis(4200)), now), 5);
        assert_eq!(wait_secs(Some(now), now), 0);
    }

    #[test]
    fn the_client_outwaits_every_park_it_asks_for() {
        assert!(wait_timeout() >= Duration::from_secs(WAIT_CHUNK_SECS + 15));
    }

    #[test]
    fn waiting_asks_again_until_the_task_is_final() {
        let id = "0190a1b2-0000-7000-8000-000000000001";
        let running = sample_task(id, "web-1", Running, None);
        let done = sample_task(id, "web-1", Succeeded, Some(0));
        let api = FakeApi::serve(vec![FakeApi::ok(&running), FakeApi::ok(&done)]);
        assert_eq!(wait_task(&api.client(), id, None).unwrap(), done);
        let targets: Vec<String> = api.seen().into_iter().map(|seen| seen.target).collect();
        assert_eq!(targets, [format!("/api/v1/tasks/{id}?wait=20"), format!("/api/v1/tasks/{id}?wait=20")]);
    }

    #[test]
    fn a_deadline_that_passed_returns_the_task_as_it_is() {
        let id = "0190a1b2-0000-7000-8000-000000000001";
        let running = sample_task(id, "web-1", Running, None);
        let api = FakeApi::serve(vec![FakeApi::ok(&running)]);
        assert_eq!(wait_task(&api.client(), id, Some(Instant::now())).unwrap(), running);
        assert_eq!(api.seen()[0].target, format!("/api/v1/tasks/{id}?wait=0"));
    }
}
