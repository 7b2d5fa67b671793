//! `AgentConfig`: the agent's settings, and [`AgentBuilder`], which checks plain values into one.
//! Whoever embeds the agent (the `orange agent` command, another program) supplies the values;
//! reading flags, files and the environment is its job, not the agent's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::state;
use crate::client::proxy::ProxyUrl;
use crate::client::{Enrollment, TlsSettings};
use crate::protocol::Secret;
use crate::protocol::limits::{self, MAX_LABELS};
use crate::protocol::wire::MAX_SECRET_LEN;

/// Interval between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long a cancelled task's process group has between SIGTERM and SIGKILL.
pub const CANCEL_GRACE: Duration = Duration::from_secs(5);
/// How long reports and output chunks keep being retried once the agent is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Everything an agent needs, validated once. `Debug` masks the secrets.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Server base URL (`http://` or `https://`), without a trailing slash.
    pub server: String,
    /// This agent's app id: 1 to 128 characters of `[A-Za-z0-9._-]`.
    pub app_id: String,
    /// The agent's own secret, signing every call after `register`.
    pub secret: Secret,
    /// How `register` proves the agent may enroll: the server's key, a token, or nothing (it
    /// then waits `pending` for an operator).
    pub enrollment: Enrollment,
    /// How the server's HTTPS certificate is verified.
    pub tls: TlsSettings,
    /// The HTTP proxy the server is reached through (`None`: directly).
    pub proxy: Option<ProxyUrl>,
    /// Directory holding the generated secret and the task journal.
    pub state_dir: PathBuf,
    /// Whether `shell` tasks may run.
    pub allow_shell: bool,
    /// Directory of handler executables (canonical path), if any.
    pub handlers_dir: Option<PathBuf>,
    /// Users a task may ask to run as (`--allow-user`; the agent must run as root).
    pub allowed_users: Vec<String>,
    /// Handlers of the handlers directory that may run (`--allow-handler`); empty: every one.
    pub allowed_handlers: Vec<String>,
    /// Directories (canonical) under which `file.put` tasks may write; none: refused.
    pub write_roots: Vec<PathBuf>,
    /// Directories (canonical) under which `file.get` tasks may read; none: refused.
    pub read_roots: Vec<PathBuf>,
    /// Operator labels sent with `register`.
    pub labels: BTreeMap<String, String>,
    /// Most tasks running at once (at least 1).
    pub max_tasks: usize,
    /// This machine's host name.
    pub hostname: String,
    /// Interval between heartbeats ([`HEARTBEAT_INTERVAL`] from the command line).
    pub heartbeat: Duration,
    /// Time a cancelled task's process group gets between SIGTERM and SIGKILL
    /// ([`CANCEL_GRACE`] from the command line).
    pub cancel_grace: Duration,
    /// How long reports keep being retried once the agent is stopping ([`STOP_GRACE`] from the
    /// command line); what is still unreported then stays in the journal for the next start.
    pub stop_grace: Duration,
}

impl AgentConfig {
    /// Starts a config for an agent of the server at `server` (`http://` or `https://`); every
    /// other setting has a default until set on the builder.
    pub fn builder(server: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            server: server.into(),
            app_id: None,
            secret: None,
            enrollment: Enrollment::Pending,
            tls: TlsSettings::default(),
            proxy: None,
            state_dir: None,
            allow_shell: false,
            handlers_dir: None,
            allowed_users: Vec::new(),
            allowed_handlers: Vec::new(),
            write_roots: Vec::new(),
            read_roots: Vec::new(),
            labels: BTreeMap::new(),
            max_tasks: 4,
        }
    }
}

/// The values an agent is configured with, checked by [`AgentBuilder::build`].
#[derive(Debug)]
pub struct AgentBuilder {
    server: String,
    app_id: Option<String>,
    secret: Option<Secret>,
    enrollment: Enrollment,
    tls: TlsSettings,
    proxy: Option<ProxyUrl>,
    state_dir: Option<PathBuf>,
    allow_shell: bool,
    handlers_dir: Option<PathBuf>,
    allowed_users: Vec<String>,
    allowed_handlers: Vec<String>,
    write_roots: Vec<PathBuf>,
    read_roots: Vec<PathBuf>,
    labels: BTreeMap<String, String>,
    max_tasks: usize,
}

impl AgentBuilder {
    /// This agent's app id (default: the host name).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// The agent's own secret (default: the one kept in the state directory, generated once).
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// How `register` proves the agent may enroll (default: pending, waiting for an operator).
    pub fn enrollment(mut self, enrollment: Enrollment) -> Self {
        self.enrollment = enrollment;
        self
    }

    /// How the server's certificate is verified (default: the system roots).
    pub fn tls(mut self, tls: TlsSettings) -> Self {
        self.tls = tls;
        self
    }

    /// The HTTP proxy to reach the server through (default: none, directly).
    pub fn proxy(mut self, proxy: Option<ProxyUrl>) -> Self {
        self.proxy = proxy;
        self
    }

    /// The state directory (default: ~/.local/state/orange, or /var/lib/orange for root).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Whether `shell` tasks may run (default: no).
    pub fn allow_shell(mut self, allow: bool) -> Self {
        self.allow_shell = allow;
        self
    }

    /// The directory of handler executables, which must exist (default: none).
    pub fn handlers_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.handlers_dir = Some(dir.into());
        self
    }

    /// Users a task may ask to run as (default: none; tasks run as the agent's own user), each
    /// checked by [`limits::check_user`]. The agent switches user only when it runs as root.
    pub fn allowed_users(mut self, users: Vec<String>) -> Self {
        self.allowed_users = users;
        self
    }

    /// Handlers of the handlers directory that may run, whatever the server sends (default:
    /// none named, and every handler may run); each checked by [`limits::check_task_type`].
    pub fn allowed_handlers(mut self, handlers: Vec<String>) -> Self {
        self.allowed_handlers = handlers;
        self
    }

    /// A directory under which `file.put` tasks may write (repeatable; it must exist; default:
    /// none, and every `file.put` is refused).
    pub fn allow_write_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.write_roots.push(dir.into());
        self
    }

    /// A directory under which `file.get` tasks may read (repeatable; it must exist; default:
    /// none, and every `file.get` is refused).
    pub fn allow_read_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.read_roots.push(dir.into());
        self
    }

    /// Operator labels sent with `register`, checked by [`limits::check_labels`].
    pub fn labels(mut self, labels: BTreeMap<String, String>) -> Self {
        self.labels = labels;
        self
    }

    /// Most tasks running at once (default 4; at least 1).
    pub fn max_tasks(mut self, max_tasks: usize) -> Self {
        self.max_tasks = max_tasks;
        self
    }

    /// Checks every value and fills in the defaults; may generate and store the agent's secret.
    pub fn build(self) -> Result<AgentConfig> {
        let server = server_url(&self.server)?;
        let hostname = state::hostname()?;
        let app_id = self.app_id.unwrap_or_else(|| hostname.clone());
        validate_app_id(&app_id)?;
        limits::check_labels(&self.labels, MAX_LABELS).map_err(anyhow::Error::msg)?;
        if self.max_tasks == 0 {
            bail!("max tasks must be at least 1");
        }
        let handlers_dir = self.handlers_dir.as_deref().map(handlers_dir).transpose()?;
        for user in &self.allowed_users {
            limits::check_user(user).map_err(|e| anyhow::anyhow!("--allow-user: {e}"))?;
        }
        for handler in &self.allowed_handlers {
            limits::check_task_type(handler).map_err(|e| anyhow::anyhow!("--allow-handler: {e}"))?;
        }
        let write_roots = canonical_dirs("--allow-write-root", &self.write_roots)?;
        let read_roots = canonical_dirs("--allow-read-root", &self.read_roots)?;
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => state::default_state_dir()?,
        };
        let secret = match self.secret {
            Some(secret) => secret,
            None => Secret::new(state::load_or_create_secret(&state_dir)?),
        };
        if secret.expose().len() > MAX_SECRET_LEN {
            bail!("the agent secret is {} bytes long; the limit is {MAX_SECRET_LEN}", secret.expose().len());
        }
        Ok(AgentConfig {
            server,
            app_id,
            secret,
            enrollment: self.enrollment,
            tls: self.tls,
            proxy: self.proxy,
            state_dir,
            allow_shell: self.allow_shell,
            handlers_dir,
            allowed_users: self.allowed_users,
            allowed_handlers: self.allowed_handlers,
            write_roots,
            read_roots,
            labels: self.labels,
            max_tasks: self.max_tasks,
            hostname,
            heartbeat: HEARTBEAT_INTERVAL,
            cancel_grace: CANCEL_GRACE,
            stop_grace: STOP_GRACE,
        })
    }
}

/// The server URL, checked for an http(s) scheme and a host, without a trailing slash.
fn server_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/').to_owned();
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(url),
        _ => bail!("server {url:?} must be an http:// or https:// URL, e.g. http://10.0.0.1:8890"),
    }
}

/// Checks an app id with the rule the server applies ([`crate::protocol::wire::check_app_id`]).
pub fn validate_app_id(app_id: &str) -> Result<()> {
    crate::protocol::wire::check_app_id(app_id).map_err(anyhow::Error::msg)
}

/// The canonical handlers directory, which must exist.
fn handlers_dir(dir: &Path) -> Result<PathBuf> {
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("handlers directory {}: cannot open it", dir.display()))?;
    if !canonical.is_dir() {
        bail!("handlers directory {} is not a directory", dir.display());
    }
    Ok(canonical)
}

/// The canonical paths of `dirs`, each an existing directory (named by `flag` when not).
fn canonical_dirs(flag: &str, dirs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    dirs.iter()
        .map(|dir| {
            let canonical =
                dir.canonicalize().with_context(|| format!("{flag} {}: cannot open it", dir.display()))?;
            if !canonical.is_dir() {
                bail!("{flag} {} is not a directory", dir.display());
            }
            Ok(canonical)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(state: &Path) -> AgentBuilder {
        AgentConfig::builder("http://127.0.0.1:8890/").app_id("w1").state_dir(state)
    }

    #[test]
    fn app_id_must_be_short_and_plain() {
        assert!(validate_app_id("web-01.example_2").is_ok());
        assert!(validate_app_id(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"a".repeat(129)] {
            let e = validate_app_id(bad).unwrap_err().to_string();
            let shown: String = bad.chars().take(40).collect();
            assert!(e.starts_with(&format!("app id {shown:?} ")), "{e}");
        }
    }

    #[test]
    fn the_server_needs_a_scheme_and_a_host() {
        assert_eq!(server_url("https://o.example/").unwrap(), "https://o.example");
        assert!(server_url("ftp://a").is_err());
        assert!(server_url("http://").is_err());
    }

    #[test]
    fn build_generates_a_secret_masks_it_and_enrolls_pending_by_default() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let config = builder(tmp.path()).build()?;
        assert_eq!(config.server, "http://127.0.0.1:8890");
        assert!(matches!(config.enrollment, Enrollment::Pending));
        assert_eq!(config.secret.expose().len(), 64);
        let debug = format!("{config:?}");
        assert!(!debug.contains(config.secret.expose()), "{debug}");
        assert_eq!(builder(tmp.path()).build()?.secret, config.secret);
        Ok(())
    }

    #[test]
    fn a_given_secret_wins_over_the_state_dir() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let config = builder(tmp.path()).secret(Secret::new("given")).build()?;
        assert_eq!(config.secret.expose(), "given");
        assert!(!tmp.path().join(state::SECRET_FILE).exists());
        Ok(())
    }

    #[test]
    fn bad_values_are_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let zero = builder(tmp.path()).max_tasks(0).build().unwrap_err().to_string();
        assert_eq!(zero, "max tasks must be at least 1");
        let missing = builder(tmp.path()).handlers_dir(tmp.path().join("nope")).build().unwrap_err();
        assert!(missing.to_string().contains("handlers directory"), "{missing}");
        let label = BTreeMap::from([("a b".to_owned(), "v".to_owned())]);
        let bad = builder(tmp.path()).labels(label).build().unwrap_err().to_string();
        assert!(bad.starts_with("label \"a b\": key must be"), "{bad}");
        let long = builder(tmp.path()).secret(Secret::new("s".repeat(MAX_SECRET_LEN + 1))).build();
        assert!(long.unwrap_err().to_string().contains("the limit is 256"));
        Ok(())
    }
}
