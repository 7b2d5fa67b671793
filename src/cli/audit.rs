//! `orange audit`: the server's audit record of operator actions and of what agents did,
//! newest first, filtered by kind, action, actor and time on the server, and paged by a cursor.

use anyhow::Result;
use argh::{ArgsInfo, FromArgs};

use super::argv::usage_bail;
use super::operator::{OperatorConfig, encode, operator_args, operator_flags};
use super::output::{self, Printed};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, AuditList};
use crate::protocol::audit::{self, AuditQuery};

operator_args! {
    /// Show the audit record: who sent, cancelled, accepted, forgot, enrolled, created or revoked what.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "audit",
        example = "orange audit",
        example = "orange audit --action agent.forget,token.revoke --since 24h",
        example = "orange audit --kind agent --since 1h",
        example = "orange audit --actor admin@10.0.0.9 --after 1796378400000-42",
        example = "orange audit --kind all --limit 1000 --json | jq -r '.entries[] | select(.action == \"agent.forget\") | .target'",
        note = "Newest first. The record has two streams: operator actions, one entry each, and what \
                agents did (agent.enroll, agent.pending), one entry per app id, action and hour with a \
                COUNT and the time of the LAST one, kept apart so that agents cannot push operator \
                actions out. Without --kind, operator actions are shown, or both streams when \
                --action or --actor is given. ACTOR is `admin@ADDRESS` for an operator call (the \
                address it came from) or `agent:APP_ID` for an agent; --actor admin or --actor agent \
                matches every operator or every agent. ACTION is one of task.send, task.cancel, \
                job.send, job.pause, job.resume, job.cancel, agent.accept, agent.forget, agent.enroll \
                (enrolled with the enrollment key or a token), agent.pending (registered without a \
                credential; waits for `orange agents accept`), token.create and token.revoke. When \
                more entries match than were shown, the command ends with the --after cursor of the \
                next page (--json: `next`). Times are shown in UTC to the second (--json keeps \
                milliseconds). The record is kept past task retention. Connection options: --server \
                (else ORANGE_SERVER, else http://127.0.0.1:8890); the admin token from --token-file, else \
                ORANGE_TOKEN, else --data DIR/admin.token."
    )]
    pub struct AuditArgs {
        /// most entries to show, 1 to 1000 (default: the server's, 100)
        #[argh(option)]
        pub limit: Option<usize>,
        /// only this action; repeatable or a comma list (e.g. agent.forget,token.revoke)
        #[argh(option)]
        pub action: Vec<String>,
        /// only this actor (admin@10.0.0.9, agent:web-1), or every operator (admin) or agent (agent)
        #[argh(option)]
        pub actor: Option<String>,
        /// only entries since this time (2026-12-04T10:00:00Z) or for this long (1h, 30m, 7d)
        #[argh(option)]
        pub since: Option<String>,
        /// continue after this cursor, printed at the end of the previous page
        #[argh(option)]
        pub after: Option<String>,
        /// which stream: operator, agent or all (default: operator, or all with --action or --actor)
        #[argh(option)]
        pub kind: Option<String>,
    }
    /// print the page as JSON (entries with at, actor, action, target, detail, count, last; and next)
    json
}

/// Runs `orange audit` and returns the exit code.
pub fn run(args: AuditArgs) -> Result<i32> {
    execute(args)?.emit()?;
    Ok(0)
}

/// `GET /api/v1/audit`, and what to print.
fn execute(args: AuditArgs) -> Result<Printed> {
    let path = audit_path(&args)?;
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let list: AuditList = config.api(ADMIN_TIMEOUT).get(&path)?;
    let mut printed = Printed::json_or(config.json, &list, |list| output::audit_table(&list.entries))?;
    if let (Some(next), false) = (&list.next, config.json) {
        printed.stderr = format!("orange: more entries match; the next page: --after {next}\n");
    }
    Ok(printed)
}

/// The query pairs the flags ask for, in the order given.
fn query_pairs(args: &AuditArgs) -> Result<Vec<(String, String)>> {
    if let Some(limit) = args.limit
        && (limit == 0 || limit > admin::MAX_LIST_LIMIT)
    {
        usage_bail!("--limit {limit} must be between 1 and {}", admin::MAX_LIST_LIMIT);
    }
    let mut pairs = Vec::new();
    let mut add = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            pairs.push((key.to_owned(), value));
        }
    };
    add(audit::QUERY_KIND, args.kind.clone());
    for action in &args.action {
        add(audit::QUERY_ACTION, Some(action.clone()));
    }
    add(audit::QUERY_ACTOR, args.actor.clone());
    add(audit::QUERY_SINCE, args.since.clone());
    add(audit::QUERY_AFTER, args.after.clone());
    add(audit::QUERY_LIMIT, args.limit.map(|limit| limit.to_string()));
    Ok(pairs)
}

/// The path with the checked query: the same check the server makes, so a bad value is named
/// before anything is sent.
fn audit_path(args: &AuditArgs) -> Result<String> {
    let pairs = query_pairs(args)?;
    if let Err(message) = AuditQuery::from_pairs(&pairs) {
        usage_bail!("{message}");
    }
    if pairs.is_empty() {
        return Ok(admin::AUDIT_PATH.to_owned());
    }
    let query: Vec<String> = pairs.iter().map(|(key, value)| format!("{key}={}", encode(value))).collect();
    Ok(format!("{}?{}", admin::AUDIT_PATH, query.join("&")))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::operator::tests::token_file;
    use crate::protocol::admin::AuditEntry;

    fn parse(argv: &[&str]) -> Result<AuditArgs, argh::EarlyExit> {
        AuditArgs::from_args(&["audit"], argv)
    }

    fn entry(at: &str, actor: &str, action: &str, target: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            at: at.into(),
            actor: actor.into(),
            action: action.into(),
            target: target.into(),
            detail: detail.into(),
            count: 1,
            last: None,
        }
    }

    fn path(argv: &[&str]) -> Result<String> {
        audit_path(&parse(argv).unwrap())
    }

    #[test]
    fn flags_parse() {
        let args = parse(&["--limit", "5", "--json", "--data", "/srv/orange"]).unwrap();
        assert_eq!((args.limit, args.json), (Some(5), true));
        assert_eq!(args.data, Some(PathBuf::from("/srv/orange")));
        assert_eq!(parse(&[]).unwrap().limit, None);
        let args = parse(&["--action", "agent.forget", "--action", "task.send,token.revoke"]).unwrap();
        assert_eq!(args.action, ["agent.forget", "task.send,token.revoke"]);
        assert!(parse(&["--limit", "x"]).is_err());
        assert!(parse(&["extra"]).is_err());
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(path(&[]).unwrap(), "/api/v1/audit");
        assert_eq!(path(&["--limit", "1000"]).unwrap(), "/api/v1/audit?limit=1000");
        assert_eq!(path(&["--limit", "0"]).unwrap_err().to_string(), "--limit 0 must be between 1 and 1000");
        assert_eq!(
            path(&["--limit", "1001"]).unwrap_err().to_string(),
            "--limit 1001 must be between 1 and 1000"
        );
    }

    #[test]
    fn filters_go_to_the_server_encoded_and_checked_first() {
        assert_eq!(
            path(&[
                "--action",
                "agent.forget,token.revoke",
                "--actor",
                "admin@::1",
                "--since",
                "2026-12-04T10:00:00+01:00",
                "--after",
                "1796378400000-42",
                "--kind",
                "all",
            ])
            .unwrap(),
            "/api/v1/audit?kind=all&action=agent.forget%2Ctoken.revoke&actor=admin%40%3A%3A1\
             &since=2026-12-04T10%3A00%3A00%2B01%3A00&after=1796378400000-42"
        );
        let refused = |argv: &[&str]| path(argv).unwrap_err().to_string();
        assert!(refused(&["--action", "agent.forgot"]).starts_with("unknown audit action \"agent.forgot\""));
        assert!(refused(&["--since", "yesterday"]).starts_with("since \"yesterday\" is neither a time"));
        assert_eq!(refused(&["--kind", "ops"]), "kind \"ops\" must be operator, agent or all");
        assert!(refused(&["--after", "x"]).starts_with("cursor \"x\" is not one the server returned"));
    }

    #[test]
    fn audit_asks_for_the_limit_and_prints_a_table() {
        let mut pending =
            entry("2024-05-01T10:00:01.000Z", "agent:w2", "agent.pending", "w2", "without a credential");
        pending.count = 40;
        pending.last = Some("2024-05-01T10:59:00.000Z".into());
        let list = AuditList {
            entries: vec![
                entry("2024-05-01T10:00:02.250Z", "admin@127.0.0.1", "agent.accept", "w2", ""),
                pending,
                entry(
                    "2024-05-01T10:00:00.000Z",
                    "admin@10.0.0.9",
                    "token.create",
                    "3f9a",
                    "3 uses, 86400 s",
                ),
            ],
            next: Some("1714557600000-7".into()),
        };
        let api = FakeApi::serve(vec![FakeApi::ok(&list), FakeApi::ok(&list)]);
        let printed =
            execute(parse(&["--limit", "3", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap();
        assert_eq!(
            printed.stdout,
            "TIME                  LAST                  ACTOR            ACTION         COUNT  TARGET  DETAIL\n\
             2024-05-01T10:00:02Z  -                     admin@127.0.0.1  agent.accept   -      w2      -\n\
             2024-05-01T10:00:01Z  2024-05-01T10:59:00Z  agent:w2         agent.pending  40     w2      without a credential\n\
             2024-05-01T10:00:00Z  -                     admin@10.0.0.9   token.create   -      3f9a    3 uses, 86400 s\n"
        );
        assert_eq!(printed.stderr, "orange: more entries match; the next page: --after 1714557600000-7\n");
        let printed =
            execute(parse(&["--json", "--server", &api.url, "--token-file", token_file()]).unwrap()).unwrap();
        let shown: AuditList = serde_json::from_str(&printed.stdout).unwrap();
        assert_eq!((shown.entries, shown.next), (list.entries, list.next));
        assert_eq!(printed.stderr, "");
        let seen = api.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("GET", "/api/v1/audit?limit=3"));
        assert_eq!(seen[1].target, "/api/v1/audit");
    }
}
