//! The probes of a real server: `/healthz`, `/version` and `/readyz` answer without a token,
//! name the version and nothing secret, while the operator API still wants its token.

use std::time::Duration;

use crate::support::{RawResponse, Server, ServerOpts, raw_exchange};

fn get(server: &Server, path: &str) -> RawResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: orange\r\nConnection: close\r\n\r\n");
    raw_exchange(server.addr, request.into_bytes(), Duration::from_secs(30)).expect("probe exchange")
}

#[test]
fn probes_answer_without_a_token_and_tell_nothing_secret() {
    let server = Server::start(ServerOpts::default());
    for (path, status) in [("/healthz", "ok"), ("/version", "ok"), ("/readyz", "ready")] {
        let answer = get(&server, path);
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let body = answer.json();
        assert_eq!(body["status"], status, "{path}: {body}");
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{path}: {body}");
        assert!(body.get("reason").is_none(), "{path}: {body}");
        assert!(!answer.text().contains(&server.token), "{path} shows the admin token");
    }
    let api = get(&server, "/api/v1/agents");
    assert_eq!(api.status, 401, "the operator API still wants the token: {}", api.text());
}
