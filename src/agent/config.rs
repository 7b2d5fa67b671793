//! `AgentConfig`: the agent's settings, validated once from `orange agent` flags and the
//! environment, and the `Secret` newtype that keeps keys out of `Debug` output and logs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::handler::CANCEL_GRACE;
use super::state;
use crate::cli::{AgentArgs, read_secret_file};
use crate::client::{EnrollToken, Enrollment, TlsSettings};
use crate::protocol::wire::MAX_SECRET_LEN;

/// Interval between heartbeats.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// How long reports and output chunks keep being retried once the agent is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// Longest label key.
const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value.
const MAX_LABEL_VALUE_LEN: usize = 256;

/// A secret string whose `Debug` prints `***`, so it never reaches a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    /// The secret itself, for signing; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

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
    /// Directory holding the generated secret and the task journal.
    pub state_dir: PathBuf,
    /// Whether `shell` tasks may run.
    pub allow_shell: bool,
    /// Directory of handler executables (canonical path), if any.
    pub handlers_dir: Option<PathBuf>,
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
    /// Validates `orange agent` flags, reading `ORANGE_SERVER`, `ORANGE_SECRET`,
    /// `ORANGE_ENROLL_KEY` and `ORANGE_ENROLL_TOKEN` from the environment; may generate and
    /// store the agent's secret.
    pub fn from_args(args: AgentArgs) -> Result<AgentConfig> {
        from_args_with_env(args, &|name| std::env::var(name).ok())
    }
}

/// [`AgentConfig::from_args`] with the environment passed in, so tests do not touch the real one.
fn from_args_with_env(args: AgentArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<AgentConfig> {
    let server = server_url(args.server, env)?;
    let hostname = state::hostname()?;
    let app_id = args.appid.unwrap_or_else(|| hostname.clone());
    validate_app_id(&app_id)?;
    let labels = parse_labels(&args.label)?;
    if args.max_tasks == 0 {
        bail!("--max-tasks must be at least 1");
    }
    let handlers_dir = args.handlers.as_deref().map(handlers_dir).transpose()?;
    let state_dir = match args.state {
        Some(dir) => dir,
        None => state::default_state_dir()?,
    };
    let secret = agent_secret(args.secret_file.as_deref(), env, &state_dir)?;
    let enrollment = enrollment(args.enroll_key_file.as_deref(), args.enroll_token_file.as_deref(), env)?;
    let tls = TlsSettings::new(args.ca_file.as_deref(), args.insecure).map_err(anyhow::Error::msg)?;
    Ok(AgentConfig {
        server,
        app_id,
        secret,
        enrollment,
        tls,
        state_dir,
        allow_shell: args.allow_shell,
        handlers_dir,
        labels,
        max_tasks: args.max_tasks,
        hostname,
        heartbeat: HEARTBEAT_INTERVAL,
        cancel_grace: CANCEL_GRACE,
        stop_grace: STOP_GRACE,
    })
}

/// The server URL from `--server` or `ORANGE_SERVER`, checked for an http(s) scheme.
fn server_url(flag: Option<String>, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let Some(url) = flag.or_else(|| env("ORANGE_SERVER")).filter(|u| !u.trim().is_empty()) else {
        bail!("no server given; pass --server URL or set ORANGE_SERVER");
    };
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

/// Parses `--label k=v` flags; keys are `[A-Za-z0-9._/-]`, values printable, no key twice.
pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for label in labels {
        let (key, value) = parse_label(label)?;
        if map.insert(key.to_owned(), value.to_owned()).is_some() {
            bail!("--label {label:?}: key {key:?} is given twice");
        }
    }
    Ok(map)
}

fn parse_label(label: &str) -> Result<(&str, &str)> {
    let Some((key, value)) = label.split_once('=') else {
        bail!("--label {label:?} is not k=v");
    };
    let key_ok = key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if key.is_empty() || key.len() > MAX_LABEL_KEY_LEN || !key_ok {
        bail!("--label {label:?}: key must be 1 to {MAX_LABEL_KEY_LEN} characters of A-Z a-z 0-9 . _ / -");
    }
    if value.len() > MAX_LABEL_VALUE_LEN || value.chars().any(char::is_control) {
        bail!(
            "--label {label:?}: value must be at most {MAX_LABEL_VALUE_LEN} bytes without control characters"
        );
    }
    Ok((key, value))
}

/// The canonical handlers directory, which must exist.
fn handlers_dir(dir: &Path) -> Result<PathBuf> {
    let canonical =
        dir.canonicalize().with_context(|| format!("--handlers {}: cannot open it", dir.display()))?;
    if !canonical.is_dir() {
        bail!("--handlers {} is not a directory", dir.display());
    }
    Ok(canonical)
}

/// The agent's secret: `--secret-file`, else `ORANGE_SECRET`, else the one in the state directory.
fn agent_secret(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    state_dir: &Path,
) -> Result<Secret> {
    let secret = match (file, non_empty_env(env, "ORANGE_SECRET")) {
        (Some(path), _) => read_secret_file(path).context("--secret-file")?,
        (None, Some(secret)) => secret,
        (None, None) => state::load_or_create_secret(state_dir)?,
    };
    if secret.len() > MAX_SECRET_LEN {
        bail!("the agent secret is {} bytes long; the limit is {MAX_SECRET_LEN}", secret.len());
    }
    Ok(Secret::new(secret))
}

/// The enrollment credential: the key (`--enroll-key-file`, else `ORANGE_ENROLL_KEY`), else a
/// token (`--enroll-token-file`, else `ORANGE_ENROLL_TOKEN`), else none: the agent enrolls
/// `pending` and waits for an operator to accept it.
fn enrollment(
    key_file: Option<&Path>,
    token_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Enrollment> {
    if key_file.is_some() && token_file.is_some() {
        bail!("give --enroll-key-file or --enroll-token-file, not both");
    }
    let key = match key_file {
        Some(path) => Some(read_secret_file(path).context("--enroll-key-file")?),
        None if token_file.is_none() => non_empty_env(env, "ORANGE_ENROLL_KEY"),
        None => None,
    };
    if let Some(key) = key {
        return Ok(Enrollment::Key(key));
    }
    let token = match token_file {
        Some(path) => Some(read_secret_file(path).context("--enroll-token-file")?),
        None => non_empty_env(env, "ORANGE_ENROLL_TOKEN"),
    };
    match token {
        Some(text) => Ok(Enrollment::Token(text.parse::<EnrollToken>().map_err(anyhow::Error::msg)?)),
        None => Ok(Enrollment::Pending),
    }
}

fn non_empty_env(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(state: &Path) -> AgentArgs {
        AgentArgs {
            server: Some("http://127.0.0.1:8890/".into()),
            appid: Some("w1".into()),
            state: Some(state.to_owned()),
            secret_file: None,
            enroll_key_file: None,
            enroll_token_file: None,
            ca_file: None,
            insecure: false,
            allow_shell: false,
            handlers: None,
            label: vec![],
            max_tasks: 4,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn label_parsing_accepts_k_v_and_names_the_bad_label() {
        let ok = parse_labels(&["env=prod".into(), "rack=a=1".into(), "empty=".into()]).unwrap();
        assert_eq!(ok.get("env").map(String::as_str), Some("prod"));
        assert_eq!(ok.get("rack").map(String::as_str), Some("a=1"));
        assert_eq!(ok.get("empty").map(String::as_str), Some(""));
        let err = |l: &[&str]| {
            let owned: Vec<String> = l.iter().map(|s| s.to_string()).collect();
            format!("{:#}", parse_labels(&owned).unwrap_err())
        };
        assert_eq!(err(&["novalue"]), "--label \"novalue\" is not k=v");
        assert!(err(&["=v"]).starts_with("--label \"=v\": key must be"), "{}", err(&["=v"]));
        assert!(err(&["a b=v"]).starts_with("--label \"a b=v\": key must be"));
        assert!(err(&["k=a\nb"]).starts_with("--label \"k=a\\nb\": value must be"));
        assert_eq!(err(&["k=1", "k=2"]), "--label \"k=2\": key \"k\" is given twice");
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
    fn server_comes_from_flag_or_env_and_needs_a_scheme() {
        let env = |name: &str| (name == "ORANGE_SERVER").then(|| "https://o.example/".to_string());
        assert_eq!(server_url(None, &env).unwrap(), "https://o.example");
        assert_eq!(server_url(Some("http://a:1".into()), &env).unwrap(), "http://a:1");
        assert!(server_url(None, &no_env).unwrap_err().to_string().contains("ORANGE_SERVER"));
        assert!(server_url(Some("ftp://a".into()), &no_env).is_err());
        assert!(server_url(Some("http://".into()), &no_env).is_err());
    }

    #[test]
    fn from_args_generates_a_secret_masks_it_and_enrolls_pending_without_a_credential() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let config = from_args_with_env(args(tmp.path()), &no_env)?;
        assert_eq!(config.server, "http://127.0.0.1:8890");
        assert!(matches!(config.enrollment, Enrollment::Pending));
        assert_eq!(config.secret.expose().len(), 64);
        let debug = format!("{config:?}");
        assert!(!debug.contains(config.secret.expose()), "{debug}");
        assert_eq!(from_args_with_env(args(tmp.path()), &no_env)?.secret, config.secret);
        Ok(())
    }

    #[test]
    fn secret_file_and_env_win_over_the_state_dir() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let env = |name: &str| match name {
            "ORANGE_SECRET" => Some(" from-env \n".to_string()),
            "ORANGE_ENROLL_KEY" => Some("enroll".to_string()),
            _ => None,
        };
        let config = from_args_with_env(args(tmp.path()), &env)?;
        assert_eq!(config.secret.expose(), "from-env");
        assert!(matches!(&config.enrollment, Enrollment::Key(key) if key == "enroll"));
        assert!(!format!("{config:?}").contains("enroll\""), "the key is masked");
        assert!(!tmp.path().join(state::SECRET_FILE).exists());
        let file = tmp.path().join("s");
        std::fs::write(&file, "from-file\n")?;
        let config = from_args_with_env(AgentArgs { secret_file: Some(file), ..args(tmp.path()) }, &env)?;
        assert_eq!(config.secret.expose(), "from-file");
        Ok(())
    }

    #[test]
    fn an_enrollment_token_comes_from_its_file_or_the_environment() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let env = |name: &str| (name == "ORANGE_ENROLL_TOKEN").then(|| "0a1b.c0ffee".to_string());
        let config = from_args_with_env(args(tmp.path()), &env)?;
        assert!(matches!(&config.enrollment, Enrollment::Token(t) if t.id == "0a1b" && t.secret == "c0ffee"));
        let bad = |name: &str| (name == "ORANGE_ENROLL_TOKEN").then(|| "not a token".to_string());
        let err = from_args_with_env(args(tmp.path()), &bad).unwrap_err().to_string();
        assert!(err.contains("<hex id>.<hex secret>"), "{err}");
        Ok(())
    }

    #[test]
    fn bad_flags_are_refused() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let zero = AgentArgs { max_tasks: 0, ..args(tmp.path()) };
        assert_eq!(
            from_args_with_env(zero, &no_env).unwrap_err().to_string(),
            "--max-tasks must be at least 1"
        );
        let missing = AgentArgs { handlers: Some(tmp.path().join("nope")), ..args(tmp.path()) };
        assert!(from_args_with_env(missing, &no_env).unwrap_err().to_string().contains("--handlers"));
        let label = AgentArgs { label: vec!["x".into()], ..args(tmp.path()) };
        assert_eq!(from_args_with_env(label, &no_env).unwrap_err().to_string(), "--label \"x\" is not k=v");
        Ok(())
    }
}
