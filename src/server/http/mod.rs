//! The HTTP front: the router built from the services (agent endpoints of the original protocol
//! behind the overload limit, the operator API behind the admin token), and serving it on a
//! bound listener until a shutdown future completes. Handlers parse, call a service, and map its
//! answer; they never reach the store.

mod admin_agents;
mod admin_auth;
mod admin_common;
mod admin_jobs;
mod admin_tasks;
mod agent_api;
mod agent_auth;
mod busy;
mod client_addr;
mod refusal_log;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::http::StatusCode;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;

use super::guard::SecretHash;
use super::services::Services;
use super::{ServerConfig, TlsFiles};
use crate::protocol::limits::MAX_HEAD_BYTES;
use admin_common::ApiFailure;

/// Shared state of every handler.
pub type AppState = Arc<Services>;

/// How long a client may take to send a request's headers (against slow-loris connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole router: agent routes under the overload limit, operator routes under the admin
/// token whose SHA-256 is `admin_token_hash`.
pub fn router(services: AppState, admin_token_hash: SecretHash, config: &ServerConfig) -> Router {
    let limiter = busy::Limiter::new(config.max_inflight, config.retry_after_secs);
    let agent_routes = agent_api::routes().layer(axum::middleware::from_fn(move |request, next| {
        busy::limit(Arc::clone(&limiter), request, next)
    }));
    Router::new().merge(agent_routes).merge(admin_routes(admin_token_hash)).with_state(services)
}

/// Every route of the operator API under `/api/v1/`, behind the admin token.
fn admin_routes(admin_token_hash: SecretHash) -> Router<AppState> {
    let routes = Router::new()
        .merge(admin_tasks::routes())
        .merge(admin_agents::routes())
        .merge(admin_jobs::routes())
        .fallback(|| async { ApiFailure(StatusCode::NOT_FOUND, "no such API route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiFailure(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this API route".into())
        });
    admin_auth::guarded(routes, admin_token_hash)
}

/// A bound socket and, for HTTPS, the TLS identity to serve it with.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<RustlsConfig>,
}

impl Listener {
    /// Binds `address` and loads the TLS identity of `tls`, if given.
    pub async fn bind(address: SocketAddr, tls: Option<&TlsFiles>) -> Result<Self> {
        let tcp = TcpListener::bind(address).await.with_context(|| format!("cannot listen on {address}"))?;
        let tls = match tls {
            None => None,
            Some(files) => {
                Some(RustlsConfig::from_pem_file(&files.cert, &files.key).await.with_context(|| {
                    format!(
                        "cannot load TLS certificate {} and key {}",
                        files.cert.display(),
                        files.key.display()
                    )
                })?)
            }
        };
        Ok(Listener { tcp, tls })
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

/// Serves `app` on `listener` until `shutdown` completes; then requests in flight get up to
/// 30 s (`DRAIN_TIMEOUT`) to finish, and the function returns.
pub async fn serve(
    listener: Listener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let handle = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(DRAIN_TIMEOUT));
    });
    let Listener { tcp, tls } = listener;
    let tcp = tcp.into_std().context("cannot take over the listening socket")?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let served = match tls {
        None => {
            let mut server = axum_server::from_tcp(tcp).context("cannot serve on the socket")?;
            limit_http(server.http_builder());
            server.handle(handle).serve(app).await
        }
        Some(tls) => {
            let mut server =
                axum_server::tls_rustls::from_tcp_rustls(tcp, tls).context("cannot serve on the socket")?;
            limit_http(server.http_builder());
            server.handle(handle).serve(app).await
        }
    };
    served.context("server failed")
}

/// Puts the header limits on the HTTP/1 connections.
fn limit_http(builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES);
}
