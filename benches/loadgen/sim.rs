//! A simulated orange agent on one connection, speaking the real agent protocol as
//! `src/client.rs` and `src/agent/` do: version-2 signatures, register signed with the
//! enrollment key, a getTask long poll announcing its capacity, a `doing` acknowledgement
//! before "running" a task and a final report shaped like the real agent's.
//!
//! Differences from the real agent, all on the agent's side: it runs nothing (the task is
//! reported `success` at once), it keeps no journal, and with one connection it cannot keep a
//! poll parked while it reports, so it polls again right after reporting. Its heartbeat goes
//! between two polls, once at least [`HEARTBEAT`] has passed (the real agent pings every 30 s on
//! a second connection).

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;
use orange::protocol::features::{AGENT_BATCH, HEADER_FEATURES};
use orange::protocol::sign::{Canonical, SIGN_VERSION_2, new_nonce, time_header};
use orange::protocol::wire::{self, CODE_NO_TASK, CODE_OK, Envelope, ReportBatch, ReportResults};
use orange::protocol::{RegisterRequest, ReportRequest, Signer, WireTask};
use tokio::task::JoinHandle;

use crate::http::Conn;

/// The real agent's heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// One simulated agent with its connection.
pub struct SimAgent {
    /// Its app id.
    pub app_id: String,
    signer: Signer,
    conn: Conn,
    last_ping: Instant,
}

/// The result the simulated agent reports, as a `ping` task of the real agent would.
const RESULT: &str = "orange loadgen\n";

impl SimAgent {
    /// Connects and registers `app_id` with a fresh secret, signed with the enrollment key.
    pub async fn enroll(addr: SocketAddr, app_id: &str, enroll_key: &str) -> Result<SimAgent> {
        let secret = new_nonce();
        let mut agent = SimAgent {
            app_id: app_id.to_owned(),
            signer: Signer::new(&secret),
            conn: Conn::open(addr).await?,
            last_ping: Instant::now(),
        };
        let request = RegisterRequest {
            app_id: app_id.to_owned(),
            secret,
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            hostname: Some("loadgen".to_owned()),
            ..RegisterRequest::default()
        };
        let body = serde_json::to_vec(&request).context("cannot encode register")?;
        let key = Signer::new(enroll_key);
        let envelope = agent.signed(wire::REGISTER_PATH, body, &key, &[]).await?;
        if envelope.code != CODE_OK {
            bail!("register {app_id} refused: {}", envelope.message);
        }
        Ok(agent)
    }

    /// One long poll with `capacity` free slots: a task, or `None` when the window ended.
    pub async fn poll(&mut self, capacity: usize) -> Result<Option<WireTask>> {
        let capacity = capacity.to_string();
        let signer = self.signer.clone();
        let envelope = self
            .signed(wire::GET_TASK_PATH, Vec::new(), &signer, &[(wire::HEADER_CAPACITY, &capacity)])
            .await?;
        match (envelope.code, envelope.data) {
            (CODE_OK, Some(data)) => Ok(Some(serde_json::from_value(data).context("task does not decode")?)),
            (CODE_NO_TASK, _) => Ok(None),
            (code, _) => bail!("getTask of {} answered code {code}: {}", self.app_id, envelope.message),
        }
    }

    /// One long poll of an agent announcing the batch feature with `capacity` free slots: up to
    /// that many tasks (none when the window ended).
    pub async fn poll_batch(&mut self, capacity: usize) -> Result<Vec<WireTask>> {
        let capacity = capacity.to_string();
        let signer = self.signer.clone();
        let extra = [(wire::HEADER_CAPACITY, capacity.as_str()), (HEADER_FEATURES, AGENT_BATCH)];
        let envelope = self.signed(wire::GET_TASK_PATH, Vec::new(), &signer, &extra).await?;
        match (envelope.code, envelope.data) {
            (CODE_OK, Some(data)) => {
                let mut first: WireTask = serde_json::from_value(data).context("task does not decode")?;
                let mut tasks = std::mem::take(&mut first.more);
                tasks.insert(0, first);
                Ok(tasks)
            }
            (CODE_NO_TASK, _) => Ok(Vec::new()),
            (code, _) => bail!("getTask of {} answered code {code}: {}", self.app_id, envelope.message),
        }
    }

    /// Acknowledges `tasks` with `doing` in one call, then reports them all done in another
    /// (the batch feature's `reportTasks`).
    pub async fn finish_all(&mut self, tasks: &[WireTask]) -> Result<()> {
        self.report_batch(tasks.iter().map(doing).collect()).await?;
        self.report_batch(tasks.iter().map(done).collect()).await
    }

    async fn report_batch(&mut self, reports: Vec<ReportRequest>) -> Result<()> {
        let body = serde_json::to_vec(&ReportBatch { reports }).context("cannot encode reports")?;
        let signer = self.signer.clone();
        let envelope = self.signed(wire::REPORT_TASKS_PATH, body, &signer, &[]).await?;
        expect_ok(&self.app_id, "reportTasks", &envelope)?;
        let results: ReportResults =
            serde_json::from_value(envelope.data.unwrap_or_default()).context("results do not decode")?;
        match results.results.iter().find(|r| r.code != CODE_OK) {
            Some(refused) => bail!("a report of {} was refused: {}", self.app_id, refused.message),
            None => Ok(()),
        }
    }

    /// Sends a heartbeat if the last one is [`HEARTBEAT`] old.
    pub async fn ping_if_due(&mut self) -> Result<()> {
        if self.last_ping.elapsed() < HEARTBEAT {
            return Ok(());
        }
        self.last_ping = Instant::now();
        let signer = self.signer.clone();
        let envelope = self.signed(wire::PING_PATH, wire::PING_BODY.to_vec(), &signer, &[]).await?;
        expect_ok(&self.app_id, "ping", &envelope)
    }

    /// Acknowledges `task` with `doing`, then reports it done, as the real agent does.
    pub async fn finish(&mut self, task: &WireTask) -> Result<()> {
        self.report(&doing(task)).await?;
        self.report(&done(task)).await
    }

    async fn report(&mut self, report: &ReportRequest) -> Result<()> {
        let body = serde_json::to_vec(report).context("cannot encode report")?;
        let signer = self.signer.clone();
        let envelope = self.signed(wire::REPORT_TASK_PATH, body, &signer, &[]).await?;
        expect_ok(&self.app_id, "reportTask", &envelope)
    }

    /// Signs (version 2) and posts `body` to `path`; the decoded envelope.
    async fn signed(
        &mut self,
        path: &str,
        body: Vec<u8>,
        signer: &Signer,
        extra: &[(&str, &str)],
    ) -> Result<Envelope<serde_json::Value>> {
        let time = time_header(chrono::Utc::now());
        let nonce = new_nonce();
        let canonical =
            Canonical { method: "POST", path, app_id: &self.app_id, time: &time, nonce: &nonce, body: &body };
        let sign = signer.sign_v2(&canonical);
        let mut headers = vec![
            (wire::HEADER_APPID, self.app_id.as_str()),
            (wire::HEADER_TIME, time.as_str()),
            (wire::HEADER_SIGN_VERSION, SIGN_VERSION_2),
            (wire::HEADER_NONCE, nonce.as_str()),
            (wire::HEADER_SIGN, sign.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        let answer = self.conn.call(Method::POST, path, &headers, Bytes::from(body)).await?;
        if answer.status != 200 {
            bail!("{path} of {}: HTTP {}", self.app_id, answer.status);
        }
        serde_json::from_slice(&answer.body).with_context(|| format!("{path}: not an envelope"))
    }
}

fn expect_ok(app_id: &str, what: &str, envelope: &Envelope<serde_json::Value>) -> Result<()> {
    if envelope.code != CODE_OK {
        bail!("{what} of {app_id} refused: {}", envelope.message);
    }
    Ok(())
}

/// The `doing` acknowledgement (as `agent::report::doing_report` builds it).
fn doing(task: &WireTask) -> ReportRequest {
    ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        do_status: wire::DO_STATUS_DOING.to_owned(),
        create_at: task.create_at.clone(),
        attempt: task.attempt,
        ..ReportRequest::default()
    }
}

/// The final report of a task that succeeded at once (as `agent::report::build_report`
/// builds it for an unstreamed result).
fn done(task: &WireTask) -> ReportRequest {
    ReportRequest {
        task_id: task.task_id.clone(),
        task_type: task.task_type.clone(),
        do_status: wire::DO_STATUS_SUCCESS.to_owned(),
        create_at: task.create_at.clone(),
        exit_code: Some(0),
        stdout: Some(RESULT.to_owned()),
        stderr: Some(String::new()),
        duration_ms: Some(0),
        attempt: task.attempt,
        ..ReportRequest::default()
    }
}

/// Names `count` app ids `{prefix}-00000`, `{prefix}-00001`, ...
pub fn app_ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Enrolls every app id, `parallel` at a time, agent `i` with the server at `addrs[i % len]`,
/// and starts `run` on each agent as soon as it is enrolled (the server closes a connection
/// that sends no request for 10 s, so an enrolled agent must start polling at once). Fails if
/// any enrollment fails.
pub async fn start_fleet<F, Fut>(
    addrs: &[SocketAddr],
    ids: &[String],
    enroll_key: &str,
    parallel: usize,
    run: F,
) -> Result<Vec<JoinHandle<()>>>
where
    F: Fn(SimAgent) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut running = Vec::with_capacity(ids.len());
    for (c, chunk) in ids.chunks(parallel.max(1)).enumerate() {
        let enrolling: Vec<_> = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let addr = addrs[(c * parallel.max(1) + i) % addrs.len()];
                let (id, key) = (id.clone(), enroll_key.to_owned());
                tokio::spawn(async move { SimAgent::enroll(addr, &id, &key).await })
            })
            .collect();
        for handle in enrolling {
            let agent = handle.await.context("enroll task panicked")??;
            running.push(tokio::spawn(run(agent)));
        }
    }
    Ok(running)
}
