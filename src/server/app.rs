//! The server assembled: [`assemble`] opens the store (and with it the group committer) and
//! builds the services the HTTP handlers call; [`Assembled::serve`] starts the background loops
//! (the sweeper, the relay of job events), serves until the shutdown future completes, and syncs
//! the store one last time. [`run`] does both. No other module knows how these parts are wired
//! together.

use std::future::Future;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;
use tracing::info;

use super::clock::millis;
use super::dispatch::Dispatch;
use super::guard::secret_hash;
use super::http::{self, Listener};
use super::metrics::Metrics;
use super::relay::Relay;
use super::services::Services;
use super::store::{Policy, Store};
use super::sweeper::Sweeper;
use super::{Secrets, ServerConfig};

/// Runs the server on `listener` until `shutdown` completes; then parked long polls answer
/// "no task", requests in flight finish, the loops stop and the store is synced.
pub async fn run(
    config: ServerConfig,
    secrets: Secrets,
    listener: Listener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    assemble(config, Some(secrets))?.serve(listener, shutdown).await
}

/// A server whose store is open and whose services are built, not serving yet: what
/// `orange server` has before it says it listens.
pub struct Assembled {
    config: ServerConfig,
    store: Arc<Store>,
    dispatch: Arc<Dispatch>,
    services: Arc<Services>,
    stop_tx: watch::Sender<bool>,
    /// The plain listener of `--metrics-listen`, once bound.
    metrics_listener: Option<http::Listener>,
    /// Wake-ups to and from the other servers of the PostgreSQL database; stops when dropped.
    relay: Option<Relay>,
}

/// Opens the store (in the configured data directory, or the PostgreSQL database of
/// `--store`) and builds the services on it. `secrets` are `None` with PostgreSQL: they are then
/// the database's.
pub fn assemble(config: ServerConfig, secrets: Option<Secrets>) -> Result<Assembled> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(open_store(&config, Arc::clone(&metrics))?);
    let secrets = match secrets {
        Some(secrets) => secrets,
        None => super::resolve_shared_secrets(&config, &store)?,
    };
    // The running server keeps only a hash of the admin token.
    let admin_token_hash = secret_hash(&secrets.admin_token);
    // Deliveries an earlier process of this server made and that were not acknowledged go back
    // to the front at once. Not on PostgreSQL: other servers may be running and have made them
    // a moment ago; the ack window's deadline requeues those that stay unacknowledged.
    let requeue_now = config.store.is_none();
    let requeued = requeue_now
        .then(|| store.requeue_unacknowledged(super::clock::now_ms()))
        .transpose()
        .map(Option::unwrap_or_default)
        .with_context(|| format!("cannot requeue unacknowledged deliveries in {}", store_name(&config)))?;
    if requeued > 0 {
        info!(
            tasks = requeued,
            "deliveries not acknowledged before the restart are at the front of their queues again"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatch = Arc::new(Dispatch::new(stop_rx));
    let relay = match &config.store {
        Some(target) => Some(
            super::store::blocking(|| Relay::start(target, &dispatch))
                .with_context(|| format!("cannot listen for the other servers on {}", target.shown))?,
        ),
        None => None,
    };
    let services =
        Arc::new(Services::new(&store, &dispatch, &config, admin_token_hash, &secrets.enroll_key, metrics));
    drop(secrets);
    Ok(Assembled { config, store, dispatch, services, stop_tx, metrics_listener: None, relay })
}

impl Assembled {
    /// Serves the metrics (no token) and the probes on `listener` too, the plain listener of
    /// `--metrics-listen`.
    pub fn with_metrics_listener(self, listener: http::Listener) -> Self {
        Assembled { metrics_listener: Some(listener), ..self }
    }

    /// Starts the background loops and serves on `listener` until `shutdown` completes; then
    /// parked long polls answer "no task", requests in flight finish, the loops stop and the
    /// store is synced.
    pub async fn serve(
        self,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let Assembled { config, store, dispatch, services, stop_tx, metrics_listener, relay: wake_relay } =
            self;
        let sweeper =
            Sweeper::new(Arc::clone(&store), Arc::clone(&dispatch), config.sweep_interval, config.retention);
        let sweeper = tokio::spawn(sweeper.run());
        let relay = Arc::clone(&services);
        tokio::spawn(async move { relay.jobs().relay_events().await });
        if wake_relay.is_some() {
            // Several servers may share the database: so do their failure limits.
            tokio::spawn(super::shared_limits::run(
                Arc::clone(&store),
                Arc::clone(&services),
                Arc::clone(&dispatch),
            ));
        }
        if let Some(listener) = metrics_listener {
            let probes = http::probes::routes(Arc::clone(&store), stop_tx.subscribe());
            let app = http::metrics_router(Arc::clone(&services), probes);
            let mut stopping = stop_tx.subscribe();
            let stopped = async move {
                let _ = stopping.wait_for(|stop| *stop).await;
            };
            let idle_timeout = config.connections.idle_timeout;
            tokio::spawn(async move {
                if let Err(e) = http::metrics::serve_plain(listener, app, idle_timeout, stopped).await {
                    tracing::warn!(error = %format!("{e:#}"), "the metrics listener stopped");
                }
            });
        }
        let probes = http::probes::routes(Arc::clone(&store), stop_tx.subscribe());
        let app = http::router(services, &config, probes);
        let connections = config.connections.clone();
        // Nothing past this point needs the configuration, which may carry the admin token.
        drop(config);
        let stopping = async move {
            shutdown.await;
            info!("stopping: answering parked polls and finishing requests");
            let _ = stop_tx.send(true);
        };
        http::serve(listener, app, &connections, stopping).await?;
        let _ = sweeper.await;
        store.durable().await.context("cannot sync the database on shutdown")?;
        // Its threads end within a moment; joining them is no work for the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || drop(wake_relay)).await;
        Ok(())
    }
}

/// The store the configuration names: the PostgreSQL database of `--store`, else the embedded
/// one in the data directory.
fn open_store(config: &ServerConfig, metrics: Arc<Metrics>) -> Result<Store> {
    match &config.store {
        Some(target) => Store::open_postgres(target, policy(config), metrics)
            .with_context(|| format!("cannot open the store in {}", target.shown)),
        None => Store::open_measured(&config.data_dir, config.cache_capacity_bytes, policy(config), metrics)
            .with_context(|| format!("cannot open the database in {}", config.data_dir.display())),
    }
}

/// Where the store is, for messages.
fn store_name(config: &ServerConfig) -> String {
    match &config.store {
        Some(target) => target.shown.clone(),
        None => config.data_dir.display().to_string(),
    }
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
            max_file_bytes: 1024 * 1024,
            compact_min_bytes: 64 * 1024 * 1024,
            sweep_interval: Duration::from_millis(100),
            tls: None,
            max_inflight: 16,
            max_unverified_inflight: 4,
            retry_after_secs: 1,
            connections: crate::server::config::ConnectionOptions::default().validate().unwrap(),
            metrics_public: false,
            metrics_listen: None,
            store: None,
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
