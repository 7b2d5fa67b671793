//! `GET /metrics` and the counting of every HTTP answer. The route serves the metrics text
//! ([`Services::metrics_text`](crate::server::Services::metrics_text)); where it is reachable
//! without the admin token is the router's choice (`--metrics-public`), or it is served on a
//! listener of its own (`--metrics-listen`, with the probes) by [`serve_plain`]. [`count`]
//! sits in front of every route and counts each answer by route class and status class: one
//! atomic add, no lock.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::probes::{HEALTHZ_PATH, READYZ_PATH, VERSION_PATH};
use super::{AppState, Listener};
use crate::protocol::facts::FACTS_PATH;
use crate::protocol::files::{FILE_CHUNK_PATH, FILE_UPLOAD_PATH};
use crate::protocol::wire;
use crate::server::config::ConnectionLimits;
use crate::server::metrics::{CONTENT_TYPE, RouteClass};

/// Route of the metrics.
pub const METRICS_PATH: &str = "/metrics";

/// The metrics route (without any token check: the caller puts it behind one, or not).
pub fn routes() -> Router<AppState> {
    Router::new().route(METRICS_PATH, get(handler))
}

/// `GET /metrics`: the metrics in the Prometheus text format.
pub async fn handler(State(app): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], app.metrics_text().await).into_response()
}

/// Counts the answer to `request` in the metrics of `app`.
pub async fn count(app: AppState, request: Request, next: Next) -> Response {
    let route = route_class(request.uri().path());
    let response = next.run(request).await;
    app.metrics().http_response(route, response.status().as_u16());
    response
}

/// The class of a request path, as the request counters group them.
pub fn route_class(path: &str) -> RouteClass {
    const ORIGINAL: [&str; 4] =
        [wire::REGISTER_PATH, wire::PING_PATH, wire::GET_TASK_PATH, wire::REPORT_TASK_PATH];
    const ORANGE: [&str; 6] = [
        wire::REPORT_TASKS_PATH,
        wire::OUTPUT_PATH,
        wire::GOODBYE_PATH,
        FACTS_PATH,
        FILE_CHUNK_PATH,
        FILE_UPLOAD_PATH,
    ];
    if ORIGINAL.contains(&path) {
        RouteClass::AgentOriginal
    } else if ORANGE.contains(&path) {
        RouteClass::AgentOrange
    } else if path == "/api/v1" || path.starts_with("/api/v1/") {
        RouteClass::Admin
    } else if [HEALTHZ_PATH, READYZ_PATH, VERSION_PATH].contains(&path) {
        RouteClass::Probe
    } else if path == METRICS_PATH {
        RouteClass::Metrics
    } else {
        RouteClass::Other
    }
}

/// Most connections the `--metrics-listen` listener keeps open at once (from all sources
/// together: scrapers are few); past it a new one is closed at once.
pub const METRICS_MAX_CONNECTIONS: usize = 32;

/// Binds the plain HTTP listener of `--metrics-listen`.
pub async fn bind_plain(address: SocketAddr) -> Result<Listener> {
    Listener::bind(address, None).await.context("--metrics-listen")
}

/// Serves `app` (the metrics without a token, and the probes) on `listener` until `shutdown`
/// completes: at most [`METRICS_MAX_CONNECTIONS`] open, each closed when idle for
/// `idle_timeout`, like the main listener's connections.
pub async fn serve_plain(
    listener: Listener,
    app: Router,
    idle_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limits = ConnectionLimits {
        max_total: Some(METRICS_MAX_CONNECTIONS),
        max_per_source: METRICS_MAX_CONNECTIONS,
        idle_timeout,
        proxy_from: Vec::new(),
    };
    super::serve_within(listener, app, &limits, METRICS_MAX_CONNECTIONS, shutdown)
        .await
        .context("the metrics listener failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fall_in_their_route_class() {
        assert_eq!(route_class(wire::GET_TASK_PATH), RouteClass::AgentOriginal);
        assert_eq!(route_class(wire::OUTPUT_PATH), RouteClass::AgentOrange);
        assert_eq!(route_class("/orange-forge/api/nothing"), RouteClass::Other);
        assert_eq!(route_class("/api/v1/tasks/0190"), RouteClass::Admin);
        assert_eq!(route_class("/api/v10"), RouteClass::Other);
        assert_eq!(route_class(READYZ_PATH), RouteClass::Probe);
        assert_eq!(route_class(METRICS_PATH), RouteClass::Metrics);
        assert_eq!(route_class("/"), RouteClass::Other);
    }
}
