//! `ServerConfig`: everything `orange server` needs, and its checks. [`ServerOptions`] holds the
//! plain values (as the command line gives them); [`ServerOptions::validate`] is the one place
//! they are checked and turned into durations and byte counts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::protocol::busy::MAX_RETRY_AFTER;
use crate::protocol::wire::{LEGACY_BASE_SECRET, MAX_POLL_WINDOW_SECS};

/// Everything `orange server` needs, checked once by [`ServerOptions::validate`].
#[derive(Clone)]
pub struct ServerConfig {
    /// Directory of the database, the admin token file and nothing else.
    pub data_dir: PathBuf,
    /// Address to bind.
    pub listen: SocketAddr,
    /// Admin bearer token given by flag or environment; else read or generated in `data_dir`.
    pub admin_token: Option<String>,
    /// How long a getTask long poll waits before answering "no task".
    pub poll_window: Duration,
    /// Timeout of tasks enqueued without one.
    pub default_task_timeout: Duration,
    /// sled page cache size in bytes.
    pub cache_capacity_bytes: u64,
    /// Key that `register` calls must be signed with; `None`: the one generated in `data_dir`.
    pub enroll_key: Option<String>,
    /// How long an orange agent has to acknowledge a delivery before it is handed out again.
    pub ack_window: Duration,
    /// How long a task may wait queued when the operator gives no time to live.
    pub default_ttl: Duration,
    /// Added to a task's timeout before a silent task ends `lost`.
    pub lost_grace: Duration,
    /// How long finished tasks and silent agents are kept.
    pub retention: Duration,
    /// Most output bytes kept per task.
    pub output_cap_bytes: u64,
    /// The database is compacted only when larger than this (and than 4 times its size after
    /// the last compaction).
    pub compact_min_bytes: u64,
    /// How often the sweeper looks at deadlines.
    pub sweep_interval: Duration,
    /// Certificate chain and private key (PEM files) to serve HTTPS with.
    pub tls: Option<TlsFiles>,
    /// Most agent requests handled at once (parked long polls not counted); past it agents are
    /// told to come back later (HTTP 429 with Retry-After).
    pub max_inflight: usize,
    /// Most requests handled at once that come with no accepted agent's app id (registrations,
    /// unknown and pending agents), in a pool of their own: they never take `max_inflight`'s
    /// places.
    pub max_unverified_inflight: usize,
    /// Base of the Retry-After answered past `max_inflight`: values are spread up to twice it.
    pub retry_after_secs: u64,
}

/// The PEM files of the server's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("poll_window", &self.poll_window)
            .field("default_task_timeout", &self.default_task_timeout)
            .field("cache_capacity_bytes", &self.cache_capacity_bytes)
            .field("enroll_key", &"***")
            .field("ack_window", &self.ack_window)
            .field("default_ttl", &self.default_ttl)
            .field("lost_grace", &self.lost_grace)
            .field("retention", &self.retention)
            .field("output_cap_bytes", &self.output_cap_bytes)
            .field("max_inflight", &self.max_inflight)
            .field("max_unverified_inflight", &self.max_unverified_inflight)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("compact_min_bytes", &self.compact_min_bytes)
            .finish_non_exhaustive()
    }
}

/// The server's settings as plain values, before they are checked: seconds, MiB, an address as
/// text. Secrets are values here; where they come from (a file, the environment) is the
/// caller's concern, never argv.
#[derive(Clone, Default)]
pub struct ServerOptions {
    /// Data directory.
    pub data: PathBuf,
    /// Address to listen on, like `0.0.0.0:8890`.
    pub listen: String,
    /// Admin bearer token; `None`: the one kept in the data directory.
    pub admin_token: Option<String>,
    /// Seconds of the long-poll window.
    pub poll_window: u64,
    /// Seconds a task may run when the operator gives no timeout.
    pub default_timeout: u64,
    /// Database cache in MiB.
    pub cache_mb: u64,
    /// The enrollment key; `None`: the one kept in the data directory.
    pub enroll_key: Option<String>,
    /// PEM certificate chain for HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key: Option<PathBuf>,
    /// Seconds an agent has to acknowledge a delivery.
    pub ack_window: u64,
    /// Seconds a task may wait queued when the operator gives no time to live.
    pub ttl: u64,
    /// Seconds after its timeout before a silent task ends lost.
    pub lost_grace: u64,
    /// Seconds finished tasks and silent agents are kept.
    pub retention: u64,
    /// Most output kept per task, in MiB.
    pub output_cap_mb: u64,
    /// Most agent requests handled at once.
    pub max_inflight: usize,
    /// Most registrations and requests of agents not accepted handled at once.
    pub max_unverified_inflight: usize,
    /// Seconds an overloaded server tells agents to wait.
    pub retry_after: u64,
    /// Compaction threshold in MiB.
    pub compact_at_mb: u64,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("data", &self.data)
            .field("listen", &self.listen)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("enroll_key", &self.enroll_key.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl ServerOptions {
    /// Checks every value (the error names the flag and the bad value) into a [`ServerConfig`].
    pub fn validate(self) -> Result<ServerConfig> {
        let listen: SocketAddr = self
            .listen
            .parse()
            .with_context(|| format!("--listen {:?} is not an address like 0.0.0.0:8890", self.listen))?;
        if self.poll_window == 0 || self.poll_window > MAX_POLL_WINDOW_SECS {
            bail!("--poll-window {} must be between 1 and {MAX_POLL_WINDOW_SECS} seconds", self.poll_window);
        }
        self.check_positive()?;
        let most = MAX_RETRY_AFTER.as_secs();
        if self.retry_after > most {
            bail!("--retry-after {} must be at most {most} seconds", self.retry_after);
        }
        if self.enroll_key.as_deref().is_some_and(|key| key.trim().is_empty()) {
            bail!("the enrollment key must not be empty");
        }
        if self.admin_token.as_deref().is_some_and(|token| token.trim().is_empty()) {
            bail!("the admin token must not be empty");
        }
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => bail!("give both --tls-cert and --tls-key, or neither"),
        };
        let mib = |n: u64| n.saturating_mul(1024 * 1024);
        Ok(ServerConfig {
            data_dir: self.data,
            listen,
            admin_token: self.admin_token,
            poll_window: Duration::from_secs(self.poll_window),
            default_task_timeout: Duration::from_secs(self.default_timeout),
            cache_capacity_bytes: mib(self.cache_mb),
            enroll_key: self.enroll_key,
            ack_window: Duration::from_secs(self.ack_window),
            default_ttl: Duration::from_secs(self.ttl),
            lost_grace: Duration::from_secs(self.lost_grace),
            retention: Duration::from_secs(self.retention),
            output_cap_bytes: mib(self.output_cap_mb),
            compact_min_bytes: mib(self.compact_at_mb),
            sweep_interval: Duration::from_secs(1),
            max_inflight: self.max_inflight,
            max_unverified_inflight: self.max_unverified_inflight,
            retry_after_secs: self.retry_after,
            tls,
        })
    }

    /// Refuses a zero where at least 1 is needed.
    fn check_positive(&self) -> Result<()> {
        for (flag, value) in [
            ("--default-timeout", self.default_timeout),
            ("--ack-window", self.ack_window),
            ("--ttl", self.ttl),
            ("--retention", self.retention),
            ("--output-cap-mb", self.output_cap_mb),
            ("--max-inflight", self.max_inflight as u64),
            ("--max-unverified-inflight", self.max_unverified_inflight as u64),
            ("--retry-after", self.retry_after),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        Ok(())
    }
}

/// True when `key` is the original's public enrollment key, which may be given as a plain value
/// because it is no secret (original clients sign `register` with it).
pub fn is_public_enroll_key(key: &str) -> bool {
    key == LEGACY_BASE_SECRET
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ServerOptions {
        ServerOptions {
            data: "/tmp/d".into(),
            listen: "127.0.0.1:0".into(),
            poll_window: 20,
            default_timeout: 600,
            cache_mb: 64,
            ack_window: 30,
            ttl: 86_400,
            lost_grace: 60,
            retention: 604_800,
            output_cap_mb: 16,
            max_inflight: 256,
            max_unverified_inflight: 32,
            retry_after: 2,
            compact_at_mb: 64,
            ..ServerOptions::default()
        }
    }

    #[test]
    fn good_options_become_durations_and_bytes() -> Result<()> {
        let config = ServerOptions { admin_token: Some("t".into()), ..options() }.validate()?;
        assert_eq!(config.poll_window, Duration::from_secs(20));
        assert_eq!(config.output_cap_bytes, 16 * 1024 * 1024);
        assert!(!format!("{config:?}").contains("\"t\""), "the token is masked");
        Ok(())
    }

    #[test]
    fn bad_options_name_the_flag() {
        let err = |o: ServerOptions| o.validate().unwrap_err().to_string();
        assert_eq!(
            err(ServerOptions { poll_window: 51, ..options() }),
            "--poll-window 51 must be between 1 and 50 seconds"
        );
        assert_eq!(err(ServerOptions { ttl: 0, ..options() }), "--ttl must be at least 1");
        assert_eq!(
            err(ServerOptions { max_unverified_inflight: 0, ..options() }),
            "--max-unverified-inflight must be at least 1"
        );
        assert!(err(ServerOptions { listen: "nope".into(), ..options() }).starts_with("--listen \"nope\""));
        assert!(err(ServerOptions { tls_cert: Some("c".into()), ..options() }).contains("--tls-key"));
        assert!(err(ServerOptions { retry_after: 301, ..options() }).contains("at most 300"));
        assert!(
            err(ServerOptions { enroll_key: Some(" ".into()), ..options() }).contains("must not be empty")
        );
    }
}
