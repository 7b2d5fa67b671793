//! `orange server`: the agent endpoints of the original protocol, the operator API, long-poll
//! dispatch and the embedded sled store. This module owns the configuration, the data
//! directory (locked by one server at a time, `lock.rs`) and the secrets; [`run`] assembles the
//! server from them, and [`run_blocking`] is what `orange server` calls.

mod app;
pub mod audit;
pub mod backups;
pub mod clock;
pub mod codec;
pub mod commit;
pub mod config;
pub mod dispatch;
pub mod enroll;
pub mod error;
pub mod failures;
pub mod files;
pub mod guard;
pub mod http;
pub mod inventory;
pub mod job_results;
pub mod jobs;
pub mod lock;
pub mod metrics;
pub mod operators;
pub mod polling;
pub mod presence;
pub mod relay;
pub mod reports;
pub mod services;
pub mod shared_limits;
pub mod store;
pub mod sweeper;
pub mod systemd;
pub mod tasks;
pub mod views;

pub use app::run;
pub use services::Services;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use tracing::{info, warn};

pub use config::{ServerConfig, ServerOptions, TlsFiles};

use crate::protocol::private_dir::make_private;
use lock::DataDirLock;

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

/// Runs the server until SIGINT or SIGTERM: sets a private umask, prepares and locks the data
/// directory (a second server on it stops here with one line naming the holder), resolves the
/// secrets, raises the open-files limit, starts the runtime, opens the store, binds (or takes
/// the socket the service manager passed), and only then prints the address it listens on,
/// tells the service manager it is ready, and serves. SIGHUP reloads the TLS certificate.
pub fn run_blocking(config: ServerConfig) -> Result<()> {
    set_private_umask();
    prepare_data_dir(&config.data_dir)?;
    // Held until the server has stopped; nothing in the directory is touched before it.
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    log_open_files_limit();
    // With the fleet in PostgreSQL, the secrets are the database's (read once it is open).
    let secrets = if config.store.is_none() { Some(resolve_secrets(&config)?) } else { None };
    let inherited = systemd::inherited_listener()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (listen, tls, data_dir) = (config.listen, config.tls.clone(), config.data_dir.clone());
    let metrics_listen = config.metrics_listen;
    runtime.block_on(async move {
        let mut server = app::assemble(config, secrets)?;
        let listener = match inherited {
            Some(socket) => http::Listener::from_std(socket, tls.as_ref()).await?,
            None => http::Listener::bind(listen, tls.as_ref()).await?,
        };
        let reloadable = listener.tls_config().zip(tls);
        tokio::spawn(http::tls_reload::reload_on_sighup(reloadable));
        let address = listener.local_addr()?;
        let scheme = listener.scheme();
        let metrics_listener = match metrics_listen {
            Some(at) => Some(http::metrics::bind_plain(at).await?),
            None => None,
        };
        println!("orange server listening on {scheme}://{address}");
        if let Some(metrics_listener) = metrics_listener {
            let bound = metrics_listener.local_addr().context("cannot read the metrics address")?;
            println!("orange server metrics on http://{bound}");
            info!(address = %bound, "serving metrics and probes without a token");
            server = server.with_metrics_listener(metrics_listener);
        }
        info!(%address, data = %data_dir.display(), scheme, "orange server started");
        warn_if_plain_http_off_loopback(scheme, address);
        systemd::notify_ready(&format!("{scheme}://{address}"));
        let stopping = async {
            shutdown_signal().await;
            systemd::notify_stopping();
        };
        server.serve(listener, stopping).await
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
    checked_secrets(admin_token, enroll_key)
}

/// Warns of the original's public enrollment key; refuses an admin token equal to the key.
fn checked_secrets(admin_token: String, enroll_key: String) -> Result<Secrets> {
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

/// Creates the data directory with mode 0700 if it is missing, refuses one that others can
/// write to (they could replace the database or the secrets), and makes one that others can
/// read private again, with everything in it (a database written by an older version was 0644).
fn prepare_data_dir(dir: &Path) -> Result<()> {
    let done = make_private(dir, "data directory")?;
    if let Some(mode) = done.dir_mode_was {
        warn!(dir = %dir.display(), old_mode = %format!("{mode:o}"), "the data directory was open to other users; made it 0700");
    }
    if done.entries > 0 {
        warn!(dir = %dir.display(), count = done.entries, "files in the data directory were open to other users; removed their group and other permissions");
    }
    Ok(())
}

/// Makes every file and directory the server creates private to its user, whatever the umask
/// it was started with; the explicit modes on the secret files alone would leave sled's files
/// 0644.
pub fn set_private_umask() {
    // SAFETY: umask has no preconditions and cannot fail; the server starts no child process
    // that would inherit it.
    unsafe { libc::umask(0o077) };
}

/// Raises the soft open-files limit to the hard one, so connections run into the server's own
/// limits rather than EMFILE; returns the soft limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: the pointer is to a live rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: the pointer is to a live rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

/// [`raise_open_files_limit`], logging the figure; a failure only costs head-room, so it is a
/// warning.
fn log_open_files_limit() {
    match raise_open_files_limit() {
        Ok(limit) => info!(open_files = limit, "open-files limit"),
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit; the server keeps the one it was given")
        }
    }
}

/// Reads a secret file, or writes a new random secret into it (mode 0600).
fn load_or_create_secret(path: &Path) -> Result<String> {
    if path.exists() {
        return crate::protocol::read_secret_file(path);
    }
    let token = new_secret()?;
    write_secret_file(path, &token)?;
    info!(file = %path.display(), "generated a secret");
    Ok(token)
}

/// A new random secret: 32 bytes as hex.
fn new_secret() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("cannot get random bytes: {e}"))?;
    Ok(hex::encode(raw))
}

/// Writes `token` to a new file at `path`, mode 0600, synced.
fn write_secret_file(path: &Path, token: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{token}")
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// With the fleet in PostgreSQL, the admin token and the enrollment key not given are the
/// database's, the same for every server on it: the first server to start puts them there
/// (those of its data directory if it has some, else new ones), and each server also keeps them
/// in its data directory, where an operator reads them as with the embedded store.
fn resolve_shared_secrets(config: &ServerConfig, store: &store::Store) -> Result<Secrets> {
    let shared = |given: &Option<String>, name: &str, file: &str| -> Result<String> {
        if let Some(value) = given {
            return Ok(value.clone());
        }
        let path = config.data_dir.join(file);
        let local = if path.exists() { Some(crate::protocol::read_secret_file(&path)?) } else { None };
        let value = store.shared_secret(name, || local.clone().map_or_else(new_secret, Ok))?;
        if local.as_deref() != Some(value.as_str()) {
            let _ = std::fs::remove_file(&path);
            write_secret_file(&path, &value)?;
        }
        Ok(value)
    };
    let admin_token = shared(&config.admin_token, "admin_token", ADMIN_TOKEN_FILE)?;
    let enroll_key = shared(&config.enroll_key, "enroll_key", ENROLL_KEY_FILE)?;
    checked_secrets(admin_token, enroll_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soft_open_files_limit() -> libc::rlim_t {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: the pointer is to a live rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        limit.rlim_cur
    }

    #[test]
    fn the_open_files_limit_is_raised_not_lowered() -> std::io::Result<()> {
        let before = soft_open_files_limit();
        let raised = raise_open_files_limit()?;
        assert!(raised >= before, "raised to {raised} from {before}");
        assert_eq!(soft_open_files_limit(), raised, "the returned figure is the one in force");
        assert_eq!(raise_open_files_limit()?, raised, "a second call changes nothing");
        Ok(())
    }
}

/// Warns when the server answers plain HTTP on an address other hosts can reach.
fn warn_if_plain_http_off_loopback(scheme: &str, address: std::net::SocketAddr) {
    if let Some(warning) = plain_http_warning(scheme, address) {
        warn!(%address, "{warning}");
    }
}

/// The warning for plain HTTP on an address that is not loopback: agents' requests are
/// signed, but the admin token, task payloads and their output cross the network readable by
/// anyone on the path.
fn plain_http_warning(scheme: &str, address: std::net::SocketAddr) -> Option<&'static str> {
    (scheme == "http" && !address.ip().is_loopback()).then_some(
        "serving plain HTTP on an address that is not loopback: admin tokens, task payloads and output \
         cross the network unencrypted; give --tls-cert and --tls-key, or put a TLS proxy in front",
    )
}

#[cfg(test)]
mod plain_http_tests {
    use super::plain_http_warning;

    #[test]
    fn plain_http_is_warned_about_off_loopback_only() {
        let at = |text: &str| text.parse().expect("a socket address");
        assert!(plain_http_warning("http", at("0.0.0.0:8890")).is_some_and(|w| w.contains("--tls-cert")));
        assert!(plain_http_warning("http", at("[::]:8890")).is_some());
        assert!(plain_http_warning("http", at("10.1.2.3:8890")).is_some());
        assert!(plain_http_warning("http", at("127.0.0.1:8890")).is_none());
        assert!(plain_http_warning("http", at("[::1]:8890")).is_none());
        assert!(plain_http_warning("https", at("0.0.0.0:8890")).is_none());
    }
}
