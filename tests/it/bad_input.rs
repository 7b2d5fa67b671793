//! Bad input on both faces of the server. Agent endpoints answer HTTP 200 with code 1 and a
//! specific message and change nothing stored; the admin API answers a 4xx with a JSON
//! `{"error": ...}`. Every test ends by checking that the server process is still alive.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{
    BASE_SECRET, GET_TASK, GoAgent, PING, REGISTER, REPORT_TASK, Server, ServerOpts, Snapshot,
    assert_api_error, assert_refused, assert_unchanged, go_report, go_sign, go_signed_headers, go_time,
    go_time_now, http, next_legacy_second,
};

const AGENT_PATHS: [&str; 4] = [REGISTER, PING, GET_TASK, REPORT_TASK];

/// A server with agent w1 (secret s1), one task delivered to it and one still queued.
struct Fixture {
    server: Server,
    agent: GoAgent,
    /// Wire object of the task handed to w1.
    delivered: Value,
    /// Id of the task still in w1's queue.
    queued: String,
}

impl Fixture {
    fn new() -> Fixture {
        let server = Server::start(ServerOpts::poll_window(1));
        let agent = GoAgent::new(&server, "w1", "s1").registered();
        let first = server.enqueue(&["w1"], "PING", "first")[0].task_id.clone();
        let queued = server.enqueue(&["w1"], "PING", "second")[0].task_id.clone();
        let delivered = agent.take(&first);
        Fixture { server, agent, delivered, queued }
    }

    fn delivered_id(&self) -> &str {
        self.delivered["task_id"].as_str().expect("task id")
    }

    /// What the server holds now.
    fn state(&self) -> Snapshot {
        Snapshot::of(&self.server)
    }

    /// Asserts nothing stored changed since `before`, the tasks are where the fixture left them,
    /// w1 still authenticates with its secret, and the server still runs.
    fn assert_unchanged(&mut self, before: &Snapshot) {
        assert_unchanged(&mut self.server, before);
        assert_eq!(self.server.task(self.delivered_id()).status.as_str(), "delivered");
        assert_eq!(self.server.task(&self.queued).status.as_str(), "queued");
        assert_eq!(self.agent.ping()["code"], 0, "w1 can no longer authenticate");
    }

    fn send(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> Value {
        self.agent.send(path, headers, body).json()
    }

    /// A valid report of the delivered task.
    fn report_body(&self) -> Vec<u8> {
        go_report(&self.delivered, "success", "done").to_string().into_bytes()
    }
}

/// The key each agent endpoint is signed with, and a body it would accept.
fn endpoint_key_and_body(f: &Fixture, path: &str) -> (&'static str, Vec<u8>) {
    match path {
        REGISTER => (BASE_SECRET, br#"{"app_id":"w1","secret":"s1"}"#.to_vec()),
        PING => ("s1", b"ping".to_vec()),
        GET_TASK => ("s1", Vec::new()),
        _ => ("s1", f.report_body()),
    }
}

#[test]
fn missing_or_empty_signing_headers_are_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let mut checked = 0;
    for path in AGENT_PATHS {
        let (key, body) = endpoint_key_and_body(&f, path);
        let full = go_signed_headers("w1", key, &body, &go_time_now());
        for left_out in 0..full.len() {
            let mut headers = full.clone();
            headers.remove(left_out);
            let envelope = f.send(path, &headers, &body);
            assert_eq!(envelope["message"], "appid, sign, and time are required", "{path}: {envelope}");
            assert_refused(&envelope, "required");
            headers = full.clone();
            headers[left_out].1.clear();
            let envelope = f.send(path, &headers, &body);
            assert_eq!(envelope["message"], "appid, sign, and time are required", "{path}: {envelope}");
            checked += 2;
        }
    }
    assert_eq!(checked, 24);
    f.assert_unchanged(&before);
}

/// What a bad signature of w1 on `path` is told: a registration gets the one answer to every
/// registration that does not prove its right to the app id, the other endpoints `specific`.
fn refusal_of_bad_signature<'a>(path: &str, specific: &'a str) -> &'a str {
    static NOT_PROVEN: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| orange::server::enroll::not_proven("w1"));
    if path == REGISTER { NOT_PROVEN.as_str() } else { specific }
}

#[test]
fn wrong_signature_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    for path in AGENT_PATHS {
        let (_, body) = endpoint_key_and_body(&f, path);
        let headers = go_signed_headers("w1", "not-the-key", &body, &go_time_now());
        assert_refused(
            &f.send(path, &headers, &body),
            refusal_of_bad_signature(path, "signature does not match"),
        );
    }
    // Right key, but signed over another body than the one sent.
    let body = f.report_body();
    let headers = go_signed_headers("w1", "s1", b"{}", &go_time_now());
    assert_refused(&f.send(REPORT_TASK, &headers, &body), "signature does not match");
    // Right key and body, but another time than the one in the header.
    let time = go_time_now();
    let mut headers = go_signed_headers("w1", "s1", b"ping", &time);
    headers[2].1 = go_time(chrono::Local::now() - chrono::Duration::seconds(3));
    assert_refused(&f.send(PING, &headers, b"ping"), "signature does not match");
    f.assert_unchanged(&before);
}

#[test]
fn signature_that_is_not_hex_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    for path in AGENT_PATHS {
        let (key, body) = endpoint_key_and_body(&f, path);
        let mut headers = go_signed_headers("w1", key, &body, &go_time_now());
        headers[1].1 = "z".repeat(64);
        let expected = refusal_of_bad_signature(path, "signature is not 64 hex digits");
        assert_refused(&f.send(path, &headers, &body), expected);
    }
    f.assert_unchanged(&before);
}

#[test]
fn signature_of_the_wrong_length_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let time = go_time_now();
    let good = go_sign("s1", "w1", b"", &time);
    for sign in [good[..62].to_owned(), format!("{good}00"), good[..1].to_owned(), format!("{good}{good}")] {
        let headers = vec![
            ("X-Forge-Appid".to_owned(), "w1".to_owned()),
            ("X-Forge-Sign".to_owned(), sign.clone()),
            ("X-Forge-Time".to_owned(), time.clone()),
        ];
        assert_refused(&f.send(GET_TASK, &headers, b""), "signature is not 64 hex digits");
    }
    f.assert_unchanged(&before);
}

/// Asserts a skew refusal names the server's time, and that this time is now.
#[track_caller]
fn assert_names_server_time(envelope: &Value) {
    assert_refused(envelope, "away from the server's time");
    assert_refused(envelope, "the limit is 300 s");
    let message = envelope["message"].as_str().unwrap_or("");
    let after = message.split("server's time ").nth(1).unwrap_or("");
    let stamp = after.split(';').next().unwrap_or("").trim();
    let server_time = chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("server time {stamp:?} in {message:?} is not RFC 3339: {e}"));
    let off = (server_time.timestamp() - chrono::Utc::now().timestamp()).abs();
    assert!(off < 60, "server time {stamp} is {off} s from now");
}

#[test]
fn stale_time_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let stale = go_time(chrono::Local::now() - chrono::Duration::seconds(400));
    for path in AGENT_PATHS {
        let (key, body) = endpoint_key_and_body(&f, path);
        let headers = go_signed_headers("w1", key, &body, &stale);
        assert_names_server_time(&f.send(path, &headers, &body));
    }
    let stale_unix = (chrono::Utc::now().timestamp() - 400).to_string();
    let headers = go_signed_headers("w1", "s1", b"", &stale_unix);
    assert_names_server_time(&f.send(GET_TASK, &headers, b""));
    f.assert_unchanged(&before);
    // Well inside the window is fine.
    let recent = go_time(chrono::Local::now() - chrono::Duration::seconds(200));
    let headers = go_signed_headers("w1", "s1", b"ping", &recent);
    assert_eq!(f.send(PING, &headers, b"ping")["code"], 0);
}

#[test]
fn future_time_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let ahead = go_time(chrono::Local::now() + chrono::Duration::seconds(400));
    for path in AGENT_PATHS {
        let (key, body) = endpoint_key_and_body(&f, path);
        let headers = go_signed_headers("w1", key, &body, &ahead);
        assert_names_server_time(&f.send(path, &headers, &body));
    }
    let ahead_unix = (chrono::Utc::now().timestamp() + 400).to_string();
    let headers = go_signed_headers("w1", "s1", b"", &ahead_unix);
    assert_names_server_time(&f.send(GET_TASK, &headers, b""));
    f.assert_unchanged(&before);
}

#[test]
fn unreadable_time_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    for time in ["yesterday", "2026-11-26T07:40:41Z", "2026-13-45 99:00:00", "-5"] {
        let headers = go_signed_headers("w1", "s1", b"", time);
        assert_refused(&f.send(GET_TASK, &headers, b""), "neither YYYY-MM-DD HH:MM:SS nor Unix seconds");
    }
    f.assert_unchanged(&before);
}

#[test]
fn malformed_json_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let report = String::from_utf8(f.report_body()).unwrap();
    let truncated_report = &report[..report.len() / 2];
    let cases: [(&str, &str, &[u8]); 6] = [
        (REGISTER, BASE_SECRET, br#"{"app_id":"w1","secret":"#),
        (REGISTER, BASE_SECRET, b"not json"),
        (REGISTER, BASE_SECRET, br#"{"app_id":"w1"}"#),
        (REPORT_TASK, "s1", truncated_report.as_bytes()),
        (REPORT_TASK, "s1", b"[]"),
        (REPORT_TASK, "s1", br#"{"task_id":"x"}"#),
    ];
    for (path, key, body) in cases {
        let envelope = f.agent.send(path, &go_signed_headers("w1", key, body, &go_time_now()), body).json();
        assert_refused(&envelope, "malformed JSON");
        let message = envelope["message"].as_str().unwrap();
        assert!(
            message.starts_with("malformed JSON"),
            "{path} {:?}: {message}",
            String::from_utf8_lossy(body)
        );
    }
    f.assert_unchanged(&before);
}

#[test]
fn non_utf8_body_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let mut report = b"\xff\xfe".to_vec();
    report.extend_from_slice(&f.report_body());
    let mut inside = f.report_body();
    let at = inside.len() - 3;
    inside.splice(at..at, *b"\xc3\x28");
    for (path, key, body) in [
        (REGISTER, BASE_SECRET, b"{\"app_id\":\"w1\",\"secret\":\"\xff\xfe\"}".to_vec()),
        (REPORT_TASK, "s1", report),
        (REPORT_TASK, "s1", inside),
    ] {
        let envelope = f.send(path, &go_signed_headers("w1", key, &body, &go_time_now()), &body);
        assert_refused(&envelope, "malformed JSON");
    }
    f.assert_unchanged(&before);
}

#[test]
fn oversized_body_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let big_result = "r".repeat(5 * 1024 * 1024);
    let report = go_report(&f.delivered, "success", &big_result).to_string().into_bytes();
    let register = json!({"app_id": "w1", "secret": big_result}).to_string().into_bytes();
    for (path, key, body) in [(REPORT_TASK, "s1", report), (REGISTER, BASE_SECRET, register)] {
        assert!(body.len() > 5 * 1024 * 1024);
        let envelope = f.send(path, &go_signed_headers("w1", key, &body, &go_time_now()), &body);
        assert_refused(&envelope, "larger than");
    }
    f.assert_unchanged(&before);
}

#[test]
fn unknown_app_id_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let ghost = GoAgent { addr: f.server.addr, app_id: "ghost".into(), secret: "s1".into() };
    assert_refused(&ghost.ping(), "unknown app id");
    assert_refused(&ghost.get_task(), "unknown app id");
    assert_refused(&ghost.report(&go_report(&f.delivered, "success", "x")), "unknown app id");
    assert!(f.server.agent("ghost").is_none(), "ghost was stored");
    f.assert_unchanged(&before);
}

#[test]
fn register_for_another_app_id_than_the_header_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    // Signed as w9 but naming w1 with a new secret: must neither create w9 nor rekey w1.
    let body = br#"{"app_id":"w1","secret":"stolen"}"#;
    let envelope = f.send(REGISTER, &go_signed_headers("w9", BASE_SECRET, body, &go_time_now()), body);
    assert_refused(&envelope, "differs from");
    assert!(f.server.agent("w9").is_none());
    f.assert_unchanged(&before);
}

#[test]
fn report_with_a_task_id_that_is_not_a_uuid_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let mut report = go_report(&f.delivered, "success", "x");
    for bad in ["not-a-uuid", "", "../../etc/passwd", &"9".repeat(300)] {
        report["task_id"] = json!(bad);
        assert_refused(&f.agent.report(&report), "is not a UUID");
    }
    f.assert_unchanged(&before);
}

#[test]
fn report_for_an_unknown_task_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    let unknown = uuid::Uuid::now_v7().to_string();
    let mut report = go_report(&f.delivered, "success", "x");
    report["task_id"] = json!(unknown);
    let envelope = f.agent.report(&report);
    assert_refused(&envelope, "unknown task");
    assert_eq!(envelope["message"], format!("unknown task {unknown}"));
    f.assert_unchanged(&before);
}

#[test]
fn report_for_another_agents_task_is_refused() {
    let mut f = Fixture::new();
    let w2 = GoAgent::new(&f.server, "w2", "s2").registered();
    let before = f.state();
    assert_refused(&w2.report(&go_report(&f.delivered, "success", "mine")), "belongs to another agent");
    let mut queued = go_report(&f.delivered, "failed", "mine too");
    queued["task_id"] = json!(f.queued);
    assert_refused(&w2.report(&queued), "belongs to another agent");
    f.assert_unchanged(&before);
}

#[test]
fn report_with_an_unknown_do_status_is_refused() {
    let mut f = Fixture::new();
    let before = f.state();
    for status in ["", "done", "SUCCESS"] {
        assert_refused(&f.agent.report(&go_report(&f.delivered, status, "x")), "is not one of");
    }
    f.assert_unchanged(&before);
}

#[test]
fn conflicting_report_after_success_is_refused_and_a_repeat_accepted() {
    let mut f = Fixture::new();
    let id = f.delivered_id().to_owned();
    assert_eq!(f.agent.report(&go_report(&f.delivered, "success", "first"))["code"], 0);
    let before = f.state();
    for status in ["failed", "timeout", "doing"] {
        let envelope = f.agent.report(&go_report(&f.delivered, status, "second"));
        assert_refused(&envelope, "already finished as succeeded");
        assert_eq!(envelope["message"], format!("task {id} already finished as succeeded"));
    }
    // The Go client retries a report whose answer it lost: the same final report is accepted.
    // Its signature covers the time to the second, so a retry a second later is a new request
    // (the very same bytes again would be refused as a replay).
    next_legacy_second();
    let repeat = f.agent.report(&go_report(&f.delivered, "success", "first"));
    assert_eq!(repeat, json!({"code": 0, "message": "task status updated successfully", "data": null}));
    let after = f.state();
    assert_eq!(after.tasks, before.tasks, "tasks changed");
    assert_eq!(after.agents, before.agents, "agents changed");
    let view = f.server.task(&id);
    assert_eq!((view.status.as_str(), view.result.as_str()), ("succeeded", "first"), "{view:?}");
    assert_eq!(f.server.agent("w1").unwrap().processed_task_count, 1, "a repeat was counted twice");
    f.server.assert_alive();
}

#[test]
fn get_task_on_an_empty_queue_never_answers_code_1() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let agent = GoAgent::new(&server, "w1", "s1").registered();
    for _ in 0..2 {
        assert_eq!(agent.get_task()["code"], 2);
    }
    // Several polls of the same agent at once, as after a client restart.
    let polls: Vec<_> = (0..4)
        .map(|_| {
            let agent = agent.clone();
            std::thread::spawn(move || agent.get_task())
        })
        .collect();
    for poll in polls {
        let envelope = poll.join().expect("poll thread");
        assert_eq!(envelope["code"], 2, "{envelope}");
    }
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// Admin API

#[test]
fn admin_api_requires_the_bearer_token() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let enqueue = br#"{"app_ids":["w1"],"task_type":"ping"}"#;
    let task = format!("/api/v1/tasks/{}", f.queued);
    let routes: [(&str, &str, &[u8]); 5] = [
        ("GET", "/api/v1/agents", b""),
        ("GET", "/api/v1/agents/w1", b""),
        ("GET", "/api/v1/tasks", b""),
        ("GET", &task, b""),
        ("POST", "/api/v1/tasks", enqueue),
    ];
    for (method, path, body) in routes {
        let none = http(f.server.addr, method, path, &[("Content-Type", "application/json")], body);
        assert_api_error(&none, 401, "");
        assert_api_error(&f.server.admin_raw(method, path, Some("wrong"), body), 401, "wrong admin token");
        assert_api_error(&f.server.admin_raw(method, path, Some(""), body), 401, "");
        let longer = format!("{token}x");
        assert_api_error(&f.server.admin_raw(method, path, Some(&longer), body), 401, "");
        let basic = format!("Basic {token}");
        let headers = [("Authorization", basic.as_str()), ("Content-Type", "application/json")];
        assert_api_error(&http(f.server.addr, method, path, &headers, body), 401, "Bearer");
    }
    // The right token works on the same requests.
    assert_eq!(f.server.admin_raw("GET", "/api/v1/agents", Some(&token), b"").status, 200);
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_refuses_malformed_json() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let bodies: [&[u8]; 5] = [
        br#"{"app_ids":["w1"],"#,
        b"",
        b"\xff\xfe{}",
        br#"{"app_ids":"w1","task_type":"ping"}"#,
        br#"{"app_ids":["w1"]}"#,
    ];
    for body in bodies {
        let response = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), body);
        assert_api_error(&response, 400, "malformed JSON");
    }
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_requires_targets() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let neither = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), br#"{"task_type":"ping"}"#);
    assert_api_error(&neither, 400, "give app_ids or set all");
    let empty = br#"{"app_ids":[],"all":false,"task_type":"ping"}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), empty), 400, "app_ids");
    let both = br#"{"app_ids":["w1"],"all":true,"task_type":"ping"}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), both), 400, "not both");
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_refuses_bad_task_fields() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    for task_type in ["", "../bin/sh", ".hidden", "a b"] {
        let body = json!({"app_ids": ["w1"], "task_type": task_type}).to_string();
        let response = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), body.as_bytes());
        assert_api_error(&response, 400, "task type");
    }
    let zero = br#"{"app_ids":["w1"],"task_type":"ping","timeout_secs":0}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), zero), 400, "timeout_secs");
    let bad_id = br#"{"app_ids":["w/1"],"task_type":"ping"}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), bad_id), 400, "app id");
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_refuses_unknown_agents_without_creating_any_task() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let ghost = br#"{"app_ids":["ghost"],"task_type":"ping"}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), ghost), 404, "unknown agent");
    // One known and one unknown agent: nothing is created for the known one either.
    let mixed = br#"{"app_ids":["w1","ghost"],"task_type":"ping"}"#;
    assert_api_error(&f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), mixed), 404, "ghost");
    assert_api_error(&f.server.admin_raw("GET", "/api/v1/agents/ghost", Some(&token), b""), 404, "ghost");
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_refuses_oversized_payload_and_body() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let over = json!({"app_ids": ["w1"], "task_type": "ping", "payload": "p".repeat(64 * 1024 + 1)});
    let response = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), over.to_string().as_bytes());
    assert_api_error(&response, 413, "payload");
    // Past the enqueue body limit (larger than other requests', as it may carry a stdin).
    let huge_len = orange::protocol::limits::MAX_ENQUEUE_BODY + 1;
    let huge = json!({"app_ids": ["w1"], "task_type": "ping", "payload": "p".repeat(huge_len)});
    let response = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), huge.to_string().as_bytes());
    assert_api_error(&response, 413, "larger than");
    f.assert_unchanged(&before);
    // Exactly at the limit is accepted.
    let at = json!({"app_ids": ["w1"], "task_type": "ping", "payload": "p".repeat(64 * 1024)});
    let response = f.server.admin_raw("POST", "/api/v1/tasks", Some(&token), at.to_string().as_bytes());
    assert_eq!(response.status, 201, "{}", response.text());
}

#[test]
fn admin_api_refuses_bad_and_unknown_task_ids_and_routes() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    for bad in ["not-a-uuid", "1234", "%2E%2E"] {
        let response = f.server.admin_raw("GET", &format!("/api/v1/tasks/{bad}"), Some(&token), b"");
        assert_api_error(&response, 400, "is not a UUID");
    }
    let unknown = uuid::Uuid::now_v7().to_string();
    let response = f.server.admin_raw("GET", &format!("/api/v1/tasks/{unknown}"), Some(&token), b"");
    assert_api_error(&response, 404, &format!("unknown task {unknown}"));
    let waited = Instant::now();
    let response = f.server.admin_raw("GET", &format!("/api/v1/tasks/{unknown}?wait=5"), Some(&token), b"");
    assert_api_error(&response, 404, "unknown task");
    assert!(waited.elapsed() < Duration::from_secs(3), "an unknown task was waited for");
    let response = f.server.admin_raw("GET", "/api/v1/tasks?limit=abc", Some(&token), b"");
    assert_api_error(&response, 400, "limit");
    for path in ["/api/v1/nope", "/api/v1/tasks/a/b", "/api/v2/tasks"] {
        assert_api_error(&f.server.admin_raw("GET", path, Some(&token), b""), 404, "no such API route");
    }
    f.assert_unchanged(&before);
}

#[test]
fn admin_api_answers_a_wrong_method_with_a_json_error() {
    let mut f = Fixture::new();
    let before = f.state();
    let token = f.server.token.clone();
    let task = format!("/api/v1/tasks/{}", f.queued);
    for (method, path) in [("DELETE", task.as_str()), ("PUT", "/api/v1/agents"), ("DELETE", "/api/v1/tasks")]
    {
        let response = f.server.admin_raw(method, path, Some(&token), b"");
        assert_api_error(&response, 405, "");
    }
    f.assert_unchanged(&before);
}
