//! Jobs through the operator API of the real server binary, spoken in raw HTTP: the sliding
//! window over fifty agents (checked from the task histories), the error limit, pause and
//! resume, cancel, the dry run, refused requests, and a SIGKILL of the server in the middle of
//! a job run by real agents. Simulated agents (`AgentClient`) make the server's side
//! deterministic; real agents are used where the restart is what is tested.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orange::client::AgentClient;
use orange::protocol::admin::TaskView;
use orange::protocol::jobs::{JobGroups, JobList, JobResult, JobResults, JobState, JobView, TargetList};
use orange::protocol::wire::{DO_STATUS_CANCELLED, DO_STATUS_DOING, DO_STATUS_FAILED, DO_STATUS_SUCCESS};
use orange::protocol::{RegisterRequest, ReportRequest};
use serde_json::{Value, json};

use crate::support::{
    Agent, AgentOpts, RawResponse, SIM_SECRET, Server, ServerOpts, http, most_open_at_once, register_as,
    wait_until,
};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A server whose empty long polls end after a second, so simulated agents can look often.
fn server() -> Server {
    Server::start(ServerOpts::poll_window(1))
}

/// One admin call in raw HTTP with the bearer token and a JSON body (for POST).
fn call(server: &Server, method: &str, path: &str, body: Option<&Value>) -> RawResponse {
    let auth = format!("Bearer {}", server.token);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut headers = vec![("Authorization", auth.as_str())];
    if method == "POST" {
        headers.push(("Content-Type", "application/json"));
    }
    http(server.addr, method, path, &headers, body.as_bytes())
}

/// A call that must answer `status`; returns the body as `T`.
fn expect<T: serde::de::DeserializeOwned>(response: RawResponse, status: u16) -> T {
    assert_eq!(response.status, status, "body: {}", response.text());
    serde_json::from_slice(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.text()))
}

/// An error answer with `status`; returns its message.
fn refused(response: RawResponse, status: u16) -> String {
    let body: Value = expect(response, status);
    body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}")).to_owned()
}

/// Registers a simulated agent with labels.
fn register(server: &Server, app_id: &str, labels: &[(&str, &str)]) -> AgentClient {
    let request = RegisterRequest {
        app_id: app_id.into(),
        secret: SIM_SECRET.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    register_as(server, &request)
}

/// `count` agents named `{prefix}-00` … with the given labels.
fn fleet(
    server: &Server,
    prefix: &str,
    count: usize,
    labels: &[(&str, &str)],
) -> BTreeMap<String, AgentClient> {
    (0..count)
        .map(|i| {
            let app_id = format!("{prefix}-{i:02}");
            let client = register(server, &app_id, labels);
            (app_id, client)
        })
        .collect()
}

fn create(server: &Server, request: Value) -> JobView {
    expect(call(server, "POST", "/api/v1/jobs", Some(&request)), 201)
}

fn job(server: &Server, id: &str) -> JobView {
    expect(call(server, "GET", &format!("/api/v1/jobs/{id}"), None), 200)
}

/// Every result of a job, page by page (pages of `page` results).
fn results(server: &Server, id: &str, page: usize) -> Vec<JobResult> {
    let mut all = Vec::new();
    let mut after = String::new();
    for _ in 0..1000 {
        let query = if after.is_empty() { String::new() } else { format!("&after={after}") };
        let path = format!("/api/v1/jobs/{id}/results?limit={page}{query}");
        let answer: JobResults = expect(call(server, "GET", &path, None), 200);
        all.extend(answer.results);
        match answer.next {
            Some(next) => after = next,
            None => return all,
        }
    }
    panic!("results of {id} never ended");
}

fn report(task_id: &str, do_status: &str, exit_code: i32, stdout: &str) -> ReportRequest {
    ReportRequest {
        task_id: task_id.into(),
        do_status: do_status.into(),
        exit_code: Some(exit_code),
        stdout: Some(stdout.into()),
        ..ReportRequest::default()
    }
}

/// Lets every agent whose task is queued take it and report `outcome(app_id)`; returns how
/// many ran.
fn run_queued(
    server: &Server,
    job_id: &str,
    agents: &BTreeMap<String, AgentClient>,
    outcome: impl Fn(&str) -> (&'static str, i32, String),
) -> usize {
    let queued: Vec<JobResult> =
        results(server, job_id, 1000).into_iter().filter(|r| r.state == "queued").collect();
    for result in &queued {
        let agent = &agents[&result.app_id];
        let task = agent
            .get_task()
            .unwrap_or_else(|e| panic!("{}: {e}", result.app_id))
            .expect("its task is queued");
        assert_eq!(Some(&task.task_id), result.task_id.as_ref());
        let (status, code, stdout) = outcome(&result.app_id);
        agent.report(&report(&task.task_id, status, code, &stdout)).unwrap_or_else(|e| panic!("report: {e}"));
    }
    queued.len()
}

/// Waits (through `after_version` long polls) until the job is done.
fn wait_done(server: &Server, id: &str, within: Duration) -> JobView {
    let deadline = Instant::now() + within;
    let mut view = job(server, id);
    while !view.done {
        assert!(Instant::now() < deadline, "job {id} not done within {within:?}: {view:?}");
        let path = format!("/api/v1/jobs/{id}?after_version={}&wait=5", view.version);
        view = expect(call(server, "GET", &path, None), 200);
    }
    view
}

fn task(server: &Server, id: &str) -> TaskView {
    expect(call(server, "GET", &format!("/api/v1/tasks/{id}"), None), 200)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn a_window_of_five_over_fifty_agents_never_has_more_than_five_open() {
    let server = server();
    let agents = fleet(&server, "web", 50, &[("role", "web")]);
    let _others = fleet(&server, "db", 2, &[("role", "db")]);
    let created = create(
        &server,
        json!({"targets": {"labels": {"role": "web"}}, "task_type": "shell", "payload": "hostname",
               "max_concurrency": "5"}),
    );
    assert_eq!((created.targets, created.state, created.done), (50, JobState::Running, false));
    assert_eq!((created.counts.queued, created.counts.waiting), (5, 45));
    let fails = |app_id: &str| app_id.ends_with('0');
    let mut rounds = 0;
    while !job(&server, &created.job_id).done {
        rounds += 1;
        assert!(rounds <= 100, "the job should end within 100 rounds");
        let ran = run_queued(&server, &created.job_id, &agents, |app_id| {
            if fails(app_id) {
                (DO_STATUS_FAILED, 2, "boom".into())
            } else {
                (DO_STATUS_SUCCESS, 0, "ok".into())
            }
        });
        assert!((1..=5).contains(&ran), "round {rounds} ran {ran} tasks");
    }
    let done = wait_done(&server, &created.job_id, Duration::from_secs(10));
    assert_eq!(done.state, JobState::Finished);
    assert_eq!((done.counts.succeeded, done.counts.failed, done.counts.total()), (45, 5, 50));
    let all = results(&server, &created.job_id, 7);
    assert_eq!(
        all.iter().map(|r| r.app_id.as_str()).collect::<Vec<_>>(),
        agents.keys().map(String::as_str).collect::<Vec<_>>()
    );
    let tasks: Vec<TaskView> =
        all.iter().map(|r| task(&server, r.task_id.as_deref().expect("started"))).collect();
    assert_eq!(most_open_at_once(&tasks), 5);
    let groups: JobGroups =
        expect(call(&server, "GET", &format!("/api/v1/jobs/{}/groups", created.job_id), None), 200);
    let shape: Vec<(&str, Option<i32>, &str, u32)> =
        groups.groups.iter().map(|g| (g.state.as_str(), g.exit_code, g.stdout.as_str(), g.count)).collect();
    assert_eq!(shape, vec![("succeeded", Some(0), "ok", 45), ("failed", Some(2), "boom", 5)]);
    assert_eq!(groups.groups[1].app_ids, vec!["web-00", "web-10", "web-20", "web-30", "web-40"]);
}

#[test]
fn past_max_errors_the_job_stops_and_the_rest_is_skipped() {
    let server = server();
    let agents = fleet(&server, "h", 10, &[]);
    let created = create(
        &server,
        json!({"targets": {"all": true}, "task_type": "ping", "max_concurrency": "2", "max_errors": "1"}),
    );
    let first = results(&server, &created.job_id, 100);
    for app_id in ["h-00", "h-01"] {
        let id = first.iter().find(|r| r.app_id == app_id).and_then(|r| r.task_id.clone()).expect("started");
        let agent = &agents[app_id];
        agent.get_task().unwrap().expect("queued");
        agent.report(&report(&id, DO_STATUS_FAILED, 1, "")).unwrap();
    }
    let stopped = job(&server, &created.job_id);
    assert_eq!(stopped.state, JobState::Stopped);
    assert_eq!((stopped.counts.failed, stopped.counts.queued, stopped.counts.skipped), (2, 1, 7));
    assert!(!stopped.done, "h-02 was started before the second error and goes on");
    assert_eq!(run_queued(&server, &created.job_id, &agents, |_| (DO_STATUS_SUCCESS, 0, String::new())), 1);
    let done = wait_done(&server, &created.job_id, Duration::from_secs(10));
    assert_eq!(done.state, JobState::Stopped);
    let states: Vec<String> = results(&server, &created.job_id, 100).into_iter().map(|r| r.state).collect();
    let mut expected = vec!["failed", "failed", "succeeded"];
    expected.extend(["skipped"; 7]);
    assert_eq!(states, expected);
    for agent in agents.values().skip(3) {
        assert!(agent.get_task().unwrap().is_none(), "a skipped target gets no task");
    }
}

#[test]
fn a_paused_job_starts_no_one_until_resumed() {
    let server = server();
    let agents = fleet(&server, "p", 3, &[]);
    let created = create(
        &server,
        json!({"targets": {"app_ids": ["p-02", "p-00", "p-01", "p-00"]}, "task_type": "ping", "max_concurrency": "1"}),
    );
    assert_eq!(created.targets, 3, "named targets are deduplicated");
    let path = |action: &str| format!("/api/v1/jobs/{}/{action}", created.job_id);
    let paused: JobView = expect(call(&server, "POST", &path("pause"), None), 200);
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(run_queued(&server, &created.job_id, &agents, |_| (DO_STATUS_SUCCESS, 0, String::new())), 1);
    let idle = job(&server, &created.job_id);
    assert_eq!((idle.counts.succeeded, idle.counts.waiting, idle.counts.open(), idle.done), (1, 2, 0, false));
    assert!(agents["p-01"].get_task().unwrap().is_none(), "nothing starts while paused");
    let resumed: JobView = expect(call(&server, "POST", &path("resume"), None), 200);
    assert_eq!((resumed.state, resumed.counts.queued), (JobState::Running, 1));
    for _ in 0..2 {
        assert_eq!(
            run_queued(&server, &created.job_id, &agents, |_| (DO_STATUS_SUCCESS, 0, String::new())),
            1
        );
    }
    let done = wait_done(&server, &created.job_id, Duration::from_secs(10));
    assert_eq!((done.state, done.counts.succeeded), (JobState::Finished, 3));
    let message = refused(call(&server, "POST", &path("pause"), None), 409);
    assert!(message.contains("finished"), "{message}");
    let audit: Value = expect(call(&server, "GET", "/api/v1/audit?limit=10", None), 200);
    for action in ["job.send", "job.pause", "job.resume"] {
        assert!(audit.to_string().contains(action), "{action} missing from {audit}");
    }
}

#[test]
fn cancel_ends_queued_tasks_at_once_tells_running_ones_and_skips_the_rest() {
    let server = server();
    let agents = fleet(&server, "c", 4, &[]);
    let created =
        create(&server, json!({"targets": {"all": true}, "task_type": "ping", "max_concurrency": "2"}));
    let running = agents["c-00"].get_task().unwrap().expect("queued");
    agents["c-00"].report(&report(&running.task_id, DO_STATUS_DOING, 0, "")).unwrap();
    let cancel_path = format!("/api/v1/jobs/{}/cancel", created.job_id);
    let cancelled: JobView = expect(call(&server, "POST", &cancel_path, Some(&json!({"force": false}))), 200);
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!((cancelled.counts.running, cancelled.counts.cancelled, cancelled.counts.skipped), (1, 1, 2));
    assert!(!cancelled.done);
    assert!(task(&server, &running.task_id).cancel_requested);
    agents["c-00"].report(&report(&running.task_id, DO_STATUS_CANCELLED, 143, "")).unwrap();
    let done = wait_done(&server, &created.job_id, Duration::from_secs(10));
    assert_eq!((done.counts.cancelled, done.counts.skipped), (2, 2));
    let states: Vec<String> = results(&server, &created.job_id, 100).into_iter().map(|r| r.state).collect();
    assert_eq!(states, vec!["cancelled", "cancelled", "skipped", "skipped"]);
    let message = refused(call(&server, "POST", &cancel_path, Some(&json!({}))), 409);
    assert!(message.contains("cancelled and done"), "{message}");
}

#[test]
fn a_dry_run_resolves_targets_and_writes_nothing() {
    let server = server();
    fleet(&server, "web", 3, &[("role", "web"), ("dc", "a")]);
    fleet(&server, "db", 2, &[("role", "db"), ("dc", "a")]);
    let request = json!({"targets": {"labels": {"role": "web"}, "app_ids": ["db-01"]}, "task_type": "ping"});
    let list: TargetList = expect(call(&server, "POST", "/api/v1/jobs/dry-run", Some(&request)), 200);
    assert_eq!(list.app_ids, vec!["db-01", "web-00", "web-01", "web-02"]);
    let jobs: JobList = expect(call(&server, "GET", "/api/v1/jobs", None), 200);
    assert!(jobs.jobs.is_empty());
    let tasks: Value = expect(call(&server, "GET", "/api/v1/tasks", None), 200);
    assert_eq!(tasks["tasks"], json!([]));
}

#[test]
fn bad_job_requests_are_refused_with_specific_messages() {
    let server = server();
    fleet(&server, "a", 1, &[("role", "web")]);
    let post = |body: Value| call(&server, "POST", "/api/v1/jobs", Some(&body));
    let unknown = refused(post(json!({"targets": {"app_ids": ["a-00", "ghost"]}, "task_type": "ping"})), 404);
    assert!(unknown.contains("\"ghost\""), "{unknown}");
    let nobody = refused(post(json!({"targets": {"labels": {"role": "db"}}, "task_type": "ping"})), 400);
    assert!(nobody.contains("no accepted agent matches labels role=db"), "{nobody}");
    let empty = refused(post(json!({"targets": {}, "task_type": "ping"})), 400);
    assert!(empty.contains("no targets"), "{empty}");
    let limit =
        refused(post(json!({"targets": {"all": true}, "task_type": "ping", "max_errors": "ten"})), 400);
    assert!(limit.contains("\"ten\""), "{limit}");
    let zero =
        refused(post(json!({"targets": {"all": true}, "task_type": "ping", "max_concurrency": "0"})), 400);
    assert!(zero.contains("max_concurrency must be at least 1"), "{zero}");
    let labels: serde_json::Map<String, Value> = (0..40).map(|i| (format!("k{i}"), json!("v"))).collect();
    let many = refused(post(json!({"targets": {"labels": labels}, "task_type": "ping"})), 413);
    assert!(many.contains("40 labels"), "{many}");
    let big = refused(
        post(json!({"targets": {"all": true}, "task_type": "ping", "payload": "x".repeat(70_000)})),
        413,
    );
    assert!(big.contains("payload is 70000 bytes"), "{big}");
    let not_uuid = refused(call(&server, "GET", "/api/v1/jobs/nope", None), 400);
    assert!(not_uuid.contains("\"nope\""), "{not_uuid}");
    let missing = refused(call(&server, "GET", &format!("/api/v1/jobs/{}", uuid::Uuid::now_v7()), None), 404);
    assert!(missing.contains("unknown job"), "{missing}");
    let no_token = http(server.addr, "GET", "/api/v1/jobs", &[], b"");
    assert_eq!(no_token.status, 401);
}

#[test]
fn a_job_survives_a_sigkill_of_the_server_and_every_target_ends_once() {
    let mut server = Server::start(ServerOpts { poll_window: Some(2), ..ServerOpts::default() });
    let opts = AgentOpts::shell();
    let mut agents: Vec<Agent> =
        (0..6).map(|i| Agent::start(&server, &format!("k-{i}"), opts.clone())).collect();
    for agent in &mut agents {
        agent.wait_online(&server, Duration::from_secs(30));
    }
    let created = create(
        &server,
        json!({"targets": {"all": true}, "task_type": "shell", "payload": "sleep 1; echo done",
               "max_concurrency": "2"}),
    );
    wait_until(Duration::from_secs(60), "two targets succeeded", || {
        job(&server, &created.job_id).counts.succeeded >= 2
    });
    let before = job(&server, &created.job_id);
    assert!(before.counts.succeeded < 6, "the job is still going when the server dies: {before:?}");
    server.restart();
    let done = wait_done(&server, &created.job_id, Duration::from_secs(120));
    assert_eq!((done.state, done.counts.succeeded, done.counts.total()), (JobState::Finished, 6, 6));
    let all = results(&server, &created.job_id, 100);
    assert_eq!(all.len(), 6);
    for result in &all {
        assert_eq!((result.state.as_str(), result.stdout.as_str()), ("succeeded", "done\n"), "{result:?}");
        let tasks: Value =
            expect(call(&server, "GET", &format!("/api/v1/tasks?app_id={}", result.app_id), None), 200);
        let tasks = tasks["tasks"].as_array().expect("a task list");
        assert_eq!(tasks.len(), 1, "{} got one task: {tasks:?}", result.app_id);
        let history: Vec<&str> =
            tasks[0]["history"].as_array().unwrap().iter().filter_map(|t| t["status"].as_str()).collect();
        let finals = history
            .iter()
            .filter(|s| ["succeeded", "failed", "lost", "expired", "cancelled", "timed_out"].contains(s))
            .count();
        assert_eq!(finals, 1, "{} ended once: {history:?}", result.app_id);
    }
}

#[test]
fn a_version_wait_returns_with_the_next_change_and_a_forced_cancel_closes_running_tasks() {
    let server = server();
    let agents = fleet(&server, "v", 2, &[]);
    let created =
        create(&server, json!({"targets": {"all": true}, "task_type": "ping", "max_concurrency": 1}));
    let path = format!("/api/v1/jobs/{}?after_version={}&wait=30", created.job_id, created.version);
    let waiter = {
        let addr = server.addr;
        let auth = format!("Bearer {}", server.token);
        std::thread::spawn(move || http(addr, "GET", &path, &[("Authorization", auth.as_str())], b""))
    };
    // The waiter parks (or sees the change at once); either way it must answer the new version.
    let task = agents["v-00"].get_task().unwrap().expect("queued");
    agents["v-00"].report(&report(&task.task_id, DO_STATUS_DOING, 0, "")).unwrap();
    let changed: JobView = expect(waiter.join().expect("waiter thread"), 200);
    assert!(changed.version > created.version, "{changed:?}");
    assert_eq!(changed.counts.queued + changed.counts.delivered + changed.counts.running, 1);
    let cancel_path = format!("/api/v1/jobs/{}/cancel", created.job_id);
    let cancelled: JobView = expect(call(&server, "POST", &cancel_path, Some(&json!({"force": true}))), 200);
    assert!(cancelled.done, "a forced cancel closes the running task at once: {cancelled:?}");
    assert_eq!((cancelled.counts.cancelled, cancelled.counts.skipped), (1, 1));
    assert_eq!(task_status(&server, &task.task_id), "cancelled");
}

fn task_status(server: &Server, id: &str) -> String {
    task(server, id).status.as_str().to_owned()
}

#[test]
fn a_target_forgotten_mid_job_ends_expired_and_the_window_moves_on() {
    let server = server();
    let agents = fleet(&server, "f", 3, &[]);
    let created =
        create(&server, json!({"targets": {"all": true}, "task_type": "ping", "max_concurrency": 1}));
    let forgotten = call(&server, "POST", "/api/v1/agents/f-01/forget", Some(&json!({})));
    assert_eq!(forgotten.status, 200, "{}", forgotten.text());
    let ok = |_: &str| (DO_STATUS_SUCCESS, 0, "pong".to_owned());
    assert_eq!(run_queued(&server, &created.job_id, &agents, ok), 1);
    assert_eq!(run_queued(&server, &created.job_id, &agents, ok), 1);
    let done = wait_done(&server, &created.job_id, Duration::from_secs(30));
    assert_eq!((done.state, done.counts.succeeded, done.counts.expired), (JobState::Finished, 2, 1));
    let all = results(&server, &created.job_id, 100);
    let states: Vec<(&str, &str)> = all.iter().map(|r| (r.app_id.as_str(), r.state.as_str())).collect();
    assert_eq!(states, [("f-00", "succeeded"), ("f-01", "expired"), ("f-02", "succeeded")]);
    assert_eq!(all[1].task_id, None);
}
