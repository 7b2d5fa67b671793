//! Attacks on the real `orange` binary, one claim of SECURITY.md at a time, one module per
//! family: enrollment and takeovers, replays, signatures and their limit, hostile input and
//! limits, operator credentials and the audit record, TLS and files, secrets on disk.
//!
//! Each refusal is asserted with its exact message, and every test that is refused something
//! also checks that nothing stored changed: tasks, agents (without their liveness fields),
//! enrollment tokens and the audit record (a [`Snapshot`]). The `bad_input` module covers the
//! plainer malformed input; these tests do not repeat it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orange::client::{AgentClient, ClientError, EnrollToken, Enrollment, TlsSettings};
use orange::protocol::RegisterRequest;
use orange::protocol::admin::{AuditEntry, TokenView};
use orange::protocol::limits::MAX_FAILURES_PER_MINUTE;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{
    BASE_SECRET, EnrollKey, GET_TASK, GoAgent, OUTPUT, PING, REGISTER, REPORT_TASK, Server, ServerOpts,
    Snapshot, assert_api_error, assert_refused, assert_unchanged, cli_with, fresh_nonce, go_report,
    go_request, go_sign, go_signed_headers, go_time_now, http, next_legacy_second, raw_exchange, replay,
    unix_time_now, v2_headers, v2_sign, wait_until, write_secret,
};

/// The refusal of any replayed signed request.
const REPLAY: &str = "this signed request was already used; replays are refused";
/// An enrollment key that, unlike the original's public one, strangers do not know.
const PRIVATE_KEY: &str = "a-private-enrollment-key-5c1d";

mod admin_auth;
mod agent_backoff;
mod argv;
mod audit_flood;
mod connections;
mod disk;
mod enrollment;
pub(crate) mod files_and_tls;
mod guessing;
mod input_limits;
mod lockout;
mod log_flood;
mod pools;
mod replay;
mod signatures;
mod task_environ;

/// A server whose enrollment key is private, with a 1 s poll window.
fn private_server() -> Server {
    Server::start(ServerOpts {
        poll_window: Some(1),
        enroll_key: EnrollKey::Private(PRIVATE_KEY.into()),
        ..ServerOpts::default()
    })
}

fn register_request(app_id: &str, secret: &str) -> RegisterRequest {
    RegisterRequest { app_id: app_id.into(), secret: secret.into(), ..RegisterRequest::default() }
}

/// Registers through orange's own client and returns the refusal; panics if it was accepted.
#[track_caller]
fn register_refusal(server: &Server, app_id: &str, secret: &str, enrollment: &Enrollment) -> String {
    let client = AgentClient::new(&server.url, app_id, secret);
    match client.register(&register_request(app_id, secret), enrollment) {
        Err(ClientError::Refused(message)) => message,
        other => panic!("register of {app_id} with {enrollment:?} was not refused: {other:?}"),
    }
}

/// Registers `app_id` the original client's way, signed with `key`; panics unless accepted.
fn enroll(server: &Server, app_id: &str, secret: &str, key: &str) -> GoAgent {
    let agent = GoAgent::new(server, app_id, secret);
    let body = json!({"app_id": app_id, "secret": secret}).to_string();
    let envelope = agent.send_signed(REGISTER, key, body.as_bytes()).json();
    assert_eq!(envelope["code"], 0, "register {app_id}: {envelope}");
    agent
}

/// The token an operator hands out, parsed as an agent reads it.
fn enroll_token(view: &TokenView) -> EnrollToken {
    let text = view.token.as_deref().expect("the created token is shown once");
    text.parse().unwrap_or_else(|e| panic!("token {text:?} does not parse: {e}"))
}

fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: &str) {
    match headers.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
        Some(header) => header.1 = value.to_owned(),
        None => headers.push((name.to_owned(), value.to_owned())),
    }
}

fn drop_header(headers: &mut Vec<(String, String)>, name: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
}

fn task_status(server: &Server, id: &str) -> String {
    server.task(id).status.as_str().to_owned()
}
