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

/// What the window saw.
struct Measured {
    agents: usize,
    window: f64,
    cpu: f64,
    own: f64,
    polls: u64,
    /// Server RSS in KiB: no agents, parked, after the window, peak.
    rss: [u64; 4],
}

async fn measure(server: &ServerProc, agents: usize, secs: u64, poll_window: &str) -> Result<()> {
    tokio::time::sleep(SETTLE).await;
    let (rss_before, _) = memory_kib(server.pid())?;
    let polls = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let ids = app_ids("idle", agents);
    let handles = start_fleet(&[server.addr], &ids, ENROLL_KEY, 200, |a| {
        park(a, Arc::clone(&polls), Arc::clone(&errors))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let (rss_parked, _) = memory_kib(server.pid())?;
    let (cpu_start, own_start, polls_start, started) =
        (cpu_time(server.pid())?, cpu_time(std::process::id())?, polls.load(Relaxed), Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (rss_after, hwm) = memory_kib(server.pid())?;
    let measured = Measured {
        agents,
        window: started.elapsed().as_secs_f64(),
        cpu: (cpu_time(server.pid())? - cpu_start).as_secs_f64(),
        own: (cpu_time(std::process::id())? - own_start).as_secs_f64(),
        polls: polls.load(Relaxed) - polls_start,
        rss: [rss_before, rss_parked, rss_after, hwm],
    };
    for handle in handles {
        handle.abort();
    }
    println!("## idle fleet: {agents} agents for {secs} s\n");
    print(&measured, poll_window);
    match errors.load(Relaxed) {
        0 => Ok(()),
        errors => bail!("{errors} agents failed"),
    }
}

fn print(m: &Measured, poll_window: &str) {
    let [before, parked, after, hwm] = m.rss;
    let per_agent = after.saturating_sub(before) as f64 / m.agents.max(1) as f64;
    let share =
        |cpu: f64| format!("{cpu:.2} s in {:.1} s = {:.2} % of one core", m.window, 100.0 * cpu / m.window);
    let mut table = Table::new(&["measure", "value", "goal"]);
    let mut row = |name: &str, value: String, goal: &str| table.row(&[name.into(), value, goal.into()]);
    row("agents parked", count(m.agents as u64), "");
    row("server poll window", poll_window.to_owned(), "");
    row("server CPU over the window", share(m.cpu), "≤ 2 % of one core");
    row(
        "long polls that ended empty in the window (+ pings between them)",
        format!("{} ({:.0}/s)", count(m.polls), m.polls as f64 / m.window),
        "",
    );
    row(
        "server RSS: no agents / parked / after the window (peak)",
        format!("{} / {} / {} ({})", mib(before), mib(parked), mib(after), mib(hwm)),
        "",
    );
    row("server memory per parked agent", format!("{per_agent:.1} KiB"), "≤ 12 KiB");
    row("load generator's own CPU (same machine)", share(m.own), "");
    table.print();
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
