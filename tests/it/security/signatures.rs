//! Forged, malformed and mistimed signatures, the failure limit per source and app id, and
//! the independent signers checked against the crate's.

use super::*;
use orange::protocol::limits::MAX_FAILURES_PER_APP_ID_SOURCE;

#[test]
fn forged_and_mismatched_v2_signatures_are_refused() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    GoAgent::new(&server, "w2", "s2").registered();
    let task = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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
    let before = Snapshot::of(&server);
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

/// Sends as many failed signatures for w1 from 127.0.0.1 as the limit per app id and source
/// allows, then checks the next one is refused by the limit, unchecked.
fn exhaust_failed_signatures(w1: &GoAgent) {
    for n in 1..=MAX_FAILURES_PER_APP_ID_SOURCE {
        let envelope = w1.send_signed(PING, "wrong", b"ping").json();
        assert_eq!(envelope["message"], "signature does not match for app id \"w1\"", "failure {n}");
    }
    let envelope = w1.send_signed(PING, "wrong", b"ping").json();
    assert_refused(
        &envelope,
        "too many failed attempts for app id \"w1\" from 127.0.0.1 (10 this minute); retry in ",
    );
}

#[test]
fn failed_signatures_are_limited_per_source_and_app_id() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    let task = server.enqueue(&["w1"], "PING", "")[0].task_id.clone();
    // A restart forgets where w1's good requests came from: 127.0.0.1 is now just an address.
    server.restart();
    let before = Snapshot::of(&server);
    leave_room_in_this_minute(10);
    exhaust_failed_signatures(&w1);
    // Until the minute ends, w1's requests from this address are deferred unchecked (HTTP 503:
    // agents retry them later; they are not dropped), since no good one came from it since.
    let limited = "too many failed attempts for app id \"w1\" from 127.0.0.1";
    assert_refused(&w1.ping(), limited);
    assert_refused(&w1.send_v2(PING, "s1", b"ping"), limited);
    assert_refused(&w1.register(), limited);
    let report = json!({"task_id": task, "do_status": "success"}).to_string();
    assert_refused(&w1.send_v2(REPORT_TASK, "s1", report.as_bytes()), limited);
    // Nothing about that is stored.
    assert_unchanged(&mut server, &before);
    assert_eq!(task_status(&server, &task), "queued");
    // Another app id from the same address is not held back.
    GoAgent::new(&server, "w2", "s2").registered();
}

#[test]
fn get_task_refused_by_the_failure_limit_keeps_an_original_client_polling() {
    let mut server = Server::start(ServerOpts::poll_window(1));
    let w1 = GoAgent::new(&server, "w1", "s1").registered();
    server.restart();
    leave_room_in_this_minute(10);
    exhaust_failed_signatures(&w1);
    // The original client exits on any getTask answer but 0 and 2 (PROTOCOL.md), so a
    // transient refusal of its correct poll must be code 2, as a replayed poll's is.
    let envelope = w1.get_task();
    let message = envelope["message"].as_str().unwrap_or_default();
    assert!(message.contains("too many failed attempts for app id \"w1\" from 127.0.0.1"), "{envelope}");
    assert_eq!(
        envelope["code"], 2,
        "a correctly signed getTask refused by the failure limit answers code 1, which makes an \
         original client exit: {envelope}"
    );
    server.assert_alive();
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
