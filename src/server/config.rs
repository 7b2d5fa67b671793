//! `ServerConfig`: everything `orange server` needs, and its checks. [`ServerOptions`] holds the
//! plain values (as the command line gives them); [`ServerOptions::validate`] is the one place
//! they are checked and turned into durations and byte counts.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::store::{PgTarget, pg_tls};
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
    /// Most bytes of a copied file.
    pub max_file_bytes: u64,
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
    /// How many connections may be open and for how long, and which balancers name the client.
    pub connections: ConnectionLimits,
    /// `/metrics` answers without the admin token on the main listener.
    pub metrics_public: bool,
    /// A second, plain HTTP listener serving `/metrics` without a token (and the probes).
    pub metrics_listen: Option<SocketAddr>,
    /// The PostgreSQL database the fleet is kept in, instead of the data directory.
    pub store: Option<PgTarget>,
}

/// Connections kept within bounds (the open-files limit, one address's share, idle time) and
/// the balancers trusted to name the client of a connection with a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections open at once; `None`: the open-files limit (known once the server has
    /// raised it) less [`OPEN_FILES_RESERVE`].
    pub max_total: Option<usize>,
    /// Most connections open at once from one client address.
    pub max_per_source: usize,
    /// How long a connection without a request in flight may take to send the next request's
    /// headers (its first one, or the next on a kept-alive connection) before it is closed.
    pub idle_timeout: Duration,
    /// Peers whose connections must start with a PROXY protocol header naming the client.
    pub proxy_from: Vec<AddressRange>,
}

/// Default of `--idle-timeout`, in seconds: enough for a client on a slow link to send a
/// request's headers, short enough that silent connections do not pile up.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 10;
/// Default of `--max-connections-per-source`: above the 10,000 agents a load test runs from one
/// address, and any fleet behind one NAT or balancer that does not send the PROXY header.
pub const DEFAULT_MAX_CONNECTIONS_PER_SOURCE: usize = 16_384;
/// Open files kept for the database, the logs and the listener when the connection limit is
/// derived from the open-files limit.
pub const OPEN_FILES_RESERVE: u64 = 128;
/// Longest `--idle-timeout` accepted, in seconds.
const MAX_IDLE_TIMEOUT_SECS: u64 = 600;

impl ConnectionLimits {
    /// The limit on open connections: the configured one, else `open_files` less
    /// [`OPEN_FILES_RESERVE`] (but at least half of it, for a very low limit).
    pub fn total(&self, open_files: u64) -> usize {
        self.max_total.unwrap_or_else(|| {
            let derived = open_files.saturating_sub(OPEN_FILES_RESERVE).max(open_files / 2).max(1);
            usize::try_from(derived).unwrap_or(usize::MAX)
        })
    }

    /// True when connections from `peer` start with a PROXY protocol header.
    pub fn trusts_proxy(&self, peer: IpAddr) -> bool {
        self.proxy_from.iter().any(|range| range.contains(peer))
    }
}

/// An IP address or a CIDR range of them, like `10.0.0.7`, `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u8,
}

impl AddressRange {
    /// True when `ip` is in the range (an IPv4 address written as IPv6, `::ffff:a.b.c.d`,
    /// counts as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_bits(u32::from(net), self.prefix, 32) == prefix_bits(u32::from(ip), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_bits(u128::from(net), self.prefix, 128)
                    == prefix_bits(u128::from(ip), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The first `prefix` of the `width` bits of `value`.
fn prefix_bits<T>(value: T, prefix: u8, width: u8) -> T
where
    T: std::ops::Shr<u32, Output = T> + std::ops::Shl<u32, Output = T> + Default,
{
    if prefix == 0 {
        return T::default();
    }
    let shift = u32::from(width - prefix);
    (value >> shift) << shift
}

impl FromStr for AddressRange {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .with_context(|| format!("{text:?} is not an IP address or a range like 10.0.0.0/8"))?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(bits) => match bits.parse::<u8>() {
                Ok(n) if n <= width && bits.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => bail!("{text:?} has a prefix length that is not between 0 and {width}"),
            },
        };
        Ok(AddressRange { network, prefix })
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
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
            .field("max_file_bytes", &self.max_file_bytes)
            .field("max_inflight", &self.max_inflight)
            .field("max_unverified_inflight", &self.max_unverified_inflight)
            .field("retry_after_secs", &self.retry_after_secs)
            .field("compact_min_bytes", &self.compact_min_bytes)
            .field("connections", &self.connections)
            .field("metrics_public", &self.metrics_public)
            .field("metrics_listen", &self.metrics_listen)
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
    /// Most bytes of a copied file, in MiB.
    pub max_file_mb: u64,
    /// Most agent requests handled at once.
    pub max_inflight: usize,
    /// Most registrations and requests of agents not accepted handled at once.
    pub max_unverified_inflight: usize,
    /// Seconds an overloaded server tells agents to wait.
    pub retry_after: u64,
    /// Compaction threshold in MiB.
    pub compact_at_mb: u64,
    /// Connection limits and trusted balancers.
    pub connections: ConnectionOptions,
    /// Serve `/metrics` without the admin token.
    pub metrics_public: bool,
    /// URL of the PostgreSQL database to keep the fleet in.
    pub store: Option<String>,
    /// Password of the `store` database (from a file or the environment, never argv).
    pub store_password: Option<String>,
    /// Address of a plain HTTP listener for `/metrics` (no token) and the probes.
    pub metrics_listen: Option<String>,
}

/// The connection settings as plain values, before they are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Most connections open at once; `None`: derived from the open-files limit.
    pub max_connections: Option<usize>,
    /// Most connections open at once from one client address.
    pub max_per_source: usize,
    /// Seconds a connection may go without a request.
    pub idle_timeout: u64,
    /// Balancers sending the PROXY protocol header: addresses or CIDR ranges, comma-separated.
    pub proxy_protocol_from: Option<String>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            max_connections: None,
            max_per_source: DEFAULT_MAX_CONNECTIONS_PER_SOURCE,
            idle_timeout: DEFAULT_IDLE_TIMEOUT_SECS,
            proxy_protocol_from: None,
        }
    }
}

impl ConnectionOptions {
    /// Checks every value (the error names the flag and the bad value) into [`ConnectionLimits`].
    pub fn validate(self) -> Result<ConnectionLimits> {
        if self.max_connections == Some(0) {
            bail!("--max-connections must be at least 1");
        }
        if self.max_per_source == 0 {
            bail!("--max-connections-per-source must be at least 1");
        }
        if self.idle_timeout == 0 || self.idle_timeout > MAX_IDLE_TIMEOUT_SECS {
            bail!(
                "--idle-timeout {} must be between 1 and {MAX_IDLE_TIMEOUT_SECS} seconds",
                self.idle_timeout
            );
        }
        let proxy_from = match &self.proxy_protocol_from {
            None => Vec::new(),
            Some(list) => list
                .split(',')
                .map(|item| item.trim().parse().context("--proxy-protocol-from"))
                .collect::<Result<_>>()?,
        };
        Ok(ConnectionLimits {
            max_total: self.max_connections,
            max_per_source: self.max_per_source,
            idle_timeout: Duration::from_secs(self.idle_timeout),
            proxy_from,
        })
    }
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
        let connections = self.connections.validate()?;
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().with_context(|| {
                format!("--metrics-listen {text:?} is not an address like 127.0.0.1:9890")
            })?),
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
            max_file_bytes: mib(self.max_file_mb),
            compact_min_bytes: mib(self.compact_at_mb),
            sweep_interval: Duration::from_secs(1),
            max_inflight: self.max_inflight,
            max_unverified_inflight: self.max_unverified_inflight,
            retry_after_secs: self.retry_after,
            tls,
            connections,
            metrics_public: self.metrics_public,
            metrics_listen,
            store: self.store.as_deref().map(|url| store_target(url, self.store_password)).transpose()?,
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
            ("--max-file-mb", self.max_file_mb),
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

/// The `--store` URL as connection settings, with `password` (given apart: a URL's password
/// would show in the process list, so one in the URL is refused). The URL's `sslmode` and
/// `sslrootcert` say how TLS is used (see `store::pg_tls` for what is supported).
pub fn store_target(url: &str, password: Option<String>) -> Result<PgTarget> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!("--store {url:?} is not a PostgreSQL URL like postgres://orange@db.example/orange");
    }
    const NO_PASSWORD: &str = "--store must not carry a password (the process list shows it to every user): put \
                               it in --store-password-file FILE or ORANGE_STORE_PASSWORD";
    // Before any message quotes the URL.
    if url_has_password(url) {
        bail!(NO_PASSWORD);
    }
    let (driver_url, tls) = pg_tls::split_url(url).map_err(|e| anyhow::anyhow!("--store {url:?}: {e}"))?;
    let mut config: postgres::Config =
        driver_url.parse().with_context(|| format!("--store {url:?} is not a PostgreSQL URL"))?;
    if config.get_password().is_some() {
        bail!(NO_PASSWORD);
    }
    with_session_settings(&mut config);
    if let Some(password) = password {
        config.password(password);
    }
    if config.get_application_name().is_none() {
        config.application_name("orange");
    }
    let tls = pg_tls::connector(&tls).map_err(|e| anyhow::anyhow!("--store {url:?}: {e}"))?;
    Ok(PgTarget { config, shown: url.to_owned(), tls })
}

/// Whether a PostgreSQL URL carries a password, in its user part or as a `password=` parameter.
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let in_user = authority.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'));
    let query = url.split_once('?').map_or("", |(_, query)| query);
    in_user || query.split('&').any(|pair| pair.starts_with("password="))
}

/// What every connection of a server sets for its session: a writer that stops in the middle
/// of a transaction (its host hung, its network cut) gives the write lock back after
/// 15 s, a write waits at most 30 s for the lock, commits are durable, and a dead peer is
/// noticed within about a minute (TCP keepalives) rather than hours.
fn with_session_settings(config: &mut postgres::Config) {
    let given = config.get_options().unwrap_or_default().to_owned();
    // READ COMMITTED for what runs outside the store's write transactions (which ask for
    // SERIALIZABLE themselves), whatever the database's default.
    let ours = "-c idle_in_transaction_session_timeout=15000 -c lock_timeout=30000 -c synchronous_commit=on \
                -c default_transaction_isolation=read\\ committed";
    config.options(format!("{given} {ours}").trim());
    config
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30))
        .keepalives_interval(std::time::Duration::from_secs(10))
        .keepalives_retries(3);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_anywhere_in_a_store_url_is_refused_before_the_url_is_shown() {
        for url in [
            "postgres://orange:s3cret@db/orange",
            "postgres://orange@db/orange?password=s3cret",
            "postgres://orange:s3cret@db/orange?sslmode=bogus",
        ] {
            let error = store_target(url, None).err().expect("refused").to_string();
            assert!(error.contains("must not carry a password") && !error.contains("s3cret"), "{error}");
        }
        assert!(!url_has_password("postgres://orange@db:5432/orange?sslmode=require"));
    }

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
            max_file_mb: 256,
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
            err(ServerOptions { metrics_listen: Some("9890".into()), ..options() })
                .starts_with("--metrics-listen \"9890\"")
        );
        assert!(
            err(ServerOptions { enroll_key: Some(" ".into()), ..options() }).contains("must not be empty")
        );
    }

    #[test]
    fn store_urls_may_ask_for_tls_but_not_carry_a_password() -> Result<()> {
        let target = store_target("postgres://orange@db.example/orange?sslmode=require", None)?;
        assert_eq!(target.config.get_ssl_mode(), postgres::config::SslMode::Require);
        let verify = store_target("postgres://orange@db.example/orange?sslmode=verify-full", None)?;
        assert_eq!(verify.config.get_ssl_mode(), postgres::config::SslMode::Require);
        let missing = "postgres://orange@db.example/orange?sslmode=require&sslrootcert=/nonexistent/ca.pem";
        let err = store_target(missing, None).err().expect("a missing root file is refused");
        assert!(format!("{err:#}").contains("cannot read sslrootcert /nonexistent/ca.pem"), "{err:#}");
        let err = store_target("postgres://orange:pw@db.example/orange", None).err().expect("a password");
        assert!(err.to_string().contains("must not carry a password"), "{err}");
        Ok(())
    }

    fn range(text: &str) -> AddressRange {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e:#}"))
    }

    #[test]
    fn address_ranges_hold_their_addresses_only() {
        let ip = |text: &str| text.parse::<IpAddr>().expect("an address");
        assert!(range("10.0.0.0/8").contains(ip("10.200.1.2")));
        assert!(!range("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(range("10.0.0.7").contains(ip("10.0.0.7")) && !range("10.0.0.7").contains(ip("10.0.0.8")));
        assert!(range("10.0.0.7").contains(ip("::ffff:10.0.0.7")), "IPv4 written as IPv6");
        assert!(range("0.0.0.0/0").contains(ip("1.2.3.4")) && !range("0.0.0.0/0").contains(ip("::1")));
        assert!(range("fd00::/8").contains(ip("fd12::1")) && !range("fd00::/8").contains(ip("fe80::1")));
        assert!(range("::1").contains(ip("::1")));
        assert_eq!(range("192.168.1.9/24").to_string(), "192.168.1.9/24");
        for bad in ["", "10.0.0.0/33", "10.0.0.0/+8", "10.0.0.0/", "::/129", "host.example", "10.0.0.0/8/1"] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn connection_options_are_checked_into_limits() -> Result<()> {
        let limits = ConnectionOptions {
            proxy_protocol_from: Some("10.0.0.5, 192.168.0.0/16".into()),
            ..ConnectionOptions::default()
        }
        .validate()?;
        assert_eq!(limits.idle_timeout, Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS));
        assert!(limits.trusts_proxy("192.168.3.4".parse()?) && !limits.trusts_proxy("10.0.0.6".parse()?));
        assert!(
            !ConnectionOptions::default().validate()?.trusts_proxy("127.0.0.1".parse()?),
            "off by default"
        );
        let err = |o: ConnectionOptions| o.validate().unwrap_err();
        let bad_range = err(ConnectionOptions {
            proxy_protocol_from: Some("10.0.0.1,nope".into()),
            ..Default::default()
        });
        assert!(format!("{bad_range:#}").contains("--proxy-protocol-from: \"nope\""), "{bad_range:#}");
        assert_eq!(
            err(ConnectionOptions { idle_timeout: 0, ..Default::default() }).to_string(),
            "--idle-timeout 0 must be between 1 and 600 seconds"
        );
        assert!(
            err(ConnectionOptions { max_connections: Some(0), ..Default::default() })
                .to_string()
                .contains("--max-connections")
        );
        assert!(
            err(ConnectionOptions { max_per_source: 0, ..Default::default() })
                .to_string()
                .contains("-per-source")
        );
        Ok(())
    }

    #[test]
    fn the_default_connection_limit_keeps_files_for_the_server() {
        let derived = ConnectionOptions::default().validate().expect("defaults are valid");
        assert_eq!(derived.total(20_000), 20_000 - OPEN_FILES_RESERVE as usize);
        assert_eq!(derived.total(200), 100, "half of a very low limit");
        assert_eq!(derived.total(0), 1);
        let given = ConnectionLimits { max_total: Some(7), ..derived };
        assert_eq!(given.total(20_000), 7);
    }
}
