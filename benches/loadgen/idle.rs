//! Scenario `idle`: `--agents` simulated agents (default 10,000) connected and long-polling for
//! `--secs` seconds (default 60) with no work. The server's CPU time over the window (from
//! `/proc/PID/stat`), its RSS before the fleet connects and after the window, and the memory
//! per parked agent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::procs::{ENROLL_KEY, ServerProc, cpu_time, memory_kib};
use crate::report::{Table, count, mib};
use crate::sim::{SimAgent, app_ids, start_fleet};
use crate::{Options, check_fds};

/// Time for the server to settle before the "before" reading, and for every agent to park.
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the scenario and prints its table.
pub async fn run(options: &Options, fds: u64) -> Result<()> {
    let agents = options.agents.unwrap_or(10_000);
    let secs = options.secs.unwrap_or(60);
    check_fds(agents, fds)?;
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let server = ServerProc::start(&dir.path().join("db"), &options.server_args())?;
    let poll_window =
        options.poll_window.map_or_else(|| "20 s (the default)".to_owned(), |s| format!("{s} s"));
    let result = measure(&server, agents, secs, &poll_window).await.with_context(|| server.log_tail());
    drop(server);
    result
}

async fn measure(server: &ServerProc, agents: usize, secs: u64, poll_window: &str) -> Result<()> {
    tokio::time::sleep(SETTLE).await;
    let (rss_before, _) = memory_kib(server.pid())?;
    let polls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ids = app_ids("idle", agents);
    let handles =
        start_fleet(server.addr, &ids, ENROLL_KEY, 200, |a| park(a, Arc::clone(&polls), Arc::clone(&errors)))
            .await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_parked, _) = memory_kib(server.pid())?;
    let (cpu_start, own_start, polls_start, started) =
        (cpu_time(server.pid())?, cpu_time(std::process::id())?, polls.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window = started.elapsed().as_secs_f64();
    let cpu = (cpu_time(server.pid())? - cpu_start).as_secs_f64();
    let own = (cpu_time(std::process::id())? - own_start).as_secs_f64();
    let (rss_after, hwm) = memory_kib(server.pid())?;
    let polls = polls.load(Relaxed) - polls_start;
    for handle in handles {
        handle.abort();
    }
    let per_agent = rss_after.saturating_sub(rss_before) * 1024 / agents.max(1) as u64;
    let mut table = Table::new(&["measure", "value", "goal"]);
    table.row(&["agents parked".into(), count(agents as u64), String::new()]);
    table.row(&["server poll window".into(), poll_window.to_owned(), String::new()]);
    table.row(&[
        "server CPU over the window".into(),
        format!("{cpu:.2} s in {window:.1} s = {:.2} % of one core", 100.0 * cpu / window),
        "≤ 2 % of one core".into(),
    ]);
    table.row(&[
        "long polls that ended empty in the window (+ pings between them)".into(),
        format!("{} ({:.0}/s)", count(polls), polls as f64 / window),
        String::new(),
    ]);
    table.row(&[
        "server RSS: no agents / parked / after the window (peak)".into(),
        format!("{} / {} / {} ({})", mib(rss_before), mib(rss_parked), mib(rss_after), mib(hwm)),
        String::new(),
    ]);
    table.row(&[
        "server memory per parked agent".into(),
        format!("{:.1} KiB", per_agent as f64 / 1024.0),
        "≤ 12 KiB".into(),
    ]);
    table.row(&[
        "load generator's own CPU (same machine)".into(),
        format!("{own:.2} s = {:.2} % of one core", 100.0 * own / window),
        String::new(),
    ]);
    println!("## idle fleet: {agents} agents for {secs} s\n");
    table.print();
    let errors = errors.load(Relaxed);
    if errors > 0 {
        bail!("{errors} agents failed");
    }
    Ok(())
}

/// One idle agent: long polls back to back, with its heartbeat between two.
async fn park(mut agent: SimAgent, polls: Arc<AtomicU64>, errors: Arc<AtomicU64>) {
    loop {
        let step = async {
            if agent.poll(1).await?.is_some() {
                bail!("an idle agent got a task");
            }
            agent.ping_if_due().await
        };
        if let Err(e) = step.await {
            eprintln!("agent {}: {e:#}", agent.app_id);
            errors.fetch_add(1, Relaxed);
            return;
        }
        polls.fetch_add(1, Relaxed);
    }
}
