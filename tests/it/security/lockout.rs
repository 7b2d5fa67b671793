//! Lock-out is precise: a host failing its signatures from an agent's address (as one behind the
//! same NAT would) does not stop that agent, and wrong admin tokens from the operator's address
//! do not stop the operator's right one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::support::{Agent, AgentOpts, Connection};

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Bad signatures sent before the agent is asked to run a task (and more while it runs it).
const BAD_SIGNATURES: usize = 100;

/// Registers `app_id` with `secret` from `source`, with the public enrollment key.
fn register_from(server: &Server, source: Ipv4Addr, app_id: &str, secret: &str) {
    let body = json!({"app_id": app_id, "secret": secret}).to_string();
    let headers = go_signed_headers(app_id, BASE_SECRET, body.as_bytes(), &go_time_now());
    let request = go_request(server.addr, REGISTER, &headers, body.as_bytes());
    let response = Connection::new(source, server.addr).exchange(&request).expect("register");
    assert_eq!(response.json()["code"], 0, "register {app_id} from {source}: {}", response.text());
}

/// Sends pings for `x` signed with a wrong key from 127.0.0.1 until `stop`; counts them in
/// `sent` and returns the messages of the answers.
fn bad_host(server: &Server, stop: &AtomicBool, sent: &AtomicUsize) -> BTreeSet<String> {
    let mut connection = Connection::new(LOCAL, server.addr);
    let mut messages = BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        let headers = v2_headers(PING, "x", "wrong", b"ping", &unix_time_now(), &fresh_nonce());
        let request = go_request(server.addr, PING, &headers, b"ping");
        let response = connection.exchange(&request).expect("bad ping");
        let envelope = response.json();
        assert_ne!(envelope["code"], 0, "a bad signature was accepted: {envelope}");
        let message = envelope["message"].as_str().unwrap_or_default();
        // The retry time changes; the rest of the message does not.
        messages.insert(message.split("; retry in").next().unwrap_or_default().to_owned());
        sent.fetch_add(1, Ordering::SeqCst);
    }
    messages
}

#[test]
fn a_host_failing_from_the_agents_address_does_not_lock_the_agent_out() {
    let server = Server::start(ServerOpts::poll_window(1));
    let mut agent = Agent::start_online(&server, "h1", AgentOpts::default());
    register_from(&server, Ipv4Addr::new(127, 0, 0, 2), "x", "sx");
    let (stop, sent) = (AtomicBool::new(false), AtomicUsize::new(0));
    let messages = std::thread::scope(|scope| {
        let attacker = scope.spawn(|| bad_host(&server, &stop, &sent));
        wait_until(Duration::from_secs(60), "the bad signatures", || {
            sent.load(Ordering::SeqCst) >= BAD_SIGNATURES
        });
        // The bad host keeps failing while h1, on the same address, gets and runs a task.
        let started = Instant::now();
        let task = server.enqueue(&["h1"], "ping", "")[0].task_id.clone();
        let status = server.wait_task(&task, 30).status;
        let took = started.elapsed();
        stop.store(true, Ordering::SeqCst);
        let messages = attacker.join().expect("bad host");
        assert_eq!(status.as_str(), "succeeded", "h1's task after {took:?}");
        assert!(took < Duration::from_secs(30), "h1 took {took:?} to run a task");
        messages
    });
    let expected = BTreeSet::from([
        "signature does not match for app id \"x\"".to_owned(),
        "too many failed attempts for app id \"x\" from 127.0.0.1 (10 this minute)".to_owned(),
    ]);
    assert!(messages.is_subset(&expected), "{messages:?}");
    assert_eq!(messages.len(), 2, "{messages:?}");
    agent.assert_running();
}

#[test]
fn wrong_admin_tokens_from_the_operators_address_do_not_lock_the_operator_out() {
    let server = private_server();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let guessers: Vec<_> = (0..10)
            .map(|t| {
                let server = &server;
                scope.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let token = format!("guess-{t}-{i}");
                            server.admin_raw("GET", "/api/v1/agents", Some(&token), b"").status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        guessers.into_iter().flat_map(|g| g.join().expect("guesser")).collect()
    });
    let unauthorized = statuses.iter().filter(|&&s| s == 401).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    // Unless the minute turned meanwhile, exactly the limit got 401.
    assert!(unauthorized >= MAX_FAILURES_PER_MINUTE as usize, "{statuses:?}");
    assert_eq!(unauthorized + limited, 100, "{statuses:?}");
    assert!(limited > 0, "wrong tokens were never limited: {statuses:?}");
    // The operator's right token works at once, from the same address.
    let started = Instant::now();
    let run = cli_with(
        &["agents", "--server", &server.url, "--json"],
        &[("ORANGE_TOKEN", server.token.as_str())],
        Duration::from_secs(30),
    );
    run.assert_success();
    assert!(started.elapsed() < Duration::from_secs(5), "the CLI took {:?}", started.elapsed());
}
