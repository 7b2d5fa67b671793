//! The connection options every operator command takes (`--server`, `--token-file`, `--data`,
//! `--profile`, `--json`; `--token` only to refuse it), resolved once with the environment and
//! the chosen profile into an [`OperatorConfig`], and [`Api`], the admin client that turns
//! failures into messages naming the server.
//!
//! argh cannot flatten one struct of options into another, so each operator command declares its
//! struct with [`operator_args!`], which adds the connection flags, and hands them over with
//! [`operator_flags!`] as [`OperatorFlags`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::profiles::{Profile, chosen_profile};
use crate::client::proxy::{ProxySettings, ProxyUrl};
use crate::client::{AdminClient, ClientError, TlsSettings};
use crate::protocol::read_secret_file;

/// Server URL used when neither `--server` nor `ORANGE_SERVER` is set.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8890";
/// Environment variable naming the server URL.
pub const ENV_SERVER: &str = "ORANGE_SERVER";
/// Environment variable holding the admin token.
pub const ENV_TOKEN: &str = "ORANGE_TOKEN";
/// Environment variable naming the CA file that signed the server's certificate.
pub const ENV_CA_FILE: &str = "ORANGE_CA_FILE";
/// Environment variable that, at `1` or `true`, turns off the check of the server's certificate.
pub const ENV_INSECURE: &str = "ORANGE_INSECURE";
/// File in the server's data directory that holds the admin token.
pub const TOKEN_FILE: &str = "admin.token";

/// The admin bearer token. Its `Debug` prints `***`, so it never reaches a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for AdminToken {
    type Err = String;

    /// Trims surrounding whitespace (a token pasted with its newline) and refuses an empty token.
    fn from_str(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.is_empty() {
            return Err("the admin token is empty".into());
        }
        Ok(AdminToken(token.to_owned()))
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

/// Declares an operator command's argh struct: its own fields, then `--server`, `--token-file`,
/// `--token` (refused) and `--data`, then `--json` with the doc comment written before `json` (each
/// command says what it prints). Fields keep their order, which is the order of `--help`; a
/// positional may sit among the command's own fields, since help lists positionals apart. The own
/// fields are passed on as plain tokens (each ending in a comma): argh's derive reads field types
/// by their spelling, which a `$ty:ty` capture would hide.
///
/// ```ignore
/// operator_args! {
///     /// List tasks, newest first.
///     #[derive(FromArgs, ArgsInfo, Debug)]
///     #[argh(subcommand, name = "list")]
///     pub struct ListArgs {
///         /// most tasks to show
///         #[argh(option)]
///         pub limit: Option<usize>,
///     }
///     /// print the list as JSON
///     json
/// }
/// ```
macro_rules! operator_args {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($fields:tt)* }
        $(#[$json_meta:meta])*
        json
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($fields)*
            /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
            #[argh(option)]
            pub server: Option<String>,
            /// file holding the admin token (default: ORANGE_TOKEN, else --data)
            #[argh(option)]
            pub token_file: Option<::std::path::PathBuf>,
            /// refused: ps shows argv to every user; use --token-file FILE or ORANGE_TOKEN
            #[argh(option)]
            pub token: Option<String>,
            /// the server's data directory; its admin.token is used when neither --token-file nor ORANGE_TOKEN is set
            #[argh(option)]
            pub data: Option<::std::path::PathBuf>,
            /// connection settings to use from ~/.config/orange/config.toml (default: ORANGE_PROFILE,
            /// else its default_profile); flags and the environment win over it
            #[argh(option)]
            pub profile: Option<String>,
            $(#[$json_meta])*
            #[argh(switch)]
            pub json: bool,
        }
    };
}
pub(crate) use operator_args;

/// The [`OperatorFlags`] of a struct declared with [`operator_args!`], moved out of it; the
/// command's other fields stay usable.
macro_rules! operator_flags {
    ($args:expr) => {
        $crate::cli::operator::OperatorFlags {
            server: $args.server,
            token: $args.token,
            token_file: $args.token_file,
            data: $args.data,
            profile: $args.profile,
            json: $args.json,
        }
    };
}
pub(crate) use operator_flags;

/// The connection flags as typed on one command line, before defaults and environment apply.
#[derive(Debug, Clone, Default)]
pub struct OperatorFlags {
    /// `--server URL`.
    pub server: Option<String>,
    /// `--token T`, refused: a token on argv is visible to every user.
    pub token: Option<String>,
    /// `--token-file FILE`.
    pub token_file: Option<PathBuf>,
    /// `--data DIR`: the server's data directory, whose `admin.token` is read.
    pub data: Option<PathBuf>,
    /// `--profile NAME`: the profile of the CLI's config file to use.
    pub profile: Option<String>,
    /// `--json`.
    pub json: bool,
}

/// Where and how an operator command talks to the server, validated once.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Base URL of the server, without a trailing slash.
    pub server: String,
    /// Admin bearer token.
    pub token: AdminToken,
    /// How calls reach the server.
    pub route: Route,
    /// Print JSON with the admin API's field names instead of text.
    pub json: bool,
}

impl OperatorConfig {
    /// Resolves `flags` against the process environment.
    pub fn from_flags(flags: OperatorFlags) -> Result<Self> {
        Self::resolve(flags, |name| std::env::var(name).ok())
    }

    /// Resolves `flags`, reading variables through `env`, and the profile they or the
    /// environment choose (see [`chosen_profile`]): the server is `--server`, else
    /// `ORANGE_SERVER`, else the profile's, else [`DEFAULT_SERVER`]; the token is
    /// `--token-file`'s, else `ORANGE_TOKEN`, else `--data DIR`'s `admin.token`, else the
    /// profile's `token_file`; the CA file is `ORANGE_CA_FILE`, else the profile's. Empty
    /// variables count as unset; `--token T` is refused.
    pub fn resolve(flags: OperatorFlags, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let env = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        if flags.token.is_some() {
            bail!(
                "--token on the command line is visible to every user in ps; use --token-file FILE or \
                 {ENV_TOKEN}"
            );
        }
        let profile = chosen_profile(flags.profile.as_deref(), &env)?.unwrap_or_default();
        let server = flags
            .server
            .or_else(|| env(ENV_SERVER))
            .or_else(|| profile.server.clone())
            .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
        let token = match (flags.token_file, env(ENV_TOKEN)) {
            (Some(path), _) => {
                read_secret_file(&path).context("--token-file")?.parse().map_err(anyhow::Error::msg)?
            }
            (None, Some(text)) => text.parse().map_err(anyhow::Error::msg)?,
            (None, None) => token_from_data_or_profile(flags.data.as_deref(), &profile)?,
        };
        let server = check_server(&server)?;
        let route = route(&server, &env, &profile);
        Ok(OperatorConfig { server, token, route, json: flags.json })
    }

    /// An admin API client whose calls time out after `timeout`.
    pub fn api(&self, timeout: Duration) -> Api {
        Api {
            client: AdminClient::through(&self.server, self.token.expose(), timeout, self.route.clone()),
            server: self.server.clone(),
        }
    }
}

/// How calls reach the server: the TLS settings and the proxy (`None`: directly), or why they
/// cannot be made, which every call then fails with, naming its URL.
pub type Route = Result<(TlsSettings, Option<ProxyUrl>), String>;

/// The route to `server`: its certificate checked with `ORANGE_CA_FILE`, else the profile's
/// `ca_file` (else the system roots), or not at all with `ORANGE_INSECURE` (`1` or `true`), else
/// the profile's `insecure`; through `ORANGE_PROXY`, else the proxy the variables curl reads name.
fn route(server: &str, env: &dyn Fn(&str) -> Option<String>, profile: &Profile) -> Route {
    let ca_file = env(ENV_CA_FILE).map(PathBuf::from).or_else(|| profile.ca_file.clone());
    let insecure = match env(ENV_INSECURE) {
        Some(value) => value == "1" || value == "true",
        None => profile.insecure.unwrap_or(false),
    };
    let proxy = ProxySettings::from_lookup(None, env).for_server(server)?;
    Ok((TlsSettings::new(ca_file.as_deref(), insecure)?, proxy))
}

/// Reads the token from the server's data directory, else from the profile's `token_file`, or
/// says how to give one.
fn token_from_data_or_profile(data: Option<&Path>, profile: &Profile) -> Result<AdminToken> {
    if let Some(dir) = data {
        return Ok(AdminToken(read_secret_file(&dir.join(TOKEN_FILE))?));
    }
    let Some(path) = &profile.token_file else {
        bail!(
            "no admin token: pass --token-file FILE, set {ENV_TOKEN}, pass --data DIR to read the \
             server's DIR/{TOKEN_FILE}, or choose a profile with a token_file (--profile NAME)"
        );
    };
    let text = read_secret_file(path).with_context(|| format!("token_file of profile {:?}", profile.name))?;
    text.parse().map_err(anyhow::Error::msg)
}

/// Accepts `http://` and `https://` URLs with a host, dropping trailing slashes.
fn check_server(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() => Ok(url.to_owned()),
        _ => bail!(
            "server {url:?} is not a URL like {DEFAULT_SERVER} (from --server, {ENV_SERVER} or the profile)"
        ),
    }
}

/// The admin API, with failures turned into messages that name the server.
pub struct Api {
    client: AdminClient,
    server: String,
}

impl Api {
    /// `GET path`, decoded as `T`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.try_get(path).map_err(|e| self.explain("GET", path, e))
    }

    /// `GET path`, keeping the [`ClientError`] for callers that branch on it.
    pub fn try_get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.client.get(path)
    }

    /// `POST path` with a JSON body, decoded as `T`.
    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        self.try_post(path, body).map_err(|e| self.explain("POST", path, e))
    }

    /// `POST path`, keeping the [`ClientError`] for callers that branch on it.
    pub fn try_post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.client.post(path, body)
    }

    /// `POST path` streaming `file` as the raw body, decoded as `T`.
    pub fn post_file<T: DeserializeOwned>(&self, path: &str, file: &mut std::fs::File) -> Result<T> {
        self.client.post_file(path, file).map_err(|e| self.explain("POST", path, e))
    }

    /// `GET path`: the raw bytes of the answer.
    pub fn get_bytes(&self, path: &str) -> Result<Vec<u8>> {
        self.client.get_bytes(path).map_err(|e| self.explain("GET", path, e))
    }

    /// `GET path`: the answer's bytes copied into `out` as they arrive; returns their count.
    pub fn get_into(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        self.client.get_into(path, out).map_err(|e| self.explain("GET", path, e))
    }

    /// Adds what the operator needs to know to a failed call: a refused token says how to pass
    /// one, other API errors name the call. Transport errors already name the URL.
    pub fn explain(&self, method: &str, path: &str, error: ClientError) -> anyhow::Error {
        let context = match &error {
            ClientError::Api { status: 401, .. } => format!(
                "{} refused the admin token; pass the server's token with --token-file, {ENV_TOKEN} or --data DIR",
                self.server
            ),
            ClientError::Api { .. } => format!("{method} {}{path}", self.server),
            _ => return error.into(),
        };
        anyhow::Error::new(error).context(context)
    }
}

/// Percent-encodes `text` for use as one path segment or query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    /// A file holding the token `t`, kept for the whole test run, for argv of parsed commands.
    pub(crate) fn token_file() -> &'static str {
        static FILE: std::sync::OnceLock<(tempfile::TempDir, String)> = std::sync::OnceLock::new();
        &FILE
            .get_or_init(|| {
                let dir = tempfile::tempdir().expect("a temp dir");
                let path = dir.path().join("token");
                std::fs::write(&path, "t\n").expect("write the token file");
                let path = path.to_str().expect("a utf-8 temp path").to_owned();
                (dir, path)
            })
            .1
    }

    fn token_file_with(dir: &tempfile::TempDir, text: &str) -> Option<PathBuf> {
        let path = dir.path().join("flag.token");
        std::fs::write(&path, text).unwrap();
        Some(path)
    }

    fn data_dir_with_token(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN_FILE), text).unwrap();
        dir
    }

    #[test]
    fn flags_beat_environment_beats_data_file() {
        let dir = data_dir_with_token("from-file\n");
        let env = env_of(&[(ENV_SERVER, "http://env:1"), (ENV_TOKEN, "from-env")]);
        let flags = OperatorFlags {
            server: Some("http://flag:2/".into()),
            token: None,
            token_file: token_file_with(&dir, "from-flag\n"),
            data: Some(dir.path().into()),
            profile: None,
            json: true,
        };
        let config = OperatorConfig::resolve(flags.clone(), &env).unwrap();
        assert_eq!(
            (config.server.as_str(), config.token.expose(), config.json),
            ("http://flag:2", "from-flag", true)
        );

        let config =
            OperatorConfig::resolve(OperatorFlags { server: None, token_file: None, ..flags.clone() }, &env)
                .unwrap();
        assert_eq!((config.server.as_str(), config.token.expose()), ("http://env:1", "from-env"));

        let config =
            OperatorConfig::resolve(OperatorFlags { server: None, token_file: None, ..flags }, env_of(&[]))
                .unwrap();
        assert_eq!((config.server.as_str(), config.token.expose()), (DEFAULT_SERVER, "from-file"));
    }

    #[test]
    fn empty_environment_variables_count_as_unset() {
        let dir = data_dir_with_token("  file-token  ");
        let flags = OperatorFlags { data: Some(dir.path().into()), ..Default::default() };
        let config = OperatorConfig::resolve(flags, env_of(&[(ENV_SERVER, ""), (ENV_TOKEN, " ")])).unwrap();
        assert_eq!((config.server.as_str(), config.token.expose()), (DEFAULT_SERVER, "file-token"));
    }

    #[test]
    fn a_missing_token_names_the_three_ways() {
        let error = OperatorConfig::resolve(OperatorFlags::default(), env_of(&[])).unwrap_err().to_string();
        assert_eq!(
            error,
            "no admin token: pass --token-file FILE, set ORANGE_TOKEN, pass --data DIR to read the \
             server's DIR/admin.token, or choose a profile with a token_file (--profile NAME)"
        );
    }

    #[test]
    fn a_data_dir_without_token_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let flags = OperatorFlags { data: Some(dir.path().into()), ..Default::default() };
        let error = format!("{:#}", OperatorConfig::resolve(flags, env_of(&[])).unwrap_err());
        assert!(error.contains("admin.token"), "{error}");
    }

    #[test]
    fn bad_server_urls_and_empty_tokens_are_refused() {
        let flags = OperatorFlags {
            server: Some("127.0.0.1:8890".into()),
            token_file: Some(token_file().into()),
            ..Default::default()
        };
        let error = OperatorConfig::resolve(flags, env_of(&[])).unwrap_err().to_string();
        assert!(error.contains("\"127.0.0.1:8890\" is not a URL"), "{error}");
        assert_eq!("  \n".parse::<AdminToken>().unwrap_err(), "the admin token is empty");
    }

    #[test]
    fn a_token_on_the_command_line_is_refused_naming_the_replacement() {
        let flags = OperatorFlags { token: Some("s3cret".into()), ..Default::default() };
        let error = OperatorConfig::resolve(flags, env_of(&[])).unwrap_err().to_string();
        assert_eq!(
            error,
            "--token on the command line is visible to every user in ps; use --token-file FILE or ORANGE_TOKEN"
        );
    }

    #[test]
    fn the_token_does_not_reach_debug_output() {
        let config = OperatorConfig {
            server: DEFAULT_SERVER.into(),
            token: AdminToken("s3cret".into()),
            route: Ok(Default::default()),
            json: false,
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret") && debug.contains("***"), "{debug}");
    }

    #[test]
    fn encode_keeps_unreserved_characters_only() {
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(encode("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
        assert_eq!(encode("é"), "%C3%A9");
    }

    /// Serves one canned JSON response on a free port and returns the server URL.
    pub(crate) fn serve_once(status: &str, body: &str) -> String {
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            // The request is small and irrelevant; read it so the client sees a clean exchange.
            let _ = stream.read(&mut [0u8; 4096]);
            stream.write_all(response.as_bytes()).unwrap();
        });
        url
    }

    pub(crate) fn api_for(server: &str) -> Api {
        let config = OperatorConfig {
            server: server.into(),
            token: AdminToken("t".into()),
            route: Ok(Default::default()),
            json: false,
        };
        config.api(Duration::from_secs(5))
    }

    #[test]
    fn a_refused_token_says_how_to_pass_one() {
        let server = serve_once("401 Unauthorized", r#"{"error":"missing or wrong admin token"}"#);
        let error = api_for(&server).get::<serde_json::Value>("/api/v1/agents").unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!(
                "{server} refused the admin token; pass the server's token with --token-file, ORANGE_TOKEN or \
                 --data DIR: missing or wrong admin token (HTTP 401)"
            )
        );
    }

    #[test]
    fn an_api_error_names_the_call() {
        let server = serve_once("404 Not Found", r#"{"error":"unknown task \"x\""}"#);
        let error = api_for(&server).get::<serde_json::Value>("/api/v1/tasks/x").unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("GET {server}/api/v1/tasks/x: unknown task \"x\" (HTTP 404)")
        );
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let error = api_for(&server).get::<serde_json::Value>("/api/v1/agents").unwrap_err();
        let text = format!("{error:#}");
        assert!(text.starts_with(&format!("cannot reach {server}/api/v1/agents: ")), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }
}
