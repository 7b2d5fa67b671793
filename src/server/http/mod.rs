//! The HTTP front: builds the router (agent endpoints of the original protocol and the operator
//! API), runs it on a bound listener until a shutdown future completes, and the blocking entry
//! point `orange server` uses.

mod admin_api;
mod admin_enroll;
mod admin_jobs;
mod agent_api;
mod agent_auth;
mod busy;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::dispatch::Dispatch;
use super::fleet::{Fleet, policy};
use super::guard::FailureLimiter;
use super::store::Store;
use super::{Secrets, ServerConfig};
use crate::protocol::limits::MAX_HEAD_BYTES;

/// Shared state of every handler.
pub type AppState = Arc<Fleet>;

/// The whole router.
pub fn router(fleet: AppState, admin_token: &str) -> Router {
    let limiter = busy::Limiter::new(fleet.config.max_inflight, fleet.config.retry_after_secs);
    let agent_routes = agent_api::routes().layer(axum::middleware::from_fn(move |request, next| {
        busy::limit(Arc::clone(&limiter), request, next)
    }));
    Router::new().merge(agent_routes).merge(admin_api::routes(admin_token)).with_state(fleet)
}

/// How long a client may take to send a request's headers (against slow-loris connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves on `listener` (HTTPS when `tls` is given) until `shutdown` completes; then parked
/// long polls answer "no task", in-flight requests finish, and the function returns.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    secrets: Secrets,
    tls: Option<RustlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The running server keeps only a hash of the admin token.
    let Secrets { admin_token, enroll_key } = secrets;
    let mut config = config;
    config.admin_token = None;
    let store = Store::open(&config.data_dir, config.cache_capacity_bytes, policy(&config))
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let fleet = Arc::new(Fleet {
        store,
        dispatch: Dispatch::new(stop_rx),
        config,
        failures: FailureLimiter::default(),
        admin_token_hash: Sha256::digest(admin_token.as_bytes()).into(),
        enroll_key,
    });
    let sweeper = tokio::spawn(Arc::clone(&fleet).sweep_loop());
    tokio::spawn(Arc::clone(&fleet).job_event_loop());
    let app = router(Arc::clone(&fleet), &admin_token);
    drop(admin_token);
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: answering parked polls and finishing requests");
        let _ = stop_tx.send(true);
        stopper.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    let listener = listener.into_std().context("cannot take over the listening socket")?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        None => {
            let mut server = axum_server::from_tcp(listener).context("cannot serve on the socket")?;
            limit_http(server.http_builder());
            server.handle(handle).serve(app).await
        }
        Some(tls) => {
            let mut server = axum_server::tls_rustls::from_tcp_rustls(listener, tls)
                .context("cannot serve on the socket")?;
            limit_http(server.http_builder());
            server.handle(handle).serve(app).await
        }
    };
    served.context("server failed")?;
    let _ = sweeper.await;
    fleet.store.durable().await.context("cannot sync the database on shutdown")?;
    Ok(())
}

/// Puts the header limits on the HTTP/1 connections.
fn limit_http(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
}
