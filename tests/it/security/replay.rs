//! Replays of signed requests, also across a restart and a crash.

use super::*;

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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
    assert_eq!(replay(server.addr, &captured_doing).json(), refusal);
    assert_unchanged(&mut server, &before);
    let done = go_report(&task, "success", "done").to_string();
    let captured_done = w1.legacy_request(REPORT_TASK, "s1", done.as_bytes());
    assert_eq!(replay(server.addr, &captured_done).json()["code"], 0);
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
