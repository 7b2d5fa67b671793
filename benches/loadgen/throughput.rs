//! Scenario `throughput`: `--agents` simulated agents (default 1,000) take, acknowledge and
//! report tasks while `--enqueuers` operators (default 4) enqueue batches of `--batch` tasks
//! (default 100, one per agent, round robin) as fast as the server acknowledges them durably,
//! keeping at most five tasks per agent outstanding. After a 5 s warm-up, the tasks reported
//! in `--secs` seconds (default 30) give the sustained rate. With `--per-poll N` (N > 1) the
//! agents announce the batch feature: up to N tasks per poll, their `doing` acknowledgements in
//! one call and their final reports in another.
//! With `--compact-at SECS` the server
//! is told (SIGUSR1) to compact its database that many seconds into the window, and the table
//! shows the compaction, the slowest second and the longest request; with `--data DIR` the
//! server runs on that data directory (e.g. one `restart` seeded) instead of an empty one.
//! With `--servers N` (on `--store`) agent `i` talks to server `i % N` and enqueuer `j` sends
//! through server `j % N`; the server CPU is the sum over the servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::task::JoinHandle;

use crate::http::Admin;
use crate::procs::{ADMIN_TOKEN, ENROLL_KEY, Servers, cpu_time};
use crate::report::{Table, count};
use crate::sim::{SimAgent, app_ids, start_fleet};
use crate::{Options, check_fds};

/// Time before the measured window starts.
const WARM_UP: Duration = Duration::from_secs(5);
/// Most tasks outstanding (enqueued, not yet reported) per agent.
const OUTSTANDING_PER_AGENT: u64 = 5;

/// Counters shared by the agents, the enqueuers and the sampler.
#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    reported: AtomicU64,
    errors: AtomicU64,
    next_agent: AtomicUsize,
    stop: AtomicBool,
    /// Longest enqueue in the window, in microseconds.
    longest_enqueue_us: AtomicU64,
    /// Longest acknowledgement + report of one task in the window, in microseconds.
    longest_finish_us: AtomicU64,
}

impl Counters {
    /// Counts a call that took `took` in `longest` (microseconds).
    fn timed(longest: &AtomicU64, took: Duration) {
        longest.fetch_max(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// Runs the scenario and prints its table.
pub async fn run(options: &Options, fds: u64) -> Result<()> {
    let agents = options.agents.unwrap_or(1000);
    let secs = options.secs.unwrap_or(30);
    check_fds(agents, fds)?;
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let data = options.data.clone().unwrap_or_else(|| dir.path().join("db"));
    let servers = options.start_servers(&data)?;
    let result = measure(&servers, agents, secs, options).await.with_context(|| servers.log_tail());
    drop(servers);
    result
}

/// What the run saw.
struct Measured {
    agents: usize,
    enroll_time: Duration,
    window: Duration,
    reported: u64,
    per_second: Vec<u64>,
    /// Each server's CPU time in the window, in order.
    server_cpu: Vec<Duration>,
    /// Where the servers keep the fleet, and how many there are.
    servers: String,
    own_cpu: Duration,
    per_poll: usize,
    counters: Arc<Counters>,
    /// The server's log lines about compactions, when one was asked for.
    compactions: Option<Vec<String>>,
}

async fn measure(servers: &Servers, agents: usize, secs: u64, options: &Options) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let enrolled = Instant::now();
    let handles = start_load(servers, agents, options, &counters).await?;
    let enroll_time = enrolled.elapsed();
    tokio::time::sleep(WARM_UP).await;
    let (own_start, cpu_start) = (cpu_time(std::process::id())?, servers.cpu_times()?);
    let (reported_start, started) = (counters.reported.load(Relaxed), Instant::now());
    counters.longest_enqueue_us.store(0, Relaxed);
    counters.longest_finish_us.store(0, Relaxed);
    let (per_second, ()) =
        tokio::join!(sample_window(&counters, secs), compact_at(servers, options.compact_at));
    let measured = Measured {
        agents,
        enroll_time,
        window: started.elapsed(),
        reported: counters.reported.load(Relaxed) - reported_start,
        per_second,
        server_cpu: servers.cpu_times()?.iter().zip(&cpu_start).map(|(end, start)| *end - *start).collect(),
        servers: servers.describe(),
        own_cpu: cpu_time(std::process::id())? - own_start,
        per_poll: options.per_poll.unwrap_or(1),
        counters: Arc::clone(&counters),
        compactions: options
            .compact_at
            .map(|_| servers.procs.iter().flat_map(|s| s.log_lines("compact")).collect()),
    };
    counters.stop.store(true, Relaxed);
    for handle in handles {
        handle.abort();
    }
    print(&measured);
    match counters.errors.load(Relaxed) {
        0 => Ok(()),
        errors => bail!("{errors} calls failed"),
    }
}

/// Tells every server to compact `at` seconds from now, if asked to.
async fn compact_at(servers: &Servers, at: Option<u64>) {
    if let Some(at) = at {
        tokio::time::sleep(Duration::from_secs(at)).await;
        servers.procs.iter().for_each(|s| s.compact_now());
    }
}

/// Enrolls the agents and starts them and the enqueuers; their handles.
async fn start_load(
    servers: &Servers,
    agents: usize,
    options: &Options,
    counters: &Arc<Counters>,
) -> Result<Vec<JoinHandle<()>>> {
    let ids = app_ids("tp", agents);
    let per_poll = options.per_poll.unwrap_or(1);
    let mut handles = start_fleet(&servers.addrs(), &ids, ENROLL_KEY, 200, |a| {
        agent_loop(a, per_poll, Arc::clone(counters))
    })
    .await?;
    let ids = Arc::new(ids);
    for j in 0..options.enqueuers.unwrap_or(4) {
        let mut admin = Admin::open(servers.addr(j), ADMIN_TOKEN).await?;
        let (ids, counters, batch) = (Arc::clone(&ids), Arc::clone(counters), options.batch.unwrap_or(100));
        handles.push(tokio::spawn(async move { enqueue_loop(&mut admin, &ids, batch, &counters).await }));
    }
    Ok(handles)
}

fn print(m: &Measured) {
    let window = m.window.as_secs_f64();
    let share = |cpu: Duration| format!("{:.0} % of one core", 100.0 * cpu.as_secs_f64() / window);
    let (enqueued, reported) = (m.counters.enqueued.load(Relaxed), m.counters.reported.load(Relaxed));
    let mut table = Table::new(&["measure", "value", "goal"]);
    let mut row = |name: &str, value: String, goal: &str| table.row(&[name.into(), value, goal.into()]);
    row(
        "agents (enrolled in)",
        format!("{} ({:.1} s)", count(m.agents as u64), m.enroll_time.as_secs_f64()),
        "",
    );
    row("window", format!("{window:.1} s after a {} s warm-up", WARM_UP.as_secs()), "");
    row("tasks delivered + acknowledged + reported in the window", count(m.reported), "");
    row(
        "sustained rate",
        format!("{} tasks/s", count((m.reported as f64 / window) as u64)),
        "≥ 10,000 tasks/s",
    );
    row("slowest / fastest second", min_max(&m.per_second), "");
    row("enqueued / reported, whole run", format!("{} / {}", count(enqueued), count(reported)), "");
    row("server CPU in the window", share(m.server_cpu.iter().sum()), "");
    if m.server_cpu.len() > 1 {
        let each = m.server_cpu.iter().enumerate().map(|(i, cpu)| format!("{i}: {}", share(*cpu)));
        row("each server's CPU in the window", each.collect::<Vec<_>>().join("; "), "");
    }
    row("load generator's own CPU in the window (same machine)", share(m.own_cpu), "");
    if let Some(lines) = &m.compactions {
        let longest = |us: &AtomicU64| format!("{:.1} ms", us.load(Relaxed) as f64 / 1000.0);
        row("longest enqueue in the window", longest(&m.counters.longest_enqueue_us), "");
        row("longest acknowledgement + report in the window", longest(&m.counters.longest_finish_us), "");
        let logged = lines.iter().map(|l| compaction_fields(l)).collect::<Vec<_>>().join("; ");
        row("compaction (server log)", if logged.is_empty() { "none".into() } else { logged }, "");
    }
    row("errors", count(m.counters.errors.load(Relaxed)), "0");
    println!("## throughput: {} agents, up to {} tasks per poll\n\n{}\n", m.agents, m.per_poll, m.servers);
    table.print();
}

/// The `key=value` fields of a log line, without its time and level.
fn compaction_fields(line: &str) -> String {
    line.split_whitespace().filter(|w| w.contains('=')).collect::<Vec<_>>().join(" ")
}

/// Counts reports per second for `secs` seconds.
async fn sample_window(counters: &Counters, secs: u64) -> Vec<u64> {
    let mut per_second = Vec::new();
    let mut last = counters.reported.load(Relaxed);
    for _ in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = counters.reported.load(Relaxed);
        per_second.push(now - last);
        last = now;
    }
    per_second
}

fn min_max(per_second: &[u64]) -> String {
    let min = per_second.iter().min().copied().unwrap_or(0);
    let max = per_second.iter().max().copied().unwrap_or(0);
    format!("{} / {} tasks/s", count(min), count(max))
}

/// One agent: poll, acknowledge, report, until stopped or a call fails; with `per_poll` > 1
/// through the batch feature.
async fn agent_loop(mut agent: SimAgent, per_poll: usize, counters: Arc<Counters>) {
    while !counters.stop.load(Relaxed) {
        let step = async {
            if per_poll > 1 {
                let tasks = agent.poll_batch(per_poll).await?;
                if tasks.is_empty() {
                    return agent.ping_if_due().await.map(|()| 0);
                }
                return agent.finish_all(&tasks).await.map(|()| tasks.len() as u64);
            }
            match agent.poll(1).await? {
                Some(task) => {
                    let started = Instant::now();
                    agent.finish(&task).await?;
                    Counters::timed(&counters.longest_finish_us, started.elapsed());
                    Ok(1)
                }
                None => agent.ping_if_due().await.map(|()| 0),
            }
        };
        match step.await {
            Ok(done) => {
                counters.reported.fetch_add(done, Relaxed);
            }
            Err(e) => {
                eprintln!("agent {}: {e:#}", agent.app_id);
                counters.errors.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}

/// One operator: enqueue batches round robin over the agents while fewer than the allowed
/// number of tasks are outstanding.
async fn enqueue_loop(admin: &mut Admin, ids: &[String], batch: usize, counters: &Counters) {
    let cap = OUTSTANDING_PER_AGENT * ids.len() as u64;
    while !counters.stop.load(Relaxed) {
        let outstanding = counters.enqueued.load(Relaxed).saturating_sub(counters.reported.load(Relaxed));
        if outstanding + batch as u64 > cap {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let first = counters.next_agent.fetch_add(batch, Relaxed);
        let targets: Vec<String> = (first..first + batch).map(|i| ids[i % ids.len()].clone()).collect();
        let started = Instant::now();
        match admin.enqueue(&targets, "ping").await {
            Ok(tasks) => {
                Counters::timed(&counters.longest_enqueue_us, started.elapsed());
                counters.enqueued.fetch_add(tasks.len() as u64, Relaxed);
            }
            Err(e) => {
                eprintln!("enqueue: {e:#}");
                counters.errors.fetch_add(1, Relaxed);
                return;
            }
        }
    }
}
