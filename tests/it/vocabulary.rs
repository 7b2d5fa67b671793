//! One JSON vocabulary with real processes: single objects (`task get`, `job get`, `agents
//! show`) print their fields at the top level and keep the wrapper keys of earlier releases,
//! lists put their array under a plural name, times are RFC 3339; and README's field tables
//! ("JSON fields") are checked against every answer, so they cannot drift from the code.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::support::{Agent, AgentOpts, Run, Server, ServerOpts};

/// A server with agent `w1` (shell, label `role=web`), a finished task and a finished job.
struct Fleet {
    server: Server,
    _agent: Agent,
    task_id: String,
    job_id: String,
}

impl Fleet {
    fn start() -> Fleet {
        let server = Server::start(ServerOpts::default());
        let opts = AgentOpts { labels: vec!["role=web".into()], ..AgentOpts::shell() };
        let agent = Agent::start_online(&server, "w1", opts);
        let task =
            json_of(&server, &["task", "run", "--appid", "w1", "--env", "A=1", "--json", "--", "echo out"]);
        let task_id = task["task_id"].as_str().unwrap_or_else(|| panic!("no task_id: {task}")).to_owned();
        let job = json_of(&server, &["job", "run", "--appid", "w1", "--json", "--", "echo hi"]);
        let job_id = job["job_id"].as_str().unwrap_or_else(|| panic!("no job_id: {job}")).to_owned();
        Fleet { server, _agent: agent, task_id, job_id }
    }

    /// `orange ARGS` against the fleet's server, as JSON.
    fn json(&self, args: &[&str]) -> Value {
        json_of(&self.server, args)
    }

    /// `GET path` of the operator API, as JSON.
    fn api(&self, path: &str) -> Value {
        self.server.admin().get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }
}

/// `orange ARGS` against `server`; asserts it succeeded and returns its stdout as JSON.
fn json_of(server: &Server, args: &[&str]) -> Value {
    let run: Run = server.operator(args).run();
    run.assert_success();
    run.json()
}

/// `value` without the keys `extra`: what is left of a single-object view once what a command
/// adds beside its fields is taken away.
fn without(value: &Value, extra: &[&str]) -> Value {
    let mut object = value.as_object().cloned().unwrap_or_else(|| panic!("not an object: {value}"));
    for key in extra {
        object.remove(*key);
    }
    Value::Object(object)
}

fn assert_rfc3339(value: &Value, what: &str) {
    let text = value.as_str().unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    assert!(chrono::DateTime::parse_from_rfc3339(text).is_ok(), "{what} {text:?} is not RFC 3339");
}

#[test]
fn single_objects_print_their_fields_at_the_top_and_keep_the_old_names() {
    let fleet = Fleet::start();

    let task = fleet.json(&["task", "get", &fleet.task_id, "--json"]);
    assert_eq!(task, fleet.api(&format!("/api/v1/tasks/{}", fleet.task_id)), "task get is the API's task");
    assert_eq!(
        (task["status"].as_str(), task["env"]["A"].as_str()),
        (Some("succeeded"), Some("1")),
        "{task}"
    );
    assert_rfc3339(&task["history"][0]["at"], "a task's history time");

    let job = fleet.json(&["job", "get", &fleet.job_id, "--json"]);
    assert_eq!(job["job_id"].as_str(), Some(fleet.job_id.as_str()), "the job's fields at the top: {job}");
    assert_eq!(job["job"], without(&job, &["job", "results"]), "`job` (deprecated) is the same job");
    assert_eq!(
        without(&job, &["job", "results"])["counts"],
        fleet.api(&format!("/api/v1/jobs/{}", fleet.job_id))["counts"]
    );
    assert_eq!((&job["status"], &job["state"]), (&"finished".into(), &"finished".into()), "{job}");
    assert_eq!(
        (&job["results"][0]["status"], &job["results"][0]["state"]),
        (&"succeeded".into(), &"succeeded".into())
    );
    assert_rfc3339(&job["created_at"], "a job's created_at");

    let agent = fleet.json(&["agents", "show", "w1", "--json"]);
    assert_eq!((agent["app_id"].as_str(), agent["online"].as_bool()), (Some("w1"), Some(true)), "{agent}");
    assert_eq!(
        agent["agent"],
        without(&agent, &["agent", "open_tasks", "recent_tasks"]),
        "`agent` (deprecated)"
    );
    assert_eq!(
        agent["recent_tasks"].as_array().map(Vec::len),
        Some(2),
        "the task and the job's task: {agent}"
    );
    let boot = agent["facts"]["boot_time"].as_i64().unwrap_or_else(|| panic!("boot_time stays: {agent}"));
    let boot_at = agent["facts"]["boot_time_at"].as_str().unwrap_or_else(|| panic!("boot_time_at: {agent}"));
    let parsed = chrono::DateTime::parse_from_rfc3339(boot_at).unwrap_or_else(|e| panic!("{boot_at:?}: {e}"));
    assert_eq!(parsed.timestamp(), boot, "boot_time_at is boot_time");
    for time in ["last_seen", "registered_at"] {
        assert_rfc3339(&agent[time], time);
    }

    let agents = fleet.json(&["agents", "--json"]);
    assert_eq!(agents["agents"][0]["app_id"].as_str(), Some("w1"), "a list is its plural name: {agents}");
    let tasks = fleet.json(&["task", "list", "--json"]);
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "a list is its plural name: {tasks}");
    let jobs = fleet.json(&["job", "list", "--json"]);
    assert_eq!(jobs["jobs"][0]["job_id"].as_str(), Some(fleet.job_id.as_str()), "{jobs}");
}

/// One field of a README table: its type as written, and whether it may be absent.
#[derive(Debug)]
struct Field {
    ty: String,
    optional: bool,
}

/// One README table of fields, and the table whose fields it adds to.
#[derive(Debug, Default)]
struct Table {
    extends: Option<String>,
    fields: BTreeMap<String, Field>,
}

/// README's field tables, by name, and which ones a check used.
struct Vocabulary {
    tables: BTreeMap<String, Table>,
    used: RefCell<BTreeSet<String>>,
}

impl Vocabulary {
    /// Reads every `<!-- fields: NAME [extends BASE] -->` table of README.md.
    fn from_readme() -> Vocabulary {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut tables = BTreeMap::new();
        let mut current: Option<(String, Table)> = None;
        for line in text.lines() {
            if let Some(head) = line.strip_prefix("<!-- fields: ").and_then(|l| l.strip_suffix(" -->")) {
                let (name, extends) = match head.split_once(" extends ") {
                    Some((name, base)) => (name, Some(base.to_owned())),
                    None => (head, None),
                };
                current = Some((name.to_owned(), Table { extends, ..Table::default() }));
            } else if let Some((name, table)) = current.as_mut() {
                if line.starts_with('|') {
                    read_row(line, table);
                } else if !table.fields.is_empty() {
                    let (name, table) = (name.clone(), std::mem::take(table));
                    tables.insert(name, table);
                    current = None;
                }
            }
        }
        assert!(current.is_none(), "README ends inside a field table");
        Vocabulary { tables, used: RefCell::new(BTreeSet::new()) }
    }

    /// Every field of table `name`, those of the table it extends included.
    fn fields(&self, name: &str) -> BTreeMap<&str, &Field> {
        let table = self.tables.get(name).unwrap_or_else(|| panic!("README has no field table {name:?}"));
        let mut fields = table.extends.as_deref().map(|base| self.fields(base)).unwrap_or_default();
        fields.extend(table.fields.iter().map(|(k, v)| (k.as_str(), v)));
        fields
    }

    /// Checks that `value` is an object with exactly the fields of table `name`: none missing
    /// (unless optional), none unlisted, each of its type. `at` says where, for messages.
    fn check(&self, name: &str, value: &Value, at: &str) {
        self.used.borrow_mut().insert(name.to_owned());
        let object: &Map<String, Value> =
            value.as_object().unwrap_or_else(|| panic!("{at} is not an object: {value}"));
        let fields = self.fields(name);
        for key in object.keys() {
            assert!(
                fields.contains_key(key.as_str()),
                "{at}.{key} is not in README's {name:?} table: {value}"
            );
        }
        for (key, field) in &fields {
            match object.get(*key) {
                Some(v) => self.check_type(&field.ty, v, &format!("{at}.{key}")),
                None => assert!(
                    field.optional,
                    "{at} lacks {key:?}, which README's {name:?} table lists: {value}"
                ),
            }
        }
    }

    /// Checks `value` against a README type: `string`, `time`, `integer`, `boolean`, `object`,
    /// `array of strings`, `array of TABLE`, `TABLE`, each possibly `... or null`.
    fn check_type(&self, ty: &str, value: &Value, at: &str) {
        let ty = match ty.strip_suffix(" or null") {
            Some(_) if value.is_null() => return,
            Some(base) => base,
            None => ty,
        };
        let fits = match ty {
            "string" => value.is_string(),
            "time" => value.as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array of strings" => value.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            _ => {
                if let Some(element) = ty.strip_prefix("array of ") {
                    let items = value.as_array().unwrap_or_else(|| panic!("{at} is not an array: {value}"));
                    items
                        .iter()
                        .enumerate()
                        .for_each(|(i, item)| self.check(element, item, &format!("{at}[{i}]")));
                } else {
                    self.check(ty, value, at);
                }
                true
            }
        };
        assert!(fits, "{at} is not a {ty}: {value}");
    }
}

/// Adds the field of one table row (`` | `name`? | type | meaning | ``) to `table`; skips the
/// header and the rule.
fn read_row(line: &str, table: &mut Table) {
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    let (Some(field), Some(ty)) = (cells.get(1), cells.get(2)) else { panic!("bad README row {line:?}") };
    if *field == "field" || field.starts_with("---") {
        return;
    }
    let optional = field.ends_with('?');
    let name = field.trim_end_matches('?').trim_matches('`');
    assert!(!name.is_empty() && !name.contains(' '), "bad field name in README row {line:?}");
    let ty = ty.replace('*', "");
    table.fields.insert(name.to_owned(), Field { ty, optional });
}

#[test]
fn every_json_answer_has_exactly_the_fields_the_readme_lists() {
    let fleet = Fleet::start();
    let vocabulary = Vocabulary::from_readme();
    let (task, job) = (fleet.task_id.as_str(), fleet.job_id.as_str());
    let created = fleet.json(&["token", "create", "--ttl", "1h", "--json"]);
    vocabulary.check("token", &created, "token create");
    assert_eq!(created["status"], "active", "{created}");

    let cases: [(&str, Value, &str); 13] = [
        ("task", fleet.json(&["task", "get", task, "--json"]), "task get"),
        ("task list", fleet.json(&["task", "list", "--json"]), "task list"),
        ("job report", fleet.json(&["job", "get", job, "--json"]), "job get"),
        ("job", fleet.api(&format!("/api/v1/jobs/{job}")), "GET job"),
        ("job list", fleet.json(&["job", "list", "--json"]), "job list"),
        ("job results", fleet.api(&format!("/api/v1/jobs/{job}/results")), "GET results"),
        ("job groups", fleet.api(&format!("/api/v1/jobs/{job}/groups")), "GET groups"),
        ("agent detail", fleet.json(&["agents", "show", "w1", "--json"]), "agents show"),
        ("agent", fleet.api("/api/v1/agents/w1"), "GET agent"),
        ("agent list", fleet.json(&["agents", "--json"]), "agents"),
        ("audit list", fleet.json(&["audit", "--kind", "all", "--json"]), "audit"),
        ("token list", fleet.json(&["token", "list", "--json"]), "token list"),
        (
            "token",
            fleet.json(&["token", "revoke", created["token_id"].as_str().unwrap_or(""), "--json"]),
            "revoke",
        ),
    ];
    for (table, value, what) in &cases {
        vocabulary.check(table, value, what);
    }
    let logs = fleet.server.operator(&["task", "logs", task, "--json"]).run();
    logs.assert_success();
    for line in logs.stdout.lines() {
        let chunk: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        vocabulary.check("output chunk", &chunk, "task logs");
    }

    let unused: Vec<&String> =
        vocabulary.tables.keys().filter(|name| !vocabulary.used.borrow().contains(*name)).collect();
    assert!(unused.is_empty(), "README field tables no answer was checked against: {unused:?}");
    assert!(
        vocabulary.tables.len() >= 19,
        "README's tables were not all found: {:?}",
        vocabulary.tables.keys()
    );
}
