//! Scenario `footprint`: the real `orange agent` binary connected and idle for `--secs`
//! seconds (default 60): its RSS (VmRSS and the peak VmHWM) and CPU time over the window, and
//! the server's RSS beside it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::Options;
use crate::latency::wait_online;
use crate::procs::{AgentProc, ServerProc, cpu_time, memory_kib};
use crate::report::{Table, mib};

/// Time for the agent to settle after it came online, before the window starts.
const SETTLE: Duration = Duration::from_secs(2);

/// Runs the scenario and prints its table.
pub async fn run(options: &Options) -> Result<()> {
    let secs = options.secs.unwrap_or(60);
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let server = ServerProc::start(&dir.path().join("db"), &options.server_args())?;
    let agent = AgentProc::start(server.addr, "idle-agent", &dir.path().join("agent"))?;
    wait_online(&server, "idle-agent").await.with_context(|| server.log_tail())?;
    tokio::time::sleep(SETTLE).await;
    let (cpu_start, started) = (cpu_time(agent.pid())?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window = started.elapsed().as_secs_f64();
    let cpu = (cpu_time(agent.pid())? - cpu_start).as_secs_f64();
    let (rss, hwm) = memory_kib(agent.pid())?;
    let (server_rss, _) = memory_kib(server.pid())?;
    let mut table = Table::new(&["measure", "value", "goal"]);
    table.row(&[
        format!("idle agent RSS after {secs} s (VmRSS / VmHWM)"),
        format!("{} ({rss} kB) / {} ({hwm} kB)", mib(rss), mib(hwm)),
        "≤ 6 MiB".into(),
    ]);
    table.row(&[
        "idle agent CPU over the window".into(),
        format!("{:.0} ms in {window:.1} s = {:.3} % of one core", cpu * 1000.0, 100.0 * cpu / window),
        "no measurable CPU".into(),
    ]);
    table.row(&[
        "server RSS with this one agent".into(),
        format!("{} ({server_rss} kB)", mib(server_rss)),
        String::new(),
    ]);
    println!("## footprint: one idle real agent for {secs} s\n");
    table.print();
    drop(agent);
    server.stop()
}
