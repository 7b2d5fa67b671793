//! `orange operator ...`: named operators. `add` makes one (a role, an optional host scope and
//! lifetime) and shows its token once, `list` shows them without tokens, `revoke` ends one's
//! token at once, `rotate` gives one a new token, `whoami` shows who the current token is.

use anyhow::{Result, bail};
use argh::{ArgsInfo, FromArgs};

use super::argv::usage_bail;
use super::operator::{OperatorConfig, encode, operator_args, operator_flags};
use super::output::{self, Printed};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::limits;
use crate::protocol::operators::{
    self, MAX_OPERATOR_TTL_SECS, OPERATORS_PATH, OperatorList, OperatorRequest, OperatorView, Role, Scope,
    WHOAMI_PATH, Whoami, scope_text,
};

/// Add, list, revoke and rotate named operators: a token, a role and a host scope each.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "operator",
    example = "orange operator add alice --role operator --scope role=web,env=prod --ttl 90d",
    example = "orange operator list",
    example = "orange operator revoke alice",
    example = "orange operator rotate alice",
    example = "orange operator whoami",
    note = "Roles: `viewer` reads agents, tasks, jobs, output and the audit record; `operator` also \
            sends, runs and cancels tasks and jobs and copies files; `admin` does everything (operators, \
            enrollment tokens, accepting and forgetting agents, approving labels, backups). A scope \
            limits an operator or a viewer to the agents whose approved labels carry every label of it \
            (`orange agents label`). The server's admin token is the admin named `admin`. Every add, \
            revoke and rotate is recorded in `orange audit`, and so is every action of an operator, \
            under its name."
)]
pub struct OperatorArgs {
    /// what to do
    #[argh(subcommand)]
    pub command: OperatorCommand,
}

/// The `orange operator` subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum OperatorCommand {
    /// `orange operator add`
    Add(AddArgs),
    /// `orange operator list`
    List(ListArgs),
    /// `orange operator revoke`
    Revoke(RevokeArgs),
    /// `orange operator rotate`
    Rotate(RotateArgs),
    /// `orange operator whoami`
    Whoami(WhoamiArgs),
}

operator_args! {
    /// Add a named operator and print its token, once.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "add",
        example = "orange operator add alice --role operator --scope role=web,env=prod > alice.token",
        example = "orange operator add audit-bot --role viewer --ttl 30d",
        note = "Prints the token (`orange_op_...`) alone on stdout and a note on stderr; the server \
                keeps only its hash and never shows it again (rotate it if it is lost). Give it to the \
                operator as ORANGE_TOKEN or in a file named by --token-file. NAME is 1 to 64 characters \
                of a-z, 0-9, '.', '_' and '-', starting with a letter; `admin` is taken. --scope is \
                k=v labels separated by commas, for an operator or a viewer only. --ttl is a duration \
                (90d, 12h; at most 3650d); without it the token works until revoked. An operator may \
                be limited further: --max-hosts N refuses a task send or job reaching more hosts, \
                --task-type T (repeatable) refuses other task types (e.g. only handlers, no `shell`). \
                Admins only.",
        error_code(1, "the name is taken, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct AddArgs {
        /// the operator's name
        #[argh(positional)]
        pub name: String,
        /// admin, operator or viewer
        #[argh(option, from_str_fn(Role::parse))]
        pub role: Role,
        /// the hosts it may reach: labels k=v,k=v their approved labels must carry
        #[argh(option, from_str_fn(operators::parse_scope))]
        pub scope: Option<Scope>,
        /// how long its token works: 90d, 12h, or seconds (default: until revoked)
        #[argh(option, arg_name = "duration", from_str_fn(parse_ttl))]
        pub ttl: Option<u64>,
        /// most hosts one task send or job of it may reach (an operator only)
        #[argh(option, arg_name = "n")]
        pub max_hosts: Option<u32>,
        /// a task type it may send, e.g. a handler name (repeatable; default: every type; an
        /// operator only)
        #[argh(option, arg_name = "type")]
        pub task_type: Vec<String>,
    }
    /// print the operator with its token as JSON
    json
}

operator_args! {
    /// List the named operators, without their tokens.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "list",
        example = "orange operator list",
        example = "orange operator list --json | jq -r '.operators[] | select(.status == \"active\") | .name'",
        note = "STATUS is `active`, `expired` or `revoked`. The server's admin token (the admin named \
                `admin`) is not listed. Admins only. Connection options: --server (else ORANGE_SERVER, \
                else http://127.0.0.1:8890); the token from --token-file, else ORANGE_TOKEN, else --data \
                DIR/admin.token."
    )]
    pub struct ListArgs {
    }
    /// print the list as JSON
    json
}

operator_args! {
    /// Revoke an operator's token: its next request is refused.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "revoke",
        example = "orange operator revoke alice",
        note = "The operator stays listed as `revoked`; `orange operator rotate NAME` gives it a new \
                token. Tasks and jobs it started go on; cancel them if needed. Admins only.",
        error_code(1, "the operator is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct RevokeArgs {
        /// the operator's name
        #[argh(positional)]
        pub name: String,
    }
    /// print the operator as JSON
    json
}

operator_args! {
    /// Give an operator a new token and print it, once; the old one stops working.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "rotate",
        example = "orange operator rotate alice > alice.token",
        note = "The new token has the lifetime the operator was added with, from now. A revoked \
                operator becomes active again. Admins only.",
        error_code(1, "the operator is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct RotateArgs {
        /// the operator's name
        #[argh(positional)]
        pub name: String,
    }
    /// print the operator with its token as JSON
    json
}

operator_args! {
    /// Show who the current token is: name, role and scope.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "whoami",
        example = "orange operator whoami",
        note = "Any role may ask. Prints `NAME ROLE SCOPE`."
    )]
    pub struct WhoamiArgs {
    }
    /// print name, role and scope as JSON
    json
}

/// Runs an `orange operator` subcommand and returns the exit code.
pub fn run(args: OperatorArgs) -> Result<i32> {
    execute(args)?.emit()?;
    Ok(0)
}

/// Does what `args` ask and returns what to print.
fn execute(args: OperatorArgs) -> Result<Printed> {
    match args.command {
        OperatorCommand::Add(a) => {
            let request = OperatorRequest {
                name: a.name.trim().to_owned(),
                role: a.role,
                scope: a.scope.clone().unwrap_or_default(),
                ttl_secs: a.ttl,
                max_hosts: a.max_hosts,
                task_types: a.task_type.clone(),
            };
            operators::check_operator_request(&request).map_err(super::argv::usage)?;
            add(&OperatorConfig::from_flags(operator_flags!(a))?, &request)
        }
        OperatorCommand::List(a) => list(&OperatorConfig::from_flags(operator_flags!(a))?),
        OperatorCommand::Revoke(a) => {
            let path = operators::operator_revoke_path(&checked_name(&a.name)?);
            change(&OperatorConfig::from_flags(operator_flags!(a))?, &path, false)
        }
        OperatorCommand::Rotate(a) => {
            let path = operators::operator_rotate_path(&checked_name(&a.name)?);
            change(&OperatorConfig::from_flags(operator_flags!(a))?, &path, true)
        }
        OperatorCommand::Whoami(a) => whoami(&OperatorConfig::from_flags(operator_flags!(a))?),
    }
}

/// A name as typed, checked and made safe for a path.
fn checked_name(name: &str) -> Result<String> {
    let name = name.trim();
    if let Err(e) = operators::check_operator_name(name) {
        usage_bail!("{e}");
    }
    Ok(encode(name))
}

/// `POST /api/v1/operators`: the token alone on stdout, what it is on stderr.
fn add(config: &OperatorConfig, request: &OperatorRequest) -> Result<Printed> {
    let view: OperatorView = config.api(ADMIN_TIMEOUT).post(OPERATORS_PATH, request)?;
    with_token(config, view)
}

/// The answer of an add or a rotate: the token alone on stdout (JSON: the whole operator).
fn with_token(config: &OperatorConfig, view: OperatorView) -> Result<Printed> {
    if config.json {
        return Ok(Printed::out(output::json_text(&view)?));
    }
    let Some(token) = view.token.as_deref() else {
        bail!("the server's answer holds no token for operator {}; rotate it and try again", view.name);
    };
    let expires = view
        .expires_at
        .as_deref()
        .map_or("never expires".to_owned(), |at| format!("expires {}", output::short_time(at)));
    let stderr = format!(
        "orange: token of {} ({}, {}); give it as ORANGE_TOKEN or --token-file; it is shown only once; {expires}\n",
        view.name,
        view.role,
        scope_text(&view.scope)
    );
    Ok(Printed { stdout: format!("{token}\n"), stderr })
}

/// `GET /api/v1/operators`.
fn list(config: &OperatorConfig) -> Result<Printed> {
    let list: OperatorList = config.api(ADMIN_TIMEOUT).get(OPERATORS_PATH)?;
    Printed::json_or(config.json, &list, |list| operators_table(&list.operators))
}

/// A revoke (the new state) or a rotate (the new token).
fn change(config: &OperatorConfig, path: &str, rotated: bool) -> Result<Printed> {
    let view: OperatorView = config.api(ADMIN_TIMEOUT).post(path, &serde_json::json!({}))?;
    if rotated {
        return with_token(config, view);
    }
    Printed::json_or(config.json, &view, |view| format!("operator {}: {}\n", view.name, view.status))
}

/// `GET /api/v1/whoami`.
fn whoami(config: &OperatorConfig) -> Result<Printed> {
    let me: Whoami = config.api(ADMIN_TIMEOUT).get(WHOAMI_PATH)?;
    Printed::json_or(config.json, &me, |me| format!("{} {} {}\n", me.name, me.role, scope_text(&me.scope)))
}

/// The `orange operator list` table.
fn operators_table(list: &[OperatorView]) -> String {
    let rows = list.iter().map(|op| {
        vec![
            op.name.clone(),
            op.role.to_string(),
            scope_text(&op.scope),
            op.expires_at.as_deref().map_or("-".to_owned(), output::short_time),
            op.status.clone(),
            limits_text(op),
        ]
    });
    output::table(&["NAME", "ROLE", "SCOPE", "EXPIRES", "STATUS", "LIMITS"], rows.collect())
}

/// An operator's limits as the table shows them: `-`, or the most hosts and the task types.
fn limits_text(op: &OperatorView) -> String {
    let mut parts = Vec::new();
    if let Some(most) = op.max_hosts {
        parts.push(format!("at most {most} hosts"));
    }
    if !op.task_types.is_empty() {
        parts.push(format!("types {}", op.task_types.join(",")));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join("; ") }
}

/// Parses `--ttl` by the duration syntax: 1 second to 3650 days.
fn parse_ttl(text: &str) -> Result<u64, String> {
    limits::parse_duration(text, MAX_OPERATOR_TTL_SECS, "an operator token may work")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::operator::tests::token_file;

    fn parse(argv: &[&str]) -> Result<OperatorArgs, argh::EarlyExit> {
        OperatorArgs::from_args(&["operator"], argv)
    }

    fn view(name: &str, token: Option<&str>) -> OperatorView {
        OperatorView {
            name: name.into(),
            role: Role::Operator,
            scope: [("role".to_owned(), "web".to_owned())].into(),
            created_at: "2024-05-01T10:00:00.000Z".into(),
            expires_at: None,
            status: "active".into(),
            max_hosts: None,
            task_types: Vec::new(),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn add_parses_role_scope_and_ttl_and_refuses_bad_ones() {
        let args =
            parse(&["add", "alice", "--role", "operator", "--scope", "role=web,env=prod", "--ttl", "90d"])
                .unwrap();
        let OperatorCommand::Add(add) = args.command else { panic!("not an add") };
        assert_eq!(add.role, Role::Operator);
        assert_eq!(add.ttl, Some(90 * 86_400));
        assert_eq!(add.scope.unwrap().len(), 2);
        assert!(parse(&["add", "alice", "--role", "root"]).is_err());
        assert!(parse(&["add", "alice"]).is_err(), "--role is required");
        assert!(parse(&["add", "alice", "--role", "viewer", "--scope", "role"]).is_err());
        let error = execute(parse(&["add", "admin", "--role", "viewer"]).unwrap()).unwrap_err();
        assert!(format!("{error:#}").contains("admin"), "{error:#}");
    }

    #[test]
    fn add_posts_the_request_and_prints_the_token_alone() {
        let created = view("alice", Some("orange_op_abc"));
        let api = FakeApi::serve(vec![FakeApi::ok(&created)]);
        let argv = ["add", "alice", "--role", "operator", "--scope", "role=web", "--server", &api.url];
        let mut argv = argv.to_vec();
        argv.extend(["--token-file", token_file()]);
        let printed = execute(parse(&argv).unwrap()).unwrap();
        assert_eq!(printed.stdout, "orange_op_abc\n");
        assert!(printed.stderr.contains("alice (operator, role=web)"), "{}", printed.stderr);
        let seen = api.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str(), seen[0].body.as_str()),
            ("POST", "/api/v1/operators", r#"{"name":"alice","role":"operator","scope":{"role":"web"}}"#)
        );
    }

    #[test]
    fn list_shows_no_token_and_revoke_says_the_state() {
        let list = OperatorList { operators: vec![view("alice", None)] };
        let mut revoked = view("alice", None);
        revoked.status = "revoked".into();
        let api = FakeApi::serve(vec![FakeApi::ok(&list), FakeApi::ok(&revoked)]);
        let printed =
            execute(parse(&["list", "--server", &api.url, "--token-file", token_file()]).unwrap()).unwrap();
        assert_eq!(
            printed.stdout,
            "NAME   ROLE      SCOPE     EXPIRES  STATUS  LIMITS\nalice  operator  role=web  -        active  -\n"
        );
        let printed =
            execute(parse(&["revoke", "alice", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap();
        assert_eq!(printed.stdout, "operator alice: revoked\n");
        assert_eq!(api.seen()[1].target, "/api/v1/operators/alice/revoke");
    }
}
