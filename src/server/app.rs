//! The server assembled: [`run`] opens the store (and with it the group committer), builds the
//! services the HTTP handlers call, starts the background loops (the sweeper, the relay of job
//! events), serves until the shutdown future completes, and syncs the store one last time. No
//! other module knows how these parts are wired together.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::info;

use super::audit::Audit;
use super::clock::millis;
use super::dispatch::Dispatch;
use super::enroll::Enrollment;
use super::guard::{Guard, SecretHash, secret_hash};
use super::http::{self, Listener};
use super::inventory::Inventory;
use super::job_results::JobOutcomes;
use super::jobs::Jobs;
use super::polling::Polling;
use super::reports::Reports;
use super::store::{Policy, Store};
use super::sweeper::Sweeper;
use super::tasks::{TaskDefaults, Tasks};
use super::views::TaskViews;
use super::{Secrets, ServerConfig};

/// Runs the server on `listener` until `shutdown` completes; then parked long polls answer
/// "no task", requests in flight finish, the loops stop and the store is synced.
pub async fn run(
    config: ServerConfig,
    secrets: Secrets,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The running server keeps only a hash of the admin token.
    let admin_token_hash = secret_hash(&secrets.admin_token);
    let store = Arc::new(
        Store::open(&config.data_dir, config.cache_capacity_bytes, policy(&config))
            .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatch = Arc::new(Dispatch::new(stop_rx));
    let services = Arc::new(Services::new(&store, &dispatch, &config, admin_token_hash, &secrets.enroll_key));
    drop(secrets);
    let sweeper =
        Sweeper::new(Arc::clone(&store), Arc::clone(&dispatch), config.sweep_interval, config.retention);
    let sweeper = tokio::spawn(sweeper.run());
    let relay = Arc::clone(&services);
    tokio::spawn(async move { relay.jobs().relay_events().await });
    let app = http::router(services, admin_token_hash, &config);
    // Nothing past this point needs the configuration, which may carry the admin token.
    drop(config);
    let stopping = async move {
        shutdown.await;
        info!("stopping: answering parked polls and finishing requests");
        let _ = stop_tx.send(true);
    };
    http::serve(listener, app, stopping).await?;
    let _ = sweeper.await;
    store.durable().await.context("cannot sync the database on shutdown")?;
    Ok(())
}

/// The store policy a configuration asks for.
fn policy(config: &ServerConfig) -> Policy {
    Policy {
        ack_window_ms: millis(config.ack_window),
        lost_grace_ms: millis(config.lost_grace),
        output_cap: config.output_cap_bytes,
        compact_min_bytes: config.compact_min_bytes,
    }
}

/// The services the HTTP handlers call, one per concern.
pub struct Services {
    guard: Guard,
    polling: Polling,
    reports: Reports,
    tasks: Tasks,
    task_views: TaskViews,
    jobs: Jobs,
    job_outcomes: JobOutcomes,
    enrollment: Enrollment,
    inventory: Inventory,
    audit: Audit,
}

impl Services {
    /// Every service over `store` and `dispatch`, set up as `config` says.
    fn new(
        store: &Arc<Store>,
        dispatch: &Arc<Dispatch>,
        config: &ServerConfig,
        admin_token_hash: SecretHash,
        enroll_key: &str,
    ) -> Self {
        let defaults = TaskDefaults { timeout: config.default_task_timeout, ttl: config.default_ttl };
        let audit = Audit::new(Arc::clone(store));
        Services {
            guard: Guard::new(Arc::clone(store), enroll_key),
            polling: Polling::new(Arc::clone(store), Arc::clone(dispatch), config.poll_window),
            reports: Reports::new(Arc::clone(store), Arc::clone(dispatch)),
            tasks: Tasks::new(Arc::clone(store), Arc::clone(dispatch), defaults),
            task_views: TaskViews::new(Arc::clone(store), config.output_cap_bytes),
            jobs: Jobs::new(Arc::clone(store), Arc::clone(dispatch), defaults),
            job_outcomes: JobOutcomes::new(Arc::clone(store)),
            enrollment: Enrollment::new(
                Arc::clone(store),
                Arc::clone(dispatch),
                audit.clone(),
                admin_token_hash,
            ),
            inventory: Inventory::new(Arc::clone(store)),
            audit,
        }
    }

    /// Signing keys, replay protection and the failed-signature limit of agent calls.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// Agents' long polls.
    pub fn polling(&self) -> &Polling {
        &self.polling
    }

    /// Agents' reports and output.
    pub fn reports(&self) -> &Reports {
        &self.reports
    }

    /// The operator's task operations.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// The operator's views of tasks.
    pub fn task_views(&self) -> &TaskViews {
        &self.task_views
    }

    /// The job operations.
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// Jobs' results and groups.
    pub fn job_outcomes(&self) -> &JobOutcomes {
        &self.job_outcomes
    }

    /// Registration, acceptance and enrollment tokens.
    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    /// Agents and their host facts.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The audit record.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::protocol::admin::TASKS_PATH;

    fn config(dir: &Path) -> ServerConfig {
        ServerConfig {
            data_dir: dir.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_token: None,
            poll_window: Duration::from_secs(1),
            default_task_timeout: Duration::from_secs(60),
            cache_capacity_bytes: 1024 * 1024,
            enroll_key: None,
            ack_window: Duration::from_secs(30),
            default_ttl: Duration::from_secs(3600),
            lost_grace: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            output_cap_bytes: 1024 * 1024,
            compact_min_bytes: 64 * 1024 * 1024,
            sweep_interval: Duration::from_millis(100),
            tls: None,
            max_inflight: 16,
            retry_after_secs: 1,
        }
    }

    /// The status line of a task list asked for with `token`.
    fn list_tasks_status(address: SocketAddr, token: &str) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        write!(
            stream,
            "GET {TASKS_PATH} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("read the status line");
        line.trim_end().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_serves_on_the_given_listener_until_its_shutdown_future_completes() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let listener = Listener::bind(config.listen, None).await.unwrap();
        let address = listener.local_addr().unwrap();
        let secrets = Secrets { admin_token: "the-admin-token".into(), enroll_key: "the-enroll-key".into() };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(config, secrets, listener, async {
            let _ = stopped.await;
        }));
        let statuses = tokio::task::spawn_blocking(move || {
            [list_tasks_status(address, "the-admin-token"), list_tasks_status(address, "a-guess")]
        })
        .await
        .unwrap();
        assert_eq!(statuses, ["HTTP/1.1 200 OK", "HTTP/1.1 401 Unauthorized"]);
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("run returns once the shutdown future completes")
            .unwrap()
            .unwrap();
    }
}
