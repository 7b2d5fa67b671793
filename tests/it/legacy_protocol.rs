//! The original Go client's protocol, spoken byte for byte over raw sockets: Go's request layout,
//! canonicalized header names, the legacy local time layout and a signature computed here
//! independently of the crate.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support;
use crate::support::{
    GoAgent, REGISTER, Server, ServerOpts, go_report, go_request, go_sign, go_time_now, next_legacy_second,
    raw_exchange,
};

#[test]
fn original_client_full_flow_byte_for_byte() {
    let mut server = Server::start(ServerOpts::default());
    let before = chrono::Utc::now().timestamp();

    // register, written out in full so the bytes on the wire are visible in the test.
    let body = br#"{"app_id":"w1","secret":"s1"}"#;
    let time = go_time_now();
    let sign = go_sign("orange-forge", "w1", body, &time);
    let mut request = format!(
        "POST /orange-forge/api/register HTTP/1.1\r\nHost: {}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: {}\r\nContent-Type: application/json\r\nX-Forge-Appid: w1\r\n\
         X-Forge-Sign: {sign}\r\nX-Forge-Time: {time}\r\nAccept-Encoding: gzip\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let response = raw_exchange(server.addr, request, Duration::from_secs(30)).expect("register exchange");
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response.header("content-type").is_some_and(|v| v.starts_with("application/json")),
        "content type: {response:?}"
    );
    let envelope = response.json();
    assert_eq!(envelope["code"], 0, "{envelope}");
    assert_eq!(envelope["message"], "registration successful", "{envelope}");
    let data = envelope["data"].as_object().expect("data is an object");
    let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["app_id", "do_status", "last_ping_time", "processed_task_count", "register_time", "secret"],
        "{envelope}"
    );
    assert_eq!(data["app_id"], "w1");
    assert_eq!(data["secret"], "***");
    assert_eq!(data["do_status"], "registered");
    assert_eq!(data["processed_task_count"], 0);
    let after = chrono::Utc::now().timestamp();
    for field in ["register_time", "last_ping_time"] {
        let t = data[field].as_i64().unwrap_or_else(|| panic!("{field} is not an integer: {envelope}"));
        assert!((before - 1..=after + 1).contains(&t), "{field} {t} not within [{before}, {after}]");
    }

    let agent = GoAgent::new(&server, "w1", "s1");
    // ping: compared as text, exactly.
    let pong = agent.send_signed(support::PING, "s1", b"ping");
    assert_eq!(pong.text().trim_end(), r#"{"code":0,"message":"pong","data":"pong"}"#);

    let queued = server.enqueue(&["w1"], "PING", "x");
    let task_id = &queued[0].task_id;

    let fetched = agent.get_task();
    assert_eq!(fetched["code"], 0, "{fetched}");
    assert_eq!(fetched["message"], "task fetched", "{fetched}");
    let task = &fetched["data"];
    assert_eq!(task["task_id"], task_id.as_str(), "{fetched}");
    assert_eq!(task["task_type"], "PING", "{fetched}");
    assert_eq!(task["do_status"], "", "{fetched}");
    assert_eq!(task["payload"], "x", "{fetched}");
    assert_eq!(task["result"], "", "{fetched}");
    let create_at = task["create_at"].as_str().expect("create_at is a string");
    let created = chrono::DateTime::parse_from_rfc3339(create_at)
        .unwrap_or_else(|e| panic!("create_at {create_at:?} is not RFC 3339: {e}"));
    assert!((created.timestamp() - after).abs() < 60, "create_at {create_at} is not now");
    assert_eq!(server.task(task_id).status.as_str(), "delivered");

    let report = go_report(task, "success", "hello");
    let answer = agent.send_signed(support::REPORT_TASK, "s1", report.to_string().as_bytes());
    assert_eq!(
        answer.json(),
        json!({"code": 0, "message": "task status updated successfully", "data": null}),
        "{}",
        answer.text()
    );

    let view = server.task(task_id);
    assert_eq!(view.status.as_str(), "succeeded", "{view:?}");
    assert_eq!(view.result, "hello", "{view:?}");
    assert_eq!(view.app_id, "w1");
    let states: Vec<&str> = view.history.iter().map(|step| step.status.as_str()).collect();
    assert_eq!(states, ["queued", "delivered", "running", "succeeded"], "{view:?}");
    let listed = server.agent("w1").expect("w1 is listed");
    assert_eq!(listed.processed_task_count, 1, "{listed:?}");
    assert!(listed.online, "{listed:?}");
    server.assert_alive();
}

#[test]
fn register_again_keeps_the_agent_and_counts() {
    let server = Server::start(ServerOpts::default());
    let agent = GoAgent::new(&server, "w1", "s1").registered();
    let task = server.enqueue(&["w1"], "PING", "")[0].clone();
    let wire = agent.take(&task.task_id);
    assert_eq!(agent.report(&go_report(&wire, "success", "ok"))["code"], 0);

    // The original client registers again on every start (a process start later: the legacy
    // signature covers the time to the second, so the same register within one second would be
    // the same request, refused as a replay).
    next_legacy_second();
    let again = agent.register();
    assert_eq!(again["code"], 0, "{again}");
    assert_eq!(again["data"]["processed_task_count"], 1, "{again}");
    assert_eq!(agent.ping()["code"], 0);
}

#[test]
fn unix_seconds_time_header_is_accepted() {
    let server = Server::start(ServerOpts::default());
    let agent = GoAgent::new(&server, "w1", "s1").registered();
    let time = chrono::Utc::now().timestamp().to_string();
    let headers = support::go_signed_headers("w1", "s1", b"ping", &time);
    let envelope = agent.send(support::PING, &headers, b"ping").json();
    assert_eq!(envelope, json!({"code": 0, "message": "pong", "data": "pong"}));
}

#[test]
fn get_task_with_nothing_queued_answers_code_2_after_the_window() {
    let server = Server::start(ServerOpts::poll_window(1));
    let agent = GoAgent::new(&server, "w1", "s1").registered();
    let started = Instant::now();
    let envelope = agent.get_task();
    let elapsed = started.elapsed();
    assert_eq!(envelope["code"], 2, "{envelope}");
    assert!(envelope["data"].is_null(), "{envelope}");
    assert!(elapsed >= Duration::from_millis(900), "answered after {elapsed:?}, before the 1 s window");
    assert!(elapsed < Duration::from_secs(10), "answered after {elapsed:?}");
}

#[test]
fn parked_get_task_is_answered_when_a_task_is_enqueued() {
    let server = Server::start(ServerOpts::poll_window(20));
    let agent = GoAgent::new(&server, "w1", "s1").registered();
    let poller = agent.clone();
    let parked = std::thread::spawn(move || {
        let started = Instant::now();
        (poller.get_task(), started.elapsed())
    });
    // No observable "parked" state exists; give the poll a moment to park. If the enqueue wins
    // the race anyway the assertions below still hold, they are only less sharp.
    std::thread::sleep(Duration::from_millis(500));
    let task = server.enqueue(&["w1"], "PING", "wake")[0].clone();
    let enqueued_at = Instant::now();
    let (envelope, total) = parked.join().expect("poller thread");
    let latency = enqueued_at.elapsed();
    assert_eq!(envelope["code"], 0, "{envelope}");
    assert_eq!(envelope["data"]["task_id"], task.task_id.as_str(), "{envelope}");
    assert_eq!(envelope["data"]["payload"], "wake", "{envelope}");
    assert!(total < Duration::from_secs(10), "poll took {total:?}: it waited for the window");
    assert!(latency < Duration::from_secs(3), "task arrived {latency:?} after its enqueue was acknowledged");
}

#[test]
fn register_with_an_empty_secret_is_refused() {
    let server = Server::start(ServerOpts::default());
    // Go's client with an empty secret: the original refuses it too.
    let body = br#"{"app_id":"w1","secret":""}"#;
    let time = go_time_now();
    let headers = support::go_signed_headers("w1", "orange-forge", body, &time);
    let request = go_request(server.addr, REGISTER, &headers, body);
    let response = raw_exchange(server.addr, request, Duration::from_secs(30)).expect("exchange");
    let envelope = response.json();
    assert_eq!(envelope["code"], 1, "{envelope}");
    assert!(envelope["message"].as_str().unwrap_or("").contains("secret"), "{envelope}");
    assert!(server.agent("w1").is_none(), "an agent with an empty secret was stored");
}
