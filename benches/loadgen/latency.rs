//! Scenario `latency`: one idle connected agent. (1) Dispatch latency: from sending the enqueue
//! (`POST /api/v1/tasks`) to the simulated agent holding the task, over `--tasks` tasks
//! (default 1,000), one at a time with the agent parked in between. (2) The full
//! `orange task run -- true` round trip with a real `orange agent`, `--runs` times (default 100),
//! as `benches/task_run_roundtrip.sh` measures it. With `--servers N` both go through server 0
//! (the others stand by on the same database); `crossing` measures a delivery between two.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;

use crate::Options;
use crate::http::Admin;
use crate::procs::{ADMIN_TOKEN, AgentProc, ENROLL_KEY, ServerProc, bin};
use crate::report::{Table, ms, percentiles};
use crate::sim::SimAgent;

/// How long the agent is left to park its next poll before the next enqueue.
const SETTLE: Duration = Duration::from_millis(3);
/// Deadline for one task to reach the agent, and for the real agent to come online.
const STEP_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline of one `orange task run`.
const RUN_DEADLINE: Duration = Duration::from_secs(30);

/// What the simulated agent tells the enqueuer.
enum Event {
    /// It holds the task with this id since this instant.
    Held(String, Instant),
    /// Its final report was acknowledged.
    Reported,
}

/// Runs the scenario and prints its table.
pub async fn run(options: &Options) -> Result<()> {
    let tasks = options.tasks.unwrap_or(1000);
    let runs = options.runs.unwrap_or(100);
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let servers = options.start_servers(&dir.path().join("db"))?;
    let server = servers.first();
    let samples = dispatch(server.addr, server.addr, tasks).await.with_context(|| servers.log_tail())?;
    let round_trips = round_trips(server, dir.path(), runs).await.with_context(|| servers.log_tail())?;
    let mut table = Table::new(&["measure", "n", "p50", "p99", "max", "goal"]);
    let goals = ["p50 ≤ 1 ms, p99 ≤ 10 ms", "", "", "p50 ≤ 10 ms"];
    let names = [
        "dispatch: enqueue sent → simulated agent holds the task",
        "enqueue acknowledged (durable)",
        "enqueue sent → final report acknowledged",
        "`orange task run -- true` (real agent, fresh CLI process)",
    ];
    for ((name, goal), mut sample) in names.iter().zip(goals).zip(samples.into_iter().chain([round_trips])) {
        let [p50, p99, max] = percentiles(&mut sample);
        table.row(&[(*name).into(), sample.len().to_string(), ms(p50), ms(p99), ms(max), goal.into()]);
    }
    println!("## latency: one idle agent\n\n{}\n", servers.describe());
    table.print();
    servers.stop()
}

/// The dispatch, enqueue and report samples of `tasks` tasks sent one at a time through the
/// server at `enqueue_at` to one agent on the server at `agent_at`.
pub async fn dispatch(
    agent_at: SocketAddr,
    enqueue_at: SocketAddr,
    tasks: usize,
) -> Result<[Vec<Duration>; 3]> {
    let mut agent = SimAgent::enroll(agent_at, "latency-00000", ENROLL_KEY).await?;
    let app_id = vec![agent.app_id.clone()];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let worker = tokio::spawn(async move { serve(&mut agent, tasks, tx).await });
    let mut admin = Admin::open(enqueue_at, ADMIN_TOKEN).await?;
    let mut samples = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..tasks {
        tokio::time::sleep(SETTLE).await;
        let sent = Instant::now();
        let view = admin.enqueue(&app_id, "ping").await?;
        samples[1].push(sent.elapsed());
        let id = view.first().map(|t| t.task_id.clone()).ok_or_else(|| anyhow!("enqueue made no task"))?;
        match next(&mut rx).await? {
            Event::Held(held, at) if held == id => samples[0].push(at.duration_since(sent)),
            _ => bail!("the agent did not get task {id} next"),
        }
        if !matches!(next(&mut rx).await?, Event::Reported) {
            bail!("the agent did not report task {id}");
        }
        samples[2].push(sent.elapsed());
    }
    worker.await.context("agent task panicked")??;
    Ok(samples)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Event>) -> Result<Event> {
    tokio::time::timeout(STEP_DEADLINE, rx.recv())
        .await
        .map_err(|_| anyhow!("no news from the agent within {STEP_DEADLINE:?}"))?
        .ok_or_else(|| anyhow!("the agent stopped"))
}

/// The agent's loop: poll, hold, acknowledge and report, `tasks` times.
async fn serve(agent: &mut SimAgent, tasks: usize, tx: mpsc::UnboundedSender<Event>) -> Result<()> {
    let mut done = 0;
    while done < tasks {
        let Some(task) = agent.poll(1).await? else {
            agent.ping_if_due().await?;
            continue;
        };
        let _ = tx.send(Event::Held(task.task_id.clone(), Instant::now()));
        agent.finish(&task).await?;
        let _ = tx.send(Event::Reported);
        done += 1;
    }
    Ok(())
}

/// Round trips of `orange task run --appid bench -- true` against a real agent.
async fn round_trips(server: &ServerProc, dir: &Path, runs: usize) -> Result<Vec<Duration>> {
    let agent = AgentProc::start(server.addr, "bench", &dir.join("agent"))?;
    wait_online(server, "bench").await?;
    let url = format!("http://{}", server.addr);
    let sample = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>> {
        task_run(&url)?; // warm-up
        (0..runs).map(|_| task_run(&url)).collect()
    })
    .await
    .context("round trips panicked")??;
    drop(agent);
    Ok(sample)
}

/// Waits until the admin API shows `app_id` online.
pub async fn wait_online(server: &ServerProc, app_id: &str) -> Result<()> {
    let mut admin = Admin::open(server.addr, ADMIN_TOKEN).await?;
    let deadline = Instant::now() + STEP_DEADLINE;
    while Instant::now() < deadline {
        if let Ok(body) = admin.get(&format!("/api/v1/agents/{app_id}")).await {
            let view: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            if view["online"] == serde_json::Value::Bool(true) {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("agent {app_id} not online within {STEP_DEADLINE:?}")
}

/// One `orange task run -- true` as a fresh process; its wall time.
fn task_run(url: &str) -> Result<Duration> {
    let started = Instant::now();
    let mut child = Command::new(bin())
        .args(["task", "run", "--appid", "bench", "--", "true"])
        .env("ORANGE_SERVER", url)
        .env("ORANGE_TOKEN", ADMIN_TOKEN)
        .env("ORANGE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start orange task run")?;
    while started.elapsed() < RUN_DEADLINE {
        if let Some(status) = child.try_wait()? {
            let took = started.elapsed();
            if !status.success() {
                bail!("orange task run -- true exited with {status}");
            }
            return Ok(took);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("orange task run -- true took longer than {RUN_DEADLINE:?}")
}
