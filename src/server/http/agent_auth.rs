//! Authentication of agent calls: the signing headers, the body (read by the overload guard), the time
//! window, the signature (legacy or version 2) checked before anything is parsed, replay
//! protection, and a per-source limit on failed signatures.

use std::net::IpAddr;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use chrono::Utc;
use tracing::warn;

use super::AppState;
use crate::protocol::Signer;
use crate::protocol::sign::{Canonical, SIGN_VERSION_2, check_nonce, check_time, parse_time};
use crate::protocol::wire::{
    self, ENROLL_PENDING, HEADER_APPID, HEADER_ENROLL, HEADER_ENROLL_TOKEN, HEADER_NONCE, HEADER_SIGN,
    HEADER_SIGN_VERSION, HEADER_TIME, RegisterRequest,
};
use crate::server::enroll::Credential;
use crate::server::error::ServiceError;
use crate::server::guard::ReplayError;
use crate::server::store::AgentRecord;

/// Why an agent call was refused.
#[derive(Debug)]
pub struct Refusal {
    /// The specific message for the envelope.
    pub message: String,
    /// How the refusal is answered.
    pub kind: RefusalKind,
}

/// How a refusal is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// For good: code 1.
    Final,
    /// A replay: code 1, but getTask answers "no task" (code 2) so that an original client,
    /// which exits on code 1, goes on.
    Replay,
    /// The server's fault or a passing limit: retry later (HTTP 503, so clients retry; getTask
    /// answers "no task").
    Transient,
}

impl Refusal {
    /// A refusal to retry later.
    pub fn transient(message: impl Into<String>) -> Self {
        Refusal { message: message.into(), kind: RefusalKind::Transient }
    }
}

impl<T: Into<String>> From<T> for Refusal {
    fn from(message: T) -> Self {
        Refusal { message: message.into(), kind: RefusalKind::Final }
    }
}

/// The signing headers of a request.
pub struct Signed {
    /// `X-FORGE-APPID`.
    pub app_id: String,
    time: String,
    sign: String,
    /// The nonce of a version-2 signature; `None` for the legacy scheme.
    nonce: Option<String>,
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty()).map(str::to_owned)
}

fn signed_headers(headers: &HeaderMap) -> Result<Signed, Refusal> {
    let (Some(app_id), Some(time), Some(sign)) =
        (header(headers, HEADER_APPID), header(headers, HEADER_TIME), header(headers, HEADER_SIGN))
    else {
        return Err("appid, sign, and time are required".into());
    };
    let nonce = match header(headers, HEADER_SIGN_VERSION).as_deref() {
        None => None,
        Some(SIGN_VERSION_2) => {
            let nonce =
                header(headers, HEADER_NONCE).ok_or(format!("{HEADER_NONCE} is required with version 2"))?;
            check_nonce(&nonce).map_err(|e| e.to_string())?;
            Some(nonce)
        }
        Some(other) => {
            return Err(format!("signature version {:?} is not supported; use 2", wire::shown(other)).into());
        }
    };
    Ok(Signed { app_id, time, sign, nonce })
}

/// The body, already read in full by the overload guard (under its size limit and its deadline,
/// before the request took a place); the limit is checked again so that this never reads more.
async fn read_body(body: Body) -> Result<Bytes, Refusal> {
    axum::body::to_bytes(body, wire::MAX_AGENT_BODY).await.map_err(|_| {
        format!("request body is larger than {} bytes or was cut off", wire::MAX_AGENT_BODY).into()
    })
}

/// Reads the body and checks the time, the signature against `key`, and that the request is
/// not a replay. The record of this use is written but not yet synced: the service that answers
/// makes it durable (e.g. [`Polling::next_task`](crate::server::polling::Polling::next_task))
/// before an answer that a replay could profit from, or a crash right after the answer would
/// let the same request in again.
pub async fn verified(
    app: &AppState,
    source: IpAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
    key: &Signer,
) -> Result<(Signed, Bytes), Refusal> {
    app.guard()
        .check_source(source, Utc::now().timestamp())
        .map_err(|e| Refusal::transient(e.to_string()))?;
    let signed = signed_headers(headers)?;
    let body = read_body(body).await?;
    check_signed(app, source, path, &signed, &body, key)?;
    Ok((signed, body))
}

/// Checks the time, the signature of `body` against `key`, and that it is not a replay.
fn check_signed(
    app: &AppState,
    source: IpAddr,
    path: &str,
    signed: &Signed,
    body: &[u8],
    key: &Signer,
) -> Result<(), Refusal> {
    let now = Utc::now();
    check_time(&signed.time, now).map_err(|e| e.to_string())?;
    let checked = match &signed.nonce {
        None => key.verify(&signed.app_id, body, &signed.time, &signed.sign),
        Some(nonce) => {
            let canonical =
                Canonical { method: "POST", path, app_id: &signed.app_id, time: &signed.time, nonce, body };
            key.verify_v2(&canonical, &signed.sign)
        }
    };
    if let Err(e) = checked {
        app.guard().record_failure(source, now.timestamp());
        return Err(format!("{e} for app id {:?}", wire::shown(&signed.app_id)).into());
    }
    admit_signed_once(app, signed)
}

/// Authenticates a registration: by the enrollment key, an enrollment token, or (asking to
/// wait for acceptance) the agent's own secret from the body. Returns the request and how it
/// proved itself.
pub async fn registration(
    app: &AppState,
    source: IpAddr,
    headers: &HeaderMap,
    body: Body,
) -> Result<(RegisterRequest, Credential), Refusal> {
    app.guard()
        .check_source(source, Utc::now().timestamp())
        .map_err(|e| Refusal::transient(e.to_string()))?;
    let signed = signed_headers(headers)?;
    let body = read_body(body).await?;
    let parse = || -> Result<RegisterRequest, Refusal> {
        serde_json::from_slice(&body).map_err(|e| format!("malformed JSON: {e}").into())
    };
    let credential = credential(headers);
    let key = match &credential {
        Credential::EnrollKey => app.guard().enroll_key().clone(),
        Credential::Token(id) => token_key(app, id)?,
        // Signed with the secret it asks to enroll: the body is parsed (under its size limit)
        // only to find the key; nothing is stored before the signature checks out.
        Credential::None => Signer::new(&parse()?.secret),
    };
    check_signed(app, source, wire::REGISTER_PATH, &signed, &body, &key)?;
    let request = parse()?;
    if request.app_id != signed.app_id {
        return Err(format!("app_id {:?} differs from {HEADER_APPID}", wire::shown(&request.app_id)).into());
    }
    Ok((request, credential))
}

fn credential(headers: &HeaderMap) -> Credential {
    if let Some(id) = header(headers, HEADER_ENROLL_TOKEN) {
        Credential::Token(id)
    } else if header(headers, HEADER_ENROLL).as_deref() == Some(ENROLL_PENDING) {
        Credential::None
    } else {
        Credential::EnrollKey
    }
}

/// The key of a usable enrollment token.
fn token_key(app: &AppState, id: &str) -> Result<Signer, Refusal> {
    match app.guard().token_key(id) {
        Ok(Ok(key)) => Ok(key),
        Ok(Err(e)) => Err(e.to_string().into()),
        Err(e) => Err(Refusal::transient(format!("server error, retry later: {e}"))),
    }
}

fn admit_signed_once(app: &AppState, signed: &Signed) -> Result<(), Refusal> {
    // parse_time succeeded inside check_time, so this is the same value.
    let sent = parse_time(&signed.time).unwrap_or(0);
    // Hex reads in either case, so the legacy identity is the signature in one case: a replay
    // with the letters' case changed is the same request.
    let legacy_sign = signed.sign.to_ascii_lowercase();
    let identity: [&[u8]; 2] = match &signed.nonce {
        Some(nonce) => [signed.app_id.as_bytes(), nonce.as_bytes()],
        None => [signed.app_id.as_bytes(), legacy_sign.as_bytes()],
    };
    app.guard().admit_once(&identity, sent).map_err(|e| match e {
        ReplayError::Seen => Refusal { message: e.to_string(), kind: RefusalKind::Replay },
        ReplayError::Store(_) => Refusal::transient(format!("server error, retry later: {e}")),
    })
}

/// Authenticates a call signed with an agent's own secret and notes the agent is alive.
pub async fn agent_call(
    app: &AppState,
    source: IpAddr,
    path: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(AgentRecord, Bytes), Refusal> {
    let app_id = header(headers, HEADER_APPID).ok_or("appid, sign, and time are required")?;
    wire::check_app_id(&app_id)?;
    let agent = app.guard().known_agent(&app_id).map_err(|e| match e {
        ServiceError::Store(e) => Refusal::transient(format!("server error, retry later: {e}")),
        other => other.to_string().into(),
    })?;
    let (_, body) = verified(app, source, path, headers, body, &Signer::new(&agent.secret)).await?;
    if let Err(e) = app.guard().touch(&agent) {
        warn!(agent = %agent.app_id, error = %e, "cannot record last seen");
    }
    Ok((agent, body))
}
