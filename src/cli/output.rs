//! What the operator commands print: aligned tables of agents, tasks, enrollment tokens and audit
//! entries, the detail block of one task, the one-line answers of a cancel, an accept, a forget
//! or a revoke, notes about output, and JSON. Builders return strings (or a [`Printed`]) so tests
//! compare them exactly; [`emit`], [`print_json`] and [`Printed::emit`] write them out, results on
//! stdout and notes on stderr.

use std::io::Write;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::protocol::TaskStatus;
use crate::protocol::admin::{AgentView, AuditEntry, OutputChunkView, TaskView, TokenView};
use crate::protocol::facts::HostFacts;

/// Placeholder for a value that is absent.
const NONE: &str = "-";
/// Space between table columns.
const GAP: &str = "  ";

/// Writes a note line on stderr. A closed or broken stderr loses the note instead of
/// stopping orange (`eprintln!` panics then), so a command still finishes what it owes its task.
pub fn note(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Writes `text` to stdout as is.
pub fn emit(text: &str) -> Result<()> {
    emit_bytes(text.as_bytes())
}

/// Writes `bytes` to stdout as they are (output the hosts wrote need not be text).
pub fn emit_bytes(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes).and_then(|()| stdout.flush()).context("cannot write to stdout")
}

/// Writes `value` to stdout as pretty JSON and a newline.
pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    emit(&json_text(value)?)
}

/// `value` as pretty JSON and a newline, as [`print_json`] writes it.
pub fn json_text<T: Serialize>(value: &T) -> Result<String> {
    let mut text = serde_json::to_string_pretty(value).context("cannot encode the output as JSON")?;
    text.push('\n');
    Ok(text)
}

/// What a command prints, built first so tests can compare it: results for stdout and notes
/// for stderr.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Printed {
    /// Results, for stdout.
    pub stdout: String,
    /// Notes, for stderr.
    pub stderr: String,
}

impl Printed {
    /// Results only.
    pub fn out(stdout: String) -> Self {
        Printed { stdout, stderr: String::new() }
    }

    /// `value` as JSON when `json`, else `text`, for stdout.
    pub fn json_or<T: Serialize>(json: bool, value: &T, text: impl FnOnce(&T) -> String) -> Result<Self> {
        Ok(Printed::out(if json { json_text(value)? } else { text(value) }))
    }

    /// Writes the results to stdout, then the notes to stderr.
    pub fn emit(&self) -> Result<()> {
        emit(&self.stdout)?;
        let mut stderr = std::io::stderr().lock();
        stderr
            .write_all(self.stderr.as_bytes())
            .and_then(|()| stderr.flush())
            .context("cannot write to stderr")
    }
}

/// One output chunk as a JSON line (`{"seq":N,"stream":"stdout","data":"..."}` and a newline).
pub fn chunk_json_line(chunk: &OutputChunkView) -> Result<String> {
    let mut line = serde_json::to_string(chunk).context("cannot encode an output chunk as JSON")?;
    line.push('\n');
    Ok(line)
}

/// The stderr note of a task whose output exceeded the server's cap.
pub fn dropped_note(dropped_bytes: u64) -> String {
    format!("orange: {dropped_bytes} bytes of output were dropped from the middle (output cap)\n")
}

/// The `orange task cancel` line: where the task stands after the cancel. `already` says the
/// task had been cancelled before this request.
pub fn cancel_line(task: &TaskView, already: bool) -> String {
    let id = &task.task_id;
    match (task.status, already) {
        (TaskStatus::Cancelled, true) => format!("task {id}: already cancelled\n"),
        (status, _) if status.is_final() => format!("task {id}: {status}\n"),
        _ if task.cancel_requested => format!("task {id}: cancel requested; its agent will stop it\n"),
        (status, _) => format!("task {id}: {status}\n"),
    }
}

/// Shortens an RFC 3339 time to whole seconds in UTC (`2024-05-01T10:00:00Z`); text that does
/// not parse is shown as given.
pub fn short_time(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(time) => time.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Secs, true),
        Err(_) => rfc3339.to_owned(),
    }
}

/// The `orange agents` table: status, host facts (uptime only while online), labels.
pub fn agents_table(agents: &[AgentView]) -> String {
    let rows = agents.iter().map(|agent| {
        let facts = agent.facts.as_ref().map(|f| &f.facts);
        let fact = |get: fn(&HostFacts) -> Option<&String>| {
            facts.and_then(get).map_or(NONE, |v| v.as_str()).to_owned()
        };
        vec![
            agent.app_id.clone(),
            agent.status.clone(),
            if agent.online { "yes" } else { "no" }.to_owned(),
            short_time(&agent.last_seen),
            agent
                .facts
                .as_ref()
                .and_then(|f| f.uptime_secs)
                .filter(|_| agent.online)
                .map_or_else(|| NONE.to_owned(), uptime),
            agent.hostname.clone().unwrap_or_else(|| NONE.to_owned()),
            facts.map_or_else(|| NONE.to_owned(), os),
            fact(|f| f.kernel.as_ref()),
            fact(|f| f.arch.as_ref()),
            facts.map_or_else(|| NONE.to_owned(), |f| ips(&f.ips)),
            agent.version.clone().unwrap_or_else(|| NONE.to_owned()),
            labels(agent),
        ]
    });
    let head = [
        "APP ID",
        "STATUS",
        "ONLINE",
        "LAST SEEN",
        "UPTIME",
        "HOSTNAME",
        "OS",
        "KERNEL",
        "ARCH",
        "IPS",
        "VERSION",
        "LABELS",
    ];
    table(&head, rows.collect())
}

/// OS name and version, e.g. `Debian GNU/Linux 12`.
fn os(facts: &HostFacts) -> String {
    let parts: Vec<&str> =
        [&facts.os_name, &facts.os_version].into_iter().flatten().map(String::as_str).collect();
    if parts.is_empty() { NONE.to_owned() } else { parts.join(" ") }
}

/// At most two addresses, then how many more.
fn ips(ips: &[String]) -> String {
    match ips {
        [] => NONE.to_owned(),
        [one] => one.clone(),
        [a, b] => format!("{a},{b}"),
        [a, b, rest @ ..] => format!("{a},{b},+{}", rest.len()),
    }
}

/// Seconds as the two largest units: `3d4h`, `5h12m`, `7m3s`, `42s`.
pub fn uptime(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m{seconds}s"),
        (0, _, _) => format!("{hours}h{minutes}m"),
        _ => format!("{days}d{hours}h"),
    }
}

/// The one line of `orange agents accept` and `forget`: where the agent stands now.
pub fn agent_status_line(agent: &AgentView) -> String {
    let id = &agent.app_id;
    match agent.status.as_str() {
        "forgotten" => format!("agent {id}: forgotten; it may enroll again with a new secret\n"),
        status => format!("agent {id}: {status}\n"),
    }
}

fn labels(agent: &AgentView) -> String {
    if agent.labels.is_empty() {
        return NONE.to_owned();
    }
    agent.labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>().join(",")
}

/// The `orange agents show` block: aligned `key: value` lines of the agent, then its open tasks
/// and its latest tasks as tables (`none` when there are none).
pub fn agent_detail(agent: &AgentView, open: &[TaskView], recent: &[TaskView]) -> String {
    let pairs = agent_pairs(agent);
    let width = pairs.iter().map(|(key, _)| key.len() + 1).max().unwrap_or(0);
    let mut text: String =
        pairs.iter().map(|(key, value)| format!("{:<width$} {value}\n", format!("{key}:"))).collect();
    for (title, tasks) in [("open tasks (queued, delivered, running)", open), ("last 10 tasks", recent)] {
        text.push_str(&format!("\n{title}:\n"));
        text.push_str(&if tasks.is_empty() { "none\n".to_owned() } else { tasks_table(tasks) });
    }
    text
}

/// The `key: value` lines of `orange agents show`.
fn agent_pairs(agent: &AgentView) -> Vec<(&'static str, String)> {
    let facts = agent.facts.as_ref();
    let fact = |get: fn(&HostFacts) -> Option<&String>| {
        facts.and_then(|f| get(&f.facts)).map_or(NONE, |v| v.as_str()).to_owned()
    };
    let or_none = |value: &Option<String>| value.clone().unwrap_or_else(|| NONE.to_owned());
    let joined = |items: &[String]| if items.is_empty() { NONE.to_owned() } else { items.join(", ") };
    vec![
        ("agent", agent.app_id.clone()),
        ("status", agent.status.clone()),
        ("online", if agent.online { "yes" } else { "no" }.to_owned()),
        ("last seen", short_time(&agent.last_seen)),
        ("registered", short_time(&agent.registered_at)),
        ("hostname", or_none(&agent.hostname)),
        ("version", or_none(&agent.version)),
        ("os", facts.map_or_else(|| NONE.to_owned(), |f| os(&f.facts))),
        ("kernel", fact(|f| f.kernel.as_ref())),
        ("arch", fact(|f| f.arch.as_ref())),
        ("ips", joined(facts.map_or(&[][..], |f| &f.facts.ips))),
        (
            "uptime",
            facts
                .and_then(|f| f.uptime_secs)
                .filter(|_| agent.online)
                .map_or_else(|| NONE.to_owned(), uptime),
        ),
        ("features", joined(&agent.features)),
        ("labels", labels(agent)),
        ("tasks done", agent.processed_task_count.to_string()),
    ]
}

/// The `orange task list` table.
pub fn tasks_table(tasks: &[TaskView]) -> String {
    let rows = tasks.iter().map(|task| {
        vec![
            task.task_id.clone(),
            task.app_id.clone(),
            task.task_type.clone(),
            task.status.to_string(),
            task.exit_code.map_or_else(|| NONE.to_owned(), |code| code.to_string()),
            task.reached(TaskStatus::Queued).map_or_else(|| NONE.to_owned(), short_time),
            command_cell(&task.payload),
        ]
    });
    table(&["TASK ID", "AGENT", "TYPE", "STATUS", "EXIT", "CREATED", "COMMAND"], rows.collect())
}

/// Widest COMMAND cell of a task table, in characters.
pub const COMMAND_WIDTH: usize = 40;

/// A task's payload as the COMMAND column shows it: its first non-blank line, control
/// characters as spaces, cut to [`COMMAND_WIDTH`] characters with `…`, and `…` after it when
/// more lines follow; `-` when empty.
pub fn command_cell(payload: &str) -> String {
    let mut lines = payload.lines().map(str::trim).skip_while(|line| line.is_empty());
    let Some(first) = lines.next() else { return NONE.to_owned() };
    let more = lines.any(|line| !line.is_empty());
    let clean: String = first.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.chars().count() > COMMAND_WIDTH {
        let mut cut: String = clean.chars().take(COMMAND_WIDTH - 1).collect();
        cut.push('…');
        return cut;
    }
    if more { format!("{clean} …") } else { clean }
}

/// Whether an enrollment token still works at `now`: `revoked`, `used up`, `expired` or `active`
/// (the first that applies). An expiry that does not parse counts as expired.
pub fn token_state(token: &TokenView, now: DateTime<Utc>) -> &'static str {
    match token.status_at(now.timestamp_millis()) {
        "used_up" => "used up",
        status => status,
    }
}

/// The `orange token list` table, states as of `now`.
pub fn tokens_table(tokens: &[TokenView], now: DateTime<Utc>) -> String {
    let rows = tokens.iter().map(|token| {
        vec![
            token.token_id.clone(),
            short_time(&token.expires_at),
            token.uses_left.to_string(),
            token_state(token, now).to_owned(),
        ]
    });
    table(&["TOKEN ID", "EXPIRES", "USES LEFT", "STATE"], rows.collect())
}

/// The stderr note after `orange token create`: how to hand the token out, and its limits.
pub fn token_created_note(token: &TokenView) -> String {
    let uses = match token.uses_left {
        1 => "1 use".to_owned(),
        n => format!("{n} uses"),
    };
    format!(
        "orange: give it to agents as ORANGE_ENROLL_TOKEN or --enroll-token-file; it is shown only once; \
         expires {}; {uses}\n",
        short_time(&token.expires_at)
    )
}

/// The one line of `orange token revoke`.
pub fn token_revoked_line(token: &TokenView) -> String {
    let state = if token.revoked { "revoked" } else { "not revoked" };
    format!("token {}: {state}\n", token.token_id)
}

/// The `orange audit` table, in the order given (the server sends newest first). When the page
/// holds agent-made entries, each of which stands for several events, it shows their LAST time
/// and COUNT too (`-` for an operator action).
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let counted = entries.iter().any(|entry| entry.last.is_some());
    let rows = entries.iter().map(|entry| {
        let mut row = vec![
            short_time(&entry.at),
            one_line(&entry.actor),
            one_line(&entry.action),
            one_line(&entry.target),
            one_line(&entry.detail),
        ];
        if counted {
            let count = entry.last.as_ref().map_or(NONE.to_owned(), |_| entry.count.to_string());
            row.insert(3, count);
            row.insert(1, entry.last.as_deref().map_or(NONE.to_owned(), short_time));
        }
        row
    });
    let header: &[&str] = if counted {
        &["TIME", "LAST", "ACTOR", "ACTION", "COUNT", "TARGET", "DETAIL"]
    } else {
        &["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]
    };
    table(header, rows.collect())
}

/// A table cell: control characters (a newline, a terminal escape) become spaces, an empty
/// value is marked, so each entry stays one line and the terminal shows plain text.
fn one_line(text: &str) -> String {
    if text.is_empty() {
        return NONE.to_owned();
    }
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Lays out a header and rows in columns padded to their widest cell, without trailing spaces.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let header: Vec<String> = header.iter().map(|title| title.to_string()).collect();
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header).chain(&rows).map(|row| table_line(row, &widths)).collect()
}

fn table_line(cells: &[String], widths: &[usize]) -> String {
    let padded: Vec<String> =
        cells.iter().zip(widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
    let mut line = padded.join(GAP).trim_end().to_owned();
    line.push('\n');
    line
}

/// The `orange task get` block: aligned `key: value` lines, then the captured output.
pub fn task_detail(task: &TaskView) -> String {
    let pairs = detail_pairs(task);
    let width = pairs.iter().map(|(key, _)| key.chars().count() + 1).max().unwrap_or(0);
    let mut text: String = pairs
        .iter()
        .map(|(key, value)| format!("{:<width$} {value}", format!("{key}:")).trim_end().to_owned() + "\n")
        .collect();
    text.push_str(&output_section(task, "stdout", task.stdout_bytes()));
    text.push_str(&output_section(task, "stderr", task.stderr_bytes()));
    if !task.result.is_empty() {
        text.push_str(&section("result", &task.result));
    }
    text
}

/// The `key: value` lines of a task, history in the order it happened.
fn detail_pairs(task: &TaskView) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("task".to_owned(), task.task_id.clone()),
        ("status".to_owned(), status_text(task)),
        ("agent".to_owned(), task.app_id.clone()),
        ("type".to_owned(), task.task_type.clone()),
        ("payload".to_owned(), task.payload.clone()),
        ("timeout".to_owned(), format!("{}s", task.timeout_secs)),
    ];
    if let Some(cwd) = &task.cwd {
        pairs.push(("cwd".to_owned(), cwd.clone()));
    }
    if let Some(user) = &task.user {
        pairs.push(("user".to_owned(), user.clone()));
    }
    pairs.extend(task.env.iter().map(|(name, value)| ("env".to_owned(), format!("{name}={value}"))));
    pairs.extend(task.history.iter().map(|step| (step.status.to_string(), step.at.clone())));
    pairs.push(("exit code".to_owned(), task.exit_code.map_or_else(|| NONE.to_owned(), |c| c.to_string())));
    pairs.push(("duration".to_owned(), task.duration_ms.map_or_else(|| NONE.to_owned(), seconds)));
    if task.dropped_bytes > 0 {
        let note = format!("{} bytes of output from the middle (output cap)", task.dropped_bytes);
        pairs.push(("dropped".to_owned(), note));
    }
    if let Some(error) = &task.error {
        pairs.push(("error".to_owned(), error.clone()));
    }
    pairs
}

/// The status, marked while a cancel waits for the agent to confirm.
fn status_text(task: &TaskView) -> String {
    if task.cancel_requested {
        return format!("{} (cancel requested)", task.status);
    }
    task.status.to_string()
}

/// Milliseconds as seconds with three decimals (`1.250s`).
fn seconds(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

/// The section of one output stream: its text, or a note where it is not text (a terminal
/// would garble it; `task logs` writes the bytes).
fn output_section(task: &TaskView, name: &str, bytes: Result<Vec<u8>, String>) -> String {
    match bytes.map(String::from_utf8) {
        Ok(Ok(text)) => section(name, &text),
        Ok(Err(binary)) => {
            let len = binary.as_bytes().len();
            let note =
                format!("({len} bytes, not UTF-8 text: `orange task logs {}` writes them)", task.task_id);
            section(name, &note)
        }
        Err(e) => section(name, &format!("(not shown: {e})")),
    }
}

/// A `--- name ---` section holding `text`, ending in a newline; `(empty)` when there is none.
fn section(name: &str, text: &str) -> String {
    let body = if text.is_empty() { "(empty)" } else { text };
    let newline = if body.ends_with('\n') { "" } else { "\n" };
    format!("--- {name} ---\n{body}{newline}")
}

#[cfg(test)]
pub(super) mod tests {
    use crate::protocol::admin::Transition;

    use super::*;
    use crate::protocol::TaskStatus;

    /// A finished shell task with known values, for output tests here and in `task`.
    pub(crate) fn sample_task(
        id: &str,
        app_id: &str,
        status: TaskStatus,
        exit_code: Option<i32>,
    ) -> TaskView {
        let step = |status, at: &str| Transition { status, at: at.to_owned() };
        let history = vec![
            step(TaskStatus::Queued, "2024-05-01T10:00:00.123456Z"),
            step(TaskStatus::Delivered, "2024-05-01T10:00:01Z"),
            step(TaskStatus::Running, "2024-05-01T12:00:01.5+02:00"),
            step(status, "2024-05-01T10:00:03Z"),
        ];
        TaskView {
            task_id: id.into(),
            app_id: app_id.into(),
            task_type: "shell".into(),
            payload: "uptime".into(),
            status,
            timeout_secs: 600,
            secret_env: Vec::new(),
            env: Default::default(),
            cwd: None,
            user: None,
            cancel_requested: false,
            dropped_bytes: 0,
            history,
            exit_code,
            stdout: "up 3 days\n".into(),
            stdout_encoding: None,
            stderr: String::new(),
            stderr_encoding: None,
            result: String::new(),
            error: None,
            duration_ms: Some(1250),
        }
    }

    fn agent(app_id: &str, online: bool, version: Option<&str>, labels: &[(&str, &str)]) -> AgentView {
        AgentView {
            app_id: app_id.into(),
            online,
            last_seen: "2024-05-01T10:00:00.5+02:00".into(),
            registered_at: "2024-04-01T00:00:00Z".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            version: version.map(str::to_owned),
            hostname: Some(format!("{app_id}.example.net")),
            processed_task_count: 3,
            status: if online { "accepted" } else { "pending" }.into(),
            facts: None,
            features: Vec::new(),
            approved_labels: Default::default(),
        }
    }

    #[test]
    fn agent_detail_shows_the_agent_then_its_tasks() {
        let mut web = agent("web-1", true, Some("0.1.0"), &[("role", "web")]);
        web.features = vec!["cwd".into(), "env".into()];
        let open = [sample_task("0190a1b2-0000-7000-8000-000000000002", "web-1", TaskStatus::Queued, None)];
        let text = agent_detail(&web, &open, &[]);
        assert_eq!(
            text,
            "agent:      web-1\n\
             status:     accepted\n\
             online:     yes\n\
             last seen:  2024-05-01T08:00:00Z\n\
             registered: 2024-04-01T00:00:00Z\n\
             hostname:   web-1.example.net\n\
             version:    0.1.0\n\
             os:         -\n\
             kernel:     -\n\
             arch:       -\n\
             ips:        -\n\
             uptime:     -\n\
             features:   cwd, env\n\
             labels:     role=web\n\
             tasks done: 3\n\
             \n\
             open tasks (queued, delivered, running):\n\
             TASK ID                               AGENT  TYPE   STATUS  EXIT  CREATED               COMMAND\n\
             0190a1b2-0000-7000-8000-000000000002  web-1  shell  queued  -     2024-05-01T10:00:00Z  uptime\n\
             \n\
             last 10 tasks:\n\
             none\n"
        );
    }

    #[test]
    fn agents_table_aligns_columns() {
        let agents = [
            agent("db-1", false, None, &[]),
            agent("web-long-name", true, Some("0.1.0"), &[("env", "prod"), ("role", "web")]),
        ];
        assert_eq!(
            agents_table(&agents),
            "APP ID         STATUS    ONLINE  LAST SEEN             UPTIME  HOSTNAME                   OS  KERNEL  ARCH  IPS  VERSION  LABELS\n\
             db-1           pending   no      2024-05-01T08:00:00Z  -       db-1.example.net           -   -       -     -    -        -\n\
             web-long-name  accepted  yes     2024-05-01T08:00:00Z  -       web-long-name.example.net  -   -       -     -    0.1.0    env=prod,role=web\n"
        );
    }

    #[test]
    fn agents_table_shows_the_facts() {
        let mut web = agent("web-1", true, Some("0.1.0"), &[("role", "web")]);
        let facts = HostFacts {
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            kernel: Some("6.1.0".into()),
            arch: Some("x86_64".into()),
            ips: vec!["10.0.0.5".into(), "10.0.1.5".into(), "fe80::1".into()],
            ..HostFacts::default()
        };
        web.facts = Some(crate::protocol::facts::FactsView {
            facts,
            boot_time_at: None,
            uptime_secs: Some(3 * 86_400 + 4 * 3600 + 5),
            updated_at: "t".into(),
        });
        let mut gone = web.clone();
        gone.app_id = "web-2".into();
        gone.online = false;
        assert_eq!(
            agents_table(&[web, gone]),
            "APP ID  STATUS    ONLINE  LAST SEEN             UPTIME  HOSTNAME           OS                   KERNEL  ARCH    IPS                   VERSION  LABELS\n\
             web-1   accepted  yes     2024-05-01T08:00:00Z  3d4h    web-1.example.net  Debian GNU/Linux 12  6.1.0   x86_64  10.0.0.5,10.0.1.5,+1  0.1.0    role=web\n\
             web-2   accepted  no      2024-05-01T08:00:00Z  -       web-1.example.net  Debian GNU/Linux 12  6.1.0   x86_64  10.0.0.5,10.0.1.5,+1  0.1.0    role=web\n"
        );
        assert_eq!(
            [uptime(42), uptime(423), uptime(3 * 3600 + 120), uptime(86_400)],
            ["42s", "7m3s", "3h2m", "1d0h"]
        );
    }

    #[test]
    fn agent_status_lines_say_what_follows() {
        let mut w1 = agent("w1", true, None, &[]);
        assert_eq!(agent_status_line(&w1), "agent w1: accepted\n");
        w1.status = "forgotten".into();
        assert_eq!(agent_status_line(&w1), "agent w1: forgotten; it may enroll again with a new secret\n");
        w1.status = "pending".into();
        assert_eq!(agent_status_line(&w1), "agent w1: pending\n");
    }

    fn token(id: &str, expires_at: &str, uses_left: u32, revoked: bool) -> TokenView {
        TokenView {
            token_id: id.into(),
            token: None,
            created_at: "2024-05-01T00:00:00Z".into(),
            expires_at: expires_at.into(),
            uses_left,
            revoked,
            status: String::new(),
        }
    }

    #[test]
    fn token_states_follow_revoke_then_uses_then_expiry() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let later = "2024-05-01T10:00:00.001Z";
        assert_eq!(token_state(&token("a", later, 1, false), now), "active");
        assert_eq!(token_state(&token("a", "2024-05-01T10:00:00Z", 1, false), now), "expired");
        assert_eq!(token_state(&token("a", "garbage", 1, false), now), "expired");
        assert_eq!(token_state(&token("a", "2024-05-01T09:00:00Z", 0, false), now), "used up");
        assert_eq!(token_state(&token("a", "2024-05-01T09:00:00Z", 0, true), now), "revoked");
    }

    #[test]
    fn tokens_table_aligns_columns() {
        let now = DateTime::parse_from_rfc3339("2024-05-01T10:00:00Z").unwrap().with_timezone(&Utc);
        let tokens = [
            token("3f9a0c1d2e4b5a69", "2024-05-02T10:00:00.000Z", 12, false),
            token("77", "2024-05-01T12:00:00+02:00", 1, false),
        ];
        assert_eq!(
            tokens_table(&tokens, now),
            "TOKEN ID          EXPIRES               USES LEFT  STATE\n\
             3f9a0c1d2e4b5a69  2024-05-02T10:00:00Z  12         active\n\
             77                2024-05-01T10:00:00Z  1          expired\n"
        );
        assert_eq!(tokens_table(&[], now), "TOKEN ID  EXPIRES  USES LEFT  STATE\n");
    }

    #[test]
    fn the_token_note_counts_uses() {
        let mut one = token("a", "2024-05-02T10:00:00.000Z", 1, false);
        assert_eq!(
            token_created_note(&one),
            "orange: give it to agents as ORANGE_ENROLL_TOKEN or --enroll-token-file; it is shown only once; \
             expires 2024-05-02T10:00:00Z; 1 use\n"
        );
        one.uses_left = 2;
        assert!(token_created_note(&one).ends_with("; 2 uses\n"));
        one.revoked = true;
        assert_eq!(token_revoked_line(&one), "token a: revoked\n");
    }

    #[test]
    fn audit_table_keeps_each_entry_on_one_line() {
        let entries = [
            AuditEntry {
                at: "2024-05-01T10:00:00.123Z".into(),
                actor: "admin@::1".into(),
                action: "task.send".into(),
                target: "2 tasks, first 0190a1b2".into(),
                detail: "type shell,\npayload\u{1b}[31m 6 bytes".into(),
                count: 1,
                last: None,
            },
            AuditEntry {
                at: "2024-05-01T09:59:59Z".into(),
                actor: "agent:w1".into(),
                action: "agent.enroll".into(),
                target: "w1".into(),
                detail: String::new(),
                count: 1,
                last: None,
            },
        ];
        assert_eq!(
            audit_table(&entries),
            "TIME                  ACTOR      ACTION        TARGET                   DETAIL\n\
             2024-05-01T10:00:00Z  admin@::1  task.send     2 tasks, first 0190a1b2  type shell, payload [31m 6 bytes\n\
             2024-05-01T09:59:59Z  agent:w1   agent.enroll  w1                       -\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        assert_eq!(tasks_table(&[]), "TASK ID  AGENT  TYPE  STATUS  EXIT  CREATED  COMMAND\n");
    }

    #[test]
    fn tasks_table_aligns_columns() {
        let tasks = [
            sample_task("0190a1b2-0000-7000-8000-000000000002", "web-1", TaskStatus::Succeeded, Some(0)),
            sample_task("0190a1b2-0000-7000-8000-000000000001", "db-10", TaskStatus::Lost, None),
        ];
        assert_eq!(
            tasks_table(&tasks),
            "TASK ID                               AGENT  TYPE   STATUS     EXIT  CREATED               COMMAND\n\
             0190a1b2-0000-7000-8000-000000000002  web-1  shell  succeeded  0     2024-05-01T10:00:00Z  uptime\n\
             0190a1b2-0000-7000-8000-000000000001  db-10  shell  lost       -     2024-05-01T10:00:00Z  uptime\n"
        );
    }

    #[test]
    fn the_command_cell_is_the_first_line_cut_to_fit() {
        assert_eq!(command_cell("uptime"), "uptime");
        assert_eq!(command_cell(""), "-");
        assert_eq!(command_cell("\n  \n"), "-");
        assert_eq!(command_cell("\n  echo a\necho b\n"), "echo a …");
        assert_eq!(command_cell("printf 'a\tb'"), "printf 'a b'");
        let long = "x".repeat(COMMAND_WIDTH + 5);
        let cell = command_cell(&long);
        assert_eq!((cell.chars().count(), cell.ends_with('…')), (COMMAND_WIDTH, true));
        assert_eq!(command_cell(&"é".repeat(COMMAND_WIDTH)), "é".repeat(COMMAND_WIDTH));
    }

    #[test]
    fn task_detail_lists_history_in_time_order_then_output() {
        let mut task = sample_task("t-1", "web-1", TaskStatus::Failed, Some(2));
        task.stderr = "no such file".into();
        task.error = Some("exit status 2".into());
        assert_eq!(
            task_detail(&task),
            "task:      t-1\n\
             status:    failed\n\
             agent:     web-1\n\
             type:      shell\n\
             payload:   uptime\n\
             timeout:   600s\n\
             queued:    2024-05-01T10:00:00.123456Z\n\
             delivered: 2024-05-01T10:00:01Z\n\
             running:   2024-05-01T12:00:01.5+02:00\n\
             failed:    2024-05-01T10:00:03Z\n\
             exit code: 2\n\
             duration:  1.250s\n\
             error:     exit status 2\n\
             --- stdout ---\n\
             up 3 days\n\
             --- stderr ---\n\
             no such file\n"
        );
    }

    #[test]
    fn task_detail_shows_the_working_directory_and_each_variable() {
        let mut task = sample_task("t-3", "web-1", TaskStatus::Succeeded, Some(0));
        task.cwd = Some("/srv/app".into());
        task.env = [("A".to_owned(), "b".to_owned()), ("B".to_owned(), "x y".to_owned())].into();
        let text = task_detail(&task);
        assert!(
            text.contains("timeout:   600s\ncwd:       /srv/app\nenv:       A=b\nenv:       B=x y\n"),
            "{text}"
        );
    }

    #[test]
    fn empty_output_and_missing_values_are_marked() {
        let mut task = sample_task("t-2", "web-1", TaskStatus::Expired, None);
        task.stdout.clear();
        task.duration_ms = None;
        task.result = "legacy text".into();
        let text = task_detail(&task);
        assert!(text.contains("exit code: -\nduration:  -\n"), "{text}");
        assert!(
            text.ends_with("--- stdout ---\n(empty)\n--- stderr ---\n(empty)\n--- result ---\nlegacy text\n")
        );
    }

    #[test]
    fn output_that_is_not_text_is_described_not_printed() {
        let mut task = sample_task("t-5", "web-1", TaskStatus::Succeeded, Some(0));
        (task.stdout, task.stdout_encoding) = crate::protocol::bytes::encode(b"caf\xe9");
        let text = task_detail(&task);
        assert!(
            text.contains("--- stdout ---\n(4 bytes, not UTF-8 text: `orange task logs t-5` writes them)\n"),
            "{text}"
        );
    }

    #[test]
    fn task_detail_marks_a_pending_cancel_and_dropped_output_and_repeats_redeliveries() {
        let mut task = sample_task("t-4", "web-1", TaskStatus::Running, None);
        task.cancel_requested = true;
        task.dropped_bytes = 1_048_576;
        task.duration_ms = None;
        task.history = vec![
            Transition { status: TaskStatus::Queued, at: "2024-05-01T10:00:00Z".into() },
            Transition { status: TaskStatus::Delivered, at: "2024-05-01T10:00:01Z".into() },
            Transition { status: TaskStatus::Delivered, at: "2024-05-01T10:02:00Z".into() },
            Transition { status: TaskStatus::Running, at: "2024-05-01T10:02:01Z".into() },
        ];
        let text = task_detail(&task);
        assert!(
            text.starts_with(
                "task:      t-4\n\
                 status:    running (cancel requested)\n\
                 agent:     web-1\n\
                 type:      shell\n\
                 payload:   uptime\n\
                 timeout:   600s\n\
                 queued:    2024-05-01T10:00:00Z\n\
                 delivered: 2024-05-01T10:00:01Z\n\
                 delivered: 2024-05-01T10:02:00Z\n\
                 running:   2024-05-01T10:02:01Z\n\
                 exit code: -\n\
                 duration:  -\n\
                 dropped:   1048576 bytes of output from the middle (output cap)\n\
                 --- stdout ---\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn cancel_lines_say_where_the_task_stands() {
        let mut task = sample_task("t-5", "web-1", TaskStatus::Cancelled, None);
        assert_eq!(cancel_line(&task, false), "task t-5: cancelled\n");
        assert_eq!(cancel_line(&task, true), "task t-5: already cancelled\n");
        task.status = TaskStatus::Running;
        task.cancel_requested = true;
        assert_eq!(cancel_line(&task, false), "task t-5: cancel requested; its agent will stop it\n");
        task.status = TaskStatus::Succeeded;
        task.cancel_requested = false;
        assert_eq!(cancel_line(&task, false), "task t-5: succeeded\n");
    }

    #[test]
    fn the_dropped_note_counts_bytes() {
        assert_eq!(
            dropped_note(42),
            "orange: 42 bytes of output were dropped from the middle (output cap)\n"
        );
    }

    #[test]
    fn times_are_shortened_to_utc_seconds_or_kept() {
        assert_eq!(short_time("2024-05-01T12:00:00.999+02:00"), "2024-05-01T10:00:00Z");
        assert_eq!(short_time("yesterday"), "yesterday");
    }

    #[test]
    fn json_uses_the_admin_field_names() {
        let task = sample_task("t-3", "web-1", TaskStatus::TimedOut, None);
        let json = serde_json::to_value(&task).unwrap();
        assert_eq!(json["task_id"], "t-3");
        assert_eq!(json["app_id"], "web-1");
        assert_eq!(json["status"], "timed_out");
        assert_eq!(json["exit_code"], serde_json::Value::Null);
        assert_eq!(json["stdout"], "up 3 days\n");
    }
}
