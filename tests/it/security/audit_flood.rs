//! The audit record under a flood of pending registrations: operator actions stay in sight,
//! agent-made entries are one per app id and hour with a count, and the CLI filters by action,
//! actor and time on the server and walks every entry once with a cursor.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

use orange::protocol::admin::AuditList;

use super::*;
use crate::support::Run;

/// Distinct app ids registering without a credential before the operator acts.
const EARLY: usize = 500;
/// Distinct app ids registering after; with the early ones less the one forgotten, the pending
/// cap (1000) is reached exactly.
const LATE: usize = 501;
/// Registrations of one app id in a row.
const REPEATS: u64 = 100;

/// Registers `count` agents `{prefix}-{n}` without a credential, from 8 threads.
fn flood(server: &Server, prefix: &str, count: usize) {
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let url = server.url.clone();
            let prefix = prefix.to_owned();
            std::thread::spawn(move || {
                for n in (worker..count).step_by(8) {
                    register_pending(&url, &format!("{prefix}-{n}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("registering worker");
    }
}

fn register_pending(url: &str, app_id: &str) {
    let client = AgentClient::new(url, app_id, "pending-secret");
    client
        .register(&register_request(app_id, "pending-secret"), &Enrollment::Pending)
        .unwrap_or_else(|e| panic!("pending registration of {app_id}: {e}"));
}

/// `orange audit ARGS --json` as the operator runs it.
fn audit(server: &Server, args: &[&str]) -> AuditList {
    let run = audit_run(server, &[args, &["--json"]].concat());
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("audit answer: {e}\n{run}"))
}

fn audit_run(server: &Server, args: &[&str]) -> Run {
    let argv = [&["audit", "--server", server.url.as_str()], args].concat();
    let run = cli_with(&argv, &[("ORANGE_TOKEN", server.token.as_str())], Duration::from_secs(60));
    run.assert_success();
    run
}

fn actions(list: &AuditList) -> Vec<(&str, &str)> {
    list.entries.iter().map(|e| (e.action.as_str(), e.target.as_str())).collect()
}

fn hour_of(time: DateTime<Utc>) -> (i64, u32) {
    (time.timestamp() / 86_400, time.hour())
}

#[test]
fn pending_floods_are_counted_apart_and_the_audit_filters_and_pages_on_the_server() {
    let server = private_server();
    flood(&server, "early", EARLY);
    // The server keeps times to the millisecond and `--since` includes its own millisecond; the
    // last early registration may have been recorded in the very millisecond the flood
    // returned, so the mark is taken in a later one.
    std::thread::sleep(Duration::from_millis(2));
    let operator_since = Utc::now();
    std::thread::sleep(Duration::from_millis(20));
    let token = server.create_token(3600, 1);
    let revoke = format!("/api/v1/tokens/{}/revoke", token.token_id);
    assert_eq!(server.admin_raw("POST", &revoke, Some(&server.token), b"").status, 200);
    server.agent_action("early-0", "forget");
    flood(&server, "late", LATE);
    let repeats_started = Utc::now();
    for _ in 1..REPEATS {
        register_pending(&server.url, "late-0");
    }
    let repeats_ended = Utc::now();

    // The default listing is the operator's, which no agent can crowd out.
    let operators = [("agent.forget", "early-0"), ("token.revoke", token.token_id.as_str())];
    let default = audit(&server, &[]);
    assert_eq!(actions(&default), [operators[0], operators[1], ("token.create", token.token_id.as_str())]);
    assert_eq!(default.next, None);
    let table = audit_run(&server, &[]).stdout;
    assert!(table.lines().any(|l| l.contains("agent.forget") && l.contains("early-0")), "{table}");
    assert!(table.lines().any(|l| l.contains("token.revoke")), "{table}");

    // Filters run on the server: by action (a list, or repeated), by actor, by time.
    assert_eq!(actions(&audit(&server, &["--action", "agent.forget"])), [operators[0]]);
    let both = audit(&server, &["--action", "token.revoke", "--action", "agent.forget"]);
    assert_eq!(actions(&both), operators);
    assert_eq!(actions(&audit(&server, &["--action", "agent.forget,token.revoke"])), operators);
    let by_admin = audit(&server, &["--actor", "admin"]);
    assert!(by_admin.entries.iter().all(|e| e.actor == "admin@127.0.0.1"), "{by_admin:?}");
    assert_eq!(by_admin.entries.len(), 3);
    let late_0 = audit(&server, &["--actor", "agent:late-0"]);
    let counts: Vec<u64> = late_0.entries.iter().map(|e| e.count).collect();
    assert_eq!(counts.iter().sum::<u64>(), REPEATS, "{late_0:?}");
    if hour_of(repeats_started) == hour_of(repeats_ended) {
        assert_eq!(counts, [REPEATS], "one entry for the whole flood of one app id");
    }
    let entry = &late_0.entries[0];
    assert_eq!((entry.action.as_str(), entry.detail.as_str()), ("agent.pending", "without a credential"));
    assert!(entry.last.as_deref().is_some_and(|last| last >= entry.at.as_str()), "{entry:?}");
    let table = audit_run(&server, &["--actor", "agent:late-0"]).stdout;
    assert!(table.starts_with("TIME "), "{table}");
    assert!(table.contains(&format!("agent.pending  {REPEATS} ")), "the count is shown:\n{table}");
    let since = operator_since.to_rfc3339_opts(SecondsFormat::Millis, true);
    let recent = audit(&server, &["--kind", "all", "--since", &since, "--limit", "1000"]);
    // Every late app id, each under its own actor (an hour may split one in two entries), the
    // three operator actions, and no early registration.
    let (by_operators, by_agents): (Vec<_>, Vec<_>) =
        recent.entries.iter().partition(|e| e.actor.starts_with("admin"));
    assert_eq!(by_operators.len(), 3, "{by_operators:?}");
    let late_ids: BTreeSet<String> = (0..LATE).map(|n| format!("late-{n}")).collect();
    let agent_targets: BTreeSet<String> = by_agents.iter().map(|e| e.target.clone()).collect();
    let not_late: Vec<_> = by_agents.iter().filter(|e| !late_ids.contains(&e.target)).collect();
    assert_eq!(agent_targets, late_ids, "since {since}, not late: {not_late:?}; next {:?}", recent.next);
    assert!(by_agents.iter().all(|e| e.actor == format!("agent:{}", e.target)), "{by_agents:?}");
    let within_the_hour = audit(&server, &["--kind", "agent", "--since", "1h", "--limit", "1000"]);
    assert_eq!(within_the_hour.entries.len(), 1000);
    assert!(within_the_hour.next.is_some(), "more than 1000 agent entries match");

    // The cursor walks every entry of both streams once, newest first.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut args = vec!["--kind", "all", "--limit", "100"];
        if let Some(cursor) = &after {
            args.extend(["--after", cursor.as_str()]);
        }
        let page = audit(&server, &args);
        seen.extend(
            page.entries.iter().map(|e| (e.at.clone(), e.actor.clone(), e.action.clone(), e.target.clone())),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an entry was listed twice");
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "pages are newest first");
    let targets: BTreeSet<&str> = seen.iter().map(|e| e.3.as_str()).collect();
    for n in 0..EARLY {
        assert!(targets.contains(format!("early-{n}").as_str()), "early-{n} missing");
    }
    for n in 0..LATE {
        assert!(targets.contains(format!("late-{n}").as_str()), "late-{n} missing");
    }
    let agent_entries = seen.iter().filter(|e| e.1.starts_with("agent:")).count();
    assert_eq!(agent_entries - (EARLY + LATE), late_0.entries.len() - 1);
    assert_eq!(seen.len() - agent_entries, 3);
}

#[test]
fn bad_audit_queries_are_refused_naming_the_value() {
    let server = private_server();
    let refused = |query: &str| {
        let response = server.admin_raw("GET", &format!("/api/v1/audit?{query}"), Some(&server.token), b"");
        assert_eq!(response.status, 400, "{query}");
        response.json()["error"].as_str().unwrap_or_default().to_owned()
    };
    assert!(
        refused("action=agent.forgot").starts_with("unknown audit action \"agent.forgot\"; the actions are")
    );
    assert!(refused("since=yesterday").starts_with("since \"yesterday\" is neither a time like"));
    assert_eq!(refused("after=12"), "cursor \"12\" is not one the server returned (TIME-SEQ)");
    assert_eq!(refused("kind=ops"), "kind \"ops\" must be operator, agent or all");
    assert_eq!(refused("limit=x"), "limit \"x\" is not a number of entries");
    assert_eq!(refused("colour=red"), "unknown query parameter \"colour\"");
    // The CLI makes the same check before sending anything.
    let run = cli_with(
        &["audit", "--server", &server.url, "--since", "yesterday"],
        &[("ORANGE_TOKEN", server.token.as_str())],
        Duration::from_secs(30),
    );
    assert_eq!(run.code(), Some(2), "a usage error\n{run}");
    assert!(run.stderr.contains("since \"yesterday\" is neither a time like"), "{run}");
}
