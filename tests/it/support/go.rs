//! The original protocol as the Go client speaks it, over raw sockets ([`GoAgent`]), and
//! both signatures (the original one and version 2), written here independently of the crate.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{RawResponse, Server, raw_exchange, wait_until};

/// The original's public base secret that `register` is signed with.
pub const BASE_SECRET: &str = "orange-forge";
/// Register route.
pub const REGISTER: &str = "/orange-forge/api/register";
/// Heartbeat route.
pub const PING: &str = "/orange-forge/api/ping";
/// Long-poll route.
pub const GET_TASK: &str = "/orange-forge/api/getTask";
/// Report route.
pub const REPORT_TASK: &str = "/orange-forge/api/reportTask";

/// `hex(HMAC-SHA256(secret, appid + body + time))`, written here independently of the crate.
pub fn go_sign(secret: &str, app_id: &str, body: &[u8], time: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(app_id.as_bytes());
    mac.update(body);
    mac.update(time.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The time header of the original client: local wall-clock time, Go layout `2006-01-02 15:04:05`.
pub fn go_time_now() -> String {
    go_time(chrono::Local::now())
}

/// A time in the original client's layout.
pub fn go_time(at: chrono::DateTime<chrono::Local>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A legacy signature covers the time to the second: waits for the next one, so that a new
/// request of the same agent with the same body is not the same signed request.
pub fn next_legacy_second() {
    let now = go_time_now();
    wait_until(Duration::from_secs(3), "the next second", || go_time_now() != now);
}

/// The three signing headers as Go canonicalizes their names, in Go's (sorted) order.
pub fn go_signed_headers(app_id: &str, secret: &str, body: &[u8], time: &str) -> Vec<(String, String)> {
    vec![
        ("X-Forge-Appid".into(), app_id.into()),
        ("X-Forge-Sign".into(), go_sign(secret, app_id, body, time)),
        ("X-Forge-Time".into(), time.into()),
    ]
}

/// A POST exactly as Go's net/http writes it: Host, User-Agent, Content-Length, then the
/// request's headers sorted by name (Content-Type first, then `extra` in the order given), then
/// the transport's Accept-Encoding, then the body.
pub fn go_request(addr: SocketAddr, path: &str, extra: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: {}\r\n\
         Content-Type: application/json\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Accept-Encoding: gzip\r\n\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// An agent speaking the original protocol over raw sockets, as the Go client does.
#[derive(Debug, Clone)]
pub struct GoAgent {
    /// Server address.
    pub addr: SocketAddr,
    /// App id.
    pub app_id: String,
    /// The agent's own secret.
    pub secret: String,
}

impl GoAgent {
    /// An agent `app_id` with `secret`, talking to `server`.
    pub fn new(server: &Server, app_id: &str, secret: &str) -> Self {
        GoAgent { addr: server.addr, app_id: app_id.into(), secret: secret.into() }
    }

    /// Sends `body` to `path` signed with `key` now, and returns the raw response.
    pub fn send_signed(&self, path: &str, key: &str, body: &[u8]) -> RawResponse {
        let headers = go_signed_headers(&self.app_id, key, body, &go_time_now());
        self.send(path, &headers, body)
    }

    /// Sends `body` to `path` with exactly the given signing headers.
    pub fn send(&self, path: &str, headers: &[(String, String)], body: &[u8]) -> RawResponse {
        let request = go_request(self.addr, path, headers, body);
        let response = raw_exchange(self.addr, request, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}"));
        // 200 always, but 503 (same envelope) when the server defers a request to be retried.
        assert!(matches!(response.status, 200 | 503), "agent endpoints answer 200 or 503: {response:?}");
        response
    }

    /// Registers with the base secret; returns the envelope.
    pub fn register(&self) -> serde_json::Value {
        self.register_raw().json()
    }

    /// Registers with the base secret; returns the answer as it came.
    pub fn register_raw(&self) -> RawResponse {
        let body = serde_json::json!({"app_id": self.app_id, "secret": self.secret}).to_string();
        self.send_signed(REGISTER, BASE_SECRET, body.as_bytes())
    }

    /// Registers and asserts success.
    pub fn registered(self) -> Self {
        let envelope = self.register();
        assert_eq!(envelope["code"], 0, "register refused: {envelope}");
        self
    }

    /// A heartbeat; returns the envelope.
    pub fn ping(&self) -> serde_json::Value {
        self.send_signed(PING, &self.secret, b"ping").json()
    }

    /// A getTask long poll; returns the envelope.
    pub fn get_task(&self) -> serde_json::Value {
        self.send_signed(GET_TASK, &self.secret, b"").json()
    }

    /// A report with the given JSON body; returns the envelope.
    pub fn report(&self, report: &serde_json::Value) -> serde_json::Value {
        self.send_signed(REPORT_TASK, &self.secret, report.to_string().as_bytes()).json()
    }

    /// Takes the next task and asserts it is the one with id `task_id`; returns the task object.
    pub fn take(&self, task_id: &str) -> serde_json::Value {
        let envelope = self.get_task();
        assert_eq!(envelope["code"], 0, "getTask: {envelope}");
        assert_eq!(envelope["data"]["task_id"], task_id, "getTask: {envelope}");
        envelope["data"].clone()
    }
}

/// The report the Go client sends: the task object echoed with `do_status` and `result` set.
pub fn go_report(task: &serde_json::Value, do_status: &str, result: &str) -> serde_json::Value {
    serde_json::json!({
        "task_id": task["task_id"],
        "task_type": task["task_type"],
        "do_status": do_status,
        "create_at": task["create_at"],
        "payload": task["payload"],
        "result": result,
    })
}

// Version-2 signatures, written here independently of the crate

/// Value of `X-ORANGE-SIGN-VERSION` for the canonical scheme.
pub const SIGN_VERSION_2: &str = "2";
/// Route on which orange agents stream output.
pub const OUTPUT: &str = "/orange-forge/api/output";

/// The text a version-2 signature covers: `orange-v2`, method, path, app id, time, nonce and the
/// body's SHA-256 in hex, one per line.
pub fn v2_canonical(path: &str, app_id: &str, time: &str, nonce: &str, body: &[u8]) -> String {
    use sha2::Digest;
    let body_hash = hex::encode(Sha256::digest(body));
    format!("orange-v2\nPOST\n{path}\n{app_id}\n{time}\n{nonce}\n{body_hash}")
}

/// `hex(HMAC-SHA256(key, canonical text))`.
pub fn v2_sign(key: &str, path: &str, app_id: &str, time: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(v2_canonical(path, app_id, time, nonce, body).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The time header of orange agents: Unix seconds now.
pub fn unix_time_now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// A fresh random nonce: 32 hex digits.
pub fn fresh_nonce() -> String {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).expect("random bytes");
    hex::encode(raw)
}

/// The headers of a version-2 request to `path` signed with `key` at `time` with `nonce`.
pub fn v2_headers(
    path: &str,
    app_id: &str,
    key: &str,
    body: &[u8],
    time: &str,
    nonce: &str,
) -> Vec<(String, String)> {
    vec![
        ("X-Forge-Appid".into(), app_id.into()),
        ("X-Forge-Sign".into(), v2_sign(key, path, app_id, time, nonce, body)),
        ("X-Forge-Time".into(), time.into()),
        ("X-Orange-Nonce".into(), nonce.into()),
        ("X-Orange-Sign-Version".into(), SIGN_VERSION_2.into()),
    ]
}

/// Sends the bytes of a captured request again and returns the answer (agent endpoints answer
/// 200, or 503 with the same envelope when the server defers a request).
pub fn replay(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let response = raw_exchange(addr, request.to_vec(), Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("replay to {addr} failed: {e}"));
    assert!(matches!(response.status, 200 | 503), "agent endpoints answer 200 or 503: {response:?}");
    response
}

impl GoAgent {
    /// The bytes of a version-2 request to `path` signed with `key` now, with a fresh nonce.
    pub fn v2_request(&self, path: &str, key: &str, body: &[u8]) -> Vec<u8> {
        let headers = v2_headers(path, &self.app_id, key, body, &unix_time_now(), &fresh_nonce());
        go_request(self.addr, path, &headers, body)
    }

    /// The bytes of a legacy request to `path` signed with `key` now.
    pub fn legacy_request(&self, path: &str, key: &str, body: &[u8]) -> Vec<u8> {
        go_request(self.addr, path, &go_signed_headers(&self.app_id, key, body, &go_time_now()), body)
    }

    /// Sends `body` to `path` with a version-2 signature by `key`; returns the envelope.
    pub fn send_v2(&self, path: &str, key: &str, body: &[u8]) -> serde_json::Value {
        replay(self.addr, &self.v2_request(path, key, body)).json()
    }
}
