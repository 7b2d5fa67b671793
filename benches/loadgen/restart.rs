//! Scenario `restart`: a data directory holding `--tasks` finished tasks (default 1,000,000)
//! of `--agents` agents (default 10,000), seeded directly through the server's own store
//! (`orange::server::store::Store`: each task enqueued, handed out and reported succeeded, the
//! same three transactions the HTTP path makes, on two threads); then the time from starting
//! `orange server` on it to its first successful request, `--runs` times (default 3). With
//! `--data DIR` the data directory is kept, and seeded only if it holds no database yet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use orange::protocol::TaskStatus;
use orange::protocol::task::new_task_id;
use orange::server::store::{
    AgentRecord, AgentStatus, Delivery, Outcome, Policy, Store, Stream, TaskRecord, TaskSpec,
};

use crate::Options;
use crate::http::Admin;
use crate::procs::{ADMIN_TOKEN, ServerProc, dir_size, free_addr};
use crate::report::{Table, count, ms};
use crate::sim::app_ids;

/// The seeding store's cache, the server's default.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Seeding threads (the machine has two cores).
const SEEDERS: usize = 2;
/// Deadline for a started server to answer.
const SERVE_DEADLINE: Duration = Duration::from_secs(60);
/// Tasks enqueued in one transaction while seeding.
const ENQUEUE_BATCH: usize = 100;

/// Runs the scenario and prints its table.
pub async fn run(options: &Options) -> Result<()> {
    let tasks = options.tasks.unwrap_or(1_000_000);
    let agents = options.agents.unwrap_or(10_000).max(1);
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let data = options.data.clone().unwrap_or_else(|| dir.path().join("db"));
    let mut table = Table::new(&["measure", "value", "goal"]);
    if data.join("sled").exists() {
        table.row(&["seeded".into(), format!("earlier, in {}", data.display()), String::new()]);
    } else {
        let seeded = Instant::now();
        tokio::task::block_in_place(|| seed(&data, agents, tasks))?;
        seed_row(&mut table, tasks, agents, seeded.elapsed());
    }
    let size = dir_size(&data);
    table.row(&[
        "data dir size".into(),
        format!("{:.0} MB ({} bytes)", size as f64 / 1e6, count(size)),
        String::new(),
    ]);
    for run in 1..=options.runs.unwrap_or(3) {
        let took = restart_once(&data).await?;
        table.row(&[format!("start → first successful request, run {run}"), ms(took), "≤ 1 s".into()]);
    }
    println!("## restart with {tasks} stored tasks\n");
    table.print();
    Ok(())
}

fn seed_row(table: &mut Table, tasks: usize, agents: usize, took: Duration) {
    table.row(&[
        "seeded (through `Store`, 2 threads)".into(),
        format!(
            "{} finished tasks of {} agents in {:.0} s ({} tasks/s)",
            count(tasks as u64),
            count(agents as u64),
            took.as_secs_f64(),
            count((tasks as f64 / took.as_secs_f64()) as u64)
        ),
        String::new(),
    ]);
}

/// Flags of the restarted server. The seeded directory was written through the store directly,
/// never through a running server's sweeper, so it has no compaction baseline: without this
/// flag the first start would take it for garbage and rewrite 1,000,000 tasks before serving.
/// A server that grew to this size by itself compacted along the way and does not.
const RESTART_ARGS: [&str; 2] = ["--compact-at-mb", "1048576"];

/// Starts a server on `data`, times its first successful request, stops it gracefully.
async fn restart_once(data: &Path) -> Result<Duration> {
    let addr = free_addr()?;
    let started = Instant::now();
    let server = ServerProc::start_on(data, addr, &RESTART_ARGS.map(String::from))?;
    let took = first_answer(addr, started).await.with_context(|| server.log_tail())?;
    server.stop()?;
    Ok(took)
}

/// Retries `GET /api/v1/tasks?limit=1` until it answers 200; the time since `started`.
async fn first_answer(addr: SocketAddr, started: Instant) -> Result<Duration> {
    while started.elapsed() < SERVE_DEADLINE {
        if let Ok(mut admin) = Admin::open(addr, ADMIN_TOKEN).await {
            if admin.get("/api/v1/tasks?limit=1").await.is_ok() {
                return Ok(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("server on {addr} did not answer within {SERVE_DEADLINE:?}")
}

/// Writes `agents` agents and `tasks` finished tasks into a new store in `data`, durably.
fn seed(data: &Path, agents: usize, tasks: usize) -> Result<()> {
    std::fs::create_dir_all(data).context("cannot create the data directory")?;
    let store = Store::open(data, CACHE_BYTES, Policy::default()).map_err(|e| anyhow!("{e}"))?;
    let ids = app_ids("host", agents);
    let done = AtomicU64::new(0);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..SEEDERS)
            .map(|part| {
                let (store, ids, done) = (&store, &ids, &done);
                scope.spawn(move || seed_part(store, ids, part, tasks, done))
            })
            .collect();
        handles.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow!("a seeder panicked"))?)
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread().build().context("cannot start a runtime")?;
    runtime.block_on(store.durable()).map_err(|e| anyhow!("{e}"))
}

/// Seeds the agents `part`, `part + SEEDERS`, ... with their share of the tasks.
fn seed_part(store: &Store, ids: &[String], part: usize, tasks: usize, done: &AtomicU64) -> Result<()> {
    let per_agent = tasks / ids.len();
    let extra = tasks % ids.len();
    for (i, app_id) in ids.iter().enumerate().skip(part).step_by(SEEDERS) {
        store.put_agent(&agent(app_id)).map_err(|e| anyhow!("{e}"))?;
        let mine = per_agent + usize::from(i < extra);
        for start in (0..mine).step_by(ENQUEUE_BATCH) {
            finish_tasks(store, app_id, (mine - start).min(ENQUEUE_BATCH))?;
        }
        let total = done.fetch_add(mine as u64, Relaxed) + mine as u64;
        if i % 1000 < SEEDERS {
            eprintln!("seeded {total} tasks");
        }
    }
    Ok(())
}

/// Enqueues `n` tasks for `app_id`, hands each out and reports it succeeded.
fn finish_tasks(store: &Store, app_id: &str, n: usize) -> Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let env = std::collections::BTreeMap::new();
    let spec = TaskSpec {
        app_id,
        task_type: "shell",
        payload: "uptime",
        env: &env,
        cwd: None,
        user: None,
        stdin: &[],
        timeout_secs: 600,
        ttl_secs: 86_400,
    };
    let mut batch: Vec<TaskRecord> = (0..n).map(|_| TaskRecord::new(spec, new_task_id(), now)).collect();
    store.enqueue(&mut batch).map_err(|e| anyhow!("{e}"))?;
    let outcome = Outcome {
        status: TaskStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        duration_ms: Some(3),
        output: vec![(Stream::Stdout, b" 10:00:00 up 1 day,  load average: 0.00, 0.00, 0.00\n".to_vec())],
        attempt: None,
    };
    for _ in 0..n {
        let task = store
            .take_next(app_id, Delivery::Acknowledged, &[], &mut Vec::new(), now)
            .map_err(|e| anyhow!("{e}"))?
            .ok_or_else(|| anyhow!("a seeded task of {app_id} was not queued"))?;
        store.apply_report(app_id, task.id, &outcome, now).map_err(|e| anyhow!("{e}"))?;
    }
    Ok(())
}

fn agent(app_id: &str) -> AgentRecord {
    let now = chrono::Utc::now().timestamp_millis();
    AgentRecord {
        app_id: app_id.to_owned(),
        secret: orange::protocol::sign::new_nonce(),
        labels: BTreeMap::new(),
        version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        hostname: Some(app_id.to_owned()),
        registered_at_ms: now,
        last_seen_ms: now,
        processed_task_count: 0,
        status: AgentStatus::Accepted,
    }
}
