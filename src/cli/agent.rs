//! `orange agent`: its flags and the environment (`ORANGE_SERVER`, `ORANGE_SECRET`,
//! `ORANGE_ENROLL_KEY`, `ORANGE_ENROLL_TOKEN`) read into the values an [`AgentConfig`] is built
//! from. The agent itself reads neither.
//!
//! A task could read the environment the agent process started with in `/proc/<pid>/environ`,
//! whatever the agent unsets later. So when secrets come in the environment, `orange agent`
//! re-executes itself (same binary, same pid, same argv) with an environment without them, and
//! hands them over on an inherited pipe whose descriptor number it names in `ORANGE_SECRETS_FD`;
//! the new image reads the pipe once and closes it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use argh::{ArgsInfo, FromArgs};

use crate::agent::AgentConfig;
use crate::agent::executor::SECRET_ENV;
use crate::client::proxy::ProxySettings;
use crate::client::{EnrollToken, Enrollment, TlsSettings};
use crate::protocol::limits::{self, MAX_LABELS};
use crate::protocol::{Secret, read_secret_file};

/// Run an agent: register with the server, poll for tasks, run them and report.
#[derive(FromArgs, ArgsInfo)]
#[argh(subcommand, name = "agent")]
pub struct AgentArgs {
    /// TOML file of settings, one key per flag: its name without -- and with _ for -
    /// (poll_window = 20, allow_shell = true, label = ["a=b"]); flags typed win over the file,
    /// and the file over the environment
    #[argh(option)]
    pub config: Option<PathBuf>,
    /// log lines as text (default) or json, one object per line (else ORANGE_LOG_FORMAT)
    #[argh(option)]
    pub log_format: Option<String>,
    /// server URL, e.g. http://10.0.0.1:8890 (default: ORANGE_SERVER)
    #[argh(option)]
    pub server: Option<String>,
    /// this agent's app id (default: the host name)
    #[argh(option)]
    pub appid: Option<String>,
    /// state directory holding the agent's secret (default: ~/.local/state/orange, or
    /// /var/lib/orange for root)
    #[argh(option)]
    pub state: Option<PathBuf>,
    /// file holding the agent's secret (else ORANGE_SECRET, else one generated in the state dir)
    #[argh(option)]
    pub secret_file: Option<PathBuf>,
    /// file holding the server's enrollment key (else ORANGE_ENROLL_KEY); with neither a key
    /// nor a token the agent enrolls `pending` and waits for `orange agents accept`
    #[argh(option)]
    pub enroll_key_file: Option<PathBuf>,
    /// file holding an enrollment token from `orange token create` (else ORANGE_ENROLL_TOKEN)
    #[argh(option)]
    pub enroll_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (default: the system roots)
    #[argh(option)]
    pub ca_file: Option<PathBuf>,
    /// do not verify the server's certificate (warns on every start)
    #[argh(switch)]
    pub insecure: bool,
    /// HTTP proxy to reach the server through, http://host:port, or `none` (default:
    /// ORANGE_PROXY, else HTTPS_PROXY or HTTP_PROXY as curl reads them; NO_PROXY applies); a
    /// proxy password goes in one of those variables, not here
    #[argh(option)]
    pub proxy: Option<String>,
    /// allow `shell` tasks (command lines run with sh -c)
    #[argh(switch)]
    pub allow_shell: bool,
    /// directory of handler executables; a task of type T runs DIR/T
    #[argh(option)]
    pub handlers: Option<PathBuf>,
    /// user a task may ask to run as with --user (repeatable; default none: tasks run as the
    /// agent's own user); switching needs the agent to run as root
    #[argh(option)]
    pub allow_user: Vec<String>,
    /// handler of --handlers DIR that may run (repeatable; default: every handler in DIR);
    /// a task for another fails with the agent's reason, whatever the server sent
    #[argh(option)]
    pub allow_handler: Vec<String>,
    /// directory under which `orange cp` may write files (repeatable; default none: pushes are
    /// refused)
    #[argh(option)]
    pub allow_write_root: Vec<PathBuf>,
    /// directory under which `orange cp` may read files (repeatable; default none: pulls are
    /// refused)
    #[argh(option)]
    pub allow_read_root: Vec<PathBuf>,
    /// operator label k=v (repeatable)
    #[argh(option)]
    pub label: Vec<String>,
    /// most tasks run at once (default 4)
    #[argh(option, default = "4")]
    pub max_tasks: usize,
}

/// The environment, passed in so that tests do not touch the real one.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Variable naming the descriptor on which a re-executed agent reads its secrets.
const SECRETS_FD_ENV: &str = "ORANGE_SECRETS_FD";
/// Most bytes of secrets handed over; far below a pipe's buffer, so writing never blocks.
const MAX_HANDED_OVER: usize = 16 * 1024;

/// Builds the agent's config from `orange agent` flags and the process environment; may
/// generate and store the agent's secret. When the environment holds secrets, this first
/// re-executes the process without them (see the module doc) and does not return in this image.
pub fn agent_config(args: AgentArgs) -> Result<AgentConfig> {
    let handed_over = match std::env::var(SECRETS_FD_ENV).ok() {
        Some(fd) => read_handed_over(&fd)?,
        None => {
            reexec_without_secrets()?;
            BTreeMap::new()
        }
    };
    agent_config_with_env(args, &|name| handed_over.get(name).cloned().or_else(|| std::env::var(name).ok()))
}

/// Re-executes this process with the secret variables taken out of its environment and sent
/// down a pipe instead; returns only when there is none (or no `/proc` to re-execute from).
fn reexec_without_secrets() -> Result<()> {
    let secrets: BTreeMap<String, String> = SECRET_ENV
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.to_string(), value)))
        .collect();
    if secrets.is_empty() {
        return Ok(());
    }
    let exe = Path::new("/proc/self/exe");
    if !exe.exists() {
        tracing::warn!("no /proc/self/exe: secrets stay in this process's environment");
        return Ok(());
    }
    let bytes = serde_json::to_vec(&secrets).context("cannot encode the secrets to hand over")?;
    if bytes.len() > MAX_HANDED_OVER {
        bail!("the secret variables hold {} bytes; at most {MAX_HANDED_OVER} are taken", bytes.len());
    }
    let (read_end, write_end) = secrets_pipe()?;
    std::fs::File::from(write_end).write_all(&bytes).context("cannot write the secrets to the pipe")?;
    let mut argv = std::env::args_os();
    let mut command = std::process::Command::new(exe);
    command.arg0(argv.next().unwrap_or_else(|| "orange".into())).args(argv);
    for name in SECRET_ENV {
        command.env_remove(name);
    }
    command.env(SECRETS_FD_ENV, std::os::fd::AsRawFd::as_raw_fd(&read_end).to_string());
    let e = command.exec();
    Err(e).context("cannot re-execute /proc/self/exe to take the secrets out of the environment")
}

/// A pipe whose read end survives `exec` and whose write end does not.
fn secrets_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot create the secrets pipe");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor this function owns; clears close-on-exec on the read end.
    if unsafe { libc::fcntl(fds[0], libc::F_SETFD, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot keep the secrets pipe open");
    }
    Ok((read_end, write_end))
}

/// Reads the secrets the previous image of this process wrote on descriptor `fd`, and closes it.
fn read_handed_over(fd: &str) -> Result<BTreeMap<String, String>> {
    let number: i32 = fd
        .parse()
        .ok()
        .filter(|n| *n > 2)
        .with_context(|| format!("{SECRETS_FD_ENV}={fd:?} is not a descriptor"))?;
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(number, libc::F_GETFD) } < 0 {
        bail!("{SECRETS_FD_ENV}={fd:?} is not an open descriptor");
    }
    // SAFETY: the descriptor is open and was left to this image for this read only; it is
    // closed when the file drops.
    let file = unsafe { std::fs::File::from_raw_fd(number) };
    let mut bytes = Vec::new();
    file.take(MAX_HANDED_OVER as u64 + 1)
        .read_to_end(&mut bytes)
        .context("cannot read the handed-over secrets")?;
    serde_json::from_slice(&bytes).context("the handed-over secrets are not a JSON object of strings")
}

/// [`agent_config`] with the environment passed in.
pub fn agent_config_with_env(args: AgentArgs, env: Env) -> Result<AgentConfig> {
    let Some(server) = args.server.clone().or_else(|| non_empty_env(env, "ORANGE_SERVER")) else {
        bail!("no server given; pass --server URL or set ORANGE_SERVER");
    };
    let labels =
        limits::parse_labels(&args.label, MAX_LABELS).map_err(|e| anyhow::anyhow!("--label: {e}"))?;
    // `--proxy`, else the environment; a password in `--proxy` is refused (`ps` shows argv).
    let proxy = ProxySettings::from_lookup(args.proxy.as_deref(), env)
        .for_server(&server)
        .map_err(anyhow::Error::msg)?;
    let mut builder = AgentConfig::builder(server)
        .enrollment(enrollment(args.enroll_key_file.as_deref(), args.enroll_token_file.as_deref(), env)?)
        .tls(TlsSettings::new(args.ca_file.as_deref(), args.insecure).map_err(anyhow::Error::msg)?)
        .proxy(proxy)
        .allow_shell(args.allow_shell)
        .allowed_users(args.allow_user)
        .allowed_handlers(args.allow_handler)
        .labels(labels)
        .max_tasks(args.max_tasks);
    if let Some(app_id) = args.appid {
        builder = builder.app_id(app_id);
    }
    if let Some(dir) = args.state {
        builder = builder.state_dir(dir);
    }
    if let Some(dir) = args.handlers {
        builder = builder.handlers_dir(dir);
    }
    for dir in args.allow_write_root {
        builder = builder.allow_write_root(dir);
    }
    for dir in args.allow_read_root {
        builder = builder.allow_read_root(dir);
    }
    if let Some(secret) = agent_secret(args.secret_file.as_deref(), env)? {
        builder = builder.secret(secret);
    }
    builder.build()
}

/// The agent's secret: `--secret-file`, else `ORANGE_SECRET`, else none (the agent keeps one in
/// its state directory).
fn agent_secret(file: Option<&Path>, env: Env) -> Result<Option<Secret>> {
    Ok(match (file, non_empty_env(env, "ORANGE_SECRET")) {
        (Some(path), _) => Some(Secret::new(read_secret_file(path).context("--secret-file")?)),
        (None, Some(secret)) => Some(Secret::new(secret)),
        (None, None) => None,
    })
}

/// The enrollment credential: the key (`--enroll-key-file`, else `ORANGE_ENROLL_KEY`), else a
/// token (`--enroll-token-file`, else `ORANGE_ENROLL_TOKEN`), else none: the agent enrolls
/// `pending` and waits for an operator to accept it.
fn enrollment(key_file: Option<&Path>, token_file: Option<&Path>, env: Env) -> Result<Enrollment> {
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

/// A variable's value, trimmed; empty counts as unset.
pub fn non_empty_env(env: Env, name: &str) -> Option<String> {
    env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(state: &Path) -> AgentArgs {
        AgentArgs {
            config: None,
            log_format: None,
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
            allow_user: Vec::new(),
            allow_handler: Vec::new(),
            allow_write_root: vec![],
            allow_read_root: vec![],
            label: vec![],
            max_tasks: 4,
            proxy: None,
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_server_comes_from_the_flag_or_the_environment() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let env = |name: &str| (name == "ORANGE_SERVER").then(|| "https://o.example/".to_string());
        let config = agent_config_with_env(AgentArgs { server: None, ..args(tmp.path()) }, &env)?;
        assert_eq!(config.server, "https://o.example");
        let none = agent_config_with_env(AgentArgs { server: None, ..args(tmp.path()) }, &no_env);
        assert!(none.unwrap_err().to_string().contains("ORANGE_SERVER"));
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
        let config = agent_config_with_env(args(tmp.path()), &env)?;
        assert_eq!(config.secret.expose(), "from-env");
        assert!(matches!(&config.enrollment, Enrollment::Key(key) if key == "enroll"));
        assert!(!format!("{config:?}").contains("enroll\""), "the key is masked");
        let file = tmp.path().join("s");
        std::fs::write(&file, "from-file\n")?;
        let config = agent_config_with_env(AgentArgs { secret_file: Some(file), ..args(tmp.path()) }, &env)?;
        assert_eq!(config.secret.expose(), "from-file");
        Ok(())
    }

    #[test]
    fn an_enrollment_token_comes_from_its_file_or_the_environment() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let env = |name: &str| (name == "ORANGE_ENROLL_TOKEN").then(|| "0a1b.c0ffee".to_string());
        let config = agent_config_with_env(args(tmp.path()), &env)?;
        assert!(matches!(&config.enrollment, Enrollment::Token(t) if t.id == "0a1b" && t.secret == "c0ffee"));
        let bad = |name: &str| (name == "ORANGE_ENROLL_TOKEN").then(|| "not a token".to_string());
        let err = agent_config_with_env(args(tmp.path()), &bad).unwrap_err().to_string();
        assert!(err.contains("<hex id>.<hex secret>"), "{err}");
        Ok(())
    }

    #[test]
    fn secrets_handed_over_on_the_pipe_are_read_and_a_bad_descriptor_is_refused() -> Result<()> {
        let (read_end, write_end) = secrets_pipe()?;
        let secrets = BTreeMap::from([("ORANGE_ENROLL_KEY".to_owned(), "k\nwith a newline".to_owned())]);
        std::fs::File::from(write_end).write_all(&serde_json::to_vec(&secrets)?)?;
        let fd = std::os::fd::IntoRawFd::into_raw_fd(read_end);
        assert_eq!(read_handed_over(&fd.to_string())?, secrets);
        for bad in ["x", "1", "-4"] {
            let e = read_handed_over(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("ORANGE_SECRETS_FD={bad:?}")), "{e}");
        }
        Ok(())
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let zero = AgentArgs { max_tasks: 0, ..args(tmp.path()) };
        assert_eq!(
            agent_config_with_env(zero, &no_env).unwrap_err().to_string(),
            "max tasks must be at least 1"
        );
        let missing = AgentArgs { handlers: Some(tmp.path().join("nope")), ..args(tmp.path()) };
        assert!(agent_config_with_env(missing, &no_env).unwrap_err().to_string().contains("handlers"));
        let label = AgentArgs { label: vec!["x".into()], ..args(tmp.path()) };
        assert_eq!(
            agent_config_with_env(label, &no_env).unwrap_err().to_string(),
            "--label: label \"x\" is not k=v"
        );
        Ok(())
    }
}
