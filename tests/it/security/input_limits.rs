//! Hostile bodies and names, slow and oversized request heads, and bounded queues.

use super::*;

#[test]
fn deeply_nested_json_is_refused_and_the_server_lives() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let id = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    w1.take(&id);
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
