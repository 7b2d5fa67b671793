//! The HTTP front: the router built from the services (agent endpoints of the original protocol
//! behind the overload limit, the operator API behind the admin token), and serving it on a
//! bound listener until a shutdown future completes, within the connection limits. Handlers
//! parse, call a service, and map its answer; they never reach the store.

mod acceptor;
mod admin_agents;
mod admin_auth;
mod admin_backup;
mod admin_common;
mod admin_files;
mod admin_jobs;
mod admin_operators;
mod admin_tasks;
mod agent_api;
mod agent_auth;
mod agent_files;
mod busy;
mod client_addr;
mod connections;
pub mod console;
pub mod metrics;
pub mod permissions;
pub mod probes;
mod proxy_protocol;
mod refusal_log;
pub mod tls_reload;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use axum_server::Handle;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

use super::config::ConnectionLimits;
use super::services::Services;
use super::{ServerConfig, TlsFiles};
use crate::protocol::limits::MAX_HEAD_BYTES;
use admin_common::ApiFailure;
use metrics::METRICS_PATH;
use permissions::AdminRoutes;

/// Shared state of every handler.
pub type AppState = Arc<Services>;

/// Connections the kernel queues before the server accepts them (capped by
/// `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;
/// The open-files limit assumed when it cannot be read.
const FALLBACK_OPEN_FILES: u64 = 1024;
/// How long a graceful stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole router: agent routes under the overload limit (a pool for accepted agents, a
/// smaller one for everyone else), the `probes` without a token, operator routes under the
/// operator tokens and the permission table, and `/metrics` under them too unless
/// `--metrics-public`, the web console's files at `/` without a token; every answer counted in
/// the metrics.
pub fn router(services: AppState, config: &ServerConfig, probes: Router<AppState>) -> Router {
    let pools =
        busy::Pools::new(config.max_inflight, config.max_unverified_inflight, config.retry_after_secs);
    let app = Arc::clone(&services);
    let agent_routes = agent_api::routes().layer(axum::middleware::from_fn(move |request, next| {
        busy::limit(Arc::clone(&pools), Arc::clone(&app), request, next)
    }));
    let public_metrics = if config.metrics_public { metrics::routes() } else { Router::new() };
    let routes = Router::new()
        .merge(agent_routes)
        .merge(probes)
        .merge(public_metrics)
        .merge(console::routes())
        .merge(admin_routes(Arc::clone(&services), !config.metrics_public));
    counted(routes, services)
}

/// The router of `--metrics-listen`'s plain listener: the metrics without a token, and the
/// `probes`; its answers are counted too.
pub fn metrics_router(services: AppState, probes: Router<AppState>) -> Router {
    counted(Router::new().merge(metrics::routes()).merge(probes), services)
}

/// `routes` with their state, every answer counted in the metrics.
fn counted(routes: Router<AppState>, services: AppState) -> Router {
    let app = Arc::clone(&services);
    routes.with_state(services).layer(axum::middleware::from_fn(move |request, next| {
        metrics::count(Arc::clone(&app), request, next)
    }))
}

/// Every route of the operator API under `/api/v1/`, and `/metrics` when `with_metrics`, behind
/// the operator tokens (one limit on wrong tokens for all of them) and the permission table.
fn admin_routes(services: AppState, with_metrics: bool) -> Router<AppState> {
    let (routes, _) = operator_routes(with_metrics).into_parts();
    let routes = routes
        .fallback(|| async { ApiFailure(StatusCode::NOT_FOUND, "no such API route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiFailure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this API route".into())
        });
    admin_auth::guarded(routes, services)
}

/// Every operator route, added through the builder that lists them.
fn operator_routes(with_metrics: bool) -> AdminRoutes {
    let metrics = if with_metrics {
        AdminRoutes::new().get(METRICS_PATH, metrics::handler)
    } else {
        AdminRoutes::new()
    };
    AdminRoutes::new()
        .merge(admin_tasks::routes())
        .merge(admin_agents::routes())
        .merge(admin_jobs::routes())
        .merge(admin_files::routes())
        .merge(admin_operators::routes())
        .merge(metrics)
        .merge(admin_backup::routes())
}

/// Every operator route (method and path), `/metrics` among them when `with_metrics`: what
/// the permission table must cover.
pub fn admin_route_list(with_metrics: bool) -> Vec<permissions::Added> {
    operator_routes(with_metrics).into_parts().1
}

/// A bound socket and, for HTTPS, the TLS identity to serve it with.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<RustlsConfig>,
}

impl Listener {
    /// Binds `address` and loads the TLS identity of `tls`, if given.
    pub async fn bind(address: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self> {
        let tcp = listen(address).with_context(|| format!("cannot listen on {address}"))?;
        Ok(Listener { tcp, tls: load_tls(tls).await? })
    }

    /// Serves on a socket already listening (handed over by the service manager), with the TLS
    /// identity of `tls`, if given.
    pub async fn from_std(socket: std::net::TcpListener, tls: Option<&TlsFiles>) -> Result<Self> {
        let tcp = TcpListener::from_std(socket).context("cannot take over the passed socket")?;
        Ok(Listener { tcp, tls: load_tls(tls).await? })
    }

    /// The TLS identity served, to reload it in place; `None` for plain HTTP.
    pub fn tls_config(&self) -> Option<RustlsConfig> {
        self.tls.clone()
    }

    /// The address bound (with the port chosen, when port 0 was asked for).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.tcp.local_addr().context("cannot read the bound address")
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// The TLS identity of `files`, if given, loaded from its PEM files.
async fn load_tls(files: Option<&TlsFiles>) -> Result<Option<RustlsConfig>> {
    let Some(files) = files else { return Ok(None) };
    let config = RustlsConfig::from_pem_file(&files.cert, &files.key).await.with_context(|| {
        format!("cannot load TLS certificate {} and key {}", files.cert.display(), files.key.display())
    })?;
    Ok(Some(config))
}

/// Binds `address` with a long queue of connections not yet accepted: past it the kernel drops
/// new ones and clients wait seconds to retry, so a burst of connections (a fleet coming back,
/// a flood) must not fill it before the server accepts them and closes what it refuses.
fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes; then requests in
/// flight get up to 30 s (`DRAIN_TIMEOUT`) to finish, and the function returns. Refused
/// connections are summarised in the log.
pub async fn serve(
    listener: Listener,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let summaries = tokio::spawn(refusal_log::flush_every_interval());
    let served = serve_within(listener, app, limits, max_connections(limits), shutdown).await;
    summaries.abort();
    refusal_log::flush(true);
    served
}

/// Serves `app` on `listener` with at most `max_total` connections open and the other limits of
/// `limits`, until `shutdown` completes and requests in flight finish (at most `DRAIN_TIMEOUT`).
async fn serve_within(
    listener: Listener,
    app: Router,
    limits: &ConnectionLimits,
    max_total: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    let acceptor = acceptor::Acceptor::new(limits, max_total);
    let Listener { tcp, tls } = listener;
    let tcp = tcp.into_std().context("cannot take over the listening socket")?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let mut server = axum_server::from_tcp(tcp)
        .context("cannot serve on the socket")?
        .handle(handle)
        .first_request_timeout(limits.idle_timeout);
    limit_http(server.http_builder(), limits.idle_timeout);
    // The TLS handshake keeps axum-server's own deadline (10 s), which also closes a silent
    // connection on an HTTPS listener.
    let served = match tls {
        None => server.acceptor(acceptor).serve(app).await,
        Some(tls) => server.acceptor(RustlsAcceptor::new(tls).acceptor(acceptor)).serve(app).await,
    };
    served.context("server failed")
}

/// The limit on open connections: the configured one, else derived from the open-files
/// limit (raised to its hard limit at start; raising again changes nothing). Logged, with the
/// other limits.
fn max_connections(limits: &ConnectionLimits) -> usize {
    let open_files = super::raise_open_files_limit().unwrap_or_else(|e| {
        warn!(error = %e, assumed = FALLBACK_OPEN_FILES, "cannot read the open-files limit");
        FALLBACK_OPEN_FILES
    });
    let total = limits.total(open_files);
    let proxy_from: Vec<String> = limits.proxy_from.iter().map(ToString::to_string).collect();
    info!(
        open_files,
        max_connections = total,
        max_connections_per_source = limits.max_per_source,
        idle_timeout_secs = limits.idle_timeout.as_secs(),
        proxy_protocol_from = %proxy_from.join(","),
        "connection limits"
    );
    total
}

/// Puts the header limits on the HTTP/1 connections: hyper's header timer runs from the moment
/// a connection waits for a request (at its start, and after each answer on a kept-alive
/// connection) until the headers are in, so it is also the idle timeout between requests; it
/// never runs while a request is in flight (a parked long poll, a streamed answer).
fn limit_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    idle_timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout)
        .max_buf_size(MAX_HEAD_BYTES);
}
