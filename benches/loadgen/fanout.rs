//! Scenario `fanout`: `--agents` simulated agents (default 10,000) parked on their long poll;
//! one enqueue names them all; the time until every agent's final report is acknowledged (so
//! every result is stored durably), with the enqueue's own acknowledgement and the last
//! delivery on the way. With `--servers N` the agents are spread round robin over the servers
//! and the one enqueue goes through server 0, so most wake-ups cross between servers.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use orange::protocol::TaskStatus;
use tokio::sync::mpsc;

use crate::http::Admin;
use crate::procs::{ADMIN_TOKEN, ENROLL_KEY, Servers};
use crate::report::{Table, count, ms};
use crate::sim::{SimAgent, app_ids, start_fleet};
use crate::{Options, check_fds};

/// Time left for every agent to park its first poll before the enqueue.
const PARK: Duration = Duration::from_secs(3);
/// Deadline for every result to be stored.
const DEADLINE: Duration = Duration::from_secs(120);

/// What an agent tells the collector.
enum Event {
    Held(Instant),
    Reported(Instant),
    Failed(String),
}

/// Runs the scenario and prints its table.
pub async fn run(options: &Options, fds: u64) -> Result<()> {
    let agents = options.agents.unwrap_or(10_000);
    check_fds(agents, fds)?;
    let dir = tempfile::tempdir().context("cannot make a temporary directory")?;
    let servers = options.start_servers(&dir.path().join("db"))?;
    let result = measure(&servers, agents).await.with_context(|| servers.log_tail());
    drop(servers);
    result
}

async fn measure(servers: &Servers, agents: usize) -> Result<()> {
    let server = servers.first();
    let ids = app_ids("fan", agents);
    let enrolled = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handles = start_fleet(&servers.addrs(), &ids, ENROLL_KEY, 200, |a| one_task(a, tx.clone())).await?;
    let enroll_time = enrolled.elapsed();
    drop(tx);
    tokio::time::sleep(PARK).await;
    let mut admin = Admin::open(server.addr, ADMIN_TOKEN).await?;
    let sent = Instant::now();
    let made = fan_out_enqueue(&mut admin, &ids).await?;
    let acked = sent.elapsed();
    if made.len() != agents {
        bail!("the enqueue made {} tasks for {agents} agents", made.len());
    }
    let (last_held, last_reported) = collect(&mut rx, agents, sent).await?;
    for handle in handles {
        handle.abort();
    }
    let mut table = Table::new(&["measure", "value", "goal"]);
    table.row(&[
        "agents parked (enrolled in)".into(),
        format!("{} ({:.1} s)", count(agents as u64), enroll_time.as_secs_f64()),
        String::new(),
    ]);
    table.row(&["enqueue of one task per agent acknowledged (durable)".into(), ms(acked), String::new()]);
    table.row(&["last agent holds its task".into(), ms(last_held), String::new()]);
    table.row(&[
        "every result stored (last final report acknowledged)".into(),
        ms(last_reported),
        "≤ 1 s".into(),
    ]);
    println!("## fan-out: one enqueue naming {agents} agents\n\n{}\n", servers.describe());
    table.print();
    // A fresh connection: the server closes one that stayed idle for 10 s while results came in.
    check_stored(&mut Admin::open(server.addr, ADMIN_TOKEN).await?, &made).await
}

/// The one enqueue naming every agent; the ids of the tasks it made. (Kept in one place so it
/// can become a job once jobs exist.)
async fn fan_out_enqueue(admin: &mut Admin, ids: &[String]) -> Result<Vec<String>> {
    Ok(admin.enqueue(ids, "ping").await?.into_iter().map(|t| t.task_id).collect())
}

/// Checks through the operator API that the first and the last task ended succeeded.
async fn check_stored(admin: &mut Admin, tasks: &[String]) -> Result<()> {
    for id in [tasks.first(), tasks.last()].into_iter().flatten() {
        let view = admin.task(id).await?;
        if view.status != TaskStatus::Succeeded {
            bail!("task {id} is {:?} after its report was acknowledged", view.status);
        }
    }
    Ok(())
}

/// Waits for every agent's delivery and report; the times of the last of each since `sent`.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    agents: usize,
    sent: Instant,
) -> Result<(Duration, Duration)> {
    let (mut held, mut reported) = (0, 0);
    let (mut last_held, mut last_reported) = (Duration::ZERO, Duration::ZERO);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reported < agents {
        let event = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .map_err(|_| anyhow!("{reported} of {agents} results stored within {DEADLINE:?}"))?
            .ok_or_else(|| anyhow!("every agent stopped; {reported} of {agents} reported"))?;
        match event {
            Event::Held(at) => (held, last_held) = (held + 1, last_held.max(at.duration_since(sent))),
            Event::Reported(at) => {
                (reported, last_reported) = (reported + 1, last_reported.max(at.duration_since(sent)))
            }
            Event::Failed(why) => bail!("{why}"),
        }
    }
    if held != agents {
        bail!("{held} deliveries seen for {agents} reports");
    }
    Ok((last_held, last_reported))
}

/// One agent: poll until its task comes, acknowledge and report it.
async fn one_task(mut agent: SimAgent, tx: mpsc::UnboundedSender<Event>) {
    let result = async {
        loop {
            if let Some(task) = agent.poll(1).await? {
                let _ = tx.send(Event::Held(Instant::now()));
                agent.finish(&task).await?;
                let _ = tx.send(Event::Reported(Instant::now()));
                return anyhow::Ok(());
            }
            agent.ping_if_due().await?;
        }
    };
    if let Err(e) = result.await {
        let _ = tx.send(Event::Failed(format!("agent {}: {e:#}", agent.app_id)));
    }
}
