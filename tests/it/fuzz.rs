//! Property tests of what reads hostile bytes, called directly (no server): signature
//! verification (legacy and version 2), the time header, the storage codec and the JSON bodies
//! of the agent endpoints. Every property runs a bounded number of cases and persists no
//! failures to disk, so the whole file takes seconds.
//!
//! The codec properties run each case in a child process (`fork`), so that an allocation
//! failure, which aborts rather than panics, fails the property instead of the whole file.

use chrono::DateTime;
use orange::protocol::bytes::Encoding;
use orange::protocol::sign::{
    Canonical, SignError, TIME_WINDOW_SECS, check_nonce, check_time, legacy_time_header, parse_time,
    time_header,
};
use orange::protocol::wire::{Envelope, OutputChunk, RegisterRequest, ReportRequest, WireTask};
use orange::protocol::{Signer, TaskStatus};
use orange::server::codec;
use orange::server::store::{AgentRecord, AgentStatus, AuditRecord, OutputState, TaskRecord, TokenRecord};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

/// `cases` cases, no regression files written next to the tests.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// [`config`] with the cases run in a child process, which is started again after a crash.
/// Shrinking is cut short: every crashing try costs a process (and, with `RUST_BACKTRACE`
/// set, a symbolized backtrace).
fn forked(cases: u32) -> ProptestConfig {
    ProptestConfig { fork: true, max_shrink_iters: 16, ..config(cases) }
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Any text: control characters, NUL, any Unicode scalar value.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..48).prop_map(String::from_iter)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..256)
}

/// A secret as HMAC sees it: trailing NULs pad the key, so `a` and `a\0` are the same key;
/// the properties compare keys without them.
fn key() -> impl Strategy<Value = String> {
    text().prop_map(|k| k.trim_end_matches('\0').to_owned())
}

/// Strings a signature header might hold: anything, hex of about the right length in either
/// case, and 64 characters of any kind.
fn signature_text() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        "[0-9a-fA-F]{64}",
        "[0-9a-f]{60,68}",
        prop::collection::vec(any::<char>(), 64).prop_map(String::from_iter),
    ]
}

/// Strings a time header might hold: anything, digit runs around the 12-digit cut, and
/// date-like text with years far outside the calendar.
fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        "[0-9]{0,25}",
        "[+-]?[0-9]{1,14}",
        "[+-]?[0-9]{1,7}-[0-9]{1,2}-[0-9]{1,2} [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}.{0,6}",
    ]
}

fn task_status() -> impl Strategy<Value = TaskStatus> {
    prop::sample::select(TaskStatus::ALL.to_vec())
}

fn output_state() -> impl Strategy<Value = OutputState> {
    (any::<u32>(), any::<u64>(), any::<Option<u32>>(), any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
        |(next_seq, head_bytes, tail_start, tail_oldest, tail_bytes, dropped_bytes)| OutputState {
            next_seq,
            head_bytes,
            tail_start,
            tail_oldest,
            tail_bytes,
            dropped_bytes,
        },
    )
}

fn task_record() -> impl Strategy<Value = TaskRecord> {
    let head = (
        any::<[u8; 16]>(),
        text(),
        text(),
        text(),
        task_status(),
        any::<u64>(),
        any::<i64>(),
        prop::collection::vec((task_status(), any::<i64>()), 0..8),
    );
    let tail = (
        any::<u64>(),
        any::<bool>(),
        any::<i64>(),
        any::<bool>(),
        any::<Option<i32>>(),
        prop::option::of(text()),
        any::<Option<u64>>(),
        output_state(),
    );
    (head, tail).prop_map(
        |(
            (id, app_id, task_type, payload, status, timeout_secs, expires_ms, history),
            (queue_seq, ack_required, deadline_ms, cancel_requested, exit_code, error, duration_ms, output),
        )| TaskRecord {
            id: uuid::Uuid::from_bytes(id),
            app_id,
            env: std::collections::BTreeMap::from([(task_type.clone(), payload.clone())]),
            cwd: (timeout_secs % 2 == 0).then(|| payload.clone()),
            user: None,
            secret_names: Default::default(),
            stdin: Vec::new(),
            task_type,
            payload,
            status,
            timeout_secs,
            expires_ms,
            history,
            queue_seq,
            ack_required,
            deadline_ms,
            cancel_requested,
            exit_code,
            error,
            duration_ms,
            output,
            attempt: (queue_seq % 11) as u32,
        },
    )
}

fn agent_record() -> impl Strategy<Value = AgentRecord> {
    let status =
        prop::sample::select(vec![AgentStatus::Pending, AgentStatus::Accepted, AgentStatus::Forgotten]);
    (
        text(),
        text(),
        prop::collection::btree_map(text(), text(), 0..6),
        prop::option::of(text()),
        prop::option::of(text()),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
        status,
    )
        .prop_map(
            |(
                app_id,
                secret,
                labels,
                version,
                hostname,
                registered_at_ms,
                last_seen_ms,
                processed_task_count,
                status,
            )| {
                AgentRecord {
                    app_id,
                    secret,
                    labels,
                    version,
                    hostname,
                    registered_at_ms,
                    last_seen_ms,
                    processed_task_count,
                    status,
                }
            },
        )
}

fn token_record() -> impl Strategy<Value = TokenRecord> {
    (text(), text(), any::<i64>(), any::<i64>(), any::<u32>(), any::<bool>()).prop_map(
        |(id, secret, created_ms, expires_ms, uses_left, revoked)| TokenRecord {
            id,
            secret,
            created_ms,
            expires_ms,
            uses_left,
            revoked,
        },
    )
}

fn audit_record() -> impl Strategy<Value = AuditRecord> {
    (any::<i64>(), text(), text(), text(), text()).prop_map(|(at_ms, actor, action, target, detail)| {
        AuditRecord { at_ms, actor, action, target, detail }
    })
}

/// Stored bytes as corruption could leave them: anything; anything after the right version
/// byte; and a value whose first length prefix is any 64-bit number (bincode's varint marker
/// 253 followed by 8 bytes), where the first field of a task record, its id, has its length.
fn stored_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes(),
        bytes().prop_map(|b| [vec![codec::FORMAT_VERSION], b].concat()),
        (any::<u64>(), bytes()).prop_map(|(len, rest)| {
            [vec![codec::FORMAT_VERSION, 253], len.to_le_bytes().to_vec(), rest].concat()
        }),
    ]
}

/// JSON values shaped like the agent bodies: their field names among random ones, leaves of
/// every type, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        prop::sample::select(vec![
            "task_id",
            "task_type",
            "do_status",
            "create_at",
            "payload",
            "result",
            "exit_code",
            "stdout",
            "stderr",
            "duration_ms",
            "error",
            "output_chunks",
            "app_id",
            "secret",
            "labels",
            "version",
            "hostname",
            "seq",
            "stream",
            "data",
            "timeout_secs",
            "code",
            "message",
        ])
        .prop_map(str::to_owned),
        text(),
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field.clone(), inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn report_request() -> impl Strategy<Value = ReportRequest> {
    let head = (text(), text(), text(), text(), text(), text());
    let tail = (
        any::<Option<i32>>(),
        prop::option::of(text()),
        prop::option::of(text()),
        any::<Option<u64>>(),
        prop::option::of(text()),
        any::<Option<u32>>(),
    );
    (head, tail).prop_map(
        |(
            (task_id, task_type, do_status, create_at, payload, result),
            (exit_code, stdout, stderr, duration_ms, error, output_chunks),
        )| ReportRequest {
            task_id,
            task_type,
            do_status,
            create_at,
            payload,
            result,
            exit_code,
            stdout_encoding: stdout.as_ref().filter(|s| s.len() % 2 == 1).map(|_| Encoding::Base64),
            stdout,
            stderr,
            stderr_encoding: None,
            duration_ms,
            error,
            output_chunks,
            attempt: None,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Mutations

fn flip_byte(bytes: &mut Vec<u8>, at: Index, flip: u8) {
    if bytes.is_empty() {
        bytes.push(flip);
    } else {
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
    }
}

/// Replaces one character of `text` by another (or adds one to an empty text).
fn change_char(text: &mut String, at: Index, flip: u8) {
    let mut chars: Vec<char> = text.chars().collect();
    if chars.is_empty() {
        chars.push(char::from(flip));
    } else {
        let i = at.index(chars.len());
        let old = chars[i];
        chars[i] = char::from_u32(old as u32 ^ u32::from(flip))
            .filter(|c| *c != old)
            .unwrap_or(if old == 'a' { 'b' } else { 'a' });
    }
    *text = chars.into_iter().collect();
}

/// `signature` with one hex digit changed to another value (not merely another case).
fn change_digit(signature: &str, at: Index, flip: u8) -> String {
    let i = at.index(signature.len());
    let digit = u8::from_str_radix(&signature[i..=i], 16).expect("hex signature");
    let changed = digit ^ (flip % 15 + 1);
    format!("{}{changed:x}{}", &signature[..i], &signature[i + 1..])
}

// ---------------------------------------------------------------------------------------------
// Signatures

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn a_legacy_signature_verifies_only_under_its_key_and_request(
        key in key(),
        other in key(),
        app_id in text(),
        body in bytes(),
        time in text(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        prop_assume!(key != other);
        let signer = Signer::new(&key);
        let signature = signer.sign(&app_id, &body, &time);
        prop_assert!(signer.verify(&app_id, &body, &time, &signature).is_ok());
        prop_assert!(signer.verify(&app_id, &body, &time, &signature.to_uppercase()).is_ok());
        prop_assert_eq!(Signer::new(&other).verify(&app_id, &body, &time, &signature), Err(SignError::Mismatch));
        let mut changed = body.clone();
        flip_byte(&mut changed, at, flip);
        prop_assert_eq!(signer.verify(&app_id, &changed, &time, &signature), Err(SignError::Mismatch));
        let mut later = time.clone();
        change_char(&mut later, at, flip);
        prop_assert_eq!(signer.verify(&app_id, &body, &later, &signature), Err(SignError::Mismatch));
        let forged = change_digit(&signature, at, flip);
        prop_assert_eq!(signer.verify(&app_id, &body, &time, &forged), Err(SignError::Mismatch));
    }

    #[test]
    fn legacy_verify_never_panics_and_accepts_only_the_signature(
        key in key(),
        app_id in text(),
        body in bytes(),
        time in text(),
        signature in signature_text(),
    ) {
        let signer = Signer::new(&key);
        let result = signer.verify(&app_id, &body, &time, &signature);
        let real = signer.sign(&app_id, &body, &time);
        prop_assert_eq!(result.is_ok(), signature.eq_ignore_ascii_case(&real), "{:?}", result);
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            prop_assert_eq!(result, Err(SignError::BadHex));
        }
    }

    #[test]
    fn changing_any_signed_part_breaks_a_v2_signature(
        key in key(),
        other in key(),
        path in text(),
        app_id in text(),
        time in text(),
        nonce in text(),
        body in bytes(),
        part in 0..6usize,
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        prop_assume!(key != other);
        let signer = Signer::new(&key);
        let request = Canonical { method: "POST", path: &path, app_id: &app_id, time: &time, nonce: &nonce, body: &body };
        let signature = signer.sign_v2(&request);
        prop_assert!(signer.verify_v2(&request, &signature).is_ok());
        prop_assert_eq!(Signer::new(&other).verify_v2(&request, &signature), Err(SignError::Mismatch));
        let (mut path2, mut app_id2, mut time2, mut nonce2, mut body2) =
            (path.clone(), app_id.clone(), time.clone(), nonce.clone(), body.clone());
        let mut signature2 = signature.clone();
        match part {
            0 => flip_byte(&mut body2, at, flip),
            1 => change_char(&mut time2, at, flip),
            2 => change_char(&mut nonce2, at, flip),
            3 => change_char(&mut path2, at, flip),
            4 => change_char(&mut app_id2, at, flip),
            _ => signature2 = change_digit(&signature, at, flip),
        }
        let changed =
            Canonical { method: "POST", path: &path2, app_id: &app_id2, time: &time2, nonce: &nonce2, body: &body2 };
        prop_assert_eq!(signer.verify_v2(&changed, &signature2), Err(SignError::Mismatch), "part {}", part);
        let other_method = Canonical { method: "GET", ..request };
        prop_assert_eq!(signer.verify_v2(&other_method, &signature), Err(SignError::Mismatch));
    }

    #[test]
    fn v2_verify_accepts_a_changed_signature_only_if_it_differs_in_letter_case(
        key in key(),
        path in text(),
        nonce in text(),
        body in bytes(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let signer = Signer::new(&key);
        let request = Canonical { method: "POST", path: &path, app_id: "w1", time: "1795677383", nonce: &nonce, body: &body };
        let signature = signer.sign_v2(&request);
        let mut raw = signature.clone().into_bytes();
        flip_byte(&mut raw, at, flip);
        let changed = String::from_utf8_lossy(&raw).into_owned();
        let result = signer.verify_v2(&request, &changed);
        prop_assert_eq!(result.is_ok(), changed.eq_ignore_ascii_case(&signature), "{:?} -> {:?}", changed, result);
    }

    #[test]
    fn nonce_check_accepts_exactly_32_hex_digits(nonce in prop_oneof![text(), "[0-9a-fA-F]{30,34}"]) {
        let plain = nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(check_nonce(&nonce).is_ok(), plain);
    }
}

// ---------------------------------------------------------------------------------------------
// Time headers

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn time_headers_never_panic_and_the_window_is_symmetric(
        header in time_text(),
        now_secs in -8_000_000_000_000_i64..8_000_000_000_000,
    ) {
        let now = DateTime::from_timestamp(now_secs, 0).expect("inside chrono's range");
        let parsed = parse_time(&header);
        let checked = check_time(&header, now);
        match parsed {
            Err(e) => {
                prop_assert!(matches!(e, SignError::BadTime(_)), "{:?}", e);
                prop_assert!(matches!(checked, Err(SignError::BadTime(_))), "{:?}", checked);
            }
            Ok(sent) => {
                let inside = sent.abs_diff(now_secs) <= TIME_WINDOW_SECS as u64;
                prop_assert_eq!(checked.is_ok(), inside, "{:?} at {}: {:?}", header, now_secs, checked);
            }
        }
        // Against the real clock as well.
        let _ = check_time(&header, chrono::Utc::now());
    }

    #[test]
    fn time_headers_round_trip_and_the_window_is_300_s(now_secs in 10_000_i64..4_000_000_000, skew in -1000_i64..1000) {
        let now = DateTime::from_timestamp(now_secs, 0).expect("in range");
        let sent = DateTime::from_timestamp(now_secs + skew, 0).expect("in range");
        let unix = time_header(sent);
        prop_assert_eq!(parse_time(&unix), Ok(now_secs + skew));
        prop_assert_eq!(check_time(&unix, now).is_ok(), skew.abs() <= TIME_WINDOW_SECS);
        // The legacy layout is local wall-clock time: a time repeated by a DST change reads as
        // its earlier instant.
        let legacy = legacy_time_header(sent);
        let back = parse_time(&legacy);
        prop_assert!(back.is_ok(), "{:?} does not parse: {:?}", legacy, back);
        let back = back.unwrap_or_default();
        prop_assert!(back <= now_secs + skew && now_secs + skew - back <= 3600, "{:?} -> {}", legacy, back);
    }
}

// ---------------------------------------------------------------------------------------------
// Storage codec

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn the_codec_round_trips_stored_records(
        task in task_record(),
        agent in agent_record(),
        token in token_record(),
        audit in audit_record(),
        at in any::<Index>(),
    ) {
        let encoded = codec::encode(&task);
        prop_assert_eq!(encoded[0], <TaskRecord as codec::Record>::VERSION);
        prop_assert_eq!(codec::decode::<TaskRecord>(&encoded).ok(), Some(task));
        // Cut short, or with a byte more, it is refused, never half-read.
        let cut = at.index(encoded.len());
        prop_assert!(codec::decode::<TaskRecord>(&encoded[..cut]).is_err());
        let longer = [encoded.as_slice(), &[0]].concat();
        prop_assert!(codec::decode::<TaskRecord>(&longer).is_err());
        prop_assert!(codec::decode::<AgentRecord>(&codec::encode(&agent)).ok() == Some(agent));
        prop_assert!(codec::decode::<TokenRecord>(&codec::encode(&token)).ok() == Some(token));
        prop_assert_eq!(codec::decode::<AuditRecord>(&codec::encode(&audit)).ok(), Some(audit));
    }
}

proptest! {
    #![proptest_config(forked(256))]

    #[test]
    fn decoding_arbitrary_stored_bytes_never_panics_or_aborts(bytes in stored_bytes()) {
        let _ = codec::decode::<TaskRecord>(&bytes);
        let _ = codec::decode::<AgentRecord>(&bytes);
        let _ = codec::decode::<TokenRecord>(&bytes);
        let _ = codec::decode::<AuditRecord>(&bytes);
        let _ = codec::decode::<orange::server::store::JobRecord>(&bytes);
        let _ = codec::decode::<orange::server::store::TargetRecord>(&bytes);
        let _ = codec::decode::<orange::server::store::FactsRecord>(&bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// JSON bodies

/// Decodes `body` as every JSON body an agent endpoint reads; none may panic.
fn decode_all(body: &[u8]) {
    let _ = serde_json::from_slice::<ReportRequest>(body);
    let _ = serde_json::from_slice::<RegisterRequest>(body);
    let _ = serde_json::from_slice::<OutputChunk>(body);
    let _ = serde_json::from_slice::<WireTask>(body);
    let _ = serde_json::from_slice::<Envelope<Value>>(body);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn agent_bodies_never_panic_on_arbitrary_bytes(body in bytes()) {
        decode_all(&body);
    }

    #[test]
    fn agent_bodies_never_panic_on_json_of_any_shape(value in json_value(), cut in any::<Index>()) {
        let body = serde_json::to_vec(&value).expect("a Value serializes");
        decode_all(&body);
        decode_all(&body[..cut.index(body.len() + 1)]);
    }

    #[test]
    fn deep_nesting_is_refused_without_exhausting_the_stack(
        depth in 129_usize..20_000,
        open in prop::sample::select(vec!["[", "{\"task_id\":", "{\"labels\":"]),
        balanced in any::<bool>(),
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let mut body = open.repeat(depth);
        if balanced {
            body.push_str("null");
            body.push_str(&close.repeat(depth));
        }
        prop_assert!(serde_json::from_str::<ReportRequest>(&body).is_err());
        prop_assert!(serde_json::from_str::<RegisterRequest>(&body).is_err());
        prop_assert!(serde_json::from_str::<OutputChunk>(&body).is_err());
        prop_assert!(serde_json::from_str::<Value>(&body).is_err());
    }

    #[test]
    fn reports_round_trip_through_json(report in report_request()) {
        let body = serde_json::to_vec(&report).expect("a report serializes");
        prop_assert_eq!(serde_json::from_slice::<ReportRequest>(&body).ok(), Some(report));
    }
}

// ---------------------------------------------------------------------------------------------
// Output bytes in JSON

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn any_output_round_trips_through_a_json_chunk_and_text_stays_text(
        raw in prop::collection::vec(any::<u8>(), 0..2048),
        words in text(),
    ) {
        for output in [raw, words.into_bytes()] {
            let chunk = OutputChunk::new("t", 0, "stdout", &output);
            prop_assert_eq!(chunk.encoding.is_none(), std::str::from_utf8(&output).is_ok());
            let body = serde_json::to_vec(&chunk).expect("a chunk serializes");
            let back: OutputChunk = serde_json::from_slice(&body).expect("a chunk decodes");
            prop_assert_eq!(back.bytes(), Ok(output));
        }
    }

    #[test]
    fn marked_data_that_is_not_base64_is_an_error_never_a_panic(data in text()) {
        let chunk = OutputChunk { task_id: "t".into(), seq: 0, stream: "stdout".into(), data, encoding: Some(Encoding::Base64), attempt: None };
        if let Ok(bytes) = chunk.bytes() {
            prop_assert_eq!(OutputChunk::new("t", 0, "stdout", &bytes).bytes(), Ok(bytes));
        }
    }
}
