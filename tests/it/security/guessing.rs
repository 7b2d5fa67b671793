//! Guessing an enrolled agent's secret through `register`: every wrong guess (and the admin
//! token) gets one and the same answer, the guesses are throttled after a handful, and the real
//! agent re-registers with its right secret meanwhile and keeps running tasks.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicUsize;

use super::*;
use crate::support::{Agent, AgentOpts, Connection};

/// Guesses sent in all, from four addresses that are not the agent's.
const GUESSES: usize = 10_000;
/// The guessers' addresses.
const GUESSERS: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];

/// The answers the guesses got.
#[derive(Default)]
struct Answers {
    /// (HTTP status, envelope code, message) of each guess refused after it was checked.
    refused: Vec<(u16, i64, String)>,
    /// Guesses refused unchecked, as over a failure limit.
    throttled: usize,
}

/// A register for `app_id` asking for `secret`, signed with the public enrollment key, as the
/// original client sends it.
fn register_bytes(server: &Server, app_id: &str, secret: &str) -> Vec<u8> {
    let body = json!({"app_id": app_id, "secret": secret}).to_string();
    let headers = go_signed_headers(app_id, BASE_SECRET, body.as_bytes(), &go_time_now());
    go_request(server.addr, REGISTER, &headers, body.as_bytes())
}

/// Sends `requests` from `source` on one kept connection and sorts the answers.
fn guess(server: &Server, source: Ipv4Addr, requests: Vec<Vec<u8>>, throttled: &AtomicUsize) -> Answers {
    let mut connection = Connection::new(source, server.addr);
    let mut answers = Answers::default();
    for request in requests {
        let response = connection.exchange(&request).unwrap_or_else(|e| panic!("guess from {source}: {e}"));
        let envelope = response.json();
        let message = envelope["message"].as_str().unwrap_or_default().to_owned();
        assert_ne!(envelope["code"], 0, "a guess was accepted: {envelope}");
        if response.status == 503 && message.starts_with("too many failed attempts") {
            assert!(response.header("retry-after").is_some(), "{response:?}");
            answers.throttled += 1;
            throttled.fetch_add(1, Ordering::SeqCst);
        } else {
            answers.refused.push((response.status, envelope["code"].as_i64().unwrap_or(-1), message));
        }
    }
    answers
}

#[test]
fn ten_thousand_guesses_are_throttled_and_told_apart_by_nothing_while_the_agent_re_registers() {
    let server = Server::start(ServerOpts::poll_window(1));
    let mut agent = Agent::start_online(&server, "h1", AgentOpts::default());
    let admin = server.token.clone();
    let throttled = AtomicUsize::new(0);
    let (answers, registered_in) = std::thread::scope(|scope| {
        let guessers: Vec<_> = GUESSERS
            .iter()
            .enumerate()
            .map(|(n, &source)| {
                let mut requests: Vec<Vec<u8>> = (0..GUESSES / GUESSERS.len())
                    .map(|i| register_bytes(&server, "h1", &format!("guess-{n}-{i}")))
                    .collect();
                if n == 0 {
                    // The admin token as h1's secret, and as a new app id's.
                    requests.insert(1, register_bytes(&server, "h1", &admin));
                    requests.insert(2, register_bytes(&server, "newcomer", &admin));
                }
                let throttled = &throttled;
                let server = &server;
                scope.spawn(move || guess(server, source, requests, throttled))
            })
            .collect();
        // Once guessing is throttled, the real agent starts again and registers with its secret.
        wait_until(Duration::from_secs(60), "guesses to be throttled", || {
            throttled.load(Ordering::SeqCst) > 100
        });
        let started = Instant::now();
        agent.restart();
        wait_until(Duration::from_secs(30), "h1 to register again", || {
            agent.output().matches(" registered").count() >= 2
        });
        let registered_in = started.elapsed();
        let answers: Vec<Answers> = guessers.into_iter().map(|g| g.join().expect("guesser")).collect();
        (answers, registered_in)
    });
    let refused: Vec<&(u16, i64, String)> = answers.iter().flat_map(|a| &a.refused).collect();
    let throttled: usize = answers.iter().map(|a| a.throttled).sum();
    assert_eq!(refused.len() + throttled, GUESSES + 2);
    // Every guess that was checked got the same answer: status, code and message.
    let expected = (200, 1, orange::server::enroll::not_proven("h1"));
    let newcomer = (200, 1, orange::server::enroll::not_proven("newcomer"));
    let kinds: BTreeSet<&(u16, i64, String)> = refused.iter().copied().collect();
    assert_eq!(kinds, BTreeSet::from([&expected, &newcomer]), "the refusals differ");
    assert!(refused.len() <= 100, "{} guesses were checked; the rest should be throttled", refused.len());
    // The real agent was accepted at once, and still runs tasks.
    assert!(registered_in < Duration::from_secs(10), "h1 took {registered_in:?} to register again");
    let task = server.enqueue(&["h1"], "ping", "")[0].task_id.clone();
    assert_eq!(server.wait_task(&task, 45).status.as_str(), "succeeded");
    agent.assert_running();
}
