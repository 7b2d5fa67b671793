//! The upgrade tests: data directories written by earlier builds (`tests/fixtures/`, each made
//! by its `make-datadir-*.sh` through the real binary: release 0.1.0, and 4fba5c5, the last
//! build before the write-ahead log) open with this build and keep every agent, task, job,
//! token and audit record that build's API showed (`datadir-*.json`); then they take new writes
//! (a task, an operator's and an agent's audit entries), which now go to the write-ahead log
//! they did not have, and open again.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::*;
use crate::protocol::jobs::{JobState, Limit};
use crate::protocol::task::new_task_id;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Release 0.1.0.
const V0_1_0: &str = "0.1.0";
/// The last build before the write-ahead log.
const PRE_WAL: &str = "4fba5c5";

/// Unpacks the data directory written by `build` into a fresh temporary directory.
fn unpack(build: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(fixtures().join(format!("datadir-{build}.tar.gz")))
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar runs");
    assert!(status.success(), "tar could not unpack the fixture: {status}");
    dir
}

fn manifest(build: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(format!("datadir-{build}.json"))).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(manifest["release"], build);
    manifest
}

fn open_at(dir: &Path) -> Store {
    Store::open(dir, 8 * 1024 * 1024, Policy::default()).unwrap()
}

/// The manifest's list `key`, asserted non-empty so that no check below passes vacuously.
fn list<'a>(manifest: &'a Value, key: &str) -> &'a [Value] {
    let items = manifest[key].as_array().unwrap();
    assert!(!items.is_empty(), "the manifest lists no {key}");
    items
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

fn json<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

fn task_id(value: &Value) -> TaskId {
    value.as_str().unwrap().parse().unwrap()
}

fn check_agents(store: &Store, manifest: &Value) {
    let expected = list(manifest, "agents");
    let agents = store.agents().unwrap();
    assert_eq!(agents.len(), expected.len());
    for want in expected {
        let got = store.agent(want["app_id"].as_str().unwrap()).unwrap().expect("agent kept");
        assert_eq!(got.status.as_str(), want["status"], "{}", got.app_id);
        assert_eq!(json(&got.labels), want["labels"], "{}", got.app_id);
        assert_eq!(json(&got.version), want["version"], "{}", got.app_id);
        assert_eq!(got.processed_task_count, want["processed_task_count"], "{}", got.app_id);
        // 0.1.0 kept no features; later builds list what each agent announced.
        let features = want.get("features").cloned().unwrap_or_else(|| Value::Array(Vec::new()));
        assert_eq!(json(store.features(&got.app_id).unwrap()), features, "{}", got.app_id);
        // Agents accepted before approved labels existed keep reaching the same scopes: their
        // declared labels are approved at the first open; a pending one has none approved.
        let approved = store.approved_labels(&got.app_id).unwrap();
        let expected_approved =
            if want["status"] == "accepted" { want["labels"].clone() } else { json(&approved) };
        assert_eq!(json(&approved), expected_approved, "{}", got.app_id);
        if want["status"] == "pending" {
            assert!(approved.is_empty(), "{}", got.app_id);
        }
    }
}

fn check_tasks(store: &Store, manifest: &Value) {
    let expected = list(manifest, "tasks");
    assert_eq!(store.tasks(None, 1000).unwrap().len(), expected.len());
    for want in expected {
        let task = store.task(task_id(&want["task_id"])).unwrap().expect("task kept");
        let [stdout, stderr, _] = store.output_texts(&task, 1 << 20).unwrap();
        let history: Vec<Value> = task.history.iter().map(|(s, _)| json(s)).collect();
        assert_eq!(json(task.status), want["status"], "{}", task.id);
        assert_eq!(json(task.exit_code), want["exit_code"], "{}", task.id);
        assert_eq!(json(&task.error), want["error"], "{}", task.id);
        assert_eq!(String::from_utf8_lossy(&stdout), want["stdout"].as_str().unwrap(), "{}", task.id);
        assert_eq!(String::from_utf8_lossy(&stderr), want["stderr"].as_str().unwrap(), "{}", task.id);
        assert_eq!(history, *want["history"].as_array().unwrap(), "{}", task.id);
        assert_eq!(
            (task.app_id.as_str(), task.task_type.as_str()),
            (want["app_id"].as_str().unwrap(), want["task_type"].as_str().unwrap())
        );
        assert_eq!(
            (task.payload.as_str(), task.timeout_secs),
            (want["payload"].as_str().unwrap(), want["timeout_secs"].as_u64().unwrap())
        );
        // 0.1.0 had no task environment nor working directory: its tasks need no feature.
        let env = want.get("env").cloned().unwrap_or_else(|| serde_json::json!({}));
        assert_eq!(
            (json(&task.env), json(&task.cwd)),
            (env, want.get("cwd").cloned().unwrap_or(Value::Null))
        );
        let needs_env = !task.env.is_empty();
        assert_eq!(task.required_features().contains(&"env"), needs_env, "{}", task.id);
        assert_eq!(task.required_features().contains(&"cwd"), task.cwd.is_some(), "{}", task.id);
    }
}

fn check_jobs(store: &Store, manifest: &Value) {
    let expected = list(manifest, "jobs");
    assert_eq!(store.jobs(1000).unwrap().len(), expected.len());
    for want in expected {
        let job = store.job(task_id(&want["job_id"])).unwrap().expect("job kept");
        assert_eq!(json(job.state), want["state"], "{}", job.id);
        // 0.1.0 had no `offline` count (its jobs read 0 there) and no host timeout.
        let counts: crate::protocol::jobs::JobCounts =
            serde_json::from_value(want["counts"].clone()).unwrap();
        let host_timeout = want.get("host_timeout_secs").map_or(0, |t| t.as_u64().unwrap());
        assert_eq!((&job.counts, job.host_timeout_secs), (&counts, host_timeout), "{}", job.id);
        assert_eq!(job.targets, want["targets"], "{}", job.id);
        assert_eq!(job.version, want["version"], "{}", job.id);
        assert_eq!(
            (job.task_type.as_str(), job.payload.as_str()),
            (want["task_type"].as_str().unwrap(), want["payload"].as_str().unwrap())
        );
        let env = want.get("env").cloned().unwrap_or_else(|| serde_json::json!({}));
        assert_eq!((json(&job.env), json(&job.cwd)), (env, want.get("cwd").cloned().unwrap_or(Value::Null)));
        assert_eq!(
            job.max_concurrency.map(|l: Limit| l.to_string()),
            want["max_concurrency"].as_str().map(String::from)
        );
        check_targets(store, &job, list(want, "results"));
    }
}

fn check_targets(store: &Store, job: &JobRecord, expected: &[Value]) {
    let targets = store.job_targets(job, None, 1000).unwrap();
    assert_eq!(targets.len(), expected.len(), "{}", job.id);
    for (got, want) in targets.iter().zip(expected) {
        assert_eq!(got.app_id, want["app_id"].as_str().unwrap(), "{}", job.id);
        assert_eq!(got.task_id, want["task_id"].as_str().map(|id| id.parse().unwrap()), "{}", job.id);
        if let Some(end) = &got.end {
            assert_eq!(json(end.status), want["state"], "{} {}", job.id, got.app_id);
            assert_eq!(json(end.exit_code), want["exit_code"], "{} {}", job.id, got.app_id);
        }
    }
    assert!(targets.iter().any(|t| t.end.is_some()) || job.state != JobState::Finished);
}

fn check_tokens_and_audit(store: &Store, manifest: &Value) {
    let expected = list(manifest, "tokens");
    assert_eq!(store.tokens().unwrap().len(), expected.len());
    for want in expected {
        let token = store.token(want["token_id"].as_str().unwrap()).unwrap().expect("token kept");
        assert_eq!(
            (token.uses_left, token.revoked),
            (want["uses_left"].as_u64().unwrap() as u32, want["revoked"].as_bool().unwrap())
        );
    }
    let expected = list(manifest, "audit");
    let entries = every_audit_entry(store);
    assert_eq!(entries.len(), expected.len());
    for (got, want) in entries.iter().zip(expected) {
        let got = [&got.record.actor, &got.record.action, &got.record.target, &got.record.detail];
        let want = ["actor", "action", "target", "detail"].map(|k| want[k].as_str().unwrap());
        assert_eq!(got, want);
    }
}

/// Both audit streams, newest first.
fn every_audit_entry(store: &Store) -> Vec<AuditItem> {
    let scan = AuditScan {
        operators: true,
        agents: true,
        before: None,
        since_ms: None,
        limit: 1000,
        keep: &|_| true,
    };
    store.audit_page(&scan).unwrap().0
}

fn check_all(store: &Store, manifest: &Value) {
    check_agents(store, manifest);
    check_tasks(store, manifest);
    check_jobs(store, manifest);
    check_tokens_and_audit(store, manifest);
}

/// Opens the data directory `build` wrote and checks every record against its manifest.
fn opens_with_every_record(build: &str) {
    let dir = unpack(build);
    check_all(&open_at(dir.path()), &manifest(build));
}

/// Opens the data directory `build` wrote, which has no write-ahead log, adds a task queued
/// for `agent` and audit entries, and opens it again: old and new records are all there.
fn takes_new_tasks_and_reopens(build: &str, agent: &str) {
    let dir = unpack(build);
    let manifest = manifest(build);
    assert!(!dir.path().join(WAL_DIR).exists(), "{build} kept no write-ahead log");
    let store = open_at(dir.path());
    assert!(dir.path().join(WAL_DIR).join("checkpoint").is_file(), "the log starts at the first open");
    let queued = store.queued_count(agent, 100);
    assert!(queued > 0, "the fixture has tasks queued for the offline agent");
    let spec = TaskSpec {
        app_id: agent,
        task_type: "shell",
        payload: "echo new",
        env: &std::collections::BTreeMap::new(),
        cwd: None,
        user: None,
        stdin: &[],
        timeout_secs: 60,
        ttl_secs: 3600,
    };
    let mut tasks = vec![TaskRecord::new(spec, new_task_id(), now_ms())];
    store.enqueue(&mut tasks).unwrap();
    let event = |actor: &str, action: &str| AuditRecord {
        at_ms: now_ms(),
        actor: actor.into(),
        action: action.into(),
        target: "new-1".into(),
        detail: String::new(),
    };
    store.audit_agent(&event("agent:new-1", "agent.pending")).unwrap();
    store.audit(&event("admin@127.0.0.1", "agent.accept")).unwrap();
    drop(store);

    let store = open_at(dir.path());
    check_agents(&store, &manifest);
    check_jobs(&store, &manifest);
    let mut entries = every_audit_entry(&store);
    let newest: Vec<(String, u64)> = entries.drain(..2).map(|e| (e.record.action, e.count)).collect();
    assert_eq!(newest, [("agent.accept".into(), 1), ("agent.pending".into(), 1)]);
    assert_eq!(entries.len(), list(&manifest, "audit").len(), "the old entries follow the new ones");
    assert_eq!(store.task(tasks[0].id).unwrap().map(|t| t.status), Some(TaskStatus::Queued));
    assert_eq!(store.queued_count(agent, 100), queued + 1);
    assert_eq!(store.tasks(None, 1000).unwrap().len(), list(&manifest, "tasks").len() + 1);
    let order: Vec<TaskId> = std::iter::from_fn(|| {
        store
            .take_next(
                agent,
                Delivery::Acknowledged,
                &["env".into(), "cwd".into()],
                &mut Vec::new(),
                now_ms(),
            )
            .unwrap()
    })
    .map(|t| t.id)
    .collect();
    assert_eq!(order.last(), Some(&tasks[0].id), "the new task queues behind the old ones: {order:?}");
}

#[test]
fn a_data_directory_written_by_0_1_0_opens_with_every_record() {
    opens_with_every_record(V0_1_0);
}

#[test]
fn a_data_directory_written_by_0_1_0_takes_new_tasks_and_reopens() {
    takes_new_tasks_and_reopens(V0_1_0, "off-1");
}

#[test]
fn a_data_directory_written_before_the_write_ahead_log_opens_with_every_record() {
    let manifest = manifest(PRE_WAL);
    let states: std::collections::BTreeSet<&str> =
        list(&manifest, "tasks").iter().map(|t| t["status"].as_str().unwrap()).collect();
    assert_eq!(states.len(), 9, "the fixture holds a task in every state: {states:?}");
    opens_with_every_record(PRE_WAL);
}

#[test]
fn a_data_directory_written_before_the_write_ahead_log_takes_new_tasks_and_reopens() {
    takes_new_tasks_and_reopens(PRE_WAL, "off-1");
}
