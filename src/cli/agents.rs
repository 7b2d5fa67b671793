//! `orange agents`: the agents the server knows, as a table or JSON.

use std::path::PathBuf;

use anyhow::Result;
use argh::FromArgs;

use super::operator::{AdminToken, OperatorConfig, OperatorFlags};
use super::output;
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, AgentList};

/// List the agents the server knows, sorted by app id.
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "agents",
    example = "orange agents --online",
    example = "orange agents --json | jq -r '.agents[] | select(.online) | .app_id'",
    note = "An agent is online when it was seen within the last 90 seconds or is holding a long poll \
            now. Times are shown in UTC to the second. Connection options: --server (else \
            ORANGE_SERVER, else http://127.0.0.1:8890); the admin token from --token, else \
            ORANGE_TOKEN, else --data DIR/admin.token."
)]
pub struct AgentsArgs {
    /// only agents that are online
    #[argh(switch)]
    pub online: bool,
    /// server URL (default: ORANGE_SERVER, else http://127.0.0.1:8890)
    #[argh(option)]
    pub server: Option<String>,
    /// admin token (default: ORANGE_TOKEN, else --data); ps shows argv, so prefer those two
    #[argh(option)]
    pub token: Option<AdminToken>,
    /// the server's data directory; its admin.token is used when neither --token nor ORANGE_TOKEN is set
    #[argh(option)]
    pub data: Option<PathBuf>,
    /// print the list as JSON (fields app_id, online, last_seen, ...)
    #[argh(switch)]
    pub json: bool,
}

/// Runs `orange agents` and returns the exit code.
pub fn run(args: AgentsArgs) -> Result<i32> {
    let flags = OperatorFlags { server: args.server, token: args.token, data: args.data, json: args.json };
    let config = OperatorConfig::from_flags(flags)?;
    let mut list: AgentList = config.api(ADMIN_TIMEOUT).get(admin::AGENTS_PATH)?;
    if args.online {
        list.agents.retain(|agent| agent.online);
    }
    if config.json {
        output::print_json(&list)?
    } else {
        output::emit(&output::agents_table(&list.agents))?
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let args =
            AgentsArgs::from_args(&["agents"], &["--online", "--json", "--server", "http://h:1"]).unwrap();
        assert!(args.online && args.json);
        assert_eq!(args.server.as_deref(), Some("http://h:1"));
        assert!(AgentsArgs::from_args(&["agents"], &["--token", " "]).is_err());
    }
}
