//! `orange server`: its flags and the environment (`ORANGE_ADMIN_TOKEN`, `ORANGE_ENROLL_KEY`)
//! read into [`ServerOptions`], which the server checks. Secrets come from files or the
//! environment, never from argv, where `ps` shows them to every user.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};

use super::agent::{Env, non_empty_env};
use super::argv::usage;
use super::backup::ServerAction;
use crate::protocol::read_secret_file;
use crate::server::config::{
    ConnectionOptions, DEFAULT_IDLE_TIMEOUT_SECS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE, is_public_enroll_key,
};
use crate::server::lock::LockError;
use crate::server::{ServerConfig, ServerOptions};

/// Run the server: agent endpoints, operator API and the embedded database; or back it up, or
/// restore a backup.
#[derive(FromArgs, ArgsInfo)]
#[argh(
    subcommand,
    name = "server",
    example = "orange server --data /var/lib/orange",
    example = "orange server backup --to /backups/orange.bak --data /var/lib/orange",
    example = "orange server restore --from /backups/orange.bak --data /var/lib/orange-restored",
    error_code(1, "another orange server holds the data directory (one line names it and its pid)")
)]
pub struct ServerArgs {
    /// TOML file of settings, one key per flag: its name without -- and with _ for -
    /// (poll_window = 20, allow_shell = true, label = ["a=b"]); flags typed win over the file,
    /// and the file over the environment
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// log lines as text (default) or json, one object per line (else ORANGE_LOG_FORMAT)
    #[argh(option)]
    pub log_format: Option<String>,
    /// data directory (created if missing); required unless a subcommand is given
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// keep the fleet in this PostgreSQL database instead of the data directory, shared by every
    /// server given the same URL (postgres://USER@HOST/DB); its password comes from
    /// --store-password-file or ORANGE_STORE_PASSWORD, never the URL
    #[argh(option)]
    pub store: Option<String>,
    /// file holding the password of the --store database
    #[argh(option)]
    pub store_password_file: Option<PathBuf>,
    /// address to listen on (default 0.0.0.0:8890)
    #[argh(option, default = "String::from(\"0.0.0.0:8890\")")]
    pub listen: String,
    /// file holding the admin bearer token (default: ORANGE_ADMIN_TOKEN, else DIR/admin.token,
    /// generated on first start)
    #[argh(option)]
    pub admin_token_file: Option<PathBuf>,
    /// refused: ps shows argv to every user; use --admin-token-file FILE or ORANGE_ADMIN_TOKEN
    #[argh(option)]
    pub admin_token: Option<String>,
    /// seconds a getTask long poll waits for work before answering "no task" (default 20, max 50)
    #[argh(option, default = "20")]
    pub poll_window: u64,
    /// seconds a task may run when the operator gives no timeout (default 600)
    #[argh(option, default = "600")]
    pub default_timeout: u64,
    /// database cache size in MiB (default 64)
    #[argh(option, default = "64")]
    pub cache_mb: u64,
    /// file holding the key agents enroll with (default: ORANGE_ENROLL_KEY, else DIR/enroll.key,
    /// generated on first start; `orange enroll-key --data DIR` prints it)
    #[argh(option)]
    pub enroll_key_file: Option<PathBuf>,
    /// only `--enroll-key orange-forge`, the original's public key, which lets original clients
    /// enroll (insecure: anyone may use it); any other key is refused: use --enroll-key-file
    #[argh(option)]
    pub enroll_key: Option<String>,
    /// PEM certificate chain to serve HTTPS with (with --tls-key)
    #[argh(option)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key to serve HTTPS with (with --tls-cert)
    #[argh(option)]
    pub tls_key: Option<PathBuf>,
    /// seconds an agent has to acknowledge a task before it is handed out again (default 30)
    #[argh(option, default = "30")]
    pub ack_window: u64,
    /// seconds a task may wait for an offline agent before it ends expired (default 86400)
    #[argh(option, default = "86400")]
    pub ttl: u64,
    /// seconds after its timeout before a task whose agent went silent ends lost (default 60)
    #[argh(option, default = "60")]
    pub lost_grace: u64,
    /// seconds finished tasks and silent agents are kept (default 604800, 7 days)
    #[argh(option, default = "604800")]
    pub retention: u64,
    /// most output kept per task in MiB, head and tail (default 16)
    #[argh(option, default = "16")]
    pub output_cap_mb: u64,
    /// most bytes of a file copied with `orange cp`, in MiB, both ways (default 256)
    #[argh(option, default = "256")]
    pub max_file_mb: u64,
    /// most agent requests handled at once, parked long polls not counted; past it agents are
    /// told to retry later with HTTP 429 (default 256)
    #[argh(option, default = "256")]
    pub max_inflight: usize,
    /// most registrations and requests of agents not (or not yet) accepted handled at once, in
    /// a pool of their own that never takes --max-inflight's places (default 32)
    #[argh(option, default = "32")]
    pub max_unverified_inflight: usize,
    /// seconds an overloaded server tells agents to wait, spread up to twice that (default 2)
    #[argh(option, default = "2")]
    pub retry_after: u64,
    /// compact the database (rewrite its live data into a fresh copy) once it is larger than
    /// this many MiB and than 4 times its size after the last compaction (default 64)
    #[argh(option, default = "64")]
    pub compact_at_mb: u64,
    /// most connections open at once; past it a new one is closed at once (default: the
    /// open-files limit, raised to its hard limit at start, less 128 kept for the database)
    #[argh(option)]
    pub max_connections: Option<usize>,
    /// most connections open at once from one client address, the one a balancer names with
    /// --proxy-protocol-from; past it a new one is closed at once (default 16384, room for a
    /// large fleet behind one NAT)
    #[argh(option, default = "DEFAULT_MAX_CONNECTIONS_PER_SOURCE")]
    pub max_connections_per_source: usize,
    /// seconds a connection may take to send a request's headers when none is in flight: its
    /// first one, or the next on a kept-alive connection; then it is closed (default 10)
    #[argh(option, default = "DEFAULT_IDLE_TIMEOUT_SECS")]
    pub idle_timeout: u64,
    /// balancers (IP addresses or CIDR ranges, comma-separated) whose connections start with a
    /// PROXY protocol v1 or v2 header naming the client, as HAProxy's send-proxy and
    /// send-proxy-v2 send it; their connections without one are refused (default: none)
    #[argh(option)]
    pub proxy_protocol_from: Option<String>,
    /// serve GET /metrics without the admin token on the main listener (default: the token is
    /// needed)
    #[argh(switch)]
    pub metrics_public: bool,
    /// also serve GET /metrics without a token, and the probes, on this plain HTTP address
    /// (like 127.0.0.1:9890), for a scraper on a private network
    #[argh(option)]
    pub metrics_listen: Option<String>,
    /// backup or restore instead of serving
    #[argh(subcommand)]
    pub action: Option<ServerAction>,
}

/// Exit status of `orange server` when another orange server holds its data directory.
pub const EXIT_DATA_DIR_IN_USE: i32 = 1;

/// Runs `orange server` until it is stopped; returns its exit status. A data directory held by
/// another server is one line on stderr and [`EXIT_DATA_DIR_IN_USE`].
pub fn run(mut args: ServerArgs) -> Result<i32> {
    if let Some(action) = args.action.take() {
        return super::backup::run(action);
    }
    let file = args.config.clone();
    let checked =
        super::log_format::check_flag(args.log_format.as_deref()).and_then(|()| server_config(args));
    let config = super::config_file::noting_file(checked, file.as_deref())?;
    let Err(error) = crate::server::run_blocking(config) else { return Ok(0) };
    match error.downcast_ref::<LockError>() {
        Some(in_use @ LockError::InUse { .. }) => {
            eprintln!("orange: {in_use}");
            Ok(EXIT_DATA_DIR_IN_USE)
        }
        _ => Err(error),
    }
}

/// Environment variable holding the admin token.
pub const ENV_ADMIN_TOKEN: &str = "ORANGE_ADMIN_TOKEN";
/// Environment variable holding the enrollment key.
pub const ENV_ENROLL_KEY: &str = "ORANGE_ENROLL_KEY";
/// Environment variable holding the password of the `--store` database.
pub const ENV_STORE_PASSWORD: &str = "ORANGE_STORE_PASSWORD";

/// Validates `orange server` flags, with the process environment, into a [`ServerConfig`].
pub fn server_config(args: ServerArgs) -> Result<ServerConfig> {
    server_options(args, &|name| std::env::var(name).ok())?.validate()
}

/// The server's options from its flags and `env`; refuses a secret given on the command line.
pub fn server_options(args: ServerArgs, env: Env) -> Result<ServerOptions> {
    if args.admin_token.is_some() {
        bail!(
            "--admin-token on the command line is visible to every user in ps; use --admin-token-file FILE \
             or {ENV_ADMIN_TOKEN}"
        );
    }
    let admin_token = match &args.admin_token_file {
        Some(path) => Some(read_secret_file(path).context("--admin-token-file")?),
        None => non_empty_env(env, ENV_ADMIN_TOKEN),
    };
    let enroll_key = enroll_key(&args, env)?;
    let store_password = match &args.store_password_file {
        Some(path) => Some(read_secret_file(path).context("--store-password-file")?),
        None => non_empty_env(env, ENV_STORE_PASSWORD),
    };
    if store_password.is_some() && args.store.is_none() {
        bail!("a store password was given without --store");
    }
    let data = args.data.ok_or_else(|| usage("missing --data DIR: the data directory to serve"))?;
    Ok(ServerOptions {
        data,
        listen: args.listen,
        admin_token,
        poll_window: args.poll_window,
        default_timeout: args.default_timeout,
        cache_mb: args.cache_mb,
        enroll_key,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        ack_window: args.ack_window,
        ttl: args.ttl,
        lost_grace: args.lost_grace,
        retention: args.retention,
        output_cap_mb: args.output_cap_mb,
        max_file_mb: args.max_file_mb,
        max_inflight: args.max_inflight,
        max_unverified_inflight: args.max_unverified_inflight,
        retry_after: args.retry_after,
        compact_at_mb: args.compact_at_mb,
        connections: ConnectionOptions {
            max_connections: args.max_connections,
            max_per_source: args.max_connections_per_source,
            idle_timeout: args.idle_timeout,
            proxy_protocol_from: args.proxy_protocol_from,
        },
        metrics_public: args.metrics_public,
        metrics_listen: args.metrics_listen,
        store: args.store,
        store_password,
    })
}

/// The enrollment key: `--enroll-key orange-forge` (public, so allowed on argv) or
/// `--enroll-key-file`, else `ORANGE_ENROLL_KEY`, else none (the data directory's).
fn enroll_key(args: &ServerArgs, env: Env) -> Result<Option<String>> {
    match (&args.enroll_key, &args.enroll_key_file) {
        (Some(_), Some(_)) => bail!("give --enroll-key or --enroll-key-file, not both"),
        (Some(key), None) if is_public_enroll_key(key) => Ok(Some(key.clone())),
        (Some(_), None) => bail!(
            "--enroll-key on the command line is visible to every user in ps; use --enroll-key-file FILE or \
             {ENV_ENROLL_KEY} (only the original's public key orange-forge may be given as a value)"
        ),
        (None, Some(path)) => Ok(Some(read_secret_file(path).context("--enroll-key-file")?)),
        (None, None) => Ok(non_empty_env(env, ENV_ENROLL_KEY)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> ServerArgs {
        ServerArgs::from_args(&["server"], argv).expect("flags parse")
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn secrets_given_as_values_are_refused_naming_the_replacement() {
        let err = |argv: &[&str]| server_options(parse(argv), &no_env).unwrap_err().to_string();
        let admin = err(&["--data", "d", "--admin-token", "s3cret"]);
        assert!(admin.contains("use --admin-token-file FILE or ORANGE_ADMIN_TOKEN"), "{admin}");
        let key = err(&["--data", "d", "--enroll-key", "s3cret"]);
        assert!(key.contains("use --enroll-key-file FILE or ORANGE_ENROLL_KEY"), "{key}");
        assert!(!admin.contains("s3cret") && !key.contains("s3cret"));
    }

    #[test]
    fn the_public_key_may_be_a_value_and_secrets_come_from_files_or_the_environment() -> Result<()> {
        let options = server_options(parse(&["--data", "d", "--enroll-key", "orange-forge"]), &no_env)?;
        assert_eq!(options.enroll_key.as_deref(), Some("orange-forge"));
        let env = |name: &str| match name {
            "ORANGE_ADMIN_TOKEN" => Some("admin-env".to_string()),
            "ORANGE_ENROLL_KEY" => Some(" key-env\n".to_string()),
            _ => None,
        };
        let options = server_options(parse(&["--data", "d"]), &env)?;
        assert_eq!(
            (options.admin_token.as_deref(), options.enroll_key.as_deref()),
            (Some("admin-env"), Some("key-env"))
        );
        let tmp = tempfile::tempdir()?;
        let file = tmp.path().join("admin");
        std::fs::write(&file, "admin-file\n")?;
        let path = file.to_str().context("a utf-8 path")?;
        let options = server_options(parse(&["--data", "d", "--admin-token-file", path]), &env)?;
        assert_eq!(options.admin_token.as_deref(), Some("admin-file"));
        Ok(())
    }

    #[test]
    fn connection_flags_have_their_defaults_and_reach_the_options() -> Result<()> {
        let defaults = server_options(parse(&["--data", "d"]), &no_env)?.connections;
        assert_eq!(defaults, ConnectionOptions::default());
        let argv = [
            "--data",
            "d",
            "--max-connections",
            "900",
            "--max-connections-per-source",
            "50",
            "--idle-timeout",
            "7",
            "--proxy-protocol-from",
            "10.0.0.0/8,::1",
        ];
        let limits = server_options(parse(&argv), &no_env)?.connections.validate()?;
        assert_eq!((limits.max_total, limits.max_per_source), (Some(900), 50));
        assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(7));
        assert!(limits.trusts_proxy("10.9.8.7".parse()?) && limits.trusts_proxy("::1".parse()?));
        Ok(())
    }
}
