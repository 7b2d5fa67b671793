//! Operator and agent credentials kept apart, wrong admin tokens limited, and the audit
//! record of every operator action and enrollment.

use super::*;

#[test]
fn agent_and_enrollment_credentials_are_not_admin_tokens() {
    let mut server = private_server();
    enroll(&server, "w1", "s1", PRIVATE_KEY);
    let task = server.enqueue(&["w1"], "ping", "")[0].task_id.clone();
    let token = enroll_token(&server.create_token(3600, 1));
    let before = Snapshot::of(&server);
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
        assert_api_error(&http(server.addr, method, path, &headers, body), 401, "missing Authorization");
        let lower = format!("bearer {}", server.token);
        let response = http(server.addr, method, path, &[("Authorization", lower.as_str())], body);
        assert_api_error(&response, 401, "Authorization must be \"Bearer <token>\"");
        let query = format!("{path}?token={}", server.token);
        assert_api_error(&server.admin_raw(method, &query, None, body), 401, "missing Authorization");
    }
    assert_unchanged(&mut server, &before);
}

#[test]
fn wrong_admin_tokens_are_limited_per_source_for_the_rest_of_the_minute_but_never_the_right_one() {
    let mut server = private_server();
    let before = Snapshot::of(&server);
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
    // The right token is checked first: it is never refused, from that source either.
    let right = server.admin_raw("GET", "/api/v1/agents", Some(&server.token.clone()), b"");
    assert_eq!(right.status, 200, "{}", right.text());
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
    let before = Snapshot::of(&server);
    // Register a new app id, or w1 itself, with the admin token as its secret: every route,
    // answered as any wrong secret is.
    for app_id in ["evil", "w1"] {
        let refusal = orange::server::enroll::not_proven(app_id);
        let refusal = refusal.as_str();
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
    let not_proven = orange::server::enroll::not_proven("w1");
    assert_refused(&w1.send_signed(REGISTER, &admin, body.as_bytes()).json(), &not_proven);
    assert_refused(&w1.send_v2(REGISTER, &admin, body.as_bytes()), &not_proven);
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
}

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
        (admin, "task.send", task.as_str(), "type ping, payload \"hello\"".to_owned()),
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
        &["audit", "--kind", "all", "--server", &server.url, "--json"],
        &[("ORANGE_TOKEN", server.token.as_str())],
        Duration::from_secs(30),
    );
    run.assert_success();
    let listed: Vec<AuditEntry> =
        serde_json::from_value(run.json()["entries"].clone()).expect("audit entries");
    assert_eq!(listed, server.audit());
    // Refused operator calls and refused enrollments leave no entry.
    let before = Snapshot::of(&server);
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
