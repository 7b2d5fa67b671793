//! Probes for supervisors and load balancers, served without a token and telling nothing
//! secret: `GET /healthz` (the process answers; cheap), `GET /readyz` (the store takes and
//! syncs writes and the server is not stopping; 503 with the reason otherwise) and `GET
//! /version`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::watch;

use crate::server::store::Store;

/// Route of the liveness probe.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Route of the readiness probe.
pub const READYZ_PATH: &str = "/readyz";
/// Route of the version.
pub const VERSION_PATH: &str = "/version";
/// Longest a readiness check waits for the store to sync before calling it not ready.
const READY_SYNC_WAIT: Duration = Duration::from_secs(5);

/// What the probes look at.
pub struct Probes {
    store: Arc<Store>,
    stopping: watch::Receiver<bool>,
}

/// The answer of every probe.
#[derive(Debug, Serialize)]
struct ProbeAnswer {
    /// `ok`, `ready` or `not ready`.
    status: &'static str,
    /// This build's version.
    version: &'static str,
    /// Why the server is not ready (absent when it is).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl ProbeAnswer {
    fn new(status: &'static str, reason: Option<String>) -> Self {
        ProbeAnswer { status, version: env!("CARGO_PKG_VERSION"), reason }
    }
}

/// The probe routes over `store`; `stopping` turns true when the server begins to stop.
pub fn routes<S>(store: Arc<Store>, stopping: watch::Receiver<bool>) -> Router<S> {
    Router::new()
        .route(HEALTHZ_PATH, get(healthz))
        .route(VERSION_PATH, get(healthz))
        .route(READYZ_PATH, get(readyz))
        .with_state(Arc::new(Probes { store, stopping }))
}

async fn healthz() -> Json<ProbeAnswer> {
    Json(ProbeAnswer::new("ok", None))
}

async fn readyz(State(probes): State<Arc<Probes>>) -> (StatusCode, Json<ProbeAnswer>) {
    match not_ready(&probes).await {
        None => (StatusCode::OK, Json(ProbeAnswer::new("ready", None))),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(ProbeAnswer::new("not ready", Some(reason)))),
    }
}

/// Why the server should not be sent traffic now, if it should not.
async fn not_ready(probes: &Probes) -> Option<String> {
    if *probes.stopping.borrow() {
        return Some("the server is stopping".into());
    }
    match tokio::time::timeout(READY_SYNC_WAIT, probes.store.durable()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("the store cannot sync to disk: {e}")),
        Err(_) => Some(format!("the store did not sync within {} s", READY_SYNC_WAIT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::Policy;

    #[tokio::test]
    async fn ready_while_the_store_syncs_and_not_once_stopping() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(dir.path(), 8 << 20, Policy::default()).expect("store"));
        let (stop, stopping) = watch::channel(false);
        let probes = Probes { store, stopping };
        assert_eq!(not_ready(&probes).await, None);
        stop.send(true).expect("the probes hold a receiver");
        assert_eq!(not_ready(&probes).await.as_deref(), Some("the server is stopping"));
    }
}
