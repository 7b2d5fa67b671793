//! `orange agents`: the agents the server knows, as a table or JSON, and the operator's word on
//! one of them: `orange agents accept ID` lets a pending agent take tasks, `orange agents forget
//! ID` drops an agent's secret so its app id may enroll again, `orange agents label ID k=v`
//! sets the labels operators' scopes match it by.

use std::collections::BTreeMap;

use anyhow::Result;
use argh::{ArgsInfo, FromArgs};
use serde::{Deserialize, Serialize};

use super::argv::{usage, usage_bail};
use super::operator::{Api, OperatorConfig, OperatorFlags, encode, operator_args, operator_flags};
use super::output::{self, Printed};
use super::task;
use crate::client::ADMIN_TIMEOUT;
use crate::protocol::admin::{self, AgentFilter, AgentList, AgentView, TaskList, TaskView};
use crate::protocol::operators::{LABELS_SUFFIX, LabelsRequest};
use crate::protocol::task_query::TaskQuery;
use crate::protocol::{TaskStatus, limits, wire};

operator_args! {
    /// List the agents the server knows, sorted by app id; accept or forget one.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "agents",
        example = "orange agents --online",
        example = "orange agents --label role=web --label env=prod --online",
        example = "orange agents --pending",
        example = "orange agents accept web-7",
        example = "orange agents forget web-7",
        example = "orange agents --json | jq -r '.agents[] | select(.online) | .app_id'",
        note = "STATUS is `accepted` (takes tasks), `pending` (enrolled without a credential; waits for \
                `orange agents accept ID`) or `forgotten` (its secret was dropped; the app id may enroll \
                again). An agent is online when it was seen within the last 90 seconds or is holding a \
                long poll now. --label k=v keeps agents carrying that label (repeatable: all must \
                match); --label, --online and --pending all apply when given together. UPTIME is \
                shown for online agents that reported their boot time; --json has every fact (os_name, \
                os_version, kernel, arch, ips, boot_time, uptime_secs under `facts`). Times are shown \
                in UTC to the second. Connection options: --server (else ORANGE_SERVER, else \
                http://127.0.0.1:8890); the admin token from --token-file, else ORANGE_TOKEN, else --data \
                DIR/admin.token. They may also follow `accept ID` or `forget ID`."
    )]
    pub struct AgentsArgs {
        /// accept or forget one agent instead of listing them
        #[argh(subcommand)]
        pub command: Option<AgentsCommand>,
        /// only agents that are online
        #[argh(switch)]
        pub online: bool,
        /// only agents that wait for an operator to accept them
        #[argh(switch)]
        pub pending: bool,
        /// only agents with this label, k=v (repeatable; all must match)
        #[argh(option)]
        pub label: Vec<String>,
    }
    /// print the list as JSON (fields app_id, status, online, last_seen, ...)
    json
}

/// The `orange agents` subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum AgentsCommand {
    /// `orange agents accept`
    Accept(AcceptArgs),
    /// `orange agents forget`
    Forget(ForgetArgs),
    /// `orange agents show`
    Show(ShowArgs),
    /// `orange agents label`
    Label(LabelArgs),
}

operator_args! {
    /// Show one agent: its facts, labels, status, last seen, open tasks and last 10 tasks.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "show",
        example = "orange agents show web-7",
        example = "orange agents show web-7 --json | jq '.open_tasks | length'",
        note = "Open tasks are those queued, delivered or running (up to 1000, oldest last); the last \
                10 tasks are the newest, in any state. Times are shown in UTC to the second. --json \
                prints an object with `agent`, `open_tasks` and `recent_tasks`, the agent as in \
                `orange agents --json` and the tasks as in `orange task list --json`. Connection \
                options as in `orange agents --help`.",
        error_code(1, "the agent is unknown, or orange failed")
    )]
    pub struct ShowArgs {
        /// the agent's app id
        #[argh(positional)]
        pub id: String,
    }
    /// print the agent and its tasks as JSON
    json
}

/// What `orange agents show --json` prints: the agent's fields at the top level, as every single
/// object is printed (`task get`, `GET /api/v1/agents/{id}`), with its tasks beside them. `agent`
/// holds the same agent again, where the first release of `agents show` printed it (deprecated,
/// kept).
#[derive(Debug, Serialize, Deserialize)]
pub struct AgentDetail {
    /// The agent, as `orange agents --json` shows it, its fields at the top level.
    #[serde(flatten)]
    pub fields: AgentView,
    /// Deprecated: the same agent, nested, for scripts that read `.agent.app_id`.
    pub agent: AgentView,
    /// Its tasks queued, delivered or running, newest first.
    pub open_tasks: Vec<TaskView>,
    /// Its newest tasks, in any state.
    pub recent_tasks: Vec<TaskView>,
}

operator_args! {
    /// Approve an agent's labels: the labels operators' scopes match it by.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "label",
        example = "orange agents label web-7 role=web env=prod",
        example = "orange agents label web-7",
        note = "An agent declares labels with `orange agent --label`; they are shown, but an operator's \
                scope (`orange operator add --scope`) matches only labels an admin approved: those it \
                declared when it was accepted (enrolled with the key or a token, or `orange agents \
                accept`), or those set here. The labels given replace the approved ones; none clears \
                them. Admins only. Prints `agent ID: approved labels K=V,...` (--json: the agent). \
                Recorded in `orange audit`. Connection options as in `orange agents --help`.",
        error_code(1, "the agent is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct LabelArgs {
        /// the agent's app id
        #[argh(positional)]
        pub id: String,
        /// the approved labels, k=v
        #[argh(positional)]
        pub labels: Vec<String>,
    }
    /// print the agent as JSON
    json
}

/// Tasks shown under "last tasks" by `orange agents show`.
const RECENT_TASKS: usize = 10;

operator_args! {
    /// Accept a pending agent: from now on it takes tasks.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "accept",
        example = "orange agents --pending",
        example = "orange agents accept web-7",
        note = "An agent that enrolled without the enrollment key or a token waits `pending`: it polls \
                but gets no tasks, and tasks cannot be sent to it. Accepting it lets it take tasks at \
                once. Accepting an agent that is already accepted changes nothing. Prints `agent ID: \
                accepted` (--json: the agent). Recorded in `orange audit`. Connection options as in \
                `orange agents --help`.",
        error_code(1, "the agent is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct AcceptArgs {
        /// the agent's app id
        #[argh(positional)]
        pub id: String,
    }
    /// print the agent as JSON
    json
}

operator_args! {
    /// Forget an agent: drop its secret so the app id may enroll again.
    #[derive(FromArgs, ArgsInfo, Debug)]
    #[argh(
        subcommand,
        name = "forget",
        example = "orange agents forget web-7",
        note = "Use it when a host was rebuilt and lost its secret (until then the server refuses \
                the app id with any other secret), or to reject a pending agent. The forgotten agent's \
                requests fail from then on. Whoever registers that app id next (the same agent, still \
                running, or a new host) enrolls afresh with its own secret: at once with the \
                enrollment key or a token, otherwise it waits `pending` again. So to keep a host out, \
                stop its agent or do not accept it. Prints `agent ID: forgotten; ...` (--json: the \
                agent). Recorded in `orange audit`. Connection options as in `orange agents --help`.",
        error_code(1, "the agent is unknown, or orange failed"),
        error_code(2, "usage: a bad or missing argument")
    )]
    pub struct ForgetArgs {
        /// the agent's app id
        #[argh(positional)]
        pub id: String,
    }
    /// print the agent as JSON
    json
}

/// Runs `orange agents` (or one of its subcommands) and returns the exit code.
pub fn run(args: AgentsArgs) -> Result<i32> {
    execute(args)?.emit()?;
    Ok(0)
}

/// Does what `args` ask and returns what to print.
fn execute(args: AgentsArgs) -> Result<Printed> {
    let flags = operator_flags!(args);
    let Some(command) = args.command else {
        let labels = limits::parse_labels(&args.label, limits::MAX_LABELS)
            .map_err(|e| usage(format!("--label: {e}")))?;
        let filter = AgentFilter { labels, online: args.online, ..AgentFilter::default() };
        return list(&OperatorConfig::from_flags(flags)?, &filter, args.pending);
    };
    if args.online || args.pending || !args.label.is_empty() {
        usage_bail!(
            "--label, --online and --pending filter the list; they do not go with accept, forget or show"
        );
    }
    match command {
        AgentsCommand::Accept(a) => {
            let own = operator_flags!(a);
            change(&OperatorConfig::from_flags(merge(own, flags))?, &a.id, admin::accept_path)
        }
        AgentsCommand::Forget(f) => {
            let own = operator_flags!(f);
            change(&OperatorConfig::from_flags(merge(own, flags))?, &f.id, admin::forget_path)
        }
        AgentsCommand::Show(s) => {
            let own = operator_flags!(s);
            show(&OperatorConfig::from_flags(merge(own, flags))?, &s.id)
        }
        AgentsCommand::Label(l) => {
            let labels = limits::parse_labels(&l.labels, limits::MAX_LABELS).map_err(usage)?;
            let own = operator_flags!(l);
            label(&OperatorConfig::from_flags(merge(own, flags))?, &l.id, labels)
        }
    }
}

/// Connection flags given after the subcommand win over those given before it.
fn merge(own: OperatorFlags, outer: OperatorFlags) -> OperatorFlags {
    OperatorFlags {
        server: own.server.or(outer.server),
        token: own.token.or(outer.token),
        token_file: own.token_file.or(outer.token_file),
        data: own.data.or(outer.data),
        profile: own.profile.or(outer.profile),
        json: own.json || outer.json,
    }
}

/// `GET /api/v1/agents` filtered by the server (labels, online), and here again, so that a server
/// that predates the filters still gives the right list; `pending` is filtered here.
fn list(config: &OperatorConfig, filter: &AgentFilter, pending: bool) -> Result<Printed> {
    let mut list: AgentList = config.api(ADMIN_TIMEOUT).get(&list_path(filter))?;
    list.agents.retain(|agent| filter.matches(agent) && (!pending || agent.status == "pending"));
    if list.agents.is_empty() && !config.json {
        let filtered = !filter.labels.is_empty() || filter.online || pending;
        let note = if filtered { "orange: no agents match\n" } else { "orange: no agents\n" };
        return Ok(Printed { stdout: String::new(), stderr: note.to_owned() });
    }
    Printed::json_or(config.json, &list, |list| output::agents_table(&list.agents))
}

/// The tasks `query` asks for, filtered here again (older servers ignore the filters).
fn agent_tasks(api: &Api, query: &TaskQuery) -> Result<Vec<TaskView>> {
    let mut list: TaskList = api.get(&task::list_path(query, None))?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    list.tasks.retain(|task| query.matches_view(task, now_ms));
    list.tasks.truncate(query.limit());
    Ok(list.tasks)
}

/// `orange agents show ID`: the agent, then its open tasks and its newest tasks, each asked of
/// the server's task list (and filtered here again, for servers that ignore the filters).
fn show(config: &OperatorConfig, id: &str) -> Result<Printed> {
    wire::check_app_id(id).map_err(usage)?;
    let api = config.api(ADMIN_TIMEOUT);
    let agent: AgentView = api.get(&admin::agent_path(&encode(id)))?;
    let open = TaskQuery {
        app_id: Some(id.to_owned()),
        statuses: vec![TaskStatus::Queued, TaskStatus::Delivered, TaskStatus::Running],
        limit: Some(admin::MAX_LIST_LIMIT),
        ..TaskQuery::default()
    };
    let recent = TaskQuery { app_id: Some(id.to_owned()), limit: Some(RECENT_TASKS), ..TaskQuery::default() };
    let detail = AgentDetail {
        fields: agent.clone(),
        agent,
        open_tasks: agent_tasks(&api, &open)?,
        recent_tasks: agent_tasks(&api, &recent)?,
    };
    Printed::json_or(config.json, &detail, |d| output::agent_detail(&d.agent, &d.open_tasks, &d.recent_tasks))
}

/// The agents path with the filter as query parameters.
fn list_path(filter: &AgentFilter) -> String {
    let mut pairs: Vec<String> = filter
        .labels
        .iter()
        .map(|(key, value)| format!("{}={}", admin::QUERY_LABEL, encode(&format!("{key}={value}"))))
        .collect();
    if filter.online {
        pairs.push(format!("{}=true", admin::QUERY_ONLINE));
    }
    if pairs.is_empty() {
        return admin::AGENTS_PATH.to_owned();
    }
    format!("{}?{}", admin::AGENTS_PATH, pairs.join("&"))
}

/// `POST /api/v1/agents/{id}/labels`: sets the agent's approved labels.
fn label(config: &OperatorConfig, id: &str, labels: BTreeMap<String, String>) -> Result<Printed> {
    wire::check_app_id(id).map_err(anyhow::Error::msg)?;
    let path = format!("{}/{}/{LABELS_SUFFIX}", admin::AGENTS_PATH, encode(id));
    let agent: AgentView = config.api(ADMIN_TIMEOUT).post(&path, &LabelsRequest { labels })?;
    Printed::json_or(config.json, &agent, |agent| {
        let labels: Vec<String> = agent.approved_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "agent {}: approved labels {}\n",
            agent.app_id,
            if labels.is_empty() { "none".into() } else { labels.join(",") }
        )
    })
}

/// `POST` to the path `path_of` gives for the agent `id` (accept or forget).
fn change(config: &OperatorConfig, id: &str, path_of: fn(&str) -> String) -> Result<Printed> {
    wire::check_app_id(id).map_err(anyhow::Error::msg)?;
    let agent: AgentView = config.api(ADMIN_TIMEOUT).post(&path_of(&encode(id)), &serde_json::json!({}))?;
    Printed::json_or(config.json, &agent, output::agent_status_line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fake_api::FakeApi;
    use crate::cli::operator::tests::token_file;

    fn parse(argv: &[&str]) -> Result<AgentsArgs, argh::EarlyExit> {
        AgentsArgs::from_args(&["agents"], argv)
    }

    fn agent(app_id: &str, status: &str, online: bool) -> AgentView {
        AgentView {
            app_id: app_id.into(),
            online,
            last_seen: "2024-05-01T10:00:00Z".into(),
            registered_at: "2024-04-01T00:00:00Z".into(),
            labels: Default::default(),
            version: None,
            hostname: None,
            processed_task_count: 0,
            status: status.into(),
            facts: None,
            features: Vec::new(),
            approved_labels: Default::default(),
        }
    }

    #[test]
    fn flags_parse_without_a_subcommand() {
        let args = parse(&["--online", "--json", "--server", "http://h:1"]).unwrap();
        assert!(args.online && args.json && !args.pending && args.command.is_none());
        assert_eq!(args.server.as_deref(), Some("http://h:1"));
        assert!(parse(&[]).unwrap().command.is_none());
        assert!(parse(&["--pending"]).unwrap().pending);
        assert!(parse(&["--token-file"]).is_err());
        assert!(parse(&["w1"]).is_err());
    }

    #[test]
    fn accept_and_forget_parse_with_their_own_flags() {
        let args = parse(&["accept", "w1"]).unwrap();
        assert!(matches!(&args.command, Some(AgentsCommand::Accept(a)) if a.id == "w1" && !a.json));
        let args = parse(&["--server", "http://h:1", "forget", "w1", "--json", "--token-file", token_file()])
            .unwrap();
        assert_eq!(args.server.as_deref(), Some("http://h:1"));
        assert!(matches!(&args.command, Some(AgentsCommand::Forget(f)) if f.id == "w1" && f.json));
        assert!(parse(&["accept"]).is_err());
        assert!(parse(&["accept", "w1", "w2"]).is_err());
        assert!(parse(&["accept", "w1", "--online"]).is_err());
    }

    #[test]
    fn flags_after_the_subcommand_win() {
        let outer = OperatorFlags { server: Some("http://a:1".into()), json: true, ..Default::default() };
        let own = OperatorFlags { server: Some("http://b:2".into()), ..Default::default() };
        let merged = merge(own, outer);
        assert_eq!((merged.server.as_deref(), merged.json), (Some("http://b:2"), true));
    }

    #[test]
    fn filters_do_not_go_with_a_subcommand() {
        let args = parse(&["--pending", "accept", "w1", "--token-file", token_file()]).unwrap();
        assert_eq!(
            execute(args).unwrap_err().to_string(),
            "--label, --online and --pending filter the list; they do not go with accept, forget or show"
        );
    }

    #[test]
    fn bad_app_ids_are_refused_before_any_call() {
        let args =
            parse(&["forget", "../tasks", "--server", "http://127.0.0.1:9", "--token-file", token_file()])
                .unwrap();
        assert_eq!(
            execute(args).unwrap_err().to_string(),
            "app id \"../tasks\" may only hold letters, digits and . _ - : @"
        );
    }

    #[test]
    fn list_filters_pending_agents_and_prints_a_table() {
        let all = AgentList {
            agents: vec![
                agent("w1", "accepted", true),
                agent("w2", "pending", true),
                agent("w3", "pending", false),
            ],
            next: None,
        };
        let api = FakeApi::serve(vec![FakeApi::ok(&all), FakeApi::ok(&all)]);
        let printed =
            execute(parse(&["--pending", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap();
        assert_eq!(
            printed,
            Printed::out(
                "APP ID  STATUS   ONLINE  LAST SEEN             UPTIME  HOSTNAME  OS  KERNEL  ARCH  IPS  VERSION  LABELS\n\
                 w2      pending  yes     2024-05-01T10:00:00Z  -       -         -   -       -     -    -        -\n\
                 w3      pending  no      2024-05-01T10:00:00Z  -       -         -   -       -     -    -        -\n"
                    .into()
            )
        );
        let args =
            parse(&["--pending", "--online", "--json", "--server", &api.url, "--token-file", token_file()])
                .unwrap();
        let json: AgentList = serde_json::from_str(&execute(args).unwrap().stdout).unwrap();
        assert_eq!(json.agents, vec![agent("w2", "pending", true)]);
        let seen = api.seen();
        assert_eq!((seen[0].method.as_str(), seen[0].target.as_str()), ("GET", "/api/v1/agents"));
    }

    #[test]
    fn labels_and_online_go_to_the_server_and_are_applied_again_here() {
        let mut web = agent("w1", "accepted", true);
        web.labels = [("role".to_owned(), "web".to_owned()), ("env".to_owned(), "prod".to_owned())].into();
        let mut db = agent("w2", "accepted", true);
        db.labels = [("role".to_owned(), "db".to_owned())].into();
        // A server that predates the filters answers every agent.
        let all = AgentList { agents: vec![web.clone(), db, agent("w3", "accepted", false)], next: None };
        let api = FakeApi::serve(vec![FakeApi::ok(&all)]);
        let argv = [
            "--label",
            "role=web",
            "--label",
            "env=prod",
            "--online",
            "--json",
            "--server",
            &api.url,
            "--token-file",
            token_file(),
        ];
        let json: AgentList = serde_json::from_str(&execute(parse(&argv).unwrap()).unwrap().stdout).unwrap();
        assert_eq!(json.agents, vec![web]);
        assert_eq!(api.seen()[0].target, "/api/v1/agents?label=env%3Dprod&label=role%3Dweb&online=true");
        let bad = parse(&["--label", "role", "--server", &api.url, "--token-file", token_file()]).unwrap();
        assert_eq!(format!("{:#}", execute(bad).unwrap_err()), "--label: label \"role\" is not k=v");
    }

    #[test]
    fn no_match_is_said_on_stderr_instead_of_a_bare_header() {
        let none = AgentList { agents: vec![agent("w1", "accepted", true)], next: None };
        let api = FakeApi::serve(vec![
            FakeApi::ok(&none),
            FakeApi::ok(&AgentList { agents: Vec::new(), next: None }),
        ]);
        let argv = ["--label", "role=nothing", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(parse(&argv).unwrap()).unwrap();
        assert_eq!(printed, Printed { stdout: String::new(), stderr: "orange: no agents match\n".into() });
        let printed = execute(parse(&["--server", &api.url, "--token-file", token_file()]).unwrap()).unwrap();
        assert_eq!(printed.stderr, "orange: no agents\n");
    }

    #[test]
    fn accept_posts_to_the_agent_and_says_it_is_accepted() {
        let api = FakeApi::serve(vec![FakeApi::ok(&agent("w1", "accepted", false))]);
        let printed =
            execute(parse(&["accept", "w1", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap();
        assert_eq!(printed, Printed::out("agent w1: accepted\n".into()));
        let seen = api.seen();
        assert_eq!(
            (seen[0].method.as_str(), seen[0].target.as_str(), seen[0].body.as_str()),
            ("POST", "/api/v1/agents/w1/accept", "{}")
        );
    }

    #[test]
    fn forget_posts_to_the_agent_and_prints_it_as_json() {
        let forgotten = agent("db:1", "forgotten", false);
        let api = FakeApi::serve(vec![FakeApi::ok(&forgotten), FakeApi::ok(&forgotten)]);
        let argv = ["forget", "db:1", "--server", &api.url, "--token-file", token_file()];
        let printed = execute(parse(&argv).unwrap()).unwrap();
        assert_eq!(printed.stdout, "agent db:1: forgotten; it may enroll again with a new secret\n");
        let argv = ["--json", "forget", "db:1", "--server", &api.url, "--token-file", token_file()];
        let json: AgentView = serde_json::from_str(&execute(parse(&argv).unwrap()).unwrap().stdout).unwrap();
        assert_eq!(json, forgotten);
        let seen = api.seen();
        assert_eq!(
            (seen[1].method.as_str(), seen[1].target.as_str()),
            ("POST", "/api/v1/agents/db%3A1/forget")
        );
    }

    #[test]
    fn an_unknown_agent_names_the_call() {
        let api = FakeApi::serve(vec![FakeApi::error("404 Not Found", "unknown agent \"w9\"")]);
        let error =
            execute(parse(&["accept", "w9", "--server", &api.url, "--token-file", token_file()]).unwrap())
                .unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            format!("POST {}/api/v1/agents/w9/accept: unknown agent \"w9\" (HTTP 404)", api.url)
        );
    }
}
