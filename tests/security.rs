//! Attacks on the real `orange` binary, one claim of SECURITY.md at a time: taking over an app
//! id, enrolling without a credential, enrollment tokens, replays (also across a restart),
//! forged and malformed signatures, hostile JSON and names, agent credentials used as operator
//! credentials and back, the failed-signature limit, slow and oversized request heads, TLS
//! verification by the CLI, the data directory's mode and the audit record.
//!
//! Each refusal is asserted with its exact message, and every test that is refused something
//! also checks that nothing stored changed: tasks, agents (without their liveness fields),
//! enrollment tokens and the audit record. `tests/bad_input.rs` covers the plainer malformed
//! input; these tests do not repeat it.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orange::client::{AgentClient, ClientError, EnrollToken, Enrollment, TlsSettings};
use orange::protocol::RegisterRequest;
use orange::protocol::admin::{AgentView, AuditEntry, TaskView, TokenView};
use orange::server::guard::MAX_FAILURES_PER_MINUTE;
use serde_json::{Value, json};
use support::{
    BASE_SECRET, GET_TASK, GoAgent, OUTPUT, PING, REGISTER, REPORT_TASK, RawResponse, Server, ServerOpts,
    ServerProcess, cli_with, fresh_nonce, go_report, go_request, go_sign, go_signed_headers, go_time_now,
    raw_exchange, replay, unix_time_now, v2_headers, v2_sign, wait_until,
};
use tempfile::TempDir;

/// The refusal of any replayed signed request.
const REPLAY: &str = "this signed request was already used; replays are refused";
/// An enrollment key that, unlike the original's public one, strangers do not know.
const PRIVATE_KEY: &str = "a-private-enrollment-key-5c1d";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Everything the server holds that a refused request must not change.
#[derive(Debug, PartialEq)]
struct Snapshot {
    tasks: Vec<TaskView>,
    agents: Vec<AgentView>,
    tokens: Vec<TokenView>,
    audit: Vec<AuditEntry>,
}

/// What `server` holds now; agents without their liveness fields, which every accepted request
/// of the real agent moves.
fn snapshot(server: &Server) -> Snapshot {
    let agents = server
        .agents()
        .into_iter()
        .map(|mut a| {
            a.last_seen.clear();
            a.online = false;
            a
        })
        .collect();
    Snapshot { tasks: server.tasks(), agents, tokens: server.tokens(), audit: server.audit() }
}

/// Asserts the server still runs and holds exactly what it held in `before`.
#[track_caller]
fn assert_unchanged(server: &mut Server, before: &Snapshot) {
    server.assert_alive();
    let after = snapshot(server);
    assert_eq!(after.agents, before.agents, "agents changed");
    assert_eq!(after.tasks, before.tasks, "tasks changed");
    assert_eq!(after.tokens, before.tokens, "enrollment tokens changed");
    assert_eq!(after.audit, before.audit, "the audit record changed");
}

/// Asserts an envelope is a refusal (code 1, no data) whose message contains `needle`.
#[track_caller]
fn assert_refused(envelope: &Value, needle: &str) {
    assert_eq!(envelope["code"], 1, "expected a refusal: {envelope}");
    assert!(envelope["data"].is_null(), "a refusal carries no data: {envelope}");
    let message = envelope["message"].as_str().unwrap_or_else(|| panic!("no message: {envelope}"));
    assert!(message.contains(needle), "message {message:?} lacks {needle:?}");
}

/// Asserts an admin API error: the status and an `error` containing `needle`.
#[track_caller]
fn assert_api_error(response: &RawResponse, status: u16, needle: &str) {
    assert_eq!(response.status, status, "body {:?}", response.text());
    let body = response.json();
    let error = body["error"].as_str().unwrap_or_else(|| panic!("no error field: {body}"));
    assert!(error.contains(needle), "error {error:?} lacks {needle:?}");
}

/// A server whose enrollment key is private, with a 1 s poll window.
fn private_server() -> Server {
    Server::start(ServerOpts {
        poll_window: Some(1),
        enroll_key: Some(PRIVATE_KEY.into()),
        ..ServerOpts::default()
    })
}

fn register_request(app_id: &str, secret: &str) -> RegisterRequest {
    RegisterRequest { app_id: app_id.into(), secret: secret.into(), ..RegisterRequest::default() }
}

/// Registers through orange's own client and returns the refusal; panics if it was accepted.
#[track_caller]
fn register_refusal(server: &Server, app_id: &str, secret: &str, enrollment: &Enrollment) -> String {
    let client = AgentClient::new(&server.url, app_id, secret);
    match client.register(&register_request(app_id, secret), enrollment) {
        Err(ClientError::Refused(message)) => message,
        other => panic!("register of {app_id} with {enrollment:?} was not refused: {other:?}"),
    }
}

/// Registers `app_id` the original client's way, signed with `key`; panics unless accepted.
fn enroll(server: &Server, app_id: &str, secret: &str, key: &str) -> GoAgent {
    let agent = GoAgent::new(server, app_id, secret);
    let body = json!({"app_id": app_id, "secret": secret}).to_string();
    let envelope = agent.send_signed(REGISTER, key, body.as_bytes()).json();
    assert_eq!(envelope["code"], 0, "register {app_id}: {envelope}");
    agent
}

/// The token an operator hands out, parsed as an agent reads it.
fn enroll_token(view: &TokenView) -> EnrollToken {
    let text = view.token.as_deref().expect("the created token is shown once");
    text.parse().unwrap_or_else(|e| panic!("token {text:?} does not parse: {e}"))
}

/// A legacy signature covers the time to the second: waits for the next one, so that a new
/// request of the same agent with the same body is not the same signed request.
fn next_legacy_second() {
    let now = go_time_now();
    wait_until(Duration::from_secs(3), "the next second", || go_time_now() != now);
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(header) => header.1 = value.to_owned(),
        None => headers.push((name.to_owned(), value.to_owned())),
    }
}

fn drop_header(headers: &mut Vec<(String, String)>, name: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

fn task_status(server: &Server, id: &str) -> String {
    server.task(id).status.as_str().to_owned()
}

// ---------------------------------------------------------------------------------------------
// Enrollment

#[test]
fn taking_over_an_enrolled_app_id_is_refused_on_every_enrollment_route() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let owner = GoAgent::new(&server, "w1", "s1").registered();
    let task = server.enqueue(&["w1"], "PING", "for w1")[0].task_id.clone();
    let token = enroll_token(&server.create_token(3600, 5));
    let before = snapshot(&server);
    let refusal = "app id \"w1\" is already enrolled with a different secret; an operator can reset it \
                   with `orange agents forget w1`";
    // The original client's way: the public key, legacy signature.
    let thief = GoAgent::new(&server, "w1", "stolen");
    let envelope = thief.register();
    assert_refused(&envelope, "already enrolled with a different secret");
    assert_eq!(envelope["message"], refusal);
    // orange's way: version 2 with the key, with a token, or asking to wait for acceptance.
    for enrollment in [Enrollment::Key(BASE_SECRET.into()), Enrollment::Token(token), Enrollment::Pending] {
        assert_eq!(register_refusal(&server, "w1", "stolen", &enrollment), refusal, "{enrollment:?}");
    }
    // The thief's secret opens nothing, and no token use was spent.
    assert_refused(&thief.ping(), "signature does not match for app id \"w1\"");
    assert_refused(&thief.get_task(), "signature does not match for app id \"w1\"");
    assert_unchanged(&mut server, &before);
    owner.take(&task);
}

#[test]
fn a_forgotten_app_id_is_refused_until_it_enrolls_again() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let old = GoAgent::new(&server, "w1", "s1").registered();
    assert_eq!(server.agent_action("w1", "forget").status, "forgotten");
    // Neither the old secret nor the empty one the record now holds opens it.
    for key in ["s1", ""] {
        let as_w1 = GoAgent::new(&server, "w1", key);
        let unknown = "unknown app id \"w1\"; register first";
        assert_refused(&as_w1.ping(), unknown);
        assert_refused(&as_w1.get_task(), unknown);
        assert_refused(&as_w1.send_v2(GET_TASK, key, b""), unknown);
    }
    let send = json!({"app_ids": ["w1"], "task_type": "ping"}).to_string();
    let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), send.as_bytes());
    assert_api_error(&response, 404, "unknown agent \"w1\"");
    // It enrolls again with a new secret, and only the new secret works from then on.
    let renewed = GoAgent::new(&server, "w1", "s1-new").registered();
    assert_eq!(renewed.ping()["code"], 0);
    assert_refused(&old.ping(), "signature does not match for app id \"w1\"");
    assert_eq!(server.agent("w1").expect("w1 enrolled").status, "accepted");
    let task = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    renewed.take(&task);
    server.assert_alive();
}

#[test]
fn accepting_a_forgotten_agent_does_not_open_it_to_the_empty_secret() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    GoAgent::new(&server, "w1", "s1").registered();
    server.agent_action("w1", "forget");
    // An operator accepts the forgotten agent (by mistake, or a script accepting everything).
    let accept = server.admin_raw("POST", "/api/v1/agents/w1/accept", Some(&server.token), b"");
    let accept_answer = format!("accept answered {} {}", accept.status, accept.text());
    // Forgetting dropped the secret: nobody may act as w1 by signing with the empty key.
    let anyone = GoAgent::new(&server, "w1", "");
    let ping = anyone.ping();
    assert_eq!(
        ping["code"], 1,
        "a ping signed with the EMPTY key is accepted as w1: {ping}; {accept_answer}"
    );
    let send = json!({"app_ids": ["w1"], "task_type": "ping", "payload": "operator secrets"}).to_string();
    let sent = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), send.as_bytes());
    if sent.status == 201 {
        let poll = anyone.get_task();
        assert_ne!(
            poll["code"], 0,
            "a poll signed with the EMPTY key took w1's task: {poll}; {accept_answer}"
        );
    }
    assert_api_error(&accept, 404, "a forgotten agent must enroll again");
    server.assert_alive();
}

#[test]
fn a_pending_agent_gets_no_task_until_an_operator_accepts_it() {
    let mut server = private_server();
    enroll(&server, "w1", "s1", PRIVATE_KEY);
    // The original client's public key does not enroll here.
    let stranger = GoAgent::new(&server, "p1", "sp1");
    assert_refused(&stranger.register(), "signature does not match for app id \"p1\"");
    assert!(server.agent("p1").is_none(), "p1 was stored");
    // Without a credential it lands pending.
    let client = AgentClient::new(&server.url, "p1", "sp1");
    client.register(&register_request("p1", "sp1"), &Enrollment::Pending).expect("pending enrollment");
    assert_eq!(server.agent("p1").expect("p1 stored").status, "pending");
    // Nothing can be sent to it, and a task for all agents skips it.
    let to_p1 = json!({"app_ids": ["p1"], "task_type": "ping"}).to_string();
    let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), to_p1.as_bytes());
    assert_api_error(
        &response,
        409,
        "agent \"p1\" is pending approval; accept it with `orange agents accept p1`",
    );
    let to_all = json!({"all": true, "task_type": "ping"}).to_string();
    let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), to_all.as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
    let targets: Vec<Value> =
        response.json()["tasks"].as_array().expect("tasks").iter().map(|t| t["app_id"].clone()).collect();
    assert_eq!(targets, vec![json!("w1")], "only the accepted agent gets a task sent to all");
    // Its polls park for the window and end without a task, saying why (legacy and v2).
    let pending =
        "pending approval: an operator must run `orange agents accept p1` before this agent gets tasks";
    let started = Instant::now();
    assert_eq!(stranger.send_v2(GET_TASK, "sp1", b""), json!({"code": 2, "message": pending, "data": null}));
    assert!(started.elapsed() >= Duration::from_millis(900), "the poll of a pending agent did not park");
    assert_eq!(stranger.get_task(), json!({"code": 2, "message": pending, "data": null}));
    assert!(server.tasks().iter().all(|t| t.app_id != "p1"), "a task was made for p1");
    // Accepted, it gets the next task on its next poll.
    assert_eq!(server.agent_action("p1", "accept").status, "accepted");
    let task = server.enqueue(&["p1"], "ping", "now")[0].task_id.clone();
    let got = client.get_task().expect("poll after acceptance").expect("a task after acceptance");
    assert_eq!(got.task_id, task);
    server.assert_alive();
}

#[test]
fn a_stranger_squatting_an_app_id_as_pending_is_replaced_by_the_enrolling_host() {
    let mut server = private_server();
    let squatter = AgentClient::new(&server.url, "web-01", "squatter");
    squatter.register(&register_request("web-01", "squatter"), &Enrollment::Pending).expect("pending");
    // Another stranger without a credential cannot replace the pending record either.
    let before = snapshot(&server);
    let refusal = register_refusal(&server, "web-01", "other", &Enrollment::Pending);
    assert!(refusal.contains("is already enrolled with a different secret"), "{refusal}");
    assert_unchanged(&mut server, &before);
    // The real host, with the key, takes its app id back: a pending record proves nothing.
    let key = Enrollment::Key(PRIVATE_KEY.into());
    let real = AgentClient::new(&server.url, "web-01", "real");
    real.register(&register_request("web-01", "real"), &key).expect("the real host enrolls");
    assert_eq!(server.agent("web-01").expect("web-01").status, "accepted");
    match squatter.ping() {
        Err(ClientError::Refused(message)) => {
            assert_eq!(message, "signature does not match for app id \"web-01\"")
        }
        other => panic!("the squatter still authenticates: {other:?}"),
    }
    real.ping().expect("the real host authenticates");
}

#[test]
fn an_enrollment_token_enrolls_as_many_agents_as_it_has_uses() {
    let mut server = private_server();
    let view = server.create_token(3600, 2);
    assert_eq!((view.uses_left, view.revoked), (2, false));
    let token = enroll_token(&view);
    assert_eq!(token.id, view.token_id);
    for app_id in ["t1", "t2"] {
        let client = AgentClient::new(&server.url, app_id, &format!("secret-{app_id}"));
        let request = register_request(app_id, &format!("secret-{app_id}"));
        client.register(&request, &Enrollment::Token(token.clone())).expect("a use left");
        assert_eq!(server.agent(app_id).expect("enrolled").status, "accepted");
    }
    let listed = server.tokens();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].uses_left, 0);
    assert_eq!(listed[0].token, None, "a listed token shows no secret");
    let before = snapshot(&server);
    let refusal = register_refusal(&server, "t3", "secret-t3", &Enrollment::Token(token.clone()));
    assert_eq!(refusal, format!("enrollment token {:?} has no uses left", token.id));
    assert!(server.agent("t3").is_none(), "t3 was stored");
    assert_unchanged(&mut server, &before);
}

#[test]
fn revoked_expired_unknown_and_forged_tokens_are_refused() {
    let mut server = private_server();
    let revoked = enroll_token(&server.create_token(3600, 5));
    let path = format!("/api/v1/tokens/{}/revoke", revoked.id);
    let response = server.admin_raw("POST", &path, Some(&server.token), b"");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["revoked"], true);
    let expiring_view = server.create_token(1, 5);
    let expiring = enroll_token(&expiring_view);
    let good = enroll_token(&server.create_token(3600, 5));
    let expires = chrono::DateTime::parse_from_rfc3339(&expiring_view.expires_at).expect("RFC 3339 expiry");
    wait_until(Duration::from_secs(5), "the 1 s token to expire", || chrono::Utc::now() > expires);
    let before = snapshot(&server);
    let unknown = EnrollToken { id: "00112233aabbccdd".into(), secret: good.secret.clone() };
    let forged = EnrollToken { id: good.id.clone(), secret: "ff".repeat(16) };
    let cases = [
        ("r1", Enrollment::Token(revoked.clone()), format!("enrollment token {:?} was revoked", revoked.id)),
        (
            "e1",
            Enrollment::Token(expiring.clone()),
            format!("enrollment token {:?} has expired", expiring.id),
        ),
        ("u1", Enrollment::Token(unknown), "unknown enrollment token \"00112233aabbccdd\"".to_owned()),
        ("f1", Enrollment::Token(forged), "signature does not match for app id \"f1\"".to_owned()),
        // A token's secret is not the enrollment key.
        ("k1", Enrollment::Key(good.secret.clone()), "signature does not match for app id \"k1\"".to_owned()),
    ];
    for (app_id, enrollment, expected) in &cases {
        assert_eq!(&register_refusal(&server, app_id, "s", enrollment), expected);
        assert!(server.agent(app_id).is_none(), "{app_id} was stored");
    }
    assert_unchanged(&mut server, &before);
    // The good token still has all its uses.
    let client = AgentClient::new(&server.url, "g1", "sg1");
    client.register(&register_request("g1", "sg1"), &Enrollment::Token(good)).expect("good token");
}

// ---------------------------------------------------------------------------------------------
// Replay

#[test]
fn a_replayed_get_task_gets_no_task_and_the_task_stays_queued() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let legacy = w1.legacy_request(GET_TASK, "s1", b"");
    let v2 = w1.v2_request(GET_TASK, "s1", b"");
    for captured in [&legacy, &v2] {
        let first = replay(server.addr, captured).json();
        assert_eq!(first["message"], "timeout reached without receiving a task", "{first}");
    }
    let task = server.enqueue(&["w1"], "PING", "the payload an eavesdropper wants")[0].task_id.clone();
    let before = snapshot(&server);
    for captured in [&legacy, &v2] {
        // Code 2, not 1: an original client whose own clock made it repeat itself goes on.
        assert_eq!(replay(server.addr, captured).json(), json!({"code": 2, "message": REPLAY, "data": null}));
    }
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
    next_legacy_second();
    w1.take(&task);
}

#[test]
fn a_replayed_report_is_refused_and_changes_nothing() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let first = server.enqueue(&["w1"], "PING", "one")[0].task_id.clone();
    let second = server.enqueue(&["w1"], "PING", "two")[0].task_id.clone();
    let refusal = json!({"code": 1, "message": REPLAY, "data": null});
    // Legacy: a captured "doing" replayed, then after the final report both replayed.
    let task = w1.take(&first);
    let doing = go_report(&task, "doing", "half way").to_string();
    let captured_doing = w1.legacy_request(REPORT_TASK, "s1", doing.as_bytes());
    assert_eq!(replay(server.addr, &captured_doing).json()["code"], 0);
    assert_eq!(task_status(&server, &first), "running");
    let before = snapshot(&server);
    assert_eq!(replay(server.addr, &captured_doing).json(), refusal);
    assert_unchanged(&mut server, &before);
    let done = go_report(&task, "success", "done").to_string();
    let captured_done = w1.legacy_request(REPORT_TASK, "s1", done.as_bytes());
    assert_eq!(replay(server.addr, &captured_done).json()["code"], 0);
    let before = snapshot(&server);
    for captured in [&captured_doing, &captured_done] {
        assert_eq!(replay(server.addr, captured).json(), refusal);
    }
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &first), "succeeded");
    assert_eq!(server.agent("w1").expect("w1").processed_task_count, 1);
    // Version 2.
    let envelope = w1.send_v2(GET_TASK, "s1", b"");
    assert_eq!(envelope["data"]["task_id"], second.as_str(), "{envelope}");
    let report = go_report(&envelope["data"], "failed", "v2 result").to_string();
    let captured = w1.v2_request(REPORT_TASK, "s1", report.as_bytes());
    assert_eq!(replay(server.addr, &captured).json()["code"], 0);
    let before = snapshot(&server);
    assert_eq!(replay(server.addr, &captured).json(), refusal);
    assert_unchanged(&mut server, &before);
    let view = server.task(&second);
    assert_eq!((view.status.as_str(), view.result.as_str()), ("failed", "v2 result"));
}

#[test]
fn a_v2_nonce_is_used_once_on_every_endpoint() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let w2 = GoAgent::new(&server, "w2", "s2").registered();
    let nonce = fresh_nonce();
    let time = unix_time_now();
    let send = |agent: &GoAgent, path: &str, body: &[u8]| {
        let headers = v2_headers(path, &agent.app_id, &agent.secret, body, &time, &nonce);
        agent.send(path, &headers, body).json()
    };
    assert_eq!(send(&w1, PING, b"ping")["code"], 0);
    let before = snapshot(&server);
    // The same nonce and time on another endpoint with another body: refused, although a
    // valid signature of a request never sent (the nonce, not the signature, is the identity).
    let report = json!({"task_id": uuid::Uuid::now_v7().to_string(), "do_status": "success"}).to_string();
    assert_eq!(
        send(&w1, REPORT_TASK, report.as_bytes()),
        json!({"code": 1, "message": REPLAY, "data": null})
    );
    assert_eq!(send(&w1, GET_TASK, b""), json!({"code": 2, "message": REPLAY, "data": null}));
    assert_unchanged(&mut server, &before);
    // A nonce is one agent's: another agent may happen to use the same value.
    assert_eq!(send(&w2, PING, b"ping")["code"], 0);
}

#[test]
fn a_replay_with_the_signature_in_another_letter_case_is_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    // Version 2 keys replays on the nonce, so a recased signature is still a replay.
    let nonce = fresh_nonce();
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &unix_time_now(), &nonce);
    assert_eq!(w1.send(PING, &headers, b"ping").json()["code"], 0);
    headers[1].1 = headers[1].1.to_uppercase();
    assert_eq!(w1.send(PING, &headers, b"ping").json(), json!({"code": 1, "message": REPLAY, "data": null}));
    // Legacy: a captured getTask on an empty queue, replayed upper-cased once a task waits.
    let headers = go_signed_headers("w1", "s1", b"", &go_time_now());
    let envelope = w1.send(GET_TASK, &headers, b"").json();
    assert_eq!(envelope["message"], "timeout reached without receiving a task", "{envelope}");
    let task = server.enqueue(&["w1"], "PING", "the payload an eavesdropper wants")[0].task_id.clone();
    let before = snapshot(&server);
    let mut recased = headers.clone();
    recased[1].1 = headers[1].1.to_uppercase();
    assert_ne!(recased[1].1, headers[1].1, "the signature has no letter to recase");
    let envelope = w1.send(GET_TASK, &recased, b"").json();
    assert_eq!(
        envelope,
        json!({"code": 2, "message": REPLAY, "data": null}),
        "a captured legacy getTask replayed with its signature upper-cased is a new request"
    );
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
}

#[test]
fn a_replay_after_a_server_restart_is_still_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let first = server.enqueue(&["w1"], "PING", "one")[0].task_id.clone();
    let task = w1.take(&first);
    // Two empty polls, then two reports: a report is made durable before it is answered, and
    // with it every use recorded before (the polls' included), so the SIGKILL below loses none.
    next_legacy_second();
    let legacy_poll = w1.legacy_request(GET_TASK, "s1", b"");
    let v2_poll = w1.v2_request(GET_TASK, "s1", b"");
    for captured in [&legacy_poll, &v2_poll] {
        let envelope = replay(server.addr, captured).json();
        assert_eq!(envelope["message"], "timeout reached without receiving a task", "{envelope}");
    }
    let doing = go_report(&task, "doing", "running").to_string();
    let legacy_report = w1.legacy_request(REPORT_TASK, "s1", doing.as_bytes());
    let v2_report = w1.v2_request(REPORT_TASK, "s1", doing.as_bytes());
    for captured in [&legacy_report, &v2_report] {
        assert_eq!(replay(server.addr, captured).json()["code"], 0);
    }
    server.restart();
    let second = server.enqueue(&["w1"], "PING", "two")[0].task_id.clone();
    let before = snapshot(&server);
    for captured in [&legacy_report, &v2_report] {
        assert_eq!(replay(server.addr, captured).json(), json!({"code": 1, "message": REPLAY, "data": null}));
    }
    for captured in [&legacy_poll, &v2_poll] {
        assert_eq!(replay(server.addr, captured).json(), json!({"code": 2, "message": REPLAY, "data": null}));
    }
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &second), "queued");
    assert_eq!(task_status(&server, &first), "running");
}

#[test]
fn a_request_answered_just_before_a_crash_cannot_be_replayed_after_the_restart() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    // A ping changes nothing durable, so nothing syncs its use before the answer.
    let captured = w1.v2_request(PING, "s1", b"ping");
    assert_eq!(replay(server.addr, &captured).json()["code"], 0);
    server.restart();
    let envelope = replay(server.addr, &captured).json();
    assert_eq!(
        envelope,
        json!({"code": 1, "message": REPLAY, "data": null}),
        "a ping answered right before a SIGKILL is accepted again after the restart"
    );
}

// ---------------------------------------------------------------------------------------------
// Signatures and times

#[test]
fn forged_and_mismatched_v2_signatures_are_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    GoAgent::new(&server, "w2", "s2").registered();
    let task = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    let before = snapshot(&server);
    let mismatch = "signature does not match for app id \"w1\"";
    let now = unix_time_now();
    let send = |path: &str, headers: &[(String, String)], body: &[u8]| w1.send(path, headers, body).json();
    // Keys that are not w1's: a guess, the admin token, the enrollment key, w2's, the empty key.
    for key in ["not-the-key", server.token.as_str(), BASE_SECRET, "s2", ""] {
        let headers = v2_headers(GET_TASK, "w1", key, b"", &now, &fresh_nonce());
        assert_eq!(send(GET_TASK, &headers, b"")["message"], mismatch, "key {key:?}");
    }
    // w1's key, but signed over another path, body, nonce or time than sent.
    let headers = v2_headers(PING, "w1", "s1", b"", &now, &fresh_nonce());
    assert_refused(&send(GET_TASK, &headers, b""), mismatch);
    let headers = v2_headers(PING, "w1", "s1", b"pong", &now, &fresh_nonce());
    assert_refused(&send(PING, &headers, b"ping"), mismatch);
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &fresh_nonce());
    set_header(&mut headers, "X-Orange-Nonce", &fresh_nonce());
    assert_refused(&send(PING, &headers, b"ping"), mismatch);
    let earlier = (now.parse::<i64>().expect("Unix seconds") - 1).to_string();
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &earlier, &fresh_nonce());
    set_header(&mut headers, "X-Forge-Time", &now);
    assert_refused(&send(PING, &headers, b"ping"), mismatch);
    // Downgrade: a v2 signature without the version header is checked as a legacy one.
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &fresh_nonce());
    drop_header(&mut headers, "X-Orange-Sign-Version");
    assert_refused(&send(PING, &headers, b"ping"), mismatch);
    // Upgrade: a legacy signature announced as version 2.
    let mut headers = go_signed_headers("w1", "s1", b"ping", &now);
    set_header(&mut headers, "X-Orange-Nonce", &fresh_nonce());
    set_header(&mut headers, "X-Orange-Sign-Version", "2");
    assert_refused(&send(PING, &headers, b"ping"), mismatch);
    // Unknown versions, and a missing or malformed nonce.
    for version in ["3", "1", "2.0", "v2"] {
        let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &fresh_nonce());
        set_header(&mut headers, "X-Orange-Sign-Version", version);
        let expected = format!("signature version {version:?} is not supported; use 2");
        assert_eq!(send(PING, &headers, b"ping")["message"], expected.as_str());
    }
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &fresh_nonce());
    drop_header(&mut headers, "X-Orange-Nonce");
    assert_refused(&send(PING, &headers, b"ping"), "X-ORANGE-NONCE is required with version 2");
    let long = format!("{}0", fresh_nonce());
    for nonce in
        ["abc", &fresh_nonce()[..31], long.as_str(), &"g".repeat(32), &format!("{}-", &fresh_nonce()[..31])]
    {
        let headers = v2_headers(PING, "w1", "s1", b"ping", &now, nonce);
        assert_eq!(
            send(PING, &headers, b"ping")["message"],
            "nonce must be 32 hex digits",
            "nonce {nonce:?}"
        );
    }
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
}

#[test]
fn v2_signatures_of_the_wrong_length_or_not_hex_are_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let before = snapshot(&server);
    let now = unix_time_now();
    let nonce = fresh_nonce();
    let good = v2_sign("s1", PING, "w1", &now, &nonce, b"ping");
    let mut one_off = good.clone();
    one_off.replace_range(10..11, "z");
    let cases = [
        good[..63].to_owned(),
        format!("{good}0"),
        good[..1].to_owned(),
        format!("{good}{good}"),
        "g".repeat(64),
        one_off,
        format!("{} {}", &good[..31], &good[32..]),
        format!("0x{}", &good[2..]),
    ];
    for sign in &cases {
        let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &nonce);
        set_header(&mut headers, "X-Forge-Sign", sign);
        let envelope = w1.send(PING, &headers, b"ping").json();
        let expected = "signature is not 64 hex digits for app id \"w1\"";
        assert_eq!(envelope["message"], expected, "sign {sign:?}: {envelope}");
    }
    // Bytes outside ASCII make the header unreadable: as good as missing.
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &nonce);
    set_header(&mut headers, "X-Forge-Sign", &"é".repeat(32));
    assert_refused(&w1.send(PING, &headers, b"ping").json(), "appid, sign, and time are required");
    assert_unchanged(&mut server, &before);
    // Hex digits are read in either case: the upper-cased good signature is the same signature.
    let mut headers = v2_headers(PING, "w1", "s1", b"ping", &now, &nonce);
    set_header(&mut headers, "X-Forge-Sign", &good.to_uppercase());
    assert_eq!(w1.send(PING, &headers, b"ping").json()["code"], 0);
}

#[test]
fn times_far_in_the_past_or_future_are_refused_naming_the_server_time() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let before = snapshot(&server);
    let far = [
        "0",
        "1",
        "999999999999",
        "0000-01-01 00:00:00",
        "1970-01-01 00:00:00",
        "9999-12-31 23:59:59",
        "+262142-12-31 23:59:59",
        "-262143-01-01 00:00:00",
    ];
    let unreadable = [
        "-1",
        "+1795677383",
        "1e10",
        "9999999999999",
        "99999999999999999999999999",
        "262143-01-01 00:00:00",
        "2026-02-30 00:00:00",
    ];
    let mut checked = 0;
    for time in far.iter().chain(&unreadable) {
        let legacy = go_signed_headers("w1", "s1", b"", time);
        let v2 = v2_headers(GET_TASK, "w1", "s1", b"", time, &fresh_nonce());
        for headers in [legacy, v2] {
            let envelope = w1.send(GET_TASK, &headers, b"").json();
            let message = envelope["message"].as_str().unwrap_or_default().to_owned();
            assert_eq!(envelope["code"], 1, "time {time:?}: {envelope}");
            if far.contains(time) {
                let prefix = format!("time {time:?} is ");
                assert!(message.starts_with(&prefix), "time {time:?}: {message}");
                assert!(message.contains(" s away from the server's time "), "{message}");
                assert!(message.ends_with("; the limit is 300 s"), "{message}");
            } else {
                assert_eq!(message, format!("time {time:?} is neither YYYY-MM-DD HH:MM:SS nor Unix seconds"));
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * (far.len() + unreadable.len()));
    assert_unchanged(&mut server, &before);
}

// ---------------------------------------------------------------------------------------------
// Hostile bodies and names

#[test]
fn deeply_nested_json_is_refused_and_the_server_lives() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let id = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    w1.take(&id);
    let before = snapshot(&server);
    let deep = 100_000;
    let bodies = [
        "[".repeat(deep),
        format!("{}{}", "[".repeat(deep), "]".repeat(deep)),
        "{\"a\":".repeat(deep / 2),
        format!("{{\"task_id\":\"{id}\",\"do_status\":\"success\",\"stdout\":{}", "[".repeat(deep)),
        format!("{{\"app_id\":\"w1\",\"secret\":\"s1\",\"labels\":{}", "{\"k\":".repeat(deep / 2)),
    ];
    let mut checked = 0;
    for body in &bodies {
        let body = body.as_bytes();
        let mut pending = w1.v2_request(REGISTER, "s1", body);
        // Register asking to wait is signed with the secret inside the body, so it is parsed first.
        pending.splice(
            pending.len() - body.len() - 2..pending.len() - body.len() - 2,
            *b"X-Orange-Enroll: pending\r\n",
        );
        let answers = [
            w1.send_signed(REPORT_TASK, "s1", body).json(),
            w1.send_v2(REPORT_TASK, "s1", body),
            w1.send_v2(OUTPUT, "s1", body),
            w1.send_signed(REGISTER, BASE_SECRET, body).json(),
            replay(server.addr, &pending).json(),
        ];
        for envelope in &answers {
            assert_refused(envelope, "malformed JSON");
            checked += 1;
        }
        for path in ["/api/v1/tasks", "/api/v1/tokens", &format!("/api/v1/tasks/{id}/cancel")] {
            assert_api_error(
                &server.admin_raw("POST", path, Some(&server.token), body),
                400,
                "malformed JSON",
            );
            checked += 1;
        }
    }
    assert_eq!(checked, bodies.len() * 8);
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &id), "delivered");
}

#[test]
fn json_of_the_wrong_types_is_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let id = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    w1.take(&id);
    let before = snapshot(&server);
    let reports = [
        json!({"task_id": 5, "do_status": "success"}),
        json!({"task_id": null, "do_status": "success"}),
        json!({"task_id": id, "do_status": ["success"]}),
        json!({"task_id": id, "do_status": "success", "result": {"a": 1}}),
        json!({"task_id": id, "do_status": "success", "exit_code": "0"}),
        json!({"task_id": id, "do_status": "success", "exit_code": 4_294_967_296_u64}),
        json!({"task_id": id, "do_status": "success", "duration_ms": -1}),
        json!({"task_id": id, "do_status": "success", "output_chunks": 1.5}),
        json!({"task_id": id, "do_status": "success", "stdout": ["a"]}),
        json!("a string"),
        json!(null),
        json!(42),
    ];
    for report in &reports {
        assert_refused(&w1.send_v2(REPORT_TASK, "s1", report.to_string().as_bytes()), "malformed JSON");
    }
    let duplicate = format!(r#"{{"task_id":"{id}","do_status":"doing","do_status":"success"}}"#);
    assert_refused(&w1.send_v2(REPORT_TASK, "s1", duplicate.as_bytes()), "duplicate field `do_status`");
    let registers = [
        json!({"app_id": "w9", "secret": 42}),
        json!({"app_id": ["w9"], "secret": "x"}),
        json!({"app_id": "w9", "secret": "x", "labels": ["a"]}),
        json!({"app_id": "w9", "secret": "x", "labels": {"k": 1}}),
        json!({"app_id": "w9", "secret": "x", "version": 7}),
    ];
    let w9 = GoAgent::new(&server, "w9", "x");
    for register in &registers {
        let envelope = w9.send_signed(REGISTER, BASE_SECRET, register.to_string().as_bytes()).json();
        assert_refused(&envelope, "malformed JSON");
    }
    let chunks = [
        json!({"task_id": id, "seq": -1, "stream": "stdout", "data": "x"}),
        json!({"task_id": id, "seq": "0", "stream": "stdout", "data": "x"}),
        json!({"task_id": id, "seq": 4_294_967_296_u64, "stream": "stdout", "data": "x"}),
        json!({"task_id": id, "seq": 0, "stream": null, "data": "x"}),
        json!({"task_id": id, "seq": 0, "stream": "stdout", "data": 5}),
    ];
    for chunk in &chunks {
        assert_refused(&w1.send_v2(OUTPUT, "s1", chunk.to_string().as_bytes()), "malformed JSON");
    }
    let admin = [
        ("/api/v1/tasks", json!({"app_ids": ["w1"], "task_type": 5})),
        ("/api/v1/tasks", json!({"app_ids": [1], "task_type": "ping"})),
        ("/api/v1/tasks", json!({"app_ids": ["w1"], "task_type": "ping", "timeout_secs": -1})),
        ("/api/v1/tasks", json!({"app_ids": ["w1"], "task_type": "ping", "timeout_secs": "10"})),
        ("/api/v1/tasks", json!({"app_ids": ["w1"], "task_type": "ping", "payload": {"a": 1}})),
        ("/api/v1/tasks", json!({"all": "yes", "task_type": "ping"})),
        ("/api/v1/tokens", json!({"ttl_secs": "60", "uses": 1})),
        ("/api/v1/tokens", json!({"ttl_secs": 60, "uses": -1})),
        ("/api/v1/tokens", json!({"ttl_secs": 60, "uses": 4_294_967_296_u64})),
    ];
    for (path, body) in &admin {
        let response = server.admin_raw("POST", path, Some(&server.token), body.to_string().as_bytes());
        assert_api_error(&response, 400, "malformed JSON");
    }
    let cancel = format!("/api/v1/tasks/{id}/cancel");
    let response = server.admin_raw("POST", &cancel, Some(&server.token), br#"{"force":"yes"}"#);
    assert_api_error(&response, 400, "malformed JSON");
    assert_unchanged(&mut server, &before);
    assert!(server.agent("w9").is_none());
}

#[test]
fn hostile_app_ids_are_refused_everywhere() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let before = snapshot(&server);
    let long = "x".repeat(10 * 1024);
    let characters = "may only hold letters, digits and . _ - : @";
    let cases = [
        ("../w1", characters),
        ("w1/..", characters),
        ("/etc/passwd", characters),
        ("w1/../w2", characters),
        ("a\\b", characters),
        ("w1%2F..", characters),
        ("w 1", characters),
        (long.as_str(), "must be 1 to 128 characters"),
    ];
    for (app_id, reason) in cases {
        let agent = GoAgent::new(&server, app_id, "s1");
        assert_refused(&agent.ping(), reason);
        assert_refused(&agent.get_task(), reason);
        assert_refused(&agent.send_v2(REPORT_TASK, "s1", b"{}"), reason);
        let body = json!({"app_id": app_id, "secret": "s1"}).to_string();
        assert_refused(&agent.send_signed(REGISTER, BASE_SECRET, body.as_bytes()).json(), reason);
        // Under w1's own header, the body's app id is checked against it.
        let envelope = w1.send_signed(REGISTER, BASE_SECRET, body.as_bytes()).json();
        assert_refused(&envelope, "differs from X-FORGE-APPID");
        let send = json!({"app_ids": [app_id], "task_type": "ping"}).to_string();
        let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), send.as_bytes());
        assert_api_error(&response, 400, reason);
    }
    let unicode = json!({"app_ids": ["wö"], "task_type": "ping"}).to_string();
    let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), unicode.as_bytes());
    assert_api_error(&response, 400, characters);
    for path in ["/api/v1/agents/..%2Fw1", "/api/v1/agents/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"] {
        assert_api_error(&server.admin_raw("GET", path, Some(&server.token), b""), 404, "unknown agent");
        for action in ["accept", "forget"] {
            let response = server.admin_raw("POST", &format!("{path}/{action}"), Some(&server.token), b"");
            assert_api_error(&response, 404, "unknown agent");
        }
    }
    assert_unchanged(&mut server, &before);
}

#[test]
fn task_types_that_could_name_a_path_are_refused_at_enqueue() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    GoAgent::new(&server, "w1", "s1").registered();
    let before = snapshot(&server);
    let too_long = "x".repeat(65);
    let cases = [
        "../../bin/sh",
        "/bin/sh",
        "..",
        ".",
        ".profile",
        "sh/../sh",
        "bin\\sh",
        "sh;id",
        "$(id)",
        "ping\n",
        "ping\u{0}",
        "pïng",
        too_long.as_str(),
    ];
    for task_type in cases {
        let body = json!({"app_ids": ["w1"], "task_type": task_type}).to_string();
        let response = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), body.as_bytes());
        let shown: String = task_type.chars().take(40).collect();
        let expected = format!(
            "task type {shown:?} must be 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'"
        );
        assert_api_error(&response, 400, &expected);
    }
    assert_unchanged(&mut server, &before);
    // The longest plain name is fine.
    server.enqueue(&["w1"], &"x".repeat(64), "");
}

#[test]
fn another_agents_task_cannot_be_reported_streamed_or_taken() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let w2 = GoAgent::new(&server, "w2", "s2").registered();
    let delivered_id = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    let queued = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    let delivered = w1.take(&delivered_id);
    let before = snapshot(&server);
    for id in [&delivered_id, &queued] {
        let mut report = go_report(&delivered, "success", "w2 says so");
        report["task_id"] = json!(id);
        let envelope = w2.send_v2(REPORT_TASK, "s2", report.to_string().as_bytes());
        assert_eq!(envelope["message"], format!("task {id} belongs to another agent"));
        let chunk = json!({"task_id": id, "seq": 0, "stream": "stdout", "data": "injected"});
        let envelope = w2.send_v2(OUTPUT, "s2", chunk.to_string().as_bytes());
        assert_refused(&envelope, &format!("task {id} belongs to another agent"));
    }
    // w1's queue is w1's: w2's poll ends empty.
    let poll = w2.send_v2(GET_TASK, "s2", b"");
    assert_eq!(poll["message"], "timeout reached without receiving a task", "{poll}");
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &delivered_id), "delivered");
    assert_eq!(task_status(&server, &queued), "queued");
}

// ---------------------------------------------------------------------------------------------
// Operator and agent credentials

#[test]
fn agent_and_enrollment_credentials_are_not_admin_tokens() {
    let mut server = private_server();
    enroll(&server, "w1", "s1", PRIVATE_KEY);
    let task = server.enqueue(&["w1"], "ping", "")[0].task_id.clone();
    let token = enroll_token(&server.create_token(3600, 1));
    let before = snapshot(&server);
    let revoke = format!("/api/v1/tokens/{}/revoke", token.id);
    let cancel = format!("/api/v1/tasks/{task}/cancel");
    let output = format!("/api/v1/tasks/{task}/output");
    let routes: [(&str, &str, &[u8]); 11] = [
        ("GET", "/api/v1/agents", b""),
        ("GET", "/api/v1/audit", b""),
        ("GET", "/api/v1/tokens", b""),
        ("POST", "/api/v1/tokens", br#"{"ttl_secs":60,"uses":1}"#),
        ("POST", &revoke, b""),
        ("POST", "/api/v1/agents/w1/forget", b""),
        ("POST", "/api/v1/agents/w1/accept", b""),
        ("POST", "/api/v1/tasks", br#"{"app_ids":["w1"],"task_type":"ping"}"#),
        ("POST", &cancel, b"{}"),
        ("GET", &output, b""),
        ("GET", "/api/v1/nope", b""),
    ];
    let whole_token = format!("{}.{}", token.id, token.secret);
    let wrong = ["wrong", "s1", PRIVATE_KEY, BASE_SECRET, token.secret.as_str(), whole_token.as_str()];
    let signed = go_signed_headers("w1", "s1", b"", &go_time_now());
    for (i, (method, path, body)) in routes.into_iter().enumerate() {
        assert_api_error(
            &server.admin_raw(method, path, None, body),
            401,
            "missing Authorization: Bearer token",
        );
        // Every kind of wrong token on two routes, one kind on each other route: fewer than the
        // per-source limit on wrong tokens (see the next test).
        let kinds = if i < 2 { &wrong[..] } else { std::slice::from_ref(&wrong[i % wrong.len()]) };
        for &bearer in kinds {
            let response = server.admin_raw(method, path, Some(bearer), body);
            assert_api_error(&response, 401, "wrong admin token");
        }
        // An agent's signature headers are not an operator's credential.
        let headers: Vec<(&str, &str)> = signed.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_api_error(
            &support::http(server.addr, method, path, &headers, body),
            401,
            "missing Authorization",
        );
        let lower = format!("bearer {}", server.token);
        let response = support::http(server.addr, method, path, &[("Authorization", lower.as_str())], body);
        assert_api_error(&response, 401, "Authorization must be \"Bearer <token>\"");
        let query = format!("{path}?token={}", server.token);
        assert_api_error(&server.admin_raw(method, &query, None, body), 401, "missing Authorization");
    }
    assert_unchanged(&mut server, &before);
}

#[test]
fn wrong_admin_tokens_are_limited_per_source_for_the_rest_of_the_minute() {
    let mut server = private_server();
    let before = snapshot(&server);
    // The count is per minute: start early in one, so that the guesses all fall in it.
    while chrono::Utc::now().timestamp() % 60 >= 45 {
        std::thread::sleep(Duration::from_secs(1));
    }
    let mut refused = 0;
    let mut limited = None;
    for i in 0..40 {
        let response = server.admin_raw("GET", "/api/v1/agents", Some(&format!("guess-{i}")), b"");
        match response.status {
            401 => refused += 1,
            _ => {
                limited = Some(response);
                break;
            }
        }
    }
    let limited = limited.expect("guessing is cut off");
    assert_eq!(refused, MAX_FAILURES_PER_MINUTE, "every guess up to the limit is answered 401");
    assert_api_error(&limited, 429, "too many wrong admin tokens from 127.0.0.1");
    // Even the right token is refused from that source until the minute ends.
    let right = server.admin_raw("GET", "/api/v1/agents", Some(&server.token.clone()), b"");
    assert_api_error(&right, 429, "too many wrong admin tokens");
    // The count lives in memory; a restart lets the harness look at the store again.
    server.restart();
    assert_unchanged(&mut server, &before);
}

#[test]
fn the_admin_token_is_neither_an_agent_secret_nor_an_agent_key() {
    let mut server = private_server();
    let w1 = enroll(&server, "w1", "s1", PRIVATE_KEY);
    let task = server.enqueue(&["w1"], "ping", "")[0].task_id.clone();
    let token = enroll_token(&server.create_token(3600, 5));
    let admin = server.token.clone();
    let before = snapshot(&server);
    let refusal = "an agent secret must not be the admin token";
    // Register a new app id, or w1 itself, with the admin token as its secret: every route.
    for app_id in ["evil", "w1"] {
        let body = json!({"app_id": app_id, "secret": admin}).to_string();
        let envelope =
            GoAgent::new(&server, app_id, &admin).send_signed(REGISTER, PRIVATE_KEY, body.as_bytes()).json();
        assert_refused(&envelope, refusal);
        for enrollment in
            [Enrollment::Key(PRIVATE_KEY.into()), Enrollment::Token(token.clone()), Enrollment::Pending]
        {
            assert_eq!(
                register_refusal(&server, app_id, &admin, &enrollment),
                refusal,
                "{app_id} {enrollment:?}"
            );
        }
    }
    // Signing as w1 with the admin token, and registering with it as the enrollment key.
    let mismatch = "signature does not match for app id \"w1\"";
    assert_refused(&w1.send_signed(GET_TASK, &admin, b"").json(), mismatch);
    assert_refused(&w1.send_v2(GET_TASK, &admin, b""), mismatch);
    let body = json!({"app_id": "w1", "secret": "s1"}).to_string();
    assert_refused(&w1.send_signed(REGISTER, &admin, body.as_bytes()).json(), mismatch);
    assert_refused(&w1.send_v2(REGISTER, &admin, body.as_bytes()), mismatch);
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
}

// ---------------------------------------------------------------------------------------------
// Failed signatures, slow and oversized heads

/// The failure limiter counts per calendar minute: makes sure `secs` of this one are left.
fn leave_room_in_this_minute(secs: i64) {
    let now = chrono::Utc::now().timestamp();
    if 60 - now.rem_euclid(60) < secs {
        let minute = now.div_euclid(60);
        wait_until(Duration::from_secs(secs as u64 + 2), "the next minute", || {
            chrono::Utc::now().timestamp().div_euclid(60) != minute
        });
    }
}

/// Sends 30 failed signatures from 127.0.0.1, then checks the 31st is refused by the limit.
fn exhaust_failed_signatures(w1: &GoAgent) {
    for n in 1..=30 {
        let envelope = w1.send_signed(PING, "wrong", b"ping").json();
        assert_eq!(envelope["message"], "signature does not match for app id \"w1\"", "failure {n}");
    }
    let envelope = w1.send_signed(PING, "wrong", b"ping").json();
    assert_refused(&envelope, "too many failed signatures from 127.0.0.1 (30 this minute); retry in ");
}

#[test]
fn failed_signatures_are_limited_per_source_address() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let task = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    let before = snapshot(&server);
    leave_room_in_this_minute(10);
    exhaust_failed_signatures(&w1);
    // The documented trade-off: until the minute ends, correct requests from the same address
    // are deferred too (HTTP 503: agents retry them later; they are not dropped).
    let limited = "too many failed signatures from 127.0.0.1";
    assert_refused(&w1.ping(), limited);
    assert_refused(&w1.send_v2(PING, "s1", b"ping"), limited);
    assert_refused(&w1.register(), limited);
    let report = json!({"task_id": task, "do_status": "success"}).to_string();
    assert_refused(&w1.send_v2(REPORT_TASK, "s1", report.as_bytes()), limited);
    // Nothing about that is stored.
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
}

#[test]
fn get_task_refused_by_the_failure_limit_keeps_an_original_client_polling() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    leave_room_in_this_minute(10);
    exhaust_failed_signatures(&w1);
    // The original client exits on any getTask answer but 0 and 2 (PROTOCOL.md), so a
    // transient refusal of its correct poll must be code 2, as a replayed poll's is.
    let envelope = w1.get_task();
    let message = envelope["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many failed signatures from 127.0.0.1"), "{envelope}");
    assert_eq!(
        envelope["code"], 2,
        "a correctly signed getTask refused by the failure limit answers code 1, which makes an \
         original client exit: {envelope}"
    );
    server.assert_alive();
}

/// Reads until the peer closes the connection; returns what it sent first, or `None` if it was
/// still open at `deadline`.
fn read_until_closed(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).expect("set read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some(seen),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return None;
            }
            Err(_) => return Some(seen),
        }
    }
}

/// Asserts a connection was closed between 9 and 13 s after `opened`, with at most an HTTP
/// error answer before.
#[track_caller]
fn assert_closed_by_header_timeout(what: &str, closed: Option<Vec<u8>>, opened: Instant) {
    let after = opened.elapsed();
    let seen = closed.unwrap_or_else(|| panic!("{what}: still open after {after:?}"));
    assert!(
        after >= Duration::from_secs(9) && after <= Duration::from_secs(13),
        "{what}: closed after {after:?}, expected 10 s"
    );
    let text = String::from_utf8_lossy(&seen);
    assert!(seen.is_empty() || text.starts_with("HTTP/1.1 4"), "{what}: answered {text:?}");
}

#[test]
fn slow_loris_connections_are_closed_after_the_header_timeout() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let partial =
        b"POST /orange-forge/api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n";
    let opened = Instant::now();
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).expect("connect");
            stream.write_all(partial).expect("send a partial head");
            stream
        })
        .collect();
    // One more trickles a header line every half second, never finishing the head.
    let mut trickle = TcpStream::connect(server.addr).expect("connect");
    trickle.write_all(partial).expect("send a partial head");
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let mut writer = trickle.try_clone().expect("clone socket");
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for n in 0..30 {
                if stop.load(Ordering::Relaxed)
                    || writer.write_all(format!("X-Slow-{n}: 1\r\n").as_bytes()).is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    // Meanwhile everyone else is served at once.
    let asked = Instant::now();
    assert_eq!(w1.ping()["code"], 0);
    assert!(asked.elapsed() < Duration::from_secs(2), "a ping took {:?} during the attack", asked.elapsed());
    let deadline = opened + Duration::from_secs(14);
    let closed = read_until_closed(&mut trickle, deadline);
    stop.store(true, Ordering::Relaxed);
    assert_closed_by_header_timeout("the trickling connection", closed, opened);
    for (n, stream) in idle.iter_mut().enumerate() {
        let closed = read_until_closed(stream, deadline);
        assert_closed_by_header_timeout(&format!("idle connection {n}"), closed, opened);
    }
    trickler.join().expect("trickler");
    server.assert_alive();
    assert_eq!(w1.ping()["code"], 0);
}

/// Asserts a request head was refused: 431 (or 414 for a long request line), or the connection
/// closed; never a hang and never a served request.
#[track_caller]
fn assert_head_refused(addr: SocketAddr, what: &str, request: Vec<u8>) {
    match raw_exchange(addr, request, Duration::from_secs(10)) {
        Ok(response) => assert!(
            [431, 414].contains(&response.status),
            "{what}: answered {} {:?}",
            response.status,
            response.text()
        ),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "{what}: no answer and still open: {e}"
        ),
    }
}

#[test]
fn request_heads_over_64_kib_are_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    GoAgent::new(&server, "w1", "s1").registered();
    let before = snapshot(&server);
    let addr = server.addr;
    let signed = |extra: Vec<(String, String)>| {
        let mut headers = go_signed_headers("w1", "s1", b"ping", &go_time_now());
        headers.extend(extra);
        go_request(addr, PING, &headers, b"ping")
    };
    let big = vec![("X-Big".to_owned(), "a".repeat(70 * 1024))];
    assert_head_refused(server.addr, "one 70 KiB header", signed(big));
    let many: Vec<_> = (0..2000).map(|n| (format!("X-Many-{n}"), "b".repeat(30))).collect();
    assert_head_refused(server.addr, "2000 headers, 80 KB", signed(many));
    let line = format!("POST /{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", "p".repeat(70 * 1024));
    assert_head_refused(server.addr, "a 70 KiB request line", line.into_bytes());
    assert_unchanged(&mut server, &before);
    // A head well under the limit is served.
    next_legacy_second();
    let padded = vec![("X-Pad".to_owned(), "c".repeat(32 * 1024))];
    let response = replay(server.addr, &signed(padded));
    assert_eq!(response.json()["code"], 0, "{}", response.text());
}

// ---------------------------------------------------------------------------------------------
// TLS, the data directory, the generated secrets

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e}"));
    assert!(output.status.success(), "openssl {args:?} failed:\n{}", String::from_utf8_lossy(&output.stderr));
}

/// Makes a CA named `name` in `dir`: `NAME.key`, `NAME.pem`.
fn make_ca(dir: &Path, name: &str) {
    let (key, pem, subject) = (format!("{name}.key"), format!("{name}.pem"), format!("/CN={name}"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &subject,
            "-days",
            "2",
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
}

/// Makes a certificate for 127.0.0.1 signed by the CA `ca` in `dir`: `leaf.key`, `leaf.pem`.
fn make_leaf(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
        ],
    );
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ],
    );
}

fn have_openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_cli_verifies_the_server_certificate() {
    if !have_openssl() {
        eprintln!("SKIPPED the_cli_verifies_the_server_certificate: openssl is not installed");
        return;
    }
    let pki = TempDir::with_prefix("orange-pki-").expect("temp dir");
    make_ca(pki.path(), "test-ca");
    make_ca(pki.path(), "other-ca");
    make_leaf(pki.path(), "test-ca");
    let data = TempDir::with_prefix("orange-data-").expect("data dir");
    let token = "tls-test-admin-token-9a8b";
    let file = |name: &str| pki.path().join(name).into_os_string();
    let server = ServerProcess::start([
        "--data".into(),
        data.path().into(),
        "--tls-cert".into(),
        file("leaf.pem"),
        "--tls-key".into(),
        file("leaf.key"),
        "--admin-token".into(),
        token.into(),
        "--enroll-key".into(),
        PRIVATE_KEY.into(),
    ] as [std::ffi::OsString; 10]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "listening line: {}", server.url);
    let ca = pki.path().join("test-ca.pem");
    let other = pki.path().join("other-ca.pem");
    let (ca, other) = (ca.to_str().expect("utf-8 path"), other.to_str().expect("utf-8 path"));
    let args = ["agents", "--server", server.url.as_str(), "--json"];
    let deadline = Duration::from_secs(30);
    let warning = "TLS verification is off";
    // With the private CA: verified, no warning.
    let run = cli_with(
        &args,
        &[("ORANGE_TOKEN", token), ("ORANGE_CA_FILE", ca), ("ORANGE_INSECURE", "")],
        deadline,
    );
    run.assert_success();
    assert!(run.json()["agents"].is_array(), "{run}");
    assert!(!run.stderr.contains(warning), "{run}");
    // With the system roots, or another CA: a certificate error, and nothing is sent.
    for env in [
        vec![("ORANGE_CA_FILE", ""), ("ORANGE_INSECURE", "")],
        vec![("ORANGE_CA_FILE", other), ("ORANGE_INSECURE", "")],
    ] {
        let mut env = env;
        env.push(("ORANGE_TOKEN", token));
        let run = cli_with(&args, &env, deadline);
        assert_eq!(run.code(), Some(255), "{run}");
        assert!(run.stderr.contains("certificate") && run.stderr.contains("UnknownIssuer"), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    // Verification off: works, and says so on stderr.
    let run = cli_with(
        &args,
        &[("ORANGE_TOKEN", token), ("ORANGE_CA_FILE", ""), ("ORANGE_INSECURE", "1")],
        deadline,
    );
    run.assert_success();
    assert!(run.stderr.contains(warning), "no warning that verification is off\n{run}");
    // Plain HTTP to the HTTPS port gets nowhere.
    let plain = format!("http://{}", server.addr);
    let run = cli_with(&["agents", "--server", &plain], &[("ORANGE_TOKEN", token)], deadline);
    assert_ne!(run.code(), Some(0), "{run}");
    // The agent's client verifies the same way.
    let trusted = TlsSettings::new(Some(Path::new(ca)), false).expect("CA file");
    let agent = AgentClient::with_tls(&server.url, "w1", "s1", &trusted);
    agent
        .register(&register_request("w1", "s1"), &Enrollment::Key(PRIVATE_KEY.into()))
        .expect("register over TLS");
    agent.ping().expect("ping over TLS");
    let untrusted = TlsSettings::new(Some(Path::new(other)), false).expect("CA file");
    match AgentClient::with_tls(&server.url, "w1", "s1", &untrusted).ping() {
        Err(ClientError::Transport { reason, .. }) => assert!(reason.contains("UnknownIssuer"), "{reason}"),
        other => panic!("an agent trusting another CA reached the server: {other:?}"),
    }
}

#[test]
fn a_data_dir_others_can_write_is_refused() {
    for mode in [0o777, 0o770, 0o702] {
        let dir = TempDir::with_prefix("orange-data-").expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).expect("chmod");
        let path = dir.path().to_str().expect("utf-8 path");
        let run = cli_with(
            &["server", "--data", path, "--listen", "127.0.0.1:0", "--enroll-key", PRIVATE_KEY],
            &[],
            Duration::from_secs(10),
        );
        assert_eq!(run.code(), Some(255), "mode {mode:o}\n{run}");
        let expected = format!(
            "data directory {path} is writable by group or others (mode {mode:o}); run `chmod 700 {path}`"
        );
        assert!(run.stderr.contains(&expected), "mode {mode:o}\n{run}");
        let left: Vec<PathBuf> =
            std::fs::read_dir(dir.path()).expect("read dir").map(|e| e.expect("entry").path()).collect();
        assert!(left.is_empty(), "mode {mode:o}: the refused server wrote {left:?}");
    }
    // Readable by others is not writable by them: it starts.
    let dir = TempDir::with_prefix("orange-data-").expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().to_str().expect("utf-8 path");
    let mut server = ServerProcess::start(["--data", path, "--enroll-key", PRIVATE_KEY]);
    assert!(server.is_alive());
}

#[test]
fn generated_secrets_are_private_and_the_public_key_no_longer_enrolls() {
    let parent = TempDir::with_prefix("orange-parent-").expect("temp dir");
    let data = parent.path().join("data");
    let server = ServerProcess::start([Path::new("--data"), &data]);
    let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join("admin.token")), 0o600, "admin.token");
    assert_eq!(mode(&data.join("enroll.key")), 0o600, "enroll.key");
    let data_arg = data.to_str().expect("utf-8 path");
    let run = cli_with(&["enroll-key", "--data", data_arg], &[], Duration::from_secs(10));
    run.assert_success();
    let key = run.stdout.trim().to_owned();
    assert_eq!(key, std::fs::read_to_string(data.join("enroll.key")).expect("enroll.key").trim());
    assert!(key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()), "key {key:?}");
    // The original's public key does not enroll; the printed key does.
    let agent = GoAgent { addr: server.addr, app_id: "w1".into(), secret: "agent-secret-4e7f1b".into() };
    assert_refused(&agent.register(), "signature does not match for app id \"w1\"");
    let body = json!({"app_id": "w1", "secret": agent.secret}).to_string();
    assert_eq!(agent.send_signed(REGISTER, &key, body.as_bytes()).json()["code"], 0);
    assert_eq!(agent.ping()["code"], 0);
    // No secret reaches the log.
    let admin = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
    let log = server.stderr();
    for secret in [key.as_str(), admin.trim(), agent.secret.as_str()] {
        assert!(!log.contains(secret), "a secret is in the server's log:\n{log}");
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

#[test]
fn the_audit_record_names_every_operator_action_and_enrollment() {
    let mut server = private_server();
    enroll(&server, "w1", "s1", PRIVATE_KEY);
    let pending = AgentClient::new(&server.url, "p1", "sp1");
    pending.register(&register_request("p1", "sp1"), &Enrollment::Pending).expect("pending");
    let token = enroll_token(&server.create_token(3600, 1));
    let with_token = AgentClient::new(&server.url, "t1", "st1");
    with_token.register(&register_request("t1", "st1"), &Enrollment::Token(token.clone())).expect("token");
    let revoke = format!("/api/v1/tokens/{}/revoke", token.id);
    assert_eq!(server.admin_raw("POST", &revoke, Some(&server.token), b"").status, 200);
    server.agent_action("p1", "accept");
    let task = server.enqueue(&["w1"], "ping", "hello")[0].task_id.clone();
    let cancel = format!("/api/v1/tasks/{task}/cancel");
    assert_eq!(server.admin_raw("POST", &cancel, Some(&server.token), br#"{"force":false}"#).status, 200);
    server.agent_action("t1", "forget");
    let admin = "admin@127.0.0.1";
    let expected = [
        ("agent:w1", "agent.enroll", "w1", "with the enrollment key".to_owned()),
        ("agent:p1", "agent.pending", "p1", "without a credential".to_owned()),
        (admin, "token.create", token.id.as_str(), "1 uses, 3600 s".to_owned()),
        ("agent:t1", "agent.enroll", "t1", format!("with enrollment token {}", token.id)),
        (admin, "token.revoke", token.id.as_str(), String::new()),
        (admin, "agent.accept", "p1", String::new()),
        (admin, "task.send", task.as_str(), "type ping, payload 5 bytes".to_owned()),
        (admin, "task.cancel", task.as_str(), String::new()),
        (admin, "agent.forget", "t1", String::new()),
    ];
    let mut entries = server.audit();
    entries.reverse();
    let got: Vec<(&str, &str, &str, String)> = entries
        .iter()
        .map(|e| (e.actor.as_str(), e.action.as_str(), e.target.as_str(), e.detail.clone()))
        .collect();
    assert_eq!(got, expected);
    let now = chrono::Utc::now();
    let mut last = None;
    for entry in &entries {
        let at = chrono::DateTime::parse_from_rfc3339(&entry.at).unwrap_or_else(|e| panic!("{entry:?}: {e}"));
        assert!((now.timestamp() - at.timestamp()).abs() < 60, "{entry:?} is not from now");
        assert!(last.is_none_or(|last| last <= at), "entries out of order: {entries:?}");
        last = Some(at);
    }
    // The CLI shows the same record.
    let run = cli_with(
        &["audit", "--server", &server.url, "--json"],
        &[("ORANGE_TOKEN", server.token.as_str())],
        Duration::from_secs(30),
    );
    run.assert_success();
    let listed: Vec<AuditEntry> =
        serde_json::from_value(run.json()["entries"].clone()).expect("audit entries");
    assert_eq!(listed, server.audit());
    // Refused operator calls and refused enrollments leave no entry.
    let before = snapshot(&server);
    let ghost = json!({"app_ids": ["ghost"], "task_type": "ping"}).to_string();
    assert_eq!(server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), ghost.as_bytes()).status, 404);
    assert_eq!(server.admin_raw("POST", "/api/v1/tokens/ffff/revoke", Some(&server.token), b"").status, 404);
    assert_eq!(server.admin_raw("POST", "/api/v1/agents/ghost/accept", Some(&server.token), b"").status, 404);
    assert_eq!(server.admin_raw("POST", "/api/v1/agents/w1/forget", Some("wrong"), b"").status, 401);
    let zero = br#"{"ttl_secs":0,"uses":1}"#;
    assert_eq!(server.admin_raw("POST", "/api/v1/tokens", Some(&server.token), zero).status, 400);
    register_refusal(&server, "t2", "st2", &Enrollment::Token(token));
    register_refusal(&server, "w1", "other", &Enrollment::Key(PRIVATE_KEY.into()));
    assert_unchanged(&mut server, &before);
}

/// The `go_sign` helper and the crate agree (so the legacy tests above sign what the server
/// checks).
#[test]
fn the_independent_signers_agree_with_the_crate() {
    let signer = orange::protocol::Signer::new("s3cret");
    assert_eq!(
        go_sign("s3cret", "w1", b"ping", "2026-11-26 06:40:41"),
        signer.sign("w1", b"ping", "2026-11-26 06:40:41")
    );
    let nonce = "000102030405060708090a0b0c0d0e0f";
    let canonical = orange::protocol::sign::Canonical {
        method: "POST",
        path: PING,
        app_id: "w1",
        time: "1795677383",
        nonce,
        body: b"ping",
    };
    assert_eq!(v2_sign("s3cret", PING, "w1", "1795677383", nonce, b"ping"), signer.sign_v2(&canonical));
}

#[test]
fn at_most_1000_agents_wait_for_acceptance() {
    let mut server = private_server();
    let url = server.url.clone();
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let url = url.clone();
            std::thread::spawn(move || {
                for n in 0..125 {
                    let app_id = format!("p{worker}-{n}");
                    let client = AgentClient::new(&url, &app_id, "pending-secret");
                    client
                        .register(&register_request(&app_id, "pending-secret"), &Enrollment::Pending)
                        .unwrap_or_else(|e| panic!("pending enrollment of {app_id}: {e}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("enrolling worker");
    }
    assert_eq!(server.agents().iter().filter(|a| a.status == "pending").count(), 1000);
    let before = snapshot(&server);
    let refusal = register_refusal(&server, "one-too-many", "s", &Enrollment::Pending);
    assert_eq!(refusal, "1000 agents already wait for acceptance; accept or forget some first");
    assert_unchanged(&mut server, &before);
    // The cap holds strangers only: an agent with the key still enrolls, and a waiting agent
    // may register again.
    enroll(&server, "w1", "s1", PRIVATE_KEY);
    let waiting = AgentClient::new(&url, "p0-0", "pending-secret");
    waiting.register(&register_request("p0-0", "pending-secret"), &Enrollment::Pending).expect("re-register");
    // Forgetting one makes room for one.
    server.agent_action("p0-0", "forget");
    let client = AgentClient::new(&url, "one-more", "s");
    client.register(&register_request("one-more", "s"), &Enrollment::Pending).expect("room for one");
}

#[test]
fn an_agents_queue_is_bounded() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    GoAgent::new(&server, "w1", "s1").registered();
    let full = json!({"app_ids": vec!["w1"; 10_000], "task_type": "ping"}).to_string();
    let filled = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), full.as_bytes());
    assert_eq!(filled.status, 201, "{}", filled.text());
    let newest = server.tasks().first().map(|t| t.task_id.clone());
    let one = json!({"app_ids": ["w1"], "task_type": "ping"}).to_string();
    let refused = server.admin_raw("POST", "/api/v1/tasks", Some(&server.token), one.as_bytes());
    assert_api_error(&refused, 413, "has 10000 tasks waiting");
    assert_eq!(server.tasks().first().map(|t| t.task_id.clone()), newest, "nothing was added");
    server.assert_alive();
}
