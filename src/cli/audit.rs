//! `orange audit`: the server's audit record of operator actions and enrollments, newest first.

use anyhow::{Result, bail};
use argh::FromArgs;

use super::operator::{OperatorConfig, operator_args, operator_flags};
use super::output::{self, Printed};
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, AuditList};

operator_args! {
    /// Show the audit record: who sent, cancelled, accepted, forgot, enrolled, created or revoked what.
    #[derive(FromArgs, Debug)]
    #[argh(
        subcommand,
        name = "audit",
        example = "orange audit",
        example = "orange audit --limit 1000 --json | jq -r '.entries[] | select(.action == \"agent.forget\") | .target'",
        note = "Newest first. ACTOR is `admin@ADDRESS` for an operator call (the address it came from) \
                or `agent:APP_ID` for an agent enrolling. ACTION is one of task.send, task.cancel, \
                agent.accept, agent.forget, agent.enroll (enrolled with the enrollment key or a token), \
                agent.pending (enrolled without a credential; waits for `orange agents accept`), \
                token.create and token.revoke. Times are shown in UTC to the second (--json keeps \
                milliseconds). The record is kept past task retention. Connection options: --server \
                (else ORANGE_SERVER, else http://127.0.0.1:8890); the admin token from --token-file, else \
                ORANGE_TOKEN, else --data DIR/admin.token."
    )]
    pub struct AuditArgs {
        /// most entries to show, 1 to 1000 (default: the server's, 100)
        #[argh(option)]
        pub limit: Option<usize>,
    }
    /// print the entries as JSON (fields at, actor, action, target, detail)
    json
}

/// Runs `orange audit` and returns the exit code.
pub fn run(args: AuditArgs) -> Result<i32> {
    execute(args)?.emit()?;
    Ok(0)
}

/// `GET /api/v1/audit`, and what to print.
fn execute(args: AuditArgs) -> Result<Printed> {
    let flags = operator_flags!(args);
    let config = OperatorConfig::from_flags(flags)?;
    let path = audit_path(args.limit)?;
    let list: AuditList = config.api(ADMIN_TIMEOUT).get(&path)?;
    Printed::json_or(config.json, &list, |list| output::audit_table(&list.entries))
}

/// The path with a checked `?limit=`.
fn audit_path(limit: Option<usize>) -> Result<String> {
    match limit {
        None => Ok(admin::AUDIT_PATH.to_owned()),
        Some(limit) if limit == 0 || limit > admin::MAX_LIST_LIMIT => {
            bail!("--limit {limit} must be between 1 and {}", admin::MAX_LIST_LIMIT)
        }
        Some(limit) => Ok(format!("{}?limit={limit}", admin::AUDIT_PATH)),
    }
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
        }
    }

    #[test]
    fn flags_parse() {
        let args = parse(&["--limit", "5", "--json", "--data", "/srv/orange"]).unwrap();
        assert_eq!((args.limit, args.json), (Some(5), true));
        assert_eq!(args.data, Some(PathBuf::from("/srv/orange")));
        assert_eq!(parse(&[]).unwrap().limit, None);
        assert!(parse(&["--limit", "x"]).is_err());
        assert!(parse(&["extra"]).is_err());
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(audit_path(None).unwrap(), "/api/v1/audit");
        assert_eq!(audit_path(Some(1000)).unwrap(), "/api/v1/audit?limit=1000");
        assert_eq!(audit_path(Some(0)).unwrap_err().to_string(), "--limit 0 must be between 1 and 1000");
        assert_eq!(
            audit_path(Some(1001)).unwrap_err().to_string(),
            "--limit 1001 must be between 1 and 1000"
        );
    }

    #[test]
    fn audit_asks_for_the_limit_and_prints_a_table() {
        let list = AuditList {
            entries: vec![
                entry("2024-05-01T10:00:02.250Z", "admin@127.0.0.1", "agent.accept", "w2", ""),
                entry("2024-05-01T10:00:01.000Z", "agent:w2", "agent.pending", "w2", "without a credential"),
                entry(
                    "2024-05-01T10:00:00.000Z",
                    "admin@10.0.0.9",
                    "token.create",
                    "3f9a",
                    "3 uses, 86400 s",
                ),
            ],
        };
        let api = FakeApi::serve(vec![FakeApi::ok(&list), FakeApi::ok(&list)]);
        let printed =
            execute(parse(&["--limit", "3", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap();
        assert_eq!(
            printed,
            Printed::out(
                "TIME                  ACTOR            ACTION         TARGET  DETAIL\n\
                 2024-05-01T10:00:02Z  admin@127.0.0.1  agent.accept   w2      -\n\
                 2024-05-01T10:00:01Z  agent:w2         agent.pending  w2      without a credential\n\
                 2024-05-01T10:00:00Z  admin@10.0.0.9   token.create   3f9a    3 uses, 86400 s\n"
                    .into()
            )
        );
        let printed =
            execute(parse(&["--json", "--server", &api.url, "--token-file", token_file()]).unwrap()).unwrap();
        assert_eq!(serde_json::from_str::<AuditList>(&printed.stdout).unwrap().entries, list.entries);
        let seen = api.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("GET", "/api/v1/audit?limit=3"));
        assert_eq!(seen[1].target, "/api/v1/audit");
    }
}
