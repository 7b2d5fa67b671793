//! Enrollment: taking over an app id, enrolling without a credential, enrollment tokens,
//! pending agents and their bound.

use super::*;
use orange::server::enroll::not_proven;

#[test]
fn taking_over_an_enrolled_app_id_is_refused_on_every_enrollment_route() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let owner = GoAgent::new(&server, "w1", "s1").registered();
    let task = server.enqueue(&["w1"], "PING", "for w1")[0].task_id.clone();
    let token = enroll_token(&server.create_token(3600, 5));
    let before = Snapshot::of(&server);
    let refusal = not_proven("w1");
    // The original client's way: the public key, legacy signature.
    let thief = GoAgent::new(&server, "w1", "stolen");
    let envelope = thief.register();
    assert_refused(&envelope, "refused: wrong signature or secret");
    assert_eq!(envelope["message"], refusal.as_str());
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
    assert_eq!(stranger.register()["message"], not_proven("p1").as_str());
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
    let before = Snapshot::of(&server);
    let refusal = register_refusal(&server, "web-01", "other", &Enrollment::Pending);
    assert_eq!(refusal, not_proven("web-01"));
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
        ("f1", Enrollment::Token(forged), not_proven("f1")),
        // A token's secret is not the enrollment key.
        ("k1", Enrollment::Key(good.secret.clone()), not_proven("k1")),
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
    let before = Snapshot::of(&server);
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
