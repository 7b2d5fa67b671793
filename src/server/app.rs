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
