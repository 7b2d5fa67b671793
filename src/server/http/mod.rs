//! The HTTP front: builds the router (agent endpoints of the original protocol and the operator
//! API), runs it on a bound listener until a shutdown future completes, and the blocking entry
//! point `orange server` uses.

mod admin_api;
mod admin_enroll;
mod agent_api;
mod agent_auth;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::dispatch::Dispatch;
use super::fleet::{Fleet, policy};
use super::guard::FailureLimiter;
use super::store::Store;
use super::{Secrets, ServerConfig};

/// Shared state of every handler.
pub type AppState = Arc<Fleet>;

/// The whole router.
pub fn router(fleet: AppState, admin_token: &str) -> Router {
    Router::new().merge(agent_api::routes()).merge(admin_api::routes(admin_token)).with_state(fleet)
}

/// Serves on `listener` until `shutdown` completes; then parked long polls answer "no task",
/// in-flight requests finish, and the function returns.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    secrets: Secrets,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::open(&config.data_dir, config.cache_capacity_bytes, policy(&config))
        .with_context(|| format!("cannot open the database in {}", config.data_dir.display()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let fleet = Arc::new(Fleet {
        store,
        dispatch: Dispatch::new(stop_rx),
        config,
        failures: FailureLimiter::default(),
        admin_token_hash: Sha256::digest(secrets.admin_token.as_bytes()).into(),
        enroll_key: secrets.enroll_key,
    });
    let sweeper = tokio::spawn(Arc::clone(&fleet).sweep_loop());
    let app = router(Arc::clone(&fleet), &secrets.admin_token);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("stopping: answering parked polls and finishing requests");
            let _ = stop_tx.send(true);
        })
        .await
        .context("server failed")?;
    let _ = sweeper.await;
    fleet.store.durable().await.context("cannot sync the database on shutdown")?;
    Ok(())
}
