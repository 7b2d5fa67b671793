//! `orange server`: the agent endpoints of the original protocol, the operator API, long-poll
//! dispatch and the embedded sled store. This module owns the configuration, the data
//! directory and the secrets; [`run`] assembles the server from them, and [`run_blocking`] is
//! what `orange server` calls.

mod app;
pub mod audit;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod config;
pub mod dispatch;
pub mod enroll;
pub mod error;
pub mod guard;
pub mod http;
pub mod inventory;
pub mod job_results;
pub mod jobs;
pub mod polling;
pub mod reports;
pub mod services;
pub mod store;
pub mod sweeper;
pub mod tasks;
pub mod views;

pub use app::run;
pub use services::Services;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

pub use config::{ServerConfig, ServerOptions, TlsFiles};

/// Name of the generated admin token file inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Name of the generated enrollment key file inside the data directory.
pub const ENROLL_KEY_FILE: &str = "enroll.key";

/// The secrets a running server holds, resolved from flags, environment or the data directory.
pub struct Secrets {
    /// The admin bearer token.
    pub admin_token: String,
    /// The key `register` calls are signed with.
    pub enroll_key: String,
}

/// Runs the server until SIGINT or SIGTERM: prepares the data directory and the secrets,
/// starts the runtime, binds, prints the address it listens on, and hands over to [`run`].
pub fn run_blocking(config: ServerConfig) -> Result<()> {
    prepare_data_dir(&config.data_dir)?;
    let secrets = resolve_secrets(&config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(async move {
        let listener = http::Listener::bind(config.listen, config.tls.as_ref()).await?;
        let address = listener.local_addr()?;
        let scheme = listener.scheme();
        println!("orange server listening on {scheme}://{address}");
        info!(%address, data = %config.data_dir.display(), scheme, "orange server started");
        run(config, secrets, listener, shutdown_signal()).await
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The admin token and the enrollment key: given ones, else those kept in the data directory
/// (generated on first start).
fn resolve_secrets(config: &ServerConfig) -> Result<Secrets> {
    let admin_token = match &config.admin_token {
        Some(token) => token.clone(),
        None => load_or_create_secret(&config.data_dir.join(ADMIN_TOKEN_FILE))?,
    };
    let enroll_key = match &config.enroll_key {
        Some(key) => key.clone(),
        None => load_or_create_secret(&config.data_dir.join(ENROLL_KEY_FILE))?,
    };
    if enroll_key == crate::protocol::wire::LEGACY_BASE_SECRET {
        warn!(
            "the enrollment key is the original's public key \"orange-forge\": anyone who can reach this \
             server can enroll an agent; use it only while original clients must enroll"
        );
    }
    if admin_token == enroll_key {
        anyhow::bail!("the admin token and the enrollment key must differ");
    }
    Ok(Secrets { admin_token, enroll_key })
}

/// Creates the data directory with mode 0700 if it is missing, and refuses one that others can
/// write to (they could replace the database or the secrets).
fn prepare_data_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "data directory {} is writable by group or others (mode {:o}); run `chmod 700 {}`",
            dir.display(),
            mode & 0o777,
            dir.display()
        );
    }
    Ok(())
}

/// Reads a secret file, or writes a new random secret into it (mode 0600).
fn load_or_create_secret(path: &Path) -> Result<String> {
    if path.exists() {
        return crate::protocol::read_secret_file(path);
    }
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    let token = hex::encode(raw);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}")
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    info!(file = %path.display(), "generated a secret");
    Ok(token)
}
