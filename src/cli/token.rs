//! `orange token ...`: enrollment tokens. `create` makes one (limited uses, an expiry) and shows
//! its secret once, `list` shows them without secrets, `revoke` ends one early; plus
//! [`parse_ttl`], the duration syntax of `--ttl`.

use anyhow::{Result, bail};
use argh::{ArgsInfo, FromArgs};
use chrono::Utc;

use super::argv::usage_bail;
use super::operator::{OperatorConfig, encode, operator_args, operator_flags};
use super::output::{self, Printed};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, TokenList, TokenRequest, TokenView};
use crate::protocol::limits::{self, MAX_TOKEN_TTL_SECS};

/// Create, list and revoke enrollment tokens: one-off credentials agents enroll with.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "token",
    example = "orange token create --ttl 24h --uses 5",
    example = "orange token list",
    example = "orange token revoke 3f9a0c1d2e4b5a69",
    note = "An agent enrolls with the server's enrollment key, with an enrollment token, or with \
            no credential at all (it then waits `pending` until `orange agents accept ID`). A token \
            lets a known number of agents enroll within a known time, without handing out the \
            enrollment key. Every create and revoke is recorded in `orange audit`."
)]
pub struct TokenArgs {
    /// what to do
    #[argh(subcommand)]
    pub command: TokenCommand,
}

/// The `orange token` subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum TokenCommand {
    /// `orange token create`
    Create(CreateArgs),
    /// `orange token list`
    List(ListArgs),
    /// `orange token revoke`
    Revoke(RevokeArgs),
}

operator_args! {
    /// Create an enrollment token and print it, once.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "create",
        example = "orange token create --ttl 24h",
        example = "orange token create --ttl 7d --uses 20 > enroll.token",
        example = "ORANGE_ENROLL_TOKEN=$(orange token create --ttl 30m) orange agent --server http://10.0.0.1:8890",
        note = "Prints the token (`<id>.<secret>`) alone on stdout and a note on stderr. Give it to \
                agents as ORANGE_ENROLL_TOKEN or in a file named by --enroll-token-file. The server \
                never shows its secret again: if it is lost, revoke it and create another. Each agent \
                that enrolls with it uses one use up; an agent already enrolled does not. DURATION is \
                a whole number with a unit, s, m, h or d (90s, 30m, 24h, 7d), or plain seconds \
                (3600); at most 365d. --json prints the token with its id, expiry and \
                uses. Connection options as in `orange token list --help`."
    )]
    pub struct CreateArgs {
        /// how long the token works: 30m, 24h, 7d, or seconds (at most 365d)
        #[argh(option, arg_name = "duration", from_str_fn(parse_ttl))]
        pub ttl: u64,
        /// how many agents may enroll with it (default 1)
        #[argh(option, arg_name = "n", default = "1", from_str_fn(parse_uses))]
        pub uses: u32,
    }
    /// print the token with its id, expiry and uses as JSON
    json
}

operator_args! {
    /// List enrollment tokens, without their secrets.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "list",
        example = "orange token list",
        example = "orange token list --json | jq -r '.tokens[] | select(.uses_left > 0) | .token_id'",
        note = "STATE is `active` (agents may enroll with it), `expired`, `revoked` or `used up`. \
                Expiry times are shown in UTC to the second. Connection options: --server (else \
                ORANGE_SERVER, else http://127.0.0.1:8890); the admin token from --token-file, else \
                ORANGE_TOKEN, else --data DIR/admin.token."
    )]
    pub struct ListArgs {
    }
    /// print the list as JSON (fields token_id, created_at, expires_at, uses_left, revoked)
    json
}

operator_args! {
    /// Revoke an enrollment token: no agent may enroll with it from now on.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "revoke",
        example = "orange token revoke 3f9a0c1d2e4b5a69",
        note = "Agents that already enrolled with the token stay enrolled; forget one with `orange \
                agents forget ID`. Revoking a revoked token succeeds again. ID is the TOKEN ID of \
                `orange token list`. Prints `token ID: revoked` (--json: the token). Connection options \
                as in `orange token list --help`.",
        error_code(1, "the token is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct RevokeArgs {
        /// the token id
        #[argh(positional)]
        pub id: String,
    }
    /// print the token as JSON
    json
}

/// Runs an `orange token` subcommand and returns the exit code.
pub fn run(args: TokenArgs) -> Result<i32> {
    execute(args)?.emit()?;
    Ok(0)
}

/// Does what `args` ask and returns what to print.
fn execute(args: TokenArgs) -> Result<Printed> {
    match args.command {
        TokenCommand::Create(a) => {
            let flags = operator_flags!(a);
            create(&OperatorConfig::from_flags(flags)?, TokenRequest { ttl_secs: a.ttl, uses: a.uses })
        }
        TokenCommand::List(a) => {
            let flags = operator_flags!(a);
            list(&OperatorConfig::from_flags(flags)?)
        }
        TokenCommand::Revoke(a) => {
            let flags = operator_flags!(a);
            revoke(&OperatorConfig::from_flags(flags)?, &a.id)
        }
    }
}

/// `POST /api/v1/tokens`: the token alone on stdout, how to use it on stderr.
fn create(config: &OperatorConfig, request: TokenRequest) -> Result<Printed> {
    let view: TokenView = config.api(ADMIN_TIMEOUT).post(admin::TOKENS_PATH, &request)?;
    let Some(token) = view.token.as_deref() else {
        bail!("the server's answer holds no token (token id {}); revoke it and try again", view.token_id);
    };
    if config.json {
        return Ok(Printed::out(output::json_text(&view)?));
    }
    Ok(Printed { stdout: format!("{token}\n"), stderr: output::token_created_note(&view) })
}

/// `GET /api/v1/tokens`.
fn list(config: &OperatorConfig) -> Result<Printed> {
    let list: TokenList = config.api(ADMIN_TIMEOUT).get(admin::TOKENS_PATH)?;
    Printed::json_or(config.json, &list, |list| output::tokens_table(&list.tokens, Utc::now()))
}

/// `POST /api/v1/tokens/{id}/revoke`.
fn revoke(config: &OperatorConfig, id: &str) -> Result<Printed> {
    let id = id.trim();
    if id.is_empty() {
        usage_bail!("the token id is empty; `orange token list` shows them");
    }
    let view: TokenView =
        config.api(ADMIN_TIMEOUT).post(&admin::revoke_path(&encode(id)), &serde_json::json!({}))?;
    Printed::json_or(config.json, &view, output::token_revoked_line)
}

/// Parses `--ttl` by the duration syntax ([`limits::parse_duration`]): 1 second to 365 days.
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    limits::parse_duration(text, MAX_TOKEN_TTL_SECS, "a token may work")
}

/// Parses `--uses`: a whole number of at least 1.
fn parse_uses(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("a token must allow at least 1 use".to_owned()),
        Ok(uses) => Ok(uses),
        Err(_) => Err(format!("{text:?} is not a number of uses from 1 to {}", u32::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::operator::tests::token_file;

    fn parse(argv: &[&str]) -> Result<TokenCommand, argh::EarlyExit> {
        TokenArgs::from_args(&["token"], argv).map(|args| args.command)
    }

    fn view(id: &str, token: Option<&str>, expires_at: &str, uses_left: u32, revoked: bool) -> TokenView {
        TokenView {
            token_id: id.into(),
            token: token.map(str::to_owned),
            created_at: "2024-05-01T10:00:00.000Z".into(),
            expires_at: expires_at.into(),
            uses_left,
            revoked,
            status: String::new(),
        }
    }

    #[test]
    fn durations_take_a_unit_or_mean_seconds() {
        assert_eq!(parse_ttl("3600"), Ok(3600));
        assert_eq!(parse_ttl("90s"), Ok(90));
        assert_eq!(parse_ttl("30m"), Ok(1800));
        assert_eq!(parse_ttl(" 24h "), Ok(86_400));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert_eq!(parse_ttl("365d"), Ok(MAX_TOKEN_TTL_SECS));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        let like = "like 24h, 30m, 7d or 3600 (seconds)";
        assert_eq!(parse_ttl(""), Err(format!("the duration is empty; give one {like}")));
        assert_eq!(parse_ttl("2w"), Err(format!("\"2w\" has an unknown unit 'w'; use s, m, h or d, {like}")));
        for bad in ["h", "1.5h", "-1h", "1h30m", "+5", "1 h", "ten", "0x10"] {
            assert_eq!(parse_ttl(bad), Err(format!("{bad:?} is not a duration {like}")));
        }
        assert_eq!(parse_ttl("0h"), Err("\"0h\" is zero; the least is 1 second".into()));
        assert_eq!(parse_ttl("366d"), Err("\"366d\" is longer than a token may work (365d)".into()));
        assert_eq!(
            parse_ttl("99999999999999999999d"),
            Err("\"99999999999999999999d\" is longer than a token may work (365d)".into())
        );
        assert_eq!(parse_uses("0"), Err("a token must allow at least 1 use".into()));
        assert_eq!(parse_uses("x"), Err("\"x\" is not a number of uses from 1 to 4294967295".into()));
    }

    #[test]
    fn every_subcommand_parses() {
        assert!(matches!(
            parse(&["create", "--ttl", "24h", "--uses", "5", "--json"]),
            Ok(TokenCommand::Create(CreateArgs { ttl: 86_400, uses: 5, json: true, .. }))
        ));
        assert!(matches!(
            parse(&["create", "--ttl", "60"]),
            Ok(TokenCommand::Create(CreateArgs { uses: 1, .. }))
        ));
        assert!(parse(&["create"]).is_err());
        assert!(parse(&["create", "--ttl", "0"]).is_err());
        assert!(parse(&["create", "--ttl", "1h", "--uses", "0"]).is_err());
        assert!(matches!(
            parse(&["list", "--server", "http://h:1"]),
            Ok(TokenCommand::List(ListArgs { .. }))
        ));
        assert!(
            matches!(parse(&["revoke", "abc"]), Ok(TokenCommand::Revoke(RevokeArgs { id, .. })) if id == "abc")
        );
        assert!(parse(&["revoke"]).is_err());
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn argh_shows_the_duration_error() {
        let Err(exit) = parse(&["create", "--ttl", "2x"]) else { panic!("--ttl 2x parsed") };
        assert!(exit.output.contains("\"2x\" has an unknown unit 'x'"), "{}", exit.output);
    }

    #[test]
    fn create_posts_ttl_and_uses_and_prints_the_token_alone() {
        let created = view("3f9a", Some("3f9a.5ec7e7"), "2024-05-02T10:00:00.000Z", 3, false);
        let api = FakeApi::serve(vec![FakeApi::ok(&created), FakeApi::ok(&created)]);
        let argv =
            ["create", "--ttl", "24h", "--uses", "3", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(TokenArgs::from_args(&["token"], &argv).unwrap()).unwrap();
        assert_eq!(printed.stdout, "3f9a.5ec7e7\n");
        assert_eq!(
            printed.stderr,
            "orange: give it to agents as ORANGE_ENROLL_TOKEN or --enroll-token-file; it is shown only \
             once; expires 2024-05-02T10:00:00Z; 3 uses\n"
        );
        let argv = ["create", "--ttl", "60", "--json", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(TokenArgs::from_args(&["token"], &argv).unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<TokenView>(&printed.stdout).unwrap(), created);
        let seen = api.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str(), seen[0].body.as_str()),
            ("POST", "/api/v1/tokens", r#"{"ttl_secs":86400,"uses":3}"#)
        );
        assert_eq!(seen[1].body, r#"{"ttl_secs":60,"uses":1}"#);
    }

    #[test]
    fn list_shows_each_token_state() {
        let tokens = TokenList {
            tokens: vec![
                view("a1", None, "2999-01-01T00:00:00.000Z", 2, false),
                view("b2", None, "2000-01-01T00:00:00.000Z", 1, false),
                view("c3", None, "2999-01-01T00:00:00.000Z", 0, false),
                view("d4", None, "2999-01-01T00:00:00.000Z", 1, true),
            ],
        };
        let api = FakeApi::serve(vec![FakeApi::ok(&tokens)]);
        let argv = ["list", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(TokenArgs::from_args(&["token"], &argv).unwrap()).unwrap();
        assert_eq!(
            printed,
            Printed::out(
                "TOKEN ID  EXPIRES               USES LEFT  STATE\n\
                 a1        2999-01-01T00:00:00Z  2          active\n\
                 b2        2000-01-01T00:00:00Z  1          expired\n\
                 c3        2999-01-01T00:00:00Z  0          used up\n\
                 d4        2999-01-01T00:00:00Z  1          revoked\n"
                    .into()
            )
        );
        let seen = api.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("GET", "/api/v1/tokens"));
    }

    #[test]
    fn revoke_posts_to_the_token_and_says_so() {
        let revoked = view("3f9a", None, "2999-01-01T00:00:00.000Z", 1, true);
        let api = FakeApi::serve(vec![FakeApi::ok(&revoked)]);
        let argv = ["revoke", "3f9a", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(TokenArgs::from_args(&["token"], &argv).unwrap()).unwrap();
        assert_eq!(printed, Printed::out("token 3f9a: revoked\n".into()));
        let seen = api.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str()),
            ("POST", "/api/v1/tokens/3f9a/revoke")
        );
    }

    #[test]
    fn an_unknown_token_names_the_call() {
        let api = FakeApi::serve(vec![FakeApi::error("404 Not Found", "unknown enrollment token \"zz\"")]);
        let argv = ["revoke", "zz", "--server", &api.url, "--token-file", token_file()];
        let error = execute(TokenArgs::from_args(&["token"], &argv).unwrap()).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("POST {}/api/v1/tokens/zz/revoke: unknown enrollment token \"zz\" (HTTP 404)", api.url)
        );
    }
}
