//! A flood of bad requests does not flood the log: repeated refusals are summed up, one line
//! per source and reason at most twice a minute.

use std::net::Ipv4Addr;

use super::*;
use crate::support::Connection;

/// Bad requests sent in all.
const FLOOD: usize = 100_000;
/// Wrong admin tokens among them: past the limit each is answered after a delay, so they go
/// out from many connections at once.
const WRONG_TOKENS: usize = 200;
/// Connections sending the wrong admin tokens.
const TOKEN_GUESSERS: usize = 20;
/// The addresses sending the rest.
const SOURCES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
    Ipv4Addr::new(127, 0, 0, 5),
];
/// The most lines the flood may add to the server's log.
const MOST_LINES: usize = 300;

/// The `n`th bad request of the mix: a bad signature, a missing signature, an unsupported
/// signature version, or an operator call without a token.
fn bad_request(server: &Server, n: usize) -> Vec<u8> {
    match n % 4 {
        0 => {
            let headers = go_signed_headers("w1", "wrong", b"ping", &go_time_now());
            go_request(server.addr, PING, &headers, format!("ping {n}").as_bytes())
        }
        1 => go_request(server.addr, GET_TASK, &[], b""),
        2 => {
            let mut headers = v2_headers(PING, "w1", "s1", b"ping", &unix_time_now(), &fresh_nonce());
            set_header(&mut headers, "X-Orange-Sign-Version", "3");
            go_request(server.addr, PING, &headers, b"ping")
        }
        _ => format!("GET /api/v1/agents HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).into_bytes(),
    }
}

/// Sends `count` bad requests from `source` on one kept connection.
fn flood(server: &Server, source: Ipv4Addr, count: usize) {
    let mut connection = Connection::new(source, server.addr);
    for n in 0..count {
        let response = connection.exchange(&bad_request(server, n)).expect("bad request");
        assert!(matches!(response.status, 200 | 401 | 503), "{response:?}");
        if response.status == 200 {
            assert_eq!(response.json()["code"], 1, "{}", response.text());
        }
    }
}

#[test]
fn a_hundred_thousand_bad_requests_write_a_few_hundred_log_lines() {
    let server = Server::start(ServerOpts::poll_window(1));
    GoAgent::new(&server, "w1", "s1").registered();
    let before = server.stderr().lines().count();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let server = &server;
        for t in 0..TOKEN_GUESSERS {
            scope.spawn(move || {
                for i in 0..WRONG_TOKENS / TOKEN_GUESSERS {
                    let token = format!("guess-{t}-{i}");
                    let status = server.admin_raw("GET", "/api/v1/agents", Some(&token), b"").status;
                    assert!(matches!(status, 401 | 429), "a wrong token answered {status}");
                }
            });
        }
        let each = (FLOOD - WRONG_TOKENS) / SOURCES.len();
        for source in SOURCES {
            scope.spawn(move || flood(server, source, each));
        }
    });
    let took = started.elapsed();
    let stderr = server.stderr();
    let added = stderr.lines().count() - before;
    assert!(
        added <= MOST_LINES,
        "{FLOOD} bad requests in {took:?} added {added} lines to the log; the last ones:\n{}",
        stderr.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}
