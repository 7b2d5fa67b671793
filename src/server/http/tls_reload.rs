//! Reloading the served TLS certificate and key in place on SIGHUP, so that a renewed
//! certificate is served without a restart: connections already open keep the identity they
//! were made with, new ones get the new one. A pair that cannot be loaded (missing, malformed,
//! a key that does not match) is logged and the identity served so far stays. A plain-HTTP
//! server has nothing to reload; it logs the SIGHUP and serves on (the signal's default action
//! would end it).

use axum_server::tls_rustls::RustlsConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::server::TlsFiles;
use crate::server::systemd;

/// Reloads `files` into `served` (`tls`, when the server speaks HTTPS) on every SIGHUP, until
/// the process ends.
pub async fn reload_on_sighup(tls: Option<(RustlsConfig, TlsFiles)>) {
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            warn!(error = %e, "cannot watch SIGHUP; the TLS certificate reloads only on restart");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        systemd::notify_reloading();
        match &tls {
            Some((served, files)) => reload(served, files).await,
            None => info!("SIGHUP: plain HTTP, no certificate to reload"),
        }
        systemd::notify_reloaded();
    }
}

/// Loads `files` and serves them from now on, or logs why not.
async fn reload(served: &RustlsConfig, files: &TlsFiles) {
    match served.reload_from_pem_file(&files.cert, &files.key).await {
        Ok(()) => {
            info!(cert = %files.cert.display(), key = %files.key.display(), "reloaded the TLS certificate")
        }
        Err(e) => error!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            error = %e,
            "cannot reload the TLS certificate; still serving the previous one"
        ),
    }
}
