//! The services the HTTP handlers call, one per concern, built over one store and one
//! dispatch by the assembly point ([`super::app::run`]); handlers reach each through its
//! accessor and never the store itself.

use std::sync::Arc;

use super::ServerConfig;
use super::audit::Audit;
use super::backups::Backups;
use super::dispatch::Dispatch;
use super::enroll::Enrollment;
use super::failures::TokenFailures;
use super::files::Files;
use super::guard::{Guard, SecretHash};
use super::inventory::Inventory;
use super::job_results::JobOutcomes;
use super::jobs::Jobs;
use super::metrics::Metrics;
use super::metrics::state::StateGauges;
use super::operators::Operators;
use super::polling::Polling;
use super::reports::Reports;
use super::store::Store;
use super::tasks::{TaskDefaults, Tasks};
use super::views::TaskViews;

/// The services the HTTP handlers call, one per concern.
pub struct Services {
    guard: Guard,
    token_failures: TokenFailures,
    polling: Polling,
    reports: Reports,
    tasks: Tasks,
    task_views: TaskViews,
    jobs: Jobs,
    job_outcomes: JobOutcomes,
    enrollment: Enrollment,
    inventory: Inventory,
    audit: Audit,
    operators: Operators,
    files: Files,
    metrics: Arc<Metrics>,
    state_gauges: StateGauges,
    backups: Arc<Backups>,
}

impl Services {
    /// Every service over `store` and `dispatch`, set up as `config` says.
    pub(super) fn new(
        store: &Arc<Store>,
        dispatch: &Arc<Dispatch>,
        config: &ServerConfig,
        admin_token_hash: SecretHash,
        enroll_key: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        let defaults = TaskDefaults {
            timeout: config.default_task_timeout,
            ttl: config.default_ttl,
            max_file_bytes: config.max_file_bytes,
        };
        let audit = Audit::new(Arc::clone(store));
        Services {
            guard: Guard::new(Arc::clone(store), enroll_key, Arc::clone(dispatch.presence())),
            token_failures: TokenFailures::default(),
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
            inventory: Inventory::new(Arc::clone(store), Arc::clone(dispatch.presence())),
            operators: Operators::new(Arc::clone(store), audit.clone(), admin_token_hash),
            audit,
            files: Files::new(Arc::clone(store), Arc::clone(dispatch), config.max_file_bytes),
            metrics,
            state_gauges: StateGauges::new(
                Arc::clone(store),
                Arc::clone(dispatch.presence()),
                config.data_dir.clone(),
            ),
            backups: Arc::new(Backups::new(Arc::clone(store), config.data_dir.clone())),
        }
    }

    /// Signing keys, replay protection and the failed-signature limit of agent calls.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The wrong bearer tokens counted against the operator API.
    pub fn token_failures(&self) -> &TokenFailures {
        &self.token_failures
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

    /// Copied files: uploads, agents' chunks, downloads.
    pub fn files(&self) -> &Files {
        &self.files
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

    /// Named operators: authentication and their management.
    pub fn operators(&self) -> &Operators {
        &self.operators
    }

    /// Where requests, refusals and task moves are counted.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in the text format of [`super::metrics::CONTENT_TYPE`], the state gauges
    /// read first (at most every few seconds).
    pub async fn metrics_text(&self) -> String {
        self.state_gauges.refresh(&self.metrics).await;
        self.metrics.encode()
    }

    /// Backups of the running server (shared with the thread that writes one).
    pub fn backups(&self) -> &Arc<Backups> {
        &self.backups
    }
}
